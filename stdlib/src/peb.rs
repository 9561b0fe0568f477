//! `!peb`: the process environment block of the implicit process (or one at an address):
//! flags, image base, the loader lists and their modules, heap, parameters, environment.

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::fields::{number, text, value_number};
use crate::format::plain_pointer;
use crate::report::Report;
use chrono::DateTime;
use kds_runtime::model::{Object, Value};
use serde::Serialize;
use std::fmt::Write as _;

/// Most environment bytes read (the block is usually a few KiB).
const MAX_ENVIRONMENT: u64 = 0x1_0000;

/// One module of the loader's load-order list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PebModule {
    pub base: u64,
    pub timestamp: Option<u32>,
    pub path: String,
}

/// A `Flink . Blink` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ListLinks {
    pub flink: u64,
    pub blink: u64,
}

/// What `!peb` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PebReport {
    /// The process has no PEB (the System process, a kernel-only context).
    NoPeb {
        process: u64,
    },
    /// The PEB's page is not in memory.
    Unreadable {
        address: u64,
        reason: String,
        #[serde(skip)]
        pointer_size: u64,
    },
    Peb(Box<Peb>),
}

/// A readable PEB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peb {
    pub address: u64,
    pub inherited_address_space: Option<bool>,
    pub read_image_file_exec_options: Option<bool>,
    pub being_debugged: Option<bool>,
    pub image_base: Option<u64>,
    pub nt_global_flag: Option<u64>,
    pub ldr: Option<u64>,
    pub ldr_initialized: Option<bool>,
    pub in_initialization_order: Option<ListLinks>,
    pub in_load_order: Option<ListLinks>,
    pub in_memory_order: Option<ListLinks>,
    pub modules: Vec<PebModule>,
    pub subsystem_data: Option<u64>,
    pub process_heap: Option<u64>,
    pub process_parameters: Option<u64>,
    pub current_directory: Option<String>,
    pub window_title: Option<String>,
    pub image_file: Option<String>,
    pub command_line: Option<String>,
    pub dll_path: Option<String>,
    pub environment: Option<u64>,
    pub variables: Vec<String>,
    /// Problems met on the way (a torn loader list, an unreadable environment).
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub pointer_size: u64,
}

/// `!peb [address]`: the implicit process's PEB, or the PEB at `address` read in the
/// implicit process's address space.
pub fn peb_command(dbg: &mut Debugger, address: Option<u64>) -> Result<PebReport, CommandError> {
    let ps = dbg.pointer_size();
    let process = dbg.implicit_process()?;
    let address = match address {
        Some(a) => a,
        None => value_number(&process.field("peb")?).unwrap_or(0),
    };
    if address == 0 {
        return Ok(PebReport::NoPeb {
            process: process.address(),
        });
    }
    let peb = Object::in_scope(process.scope().clone(), "_PEB", address)?;
    // One field read tells whether the PEB's page is there at all.
    if let Err(e) = peb.raw_field("ImageBaseAddress") {
        return Ok(PebReport::Unreadable {
            address,
            reason: e.to_string(),
            pointer_size: ps,
        });
    }
    let flag = |name: &str| number(&peb, &[name]).map(|v| v != 0);
    let links = |path: &str| -> Option<ListLinks> {
        Some(ListLinks {
            flink: number(&peb, &[&format!("Ldr.{path}.Flink")])?,
            blink: number(&peb, &[&format!("Ldr.{path}.Blink")])?,
        })
    };
    let mut warnings = Vec::new();
    let modules = match dbg.model().process_modules(&process) {
        Ok(rows) => {
            warnings.extend(rows.warnings.iter().map(ToString::to_string));
            rows.rows.iter().map(peb_module).collect()
        }
        Err(e) => {
            warnings.push(format!("cannot read the loader list: {e}"));
            Vec::new()
        }
    };
    let parameter = |name: &str| text_at(&peb, &format!("ProcessParameters.{name}"));
    let environment = number(&peb, &["ProcessParameters.Environment"]).filter(|e| *e != 0);
    let variables = match environment {
        Some(at) => {
            let size = number(&peb, &["ProcessParameters.EnvironmentSize"])
                .filter(|s| *s != 0)
                .unwrap_or(MAX_ENVIRONMENT)
                .min(MAX_ENVIRONMENT);
            match read_environment(&process, at, size) {
                Ok(vars) => vars,
                Err(e) => {
                    warnings.push(format!("cannot read the environment: {e}"));
                    Vec::new()
                }
            }
        }
        None => Vec::new(),
    };
    Ok(PebReport::Peb(Box::new(Peb {
        address,
        inherited_address_space: flag("InheritedAddressSpace"),
        read_image_file_exec_options: flag("ReadImageFileExecOptions"),
        being_debugged: flag("BeingDebugged"),
        image_base: number(&peb, &["ImageBaseAddress"]),
        nt_global_flag: number(&peb, &["NtGlobalFlag"]),
        ldr: number(&peb, &["Ldr"]),
        ldr_initialized: number(&peb, &["Ldr.Initialized"]).map(|v| v != 0),
        in_initialization_order: links("InInitializationOrderModuleList"),
        in_load_order: links("InLoadOrderModuleList"),
        in_memory_order: links("InMemoryOrderModuleList"),
        modules,
        subsystem_data: number(&peb, &["SubSystemData"]),
        process_heap: number(&peb, &["ProcessHeap"]),
        process_parameters: number(&peb, &["ProcessParameters"]),
        current_directory: parameter("CurrentDirectory.DosPath"),
        window_title: parameter("WindowTitle"),
        image_file: parameter("ImagePathName"),
        command_line: parameter("CommandLine"),
        dll_path: parameter("DllPath"),
        environment,
        variables,
        warnings,
        pointer_size: ps,
    })))
}

