//! The collections playbooks query (`processes`, `threads`, `modules`) and the friendly
//! fields of their rows.
//!
//! Friendly fields read from the row's own structure fail like raw fields do; those that
//! follow pointers to other structures (`image_path`, `command_line`, `handles`, `session`,
//! `process`) and those needing the clock (`wait_ticks`, `wait_ms`) are `Null` when that
//! memory cannot be read or the build does not have what they need.

use super::handles::{count_in_use, HandleTableLayout};
use super::list::{walk_list_raw, ListLayout, ListProblem, ListWarning};
use super::object::{latin1_until_nul, Object, Pointer, RowKind};
use super::{ModelContext, ModelError, Value};
use crate::mmu::AddressSpace;
use crate::symbols::TypeRef;
use std::sync::Arc;

/// Friendly fields of a process row (`_EPROCESS`).
pub const PROCESS_FIELDS: &[&str] = &[
    "name",
    "pid",
    "ppid",
    "threads",
    "handles",
    "session",
    "create_time",
    "peb",
    "dtb",
    "address",
    "image_path",
    "command_line",
    "commit",
];

/// Friendly fields of a thread row (`_ETHREAD`).
pub const THREAD_FIELDS: &[&str] = &[
    "tid",
    "pid",
    "process",
    "address",
    "state",
    "wait_reason",
    "wait_ticks",
    "wait_ms",
    "teb",
    "start_address",
    "win32_start_address",
    "priority",
    "base_priority",
    "kernel_stack_resident",
    "stack",
];

/// Friendly fields of a module row (kernel `_KLDR_DATA_TABLE_ENTRY` or user
/// `_LDR_DATA_TABLE_ENTRY`).
pub const MODULE_FIELDS: &[&str] = &["name", "path", "base", "size", "end", "address"];

/// `_KTHREAD_STATE` names for tables that lack the enum (Windows 7's): its values have not
/// changed since NT 4.
const KTHREAD_STATE_FALLBACK: &[&str] = &[
    "Initialized",
    "Ready",
    "Running",
    "Standby",
    "Terminated",
    "Waiting",
    "Transition",
    "DeferredReady",
    "GateWaitObsolete",
    "WaitingForProcessInSwap",
];

/// Rows of a collection and what the list walks behind it reported.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub rows: Vec<Object>,
    pub warnings: Vec<ListWarning>,
}

impl Rows {
    /// The rows as values.
    #[must_use]
    pub fn values(&self) -> Vec<Value> {
        self.rows.iter().cloned().map(Value::Object).collect()
    }

    fn extend(&mut self, other: Rows) {
        self.rows.extend(other.rows);
        self.warnings.extend(other.warnings);
    }
}

pub(crate) fn friendly_names(kind: RowKind) -> &'static [&'static str] {
    match kind {
        RowKind::Plain => &[],
        RowKind::Process => PROCESS_FIELDS,
        RowKind::Thread => THREAD_FIELDS,
        RowKind::Module => MODULE_FIELDS,
    }
}

/// The friendly field `name` of a row, `None` when it has no such friendly field.
pub(crate) fn friendly(obj: &Object, name: &str) -> Option<Result<Value, ModelError>> {
    let key: &'static str = friendly_names(obj.kind()).iter().find(|n| **n == name)?;
    Some(obj.memoized(key, |o| match o.kind() {
        RowKind::Process => process_field(o, key),
        RowKind::Thread => thread_field(o, key),
        RowKind::Module => module_field(o, key),
        RowKind::Plain => Err(ModelError::NoField {
            type_name: o.type_name().to_string(),
            field: key.to_string(),
        }),
    }))
}

/// Unreadable memory (or a null pointer on the way) becomes `Null`; layout errors stay.
fn soft(r: Result<Value, ModelError>) -> Result<Value, ModelError> {
    match r {
        Err(
            ModelError::Read { .. }
            | ModelError::NullPointer { .. }
            | ModelError::NoAddressSpace { .. },
        ) => Ok(Value::Null),
        other => other,
    }
}

