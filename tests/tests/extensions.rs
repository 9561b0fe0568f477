//! `use "x.rhai"` and `use "x.kds"` end to end on fixture dumps: the example extension
//! (`examples/ext/`), functions in `where`, list walks and memory reads checked against the
//! fixture's truth, a user command, the sandbox's limits, and includes.

use kds_e2e::{fixture_dump, model_for, repo_root, scratch_dir, symbol_dir_with, x64_tables};
use kds_exec::{render_text, run, OutputItem, RunOptions, RunReport};
use kds_fixture::dumpfile::DumpKind;
use kds_runtime::model::{ModelContext, Value};
use std::path::Path;
use std::sync::Arc;

fn run_in(dir: &Path, source: &str, model: &Arc<ModelContext>) -> RunReport {
    let playbook = kds_lang::parse(source).expect("playbook parses");
    let options = RunOptions {
        base_dir: Some(dir.to_path_buf()),
        ..RunOptions::default()
    };
    run(source, &playbook, Arc::clone(model), &options)
}

fn values(report: &RunReport) -> Vec<Value> {
    report
        .items
        .iter()
        .filter_map(|i| match i {
            OutputItem::Value { value } => Some(value.clone()),
            _ => None,
        })
        .collect()
}

fn tables(report: &RunReport) -> Vec<(Vec<String>, Vec<Vec<Value>>)> {
    report
        .items
        .iter()
        .filter_map(|i| match i {
            OutputItem::Table { columns, rows } => Some((columns.clone(), rows.clone())),
            _ => None,
        })
        .collect()
}

