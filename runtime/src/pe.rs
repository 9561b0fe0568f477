//! Just enough of the PE format, read from a mapped image, to identify it and find its tables.
//!
//! Images are read out of a target's virtual memory, where pages can be missing, so the parser
//! never sees a whole file: it asks an [`ImageMemory`] for the few structures it needs, at their
//! RVAs, and every error names the RVA and the structure it was reading.
//!
//! ```
//! use kds_runtime::pe::{parse_image, PeError};
//!
//! // Sixty-four zero bytes are no image: the error says what was missing and where.
//! let bytes = [0u8; 64];
//! let err = parse_image(&bytes[..]).unwrap_err();
//! assert!(matches!(err, PeError::NoMzSignature { .. }));
//! assert_eq!(err.to_string(), "no MZ signature at image base (found 00 00)");
//! ```

use crate::symbols::{Guid, PdbIdentity};
use thiserror::Error;

/// `IMAGE_FILE_MACHINE_I386`.
pub const MACHINE_I386: u16 = 0x014c;
/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_AMD64: u16 = 0x8664;
/// `IMAGE_FILE_MACHINE_ARM64`.
pub const MACHINE_ARM64: u16 = 0xaa64;

/// Highest `e_lfanew` accepted. The loader accepts far more in a file, but linkers put the NT
/// headers at 0x80 to 0x200; in a mapped image anything at or past the first page is treated as
/// corruption rather than chased across memory that may not be mapped.
pub const MAX_E_LFANEW: u32 = 0x1000;
/// The PE specification: "the Windows loader limits the number of sections to 96".
pub const MAX_SECTIONS: u16 = 96;
/// Debug directory entries examined at most (real images carry fewer than ten).
pub const MAX_DEBUG_ENTRIES: u32 = 64;
/// Longest PDB path read from an RSDS or NB10 record, NUL excluded. `MAX_PATH` is 260, but
/// linkers record long build paths in full, so allow more before calling the record corrupt.
pub const MAX_PDB_PATH: u32 = 1024;

const DOS_HEADER_SIZE: usize = 64;
const FILE_HEADER_SIZE: u32 = 20;
const SECTION_HEADER_SIZE: u32 = 40;
const DEBUG_ENTRY_SIZE: u32 = 28;
const PE32_MAGIC: u16 = 0x10b;
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Fixed part of the optional header before the data directories.
const PE32_FIXED: u16 = 96;
const PE32_PLUS_FIXED: u16 = 112;
const DIRECTORY_EXPORT: usize = 0;
const DIRECTORY_EXCEPTION: usize = 3;
const DIRECTORY_DEBUG: usize = 6;
const MAX_DIRECTORIES: u32 = 16;
/// `IMAGE_DEBUG_TYPE_CODEVIEW`.
const DEBUG_TYPE_CODEVIEW: u32 = 2;
/// `RSDS` signature, GUID, age.
const RSDS_HEADER: u32 = 24;
/// `NB10` signature, offset, time stamp (the PDB "signature"), age.
const NB10_HEADER: u32 = 16;
const PAGE: u64 = 0x1000;

