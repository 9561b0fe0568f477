//! A thread's stack: where the walk starts, the x64 unwind, and `module!symbol+0xoff` for
//! each frame.
//!
//! A running thread starts from its processor's registers (the dump header's context for the
//! crashing processor, else `ProcessorState.ContextFrame` of its PRCB). A waiting thread
//! starts from the context switch saved at `KernelStack`: RIP is the return address into the
//! swap routine, RSP the slot above it. Where the symbol table describes `_KSWITCH_FRAME` its
//! `Return` field names the slot; otherwise the slot is the first of the saved stack's first
//! qwords that returns into `KiSwapContext` (by its symbol and unwind entry).
//!
//! On x86 targets ([`crate::unwind::x86`]) a waiting thread starts from the frame `SwapContext`
//! leaves at `KernelStack` (see [`x86_switch_context`]); the walk follows the EBP chain, FPO
//! records of the kernel's PDB and the `_KTRAP_FRAME` of a system-call or interrupt entry.
//!
//! Kernel frames resolve against the kernel's modules. The walk leaves the kernel through the
//! system call's trap frame (a machine frame in the unwind data); user frames resolve only
//! when the owning process's user modules were loaded (`.process /r`, registered with
//! [`ModelContext::register_user_modules`]), as in WinDbg. Without them the first user frame
//! is shown as a bare address and (x64: nothing tells how to unwind it) the walk stops there;
//! an x86 walk goes on along the EBP chain, every user frame a bare address.

use crate::mmu::AddressSpace;
use crate::model::{ModelContext, Object, Value};
use crate::symbolize::ModuleMap;
use crate::target::ProcessorContext;
use crate::unwind::x86::{
    walk_x86, Fpo, FpoKind, TrapFrameLayout, X86FrameInfo, X86Registers, X86WalkEnd, X86WalkOptions,
};
use crate::unwind::x86_program::FrameProgram;
use crate::unwind::{walk, Context, Register, WalkEnd};
use serde::Serialize;
use std::sync::Arc;

/// Most frames walked.
pub const FRAME_LIMIT: usize = 256;
/// Qwords of the saved stack searched for the switch frame's return address when the table
/// does not describe `_KSWITCH_FRAME`.
const SWITCH_FRAME_SEARCH: u64 = 8;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackFrame {
    /// Child-SP on x64; ChildEBP on x86 (`Args to Child` at `child_sp + 8`).
    pub child_sp: u64,
    /// The next frame's IP (0 when this frame could not be unwound).
    pub return_address: u64,
    pub ip: u64,
    /// `module!symbol+0xoff`; `None` for an address in no known module.
    pub call_site: Option<String>,
    /// The `_KTRAP_FRAME` this frame was left through (system call or interrupt).
    pub trap_frame: Option<u64>,
    /// x86: the FPO record the frame was unwound with (`kv`'s `(FPO: ...)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fpo: Option<Fpo>,
}

/// What walking a thread's stack gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ThreadStack {
    /// `KernelStackResident` is clear: the kernel stack is paged out.
    NotResident,
    /// The walk could not start, and why.
    Unavailable { reason: String },
    /// The frames, and why the walk stopped early if it did.
    Frames {
        frames: Vec<StackFrame>,
        stopped: Option<String>,
    },
}

