//! `!vm`: the memory manager's counters (physical memory, page files, available pages, pools,
//! commit) and the private commit of every process, in WinDbg's layout.
//!
//! Each counter has its sources in order of preference, and the first one the kernel's table
//! has is read: the build is never asked for. Windows 7 keeps the counters in globals
//! (`MmAvailablePages`, `MmTotalCommittedPages`, `MmPagingFile`, the pool descriptors
//! `NonPagedPoolDescriptor` and `ExpPagedPoolDescriptor`, ...); Windows 10 and later in the
//! system partition `MiSystemPartition` (an `_MI_PARTITION`: `Vp.AvailablePages`,
//! `Vp.TotalCommittedPages`, `Vp.PagingFile`, ...) and in `MiState` (an
//! `_MI_SYSTEM_INFORMATION`: `Vs.ProcessCommit`, `Vs.DriverCommit`, `Vs.PagedPoolInfo`,
//! `Pools.AllocatedNonPagedPool`, ...). Field offsets come from the table; the tables give
//! globals no type, so the types of those structure globals and the widths of the counter
//! globals are stated here, as x64 kernels declare them. A counter no source of which the
//! table has is [`Counter::missing`], and the text leaves its line out, as WinDbg prints only
//! what the build has.
//!
//! ```no_run
//! # fn demo(model: &std::sync::Arc<kds_runtime::model::ModelContext>) -> Result<(), kds_stdlib::vm::VmError> {
//! let report = kds_stdlib::vm::collect(model)?;
//! print!("{}", kds_stdlib::vm::render_text(&report, 0));
//! # Ok(()) }
//! ```

use kds_runtime::model::{ModelContext, ModelError, Object, Rows, Value};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use thiserror::Error;

/// KiB per page (x64 kernels use 4 KiB pages).
pub const PAGE_KB: u64 = 4;
/// `!vm 1`: leave out the per-process lines.
pub const FLAG_NO_PROCESSES: u32 = 0x1;

/// Bound on the page files read (`MmPagingFile` holds 16 pointers).
const MAX_PAGING_FILES: u64 = 16;
/// Bound on pool descriptors read, whatever the target says.
const MAX_POOLS: u64 = 64;

/// Why `!vm` cannot run at all (a counter that cannot be read is not an error: it is
/// reported in its [`Counter`]).
#[derive(Debug, Error)]
pub enum VmError {
    /// The table has none of the physical memory counters: not a kernel `!vm` knows.
    #[error(
        "the kernel's table has neither `MiSystemPartition` nor `MmNumberOfPhysicalPages`: no memory counters to read"
    )]
    NoCounters,
}

/// One counter, in pages, and where it came from.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counter {
    /// Pages, when read.
    pub pages: Option<u64>,
    /// Where it was read (`nt!MmAvailablePages`, `nt!MiSystemPartition.Vp.AvailablePages`);
    /// `None` when the build's table has no source for it.
    pub source: Option<String>,
    /// Why a counter that has a source could not be read.
    pub error: Option<String>,
}

impl Counter {
    /// A counter the build's table has no source for.
    #[must_use]
    pub fn missing() -> Counter {
        Counter::default()
    }

    fn read(source: String, result: Result<u64, String>) -> Counter {
        match result {
            Ok(pages) => Counter {
                pages: Some(pages),
                source: Some(source),
                error: None,
            },
            Err(error) => Counter {
                pages: None,
                source: Some(source),
                error: Some(error),
            },
        }
    }

    /// The build has a source for it (read or not).
    #[must_use]
    pub fn has_source(&self) -> bool {
        self.source.is_some()
    }
}

/// One page file (`_MMPAGING_FILE`), sizes in pages.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PageFile {
    pub address: u64,
    pub name: PageFileName,
    pub size: u64,
    pub free_space: u64,
    pub minimum: u64,
    pub maximum: u64,
}

/// The `PageFileName` of a page file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", content = "name", rename_all = "snake_case")]
pub enum PageFileName {
    Named(String),
    /// No buffer: "No Name for Paging File".
    NoName,
    /// The buffer could not be read: "Paging File Name paged out".
    PagedOut,
}

