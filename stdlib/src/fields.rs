//! Reading the fields a command shows, by name, from whichever of several places the build's
//! symbol table has them: the first path that exists wins. No build numbers.

use kds_runtime::model::{Object, Value};
use kds_runtime::symbols::TypeRef;

/// The first of `paths` that exists and reads as a number. A path is dotted field names,
/// each optionally indexed: `QuotaBlock.QuotaEntry[0].Usage`.
pub(crate) fn number(o: &Object, paths: &[&str]) -> Option<u64> {
    paths.iter().find_map(|p| value_number(&path_value(o, p)?))
}

/// The value at a dotted, optionally indexed path of raw fields.
pub(crate) fn path_value(o: &Object, path: &str) -> Option<Value> {
    let mut current: Option<Value> = None;
    for segment in path.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (
                name,
                Some(rest.trim_end_matches(']').parse::<usize>().ok()?),
            ),
            None => (segment, None),
        };
        let mut v = match &current {
            None => o.raw_field(name).ok()?,
            Some(v) => v.field(name).ok()?,
        };
        if let Some(i) = index {
            v = match v {
                Value::List(items) => items.into_iter().nth(i)?,
                _ => return None,
            };
        }
        current = Some(v);
    }
    current
}

/// A value as an unsigned number (pointers by address, enums by value).
pub(crate) fn value_number(v: &Value) -> Option<u64> {
    match v {
        Value::Pointer(p) => Some(p.address),
        Value::Enum(e) => u64::try_from(e.value).ok(),
        Value::Bool(b) => Some(u64::from(*b)),
        other => other.as_u64(),
    }
}

/// A signed field (priorities are `char`).
pub(crate) fn signed(o: &Object, paths: &[&str]) -> Option<i64> {
    paths.iter().find_map(|p| match path_value(o, p)? {
        Value::Int(i) => i64::try_from(i).ok(),
        other => value_number(&other).and_then(|n| i64::try_from(n).ok()),
    })
}

/// A friendly or raw field as text (strings as they are, `None` when unreadable).
pub(crate) fn text(o: &Object, name: &str) -> Option<String> {
    match o.field(name).ok()? {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// An `_EX_FAST_REF` (or plain pointer) field as the object address: the reference count in
/// its low bits cleared, as many bits as the table's `_EX_FAST_REF.RefCnt` bitfield has.
pub(crate) fn fast_ref(o: &Object, path: &str) -> Option<u64> {
    let raw = number(o, &[&format!("{path}.Value"), path])?;
    let bits = match o.table().field("_EX_FAST_REF", "RefCnt").map(|l| l.ty) {
        Ok(TypeRef::Bitfield { length, .. }) if length < 64 => (1u64 << length) - 1,
        _ => 0,
    };
    Some(raw & !bits)
}
