//! Helpers shared by the end-to-end tests: where the real symbol tables are, fixture dumps
//! built once per test binary, and the Python peers' venv.

use kds_fixture::dumpfile::{write_dump, DumpKind};
use kds_fixture::{build, known_version, Fixture, FixtureSpec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// The repository root.
#[must_use]
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The shared directory of real symbol tables (`../shared/symbols` beside the repository,
/// or `KDS_SHARED_SYMBOLS`).
#[must_use]
pub fn shared_symbols() -> PathBuf {
    std::env::var_os("KDS_SHARED_SYMBOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/symbols"))
}

/// The x64 kernel tables, one per build: (short name, table path).
#[must_use]
pub fn x64_tables() -> Vec<(&'static str, PathBuf)> {
    let dir = shared_symbols().join("ntkrnlmp.pdb");
    let tables = [
        ("win10_19041", "68A17FAF3012B7846079AEECDBE0A583-1.json.xz"),
        (
            "win2022_20348",
            "C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz",
        ),
        ("win7_7601", "339E74133576439CBCDF7E0229DA3773-1.json.xz"),
    ];
    let found: Vec<_> = tables
        .iter()
        .map(|(name, file)| (*name, dir.join(file)))
        .collect();
    for (name, path) in &found {
        assert!(
            path.exists(),
            "symbol table for {name} missing at {} (set KDS_SHARED_SYMBOLS)",
            path.display()
        );
    }
    found
}

/// The types-only x86 kernel tables (`shared/symbols/x86`): (short name, table path), the
/// PAE Windows 10 one first, then Windows 7 SP1 without PAE.
#[must_use]
pub fn x86_tables() -> Vec<(&'static str, PathBuf)> {
    let dir = shared_symbols().join("x86");
    let found: Vec<_> = [
        ("win10_x86_19041", "win10_x86_19041.json.xz"),
        ("win7_x86_7601", "win7_sp1_x86.json.xz"),
    ]
    .iter()
    .map(|(name, file)| (*name, dir.join(file)))
    .collect();
    for (name, path) in &found {
        assert!(
            path.exists(),
            "x86 symbol table for {name} missing at {} (set KDS_SHARED_SYMBOLS)",
            path.display()
        );
    }
    found
}

/// Build the hung-server fixture of an x86 table, write it as `kind` to `<dir>/<name>` and the
/// table it pairs with under `<dir>/symbols` (`<pdb>/<GUID>-<age>.json.xz`, what `-y` finds).
/// Returns the fixture, the dump and the symbol directory.
pub fn x86_fixture_dump(
    table: &Path,
    seed: u64,
    kind: DumpKind,
    dir: &Path,
    name: &str,
) -> (Fixture, PathBuf, PathBuf) {
    let (fixture, dump) = fixture_dump(table, seed, kind, dir, name);
    let symbols = dir.join("symbols");
    fixture
        .x86_table
        .as_ref()
        .expect("an x86 fixture pairs with a written table")
        .store(&symbols)
        .expect("the x86 table is written");
    (fixture, dump, symbols)
}

/// For each x86 table: its hung-server fixture of `seed`, written as `kind` (with the table it
/// pairs with) under `<scratch of test>/<build>`, handed to `case(build, fixture, dump,
/// symbol dir)`; the dump is removed afterwards.
pub fn each_x86_fixture(
    test: &str,
    seed: u64,
    kind: DumpKind,
    mut case: impl FnMut(&str, &Fixture, &Path, &Path),
) {
    let dir = scratch_dir(test);
    for (name, table) in x86_tables() {
        let here = dir.join(name);
        std::fs::create_dir_all(&here).expect("scratch dir");
        let (fixture, dump, symbols) =
            x86_fixture_dump(&table, seed, kind, &here, &format!("{name}.dmp"));
        case(name, &fixture, &dump, &symbols);
        let _ = std::fs::remove_file(&dump);
    }
}

/// The value of `_KWAIT_REASON.<name>` in `table` (the truth records raw values; the enum
/// differs between builds).
#[must_use]
pub fn wait_reason_value(table: &kds_runtime::symbols::SymbolTable, name: &str) -> i64 {
    table
        .enum_type("_KWAIT_REASON")
        .ok()
        .and_then(|e| e.constants.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
        .unwrap_or_else(|| panic!("_KWAIT_REASON has no {name}"))
}

/// A scratch directory for one test, emptied first. Named by the test binary and the test,
/// not by the process, so reruns reuse (and first empty) the same place instead of piling up
/// dumps in the temporary directory.
#[must_use]
pub fn scratch_dir(test: &str) -> PathBuf {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tests".into());
    let dir = std::env::temp_dir().join("kds-e2e").join(binary).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// Build the hung-server fixture of a table and write it as `kind` into `dir`.
pub fn fixture_dump(
    table: &Path,
    seed: u64,
    kind: DumpKind,
    dir: &Path,
    name: &str,
) -> (Fixture, PathBuf) {
    let fixture = build(&FixtureSpec::hung_server(table, seed)).expect("fixture builds");
    let path = dir.join(name);
    write_dump(&fixture, &path, kind).expect("fixture dump is written");
    (fixture, path)
}

/// A real PDB of `isf_table`'s kernel and the fixture built from it, in one step: kds-pdbgen
/// writes `<dir>/<stem>/ntkrnlmp.pdb` with every type and enum of the table and every symbol
/// at its table RVA (its GUID is new: it depends on the build), then the fixture is built from
/// that PDB, so the nt image's CodeView record names it, and written as a `kind` dump
/// `<dir>/<stem>.dmp`. Returns the fixture, the PDB and the dump.
pub fn fixture_with_pdb(
    isf_table: &Path,
    seed: u64,
    kind: DumpKind,
    dir: &Path,
) -> (Fixture, PathBuf, PathBuf) {
    let isf = kds_runtime::symbols::load_isf_file(isf_table).expect("ISF table loads");
    let stem = isf_table
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or("kernel")
        .to_string();
    let request = kds_pdbgen::PdbRequest::new("ntkrnlmp", &isf)
        .types(isf.type_names().map(str::to_string).collect::<Vec<_>>())
        .enums(isf.enum_names().map(str::to_string).collect::<Vec<_>>())
        .globals(
            isf.symbols()
                .map(|(n, _)| n.to_string())
                .collect::<Vec<_>>(),
        )
        .at_table_rvas(true);
    let generated = kds_pdbgen::generate(&request)
        .unwrap_or_else(|e| panic!("PDB of {}: {e}", isf_table.display()));
    let pdb_dir = dir.join(&stem);
    std::fs::create_dir_all(&pdb_dir).expect("PDB dir");
    let pdb = pdb_dir.join("ntkrnlmp.pdb");
    std::fs::copy(&generated.pdb, &pdb).expect("copy the PDB");
    let mut spec = FixtureSpec::hung_server(&pdb, seed);
    if let Some(v) = known_version(&stem) {
        spec.version = v;
    }
    let fixture = build(&spec).unwrap_or_else(|e| panic!("fixture from {}: {e}", pdb.display()));
    let dump = dir.join(format!("{stem}.dmp"));
    write_dump(&fixture, &dump, kind).expect("fixture dump is written");
    (fixture, pdb, dump)
}

/// A symbol store directory holding `pdb` at `<dir>/<name>/<GUID><AGE>/<name>`, the layout
/// symbol servers use.
#[must_use]
pub fn pdb_store_with(
    pdb: &Path,
    identity: &kds_runtime::symbols::PdbIdentity,
    dir: &Path,
) -> PathBuf {
    let store = dir.join("store");
    let at = store
        .join(&identity.name)
        .join(identity.store_key())
        .join(&identity.name);
    std::fs::create_dir_all(at.parent().expect("store path has a parent")).expect("store dir");
    std::fs::copy(pdb, &at).expect("copy the PDB into the store");
    store
}

/// A symbol directory holding `table` in the Volatility layout `<dir>/ntkrnlmp.pdb/<file>`.
#[must_use]
pub fn symbol_dir_with(table: &Path, dir: &Path) -> PathBuf {
    let sym = dir.join("symbols");
    let pdb_dir = sym.join("ntkrnlmp.pdb");
    std::fs::create_dir_all(&pdb_dir).expect("symbol dir");
    let file = table.file_name().expect("table file name");
    std::fs::copy(table, pdb_dir.join(file)).expect("copy table");
    sym
}

static KDS_BINARY: Once = Once::new();

/// The `kds` binary of this build (`<target>/<profile>/kds`), brought up to date by cargo once
/// per test binary (a no-op when it is), so that no test runs a stale binary.
#[must_use]
pub fn kds_binary() -> PathBuf {
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
        .expect("the test binary lives in <target>/<profile>/deps");
    let binary = profile_dir.join(format!("kds{}", std::env::consts::EXE_SUFFIX));
    KDS_BINARY.call_once(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "kds", "--bin", "kds"]);
        if let Some(target) = profile_dir.parent() {
            build.arg("--target-dir").arg(target);
        }
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(repo_root())
            .status()
            .expect("cargo builds the kds binary");
        assert!(status.success(), "cargo build -p kds --bin kds failed");
    });
    assert!(binary.exists(), "no kds binary at {}", binary.display());
    binary
}

