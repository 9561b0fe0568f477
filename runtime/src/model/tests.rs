//! Value semantics, field decoding and list walks over a small hand-built machine.

use super::*;
use crate::mmu::X64;
use crate::symbols::parse_isf;
use crate::target::CountingTarget;
use std::cmp::Ordering;

// ---------------------------------------------------------------- a small machine

const PML4_PFN: u64 = 1;
const BASE: u64 = 0xFFFF_C10A_1234_0000;

/// The machine: physical memory in a map, x64 tables built on demand.
type Phys = crate::target::MemoryTarget;

const TABLE: &str = r#"{
 "metadata": {},
 "base_types": {
  "pointer": {"kind": "int", "size": 8, "signed": false},
  "void": {"kind": "void", "size": 0, "signed": true},
  "long": {"kind": "int", "size": 4, "signed": true},
  "unsigned long": {"kind": "int", "size": 4, "signed": false},
  "unsigned short": {"kind": "int", "size": 2, "signed": false},
  "unsigned char": {"kind": "char", "size": 1, "signed": false},
  "long long": {"kind": "int", "size": 8, "signed": true},
  "wchar": {"kind": "int", "size": 2, "signed": true}
 },
 "user_types": {
  "_LIST_ENTRY": {"kind": "struct", "size": 16, "fields": {
   "Flink": {"offset": 0, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "_LIST_ENTRY"}}},
   "Blink": {"offset": 8, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "_LIST_ENTRY"}}}}},
  "_UNICODE_STRING": {"kind": "struct", "size": 16, "fields": {
   "Length": {"offset": 0, "type": {"kind": "base", "name": "unsigned short"}},
   "MaximumLength": {"offset": 2, "type": {"kind": "base", "name": "unsigned short"}},
   "Buffer": {"offset": 8, "type": {"kind": "pointer", "subtype": {"kind": "base", "name": "wchar"}}}}},
  "_LARGE_INTEGER": {"kind": "union", "size": 8, "fields": {
   "QuadPart": {"offset": 0, "type": {"kind": "base", "name": "long long"}}}},
  "_HEADER": {"kind": "struct", "size": 8, "fields": {
   "Kind": {"offset": 0, "type": {"kind": "base", "name": "unsigned long"}}}},
  "_ITEM": {"kind": "struct", "size": 96, "fields": {
   "Header": {"offset": 0, "type": {"kind": "struct", "name": "_HEADER"}},
   "Links": {"offset": 8, "type": {"kind": "struct", "name": "_LIST_ENTRY"}},
   "Value": {"offset": 24, "type": {"kind": "base", "name": "long"}},
   "Flags": {"offset": 28, "type": {"kind": "bitfield", "bit_position": 3, "bit_length": 2, "type": {"kind": "base", "name": "unsigned long"}}},
   "Delta": {"offset": 32, "type": {"kind": "bitfield", "bit_position": 0, "bit_length": 4, "type": {"kind": "base", "name": "long"}}},
   "Color": {"offset": 36, "type": {"kind": "enum", "name": "_COLOR"}},
   "Name": {"offset": 40, "type": {"kind": "array", "count": 8, "subtype": {"kind": "base", "name": "unsigned char"}}},
   "Text": {"offset": 48, "type": {"kind": "struct", "name": "_UNICODE_STRING"}},
   "Next": {"offset": 64, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "_ITEM"}}},
   "Words": {"offset": 72, "type": {"kind": "array", "count": 3, "subtype": {"kind": "base", "name": "unsigned short"}}},
   "Bytes": {"offset": 78, "type": {"kind": "array", "count": 4, "subtype": {"kind": "base", "name": "unsigned char"}}},
   "Time": {"offset": 88, "type": {"kind": "union", "name": "_LARGE_INTEGER"}}}}
 },
 "enums": {"_COLOR": {"size": 4, "base": "long", "constants": {"Red": 0, "Green": 1, "Blue": 2}}},
 "symbols": {}
}"#;

