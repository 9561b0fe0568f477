//! The valid forms of the language and the trees they make.

mod common;

use common::{expr, one, parse_ok, sexpr, strip};
use kds_lang::ast::*;

fn command(source: &str) -> Command {
    match one(source).kind {
        StmtKind::Command(c) => c,
        other => panic!("{source:?} is not a command: {other:?}"),
    }
}

fn arg_kinds(source: &str) -> Vec<CommandArgKind> {
    command(source).args.into_iter().map(|a| a.kind).collect()
}

fn word(w: &str) -> CommandArgKind {
    CommandArgKind::Word(w.to_string())
}

fn qualified(m: &str, n: &str) -> CommandArgKind {
    CommandArgKind::Qualified {
        module: m.to_string(),
        name: n.to_string(),
    }
}

fn arg_expr(a: &CommandArgKind) -> String {
    match a {
        CommandArgKind::Expr(e) => sexpr(e),
        other => panic!("not an expression argument: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Statements

#[test]
fn params_with_and_without_types() {
    let StmtKind::Param(p) = one("param name = \"lsass.exe\"").kind else {
        panic!()
    };
    assert_eq!(p.name.name, "name");
    assert_eq!(p.name.span, 6..10);
    assert!(p.ty.is_none());
    assert_eq!(
        p.default.map(|d| d.kind),
        Some(ExprKind::Str("lsass.exe".into()))
    );

    let StmtKind::Param(p) = one("param limit: int = 5000").kind else {
        panic!()
    };
    let ty = p.ty.unwrap();
    assert_eq!(ty.ty, ParamType::Int);
    assert_eq!(ty.span, 13..16);
    assert_eq!(p.default.map(|d| d.kind), Some(ExprKind::Int(5000)));

    let StmtKind::Param(p) = one("param ids: list<int> = [4, 8]").kind else {
        panic!()
    };
    assert_eq!(p.ty.unwrap().ty, ParamType::List(Box::new(ParamType::Int)));
    assert_eq!(sexpr(&p.default.unwrap()), "[4 8]");

    let StmtKind::Param(p) = one("param base: address").kind else {
        panic!()
    };
    assert_eq!(p.ty.unwrap().ty, ParamType::Address);
    assert!(p.default.is_none());

    let StmtKind::Param(p) = one("param nested: list<list<string>> = []").kind else {
        panic!()
    };
    assert_eq!(
        p.ty.unwrap().ty,
        ParamType::List(Box::new(ParamType::List(Box::new(ParamType::String))))
    );

    let StmtKind::Param(p) = one("param verbose: bool = true").kind else {
        panic!()
    };
    assert_eq!(kds_lang::param_type(&p), Some(ParamType::Bool));
    let StmtKind::Param(p) = one("param names = [\"a\", \"b\"]").kind else {
        panic!()
    };
    assert_eq!(
        kds_lang::param_type(&p),
        Some(ParamType::List(Box::new(ParamType::String)))
    );
}

#[test]
fn let_binds_a_pipeline() {
    let s = one("let p = processes | where name == $name | single");
    assert_eq!(s.span, 0..48);
    let StmtKind::Let { name, value } = s.kind else {
        panic!()
    };
    assert_eq!(name.name, "p");
    assert_eq!(name.span, 4..5);
    assert_eq!(value.span, 8..48);
    assert_eq!(
        sexpr(&value),
        "(pipe processes (where (== name $name)) single)"
    );
    let ExprKind::Pipeline { stages, .. } = &value.kind else {
        panic!()
    };
    assert_eq!(stages[0].span, 20..39);
    assert_eq!(stages[1].span, 42..48);
}

#[test]
fn expect_and_check() {
    let StmtKind::Expect(x) =
        one("expect bugcheck in [0xE2, 0x80] else note \"not a manual dump\"").kind
    else {
        panic!()
    };
    assert_eq!(x.keyword, ExpectKeyword::Expect);
    assert_eq!(sexpr(&x.condition), "(in bugcheck [226 128])");
    assert_eq!(x.severity.as_ref().map(|s| s.0), Some(Severity::Note));
    assert_eq!(x.severity.as_ref().map(|s| s.1.clone()), Some(37..41));
    assert_eq!(
        x.message.as_ref().map(|m| m.value.as_str()),
        Some("not a manual dump")
    );
    assert_eq!(x.effective_severity(), Severity::Note);

    let StmtKind::Expect(x) = one("check $stuck == 0 else warn \"waiting on a lock\"").kind else {
        panic!()
    };
    assert_eq!(x.keyword, ExpectKeyword::Check);
    assert_eq!(x.effective_severity(), Severity::Warn);

    let StmtKind::Expect(x) = one("expect processor_count > 0").kind else {
        panic!()
    };
    assert!(x.severity.is_none() && x.message.is_none());
    assert_eq!(x.effective_severity(), Severity::Fail);

    let StmtKind::Expect(x) = one("check x else \"message only\"").kind else {
        panic!()
    };
    assert!(x.severity.is_none());
    assert_eq!(x.effective_severity(), Severity::Warn);
    assert_eq!(x.message.map(|m| m.value), Some("message only".into()));

    let StmtKind::Expect(x) = one("expect x else fail").kind else {
        panic!()
    };
    assert_eq!(x.severity.map(|s| s.0), Some(Severity::Fail));
    assert!(x.message.is_none());
}

#[test]
fn sections_nest_and_use_loads() {
    let src =
        "section \"Memory\" {\n    !vm\n    section \"Pools\" { !vm 1; lm }\n}\nuse \"ext.rhai\"\n";
    let p = parse_ok(src);
    assert_eq!(p.statements.len(), 2);
    let StmtKind::Section { title, body } = &p.statements[0].kind else {
        panic!()
    };
    assert_eq!(title.value, "Memory");
    assert_eq!(title.span, 8..16);
    assert_eq!(
        &src[p.statements[0].span.clone()],
        &src[..src.find("}\nuse").unwrap() + 1]
    );
    assert_eq!(body.len(), 2);
    let StmtKind::Section { title, body } = &body[1].kind else {
        panic!()
    };
    assert_eq!(title.value, "Pools");
    assert_eq!(body.len(), 2);
    let StmtKind::Use { path } = &p.statements[1].kind else {
        panic!()
    };
    assert_eq!(path.value, "ext.rhai");

    // The brace may open on the next line.
    let p = parse_ok("section \"a\"\n{\n  k\n}");
    assert!(matches!(&p.statements[0].kind, StmtKind::Section { body, .. } if body.len() == 1));
}

#[test]
fn separators_comments_and_continuations() {
    let p = parse_ok("!vm; lm # modules\n\n# a comment line\nk ; kn\n");
    assert_eq!(p.statements.len(), 4);

    let s = expr(
        "threads | where state == \"Waiting\" && wait_ms > 5000\n        | group by stack | sort by count desc\n        | show table(count, process.name)",
    );
    assert_eq!(
        s,
        "(pipe threads (where (&& (== state \"Waiting\") (> wait_ms 5000))) (group stack) (sort count desc) (table count (. process name)))"
    );
    // A trailing `|`, brackets, a leading `&&` and `else` on the next line continue too.
    assert_eq!(expr("processes |\n  count"), "(pipe processes count)");
    assert_eq!(expr("let l = [1,\n 2,\n 3]"), "[1 2 3]");
    assert_eq!(expr("let c = a\n  && b"), "(&& a b)");
    let p = parse_ok("expect a\n    # why\n    else warn \"w\"\n!vm");
    assert_eq!(p.statements.len(), 2);
    // Windows line endings.
    let p = parse_ok("!vm\r\nlet x = [1,\r\n 2]\r\nthreads\r\n  | count # c\r\n");
    assert_eq!(p.statements.len(), 3);
    // `#` inside a string is not a comment.
    assert_eq!(expr("let s = \"a # b\" # c"), "\"a # b\"");
}

// ---------------------------------------------------------------------------------------------
// Commands

#[test]
fn windbg_commands_tokenize_like_windbg() {
    assert_eq!(
        arg_kinds("!process 0 0 lsass.exe"),
        [
            CommandArgKind::Number(0),
            CommandArgKind::Number(0),
            word("lsass.exe")
        ]
    );
    assert_eq!(
        arg_kinds("!process ffffc10a`12345080 7"),
        [
            CommandArgKind::Number(0xffff_c10a_1234_5080),
            CommandArgKind::Number(7)
        ]
    );
    let args = arg_kinds(".process /p /r $p");
    assert_eq!(
        args[..2],
        [
            CommandArgKind::Flag("p".into()),
            CommandArgKind::Flag("r".into())
        ]
    );
    assert_eq!(arg_expr(&args[2]), "$p");

    let c = command(".process /p /r (p.address)");
    assert_eq!(c.name.name, ".process");
    assert_eq!(c.name.span, 0..8);
    assert_eq!(c.args[2].span, 15..26);
    assert_eq!(arg_expr(&c.args[2].kind), "(. p address)");

    let args = arg_kinds("dt nt!_EPROCESS $p ImageFileName");
    assert_eq!(args[0], qualified("nt", "_EPROCESS"));
    assert_eq!(arg_expr(&args[1]), "$p");
    assert_eq!(args[2], word("ImageFileName"));

    assert_eq!(
        arg_kinds("dq @$peb L4"),
        [
            CommandArgKind::Register("$peb".into()),
            CommandArgKind::Length {
                value: 4,
                unchecked: false
            }
        ]
    );
    let args = arg_kinds("dq poi(nt!PsActiveProcessHead) L2");
    assert_eq!(arg_expr(&args[0]), "(call poi nt!PsActiveProcessHead)");
    assert_eq!(
        args[1],
        CommandArgKind::Length {
            value: 2,
            unchecked: false
        }
    );

    assert_eq!(arg_kinds("!sym noisy"), [word("noisy")]);
    assert_eq!(arg_kinds(".reload /f"), [CommandArgKind::Flag("f".into())]);
    assert_eq!(arg_kinds("x nt!Ps*"), [qualified("nt", "Ps*")]);
    assert!(arg_kinds("lm").is_empty());
    assert!(arg_kinds("k").is_empty());
    assert_eq!(command("k").name.name, "k");
    assert_eq!(arg_kinds("lm m nt*"), [word("m"), word("nt*")]);
    assert_eq!(arg_kinds("dt $p.Peb.Ldr").len(), 1);
    assert_eq!(
        arg_expr(&arg_kinds("dt $p.Peb.Ldr")[0]),
        "(. (. $p Peb) Ldr)"
    );
    assert_eq!(
        arg_kinds(".sympath \"C:\\sym cache\""),
        [word("C:\\sym cache")]
    );
}

#[test]
fn command_numbers_are_hex_by_default() {
    use CommandArgKind::{Length, Number};
    assert_eq!(arg_kinds("!vm 10"), [Number(0x10)]);
    assert_eq!(arg_kinds("!vm 0n10"), [Number(10)]);
    assert_eq!(arg_kinds("!vm 0x10"), [Number(0x10)]);
    assert_eq!(arg_kinds("!vm 0t17"), [Number(0o17)]);
    assert_eq!(arg_kinds("!vm 0y101"), [Number(5)]);
    assert_eq!(arg_kinds("!vm abc"), [Number(0xabc)]);
    assert_eq!(arg_kinds("!process -1 0"), [Number(u64::MAX), Number(0)]);
    assert_eq!(arg_kinds("!process 0 0 -v")[2], word("-v"));
    assert_eq!(
        arg_kinds("db 0 L0n16"),
        [
            Number(0),
            Length {
                value: 16,
                unchecked: false
            }
        ]
    );
    assert_eq!(
        arg_kinds("db 0 L?10"),
        [
            Number(0),
            Length {
                value: 0x10,
                unchecked: true
            }
        ]
    );
    assert_eq!(
        arg_kinds("db 0 l8"),
        [
            Number(0),
            Length {
                value: 8,
                unchecked: false
            }
        ]
    );
    // Not numbers: a word that starts with hex digits, and `L` words that are not lengths.
    assert_eq!(arg_kinds("!process 0 0 dead.exe")[2], word("dead.exe"));
    assert_eq!(arg_kinds("dt nt!_PEB 0 Ldr")[2], word("Ldr"));
}

#[test]
fn statement_start_tells_commands_from_expressions() {
    assert!(matches!(one("x nt!Ps*").kind, StmtKind::Command(_)));
    assert!(matches!(one("k").kind, StmtKind::Command(_)));
    assert!(matches!(one("lm\t").kind, StmtKind::Command(_)));
    // A plain command word followed by a pipe, a dot or a bracket is a name.
    assert_eq!(expr("x | count"), "(pipe x count)");
    assert_eq!(expr("k.frames"), "(. k frames)");
    assert_eq!(expr("dq[0]"), "([] dq 0)");
    // Longer words that start like commands are names.
    assert_eq!(expr("kernel_base"), "kernel_base");
    assert_eq!(expr("letter"), "letter");
}

// ---------------------------------------------------------------------------------------------
// Expressions

#[test]
fn precedence_is_conventional() {
    assert_eq!(expr("a || b && c"), "(|| a (&& b c))");
    assert_eq!(expr("a && b || c"), "(|| (&& a b) c)");
    assert_eq!(expr("a == b + c * d"), "(== a (+ b (* c d)))");
    assert_eq!(expr("a - b - c"), "(- (- a b) c)");
    assert_eq!(expr("a / b % c"), "(% (/ a b) c)");
    assert_eq!(expr("flags & 4 == 4"), "(== (& flags 4) 4)");
    assert_eq!(expr("a | b ^ c & d"), "(| a (^ b (& c d)))");
    assert_eq!(expr("1 << 2 + 3"), "(<< 1 (+ 2 3))");
    assert_eq!(expr("a >> 1 < b"), "(< (>> a 1) b)");
    assert_eq!(
        expr("let v = x in [1, 2] && y ~ \"svc*\""),
        "(&& (in x [1 2]) (~ y \"svc*\"))"
    );
    assert_eq!(
        expr("a <= b || c >= d || e != f"),
        "(|| (|| (<= a b) (>= c d)) (!= e f))"
    );
    assert_eq!(expr("(a + b) * c"), "(* (+ a b) c)");
}

#[test]
fn unary_and_postfix() {
    assert_eq!(expr("-a.b[0]"), "(neg ([] (. a b) 0))");
    assert_eq!(expr("let v = !x in [1]"), "(in (! x) [1])");
    assert_eq!(expr("~~mask"), "(bitnot (bitnot mask))");
    assert_eq!(expr("- -1"), "(neg (neg 1))");
    assert_eq!(
        expr("p.Peb.ProcessParameters.CommandLine"),
        "(. (. (. p Peb) ProcessParameters) CommandLine)"
    );
    assert_eq!(expr("f(x, y)[1].z"), "(. ([] (call f x y) 1) z)");
    assert_eq!(expr("len([])"), "(call len [])");
    assert_eq!(expr("(a | count).x"), "(. (pipe a count) x)");
}

#[test]
fn atoms() {
    assert_eq!(expr("42"), "42");
    assert_eq!(expr("0x1F"), "31");
    assert_eq!(expr("0n12"), "12");
    assert_eq!(expr("1_000_000"), "1000000");
    assert_eq!(
        expr("0xffffc10a`12345080"),
        (0xffff_c10a_1234_5080u64).to_string()
    );
    assert_eq!(expr("18446744073709551615"), u64::MAX.to_string());
    assert_eq!(expr("true || false || null"), "(|| (|| true false) null)");
    assert_eq!(
        expr("\"tab\\t quote\\\" slash\\\\ nl\\n nul\\0 cr\\r\""),
        "\"tab\\t quote\\\" slash\\\\ nl\\n nul\\0 cr\\r\""
    );
    assert_eq!(expr("\"ünïcödé ✓\""), "\"ünïcödé ✓\"");
    assert_eq!(expr("$name"), "$name");
    assert_eq!(expr("@$peb"), "@$peb");
    assert_eq!(expr("@rip"), "@rip");
    assert_eq!(expr("nt!PsActiveProcessHead"), "nt!PsActiveProcessHead");
    assert_eq!(expr("a != b"), "(!= a b)");
    assert_eq!(expr("a!=b"), "(!= a b)");
    assert_eq!(expr("[a, [b], []]"), "[a [b] []]");
    assert_eq!(expr("[1, 2,]"), "[1 2]");
}

#[test]
fn pipe_versus_bitwise_or() {
    // `|` before a stage keyword is a pipe; otherwise it is bitwise or.
    assert_eq!(expr("flags | 4"), "(| flags 4)");
    assert_eq!(expr("processes | count"), "(pipe processes count)");
    assert_eq!(expr("a | counter"), "(| a counter)");
    assert_eq!(
        expr("a | where x | 4 == 4"),
        "(pipe a (where (== (| x 4) 4)))"
    );
    assert_eq!(expr("a | where x | first"), "(pipe a (where x) first)");
    assert_eq!(expr("a || b | c"), "(|| a (| b c))");
    assert_eq!(
        expr("let n = (threads | count) + 1"),
        "(+ (pipe threads count) 1)"
    );
}

#[test]
fn every_stage() {
    assert_eq!(
        expr("processes | select name, pid as id, private_pages * 4 as kb"),
        "(pipe processes (select name (as pid id) (as (* private_pages 4) kb)))"
    );
    assert_eq!(
        expr("processes | sort by private_pages desc, name asc, pid"),
        "(pipe processes (sort private_pages desc, name, pid))"
    );
    assert_eq!(
        expr("threads | group by process.name, wait_reason"),
        "(pipe threads (group (. process name) wait_reason))"
    );
    assert_eq!(
        expr("threads | take $top + 1"),
        "(pipe threads (take (+ $top 1)))"
    );
    assert_eq!(expr("threads | first"), "(pipe threads first)");
    assert_eq!(expr("threads | single"), "(pipe threads single)");
    assert_eq!(expr("threads | count"), "(pipe threads count)");
    assert_eq!(expr("threads | show"), "(pipe threads (table ))");
    assert_eq!(expr("threads | show table"), "(pipe threads (table ))");
    assert_eq!(
        expr("threads | show table(cid, stack.top as top)"),
        "(pipe threads (table cid (as (. stack top) top)))"
    );
    assert_eq!(expr("threads | show list"), "(pipe threads (list ))");
    assert_eq!(
        expr("threads | show list(cid)"),
        "(pipe threads (list cid))"
    );
    assert_eq!(expr("threads | show json"), "(pipe threads json)");
    // Stage keywords stay usable as field names.
    assert_eq!(
        expr("x | where count > first"),
        "(pipe x (where (> count first)))"
    );
}

#[test]
fn spans_point_at_the_source() {
    let src = "let n = 1 +  foo.bar[2]";
    let StmtKind::Let { value, .. } = one(src).kind else {
        panic!()
    };
    assert_eq!(&src[value.span.clone()], "1 +  foo.bar[2]");
    let ExprKind::Binary { right, .. } = &value.kind else {
        panic!()
    };
    assert_eq!(&src[right.span.clone()], "foo.bar[2]");
    let ExprKind::Index { base, index } = &right.kind else {
        panic!()
    };
    assert_eq!(&src[base.span.clone()], "foo.bar");
    assert_eq!(&src[index.span.clone()], "2");
    let ExprKind::Field { field, .. } = &base.kind else {
        panic!()
    };
    assert_eq!(&src[field.span.clone()], "bar");

    // Spans are of the original text, continuation lines and comments included.
    let src = "threads # all of them\n  | count";
    let s = one(src);
    assert_eq!(&src[s.span.clone()], src);
}

// ---------------------------------------------------------------------------------------------
// Printing

#[test]
fn printing_then_parsing_gives_the_same_tree() {
    let src = "param name = \"lsass.exe\"\nparam ids: list<int> = [4, 8]\nlet p = processes | where name == $name && (pid | 4) != 0 | single\n!process $p 7\n.process /p /r (p.address)\ndq poi(nt!PsActiveProcessHead) L2\n(x + 1)\nexpect -a.b[0] in [1, 2] else warn \"x\\n\"\nsection \"s\" { a | count; k 20 }\nuse \"ext.rhai\"\n";
    let mut a = parse_ok(src);
    let printed = kds_lang::print(&a);
    let mut b = parse_ok(&printed);
    strip(&mut a);
    strip(&mut b);
    assert_eq!(a, b, "printed:\n{printed}");
    assert!(printed.contains("(x + 1)"), "{printed}");
}

#[test]
fn a_broken_let_does_not_make_its_name_unknown() {
    let parsed = kds_lang::parse_recovering(
        "let p = processes | where name == | single\n.process /p /r $p\n",
    );
    assert_eq!(parsed.diagnostics.len(), 1);
    assert_eq!(parsed.playbook.statements.len(), 1);
    assert!(parsed.check().is_empty());
    // Without that knowledge, the checker alone reports `$p`.
    assert_eq!(kds_lang::check(&parsed.playbook).len(), 1);
}
