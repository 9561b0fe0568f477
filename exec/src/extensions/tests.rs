//! Extensions and includes over a small hand-built machine: a few pages of x64 memory laid out
//! by a tiny symbol table.

use crate::{Interpreter, OutputItem, RunOptions, RunReport};
use kds_runtime::mmu::X64;
use kds_runtime::model::{Limits, ModelContext, Value};
use kds_runtime::symbols::parse_isf;
use kds_runtime::target::Target;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PML4_PFN: u64 = 1;
const BASE: u64 = 0xFFFF_C10A_1234_0000;

/// The machine: physical memory in a map, x64 tables built on demand.
type Phys = kds_runtime::target::MemoryTarget;

const TABLE: &str = r#"{
 "metadata": {},
 "base_types": {
  "pointer": {"kind": "int", "size": 8, "signed": false},
  "void": {"kind": "void", "size": 0, "signed": true},
  "long": {"kind": "int", "size": 4, "signed": true},
  "unsigned long": {"kind": "int", "size": 4, "signed": false},
  "unsigned char": {"kind": "char", "size": 1, "signed": false}
 },
 "user_types": {
  "_LIST_ENTRY": {"kind": "struct", "size": 16, "fields": {
   "Flink": {"offset": 0, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "_LIST_ENTRY"}}},
   "Blink": {"offset": 8, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "_LIST_ENTRY"}}}}},
  "_ITEM": {"kind": "struct", "size": 48, "fields": {
   "Kind": {"offset": 0, "type": {"kind": "base", "name": "unsigned long"}},
   "Links": {"offset": 8, "type": {"kind": "struct", "name": "_LIST_ENTRY"}},
   "Value": {"offset": 24, "type": {"kind": "base", "name": "long"}},
   "Color": {"offset": 28, "type": {"kind": "enum", "name": "_COLOR"}},
   "Name": {"offset": 32, "type": {"kind": "array", "count": 8, "subtype": {"kind": "base", "name": "unsigned char"}}},
   "Next": {"offset": 40, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "_ITEM"}}}}}
 },
 "enums": {"_COLOR": {"size": 4, "base": "long", "constants": {"Red": 0, "Green": 1, "Blue": 2}}},
 "symbols": {"ItemListHead": {"address": 4096}}
}"#;

/// A list head at `BASE + 0x1000` (the symbol `ItemListHead`, kernel base `BASE`) linking
/// three `_ITEM`s with values 10, 20, 30 and names "a", "b", "c".
fn machine() -> Arc<ModelContext> {
    let phys = Arc::new(Phys::x64(PML4_PFN));
    let head = BASE + 0x1000;
    let items = [BASE + 0x2000, BASE + 0x2100, BASE + 0x2200];
    let links: Vec<u64> = items.iter().map(|i| i + 8).collect();
    for (n, item) in items.iter().enumerate() {
        phys.write_virtual(*item, &[0; 48]);
        phys.write_virtual(*item, &(n as u32 + 1).to_le_bytes());
        phys.write_virtual(item + 24, &(10 * (n as i32 + 1)).to_le_bytes());
        phys.write_virtual(item + 28, &(n as i32).to_le_bytes());
        phys.write_virtual(item + 32, &[b'a' + n as u8, 0]);
        let flink = links.get(n + 1).copied().unwrap_or(head);
        let blink = if n == 0 { head } else { links[n - 1] };
        phys.write_virtual_u64(links[n], flink);
        phys.write_virtual_u64(links[n] + 8, blink);
        phys.write_virtual_u64(item + 40, items.get(n + 1).copied().unwrap_or(0));
    }
    phys.write_virtual_u64(head, links[0]);
    phys.write_virtual_u64(head + 8, links[2]);
    let table = Arc::new(parse_isf(TABLE.as_bytes(), "test").expect("test table parses"));
    let target: Arc<dyn Target> = phys;
    ModelContext::with_limits(
        target,
        &X64,
        PML4_PFN * 0x1000,
        table,
        BASE,
        Limits::default(),
    )
}

/// A scratch directory with `files` written into it.
fn dir_with(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("kds-exec-ext-{}", std::process::id()))
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("scratch subdir");
        }
        std::fs::write(path, text).expect("scratch file");
    }
    dir
}

fn run_in(dir: &Path, source: &str) -> RunReport {
    let playbook = kds_lang::parse(source).expect("playbook parses");
    let options = RunOptions {
        params: Vec::new(),
        base_dir: Some(dir.to_path_buf()),
    };
    Interpreter::new(machine(), &options).run(source, &playbook)
}

