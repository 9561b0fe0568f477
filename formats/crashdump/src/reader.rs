//! [`CrashDump`]: a validated, zero-copy view of a 64-bit (`PAGEDU64`) or 32-bit (`PAGEDUMP`)
//! kernel dump.

use std::fmt;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::bitmap_index::{BitmapIndex, BitmapPfns};
use crate::bytes::Bytes;
use crate::error::{DumpError, Found, MissingPage};
use crate::header::{
    descriptor_offsets, off, off32, BitmapHeader, BitmapOffsets, BitmapSignature, Bitness,
    DumpType, Header32, Header64, PhysicalRun, RdmpHeader, HEADER32_SIZE, HEADER64_SIZE,
};
use crate::run_index::RunIndex;
use crate::PAGE_SIZE;

/// Pfn one past the last page frame of the 64-bit physical address space.
const PFN_LIMIT: u64 = u64::MAX / PAGE_SIZE as u64 + 1;

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

#[derive(Debug)]
enum PageIndex {
    Runs(RunIndex),
    Bitmap(BitmapIndex),
}

/// A Windows kernel crash dump, 64-bit (`PAGEDU64`) or 32-bit (`PAGEDUMP`), validated on open.
///
/// [`header`](CrashDump::header) is a [`Header64`] for both: a 32-bit header's pointers come
/// zero-extended ([`Header32::widen`]); [`header32`](CrashDump::header32) keeps the 32-bit
/// header itself with `PaeEnabled` and the x86 `CONTEXT`, and [`bitness`](CrashDump::bitness)
/// says which layout the file has.
///
/// Opening reads the header and builds a page index in one pass over the bitmap (or the run
/// list); after that [`page`](CrashDump::page) is O(1) and borrows straight from the file.
///
/// ```
/// use kds_crashdump::{write_dump, CrashDump, DumpType, HeaderFields, WriteKind, PAGE_SIZE};
///
/// let mut file = std::io::Cursor::new(Vec::new());
/// let header = HeaderFields { directory_table_base: 0x1ad000, ..HeaderFields::default() };
/// let kind = WriteKind::Bitmap { dump_type: DumpType::BitmapKernel };
/// write_dump(&mut file, &header, kind, &[0x10, 0x11, 0x400], |pfn, page| {
///     page.fill(pfn as u8);
///     Ok(())
/// })?;
///
/// let dump = CrashDump::from_bytes(file.into_inner())?;
/// assert_eq!(dump.dump_type(), DumpType::BitmapKernel);
/// assert_eq!(dump.header().directory_table_base, 0x1ad000);
/// assert_eq!(dump.page(0x11).map(|p| p[0]), Some(0x11));
/// assert!(dump.page(0x12).is_none());
/// assert_eq!(dump.present_pfns().collect::<Vec<_>>(), [0x10, 0x11, 0x400]);
///
/// let mut buf = [0u8; 8];
/// dump.read_physical(0x10ffc, &mut buf)?; // straddles pages 0x10 and 0x11
/// assert_eq!(buf, [0x10, 0x10, 0x10, 0x10, 0x11, 0x11, 0x11, 0x11]);
/// let missing = dump.read_physical(0x11ffc, &mut buf).unwrap_err();
/// assert_eq!(missing.pfn, 0x12);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CrashDump {
    storage: Storage,
    header: Header64,
    header32: Option<Header32>,
    dump_type: DumpType,
    index: PageIndex,
}

/// What opening a file found.
struct Parsed {
    header: Header64,
    header32: Option<Header32>,
    dump_type: DumpType,
    index: PageIndex,
}

