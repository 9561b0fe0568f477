//! VMware memory snapshots: the guest's RAM in a `.vmem` file, laid out by the "memory" group
//! of the suspend (`.vmss`) or snapshot (`.vmsn`) state file beside it.
//!
//! The state file, as VMware Workstation/ESXi write it (little-endian throughout):
//!
//! ```text
//! 0x0   u32 magic      0xbed2bed0 (version 0), 0xbad1bad1, 0xbed2bed2, 0xbed3bed3
//! 0x4   u32 (unknown)
//! 0x8   u32 group count
//! 0xc   groups, 80 bytes each: name[64] (NUL-padded), u64 offset of its tags, u64 size
//! ```
//!
//! A group's tags follow each other from its offset until a tag whose two first bytes are 0:
//!
//! ```text
//! u8 flags       bits 7..6: number of indices (0-3); bits 5..0: data size, or 62/63 for
//!                large data
//! u8 name length, then the name (not NUL-terminated)
//! u32 index      per index: "regionPPN" index 2 is written regionPPN[2]
//! data           `size` bytes; large data is: data size, in-memory size (u32 each in
//!                version 0, u64 otherwise), 2 bytes of padding, then `data size` bytes
//! ```
//!
//! When the guest has more RAM than fits below the PCI hole (about 3 GiB), the `.vmem` holds
//! several regions: "memory" has `regionsCount` and, per region `i`, `regionPPN[i]` (first
//! guest-physical page), `regionPageNum[i]` (first page in the `.vmem`) and `regionSize[i]`
//! (pages). Smaller guests have no regions: the `.vmem` is a flat image from physical 0.
//!
//! Volatility 3's `VmwareLayer` reads the same fields; this parser is written from the layout
//! above, bounds-checks every offset against the file, and never trusts a count.

use super::{Run, PAGE_SIZE};
use std::collections::HashMap;
use thiserror::Error;

/// The four state-file magics, as little-endian `u32` at offset 0.
pub const STATE_MAGICS: [u32; 4] = [0xbed2_bed0, 0xbad1_bad1, 0xbed2_bed2, 0xbed3_bed3];

const HEADER_SIZE: u64 = 12;
const GROUP_SIZE: u64 = 80;
const GROUP_NAME_LEN: usize = 64;
/// Data-size codes saying the data is in the large form.
const LARGE_DATA: [u8; 2] = [62, 63];

/// Why a VMware state file gives no memory layout. Offsets are offsets in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VmwareError {
    #[error(
        "header needs {HEADER_SIZE:#x} bytes at offset 0x0, the file has {file_len:#x}: \
         not a VMware state file"
    )]
    HeaderTruncated { file_len: u64 },
    #[error(
        "magic {magic:#010x} at offset 0x0 is not a VMware state file's \
         (0xbed2bed0, 0xbad1bad1, 0xbed2bed2 or 0xbed3bed3)"
    )]
    UnknownMagic { magic: u32 },
    #[error(
        "group table at offset {HEADER_SIZE:#x} ({count} groups of {GROUP_SIZE} bytes) goes past \
         the end of the file ({file_len:#x} bytes)"
    )]
    GroupTableTruncated { count: u32, file_len: u64 },
    #[error("no \"memory\" group among the {count} groups of the group table at offset 0xc")]
    NoMemoryGroup { count: u32 },
    #[error(
        "tag at offset {offset:#x} of group \"memory\" needs {needed:#x} bytes, the file ends \
         at {file_len:#x}: the file is truncated or the tag is garbage"
    )]
    TagTruncated {
        offset: u64,
        needed: u64,
        file_len: u64,
    },
    #[error(
        "tag {tag} at offset {offset:#x} holds {size} bytes: expected an integer \
         of 1, 2, 4 or 8 bytes"
    )]
    TagNotInteger { tag: String, offset: u64, size: u64 },
    #[error("regionsCount at offset {count_offset:#x} says {count} regions, but {tag} is missing")]
    RegionTagMissing {
        tag: String,
        count: u64,
        count_offset: u64,
    },
    #[error(
        "region {index}: physical page {ppn:#x} + {pages:#x} pages (or .vmem page \
         {page_num:#x} + {pages:#x}) overflows 64-bit addresses"
    )]
    RegionOverflow {
        index: u64,
        ppn: u64,
        page_num: u64,
        pages: u64,
    },
    #[error(
        "regions {first} and {second} overlap in physical memory: \
         [{:#x}, {:#x}) and [{:#x}, {:#x})",
        first_range.0, first_range.1, second_range.0, second_range.1
    )]
    RegionsOverlap {
        first: u64,
        second: u64,
        first_range: (u64, u64),
        second_range: (u64, u64),
    },
    #[error(
        "region {index} (physical page {ppn:#x}, {pages:#x} pages at .vmem page {page_num:#x}) \
         ends at .vmem offset {end:#x}, past the end of the .vmem ({vmem_len:#x} bytes)"
    )]
    RegionPastVmemEnd {
        index: u64,
        ppn: u64,
        page_num: u64,
        pages: u64,
        end: u64,
        vmem_len: u64,
    },
}

