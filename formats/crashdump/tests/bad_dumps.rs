//! Malformed files are refused with an error that names the offset and what was expected.

mod common;

use common::{build, put_u32, put_u64, sample_pfns, write_temp};
use kds_crashdump::{off, CrashDump, DumpError, DumpType, WriteKind, PAGE_PATTERN};

fn error_of(bytes: Vec<u8>) -> String {
    CrashDump::from_bytes(bytes)
        .expect_err("the dump must be refused")
        .to_string()
}

fn bitmap_dump(pfns: &[u64]) -> Vec<u8> {
    build(
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapKernel,
        },
        pfns,
    )
}

#[test]
fn zero_length_file() {
    let expected =
        "file is empty (0 bytes); expected a \"PAGEDU64\" kernel dump header at offset 0x0";
    assert_eq!(error_of(Vec::new()), expected);
    let path = write_temp("empty.dmp", &[]);
    let err = CrashDump::open(&path).unwrap_err();
    assert!(matches!(err, DumpError::Empty));
    assert_eq!(err.to_string(), expected);
}

#[test]
fn missing_file_names_the_path() {
    let path = common::temp_path("does-not-exist.dmp");
    let err = CrashDump::open(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn truncated_header() {
    let mut bytes = build(WriteKind::Full, &[1, 2]);
    bytes.truncate(0x1000);
    assert_eq!(
        error_of(bytes.clone()),
        "file ends at 0x1000 but the 64-bit dump header (DUMP_HEADER64) needs 0x2000 bytes at offset 0x0"
    );
    bytes.truncate(5); // "PAGED": a prefix of the signature
    assert_eq!(
        error_of(bytes),
        "file ends at 0x5 but the 64-bit dump header (DUMP_HEADER64) needs 0x2000 bytes at offset 0x0"
    );
}

#[test]
fn wrong_signature() {
    let mut bytes = build(WriteKind::Full, &[1, 2]);
    bytes[..8].copy_from_slice(b"MZ\x90\0\x03\0\0\0");
    assert_eq!(
        error_of(bytes),
        r#"expected "PAGEDU64" at offset 0x0, found "MZ\x90\x00\x03\x00\x00\x00""#
    );
    assert_eq!(
        error_of(b"MDMP\x93\xa7\0\0 and more".to_vec()),
        r#"expected "PAGEDU64" at offset 0x0, found "MDMP\x93\xa7\x00\x00" (a user-mode minidump)"#
    );
    assert_eq!(
        error_of(b"ELF".to_vec()),
        r#"expected "PAGEDU64" at offset 0x0, found "ELF""#
    );
}

#[test]
fn thirty_two_bit_dump() {
    // A DUMP_HEADER32 is 0x1000 bytes of "PAGE" fill with "PAGEDUMP" at 0: it is read as a
    // 32-bit dump, whose DumpType (0xF88) is still the fill.
    let mut bytes: Vec<u8> = PAGE_PATTERN.to_le_bytes().repeat(0x1000 / 4);
    bytes[4..8].copy_from_slice(b"DUMP");
    bytes.extend_from_slice(&[0u8; 0x3000]);
    assert_eq!(
        error_of(bytes),
        "dump type 0x45474150 at offset 0xf88 cannot be read from a 32-bit dump (PAGEDUMP): expected 1, 2, 5 or 6"
    );
}

#[test]
fn unknown_dump_type() {
    for code in [0, 3, 4, 7, 0xB, PAGE_PATTERN] {
        let mut bytes = build(WriteKind::Full, &[1]);
        put_u32(&mut bytes, off::DUMP_TYPE, code);
        assert_eq!(
            error_of(bytes),
            format!(
                "unknown dump type {code:#x} at offset 0xf98 (expected 1, 2, 5, 6, 8, 9 or 0xa)"
            )
        );
    }
}

#[test]
fn bitmap_that_claims_more_pages_than_the_file_holds() {
    // The bitmap and TotalPresentPages agree on 5 pages, but the file stores only 3.
    let mut bytes = bitmap_dump(&[0x10, 0x11, 0x12]);
    bytes[off::BITMAP + 2] |= 0b0001_1000; // pfns 0x13, 0x14
    put_u64(&mut bytes, off::BITMAP_PAGES, 0x15);
    put_u64(&mut bytes, off::BITMAP_TOTAL_PRESENT_PAGES, 5);
    assert_eq!(
        error_of(bytes),
        "bitmap at 0x2038 marks 5 pages present but the file holds 3 pages after offset 0x3000"
    );
    // The same for a file cut short.
    let mut bytes = bitmap_dump(&sample_pfns());
    bytes.truncate(bytes.len() - 0x1800);
    assert_eq!(
        error_of(bytes),
        "bitmap at 0x2038 marks 19 pages present but the file holds 17 pages after offset 0x23000"
    );
}

#[test]
fn total_present_pages_disagreeing_with_the_bitmap() {
    let mut bytes = bitmap_dump(&[0x10, 0x11, 0x12]);
    put_u64(&mut bytes, off::BITMAP_TOTAL_PRESENT_PAGES, 2);
    assert_eq!(
        error_of(bytes),
        "TotalPresentPages at 0x2028 says 2 but the bitmap at 0x2038 marks 3 pages present"
    );
}

#[test]
fn wrong_bitmap_signature() {
    let mut bytes = bitmap_dump(&[0x10]);
    bytes[0x2000..0x2008].copy_from_slice(b"XDMPDUMP");
    assert_eq!(
        error_of(bytes),
        r#"expected a bitmap header "SDMPDUMP" or "FDMPDUMP" at offset 0x2000 for a Kernel bitmap dump (type 6), found "XDMPDUMP""#
    );
    // A type 5 whose page area is full-dump page data.
    let mut bytes = build(WriteKind::Full, &[1]);
    put_u32(&mut bytes, off::DUMP_TYPE, 5);
    bytes[0x2000..0x2008].copy_from_slice(b"\x01\x02PAGE\0\0");
    assert_eq!(
        error_of(bytes),
        r#"expected a bitmap header "SDMPDUMP" or "FDMPDUMP" at offset 0x2000 for a Full bitmap dump (type 5), found "\x01\x02PAGE\x00\x00""#
    );
    // Types 8, 9, 0xA may also be RDMP.
    let mut bytes = build(WriteKind::Full, &[1]);
    put_u32(&mut bytes, off::DUMP_TYPE, 8);
    bytes[0x2000..0x2008].copy_from_slice(b"ABCDEFGH");
    assert_eq!(
        error_of(bytes),
        r#"expected a page-area header at offset 0x2000 for a Kernel memory dump (type 0x8): "SDMPDUMP", "FDMPDUMP" or a 0x40 marker then "RDMPDUMP", found "ABCDEFGH""#
    );
}

#[test]
fn bitmap_longer_than_the_file() {
    let mut bytes = bitmap_dump(&[0x10]);
    put_u64(&mut bytes, off::BITMAP_PAGES, 0x10_0000);
    assert_eq!(
        error_of(bytes.clone()),
        "bitmap at 0x2038 has 1048576 bits (0x20000 bytes) but the file ends at 0x4000"
    );
    put_u64(&mut bytes, off::BITMAP_PAGES, u64::MAX);
    assert_eq!(
        error_of(bytes),
        "bitmap at 0x2038 has 18446744073709551615 bits (0x2000000000000000 bytes) but the file ends at 0x4000"
    );
}

#[test]
fn first_page_inside_the_bitmap() {
    let mut bytes = bitmap_dump(&[0x10]);
    put_u64(&mut bytes, off::BITMAP_FIRST_PAGE, 0x2020);
    assert_eq!(
        error_of(bytes),
        "FirstPage at 0x2020 is 0x2020, inside the bitmap that ends at 0x203b"
    );
}

#[test]
fn overlapping_runs() {
    // Runs: 0x1+4, 0x10+3, ... Move run 1 to start inside run 0.
    let mut bytes = build(WriteKind::Full, &sample_pfns());
    put_u64(&mut bytes, off::RUNS + 16, 0x3);
    assert_eq!(
        error_of(bytes),
        "run 1 at offset 0xa8 starts at page 0x3, before the end of the previous run (page 0x5); runs must be sorted and must not overlap"
    );
}

#[test]
fn unsorted_runs() {
    let mut bytes = build(WriteKind::Full, &sample_pfns());
    put_u64(&mut bytes, off::RUNS + 2 * 16, 0x0); // run 2 (0x3f) now before run 1 (0x10)
    assert_eq!(
        error_of(bytes),
        "run 2 at offset 0xb8 starts at page 0x0, before the end of the previous run (page 0x13); runs must be sorted and must not overlap"
    );
}

#[test]
fn runs_past_the_end_of_the_file() {
    let mut bytes = build(WriteKind::Full, &sample_pfns());
    bytes.truncate(bytes.len() - 1);
    assert_eq!(
        error_of(bytes.clone()),
        "runs at 0x98 describe 19 pages stored from offset 0x2000, but the file holds 18 pages there (it ends at 0x14fff)"
    );
    put_u64(&mut bytes, off::RUNS + 8, u64::MAX - 0x10);
    assert_eq!(
        error_of(bytes),
        "run 0 at offset 0x98 (base page 0x1, 0xffffffffffffffef pages) extends past the last page frame"
    );
}

#[test]
fn absurd_number_of_runs() {
    for count in [43, 0x1000, PAGE_PATTERN] {
        let mut bytes = build(WriteKind::Full, &[1]);
        put_u32(&mut bytes, off::NUMBER_OF_RUNS, count);
        assert_eq!(
            error_of(bytes),
            format!("NumberOfRuns at 0x88 is {count:#x}; the physical memory descriptor holds at most 42")
        );
    }
    // For a bitmap dump the descriptor only describes memory: a bad one is dropped, not fatal.
    let mut bytes = bitmap_dump(&[0x10]);
    put_u32(&mut bytes, off::NUMBER_OF_RUNS, PAGE_PATTERN);
    let dump = CrashDump::from_bytes(bytes).unwrap();
    assert!(dump.header().physical_memory_runs.is_empty());
    assert_eq!(dump.present_pfns().collect::<Vec<_>>(), [0x10]);
}

#[test]
fn bad_rdmp_header() {
    let mut bytes = build(WriteKind::Full, &[1]);
    put_u32(&mut bytes, off::DUMP_TYPE, 9);
    put_u32(&mut bytes, off::RDMP_MARKER, 0x40);
    bytes[off::RDMP_SIGNATURE..off::RDMP_SIGNATURE + 8].copy_from_slice(b"RDMPDUMP");
    put_u64(&mut bytes, off::RDMP_METADATA_SIZE, 0xfe0);
    put_u64(&mut bytes, off::RDMP_FIRST_PAGE, 0x4000);
    assert_eq!(
        error_of(bytes.clone()),
        "RDMP header at 0x2018: first page offset 0x4000 should be 0x2020 + metadata size 0xfe0"
    );
    put_u64(&mut bytes, off::RDMP_METADATA_SIZE, 0xfe1);
    assert_eq!(
        error_of(bytes),
        "RDMP header at 0x2010: metadata size 0xfe1 is not a non-zero multiple of 0x10"
    );
}