fn machine() -> (Arc<Phys>, Arc<ModelContext>) {
    let phys = Arc::new(Phys::x64(PML4_PFN));
    let table = Arc::new(parse_isf(TABLE.as_bytes(), "test").expect("test table parses"));
    let target: Arc<dyn Target> = phys.clone();
    let model = ModelContext::with_limits(
        target,
        &X64,
        PML4_PFN * 0x1000,
        table,
        0,
        Limits {
            max_list_entries: 10,
            ..Limits::default()
        },
    );
    (phys, model)
}

/// An `_ITEM` at `at` with its fields filled.
fn write_item(m: &Phys, at: u64, value: i32, next: u64) {
    m.write_virtual(at, &[0; 96]);
    m.write_virtual(at + 24, &value.to_le_bytes());
    m.write_virtual(at + 28, &(0b11u32 << 3 | 1).to_le_bytes()); // Flags = 3
    m.write_virtual(at + 32, &0xEu32.to_le_bytes()); // Delta = -2 (4-bit signed)
    m.write_virtual(at + 36, &2u32.to_le_bytes()); // Blue
    m.write_virtual(at + 40, b"lsass\0\0\0");
    let text = at + 0x800;
    let units: Vec<u8> = "Hello".encode_utf16().flat_map(u16::to_le_bytes).collect();
    m.write_virtual(text, &units);
    m.write_virtual(at + 48, &10u16.to_le_bytes());
    m.write_virtual(at + 50, &12u16.to_le_bytes());
    m.write_virtual_u64(at + 56, text);
    m.write_virtual_u64(at + 64, next);
    m.write_virtual(at + 72, &[1, 0, 2, 0, 3, 0]);
    m.write_virtual(at + 78, &[0, 1, 1, 0]);
    m.write_virtual(at + 88, &(-5i64).to_le_bytes());
}

// ---------------------------------------------------------------- values

#[test]
fn values_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Value>();
    send_sync::<Arc<ModelContext>>();
    send_sync::<ModelError>();
}

fn ptr(a: u64) -> Value {
    Value::Pointer(Pointer::untyped(a))
}

fn waiting() -> Value {
    Value::Enum(EnumValue {
        type_name: "_KTHREAD_STATE".into(),
        value: 5,
        name: Some("Waiting".into()),
    })
}

#[test]
fn equality_is_numeric_across_numbers_and_case_insensitive_for_strings() {
    assert!(Value::Int(5).equals(&waiting()));
    assert!(waiting().equals(&Value::from("waiting")));
    assert!(Value::from("WAITING").equals(&waiting()));
    assert!(!waiting().equals(&Value::from("Ready")));
    assert!(ptr(0xffff_c10a_1234_5080).equals(&Value::uint(0xffff_c10a_1234_5080)));
    assert!(Value::from("LSASS.EXE").equals(&Value::from("lsass.exe")));
    assert!(!Value::from("5").equals(&Value::Int(5)));
    assert!(Value::Null.equals(&Value::Null));
    assert!(!Value::Null.equals(&Value::Int(0)));
    assert!(!Value::Bool(false).equals(&Value::Int(0)));
    assert!(Value::List(vec![Value::from("A"), Value::Int(1)])
        .equals(&Value::List(vec![Value::from("a"), Value::Int(1)])));
    // Strict equality is for tests: case matters there.
    assert_ne!(Value::from("A"), Value::from("a"));
    assert_eq!(Value::Int(-1), Value::from(-1i64));
}

