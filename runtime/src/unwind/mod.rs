//! x64 stack unwinding from table data, as Microsoft's "x64 exception handling" describes it.
//!
//! - [`pdata`]: a module's `RUNTIME_FUNCTION` table (`.pdata`), read from target memory at the
//!   module base, looked up by RVA, cached per module ([`UnwindCache`]).
//! - [`codes`]: `UNWIND_INFO` and its codes (versions 1 and 2), decoded and validated.
//! - [`virtual_unwind`](mod@virtual_unwind): one frame: epilog detection and emulation (version 1
//!   by reading the code stream, version 2 by its epilog descriptors), else undoing the prolog
//!   codes past the current offset, following chained infos.
//! - [`walk`](mod@walk): frame after frame from a register context, with the WinDbg `k`
//!   columns (Child-SP, RetAddr) and a reason for stopping.
//! - [`x86`](mod@x86): the 32-bit walk (EBP chain, FPO records, trap frames), one file of its
//!   own; it shares nothing with the x64 code above.
//!
//! Everything here reads the target through an [`AddressSpace`](crate::mmu::AddressSpace);
//! no byte from it can make the unwinder panic or loop without bound.
//!
//! ```
//! use kds_runtime::mmu::{AddressSpace, X64};
//! use kds_runtime::target::MemoryTarget;
//! use kds_runtime::unwind::{walk, Context, ModuleRange, UnwindCache, WalkEnd};
//! use std::sync::Arc;
//!
//! // No modules: every frame is a leaf, RIP = [RSP], RSP += 8.
//! let machine = MemoryTarget::x64(1);
//! let rsp = 0xFFFF_8000_0010_0000u64;
//! machine.write_virtual_u64(rsp, 0xFFFF_F800_1234_5678);
//! machine.write_virtual_u64(rsp + 8, 0);
//! let space = AddressSpace::new(Arc::new(machine), &X64, 0x1000);
//! let start = Context::new(0xFFFF_F800_1111_0000, rsp);
//! let walked = walk(&space, &Vec::<ModuleRange>::new(), &mut UnwindCache::new(), start, 10);
//! assert_eq!(walked.frames.len(), 2);
//! assert_eq!(walked.frames[0].return_address, Some(0xFFFF_F800_1234_5678));
//! assert!(!walked.frames[0].in_module);
//! assert_eq!(walked.end, WalkEnd::ReachedZero);
//! ```

pub mod codes;
pub mod pdata;
pub mod virtual_unwind;
pub mod walk;
pub mod x86;
pub mod x86_program;

#[cfg(test)]
mod tests;

pub use codes::Register;
pub use pdata::{FunctionTable, Lookup, RuntimeFunction, UnwindCache};
pub use virtual_unwind::{virtual_unwind, EpilogCheck, MachineFrame, Unwound};
pub use walk::{walk, Frame, ModuleLookup, ModuleRange, StackWalk, WalkEnd};

use crate::mmu::VirtualReadError;
use crate::pe::PeError;
use crate::target::X64Context;
use thiserror::Error;

/// Longest chain of `UNW_FLAG_CHAININFO` infos followed (the Windows unwinder's limit).
pub const CHAIN_LIMIT: usize = 32;

/// Integer register state while unwinding: RIP and RSP always, the others when known.
///
/// A register is `None` when nothing recorded it: the start context may leave registers out,
/// and after each unwound frame the volatile registers (RAX, RCX, RDX, R8-R11) are forgotten,
/// since a callee need not preserve them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Context {
    pub rip: u64,
    pub rsp: u64,
    /// By register number (see [`Register`]); slot 4 (RSP) is unused, RSP lives in `rsp`.
    pub gpr: [Option<u64>; 16],
}

impl Context {
    /// RIP and RSP known, every other register unknown.
    #[must_use]
    pub fn new(rip: u64, rsp: u64) -> Context {
        Context {
            rip,
            rsp,
            gpr: [None; 16],
        }
    }

    /// A register's value; RSP is always known.
    #[must_use]
    pub fn get(&self, reg: Register) -> Option<u64> {
        match reg {
            Register::Rsp => Some(self.rsp),
            r => self.gpr[usize::from(r.number())],
        }
    }

    /// Set a register (setting RSP sets `rsp`).
    pub fn set(&mut self, reg: Register, value: u64) {
        match reg {
            Register::Rsp => self.rsp = value,
            r => self.gpr[usize::from(r.number())] = Some(value),
        }
    }

    /// This context with one more register known.
    #[must_use]
    pub fn with(mut self, reg: Register, value: u64) -> Context {
        self.set(reg, value);
        self
    }

    /// Forget RAX, RCX, RDX and R8-R11, which a call does not preserve.
    pub fn forget_volatile(&mut self) {
        for r in Register::ALL {
            if !r.is_nonvolatile() {
                self.gpr[usize::from(r.number())] = None;
            }
        }
    }
}

impl From<&X64Context> for Context {
    fn from(c: &X64Context) -> Context {
        let values = [
            c.rax, c.rcx, c.rdx, c.rbx, c.rsp, c.rbp, c.rsi, c.rdi, c.r8, c.r9, c.r10, c.r11,
            c.r12, c.r13, c.r14, c.r15,
        ];
        let mut ctx = Context::new(c.rip, c.rsp);
        for (r, v) in Register::ALL.into_iter().zip(values) {
            ctx.set(r, v);
        }
        ctx
    }
}

/// Why one frame could not be unwound. Every variant names the module and RVA, or the
/// stack address, it is about.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnwindError {
    #[error("cannot read the PE headers of the module at {module_base:#x}: {source}")]
    Headers { module_base: u64, source: PeError },
    #[error("the module at {module_base:#x} is not a PE32+ image: it has no x64 function table")]
    NotPe32Plus { module_base: u64 },
    #[error("the exception directory of the module at {module_base:#x} (rva {rva:#x}) is {size:#x} bytes, more than the {max} entries read", max = pdata::MAX_ENTRIES)]
    ExceptionDirectoryTooLarge {
        module_base: u64,
        rva: u32,
        size: u32,
    },
    #[error("cannot read the function entry at rva {rva:#x} of the module at {module_base:#x}: {source}")]
    FunctionEntryUnreadable {
        module_base: u64,
        rva: u32,
        source: VirtualReadError,
    },
    #[error("the indirect function entry at rva {rva:#x} of the module at {module_base:#x} points to another indirect entry")]
    IndirectToIndirect { module_base: u64, rva: u32 },
    #[error(
        "cannot read the unwind info at rva {rva:#x} of the module at {module_base:#x}: {source}"
    )]
    UnwindInfoUnreadable {
        module_base: u64,
        rva: u32,
        source: VirtualReadError,
    },
    #[error(
        "the unwind info at rva {rva:#x} of the module at {module_base:#x} is invalid: {source}"
    )]
    BadUnwindInfo {
        module_base: u64,
        rva: u32,
        source: codes::CodeError,
    },
    #[error("the unwind info at rva {rva:#x} of the module at {module_base:#x} sets a frame pointer but names no frame register")]
    NoFrameRegister { module_base: u64, rva: u32 },
    #[error("the unwind info at rva {rva:#x} of the module at {module_base:#x} chains more than {limit} times", limit = CHAIN_LIMIT)]
    ChainTooLong { module_base: u64, rva: u32 },
    #[error("unwinding needs {} but the context does not have it", register.name())]
    RegisterUnknown { register: Register },
    #[error("cannot read the stack at {address:#x}: {source}")]
    Stack {
        address: u64,
        source: VirtualReadError,
    },
}
