//! Finding the kernel when the dump header's anchors are wrong: fall back from
//! PsLoadedModuleList to the KDBG block, and say what was tried when both fail.

use kds_crashdump::{off, CrashDump};
use kds_e2e::{fixture_dump, scratch_dir, x64_tables};
use kds_fixture::dumpfile::DumpKind;
use kds_runtime::kernel::{KernelError, KernelSource};
use kds_runtime::session::Session;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::target::{DumpTarget, Target};
use std::sync::Arc;

fn session_with(bytes: Vec<u8>) -> Session {
    let dump = CrashDump::from_bytes(bytes).expect("patched dump still parses");
    let target: Arc<dyn Target> = Arc::new(DumpTarget::from_dump(dump, "patched.dmp".into()));
    Session::open(target, SymbolPath::default()).expect("x64 session")
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn kernel_is_found_from_kdbg_when_the_module_list_is_unusable_and_failures_name_every_attempt() {
    let dir = scratch_dir("kernel_locate");
    let (_, table) = &x64_tables()[0];
    let (fixture, path) = fixture_dump(table, 3, DumpKind::BitmapFull, &dir, "locate.dmp");
    let t = &fixture.truth;
    let original = std::fs::read(&path).expect("dump bytes");

    // As written: found from the loaded module list.
    let s = session_with(original.clone());
    let k = s.kernel.as_ref().expect("kernel found");
    assert_eq!(
        (k.base, k.source),
        (t.kernel_base, KernelSource::LoadedModuleList)
    );

    // No PsLoadedModuleList in the header: the KDBG block's KernBase.
    let mut no_list = original.clone();
    put_u64(&mut no_list, off::PS_LOADED_MODULE_LIST, 0);
    let s = session_with(no_list);
    let k = s.kernel.as_ref().expect("kernel found through KDBG");
    assert_eq!(
        (k.base, k.source),
        (t.kernel_base, KernelSource::DebuggerDataBlock)
    );

    // A list head that points into unmapped memory: the attempt is reported, KDBG still works.
    let mut bad_list = original.clone();
    put_u64(
        &mut bad_list,
        off::PS_LOADED_MODULE_LIST,
        0xFFFF_F8FF_0000_0000,
    );
    let s = session_with(bad_list.clone());
    assert_eq!(
        s.kernel.as_ref().expect("KDBG fallback").source,
        KernelSource::DebuggerDataBlock
    );

    // Both anchors wrong: the error names each attempt and where it stopped.
    put_u64(&mut bad_list, off::KD_DEBUGGER_DATA_BLOCK, t.kernel_base);
    let s = session_with(bad_list);
    let err = s
        .kernel
        .as_ref()
        .expect_err("nothing to find the kernel by");
    let text = err.to_string();
    assert!(
        matches!(err, KernelError::NotFound { attempts } if attempts.len() == 2),
        "{text}"
    );
    assert!(
        text.starts_with(
            "cannot find the kernel: PsLoadedModuleList 0xfffff8ff00000000: cannot read its Flink"
        ),
        "{text}"
    );
    // Where the tag would be, the DOS header holds something else.
    let mut tag = [0u8; 4];
    fixture
        .machine
        .read_virt(t.kernel_dtb, t.kernel_base + 0x10, &mut tag)
        .expect("image header is mapped");
    let expected = format!(
        "KdDebuggerDataBlock {:#x}: OwnerTag is {:#010x}, not 'KDBG'",
        t.kernel_base,
        u32::from_le_bytes(tag)
    );
    assert!(text.contains(&expected), "{text}");
    assert!(s.symbols.is_none(), "no kernel, no symbol search");

    // Neither anchor at all.
    let mut none = original;
    put_u64(&mut none, off::PS_LOADED_MODULE_LIST, 0);
    put_u64(&mut none, off::KD_DEBUGGER_DATA_BLOCK, 0);
    let s = session_with(none);
    assert!(matches!(s.kernel, Err(KernelError::NoAnchor)));
}
