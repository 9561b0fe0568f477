//! [`Value`]: what the language computes with.
//!
//! # Comparison semantics
//! Three relations, for three uses; `PartialEq` is a fourth, strict one for tests.
//!
//! - [`Value::equals`] is the language's `==`:
//!   - numbers compare numerically across `Int`, `Pointer` (its address) and `Enum` (its
//!     value): `address == 0xffffc10a12345080`, `state == 5`;
//!   - strings compare **case-insensitively** (Windows names are: `name == "LSASS.EXE"`);
//!   - an `Enum` equals a string naming its constant, case-insensitively
//!     (`state == "waiting"`);
//!   - `Null` equals only `Null`; `Bool` only `Bool`; a string never equals a number;
//!   - lists and records compare element by element (records: same keys in the same order);
//!   - objects are equal when they view the same type at the same address in the same space.
//! - [`Value::compare`] is `<`, `<=`, `>`, `>=`: numbers numerically, strings
//!   case-insensitively, `false < true`, lists lexicographically; anything else (and `Null`)
//!   is incomparable (`None`).
//! - [`Value::sort_cmp`] is `sort by`: a total order that never fails. Kinds order
//!   `Null < Bool < number < string < list < record < object`; within a kind as `compare`,
//!   with ties between strings differing only in case broken case-sensitively, so sorting is
//!   deterministic. `Null` is the smallest value (first ascending, last descending).
//! - [`Value::group_key`] is `group by`: a key with `Eq + Hash + Ord` consistent with
//!   `equals` within a kind (numbers by value, strings lower-cased).
//!
//! # Display
//! WinDbg style: integers in decimal, pointers as `ffffc10a`12345080`, enums by constant
//! name (the number when the table has no name), objects as `address [Type: _EPROCESS]`,
//! strings bare at top level and quoted inside lists and records.
//!
//! # JSON
//! `Int` is a JSON number (a string when it does not fit 64 bits), `Pointer` a `"0x…"`
//! string, `Enum` its name (its number when unnamed), `Object` `{"type", "address"}`,
//! `Record` an object in field order.

use super::object::{type_ref_name, Object, Pointer};
use super::ModelError;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;

/// A value of the language.
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    /// Wide enough for every unsigned 64-bit address and every signed 64-bit number.
    Int(i128),
    Str(String),
    /// A typed address in an address space.
    Pointer(Pointer),
    /// A typed view of a structure in memory.
    Object(Object),
    List(Vec<Value>),
    Record(Record),
    Enum(EnumValue),
}

/// A constant of an enum type, with its name when the table has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnumValue {
    pub type_name: String,
    pub value: i64,
    pub name: Option<String>,
}

/// An ordered map of names to values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    fields: Vec<(String, Value)>,
}

impl Record {
    #[must_use]
    pub fn new() -> Record {
        Record::default()
    }

    /// Set `name`, replacing its value in place if present, appending otherwise.
    pub fn insert(&mut self, name: impl Into<String>, value: Value) {
        let name = name.into();
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name, value)),
        }
    }

    /// The value of `name`: exact match first, then ASCII case-insensitive.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .or_else(|| {
                self.fields
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl FromIterator<(String, Value)> for Record {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Record {
        let mut r = Record::new();
        for (k, v) in iter {
            r.insert(k, v);
        }
        r
    }
}

/// A grouping key: `Eq + Hash + Ord`, consistent with [`Value::equals`] within a kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    Null,
    Bool(bool),
    Number(i128),
    /// Lower-cased.
    Str(String),
    List(Vec<GroupKey>),
    Record(Vec<(String, GroupKey)>),
    /// Type, address, DTB of the space (0 when none).
    Object(String, u64, u64),
}

