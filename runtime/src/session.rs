//! A session: one target, its kernel address space, the kernel found in it and its symbols.
//! Opening never fails past the target itself: what could not be found is kept as the
//! error, so `kds info` can say what it looked for and where.

use crate::kernel::{
    load_symbols, locate_kernel, KernelError, KernelImage, LoadedSymbols, SymbolLoadError,
};
use crate::mmu::{AddressSpace, PagingSpec, X64, X86, X86_PAE};
use crate::symbols::sympath::SymbolPath;
use crate::symbols::SymbolTable;
use crate::target::{Arch, Target};
use std::sync::Arc;

pub struct Session {
    pub target: Arc<dyn Target>,
    /// The kernel's address space (the capture-time DirectoryTableBase).
    pub kernel_space: AddressSpace,
    pub symbol_path: SymbolPath,
    pub kernel: Result<KernelImage, KernelError>,
    /// `None` when there is no kernel or its image names no PDB to look for.
    pub symbols: Option<Result<LoadedSymbols, SymbolLoadError>>,
}

/// The paging mode of an architecture.
#[must_use]
pub fn paging_spec(arch: Arch) -> Option<&'static PagingSpec> {
    match arch {
        Arch::X64 => Some(&X64),
        Arch::X86 { pae: true } => Some(&X86_PAE),
        Arch::X86 { pae: false } => Some(&X86),
    }
}

/// Why a session could not be opened at all.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0} targets are not supported yet")]
    UnsupportedArch(Arch),
}

impl Session {
    /// Locate the kernel and load its symbols along `symbol_path`.
    pub fn open(target: Arc<dyn Target>, symbol_path: SymbolPath) -> Result<Session, SessionError> {
        let identity = target.identity().clone();
        let spec =
            paging_spec(identity.arch).ok_or(SessionError::UnsupportedArch(identity.arch))?;
        let kernel_space =
            AddressSpace::new(Arc::clone(&target), spec, identity.directory_table_base);
        let kernel = locate_kernel(&kernel_space, &identity);
        let symbols = kernel
            .as_ref()
            .ok()
            .and_then(|k| k.pdb().ok())
            .map(|pdb| load_symbols(&symbol_path, pdb));
        Ok(Session {
            target,
            kernel_space,
            symbol_path,
            kernel,
            symbols,
        })
    }

    /// The kernel's symbol table, when it loaded.
    #[must_use]
    pub fn kernel_symbols(&self) -> Option<&SymbolTable> {
        match &self.symbols {
            Some(Ok(loaded)) => Some(&loaded.table),
            _ => None,
        }
    }

    /// Virtual address of a kernel global (`kernel base + RVA`).
    #[must_use]
    pub fn kernel_symbol(&self, name: &str) -> Option<u64> {
        let base = self.kernel.as_ref().ok()?.base;
        Some(base + self.kernel_symbols()?.try_symbol_rva(name)?)
    }

    /// The stop code: the dump header's, else `KiBugCheckData` in memory (a live kernel that
    /// crashed with the debugger attached).
    #[must_use]
    pub fn bugcheck(&self) -> Option<crate::target::BugCheck> {
        self.target.identity().bugcheck.or_else(|| {
            crate::kernel::bugcheck_in_memory(
                &self.kernel_space,
                self.kernel_symbol("KiBugCheckData")?,
            )
        })
    }

    /// Processors: what the target says, else `KeNumberProcessors` (a header-less image).
    #[must_use]
    pub fn processor_count(&self) -> u32 {
        match self.target.identity().processor_count {
            0 => self
                .kernel_symbol("KeNumberProcessors")
                .and_then(|at| self.kernel_space.read_u32(at).ok())
                .unwrap_or(0),
            n => n,
        }
    }
}
