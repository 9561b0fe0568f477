//! Parameter values: typed defaults, and `--set name=value` text bound to a declared type.

use std::fmt;

use crate::ast::{Expr, ExprKind, Param, ParamType, UnaryOp};

/// A parameter's value, as the CLI binds it and the executor reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Str(String),
    /// `int` and `address` both bind to a number.
    Int(u64),
    Bool(bool),
    List(Vec<ParamValue>),
}

/// A `--set` value that does not fit the parameter's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    pub message: String,
    pub help: Option<String>,
}

impl miette::Diagnostic for ParamError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("kds::param_type"))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::String => f.write_str("string"),
            ParamType::Int => f.write_str("int"),
            ParamType::Address => f.write_str("address"),
            ParamType::Bool => f.write_str("bool"),
            ParamType::List(t) => write!(f, "list<{t}>"),
        }
    }
}

fn err(message: String, help: &str) -> ParamError {
    ParamError {
        message,
        help: Some(help.to_string()),
    }
}

/// Binds the text of `--set name=<text>` to a parameter of type `ty`.
///
/// - `string`: the text as is (surrounding double quotes, if any, are removed);
/// - `int`: decimal, or hex with `0x` (`0n` decimal also accepted); `_` and `` ` `` separators;
/// - `address`: hex by default as in WinDbg (`ffffc10a`12345080`), `0x` hex, `0n` decimal;
/// - `bool`: `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`);
/// - `list<T>`: comma-separated elements, optionally inside `[...]`.
///
/// ```
/// use kds_lang::ast::ParamType;
/// use kds_lang::{bind_param, ParamValue};
/// assert_eq!(bind_param(&ParamType::Int, "5000"), Ok(ParamValue::Int(5000)));
/// assert_eq!(bind_param(&ParamType::Address, "ffffc10a`12345080"), Ok(ParamValue::Int(0xffffc10a12345080)));
/// let ids = ParamType::List(Box::new(ParamType::Int));
/// assert_eq!(bind_param(&ids, "[4, 0x8]"), Ok(ParamValue::List(vec![ParamValue::Int(4), ParamValue::Int(8)])));
/// assert!(bind_param(&ParamType::Int, "lots").is_err());
/// ```
pub fn bind_param(ty: &ParamType, text: &str) -> Result<ParamValue, ParamError> {
    let t = text.trim();
    match ty {
        ParamType::String => Ok(ParamValue::Str(unquote(t).to_string())),
        ParamType::Int => parse_int(t, 10).map(ParamValue::Int).ok_or_else(|| {
            err(
                format!("`{t}` is not an int"),
                "write a decimal number (5000) or hex with 0x (0x1388)",
            )
        }),
        ParamType::Address => parse_int(t, 16).map(ParamValue::Int).ok_or_else(|| {
            err(
                format!("`{t}` is not an address"),
                "write it in hex as WinDbg prints it (ffffc10a`12345080), or with 0x",
            )
        }),
        ParamType::Bool => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(ParamValue::Bool(true)),
            "false" | "no" | "off" | "0" => Ok(ParamValue::Bool(false)),
            _ => Err(err(format!("`{t}` is not a bool"), "write true or false")),
        },
        ParamType::List(inner) => {
            if matches!(**inner, ParamType::List(_)) {
                return Err(err(
                    format!("a {ty} cannot be set from the command line"),
                    "give it a default in the playbook instead",
                ));
            }
            let body = t
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or(t)
                .trim();
            if body.is_empty() {
                return Ok(ParamValue::List(Vec::new()));
            }
            body.split(',')
                .map(|item| {
                    bind_param(inner, item).map_err(|e| ParamError {
                        message: format!("in {ty}: {}", e.message),
                        help: e.help,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(ParamValue::List)
        }
    }
}

fn unquote(t: &str) -> &str {
    t.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(t)
}

/// A number with an optional `0x`/`0n` prefix, in `radix` without one.
fn parse_int(t: &str, radix: u32) -> Option<u64> {
    let lower = t.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0n") {
        (10, d)
    } else {
        (radix, lower.as_str())
    };
    let clean: String = digits.chars().filter(|&c| c != '_' && c != '`').collect();
    if clean.is_empty() || clean.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(&clean, radix).ok()
}

impl ParamValue {
    /// The value of a literal expression (a parameter default), if it is one.
    #[must_use]
    pub fn from_literal(expr: &Expr) -> Option<ParamValue> {
        match &expr.kind {
            ExprKind::Int(v) => Some(ParamValue::Int(*v)),
            ExprKind::Str(s) => Some(ParamValue::Str(s.clone())),
            ExprKind::Bool(b) => Some(ParamValue::Bool(*b)),
            ExprKind::List(items) => items
                .iter()
                .map(ParamValue::from_literal)
                .collect::<Option<Vec<_>>>()
                .map(ParamValue::List),
            ExprKind::Unary {
                op: UnaryOp::Neg,
                operand,
            } => match operand.kind {
                ExprKind::Int(v) => Some(ParamValue::Int(v.wrapping_neg())),
                _ => None,
            },
            _ => None,
        }
    }

    /// The type a value of this shape has (`None` for an empty list, whose element type is
    /// unknown).
    #[must_use]
    pub fn inferred_type(&self) -> Option<ParamType> {
        Some(match self {
            ParamValue::Str(_) => ParamType::String,
            ParamValue::Int(_) => ParamType::Int,
            ParamValue::Bool(_) => ParamType::Bool,
            ParamValue::List(items) => ParamType::List(Box::new(items.first()?.inferred_type()?)),
        })
    }

    /// Whether the value fits `ty` (`address` takes ints).
    #[must_use]
    pub fn fits(&self, ty: &ParamType) -> bool {
        match (self, ty) {
            (ParamValue::Str(_), ParamType::String)
            | (ParamValue::Int(_), ParamType::Int | ParamType::Address)
            | (ParamValue::Bool(_), ParamType::Bool) => true,
            (ParamValue::List(items), ParamType::List(t)) => items.iter().all(|i| i.fits(t)),
            _ => false,
        }
    }
}

/// The type of a parameter: as declared, else inferred from its default.
#[must_use]
pub fn param_type(param: &Param) -> Option<ParamType> {
    if let Some(t) = &param.ty {
        return Some(t.ty.clone());
    }
    param
        .default
        .as_ref()
        .and_then(ParamValue::from_literal)
        .and_then(|v| v.inferred_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_each_type() {
        assert_eq!(
            bind_param(&ParamType::String, "svchost.exe"),
            Ok(ParamValue::Str("svchost.exe".into()))
        );
        assert_eq!(
            bind_param(&ParamType::String, "\"a b\""),
            Ok(ParamValue::Str("a b".into()))
        );
        assert_eq!(bind_param(&ParamType::Int, "0x10"), Ok(ParamValue::Int(16)));
        assert_eq!(
            bind_param(&ParamType::Int, "1_000"),
            Ok(ParamValue::Int(1000))
        );
        assert_eq!(
            bind_param(&ParamType::Address, "0n16"),
            Ok(ParamValue::Int(16))
        );
        assert_eq!(
            bind_param(&ParamType::Address, "10"),
            Ok(ParamValue::Int(16))
        );
        assert_eq!(
            bind_param(&ParamType::Bool, "Yes"),
            Ok(ParamValue::Bool(true))
        );
        let strings = ParamType::List(Box::new(ParamType::String));
        assert_eq!(
            bind_param(&strings, "a.exe, b.exe"),
            Ok(ParamValue::List(vec![
                ParamValue::Str("a.exe".into()),
                ParamValue::Str("b.exe".into())
            ]))
        );
        assert_eq!(bind_param(&strings, "[]"), Ok(ParamValue::List(vec![])));
    }

    #[test]
    fn rejects_what_does_not_fit() {
        assert!(bind_param(&ParamType::Int, "-1").is_err());
        assert!(bind_param(&ParamType::Int, "").is_err());
        assert!(bind_param(&ParamType::Int, "99999999999999999999").is_err());
        assert!(bind_param(&ParamType::Address, "xyz").is_err());
        assert!(bind_param(&ParamType::Bool, "maybe").is_err());
        let ints = ParamType::List(Box::new(ParamType::Int));
        let e = bind_param(&ints, "4, x").unwrap_err();
        assert_eq!(e.message, "in list<int>: `x` is not an int");
        let nested = ParamType::List(Box::new(ints));
        assert!(bind_param(&nested, "[]").is_err());
    }
}