/// The private commit of one process (`_EPROCESS.CommitCharge`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProcessCommit {
    pub pid: u64,
    pub image: String,
    pub pages: u64,
    pub eprocess: u64,
}

/// Everything `!vm` shows, in pages.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct VmReport {
    pub physical_memory: Counter,
    /// Where the page file list was read; `None` when the build has none.
    pub page_files_source: Option<String>,
    /// How many page files the kernel says it has (`NumberOfPagingFiles`), when read.
    pub number_of_paging_files: Option<u64>,
    pub page_files: Vec<PageFile>,
    pub available_pages: Counter,
    pub resident_available_pages: Counter,
    pub locked_io_pages: Counter,
    pub free_system_ptes: Counter,
    pub modified_pages: Counter,
    /// Modified pages headed for a page file.
    pub modified_pf_pages: Counter,
    pub modified_no_write_pages: Counter,
    pub nonpaged_pool_usage: Counter,
    pub nonpaged_pool_nx_usage: Counter,
    pub nonpaged_pool_max: Counter,
    /// Each paged pool descriptor (`PagedPool N Usage`), empty when the build has none.
    pub paged_pools: Vec<Counter>,
    pub paged_pool_usage: Counter,
    pub paged_pool_max: Counter,
    pub session_commit: Counter,
    pub shared_commit: Counter,
    pub special_pool: Counter,
    /// "Shared Process" (`MmProcessCommit`).
    pub shared_process: Counter,
    pub paged_pool_commit: Counter,
    pub driver_commit: Counter,
    pub committed_pages: Counter,
    pub commit_limit: Counter,
    /// Sum of the processes' private commit.
    pub total_private: u64,
    /// Processes by private pages, largest first (then by PID).
    pub processes: Vec<ProcessCommit>,
    /// Why the process list could not be walked, when it could not.
    pub processes_error: Option<String>,
    /// What could not be read along the way (a process, a page file, a list link).
    pub warnings: Vec<String>,
}

