//! How long kds takes to load a large PDB: types, then publics/globals/procedures, timed apart,
//! beside `llvm-pdbutil dump` of the same parts when it is installed.
//!
//! `cargo bench -p kds-pdbgen --bench pdb_load`. The PDB is built here by clang and lld-link
//! from the largest shared kernel table: every type and enum, `KDS_BENCH_COPIES` (default 8)
//! more copies of them in namespaces, and the table's symbols as exported globals and
//! functions.

use kds_pdbgen::{find_tool, generate, PdbRequest};
use kds_runtime::symbols::{load_isf_file, load_pdb_file_parts, PdbParts};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn best<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("at least one run"))
}

fn peer(tool: &Path, flag: &str, pdb: &Path) -> Option<Duration> {
    let (t, ok) = best(|| {
        Command::new(tool)
            .args(["dump", flag])
            .arg(pdb)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    ok.then_some(t)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let copies: usize = std::env::var("KDS_BENCH_COPIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let table_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz");
    let table = load_isf_file(&table_path).expect("shared table loads");
    let mut types: Vec<String> = table.type_names().map(str::to_string).collect();
    types.sort();
    let mut enums: Vec<String> = table.enum_names().map(str::to_string).collect();
    enums.sort();
    let mut symbols: Vec<String> = table
        .symbols()
        .map(|(n, _)| n.to_string())
        .filter(|n| {
            n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && n.chars().next().is_some_and(|c| !c.is_ascii_digit())
        })
        .collect();
    symbols.sort();
    let functions: Vec<String> = symbols.iter().step_by(2).cloned().collect();
    let globals: Vec<String> = symbols.iter().skip(1).step_by(2).cloned().collect();

    let request = PdbRequest::new("kds_bench", &table)
        .types(types)
        .enums(enums)
        .globals(globals)
        .functions(functions)
        .copies(copies);
    let start = Instant::now();
    let built = match generate(&request) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    let size = std::fs::metadata(&built.pdb).map(|m| m.len()).unwrap_or(0);
    println!(
        "PDB: {} types x{} copies, {} enums, {} globals, {} functions; {:.1} MB; built in {:.1} s",
        built.source.types.len(),
        copies + 1,
        built.source.enums.len(),
        built.source.globals.len(),
        built.source.functions.len(),
        size as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    let types_only = PdbParts {
        types: true,
        symbols: false,
    };
    let symbols_only = PdbParts {
        types: false,
        symbols: true,
    };
    let (t_types, table_t) = best(|| load_pdb_file_parts(&built.pdb, types_only).expect("types"));
    let (t_syms, table_s) =
        best(|| load_pdb_file_parts(&built.pdb, symbols_only).expect("symbols"));
    let (t_all, _) = best(|| load_pdb_file_parts(&built.pdb, PdbParts::ALL).expect("all"));
    println!(
        "kds types:   {:8.1} ms  ({} structs/unions, best of {RUNS})",
        ms(t_types),
        table_t.type_names().count()
    );
    println!(
        "kds symbols: {:8.1} ms  ({} symbols, {} function ranges)",
        ms(t_syms),
        table_s.symbols().count(),
        table_s.functions().len()
    );
    println!("kds all:     {:8.1} ms", ms(t_all));

    match find_tool(&["llvm-pdbutil", "llvm-pdbutil-19", "llvm-pdbutil-14"]) {
        Some(tool) => {
            for (flag, ours, what) in [
                ("-types", t_types, "types"),
                ("-publics", t_syms, "publics"),
            ] {
                if let Some(t) = peer(&tool, flag, &built.pdb) {
                    println!(
                        "llvm-pdbutil dump {flag}: {:8.1} ms  (kds {what} takes {:.2}x its time)",
                        ms(t),
                        ours.as_secs_f64() / t.as_secs_f64()
                    );
                }
            }
        }
        None => println!("llvm-pdbutil not on PATH: no peer timing (apt-get install llvm)"),
    }
}