/// A pointer-typed id (`UniqueProcessId`) as a number.
fn number(v: Value) -> Value {
    match v {
        Value::Pointer(p) => Value::uint(p.address),
        Value::Enum(e) => Value::from(e.value),
        other => other,
    }
}

fn has_field(o: &Object, type_name: &str, path: &str) -> bool {
    o.table().field(type_name, path).is_ok()
}

fn pointer_field(o: &Object, path: &str) -> Result<Pointer, ModelError> {
    match o.raw_field(path)? {
        Value::Pointer(p) => Ok(p),
        other => Err(ModelError::Unsupported {
            type_name: format!("{}.{path}", o.type_name()),
            address: o.address(),
            reason: format!("expected a pointer, found {}", other.type_name()),
        }),
    }
}

fn process_field(o: &Object, name: &str) -> Result<Value, ModelError> {
    match name {
        "name" => {
            let loc = o.table().field(o.type_name(), "ImageFileName")?;
            let size = o.table().size_of_ref(&loc.ty)?;
            let bytes = o.scope().read(
                o.address().wrapping_add(loc.offset),
                size,
                "`_EPROCESS.ImageFileName`",
            )?;
            Ok(Value::Str(latin1_until_nul(&bytes)))
        }
        "pid" => Ok(number(o.raw_field("UniqueProcessId")?)),
        "ppid" => Ok(number(o.raw_field("InheritedFromUniqueProcessId")?)),
        "threads" => o.raw_field("ActiveThreads"),
        "handles" => handle_count(o),
        "session" => {
            if !has_field(o, o.type_name(), "Session") || !o.table().has_type("_MM_SESSION_SPACE") {
                return Ok(Value::Null);
            }
            soft(pointer_field(o, "Session").and_then(|s| {
                if s.is_null() {
                    Ok(Value::Null)
                } else {
                    s.cast("_MM_SESSION_SPACE").field("SessionId")
                }
            }))
        }
        "create_time" => o.raw_field("CreateTime"),
        "peb" => o.raw_field("Peb"),
        "dtb" => o.raw_field("Pcb.DirectoryTableBase"),
        "address" => Ok(Value::Pointer(o.pointer())),
        "image_path" => soft(o.raw_field("Peb.ProcessParameters.ImagePathName")),
        "command_line" => soft(o.raw_field("Peb.ProcessParameters.CommandLine")),
        "commit" => o.raw_field("CommitCharge"),
        other => Err(ModelError::NoField {
            type_name: o.type_name().to_string(),
            field: other.to_string(),
        }),
    }
}

/// The process's handle count: `_HANDLE_TABLE.HandleCount` where the build keeps one
/// (Windows 7), else the in-use entries of the table counted page by page (Windows 8 and
/// later). `Null` when the table, or any page of it, cannot be read: the count would be a guess.
fn handle_count(o: &Object) -> Result<Value, ModelError> {
    if has_field(o, "_HANDLE_TABLE", "HandleCount") {
        return soft(
            pointer_field(o, "ObjectTable")
                .and_then(|t| t.cast("_HANDLE_TABLE").field("HandleCount")),
        );
    }
    let Ok(layout) = HandleTableLayout::from_table(o.table()) else {
        return Ok(Value::Null);
    };
    let table = match soft(pointer_field(o, "ObjectTable").map(Value::Pointer))? {
        Value::Pointer(p) if !p.is_null() => p.address,
        _ => return Ok(Value::Null),
    };
    Ok(match count_in_use(o.space(), &layout, table) {
        Ok(n) => Value::uint(n),
        Err(_) => Value::Null,
    })
}

/// An integer field read as a constant of `enum_type`, named by the table (or the fallback).
fn as_enum(
    o: &Object,
    path: &str,
    enum_type: &str,
    fallback: &[&str],
) -> Result<Value, ModelError> {
    let v = o.raw_field(path)?;
    if let Value::Enum(_) = v {
        return Ok(v);
    }
    let Some(n) = v.as_number().and_then(|n| i64::try_from(n).ok()) else {
        return Ok(v);
    };
    match o.scope().enum_value(enum_type, n) {
        Value::Enum(mut e) => {
            if e.name.is_none() && o.table().enum_type(enum_type).is_err() {
                e.name = usize::try_from(n)
                    .ok()
                    .and_then(|i| fallback.get(i))
                    .map(|s| (*s).to_string());
            }
            Ok(Value::Enum(e))
        }
        other => Ok(other),
    }
}

