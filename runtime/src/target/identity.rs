//! What a target says about itself.

use serde::Serialize;
use std::fmt;

/// Processor architecture of the debuggee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X64,
    /// 32-bit x86, with or without PAE paging.
    X86 {
        pae: bool,
    },
}

impl Arch {
    /// Width of a pointer on this architecture, in bytes.
    #[must_use]
    pub fn pointer_size(self) -> u8 {
        match self {
            Arch::X64 => 8,
            Arch::X86 { .. } => 4,
        }
    }

    /// An address as this architecture holds it: a 32-bit kernel's addresses arrive
    /// sign-extended in 64-bit fields (`KDDEBUGGER_DATA64`, KD packets) and are cut back to
    /// 32 bits; x64 addresses are unchanged.
    #[must_use]
    pub fn narrow(self, address: u64) -> u64 {
        match self {
            Arch::X64 => address,
            Arch::X86 { .. } => address & 0xFFFF_FFFF,
        }
    }

    /// A 32-bit address sign-extended into a 64-bit field, as a 32-bit kernel writes
    /// `KDDEBUGGER_DATA64` pointers and KD packet addresses; x64 addresses are unchanged.
    #[must_use]
    pub fn widen(self, address: u64) -> u64 {
        match self {
            Arch::X64 => address,
            Arch::X86 { .. } => address as u32 as i32 as i64 as u64,
        }
    }

    /// The PE `Machine` value of the architecture.
    #[must_use]
    pub fn machine_type(self) -> u32 {
        match self {
            Arch::X64 => 0x8664,
            Arch::X86 { .. } => 0x14c,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::X64 => f.write_str("x64"),
            Arch::X86 { pae: true } => f.write_str("x86 (PAE)"),
            Arch::X86 { pae: false } => f.write_str("x86"),
        }
    }
}

/// The kind of target and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetKind {
    /// A crash dump file; `dump_type` is the header's DumpType value.
    Dump {
        path: String,
        dump_type: u32,
        dump_type_name: String,
    },
    /// A live kernel over a KD link.
    LiveKd { connection: String },
    /// A memory capture of a running system.
    Snapshot { path: String, format: String },
}

/// Whether data read from the target can change or be torn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// All processors were stopped while memory was captured (crash dump, broken-in KD).
    Frozen,
    /// Memory was captured while the system ran: lists may be torn.
    MayBeInconsistent,
}

/// Windows version as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OsVersion {
    pub major: u32,
    pub minor: u32,
    pub build: u32,
}

/// The stop code and its four parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BugCheck {
    pub code: u32,
    pub parameters: [u64; 4],
}

/// A Windows FILETIME: 100 ns intervals since 1601-01-01 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FileTime(pub u64);

impl FileTime {
    const UNIX_EPOCH: u64 = 116_444_736_000_000_000;

    /// Seconds and nanoseconds since the Unix epoch, `None` before 1970.
    #[must_use]
    pub fn to_unix(self) -> Option<(i64, u32)> {
        let since = self.0.checked_sub(Self::UNIX_EPOCH)?;
        let secs = i64::try_from(since / 10_000_000).ok()?;
        let nanos = u32::try_from((since % 10_000_000) * 100).ok()?;
        Some((secs, nanos))
    }
}

/// What a target may be asked to do beyond reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub consistency: Consistency,
    pub can_resume: bool,
    pub can_write: bool,
}

impl Capabilities {
    /// A capture taken with every processor stopped (a crash dump): read-only, nothing to
    /// resume.
    pub const FROZEN_CAPTURE: Capabilities = Capabilities {
        consistency: Consistency::Frozen,
        can_resume: false,
        can_write: false,
    };
}

/// Identity of a target, as far as the target itself knows it (a dump header, a KD
/// handshake). Values a target cannot know without symbols are `None`; the kernel locator
/// fills the rest in a `KernelIdentity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetIdentity {
    pub kind: TargetKind,
    pub arch: Arch,
    /// Major version word of the header (0xF free build, 0xC checked build) and build number.
    pub os_build: Option<u32>,
    pub checked_build: bool,
    pub kernel_base: Option<u64>,
    pub ps_loaded_module_list: Option<u64>,
    pub ps_active_process_head: Option<u64>,
    pub kd_debugger_data_block: Option<u64>,
    pub pfn_database: Option<u64>,
    /// The kernel's page-table root (CR3) at capture time.
    pub directory_table_base: u64,
    pub bugcheck: Option<BugCheck>,
    pub processor_count: u32,
    pub system_time: Option<FileTime>,
    /// Time since boot at capture, in 100 ns units.
    pub system_up_time: Option<u64>,
    pub comment: Option<String>,
    pub consistency: Consistency,
    /// How values the target's format does not carry were found (header-less images: the
    /// DTB and the kernel base by scanning), one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub discovery: Vec<String>,
}
