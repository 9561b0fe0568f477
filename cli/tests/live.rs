//! `kds` against a live kernel: the debuggee emulator (kds-kdemu) serving the demo dump over
//! a unix socket or a pty, with line rate and faults. Every test checks the emulator's own
//! report that the target was resumed (or, with `--stay-broken`, that it was not), and that
//! no write request reached it.

#![cfg(unix)]

mod common;

use common::{kds, repo, text};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DEMO: &str = "examples/demo/MEMORY.DMP";
const PLAYBOOK: &str = "examples/hang-triage.kds";
const SYMBOLS: &str = "examples/symbols";

/// The emulator binary, built by cargo so it is never stale (a no-op when up to date).
fn emulator_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(repo())
            .args(["build", "-q", "-p", "kds-kdemu"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building kds-kdemu failed");
        // target/<profile>/deps/live-<hash> -> target/<profile>/kds-kdemu
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe.parent().and_then(Path::parent).expect("target dir");
        dir.join("kds-kdemu")
    })
}

fn scratch(name: &str) -> PathBuf {
    // Per test, not per process: reruns empty and reuse it.
    let dir = std::env::temp_dir().join("kds-live").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A running emulator and where kds reaches it.
struct Emulator {
    child: Child,
    connection: String,
    report: PathBuf,
}

impl Emulator {
    /// Serve the demo dump on a unix socket with `extra` emulator flags.
    fn unix(name: &str, extra: &[&str]) -> Emulator {
        Self::unix_serving(name, Path::new(DEMO), extra)
    }

    /// Serve `dump` on a unix socket with `extra` emulator flags.
    fn unix_serving(name: &str, dump: &Path, extra: &[&str]) -> Emulator {
        let dir = scratch(name);
        let socket = dir.join("kd.sock");
        let report = dir.join("report.json");
        let child = Command::new(emulator_binary())
            .current_dir(repo())
            .arg("--dump")
            .arg(dump)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--report")
            .arg(&report)
            .arg("--exit-after-resume")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("emulator starts");
        let started = Instant::now();
        while !socket.exists() {
            assert!(started.elapsed() < Duration::from_secs(30), "no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Emulator {
            child,
            connection: format!("unix:{}", socket.display()),
            report,
        }
    }

    /// Serve the demo dump on a pty at `baud`; kds opens the slave as a COM port.
    fn pty(name: &str, baud: u32) -> Emulator {
        let dir = scratch(name);
        let report = dir.join("report.json");
        let mut child = Command::new(emulator_binary())
            .current_dir(repo())
            .args(["--dump", DEMO, "--listen", "pty", "--baud"])
            .arg(baud.to_string())
            .arg("--report")
            .arg(&report)
            .arg("--exit-after-resume")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("emulator starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the pty line");
        let pty = line
            .trim()
            .strip_prefix("pty: ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Emulator {
            child,
            connection: format!("com:port={pty},baud={baud}"),
            report,
        }
    }

    /// Wait for the emulator to exit (it does after a resume and the host leaving), else stop
    /// it; then its report.
    fn finish(mut self) -> Value {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            // Still serving (not resumed): SIGTERM writes the report and exits.
            signal(&self.child, libc::SIGTERM);
            let _ = self.child.wait();
        }
        let text = std::fs::read_to_string(&self.report).expect("emulator report");
        serde_json::from_str(&text).expect("report is JSON")
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid; no memory is shared.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// The playbook's output on the dump itself: what every live run must reproduce.
fn dump_output(playbook_args: &[&str]) -> String {
    let mut args = vec!["run"];
    args.extend_from_slice(playbook_args);
    args.extend_from_slice(&["-z", DEMO, "-y", SYMBOLS]);
    let out = kds(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn live_run(emu: &Emulator, playbook_args: &[&str], extra: &[&str]) -> Output {
    let mut args = vec!["run"];
    args.extend_from_slice(playbook_args);
    args.extend_from_slice(&["-k", &emu.connection, "-y", SYMBOLS]);
    args.extend_from_slice(extra);
    kds(&args)
}

/// `wire: N bytes sent, M bytes received, R round trips, ...` from `--stats`.
fn wire_stats(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("wire: "))
        .unwrap_or_else(|| panic!("no wire stats in {stderr}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

fn assert_resumed_once(report: &Value) {
    assert_eq!(report["resumed"], true, "{report:#}");
    assert_eq!(report["resumes"], 1, "{report:#}");
    assert_eq!(report["write_attempts"], 0, "{report:#}");
}

#[test]
fn hang_playbook_over_a_pty_at_115200_baud_matches_the_dump() {
    let want = dump_output(&[PLAYBOOK]);
    let emu = Emulator::pty("pty115200", 115_200);
    let started = Instant::now();
    let out = live_run(&emu, &[PLAYBOOK], &["--stats"]);
    let elapsed = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        text(&out.stdout),
        want,
        "live output differs from the dump's"
    );
    assert!(stderr.contains("Waiting to reconnect..."), "{stderr}");
    assert!(
        stderr.contains("Connected to Windows 20348 x64 compatible target"),
        "{stderr}"
    );
    assert!(stderr.contains("Target resumed."), "{stderr}");
    let (sent, received, round_trips) = wire_stats(&stderr);
    // At 115200 baud (10 bits a byte) the bytes on the wire take at least this long.
    let line_time = Duration::from_secs_f64((sent + received) as f64 * 10.0 / 115_200.0);
    eprintln!(
        "hang playbook over a pty at 115200 baud: {sent} bytes sent, {received} received, \
         {round_trips} round trips, {elapsed:?} (line time {line_time:?})"
    );
    assert!(round_trips > 100 && received > 100_000, "{stderr}");
    assert!(
        elapsed >= line_time.mul_f64(0.9),
        "{elapsed:?} < {line_time:?}"
    );
    assert_resumed_once(&emu.finish());
}

#[test]
fn faults_on_the_wire_still_give_the_dumps_output_and_a_resumed_target() {
    let want = dump_output(&["-c", "!process 0 0"]);
    let scenarios: [(&str, &[&str]); 5] = [
        ("flips", &["--flip", "0.05", "--seed", "7"]),
        ("drops", &["--drop", "0.02", "--seed", "8"]),
        ("duplicates", &["--duplicate", "0.2", "--seed", "9"]),
        ("reset", &["--reset-after", "40"]),
        ("disconnect", &["--disconnect-after", "60"]),
    ];
    for (name, flags) in scenarios {
        let emu = Emulator::unix(name, flags);
        let out = live_run(&emu, &["-c", "!process 0 0"], &["--stats"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert_eq!(text(&out.stdout), want, "{name}: output differs");
        let report = emu.finish();
        eprintln!(
            "{name}: faults injected {}, link faults {}, connections {}; {}",
            report["faults_injected"],
            report["link_faults"],
            report["connections"],
            stderr
                .lines()
                .find(|l| l.starts_with("wire:"))
                .unwrap_or("")
        );
        assert_resumed_once(&report);
        match name {
            "disconnect" => {
                assert!(stderr.contains("The link dropped"), "{stderr}");
                assert_eq!(report["connections"], 2, "{report:#}");
            }
            // The emulator answered one request with a RESET; the host sent the request again.
            "reset" => {
                assert_eq!(report["faults_injected"], 1, "{report:#}");
                let (_, _, _) = wire_stats(&stderr);
                assert!(!stderr.contains(" 0 resends"), "{stderr}");
            }
            _ => assert!(
                report["faults_injected"].as_u64().unwrap_or(0) > 0,
                "{name}: no fault was injected: {report:#}"
            ),
        }
    }
}

/// One byte in a hundred flipped, each on its own: most packets arrive damaged. The run either
/// gets through with the dump's output or stops with a clear error; either way the target runs
/// again.
#[test]
fn one_percent_of_bytes_flipped_gives_the_right_output_or_a_clear_error() {
    let want = dump_output(&["-c", "!process 0 0"]);
    let emu = Emulator::unix("byte-flips", &["--flip-bytes", "0.01", "--seed", "5"]);
    let out = live_run(&emu, &["-c", "!process 0 0"], &["--stats"]);
    let stderr = text(&out.stderr);
    match out.status.code() {
        Some(0) => assert_eq!(text(&out.stdout), want),
        Some(3) => assert!(
            stderr.contains("no answer from the target to ReadPhysicalMemory after"),
            "{stderr}"
        ),
        other => panic!("exit {other:?}: {stderr}"),
    }
    let report = emu.finish();
    eprintln!(
        "1% byte flips: exit {:?}, {} bytes flipped; {}",
        out.status.code(),
        report["link_faults"]["flips"],
        stderr
            .lines()
            .find(|l| l.starts_with("wire:"))
            .unwrap_or("")
    );
    assert!(report["link_faults"]["flips"].as_u64().unwrap_or(0) > 10);
    assert_resumed_once(&report);
}

/// `--record` writes the pages a live run read (before the target resumes); the recording
/// replays offline with the same output.
#[test]
fn a_recorded_live_run_replays_offline_with_the_same_output() {
    let want = dump_output(&[PLAYBOOK]);
    let emu = Emulator::unix("record", &[]);
    let recording = scratch("record-out").join("recording.dmp");
    let recording_arg = recording.display().to_string();
    let out = live_run(&emu, &[PLAYBOOK], &["--record", &recording_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), want);
    let wrote = stderr
        .find(&format!("wrote {recording_arg}"))
        .expect("a wrote line");
    let resumed = stderr.find("Target resumed.").expect("resumed");
    assert!(
        wrote < resumed,
        "the recording is written before the target runs: {stderr}"
    );
    assert_resumed_once(&emu.finish());

    let replay = kds(&["run", PLAYBOOK, "-z", &recording_arg, "-y", SYMBOLS]);
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));
    assert_eq!(text(&replay.stdout), want, "the replay differs");
    // A recording holds what the run read, not the whole machine.
    let demo_size = std::fs::metadata(repo().join(DEMO)).expect("demo").len();
    let size = std::fs::metadata(&recording).expect("recording").len();
    assert!(size < demo_size / 2, "{size} vs {demo_size}");
}

/// `kds snapshot -k ... --pages all`: a live kernel cannot list its pages, so the RAM runs come
/// from the kernel's `MmPhysicalMemoryBlock`; the pages the emulator cannot give (RAM the demo
/// dump does not hold) are left out and counted, and the written dump holds exactly the demo
/// dump's pages and reads the same.
#[test]
fn a_live_snapshot_of_all_pages_holds_every_readable_ram_page() {
    use kds_runtime::target::{DumpTarget, Target};
    let demo = DumpTarget::open(&repo().join(DEMO)).expect("demo dump");
    let demo_pfns = demo.captured_pfns().expect("the demo lists its pages");
    let emu = Emulator::unix("snapshot-all", &[]);
    let out_path = scratch("snapshot-all-out").join("all.dmp");
    let out = kds(&[
        "snapshot",
        "-k",
        &emu.connection,
        "-y",
        SYMBOLS,
        "-o",
        out_path.to_str().expect("utf-8"),
        "--pages",
        "all",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report = emu.finish();
    assert_resumed_once(&report);
    assert_eq!(report["write_attempts"], 0, "{report:#}");

    let written = DumpTarget::open(&out_path).expect("the snapshot opens");
    let written_pfns = written.captured_pfns().expect("pages");
    assert_eq!(
        written_pfns, demo_pfns,
        "the snapshot holds the demo's pages"
    );
    // Every RAM page was asked for: the written ones plus those counted as unreadable are the
    // RAM of the machine the demo was built from (`kds-fixture --seed 1`).
    let table = "examples/symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz";
    let fixture = kds_fixture::build(&kds_fixture::FixtureSpec::hung_server(
        repo().join(table),
        1,
    ))
    .expect("the demo's fixture");
    let ram_pages: u64 = fixture.machine.phys.runs().iter().map(|run| run.1).sum();
    let unreadable = ram_pages - demo_pfns.len() as u64;
    assert!(
        stderr.contains(&format!(
            "wrote {}: {} pages (",
            out_path.display(),
            demo_pfns.len()
        )) && stderr.contains(&format!(", {unreadable} chosen pages could not be read")),
        "RAM {ram_pages} pages, {} in the demo: {stderr}",
        demo_pfns.len()
    );
    let replay = kds(&[
        "run",
        PLAYBOOK,
        "-z",
        out_path.to_str().expect("utf-8"),
        "-y",
        SYMBOLS,
    ]);
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));
    assert_eq!(text(&replay.stdout), dump_output(&[PLAYBOOK]));
}

#[test]
fn a_script_error_still_resumes_the_target() {
    let emu = Emulator::unix("script-error", &[]);
    let out = live_run(
        &emu,
        &["-c", "!process 0 0 lsass.exe; dt nt!_NO_SUCH_TYPE"],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(text(&out.stdout).contains("Image: lsass.exe"));
    assert!(stderr.contains("Target resumed."), "{stderr}");
    assert_resumed_once(&emu.finish());
}

#[test]
fn stay_broken_leaves_the_target_frozen_and_says_so() {
    let emu = Emulator::unix("stay-broken", &[]);
    let out = live_run(&emu, &["-c", "lm"], &["--stay-broken"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("The target stays broken in (--stay-broken)"),
        "{stderr}"
    );
    let report = emu.finish();
    assert_eq!(report["resumed"], false, "{report:#}");
    assert_eq!(report["resumes"], 0, "{report:#}");
}

#[test]
fn the_freeze_budget_resumes_the_target_and_fails_the_run() {
    // 9600 baud: the playbook needs minutes; the budget allows two seconds.
    let emu = Emulator::pty("freeze", 9600);
    let started = Instant::now();
    let out = live_run(&emu, &[PLAYBOOK], &["--max-freeze", "2s"]);
    let stderr = text(&out.stderr);
    assert!(started.elapsed() < Duration::from_secs(60), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--max-freeze budget of 2s"), "{stderr}");
    assert!(stderr.contains("the target was resumed"), "{stderr}");
    assert_resumed_once(&emu.finish());
}

#[test]
fn sigint_during_a_long_read_resumes_the_target_before_exit() {
    let emu = Emulator::pty("sigint", 9600);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kds"))
        .current_dir(repo())
        .args(["run", PLAYBOOK, "-k", &emu.connection, "-y", SYMBOLS])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kds runs");
    // Connected and reading (at 9600 baud the playbook takes minutes).
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().expect("wait").is_none(), "kds ended early");
    signal(&child, libc::SIGINT);
    let started = Instant::now();
    let out = loop {
        if child.try_wait().expect("wait").is_some() {
            break child.wait_with_output().expect("output");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kds did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("Target resumed."), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_resumed_once(&emu.finish());
}

#[test]
fn a_bad_connection_string_is_a_clear_error() {
    let out = kds(&["info", "-k", "com:parity=odd"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad connection string"), "{stderr}");
    assert!(
        stderr.contains("unknown com option `parity=odd`"),
        "{stderr}"
    );
}

#[test]
fn nobody_answering_times_out_with_a_clear_error() {
    let dir = scratch("silent");
    let socket = dir.join("kd.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let connection = format!("unix:{}", socket.display());
    let started = Instant::now();
    let out = kds(&["info", "-k", &connection, "--connect-timeout", "3s"]);
    drop(listener);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("Waiting to reconnect..."), "{stderr}");
    assert!(stderr.contains("did not answer the break-in"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A 32-bit kernel over KD: the emulator serves a fixture's 32-bit dump as a live 32-bit
/// kernel (sign-extended wire addresses, x86 control report, KPROCESSOR_STATE control space,
/// x86 CONTEXT). kds must give the dump's output, with PAE and without.
#[test]
fn a_32_bit_kernel_over_kd_reads_as_its_dump() {
    use kds_fixture::dumpfile::{write_dump, DumpKind};
    let shared = repo().join("../shared/symbols/x86");
    for (name, table, pae) in [
        ("x86-pae", "win10_x86_19041.json.xz", true),
        ("x86-2level", "win7_sp1_x86.json.xz", false),
    ] {
        let dir = scratch(&format!("{name}-files"));
        let fixture = kds_fixture::build(&kds_fixture::FixtureSpec::hung_server(
            shared.join(table),
            7,
        ))
        .expect("x86 fixture");
        let dump = dir.join("memory.dmp");
        write_dump(&fixture, &dump, DumpKind::BitmapFull).expect("32-bit dump");
        let symbols = dir.join("symbols");
        fixture
            .x86_table
            .as_ref()
            .expect("an x86 fixture writes its table")
            .store(&symbols)
            .expect("table");
        let symbols = symbols.to_str().expect("utf-8");
        let dump_text = dump.to_str().expect("utf-8");
        let commands = "!process 0 0; lm; r; !pte @eip";
        let want = kds(&["run", "-c", commands, "-z", dump_text, "-y", symbols]);
        assert_eq!(want.status.code(), Some(0), "{}", text(&want.stderr));
        let want = text(&want.stdout);
        assert!(want.contains("Image: lsass.exe"), "{want}");

        let emu = Emulator::unix_serving(name, &dump, &[]);
        let out = kds(&["run", "-c", commands, "-k", &emu.connection, "-y", symbols]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert_eq!(
            text(&out.stdout),
            want,
            "{name}: live output differs from the dump's"
        );
        assert!(
            stderr.contains("x86 compatible target") && stderr.contains("ptr64 FALSE"),
            "{name}: {stderr}"
        );
        let base = format!("Kernel base = 0x{:08x}", fixture.kernel.base);
        assert!(stderr.contains(&base), "{name}: {base} not in {stderr}");
        assert_resumed_once(&emu.finish());

        // The paging mode comes from the live kernel's CR4.PAE, not from a header.
        let emu = Emulator::unix_serving(&format!("{name}-info"), &dump, &[]);
        let info = kds(&["info", "-k", &emu.connection, "-y", symbols]);
        let stdout = text(&info.stdout);
        assert_eq!(info.status.code(), Some(0), "{}", text(&info.stderr));
        let arch = if pae { "x86 (PAE)\n" } else { "x86\n" };
        assert!(
            stdout.contains(&format!("Architecture          {arch}")),
            "{name}: {stdout}"
        );
        assert_resumed_once(&emu.finish());
    }
}
