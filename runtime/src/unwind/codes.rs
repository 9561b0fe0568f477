//! `UNWIND_INFO` and its `UNWIND_CODE` array, decoded from bytes.
//!
//! Layout (Microsoft, "x64 exception handling"), all little-endian:
//!
//! | byte | field |
//! |-|-|
//! | 0 | version (bits 0-2), flags (bits 3-7) |
//! | 1 | size of prolog |
//! | 2 | count of unwind code slots |
//! | 3 | frame register (bits 0-3), scaled frame register offset (bits 4-7) |
//! | 4.. | `count` two-byte slots, padded to an even number |
//! | then | handler RVA (EHANDLER/UHANDLER) or a chained `RUNTIME_FUNCTION` (CHAININFO) |
//!
//! Each code is `{ offset in prolog: u8, op: u4, op info: u4 }`; some take one or two more slots
//! for their operand. Decoding validates the whole array up front (an unknown operation or a
//! code cut short by the slot count is an error), so the unwinder never indexes past it.
//!
//! ```
//! use kds_runtime::unwind::codes::{decode, UnwindOp, Register};
//!
//! // push rbp (ends at prolog offset 1); sub rsp, 0x20 (ends at 5): version 1, prolog 5 bytes.
//! let bytes = [0x01, 0x05, 0x02, 0x00, 0x05, 0x32, 0x01, 0x50];
//! let info = decode(&bytes).unwrap();
//! assert_eq!(info.codes[0].op, UnwindOp::AllocSmall { size: 0x20 });
//! assert_eq!(info.codes[1].op, UnwindOp::PushNonvol { reg: Register::Rbp });
//! ```

use super::pdata::RuntimeFunction;
use thiserror::Error;

/// `UNW_FLAG_EHANDLER`: the function has an exception handler.
pub const UNW_FLAG_EHANDLER: u8 = 0x01;
/// `UNW_FLAG_UHANDLER`: the function has a termination handler.
pub const UNW_FLAG_UHANDLER: u8 = 0x02;
/// `UNW_FLAG_CHAININFO`: the info ends with the `RUNTIME_FUNCTION` of its parent.
pub const UNW_FLAG_CHAININFO: u8 = 0x04;

/// Bytes before the code array.
pub const HEADER_SIZE: usize = 4;
/// Size of one `RUNTIME_FUNCTION`.
pub const RUNTIME_FUNCTION_SIZE: usize = 12;

const UWOP_PUSH_NONVOL: u8 = 0;
const UWOP_ALLOC_LARGE: u8 = 1;
const UWOP_ALLOC_SMALL: u8 = 2;
const UWOP_SET_FPREG: u8 = 3;
const UWOP_SAVE_NONVOL: u8 = 4;
const UWOP_SAVE_NONVOL_FAR: u8 = 5;
/// Version 2: an epilog descriptor. Version 1: the obsolete `UWOP_SAVE_XMM` (2 slots).
const UWOP_EPILOG: u8 = 6;
/// Version 2: `UWOP_SPARE_CODE`. Version 1: the obsolete `UWOP_SAVE_XMM_FAR` (3 slots).
const UWOP_SPARE: u8 = 7;
const UWOP_SAVE_XMM128: u8 = 8;
const UWOP_SAVE_XMM128_FAR: u8 = 9;
const UWOP_PUSH_MACHFRAME: u8 = 10;

/// A general-purpose register, numbered as the operation info field encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Register {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Register {
    /// All sixteen, in encoding order.
    pub const ALL: [Register; 16] = [
        Register::Rax,
        Register::Rcx,
        Register::Rdx,
        Register::Rbx,
        Register::Rsp,
        Register::Rbp,
        Register::Rsi,
        Register::Rdi,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];

    /// The register with encoding `n & 0xf` (a 4-bit field cannot name anything else).
    #[must_use]
    pub fn from_number(n: u8) -> Register {
        Register::ALL[usize::from(n & 0xf)]
    }

    /// The encoding, 0 to 15.
    #[must_use]
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Lower-case name as WinDbg prints it (`rax`, `r12`).
    #[must_use]
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 16] = [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ];
        NAMES[usize::from(self.number())]
    }

    /// Preserved across calls by the x64 calling convention (RBX, RBP, RDI, RSI, RSP, R12-R15).
    #[must_use]
    pub fn is_nonvolatile(self) -> bool {
        matches!(
            self,
            Register::Rbx
                | Register::Rsp
                | Register::Rbp
                | Register::Rsi
                | Register::Rdi
                | Register::R12
                | Register::R13
                | Register::R14
                | Register::R15
        )
    }
}

