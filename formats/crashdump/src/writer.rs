//! Writing full (type 1) and bitmap (types 2, 5, 6) dumps that Windows' own readers,
//! kdmp-parser and Volatility 3 accept: 64-bit (`PAGEDU64`) and 32-bit (`PAGEDUMP`) ones.
//!
//! What the independent readers require (checked in their sources):
//!
//! * kdmp-parser 0.8.2 (`parse.rs`, `structs.rs`): u32 "PAGE" at 0 and "DU64" at 4; `DumpType`
//!   one of 1, 5, 6, 8, 9, 0xA (2 is rejected); a full 0x2000-byte header. Type 1: runs are read
//!   out of the 700-byte descriptor buffer at 0x88 (so at most 42), pages from 0x2000 in run
//!   order, a page described twice is an error. Types 5 and 6: at 0x2000 "SDMP" or "FDMP" then
//!   "DUMP"; FirstPage (+0x20) is the file offset of the first page; Pages (+0x30) is the bit
//!   count, the bitmap (+0x38) is read byte by byte, `ceil(Pages / 8)` bytes with the spare
//!   bits of the last byte masked off. TotalPresentPages (+0x28) is not checked. On open it also
//!   walks `PsLoadedModuleList` through `DirectoryTableBase` and reads `KdDebuggerDataBlock`;
//!   missing pages there are tolerated, but a module list that never cycles back hangs it.
//! * Volatility 3 (`layers/crash.py`, `symbols/windows/crash64.json`, `crash_common.json`):
//!   checks only "PAGE" and "DU64" at 0, then accepts `DumpType` 1 and 5 (not 2 or 6). Type 1:
//!   `NumberOfRuns` at 0x88 and runs from 0x98, pages from 0x2000 (`headerpages = 2`); it does
//!   not read `NumberOfPages` (its ISF even puts it at 0x8C as a u32). Type 5: `_SUMMARY_DUMP`
//!   at 0x2000 whose signature it does not check; `HeaderSize` (+0x20) = first page offset,
//!   `BitmapSize` (+0x30) = bit count, the bitmap read as `ceil(BitmapSize / 32)` u32 words
//!   with every bit of the last word honoured, so the spare bits must be zero and the bitmap
//!   readable in whole u32s. A dump with no pages at all is rejected ("No Crash segments").
//!
//! Checked by running them, too: the `kdmp_agreement` tests open every written layout with
//! kdmp-parser 0.8.2, and Volatility 3 2.28.2 (`WindowsCrashDump64Layer` over a `FileLayer`,
//! run by hand) read the written type 1 and type 5 files with the same pages and bytes, refused
//! types 2 and 6 ("unsupported dump format"), and took a spare bit set past `Pages` for a page.
//!
//! 32-bit dumps ([`write_dump32`], [`HeaderFields32`]): Volatility 3's
//! `WindowsCrashDump32Layer` checks "PAGE" and "DUMP" at 0, accepts `DumpType` 1 and 5, reads
//! `NumberOfRuns` at 0x64 and runs of `{u32 BasePage, u32 PageCount}` from 0x6C with pages from
//! 0x1000 (`headerpages = 1`), and for type 5 the same `_SUMMARY_DUMP` as 64-bit at 0x1000. The
//! rest of `DUMP_HEADER32` follows DUMP-FORMATS.md and Volatility 2's `_DMP_HEADER` (`Comment`
//! at 0x820, `ProductType` 0xF94, `SuiteMask` 0xF98). The 32-bit header is 0x1000 bytes of "PAGE"
//! with its fields set, `PaeEnabled` 1 or 0 and the three bytes after it zero, the 1200-byte
//! `ContextRecord` area zero past the 0x2CC-byte x86 `CONTEXT`; at most 86 runs.
//!
//! So this writer: fills 0..0x2000 with "PAGE" before setting fields; stores at most 42 runs;
//! for bitmap dumps sets Pages to the highest pfn + 1, writes the bitmap padded with zero bytes
//! to a multiple of 8, and puts the first page at the next 0x1000 boundary after it; sets
//! `RequiredDumpSpace` to the file size and `DUMP_FILE_ATTRIBUTES` (0x1050) to 0, because the
//! "PAGE" pattern there would set bit 8, `EncryptedDumpData`.

