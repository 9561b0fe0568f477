//! Write dumps with known pages, read them back, compare every page and header field.

mod common;

use common::{build, page_bytes, put_u32, sample_header, sample_pfns, write_temp, DTB_PFN};
use kds_crashdump::{
    encode_headers, off, BitmapHeader, BitmapSignature, CrashDump, DumpType, Header64,
    HeaderFields, MissingPage, PhysicalRun, WriteKind, MACHINE_AMD64, PAGE_PATTERN, PAGE_SIZE,
};

/// The header a reader must decode from a dump written with `sample_header()`.
fn expected_header(
    code: u32,
    file_len: usize,
    runs: Vec<PhysicalRun>,
    bitmap: Option<BitmapHeader>,
) -> Header64 {
    let f = sample_header();
    Header64 {
        major_version: f.major_version,
        minor_version: f.minor_version,
        directory_table_base: f.directory_table_base,
        pfn_database: f.pfn_database,
        ps_loaded_module_list: f.ps_loaded_module_list,
        ps_active_process_head: f.ps_active_process_head,
        machine_image_type: MACHINE_AMD64,
        number_processors: f.number_processors,
        bugcheck_code: f.bugcheck_code,
        bugcheck_parameters: f.bugcheck_parameters,
        kd_debugger_data_block: f.kd_debugger_data_block,
        number_of_pages: runs.iter().map(|r| r.page_count).sum(),
        physical_memory_runs: runs,
        context: f.context,
        exception_record: f.exception_record,
        dump_type_code: code,
        required_dump_space: file_len as u64,
        system_time: f.system_time,
        comment: f.comment,
        system_up_time: f.system_up_time,
        product_type: f.product_type,
        suite_mask: f.suite_mask,
        bitmap,
        rdmp: None,
    }
}

fn run(base_page: u64, page_count: u64) -> PhysicalRun {
    PhysicalRun {
        base_page,
        page_count,
    }
}

fn sample_runs() -> Vec<PhysicalRun> {
    vec![
        run(0x1, 4),
        run(0x10, 3),
        run(0x3f, 2),
        run(DTB_PFN, 1),
        run(0x200, 8),
        run(0x10_0041, 1),
    ]
}

/// Every page of `pfns` is held with its bytes, nothing else is, and the counts agree.
fn assert_pages(dump: &CrashDump, pfns: &[u64]) {
    assert_eq!(dump.present_page_count(), pfns.len() as u64);
    assert_eq!(dump.present_pfns().collect::<Vec<_>>(), pfns);
    assert_eq!(dump.highest_pfn(), pfns.last().copied());
    for &pfn in pfns {
        assert!(
            dump.page(pfn) == Some(&page_bytes(pfn)[..]),
            "page {pfn:#x}"
        );
    }
    let held: Vec<u64> = dump.pages().map(|(pfn, _)| pfn).collect();
    assert_eq!(held, pfns);
    let highest = pfns.last().copied().unwrap_or(0);
    for pfn in 0..0x300u64.min(highest + 2) {
        assert_eq!(
            dump.page(pfn).is_some(),
            pfns.contains(&pfn),
            "pfn {pfn:#x}"
        );
    }
    for pfn in [
        highest + 1,
        highest + 64,
        1 << 40,
        u64::MAX / PAGE_SIZE as u64,
        u64::MAX,
    ] {
        assert_eq!(dump.page(pfn), None, "pfn {pfn:#x}");
    }
}

