//! One target abstraction for dumps, live KD and snapshots.
//!
//! A [`Target`] knows its own identity (what its header or handshake says), serves physical
//! memory, and gives register context per processor. Everything above it (translation,
//! symbols, commands) is the same whatever the kind of target.

mod counting;
mod dump;
mod identity;
mod live;
mod memory;
mod snapshot;

pub use counting::{CountingTarget, ReadStats};
pub use dump::DumpTarget;
pub use identity::{
    Arch, BugCheck, Capabilities, Consistency, FileTime, OsVersion, TargetIdentity, TargetKind,
};
pub use live::{BreakIn, KdTarget, LiveOptions};
pub use memory::MemoryTarget;
pub use snapshot::{
    ImageError, ImageFormat, PhysicalImage, Run, SnapshotError, SnapshotOpenError, SnapshotTarget,
    VmwareError, EM_386, EM_X86_64,
};

use thiserror::Error;

/// Size of a physical page on every architecture kds supports.
pub const PAGE_SIZE: u64 = 0x1000;

/// Why a physical read failed. Each variant names the physical address it stopped at.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadError {
    /// The page exists on the machine but its contents are not in this capture
    /// (a kernel or bitmap dump leaves user and free pages out).
    #[error("physical page {page:#x} is not in the dump")]
    PageNotCaptured { page: u64 },
    /// The address lies outside every physical memory range the target describes.
    #[error("physical address {address:#x} is outside the target's physical memory")]
    OutOfRange { address: u64 },
    /// The target could not be asked (link lost, I/O error on the file).
    #[error("target read at physical address {address:#x} failed: {reason}")]
    Transport { address: u64, reason: String },
}

impl ReadError {
    /// The physical address (page-aligned for missing pages) this error is about.
    #[must_use]
    pub fn address(&self) -> u64 {
        match self {
            ReadError::PageNotCaptured { page } => *page,
            ReadError::OutOfRange { address } | ReadError::Transport { address, .. } => *address,
        }
    }
}

/// Errors from a target that are not about one read.
#[derive(Debug, Error)]
pub enum TargetError {
    #[error("processor {processor} does not exist (the target has {count})")]
    NoSuchProcessor { processor: u32, count: u32 },
    #[error("register context of processor {processor} is not available: {reason}")]
    ContextUnavailable { processor: u32, reason: String },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    Other(String),
}

/// Register state of one processor, as the target recorded or reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum ProcessorContext {
    X64(X64Context),
    X86(X86Context),
}

/// The general-purpose, instruction, flag and segment registers of an x86 `CONTEXT`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct X86Context {
    pub eax: u32,
    pub ecx: u32,
    pub edx: u32,
    pub ebx: u32,
    pub esp: u32,
    pub ebp: u32,
    pub esi: u32,
    pub edi: u32,
    pub eip: u32,
    pub eflags: u32,
    pub cs: u16,
    pub ss: u16,
}

/// Bytes of an x86 `CONTEXT` (`sizeof(CONTEXT)` with `ExtendedRegisters`).
pub const X86_CONTEXT_SIZE: usize = 0x2CC;

/// Offsets of the registers in an x86 `CONTEXT` (winnt.h; the x86 symbol tables' `_CONTEXT`
/// agrees).
mod x86_context_offsets {
    pub const CONTEXT_FLAGS: usize = 0x00;
    pub const EDI: usize = 0x9C;
    pub const ESI: usize = 0xA0;
    pub const EBX: usize = 0xA4;
    pub const EDX: usize = 0xA8;
    pub const ECX: usize = 0xAC;
    pub const EAX: usize = 0xB0;
    pub const EBP: usize = 0xB4;
    pub const EIP: usize = 0xB8;
    pub const SEG_CS: usize = 0xBC;
    pub const EFLAGS: usize = 0xC0;
    pub const ESP: usize = 0xC4;
    pub const SEG_SS: usize = 0xC8;
}

