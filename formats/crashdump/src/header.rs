//! `DUMP_HEADER64` and `DUMP_HEADER32`: the 0x2000- or 0x1000-byte header at the start of every
//! kernel dump, and the page-area headers that follow it.
//!
//! 64-bit offsets were checked against kdmp-parser 0.8.2 (`src/structs.rs`, `Header64` is
//! asserted to be 0x2000 bytes) and Volatility 3 (`symbols/windows/crash64.json`,
//! `_DUMP_HEADER64`). 32-bit offsets ([`off32`]) follow /work/shared/DUMP-FORMATS.md, and where
//! it is silent (`Comment`, `ProductType`, `SuiteMask`) Volatility 2's `crash_vtypes.py`
//! (`_DMP_HEADER`) and MoonSols' `DUMP_HEADER32` (Bin2Dmp `dmp.h`); kdmp-parser does not read
//! 32-bit dumps.

use crate::bytes::Bytes;
use crate::error::DumpError;

/// Size in bytes of the AMD64 `CONTEXT` record stored at [`off::CONTEXT`].
pub const CONTEXT64_SIZE: usize = 0x4D0;
/// Size in bytes of the `EXCEPTION_RECORD64` stored at [`off::EXCEPTION`].
pub const EXCEPTION_RECORD64_SIZE: usize = 0x98;
/// Size in bytes of `DUMP_HEADER64`; the page area starts right after it.
pub const HEADER64_SIZE: usize = 0x2000;
/// Size in bytes of the `Comment` field.
pub const COMMENT_SIZE: usize = 128;
/// The most runs `PHYSICAL_MEMORY_DESCRIPTOR64` can hold: its buffer is 700 bytes
/// (0x88..0x344), a 0x10-byte head then 0x10 bytes per run. kdmp-parser reads the runs out of
/// exactly that 700-byte buffer and fails past it.
pub const MAX_RUNS: u32 = 42;
/// `MachineImageType` of an AMD64 dump (`IMAGE_FILE_MACHINE_AMD64`).
pub const MACHINE_AMD64: u32 = 0x8664;
/// What Windows writes into every header field it does not set: the ASCII bytes "PAGE".
pub const PAGE_PATTERN: u32 = 0x4547_4150;

/// Size in bytes of the x86 `CONTEXT` record stored at [`off32::CONTEXT`] (its 1200-byte
/// `ContextRecord` area holds it and trailing unused bytes).
pub const CONTEXT32_SIZE: usize = 0x2CC;
/// Size in bytes of the `EXCEPTION_RECORD32` stored at [`off32::EXCEPTION`].
pub const EXCEPTION_RECORD32_SIZE: usize = 0x50;
/// Size in bytes of `DUMP_HEADER32`; the page area starts right after it.
pub const HEADER32_SIZE: usize = 0x1000;
/// The most runs `PHYSICAL_MEMORY_DESCRIPTOR32` can hold: its buffer is 700 bytes
/// (0x64..0x320), an 8-byte head then 8 bytes per run.
pub const MAX_RUNS32: u32 = 86;
/// `MachineImageType` of an x86 dump (`IMAGE_FILE_MACHINE_I386`).
pub const MACHINE_I386: u32 = 0x14C;

/// Which of the two header layouts a dump has: the signature decides (`PAGEDU64` or `PAGEDUMP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bitness {
    /// `DUMP_HEADER32`: "PAGEDUMP", 0x1000-byte header, 32-bit pointers and runs.
    Bits32,
    /// `DUMP_HEADER64`: "PAGEDU64", 0x2000-byte header, 64-bit pointers and runs.
    Bits64,
}