static VENV: Once = Once::new();

/// The Python venv with the independent readers; created by `.ci/venv.sh` on first use.
#[must_use]
pub fn python_venv() -> PathBuf {
    let root = repo_root();
    VENV.call_once(|| {
        let status = Command::new("bash")
            .arg(root.join(".ci/venv.sh"))
            .status()
            .expect("bash runs .ci/venv.sh");
        assert!(
            status.success(),
            ".ci/venv.sh failed: cannot install the Python peers"
        );
    });
    root.join(".venv")
}

/// The object model of a dump, with its table found along `symbols` (a symbol path).
#[must_use]
pub fn model_for(dump: &Path, symbols: &Path) -> std::sync::Arc<kds_runtime::model::ModelContext> {
    model_with_sympath(dump, &symbols.display().to_string())
}

/// A model of `dump` with symbols along `sympath` (WinDbg syntax: `srv*<down>*<url>`, dirs).
pub fn model_with_sympath(
    dump: &Path,
    sympath: &str,
) -> std::sync::Arc<kds_runtime::model::ModelContext> {
    use kds_runtime::target::{DumpTarget, Target};
    let name = dump
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("dump")
        .to_string();
    let crash_dump = kds_crashdump::CrashDump::open(dump).expect("dump opens");
    let target: std::sync::Arc<dyn Target> =
        std::sync::Arc::new(DumpTarget::from_dump(crash_dump, name));
    let sympath = kds_runtime::symbols::sympath::SymbolPath::parse(sympath).expect("symbol path");
    let session = kds_runtime::session::Session::open(target, sympath).expect("session");
    kds_runtime::model::ModelContext::from_session(&session).expect("model")
}

