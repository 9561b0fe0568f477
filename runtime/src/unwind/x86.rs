//! x86 (32-bit) stack walking: the EBP chain, FPO frames and trap-frame transitions, with what
//! WinDbg's `k` prints for each frame (`ChildEBP`, `RetAddr`, `(FPO: [...])`,
//! `TrapFrame @ ...`).
//!
//! - An EBP frame: `[ebp]` is the caller's EBP, `[ebp+4]` the return address; the ChildEBP
//!   column is EBP.
//! - An FPO frame (the module's symbols give an FPO/FrameData record for the IP): the frame
//!   size is known, so the return address sits at `esp + locals + saved registers`; when the
//!   function uses EBP as a general register (`fUseBP`), the caller's EBP was saved last, at
//!   `esp + locals`. The ChildEBP column is the slot below the return address (where an EBP
//!   frame would have kept EBP).
//! - A FrameData frame (the record has a program string): the program, run by
//!   [`super::x86_program`], gives the caller's EIP, ESP and EBP; the return address was in the
//!   slot below the ESP it gives. The caller's ESP then skips the record's parameters, as for an
//!   FPO frame. WinDbg prints no `(FPO: ...)` annotation for these frames.
//! - A trap-frame transition: a frame whose IP is in a system-call or interrupt entry
//!   (`KiFastCallEntry`, `KiSystemService`, `KiTrap*`, as told by [`X86FrameInfo`]) sets EBP to
//!   the `_KTRAP_FRAME` it built; the next frame is the interrupted code, from the trap frame's
//!   `Eip`, `Ebp` and `HardwareEsp` (when it came from user mode; else the kernel ESP is just
//!   past the trap frame's hardware part).
//!
//! - A frame that resumes at a return (`ret`, `ret imm16`: the instruction at its IP) while
//!   ESP is exactly known (the start registers, a trap frame's, or after another such frame)
//!   has nothing left on its stack but the return address at ESP: the ChildEBP column is the
//!   slot below it, as for an FPO frame. This is how a system call returns to user mode: the
//!   trap frame resumes at `ntdll!KiFastSystemCallRet` (`ret`) with `HardwareEsp` at the
//!   return into the `Nt*` stub, which resumes at `ret imm16`; neither keeps an EBP frame,
//!   and the trap frame's `Ebp` belongs to the stub's caller (WinDbg reads the same from
//!   ntdll's FPO records).
//!
//! Every stack read goes through the [`AddressSpace`] and is 4 bytes wide. Return-address slots must
//! go up, stay 4-aligned and (when the stack bounds are known) inside the stack; a trap frame
//! into user mode leaves the kernel stack, and the bounds with it. The walk stops with a reason
//! at the first failure, at a zero return address or at the frame limit; it never loops.
//!
//! ```
//! use kds_runtime::mmu::{AddressSpace, X86_PAE};
//! use kds_runtime::target::MemoryTarget;
//! use kds_runtime::unwind::x86::{walk_x86, NoFrameInfo, X86Registers, X86WalkEnd, X86WalkOptions};
//! use std::sync::Arc;
//!
//! // A PAE space with one 2 MiB kernel page at 0x8240_0000 (PDPTE 2 -> PD -> large PDE).
//! let m = MemoryTarget::x64(1);
//! m.write_physical(0x1000 + 2 * 8, &(0x2000u64 | 1).to_le_bytes());
//! m.write_physical(0x2000 + 0x12 * 8, &(0x0060_0000u64 | 0x83).to_le_bytes());
//! let phys = |va: u64| va - 0x8240_0000 + 0x0060_0000;
//! let ebp = 0x8240_1000u64;
//! m.write_physical(phys(ebp), &0u32.to_le_bytes()); // no caller frame
//! m.write_physical(phys(ebp + 4), &0x8280_1234u32.to_le_bytes());
//! let space = AddressSpace::new(Arc::new(m), &X86_PAE, 0x1000);
//! let start = X86Registers { eip: 0x8280_0010, esp: ebp - 0x10, ebp };
//! let walked = walk_x86(&space, &NoFrameInfo, start, &X86WalkOptions::default());
//! assert_eq!(walked.frames[0].child_ebp, ebp);
//! assert_eq!(walked.frames[0].return_address, Some(0x8280_1234));
//! assert_eq!(walked.end, X86WalkEnd::ReachedZero);
//! ```

use super::x86_program::{run_program, FrameProgram, ProgramError, ProgramRegisters};
use crate::mmu::AddressSpace;
use std::fmt;
use std::ops::Range;

/// Most frames walked unless the options say otherwise.
pub const DEFAULT_FRAME_LIMIT: usize = 256;

/// The registers an x86 walk needs: where control is, the stack pointer and the frame
/// pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct X86Registers {
    pub eip: u64,
    pub esp: u64,
    pub ebp: u64,
}

impl From<&crate::target::X86Context> for X86Registers {
    fn from(c: &crate::target::X86Context) -> X86Registers {
        X86Registers {
            eip: u64::from(c.eip),
            esp: u64::from(c.esp),
            ebp: u64::from(c.ebp),
        }
    }
}

/// What kind of frame an FPO/FrameData record describes (`FPO_DATA.cbFrame`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FpoKind {
    /// `FRAME_FPO`: no frame pointer; the frame size is in the record.
    Fpo,
    /// `FRAME_TRAP`: a trap frame.
    Trap,
    /// `FRAME_TSS`: a task switch.
    Tss,
    /// `FRAME_NONFPO`: a normal EBP frame (WinDbg's `(FPO: [Non-Fpo])`).
    NonFpo,
}

/// One function's frame description, from the module's FPO (`FPO_DATA`) or FrameData
/// records. Sizes are in bytes (`FPO_DATA` counts locals and parameters in dwords and saved
/// registers one by one; four bytes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Fpo {
    pub kind: FpoKind,
    pub locals_size: u32,
    pub params_size: u32,
    pub saved_regs_size: u32,
    pub prolog_size: u32,
    /// `fUseBP`: the function uses EBP as a general register and saved the caller's, last
    /// of its saved registers.
    pub uses_base_pointer: bool,
}