/// Why an image could not be read or understood. Every variant names where it looked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeError {
    /// What an [`ImageMemory`] returns when bytes are not there (page not present, beyond
    /// the mapping, transport failure).
    #[error("cannot read {len} bytes at rva {rva:#x}: {reason}")]
    Read {
        rva: u64,
        len: usize,
        reason: String,
    },
    /// A read failed while the parser was after a named structure.
    #[error("cannot read the {what} ({len} bytes at rva {rva:#x}): {reason}")]
    Unreadable {
        what: &'static str,
        rva: u64,
        len: usize,
        reason: String,
    },
    #[error("no MZ signature at image base (found {:02x} {:02x})", found[0], found[1])]
    NoMzSignature { found: [u8; 2] },
    #[error("e_lfanew {e_lfanew:#x} points outside the headers (limit {limit:#x})")]
    LfanewOutsideHeaders { e_lfanew: u32, limit: u32 },
    #[error("no PE signature at rva {rva:#x} (found {found:02x?})")]
    NoPeSignature { rva: u32, found: [u8; 4] },
    #[error(
        "file header at rva {rva:#x} declares {count} sections, more than the {max} the loader accepts"
    )]
    TooManySections { rva: u32, count: u16, max: u16 },
    #[error("optional header at rva {rva:#x} has unknown magic {magic:#06x} (expected 0x10b for PE32 or 0x20b for PE32+)")]
    UnknownOptionalHeaderMagic { rva: u32, magic: u16 },
    #[error("optional header at rva {rva:#x} is declared {size:#x} bytes, too small for a {kind} header ({need:#x} bytes)")]
    OptionalHeaderTooSmall {
        rva: u32,
        size: u16,
        kind: &'static str,
        need: u16,
    },
    #[error("the image has no debug directory")]
    NoDebugDirectory,
    #[error("debug directory at rva {rva:#x} is {size} bytes, too small for one 28-byte entry")]
    DebugDirectoryTooSmall { rva: u32, size: u32 },
    #[error("debug directory at rva {rva:#x} names no CodeView record ({entries} entries)")]
    NoCodeView { rva: u32, entries: u32 },
    #[error("CodeView entry {index} of the debug directory at rva {rva:#x} has no mapped data (AddressOfRawData is 0)")]
    CodeViewNotMapped { rva: u32, index: u32 },
    #[error("CodeView record at rva {rva:#x} is {size} bytes, too small for an {kind} record ({need} bytes at least)")]
    CodeViewTooSmall {
        rva: u32,
        size: u32,
        kind: &'static str,
        need: u32,
    },
    #[error("CodeView record at rva {rva:#x} has unknown signature {found:02x?} (expected RSDS or NB10)")]
    UnknownCodeViewSignature { rva: u32, found: [u8; 4] },
    #[error("{kind} record at rva {rva:#x} has no terminating NUL within {max} bytes")]
    UnterminatedPdbPath {
        rva: u32,
        kind: &'static str,
        max: u32,
    },
    #[error("RSDS record at rva {rva:#x} names no PDB file (path `{path}`)")]
    EmptyPdbName { rva: u32, path: String },
    /// Returned by [`PeImage::pdb_identity`] for images that name their PDB the pre-2002 way.
    #[error("the NB10 record at rva {rva:#x} (PDB `{path}`, signature {signature:#010x}, age {age}) carries no GUID: NB10 images are not supported")]
    UnsupportedNb10 {
        rva: u32,
        signature: u32,
        age: u32,
        path: String,
    },
}

/// Reads an image as it is mapped: `offset` is an RVA, from the image base.
///
/// Implementations return [`PeError::Read`] (with the reason as text) for bytes they cannot
/// supply; the parser adds which structure it was reading.
pub trait ImageMemory {
    /// Fill `buf` from `offset` bytes past the image base, entirely or not at all.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), PeError>;
}

/// A mapped image held as bytes: offset 0 is the image base.
impl ImageMemory for [u8] {
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), PeError> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|start| Some((start, start.checked_add(buf.len())?)))
            .and_then(|(start, end)| self.get(start..end));
        match bytes {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(PeError::Read {
                rva: offset,
                len: buf.len(),
                reason: format!("beyond the end of the {} mapped bytes", self.len()),
            }),
        }
    }
}

impl<T: ImageMemory + ?Sized> ImageMemory for &T {
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), PeError> {
        (**self).read(offset, buf)
    }
}

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Up to eight bytes, NUL padding removed.
    pub name: String,
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub characteristics: u32,
}

/// The PDB an image names in its RSDS record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeView {
    /// Name (file name only, directories stripped), GUID and age: the symbol lookup key.
    pub pdb: PdbIdentity,
    /// The PDB path exactly as the linker recorded it (often a full build path).
    pub path: String,
}

/// The pre-2002 `NB10` CodeView record: a PDB named by time stamp and age, with no GUID.
/// Recognised so that such images are reported as unsupported rather than as corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nb10 {
    /// RVA of the record.
    pub rva: u32,
    /// The PDB "signature" (a time stamp).
    pub signature: u32,
    pub age: u32,
    pub path: String,
}

/// What the headers of a mapped image say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeImage {
    /// `FileHeader.Machine` (see [`MACHINE_AMD64`], [`MACHINE_I386`]).
    pub machine: u16,
    /// PE32+ optional header.
    pub is_64: bool,
    pub time_date_stamp: u32,
    pub size_of_image: u32,
    /// `OptionalHeader.ImageBase`: the preferred base, not necessarily where it is loaded.
    pub image_base: u64,
    pub sections: Vec<Section>,
    /// Debug data directory `(rva, size)`, if present and non-empty.
    pub debug_directory: Option<(u32, u32)>,
    /// Export data directory `(rva, size)`, if present and non-empty.
    pub export_directory: Option<(u32, u32)>,
    /// Exception data directory (`.pdata`) `(rva, size)`, if present and non-empty.
    pub exception_directory: Option<(u32, u32)>,
    /// The RSDS record, when the image has one (filled by [`parse_image`] only).
    pub codeview: Option<CodeView>,
    /// The NB10 record, when the image has that instead of RSDS (filled by [`parse_image`]).
    pub nb10: Option<Nb10>,
}

