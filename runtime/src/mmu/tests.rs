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

/// 32-bit x86 PAE: a PDPT 32 bytes into a page (CR3 keeps those low bits), PDPTEs with only a
/// present bit, a 4 KiB user page and a 2 MiB kernel page.
#[test]
fn pae_walks_a_32_byte_aligned_pdpt_and_ignores_pdpte_permission_bits() {
    use super::X86_PAE;
    let m = MemoryTarget::x64(1);
    let pdpt = 0x1020; // CR3 of a process: the PDPT sits 0x20 into pfn 1.
    let entry = |at: u64, value: u64| m.write_physical(at, &value.to_le_bytes());
    // User VA 0x0041_2345: PDPTE 0 -> PD pfn 2 [2] -> PT pfn 3 [0x12] -> pfn 0x50.
    entry(pdpt, 0x2000 | bits::PRESENT);
    entry(0x2000 + 2 * 8, 0x3000 | P | bits::USER);
    entry(0x3000 + 0x12 * 8, 0x50000 | P | bits::USER);
    m.write_physical(0x50345, &0xCAFE_F00Du32.to_le_bytes());
    // Kernel VA 0x8240_1234: PDPTE 2 -> PD pfn 4 [0x12] large -> 0x0260_0000.
    entry(pdpt + 2 * 8, 0x4000 | bits::PRESENT);
    entry(0x4000 + 0x12 * 8, 0x0260_0000 | P | bits::LARGE);
    m.write_physical(0x0260_1234, &0x1234_5678u32.to_le_bytes());
    let target: Arc<dyn Target> = Arc::new(m);
    let space = AddressSpace::new(target, &X86_PAE, pdpt);

    let user = space.translate(0x0041_2345).expect("user page");
    assert_eq!(user.physical, 0x50345);
    assert_eq!(user.page_size, 0x1000);
    assert!(user.user && user.writable, "{user:?}");
    assert_eq!(space.read_u32(0x0041_2345).unwrap(), 0xCAFE_F00D);

    let kernel = space.translate(0x8240_1234).expect("kernel page");
    assert_eq!(kernel.physical, 0x0260_1234);
    assert_eq!(kernel.page_size, 0x20_0000);
    assert!(!kernel.user && kernel.writable, "{kernel:?}");
    assert_eq!(space.read_pointer(0x8240_1234).unwrap(), 0x1234_5678);

    // PDPTE 1 is empty; a 64-bit address is not a 32-bit one.
    assert!(matches!(
        space.translate(0x4000_0000),
        Err(TranslateError::NotPresent { level: "PDPTE", .. })
    ));
    assert!(matches!(
        space.translate(0xFFFF_FFFF_8240_1234),
        Err(TranslateError::NonCanonical { .. })
    ));
}

/// 32-bit x86 without PAE: 4-byte entries, 1024 per table, 4 MiB large pages.
#[test]
fn non_pae_walks_two_levels_of_4_byte_entries_with_4m_pages() {
    use super::X86;
    let m = MemoryTarget::x64(1);
    let entry = |at: u64, value: u32| m.write_physical(at, &value.to_le_bytes());
    // 0x7FFD_E123: PDE 0x1FF -> PT pfn 2 [0x3DE] -> pfn 0x60.
    entry(0x1000 + 0x1FF * 4, 0x2000 | P as u32 | bits::USER as u32);
    entry(0x2000 + 0x3DE * 4, 0x60000 | P as u32 | bits::USER as u32);
    m.write_physical(0x60123, &0xAABB_CCDDu32.to_le_bytes());
    // 0x8280_0010: PDE 0x20A large -> 0x0280_0000 (4 MiB).
    entry(
        0x1000 + 0x20A * 4,
        0x0280_0000 | P as u32 | bits::LARGE as u32,
    );
    let target: Arc<dyn Target> = Arc::new(m);
    let space = AddressSpace::new(target, &X86, 0x1000);
    let user = space.translate(0x7FFD_E123).expect("user page");
    assert_eq!(user.physical, 0x60123);
    assert_eq!(space.read_pointer(0x7FFD_E123).unwrap(), 0xAABB_CCDD);
    let kernel = space.translate(0x8280_0010).expect("4 MiB page");
    assert_eq!(kernel.physical, 0x0280_0010);
    assert_eq!(kernel.page_size, 0x40_0000);
}

#[test]
fn x86_addresses_are_32_bits_and_never_sign_extended() {
    use super::{X86, X86_PAE};
    for spec in [&X86, &X86_PAE] {
        assert!(spec.is_canonical(0x8000_0000));
        assert!(spec.is_canonical(0xFFFF_FFFF));
        assert!(!spec.is_canonical(0x1_0000_0000));
        // A sign-extended 32-bit address (KDBG, KD packets) comes back to 32 bits.
        assert_eq!(spec.canonical(0xFFFF_FFFF_8240_0000), 0x8240_0000);
        assert_eq!(spec.canonical(0x8240_0000), 0x8240_0000);
    }
    assert_eq!(X64.canonical(0x0000_8000_0000_0000), 0xFFFF_8000_0000_0000);
}