fn error_text(report: &RunReport) -> String {
    report
        .error
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Threads the playbook language itself finds waiting longer than `ms`.
fn long_waits(dir: &Path, model: &Arc<ModelContext>, ms: u64) -> usize {
    let report = run_in(
        dir,
        &format!("threads | where state == \"Waiting\" && wait_ms > {ms} | count"),
        model,
    );
    values(&report)
        .first()
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .expect("a count")
}

#[test]
fn the_example_extension_runs_on_every_build() {
    let dir = scratch_dir("extensions-example");
    let examples = repo_root().join("examples/ext");
    let source = std::fs::read_to_string(examples.join("triage.kds")).expect("example");
    let problems = kds_lang::lint(&source, "triage.kds");
    assert!(
        problems.iter().all(|d| !d.is_error()),
        "the example passes `kds check`: {problems:?}"
    );
    for (name, table) in x64_tables() {
        let symbols = symbol_dir_with(&table, &dir.join(name));
        let (fixture, dump) = fixture_dump(
            &table,
            11,
            DumpKind::BitmapFull,
            &dir,
            &format!("{name}.dmp"),
        );
        let model = model_for(&dump, &symbols);
        let truth = &fixture.truth;
        let report = run_in(&examples, &source, &model);
        assert!(report.error.is_none(), "{name}: {:?}", report.error);
        assert_eq!(report.failed_expectations, 0, "{name}");
        assert!(
            !report
                .items
                .iter()
                .any(|i| matches!(i, OutputItem::Expectation { .. })),
            "{name}: the walk by hand finds every process"
        );
        let found = tables(&report);
        // Processes outside the system set: exactly the truth's.
        let system = [
            "system",
            "registry",
            "smss.exe",
            "csrss.exe",
            "wininit.exe",
            "winlogon.exe",
            "services.exe",
            "lsass.exe",
            "svchost.exe",
            "fontdrvhost.exe",
            "dwm.exe",
            "memcompression",
        ];
        let mut expected: Vec<u64> = truth
            .processes
            .iter()
            .filter(|p| !system.contains(&p.image_file_name.to_lowercase().as_str()))
            .map(|p| p.pid)
            .collect();
        let mut shown: Vec<u64> = found[0].1.iter().filter_map(|r| r[0].as_u64()).collect();
        expected.sort_unstable();
        shown.sort_unstable();
        assert_eq!(shown, expected, "{name}");
        assert!(!shown.is_empty(), "{name}: the fixture runs applications");
        // Long waiters: the truth's count (at most 10 shown), longest first.
        let waits = &found[1].1;
        assert_eq!(
            waits.len(),
            long_waits(&examples, &model, 5000).min(10),
            "{name}"
        );
        assert!(!waits.is_empty(), "{name}: the hung fixture has long waits");
        let ms: Vec<u64> = waits.iter().filter_map(|r| r[3].as_u64()).collect();
        assert!(ms.windows(2).all(|w| w[0] >= w[1]), "{name}: sorted");
        assert!(ms.iter().all(|m| *m > 5000));
        // The first process read from memory by hand is the list's first (System).
        let first = truth.processes.first().expect("a process");
        assert_eq!(
            values(&report).last().map(ToString::to_string),
            Some(first.image_file_name.clone()),
            "{name}"
        );
        // The command the extension registers.
        let command = run_in(&examples, "use \"triage.rhai\"\n!waiters 0n5000", &model);
        assert!(command.error.is_none(), "{name}: {:?}", command.error);
        let text = render_text(&command.items);
        let count = long_waits(&examples, &model, 5000);
        assert!(
            text.starts_with("kd> !waiters 0n5000\nTID "),
            "{name}: {text}"
        );
        assert_eq!(
            text.lines().count(),
            count + 2,
            "{name}: one line per thread"
        );
        assert!(
            text.ends_with(&format!("{count} thread(s) waiting longer than 5000 ms\n")),
            "{name}: {text}"
        );
        let _ = std::fs::remove_file(&dump);
    }
}

#[test]
fn extensions_read_the_model_and_stop_at_their_limits() {
    let dir = scratch_dir("extensions-model");
    let (_, table) = &x64_tables()[1];
    let symbols = symbol_dir_with(table, &dir);
    let (fixture, dump) = fixture_dump(table, 11, DumpKind::BitmapFull, &dir, "ext.dmp");
    let model = model_for(&dump, &symbols);
    let truth = &fixture.truth;
    std::fs::write(
        dir.join("probe.rhai"),
        r#"
fn has_many_threads(n) { n > 10 }
fn pids_by_walk() {
    walk_list(symbol("nt!PsActiveProcessHead"), "_EPROCESS", "ActiveProcessLinks").map(|p| p.pid)
}
fn thread_count_by_walk(p) {
    walk_list(p.field_address("ThreadListHead"), "_ETHREAD", "ThreadListEntry").len()
}
fn head_flink() { read_u64(symbol("PsActiveProcessHead")) }
fn head_blink() { read_pointer(symbol("PsActiveProcessHead"), 8) }
fn mz() { read_bytes(kernel_base(), 2) }
fn dtb_of(p) { read_u64(p, offset_of("_EPROCESS", "Pcb.DirectoryTableBase")) }
fn image(p) { p.Peb.ProcessParameters.ImagePathName }
fn spin() { loop { } }
fn poke(p) { p.UniqueProcessId = 0; }
fn unreadable() { read_u64(0xffff800000000000) }
"#,
    )
    .expect("write probe");

    // A helper in `where`, lists walked by hand, memory read through the model.
    let report = run_in(
        &dir,
        "use \"probe.rhai\"\nprocesses | where has_many_threads(threads) | select pid\npids_by_walk()\nhead_flink()\nhead_blink()\nmz()",
        &model,
    );
    assert!(report.error.is_none(), "{:?}", report.error);
    let busy: Vec<u64> = truth
        .processes
        .iter()
        .filter(|p| p.threads.len() > 10)
        .map(|p| p.pid)
        .collect();
    let shown: Vec<u64> = tables(&report)[0]
        .1
        .iter()
        .filter_map(|r| r[0].as_u64())
        .collect();
    assert_eq!(shown, busy);
    let v = values(&report);
    let pids: Vec<u64> = truth.processes.iter().map(|p| p.pid).collect();
    assert_eq!(
        v[0],
        Value::List(pids.iter().map(|p| Value::from(*p)).collect())
    );
    let head = truth.ps_active_process_head;
    let links = |e: u64| {
        e + model
            .table()
            .offset_of("_EPROCESS", "ActiveProcessLinks")
            .unwrap()
    };
    let first = truth.processes.first().expect("first").eprocess;
    let last = truth.processes.last().expect("last").eprocess;
    // A kernel address as rhai's INT has the same 64 bits (negative as a signed number).
    assert_eq!(v[1], Value::Int(i128::from(links(first) as i64)));
    assert_eq!(v[2].as_u64(), Some(links(last)));
    assert_eq!(v[3], Value::List(vec![Value::Int(0x4d), Value::Int(0x5a)]));
    assert_ne!(head, 0);

    // Objects keep their address space: the PEB and its strings are read in the process's.
    let lsass = truth
        .processes
        .iter()
        .find(|p| p.image_file_name == "lsass.exe")
        .expect("lsass");
    let report = run_in(
        &dir,
        "use \"probe.rhai\"\nlet p = processes | where name == \"lsass.exe\" | single\nthread_count_by_walk($p)\ndtb_of($p)\nimage($p)",
        &model,
    );
    assert!(report.error.is_none(), "{:?}", report.error);
    let v = values(&report);
    assert_eq!(v[0].as_u64(), Some(lsass.threads.len() as u64));
    assert_eq!(v[1].as_u64(), Some(lsass.dtb));
    assert_eq!(v[2], Value::Str(lsass.image_path.clone()));

    // Limits and the sandbox: exit code 2 with a clear message; unreadable memory 3.
    let spin = run_in(&dir, "use \"probe.rhai\"\nspin()", &model);
    assert_eq!(spin.exit_code(), 2);
    assert_eq!(
        error_text(&spin),
        "extension `probe.rhai` exceeded 5000000 operations (in `spin`): does a loop never end?"
    );
    let poke = run_in(
        &dir,
        "use \"probe.rhai\"\nlet p = processes | first\npoke($p)",
        &model,
    );
    assert_eq!(poke.exit_code(), 2);
    assert!(error_text(&poke).contains("they never write to it"));
    let unreadable = run_in(&dir, "use \"probe.rhai\"\nunreadable()", &model);
    assert_eq!(unreadable.exit_code(), 3, "{:?}", unreadable.error);
}

#[test]
fn included_playbooks_and_their_errors() {
    let dir = scratch_dir("extensions-include");
    let (_, table) = &x64_tables()[1];
    let symbols = symbol_dir_with(table, &dir);
    let (_, dump) = fixture_dump(table, 11, DumpKind::BitmapFull, &dir, "inc.dmp");
    let model = model_for(&dump, &symbols);
    let files = [
        (
            "common.kds",
            "param image = \"lsass.exe\"\nlet target = processes | where name == $image | single",
        ),
        ("a.kds", "use \"b.kds\""),
        ("b.kds", "use \"a.kds\""),
        ("syntax.rhai", "fn broken( {"),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let report = run_in(&dir, "use \"common.kds\"\n$target.name", &model);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(values(&report), vec![Value::Str("lsass.exe".into())]);

    let cycle = run_in(&dir, "use \"a.kds\"", &model);
    assert_eq!(cycle.exit_code(), 2);
    assert_eq!(
        error_text(&cycle),
        "`a.kds` line 1: `b.kds` line 1: `use \"a.kds\"` makes a cycle: a.kds uses b.kds uses a.kds"
    );
    let syntax = run_in(&dir, "use \"syntax.rhai\"", &model);
    assert_eq!(syntax.exit_code(), 2);
    assert!(error_text(&syntax).starts_with("extension `syntax.rhai` has a syntax error at line 1"));
    let missing = run_in(&dir, "use \"gone.kds\"", &model);
    assert_eq!(missing.exit_code(), 2);
    assert!(error_text(&missing).contains(&dir.join("gone.kds").display().to_string()));
}
