//! The checker: what can be known wrong about a playbook without a target.
//!
//! - commands: unknown ones (with the closest known name), arguments of the wrong shape,
//!   missing or extra (see [`crate::commands`]);
//! - names: `$var` with no `param` or `let`, a `let` name used before its `let`, a duplicate
//!   `param`, a bare word in a command that names a binding (`p` for `$p`), a misspelt
//!   collection (`procesess`);
//! - pipelines: an unknown stage (`| cout`), `select` with no column, stages after `count`, or
//!   row stages after `first`/`single`, `show` before the end;
//! - parameters: a default that does not fit the declared type, a `param` with neither;
//! - `use` of something that is neither `.rhai` nor `.kds`.
//!
//! Field names are not checked: they are resolved against the target's symbols at run time.

use std::collections::{HashMap, HashSet};

use crate::ast::*;
use crate::commands;
use crate::diagnostics::{Code, Diagnostic};
use crate::params::ParamValue;
use crate::suggest;

/// The collections a pipeline can start from without a `let`.
pub const COLLECTIONS: &[&str] = &["processes", "threads", "modules"];

/// Globals of the target that expressions may name without a `let` (the runtime defines
/// them; a name listed here is never reported as a near miss of a binding).
pub const GLOBALS: &[&str] = &[
    "bugcheck",
    "bugcheck_parameters",
    "taken_on_demand",
    "build",
    "processors",
    "kernel_base",
];

/// The pipeline stage keywords.
pub const STAGES: &[&str] = &[
    "where", "select", "sort", "group", "take", "first", "single", "count", "show",
];

/// Checks a parsed playbook; returns every problem found, in source order.
///
/// ```
/// let playbook = kds_lang::parse("param name = \"lsass.exe\"\n!process 0 0 $nme\n").unwrap();
/// let problems = kds_lang::check(&playbook);
/// assert_eq!(problems[0].message, "unknown variable `$nme`");
/// assert_eq!(problems[0].help.as_deref(), Some("did you mean `$name`?"));
/// ```
#[must_use]
pub fn check(playbook: &Playbook) -> Vec<Diagnostic> {
    check_with(playbook, &[])
}

/// Checks with the names that statements which failed to parse meant to declare, so that their
/// later uses are not reported as unknown as well.
pub(crate) fn check_with(playbook: &Playbook, recovered: &[String]) -> Vec<Diagnostic> {
    let mut later_lets = HashMap::new();
    collect_lets(&playbook.statements, &mut later_lets);
    let mut c = Checker {
        params: HashMap::new(),
        lets: HashMap::new(),
        later_lets,
        recovered: recovered.iter().cloned().collect(),
        used_files: false,
        diags: Vec::new(),
    };
    c.statements(&playbook.statements);
    crate::diagnostics::finish(c.diags, crate::parse::MAX_DIAGNOSTICS)
}

fn collect_lets(statements: &[Stmt], out: &mut HashMap<String, Span>) {
    for s in statements {
        match &s.kind {
            StmtKind::Let { name, .. } => {
                out.entry(name.name.clone())
                    .or_insert_with(|| name.span.clone());
            }
            StmtKind::Section { body, .. } => collect_lets(body, out),
            _ => {}
        }
    }
}

/// Where a name is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Statement level: names are bindings, collections or globals.
    Outer,
    /// Inside a stage: bare names are fields of the row.
    Row,
}

struct Checker {
    params: HashMap<String, Span>,
    lets: HashMap<String, Span>,
    /// The first `let` of each name anywhere in the file.
    later_lets: HashMap<String, Span>,
    recovered: HashSet<String>,
    /// A `use` came before: names may come from it, so unknown ones are not reported.
    used_files: bool,
    diags: Vec<Diagnostic>,
}

impl Checker {
    fn bound(&self, name: &str) -> bool {
        self.params.contains_key(name)
            || self.lets.contains_key(name)
            || self.recovered.contains(name)
    }

