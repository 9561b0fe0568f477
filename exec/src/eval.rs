//! Expressions and pipelines over model values.

use crate::error::ExecError;
use crate::Interpreter;
use kds_lang::ast::{
    BinaryOp, Column, Expr, ExprKind, Show, SortKey, Span, Stage, StageKind, UnaryOp,
};
use kds_runtime::model::{ModelError, Pointer, Record, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The row a pipeline stage is looking at, if any: its fields are names in scope.
pub(crate) type Row<'r> = Option<&'r Value>;

/// What a pipeline's `show` stage asks for, with the rows it applies to.
pub(crate) struct Shown {
    pub spec: Show,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Interpreter {
    pub(crate) fn eval(&mut self, expr: &Expr, row: Row<'_>) -> Result<Value, ExecError> {
        let span = &expr.span;
        match &expr.kind {
            ExprKind::Int(v) => Ok(Value::Int(i128::from(*v))),
            ExprKind::Str(s) => Ok(Value::Str(s.clone())),
            ExprKind::Bool(b) => Ok(Value::Bool(*b)),
            ExprKind::Null => Ok(Value::Null),
            ExprKind::Name(name) => self.resolve_name(name, row, span),
            ExprKind::Variable(name) => self
                .bindings
                .get(name)
                .cloned()
                .ok_or_else(|| ExecError::script(format!("`${name}` is not defined"), span)),
            ExprKind::Symbol { module, name } => {
                let address = self.symbol_address(module, name, span)?;
                Ok(Value::Pointer(Pointer::untyped(address)))
            }
            ExprKind::Register(name) => self.register(name, span),
            ExprKind::Field { base, field } => {
                let base = self.eval(base, row)?;
                field_of(&base, &field.name, &field.span)
            }
            ExprKind::Index { base, index } => {
                let base = self.eval(base, row)?;
                let index = self.eval(index, row)?;
                index_of(&base, &index, span)
            }
            ExprKind::Call { function, args } => {
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    values.push(self.eval(a, row)?);
                }
                self.call(&function.name, &values, span)
            }
            ExprKind::Unary { op, operand } => {
                let v = self.eval(operand, row)?;
                unary(*op, &v, span)
            }
            ExprKind::Binary { op, left, right } => match op {
                BinaryOp::And => {
                    let l = self.eval(left, row)?;
                    if !truthy(&l) {
                        return Ok(Value::Bool(false));
                    }
                    Ok(Value::Bool(truthy(&self.eval(right, row)?)))
                }
                BinaryOp::Or => {
                    let l = self.eval(left, row)?;
                    if truthy(&l) {
                        return Ok(Value::Bool(true));
                    }
                    Ok(Value::Bool(truthy(&self.eval(right, row)?)))
                }
                _ => {
                    let l = self.eval(left, row)?;
                    let r = self.eval(right, row)?;
                    binary(*op, &l, &r, span)
                }
            },
            ExprKind::List(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    values.push(self.eval(item, row)?);
                }
                Ok(Value::List(values))
            }
            ExprKind::Pipeline { source, stages } => {
                let (value, shown) = self.pipeline(source, stages, row)?;
                if let Some(shown) = shown {
                    self.emit_shown(shown);
                }
                Ok(value)
            }
        }
    }

    fn resolve_name(&mut self, name: &str, row: Row<'_>, span: &Span) -> Result<Value, ExecError> {
        if let Some(row) = row {
            match row_field(row, name) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => return Err(ExecError::from_model(&e, span)),
            }
        }
        if let Some(v) = self.bindings.get(name) {
            return Ok(v.clone());
        }
        if let Some(v) = self.target_global(name) {
            return Ok(v);
        }
        match name {
            "processes" | "threads" | "modules" => self.collection(name, span),
            _ => Err(ExecError::script(
                match row {
                    Some(r) => format!(
                        "`{name}` is neither a field of this {} nor a defined name",
                        r.type_name()
                    ),
                    None => format!("`{name}` is not defined"),
                },
                span,
            )),
        }
    }

    /// Run `source | stages`: the final value, and what `show` asked to display.
    pub(crate) fn pipeline(
        &mut self,
        source: &Expr,
        stages: &[Stage],
        row: Row<'_>,
    ) -> Result<(Value, Option<Shown>), ExecError> {
        let mut current = self.eval(source, row)?;
        let mut shown = None;
        for stage in stages {
            let rows = match current {
                Value::List(items) => items,
                Value::Null => Vec::new(),
                single => vec![single],
            };
            current = match &stage.kind {
                StageKind::Where(cond) => {
                    let mut kept = Vec::new();
                    for r in rows {
                        if truthy(&self.eval(cond, Some(&r))?) {
                            kept.push(r);
                        }
                    }
                    Value::List(kept)
                }
                StageKind::Select(columns) => {
                    let names = self.column_names(columns);
                    let mut out = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let mut record = Record::new();
                        for (name, column) in names.iter().zip(columns) {
                            record.insert(name.clone(), self.eval(&column.expr, Some(r))?);
                        }
                        out.push(Value::Record(record));
                    }
                    Value::List(out)
                }
                StageKind::SortBy(keys) => Value::List(self.sort(rows, keys)?),
                StageKind::GroupBy(keys) => Value::List(self.group(rows, keys)?),
                StageKind::Take(n) => {
                    let n = self.eval(n, row)?;
                    let n = n.as_u64().ok_or_else(|| {
                        ExecError::script(
                            format!("`take` needs a count, not {}", n.kind()),
                            &stage.span,
                        )
                    })?;
                    Value::List(
                        rows.into_iter()
                            .take(usize::try_from(n).unwrap_or(usize::MAX))
                            .collect(),
                    )
                }
                StageKind::First => rows.into_iter().next().unwrap_or(Value::Null),
                StageKind::Single => {
                    if rows.len() != 1 {
                        return Err(ExecError::script(
                            format!("`single` expected exactly one row, found {}", rows.len()),
                            &stage.span,
                        ));
                    }
                    rows.into_iter().next().unwrap_or(Value::Null)
                }
                StageKind::Count => Value::Int(rows.len() as i128),
                StageKind::Show(spec) => {
                    shown = Some(self.show(spec, &rows)?);
                    Value::List(rows)
                }
            };
        }
        Ok((current, shown))
    }

    fn column_names(&self, columns: &[Column]) -> Vec<String> {
        columns
            .iter()
            .map(|c| match &c.alias {
                Some(alias) => alias.name.clone(),
                None => self
                    .source
                    .get(c.expr.span.clone())
                    .unwrap_or("?")
                    .trim()
                    .to_string(),
            })
            .collect()
    }

    fn sort(&mut self, rows: Vec<Value>, keys: &[SortKey]) -> Result<Vec<Value>, ExecError> {
        let mut keyed = Vec::with_capacity(rows.len());
        for r in rows {
            let mut k = Vec::with_capacity(keys.len());
            for key in keys {
                k.push(self.eval(&key.expr, Some(&r))?);
            }
            keyed.push((k, r));
        }
        keyed.sort_by(|(a, _), (b, _)| {
            for ((x, y), key) in a.iter().zip(b).zip(keys) {
                let o = x.sort_cmp(y);
                let o = if key.descending { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        Ok(keyed.into_iter().map(|(_, r)| r).collect())
    }

    /// Group rows by key: each group is a record of the key columns, `count` and `rows`; other
    /// names read through to the group's first row.
    fn group(&mut self, rows: Vec<Value>, keys: &[Expr]) -> Result<Vec<Value>, ExecError> {
        let names: Vec<String> = keys
            .iter()
            .map(|k| {
                self.source
                    .get(k.span.clone())
                    .unwrap_or("?")
                    .trim()
                    .to_string()
            })
            .collect();
        let mut groups: BTreeMap<Vec<kds_runtime::model::GroupKey>, (Vec<Value>, Vec<Value>)> =
            BTreeMap::new();
        let mut order = Vec::new();
        for r in rows {
            let mut values = Vec::with_capacity(keys.len());
            for k in keys {
                values.push(self.eval(k, Some(&r))?);
            }
            let key: Vec<_> = values.iter().map(Value::group_key).collect();
            let entry = groups.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (values, Vec::new())
            });
            entry.1.push(r);
        }
        let mut out = Vec::with_capacity(order.len());
        for key in order {
            if let Some((values, members)) = groups.remove(&key) {
                let mut record = Record::new();
                for (name, value) in names.iter().zip(values) {
                    record.insert(name.clone(), value);
                }
                record.insert("count", Value::Int(members.len() as i128));
                record.insert("rows", Value::List(members));
                out.push(Value::Record(record));
            }
        }
        Ok(out)
    }

    fn show(&mut self, spec: &Show, rows: &[Value]) -> Result<Shown, ExecError> {
        let columns = match spec {
            Show::Table(c) | Show::List(c) => c.clone(),
            Show::Json => Vec::new(),
        };
        if columns.is_empty() {
            let names = rows.first().map(default_columns).unwrap_or_default();
            let mut table = Vec::with_capacity(rows.len());
            for r in rows {
                let mut line = Vec::with_capacity(names.len());
                for n in &names {
                    line.push(row_field(r, n).ok().flatten().unwrap_or(Value::Null));
                }
                table.push(line);
            }
            return Ok(Shown {
                spec: spec.clone(),
                columns: names,
                rows: table,
            });
        }
        let names = self.column_names(&columns);
        let mut table = Vec::with_capacity(rows.len());
        for r in rows {
            let mut line = Vec::with_capacity(columns.len());
            for c in &columns {
                line.push(self.eval(&c.expr, Some(r))?);
            }
            table.push(line);
        }
        Ok(Shown {
            spec: spec.clone(),
            columns: names,
            rows: table,
        })
    }
}

/// The columns shown for a row when none are named: friendly fields of objects, keys of
/// records (without nested `rows`), `value` for anything else.
pub(crate) fn default_columns(row: &Value) -> Vec<String> {
    match row {
        Value::Object(o) => {
            let friendly = o.friendly_fields();
            if friendly.is_empty() {
                o.field_names()
            } else {
                friendly.iter().map(|s| (*s).to_string()).collect()
            }
        }
        Value::Record(r) => r
            .keys()
            .filter(|k| *k != "rows")
            .map(str::to_string)
            .collect(),
        _ => vec!["value".to_string()],
    }
}

/// A named field of a row: `Ok(None)` when the row has no such field.
pub(crate) fn row_field(row: &Value, name: &str) -> Result<Option<Value>, ModelError> {
    match row {
        Value::Record(r) => {
            if let Some(v) = r.get(name) {
                return Ok(Some(v.clone()));
            }
            // A group reads through to its first member.
            match r.get("rows") {
                Some(Value::List(members)) => match members.first() {
                    Some(first) => row_field(first, name),
                    None => Ok(None),
                },
                _ => Ok(None),
            }
        }
        Value::Object(_) | Value::Pointer(_) => match row.field(name) {
            Ok(v) => Ok(Some(v)),
            Err(ModelError::NoField { .. } | ModelError::Symbol(_)) => Ok(None),
            Err(e) => Err(e),
        },
        Value::Null
        | Value::Bool(_)
        | Value::Int(_)
        | Value::Str(_)
        | Value::List(_)
        | Value::Enum(_) => {
            if name == "value" {
                Ok(Some(row.clone()))
            } else {
                Ok(None)
            }
        }
    }
}

fn field_of(base: &Value, name: &str, span: &Span) -> Result<Value, ExecError> {
    match base {
        Value::Null => Ok(Value::Null),
        Value::Record(_) => row_field(base, name)
            .map_err(|e| ExecError::from_model(&e, span))?
            .ok_or_else(|| ExecError::script(format!("this record has no field `{name}`"), span)),
        Value::List(items) if name == "count" => Ok(Value::Int(items.len() as i128)),
        _ => base
            .field(name)
            .map_err(|e| ExecError::from_model(&e, span)),
    }
}

fn index_of(base: &Value, index: &Value, span: &Span) -> Result<Value, ExecError> {
    let i = index.as_number().ok_or_else(|| {
        ExecError::script(
            format!("an index must be a number, not {}", index.kind()),
            span,
        )
    })?;
    match base {
        Value::List(items) => {
            let at = if i < 0 { items.len() as i128 + i } else { i };
            usize::try_from(at)
                .ok()
                .and_then(|at| items.get(at))
                .cloned()
                .ok_or_else(|| {
                    ExecError::script(
                        format!("index {i} is outside a list of {}", items.len()),
                        span,
                    )
                })
        }
        Value::Str(s) => usize::try_from(i)
            .ok()
            .and_then(|at| s.chars().nth(at))
            .map(|c| Value::Str(c.to_string()))
            .ok_or_else(|| ExecError::script(format!("index {i} is outside the string"), span)),
        other => Err(ExecError::script(
            format!("cannot index a {}", other.kind()),
            span,
        )),
    }
}

/// Whether a value counts as true in `where`, `expect`, `&&`, `||`.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Str(s) => !s.is_empty(),
        Value::List(l) => !l.is_empty(),
        Value::Pointer(p) => !p.is_null(),
        Value::Record(_) | Value::Object(_) | Value::Enum(_) => true,
    }
}

