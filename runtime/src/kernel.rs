//! Finding and identifying the kernel of a target, then loading its symbol table.
//!
//! Before symbols are loaded no layout is known, so the locator uses the two layouts every
//! Windows kernel shares with its debugger: the loader entry's `DllBase` (the sixth pointer of
//! `_KLDR_DATA_TABLE_ENTRY`, checked against every table in the tests) and the documented
//! `KDDEBUGGER_DATA64` header. Everything after that comes from the table.

use crate::mmu::{AddressSpace, VirtualReadError};
use crate::pe::{parse_image, ImageMemory, PeError, PeImage};
use crate::symbols::fetch::SymbolLocator;
use crate::symbols::store::{SymbolFileKind, SymbolSearch};
use crate::symbols::sympath::SymbolPath;
use crate::symbols::{
    load_isf_file, load_pdb_file, IsfError, PdbIdentity, PdbLoadError, SymbolTable,
};
use crate::target::TargetIdentity;
use serde::Serialize;
use std::path::PathBuf;
use thiserror::Error;

/// Where x64 Windows maps KUSER_SHARED_DATA for the kernel: fixed by the platform, not by a
/// build.
pub const KUSER_SHARED_DATA_X64: u64 = 0xFFFF_F780_0000_0000;
/// Where 32-bit Windows (PAE or not) maps KUSER_SHARED_DATA for the kernel.
pub const KUSER_SHARED_DATA_X86: u64 = 0xFFDF_0000;
/// Where every process sees the same page, read-only.
pub const KUSER_SHARED_DATA_USER: u64 = 0x7FFE_0000;

/// The kernel-mode address of KUSER_SHARED_DATA for a kernel whose pointers are
/// `pointer_size` bytes wide (the one place that chooses it by architecture).
///
/// ```
/// use kds_runtime::kernel::kuser_shared_data;
/// assert_eq!(kuser_shared_data(8), 0xFFFF_F780_0000_0000);
/// assert_eq!(kuser_shared_data(4), 0xFFDF_0000);
/// ```
#[must_use]
pub fn kuser_shared_data(pointer_size: u64) -> u64 {
    if pointer_size == 4 {
        KUSER_SHARED_DATA_X86
    } else {
        KUSER_SHARED_DATA_X64
    }
}

/// Index of `DllBase` in a loader entry, in pointers (after two LIST_ENTRYs' worth of fields).
const DLL_BASE_POINTER_INDEX: u64 = 6;
/// `KDDEBUGGER_DATA64.Header.OwnerTag` ("KDBG") and where it and `KernBase` sit.
const KDBG_OWNER_TAG: u32 = 0x4742_444B;
const KDBG_OWNER_TAG_OFFSET: u64 = 0x10;
const KDBG_KERNBASE_OFFSET: u64 = 0x18;

/// How the kernel base was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelSource {
    /// The first entry of `PsLoadedModuleList` (the kernel's own loader entry).
    LoadedModuleList,
    /// `KernBase` of the decoded `KDDEBUGGER_DATA64` block.
    DebuggerDataBlock,
    /// The base the target itself names: a KD handshake's KernBase, or what discovery found
    /// scanning a header-less image.
    TargetIdentity,
}

/// The kernel image found in a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelImage {
    pub base: u64,
    pub source: KernelSource,
    pub pe: PeImage,
}

impl KernelImage {
    /// The PDB the kernel was built with, if its image names one.
    pub fn pdb(&self) -> Result<&PdbIdentity, PeError> {
        self.pe.pdb_identity()
    }
}

/// Why the kernel could not be found.
#[derive(Debug, Error)]
pub enum KernelError {
    #[error("the target names neither PsLoadedModuleList nor KdDebuggerDataBlock: cannot find the kernel without a scan")]
    NoAnchor,
    #[error("cannot find the kernel: {}", .attempts.join("; "))]
    NotFound { attempts: Vec<String> },
}

