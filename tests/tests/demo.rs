//! The shipped demo target is exactly what the fixture builder makes from the shipped table
//! (examples/demo/README.md has the command): no binary without the code that makes it.

use kds_e2e::{repo_root, scratch_dir};
use kds_fixture::dumpfile::{write_dump, DumpKind};
use kds_fixture::{build, FixtureSpec};

#[test]
fn committed_demo_dump_is_what_the_builder_makes() {
    let root = repo_root();
    let table =
        root.join("examples/symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz");
    let fixture = build(&FixtureSpec::hung_server(&table, 1)).expect("demo fixture builds");
    let fresh = scratch_dir("demo").join("MEMORY.DMP");
    write_dump(&fixture, &fresh, DumpKind::BitmapFull).expect("demo dump is written");
    let committed = std::fs::read(root.join("examples/demo/MEMORY.DMP")).expect("demo dump");
    let made = std::fs::read(&fresh).expect("fresh dump");
    assert_eq!(
        committed.len(),
        made.len(),
        "demo size differs: regenerate it (examples/demo/README.md)"
    );
    let first_difference = committed.iter().zip(&made).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "examples/demo/MEMORY.DMP is stale: regenerate it with the command in examples/demo/README.md"
    );
    // The shipped table is the shared one, byte for byte.
    let shared =
        kds_e2e::shared_symbols().join("ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz");
    assert_eq!(std::fs::read(&table).ok(), std::fs::read(&shared).ok());
}
