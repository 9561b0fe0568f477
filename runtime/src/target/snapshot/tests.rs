use super::*;

const P: u64 = PAGE_SIZE;

/// One program header of a synthetic core.
#[derive(Clone, Copy)]
struct Seg {
    p_type: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn load(offset: u64, paddr: u64, size: u64) -> Seg {
    Seg {
        p_type: 1,
        offset,
        paddr,
        filesz: size,
        memsz: size,
    }
}

/// An ELF64 little-endian header with `phnum` program headers at 0x40.
fn ehdr(class: u8, e_type: u16, machine: u16, phnum: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = 1;
    h[6] = 1;
    h[0x10..0x12].copy_from_slice(&e_type.to_le_bytes());
    h[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
    h[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    h[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    h[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    h[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    h[0x38..0x3A].copy_from_slice(&phnum.to_le_bytes());
    h
}

fn phdr(s: Seg) -> Vec<u8> {
    let mut p = vec![0u8; 56];
    p[0..4].copy_from_slice(&s.p_type.to_le_bytes());
    p[4..8].copy_from_slice(&7u32.to_le_bytes());
    p[8..0x10].copy_from_slice(&s.offset.to_le_bytes());
    p[0x18..0x20].copy_from_slice(&s.paddr.to_le_bytes());
    p[0x20..0x28].copy_from_slice(&s.filesz.to_le_bytes());
    p[0x28..0x30].copy_from_slice(&s.memsz.to_le_bytes());
    p
}

/// A core with `segs`, the file `file_len` bytes long; byte at offset `o` is `(o / P) as u8`
/// past the headers, so each file page has its own fill.
fn core(machine: u16, segs: &[Seg], file_len: u64) -> Vec<u8> {
    let mut b = ehdr(2, 4, machine, segs.len() as u16);
    for s in segs {
        b.extend(phdr(*s));
    }
    let headers = b.len();
    b.resize(file_len as usize, 0);
    for (o, byte) in b.iter_mut().enumerate().skip(headers) {
        *byte = (o as u64 / P) as u8;
    }
    b
}

fn note(offset: u64, size: u64) -> Seg {
    Seg {
        p_type: 4,
        offset,
        paddr: 0,
        filesz: size,
        memsz: 0,
    }
}

/// PT_NOTE first, then three loads out of physical order, with a hole at 0x3000..0x10000
/// and a memsz tail on the last one.
fn sample() -> Vec<u8> {
    let mut tail = load(5 * P, 0x10000, P);
    tail.memsz = 3 * P;
    core(
        EM_X86_64,
        &[
            note(0x200, 0x20),
            load(2 * P, 0x1000, 2 * P),
            tail,
            load(P, 0, P),
        ],
        6 * P,
    )
}

#[test]
fn raw_image_maps_file_offsets_to_physical_addresses() {
    let mut bytes = vec![0u8; 0x2800];
    bytes[0x1ff0..0x2010].fill(0xAB);
    let image = PhysicalImage::from_bytes(bytes, "raw.bin".into()).unwrap();
    assert_eq!(image.format(), ImageFormat::Raw);
    assert_eq!(image.format_name(), "raw physical image");
    assert_eq!(image.machine(), None);
    assert_eq!(
        image.runs(),
        [Run {
            physical: 0,
            file_offset: 0,
            length: 0x2800
        }]
    );
    assert_eq!(image.captured_pages(), 3);
    let mut buf = [0u8; 0x20];
    image.read_physical(0x1ff0, &mut buf).unwrap();
    assert_eq!(buf, [0xAB; 0x20]);
    assert_eq!(image.page(1).map(|p| p.len()), Some(0x1000));
    assert_eq!(image.page(2), None, "partial last page is not a whole page");
    let mut over = [0u8; 0x10];
    assert_eq!(
        image.read_physical(0x27f8, &mut over),
        Err(ReadError::OutOfRange { address: 0x2800 })
    );
}

#[test]
fn elf_core_reads_loads_by_physical_address_and_skips_notes() {
    let image = PhysicalImage::from_bytes(sample(), "core.elf".into()).unwrap();
    assert_eq!(image.format(), ImageFormat::ElfCore);
    assert_eq!(image.format_name(), "ELF core (QEMU/libvirt)");
    assert_eq!(image.machine(), Some(EM_X86_64));
    let physical: Vec<_> = image
        .runs()
        .iter()
        .map(|r| (r.physical, r.file_offset))
        .collect();
    assert_eq!(physical, [(0, P), (0x1000, 2 * P), (0x10000, 5 * P)]);
    assert_eq!(image.captured_pages(), 4);
    // Physical 0 is file page 1, 0x1000 file page 2, 0x2000 file page 3.
    let mut buf = [0u8; 0x10];
    image.read_physical(0xff8, &mut buf).unwrap();
    assert_eq!(buf, [1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
    image.read_physical(0x1ff8, &mut buf).unwrap();
    assert_eq!(buf[..8], [2; 8]);
    assert_eq!(buf[8..], [3; 8]);
    assert_eq!(image.page(0x10).map(|p| p[0]), Some(5));
    assert_eq!(image.contiguous(0x2ff0).map(<[u8]>::len), Ok(0x10));
}

#[test]
fn holes_are_not_captured_and_past_the_end_is_out_of_range() {
    let image = PhysicalImage::from_bytes(sample(), "core.elf".into()).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        image.read_physical(0x3008, &mut buf),
        Err(ReadError::PageNotCaptured { page: 0x3000 })
    );
    // A read that runs off the end of a run into the hole names the hole's page.
    assert_eq!(
        image.read_physical(0x2ffc, &mut buf),
        Err(ReadError::PageNotCaptured { page: 0x3000 })
    );
    // p_memsz beyond p_filesz is not captured either; it is past the last run.
    assert_eq!(
        image.read_physical(0x11000, &mut buf),
        Err(ReadError::OutOfRange { address: 0x11000 })
    );
    assert_eq!(image.page(0x3), None);
}

#[test]
fn target_identity_is_a_snapshot_with_nothing_known() {
    let image = PhysicalImage::from_bytes(sample(), "core.elf".into()).unwrap();
    let target: &dyn Target = &image;
    let id = target.identity();
    assert_eq!(
        id.kind,
        TargetKind::Snapshot {
            path: "core.elf".into(),
            format: "ELF core (QEMU/libvirt)".into()
        }
    );
    assert_eq!(id.arch, Arch::X64);
    assert_eq!(id.consistency, Consistency::MayBeInconsistent);
    assert_eq!(id.directory_table_base, 0);
    assert_eq!(id.kernel_base, None);
    assert_eq!(
        target.capabilities().consistency,
        Consistency::MayBeInconsistent
    );
    assert_eq!(target.captured_pages(), Some(4));
    assert!(matches!(
        target.processor_context(0),
        Err(TargetError::ContextUnavailable { processor: 0, .. })
    ));
}

#[test]
fn i386_machine_is_kept_but_does_not_decide_the_paging_mode() {
    // QEMU writes EM_386 for a 64-bit guest whose vCPU was outside long mode at dump time.
    let bytes = core(EM_386, &[load(P, 0, P)], 2 * P);
    let image = PhysicalImage::from_bytes(bytes, "x86.elf".into()).unwrap();
    assert_eq!(image.machine(), Some(EM_386));
    assert_eq!(image.identity().arch, Arch::X64);
}

#[test]
fn elf32_is_refused() {
    let mut bytes = core(EM_386, &[load(P, 0, P)], 2 * P);
    bytes[4] = 1;
    let err = PhysicalImage::from_bytes(bytes, "x".into()).unwrap_err();
    assert_eq!(err, ImageError::ElfClass { class: 1 });
    assert!(err.to_string().contains("32-bit"), "{err}");
}

#[test]
fn truncated_segment_names_its_index() {
    let bytes = core(
        EM_X86_64,
        &[note(0x200, 0x20), load(P, 0, P), load(2 * P, P, 2 * P)],
        3 * P,
    );
    let err = PhysicalImage::from_bytes(bytes, "x".into()).unwrap_err();
    assert_eq!(
        err,
        ImageError::SegmentTruncated {
            index: 2,
            offset: 2 * P,
            size: 2 * P,
            file_len: 3 * P
        }
    );
    assert!(err.to_string().starts_with("segment 2:"), "{err}");
}

#[test]
fn overlapping_segments_name_both() {
    let bytes = core(
        EM_X86_64,
        &[
            load(P, 0x5000, 2 * P),
            note(0x200, 0x20),
            load(P, 0x6000, P),
        ],
        3 * P,
    );
    let err = PhysicalImage::from_bytes(bytes, "x".into()).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::SegmentsOverlap {
                first: 0,
                second: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn address_overflow_is_an_error() {
    let bytes = core(EM_X86_64, &[load(P, u64::MAX - 0x10, P)], 2 * P);
    let err = PhysicalImage::from_bytes(bytes, "x".into()).unwrap_err();
    assert!(
        matches!(err, ImageError::SegmentAddressOverflow { index: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn crash_dumps_and_empty_files_are_refused() {
    for signature in ["PAGEDU64", "PAGEDUMP"] {
        let mut bytes = signature.as_bytes().to_vec();
        bytes.resize(0x2000, 0);
        let err = PhysicalImage::from_bytes(bytes, "x".into()).unwrap_err();
        assert_eq!(err, ImageError::CrashDump { signature });
        assert!(err.to_string().contains("open it as a crash dump"), "{err}");
    }
    assert_eq!(
        PhysicalImage::from_bytes(Vec::new(), "x".into()).unwrap_err(),
        ImageError::Empty
    );
}

#[test]
fn malformed_headers_are_errors_not_panics() {
    // Short header.
    assert_eq!(
        PhysicalImage::from_bytes(b"\x7fELF\x02\x01".to_vec(), "x".into()).unwrap_err(),
        ImageError::ElfHeaderTruncated {
            needed: 64,
            file_len: 6
        }
    );
    // Not a core.
    let mut exec = core(EM_X86_64, &[load(P, 0, P)], 2 * P);
    exec[0x10] = 2;
    assert_eq!(
        PhysicalImage::from_bytes(exec, "x".into()).unwrap_err(),
        ImageError::ElfNotCore { e_type: 2 }
    );
    // Big-endian.
    let mut be = core(EM_X86_64, &[load(P, 0, P)], 2 * P);
    be[5] = 2;
    assert_eq!(
        PhysicalImage::from_bytes(be, "x".into()).unwrap_err(),
        ImageError::ElfByteOrder { data: 2 }
    );
    // Program header table past the end.
    let mut many = core(EM_X86_64, &[load(P, 0, P)], 2 * P);
    many[0x38..0x3A].copy_from_slice(&0xFFF0u16.to_le_bytes());
    assert!(matches!(
        PhysicalImage::from_bytes(many, "x".into()).unwrap_err(),
        ImageError::ElfProgramHeadersTruncated { count: 0xFFF0, .. }
    ));
    // Small program header entries.
    let mut small = core(EM_X86_64, &[load(P, 0, P)], 2 * P);
    small[0x36] = 32;
    assert_eq!(
        PhysicalImage::from_bytes(small, "x".into()).unwrap_err(),
        ImageError::ElfProgramHeaderSize { phentsize: 32 }
    );
    // Only notes.
    let notes = core(EM_X86_64, &[note(0x200, 0x20)], P);
    assert_eq!(
        PhysicalImage::from_bytes(notes, "x".into()).unwrap_err(),
        ImageError::ElfNoLoadSegments { phnum: 1 }
    );
    // Every truncation of a valid core is an error or a valid image, never a panic.
    let good = sample();
    for len in (0..0x200).chain([P - 1, 5 * P + 1]) {
        let _ = PhysicalImage::from_bytes(good[..len as usize].to_vec(), "x".into());
    }
}

#[test]
fn extended_program_header_numbering() {
    // e_phnum = PN_XNUM, the real count in section header 0's sh_info.
    let mut bytes = core(EM_X86_64, &[load(2 * P, 0x4000, P)], 3 * P);
    bytes[0x38..0x3A].copy_from_slice(&0xFFFFu16.to_le_bytes());
    bytes[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
    let shoff = 0x400u64;
    bytes[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    bytes[shoff as usize..shoff as usize + 64].fill(0);
    bytes[shoff as usize + 0x2C..shoff as usize + 0x30].copy_from_slice(&1u32.to_le_bytes());
    let image = PhysicalImage::from_bytes(bytes, "x".into()).unwrap();
    assert_eq!(image.runs()[0].physical, 0x4000);
}

#[test]
fn open_maps_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("kds-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("core.elf");
    std::fs::write(&path, sample()).unwrap();
    let image = PhysicalImage::open(&path).unwrap();
    assert_eq!(image.runs().len(), 3);
    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let err = PhysicalImage::open(&empty).unwrap_err();
    assert!(err.to_string().contains("empty.bin"), "{err}");
    assert!(matches!(
        err,
        SnapshotError::Image {
            source: ImageError::Empty,
            ..
        }
    ));
    let missing = PhysicalImage::open(&dir.join("missing")).unwrap_err();
    assert!(matches!(missing, SnapshotError::Io { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pages_shared_by_unaligned_runs_count_once() {
    let runs = [
        Run {
            physical: 0,
            file_offset: 0,
            length: 0x1800,
        },
        Run {
            physical: 0x1800,
            file_offset: 0,
            length: 0x1000,
        },
        Run {
            physical: 0x5000,
            file_offset: 0,
            length: 1,
        },
    ];
    assert_eq!(count_pages(&runs), 4);
}

// --- VMware state files -------------------------------------------------------------------

/// One tag: flags (index count, size code), name, indices, data in the small form.
fn vm_tag(name: &str, indices: &[u32], data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 62);
    let mut t = vec![
        ((indices.len() as u8) << 6) | data.len() as u8,
        name.len() as u8,
    ];
    t.extend(name.as_bytes());
    for i in indices {
        t.extend(i.to_le_bytes());
    }
    t.extend(data);
    t
}

/// A tag in the large-data form: sizes of `width` bytes, 2 bytes of padding, then the data.
fn vm_large_tag(name: &str, data: &[u8], width: usize) -> Vec<u8> {
    let mut t = vec![62, name.len() as u8];
    t.extend(name.as_bytes());
    t.extend(&(data.len() as u64).to_le_bytes()[..width]);
    t.extend(&(data.len() as u64).to_le_bytes()[..width]);
    t.extend([0, 0]);
    t.extend(data);
    t
}

fn vm_u32(name: &str, indices: &[u32], v: u32) -> Vec<u8> {
    vm_tag(name, indices, &v.to_le_bytes())
}

/// A state file with `groups` (name, tags without the end marker), tags after the table.
fn vm_state(magic: u32, groups: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(magic.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend((groups.len() as u32).to_le_bytes());
    let mut at = 12 + 80 * groups.len() as u64;
    let mut bodies = Vec::new();
    for (name, tags) in groups {
        let mut entry = [0u8; 80];
        entry[..name.len()].copy_from_slice(name.as_bytes());
        entry[64..72].copy_from_slice(&at.to_le_bytes());
        entry[72..80].copy_from_slice(&(tags.len() as u64 + 2).to_le_bytes());
        b.extend(entry);
        bodies.extend(tags);
        bodies.extend([0, 0]);
        at += tags.len() as u64 + 2;
    }
    b.extend(bodies);
    b
}

/// Memory tags for regions `(ppn, page_num, pages)`, after unrelated tags of every form.
fn vm_memory_tags(regions: &[(u32, u32, u32)], large_width: usize) -> Vec<u8> {
    let mut t = vm_tag("align_mask", &[], &0xFFFFu32.to_le_bytes());
    t.extend(vm_large_tag("hotSet", &[0xAB; 300], large_width));
    t.extend(vm_tag("pair", &[1, 2], &[1]));
    t.extend(vm_u32("regionsCount", &[], regions.len() as u32));
    for (i, &(ppn, page_num, pages)) in regions.iter().enumerate() {
        let i = i as u32;
        t.extend(vm_u32("regionPageNum", &[i], page_num));
        t.extend(vm_u32("regionPPN", &[i], ppn));
        t.extend(vm_tag("regionSize", &[i], &u64::from(pages).to_le_bytes()));
    }
    t
}

/// Two regions: physical pages 0..2 at .vmem pages 0..2, physical 0x10..0x13 at .vmem 2..5.
fn vm_sample(magic: u32) -> (Vec<u8>, Vec<u8>) {
    let width = if magic & 0xF == 0 { 4 } else { 8 };
    let state = vm_state(
        magic,
        &[
            ("cpu", vm_u32("cpuid", &[0, 1], 7)),
            ("memory", vm_memory_tags(&[(0x10, 2, 3), (0, 0, 2)], width)),
        ],
    );
    let mut vmem = vec![0u8; 5 * P as usize];
    for (o, byte) in vmem.iter_mut().enumerate() {
        *byte = (o as u64 / P) as u8 + 1;
    }
    (state, vmem)
}

#[test]
fn vmware_regions_map_physical_pages_to_vmem_pages_for_every_magic() {
    for magic in vmware::STATE_MAGICS {
        let (state, vmem) = vm_sample(magic);
        let image = PhysicalImage::from_vmware_bytes(vmem, &state, "x.vmem".into()).unwrap();
        assert_eq!(image.format(), ImageFormat::Vmware);
        assert_eq!(
            image.runs(),
            &[
                Run {
                    physical: 0,
                    file_offset: 0,
                    length: 2 * P
                },
                Run {
                    physical: 0x10 * P,
                    file_offset: 2 * P,
                    length: 3 * P
                },
            ],
            "{magic:#x}"
        );
        assert_eq!(image.captured_pages(), 5);
        assert_eq!(image.page(1).unwrap()[0], 2);
        assert_eq!(image.page(0x10).unwrap()[0], 3);
        assert_eq!(image.page(0x12).unwrap()[P as usize - 1], 5);
        assert_eq!(
            image.read_physical(2 * P, &mut [0u8; 1]),
            Err(ReadError::PageNotCaptured { page: 2 * P })
        );
        assert_eq!(image.captured_pfns().unwrap(), vec![0, 1, 0x10, 0x11, 0x12]);
    }
}

#[test]
fn vmware_state_without_regions_reads_the_vmem_flat() {
    let state = vm_state(0xbed2_bed2, &[("memory", vm_u32("align_mask", &[], 1))]);
    let image = PhysicalImage::from_vmware_bytes(vec![9; 0x3000], &state, "x.vmem".into()).unwrap();
    assert_eq!(image.format(), ImageFormat::VmwareFlat);
    assert_eq!(image.end(), 0x3000);
    let zero = vm_state(0xbed2_bed2, &[("memory", vm_u32("regionsCount", &[], 0))]);
    let image = PhysicalImage::from_vmware_bytes(vec![9; 0x3000], &zero, "x.vmem".into()).unwrap();
    assert_eq!(image.format(), ImageFormat::VmwareFlat);
}

#[test]
fn vmware_state_header_errors() {
    use vmware::{parse_state, VmwareError};
    assert_eq!(
        parse_state(&[0xd0, 0xbe, 0xd2]),
        Err(VmwareError::HeaderTruncated { file_len: 3 })
    );
    let mut garbage = vec![0x5Au8; 4096];
    assert_eq!(
        parse_state(&garbage),
        Err(VmwareError::UnknownMagic { magic: 0x5a5a_5a5a })
    );
    garbage[..4].copy_from_slice(&0xbed3_bed3u32.to_le_bytes());
    assert_eq!(
        parse_state(&garbage),
        Err(VmwareError::GroupTableTruncated {
            count: 0x5a5a_5a5a,
            file_len: 4096
        })
    );
    let no_memory = vm_state(0xbed3_bed3, &[("cpu", Vec::new())]);
    assert_eq!(
        parse_state(&no_memory),
        Err(VmwareError::NoMemoryGroup { count: 1 })
    );
    // A state file handed over as an image says what it is.
    assert_eq!(
        PhysicalImage::from_bytes(no_memory, "x.vmss".into()).unwrap_err(),
        ImageError::VmwareState { magic: 0xbed3_bed3 }
    );
}

#[test]
fn vmware_state_truncated_anywhere_is_an_error_not_a_panic() {
    let (state, vmem) = vm_sample(0xbed3_bed3);
    for len in 0..state.len() {
        let err = PhysicalImage::from_vmware_bytes(vmem.clone(), &state[..len], "x".into())
            .expect_err("truncated state file parses");
        let text = err.to_string();
        assert!(
            text.contains("offset") || text.contains("bytes"),
            "{len}: {text}"
        );
    }
    // The tag holding regionSize[1] cut in its data: its offset and size are named.
    let memory_at = 12 + 2 * 80 + vm_u32("cpuid", &[0, 1], 7).len() as u64 + 2;
    let tags = vm_memory_tags(&[(0x10, 2, 3), (0, 0, 2)], 8);
    let last = tags.len() - vm_tag("regionSize", &[1], &[0; 8]).len();
    let cut = (memory_at as usize) + tags.len() - 3;
    assert_eq!(
        vmware::parse_state(&state[..cut]),
        Err(vmware::VmwareError::TagTruncated {
            offset: memory_at + last as u64,
            needed: 2 + 10 + 4 + 8,
            file_len: cut as u64
        })
    );
}

#[test]
fn vmware_garbage_state_files_never_panic() {
    let (state, vmem) = vm_sample(0xbed2_bed0);
    let mut rng = 0x1234_5678_9abc_def0u64;
    for round in 0..2000 {
        let mut s = state.clone();
        for _ in 0..1 + round % 4 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = 4 + (rng as usize) % (s.len() - 4);
            s[at] = (rng >> 40) as u8;
        }
        let _ = PhysicalImage::from_vmware_bytes(vmem.clone(), &s, "x".into());
    }
    // All-0xFF tags: huge index counts, large data with a size near 2^64.
    let mut huge = vm_state(0xbed3_bed3, &[("memory", vec![0xFF; 40])]);
    huge.truncate(huge.len() - 2);
    assert!(matches!(
        vmware::parse_state(&huge),
        Err(vmware::VmwareError::TagTruncated { .. })
    ));
}

#[test]
fn vmware_region_errors_name_the_region() {
    use vmware::VmwareError;
    let state = |regions: &[(u32, u32, u32)]| {
        vm_state(0xbed3_bed3, &[("memory", vm_memory_tags(regions, 8))])
    };
    let vmem = vec![0u8; 4 * P as usize];
    let err = PhysicalImage::from_vmware_bytes(
        vmem.clone(),
        &state(&[(0, 0, 2), (0x100, 2, 3)]),
        "x".into(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        VmwareError::RegionPastVmemEnd {
            index: 1,
            ppn: 0x100,
            page_num: 2,
            pages: 3,
            end: 5 * P,
            vmem_len: 4 * P
        }
    );
    assert!(
        err.to_string().starts_with("region 1 (physical page 0x100"),
        "{err}"
    );
    let err =
        PhysicalImage::from_vmware_bytes(vmem.clone(), &state(&[(0, 0, 2), (1, 2, 2)]), "x".into())
            .unwrap_err();
    assert!(
        matches!(
            err,
            VmwareError::RegionsOverlap {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{err}"
    );
    // regionsCount says 2, only region 0 is there.
    let mut tags = vm_u32("regionsCount", &[], 2);
    tags.extend(vm_u32("regionPPN", &[0], 0));
    tags.extend(vm_u32("regionPageNum", &[0], 0));
    tags.extend(vm_u32("regionSize", &[0], 1));
    tags.extend(vm_u32("regionPPN", &[1], 4));
    let err = vmware::parse_state(&vm_state(0xbed3_bed3, &[("memory", tags)])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "regionsCount at offset 0x5c says 2 regions, but regionPageNum[1] is missing"
    );
    // A region tag of 3 bytes is not an integer VMware writes.
    let mut tags = vm_u32("regionsCount", &[], 1);
    tags.extend(vm_tag("regionPPN", &[0], &[1, 2, 3]));
    let err = vmware::parse_state(&vm_state(0xbed3_bed3, &[("memory", tags)])).unwrap_err();
    assert!(
        matches!(err, VmwareError::TagNotInteger { size: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("tag regionPPN[0] at offset"),
        "{err}"
    );
    // Pages beyond 64-bit addresses.
    let mut tags = vm_u32("regionsCount", &[], 1);
    tags.extend(vm_tag("regionPPN", &[0], &u64::MAX.to_le_bytes()));
    tags.extend(vm_u32("regionPageNum", &[0], 0));
    tags.extend(vm_u32("regionSize", &[0], 1));
    let err = PhysicalImage::from_vmware_bytes(
        vmem,
        &vm_state(0xbed3_bed3, &[("memory", tags)]),
        "x".into(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VmwareError::RegionOverflow { index: 0, .. }),
        "{err}"
    );
}

#[test]
fn vmware_files_are_found_beside_each_other() {
    let dir = std::env::temp_dir().join(format!("kds-vmware-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (state, vmem) = vm_sample(0xbed3_bed3);
    let vmem_path = dir.join("guest.vmem");
    std::fs::write(&vmem_path, &vmem).unwrap();

    // No state file: flat, and the name says so.
    let flat = PhysicalImage::open(&vmem_path).unwrap();
    assert_eq!(flat.format(), ImageFormat::VmwareFlat);
    assert_eq!(
        flat.format_name(),
        "VMware .vmem, read as raw (no guest.vmss or .vmsn beside it)"
    );
    assert_eq!(flat.end(), 5 * P);

    // A .vmsn is used when there is no .vmss.
    std::fs::write(dir.join("guest.vmsn"), &state).unwrap();
    let image = PhysicalImage::open(&vmem_path).unwrap();
    assert_eq!(
        image.format_name(),
        "VMware .vmem (regions from guest.vmsn)"
    );
    // The .vmss wins; opening it directly opens the .vmem.
    std::fs::write(dir.join("guest.vmss"), &state).unwrap();
    let image = PhysicalImage::open(&vmem_path).unwrap();
    assert_eq!(
        image.format_name(),
        "VMware .vmem (regions from guest.vmss)"
    );
    let direct = PhysicalImage::open(&dir.join("guest.vmss")).unwrap();
    assert_eq!(direct.runs(), image.runs());
    match &direct.identity().kind {
        TargetKind::Snapshot { path, .. } => assert!(path.ends_with("guest.vmem"), "{path}"),
        other => panic!("{other:?}"),
    }

    // A garbage .vmss is an error naming it, not a silent fallback.
    std::fs::write(dir.join("guest.vmss"), b"garbage, not a state file").unwrap();
    let err = PhysicalImage::open(&vmem_path).unwrap_err().to_string();
    assert!(err.contains("guest.vmss, the memory layout of"), "{err}");
    assert!(
        err.contains("guest.vmem: magic 0x62726167 at offset 0x0"),
        "{err}"
    );

    // A state file whose .vmem is gone.
    std::fs::write(dir.join("alone.vmsn"), &state).unwrap();
    let err = PhysicalImage::open(&dir.join("alone.vmsn")).unwrap_err();
    assert!(matches!(err, SnapshotError::VmemMissing { .. }), "{err}");
    assert!(err.to_string().contains("alone.vmem"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
