//! A module's function table: the `RUNTIME_FUNCTION` array of its exception directory
//! (`.pdata`), read from target memory, sorted, searched by RVA, cached per module base.
//!
//! ```
//! use kds_runtime::unwind::pdata::{FunctionTable, Lookup, RuntimeFunction};
//!
//! let rf = |begin, end| RuntimeFunction { begin, end, unwind_info: 0x3000 };
//! let table = FunctionTable::from_entries(0x1_4000_0000, vec![rf(0x1100, 0x1180), rf(0x1000, 0x1040)]);
//! assert_eq!(table.lookup(0x1010), Lookup::Found(rf(0x1000, 0x1040)));
//! assert_eq!(table.lookup(0x1040), Lookup::NotFound);
//! ```

use super::UnwindError;
use crate::kernel::MappedImage;
use crate::mmu::AddressSpace;
use crate::pe::parse_headers;
use std::collections::HashMap;
use std::sync::Arc;

/// Most entries read from one exception directory (12 MiB); ntoskrnl has about 40 000.
pub const MAX_ENTRIES: u32 = 1 << 20;
/// Entries fetched per read; a failed read is retried entry by entry.
const CHUNK: u32 = 1024;
const ENTRY: u32 = 12;

/// One `RUNTIME_FUNCTION`: image-relative start, end (exclusive) and unwind info address.
/// An `unwind_info` with bit 0 set is an indirect entry: `unwind_info & !1` is the RVA of
/// another `RUNTIME_FUNCTION`, which holds the real unwind info address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuntimeFunction {
    pub begin: u32,
    pub end: u32,
    pub unwind_info: u32,
}

impl RuntimeFunction {
    #[must_use]
    pub fn from_le_bytes(b: [u8; 12]) -> RuntimeFunction {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        RuntimeFunction {
            begin: word(0),
            end: word(4),
            unwind_info: word(8),
        }
    }

    #[must_use]
    pub fn contains(&self, rva: u32) -> bool {
        self.begin <= rva && rva < self.end
    }

    /// Bit 0 of the unwind info address marks an indirect entry.
    #[must_use]
    pub fn is_indirect(&self) -> bool {
        self.unwind_info & 1 != 0
    }
}

/// What a lookup by RVA found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Found(RuntimeFunction),
    /// No entry covers the RVA: a leaf function, by the spec.
    NotFound,
    /// No entry read covers the RVA, but it falls where entries could not be read; the RVA
    /// of the first unread entry is given.
    Unknown {
        pdata_rva: u32,
    },
}

/// A run of table entries that could not be read, and the function RVAs it may cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    pdata_rva: u32,
    /// End of the last entry read before the gap (0 if none).
    covers_from: u32,
    /// Start of the first entry read after it (`u32::MAX` if none).
    covers_to: u32,
}

/// The sorted function table of one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionTable {
    module_base: u64,
    entries: Vec<RuntimeFunction>,
    gaps: Vec<Gap>,
}

impl FunctionTable {
    /// A table from entries already in hand (sorted here; empty ranges dropped).
    #[must_use]
    pub fn from_entries(module_base: u64, mut entries: Vec<RuntimeFunction>) -> FunctionTable {
        entries.retain(|e| e.begin < e.end);
        entries.sort_by_key(|e| e.begin);
        FunctionTable {
            module_base,
            entries,
            gaps: Vec::new(),
        }
    }