fn values(report: &RunReport) -> Vec<Value> {
    report
        .items
        .iter()
        .filter_map(|i| match i {
            OutputItem::Value { value } => Some(value.clone()),
            _ => None,
        })
        .collect()
}

fn error_text(report: &RunReport) -> String {
    report
        .error
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

#[test]
fn a_rhai_function_filters_rows_in_where() {
    let dir = dir_with(
        "where",
        &[(
            "ext.rhai",
            "fn is_even(n) { n % 2 == 0 }\nfn label(n, s) { `${s}-${n}` }\nprivate fn hidden() { 1 }",
        )],
    );
    let report = run_in(
        &dir,
        "use \"ext.rhai\"\nlet xs = [1, 2, 3, 4]\n$xs | where is_even(value) | count\nlabel(7, \"x\")",
    );
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(
        values(&report),
        vec![Value::Int(2), Value::Str("x-7".into())]
    );

    // Private functions are not exported; arity mismatches and unknown names say what exists.
    let hidden = run_in(&dir, "use \"ext.rhai\"\nhidden()");
    assert!(error_text(&hidden).contains("unknown function `hidden`"));
    assert!(
        error_text(&hidden).contains("is_even"),
        "{}",
        error_text(&hidden)
    );
    let arity = run_in(&dir, "use \"ext.rhai\"\nis_even(1, 2)");
    assert!(error_text(&arity).contains("takes 1 argument(s), given 2"));
    assert_eq!(arity.exit_code(), 2);
}

#[test]
fn scripts_read_fields_walk_lists_and_read_memory() {
    let dir = dir_with(
        "model",
        &[(
            "model.rhai",
            r#"
fn values() {
    let out = [];
    for item in walk_list(symbol("nt!ItemListHead"), "_ITEM", "Links") {
        out.push(item.Value);
    }
    out
}
fn names() { walk_list(symbol("ItemListHead"), "_ITEM", "Links").map(|i| i["Name"]) }
fn first_kind() {
    let head = read_pointer(symbol("nt!ItemListHead"));
    read_u32(head - 8)
}
fn second_value() { object(symbol("ItemListHead").address + 0x1100, "_ITEM").field("Value") }
fn next_value() { object(0xffffc10a12342000, "_ITEM").Next.Value }
fn blue_items() {
    walk_list(symbol("ItemListHead"), "_ITEM", "Links").filter(|i| i.Color == "blue").len()
}
fn rows() {
    walk_list(symbol("ItemListHead"), "_ITEM", "Links").map(|i| #{ value: i.Value, color: i.Color })
}
fn bytes() { read_bytes(0xffffc10a12342000, 24, 4) }
fn info() {
    let o = object(0xffffc10a12342000, "_ITEM");
    `${o.type_name} ${hex(o.address)} ${o}`
}
"#,
        )],
    );
    let report = run_in(
        &dir,
        "use \"model.rhai\"\nvalues()\nnames()\nfirst_kind()\nsecond_value()\nnext_value()\nblue_items()\nbytes()\ninfo()",
    );
    assert!(report.error.is_none(), "{:?}", report.error);
    let v = values(&report);
    assert_eq!(
        v[0],
        Value::List(vec![Value::Int(10), Value::Int(20), Value::Int(30)])
    );
    assert_eq!(
        v[1],
        Value::List(vec![
            Value::Str("a".into()),
            Value::Str("b".into()),
            Value::Str("c".into())
        ])
    );
    assert_eq!(v[2], Value::Int(1));
    assert_eq!(v[3], Value::Int(20));
    assert_eq!(v[4], Value::Int(20));
    assert_eq!(v[5], Value::Int(1));
    assert_eq!(
        v[6],
        Value::List(vec![
            Value::Int(10),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0)
        ])
    );
    assert_eq!(
        v[7],
        Value::Str("_ITEM 0xffffc10a12342000 ffffc10a`12342000 [Type: _ITEM]".into())
    );

    // A list of maps is a table, and pipelines go on from it.
    let table = run_in(
        &dir,
        "use \"model.rhai\"\nrows() | where value > 10 | sort by value desc | show table(value, color)",
    );
    assert!(table.error.is_none(), "{:?}", table.error);
    let rows = table.items.iter().find_map(|i| match i {
        OutputItem::Table { rows, .. } => Some(rows.clone()),
        _ => None,
    });
    let rows = rows.expect("a table");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], Value::Int(30));
    assert_eq!(rows[0][1].to_string(), "Blue");
}

