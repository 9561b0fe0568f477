//! `!thread` and the thread blocks inside `!process`: state and wait, wait objects, IRPs,
//! impersonation, owning and attached process, wait time, counters, start address, stack
//! bounds, priorities, then the stack.

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::fields::{fast_ref, number, signed, text, value_number};
use crate::format::{elapsed_ms, hms_ms, plain_pointer};
use crate::report::Report;
use crate::stack::{StackSection, StackStyle};
use kds_runtime::model::{Object, Value};
use serde::Serialize;
use std::fmt::Write as _;

/// Most wait blocks followed per thread (a thread waits on at most 64 objects).
const MAX_WAIT_BLOCKS: usize = 64;
/// Most IRPs listed per thread.
const MAX_IRPS: usize = 256;

/// What the thread is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ThreadState {
    Running {
        processor: u64,
    },
    Ready {
        processor: u64,
    },
    Waiting {
        reason: String,
        mode: String,
        alertable: bool,
    },
    /// Any other state, by its `_KTHREAD_STATE` name.
    Other {
        name: String,
    },
}

impl ThreadState {
    fn render(&self) -> String {
        match self {
            ThreadState::Running { processor } => format!("RUNNING on processor {processor}"),
            ThreadState::Ready { processor } => format!("READY on processor {processor}"),
            ThreadState::Waiting {
                reason,
                mode,
                alertable,
            } => format!(
                "WAIT: ({reason}) {mode} {}",
                if *alertable {
                    "Alertable"
                } else {
                    "Non-Alertable"
                }
            ),
            ThreadState::Other { name } => name.to_ascii_uppercase(),
        }
    }
}

/// One object a thread waits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitObject {
    pub address: u64,
    /// `NotificationEvent`, `SynchronizationEvent`, `Mutant`, `Semaphore`, ...
    pub kind: String,
    /// For a mutant: its owner.
    pub owner: Option<u64>,
}

/// One IRP on the thread's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IrpLine {
    pub address: u64,
    pub irp_type: u64,
    pub size: u64,
    pub flags: u64,
    pub mdl: u64,
}

/// A process named in the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessRef {
    pub address: u64,
    pub image: String,
}

/// The detail lines of a thread block (flags 2 of `!process`, and `!thread`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadDetails {
    pub wait_objects: Vec<WaitObject>,
    pub irps: Vec<IrpLine>,
    /// The impersonation token, when the thread impersonates.
    pub impersonation_token: Option<u64>,
    pub device_map: Option<u64>,
    pub owning_process: ProcessRef,
    pub attached_process: Option<ProcessRef>,
    pub wait_start_tick: Option<u64>,
    pub ticks: Option<u64>,
    pub wait_ms: Option<u64>,
    pub context_switches: Option<u64>,
    pub ideal_processor: Option<u64>,
    pub user_time_ms: Option<u64>,
    pub kernel_time_ms: Option<u64>,
    pub win32_start_address: u64,
    pub win32_start_symbol: Option<String>,
    pub stack_init: u64,
    pub stack_current: u64,
    pub stack_base: u64,
    pub stack_limit: u64,
    pub stack_call: u64,
    pub priority: Option<i64>,
    pub base_priority: Option<i64>,
    pub priority_decrement: Option<i64>,
    pub io_priority: Option<u64>,
    pub page_priority: Option<u64>,
}

/// A thread as `!thread` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadBlock {
    pub address: u64,
    pub pid: u64,
    pub tid: u64,
    pub teb: u64,
    pub win32_thread: u64,
    pub state: ThreadState,
    /// Absent in the one-line form (`!process` flags 4 without 2).
    pub details: Option<ThreadDetails>,
    pub stack: StackSection,
    #[serde(skip)]
    pub indent: usize,
    #[serde(skip)]
    pub pointer_size: u64,
}

/// How much of a thread to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadOptions {
    pub details: bool,
    pub stack: bool,
    /// Spaces before the `THREAD` line (8 inside `!process`, 0 for `!thread`).
    pub indent: usize,
}

/// Collect the block of `thread`.
pub fn thread_block(
    dbg: &mut Debugger,
    thread: &Object,
    options: ThreadOptions,
) -> Result<ThreadBlock, CommandError> {
    let ps = dbg.pointer_size();
    let pid = value_number(&thread.field("pid")?).unwrap_or(0);
    let tid = value_number(&thread.field("tid")?).unwrap_or(0);
    let teb = number(thread, &["Tcb.Teb"]).unwrap_or(0);
    let win32_thread = number(thread, &["Tcb.Win32Thread"]).unwrap_or(0);
    let state = thread_state(thread);
    let details = if options.details {
        Some(details(dbg, thread, &state)?)
    } else {
        None
    };
    let stack = if options.stack {
        crate::stack::thread_stack(dbg, thread, StackStyle::WithArgs)
    } else {
        StackSection::NotShown
    };
    Ok(ThreadBlock {
        address: thread.address(),
        pid,
        tid,
        teb,
        win32_thread,
        state,
        details,
        stack,
        indent: options.indent,
        pointer_size: ps,
    })
}

