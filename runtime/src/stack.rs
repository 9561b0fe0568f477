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
//! Kernel frames resolve against the kernel's modules. The walk leaves the kernel through the
//! system call's trap frame (a machine frame in the unwind data); user frames resolve only
//! when the owning process's user modules were loaded (`.process /r`, registered with
//! [`ModelContext::register_user_modules`]), as in WinDbg. Without them the first user frame
//! is shown as a bare address and the walk stops there.

use crate::mmu::AddressSpace;
use crate::model::{ModelContext, Object, Value};
use crate::symbolize::ModuleMap;
use crate::target::ProcessorContext;
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
    pub child_sp: u64,
    /// The next frame's IP (0 when this frame could not be unwound).
    pub return_address: u64,
    pub ip: u64,
    /// `module!symbol+0xoff`; `None` for an address in no known module.
    pub call_site: Option<String>,
    /// The `_KTRAP_FRAME` this frame was left through (system call or interrupt).
    pub trap_frame: Option<u64>,
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
    let start = match start_context(model, thread, &space, &modules) {
        Ok(c) => c,
        Err(reason) => return ThreadStack::Unavailable { reason },
    };
    let walked = model.with_unwind_cache(space.dtb(), |cache| {
        walk(&space, &modules, cache, start, FRAME_LIMIT)
    });
    let rip_in_trap = thread.table().offset_of("_KTRAP_FRAME", "Rip").ok();
    let mut frames = Vec::new();
    let mut cut = false;
    for (i, f) in walked.frames.iter().enumerate() {
        let trap_frame = f.machine_frame_at.and_then(|at| {
            let rip_slot = at + if f.machine_frame_error_code { 8 } else { 0 };
            Some(rip_slot - rip_in_trap?)
        });
        let user_frame = is_user_address(f.ip);
        frames.push(StackFrame {
            child_sp: f.child_sp,
            return_address: f.return_address.unwrap_or(0),
            ip: f.ip,
            call_site: if user_frame && user.is_none() {
                None
            } else {
                modules.symbolize(f.ip).map(|s| s.to_string())
            },
            trap_frame,
        });
        if user_frame && user.is_none() {
            // The first user frame, as a bare address: without the process's user modules
            // nothing tells how to unwind it.
            if i + 1 < walked.frames.len() {
                cut = true;
            }
            if let Some(last) = frames.last_mut() {
                last.return_address = 0;
            }
            break;
        }
    }
    let stopped = if cut {
        None
    } else {
        match &walked.end {
            WalkEnd::ReachedZero => None,
            WalkEnd::StackNotReadable { address } => Some(format!(
                "stack memory at {} is not in memory: the stack ends here",
                crate::model::format_address(*address, 8)
            )),
            other => Some(other.to_string()),
        }
    };
    ThreadStack::Frames { frames, stopped }
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

/// A running thread's registers.
fn running_context(model: &Arc<ModelContext>, processor: u64) -> Result<Context, String> {
    let from_prcb = || -> Option<Context> {
        let block = model.symbol_address("KiProcessorBlock")?;
        let prcb = model
            .kernel_space()
            .read_pointer(block + processor * model.pointer_size())
            .ok()?;
        let prcb = model.object("_KPRCB", prcb).ok()?;
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