use std::io::{self, Seek, Write};

use crate::header::{
    descriptor_offsets, off, off32, BitmapOffsets, BitmapSignature, Bitness, DumpType, Header32,
    Header64, PhysicalRun, COMMENT_SIZE, CONTEXT32_SIZE, CONTEXT64_SIZE, EXCEPTION_RECORD32_SIZE,
    EXCEPTION_RECORD64_SIZE, MACHINE_AMD64, MACHINE_I386, PAGE_PATTERN,
};
use crate::PAGE_SIZE;

/// The largest bitmap the writer builds in memory: 4 GiB, one bit per page of 128 TiB.
pub const MAX_BITMAP_BYTES: u64 = 1 << 32;

/// Which page layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Type 1: runs in the header, pages from 0x2000 (32-bit: 0x1000). At most
    /// [`MAX_RUNS`](crate::MAX_RUNS) (32-bit: [`MAX_RUNS32`](crate::MAX_RUNS32)) runs of
    /// contiguous pfns.
    Full,
    /// A bitmap dump: `BitmapFull` is written with the "FDMP" signature, `BitmapKernel` and
    /// `Kernel` (type 2) with "SDMP". kdmp-parser reads types 5 and 6, Volatility 3 only 5.
    Bitmap { dump_type: DumpType },
}

impl WriteKind {
    /// The `DumpType` code this kind writes.
    #[must_use]
    pub fn dump_type(self) -> DumpType {
        match self {
            WriteKind::Full => DumpType::Full,
            WriteKind::Bitmap { dump_type } => dump_type,
        }
    }
}

/// Every header field a writer chooses; the rest is layout, derived from the pages written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFields {
    /// 0xF for a free build, 0xC for a checked build.
    pub major_version: u32,
    /// The build number.
    pub minor_version: u32,
    pub directory_table_base: u64,
    pub pfn_database: u64,
    pub ps_loaded_module_list: u64,
    pub ps_active_process_head: u64,
    pub number_processors: u32,
    pub bugcheck_code: u32,
    pub bugcheck_parameters: [u64; 4],
    pub kd_debugger_data_block: u64,
    /// Raw AMD64 `CONTEXT`. The C++ kdmp-parser rejects a context whose `MxCsr` (+0x34) and
    /// `MxCsr2` (+0x118) differ.
    pub context: [u8; CONTEXT64_SIZE],
    pub exception_record: [u8; EXCEPTION_RECORD64_SIZE],
    /// FILETIME.
    pub system_time: u64,
    pub system_up_time: u64,
    /// ASCII, at most 128 bytes, no NUL.
    pub comment: String,
    /// 1 = workstation, 2 = domain controller, 3 = server.
    pub product_type: u32,
    pub suite_mask: u32,
    /// Page frames a bitmap describes: Windows writes the machine's physical extent (highest
    /// page frame + 1). `None`: the highest pfn written + 1, rounded up to whole bitmap bytes,
    /// because the C++ kdmp-parser reads only `Pages / 8` whole bytes of the bitmap.
    pub bitmap_pages: Option<u64>,
}

impl Default for HeaderFields {
    /// A free-build, one-processor workstation with every address zero.
    fn default() -> Self {
        HeaderFields {
            major_version: 0xF,
            minor_version: 0,
            directory_table_base: 0,
            pfn_database: 0,
            ps_loaded_module_list: 0,
            ps_active_process_head: 0,
            number_processors: 1,
            bugcheck_code: 0,
            bugcheck_parameters: [0; 4],
            kd_debugger_data_block: 0,
            context: [0; CONTEXT64_SIZE],
            exception_record: [0; EXCEPTION_RECORD64_SIZE],
            system_time: 0,
            system_up_time: 0,
            comment: String::new(),
            product_type: 1,
            suite_mask: 0x110,
            bitmap_pages: None,
        }
    }
}

