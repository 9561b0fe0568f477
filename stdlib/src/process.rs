//! `!process`: every process, one selected by address or cid, or those with an image name;
//! flag 1 adds statistics, flags 2 and 4 add the threads (with stacks when both are set).

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::fields::{fast_ref, number, signed, text, value_number};
use crate::format::{hms_ms, plain_pointer};
use crate::report::Report;
use crate::thread::{thread_block, ThreadBlock, ThreadOptions};
use kds_runtime::model::{Object, Value};
use serde::Serialize;
use std::fmt::Write as _;

/// Which processes `!process` shows.
#[derive(Debug, Clone)]
pub enum ProcessSelector {
    /// `!process 0 ...` or no argument with an image name.
    All,
    /// An EPROCESS address or a cid.
    AddressOrCid(u64),
    /// A process the script already holds.
    Object(Object),
    /// No argument: the implicit process.
    Current,
}

/// The summary lines every block has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessSummary {
    pub address: u64,
    /// `None` prints as `none` (the System process has no session).
    pub session: Option<u64>,
    pub pid: u64,
    pub peb: u64,
    pub parent_pid: u64,
    pub dir_base: u64,
    pub object_table: u64,
    /// `None` prints as `<Data Not Accessible>`.
    pub handle_count: Option<u64>,
    pub image: String,
}

/// Flag 1's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessStatistics {
    pub vad_root: Option<u64>,
    pub vads: Option<u64>,
    pub private_pages: Option<u64>,
    pub modified_pages: Option<u64>,
    pub locked_pages: Option<u64>,
    pub device_map: Option<u64>,
    pub token: Option<u64>,
    pub elapsed_ms: Option<u64>,
    pub user_time_ms: Option<u64>,
    pub kernel_time_ms: Option<u64>,
    pub quota_paged: Option<u64>,
    pub quota_nonpaged: Option<u64>,
    pub working_set: Option<u64>,
    pub working_set_min: Option<u64>,
    pub working_set_max: Option<u64>,
    pub peak_working_set: Option<u64>,
    pub virtual_size: Option<u64>,
    pub peak_virtual_size: Option<u64>,
    pub page_fault_count: Option<u64>,
    pub memory_priority: Option<String>,
    pub base_priority: Option<i64>,
    pub commit_charge: Option<u64>,
    pub job: Option<u64>,
}

/// One process block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessBlock {
    #[serde(flatten)]
    pub summary: ProcessSummary,
    pub statistics: Option<ProcessStatistics>,
    pub threads: Vec<ThreadBlock>,
}

/// `!process` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessReport {
    /// `!process 0 ...` prints the `**** NT ACTIVE PROCESS DUMP ****` banner.
    pub all: bool,
    /// Set when a cid was searched for.
    pub searched_cid: Option<u64>,
    pub flags: u64,
    pub processes: Vec<ProcessBlock>,
    #[serde(skip)]
    pub pointer_size: u64,
}

/// Run `!process` with `selector`, `flags` (default 0x3 for all, else 0xF, as WinDbg) and an
/// optional image name filter.
pub fn process_command(
    dbg: &mut Debugger,
    selector: ProcessSelector,
    flags: Option<u64>,
    image: Option<&str>,
) -> Result<ProcessReport, CommandError> {
    let all = matches!(selector, ProcessSelector::All);
    let flags = flags.unwrap_or(if all { 0x3 } else { 0xf });
    let mut searched_cid = None;
    let selected: Vec<Object> = match selector {
        ProcessSelector::All => dbg.processes()?,
        ProcessSelector::Current => vec![dbg.implicit_process()?],
        ProcessSelector::Object(o) => vec![o],
        ProcessSelector::AddressOrCid(n) => {
            let processes = dbg.processes()?;
            if let Some(p) = processes.iter().find(|p| p.address() == n) {
                vec![p.clone()]
            } else {
                searched_cid = Some(n);
                processes
                    .into_iter()
                    .filter(|p| p.field("pid").ok().as_ref().and_then(value_number) == Some(n))
                    .collect()
            }
        }
    };
    let mut processes = Vec::new();
    for p in selected {
        if p.type_name() != "_EPROCESS" {
            return Err(CommandError::usage(format!(
                "`!process` needs a process, not a {}",
                p.type_name()
            )));
        }
        let summary = summary(&p)?;
        if let Some(want) = image {
            if !summary.image.eq_ignore_ascii_case(want) {
                continue;
            }
        }
        let statistics = (flags & 1 != 0).then(|| statistics(dbg, &p));
        let threads = if flags & 6 != 0 {
            let options = ThreadOptions {
                details: flags & 2 != 0,
                stack: flags & 6 == 6,
                indent: 8,
            };
            let mut blocks = Vec::new();
            for t in dbg.threads_of(&p)? {
                blocks.push(thread_block(dbg, &t, options)?);
            }
            blocks
        } else {
            Vec::new()
        };
        processes.push(ProcessBlock {
            summary,
            statistics,
            threads,
        });
    }
    if processes.is_empty() && !all {
        let what = match (searched_cid, image) {
            (Some(cid), _) => format!("no process has the address or cid {cid:#x}"),
            (None, Some(name)) => format!("no process has the image name {name}"),
            _ => "no process matched".into(),
        };
        return Err(CommandError::not_found(what));
    }
    Ok(ProcessReport {
        all,
        searched_cid,
        flags,
        processes,
        pointer_size: dbg.pointer_size(),
    })
}

