//! What every CLI test file needs: the repository root and the `kds` binary run from it.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root: playbooks, the demo dump and symbols are named relative to it.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Run `kds` from the repository root, without the caller's symbol path variables (each test
/// says where symbols are).
pub fn kds(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kds"))
        .args(args)
        .current_dir(repo())
        .env_remove("_NT_SYMBOL_PATH")
        .env_remove("_NT_ALT_SYMBOL_PATH")
        .output()
        .expect("kds runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