/// A kds session for tests: run commands, get their items or their structured result.
pub struct Session {
    pub interpreter: kds_exec::Interpreter,
}

impl Session {
    #[must_use]
    pub fn new(model: std::sync::Arc<kds_runtime::model::ModelContext>) -> Session {
        Session {
            interpreter: kds_exec::Interpreter::new(model, &kds_exec::RunOptions::default()),
        }
    }

    /// Run `source`; return the items, failing the test on a run error.
    pub fn run(&mut self, source: &str) -> Vec<kds_exec::OutputItem> {
        let playbook = kds_lang::parse(source).expect("commands parse");
        let report = self.interpreter.run(source, &playbook);
        assert!(report.error.is_none(), "{source}: {:?}", report.error);
        report.items
    }

    /// The structured result of the (first) command in `source`.
    pub fn data(&mut self, source: &str) -> serde_json::Value {
        self.run(source)
            .into_iter()
            .find_map(|i| match i {
                kds_exec::OutputItem::Command { data, .. } => data,
                _ => None,
            })
            .unwrap_or_else(|| panic!("{source} has a structured result"))
    }
}

/// A JSON number of a command's structured result (the test fails on anything else).
#[must_use]
pub fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is a number"))
}

/// The lsass process of a fixture.
#[must_use]
pub fn lsass(truth: &kds_fixture::GroundTruth) -> &kds_fixture::ProcessTruth {
    truth
        .processes
        .iter()
        .find(|p| p.image_file_name == "lsass.exe")
        .expect("the fixture has lsass")
}
