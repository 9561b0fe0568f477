//! A crash dump as a live, halted Windows kernel, x64 or 32-bit x86 (PAE or not): virtual
//! memory through its own page walk from the header's DirectoryTableBase, the KDBG for
//! GetVersion and the KPRCBs, processor 0's CONTEXT from the header. A 32-bit kernel speaks
//! the same 64-bit packets with its addresses sign-extended, reports an x86 control report,
//! answers control-space reads as offsets into KPROCESSOR_STATE and GetContext with an x86
//! CONTEXT.

use kds_kd::api::Version;
use kds_kd::debuggee::{BreakInState, Kernel};
use kds_runtime::target::DumpTarget;
use std::collections::BTreeMap;
use thiserror::Error;

const PAGE: u64 = 0x1000;
const FRAME_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const PRESENT: u64 = 1;
const LARGE: u64 = 1 << 7;

/// KDDEBUGGER_DATA64 offsets (../shared/DUMP-FORMATS.md).
mod kdbg {
    pub const LEN: usize = 0x340;
    pub const OWNER_TAG: usize = 0x10;
    pub const KERN_BASE: usize = 0x18;
    pub const PS_LOADED_MODULE_LIST: usize = 0x48;
    pub const KI_PROCESSOR_BLOCK: usize = 0x218;
    pub const OFFSET_PRCB_CURRENT_THREAD: usize = 0x2B4;
    pub const OFFSET_PRCB_PROC_STATE_CONTEXT: usize = 0x2BC;
    pub const OFFSET_PCR_SELF_PCR: usize = 0x2E2;
    pub const OFFSET_PRCB_PROC_STATE_SPECIAL_REG: usize = 0x2F2;
    pub const TAG: u32 = 0x4742_444B;
}

/// Where KPCR embeds its KPRCB on x64 (`_KPCR.Prcb`).
const KPCR_PRCB: u64 = 0x180;
/// Length of KSPECIAL_REGISTERS on x64; the CONTEXT of KPROCESSOR_STATE follows it.
const SPECIAL_REGISTERS_LEN: usize = 0xF0;
const CONTEXT_LEN: usize = 1232;
/// x86: the CONTEXT that opens KPROCESSOR_STATE, and where Cr3 and Cr4 of the
/// KSPECIAL_REGISTERS after it are (fixed by the x86 KD protocol).
const X86_CONTEXT_LEN: usize = 0x2CC;
const X86_CR3: usize = X86_CONTEXT_LEN + 8;
const X86_CR4: usize = X86_CONTEXT_LEN + 0xC;
const CR4_PAE: u32 = 1 << 5;
const MSR_EFER: u32 = 0xC000_0080;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_GS_BASE: u32 = 0xC000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// How the dumped kernel pages, from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    X64,
    /// 32-bit with PAE: a 32-byte-aligned PDPT of 4 entries, 8-byte entries below.
    Pae,
    /// 32-bit without PAE: a page directory and page tables of 1024 4-byte entries.
    X86,
}

impl Paging {
    fn is_32_bit(self) -> bool {
        self != Paging::X64
    }

    fn pointer_size(self) -> usize {
        if self.is_32_bit() {
            4
        } else {
            8
        }
    }
}

#[derive(Debug, Error)]
pub enum DumpKernelError {
    #[error("the dump is neither an AMD64 nor an x86 dump (machine type {0:#x})")]
    UnknownMachine(u32),
    #[error("the dump header names no KdDebuggerDataBlock")]
    NoKdbg,
    #[error("the KdDebuggerDataBlock at {0:#x} cannot be read through the header's page tables")]
    KdbgUnreadable(u64),
    #[error("the block at {address:#x} is not a KDBG (tag {tag:#010x})")]
    NotKdbg { address: u64, tag: u32 },
}