fn wait_ticks(o: &Object) -> Result<Value, ModelError> {
    let Ok(clock) = o.model().clock() else {
        return Ok(Value::Null);
    };
    let loc = o.table().field(o.type_name(), "Tcb.WaitTime")?;
    let bits = u32::try_from(o.table().size_of_ref(&loc.ty)? * 8).unwrap_or(64);
    let Some(since) = o.raw_field("Tcb.WaitTime")?.as_u64() else {
        return Ok(Value::Null);
    };
    Ok(Value::uint(clock.ticks_since(since, bits)))
}

fn thread_field(o: &Object, name: &str) -> Result<Value, ModelError> {
    match name {
        "tid" => Ok(number(o.raw_field("Cid.UniqueThread")?)),
        "pid" => Ok(number(o.raw_field("Cid.UniqueProcess")?)),
        "process" => soft(pointer_field(o, "Tcb.Process").and_then(|p| {
            if p.is_null() {
                Ok(Value::Null)
            } else {
                p.object().map(Value::Object)
            }
        })),
        "address" => Ok(Value::Pointer(o.pointer())),
        "state" => as_enum(o, "Tcb.State", "_KTHREAD_STATE", KTHREAD_STATE_FALLBACK),
        "wait_reason" => as_enum(o, "Tcb.WaitReason", "_KWAIT_REASON", &[]),
        "wait_ticks" => wait_ticks(o),
        "wait_ms" => {
            let Some(ticks) = wait_ticks(o)?.as_u64() else {
                return Ok(Value::Null);
            };
            Ok(o.model()
                .clock()
                .ok()
                .and_then(|c| c.ticks_to_ms(ticks))
                .map_or(Value::Null, Value::uint))
        }
        "teb" => {
            let teb = pointer_field(o, "Tcb.Teb")?;
            Ok(Value::Pointer(if o.table().has_type("_TEB") {
                teb.cast("_TEB")
            } else {
                teb
            }))
        }
        "start_address" => o.raw_field("StartAddress"),
        "win32_start_address" => o.raw_field("Win32StartAddress"),
        "priority" => o.raw_field("Tcb.Priority"),
        "base_priority" => o.raw_field("Tcb.BasePriority"),
        "kernel_stack_resident" => {
            if !has_field(o, o.type_name(), "Tcb.KernelStackResident") {
                return Ok(Value::Null);
            }
            let v = o.raw_field("Tcb.KernelStackResident")?;
            Ok(v.as_number().map_or(Value::Null, |n| Value::Bool(n != 0)))
        }
        "stack" => Ok(stack_value(o)),
        other => Err(ModelError::NoField {
            type_name: o.type_name().to_string(),
            field: other.to_string(),
        }),
    }
}

/// The first frame outside the kernel's dispatcher: past the `nt!Ki*` / `nt!Ke*` frames
/// (context switch, wait, IPI and freeze machinery every waiting or interrupted thread
/// shares), so it names what the thread was doing (`nt!ExpWaitForResource+0x..`,
/// `nt!NtWaitForSingleObject+0x..`, a driver's frame).
fn wait_site(sites: &[String]) -> Option<&str> {
    let dispatcher = |s: &str| s.starts_with("nt!Ki") || s.starts_with("nt!Ke");
    sites
        .iter()
        .find(|s| !dispatcher(s))
        .or(sites.first())
        .map(String::as_str)
}

