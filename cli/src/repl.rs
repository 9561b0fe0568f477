//! `kds repl`: a `kd>` prompt in the playbook language, over one opened target.
//!
//! Each statement is linted, parsed and run in one [`Interpreter`], so `let`s and the implicit
//! process carry over from line to line. A statement goes on over several lines while a `(`,
//! `[` or `{` is open or the line ends with `|` (as in a playbook); an empty line ends it.
//! Errors are shown as `kds run` shows them and never end the session: `q`, `qq`, `.quit` or
//! end of input (Ctrl-D) do. On a terminal, lines are edited with rustyline and kept in a
//! history file; otherwise lines are read from stdin and echoed after the prompt, as in a kd
//! transcript.

use crate::exit;
use crate::run::run_error;
use crate::target::{open, TargetArgs};
use clap::Args;
use kds_exec::{render_text, Interpreter, OutputItem, RunOptions};
use kds_lang::{Code, Diagnostic};
use kds_runtime::model::ModelContext;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

#[derive(Args)]
pub struct ReplArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

/// The name diagnostics give the input.
const INPUT_NAME: &str = "<input>";
/// Shown while a statement goes on over more lines; as wide as the prompt.
const CONTINUATION: &str = "     > ";
/// Words that end the session, as WinDbg's `q` and `qq`.
const QUIT: [&str; 3] = ["q", "qq", ".quit"];

pub fn repl(args: &ReplArgs) -> u8 {
    let opened = match open(&args.target, None) {
        Ok(o) => o,
        Err(report) => {
            eprintln!("{report:?}");
            return exit::TARGET_ERROR;
        }
    };
    let info = kds_stdlib::info::collect(&opened.session, opened.file_size);
    print!("{}", kds_stdlib::info::render_banner(&info));
    let model = match ModelContext::from_session(&opened.session) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return opened.finish(exit::TARGET_ERROR, false);
        }
    };
    let mut session = Session {
        interpreter: Interpreter::new(model, &RunOptions::default()),
        pending: String::new(),
    };
    if std::io::stdin().is_terminal() {
        interactive(&mut session);
    } else {
        piped(&mut session);
    }
    opened.finish(0, false)
}

/// The prompt: `<processor>: kd> `, as kd shows it.
fn prompt() -> String {
    // The processor of the implicit thread; kds does not switch processors yet (`~<n>s`).
    let processor = 0;
    format!("{processor}: kd> ")
}

/// Where the history is kept: `$KDS_HISTORY`, else `~/.kds_history`.
fn history_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KDS_HISTORY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".kds_history"))
}

fn interactive(session: &mut Session) {
    use rustyline::error::ReadlineError;
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: no line editing ({e}); reading plain lines");
            piped(session);
            return;
        }
    };
    let history = history_path();
    if let Some(path) = &history {
        // A missing or unreadable history is no reason to stop.
        let _ = editor.load_history(path);
    }
    // Each statement is written to the history file as it is entered (so a session that is
    // killed keeps its history); the first failure to write is reported, once.
    let mut history_ok = true;
    let mut remember = |editor: &mut rustyline::DefaultEditor, statement: String| {
        if statement.is_empty() || editor.add_history_entry(statement).is_err() {
            return;
        }
        if let (Some(path), true) = (&history, history_ok) {
            if let Err(e) = editor.append_history(path) {
                eprintln!("warning: cannot save history to {}: {e}", path.display());
                history_ok = false;
            }
        }
    };
    loop {
        let shown = if session.pending.is_empty() {
            prompt()
        } else {
            CONTINUATION.to_string()
        };
        match editor.readline(&shown) {
            Ok(line) => match session.feed(&line) {
                Step::More => {}
                Step::Ran(statement) => remember(&mut editor, statement),
                Step::Quit(statement) => {
                    remember(&mut editor, statement);
                    break;
                }
            },
            // Ctrl-C drops the line (and any statement in progress), as in kd.
            Err(ReadlineError::Interrupted) => session.pending.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: cannot read the terminal: {e}");
                break;
            }
        }
    }
}

/// Lines from a pipe or file: each is echoed after the prompt, as in a kd transcript.
fn piped(session: &mut Session) {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        let shown = if session.pending.is_empty() {
            prompt()
        } else {
            CONTINUATION.to_string()
        };
        let line = match lines.next() {
            Some(Ok(line)) => line,
            Some(Err(e)) => {
                eprintln!("error: cannot read input: {e}");
                break;
            }
            None => break,
        };
        let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
        println!("{shown}{line}");
        if let Step::Quit(_) = session.feed(&line) {
            break;
        }
    }
    // End of input in the middle of a statement: run what there is, so its error shows.
    if !session.pending.trim().is_empty() {
        let statement = std::mem::take(&mut session.pending);
        session.execute(&statement);
    }
}

/// What a line of input led to.
enum Step {
    /// The statement goes on: read another line.
    More,
    /// A statement ran (or was rejected); its text, for the history.
    Ran(String),
    /// `q`: end the session.
    Quit(String),
}