impl HeaderFields {
    /// The fields of an existing dump's header, to write it again (e.g. with fewer pages).
    #[must_use]
    pub fn from_header(h: &Header64) -> HeaderFields {
        HeaderFields {
            major_version: h.major_version,
            minor_version: h.minor_version,
            directory_table_base: h.directory_table_base,
            pfn_database: h.pfn_database,
            ps_loaded_module_list: h.ps_loaded_module_list,
            ps_active_process_head: h.ps_active_process_head,
            number_processors: h.number_processors,
            bugcheck_code: h.bugcheck_code,
            bugcheck_parameters: h.bugcheck_parameters,
            kd_debugger_data_block: h.kd_debugger_data_block,
            context: h.context,
            exception_record: h.exception_record,
            system_time: h.system_time,
            system_up_time: h.system_up_time,
            comment: h.comment.clone(),
            product_type: h.product_type,
            suite_mask: h.suite_mask,
            bitmap_pages: h.bitmap.as_ref().map(|b| b.pages),
        }
    }
}

/// Every header field a writer of a 32-bit (`PAGEDUMP`) dump chooses: [`HeaderFields`] at
/// the widths of `DUMP_HEADER32`, plus `PaeEnabled`. Pointers are u32 so that a sign-extended
/// 64-bit address cannot slip in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFields32 {
    /// 0xF for a free build, 0xC for a checked build.
    pub major_version: u32,
    /// The build number.
    pub minor_version: u32,
    /// CR3 as the processor holds it: with PAE the PDPT's address, 32-byte aligned.
    pub directory_table_base: u32,
    pub pfn_database: u32,
    pub ps_loaded_module_list: u32,
    pub ps_active_process_head: u32,
    pub number_processors: u32,
    pub bugcheck_code: u32,
    pub bugcheck_parameters: [u32; 4],
    /// Stored as the u8 `PaeEnabled` at 0x5C (1 or 0).
    pub pae_enabled: bool,
    pub kd_debugger_data_block: u32,
    /// Raw x86 `CONTEXT` (0x2CC bytes), stored at 0x320.
    pub context: [u8; CONTEXT32_SIZE],
    /// Raw `EXCEPTION_RECORD32`, stored at 0x7D0.
    pub exception_record: [u8; EXCEPTION_RECORD32_SIZE],
    /// FILETIME.
    pub system_time: u64,
    pub system_up_time: u64,
    /// ASCII, at most 128 bytes, no NUL; stored at 0x820.
    pub comment: String,
    pub product_type: u32,
    pub suite_mask: u32,
    /// As [`HeaderFields::bitmap_pages`].
    pub bitmap_pages: Option<u64>,
}

impl Default for HeaderFields32 {
    /// A free-build, one-processor PAE workstation with every address zero.
    fn default() -> Self {
        HeaderFields32 {
            major_version: 0xF,
            minor_version: 0,
            directory_table_base: 0,
            pfn_database: 0,
            ps_loaded_module_list: 0,
            ps_active_process_head: 0,
            number_processors: 1,
            bugcheck_code: 0,
            bugcheck_parameters: [0; 4],
            pae_enabled: true,
            kd_debugger_data_block: 0,
            context: [0; CONTEXT32_SIZE],
            exception_record: [0; EXCEPTION_RECORD32_SIZE],
            system_time: 0,
            system_up_time: 0,
            comment: String::new(),
            product_type: 1,
            suite_mask: 0x110,
            bitmap_pages: None,
        }
    }
}

impl HeaderFields32 {
    /// The fields of an existing 32-bit dump's header, to write it again.
    #[must_use]
    pub fn from_header(h: &Header32) -> HeaderFields32 {
        HeaderFields32 {
            major_version: h.major_version,
            minor_version: h.minor_version,
            directory_table_base: h.directory_table_base,
            pfn_database: h.pfn_database,
            ps_loaded_module_list: h.ps_loaded_module_list,
            ps_active_process_head: h.ps_active_process_head,
            number_processors: h.number_processors,
            bugcheck_code: h.bugcheck_code,
            bugcheck_parameters: h.bugcheck_parameters,
            pae_enabled: h.pae_enabled,
            kd_debugger_data_block: h.kd_debugger_data_block,
            context: h.context,
            exception_record: h.exception_record,
            system_time: h.system_time,
            system_up_time: h.system_up_time,
            comment: h.comment.clone(),
            product_type: h.product_type,
            suite_mask: h.suite_mask,
            bitmap_pages: h.bitmap.as_ref().map(|b| b.pages),
        }
    }
}

