//! The debugger's state between commands: the implicit process and thread, the module lists
//! symbols resolve against, and what was already walked (a frozen target does not change).

use crate::error::CommandError;
use kds_runtime::model::{ModelContext, Object, Value};
use kds_runtime::symbolize::{kernel_module_map, user_module_map, ModuleMap, Symbolized};
use std::sync::Arc;

/// User modules loaded for one process (`.process /r`, `.reload /user`).
#[derive(Debug, Clone)]
struct UserModules {
    eprocess: u64,
    map: ModuleMap,
    /// The loader entries they came from (rows of the `modules` collection).
    rows: Vec<Object>,
}

/// Session state the commands share.
pub struct Debugger {
    model: Arc<ModelContext>,
    process: Option<Object>,
    thread: Option<Object>,
    processes: Option<Vec<Object>>,
    kernel_modules: Option<ModuleMap>,
    user_modules: Option<UserModules>,
    noisy: bool,
    warnings: Vec<String>,
    /// `.reload` asked for a fresh walk of the kernel's module list.
    reloaded: bool,
    /// Modules (by base) whose symbol load was already reported in noisy mode.
    reported_loads: std::collections::HashSet<u64>,
}

impl std::fmt::Debug for Debugger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debugger")
            .field("process", &self.process.as_ref().map(Object::address))
            .field("thread", &self.thread.as_ref().map(Object::address))
            .field("noisy", &self.noisy)
            .finish_non_exhaustive()
    }
}

impl Debugger {
    #[must_use]
    pub fn new(model: Arc<ModelContext>) -> Debugger {
        Debugger {
            model,
            process: None,
            thread: None,
            processes: None,
            kernel_modules: None,
            user_modules: None,
            noisy: false,
            warnings: Vec::new(),
            reloaded: false,
            reported_loads: std::collections::HashSet::new(),
        }
    }

    #[must_use]
    pub fn model(&self) -> &Arc<ModelContext> {
        &self.model
    }

    #[must_use]
    pub fn pointer_size(&self) -> u64 {
        self.model.pointer_size()
    }

    /// Problems met since the last call (torn lists, unreadable loader data), to report.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    pub(crate) fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// `!sym noisy` / `!sym quiet`.
    pub fn set_noisy(&mut self, noisy: bool) {
        if noisy && !self.noisy {
            // Loads made while quiet are not reported afterwards.
            if let Ok(modules) = self.modules() {
                let loaded = modules.modules().iter().filter(|m| m.symbols_loaded());
                self.reported_loads.extend(loaded.map(|m| m.base));
            }
        }
        self.noisy = noisy;
    }

    /// In noisy mode, a `DBGHELP:` line for each module whose symbols were loaded since the
    /// last call (as WinDbg reports loads while a command runs); nothing when quiet.
    pub fn take_symbol_loads(&mut self) -> Vec<String> {
        if !self.noisy {
            return Vec::new();
        }
        let Ok(modules) = self.modules() else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        for m in modules.modules() {
            if !m.symbols_loaded() || !self.reported_loads.insert(m.base) {
                continue;
            }
            lines.extend(m.symbols().log.iter().cloned());
            lines.push(match m.symbols().source {
                kds_runtime::symbolize::SymbolSource::Pdb => {
                    format!("DBGHELP: {} - public symbols", m.name)
                }
                kds_runtime::symbolize::SymbolSource::Export => {
                    format!("DBGHELP: {} - export symbols", m.name)
                }
                kds_runtime::symbolize::SymbolSource::None => format!(
                    "*** ERROR: Module load completed but symbols could not be loaded for {}\nDBGHELP: {} - no symbols loaded",
                    m.image_name, m.name
                ),
            });
        }
        lines
    }

    #[must_use]
    pub fn noisy(&self) -> bool {
        self.noisy
    }

    /// Every process (walked once; the list's warnings are reported the first time).
    pub fn processes(&mut self) -> Result<Vec<Object>, CommandError> {
        if let Some(p) = &self.processes {
            return Ok(p.clone());
        }
        let rows = self.model.processes()?;
        for w in &rows.warnings {
            self.warn(w.to_string());
        }
        self.processes = Some(rows.rows.clone());
        Ok(rows.rows)
    }

    /// The threads of `process`, with the list's warnings reported.
    pub fn threads_of(&mut self, process: &Object) -> Result<Vec<Object>, CommandError> {
        let rows = self.model.process_threads(process)?;
        for w in &rows.warnings {
            self.warn(w.to_string());
        }
        Ok(rows.rows)
    }

    /// The implicit process: as set by `.process`, else the one whose page tables the target
    /// names (the process current on the crashing processor).
    pub fn implicit_process(&mut self) -> Result<Object, CommandError> {
        if let Some(p) = &self.process {
            return Ok(p.clone());
        }
        let dtb = self.model.kernel_space().dtb();
        let found = self
            .processes()?
            .into_iter()
            .find(|p| p.field("dtb").ok().and_then(|d| d.as_u64()) == Some(dtb));
        let process = found.ok_or_else(|| {
            CommandError::not_found(format!(
                "no process has the target's DirectoryTableBase {dtb:#x}"
            ))
        })?;
        self.process = Some(process.clone());
        Ok(process)
    }

    /// The implicit process, if one was set or derived already (derives nothing).
    #[must_use]
    pub fn process_if_set(&self) -> Option<Object> {
        self.process.clone()
    }