/// The facts the emulator serves, decoded once.
pub struct DumpKernel {
    target: DumpTarget,
    paging: Paging,
    dtb: u64,
    version: Version,
    processors: u32,
    context: Vec<u8>,
    kdbg: Vec<u8>,
    /// Pages written with --allow-write, over the dump's.
    written: BTreeMap<u64, Vec<u8>>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

impl DumpKernel {
    pub fn new(target: DumpTarget) -> Result<DumpKernel, DumpKernelError> {
        let dump = target.dump();
        let paging = match (dump.machine_image_type(), dump.pae_enabled()) {
            (kds_crashdump::MACHINE_AMD64, _) => Paging::X64,
            (kds_crashdump::MACHINE_I386, Some(true)) => Paging::Pae,
            (kds_crashdump::MACHINE_I386, _) => Paging::X86,
            (other, _) => return Err(DumpKernelError::UnknownMachine(other)),
        };
        let h = dump.header();
        if h.kd_debugger_data_block == 0 {
            return Err(DumpKernelError::NoKdbg);
        }
        let kdbg_address = h.kd_debugger_data_block;
        let dtb = match paging {
            Paging::X64 => h.directory_table_base & FRAME_MASK,
            Paging::Pae => h.directory_table_base & 0xFFFF_FFE0,
            Paging::X86 => h.directory_table_base & 0xFFFF_F000,
        };
        let context = dump.context_record().to_vec();
        let mut kernel = DumpKernel {
            paging,
            dtb,
            processors: h.number_processors.max(1),
            context,
            version: Version {
                major: 0,
                minor: 0,
                protocol: 0,
                secondary: 0,
                flags: 0,
                machine: 0,
                max_packet_type: 0,
                max_state_change: 0,
                max_manipulate: 0,
                simulation: 0,
                kernel_base: 0,
                ps_loaded_module_list: 0,
                debugger_data_list: 0,
            },
            kdbg: Vec::new(),
            written: BTreeMap::new(),
            target,
        };
        let mut kdbg = vec![0u8; kdbg::LEN];
        if kernel.virtual_read(kdbg_address, &mut kdbg) < 0x20 {
            return Err(DumpKernelError::KdbgUnreadable(kdbg_address));
        }
        let tag = u32_at(&kdbg, kdbg::OWNER_TAG);
        if tag != kdbg::TAG {
            return Err(DumpKernelError::NotKdbg {
                address: kdbg_address,
                tag,
            });
        }
        let h = kernel.target.dump().header();
        let flink = u64_at(&kdbg, 0);
        let module_list = match h.ps_loaded_module_list {
            0 => u64_at(&kdbg, kdbg::PS_LOADED_MODULE_LIST),
            v => v,
        };
        let (flags, machine, secondary) = if paging.is_32_bit() {
            (Version::FLAG_MP | Version::FLAG_DATA, 0x14C, 0)
        } else {
            (
                Version::FLAG_MP | Version::FLAG_DATA | Version::FLAG_PTR64,
                0x8664,
                2,
            )
        };
        // Every address in GetVersion is 64 bits wide; a 32-bit kernel sign-extends its own.
        let wire = |a: u64| kernel.wire(a);
        kernel.version = Version {
            major: if h.major_version == 0x0C { 0x0C } else { 0x0F },
            minor: u16::try_from(h.minor_version).unwrap_or(u16::MAX),
            protocol: 6,
            secondary,
            flags,
            machine,
            max_packet_type: 12,
            max_state_change: 3,
            max_manipulate: 0x33,
            simulation: 0,
            kernel_base: wire(u64_at(&kdbg, kdbg::KERN_BASE)),
            ps_loaded_module_list: wire(module_list),
            // KdpDebuggerDataListHead: the KDBG's own List.Flink (the head), else the KDBG.
            debugger_data_list: wire(if flink != 0 { flink } else { kdbg_address }),
        };
        kernel.kdbg = kdbg;
        Ok(kernel)
    }

    #[must_use]
    pub fn version(&self) -> Version {
        self.version
    }

    /// Set MaxManipulate of the GetVersion answer (pykdclient exits unless it is 0).
    pub fn set_max_manipulate(&mut self, value: u8) {
        self.version.max_manipulate = value;
    }

