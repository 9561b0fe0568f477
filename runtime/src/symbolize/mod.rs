//! Addresses to `module!symbol+0xoff` and back, over the modules of a target: the kernel's
//! loaded modules, and a process's user modules once a command asked for them (`.process /r`).
//!
//! A module's symbols come from the best source it has, as a debugger's do: the symbol table
//! of its PDB (today: the kernel's ISF table), else its export table read from memory, else
//! none (addresses then print as `module+0xoff`). Symbols are loaded on first use.

mod exports;
mod provider;

pub use exports::{read_exports, Export, ExportError};
pub use provider::{PathProvider, SymbolProvider, TableLookup};

use crate::mmu::AddressSpace;
use crate::model::{ModelContext, ModelError, Object, Rows, Value};
use crate::symbols::SymbolTable;
use serde::Serialize;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Where a module's symbols came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SymbolSource {
    /// A symbol table (PDB or ISF): every function and global.
    Pdb,
    /// The module's export table only.
    Export,
    /// Nothing: addresses print as `module+0xoff`.
    None,
}

impl SymbolSource {
    /// How `lm` describes it.
    #[must_use]
    pub fn lm_label(self) -> &'static str {
        match self {
            SymbolSource::Pdb => "(pdb symbols)",
            SymbolSource::Export => "(export symbols)",
            SymbolSource::None => "(deferred)",
        }
    }
}

/// A module's symbols, sorted by RVA.
#[derive(Debug, Clone)]
pub struct ModuleSymbols {
    pub source: SymbolSource,
    /// `(rva, name)`, ascending.
    pub names: Vec<(u64, String)>,
    /// Why a better source was not used (a failed export read), for `!sym noisy`.
    pub note: Option<String>,
    /// The symbol file the names came from (`lm` shows it).
    pub file: Option<std::path::PathBuf>,
    /// How the table was searched for (`SYMSRV:` lines, for `!sym noisy`).
    pub log: Vec<String>,
}

impl ModuleSymbols {
    /// The symbol at or below `rva`, with the displacement. Of several names at one address
    /// (ntdll exports `NtX` and `ZwX` together) the first in name order is given.
    #[must_use]
    pub fn nearest(&self, rva: u64) -> Option<(&str, u64)> {
        let i = self.names.partition_point(|(r, _)| *r <= rva);
        let (at, _) = self.names.get(i.checked_sub(1)?)?;
        let first = self.names.partition_point(|(r, _)| r < at);
        let (_, name) = self.names.get(first)?;
        Some((name.as_str(), rva - at))
    }
}

/// Where the symbols of a module come from, before they are loaded.
#[derive(Clone)]
enum Provider {
    Table(Arc<SymbolTable>),
    /// The image in memory: its PDB through `symbols` when there is one, else its exports.
    Image {
        space: Arc<AddressSpace>,
        symbols: Option<Arc<dyn SymbolProvider>>,
    },
}

/// One loaded module.
pub struct LoadedModule {
    /// The debugger's name for it: `nt`, `hal`, `ntdll`, `KERNELBASE`.
    pub name: String,
    /// The image file name from the loader entry (`ntoskrnl.exe`).
    pub image_name: String,
    /// The full path from the loader entry.
    pub path: String,
    pub base: u64,
    pub size: u64,
    /// A user-mode module (from a PEB loader list).
    pub user: bool,
    provider: Provider,
    /// For a module given its table: the file it was read from.
    table_file: Option<std::path::PathBuf>,
    symbols: OnceLock<ModuleSymbols>,
}

impl fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModule")
            .field("name", &self.name)
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &format_args!("{:#x}", self.size))
            .finish_non_exhaustive()
    }
}

impl LoadedModule {
    /// A module whose symbols are `table`'s (RVAs from `base`).
    #[must_use]
    pub fn with_table(
        image_name: &str,
        path: &str,
        base: u64,
        size: u64,
        table: Arc<SymbolTable>,
    ) -> LoadedModule {
        LoadedModule::new(image_name, path, base, size, false, Provider::Table(table))
    }

    /// A module whose symbols are its exports, read through `space` when first needed.
    #[must_use]
    pub fn with_exports(
        image_name: &str,
        path: &str,
        base: u64,
        size: u64,
        user: bool,
        space: Arc<AddressSpace>,
    ) -> LoadedModule {
        LoadedModule::with_provider(image_name, path, base, size, user, space, None)
    }