impl CrashDump {
    /// Memory-maps and validates the dump at `path`.
    ///
    /// The file must not be modified while the `CrashDump` lives (the usual memory-map caveat).
    pub fn open(path: &Path) -> Result<CrashDump, DumpError> {
        let io_err = |source| DumpError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            return Err(DumpError::Empty);
        }
        // SAFETY: the mapping is read-only; like every mmap-based reader we rely on the file not
        // being truncated or rewritten while it is mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        Self::new(Storage::Mapped(map))
    }

    /// Validates a dump held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<CrashDump, DumpError> {
        Self::new(Storage::Owned(bytes))
    }

    fn new(storage: Storage) -> Result<CrashDump, DumpError> {
        let Parsed {
            header,
            header32,
            dump_type,
            index,
        } = parse(Bytes(storage.bytes()))?;
        Ok(CrashDump {
            storage,
            header,
            header32,
            dump_type,
            index,
        })
    }

    /// The decoded header. For a 32-bit dump: its fields zero-extended, with `context` and
    /// `exception_record` zero (see [`header32`](CrashDump::header32) for those).
    #[must_use]
    pub fn header(&self) -> &Header64 {
        &self.header
    }

    /// The 32-bit header as stored, for a `PAGEDUMP` file; `None` for a 64-bit dump.
    #[must_use]
    pub fn header32(&self) -> Option<&Header32> {
        self.header32.as_ref()
    }

    /// Which header layout the file has.
    #[must_use]
    pub fn bitness(&self) -> Bitness {
        if self.header32.is_some() {
            Bitness::Bits32
        } else {
            Bitness::Bits64
        }
    }

    /// `PaeEnabled` of a 32-bit dump; `None` for a 64-bit dump (which has no such field).
    #[must_use]
    pub fn pae_enabled(&self) -> Option<bool> {
        self.header32.as_ref().map(|h| h.pae_enabled)
    }

    /// `MachineImageType` as stored (0x8664 AMD64, 0x14C x86).
    #[must_use]
    pub fn machine_image_type(&self) -> u32 {
        self.header.machine_image_type
    }

    /// The raw `CONTEXT` of the crashing processor in the layout of the header's architecture:
    /// 0x4D0 bytes of AMD64 `CONTEXT`, or 0x2CC bytes of x86 `CONTEXT`.
    #[must_use]
    pub fn context_record(&self) -> &[u8] {
        match &self.header32 {
            Some(h) => &h.context,
            None => &self.header.context,
        }
    }

    #[must_use]
    pub fn dump_type(&self) -> DumpType {
        self.dump_type
    }

    /// The whole file.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// File offset of physical page `pfn`, or `None` if the dump does not hold it.
    #[must_use]
    pub fn page_offset(&self, pfn: u64) -> Option<u64> {
        match &self.index {
            PageIndex::Runs(runs) => runs.page_offset(pfn),
            PageIndex::Bitmap(bitmap) => bitmap.page_offset(self.bytes(), pfn),
        }
    }

    /// O(1): the 4096 bytes of physical page `pfn`, or `None` if the dump does not hold it.
    #[must_use]
    pub fn page(&self, pfn: u64) -> Option<&[u8]> {
        let start = usize::try_from(self.page_offset(pfn)?).ok()?;
        self.bytes().get(start..start.checked_add(PAGE_SIZE)?)
    }

    /// Fills `buf` from physical address `addr` onwards.
    ///
    /// On error `buf` holds the bytes of the pages before the missing one; the error names the
    /// first page the dump does not hold.
    pub fn read_physical(&self, addr: u64, buf: &mut [u8]) -> Result<(), MissingPage> {
        let mut done = 0usize;
        while done < buf.len() {
            let cur = addr
                .checked_add(done as u64)
                .ok_or(MissingPage { pfn: PFN_LIMIT })?;
            let pfn = cur / PAGE_SIZE as u64;
            let in_page = (cur % PAGE_SIZE as u64) as usize;
            let page = self.page(pfn).ok_or(MissingPage { pfn })?;
            let n = (PAGE_SIZE - in_page).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[in_page..in_page + n]);
            done += n;
        }
        Ok(())
    }

    /// Number of physical pages the dump holds.
    #[must_use]
    pub fn present_page_count(&self) -> u64 {
        match &self.index {
            PageIndex::Runs(runs) => runs.present(),
            PageIndex::Bitmap(bitmap) => bitmap.present(),
        }
    }

    /// The pfns of every page the dump holds, ascending.
    pub fn present_pfns(&self) -> impl Iterator<Item = u64> + '_ {
        match &self.index {
            PageIndex::Runs(runs) => PresentPfns::Runs(Box::new(runs.iter())),
            PageIndex::Bitmap(bitmap) => PresentPfns::Bitmap(bitmap.iter(self.bytes())),
        }
    }

    /// Every page the dump holds with its bytes, ascending by pfn.
    pub fn pages(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.present_pfns()
            .filter_map(|pfn| self.page(pfn).map(|page| (pfn, page)))
    }

    /// The highest pfn the dump holds.
    #[must_use]
    pub fn highest_pfn(&self) -> Option<u64> {
        match &self.index {
            PageIndex::Runs(runs) => runs.highest(),
            PageIndex::Bitmap(bitmap) => bitmap.highest(),
        }
    }
}