    /// An address as this kernel puts it in a 64-bit field: sign-extended from 32 bits on x86.
    fn wire(&self, address: u64) -> u64 {
        if self.paging.is_32_bit() {
            address as u32 as i32 as i64 as u64
        } else {
            address
        }
    }

    /// An address from a 64-bit field as this kernel uses it: a 32-bit kernel takes a
    /// sign-extended (or zero-extended) 32-bit value; anything else is no address of its.
    fn local(&self, address: u64) -> Option<u64> {
        if !self.paging.is_32_bit() {
            return Some(address);
        }
        let low = address & 0xFFFF_FFFF;
        (address == low || address == self.wire(low)).then_some(low)
    }

    /// The physical address `va` maps to, by this kernel's page walk from the header's DTB.
    #[must_use]
    pub fn translate(&self, va: u64) -> Option<u64> {
        let va = self.local(va)?;
        match self.paging {
            Paging::X64 => walk(self.dtb, va, |pa| self.physical_u64(pa)),
            Paging::Pae => walk_pae(self.dtb, va, |pa| self.physical_u64(pa)),
            Paging::X86 => walk_x86(self.dtb, va, |pa| self.physical_u32(pa)),
        }
    }

    fn physical_u64(&self, pa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        (self.physical_read(pa, &mut b) == 8).then(|| u64::from_le_bytes(b))
    }

    fn physical_u32(&self, pa: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        (self.physical_read(pa, &mut b) == 4).then(|| u32::from_le_bytes(b))
    }

    /// A pointer of the kernel's width at `va`.
    fn virtual_pointer(&self, va: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        let width = self.paging.pointer_size();
        (self.virtual_read(va, &mut b[..width]) == width).then(|| u64::from_le_bytes(b))
    }

    /// A pointer field of the KDBG (64 bits wide on every architecture).
    fn kdbg_pointer(&self, offset: usize) -> Option<u64> {
        self.local(u64_at(&self.kdbg, offset))
    }

    /// Physical bytes, page by page, stopping at the first page the dump lacks.
    fn physical_read(&self, address: u64, buf: &mut [u8]) -> usize {
        let mut done = 0usize;
        while done < buf.len() {
            let Some(at) = address.checked_add(done as u64) else {
                break;
            };
            let pfn = at / PAGE;
            let offset = (at % PAGE) as usize;
            let n = (PAGE as usize - offset).min(buf.len() - done);
            let page = match self.written.get(&pfn) {
                Some(page) => page.as_slice(),
                None => match self.target.dump().page(pfn) {
                    Some(page) => page,
                    None => break,
                },
            };
            buf[done..done + n].copy_from_slice(&page[offset..offset + n]);
            done += n;
        }
        done
    }

    /// Virtual bytes, page by page, stopping at the first page that does not translate.
    fn virtual_read(&self, address: u64, buf: &mut [u8]) -> usize {
        let mut done = 0usize;
        while done < buf.len() {
            let at = address.wrapping_add(done as u64);
            let n = (PAGE - at % PAGE).min((buf.len() - done) as u64) as usize;
            let Some(pa) = self.translate(at) else {
                break;
            };
            let got = self.physical_read(pa, &mut buf[done..done + n]);
            done += got;
            if got < n {
                break;
            }
        }
        done
    }

