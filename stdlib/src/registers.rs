//! `r [register]`: the implicit thread's registers, as its stack walk starts from them (the
//! processor's for a running thread, the saved context switch for the others).

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::format::pointer;
use crate::report::Report;
use kds_runtime::stack::thread_context;
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
    /// `module!symbol+0xoff` of rip.
    pub rip_symbol: Option<String>,
    /// Only the register asked for (`r rip`).
    #[serde(skip)]
    pub single: bool,
}

/// WinDbg's order: three a line.
const ORDER: [&str; 17] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rip", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12",
    "r13", "r14", "r15",
];

/// `r [name]`.
pub fn r_command(dbg: &mut Debugger, name: Option<&str>) -> Result<Registers, CommandError> {
    let thread = dbg.implicit_thread()?;
    let model = std::sync::Arc::clone(dbg.model());
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
    let names: Vec<&str> = match name {
        Some(n) => {
            let n = n.trim_start_matches('@').to_ascii_lowercase();
            let known = ORDER.iter().find(|o| **o == n).ok_or_else(|| {
                CommandError::usage(format!("bad register `{n}`: x64 integer registers and rip"))
            })?;
            vec![*known]
        }
        None => ORDER.to_vec(),
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
        rip_symbol: dbg.symbolize(ctx.rip).map(|s| s.to_string()),
        single: name.is_some(),
    })
}

impl Report for Registers {
    fn render(&self, out: &mut String) {
        let show = |r: &RegisterValue| {
            let v = r
                .value
                .map_or_else(|| "????????????????".to_string(), |v| format!("{v:016x}"));
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
            .find(|r| r.name == "rip")
            .and_then(|r| r.value);
        if let (Some(symbol), Some(rip)) = (&self.rip_symbol, rip) {
            let _ = writeln!(out, "{symbol}:");
            let _ = writeln!(out, "{}", pointer(rip, 8));
        }
    }
}