    fn binding_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .params
            .keys()
            .chain(self.lets.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    fn statements(&mut self, statements: &[Stmt]) {
        for s in statements {
            self.statement(s);
        }
    }

    fn statement(&mut self, s: &Stmt) {
        match &s.kind {
            StmtKind::Param(p) => self.param(p),
            StmtKind::Let { name, value } => {
                self.expr(value, Scope::Outer);
                self.lets.insert(name.name.clone(), name.span.clone());
            }
            StmtKind::Command(cmd) => self.command(cmd),
            StmtKind::Expr(e) => self.expr(e, Scope::Outer),
            StmtKind::Expect(x) => self.expr(&x.condition, Scope::Outer),
            StmtKind::Section { body, .. } => self.statements(body),
            StmtKind::Use { path } => {
                if !(path.value.ends_with(".rhai") || path.value.ends_with(".kds")) {
                    self.diags.push(
                        Diagnostic::error(
                            Code::Use,
                            format!("cannot use `{}`", path.value),
                            path.span.clone(),
                            "neither .rhai nor .kds",
                        )
                        .with_help("`use` loads rhai extensions (`ext.rhai`) or other playbooks (`common.kds`)"),
                    );
                }
                self.used_files = true;
            }
        }
    }

    fn param(&mut self, p: &Param) {
        if let Some(first) = self.params.get(&p.name.name) {
            self.diags.push(
                Diagnostic::error(
                    Code::DuplicateParam,
                    format!("parameter `{}` is declared twice", p.name.name),
                    p.name.span.clone(),
                    "declared again here",
                )
                .with_label(first.clone(), "first declared here")
                .with_help("remove one, or give this one another name"),
            );
        } else {
            self.params.insert(p.name.name.clone(), p.name.span.clone());
        }
        let Some(default) = &p.default else {
            if p.ty.is_none() {
                self.diags.push(
                    Diagnostic::error(
                        Code::ParamType,
                        format!("parameter `{}` has neither a type nor a default", p.name.name),
                        p.name.span.clone(),
                        "type unknown",
                    )
                    .with_help(format!(
                        "give it a type (`param {0}: string`, set with --set {0}=...) or a default (`param {0} = \"...\"`)",
                        p.name.name
                    )),
                );
            }
            return;
        };
        let Some(value) = ParamValue::from_literal(default) else {
            self.diags.push(
                Diagnostic::error(
                    Code::ParamType,
                    format!("the default of `{}` is not a literal", p.name.name),
                    default.span.clone(),
                    "computed at run time",
                )
                .with_help("a default is a string, number, bool or list of them; compute values with `let`"),
            );
            return;
        };
        if let Some(t) = &p.ty {
            if !value.fits(&t.ty) {
                self.diags.push(
                    Diagnostic::error(
                        Code::ParamType,
                        format!("the default of `{}` is not a {}", p.name.name, t.ty),
                        default.span.clone(),
                        format!("not a {}", t.ty),
                    )
                    .with_label(t.span.clone(), "declared here"),
                );
            }
        } else if let ParamValue::List(items) = &value {
            if let Some(first) = items.first().and_then(ParamValue::inferred_type) {
                if !items.iter().all(|i| i.fits(&first)) {
                    self.diags.push(
                        Diagnostic::error(
                            Code::ParamType,
                            format!("the default of `{}` mixes element types", p.name.name),
                            default.span.clone(),
                            format!("the first element is a {first}"),
                        )
                        .with_help("declare the type: `param name: list<string> = [...]`"),
                    );
                }
            } else if items.is_empty() {
                self.diags.push(
                    Diagnostic::error(
                        Code::ParamType,
                        format!("the type of `{}` cannot be told from `[]`", p.name.name),
                        default.span.clone(),
                        "empty list",
                    )
                    .with_help(format!(
                        "declare it: `param {}: list<int> = []`",
                        p.name.name
                    )),
                );
            }
        }
    }

    fn command(&mut self, cmd: &Command) {
        let mut arg_diags = match commands::lookup(&cmd.name.name) {
            Some(spec) => spec.check(cmd),
            // After a `use`, a command may come from an extension: only the executor knows.
            // A near miss of a built-in command is still worth a warning.
            None if self.used_files => match commands::suggest(&cmd.name.name) {
                Some(s) => vec![Diagnostic::warning(
                    Code::UnknownCommand,
                    format!("`{}` is not a built-in command", cmd.name.name),
                    cmd.name.span.clone(),
                    "an extension must define it",
                )
                .with_help(format!("did you mean `{s}`?"))],
                None => Vec::new(),
            },
            None => {
                let mut d = Diagnostic::error(
                    Code::UnknownCommand,
                    format!("unknown command `{}`", cmd.name.name),
                    cmd.name.span.clone(),
                    "not a known command",
                );
                d = d.with_help(match commands::suggest(&cmd.name.name) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "kds knows !process, !peb, !thread, !vm, !pte, !sym, .process, .thread, .reload, \
                             .sympath, dt, db/dw/dd/dq/dp/dc/da/du, dps/dqs/dds, x, k*, lm, r, u/ub/uf, ln"
                        .to_string(),
                });
                vec![d]
            }
        };
        if let (Some(first), true) = (cmd.args.first(), commands::is_plain_command(&cmd.name.name))
        {
            if matches!(&first.kind, CommandArgKind::Word(w) if w.starts_with('=')) {
                if let Some(d) = arg_diags.iter_mut().find(|d| d.span() == first.span) {
                    d.help = Some(format!(
                        "at the start of a statement `{0}` is the WinDbg command; to bind a name write `let {0} = ...`",
                        cmd.name.name
                    ));
                }
            }
        }
        for arg in &cmd.args {
            match &arg.kind {
                CommandArgKind::Expr(e) => self.expr(e, Scope::Outer),
                CommandArgKind::Word(w) if self.bound(w) => {
                    let hint = format!("`{w}` is a binding here; write `${w}` to use its value");
                    if let Some(d) = arg_diags.iter_mut().find(|d| d.span() == arg.span) {
                        d.help = Some(hint);
                    } else {
                        self.diags.push(
                            Diagnostic::warning(
                                Code::BareBinding,
                                format!(
                                    "`{w}` is passed as the word `{w}`, not as the value of `{w}`"
                                ),
                                arg.span.clone(),
                                "a plain word",
                            )
                            .with_help(hint),
                        );
                    }
                }
                _ => {}
            }
        }
        self.diags.append(&mut arg_diags);
    }