impl fmt::Debug for CrashDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashDump")
            .field("dump_type", &self.dump_type)
            .field("file_len", &self.bytes().len())
            .field("present_pages", &self.present_page_count())
            .finish_non_exhaustive()
    }
}

enum PresentPfns<'a> {
    // Boxed: the run iterator is a `FlatMap` whose type cannot be named here.
    Runs(Box<dyn Iterator<Item = u64> + 'a>),
    Bitmap(BitmapPfns<'a>),
}

impl Iterator for PresentPfns<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        match self {
            PresentPfns::Runs(it) => it.next(),
            PresentPfns::Bitmap(it) => it.next(),
        }
    }
}

fn parse(b: Bytes<'_>) -> Result<Parsed, DumpError> {
    if b.0.is_empty() {
        return Err(DumpError::Empty);
    }
    let signature = b.0.get(..8).unwrap_or(b.0);
    if signature == b"PAGEDUMP" {
        return parse32(b);
    }
    if signature != b"PAGEDU64" {
        if signature.len() < 8 && b"PAGEDU64".starts_with(signature) {
            return Err(truncated_header(b));
        }
        if signature.len() < 8 && b"PAGEDUMP".starts_with(signature) {
            return Err(truncated_header32(b));
        }
        return Err(DumpError::BadSignature {
            found: Found::new(signature),
        });
    }
    if b.0.len() < HEADER64_SIZE {
        return Err(truncated_header(b));
    }
    let mut header = Header64::parse_fixed(b)?;
    let dump_type = header.dump_type().ok_or(DumpError::UnknownDumpType {
        offset: off::DUMP_TYPE as u64,
        code: header.dump_type_code,
    })?;

    let (number_of_runs, runs) = read_descriptor(b, Bitness::Bits64)?;
    header.physical_memory_runs = runs;

    let index = match dump_type {
        DumpType::Full => runs_index(
            b,
            &header.physical_memory_runs,
            number_of_runs,
            Bitness::Bits64,
        )?,
        DumpType::Kernel | DumpType::BitmapFull | DumpType::BitmapKernel => {
            check_bitmap_signature(page_area_signature(b)?, off::BITMAP_HEADER, dump_type)?;
            bitmap_index(b, &mut header.bitmap, Bitness::Bits64)?
        }
        DumpType::KernelMemory | DumpType::KernelAndUserMemory | DumpType::CompleteMemory => {
            let found = page_area_signature(b)?;
            if BitmapSignature::from_bytes(first4(found)).is_some() && &found[4..8] == b"DUMP" {
                bitmap_index(b, &mut header.bitmap, Bitness::Bits64)?
            } else if b.0.get(off::RDMP_SIGNATURE..off::RDMP_SIGNATURE + 8) == Some(b"RDMPDUMP")
                && found[..4] == 0x40u32.to_le_bytes()
            {
                rdmp_index(b, dump_type, &mut header)?
            } else {
                return Err(DumpError::BadPageAreaSignature {
                    offset: off::BITMAP_HEADER as u64,
                    code: dump_type.code(),
                    found: Found::new(&found),
                });
            }
        }
    };
    Ok(Parsed {
        header,
        header32: None,
        dump_type,
        index,
    })
}

