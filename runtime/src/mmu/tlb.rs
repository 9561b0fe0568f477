//! A small direct-mapped translation cache, like a processor's TLB.

const SLOTS: usize = 256;

#[derive(Clone, Copy)]
struct Slot {
    dtb: u64,
    virtual_page: u64,
    physical_page: u64,
    valid: bool,
}

/// Remembers recent 4 KiB-granular translations per (DTB, virtual page).
pub struct Tlb {
    slots: Box<[Slot; SLOTS]>,
    hits: u64,
    misses: u64,
}

impl Default for Tlb {
    fn default() -> Tlb {
        Tlb {
            slots: Box::new(
                [Slot {
                    dtb: 0,
                    virtual_page: 0,
                    physical_page: 0,
                    valid: false,
                }; SLOTS],
            ),
            hits: 0,
            misses: 0,
        }
    }
}

impl Tlb {
    fn slot_of(virtual_page: u64) -> usize {
        // Page numbers differ in their low bits first; fold in higher bits so that
        // addresses 1 MiB apart do not always collide.
        ((virtual_page ^ (virtual_page >> 8)) as usize) % SLOTS
    }

    /// Physical page for a virtual page, if cached.
    pub fn lookup(&mut self, dtb: u64, virtual_page: u64) -> Option<u64> {
        let slot = &self.slots[Self::slot_of(virtual_page)];
        if slot.valid && slot.dtb == dtb && slot.virtual_page == virtual_page {
            self.hits += 1;
            Some(slot.physical_page)
        } else {
            self.misses += 1;
            None
        }
    }

    pub fn insert(&mut self, dtb: u64, virtual_page: u64, physical_page: u64) {
        self.slots[Self::slot_of(virtual_page)] = Slot {
            dtb,
            virtual_page,
            physical_page,
            valid: true,
        };
    }

    /// Forget everything (a live target resumed, memory may have changed).
    pub fn flush(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.valid = false;
        }
    }

    /// (hits, misses) since creation.
    #[must_use]
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}