impl Fpo {
    /// An `FPO_DATA` record's fields as the PE/PDB stores them.
    #[must_use]
    pub fn from_fpo_data(
        cdw_locals: u32,
        cdw_params: u16,
        cb_prolog: u8,
        cb_regs: u8,
        uses_bp: bool,
        cb_frame: u8,
    ) -> Fpo {
        Fpo {
            kind: match cb_frame {
                0 => FpoKind::Fpo,
                1 => FpoKind::Trap,
                2 => FpoKind::Tss,
                _ => FpoKind::NonFpo,
            },
            locals_size: cdw_locals.saturating_mul(4),
            params_size: u32::from(cdw_params) * 4,
            saved_regs_size: u32::from(cb_regs) * 4,
            prolog_size: u32::from(cb_prolog),
            uses_base_pointer: uses_bp,
        }
    }

    /// WinDbg's `kv` annotation: `FPO: [params,locals,regs]` (`FPO: [Uses EBP] [...]` when
    /// the function keeps EBP as a general register, as `KiSwapContext` does),
    /// `FPO: [Non-Fpo]`, or for a trap frame `FPO: [params,locals]`.
    #[must_use]
    pub fn annotation(&self) -> String {
        match self.kind {
            FpoKind::NonFpo => "FPO: [Non-Fpo]".to_string(),
            FpoKind::Trap | FpoKind::Tss => {
                format!("FPO: [{},{}]", self.params_size / 4, self.locals_size / 4)
            }
            FpoKind::Fpo => format!(
                "FPO: {}[{},{},{}]",
                if self.uses_base_pointer {
                    "[Uses EBP] "
                } else {
                    ""
                },
                self.params_size / 4,
                self.locals_size / 4,
                self.saved_regs_size / 4
            ),
        }
    }
}

/// What the walk asks of the modules and their symbols.
pub trait X86FrameInfo {
    /// The FPO record covering `ip`, if the module's symbols have one.
    fn fpo(&self, ip: u64) -> Option<Fpo>;
    /// The FrameData record covering `ip`, when it has a program string: the walk runs the
    /// program for that frame, before looking at [`X86FrameInfo::fpo`].
    fn frame_program(&self, _ip: u64) -> Option<FrameProgram> {
        None
    }
    /// Whether `ip` is in a kernel system-call or interrupt entry (`KiFastCallEntry`,
    /// `KiSystemService`, `KiTrap*`), whose EBP addresses a `_KTRAP_FRAME`.
    fn is_trap_entry(&self, ip: u64) -> bool;
}

/// No symbols: EBP frames only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFrameInfo;

impl X86FrameInfo for NoFrameInfo {
    fn fpo(&self, _ip: u64) -> Option<Fpo> {
        None
    }
    fn is_trap_entry(&self, _ip: u64) -> bool {
        false
    }
}

/// Offsets in `_KTRAP_FRAME`, from the symbol table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrapFrameLayout {
    pub eip: u64,
    pub ebp: u64,
    pub hardware_esp: u64,
    /// `SegCs`: its low two bits tell user mode (3) from kernel mode (0).
    pub seg_cs: u64,
}

/// Where and how far to walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X86WalkOptions {
    /// The kernel stack (`StackLimit..InitialStack`), when known; frames outside it stop the
    /// walk until a trap frame leaves it.
    pub stack: Option<Range<u64>>,
    pub limit: usize,
    /// `_KTRAP_FRAME` offsets; without them trap entries are walked as ordinary frames.
    pub trap_frame: Option<TrapFrameLayout>,
    /// The thread's `_KTHREAD.TrapFrame`, used when a trap entry's EBP does not address a
    /// readable trap frame.
    pub thread_trap_frame: Option<u64>,
    /// Where user space ends (`MmSystemRangeStart`). A frame pointer below it, reached from
    /// the kernel stack (bounded or not: a running thread's walk has no bounds), leaves that
    /// stack for the user one (the `DbgEbp`/`DbgEip` slots a trap frame starts with continue
    /// the EBP chain into user mode when no symbol names the entry): the stack bounds and
    /// the progress check start over.
    pub user_end: Option<u64>,
}

impl Default for X86WalkOptions {
    fn default() -> X86WalkOptions {
        X86WalkOptions {
            stack: None,
            limit: DEFAULT_FRAME_LIMIT,
            trap_frame: None,
            thread_trap_frame: None,
            user_end: None,
        }
    }
}

/// One frame, as a line of WinDbg's x86 `k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X86Frame {
    /// The ChildEBP column: EBP of an EBP frame, the slot below the return address of an FPO
    /// frame, the trap frame of a trap entry. `Args to Child` are at `child_ebp + 8`.
    pub child_ebp: u64,
    /// Where control is in this frame (the start EIP, a return address, or a trap frame's
    /// EIP).
    pub ip: u64,
    /// The RetAddr column, when this frame could be unwound.
    pub return_address: Option<u64>,
    /// The FPO record used, for the `(FPO: ...)` annotation.
    pub fpo: Option<Fpo>,
    /// The FrameData program that unwound this frame.
    pub program: Option<String>,
    /// The `_KTRAP_FRAME` this frame was left through.
    pub trap_frame: Option<u64>,
    /// Registers in this frame.
    pub registers: X86Registers,
}

/// Why an x86 walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum X86WalkEnd {
    /// The last frame returns to address 0 (or has a zero frame pointer): the bottom.
    ReachedZero,
    /// A stack read failed at `address`.
    StackNotReadable { address: u64 },
    /// The frame at `frame` is not above the previous one: a loop or a corrupt chain.
    NotProgressing { frame: u64 },
    /// The frame pointer `frame` is not 4-aligned.
    Misaligned { frame: u64 },
    /// The frame at `frame` is outside the stack `limit..base`.
    OutsideStack { frame: u64, limit: u64, base: u64 },
    /// `limit` frames were walked.
    FrameLimit,
    /// The FrameData program of the frame at `ip` failed.
    BadFrameProgram { ip: u64, error: ProgramError },
}