impl Bitness {
    /// The 8 signature bytes at offset 0.
    #[must_use]
    pub const fn signature(self) -> &'static [u8; 8] {
        match self {
            Bitness::Bits32 => b"PAGEDUMP",
            Bitness::Bits64 => b"PAGEDU64",
        }
    }

    /// Size of the header; the page area starts there.
    #[must_use]
    pub const fn header_size(self) -> usize {
        match self {
            Bitness::Bits32 => HEADER32_SIZE,
            Bitness::Bits64 => HEADER64_SIZE,
        }
    }

    /// Size in bytes of a pointer in the header (4 or 8).
    #[must_use]
    pub const fn pointer_size(self) -> u32 {
        match self {
            Bitness::Bits32 => 4,
            Bitness::Bits64 => 8,
        }
    }

    /// The most runs the header's physical memory descriptor holds.
    #[must_use]
    pub const fn max_runs(self) -> u32 {
        match self {
            Bitness::Bits32 => MAX_RUNS32,
            Bitness::Bits64 => MAX_RUNS,
        }
    }
}

/// File offsets of the fields of `DUMP_HEADER32` and of its bitmap header (at 0x1000, the same
/// `_SUMMARY_DUMP` layout as the 64-bit one at 0x2000, as Volatility 3's
/// `WindowsCrashDump32Layer` reads it: `0x1000 * headerpages`).
pub mod off32 {
    /// "PAGE" then "DUMP".
    pub const SIGNATURE: usize = 0x000;
    pub const MAJOR_VERSION: usize = 0x008;
    pub const MINOR_VERSION: usize = 0x00C;
    /// u32; with PAE the PDPT's physical address, 32-byte aligned (low 12 bits not zero).
    pub const DIRECTORY_TABLE_BASE: usize = 0x010;
    pub const PFN_DATABASE: usize = 0x014;
    pub const PS_LOADED_MODULE_LIST: usize = 0x018;
    pub const PS_ACTIVE_PROCESS_HEAD: usize = 0x01C;
    pub const MACHINE_IMAGE_TYPE: usize = 0x020;
    pub const NUMBER_PROCESSORS: usize = 0x024;
    pub const BUGCHECK_CODE: usize = 0x028;
    /// u32 BugCheckParameter[4], stride 4.
    pub const BUGCHECK_PARAMETERS: usize = 0x02C;
    /// u8.
    pub const PAE_ENABLED: usize = 0x05C;
    /// u8 (Volatility 2); then two spare bytes.
    pub const KD_SECONDARY_VERSION: usize = 0x05D;
    pub const KD_DEBUGGER_DATA_BLOCK: usize = 0x060;
    /// `PHYSICAL_MEMORY_DESCRIPTOR32`: u32 NumberOfRuns, u32 NumberOfPages, runs of
    /// `{u32 BasePage, u32 PageCount}`; a 700-byte buffer.
    pub const NUMBER_OF_RUNS: usize = 0x064;
    pub const NUMBER_OF_PAGES: usize = 0x068;
    pub const RUNS: usize = 0x06C;
    /// x86 `CONTEXT`, 0x2CC bytes of a 1200-byte area.
    pub const CONTEXT: usize = 0x320;
    /// Size of the `ContextRecord` area at [`CONTEXT`].
    pub const CONTEXT_AREA_SIZE: usize = 1200;
    pub const EXCEPTION: usize = 0x7D0;
    /// `Comment[128]`: not in DUMP-FORMATS.md; Volatility 2 `_DMP_HEADER`.
    pub const COMMENT: usize = 0x820;
    pub const DUMP_TYPE: usize = 0xF88;
    /// Volatility 2 `_DMP_HEADER`.
    pub const PRODUCT_TYPE: usize = 0xF94;
    /// Volatility 2 `_DMP_HEADER`.
    pub const SUITE_MASK: usize = 0xF98;
    /// u64.
    pub const REQUIRED_DUMP_SPACE: usize = 0xFA0;
    /// u64.
    pub const SYSTEM_UP_TIME: usize = 0xFB8;
    /// u64 FILETIME.
    pub const SYSTEM_TIME: usize = 0xFC0;

    /// Bitmap header (`SDMP`/`FDMP`) at the start of the page area.
    pub const BITMAP_HEADER: usize = 0x1000;
    pub const BITMAP_VALID_DUMP: usize = 0x1004;
    /// u64 file offset of the first stored page.
    pub const BITMAP_FIRST_PAGE: usize = 0x1020;
    /// u64 number of set bits.
    pub const BITMAP_TOTAL_PRESENT_PAGES: usize = 0x1028;
    /// u64 number of bits in the bitmap.
    pub const BITMAP_PAGES: usize = 0x1030;
    /// The bitmap; bit `i` of byte `i / 8` set = page `i` stored.
    pub const BITMAP: usize = 0x1038;
}