#[test]
fn unreadable_memory_is_a_target_error_and_can_be_caught() {
    let dir = dir_with(
        "fault",
        &[(
            "fault.rhai",
            "fn bad() { read_u64(0xffff800000000000) }\nfn soft() { try { return read_u64(0xffff800000000000); } catch (e) { return `caught: ${e}`; } }\nfn too_many() { read_bytes(0xffffc10a12342000, 1000000) }",
        )],
    );
    let bad = run_in(&dir, "use \"fault.rhai\"\nbad()");
    assert_eq!(bad.exit_code(), 3, "{:?}", bad.error);
    let text = error_text(&bad);
    assert!(
        text.starts_with("extension `fault.rhai`: cannot read 8 bytes"),
        "{text}"
    );
    assert!(text.contains("line 1"), "{text}");
    let soft = run_in(&dir, "use \"fault.rhai\"\nsoft()");
    assert!(soft.error.is_none(), "{:?}", soft.error);
    assert!(
        values(&soft)[0]
            .to_string()
            .starts_with("caught: cannot read"),
        "{:?}",
        values(&soft)
    );
    let many = run_in(&dir, "use \"fault.rhai\"\ntoo_many()");
    assert_eq!(many.exit_code(), 2);
    assert!(error_text(&many).contains("read_bytes reads 0 to 0x10000 bytes"));
}

#[test]
fn a_runaway_script_stops_at_the_limits_with_a_clear_error() {
    let dir = dir_with(
        "limits",
        &[
            (
                "loop.rhai",
                "fn spin() { let n = 0; loop { n += 1; } }\nfn deep(n) { deep(n + 1) }\nfn big() { let s = \"x\"; loop { s += s; } }\nfn padded() { let a = []; a.pad(300000, 0); a }\nfn doubling() { let a = [1]; loop { a = [a, a]; } }\nfn chatty() { loop { print(\"yes\"); } }",
            ),
            ("top.rhai", "let n = 0;\nwhile true { n += 1; }"),
        ],
    );
    let source = "use \"loop.rhai\"\nspin()";
    let report = run_in(&dir, source);
    assert_eq!(report.exit_code(), 2);
    let text = error_text(&report);
    assert_eq!(
        text,
        "extension `loop.rhai` exceeded 5000000 operations (in `spin`): does a loop never end?"
    );
    // At the call's span.
    let span = report.error.as_ref().expect("error").span().clone();
    assert_eq!(&source[span], "spin()");

    for (call, expected) in [
        ("deep(0)", "exceeded 64 nested function calls (in `deep`)"),
        ("big()", "length of string exceeded its limit"),
        ("padded()", "size of array/blob exceeded its limit"),
        ("doubling()", "size of array/blob exceeded its limit"),
        ("chatty()", "printed more than 1048576 bytes"),
    ] {
        let report = run_in(&dir, &format!("use \"loop.rhai\"\n{call}"));
        assert_eq!(report.exit_code(), 2, "{call}");
        let text = error_text(&report);
        assert!(text.contains(expected), "{call}: {text}");
    }

    // A top level that never ends stops at the `use`.
    let source = "use \"top.rhai\"";
    let top = run_in(&dir, source);
    assert!(
        error_text(&top)
            .contains("exceeded 5000000 operations (line 2, column 14, at its top level)"),
        "{}",
        error_text(&top)
    );
    assert_eq!(
        &source[top.error.expect("error").span().clone()],
        "\"top.rhai\""
    );
}

#[test]
fn growing_a_large_array_stops_at_the_time_budget() {
    // Rhai re-measures an array after each change, a cost it does not count as operations:
    // the time budget bounds it.
    let dir = dir_with(
        "time",
        &[(
            "grow.rhai",
            "fn wide() { let a = []; loop { a.push(1); } }\nfn nest() { let a = []; loop { a = [a]; } }",
        )],
    );
    for call in ["wide()", "nest()"] {
        let source = format!("use \"grow.rhai\"\n{call}");
        let playbook = kds_lang::parse(&source).expect("parses");
        let options = RunOptions {
            params: Vec::new(),
            base_dir: Some(dir.clone()),
        };
        let mut interpreter = Interpreter::new(machine(), &options);
        interpreter.extensions.limits.max_duration = std::time::Duration::from_millis(300);
        let started = std::time::Instant::now();
        let report = interpreter.run(&source, &playbook);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let text = error_text(&report);
        eprintln!("{call}: {text} after {:?}", started.elapsed());
        assert!(
            text.contains("ran longer than 300 ms") || text.contains("exceeded its limit"),
            "{call}: {text}"
        );
        assert_eq!(report.exit_code(), 2);
    }
}