struct Session {
    interpreter: Interpreter,
    /// The lines of a statement still open.
    pending: String,
}

impl Session {
    fn feed(&mut self, line: &str) -> Step {
        if self.pending.is_empty() && QUIT.contains(&line.trim()) {
            return Step::Quit(line.trim().to_string());
        }
        let continuing = !self.pending.is_empty();
        if continuing {
            self.pending.push('\n');
        }
        self.pending.push_str(line);
        // An empty line ends a statement in progress, whatever state it is in.
        let ends = continuing && line.trim().is_empty();
        if !ends && incomplete(&self.pending) {
            return Step::More;
        }
        let statement = std::mem::take(&mut self.pending);
        if statement.trim().is_empty() {
            return Step::Ran(String::new());
        }
        self.execute(&statement);
        Step::Ran(statement)
    }

    /// Lint, parse and run one statement (or several, `;`-separated), printing what it shows
    /// and any error.
    fn execute(&mut self, source: &str) {
        let problems = self.lint(source);
        if !problems.is_empty() {
            eprint!("{}", kds_lang::render(&problems, INPUT_NAME, source));
        }
        if problems.iter().any(Diagnostic::is_error) {
            return;
        }
        let playbook = match kds_lang::parse(source) {
            Ok(p) => p,
            Err(diagnostics) => {
                eprint!("{}", kds_lang::render(&diagnostics.0, INPUT_NAME, source));
                return;
            }
        };
        let report = self.interpreter.run(source, &playbook);
        let text = render(&report.items);
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
        drop(stdout);
        if let Some(error) = &report.error {
            eprintln!(
                "{:?}",
                miette::Report::new(run_error(error, INPUT_NAME, source))
            );
        }
    }

    /// Lints `source` knowing the names earlier statements bound: a prelude of `let`s for
    /// them goes first, and the diagnostics are moved back onto `source`.
    fn lint(&self, source: &str) -> Vec<Diagnostic> {
        let prelude: String = self
            .interpreter
            .bound_names()
            .iter()
            .map(|name| format!("let {name} = 0\n"))
            .collect();
        let offset = prelude.len();
        let problems = kds_lang::lint(&(prelude + source), INPUT_NAME);
        problems
            .into_iter()
            .filter(|d| d.span().start >= offset)
            .map(|mut d| {
                for label in &mut d.labels {
                    let start = label.span.start.saturating_sub(offset);
                    let end = label.span.end.saturating_sub(offset).max(start);
                    label.span = start..end;
                }
                d
            })
            .collect()
    }
}

/// Whether `source` is a statement that goes on: a bracket or section body still open, or a
/// last line ending with `|`.
fn incomplete(source: &str) -> bool {
    if ends_with_pipe(source) {
        return true;
    }
    let parsed = kds_lang::parse_recovering(source);
    parsed
        .diagnostics
        .iter()
        .any(|d| d.code == Code::Delimiter && d.message.starts_with("unclosed `"))
}

/// Whether the last byte that counts (outside comments and blanks) is a `|`.
fn ends_with_pipe(source: &str) -> bool {
    let bytes = source.as_bytes();
    let mut last = 0u8;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' && bytes.get(i + 1).is_some_and(|&c| c != b'\n') {
                        i += 1;
                    }
                    i += 1;
                }
                last = b'"';
                if bytes.get(i) == Some(&b'"') {
                    i += 1;
                }
            }
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b => {
                last = b;
                i += 1;
            }
        }
    }
    last == b'|'
}

/// Output as text. A command's output follows the prompt line the user typed, so it is not
/// echoed again after a `kd>` of its own (as `kds run` does).
fn render(items: &[OutputItem]) -> String {
    let mut out = String::new();
    for item in items {
        match item {
            OutputItem::Command { text, .. } => {
                out.push_str(text);
                if !text.is_empty() && !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            other => out.push_str(&render_text(std::slice::from_ref(other))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ends_with_pipe, incomplete};

    #[test]
    fn a_statement_goes_on_after_a_pipe_or_an_open_bracket() {
        assert!(incomplete("processes |"));
        assert!(incomplete("processes | where pid == 4 |  # more below"));
        assert!(incomplete("let x = (1 +"));
        assert!(incomplete("let x = [1,\n2,"));
        assert!(incomplete("section \"a\" {\n!process 0 0"));
        assert!(!incomplete("processes | count"));
        assert!(!incomplete("let x = (1 + 2)"));
        assert!(!incomplete("let x = 1 +"));
        assert!(!incomplete("let x = 1)"));
        assert!(!incomplete("let s = \"abc"));
        assert!(!incomplete("let s = \"|\""));
        assert!(!incomplete("1 # |"));
    }

    #[test]
    fn pipes_in_strings_and_comments_do_not_count() {
        assert!(ends_with_pipe("a |"));
        assert!(ends_with_pipe("a ||\n"));
        assert!(!ends_with_pipe("a \"|\""));
        assert!(!ends_with_pipe("a \"\\\"|\""));
        assert!(!ends_with_pipe("a # |"));
        assert!(!ends_with_pipe(""));
    }
}
