//! The files we write, and hand-built RDMP files, read the same with kdmp-parser 0.8.

mod common;

use common::kdmp_agree::assert_kdmp_parser_agrees;
use common::{build, build_rdmp, sample_pfns, write_temp};
use kds_crashdump::{off, CrashDump, DumpType, HeaderFields, RdmpHeader, WriteKind, PAGE_SIZE};

#[test]
fn full_dump_agrees_with_kdmp_parser() {
    let pfns = sample_pfns();
    let path = write_temp("agree-full.dmp", &build(WriteKind::Full, &pfns));
    let agreement = assert_kdmp_parser_agrees(&path);
    assert_eq!(agreement.pages_compared, pfns.len() as u64);
    assert_eq!(agreement.kdmp_dump_type, 1);
}

#[test]
fn bitmap_dumps_agree_with_kdmp_parser() {
    let pfns = sample_pfns();
    for dump_type in [DumpType::BitmapFull, DumpType::BitmapKernel] {
        let path = write_temp(
            "agree-bitmap.dmp",
            &build(WriteKind::Bitmap { dump_type }, &pfns),
        );
        let agreement = assert_kdmp_parser_agrees(&path);
        assert_eq!(agreement.pages_compared, pfns.len() as u64);
        assert_eq!(agreement.kdmp_dump_type, dump_type.code());
    }
}

#[test]
fn large_bitmap_dump_agrees_with_kdmp_parser() {
    let pfns: Vec<u64> = (0..0x6000u64)
        .filter(|p| p % 5 == 0 || (0x2100..0x2400).contains(p))
        .collect();
    let bytes = build(
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapKernel,
        },
        &pfns,
    );
    let agreement = assert_kdmp_parser_agrees(&write_temp("agree-large.dmp", &bytes));
    assert_eq!(agreement.pages_compared, pfns.len() as u64);
}

#[test]
fn spare_bits_after_the_last_bitmap_bit_are_ignored_by_both() {
    // Pages = 0x44 bits: the last bitmap byte holds bits 0x40..0x47, of which 0x44.. are spare.
    let pfns = [0x1, 0x40, 0x43];
    let header = HeaderFields {
        bitmap_pages: Some(0x44),
        ..common::sample_header()
    };
    let mut bytes = common::build_with(
        &header,
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapFull,
        },
        &pfns,
    );
    assert_eq!(bytes[off::BITMAP_PAGES], 0x44);
    bytes[off::BITMAP + 8] |= 0b0100_0000; // bit 0x46: spare
    let path = write_temp("agree-spare-bits.dmp", &bytes);
    let agreement = assert_kdmp_parser_agrees(&path);
    assert_eq!(agreement.pages_compared, 3);
    assert_eq!(CrashDump::open(&path).unwrap().page(0x46), None);
}

#[test]
fn rdmp_dumps_agree_with_kdmp_parser() {
    let ranges = [(0x1, 4), (0x10, 3), (common::DTB_PFN, 1), (0x9000, 0x21)];
    for dump_type in [DumpType::KernelMemory, DumpType::CompleteMemory] {
        let bytes = build_rdmp(dump_type, &ranges);
        let path = write_temp("agree-rdmp.dmp", &bytes);
        let agreement = assert_kdmp_parser_agrees(&path);
        assert_eq!(agreement.pages_compared, 4 + 3 + 1 + 0x21);
        assert_eq!(agreement.kdmp_dump_type, dump_type.code());

        let dump = CrashDump::open(&path).unwrap();
        assert_eq!(dump.dump_type(), dump_type);
        let total = (dump_type == DumpType::CompleteMemory).then_some(0x29);
        assert_eq!(
            dump.header().rdmp,
            Some(RdmpHeader {
                metadata_size: 0xfe0,
                first_page: 0x3000,
                total_number_of_pages: total,
            })
        );
        assert_eq!(dump.page_offset(0x10), Some(0x3000 + 4 * PAGE_SIZE as u64));
        assert_eq!(dump.highest_pfn(), Some(0x9020));
    }
}

#[test]
fn kernel_summary_dumps_are_ours_alone() {
    // kdmp-parser 0.8 does not accept type 2; we read it as an SDMP bitmap.
    let pfns = sample_pfns();
    let bytes = build(
        WriteKind::Bitmap {
            dump_type: DumpType::Kernel,
        },
        &pfns,
    );
    let path = write_temp("summary.dmp", &bytes);
    let err = kdmp_parser::parse::KernelDumpParser::new(&path).unwrap_err();
    assert!(
        matches!(err, kdmp_parser::error::Error::UnknownDumpType(2)),
        "{err:?}"
    );
    let dump = CrashDump::open(&path).unwrap();
    assert_eq!(dump.dump_type(), DumpType::Kernel);
    assert_eq!(dump.dump_type().name(), "Kernel summary dump");
    assert_eq!(dump.present_page_count(), pfns.len() as u64);
}

#[test]
fn default_bitmap_covers_whole_bytes_and_an_explicit_extent_is_kept() {
    // The C++ kdmp-parser reads Pages / 8 whole bytes: a default extent of 0x44 bits would
    // hide pfn 0x43 from it, so the writer rounds up to 0x48.
    let pfns = [0x1, 0x40, 0x43];
    let kind = WriteKind::Bitmap {
        dump_type: DumpType::BitmapFull,
    };
    let bytes = build(kind, &pfns);
    assert_eq!(bytes[off::BITMAP_PAGES], 0x48);
    let header = HeaderFields {
        bitmap_pages: Some(0x4000),
        ..common::sample_header()
    };
    let bytes = common::build_with(&header, kind, &pfns);
    let dump = CrashDump::from_bytes(bytes).unwrap();
    assert_eq!(dump.header().bitmap.as_ref().map(|b| b.pages), Some(0x4000));
    assert_eq!(dump.present_pfns().collect::<Vec<_>>(), pfns);
}