#[test]
fn syntax_errors_and_forbidden_things_are_script_errors_at_the_use() {
    let dir = dir_with(
        "forbidden",
        &[
            ("syntax.rhai", "fn ok() { 1 }\nfn broken( { 2 }"),
            ("import.rhai", "import \"other\" as o;\nfn f() { 1 }"),
            ("eval.rhai", "fn f() { eval(\"1 + 1\") }"),
            (
                "write.rhai",
                "fn poke() { let o = object(0xffffc10a12342000, \"_ITEM\"); o.Value = 5; }\nfn poke2() { let o = object(0xffffc10a12342000, \"_ITEM\"); o[\"Value\"] = 5; }",
            ),
            ("deep.rhai", &format!("fn f() {{ {}1{} }}", "(".repeat(200), ")".repeat(200))),
            ("late.rhai", "fn f(args) { register_command(\"!late\", \"f\") }\nfn g() { f([]) }"),
            ("builtin.rhai", "fn f(args) { 1 }\nregister_command(\"!process\", \"f\");"),
            ("missing.rhai", "register_command(\"!nothing\", \"nope\");"),
            ("len.rhai", "fn len(x) { 0 }"),
        ],
    );
    let source = "use \"syntax.rhai\"";
    let report = run_in(&dir, source);
    assert_eq!(report.exit_code(), 2);
    let text = error_text(&report);
    assert!(
        text.starts_with("extension `syntax.rhai` has a syntax error at line 2"),
        "{text}"
    );
    assert_eq!(
        &source[report.error.expect("error").span().clone()],
        "\"syntax.rhai\""
    );

    let import = error_text(&run_in(&dir, "use \"import.rhai\""));
    assert!(
        import.contains("`import` is not available to extensions"),
        "{import}"
    );
    let eval = run_in(&dir, "use \"eval.rhai\"\nf()");
    assert_eq!(eval.exit_code(), 2);
    assert!(
        error_text(&eval).contains("`eval` is not available to extensions"),
        "{}",
        error_text(&eval)
    );
    for call in ["poke()", "poke2()"] {
        let write = run_in(&dir, &format!("use \"write.rhai\"\n{call}"));
        assert_eq!(write.exit_code(), 2);
        assert!(
            error_text(&write).contains("extensions read the target, they never write to it"),
            "{call}: {}",
            error_text(&write)
        );
    }
    let deep = error_text(&run_in(&dir, "use \"deep.rhai\""));
    assert!(
        deep.contains("expressions nest deeper than the limit"),
        "{deep}"
    );
    let late = error_text(&run_in(&dir, "use \"late.rhai\"\ng()"));
    assert!(late.contains("only at the top level"), "{late}");
    let builtin = error_text(&run_in(&dir, "use \"builtin.rhai\""));
    assert!(
        builtin.contains("`!process` is a built-in command"),
        "{builtin}"
    );
    let missing = error_text(&run_in(&dir, "use \"missing.rhai\""));
    assert!(
        missing.contains("defines no function `nope(args)`"),
        "{missing}"
    );
    let shadow = run_in(&dir, "use \"len.rhai\"\nlen([1, 2])");
    assert!(shadow.error.is_none());
    assert!(
        matches!(&shadow.items[0], OutputItem::Warning { message } if message.contains("hidden by kds's own `len`"))
    );
    assert_eq!(values(&shadow), vec![Value::Int(2)]);

    let absent = run_in(&dir, "use \"nope/absent.rhai\"");
    let text = error_text(&absent);
    assert!(
        text.starts_with("cannot use `nope/absent.rhai`: "),
        "{text}"
    );
    assert!(
        text.contains(&dir.join("nope/absent.rhai").display().to_string()),
        "{text}"
    );
}

