//! Unwinding one frame, as the "Unwind procedure" of Microsoft's x64 exception handling
//! documentation describes it, given the function entry that covers RIP:
//!
//! 1. If RIP is in an epilog, the rest of the epilog is emulated forward. Version 1 infos say
//!    nothing of epilogs, so the code stream at RIP is matched against the only forms an epilog
//!    may take (`add rsp, imm` or `lea rsp, [fp+disp]`, `pop`s, then `ret` or a jump out of the
//!    function); version 2 infos list their epilogs, and the prolog's push codes are replayed.
//! 2. Otherwise every unwind code whose prolog offset is at or before RIP's offset in the
//!    function is undone, in array order, then those of each chained parent info; last, unless a
//!    machine frame supplied RIP and RSP, the return address is popped.
//!
//! Offsets stored by `UWOP_SAVE_NONVOL` and friends are relative to the establisher frame: RSP,
//! or the frame register minus 16 * its offset once the frame register is established.

use super::codes::{decode, Register, UnwindInfo, UnwindOp, HEADER_SIZE};
use super::pdata::{FunctionTable, Lookup, RuntimeFunction};
use super::{Context, UnwindError, CHAIN_LIMIT};
use crate::mmu::AddressSpace;

/// Bytes of code read at RIP to look for an epilog (the longest recognised sequence of
/// deallocation, pops and jump is shorter).
const EPILOG_WINDOW: usize = 32;

/// A machine frame the unwind went through (`UWOP_PUSH_MACHFRAME`): an interrupt or exception
/// entry, whose RIP and RSP are those of the interrupted code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineFrame {
    /// RSP when the code was reached: the address of the error code if there is one, else of
    /// the saved RIP.
    pub at: u64,
    pub error_code: bool,
}

impl MachineFrame {
    /// Address of the saved RIP (SS, RSP, EFLAGS and CS follow it, eight bytes each).
    #[must_use]
    pub fn rip_slot(&self) -> u64 {
        self.at.wrapping_add(if self.error_code { 8 } else { 0 })
    }
}

/// The caller's context and how it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwound {
    pub context: Context,
    pub machine_frame: Option<MachineFrame>,
    /// RIP was in an epilog, which was emulated.
    pub in_epilog: bool,
}

/// Read a `RUNTIME_FUNCTION` at `rva` of the module.
fn read_entry(
    space: &AddressSpace,
    module_base: u64,
    rva: u32,
) -> Result<RuntimeFunction, UnwindError> {
    let mut b = [0u8; 12];
    space
        .read(module_base.wrapping_add(u64::from(rva)), &mut b)
        .map_err(|source| UnwindError::FunctionEntryUnreadable {
            module_base,
            rva,
            source,
        })?;
    Ok(RuntimeFunction::from_le_bytes(b))
}

/// Follow an indirect entry (unwind info address with bit 0 set) to the entry it names. One
/// level is followed, as the system does; an indirect entry naming another is an error.
pub fn resolve_indirect(
    space: &AddressSpace,
    module_base: u64,
    entry: RuntimeFunction,
) -> Result<RuntimeFunction, UnwindError> {
    if !entry.is_indirect() {
        return Ok(entry);
    }
    let rva = entry.unwind_info & !1;
    let target = read_entry(space, module_base, rva)?;
    if target.is_indirect() {
        return Err(UnwindError::IndirectToIndirect { module_base, rva });
    }
    Ok(target)
}

/// Read and decode the `UNWIND_INFO` at `rva` of the module.
pub fn read_unwind_info(
    space: &AddressSpace,
    module_base: u64,
    rva: u32,
) -> Result<UnwindInfo, UnwindError> {
    let at = module_base.wrapping_add(u64::from(rva));
    let unreadable = |source| UnwindError::UnwindInfoUnreadable {
        module_base,
        rva,
        source,
    };
    let mut header = [0u8; HEADER_SIZE];
    space.read(at, &mut header).map_err(unreadable)?;
    // At most 4 + 256 * 2 + 12 bytes: the size is bounded by the one-byte count.
    let mut bytes = vec![0u8; UnwindInfo::size_needed(header)];
    space.read(at, &mut bytes).map_err(unreadable)?;
    decode(&bytes).map_err(|source| UnwindError::BadUnwindInfo {
        module_base,
        rva,
        source,
    })
}