/// Where a bitmap header's fields are, for one header layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BitmapOffsets {
    pub(crate) header: usize,
    pub(crate) valid_dump: usize,
    pub(crate) first_page: usize,
    pub(crate) total_present_pages: usize,
    pub(crate) pages: usize,
    pub(crate) bitmap: usize,
}

impl BitmapOffsets {
    pub(crate) const fn of(bitness: Bitness) -> BitmapOffsets {
        match bitness {
            Bitness::Bits64 => BitmapOffsets {
                header: off::BITMAP_HEADER,
                valid_dump: off::BITMAP_VALID_DUMP,
                first_page: off::BITMAP_FIRST_PAGE,
                total_present_pages: off::BITMAP_TOTAL_PRESENT_PAGES,
                pages: off::BITMAP_PAGES,
                bitmap: off::BITMAP,
            },
            Bitness::Bits32 => BitmapOffsets {
                header: off32::BITMAP_HEADER,
                valid_dump: off32::BITMAP_VALID_DUMP,
                first_page: off32::BITMAP_FIRST_PAGE,
                total_present_pages: off32::BITMAP_TOTAL_PRESENT_PAGES,
                pages: off32::BITMAP_PAGES,
                bitmap: off32::BITMAP,
            },
        }
    }
}

/// Where `PHYSICAL_MEMORY_DESCRIPTOR`'s `NumberOfRuns` and first run are in one header layout.
pub(crate) fn descriptor_offsets(bitness: Bitness) -> (usize, usize) {
    match bitness {
        Bitness::Bits64 => (off::NUMBER_OF_RUNS, off::RUNS),
        Bitness::Bits32 => (off32::NUMBER_OF_RUNS, off32::RUNS),
    }
}

/// File offsets of the fields of `DUMP_HEADER64` and of the page-area headers.
pub mod off {
    /// "PAGE" (u32 0x45474150) then "DU64" (0x34365544); kdmp-parser and Volatility 3 check both.
    pub const SIGNATURE: usize = 0x000;
    pub const MAJOR_VERSION: usize = 0x008;
    pub const MINOR_VERSION: usize = 0x00C;
    pub const DIRECTORY_TABLE_BASE: usize = 0x010;
    pub const PFN_DATABASE: usize = 0x018;
    pub const PS_LOADED_MODULE_LIST: usize = 0x020;
    pub const PS_ACTIVE_PROCESS_HEAD: usize = 0x028;
    pub const MACHINE_IMAGE_TYPE: usize = 0x030;
    pub const NUMBER_PROCESSORS: usize = 0x034;
    pub const BUGCHECK_CODE: usize = 0x038;
    pub const BUGCHECK_PARAMETERS: usize = 0x040;
    pub const VERSION_USER: usize = 0x060;
    pub const KD_DEBUGGER_DATA_BLOCK: usize = 0x080;
    /// `PHYSICAL_MEMORY_DESCRIPTOR64`: u32 NumberOfRuns, u32 pad, u64 NumberOfPages, runs.
    pub const NUMBER_OF_RUNS: usize = 0x088;
    pub const NUMBER_OF_PAGES: usize = 0x090;
    pub const RUNS: usize = 0x098;
    pub const CONTEXT: usize = 0x348;
    pub const EXCEPTION: usize = 0xF00;
    pub const DUMP_TYPE: usize = 0xF98;
    pub const REQUIRED_DUMP_SPACE: usize = 0xFA0;
    pub const SYSTEM_TIME: usize = 0xFA8;
    pub const COMMENT: usize = 0xFB0;
    pub const SYSTEM_UP_TIME: usize = 0x1030;
    pub const PRODUCT_TYPE: usize = 0x1040;
    pub const SUITE_MASK: usize = 0x1044;
    /// `DUMP_FILE_ATTRIBUTES` (Windows 8+). The "PAGE" pattern would set bit 8,
    /// `EncryptedDumpData`, so writers must not leave it unset.
    pub const ATTRIBUTES: usize = 0x1050;

