//! Helpers shared by the kds-kdemu integration tests: the demo dump and what it says.

#![allow(dead_code)]

use kds_runtime::mmu::{AddressSpace, X64};
use kds_runtime::target::DumpTarget;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn demo_dump() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo/MEMORY.DMP")
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("kds-kdemu").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the dump itself says, read by kds' own page walker.
pub struct Expected {
    pub target: Arc<DumpTarget>,
    pub space: AddressSpace,
    pub kern_base: u64,
    pub ps_loaded_module_list: u64,
    pub kdbg: u64,
    pub dtb: u64,
    pub build: u32,
}

/// The first run of `pages` consecutive pages the dump holds.
pub fn present_run(target: &DumpTarget, pages: u64) -> u64 {
    let mut start = None;
    let mut prev = None;
    for pfn in target.dump().present_pfns() {
        if prev.is_none_or(|p: u64| p + 1 != pfn) {
            start = Some(pfn);
        }
        prev = Some(pfn);
        if let Some(s) = start {
            if pfn + 1 - s >= pages && s > 0 {
                return s * 0x1000;
            }
        }
    }
    panic!("no run of {pages} present pages");
}

pub fn expected() -> Expected {
    let target = Arc::new(DumpTarget::open(&demo_dump()).unwrap());
    let h = target.dump().header().clone();
    let space = AddressSpace::new(target.clone(), &X64, h.directory_table_base);
    let kern_base = space.read_u64(h.kd_debugger_data_block + 0x18).unwrap();
    Expected {
        kern_base,
        ps_loaded_module_list: h.ps_loaded_module_list,
        kdbg: h.kd_debugger_data_block,
        dtb: h.directory_table_base,
        build: h.minor_version,
        space,
        target,
    }
}

/// Wait up to `limit` for `child` to exit; kill it (and panic) past that.
pub fn wait_exit_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait up to 30 s for `child` to exit.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    wait_exit_within(child, Duration::from_secs(30))
}
