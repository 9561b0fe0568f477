//! Where a module's symbol table comes from: the symbol path, searched by the PDB identity
//! (name, GUID, age) the module's RSDS record names, as a debugger looks every module up.

use crate::kernel::load_symbols;
use crate::symbols::sympath::SymbolPath;
use crate::symbols::{PdbIdentity, SymbolTable};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// What looking a PDB up gave.
#[derive(Debug, Clone, Default)]
pub struct TableLookup {
    pub table: Option<Arc<SymbolTable>>,
    /// The file the table was read from.
    pub path: Option<std::path::PathBuf>,
    /// Why there is no table (not found, unreadable, mismatched), for `!sym noisy`.
    pub error: Option<String>,
    /// The search, in WinDbg's `SYMSRV:` wording.
    pub log: Vec<String>,
}

/// Finds symbol tables by PDB identity.
pub trait SymbolProvider: Send + Sync {
    fn table_for(&self, pdb: &PdbIdentity) -> TableLookup;
}

/// Looks tables up along a symbol path (`-y`, `_NT_SYMBOL_PATH`), once per PDB.
pub struct PathProvider {
    path: SymbolPath,
    cache: Mutex<HashMap<String, TableLookup>>,
}

impl PathProvider {
    #[must_use]
    pub fn new(path: SymbolPath) -> PathProvider {
        PathProvider {
            path,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl SymbolProvider for PathProvider {
    fn table_for(&self, pdb: &PdbIdentity) -> TableLookup {
        let key = format!("{}/{}", pdb.name.to_ascii_lowercase(), pdb.store_key());
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return hit.clone();
        }
        let lookup = match load_symbols(&self.path, pdb) {
            Ok(loaded) => TableLookup {
                table: Some(Arc::new(loaded.table)),
                path: Some(loaded.path),
                error: None,
                log: loaded.search.log,
            },
            Err(e) => TableLookup {
                table: None,
                path: None,
                log: match &e {
                    crate::kernel::SymbolLoadError::NotFound { log, .. } => log.clone(),
                    _ => Vec::new(),
                },
                error: Some(e.to_string()),
            },
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, lookup.clone());
        lookup
    }
}