impl X86Context {
    /// An x86 `CONTEXT` holding these registers, with `ContextFlags` saying control, integer
    /// and segment registers are valid; the inverse of [`X86Context::from_x86_context`].
    #[must_use]
    pub fn to_x86_context(&self) -> [u8; X86_CONTEXT_SIZE] {
        use x86_context_offsets as off;
        let mut raw = [0u8; X86_CONTEXT_SIZE];
        let mut put = |at: usize, bytes: &[u8]| raw[at..at + bytes.len()].copy_from_slice(bytes);
        // CONTEXT_i386 | CONTROL | INTEGER | SEGMENTS
        put(off::CONTEXT_FLAGS, &0x0001_0007u32.to_le_bytes());
        put(off::SEG_CS, &u32::from(self.cs).to_le_bytes());
        put(off::SEG_SS, &u32::from(self.ss).to_le_bytes());
        for (at, v) in [
            (off::EDI, self.edi),
            (off::ESI, self.esi),
            (off::EBX, self.ebx),
            (off::EDX, self.edx),
            (off::ECX, self.ecx),
            (off::EAX, self.eax),
            (off::EBP, self.ebp),
            (off::EIP, self.eip),
            (off::EFLAGS, self.eflags),
            (off::ESP, self.esp),
        ] {
            put(at, &v.to_le_bytes());
        }
        raw
    }

    /// The registers kds uses, out of a raw x86 `CONTEXT` (a 32-bit dump header's, KD's
    /// GetContext reply from a 32-bit kernel). Short input reads as zeros.
    #[must_use]
    pub fn from_x86_context(raw: &[u8]) -> X86Context {
        use x86_context_offsets as off;
        let u32_at = |at: usize| {
            raw.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        X86Context {
            eax: u32_at(off::EAX),
            ecx: u32_at(off::ECX),
            edx: u32_at(off::EDX),
            ebx: u32_at(off::EBX),
            esp: u32_at(off::ESP),
            ebp: u32_at(off::EBP),
            esi: u32_at(off::ESI),
            edi: u32_at(off::EDI),
            eip: u32_at(off::EIP),
            eflags: u32_at(off::EFLAGS),
            // Segment selectors are 16 bits stored in 32-bit slots.
            cs: (u32_at(off::SEG_CS) & 0xFFFF) as u16,
            ss: (u32_at(off::SEG_SS) & 0xFFFF) as u16,
        }
    }
}

/// The general-purpose, instruction, flag and segment registers of an AMD64 `CONTEXT`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct X64Context {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub eflags: u32,
    pub cs: u16,
    pub ss: u16,
}

/// A source of physical memory and processor state: a dump file, a live kernel or a snapshot.
///
/// Reads take `&self`: live targets keep their link state behind interior mutability, so a
/// target can be shared by the translation layer, the symbol loader and the executor.
pub trait Target: Send + Sync {
    /// What the target says about itself (header fields, handshake).
    fn identity(&self) -> &TargetIdentity;

    /// What this target can do beyond reading.
    fn capabilities(&self) -> Capabilities;

    /// Fill `buf` from physical memory at `address`. Fails whole, naming the first page it
    /// could not read; callers that want partial data read page by page.
    fn read_physical(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadError>;

    /// Register context of one processor.
    fn processor_context(&self, processor: u32) -> Result<ProcessorContext, TargetError>;

    /// How many physical pages the capture holds, for targets that know (dumps, images).
    fn captured_pages(&self) -> Option<u64> {
        None
    }

    /// The page frames the capture holds, ascending, for targets that know (dumps, images);
    /// a live kernel has no such list.
    fn captured_pfns(&self) -> Option<Vec<u64>> {
        None
    }

    /// Let a frozen live target run again. Dumps and snapshots have nothing to resume.
    fn resume(&self) -> Result<(), TargetError> {
        Ok(())
    }

    /// Why a live session can no longer be used (interrupted, freeze budget spent, link
    /// lost): the executor stops instead of failing every later read.
    fn session_ended(&self) -> Option<String> {
        None
    }
}

impl X64Context {
    /// An AMD64 `CONTEXT` (1232 bytes) holding these registers at winnt.h's offsets, with
    /// `ContextFlags` saying control, integer and segment registers are valid; the inverse
    /// of [`X64Context::from_amd64_context`].
    #[must_use]
    pub fn to_amd64_context(&self) -> [u8; 1232] {
        let mut raw = [0u8; 1232];
        let mut put = |off: usize, bytes: &[u8]| raw[off..off + bytes.len()].copy_from_slice(bytes);
        // CONTEXT_AMD64 | CONTROL | INTEGER | SEGMENTS
        put(0x30, &0x0010_0007u32.to_le_bytes());
        put(0x38, &self.cs.to_le_bytes());
        put(0x42, &self.ss.to_le_bytes());
        put(0x44, &self.eflags.to_le_bytes());
        for (off, v) in [
            (0x78, self.rax),
            (0x80, self.rcx),
            (0x88, self.rdx),
            (0x90, self.rbx),
            (0x98, self.rsp),
            (0xA0, self.rbp),
            (0xA8, self.rsi),
            (0xB0, self.rdi),
            (0xB8, self.r8),
            (0xC0, self.r9),
            (0xC8, self.r10),
            (0xD0, self.r11),
            (0xD8, self.r12),
            (0xE0, self.r13),
            (0xE8, self.r14),
            (0xF0, self.r15),
            (0xF8, self.rip),
        ] {
            put(off, &v.to_le_bytes());
        }
        raw
    }

