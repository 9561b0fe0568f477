//! 32-bit (`PAGEDUMP`) dumps: write, read back, compare every header field and page; corrupt
//! and truncate them and get precise errors, never a panic.

use kds_crashdump::{
    encode_headers32, off32, write_dump32, BitmapSignature, Bitness, CrashDump, DumpType, Header32,
    HeaderFields32, PhysicalRun, WriteKind, CONTEXT32_SIZE, EXCEPTION_RECORD32_SIZE, HEADER32_SIZE,
    MACHINE_I386, MAX_RUNS32, PAGE_SIZE,
};

/// A PAE PDPT 0x20 bytes into page 0x39 (CR3 keeps those low bits).
const DTB: u32 = 0x39_020;

fn sample_header() -> HeaderFields32 {
    let mut context = [0u8; CONTEXT32_SIZE];
    for (i, b) in context.iter_mut().enumerate() {
        *b = (i * 5 + 1) as u8;
    }
    context[0xB4..0xB8].copy_from_slice(&0x8078_9abcu32.to_le_bytes()); // Ebp
    context[0xB8..0xBC].copy_from_slice(&0x8234_5678u32.to_le_bytes()); // Eip
    context[0xC4..0xC8].copy_from_slice(&0x8078_9a00u32.to_le_bytes()); // Esp
    let mut exception_record = [0u8; EXCEPTION_RECORD32_SIZE];
    exception_record[..4].copy_from_slice(&0xc000_0005u32.to_le_bytes());
    exception_record[0xC..0x10].copy_from_slice(&0x8234_5678u32.to_le_bytes());
    HeaderFields32 {
        major_version: 0xF,
        minor_version: 19041,
        directory_table_base: DTB,
        pfn_database: 0x8440_0000,
        ps_loaded_module_list: 0x8273_a2d0,
        ps_active_process_head: 0x8271_e040,
        number_processors: 2,
        bugcheck_code: 0xE2,
        bugcheck_parameters: [1, 0x8000_0022, 0x333, 0xffff_ffff],
        pae_enabled: true,
        kd_debugger_data_block: 0x8270_0b20,
        context,
        exception_record,
        system_time: 0x01d9_8a3b_c0ff_ee00,
        system_up_time: 0x1234_5678,
        comment: "kds x86 test dump".to_owned(),
        product_type: 1,
        suite_mask: 0x110,
        bitmap_pages: None,
    }
}

/// Runs of several lengths, the DTB page, a page past 4 GiB (PAE reaches 64 GiB), a highest
/// pfn that is not a multiple of 8 or 64.
fn sample_pfns() -> Vec<u64> {
    let mut pfns: Vec<u64> = (0x1..0x5).collect();
    pfns.extend(0x10..0x13);
    pfns.push(0x39);
    pfns.extend(0x200..0x208);
    pfns.push(0x10_0041);
    pfns
}