    /// Bitmap header (`SDMP`/`FDMP`, Volatility's `_SUMMARY_DUMP`) at the start of the page area.
    pub const BITMAP_HEADER: usize = 0x2000;
    /// "DUMP" after the 4-byte signature.
    pub const BITMAP_VALID_DUMP: usize = 0x2004;
    /// u64 file offset of the first stored page (Volatility: `HeaderSize`).
    pub const BITMAP_FIRST_PAGE: usize = 0x2020;
    /// u64 number of set bits (Volatility: `Pages`).
    pub const BITMAP_TOTAL_PRESENT_PAGES: usize = 0x2028;
    /// u64 number of bits in the bitmap (Volatility: `BitmapSize`).
    pub const BITMAP_PAGES: usize = 0x2030;
    /// The bitmap itself; bit `i` of byte `i / 8` set = page `i` stored.
    pub const BITMAP: usize = 0x2038;

    /// `RDMP` header (dump types 8, 9 and 0xA as read by kdmp-parser 0.8): u32 marker 0x40.
    pub const RDMP_MARKER: usize = 0x2000;
    pub const RDMP_SIGNATURE: usize = 0x2004;
    pub const RDMP_VALID_DUMP: usize = 0x2008;
    pub const RDMP_METADATA_SIZE: usize = 0x2010;
    pub const RDMP_FIRST_PAGE: usize = 0x2018;
    /// Type 0xA only: u64 total number of pages the ranges describe.
    pub const RDMP_TOTAL_PAGES: usize = 0x2028;
    /// Array of `{u64 first pfn, u64 page count}`.
    pub const RDMP_RANGES: usize = 0x2030;
}

/// The value of `DumpType` at 0xF98.
///
/// kdmp-parser 0.8 accepts 1, 5, 6, 8, 9 and 0xA (it rejects 2); Volatility 3 accepts only 1
/// and 5. This crate reads all seven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DumpType {
    /// 1: every page of every physical memory run, in run order, from 0x2000.
    Full,
    /// 2: the old kernel summary dump. Its page area is the same `SDMP` bitmap as type 6
    /// (Volatility's `_SUMMARY_DUMP`); neither kdmp-parser 0.8 nor Volatility 3 opens it.
    Kernel,
    /// 5: bitmap dump of all physical memory (`FDMP` on recent Windows, `SDMP` on older).
    BitmapFull,
    /// 6: bitmap dump of kernel memory (`SDMP`); kdmp-parser calls it `LiveKernelMemory`.
    BitmapKernel,
    /// 8: kernel memory dump (`.dump /k`), `RDMP` page ranges.
    KernelMemory,
    /// 9: kernel and user memory dump (`.dump /ka`), `RDMP` page ranges.
    KernelAndUserMemory,
    /// 0xA: complete memory dump (`.dump /f`), `RDMP` page ranges.
    CompleteMemory,
}

impl DumpType {
    /// Every dump type this crate reads, in code order.
    pub const ALL: [DumpType; 7] = [
        DumpType::Full,
        DumpType::Kernel,
        DumpType::BitmapFull,
        DumpType::BitmapKernel,
        DumpType::KernelMemory,
        DumpType::KernelAndUserMemory,
        DumpType::CompleteMemory,
    ];

    /// The `DumpType` value stored in the header.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            DumpType::Full => 1,
            DumpType::Kernel => 2,
            DumpType::BitmapFull => 5,
            DumpType::BitmapKernel => 6,
            DumpType::KernelMemory => 8,
            DumpType::KernelAndUserMemory => 9,
            DumpType::CompleteMemory => 0xA,
        }
    }

    /// The dump type for a header value, if it is one this crate reads.
    #[must_use]
    pub fn from_code(code: u32) -> Option<DumpType> {
        DumpType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// A WinDbg-like name, e.g. "Kernel bitmap dump".
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DumpType::Full => "Full memory dump",
            DumpType::Kernel => "Kernel summary dump",
            DumpType::BitmapFull => "Full bitmap dump",
            DumpType::BitmapKernel => "Kernel bitmap dump",
            DumpType::KernelMemory => "Kernel memory dump",
            DumpType::KernelAndUserMemory => "Kernel and user memory dump",
            DumpType::CompleteMemory => "Complete memory dump",
        }
    }
}

