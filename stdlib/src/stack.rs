//! Thread stacks (`k`, `kb`, `kn` and the stacks inside `!thread` / `!process`): frames
//! with child SP, return address, home-slot arguments and `module!symbol+0xoff`.

use crate::debugger::Debugger;
use crate::fields::number;
use crate::format::pointer;
use crate::report::Report;
use kds_runtime::mmu::AddressSpace;
use kds_runtime::model::{Object, Value};
use kds_runtime::symbolize::ModuleMap;
use kds_runtime::target::ProcessorContext;
use kds_runtime::unwind::{walk, Context, Register, WalkEnd};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// Which columns a stack prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackStyle {
    /// `k`: Child-SP, RetAddr, Call Site.
    Plain,
    /// `kb`, and the stacks in `!thread`: the four home-slot arguments too.
    WithArgs,
    /// `kn`: frame numbers.
    Numbered,
    /// `kbn`.
    NumberedWithArgs,
}

impl StackStyle {
    fn numbered(self) -> bool {
        matches!(self, StackStyle::Numbered | StackStyle::NumberedWithArgs)
    }

    fn args(self) -> bool {
        matches!(self, StackStyle::WithArgs | StackStyle::NumberedWithArgs)
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrameLine {
    pub number: usize,
    pub child_sp: u64,
    pub return_address: u64,
    /// The four home-slot arguments (`Args to Child`), when readable.
    pub args: Option<[u64; 4]>,
    pub ip: u64,
    /// `module!symbol+0xoff`; `None` for an address in no known module.
    pub call_site: Option<String>,
    /// The trap frame this frame was left through (a system call or interrupt).
    pub trap_frame: Option<u64>,
}

/// A walked stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackTrace {
    pub style: StackStyle,
    pub frames: Vec<FrameLine>,
    /// Why the walk stopped early (a stack page not in memory, a loop), if it did.
    pub stopped: Option<String>,
}

/// The stack part of a thread block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StackSection {
    NotShown,
    /// The kernel stack is paged out (`KernelStackResident` is clear).
    NotResident,
    Frames(StackTrace),
    /// No stack could be walked, and why.
    Unavailable {
        reason: String,
    },
}

impl StackSection {
    /// Append the stack lines, each prefixed by `indent`.
    pub fn render(&self, out: &mut String, indent: &str, pointer_size: u64) {
        match self {
            StackSection::NotShown => {}
            StackSection::NotResident => {
                let _ = writeln!(out, "{indent}Kernel stack not resident.");
            }
            StackSection::Unavailable { reason } => {
                let _ = writeln!(out, "{indent}Unable to get the stack: {reason}");
            }
            StackSection::Frames(trace) => trace.render_indented(out, indent, pointer_size),
        }
        if !matches!(self, StackSection::NotShown) {
            out.push('\n');
        }
    }
}

impl StackTrace {
    fn render_indented(&self, out: &mut String, indent: &str, ps: u64) {
        let number = if self.style.numbered() { " # " } else { "" };
        let (sp, ret) = if ps == 4 {
            ("ChildEBP", "RetAddr ")
        } else {
            ("Child-SP         ", "RetAddr          ")
        };
        let args_width = 4 * pointer(0, ps).len() + 3;
        if self.style.args() {
            let _ = writeln!(
                out,
                "{indent}{number}{sp} {ret} : {:<args_width$} : Call Site",
                "Args to Child"
            );
        } else {
            let _ = writeln!(out, "{indent}{number}{sp} {ret} Call Site");
        }
        let mut warned = false;
        for f in &self.frames {
            if f.call_site.is_none() && !warned {
                let _ = writeln!(
                    out,
                    "{indent}WARNING: Frame IP not in any known module. Following frames may be wrong."
                );
                warned = true;
            }
            let n = if self.style.numbered() {
                format!("{:02x} ", f.number)
            } else {
                String::new()
            };
            let site = f
                .call_site
                .clone()
                .unwrap_or_else(|| format!("0x{}", pointer(f.ip, ps)));
            let trap = f
                .trap_frame
                .map(|t| format!(" (TrapFrame @ {})", pointer(t, ps)))
                .unwrap_or_default();
            let args = if self.style.args() {
                match f.args {
                    Some(a) => format!(
                        ": {} {} {} {} : ",
                        pointer(a[0], ps),
                        pointer(a[1], ps),
                        pointer(a[2], ps),
                        pointer(a[3], ps)
                    ),
                    None => format!(": {:<args_width$} : ", "<Unable to read the home slots>"),
                }
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{indent}{n}{} {} {args}{site}{trap}",
                pointer(f.child_sp, ps),
                pointer(f.return_address, ps)
            );
        }
        if let Some(why) = &self.stopped {
            let _ = writeln!(out, "{indent}WARNING: {why}");
        }
    }
}

