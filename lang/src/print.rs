//! The canonical text of a playbook: parsing what [`print()`] writes gives back the same syntax
//! tree (spans aside). Parentheses are written only where precedence, a pipeline inside an
//! operand, or the statement-start rules need them.

use std::fmt::Write;

use crate::ast::*;
use crate::parse::{classify, precedence, StmtRule};

/// Prints a playbook in canonical form, one statement a line, section bodies indented.
///
/// ```
/// let p = kds_lang::parse("let p=processes|where name==$name|single\n!process  0   0").unwrap();
/// assert_eq!(
///     kds_lang::print(&p),
///     "let p = processes | where name == $name | single\n!process 0x0 0x0\n"
/// );
/// ```
#[must_use]
pub fn print(playbook: &Playbook) -> String {
    let mut out = String::new();
    statements(&mut out, &playbook.statements, 0);
    out
}

fn statements(out: &mut String, stmts: &[Stmt], indent: usize) {
    for s in stmts {
        out.push_str(&"    ".repeat(indent));
        statement(out, s, indent);
        out.push('\n');
    }
}

fn statement(out: &mut String, s: &Stmt, indent: usize) {
    match &s.kind {
        StmtKind::Param(p) => {
            let _ = write!(out, "param {}", p.name.name);
            if let Some(t) = &p.ty {
                let _ = write!(out, ": {}", t.ty);
            }
            if let Some(d) = &p.default {
                let _ = write!(out, " = {}", expr_top(d));
            }
        }
        StmtKind::Let { name, value } => {
            let _ = write!(out, "let {} = {}", name.name, expr_top(value));
        }
        StmtKind::Command(c) => out.push_str(&command(c)),
        StmtKind::Expr(e) => {
            let text = expr_top(e);
            if classify(&text) == StmtRule::Expr {
                out.push_str(&text);
            } else {
                // `x + 1` would read as the command `x`; `let` as a statement keyword.
                let _ = write!(out, "({text})");
            }
        }
        StmtKind::Expect(x) => {
            out.push_str(match x.keyword {
                ExpectKeyword::Expect => "expect ",
                ExpectKeyword::Check => "check ",
            });
            out.push_str(&expr_top(&x.condition));
            if x.severity.is_some() || x.message.is_some() {
                out.push_str(" else");
                if let Some((sev, _)) = &x.severity {
                    out.push_str(match sev {
                        Severity::Note => " note",
                        Severity::Warn => " warn",
                        Severity::Fail => " fail",
                    });
                }
                if let Some(m) = &x.message {
                    let _ = write!(out, " {}", string(&m.value));
                }
            }
        }
        StmtKind::Section { title, body } => {
            let _ = writeln!(out, "section {} {{", string(&title.value));
            statements(out, body, indent + 1);
            out.push_str(&"    ".repeat(indent));
            out.push('}');
        }
        StmtKind::Use { path } => {
            let _ = write!(out, "use {}", string(&path.value));
        }
    }
}

/// A string literal with the escapes the grammar decodes.
#[must_use]
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn command(c: &Command) -> String {
    let mut out = c.name.name.clone();
    for a in &c.args {
        out.push(' ');
        out.push_str(&command_arg(&a.kind));
    }
    out
}

fn command_arg(a: &CommandArgKind) -> String {
    match a {
        CommandArgKind::Flag(f) => format!("/{f}"),
        CommandArgKind::Number(n) => format!("{n:#x}"),
        CommandArgKind::Length { value, unchecked } => {
            format!("L{}{value:#x}", if *unchecked { "?" } else { "" })
        }
        CommandArgKind::Qualified { module, name } => format!("{module}!{name}"),
        CommandArgKind::Register(r) => format!("@{r}"),
        CommandArgKind::Expr(e) => match &e.kind {
            ExprKind::Variable(_) => expr(e, 0),
            ExprKind::Field { .. } if is_variable_path(e) => expr(e, 0),
            ExprKind::Call { function, args } if function.name == "poi" && args.len() == 1 => {
                format!("poi({})", expr_top(&args[0]))
            }
            _ => format!("({})", expr_top(e)),
        },
        CommandArgKind::Word(w) => {
            if word_is_plain(w) {
                w.clone()
            } else {
                format!("\"{w}\"")
            }
        }
    }
}

/// `$p.a.b`: written bare in a command.
fn is_variable_path(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Variable(_) => true,
        ExprKind::Field { base, .. } => is_variable_path(base),
        _ => false,
    }
}

/// Whether a word reads back as the same word when written without quotes.
fn word_is_plain(w: &str) -> bool {
    if w.is_empty()
        || w.starts_with(['$', '/', '@', '"'])
        || w.contains(|c: char| c.is_whitespace() || "()[]{};#\"!|".contains(c))
    {
        return false;
    }
    let lower = w.to_ascii_lowercase();
    let after_l = lower
        .strip_prefix('l')
        .map(|r| r.strip_prefix('?').unwrap_or(r));
    let unsigned = lower.strip_prefix('-').unwrap_or(&lower);
    !(is_wnum(unsigned) || after_l.is_some_and(is_wnum))
}

/// Whether `s` (lower case) is a WinDbg number token.
fn is_wnum(s: &str) -> bool {
    let (digits, ok): (&str, fn(char) -> bool) = if let Some(d) = s.strip_prefix("0x") {
        (d, |c| c.is_ascii_hexdigit())
    } else if let Some(d) = s.strip_prefix("0n") {
        (d, |c| c.is_ascii_digit())
    } else if let Some(d) = s.strip_prefix("0t") {
        (d, |c| ('0'..='7').contains(&c))
    } else if let Some(d) = s.strip_prefix("0y") {
        (d, |c| c == '0' || c == '1')
    } else {
        (s, |c| c.is_ascii_hexdigit())
    };
    let prefixed_ok =
        digits.chars().next().is_some_and(ok) && digits.chars().all(|c| ok(c) || c == '`');
    let bare_ok = s.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
        && s.chars().all(|c| c.is_ascii_hexdigit() || c == '`');
    prefixed_ok || bare_ok
}

