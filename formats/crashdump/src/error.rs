//! Why a file is not a dump we can read. Every variant names the file offset it is about and
//! what was expected there.

use std::fmt;
use std::path::PathBuf;

/// A physical page that the dump does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("physical page {pfn:#x} (address {addr:#x}) is not in the dump", addr = pfn.wrapping_mul(0x1000))]
pub struct MissingPage {
    pub pfn: u64,
}

/// Up to eight bytes as they were found in the file, shown as an escaped string.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Found {
    bytes: [u8; 8],
    len: usize,
}

impl Found {
    pub(crate) fn new(src: &[u8]) -> Found {
        let len = src.len().min(8);
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(&src[..len]);
        Found { bytes, len }
    }

    /// The bytes found.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// A hint about what kind of file starts with these bytes, if we recognise it.
    fn hint(&self) -> &'static str {
        let b = self.as_bytes();
        if b.starts_with(b"MDMP") {
            " (a user-mode minidump)"
        } else if b.starts_with(b"HIBR") || b.starts_with(b"hibr") || b.starts_with(b"WAKE") {
            " (a hibernation file)"
        } else if b.starts_with(b"PAGE") {
            " (a \"PAGE\" header of an unknown kind)"
        } else {
            ""
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.as_bytes().escape_ascii())
    }
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why [`CrashDump::open`](crate::CrashDump::open) or
/// [`CrashDump::from_bytes`](crate::CrashDump::from_bytes) refused a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("file is empty (0 bytes); expected a \"PAGEDU64\" kernel dump header at offset 0x0")]
    Empty,

    #[error("file ends at {file_len:#x} but {what} needs {needed:#x} bytes at offset {offset:#x}")]
    Truncated {
        what: &'static str,
        offset: u64,
        needed: u64,
        file_len: u64,
    },

    #[error("expected \"PAGEDU64\" at offset 0x0, found {found}{hint}", hint = found.hint())]
    BadSignature { found: Found },

    #[error(
        "unknown dump type {code:#x} at offset {offset:#x} (expected 1, 2, 5, 6, 8, 9 or 0xa)"
    )]
    UnknownDumpType { offset: u64, code: u32 },

    #[error(
        "dump type {code:#x} at offset {offset:#x} cannot be read from a 32-bit dump (PAGEDUMP): expected 1, 2, 5 or 6{why}",
        why = if matches!(code, 8..=0xA) { " (types 8, 9 and 0xa keep RDMP page ranges, a 64-bit-only layout)" } else { "" },
    )]
    UnsupportedDumpType32 { offset: u64, code: u32 },

    #[error(
        "expected a bitmap header \"SDMPDUMP\" or \"FDMPDUMP\" at offset {offset:#x} for a {dump_type} (type {code}), found {found}",
        dump_type = crate::DumpType::from_code(*code).map_or("dump", |t| t.name()),
    )]
    BadBitmapSignature {
        offset: u64,
        code: u32,
        found: Found,
    },

    #[error(
        "expected a page-area header at offset {offset:#x} for a {dump_type} (type {code:#x}): \"SDMPDUMP\", \"FDMPDUMP\" or a 0x40 marker then \"RDMPDUMP\", found {found}",
        dump_type = crate::DumpType::from_code(*code).map_or("dump", |t| t.name()),
    )]
    BadPageAreaSignature {
        offset: u64,
        code: u32,
        found: Found,
    },

    #[error(
        "bitmap at {offset:#x} has {bits} bits ({bytes:#x} bytes) but the file ends at {file_len:#x}"
    )]
    BitmapPastEnd {
        offset: u64,
        bits: u64,
        bytes: u64,
        file_len: u64,
    },

    #[error(
        "FirstPage at {field_offset:#x} is {first_page:#x}, inside the bitmap that ends at {bitmap_end:#x}"
    )]
    FirstPageInsideBitmap {
        field_offset: u64,
        first_page: u64,
        bitmap_end: u64,
    },

    #[error(
        "bitmap at {bitmap_offset:#x} marks {present} pages present but the file holds {held} pages after offset {first_page:#x}"
    )]
    BitmapClaimsTooMany {
        bitmap_offset: u64,
        present: u64,
        held: u64,
        first_page: u64,
    },

    #[error(
        "TotalPresentPages at {field_offset:#x} says {stated} but the bitmap at {bitmap_offset:#x} marks {counted} pages present"
    )]
    PresentPagesMismatch {
        field_offset: u64,
        stated: u64,
        bitmap_offset: u64,
        counted: u64,
    },

    #[error(
        "NumberOfRuns at {offset:#x} is {count:#x}; the physical memory descriptor holds at most {max}"
    )]
    TooManyRuns { offset: u64, count: u32, max: u32 },

    #[error(
        "run {index} at offset {offset:#x} (base page {base_page:#x}, {page_count:#x} pages) extends past the last page frame"
    )]
    RunOverflow {
        index: usize,
        offset: u64,
        base_page: u64,
        page_count: u64,
    },

    #[error(
        "run {index} at offset {offset:#x} starts at page {base_page:#x}, before the end of the previous run (page {previous_end:#x}); runs must be sorted and must not overlap"
    )]
    RunsOverlap {
        index: usize,
        offset: u64,
        base_page: u64,
        previous_end: u64,
    },

    #[error(
        "runs at {offset:#x} describe {pages} pages stored from offset {first_page:#x}, but the file holds {held} pages there (it ends at {file_len:#x})"
    )]
    RunsPastEnd {
        offset: u64,
        pages: u64,
        first_page: u64,
        held: u64,
        file_len: u64,
    },

    #[error("RDMP header at {offset:#x}: {problem}")]
    BadRdmpHeader { offset: u64, problem: String },
}
