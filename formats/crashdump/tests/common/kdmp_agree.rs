//! Independent agreement with kdmp-parser 0.8: the same pages with the same bytes, and the
//! same header fields.
//!
//! Reusable from other crates' tests (with `kdmp-parser` as a dev-dependency):
//! `#[path = "<workspace>/formats/crashdump/tests/common/kdmp_agree.rs"] mod kdmp_agree;`

use std::path::Path;

use kdmp_parser::gxa::Gpa;
use kdmp_parser::parse::KernelDumpParser;
use kdmp_parser::phys;
use kds_crashdump::{CrashDump, PAGE_SIZE};

/// What kdmp-parser saw, for the caller's own assertions.
#[derive(Debug)]
pub struct Agreement {
    /// Pages compared byte for byte.
    pub pages_compared: u64,
    /// kdmp-parser's dump type code.
    pub kdmp_dump_type: u32,
}

/// Opens `path` with kdmp-parser and with this crate and asserts they agree on every physical
/// page (same pfns, same bytes) and on the header fields kdmp-parser exposes.
pub fn assert_kdmp_parser_agrees(path: &Path) -> Agreement {
    let ours = CrashDump::open(path).expect("kds-crashdump opens the dump");
    let theirs = KernelDumpParser::new(path).expect("kdmp-parser opens the dump");

    let h = theirs.headers();
    let o = ours.header();
    assert_eq!(
        h.directory_table_base, o.directory_table_base,
        "DirectoryTableBase"
    );
    assert_eq!(
        h.ps_loaded_module_list, o.ps_loaded_module_list,
        "PsLoadedModuleList"
    );
    assert_eq!(
        h.ps_active_process_head, o.ps_active_process_head,
        "PsActiveProcessHead"
    );
    assert_eq!(h.bug_check_code, o.bugcheck_code, "BugCheckCode");
    assert_eq!(
        h.bug_check_code_parameters, o.bugcheck_parameters,
        "BugCheckParameters"
    );
    assert_eq!(
        h.kd_debugger_data_block, o.kd_debugger_data_block,
        "KdDebuggerDataBlock"
    );
    assert_eq!(h.pfn_database, o.pfn_database, "PfnDataBase");
    assert_eq!(h.major_version, o.major_version, "MajorVersion");
    assert_eq!(h.minor_version, o.minor_version, "MinorVersion");
    assert_eq!(
        h.machine_image_type, o.machine_image_type,
        "MachineImageType"
    );
    assert_eq!(h.number_processors, o.number_processors, "NumberProcessors");
    assert_eq!(h.dump_type, o.dump_type_code, "DumpType");
    assert_eq!(
        theirs.dump_type() as u32,
        ours.dump_type().code(),
        "dump type"
    );
    assert_eq!(
        h.required_dump_space as u64, o.required_dump_space,
        "RequiredDumpSpace"
    );
    assert_eq!(h.system_time as u64, o.system_time, "SystemTime");
    assert_eq!(h.system_up_time as u64, o.system_up_time, "SystemUpTime");
    assert_eq!(h.product_type, o.product_type, "ProductType");
    assert_eq!(h.suite_mask, o.suite_mask, "SuiteMask");
    let ctx = theirs.context_record();
    assert_eq!(ctx.rip, o.context_rip(), "Context.Rip");
    assert_eq!(ctx.rsp, o.context_rsp(), "Context.Rsp");
    let exc = theirs.exception_record();
    let code = u32::from_le_bytes(o.exception_record[..4].try_into().unwrap());
    assert_eq!(exc.exception_code, code, "ExceptionCode");

    // kdmp-parser's physmem is a BTreeMap, so this is ascending like ours.
    let their_pfns: Vec<u64> = theirs.physmem().map(|(gpa, _)| gpa.pfn()).collect();
    let our_pfns: Vec<u64> = ours.present_pfns().collect();
    assert_eq!(their_pfns, our_pfns, "the set of physical pages held");
    assert_eq!(our_pfns.len() as u64, ours.present_page_count());

    let reader = phys::Reader::new(&theirs);
    let mut buf = vec![0u8; PAGE_SIZE];
    for &pfn in &our_pfns {
        reader
            .read_exact(Gpa::new(pfn * PAGE_SIZE as u64), &mut buf)
            .unwrap_or_else(|e| panic!("kdmp-parser reads page {pfn:#x}: {e:?}"));
        assert!(
            ours.page(pfn) == Some(buf.as_slice()),
            "page {pfn:#x} differs between kds-crashdump and kdmp-parser"
        );
    }
    // A page neither holds.
    let absent = ours.highest_pfn().map_or(0, |h| h + 1);
    assert!(reader
        .read_exact(Gpa::new(absent * PAGE_SIZE as u64), &mut buf)
        .is_err());
    assert_eq!(ours.page(absent), None);

    Agreement {
        pages_compared: our_pfns.len() as u64,
        kdmp_dump_type: theirs.dump_type() as u32,
    }
}