    /// The registers kds uses, out of a raw AMD64 `CONTEXT` (offsets from winnt.h; the same
    /// bytes a dump header holds and KD's GetContext returns). Short input reads as zeros.
    #[must_use]
    pub fn from_amd64_context(raw: &[u8]) -> X64Context {
        let u64_at = |off: usize| {
            raw.get(off..off + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let u32_at = |off: usize| {
            raw.get(off..off + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        let u16_at = |off: usize| {
            raw.get(off..off + 2)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u16::from_le_bytes)
        };
        X64Context {
            cs: u16_at(0x38),
            ss: u16_at(0x42),
            eflags: u32_at(0x44),
            rax: u64_at(0x78),
            rcx: u64_at(0x80),
            rdx: u64_at(0x88),
            rbx: u64_at(0x90),
            rsp: u64_at(0x98),
            rbp: u64_at(0xA0),
            rsi: u64_at(0xA8),
            rdi: u64_at(0xB0),
            r8: u64_at(0xB8),
            r9: u64_at(0xC0),
            r10: u64_at(0xC8),
            r11: u64_at(0xD0),
            r12: u64_at(0xD8),
            r13: u64_at(0xE0),
            r14: u64_at(0xE8),
            r15: u64_at(0xF0),
            rip: u64_at(0xF8),
        }
    }
}

#[cfg(test)]
mod context_tests {
    use super::{Arch, X86Context, X86_CONTEXT_SIZE};

    #[test]
    fn x86_context_round_trips_at_winnt_offsets() {
        let context = X86Context {
            eax: 1,
            ecx: 2,
            edx: 3,
            ebx: 4,
            esp: 0x8D3F_FC00,
            ebp: 0x8D3F_FC28,
            esi: 7,
            edi: 8,
            eip: 0x8288_1234,
            eflags: 0x246,
            cs: 8,
            ss: 0x10,
        };
        let raw = context.to_x86_context();
        assert_eq!(raw.len(), X86_CONTEXT_SIZE);
        assert_eq!(&raw[0xB8..0xBC], &0x8288_1234u32.to_le_bytes(), "Eip");
        assert_eq!(&raw[0xC4..0xC8], &0x8D3F_FC00u32.to_le_bytes(), "Esp");
        assert_eq!(&raw[0xB4..0xB8], &0x8D3F_FC28u32.to_le_bytes(), "Ebp");
        assert_eq!(X86Context::from_x86_context(&raw), context);
        assert_eq!(
            X86Context::from_x86_context(&raw[..0x10]),
            X86Context::default()
        );
    }

    #[test]
    fn x86_addresses_narrow_from_and_widen_to_64_bit_fields() {
        let x86 = Arch::X86 { pae: true };
        assert_eq!(x86.narrow(0xFFFF_FFFF_8284_5000), 0x8284_5000);
        assert_eq!(x86.widen(0x8284_5000), 0xFFFF_FFFF_8284_5000);
        assert_eq!(x86.widen(0x7FFE_0000), 0x7FFE_0000);
        assert_eq!(
            Arch::X64.narrow(0xFFFF_F801_0000_0000),
            0xFFFF_F801_0000_0000
        );
    }
}
