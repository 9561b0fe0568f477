//! Handle-table walks over hand-built tables in both entry formats, with the layouts of the
//! real Windows 7 and Windows 10 x64 tables (offsets and bitfields as their ISF files give them).

use super::*;
use crate::mmu::X64;
use crate::symbols::parse_isf;
use crate::target::{MemoryTarget, Target};
use std::sync::Arc;

const PML4_PFN: u64 = 1;
const TABLE: u64 = 0xFFFF_C10A_0000_0100;
const PAGES: u64 = 0xFFFF_C10A_0010_0000;
const HEADERS: u64 = 0xFFFF_C10A_0800_0000;

const BASE_TYPES: &str = r#""base_types": {
  "pointer": {"kind": "int", "size": 8, "signed": false},
  "void": {"kind": "void", "size": 0, "signed": true},
  "long": {"kind": "int", "size": 4, "signed": true},
  "unsigned long": {"kind": "int", "size": 4, "signed": false},
  "long long": {"kind": "int", "size": 8, "signed": true},
  "unsigned long long": {"kind": "int", "size": 8, "signed": false}
 }"#;

/// `_HANDLE_TABLE` / `_HANDLE_TABLE_ENTRY` of Windows 10 19041 x64 (the fields the walk reads).
fn modern_table() -> SymbolTable {
    let json = format!(
        r#"{{"metadata": {{}}, {BASE_TYPES}, "user_types": {{
  "_HANDLE_TABLE": {{"kind": "struct", "size": 128, "fields": {{
   "NextHandleNeedingPool": {{"offset": 0, "type": {{"kind": "base", "name": "unsigned long"}}}},
   "TableCode": {{"offset": 8, "type": {{"kind": "base", "name": "unsigned long long"}}}}}}}},
  "_HANDLE_TABLE_ENTRY": {{"kind": "union", "size": 16, "fields": {{
   "LowValue": {{"offset": 0, "type": {{"kind": "base", "name": "long long"}}}},
   "Unlocked": {{"offset": 0, "type": {{"kind": "bitfield", "bit_position": 0, "bit_length": 1, "type": {{"kind": "base", "name": "unsigned long long"}}}}}},
   "ObjectPointerBits": {{"offset": 0, "type": {{"kind": "bitfield", "bit_position": 20, "bit_length": 44, "type": {{"kind": "base", "name": "unsigned long long"}}}}}},
   "NextFreeHandleEntry": {{"offset": 8, "type": {{"kind": "pointer", "subtype": {{"kind": "union", "name": "_HANDLE_TABLE_ENTRY"}}}}}}}}}}
 }}, "enums": {{}}, "symbols": {{}}}}"#
    );
    parse_isf(json.as_bytes(), "win10").expect("table parses")
}

/// The same of Windows 7 SP1 x64: a pointer-style entry and no `NextHandleNeedingPool` first.
fn win7_table() -> SymbolTable {
    let json = format!(
        r#"{{"metadata": {{}}, {BASE_TYPES}, "user_types": {{
  "_HANDLE_TABLE": {{"kind": "struct", "size": 104, "fields": {{
   "TableCode": {{"offset": 0, "type": {{"kind": "base", "name": "unsigned long long"}}}},
   "HandleCount": {{"offset": 88, "type": {{"kind": "base", "name": "unsigned long"}}}},
   "NextHandleNeedingPool": {{"offset": 92, "type": {{"kind": "base", "name": "unsigned long"}}}}}}}},
  "_HANDLE_TABLE_ENTRY": {{"kind": "union", "size": 16, "fields": {{
   "Object": {{"offset": 0, "type": {{"kind": "pointer", "subtype": {{"kind": "base", "name": "void"}}}}}},
   "GrantedAccess": {{"offset": 8, "type": {{"kind": "base", "name": "unsigned long"}}}},
   "NextFreeTableEntry": {{"offset": 8, "type": {{"kind": "base", "name": "unsigned long"}}}}}}}}
 }}, "enums": {{}}, "symbols": {{}}}}"#
    );
    parse_isf(json.as_bytes(), "win7").expect("table parses")
}

