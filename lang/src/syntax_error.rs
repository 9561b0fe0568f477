//! Pest's "expected one of these rules" in human terms: what was expected, after what, and
//! how to write it.

use pest::error::{Error, ErrorVariant, InputLocation};

use crate::commands;
use crate::diagnostics::{Code, Diagnostic};
use crate::grammar::Rule;
use crate::parse::{first_word, StmtRule};
use crate::suggest;

const STAGES: [&str; 9] = [
    "where", "select", "sort", "group", "take", "first", "single", "count", "show",
];

/// What a rule means to the user, when it is expected.
fn describe(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::operand | Rule::expr | Rule::or_chain => "an expression",
        Rule::string => "a string",
        Rule::ident => "a name",
        Rule::assign => "`=`",
        Rule::colon => "`:`",
        Rule::rparen => "`)`",
        Rule::rbracket => "`]`",
        Rule::lparen => "`(`",
        Rule::comma => "`,`",
        Rule::type_name => "a type (string, int, address, bool, list<T>)",
        Rule::type_close => "`>`",
        Rule::field_name => "a field name",
        Rule::severity => "a severity (`note`, `warn` or `fail`)",
        Rule::kw_by => "`by`",
        Rule::kw_else => "`else`",
        Rule::kw_as => "`as`",
        Rule::sort_dir => "`asc` or `desc`",
        Rule::show_table | Rule::kw_table => "`table(...)`",
        Rule::show_list | Rule::kw_list => "`list(...)`",
        Rule::show_json | Rule::kw_json => "`json`",
        Rule::EOI => "the end of the statement",
        Rule::cmd_name => "a command name",
        _ => return None,
    })
}

/// Rules that only say "an operator could go on here": not worth listing when something more
/// specific was expected.
fn is_continuation(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::field_dot
            | Rule::lbracket
            | Rule::lparen
            | Rule::pipe
            | Rule::op_or
            | Rule::op_and
            | Rule::op_eq
            | Rule::op_ne
            | Rule::op_le
            | Rule::op_ge
            | Rule::op_shl
            | Rule::op_shr
            | Rule::op_lt
            | Rule::op_gt
            | Rule::op_in
            | Rule::op_like
            | Rule::op_bitor
            | Rule::op_bitxor
            | Rule::op_bitand
            | Rule::op_add
            | Rule::op_sub
            | Rule::op_mul
            | Rule::op_div
            | Rule::op_rem
            | Rule::sort_dir
            | Rule::kw_as
            | Rule::show_table
            | Rule::show_list
            | Rule::show_json
    )
}

fn is_ident_byte(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

/// The token starting at `pos` (a word, or one or two symbol characters), as a relative range.
fn token_at(text: &str, pos: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    if pos >= bytes.len() {
        return (pos, pos);
    }
    if is_ident_byte(bytes[pos]) {
        let len = bytes[pos..]
            .iter()
            .take_while(|&&b| is_ident_byte(b))
            .count();
        return (pos, pos + len);
    }
    let two = text.get(pos..pos + 2);
    if matches!(
        two,
        Some("==" | "!=" | "<=" | ">=" | "&&" | "||" | "<<" | ">>")
    ) {
        return (pos, pos + 2);
    }
    let ch = text[pos..].chars().next().map_or(1, char::len_utf8);
    (pos, pos + ch)
}

/// The token that ends just before `pos` (skipping blanks), as a relative range.
fn token_before(text: &str, pos: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let end = bytes[..pos.min(bytes.len())]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())?
        + 1;
    if is_ident_byte(bytes[end - 1]) {
        let start = bytes[..end]
            .iter()
            .rposition(|&b| !is_ident_byte(b))
            .map_or(0, |i| i + 1);
        return Some((start, end));
    }
    let two_start = end.saturating_sub(2);
    if end >= 2
        && matches!(
            text.get(two_start..end),
            Some("==" | "!=" | "<=" | ">=" | "&&" | "||" | "<<" | ">>")
        )
    {
        return Some((two_start, end));
    }
    let start = text[..end].char_indices().last().map_or(0, |(i, _)| i);
    Some((start, end))
}