#[test]
fn commands_registered_by_a_script_run_as_statements() {
    let dir = dir_with(
        "commands",
        &[(
            "cmd.rhai",
            r#"
fn greet(args) {
    print(`args: ${args.len()}`);
    `hello ${args[0]} ${args[1]} ${args[2]}`
}
register_command("!greet", "greet");
register_command("count_items", |args| walk_list(symbol("ItemListHead"), "_ITEM", "Links").len());
"#,
        )],
    );
    let source = "use \"cmd.rhai\"\nlet x = 5\n!greet 10 world $x\n!count_items";
    let report = run_in(&dir, source);
    assert!(report.error.is_none(), "{:?}", report.error);
    let commands: Vec<(String, String)> = report
        .items
        .iter()
        .filter_map(|i| match i {
            OutputItem::Command { command, text, .. } => Some((command.clone(), text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        commands,
        vec![
            (
                "!greet 10 world $x".to_string(),
                "args: 3\nhello 16 world 5".to_string()
            ),
            ("!count_items".to_string(), "3".to_string()),
        ]
    );
    let playbook = kds_lang::parse("use \"cmd.rhai\"").expect("parses");
    let options = RunOptions {
        params: Vec::new(),
        base_dir: Some(dir.clone()),
    };
    let mut interpreter = Interpreter::new(machine(), &options);
    let _ = interpreter.run("use \"cmd.rhai\"", &playbook);
    assert_eq!(
        interpreter.extension_commands(),
        vec!["!count_items", "!greet"]
    );
    // The function behind a command is a function too: what `kds check` accepts today.
    let direct = interpreter.run(
        "greet([1, \"w\", 3])",
        &kds_lang::parse("greet([1, \"w\", 3])").expect("parses"),
    );
    assert!(direct.error.is_none(), "{:?}", direct.error);
    assert_eq!(
        values(&direct),
        vec![
            Value::Str("args: 3".into()),
            Value::Str("hello 1 w 3".into())
        ]
    );
    assert_eq!(interpreter.extension_functions(), vec!["greet"]);
}

#[test]
fn printed_text_and_list_warnings_come_out_in_order() {
    let dir = dir_with(
        "print",
        &[(
            "p.rhai",
            "print(\"loaded\");\nfn f(x) { print(`f of ${x}`); debug(\"dbg\"); x }",
        )],
    );
    let report = run_in(&dir, "use \"p.rhai\"\nf(1)");
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(
        values(&report),
        vec![
            Value::Str("loaded".into()),
            Value::Str("f of 1\n\"dbg\"".into()),
            Value::Int(1)
        ]
    );
}

#[test]
fn included_playbooks_share_bindings_and_cycles_are_reported() {
    let dir = dir_with(
        "include",
        &[
            (
                "common.kds",
                "let answer = 42\nparam who = \"me\"\nuse \"lib/helpers.rhai\"",
            ),
            ("lib/helpers.rhai", "fn twice(x) { 2 * x }"),
            ("a.kds", "use \"b.kds\""),
            ("b.kds", "let b = 1\nuse \"a.kds\""),
            ("bad.kds", "let ok = 1\nlet = 2"),
            ("fails.kds", "let ok = 1\n\nnope()"),
            (
                "sub/inner.kds",
                "use \"../common.kds\"\nlet inner = twice($answer)",
            ),
        ],
    );
    let report = run_in(
        &dir,
        "use \"common.kds\"\n$answer\n$who\ntwice($answer)\nuse \"sub/inner.kds\"\n$inner",
    );
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(
        values(&report),
        vec![
            Value::Int(42),
            Value::Str("me".into()),
            Value::Int(84),
            Value::Int(84)
        ]
    );

    let source = "use \"a.kds\"";
    let cycle = run_in(&dir, source);
    assert_eq!(cycle.exit_code(), 2);
    let text = error_text(&cycle);
    assert_eq!(
        text,
        "`a.kds` line 1: `b.kds` line 2: `use \"a.kds\"` makes a cycle: a.kds uses b.kds uses a.kds"
    );
    assert_eq!(
        &source[cycle.error.expect("error").span().clone()],
        "\"a.kds\""
    );

    let bad = error_text(&run_in(&dir, "use \"bad.kds\""));
    assert!(
        bad.starts_with("`bad.kds` has 1 syntax error: line 2: "),
        "{bad}"
    );
    let fails = error_text(&run_in(&dir, "use \"fails.kds\""));
    assert!(
        fails.starts_with("`fails.kds` line 3: unknown function `nope`"),
        "{fails}"
    );
    let other = error_text(&run_in(&dir, "use \"notes.txt\""));
    assert!(other.contains("`use` loads rhai extensions (`.rhai`) or playbooks (`.kds`)"));
}

#[test]
fn includes_nest_only_so_deep() {
    let files: Vec<(String, String)> = (0..20)
        .map(|i| (format!("n{i}.kds"), format!("use \"n{}.kds\"", i + 1)))
        .chain(std::iter::once(("n20.kds".to_string(), "1".to_string())))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = dir_with("depth", &refs);
    let text = error_text(&run_in(&dir, "use \"n0.kds\""));
    assert!(
        text.contains("playbooks nest deeper than 16 `use`s"),
        "{text}"
    );
}

#[test]
fn an_interpreter_with_extensions_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<Interpreter>();
}