fn space(m: &Arc<MemoryTarget>) -> AddressSpace {
    let target: Arc<dyn Target> = m.clone();
    AddressSpace::new(target, &X64, PML4_PFN * PAGE_SIZE)
}

/// Writes tables the way the kernel does, in either format.
struct Builder {
    m: Arc<MemoryTarget>,
    modern: bool,
    next_page: u64,
}

impl Builder {
    fn new(modern: bool) -> Builder {
        Builder {
            m: Arc::new(MemoryTarget::x64(PML4_PFN)),
            modern,
            next_page: PAGES,
        }
    }

    fn page(&mut self) -> u64 {
        let at = self.next_page;
        self.next_page += 2 * PAGE_SIZE; // a gap between pages
        self.m.write_virtual(at, &[0; PAGE_SIZE as usize]);
        at
    }

    /// A low-level page; `used[i]` says whether entry `i + 1` holds a handle. Entry 0 is the
    /// reserved one; free entries link to the next free entry of the page.
    fn low_page(&mut self, first_handle: u64, used: &[bool]) -> u64 {
        let page = self.page();
        self.m.write_virtual_u64(page + 8, (-2i64) as u64);
        let mut previous_free: Option<u64> = None;
        for (i, &u) in used.iter().enumerate() {
            let index = i as u64 + 1;
            let entry = page + index * 16;
            if u {
                let header = HEADERS + (first_handle + index) * 0x40;
                let low = if self.modern {
                    ((header & 0xFFFF_FFFF_FFFF) >> 4) << 20 | 1
                } else {
                    header | 1
                };
                self.m.write_virtual_u64(entry, low);
                self.m.write_virtual_u64(entry + 8, 0x1F_0003);
            } else {
                if let Some(p) = previous_free {
                    let link = if self.modern {
                        entry
                    } else {
                        (first_handle + index) * 4
                    };
                    self.m.write_virtual_u64(p + 8, link);
                }
                previous_free = Some(entry);
            }
        }
        page
    }

    fn table(&self, code: u64, next_handle_needing_pool: u32) {
        let (code_at, next_at) = if self.modern { (8, 0) } else { (0, 92) };
        self.m.write_virtual_u64(TABLE + code_at, code);
        self.m
            .write_virtual(TABLE + next_at, &next_handle_needing_pool.to_le_bytes());
    }

    fn walk(&self) -> (Result<HandleTableWalk, HandleTableError>, Vec<HandleEntry>) {
        let table = if self.modern {
            modern_table()
        } else {
            win7_table()
        };
        let layout = HandleTableLayout::from_table(&table).expect("layout");
        let mut seen = Vec::new();
        let walk = walk_handle_table(&space(&self.m), &layout, TABLE, |e| seen.push(*e));
        (walk, seen)
    }
}

fn pattern(n: usize, every: usize) -> Vec<bool> {
    (0..n).map(|i| i % every != every - 1).collect()
}

#[test]
fn level_zero_counts_in_use_entries_and_decodes_headers() {
    for modern in [true, false] {
        let mut b = Builder::new(modern);
        let used = pattern(255, 5); // 204 in use, 51 free
        let page = b.low_page(0, &used);
        b.table(page, 0x400);
        let (walk, seen) = b.walk();
        let walk = walk.expect("walks");
        assert_eq!(walk.levels, 0);
        assert_eq!(walk.pages, 1);
        assert_eq!(walk.in_use, 204, "modern={modern}");
        assert_eq!(walk.free, 51);
        assert_eq!(seen.len(), 204);
        assert_eq!(seen[0].handle, 4);
        assert_eq!(seen[0].entry, page + 16);
        assert_eq!(seen[0].object_header, HEADERS + 0x40);
        // Entry 5 (handle 0x14) is free: the next in use is entry 6.
        assert_eq!(seen[4].handle, 0x18);
        assert_eq!(seen[4].object_header, HEADERS + 6 * 0x40);
    }
}

