//! Open time and peak memory of kds-crashdump vs kdmp-parser 0.8 on 16 GiB bitmap dumps.
//!
//! `cargo bench -p kds-crashdump --bench open`. The dumps are sparse files: headers and bitmap
//! are written, the page area is a hole made with `set_len`, so they cost little disk. Each
//! measurement runs in a fresh child process (this binary re-executed with `--child`) so that
//! peak RSS (`VmHWM` from /proc/self/status) belongs to one parser only.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kds_crashdump::{encode_headers, CrashDump, DumpType, HeaderFields, WriteKind, PAGE_SIZE};

const RUNS: usize = 5;
const GIB: u64 = 1 << 30;

struct Scenario {
    name: &'static str,
    dump_type: DumpType,
    /// Page frames covered by the bitmap.
    frames: u64,
    present: fn(u64) -> bool,
}

const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "kernel bitmap (type 6), every 8th page of 16 GiB",
        dump_type: DumpType::BitmapKernel,
        frames: 16 * GIB / PAGE_SIZE as u64,
        present: |pfn| pfn % 8 == 0,
    },
    Scenario {
        name: "full bitmap (type 5), every page of 16 GiB",
        dump_type: DumpType::BitmapFull,
        frames: 16 * GIB / PAGE_SIZE as u64,
        present: |_| true,
    },
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let parser = args.get(i + 1).map(String::as_str).unwrap_or("");
        let path = args.get(i + 2).map(PathBuf::from).unwrap_or_default();
        child(parser, &path);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("open: benchmark");
        return;
    }

    let dir = std::env::temp_dir().join(format!("kds-crashdump-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the bench directory");
    let baseline = measure("baseline", Path::new(""));
    println!(
        "baseline: an idle child process peaks at {:.1} MiB RSS\n",
        mib(baseline.peak_kib)
    );
    for scenario in &SCENARIOS {
        let path = dir.join("bench.dmp");
        let (present, file_size) = make_sparse_dump(&path, scenario);
        let on_disk = disk_usage(&path);
        println!("{}", scenario.name);
        println!(
            "  {} page frames, {} pages present; file {:.1} GiB, {:.1} MiB on disk (sparse)",
            scenario.frames,
            present,
            file_size as f64 / GIB as f64,
            mib(on_disk / 1024),
        );
        // Warm the page cache once per parser, then measure.
        let _ = measure("kds", &path);
        let _ = measure("kdmp", &path);
        let ours = measure_many("kds", &path);
        let theirs = measure_many("kdmp", &path);
        assert_eq!(ours.pages, present, "kds-crashdump page count");
        assert_eq!(theirs.pages, present, "kdmp-parser page count");

        println!(
            "  {:<14} {:>16} {:>16} {:>20}",
            "parser", "open (median)", "peak RSS", "peak RSS - baseline"
        );
        for (name, m) in [("kds-crashdump", &ours), ("kdmp-parser", &theirs)] {
            println!(
                "  {:<14} {:>13.2} ms {:>12.1} MiB {:>16.1} MiB",
                name,
                m.open_ns as f64 / 1e6,
                mib(m.peak_kib),
                mib(m.peak_kib.saturating_sub(baseline.peak_kib)),
            );
        }
        let over = |m: &Measurement| m.peak_kib.saturating_sub(baseline.peak_kib).max(1) as f64;
        println!(
            "  {:<14} {:>14.0}x {:>15.1}x {:>19.1}x\n",
            "kdmp / kds",
            theirs.open_ns as f64 / ours.open_ns.max(1) as f64,
            theirs.peak_kib as f64 / ours.peak_kib.max(1) as f64,
            over(&theirs) / over(&ours),
        );
        std::fs::remove_file(&path).expect("removing the bench dump");
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Writes headers and bitmap for `scenario`, then extends the file over the page area without
/// writing it. Returns (present pages, file size).
fn make_sparse_dump(path: &Path, scenario: &Scenario) -> (u64, u64) {
    let pfns: Vec<u64> = (0..scenario.frames)
        .filter(|&p| (scenario.present)(p))
        .collect();
    let header = HeaderFields {
        minor_version: 19041,
        // Page 0 is present and, being a hole, all zero: kdmp-parser's walk of the module list
        // at open stops at once.
        directory_table_base: 0,
        ps_loaded_module_list: 0xffff_f803_3fc2_a2d0,
        kd_debugger_data_block: 0xffff_f803_3fa0_0b20,
        ..HeaderFields::default()
    };
    let kind = WriteKind::Bitmap {
        dump_type: scenario.dump_type,
    };
    let encoded = encode_headers(&header, kind, &pfns).expect("encoding the bench headers");
    let mut file = File::create(path).expect("creating the bench dump");
    file.write_all(&encoded.bytes)
        .expect("writing the bench headers");
    file.set_len(encoded.file_size)
        .expect("extending the bench dump");
    (pfns.len() as u64, encoded.file_size)
}

#[derive(Debug, Clone, Copy)]
struct Measurement {
    open_ns: u64,
    peak_kib: u64,
    pages: u64,
}

fn measure_many(parser: &str, path: &Path) -> Measurement {
    let mut runs: Vec<Measurement> = (0..RUNS).map(|_| measure(parser, path)).collect();
    runs.sort_by_key(|m| m.open_ns);
    let median_time = runs[RUNS / 2];
    let peak_kib = runs.iter().map(|m| m.peak_kib).max().unwrap_or(0);
    Measurement {
        peak_kib,
        ..median_time
    }
}

fn measure(parser: &str, path: &Path) -> Measurement {
    let exe = std::env::current_exe().expect("finding the bench binary");
    let out = Command::new(exe)
        .arg("--child")
        .arg(parser)
        .arg(path)
        .output()
        .expect("running a bench child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {parser} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> u64 {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child {parser} printed no {name}: {stdout}"))
    };
    Measurement {
        open_ns: field("open_ns"),
        peak_kib: field("vmhwm_kib"),
        pages: field("pages"),
    }
}

/// Runs in the child: open with one parser, report time, pages and peak RSS.
fn child(parser: &str, path: &Path) {
    let start = Instant::now();
    let pages = match parser {
        "baseline" => 0,
        "kds" => {
            let dump = CrashDump::open(path).expect("kds-crashdump opens the bench dump");
            let pages = dump.present_page_count();
            std::hint::black_box(dump.page(0).map(|p| p[0]));
            std::mem::forget(dump); // measured while still open
            pages
        }
        "kdmp" => {
            let dump = kdmp_parser::parse::KernelDumpParser::new(path)
                .expect("kdmp-parser opens the bench dump");
            let pages = dump.physmem().len() as u64;
            std::mem::forget(dump);
            pages
        }
        other => panic!("unknown parser {other}"),
    };
    let open_ns = start.elapsed().as_nanos() as u64;
    println!("open_ns={open_ns} vmhwm_kib={} pages={pages}", vm_hwm_kib());
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(unix)]
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

#[cfg(not(unix))]
fn disk_usage(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