impl std::fmt::Display for DumpType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One `PHYSICAL_MEMORY_RUN64`: `page_count` pages from page frame `base_page`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PhysicalRun {
    pub base_page: u64,
    pub page_count: u64,
}

/// Which of the two bitmap signatures the page area carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BitmapSignature {
    /// "SDMP": kernel (summary) bitmap; types 2, 6, and 5 on older Windows.
    Sdmp,
    /// "FDMP": full bitmap; type 5 on recent Windows.
    Fdmp,
}

impl BitmapSignature {
    /// The four signature bytes as stored in the file.
    #[must_use]
    pub const fn bytes(self) -> [u8; 4] {
        match self {
            BitmapSignature::Sdmp => *b"SDMP",
            BitmapSignature::Fdmp => *b"FDMP",
        }
    }

    pub(crate) fn from_bytes(b: [u8; 4]) -> Option<Self> {
        match &b {
            b"SDMP" => Some(BitmapSignature::Sdmp),
            b"FDMP" => Some(BitmapSignature::Fdmp),
            _ => None,
        }
    }
}

/// The bitmap header at 0x2000 of bitmap dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BitmapHeader {
    pub signature: BitmapSignature,
    /// File offset of the first stored page.
    pub first_page: u64,
    /// Number of set bits, as the header states it (checked against the bitmap on open).
    pub total_present_pages: u64,
    /// Number of bits in the bitmap: one per physical page frame from 0.
    pub pages: u64,
}

/// The `RDMP` header at 0x2000 of dump types 8, 9 and 0xA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RdmpHeader {
    /// Bytes of range metadata after 0x2020.
    pub metadata_size: u64,
    /// File offset of the first stored page.
    pub first_page: u64,
    /// Type 0xA only: the number of pages the ranges describe.
    pub total_number_of_pages: Option<u64>,
}

/// Every field of `DUMP_HEADER64` that means something, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header64 {
    pub major_version: u32,
    /// The build number (e.g. 19041).
    pub minor_version: u32,
    pub directory_table_base: u64,
    pub pfn_database: u64,
    pub ps_loaded_module_list: u64,
    pub ps_active_process_head: u64,
    pub machine_image_type: u32,
    pub number_processors: u32,
    pub bugcheck_code: u32,
    pub bugcheck_parameters: [u64; 4],
    pub kd_debugger_data_block: u64,
    /// The runs of `PHYSICAL_MEMORY_DESCRIPTOR64`. For full dumps these say where every page
    /// is (and are validated); for other types they only describe physical memory, are kept
    /// as stored, and are left empty when `NumberOfRuns` exceeds [`MAX_RUNS`].
    pub physical_memory_runs: Vec<PhysicalRun>,
    /// `NumberOfPages` of the descriptor, as stored.
    pub number_of_pages: u64,
    /// Raw AMD64 `CONTEXT` bytes at 0x348.
    pub context: [u8; CONTEXT64_SIZE],
    /// Raw `EXCEPTION_RECORD64` bytes at 0xF00.
    pub exception_record: [u8; EXCEPTION_RECORD64_SIZE],
    pub dump_type_code: u32,
    pub required_dump_space: u64,
    /// FILETIME (100 ns since 1601-01-01 UTC).
    pub system_time: u64,
    /// Bytes of `Comment` up to the first NUL; empty if the field is the unset "PAGE" pattern.
    pub comment: String,
    pub system_up_time: u64,
    /// `ProductType` (1 = WinNt workstation) as stored; the "PAGE" pattern if unset.
    pub product_type: u32,
    /// `SuiteMask` as stored; the "PAGE" pattern if unset.
    pub suite_mask: u32,
    /// The bitmap header, for dumps whose page area is a bitmap.
    pub bitmap: Option<BitmapHeader>,
    /// The `RDMP` header, for dumps whose page area is a list of page ranges.
    pub rdmp: Option<RdmpHeader>,
}