impl ThreadStack {
    /// The call sites, bare addresses (`0x...`) for frames in no module.
    #[must_use]
    pub fn call_sites(&self) -> Vec<String> {
        match self {
            ThreadStack::Frames { frames, .. } => frames
                .iter()
                .map(|f| {
                    f.call_site
                        .clone()
                        .unwrap_or_else(|| format!("{:#x}", f.ip))
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The call sites joined (`a <- b <- ...`), up to and including the first frame no module
    /// names: what the walk found below it is that thread's own data (an x86 EBP chain through
    /// unresolved user frames), so threads parked on the same path have equal signatures.
    #[must_use]
    pub fn signature(&self) -> String {
        let ThreadStack::Frames { frames, .. } = self else {
            return String::new();
        };
        let named = frames
            .iter()
            .position(|f| f.call_site.is_none())
            .map_or(frames.len(), |i| i + 1);
        self.call_sites()[..named].join(" <- ")
    }
}

fn number(o: &Object, path: &str) -> Option<u64> {
    match o.raw_field(path).ok()? {
        Value::Pointer(p) => Some(p.address),
        Value::Enum(e) => u64::try_from(e.value).ok(),
        other => other.as_u64(),
    }
}

/// Walk `thread`'s stack with the kernel's modules `kernel` (and the owning process's user
/// modules, when registered).
pub fn walk_thread(model: &Arc<ModelContext>, thread: &Object, kernel: &ModuleMap) -> ThreadStack {
    if let Ok(Value::Bool(false)) = thread.field("kernel_stack_resident") {
        return ThreadStack::NotResident;
    }
    let owner = number(thread, "Tcb.Process").unwrap_or(0);
    let user = model.user_modules_of(owner);
    let modules = match &user {
        Some(u) => kernel.merged(u),
        None => kernel.clone(),
    };
    let space = Arc::clone(thread.space());
    if model.pointer_size() == 4 {
        return walk_thread_x86(model, thread, &space, &modules, user.is_some());
    }
    let start = match start_context(model, thread, &space, &modules) {
        Ok(c) => c,
        Err(reason) => return ThreadStack::Unavailable { reason },
    };
    let walked = model.with_unwind_cache(space.dtb(), |cache| {
        walk(&space, &modules, cache, start, FRAME_LIMIT)
    });
    let rip_in_trap = thread.table().offset_of("_KTRAP_FRAME", "Rip").ok();
    let have_user_modules = user.is_some();
    let frames = walked.frames.iter().map(|f| {
        let trap_frame = f.machine_frame_at.and_then(|at| {
            let rip_slot = at + if f.machine_frame_error_code { 8 } else { 0 };
            Some(rip_slot - rip_in_trap?)
        });
        let user_frame = is_user_address(f.ip);
        let frame = StackFrame {
            child_sp: f.child_sp,
            return_address: f.return_address.unwrap_or(0),
            ip: f.ip,
            call_site: call_site(&modules, f.ip, user_frame && !have_user_modules),
            trap_frame,
            fpo: None,
        };
        (frame, user_frame)
    });
    thread_stack(frames, have_user_modules, || match &walked.end {
        WalkEnd::ReachedZero => None,
        WalkEnd::StackNotReadable { address } => Some(stack_not_in_memory(*address, 8)),
        other => Some(other.to_string()),
    })
}

/// A frame's `module!symbol+0xoff`; `None` for a user frame whose process's modules are not
/// loaded (`unloaded_user`), as in WinDbg before `.process /r`.
fn call_site(modules: &ModuleMap, ip: u64, unloaded_user: bool) -> Option<String> {
    if unloaded_user {
        return None;
    }
    modules.symbolize(ip).map(|s| s.to_string())
}

/// The frames of a walk, `(frame, in user mode)`, as a [`ThreadStack`]: without the process's
/// user modules it ends at the first user frame, a bare address (nothing tells how to unwind
/// it), with no return address and no reason; otherwise `end` says why the walk stopped.
fn thread_stack(
    walked: impl ExactSizeIterator<Item = (StackFrame, bool)>,
    have_user_modules: bool,
    end: impl FnOnce() -> Option<String>,
) -> ThreadStack {
    let count = walked.len();
    let mut frames = Vec::new();
    let mut cut = false;
    for (i, (frame, user_frame)) in walked.enumerate() {
        frames.push(frame);
        if user_frame && !have_user_modules {
            if i + 1 < count {
                cut = true;
            }
            if let Some(last) = frames.last_mut() {
                last.return_address = 0;
            }
            break;
        }
    }
    let stopped = if cut { None } else { end() };
    ThreadStack::Frames { frames, stopped }
}

/// Why a walk stopped at stack memory that is not in the dump.
fn stack_not_in_memory(address: u64, pointer_size: u64) -> String {
    format!(
        "stack memory at {} is not in memory: the stack ends here",
        crate::model::format_address(address, pointer_size)
    )
}

/// An address in the user half of the x64 address space (the lower canonical half).
fn is_user_address(address: u64) -> bool {
    address >> 63 == 0
}

/// The registers a thread's stack walk starts from (`r` shows them): the processor's for a
/// running thread, the saved switch context for the others. Registers nothing saved are
/// unknown.
pub fn thread_context(model: &Arc<ModelContext>, thread: &Object) -> Result<Context, String> {
    let kernel = model.kernel_module_map()?;
    let space = Arc::clone(thread.space());
    start_context(model, thread, &space, &kernel)
}

/// Where the walk starts.
fn start_context(
    model: &Arc<ModelContext>,
    thread: &Object,
    space: &Arc<AddressSpace>,
    modules: &ModuleMap,
) -> Result<Context, String> {
    let running = matches!(
        thread.field("state"),
        Ok(Value::Enum(e)) if e.name.as_deref() == Some("Running")
    );
    if running {
        let processor = number(thread, "Tcb.NextProcessor").unwrap_or(0);
        return running_context(model, processor);
    }
    let kernel_stack = number(thread, "Tcb.KernelStack")
        .filter(|k| *k != 0)
        .ok_or("the thread has no saved kernel stack")?;
    switch_context(model, thread, space, kernel_stack, modules)
}

/// Processor `processor`'s `_KPRCB`, through `nt!KiProcessorBlock`.
fn processor_block(model: &Arc<ModelContext>, processor: u64) -> Option<Object> {
    let block = model.symbol_address("KiProcessorBlock")?;
    let prcb = model
        .kernel_space()
        .read_pointer(block + processor * model.pointer_size())
        .ok()?;
    model.object("_KPRCB", prcb).ok()
}

/// A running thread's registers.
fn running_context(model: &Arc<ModelContext>, processor: u64) -> Result<Context, String> {
    let from_prcb = || -> Option<Context> {
        let prcb = processor_block(model, processor)?;
        let reg = |name: &str| number(&prcb, &format!("ProcessorState.ContextFrame.{name}"));
        let mut ctx = Context::new(reg("Rip")?, reg("Rsp")?);
        for r in Register::ALL {
            let name = r.name();
            let field = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
            if let Some(v) = reg(&field) {
                ctx.set(r, v);
            }
        }
        Some(ctx)
    };
    let header = u32::try_from(processor)
        .ok()
        .and_then(|p| model.target().processor_context(p).ok())
        .and_then(|context| match context {
            ProcessorContext::X64(c) => Some(Context::from(&c)),
            // The x86 unwinder has its own context (issue 8).
            ProcessorContext::X86(_) => None,
        });
    header
        .filter(|c| c.rip != 0)
        .or_else(from_prcb)
        .ok_or_else(|| format!("no register context for processor {processor}"))
}

/// A waiting thread's context, from its saved switch frame.
fn switch_context(
    model: &Arc<ModelContext>,
    thread: &Object,
    space: &Arc<AddressSpace>,
    kernel_stack: u64,
    modules: &ModuleMap,
) -> Result<Context, String> {
    let table = thread.table();
    let read = |at: u64| {
        space.read_u64(at).map_err(|e| {
            format!(
                "the saved kernel stack at {} cannot be read: {e}",
                crate::model::format_address(at, 8)
            )
        })
    };
    if let Ok(ret) = table.offset_of("_KSWITCH_FRAME", "Return") {
        let slot = kernel_stack + ret;
        let mut ctx = Context::new(read(slot)?, slot + 8);
        if let Ok(rbp) = table.offset_of("_KSWITCH_FRAME", "Rbp") {
            ctx.set(Register::Rbp, read(kernel_stack + rbp)?);
        }
        return Ok(ctx);
    }
    let swap = model
        .symbol_address("KiSwapContext")
        .ok_or("the symbol table has no _KSWITCH_FRAME and no KiSwapContext")?;
    let nt = modules
        .module_at(swap)
        .ok_or("KiSwapContext lies in no loaded module")?;
    let range = model
        .unwind_entry(space, nt.base, swap)
        .map_or(swap..swap + 1, |(b, e)| b..e);
    for i in 0..SWITCH_FRAME_SEARCH {
        let slot = kernel_stack + 8 * i;
        let q = read(slot)?;
        if q > range.start && q <= range.end {
            return Ok(Context::new(q, slot + 8));
        }
    }
    Err(format!(
        "no return into KiSwapContext in the saved stack at {}",
        crate::model::format_address(kernel_stack, 8)
    ))
}

/// Most pointer-size slots of `KernelStack` (x86) read for the switch frame.
const X86_SWITCH_FRAME_SLOTS: u64 = 4;

/// The x86 `SwapContext` frame at `_KTHREAD.KernelStack`, as NT's `ctxswap.asm` builds it: its
/// caller (`KiSwapContext`, or `KiSwapThread` / `KiDispatchInterrupt` on older kernels) saved
/// the nonvolatile registers "such that ebp is saved last" (so that a debugger finds it) and
/// called `SwapContext`, which pushed EFLAGS and the exception list before storing ESP:
///
/// | slot | contents |
/// |---|---|
/// | +0x0 | `ExceptionList` |
/// | +0x4 | EFLAGS |
/// | +0x8 | return address into the caller (the frame's EIP) |
/// | +0xC | the caller's saved EBP (ESP of the caller points here) |
pub const X86_SWITCH_RETURN: u64 = 0x8;
/// See [`X86_SWITCH_RETURN`].
pub const X86_SWITCH_EBP: u64 = 0xC;

/// `KiSwapContext` on XP to 7: `sub esp, 10h` and EBX, ESI, EDI, EBP saved in it (EBP at
/// `[esp]`), then the call to `SwapContext`: its return address is 16 bytes above ESP. Used
/// when the PDB gives no FPO record for it.
const KI_SWAP_CONTEXT_FRAME: Fpo = Fpo {
    kind: FpoKind::Fpo,
    locals_size: 0,
    params_size: 0,
    saved_regs_size: 16,
    prolog_size: 0,
    uses_base_pointer: true,
};

/// An x86 thread's start registers, and the others where a processor context has them (`r`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct X86ThreadContext {
    pub eip: u64,
    pub esp: u64,
    pub ebp: u64,
    /// eax, ebx, ecx, edx, esi, edi, efl (in that order), when known.
    pub others: [Option<u64>; 7],
}

/// Names of [`X86ThreadContext::others`].
pub const X86_OTHER_REGISTERS: [&str; 7] = ["eax", "ebx", "ecx", "edx", "esi", "edi", "efl"];

impl X86ThreadContext {
    /// A register by its lower-case name (`eip`, `efl`, ...).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<u64> {
        match name {
            "eip" => Some(self.eip),
            "esp" => Some(self.esp),
            "ebp" => Some(self.ebp),
            other => X86_OTHER_REGISTERS
                .iter()
                .position(|n| *n == other)
                .and_then(|i| self.others[i]),
        }
    }

    fn registers(&self) -> X86Registers {
        X86Registers {
            eip: self.eip,
            esp: self.esp,
            ebp: self.ebp,
        }
    }
}

/// The registers an x86 thread's stack walk starts from (`r` on x86 targets).
pub fn x86_thread_context(
    model: &Arc<ModelContext>,
    thread: &Object,
) -> Result<X86ThreadContext, String> {
    let space = Arc::clone(thread.space());
    x86_start_context(model, thread, &space)
}

fn is_running(thread: &Object) -> bool {
    matches!(
        thread.field("state"),
        Ok(Value::Enum(e)) if e.name.as_deref() == Some("Running")
    )
}

fn x86_start_context(
    model: &Arc<ModelContext>,
    thread: &Object,
    space: &Arc<AddressSpace>,
) -> Result<X86ThreadContext, String> {
    if is_running(thread) {
        let processor = number(thread, "Tcb.NextProcessor").unwrap_or(0);
        return x86_running_context(model, processor);
    }
    let kernel_stack = number(thread, "Tcb.KernelStack")
        .filter(|k| *k != 0)
        .ok_or("the thread has no saved kernel stack")?;
    x86_switch_context(space, kernel_stack)
}

/// A waiting x86 thread's registers from the `SwapContext` frame at `kernel_stack`
/// ([`X86_SWITCH_RETURN`]).
pub fn x86_switch_context(
    space: &AddressSpace,
    kernel_stack: u64,
) -> Result<X86ThreadContext, String> {
    let mut slots = [0u64; X86_SWITCH_FRAME_SLOTS as usize];
    for (i, slot) in slots.iter_mut().enumerate() {
        let at = kernel_stack + 4 * i as u64;
        *slot = space.read_u32(at).map(u64::from).map_err(|e| {
            format!(
                "the saved kernel stack at {} cannot be read: {e}",
                crate::model::format_address(at, 4)
            )
        })?;
    }
    let eip = slots[(X86_SWITCH_RETURN / 4) as usize];
    if eip == 0 {
        return Err(format!(
            "no return address in the saved switch frame at {}",
            crate::model::format_address(kernel_stack, 4)
        ));
    }
    Ok(X86ThreadContext {
        eip,
        esp: kernel_stack + X86_SWITCH_EBP,
        ebp: slots[(X86_SWITCH_EBP / 4) as usize],
        others: [None, None, None, None, None, None, Some(slots[1])],
    })
}

/// A running x86 thread's registers: the dump header's context, else its PRCB's
/// `ProcessorState.ContextFrame`.
fn x86_running_context(
    model: &Arc<ModelContext>,
    processor: u64,
) -> Result<X86ThreadContext, String> {
    let header = u32::try_from(processor)
        .ok()
        .and_then(|p| model.target().processor_context(p).ok())
        .and_then(|context| match context {
            ProcessorContext::X86(c) if c.eip != 0 => Some(X86ThreadContext {
                eip: u64::from(c.eip),
                esp: u64::from(c.esp),
                ebp: u64::from(c.ebp),
                others: [c.eax, c.ebx, c.ecx, c.edx, c.esi, c.edi, c.eflags]
                    .map(|v| Some(u64::from(v))),
            }),
            _ => None,
        });
    let from_prcb = || -> Option<X86ThreadContext> {
        let prcb = processor_block(model, processor)?;
        let reg = |name: &str| number(&prcb, &format!("ProcessorState.ContextFrame.{name}"));
        Some(X86ThreadContext {
            eip: reg("Eip").filter(|e| *e != 0)?,
            esp: reg("Esp")?,
            ebp: reg("Ebp")?,
            others: ["Eax", "Ebx", "Ecx", "Edx", "Esi", "Edi", "EFlags"].map(reg),
        })
    };
    header
        .or_else(from_prcb)
        .ok_or_else(|| format!("no register context for processor {processor}"))
}

/// FPO records and trap entries of the kernel, by symbol.
struct KernelFrameInfo<'a> {
    modules: &'a ModuleMap,
    model: &'a ModelContext,
    kernel_base: u64,
}

impl KernelFrameInfo<'_> {
    /// `ip`'s offset in the kernel image, when the kernel is the module holding it (the
    /// kernel's table describes only its own frames).
    fn kernel_rva(&self, ip: u64) -> Option<u64> {
        let m = self.modules.module_at(ip)?;
        (m.base == self.kernel_base).then(|| ip - m.base)
    }