#[test]
fn ordering_handles_addresses_negatives_and_kinds() {
    let big = Value::uint(u64::MAX);
    let neg = Value::Int(-3);
    assert_eq!(neg.compare(&big), Some(Ordering::Less));
    assert_eq!(
        ptr(0xffff_8000_0000_0000).compare(&Value::Int(1)),
        Some(Ordering::Greater)
    );
    assert_eq!(
        Value::from("b").compare(&Value::from("A")),
        Some(Ordering::Greater)
    );
    assert_eq!(Value::from("x").compare(&Value::Int(1)), None);
    assert_eq!(Value::Null.compare(&Value::Null), None);
    let mut v = [
        Value::from("b"),
        Value::Int(10),
        Value::Null,
        Value::from("B"),
        Value::Bool(true),
        big.clone(),
        neg.clone(),
        Value::from("a"),
    ];
    v.sort_by(Value::sort_cmp);
    let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "null",
            "true",
            "-3",
            "10",
            "18446744073709551615",
            "a",
            "B",
            "b"
        ]
    );
}

#[test]
fn group_keys_follow_equality() {
    assert_eq!(
        Value::from("SvcHost.exe").group_key(),
        Value::from("svchost.exe").group_key()
    );
    assert_eq!(waiting().group_key(), Value::Int(5).group_key());
    assert_ne!(Value::Int(5).group_key(), Value::from("5").group_key());
}

#[test]
fn display_is_windbg_style() {
    assert_eq!(ptr(0xffff_c10a_1234_5080).to_string(), "ffffc10a`12345080");
    assert_eq!(ptr(0x7ffe_0000).to_string(), "00000000`7ffe0000");
    assert_eq!(waiting().to_string(), "Waiting");
    let unnamed = Value::Enum(EnumValue {
        type_name: "_KWAIT_REASON".into(),
        value: 99,
        name: None,
    });
    assert_eq!(unnamed.to_string(), "99");
    let mut r = Record::new();
    r.insert("name", Value::from("lsass.exe"));
    r.insert("pid", Value::Int(0x2a0));
    r.insert(
        "tags",
        Value::List(vec![Value::from("a"), Value::Bool(false)]),
    );
    assert_eq!(
        Value::Record(r.clone()).to_string(),
        r#"{ name: "lsass.exe", pid: 672, tags: ["a", false] }"#
    );
    assert_eq!(Value::from("bare").to_string(), "bare");
    assert_eq!(Value::Int(-7).to_string(), "-7");
    assert_eq!(
        serde_json::to_string(&Value::Record(r)).unwrap(),
        r#"{"name":"lsass.exe","pid":672,"tags":["a",false]}"#
    );
    assert_eq!(
        serde_json::to_string(&Value::List(vec![
            ptr(0xffff_c10a_1234_5080),
            Value::uint(u64::MAX),
            Value::Int(-1),
            waiting(),
            Value::Null,
        ]))
        .unwrap(),
        r#"["0xffffc10a12345080",18446744073709551615,-1,"Waiting",null]"#
    );
    assert_eq!(Value::Int(1).type_name(), "int");
    assert_eq!(waiting().type_name(), "_KTHREAD_STATE");
}

#[test]
fn filetimes_format_as_utc() {
    // 2021-01-01 00:00:00 UTC.
    assert_eq!(
        format_filetime(132_539_328_000_000_000),
        "2021-01-01 00:00:00.000"
    );
    assert_eq!(format_filetime(0), "1601-01-01 00:00:00.000");
    assert_eq!(
        format_filetime(116_444_736_000_000_000 + 12_345_678),
        "1970-01-01 00:00:01.234"
    );
}

// ---------------------------------------------------------------- objects

