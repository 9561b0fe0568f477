//! `kds info` as a user runs it: the README's demo command, bad dumps, missing symbols.

mod common;

use common::{kds, repo, text};
use kds_fixture::{build, FixtureSpec};
use std::path::{Path, PathBuf};

/// The backtick form WinDbg prints 64-bit addresses in.
fn windbg(value: u64) -> String {
    format!("{:08x}`{:08x}", value >> 32, value & 0xFFFF_FFFF)
}

const DEMO: &str = "examples/demo/MEMORY.DMP";
const DEMO_TABLE: &str = "examples/symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz";

#[test]
fn info_on_the_demo_identifies_the_kernel_its_symbols_and_the_bugcheck() {
    let out = kds(&["info", "-z", DEMO, "-y", "examples/symbols"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // What the builder put in the demo (same table and seed as examples/demo/README.md).
    let truth = build(&FixtureSpec::hung_server(repo().join(DEMO_TABLE), 1))
        .expect("demo fixture builds")
        .truth;
    for line in [
        format!("Loading Dump File [{DEMO}]"),
        "Kernel Bitmap Dump File: Full address space is available".to_string(),
        "Symbol search path is: examples/symbols".to_string(),
        "Windows 10 Kernel Version 20348 MP (4 procs) Free x64".to_string(),
        "Product: Server, suite: TerminalServer SingleUserTS".to_string(),
        format!(
            "Kernel base = 0x{} PsLoadedModuleList = 0x{}",
            windbg(truth.kernel_base),
            windbg(truth.ps_loaded_module_list)
        ),
        "BugCheck E2, {0, 0, 0, 0}".to_string(),
        "MANUALLY_INITIATED_CRASH (e2)".to_string(),
        format!(
            "  PsActiveProcessHead   {}",
            windbg(truth.ps_active_process_head)
        ),
        format!(
            "  KdDebuggerDataBlock   {}",
            windbg(truth.kd_debugger_data_block)
        ),
        "  PDB                   ntkrnlmp.pdb C339CA26E8E26BB7F4C9BB7B8244A46A-1".to_string(),
        format!("  Symbols               {DEMO_TABLE} (1752 types)"),
        "  Version               10.0.20348".to_string(),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing line {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn readme_first_command_runs_the_hang_playbook_on_the_demo() {
    let out = kds(&[
        "run",
        "examples/hang-triage.kds",
        "-z",
        DEMO,
        "-y",
        "examples/symbols",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let truth = build(&FixtureSpec::hung_server(repo().join(DEMO_TABLE), 1))
        .expect("demo fixture builds")
        .truth;
    let processes = stdout
        .split("== Processes ==")
        .nth(1)
        .and_then(|rest| rest.split("\n== ").next())
        .expect("a Processes section");
    let blocks = processes
        .lines()
        .filter(|l| l.starts_with("PROCESS "))
        .count();
    assert_eq!(blocks, truth.processes.len());
    for section in [
        "== Memory ==",
        "== Processes ==",
        "== Stuck threads, grouped ==",
        "== On the processors ==",
        "== Focus process ==",
    ] {
        assert!(stdout.contains(section), "{section} missing:\n{stdout}");
    }
    assert!(stdout.contains("WARNING: threads are queued on an ERESOURCE"));
}

#[test]
fn run_reports_script_errors_against_the_source_and_exits_2() {
    let out = kds(&[
        "run",
        "-z",
        DEMO,
        "-y",
        "examples/symbols",
        "-c",
        "!proces 0 0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown command `!proces`"), "{stderr}");
    assert!(stderr.contains("did you mean `!process`?"), "{stderr}");
    let out = kds(&[
        "run",
        "-z",
        DEMO,
        "-y",
        "examples/symbols",
        "-c",
        "processes | where name == \"nope.exe\" | single",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`single` expected exactly one row, found 0"));
    let out = kds(&[
        "check",
        "examples/hang-triage.kds",
        "examples/long-waits.kds",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn json_output_carries_each_command_s_structured_result() {
    let out = kds(&[
        "run",
        "-z",
        DEMO,
        "-y",
        "examples/symbols",
        "--format",
        "json",
        "-c",
        "!process 0 0 lsass.exe; .bugcheck",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let truth = build(&FixtureSpec::hung_server(repo().join(DEMO_TABLE), 1))
        .expect("demo fixture builds")
        .truth;
    let lsass = truth
        .processes
        .iter()
        .find(|p| p.image_file_name == "lsass.exe")
        .expect("lsass");
    let process = &items[0]["data"]["processes"][0];
    assert_eq!(process["address"].as_u64(), Some(lsass.eprocess));
    assert_eq!(process["pid"].as_u64(), Some(lsass.pid));
    assert_eq!(process["dir_base"].as_u64(), Some(lsass.dtb));
    assert!(items[0]["text"]
        .as_str()
        .is_some_and(|t| t.contains(&format!("PROCESS {:016x}", lsass.eprocess))));
    assert_eq!(
        items[1]["data"]["bugcheck"]["code"].as_u64(),
        Some(u64::from(truth.bugcheck_code))
    );
}

#[test]
fn json_output_carries_the_same_identity() {
    let out = kds(&["info", DEMO, "-y", "examples/symbols", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["target"]["kind"]["dump_type"], 5);
    assert_eq!(v["target"]["processor_count"], 4);
    assert_eq!(v["bugcheck"]["name"], "MANUALLY_INITIATED_CRASH");
    assert_eq!(v["bugcheck"]["taken_on_demand"], true);
    assert_eq!(
        v["kernel"]["pdb"]["guid"],
        "C339CA26E8E26BB7F4C9BB7B8244A46A"
    );
    assert_eq!(v["symbols"]["status"], "loaded");
    assert_eq!(v["os"]["build"], 20348);
}

#[test]
fn a_missing_table_names_the_guid_age_and_every_place_looked() {
    let out = kds(&["info", DEMO, "-y", "target/no-such-symbols"]);
    assert!(out.status.success(), "identification works without symbols");
    let stdout = text(&out.stdout);
    assert!(stdout.contains(
        "no symbol table for ntkrnlmp.pdb C339CA26E8E26BB7F4C9BB7B8244A46A-1; looked in:"
    ));
    for probe in [
        "target/no-such-symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz",
        "target/no-such-symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A1/ntkrnlmp.pdb",
    ] {
        assert!(stdout.contains(probe), "{probe} not listed in:\n{stdout}");
    }
    // Without symbols the banner still has what the header says.
    assert!(stdout.contains("Kernel Version 20348 MP (4 procs) Free x64"));
}

fn bad_dump(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = repo().join("target/cli-tests");
    std::fs::create_dir_all(&dir).expect("target dir is writable");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test dump");
    path
}

fn fails_with(path: &Path, expected: &str) {
    let out = kds(&["info", "-z", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(3), "target errors exit 3");
    let stderr = text(&out.stderr);
    // miette wraps long lines: compare with whitespace folded.
    let folded = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let flat = folded(&stderr.replace(['│', '╰', '─', '▶', '×'], " "));
    assert!(
        flat.contains(&folded(expected)),
        "expected {expected:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_dumps_fail_with_the_offset_and_what_was_expected() {
    let demo = std::fs::read(repo().join(DEMO)).expect("demo dump");

    fails_with(
        &bad_dump("empty.dmp", &[]),
        r#"file is empty (0 bytes); expected a "PAGEDU64" kernel dump header at offset 0x0"#,
    );
    fails_with(
        &bad_dump("truncated.dmp", &demo[..0x100]),
        "file ends at 0x100 but the 64-bit dump header (DUMP_HEADER64) needs 0x2000 bytes at offset 0x0",
    );
    let mut x86 = demo[..0x3000].to_vec();
    x86[4..8].copy_from_slice(b"DUMP");
    fails_with(&bad_dump("x86.dmp", &x86), "PAGEDUMP");
    let mut garbage = demo[..0x3000].to_vec();
    garbage[..8].copy_from_slice(b"MDMP\x93\xa7\0\0");
    fails_with(
        &bad_dump("minidump.dmp", &garbage),
        r#"expected "PAGEDU64" at offset 0x0"#,
    );
    // The bitmap still marks every page (TotalPresentPages at 0x2028), but the file stops
    // halfway.
    let present = u64::from_le_bytes(demo[0x2028..0x2030].try_into().expect("8 bytes"));
    let half = &demo[..demo.len() / 2];
    fails_with(
        &bad_dump("lying-bitmap.dmp", half),
        &format!("bitmap at 0x2038 marks {present} pages present but the file holds"),
    );
}

#[test]
fn plan_names_the_fields_each_query_reads_and_stats_count_target_reads() {
    let out = kds(&[
        "run",
        "examples/hang-triage.kds",
        "-z",
        DEMO,
        "-y",
        "examples/symbols",
        "--plan",
        "--stats",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "query threads | where | group by | sort by | take | show  reads: process.name, state, wait_ms, wait_reason"
        ),
        "{stderr}"
    );
    let stats = stderr
        .lines()
        .find_map(|l| l.strip_prefix("target reads: "))
        .expect("a stats line");
    let reads: u64 = stats
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a read count");
    assert!(reads > 100, "the playbook reads the target: {stats}");
}

#[test]
fn a_binary_file_as_playbook_is_refused_with_exit_2() {
    // The demo dump itself: not UTF-8.
    let out = kds(&["check", DEMO]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not a text playbook: invalid UTF-8 at byte"),
        "{}",
        text(&out.stderr)
    );
    let out = kds(&["run", DEMO, "-z", DEMO, "-y", "examples/symbols"]);
    assert_eq!(out.status.code(), Some(2));
    // NUL bytes and control characters that are valid UTF-8 are syntax errors, not crashes.
    let junk = bad_dump("junk.kds", b"\0\x01\x02 !process \x7f\n((((\n");
    let out = kds(&["check", junk.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
}
