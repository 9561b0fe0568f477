//! `kds repl` driven through a pipe, as a transcript: lines echoed after `0: kd> `, bindings and
//! the implicit process kept from line to line, errors shown without ending the session.

use kds_fixture::{build, FixtureSpec, GroundTruth};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const DEMO: &str = "examples/demo/MEMORY.DMP";
const DEMO_TABLE: &str = "examples/symbols/ntkrnlmp.pdb/C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz";
const LSASS: &str = "let p = processes | where name == \"lsass.exe\" | single";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

fn kds(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kds"))
        .args(args)
        .current_dir(repo())
        .env_remove("_NT_SYMBOL_PATH")
        .env_remove("_NT_ALT_SYMBOL_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kds starts");
    let written = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes());
    // kds may stop before reading everything (`q`, or a dump that cannot be opened): a broken
    // pipe then is its choice, not a failure of the test.
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing kds's input: {e}"),
        _ => {}
    }
    child.wait_with_output().expect("kds runs")
}

fn repl(lines: &[&str]) -> Output {
    let mut input = lines.join("\n");
    input.push('\n');
    kds(&["repl", "-z", DEMO, "-y", "examples/symbols"], &input)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn truth() -> GroundTruth {
    build(&FixtureSpec::hung_server(repo().join(DEMO_TABLE), 1))
        .expect("demo fixture builds")
        .truth
}

/// The backtick form WinDbg prints 64-bit addresses in.
fn windbg(value: u64) -> String {
    format!("{:08x}`{:08x}", value >> 32, value & 0xFFFF_FFFF)
}

/// What follows the echoed `0: kd> <line>` up to the next prompt.
fn answer<'a>(stdout: &'a str, line: &str) -> &'a str {
    let echo = format!("0: kd> {line}\n");
    let at = stdout
        .find(&echo)
        .unwrap_or_else(|| panic!("`{line}` is not echoed in:\n{stdout}"));
    let rest = &stdout[at + echo.len()..];
    &rest[..rest.find("0: kd> ").unwrap_or(rest.len())]
}

#[test]
fn lsass_pid_and_implicit_process_match_kds_run_and_the_fixture() {
    let truth = truth();
    let lsass = truth
        .processes
        .iter()
        .find(|p| p.image_file_name == "lsass.exe")
        .expect("the demo has lsass");

    let out = repl(&[LSASS, ".process /p /r $p", "$p.pid", ".process", "q"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    // kd's opening banner comes first, then the prompt.
    assert!(
        stdout.starts_with(&format!("Loading Dump File [{DEMO}]\n")),
        "{stdout}"
    );
    assert!(!stdout.contains("\nTarget\n"), "no `kds info` details");
    assert_eq!(answer(&stdout, LSASS), "");
    let implicit = format!("Implicit process is now {}\n", windbg(lsass.eprocess));
    assert!(
        answer(&stdout, ".process /p /r $p").starts_with(&implicit),
        "{stdout}"
    );
    assert_eq!(answer(&stdout, ".process"), implicit);
    let pid = answer(&stdout, "$p.pid");
    assert_eq!(pid, format!("{}\n", lsass.pid));

    // The same query through `kds run -c` prints the same value.
    let run = kds(
        &[
            "run",
            "-z",
            DEMO,
            "-y",
            "examples/symbols",
            "-c",
            &format!("{LSASS}; $p.pid"),
        ],
        "",
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), pid);
    assert!(stdout.ends_with("0: kd> q\n"), "{stdout}");
}

#[test]
fn lets_persist_across_lines() {
    let count = truth().processes.len();
    let out = repl(&[
        "let n = processes | count",
        "let m = $n + 1",
        "$m * 2",
        "$n",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    assert_eq!(answer(&stdout, "$m * 2"), format!("{}\n", (count + 1) * 2));
    assert_eq!(answer(&stdout, "$n"), format!("{count}\n"));
    // The end of input ends the session like `q`.
    assert!(
        stdout.ends_with(&format!("0: kd> $n\n{count}\n")),
        "{stdout}"
    );
}

#[test]
fn errors_are_shown_and_the_next_line_still_runs() {
    let count = truth().processes.len();
    let out = repl(&[
        "let x = 1 +",
        "$nope",
        "processes | single",
        "processes | count",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // A syntax error and an unknown name, caught before running; then a run-time error.
    assert!(
        stderr.contains("expected an expression after `+`, found the end of the statement"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown variable `$nope`"), "{stderr}");
    assert!(
        stderr.contains(&format!("`single` expected exactly one row, found {count}")),
        "{stderr}"
    );
    // Errors are shown against the line, as `kds run` shows them.
    assert!(stderr.contains("1 │ processes | single"), "{stderr}");
    assert_eq!(answer(&stdout, "processes | count"), format!("{count}\n"));
    // `x` was never bound: its `let` did not parse.
    let out = repl(&["let x = 1 +", "$x"]);
    assert!(
        text(&out.stderr).contains("unknown variable `$x`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_statement_goes_on_after_a_pipe_and_inside_brackets() {
    let out = repl(&[
        "processes |",
        "  where pid == 4 |",
        "  select name, pid",
        "let total = (",
        "  2 + 3)",
        "$total",
        "",
        "let broken = (1 +",
        "",
        "$total",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "0: kd> processes |\n     >   where pid == 4 |\n     >   select name, pid\nname    pid\n------  ---\nSystem  4\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("0: kd> $total\n5\n"), "{stdout}");
    // An empty line ends a statement still open; its error shows and the session goes on.
    assert!(stderr.contains("unclosed `(`"), "{stderr}");
    assert!(stdout.ends_with("0: kd> $total\n5\n"), "{stdout}");
}

#[test]
fn q_ends_the_session_and_what_follows_is_not_run() {
    for quit in ["q", "qq", ".quit", "  q  "] {
        let out = repl(&["let n = 7", quit, "$n"]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(stdout.ends_with(&format!("0: kd> {quit}\n")), "{stdout}");
        assert!(!stdout.contains("0: kd> $n"), "{stdout}");
    }
}

#[test]
fn a_dump_that_cannot_be_opened_is_a_target_error() {
    let out = kds(&["repl", "-z", "no/such/MEMORY.DMP"], "q\n");
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("cannot open no/such/MEMORY.DMP"));
    assert!(!text(&out.stdout).contains("kd>"));
}
