//! The example playbooks, run end to end on fixture dumps of every build: the output is
//! snapshotted (reviewed), and facts in it are checked against the fixture's truth.

use kds_e2e::{
    each_x86_fixture, fixture_dump, model_for, repo_root, scratch_dir, symbol_dir_with,
    wait_reason_value, x64_tables,
};
use kds_exec::{render_text, run, OutputItem, RunOptions, RunReport};
use kds_fixture::dumpfile::DumpKind;
use kds_fixture::{Fixture, GroundTruth};
use kds_runtime::model::{ModelContext, Value};
use kds_runtime::symbols::SymbolTable;
use std::sync::Arc;

fn run_source(source: &str, model: &Arc<ModelContext>, params: &[(&str, &str)]) -> RunReport {
    let playbook = kds_lang::parse(source).expect("playbook parses");
    let options = RunOptions {
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        ..RunOptions::default()
    };
    run(source, &playbook, Arc::clone(model), &options)
}

/// Rows of the first table under `section` (or the first table at all).
fn table_after<'a>(
    items: &'a [OutputItem],
    section: Option<&str>,
) -> Option<(&'a [String], &'a [Vec<Value>])> {
    let mut in_section = section.is_none();
    for item in items {
        match item {
            OutputItem::SectionStart { title } => in_section = section.is_none_or(|s| s == title),
            OutputItem::Table { columns, rows } if in_section => return Some((columns, rows)),
            _ => {}
        }
    }
    None
}

fn check_hang_triage(report: &RunReport, truth: &GroundTruth, table: &SymbolTable) {
    // Every process appears in !process 0 0.
    let processes = report.items.iter().find_map(|i| match i {
        OutputItem::Command { command, text, .. } if command == "!process 0 0" => {
            Some(text.clone())
        }
        _ => None,
    });
    let text = processes.expect("!process 0 0 ran");
    let blocks = text.lines().filter(|l| l.starts_with("PROCESS ")).count();
    assert_eq!(blocks, truth.processes.len());
    // The WrResource waiters are exactly the truth's.
    let wr_resource = truth
        .processes
        .iter()
        .flat_map(|p| &p.threads)
        .filter(|t| {
            t.state == 5 && i64::from(t.wait_reason) == wait_reason_value(table, "WrResource")
        })
        .count();
    let (_, rows) =
        table_after(&report.items, Some("Waiting on an executive resource")).expect("table");
    assert_eq!(rows.len(), wr_resource);
    assert!(wr_resource > 0, "the hung fixture has ERESOURCE waiters");
    // One running thread per processor.
    let (_, running) = table_after(&report.items, Some("On the processors")).expect("table");
    assert_eq!(running.len() as u32, truth.processor_count);
    assert_eq!(report.failed_expectations, 0);
}

/// The example playbooks, in name order.
fn example_playbooks() -> Vec<std::path::PathBuf> {
    let examples = repo_root().join("examples");
    let mut playbooks: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "kds"))
        .collect();
    playbooks.sort();
    assert!(playbooks.len() >= 4, "at least four example playbooks");
    playbooks
}

/// Every example playbook on one build's fixture: it runs without error, the hang playbook's
/// facts match the truth, and the text is the reviewed snapshot `<playbook>-<build>`.
fn run_examples_on(name: &str, fixture: &Fixture, model: &Arc<ModelContext>) {
    for playbook in &example_playbooks() {
        let source = std::fs::read_to_string(playbook).expect("playbook text");
        let report = run_source(&source, model, &[]);
        let stem = playbook
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("playbook");
        assert!(
            report.error.is_none(),
            "{stem} on {name}: {:?}",
            report.error
        );
        if stem == "hang-triage" {
            check_hang_triage(&report, &fixture.truth, &fixture.table);
        }
        insta::assert_snapshot!(format!("{stem}-{name}"), render_text(&report.items));
    }
}

#[test]
fn example_playbooks_run_on_every_build() {
    let dir = scratch_dir("examples");
    for (name, table) in x64_tables() {
        let symbols = symbol_dir_with(&table, &dir.join(name));
        let (fixture, dump) = fixture_dump(
            &table,
            11,
            DumpKind::BitmapFull,
            &dir,
            &format!("{name}.dmp"),
        );
        run_examples_on(name, &fixture, &model_for(&dump, &symbols));
        let _ = std::fs::remove_file(&dump);
    }
}