impl Header64 {
    /// Decodes the fixed fields. `data` must hold at least [`HEADER64_SIZE`] bytes, the
    /// signature must already be checked, and the runs/page-area headers are filled later.
    pub(crate) fn parse_fixed(b: Bytes<'_>) -> Result<Header64, DumpError> {
        let mut bugcheck_parameters = [0u64; 4];
        for (i, p) in bugcheck_parameters.iter_mut().enumerate() {
            *p = b.u64(off::BUGCHECK_PARAMETERS + 8 * i, "BugCheckParameter")?;
        }
        let comment_bytes: [u8; COMMENT_SIZE] = b.array(off::COMMENT, "Comment")?;
        Ok(Header64 {
            major_version: b.u32(off::MAJOR_VERSION, "MajorVersion")?,
            minor_version: b.u32(off::MINOR_VERSION, "MinorVersion")?,
            directory_table_base: b.u64(off::DIRECTORY_TABLE_BASE, "DirectoryTableBase")?,
            pfn_database: b.u64(off::PFN_DATABASE, "PfnDataBase")?,
            ps_loaded_module_list: b.u64(off::PS_LOADED_MODULE_LIST, "PsLoadedModuleList")?,
            ps_active_process_head: b.u64(off::PS_ACTIVE_PROCESS_HEAD, "PsActiveProcessHead")?,
            machine_image_type: b.u32(off::MACHINE_IMAGE_TYPE, "MachineImageType")?,
            number_processors: b.u32(off::NUMBER_PROCESSORS, "NumberProcessors")?,
            bugcheck_code: b.u32(off::BUGCHECK_CODE, "BugCheckCode")?,
            bugcheck_parameters,
            kd_debugger_data_block: b.u64(off::KD_DEBUGGER_DATA_BLOCK, "KdDebuggerDataBlock")?,
            physical_memory_runs: Vec::new(),
            number_of_pages: b.u64(off::NUMBER_OF_PAGES, "NumberOfPages")?,
            context: b.array(off::CONTEXT, "ContextRecord")?,
            exception_record: b.array(off::EXCEPTION, "Exception")?,
            dump_type_code: b.u32(off::DUMP_TYPE, "DumpType")?,
            required_dump_space: b.u64(off::REQUIRED_DUMP_SPACE, "RequiredDumpSpace")?,
            system_time: b.u64(off::SYSTEM_TIME, "SystemTime")?,
            comment: decode_comment(&comment_bytes),
            system_up_time: b.u64(off::SYSTEM_UP_TIME, "SystemUpTime")?,
            product_type: b.u32(off::PRODUCT_TYPE, "ProductType")?,
            suite_mask: b.u32(off::SUITE_MASK, "SuiteMask")?,
            bitmap: None,
            rdmp: None,
        })
    }

    /// The dump type, if `dump_type_code` is one this crate reads.
    #[must_use]
    pub fn dump_type(&self) -> Option<DumpType> {
        DumpType::from_code(self.dump_type_code)
    }

    /// `Rip` from the context record (offset 0xF8 in `CONTEXT`).
    #[must_use]
    pub fn context_rip(&self) -> u64 {
        context_u64(&self.context, 0xF8)
    }

    /// `Rsp` from the context record (offset 0x98 in `CONTEXT`).
    #[must_use]
    pub fn context_rsp(&self) -> u64 {
        context_u64(&self.context, 0x98)
    }
}

fn context_u64(ctx: &[u8; CONTEXT64_SIZE], at: usize) -> u64 {
    let mut le = [0u8; 8];
    if let Some(src) = ctx.get(at..at + 8) {
        le.copy_from_slice(src);
    }
    u64::from_le_bytes(le)
}

