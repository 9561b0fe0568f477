//! `!pte <va>`: each paging level's entry for an address (where the entry lives, virtually
//! through the page tables' self-map and physically, what it contains, its frame and flags),
//! and the physical address it leads to; `!vtop` says the same as one translation.

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::format::plain_pointer;
use crate::report::Report;
use kds_runtime::mmu::spec::bits;
use kds_runtime::mmu::PagingSpec;
use kds_runtime::target::Target;
use serde::Serialize;
use std::fmt::Write as _;

/// One level's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PteLevel {
    /// `PXE`, `PPE`, `PDE`, `PTE`.
    pub name: String,
    /// Where the entry is, virtually (through the self-map), when the self-map was found.
    pub virtual_address: Option<u64>,
    pub physical_address: u64,
    /// `None` when the table page is not in the capture.
    pub contents: Option<u64>,
    /// This entry maps a large page.
    pub large: bool,
    /// Whether `!pte` prints this level (a PAE PDPTE is walked but not shown).
    #[serde(skip)]
    pub shown: bool,
    /// Bytes of the entry (8; 4 on x86 without PAE): the digits `contains` prints.
    #[serde(skip)]
    pub entry_size: u64,
    #[serde(skip)]
    pub frame_mask: u64,
}

/// Where the walk ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PteOutcome {
    Mapped { physical: u64, page_size: u64 },
    NotPresent { level: String },
    TableNotCaptured { level: String },
}

/// `!pte` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PteReport {
    pub va: u64,
    pub dtb: u64,
    pub levels: Vec<PteLevel>,
    pub outcome: PteOutcome,
    /// `!vtop` style rather than `!pte` columns.
    #[serde(skip)]
    pub vtop: bool,
    #[serde(skip)]
    pub pointer_size: u64,
}

/// The PML4 slot that maps the paging structures themselves: the entry whose frame is the
/// root table (Windows randomizes it since 1607; it was 0x1ed before).
fn self_map_index(target: &dyn Target, spec: &PagingSpec, dtb: u64) -> Option<u64> {
    let root = dtb & spec.root_mask;
    let top = spec.levels.first()?;
    let mut table = vec![0u8; ((1u64 << top.index_bits) * spec.entry_size) as usize];
    target.read_physical(root, &mut table).ok()?;
    table
        .chunks_exact(spec.entry_size as usize)
        .position(|e| {
            let v = e.iter().rev().fold(0u64, |a, b| a << 8 | u64::from(*b));
            v & bits::PRESENT != 0 && v & spec.frame_mask == root
        })
        .map(|i| i as u64)
}

/// Where a 32-bit Windows kernel maps its page tables when its symbols do not say: PTEs
/// from 0xC0000000, PDEs from 0xC0600000 with PAE and from 0xC0300000 without (the
/// self-map, PD 3 entries 0..3 / PD entry 0x300).
pub const X86_PTE_BASE: u64 = 0xC000_0000;

/// How the entries of a walk are found virtually.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfMap {
    /// x64: the PML4 slot that names the root itself.
    RootSlot(u64),
    /// 32-bit x86: the page tables are mapped linearly from this PTE base; each level's
    /// entry is the PTE of the level below's (`PDE_BASE = PTE(PTE_BASE)`).
    PteBase(u64),
}

/// `!pte va` (or `!vtop`), through the implicit process's page tables.
pub fn pte_command(dbg: &mut Debugger, va: u64, vtop: bool) -> Result<PteReport, CommandError> {
    let ps = dbg.pointer_size();
    let space = dbg.current_process().map_or_else(
        || std::sync::Arc::clone(dbg.model().kernel_space()),
        |p| std::sync::Arc::clone(p.space()),
    );
    let spec = space.spec();
    let target = space.target();
    let dtb = space.dtb();
    let self_map = if spec.sign_extended {
        self_map_index(target.as_ref(), spec, dtb).map(SelfMap::RootSlot)
    } else {
        Some(SelfMap::PteBase(x86_pte_base(dbg)))
    };
    Ok(pte_report(
        target.as_ref(),
        spec,
        dtb,
        va,
        self_map,
        vtop,
        ps,
    ))
}

/// The PTE base of a 32-bit kernel: `nt!MmPteBase` when the table has it and it reads as an
/// aligned kernel address, else [`X86_PTE_BASE`].
fn x86_pte_base(dbg: &Debugger) -> u64 {
    let model = dbg.model();
    model
        .symbol_address("MmPteBase")
        .and_then(|at| model.kernel_space().read_pointer(at).ok())
        .filter(|&base| base >= 0x8000_0000 && base <= u64::from(u32::MAX) && base % 0x40_0000 == 0)
        .unwrap_or(X86_PTE_BASE)
}