impl Report for StackSection {
    fn render(&self, out: &mut String) {
        // Standalone `k` output is not indented; the pointer size travels in the frames'
        // formatting, 64-bit until 32-bit targets arrive.
        StackSection::render(self, out, "", 8);
    }
}

/// Most frames walked (WinDbg's default `k` shows 20; `!thread` and deep stacks need more).
const FRAME_LIMIT: usize = 256;
/// Qwords of the saved stack searched for the switch frame's return address when the table
/// does not describe `_KSWITCH_FRAME`.
const SWITCH_FRAME_SEARCH: u64 = 8;

/// The stack of `thread`, as far as it can be walked: from the processor's registers when it
/// runs, else from the context switch saved at `KernelStack`. Kernel frames always resolve;
/// user frames (after the system call's trap frame) only once `.process /r` loaded the
/// owning process's user modules, as in WinDbg.
pub fn thread_stack(dbg: &mut Debugger, thread: &Object, style: StackStyle) -> StackSection {
    if let Ok(Value::Bool(false)) = thread.field("kernel_stack_resident") {
        return StackSection::NotResident;
    }
    let owner = number(thread, &["Tcb.Process"]).unwrap_or(0);
    let kernel = match dbg.kernel_modules() {
        Ok(m) => m.clone(),
        Err(e) => {
            return StackSection::Unavailable {
                reason: format!("the kernel's module list cannot be read: {e}"),
            }
        }
    };
    let user_loaded = dbg.user_modules_process() == Some(owner);
    let modules = match (user_loaded, dbg.user_modules()) {
        (true, Some(user)) => kernel.merged(user),
        _ => kernel,
    };
    let start = match start_context(dbg, thread, &modules) {
        Ok(c) => c,
        Err(reason) => return StackSection::Unavailable { reason },
    };
    let space = Arc::clone(thread.space());
    let walk = dbg.with_unwind_cache(space.dtb(), |cache| {
        walk(&space, &modules, cache, start, FRAME_LIMIT)
    });
    let table = Arc::clone(thread.table());
    let rip_in_trap = table.offset_of("_KTRAP_FRAME", "Rip").ok();
    let mut frames = Vec::new();
    let mut crossed_to_user = false;
    for (number, f) in walk.frames.iter().enumerate() {
        let args = read_args(&space, f.child_sp);
        let trap_frame = f.machine_frame_at.and_then(|at| {
            let rip_slot = at + if f.machine_frame_error_code { 8 } else { 0 };
            Some(rip_slot - rip_in_trap?)
        });
        frames.push(FrameLine {
            number,
            child_sp: f.child_sp,
            return_address: f.return_address.unwrap_or(0),
            args,
            ip: f.ip,
            call_site: modules.symbolize(f.ip).map(|s| s.to_string()),
            trap_frame,
        });
        if crossed_to_user && !user_loaded {
            // The first user frame, as a bare address: without the process's user modules
            // nothing tells how to unwind it.
            break;
        }
        crossed_to_user = f.machine_frame_at.is_some();
    }
    let stopped = if crossed_to_user && !user_loaded && frames.len() < walk.frames.len() {
        None
    } else {
        match &walk.end {
            WalkEnd::ReachedZero => None,
            WalkEnd::StackNotReadable { address } => Some(format!(
                "stack memory at {} is not in memory: the stack ends here",
                pointer(*address, 8)
            )),
            other => Some(other.to_string()),
        }
    };
    StackSection::Frames(StackTrace {
        style,
        frames,
        stopped,
    })
}

/// The four home slots above a frame's return address (`Args to Child`).
fn read_args(space: &AddressSpace, child_sp: u64) -> Option<[u64; 4]> {
    let mut args = [0u64; 4];
    for (i, a) in args.iter_mut().enumerate() {
        *a = space.read_u64(child_sp + 8 + 8 * i as u64).ok()?;
    }
    Some(args)
}