fn enum_name(v: &Value) -> Option<String> {
    match v {
        Value::Enum(e) => e.name.clone(),
        _ => None,
    }
}

fn thread_state(thread: &Object) -> ThreadState {
    let state = thread.field("state").ok();
    let name = state.as_ref().and_then(enum_name).unwrap_or_else(|| {
        format!(
            "state {}",
            state.as_ref().and_then(value_number).unwrap_or(0)
        )
    });
    let processor = number(thread, &["Tcb.NextProcessor"]).unwrap_or(0);
    match name.as_str() {
        "Running" => ThreadState::Running { processor },
        "Ready" => ThreadState::Ready { processor },
        "Waiting" => ThreadState::Waiting {
            reason: thread
                .field("wait_reason")
                .ok()
                .as_ref()
                .and_then(enum_name)
                .unwrap_or_else(|| "Unknown".into()),
            mode: match number(thread, &["Tcb.WaitMode"]) {
                Some(0) => "KernelMode".into(),
                _ => "UserMode".into(),
            },
            alertable: number(thread, &["Tcb.Alertable"]).unwrap_or(0) != 0,
        },
        _ => ThreadState::Other { name },
    }
}

fn details(
    dbg: &mut Debugger,
    thread: &Object,
    state: &ThreadState,
) -> Result<ThreadDetails, CommandError> {
    let model = std::sync::Arc::clone(dbg.model());
    let owning = match thread.field("process")? {
        Value::Object(p) => Some(p),
        _ => None,
    };
    let process_ref = |p: &Object| ProcessRef {
        address: p.address(),
        image: text(p, "name").unwrap_or_default(),
    };
    let owning_process = owning.as_ref().map_or(
        ProcessRef {
            address: number(thread, &["Tcb.Process"]).unwrap_or(0),
            image: String::new(),
        },
        process_ref,
    );
    let attached_process = number(thread, &["Tcb.ApcState.Process"])
        .filter(|a| *a != 0 && *a != owning_process.address)
        .map(|a| match model.process(a) {
            Ok(p) => process_ref(&p),
            Err(_) => ProcessRef {
                address: a,
                image: String::new(),
            },
        });
    let clock = model.clock().ok();
    let ticks_ms = |ticks: Option<u64>| ticks.and_then(|t| clock.as_ref()?.ticks_to_ms(t));
    let waiting = matches!(state, ThreadState::Waiting { .. });
    let win32_start_address = number(thread, &["Win32StartAddress"]).unwrap_or(0);
    let ticks = thread
        .field("wait_ticks")
        .ok()
        .as_ref()
        .and_then(value_number);
    Ok(ThreadDetails {
        wait_objects: if waiting {
            wait_objects(thread)
        } else {
            Vec::new()
        },
        irps: irps(thread),
        impersonation_token: impersonation(thread),
        device_map: owning.as_ref().and_then(|p| fast_ref(p, "DeviceMap")),
        owning_process,
        attached_process,
        wait_start_tick: number(thread, &["Tcb.WaitTime"]),
        ticks,
        wait_ms: ticks_ms(ticks),
        context_switches: number(thread, &["Tcb.ContextSwitches"]),
        ideal_processor: number(thread, &["Tcb.IdealProcessor"]),
        user_time_ms: ticks_ms(number(thread, &["Tcb.UserTime"])),
        kernel_time_ms: ticks_ms(number(thread, &["Tcb.KernelTime"])),
        win32_start_address,
        win32_start_symbol: dbg.symbolize(win32_start_address).map(|s| s.to_string()),
        stack_init: number(thread, &["Tcb.InitialStack"]).unwrap_or(0),
        stack_current: number(thread, &["Tcb.KernelStack"]).unwrap_or(0),
        stack_base: number(thread, &["Tcb.StackBase"]).unwrap_or(0),
        stack_limit: number(thread, &["Tcb.StackLimit"]).unwrap_or(0),
        stack_call: number(thread, &["Tcb.CallbackStack"]).unwrap_or(0),
        priority: signed(thread, &["Tcb.Priority"]),
        base_priority: signed(thread, &["Tcb.BasePriority"]),
        priority_decrement: signed(thread, &["Tcb.PriorityDecrement"]),
        io_priority: number(thread, &["ThreadIoPriority"]),
        page_priority: number(thread, &["ThreadPagePriority"]),
    })
}

