//! Discovery for header-less images (raw physical memory, ELF cores) of running Windows x64
//! systems: the kernel directory table base and the kernel image base, found before any symbol
//! table is known.
//!
//! Nothing here depends on a build number: every candidate is accepted by validation.
//!
//! - The DTB comes from the processor start block (`PROCESSOR_START_BLOCK`, the real-mode
//!   trampoline the boot processor leaves in the first megabyte to start the others), whose
//!   saved special registers hold CR3; else from a scan of physical memory for a PML4 whose
//!   kernel half maps itself (the page-table self-map). Either way the candidate must pass
//!   [`validate_pml4`].
//! - The kernel base comes from walking the kernel half of that PML4 and looking for an `MZ`
//!   image whose RSDS record names a kernel PDB (`ntkrnlmp.pdb` and its siblings): first at
//!   2 MiB-aligned mapped addresses (where KASLR puts nt on Windows 8 and later), then at every
//!   mapped 4 KiB page.
//!
//! Every scan is bounded by [`DiscoveryLimits`] and says how much it looked at.

use crate::kernel::MappedImage;
use crate::mmu::spec::bits;
use crate::mmu::{AddressSpace, X64};
use crate::pe::parse_image;
use crate::symbols::PdbIdentity;
use crate::target::{ReadError, Target, PAGE_SIZE};
use serde::Serialize;
use std::ops::ControlFlow;
use std::sync::Arc;
use thiserror::Error;

/// PDB names of the x64 (and PAE) Windows kernels.
pub const KERNEL_PDB_NAMES: [&str; 4] = [
    "ntkrnlmp.pdb",
    "ntoskrnl.pdb",
    "ntkrnlpa.pdb",
    "ntkrpamp.pdb",
];

/// Bits 12..51 of a paging entry or of CR3: the physical frame.
const FRAME_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const ENTRIES: usize = 512;
const KERNEL_HALF: usize = 256;
const TWO_MIB: u64 = 0x20_0000;
const ONE_GIB: u64 = 0x4000_0000;
/// Lowest canonical kernel-half address on x64.
const KERNEL_SPACE_START: u64 = 0xFFFF_8000_0000_0000;

/// `PROCESSOR_START_BLOCK` (WRK): a `jmp rel16` at 0, `CompletionFlag` (u32) at 4,
/// `LmTarget` (the 64-bit entry point, a kernel address) at 0x70, `ProcessorState` from 0x90.
const START_BLOCK_JMP: u8 = 0xE9;
const START_BLOCK_COMPLETION_FLAG: usize = 4;
const START_BLOCK_LM_TARGET: usize = 0x70;
const START_BLOCK_STATE: usize = 0x90;
/// End of the part of the block searched for CR3: `KPROCESSOR_STATE` begins with
/// `KSPECIAL_REGISTERS` (CR0, CR2, CR3, CR4, ...); 0x170 bytes past its start covers them on
/// every layout without naming the build's offset.
const START_BLOCK_STATE_END: usize = 0x200;

/// A PML4 must map at least this many kernel-half slots besides the self-map (Windows maps
/// system PTEs, shared user data, the HAL, pools and the kernel images there).
pub const MIN_OTHER_KERNEL_ENTRIES: usize = 3;

/// How far each discovery scan may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiscoveryLimits {
    /// Physical bytes searched for the processor start block (from 0).
    pub start_block_bytes: u64,
    /// Physical pages examined (from 0) in the scan for a self-mapped PML4.
    pub pml4_scan_pages: u64,
    /// Page-table pages read while walking the kernel half for the kernel image.
    pub table_pages: u64,
    /// Mapped 4 KiB pages whose first bytes are checked for `MZ` in the fallback pass.
    pub kernel_pages: u64,
}

impl Default for DiscoveryLimits {
    fn default() -> DiscoveryLimits {
        DiscoveryLimits {
            start_block_bytes: 0x10_0000,
            // 64 GiB of physical memory.
            pml4_scan_pages: 0x100_0000,
            table_pages: 0x4_0000,
            // 4 GiB of kernel virtual memory.
            kernel_pages: 0x10_0000,
        }
    }
}

/// Why discovery failed; each variant says what was scanned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DiscoveryError {
    #[error("no kernel DTB found: {start_block}; {scan}")]
    NoDtb { start_block: String, scan: String },
    #[error("DTB {dtb:#x} is not page-aligned, or its page cannot be read")]
    InvalidDtb { dtb: u64 },
    #[error("no kernel image found under DTB {dtb:#x}: {scanned}")]
    NoKernel { dtb: u64, scanned: String },
}