fn read_stack(space: &AddressSpace, address: u64) -> Result<u64, UnwindError> {
    space
        .read_u64(address)
        .map_err(|source| UnwindError::Stack { address, source })
}

fn register(context: &Context, reg: Register) -> Result<u64, UnwindError> {
    context
        .get(reg)
        .ok_or(UnwindError::RegisterUnknown { register: reg })
}

/// RIP's offset from the start of `entry`, modulo 2^32 as the system computes it (an RIP
/// before the start of a chained parent is far past all its codes).
fn offset_in(rip: u64, module_base: u64, entry: &RuntimeFunction) -> u32 {
    (rip.wrapping_sub(module_base) as u32).wrapping_sub(entry.begin)
}

/// Whether to look for an epilog at RIP (the system's `UNW_FLAG_NO_EPILOGUE` turns it off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpilogCheck {
    /// RIP may be in an epilog: check, as the system does by default.
    Detect,
    /// RIP is known not to be in this function's epilog (a return address just past the
    /// function's end, whose bytes belong to the next function).
    Skip,
}

/// Unwind the frame of the function described by `entry` (an entry of `table`, indirect or
/// not) from `context`, whose RIP is the address where control left the function.
pub fn virtual_unwind(
    space: &AddressSpace,
    table: &FunctionTable,
    entry: RuntimeFunction,
    context: &Context,
    epilog_check: EpilogCheck,
) -> Result<Unwound, UnwindError> {
    let module_base = table.module_base();
    let entry = resolve_indirect(space, module_base, entry)?;
    let info = read_unwind_info(space, module_base, entry.unwind_info)?;
    let prolog_offset = offset_in(context.rip, module_base, &entry);
    let frame_base = establisher_frame(&info, prolog_offset, context);

    let epilog = if epilog_check == EpilogCheck::Skip {
        None
    } else if info.version < 2 {
        epilog_by_code(space, table, &entry, &info, context)
    } else {
        epilog_by_descriptors(&entry, &info, context, module_base).map(Epilog::Descriptor)
    };
    if let Some(epilog) = epilog {
        let mut caller = *context;
        let machine_frame = match epilog {
            Epilog::Code(code) => {
                code.emulate(space, &mut caller)?;
                None
            }
            Epilog::Descriptor(offset) => {
                unwind_epilog_by_codes(space, module_base, entry, info, offset, &mut caller)?
            }
        };
        return Ok(Unwound {
            context: caller,
            machine_frame,
            in_epilog: true,
        });
    }

    let mut caller = *context;
    let machine_frame = unwind_prolog(space, module_base, entry, info, frame_base, &mut caller)?;
    Ok(Unwound {
        context: caller,
        machine_frame,
        in_epilog: false,
    })
}

/// The establisher frame: the base of the fixed stack allocation, against which save offsets
/// are counted. `Err` names the frame register when it is needed but unknown.
fn establisher_frame(
    info: &UnwindInfo,
    prolog_offset: u32,
    context: &Context,
) -> Result<u64, Register> {
    let Some(fp) = info.frame_register() else {
        return Ok(context.rsp);
    };
    let from_fp = || {
        context
            .get(fp)
            .map(|v| v.wrapping_sub(16 * u64::from(info.frame_offset)))
            .ok_or(fp)
    };
    if prolog_offset >= u32::from(info.size_of_prolog) || info.is_chained() {
        return from_fp();
    }
    // In the prolog: the frame register counts only once UWOP_SET_FPREG has executed.
    let set = info
        .codes
        .iter()
        .find(|c| c.op == UnwindOp::SetFpreg)
        .is_some_and(|c| prolog_offset >= u32::from(c.code_offset));
    if set {
        from_fp()
    } else {
        Ok(context.rsp)
    }
}