    /// The kernel function holding `ip`, without decoration (`_KiTrap0E` -> `KiTrap0E`).
    fn kernel_symbol(&self, ip: u64) -> Option<String> {
        self.kernel_rva(ip)?;
        let s = self.modules.symbolize(ip)?;
        let name = s.symbol?;
        let name = name.trim_start_matches(['_', '@']);
        Some(name.split('@').next().unwrap_or(name).to_string())
    }
}

impl X86FrameInfo for KernelFrameInfo<'_> {
    fn fpo(&self, ip: u64) -> Option<Fpo> {
        let rva = self.kernel_rva(ip)?;
        self.model.table().frame_data_at(rva).or_else(|| {
            (self.kernel_symbol(ip).as_deref() == Some("KiSwapContext"))
                .then_some(KI_SWAP_CONTEXT_FRAME)
        })
    }

    fn frame_program(&self, ip: u64) -> Option<FrameProgram> {
        let rva = self.kernel_rva(ip)?;
        self.model.table().frame_program_at(rva).cloned()
    }

    fn is_trap_entry(&self, ip: u64) -> bool {
        self.kernel_symbol(ip).is_some_and(|n| {
            n.starts_with("KiFastCallEntry")
                || n.starts_with("KiSystemService")
                || n.starts_with("KiTrap")
        })
    }
}

