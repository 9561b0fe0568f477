use super::*;
use crate::target::MemoryTarget;

const PML4_FRAME: u64 = 0x1AA;
const DTB: u64 = PML4_FRAME * PAGE_SIZE;
const GUID: &str = "68A17FAF3012B7846079AEECDBE0A583";
const NT_BASE: u64 = 0xFFFF_F800_0240_0000;

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A two-page PE32+ image: headers, then a debug directory with one CodeView entry naming
/// `pdb` at rva 0x1040.
fn image(pdb: &str) -> Vec<u8> {
    let mut img = vec![0u8; 0x2000];
    img[0..2].copy_from_slice(b"MZ");
    put32(&mut img, 0x3c, 0x80);
    img[0x80..0x84].copy_from_slice(b"PE\0\0");
    let fh = 0x84;
    put16(&mut img, fh, crate::pe::MACHINE_AMD64);
    put16(&mut img, fh + 16, 240);
    let opt = fh + 20;
    put16(&mut img, opt, 0x20b);
    put64(&mut img, opt + 24, NT_BASE);
    put32(&mut img, opt + 56, 0x2000);
    put32(&mut img, opt + 60, 0x400);
    let dirs = opt + 112;
    put32(&mut img, dirs - 4, 16);
    put32(&mut img, dirs + 6 * 8, 0x1000);
    put32(&mut img, dirs + 6 * 8 + 4, 28);
    put32(&mut img, 0x1000 + 12, 2);
    let mut record = b"RSDS".to_vec();
    record.extend_from_slice(&GUID.parse::<crate::symbols::Guid>().unwrap().to_le_bytes());
    record.extend_from_slice(&2u32.to_le_bytes());
    record.extend_from_slice(pdb.as_bytes());
    record.push(0);
    put32(&mut img, 0x1000 + 16, record.len() as u32);
    put32(&mut img, 0x1000 + 20, 0x1040);
    img[0x1040..0x1040 + record.len()].copy_from_slice(&record);
    img
}

/// A machine whose PML4 maps itself at `self_map` and has three other kernel slots mapped.
fn machine(self_map: u64) -> MemoryTarget {
    let m = MemoryTarget::x64(PML4_FRAME);
    m.set_entry(
        PML4_FRAME,
        self_map,
        DTB | bits::PRESENT | bits::WRITE | 0x60 | bits::NO_EXECUTE,
    );
    for va in [
        0xFFFF_F780_0000_0000u64,
        0xFFFF_FA80_0000_0000,
        0xFFFF_FFFF_FFC0_0000,
    ] {
        m.write_virtual(va, &[1]);
    }
    m
}

fn start_block(m: &MemoryTarget, at: u64, cr3: u64) {
    let mut page = vec![0u8; 0x1000];
    page[0] = 0xE9;
    put16(&mut page, 1, 0x064D);
    put32(&mut page, 4, 1);
    put64(&mut page, 0x70, 0xFFFF_F800_0260_1234);
    put64(&mut page, 0x90, 0x8005_0033); // CR0
    put64(&mut page, 0x98, 0); // CR2
    put64(&mut page, 0xA0, cr3);
    put64(&mut page, 0xA8, 0x0035_06F8); // CR4
    m.write_physical(at, &page);
}

fn arc(m: MemoryTarget) -> Arc<dyn Target> {
    Arc::new(m)
}

#[test]
fn dtb_comes_from_the_processor_start_block() {
    let m = machine(0x1ED);
    start_block(&m, 0x9F000, DTB);
    let found = find_dtb(&m, &DiscoveryLimits::default()).unwrap();
    assert_eq!(found.dtb, DTB);
    assert_eq!(found.self_map_index, 0x1ED);
    assert_eq!(
        found.method,
        DtbMethod::ProcessorStartBlock {
            block: 0x9F000,
            slot: 0xA0
        }
    );
    assert_eq!(
        found.detail,
        "DTB 0x1aa000 from the processor start block at 0x9f000 (slot 0xa0), self-map index 0x1ed"
    );
}

#[test]
fn a_cr3_with_pcid_bits_is_masked_to_its_frame() {
    let m = machine(0x1ED);
    start_block(&m, 0x9F000, DTB | 0x5);
    let found = find_dtb(&m, &DiscoveryLimits::default()).unwrap();
    assert_eq!(found.dtb, DTB);
    assert!(matches!(
        found.method,
        DtbMethod::ProcessorStartBlock { slot: 0xA0, .. }
    ));
}

#[test]
fn a_start_block_with_no_valid_cr3_falls_back_to_the_pml4_scan() {
    let m = machine(0x1A3);
    // A block whose CR3 slot names a page that is no PML4.
    start_block(&m, 0x9F000, 0x5000);
    m.write_physical(0x5000, &[0u8; 8]);
    let found = find_dtb(&m, &DiscoveryLimits::default()).unwrap();
    assert_eq!(found.dtb, DTB);
    assert_eq!(found.self_map_index, 0x1A3);
    let DtbMethod::Pml4Scan { pages_scanned } = found.method else {
        panic!("{found:?}");
    };
    assert_eq!(pages_scanned, PML4_FRAME + 1);
    assert!(found
        .detail
        .starts_with("DTB 0x1aa000 from a scan for a self-mapped PML4"));
}

