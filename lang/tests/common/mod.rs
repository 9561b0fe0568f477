//! Helpers shared by the language tests: span-free comparison and a compact s-expression view
//! of expressions, so tests can state the shape of a tree in one line.

#![allow(dead_code)]

use kds_lang::ast::*;

/// Sets every span to `0..0`, so trees from different texts compare by shape.
pub fn strip(playbook: &mut Playbook) {
    for s in &mut playbook.statements {
        strip_stmt(s);
    }
}

fn strip_stmt(s: &mut Stmt) {
    s.span = 0..0;
    match &mut s.kind {
        StmtKind::Param(p) => {
            p.name.span = 0..0;
            if let Some(t) = &mut p.ty {
                t.span = 0..0;
            }
            if let Some(d) = &mut p.default {
                strip_expr(d);
            }
        }
        StmtKind::Let { name, value } => {
            name.span = 0..0;
            strip_expr(value);
        }
        StmtKind::Command(c) => {
            c.name.span = 0..0;
            for a in &mut c.args {
                a.span = 0..0;
                if let CommandArgKind::Expr(e) = &mut a.kind {
                    strip_expr(e);
                }
            }
        }
        StmtKind::Expr(e) => strip_expr(e),
        StmtKind::Expect(x) => {
            strip_expr(&mut x.condition);
            if let Some((_, sp)) = &mut x.severity {
                *sp = 0..0;
            }
            if let Some(m) = &mut x.message {
                m.span = 0..0;
            }
        }
        StmtKind::Section { title, body } => {
            title.span = 0..0;
            for s in body {
                strip_stmt(s);
            }
        }
        StmtKind::Use { path } => path.span = 0..0,
    }
}

pub fn strip_expr(e: &mut Expr) {
    e.span = 0..0;
    match &mut e.kind {
        ExprKind::Field { base, field } => {
            strip_expr(base);
            field.span = 0..0;
        }
        ExprKind::Index { base, index } => {
            strip_expr(base);
            strip_expr(index);
        }
        ExprKind::Call { function, args } => {
            function.span = 0..0;
            args.iter_mut().for_each(strip_expr);
        }
        ExprKind::Unary { operand, .. } => strip_expr(operand),
        ExprKind::Binary { left, right, .. } => {
            strip_expr(left);
            strip_expr(right);
        }
        ExprKind::List(items) => items.iter_mut().for_each(strip_expr),
        ExprKind::Pipeline { source, stages } => {
            strip_expr(source);
            for st in stages {
                st.span = 0..0;
                match &mut st.kind {
                    StageKind::Where(e) | StageKind::Take(e) => strip_expr(e),
                    StageKind::Select(cols)
                    | StageKind::Show(Show::Table(cols) | Show::List(cols)) => strip_columns(cols),
                    StageKind::SortBy(keys) => {
                        keys.iter_mut().for_each(|k| strip_expr(&mut k.expr))
                    }
                    StageKind::GroupBy(keys) => keys.iter_mut().for_each(strip_expr),
                    StageKind::First
                    | StageKind::Single
                    | StageKind::Count
                    | StageKind::Show(Show::Json) => {}
                }
            }
        }
        _ => {}
    }
}

fn strip_columns(cols: &mut [Column]) {
    for c in cols {
        strip_expr(&mut c.expr);
        if let Some(a) = &mut c.alias {
            a.span = 0..0;
        }
    }
}

/// `a + b * c` as `(+ a (* b c))`.
pub fn sexpr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Null => "null".into(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Variable(v) => format!("${v}"),
        ExprKind::Symbol { module, name } => format!("{module}!{name}"),
        ExprKind::Register(r) => format!("@{r}"),
        ExprKind::Field { base, field } => format!("(. {} {})", sexpr(base), field.name),
        ExprKind::Index { base, index } => format!("([] {} {})", sexpr(base), sexpr(index)),
        ExprKind::Call { function, args } => {
            let args: Vec<String> = args.iter().map(sexpr).collect();
            format!("(call {} {})", function.name, args.join(" ")).replace(" )", ")")
        }
        ExprKind::Unary { op, operand } => {
            let op = match op {
                UnaryOp::Not => "!",
                UnaryOp::Neg => "neg",
                UnaryOp::BitNot => "bitnot",
            };
            format!("({op} {})", sexpr(operand))
        }
        ExprKind::Binary { op, left, right } => {
            format!(
                "({} {} {})",
                kds_lang::print::binary_op(*op),
                sexpr(left),
                sexpr(right)
            )
        }
        ExprKind::List(items) => {
            let items: Vec<String> = items.iter().map(sexpr).collect();
            format!("[{}]", items.join(" "))
        }
        ExprKind::Pipeline { source, stages } => {
            let mut out = format!("(pipe {}", sexpr(source));
            for s in stages {
                out.push(' ');
                out.push_str(&stage(s));
            }
            out.push(')');
            out
        }
    }
}

fn columns(cols: &[Column]) -> String {
    cols.iter()
        .map(|c| match &c.alias {
            Some(a) => format!("(as {} {})", sexpr(&c.expr), a.name),
            None => sexpr(&c.expr),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn stage(s: &Stage) -> String {
    match &s.kind {
        StageKind::Where(e) => format!("(where {})", sexpr(e)),
        StageKind::Select(cols) => format!("(select {})", columns(cols)),
        StageKind::SortBy(keys) => {
            let keys: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}{}",
                        sexpr(&k.expr),
                        if k.descending { " desc" } else { "" }
                    )
                })
                .collect();
            format!("(sort {})", keys.join(", "))
        }
        StageKind::GroupBy(keys) => {
            let keys: Vec<String> = keys.iter().map(sexpr).collect();
            format!("(group {})", keys.join(" "))
        }
        StageKind::Take(e) => format!("(take {})", sexpr(e)),
        StageKind::First => "first".into(),
        StageKind::Single => "single".into(),
        StageKind::Count => "count".into(),
        StageKind::Show(Show::Table(c)) => format!("(table {})", columns(c)),
        StageKind::Show(Show::List(c)) => format!("(list {})", columns(c)),
        StageKind::Show(Show::Json) => "json".into(),
    }
}

/// Parses `source`, which must be free of syntax errors.
pub fn parse_ok(source: &str) -> Playbook {
    match kds_lang::parse(source) {
        Ok(p) => p,
        Err(e) => panic!(
            "{source:?} should parse:\n{}",
            kds_lang::render(&e.0, "test.kds", source)
        ),
    }
}

/// The only statement of `source`.
pub fn one(source: &str) -> Stmt {
    let mut p = parse_ok(source);
    assert_eq!(p.statements.len(), 1, "{source:?}: {:#?}", p.statements);
    p.statements.remove(0)
}

/// The expression of a one-expression-statement `source`, as an s-expression.
pub fn expr(source: &str) -> String {
    match one(source).kind {
        StmtKind::Expr(e) => sexpr(&e),
        StmtKind::Let { value, .. } => sexpr(&value),
        other => panic!("{source:?} is not an expression: {other:?}"),
    }
}