/// Where user space ends on a 32-bit kernel: `MmSystemRangeStart`, else 0x80000000.
fn x86_system_range_start(model: &ModelContext) -> u64 {
    model
        .symbol_address("MmSystemRangeStart")
        .and_then(|a| model.kernel_space().read_u32(a).ok())
        .map(u64::from)
        .filter(|s| *s >= 0x8000_0000)
        .unwrap_or(0x8000_0000)
}

fn walk_thread_x86(
    model: &Arc<ModelContext>,
    thread: &Object,
    space: &Arc<AddressSpace>,
    modules: &ModuleMap,
    have_user_modules: bool,
) -> ThreadStack {
    let start = match x86_start_context(model, thread, space) {
        Ok(c) => c,
        Err(reason) => return ThreadStack::Unavailable { reason },
    };
    let table = thread.table();
    let trap_frame = (|| {
        Some(TrapFrameLayout {
            eip: table.offset_of("_KTRAP_FRAME", "Eip").ok()?,
            ebp: table.offset_of("_KTRAP_FRAME", "Ebp").ok()?,
            hardware_esp: table.offset_of("_KTRAP_FRAME", "HardwareEsp").ok()?,
            seg_cs: table.offset_of("_KTRAP_FRAME", "SegCs").ok()?,
        })
    })();
    // A running thread may be on a DPC or interrupt stack: bounds only for saved ones.
    let stack = if is_running(thread) {
        None
    } else {
        let limit = number(thread, "Tcb.StackLimit").filter(|l| *l != 0);
        let base = number(thread, "Tcb.StackBase")
            .or_else(|| number(thread, "Tcb.InitialStack"))
            .filter(|b| *b != 0);
        limit.zip(base).filter(|(l, b)| l < b).map(|(l, b)| l..b)
    };
    let user_end = x86_system_range_start(model);
    let options = X86WalkOptions {
        stack,
        limit: FRAME_LIMIT,
        trap_frame,
        thread_trap_frame: number(thread, "Tcb.TrapFrame").filter(|t| *t != 0),
        user_end: Some(user_end),
    };
    let info = KernelFrameInfo {
        modules,
        model,
        kernel_base: model.kernel_base(),
    };
    let walked = walk_x86(space, &info, start.registers(), &options);
    let frames = walked.frames.iter().map(|f| {
        let user_frame = f.ip < user_end;
        let frame = StackFrame {
            child_sp: f.child_ebp,
            return_address: f.return_address.unwrap_or(0),
            ip: f.ip,
            call_site: call_site(modules, f.ip, user_frame && !have_user_modules),
            trap_frame: f.trap_frame,
            fpo: f.fpo,
        };
        (frame, user_frame)
    });
    // Unlike x64 (whose user frames need the modules' unwind data), the EBP chain goes on
    // through user frames without their modules: they show as bare addresses, as in WinDbg.
    thread_stack(frames, true, || match &walked.end {
        X86WalkEnd::ReachedZero => None,
        X86WalkEnd::StackNotReadable { address } => Some(stack_not_in_memory(*address, 4)),
        other => Some(other.to_string()),
    })
}