/// The same playbooks, unchanged, on the 32-bit machines: PAE (Windows 10) and non-PAE
/// (Windows 7), each opened with the table its fixture wrote.
#[test]
fn example_playbooks_run_unchanged_on_x86_builds() {
    each_x86_fixture(
        "examples-x86",
        11,
        DumpKind::BitmapFull,
        |name, fixture, dump, symbols| {
            run_examples_on(name, fixture, &model_for(dump, symbols));
        },
    );
}

#[test]
fn every_global_the_checker_accepts_is_defined_and_exit_codes_distinguish_outcomes() {
    let dir = scratch_dir("examples-globals");
    let (_, table) = &x64_tables()[1];
    let symbols = symbol_dir_with(table, &dir);
    let (fixture, dump) = fixture_dump(table, 11, DumpKind::BitmapFull, &dir, "globals.dmp");
    let model = model_for(&dump, &symbols);
    for global in kds_lang::check::GLOBALS {
        let report = run_source(global, &model, &[]);
        assert!(report.error.is_none(), "`{global}`: {:?}", report.error);
        assert!(
            matches!(report.items.as_slice(), [OutputItem::Value { value }] if !value.is_null()),
            "`{global}` shows a value"
        );
    }
    let bugcheck = run_source("bugcheck", &model, &[]);
    assert!(
        matches!(&bugcheck.items[0], OutputItem::Value { value } if value.as_u64() == Some(u64::from(fixture.truth.bugcheck_code)))
    );
    // The code has its name, and 0xE2 means the dump was taken on demand.
    assert_eq!(fixture.truth.bugcheck_code, 0xE2);
    assert_eq!(
        run_source(
            "expect bugcheck == \"MANUALLY_INITIATED_CRASH\" && taken_on_demand",
            &model,
            &[]
        )
        .exit_code(),
        0
    );

    // 0 success, 1 a failed expectation, 2 a script error, 3 a target error.
    assert_eq!(
        run_source("expect bugcheck == 0xE2", &model, &[]).exit_code(),
        0
    );
    assert_eq!(
        run_source(
            "expect bugcheck == 0x50 else fail \"not a page fault\"",
            &model,
            &[]
        )
        .exit_code(),
        1
    );
    assert_eq!(
        run_source("check bugcheck == 0x50", &model, &[]).exit_code(),
        0,
        "check warns, never fails"
    );
    assert_eq!(
        run_source("processes | where name == \"nope\" | single", &model, &[]).exit_code(),
        2
    );
    let unreadable = run_source("poi(0xffff8000deadbeef)", &model, &[]);
    assert_eq!(unreadable.exit_code(), 3, "{:?}", unreadable.error);

    // Parameters: defaults, --set with types, and a missing value.
    let by_name = "param name = \"lsass.exe\"\nprocesses | where name == $name | select pid";
    let lsass = fixture
        .truth
        .processes
        .iter()
        .find(|p| p.image_file_name == "lsass.exe")
        .expect("lsass");
    let report = run_source(by_name, &model, &[]);
    assert!(report.error.is_none(), "{:?}", report.error);
    let (_, rows) = table_after(&report.items, None).expect("a table");
    assert_eq!(rows[0][0].as_u64(), Some(lsass.pid));
    let report = run_source(by_name, &model, &[("name", "System")]);
    let (_, rows) = table_after(&report.items, None).expect("a table");
    assert_eq!(rows[0][0].as_u64(), Some(4));
    let typed = run_source("param limit: int = 5\nlimit", &model, &[("limit", "0x10")]);
    assert!(matches!(&typed.items[0], OutputItem::Value { value } if value.as_u64() == Some(16)));
    let bad = run_source("param limit: int = 5\nlimit", &model, &[("limit", "many")]);
    assert_eq!(bad.exit_code(), 2);
}

#[test]
fn progress_names_each_statement_as_it_starts() {
    let dir = scratch_dir("examples-progress");
    let (_, table) = &x64_tables()[1];
    let symbols = symbol_dir_with(table, &dir);
    let (_, dump) = fixture_dump(table, 11, DumpKind::BitmapFull, &dir, "progress.dmp");
    let model = model_for(&dump, &symbols);
    let source = "let n = processes | count\nsection \"s\" {\n  threads | where state == \"Running\" | count\n}\n";
    let playbook = kds_lang::parse(source).expect("parses");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut interpreter = kds_exec::Interpreter::new(model, &RunOptions::default());
    let sink = Arc::clone(&seen);
    interpreter.set_progress(move |step| sink.lock().expect("not poisoned").push(step.to_string()));
    let report = interpreter.run(source, &playbook);
    assert!(report.error.is_none(), "{:?}", report.error);
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        [
            "line 1: let n = processes | count",
            "line 3: threads | where state == \"Running\" | count"
        ]
    );
}
