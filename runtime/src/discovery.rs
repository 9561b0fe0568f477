//! Discovery for header-less images (raw physical memory, ELF cores) of running Windows x64
//! and 32-bit x86 (PAE or not) systems: the kernel directory table base, the paging mode and
//! the kernel image base, found before any symbol table is known.
//!
//! Nothing here depends on a build number: every candidate is accepted by validation.
//!
//! - The DTB comes from the processor start block (`PROCESSOR_START_BLOCK`, the real-mode
//!   trampoline the boot processor leaves in the first megabyte to start the others), whose
//!   saved special registers hold CR3; else from a scan of physical memory for a PML4 whose
//!   kernel half maps itself (the page-table self-map). Either way the candidate must pass
//!   [`validate_pml4`].
//! - When no PML4 is found, the same physical pages are scanned for a 32-bit PAE PDPT whose
//!   page directory for 0xC0000000 maps the four page directories (the self-map at
//!   0xC0000000 / 0xC0600000, [`validate_pae_pdpt`]), then for a non-PAE page directory whose
//!   entry 0x300 names itself ([`validate_x86_pd`]). The paging mode found is
//!   [`DtbFound::arch`].
//! - The kernel base comes from walking the kernel half of that address space (x64: the upper
//!   PML4 half; x86: from 0x80000000) with the mode's [`PagingSpec`] and looking for an `MZ`
//!   image whose RSDS record names a kernel PDB (`ntkrnlmp.pdb` and its siblings): first at
//!   addresses aligned to the span of one page table (2 MiB, 4 MiB without PAE: where KASLR
//!   puts nt on Windows 8 and later), then at every mapped 4 KiB page.
//!
//! Every scan is bounded by [`DiscoveryLimits`] and says how much it looked at.

use crate::kernel::MappedImage;
use crate::mmu::spec::bits;
use crate::mmu::{AddressSpace, PagingSpec, X64, X86, X86_PAE};
use crate::pe::parse_image;
use crate::symbols::PdbIdentity;
use crate::target::{Arch, ReadError, Target, PAGE_SIZE};
use serde::Serialize;
use std::ops::ControlFlow;
use std::sync::Arc;
use thiserror::Error;

/// PDB names of the x64 and x86 (PAE and not) Windows kernels.
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

/// x86 PAE: bits a PDPTE may have besides its frame (present, PWT, PCD and the three
/// software bits 9..11); the others are reserved and fault when loaded.
const PAE_PDPTE_ALLOWED: u64 = 0x0000_000F_FFFF_FE19;
/// x86 PAE: the page directory for 0xC0000000 (PDPT entry 3) is the self-map: its entries
/// 0..3 name the four page directories (page tables at 0xC0000000, PDEs at 0xC0600000).
const PAE_SELF_MAP_PDPTE: u16 = 3;
/// x86 without PAE: the page directory entry that names the directory itself (0xC0000000).
const X86_SELF_MAP_PDE: u16 = 0x300;

/// How far each discovery scan may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiscoveryLimits {
    /// Physical bytes searched for the processor start block (from 0).
    pub start_block_bytes: u64,
    /// Physical pages examined (from 0) in the scan for a self-mapped PML4, and again in
    /// each of the x86 scans (PAE PDPT, then page directory) that follow when it fails.
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
    #[error("DTB {dtb:#x} is not aligned for its paging mode, or its table cannot be read")]
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
    /// A scan for a self-mapped x86 PAE PDPT (32-byte aligned), after the PML4 scan.
    PaePdptScan { pages_scanned: u64 },
    /// A scan for a self-mapped x86 page directory without PAE, after the PAE scan.
    X86PdScan { pages_scanned: u64 },
}

/// The kernel's directory table base and how it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DtbFound {
    /// The root table: a PML4 (x64), a 32-byte-aligned PDPT (PAE) or a page directory (x86).
    pub dtb: u64,
    /// The paging mode found: [`Arch::X64`], or [`Arch::X86`] with `pae`. A snapshot target
    /// sets its identity's `arch` from it (the session then picks [`DtbFound::spec`]).
    pub arch: Arch,
    /// Where the page-table self-map is, in root-level terms: the PML4 index on x64 (0x1ED
    /// before Windows 10 1607, random after); on PAE the PDPT index (3) of the directory whose
    /// entries 0..3 name the four directories; without PAE the directory index (0x300).
    pub self_map_index: u16,
    pub method: DtbMethod,
    /// One line for `kds info`.
    pub detail: String,
}

