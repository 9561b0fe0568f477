//! The kds playbook language: grammar, syntax tree, diagnostics and checker.
//!
//! A playbook is a list of statements:
//!
//! ```text
//! param name = "lsass.exe"                      # --set name=svchost.exe
//! param limit: int = 5000                       # types: string int address bool list<T>
//! !vm                                           # WinDbg commands, WinDbg argument syntax
//! let p = processes | where name == $name | single
//! .process /p /r $p
//! !peb
//! threads | where state == "Waiting" && wait_ms > $limit
//!         | group by stack | sort by count desc
//!         | show table(count, process.name, wait_reason, stack.top)
//! expect bugcheck in [0xE2, 0x80] else note "not a manual dump: look for a crash cause first"
//! section "Drivers" { lm; x nt!Ps* }
//! use "ext.rhai"
//! ```
//!
//! # Layout
//! Statements end at a newline or `;`. A statement goes on inside `(` and `[`, after a line
//! ending in `|`, and before a line starting with `|`, `&&`, `{` or `else`. `#` starts a
//! comment to the end of the line (outside strings). `section "title" { ... }` holds
//! statements.
//!
//! # Statements
//! The first word decides: `param`, `let`, `use`, `expect`, `check`, `section`; a word starting
//! with `!` or `.` is a WinDbg command, and so is a plain command word of the registry (`k`,
//! `kn`, `lm`, `dt`, `dq`, `x`, `r`, `u`, ...) followed by a blank or the end of the statement
//! (unless a `|` follows: `x | count` is a pipeline over a binding `x`). Anything else is an
//! expression, evaluated for its output.
//!
//! # Commands
//! Arguments are blank-separated and tokenized as WinDbg does: `/p` flags, numbers that are
//! **hex by default** (`0n10` decimal, `0x`, `0t` octal, `0y` binary, backtick separators as in
//! `ffffc10a`12345080`, `-1`), `L4`/`L?10`/`L0n16` lengths, `module!symbol`, `@$peb`/`@rsp`,
//! `"quoted words"`, and plain words (`lsass.exe`, `noisy`). The language reaches into a
//! command through `$var` (and `$var.field`), `(expr)` and `poi(expr)`; a bare word is only a
//! word, so write `.process /p /r $p`, not `p` (the checker warns).
//!
//! # Expressions
//! Numbers are **decimal** unless written `0x` (backticks and `_` allowed in them); strings
//! are `"..."` with `\n \t \r \0 \\ \"`; `true`, `false`, `null`; names, `$var`,
//! `module!symbol`, `@$peb`/`@rip`, `a.b.c`, `a[0]`, `f(x, y)`, `[a, b]`, `( )`. Unary
//! `! - ~`; binary operators from loosest to tightest: `||`, `&&`,
//! `== != < <= > >= in ~` (`~` is a case-insensitive glob match), `|`, `^`, `&`, `<< >>`,
//! `+ -`, `* / %`, all left-associative.
//!
//! **Pipes**: `|` followed by a stage keyword (`where select sort group take first single
//! count show`) starts a pipeline stage; any other `|` is bitwise or (`flags | 4`). A pipeline
//! is the loosest form of all and runs to the end of its expression; parenthesize it to compute
//! with its result: `(threads | count) > 10`. Stages: `where <expr>`, `select a, b as c`,
//! `sort by <expr> [asc|desc], ...`, `group by <expr>, ...`, `take <expr>`, `first`, `single`,
//! `count`, `show` (= `show table`), `show table(cols)`, `show list(cols)`, `show json`.
//! Inside a stage, bare names are fields of the row.
//!
//! # API
//! [`parse`] builds the [`ast`] (every node with its byte span); [`check()`] finds what can be
//! known wrong without a target (unknown commands and variables, argument shapes, misplaced
//! stages, parameter types); [`lint`] does both and returns every problem at once; [`render`]
//! prints them; [`print()`] writes a tree back as canonical text; [`bind_param`] binds `--set`
//! values.
//!
//! Text comes in as `&str`: a file that is not UTF-8 is the caller's to reject (the CLI reports
//! it before the language sees it). Any `&str` is safe to parse: bracket nesting
//! ([`MAX_BRACKET_DEPTH`]), section nesting ([`MAX_SECTION_DEPTH`]), expression depth
//! ([`MAX_EXPR_DEPTH`]) and the number of diagnostics ([`MAX_DIAGNOSTICS`]) are bounded, the
//! work is linear in the input, and nothing panics.
//!
//! ```
//! let source = "param name = \"lsass.exe\"\nlet p = processes | where name == $name | single\n.process /p /r $p\n";
//! assert!(kds_lang::lint(source, "lsass.kds").is_empty());
//!
//! let broken = "!proces 0 0\nlet x = 1 +\n";
//! let problems = kds_lang::lint(broken, "broken.kds");
//! assert_eq!(problems.len(), 2);
//! assert_eq!(problems[0].message, "unknown command `!proces`");
//! assert_eq!(problems[1].message, "expected an expression after `+`, found the end of the statement");
//! ```