impl fmt::Display for X86WalkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            X86WalkEnd::ReachedZero => write!(f, "reached a zero return address"),
            X86WalkEnd::StackNotReadable { address } => {
                write!(f, "cannot read the stack at {address:08x}")
            }
            X86WalkEnd::NotProgressing { frame } => write!(
                f,
                "the frame at {frame:08x} is not above the previous one: the chain loops or goes back"
            ),
            X86WalkEnd::Misaligned { frame } => {
                write!(f, "the frame pointer {frame:08x} is not 4-aligned")
            }
            X86WalkEnd::OutsideStack { frame, limit, base } => write!(
                f,
                "the frame at {frame:08x} is outside the stack {limit:08x}..{base:08x}"
            ),
            X86WalkEnd::FrameLimit => write!(f, "frame limit reached"),
            X86WalkEnd::BadFrameProgram { ip, error } => write!(f, "at {ip:08x}: {error}"),
        }
    }
}

/// Frames from the innermost out, and why the walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct X86StackWalk {
    pub frames: Vec<X86Frame>,
    pub end: X86WalkEnd,
}

fn read(space: &AddressSpace, at: u64) -> Result<u64, X86WalkEnd> {
    space
        .read_u32(at)
        .map(u64::from)
        .map_err(|_| X86WalkEnd::StackNotReadable { address: at })
}

/// The caller's registers and where this frame's return address was.
struct Unwound {
    caller: X86Registers,
    child_ebp: u64,
    trap_frame: Option<u64>,
    /// A trap frame into user mode: the kernel stack is left.
    to_user: bool,
    /// The caller's IP is an interrupted instruction, not a return address.
    exact_ip: bool,
    /// The slot the return address came from (for the progress check); `None` across a
    /// trap frame, which may switch stacks.
    ret_slot: Option<u64>,
    /// The caller's ESP is exact (a trap frame's, or past a return and its popped
    /// arguments), not an EBP frame's guess that ignores the arguments a callee popped.
    exact_esp: bool,
}

/// Walk the stack from `start`.
pub fn walk_x86(
    space: &AddressSpace,
    info: &dyn X86FrameInfo,
    start: X86Registers,
    options: &X86WalkOptions,
) -> X86StackWalk {
    let mut frames = Vec::new();
    let mut ctx = start;
    let mut stack = options.stack.clone();
    let mut last_slot: Option<u64> = None;
    let mut exact_ip = true;
    let mut exact_esp = true;
    let end = loop {
        if frames.len() >= options.limit {
            break X86WalkEnd::FrameLimit;
        }
        let lookup_ip = if exact_ip {
            ctx.eip
        } else {
            ctx.eip.wrapping_sub(1)
        };
        let program = info.frame_program(lookup_ip);
        let fpo = if program.is_some() {
            None
        } else {
            info.fpo(lookup_ip)
        };
        if let Some(user_end) = options.user_end {
            let at = match fpo {
                Some(f) if f.kind == FpoKind::Fpo => ctx.esp,
                _ if program.is_some() => ctx.esp,
                _ => ctx.ebp,
            };
            // On the kernel stack until now: its bounds say so, or (a running thread's walk,
            // unbounded) the last return slot does.
            let from_kernel = match &stack {
                Some(kernel) => kernel.start >= user_end,
                None => last_slot.is_some_and(|slot| slot >= user_end),
            };
            if at != 0 && at < user_end && from_kernel {
                stack = None;
                last_slot = None;
            }
        }
        let mut frame = X86Frame {
            child_ebp: ctx.ebp,
            ip: ctx.eip,
            return_address: None,
            fpo,
            program: program.as_ref().map(|p| p.program.clone()),
            trap_frame: None,
            registers: ctx,
        };
        // The frame must lie on the stack, above the previous one: checked before reading.
        let check = |slot: u64| check_slot(slot, last_slot, stack.as_ref());
        let how = FrameHow {
            fpo,
            program: program.as_ref(),
            lookup_ip,
        };
        let described = fpo.is_some() || program.is_some();
        let unwound = match frameless_return(space, &ctx, described, exact_esp, &check)
            .unwrap_or_else(|| unwind_one(space, info, options, &ctx, &how, &check))
        {
            Ok(u) => u,
            Err(end) => {
                frames.push(frame);
                break end;
            }
        };
        frame.child_ebp = unwound.child_ebp;
        frame.trap_frame = unwound.trap_frame;
        frame.return_address = Some(unwound.caller.eip);
        frames.push(frame);
        if unwound.caller.eip == 0 {
            break X86WalkEnd::ReachedZero;
        }
        if unwound.ret_slot.is_some() {
            last_slot = unwound.ret_slot;
        } else if unwound.to_user {
            // A new stack: nothing below bounds it.
            last_slot = None;
            stack = None;
        }
        exact_ip = unwound.exact_ip;
        exact_esp = unwound.exact_esp;
        ctx = unwound.caller;
    };
    X86StackWalk { frames, end }
}

fn check_slot(slot: u64, last: Option<u64>, stack: Option<&Range<u64>>) -> Result<(), X86WalkEnd> {
    let frame = slot.wrapping_sub(4);
    if slot % 4 != 0 {
        return Err(X86WalkEnd::Misaligned { frame });
    }
    if let Some(s) = stack {
        // The return slot and the three argument slots WinDbg shows need not all be on
        // the stack; the frame itself must.
        if frame < s.start || slot.saturating_add(4) > s.end {
            return Err(X86WalkEnd::OutsideStack {
                frame,
                limit: s.start,
                base: s.end,
            });
        }
    }
    if last.is_some_and(|last| slot <= last) {
        return Err(X86WalkEnd::NotProgressing { frame });
    }
    Ok(())
}

/// What the symbols say about one frame.
struct FrameHow<'p> {
    fpo: Option<Fpo>,
    program: Option<&'p FrameProgram>,
    /// The IP the records were looked up at (a return address minus one).
    lookup_ip: u64,
}