#[test]
fn level_one_numbers_handles_across_pages() {
    for modern in [true, false] {
        let mut b = Builder::new(modern);
        let mid = b.page();
        let p0 = b.low_page(0, &pattern(255, 255)); // 254 in use
        let p1 = b.low_page(256, &pattern(255, 3)); // 170 in use
        let p2 = b.low_page(512, &[true, true, false, true]); // 3 in use, the rest zero
        for (i, p) in [p0, p1, p2].into_iter().enumerate() {
            b.m.write_virtual_u64(mid + i as u64 * 8, p);
        }
        b.table(mid | 1, 3 * 0x400);
        let (walk, seen) = b.walk();
        let walk = walk.expect("walks");
        assert_eq!(walk.levels, 1);
        assert_eq!(walk.pages, 3);
        assert_eq!(walk.in_use, 254 + 170 + 3, "modern={modern}");
        assert_eq!(walk.free, 3 * 255 - walk.in_use);
        // The first handle of the second page is 256 * 4.
        let second = seen
            .iter()
            .find(|e| e.entry >= p1 && e.entry < p1 + PAGE_SIZE);
        assert_eq!(second.map(|e| e.handle), Some(0x404));
        assert_eq!(seen.last().map(|e| e.handle), Some((512 + 4) * 4));
        assert!(seen.windows(2).all(|w| w[0].handle < w[1].handle));
    }
}

#[test]
fn next_handle_needing_pool_bounds_the_walk() {
    let mut b = Builder::new(true);
    let mid = b.page();
    let p0 = b.low_page(0, &pattern(255, 255));
    let p1 = b.low_page(256, &pattern(255, 255));
    b.m.write_virtual_u64(mid, p0);
    b.m.write_virtual_u64(mid + 8, p1);
    // Only the first page is backed: the second pointer is stale and not followed.
    b.table(mid | 1, 0x400);
    let (walk, _) = b.walk();
    assert_eq!(walk.expect("walks").in_use, 254);
}

