//! Physical memory held in memory: sparse 4 KiB pages in a map. Tests build small machines
//! with it, and images assembled in memory can be served through the same `Target` trait.

use super::{
    Arch, Capabilities, Consistency, ProcessorContext, ReadError, Target, TargetError,
    TargetIdentity, TargetKind, PAGE_SIZE,
};
use crate::mmu::spec::bits;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

const PAGE: usize = PAGE_SIZE as usize;
const FRAME_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// A frozen x64 machine whose physical pages live in a map; absent pages read as
/// [`ReadError::PageNotCaptured`].
///
/// ```
/// use kds_runtime::target::{MemoryTarget, Target};
/// let machine = MemoryTarget::x64(1);
/// machine.write_virtual(0xFFFF_C000_0000_0010, &7u64.to_le_bytes());
/// let mut buf = [0u8; 8];
/// let physical = machine.translate(0xFFFF_C000_0000_0010).unwrap();
/// machine.read_physical(physical, &mut buf).unwrap();
/// assert_eq!(u64::from_le_bytes(buf), 7);
/// ```
pub struct MemoryTarget {
    pages: Mutex<HashMap<u64, Box<[u8; PAGE]>>>,
    /// Next frame handed out for page tables and mapped pages.
    next_frame: Mutex<u64>,
    identity: TargetIdentity,
}

impl MemoryTarget {
    /// An empty x64 machine whose PML4 is frame `pml4_frame`; new frames start at 0x10.
    #[must_use]
    pub fn x64(pml4_frame: u64) -> MemoryTarget {
        let target = MemoryTarget {
            pages: Mutex::new(HashMap::new()),
            next_frame: Mutex::new(0x10),
            identity: TargetIdentity {
                kind: TargetKind::Snapshot {
                    path: "memory".into(),
                    format: "in-memory image".into(),
                },
                arch: Arch::X64,
                os_build: None,
                checked_build: false,
                kernel_base: None,
                ps_loaded_module_list: None,
                ps_active_process_head: None,
                kd_debugger_data_block: None,
                pfn_database: None,
                directory_table_base: pml4_frame * PAGE_SIZE,
                bugcheck: None,
                processor_count: 1,
                system_time: None,
                system_up_time: None,
                comment: None,
                consistency: Consistency::Frozen,
                discovery: Vec::new(),
            },
        };
        target.with_pages(|p| {
            p.entry(pml4_frame).or_insert_with(|| Box::new([0; PAGE]));
        });
        target
    }

    fn with_pages<R>(&self, f: impl FnOnce(&mut HashMap<u64, Box<[u8; PAGE]>>) -> R) -> R {
        f(&mut self.pages.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Write bytes at a physical address, creating zeroed pages as needed.
    pub fn write_physical(&self, address: u64, bytes: &[u8]) {
        self.with_pages(|pages| {
            for (i, b) in bytes.iter().enumerate() {
                let at = address + i as u64;
                let page = pages
                    .entry(at / PAGE_SIZE)
                    .or_insert_with(|| Box::new([0; PAGE]));
                page[(at % PAGE_SIZE) as usize] = *b;
            }
        });
    }

    /// Set entry `index` of the table in frame `table_frame` (for hand-built page tables).
    pub fn set_entry(&self, table_frame: u64, index: u64, value: u64) {
        self.write_physical(table_frame * PAGE_SIZE + index * 8, &value.to_le_bytes());
    }

    fn entry(&self, table_frame: u64, index: u64) -> u64 {
        let mut b = [0u8; 8];
        // A missing table page reads as empty entries.
        let _ = self.read_physical(table_frame * PAGE_SIZE + index * 8, &mut b);
        u64::from_le_bytes(b)
    }

    fn new_frame(&self) -> u64 {
        let mut next = self
            .next_frame
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let frame = *next;
        *next += 1;
        drop(next);
        self.with_pages(|p| {
            p.insert(frame, Box::new([0; PAGE]));
        });
        frame
    }

    /// The frame mapping `va`'s page, mapping a fresh writable one (and the tables on the
    /// way) if there is none.
    pub fn map(&self, va: u64) -> u64 {
        let mut table = self.identity.directory_table_base / PAGE_SIZE;
        for shift in [39u32, 30, 21, 12] {
            let index = (va >> shift) & 0x1FF;
            let e = self.entry(table, index);
            table = if e & bits::PRESENT == 0 {
                let frame = self.new_frame();
                self.set_entry(
                    table,
                    index,
                    (frame * PAGE_SIZE) | bits::PRESENT | bits::WRITE,
                );
                frame
            } else {
                (e & FRAME_MASK) / PAGE_SIZE
            };
        }
        table
    }

    /// Physical address of `va` if it is mapped (4 KiB pages only).
    #[must_use]
    pub fn translate(&self, va: u64) -> Option<u64> {
        let mut table = self.identity.directory_table_base / PAGE_SIZE;
        for shift in [39u32, 30, 21, 12] {
            let e = self.entry(table, (va >> shift) & 0x1FF);
            if e & bits::PRESENT == 0 {
                return None;
            }
            table = (e & FRAME_MASK) / PAGE_SIZE;
        }
        Some(table * PAGE_SIZE + va % PAGE_SIZE)
    }

    /// Write bytes at a virtual address, mapping pages as needed.
    pub fn write_virtual(&self, va: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let at = va + i as u64;
            let frame = self.map(at);
            self.write_physical(frame * PAGE_SIZE + at % PAGE_SIZE, &[*b]);
        }
    }
}

impl MemoryTarget {
    /// Write a little-endian u64 at a virtual address, mapping pages as needed.
    pub fn write_virtual_u64(&self, va: u64, value: u64) {
        self.write_virtual(va, &value.to_le_bytes());
    }
}

impl Target for MemoryTarget {
    fn identity(&self) -> &TargetIdentity {
        &self.identity
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FROZEN_CAPTURE
    }

    fn read_physical(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.with_pages(|pages| {
            for (i, b) in buf.iter_mut().enumerate() {
                let at = address + i as u64;
                let page = pages
                    .get(&(at / PAGE_SIZE))
                    .ok_or(ReadError::PageNotCaptured {
                        page: at & !(PAGE_SIZE - 1),
                    })?;
                *b = page[(at % PAGE_SIZE) as usize];
            }
            Ok(())
        })
    }

    fn processor_context(&self, processor: u32) -> Result<ProcessorContext, TargetError> {
        Err(TargetError::NoSuchProcessor {
            processor,
            count: 1,
        })
    }

    fn captured_pages(&self) -> Option<u64> {
        Some(self.with_pages(|p| p.len() as u64))
    }
}
