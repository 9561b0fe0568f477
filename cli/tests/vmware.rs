//! VMware memory snapshots as targets: `x.vmem` laid out by the regions of the `x.vmss` beside
//! it (the fixture leaves the legacy hole 0xA0..0x100 out of the file, so past it file offsets
//! differ from physical addresses); the hang playbook must read exactly as on the crash dump of
//! the same machine.

mod common;

use common::{kds, repo, text};
use kds_fixture::dumpfile::{write_dump, DumpKind};
use kds_fixture::snapshotfile::write_raw_image;
use kds_fixture::vmwarefile::{
    regions, state_file_with, write_vmware, Region, HOLE_END, HOLE_START,
};
use kds_fixture::{build, FixtureSpec};
use kds_runtime::target::{ImageFormat, PhysicalImage, ReadError};
use std::path::{Path, PathBuf};
use std::process::Output;

const TABLE: &str = "examples/symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz";
const PAGE: u64 = 0x1000;

/// An error report as one line: miette's frame and line breaks gone.
fn one_line(report: &[u8]) -> String {
    text(report)
        .replace(['│', '├', '╰', '─', '▶', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

struct Files {
    dir: PathBuf,
    dump: PathBuf,
    raw: PathBuf,
    vmem: PathBuf,
    vmss: PathBuf,
    regions: Vec<Region>,
}

fn files(name: &str) -> Files {
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let fixture = build(&FixtureSpec::hung_server(repo().join(TABLE), 3)).expect("fixture");
    let dump = dir.join("memory.dmp");
    let raw = dir.join("memory.raw");
    let vmem = dir.join("memory.vmem");
    write_dump(&fixture, &dump, DumpKind::BitmapFull).expect("dump");
    write_raw_image(&fixture, &raw).expect("raw");
    let vmss = write_vmware(&fixture, &vmem).expect("vmware");
    Files {
        regions: regions(&fixture).expect("regions"),
        dir,
        dump,
        raw,
        vmem,
        vmss,
    }
}

fn run_playbook(target: &Path) -> Output {
    kds(&[
        "run",
        "examples/hang-triage.kds",
        "-z",
        target.to_str().expect("utf-8"),
        "-y",
        "examples/symbols",
    ])
}

fn info(target: &Path) -> Output {
    kds(&[
        "info",
        "-z",
        target.to_str().expect("utf-8"),
        "-y",
        "examples/symbols",
    ])
}

#[test]
fn a_vmem_with_its_vmss_reads_as_the_dump() {
    let f = files("kds-cli-vmware");
    assert_eq!(f.regions.len(), 2);
    let want = run_playbook(&f.dump);
    assert_eq!(want.status.code(), Some(0), "{}", text(&want.stderr));
    let want = text(&want.stdout);
    assert!(want.contains("Image: lsass.exe"));

    // The same memory laid out by a version-0 state file whose "memory" group starts with
    // tags in the large-data form.
    let large = f.dir.join("large.vmem");
    std::fs::copy(&f.vmem, &large).expect("copy");
    let state = state_file_with(&f.regions, 0xbed2_bed0, true);
    std::fs::write(large.with_extension("vmss"), state.expect("state")).expect("write");

    // The .vmem, the .vmss given instead (it opens the .vmem beside it), the large-tag one.
    for path in [&f.vmem, &f.vmss, &large] {
        let out = run_playbook(path);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stderr}\n{}",
            text(&out.stdout)
        );
        assert_eq!(
            text(&out.stdout),
            want,
            "{}: differs from the dump",
            path.display()
        );
        assert!(stderr.contains("it may be inconsistent"), "{stderr}");
    }

    let out = info(&f.vmem);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("Loading VMware .vmem (regions from memory.vmss) snapshot"),
        "{stdout}"
    );
    assert!(stdout.contains("kernel base "), "{stdout}");
    std::fs::remove_dir_all(&f.dir).ok();
}

#[test]
fn every_page_of_the_vmem_reads_as_in_the_raw_image() {
    let f = files("kds-cli-vmware-pages");
    let raw = PhysicalImage::open(&f.raw).expect("raw");
    let vmem = PhysicalImage::open(&f.vmem).expect("vmem");
    assert_eq!(vmem.format(), ImageFormat::Vmware);
    assert_eq!(vmem.runs().len(), 2);
    // The file is the raw image without the hole: offsets past it are shifted.
    let hole = (HOLE_END - HOLE_START) * PAGE;
    assert_eq!(
        std::fs::metadata(&f.vmem).expect("vmem").len(),
        raw.end() - hole
    );
    assert_eq!(vmem.runs()[1].file_offset, HOLE_START * PAGE);
    assert_eq!(vmem.runs()[1].physical, HOLE_END * PAGE);
    let mut pages = 0u64;
    for pfn in 0..raw.end() / PAGE {
        if (HOLE_START..HOLE_END).contains(&pfn) {
            assert_eq!(
                vmem.read_physical(pfn * PAGE, &mut [0u8; 8]),
                Err(ReadError::PageNotCaptured { page: pfn * PAGE })
            );
            continue;
        }
        assert_eq!(vmem.page(pfn), raw.page(pfn), "page {pfn:#x}");
        pages += 1;
    }
    assert_eq!(vmem.captured_pages(), pages);
    assert!(pages > 1000, "{pages}");
    std::fs::remove_dir_all(&f.dir).ok();
}

#[test]
fn a_garbage_vmss_is_an_error_and_no_vmss_reads_the_vmem_as_raw() {
    let f = files("kds-cli-vmware-errors");
    std::fs::write(&f.vmss, b"\x01\x02\x03\x04 not a state file").expect("garbage");
    let out = info(&f.vmem);
    let stderr = one_line(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        stderr.contains("memory.vmss, the memory layout of"),
        "{stderr}"
    );
    assert!(
        stderr.contains("magic 0x04030201 at offset 0x0 is not a VMware state file's"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Cut inside the header.
    std::fs::write(&f.vmss, 0xbed3_bed3u64.to_le_bytes()).expect("truncated");
    let stderr = one_line(&info(&f.vmem).stderr);
    assert!(
        stderr.contains("header needs 0xc bytes at offset 0x0"),
        "{stderr}"
    );

    // A .vmss with nothing beside it.
    std::fs::remove_file(&f.vmem).expect("remove vmem");
    let stderr = one_line(&info(&f.vmss).stderr);
    assert!(stderr.contains("is a VMware state file"), "{stderr}");
    assert!(stderr.contains("memory.vmem"), "{stderr}");

    // A flat .vmem (a small guest) without a state file: read as raw, and kds says so.
    std::fs::remove_file(&f.vmss).expect("remove vmss");
    let flat = f.dir.join("small.vmem");
    std::fs::copy(&f.raw, &flat).expect("copy");
    let out = info(&flat);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "Loading VMware .vmem, read as raw (no small.vmss or .vmsn beside it) snapshot"
        ),
        "{stdout}"
    );
    assert_eq!(
        text(&run_playbook(&flat).stdout),
        text(&run_playbook(&f.dump).stdout)
    );
    std::fs::remove_dir_all(&f.dir).ok();
}
