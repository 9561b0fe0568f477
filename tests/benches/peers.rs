//! kds against Volatility 3 on the same dump, in one run: list the processes (`!process 0 0`
//! vs `windows.pslist`) and the threads with their stacks (`!process 0 6`; Volatility has no
//! stack walker, so its `windows.threads` listing is the nearest peer). Prints wall times and
//! ratios.
//!
//!     cargo bench -p kds-e2e --bench peers
//!
//! Both sides open the dump from scratch each time (kds in process, Volatility as the `vol`
//! command a user runs, offline with the table in its symbol layout).

use kds_e2e::{model_for, python_venv, repo_root, scratch_dir};
use kds_exec::{Interpreter, RunOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn kds_once(dump: &Path, symbols: &Path, source: &str) -> Duration {
    let start = Instant::now();
    let model = model_for(dump, symbols);
    let playbook = kds_lang::parse(source).expect("commands parse");
    let report = Interpreter::new(model, &RunOptions::default()).run(source, &playbook);
    assert!(report.error.is_none(), "{source}: {:?}", report.error);
    start.elapsed()
}

fn vol_once(venv: &Path, dump: &Path, symbols: &Path, cache: &Path, plugin: &str) -> Duration {
    let start = Instant::now();
    let out = Command::new(venv.join("bin/vol"))
        .args(["-q", "-r", "json", "--offline", "-f"])
        .arg(dump)
        .arg("-s")
        .arg(symbols)
        .arg("--cache-path")
        .arg(cache)
        .arg(plugin)
        .output()
        .expect("vol runs");
    assert!(out.status.success(), "vol {plugin} failed");
    start.elapsed()
}

fn main() {
    let root = repo_root();
    let dump = root.join("examples/demo/MEMORY.DMP");
    let kds_symbols = root.join("examples/symbols");
    let dir = scratch_dir("bench-peers");
    let vol_symbols = dir.join("symbols");
    let pdb_dir = vol_symbols.join("windows").join("ntkrnlmp.pdb");
    std::fs::create_dir_all(&pdb_dir).expect("symbol dir");
    for entry in std::fs::read_dir(kds_symbols.join("ntkrnlmp.pdb"))
        .expect("demo symbols")
        .flatten()
    {
        std::fs::copy(entry.path(), pdb_dir.join(entry.file_name())).expect("copy the table");
    }
    let venv = python_venv();
    let cache = dir.join("vol-cache");
    std::fs::create_dir_all(&cache).expect("vol cache dir");
    // One warm-up each (Volatility builds its cache on first use).
    vol_once(&venv, &dump, &vol_symbols, &cache, "windows.pslist");
    kds_once(&dump, &kds_symbols, "!process 0 0");

    for (what, kds_source, plugin) in [
        ("process list", "!process 0 0", "windows.pslist"),
        (
            "threads (kds: with stacks)",
            "!process 0 6",
            "windows.threads",
        ),
    ] {
        let kds = median(
            (0..RUNS)
                .map(|_| kds_once(&dump, &kds_symbols, kds_source))
                .collect(),
        );
        let vol = median(
            (0..RUNS)
                .map(|_| vol_once(&venv, &dump, &vol_symbols, &cache, plugin))
                .collect(),
        );
        println!(
            "{what:<28} kds {:>9.1} ms   volatility3 {:>9.1} ms   ratio {:>6.1}x",
            kds.as_secs_f64() * 1e3,
            vol.as_secs_f64() * 1e3,
            vol.as_secs_f64() / kds.as_secs_f64()
        );
    }
}
