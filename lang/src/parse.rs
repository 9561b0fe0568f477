//! From source text to a [`Playbook`]: layout, then one grammar rule per statement, then the AST.
//!
//! Statements are parsed one at a time, so a syntax error costs only its own statement: the
//! others are still parsed, and still checked. The rule for a statement is picked from its first
//! word (`let`, `param`, `use`, `expect`, `check`, a `!`/`.` command or a plain command such as
//! `dq`; anything else is an expression), so errors speak about the statement the user meant.

use pest::iterators::{Pair, Pairs};
use pest::Parser;

use crate::ast::*;
use crate::commands;
use crate::diagnostics::{Code, Diagnostic};
use crate::grammar::{KdsParser, Rule};
use crate::layout::{self, Item};
use crate::syntax_error;

/// Deepest expression tree the parser builds (operators and brackets together).
pub const MAX_EXPR_DEPTH: usize = 200;
/// Most diagnostics kept from one file; the rest are summarised in one line.
pub const MAX_DIAGNOSTICS: usize = 100;

/// The result of parsing with recovery: every statement that parsed, and a diagnostic for each
/// one that did not.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub playbook: Playbook,
    pub diagnostics: Vec<Diagnostic>,
    /// Names declared by statements that failed to parse (`let p = <bad>`), so the checker does
    /// not report every later `$p` as unknown.
    pub(crate) recovered_names: Vec<String>,
}

impl Parsed {
    /// Whether any diagnostic is an error.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Checks the statements that parsed, knowing the names the broken ones declared (so a
    /// bad `let p = ...` does not make every later `$p` unknown too). This is what [`crate::lint`]
    /// does after parsing.
    #[must_use]
    pub fn check(&self) -> Vec<Diagnostic> {
        crate::check::check_with(&self.playbook, &self.recovered_names)
    }
}

/// Parses a playbook, recovering at statement boundaries; see [`crate::parse`].
#[must_use]
pub fn parse_recovering(source: &str) -> Parsed {
    let layout = layout::scan(source);
    let mut b = Builder {
        flat: &layout.flat,
        off: 0,
        diags: layout.diagnostics,
        recovered: Vec::new(),
    };
    let statements = b.items(&layout.items);
    Parsed {
        playbook: Playbook { statements },
        diagnostics: crate::diagnostics::finish(b.diags, MAX_DIAGNOSTICS),
        recovered_names: b.recovered,
    }
}

/// A statement that could not be built; its diagnostic is already recorded.
#[derive(Debug)]
struct Abort;

type R<T> = Result<T, Abort>;

/// An expression with the depth of its tree.
struct Ex {
    expr: Expr,
    depth: usize,
}

struct Builder<'a> {
    flat: &'a str,
    /// Offset of the current statement in the source.
    off: usize,
    diags: Vec<Diagnostic>,
    recovered: Vec<String>,
}

/// Which rule parses a statement, from its first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StmtRule {
    Param,
    Let,
    Use,
    Expect,
    Section,
    Command,
    Expr,
}

impl StmtRule {
    fn rule(self) -> Rule {
        match self {
            StmtRule::Param => Rule::param_stmt,
            StmtRule::Let => Rule::let_stmt,
            StmtRule::Use => Rule::use_stmt,
            StmtRule::Expect => Rule::expect_stmt,
            StmtRule::Section => Rule::section_head,
            StmtRule::Command => Rule::command_stmt,
            StmtRule::Expr => Rule::expr_stmt,
        }
    }
}

/// The leading identifier of `text` (empty if it does not start with one).
pub(crate) fn first_word(text: &str) -> &str {
    let end = text
        .char_indices()
        .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(text.len(), |(i, _)| i);
    &text[..end]
}

pub(crate) fn classify(text: &str) -> StmtRule {
    if text.starts_with(['!', '.']) {
        return StmtRule::Command;
    }
    let word = first_word(text);
    match word {
        "param" => StmtRule::Param,
        "let" => StmtRule::Let,
        "use" => StmtRule::Use,
        "expect" | "check" => StmtRule::Expect,
        "section" => StmtRule::Section,
        _ if commands::is_plain_command(word) => {
            let rest = &text[word.len()..];
            let blank_or_end = rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']);
            if blank_or_end && !rest.trim_start().starts_with('|') {
                StmtRule::Command
            } else {
                StmtRule::Expr
            }
        }
        _ => StmtRule::Expr,
    }
}

