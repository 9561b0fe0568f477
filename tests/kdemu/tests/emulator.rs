//! The kds-kdemu binary serving the demo dump, driven by the host engine.

#![cfg(unix)]

mod common;

use common::{demo_dump, expected, present_run, scratch, wait_exit};
use kds_kd::host::{HostOptions, KdHost};
use kds_kd::link::SocketLink;
use kds_runtime::target::Target;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Emulator {
    child: Child,
    socket: PathBuf,
    report: PathBuf,
}

impl Emulator {
    fn start(name: &str, extra: &[&str]) -> Emulator {
        let dir = scratch(name);
        let socket = dir.join("kd.sock");
        let report = dir.join("report.json");
        let child = Command::new(env!("CARGO_BIN_EXE_kds-kdemu"))
            .arg("--dump")
            .arg(demo_dump())
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--report")
            .arg(&report)
            .arg("--exit-after-resume")
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !socket.exists() {
            assert!(started.elapsed() < Duration::from_secs(60), "no socket");
            std::thread::sleep(Duration::from_millis(50));
        }
        Emulator {
            child,
            socket,
            report,
        }
    }

    fn host(&self) -> KdHost {
        let stream = UnixStream::connect(&self.socket).unwrap();
        let mut host = KdHost::new(
            Box::new(SocketLink::new(stream)),
            HostOptions {
                connect_timeout: Some(Duration::from_secs(30)),
                ..HostOptions::default()
            },
        );
        let socket = self.socket.clone();
        host.set_reopen(Box::new(move || {
            let stream = UnixStream::connect(&socket)?;
            Ok(Box::new(SocketLink::new(stream)) as Box<dyn kds_kd::link::Link>)
        }));
        host
    }

    fn wait(mut self) -> serde_json::Value {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "kds-kdemu exited with {status}");
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("kds-kdemu did not exit after the resume");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&self.report).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

#[test]
fn serves_the_demo_dump_over_a_unix_socket() {
    let want = expected();
    let emu = Emulator::start("plain", &[]);
    let mut host = emu.host();
    let version = host.connect().unwrap();
    assert_eq!(version.kernel_base, want.kern_base);
    assert_eq!(version.ps_loaded_module_list, want.ps_loaded_module_list);
    assert_eq!(u32::from(version.minor), want.build);
    assert_eq!(version.machine, 0x8664);
    assert!(version.is_ptr64());

    // The debugger data list's head leads to the KDBG.
    let mut flink = [0u8; 8];
    host.read_virtual(version.debugger_data_list, &mut flink)
        .unwrap();
    assert_eq!(u64::from_le_bytes(flink), want.kdbg);

    // Physical memory equals the dump's, across blocks and transfers.
    let pa = present_run(&want.target, 4);
    let mut got = vec![0u8; 3 * 3944 + 77];
    host.read_physical(pa + 100, &mut got).unwrap();
    let mut reference = vec![0u8; got.len()];
    want.target.read_physical(pa + 100, &mut reference).unwrap();
    assert!(got == reference);

    // The kernel's MZ header, virtually.
    let mut mz = [0u8; 2];
    host.read_virtual(version.kernel_base, &mut mz).unwrap();
    assert_eq!(&mz, b"MZ");

    // Cr3 in the special registers is the dump's DTB; the context is the header's.
    let special = host.read_control_space(0, 2, 0x20).unwrap();
    assert_eq!(
        u64::from_le_bytes(special[0x10..0x18].try_into().unwrap()),
        want.dtb
    );
    let context = host.get_context(0).unwrap();
    assert_eq!(context, want.target.dump().header().context.to_vec());
    let halted = host.halted().unwrap().clone();
    assert_eq!(
        halted.program_counter,
        want.target.dump().header().context_rip()
    );
    let thread = host.read_control_space(0, 3, 8).unwrap();
    assert_eq!(
        u64::from_le_bytes(thread.try_into().unwrap()),
        halted.thread
    );

    host.resume().unwrap();
    drop(host);
    let report = emu.wait();
    assert_eq!(report["resumed"], true);
    assert_eq!(report["resumes"], 1);
    assert_eq!(report["write_attempts"], 0);
    assert_eq!(report["requests"]["GetVersion"], 1);
}

