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
         PML4 scan: 427 physical pages from 0 (1 readable) up to every captured page, no self-mapped PML4; \
         PAE PDPT scan: 427 physical pages from 0 (1 readable) up to every captured page, no self-mapped PDPT; \
         x86 page directory scan: 427 physical pages from 0 (1 readable) up to every captured page, no self-mapped page directory"
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

// ---- 32-bit x86 (PAE and not) ----

const X86_NT_BASE: u64 = 0x8240_0000;

/// `image(pdb)` as a PE32 i386 image based at `base`.
fn image32(pdb: &str, base: u64) -> Vec<u8> {
    let mut img = image(pdb);
    let fh = 0x84;
    put16(&mut img, fh, crate::pe::MACHINE_I386);
    put16(&mut img, fh + 16, 224);
    let opt = fh + 20;
    img[opt..opt + 224].fill(0);
    put16(&mut img, opt, 0x10b);
    put32(&mut img, opt + 28, base as u32);
    put32(&mut img, opt + 56, 0x2000);
    put32(&mut img, opt + 60, 0x400);
    let dirs = opt + 96;
    put32(&mut img, dirs - 4, 16);
    put32(&mut img, dirs + 6 * 8, 0x1000);
    put32(&mut img, dirs + 6 * 8 + 4, 28);
    img
}

const P_W: u64 = bits::PRESENT | bits::WRITE;

/// A PAE machine: the PDPT at 0x3020 (32-byte aligned, not page-aligned) names directories
/// at frames 0x4..0x7; directory 3 maps the four directories (the 0xC0000000 self-map).
/// Page tables are handed out from frame 0x20.
struct Pae {
    m: MemoryTarget,
    next: std::cell::Cell<u64>,
}

const PDPT: u64 = 0x3020;

impl Pae {
    fn new() -> Pae {
        let m = MemoryTarget::x64(0x3);
        for frame in 0x4..0x8u64 {
            m.write_physical(frame * PAGE_SIZE, &[0u8; 8]);
        }
        for k in 0..4u64 {
            m.write_physical(
                PDPT + 8 * k,
                &((0x4000 + k * 0x1000) | bits::PRESENT).to_le_bytes(),
            );
            m.write_physical(0x7000 + 8 * k, &((0x4000 + k * 0x1000) | P_W).to_le_bytes());
        }
        Pae {
            m,
            next: std::cell::Cell::new(0x20),
        }
    }

    fn pde_at(va: u64) -> u64 {
        0x4000 + (va >> 30) * 0x1000 + ((va >> 21) & 0x1FF) * 8
    }