#[test]
fn a_missing_page_makes_the_count_unknown() {
    let mut b = Builder::new(true);
    let mid = b.page();
    let p0 = b.low_page(0, &pattern(255, 7));
    b.m.write_virtual_u64(mid, p0);
    // The second page is mapped nowhere.
    b.m.write_virtual_u64(mid + 8, 0xFFFF_C10A_7777_0000);
    b.table(mid | 1, 0x800);
    let (walk, _) = b.walk();
    match walk {
        Err(HandleTableError::Read { what, address, .. }) => {
            assert_eq!(what, "a page of handle entries");
            assert_eq!(address, 0xFFFF_C10A_7777_0000);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    // An unreadable table is unknown too.
    let b = Builder::new(false);
    let layout = HandleTableLayout::from_table(&win7_table()).expect("layout");
    assert!(count_in_use(&space(&b.m), &layout, TABLE).is_err());
}

#[test]
fn level_three_does_not_exist() {
    let mut b = Builder::new(true);
    let page = b.page();
    b.table(page | 3, 0x400);
    let (walk, _) = b.walk();
    assert!(matches!(walk, Err(HandleTableError::BadLevel { .. })));
}

#[test]
fn layouts_come_from_the_table() {
    let modern = HandleTableLayout::from_table(&modern_table()).expect("layout");
    assert_eq!(modern.table_code, 8);
    assert_eq!(modern.next_handle_needing_pool, Some(0));
    assert!(matches!(
        modern.object,
        ObjectWord::Bits(Slot {
            position: 20,
            length: 44,
            ..
        })
    ));
    let old = HandleTableLayout::from_table(&win7_table()).expect("layout");
    assert_eq!(old.table_code, 0);
    assert!(matches!(
        old.object,
        ObjectWord::Pointer(Slot { size: 8, .. })
    ));
    assert_eq!(old.free_link.map(|s| s.signature()), Some(0xFFFF_FFFE));
}

/// A Windows 7 x86-style table: 4-byte pointers, `TableCode` a 4-byte ULONG_PTR directly
/// followed by another field, 8-byte entries with `Object` at 0.
fn x86_table() -> SymbolTable {
    let json = r#"{"metadata": {}, "base_types": {
  "pointer": {"kind": "int", "size": 4, "signed": false},
  "void": {"kind": "void", "size": 0, "signed": true},
  "unsigned long": {"kind": "int", "size": 4, "signed": false}
 }, "user_types": {
  "_HANDLE_TABLE": {"kind": "struct", "size": 60, "fields": {
   "TableCode": {"offset": 0, "type": {"kind": "base", "name": "unsigned long"}},
   "QuotaProcess": {"offset": 4, "type": {"kind": "pointer", "subtype": {"kind": "base", "name": "void"}}},
   "NextHandleNeedingPool": {"offset": 56, "type": {"kind": "base", "name": "unsigned long"}}}},
  "_HANDLE_TABLE_ENTRY": {"kind": "union", "size": 8, "fields": {
   "Object": {"offset": 0, "type": {"kind": "pointer", "subtype": {"kind": "base", "name": "void"}}},
   "GrantedAccess": {"offset": 4, "type": {"kind": "base", "name": "unsigned long"}},
   "NextFreeTableEntry": {"offset": 4, "type": {"kind": "base", "name": "unsigned long"}}}}
 }, "enums": {}, "symbols": {}}"#;
    parse_isf(json.as_bytes(), "win7-x86").expect("table parses")
}

#[test]
fn an_x86_table_code_is_read_at_pointer_width() {
    use crate::mmu::X86;
    let m = MemoryTarget::x64(3);
    // Non-PAE: directory frame 3, page table frame 0x20 for 0x8800_0000..0x883F_FFFF.
    let map = |va: u64, frame: u64| {
        m.write_physical(3 * PAGE_SIZE + (va >> 22) * 4, &(0x20003u32).to_le_bytes());
        let pte = ((frame * PAGE_SIZE) as u32) | 3;
        m.write_physical(0x20000 + ((va >> 12) & 0x3FF) * 4, &pte.to_le_bytes());
    };
    let (table, page) = (0x8800_0100u64, 0x8800_1000u64);
    map(table, 0x40);
    map(page, 0x41);
    let mut header = vec![0u8; 60];
    header[0..4].copy_from_slice(&(page as u32).to_le_bytes());
    // QuotaProcess right after TableCode: a 64-bit read would take it as the high half.
    header[4..8].copy_from_slice(&0x8123_4560u32.to_le_bytes());
    header[56..60].copy_from_slice(&16u32.to_le_bytes());
    m.write_physical(0x40 * PAGE_SIZE + 0x100, &header);
    let mut entries = vec![0u8; 32];
    entries[8..12].copy_from_slice(&(0x8500_0018u32 | 1).to_le_bytes());
    entries[24..28].copy_from_slice(&0x8500_0040u32.to_le_bytes());
    m.write_physical(0x41 * PAGE_SIZE, &entries);
    let target: Arc<dyn Target> = Arc::new(m);
    let space = AddressSpace::new(target, &X86, 3 * PAGE_SIZE);
    let layout = HandleTableLayout::from_table(&x86_table()).unwrap();
    let mut seen = Vec::new();
    let walk = walk_handle_table(&space, &layout, table, |e| {
        seen.push((e.handle, e.object_header));
    })
    .unwrap();
    assert_eq!(walk.levels, 0);
    assert_eq!(seen, vec![(4, 0x8500_0018), (0xC, 0x8500_0040)]);
}
