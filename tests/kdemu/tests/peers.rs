//! Independent KDCOM peers against the debuggee emulator, and kds' own host in the same
//! scenarios.
//!
//! - ntoseye 0.52 (a Rust KDCOM host; the socket client) attaches to kds-kdemu serving the demo
//!   dump over a unix socket. It completes the handshake and reads the target (GetVersion,
//!   control space, the context, the kernel's PE header at KernBase), then needs the kernel's
//!   PDB (ntkrnlmp.pdb, named by the CodeView record it read over KD). No symbol store is
//!   reachable here, so its attach ends with "no matching PDB found" before any `-c` command
//!   runs; it then detaches: the byte at the stop PC is not an int3 (a "stale breakpoint"), so
//!   it resumes in place with Continue2 and writes nothing. The test asserts all that from its
//!   packet trace (NTOSEYE_KD_TRACE=1) and the emulator's report, once with the default
//!   emulator (writes refused) and once with `--allow-write`.
//! - pykdclient 0.1.1 (a Python KDCOM host, framing and handshake) is driven by
//!   `peers/pykd_driver.py` (it has no unix-socket CLI): RESET handshake, the state change,
//!   GetVersion (KernBase and PsLoadedModuleList, low 32 bits), a physical read of the kernel's
//!   MZ header, a 32-bit virtual read of NtBuildNumber in KUSER_SHARED_DATA's user mapping
//!   (0x7FFE0260: the dump's build), a 64-bit virtual read (which pykdclient cannot encode:
//!   struct.error) and Continue2 (ContinueStatus 0 on the wire, its 32-bit layout), on an emulator with `--max-manipulate 0
//!   --no-sync-after-reset` (pykdclient needs both).
//! - kds' host (`KdHost` over `Connection::parse("unix:…")`) runs against the emulator with
//!   each of those flag sets: connect, the MZ header virtually, a physical read equal to the
//!   dump's, resume; the report says resumed and no write attempt.
//!
//! Each test prints what the peer did (API counts from the report, trace lines) on stderr:
//! `cargo test -p kds-kdemu --test peers -- --nocapture`.

#![cfg(unix)]

mod common;

use common::{demo_dump, expected, present_run, scratch, wait_exit_within, Expected};
use kds_kd::connection::Connection;
use kds_kd::host::{HostOptions, KdHost};
use kds_runtime::target::Target;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any child process may run.
const CHILD_LIMIT: Duration = Duration::from_secs(90);

