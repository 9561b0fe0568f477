//! Values between the playbook language ([`Value`]) and rhai ([`Dynamic`]).
//!
//! | kds `Value`                 | rhai                                                          |
//! |-----------------------------|---------------------------------------------------------------|
//! | `null`                      | `()`                                                          |
//! | `bool`                      | `bool`                                                        |
//! | `int` that fits `i64`       | `INT` (`i64`)                                                 |
//! | `int` in `2^63 .. 2^64`     | `INT` with the same 64 bits (negative in rhai: kernel addresses, `hex()` prints them unsigned) |
//! | wider `int` (16-byte fields)| its decimal text, a string                                    |
//! | `string`                    | string                                                        |
//! | `list`                      | array                                                         |
//! | `record`                    | object map (rhai maps keep keys sorted)                       |
//! | object (`_EPROCESS` view)   | custom type `Object`                                          |
//! | pointer                     | custom type `Pointer`                                         |
//! | enum constant               | custom type `Enum`                                            |
//!
//! Back from rhai: `INT` is an `int` as it is (signed), a float its text (the language has no
//! floats), a character a one-character string, a BLOB (`read_bytes`) a list of byte values,
//! a map a record in key order. Anything else (function pointers, timestamps) is an error, and
//! so is nesting deeper than [`MAX_DEPTH`].

use kds_runtime::model::{EnumValue, Object, Pointer, Record, Value};
use rhai::{Array, Dynamic, Map, INT};

/// How deeply a value coming back from rhai may nest (lists in lists, maps in lists).
pub const MAX_DEPTH: usize = 32;

/// A kds value as a rhai value.
pub(crate) fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Int(i) => int_to_dynamic(*i),
        Value::Str(s) => Dynamic::from(s.clone()),
        Value::Pointer(p) => Dynamic::from(p.clone()),
        Value::Object(o) => Dynamic::from(o.clone()),
        Value::Enum(e) => Dynamic::from(e.clone()),
        Value::List(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Record(r) => {
            let map: Map = r.iter().map(|(k, v)| (k.into(), to_dynamic(v))).collect();
            Dynamic::from_map(map)
        }
    }
}

/// An integer as rhai's `INT`: as is when it fits, the same 64 bits when it is an unsigned
/// 64-bit number, else its decimal text.
pub(crate) fn int_to_dynamic(i: i128) -> Dynamic {
    if let Ok(v) = INT::try_from(i) {
        Dynamic::from_int(v)
    } else if let Ok(v) = u64::try_from(i) {
        Dynamic::from_int(v as INT)
    } else {
        Dynamic::from(i.to_string())
    }
}

/// The address an `INT` stands for (its 64 bits).
pub(crate) fn int_address(i: INT) -> u64 {
    i as u64
}

/// A rhai value as a kds value; `Err` names what cannot cross.
pub(crate) fn from_dynamic(value: &Dynamic) -> Result<Value, String> {
    from_dynamic_at(value, 0)
}

fn from_dynamic_at(value: &Dynamic, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "a value nested deeper than {MAX_DEPTH} levels cannot be returned to the playbook"
        ));
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Int(i128::from(i)));
    }
    if let Ok(f) = value.as_float() {
        return Ok(Value::Str(f.to_string()));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::Str(c.to_string()));
    }
    if value.is_string() {
        return Ok(Value::Str(value.clone().into_string().unwrap_or_default()));
    }
    if value.is_blob() {
        let blob = value.clone().into_blob().unwrap_or_default();
        return Ok(Value::List(
            blob.into_iter()
                .map(|b| Value::from(u32::from(b)))
                .collect(),
        ));
    }
    if value.is_array() {
        let array: Array = value.clone().into_array().unwrap_or_default();
        return array
            .iter()
            .map(|v| from_dynamic_at(v, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List);
    }
    if value.is_map() {
        let map = value.clone().cast::<Map>();
        let mut record = Record::new();
        for (k, v) in &map {
            record.insert(k.to_string(), from_dynamic_at(v, depth + 1)?);
        }
        return Ok(Value::Record(record));
    }
    if let Some(o) = value.clone().try_cast::<Object>() {
        return Ok(Value::Object(o));
    }
    if let Some(p) = value.clone().try_cast::<Pointer>() {
        return Ok(Value::Pointer(p));
    }
    if let Some(e) = value.clone().try_cast::<EnumValue>() {
        return Ok(Value::Enum(e));
    }
    if value.is_shared() {
        // A captured variable of a closure: its current value.
        let inner = value.clone().flatten();
        if !inner.is_shared() {
            return from_dynamic_at(&inner, depth + 1);
        }
    }
    Err(format!(
        "a rhai `{}` cannot be returned to the playbook",
        value.type_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_strings_lists_and_maps_round_trip() {
        let mut record = Record::new();
        record.insert("b", Value::Int(2));
        record.insert("a", Value::Str("x".into()));
        let value = Value::List(vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-5),
            Value::Record(record),
        ]);
        let back = from_dynamic(&to_dynamic(&value)).expect("converts");
        let Value::List(items) = back else {
            panic!("a list")
        };
        assert_eq!(items[0], Value::Null);
        assert_eq!(items[1], Value::Bool(true));
        assert_eq!(items[2], Value::Int(-5));
        let Value::Record(r) = &items[3] else {
            panic!("a record")
        };
        // rhai maps are sorted by key.
        assert_eq!(r.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn wide_integers_keep_their_bits_or_become_text() {
        let kernel = i128::from(0xffff_c10a_1234_5080_u64);
        let d = int_to_dynamic(kernel);
        assert_eq!(
            int_address(d.as_int().expect("an INT")),
            0xffff_c10a_1234_5080
        );
        let huge = i128::from(u64::MAX) * 4;
        assert_eq!(
            int_to_dynamic(huge).into_string().expect("text"),
            huge.to_string()
        );
    }

    #[test]
    fn deep_or_foreign_values_are_refused() {
        let mut d = Dynamic::from_array(Vec::new());
        for _ in 0..=MAX_DEPTH + 1 {
            d = Dynamic::from_array(vec![d]);
        }
        assert!(from_dynamic(&d).unwrap_err().contains("nested deeper"));
        let ts = Dynamic::from(std::time::Duration::from_secs(1));
        assert!(from_dynamic(&ts).is_err());
        assert_eq!(
            from_dynamic(&Dynamic::from_float(1.5)).expect("float"),
            Value::Str("1.5".into())
        );
    }
}
