//! Thread stacks (`k`, `kb`, `kn` and the stacks inside `!thread` / `!process`): frames
//! with child SP, return address, home-slot arguments and `module!symbol+0xoff`.

use crate::debugger::Debugger;
use crate::format::pointer;
use crate::report::Report;
use kds_runtime::mmu::AddressSpace;
use kds_runtime::model::Object;
use kds_runtime::stack::{walk_thread, ThreadStack};
use kds_runtime::unwind::x86::Fpo;
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
    /// `kv`: arguments and, on x86, the FPO annotation of each frame.
    Verbose,
    /// `kvn`.
    NumberedVerbose,
}

impl StackStyle {
    fn numbered(self) -> bool {
        matches!(
            self,
            StackStyle::Numbered | StackStyle::NumberedWithArgs | StackStyle::NumberedVerbose
        )
    }

    fn args(self) -> bool {
        !matches!(self, StackStyle::Plain | StackStyle::Numbered)
    }

    fn verbose(self) -> bool {
        matches!(self, StackStyle::Verbose | StackStyle::NumberedVerbose)
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrameLine {
    pub number: usize,
    pub child_sp: u64,
    pub return_address: u64,
    /// `Args to Child`, when readable: the four home slots on x64, the three dwords at
    /// `ChildEBP + 8` on x86.
    pub args: Option<Vec<u64>>,
    pub ip: u64,
    /// `module!symbol+0xoff`; `None` for an address in no known module.
    pub call_site: Option<String>,
    /// The trap frame this frame was left through (a system call or interrupt).
    pub trap_frame: Option<u64>,
    /// x86: the FPO record the frame was unwound with (`kv`'s `(FPO: ...)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fpo: Option<Fpo>,
}

/// A walked stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackTrace {
    pub style: StackStyle,
    pub frames: Vec<FrameLine>,
    /// Why the walk stopped early (a stack page not in memory, a loop), if it did.
    pub stopped: Option<String>,
    /// 8 on x64, 4 on x86: how addresses print and which columns the frames have.
    #[serde(skip)]
    pub pointer_size: u64,
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
        if ps == 4 {
            self.render_x86(out, indent);
            return;
        }
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
        self.render_frames(out, indent, ps, |f, site| {
            let trap = f
                .trap_frame
                .map(|t| format!(" (TrapFrame @ {})", pointer(t, ps)))
                .unwrap_or_default();
            let args = if self.style.args() {
                match f.args.as_deref() {
                    Some(&[a0, a1, a2, a3]) => format!(
                        ": {} {} {} {} : ",
                        pointer(a0, ps),
                        pointer(a1, ps),
                        pointer(a2, ps),
                        pointer(a3, ps)
                    ),
                    Some(a) => format!(
                        ": {:<args_width$} : ",
                        a.iter()
                            .map(|v| pointer(*v, ps))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    None => format!(": {:<args_width$} : ", "<Unable to read the home slots>"),
                }
            } else {
                String::new()
            };
            format!(
                "{} {} {args}{site}{trap}",
                pointer(f.child_sp, ps),
                pointer(f.return_address, ps)
            )
        });
    }

    /// The frame lines, `line` giving each after its frame number from the frame and its call
    /// site, with WinDbg's warning before the first frame outside every known module; then
    /// why the walk stopped.
    fn render_frames(
        &self,
        out: &mut String,
        indent: &str,
        ps: u64,
        line: impl Fn(&FrameLine, &str) -> String,
    ) {
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
            let _ = writeln!(out, "{indent}{n}{}", line(f, &site));
        }
        if let Some(why) = &self.stopped {
            let _ = writeln!(out, "{indent}WARNING: {why}");
        }
    }
}

impl StackTrace {
    /// WinDbg's x86 layout: `ChildEBP RetAddr  Args to Child`, three dword arguments, then
    /// the call site and, for `kv`, `(FPO: [...])` and `TrapFrame @ ...`.
    fn render_x86(&self, out: &mut String, indent: &str) {
        let number = if self.style.numbered() { " # " } else { "" };
        if self.style.args() {
            let _ = writeln!(out, "{indent}{number}ChildEBP RetAddr  Args to Child");
        } else {
            let _ = writeln!(out, "{indent}{number}ChildEBP RetAddr");
        }
        self.render_frames(out, indent, 4, |f, site| {
            let args = if self.style.args() {
                match f.args.as_deref() {
                    Some(a) => {
                        let mut s: Vec<String> = a.iter().map(|v| pointer(*v, 4)).collect();
                        s.push(String::new());
                        s.join(" ")
                    }
                    None => "???????? ???????? ???????? ".to_string(),
                }
            } else {
                String::new()
            };
            let fpo = f
                .fpo
                .filter(|_| self.style.verbose())
                .map(|fpo| fpo.annotation());
            let trap = f
                .trap_frame
                .map(|t| format!("TrapFrame @ {}", pointer(t, 4)));
            let note = match (fpo, trap) {
                (Some(fpo), Some(trap)) => format!(" ({fpo} {trap})"),
                (Some(one), None) | (None, Some(one)) => format!(" ({one})"),
                (None, None) => String::new(),
            };
            format!(
                "{} {} {args}{site}{note}",
                pointer(f.child_sp, 4),
                pointer(f.return_address, 4)
            )
        });
    }
}