impl<'a> Builder<'a> {
    fn items(&mut self, items: &[Item]) -> Vec<Stmt> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Stmt { span, poisoned } => {
                    let built = if *poisoned {
                        None
                    } else {
                        self.statement(span.clone())
                    };
                    match built {
                        Some(s) => out.push(s),
                        None => self.recover_name(span.clone()),
                    }
                }
                Item::Block {
                    head,
                    head_poisoned,
                    open,
                    body,
                    close,
                } => {
                    let title = if head.is_empty() {
                        self.diags.push(
                            Diagnostic::error(
                                Code::Syntax,
                                "a `{` block must follow `section \"title\"`",
                                *open..*open + 1,
                                "block without a section title",
                            )
                            .with_help("write `section \"title\" { ... }`"),
                        );
                        None
                    } else if *head_poisoned {
                        None
                    } else {
                        self.section_head(head.clone())
                    };
                    let body = self.items(body);
                    match title {
                        Some(title) => {
                            let end = close.map_or_else(
                                || body.last().map_or(*open + 1, |s| s.span.end),
                                |c| c + 1,
                            );
                            out.push(Stmt {
                                kind: StmtKind::Section { title, body },
                                span: head.start..end,
                            });
                        }
                        // The body's statements still count, so later uses of its names and its
                        // own errors are reported.
                        None => out.extend(body),
                    }
                }
            }
        }
        out
    }

    /// Remembers the name a broken `let`/`param` meant to declare.
    fn recover_name(&mut self, span: Span) {
        let text = &self.flat[span];
        let word = first_word(text);
        if word == "let" || word == "param" {
            let rest = text[word.len()..].trim_start();
            let name = first_word(rest);
            if !name.is_empty() {
                self.recovered.push(name.to_string());
            }
        }
    }

    fn parse_rule(&mut self, rule: StmtRule, span: Span) -> Option<Pair<'a, Rule>> {
        let flat = self.flat;
        let text = &flat[span.clone()];
        match KdsParser::parse(rule.rule(), text) {
            Ok(mut pairs) => pairs.next(),
            Err(e) => {
                self.diags
                    .push(syntax_error::translate(&e, text, span.start, rule));
                None
            }
        }
    }

    fn section_head(&mut self, span: Span) -> Option<StringLit> {
        if classify(&self.flat[span.clone()]) != StmtRule::Section {
            self.diags.push(
                Diagnostic::error(
                    Code::Syntax,
                    "a `{` block must follow `section \"title\"`",
                    span.clone(),
                    "this is not a section title",
                )
                .with_help("write `section \"title\" { ... }`"),
            );
            return None;
        }
        self.off = span.start;
        let pair = self.parse_rule(StmtRule::Section, span)?;
        let string = pair.into_inner().find(|p| p.as_rule() == Rule::string)?;
        self.string_lit(string).ok()
    }

    fn statement(&mut self, span: Span) -> Option<Stmt> {
        let rule = classify(&self.flat[span.clone()]);
        if rule == StmtRule::Section {
            let end = span.end;
            self.diags.push(
                Diagnostic::error(
                    Code::Syntax,
                    "expected `{` after the section title",
                    end..end,
                    "the section body should start here",
                )
                .with_help("write `section \"title\" { ... }`"),
            );
            return None;
        }
        self.off = span.start;
        let pair = self.parse_rule(rule, span.clone())?;
        let kind = match rule {
            StmtRule::Param => self.param(pair),
            StmtRule::Let => self.let_stmt(pair),
            StmtRule::Use => self.use_stmt(pair),
            StmtRule::Expect => self.expect(pair),
            StmtRule::Command => self.command(pair),
            StmtRule::Expr | StmtRule::Section => self.expr_stmt(pair),
        }
        .ok()?;
        Some(Stmt { kind, span })
    }

    // -----------------------------------------------------------------------------------------
    // Helpers

    /// The source span of a pair, without the blanks the grammar skipped after it.
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        let s = p.as_span();
        let len = s.as_str().trim_end().len();
        self.off + s.start()..self.off + s.start() + len
    }

    fn internal(&mut self, at: Span) -> Abort {
        self.diags.push(Diagnostic::error(
            Code::Syntax,
            "internal parser error: the grammar and the AST builder disagree",
            at,
            "here",
        ));
        Abort
    }

    fn next<'i>(&mut self, pairs: &mut Pairs<'i, Rule>, at: &Span) -> R<Pair<'i, Rule>> {
        match pairs.next() {
            Some(p) => Ok(p),
            None => Err(self.internal(at.clone())),
        }
    }

    fn ident(&self, p: &Pair<'_, Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(p),
        }
    }

    fn make(&mut self, kind: ExprKind, span: Span, depth: usize) -> R<Ex> {
        if depth > MAX_EXPR_DEPTH {
            self.diags.push(
                Diagnostic::error(
                    Code::TooDeep,
                    format!("expression nested deeper than {MAX_EXPR_DEPTH} levels"),
                    span,
                    "this expression is too deep",
                )
                .with_help("split it with `let`"),
            );
            return Err(Abort);
        }
        Ok(Ex {
            expr: Expr { kind, span },
            depth,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Statements

    fn param(&mut self, pair: Pair<'_, Rule>) -> R<StmtKind> {
        let at = self.span(&pair);
        let mut name = None;
        let mut ty = None;
        let mut default = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(&p)),
                Rule::type_ann => ty = Some(self.type_ann(p)?),
                Rule::expr => default = Some(self.expr(p)?.expr),
                _ => {}
            }
        }
        let Some(name) = name else {
            return Err(self.internal(at));
        };
        Ok(StmtKind::Param(Param { name, ty, default }))
    }

    fn type_ann(&mut self, pair: Pair<'_, Rule>) -> R<TypeAnnotation> {
        let span = self.span(&pair);
        let mut names = Vec::new();
        let mut closes = 0usize;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::type_name => names.push((p.as_str().to_string(), self.span(&p))),
                Rule::type_close => closes += 1,
                _ => {}
            }
        }
        let opens = names.len().saturating_sub(1);
        if opens != closes {
            self.diags.push(
                Diagnostic::error(
                    Code::Syntax,
                    format!("unbalanced `<` and `>` in type: {opens} opened, {closes} closed"),
                    span,
                    "in this type",
                )
                .with_help("a list type is written `list<int>`"),
            );
            return Err(Abort);
        }
        if opens > 4 {
            self.diags.push(Diagnostic::error(
                Code::TooDeep,
                "list types nested deeper than 4",
                span,
                "too deep",
            ));
            return Err(Abort);
        }
        let Some((last, last_span)) = names.pop() else {
            return Err(self.internal(span));
        };
        let mut ty = self.type_name(&last, last_span, false)?;
        while let Some((outer, outer_span)) = names.pop() {
            self.type_name(&outer, outer_span.clone(), true)?;
            ty = ParamType::List(Box::new(ty));
        }
        Ok(TypeAnnotation { ty, span })
    }

    /// A type name; `outer` when it has `<...>` after it (only `list` may).
    fn type_name(&mut self, name: &str, span: Span, outer: bool) -> R<ParamType> {
        let ty = match name {
            "string" => Some(ParamType::String),
            "int" => Some(ParamType::Int),
            "address" => Some(ParamType::Address),
            "bool" => Some(ParamType::Bool),
            "list" => None,
            _ => {
                let alias = match name {
                    "str" | "text" | "String" => Some("string"),
                    "integer" | "number" | "u64" | "i64" | "u32" | "usize" => Some("int"),
                    "boolean" => Some("bool"),
                    "addr" | "ptr" | "pointer" => Some("address"),
                    "array" | "vec" | "Vec" => Some("list"),
                    _ => None,
                };
                let types = ["string", "int", "address", "bool", "list"];
                let suggestion = alias.or_else(|| crate::suggest::closest(name, types));
                let mut d = Diagnostic::error(
                    Code::Literal,
                    format!("unknown type `{name}`"),
                    span,
                    "unknown type",
                );
                d = d.with_help(match suggestion {
                    Some(s) => {
                        format!("did you mean `{s}`? (types: string, int, address, bool, list<T>)")
                    }
                    None => "the types are string, int, address, bool and list<T>".to_string(),
                });
                self.diags.push(d);
                return Err(Abort);
            }
        };
        match (ty, outer) {
            (Some(t), false) => Ok(t),
            (None, true) => Ok(ParamType::String), // placeholder: the caller wraps the inner type
            (Some(_), true) => {
                self.diags.push(
                    Diagnostic::error(
                        Code::Syntax,
                        format!("`{name}` takes no type parameter"),
                        span,
                        "only `list` takes `<...>`",
                    )
                    .with_help("write `list<int>` for a list"),
                );
                Err(Abort)
            }
            (None, false) => {
                self.diags.push(
                    Diagnostic::error(
                        Code::Syntax,
                        "`list` needs an element type",
                        span,
                        "list of what?",
                    )
                    .with_help("write `list<int>`, `list<string>`, ..."),
                );
                Err(Abort)
            }
        }
    }

    fn let_stmt(&mut self, pair: Pair<'_, Rule>) -> R<StmtKind> {
        let at = self.span(&pair);
        let mut name = None;
        let mut value = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(&p)),
                Rule::expr => value = Some(self.expr(p)?.expr),
                _ => {}
            }
        }
        match (name, value) {
            (Some(name), Some(value)) => Ok(StmtKind::Let { name, value }),
            _ => Err(self.internal(at)),
        }
    }

    fn use_stmt(&mut self, pair: Pair<'_, Rule>) -> R<StmtKind> {
        let at = self.span(&pair);
        match pair.into_inner().find(|p| p.as_rule() == Rule::string) {
            Some(p) => Ok(StmtKind::Use {
                path: self.string_lit(p)?,
            }),
            None => Err(self.internal(at)),
        }
    }

    fn expect(&mut self, pair: Pair<'_, Rule>) -> R<StmtKind> {
        let at = self.span(&pair);
        let mut keyword = ExpectKeyword::Expect;
        let mut condition = None;
        let mut severity = None;
        let mut message = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::kw_check => keyword = ExpectKeyword::Check,
                Rule::expr => condition = Some(self.expr(p)?.expr),
                Rule::else_clause => {
                    for q in p.into_inner() {
                        match q.as_rule() {
                            Rule::severity => severity = Some(self.severity(&q)?),
                            Rule::string => message = Some(self.string_lit(q)?),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(condition) = condition else {
            return Err(self.internal(at));
        };
        Ok(StmtKind::Expect(Expect {
            keyword,
            condition,
            severity,
            message,
        }))
    }

    fn severity(&mut self, p: &Pair<'_, Rule>) -> R<(Severity, Span)> {
        let span = self.span(p);
        let s = match p.as_str() {
            "note" => Severity::Note,
            "warn" => Severity::Warn,
            "fail" => Severity::Fail,
            other => {
                let suggestion = match other {
                    "error" | "err" | "failure" | "fatal" => Some("fail"),
                    "warning" => Some("warn"),
                    "info" | "notice" => Some("note"),
                    _ => crate::suggest::closest(other, ["note", "warn", "fail"]),
                };
                let mut d = Diagnostic::error(
                    Code::Syntax,
                    format!("unknown severity `{other}`"),
                    span,
                    "expected `note`, `warn` or `fail`",
                );
                d = d.with_help(match suggestion {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "write `else note`, `else warn` or `else fail`, then the message"
                        .to_string(),
                });
                self.diags.push(d);
                return Err(Abort);
            }
        };
        Ok((s, span))
    }

    fn expr_stmt(&mut self, pair: Pair<'_, Rule>) -> R<StmtKind> {
        let at = self.span(&pair);
        match pair.into_inner().find(|p| p.as_rule() == Rule::expr) {
            Some(p) => Ok(StmtKind::Expr(self.expr(p)?.expr)),
            None => Err(self.internal(at)),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    fn command(&mut self, pair: Pair<'_, Rule>) -> R<StmtKind> {
        let at = self.span(&pair);
        let mut name = None;
        let mut args = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::cmd_name => name = Some(self.ident(&p)),
                Rule::EOI => {}
                _ => args.push(self.command_arg(p)?),
            }
        }
        let Some(name) = name else {
            return Err(self.internal(at));
        };
        Ok(StmtKind::Command(Command { name, args }))
    }

    fn command_arg(&mut self, pair: Pair<'_, Rule>) -> R<CommandArg> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        let kind = match rule {
            Rule::cmd_flag => {
                let letters = self.next(&mut inner, &span)?;
                CommandArgKind::Flag(letters.as_str().to_string())
            }
            Rule::cmd_length => {
                let mut unchecked = false;
                let mut value = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::length_unchecked => unchecked = true,
                        Rule::wnum => value = Some(self.wnum(p)?),
                        _ => {}
                    }
                }
                let Some(value) = value else {
                    return Err(self.internal(span));
                };
                CommandArgKind::Length { value, unchecked }
            }
            Rule::cmd_number => {
                let mut negative = false;
                let mut value = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::cmd_minus => negative = true,
                        Rule::wnum => value = Some(self.wnum(p)?),
                        _ => {}
                    }
                }
                let Some(value) = value else {
                    return Err(self.internal(span));
                };
                CommandArgKind::Number(if negative {
                    value.wrapping_neg()
                } else {
                    value
                })
            }
            Rule::cmd_register => {
                let r = self.next(&mut inner, &span)?;
                CommandArgKind::Register(r.as_str().trim_start_matches('@').to_string())
            }
            Rule::cmd_variable => {
                let v = self.next(&mut inner, &span)?;
                let vspan = self.span(&v);
                let mut e = self.make(
                    ExprKind::Variable(v.as_str().trim_start_matches('$').to_string()),
                    vspan,
                    1,
                )?;
                for p in inner {
                    if p.as_rule() == Rule::field_name {
                        let field = self.ident(&p);
                        let s = e.expr.span.start..field.span.end;
                        let depth = e.depth + 1;
                        e = self.make(
                            ExprKind::Field {
                                base: Box::new(e.expr),
                                field,
                            },
                            s,
                            depth,
                        )?;
                    }
                }
                CommandArgKind::Expr(e.expr)
            }
            Rule::cmd_poi => {
                let keyword = self.next(&mut inner, &span)?;
                let function = Some(self.ident(&keyword));
                let args = self.next(&mut inner, &span)?;
                let cspan = span.clone();
                let arg = match args.into_inner().find(|p| p.as_rule() == Rule::expr) {
                    Some(p) => Some(self.expr(p)?),
                    None => None,
                };
                let (Some(function), Some(arg)) = (function, arg) else {
                    return Err(self.internal(span));
                };
                let depth = arg.depth + 1;
                let e = self.make(
                    ExprKind::Call {
                        function,
                        args: vec![arg.expr],
                    },
                    cspan,
                    depth,
                )?;
                CommandArgKind::Expr(e.expr)
            }
            Rule::cmd_paren => {
                let paren = self.next(&mut inner, &span)?;
                let pspan = self.span(&paren);
                let Some(e) = paren.into_inner().find(|p| p.as_rule() == Rule::expr) else {
                    return Err(self.internal(span));
                };
                let mut e = self.expr(e)?.expr;
                e.span = pspan;
                CommandArgKind::Expr(e)
            }
            Rule::cmd_string => {
                let s = self.next(&mut inner, &span)?;
                let body = s.into_inner().next().map_or("", |b| b.as_str());
                CommandArgKind::Word(body.to_string())
            }
            Rule::cmd_qualified => {
                let module = self.next(&mut inner, &span)?;
                let name = self.next(&mut inner, &span)?;
                CommandArgKind::Qualified {
                    module: module.as_str().to_string(),
                    name: name.as_str().to_string(),
                }
            }
            Rule::cmd_word => CommandArgKind::Word(self.flat[span.clone()].to_string()),
            _ => return Err(self.internal(span)),
        };
        Ok(CommandArg { kind, span })
    }

    /// A WinDbg number: hex unless prefixed.
    fn wnum(&mut self, pair: Pair<'_, Rule>) -> R<u64> {
        let span = self.span(&pair);
        let Some(p) = pair.into_inner().next() else {
            return Err(self.internal(span));
        };
        let text = p.as_str();
        let (radix, digits) = match p.as_rule() {
            Rule::wnum_hex => (16, &text[2..]),
            Rule::wnum_dec => (10, &text[2..]),
            Rule::wnum_oct => (8, &text[2..]),
            Rule::wnum_bin => (2, &text[2..]),
            _ => (16, text),
        };
        self.number(digits, radix, span)
    }

    fn number(&mut self, digits: &str, radix: u32, span: Span) -> R<u64> {
        let clean: String = digits.chars().filter(|&c| c != '`' && c != '_').collect();
        match u64::from_str_radix(&clean, radix) {
            Ok(v) => Ok(v),
            Err(_) => {
                self.diags.push(
                    Diagnostic::error(
                        Code::Literal,
                        "number too large for 64 bits",
                        span,
                        "does not fit in 64 bits",
                    )
                    .with_help(if radix == 16 {
                        "an address has at most 16 hex digits"
                    } else {
                        "the largest number is 18446744073709551615 (0xffffffffffffffff)"
                    }),
                );
                Err(Abort)
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Expressions

    fn expr(&mut self, pair: Pair<'_, Rule>) -> R<Ex> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let chain = self.next(&mut inner, &span)?;
        let source = self.or_chain(chain)?;
        let mut stages = Vec::new();
        let mut depth = source.depth;
        for p in inner {
            if p.as_rule() == Rule::pipe {
                continue;
            }
            let (stage, d) = self.stage(p)?;
            depth = depth.max(d);
            stages.push(stage);
        }
        if stages.is_empty() {
            return Ok(source);
        }
        self.make(
            ExprKind::Pipeline {
                source: Box::new(source.expr),
                stages,
            },
            span,
            depth + 1,
        )
    }

    /// `operand (binop operand)*`, folded by precedence without recursion.
    fn or_chain(&mut self, pair: Pair<'_, Rule>) -> R<Ex> {
        let mut operands: Vec<Ex> = Vec::new();
        let mut ops: Vec<BinaryOp> = Vec::new();
        for p in pair.into_inner() {
            if p.as_rule() == Rule::operand {
                operands.push(self.operand(p)?);
                continue;
            }
            let Some(op) = binary_op(p.as_rule()) else {
                let at = self.span(&p);
                return Err(self.internal(at));
            };
            while let Some(&top) = ops.last() {
                if precedence(top) >= precedence(op) {
                    ops.pop();
                    self.reduce(&mut operands, top)?;
                } else {
                    break;
                }
            }
            ops.push(op);
        }
        while let Some(op) = ops.pop() {
            self.reduce(&mut operands, op)?;
        }
        match (operands.pop(), operands.is_empty()) {
            (Some(e), true) => Ok(e),
            _ => Err(self.internal(self.off..self.off)),
        }
    }

    fn reduce(&mut self, operands: &mut Vec<Ex>, op: BinaryOp) -> R<()> {
        let (Some(right), Some(left)) = (operands.pop(), operands.pop()) else {
            return Err(self.internal(self.off..self.off));
        };
        let span = left.expr.span.start..right.expr.span.end;
        let depth = left.depth.max(right.depth) + 1;
        let e = self.make(
            ExprKind::Binary {
                op,
                left: Box::new(left.expr),
                right: Box::new(right.expr),
            },
            span,
            depth,
        )?;
        operands.push(e);
        Ok(())
    }

    fn operand(&mut self, pair: Pair<'_, Rule>) -> R<Ex> {
        let span = self.span(&pair);
        let mut prefixes: Vec<(UnaryOp, usize)> = Vec::new();
        let mut e: Option<Ex> = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::prefix_op => {
                    let op = match p.as_str() {
                        "!" => UnaryOp::Not,
                        "-" => UnaryOp::Neg,
                        _ => UnaryOp::BitNot,
                    };
                    prefixes.push((op, self.span(&p).start));
                }
                Rule::field_access => {
                    let Some(base) = e.take() else {
                        return Err(self.internal(span));
                    };
                    let Some(name) = p.into_inner().find(|q| q.as_rule() == Rule::field_name)
                    else {
                        return Err(self.internal(span));
                    };
                    let field = self.ident(&name);
                    let s = base.expr.span.start..field.span.end;
                    let depth = base.depth + 1;
                    e = Some(self.make(
                        ExprKind::Field {
                            base: Box::new(base.expr),
                            field,
                        },
                        s,
                        depth,
                    )?);
                }
                Rule::index => {
                    let Some(base) = e.take() else {
                        return Err(self.internal(span));
                    };
                    let end = self.span(&p).end;
                    let Some(ix) = p.into_inner().find(|q| q.as_rule() == Rule::expr) else {
                        return Err(self.internal(span));
                    };
                    let index = self.expr(ix)?;
                    let s = base.expr.span.start..end;
                    let depth = base.depth.max(index.depth) + 1;
                    e = Some(self.make(
                        ExprKind::Index {
                            base: Box::new(base.expr),
                            index: Box::new(index.expr),
                        },
                        s,
                        depth,
                    )?);
                }
                _ => e = Some(self.primary(p)?),
            }
        }
        let Some(mut e) = e else {
            return Err(self.internal(span));
        };
        while let Some((op, start)) = prefixes.pop() {
            let s = start..e.expr.span.end;
            let depth = e.depth + 1;
            e = self.make(
                ExprKind::Unary {
                    op,
                    operand: Box::new(e.expr),
                },
                s,
                depth,
            )?;
        }
        Ok(e)
    }

    fn primary(&mut self, pair: Pair<'_, Rule>) -> R<Ex> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::int => {
                let Some(p) = pair.into_inner().next() else {
                    return Err(self.internal(span));
                };
                let text = p.as_str();
                let v = match p.as_rule() {
                    Rule::int_hex => self.number(&text[2..], 16, span.clone())?,
                    Rule::int_dec => self.number(&text[2..], 10, span.clone())?,
                    _ => self.number(text, 10, span.clone())?,
                };
                ExprKind::Int(v)
            }
            Rule::string => ExprKind::Str(self.string_lit(pair)?.value),
            Rule::kw_true => ExprKind::Bool(true),
            Rule::kw_false => ExprKind::Bool(false),
            Rule::kw_null => ExprKind::Null,
            Rule::register => ExprKind::Register(pair.as_str().trim_start_matches('@').to_string()),
            Rule::variable => ExprKind::Variable(pair.as_str().trim_start_matches('$').to_string()),
            Rule::symbol => {
                let text = pair.as_str();
                let (module, name) = text.split_once('!').unwrap_or((text, ""));
                ExprKind::Symbol {
                    module: module.to_string(),
                    name: name.to_string(),
                }
            }
            Rule::name => ExprKind::Name(pair.as_str().to_string()),
            Rule::call => {
                let mut function = None;
                let mut args = Vec::new();
                let mut depth = 0;
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::name => function = Some(self.ident(&p)),
                        Rule::expr => {
                            let a = self.expr(p)?;
                            depth = depth.max(a.depth);
                            args.push(a.expr);
                        }
                        _ => {}
                    }
                }
                let Some(function) = function else {
                    return Err(self.internal(span));
                };
                return self.make(ExprKind::Call { function, args }, span, depth + 1);
            }
            Rule::list => {
                let mut items = Vec::new();
                let mut depth = 0;
                for p in pair.into_inner() {
                    if p.as_rule() == Rule::expr {
                        let a = self.expr(p)?;
                        depth = depth.max(a.depth);
                        items.push(a.expr);
                    }
                }
                return self.make(ExprKind::List(items), span, depth + 1);
            }
            Rule::paren => {
                let Some(inner) = pair.into_inner().find(|p| p.as_rule() == Rule::expr) else {
                    return Err(self.internal(span));
                };
                let mut e = self.expr(inner)?;
                // The parentheses belong to the expression's span (`(a + b).c` starts at `(`).
                e.expr.span = span;
                return Ok(e);
            }
            _ => return Err(self.internal(span)),
        };
        self.make(kind, span, 1)
    }

    fn string_lit(&mut self, pair: Pair<'_, Rule>) -> R<StringLit> {
        let span = self.span(&pair);
        let body = pair.into_inner().next();
        let (raw, body_start) = match &body {
            Some(b) => (b.as_str(), self.span(b).start),
            None => ("", span.start + 1),
        };
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                value.push(c);
                continue;
            }
            let Some((j, e)) = chars.next() else {
                break;
            };
            let decoded = match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '0' => '\0',
                '\\' => '\\',
                '"' => '"',
                _ => {
                    let at = body_start + i..body_start + j + e.len_utf8();
                    self.diags.push(
                        Diagnostic::error(
                            Code::Literal,
                            format!("unknown escape `\\{e}` in string"),
                            at,
                            "unknown escape",
                        )
                        .with_help(
                            "the escapes are \\n \\t \\r \\0 \\\\ \\\"; write `\\\\` for a backslash \
                             (\"C:\\\\Windows\")",
                        ),
                    );
                    return Err(Abort);
                }
            };
            value.push(decoded);
        }
        Ok(StringLit { value, span })
    }

    // -----------------------------------------------------------------------------------------
    // Pipeline stages

    fn stage(&mut self, pair: Pair<'_, Rule>) -> R<(Stage, usize)> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut depth = 0;
        let kind = match rule {
            Rule::where_stage | Rule::take_stage => {
                let Some(c) = pair.into_inner().find(|p| p.as_rule() == Rule::or_chain) else {
                    return Err(self.internal(span));
                };
                let e = self.or_chain(c)?;
                depth = e.depth;
                if rule == Rule::where_stage {
                    StageKind::Where(e.expr)
                } else {
                    StageKind::Take(e.expr)
                }
            }
            Rule::select_stage => {
                let mut cols = Vec::new();
                for p in pair.into_inner() {
                    if p.as_rule() == Rule::column {
                        let (c, d) = self.column(p)?;
                        depth = depth.max(d);
                        cols.push(c);
                    }
                }
                StageKind::Select(cols)
            }
            Rule::sort_stage => {
                let mut keys = Vec::new();
                for p in pair.into_inner() {
                    if p.as_rule() != Rule::sort_key {
                        continue;
                    }
                    let mut expr = None;
                    let mut descending = false;
                    for q in p.into_inner() {
                        match q.as_rule() {
                            Rule::or_chain => expr = Some(self.or_chain(q)?),
                            Rule::sort_dir => descending = q.as_str() == "desc",
                            _ => {}
                        }
                    }
                    let Some(e) = expr else {
                        return Err(self.internal(span));
                    };
                    depth = depth.max(e.depth);
                    keys.push(SortKey {
                        expr: e.expr,
                        descending,
                    });
                }
                StageKind::SortBy(keys)
            }
            Rule::group_stage => {
                let mut keys = Vec::new();
                for p in pair.into_inner() {
                    if p.as_rule() == Rule::or_chain {
                        let e = self.or_chain(p)?;
                        depth = depth.max(e.depth);
                        keys.push(e.expr);
                    }
                }
                StageKind::GroupBy(keys)
            }
            Rule::first_stage => StageKind::First,
            Rule::single_stage => StageKind::Single,
            Rule::count_stage => StageKind::Count,
            Rule::show_stage => {
                let mut show = Show::Table(Vec::new());
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::show_table | Rule::show_list => {
                            let is_table = p.as_rule() == Rule::show_table;
                            let mut cols = Vec::new();
                            for q in p.into_inner() {
                                if q.as_rule() == Rule::column_list {
                                    let list_span = self.span(&q);
                                    for c in q.into_inner() {
                                        if c.as_rule() == Rule::column {
                                            let (col, d) = self.column(c)?;
                                            depth = depth.max(d);
                                            cols.push(col);
                                        }
                                    }
                                    if cols.is_empty() {
                                        self.empty_columns(list_span, is_table);
                                        return Err(Abort);
                                    }
                                }
                            }
                            show = if is_table {
                                Show::Table(cols)
                            } else {
                                Show::List(cols)
                            };
                        }
                        Rule::show_json => show = Show::Json,
                        _ => {}
                    }
                }
                StageKind::Show(show)
            }
            _ => return Err(self.internal(span)),
        };
        Ok((Stage { kind, span }, depth + 1))
    }

    fn empty_columns(&mut self, span: Span, table: bool) {
        let form = if table { "table" } else { "list" };
        self.diags.push(
            Diagnostic::error(
                Code::Pipeline,
                format!("`show {form}()` names no columns"),
                span,
                "empty column list",
            )
            .with_help(format!(
                "name the columns, `show {form}(pid, name)`, or write `show {form}` for every field"
            )),
        );
    }

    fn column(&mut self, pair: Pair<'_, Rule>) -> R<(Column, usize)> {
        let span = self.span(&pair);
        let mut expr = None;
        let mut alias = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::or_chain => expr = Some(self.or_chain(p)?),
                Rule::ident => alias = Some(self.ident(&p)),
                _ => {}
            }
        }
        let Some(e) = expr else {
            return Err(self.internal(span));
        };
        Ok((
            Column {
                expr: e.expr,
                alias,
            },
            e.depth,
        ))
    }
}

