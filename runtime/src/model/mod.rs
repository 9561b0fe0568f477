//! The object model: [`Value`]s the language computes with, typed [`Object`] views over target
//! memory, bounded `LIST_ENTRY` walks, and the collections playbooks query (`processes`,
//! `threads`, `modules`).
//!
//! Every structure offset, field type, enum constant and global comes from the kernel's
//! [`SymbolTable`]; nothing here knows a build.
//!
//! # Address spaces
//! Each [`Object`] and each [`Pointer`] carries the address space it was read in. An
//! `_EPROCESS` view always uses the space of its own `Pcb.DirectoryTableBase` (falling back to
//! the kernel space when that DTB cannot map the EPROCESS itself), and an `_ETHREAD` view the
//! space of its owning process (`Tcb.Process`). Everything reached from an object (embedded
//! structures, pointers, their targets) inherits its space, so `p.Peb.ProcessParameters` reads
//! user memory of `p`, while kernel addresses resolve through the kernel half every process
//! shares. The [`ModelContext`] keeps one [`AddressSpace`] per DTB.
//!
//! # Rows
//! Process, thread and module views are ordinary objects whose type (`_EPROCESS`, `_ETHREAD`,
//! `_KLDR_DATA_TABLE_ENTRY` / `_LDR_DATA_TABLE_ENTRY`) gives them friendly fields
//! ([`PROCESS_FIELDS`], [`THREAD_FIELDS`], [`MODULE_FIELDS`]). [`Object::field`] looks a name
//! up as a friendly field first, then as a raw field of the structure, then as a field of the
//! structure embedded at offset 0 (`Pcb`, `Tcb`), so `p.DirectoryTableBase` works like
//! `p.Pcb.DirectoryTableBase`. Rows are lazy: a field is read when it is asked for, and only
//! its bytes; friendly values are remembered per row.

mod clock;
mod error;
pub mod handles;
mod list;
mod object;
mod rows;
mod value;

pub use clock::{format_filetime, Clock};
pub use error::ModelError;
pub use list::{walk_list_raw, ListLayout, ListProblem, ListWalk, ListWarning};
pub use object::{Object, Pointer, RowKind, Scope};
pub use rows::{Rows, MODULE_FIELDS, PROCESS_FIELDS, THREAD_FIELDS};
pub use value::{EnumValue, GroupKey, Record, Value};

use crate::mmu::{AddressSpace, PagingSpec};
use crate::session::Session;
use crate::symbolize::{kernel_module_map, ModuleMap, PathProvider, SymbolProvider};
use crate::symbols::sympath::SymbolPath;
use crate::symbols::SymbolTable;
use crate::target::Target;
use crate::unwind::{Lookup, UnwindCache};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// Bounds that keep every read finite whatever the target holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries a list walk returns at most (default 100 000).
    pub max_list_entries: usize,
    /// Elements an array field yields at most (default 4096).
    pub max_array_elements: u64,
    /// Bytes a string read takes at most (default 64 KiB).
    pub max_string_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_list_entries: 100_000,
            max_array_elements: 4096,
            max_string_bytes: 0x1_0000,
        }
    }
}

/// The session pieces the object model reads through: the target, the kernel's address space
/// and symbol table, the kernel base, and a cache of per-process address spaces.
pub struct ModelContext {
    target: Arc<dyn Target>,
    spec: &'static PagingSpec,
    kernel_space: Arc<AddressSpace>,
    table: Arc<SymbolTable>,
    kernel_base: u64,
    limits: Limits,
    /// Heads the target itself names, used when the table lacks the global.
    identity_process_head: Option<u64>,
    identity_module_list: Option<u64>,
    spaces: Mutex<HashMap<u64, Arc<AddressSpace>>>,
    /// EPROCESS address → the space its views use.
    process_spaces: Mutex<HashMap<u64, Arc<AddressSpace>>>,
    clock: OnceLock<Result<Clock, ModelError>>,
    /// The kernel's modules for symbolizing (walked once).
    kernel_modules: OnceLock<Result<ModuleMap, String>>,
    /// User modules loaded per EPROCESS (`.process /r`): user stack frames resolve with them.
    user_modules: Mutex<HashMap<u64, ModuleMap>>,
    /// Function tables read for unwinding, per address space.
    unwind_caches: Mutex<HashMap<u64, UnwindCache>>,
    /// Where modules other than the kernel find their symbol tables (the session's path,
    /// or what `.sympath` set since).
    symbol_provider: Mutex<Option<Arc<dyn SymbolProvider>>>,
    /// The symbol path that provider searches, when it is one (`.sympath` shows it).
    symbol_path: Mutex<Option<SymbolPath>>,
    /// The file the kernel's table was read from.
    kernel_symbol_file: OnceLock<std::path::PathBuf>,
    /// How the kernel's symbols were found (`SYMSRV:` lines, for `!sym noisy` and `.reload`).
    symbol_log: OnceLock<Vec<String>>,
}

