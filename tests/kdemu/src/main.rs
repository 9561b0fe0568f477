//! kds-kdemu: a debuggee emulator. Serves a crash dump as a live Windows kernel (x64, or
//! 32-bit x86 with or without PAE) over the transports a real one is reached by (unix socket, TCP, a pty as a serial line): it breaks
//! in on request, answers manipulate requests from the dump's memory and context, honours
//! Continue, and on request simulates a line rate and injects faults.

mod dump_kernel;

use clap::Parser;
use dump_kernel::{DumpKernel, DumpKernelError};
use kds_kd::debuggee::{Debuggee, DebuggeeError, DebuggeeOptions, DebuggeeStats, Event, ServeEnd};
use kds_kd::fault::{FaultConfig, FaultLink, FaultState, FaultTotals};
use kds_kd::link::{Link, LinkError, SocketLink};
use kds_runtime::target::DumpTarget;
use serde::Serialize;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[derive(Parser, Debug)]
#[command(
    name = "kds-kdemu",
    about = "Serve a crash dump as a live Windows kernel over KDCOM"
)]
struct Args {
    /// The crash dump to serve.
    #[arg(long)]
    dump: PathBuf,
    /// unix:<path>, tcp:<port> or tcp:<host>:<port> (port 0 picks one), or pty.
    #[arg(long)]
    listen: String,
    /// Simulate this line rate (10 bits a byte), e.g. 115200.
    #[arg(long)]
    baud: Option<u32>,
    /// Probability that a packet (or a chunk read) gets one bit flipped.
    #[arg(long, default_value_t = 0.0)]
    flip: f64,
    /// Probability that a packet (or a chunk read) loses one byte.
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Probability that each byte on its own gets a bit flipped (line noise).
    #[arg(long, default_value_t = 0.0)]
    flip_bytes: f64,
    /// Probability that each byte on its own is lost.
    #[arg(long, default_value_t = 0.0)]
    drop_bytes: f64,
    /// Probability that an outgoing data packet is sent twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Seed of the fault generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Answer the request after this many with a RESET (once).
    #[arg(long)]
    reset_after: Option<u64>,
    /// Drop the link at the request after this many (once); the next connection continues.
    #[arg(long)]
    disconnect_after: Option<u64>,
    /// Carry out write requests (they are counted and refused otherwise).
    #[arg(long)]
    allow_write: bool,
    /// Write counters here as JSON on every resume and at exit.
    #[arg(long)]
    report: Option<PathBuf>,
    /// MaxManipulate in the GetVersion answer (0x33; pykdclient needs 0).
    #[arg(long, default_value_t = 0x33)]
    max_manipulate: u8,
    /// Stop only on the break-in byte, not on a RESET while running.
    #[arg(long)]
    no_reset_break_in: bool,
    /// After a RESET, restart at id 0x80800000 without SYNC (ReactOS; pykdclient needs it).
    #[arg(long)]
    no_sync_after_reset: bool,
    /// Exit once the target was resumed and the link closed.
    #[arg(long)]
    exit_after_resume: bool,
}

