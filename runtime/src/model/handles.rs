//! Handle tables (`_HANDLE_TABLE`, a process's `ObjectTable`): the pages of
//! `_HANDLE_TABLE_ENTRY` that `TableCode` roots, and which entries are in use.
//!
//! The shape is the same on every build since Windows 2000's rewrite (WRK `ex/handle.c`):
//! the low 2 bits of `TableCode` are the number of levels above the entries (0, 1 or 2) and
//! the rest is the page-aligned address of the top page. A level-0 table is one page of
//! entries; level 1 is a page of pointers to such pages, level 2 a page of pointers to level-1
//! pages. Handle values are entry indices times 4, so low-level page `n` holds handles
//! `n * 4 * entries_per_page ..`. Entry 0 of every low-level page is never a handle (WRK
//! stores `EX_ADDITIONAL_INFO_SIGNATURE` in its free-link field and the page's audit
//! `InfoTable` in its first word).
//!
//! Which word of an entry names the object differs, and the table says which:
//! - `ObjectPointerBits` (Windows 8 and later): a bitfield holding the `_OBJECT_HEADER`
//!   address shifted right by `va_bits - length` bits (4 on x64: 44 bits at bit 20), sign
//!   extended back, like `ObpDecodeObject` does. A free entry has it 0 and links the next
//!   free entry through `NextFreeHandleEntry`.
//! - `Object` (Windows 7 and earlier): the `_OBJECT_HEADER` pointer with the handle's
//!   attribute bits in its low 3 bits (`OBJ_HANDLE_ATTRIBUTES`: lock, inherit, audit). A
//!   free entry has it null and links by handle value through `NextFreeTableEntry`.
//!
//! An entry is in use when that object word is non-zero and its free link is not
//! `EX_ADDITIONAL_INFO_SIGNATURE` (WRK `ExpIsValidObjectEntry`). Walks are bounded by the
//! table's `NextHandleNeedingPool` (the first handle no page backs yet) when the build has
//! it, and always by [`MAX_HANDLE_ENTRIES`].
//!
//! ```
//! use kds_runtime::model::handles::{HandleTableLayout, count_in_use};
//! # fn demo(space: &kds_runtime::mmu::AddressSpace, table: &kds_runtime::symbols::SymbolTable,
//! #         object_table: u64) -> Result<(), Box<dyn std::error::Error>> {
//! let layout = HandleTableLayout::from_table(table)?;
//! let in_use = count_in_use(space, &layout, object_table)?;
//! println!("HandleCount: {in_use}.");
//! # Ok(()) }
//! ```

use crate::mmu::{AddressSpace, VirtualReadError};
use crate::symbols::{SymbolError, SymbolTable, TypeRef};
use crate::target::PAGE_SIZE;
use thiserror::Error;

/// Handles a table can hold at most (WRK `MAX_HANDLES`, 1 << 24): no walk visits more.
pub const MAX_HANDLE_ENTRIES: u64 = 1 << 24;

/// `EX_ADDITIONAL_INFO_SIGNATURE`: the free link of the reserved entry 0 of each page.
const ADDITIONAL_INFO_SIGNATURE: i64 = -2;

/// `OBJ_HANDLE_ATTRIBUTES`: the low bits of a pointer-style entry that are not the pointer.
const POINTER_ATTRIBUTE_BITS: u64 = 7;

/// Levels `TableCode` may name (WRK `LEVEL_CODE_MASK`).
const LEVEL_MASK: u64 = 3;

/// A field's place inside one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    offset: u64,
    size: u64,
    position: u32,
    length: u32,
}

impl Slot {
    fn of(table: &SymbolTable, type_name: &str, path: &str) -> Result<Slot, SymbolError> {
        let loc = table.field(type_name, path)?;
        let size = table.size_of_ref(&loc.ty)?;
        let (position, length) = match loc.ty {
            TypeRef::Bitfield {
                position, length, ..
            } => (position, length),
            _ => (0, u32::try_from(size * 8).unwrap_or(64)),
        };
        Ok(Slot {
            offset: loc.offset,
            size,
            position,
            length,
        })
    }

    /// The field's bits in `entry` (little endian), or `None` if the entry is too short.
    fn read(&self, entry: &[u8]) -> Option<u64> {
        let start = usize::try_from(self.offset).ok()?;
        let bytes = entry.get(start..start.checked_add(usize::try_from(self.size).ok()?)?)?;
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        let raw = u64::from_le_bytes(word);
        let shifted = raw.checked_shr(self.position).unwrap_or(0);
        Some(if self.length >= 64 {
            shifted
        } else {
            shifted & ((1u64 << self.length) - 1)
        })
    }