impl std::fmt::Debug for ModelContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelContext")
            .field("kernel_dtb", &self.kernel_space.dtb())
            .field("kernel_base", &self.kernel_base)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ModelContext {
    /// A model over `target`, with the kernel space rooted at `kernel_dtb`.
    #[must_use]
    pub fn new(
        target: Arc<dyn Target>,
        spec: &'static PagingSpec,
        kernel_dtb: u64,
        table: Arc<SymbolTable>,
        kernel_base: u64,
    ) -> Arc<ModelContext> {
        ModelContext::with_limits(
            target,
            spec,
            kernel_dtb,
            table,
            kernel_base,
            Limits::default(),
        )
    }

    /// As [`ModelContext::new`], with explicit bounds.
    #[must_use]
    pub fn with_limits(
        target: Arc<dyn Target>,
        spec: &'static PagingSpec,
        kernel_dtb: u64,
        table: Arc<SymbolTable>,
        kernel_base: u64,
        limits: Limits,
    ) -> Arc<ModelContext> {
        let identity = target.identity().clone();
        let kernel_space = Arc::new(AddressSpace::new(Arc::clone(&target), spec, kernel_dtb));
        let mut spaces = HashMap::new();
        spaces.insert(kernel_dtb, Arc::clone(&kernel_space));
        Arc::new(ModelContext {
            target,
            spec,
            kernel_space,
            table,
            kernel_base,
            limits,
            // Sign-extended 32-bit addresses (KD, KDBG) cut to the paging mode's.
            identity_process_head: identity.ps_active_process_head.map(|a| spec.canonical(a)),
            identity_module_list: identity.ps_loaded_module_list.map(|a| spec.canonical(a)),
            spaces: Mutex::new(spaces),
            process_spaces: Mutex::new(HashMap::new()),
            clock: OnceLock::new(),
            kernel_modules: OnceLock::new(),
            user_modules: Mutex::new(HashMap::new()),
            unwind_caches: Mutex::new(HashMap::new()),
            symbol_provider: Mutex::new(None),
            symbol_path: Mutex::new(None),
            kernel_symbol_file: OnceLock::new(),
            symbol_log: OnceLock::new(),
        })
    }

    /// The model of an opened session: needs its kernel and symbols. The table is copied
    /// once into the model.
    pub fn from_session(session: &Session) -> Result<Arc<ModelContext>, ModelError> {
        let kernel = session
            .kernel
            .as_ref()
            .map_err(|e| ModelError::NoKernel(e.to_string()))?;
        let table = match &session.symbols {
            Some(Ok(loaded)) => Arc::new(loaded.table.clone()),
            Some(Err(e)) => return Err(ModelError::NoSymbols(e.to_string())),
            None => return Err(ModelError::NoSymbols("the kernel names no PDB".into())),
        };
        let model = ModelContext::new(
            Arc::clone(&session.target),
            session.kernel_space.spec(),
            session.kernel_space.dtb(),
            table,
            kernel.base,
        );
        model.set_symbol_path(session.symbol_path.clone());
        if let Some(Ok(loaded)) = &session.symbols {
            let _ = model.kernel_symbol_file.set(loaded.path.clone());
            let _ = model.symbol_log.set(loaded.search.log.clone());
        }
        Ok(model)
    }

    /// Look modules' symbol tables up through `provider` from now on.
    pub fn set_symbol_provider(&self, provider: Arc<dyn SymbolProvider>) {
        *self
            .symbol_provider
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(provider);
    }

    /// Look modules' symbol tables up along `path` from now on (`.sympath`).
    pub fn set_symbol_path(&self, path: SymbolPath) {
        self.set_symbol_provider(Arc::new(PathProvider::new(path.clone())));
        *self
            .symbol_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(path);
    }

    /// The symbol path modules are looked up along, when one was set.
    #[must_use]
    pub fn symbol_path(&self) -> Option<SymbolPath> {
        self.symbol_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The file the kernel's table was read from, when known.
    #[must_use]
    pub fn kernel_symbol_file(&self) -> Option<std::path::PathBuf> {
        self.kernel_symbol_file.get().cloned()
    }

    /// Where modules other than the kernel find their symbol tables, if anywhere.
    #[must_use]
    pub fn symbol_provider(&self) -> Option<Arc<dyn SymbolProvider>> {
        self.symbol_provider
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How the kernel's symbols were found, in WinDbg's `SYMSRV:` wording (empty for a model
    /// not made from a session).
    #[must_use]
    pub fn kernel_symbol_log(&self) -> &[String] {
        self.symbol_log.get().map_or(&[], Vec::as_slice)
    }

    /// Same model with other bounds (the per-DTB cache starts empty).
    #[must_use]
    pub fn relimited(&self, limits: Limits) -> Arc<ModelContext> {
        let model = ModelContext::with_limits(
            Arc::clone(&self.target),
            self.spec,
            self.kernel_space.dtb(),
            Arc::clone(&self.table),
            self.kernel_base,
            limits,
        );
        if let Some(provider) = self.symbol_provider() {
            model.set_symbol_provider(provider);
        }
        *model
            .symbol_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.symbol_path();
        let _ = model.symbol_log.set(self.kernel_symbol_log().to_vec());
        model
    }

    #[must_use]
    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    #[must_use]
    pub fn table(&self) -> &Arc<SymbolTable> {
        &self.table
    }

    #[must_use]
    pub fn kernel_space(&self) -> &Arc<AddressSpace> {
        &self.kernel_space
    }

    #[must_use]
    pub fn kernel_base(&self) -> u64 {
        self.kernel_base
    }

    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Width of a pointer of the kernel, from its table (else the paging mode).
    #[must_use]
    pub fn pointer_size(&self) -> u64 {
        match self.table.pointer_size() {
            0 => self.spec.pointer_size,
            n => n,
        }
    }

    /// The stop code: the dump header's, else `KiBugCheckData` in memory (a live kernel that
    /// crashed with the debugger attached).
    #[must_use]
    pub fn bugcheck(&self) -> Option<crate::target::BugCheck> {
        self.target.identity().bugcheck.or_else(|| {
            crate::kernel::bugcheck_in_memory(
                self.kernel_space(),
                self.symbol_address("KiBugCheckData")?,
            )
        })
    }

    /// Virtual address of a kernel global: kernel base + the table's RVA.
    #[must_use]
    pub fn symbol_address(&self, name: &str) -> Option<u64> {
        self.table
            .try_symbol_rva(name)
            .map(|rva| self.kernel_base.wrapping_add(rva))
    }

    /// The address space of one directory table base, shared by every view that uses it.
    #[must_use]
    pub fn space_for(&self, dtb: u64) -> Arc<AddressSpace> {
        let mut spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            spaces
                .entry(dtb)
                .or_insert_with(|| Arc::new(self.kernel_space.with_dtb(dtb))),
        )
    }

    /// The scope of the kernel: kernel space and table.
    #[must_use]
    pub fn kernel_scope(self: &Arc<Self>) -> Scope {
        Scope::new(
            Arc::clone(self),
            Arc::clone(&self.kernel_space),
            Arc::clone(&self.table),
        )
    }

    /// The scope of a space (kernel table).
    #[must_use]
    pub fn scope_in(self: &Arc<Self>, space: Arc<AddressSpace>) -> Scope {
        Scope::new(Arc::clone(self), space, Arc::clone(&self.table))
    }

    /// The space the views of the process at `eprocess` use: its own DirectoryTableBase,
    /// or the kernel space when that cannot be read or does not map the EPROCESS itself.
    pub fn process_space(&self, eprocess: u64) -> Result<Arc<AddressSpace>, ModelError> {
        if let Some(space) = self
            .process_spaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&eprocess)
        {
            return Ok(Arc::clone(space));
        }
        let loc = self.table.field("_EPROCESS", "Pcb.DirectoryTableBase")?;
        let size = self.table.size_of_ref(&loc.ty)?;
        let at = eprocess.wrapping_add(loc.offset);
        let mut buf = [0u8; 8];
        let n = usize::try_from(size.min(8)).unwrap_or(8);
        let space = match self.kernel_space.read(at, &mut buf[..n]) {
            Ok(()) => {
                let dtb = u64::from_le_bytes(buf);
                let candidate = self.space_for(dtb);
                if dtb != 0 && candidate.physical_address(eprocess).is_ok() {
                    candidate
                } else {
                    Arc::clone(&self.kernel_space)
                }
            }
            Err(_) => Arc::clone(&self.kernel_space),
        };
        self.process_spaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(eprocess, Arc::clone(&space));
        Ok(space)
    }

    /// A typed view of `type_name` at `address` in the kernel space (process and thread
    /// types move to their own space, see the module documentation).
    pub fn object(self: &Arc<Self>, type_name: &str, address: u64) -> Result<Object, ModelError> {
        Object::new(self.kernel_scope(), type_name, address)
    }

    /// A typed view in a given space.
    pub fn object_in(
        self: &Arc<Self>,
        space: Arc<AddressSpace>,
        type_name: &str,
        address: u64,
    ) -> Result<Object, ModelError> {
        Object::new(self.scope_in(space), type_name, address)
    }

    /// The process row of the EPROCESS at `eprocess`.
    pub fn process(self: &Arc<Self>, eprocess: u64) -> Result<Object, ModelError> {
        self.object("_EPROCESS", eprocess)
    }

    /// The thread row of the ETHREAD at `ethread`.
    pub fn thread(self: &Arc<Self>, ethread: u64) -> Result<Object, ModelError> {
        self.object("_ETHREAD", ethread)
    }

    /// Tick count and tick length at capture, read once.
    pub fn clock(&self) -> Result<Clock, ModelError> {
        self.clock
            .get_or_init(|| Clock::read(self, self.kuser_shared_data()))
            .clone()
    }

    /// Processors: what the target says, else `KeNumberProcessors` (a header-less image).
    #[must_use]
    pub fn processor_count(&self) -> u32 {
        match self.target.identity().processor_count {
            0 => self
                .symbol_address("KeNumberProcessors")
                .and_then(|at| self.kernel_space().read_u32(at).ok())
                .unwrap_or(0),
            n => n,
        }
    }

    /// The time of the capture (FILETIME): the dump header's, else the kernel's own clock in
    /// `_KUSER_SHARED_DATA.SystemTime` (a live target: the time it was broken into).
    #[must_use]
    pub fn system_time(&self) -> Option<u64> {
        self.target
            .identity()
            .system_time
            .map(|t| t.0)
            .or_else(|| self.clock().ok()?.system_time)
    }

    /// Kernel-mode address of `_KUSER_SHARED_DATA` for this kernel's architecture.
    #[must_use]
    pub fn kuser_shared_data(&self) -> u64 {
        crate::kernel::kuser_shared_data(self.pointer_size())
    }

    /// The kernel's loaded modules as a symbolizing map (walked once; a failed walk is
    /// remembered as its message).
    pub fn kernel_module_map(self: &Arc<Self>) -> Result<ModuleMap, String> {
        self.kernel_modules
            .get_or_init(|| {
                kernel_module_map(self)
                    .map(|(map, _)| map)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// Remember the user modules of the process at `eprocess` (after `.process /r`).
    pub fn register_user_modules(&self, eprocess: u64, modules: ModuleMap) {
        self.user_modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(eprocess, modules);
    }

    /// The user modules registered for `eprocess`, if any.
    #[must_use]
    pub fn user_modules_of(&self, eprocess: u64) -> Option<ModuleMap> {
        self.user_modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&eprocess)
            .cloned()
    }

    /// Run `f` with the function-table cache of the address space rooted at `dtb`.
    pub fn with_unwind_cache<T>(&self, dtb: u64, f: impl FnOnce(&mut UnwindCache) -> T) -> T {
        let mut caches = self
            .unwind_caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(caches.entry(dtb).or_default())
    }

    /// `[begin, end)` of the unwind entry covering `address` in the image at `module_base`.
    pub fn unwind_entry(
        &self,
        space: &AddressSpace,
        module_base: u64,
        address: u64,
    ) -> Option<(u64, u64)> {
        let rva = u32::try_from(address.checked_sub(module_base)?).ok()?;
        let table = self
            .with_unwind_cache(space.dtb(), |c| c.table(space, module_base))
            .ok()?;
        match table.lookup(rva) {
            Lookup::Found(f) => Some((
                module_base + u64::from(f.begin),
                module_base + u64::from(f.end),
            )),
            _ => None,
        }
    }

    /// `PsActiveProcessHead` from the table, else from the target's own identity.
    #[must_use]
    pub fn process_list_head(&self) -> Option<u64> {
        self.symbol_address("PsActiveProcessHead")
            .or(self.identity_process_head)
    }

    /// `PsLoadedModuleList` from the table, else from the target's own identity.
    #[must_use]
    pub fn module_list_head(&self) -> Option<u64> {
        self.symbol_address("PsLoadedModuleList")
            .or(self.identity_module_list)
    }
}

/// A 64-bit address as WinDbg prints it (`ffffc10a`12345080`), or 8 digits for 32-bit.
#[must_use]
pub fn format_address(address: u64, pointer_size: u64) -> String {
    if pointer_size == 4 && address <= u64::from(u32::MAX) {
        format!("{address:08x}")
    } else {
        format!("{:08x}`{:08x}", address >> 32, address & 0xFFFF_FFFF)
    }
}

/// An address in WinDbg's 64-bit form, for messages.
pub(crate) fn addr(address: u64) -> String {
    format_address(address, 8)
}

#[cfg(test)]
mod tests;