/// A thread's stack as a record: `frames` (call sites, innermost first), `top` (the first),
/// `site` (the first outside the kernel dispatcher),
/// `depth`, and `signature` (the frames joined up to the first no module names: threads parked
/// on the same path have equal signatures, for `group by stack.signature`), plus `status`
/// (`frames`, `not_resident`, `unavailable`).
fn stack_value(o: &Object) -> Value {
    let model = o.model();
    let stack = match model.kernel_module_map() {
        Ok(kernel) => crate::stack::walk_thread(model, o, &kernel),
        Err(reason) => crate::stack::ThreadStack::Unavailable { reason },
    };
    let sites = stack.call_sites();
    let signature = stack.signature();
    let status = match &stack {
        crate::stack::ThreadStack::NotResident => "not_resident",
        crate::stack::ThreadStack::Unavailable { .. } => "unavailable",
        crate::stack::ThreadStack::Frames { .. } => "frames",
    };
    let mut r = super::Record::new();
    r.insert("status", Value::Str(status.into()));
    r.insert(
        "top",
        sites.first().map_or(Value::Null, |s| Value::Str(s.clone())),
    );
    r.insert(
        "site",
        wait_site(&sites).map_or(Value::Null, |s| Value::Str(s.to_string())),
    );
    r.insert("depth", Value::uint(sites.len() as u64));
    r.insert("signature", Value::Str(signature));
    r.insert(
        "frames",
        Value::List(sites.into_iter().map(Value::Str).collect()),
    );
    Value::Record(r)
}

fn module_field(o: &Object, name: &str) -> Result<Value, ModelError> {
    match name {
        "name" => o.raw_field("BaseDllName"),
        "path" => o.raw_field("FullDllName"),
        "base" => o.raw_field("DllBase"),
        "size" => o.raw_field("SizeOfImage"),
        "end" => {
            let base = pointer_field(o, "DllBase")?;
            let size = o.raw_field("SizeOfImage")?.as_u64().unwrap_or(0);
            Ok(Value::Pointer(Pointer::new(
                base.address.wrapping_add(size),
                TypeRef::Base("void".into()),
                base.scope().cloned(),
            )))
        }
        "address" => Ok(Value::Pointer(o.pointer())),
        other => Err(ModelError::NoField {
            type_name: o.type_name().to_string(),
            field: other.to_string(),
        }),
    }
}

impl ModelContext {
    /// Walk the list whose head `LIST_ENTRY` is at `head` in `space`: views of
    /// `container_type` (in that space) linked through `link_field`.
    pub fn walk_list(
        self: &Arc<Self>,
        space: Arc<AddressSpace>,
        head: u64,
        container_type: &str,
        link_field: &str,
    ) -> Result<Rows, ModelError> {
        let list = format!("{container_type}.{link_field}");
        self.walk_list_named(space, head, container_type, link_field, &list)
    }

    fn walk_list_named(
        self: &Arc<Self>,
        space: Arc<AddressSpace>,
        head: u64,
        container_type: &str,
        link_field: &str,
        list: &str,
    ) -> Result<Rows, ModelError> {
        let layout = ListLayout::new(self.table(), container_type, link_field)?;
        let walk = walk_list_raw(&space, head, &layout, self.limits().max_list_entries, list);
        let scope = self.scope_in(space);
        let rows = walk
            .entries
            .iter()
            .map(|a| Object::in_scope(scope.clone(), container_type, *a))
            .collect::<Result<_, _>>()?;
        Ok(Rows {
            rows,
            warnings: walk.warnings,
        })
    }

    /// Every process of `PsActiveProcessHead`, each in its own address space.
    pub fn processes(self: &Arc<Self>) -> Result<Rows, ModelError> {
        let head = self
            .process_list_head()
            .ok_or(ModelError::NoListHead("PsActiveProcessHead"))?;
        let layout = ListLayout::new(self.table(), "_EPROCESS", "ActiveProcessLinks")?;
        let walk = walk_list_raw(
            self.kernel_space(),
            head,
            &layout,
            self.limits().max_list_entries,
            "PsActiveProcessHead",
        );
        let rows = walk
            .entries
            .iter()
            .map(|a| self.process(*a))
            .collect::<Result<_, _>>()?;
        Ok(Rows {
            rows,
            warnings: walk.warnings,
        })
    }