/// The objects of the thread's wait blocks: a `NextWaitBlock` ring where the build links
/// them, else `WaitBlockCount` consecutive blocks.
fn wait_objects(thread: &Object) -> Vec<WaitObject> {
    let table = thread.table();
    let Some(first) = number(thread, &["Tcb.WaitBlockList"]).filter(|a| *a != 0) else {
        return Vec::new();
    };
    let mut blocks = Vec::new();
    if table.field("_KWAIT_BLOCK", "NextWaitBlock").is_ok() {
        let mut at = first;
        while blocks.len() < MAX_WAIT_BLOCKS {
            blocks.push(at);
            let Ok(block) = thread.scope().model().object("_KWAIT_BLOCK", at) else {
                break;
            };
            match number(&block, &["NextWaitBlock"]) {
                Some(next) if next != first && next != 0 && !blocks.contains(&next) => at = next,
                _ => break,
            }
        }
    } else {
        let count = number(thread, &["Tcb.WaitBlockCount"]).unwrap_or(1).max(1);
        let size = table.size_of("_KWAIT_BLOCK").unwrap_or(0);
        for i in 0..count.min(MAX_WAIT_BLOCKS as u64) {
            blocks.push(first + i * size);
        }
    }
    let model = thread.model();
    blocks
        .into_iter()
        .filter_map(|b| {
            let block = model.object("_KWAIT_BLOCK", b).ok()?;
            let object = number(&block, &["Object"]).filter(|o| *o != 0)?;
            Some(describe_wait_object(thread, object))
        })
        .collect()
}

/// WinDbg's word for a dispatcher object, from the `_KOBJECTS` constant its header's `Type`
/// names.
fn describe_wait_object(thread: &Object, address: u64) -> WaitObject {
    let model = thread.model();
    let header = model.object("_DISPATCHER_HEADER", address).ok();
    let type_value = header.as_ref().and_then(|h| number(h, &["Type"]));
    let constant = type_value.and_then(|t| {
        let e = thread.table().enum_type("_KOBJECTS").ok()?;
        e.name_of(i64::try_from(t).ok()?).map(str::to_string)
    });
    let kind = match constant.as_deref() {
        Some("EventNotificationObject") => "NotificationEvent".to_string(),
        Some("EventSynchronizationObject") => "SynchronizationEvent".to_string(),
        Some("MutantObject") => "Mutant".to_string(),
        Some("SemaphoreObject") => "Semaphore".to_string(),
        Some("TimerNotificationObject") => "NotificationTimer".to_string(),
        Some("TimerSynchronizationObject") => "SynchronizationTimer".to_string(),
        Some("QueueObject") => "QueueObject".to_string(),
        Some("ProcessObject") => "ProcessObject".to_string(),
        Some("ThreadObject") => "ThreadObject".to_string(),
        Some("GateObject") => "Gate".to_string(),
        Some(other) => other.trim_end_matches("Object").to_string(),
        None => match type_value {
            Some(t) => format!("Unknown (Type {t})"),
            None => "<object header not readable>".to_string(),
        },
    };
    let owner = (kind == "Mutant")
        .then(|| {
            model
                .object("_KMUTANT", address)
                .ok()
                .and_then(|m| number(&m, &["OwnerThread"]))
        })
        .flatten();
    WaitObject {
        address,
        kind,
        owner,
    }
}

fn irps(thread: &Object) -> Vec<IrpLine> {
    let model = thread.model();
    let Ok(head) = thread.field_address("IrpList") else {
        return Vec::new();
    };
    let Ok(rows) = model.walk_list(
        std::sync::Arc::clone(thread.space()),
        head,
        "_IRP",
        "ThreadListEntry",
    ) else {
        return Vec::new();
    };
    rows.rows
        .iter()
        .take(MAX_IRPS)
        .map(|irp| IrpLine {
            address: irp.address(),
            irp_type: number(irp, &["Type"]).unwrap_or(0),
            size: number(irp, &["Size"]).unwrap_or(0),
            flags: number(irp, &["Flags"]).unwrap_or(0),
            mdl: number(irp, &["MdlAddress"]).unwrap_or(0),
        })
        .collect()
}

fn impersonation(thread: &Object) -> Option<u64> {
    if number(thread, &["ActiveImpersonationInfo"])? == 0 {
        return None;
    }
    number(
        thread,
        &[
            "ClientSecurity.ImpersonationToken",
            "ClientSecurity.ImpersonationData",
        ],
    )
    .map(|t| t & !7)
}