    /// A module whose symbols come from the table `symbols` finds for the PDB its RSDS record
    /// names, else from its exports; both looked up when first needed.
    #[must_use]
    pub fn with_provider(
        image_name: &str,
        path: &str,
        base: u64,
        size: u64,
        user: bool,
        space: Arc<AddressSpace>,
        symbols: Option<Arc<dyn SymbolProvider>>,
    ) -> LoadedModule {
        LoadedModule::new(
            image_name,
            path,
            base,
            size,
            user,
            Provider::Image { space, symbols },
        )
    }

    fn new(
        image_name: &str,
        path: &str,
        base: u64,
        size: u64,
        user: bool,
        provider: Provider,
    ) -> LoadedModule {
        let name = if matches!(provider, Provider::Table(_)) && !user && is_kernel(image_name) {
            "nt".to_string()
        } else {
            debugger_name(image_name)
        };
        LoadedModule {
            name,
            image_name: image_name.to_string(),
            path: path.to_string(),
            base,
            size,
            user,
            provider,
            table_file: None,
            symbols: OnceLock::new(),
        }
    }

    /// Record the file the module's table came from (shown by `lm`).
    #[must_use]
    pub fn from_file(mut self, file: Option<std::path::PathBuf>) -> LoadedModule {
        self.table_file = file;
        self
    }

    /// Whether `address` lies in the image.
    #[must_use]
    pub fn contains(&self, address: u64) -> bool {
        address >= self.base && address - self.base < self.size
    }

    /// End address (exclusive).
    #[must_use]
    pub fn end(&self) -> u64 {
        self.base.wrapping_add(self.size)
    }

    /// The module's symbols, loaded on first use.
    pub fn symbols(&self) -> &ModuleSymbols {
        self.symbols.get_or_init(|| match &self.provider {
            Provider::Table(table) => {
                let mut symbols = table_symbols(table);
                symbols.file = self.table_file.clone();
                symbols
            }
            Provider::Image { space, symbols } => {
                let mut note = None;
                let mut search_log = Vec::new();
                if let Some(provider) = symbols {
                    match crate::kernel::image_at(space, self.base) {
                        Ok(image) => match image.pdb_identity() {
                            Ok(pdb) => {
                                let lookup = provider.table_for(pdb);
                                if let Some(table) = lookup.table {
                                    let mut symbols = table_symbols(&table);
                                    symbols.file = lookup.path;
                                    symbols.log = lookup.log;
                                    return symbols;
                                }
                                note = lookup.error;
                                search_log = lookup.log;
                            }
                            Err(e) => note = Some(e.to_string()),
                        },
                        Err(e) => note = Some(e.to_string()),
                    }
                }
                let mut symbols = export_symbols(space, self.base, note);
                symbols.log = search_log;
                symbols
            }
        })
    }

    /// Whether the module was given its table up front (the kernel's, loaded with the
    /// session), rather than looking one up on first use.
    #[must_use]
    pub fn has_table(&self) -> bool {
        matches!(self.provider, Provider::Table(_))
    }

    /// Whether the symbols were loaded already.
    #[must_use]
    pub fn symbols_loaded(&self) -> bool {
        self.symbols.get().is_some()
    }

    /// The address of `symbol` in this module (exact name, case-sensitive as PDBs are).
    #[must_use]
    pub fn resolve(&self, symbol: &str) -> Option<u64> {
        self.symbols()
            .names
            .iter()
            .find(|(_, n)| n == symbol)
            .map(|(rva, _)| self.base.wrapping_add(*rva))
    }
}

/// Every named symbol of a table (`$$N` compiler scopes left out).
fn table_symbols(table: &SymbolTable) -> ModuleSymbols {
    // Publics and globals, and the procedures a PDB records (static functions have no
    // public): one name list, duplicates dropped.
    let mut names: Vec<(u64, String)> = table
        .symbols()
        .filter(|(n, _)| !n.starts_with("$$"))
        .map(|(n, rva)| (rva, n.to_string()))
        .chain(table.functions().iter().map(|f| (f.rva, f.name.clone())))
        .collect();
    names.sort();
    names.dedup();
    ModuleSymbols {
        source: SymbolSource::Pdb,
        names,
        note: None,
        file: None,
        log: Vec::new(),
    }
}