/// One region of the `.vmem`, as the state file gives it (in pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// `i` of `regionPPN[i]`.
    pub index: u64,
    /// `regionPPN[i]`: first guest-physical page.
    pub ppn: u64,
    /// `regionPageNum[i]`: first page in the `.vmem`.
    pub page_num: u64,
    /// `regionSize[i]`: length in pages.
    pub pages: u64,
}

/// What a state file says about the `.vmem` beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    pub magic: u32,
    pub group_count: u32,
    /// The "memory" group's regions in file order; `None` when it has no `regionsCount` (or
    /// a count of 0): the `.vmem` is then flat, file offset = physical address.
    pub regions: Option<Vec<Region>>,
}

/// Does `bytes` start with one of [`STATE_MAGICS`]?
#[must_use]
pub fn is_state_file(bytes: &[u8]) -> bool {
    read_uint(bytes, 0, 4).is_some_and(|m| STATE_MAGICS.contains(&(m as u32)))
}

/// Little-endian unsigned integer of `width` bytes (at most 8) at `offset`.
fn read_uint(bytes: &[u8], offset: u64, width: u64) -> Option<u64> {
    let slice = range(bytes, offset, width)?;
    (width <= 8).then(|| {
        slice
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    })
}

/// `bytes[offset..offset + len]`, or `None` when it does not fit in the file.
fn range(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(len).ok()?;
    bytes.get(start..start.checked_add(len)?)
}

/// One tag of a group.
#[derive(Debug)]
struct Tag<'a> {
    offset: u64,
    name: &'a [u8],
    indices: Vec<u32>,
    data: &'a [u8],
}

impl Tag<'_> {
    /// `regionPPN[2]`.
    fn display(&self) -> String {
        let mut s = String::from_utf8_lossy(self.name).into_owned();
        for i in &self.indices {
            s.push_str(&format!("[{i}]"));
        }
        s
    }

    fn integer(&self) -> Result<u64, VmwareError> {
        let size = self.data.len() as u64;
        match size {
            1 | 2 | 4 | 8 => read_uint(self.data, 0, size),
            _ => None,
        }
        .ok_or_else(|| VmwareError::TagNotInteger {
            tag: self.display(),
            offset: self.offset,
            size,
        })
    }
}

/// The tags of the group whose tags start at `offset`, up to its end marker.
fn read_tags(bytes: &[u8], mut offset: u64, large_width: u64) -> Result<Vec<Tag<'_>>, VmwareError> {
    let file_len = bytes.len() as u64;
    let mut tags = Vec::new();
    loop {
        let start = offset;
        // Each step needs `needed` bytes from the tag's start; an overflow is a truncation.
        let truncated = |needed: u64| VmwareError::TagTruncated {
            offset: start,
            needed,
            file_len,
        };
        let fits = |len: u64| {
            start
                .checked_add(len)
                .filter(|&end| end <= file_len)
                .ok_or_else(|| truncated(len))
        };
        fits(2)?;
        let head = range(bytes, start, 2).ok_or_else(|| truncated(2))?;
        let (flags, name_len) = (head[0], u64::from(head[1]));
        if flags == 0 && name_len == 0 {
            return Ok(tags);
        }
        let index_count = u64::from(flags >> 6);
        let size_code = flags & 0x3F;
        let mut len = 2 + name_len;
        let name = range(bytes, start + 2, name_len).ok_or_else(|| truncated(len))?;
        let mut indices = Vec::new();
        for _ in 0..index_count {
            let at = start + len;
            len += 4;
            fits(len)?;
            let index = read_uint(bytes, at, 4).ok_or_else(|| truncated(len))?;
            indices.push(index as u32);
        }
        let data_len = if LARGE_DATA.contains(&size_code) {
            let at = start + len;
            len += 2 * large_width + 2;
            fits(len)?;
            read_uint(bytes, at, large_width).ok_or_else(|| truncated(len))?
        } else {
            u64::from(size_code)
        };
        let data_at = start + len;
        len = len
            .checked_add(data_len)
            .ok_or_else(|| truncated(u64::MAX))?;
        let end = fits(len)?;
        let data = range(bytes, data_at, data_len).ok_or_else(|| truncated(len))?;
        tags.push(Tag {
            offset: start,
            name,
            indices,
            data,
        });
        offset = end;
    }
}