fn page_bytes(pfn: u64) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    for (i, b) in page.iter_mut().enumerate() {
        *b = (pfn as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    page
}

fn build_with(header: &HeaderFields32, kind: WriteKind, pfns: &[u64]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    write_dump32(&mut out, header, kind, pfns, |pfn, page| {
        *page = page_bytes(pfn);
        Ok(())
    })
    .expect("write");
    out.into_inner()
}

fn build(kind: WriteKind, pfns: &[u64]) -> Vec<u8> {
    build_with(&sample_header(), kind, pfns)
}

fn error_of(bytes: Vec<u8>) -> String {
    CrashDump::from_bytes(bytes)
        .expect_err("the dump should be refused")
        .to_string()
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn run(base_page: u64, page_count: u64) -> PhysicalRun {
    PhysicalRun {
        base_page,
        page_count,
    }
}

fn expected_header32(code: u32, file_len: usize, runs: Vec<PhysicalRun>) -> Header32 {
    let f = sample_header();
    Header32 {
        major_version: f.major_version,
        minor_version: f.minor_version,
        directory_table_base: f.directory_table_base,
        pfn_database: f.pfn_database,
        ps_loaded_module_list: f.ps_loaded_module_list,
        ps_active_process_head: f.ps_active_process_head,
        machine_image_type: MACHINE_I386,
        number_processors: f.number_processors,
        bugcheck_code: f.bugcheck_code,
        bugcheck_parameters: f.bugcheck_parameters,
        pae_enabled: true,
        kd_debugger_data_block: f.kd_debugger_data_block,
        number_of_pages: runs.iter().map(|r| r.page_count as u32).sum(),
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
        bitmap: None,
    }
}

fn assert_pages(dump: &CrashDump, pfns: &[u64]) {
    assert_eq!(dump.present_pfns().collect::<Vec<_>>(), pfns);
    assert_eq!(dump.present_page_count(), pfns.len() as u64);
    for &pfn in pfns {
        assert_eq!(dump.page(pfn), Some(&page_bytes(pfn)[..]), "page {pfn:#x}");
    }
    assert!(dump.page(0).is_none());
    assert!(dump.page(0x5).is_none());
    assert!(dump.page(0x10_0042).is_none());
}

#[test]
fn full_dump_round_trip() {
    let pfns = sample_pfns();
    let bytes = build(WriteKind::Full, &pfns);
    assert_eq!(&bytes[..8], b"PAGEDUMP");
    assert_eq!(bytes.len(), HEADER32_SIZE + pfns.len() * PAGE_SIZE);
    let len = bytes.len();
    let dump = CrashDump::from_bytes(bytes).unwrap();
    assert_eq!(dump.bitness(), Bitness::Bits32);
    assert_eq!(dump.bitness().pointer_size(), 4);
    assert_eq!(dump.dump_type(), DumpType::Full);
    assert_eq!(dump.pae_enabled(), Some(true));
    assert_eq!(dump.machine_image_type(), MACHINE_I386);
    let runs = vec![
        run(0x1, 4),
        run(0x10, 3),
        run(0x39, 1),
        run(0x200, 8),
        run(0x10_0041, 1),
    ];
    assert_eq!(
        *dump.header32().unwrap(),
        expected_header32(1, len, runs.clone())
    );
    // Pages of a full dump follow the header in run order.
    assert_eq!(dump.page_offset(0x1), Some(0x1000));
    assert_eq!(dump.page_offset(0x39), Some(0x1000 + 7 * 0x1000));
    assert_pages(&dump, &pfns);

    // The widened header: u32 values zero-extended, never sign-extended.
    let h = dump.header();
    assert_eq!(h.directory_table_base, u64::from(DTB));
    assert_eq!(h.ps_loaded_module_list, 0x8273_a2d0);
    assert_eq!(h.ps_active_process_head, 0x8271_e040);
    assert_eq!(h.kd_debugger_data_block, 0x8270_0b20);
    assert_eq!(h.pfn_database, 0x8440_0000);
    assert_eq!(h.bugcheck_parameters, [1, 0x8000_0022, 0x333, 0xffff_ffff]);
    assert_eq!(h.machine_image_type, MACHINE_I386);
    assert_eq!(h.physical_memory_runs, runs);
    assert_eq!(h.comment, "kds x86 test dump");
    assert_eq!(h.required_dump_space, len as u64);
    assert_eq!(dump.header32().unwrap().context_eip(), 0x8234_5678);
    assert_eq!(dump.header32().unwrap().context_esp(), 0x8078_9a00);
    assert_eq!(dump.header32().unwrap().context_ebp(), 0x8078_9abc);
    assert_eq!(dump.context_record(), &sample_header().context[..]);
}

#[test]
fn bitmap_dumps_round_trip() {
    let pfns = sample_pfns();
    for (dump_type, signature) in [
        (DumpType::BitmapFull, BitmapSignature::Fdmp),
        (DumpType::BitmapKernel, BitmapSignature::Sdmp),
        (DumpType::Kernel, BitmapSignature::Sdmp),
    ] {
        let bytes = build(WriteKind::Bitmap { dump_type }, &pfns);
        assert_eq!(&bytes[off32::BITMAP_HEADER..][..8], {
            let mut sig = signature.bytes().to_vec();
            sig.extend_from_slice(b"DUMP");
            sig
        });
        let len = bytes.len();
        let dump = CrashDump::from_bytes(bytes).unwrap();
        assert_eq!(dump.dump_type(), dump_type);
        let h32 = dump.header32().unwrap();
        let bitmap = h32.bitmap.expect("bitmap header");
        assert_eq!(bitmap.signature, signature);
        assert_eq!(bitmap.total_present_pages, pfns.len() as u64);
        assert_eq!(bitmap.pages, 0x10_0048);
        // Bitmap at 0x1038, 0x10_0048 bits = 0x20010 bytes (rounded to 8), pages at the next page.
        assert_eq!(
            bitmap.first_page,
            (0x1038u64 + 0x2_0010).next_multiple_of(0x1000)
        );
        assert_eq!(dump.header().bitmap, Some(bitmap));
        let mut expected =
            expected_header32(dump_type.code(), len, h32.physical_memory_runs.clone());
        expected.bitmap = Some(bitmap);
        assert_eq!(*h32, expected);
        assert_pages(&dump, &pfns);
        assert_eq!(
            dump.page_offset(0x10),
            Some(bitmap.first_page + 4 * PAGE_SIZE as u64)
        );
    }
}

#[test]
fn rewriting_a_read_header_gives_the_same_bytes() {
    let pfns = sample_pfns();
    for kind in [
        WriteKind::Full,
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapFull,
        },
    ] {
        let bytes = build(kind, &pfns);
        let dump = CrashDump::from_bytes(bytes.clone()).unwrap();
        let fields = HeaderFields32::from_header(dump.header32().unwrap());
        assert_eq!(build_with(&fields, kind, &pfns), bytes);
    }
}

#[test]
fn non_pae_and_pattern_fields() {
    let header = HeaderFields32 {
        pae_enabled: false,
        directory_table_base: 0x39_000,
        ..sample_header()
    };
    let bytes = build_with(&header, WriteKind::Full, &[0x39]);
    assert_eq!(bytes[off32::PAE_ENABLED], 0);
    let dump = CrashDump::from_bytes(bytes).unwrap();
    assert_eq!(dump.pae_enabled(), Some(false));
    assert!(!dump.header32().unwrap().pae_enabled);

    // A PaeEnabled byte other than 0 or 1 still means PAE.
    let mut bytes = build(WriteKind::Full, &[0x39]);
    bytes[off32::PAE_ENABLED] = 0x50;
    assert_eq!(
        CrashDump::from_bytes(bytes).unwrap().pae_enabled(),
        Some(true)
    );
}

#[test]
fn writer_limits() {
    let too_many: Vec<u64> = (0..=u64::from(MAX_RUNS32)).map(|i| i * 2).collect();
    let err = encode_headers32(&sample_header(), WriteKind::Full, &too_many).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a full dump describes at most 86 runs of contiguous pages in its header, but these pfns form 87; write a bitmap dump instead"
    );
    // A bitmap dump merges them into 86 runs.
    let bytes = build(
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapFull,
        },
        &too_many,
    );
    let dump = CrashDump::from_bytes(bytes).unwrap();
    assert_eq!(dump.header().physical_memory_runs.len(), 86);
    assert_pages_present(&dump, &too_many);

    let err = encode_headers32(&sample_header(), WriteKind::Full, &[1, 0x1_0000_0000]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pfn 0x100000000 does not fit the u32 fields of a 32-bit dump's physical memory descriptor (pfns up to 0xffffffff)"
    );
}