impl Value {
    /// The word for this kind of value: `null`, `bool`, `int`, `string`, `pointer`,
    /// `object`, `list`, `record`, `enum`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Str(_) => "string",
            Value::Pointer(_) => "pointer",
            Value::Object(_) => "object",
            Value::List(_) => "list",
            Value::Record(_) => "record",
            Value::Enum(_) => "enum",
        }
    }

    /// The type for messages: the kind, or the layout's name for typed values
    /// (`_EPROCESS`, `_PEB *`, `_KTHREAD_STATE`).
    #[must_use]
    pub fn type_name(&self) -> String {
        match self {
            Value::Pointer(p) => format!("{} *", type_ref_name(&p.target)),
            Value::Object(o) => o.type_name().to_string(),
            Value::Enum(e) => e.type_name.clone(),
            other => other.kind().to_string(),
        }
    }

    #[must_use]
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// An unsigned integer (addresses, counts).
    #[must_use]
    pub fn uint(v: u64) -> Value {
        Value::Int(i128::from(v))
    }

    /// The number of an `Int`, `Pointer` (address) or `Enum` (value).
    #[must_use]
    pub fn as_number(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Pointer(p) => Some(i128::from(p.address)),
            Value::Enum(e) => Some(i128::from(e.value)),
            _ => None,
        }
    }

    /// The number as a `u64` when it is one (negative numbers are not).
    #[must_use]
    pub fn as_u64(&self) -> Option<u64> {
        self.as_number().and_then(|n| u64::try_from(n).ok())
    }

    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    #[must_use]
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    #[must_use]
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// `self.name`: a field of an object, of the structure a pointer points to (the pointer
    /// is followed in its own address space), or of a record. Dotted names chain.
    pub fn field(&self, name: &str) -> Result<Value, ModelError> {
        if let Some((first, rest)) = name.split_once('.') {
            return self.field(first)?.field(rest);
        }
        match self {
            Value::Object(o) => o.field(name),
            Value::Pointer(p) => p.field(name),
            Value::Record(r) => r.get(name).cloned().ok_or_else(|| ModelError::NoField {
                type_name: "record".into(),
                field: name.to_string(),
            }),
            other => Err(ModelError::NotAStructure {
                kind: other.type_name(),
                field: name.to_string(),
            }),
        }
    }

    /// The language's `==` (see the module documentation).
    #[must_use]
    pub fn equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Null, _) | (_, Value::Null) => false,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => ci_cmp(a, b) == Ordering::Equal,
            (Value::Enum(e), Value::Str(s)) | (Value::Str(s), Value::Enum(e)) => e
                .name
                .as_deref()
                .is_some_and(|n| ci_cmp(n, s) == Ordering::Equal),
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equals(y))
            }
            (Value::Record(a), Value::Record(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((ka, va), (kb, vb))| ka == kb && va.equals(vb))
            }
            (Value::Object(a), Value::Object(b)) => a.same_view(b),
            (a, b) => match (a.as_number(), b.as_number()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }

    /// The language's `<`/`>`: `None` when the two are not comparable.
    #[must_use]
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Str(a), Value::Str(b)) => Some(ci_cmp(a, b)),
            (Value::List(a), Value::List(b)) => {
                for (x, y) in a.iter().zip(b) {
                    match x.compare(y)? {
                        Ordering::Equal => {}
                        o => return Some(o),
                    }
                }
                Some(a.len().cmp(&b.len()))
            }
            (a, b) => Some(a.as_number()?.cmp(&b.as_number()?)),
        }
    }

    /// The total order of `sort by` (see the module documentation).
    #[must_use]
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        let (ra, rb) = (self.rank(), other.rank());
        if ra != rb {
            return ra.cmp(&rb);
        }
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Str(a), Value::Str(b)) => ci_cmp(a, b).then_with(|| a.cmp(b)),
            (Value::List(a), Value::List(b)) => a
                .iter()
                .zip(b)
                .map(|(x, y)| x.sort_cmp(y))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or_else(|| a.len().cmp(&b.len())),
            (Value::Record(a), Value::Record(b)) => a
                .iter()
                .zip(b.iter())
                .map(|((ka, va), (kb, vb))| ka.cmp(kb).then_with(|| va.sort_cmp(vb)))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or_else(|| a.len().cmp(&b.len())),
            (Value::Object(a), Value::Object(b)) => a
                .type_name()
                .cmp(b.type_name())
                .then(a.address().cmp(&b.address()))
                .then(a.space().dtb().cmp(&b.space().dtb())),
            (a, b) => {
                let (x, y) = (a.as_number(), b.as_number());
                x.cmp(&y)
                    .then_with(|| a.number_rank().cmp(&b.number_rank()))
            }
        }
    }

    /// The key of `group by`.
    #[must_use]
    pub fn group_key(&self) -> GroupKey {
        match self {
            Value::Null => GroupKey::Null,
            Value::Bool(b) => GroupKey::Bool(*b),
            Value::Str(s) => GroupKey::Str(s.to_lowercase()),
            Value::List(l) => GroupKey::List(l.iter().map(Value::group_key).collect()),
            Value::Record(r) => GroupKey::Record(
                r.iter()
                    .map(|(k, v)| (k.to_string(), v.group_key()))
                    .collect(),
            ),
            Value::Object(o) => {
                GroupKey::Object(o.type_name().to_string(), o.address(), o.space().dtb())
            }
            Value::Int(_) | Value::Pointer(_) | Value::Enum(_) => {
                GroupKey::Number(self.as_number().unwrap_or_default())
            }
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Pointer(_) | Value::Enum(_) => 2,
            Value::Str(_) => 3,
            Value::List(_) => 4,
            Value::Record(_) => 5,
            Value::Object(_) => 6,
        }
    }

    fn number_rank(&self) -> u8 {
        match self {
            Value::Enum(_) => 1,
            Value::Pointer(_) => 2,
            _ => 0,
        }
    }

    fn fmt_nested(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            other => write!(f, "{other}"),
        }
    }
}

