//! Paging modes described as data: the walker knows nothing of any one architecture.

/// One level of a page-table walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Name as Intel and WinDbg's `!pte` use it (`PXE`, `PPE`, `PDE`, `PTE`).
    pub name: &'static str,
    /// Bit position of this level's index in the virtual address.
    pub shift: u32,
    /// Width of the index in bits (9 for 512 entries).
    pub index_bits: u32,
    /// Whether the PS bit may end the walk here with a large page of `1 << shift` bytes.
    pub large_pages: bool,
}

/// A paging mode: its levels from the root down, entry format and address width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingSpec {
    pub name: &'static str,
    pub levels: &'static [Level],
    /// Bytes per table entry.
    pub entry_size: u64,
    /// Mask of the physical frame address bits of an entry.
    pub frame_mask: u64,
    /// Width of a canonical virtual address; addresses are sign-extended above it.
    pub va_bits: u32,
    /// Mask applied to the directory table base to find the root table.
    pub root_mask: u64,
    /// Width of a virtual address (a pointer) in memory, in bytes.
    pub pointer_size: u64,
}

/// Hardware and Windows bits of a page-table entry.
pub mod bits {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const LARGE: u64 = 1 << 7;
    /// Windows software bit: a not-present PTE that points at a prototype PTE.
    pub const PROTOTYPE: u64 = 1 << 10;
    /// Windows software bit: a not-present PTE whose page is still in memory (standby or
    /// modified list).
    pub const TRANSITION: u64 = 1 << 11;
    pub const NO_EXECUTE: u64 = 1 << 63;
}

/// x64 4-level paging (PML4, PDPT, PD, PT) with 1 GiB and 2 MiB pages.
pub const X64: PagingSpec = PagingSpec {
    name: "x64 4-level",
    levels: &[
        Level {
            name: "PXE",
            shift: 39,
            index_bits: 9,
            large_pages: false,
        },
        Level {
            name: "PPE",
            shift: 30,
            index_bits: 9,
            large_pages: true,
        },
        Level {
            name: "PDE",
            shift: 21,
            index_bits: 9,
            large_pages: true,
        },
        Level {
            name: "PTE",
            shift: 12,
            index_bits: 9,
            large_pages: false,
        },
    ],
    entry_size: 8,
    frame_mask: 0x000F_FFFF_FFFF_F000,
    va_bits: 48,
    root_mask: 0x000F_FFFF_FFFF_F000,
    pointer_size: 8,
};

impl PagingSpec {
    /// Index into the table of `level` for virtual address `va`.
    #[must_use]
    pub fn index(&self, level: &Level, va: u64) -> u64 {
        (va >> level.shift) & ((1 << level.index_bits) - 1)
    }

    /// Whether `va` is canonical: the bits above `va_bits` repeat its top bit.
    #[must_use]
    pub fn is_canonical(&self, va: u64) -> bool {
        if self.va_bits >= 64 {
            return true;
        }
        let top = va >> (self.va_bits - 1);
        top == 0 || top == (u64::MAX >> (self.va_bits - 1))
    }

    /// Sign-extend a `va_bits`-wide address, as the processor does.
    #[must_use]
    pub fn canonical(&self, va: u64) -> u64 {
        if self.va_bits >= 64 {
            return va;
        }
        let shift = 64 - self.va_bits;
        (((va << shift) as i64) >> shift) as u64
    }
}
