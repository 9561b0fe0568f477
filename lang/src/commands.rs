//! The command registry: every WinDbg command a playbook may use, with its argument signature.
//!
//! The parser tokenizes command arguments the way WinDbg does ([`CommandArgKind`]); this table
//! says which shapes each command accepts, in which order, so `kds check` can point at the
//! argument that is wrong without a target. To teach kds a command, add a row here (and, for a
//! command without `!` or `.`, the parser picks it up from [`is_plain_command`]).

use crate::ast::{Command, CommandArg, CommandArgKind};
use crate::diagnostics::{Code, Diagnostic};
use crate::suggest;

/// What an argument may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgShape {
    /// A number, `$var`, `(expr)`, `poi(...)`, `@register` or `module!symbol`.
    Address,
    /// A number, `$var`, `(expr)` or `poi(...)`.
    Number,
    /// `module!Type` or a bare `Type`.
    TypeName,
    /// One of these words.
    Keyword(&'static [&'static str]),
    /// Any word, number, string or expression: an image name, module, path or field.
    Text,
    /// `module!pattern` (`nt!Ps*`).
    SymbolPattern,
    /// `L<count>`.
    Length,
    /// A register name (`rax`) or `@rax`.
    Register,
}

impl ArgShape {
    /// Whether an argument of kind `arg` fits.
    #[must_use]
    pub fn accepts(self, arg: &CommandArgKind) -> bool {
        use CommandArgKind as K;
        match self {
            ArgShape::Address => matches!(
                arg,
                K::Number(_) | K::Expr(_) | K::Register(_) | K::Qualified { .. }
            ),
            ArgShape::Number => matches!(arg, K::Number(_) | K::Expr(_)),
            ArgShape::TypeName => matches!(arg, K::Qualified { .. } | K::Word(_)),
            ArgShape::Keyword(words) => {
                matches!(arg, K::Word(w) if words.iter().any(|k| k.eq_ignore_ascii_case(w)))
            }
            ArgShape::Text => !matches!(arg, K::Flag(_) | K::Length { .. }),
            ArgShape::SymbolPattern => matches!(arg, K::Qualified { .. }),
            ArgShape::Length => matches!(arg, K::Length { .. }),
            ArgShape::Register => matches!(arg, K::Register(_) | K::Word(_)),
        }
    }

    /// How the shape reads in "expected ..." messages.
    #[must_use]
    pub fn describe(self) -> String {
        match self {
            ArgShape::Address => {
                "an address (a number, `$var`, `(expr)`, `poi(...)`, `@register` or `module!symbol`)"
                    .to_string()
            }
            ArgShape::Number => "a number (hex by default, `0n` for decimal), `$var` or `(expr)`".to_string(),
            ArgShape::TypeName => "a type such as `nt!_EPROCESS`".to_string(),
            ArgShape::Keyword(words) => one_of(words),
            ArgShape::Text => "a word".to_string(),
            ArgShape::SymbolPattern => "`module!pattern`, such as `nt!Ps*`".to_string(),
            ArgShape::Length => "a length such as `L4`".to_string(),
            ArgShape::Register => "a register name such as `rax`".to_string(),
        }
    }
}

fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Whether an argument must be there, may be left out (only at the end, as in WinDbg), or
/// may repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Required,
    Optional,
    Repeated,
}

/// One positional argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSpec {
    /// The name the synopsis uses (`Process`, `Flags`).
    pub name: &'static str,
    pub shape: ArgShape,
    pub arity: Arity,
}

/// A known command.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// With its `!` or `.`: `!process`, `.reload`, `dq`.
    pub name: &'static str,
    /// The WinDbg-style synopsis: `!process [Process|Cid|0] [Flags] [ImageName]`.
    pub synopsis: &'static str,
    pub summary: &'static str,
    /// Options written `/x`, without the slash.
    pub flags: &'static [&'static str],
    /// Positional arguments, in order.
    pub args: &'static [ArgSpec],
    /// Whether an optional argument may be left out before others that are given (`lm m nt`
    /// leaves out `v`; `dt nt!_EPROCESS Pcb` leaves out the address). When false, as for
    /// `!process [Process] [Flags] [ImageName]`, optional arguments may only be left out at
    /// the end, and `!process lsass.exe` is wrong.
    pub skip_optional: bool,
    /// Rules the positional shapes cannot say (`/p` needs a process).
    extra: Option<fn(&Command) -> Vec<Diagnostic>>,
}

