//! `r [register]`: the implicit thread's registers, as its stack walk starts from them (the
//! processor's for a running thread, the saved context switch for the others).

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::format::pointer;
use crate::report::Report;
use kds_runtime::stack::{thread_context, x86_thread_context};
use kds_runtime::unwind::Register;
use serde::Serialize;
use std::fmt::Write as _;

/// One register; `None` when nothing saved it (a waiting thread's volatile registers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisterValue {
    pub name: String,
    pub value: Option<u64>,
}

/// `r` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registers {
    pub thread: u64,
    pub registers: Vec<RegisterValue>,
    /// `module!symbol+0xoff` of rip (eip on x86).
    pub rip_symbol: Option<String>,
    /// Only the register asked for (`r rip`).
    #[serde(skip)]
    pub single: bool,
    /// 8 on x64, 4 on x86 (register width and names).
    #[serde(skip)]
    pub pointer_size: u64,
}

/// WinDbg's order: three a line.
const ORDER: [&str; 17] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rip", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12",
    "r13", "r14", "r15",
];

/// WinDbg's x86 order: three a line (`efl` is EFLAGS).
const ORDER_X86: [&str; 10] = [
    "eax", "ebx", "ecx", "edx", "esi", "edi", "eip", "esp", "ebp", "efl",
];

/// `r [name]` on an x86 target: 32-bit registers, `{:08x}`.
fn r_x86(
    dbg: &mut Debugger,
    thread: &kds_runtime::model::Object,
    name: Option<&str>,
) -> Result<Registers, CommandError> {
    let model = std::sync::Arc::clone(dbg.model());
    let ctx = x86_thread_context(&model, thread).map_err(CommandError::NotFound)?;
    let shown = Shown {
        order: &ORDER_X86,
        known: "x86 integer registers, eip and efl",
        pointer_size: 4,
    };
    shown.registers(dbg, thread, name, |n| ctx.get(n), ctx.eip)
}

/// `r [name]`.
pub fn r_command(dbg: &mut Debugger, name: Option<&str>) -> Result<Registers, CommandError> {
    let thread = dbg.implicit_thread()?;
    let model = std::sync::Arc::clone(dbg.model());
    if model.pointer_size() == 4 {
        return r_x86(dbg, &thread, name);
    }
    let ctx = thread_context(&model, &thread).map_err(CommandError::NotFound)?;
    let value = |n: &str| -> Option<u64> {
        match n {
            "rip" => Some(ctx.rip),
            "rsp" => Some(ctx.rsp),
            other => Register::ALL
                .iter()
                .find(|r| r.name() == other)
                .and_then(|r| ctx.get(*r)),
        }
    };
    let shown = Shown {
        order: &ORDER,
        known: "x64 integer registers and rip",
        pointer_size: 8,
    };
    shown.registers(dbg, &thread, name, value, ctx.rip)
}

/// The registers `r` shows on one architecture.
struct Shown {
    /// All of them, in WinDbg's order.
    order: &'static [&'static str],
    /// What a register name may be, for the error on any other.
    known: &'static str,
    pointer_size: u64,
}

impl Shown {
    /// `name`'s value (all of them without a name), `value` giving each, and the instruction
    /// pointer `ip` symbolized.
    fn registers(
        &self,
        dbg: &mut Debugger,
        thread: &kds_runtime::model::Object,
        name: Option<&str>,
        value: impl Fn(&str) -> Option<u64>,
        ip: u64,
    ) -> Result<Registers, CommandError> {
        let names: Vec<&str> = match name {
            Some(n) => {
                let n = n.trim_start_matches('@').to_ascii_lowercase();
                let known = self.order.iter().find(|o| **o == n).ok_or_else(|| {
                    CommandError::usage(format!("bad register `{n}`: {}", self.known))
                })?;
                vec![*known]
            }
            None => self.order.to_vec(),
        };
        Ok(Registers {
            thread: thread.address(),
            registers: names
                .iter()
                .map(|n| RegisterValue {
                    name: (*n).to_string(),
                    value: value(n),
                })
                .collect(),
            rip_symbol: dbg.symbolize(ip).map(|s| s.to_string()),
            single: name.is_some(),
            pointer_size: self.pointer_size,
        })
    }
}

impl Report for Registers {
    fn render(&self, out: &mut String) {
        let x86 = self.pointer_size == 4;
        let show = |r: &RegisterValue| {
            let v = match (r.value, x86) {
                (Some(v), true) => format!("{v:08x}"),
                (Some(v), false) => format!("{v:016x}"),
                (None, true) => "????????".to_string(),
                (None, false) => "????????????????".to_string(),
            };
            format!("{:>3}={v}", r.name)
        };
        if self.single {
            for r in &self.registers {
                let _ = writeln!(out, "{}", show(r).trim_start());
            }
            return;
        }
        for line in self.registers.chunks(3) {
            let parts: Vec<String> = line.iter().map(show).collect();
            let _ = writeln!(out, "{}", parts.join(" "));
        }
        let rip = self
            .registers
            .iter()
            .find(|r| r.name == if x86 { "eip" } else { "rip" })
            .and_then(|r| r.value);
        if let (Some(symbol), Some(rip)) = (&self.rip_symbol, rip) {
            let _ = writeln!(out, "{symbol}:");
            let _ = writeln!(out, "{}", pointer(rip, if x86 { 4 } else { 8 }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_r_prints_ten_registers_three_a_line_as_eight_digits() {
        let values = [
            Some(0x1),
            None,
            Some(0x2),
            None,
            None,
            None,
            Some(0x82a8_bb25),
            Some(0x8d3b_3b5c),
            Some(0x8d3b_3b88),
            Some(0x246),
        ];
        let regs = Registers {
            thread: 0x84d4_a030,
            registers: ORDER_X86
                .iter()
                .zip(values)
                .map(|(n, value)| RegisterValue {
                    name: (*n).to_string(),
                    value,
                })
                .collect(),
            rip_symbol: Some("nt!KiSwapThread+0x266".into()),
            single: false,
            pointer_size: 4,
        };
        let mut out = String::new();
        regs.render(&mut out);
        assert_eq!(
            out,
            "eax=00000001 ebx=???????? ecx=00000002\n\
             edx=???????? esi=???????? edi=????????\n\
             eip=82a8bb25 esp=8d3b3b5c ebp=8d3b3b88\n\
             efl=00000246\n\
             nt!KiSwapThread+0x266:\n\
             82a8bb25\n"
        );
    }
}
