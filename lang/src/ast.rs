//! The syntax tree of a playbook. Every node carries the byte span of its source text, so
//! diagnostics from the checker and from the runtime point at what the user wrote.
//!
//! Two number conventions meet here, as in WinDbg: inside WinDbg command arguments numbers are
//! hex by default (`!process 284 7`, `dq rsp L10`, `0n10` for decimal, backtick separators in
//! addresses: `ffffc10a`12345080`); in the language's own expressions (`let`, `where`,
//! `expect`) numbers are decimal unless written `0x...`.

use std::ops::Range;

/// Byte offsets into the playbook source.
pub type Span = Range<usize>;

/// A name with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole `.kds` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub statements: Vec<Stmt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    /// `param name: type = default`, bound from the command line with `--set name=value`.
    Param(Param),
    /// `let name = expr`.
    Let { name: Ident, value: Expr },
    /// A WinDbg command: `!process 0 0 lsass.exe`, `.process /p /r $p`, `dt nt!_EPROCESS $p`.
    Command(Command),
    /// An expression evaluated for its output, usually a pipeline ending in `show`.
    Expr(Expr),
    /// `expect <condition> else <severity> "message"` (and `check`, whose default severity is
    /// `warn`; `expect` defaults to `fail`).
    Expect(Expect),
    /// `section "title" { ... }`.
    Section { title: StringLit, body: Vec<Stmt> },
    /// `use "file.rhai"` or `use "other.kds"`.
    Use { path: StringLit },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringLit {
    pub value: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Option<TypeAnnotation>,
    pub default: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeAnnotation {
    pub ty: ParamType,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Address,
    Bool,
    List(Box<ParamType>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Note,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// `expect` or `check`.
    pub keyword: ExpectKeyword,
    pub condition: Expr,
    /// Written severity, if any (`else warn "..."`).
    pub severity: Option<(Severity, Span)>,
    pub message: Option<StringLit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectKeyword {
    Expect,
    Check,
}

impl Expect {
    /// The severity that applies: as written, else `fail` for `expect` and `warn` for `check`.
    #[must_use]
    pub fn effective_severity(&self) -> Severity {
        match (self.severity.as_ref(), self.keyword) {
            (Some((s, _)), _) => *s,
            (None, ExpectKeyword::Expect) => Severity::Fail,
            (None, ExpectKeyword::Check) => Severity::Warn,
        }
    }
}

/// A WinDbg command with its arguments as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `!process`, `.process`, `dt`, `dq`, `k`, `lm`, ... (with its `!` or `.`).
    pub name: Ident,
    pub args: Vec<CommandArg>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandArg {
    pub kind: CommandArgKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandArgKind {
    /// `/p`, `/r`, `/f` (the letters after the slash).
    Flag(String),
    /// A WinDbg number: hex by default, `0x`/`0n`/`0y` prefixes, backtick separators
    /// (`ffffc10a`12345080`, `0n42`).
    Number(u64),
    /// A length or count prefix: `L4`, `L0n16`, `L?10`.
    Length { value: u64, unchecked: bool },
    /// `module!symbol` or `module!_TYPE` (`nt!_EPROCESS`, `nt!PsActiveProcessHead`).
    Qualified { module: String, name: String },
    /// `@$peb`, `@$proc`, `@$thread`, `@rsp`.
    Register(String),
    /// A language expression in a command: `$name`, `(expr)`, `poi(expr)`.
    Expr(Expr),
    /// Anything else as a word: `lsass.exe`, `noisy`, `ImageFileName`, `*`.
    Word(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Int(u64),
    Str(String),
    Bool(bool),
    Null,
    /// A name: a `let` binding, a parameter, a collection (`processes`), or a field of the
    /// row in a pipeline stage (`name`, `pid`).
    Name(String),
    /// `$name`: explicitly a parameter or binding.
    Variable(String),
    /// `module!symbol`: the address of a global.
    Symbol {
        module: String,
        name: String,
    },
    /// `@$peb`, `@rip`.
    Register(String),
    /// `base.field`; pointers are followed (`p.Peb.ProcessParameters.CommandLine`).
    Field {
        base: Box<Expr>,
        field: Ident,
    },
    Index {
        base: Box<Expr>,
        index: Box<Expr>,
    },
    /// `poi(x)`, `len(x)`, `hex(x)`, user functions from rhai.
    Call {
        function: Ident,
        args: Vec<Expr>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    List(Vec<Expr>),
    /// `source | stage | stage ...`.
    Pipeline {
        source: Box<Expr>,
        stages: Vec<Stage>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
    BitNot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `x in [a, b]`
    In,
    /// `name ~ "svchost*"`: glob match, case-insensitive as Windows names are.
    Like,
    BitOr,
    BitXor,
    BitAnd,
    Shl,
    Shr,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub kind: StageKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StageKind {
    Where(Expr),
    Select(Vec<Column>),
    SortBy(Vec<SortKey>),
    GroupBy(Vec<Expr>),
    Take(Expr),
    First,
    Single,
    Count,
    Show(Show),
}

impl StageKind {
    /// The stage's keyword as written (`where`, `sort by`, `show`).
    #[must_use]
    pub fn keyword(&self) -> &'static str {
        match self {
            StageKind::Where(_) => "where",
            StageKind::Select(_) => "select",
            StageKind::SortBy(_) => "sort by",
            StageKind::GroupBy(_) => "group by",
            StageKind::Take(_) => "take",
            StageKind::First => "first",
            StageKind::Single => "single",
            StageKind::Count => "count",
            StageKind::Show(_) => "show",
        }
    }
}

/// A projected column: `expr` or `expr as alias`.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub expr: Expr,
    pub alias: Option<Ident>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub expr: Expr,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Show {
    /// `show table(col, col)`; no columns: every field of the rows.
    Table(Vec<Column>),
    /// `show list(col, col)`: one `name: value` block per row.
    List(Vec<Column>),
    Json,
}