#[cfg(test)]
mod x86_tests {
    use super::*;
    use crate::mmu::X86_PAE;
    use crate::target::MemoryTarget;
    use crate::unwind::x86::X86FrameInfo;

    /// A PAE space with one 2 MiB kernel page at 0x8240_0000 (physical 0x0060_0000).
    fn space(words: &[(u64, u32)]) -> AddressSpace {
        let m = MemoryTarget::x64(1);
        m.write_physical(0x1000 + 2 * 8, &(0x2000u64 | 1).to_le_bytes());
        m.write_physical(0x2000 + 0x12 * 8, &(0x0060_0000u64 | 0x83).to_le_bytes());
        for (va, v) in words {
            m.write_physical(va - 0x8240_0000 + 0x0060_0000, &v.to_le_bytes());
        }
        AddressSpace::new(Arc::new(m), &X86_PAE, 0x1000)
    }

    struct SwapOnly(std::ops::Range<u64>);

    impl X86FrameInfo for SwapOnly {
        fn fpo(&self, ip: u64) -> Option<Fpo> {
            self.0.contains(&ip).then_some(KI_SWAP_CONTEXT_FRAME)
        }
        fn is_trap_entry(&self, _ip: u64) -> bool {
            false
        }
    }

    /// A waiting thread: `SwapContext` left ExceptionList, EFLAGS and the return into
    /// `KiSwapContext` at KernelStack; `KiSwapContext` had saved EBP, EDI, ESI, EBX above
    /// them and returns into `KiSwapThread`, an EBP frame.
    #[test]
    fn a_waiting_thread_starts_from_the_swap_context_frame_and_unwinds_into_its_caller() {
        let ks = 0x8240_1E00u64;
        let ki_swap_context = 0x8288_0000..0x8288_0080;
        let ki_swap_thread_ret = 0x8289_0266u32;
        let ki_swap_thread_ebp = 0x8240_1F00u32;
        let outer_ret = 0x828A_0123u32;
        let space = space(&[
            (ks, 0xFFFF_FFFF),                  // ExceptionList
            (ks + 4, 0x0000_0246),              // EFLAGS
            (ks + 8, 0x8288_0026),              // KiSwapContext+0x26
            (ks + 0xC, ki_swap_thread_ebp),     // saved EBP
            (ks + 0x10, 0x1111_1111),           // EDI
            (ks + 0x14, 0x2222_2222),           // ESI
            (ks + 0x18, 0x3333_3333),           // EBX
            (ks + 0x1C, ki_swap_thread_ret),    // into KiSwapThread
            (u64::from(ki_swap_thread_ebp), 0), // KiSwapThread's caller's EBP: the end
            (u64::from(ki_swap_thread_ebp) + 4, outer_ret),
        ]);
        let ctx = x86_switch_context(&space, ks).expect("switch frame");
        assert_eq!(
            (ctx.eip, ctx.esp, ctx.ebp),
            (0x8288_0026, ks + 0xC, u64::from(ki_swap_thread_ebp))
        );
        assert_eq!(ctx.get("efl"), Some(0x246));
        assert_eq!(ctx.get("eax"), None);

        let options = X86WalkOptions {
            stack: Some(0x8240_0000..0x8240_3000),
            ..X86WalkOptions::default()
        };
        let w = walk_x86(
            &space,
            &SwapOnly(ki_swap_context),
            ctx.registers(),
            &options,
        );
        let ips: Vec<u64> = w.frames.iter().map(|f| f.ip).collect();
        assert_eq!(
            ips,
            vec![
                0x8288_0026,
                u64::from(ki_swap_thread_ret),
                u64::from(outer_ret)
            ]
        );
        assert_eq!(w.frames[0].child_ebp, ks + 0x18);
        assert_eq!(w.frames[1].child_ebp, u64::from(ki_swap_thread_ebp));
    }