    /// `ADDITIONAL_INFO_SIGNATURE` truncated to this field's width.
    fn signature(&self) -> u64 {
        let bits = (self.size * 8).min(64);
        let v = ADDITIONAL_INFO_SIGNATURE as u64;
        if bits >= 64 {
            v
        } else {
            v & ((1u64 << bits) - 1)
        }
    }
}

/// How the object word of an entry encodes the `_OBJECT_HEADER` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectWord {
    /// `ObjectPointerBits`: the header address without its low `va_bits - length` bits.
    Bits(Slot),
    /// `Object`: the header pointer with attribute bits in its low 3 bits.
    Pointer(Slot),
}

/// Where a build keeps what a handle-table walk reads, all from the symbol table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleTableLayout {
    table_code: u64,
    /// Offset of `_HANDLE_TABLE.NextHandleNeedingPool` (a 32-bit handle value).
    next_handle_needing_pool: Option<u64>,
    entry_size: u64,
    pointer_size: u64,
    object: ObjectWord,
    /// `NextFreeHandleEntry` or `NextFreeTableEntry`.
    free_link: Option<Slot>,
}

impl HandleTableLayout {
    /// The layout of `table`'s build: fails when the table lacks `_HANDLE_TABLE.TableCode`,
    /// `_HANDLE_TABLE_ENTRY`, or both `ObjectPointerBits` and `Object`.
    pub fn from_table(table: &SymbolTable) -> Result<HandleTableLayout, SymbolError> {
        const ENTRY: &str = "_HANDLE_TABLE_ENTRY";
        let table_code = table.offset_of("_HANDLE_TABLE", "TableCode")?;
        let next_handle_needing_pool = table
            .offset_of("_HANDLE_TABLE", "NextHandleNeedingPool")
            .ok();
        let entry_size = table.size_of(ENTRY)?;
        let object = match Slot::of(table, ENTRY, "ObjectPointerBits") {
            Ok(slot) => ObjectWord::Bits(slot),
            Err(_) => ObjectWord::Pointer(Slot::of(table, ENTRY, "Object")?),
        };
        let free_link = ["NextFreeHandleEntry", "NextFreeTableEntry"]
            .iter()
            .find_map(|f| Slot::of(table, ENTRY, f).ok());
        Ok(HandleTableLayout {
            table_code,
            next_handle_needing_pool,
            entry_size,
            pointer_size: table.pointer_size(),
            object,
            free_link,
        })
    }

    /// Entries in one low-level page.
    fn entries_per_page(&self) -> u64 {
        PAGE_SIZE / self.entry_size.max(1)
    }

    /// Pointers in one upper-level page.
    fn pointers_per_page(&self) -> u64 {
        PAGE_SIZE / self.pointer_size.max(1)
    }
}

/// One in-use handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleEntry {
    /// The handle value (entry index times 4).
    pub handle: u64,
    /// Address of the `_HANDLE_TABLE_ENTRY`.
    pub entry: u64,
    /// Address of the object's `_OBJECT_HEADER`.
    pub object_header: u64,
}

/// What a whole walk saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct HandleTableWalk {
    /// Levels above the entries (`TableCode & 3`).
    pub levels: u8,
    /// Low-level pages read.
    pub pages: u64,
    pub in_use: u64,
    /// Free entries (the reserved entry 0 of each page not included).
    pub free: u64,
}

/// Why a handle table could not be walked to the end. Any of these makes the count unknown.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandleTableError {
    #[error("cannot read {what} of the handle table at {table:#x} (at {address:#x}): {source}")]
    Read {
        table: u64,
        what: &'static str,
        address: u64,
        source: VirtualReadError,
    },
    #[error("the handle table at {table:#x} has TableCode {code:#x}: level 3 does not exist")]
    BadLevel { table: u64, code: u64 },
}