/// Where the entry of `level` (index `depth`) for `va` is virtually.
fn entry_virtual_address(
    spec: &PagingSpec,
    self_map: SelfMap,
    va: u64,
    depth: usize,
) -> Option<u64> {
    let level = &spec.levels[depth];
    let va_mask = if spec.va_bits >= 64 {
        u64::MAX
    } else {
        (1u64 << spec.va_bits) - 1
    };
    match self_map {
        SelfMap::RootSlot(s) => {
            // Through the self-map the PTE array starts at slot << top shift; each level up
            // adds the slot again one level lower. The entry is then indexed by va's bits
            // above this level's shift.
            let top = &spec.levels[0];
            let repetitions = spec.levels.len() - depth;
            let mut base = 0u64;
            for k in 0..repetitions {
                base |= s << (top.shift - top.index_bits * k as u32);
            }
            let index = (va & va_mask) >> level.shift;
            Some(spec.canonical(base.wrapping_add(index * spec.entry_size)))
        }
        // A PAE PDPTE is in no page table: nothing maps it there.
        SelfMap::PteBase(_) if !level.permissions => None,
        SelfMap::PteBase(base) => {
            let leaf_shift = spec.levels.last()?.shift;
            let mut at = va & va_mask;
            for _ in depth..spec.levels.len() {
                at = (base + (at >> leaf_shift) * spec.entry_size) & va_mask;
            }
            Some(at)
        }
    }
}

/// The walk of `va` from `dtb` in mode `spec`, with the entries' virtual addresses through
/// `self_map` when known.
#[must_use]
pub fn pte_report(
    target: &dyn Target,
    spec: &PagingSpec,
    dtb: u64,
    va: u64,
    self_map: Option<SelfMap>,
    vtop: bool,
    pointer_size: u64,
) -> PteReport {
    let mut levels = Vec::new();
    let mut table = dtb & spec.root_mask;
    let mut outcome = None;
    for (depth, level) in spec.levels.iter().enumerate() {
        let index = spec.index(level, va);
        let physical_address = table + index * spec.entry_size;
        let virtual_address = self_map.and_then(|s| entry_virtual_address(spec, s, va, depth));
        let mut raw = vec![0u8; spec.entry_size as usize];
        let contents = target
            .read_physical(physical_address, &mut raw)
            .ok()
            .map(|()| raw.iter().rev().fold(0u64, |a, b| a << 8 | u64::from(*b)));
        let large = contents
            .is_some_and(|c| level.large_pages && c & bits::PRESENT != 0 && c & bits::LARGE != 0);
        levels.push(PteLevel {
            name: level.name.to_string(),
            virtual_address,
            physical_address,
            contents,
            large,
            // WinDbg's x86 `!pte` shows PDE and PTE only, not the PAE PDPTE.
            shown: level.permissions,
            entry_size: spec.entry_size,
            frame_mask: spec.frame_mask,
        });
        let Some(entry) = contents else {
            outcome = Some(PteOutcome::TableNotCaptured {
                level: level.name.to_string(),
            });
            break;
        };
        if entry & bits::PRESENT == 0 {
            outcome = Some(PteOutcome::NotPresent {
                level: level.name.to_string(),
            });
            break;
        }
        let frame = entry & spec.frame_mask;
        let last = depth + 1 == spec.levels.len();
        if large || last {
            let page_size = 1u64 << level.shift;
            let base = if large {
                frame & !(page_size - 1)
            } else {
                frame
            };
            outcome = Some(PteOutcome::Mapped {
                physical: base | (va & (page_size - 1)),
                page_size,
            });
            break;
        }
        table = frame;
    }
    PteReport {
        va,
        dtb,
        levels,
        outcome: outcome.unwrap_or(PteOutcome::NotPresent {
            level: "PTE".into(),
        }),
        vtop,
        pointer_size,
    }
}

/// WinDbg's flag letters for an entry: `-GLDA--KWEV` style (global, large, dirty, accessed,
/// cache disabled, write-through, kernel/user, writable, executable, valid).
fn flag_letters(entry: u64) -> String {
    let bit = |n: u32| entry >> n & 1 == 1;
    let mut s = String::with_capacity(11);
    s.push('-');
    s.push(if bit(8) { 'G' } else { '-' });
    s.push(if bit(7) { 'L' } else { '-' });
    s.push(if bit(6) { 'D' } else { '-' });
    s.push(if bit(5) { 'A' } else { '-' });
    s.push(if bit(4) { 'C' } else { '-' });
    s.push(if bit(3) { 'T' } else { '-' });
    s.push(if bit(2) { 'U' } else { 'K' });
    s.push(if bit(1) { 'W' } else { 'R' });
    s.push(if bit(63) { '-' } else { 'E' });
    s.push(if bit(0) { 'V' } else { '-' });
    s
}

