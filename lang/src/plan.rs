//! The plan: what a playbook will ask of a target, step by step, computed without one.
//!
//! Each query names its source (a collection such as `threads`, or a binding) and the row
//! fields its stages read (`state`, `wait_ms`, `process.name`). The runtime's object views
//! read lazily, field by field, so a query costs the bytes of those fields and nothing more;
//! the plan makes that visible (`kds run --plan`) and is what a batching reader would prefetch.

use crate::ast::{
    Column, Command, Expr, ExprKind, Playbook, Show, Span, Stage, StageKind, Stmt, StmtKind,
};
use crate::check::{COLLECTIONS, GLOBALS};
use std::collections::{BTreeSet, HashSet};
use std::fmt::{self, Write as _};

/// The steps of a playbook, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line of the statement.
    pub line: usize,
    pub span: Span,
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// A `param` or `let`; a `let` whose value is a query carries it.
    Bind {
        name: String,
        query: Option<Query>,
    },
    Command {
        name: String,
    },
    /// An expression statement that reads a collection or binding through stages.
    Query(Query),
    /// Any other expression statement.
    Value,
    Expect {
        queries: Vec<Query>,
    },
    Section {
        title: String,
        steps: Vec<Step>,
    },
    Use {
        path: String,
    },
}

/// One pipeline: where its rows come from and what it reads of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `threads`, `processes`, `modules`, `$name` for a binding, or `expression`.
    pub source: String,
    /// Stage keywords in order (`where`, `group by`, `show`).
    pub stages: Vec<&'static str>,
    /// Row fields the stages read, as dotted paths from the row (`process.name`).
    pub fields: BTreeSet<String>,
}

/// Compile a playbook into its plan.
#[must_use]
pub fn plan(playbook: &Playbook, source: &str) -> Plan {
    let mut bound = HashSet::new();
    Plan {
        steps: steps(&playbook.statements, source, &mut bound),
    }
}

