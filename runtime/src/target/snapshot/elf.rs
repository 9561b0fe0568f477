//! ELF64 core files as QEMU's `dump-guest-memory` and libvirt's `virsh dump --memory-only`
//! write them: `PT_LOAD` segments whose `p_paddr` is the guest-physical address of the bytes
//! at `p_offset`. Notes (`PT_NOTE`, register state) and every other segment are skipped.
//!
//! Parsed by hand from the ELF-64 specification (header at offset 0, program headers at
//! `e_phoff`, `PN_XNUM` extended numbering through section header 0). Every offset and size
//! is checked against the file length with overflow-checked arithmetic.

use super::{ImageError, Run};

pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// `e_machine` of 32-bit x86.
pub const EM_386: u16 = 3;

const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_CORE: u16 = 4;
const PT_LOAD: u32 = 1;
/// `e_phnum` value saying the real count is in section header 0's `sh_info`.
const PN_XNUM: u16 = 0xFFFF;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: u64 = 56;
const SHDR_SIZE: u64 = 64;

/// What the ELF header and program headers say, reduced to what kds needs.
#[derive(Debug)]
pub struct ElfCore {
    pub machine: u16,
    /// `PT_LOAD` segments with data, sorted by physical address, not overlapping.
    pub runs: Vec<Run>,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// `bytes[offset..offset + len]`, or `None` when it does not fit in the file.
fn range(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(len).ok()?;
    bytes.get(start..start.checked_add(len)?)
}

/// Parse an ELF file that starts with [`ELF_MAGIC`].
pub fn parse(bytes: &[u8]) -> Result<ElfCore, ImageError> {
    let file_len = bytes.len() as u64;
    let ehdr = bytes
        .get(..EHDR_SIZE)
        .ok_or(ImageError::ElfHeaderTruncated {
            needed: EHDR_SIZE as u64,
            file_len,
        })?;
    let class = ehdr[4];
    if class != ELFCLASS64 {
        return Err(ImageError::ElfClass { class });
    }
    let data = ehdr[5];
    if data != ELFDATA2LSB {
        return Err(ImageError::ElfByteOrder { data });
    }
    let e_type = u16_at(ehdr, 0x10);
    if e_type != ET_CORE {
        return Err(ImageError::ElfNotCore { e_type });
    }
    let machine = u16_at(ehdr, 0x12);
    let phoff = u64_at(ehdr, 0x20);
    let shoff = u64_at(ehdr, 0x28);
    let phentsize = u64::from(u16_at(ehdr, 0x36));
    let mut phnum = u64::from(u16_at(ehdr, 0x38));
    let shentsize = u64::from(u16_at(ehdr, 0x3A));

    if phnum == u64::from(PN_XNUM) {
        // Extended numbering: the count lives in sh_info of section header 0.
        if shentsize < SHDR_SIZE {
            return Err(ImageError::ElfSectionHeaderSize { shentsize });
        }
        let shdr0 =
            range(bytes, shoff, SHDR_SIZE).ok_or(ImageError::ElfSectionHeaderTruncated {
                offset: shoff,
                file_len,
            })?;
        phnum = u64::from(u32_at(shdr0, 0x2C));
    }
    if phnum == 0 {
        return Err(ImageError::ElfNoLoadSegments { phnum });
    }
    if phentsize < PHDR_SIZE {
        return Err(ImageError::ElfProgramHeaderSize { phentsize });
    }
    let table_len = phnum
        .checked_mul(phentsize)
        .filter(|&len| phoff.checked_add(len).is_some_and(|end| end <= file_len))
        .ok_or(ImageError::ElfProgramHeadersTruncated {
            offset: phoff,
            count: phnum,
            entry_size: phentsize,
            file_len,
        })?;
    let table = range(bytes, phoff, table_len).ok_or(ImageError::ElfProgramHeadersTruncated {
        offset: phoff,
        count: phnum,
        entry_size: phentsize,
        file_len,
    })?;

    let mut runs = Vec::new();
    for (index, phdr) in table
        .chunks_exact(usize::try_from(phentsize).unwrap_or(usize::MAX))
        .enumerate()
    {
        if u32_at(phdr, 0) != PT_LOAD {
            continue;
        }
        let file_offset = u64_at(phdr, 0x08);
        let physical = u64_at(phdr, 0x18);
        let length = u64_at(phdr, 0x20);
        // p_memsz beyond p_filesz was not captured: it reads as a hole.
        if length == 0 {
            continue;
        }
        if file_offset
            .checked_add(length)
            .is_none_or(|end| end > file_len)
        {
            return Err(ImageError::SegmentTruncated {
                index,
                offset: file_offset,
                size: length,
                file_len,
            });
        }
        if physical.checked_add(length).is_none() {
            return Err(ImageError::SegmentAddressOverflow {
                index,
                physical,
                size: length,
            });
        }
        runs.push((
            index,
            Run {
                physical,
                file_offset,
                length,
            },
        ));
    }
    if runs.is_empty() {
        return Err(ImageError::ElfNoLoadSegments { phnum });
    }
    runs.sort_by_key(|(_, r)| r.physical);
    for pair in runs.windows(2) {
        let ((first, a), (second, b)) = (&pair[0], &pair[1]);
        // Both ends were checked for overflow above.
        if b.physical < a.physical + a.length {
            return Err(ImageError::SegmentsOverlap {
                first: *first,
                second: *second,
                first_range: (a.physical, a.physical + a.length),
                second_range: (b.physical, b.physical + b.length),
            });
        }
    }
    Ok(ElfCore {
        machine,
        runs: runs.into_iter().map(|(_, r)| r).collect(),
    })
}