impl Report for PteReport {
    fn render(&self, out: &mut String) {
        let ps = self.pointer_size;
        let vtop = if ps == 4 { "X86VtoP" } else { "Amd64VtoP" };
        if self.vtop {
            let _ = writeln!(out, "{vtop}: Virt {:x}, pagedir {:x}", self.va, self.dtb);
            for l in &self.levels {
                match l.contents {
                    Some(c) => {
                        let _ = writeln!(out, "{vtop}: {} {:x}", l.name, c);
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "{vtop}: {} at {:x} is not in the dump",
                            l.name, l.physical_address
                        );
                    }
                }
            }
            match &self.outcome {
                PteOutcome::Mapped { physical, .. } => {
                    let _ = writeln!(
                        out,
                        "Virtual address {:x} translates to physical address {physical:x}.",
                        self.va
                    );
                }
                PteOutcome::NotPresent { level } | PteOutcome::TableNotCaptured { level } => {
                    let _ = writeln!(
                        out,
                        "{vtop}: zero {level} — virtual address {:x} has no physical page.",
                        self.va
                    );
                }
            }
            return;
        }
        let shown = self.levels.iter().filter(|l| l.shown).count();
        // Centred over the columns as WinDbg does: 45 over x64's four, 31 over x86's two.
        let va_width = if shown >= 4 { 45 } else { 31 };
        let _ = writeln!(
            out,
            "{:>va_width$}",
            format!("VA {}", plain_pointer(self.va, ps))
        );
        let cell = 27;
        let mut at = String::new();
        let mut contains = String::new();
        let mut pfn = String::new();
        for l in self.levels.iter().filter(|l| l.shown) {
            let digits = (l.entry_size * 2) as usize;
            let where_ = l.virtual_address.map_or_else(
                || format!("phys {:X}", l.physical_address),
                |v| plain_pointer(v, ps).to_uppercase(),
            );
            let _ = write!(at, "{:<cell$}", format!("{} at {where_}", l.name));
            match l.contents {
                Some(c) => {
                    let _ = write!(contains, "{:<cell$}", format!("contains {c:0digits$X}"));
                    let frame = c & l.frame_mask;
                    let text = if c & 1 == 0 {
                        "not valid".to_string()
                    } else if l.large {
                        format!("LARGE PAGE pfn {:x}", frame >> 12)
                    } else {
                        format!("pfn {:<9x} {}", frame >> 12, flag_letters(c))
                    };
                    let _ = write!(pfn, "{text:<cell$}");
                }
                None => {
                    let unknown = format!("contains {}", "?".repeat(digits));
                    let _ = write!(contains, "{unknown:<cell$}");
                    let _ = write!(pfn, "{:<cell$}", "not in the dump");
                }
            }
        }
        let _ = writeln!(out, "{}", at.trim_end());
        let _ = writeln!(out, "{}", contains.trim_end());
        let _ = writeln!(out, "{}", pfn.trim_end());
        match &self.outcome {
            PteOutcome::Mapped { physical, .. } => {
                let _ = writeln!(out, "\nphysical address {physical:x}");
            }
            PteOutcome::NotPresent { level } => {
                let _ = writeln!(out, "\n{level} not valid: the address is not mapped");
            }
            PteOutcome::TableNotCaptured { level } => {
                let _ = writeln!(out, "\nthe {level} table page is not in the dump");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kds_runtime::mmu::{X86, X86_PAE};
    use kds_runtime::target::MemoryTarget;

    const P_W: u64 = bits::PRESENT | bits::WRITE;

    fn put(m: &MemoryTarget, at: u64, v: u64, size: u64) {
        m.write_physical(at, &v.to_le_bytes()[..size as usize]);
    }

    /// PAE: PDPT at 0x3020 naming directories at frames 4..7; 0x8040_1000 through directory
    /// 2 entry 2 (page table frame 0x20) entry 1 to frame 0x1234.
    fn pae() -> MemoryTarget {
        let m = MemoryTarget::x64(3);
        for k in 0..4 {
            put(&m, 0x3020 + 8 * k, (0x4000 + k * 0x1000) | 1, 8);
        }
        put(&m, 0x6000 + 2 * 8, 0x20000 | P_W | 0x60, 8);
        put(&m, 0x20000 + 8, 0x123_4000 | P_W | 0x160, 8);
        m
    }

    fn render(r: &PteReport) -> String {
        let mut s = String::new();
        r.render(&mut s);
        s
    }

    #[test]
    fn pae_entries_are_at_the_fixed_self_map_and_print_16_digits() {
        let m = pae();
        let self_map = Some(SelfMap::PteBase(X86_PTE_BASE));
        let r = pte_report(&m, &X86_PAE, 0x3020, 0x8040_1abc, self_map, false, 4);
        assert_eq!(r.levels.len(), 3);
        assert_eq!(r.levels[0].virtual_address, None);
        assert_eq!(r.levels[1].virtual_address, Some(0xC060_2010));
        assert_eq!(r.levels[2].virtual_address, Some(0xC040_2008));
        assert_eq!(
            r.outcome,
            PteOutcome::Mapped {
                physical: 0x123_4abc,
                page_size: 0x1000
            }
        );
        assert_eq!(
            render(&r),
            "                    VA 80401abc\n\
             PDE at C0602010            PTE at C0402008\n\
             contains 0000000000020063  contains 0000000001234163\n\
             pfn 20        ---DA--KWEV  pfn 1234      -G-DA--KWEV\n\
             \n\
             physical address 1234abc\n"
        );
    }

    #[test]
    fn a_pte_base_from_the_symbols_moves_both_columns() {
        let m = pae();
        let self_map = Some(SelfMap::PteBase(0xC080_0000));
        let r = pte_report(&m, &X86_PAE, 0x3020, 0x8040_1000, self_map, false, 4);
        // PDE_BASE = PTE(PTE_BASE) = 0xC0800000 + (0xC0800000 >> 12) * 8.
        assert_eq!(r.levels[1].virtual_address, Some(0xC0E0_4000 + 0x402 * 8));
        assert_eq!(r.levels[2].virtual_address, Some(0xC0C0_2008));
    }

    #[test]
    fn non_pae_entries_are_at_c0300000_and_print_8_digits() {
        let m = MemoryTarget::x64(3);
        // 0x8040_1000: directory entry 0x201 -> page table 0x20, entry 1 -> frame 0x1234.
        put(&m, 0x3000 + 4 * 0x201, 0x20000 | P_W | 0x20, 4);
        put(&m, 0x20000 + 4, 0x123_4000 | P_W, 4);
        // 0x8400_0000: a 4 MiB page.
        put(&m, 0x3000 + 4 * 0x210, 0x80_0000 | P_W | bits::LARGE, 4);
        let self_map = Some(SelfMap::PteBase(X86_PTE_BASE));
        let r = pte_report(&m, &X86, 0x3000, 0x8040_1010, self_map, false, 4);
        assert_eq!(r.levels[0].virtual_address, Some(0xC030_0804));
        assert_eq!(r.levels[1].virtual_address, Some(0xC020_1004));
        assert_eq!(
            render(&r),
            "                    VA 80401010\n\
             PDE at C0300804            PTE at C0201004\n\
             contains 00020023          contains 01234003\n\
             pfn 20        ----A--KWEV  pfn 1234      -------KWEV\n\
             \n\
             physical address 1234010\n"
        );
        let r = pte_report(&m, &X86, 0x3000, 0x8412_3456, self_map, false, 4);
        assert_eq!(
            r.outcome,
            PteOutcome::Mapped {
                physical: 0x92_3456,
                page_size: 0x40_0000
            }
        );
        let text = render(&r);
        assert!(text.contains("PDE at C0300840"), "{text}");
        assert!(text.contains("LARGE PAGE pfn 800"), "{text}");
        let r = pte_report(&m, &X86, 0x3000, 0x8040_1000, self_map, true, 4);
        assert!(render(&r).starts_with("X86VtoP: Virt 80401000, pagedir 3000\n"));
    }

    #[test]
    fn an_uncaptured_non_pae_table_prints_8_question_marks() {
        let m = MemoryTarget::x64(3);
        put(&m, 0x3000 + 4 * 0x201, 0x77000 | P_W, 4);
        let r = pte_report(&m, &X86, 0x3000, 0x8040_1000, None, false, 4);
        let text = render(&r);
        assert!(text.contains("contains ????????\n"), "{text}");
        assert!(text.contains("PTE at phys 77004"), "{text}");
    }
}
