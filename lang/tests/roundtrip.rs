//! Property: any playbook built from the grammar prints to text that parses back to the same
//! tree (spans aside), without diagnostics.

mod common;

use common::strip;
use kds_lang::ast::*;
use proptest::prelude::*;

fn id(name: &str) -> Ident {
    Ident {
        name: name.to_string(),
        span: 0..0,
    }
}

fn e(kind: ExprKind) -> Expr {
    Expr { kind, span: 0..0 }
}

/// Names, including the tricky ones: stage keywords, plain command words, statement keywords.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_][a-z0-9_]{0,6}".prop_filter("reserved", |s| {
            !["in", "true", "false", "null", "else", "as"].contains(&s.as_str())
        }),
        1 => prop::sample::select(vec![
            "count", "first", "where", "show", "x", "k", "lm", "dq", "r", "let", "use", "section",
            "param", "expect", "check", "desc", "asc", "table", "list", "json", "poi", "processes",
        ])
        .prop_map(str::to_string),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => name(),
        1 => prop::sample::select(vec!["in", "true", "else", "as", "Peb"]).prop_map(str::to_string),
    ]
}

fn string() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 #;|{}()\\[\\]\\\\\"\n\t\r\0é✓*:.]{0,10}"
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        any::<u64>().prop_map(|v| e(ExprKind::Int(v))),
        string().prop_map(|s| e(ExprKind::Str(s))),
        any::<bool>().prop_map(|b| e(ExprKind::Bool(b))),
        Just(e(ExprKind::Null)),
        name().prop_map(|n| e(ExprKind::Name(n))),
        name().prop_map(|n| e(ExprKind::Variable(n))),
        (name(), "[A-Za-z_][A-Za-z0-9_]{0,8}")
            .prop_map(|(module, name)| e(ExprKind::Symbol { module, name })),
        prop::sample::select(vec!["$peb", "$proc", "rip", "rsp"])
            .prop_map(|r| e(ExprKind::Register(r.into()))),
    ]
}

fn binary_op() -> impl Strategy<Value = BinaryOp> {
    use BinaryOp::*;
    prop::sample::select(vec![
        Or, And, Eq, Ne, Lt, Le, Gt, Ge, In, Like, BitOr, BitXor, BitAnd, Shl, Shr, Add, Sub, Mul,
        Div, Rem,
    ])
}

fn unary_op() -> impl Strategy<Value = UnaryOp> {
    prop::sample::select(vec![UnaryOp::Not, UnaryOp::Neg, UnaryOp::BitNot])
}

fn column(expr: BoxedStrategy<Expr>) -> BoxedStrategy<Column> {
    (expr, prop::option::of(name()))
        .prop_map(|(expr, alias)| Column {
            expr,
            alias: alias.map(|a| id(&a)),
        })
        .boxed()
}

fn stage(expr: BoxedStrategy<Expr>) -> impl Strategy<Value = Stage> {
    let cols = prop::collection::vec(column(expr.clone()), 0..3);
    let kind = prop_oneof![
        expr.clone().prop_map(StageKind::Where),
        cols.clone().prop_map(StageKind::Select),
        prop::collection::vec(
            (expr.clone(), any::<bool>())
                .prop_map(|(expr, descending)| SortKey { expr, descending }),
            1..3
        )
        .prop_map(StageKind::SortBy),
        prop::collection::vec(expr.clone(), 1..3).prop_map(StageKind::GroupBy),
        expr.prop_map(StageKind::Take),
        Just(StageKind::First),
        Just(StageKind::Single),
        Just(StageKind::Count),
        cols.clone().prop_map(|c| StageKind::Show(Show::Table(c))),
        cols.prop_map(|c| StageKind::Show(Show::List(c))),
        Just(StageKind::Show(Show::Json)),
    ];
    kind.prop_map(|kind| Stage { kind, span: 0..0 })
}

fn expr() -> BoxedStrategy<Expr> {
    leaf()
        .prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                1 => (inner.clone(), field_name())
                    .prop_map(|(b, f)| e(ExprKind::Field { base: Box::new(b), field: id(&f) })),
                1 => (inner.clone(), inner.clone())
                    .prop_map(|(b, i)| e(ExprKind::Index { base: Box::new(b), index: Box::new(i) })),
                1 => (name(), prop::collection::vec(inner.clone(), 0..3))
                    .prop_map(|(f, args)| e(ExprKind::Call { function: id(&f), args })),
                1 => (unary_op(), inner.clone())
                    .prop_map(|(op, x)| e(ExprKind::Unary { op, operand: Box::new(x) })),
                3 => (binary_op(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| e(ExprKind::Binary {
                    op,
                    left: Box::new(l),
                    right: Box::new(r)
                })),
                1 => prop::collection::vec(inner.clone(), 0..3).prop_map(|v| e(ExprKind::List(v))),
                1 => (inner.clone(), prop::collection::vec(stage(inner), 1..3))
                    .prop_map(|(s, stages)| e(ExprKind::Pipeline { source: Box::new(s), stages })),
            ]
        })
        .boxed()
}

fn param_type() -> impl Strategy<Value = ParamType> {
    let base = prop::sample::select(vec![
        ParamType::String,
        ParamType::Int,
        ParamType::Address,
        ParamType::Bool,
    ]);
    (base, 0..3usize).prop_map(|(mut t, depth)| {
        for _ in 0..depth {
            t = ParamType::List(Box::new(t));
        }
        t
    })
}