const fn req(name: &'static str, shape: ArgShape) -> ArgSpec {
    ArgSpec {
        name,
        shape,
        arity: Arity::Required,
    }
}

const fn opt(name: &'static str, shape: ArgShape) -> ArgSpec {
    ArgSpec {
        name,
        shape,
        arity: Arity::Optional,
    }
}

const fn rep(name: &'static str, shape: ArgShape) -> ArgSpec {
    ArgSpec {
        name,
        shape,
        arity: Arity::Repeated,
    }
}

const fn cmd(
    name: &'static str,
    synopsis: &'static str,
    summary: &'static str,
    flags: &'static [&'static str],
    args: &'static [ArgSpec],
) -> CommandSpec {
    CommandSpec {
        name,
        synopsis,
        summary,
        flags,
        args,
        skip_optional: false,
        extra: None,
    }
}

const fn skipping(mut spec: CommandSpec) -> CommandSpec {
    spec.skip_optional = true;
    spec
}

const fn with_extra(mut spec: CommandSpec, extra: fn(&Command) -> Vec<Diagnostic>) -> CommandSpec {
    spec.extra = Some(extra);
    spec
}

use ArgShape::{Address, Length, Number, Register, SymbolPattern, Text, TypeName};

const DUMP_ARGS: &[ArgSpec] = &[req("Address", Address), opt("Length", Length)];
const STACK_ARGS: &[ArgSpec] = &[opt("FrameCount", Number)];
const NO_FLAGS: &[&str] = &[];

macro_rules! dump {
    ($name:literal, $what:literal) => {
        cmd(
            $name,
            concat!($name, " Address [L<Count>]"),
            concat!("display memory as ", $what),
            NO_FLAGS,
            DUMP_ARGS,
        )
    };
}

macro_rules! stack {
    ($name:literal, $what:literal) => {
        cmd(
            $name,
            concat!($name, " [FrameCount]"),
            concat!("the current thread's stack", $what),
            NO_FLAGS,
            STACK_ARGS,
        )
    };
}