/// Why a dump could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error("writing the dump: {0}")]
    Io(#[from] io::Error),

    #[error("reading physical page {pfn:#x} for the dump: {source}")]
    ReadPage {
        pfn: u64,
        #[source]
        source: io::Error,
    },

    #[error(
        "pfns must be ascending without duplicates, but pfns[{index}] = {pfn:#x} follows {previous:#x}"
    )]
    PfnsNotAscending {
        index: usize,
        previous: u64,
        pfn: u64,
    },

    #[error("pfn {pfn:#x} is past the 64-bit physical address space")]
    PfnTooLarge { pfn: u64 },

    #[error(
        "pfn {pfn:#x} does not fit the u32 fields of a 32-bit dump's physical memory descriptor (pfns up to 0xffffffff)"
    )]
    PfnPast32BitDescriptor { pfn: u64 },

    #[error(
        "a full dump describes at most {max} runs of contiguous pages in its header, but these pfns form {runs}; write a bitmap dump instead"
    )]
    TooManyRuns { runs: usize, max: u32 },

    #[error(
        "a bitmap up to pfn {highest_pfn:#x} would take {bytes:#x} bytes; at most {max:#x} are written (pfns below {limit:#x})",
        max = MAX_BITMAP_BYTES,
        limit = MAX_BITMAP_BYTES * 8,
    )]
    BitmapTooLarge { highest_pfn: u64, bytes: u64 },

    #[error("{dump_type} (type {code:#x}) is not a bitmap dump type; use 2, 5 or 6", code = dump_type.code())]
    NotABitmapType { dump_type: DumpType },

    #[error("the comment must be ASCII without NUL and at most {COMMENT_SIZE} bytes: {comment:?}")]
    BadComment { comment: String },
}

/// Everything that precedes the first page of a dump, and where the pages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedHeaders {
    /// Header, bitmap header and bitmap, padded: exactly `first_page_offset` bytes.
    pub bytes: Vec<u8>,
    /// File offset of the first page; page `i` of `pfns` is at `first_page_offset + i * 0x1000`.
    pub first_page_offset: u64,
    /// Size of the complete file (also stored as `RequiredDumpSpace`).
    pub file_size: u64,
}

/// Writes a dump holding the pages `pfns` (ascending, no duplicates); `read_page` fills one
/// page at a time into a reused buffer. Writing starts at `out`'s current position.
///
/// Full dumps describe runs = maximal contiguous ranges of `pfns`; bitmap dumps describe the
/// same runs in their physical memory descriptor, merged across the smallest gaps when there
/// are more than [`MAX_RUNS`](crate::MAX_RUNS).
pub fn write_dump<W: Write + Seek>(
    out: W,
    header: &HeaderFields,
    kind: WriteKind,
    pfns: &[u64],
    read_page: impl FnMut(u64, &mut [u8; PAGE_SIZE]) -> io::Result<()>,
) -> Result<(), WriteError> {
    let encoded = encode_headers(header, kind, pfns)?;
    write_pages(out, &encoded, pfns, read_page)
}