fn command_arg() -> impl Strategy<Value = CommandArgKind> {
    prop_oneof![
        "[a-z]{1,4}".prop_map(CommandArgKind::Flag),
        any::<u64>().prop_map(CommandArgKind::Number),
        (any::<u64>(), any::<bool>())
            .prop_map(|(value, unchecked)| CommandArgKind::Length { value, unchecked }),
        ("[a-z*][a-z0-9_*]{0,5}", "[A-Za-z_*][A-Za-z0-9_*]{0,8}")
            .prop_map(|(module, name)| CommandArgKind::Qualified { module, name }),
        prop::sample::select(vec!["$peb", "$thread", "rsp", "rip"])
            .prop_map(|r| CommandArgKind::Register(r.into())),
        expr().prop_map(CommandArgKind::Expr),
        prop::sample::select(vec![
            "lsass.exe",
            "noisy",
            "ImageFileName",
            "*",
            "m",
            "C:\\sym",
            "srv*c:\\syms*https://sym",
            "-v",
            "0x",
            "abc",
            "L4",
            "l?8",
            "L?",
            "nt!x",
            "poi",
            "a b",
            "#x",
            "$y",
            "/f",
            "@r",
            "a|",
            "(x",
            "=",
        ])
        .prop_map(|w| CommandArgKind::Word(w.into())),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let names: Vec<&str> = kds_lang::commands::COMMANDS
        .iter()
        .map(|c| c.name)
        .collect();
    (
        prop::sample::select(names),
        prop::collection::vec(command_arg(), 0..4),
    )
        .prop_map(|(n, args)| Command {
            name: id(n),
            args: args
                .into_iter()
                .map(|kind| CommandArg { kind, span: 0..0 })
                .collect(),
        })
}

fn severity() -> impl Strategy<Value = Severity> {
    prop::sample::select(vec![Severity::Note, Severity::Warn, Severity::Fail])
}

fn lit(value: String) -> StringLit {
    StringLit { value, span: 0..0 }
}

fn statement() -> impl Strategy<Value = Stmt> {
    let simple = prop_oneof![
        1 => (name(), prop::option::of(param_type()), prop::option::of(expr())).prop_map(|(n, ty, default)| {
            StmtKind::Param(Param {
                name: id(&n),
                ty: ty.map(|ty| TypeAnnotation { ty, span: 0..0 }),
                default,
            })
        }),
        1 => (name(), expr()).prop_map(|(n, value)| StmtKind::Let { name: id(&n), value }),
        1 => command().prop_map(StmtKind::Command),
        2 => expr().prop_map(StmtKind::Expr),
        1 => (any::<bool>(), expr(), prop::option::of(severity()), prop::option::of(string())).prop_map(
            |(check, condition, severity, message)| StmtKind::Expect(Expect {
                keyword: if check { ExpectKeyword::Check } else { ExpectKeyword::Expect },
                condition,
                severity: severity.map(|s| (s, 0..0)),
                message: message.map(lit),
            })
        ),
        1 => string().prop_map(|p| StmtKind::Use { path: lit(p) }),
    ]
    .prop_map(|kind| Stmt { kind, span: 0..0 });
    simple.prop_recursive(2, 12, 4, |inner| {
        (string(), prop::collection::vec(inner, 0..4)).prop_map(|(t, body)| Stmt {
            kind: StmtKind::Section {
                title: lit(t),
                body,
            },
            span: 0..0,
        })
    })
}

fn playbook() -> impl Strategy<Value = Playbook> {
    prop::collection::vec(statement(), 0..6).prop_map(|statements| Playbook { statements })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn printed_playbooks_parse_back_to_the_same_tree(original in playbook()) {
        let text = kds_lang::print(&original);
        let parsed = kds_lang::parse_recovering(&text);
        prop_assert!(
            parsed.diagnostics.is_empty(),
            "printed text does not parse:\n{text}\n{}",
            kds_lang::render(&parsed.diagnostics, "printed.kds", &text)
        );
        let mut back = parsed.playbook;
        strip(&mut back);
        prop_assert_eq!(&back, &original, "printed:\n{}", text);
        // Printing is stable.
        prop_assert_eq!(kds_lang::print(&back), text);
    }

    #[test]
    fn any_text_parses_without_panicking(text in "\\PC{0,200}") {
        let _ = kds_lang::lint(&text, "random.kds");
    }

    #[test]
    fn statement_soup_parses_without_panicking(
        parts in prop::collection::vec(prop::sample::select(vec![
            "let", "param", "x", "=", "==", "|", "where", "(", ")", "[", "]", "{", "}", "section", "\"s\"",
            "\"", "!process", ".process", "/p", "$p", "@$peb", "L4", "0x", "12", "ffff`0000", ",", ";",
            "\n", " ", "#", "expect", "else", "warn", "show", "table", "count", "sort", "by", "poi(", "nt!x",
            "-", "!", "~", "in", "&&", "||", "<", ">", "list<", "int", ":", "use", "\\", "é",
        ]), 0..60)
    ) {
        let text: String = parts.concat();
        let diagnostics = kds_lang::lint(&text, "soup.kds");
        for d in &diagnostics {
            let span = d.span();
            prop_assert!(span.start <= span.end && span.end <= text.len(), "{d:?} in {text:?}");
            prop_assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end), "{d:?} in {text:?}");
        }
        let _ = kds_lang::render(&diagnostics, "soup.kds", &text);
    }
}
