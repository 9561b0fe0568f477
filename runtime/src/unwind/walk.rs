//! Walking a stack frame by frame, with what WinDbg's `k` prints for each frame.
//!
//! From a register context, each step finds the function entry covering RIP in the module
//! that holds it and unwinds it ([`virtual_unwind`]); an RIP with no entry (a leaf function,
//! or an address in no known module) is unwound by popping the return address. The walk stops
//! at a zero RIP, a read it cannot make, an RSP that does not grow, unreadable or invalid
//! unwind data, or the frame limit, and says which. Frames found before the stop are kept.
//!
//! For frames reached by a return (all but the first and those after a machine frame), RIP is
//! a return address, just past a call, so the function entry is looked up for RIP - 1: a call
//! that is the last instruction of a function returns to the start of the next one.

use super::pdata::{Lookup, RuntimeFunction, UnwindCache};
use super::virtual_unwind::{resolve_indirect, virtual_unwind, EpilogCheck, MachineFrame, Unwound};
use super::{Context, UnwindError};
use crate::mmu::AddressSpace;
use std::collections::HashSet;
use std::fmt;

/// An image's place in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleRange {
    pub base: u64,
    pub size: u64,
}

impl ModuleRange {
    #[must_use]
    pub fn contains(&self, address: u64) -> bool {
        address >= self.base && address - self.base < self.size
    }
}

/// Which module holds an address (the loaded module lists, for a kernel target).
pub trait ModuleLookup {
    fn module_at(&self, address: u64) -> Option<ModuleRange>;
}

impl ModuleLookup for Vec<ModuleRange> {
    fn module_at(&self, address: u64) -> Option<ModuleRange> {
        self.iter().copied().find(|m| m.contains(address))
    }
}

impl<const N: usize> ModuleLookup for [ModuleRange; N] {
    fn module_at(&self, address: u64) -> Option<ModuleRange> {
        self.iter().copied().find(|m| m.contains(address))
    }
}

/// One frame, as a line of WinDbg's `k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RSP in this frame (the Child-SP column).
    pub child_sp: u64,
    /// Where control is in this frame: the start RIP, a return address, or the RIP of a
    /// machine frame (the Call Site column's address).
    pub ip: u64,
    /// The RetAddr column: the next frame's IP, when this frame could be unwound.
    pub return_address: Option<u64>,
    /// The module holding `ip`; `false` is WinDbg's "Frame IP not in any known module.
    /// Following frames may be wrong."
    pub in_module: bool,
    pub module: Option<ModuleRange>,
    /// The function entry used to unwind this frame (indirect entries resolved); `None` for a
    /// leaf.
    pub function: Option<RuntimeFunction>,
    /// Unwinding this frame went through a machine frame (`UWOP_PUSH_MACHFRAME`), which sat
    /// at this address; the next frame is the interrupted code (`(TrapFrame @ ...)`).
    pub machine_frame_at: Option<u64>,
    /// The machine frame holds an error code below the saved RIP.
    pub machine_frame_error_code: bool,
    /// RIP was in an epilog, which was emulated.
    pub in_epilog: bool,
    /// Registers in this frame (`rip` = `ip`, `rsp` = `child_sp`).
    pub context: Context,
}

/// Why a walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEnd {
    /// The last frame returns to address 0: the bottom of the stack.
    ReachedZero,
    /// A stack read failed (page not present, not in the dump); `address` is the read that
    /// failed. The last frame has no return address.
    StackNotReadable { address: u64 },
    /// Unwinding did not move RSP up (or came back to a frame already seen): a loop.
    NotProgressing { rsp: u64 },
    /// `limit` frames were walked.
    FrameLimit,
    /// The function table entry or unwind info at `rva` of the module could not be read.
    UnwindInfoUnreadable { module_base: u64, rva: u32 },
    /// The module's function table could not be had (headers unreadable, not PE32+).
    FunctionTableUnavailable {
        module_base: u64,
        error: UnwindError,
    },
    /// The unwind info is invalid, or needs a register the context lacks.
    BadUnwindInfo {
        module_base: u64,
        error: UnwindError,
    },
}

impl fmt::Display for WalkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkEnd::ReachedZero => write!(f, "reached a zero return address"),
            WalkEnd::StackNotReadable { address } => {
                write!(f, "cannot read the stack at {address:#x}")
            }
            WalkEnd::NotProgressing { rsp } => {
                write!(f, "the stack pointer did not move up (unwound to {rsp:#x})")
            }
            WalkEnd::FrameLimit => write!(f, "frame limit reached"),
            WalkEnd::UnwindInfoUnreadable { module_base, rva } => write!(
                f,
                "cannot read the unwind data at rva {rva:#x} of the module at {module_base:#x}"
            ),
            WalkEnd::FunctionTableUnavailable { error, .. }
            | WalkEnd::BadUnwindInfo { error, .. } => write!(f, "{error}"),
        }
    }
}

/// Frames from the innermost out, and why the walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct StackWalk {
    pub frames: Vec<Frame>,
    pub end: WalkEnd,
}