    #[test]
    fn an_unreadable_or_empty_switch_frame_is_an_error_naming_the_address() {
        let err = x86_switch_context(&space(&[]), 0x8300_0000).unwrap_err();
        assert!(err.contains("83000000"), "{err}");
        let err = x86_switch_context(&space(&[(0x8240_1000, 1)]), 0x8240_1000).unwrap_err();
        assert!(err.contains("no return address"), "{err}");
    }
}

#[cfg(test)]
mod signature_tests {
    use super::*;

    fn frame(ip: u64, site: Option<&str>) -> StackFrame {
        StackFrame {
            child_sp: 0,
            return_address: 0,
            ip,
            call_site: site.map(str::to_string),
            trap_frame: None,
            fpo: None,
        }
    }

    #[test]
    fn the_signature_ends_at_the_first_frame_no_module_names() {
        let stack = ThreadStack::Frames {
            frames: vec![
                frame(1, Some("nt!KiSwapContext+0x2b")),
                frame(2, Some("nt!KiFastCallEntry+0x13a")),
                frame(0x7757_00f4, None),
                frame(0x7756_f5d4, None),
                frame(0x0040_102a, None),
            ],
            stopped: None,
        };
        assert_eq!(stack.call_sites().len(), 5);
        assert_eq!(
            stack.signature(),
            "nt!KiSwapContext+0x2b <- nt!KiFastCallEntry+0x13a <- 0x775700f4"
        );
        let named = ThreadStack::Frames {
            frames: vec![frame(1, Some("a")), frame(2, Some("b"))],
            stopped: None,
        };
        assert_eq!(named.signature(), "a <- b");
        assert_eq!(ThreadStack::NotResident.signature(), "");
    }
}