impl Report for StackSection {
    fn render(&self, out: &mut String) {
        // Standalone `k` output is not indented.
        let ps = match self {
            StackSection::Frames(t) if t.pointer_size == 4 => 4,
            _ => 8,
        };
        StackSection::render(self, out, "", ps);
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
    let pointer_size = model.pointer_size();
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
                        args: if pointer_size == 4 {
                            read_args_x86(space, f.child_sp)
                        } else {
                            read_args(space, f.child_sp)
                        },
                        ip: f.ip,
                        call_site: f.call_site,
                        trap_frame: f.trap_frame,
                        fpo: f.fpo,
                    })
                    .collect(),
                stopped,
                pointer_size,
            })
        }
    }
}

/// The four home slots above a frame's return address (`Args to Child`).
fn read_args(space: &AddressSpace, child_sp: u64) -> Option<Vec<u64>> {
    (0..4)
        .map(|i| space.read_u64(child_sp + 8 + 8 * i).ok())
        .collect()
}

/// x86: the three dwords above the saved EBP and the return address (`Args to Child`).
fn read_args_x86(space: &AddressSpace, child_ebp: u64) -> Option<Vec<u64>> {
    (0..3)
        .map(|i| space.read_u32(child_ebp + 8 + 4 * i).ok().map(u64::from))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn x86_trace(style: StackStyle) -> StackSection {
        let fpo = Fpo::from_fpo_data(0, 0, 0, 4, true, 0);
        let frame = |number, child, ret, args: [u64; 3], site: &str| FrameLine {
            number,
            child_sp: child,
            return_address: ret,
            args: Some(args.to_vec()),
            ip: 0,
            call_site: Some(site.to_string()),
            trap_frame: None,
            fpo: None,
        };
        let mut frames = vec![
            frame(
                0,
                0x8d3b_3b50,
                0x82a8_bb25,
                [0, 0x84d4_a030, 0x82b3_7d20],
                "nt!KiSwapContext+0x26",
            ),
            frame(
                1,
                0x8d3b_3b88,
                0x82a4_f1ea,
                [0x84d4_a0f0, 0x84d4_a030, 0x8d3b_3bd4],
                "nt!KiSwapThread+0x266",
            ),
            frame(
                2,
                0x8d3b_3d34,
                0x7780_70b4,
                [0x110, 0, 0],
                "nt!KiFastCallEntry+0x12a",
            ),
        ];
        frames[0].fpo = Some(fpo);
        frames[2].trap_frame = Some(0x8d3b_3d34);
        frames.push(FrameLine {
            number: 3,
            child_sp: 0x0012_f8f8,
            return_address: 0,
            args: None,
            ip: 0x7780_70b4,
            call_site: None,
            trap_frame: None,
            fpo: None,
        });
        StackSection::Frames(StackTrace {
            style,
            frames,
            stopped: None,
            pointer_size: 4,
        })
    }

    fn text(section: &StackSection) -> String {
        let mut out = String::new();
        Report::render(section, &mut out);
        out
    }

    #[test]
    fn x86_k_prints_childebp_and_retaddr_as_eight_digits() {
        assert_eq!(
            text(&x86_trace(StackStyle::Plain)),
            "ChildEBP RetAddr\n\
             8d3b3b50 82a8bb25 nt!KiSwapContext+0x26\n\
             8d3b3b88 82a4f1ea nt!KiSwapThread+0x266\n\
             8d3b3d34 778070b4 nt!KiFastCallEntry+0x12a (TrapFrame @ 8d3b3d34)\n\
             WARNING: Frame IP not in any known module. Following frames may be wrong.\n\
             0012f8f8 00000000 0x778070b4\n\n"
        );
    }

    #[test]
    fn x86_kb_and_kvn_print_three_args_and_the_fpo_annotation() {
        let kb = text(&x86_trace(StackStyle::WithArgs));
        assert!(kb.starts_with(
            "ChildEBP RetAddr  Args to Child\n\
             8d3b3b50 82a8bb25 00000000 84d4a030 82b37d20 nt!KiSwapContext+0x26\n"
        ));
        assert!(!kb.contains("FPO"), "{kb}");
        let kvn = text(&x86_trace(StackStyle::NumberedVerbose));
        let lines: Vec<&str> = kvn.lines().collect();
        assert_eq!(lines[0], " # ChildEBP RetAddr  Args to Child");
        assert_eq!(
            lines[1],
            "00 8d3b3b50 82a8bb25 00000000 84d4a030 82b37d20 nt!KiSwapContext+0x26 (FPO: [Uses EBP] [0,0,4])"
        );
        assert_eq!(
            lines[3],
            "02 8d3b3d34 778070b4 00000110 00000000 00000000 nt!KiFastCallEntry+0x12a (TrapFrame @ 8d3b3d34)"
        );
        assert_eq!(
            lines[5],
            "03 0012f8f8 00000000 ???????? ???????? ???????? 0x778070b4"
        );
    }
}
