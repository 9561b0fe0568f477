//! An independent reader agrees with ours: kdmp-parser (crates.io) opens every fixture dump
//! and must see the same physical pages, the same header, the same virtual-to-physical
//! translations of the kernel's and processes' structures, and the same kernel modules.

use kdmp_parser::gxa::{Gpa, Gva, Gxa};
use kdmp_parser::parse::KernelDumpParser;
use kdmp_parser::{phys, virt};
use kds_e2e::{fixture_dump, scratch_dir, x64_tables};
use kds_fixture::dumpfile::DumpKind;
use kds_fixture::Fixture;
use kds_runtime::mmu::{AddressSpace, X64};
use kds_runtime::target::{DumpTarget, Target};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

fn agree(fixture: &Fixture, path: &Path) {
    let ours = DumpTarget::open(path).expect("kds opens the dump");
    let theirs = KernelDumpParser::new(path).expect("kdmp-parser opens the dump");
    let h = theirs.headers();
    let id = ours.identity();

    // Header fields.
    assert_eq!(h.directory_table_base, id.directory_table_base);
    assert_eq!(Some(h.ps_loaded_module_list), id.ps_loaded_module_list);
    assert_eq!(Some(h.ps_active_process_head), id.ps_active_process_head);
    assert_eq!(Some(h.kd_debugger_data_block), id.kd_debugger_data_block);
    assert_eq!(h.number_processors, id.processor_count);
    assert_eq!(h.bug_check_code, fixture.truth.bugcheck_code);
    assert_eq!(
        Some(h.ps_active_process_head),
        Some(fixture.truth.ps_active_process_head)
    );

    // Every physical page: same set, same bytes.
    let their_pages: BTreeSet<u64> = theirs.physmem().map(|(gpa, _)| gpa.u64() >> 12).collect();
    let our_pages: BTreeSet<u64> = ours.dump().present_pfns().collect();
    assert_eq!(their_pages.len(), our_pages.len(), "page counts differ");
    assert_eq!(their_pages, our_pages, "page sets differ");
    let reader = phys::Reader::new(&theirs);
    let mut theirs_page = vec![0u8; 4096];
    let mut ours_page = vec![0u8; 4096];
    for &pfn in &our_pages {
        reader
            .read_exact(Gpa::new(pfn << 12), &mut theirs_page)
            .expect("kdmp-parser reads a page it lists");
        ours.read_physical(pfn << 12, &mut ours_page)
            .expect("kds reads a page it lists");
        assert!(theirs_page == ours_page, "page {pfn:#x} differs");
    }

    // Translations of the structures the builder placed, in their own address spaces.
    let target: Arc<dyn Target> = Arc::new(DumpTarget::open(path).expect("reopen"));
    // (dtb, va, whether it must be mapped)
    let t = &fixture.truth;
    let kdtb = t.kernel_dtb;
    let mut probes: Vec<(u64, u64, bool)> = [
        t.kernel_base,
        t.ps_active_process_head,
        t.ps_loaded_module_list,
        t.kd_debugger_data_block,
        t.kuser_shared_data_kernel,
    ]
    .iter()
    .map(|&va| (kdtb, va, true))
    .collect();
    for m in &t.modules {
        probes.extend([(kdtb, m.base, true), (kdtb, m.entry, true)]);
    }
    for p in &t.processes {
        probes.push((kdtb, p.eprocess, true));
        if p.peb != 0 {
            probes.extend([
                (p.dtb, p.peb, true),
                (p.dtb, t.kuser_shared_data_user, true),
            ]);
            for m in &p.modules {
                probes.extend([(p.dtb, m.base, true), (p.dtb, m.entry, true)]);
            }
        }
        for th in &p.threads {
            probes.push((kdtb, th.ethread, true));
            // Stacks of long-idle threads are swapped out: both readers must say so.
            probes.push((kdtb, th.kernel_stack, th.kernel_stack_resident));
        }
    }
    assert!(
        probes.len() > 200,
        "only {} translations to compare",
        probes.len()
    );
    for (dtb, va, mapped) in probes {
        let space = AddressSpace::new(Arc::clone(&target), &X64, dtb);
        let our = space.translate(va).map(|t| t.physical).ok();
        let their = virt::Reader::with_dtb(&theirs, Gpa::new(dtb))
            .translate(Gva::new(va))
            .map(|t| t.gpa().u64())
            .ok();
        assert_eq!(our, their, "translation of {va:#x} in {dtb:#x}");
        assert_eq!(
            our.is_some(),
            mapped,
            "{va:#x} in {dtb:#x} mapped: {mapped}"
        );
    }

    // kdmp-parser walks PsLoadedModuleList itself.
    let mut their_modules: Vec<(u64, u64, String)> = theirs
        .kernel_modules()
        .map(|(range, name)| (range.start.u64(), range.end.u64(), name.to_string()))
        .collect();
    their_modules.sort();
    let mut truth_modules: Vec<(u64, u64, String)> = t
        .modules
        .iter()
        .map(|m| (m.base, m.base + m.size, m.path.clone()))
        .collect();
    truth_modules.sort();
    assert_eq!(their_modules.len(), truth_modules.len());
    for (theirs, truth) in their_modules.iter().zip(&truth_modules) {
        assert_eq!((theirs.0, theirs.1), (truth.0, truth.1));
        assert!(
            truth
                .2
                .ends_with(theirs.2.rsplit('\\').next().unwrap_or_default()),
            "module {} vs {}",
            theirs.2,
            truth.2
        );
    }
}

/// kdmp-parser finds the crashing processor's KPRCB through KDBG (KiProcessorBlock, the
/// PRCB's saved CONTEXT matching the header's Rsp), then its current thread's TEB, PEB and
/// loader list: the user modules of the process running on the crashing processor.
fn agree_on_current_process_modules(fixture: &Fixture, path: &Path) -> usize {
    let theirs = KernelDumpParser::new(path).expect("kdmp-parser opens the dump");
    let mut their: Vec<(u64, u64)> = theirs
        .user_modules()
        .map(|(range, _)| (range.start.u64(), range.end.u64()))
        .collect();
    their.sort_unstable();
    let current = fixture
        .truth
        .processes
        .iter()
        .find(|p| p.threads.iter().any(|t| t.processor == Some(0)))
        .expect("a thread runs on processor 0");
    let mut truth: Vec<(u64, u64)> = current
        .modules
        .iter()
        .map(|m| (m.base, m.base + m.size))
        .collect();
    truth.sort_unstable();
    assert_eq!(their, truth, "user modules of {}", current.image_file_name);
    their.len()
}

#[test]
fn kdmp_parser_agrees_on_full_and_bitmap_dumps_of_every_build() {
    let dir = scratch_dir("kdmp_agreement");
    for (name, table) in x64_tables() {
        for (kind, suffix) in [
            (DumpKind::Full, "full"),
            (DumpKind::BitmapFull, "bitmap-full"),
            (DumpKind::BitmapKernel, "bitmap-kernel"),
        ] {
            let (fixture, path) =
                fixture_dump(&table, 7, kind, &dir, &format!("{name}-{suffix}.dmp"));
            agree(&fixture, &path);
            if !matches!(kind, DumpKind::BitmapKernel) {
                let n = agree_on_current_process_modules(&fixture, &path);
                assert!(n >= 4, "{name}: kdmp-parser found {n} user modules");
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}