/// What one unwind code records, operands decoded and scaled to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindOp {
    /// `UWOP_PUSH_NONVOL`: the register was pushed (RSP -= 8).
    PushNonvol { reg: Register },
    /// `UWOP_ALLOC_LARGE`: `size` bytes allocated; `scaled` is the two-slot form (size / 8 in
    /// a 16-bit slot), otherwise the three-slot form (unscaled 32-bit size).
    AllocLarge { size: u32, scaled: bool },
    /// `UWOP_ALLOC_SMALL`: op info * 8 + 8 bytes allocated (8 to 128).
    AllocSmall { size: u32 },
    /// `UWOP_SET_FPREG`: frame register = RSP + 16 * the header's frame offset.
    SetFpreg,
    /// `UWOP_SAVE_NONVOL` (`far: false`, offset scaled by 8 in one slot) or
    /// `UWOP_SAVE_NONVOL_FAR` (unscaled offset in two slots): the register was stored at
    /// establisher frame + `offset`.
    SaveNonvol {
        reg: Register,
        offset: u32,
        far: bool,
    },
    /// `UWOP_SAVE_XMM128` / `UWOP_SAVE_XMM128_FAR`: XMM register `xmm` stored at establisher
    /// frame + `offset` (scaled by 16 in the short form).
    SaveXmm128 { xmm: u8, offset: u32, far: bool },
    /// `UWOP_PUSH_MACHFRAME`: the processor pushed a machine frame (SS, RSP, EFLAGS, CS, RIP
    /// and, with `error_code`, an error code below them).
    PushMachframe { error_code: bool },
    /// A code that has no effect on a prolog unwind: version 2's `UWOP_EPILOG` outside the
    /// leading epilog run, `UWOP_SPARE_CODE`, and version 1's obsolete `UWOP_SAVE_XMM` and
    /// `UWOP_SAVE_XMM_FAR` (6 and 7). `slots` is how many slots it takes (2 or 3).
    Skipped { op: u8, slots: u8 },
}

/// One decoded code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnwindCode {
    /// Offset of the end of the prolog instruction that performed this operation.
    pub code_offset: u8,
    pub op: UnwindOp,
    /// Index of its first slot in the array.
    pub slot: usize,
}

/// Version 2's epilog descriptors: the leading run of `UWOP_EPILOG` codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epilogs {
    /// Size in bytes of every epilog (the first code's offset field).
    pub size: u8,
    /// The first code's op info bit 0: one epilog ends the function.
    pub at_end: bool,
    /// Offsets of further epilogs, counted back from the function's end (a 0 is padding and
    /// ends the list).
    pub from_end: Vec<u16>,
}

/// A decoded `UNWIND_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwindInfo {
    pub version: u8,
    pub flags: u8,
    pub size_of_prolog: u8,
    /// Number of slots, as the header says.
    pub count_of_codes: u8,
    /// 0 for none, else the register number.
    pub frame_register: u8,
    /// The header's 4-bit frame offset; the frame register was set to RSP + 16 * this.
    pub frame_offset: u8,
    /// Prolog codes, in array order (descending prolog offset), epilog descriptors excluded.
    pub codes: Vec<UnwindCode>,
    /// Version 2 epilog descriptors, when the array starts with them.
    pub epilogs: Option<Epilogs>,
    /// The parent function entry of a chained info.
    pub chained: Option<RuntimeFunction>,
}

impl UnwindInfo {
    /// Bytes the structure takes up to the end of the chained entry (or of the code array
    /// when there is none): what a reader must fetch to decode it.
    #[must_use]
    pub fn size_needed(header: [u8; HEADER_SIZE]) -> usize {
        let slots = usize::from(header[2]);
        let padded = (slots + 1) & !1;
        let chained = if (header[0] >> 3) & UNW_FLAG_CHAININFO != 0 {
            RUNTIME_FUNCTION_SIZE
        } else {
            0
        };
        HEADER_SIZE + padded * 2 + chained
    }

    #[must_use]
    pub fn is_chained(&self) -> bool {
        self.flags & UNW_FLAG_CHAININFO != 0
    }

    /// The frame register, when the function establishes one.
    #[must_use]
    pub fn frame_register(&self) -> Option<Register> {
        (self.frame_register != 0).then(|| Register::from_number(self.frame_register))
    }
}

/// Why bytes are not a valid `UNWIND_INFO`. Slot indexes count from the start of the array.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodeError {
    #[error("{len} bytes are too few for an unwind info header and its {need} bytes of codes")]
    Truncated { len: usize, need: usize },
    #[error("unwind info version {version} is not 1 or 2")]
    UnsupportedVersion { version: u8 },
    #[error("unwind code at slot {slot} has unknown operation {op}")]
    UnknownOp { slot: usize, op: u8 },
    #[error("unwind code at slot {slot} (operation {op}) needs {slots} slots, but the array has {count}")]
    CutShort {
        slot: usize,
        op: u8,
        slots: usize,
        count: usize,
    },
}