impl PeImage {
    /// The PDB identity to look symbols up by, or why there is none.
    pub fn pdb_identity(&self) -> Result<&PdbIdentity, PeError> {
        if let Some(cv) = &self.codeview {
            return Ok(&cv.pdb);
        }
        if let Some(nb10) = &self.nb10 {
            return Err(PeError::UnsupportedNb10 {
                rva: nb10.rva,
                signature: nb10.signature,
                age: nb10.age,
                path: nb10.path.clone(),
            });
        }
        match self.debug_directory {
            None => Err(PeError::NoDebugDirectory),
            Some((rva, size)) => Err(PeError::NoCodeView {
                rva,
                entries: size / DEBUG_ENTRY_SIZE,
            }),
        }
    }

    /// The section containing `rva`, if any.
    #[must_use]
    pub fn section_at(&self, rva: u32) -> Option<&Section> {
        self.sections.iter().find(|s| {
            rva >= s.virtual_address
                && u64::from(rva) < u64::from(s.virtual_address) + u64::from(s.virtual_size)
        })
    }
}

/// A CodeView debug record, as [`read_codeview`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeViewRecord {
    Rsds(CodeView),
    Nb10(Nb10),
}

/// Parse the headers and the CodeView record of a mapped image.
///
/// An image without a debug directory parses, with `codeview: None`; a debug directory that is
/// there but unreadable, names no CodeView entry or holds a malformed record is an error. Use
/// [`parse_headers`] when the sections and directories are wanted whatever the debug record.
pub fn parse_image<M: ImageMemory + ?Sized>(mem: &M) -> Result<PeImage, PeError> {
    let mut image = parse_headers(mem)?;
    match read_codeview(mem, &image)? {
        Some(CodeViewRecord::Rsds(cv)) => image.codeview = Some(cv),
        Some(CodeViewRecord::Nb10(nb10)) => image.nb10 = Some(nb10),
        None => {}
    }
    Ok(image)
}

/// Parse the DOS, NT and optional headers and the section table; leave the debug record unread.
pub fn parse_headers<M: ImageMemory + ?Sized>(mem: &M) -> Result<PeImage, PeError> {
    let dos: [u8; DOS_HEADER_SIZE] = read_array(mem, 0, "DOS header")?;
    if dos[0..2] != *b"MZ" {
        return Err(PeError::NoMzSignature {
            found: [dos[0], dos[1]],
        });
    }
    let e_lfanew = le32(&dos, 0x3c);
    if e_lfanew >= MAX_E_LFANEW {
        return Err(PeError::LfanewOutsideHeaders {
            e_lfanew,
            limit: MAX_E_LFANEW,
        });
    }

    let nt: [u8; 24] = read_array(mem, u64::from(e_lfanew), "NT headers")?;
    if nt[0..4] != *b"PE\0\0" {
        return Err(PeError::NoPeSignature {
            rva: e_lfanew,
            found: [nt[0], nt[1], nt[2], nt[3]],
        });
    }
    let file_header_rva = e_lfanew + 4;
    let machine = le16(&nt, 4);
    let number_of_sections = le16(&nt, 6);
    let time_date_stamp = le32(&nt, 8);
    let size_of_optional_header = le16(&nt, 20);
    if number_of_sections > MAX_SECTIONS {
        return Err(PeError::TooManySections {
            rva: file_header_rva,
            count: number_of_sections,
            max: MAX_SECTIONS,
        });
    }

    let optional_rva = file_header_rva + FILE_HEADER_SIZE;
    let magic_bytes: [u8; 2] = read_array(mem, u64::from(optional_rva), "optional header")?;
    let magic = u16::from_le_bytes(magic_bytes);
    let (is_64, kind, fixed) = match magic {
        PE32_MAGIC => (false, "PE32", PE32_FIXED),
        PE32_PLUS_MAGIC => (true, "PE32+", PE32_PLUS_FIXED),
        _ => {
            return Err(PeError::UnknownOptionalHeaderMagic {
                rva: optional_rva,
                magic,
            })
        }
    };
    if size_of_optional_header < fixed {
        return Err(PeError::OptionalHeaderTooSmall {
            rva: optional_rva,
            size: size_of_optional_header,
            kind,
            need: fixed,
        });
    }
    let mut optional = vec![0u8; usize::from(size_of_optional_header)];
    read_into(
        mem,
        u64::from(optional_rva),
        &mut optional,
        "optional header",
    )?;
    let image_base = if is_64 {
        le64(&optional, 24)
    } else {
        u64::from(le32(&optional, 28))
    };
    let size_of_image = le32(&optional, 56);
    let size_of_headers = le32(&optional, 60);
    let nt_end = optional_rva + u32::from(size_of_optional_header);
    if size_of_headers != 0 && nt_end > size_of_headers {
        return Err(PeError::LfanewOutsideHeaders {
            e_lfanew,
            limit: size_of_headers,
        });
    }
    let declared_directories = le32(&optional, usize::from(fixed) - 4);
    let room = (u32::from(size_of_optional_header) - u32::from(fixed)) / 8;
    let directories = declared_directories.min(MAX_DIRECTORIES).min(room);
    let directory = |index: usize| -> Option<(u32, u32)> {
        if index as u32 >= directories {
            return None;
        }
        let at = usize::from(fixed) + index * 8;
        let (rva, size) = (le32(&optional, at), le32(&optional, at + 4));
        (rva != 0 && size != 0).then_some((rva, size))
    };
    let export_directory = directory(DIRECTORY_EXPORT);
    let exception_directory = directory(DIRECTORY_EXCEPTION);
    let debug_directory = directory(DIRECTORY_DEBUG);

    let table_len = usize::from(number_of_sections) * SECTION_HEADER_SIZE as usize;
    let mut table = vec![0u8; table_len];
    read_into(mem, u64::from(nt_end), &mut table, "section table")?;
    let sections = table
        .chunks_exact(SECTION_HEADER_SIZE as usize)
        .map(|raw| {
            let name_len = raw[..8].iter().position(|&b| b == 0).unwrap_or(8);
            Section {
                name: String::from_utf8_lossy(&raw[..name_len]).into_owned(),
                virtual_size: le32(raw, 8),
                virtual_address: le32(raw, 12),
                characteristics: le32(raw, 36),
            }
        })
        .collect();

    Ok(PeImage {
        machine,
        is_64,
        time_date_stamp,
        size_of_image,
        image_base,
        sections,
        debug_directory,
        export_directory,
        exception_directory,
        codeview: None,
        nb10: None,
    })
}