struct Step {
    unwound: Unwound,
    function: Option<RuntimeFunction>,
}

/// Walk the stack from `start`, at most `limit` frames.
pub fn walk(
    space: &AddressSpace,
    modules: &dyn ModuleLookup,
    cache: &mut UnwindCache,
    start: Context,
    limit: usize,
) -> StackWalk {
    let mut frames: Vec<Frame> = Vec::new();
    let mut seen = HashSet::new();
    let mut ctx = start;
    // The first RIP is where control is, not a return address.
    let mut exact_ip = true;
    let end = loop {
        if frames.len() >= limit {
            break WalkEnd::FrameLimit;
        }
        seen.insert((ctx.rip, ctx.rsp));
        let module = modules.module_at(ctx.rip);
        let mut frame = Frame {
            child_sp: ctx.rsp,
            ip: ctx.rip,
            return_address: None,
            in_module: module.is_some(),
            module,
            function: None,
            machine_frame_at: None,
            machine_frame_error_code: false,
            in_epilog: false,
            context: ctx,
        };
        let step = match step(space, cache, module, &ctx, exact_ip) {
            Ok(step) => step,
            Err(end) => {
                frames.push(frame);
                break end;
            }
        };
        let mut caller = step.unwound.context;
        frame.return_address = Some(caller.rip);
        frame.function = step.function;
        frame.in_epilog = step.unwound.in_epilog;
        if let Some(MachineFrame { at, error_code }) = step.unwound.machine_frame {
            frame.machine_frame_at = Some(at);
            frame.machine_frame_error_code = error_code;
        }
        frames.push(frame);

        if caller.rip == 0 {
            break WalkEnd::ReachedZero;
        }
        // A machine frame switches stacks (kernel to user), so RSP may go down across one;
        // anywhere else it must go up.
        let through_machine_frame = step.unwound.machine_frame.is_some();
        if (!through_machine_frame && caller.rsp <= ctx.rsp)
            || seen.contains(&(caller.rip, caller.rsp))
        {
            break WalkEnd::NotProgressing { rsp: caller.rsp };
        }
        caller.forget_volatile();
        exact_ip = through_machine_frame;
        ctx = caller;
    };
    StackWalk { frames, end }
}

/// Unwind one frame: by its function entry, or as a leaf.
fn step(
    space: &AddressSpace,
    cache: &mut UnwindCache,
    module: Option<ModuleRange>,
    ctx: &Context,
    exact_ip: bool,
) -> Result<Step, WalkEnd> {
    let entry = match module {
        None => None,
        Some(m) => {
            let table =
                cache
                    .table(space, m.base)
                    .map_err(|error| WalkEnd::FunctionTableUnavailable {
                        module_base: m.base,
                        error,
                    })?;
            let lookup_ip = if exact_ip {
                ctx.rip
            } else {
                ctx.rip.wrapping_sub(1)
            };
            let rva = u32::try_from(lookup_ip.wrapping_sub(m.base)).ok();
            match rva.map(|rva| table.lookup(rva)) {
                Some(Lookup::Found(e)) => Some((table, e)),
                Some(Lookup::Unknown { pdata_rva }) => {
                    return Err(WalkEnd::UnwindInfoUnreadable {
                        module_base: m.base,
                        rva: pdata_rva,
                    })
                }
                Some(Lookup::NotFound) | None => None,
            }
        }
    };
    let Some((table, entry)) = entry else {
        // A leaf: RSP addresses the return address.
        let rip = space
            .read_u64(ctx.rsp)
            .map_err(|_| WalkEnd::StackNotReadable { address: ctx.rsp })?;
        let mut caller = *ctx;
        caller.rip = rip;
        caller.rsp = ctx.rsp.wrapping_add(8);
        return Ok(Step {
            unwound: Unwound {
                context: caller,
                machine_frame: None,
                in_epilog: false,
            },
            function: None,
        });
    };
    let module_base = table.module_base();
    let to_end = |error: UnwindError| match error {
        UnwindError::Stack { address, .. } => WalkEnd::StackNotReadable { address },
        UnwindError::UnwindInfoUnreadable { rva, .. }
        | UnwindError::FunctionEntryUnreadable { rva, .. } => {
            WalkEnd::UnwindInfoUnreadable { module_base, rva }
        }
        error => WalkEnd::BadUnwindInfo { module_base, error },
    };
    // A return address at the very end of the entry found for RIP - 1 (a call that never
    // returns, last in its function) points at the next function's code: no epilog of ours.
    let rip_rva = ctx.rip.wrapping_sub(module_base);
    let epilog_check = if u32::try_from(rip_rva).is_ok_and(|rva| entry.contains(rva)) {
        EpilogCheck::Detect
    } else {
        EpilogCheck::Skip
    };
    let function = resolve_indirect(space, module_base, entry).map_err(to_end)?;
    let unwound = virtual_unwind(space, &table, function, ctx, epilog_check).map_err(to_end)?;
    Ok(Step {
        unwound,
        function: Some(function),
    })
}