fn list(items: &[&str]) -> String {
    match items {
        [] => "something else".to_string(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Turns a pest error for the statement `text` (at `offset` in the source, parsed with `rule`)
/// into a diagnostic.
pub(crate) fn translate(e: &Error<Rule>, text: &str, offset: usize, rule: StmtRule) -> Diagnostic {
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    }
    .min(text.len());
    let positives: Vec<Rule> = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { message } => {
            // Pest's own limits (native stack, call budget): say so plainly.
            return Diagnostic::error(
                Code::TooDeep,
                format!("statement too complex to parse ({message})"),
                offset..offset + text.len(),
                "in this statement",
            )
            .with_help("split it into smaller statements with `let`");
        }
    };
    let (fs, fe) = token_at(text, pos);
    let at_end = fs >= text.len();
    let found = if at_end {
        "the end of the statement".to_string()
    } else if &text[fs..fe] == "`" {
        "backtick".to_string()
    } else {
        format!("`{}`", &text[fs..fe])
    };
    let label_span = offset + fs..offset + fe;
    let prev = token_before(text, pos).map(|(s, e)| &text[s..e]);

    if let Some(d) = unknown_stage(text, pos, offset) {
        return d;
    }
    if rule == StmtRule::Expr {
        if let Some(d) = unknown_command(text, pos, offset) {
            return d;
        }
    }

    let wants_expr = positives
        .iter()
        .any(|r| describe(*r) == Some("an expression"));
    let specific: Vec<Rule> = positives
        .iter()
        .copied()
        .filter(|r| !is_continuation(*r) && *r != Rule::EOI)
        .collect();
    let mut expected: Vec<&str> = Vec::new();
    for r in &specific {
        if let Some(d) = describe(*r) {
            if !expected.contains(&d) {
                expected.push(d);
            }
        }
    }

    let (message, label) = if wants_expr {
        let what = match prev {
            Some("expect" | "check" | "where") => "a condition",
            Some("take") => "a count",
            Some("by") => "an expression to sort or group by",
            _ => "an expression",
        };
        let others: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|d| *d != "an expression")
            .collect();
        let what = if others.is_empty() {
            what.to_string()
        } else {
            format!("{what} or {}", list(&others))
        };
        let message = match prev {
            Some(p) => format!("expected {what} after `{p}`, found {found}"),
            None => format!("expected {what}, found {found}"),
        };
        (message, format!("expected {what} here"))
    } else if expected.is_empty() {
        // The statement was complete; something follows it that cannot.
        (
            format!("unexpected {found}"),
            "expected an operator, `|` and a stage, or the end of the statement".to_string(),
        )
    } else {
        let what = list(&expected);
        let message = match prev {
            Some(p) => format!("expected {what} after `{p}`, found {found}"),
            None => format!("expected {what}, found {found}"),
        };
        (message, format!("expected {what}"))
    };

    let mut d = Diagnostic::error(Code::Syntax, message, label_span, label);
    if let Some(help) = help_for(rule, text, fs, fe, prev, &positives) {
        d = d.with_help(help);
    }
    d
}