    /// The threads of one process (its `ThreadListHead`), in the process's space.
    pub fn process_threads(self: &Arc<Self>, process: &Object) -> Result<Rows, ModelError> {
        let process = self.as_process(process)?;
        let head = process.field_address("ThreadListHead")?;
        let layout = ListLayout::new(self.table(), "_ETHREAD", "ThreadListEntry")?;
        let list = format!(
            "ThreadListHead of EPROCESS {}",
            super::format_address(process.address(), self.pointer_size())
        );
        let walk = walk_list_raw(
            process.space(),
            head,
            &layout,
            self.limits().max_list_entries,
            &list,
        );
        let rows = walk
            .entries
            .iter()
            .map(|a| Object::in_scope(process.scope().clone(), "_ETHREAD", *a))
            .collect::<Result<_, _>>()?;
        Ok(Rows {
            rows,
            warnings: walk.warnings,
        })
    }

    /// The threads of every process.
    pub fn threads(self: &Arc<Self>) -> Result<Rows, ModelError> {
        let processes = self.processes()?;
        let mut all = Rows {
            rows: Vec::new(),
            warnings: processes.warnings.clone(),
        };
        for p in &processes.rows {
            all.extend(self.process_threads(p)?);
        }
        Ok(all)
    }

    /// The kernel's loaded modules (`PsLoadedModuleList`, load order).
    pub fn kernel_modules(self: &Arc<Self>) -> Result<Rows, ModelError> {
        let head = self
            .module_list_head()
            .ok_or(ModelError::NoListHead("PsLoadedModuleList"))?;
        let entry = if self.table().has_type("_KLDR_DATA_TABLE_ENTRY") {
            "_KLDR_DATA_TABLE_ENTRY"
        } else {
            "_LDR_DATA_TABLE_ENTRY"
        };
        self.walk_list_named(
            Arc::clone(self.kernel_space()),
            head,
            entry,
            "InLoadOrderLinks",
            "PsLoadedModuleList",
        )
    }

    /// A process's user modules (`Peb.Ldr.InLoadOrderModuleList`), read in its space. A
    /// process without a PEB has none; an unreadable PEB or loader block is a warning.
    pub fn process_modules(self: &Arc<Self>, process: &Object) -> Result<Rows, ModelError> {
        let process = self.as_process(process)?;
        let peb = pointer_field(&process, "Peb")?;
        if peb.is_null() {
            return Ok(Rows::default());
        }
        let list = format!(
            "Peb.Ldr.InLoadOrderModuleList of EPROCESS {}",
            super::format_address(process.address(), self.pointer_size())
        );
        let ldr = match peb.field("Ldr") {
            Ok(Value::Pointer(p)) => p,
            Ok(_) => return Ok(Rows::default()),
            Err(e) => {
                let at = peb
                    .address
                    .wrapping_add(self.table().offset_of("_PEB", "Ldr")?);
                return Ok(unreadable_head(
                    &list,
                    at,
                    peb.address,
                    &e,
                    self.pointer_size(),
                ));
            }
        };
        if ldr.is_null() {
            return Ok(Rows::default());
        }
        let head = ldr.address.wrapping_add(
            self.table()
                .offset_of("_PEB_LDR_DATA", "InLoadOrderModuleList")?,
        );
        self.walk_list_named(
            Arc::clone(process.space()),
            head,
            "_LDR_DATA_TABLE_ENTRY",
            "InLoadOrderLinks",
            &list,
        )
    }

    /// A process view of `o` (a `_KPROCESS` is widened, the space is the process's own).
    fn as_process(self: &Arc<Self>, o: &Object) -> Result<Object, ModelError> {
        if o.kind() == RowKind::Process {
            Ok(o.clone())
        } else {
            Object::new(o.scope().clone(), "_EPROCESS", o.address())
        }
    }
}

fn unreadable_head(list: &str, at: u64, from: u64, e: &ModelError, pointer_size: u64) -> Rows {
    Rows {
        rows: Vec::new(),
        warnings: vec![ListWarning {
            list: list.to_string(),
            head: at,
            entries_before: 0,
            problem: ListProblem::Unreadable {
                entry: at,
                linked_from: from,
                error: e.to_string(),
            },
            pointer_size,
        }],
    }
}