/// A module's exports as its symbols; `note` says why no table was used.
fn export_symbols(space: &AddressSpace, base: u64, note: Option<String>) -> ModuleSymbols {
    match read_exports(space, base) {
        Ok(exports) if !exports.is_empty() => ModuleSymbols {
            source: SymbolSource::Export,
            names: exports
                .into_iter()
                .map(|e| (u64::from(e.rva), e.name))
                .collect(),
            note,
            file: None,
            log: Vec::new(),
        },
        Ok(_) => ModuleSymbols {
            source: SymbolSource::None,
            names: Vec::new(),
            note: Some(note.unwrap_or_else(|| "no symbol table and no exports".into())),
            file: None,
            log: Vec::new(),
        },
        Err(e) => ModuleSymbols {
            source: SymbolSource::None,
            names: Vec::new(),
            note: Some(note.map_or_else(|| e.to_string(), |n| format!("{n}; {e}"))),
            file: None,
            log: Vec::new(),
        },
    }
}

/// The kernel image names (`ntoskrnl.exe`, `ntkrnlmp.exe`, `ntkrnlpa.exe`, `ntkrpamp.exe`).
fn is_kernel(image_name: &str) -> bool {
    let lower = image_name.to_ascii_lowercase();
    lower.starts_with("ntoskrnl") || lower.starts_with("ntkrnl") || lower.starts_with("ntkrpamp")
}

/// A module's debugger name: its file name without the extension (`hal.dll` → `hal`).
#[must_use]
pub fn debugger_name(image_name: &str) -> String {
    let file = image_name.rsplit(['\\', '/']).next().unwrap_or(image_name);
    match file.rfind('.') {
        Some(dot) if dot > 0 => file[..dot].to_string(),
        _ => file.to_string(),
    }
}

/// An address as a module, symbol and displacement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Symbolized {
    pub module: String,
    pub symbol: Option<String>,
    pub displacement: u64,
}

impl fmt::Display for Symbolized {
    /// `nt!KiSwapContext+0x76`, `nt!KiSwapContext`, or `tcpip+0x1a2b` without symbols.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.symbol {
            Some(symbol) if self.displacement == 0 => write!(f, "{}!{symbol}", self.module),
            Some(symbol) => write!(f, "{}!{symbol}+{:#x}", self.module, self.displacement),
            None => write!(f, "{}+{:#x}", self.module, self.displacement),
        }
    }
}

/// Loaded modules sorted by base, for lookups by address or name.
#[derive(Debug, Clone, Default)]
pub struct ModuleMap {
    modules: Vec<Arc<LoadedModule>>,
}

impl ModuleMap {
    #[must_use]
    pub fn new(mut modules: Vec<Arc<LoadedModule>>) -> ModuleMap {
        modules.sort_by_key(|m| m.base);
        ModuleMap { modules }
    }

    /// Kernel and user modules together (a process context).
    #[must_use]
    pub fn merged(&self, other: &ModuleMap) -> ModuleMap {
        ModuleMap::new(
            self.modules
                .iter()
                .chain(other.modules.iter())
                .cloned()
                .collect(),
        )
    }

    #[must_use]
    pub fn modules(&self) -> &[Arc<LoadedModule>] {
        &self.modules
    }

    /// The module containing `address`.
    #[must_use]
    pub fn module_at(&self, address: u64) -> Option<&Arc<LoadedModule>> {
        let i = self.modules.partition_point(|m| m.base <= address);
        let m = self.modules.get(i.checked_sub(1)?)?;
        m.contains(address).then_some(m)
    }

    /// The module named `name` (debugger name or image file name, any case).
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<&Arc<LoadedModule>> {
        self.modules
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name) || m.image_name.eq_ignore_ascii_case(name))
    }

    /// `address` as `module!symbol+0xoff`, or `None` when no module contains it.
    #[must_use]
    pub fn symbolize(&self, address: u64) -> Option<Symbolized> {
        let m = self.module_at(address)?;
        let rva = address - m.base;
        Some(match m.symbols().nearest(rva) {
            Some((symbol, displacement)) => Symbolized {
                module: m.name.clone(),
                symbol: Some(symbol.to_string()),
                displacement,
            },
            None => Symbolized {
                module: m.name.clone(),
                symbol: None,
                displacement: rva,
            },
        })
    }

    /// The address of `module!symbol`.
    #[must_use]
    pub fn resolve(&self, module: &str, symbol: &str) -> Option<u64> {
        self.by_name(module)?.resolve(symbol)
    }
}