/// Every known command.
pub static COMMANDS: &[CommandSpec] = &[
    cmd(
        "!process",
        "!process [Process|Cid|0] [Flags] [ImageName]",
        "processes: all (0), one by EPROCESS address or cid, or those with an image name",
        NO_FLAGS,
        &[
            opt("Process", Address),
            opt("Flags", Number),
            opt("ImageName", Text),
        ],
    ),
    cmd("!peb", "!peb [Address]", "the process environment block", NO_FLAGS, &[opt("Address", Address)]),
    cmd(
        "!thread",
        "!thread [Address] [Flags]",
        "a thread's state, wait and stack",
        NO_FLAGS,
        &[opt("Address", Address), opt("Flags", Number)],
    ),
    cmd("!vm", "!vm [Flags]", "virtual memory usage", NO_FLAGS, &[opt("Flags", Number)]),
    cmd(".bugcheck", ".bugcheck", "the stop code and its parameters", NO_FLAGS, &[]),
    skipping(cmd(
        "!vtop",
        "!vtop [DirBase] VirtualAddress",
        "translate a virtual address through the implicit process's page tables",
        NO_FLAGS,
        &[opt("DirBase", Number), req("VirtualAddress", Address)],
    )),
    cmd("!pte", "!pte Address", "the page table entries that map an address", NO_FLAGS, &[req("Address", Address)]),
    cmd(
        "!sym",
        "!sym noisy|quiet",
        "symbol loading verbosity",
        NO_FLAGS,
        &[req("Mode", ArgShape::Keyword(&["noisy", "quiet"]))],
    ),
    with_extra(
        cmd(
            ".process",
            ".process [/p] [/r] [/i] [Process]",
            "set the implicit process (/p: translate user addresses through it, /r: reload user symbols)",
            &["p", "r", "i"],
            &[opt("Process", Address)],
        ),
        flags_need_target,
    ),
    with_extra(
        cmd(
            ".thread",
            ".thread [/p] [/r] [Thread]",
            "set the register context to a thread",
            &["p", "r"],
            &[opt("Thread", Address)],
        ),
        flags_need_target,
    ),
    cmd(
        ".reload",
        ".reload [/f] [/user] [Module]",
        "reload symbols",
        &["f", "user", "v"],
        &[opt("Module", Text)],
    ),
    cmd(".sympath", ".sympath [Path]", "show or set the symbol path", NO_FLAGS, &[opt("Path", Text)]),
    skipping(cmd(
        "dt",
        "dt [Module!]Type [Address] [Field ...]",
        "display a type, or the fields of one at an address",
        NO_FLAGS,
        &[req("Type", TypeName), opt("Address", Address), rep("Field", Text)],
    )),
    dump!("db", "bytes and ASCII"),
    dump!("dw", "words"),
    dump!("dd", "double words"),
    dump!("dq", "quad words"),
    dump!("dp", "pointers"),
    dump!("dc", "double words and ASCII"),
    dump!("da", "an ASCII string"),
    dump!("du", "a Unicode string"),
    dump!("dps", "pointers with their symbols"),
    dump!("dqs", "quad words with their symbols"),
    dump!("dds", "double words with their symbols"),
    cmd("x", "x Module!Pattern", "symbols matching a pattern", NO_FLAGS, &[req("Pattern", SymbolPattern)]),
    stack!("k", ""),
    stack!("kb", " with the first arguments"),
    stack!("kc", ", symbols only"),
    stack!("kd", " as raw words"),
    stack!("kn", " with frame numbers"),
    stack!("kp", " with parameters"),
    stack!("kv", " with FPO data"),
    stack!("kbn", " with arguments and frame numbers"),
    stack!("kpn", " with parameters and frame numbers"),
    stack!("kvn", " with FPO data and frame numbers"),
    stack!("kf", " with frame sizes"),
    with_extra(
        skipping(cmd(
            "lm",
            "lm [v] [m Pattern]",
            "loaded modules (v: verbose, m: those matching a pattern)",
            NO_FLAGS,
            &[
                opt("v", ArgShape::Keyword(&["v"])),
                opt("m", ArgShape::Keyword(&["m"])),
                opt("Pattern", Text),
            ],
        )),
        lm_pattern_needs_m,
    ),
    with_extra(
        skipping(cmd(
            "lmv",
            "lmv [m Pattern]",
            "loaded modules, verbose",
            NO_FLAGS,
            &[opt("m", ArgShape::Keyword(&["m"])), opt("Pattern", Text)],
        )),
        lm_pattern_needs_m,
    ),
    cmd("lmm", "lmm Pattern", "loaded modules matching a pattern", NO_FLAGS, &[req("Pattern", Text)]),
    cmd("lmvm", "lmvm Module", "one loaded module, verbose", NO_FLAGS, &[req("Module", Text)]),
    cmd("r", "r [Register]", "registers of the current thread", NO_FLAGS, &[opt("Register", Register)]),
    cmd(
        "u",
        "u [Address] [L<Count>]",
        "disassemble forward",
        NO_FLAGS,
        &[opt("Address", Address), opt("Length", Length)],
    ),
    cmd("ub", "ub Address [L<Count>]", "disassemble backward", NO_FLAGS, DUMP_ARGS),
    cmd("uf", "uf Address", "disassemble a function", NO_FLAGS, &[req("Address", Address)]),
    cmd("ln", "ln Address", "the nearest symbols", NO_FLAGS, &[req("Address", Address)]),
];

/// The registry entry for `name` (`!process`, `dq`).
#[must_use]
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// Whether `word` is a command written without `!` or `.` (`k`, `lm`, `dq`, `x`). At the start
/// of a statement such a word, followed by a blank or the end, is a command, not a name.
#[must_use]
pub fn is_plain_command(word: &str) -> bool {
    !word.starts_with(['!', '.']) && lookup(word).is_some()
}

/// The known command closest to a misspelt one.
#[must_use]
pub fn suggest(name: &str) -> Option<&'static str> {
    suggest::closest(name, COMMANDS.iter().map(|c| c.name))
}

/// Most positional arguments a command may have before the checker stops matching.
const MAX_ARGS: usize = 32;