/// Parse a state file: its header, its group table and the "memory" group's region tags.
pub fn parse_state(bytes: &[u8]) -> Result<StateFile, VmwareError> {
    let file_len = bytes.len() as u64;
    let header = range(bytes, 0, HEADER_SIZE).ok_or(VmwareError::HeaderTruncated { file_len })?;
    let word = |at: u64| read_uint(header, at, 4).map_or(0, |v| v as u32);
    let magic = word(0);
    if !STATE_MAGICS.contains(&magic) {
        return Err(VmwareError::UnknownMagic { magic });
    }
    // Version 0 (0xbed2bed0) writes large-data sizes as u32, every later one as u64.
    let large_width = if magic & 0xF == 0 { 4 } else { 8 };
    let group_count = word(8);
    let table = range(bytes, HEADER_SIZE, u64::from(group_count) * GROUP_SIZE).ok_or(
        VmwareError::GroupTableTruncated {
            count: group_count,
            file_len,
        },
    )?;
    let memory = table
        .chunks_exact(GROUP_SIZE as usize)
        .find(|group| {
            let name = &group[..GROUP_NAME_LEN];
            let end = name.iter().position(|&b| b == 0).unwrap_or(GROUP_NAME_LEN);
            &name[..end] == b"memory"
        })
        .ok_or(VmwareError::NoMemoryGroup { count: group_count })?;
    let tags_at = read_uint(memory, GROUP_NAME_LEN as u64, 8).unwrap_or(u64::MAX);
    let tags = read_tags(bytes, tags_at, large_width)?;

    let mut by_key: HashMap<(&[u8], &[u32]), &Tag<'_>> = HashMap::new();
    for tag in &tags {
        by_key.entry((tag.name, &tag.indices)).or_insert(tag);
    }
    let Some(count_tag) = by_key.get(&(&b"regionsCount"[..], &[][..])) else {
        return Ok(StateFile {
            magic,
            group_count,
            regions: None,
        });
    };
    let count = count_tag.integer()?;
    if count == 0 {
        return Ok(StateFile {
            magic,
            group_count,
            regions: None,
        });
    }
    let mut regions = Vec::new();
    for index in 0..count {
        let value = |name: &str| {
            let missing = || VmwareError::RegionTagMissing {
                tag: format!("{name}[{index}]"),
                count,
                count_offset: count_tag.offset,
            };
            let i = u32::try_from(index).map_err(|_| missing())?;
            by_key
                .get(&(name.as_bytes(), &[i][..]))
                .ok_or_else(missing)?
                .integer()
        };
        regions.push(Region {
            index,
            ppn: value("regionPPN")?,
            page_num: value("regionPageNum")?,
            pages: value("regionSize")?,
        });
    }
    Ok(StateFile {
        magic,
        group_count,
        regions: Some(regions),
    })
}

/// The regions as runs sorted by physical address, each checked to lie inside a `.vmem` of
/// `vmem_len` bytes and not to overlap another. Empty regions are dropped.
pub fn region_runs(regions: &[Region], vmem_len: u64) -> Result<Vec<Run>, VmwareError> {
    let mut runs = Vec::new();
    for r in regions.iter().filter(|r| r.pages != 0) {
        let overflow = VmwareError::RegionOverflow {
            index: r.index,
            ppn: r.ppn,
            page_num: r.page_num,
            pages: r.pages,
        };
        let bytes = |pages: u64| pages.checked_mul(PAGE_SIZE);
        let (Some(physical), Some(file_offset), Some(length)) =
            (bytes(r.ppn), bytes(r.page_num), bytes(r.pages))
        else {
            return Err(overflow);
        };
        if physical.checked_add(length).is_none() {
            return Err(overflow);
        }
        let end = file_offset.checked_add(length).ok_or(overflow)?;
        if end > vmem_len {
            return Err(VmwareError::RegionPastVmemEnd {
                index: r.index,
                ppn: r.ppn,
                page_num: r.page_num,
                pages: r.pages,
                end,
                vmem_len,
            });
        }
        runs.push((
            r.index,
            Run {
                physical,
                file_offset,
                length,
            },
        ));
    }
    runs.sort_by_key(|(_, r)| r.physical);
    for pair in runs.windows(2) {
        let ((first, a), (second, b)) = (&pair[0], &pair[1]);
        if b.physical < a.end() {
            return Err(VmwareError::RegionsOverlap {
                first: *first,
                second: *second,
                first_range: (a.physical, a.end()),
                second_range: (b.physical, b.end()),
            });
        }
    }
    Ok(runs.into_iter().map(|(_, r)| r).collect())
}