fn help_for(
    rule: StmtRule,
    text: &str,
    fs: usize,
    fe: usize,
    prev: Option<&str>,
    positives: &[Rule],
) -> Option<String> {
    let found = &text[fs..fe];
    let operator_possible = positives.contains(&Rule::op_eq);
    if found == "=" && operator_possible {
        return Some(if rule == StmtRule::Expr {
            "to bind a name write `let name = ...`; to compare use `==`".to_string()
        } else {
            "to compare use `==`".to_string()
        });
    }
    let is_operator = matches!(
        found,
        "==" | "!="
            | "<"
            | "<="
            | ">"
            | ">="
            | "&&"
            | "||"
            | "+"
            | "-"
            | "*"
            | "/"
            | "%"
            | "~"
            | "in"
    );
    if is_operator && !operator_possible && ends_in_stage(&text[..fs]) {
        return Some(
            "a pipeline runs to the end of the expression; to compute with its result, \
             put it in parentheses: `(threads | count) < 10`"
                .to_string(),
        );
    }
    if found == "`"
        || (prev.is_some_and(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
            && found.starts_with('`'))
    {
        return Some(
            "numbers in expressions are decimal; write hex with `0x`, as in `0xffffc10a`12345080`"
                .to_string(),
        );
    }
    if prev.is_some_and(|p| p.bytes().next().is_some_and(|b| b.is_ascii_digit()))
        && !found.is_empty()
        && found.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Some(
            "numbers in expressions are decimal; write hex with `0x` (`0x1f`)".to_string(),
        );
    }
    if positives.contains(&Rule::kw_by) {
        let stage = prev.unwrap_or("sort");
        return Some(format!("write `{stage} by <expression>`"));
    }
    Some(
        match rule {
            StmtRule::Let => "a binding is written `let name = <expression>`",
            StmtRule::Param => {
                "a parameter is written `param name: type = default` (either part may be left out)"
            }
            StmtRule::Expect => "write `expect <condition> else note|warn|fail \"message\"`",
            StmtRule::Use => "write `use \"file.rhai\"` or `use \"other.kds\"`",
            StmtRule::Section => "write `section \"title\" { ... }`",
            StmtRule::Command | StmtRule::Expr => return None,
        }
        .to_string(),
    )
}

/// Whether the text has a pipe to a stage keyword in it (a rough test: the grammar has already
/// accepted the text as a pipeline up to here).
fn ends_in_stage(text: &str) -> bool {
    text.match_indices('|').any(|(i, _)| {
        let rest = text[i + 1..].trim_start();
        STAGES.contains(&first_word(rest))
    })
}

/// `processes | wher name == 1`: a `|` followed by a near-miss of a stage keyword.
fn unknown_stage(text: &str, pos: usize, offset: usize) -> Option<Diagnostic> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < pos.min(bytes.len()) {
        match bytes[i] {
            b'"' => in_string = !in_string,
            b'\\' if in_string => i += 1,
            _ => {}
        }
        if !in_string
            && bytes[i] == b'|'
            && bytes.get(i + 1) != Some(&b'|')
            && (i == 0 || bytes[i - 1] != b'|')
        {
            let rest = &text[i + 1..];
            let skip = rest.len() - rest.trim_start().len();
            let word = first_word(rest.trim_start());
            if !word.is_empty() && !STAGES.contains(&word) {
                if let Some(stage) = suggest::closest(word, STAGES) {
                    let start = offset + i + 1 + skip;
                    return Some(
                        Diagnostic::error(
                            Code::Pipeline,
                            format!("unknown pipeline stage `{word}`"),
                            start..start + word.len(),
                            "not a stage",
                        )
                        .with_help(format!(
                            "did you mean `{stage}`? The stages are {}",
                            STAGES.join(", ")
                        )),
                    );
                }
            }
        }
        i += 1;
    }
    None
}

/// `kbb 20` or `proces 0 0`: a statement that starts like a command the registry misspells.
fn unknown_command(text: &str, pos: usize, offset: usize) -> Option<Diagnostic> {
    let word = first_word(text);
    let rest = &text[word.len()..];
    if word.is_empty() || !rest.starts_with([' ', '\t']) {
        return None;
    }
    let next = word.len() + (rest.len() - rest.trim_start().len());
    if pos != next {
        return None;
    }
    let suggestion = commands::suggest(word)?;
    Some(
        Diagnostic::error(
            Code::UnknownCommand,
            format!("unknown command `{word}`"),
            offset..offset + word.len(),
            "not a known command",
        )
        .with_help(format!("did you mean `{suggestion}`?")),
    )
}