/// Walk the handle table at `table` in `space`, calling `visit` for each in-use entry in
/// handle order. A page that cannot be read stops the walk with an error: the count would be
/// a guess. Null page pointers (pages never allocated) hold no handles.
pub fn walk_handle_table(
    space: &AddressSpace,
    layout: &HandleTableLayout,
    table: u64,
    mut visit: impl FnMut(&HandleEntry),
) -> Result<HandleTableWalk, HandleTableError> {
    let read_err = |what: &'static str, address: u64| {
        move |source: VirtualReadError| HandleTableError::Read {
            table,
            what,
            address,
            source,
        }
    };
    let code_at = table.wrapping_add(layout.table_code);
    // TableCode is a ULONG_PTR: pointer-sized.
    let code = space
        .read_pointer(code_at)
        .map_err(read_err("TableCode", code_at))?;
    let levels = code & LEVEL_MASK;
    if levels > 2 {
        return Err(HandleTableError::BadLevel { table, code });
    }
    let root = code & !LEVEL_MASK;
    let per_page = layout.entries_per_page();
    let mut limit = MAX_HANDLE_ENTRIES;
    if let Some(offset) = layout.next_handle_needing_pool {
        let at = table.wrapping_add(offset);
        let next = space
            .read_u32(at)
            .map_err(read_err("NextHandleNeedingPool", at))?;
        limit = limit.min(u64::from(next) / 4);
    }
    let pages_wanted = limit.div_ceil(per_page);
    // The low-level pages, in handle order: (page index, address or 0).
    let mut low_pages: Vec<(u64, u64)> = Vec::new();
    let pointers = |page: u64, count: u64| -> Result<Vec<u64>, HandleTableError> {
        let n = count.min(layout.pointers_per_page());
        let mut bytes = vec![0u8; usize::try_from(n * layout.pointer_size).unwrap_or(0)];
        space
            .read(page, &mut bytes)
            .map_err(read_err("a page of table pointers", page))?;
        Ok(bytes
            .chunks_exact(usize::try_from(layout.pointer_size).unwrap_or(8))
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len().min(8)].copy_from_slice(&c[..c.len().min(8)]);
                u64::from_le_bytes(w)
            })
            .collect())
    };
    match levels {
        0 => low_pages.push((0, root)),
        1 => {
            for (i, p) in pointers(root, pages_wanted)?.into_iter().enumerate() {
                low_pages.push((i as u64, p));
            }
        }
        _ => {
            let per_mid = layout.pointers_per_page();
            let mids = pointers(root, pages_wanted.div_ceil(per_mid))?;
            for (m, mid) in mids.into_iter().enumerate() {
                if mid == 0 {
                    continue;
                }
                let first = m as u64 * per_mid;
                let want = pages_wanted.saturating_sub(first);
                for (i, p) in pointers(mid, want)?.into_iter().enumerate() {
                    low_pages.push((first + i as u64, p));
                }
            }
        }
    }
    let mut walk = HandleTableWalk {
        levels: levels as u8,
        ..HandleTableWalk::default()
    };
    let entry_size = usize::try_from(layout.entry_size).unwrap_or(16).max(1);
    let mut page_bytes = vec![0u8; usize::try_from(per_page * layout.entry_size).unwrap_or(0)];
    for (index, page) in low_pages {
        if page == 0 || index * per_page >= limit {
            continue;
        }
        space
            .read(page, &mut page_bytes)
            .map_err(read_err("a page of handle entries", page))?;
        walk.pages += 1;
        let in_page = (limit - index * per_page).min(per_page);
        for (i, bytes) in page_bytes
            .chunks_exact(entry_size)
            .enumerate()
            .take(usize::try_from(in_page).unwrap_or(usize::MAX))
            .skip(1)
        {
            let reserved = layout
                .free_link
                .is_some_and(|s| s.read(bytes) == Some(s.signature()));
            let header = match layout.object {
                ObjectWord::Bits(slot) => slot.read(bytes).map(|bits| {
                    let spec = space.spec();
                    let shift = spec.va_bits.saturating_sub(slot.length);
                    if bits == 0 {
                        0
                    } else {
                        spec.canonical(bits << shift)
                    }
                }),
                ObjectWord::Pointer(slot) => slot.read(bytes).map(|p| p & !POINTER_ATTRIBUTE_BITS),
            }
            .unwrap_or(0);
            if header == 0 || reserved {
                walk.free += 1;
                continue;
            }
            walk.in_use += 1;
            let n = index * per_page + i as u64;
            visit(&HandleEntry {
                handle: n * 4,
                entry: page + i as u64 * layout.entry_size,
                object_header: header,
            });
        }
    }
    Ok(walk)
}

/// How many entries of the handle table at `table` are in use.
pub fn count_in_use(
    space: &AddressSpace,
    layout: &HandleTableLayout,
    table: u64,
) -> Result<u64, HandleTableError> {
    Ok(walk_handle_table(space, layout, table, |_| {})?.in_use)
}

#[cfg(test)]
mod tests;