fn text_at(o: &Object, path: &str) -> Option<String> {
    match o.raw_field(path).ok()? {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

fn peb_module(row: &Object) -> PebModule {
    PebModule {
        base: value_number(&row.field("base").unwrap_or(Value::Null)).unwrap_or(0),
        timestamp: number(row, &["TimeDateStamp"]).and_then(|t| u32::try_from(t).ok()),
        path: text(row, "path").unwrap_or_default(),
    }
}

/// `NAME=VALUE` strings of a UTF-16 environment block, up to the empty string that ends it.
fn read_environment(process: &Object, at: u64, size: u64) -> Result<Vec<String>, CommandError> {
    let bytes = process
        .scope()
        .read(at, size & !1, "the environment block")?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok(units
        .split(|u| *u == 0)
        .take_while(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect())
}

/// A PE time stamp as WinDbg's `!peb` and `lm` print it: `Dec 19 13:39:10 2018`.
#[must_use]
pub fn timestamp_date(stamp: u32) -> String {
    DateTime::from_timestamp(i64::from(stamp), 0).map_or_else(
        || "invalid timestamp".to_string(),
        |t| t.format("%b %d %H:%M:%S %Y").to_string(),
    )
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "Yes",
        Some(false) => "No",
        None => "?",
    }
}

impl Report for PebReport {
    fn render(&self, out: &mut String) {
        match self {
            PebReport::NoPeb { .. } => out.push_str("PEB NULL...\n"),
            PebReport::Unreadable {
                address,
                reason,
                pointer_size,
            } => {
                let at = plain_pointer(*address, *pointer_size);
                let _ = writeln!(out, "PEB at {at}");
                let _ = writeln!(out, "error 1 InitTypeRead( nt!_PEB at {at}): {reason}");
            }
            PebReport::Peb(peb) => peb.render(out),
        }
    }
}

impl Peb {
    fn render(&self, out: &mut String) {
        let ps = self.pointer_size;
        let p = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| plain_pointer(v, ps));
        let s = |v: &Option<String>| {
            v.as_ref()
                .map_or_else(|| "< Name not readable >".to_string(), Clone::clone)
        };
        let links = |l: Option<ListLinks>| {
            l.map_or_else(
                || "?".to_string(),
                |l| {
                    format!(
                        "{} . {}",
                        plain_pointer(l.flink, ps),
                        plain_pointer(l.blink, ps)
                    )
                },
            )
        };
        let _ = writeln!(out, "PEB at {}", plain_pointer(self.address, ps));
        let _ = writeln!(
            out,
            "    InheritedAddressSpace:    {}",
            yes_no(self.inherited_address_space)
        );
        let _ = writeln!(
            out,
            "    ReadImageFileExecOptions: {}",
            yes_no(self.read_image_file_exec_options)
        );
        let _ = writeln!(
            out,
            "    BeingDebugged:            {}",
            yes_no(self.being_debugged)
        );
        let _ = writeln!(out, "    ImageBaseAddress:         {}", p(self.image_base));
        if let Some(flags) = self.nt_global_flag {
            let _ = writeln!(out, "    NtGlobalFlag:             {flags:x}");
        }
        let _ = writeln!(out, "    Ldr                       {}", p(self.ldr));
        let _ = writeln!(
            out,
            "    Ldr.Initialized:          {}",
            yes_no(self.ldr_initialized)
        );
        let _ = writeln!(
            out,
            "    Ldr.InInitializationOrderModuleList: {}",
            links(self.in_initialization_order)
        );
        let _ = writeln!(
            out,
            "    Ldr.InLoadOrderModuleList:           {}",
            links(self.in_load_order)
        );
        let _ = writeln!(
            out,
            "    Ldr.InMemoryOrderModuleList:         {}",
            links(self.in_memory_order)
        );
        let _ = writeln!(out, "{:>24} {:<30}Module", "Base", "TimeStamp");
        for m in &self.modules {
            let stamp = m.timestamp.map_or_else(
                || format!("{:8} {:20}", "", ""),
                |t| format!("{t:08x} {}", timestamp_date(t)),
            );
            let _ = writeln!(out, "{:>24x} {stamp} {}", m.base, m.path);
        }
        for w in &self.warnings {
            let _ = writeln!(out, "    WARNING: {w}");
        }
        let _ = writeln!(out, "    SubSystemData:     {}", p(self.subsystem_data));
        let _ = writeln!(out, "    ProcessHeap:       {}", p(self.process_heap));
        let _ = writeln!(out, "    ProcessParameters: {}", p(self.process_parameters));
        let _ = writeln!(
            out,
            "    CurrentDirectory:  '{}'",
            s(&self.current_directory)
        );
        let _ = writeln!(out, "    WindowTitle:  '{}'", s(&self.window_title));
        let _ = writeln!(out, "    ImageFile:    '{}'", s(&self.image_file));
        let _ = writeln!(out, "    CommandLine:  '{}'", s(&self.command_line));
        let _ = writeln!(out, "    DllPath:      '{}'", s(&self.dll_path));
        let _ = writeln!(out, "    Environment:  {}", p(self.environment));
        for v in &self.variables {
            let _ = writeln!(out, "        {v}");
        }
    }
}