/// How the DTB was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DtbMethod {
    /// CR3 saved in the processor start block at physical `block`, in the 8-byte slot at
    /// `slot` bytes from its start.
    ProcessorStartBlock { block: u64, slot: u16 },
    /// A scan of physical memory for a self-mapped PML4, which looked at `pages_scanned` pages.
    Pml4Scan { pages_scanned: u64 },
}

/// The kernel's directory table base and how it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DtbFound {
    pub dtb: u64,
    /// PML4 index of the page-table self-map (0x1ED before Windows 10 1607, random after).
    pub self_map_index: u16,
    pub method: DtbMethod,
    /// One line for `kds info`.
    pub detail: String,
}

/// Which pass of the kernel search found the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelMethod {
    /// 2 MiB-aligned mapped kernel addresses.
    Aligned2MiB,
    /// Every mapped 4 KiB kernel page.
    Pages4KiB,
}

/// The kernel image found in kernel space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelFound {
    pub base: u64,
    /// Name, GUID and age from the image's RSDS record.
    pub pdb: PdbIdentity,
    pub method: KernelMethod,
    /// Mapped addresses checked for `MZ` before the kernel was found (both passes).
    pub candidates: u64,
    /// `MZ` images parsed that were not the kernel.
    pub other_images: u64,
    /// One line for `kds info`.
    pub detail: String,
}

/// What discovery found for a header-less image, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub dtb: DtbFound,
    pub kernel: KernelFound,
}

impl Discovery {
    /// The "how" lines, DTB first.
    #[must_use]
    pub fn how(&self) -> Vec<String> {
        vec![self.dtb.detail.clone(), self.kernel.detail.clone()]
    }
}

/// Find the DTB, then the kernel under it.
pub fn discover(
    target: &Arc<dyn Target>,
    limits: &DiscoveryLimits,
) -> Result<Discovery, DiscoveryError> {
    let dtb = find_dtb(target.as_ref(), limits)?;
    let kernel = find_kernel(target, dtb.dtb, limits)?;
    Ok(Discovery { dtb, kernel })
}

/// Find the kernel DTB: from the processor start block, else by a PML4 scan.
pub fn find_dtb(target: &dyn Target, limits: &DiscoveryLimits) -> Result<DtbFound, DiscoveryError> {
    let start_block = match from_start_block(target, limits) {
        Ok(found) => return Ok(found),
        Err(why) => why,
    };
    match scan_for_pml4(target, limits) {
        Ok(found) => Ok(found),
        Err(scan) => Err(DiscoveryError::NoDtb { start_block, scan }),
    }
}

/// Whether the page at `dtb` is a PML4 that maps itself: returns the self-map index.
///
/// The self-map entry is in the kernel half (index 256..511), present, writable, supervisor
/// only, not a large page, and names this very frame. Besides it, the kernel half must hold at
/// least [`MIN_OTHER_KERNEL_ENTRIES`] present entries, none with the (reserved) large-page bit,
/// and none naming a frame the target says is outside physical memory.
#[must_use]
pub fn validate_pml4(target: &dyn Target, dtb: u64) -> Option<u16> {
    if dtb & !FRAME_MASK != 0 || dtb == 0 {
        return None;
    }
    let mut page = [0u8; PAGE_SIZE as usize];
    target.read_physical(dtb, &mut page).ok()?;
    let index = self_map_in(&page, dtb)?;
    for i in KERNEL_HALF..ENTRIES {
        let e = entry(&page, i);
        if i == usize::from(index) || e & bits::PRESENT == 0 {
            continue;
        }
        let mut probe = [0u8; 8];
        if let Err(ReadError::OutOfRange { .. }) = target.read_physical(e & FRAME_MASK, &mut probe)
        {
            return None;
        }
    }
    Some(index)
}