impl CommandSpec {
    /// Checks a parsed command against this signature.
    #[must_use]
    pub fn check(&self, command: &Command) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut positional: Vec<&CommandArg> = Vec::new();
        for arg in &command.args {
            match &arg.kind {
                CommandArgKind::Flag(f) => {
                    if !self.flags.iter().any(|k| k.eq_ignore_ascii_case(f)) {
                        let mut d = Diagnostic::error(
                            Code::CommandArgument,
                            format!("`{}` has no option `/{f}`", self.name),
                            arg.span.clone(),
                            "unknown option",
                        );
                        d = d.with_help(if self.flags.is_empty() {
                            format!("`{}` takes no options: {}", self.name, self.synopsis)
                        } else {
                            let flags: Vec<String> =
                                self.flags.iter().map(|f| format!("/{f}")).collect();
                            format!(
                                "its options are {}: {}",
                                one_of_strings(&flags),
                                self.synopsis
                            )
                        });
                        out.push(d);
                    }
                }
                _ => positional.push(arg),
            }
        }
        if positional.len() > MAX_ARGS {
            let arg = positional[MAX_ARGS];
            out.push(
                Diagnostic::error(
                    Code::CommandArgument,
                    format!("too many arguments for `{}`", self.name),
                    arg.span.clone(),
                    "unexpected argument",
                )
                .with_help(format!("usage: {}", self.synopsis)),
            );
            return out;
        }
        if let Some(d) = self.match_positional(command, &positional) {
            out.push(d);
        } else if let Some(extra) = self.extra {
            out.extend(extra(command));
        }
        out
    }

    /// Matches the positional arguments against the signature: optional arguments may be left
    /// out, repeated ones repeat. Reports the first argument no way of matching gets past.
    fn match_positional(&self, command: &Command, args: &[&CommandArg]) -> Option<Diagnostic> {
        let specs = self.args;
        let (n, m) = (args.len(), specs.len());
        // reached[i][j]: the first i arguments can match the first j specs.
        let mut reached = vec![vec![false; m + 1]; n + 1];
        reached[0][0] = true;
        for i in 0..=n {
            for j in 0..=m {
                if !reached[i][j] || j == m {
                    continue;
                }
                let spec = specs[j];
                if spec.arity != Arity::Required && (self.skip_optional || i == n) {
                    reached[i][j + 1] = true;
                }
                if i < n && spec.shape.accepts(&args[i].kind) {
                    reached[i + 1][j + 1] = true;
                    if spec.arity == Arity::Repeated {
                        reached[i + 1][j] = true;
                    }
                }
            }
        }
        if reached[n][m] {
            return None;
        }
        let furthest = (0..=n)
            .rev()
            .find(|&i| reached[i].iter().any(|&r| r))
            .unwrap_or(0);
        let expected: Vec<ArgSpec> = (0..m)
            .filter(|&j| reached[furthest][j])
            .map(|j| specs[j])
            .collect();
        if furthest < n {
            let arg = args[furthest];
            let found = describe_arg(&arg.kind);
            let d = match expected.first() {
                Some(spec) => Diagnostic::error(
                    Code::CommandArgument,
                    format!(
                        "`{}` expects {}: {}; found {found}",
                        self.name,
                        spec.name,
                        spec.shape.describe()
                    ),
                    arg.span.clone(),
                    format!("expected {}", spec.name),
                ),
                None => Diagnostic::error(
                    Code::CommandArgument,
                    format!("`{}` takes no further arguments, found {found}", self.name),
                    arg.span.clone(),
                    "unexpected argument",
                ),
            };
            Some(d.with_help(format!("usage: {}", self.synopsis)))
        } else {
            let missing = expected
                .iter()
                .find(|s| s.arity == Arity::Required)
                .copied()
                .or(expected.first().copied());
            let what = missing.map_or_else(
                || "an argument".to_string(),
                |s| format!("{}: {}", s.name, s.shape.describe()),
            );
            let at = command
                .args
                .last()
                .map_or(command.name.span.clone(), |a| a.span.clone());
            Some(
                Diagnostic::error(
                    Code::CommandArgument,
                    format!("`{}` needs {what}", self.name),
                    at.end..at.end,
                    "expected here",
                )
                .with_help(format!("usage: {}", self.synopsis)),
            )
        }
    }
}