/// Undo the prolog codes at or before RIP's offset, through the chain, then pop the return
/// address unless a machine frame gave RIP and RSP.
fn unwind_prolog(
    space: &AddressSpace,
    module_base: u64,
    mut entry: RuntimeFunction,
    mut info: UnwindInfo,
    frame_base: Result<u64, Register>,
    ctx: &mut Context,
) -> Result<Option<MachineFrame>, UnwindError> {
    let mut machine_frame = None;
    let base = || frame_base.map_err(|register| UnwindError::RegisterUnknown { register });
    // Offsets in chained parents are counted from the RIP the unwind started at, even after
    // a machine frame replaced it, as the system does (it keeps ControlPc).
    let control_pc = ctx.rip;
    for _ in 0..=CHAIN_LIMIT {
        let prolog_offset = offset_in(control_pc, module_base, &entry);
        for code in &info.codes {
            if prolog_offset < u32::from(code.code_offset) {
                continue;
            }
            match code.op {
                UnwindOp::PushNonvol { reg } => {
                    let value = read_stack(space, ctx.rsp)?;
                    ctx.set(reg, value);
                    ctx.rsp = ctx.rsp.wrapping_add(8);
                }
                UnwindOp::AllocLarge { size, .. } | UnwindOp::AllocSmall { size } => {
                    ctx.rsp = ctx.rsp.wrapping_add(u64::from(size));
                }
                UnwindOp::SetFpreg => {
                    let fp = info.frame_register().ok_or(UnwindError::NoFrameRegister {
                        module_base,
                        rva: entry.unwind_info,
                    })?;
                    ctx.rsp = register(ctx, fp)?.wrapping_sub(16 * u64::from(info.frame_offset));
                }
                UnwindOp::SaveNonvol { reg, offset, .. } => {
                    let at = base()?.wrapping_add(u64::from(offset));
                    let value = read_stack(space, at)?;
                    ctx.set(reg, value);
                }
                // XMM registers are not tracked; reading them could only fail the walk.
                UnwindOp::SaveXmm128 { .. } | UnwindOp::Skipped { .. } => {}
                UnwindOp::PushMachframe { error_code } => {
                    let frame = MachineFrame {
                        at: ctx.rsp,
                        error_code,
                    };
                    let rip = read_stack(space, frame.rip_slot())?;
                    let rsp = read_stack(space, frame.rip_slot().wrapping_add(24))?;
                    ctx.rip = rip;
                    ctx.rsp = rsp;
                    machine_frame = Some(frame);
                }
            }
        }
        let Some(parent) = info.chained else {
            if machine_frame.is_none() {
                ctx.rip = read_stack(space, ctx.rsp)?;
                ctx.rsp = ctx.rsp.wrapping_add(8);
            }
            return Ok(machine_frame);
        };
        entry = parent;
        info = read_unwind_info(space, module_base, entry.unwind_info)?;
    }
    Err(UnwindError::ChainTooLong {
        module_base,
        rva: entry.unwind_info,
    })
}

enum Epilog {
    Code(CodeEpilog),
    /// Offset of RIP within a version 2 epilog.
    Descriptor(u32),
}

/// A version 1 epilog recognised in the code stream at RIP.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CodeEpilog {
    dealloc: Option<Dealloc>,
    pops: Vec<Register>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dealloc {
    /// `add rsp, imm8` / `add rsp, imm32`.
    Add(i32),
    /// `lea rsp, [fp + disp8]` / `lea rsp, [fp + disp32]`.
    Lea(Register, i32),
}

impl CodeEpilog {
    fn emulate(&self, space: &AddressSpace, ctx: &mut Context) -> Result<(), UnwindError> {
        match self.dealloc {
            Some(Dealloc::Add(n)) => ctx.rsp = ctx.rsp.wrapping_add_signed(i64::from(n)),
            Some(Dealloc::Lea(fp, n)) => {
                ctx.rsp = register(ctx, fp)?.wrapping_add_signed(i64::from(n));
            }
            None => {}
        }
        for &reg in &self.pops {
            let value = read_stack(space, ctx.rsp)?;
            ctx.set(reg, value);
            ctx.rsp = ctx.rsp.wrapping_add(8);
        }
        ctx.rip = read_stack(space, ctx.rsp)?;
        ctx.rsp = ctx.rsp.wrapping_add(8);
        Ok(())
    }
}