    /// Report `name` if a later `let` defines it; true when reported.
    fn used_before_its_let(&mut self, name: &str, span: &Span) -> bool {
        let Some(def) = self.later_lets.get(name).cloned() else {
            return false;
        };
        self.diags.push(
            Diagnostic::error(
                Code::UseBeforeDefinition,
                format!("`{name}` is used before its `let`"),
                span.clone(),
                "used here",
            )
            .with_label(def, "defined later here")
            .with_help(format!("move `let {name} = ...` above this statement")),
        );
        true
    }

    fn unknown_variable(&mut self, name: &str, span: &Span) {
        if self.bound(name) {
            return;
        }
        if self.used_before_its_let(name, span) {
            return;
        }
        if self.used_files {
            return;
        }
        let names = self.binding_names();
        let help =
            match suggest::closest(name, names.iter().copied()) {
                Some(s) => format!("did you mean `${s}`?"),
                None if names.is_empty() => {
                    format!("declare it with `param {name} = ...` or `let {name} = ...`")
                }
                None => {
                    format!(
                "declare it with `param {name} = ...` or `let {name} = ...`; known here: {}",
                names.iter().map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
            )
                }
            };
        self.diags.push(
            Diagnostic::error(
                Code::UnknownVariable,
                format!("unknown variable `${name}`"),
                span.clone(),
                "no param or let of this name",
            )
            .with_help(help),
        );
    }

