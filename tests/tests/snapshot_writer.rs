//! Dumps kds writes (`kds snapshot`, `kds run --record`) from a dump, a raw image and an ELF
//! core: kdmp-parser opens them and reads the same header values and pages as kds, and the
//! pages are the source's.

use kdmp_parser::gxa::{Gpa, Gxa};
use kdmp_parser::parse::KernelDumpParser;
use kdmp_parser::phys;
use kds_e2e::{scratch_dir, x64_tables};
use kds_fixture::dumpfile::{write_dump, DumpKind};
use kds_fixture::snapshotfile::write_elf_core;
use kds_fixture::{build, FixtureSpec};
use kds_runtime::dump_writer::{write_bitmap_dump, PageSelection};
use kds_runtime::session::Session;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::target::{DumpTarget, SnapshotTarget, Target};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

fn session(target: Arc<dyn Target>, table_dir: &Path) -> Session {
    let path = SymbolPath::parse(&table_dir.display().to_string()).expect("symbol path");
    Session::open(target, path).expect("session")
}

/// kdmp-parser's view of `written` equals kds's, and every page equals `source`'s.
fn agree(written: &Path, source: &dyn Target, pages: &BTreeSet<u64>) {
    let ours = DumpTarget::open(written).expect("kds opens the written dump");
    let theirs = KernelDumpParser::new(written).expect("kdmp-parser opens the written dump");
    let h = theirs.headers();
    let id = ours.identity();
    assert_eq!(h.directory_table_base, id.directory_table_base);
    assert_eq!(Some(h.ps_loaded_module_list), id.ps_loaded_module_list);
    assert_eq!(Some(h.ps_active_process_head), id.ps_active_process_head);
    assert_eq!(Some(h.kd_debugger_data_block), id.kd_debugger_data_block);
    assert_eq!(h.number_processors, id.processor_count);
    let their_pages: BTreeSet<u64> = theirs.physmem().map(|(gpa, _)| gpa.u64() >> 12).collect();
    assert_eq!(&their_pages, pages, "kdmp-parser lists other pages");
    let reader = phys::Reader::new(&theirs);
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    for &pfn in pages {
        reader
            .read_exact(Gpa::new(pfn << 12), &mut a)
            .expect("kdmp-parser reads a listed page");
        source
            .read_physical(pfn << 12, &mut b)
            .expect("the source holds the page");
        assert!(a == b, "page {pfn:#x} differs from the source");
    }
}

#[test]
fn written_dumps_open_in_kdmp_parser_with_the_sources_pages_and_header() {
    for (name, table) in x64_tables() {
        written_dumps_agree(name, &table);
    }
}

fn written_dumps_agree(name: &str, table: &Path) {
    let dir = scratch_dir(&format!("snapshot_writer_{name}"));
    let fixture = build(&FixtureSpec::hung_server(table, 4)).expect("fixture");
    let dump = dir.join("source.dmp");
    let elf = dir.join("source.elf");
    write_dump(&fixture, &dump, DumpKind::BitmapFull).expect("dump");
    write_elf_core(&fixture, &elf).expect("elf");
    let tables = table
        .parent()
        .and_then(Path::parent)
        .expect("table directory")
        .to_path_buf();

    // From a dump, every page: the same pages, the same header values.
    let source: Arc<dyn Target> = Arc::new(DumpTarget::open(&dump).expect("open"));
    let s = session(Arc::clone(&source), &tables);
    let all = dir.join("all.dmp");
    let written = write_bitmap_dump(&s, &PageSelection::All, None, &all).expect("write");
    let pages: BTreeSet<u64> = source
        .captured_pfns()
        .expect("a dump lists its pages")
        .into_iter()
        .collect();
    assert_eq!(written.pages, pages.len() as u64);
    assert_eq!(written.unreadable, 0);
    agree(&all, source.as_ref(), &pages);
    let reread = DumpTarget::open(&all).expect("open");
    let (a, b) = (reread.identity(), source.identity());
    assert_eq!(a.bugcheck, b.bugcheck);
    assert_eq!(a.os_build, b.os_build);
    assert_eq!(a.system_time, b.system_time);

    // From an ELF core (no header: discovery), the kernel's pages: kdmp-parser agrees, the
    // header names what discovery and the symbols found, and nt's image is inside.
    let source: Arc<dyn Target> = Arc::new(SnapshotTarget::open(&elf).expect("open"));
    let s = session(Arc::clone(&source), &tables);
    let kernel = dir.join("kernel.dmp");
    let written = write_bitmap_dump(&s, &PageSelection::Kernel, None, &kernel).expect("write");
    assert!(written.pages > 100, "{written:?}");
    let reread = DumpTarget::open(&kernel).expect("open");
    let pages: BTreeSet<u64> = reread.dump().present_pfns().collect();
    agree(&kernel, source.as_ref(), &pages);
    let id = reread.identity();
    assert_eq!(id.directory_table_base, fixture.truth.kernel_dtb);
    assert_eq!(
        id.ps_active_process_head,
        Some(fixture.truth.ps_active_process_head)
    );
    assert_eq!(
        id.ps_loaded_module_list,
        Some(fixture.truth.ps_loaded_module_list)
    );
    assert_eq!(
        id.bugcheck.map(|b| b.code),
        Some(fixture.truth.bugcheck_code)
    );
    let replay = session(Arc::new(reread), &tables);
    assert_eq!(
        replay.kernel.as_ref().map(|k| k.base).ok(),
        Some(fixture.truth.kernel_base)
    );
}