#[test]
fn full_dump_round_trips_every_page_and_field() {
    let pfns = sample_pfns();
    let bytes = build(WriteKind::Full, &pfns);
    assert_eq!(bytes.len(), 0x2000 + pfns.len() * PAGE_SIZE);
    let dump = CrashDump::from_bytes(bytes.clone()).unwrap();

    assert_eq!(dump.dump_type(), DumpType::Full);
    assert_eq!(
        *dump.header(),
        expected_header(1, bytes.len(), sample_runs(), None)
    );
    assert_pages(&dump, &pfns);
    // Run order in the file: the first page right after the header.
    assert_eq!(dump.page_offset(0x1), Some(0x2000));
    assert_eq!(dump.page_offset(0x10), Some(0x2000 + 4 * 0x1000));

    // The same through a memory map.
    let mapped = CrashDump::open(&write_temp("full.dmp", &bytes)).unwrap();
    assert_eq!(mapped.header(), dump.header());
    assert_pages(&mapped, &pfns);
}

#[test]
fn bitmap_dumps_round_trip_every_page_and_field() {
    let pfns = sample_pfns();
    for (dump_type, signature) in [
        (DumpType::BitmapFull, BitmapSignature::Fdmp),
        (DumpType::BitmapKernel, BitmapSignature::Sdmp),
        (DumpType::Kernel, BitmapSignature::Sdmp),
    ] {
        let bytes = build(WriteKind::Bitmap { dump_type }, &pfns);
        // Bitmap of 0x100042 bits = 0x20009 bytes, padded to 0x20010, from 0x2038: the first
        // page is at the next 4 KiB boundary after 0x22048.
        let first_page = 0x23000u64;
        assert_eq!(
            bytes.len() as u64,
            first_page + (pfns.len() * PAGE_SIZE) as u64
        );
        let dump = CrashDump::open(&write_temp("bitmap.dmp", &bytes)).unwrap();

        assert_eq!(dump.dump_type(), dump_type);
        let bitmap = BitmapHeader {
            signature,
            first_page,
            total_present_pages: pfns.len() as u64,
            // Highest pfn 0x10_0041: 0x10_0042 bits, rounded up to whole bitmap bytes.
            pages: 0x10_0048,
        };
        assert_eq!(
            *dump.header(),
            expected_header(dump_type.code(), bytes.len(), sample_runs(), Some(bitmap))
        );
        assert_pages(&dump, &pfns);
        assert_eq!(dump.page_offset(0x1), Some(first_page));
        assert_eq!(
            dump.page_offset(0x10_0041),
            Some(bytes.len() as u64 - 0x1000)
        );
    }
}

#[test]
fn bitmap_dump_with_many_pages_uses_the_rank_index_across_blocks() {
    // 5000 pages spread over 0x8000 page frames: many 8-word blocks, partial words everywhere.
    let pfns: Vec<u64> = (0..0x8000u64)
        .filter(|p| p % 7 == 0 || p % 11 == 3)
        .collect();
    let bytes = build(
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapKernel,
        },
        &pfns,
    );
    let dump = CrashDump::from_bytes(bytes).unwrap();
    assert_eq!(dump.present_page_count(), pfns.len() as u64);
    assert_eq!(dump.present_pfns().collect::<Vec<_>>(), pfns);
    for (i, &pfn) in pfns.iter().enumerate() {
        let expected = dump.header().bitmap.unwrap().first_page + (i * PAGE_SIZE) as u64;
        assert_eq!(dump.page_offset(pfn), Some(expected), "pfn {pfn:#x}");
    }
    let last = *pfns.last().unwrap();
    assert_eq!(last, 0x7fff); // 0x7fff == 7 * 0x1249
    assert_eq!(dump.page(0x7ffe), None);
    assert!(dump.page(last) == Some(&page_bytes(last)[..]));
    assert_eq!(dump.page(last + 1), None);
    assert_eq!(dump.highest_pfn(), Some(last));
}