/// Where the walk starts: the processor's registers for a running thread, else the context
/// switch saved on its kernel stack.
fn start_context(
    dbg: &mut Debugger,
    thread: &Object,
    modules: &ModuleMap,
) -> Result<Context, String> {
    let state = thread
        .field("state")
        .ok()
        .and_then(|v| match v {
            Value::Enum(e) => e.name,
            _ => None,
        })
        .unwrap_or_default();
    if state == "Running" {
        let processor = number(thread, &["Tcb.NextProcessor"]).unwrap_or(0);
        return running_context(dbg, processor);
    }
    let kernel_stack = number(thread, &["Tcb.KernelStack"])
        .filter(|k| *k != 0)
        .ok_or("the thread has no saved kernel stack")?;
    switch_context(dbg, thread, kernel_stack, modules)
}

/// A running thread's registers: the dump header's context for the crashing processor, else
/// the context its PRCB saved (`ProcessorState.ContextFrame`).
fn running_context(dbg: &Debugger, processor: u64) -> Result<Context, String> {
    let model = dbg.model();
    let from_prcb = || -> Option<Context> {
        let block = model.symbol_address("KiProcessorBlock")?;
        let prcb = model
            .kernel_space()
            .read_pointer(block + processor * model.pointer_size())
            .ok()?;
        let prcb = model.object("_KPRCB", prcb).ok()?;
        let reg = |name: &str| number(&prcb, &[&format!("ProcessorState.ContextFrame.{name}")]);
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
        .map(|ProcessorContext::X64(c)| Context::from(&c));
    header
        .filter(|c| c.rip != 0)
        .or_else(from_prcb)
        .ok_or_else(|| format!("no register context for processor {processor}"))
}

/// A waiting thread's context: RIP is the return address the context switch saved (into the
/// swap routine), RSP the slot above it. The slot is `_KSWITCH_FRAME.Return` where the table
/// describes that frame, else the first of the saved stack's first qwords that returns into
/// `KiSwapContext` (by its symbol and unwind entry).
fn switch_context(
    dbg: &mut Debugger,
    thread: &Object,
    kernel_stack: u64,
    modules: &ModuleMap,
) -> Result<Context, String> {
    let table = thread.table();
    let space = thread.space();
    let read = |at: u64| {
        space.read_u64(at).map_err(|e| {
            format!(
                "the saved kernel stack at {} cannot be read: {e}",
                pointer(at, 8)
            )
        })
    };
    if let Ok(ret) = table.offset_of("_KSWITCH_FRAME", "Return") {
        let slot = kernel_stack + ret;
        let rip = read(slot)?;
        let mut ctx = Context::new(rip, slot + 8);
        if let Ok(rbp) = table.offset_of("_KSWITCH_FRAME", "Rbp") {
            ctx.set(Register::Rbp, read(kernel_stack + rbp)?);
        }
        return Ok(ctx);
    }
    let space = Arc::clone(space);
    let swap = dbg
        .model()
        .symbol_address("KiSwapContext")
        .ok_or("the symbol table has no _KSWITCH_FRAME and no KiSwapContext")?;
    let nt = modules
        .module_at(swap)
        .ok_or("KiSwapContext lies in no loaded module")?;
    let swap_range = dbg
        .unwind_entry(&space, nt.base, swap)
        .map_or(swap..swap + 1, |(b, e)| b..e);
    for i in 0..SWITCH_FRAME_SEARCH {
        let slot = kernel_stack + 8 * i;
        let q = read(slot)?;
        if q > swap_range.start && q <= swap_range.end {
            return Ok(Context::new(q, slot + 8));
        }
    }
    Err(format!(
        "no return into KiSwapContext in the saved stack at {}",
        pointer(kernel_stack, 8)
    ))
}

/// `k` and its variants: the implicit thread's stack, at most `frame_count` frames.
pub fn stack_command(
    dbg: &mut Debugger,
    style: StackStyle,
    frame_count: Option<u64>,
) -> Result<StackSection, crate::CommandError> {
    let thread = dbg.implicit_thread()?;
    let mut section = thread_stack(dbg, &thread, style);
    if let (StackSection::Frames(trace), Some(n)) = (&mut section, frame_count) {
        trace
            .frames
            .truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    Ok(section)
}