fn entry(page: &[u8], index: usize) -> u64 {
    page.get(index * 8..index * 8 + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The checks of [`validate_pml4`] that need only the page itself.
fn self_map_in(page: &[u8], dtb: u64) -> Option<u16> {
    let mut self_map = None;
    let mut others = 0usize;
    for i in KERNEL_HALF..ENTRIES {
        let e = entry(page, i);
        if e & bits::PRESENT == 0 {
            continue;
        }
        if e & bits::LARGE != 0 {
            return None;
        }
        let is_self = e & FRAME_MASK == dtb && e & bits::WRITE != 0 && e & bits::USER == 0;
        if is_self && self_map.is_none() {
            self_map = Some(i as u16);
        } else {
            others += 1;
        }
    }
    (others >= MIN_OTHER_KERNEL_ENTRIES).then_some(self_map?)
}

/// Candidate CR3 values of one start block, in the order tried: page-aligned slot values
/// first, then values with PCID bits (the low 12) set, masked to their frame. Bit 63 (no-flush)
/// is ignored; values with bits 52..62 set are no CR3.
fn cr3_candidates(block: &[u8]) -> Vec<(u16, u64)> {
    let slots: Vec<(u16, u64)> = (START_BLOCK_STATE..START_BLOCK_STATE_END)
        .step_by(8)
        .map(|at| (at as u16, entry_at(block, at)))
        .map(|(at, v)| (at, v & !(1 << 63)))
        .filter(|&(_, v)| v & !FRAME_MASK & !0xFFF == 0 && v & FRAME_MASK != 0)
        .collect();
    let aligned = slots.iter().filter(|(_, v)| v & 0xFFF == 0).copied();
    let pcid = slots
        .iter()
        .filter(|(_, v)| v & 0xFFF != 0)
        .map(|&(at, v)| (at, v & FRAME_MASK));
    aligned.chain(pcid).collect()
}

fn entry_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Whether `bytes` (the start of a page) look like a processor start block.
fn is_start_block(bytes: &[u8]) -> bool {
    let flag = bytes
        .get(START_BLOCK_COMPLETION_FLAG..START_BLOCK_COMPLETION_FLAG + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes);
    let lm_target = entry_at(bytes, START_BLOCK_LM_TARGET);
    bytes.first() == Some(&START_BLOCK_JMP)
        && matches!(flag, Some(0 | 1))
        && lm_target >= KERNEL_SPACE_START
}

fn from_start_block(target: &dyn Target, limits: &DiscoveryLimits) -> Result<DtbFound, String> {
    let pages = limits.start_block_bytes / PAGE_SIZE;
    let mut unreadable = 0u64;
    let mut blocks = Vec::new();
    for page in 0..pages {
        let at = page * PAGE_SIZE;
        let mut block = [0u8; START_BLOCK_STATE_END];
        match target.read_physical(at, &mut block) {
            Ok(()) => {}
            Err(ReadError::OutOfRange { .. }) => break,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        }
        if !is_start_block(&block) {
            continue;
        }
        blocks.push(at);
        for (slot, cr3) in cr3_candidates(&block) {
            if let Some(index) = validate_pml4(target, cr3) {
                return Ok(DtbFound {
                    dtb: cr3,
                    self_map_index: index,
                    method: DtbMethod::ProcessorStartBlock { block: at, slot },
                    detail: format!(
                        "DTB {cr3:#x} from the processor start block at {at:#x} (slot {slot:#x}), self-map index {index:#x}"
                    ),
                });
            }
        }
    }
    let blocks = if blocks.is_empty() {
        "none".to_string()
    } else {
        blocks
            .iter()
            .map(|b| format!("{b:#x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "processor start block: {pages} pages below {:#x} searched ({unreadable} unreadable), blocks found: {blocks}, none holding a valid PML4",
        limits.start_block_bytes
    ))
}

fn scan_for_pml4(target: &dyn Target, limits: &DiscoveryLimits) -> Result<DtbFound, String> {
    let captured = target.captured_pages();
    let mut readable = 0u64;
    let mut scanned = 0u64;
    let mut page = [0u8; PAGE_SIZE as usize];
    let mut stop = "the page limit";
    for pfn in 0..limits.pml4_scan_pages {
        if captured.is_some_and(|c| readable >= c) {
            stop = "every captured page";
            break;
        }
        let at = pfn * PAGE_SIZE;
        match target.read_physical(at, &mut page) {
            Ok(()) => readable += 1,
            Err(ReadError::OutOfRange { .. }) => {
                stop = "the end of physical memory";
                break;
            }
            Err(_) => {
                scanned += 1;
                continue;
            }
        }
        scanned += 1;
        if self_map_in(&page, at).is_none() {
            continue;
        }
        if let Some(index) = validate_pml4(target, at) {
            return Ok(DtbFound {
                dtb: at,
                self_map_index: index,
                method: DtbMethod::Pml4Scan {
                    pages_scanned: scanned,
                },
                detail: format!(
                    "DTB {at:#x} from a scan for a self-mapped PML4 ({scanned} pages scanned), self-map index {index:#x}"
                ),
            });
        }
    }
    Err(format!(
        "PML4 scan: {scanned} physical pages from 0 ({readable} readable) up to {stop}, no self-mapped PML4"
    ))
}

/// Counts and budget of a walk over the kernel half.
struct Walk<'a> {
    target: &'a dyn Target,
    tables_read: u64,
    table_limit: u64,
    /// A table page was skipped because the budget was spent.
    table_budget_hit: bool,
    /// Physical addresses of the table pages read, in walk order.
    tables: Vec<u64>,
}

impl Walk<'_> {
    fn table(&mut self, address: u64) -> Option<Vec<u64>> {
        if self.tables_read >= self.table_limit {
            self.table_budget_hit = true;
            return None;
        }
        self.tables_read += 1;
        let mut page = [0u8; PAGE_SIZE as usize];
        self.target.read_physical(address, &mut page).ok()?;
        self.tables.push(address);
        Some((0..ENTRIES).map(|i| entry(&page, i)).collect())
    }

    fn first_entry(&self, table: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.target.read_physical(table, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Visit mapped kernel-half pages (`va`, `physical`) in address order: with `step` 2 MiB,
    /// each 2 MiB-aligned mapped address (reading only the first entry of page tables); with
    /// `step` 4 KiB, every mapped page. Slots naming the PML4 itself (the self-map) are
    /// skipped: they would enumerate the page tables.
    fn visit<T>(
        &mut self,
        pml4: &[u64],
        dtb: u64,
        step: u64,
        f: &mut dyn FnMut(u64, u64) -> ControlFlow<T>,
    ) -> Option<T> {
        let present = |e: &u64| e & bits::PRESENT != 0;
        for (i, &e4) in pml4.iter().enumerate().skip(KERNEL_HALF) {
            if !present(&e4) || e4 & FRAME_MASK == dtb {
                continue;
            }
            let va4 = X64.canonical((i as u64) << 39);
            let Some(pdpt) = self.table(e4 & FRAME_MASK) else {
                continue;
            };
            for (j, &e3) in pdpt.iter().enumerate() {
                if !present(&e3) {
                    continue;
                }
                let va3 = va4 | ((j as u64) << 30);
                if e3 & bits::LARGE != 0 {
                    let frame = e3 & FRAME_MASK & !(ONE_GIB - 1);
                    for off in (0..ONE_GIB).step_by(step as usize) {
                        if let ControlFlow::Break(t) = f(va3 + off, frame + off) {
                            return Some(t);
                        }
                    }
                    continue;
                }
                let Some(pd) = self.table(e3 & FRAME_MASK) else {
                    continue;
                };
                for (k, &e2) in pd.iter().enumerate() {
                    if !present(&e2) {
                        continue;
                    }
                    let va2 = va3 | ((k as u64) << 21);
                    if e2 & bits::LARGE != 0 {
                        let frame = e2 & FRAME_MASK & !(TWO_MIB - 1);
                        for off in (0..TWO_MIB).step_by(step as usize) {
                            if let ControlFlow::Break(t) = f(va2 + off, frame + off) {
                                return Some(t);
                            }
                        }
                        continue;
                    }
                    let table = e2 & FRAME_MASK;
                    if step >= TWO_MIB {
                        let Some(e1) = self.first_entry(table) else {
                            continue;
                        };
                        if present(&e1) {
                            if let ControlFlow::Break(t) = f(va2, e1 & FRAME_MASK) {
                                return Some(t);
                            }
                        }
                        continue;
                    }
                    let Some(pt) = self.table(table) else {
                        continue;
                    };
                    for (l, &e1) in pt.iter().enumerate() {
                        if present(&e1) {
                            if let ControlFlow::Break(t) =
                                f(va2 | ((l as u64) << 12), e1 & FRAME_MASK)
                            {
                                return Some(t);
                            }
                        }
                    }
                }
            }
        }
        None
    }
}

/// The kernel's part of physical memory: the PML4 at `dtb`, the page tables of its kernel half
/// and every frame they map there (large pages expanded), ascending; bounded by
/// `limits.table_pages`.
#[must_use]
pub fn kernel_half_frames(target: &dyn Target, dtb: u64, limits: &DiscoveryLimits) -> Vec<u64> {
    let mut page = [0u8; PAGE_SIZE as usize];
    if target.read_physical(dtb & FRAME_MASK, &mut page).is_err() {
        return Vec::new();
    }
    let pml4: Vec<u64> = (0..ENTRIES).map(|i| entry(&page, i)).collect();
    let mut walk = Walk {
        target,
        tables_read: 0,
        table_limit: limits.table_pages,
        table_budget_hit: false,
        tables: Vec::new(),
    };
    let mut frames = std::collections::BTreeSet::from([dtb / PAGE_SIZE]);
    walk.visit::<()>(&pml4, dtb & FRAME_MASK, PAGE_SIZE, &mut |_, physical| {
        frames.insert(physical / PAGE_SIZE);
        ControlFlow::Continue(())
    });
    frames.extend(walk.tables.iter().map(|t| t / PAGE_SIZE));
    frames.into_iter().collect()
}

/// Find the kernel image in the kernel half of `dtb`'s address space.
pub fn find_kernel(
    target: &Arc<dyn Target>,
    dtb: u64,
    limits: &DiscoveryLimits,
) -> Result<KernelFound, DiscoveryError> {
    let mut page = [0u8; PAGE_SIZE as usize];
    if dtb & !FRAME_MASK != 0 || target.read_physical(dtb, &mut page).is_err() {
        return Err(DiscoveryError::InvalidDtb { dtb });
    }
    let pml4: Vec<u64> = (0..ENTRIES).map(|i| entry(&page, i)).collect();
    let space = AddressSpace::new(Arc::clone(target), &X64, dtb);
    let mut walk = Walk {
        target: target.as_ref(),
        tables_read: 0,
        table_limit: limits.table_pages,
        table_budget_hit: false,
        tables: Vec::new(),
    };
    let mut candidates = 0u64;
    let mut others = 0u64;
    let check = |va: u64, physical: u64, candidates: &mut u64, others: &mut u64| {
        *candidates += 1;
        let mut mz = [0u8; 2];
        if target.read_physical(physical, &mut mz).is_err() || mz != *b"MZ" {
            return None;
        }
        let image = parse_image(&MappedImage {
            space: &space,
            base: va,
        })
        .ok()?;
        let pdb = image.codeview?.pdb;
        if KERNEL_PDB_NAMES
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&pdb.name))
        {
            Some(pdb)
        } else {
            *others += 1;
            None
        }
    };

    let found = walk.visit(&pml4, dtb, TWO_MIB, &mut |va, phys| match check(
        va,
        phys,
        &mut candidates,
        &mut others,
    ) {
        Some(pdb) => ControlFlow::Break((va, pdb)),
        None => ControlFlow::Continue(()),
    });
    let aligned = candidates;
    if let Some((base, pdb)) = found {
        let detail = format!(
            "kernel base {base:#x}: MZ + RSDS {} {}-{:X} found scanning 2 MiB-aligned kernel mappings ({aligned} candidates)",
            pdb.name, pdb.guid, pdb.age
        );
        return Ok(KernelFound {
            base,
            pdb,
            method: KernelMethod::Aligned2MiB,
            candidates,
            other_images: others,
            detail,
        });
    }

    let mut pages = 0u64;
    let mut page_budget_hit = false;
    let found = walk.visit(&pml4, dtb, PAGE_SIZE, &mut |va, phys| {
        if va % TWO_MIB == 0 {
            return ControlFlow::Continue(());
        }
        if pages >= limits.kernel_pages {
            page_budget_hit = true;
            return ControlFlow::Break(None);
        }
        pages += 1;
        match check(va, phys, &mut candidates, &mut others) {
            Some(pdb) => ControlFlow::Break(Some((va, pdb))),
            None => ControlFlow::Continue(()),
        }
    });
    if let Some(Some((base, pdb))) = found {
        let detail = format!(
            "kernel base {base:#x}: MZ + RSDS {} {}-{:X} found scanning 4 KiB kernel pages ({aligned} 2 MiB-aligned candidates, then {pages} pages)",
            pdb.name, pdb.guid, pdb.age
        );
        return Ok(KernelFound {
            base,
            pdb,
            method: KernelMethod::Pages4KiB,
            candidates,
            other_images: others,
            detail,
        });
    }
    let mut scanned = format!(
        "{aligned} 2 MiB-aligned kernel mappings and {pages} 4 KiB pages checked for MZ, {others} other images, {} page-table pages read",
        walk.tables_read
    );
    if page_budget_hit {
        scanned.push_str(&format!(
            "; stopped at the limit of {} pages",
            limits.kernel_pages
        ));
    }
    if walk.table_budget_hit {
        scanned.push_str(&format!(
            "; page tables past the limit of {} were not read",
            limits.table_pages
        ));
    }
    Err(DiscoveryError::NoKernel { dtb, scanned })
}

#[cfg(test)]
mod tests;