fn assert_pages_present(dump: &CrashDump, pfns: &[u64]) {
    for &pfn in pfns {
        assert_eq!(dump.page(pfn), Some(&page_bytes(pfn)[..]), "page {pfn:#x}");
    }
}

#[test]
fn truncated_headers() {
    let bytes = build(WriteKind::Full, &[1, 2]);
    let mut short = bytes.clone();
    short.truncate(0xFFF);
    assert_eq!(
        error_of(short),
        "file ends at 0xfff but the 32-bit dump header (DUMP_HEADER32) needs 0x1000 bytes at offset 0x0"
    );
    assert_eq!(
        error_of(b"PAGEDUM".to_vec()),
        "file ends at 0x7 but the 32-bit dump header (DUMP_HEADER32) needs 0x1000 bytes at offset 0x0"
    );
    let mut short = bytes;
    short.truncate(0x2000);
    assert_eq!(
        error_of(short),
        "runs at 0x6c describe 2 pages stored from offset 0x1000, but the file holds 1 pages there (it ends at 0x2000)"
    );

    let bitmap = build(
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapFull,
        },
        &[1, 0x4000],
    );
    let mut short = bitmap.clone();
    short.truncate(0x1010);
    assert_eq!(
        error_of(short),
        "file ends at 0x1010 but the bitmap header needs 0x8 bytes at offset 0x1020"
    );
    let mut short = bitmap;
    short.truncate(0x1100);
    assert_eq!(
        error_of(short),
        "bitmap at 0x1038 has 16392 bits (0x801 bytes) but the file ends at 0x1100"
    );
}