#[test]
fn fields_decode_by_their_layout() {
    let (m, model) = machine();
    let a = BASE;
    let b = BASE + 0x3000;
    write_item(&m, a, -42, b);
    write_item(&m, b, 7, 0);
    let item = model.object("_ITEM", a).unwrap();
    assert_eq!(item.field("Value").unwrap(), Value::Int(-42));
    assert_eq!(item.field("Flags").unwrap(), Value::Int(3));
    assert_eq!(item.field("Delta").unwrap(), Value::Int(-2));
    let color = item.field("Color").unwrap();
    assert_eq!(color.to_string(), "Blue");
    assert!(color.equals(&Value::Int(2)));
    assert_eq!(item.field("Name").unwrap(), Value::from("lsass"));
    assert_eq!(item.field("Text").unwrap(), Value::from("Hello"));
    assert_eq!(
        item.field("Words").unwrap(),
        Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
    );
    // Bytes that are not text stay bytes.
    assert_eq!(
        item.field("Bytes").unwrap(),
        Value::List(vec![
            Value::Int(0),
            Value::Int(1),
            Value::Int(1),
            Value::Int(0)
        ])
    );
    assert_eq!(item.field("Time").unwrap(), Value::Int(-5));
    // Pointers are followed by field access, in dotted paths too.
    assert_eq!(item.field("Next.Value").unwrap(), Value::Int(7));
    assert_eq!(
        item.field("Next").unwrap().field("Text").unwrap(),
        Value::from("Hello")
    );
    // Through the structure embedded at offset 0.
    assert_eq!(item.field("Kind").unwrap(), Value::Int(0));
    // Null pointers and unknown names are errors naming what they are about.
    let err = item.field("Next.Next.Value").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read `Value` through a null `_ITEM *`"
    );
    let err = item.field("Nope").unwrap_err();
    assert_eq!(err.to_string(), "`_ITEM` has no field `Nope`");
    let err = item.field("Value.Foo").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot access `Foo`: a `int` value has no fields"
    );
    // Unmapped memory names the address.
    let far = model.object("_ITEM", BASE + 0x10_0000).unwrap();
    let err = far.field("Value").unwrap_err().to_string();
    assert!(err.contains("ffffc10a`12440018"), "{err}");
    assert_eq!(item.to_string(), "ffffc10a`12340000 [Type: _ITEM]");
}

#[test]
fn field_reads_touch_only_the_field() {
    let phys = Arc::new(Phys::x64(PML4_PFN));
    write_item(&phys, BASE, 1, 0);
    let counting = Arc::new(CountingTarget::new(phys.clone()));
    let table = Arc::new(parse_isf(TABLE.as_bytes(), "test").unwrap());
    let target: Arc<dyn Target> = counting.clone();
    let model = ModelContext::new(target, &X64, PML4_PFN * 0x1000, table, 0);
    let item = model.object("_ITEM", BASE).unwrap();
    let before = counting.stats();
    item.field("Value").unwrap();
    let after = counting.stats();
    // Four page-table entries and the field's four bytes.
    assert_eq!(after.bytes - before.bytes, 4 * 8 + 4);
    item.field("Color").unwrap();
    let cached = counting.stats();
    assert_eq!(cached.reads - after.reads, 1, "the translation is cached");
    assert_eq!(cached.bytes - after.bytes, 4);
    counting.reset();
    assert_eq!(counting.stats(), ReadStats::default());
}

use crate::target::ReadStats;

// ---------------------------------------------------------------- lists

/// A list head at BASE and `n` items linked through `_ITEM.Links` (offset 8).
fn list(m: &Phys, n: u64) -> Vec<u64> {
    let head = BASE;
    let items: Vec<u64> = (0..n).map(|i| BASE + 0x1000 + i * 0x100).collect();
    let links: Vec<u64> = std::iter::once(head)
        .chain(items.iter().map(|i| i + 8))
        .collect();
    for (i, l) in links.iter().enumerate() {
        let next = links[(i + 1) % links.len()];
        let prev = links[(i + links.len() - 1) % links.len()];
        m.write_virtual_u64(*l, next);
        m.write_virtual_u64(*l + 8, prev);
    }
    items
}

#[test]
fn lists_walk_to_the_head() {
    let (m, model) = machine();
    let items = list(&m, 3);
    let rows = model
        .walk_list(Arc::clone(model.kernel_space()), BASE, "_ITEM", "Links")
        .unwrap();
    assert!(rows.warnings.is_empty(), "{:?}", rows.warnings);
    let got: Vec<u64> = rows.rows.iter().map(Object::address).collect();
    assert_eq!(got, items);
    // Empty list.
    m.write_virtual_u64(BASE + 0x10000, BASE + 0x10000);
    m.write_virtual_u64(BASE + 0x10008, BASE + 0x10000);
    let rows = model
        .walk_list(
            Arc::clone(model.kernel_space()),
            BASE + 0x10000,
            "_ITEM",
            "Links",
        )
        .unwrap();
    assert!(rows.rows.is_empty() && rows.warnings.is_empty());
}