/// Match the code at RIP against the trailing part of a legitimate epilog. Unreadable code
/// bytes read as zeros (no epilog), as a debugger must not fail a walk over them.
fn epilog_by_code(
    space: &AddressSpace,
    table: &FunctionTable,
    entry: &RuntimeFunction,
    info: &UnwindInfo,
    ctx: &Context,
) -> Option<Epilog> {
    let mut code = [0u8; EPILOG_WINDOW];
    let got = space.read_partial(ctx.rip, &mut code);
    code[got..].fill(0);
    let b = |i: usize| code.get(i).copied().unwrap_or(0);
    let le32 = |i: usize| i32::from_le_bytes([b(i), b(i + 1), b(i + 2), b(i + 3)]);

    let mut i = 0usize;
    let mut dealloc = None;
    if b(0) == 0x48 && b(1) == 0x83 && b(2) == 0xc4 {
        dealloc = Some(Dealloc::Add(i32::from(b(3) as i8)));
        i = 4;
    } else if b(0) == 0x48 && b(1) == 0x81 && b(2) == 0xc4 {
        dealloc = Some(Dealloc::Add(le32(3)));
        i = 7;
    } else if b(0) & 0xfe == 0x48 && b(1) == 0x8d {
        // lea rsp, [fp + disp]: REX.W (+B for r8-r15), ModRM with reg = rsp.
        let fp = ((b(0) & 1) << 3) | (b(2) & 7);
        if fp != 0 && fp == info.frame_register {
            let fp = Register::from_number(fp);
            if b(2) & 0xf8 == 0x60 {
                dealloc = Some(Dealloc::Lea(fp, i32::from(b(3) as i8)));
                i = 4;
            } else if b(2) & 0xf8 == 0xa0 {
                dealloc = Some(Dealloc::Lea(fp, le32(3)));
                i = 7;
            }
        }
    }

    let mut pops = Vec::new();
    while i < EPILOG_WINDOW {
        if b(i) & 0xf8 == 0x58 {
            pops.push(Register::from_number(b(i) & 7));
            i += 1;
        } else if b(i) & 0xf0 == 0x40 && b(i + 1) & 0xf8 == 0x58 {
            pops.push(Register::from_number(((b(i) & 1) << 3) | (b(i + 1) & 7)));
            i += 2;
        } else {
            break;
        }
    }
    // A REPNE prefix may precede the control transfer.
    if b(i) == 0xf2 {
        i += 1;
    }

    let in_epilog = match b(i) {
        0xc3 | 0xc2 => true,
        0xf3 => b(i + 1) == 0xc3,
        0xeb | 0xe9 => {
            // A jump out of the function (or to its own start) is a tail call.
            let (len, disp) = if b(i) == 0xeb {
                (2u32, i32::from(b(i + 1) as i8))
            } else {
                (5u32, le32(i + 1))
            };
            let here = ctx.rip.wrapping_sub(table.module_base()) as u32;
            let target = here
                .wrapping_add(i as u32)
                .wrapping_add(len)
                .wrapping_add_signed(disp);
            if !entry.contains(target) {
                match same_function(space, table, entry, target) {
                    None => true,
                    Some(primary) => target == primary.begin,
                }
            } else {
                target == entry.begin && !info.is_chained()
            }
        }
        // jmp [rip + disp32]: a tail call through an import.
        0xff => b(i + 1) == 0x25,
        // REX.W jmp r/m64: the redundant REX.W marks a jump out of the function.
        x if x & 0xf8 == 0x48 => b(i + 1) == 0xff && b(i + 2) & 0x38 == 0x20,
        _ => false,
    };
    in_epilog.then_some(Epilog::Code(CodeEpilog { dealloc, pops }))
}

/// The primary entry of the function `entry` belongs to, following chains.
fn primary_entry(
    space: &AddressSpace,
    module_base: u64,
    mut entry: RuntimeFunction,
) -> Option<RuntimeFunction> {
    for _ in 0..=CHAIN_LIMIT {
        let info = read_unwind_info(space, module_base, entry.unwind_info).ok()?;
        match info.chained {
            Some(parent) => entry = parent,
            None => return Some(entry),
        }
    }
    None
}