/// The 32-bit layout: `DUMP_HEADER32` (0x1000 bytes), runs of 8 bytes, the page area at 0x1000.
/// Types 8, 9 and 0xA (`RDMP`) exist only as 64-bit dumps.
fn parse32(b: Bytes<'_>) -> Result<Parsed, DumpError> {
    if b.0.len() < HEADER32_SIZE {
        return Err(truncated_header32(b));
    }
    let mut header = Header32::parse_fixed(b)?;
    let unsupported = DumpError::UnsupportedDumpType32 {
        offset: off32::DUMP_TYPE as u64,
        code: header.dump_type_code,
    };
    let dump_type = header.dump_type().ok_or(unsupported)?;

    let (number_of_runs, runs) = read_descriptor(b, Bitness::Bits32)?;
    header.physical_memory_runs = runs;

    let index = match dump_type {
        DumpType::Full => runs_index(
            b,
            &header.physical_memory_runs,
            number_of_runs,
            Bitness::Bits32,
        )?,
        DumpType::Kernel | DumpType::BitmapFull | DumpType::BitmapKernel => {
            let found = b.array(off32::BITMAP_HEADER, "the page-area header signature")?;
            check_bitmap_signature(found, off32::BITMAP_HEADER, dump_type)?;
            bitmap_index(b, &mut header.bitmap, Bitness::Bits32)?
        }
        DumpType::KernelMemory | DumpType::KernelAndUserMemory | DumpType::CompleteMemory => {
            return Err(DumpError::UnsupportedDumpType32 {
                offset: off32::DUMP_TYPE as u64,
                code: dump_type.code(),
            });
        }
    };
    Ok(Parsed {
        header: header.widen(),
        header32: Some(header),
        dump_type,
        index,
    })
}

fn truncated_header32(b: Bytes<'_>) -> DumpError {
    DumpError::Truncated {
        what: "the 32-bit dump header (DUMP_HEADER32)",
        offset: 0,
        needed: HEADER32_SIZE as u64,
        file_len: b.len(),
    }
}

fn truncated_header(b: Bytes<'_>) -> DumpError {
    DumpError::Truncated {
        what: "the 64-bit dump header (DUMP_HEADER64)",
        offset: 0,
        needed: HEADER64_SIZE as u64,
        file_len: b.len(),
    }
}