fn unwind_one(
    space: &AddressSpace,
    info: &dyn X86FrameInfo,
    options: &X86WalkOptions,
    ctx: &X86Registers,
    how: &FrameHow<'_>,
    check: &dyn Fn(u64) -> Result<(), X86WalkEnd>,
) -> Result<Unwound, X86WalkEnd> {
    if let Some(layout) = options.trap_frame {
        if info.is_trap_entry(how.lookup_ip) {
            if let Some(u) = through_trap_frame(space, layout, ctx.ebp, options.thread_trap_frame) {
                return Ok(u);
            }
        }
    }
    if let Some(program) = how.program {
        return through_program(space, ctx, program, how.lookup_ip, check);
    }
    match how.fpo {
        Some(f) if f.kind == FpoKind::Fpo => {
            let ret_slot = ctx
                .esp
                .wrapping_add(u64::from(f.locals_size))
                .wrapping_add(u64::from(f.saved_regs_size));
            check(ret_slot)?;
            let eip = read(space, ret_slot)?;
            let ebp = if f.uses_base_pointer {
                read(space, ctx.esp.wrapping_add(u64::from(f.locals_size)))?
            } else {
                ctx.ebp
            };
            // The caller pushed the arguments before the call: its ESP is above them.
            Ok(Unwound {
                caller: X86Registers {
                    eip,
                    esp: ret_slot
                        .wrapping_add(4)
                        .wrapping_add(u64::from(f.params_size)),
                    ebp,
                },
                child_ebp: ret_slot.wrapping_sub(4),
                trap_frame: None,
                to_user: false,
                exact_ip: false,
                ret_slot: Some(ret_slot),
                exact_esp: false,
            })
        }
        _ => {
            // An EBP frame.
            if ctx.ebp == 0 {
                return Err(X86WalkEnd::ReachedZero);
            }
            if ctx.ebp % 4 != 0 {
                return Err(X86WalkEnd::Misaligned { frame: ctx.ebp });
            }
            let ret_slot = ctx.ebp.wrapping_add(4);
            check(ret_slot)?;
            let eip = read(space, ret_slot)?;
            let ebp = read(space, ctx.ebp)?;
            Ok(Unwound {
                caller: X86Registers {
                    eip,
                    esp: ctx.ebp.wrapping_add(8),
                    ebp,
                },
                child_ebp: ctx.ebp,
                trap_frame: None,
                to_user: false,
                exact_ip: false,
                ret_slot: Some(ret_slot),
                exact_esp: false,
            })
        }
    }
}

/// The low 32 bits: x86 registers and addresses are 32-bit values kept in `u64`.
fn low32(value: u64) -> u32 {
    (value & 0xFFFF_FFFF) as u32
}

/// A FrameData frame: its program gives the caller's registers. The return address was read
/// from the slot below the ESP the program gives (every program that sets `$eip` from `$T0` and
/// `$esp` to `$T0 + 4` says so); the caller's ESP skips the record's parameters, as for FPO.
fn through_program(
    space: &AddressSpace,
    ctx: &X86Registers,
    program: &FrameProgram,
    lookup_ip: u64,
    check: &dyn Fn(u64) -> Result<(), X86WalkEnd>,
) -> Result<Unwound, X86WalkEnd> {
    let start = ProgramRegisters {
        eip: low32(ctx.eip),
        esp: low32(ctx.esp),
        ebp: low32(ctx.ebp),
    };
    let read = |at: u32| space.read_u32(u64::from(at)).ok();
    let out =
        run_program(&program.program, start, program.sizes, &read).map_err(
            |error| match error {
                ProgramError::UnreadableMemory { address } => X86WalkEnd::StackNotReadable {
                    address: u64::from(address),
                },
                error => X86WalkEnd::BadFrameProgram {
                    ip: lookup_ip,
                    error,
                },
            },
        )?;
    let ret_slot = u64::from(out.esp.wrapping_sub(4));
    check(ret_slot)?;
    Ok(Unwound {
        caller: X86Registers {
            eip: u64::from(out.eip),
            esp: u64::from(out.esp.wrapping_add(program.sizes.params)),
            ebp: u64::from(out.ebp),
        },
        child_ebp: ret_slot.wrapping_sub(4),
        trap_frame: None,
        to_user: false,
        exact_ip: false,
        ret_slot: Some(ret_slot),
        exact_esp: false,
    })
}

/// `ret` (0xC3) or `ret imm16` (0xC2): the bytes of arguments the return pops after the
/// return address, if the instruction at `ip` is one.
fn return_at(space: &AddressSpace, ip: u64) -> Option<u64> {
    let mut opcode = [0u8; 1];
    space.read(ip, &mut opcode).ok()?;
    match opcode[0] {
        0xC3 => Some(0),
        0xC2 => {
            let mut imm = [0u8; 2];
            space.read(ip.wrapping_add(1), &mut imm).ok()?;
            Some(u64::from(u16::from_le_bytes(imm)))
        }
        _ => None,
    }
}

/// A frame with no FPO or FrameData record that resumes at a return while ESP is exact: the return address
/// is at ESP, EBP is the caller's. `None` when the rule does not apply (the code is not
/// readable, or is no return).
fn frameless_return(
    space: &AddressSpace,
    ctx: &X86Registers,
    described: bool,
    exact_esp: bool,
    check: &dyn Fn(u64) -> Result<(), X86WalkEnd>,
) -> Option<Result<Unwound, X86WalkEnd>> {
    if described || !exact_esp || ctx.esp == 0 {
        return None;
    }
    let popped = return_at(space, ctx.eip)?;
    let ret_slot = ctx.esp;
    Some(check(ret_slot).and_then(|()| {
        Ok(Unwound {
            caller: X86Registers {
                eip: read(space, ret_slot)?,
                esp: ret_slot.wrapping_add(4).wrapping_add(popped),
                ebp: ctx.ebp,
            },
            child_ebp: ret_slot.wrapping_sub(4),
            trap_frame: None,
            to_user: false,
            exact_ip: false,
            ret_slot: Some(ret_slot),
            exact_esp: true,
        })
    }))
}

