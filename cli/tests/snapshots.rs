//! Memory images of running systems (raw physical, ELF core) as targets: no header, so the
//! page-table root and the kernel are found by scanning; the hang playbook must read exactly as
//! on the crash dump of the same machine.

mod common;

use common::{kds, repo, text};
use kds_fixture::dumpfile::{write_dump, DumpKind};
use kds_fixture::snapshotfile::{write_elf_core, write_raw_image};
use kds_fixture::{build, FixtureSpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TABLE: &str = "examples/symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz";

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
    // miette wraps at the terminal width, and the path's length moves the break: compare with
    // the frame characters and line breaks taken out.
    let words: Vec<&str> = stderr
        .split_whitespace()
        .filter(|w| !matches!(*w, "│" | "├─▶" | "╰─▶" | "×"))
        .collect();
    let flat = words.join(" ");
    assert!(flat.contains("as a memory image"), "{stderr}");
    assert!(flat.contains("no kernel DTB found"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A capture taken while the kernel ran: a process unlinked mid-walk (its predecessor's Flink
/// already skips it, the next entry's Blink does not yet) and a thread list pointing into freed
/// (unmapped) memory. The run reports both tears by address and goes on with what it read.
#[test]
fn a_torn_capture_gives_warnings_naming_the_addresses_and_the_rest() {
    let dir = std::env::temp_dir().join("kds-cli-snapshots-torn");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let mut fixture = build(&FixtureSpec::hung_server(repo().join(TABLE), 6)).expect("fixture");
    let truth = fixture.truth.clone();
    let dtb = fixture.machine.kernel_dtb;
    let process_links = fixture
        .table
        .offset_of("_EPROCESS", "ActiveProcessLinks")
        .expect("ActiveProcessLinks");
    let thread_links = fixture
        .table
        .offset_of("_ETHREAD", "ThreadListEntry")
        .expect("ThreadListEntry");
    // Process k+1 (after lsass) is being unlinked: k's Flink already points at k+2.
    let lsass_at = truth
        .processes
        .iter()
        .position(|p| p.image_file_name == "lsass.exe")
        .expect("lsass");
    let k = lsass_at + 2;
    assert!(k + 2 < truth.processes.len());
    let torn_entry = truth.processes[k].eprocess + process_links;
    fixture
        .machine
        .write_u64(
            dtb,
            torn_entry,
            truth.processes[k + 2].eprocess + process_links,
        )
        .expect("patch Flink");
    // lsass's second thread links to a freed thread: an address nothing maps.
    let lsass = &truth.processes[lsass_at];
    assert!(lsass.threads.len() > 2);
    let freed = 0xFFFF_9A0F_DEAD_0000u64;
    fixture
        .machine
        .write_u64(dtb, lsass.threads[1].ethread + thread_links, freed)
        .expect("patch thread Flink");
    let elf = dir.join("torn.elf");
    write_elf_core(&fixture, &elf).expect("elf");

    let commands = format!(
        "!process 0 0; threads | where pid == {:#x} | count",
        lsass.pid
    );
    let out = kds(&[
        "run",
        "-c",
        &commands,
        "-z",
        elf.to_str().expect("utf-8"),
        "-y",
        "examples/symbols",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let windbg = |v: u64| format!("{:08x}`{:08x}", v >> 32, v & 0xFFFF_FFFF);
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("WARNING:"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("torn") && w.contains(&windbg(torn_entry))),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains(&windbg(freed))),
        "{warnings:?}"
    );
    // `!process` and the threads query both walk the process list: one warning per tear.
    let torn = warnings
        .iter()
        .filter(|w| w.contains("torn") && w.contains(&windbg(torn_entry)))
        .count();
    assert_eq!(torn, 1, "{warnings:?}");
    // The processes up to the tear are listed, the ones after it are not.
    let listed = stdout.lines().filter(|l| l.starts_with("PROCESS ")).count();
    assert_eq!(listed, k + 1, "{stdout}");
    // lsass's threads up to the freed link: two.
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    assert_eq!(last.map(str::trim), Some("2"), "{stdout}");
}

/// QEMU, stopped before its first instruction (`-S`), with its whole RAM of the size the image
/// needs.
struct Qemu {
    child: std::process::Child,
    qmp: PathBuf,
}

impl Qemu {
    /// Starts `qemu-system-x86_64` with the raw image copied into guest RAM at physical 0 by
    /// QEMU's generic loader; nothing runs, so RAM holds exactly the image.
    fn with_raw_image(raw: &Path, dir: &Path) -> Qemu {
        let len = std::fs::metadata(raw).expect("raw image").len();
        let ram_mib = len.div_ceil(1 << 20) + 1;
        let qmp = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp);
        let child = Command::new("qemu-system-x86_64")
            .args(["-S", "-nographic", "-nodefaults", "-machine", "pc"])
            .args(["-m", &format!("{ram_mib}M")])
            .arg("-device")
            .arg(format!(
                "loader,file={},addr=0,force-raw=on",
                raw.to_str().expect("utf-8")
            ))
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                qmp.to_str().expect("utf-8")
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "qemu-system-x86_64 cannot start ({e}): .ci/run installs Debian's \
                     qemu-system-x86 for this test"
                )
            });
        Qemu { child, qmp }
    }

    /// Sends QMP commands in order and returns their replies; waits up to 30 s for the socket.
    fn qmp(&mut self, commands: &[serde_json::Value]) -> Vec<serde_json::Value> {
        use std::io::{BufRead, BufReader, Write};
        use std::os::unix::net::UnixStream;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(&self.qmp) {
                Ok(stream) => break stream,
                Err(e) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("qemu exited before its QMP socket opened: {status}");
                    }
                    assert!(std::time::Instant::now() < deadline, "no QMP socket: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        };
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut read_reply = || loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("QMP reply");
            assert!(n > 0, "QMP closed");
            let value: serde_json::Value = serde_json::from_str(&line).expect("QMP JSON");
            if value.get("event").is_none() {
                break value;
            }
        };
        let greeting = read_reply();
        assert!(greeting.get("QMP").is_some(), "{greeting}");
        let mut replies = Vec::new();
        for command in
            std::iter::once(&serde_json::json!({"execute": "qmp_capabilities"})).chain(commands)
        {
            writeln!(writer, "{command}").expect("QMP send");
            let reply = read_reply();
            assert!(reply.get("error").is_none(), "{command}: {reply}");
            replies.push(reply);
        }
        replies
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ELF core from an independent writer: QEMU's `dump-guest-memory` of a guest whose RAM is
/// the fixture's raw image. QEMU lays out its own segments (one per RAM block, the BIOS ROM at
/// 4 GiB - 256 KiB), writes its own notes, and says EM_386 because its vCPU never left real mode.
#[test]
fn an_elf_core_written_by_qemu_reads_as_the_dump() {
    let images = images_in("kds-cli-snapshots-qemu");
    let dir = images.dump.parent().expect("dir").to_path_buf();
    let core = dir.join("qemu.elf");
    let mut qemu = Qemu::with_raw_image(&images.raw, &dir);
    qemu.qmp(&[
        serde_json::json!({"execute": "dump-guest-memory", "arguments": {
            "paging": false, "protocol": format!("file:{}", core.display())}}),
        serde_json::json!({"execute": "quit"}),
    ]);
    drop(qemu);

    let bytes = std::fs::read(&core).expect("QEMU wrote the core");
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 3, "EM_386");

    // Every page of the raw image is in QEMU's core at the same physical address.
    let qemu_image = kds_runtime::target::PhysicalImage::open(&core).expect("core opens");
    let raw = std::fs::read(&images.raw).expect("raw");
    let mut page = vec![0u8; 0x1000];
    for (pfn, want) in raw.chunks(0x1000).enumerate() {
        qemu_image
            .read_physical(pfn as u64 * 0x1000, &mut page[..want.len()])
            .unwrap_or_else(|e| panic!("page {pfn:#x}: {e}"));
        assert!(page[..want.len()] == *want, "page {pfn:#x} differs");
    }

    let want = run_playbook(&images.dump);
    assert_eq!(want.status.code(), Some(0), "{}", text(&want.stderr));
    let out = run_playbook(&core);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), text(&want.stdout));

    let info = kds(&[
        "info",
        "-z",
        core.to_str().expect("utf-8"),
        "-y",
        "examples/symbols",
    ]);
    let stdout = text(&info.stdout);
    assert!(
        stdout.contains("Loading ELF core (QEMU/libvirt) snapshot"),
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
            "kernel base {:#x}: MZ + RSDS ntkrnlmp.pdb",
            images.kernel_base
        )),
        "{stdout}"
    );
}
