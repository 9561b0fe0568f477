//! Virtual-to-physical translation: paging modes as data ([`spec`]), one walker ([`walk`]),
//! a small cache ([`tlb`]) and [`AddressSpace`], which reads virtual memory of a target.

pub mod spec;
mod tlb;
mod walk;

pub use spec::{PagingSpec, X64, X86, X86_PAE};
pub use tlb::Tlb;
pub use walk::{translate, TranslateError, Translation};

use crate::target::{ReadError, Target, PAGE_SIZE};
use std::sync::{Arc, Mutex, PoisonError};
use thiserror::Error;

/// Why a virtual read failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VirtualReadError {
    #[error(transparent)]
    Translate(#[from] TranslateError),
    #[error(
        "virtual address {va:#x} maps to physical {physical:#x}, which cannot be read: {source}"
    )]
    Physical {
        va: u64,
        physical: u64,
        source: ReadError,
    },
}

impl VirtualReadError {
    /// The virtual address the read stopped at.
    #[must_use]
    pub fn va(&self) -> u64 {
        match self {
            VirtualReadError::Physical { va, .. } => *va,
            VirtualReadError::Translate(t) => match t {
                TranslateError::NonCanonical { va }
                | TranslateError::NotPresent { va, .. }
                | TranslateError::Transition { va, .. }
                | TranslateError::Prototype { va, .. }
                | TranslateError::TableNotCaptured { va, .. }
                | TranslateError::TableReadFailed { va, .. } => *va,
            },
        }
    }
}

/// The virtual address space of one directory table base on one target.
pub struct AddressSpace {
    target: Arc<dyn Target>,
    spec: &'static PagingSpec,
    dtb: u64,
    tlb: Mutex<Tlb>,
}

impl AddressSpace {
    #[must_use]
    pub fn new(target: Arc<dyn Target>, spec: &'static PagingSpec, dtb: u64) -> AddressSpace {
        AddressSpace {
            target,
            spec,
            dtb,
            tlb: Mutex::new(Tlb::default()),
        }
    }

    /// Same target and paging mode, another page-table root (a process's DirBase).
    #[must_use]
    pub fn with_dtb(&self, dtb: u64) -> AddressSpace {
        AddressSpace::new(Arc::clone(&self.target), self.spec, dtb)
    }

    #[must_use]
    pub fn dtb(&self) -> u64 {
        self.dtb
    }

    #[must_use]
    pub fn spec(&self) -> &'static PagingSpec {
        self.spec
    }

    #[must_use]
    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    /// Full page-table walk, uncached, with the details of the mapping.
    pub fn translate(&self, va: u64) -> Result<Translation, TranslateError> {
        translate(self.target.as_ref(), self.spec, self.dtb, va)
    }

    /// Physical address of `va`, through the cache.
    pub fn physical_address(&self, va: u64) -> Result<u64, TranslateError> {
        let virtual_page = va / PAGE_SIZE;
        let offset = va % PAGE_SIZE;
        let mut tlb = self.tlb.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(page) = tlb.lookup(self.dtb, virtual_page) {
            return Ok(page * PAGE_SIZE + offset);
        }
        let t = self.translate(va)?;
        tlb.insert(self.dtb, virtual_page, t.physical / PAGE_SIZE);
        Ok(t.physical)
    }

    /// Fill `buf` from virtual memory; fails at the first byte that cannot be read.
    pub fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), VirtualReadError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = va.wrapping_add(done as u64);
            let in_page = (PAGE_SIZE - at % PAGE_SIZE) as usize;
            let n = in_page.min(buf.len() - done);
            let physical = self.physical_address(at)?;
            self.target
                .read_physical(physical, &mut buf[done..done + n])
                .map_err(|source| VirtualReadError::Physical {
                    va: at,
                    physical,
                    source,
                })?;
            done += n;
        }
        Ok(())
    }

    /// Read as much as possible from `va`; returns how many bytes were read before the first
    /// unreadable page.
    pub fn read_partial(&self, va: u64, buf: &mut [u8]) -> usize {
        let mut done = 0usize;
        while done < buf.len() {
            let at = va.wrapping_add(done as u64);
            let n = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(buf.len() - done);
            if self.read(at, &mut buf[done..done + n]).is_err() {
                break;
            }
            done += n;
        }
        done
    }

    pub fn read_u8(&self, va: u64) -> Result<u8, VirtualReadError> {
        let mut b = [0u8; 1];
        self.read(va, &mut b)?;
        Ok(b[0])
    }

    pub fn read_u16(&self, va: u64) -> Result<u16, VirtualReadError> {
        let mut b = [0u8; 2];
        self.read(va, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn read_u32(&self, va: u64) -> Result<u32, VirtualReadError> {
        let mut b = [0u8; 4];
        self.read(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn read_u64(&self, va: u64) -> Result<u64, VirtualReadError> {
        let mut b = [0u8; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Read a pointer of this address space's width.
    pub fn read_pointer(&self, va: u64) -> Result<u64, VirtualReadError> {
        if self.spec.pointer_size == 8 {
            self.read_u64(va)
        } else {
            Ok(u64::from(self.read_u32(va)?))
        }
    }

    /// Cache statistics (hits, misses).
    #[must_use]
    pub fn cache_stats(&self) -> (u64, u64) {
        self.tlb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats()
    }

    /// Forget cached translations.
    pub fn flush_cache(&self) {
        self.tlb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
    }
}

#[cfg(test)]
mod tests;
