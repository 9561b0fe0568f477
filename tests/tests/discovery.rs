//! Discovery for header-less images, checked against fixture dumps whose headers say the
//! answer: the DTB found by scanning (header ignored) must be the System process's PML4 and
//! share its kernel half with the header's DirectoryTableBase (which, as Windows writes it, is
//! the crashing processor's CR3: a user process's PML4), and the kernel base must be the one
//! the header's anchors lead to, for every x64 table.

use kds_e2e::{fixture_dump, scratch_dir, x64_tables};
use kds_fixture::dumpfile::{write_dump, DumpKind};
use kds_runtime::discovery::{find_dtb, find_kernel, DiscoveryLimits, DtbMethod, KernelMethod};
use kds_runtime::kernel::locate_kernel;
use kds_runtime::mmu::{AddressSpace, X64};
use kds_runtime::target::{DumpTarget, Target};
use std::path::Path;
use std::sync::Arc;

/// Discover over the dump, ignoring its header, and compare with what the header leads to.
/// Returns the DTB method used.
fn discover_and_compare(
    name: &str,
    path: &Path,
    system_dtb: u64,
    expect_self_map: u64,
) -> DtbMethod {
    let dump = DumpTarget::open(path).expect("dump opens");
    let target: Arc<dyn Target> = Arc::new(dump);
    let identity = target.identity().clone();
    let limits = DiscoveryLimits::default();

    let dtb = find_dtb(target.as_ref(), &limits).expect("DTB found");
    assert_eq!(dtb.dtb, system_dtb, "{name}: {}", dtb.detail);
    assert_eq!(u64::from(dtb.self_map_index), expect_self_map, "{name}");

    let kernel = find_kernel(&target, dtb.dtb, &limits).expect("kernel found");
    let space = AddressSpace::new(Arc::clone(&target), &X64, identity.directory_table_base);
    let from_header = locate_kernel(&space, &identity).expect("header names the kernel");
    assert_eq!(kernel.base, from_header.base, "{name}: {}", kernel.detail);
    let discovered = AddressSpace::new(Arc::clone(&target), &X64, dtb.dtb);
    assert_eq!(
        discovered.translate(kernel.base).map(|t| t.physical),
        space.translate(kernel.base).map(|t| t.physical),
        "{name}: the header DTB and the discovered one share the kernel half"
    );
    let pdb = from_header.pdb().expect("nt names its PDB");
    assert_eq!(&kernel.pdb, pdb, "{name}");
    // The fixture puts nt 2 MiB-aligned (KASLR on 10+, the Windows 7 plan too).
    assert_eq!(kernel.method, KernelMethod::Aligned2MiB, "{name}");
    assert!(
        kernel.detail.starts_with(&format!(
            "kernel base {:#x}: MZ + RSDS {} {}-{:X} found scanning 2 MiB-aligned kernel mappings (",
            kernel.base, pdb.name, pdb.guid, pdb.age
        )),
        "{name}: {}",
        kernel.detail
    );
    dtb.method
}

#[test]
fn discovery_finds_the_header_dtb_and_kernel_for_every_table_with_and_without_a_start_block() {
    let dir = scratch_dir("discovery");
    for (name, table) in x64_tables() {
        let (mut fixture, path) = fixture_dump(
            &table,
            11,
            DumpKind::BitmapFull,
            &dir,
            &format!("{name}.dmp"),
        );
        let self_map = fixture.truth.self_map_index;

        let method = discover_and_compare(name, &path, fixture.truth.kernel_dtb, self_map);
        let DtbMethod::ProcessorStartBlock { block, slot } = method else {
            panic!("{name}: the start block was not used: {method:?}");
        };
        assert!(block < 0x10_0000, "{name}: block at {block:#x}");
        // Cr3 is the third special register after Cr0 and Cr2 in every table.
        assert_eq!(slot, 0xA0, "{name}");
        std::fs::remove_file(&path).expect("dump removed");

        // Zero the start block: the PML4 scan must find the same DTB.
        let pfn = block / 0x1000;
        assert!(fixture.machine.phys.page(pfn).is_some(), "{name}");
        fixture.machine.phys.claim(pfn).fill(0);
        let path = dir.join(format!("{name}-no-start-block.dmp"));
        write_dump(&fixture, &path, DumpKind::BitmapFull).expect("dump written");
        let method = discover_and_compare(name, &path, fixture.truth.kernel_dtb, self_map);
        let DtbMethod::Pml4Scan { pages_scanned } = method else {
            panic!("{name}: expected the PML4 scan, got {method:?}");
        };
        assert_eq!(
            pages_scanned,
            fixture.truth.kernel_dtb / 0x1000 + 1,
            "{name}: the scan stops at the first self-mapped PML4, the System one"
        );
        std::fs::remove_file(&path).expect("dump removed");
    }
}