/// Builds everything before the first page, without writing pages: for writers that lay
/// pages out themselves (e.g. a sparse file made with `set_len`).
///
/// ```
/// use kds_crashdump::{encode_headers, CrashDump, DumpType, HeaderFields, WriteKind};
///
/// let pfns: Vec<u64> = (0..4096).step_by(8).collect();
/// let kind = WriteKind::Bitmap { dump_type: DumpType::BitmapFull };
/// let encoded = encode_headers(&HeaderFields::default(), kind, &pfns)?;
/// assert_eq!(encoded.first_page_offset, 0x3000); // header, bitmap header, 512-byte bitmap
/// assert_eq!(encoded.file_size, 0x3000 + 512 * 0x1000);
///
/// // Pages left as zeros, as a sparse file would read.
/// let mut file = encoded.bytes;
/// file.resize(encoded.file_size as usize, 0);
/// let dump = CrashDump::from_bytes(file)?;
/// assert_eq!(dump.present_page_count(), 512);
/// assert_eq!(dump.page_offset(16), Some(0x3000 + 2 * 0x1000));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_headers(
    header: &HeaderFields,
    kind: WriteKind,
    pfns: &[u64],
) -> Result<EncodedHeaders, WriteError> {
    let plan = Plan::new(
        Bitness::Bits64,
        kind,
        pfns,
        &header.comment,
        header.bitmap_pages,
    )?;
    let mut bytes = plan.page_filled_buffer();
    let mut w = FieldWriter(&mut bytes);
    w.put(off::SIGNATURE, b"PAGEDU64");
    w.u32(off::MAJOR_VERSION, header.major_version);
    w.u32(off::MINOR_VERSION, header.minor_version);
    w.u64(off::DIRECTORY_TABLE_BASE, header.directory_table_base);
    w.u64(off::PFN_DATABASE, header.pfn_database);
    w.u64(off::PS_LOADED_MODULE_LIST, header.ps_loaded_module_list);
    w.u64(off::PS_ACTIVE_PROCESS_HEAD, header.ps_active_process_head);
    w.u32(off::MACHINE_IMAGE_TYPE, MACHINE_AMD64);
    w.u32(off::NUMBER_PROCESSORS, header.number_processors);
    w.u32(off::BUGCHECK_CODE, header.bugcheck_code);
    for (i, p) in header.bugcheck_parameters.iter().enumerate() {
        w.u64(off::BUGCHECK_PARAMETERS + 8 * i, *p);
    }
    w.u64(off::KD_DEBUGGER_DATA_BLOCK, header.kd_debugger_data_block);
    plan.write_descriptor(&mut w);
    w.put(off::CONTEXT, &header.context);
    w.put(off::EXCEPTION, &header.exception_record);
    w.u32(off::DUMP_TYPE, kind.dump_type().code());
    w.u64(off::REQUIRED_DUMP_SPACE, plan.file_size);
    w.u64(off::SYSTEM_TIME, header.system_time);
    w.put(off::COMMENT, &[0u8; COMMENT_SIZE]);
    w.put(off::COMMENT, header.comment.as_bytes());
    w.u64(off::SYSTEM_UP_TIME, header.system_up_time);
    w.u32(off::PRODUCT_TYPE, header.product_type);
    w.u32(off::SUITE_MASK, header.suite_mask);
    w.u32(off::ATTRIBUTES, 0);
    plan.write_bitmap(&mut w, pfns);
    Ok(plan.finish(bytes))
}

