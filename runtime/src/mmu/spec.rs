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
    /// Whether the entry's write and user bits restrict the pages below it. A PAE PDPTE has
    /// only a present bit: its other bits are reserved, not permissions.
    pub permissions: bool,
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
    /// Width of a virtual address. With `sign_extended`, addresses repeat bit `va_bits - 1`
    /// above it (x64 canonical form); without, they are zero above it (32-bit x86).
    pub va_bits: u32,
    pub sign_extended: bool,
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
            permissions: true,
        },
        Level {
            name: "PPE",
            shift: 30,
            index_bits: 9,
            large_pages: true,
            permissions: true,
        },
        Level {
            name: "PDE",
            shift: 21,
            index_bits: 9,
            large_pages: true,
            permissions: true,
        },
        Level {
            name: "PTE",
            shift: 12,
            index_bits: 9,
            large_pages: false,
            permissions: true,
        },
    ],
    entry_size: 8,
    frame_mask: 0x000F_FFFF_FFFF_F000,
    va_bits: 48,
    sign_extended: true,
    root_mask: 0x000F_FFFF_FFFF_F000,
    pointer_size: 8,
};

/// 32-bit x86 PAE paging: a 32-byte-aligned PDPT of 4 entries (present bit only), then page
/// directories and page tables of 512 8-byte entries, with 2 MiB large pages.
pub const X86_PAE: PagingSpec = PagingSpec {
    name: "x86 PAE",
    levels: &[
        Level {
            name: "PDPTE",
            shift: 30,
            index_bits: 2,
            large_pages: false,
            permissions: false,
        },
        Level {
            name: "PDE",
            shift: 21,
            index_bits: 9,
            large_pages: true,
            permissions: true,
        },
        Level {
            name: "PTE",
            shift: 12,
            index_bits: 9,
            large_pages: false,
            permissions: true,
        },
    ],
    entry_size: 8,
    frame_mask: 0x000F_FFFF_FFFF_F000,
    va_bits: 32,
    sign_extended: false,
    root_mask: 0xFFFF_FFE0,
    pointer_size: 4,
};

/// 32-bit x86 paging without PAE: a page directory and page tables of 1024 4-byte entries,
/// with 4 MiB large pages.
pub const X86: PagingSpec = PagingSpec {
    name: "x86 2-level",
    levels: &[
        Level {
            name: "PDE",
            shift: 22,
            index_bits: 10,
            large_pages: true,
            permissions: true,
        },
        Level {
            name: "PTE",
            shift: 12,
            index_bits: 10,
            large_pages: false,
            permissions: true,
        },
    ],
    entry_size: 4,
    frame_mask: 0xFFFF_F000,
    va_bits: 32,
    sign_extended: false,
    root_mask: 0xFFFF_F000,
    pointer_size: 4,
};

impl PagingSpec {
    /// Index into the table of `level` for virtual address `va`.
    #[must_use]
    pub fn index(&self, level: &Level, va: u64) -> u64 {
        (va >> level.shift) & ((1 << level.index_bits) - 1)
    }

    /// Whether `va` is an address of this mode: on x64 the bits above `va_bits` repeat its
    /// top bit; on 32-bit x86 they are zero.
    #[must_use]
    pub fn is_canonical(&self, va: u64) -> bool {
        if self.va_bits >= 64 {
            return true;
        }
        if !self.sign_extended {
            return va >> self.va_bits == 0;
        }
        let top = va >> (self.va_bits - 1);
        top == 0 || top == (u64::MAX >> (self.va_bits - 1))
    }

    /// The address as this mode writes it: sign-extended above `va_bits` on x64, cut to
    /// `va_bits` on 32-bit x86 (which also undoes the sign extension of a 32-bit address in
    /// a 64-bit field, as KD packets and `KDDEBUGGER_DATA64` carry them).
    #[must_use]
    pub fn canonical(&self, va: u64) -> u64 {
        if self.va_bits >= 64 {
            return va;
        }
        if !self.sign_extended {
            return va & ((1u64 << self.va_bits) - 1);
        }
        let shift = 64 - self.va_bits;
        (((va << shift) as i64) >> shift) as u64
    }
}