    fn read(&self, at: u64) -> u64 {
        let mut b = [0u8; 8];
        self.m.read_physical(at, &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    /// Map the 4 KiB page `va` to `physical`.
    fn map(&self, va: u64, physical: u64) {
        let pde_at = Pae::pde_at(va);
        let mut pde = self.read(pde_at);
        if pde & bits::PRESENT == 0 {
            let frame = self.next.get();
            self.next.set(frame + 1);
            pde = (frame << 12) | P_W;
            self.m.write_physical(pde_at, &pde.to_le_bytes());
        }
        let pte_at = (pde & 0xF_FFFF_F000) + ((va >> 12) & 0x1FF) * 8;
        self.m
            .write_physical(pte_at, &(physical | P_W).to_le_bytes());
    }

    fn write_image(&self, base: u64, physical: u64, img: &[u8]) {
        for (i, page) in img.chunks(0x1000).enumerate() {
            let i = i as u64;
            self.map(base + i * 0x1000, physical + i * 0x1000);
            self.m.write_physical(physical + i * 0x1000, page);
        }
    }
}

#[test]
fn a_pae_pdpt_is_validated_by_its_self_map() {
    let pae = Pae::new();
    assert_eq!(validate_pae_pdpt(&pae.m, PDPT), Some(3));
    // Not 32-byte aligned, or not the PDPT.
    assert_eq!(validate_pae_pdpt(&pae.m, PDPT + 8), None);
    assert_eq!(validate_pae_pdpt(&pae.m, PDPT + 0x20), None);
    // A directory 3 whose entry 2 names another frame: no self-map.
    pae.m.write_physical(0x7010, &(0x9000 | P_W).to_le_bytes());
    assert_eq!(validate_pae_pdpt(&pae.m, PDPT), None);
}

#[test]
fn a_reserved_bit_in_a_pdpte_rejects_it() {
    let pae = Pae::new();
    pae.m.write_physical(
        PDPT + 8,
        &(0x5000 | bits::PRESENT | bits::WRITE).to_le_bytes(),
    );
    assert_eq!(validate_pae_pdpt(&pae.m, PDPT), None);
}

#[test]
fn a_pae_machine_is_found_after_the_pml4_scan_and_its_kernel_under_it() {
    let pae = Pae::new();
    pae.write_image(0x8000_0000, 0x60_0000, &image32("hal.pdb", 0x8000_0000));
    pae.write_image(
        X86_NT_BASE,
        0x40_0000,
        &image32("ntkrpamp.pdb", X86_NT_BASE),
    );
    let t = arc(pae.m);
    let d = discover(&t, &DiscoveryLimits::default()).unwrap();
    assert_eq!(d.dtb.dtb, PDPT);
    assert_eq!(d.arch(), Arch::X86 { pae: true });
    assert_eq!(d.dtb.spec().name, X86_PAE.name);
    assert_eq!(d.dtb.self_map_index, 3);
    assert!(
        matches!(d.dtb.method, DtbMethod::PaePdptScan { pages_scanned: 4 }),
        "{:?}",
        d.dtb.method
    );
    assert_eq!(
        d.dtb.detail,
        "DTB 0x3020 from a scan for a self-mapped x86 PAE PDPT (4 pages scanned), page tables at 0xc0000000"
    );
    assert_eq!(d.kernel.base, X86_NT_BASE);
    assert_eq!(d.kernel.pdb.name, "ntkrpamp.pdb");
    assert_eq!(d.kernel.method, KernelMethod::Aligned2MiB);
    assert_eq!(d.kernel.other_images, 1);
    assert!(
        d.kernel.detail.contains("2 MiB-aligned kernel mappings"),
        "{}",
        d.kernel.detail
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["dtb"]["method"]["kind"], "pae_pdpt_scan");
}

#[test]
fn a_pae_kernel_off_the_2mib_grid_is_found_in_the_4kib_pass_not_in_user_space() {
    let pae = Pae::new();
    // A kernel-named image in user space is never looked at.
    pae.write_image(
        0x0040_0000,
        0x70_0000,
        &image32("ntkrpamp.pdb", 0x0040_0000),
    );
    let base = 0x8280_F000;
    pae.write_image(base, 0x40_0000, &image32("ntkrnlpa.pdb", base));
    let t = arc(pae.m);
    let k = find_kernel_with(&t, &X86_PAE, PDPT, &DiscoveryLimits::default()).unwrap();
    assert_eq!((k.base, k.method), (base, KernelMethod::Pages4KiB));
    assert_eq!(k.pdb.name, "ntkrnlpa.pdb");
}

#[test]
fn a_pae_kernel_in_a_2mib_page_is_found_and_the_self_map_is_not_walked() {
    let pae = Pae::new();
    let base = 0x8160_0000u64;
    pae.m.write_physical(
        Pae::pde_at(base),
        &(0x80_0000 | P_W | bits::LARGE).to_le_bytes(),
    );
    pae.m
        .write_physical(0x80_0000 + 0x3000, &image32("ntkrpamp.pdb", base + 0x3000));
    let t = arc(pae.m);
    let k = find_kernel_with(&t, &X86_PAE, PDPT, &DiscoveryLimits::default()).unwrap();
    assert_eq!((k.base, k.method), (base + 0x3000, KernelMethod::Pages4KiB));
    // The frames of the kernel half: the PDPT page, the two kernel directories and the
    // large page; the self-map directory entries (0xC0000000) are not followed.
    let frames = kernel_half_frames_with(t.as_ref(), &X86_PAE, PDPT, &DiscoveryLimits::default());
    assert!(frames.contains(&3) && frames.contains(&6) && frames.contains(&7));
    assert!(frames.contains(&0x800) && frames.contains(&0x9FF));
    assert!(!frames.contains(&4) && !frames.contains(&5), "{frames:x?}");
    assert_eq!(frames.len(), 3 + 512);
}

/// A non-PAE machine: the page directory at frame 0x3 maps itself at entry 0x300 and has
/// three more kernel entries; page tables from frame 0x20.
fn x86_machine() -> MemoryTarget {
    let m = MemoryTarget::x64(0x3);
    let pde = |i: u64, v: u64| m.write_physical(0x3000 + 4 * i, &(v as u32).to_le_bytes());
    pde(0x300, 0x3000 | P_W);
    pde(0x3FF, 0x21000 | P_W);
    pde(0x3FE, 0x22000 | P_W);
    // The kernel's page table (0x8240_0000: directory entry 0x209).
    pde(0x209, 0x20000 | P_W);
    m
}

fn x86_map(m: &MemoryTarget, pt: u64, va: u64, physical: u64) {
    let at = pt + ((va >> 12) & 0x3FF) * 4;
    m.write_physical(at, &((physical | P_W) as u32).to_le_bytes());
}

#[test]
fn a_non_pae_page_directory_is_validated_by_entry_0x300() {
    let m = x86_machine();
    assert_eq!(validate_x86_pd(&m, 0x3000), Some(0x300));
    assert_eq!(validate_x86_pd(&m, 0x3004), None);
    // Too few other kernel entries.
    m.write_physical(0x3000 + 4 * 0x3FF, &[0u8; 8]);
    m.write_physical(0x3000 + 4 * 0x209, &[0u8; 4]);
    assert_eq!(validate_x86_pd(&m, 0x3000), None);
}

#[test]
fn a_non_pae_machine_is_found_after_the_pae_scan_with_its_kernel() {
    let m = x86_machine();
    let img = image32("ntkrnlmp.pdb", X86_NT_BASE);
    for (i, page) in img.chunks(0x1000).enumerate() {
        let physical = 0x50_0000 + i as u64 * 0x1000;
        x86_map(&m, 0x20000, X86_NT_BASE + i as u64 * 0x1000, physical);
        m.write_physical(physical, page);
    }
    let t = arc(m);
    let d = discover(&t, &DiscoveryLimits::default()).unwrap();
    assert_eq!(d.dtb.dtb, 0x3000);
    assert_eq!(d.arch(), Arch::X86 { pae: false });
    assert_eq!(d.dtb.self_map_index, 0x300);
    assert!(matches!(d.dtb.method, DtbMethod::X86PdScan { .. }));
    assert_eq!(d.kernel.base, X86_NT_BASE);
    // 0x8240_0000 starts directory entry 0x209: the aligned pass (4 MiB without PAE).
    assert_eq!(d.kernel.method, KernelMethod::Aligned2MiB);
    assert!(
        d.kernel.detail.contains("4 MiB-aligned kernel mappings"),
        "{}",
        d.kernel.detail
    );
}

#[test]
fn a_non_pae_kernel_in_a_4mib_page_is_found_at_the_aligned_pass() {
    let m = x86_machine();
    let base = 0x8400_0000u64;
    m.write_physical(
        0x3000 + 4 * (base >> 22),
        &((0x80_0000 | P_W | bits::LARGE) as u32).to_le_bytes(),
    );
    m.write_physical(0x80_0000, &image32("ntoskrnl.pdb", base));
    let t = arc(m);
    let k = find_kernel_with(&t, &X86, 0x3000, &DiscoveryLimits::default()).unwrap();
    assert_eq!((k.base, k.method), (base, KernelMethod::Aligned2MiB));
    assert!(k.detail.contains("4 MiB-aligned"), "{}", k.detail);
}

/// A page directory whose present kernel entries all have even indexes reads, as 8-byte
/// entries, as a PML4 mapping itself at 0x180 with three more kernel entries: the PML4 scan
/// finds it first, the kernel is not under it as x64, and discovery goes on to the x86 scans.
#[test]
fn a_page_directory_that_passes_for_a_pml4_is_tried_as_x86_when_no_kernel_is_under_it() {
    let m = MemoryTarget::x64(0x3);
    let pde = |i: u64, v: u64| m.write_physical(0x3000 + 4 * i, &(v as u32).to_le_bytes());
    pde(0x300, 0x3000 | P_W);
    pde(0x3FC, 0x21000 | P_W);
    pde(0x3FE, 0x22000 | P_W);
    pde(0x208, 0x20000 | P_W);
    let base = 0x8200_0000u64;
    let img = image32("ntkrnlmp.pdb", base);
    for (i, page) in img.chunks(0x1000).enumerate() {
        let physical = 0x50_0000 + i as u64 * 0x1000;
        x86_map(&m, 0x20000, base + i as u64 * 0x1000, physical);
        m.write_physical(physical, page);
    }
    assert_eq!(validate_pml4(&m, 0x3000), Some(0x180), "the misreading");
    let t = arc(m);
    let d = discover(&t, &DiscoveryLimits::default()).unwrap();
    assert_eq!(d.arch(), Arch::X86 { pae: false });
    assert_eq!((d.dtb.dtb, d.kernel.base), (0x3000, base));
    assert!(
        d.dtb
            .detail
            .ends_with("; the x64 PML4 root at 0x3000 found first held no kernel"),
        "{}",
        d.dtb.detail
    );
    // Without the kernel, the error names every root tried and what was scanned under each.
    let m = MemoryTarget::x64(0x3);
    let pde = |i: u64, v: u64| m.write_physical(0x3000 + 4 * i, &(v as u32).to_le_bytes());
    for (i, v) in [
        (0x300, 0x3000),
        (0x3FC, 0x21000),
        (0x3FE, 0x22000),
        (0x208, 0x20000),
    ] {
        pde(i, v | P_W);
    }
    let err = discover(&arc(m), &DiscoveryLimits::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("no kernel image found under DTB 0x3000: as x64 PML4 at 0x3000: "),
        "{err}"
    );
    assert!(err.contains("; as x86 page directory at 0x3000: "), "{err}");
}

#[test]
fn the_x86_scans_are_bounded_and_say_so() {
    let m = x86_machine();
    let limits = DiscoveryLimits {
        pml4_scan_pages: 2,
        ..DiscoveryLimits::default()
    };
    let err = find_dtb(&m, &limits).unwrap_err().to_string();
    assert!(
        err.ends_with(
            "PML4 scan: 2 physical pages from 0 (0 readable) up to the page limit, no self-mapped PML4; \
             PAE PDPT scan: 2 physical pages from 0 (0 readable) up to the page limit, no self-mapped PDPT; \
             x86 page directory scan: 2 physical pages from 0 (0 readable) up to the page limit, no self-mapped page directory"
        ),
        "{err}"
    );
    let t = arc(x86_machine());
    let err = find_kernel_with(&t, &X86, 0x3000, &DiscoveryLimits::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4 MiB-aligned kernel mappings and 0 4 KiB pages checked"),
        "{err}"
    );
}