/// Case-insensitive (Unicode lower-case) string order.
fn ci_cmp(a: &str, b: &str) -> Ordering {
    a.chars()
        .flat_map(char::to_lowercase)
        .cmp(b.chars().flat_map(char::to_lowercase))
}

/// Strict structural equality, for tests: same variant and contents, strings
/// case-sensitively, objects by view. The language's `==` is [`Value::equals`].
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Pointer(a), Value::Pointer(b)) => a == b,
            (Value::Object(a), Value::Object(b)) => a.same_view(b),
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Record(a), Value::Record(b)) => a == b,
            (Value::Enum(a), Value::Enum(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
            Value::Pointer(p) => write!(f, "{p}"),
            Value::Object(o) => write!(f, "{o}"),
            Value::Enum(e) => write!(f, "{e}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    v.fmt_nested(f)?;
                }
                f.write_str("]")
            }
            Value::Record(r) => {
                if r.is_empty() {
                    return f.write_str("{}");
                }
                f.write_str("{ ")?;
                for (i, (k, v)) in r.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: ")?;
                    v.fmt_nested(f)?;
                }
                f.write_str(" }")
            }
        }
    }
}

impl fmt::Display for EnumValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.value),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    s.serialize_i64(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    s.serialize_u64(v)
                } else {
                    s.serialize_str(&i.to_string())
                }
            }
            Value::Str(v) => s.serialize_str(v),
            Value::Pointer(p) => s.serialize_str(&format!("{:#x}", p.address)),
            Value::Enum(e) => match &e.name {
                Some(n) => s.serialize_str(n),
                None => s.serialize_i64(e.value),
            },
            Value::Object(o) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("type", o.type_name())?;
                m.serialize_entry("address", &format!("{:#x}", o.address()))?;
                m.end()
            }
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Record(r) => {
                let mut m = s.serialize_map(Some(r.len()))?;
                for (k, v) in r.iter() {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(i128::from(v))
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(i128::from(v))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(i128::from(v))
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(i128::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(v)
    }
}

impl From<Object> for Value {
    fn from(v: Object) -> Value {
        Value::Object(v)
    }
}

impl From<Pointer> for Value {
    fn from(v: Pointer) -> Value {
        Value::Pointer(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
