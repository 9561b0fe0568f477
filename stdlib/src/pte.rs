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
    let self_map = self_map_index(target.as_ref(), spec, dtb);
    let mut levels = Vec::new();
    let mut table = dtb & spec.root_mask;
    let mut outcome = None;
    let va_mask = if spec.va_bits >= 64 {
        u64::MAX
    } else {
        (1u64 << spec.va_bits) - 1
    };
    for (depth, level) in spec.levels.iter().enumerate() {
        let index = spec.index(level, va);
        let physical_address = table + index * spec.entry_size;
        let virtual_address = self_map.map(|s| {
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
            spec.canonical(base.wrapping_add(index * spec.entry_size))
        });
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
    Ok(PteReport {
        va,
        dtb,
        levels,
        outcome: outcome.unwrap_or(PteOutcome::NotPresent {
            level: "PTE".into(),
        }),
        vtop,
        pointer_size: ps,
    })
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
        if self.vtop {
            let _ = writeln!(out, "Amd64VtoP: Virt {:x}, pagedir {:x}", self.va, self.dtb);
            for l in &self.levels {
                match l.contents {
                    Some(c) => {
                        let _ = writeln!(out, "Amd64VtoP: {} {:x}", l.name, c);
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "Amd64VtoP: {} at {:x} is not in the dump",
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
                        "Amd64VtoP: zero {level} — virtual address {:x} has no physical page.",
                        self.va
                    );
                }
            }
            return;
        }
        let _ = writeln!(out, "{:>45}", format!("VA {}", plain_pointer(self.va, ps)));
        let cell = 27;
        let mut at = String::new();
        let mut contains = String::new();
        let mut pfn = String::new();
        for l in &self.levels {
            let where_ = l.virtual_address.map_or_else(
                || format!("phys {:X}", l.physical_address),
                |v| plain_pointer(v, ps).to_uppercase(),
            );
            let _ = write!(at, "{:<cell$}", format!("{} at {where_}", l.name));
            match l.contents {
                Some(c) => {
                    let _ = write!(contains, "{:<cell$}", format!("contains {c:016X}"));
                    let frame = c & 0x000f_ffff_ffff_f000;
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
                    let _ = write!(contains, "{:<cell$}", "contains ????????????????");
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