impl crate::unwind::ModuleLookup for ModuleMap {
    fn module_at(&self, address: u64) -> Option<crate::unwind::ModuleRange> {
        ModuleMap::module_at(self, address).map(|m| crate::unwind::ModuleRange {
            base: m.base,
            size: m.size,
        })
    }
}

/// The kernel's modules from `PsLoadedModuleList`: the kernel itself with the session's symbol
/// table, every other module with its exports.
pub fn kernel_module_map(model: &Arc<ModelContext>) -> Result<(ModuleMap, Rows), ModelError> {
    let rows = model.kernel_modules()?;
    let space = Arc::clone(model.kernel_space());
    let modules = rows
        .rows
        .iter()
        .filter_map(|row| {
            let (image_name, path, base, size) = loader_entry(row)?;
            Some(Arc::new(if base == model.kernel_base() {
                LoadedModule::with_table(&image_name, &path, base, size, Arc::clone(model.table()))
                    .from_file(model.kernel_symbol_file())
            } else {
                LoadedModule::with_provider(
                    &image_name,
                    &path,
                    base,
                    size,
                    false,
                    Arc::clone(&space),
                    model.symbol_provider(),
                )
            }))
        })
        .collect();
    Ok((ModuleMap::new(modules), rows))
}

/// A process's user modules from its PEB loader list, read in its address space.
pub fn user_module_map(
    model: &Arc<ModelContext>,
    process: &Object,
) -> Result<(ModuleMap, Rows), ModelError> {
    let rows = model.process_modules(process)?;
    let space = Arc::clone(process.space());
    let modules = rows
        .rows
        .iter()
        .filter_map(|row| {
            let (image_name, path, base, size) = loader_entry(row)?;
            Some(Arc::new(LoadedModule::with_provider(
                &image_name,
                &path,
                base,
                size,
                true,
                Arc::clone(&space),
                model.symbol_provider(),
            )))
        })
        .collect();
    Ok((ModuleMap::new(modules), rows))
}

/// Name, path, base and size of a loader entry; `None` when the entry cannot be read.
fn loader_entry(row: &Object) -> Option<(String, String, u64, u64)> {
    let text = |field: &str| match row.field(field) {
        Ok(Value::Str(s)) => s,
        _ => String::new(),
    };
    let base = row.field("base").ok()?.as_u64()?;
    let size = row.field("size").ok()?.as_u64()?;
    let path = text("path");
    let mut name = text("name");
    if name.is_empty() {
        name = path.rsplit('\\').next().unwrap_or_default().to_string();
    }
    Some((name, path, base, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugger_names_drop_the_extension() {
        assert_eq!(debugger_name("hal.dll"), "hal");
        assert_eq!(debugger_name("KERNELBASE.dll"), "KERNELBASE");
        assert_eq!(
            debugger_name("\\SystemRoot\\system32\\drivers\\Ntfs.sys"),
            "Ntfs"
        );
        assert_eq!(debugger_name("noext"), "noext");
        assert!(is_kernel("ntoskrnl.exe") && is_kernel("ntkrnlmp.exe") && !is_kernel("hal.dll"));
    }

    #[test]
    fn nearest_symbol_is_at_or_below() {
        let s = ModuleSymbols {
            source: SymbolSource::Export,
            names: vec![(0x100, "A".into()), (0x200, "B".into())],
            note: None,
            file: None,
            log: Vec::new(),
        };
        assert_eq!(s.nearest(0x80), None);
        assert_eq!(s.nearest(0x100), Some(("A", 0)));
        assert_eq!(s.nearest(0x1ff), Some(("A", 0xff)));
        assert_eq!(s.nearest(0x250), Some(("B", 0x50)));
        let aliases = ModuleSymbols {
            source: SymbolSource::Export,
            names: vec![(0x100, "NtWait".into()), (0x100, "ZwWait".into())],
            note: None,
            file: None,
            log: Vec::new(),
        };
        assert_eq!(aliases.nearest(0x114), Some(("NtWait", 0x14)));
    }

    #[test]
    fn symbolized_reads_like_windbg() {
        let at = |symbol: Option<&str>, displacement| Symbolized {
            module: "nt".into(),
            symbol: symbol.map(str::to_string),
            displacement,
        };
        assert_eq!(
            at(Some("KiSwapContext"), 0x76).to_string(),
            "nt!KiSwapContext+0x76"
        );
        assert_eq!(at(Some("KiSwapContext"), 0).to_string(), "nt!KiSwapContext");
        assert_eq!(at(None, 0x1a2b).to_string(), "nt+0x1a2b");
    }
}