    /// A bare name at statement level: a binding, a collection, or a global of the target
    /// (`bugcheck`), which only the runtime knows. Reported when it is a `let` used too early,
    /// or a near miss of a known name.
    fn outer_name(&mut self, name: &str, span: &Span, as_source: bool) {
        if self.bound(name) || COLLECTIONS.contains(&name) || GLOBALS.contains(&name) {
            return;
        }
        if self.used_before_its_let(name, span) {
            return;
        }
        if self.used_files {
            return;
        }
        let mut known: Vec<&str> = COLLECTIONS.to_vec();
        known.extend(self.binding_names());
        if let Some(s) = suggest::closest(name, known.iter().copied()) {
            self.diags.push(
                Diagnostic::error(
                    Code::UnknownName,
                    format!("unknown name `{name}`"),
                    span.clone(),
                    "not a collection or a binding",
                )
                .with_help(format!("did you mean `{s}`?")),
            );
        } else if as_source {
            self.diags.push(
                Diagnostic::warning(
                    Code::UnknownName,
                    format!("`{name}` is not a known collection or binding"),
                    span.clone(),
                    "resolved only at run time",
                )
                .with_help(format!(
                    "pipelines usually start from {}, or from a `let`",
                    COLLECTIONS.join(", ")
                )),
            );
        }
    }

    fn expr(&mut self, e: &Expr, scope: Scope) {
        match &e.kind {
            ExprKind::Int(_)
            | ExprKind::Str(_)
            | ExprKind::Bool(_)
            | ExprKind::Null
            | ExprKind::Symbol { .. }
            | ExprKind::Register(_) => {}
            ExprKind::Name(n) => {
                if scope == Scope::Outer {
                    self.outer_name(n, &e.span, false);
                }
            }
            ExprKind::Variable(v) => self.unknown_variable(v, &e.span),
            ExprKind::Field { base, .. } => self.expr(base, scope),
            ExprKind::Index { base, index } => {
                self.expr(base, scope);
                self.expr(index, scope);
            }
            ExprKind::Call { function, args } => {
                if function.name == "poi" && args.len() != 1 {
                    self.diags.push(
                        Diagnostic::error(
                            Code::Syntax,
                            format!("`poi` takes one address, found {} arguments", args.len()),
                            e.span.clone(),
                            "here",
                        )
                        .with_help("write `poi(address)`"),
                    );
                }
                for a in args {
                    self.expr(a, scope);
                }
            }
            ExprKind::Unary { operand, .. } => self.expr(operand, scope),
            ExprKind::Binary { op, left, right } => {
                if *op == BinaryOp::BitOr && self.stage_typo(right) {
                    self.expr(left, scope);
                    return;
                }
                self.expr(left, scope);
                self.expr(right, scope);
            }
            ExprKind::List(items) => {
                for i in items {
                    self.expr(i, scope);
                }
            }
            ExprKind::Pipeline { source, stages } => {
                match &source.kind {
                    ExprKind::Name(n) if scope == Scope::Outer => {
                        self.outer_name(n, &source.span, true)
                    }
                    _ => self.expr(source, scope),
                }
                self.stages(stages);
            }
        }
    }

    /// `x | cout`: the right side of a bitwise or that is a near miss of a stage keyword.
    fn stage_typo(&mut self, right: &Expr) -> bool {
        let ExprKind::Name(n) = &right.kind else {
            return false;
        };
        if self.bound(n) {
            return false;
        }
        let Some(stage) = suggest::closest(n, STAGES.iter().copied()) else {
            return false;
        };
        self.diags.push(
            Diagnostic::error(
                Code::Pipeline,
                format!("unknown pipeline stage `{n}`"),
                right.span.clone(),
                "not a stage",
            )
            .with_help(format!(
                "did you mean `{stage}`? The stages are {}",
                STAGES.join(", ")
            )),
        );
        true
    }