#[test]
fn corrupt_fields() {
    let mut bytes = build(WriteKind::Full, &[1, 2]);
    put_u32(&mut bytes, off32::NUMBER_OF_RUNS, 87);
    assert_eq!(
        error_of(bytes),
        "NumberOfRuns at 0x64 is 0x57; the physical memory descriptor holds at most 86"
    );

    let mut bytes = build(WriteKind::Full, &[1, 2, 5]);
    // Second run (at 0x74) starts inside the first.
    put_u32(&mut bytes, off32::RUNS + 8, 2);
    assert_eq!(
        error_of(bytes),
        "run 1 at offset 0x74 starts at page 0x2, before the end of the previous run (page 0x3); runs must be sorted and must not overlap"
    );

    for code in [8, 9, 0xA] {
        let mut bytes = build(WriteKind::Full, &[1]);
        put_u32(&mut bytes, off32::DUMP_TYPE, code);
        assert_eq!(
            error_of(bytes),
            format!("dump type {code:#x} at offset 0xf88 cannot be read from a 32-bit dump (PAGEDUMP): expected 1, 2, 5 or 6 (types 8, 9 and 0xa keep RDMP page ranges, a 64-bit-only layout)")
        );
    }
    let mut bytes = build(WriteKind::Full, &[1]);
    put_u32(&mut bytes, off32::DUMP_TYPE, 3);
    assert_eq!(
        error_of(bytes),
        "dump type 0x3 at offset 0xf88 cannot be read from a 32-bit dump (PAGEDUMP): expected 1, 2, 5 or 6"
    );

    let kind = WriteKind::Bitmap {
        dump_type: DumpType::BitmapKernel,
    };
    let mut bytes = build(kind, &[1, 2]);
    bytes[off32::BITMAP_HEADER..off32::BITMAP_HEADER + 4].copy_from_slice(b"XDMP");
    assert_eq!(
        error_of(bytes),
        r#"expected a bitmap header "SDMPDUMP" or "FDMPDUMP" at offset 0x1000 for a Kernel bitmap dump (type 6), found "XDMPDUMP""#
    );
    let mut bytes = build(kind, &[1, 2]);
    bytes[off32::BITMAP_TOTAL_PRESENT_PAGES] = 3;
    assert_eq!(
        error_of(bytes),
        "TotalPresentPages at 0x1028 says 3 but the bitmap at 0x1038 marks 2 pages present"
    );
    let mut bytes = build(kind, &[1, 2]);
    bytes[off32::BITMAP_FIRST_PAGE..off32::BITMAP_FIRST_PAGE + 8]
        .copy_from_slice(&0x1000u64.to_le_bytes());
    assert_eq!(
        error_of(bytes),
        "FirstPage at 0x1020 is 0x1000, inside the bitmap that ends at 0x1039"
    );
}

/// Every prefix and a sweep of single-byte corruptions of each layout: an error or a dump,
/// never a panic.
#[test]
fn truncation_and_corruption_never_panic() {
    let pfns = [1u64, 2, 3, 0x40, 0x41, 0x1000];
    for kind in [
        WriteKind::Full,
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapFull,
        },
        WriteKind::Bitmap {
            dump_type: DumpType::Kernel,
        },
    ] {
        let bytes = build(kind, &pfns);
        let header_end = usize::try_from(
            CrashDump::from_bytes(bytes.clone())
                .unwrap()
                .page_offset(1)
                .unwrap(),
        )
        .unwrap();
        for len in (0..=header_end + PAGE_SIZE).step_by(7) {
            let _ = CrashDump::from_bytes(bytes[..len].to_vec());
        }
        for at in (0..header_end).step_by(3) {
            for value in [0x00, 0xFF, 0x80] {
                let mut corrupt = bytes.clone();
                corrupt[at] = value;
                if let Ok(dump) = CrashDump::from_bytes(corrupt) {
                    let _ = dump.pages().count();
                    let mut buf = [0u8; 16];
                    let _ = dump.read_physical(0x1ff8, &mut buf);
                }
            }
        }
    }
}