#[test]
fn read_physical_crosses_pages_and_names_the_first_missing_one() {
    let dump = CrashDump::from_bytes(build(WriteKind::Full, &sample_pfns())).unwrap();
    // Pages 0x3f and 0x40 are consecutive in physical memory.
    let mut buf = vec![0u8; 0x20];
    dump.read_physical(0x3f_ff0, &mut buf).unwrap();
    assert_eq!(&buf[..0x10], &page_bytes(0x3f)[0xff0..]);
    assert_eq!(&buf[0x10..], &page_bytes(0x40)[..0x10]);

    let mut big = vec![0u8; 3 * PAGE_SIZE];
    assert_eq!(
        dump.read_physical(0x3_f000, &mut big),
        Err(MissingPage { pfn: 0x41 })
    );
    assert_eq!(&big[..PAGE_SIZE], &page_bytes(0x3f)[..]);
    assert_eq!(
        MissingPage { pfn: 0x41 }.to_string(),
        "physical page 0x41 (address 0x41000) is not in the dump"
    );
    assert_eq!(
        dump.read_physical(u64::MAX - 3, &mut buf),
        Err(MissingPage {
            pfn: u64::MAX / 0x1000
        })
    );
    dump.read_physical(0x1234, &mut []).unwrap();
}

#[test]
fn empty_dumps_hold_no_pages() {
    for kind in [
        WriteKind::Full,
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapFull,
        },
    ] {
        let dump = CrashDump::from_bytes(build(kind, &[])).unwrap();
        assert_eq!(dump.present_page_count(), 0);
        assert_eq!(dump.present_pfns().next(), None);
        assert_eq!(dump.highest_pfn(), None);
        assert_eq!(dump.page(0), None);
        assert!(dump.header().physical_memory_runs.is_empty());
    }
}

#[test]
fn header_is_what_windows_writes() {
    let encoded = encode_headers(
        &sample_header(),
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapKernel,
        },
        &[0x10, 0x11],
    )
    .unwrap();
    let b = &encoded.bytes;
    assert_eq!(encoded.first_page_offset, 0x3000);
    assert_eq!(encoded.file_size, 0x5000);
    assert_eq!(b.len(), 0x3000);
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(&b[..8], b"PAGEDU64");
    assert_eq!(u32_at(off::MACHINE_IMAGE_TYPE), 0x8664);
    assert_eq!(u64_at(off::REQUIRED_DUMP_SPACE), 0x5000);
    // Unset fields keep the "PAGE" fill: padding after BugCheckCode, VersionUser, the
    // descriptor's padding, the unused tail of the descriptor and of the context buffer,
    // MiniDumpFields, and the reserved tail of the header.
    for at in [
        0x3c,
        off::VERSION_USER,
        0x7c,
        0x8c,
        0x300,
        0x340,
        0x818,
        0xefc,
        0x1038,
        0x1ffc,
    ] {
        assert_eq!(u32_at(at), PAGE_PATTERN, "offset {at:#x}");
    }
    assert_eq!(u32_at(off::ATTRIBUTES), 0);
    // One run of two pages.
    assert_eq!(u32_at(off::NUMBER_OF_RUNS), 1);
    assert_eq!(u64_at(off::NUMBER_OF_PAGES), 2);
    assert_eq!((u64_at(off::RUNS), u64_at(off::RUNS + 8)), (0x10, 2));
    // Bitmap header.
    assert_eq!(&b[0x2000..0x2008], b"SDMPDUMP");
    assert_eq!(u64_at(off::BITMAP_FIRST_PAGE), 0x3000);
    assert_eq!(u64_at(off::BITMAP_TOTAL_PRESENT_PAGES), 2);
    assert_eq!(u64_at(off::BITMAP_PAGES), 0x18);
    assert_eq!(&b[0x2038..0x2040], &[0, 0, 0x03, 0, 0, 0, 0, 0]);
    assert!(b[0x2040..].iter().all(|&x| x == 0));
    // Comment: the text, then NULs.
    assert_eq!(&b[off::COMMENT..off::COMMENT + 14], b"kds test dump\0");
    assert!(b[off::COMMENT + 14..off::COMMENT + 128]
        .iter()
        .all(|&x| x == 0));
}