fn one_of_strings(words: &[String]) -> String {
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    one_of(&refs)
}

/// How an argument reads in "found ..." messages.
#[must_use]
pub fn describe_arg(arg: &CommandArgKind) -> String {
    match arg {
        CommandArgKind::Flag(f) => format!("option `/{f}`"),
        CommandArgKind::Number(n) => format!("number `{n:#x}`"),
        CommandArgKind::Length { value, .. } => format!("length `L{value:#x}`"),
        CommandArgKind::Qualified { module, name } => format!("symbol `{module}!{name}`"),
        CommandArgKind::Register(r) => format!("register `@{r}`"),
        CommandArgKind::Expr(_) => "an expression".to_string(),
        CommandArgKind::Word(w) => format!("word `{w}`"),
    }
}

/// `.process /p` and `.thread /r` switch to something: they need it named.
fn flags_need_target(command: &Command) -> Vec<Diagnostic> {
    let has_target = command
        .args
        .iter()
        .any(|a| !matches!(a.kind, CommandArgKind::Flag(_)));
    if has_target {
        return Vec::new();
    }
    let what = if command.name.name == ".thread" {
        "thread"
    } else {
        "process"
    };
    command
        .args
        .iter()
        .find(|a| matches!(&a.kind, CommandArgKind::Flag(f) if f == "p" || f == "r"))
        .map(|flag| {
            Diagnostic::error(
                Code::CommandArgument,
                format!(
                    "`{}` with `{}` needs the {what} to switch to",
                    command.name.name,
                    &flag_text(flag)
                ),
                flag.span.clone(),
                format!("switches to a {what}"),
            )
            .with_help(format!(
                "name it: `{} /p /r $p`, with `let p = {what}es | where ... | single`",
                command.name.name
            ))
        })
        .into_iter()
        .collect()
}

fn flag_text(arg: &CommandArg) -> String {
    match &arg.kind {
        CommandArgKind::Flag(f) => format!("/{f}"),
        _ => String::new(),
    }
}

/// `lm m <pattern>`: a pattern comes after `m`.
fn lm_pattern_needs_m(command: &Command) -> Vec<Diagnostic> {
    let mut saw_m = false;
    for arg in &command.args {
        match &arg.kind {
            CommandArgKind::Word(w) if w.eq_ignore_ascii_case("m") => saw_m = true,
            CommandArgKind::Word(w) if w.eq_ignore_ascii_case("v") => {}
            _ if !saw_m => {
                return vec![Diagnostic::error(
                    Code::CommandArgument,
                    format!(
                        "a module pattern for `{}` comes after `m`",
                        command.name.name
                    ),
                    arg.span.clone(),
                    "pattern without `m`",
                )
                .with_help(format!("write `{} m <pattern>`", command.name.name))];
            }
            _ => {}
        }
    }
    if saw_m
        && !command
            .args
            .iter()
            .any(|a| !matches!(&a.kind, CommandArgKind::Word(w) if w == "m" || w == "v"))
    {
        let at = command
            .args
            .last()
            .map_or(command.name.span.clone(), |a| a.span.clone());
        return vec![Diagnostic::error(
            Code::CommandArgument,
            format!("`{} m` needs a module pattern", command.name.name),
            at.end..at.end,
            "expected a pattern here",
        )
        .with_help("for example `lm m nt*`")];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed_consistently() {
        for (i, c) in COMMANDS.iter().enumerate() {
            assert!(
                COMMANDS[i + 1..].iter().all(|d| d.name != c.name),
                "{} twice",
                c.name
            );
            assert!(c.synopsis.starts_with(c.name), "{}", c.name);
            if !c.name.starts_with(['!', '.']) {
                assert!(
                    c.name.chars().all(|ch| ch.is_ascii_alphabetic()),
                    "{}",
                    c.name
                );
            }
        }
    }

    #[test]
    fn plain_commands() {
        assert!(is_plain_command("dq"));
        assert!(is_plain_command("kn"));
        assert!(!is_plain_command("!process"));
        assert!(!is_plain_command("processes"));
    }
}