/// A child's exit status, stdout and stderr; it is killed past `limit`.
struct Output {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_with_limit(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = wait_exit_within(&mut child, limit);
    Output {
        success: status.success(),
        code: status.code(),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

/// kds-kdemu on a unix socket with `--exit-after-resume` and `flags`; its stderr goes to a file.
struct Emulator {
    child: Child,
    socket: PathBuf,
    report: PathBuf,
    log: PathBuf,
}

impl Emulator {
    fn start(dir: &Path, flags: &[&str]) -> Emulator {
        let socket = dir.join("kd.sock");
        let report = dir.join("report.json");
        let log = dir.join("kdemu.log");
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&report);
        let child = Command::new(env!("CARGO_BIN_EXE_kds-kdemu"))
            .arg("--dump")
            .arg(demo_dump())
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--report")
            .arg(&report)
            .arg("--exit-after-resume")
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut emu = Emulator {
            child,
            socket,
            report,
            log,
        };
        let started = Instant::now();
        while !emu.socket.exists() {
            if let Some(status) = emu.child.try_wait().unwrap() {
                panic!("kds-kdemu exited with {status}: {}", emu.log_text());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no socket");
            std::thread::sleep(Duration::from_millis(50));
        }
        emu
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the emulator to exit by itself (it does after a resume once the link closes),
    /// else stop it with SIGTERM; then its report.
    fn finish(mut self) -> serde_json::Value {
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.child.try_wait().unwrap().is_none() {
            // SAFETY: signalling our own child by its id.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let status = wait_exit_within(&mut self.child, Duration::from_secs(30));
        assert!(
            status.success(),
            "kds-kdemu exited with {status}: {}",
            self.log_text()
        );
        serde_json::from_str(&std::fs::read_to_string(&self.report).unwrap()).unwrap()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn count(report: &serde_json::Value, api: &str) -> u64 {
    report["requests"][api].as_u64().unwrap_or(0)
}

/// The report's API counts on one line.
fn api_summary(report: &serde_json::Value) -> String {
    let requests = report["requests"].as_object().cloned().unwrap_or_default();
    let apis: Vec<String> = requests.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    format!(
        "requests [{}]; break_ins {}, resets {}, write_attempts {}, resumed {} (ContinueStatus {}), connections {}",
        apis.join(", "),
        report["break_ins"],
        report["resets"],
        report["write_attempts"],
        report["resumed"],
        report["stats"]["last_continue_status"],
        report["connections"],
    )
}

/// The PDB identity in the CodeView (RSDS) record of the PE image at `base`, as a symbol store
/// names it: `<GUID><age hex>`.
fn pdb_identity(want: &Expected, base: u64) -> String {
    let s = &want.space;
    let pe = base + u64::from(s.read_u32(base + 0x3c).unwrap());
    let optional = pe + 24;
    assert_eq!(s.read_u16(optional).unwrap(), 0x20b, "a PE32+ image");
    // The debug directory is data directory 6 (PE32+ directories start at +112).
    let debug_rva = s.read_u32(optional + 112 + 6 * 8).unwrap();
    let debug_size = s.read_u32(optional + 112 + 6 * 8 + 4).unwrap();
    for entry in (0..debug_size / 28).map(|i| base + u64::from(debug_rva) + u64::from(i) * 28) {
        if s.read_u32(entry + 12).unwrap() != 2 {
            continue; // not IMAGE_DEBUG_TYPE_CODEVIEW
        }
        let rsds = base + u64::from(s.read_u32(entry + 20).unwrap());
        let mut record = [0u8; 24];
        s.read(rsds, &mut record).unwrap();
        assert_eq!(&record[..4], b"RSDS");
        let g = &record[4..20];
        let d1 = u32::from_le_bytes(g[0..4].try_into().unwrap());
        let d2 = u16::from_le_bytes(g[4..6].try_into().unwrap());
        let d3 = u16::from_le_bytes(g[6..8].try_into().unwrap());
        let rest: String = g[8..].iter().map(|b| format!("{b:02X}")).collect();
        let age = u32::from_le_bytes(record[20..24].try_into().unwrap());
        return format!("{d1:08X}{d2:04X}{d3:04X}{rest}{age:X}");
    }
    panic!("no CodeView record in the image at {base:#x}");
}

// ---------------------------------------------------------------------------------------------
// ntoseye

fn ntoseye() -> PathBuf {
    let exe = kds_e2e::python_venv().join("bin/ntoseye");
    assert!(
        exe.exists(),
        "{} missing: .ci/venv.sh installs ntoseye",
        exe.display()
    );
    exe
}

/// ntoseye in batch mode against the emulator's socket, with its packet trace.
fn run_ntoseye(dir: &Path, socket: &Path, commands: &str) -> Output {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    run_with_limit(
        Command::new(ntoseye())
            .arg("--connect")
            .arg(socket)
            .args([
                "--memory-source",
                "kd",
                "--kd-handshake-timeout",
                "30",
                "--no-pdb-from-memory",
                "--plain-repl",
                "--batch",
                "-c",
                commands,
            ])
            .env("NTOSEYE_KD_TRACE", "1")
            .env("HOME", &home)
            .env("NO_COLOR", "1")
            .env_remove("NTOSEYE_PDB_SERVERS")
            // ntoseye then asks Microsoft's symbol server for the kernel's PDB: send that
            // (https) to a closed local port so it fails at once, online or not.
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("https_proxy", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("http_proxy", "http://127.0.0.1:9")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy"),
        CHILD_LIMIT,
    )
}

/// One ntoseye session against an emulator with `flags`; asserts what ntoseye did and
/// returns the emulator's report.
fn ntoseye_scenario(name: &str, flags: &[&str]) -> serde_json::Value {
    let want = expected();
    let header = want.target.dump().header().clone();
    let rip = header.context_rip();
    let dir = scratch(name);
    let emu = Emulator::start(&dir, flags);
    let commands = format!("r rip; db {:x} L10", want.kern_base);
    let out = run_ntoseye(&dir, &emu.socket, &commands);
    let emu_log = emu.log_text();
    let report = emu.finish();

    let trace: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| {
            !l.contains("send_data: ACKed")
                && !l.contains("recv_data: accepted type=2")
                && !l.contains("send_data: type=2")
                && !l.starts_with("    ")
        })
        .collect();
    eprintln!("==== ntoseye against kds-kdemu {flags:?}: -c {commands:?}");
    eprintln!(
        "ntoseye exit {:?}; stdout: {:?}",
        out.code,
        out.stdout.trim()
    );
    eprintln!("ntoseye trace (requests and their ACKs left out):");
    for line in &trace {
        eprintln!("  | {line}");
    }
    eprintln!("emulator: {}", api_summary(&report));
    eprintln!("emulator log:\n{emu_log}");

    let text = format!("{}{}", out.stdout, out.stderr);
    // The handshake: the first stop is the dump's context, on one of its processors.
    let stop = format!(
        "/{}, exc=0x80000003, rip={rip:#x}",
        header.number_processors
    );
    assert!(
        text.contains("initial state-change received") && text.contains(&stop),
        "ntoseye did not take the emulator's stop ({stop}):\n{text}"
    );
    // What it read over KD: GetVersion and KSPECIAL_REGISTERS.
    let hints = format!(
        "memory hints: dtb={:#x} base={:#x} psmods={:#x}",
        want.dtb, want.kern_base, want.ps_loaded_module_list
    );
    assert!(text.contains(&hints), "expected `{hints}`:\n{text}");
    // The kernel's PE header, read virtually at KernBase, which names the kernel's PDB.
    let pe_read = format!("remote virtual read {:#x}+0x400 -> 0x400", want.kern_base);
    assert!(text.contains(&pe_read), "expected `{pe_read}`:\n{text}");
    let pdb = format!("ntkrnlmp.pdb/{}", pdb_identity(&want, want.kern_base));
    assert!(
        text.contains(&pdb),
        "ntoseye should ask for {pdb}, read from the image over KD:\n{text}"
    );
    // No symbol store is reachable: the attach stops there, before the commands.
    assert!(
        text.contains("no matching PDB found"),
        "ntoseye got past the PDB?\n{text}"
    );
    assert!(!out.success, "ntoseye's batch run failed without the PDB");
    // The byte at the stop PC is not an int3, so it resumes in place (no SetContext).
    assert!(
        text.contains("stale breakpoint; resuming in place"),
        "expected the stale-breakpoint resume:\n{text}"
    );

    assert!(report["break_ins"].as_u64().unwrap() >= 1);
    for api in [
        "GetVersion",
        "ReadControlSpace",
        "ReadVirtualMemory",
        "GetContext",
        "RestoreBreakPoint",
    ] {
        assert!(
            count(&report, api) > 0,
            "no {api}: {}",
            api_summary(&report)
        );
    }
    report
}

#[test]
fn ntoseye_attaches_reads_and_resumes_without_writing() {
    let report = ntoseye_scenario("ntoseye-default", &[]);
    // It asked for nothing the default emulator refuses, and its detach resumed the target
    // with Continue2 (DBG_EXCEPTION_HANDLED 0x10001 | 1 = 0x10002, as ntoseye sends it).
    assert_eq!(report["write_attempts"], 0, "{}", api_summary(&report));
    assert_eq!(
        count(&report, "SetContextEx") + count(&report, "SetContext"),
        0
    );
    assert_eq!(report["resumed"], true);
    assert_eq!(count(&report, "Continue2"), 1);
    assert_eq!(report["stats"]["last_continue_status"], 0x0001_0002);
    assert_eq!(report["connections"], 1);
}

#[test]
fn ntoseye_with_writes_allowed_resumes_the_same_way() {
    let report = ntoseye_scenario("ntoseye-allow-write", &["--allow-write"]);
    assert_eq!(report["write_attempts"], 0, "{}", api_summary(&report));
    assert_eq!(report["resumed"], true);
    assert_eq!(count(&report, "Continue2"), 1);
}

// ---------------------------------------------------------------------------------------------
// pykdclient

/// The emulator flags pykdclient needs: MaxManipulate 0 (else its GetVersion check calls
/// sys.exit()) and no SYNC id after a RESET (it never accepts a SYNC id).
const PYKD_FLAGS: &[&str] = &["--max-manipulate", "0", "--no-sync-after-reset"];

/// KUSER_SHARED_DATA's user-mode mapping: below 4 GiB, so pykdclient's u32 address reaches it.
const KUSER_SHARED_DATA_USER: u64 = 0x7FFE_0000;
/// KUSER_SHARED_DATA.NtBuildNumber (Windows 10 and later).
const NT_BUILD_NUMBER: u64 = 0x260;

fn pykd_steps(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("STEP "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

#[test]
fn pykdclient_handshakes_reads_and_continues() {
    let want = expected();
    let python = kds_e2e::python_venv().join("bin/python");
    assert!(
        python.exists(),
        "{} missing: .ci/venv.sh creates the venv",
        python.display()
    );
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pykd_driver.py");
    let kern_base_pa = want.space.physical_address(want.kern_base).unwrap();
    assert!(kern_base_pa < 1 << 32, "KernBase's page is above 4 GiB");
    let mut kernel_header = [0u8; 16];
    want.target
        .read_physical(kern_base_pa, &mut kernel_header)
        .unwrap();
    assert_eq!(&kernel_header[..2], b"MZ");
    let mut shared = [0u8; 16];
    want.space
        .read(KUSER_SHARED_DATA_USER + NT_BUILD_NUMBER, &mut shared)
        .expect("KUSER_SHARED_DATA's user mapping is in the dump's DTB");
    assert_eq!(
        u32::from_le_bytes(shared[..4].try_into().unwrap()),
        want.build,
        "NtBuildNumber in KUSER_SHARED_DATA"
    );

    let dir = scratch("pykdclient");
    let emu = Emulator::start(&dir, PYKD_FLAGS);
    let out = run_with_limit(
        Command::new(&python)
            .arg(&driver)
            .arg(&emu.socket)
            .arg(format!("{kern_base_pa:#x}"))
            .arg(format!("{:#x}", KUSER_SHARED_DATA_USER + NT_BUILD_NUMBER))
            .arg(format!("{:#x}", want.kern_base)),
        CHILD_LIMIT,
    );
    let emu_log = emu.log_text();
    let report = emu.finish();
    let steps = pykd_steps(&out.stdout);

    eprintln!("==== pykdclient against kds-kdemu {PYKD_FLAGS:?}");
    eprintln!("driver exit {:?}", out.code);
    for s in &steps {
        eprintln!("  step {s}");
    }
    eprintln!("pykdclient log (packets sent and odd ids):");
    for line in out.stderr.lines().filter(|l| {
        l.contains("Sending") || l.contains("!!!") || l.contains("Received") || l.contains("INFO")
    }) {
        eprintln!("  | {line}");
    }
    eprintln!("emulator: {}", api_summary(&report));
    eprintln!("emulator log:\n{emu_log}");

    assert!(
        out.success,
        "the driver failed:\n{}{}",
        out.stdout, out.stderr
    );
    let step = |name: &str| -> &serde_json::Value {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {}", out.stdout))
    };
    // Its RESET handshake and the state change.
    assert_eq!(step("reset")["ok"], true, "{}", out.stderr);
    assert_eq!(step("state_change")["ok"], true, "{}", out.stderr);
    // GetVersion, as pykdclient reads it: (os "a.b", "protocol", KernBase, PsLoadedModuleList,
    // DebuggerDataList), the addresses truncated to their low 32 bits. Its "protocol" is the
    // union's MachineType (0x8664); it does not read the build number (MinorVersion).
    let version = step("GetVersion");
    assert_eq!(version["ok"], true, "{version}");
    let v = &version["value"];
    assert_eq!(v[1], 0x8664, "{v}");
    assert_eq!(v[2], want.kern_base & 0xffff_ffff, "{v}");
    assert_eq!(v[3], want.ps_loaded_module_list & 0xffff_ffff, "{v}");
    assert_ne!(v[4], 0, "{v}");
    // The kernel's MZ header, physically (its u32 address layout is right below 4 GiB).
    let phys = step("ReadPhysicalMemory");
    assert_eq!(phys["ok"], true, "{phys}");
    assert_eq!(phys["value"], hex(&kernel_header), "{phys}");
    assert!(phys["value"].as_str().unwrap().starts_with("4d5a"));
    // KUSER_SHARED_DATA.NtBuildNumber at its user address, virtually: the dump's build.
    let virt = step("ReadVirtualMemory32");
    assert_eq!(virt["ok"], true, "{virt}");
    assert_eq!(virt["value"], hex(&shared), "{virt}");
    let build = u32::from_str_radix(&virt["value"].as_str().unwrap()[..8], 16)
        .unwrap()
        .swap_bytes();
    assert_eq!(build, want.build, "{virt}");
    // A 64-bit address does not fit its 'I' packing: struct.error, nothing sent.
    let wide = step("ReadVirtualMemory64");
    assert_eq!(wide["ok"], false, "{wide}");
    assert!(
        wide["error"].as_str().unwrap().starts_with("error:"),
        "{wide}"
    );
    assert_eq!(step("Continue2")["ok"], true, "{}", out.stderr);

    // The emulator's side: one RESET, the requests, and a Continue2 with ContinueStatus 0
    // (pykdclient's 32-bit layout puts its status in the pad).
    assert!(report["resets"].as_u64().unwrap() >= 1);
    assert_eq!(count(&report, "GetVersion"), 1, "{}", api_summary(&report));
    assert_eq!(count(&report, "ReadPhysicalMemory"), 1);
    assert_eq!(count(&report, "ReadVirtualMemory"), 1);
    assert_eq!(count(&report, "Continue2"), 1);
    assert_eq!(report["resumed"], true);
    assert_eq!(report["stats"]["last_continue_status"], 0);
    assert_eq!(report["write_attempts"], 0);
    assert_eq!(report["stats"]["duplicates_received"], 0);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// kds' host in the same scenarios

fn kds_host_scenario(name: &str, flags: &[&str]) {
    let want = expected();
    let dir = scratch(name);
    let emu = Emulator::start(&dir, flags);
    let link = Connection::parse(&format!("unix:{}", emu.socket.display()))
        .unwrap()
        .open()
        .unwrap();
    let mut host = KdHost::new(
        link,
        HostOptions {
            connect_timeout: Some(Duration::from_secs(30)),
            ..HostOptions::default()
        },
    );
    let version = host.connect().unwrap();
    assert_eq!(version.kernel_base, want.kern_base);
    assert_eq!(version.ps_loaded_module_list, want.ps_loaded_module_list);
    assert_eq!(u32::from(version.minor), want.build);
    let header = want.target.dump().header().clone();
    assert_eq!(host.halted().unwrap().program_counter, header.context_rip());

    let mut mz = [0u8; 16];
    host.read_virtual(version.kernel_base, &mut mz).unwrap();
    let mut reference = [0u8; 16];
    want.space.read(want.kern_base, &mut reference).unwrap();
    assert_eq!(mz, reference);
    assert_eq!(&mz[..2], b"MZ");

    let pa = present_run(&want.target, 2);
    let mut got = vec![0u8; 0x1800];
    host.read_physical(pa + 0x123, &mut got).unwrap();
    let mut reference = vec![0u8; got.len()];
    want.target
        .read_physical(pa + 0x123, &mut reference)
        .unwrap();
    assert!(got == reference, "physical read differs from the dump");

    host.resume().unwrap();
    drop(host);
    let report = emu.finish();
    eprintln!("==== kds host against kds-kdemu {flags:?}");
    eprintln!("emulator: {}", api_summary(&report));
    assert_eq!(report["resumed"], true);
    assert_eq!(report["resumes"], 1);
    assert_eq!(report["write_attempts"], 0);
    assert!(count(&report, "GetVersion") > 0);
    assert!(count(&report, "ReadVirtualMemory") > 0);
    assert!(count(&report, "ReadPhysicalMemory") > 0);
}

#[test]
fn kds_host_in_the_ntoseye_scenarios() {
    kds_host_scenario("host-default", &[]);
    kds_host_scenario("host-allow-write", &["--allow-write"]);
}

#[test]
fn kds_host_in_the_pykdclient_scenario() {
    kds_host_scenario("host-pykd", PYKD_FLAGS);
}