#[test]
fn an_unset_comment_reads_as_empty() {
    let mut bytes = build(WriteKind::Full, &[1]);
    for at in (off::COMMENT..off::COMMENT + 128).step_by(4) {
        put_u32(&mut bytes, at, PAGE_PATTERN);
    }
    let dump = CrashDump::from_bytes(bytes).unwrap();
    assert_eq!(dump.header().comment, "");
    assert_eq!(dump.header().minor_version, 19041);
}

#[test]
fn bitmap_descriptor_is_merged_to_42_runs_covering_every_page() {
    // 100 single-page runs with growing gaps: the 41 widest gaps are the last 41.
    let pfns: Vec<u64> = (0..100u64).map(|i| i * (i + 3)).collect();
    let bytes = build(
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapFull,
        },
        &pfns,
    );
    let dump = CrashDump::from_bytes(bytes).unwrap();
    let runs = &dump.header().physical_memory_runs;
    assert_eq!(runs.len(), 42);
    assert_eq!(runs[0], run(0, pfns[58] + 1));
    for (r, &pfn) in runs[1..].iter().zip(&pfns[59..]) {
        assert_eq!(*r, run(pfn, 1));
    }
    assert_eq!(
        dump.header().number_of_pages,
        runs.iter().map(|r| r.page_count).sum::<u64>()
    );
    assert_pages(&dump, &pfns);

    // A full dump cannot describe them.
    let err = encode_headers(&sample_header(), WriteKind::Full, &pfns).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a full dump describes at most 42 runs of contiguous pages in its header, but these pfns form 100; write a bitmap dump instead"
    );
}

#[test]
fn writer_refuses_bad_input() {
    let header = sample_header();
    let err = encode_headers(
        &header,
        WriteKind::Bitmap {
            dump_type: DumpType::CompleteMemory,
        },
        &[1],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Complete memory dump (type 0xa) is not a bitmap dump type; use 2, 5 or 6"
    );
    let long = HeaderFields {
        comment: "x".repeat(129),
        ..sample_header()
    };
    let err = encode_headers(&long, WriteKind::Full, &[1]).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("the comment must be ASCII without NUL and at most 128 bytes"));
    let err = encode_headers(&header, WriteKind::Full, &[u64::MAX / 4096]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pfn 0xfffffffffffff is past the 64-bit physical address space"
    );
    let bitmap = WriteKind::Bitmap {
        dump_type: DumpType::BitmapFull,
    };
    let err = encode_headers(&header, bitmap, &[1, 1 << 40]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a bitmap up to pfn 0x10000000000 would take 0x2000000008 bytes; at most 0x100000000 are written (pfns below 0x800000000)"
    );
    let mut out = std::io::Cursor::new(Vec::new());
    let err = kds_crashdump::write_dump(&mut out, &header, WriteKind::Full, &[1, 2], |pfn, _| {
        if pfn == 2 {
            Err(std::io::Error::other("page 2 is unreadable"))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading physical page 0x2 for the dump: page 2 is unreadable"
    );
}

#[test]
fn rewriting_from_a_read_header_gives_the_same_file() {
    let pfns = sample_pfns();
    let kind = WriteKind::Bitmap {
        dump_type: DumpType::BitmapFull,
    };
    let bytes = build(kind, &pfns);
    let dump = CrashDump::from_bytes(bytes.clone()).unwrap();
    let fields = HeaderFields::from_header(dump.header());
    assert_eq!(
        fields.bitmap_pages,
        dump.header().bitmap.as_ref().map(|b| b.pages)
    );
    assert_eq!(
        HeaderFields {
            bitmap_pages: None,
            ..fields.clone()
        },
        sample_header()
    );
    let mut again = std::io::Cursor::new(Vec::new());
    let held: Vec<u64> = dump.present_pfns().collect();
    kds_crashdump::write_dump(&mut again, &fields, kind, &held, |pfn, page| {
        page.copy_from_slice(dump.page(pfn).unwrap());
        Ok(())
    })
    .unwrap();
    assert!(again.into_inner() == bytes);
}