/// Find the kernel image: from `PsLoadedModuleList`, else from the debugger data block.
pub fn locate_kernel(
    space: &AddressSpace,
    identity: &TargetIdentity,
) -> Result<KernelImage, KernelError> {
    let mut attempts = Vec::new();
    if identity.ps_loaded_module_list.is_none()
        && identity.kd_debugger_data_block.is_none()
        && identity.kernel_base.is_none()
    {
        return Err(KernelError::NoAnchor);
    }
    // A 32-bit kernel's anchors may arrive sign-extended (KD packets, KDDEBUGGER_DATA64):
    // cut them to the paging mode's addresses; x64 addresses are unchanged.
    let spec = space.spec();
    if let Some(list) = identity.ps_loaded_module_list.map(|a| spec.canonical(a)) {
        match base_from_loaded_module_list(space, list) {
            Ok(base) => match image_at(space, base) {
                Ok(pe) => {
                    return Ok(KernelImage {
                        base,
                        source: KernelSource::LoadedModuleList,
                        pe,
                    })
                }
                Err(e) => attempts.push(format!(
                    "PsLoadedModuleList {list:#x} names base {base:#x}, but {e}"
                )),
            },
            Err(e) => attempts.push(format!("PsLoadedModuleList {list:#x}: {e}")),
        }
    }
    if let Some(kdbg) = identity.kd_debugger_data_block.map(|a| spec.canonical(a)) {
        match base_from_kdbg(space, kdbg) {
            Ok(base) => match image_at(space, base) {
                Ok(pe) => {
                    return Ok(KernelImage {
                        base,
                        source: KernelSource::DebuggerDataBlock,
                        pe,
                    })
                }
                Err(e) => attempts.push(format!(
                    "KdDebuggerDataBlock {kdbg:#x} names KernBase {base:#x}, but {e}"
                )),
            },
            Err(e) => attempts.push(format!("KdDebuggerDataBlock {kdbg:#x}: {e}")),
        }
    }
    if let Some(base) = identity.kernel_base.map(|a| spec.canonical(a)) {
        match image_at(space, base) {
            Ok(pe) => {
                return Ok(KernelImage {
                    base,
                    source: KernelSource::TargetIdentity,
                    pe,
                })
            }
            Err(e) => attempts.push(format!("the target names kernel base {base:#x}, but {e}")),
        }
    }
    Err(KernelError::NotFound { attempts })
}

fn base_from_loaded_module_list(space: &AddressSpace, list: u64) -> Result<u64, String> {
    let first = space
        .read_pointer(list)
        .map_err(|e| format!("cannot read its Flink: {e}"))?;
    if first == list {
        return Err("the list is empty".into());
    }
    let dll_base_at = first + DLL_BASE_POINTER_INDEX * space.spec().pointer_size;
    space
        .read_pointer(dll_base_at)
        .map_err(|e| format!("cannot read DllBase of the first entry {first:#x}: {e}"))
}

fn base_from_kdbg(space: &AddressSpace, kdbg: u64) -> Result<u64, String> {
    let tag = space
        .read_u32(kdbg + KDBG_OWNER_TAG_OFFSET)
        .map_err(|e| format!("cannot read its header: {e}"))?;
    if tag != KDBG_OWNER_TAG {
        return Err(format!(
            "OwnerTag is {tag:#010x}, not 'KDBG' (the block may still be encoded)"
        ));
    }
    // KDBG pointers are 64-bit on every architecture, sign-extended on x86: narrowed to the
    // paging mode's addresses.
    space
        .read_u64(kdbg + KDBG_KERNBASE_OFFSET)
        .map(|base| space.spec().canonical(base))
        .map_err(|e| format!("cannot read KernBase: {e}"))
}

/// An image mapped in a virtual address space, as the PE parser reads it.
pub struct MappedImage<'a> {
    pub space: &'a AddressSpace,
    pub base: u64,
}

impl ImageMemory for MappedImage<'_> {
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), PeError> {
        self.space
            .read(self.base.wrapping_add(offset), buf)
            .map_err(|e: VirtualReadError| PeError::Read {
                rva: offset,
                len: buf.len(),
                reason: e.to_string(),
            })
    }
}

/// Parse the PE image mapped at `base`.
pub fn image_at(space: &AddressSpace, base: u64) -> Result<PeImage, PeError> {
    parse_image(&MappedImage { space, base })
}