    /// Read the exception directory (data directory 3) of the PE32+ image at `module_base`.
    ///
    /// Headers that cannot be read or parsed are an error; so is a directory larger than
    /// [`MAX_ENTRIES`]. Entries on pages that cannot be read are left out and remembered, so
    /// that a lookup falling among them says [`Lookup::Unknown`] rather than "leaf".
    pub fn read(space: &AddressSpace, module_base: u64) -> Result<FunctionTable, UnwindError> {
        let image = parse_headers(&MappedImage {
            space,
            base: module_base,
        })
        .map_err(|source| UnwindError::Headers {
            module_base,
            source,
        })?;
        if !image.is_64 {
            return Err(UnwindError::NotPe32Plus { module_base });
        }
        let Some((rva, size)) = image.exception_directory else {
            return Ok(FunctionTable::from_entries(module_base, Vec::new()));
        };
        let count = size / ENTRY;
        if count > MAX_ENTRIES {
            return Err(UnwindError::ExceptionDirectoryTooLarge {
                module_base,
                rva,
                size,
            });
        }

        // Entries in table order, None where unreadable.
        let mut raw: Vec<Option<RuntimeFunction>> = Vec::with_capacity(count as usize);
        let mut chunk_start = 0u32;
        while chunk_start < count {
            let n = CHUNK.min(count - chunk_start);
            let at = module_base
                .wrapping_add(u64::from(rva))
                .wrapping_add(u64::from(chunk_start * ENTRY));
            let mut buf = vec![0u8; (n * ENTRY) as usize];
            if space.read(at, &mut buf).is_ok() {
                raw.extend(buf.chunks_exact(ENTRY as usize).map(|c| {
                    let mut b = [0u8; 12];
                    b.copy_from_slice(c);
                    Some(RuntimeFunction::from_le_bytes(b))
                }));
            } else {
                for i in 0..n {
                    let mut b = [0u8; 12];
                    let ok = space
                        .read(at.wrapping_add(u64::from(i * ENTRY)), &mut b)
                        .is_ok();
                    raw.push(ok.then(|| RuntimeFunction::from_le_bytes(b)));
                }
            }
            chunk_start += n;
        }

        let mut gaps = Vec::new();
        let mut last_end = 0u32;
        let mut i = 0usize;
        while i < raw.len() {
            match raw[i] {
                Some(e) => {
                    last_end = last_end.max(e.end);
                    i += 1;
                }
                None => {
                    let first = i;
                    while i < raw.len() && raw[i].is_none() {
                        i += 1;
                    }
                    let covers_to = raw.get(i).copied().flatten().map_or(u32::MAX, |e| e.begin);
                    gaps.push(Gap {
                        pdata_rva: rva.wrapping_add(first as u32 * ENTRY),
                        covers_from: last_end,
                        covers_to,
                    });
                }
            }
        }
        let mut table =
            FunctionTable::from_entries(module_base, raw.into_iter().flatten().collect());
        table.gaps = gaps;
        Ok(table)
    }

    #[must_use]
    pub fn module_base(&self) -> u64 {
        self.module_base
    }

    /// The entries, sorted by start RVA.
    #[must_use]
    pub fn entries(&self) -> &[RuntimeFunction] {
        &self.entries
    }

    /// Whether some entries could not be read.
    #[must_use]
    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// The entry whose range holds `rva` (binary search).
    #[must_use]
    pub fn lookup(&self, rva: u32) -> Lookup {
        let after = self.entries.partition_point(|e| e.begin <= rva);
        if let Some(e) = after.checked_sub(1).map(|i| self.entries[i]) {
            if e.contains(rva) {
                return Lookup::Found(e);
            }
        }
        match self
            .gaps
            .iter()
            .find(|g| g.covers_from <= rva && rva < g.covers_to)
        {
            Some(g) => Lookup::Unknown {
                pdata_rva: g.pdata_rva,
            },
            None => Lookup::NotFound,
        }
    }
}

/// Function tables by module base, read once each. Failures are cached too: a module whose
/// headers are not in the dump stays that way.
#[derive(Debug, Default)]
pub struct UnwindCache {
    tables: HashMap<u64, Result<Arc<FunctionTable>, UnwindError>>,
}

impl UnwindCache {
    #[must_use]
    pub fn new() -> UnwindCache {
        UnwindCache::default()
    }

    /// The table of the module at `module_base`, read on first use.
    pub fn table(
        &mut self,
        space: &AddressSpace,
        module_base: u64,
    ) -> Result<Arc<FunctionTable>, UnwindError> {
        self.tables
            .entry(module_base)
            .or_insert_with(|| FunctionTable::read(space, module_base).map(Arc::new))
            .clone()
    }

    /// Put a table in by hand (functions registered at run time, tests).
    pub fn insert(&mut self, table: FunctionTable) {
        self.tables.insert(table.module_base, Ok(Arc::new(table)));
    }

    /// Forget everything (after the target ran).
    pub fn clear(&mut self) {
        self.tables.clear();
    }
}
