//! Memory images of running systems (raw physical, ELF core) as targets: no header, so the
//! page-table root and the kernel are found by scanning; the hang playbook must read exactly as
//! on the crash dump of the same machine.

use kds_fixture::dumpfile::{write_dump, DumpKind};
use kds_fixture::snapshotfile::{write_elf_core, write_raw_image};
use kds_fixture::{build, FixtureSpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TABLE: &str = "examples/symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kds(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kds"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("kds runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Images {
    dump: PathBuf,
    raw: PathBuf,
    elf: PathBuf,
    kernel_base: u64,
    dtb: u64,
}

fn images() -> Images {
    images_in("kds-cli-snapshots")
}

fn images_in(name: &str) -> Images {
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let fixture = build(&FixtureSpec::hung_server(repo().join(TABLE), 3)).expect("fixture");
    let images = Images {
        dump: dir.join("memory.dmp"),
        raw: dir.join("memory.raw"),
        elf: dir.join("memory.elf"),
        kernel_base: fixture.kernel.base,
        dtb: fixture.truth.kernel_dtb,
    };
    write_dump(&fixture, &images.dump, DumpKind::BitmapFull).expect("dump");
    write_raw_image(&fixture, &images.raw).expect("raw");
    write_elf_core(&fixture, &images.elf).expect("elf");
    images
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

#[test]
fn raw_and_elf_images_read_as_the_dump_with_the_kernel_found_by_scanning() {
    let images = images();
    let want = run_playbook(&images.dump);
    assert_eq!(want.status.code(), Some(0), "{}", text(&want.stderr));
    let want = text(&want.stdout);
    assert!(want.contains("Image: lsass.exe"));

    for (name, path) in [("raw", &images.raw), ("elf", &images.elf)] {
        let out = run_playbook(path);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {stderr}\n{}",
            text(&out.stdout)
        );
        assert_eq!(
            text(&out.stdout),
            want,
            "{name}: output differs from the dump's"
        );
        assert!(
            stderr
                .contains("is a memory capture taken while the system ran: it may be inconsistent"),
            "{name}: {stderr}"
        );

        let info = kds(&[
            "info",
            "-z",
            path.to_str().expect("utf-8"),
            "-y",
            "examples/symbols",
        ]);
        let stdout = text(&info.stdout);
        assert_eq!(
            info.status.code(),
            Some(0),
            "{name}: {}",
            text(&info.stderr)
        );
        let format = if name == "raw" {
            "raw physical image"
        } else {
            "ELF core (QEMU/libvirt)"
        };
        assert!(
            stdout.contains(&format!("Loading {format} snapshot")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "DTB {:#x} from the processor start block",
                images.dtb
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "kernel base {:#x}: MZ + RSDS ntkrnlmp.pdb C339CA26E8E26BB7F4C9BB7B8244A46A-1",
                images.kernel_base
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains("PsLoadedModuleList, PsActiveProcessHead from the kernel's symbols"),
            "{stdout}"
        );
        assert!(
            stdout.contains("Consistency           may be inconsistent"),
            "{stdout}"
        );
    }
}

#[test]
fn kds_snapshot_turns_an_elf_core_into_a_dump_that_reads_the_same() {
    let images = images_in("kds-cli-snapshots-write");
    let want = text(&run_playbook(&images.dump).stdout);
    let out_path = images.dump.with_file_name("from-elf.dmp");
    let out = kds(&[
        "snapshot",
        "-z",
        images.elf.to_str().expect("utf-8"),
        "-y",
        "examples/symbols",
        "-o",
        out_path.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("wrote "),
        "{}",
        text(&out.stderr)
    );
    let replay = run_playbook(&out_path);
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));
    assert_eq!(text(&replay.stdout), want);
}

#[test]
fn an_image_without_a_windows_kernel_says_what_was_scanned() {
    let dir = std::env::temp_dir().join("kds-cli-snapshots-empty");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let path = dir.join("zeros.raw");
    std::fs::write(&path, vec![0u8; 4 << 20]).expect("write");
    let out = kds(&["info", "-z", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("as a memory image"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