/// `Comment` up to its first NUL, or empty if Windows left it as the "PAGE" fill.
fn decode_comment(raw: &[u8; COMMENT_SIZE]) -> String {
    let unset = raw.chunks_exact(4).all(|c| c == PAGE_PATTERN.to_le_bytes());
    if unset {
        return String::new();
    }
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Every field of `DUMP_HEADER32` that means something, decoded at its stored width.
///
/// [`CrashDump::header`](crate::CrashDump::header) gives the same values widened into a
/// [`Header64`] ([`Header32::widen`]); this type keeps what has no 64-bit counterpart:
/// `PaeEnabled`, the x86 `CONTEXT` and the `EXCEPTION_RECORD32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header32 {
    pub major_version: u32,
    /// The build number (e.g. 19041).
    pub minor_version: u32,
    /// With PAE: the PDPT's physical address, 32-byte aligned (its low 12 bits are not zero).
    pub directory_table_base: u32,
    pub pfn_database: u32,
    pub ps_loaded_module_list: u32,
    pub ps_active_process_head: u32,
    pub machine_image_type: u32,
    pub number_processors: u32,
    pub bugcheck_code: u32,
    pub bugcheck_parameters: [u32; 4],
    /// `PaeEnabled` (u8 at 0x5C) is non-zero: the kernel uses PAE paging.
    pub pae_enabled: bool,
    pub kd_debugger_data_block: u32,
    /// The runs of `PHYSICAL_MEMORY_DESCRIPTOR32`, widened; same rules as
    /// [`Header64::physical_memory_runs`], with at most [`MAX_RUNS32`].
    pub physical_memory_runs: Vec<PhysicalRun>,
    /// `NumberOfPages` of the descriptor, as stored.
    pub number_of_pages: u32,
    /// Raw x86 `CONTEXT` bytes at 0x320.
    pub context: [u8; CONTEXT32_SIZE],
    /// Raw `EXCEPTION_RECORD32` bytes at 0x7D0.
    pub exception_record: [u8; EXCEPTION_RECORD32_SIZE],
    pub dump_type_code: u32,
    pub required_dump_space: u64,
    /// FILETIME (100 ns since 1601-01-01 UTC).
    pub system_time: u64,
    /// Bytes of `Comment` (0x820) up to the first NUL; empty if unset.
    pub comment: String,
    pub system_up_time: u64,
    /// `ProductType` (0xF94) as stored; the "PAGE" pattern if unset.
    pub product_type: u32,
    /// `SuiteMask` (0xF98) as stored; the "PAGE" pattern if unset.
    pub suite_mask: u32,
    /// The bitmap header at 0x1000, for dumps whose page area is a bitmap.
    pub bitmap: Option<BitmapHeader>,
}

impl Header32 {
    /// Decodes the fixed fields. `data` must hold at least [`HEADER32_SIZE`] bytes, the
    /// signature must already be checked, and the runs/page-area headers are filled later.
    pub(crate) fn parse_fixed(b: Bytes<'_>) -> Result<Header32, DumpError> {
        let mut bugcheck_parameters = [0u32; 4];
        for (i, p) in bugcheck_parameters.iter_mut().enumerate() {
            *p = b.u32(off32::BUGCHECK_PARAMETERS + 4 * i, "BugCheckParameter")?;
        }
        let comment_bytes: [u8; COMMENT_SIZE] = b.array(off32::COMMENT, "Comment")?;
        let [pae] = b.array(off32::PAE_ENABLED, "PaeEnabled")?;
        Ok(Header32 {
            major_version: b.u32(off32::MAJOR_VERSION, "MajorVersion")?,
            minor_version: b.u32(off32::MINOR_VERSION, "MinorVersion")?,
            directory_table_base: b.u32(off32::DIRECTORY_TABLE_BASE, "DirectoryTableBase")?,
            pfn_database: b.u32(off32::PFN_DATABASE, "PfnDataBase")?,
            ps_loaded_module_list: b.u32(off32::PS_LOADED_MODULE_LIST, "PsLoadedModuleList")?,
            ps_active_process_head: b.u32(off32::PS_ACTIVE_PROCESS_HEAD, "PsActiveProcessHead")?,
            machine_image_type: b.u32(off32::MACHINE_IMAGE_TYPE, "MachineImageType")?,
            number_processors: b.u32(off32::NUMBER_PROCESSORS, "NumberProcessors")?,
            bugcheck_code: b.u32(off32::BUGCHECK_CODE, "BugCheckCode")?,
            bugcheck_parameters,
            pae_enabled: pae != 0,
            kd_debugger_data_block: b.u32(off32::KD_DEBUGGER_DATA_BLOCK, "KdDebuggerDataBlock")?,
            physical_memory_runs: Vec::new(),
            number_of_pages: b.u32(off32::NUMBER_OF_PAGES, "NumberOfPages")?,
            context: b.array(off32::CONTEXT, "ContextRecord")?,
            exception_record: b.array(off32::EXCEPTION, "Exception")?,
            dump_type_code: b.u32(off32::DUMP_TYPE, "DumpType")?,
            required_dump_space: b.u64(off32::REQUIRED_DUMP_SPACE, "RequiredDumpSpace")?,
            system_time: b.u64(off32::SYSTEM_TIME, "SystemTime")?,
            comment: decode_comment(&comment_bytes),
            system_up_time: b.u64(off32::SYSTEM_UP_TIME, "SystemUpTime")?,
            product_type: b.u32(off32::PRODUCT_TYPE, "ProductType")?,
            suite_mask: b.u32(off32::SUITE_MASK, "SuiteMask")?,
            bitmap: None,
        })
    }