    fn stages(&mut self, stages: &[Stage]) {
        // The stage that turned the rows into one row (`first`, `single`) or a number (`count`).
        let mut collapsed: Option<&Stage> = None;
        for (i, stage) in stages.iter().enumerate() {
            if let Some(prev) = collapsed {
                let row_stage = matches!(stage.kind, StageKind::Select(_) | StageKind::Show(_));
                let (prev_name, what) = match prev.kind {
                    StageKind::Count => ("count", "a number"),
                    StageKind::First => ("first", "one row"),
                    _ => ("single", "one row"),
                };
                if prev_name == "count" || !row_stage {
                    self.diags.push(
                        Diagnostic::error(
                            Code::Pipeline,
                            format!("`{}` after `{prev_name}` has nothing to work on", stage_name(stage)),
                            stage.span.clone(),
                            "meaningless here",
                        )
                        .with_label(prev.span.clone(), format!("this yields {what}"))
                        .with_help(if prev_name == "count" {
                            "`count` ends a pipeline; move the stage before it".to_string()
                        } else {
                            format!("move it before `{prev_name}`; after it only `select` and `show` apply")
                        }),
                    );
                }
            }
            if matches!(stage.kind, StageKind::Show(_)) && i + 1 < stages.len() {
                self.diags.push(
                    Diagnostic::error(
                        Code::Pipeline,
                        "`show` must be the last stage",
                        stage.span.clone(),
                        "more stages follow",
                    )
                    .with_help("move `show` to the end of the pipeline"),
                );
            }
            match &stage.kind {
                StageKind::Where(e) => self.expr(e, Scope::Row),
                StageKind::Take(e) => self.expr(e, Scope::Outer),
                StageKind::Select(cols) => {
                    if cols.is_empty() {
                        self.diags.push(
                            Diagnostic::error(
                                Code::Pipeline,
                                "`select` names no columns",
                                stage.span.clone(),
                                "select what?",
                            )
                            .with_help("name the fields to keep, `select pid, name as image`, or drop `select` to keep them all"),
                        );
                    }
                    self.columns(cols);
                }
                StageKind::SortBy(keys) => {
                    for k in keys {
                        self.expr(&k.expr, Scope::Row);
                    }
                }
                StageKind::GroupBy(keys) => {
                    for k in keys {
                        self.expr(k, Scope::Row);
                    }
                }
                StageKind::Show(Show::Table(cols) | Show::List(cols)) => self.columns(cols),
                StageKind::First
                | StageKind::Single
                | StageKind::Count
                | StageKind::Show(Show::Json) => {}
            }
            if collapsed.is_none()
                && matches!(
                    stage.kind,
                    StageKind::First | StageKind::Single | StageKind::Count
                )
            {
                collapsed = Some(stage);
            }
        }
    }

    fn columns(&mut self, cols: &[Column]) {
        for c in cols {
            self.expr(&c.expr, Scope::Row);
        }
    }
}

fn stage_name(stage: &Stage) -> &'static str {
    stage.kind.keyword()
}

#[cfg(test)]
mod extension_command_tests {
    #[test]
    fn unknown_commands_are_errors_unless_a_file_is_used() {
        let without = crate::lint("!waiters 0x1388\n", "p.kds");
        assert!(without.iter().any(|d| d.is_error()), "{without:?}");
        let with = crate::lint("use \"ext.rhai\"\n!waiters 0x1388\n", "p.kds");
        assert!(with.is_empty(), "{with:?}");
        let near_miss = crate::lint("use \"ext.rhai\"\n!proces 0 0\n", "p.kds");
        assert_eq!(near_miss.len(), 1);
        assert!(!near_miss[0].is_error());
        assert_eq!(
            near_miss[0].help.as_deref(),
            Some("did you mean `!process`?")
        );
    }
}