/// If `target` lies in another entry of the same function as `entry`, that function's
/// primary entry.
fn same_function(
    space: &AddressSpace,
    table: &FunctionTable,
    entry: &RuntimeFunction,
    target: u32,
) -> Option<RuntimeFunction> {
    let base = table.module_base();
    let Lookup::Found(other) = table.lookup(target) else {
        return None;
    };
    let other = resolve_indirect(space, base, other).ok()?;
    let mine = primary_entry(space, base, *entry)?;
    let theirs = primary_entry(space, base, other)?;
    (mine == theirs).then_some(mine)
}

/// Version 2: is RIP within one of the listed epilogs? Returns its offset in the epilog.
fn epilog_by_descriptors(
    entry: &RuntimeFunction,
    info: &UnwindInfo,
    ctx: &Context,
    module_base: u64,
) -> Option<u32> {
    let epilogs = info.epilogs.as_ref()?;
    let size = u32::from(epilogs.size);
    let rip = ctx.rip.wrapping_sub(module_base) as u32;
    if epilogs.at_end {
        let start = entry.end.wrapping_sub(size);
        if rip.wrapping_sub(start) < size {
            return Some(rip.wrapping_sub(start));
        }
    }
    for &from_end in &epilogs.from_end {
        // A zero offset pads the list to an even number of slots.
        if from_end == 0 {
            break;
        }
        let start = entry.end.wrapping_sub(u32::from(from_end));
        if rip.wrapping_sub(start) < size {
            return Some(rip.wrapping_sub(start));
        }
    }
    None
}

/// Version 2 epilog emulation: the epilog mirrors the prolog's pushes, so replay the
/// `UWOP_PUSH_NONVOL` codes (one- or two-byte `pop`s) that RIP has not yet executed, an
/// `UWOP_ALLOC_SMALL` of 8 (a `pushfq`'s `pop`), then a machine frame or a return.
fn unwind_epilog_by_codes(
    space: &AddressSpace,
    module_base: u64,
    mut entry: RuntimeFunction,
    mut info: UnwindInfo,
    epilog_offset: u32,
    ctx: &mut Context,
) -> Result<Option<MachineFrame>, UnwindError> {
    // The pushes may sit in a chained parent; find the info holding the first one.
    let is_push = |op: &UnwindOp| {
        matches!(
            op,
            UnwindOp::PushNonvol { .. } | UnwindOp::PushMachframe { .. }
        )
    };
    let mut chain = 0usize;
    let first = loop {
        if let Some(i) = info.codes.iter().position(|c| is_push(&c.op)) {
            break Some(i);
        }
        let Some(parent) = info.chained else {
            break None;
        };
        chain += 1;
        if chain > CHAIN_LIMIT {
            return Err(UnwindError::ChainTooLong {
                module_base,
                rva: entry.unwind_info,
            });
        }
        entry = parent;
        info = read_unwind_info(space, module_base, entry.unwind_info)?;
    };
    let rest = first.map_or(&[][..], |i| &info.codes[i..]);

    let mut current = 0u32;
    let mut i = 0usize;
    while let Some(UnwindOp::PushNonvol { reg }) = rest.get(i).map(|c| c.op) {
        if current >= epilog_offset {
            let value = read_stack(space, ctx.rsp)?;
            ctx.set(reg, value);
            ctx.rsp = ctx.rsp.wrapping_add(8);
        }
        // pop r64 is one byte, two with the REX prefix for r8-r15.
        current += if reg.number() >= 8 { 2 } else { 1 };
        i += 1;
    }
    if let Some(UnwindOp::AllocSmall { size: 8 }) = rest.get(i).map(|c| c.op) {
        if current >= epilog_offset {
            ctx.rsp = ctx.rsp.wrapping_add(8);
        }
        i += 1;
    }
    if let Some(UnwindOp::PushMachframe { .. }) = rest.get(i).map(|c| c.op) {
        // An epilog ending in iretq: the error code, if any, is already gone.
        let frame = MachineFrame {
            at: ctx.rsp,
            error_code: false,
        };
        ctx.rip = read_stack(space, ctx.rsp)?;
        ctx.rsp = read_stack(space, ctx.rsp.wrapping_add(24))?;
        return Ok(Some(frame));
    }
    ctx.rip = read_stack(space, ctx.rsp)?;
    ctx.rsp = ctx.rsp.wrapping_add(8);
    Ok(None)
}
