//! Thread stacks (`k`, `kb`, `kn` and the stacks inside `!thread` / `!process`): frames
//! with child SP, return address, home-slot arguments and `module!symbol+0xoff`.

use crate::debugger::Debugger;
use crate::format::pointer;
use crate::report::Report;
use kds_runtime::mmu::AddressSpace;
use kds_runtime::model::Object;
use kds_runtime::stack::{walk_thread, ThreadStack};
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

/// The stack of `thread`, as far as it can be walked, with the home-slot arguments of each
/// frame (see [`kds_runtime::stack`] for where the walk starts and what it resolves).
pub fn thread_stack(dbg: &mut Debugger, thread: &Object, style: StackStyle) -> StackSection {
    let kernel = match dbg.kernel_modules() {
        Ok(m) => m.clone(),
        Err(e) => {
            return StackSection::Unavailable {
                reason: format!("the kernel's module list cannot be read: {e}"),
            }
        }
    };
    let model = Arc::clone(dbg.model());
    match walk_thread(&model, thread, &kernel) {
        ThreadStack::NotResident => StackSection::NotResident,
        ThreadStack::Unavailable { reason } => StackSection::Unavailable { reason },
        ThreadStack::Frames { frames, stopped } => {
            let space = thread.space();
            StackSection::Frames(StackTrace {
                style,
                frames: frames
                    .into_iter()
                    .enumerate()
                    .map(|(number, f)| FrameLine {
                        number,
                        child_sp: f.child_sp,
                        return_address: f.return_address,
                        args: read_args(space, f.child_sp),
                        ip: f.ip,
                        call_site: f.call_site,
                        trap_frame: f.trap_frame,
                    })
                    .collect(),
                stopped,
            })
        }
    }
}

/// The four home slots above a frame's return address (`Args to Child`).
fn read_args(space: &AddressSpace, child_sp: u64) -> Option<[u64; 4]> {
    let mut args = [0u64; 4];
    for (i, a) in args.iter_mut().enumerate() {
        *a = space.read_u64(child_sp + 8 + 8 * i as u64).ok()?;
    }
    Some(args)
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