    /// The dump type, if `dump_type_code` is one this crate reads.
    #[must_use]
    pub fn dump_type(&self) -> Option<DumpType> {
        DumpType::from_code(self.dump_type_code)
    }

    /// `Eip` from the context record (offset 0xB8 in the x86 `CONTEXT`).
    #[must_use]
    pub fn context_eip(&self) -> u32 {
        context_u32(&self.context, 0xB8)
    }

    /// `Esp` from the context record (offset 0xC4).
    #[must_use]
    pub fn context_esp(&self) -> u32 {
        context_u32(&self.context, 0xC4)
    }

    /// `Ebp` from the context record (offset 0xB4).
    #[must_use]
    pub fn context_ebp(&self) -> u32 {
        context_u32(&self.context, 0xB4)
    }

    /// The same header with every pointer and parameter zero-extended to 64 bits (never
    /// sign-extended: 0x8xxxxxxx stays 0x00000000_8xxxxxxx). `context` and `exception_record`
    /// are left zero: the x86 records have other layouts and stay in this type.
    #[must_use]
    pub fn widen(&self) -> Header64 {
        Header64 {
            major_version: self.major_version,
            minor_version: self.minor_version,
            directory_table_base: u64::from(self.directory_table_base),
            pfn_database: u64::from(self.pfn_database),
            ps_loaded_module_list: u64::from(self.ps_loaded_module_list),
            ps_active_process_head: u64::from(self.ps_active_process_head),
            machine_image_type: self.machine_image_type,
            number_processors: self.number_processors,
            bugcheck_code: self.bugcheck_code,
            bugcheck_parameters: self.bugcheck_parameters.map(u64::from),
            kd_debugger_data_block: u64::from(self.kd_debugger_data_block),
            physical_memory_runs: self.physical_memory_runs.clone(),
            number_of_pages: u64::from(self.number_of_pages),
            context: [0; CONTEXT64_SIZE],
            exception_record: [0; EXCEPTION_RECORD64_SIZE],
            dump_type_code: self.dump_type_code,
            required_dump_space: self.required_dump_space,
            system_time: self.system_time,
            comment: self.comment.clone(),
            system_up_time: self.system_up_time,
            product_type: self.product_type,
            suite_mask: self.suite_mask,
            bitmap: self.bitmap,
            rdmp: None,
        }
    }
}

fn context_u32(ctx: &[u8; CONTEXT32_SIZE], at: usize) -> u32 {
    let mut le = [0u8; 4];
    if let Some(src) = ctx.get(at..at + 4) {
        le.copy_from_slice(src);
    }
    u32::from_le_bytes(le)
}