/// Find and read the CodeView record named by the image's debug directory.
///
/// `Ok(None)` when the image has no debug directory; an error when it has one that cannot be
/// read, names no CodeView entry, or holds a malformed record.
pub fn read_codeview<M: ImageMemory + ?Sized>(
    mem: &M,
    image: &PeImage,
) -> Result<Option<CodeViewRecord>, PeError> {
    let Some((dir_rva, dir_size)) = image.debug_directory else {
        return Ok(None);
    };
    let entries = dir_size / DEBUG_ENTRY_SIZE;
    if entries == 0 {
        return Err(PeError::DebugDirectoryTooSmall {
            rva: dir_rva,
            size: dir_size,
        });
    }
    let examined = entries.min(MAX_DEBUG_ENTRIES);
    let mut raw = vec![0u8; (examined * DEBUG_ENTRY_SIZE) as usize];
    read_into(mem, u64::from(dir_rva), &mut raw, "debug directory")?;
    let Some((index, entry)) = raw
        .chunks_exact(DEBUG_ENTRY_SIZE as usize)
        .enumerate()
        .find(|(_, e)| le32(e, 12) == DEBUG_TYPE_CODEVIEW)
    else {
        return Err(PeError::NoCodeView {
            rva: dir_rva,
            entries,
        });
    };
    let size_of_data = le32(entry, 16);
    let rva = le32(entry, 20);
    if rva == 0 {
        return Err(PeError::CodeViewNotMapped {
            rva: dir_rva,
            index: index as u32,
        });
    }
    let signature: [u8; 4] = read_array(mem, u64::from(rva), "CodeView signature")?;
    match &signature {
        b"RSDS" => read_rsds(mem, rva, size_of_data).map(|cv| Some(CodeViewRecord::Rsds(cv))),
        b"NB10" => read_nb10(mem, rva, size_of_data).map(|r| Some(CodeViewRecord::Nb10(r))),
        _ => Err(PeError::UnknownCodeViewSignature {
            rva,
            found: signature,
        }),
    }
}

fn read_rsds<M: ImageMemory + ?Sized>(
    mem: &M,
    rva: u32,
    size_of_data: u32,
) -> Result<CodeView, PeError> {
    if size_of_data < RSDS_HEADER + 1 {
        return Err(PeError::CodeViewTooSmall {
            rva,
            size: size_of_data,
            kind: "RSDS",
            need: RSDS_HEADER + 1,
        });
    }
    let header: [u8; RSDS_HEADER as usize] = read_array(mem, u64::from(rva), "RSDS record")?;
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&header[4..20]);
    let age = le32(&header, 20);
    let path = read_c_string(mem, rva, RSDS_HEADER, "RSDS")?;
    let name = path
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(PeError::EmptyPdbName { rva, path });
    }
    Ok(CodeView {
        pdb: PdbIdentity {
            name,
            guid: Guid::from_le_bytes(guid),
            age,
        },
        path,
    })
}