#[derive(Debug, Error)]
enum EmuError {
    #[error("cannot open the dump {path}: {message}")]
    Dump { path: String, message: String },
    #[error(transparent)]
    Kernel(#[from] DumpKernelError),
    #[error("bad --listen {0:?}: use unix:<path>, tcp:<port>, tcp:<host>:<port> or pty")]
    Listen(String),
    #[error("cannot listen on {what}: {source}")]
    Bind { what: String, source: io::Error },
    #[error("cannot create a pty: {0}")]
    Pty(String),
    #[error(transparent)]
    Debuggee(#[from] DebuggeeError),
    #[error("cannot write the report {path}: {source}")]
    Report { path: String, source: io::Error },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

#[derive(Serialize)]
struct Report<'a> {
    resumed: bool,
    resumes: u64,
    break_ins: u64,
    resets: u64,
    write_attempts: u64,
    /// Every fault injected: link faults plus the engine's RESET and disconnect.
    faults_injected: u64,
    link_faults: FaultTotals,
    connections: u64,
    requests: &'a std::collections::BTreeMap<String, u64>,
    stats: &'a DebuggeeStats,
}

struct Emulator {
    debuggee: Debuggee<DumpKernel>,
    faults: Option<FaultState>,
    report: Option<PathBuf>,
    exit_after_resume: bool,
    connections: u64,
}

impl Emulator {
    fn write_report(&self) -> Result<(), EmuError> {
        write_report(
            self.report.as_deref(),
            self.debuggee.stats(),
            self.fault_totals(),
            self.connections,
        )
    }

    fn fault_totals(&self) -> FaultTotals {
        self.faults
            .as_ref()
            .map(|f| f.counts.totals())
            .unwrap_or_default()
    }

    /// Serve one link; true when the emulator should exit.
    fn serve<L: Link>(&mut self, link: L, stop_after_resume: bool) -> Result<bool, EmuError> {
        self.connections += 1;
        let state = self
            .faults
            .take()
            .unwrap_or_else(|| FaultState::new(FaultConfig::default()));
        let counts = state.counts.clone();
        let mut link = FaultLink::new(link, state);
        let report = self.report.clone();
        let connections = self.connections;
        let result = self.debuggee.serve(&mut link, &STOP, &mut |event, stats| {
            match event {
                Event::BrokenIn => eprintln!("kds-kdemu: break-in: target halted"),
                Event::Resumed(status) => {
                    eprintln!("kds-kdemu: target resumed (ContinueStatus {status:#010x})");
                    if let Err(e) =
                        write_report(report.as_deref(), stats, counts.totals(), connections)
                    {
                        eprintln!("kds-kdemu: {e}");
                    }
                    if stop_after_resume {
                        // A serial line never closes: give a lost ACK time to be asked for.
                        std::thread::spawn(|| {
                            std::thread::sleep(Duration::from_secs(2));
                            STOP.store(true, Ordering::SeqCst);
                        });
                    }
                }
                Event::FaultInjected(what) => eprintln!("kds-kdemu: injected fault: {what}"),
            }
        });
        self.faults = Some(link.into_state());
        let end = result?;
        match end {
            ServeEnd::Stopped => return Ok(true),
            ServeEnd::Disconnected => eprintln!("kds-kdemu: dropped the link (fault injected)"),
            ServeEnd::Closed => eprintln!("kds-kdemu: the host closed the link"),
        }
        self.write_report()?;
        Ok(self.exit_after_resume && self.debuggee.stats().resumes > 0)
    }
}

fn write_report(
    path: Option<&Path>,
    stats: &DebuggeeStats,
    link_faults: FaultTotals,
    connections: u64,
) -> Result<(), EmuError> {
    let Some(path) = path else {
        return Ok(());
    };
    let report = Report {
        resumed: stats.resumes > 0,
        resumes: stats.resumes,
        break_ins: stats.break_ins,
        resets: stats.resets,
        write_attempts: stats.write_attempts,
        faults_injected: stats.faults_injected + link_faults.total(),
        link_faults,
        connections,
        requests: &stats.requests,
        stats,
    };
    let fail = |source| EmuError::Report {
        path: path.display().to_string(),
        source,
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| fail(io::Error::other(e)))?;
    // Written aside and renamed, so a reader never sees half a report.
    let mut staging = path.as_os_str().to_owned();
    staging.push(".partial");
    std::fs::write(&staging, text + "\n").map_err(fail)?;
    std::fs::rename(&staging, path).map_err(fail)
}

/// The master side of a pty as a link.
struct PtyLink {
    port: serialport::TTYPort,
}

impl Link for PtyLink {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LinkError> {
        use serialport::SerialPort;
        self.port
            .set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(|e| LinkError::Io(io::Error::other(e.to_string())))?;
        match self.port.read(buf) {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(0)
            }
            // EIO: no process has the slave open; like an unplugged serial cable.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                std::thread::sleep(timeout.min(Duration::from_millis(50)));
                Ok(0)
            }
            Err(e) => Err(LinkError::Io(e)),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.port.write_all(bytes)?;
        self.port.flush()?;
        Ok(())
    }
}

fn run(args: Args) -> Result<(), EmuError> {
    let target = DumpTarget::open(&args.dump).map_err(|e| EmuError::Dump {
        path: args.dump.display().to_string(),
        message: e.to_string(),
    })?;
    let mut kernel = DumpKernel::new(target)?;
    kernel.set_max_manipulate(args.max_manipulate);
    let version = kernel.version();
    let options = DebuggeeOptions {
        allow_write: args.allow_write,
        reset_after: args.reset_after,
        disconnect_after: args.disconnect_after,
        reset_breaks_in: !args.no_reset_break_in,
        sync_after_reset: !args.no_sync_after_reset,
        ..DebuggeeOptions::default()
    };
    let faults = FaultConfig {
        flip: args.flip,
        drop: args.drop,
        duplicate: args.duplicate,
        flip_bytes: args.flip_bytes,
        drop_bytes: args.drop_bytes,
        seed: args.seed,
        baud: args.baud,
    };
    let mut emu = Emulator {
        debuggee: Debuggee::new(kernel, options),
        faults: Some(FaultState::new(faults)),
        report: args.report.clone(),
        exit_after_resume: args.exit_after_resume,
        connections: 0,
    };
    eprintln!(
        "kds-kdemu: serving {} (build {}, KernBase {:#x}, PsLoadedModuleList {:#x})",
        args.dump.display(),
        version.minor,
        version.kernel_base,
        version.ps_loaded_module_list
    );
    emu.write_report()?;
    let listen = args.listen.as_str();
    if let Some(path) = listen.strip_prefix("unix:") {
        serve_unix(&mut emu, Path::new(path))?;
    } else if let Some(address) = listen.strip_prefix("tcp:") {
        serve_tcp(&mut emu, address)?;
    } else if listen == "pty" {
        serve_pty(&mut emu)?;
    } else {
        return Err(EmuError::Listen(args.listen.clone()));
    }
    emu.write_report()
}

fn serve_unix(emu: &mut Emulator, path: &Path) -> Result<(), EmuError> {
    use std::os::unix::net::UnixListener;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| EmuError::Bind {
        what: path.display().to_string(),
        source,
    })?;
    listener.set_nonblocking(true)?;
    eprintln!("kds-kdemu: listening on unix:{}", path.display());
    let result = (|| loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                eprintln!("kds-kdemu: host connected");
                if emu.serve(SocketLink::new(stream), false)? {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(EmuError::Io(e)),
        }
    })();
    let _ = std::fs::remove_file(path);
    result
}