fn first4(b: [u8; 8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

fn page_area_signature(b: Bytes<'_>) -> Result<[u8; 8], DumpError> {
    b.array(off::BITMAP_HEADER, "the page-area header signature")
}

/// `NumberOfRuns`, and the runs (each `{BasePage, PageCount}` at the layout's pointer width,
/// widened) when that many fit the descriptor's buffer; none when they do not.
fn read_descriptor(b: Bytes<'_>, bitness: Bitness) -> Result<(u32, Vec<PhysicalRun>), DumpError> {
    let (number_at, table) = descriptor_offsets(bitness);
    let number_of_runs = b.u32(number_at, "NumberOfRuns")?;
    if number_of_runs > bitness.max_runs() {
        return Ok((number_of_runs, Vec::new()));
    }
    let what = "a physical memory run";
    let word = |at: usize| match bitness {
        Bitness::Bits64 => b.u64(at, what),
        Bitness::Bits32 => b.u32(at, what).map(u64::from),
    };
    let size = bitness.pointer_size() as usize;
    let mut runs = Vec::with_capacity(number_of_runs as usize);
    for i in 0..number_of_runs as usize {
        let at = table + 2 * size * i;
        runs.push(PhysicalRun {
            base_page: word(at)?,
            page_count: word(at + size)?,
        });
    }
    Ok((number_of_runs, runs))
}

/// A full dump's index: its runs say where every page is, from the end of the header; more
/// runs than the descriptor holds is an error.
fn runs_index(
    b: Bytes<'_>,
    runs: &[PhysicalRun],
    number_of_runs: u32,
    bitness: Bitness,
) -> Result<PageIndex, DumpError> {
    let (number_at, table) = descriptor_offsets(bitness);
    if number_of_runs > bitness.max_runs() {
        return Err(DumpError::TooManyRuns {
            offset: number_at as u64,
            count: number_of_runs,
            max: bitness.max_runs(),
        });
    }
    Ok(PageIndex::Runs(RunIndex::build(
        runs,
        table as u64,
        2 * u64::from(bitness.pointer_size()),
        bitness.header_size() as u64,
        b.len(),
    )?))
}

/// A bitmap dump's page area, `found` at `offset`, must start "SDMP" or "FDMP" then "DUMP".
fn check_bitmap_signature(
    found: [u8; 8],
    offset: usize,
    dump_type: DumpType,
) -> Result<(), DumpError> {
    if BitmapSignature::from_bytes(first4(found)).is_none() || &found[4..8] != b"DUMP" {
        return Err(DumpError::BadBitmapSignature {
            offset: offset as u64,
            code: dump_type.code(),
            found: Found::new(&found),
        });
    }
    Ok(())
}

fn bitmap_index(
    b: Bytes<'_>,
    slot: &mut Option<BitmapHeader>,
    bitness: Bitness,
) -> Result<PageIndex, DumpError> {
    let what = "the bitmap header";
    let at = BitmapOffsets::of(bitness);
    let signature =
        BitmapSignature::from_bytes(b.array(at.header, what)?).unwrap_or(BitmapSignature::Sdmp);
    let hdr = BitmapHeader {
        signature,
        first_page: b.u64(at.first_page, what)?,
        total_present_pages: b.u64(at.total_present_pages, what)?,
        pages: b.u64(at.pages, what)?,
    };
    *slot = Some(hdr);
    Ok(PageIndex::Bitmap(BitmapIndex::build(b, &hdr, at)?))
}

/// Page ranges of dump types 8, 9 and 0xA, read the way kdmp-parser 0.8.2 reads them
/// (`KernelDumpParser::kernel_physmem`): `metadata_size / 16` entries from 0x2030, ending early
/// at an entry whose first pfn is 0, or (type 0xA) once the ranges add up to the header's total.
fn rdmp_index(
    b: Bytes<'_>,
    dump_type: DumpType,
    header: &mut Header64,
) -> Result<PageIndex, DumpError> {
    let what = "the RDMP header";
    let bad = |offset: usize, problem: String| DumpError::BadRdmpHeader {
        offset: offset as u64,
        problem,
    };
    let metadata_size = b.u64(off::RDMP_METADATA_SIZE, what)?;
    let first_page = b.u64(off::RDMP_FIRST_PAGE, what)?;
    if metadata_size == 0 || metadata_size % 16 != 0 {
        return Err(bad(
            off::RDMP_METADATA_SIZE,
            format!("metadata size {metadata_size:#x} is not a non-zero multiple of 0x10"),
        ));
    }
    if metadata_size.checked_add(0x2020) != Some(first_page) {
        return Err(bad(
            off::RDMP_FIRST_PAGE,
            format!(
                "first page offset {first_page:#x} should be 0x2020 + metadata size {metadata_size:#x}"
            ),
        ));
    }
    let total = match dump_type {
        DumpType::CompleteMemory => Some(b.u64(off::RDMP_TOTAL_PAGES, what)?),
        _ => None,
    };
    header.rdmp = Some(RdmpHeader {
        metadata_size,
        first_page,
        total_number_of_pages: total,
    });

    let mut ranges = Vec::new();
    let mut counted = 0u64;
    for i in 0..metadata_size / 16 {
        if let Some(total) = total {
            if counted == total {
                break;
            }
            if counted > total {
                return Err(bad(
                    off::RDMP_TOTAL_PAGES,
                    format!("ranges describe {counted:#x} pages, more than the total {total:#x}"),
                ));
            }
        }
        // Each entry is read from the file, so the loop ends at the end of the file at the latest.
        let at = usize::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(16))
            .and_then(|d| d.checked_add(off::RDMP_RANGES))
            .ok_or_else(|| bad(off::RDMP_RANGES, "range table too large".to_owned()))?;
        let base_page = b.u64(at, "an RDMP page range")?;
        if base_page == 0 {
            break;
        }
        let page_count = b.u64(at + 8, "an RDMP page range")?;
        counted = counted.checked_add(page_count).ok_or_else(|| {
            bad(
                at,
                format!("page count {page_count:#x} overflows the running total"),
            )
        })?;
        ranges.push(PhysicalRun {
            base_page,
            page_count,
        });
    }
    Ok(PageIndex::Runs(RunIndex::build(
        &ranges,
        off::RDMP_RANGES as u64,
        16,
        first_page,
        b.len(),
    )?))
}