/// Where a counter can come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A counter global of this width.
    Global(&'static str, Width),
    /// A global counting bytes, shown in pages.
    GlobalBytes(&'static str),
    /// A field (dotted path) of a structure global of the given type.
    Field(&'static str, &'static str, &'static str),
}

/// Width of a counter global: a `ULONG`, or pointer-sized (`SIZE_T`, `PFN_NUMBER`,
/// `ULONG_PTR`, a pointer), 4 or 8 bytes by the kernel's pointer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    U32,
    Pointer,
}

const PARTITION: (&str, &str) = ("MiSystemPartition", "_MI_PARTITION");
const STATE: (&str, &str) = ("MiState", "_MI_SYSTEM_INFORMATION");

const fn vp(path: &'static str) -> Source {
    Source::Field(PARTITION.0, PARTITION.1, path)
}

const fn vs(path: &'static str) -> Source {
    Source::Field(STATE.0, STATE.1, path)
}

/// The sources of each plain counter, best first.
mod sources {
    use super::{vp, vs, Source, Width};
    use Source::{Field, Global, GlobalBytes};

    pub const PHYSICAL: &[Source] = &[
        vp("Vp.NumberOfPhysicalPages"),
        Global("MmNumberOfPhysicalPages", Width::Pointer),
    ];
    pub const AVAILABLE: &[Source] = &[
        vp("Vp.AvailablePages"),
        Global("MmAvailablePages", Width::Pointer),
    ];
    pub const RESIDENT_AVAILABLE: &[Source] = &[
        vp("Vp.ResidentAvailablePages"),
        Global("MmResidentAvailablePages", Width::Pointer),
    ];
    pub const LOCKED_IO: &[Source] = &[Global("MmSystemLockPagesCount", Width::Pointer)];
    pub const FREE_SYSTEM_PTES: &[Source] = &[
        vs("Vs.SystemPteInfo.TotalFreeSystemPtes"),
        Field(
            "MiSystemPteInfo",
            "_MI_SYSTEM_PTE_TYPE",
            "TotalFreeSystemPtes",
        ),
        Global("MmTotalFreeSystemPtes", Width::U32),
    ];
    pub const MODIFIED: &[Source] = &[
        vp("Vp.ModifiedPageListHead.Total"),
        Field("MmModifiedPageListHead", "_MMPFNLIST", "Total"),
    ];
    pub const MODIFIED_PF: &[Source] = &[
        vp("Vp.TotalPagesForPagingFile"),
        Global("MmTotalPagesForPagingFile", Width::Pointer),
    ];
    pub const MODIFIED_NO_WRITE: &[Source] = &[
        vp("Vp.ModifiedNoWritePageListHead.Total"),
        Field("MmModifiedNoWritePageListHead", "_MMPFNLIST", "Total"),
    ];
    /// After the pool descriptors.
    pub const NONPAGED_USAGE: &[Source] = &[
        vs("Pools.AllocatedNonPagedPool"),
        Global("MmAllocatedNonPagedPool", Width::Pointer),
    ];
    pub const NONPAGED_MAX: &[Source] = &[
        vs("Vs.MaximumNonPagedPoolInPages"),
        Global("MmMaximumNonPagedPoolInPages", Width::Pointer),
        GlobalBytes("MmMaximumNonPagedPoolInBytes"),
    ];
    /// After the pool descriptors.
    pub const PAGED_USAGE: &[Source] = &[
        vs("Vs.PagedPoolInfo.AllocatedPagedPool"),
        Field(
            "MmPagedPoolInfo",
            "_MM_PAGED_POOL_INFO",
            "AllocatedPagedPool",
        ),
    ];
    pub const PAGED_MAX: &[Source] = &[
        vs("Vs.SizeOfPagedPoolInPages"),
        Global("MmSizeOfPagedPoolInPages", Width::Pointer),
        GlobalBytes("MmSizeOfPagedPoolInBytes"),
    ];
    pub const SHARED: &[Source] = &[
        vp("Vp.SharedCommit"),
        Global("MmSharedCommit", Width::Pointer),
    ];
    pub const SPECIAL_POOL: &[Source] = &[Global("MmSpecialPagesInUse", Width::Pointer)];
    pub const SHARED_PROCESS: &[Source] = &[
        vs("Vs.ProcessCommit"),
        Global("MmProcessCommit", Width::Pointer),
    ];
    /// Kernels with `MiState` keep no paged pool commit apart from the allocation, which
    /// WinDbg shows for both lines.
    pub const PAGED_COMMIT: &[Source] = &[
        Global("MmPagedPoolCommit", Width::Pointer),
        Field("MmPagedPoolInfo", "_MM_PAGED_POOL_INFO", "PagedPoolCommit"),
        vs("Vs.PagedPoolInfo.AllocatedPagedPool"),
    ];
    pub const DRIVER_COMMIT: &[Source] =
        &[vs("Vs.DriverCommit"), Global("MmDriverCommit", Width::U32)];
    pub const COMMITTED: &[Source] = &[
        vp("Vp.TotalCommittedPages"),
        Global("MmTotalCommittedPages", Width::Pointer),
    ];
    pub const COMMIT_LIMIT: &[Source] = &[
        vp("Vp.TotalCommitLimit"),
        Global("MmTotalCommitLimit", Width::Pointer),
    ];
}

/// Read every counter `!vm` shows and the private commit of every process.
pub fn collect(model: &Arc<ModelContext>) -> Result<VmReport, VmError> {
    let r = Reader { model };
    let physical_memory = r.counter(sources::PHYSICAL);
    if !physical_memory.has_source() {
        return Err(VmError::NoCounters);
    }
    let mut warnings = Vec::new();
    let (page_files_source, number_of_paging_files, page_files) = r.page_files(&mut warnings);
    let (nonpaged_pool_usage, _) = r.pool_descriptors(Pools::NonPaged);
    let nonpaged_pool_usage = if nonpaged_pool_usage.has_source() {
        nonpaged_pool_usage
    } else {
        r.counter(sources::NONPAGED_USAGE)
    };
    let (paged_from_descriptors, paged_pools) = r.pool_descriptors(Pools::Paged);
    let paged_pool_usage = if paged_from_descriptors.has_source() {
        paged_from_descriptors
    } else {
        r.counter(sources::PAGED_USAGE)
    };
    let (rows, processes_error) = match model.processes() {
        Ok(rows) => (rows, None),
        Err(e) => (Rows::default(), Some(e.to_string())),
    };
    for w in &rows.warnings {
        warnings.push(w.to_string());
    }
    let mut commits = Vec::new();
    let mut sessions = BTreeSet::new();
    for p in &rows.rows {
        match process_commit(p) {
            Ok(c) => commits.push(c),
            Err(e) => warnings.push(format!(
                "process at {}: {e}",
                kds_runtime::model::format_address(p.address(), model.pointer_size())
            )),
        }
        if let Some(s) = session_of(p) {
            sessions.insert(s);
        }
    }
    commits.sort_by(|a, b| b.pages.cmp(&a.pages).then(a.pid.cmp(&b.pid)));
    let total_private = commits
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(c.pages));
    Ok(VmReport {
        physical_memory,
        page_files_source,
        number_of_paging_files,
        page_files,
        available_pages: r.counter(sources::AVAILABLE),
        resident_available_pages: r.counter(sources::RESIDENT_AVAILABLE),
        locked_io_pages: r.counter(sources::LOCKED_IO),
        free_system_ptes: r.counter(sources::FREE_SYSTEM_PTES),
        modified_pages: r.counter(sources::MODIFIED),
        modified_pf_pages: r.counter(sources::MODIFIED_PF),
        modified_no_write_pages: r.counter(sources::MODIFIED_NO_WRITE),
        nonpaged_pool_usage,
        // No table of the shipped builds keeps a separate NX pool counter.
        nonpaged_pool_nx_usage: Counter::missing(),
        nonpaged_pool_max: r.counter(sources::NONPAGED_MAX),
        paged_pools,
        paged_pool_usage,
        paged_pool_max: r.counter(sources::PAGED_MAX),
        session_commit: r.session_commit(&sessions),
        shared_commit: r.counter(sources::SHARED),
        special_pool: r.counter(sources::SPECIAL_POOL),
        shared_process: r.counter(sources::SHARED_PROCESS),
        paged_pool_commit: r.counter(sources::PAGED_COMMIT),
        driver_commit: r.counter(sources::DRIVER_COMMIT),
        committed_pages: r.counter(sources::COMMITTED),
        commit_limit: r.counter(sources::COMMIT_LIMIT),
        total_private,
        processes: commits,
        processes_error,
        warnings,
    })
}