    /// The implicit process's address, if one was set or derived already.
    #[must_use]
    pub fn current_process_address(&self) -> Option<u64> {
        self.process.as_ref().map(Object::address)
    }

    /// The implicit process if one was set or can be derived, without failing.
    pub fn current_process(&mut self) -> Option<Object> {
        self.implicit_process().ok()
    }

    /// Make `process` the implicit process; with `reload`, load its user modules.
    pub fn set_process(&mut self, process: Object, reload: bool) -> Result<(), CommandError> {
        let eprocess = process.address();
        self.process = Some(process.clone());
        if self
            .user_modules
            .as_ref()
            .is_some_and(|u| u.eprocess != eprocess)
        {
            self.user_modules = None;
        }
        if reload {
            self.load_user_modules(&process)?;
        }
        Ok(())
    }

    /// Load (again) the user modules of `process` from its PEB loader list.
    pub fn load_user_modules(&mut self, process: &Object) -> Result<usize, CommandError> {
        let (map, rows) = user_module_map(&self.model, process)?;
        for w in &rows.warnings {
            self.warn(w.to_string());
        }
        let count = map.modules().len();
        self.model
            .register_user_modules(process.address(), map.clone());
        self.user_modules = Some(UserModules {
            eprocess: process.address(),
            map,
            rows: rows.rows,
        });
        Ok(count)
    }

    /// The EPROCESS whose user modules are loaded, if any.
    #[must_use]
    pub fn user_modules_process(&self) -> Option<u64> {
        self.user_modules.as_ref().map(|u| u.eprocess)
    }

    /// The implicit thread: as set by `.thread`, else the thread running on processor 0.
    pub fn implicit_thread(&mut self) -> Result<Object, CommandError> {
        if let Some(t) = &self.thread {
            return Ok(t.clone());
        }
        let thread = self.running_thread(0)?;
        self.thread = Some(thread.clone());
        Ok(thread)
    }

    /// Make `thread` the implicit thread.
    pub fn set_thread(&mut self, thread: Object) {
        self.thread = Some(thread);
    }

    /// The thread `KiProcessorBlock[processor]`'s PRCB names as current.
    pub fn running_thread(&self, processor: u64) -> Result<Object, CommandError> {
        let ps = self.model.pointer_size();
        let block = self
            .model
            .symbol_address("KiProcessorBlock")
            .ok_or_else(|| CommandError::not_found("the symbol table has no KiProcessorBlock"))?;
        let space = self.model.kernel_space();
        let prcb = space
            .read_pointer(block + processor * ps)
            .map_err(|e| CommandError::not_found(format!("KiProcessorBlock[{processor}]: {e}")))?;
        let prcb = self.model.object("_KPRCB", prcb)?;
        match prcb.raw_field("CurrentThread")? {
            Value::Pointer(p) if !p.is_null() => Ok(self.model.thread(p.address)?),
            _ => Err(CommandError::not_found(format!(
                "processor {processor} has no current thread"
            ))),
        }
    }

    /// The kernel's modules (walked once).
    pub fn kernel_modules(&mut self) -> Result<&ModuleMap, CommandError> {
        if self.kernel_modules.is_none() && !self.reloaded {
            // The walk the model keeps (it reports its own failure).
            if let Ok(map) = self.model.kernel_module_map() {
                self.kernel_modules = Some(map);
            }
        }
        if self.kernel_modules.is_none() {
            let (map, rows) = kernel_module_map(&self.model)?;
            for w in &rows.warnings {
                self.warn(w.to_string());
            }
            self.kernel_modules = Some(map);
        }
        Ok(self.kernel_modules.get_or_insert_with(ModuleMap::default))
    }

    /// Walk the kernel's module list again when next needed (`.reload`).
    pub fn forget_kernel_modules(&mut self) {
        self.kernel_modules = None;
        self.reloaded = true;
    }

    /// Drop the loaded user modules (their symbols are looked up again when next loaded).
    pub fn forget_user_modules(&mut self) {
        self.user_modules = None;
    }

    /// The user modules loaded for the implicit process, if any.
    #[must_use]
    pub fn user_modules(&self) -> Option<&ModuleMap> {
        let current = self.process.as_ref()?.address();
        self.user_modules
            .as_ref()
            .filter(|u| u.eprocess == current)
            .map(|u| &u.map)
    }

    /// The loader entries of the implicit process's user modules, once loaded.
    #[must_use]
    pub fn user_module_rows(&self) -> Vec<Object> {
        let Some(current) = self.process.as_ref().map(Object::address) else {
            return Vec::new();
        };
        self.user_modules
            .as_ref()
            .filter(|u| u.eprocess == current)
            .map(|u| u.rows.clone())
            .unwrap_or_default()
    }

    /// Kernel modules, plus the implicit process's user modules once loaded.
    pub fn modules(&mut self) -> Result<ModuleMap, CommandError> {
        let kernel = self.kernel_modules()?.clone();
        Ok(match self.user_modules() {
            Some(user) => kernel.merged(user),
            None => kernel,
        })
    }

    /// `address` as `module!symbol+0xoff`.
    pub fn symbolize(&mut self, address: u64) -> Option<Symbolized> {
        self.modules().ok()?.symbolize(address)
    }
}