#[test]
fn the_scan_skips_self_references_without_a_kernel_half() {
    let m = machine(0x1ED);
    // Frame 0x50 references itself but maps nothing else: not a PML4.
    m.set_entry(0x50, 0x100, 0x50000 | bits::PRESENT | bits::WRITE);
    // Frame 0x60 maps itself with the user bit and has enough entries: rejected too.
    m.set_entry(
        0x60,
        0x1ED,
        0x60000 | bits::PRESENT | bits::WRITE | bits::USER,
    );
    for i in 0x1F0..0x1F4 {
        m.set_entry(0x60, i, 0x11000 | bits::PRESENT | bits::WRITE);
    }
    assert_eq!(validate_pml4(&m, 0x50000), None);
    assert_eq!(validate_pml4(&m, 0x60000), None);
    assert_eq!(validate_pml4(&m, DTB), Some(0x1ED));
    assert_eq!(validate_pml4(&m, DTB + 8), None);
    let found = find_dtb(&m, &DiscoveryLimits::default()).unwrap();
    assert_eq!(found.dtb, DTB);
}

#[test]
fn a_large_page_bit_in_the_pml4_rejects_it() {
    let m = machine(0x1ED);
    m.set_entry(PML4_FRAME, 0x1F8, 0x20_0000 | bits::PRESENT | bits::LARGE);
    assert_eq!(validate_pml4(&m, DTB), None);
}

#[test]
fn nothing_found_says_what_was_scanned() {
    let m = MemoryTarget::x64(PML4_FRAME);
    let err = find_dtb(&m, &DiscoveryLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no kernel DTB found: processor start block: 256 pages below 0x100000 searched (256 unreadable), blocks found: none, none holding a valid PML4; \
         PML4 scan: 427 physical pages from 0 (1 readable) up to every captured page, no self-mapped PML4"
    );
}

#[test]
fn the_kernel_is_found_at_a_2mib_aligned_mapping_past_other_images() {
    let m = machine(0x1ED);
    m.write_virtual(NT_BASE - 0x20_0000, &image("hal.pdb"));
    m.write_virtual(NT_BASE, &image("ntkrnlmp.pdb"));
    let t = arc(m);
    let k = find_kernel(&t, DTB, &DiscoveryLimits::default()).unwrap();
    assert_eq!(k.base, NT_BASE);
    assert_eq!(k.pdb.name, "ntkrnlmp.pdb");
    assert_eq!(k.pdb.guid.to_string(), GUID);
    assert_eq!(k.pdb.age, 2);
    assert_eq!(k.method, KernelMethod::Aligned2MiB);
    assert_eq!(k.other_images, 1);
    assert_eq!(
        k.detail,
        format!("kernel base 0xfffff80002400000: MZ + RSDS ntkrnlmp.pdb {GUID}-2 found scanning 2 MiB-aligned kernel mappings ({} candidates)", k.candidates)
    );
    // Slot 0xEF (shared data) precedes; the self-map slot is never walked.
    assert_eq!(k.candidates, 3);
}

#[test]
fn an_unaligned_kernel_is_found_in_the_4kib_pass() {
    let m = machine(0x1ED);
    let base = 0xFFFF_F800_02A5_E000;
    m.write_virtual(base, &image("ntoskrnl.pdb"));
    let t = arc(m);
    let k = find_kernel(&t, DTB, &DiscoveryLimits::default()).unwrap();
    assert_eq!((k.base, k.method), (base, KernelMethod::Pages4KiB));
    assert_eq!(k.pdb.name, "ntoskrnl.pdb");
    assert!(
        k.detail.contains("found scanning 4 KiB kernel pages"),
        "{}",
        k.detail
    );
}

#[test]
fn a_kernel_inside_a_large_page_is_found() {
    let m = machine(0x1ED);
    // PML4 0x1F0 -> PDPT frame 0x300 -> PD frame 0x301, entry 0x13: a 2 MiB page at 0x400000.
    m.set_entry(PML4_FRAME, 0x1F0, 0x30_0000 | bits::PRESENT | bits::WRITE);
    m.set_entry(0x300, 0, 0x30_1000 | bits::PRESENT | bits::WRITE);
    m.set_entry(
        0x301,
        0x13,
        0x40_0000 | bits::PRESENT | bits::WRITE | bits::LARGE,
    );
    m.write_physical(0x40_0000 + 0x5E000, &image("ntkrnlmp.pdb"));
    let t = arc(m);
    let k = find_kernel(&t, DTB, &DiscoveryLimits::default()).unwrap();
    assert_eq!(k.base, 0xFFFF_F800_0265_E000);
    assert_eq!(k.method, KernelMethod::Pages4KiB);
}

#[test]
fn the_page_limit_stops_the_kernel_search_and_says_so() {
    let m = machine(0x1ED);
    // A page before the kernel uses the whole budget of one page.
    m.write_virtual(0xFFFF_F800_0200_1000, &[0u8; 8]);
    m.write_virtual(0xFFFF_F800_02A5_E000, &image("ntkrnlmp.pdb"));
    let t = arc(m);
    let limits = DiscoveryLimits {
        kernel_pages: 1,
        ..DiscoveryLimits::default()
    };
    let err = find_kernel(&t, DTB, &limits).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DiscoveryError::NoKernel { .. }));
    assert!(text.contains("and 1 4 KiB pages checked"), "{text}");
    assert!(text.ends_with("stopped at the limit of 1 pages"), "{text}");
}

#[test]
fn discover_combines_both() {
    let m = machine(0x1ED);
    start_block(&m, 0x9F000, DTB);
    m.write_virtual(NT_BASE, &image("ntkrnlmp.pdb"));
    let t = arc(m);
    let d = discover(&t, &DiscoveryLimits::default()).unwrap();
    assert_eq!((d.dtb.dtb, d.kernel.base), (DTB, NT_BASE));
    assert_eq!(d.how().len(), 2);
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["dtb"]["method"]["kind"], "processor_start_block");
    assert_eq!(json["kernel"]["pdb"]["name"], "ntkrnlmp.pdb");
}