/// The interrupted context saved in the trap frame at `ebp` (or the thread's).
fn through_trap_frame(
    space: &AddressSpace,
    layout: TrapFrameLayout,
    ebp: u64,
    thread_trap_frame: Option<u64>,
) -> Option<Unwound> {
    let candidates = [Some(ebp).filter(|e| *e != 0), thread_trap_frame];
    candidates.into_iter().flatten().find_map(|tf| {
        let r = |off: u64| read(space, tf.wrapping_add(off)).ok();
        let eip = r(layout.eip).filter(|e| *e != 0)?;
        let cs = r(layout.seg_cs)?;
        let to_user = cs & 3 == 3;
        let esp = if to_user {
            r(layout.hardware_esp)?
        } else {
            // No stack switch: the CPU pushed nothing past EFLAGS.
            tf.wrapping_add(layout.hardware_esp)
        };
        Some(Unwound {
            caller: X86Registers {
                eip,
                esp,
                ebp: r(layout.ebp)?,
            },
            child_ebp: tf,
            trap_frame: Some(tf),
            to_user,
            exact_ip: true,
            ret_slot: None,
            exact_esp: true,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmu::X86_PAE;
    use crate::target::MemoryTarget;
    use std::sync::Arc;

    /// Kernel stack page: 2 MiB at 0x8240_0000; user page: 2 MiB at 0x0040_0000.
    const KSTACK: u64 = 0x8240_0000;
    const USTACK: u64 = 0x0040_0000;
    const STACK: Range<u64> = 0x8240_0000..0x8240_3000;

    struct Machine(Arc<MemoryTarget>);

    impl Machine {
        fn new() -> Machine {
            let m = MemoryTarget::x64(1);
            let e = |at: u64, v: u64| m.write_physical(at, &v.to_le_bytes());
            // PDPT at 0x1000: PDPTE 0 -> PD 0x3000, PDPTE 2 -> PD 0x2000.
            e(0x1000, 0x3000 | 1);
            e(0x1000 + 2 * 8, 0x2000 | 1);
            // Kernel 0x8240_0000: PD index 0x12, large, present|writable.
            e(0x2000 + 0x12 * 8, 0x0060_0000 | 0x83);
            // User 0x0040_0000: PD index 2, large, present|writable|user.
            e(0x3000 + 2 * 8, 0x0080_0000 | 0x87);
            Machine(Arc::new(m))
        }

        fn put(&self, va: u64, value: u64) {
            let pa = if va >= KSTACK {
                va - KSTACK + 0x0060_0000
            } else {
                va - USTACK + 0x0080_0000
            };
            let v = u32::try_from(value).expect("32-bit value");
            self.0.write_physical(pa, &v.to_le_bytes());
        }

        fn space(&self) -> AddressSpace {
            AddressSpace::new(self.0.clone(), &X86_PAE, 0x1000)
        }
    }

    #[derive(Default)]
    struct Info {
        fpo: Vec<(Range<u64>, Fpo)>,
        programs: Vec<(Range<u64>, FrameProgram)>,
        traps: Vec<Range<u64>>,
    }

    impl X86FrameInfo for Info {
        fn fpo(&self, ip: u64) -> Option<Fpo> {
            self.fpo
                .iter()
                .find(|(r, _)| r.contains(&ip))
                .map(|(_, f)| *f)
        }
        fn frame_program(&self, ip: u64) -> Option<FrameProgram> {
            self.programs
                .iter()
                .find(|(r, _)| r.contains(&ip))
                .map(|(_, p)| p.clone())
        }
        fn is_trap_entry(&self, ip: u64) -> bool {
            self.traps.iter().any(|r| r.contains(&ip))
        }
    }

    fn bounded() -> X86WalkOptions {
        X86WalkOptions {
            stack: Some(STACK),
            ..X86WalkOptions::default()
        }
    }

    const E: [u64; 4] = [0x8240_1000, 0x8240_1040, 0x8240_1100, 0x8240_1200];
    const R: [u64; 3] = [0x8280_1111, 0x8280_2222, 0x8280_3333];
    const START: X86Registers = X86Registers {
        eip: 0x8280_0010,
        esp: 0x8240_0FF0,
        ebp: 0x8240_1000,
    };

    /// Four EBP frames: frame i at E[i] returns to R[i]; the last returns to 0. Args to
    /// Child are 0xA000_0000 + frame * 0x10 + arg.
    fn chain() -> Machine {
        let m = Machine::new();
        for i in 0..4 {
            m.put(E[i], if i < 3 { E[i + 1] } else { 0 });
            m.put(E[i] + 4, if i < 3 { R[i] } else { 0 });
            for a in 0..3 {
                m.put(E[i] + 8 + 4 * a, 0xA000_0000 + 0x10 * i as u64 + a);
            }
        }
        m
    }

    #[test]
    fn a_four_frame_ebp_chain_gives_childebp_retaddr_and_args() {
        let space = chain().space();
        let w = walk_x86(&space, &NoFrameInfo, START, &bounded());
        assert_eq!(w.end, X86WalkEnd::ReachedZero);
        let rows: Vec<(u64, u64, Option<u64>)> = w
            .frames
            .iter()
            .map(|f| (f.child_ebp, f.ip, f.return_address))
            .collect();
        assert_eq!(
            rows,
            vec![
                (E[0], START.eip, Some(R[0])),
                (E[1], R[0], Some(R[1])),
                (E[2], R[1], Some(R[2])),
                (E[3], R[2], Some(0)),
            ]
        );
        // Args to Child of frame 2, as `kb` reads them.
        let args: Vec<u64> = (0..3)
            .map(|a| u64::from(space.read_u32(w.frames[2].child_ebp + 8 + 4 * a).unwrap()))
            .collect();
        assert_eq!(args, vec![0xA000_0020, 0xA000_0021, 0xA000_0022]);
        assert!(w
            .frames
            .iter()
            .all(|f| f.fpo.is_none() && f.trap_frame.is_none()));
    }

    #[test]
    fn the_frame_limit_stops_the_walk() {
        let space = chain().space();
        let options = X86WalkOptions {
            limit: 2,
            ..bounded()
        };
        let w = walk_x86(&space, &NoFrameInfo, START, &options);
        assert_eq!(w.frames.len(), 2);
        assert_eq!(w.end, X86WalkEnd::FrameLimit);
    }

    #[test]
    fn a_chain_that_loops_or_goes_back_stops_with_a_reason() {
        // Frame 2 points back at frame 1: a loop.
        let m = chain();
        m.put(E[2], E[1]);
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &bounded());
        assert_eq!(w.end, X86WalkEnd::NotProgressing { frame: E[1] });
        assert_eq!(w.frames.len(), 4);
        assert_eq!(w.frames[3].return_address, None);

        // A frame pointing at itself.
        let m = chain();
        m.put(E[0], E[0]);
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &bounded());
        assert_eq!(w.end, X86WalkEnd::NotProgressing { frame: E[0] });
        assert_eq!(w.frames.len(), 2);

        // Backwards, and without stack bounds.
        let m = chain();
        m.put(E[1], E[0] - 0x100);
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &X86WalkOptions::default());
        assert_eq!(
            w.end,
            X86WalkEnd::NotProgressing {
                frame: E[0] - 0x100
            }
        );
        assert!(w.end.to_string().contains("82400f00"), "{}", w.end);
    }

    #[test]
    fn a_chain_that_leaves_the_stack_or_memory_or_alignment_stops_with_a_reason() {
        let m = chain();
        m.put(E[1], 0x8250_0000);
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &bounded());
        assert_eq!(
            w.end,
            X86WalkEnd::OutsideStack {
                frame: 0x8250_0000,
                limit: STACK.start,
                base: STACK.end
            }
        );
        assert_eq!(w.frames.len(), 3);

        // Without bounds: the read at an unmapped page fails.
        let m = chain();
        m.put(E[1], 0x8300_0000);
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &X86WalkOptions::default());
        assert_eq!(
            w.end,
            X86WalkEnd::StackNotReadable {
                address: 0x8300_0004
            }
        );
        assert_eq!(w.frames.len(), 3);
        assert_eq!(w.frames[2].ip, R[1]);
        assert_eq!(w.frames[2].return_address, None);

        let m = chain();
        m.put(E[0], E[1] + 2);
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &bounded());
        assert_eq!(w.end, X86WalkEnd::Misaligned { frame: E[1] + 2 });
    }

    #[test]
    fn an_fpo_frame_in_the_middle_is_unwound_by_its_sizes() {
        // Frame 0 (EBP frame at E0) returns into F, an FPO function with 2 dwords of locals
        // and 2 saved registers that does not touch EBP; F returns into G at E[2].
        let f = 0x8290_0000..0x8290_0100;
        let m = Machine::new();
        m.put(E[0], E[2]);
        m.put(E[0] + 4, f.start + 0x20);
        let esp_f = E[0] + 8;
        let ret_slot = esp_f + 8 + 8;
        m.put(ret_slot, R[1]);
        m.put(E[2], 0);
        m.put(E[2] + 4, 0);
        let fpo = Fpo::from_fpo_data(2, 3, 5, 2, false, 0);
        assert_eq!(fpo.annotation(), "FPO: [3,2,2]");
        assert_eq!(
            Fpo::from_fpo_data(0, 0, 0, 4, true, 0).annotation(),
            "FPO: [Uses EBP] [0,0,4]"
        );
        let info = Info {
            fpo: vec![(f.clone(), fpo)],
            ..Info::default()
        };
        let w = walk_x86(&m.space(), &info, START, &bounded());
        assert_eq!(w.end, X86WalkEnd::ReachedZero);
        let rows: Vec<(u64, u64, Option<u64>, bool)> = w
            .frames
            .iter()
            .map(|f| (f.child_ebp, f.ip, f.return_address, f.fpo.is_some()))
            .collect();
        assert_eq!(
            rows,
            vec![
                (E[0], START.eip, Some(f.start + 0x20), false),
                (ret_slot - 4, f.start + 0x20, Some(R[1]), true),
                (E[2], R[1], Some(0), false),
            ]
        );

        // The same function using EBP: the caller's EBP was saved last, just above the locals.
        let m = Machine::new();
        m.put(E[0], 0xDEAD_BEEC);
        m.put(E[0] + 4, f.start + 0x20);
        m.put(esp_f + 8, E[2]);
        m.put(ret_slot, R[1]);
        m.put(E[2], 0);
        m.put(E[2] + 4, 0);
        let info = Info {
            fpo: vec![(f.clone(), Fpo::from_fpo_data(2, 0, 0, 2, true, 0))],
            ..Info::default()
        };
        let w = walk_x86(&m.space(), &info, START, &bounded());
        assert_eq!(w.end, X86WalkEnd::ReachedZero);
        assert_eq!(w.frames.len(), 3);
        assert_eq!(w.frames[2].child_ebp, E[2]);
        // A Non-FPO record is an EBP frame.
        assert_eq!(
            Fpo::from_fpo_data(0, 0, 0, 0, false, 3).annotation(),
            "FPO: [Non-Fpo]"
        );
    }

    /// A FrameData record as clang writes it for a function that saved EBP and EBX and keeps
    /// `locals` bytes of locals.
    fn clang_program(locals: u32, params: u32) -> FrameProgram {
        FrameProgram {
            sizes: super::super::x86_program::FrameSizes {
                locals,
                params,
                saved_regs: 8,
            },
            prolog_size: 0,
            max_stack_size: Some(0),
            has_structured_eh: false,
            has_cpp_eh: false,
            is_function_start: false,
            uses_base_pointer: false,
            program: "$T0 .raSearch = $eip $T0 ^ = $esp $T0 4 + = $ebp $T0 4 - ^ = \
                      $ebx $T0 8 - ^ = "
                .to_string(),
        }
    }

    #[test]
    fn a_framedata_frame_in_the_middle_is_unwound_by_its_program() {
        // Frame 0 (EBP frame at E0) returns into F, a FrameData function with 0x0C bytes of
        // locals that saved the caller's EBP (E2) and EBX and uses EBP for itself (E0 holds
        // garbage for it); F returns into G, an EBP frame at E2.
        let f = 0x8290_0000..0x8290_0100;
        let m = Machine::new();
        m.put(E[0], 0xDEAD_BEEC);
        m.put(E[0] + 4, f.start + 0x20);
        let esp_f = E[0] + 8;
        let ret_slot = esp_f + 0x0C + 8;
        m.put(ret_slot - 4, E[2]);
        m.put(ret_slot - 8, 0x0B0B_0B0B);
        m.put(ret_slot, R[1]);
        m.put(E[2], 0);
        m.put(E[2] + 4, 0);
        let info = Info {
            programs: vec![(f.clone(), clang_program(0x0C, 8))],
            // An FPO record for the same range is ignored: the program wins.
            fpo: vec![(f.clone(), Fpo::from_fpo_data(0, 0, 0, 0, false, 0))],
            ..Info::default()
        };
        let w = walk_x86(&m.space(), &info, START, &bounded());
        assert_eq!(w.end, X86WalkEnd::ReachedZero);
        let rows: Vec<(u64, u64, Option<u64>)> = w
            .frames
            .iter()
            .map(|f| (f.child_ebp, f.ip, f.return_address))
            .collect();
        assert_eq!(
            rows,
            vec![
                (E[0], START.eip, Some(f.start + 0x20)),
                (ret_slot - 4, f.start + 0x20, Some(R[1])),
                (E[2], R[1], Some(0)),
            ]
        );
        // The caller's ESP is above the return address and the 8 bytes of parameters.
        assert_eq!(w.frames[2].registers.esp, ret_slot + 4 + 8);
        assert_eq!(w.frames[2].registers.ebp, E[2]);
        // No `(FPO: ...)` annotation for a FrameData frame; the program is kept.
        assert_eq!(w.frames[1].fpo, None);
        assert!(w.frames[1]
            .program
            .as_deref()
            .is_some_and(|p| p.contains(".raSearch")));
    }

    #[test]
    fn a_framedata_program_that_fails_stops_the_walk_with_a_reason() {
        let f = 0x8290_0000..0x8290_0100;
        let m = chain();
        m.put(E[0] + 4, f.start + 0x20);
        let mut bad = clang_program(0, 0);
        bad.program = "$T0 .raSearch = $eip $T0 ^ = $esp $T0 4 + bogus".into();
        let info = Info {
            programs: vec![(f.clone(), bad)],
            ..Info::default()
        };
        let w = walk_x86(&m.space(), &info, START, &bounded());
        assert_eq!(w.frames.len(), 2);
        assert_eq!(
            w.end,
            X86WalkEnd::BadFrameProgram {
                ip: f.start + 0x1F,
                error: ProgramError::UnknownToken {
                    token: "bogus".into()
                }
            }
        );
        assert!(w.end.to_string().contains("bogus"), "{}", w.end);

        // A program reading unmapped memory: the stack is not readable there.
        let mut far = clang_program(0, 0);
        far.program = "$eip 0x83000000 ^ = $esp $esp 4 + =".into();
        let info = Info {
            programs: vec![(f.clone(), far)],
            ..Info::default()
        };
        let w = walk_x86(&m.space(), &info, START, &bounded());
        assert_eq!(
            w.end,
            X86WalkEnd::StackNotReadable {
                address: 0x8300_0000
            }
        );

        // A program whose return slot is not above the previous one.
        let mut back = clang_program(0, 0);
        back.program = "$eip $esp ^ = $esp $esp 0x100 - =".into();
        let info = Info {
            programs: vec![(f.clone(), back)],
            ..Info::default()
        };
        let w = walk_x86(&m.space(), &info, START, &bounded());
        assert!(
            matches!(w.end, X86WalkEnd::NotProgressing { .. }),
            "{:?}",
            w.end
        );
    }

    const TRAP: TrapFrameLayout = TrapFrameLayout {
        ebp: 0x60,
        eip: 0x68,
        seg_cs: 0x6C,
        hardware_esp: 0x74,
    };

    #[test]
    fn a_system_call_entry_continues_through_the_trap_frame_into_user_mode() {
        // NtWaitForSingleObject (EBP frame at E0) returns into KiFastCallEntry, whose EBP is
        // the trap frame; user mode resumes at ntdll's KiFastSystemCallRet on the user stack.
        let entry = 0x8288_0000..0x8288_0200;
        let tf = 0x8240_2D34;
        let (user_eip, user_esp, user_ebp) = (0x7780_70B4, 0x0041_EFF0, 0x0041_F000);
        let m = Machine::new();
        m.put(E[0], tf);
        m.put(E[0] + 4, entry.start + 0x12A);
        m.put(tf + TRAP.ebp, user_ebp);
        m.put(tf + TRAP.eip, user_eip);
        m.put(tf + TRAP.seg_cs, 0x1B);
        m.put(tf + TRAP.hardware_esp, user_esp);
        m.put(user_ebp, 0);
        m.put(user_ebp + 4, 0x0040_1234);
        let info = Info {
            traps: vec![entry.clone()],
            ..Info::default()
        };
        let options = X86WalkOptions {
            trap_frame: Some(TRAP),
            ..bounded()
        };
        let w = walk_x86(&m.space(), &info, START, &options);
        let rows: Vec<(u64, u64, Option<u64>, Option<u64>)> = w
            .frames
            .iter()
            .map(|f| (f.child_ebp, f.ip, f.return_address, f.trap_frame))
            .collect();
        assert_eq!(
            rows,
            vec![
                (E[0], START.eip, Some(entry.start + 0x12A), None),
                (tf, entry.start + 0x12A, Some(user_eip), Some(tf)),
                // User frames: outside the kernel stack bounds, and below the trap frame.
                (user_ebp, user_eip, Some(0x0040_1234), None),
                (0, 0x0040_1234, None, None),
            ]
        );
        assert_eq!(w.frames[2].registers.esp, user_esp);
        assert_eq!(w.end, X86WalkEnd::ReachedZero);

        // Without trap-frame offsets, the entry is an ordinary EBP frame at the trap frame
        // (whose first dwords hold no chain): no transition.
        let w = walk_x86(&m.space(), &info, START, &bounded());
        assert_eq!(w.frames.len(), 2, "{w:?}");
        assert_eq!(w.frames[1].child_ebp, tf);
        assert_eq!(w.frames[1].trap_frame, None);
    }

    #[test]
    fn a_system_call_returns_through_the_frameless_ntdll_stub_to_the_ebp_frame_of_its_caller() {
        // As 32-bit Windows leaves it: the trap frame resumes at KiFastSystemCallRet (`ret`)
        // with HardwareEsp at the return into NtWaitForSingleObject+0xc (`ret 0Ch`), whose
        // return into WaitForSingleObjectEx is above it; Ebp is WaitForSingleObjectEx's frame.
        let entry = 0x8288_0000..0x8288_0200;
        let tf = 0x8240_2D34;
        let (ret_stub, stub_site, caller_site) = (0x0041_00F4, 0x0041_0010, 0x0041_2345);
        let (esp, user_ebp) = (0x0041_EF00, 0x0041_EF80);
        let m = Machine::new();
        m.put(E[0], tf);
        m.put(E[0] + 4, entry.start + 0x12A);
        m.put(tf + TRAP.ebp, user_ebp);
        m.put(tf + TRAP.eip, ret_stub);
        m.put(tf + TRAP.seg_cs, 0x1B);
        m.put(tf + TRAP.hardware_esp, esp);
        m.put(ret_stub, 0xC3); // ret
        m.put(stub_site, 0x00_0CC2); // ret 0Ch
        m.put(esp, stub_site);
        m.put(esp + 4, caller_site);
        m.put(user_ebp, 0);
        m.put(user_ebp + 4, 0x0041_5555);
        let info = Info {
            traps: vec![entry.clone()],
            ..Info::default()
        };
        let options = X86WalkOptions {
            trap_frame: Some(TRAP),
            ..bounded()
        };
        let w = walk_x86(&m.space(), &info, START, &options);
        let rows: Vec<(u64, u64, Option<u64>)> = w
            .frames
            .iter()
            .map(|f| (f.child_ebp, f.ip, f.return_address))
            .collect();
        assert_eq!(
            rows[1..],
            [
                (tf, entry.start + 0x12A, Some(ret_stub)),
                (esp - 4, ret_stub, Some(stub_site)),
                (esp, stub_site, Some(caller_site)),
                (user_ebp, caller_site, Some(0x0041_5555)),
                (0, 0x0041_5555, None),
            ]
        );
        // `ret 0Ch` popped the stub's three arguments.
        assert_eq!(w.frames[4].registers.esp, esp + 8 + 0xC);
        assert_eq!(w.end, X86WalkEnd::ReachedZero);
    }

    #[test]
    fn a_trap_entry_whose_ebp_is_no_trap_frame_uses_the_threads_and_kernel_traps_stay_on_the_stack()
    {
        // The entry's EBP is 0 (unreadable as a trap frame); the thread's TrapFrame is a
        // kernel-mode trap (CS 8): ESP is just past its hardware part, on the same stack.
        let entry = 0x8288_0000..0x8288_0200;
        let tf = 0x8240_2000;
        let m = Machine::new();
        m.put(E[0], 0);
        m.put(E[0] + 4, entry.start + 0x10);
        m.put(tf + TRAP.ebp, E[3]);
        m.put(tf + TRAP.eip, 0x8280_9999);
        m.put(tf + TRAP.seg_cs, 0x8);
        m.put(E[3], 0);
        m.put(E[3] + 4, 0);
        let info = Info {
            traps: vec![entry.clone()],
            ..Info::default()
        };
        let options = X86WalkOptions {
            trap_frame: Some(TRAP),
            thread_trap_frame: Some(tf),
            stack: Some(0x8240_0000..0x8240_3000),
            ..X86WalkOptions::default()
        };
        let w = walk_x86(&m.space(), &info, START, &options);
        assert_eq!(w.frames[1].trap_frame, Some(tf));
        assert_eq!(w.frames[2].ip, 0x8280_9999);
        assert_eq!(w.frames[2].registers.esp, tf + TRAP.hardware_esp);
        // E[3] is below the trap frame: a kernel trap keeps the progress check, so the
        // interrupted frame must be above the last return slot (E0 + 4).
        assert_eq!(w.frames[2].child_ebp, E[3]);
        assert_eq!(w.end, X86WalkEnd::ReachedZero);
    }

    /// A kernel frame at E[0] returning into an entry whose EBP is a trap frame at E[1],
    /// whose `DbgEbp`/`DbgEip` name a user frame at `user_ebp` (the last one: zeros above).
    fn interrupted_in_user_mode(user_eip: u64, user_ebp: u64) -> Machine {
        let tf = E[1];
        let m = Machine::new();
        m.put(E[0], tf);
        m.put(E[0] + 4, 0x8288_0010);
        m.put(tf, user_ebp);
        m.put(tf + 4, user_eip);
        m.put(user_ebp, 0);
        m.put(user_ebp + 4, 0);
        m
    }

    #[test]
    fn without_a_trap_symbol_the_chain_goes_on_into_user_mode_through_dbg_ebp() {
        // The trap frame's first dwords (DbgEbp, DbgEip) hold the user EBP and EIP; with
        // `user_end` the walk leaves the kernel stack bounds for the user stack.
        let (user_eip, user_ebp) = (0x7780_70B4, 0x0041_F000);
        let m = interrupted_in_user_mode(user_eip, user_ebp);
        let options = X86WalkOptions {
            user_end: Some(0x8000_0000),
            ..bounded()
        };
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &options);
        assert_eq!(w.end, X86WalkEnd::ReachedZero);
        let ips: Vec<u64> = w.frames.iter().map(|f| f.ip).collect();
        assert_eq!(ips, vec![START.eip, 0x8288_0010, user_eip]);
        assert_eq!(w.frames[2].child_ebp, user_ebp);
        // Without it, the user EBP is outside the kernel stack.
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &bounded());
        assert!(
            matches!(w.end, X86WalkEnd::OutsideStack { .. }),
            "{:?}",
            w.end
        );
    }

    #[test]
    fn a_running_threads_unbounded_walk_goes_on_into_user_mode_through_dbg_ebp() {
        // A running thread's walk has no stack bounds; the user frame below the kernel one
        // is a new stack, not a chain going back.
        let (user_eip, user_ebp) = (0x7780_167C, 0x0041_EFA0);
        let m = interrupted_in_user_mode(user_eip, user_ebp);
        let options = X86WalkOptions {
            user_end: Some(0x8000_0000),
            ..X86WalkOptions::default()
        };
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &options);
        assert_eq!(w.end, X86WalkEnd::ReachedZero, "{w:?}");
        let ips: Vec<u64> = w.frames.iter().map(|f| f.ip).collect();
        assert_eq!(ips, vec![START.eip, 0x8288_0010, user_eip]);
        // Without `user_end` the lower frame is a chain going back.
        let w = walk_x86(&m.space(), &NoFrameInfo, START, &X86WalkOptions::default());
        assert!(
            matches!(w.end, X86WalkEnd::NotProgressing { .. }),
            "{:?}",
            w.end
        );
    }
}