#[test]
fn faults_and_a_reconnect_still_end_resumed() {
    let want = expected();
    let emu = Emulator::start(
        "faults",
        &[
            "--flip",
            "0.02",
            "--drop",
            "0.02",
            "--duplicate",
            "0.05",
            "--seed",
            "5",
            "--reset-after",
            "3",
            "--disconnect-after",
            "6",
        ],
    );
    let mut host = emu.host();
    let version = host.connect().unwrap();
    assert_eq!(version.kernel_base, want.kern_base);
    let mut got = vec![0u8; 64 * 1024];
    let pa = present_run(&want.target, 17);
    // The RESET and the reconnect make the kernel repeat its state change mid-read; the
    // blocks read before it stay good.
    host.read_physical(pa, &mut got).unwrap();
    let mut reference = vec![0u8; got.len()];
    want.target.read_physical(pa, &mut reference).unwrap();
    assert!(got == reference);
    host.resume().unwrap();
    drop(host);
    let report = emu.wait();
    assert_eq!(report["resumed"], true);
    assert_eq!(report["resumes"], 1);
    assert!(report["faults_injected"].as_u64().unwrap() >= 2);
    assert!(report["connections"].as_u64().unwrap() >= 2);
}

/// Start kds-kdemu with `args` and return it with the first stdout line.
fn start_with_stdout(args: &[&str]) -> (Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kds-kdemu"))
        .arg("--dump")
        .arg(demo_dump())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_string())
}

#[test]
fn tcp_at_a_line_rate_and_sigterm() {
    let want = expected();
    let dir = scratch("tcp");
    let report = dir.join("report.json");
    let (mut child, line) = start_with_stdout(&[
        "--listen",
        "tcp:0",
        "--baud",
        "115200",
        "--report",
        report.to_str().unwrap(),
    ]);
    let port: u16 = line.strip_prefix("tcp: ").unwrap().parse().unwrap();
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut host = KdHost::new(Box::new(SocketLink::new(stream)), HostOptions::default());
    let version = host.connect().unwrap();
    assert_eq!(version.kernel_base, want.kern_base);
    let pa = present_run(&want.target, 4);
    let mut got = vec![0u8; 16 * 1024];
    let started = Instant::now();
    host.read_physical(pa, &mut got).unwrap();
    let elapsed = started.elapsed();
    // 16 KiB of payload at 10 bits a byte and 115200 baud is at least 1.42 s.
    let floor = Duration::from_secs_f64(got.len() as f64 * 10.0 / 115_200.0);
    assert!(elapsed >= floor, "{elapsed:?} < {floor:?}");
    let mut reference = vec![0u8; got.len()];
    want.target.read_physical(pa, &mut reference).unwrap();
    assert!(got == reference);
    host.resume().unwrap();
    // Without --exit-after-resume it keeps serving until SIGTERM.
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none());
    // SAFETY: signalling our own child by its id.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(wait_exit(&mut child).success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["resumed"], true);
    assert_eq!(report["resumes"], 1);
}

#[test]
fn a_pty_is_a_serial_line() {
    let want = expected();
    let (mut child, line) = start_with_stdout(&["--listen", "pty", "--exit-after-resume"]);
    let path = line.strip_prefix("pty: ").unwrap().to_string();
    let link = kds_kd::link::SerialLink::open(&path, 115_200).unwrap();
    let mut host = KdHost::new(Box::new(link), HostOptions::default());
    let version = host.connect().unwrap();
    assert_eq!(version.kernel_base, want.kern_base);
    assert_eq!(version.ps_loaded_module_list, want.ps_loaded_module_list);
    let mut mz = [0u8; 2];
    host.read_virtual(version.kernel_base, &mut mz).unwrap();
    assert_eq!(&mz, b"MZ");
    host.resume().unwrap();
    drop(host);
    assert!(wait_exit(&mut child).success());
}

/// A panic in kds while the target is broken in: unwinding drops the `KdTarget`, and its
/// drop resumes the kernel. The identity it built from the handshake is the dump's.
#[test]
fn a_panic_while_broken_in_still_resumes_the_target() {
    use kds_kd::connection::Connection;
    use kds_runtime::target::{KdTarget, LiveOptions};
    let want = expected();
    let emu = Emulator::start("panic", &[]);
    let connection = Connection::parse(&format!("unix:{}", emu.socket.display())).unwrap();
    let worker = std::thread::spawn(move || {
        let target =
            KdTarget::connect(&connection, LiveOptions::default(), Box::new(|_| {})).unwrap();
        let identity = target.identity().clone();
        assert_eq!(identity.kernel_base, Some(want.kern_base));
        assert_eq!(identity.directory_table_base, want.dtb);
        assert_eq!(identity.kd_debugger_data_block, Some(want.kdbg));
        let mut mz = [0u8; 2];
        let pa = target.read_physical(0, &mut mz);
        assert!(pa.is_ok());
        panic!("a bug in kds while the target is frozen");
    });
    assert!(worker.join().is_err(), "the worker panicked");
    let report = emu.wait();
    assert_eq!(report["resumed"], true);
    assert_eq!(report["resumes"], 1);
    assert_eq!(report["write_attempts"], 0);
}