/// Builds everything before the first page of a 32-bit (`PAGEDUMP`) dump, the counterpart of
/// [`encode_headers`]: a 0x1000-byte `DUMP_HEADER32` with u32 fields, `PaeEnabled`, the x86
/// `CONTEXT` and runs of 8 bytes; for bitmap kinds the `SDMP`/`FDMP` header at 0x1000.
///
/// ```
/// use kds_crashdump::{encode_headers32, Bitness, CrashDump, DumpType, HeaderFields32, WriteKind};
///
/// let header = HeaderFields32 { directory_table_base: 0x1a_6020, pae_enabled: true, ..HeaderFields32::default() };
/// let kind = WriteKind::Bitmap { dump_type: DumpType::BitmapFull };
/// let encoded = encode_headers32(&header, kind, &[0x10, 0x1a6])?;
/// assert_eq!(encoded.first_page_offset, 0x2000); // header, bitmap header, 56-byte bitmap
///
/// let mut file = encoded.bytes;
/// file.resize(encoded.file_size as usize, 0);
/// let dump = CrashDump::from_bytes(file)?;
/// assert_eq!(dump.bitness(), Bitness::Bits32);
/// assert_eq!(dump.pae_enabled(), Some(true));
/// assert_eq!(dump.header().directory_table_base, 0x1a_6020);
/// assert_eq!(dump.page_offset(0x1a6), Some(0x3000));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_headers32(
    header: &HeaderFields32,
    kind: WriteKind,
    pfns: &[u64],
) -> Result<EncodedHeaders, WriteError> {
    let plan = Plan::new(
        Bitness::Bits32,
        kind,
        pfns,
        &header.comment,
        header.bitmap_pages,
    )?;
    let mut bytes = plan.page_filled_buffer();
    let mut w = FieldWriter(&mut bytes);
    w.put(off32::SIGNATURE, b"PAGEDUMP");
    w.u32(off32::MAJOR_VERSION, header.major_version);
    w.u32(off32::MINOR_VERSION, header.minor_version);
    w.u32(off32::DIRECTORY_TABLE_BASE, header.directory_table_base);
    w.u32(off32::PFN_DATABASE, header.pfn_database);
    w.u32(off32::PS_LOADED_MODULE_LIST, header.ps_loaded_module_list);
    w.u32(off32::PS_ACTIVE_PROCESS_HEAD, header.ps_active_process_head);
    w.u32(off32::MACHINE_IMAGE_TYPE, MACHINE_I386);
    w.u32(off32::NUMBER_PROCESSORS, header.number_processors);
    w.u32(off32::BUGCHECK_CODE, header.bugcheck_code);
    for (i, p) in header.bugcheck_parameters.iter().enumerate() {
        w.u32(off32::BUGCHECK_PARAMETERS + 4 * i, *p);
    }
    // PaeEnabled, KdSecondaryVersion and two spare bytes.
    w.put(off32::PAE_ENABLED, &[u8::from(header.pae_enabled), 0, 0, 0]);
    w.u32(off32::KD_DEBUGGER_DATA_BLOCK, header.kd_debugger_data_block);
    plan.write_descriptor(&mut w);
    w.put(off32::CONTEXT, &[0u8; off32::CONTEXT_AREA_SIZE]);
    w.put(off32::CONTEXT, &header.context);
    w.put(off32::EXCEPTION, &header.exception_record);
    w.put(off32::COMMENT, &[0u8; COMMENT_SIZE]);
    w.put(off32::COMMENT, header.comment.as_bytes());
    w.u32(off32::DUMP_TYPE, kind.dump_type().code());
    w.u32(off32::PRODUCT_TYPE, header.product_type);
    w.u32(off32::SUITE_MASK, header.suite_mask);
    w.u64(off32::REQUIRED_DUMP_SPACE, plan.file_size);
    w.u64(off32::SYSTEM_UP_TIME, header.system_up_time);
    w.u64(off32::SYSTEM_TIME, header.system_time);
    plan.write_bitmap(&mut w, pfns);
    Ok(plan.finish(bytes))
}

/// Writes a 32-bit (`PAGEDUMP`) dump: [`write_dump`] with a [`HeaderFields32`] header.
pub fn write_dump32<W: Write + Seek>(
    out: W,
    header: &HeaderFields32,
    kind: WriteKind,
    pfns: &[u64],
    read_page: impl FnMut(u64, &mut [u8; PAGE_SIZE]) -> io::Result<()>,
) -> Result<(), WriteError> {
    let encoded = encode_headers32(header, kind, pfns)?;
    write_pages(out, &encoded, pfns, read_page)
}

fn write_pages<W: Write + Seek>(
    mut out: W,
    encoded: &EncodedHeaders,
    pfns: &[u64],
    mut read_page: impl FnMut(u64, &mut [u8; PAGE_SIZE]) -> io::Result<()>,
) -> Result<(), WriteError> {
    out.write_all(&encoded.bytes)?;
    let mut page = [0u8; PAGE_SIZE];
    for &pfn in pfns {
        page.fill(0);
        read_page(pfn, &mut page).map_err(|source| WriteError::ReadPage { pfn, source })?;
        out.write_all(&page)?;
    }
    out.flush()?;
    Ok(())
}

/// The layout both header encoders share: descriptor runs, bitmap size, where pages go.
struct Plan {
    bitness: Bitness,
    descriptor: Vec<PhysicalRun>,
    bitmap_signature: Option<BitmapSignature>,
    bits: u64,
    page_count: u64,
    first_page_offset: u64,
    file_size: u64,
}