impl DtbFound {
    /// The paging spec of [`DtbFound::arch`].
    #[must_use]
    pub fn spec(&self) -> &'static PagingSpec {
        spec_of(self.arch)
    }
}

/// The paging spec of an architecture.
#[must_use]
pub fn spec_of(arch: Arch) -> &'static PagingSpec {
    match arch {
        Arch::X64 => &X64,
        Arch::X86 { pae: true } => &X86_PAE,
        Arch::X86 { pae: false } => &X86,
    }
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
    /// The paging mode found (what a snapshot target's identity should say).
    #[must_use]
    pub fn arch(&self) -> Arch {
        self.dtb.arch
    }

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
    // The root table of one paging mode can pass for another's: a page directory without PAE
    // read as 8-byte entries has its self-map (entry 0x300) at PML4 index 0x180, in the
    // kernel half, as a self-mapped PML4 has. A DTB counts only when its address space holds
    // the kernel; otherwise the next mode's search is tried.
    let mut reasons = Vec::new();
    let mut misses: Vec<(DtbFound, String)> = Vec::new();
    for find in DTB_FINDERS {
        let dtb = match find(target.as_ref(), limits) {
            Ok(dtb) => dtb,
            Err(why) => {
                reasons.push(why);
                continue;
            }
        };
        match find_kernel_with(target, dtb.spec(), dtb.dtb, limits) {
            Ok(kernel) => {
                let mut dtb = dtb;
                for (missed, _) in &misses {
                    dtb.detail.push_str(&format!(
                        "; the {} root at {:#x} found first held no kernel",
                        arch_name(missed.arch),
                        missed.dtb
                    ));
                }
                return Ok(Discovery { dtb, kernel });
            }
            Err(DiscoveryError::NoKernel { scanned, .. }) => misses.push((dtb, scanned)),
            Err(other) => misses.push((dtb, other.to_string())),
        }
    }
    match misses.as_slice() {
        [] => Err(no_dtb(reasons)),
        [(dtb, scanned)] => Err(DiscoveryError::NoKernel {
            dtb: dtb.dtb,
            scanned: scanned.clone(),
        }),
        [(first, _), ..] => Err(DiscoveryError::NoKernel {
            dtb: first.dtb,
            scanned: misses
                .iter()
                .map(|(dtb, scanned)| {
                    format!("as {} at {:#x}: {scanned}", arch_name(dtb.arch), dtb.dtb)
                })
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// The DTB searches, in the order tried: the processor start block, a PML4 scan, a scan for
/// an x86 PAE PDPT, a scan for an x86 page directory (each scan bounded by
/// `limits.pml4_scan_pages`).
type DtbFinder = fn(&dyn Target, &DiscoveryLimits) -> Result<DtbFound, String>;
const DTB_FINDERS: [DtbFinder; 4] = [
    from_start_block,
    scan_for_pml4,
    scan_for_pae_pdpt,
    scan_for_x86_pd,
];

fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X64 => "x64 PML4",
        Arch::X86 { pae: true } => "x86 PAE PDPT",
        Arch::X86 { pae: false } => "x86 page directory",
    }
}

fn no_dtb(mut reasons: Vec<String>) -> DiscoveryError {
    let start_block = if reasons.is_empty() {
        String::new()
    } else {
        reasons.remove(0)
    };
    DiscoveryError::NoDtb {
        start_block,
        scan: reasons.join("; "),
    }
}

/// Find the kernel DTB: the first of [`DTB_FINDERS`] that finds one.
pub fn find_dtb(target: &dyn Target, limits: &DiscoveryLimits) -> Result<DtbFound, DiscoveryError> {
    let mut reasons = Vec::new();
    for find in DTB_FINDERS {
        match find(target, limits) {
            Ok(found) => return Ok(found),
            Err(why) => reasons.push(why),
        }
    }
    Err(no_dtb(reasons))
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

/// Entry `index` of a table of `size`-byte entries.
fn entry_sized(table: &[u8], index: usize, size: u64) -> u64 {
    if size == 4 {
        table
            .get(index * 4..index * 4 + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
    } else {
        entry(table, index)
    }
}

/// The 32-byte PDPT at `pdpt` of an x86 PAE machine, if it is self-mapped as Windows maps
/// it: four present entries with only the bits a PDPTE may hold, naming four distinct
/// frames inside physical memory, and the directory named by entry 3 (0xC0000000) holding in
/// its entries 0..3 present, writable, supervisor, small-page entries naming those four
/// directories (PTE_BASE 0xC0000000, PDE_BASE 0xC0600000). Returns the PDPT index of the
/// self-mapping directory (3).
#[must_use]
pub fn validate_pae_pdpt(target: &dyn Target, pdpt: u64) -> Option<u16> {
    if pdpt & 0x1F != 0 || pdpt >> 32 != 0 {
        return None;
    }
    let mut raw = [0u8; 32];
    target.read_physical(pdpt, &mut raw).ok()?;
    let frames = pae_pdpt_frames(&raw)?;
    let mut dir = [0u8; 32];
    let self_map = frames[usize::from(PAE_SELF_MAP_PDPTE)];
    target.read_physical(self_map, &mut dir).ok()?;
    for (k, &frame) in frames.iter().enumerate() {
        let e = entry(&dir, k);
        let ok = e & bits::PRESENT != 0
            && e & bits::WRITE != 0
            && e & (bits::USER | bits::LARGE) == 0
            && e & X86_PAE.frame_mask == frame;
        if !ok {
            return None;
        }
    }
    Some(PAE_SELF_MAP_PDPTE)
}

/// The four directory frames of a candidate PDPT, when its entries have the PDPTE form.
fn pae_pdpt_frames(raw: &[u8]) -> Option<[u64; 4]> {
    let mut frames = [0u64; 4];
    for k in 0..frames.len() {
        let e = entry(raw, k);
        if e & bits::PRESENT == 0 || e & !PAE_PDPTE_ALLOWED != 0 {
            return None;
        }
        let frame = e & X86_PAE.frame_mask;
        if frame == 0 || frames[..k].contains(&frame) {
            return None;
        }
        frames[k] = frame;
    }
    Some(frames)
}

/// Whether the page at `pd` is an x86 page directory without PAE that maps itself as Windows
/// does: entry 0x300 present, writable, supervisor, no large page and naming this frame; at
/// least [`MIN_OTHER_KERNEL_ENTRIES`] other present kernel-half entries (0x200..0x3FF),
/// none naming a frame outside physical memory. Returns the self-map index (0x300).
#[must_use]
pub fn validate_x86_pd(target: &dyn Target, pd: u64) -> Option<u16> {
    if pd & 0xFFF != 0 || pd >> 32 != 0 {
        return None;
    }
    let mut page = [0u8; PAGE_SIZE as usize];
    target.read_physical(pd, &mut page).ok()?;
    x86_self_map_in(&page, pd)?;
    for i in 0x200..0x400 {
        let e = entry_sized(&page, i, 4);
        if i == usize::from(X86_SELF_MAP_PDE) || e & bits::PRESENT == 0 {
            continue;
        }
        let mut probe = [0u8; 4];
        if let Err(ReadError::OutOfRange { .. }) =
            target.read_physical(e & X86.frame_mask, &mut probe)
        {
            return None;
        }
    }
    Some(X86_SELF_MAP_PDE)
}

/// The checks of [`validate_x86_pd`] that need only the page itself.
fn x86_self_map_in(page: &[u8], pd: u64) -> Option<()> {
    let e = entry_sized(page, usize::from(X86_SELF_MAP_PDE), 4);
    let is_self = e & bits::PRESENT != 0
        && e & bits::WRITE != 0
        && e & (bits::USER | bits::LARGE) == 0
        && e & X86.frame_mask == pd;
    if !is_self {
        return None;
    }
    let others = (0x200..0x400)
        .filter(|&i| i != usize::from(X86_SELF_MAP_PDE))
        .filter(|&i| entry_sized(page, i, 4) & bits::PRESENT != 0)
        .count();
    (others >= MIN_OTHER_KERNEL_ENTRIES).then_some(())
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
                    arch: Arch::X64,
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
    let found = scan_pages(target, limits, |page, at| {
        self_map_in(page, at)?;
        validate_pml4(target, at).map(|index| (at, index))
    });
    match found {
        Ok((dtb, index, scanned)) => Ok(DtbFound {
            dtb,
            arch: Arch::X64,
            self_map_index: index,
            method: DtbMethod::Pml4Scan {
                pages_scanned: scanned,
            },
            detail: format!(
                "DTB {dtb:#x} from a scan for a self-mapped PML4 ({scanned} pages scanned), self-map index {index:#x}"
            ),
        }),
        Err(what) => Err(format!("PML4 scan: {what}, no self-mapped PML4")),
    }
}

/// Scan physical pages from 0 (bounded by `limits.pml4_scan_pages` and the captured pages)
/// with `probe`, which returns the root found in a page and its self-map index.
fn scan_pages(
    target: &dyn Target,
    limits: &DiscoveryLimits,
    mut probe: impl FnMut(&[u8], u64) -> Option<(u64, u16)>,
) -> Result<(u64, u16, u64), String> {
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
        if let Some((root, index)) = probe(&page, at) {
            return Ok((root, index, scanned));
        }
    }
    Err(format!(
        "{scanned} physical pages from 0 ({readable} readable) up to {stop}"
    ))
}

fn scan_for_pae_pdpt(target: &dyn Target, limits: &DiscoveryLimits) -> Result<DtbFound, String> {
    let found = scan_pages(target, limits, |page, at| {
        // Physical addresses of a PAE CR3 are below 4 GiB.
        if at >> 32 != 0 {
            return None;
        }
        (0..PAGE_SIZE as usize).step_by(32).find_map(|off| {
            pae_pdpt_frames(&page[off..off + 32])?;
            let pdpt = at + off as u64;
            validate_pae_pdpt(target, pdpt).map(|index| (pdpt, index))
        })
    });
    match found {
        Ok((dtb, index, scanned)) => Ok(DtbFound {
            dtb,
            arch: Arch::X86 { pae: true },
            self_map_index: index,
            method: DtbMethod::PaePdptScan {
                pages_scanned: scanned,
            },
            detail: format!(
                "DTB {dtb:#x} from a scan for a self-mapped x86 PAE PDPT ({scanned} pages scanned), page tables at 0xc0000000"
            ),
        }),
        Err(what) => Err(format!("PAE PDPT scan: {what}, no self-mapped PDPT")),
    }
}

fn scan_for_x86_pd(target: &dyn Target, limits: &DiscoveryLimits) -> Result<DtbFound, String> {
    let found = scan_pages(target, limits, |page, at| {
        if at >> 32 != 0 {
            return None;
        }
        x86_self_map_in(page, at)?;
        validate_x86_pd(target, at).map(|index| (at, index))
    });
    match found {
        Ok((dtb, index, scanned)) => Ok(DtbFound {
            dtb,
            arch: Arch::X86 { pae: false },
            self_map_index: index,
            method: DtbMethod::X86PdScan {
                pages_scanned: scanned,
            },
            detail: format!(
                "DTB {dtb:#x} from a scan for a self-mapped x86 page directory ({scanned} pages scanned), self-map index {index:#x}"
            ),
        }),
        Err(what) => Err(format!(
            "x86 page directory scan: {what}, no self-mapped page directory"
        )),
    }
}

/// Counts and budget of a walk over the kernel half.
struct Walk<'a> {
    target: &'a dyn Target,
    spec: &'static PagingSpec,
    tables_read: u64,
    table_limit: u64,
    /// A table page was skipped because the budget was spent.
    table_budget_hit: bool,
    /// Physical addresses of the table pages read, in walk order.
    tables: Vec<u64>,
    /// Frames of the tables the page-table self-map names: entries pointing at them are
    /// skipped, they would enumerate the page tables (x64 and non-PAE x86: the root; PAE:
    /// the four page directories).
    self_tables: Vec<u64>,
}

impl<'a> Walk<'a> {
    fn new(
        target: &'a dyn Target,
        spec: &'static PagingSpec,
        root: &[u64],
        root_frame: u64,
        limits: &DiscoveryLimits,
    ) -> Walk<'a> {
        let mut self_tables = vec![root_frame];
        // A PAE PDPT is no page: the self-map names the directories below it.
        if spec.levels.first().is_some_and(|l| !l.permissions) {
            self_tables.extend(
                root.iter()
                    .filter(|e| *e & bits::PRESENT != 0)
                    .map(|e| e & spec.frame_mask),
            );
        }
        Walk {
            target,
            spec,
            tables_read: 0,
            table_limit: limits.table_pages,
            table_budget_hit: false,
            tables: Vec::new(),
            self_tables,
        }
    }

    fn entries(&self, level: usize) -> usize {
        1 << self.spec.levels[level].index_bits
    }

    fn table(&mut self, address: u64, level: usize) -> Option<Vec<u64>> {
        if self.tables_read >= self.table_limit {
            self.table_budget_hit = true;
            return None;
        }
        self.tables_read += 1;
        let mut page = [0u8; PAGE_SIZE as usize];
        self.target.read_physical(address, &mut page).ok()?;
        self.tables.push(address);
        let size = self.spec.entry_size;
        Some(
            (0..self.entries(level))
                .map(|i| entry_sized(&page, i, size))
                .collect(),
        )
    }

    fn first_entry(&self, table: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        let n = self.spec.entry_size as usize;
        self.target.read_physical(table, &mut b[..n]).ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Visit mapped kernel-half pages (`va`, `physical`) in address order: with `step` the
    /// span of one page table (2 MiB; 4 MiB without PAE), each such aligned mapped address
    /// (reading only the first entry of page tables); with `step` 4 KiB, every mapped page.
    /// Entries naming the tables of the self-map are skipped: they would enumerate the page
    /// tables.
    fn visit<T>(
        &mut self,
        root: &[u64],
        step: u64,
        f: &mut dyn FnMut(u64, u64) -> ControlFlow<T>,
    ) -> Option<T> {
        let spec = self.spec;
        let top = spec.levels[0];
        let kernel_bit = 1u64 << (spec.va_bits - 1);
        for (i, &e) in root.iter().enumerate() {
            let va = (i as u64) << top.shift;
            if va & kernel_bit == 0 {
                continue;
            }
            if let Some(t) = self.visit_entry(0, spec.canonical(va), e, step, f) {
                return Some(t);
            }
        }
        None
    }

    /// One entry of a table at `level` that maps `va`.
    fn visit_entry<T>(
        &mut self,
        level: usize,
        va: u64,
        e: u64,
        step: u64,
        f: &mut dyn FnMut(u64, u64) -> ControlFlow<T>,
    ) -> Option<T> {
        let spec = self.spec;
        let present = |e: u64| e & bits::PRESENT != 0;
        if !present(e) {
            return None;
        }
        let frame = e & spec.frame_mask;
        let l = spec.levels[level];
        let last = spec.levels.len() - 1;
        if level == last {
            return f(va, frame).break_value();
        }
        // The root's own entries name the PAE directories: only a root naming itself is
        // the self-map there.
        let self_map = if level == 0 {
            self.self_tables.first() == Some(&frame)
        } else {
            self.self_tables.contains(&frame)
        };
        if self_map {
            return None;
        }
        if l.large_pages && e & bits::LARGE != 0 {
            let size = 1u64 << l.shift;
            let frame = frame & !(size - 1);
            for off in (0..size).step_by(step as usize) {
                if let ControlFlow::Break(t) = f(va + off, frame + off) {
                    return Some(t);
                }
            }
            return None;
        }
        let next = level + 1;
        if next == last && step > PAGE_SIZE {
            let e1 = self.first_entry(frame)?;
            if present(e1) {
                return f(va, e1 & spec.frame_mask).break_value();
            }
            return None;
        }
        let table = self.table(frame, next)?;
        let shift = spec.levels[next].shift;
        for (j, &child) in table.iter().enumerate() {
            if let Some(t) = self.visit_entry(next, va | ((j as u64) << shift), child, step, f) {
                return Some(t);
            }
        }
        None
    }
}

/// The root table of `dtb` in mode `spec` as entries, or `None` when it cannot be read or
/// `dtb` is not aligned for the mode.
fn root_table(target: &dyn Target, spec: &PagingSpec, dtb: u64) -> Option<Vec<u64>> {
    if dtb & !spec.root_mask != 0 {
        return None;
    }
    let entries = 1usize << spec.levels[0].index_bits;
    let mut raw = vec![0u8; entries * spec.entry_size as usize];
    target.read_physical(dtb, &mut raw).ok()?;
    Some(
        (0..entries)
            .map(|i| entry_sized(&raw, i, spec.entry_size))
            .collect(),
    )
}

/// The span of one last-level page table: the aligned step of the kernel search.
fn table_span(spec: &PagingSpec) -> u64 {
    let levels = spec.levels;
    1u64 << levels[levels.len().saturating_sub(2)].shift
}

/// The kernel's part of physical memory of an x64 machine; see [`kernel_half_frames_with`].
#[must_use]
pub fn kernel_half_frames(target: &dyn Target, dtb: u64, limits: &DiscoveryLimits) -> Vec<u64> {
    kernel_half_frames_with(target, &X64, dtb & FRAME_MASK, limits)
}

/// The kernel's part of physical memory: the root table at `dtb` (PML4, PAE PDPT or page
/// directory, per `spec`), the page tables of its kernel half and every frame they map there
/// (large pages expanded), ascending; bounded by `limits.table_pages`.
#[must_use]
pub fn kernel_half_frames_with(
    target: &dyn Target,
    spec: &'static PagingSpec,
    dtb: u64,
    limits: &DiscoveryLimits,
) -> Vec<u64> {
    let dtb = dtb & spec.root_mask;
    let Some(root) = root_table(target, spec, dtb) else {
        return Vec::new();
    };
    let mut walk = Walk::new(target, spec, &root, dtb & !(PAGE_SIZE - 1), limits);
    let mut frames = std::collections::BTreeSet::from([dtb / PAGE_SIZE]);
    walk.visit::<()>(&root, PAGE_SIZE, &mut |_, physical| {
        frames.insert(physical / PAGE_SIZE);
        ControlFlow::Continue(())
    });
    frames.extend(walk.tables.iter().map(|t| t / PAGE_SIZE));
    frames.into_iter().collect()
}

/// Find the kernel image in the kernel half of an x64 `dtb`'s address space; see
/// [`find_kernel_with`].
pub fn find_kernel(
    target: &Arc<dyn Target>,
    dtb: u64,
    limits: &DiscoveryLimits,
) -> Result<KernelFound, DiscoveryError> {
    find_kernel_with(target, &X64, dtb, limits)
}

/// Find the kernel image in the kernel half of `dtb`'s address space in paging mode `spec`
/// (x64: the upper half; x86: from 0x80000000).
pub fn find_kernel_with(
    target: &Arc<dyn Target>,
    spec: &'static PagingSpec,
    dtb: u64,
    limits: &DiscoveryLimits,
) -> Result<KernelFound, DiscoveryError> {
    let Some(root) = root_table(target.as_ref(), spec, dtb) else {
        return Err(DiscoveryError::InvalidDtb { dtb });
    };
    let space = AddressSpace::new(Arc::clone(target), spec, dtb);
    let mut walk = Walk::new(target.as_ref(), spec, &root, dtb & !(PAGE_SIZE - 1), limits);
    let span = table_span(spec);
    let span_name = format!("{} MiB", span >> 20);
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

    let found = walk.visit(&root, span, &mut |va, phys| match check(
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
            "kernel base {base:#x}: MZ + RSDS {} {}-{:X} found scanning {span_name}-aligned kernel mappings ({aligned} candidates)",
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
    let found = walk.visit(&root, PAGE_SIZE, &mut |va, phys| {
        if va % span == 0 {
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
            "kernel base {base:#x}: MZ + RSDS {} {}-{:X} found scanning 4 KiB kernel pages ({aligned} {span_name}-aligned candidates, then {pages} pages)",
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
        "{aligned} {span_name}-aligned kernel mappings and {pages} 4 KiB pages checked for MZ, {others} other images, {} page-table pages read",
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
