//! `.process` and `.thread`: show or change the implicit process and thread.

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::format::pointer;
use crate::report::Report;
use kds_runtime::model::Object;
use serde::Serialize;
use std::fmt::Write as _;

/// What `.process` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessSwitch {
    pub process: u64,
    pub image: String,
    /// With `/r`: how many user modules were loaded from the PEB loader list.
    pub user_modules: Option<usize>,
    #[serde(skip)]
    pub pointer_size: u64,
}

impl Report for ProcessSwitch {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Implicit process is now {}",
            pointer(self.process, self.pointer_size)
        );
        if let Some(n) = self.user_modules {
            out.push_str("Loading User Symbols\n");
            if n > 0 {
                let _ = writeln!(out, "{}", ".".repeat(n));
            }
        }
    }
}

/// `.process [/p] [/r] [process]`: with a process, make it the implicit one (its page tables
/// then translate user addresses; `/r` loads its user modules); without, show the current.
pub fn dot_process(
    dbg: &mut Debugger,
    process: Option<Object>,
    reload: bool,
) -> Result<ProcessSwitch, CommandError> {
    let ps = dbg.pointer_size();
    let Some(process) = process else {
        let current = dbg.implicit_process()?;
        return Ok(ProcessSwitch {
            process: current.address(),
            image: crate::fields::text(&current, "name").unwrap_or_default(),
            user_modules: None,
            pointer_size: ps,
        });
    };
    if process.type_name() != "_EPROCESS" {
        return Err(CommandError::usage(format!(
            "`.process` needs a process, not a {}",
            process.type_name()
        )));
    }
    let image = crate::fields::text(&process, "name").unwrap_or_default();
    dbg.set_process(process.clone(), false)?;
    let user_modules = if reload {
        Some(dbg.load_user_modules(&process)?)
    } else {
        None
    };
    Ok(ProcessSwitch {
        process: process.address(),
        image,
        user_modules,
        pointer_size: ps,
    })
}

/// What `.thread` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadSwitch {
    pub thread: u64,
    #[serde(skip)]
    pub pointer_size: u64,
}

impl Report for ThreadSwitch {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Implicit thread is now {}",
            pointer(self.thread, self.pointer_size)
        );
    }
}

/// `.thread [/p] [/r] [thread]`: with a thread, make it the implicit one (`/p` also makes its
/// process the implicit process, `/r` loads that process's user modules).
pub fn dot_thread(
    dbg: &mut Debugger,
    thread: Option<Object>,
    process_too: bool,
    reload: bool,
) -> Result<ThreadSwitch, CommandError> {
    let ps = dbg.pointer_size();
    let Some(thread) = thread else {
        let current = dbg.implicit_thread()?;
        return Ok(ThreadSwitch {
            thread: current.address(),
            pointer_size: ps,
        });
    };
    if thread.type_name() != "_ETHREAD" {
        return Err(CommandError::usage(format!(
            "`.thread` needs a thread, not a {}",
            thread.type_name()
        )));
    }
    if process_too {
        if let kds_runtime::model::Value::Object(p) = thread.field("process")? {
            dbg.set_process(p, reload)?;
        }
    }
    dbg.set_thread(thread.clone());
    Ok(ThreadSwitch {
        thread: thread.address(),
        pointer_size: ps,
    })
}