/// An expression where a pipeline may stand unparenthesized.
fn expr_top(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Pipeline { source, stages } => {
            let mut out = expr(source, 1);
            for s in stages {
                out.push_str(" | ");
                out.push_str(&stage(s));
            }
            out
        }
        _ => expr(e, 0),
    }
}

const POSTFIX: u8 = 20;
const PREFIX: u8 = 10;

fn starts_with_stage_keyword(text: &str) -> bool {
    let word = crate::parse::first_word(text);
    crate::check::STAGES.contains(&word)
}

/// An expression that binds at least as tightly as `min` (0: anything but a pipeline).
fn expr(e: &Expr, min: u8) -> String {
    let (text, strength) = match &e.kind {
        ExprKind::Int(v) => (v.to_string(), POSTFIX),
        ExprKind::Str(s) => (string(s), POSTFIX),
        ExprKind::Bool(b) => (b.to_string(), POSTFIX),
        ExprKind::Null => ("null".to_string(), POSTFIX),
        ExprKind::Name(n) => (n.clone(), POSTFIX),
        ExprKind::Variable(v) => (format!("${v}"), POSTFIX),
        ExprKind::Symbol { module, name } => (format!("{module}!{name}"), POSTFIX),
        ExprKind::Register(r) => (format!("@{r}"), POSTFIX),
        ExprKind::Field { base, field } => {
            (format!("{}.{}", expr(base, POSTFIX), field.name), POSTFIX)
        }
        ExprKind::Index { base, index } => (
            format!("{}[{}]", expr(base, POSTFIX), expr_top(index)),
            POSTFIX,
        ),
        // A pipeline in a comma list is parenthesized: `[a | select x, y]` would read `y` as
        // a second column.
        ExprKind::Call { function, args } => {
            let args: Vec<String> = args.iter().map(operand).collect();
            (format!("{}({})", function.name, args.join(", ")), POSTFIX)
        }
        ExprKind::List(items) => {
            let items: Vec<String> = items.iter().map(operand).collect();
            (format!("[{}]", items.join(", ")), POSTFIX)
        }
        ExprKind::Unary { op, operand } => {
            let op = match op {
                UnaryOp::Not => "!",
                UnaryOp::Neg => "-",
                UnaryOp::BitNot => "~",
            };
            (format!("{op}{}", expr(operand, PREFIX)), PREFIX)
        }
        ExprKind::Binary { op, left, right } => {
            let p = precedence(*op);
            let l = expr(left, p);
            let mut r = expr(right, p + 1);
            if *op == BinaryOp::BitOr && starts_with_stage_keyword(&r) {
                r = format!("({r})");
            }
            (format!("{l} {} {r}", binary_op(*op)), p)
        }
        // Only reached below the top: always parenthesized (`min` is at least 1 there).
        ExprKind::Pipeline { .. } => (expr_top(e), 0),
    };
    if strength < min {
        format!("({text})")
    } else {
        text
    }
}

/// The operator as written.
#[must_use]
pub fn binary_op(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Or => "||",
        BinaryOp::And => "&&",
        BinaryOp::Eq => "==",
        BinaryOp::Ne => "!=",
        BinaryOp::Lt => "<",
        BinaryOp::Le => "<=",
        BinaryOp::Gt => ">",
        BinaryOp::Ge => ">=",
        BinaryOp::In => "in",
        BinaryOp::Like => "~",
        BinaryOp::BitOr => "|",
        BinaryOp::BitXor => "^",
        BinaryOp::BitAnd => "&",
        BinaryOp::Shl => "<<",
        BinaryOp::Shr => ">>",
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::Rem => "%",
    }
}

/// A stage operand: anything but an unparenthesized pipeline.
fn operand(e: &Expr) -> String {
    expr(e, 1)
}

fn columns(cols: &[Column]) -> String {
    cols.iter()
        .map(|c| match &c.alias {
            Some(a) => format!("{} as {}", operand(&c.expr), a.name),
            None => operand(&c.expr),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn stage(s: &Stage) -> String {
    match &s.kind {
        StageKind::Where(e) => format!("where {}", operand(e)),
        StageKind::Select(cols) => format!("select {}", columns(cols)).trim_end().to_string(),
        StageKind::SortBy(keys) => {
            let keys: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}{}",
                        operand(&k.expr),
                        if k.descending { " desc" } else { "" }
                    )
                })
                .collect();
            format!("sort by {}", keys.join(", "))
        }
        StageKind::GroupBy(keys) => {
            let keys: Vec<String> = keys.iter().map(operand).collect();
            format!("group by {}", keys.join(", "))
        }
        StageKind::Take(e) => format!("take {}", operand(e)),
        StageKind::First => "first".to_string(),
        StageKind::Single => "single".to_string(),
        StageKind::Count => "count".to_string(),
        StageKind::Show(Show::Table(cols)) if cols.is_empty() => "show".to_string(),
        StageKind::Show(Show::Table(cols)) => format!("show table({})", columns(cols)),
        StageKind::Show(Show::List(cols)) if cols.is_empty() => "show list".to_string(),
        StageKind::Show(Show::List(cols)) => format!("show list({})", columns(cols)),
        StageKind::Show(Show::Json) => "show json".to_string(),
    }
}
