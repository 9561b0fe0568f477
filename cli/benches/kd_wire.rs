//! Wire cost of `!process 0 0` over live KD: bytes on the wire, round trips and wall time,
//! against the distinct bytes the command reads (what any cache must fetch at least), on the
//! debuggee emulator serving the demo dump at full speed (unix socket) and at 115200 baud
//! (pty). `cargo bench -p kds --bench kd_wire`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEMO: &str = "examples/demo/MEMORY.DMP";
const SYMBOLS: &str = "examples/symbols";
const COMMAND: &str = "!process 0 0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn emulator() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "-q", "--release", "-p", "kds-kdemu"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building kds-kdemu failed");
    repo().join("target/release/kds-kdemu")
}

fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

struct Run {
    wall: Duration,
    sent: u64,
    received: u64,
    round_trips: u64,
}

fn live(connection: &str) -> Run {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kds"))
        .current_dir(repo())
        .args([
            "run", "-c", COMMAND, "-k", connection, "-y", SYMBOLS, "--stats",
        ])
        .output()
        .expect("kds runs");
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let wire = stderr
        .lines()
        .find_map(|l| l.strip_prefix("wire: "))
        .expect("wire stats");
    let n = numbers(wire);
    Run {
        wall,
        sent: n[0],
        received: n[1],
        round_trips: n[2],
    }
}

fn main() {
    let emulator = emulator();
    let dump = Command::new(env!("CARGO_BIN_EXE_kds"))
        .current_dir(repo())
        .args(["run", "-c", COMMAND, "-z", DEMO, "-y", SYMBOLS, "--stats"])
        .output()
        .expect("kds runs");
    let stderr = String::from_utf8_lossy(&dump.stderr);
    let reads = stderr
        .lines()
        .find_map(|l| l.strip_prefix("target reads: "))
        .expect("read stats");
    let r = numbers(reads);
    let (read_calls, asked, distinct) = (r[0], r[1], r[2]);
    println!("`{COMMAND}` on the demo dump, served by kds-kdemu");
    println!(
        "  minimum: {distinct} distinct bytes read ({asked} bytes in {read_calls} reads, \
         page tables and handle tables included)"
    );
    println!(
        "  {:<24} {:>10} {:>12} {:>11} {:>8} {:>12}",
        "link", "wall", "wire bytes", "round trips", "x min", "line floor"
    );

    let dir = std::env::temp_dir().join(format!("kds-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    for baud in [None, Some(115_200u32)] {
        let mut cmd = Command::new(&emulator);
        cmd.current_dir(repo())
            .args(["--dump", DEMO, "--exit-after-resume", "--listen"]);
        let socket = dir.join("kd.sock");
        match baud {
            None => {
                let _ = std::fs::remove_file(&socket);
                cmd.arg(format!("unix:{}", socket.display()));
            }
            Some(b) => {
                cmd.args(["pty", "--baud", &b.to_string()]);
            }
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("emulator starts");
        let connection = match baud {
            None => {
                while !socket.exists() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                format!("unix:{}", socket.display())
            }
            Some(b) => {
                let mut line = String::new();
                BufReader::new(child.stdout.take().expect("stdout"))
                    .read_line(&mut line)
                    .expect("pty line");
                let pty = line.trim().trim_start_matches("pty: ").to_string();
                format!("com:port={pty},baud={b}")
            }
        };
        let run = live(&connection);
        let _ = child.wait();
        let wire = run.sent + run.received;
        let label = baud.map_or("unix socket, full speed".to_string(), |b| {
            format!("pty at {b} baud")
        });
        // The distinct bytes alone, at this line rate, with no protocol overhead at all.
        let floor = baud.map_or("-".to_string(), |b| {
            format!("{:.1} s", distinct as f64 * 10.0 / f64::from(b))
        });
        println!(
            "  {:<24} {:>8.2} s {:>12} {:>11} {:>8.2} {:>12}",
            label,
            run.wall.as_secs_f64(),
            wire,
            run.round_trips,
            wire as f64 / distinct as f64,
            floor
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