impl Report for ThreadBlock {
    fn render(&self, out: &mut String) {
        // Detail lines align with `THREAD`; wait objects and IRPs sit four columns in.
        let pad = " ".repeat(self.indent);
        let sub = pad.clone();
        let ps = self.pointer_size;
        let p = |a: u64| plain_pointer(a, ps);
        let _ = writeln!(
            out,
            "{pad}THREAD {}  Cid {:04x}.{:04x}  Teb: {} Win32Thread: {} {}",
            p(self.address),
            self.pid,
            self.tid,
            p(self.teb),
            p(self.win32_thread),
            self.state.render()
        );
        let Some(d) = &self.details else {
            return;
        };
        for w in &d.wait_objects {
            let owner = w
                .owner
                .map(|o| format!(" - owning thread {}", p(o)))
                .unwrap_or_default();
            let _ = writeln!(out, "{sub}    {}  {}{owner}", p(w.address), w.kind);
        }
        if !d.irps.is_empty() {
            let _ = writeln!(out, "{sub}IRP List:");
            for irp in &d.irps {
                let _ = writeln!(
                    out,
                    "{sub}    {}: ({:04x},{:04x}) Flags: {:08x}  Mdl: {}",
                    p(irp.address),
                    irp.irp_type,
                    irp.size,
                    irp.flags,
                    p(irp.mdl)
                );
            }
        }
        match d.impersonation_token {
            Some(t) => {
                let _ = writeln!(
                    out,
                    "{sub}Impersonation token:  {} (Level Impersonation)",
                    p(t)
                );
            }
            None => {
                let _ = writeln!(out, "{sub}Not impersonating");
            }
        }
        if let Some(map) = d.device_map {
            let _ = writeln!(out, "{sub}DeviceMap                 {}", p(map));
        }
        let _ = writeln!(
            out,
            "{sub}Owning Process            {:<23}Image:         {}",
            p(d.owning_process.address),
            d.owning_process.image
        );
        match &d.attached_process {
            Some(a) => {
                let _ = writeln!(
                    out,
                    "{sub}Attached Process          {:<23}Image:         {}",
                    p(a.address),
                    a.image
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{sub}Attached Process          N/A            Image:         N/A"
                );
            }
        }
        let tick = d
            .wait_start_tick
            .map_or_else(|| "?".to_string(), |t| t.to_string());
        let ticks = match (d.ticks, d.wait_ms) {
            (Some(t), Some(ms)) => format!("{t} ({})", elapsed_ms(ms)),
            (Some(t), None) => t.to_string(),
            _ => "?".to_string(),
        };
        let _ = writeln!(
            out,
            "{sub}Wait Start TickCount      {tick:<15}Ticks: {ticks}"
        );
        let _ = writeln!(
            out,
            "{sub}Context Switch Count      {:<15}IdealProcessor: {}",
            opt(d.context_switches),
            opt(d.ideal_processor)
        );
        let _ = writeln!(
            out,
            "{sub}UserTime                  {}",
            time(d.user_time_ms)
        );
        let _ = writeln!(
            out,
            "{sub}KernelTime                {}",
            time(d.kernel_time_ms)
        );
        let start = match &d.win32_start_symbol {
            Some(s) => format!("{s} (0x{})", p(d.win32_start_address)),
            None => format!("0x{}", p(d.win32_start_address)),
        };
        let _ = writeln!(out, "{sub}Win32 Start Address {start}");
        let _ = writeln!(
            out,
            "{sub}Stack Init {} Current {}",
            p(d.stack_init),
            p(d.stack_current)
        );
        let _ = writeln!(
            out,
            "{sub}Base {} Limit {} Call {}",
            p(d.stack_base),
            p(d.stack_limit),
            p(d.stack_call)
        );
        let _ = writeln!(
            out,
            "{sub}Priority {} BasePriority {} PriorityDecrement {} IoPriority {} PagePriority {}",
            opt_i(d.priority),
            opt_i(d.base_priority),
            opt_i(d.priority_decrement),
            opt(d.io_priority),
            opt(d.page_priority)
        );
        self.stack.render(out, &sub, ps);
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn opt_i(v: Option<i64>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn time(ms: Option<u64>) -> String {
    ms.map_or_else(|| "?".to_string(), hms_ms)
}

/// `!thread [address]`: the given thread, else the implicit one.
pub fn thread_command(
    dbg: &mut Debugger,
    address: Option<u64>,
) -> Result<ThreadBlock, CommandError> {
    let thread = match address {
        Some(a) => dbg.model().thread(a)?,
        None => dbg.implicit_thread()?,
    };
    if thread.type_name() != "_ETHREAD" {
        return Err(CommandError::usage(format!(
            "{:#x} is not a thread",
            thread.address()
        )));
    }
    thread_block(
        dbg,
        &thread,
        ThreadOptions {
            details: true,
            stack: true,
            indent: 0,
        },
    )
}