impl Plan {
    fn new(
        bitness: Bitness,
        kind: WriteKind,
        pfns: &[u64],
        comment: &str,
        bitmap_pages: Option<u64>,
    ) -> Result<Plan, WriteError> {
        let runs = runs_of(pfns)?;
        if bitness == Bitness::Bits32 {
            if let Some(&pfn) = pfns.iter().find(|&&pfn| pfn > u64::from(u32::MAX)) {
                return Err(WriteError::PfnPast32BitDescriptor { pfn });
            }
        }
        if !comment.is_ascii() || comment.len() > COMMENT_SIZE || comment.contains('\0') {
            return Err(WriteError::BadComment {
                comment: comment.to_owned(),
            });
        }
        let max_runs = bitness.max_runs();
        let page_count = pfns.len() as u64;
        let (descriptor, bitmap_signature) = match kind {
            WriteKind::Full => {
                if runs.len() > max_runs as usize {
                    return Err(WriteError::TooManyRuns {
                        runs: runs.len(),
                        max: max_runs,
                    });
                }
                (runs, None)
            }
            WriteKind::Bitmap { dump_type } => {
                let signature = match dump_type {
                    DumpType::BitmapFull => BitmapSignature::Fdmp,
                    DumpType::BitmapKernel | DumpType::Kernel => BitmapSignature::Sdmp,
                    _ => return Err(WriteError::NotABitmapType { dump_type }),
                };
                (merge_to_max(runs, max_runs as usize), Some(signature))
            }
        };

        // Bitmap: one bit per page frame of the machine, never fewer than the pages written need.
        let needed = pfns.last().map_or(0, |&last| last + 1);
        let bits = bitmap_pages
            .unwrap_or_else(|| needed.next_multiple_of(8))
            .max(needed);
        let bitmap_len = bits.div_ceil(64) * 8;
        if bitmap_signature.is_some() && bitmap_len > MAX_BITMAP_BYTES {
            return Err(WriteError::BitmapTooLarge {
                highest_pfn: needed.saturating_sub(1),
                bytes: bitmap_len,
            });
        }
        let first_page_offset = match bitmap_signature {
            None => bitness.header_size() as u64,
            Some(_) => (BitmapOffsets::of(bitness).bitmap as u64 + bitmap_len)
                .next_multiple_of(PAGE_SIZE as u64),
        };
        let file_size = first_page_offset + page_count * PAGE_SIZE as u64;
        Ok(Plan {
            bitness,
            descriptor,
            bitmap_signature,
            bits,
            page_count,
            first_page_offset,
            file_size,
        })
    }

    /// Everything before the first page, the header part filled with "PAGE".
    fn page_filled_buffer(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; self.first_page_offset as usize];
        for chunk in bytes[..self.bitness.header_size()].chunks_exact_mut(4) {
            chunk.copy_from_slice(&PAGE_PATTERN.to_le_bytes());
        }
        bytes
    }

    /// `PHYSICAL_MEMORY_DESCRIPTOR`: `NumberOfRuns`, then `NumberOfPages` and the runs at the
    /// layout's pointer width (`NumberOfPages` follows `NumberOfRuns` and its pad in 64-bit).
    fn write_descriptor(&self, w: &mut FieldWriter<'_>) {
        let (number_at, table) = descriptor_offsets(self.bitness);
        let size = self.bitness.pointer_size() as usize;
        // `Plan::new` checked that every pfn, and so every run, of a 32-bit dump fits in u32.
        let word = |w: &mut FieldWriter<'_>, at: usize, v: u64| match self.bitness {
            Bitness::Bits64 => w.u64(at, v),
            Bitness::Bits32 => w.u32(at, u32::try_from(v).unwrap_or(u32::MAX)),
        };
        w.u32(number_at, self.descriptor.len() as u32);
        word(
            w,
            number_at + size,
            self.descriptor.iter().map(|r| r.page_count).sum(),
        );
        for (i, run) in self.descriptor.iter().enumerate() {
            word(w, table + 2 * size * i, run.base_page);
            word(w, table + 2 * size * i + size, run.page_count);
        }
    }

    fn write_bitmap(&self, w: &mut FieldWriter<'_>, pfns: &[u64]) {
        let Some(signature) = self.bitmap_signature else {
            return;
        };
        let at = BitmapOffsets::of(self.bitness);
        w.put(at.header, &signature.bytes());
        w.put(at.valid_dump, b"DUMP");
        w.u64(at.first_page, self.first_page_offset);
        w.u64(at.total_present_pages, self.page_count);
        w.u64(at.pages, self.bits);
        for &pfn in pfns {
            w.0[at.bitmap + (pfn / 8) as usize] |= 1 << (pfn % 8);
        }
    }

    fn finish(&self, bytes: Vec<u8>) -> EncodedHeaders {
        EncodedHeaders {
            bytes,
            first_page_offset: self.first_page_offset,
            file_size: self.file_size,
        }
    }
}