    fn physical_write(&mut self, address: u64, data: &[u8]) -> usize {
        let mut done = 0usize;
        while done < data.len() {
            let Some(at) = address.checked_add(done as u64) else {
                break;
            };
            let pfn = at / PAGE;
            let offset = (at % PAGE) as usize;
            let n = (PAGE as usize - offset).min(data.len() - done);
            if !self.written.contains_key(&pfn) {
                let Some(page) = self.target.dump().page(pfn) else {
                    break;
                };
                let copy = page.to_vec();
                self.written.insert(pfn, copy);
            }
            if let Some(page) = self.written.get_mut(&pfn) {
                page[offset..offset + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        done
    }

    /// KPRCB of `processor`: KiProcessorBlock[processor].
    fn kprcb(&self, processor: u16) -> Option<u64> {
        let block = self.kdbg_pointer(kdbg::KI_PROCESSOR_BLOCK)?;
        if block == 0 {
            return None;
        }
        let width = self.paging.pointer_size() as u64;
        self.virtual_pointer(block + width * u64::from(processor))
            .filter(|&p| p != 0)
    }

    fn kpcr(&self, processor: u16) -> Option<u64> {
        let kprcb = self.kprcb(processor)?;
        let kpcr = kprcb.checked_sub(KPCR_PRCB)?;
        // KPCR.Self points at itself when the offset is known; trust the layout otherwise.
        let self_offset = u64::from(u16_at(&self.kdbg, kdbg::OFFSET_PCR_SELF_PCR));
        match self.virtual_pointer(kpcr + self_offset) {
            Some(v) if self_offset != 0 && v != kpcr && v != 0 => Some(v),
            _ => Some(kpcr),
        }
    }

    fn current_thread(&self, processor: u16) -> Option<u64> {
        let offset = u64::from(u16_at(&self.kdbg, kdbg::OFFSET_PRCB_CURRENT_THREAD));
        self.virtual_pointer(self.kprcb(processor)? + offset)
    }

    fn special_registers_address(&self, processor: u16) -> Option<u64> {
        let offset = u64::from(u16_at(&self.kdbg, kdbg::OFFSET_PRCB_PROC_STATE_SPECIAL_REG));
        Some(self.kprcb(processor)? + offset)
    }

    /// x86: the processor's KPROCESSOR_STATE (its CONTEXT first), which control space
    /// addresses are offsets into.
    fn processor_state_address(&self, processor: u16) -> Option<u64> {
        let offset = u64::from(u16_at(&self.kdbg, kdbg::OFFSET_PRCB_PROC_STATE_CONTEXT));
        Some(self.kprcb(processor)? + offset)
    }

    /// A processor's CONTEXT: the header's for processor 0, KPRCB.ProcessorState's otherwise.
    fn processor_context(&self, processor: u16) -> Option<Vec<u8>> {
        if processor == 0 {
            return Some(self.context.clone());
        }
        let (at, len) = if self.paging.is_32_bit() {
            (self.processor_state_address(processor)?, X86_CONTEXT_LEN)
        } else {
            (
                self.special_registers_address(processor)? + SPECIAL_REGISTERS_LEN as u64,
                CONTEXT_LEN,
            )
        };
        let mut ctx = vec![0u8; len];
        (self.virtual_read(at, &mut ctx) == len).then_some(ctx)
    }

    /// x86 control space: `len` bytes at `offset` into KPROCESSOR_STATE, with Cr3 the dump's
    /// page tables and Cr4's PAE bit the dump's paging mode.
    fn x86_control_space(&self, processor: u16, offset: u64, len: usize) -> Option<Vec<u8>> {
        let offset = usize::try_from(offset).ok()?;
        let end = offset.checked_add(len)?.min(0x400);
        if offset >= end {
            return None;
        }
        let mut state = vec![0u8; end.max(X86_CR4 + 4)];
        let base = self.processor_state_address(processor)?;
        let _ = self.virtual_read(base, &mut state);
        if processor == 0 {
            let n = self.context.len().min(X86_CONTEXT_LEN);
            state[..n].copy_from_slice(&self.context[..n]);
        }
        let cr3 = u32::try_from(self.dtb).ok()?;
        state[X86_CR3..X86_CR3 + 4].copy_from_slice(&cr3.to_le_bytes());
        let mut cr4 = u32_at(&state, X86_CR4);
        if cr4 == 0 {
            cr4 = 0x0000_0690;
        }
        cr4 = if self.paging == Paging::Pae {
            cr4 | CR4_PAE
        } else {
            cr4 & !CR4_PAE
        };
        state[X86_CR4..X86_CR4 + 4].copy_from_slice(&cr4.to_le_bytes());
        Some(state[offset..end].to_vec())
    }
}

/// x86 PAE translation of the 32-bit `va` from the PDPT at `pdpt` (32-byte aligned): four
/// PDPTEs (present bit only), then page directories with 2 MiB pages and page tables.
pub fn walk_pae(pdpt: u64, va: u64, entry_at: impl Fn(u64) -> Option<u64>) -> Option<u64> {
    if va > 0xFFFF_FFFF {
        return None;
    }
    let pdpte = entry_at((pdpt & 0xFFFF_FFE0) + ((va >> 30) & 3) * 8)?;
    if pdpte & PRESENT == 0 {
        return None;
    }
    let pde = entry_at((pdpte & FRAME_MASK) + ((va >> 21) & 0x1FF) * 8)?;
    if pde & PRESENT == 0 {
        return None;
    }
    if pde & LARGE != 0 {
        return Some((pde & FRAME_MASK & !0x1F_FFFF) | (va & 0x1F_FFFF));
    }
    let pte = entry_at((pde & FRAME_MASK) + ((va >> 12) & 0x1FF) * 8)?;
    (pte & PRESENT != 0).then_some((pte & FRAME_MASK) | (va & (PAGE - 1)))
}

/// x86 translation without PAE: a page directory of 1024 4-byte entries (4 MiB pages) and
/// page tables of 1024.
pub fn walk_x86(directory: u64, va: u64, entry_at: impl Fn(u64) -> Option<u32>) -> Option<u64> {
    if va > 0xFFFF_FFFF {
        return None;
    }
    let pde = u64::from(entry_at((directory & 0xFFFF_F000) + (va >> 22) * 4)?);
    if pde & PRESENT == 0 {
        return None;
    }
    if pde & LARGE != 0 {
        return Some((pde & 0xFFC0_0000) | (va & 0x3F_FFFF));
    }
    let pte = u64::from(entry_at((pde & 0xFFFF_F000) + ((va >> 12) & 0x3FF) * 4)?);
    (pte & PRESENT != 0).then_some((pte & 0xFFFF_F000) | (va & (PAGE - 1)))
}

/// x64 4-level translation of `va` from the PML4 at `dtb`, reading entries with `entry_at`:
/// the present bit at every level, 1 GiB pages at the PDPT and 2 MiB pages at the PD.
pub fn walk(dtb: u64, va: u64, entry_at: impl Fn(u64) -> Option<u64>) -> Option<u64> {
    // Canonical: bits 63..47 all equal.
    let top = va >> 47;
    if top != 0 && top != 0x1_FFFF {
        return None;
    }
    let mut table = dtb & FRAME_MASK;
    for level in (0..4u32).rev() {
        let shift = 12 + 9 * level;
        let index = (va >> shift) & 0x1FF;
        let entry = entry_at(table + index * 8)?;
        if entry & PRESENT == 0 {
            return None;
        }
        let frame = entry & FRAME_MASK;
        if level == 0 {
            return Some(frame | (va & (PAGE - 1)));
        }
        if (level == 1 || level == 2) && entry & LARGE != 0 {
            let size = 1u64 << shift;
            return Some((frame & !(size - 1)) | (va & (size - 1)));
        }
        table = frame;
    }
    None
}

impl Kernel for DumpKernel {
    fn version(&self) -> Version {
        self.version
    }

    fn processor_count(&self) -> u32 {
        self.processors
    }

    fn break_in_state(&self, processor: u16) -> BreakInState {
        let pc = self.processor_context(processor).map_or(0, |ctx| {
            if self.paging.is_32_bit() {
                u64::from(u32_at(&ctx, 0xB8))
            } else {
                u64_at(&ctx, 0xF8)
            }
        });
        let mut instruction = vec![0u8; 16];
        let n = self.virtual_read(pc, &mut instruction);
        instruction.truncate(n);
        BreakInState {
            thread: self.current_thread(processor).unwrap_or(0),
            pc,
            instruction,
        }
    }

    fn read_virtual(&self, _processor: u16, address: u64, buf: &mut [u8]) -> usize {
        self.virtual_read(address, buf)
    }

    fn read_physical(&self, address: u64, buf: &mut [u8]) -> usize {
        self.physical_read(address, buf)
    }

    /// Only processor 0's context is in the header; hosts read the others from the KPRCB.
    fn context(&self, processor: u16) -> Option<Vec<u8>> {
        (processor == 0).then(|| self.context.clone())
    }

    fn control_space(&self, processor: u16, selector: u64, len: usize) -> Option<Vec<u8>> {
        if self.paging.is_32_bit() {
            return self.x86_control_space(processor, selector, len);
        }
        let pointer = |v: Option<u64>| v.map(|v| v.to_le_bytes()[..len.min(8)].to_vec());
        match selector {
            0 => pointer(self.kpcr(processor)),
            1 => pointer(self.kprcb(processor)),
            3 => pointer(self.current_thread(processor)),
            2 => {
                let len = len.min(0x400);
                let mut bytes = vec![0u8; len.max(0x20)];
                if let Some(at) = self.special_registers_address(processor) {
                    let _ = self.virtual_read(at, &mut bytes);
                }
                // Cr0, Cr2, Cr3, Cr4: the dump's page tables are the ones to use.
                let put = |b: &mut Vec<u8>, at: usize, v: u64| {
                    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
                };
                if u64_at(&bytes, 0) == 0 {
                    put(&mut bytes, 0, 0x8005_0033);
                }
                put(&mut bytes, 0x10, self.dtb);
                if u64_at(&bytes, 0x18) == 0 {
                    put(&mut bytes, 0x18, 0x0035_06F8);
                }
                bytes.truncate(len);
                Some(bytes)
            }
            _ => None,
        }
    }

    fn read_msr(&self, processor: u16, msr: u32) -> Option<u64> {
        if self.paging.is_32_bit() {
            // The MSRs served are x64's (EFER, LSTAR, GS bases).
            return None;
        }
        match msr {
            MSR_EFER => Some(0xD01),
            MSR_GS_BASE => self.kpcr(processor),
            MSR_KERNEL_GS_BASE => Some(0),
            // KiSystemCall64 is in nt's code; without symbols, a point in nt's first code
            // page (a backwards scan for the MZ header finds KernBase).
            MSR_LSTAR => (self.version.kernel_base != 0).then(|| self.version.kernel_base + PAGE),
            _ => None,
        }
    }

    fn write_virtual(&mut self, _processor: u16, address: u64, data: &[u8]) -> usize {
        let mut done = 0usize;
        while done < data.len() {
            let at = address.wrapping_add(done as u64);
            let n = (PAGE - at % PAGE).min((data.len() - done) as u64) as usize;
            let Some(pa) = self.translate(at) else {
                break;
            };
            let wrote = self.physical_write(pa, &data[done..done + n]);
            done += wrote;
            if wrote < n {
                break;
            }
        }
        done
    }

    fn write_physical(&mut self, address: u64, data: &[u8]) -> usize {
        self.physical_write(address, data)
    }

    fn set_context(&mut self, processor: u16, offset: usize, bytes: &[u8]) -> bool {
        let end = offset.saturating_add(bytes.len());
        if processor != 0 || end > self.context.len() {
            return false;
        }
        self.context[offset..end].copy_from_slice(bytes);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Page tables as a map from entry address to entry.
    fn tables() -> HashMap<u64, u64> {
        let mut t = HashMap::new();
        // PML4 at 0x1000; entry 0x1F0 -> PDPT 0x2000.
        t.insert(0x1000 + 0x1F0 * 8, 0x2000 | 0x63);
        // PDPT entry 1 -> PD 0x3000; entry 2 -> 1 GiB page at 0x4000_0000.
        t.insert(0x2000 + 8, 0x3000 | 0x63);
        t.insert(0x2000 + 2 * 8, 0x4000_0000 | 0xE3);
        // PD entry 3 -> PT 0x4000; entry 4 -> 2 MiB page at 0x60_0000; entry 5 not present.
        t.insert(0x3000 + 3 * 8, 0x4000 | 0x63);
        t.insert(0x3000 + 4 * 8, 0x60_0000 | 0xE3);
        t.insert(0x3000 + 5 * 8, 0x80_0000 | 0xE2);
        // PT entry 7 -> page 0x9000 (NX set: still present).
        t.insert(0x4000 + 7 * 8, (1 << 63) | 0x9000 | 0x63);
        t
    }

    fn va(pml4: u64, pdpt: u64, pd: u64, pt: u64, offset: u64) -> u64 {
        (0xFFFFu64 << 48) | (pml4 << 39) | (pdpt << 30) | (pd << 21) | (pt << 12) | offset
    }

    #[test]
    fn walks_4k_2m_and_1g_pages() {
        let t = tables();
        let at = |pa: u64| Some(t.get(&pa).copied().unwrap_or(0));
        assert_eq!(walk(0x1000, va(0x1F0, 1, 3, 7, 0x123), at), Some(0x9123));
        assert_eq!(
            walk(0x1000, va(0x1F0, 1, 4, 0x1AB, 0x456), at),
            Some(0x60_0000 + 0x1AB_456)
        );
        assert_eq!(
            walk(0x1000, va(0x1F0, 2, 0x155, 0x1AB, 0x456), at),
            Some(0x4000_0000 + (0x155 << 21) + 0x1AB_456)
        );
        // Not present at the PD, at the PT, at the PML4; non-canonical.
        assert_eq!(walk(0x1000, va(0x1F0, 1, 5, 0, 0), at), None);
        assert_eq!(walk(0x1000, va(0x1F0, 1, 3, 8, 0), at), None);
        assert_eq!(walk(0x1000, va(0x1F1, 1, 3, 7, 0), at), None);
        assert_eq!(walk(0x1000, 0x0000_8000_0000_0000, at), None);
        // A table page the dump lacks.
        assert_eq!(walk(0x1000, va(0x1F0, 1, 3, 7, 0), |_| None), None);
    }

    #[test]
    fn walks_pae_from_a_32_byte_aligned_pdpt() {
        let mut t = HashMap::new();
        // PDPT at 0x1020: entry 2 -> PD 0x2000; PD[0x12] -> PT 0x3000; PD[0x13] -> 2 MiB page.
        t.insert(0x1020 + 2 * 8, 0x2000 | 1);
        t.insert(0x2000 + 0x12 * 8, 0x3000 | 0x63);
        t.insert(0x2000 + 0x13 * 8, 0x0260_0000 | 0xE3);
        t.insert(0x3000 + 0x45 * 8, 0x9000 | 0x63);
        let at = |pa: u64| Some(t.get(&pa).copied().unwrap_or(0));
        assert_eq!(walk_pae(0x1020, 0x8244_5123, at), Some(0x9123));
        assert_eq!(walk_pae(0x1020, 0x8260_1234, at), Some(0x0260_1234));
        assert_eq!(walk_pae(0x1020, 0x4000_0000, at), None);
        assert_eq!(walk_pae(0x1020, 0xFFFF_FFFF_8244_5123, at), None);
    }

    #[test]
    fn walks_two_levels_without_pae() {
        let mut t: HashMap<u64, u32> = HashMap::new();
        t.insert(0x1000 + 0x209 * 4, 0x2000 | 0x63);
        t.insert(0x2000 + 0x045 * 4, 0x9000 | 0x63);
        t.insert(0x1000 + 0x20A * 4, 0x0280_0000 | 0xE3);
        let at = |pa: u64| Some(t.get(&pa).copied().unwrap_or(0));
        assert_eq!(walk_x86(0x1000, 0x8244_5123, at), Some(0x9123));
        assert_eq!(walk_x86(0x1000, 0x8280_0010, at), Some(0x0280_0010));
        assert_eq!(walk_x86(0x1000, 0x8300_0000, at), None);
    }
}