fn serve_tcp(emu: &mut Emulator, address: &str) -> Result<(), EmuError> {
    use std::net::TcpListener;
    let address = if address.contains(':') {
        address.to_string()
    } else {
        format!("127.0.0.1:{address}")
    };
    let listener = TcpListener::bind(&address).map_err(|source| EmuError::Bind {
        what: address.clone(),
        source,
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    eprintln!("kds-kdemu: listening on tcp:{bound}");
    println!("tcp: {}", bound.port());
    io::stdout().flush()?;
    loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false)?;
                let _ = stream.set_nodelay(true);
                eprintln!("kds-kdemu: host connected from {peer}");
                if emu.serve(SocketLink::new(stream), false)? {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(EmuError::Io(e)),
        }
    }
}

fn serve_pty(emu: &mut Emulator) -> Result<(), EmuError> {
    use serialport::SerialPort;
    let (master, slave) = serialport::TTYPort::pair().map_err(|e| EmuError::Pty(e.to_string()))?;
    let name = slave
        .name()
        .ok_or_else(|| EmuError::Pty("the slave has no name".into()))?;
    eprintln!("kds-kdemu: listening on pty {name}");
    println!("pty: {name}");
    io::stdout().flush()?;
    // The slave stays open here so the master never sees a hang-up between hosts.
    let _slave = slave;
    let stop_after_resume = emu.exit_after_resume;
    loop {
        // A serial line does not go away: after an injected disconnect, serve it again.
        let port = master
            .try_clone_native()
            .map_err(|e| EmuError::Pty(e.to_string()))?;
        if emu.serve(PtyLink { port }, stop_after_resume)? || STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kds-kdemu: {e}");
            ExitCode::FAILURE
        }
    }
}