/// Why a module's symbol table could not be loaded.
#[derive(Debug, Error)]
pub enum SymbolLoadError {
    /// Nothing on the path: what was probed, and the `SYMSRV:` lines of the search.
    #[error("{message}")]
    NotFound { message: String, log: Vec<String> },
    #[error(transparent)]
    Isf(#[from] IsfError),
    #[error(transparent)]
    Pdb(#[from] PdbLoadError),
    #[error("{path} is the table of {found}, but the image names {wanted}")]
    Mismatch {
        path: PathBuf,
        found: PdbIdentity,
        wanted: PdbIdentity,
    },
}

/// A symbol table and where it came from.
#[derive(Debug)]
pub struct LoadedSymbols {
    pub table: SymbolTable,
    pub path: PathBuf,
    pub search: SymbolSearch,
}

/// Find and load the table for `pdb` along `path`.
pub fn load_symbols(
    path: &SymbolPath,
    pdb: &PdbIdentity,
) -> Result<LoadedSymbols, SymbolLoadError> {
    let search = SymbolLocator::new(path.clone()).search(pdb);
    let Some(candidate) = search.found.clone() else {
        return Err(SymbolLoadError::NotFound {
            message: search.describe_miss(pdb),
            log: search.log.clone(),
        });
    };
    let table = match candidate.kind {
        SymbolFileKind::Pdb => load_pdb_file(&candidate.path)?,
        SymbolFileKind::IsfJson | SymbolFileKind::IsfJsonXz => load_isf_file(&candidate.path)?,
    };
    if let Some(found) = table.identity() {
        let same = found.guid == pdb.guid
            && found.age == pdb.age
            && found.name.eq_ignore_ascii_case(&pdb.name);
        if !same {
            return Err(SymbolLoadError::Mismatch {
                path: candidate.path,
                found: found.clone(),
                wanted: pdb.clone(),
            });
        }
    }
    Ok(LoadedSymbols {
        table,
        path: candidate.path,
        search,
    })
}

/// The stop code and parameters the kernel keeps in `KiBugCheckData` (five pointer-sized
/// values) once it has bugchecked: how a live target says it crashed. `None` while the code
/// is zero (the system has not crashed) or the memory cannot be read.
#[must_use]
pub fn bugcheck_in_memory(
    space: &crate::mmu::AddressSpace,
    ki_bugcheck_data: u64,
) -> Option<crate::target::BugCheck> {
    let width = space.spec().pointer_size;
    let value = |i: u64| space.read_pointer(ki_bugcheck_data + i * width).ok();
    let code = u32::try_from(value(0)? & 0xFFFF_FFFF).ok()?;
    if code == 0 {
        return None;
    }
    Some(crate::target::BugCheck {
        code,
        parameters: [value(1)?, value(2)?, value(3)?, value(4)?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::load_isf_file;
    use std::path::PathBuf;

    /// The bootstrap offset of DllBase must be what every table we have says.
    #[test]
    fn dll_base_bootstrap_offset_matches_every_table() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/symbols");
        let mut checked = 0;
        for sub in ["ntkrnlmp.pdb", "x86"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.to_string_lossy().ends_with(".json.xz") {
                    continue;
                }
                let table = load_isf_file(&path).expect("shared table loads");
                let entry_type = if table.has_type("_KLDR_DATA_TABLE_ENTRY") {
                    "_KLDR_DATA_TABLE_ENTRY"
                } else {
                    "_LDR_DATA_TABLE_ENTRY"
                };
                assert_eq!(
                    table.offset_of(entry_type, "DllBase").unwrap(),
                    DLL_BASE_POINTER_INDEX * table.pointer_size(),
                    "{}",
                    path.display()
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 5, "three x64 and two x86 tables");
    }
}

#[cfg(test)]
mod x86_tests {
    use super::*;
    use crate::mmu::X86;
    use crate::target::{MemoryTarget, Target, PAGE_SIZE};
    use std::sync::Arc;

    const P_W: u32 = 0x3;

    /// A non-PAE space (directory at frame 3) mapping `pages` (VA, frame) through page
    /// table frame 0x20.
    fn x86_space(m: MemoryTarget, pages: &[(u64, u64)]) -> AddressSpace {
        for &(va, frame) in pages {
            let pde_at = 3 * PAGE_SIZE + (va >> 22) * 4;
            m.write_physical(pde_at, &(0x20000 | P_W).to_le_bytes());
            let pte_at = 0x20000 + ((va >> 12) & 0x3FF) * 4;
            m.write_physical(pte_at, &((frame * PAGE_SIZE) as u32 | P_W).to_le_bytes());
        }
        let target: Arc<dyn Target> = Arc::new(m);
        AddressSpace::new(target, &X86, 3 * PAGE_SIZE)
    }

    #[test]
    fn kdbg_pointers_and_identity_anchors_of_a_32_bit_kernel_are_narrowed() {
        let m = MemoryTarget::x64(3);
        let kdbg = 0x8250_0000u64;
        let mut block = vec![0u8; 0x40];
        block[0x10..0x14].copy_from_slice(&KDBG_OWNER_TAG.to_le_bytes());
        block[0x18..0x20].copy_from_slice(&0xFFFF_FFFF_8240_0000u64.to_le_bytes());
        m.write_physical(0x50 * PAGE_SIZE, &block);
        let space = x86_space(m, &[(kdbg, 0x50)]);
        assert_eq!(base_from_kdbg(&space, kdbg), Ok(0x8240_0000));
        // The identity carries the block's address sign-extended (as KD does).
        let mut identity = space.target().identity().clone();
        identity.kd_debugger_data_block = Some(0xFFFF_FFFF_8250_0000);
        let err = locate_kernel(&space, &identity).unwrap_err().to_string();
        assert!(
            err.contains("KdDebuggerDataBlock 0x82500000 names KernBase 0x82400000, but"),
            "{err}"
        );
    }

    #[test]
    fn kuser_shared_data_is_chosen_by_pointer_size() {
        assert_eq!(kuser_shared_data(4), KUSER_SHARED_DATA_X86);
        assert_eq!(kuser_shared_data(8), KUSER_SHARED_DATA_X64);
    }
}