pub mod ast;
pub mod check;
pub mod commands;
pub mod diagnostics;
mod grammar;
mod layout;
pub mod params;
mod parse;
pub mod plan;
pub mod print;
pub mod suggest;
mod syntax_error;

pub use check::check;
pub use diagnostics::{render, Code, Diagnostic, Label, Severity};
pub use layout::{MAX_BRACKET_DEPTH, MAX_SECTION_DEPTH};
pub use params::{bind_param, param_type, ParamError, ParamValue};
pub use parse::{parse_recovering, Parsed, MAX_DIAGNOSTICS, MAX_EXPR_DEPTH};
pub use print::print;

use ast::Playbook;

/// Errors from [`parse`]: every syntax error of the file, in source order.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} syntax error(s) in the playbook", .0.len())]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl miette::Diagnostic for Diagnostics {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.0.iter().map(|d| d as &dyn miette::Diagnostic),
        ))
    }
}

/// Parses a playbook. On failure, returns every syntax error, not just the first: statements
/// are parsed one by one, so a bad line does not hide the next. Use [`parse_recovering`] to
/// also get the statements that did parse.
///
/// ```
/// let playbook = kds_lang::parse("!process 0 0 lsass.exe\nlm\n").unwrap();
/// assert_eq!(playbook.statements.len(), 2);
///
/// let errors = kds_lang::parse("let = 1\nlet y = )\n").unwrap_err();
/// assert_eq!(errors.0.len(), 2);
/// ```
pub fn parse(source: &str) -> Result<Playbook, Diagnostics> {
    let parsed = parse_recovering(source);
    if parsed.has_errors() {
        Err(Diagnostics(parsed.diagnostics))
    } else {
        Ok(parsed.playbook)
    }
}

/// Parses and checks a playbook named `name` (its path, for messages): every syntax error and
/// every checker finding, in source order, each carrying the source so it renders on its own
/// (`miette::Report::new(d)`). Empty means the playbook is clean.
///
/// ```
/// let problems = kds_lang::lint("param name = \"x\"\n!process 0 0 $nme\n", "p.kds");
/// assert_eq!(problems.len(), 1);
/// assert_eq!(problems[0].help.as_deref(), Some("did you mean `$name`?"));
/// ```
#[must_use]
pub fn lint(source: &str, name: &str) -> Vec<Diagnostic> {
    let parsed = parse_recovering(source);
    let checked = parsed.check();
    let mut all = parsed.diagnostics;
    all.extend(checked);
    let all = diagnostics::finish(all, MAX_DIAGNOSTICS * 2);
    let shared = diagnostics::Attached::whole(name, source);
    all.into_iter()
        .map(|d| d.with_shared_source(&shared))
        .collect()
}