fn binary_op(rule: Rule) -> Option<BinaryOp> {
    Some(match rule {
        Rule::op_or => BinaryOp::Or,
        Rule::op_and => BinaryOp::And,
        Rule::op_eq => BinaryOp::Eq,
        Rule::op_ne => BinaryOp::Ne,
        Rule::op_le => BinaryOp::Le,
        Rule::op_ge => BinaryOp::Ge,
        Rule::op_shl => BinaryOp::Shl,
        Rule::op_shr => BinaryOp::Shr,
        Rule::op_lt => BinaryOp::Lt,
        Rule::op_gt => BinaryOp::Gt,
        Rule::op_in => BinaryOp::In,
        Rule::op_like => BinaryOp::Like,
        Rule::op_bitor => BinaryOp::BitOr,
        Rule::op_bitxor => BinaryOp::BitXor,
        Rule::op_bitand => BinaryOp::BitAnd,
        Rule::op_add => BinaryOp::Add,
        Rule::op_sub => BinaryOp::Sub,
        Rule::op_mul => BinaryOp::Mul,
        Rule::op_div => BinaryOp::Div,
        Rule::op_rem => BinaryOp::Rem,
        _ => return None,
    })
}

/// Binding strength, higher binds tighter; every level is left-associative.
#[must_use]
pub fn precedence(op: BinaryOp) -> u8 {
    use BinaryOp::*;
    match op {
        Or => 1,
        And => 2,
        Eq | Ne | Lt | Le | Gt | Ge | In | Like => 3,
        BitOr => 4,
        BitXor => 5,
        BitAnd => 6,
        Shl | Shr => 7,
        Add | Sub => 8,
        Mul | Div | Rem => 9,
    }
}