fn line_of(source: &str, span: &Span) -> usize {
    source
        .get(..span.start)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

fn steps(statements: &[Stmt], source: &str, bound: &mut HashSet<String>) -> Vec<Step> {
    statements
        .iter()
        .map(|stmt| Step {
            line: line_of(source, &stmt.span),
            span: stmt.span.clone(),
            kind: step_kind(stmt, source, bound),
        })
        .collect()
}

fn step_kind(stmt: &Stmt, source: &str, bound: &mut HashSet<String>) -> StepKind {
    match &stmt.kind {
        StmtKind::Param(p) => {
            bound.insert(p.name.name.clone());
            StepKind::Bind {
                name: p.name.name.clone(),
                query: None,
            }
        }
        StmtKind::Let { name, value } => {
            let query = queries_in(value, bound).into_iter().next();
            bound.insert(name.name.clone());
            StepKind::Bind {
                name: name.name.clone(),
                query,
            }
        }
        StmtKind::Command(Command { name, .. }) => StepKind::Command {
            name: name.name.clone(),
        },
        StmtKind::Expr(expr) => match queries_in(expr, bound).into_iter().next() {
            Some(q) => StepKind::Query(q),
            None => StepKind::Value,
        },
        StmtKind::Expect(e) => StepKind::Expect {
            queries: queries_in(&e.condition, bound),
        },
        StmtKind::Section { title, body } => StepKind::Section {
            title: title.value.clone(),
            steps: steps(body, source, bound),
        },
        StmtKind::Use { path } => StepKind::Use {
            path: path.value.clone(),
        },
    }
}

/// Every pipeline inside `expr`, outermost first.
fn queries_in(expr: &Expr, bound: &HashSet<String>) -> Vec<Query> {
    let mut out = Vec::new();
    collect_queries(expr, bound, &mut out);
    out
}

fn collect_queries(expr: &Expr, bound: &HashSet<String>, out: &mut Vec<Query>) {
    match &expr.kind {
        ExprKind::Pipeline { source, stages } => {
            out.push(query(source, stages, bound));
            collect_queries(source, bound, out);
        }
        ExprKind::Field { base, .. } => collect_queries(base, bound, out),
        ExprKind::Index { base, index } => {
            collect_queries(base, bound, out);
            collect_queries(index, bound, out);
        }
        ExprKind::Call { args, .. } | ExprKind::List(args) => {
            for a in args {
                collect_queries(a, bound, out);
            }
        }
        ExprKind::Unary { operand, .. } => collect_queries(operand, bound, out),
        ExprKind::Binary { left, right, .. } => {
            collect_queries(left, bound, out);
            collect_queries(right, bound, out);
        }
        _ => {}
    }
}

fn query(source: &Expr, stages: &[Stage], bound: &HashSet<String>) -> Query {
    let source_name = match &source.kind {
        ExprKind::Name(n) if COLLECTIONS.contains(&n.as_str()) => n.clone(),
        ExprKind::Name(n) | ExprKind::Variable(n) => format!("${n}"),
        _ => "expression".to_string(),
    };
    let mut fields = BTreeSet::new();
    // After `group by`, rows are groups: their key columns, `count` and `rows` are not fields
    // of the source rows (other names read through to a member).
    let mut group_columns: Option<HashSet<String>> = None;
    for stage in stages {
        let mut names = Vec::new();
        match &stage.kind {
            StageKind::Where(e) | StageKind::Take(e) => row_paths(e, &mut names),
            StageKind::Select(cols) => columns(cols, &mut names),
            StageKind::SortBy(keys) => {
                for k in keys {
                    row_paths(&k.expr, &mut names);
                }
            }
            StageKind::GroupBy(keys) => {
                for k in keys {
                    row_paths(k, &mut names);
                }
            }
            StageKind::Show(Show::Table(cols) | Show::List(cols)) => columns(cols, &mut names),
            StageKind::Show(Show::Json)
            | StageKind::First
            | StageKind::Single
            | StageKind::Count => {}
        }
        for name in &names {
            let root = name.split('.').next().unwrap_or_default();
            let group_column = group_columns
                .as_ref()
                .is_some_and(|g| g.contains(name) || matches!(root, "count" | "rows"));
            if bound.contains(root)
                || GLOBALS.contains(&root)
                || COLLECTIONS.contains(&root)
                || group_column
            {
                continue;
            }
            fields.insert(name.clone());
        }
        if matches!(stage.kind, StageKind::GroupBy(_)) {
            group_columns = Some(names.into_iter().collect());
        }
    }
    Query {
        source: source_name,
        stages: stages.iter().map(|s| s.kind.keyword()).collect(),
        fields,
    }
}

fn columns(cols: &[Column], names: &mut Vec<String>) {
    for c in cols {
        row_paths(&c.expr, names);
    }
}

/// Dotted paths of bare names read in `expr` (`process.name`, `wait_ms`); `$` variables and
/// nested pipelines (their own rows) are not row fields.
fn row_paths(expr: &Expr, out: &mut Vec<String>) {
    match &expr.kind {
        ExprKind::Name(n) => out.push(n.clone()),
        ExprKind::Field { .. } => match dotted(expr) {
            Some(path) => out.push(path),
            None => {
                if let ExprKind::Field { base, .. } = &expr.kind {
                    row_paths(base, out);
                }
            }
        },
        ExprKind::Index { base, index } => {
            row_paths(base, out);
            row_paths(index, out);
        }
        ExprKind::Call { args, .. } | ExprKind::List(args) => {
            for a in args {
                row_paths(a, out);
            }
        }
        ExprKind::Unary { operand, .. } => row_paths(operand, out),
        ExprKind::Binary { left, right, .. } => {
            row_paths(left, out);
            row_paths(right, out);
        }
        _ => {}
    }
}

/// `a.b.c` when the chain starts at a bare name.
fn dotted(expr: &Expr) -> Option<String> {
    match &expr.kind {
        ExprKind::Name(n) => Some(n.clone()),
        ExprKind::Field { base, field } => dotted(base).map(|b| format!("{b}.{}", field.name)),
        _ => None,
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "query {}", self.source)?;
        if !self.stages.is_empty() {
            write!(f, " | {}", self.stages.join(" | "))?;
        }
        if !self.fields.is_empty() {
            let fields: Vec<&str> = self.fields.iter().map(String::as_str).collect();
            write!(f, "  reads: {}", fields.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        render(&mut out, &self.steps, 0);
        f.write_str(&out)
    }
}

fn render(out: &mut String, steps: &[Step], depth: usize) {
    let indent = "  ".repeat(depth);
    for step in steps {
        let _ = match &step.kind {
            StepKind::Bind { name, query: None } => {
                writeln!(out, "{:>4}  {indent}bind {name}", step.line)
            }
            StepKind::Bind {
                name,
                query: Some(q),
            } => writeln!(out, "{:>4}  {indent}bind {name} = {q}", step.line),
            StepKind::Command { name } => writeln!(out, "{:>4}  {indent}command {name}", step.line),
            StepKind::Query(q) => writeln!(out, "{:>4}  {indent}{q}", step.line),
            StepKind::Value => writeln!(out, "{:>4}  {indent}value", step.line),
            StepKind::Expect { queries } if queries.is_empty() => {
                writeln!(out, "{:>4}  {indent}expect", step.line)
            }
            StepKind::Expect { queries } => {
                let qs: Vec<String> = queries.iter().map(ToString::to_string).collect();
                writeln!(
                    out,
                    "{:>4}  {indent}expect over {}",
                    step.line,
                    qs.join("; ")
                )
            }
            StepKind::Section { title, steps } => {
                let _ = writeln!(out, "{:>4}  {indent}section \"{title}\"", step.line);
                render(out, steps, depth + 1);
                Ok(())
            }
            StepKind::Use { path } => writeln!(out, "{:>4}  {indent}use \"{path}\"", step.line),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(source: &str) -> Plan {
        plan(&crate::parse(source).expect("parses"), source)
    }

    #[test]
    fn a_query_names_the_row_fields_its_stages_read() {
        let p = plan_of(
            "param min: int = 5\nthreads | where state == \"Waiting\" && wait_ms > $min | group by process.name, wait_reason | sort by count desc | show table(count, process.name, wait_reason, tid)\n",
        );
        let StepKind::Query(q) = &p.steps[1].kind else {
            panic!("a query: {p:?}")
        };
        assert_eq!(q.source, "threads");
        assert_eq!(q.stages, ["where", "group by", "sort by", "show"]);
        let fields: Vec<&str> = q.fields.iter().map(String::as_str).collect();
        // `count` belongs to the groups, `$min` to the bindings; `tid` reads through to a member.
        assert_eq!(
            fields,
            ["process.name", "state", "tid", "wait_ms", "wait_reason"]
        );
        assert_eq!(p.steps[1].line, 2);
    }

    #[test]
    fn bindings_sections_and_expectations_carry_their_queries() {
        let p = plan_of(
            "let p = processes | where name == \"lsass.exe\" | single\nsection \"x\" {\n  !process 0 0\n  check (threads | where pid == $p.pid | count) > 0\n}\n",
        );
        let StepKind::Bind {
            name,
            query: Some(q),
        } = &p.steps[0].kind
        else {
            panic!("{p:?}")
        };
        assert_eq!(name, "p");
        assert_eq!(q.fields.iter().collect::<Vec<_>>(), ["name"]);
        let StepKind::Section { steps, .. } = &p.steps[1].kind else {
            panic!("{p:?}")
        };
        assert_eq!(
            steps[0].kind,
            StepKind::Command {
                name: "!process".into()
            }
        );
        let StepKind::Expect { queries } = &steps[1].kind else {
            panic!("{p:?}")
        };
        // `p` is a binding: `$p.pid` is not a row field; `pid` is.
        assert_eq!(queries[0].fields.iter().collect::<Vec<_>>(), ["pid"]);
        let text = p.to_string();
        assert!(
            text.contains("   1  bind p = query processes | where | single  reads: name"),
            "{text}"
        );
        assert!(text.contains("   3    command !process"), "{text}");
    }
}