/// Decode an `UNWIND_INFO` from `bytes` (at least [`UnwindInfo::size_needed`] long).
pub fn decode(bytes: &[u8]) -> Result<UnwindInfo, CodeError> {
    let header: [u8; HEADER_SIZE] = match bytes.get(..HEADER_SIZE) {
        Some(h) => [h[0], h[1], h[2], h[3]],
        None => {
            return Err(CodeError::Truncated {
                len: bytes.len(),
                need: HEADER_SIZE,
            })
        }
    };
    let need = UnwindInfo::size_needed(header);
    if bytes.len() < need {
        return Err(CodeError::Truncated {
            len: bytes.len(),
            need,
        });
    }
    let version = header[0] & 0x7;
    let flags = header[0] >> 3;
    if version != 1 && version != 2 {
        return Err(CodeError::UnsupportedVersion { version });
    }
    let count = usize::from(header[2]);
    let slot = |i: usize| -> u16 {
        let at = HEADER_SIZE + i * 2;
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    };

    let mut index = 0usize;
    // Version 2 puts its epilog descriptors first, one slot each: the first gives the size
    // (and whether an epilog ends the function), the others an offset back from the end.
    let mut epilogs = None;
    if version == 2 && count > 0 && slot(0) >> 8 & 0xf == u16::from(UWOP_EPILOG) {
        let first = slot(0);
        let mut e = Epilogs {
            size: (first & 0xff) as u8,
            at_end: (first >> 12) & 1 != 0,
            from_end: Vec::new(),
        };
        index = 1;
        while index < count && slot(index) >> 8 & 0xf == u16::from(UWOP_EPILOG) {
            let s = slot(index);
            // Offset low byte in the code offset field, high nibble in op info.
            e.from_end.push((s & 0xff) | ((s >> 12) << 8));
            index += 1;
        }
        epilogs = Some(e);
    }

    let mut codes = Vec::new();
    while index < count {
        let first = slot(index);
        let code_offset = (first & 0xff) as u8;
        let op = ((first >> 8) & 0xf) as u8;
        let info = (first >> 12) as u8;
        let slots = match op {
            UWOP_PUSH_NONVOL | UWOP_ALLOC_SMALL | UWOP_SET_FPREG | UWOP_PUSH_MACHFRAME => 1,
            UWOP_ALLOC_LARGE if info == 0 => 2,
            UWOP_ALLOC_LARGE => 3,
            UWOP_SAVE_NONVOL | UWOP_SAVE_XMM128 | UWOP_EPILOG => 2,
            UWOP_SAVE_NONVOL_FAR | UWOP_SAVE_XMM128_FAR | UWOP_SPARE => 3,
            _ => return Err(CodeError::UnknownOp { slot: index, op }),
        };
        if index + slots > count {
            return Err(CodeError::CutShort {
                slot: index,
                op,
                slots,
                count,
            });
        }
        let operand16 = || u32::from(slot(index + 1));
        let operand32 = || u32::from(slot(index + 1)) | (u32::from(slot(index + 2)) << 16);
        let reg = Register::from_number(info);
        let op = match op {
            UWOP_PUSH_NONVOL => UnwindOp::PushNonvol { reg },
            UWOP_ALLOC_LARGE if info == 0 => UnwindOp::AllocLarge {
                size: operand16() * 8,
                scaled: true,
            },
            UWOP_ALLOC_LARGE => UnwindOp::AllocLarge {
                size: operand32(),
                scaled: false,
            },
            UWOP_ALLOC_SMALL => UnwindOp::AllocSmall {
                size: u32::from(info) * 8 + 8,
            },
            UWOP_SET_FPREG => UnwindOp::SetFpreg,
            UWOP_SAVE_NONVOL => UnwindOp::SaveNonvol {
                reg,
                offset: operand16() * 8,
                far: false,
            },
            UWOP_SAVE_NONVOL_FAR => UnwindOp::SaveNonvol {
                reg,
                offset: operand32(),
                far: true,
            },
            UWOP_SAVE_XMM128 => UnwindOp::SaveXmm128 {
                xmm: info,
                offset: operand16() * 16,
                far: false,
            },
            UWOP_SAVE_XMM128_FAR => UnwindOp::SaveXmm128 {
                xmm: info,
                offset: operand32(),
                far: true,
            },
            UWOP_PUSH_MACHFRAME => UnwindOp::PushMachframe {
                error_code: info != 0,
            },
            // UWOP_EPILOG past the leading run, UWOP_SPARE_CODE, or version 1's obsolete
            // XMM saves: no effect on integer registers or RSP.
            other => UnwindOp::Skipped {
                op: other,
                slots: slots as u8,
            },
        };
        codes.push(UnwindCode {
            code_offset,
            op,
            slot: index,
        });
        index += slots;
    }

    let chained = (flags & UNW_FLAG_CHAININFO != 0).then(|| {
        let at = HEADER_SIZE + ((count + 1) & !1) * 2;
        let word = |i: usize| {
            u32::from_le_bytes([
                bytes[at + i],
                bytes[at + i + 1],
                bytes[at + i + 2],
                bytes[at + i + 3],
            ])
        };
        RuntimeFunction {
            begin: word(0),
            end: word(4),
            unwind_info: word(8),
        }
    });

    Ok(UnwindInfo {
        version,
        flags,
        size_of_prolog: header[1],
        count_of_codes: header[2],
        frame_register: header[3] & 0xf,
        frame_offset: header[3] >> 4,
        codes,
        epilogs,
        chained,
    })
}
