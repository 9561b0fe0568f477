//! One generic page-table walker over any [`PagingSpec`].

use super::spec::{bits, PagingSpec};
use crate::target::{ReadError, Target};
use serde::Serialize;
use thiserror::Error;

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Translation {
    pub physical: u64,
    /// Size of the page that maps the address (4 KiB, 2 MiB, 1 GiB, 4 MiB).
    pub page_size: u64,
    pub writable: bool,
    pub user: bool,
}

impl Translation {
    /// Physical address of the start of the mapping page.
    #[must_use]
    pub fn page_base(&self) -> u64 {
        self.physical & !(self.page_size - 1)
    }
}

/// Why a virtual address has no physical page to read.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TranslateError {
    #[error("virtual address {va:#x} is not canonical")]
    NonCanonical { va: u64 },
    #[error("virtual address {va:#x} is not present ({level} {entry:#x} at physical {entry_address:#x})")]
    NotPresent {
        va: u64,
        level: &'static str,
        entry: u64,
        entry_address: u64,
    },
    /// The page is in memory on a standby or modified list; the PTE names its frame.
    #[error("virtual address {va:#x} is in a transition page (PTE {entry:#x}, frame {frame:#x}): not resident")]
    Transition { va: u64, entry: u64, frame: u64 },
    #[error("virtual address {va:#x} is mapped by a prototype PTE ({entry:#x}): not resident")]
    Prototype { va: u64, entry: u64 },
    /// A page table on the way was itself missing from the capture.
    #[error("virtual address {va:#x}: the {level} table page {table_page:#x} is not in the dump")]
    TableNotCaptured {
        va: u64,
        level: &'static str,
        table_page: u64,
    },
    #[error("virtual address {va:#x}: reading the {level} entry failed: {reason}")]
    TableReadFailed {
        va: u64,
        level: &'static str,
        reason: String,
    },
}

/// Walk the tables of `spec` rooted at `dtb` for virtual address `va`.
pub fn translate(
    target: &dyn Target,
    spec: &PagingSpec,
    dtb: u64,
    va: u64,
) -> Result<Translation, TranslateError> {
    if !spec.is_canonical(va) {
        return Err(TranslateError::NonCanonical { va });
    }
    let mut table = dtb & spec.root_mask;
    let mut writable = true;
    let mut user = true;
    let last = spec.levels.len().saturating_sub(1);
    for (depth, level) in spec.levels.iter().enumerate() {
        let entry_address = table + spec.index(level, va) * spec.entry_size;
        let entry = read_entry(target, spec, entry_address).map_err(|e| match e {
            ReadError::PageNotCaptured { page } => TranslateError::TableNotCaptured {
                va,
                level: level.name,
                table_page: page,
            },
            other => TranslateError::TableReadFailed {
                va,
                level: level.name,
                reason: other.to_string(),
            },
        })?;
        if entry & bits::PRESENT == 0 {
            return Err(not_present(
                va,
                level.name,
                entry,
                entry_address,
                depth == last,
            ));
        }
        if level.permissions {
            writable &= entry & bits::WRITE != 0;
            user &= entry & bits::USER != 0;
        }
        let frame = entry & spec.frame_mask;
        let is_leaf = depth == last || (level.large_pages && entry & bits::LARGE != 0);
        if is_leaf {
            let page_size = 1u64 << level.shift;
            let frame = frame & !(page_size - 1);
            return Ok(Translation {
                physical: frame | (va & (page_size - 1)),
                page_size,
                writable,
                user,
            });
        }
        table = frame;
    }
    // Only a spec without levels gets here.
    Err(TranslateError::TableReadFailed {
        va,
        level: "root",
        reason: format!("paging spec `{}` has no levels", spec.name),
    })
}

fn read_entry(target: &dyn Target, spec: &PagingSpec, address: u64) -> Result<u64, ReadError> {
    let mut buf = [0u8; 8];
    let size = spec.entry_size as usize;
    target.read_physical(address, &mut buf[..size])?;
    Ok(u64::from_le_bytes(buf))
}

/// Classify a not-present entry. Only a leaf PTE can be in transition or prototype form.
fn not_present(
    va: u64,
    level: &'static str,
    entry: u64,
    entry_address: u64,
    is_leaf: bool,
) -> TranslateError {
    if is_leaf && entry != 0 {
        if entry & bits::PROTOTYPE != 0 {
            return TranslateError::Prototype { va, entry };
        }
        if entry & bits::TRANSITION != 0 {
            return TranslateError::Transition {
                va,
                entry,
                frame: entry & 0x000F_FFFF_FFFF_F000,
            };
        }
    }
    TranslateError::NotPresent {
        va,
        level,
        entry,
        entry_address,
    }
}