/// The summary lines of `p`.
pub fn summary(p: &Object) -> Result<ProcessSummary, CommandError> {
    let n = |v: Value| value_number(&v).unwrap_or(0);
    Ok(ProcessSummary {
        address: p.address(),
        session: p.field("session")?.as_u64(),
        pid: n(p.field("pid")?),
        peb: n(p.field("peb")?),
        parent_pid: n(p.field("ppid")?),
        dir_base: n(p.field("dtb")?),
        object_table: number(p, &["ObjectTable"]).unwrap_or(0),
        handle_count: p.field("handles")?.as_u64(),
        image: text(p, "name").unwrap_or_default(),
    })
}

fn statistics(dbg: &Debugger, p: &Object) -> ProcessStatistics {
    let model = dbg.model();
    let clock = model.clock().ok();
    let ticks_ms = |t: Option<u64>| t.and_then(|t| clock.as_ref()?.ticks_to_ms(t));
    let now = model.system_time();
    let created = number(p, &["CreateTime"]);
    let elapsed_ms = match (now, created) {
        (Some(now), Some(c)) if now >= c && c != 0 => Some((now - c) / 10_000),
        _ => None,
    };
    let vm = |names: &[&str]| -> Option<u64> {
        let paths: Vec<String> = names.iter().map(|n| format!("Vm.{n}")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        number(p, &refs)
    };
    let memory_priority = number(
        p,
        &[
            "Vm.Instance.Flags.MemoryPriority",
            "Vm.Flags.MemoryPriority",
        ],
    )
    .map(|v| if v == 0 { "BACKGROUND" } else { "FOREGROUND" }.to_string());
    ProcessStatistics {
        vad_root: number(p, &["VadRoot.Root", "VadRoot.BalancedRoot.RightChild"]),
        vads: number(p, &["VadCount", "VadRoot.NumberGenericTableElements"]),
        private_pages: number(p, &["NumberOfPrivatePages"]),
        modified_pages: number(p, &["ModifiedPageCount"]),
        locked_pages: number(p, &["NumberOfLockedPages"]),
        device_map: fast_ref(p, "DeviceMap"),
        token: fast_ref(p, "Token"),
        elapsed_ms,
        user_time_ms: ticks_ms(split_time(p, "UserTime")),
        kernel_time_ms: ticks_ms(split_time(p, "KernelTime")),
        quota_paged: quota(p, "PsPagedPool", 1),
        quota_nonpaged: quota(p, "PsNonPagedPool", 0),
        working_set: vm(&["Instance.WorkingSetLeafSize", "WorkingSetSize"]),
        working_set_min: vm(&["Instance.MinimumWorkingSetSize", "MinimumWorkingSetSize"]),
        working_set_max: vm(&["Instance.MaximumWorkingSetSize", "MaximumWorkingSetSize"]),
        peak_working_set: vm(&["Instance.PeakWorkingSetSize", "PeakWorkingSetSize"]),
        virtual_size: number(p, &["VirtualSize"]),
        peak_virtual_size: number(p, &["PeakVirtualSize"]),
        page_fault_count: vm(&["Instance.PageFaultCount", "PageFaultCount"]),
        memory_priority,
        base_priority: signed(p, &["Pcb.BasePriority"]),
        commit_charge: number(p, &["CommitCharge"]),
        job: number(p, &["Job"]).filter(|j| *j != 0),
    }
}

/// A process time in ticks: `Pcb.<name>` where the build keeps it whole, else
/// `Pcb.<name>Low` with `<name>High` of the EPROCESS above it.
fn split_time(p: &Object, name: &str) -> Option<u64> {
    if let Some(t) = number(p, &[&format!("Pcb.{name}")]) {
        return Some(t);
    }
    let low = number(p, &[&format!("Pcb.{name}Low")])?;
    let high = number(p, &[&format!("{name}High")]).unwrap_or(0);
    Some(high << 32 | low)
}

/// Pool quota charged to the process, indexed by the `_PS_QUOTA_TYPE` constant `kind` (the
/// table's value, else `fallback`, the value it has had since NT 4).
fn quota(p: &Object, kind: &str, fallback: i64) -> Option<u64> {
    let index = p
        .table()
        .enum_type("_PS_QUOTA_TYPE")
        .ok()
        .and_then(|e| e.constants.iter().find(|(n, _)| n == kind).map(|(_, v)| *v))
        .unwrap_or(fallback);
    let paths = [
        format!("ProcessQuotaUsage[{index}]"),
        format!("QuotaUsage[{index}]"),
        format!("QuotaBlock.QuotaEntry[{index}].Usage"),
    ];
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    number(p, &refs)
}

fn or_q(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

impl ProcessSummary {
    fn render(&self, out: &mut String, ps: u64) {
        let session = self
            .session
            .map_or_else(|| "none".to_string(), |s| format!("{s:x}"));
        let handles = self
            .handle_count
            .map_or_else(|| "<Data Not Accessible>".to_string(), |h| format!("{h}."));
        let _ = writeln!(out, "PROCESS {}", plain_pointer(self.address, ps));
        let _ = writeln!(
            out,
            "    SessionId: {session}  Cid: {:04x}    Peb: {:08x}  ParentCid: {:04x}",
            self.pid, self.peb, self.parent_pid
        );
        let _ = writeln!(
            out,
            "    DirBase: {:08x}  ObjectTable: {}  HandleCount: {handles}",
            self.dir_base,
            plain_pointer(self.object_table, ps)
        );
        let _ = writeln!(out, "    Image: {}", self.image);
    }
}

impl ProcessStatistics {
    fn render(&self, out: &mut String, ps: u64) {
        let p = |a: Option<u64>| a.map_or_else(|| "?".into(), |a| plain_pointer(a, ps));
        let t = |ms: Option<u64>| ms.map_or_else(|| "?".into(), hms_ms);
        let elapsed = |ms: Option<u64>| match ms {
            Some(ms) if ms >= 86_400_000 => {
                format!("{} Days {}", ms / 86_400_000, hms_ms(ms % 86_400_000))
            }
            other => t(other),
        };
        let _ = writeln!(
            out,
            "    VadRoot {} Vads {} Clone 0 Private {}. Modified {}. Locked {}.",
            p(self.vad_root),
            or_q(self.vads),
            or_q(self.private_pages),
            or_q(self.modified_pages),
            or_q(self.locked_pages)
        );
        let _ = writeln!(out, "    DeviceMap {}", p(self.device_map));
        let line = |out: &mut String, label: &str, value: String| {
            let _ = writeln!(out, "    {label:<34}{value}");
        };
        line(out, "Token", p(self.token));
        line(out, "ElapsedTime", elapsed(self.elapsed_ms));
        line(out, "UserTime", t(self.user_time_ms));
        line(out, "KernelTime", t(self.kernel_time_ms));
        line(out, "QuotaPoolUsage[PagedPool]", or_q(self.quota_paged));
        line(
            out,
            "QuotaPoolUsage[NonPagedPool]",
            or_q(self.quota_nonpaged),
        );
        let kb = |v: Option<u64>| v.map_or_else(|| "?".into(), |v| format!("{}KB", v * 4));
        let _ = writeln!(
            out,
            "    Working Set Sizes (now,min,max)  ({}, {}, {}) ({}, {}, {})",
            or_q(self.working_set),
            or_q(self.working_set_min),
            or_q(self.working_set_max),
            kb(self.working_set),
            kb(self.working_set_min),
            kb(self.working_set_max)
        );
        line(out, "PeakWorkingSetSize", or_q(self.peak_working_set));
        let mb = |v: Option<u64>| v.map_or_else(|| "?".into(), |v| format!("{} Mb", v >> 20));
        line(out, "VirtualSize", mb(self.virtual_size));
        line(out, "PeakVirtualSize", mb(self.peak_virtual_size));
        line(out, "PageFaultCount", or_q(self.page_fault_count));
        line(
            out,
            "MemoryPriority",
            self.memory_priority.clone().unwrap_or_else(|| "?".into()),
        );
        line(
            out,
            "BasePriority",
            self.base_priority
                .map_or_else(|| "?".into(), |v| v.to_string()),
        );
        line(out, "CommitCharge", or_q(self.commit_charge));
        if let Some(job) = self.job {
            line(out, "Job", plain_pointer(job, ps));
        }
    }
}

impl Report for ProcessReport {
    fn render(&self, out: &mut String) {
        let ps = self.pointer_size;
        if let Some(cid) = self.searched_cid {
            let _ = writeln!(out, "Searching for Process with Cid == {cid:x}");
        }
        if self.all {
            out.push_str("**** NT ACTIVE PROCESS DUMP ****\n");
        }
        for block in &self.processes {
            block.summary.render(out, ps);
            if let Some(stats) = &block.statistics {
                stats.render(out, ps);
            }
            out.push('\n');
            for t in &block.threads {
                t.render(out);
                if t.details.is_some() && matches!(t.stack, crate::stack::StackSection::NotShown) {
                    out.push('\n');
                }
            }
            if !block.threads.is_empty() && block.threads.iter().all(|t| t.details.is_none()) {
                out.push('\n');
            }
        }
    }
}