fn number(v: &Value, span: &Span, what: &str) -> Result<i128, ExecError> {
    v.as_number()
        .ok_or_else(|| ExecError::script(format!("{what} needs numbers, not {}", v.kind()), span))
}

fn unary(op: UnaryOp, v: &Value, span: &Span) -> Result<Value, ExecError> {
    match op {
        UnaryOp::Not => Ok(Value::Bool(!truthy(v))),
        UnaryOp::Neg => Ok(Value::Int(-number(v, span, "`-`")?)),
        UnaryOp::BitNot => Ok(Value::Int(i128::from(!(number(v, span, "`~`")? as u64)))),
    }
}

fn binary(op: BinaryOp, l: &Value, r: &Value, span: &Span) -> Result<Value, ExecError> {
    let cmp = |want: fn(Ordering) -> bool| -> Result<Value, ExecError> {
        l.compare(r).map(|o| Value::Bool(want(o))).ok_or_else(|| {
            ExecError::script(
                format!("cannot compare a {} with a {}", l.kind(), r.kind()),
                span,
            )
        })
    };
    let arith = |f: fn(i128, i128) -> Option<i128>, name: &str| -> Result<Value, ExecError> {
        let a = number(l, span, name)?;
        let b = number(r, span, name)?;
        f(a, b)
            .map(Value::Int)
            .ok_or_else(|| ExecError::script(format!("{name} overflows or divides by zero"), span))
    };
    match op {
        BinaryOp::Eq => Ok(Value::Bool(l.equals(r))),
        BinaryOp::Ne => Ok(Value::Bool(!l.equals(r))),
        BinaryOp::Lt => cmp(|o| o == Ordering::Less),
        BinaryOp::Le => cmp(|o| o != Ordering::Greater),
        BinaryOp::Gt => cmp(|o| o == Ordering::Greater),
        BinaryOp::Ge => cmp(|o| o != Ordering::Less),
        BinaryOp::In => match r {
            Value::List(items) => Ok(Value::Bool(items.iter().any(|i| l.equals(i)))),
            Value::Str(s) => match l.as_str() {
                Some(needle) => Ok(Value::Bool(
                    s.to_lowercase().contains(&needle.to_lowercase()),
                )),
                None => Err(ExecError::script(
                    "`in` a string needs a string on the left",
                    span,
                )),
            },
            other => Err(ExecError::script(
                format!("`in` needs a list on the right, not {}", other.kind()),
                span,
            )),
        },
        BinaryOp::Like => match (l.as_str(), r.as_str()) {
            (Some(text), Some(pattern)) => Ok(Value::Bool(glob(
                &pattern.to_lowercase(),
                &text.to_lowercase(),
            ))),
            (None, _) if l.is_null() => Ok(Value::Bool(false)),
            _ => Err(ExecError::script(
                "`~` matches a string against a pattern string",
                span,
            )),
        },
        BinaryOp::Add => match (l, r) {
            (Value::Str(a), b) => Ok(Value::Str(format!("{a}{b}"))),
            (a, Value::Str(b)) => Ok(Value::Str(format!("{a}{b}"))),
            _ => arith(i128::checked_add, "`+`"),
        },
        BinaryOp::Sub => arith(i128::checked_sub, "`-`"),
        BinaryOp::Mul => arith(i128::checked_mul, "`*`"),
        BinaryOp::Div => arith(i128::checked_div, "`/`"),
        BinaryOp::Rem => arith(i128::checked_rem, "`%`"),
        BinaryOp::BitAnd => arith(|a, b| Some(a & b), "`&`"),
        BinaryOp::BitOr => arith(|a, b| Some(a | b), "`|`"),
        BinaryOp::BitXor => arith(|a, b| Some(a ^ b), "`^`"),
        BinaryOp::Shl => arith(
            |a, b| u32::try_from(b).ok().and_then(|b| a.checked_shl(b)),
            "`<<`",
        ),
        BinaryOp::Shr => arith(
            |a, b| u32::try_from(b).ok().and_then(|b| a.checked_shr(b)),
            "`>>`",
        ),
        BinaryOp::And | BinaryOp::Or => Ok(Value::Bool(truthy(l) && truthy(r))),
    }
}

/// `*` any run, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_like_windows_wildcards() {
        assert!(glob("svchost*", "svchost.exe"));
        assert!(glob("*.exe", "lsass.exe"));
        assert!(glob("w?wp.exe", "w3wp.exe"));
        assert!(!glob("svchost*", "smss.exe"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "a"));
    }
}