struct FieldWriter<'a>(&'a mut [u8]);

impl FieldWriter<'_> {
    fn put(&mut self, at: usize, src: &[u8]) {
        self.0[at..at + src.len()].copy_from_slice(src);
    }
    fn u32(&mut self, at: usize, v: u32) {
        self.put(at, &v.to_le_bytes());
    }
    fn u64(&mut self, at: usize, v: u64) {
        self.put(at, &v.to_le_bytes());
    }
}

/// Maximal runs of contiguous pfns; checks that `pfns` is ascending and addressable.
fn runs_of(pfns: &[u64]) -> Result<Vec<PhysicalRun>, WriteError> {
    const PFN_LIMIT: u64 = u64::MAX / PAGE_SIZE as u64;
    let mut runs: Vec<PhysicalRun> = Vec::new();
    for (index, &pfn) in pfns.iter().enumerate() {
        if pfn >= PFN_LIMIT {
            return Err(WriteError::PfnTooLarge { pfn });
        }
        match runs.last_mut() {
            Some(run) if pfn == run.base_page + run.page_count => run.page_count += 1,
            Some(run) if pfn < run.base_page + run.page_count => {
                return Err(WriteError::PfnsNotAscending {
                    index,
                    previous: pfns[index - 1],
                    pfn,
                })
            }
            _ => runs.push(PhysicalRun {
                base_page: pfn,
                page_count: 1,
            }),
        }
    }
    Ok(runs)
}

/// Merges `runs` across the smallest gaps until at most `max` remain, so the descriptor still
/// covers every page (as Windows' descriptor of all RAM does).
fn merge_to_max(runs: Vec<PhysicalRun>, max: usize) -> Vec<PhysicalRun> {
    if runs.len() <= max || max == 0 {
        return runs;
    }
    // Keep the `max - 1` widest gaps as separators, ties broken by position.
    let mut gaps: Vec<(u64, usize)> = runs
        .windows(2)
        .enumerate()
        .map(|(i, w)| (w[1].base_page - (w[0].base_page + w[0].page_count), i))
        .collect();
    gaps.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut cuts: Vec<usize> = gaps[..max - 1].iter().map(|&(_, i)| i).collect();
    cuts.sort_unstable();

    let mut merged = Vec::with_capacity(max);
    let mut start = 0;
    for end in cuts.into_iter().chain(std::iter::once(runs.len() - 1)) {
        let first = runs[start];
        let last = runs[end];
        merged.push(PhysicalRun {
            base_page: first.base_page,
            page_count: last.base_page + last.page_count - first.base_page,
        });
        start = end + 1;
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(base_page: u64, page_count: u64) -> PhysicalRun {
        PhysicalRun {
            base_page,
            page_count,
        }
    }

    #[test]
    fn runs_are_maximal_contiguous_ranges() {
        let runs = runs_of(&[1, 2, 3, 7, 9, 10]).unwrap();
        assert_eq!(runs, vec![run(1, 3), run(7, 1), run(9, 2)]);
    }

    #[test]
    fn unsorted_and_duplicate_pfns_are_refused() {
        let err = runs_of(&[4, 5, 5]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pfns must be ascending without duplicates, but pfns[2] = 0x5 follows 0x5"
        );
        let err = runs_of(&[4, 9, 2]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pfns must be ascending without duplicates, but pfns[2] = 0x2 follows 0x9"
        );
    }

    #[test]
    fn merging_keeps_the_widest_gaps() {
        // Gaps: 1 (after 0), 10 (after 2), 2 (after 13).
        let runs = vec![run(0, 1), run(2, 1), run(13, 1), run(16, 1)];
        assert_eq!(merge_to_max(runs.clone(), 2), vec![run(0, 3), run(13, 4)]);
        assert_eq!(
            merge_to_max(runs.clone(), 3),
            vec![run(0, 3), run(13, 1), run(16, 1)]
        );
        assert_eq!(merge_to_max(runs.clone(), 4), runs);
        assert_eq!(merge_to_max(runs, 1), vec![run(0, 17)]);
    }
}