fn walk(model: &Arc<ModelContext>) -> Rows {
    model
        .walk_list(Arc::clone(model.kernel_space()), BASE, "_ITEM", "Links")
        .unwrap()
}

#[test]
fn cycles_stop_with_a_warning() {
    let (m, model) = machine();
    let items = list(&m, 4);
    // The last item's Flink goes back to the second.
    m.write_virtual_u64(items[3] + 8, items[1] + 8);
    let rows = walk(&model);
    assert_eq!(rows.rows.len(), 4);
    assert_eq!(rows.warnings.len(), 1);
    let w = &rows.warnings[0];
    assert_eq!(
        w.problem,
        ListProblem::Cycle {
            entry: items[3] + 8,
            flink: items[1] + 8
        }
    );
    assert!(w.to_string().contains("cycle"), "{w}");
}

#[test]
fn torn_links_stop_with_the_entries_before() {
    let (m, model) = machine();
    let items = list(&m, 4);
    // Item 1's Flink points at a LIST_ENTRY whose Blink is not item 1.
    let stray = BASE + 0x5000;
    m.write_virtual_u64(stray, BASE);
    m.write_virtual_u64(stray + 8, 0x1234);
    m.write_virtual_u64(items[1] + 8, stray);
    let rows = walk(&model);
    assert_eq!(rows.rows.len(), 2);
    assert_eq!(
        rows.warnings[0].problem,
        ListProblem::Torn {
            entry: items[1] + 8,
            flink: stray,
            back: 0x1234
        }
    );
    let text = rows.warnings[0].to_string();
    assert!(text.contains("ffffc10a`12341108"), "{text}");
    // An unreadable Flink.
    m.write_virtual_u64(items[1] + 8, BASE + 0x20_0000);
    let rows = walk(&model);
    assert_eq!(rows.rows.len(), 2);
    assert!(matches!(
        rows.warnings[0].problem,
        ListProblem::Unreadable { entry, linked_from, .. }
            if entry == BASE + 0x20_0000 && linked_from == items[1] + 8
    ));
    // A null Flink.
    m.write_virtual_u64(items[1] + 8, 0);
    let rows = walk(&model);
    assert_eq!(rows.rows.len(), 2);
    assert_eq!(
        rows.warnings[0].problem,
        ListProblem::NullLink {
            entry: items[1] + 8
        }
    );
}

#[test]
fn walks_are_bounded() {
    let (m, model) = machine();
    list(&m, 12);
    let rows = walk(&model);
    assert_eq!(rows.rows.len(), 10);
    assert!(matches!(
        rows.warnings[0].problem,
        ListProblem::Bound { bound: 10, .. }
    ));
}

#[test]
fn messages_print_32_bit_addresses_as_8_digits() {
    let w = ListWarning {
        list: "PsActiveProcessHead".into(),
        head: 0x8055_1234,
        entries_before: 2,
        problem: ListProblem::NullLink { entry: 0x8100_0000 },
        pointer_size: 4,
    };
    assert_eq!(
        w.to_string(),
        "list PsActiveProcessHead (head 80551234), after 2 entries: the Flink of 81000000 is null"
    );
    let x64 = ListWarning {
        pointer_size: 8,
        ..w
    };
    assert!(x64.to_string().contains("(head 00000000`80551234)"));
    let e = ModelError::Untyped {
        address: 0x8100_0000,
        target: "void".into(),
        pointer_size: 4,
    };
    assert_eq!(
        e.to_string(),
        "the pointer 81000000 is a `void *`: it has no fields (cast it to a structure first)"
    );
}
