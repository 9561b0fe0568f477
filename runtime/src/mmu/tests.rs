//! Translation tests over hand-built page tables in an in-memory target.

use super::spec::bits;
use super::{AddressSpace, TranslateError, VirtualReadError, X64};
use crate::target::{MemoryTarget, Target};
use std::sync::Arc;

const P: u64 = bits::PRESENT | bits::WRITE;

/// Page tables rooted at pfn 1 mapping:
/// - 0x0000_7FFE_0000_0000 → 4 KiB page at pfn 0x50 (user),
/// - 0xFFFF_F800_0020_0000 → 2 MiB page at 0x4020_0000,
/// - 0xFFFF_C000_0000_0000 → 1 GiB page at 0x8000_0000,
/// - a transition, a prototype, an empty PTE and a PT page missing from the capture.
fn tables() -> Arc<dyn Target> {
    let m = MemoryTarget::x64(1);
    // 4 KiB path: PML4[0] -> PDPT pfn 2 -> [0x1FF] PD pfn 3 -> [0x1F0] PT pfn 4.
    let user_va: u64 = 0x0000_7FFE_0000_0000;
    let idx = |va: u64, shift: u32| (va >> shift) & 0x1FF;
    m.set_entry(1, idx(user_va, 39), 0x2000 | P | bits::USER);
    m.set_entry(2, idx(user_va, 30), 0x3000 | P | bits::USER);
    m.set_entry(3, idx(user_va, 21), 0x4000 | P | bits::USER);
    m.set_entry(4, idx(user_va, 12), 0x50000 | P | bits::USER);
    m.write_physical(0x50010, &0x1122_3344_5566_7788u64.to_le_bytes());
    // Neighbouring PTEs: transition, prototype, empty.
    m.set_entry(
        4,
        idx(user_va, 12) + 1,
        0x0000_0000_0006_0800 | bits::TRANSITION,
    );
    m.set_entry(
        4,
        idx(user_va, 12) + 2,
        0xFFFF_A000_1234_0000 | bits::PROTOTYPE,
    );
    m.set_entry(4, idx(user_va, 12) + 3, 0);
    // 2 MiB page.
    let large: u64 = 0xFFFF_F800_0020_0000;
    m.set_entry(1, idx(large, 39), 0x5000 | P);
    m.set_entry(5, idx(large, 30), 0x6000 | P);
    m.set_entry(6, idx(large, 21), 0x4020_0000 | P | bits::LARGE);
    // A PT whose page is not in the capture.
    m.set_entry(6, idx(large, 21) + 1, 0x7_7000 | P);
    // 1 GiB page.
    let huge: u64 = 0xFFFF_C000_0000_0000;
    m.set_entry(1, idx(huge, 39), 0x7000 | P);
    m.set_entry(7, idx(huge, 30), 0x8000_0000 | P | bits::LARGE);
    Arc::new(m)
}

#[test]
fn translates_4k_2m_and_1g_pages_with_their_sizes() {
    let space = AddressSpace::new(tables(), &X64, 0x1000);
    let t = space.translate(0x0000_7FFE_0000_0010).unwrap();
    assert_eq!((t.physical, t.page_size, t.user), (0x50010, 0x1000, true));
    let t = space.translate(0xFFFF_F800_0023_4567).unwrap();
    assert_eq!(
        (t.physical, t.page_size, t.user),
        (0x4023_4567, 0x20_0000, false)
    );
    let t = space.translate(0xFFFF_C000_1234_5678).unwrap();
    assert_eq!((t.physical, t.page_size), (0x9234_5678, 0x4000_0000));
    assert_eq!(t.page_base(), 0x8000_0000);
    assert_eq!(
        space.read_u64(0x0000_7FFE_0000_0010).unwrap(),
        0x1122_3344_5566_7788
    );
}

#[test]
fn failures_say_why_the_page_cannot_be_read() {
    let space = AddressSpace::new(tables(), &X64, 0x1000);
    let base = 0x0000_7FFE_0000_0000u64;
    assert_eq!(
        space.translate(base + 0x1000).unwrap_err(),
        TranslateError::Transition {
            va: base + 0x1000,
            entry: 0x6_0800 | bits::TRANSITION,
            frame: 0x6_0000
        }
    );
    assert!(matches!(
        space.translate(base + 0x2000).unwrap_err(),
        TranslateError::Prototype { .. }
    ));
    let err = space.translate(base + 0x3000).unwrap_err();
    assert_eq!(
        err,
        TranslateError::NotPresent {
            va: base + 0x3000,
            level: "PTE",
            entry: 0,
            entry_address: 0x4000 + (((base + 0x3000) >> 12) & 0x1FF) * 8
        }
    );
    // An upper level that is empty stops the walk there.
    let err = space.translate(0x0000_1000_0000_0000).unwrap_err();
    assert!(matches!(
        err,
        TranslateError::NotPresent { level: "PXE", .. }
    ));
    // The PT page of this address is not in the capture.
    let err = space.translate(0xFFFF_F800_0040_0000).unwrap_err();
    assert_eq!(
        err,
        TranslateError::TableNotCaptured {
            va: 0xFFFF_F800_0040_0000,
            level: "PTE",
            table_page: 0x7_7000
        }
    );
    assert_eq!(
        space.translate(0x0000_8000_0000_0000).unwrap_err(),
        TranslateError::NonCanonical {
            va: 0x0000_8000_0000_0000
        }
    );
    // A mapped page whose frame is not captured is a physical read error.
    let err = space.read_u64(0xFFFF_F800_0020_0000).unwrap_err();
    assert!(matches!(
        err,
        VirtualReadError::Physical {
            physical: 0x4020_0000,
            ..
        }
    ));
    assert_eq!(err.va(), 0xFFFF_F800_0020_0000);
}

#[test]
fn cache_serves_repeated_translations_and_partial_reads_stop_at_the_hole() {
    let space = AddressSpace::new(tables(), &X64, 0x1000);
    let va = 0x0000_7FFE_0000_0010;
    for _ in 0..3 {
        assert_eq!(space.physical_address(va).unwrap(), 0x50010);
    }
    assert_eq!(space.cache_stats(), (2, 1));
    space.flush_cache();
    assert_eq!(space.physical_address(va).unwrap(), 0x50010);
    assert_eq!(space.cache_stats(), (2, 2));
    // 0x20 bytes before the transition page, then nothing.
    let mut buf = [0u8; 0x40];
    assert_eq!(space.read_partial(0x0000_7FFE_0000_0FE0, &mut buf), 0x20);
}