fn process_commit(p: &Object) -> Result<ProcessCommit, ModelError> {
    let number = |name: &str| -> Result<u64, ModelError> {
        let v = p.field(name)?;
        v.as_u64().ok_or_else(|| ModelError::Unsupported {
            type_name: format!("_EPROCESS.{name}"),
            address: p.address(),
            reason: format!("{} is not a count", v.kind()),
        })
    };
    let image = match p.field("name")? {
        Value::Str(s) => s,
        other => other.kind().to_string(),
    };
    Ok(ProcessCommit {
        pid: number("pid")?,
        image,
        pages: number("commit")?,
        eprocess: p.address(),
    })
}

/// The `_MM_SESSION_SPACE` a process belongs to, when the build has sessions.
fn session_of(p: &Object) -> Option<u64> {
    if !p.table().has_type("_MM_SESSION_SPACE") {
        return None;
    }
    match p.raw_field("Session").ok()? {
        Value::Pointer(s) if !s.is_null() => Some(s.address),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pools {
    NonPaged,
    Paged,
}

struct Reader<'a> {
    model: &'a Arc<ModelContext>,
}

impl Reader<'_> {
    fn has(&self, source: Source) -> bool {
        let table = self.model.table();
        match source {
            Source::Global(name, _) | Source::GlobalBytes(name) => {
                table.try_symbol_rva(name).is_some()
            }
            Source::Field(global, ty, path) => {
                table.try_symbol_rva(global).is_some() && table.field(ty, path).is_ok()
            }
        }
    }

    /// The first source the table has, read.
    fn counter(&self, candidates: &[Source]) -> Counter {
        candidates
            .iter()
            .find(|s| self.has(**s))
            .map_or_else(Counter::missing, |s| self.read(*s))
    }

    fn read(&self, source: Source) -> Counter {
        match source {
            Source::Global(name, width) => {
                Counter::read(format!("nt!{name}"), self.global(name, width))
            }
            Source::GlobalBytes(name) => Counter::read(
                format!("nt!{name}"),
                self.global(name, Width::Pointer)
                    .map(|bytes| bytes / (PAGE_KB * 1024)),
            ),
            Source::Field(global, ty, path) => {
                Counter::read(format!("nt!{global}.{path}"), self.field(global, ty, path))
            }
        }
    }

    fn global(&self, name: &str, width: Width) -> Result<u64, String> {
        let at = self
            .model
            .symbol_address(name)
            .ok_or_else(|| format!("`{name}` is not in the symbol table"))?;
        let space = self.model.kernel_space();
        let what = |e: &dyn std::fmt::Display| format!("cannot read nt!{name}: {e}");
        match width {
            Width::U32 => space.read_u32(at).map(u64::from).map_err(|e| what(&e)),
            Width::Pointer => {
                read_pointer_sized(space, at, self.model.pointer_size()).map_err(|e| what(&e))
            }
        }
    }

    fn object(&self, global: &str, ty: &str) -> Result<Object, String> {
        let at = self
            .model
            .symbol_address(global)
            .ok_or_else(|| format!("`{global}` is not in the symbol table"))?;
        self.model.object(ty, at).map_err(|e| e.to_string())
    }

    fn field(&self, global: &str, ty: &str, path: &str) -> Result<u64, String> {
        let v = self
            .object(global, ty)?
            .field(path)
            .map_err(|e| e.to_string())?;
        count(&v, &format!("nt!{global}.{path}"))
    }

    /// The page files: the partition's array, else `MmPagingFile`.
    fn page_files(
        &self,
        warnings: &mut Vec<String>,
    ) -> (Option<String>, Option<u64>, Vec<PageFile>) {
        let ptr = self.model.pointer_size();
        let (source, count, array) =
            if self.has(vp("Vp.PagingFile")) && self.has(vp("Vp.NumberOfPagingFiles")) {
                let count = self.field(PARTITION.0, PARTITION.1, "Vp.NumberOfPagingFiles");
                let array = self.model.symbol_address(PARTITION.0).and_then(|base| {
                    self.model
                        .table()
                        .offset_of(PARTITION.1, "Vp.PagingFile")
                        .ok()
                        .map(|off| base.wrapping_add(off))
                });
                ("nt!MiSystemPartition.Vp.PagingFile", count, array)
            } else if self.has(Source::Global("MmPagingFile", Width::Pointer))
                && self.has(Source::Global("MmNumberOfPagingFiles", Width::U32))
            {
                (
                    "nt!MmPagingFile",
                    self.global("MmNumberOfPagingFiles", Width::U32),
                    self.model.symbol_address("MmPagingFile"),
                )
            } else {
                return (None, None, Vec::new());
            };
        let mut files = Vec::new();
        let (count, array) = match (count, array) {
            (Ok(c), Some(a)) => (c, a),
            (Err(e), _) => {
                warnings.push(format!("page files: {e}"));
                return (Some(source.to_string()), None, files);
            }
            (Ok(c), None) => return (Some(source.to_string()), Some(c), files),
        };
        if count > MAX_PAGING_FILES {
            warnings.push(format!(
                "{count} page files claimed: reading the first {MAX_PAGING_FILES}"
            ));
        }
        for i in 0..count.min(MAX_PAGING_FILES) {
            match self.page_file(array.wrapping_add(i * ptr)) {
                Ok(pf) => files.push(pf),
                Err(e) => warnings.push(format!("page file {i}: {e}")),
            }
        }
        (Some(source.to_string()), Some(count), files)
    }

    fn page_file(&self, slot: u64) -> Result<PageFile, String> {
        let at = self
            .model
            .kernel_space()
            .read_pointer(slot)
            .map_err(|e| e.to_string())?;
        let o = self
            .model
            .object("_MMPAGING_FILE", at)
            .map_err(|e| e.to_string())?;
        let get = |path: &str| -> Result<u64, String> {
            count(
                &o.field(path).map_err(|e| e.to_string())?,
                &format!("_MMPAGING_FILE.{path}"),
            )
        };
        let buffer = self
            .model
            .table()
            .offset_of("_MMPAGING_FILE", "PageFileName.Buffer")
            .map_err(|e| e.to_string())
            .and_then(|off| {
                self.model
                    .kernel_space()
                    .read_pointer(at.wrapping_add(off))
                    .map_err(|e| e.to_string())
            })?;
        let name = if buffer == 0 {
            PageFileName::NoName
        } else {
            match o.field("PageFileName") {
                Ok(Value::Str(s)) => PageFileName::Named(s),
                _ => PageFileName::PagedOut,
            }
        };
        Ok(PageFile {
            address: at,
            name,
            size: get("Size")?,
            free_space: get("FreeSpace")?,
            minimum: get("MinimumSize")?,
            maximum: get("MaximumSize")?,
        })
    }

    /// Usage from the pool descriptors (`TotalPages + TotalBigPages` of each), when the build
    /// has them: the total, and for paged pool each descriptor.
    fn pool_descriptors(&self, pools: Pools) -> (Counter, Vec<Counter>) {
        const T: &str = "_POOL_DESCRIPTOR";
        let table = self.model.table();
        if table.field(T, "TotalPages").is_err() || table.field(T, "TotalBigPages").is_err() {
            return (Counter::missing(), Vec::new());
        }
        let has = |name: &str| table.try_symbol_rva(name).is_some();
        let ptr = self.model.pointer_size();
        let (source, addresses): (String, Result<Vec<u64>, String>) = match pools {
            Pools::Paged => {
                if !has("ExpPagedPoolDescriptor") || !has("ExpNumberOfPagedPools") {
                    return (Counter::missing(), Vec::new());
                }
                // 1 + ExpNumberOfPagedPools descriptors.
                let n = self
                    .global("ExpNumberOfPagedPools", Width::U32)
                    .map(|n| n.saturating_add(1));
                (
                    "nt!ExpPagedPoolDescriptor".into(),
                    n.and_then(|n| self.pointer_array("ExpPagedPoolDescriptor", n, ptr)),
                )
            }
            Pools::NonPaged => {
                let several = has("ExpNumberOfNonPagedPools")
                    .then(|| self.global("ExpNumberOfNonPagedPools", Width::U32).ok())
                    .flatten()
                    .filter(|n| *n > 1);
                match several {
                    Some(n) if has("ExpNonPagedPoolDescriptor") => (
                        "nt!ExpNonPagedPoolDescriptor".into(),
                        self.pointer_array("ExpNonPagedPoolDescriptor", n, ptr),
                    ),
                    _ if has("NonPagedPoolDescriptor") => (
                        "nt!NonPagedPoolDescriptor".into(),
                        self.model
                            .symbol_address("NonPagedPoolDescriptor")
                            .map(|a| vec![a])
                            .ok_or_else(|| "no NonPagedPoolDescriptor".to_string()),
                    ),
                    _ => return (Counter::missing(), Vec::new()),
                }
            }
        };
        let addresses = match addresses {
            Ok(a) => a,
            Err(e) => return (Counter::read(source, Err(e)), Vec::new()),
        };
        let each: Vec<Counter> = addresses
            .iter()
            .enumerate()
            .map(|(i, at)| Counter::read(format!("{source}[{i}]"), self.descriptor_pages(*at)))
            .collect();
        let total = saturating_sum(each.iter().map(|c| {
            c.pages
                .ok_or_else(|| c.error.clone().unwrap_or_else(|| "unread".into()))
        }));
        let per_pool = if pools == Pools::Paged {
            each
        } else {
            Vec::new()
        };
        (Counter::read(source, total), per_pool)
    }

    fn pointer_array(&self, name: &str, n: u64, ptr: u64) -> Result<Vec<u64>, String> {
        if n > MAX_POOLS {
            return Err(format!("{n} pools claimed by nt!{name}: not believable"));
        }
        let base = self
            .model
            .symbol_address(name)
            .ok_or_else(|| format!("`{name}` is not in the symbol table"))?;
        (0..n)
            .map(|i| {
                self.model
                    .kernel_space()
                    .read_pointer(base.wrapping_add(i * ptr))
                    .map_err(|e| format!("cannot read nt!{name}[{i}]: {e}"))
            })
            .collect()
    }

    fn descriptor_pages(&self, at: u64) -> Result<u64, String> {
        let o = self
            .model
            .object("_POOL_DESCRIPTOR", at)
            .map_err(|e| e.to_string())?;
        let mut total = 0u64;
        for f in ["TotalPages", "TotalBigPages"] {
            let v = o.field(f).map_err(|e| e.to_string())?;
            total = total.saturating_add(count(&v, &format!("_POOL_DESCRIPTOR.{f}"))?);
        }
        Ok(total)
    }

    /// `CommittedPages` summed over the sessions the processes belong to.
    fn session_commit(&self, sessions: &BTreeSet<u64>) -> Counter {
        const T: &str = "_MM_SESSION_SPACE";
        if self.model.table().field(T, "CommittedPages").is_err() || sessions.is_empty() {
            return Counter::missing();
        }
        let total = saturating_sum(sessions.iter().map(|s| {
            let v = self
                .model
                .object(T, *s)
                .and_then(|o| o.field("CommittedPages"))
                .map_err(|e| e.to_string())?;
            count(&v, "_MM_SESSION_SPACE.CommittedPages")
        }));
        Counter::read(
            "_EPROCESS.Session->_MM_SESSION_SPACE.CommittedPages, summed per session".into(),
            total,
        )
    }
}

