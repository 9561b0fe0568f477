//! Fixtures shared by the integration tests: dumps built by code from known page contents.
#![allow(dead_code)]

pub mod kdmp_agree;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use kds_crashdump::{
    encode_headers, off, write_dump, DumpType, HeaderFields, WriteKind, CONTEXT64_SIZE, PAGE_SIZE,
};

/// Physical page holding the (all-zero) PML4 that `sample_header` names as its DTB, so that
/// kdmp-parser's module-list walk at open finds nothing present and stops.
pub const DTB_PFN: u64 = 0x1ad;

/// Bytes of page `pfn`: distinct per page and per offset (zero for the DTB page).
pub fn page_bytes(pfn: u64) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    if pfn == DTB_PFN {
        return page;
    }
    let mut x = pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for chunk in page.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    page
}

/// A header with a distinct value in every field.
pub fn sample_header() -> HeaderFields {
    let mut context = [0u8; CONTEXT64_SIZE];
    for (i, b) in context.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    // MxCsr at +0x34 must equal MxCsr2 at +0x118 (the C++ kdmp-parser checks it).
    context[0x34..0x38].copy_from_slice(&0x1f80u32.to_le_bytes());
    context[0x118..0x11c].copy_from_slice(&0x1f80u32.to_le_bytes());
    context[0x98..0xa0].copy_from_slice(&0xffff_f803_1234_5ff8u64.to_le_bytes()); // Rsp
    context[0xf8..0x100].copy_from_slice(&0xffff_f803_4567_89abu64.to_le_bytes()); // Rip
    let mut exception_record = [0u8; 0x98];
    exception_record[..4].copy_from_slice(&0xc000_0005u32.to_le_bytes());
    exception_record[0x10..0x18].copy_from_slice(&0xffff_f803_4567_89abu64.to_le_bytes());
    HeaderFields {
        major_version: 0xF,
        minor_version: 19041,
        directory_table_base: DTB_PFN * PAGE_SIZE as u64,
        pfn_database: 0xffff_fa80_0000_0000,
        ps_loaded_module_list: 0xffff_f803_3fc2_a2d0,
        ps_active_process_head: 0xffff_f803_3fc1_e040,
        number_processors: 4,
        bugcheck_code: 0xE2,
        bugcheck_parameters: [1, 0x22, 0x333, 0x4444],
        kd_debugger_data_block: 0xffff_f803_3fa0_0b20,
        context,
        exception_record,
        system_time: 0x01d9_8a3b_c0ff_ee00,
        system_up_time: 0x1234_5678,
        comment: "kds test dump".to_owned(),
        product_type: 1,
        suite_mask: 0x110,
        bitmap_pages: None,
    }
}

/// Pfns of a small machine: runs of several lengths, the DTB page, a page past 4 GiB, and a
/// highest pfn that is not a multiple of 8 or 64.
pub fn sample_pfns() -> Vec<u64> {
    let mut pfns: Vec<u64> = (0x1..0x5).collect();
    pfns.extend(0x10..0x13);
    pfns.push(0x3f);
    pfns.push(0x40);
    pfns.push(DTB_PFN);
    pfns.extend(0x200..0x208);
    pfns.push(0x10_0041);
    pfns
}

/// The dump bytes for `kind` with `sample_header()` and pages `pfns`.
pub fn build(kind: WriteKind, pfns: &[u64]) -> Vec<u8> {
    build_with(&sample_header(), kind, pfns)
}

/// Like [`build`], with a header of the caller's.
pub fn build_with(header: &HeaderFields, kind: WriteKind, pfns: &[u64]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    write_dump(&mut out, header, kind, pfns, |pfn, page| {
        *page = page_bytes(pfn);
        Ok(())
    })
    .expect("writing a test dump");
    out.into_inner()
}

/// A fresh path under the tests' temporary directory.
pub fn temp_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kds-crashdump");
    std::fs::create_dir_all(&dir).expect("creating the test temp dir");
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{}-{n}-{name}", std::process::id()))
}

/// A temporary file, removed when dropped.
pub struct TempFile(PathBuf);

impl std::ops::Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempFile {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `bytes` to a fresh temporary file.
pub fn write_temp(name: &str, bytes: &[u8]) -> TempFile {
    let path = temp_path(name);
    std::fs::write(&path, bytes).expect("writing a test dump file");
    TempFile(path)
}

pub fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A dump of type 8 (kernel) or 0xA (complete) in the RDMP layout kdmp-parser reads: ranges
/// from 0x2030, zero-padded up to the first page at 0x3000.
pub fn build_rdmp(dump_type: DumpType, ranges: &[(u64, u64)]) -> Vec<u8> {
    let pfns: Vec<u64> = ranges.iter().flat_map(|&(b, n)| b..b + n).collect();
    let mut bytes = encode_headers(&sample_header(), WriteKind::Full, &pfns)
        .unwrap()
        .bytes;
    bytes.resize(0x3000, 0);
    put_u32(&mut bytes, off::DUMP_TYPE, dump_type.code());
    put_u32(&mut bytes, off::RDMP_MARKER, 0x40);
    bytes[off::RDMP_SIGNATURE..off::RDMP_SIGNATURE + 8].copy_from_slice(b"RDMPDUMP");
    put_u64(&mut bytes, off::RDMP_METADATA_SIZE, 0x3000 - 0x2020);
    put_u64(&mut bytes, off::RDMP_FIRST_PAGE, 0x3000);
    if dump_type == DumpType::CompleteMemory {
        put_u32(&mut bytes, 0x2020, ranges.len() as u32);
        put_u64(&mut bytes, off::RDMP_TOTAL_PAGES, pfns.len() as u64);
    }
    for (i, &(base, count)) in ranges.iter().enumerate() {
        put_u64(&mut bytes, off::RDMP_RANGES + 16 * i, base);
        put_u64(&mut bytes, off::RDMP_RANGES + 16 * i + 8, count);
    }
    for &pfn in &pfns {
        bytes.extend_from_slice(&page_bytes(pfn));
    }
    let len = bytes.len() as u64;
    put_u64(&mut bytes, off::REQUIRED_DUMP_SPACE, len);
    bytes
}
