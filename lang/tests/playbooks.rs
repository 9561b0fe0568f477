//! Real playbooks lint clean: ours under `tests/playbooks/`, and the shipped ones under the
//! workspace's `examples/` (when there are any).

mod common;

use std::path::{Path, PathBuf};

fn kds_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "kds"))
        .collect();
    files.sort();
    files
}

fn assert_clean(path: &Path) {
    let source = std::fs::read_to_string(path).expect("playbooks are UTF-8");
    let name = path.display().to_string();
    let diagnostics = kds_lang::lint(&source, &name);
    assert!(
        diagnostics.is_empty(),
        "{name} should lint clean:\n{}",
        kds_lang::render(&diagnostics, &name, &source)
    );
    // And its canonical form means the same.
    let mut tree = common::parse_ok(&source);
    let printed = kds_lang::print(&tree);
    let mut again = common::parse_ok(&printed);
    common::strip(&mut tree);
    common::strip(&mut again);
    assert_eq!(tree, again, "{name} printed as:\n{printed}");
}

#[test]
fn our_playbooks_lint_clean() {
    let files = kds_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/playbooks"));
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        assert_clean(&f);
    }
}

#[test]
fn shipped_examples_lint_clean() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for f in kds_files(&examples) {
        assert_clean(&f);
    }
}

#[test]
fn the_design_sketch_parses() {
    // The sketch from DESIGN.md, with `$p` where a command takes the binding's value.
    let source = r#"param name = "lsass.exe"                  # bound from the CLI: --set name=svchost.exe
!vm                                       # WinDbg commands are statements, with real argument grammar
let p = processes | where name == $name | single
!process $p 7
.process /p /r $p
!peb
threads | where state == "Waiting" && wait_ms > 5000
        | group by stack | sort by count desc
        | show table(count, process.name, wait_reason, stack.top)
expect bugcheck in [0xE2, 0x80] else note "not a manual dump: look for a crash cause first"
"#;
    assert!(kds_lang::lint(source, "sketch.kds").is_empty());
    // Written as in the sketch, a bare `p` in a command is the word `p`: the checker says so.
    let bare = kds_lang::lint(
        "let p = processes | first\n!process p 7\n.process /p /r p\n",
        "bare.kds",
    );
    assert_eq!(bare.len(), 2);
    assert!(bare
        .iter()
        .all(|d| d.help.as_deref() == Some("`p` is a binding here; write `$p` to use its value")));
}