/// The sum of counts read from the target (which may hold anything), or the first failure.
/// An integer of the kernel's pointer width (`SIZE_T`, `PFN_NUMBER`).
fn read_pointer_sized(
    space: &kds_runtime::mmu::AddressSpace,
    at: u64,
    pointer_size: u64,
) -> Result<u64, kds_runtime::mmu::VirtualReadError> {
    if pointer_size == 4 {
        space.read_u32(at).map(u64::from)
    } else {
        space.read_u64(at)
    }
}

fn saturating_sum(mut items: impl Iterator<Item = Result<u64, String>>) -> Result<u64, String> {
    items.try_fold(0u64, |sum, item| Ok(sum.saturating_add(item?)))
}

/// A non-negative count from a value.
fn count(v: &Value, what: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("{what} is not a count ({})", v.kind()))
}

/// Width of the label and the page count together, as WinDbg aligns them.
const LABEL_AND_PAGES: usize = 28;

fn counter_line(out: &mut String, label: &str, c: &Counter) {
    match (c.pages, &c.source, &c.error) {
        (Some(pages), _, _) => pages_line(out, label, pages),
        (None, Some(source), error) => {
            let _ = writeln!(
                out,
                "\tunable to get {source}{}",
                error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
        // The build has no such counter: WinDbg prints no line for it.
        (None, None, _) => {}
    }
}

fn pages_line(out: &mut String, label: &str, pages: u64) {
    let digits = pages.to_string();
    let width = LABEL_AND_PAGES
        .saturating_sub(label.len())
        .max(digits.len() + 1);
    let _ = writeln!(
        out,
        "\t{label}{digits:>width$} ({:>10} Kb)",
        pages.saturating_mul(PAGE_KB)
    );
}

/// Render as WinDbg does: the counters, then (unless `flags` has [`FLAG_NO_PROCESSES`]) the
/// total private commit and each process, largest first.
#[must_use]
pub fn render_text(report: &VmReport, flags: u32) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w);
    let _ = writeln!(w, "*** Virtual Memory Usage ***");
    counter_line(w, "Physical Memory:", &report.physical_memory);
    if report.page_files_source.is_some() {
        if report.number_of_paging_files == Some(0) {
            let _ = writeln!(w);
            let _ = writeln!(w, "************ NO PAGING FILE *********************");
            let _ = writeln!(w);
        }
        for pf in &report.page_files {
            match &pf.name {
                PageFileName::Named(name) => {
                    let _ = writeln!(w, "\tPage File: {name}");
                }
                PageFileName::NoName => {
                    let _ = writeln!(w, "\tNo Name for Paging File");
                }
                PageFileName::PagedOut => {
                    let _ = writeln!(w, "\tPaging File Name paged out");
                }
            }
            let _ = writeln!(
                w,
                "\t  Current:{:>10} Kb  Free Space:{:>10} Kb",
                pf.size.saturating_mul(PAGE_KB),
                pf.free_space.saturating_mul(PAGE_KB)
            );
            let _ = writeln!(
                w,
                "\t  Minimum:{:>10} Kb  Maximum:{:>13} Kb",
                pf.minimum.saturating_mul(PAGE_KB),
                pf.maximum.saturating_mul(PAGE_KB)
            );
        }
    }
    counter_line(w, "Available Pages:", &report.available_pages);
    counter_line(w, "ResAvail Pages:", &report.resident_available_pages);
    counter_line(w, "Locked IO Pages:", &report.locked_io_pages);
    counter_line(w, "Free System PTEs:", &report.free_system_ptes);
    counter_line(w, "Modified Pages:", &report.modified_pages);
    counter_line(w, "Modified PF Pages:", &report.modified_pf_pages);
    counter_line(
        w,
        "Modified No Write Pages:",
        &report.modified_no_write_pages,
    );
    counter_line(w, "NonPagedPool Usage:", &report.nonpaged_pool_usage);
    counter_line(w, "NonPagedPoolNx Usage:", &report.nonpaged_pool_nx_usage);
    counter_line(w, "NonPagedPool Max:", &report.nonpaged_pool_max);
    for (i, pool) in report.paged_pools.iter().enumerate() {
        counter_line(w, &format!("PagedPool {i} Usage:"), pool);
    }
    counter_line(w, "PagedPool Usage:", &report.paged_pool_usage);
    counter_line(w, "PagedPool Maximum:", &report.paged_pool_max);
    counter_line(w, "Session Commit:", &report.session_commit);
    counter_line(w, "Shared Commit:", &report.shared_commit);
    counter_line(w, "Special Pool:", &report.special_pool);
    counter_line(w, "Shared Process:", &report.shared_process);
    counter_line(w, "PagedPool Commit:", &report.paged_pool_commit);
    counter_line(w, "Driver Commit:", &report.driver_commit);
    counter_line(w, "Committed pages:", &report.committed_pages);
    counter_line(w, "Commit limit:", &report.commit_limit);
    if let (Some(committed), Some(limit)) =
        (report.committed_pages.pages, report.commit_limit.pages)
    {
        if committed.saturating_add(100) > limit {
            let _ = writeln!(w);
            let _ = writeln!(
                w,
                "\t********** Number of committed pages is near limit ********"
            );
        }
    }
    let _ = writeln!(w);
    if flags & FLAG_NO_PROCESSES == 0 {
        if let Some(e) = &report.processes_error {
            let _ = writeln!(w);
            let _ = writeln!(w, "ProcessCommitUsage could not be calculated: {e}");
        }
        // WinDbg leaves the total out when no process has private commit.
        if report.total_private != 0 {
            pages_line(w, "Total Private:", report.total_private);
        }
        for p in &report.processes {
            let _ = writeln!(
                w,
                "\t{:04x} {:<15} {:>7} ({:>10} Kb)",
                p.pid,
                p.image,
                p.pages,
                p.pages.saturating_mul(PAGE_KB)
            );
        }
    }
    for warning in &report.warnings {
        let _ = writeln!(w, "WARNING: {warning}");
    }
    out
}

#[cfg(test)]
mod tests;

/// `!vm [flags]` as a command result: the report and how to show it.
#[derive(Debug, Clone, Serialize)]
pub struct VmCommand {
    #[serde(flatten)]
    pub report: VmReport,
    #[serde(skip)]
    pub flags: u32,
}

impl crate::report::Report for VmCommand {
    fn render(&self, out: &mut String) {
        out.push_str(&render_text(&self.report, self.flags));
    }
}

/// `!vm [flags]`.
pub fn vm_command(dbg: &crate::Debugger, flags: u32) -> Result<VmCommand, crate::CommandError> {
    collect(dbg.model())
        .map(|report| VmCommand { report, flags })
        .map_err(|e| crate::CommandError::NotFound(e.to_string()))
}
