//! `cargo fuzz`-free robustness: truncated and corrupted dumps give `Ok` or `Err`, never a panic,
//! and whatever opens keeps the reader's invariants.

mod common;

use common::{build, build_rdmp, put_u64, DTB_PFN};
use kds_crashdump::{off, CrashDump, DumpType, WriteKind, PAGE_SIZE};

/// Small dumps of every layout (small so that thousands of variants stay fast).
fn originals() -> Vec<(&'static str, Vec<u8>)> {
    let pfns: Vec<u64> = [1, 2, 3, 4, 0x10, 0x11, 0x3f, 0x40, DTB_PFN, 0x200, 0x201].to_vec();
    vec![
        ("full", build(WriteKind::Full, &pfns)),
        (
            "bitmap",
            build(
                WriteKind::Bitmap {
                    dump_type: DumpType::BitmapFull,
                },
                &pfns,
            ),
        ),
        (
            "rdmp",
            build_rdmp(DumpType::CompleteMemory, &[(1, 4), (0x10, 2), (0x3f, 2)]),
        ),
    ]
}

#[derive(Default, Debug)]
struct Outcomes {
    opened: usize,
    refused: usize,
}

/// Opens `bytes` and, if it opens, checks that every answer of the reader is consistent.
fn check(bytes: Vec<u8>, outcomes: &mut Outcomes) {
    let len = bytes.len() as u64;
    let Ok(dump) = CrashDump::from_bytes(bytes) else {
        outcomes.refused += 1;
        return;
    };
    outcomes.opened += 1;
    let pfns: Vec<u64> = dump.present_pfns().collect();
    assert_eq!(pfns.len() as u64, dump.present_page_count());
    assert!(pfns.windows(2).all(|w| w[0] < w[1]), "pfns ascend");
    assert_eq!(dump.highest_pfn(), pfns.last().copied());
    for &pfn in &pfns {
        let offset = dump.page_offset(pfn).expect("a present page has an offset");
        assert!(
            offset + PAGE_SIZE as u64 <= len,
            "page {pfn:#x} inside the file"
        );
        assert_eq!(dump.page(pfn).map(<[u8]>::len), Some(PAGE_SIZE));
    }
    let mut buf = [0u8; 0x30];
    for addr in [0, 0xff8, 0x3_fff0, 0x10_0000, u64::MAX - 8] {
        match dump.read_physical(addr, &mut buf) {
            Ok(()) => assert!(dump.page(addr / 0x1000).is_some()),
            Err(missing) => assert!(dump.page(missing.pfn).is_none()),
        }
    }
}

#[test]
fn truncation_at_every_length_never_panics() {
    for (name, original) in originals() {
        let mut outcomes = Outcomes::default();
        let lengths = (0..0x2100).chain((0x2100..=original.len()).step_by(0x3f));
        for len in lengths {
            check(original[..len].to_vec(), &mut outcomes);
        }
        check(original.clone(), &mut outcomes);
        // Only the complete file (and, for layouts with spare room after the pages, nothing
        // shorter) opens: every page the header describes must be in the file.
        assert_eq!(outcomes.opened, 1, "{name}: {outcomes:?}");
        assert!(outcomes.refused > 0x2100, "{name}: {outcomes:?}");
    }
}

#[test]
fn flipped_header_bytes_never_panic() {
    for (name, original) in originals() {
        let mut outcomes = Outcomes::default();
        let end = (off::BITMAP + 0x48).min(original.len());
        for at in 0..end {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bytes = original.clone();
                bytes[at] ^= mask;
                check(bytes, &mut outcomes);
            }
        }
        // Flips in unused header bytes still open; flips in signatures and layout fields don't.
        assert!(
            outcomes.opened > 0 && outcomes.refused > 0,
            "{name}: {outcomes:?}"
        );
    }
}

#[test]
fn extreme_field_values_never_panic() {
    let fields = [
        off::NUMBER_OF_RUNS,
        off::NUMBER_OF_PAGES,
        off::RUNS,
        off::RUNS + 8,
        off::RUNS + 16,
        off::RUNS + 24,
        off::DUMP_TYPE,
        off::BITMAP_FIRST_PAGE,
        off::BITMAP_TOTAL_PRESENT_PAGES,
        off::BITMAP_PAGES,
        off::RDMP_METADATA_SIZE,
        off::RDMP_FIRST_PAGE,
        off::RDMP_TOTAL_PAGES,
        off::RDMP_RANGES,
        off::RDMP_RANGES + 8,
    ];
    for (name, original) in originals() {
        let len = original.len() as u64;
        let values = [
            0,
            1,
            2,
            5,
            6,
            8,
            0xA,
            42,
            43,
            0x1000,
            0x2000,
            0x3000,
            len - 0x1000,
            len,
            len + 1,
            u64::from(u32::MAX),
            1 << 52,
            i64::MAX as u64,
            u64::MAX - 0xfff,
            u64::MAX,
        ];
        let mut outcomes = Outcomes::default();
        for &at in &fields {
            for &v in &values {
                let mut bytes = original.clone();
                put_u64(&mut bytes, at, v);
                check(bytes, &mut outcomes);
            }
        }
        assert!(
            outcomes.opened > 0 && outcomes.refused > 0,
            "{name}: {outcomes:?}"
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, original) in originals() {
        let mut outcomes = Outcomes::default();
        for _ in 0..3000 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 6 {
                // Mostly in the headers and the bitmap, sometimes anywhere.
                let span = if next() % 4 == 0 { bytes.len() } else { 0x2100 };
                let at = (next() % span as u64) as usize;
                bytes[at] = next() as u8;
            }
            if next() % 5 == 0 {
                let keep = (next() % bytes.len() as u64) as usize;
                bytes.truncate(keep);
            }
            check(bytes, &mut outcomes);
        }
        assert_eq!(outcomes.opened + outcomes.refused, 3000, "{name}");
        assert!(
            outcomes.opened > 0 && outcomes.refused > 0,
            "{name}: {outcomes:?}"
        );
    }
}