fn read_nb10<M: ImageMemory + ?Sized>(
    mem: &M,
    rva: u32,
    size_of_data: u32,
) -> Result<Nb10, PeError> {
    if size_of_data < NB10_HEADER + 1 {
        return Err(PeError::CodeViewTooSmall {
            rva,
            size: size_of_data,
            kind: "NB10",
            need: NB10_HEADER + 1,
        });
    }
    let header: [u8; NB10_HEADER as usize] = read_array(mem, u64::from(rva), "NB10 record")?;
    let path = read_c_string(mem, rva, NB10_HEADER, "NB10")?;
    Ok(Nb10 {
        rva,
        signature: le32(&header, 8),
        age: le32(&header, 12),
        path,
    })
}

/// Read the NUL-terminated path that follows a record header, a page at a time so that a path
/// ending just before a missing page still reads.
fn read_c_string<M: ImageMemory + ?Sized>(
    mem: &M,
    record_rva: u32,
    header: u32,
    kind: &'static str,
) -> Result<String, PeError> {
    let start = u64::from(record_rva) + u64::from(header);
    let limit = u64::from(MAX_PDB_PATH) + 1;
    let mut bytes = Vec::new();
    let mut at = start;
    while at < start + limit {
        let page_end = (at / PAGE + 1) * PAGE;
        let chunk_end = page_end.min(start + limit);
        let mut chunk = vec![0u8; (chunk_end - at) as usize];
        read_into(mem, at, &mut chunk, "PDB path")?;
        if let Some(nul) = chunk.iter().position(|&b| b == 0) {
            bytes.extend_from_slice(&chunk[..nul]);
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        bytes.extend_from_slice(&chunk);
        at = chunk_end;
    }
    Err(PeError::UnterminatedPdbPath {
        rva: record_rva,
        kind,
        max: MAX_PDB_PATH,
    })
}

fn read_into<M: ImageMemory + ?Sized>(
    mem: &M,
    rva: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), PeError> {
    mem.read(rva, buf).map_err(|e| PeError::Unreadable {
        what,
        rva,
        len: buf.len(),
        reason: match e {
            PeError::Read { reason, .. } => reason,
            other => other.to_string(),
        },
    })
}

fn read_array<const N: usize, M: ImageMemory + ?Sized>(
    mem: &M,
    rva: u64,
    what: &'static str,
) -> Result<[u8; N], PeError> {
    let mut buf = [0u8; N];
    read_into(mem, rva, &mut buf, what)?;
    Ok(buf)
}

// The callers below index fixed-size buffers whose lengths were checked where they were read.
fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "68A17FAF3012B7846079AEECDBE0A583";
    const E_LFANEW: usize = 0xe8;
    const DEBUG_DIR_RVA: usize = 0x2000;
    const RSDS_RVA: usize = 0x2040;

    /// Build a mapped image: headers in the first page, `.text` at 0x1000, `.rdata` at 0x2000
    /// holding the debug directory (a POGO entry, then CodeView) and the record.
    struct Spec {
        is_64: bool,
        debug: bool,
        record: Vec<u8>,
    }

    fn rsds(guid: &str, age: u32, path: &str) -> Vec<u8> {
        let mut r = b"RSDS".to_vec();
        r.extend_from_slice(&guid.parse::<Guid>().unwrap().to_le_bytes());
        r.extend_from_slice(&age.to_le_bytes());
        r.extend_from_slice(path.as_bytes());
        r.push(0);
        r
    }

    fn put16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn build(spec: &Spec) -> Vec<u8> {
        let mut img = vec![0u8; 0x3000];
        img[0..2].copy_from_slice(b"MZ");
        put32(&mut img, 0x3c, E_LFANEW as u32);
        img[E_LFANEW..E_LFANEW + 4].copy_from_slice(b"PE\0\0");
        let fh = E_LFANEW + 4;
        let opt_size: u16 = if spec.is_64 { 240 } else { 224 };
        put16(
            &mut img,
            fh,
            if spec.is_64 {
                MACHINE_AMD64
            } else {
                MACHINE_I386
            },
        );
        put16(&mut img, fh + 2, 2);
        put32(&mut img, fh + 4, 0x5F3E_2A10);
        put16(&mut img, fh + 16, opt_size);
        let opt = fh + 20;
        let dirs = if spec.is_64 {
            put16(&mut img, opt, 0x20b);
            put64(&mut img, opt + 24, 0xFFFF_F800_0000_0000);
            opt + 112
        } else {
            put16(&mut img, opt, 0x10b);
            put32(&mut img, opt + 28, 0x0040_0000);
            opt + 96
        };
        put32(&mut img, opt + 56, 0x3000); // SizeOfImage
        put32(&mut img, opt + 60, 0x400); // SizeOfHeaders
        put32(&mut img, dirs - 4, 16); // NumberOfRvaAndSizes
        put32(&mut img, dirs + 3 * 8, 0x1800); // exception
        put32(&mut img, dirs + 3 * 8 + 4, 0x30);
        if spec.debug {
            put32(&mut img, dirs + 6 * 8, DEBUG_DIR_RVA as u32);
            put32(&mut img, dirs + 6 * 8 + 4, 2 * 28);
        }
        let sections = opt + usize::from(opt_size);
        for (i, (name, va, chars)) in [
            (&b".text\0\0\0"[..], 0x1000u32, 0x6000_0020u32),
            (&b".rdata\0\0"[..], 0x2000, 0x4000_0040),
        ]
        .iter()
        .enumerate()
        {
            let s = sections + i * 40;
            img[s..s + 8].copy_from_slice(name);
            put32(&mut img, s + 8, 0xF00);
            put32(&mut img, s + 12, *va);
            put32(&mut img, s + 36, *chars);
        }
        // Entry 0: IMAGE_DEBUG_TYPE_POGO (13), entry 1: CodeView.
        put32(&mut img, DEBUG_DIR_RVA + 12, 13);
        put32(&mut img, DEBUG_DIR_RVA + 16, 0x10);
        put32(&mut img, DEBUG_DIR_RVA + 20, 0x2300);
        let cv = DEBUG_DIR_RVA + 28;
        put32(&mut img, cv + 12, 2);
        put32(&mut img, cv + 16, spec.record.len() as u32);
        put32(&mut img, cv + 20, RSDS_RVA as u32);
        img[RSDS_RVA..RSDS_RVA + spec.record.len()].copy_from_slice(&spec.record);
        img
    }

    fn kernel_spec() -> Spec {
        Spec {
            is_64: true,
            debug: true,
            record: rsds(GUID, 1, "ntkrnlmp.pdb"),
        }
    }

    #[test]
    fn pe32_plus_image_with_rsds() {
        let img = build(&kernel_spec());
        let pe = parse_image(&img[..]).unwrap();
        assert_eq!(pe.machine, MACHINE_AMD64);
        assert!(pe.is_64);
        assert_eq!(pe.time_date_stamp, 0x5F3E_2A10);
        assert_eq!(pe.size_of_image, 0x3000);
        assert_eq!(pe.image_base, 0xFFFF_F800_0000_0000);
        assert_eq!(pe.debug_directory, Some((0x2000, 56)));
        assert_eq!(pe.exception_directory, Some((0x1800, 0x30)));
        assert_eq!(
            pe.sections,
            vec![
                Section {
                    name: ".text".into(),
                    virtual_address: 0x1000,
                    virtual_size: 0xF00,
                    characteristics: 0x6000_0020
                },
                Section {
                    name: ".rdata".into(),
                    virtual_address: 0x2000,
                    virtual_size: 0xF00,
                    characteristics: 0x4000_0040
                },
            ]
        );
        assert_eq!(
            pe.section_at(0x1800).map(|s| s.name.as_str()),
            Some(".text")
        );
        assert_eq!(pe.section_at(0x2F00), None);
        let cv = pe.codeview.as_ref().unwrap();
        assert_eq!(cv.path, "ntkrnlmp.pdb");
        assert_eq!(cv.pdb.name, "ntkrnlmp.pdb");
        assert_eq!(cv.pdb.guid.to_string(), GUID);
        assert_eq!(cv.pdb.age, 1);
        assert_eq!(
            pe.pdb_identity().unwrap().isf_stem(),
            "68A17FAF3012B7846079AEECDBE0A583-1"
        );
        assert_eq!(pe.nb10, None);
    }

    #[test]
    fn pe32_image_with_full_pdb_path_keeps_file_name_only() {
        let img = build(&Spec {
            is_64: false,
            debug: true,
            record: rsds(
                "339E74133576439CBCDF7E0229DA3773",
                0x1A,
                r"d:\os\obj\x86fre\minkernel\ntos\init\mp\objfre\i386\ntkrpamp.pdb",
            ),
        });
        let pe = parse_image(&img[..]).unwrap();
        assert_eq!(pe.machine, MACHINE_I386);
        assert!(!pe.is_64);
        assert_eq!(pe.image_base, 0x0040_0000);
        assert_eq!(pe.sections.len(), 2);
        let cv = pe.codeview.unwrap();
        assert_eq!(cv.pdb.name, "ntkrpamp.pdb");
        assert_eq!(
            cv.path,
            r"d:\os\obj\x86fre\minkernel\ntos\init\mp\objfre\i386\ntkrpamp.pdb"
        );
        assert_eq!(cv.pdb.age, 26);
        assert_eq!(cv.pdb.store_key(), "339E74133576439CBCDF7E0229DA37731A");
    }

    #[test]
    fn forward_slash_paths_are_stripped_too() {
        let img = build(&Spec {
            is_64: true,
            debug: true,
            record: rsds(GUID, 2, "/build/out/hal.pdb"),
        });
        assert_eq!(
            parse_image(&img[..]).unwrap().codeview.unwrap().pdb.name,
            "hal.pdb"
        );
    }

    #[test]
    fn missing_debug_directory_parses_without_codeview() {
        let img = build(&Spec {
            debug: false,
            ..kernel_spec()
        });
        let pe = parse_image(&img[..]).unwrap();
        assert_eq!(pe.debug_directory, None);
        assert_eq!(pe.codeview, None);
        let err = pe.pdb_identity().unwrap_err();
        assert_eq!(err, PeError::NoDebugDirectory);
        assert_eq!(err.to_string(), "the image has no debug directory");
    }

    #[test]
    fn debug_directory_without_codeview_entry() {
        let mut img = build(&kernel_spec());
        put32(&mut img, DEBUG_DIR_RVA + 28 + 12, 16); // CodeView -> REPRO
        let err = parse_image(&img[..]).unwrap_err();
        assert_eq!(
            err,
            PeError::NoCodeView {
                rva: 0x2000,
                entries: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "debug directory at rva 0x2000 names no CodeView record (2 entries)"
        );
        // The headers alone still parse, for unwinding and section lookups.
        let pe = parse_headers(&img[..]).unwrap();
        assert_eq!(pe.exception_directory, Some((0x1800, 0x30)));
        assert_eq!(
            pe.pdb_identity().unwrap_err().to_string(),
            "debug directory at rva 0x2000 names no CodeView record (2 entries)"
        );
    }

    #[test]
    fn truncated_rsds_record() {
        // Declared too small for the fixed part.
        let mut img = build(&kernel_spec());
        put32(&mut img, DEBUG_DIR_RVA + 28 + 16, 20);
        assert_eq!(
            parse_image(&img[..]).unwrap_err().to_string(),
            "CodeView record at rva 0x2040 is 20 bytes, too small for an RSDS record (25 bytes at least)"
        );
        // A path that never ends.
        let mut img = build(&kernel_spec());
        let path = RSDS_RVA + 24;
        img[path..path + 1100].fill(b'a');
        let err = parse_image(&img[..]).unwrap_err();
        assert_eq!(
            err,
            PeError::UnterminatedPdbPath {
                rva: 0x2040,
                kind: "RSDS",
                max: 1024
            }
        );
        assert_eq!(
            err.to_string(),
            "RSDS record at rva 0x2040 has no terminating NUL within 1024 bytes"
        );
        // The record running off the end of the mapping.
        let img = build(&kernel_spec());
        let cut = &img[..RSDS_RVA + 10];
        assert_eq!(
            parse_image(cut).unwrap_err().to_string(),
            "cannot read the RSDS record (24 bytes at rva 0x2040): beyond the end of the 8266 mapped bytes"
        );
    }

    #[test]
    fn rsds_path_with_no_file_name() {
        let img = build(&Spec {
            record: rsds(GUID, 1, r"c:\build\"),
            ..kernel_spec()
        });
        assert_eq!(
            parse_image(&img[..]).unwrap_err().to_string(),
            r"RSDS record at rva 0x2040 names no PDB file (path `c:\build\`)"
        );
    }

    #[test]
    fn nb10_record_is_recognised_and_unsupported() {
        let mut record = b"NB10".to_vec();
        record.extend_from_slice(&0u32.to_le_bytes());
        record.extend_from_slice(&0x3A1B_2C3Du32.to_le_bytes());
        record.extend_from_slice(&3u32.to_le_bytes());
        record.extend_from_slice(b"c:\\nt\\old.pdb\0");
        let img = build(&Spec {
            record,
            ..kernel_spec()
        });
        let pe = parse_image(&img[..]).unwrap();
        assert_eq!(pe.codeview, None);
        assert_eq!(
            pe.nb10,
            Some(Nb10 {
                rva: 0x2040,
                signature: 0x3A1B_2C3D,
                age: 3,
                path: "c:\\nt\\old.pdb".into()
            })
        );
        assert_eq!(
            pe.pdb_identity().unwrap_err().to_string(),
            "the NB10 record at rva 0x2040 (PDB `c:\\nt\\old.pdb`, signature 0x3a1b2c3d, age 3) carries no GUID: NB10 images are not supported"
        );
    }

    #[test]
    fn unknown_codeview_signature() {
        let mut img = build(&kernel_spec());
        img[RSDS_RVA..RSDS_RVA + 4].copy_from_slice(b"XXXX");
        assert_eq!(
            parse_image(&img[..]).unwrap_err(),
            PeError::UnknownCodeViewSignature {
                rva: 0x2040,
                found: *b"XXXX"
            }
        );
    }

    #[test]
    fn bogus_e_lfanew_and_signatures() {
        let mut img = build(&kernel_spec());
        put32(&mut img, 0x3c, 0x8000_0000);
        assert_eq!(
            parse_image(&img[..]).unwrap_err().to_string(),
            "e_lfanew 0x80000000 points outside the headers (limit 0x1000)"
        );

        // Within the first page but past SizeOfHeaders (0x400): the PE header must move there.
        let mut img = build(&kernel_spec());
        let moved = 0x800;
        let nt_len = 24 + 240 + 2 * 40;
        let nt = img[E_LFANEW..E_LFANEW + nt_len].to_vec();
        img[moved..moved + nt_len].copy_from_slice(&nt);
        put32(&mut img, 0x3c, moved as u32);
        assert_eq!(
            parse_image(&img[..]).unwrap_err(),
            PeError::LfanewOutsideHeaders {
                e_lfanew: 0x800,
                limit: 0x400
            }
        );

        let mut img = build(&kernel_spec());
        put32(&mut img, 0x3c, 0x400);
        assert_eq!(
            parse_image(&img[..]).unwrap_err().to_string(),
            "no PE signature at rva 0x400 (found [00, 00, 00, 00])"
        );

        let mut img = build(&kernel_spec());
        img[0] = b'Z';
        assert_eq!(
            parse_image(&img[..]).unwrap_err().to_string(),
            "no MZ signature at image base (found 5a 5a)"
        );
    }

    #[test]
    fn bad_optional_header_and_section_count() {
        let mut img = build(&kernel_spec());
        put16(&mut img, E_LFANEW + 24, 0x107);
        assert_eq!(
            parse_image(&img[..]).unwrap_err().to_string(),
            "optional header at rva 0x100 has unknown magic 0x0107 (expected 0x10b for PE32 or 0x20b for PE32+)"
        );

        let mut img = build(&kernel_spec());
        put16(&mut img, E_LFANEW + 4 + 16, 0x60);
        assert_eq!(
            parse_image(&img[..]).unwrap_err(),
            PeError::OptionalHeaderTooSmall {
                rva: 0x100,
                size: 0x60,
                kind: "PE32+",
                need: 0x70
            }
        );

        let mut img = build(&kernel_spec());
        put16(&mut img, E_LFANEW + 4 + 2, 97);
        assert_eq!(
            parse_image(&img[..]).unwrap_err().to_string(),
            "file header at rva 0xec declares 97 sections, more than the 96 the loader accepts"
        );
    }

    #[test]
    fn fewer_data_directories_than_debug_index() {
        let mut img = build(&kernel_spec());
        put32(&mut img, E_LFANEW + 24 + 108, 6); // NumberOfRvaAndSizes: debug (index 6) absent
        let pe = parse_image(&img[..]).unwrap();
        assert_eq!(pe.exception_directory, Some((0x1800, 0x30)));
        assert_eq!(pe.debug_directory, None);
        assert_eq!(pe.codeview, None);
    }

    /// A reader with one page missing, as a kernel image in a dump often has.
    struct Holey<'a> {
        bytes: &'a [u8],
        missing_page: u64,
    }

    impl ImageMemory for Holey<'_> {
        fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), PeError> {
            let end = offset + buf.len() as u64;
            if offset < (self.missing_page + 1) * PAGE && end > self.missing_page * PAGE {
                return Err(PeError::Read {
                    rva: offset,
                    len: buf.len(),
                    reason: format!("page at rva {:#x} is not present", self.missing_page * PAGE),
                });
            }
            self.bytes.read(offset, buf)
        }
    }

    #[test]
    fn missing_page_is_reported_with_the_structure_and_rva() {
        let img = build(&kernel_spec());
        let mem = Holey {
            bytes: &img,
            missing_page: 2,
        };
        assert_eq!(
            parse_image(&mem).unwrap_err(),
            PeError::Unreadable {
                what: "debug directory",
                rva: 0x2000,
                len: 56,
                reason: "page at rva 0x2000 is not present".into()
            }
        );
        // Headers still parse: the missing page holds only the debug data.
        assert_eq!(parse_headers(&mem).unwrap().sections.len(), 2);
    }

    #[test]
    fn pdb_path_ending_just_before_a_missing_page_reads() {
        // Put the record so that its path's NUL is the last byte of page 2; page 3 is absent.
        let mut img = build(&kernel_spec());
        img.resize(0x4000, 0);
        let record = rsds(GUID, 1, "ntkrnlmp.pdb");
        let at = 0x3000 - record.len();
        img[at..0x3000].copy_from_slice(&record);
        put32(&mut img, DEBUG_DIR_RVA + 28 + 20, at as u32);
        let mem = Holey {
            bytes: &img,
            missing_page: 3,
        };
        let pe = parse_image(&mem).unwrap();
        assert_eq!(pe.codeview.unwrap().pdb.name, "ntkrnlmp.pdb");
    }
}
