//! Statement layout: where each statement starts and ends, before any grammar runs.
//!
//! One linear pass over the bytes finds statement boundaries (a newline or `;`), except where a
//! statement goes on: inside `(` or `[`, after a line ending in `|`, and before a line starting
//! with `|`, `&&`, `{` or `else`. It skips strings and `#` comments, pairs brackets,
//! bounds their depth, and finds the `{ ... }` bodies of sections. It writes a *flat* copy of the
//! source, the same length byte for byte, in which comments and the newlines that continue a
//! statement are blanked, so the grammar sees each statement as one line and every span it
//! reports is a span of the original text.
//!
//! Problems found here (unclosed strings and brackets, a closer with no opener, nesting deeper
//! than the limit) are reported once and mark the statement *poisoned*: the parser skips it and
//! goes on with the next, so one bad line does not hide the next.

use crate::ast::Span;
use crate::diagnostics::{Code, Diagnostic};

/// Deepest `(`/`[` nesting inside one statement.
pub const MAX_BRACKET_DEPTH: usize = 64;
/// Deepest `section { ... }` nesting.
pub const MAX_SECTION_DEPTH: usize = 32;
/// How many times an unclosed bracket at the end of the file may send the scan back to the line
/// that opened it (each retry rescans the rest of the file, so this bounds the work).
const MAX_REWINDS: usize = 8;

#[derive(Debug)]
pub(crate) enum Item {
    Stmt {
        span: Span,
        poisoned: bool,
    },
    Block {
        /// The text before `{`, trimmed (empty when there is none).
        head: Span,
        head_poisoned: bool,
        open: usize,
        body: Vec<Item>,
        /// Offset of the closing `}`, if there is one.
        close: Option<usize>,
    },
}

#[derive(Debug)]
pub(crate) struct Layout {
    pub flat: String,
    pub items: Vec<Item>,
    pub diagnostics: Vec<Diagnostic>,
}

struct Frame {
    head: Span,
    head_poisoned: bool,
    open: usize,
    saved: Vec<Item>,
    /// Beyond the depth limit: its statements are dropped, and so is the block.
    discard: bool,
}

#[derive(Default)]
struct Current {
    start: Option<usize>,
    brackets: Vec<(u8, usize)>,
    /// Openers past `MAX_BRACKET_DEPTH`, counted but not recorded.
    overflow: usize,
    /// Where the nesting first went past the limit.
    too_deep_at: Option<usize>,
    poisoned: bool,
    last: u8,
    diags_at_start: usize,
}

struct Scanner<'a> {
    src: &'a [u8],
    flat: Vec<u8>,
    pos: usize,
    items: Vec<Item>,
    frames: Vec<Frame>,
    cur: Current,
    diags: Vec<Diagnostic>,
    rewinds: usize,
    depth_reported: bool,
    sections_reported: bool,
}

fn closer_of(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        _ => b'}',
    }
}

fn show(b: u8) -> char {
    char::from(b)
}

/// Cuts `source` into statements; see the module documentation.
pub(crate) fn scan(source: &str) -> Layout {
    let mut s = Scanner {
        src: source.as_bytes(),
        flat: source.as_bytes().to_vec(),
        pos: 0,
        items: Vec::new(),
        frames: Vec::new(),
        cur: Current::default(),
        diags: Vec::new(),
        rewinds: MAX_REWINDS,
        depth_reported: false,
        sections_reported: false,
    };
    s.run();
    let Scanner {
        flat, items, diags, ..
    } = s;
    // Blanking replaces whole characters (a comment runs to the end of its line) with ASCII
    // spaces, so the copy is still UTF-8; fall back to the original if that ever failed.
    let flat = String::from_utf8(flat).unwrap_or_else(|_| source.to_string());
    Layout {
        flat,
        items,
        diagnostics: diags,
    }
}

impl Scanner<'_> {
    fn run(&mut self) {
        loop {
            while self.pos < self.src.len() {
                self.step();
            }
            if self.cur.start.is_some() && !self.cur.brackets.is_empty() && self.rewinds > 0 {
                self.rewind();
                continue;
            }
            break;
        }
        self.end_statement(self.src.len());
        while let Some(frame) = self.frames.pop() {
            if !frame.discard {
                self.diags.push(
                    Diagnostic::error(
                        Code::Delimiter,
                        "unclosed `{`",
                        frame.open..frame.open + 1,
                        "this `{` is never closed",
                    )
                    .with_help("close the section body with `}`"),
                );
            }
            self.close_frame(frame, None);
        }
    }

    fn step(&mut self) {
        let b = self.src[self.pos];
        match b {
            b' ' | b'\t' | b'\r' => self.pos += 1,
            b'#' => {
                let end = self.line_end(self.pos);
                self.blank(self.pos, end);
                self.pos = end;
            }
            b'\n' => self.newline(),
            b';' if self.cur.brackets.is_empty() && self.cur.overflow == 0 => {
                self.end_statement(self.pos);
                self.pos += 1;
            }
            b'"' => self.string(),
            b'(' | b'[' => {
                self.begin();
                if self.cur.brackets.len() >= MAX_BRACKET_DEPTH {
                    if self.cur.overflow == 0 && !self.depth_reported {
                        self.cur.too_deep_at = Some(self.pos);
                        self.too_deep(self.pos);
                    }
                    self.cur.overflow += 1;
                    self.cur.poisoned = true;
                } else {
                    self.cur.brackets.push((b, self.pos));
                }
                self.cur.last = b;
                self.pos += 1;
            }
            b')' | b']' => {
                self.begin();
                self.close_bracket(b);
                self.cur.last = b;
                self.pos += 1;
            }
            b'{' if self.cur.brackets.is_empty() && self.cur.overflow == 0 => self.open_block(),
            // A `}` inside brackets: the bracket was left open (a `}` never belongs in an
            // expression), so end its statement where the bracket's line ends, as at the end
            // of the file, and let this `}` close its section.
            b'}' if !self.cur.brackets.is_empty() && self.rewinds > 0 => self.rewind(),
            b'}' => self.close_block(),
            _ => {
                self.begin();
                self.cur.last = b;
                self.pos += 1;
            }
        }
    }

    fn begin(&mut self) {
        if self.cur.start.is_none() {
            self.cur.start = Some(self.pos);
            self.cur.diags_at_start = self.diags.len();
        }
    }

    fn line_end(&self, from: usize) -> usize {
        self.src[from..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(self.src.len(), |i| from + i)
    }

    fn blank(&mut self, from: usize, to: usize) {
        for b in &mut self.flat[from..to] {
            *b = b' ';
        }
    }

    fn newline(&mut self) {
        let open = !self.cur.brackets.is_empty() || self.cur.overflow > 0;
        if self.cur.start.is_some() && (open || self.cur.last == b'|') {
            self.blank(self.pos, self.pos + 1);
            self.pos += 1;
            return;
        }
        if self.cur.start.is_some() {
            // A following line that starts with `|`, `&&`, `{` or `else` continues this
            // statement.
            let (next, blanks) = self.next_significant(self.pos);
            if next.is_some_and(|i| self.continues(i)) {
                for (from, to) in blanks {
                    self.blank(from, to);
                }
                self.pos = next.unwrap_or(self.src.len());
                return;
            }
            self.end_statement(self.pos);
        }
        self.pos += 1;
    }

    /// Whether a line whose first significant byte is at `i` continues the statement before.
    fn continues(&self, i: usize) -> bool {
        let rest = &self.src[i..];
        let word = |w: &[u8]| {
            rest.starts_with(w)
                && !rest
                    .get(w.len())
                    .is_some_and(|&c| c == b'_' || c.is_ascii_alphanumeric())
        };
        rest.starts_with(b"|") || rest.starts_with(b"&&") || rest.starts_with(b"{") || word(b"else")
    }

    /// The next byte that is not blank, a newline or in a comment, with the ranges to blank to
    /// join it to the current line.
    fn next_significant(&self, from: usize) -> (Option<usize>, Vec<(usize, usize)>) {
        let mut i = from;
        let mut blanks = Vec::new();
        while i < self.src.len() {
            match self.src[i] {
                b' ' | b'\t' | b'\r' => i += 1,
                b'\n' => {
                    blanks.push((i, i + 1));
                    i += 1;
                }
                b'#' => {
                    let end = self.line_end(i);
                    blanks.push((i, end));
                    i = end;
                }
                _ => return (Some(i), blanks),
            }
        }
        (None, blanks)
    }

    fn string(&mut self) {
        self.begin();
        let start = self.pos;
        let mut i = self.pos + 1;
        while i < self.src.len() {
            match self.src[i] {
                b'"' => {
                    self.cur.last = b'"';
                    self.pos = i + 1;
                    return;
                }
                b'\n' => break,
                b'\\' if self.src.get(i + 1).is_some_and(|&c| c != b'\n') => i += 2,
                _ => i += 1,
            }
        }
        let end = i.min(self.src.len());
        self.diags.push(
            Diagnostic::error(
                Code::Delimiter,
                "unclosed string literal",
                start..start + 1,
                "this string is never closed",
            )
            .with_label(end..end, "the line ends here")
            .with_help(
                "close the string with `\"` on the same line; write `\\\"` for a quote inside it",
            ),
        );
        self.cur.poisoned = true;
        self.cur.last = b'"';
        self.pos = end;
    }

    fn too_deep(&mut self, at: usize) {
        if self.depth_reported {
            return;
        }
        self.depth_reported = true;
        self.push_too_deep(at);
    }

    fn push_too_deep(&mut self, at: usize) {
        self.diags.push(
            Diagnostic::error(
                Code::TooDeep,
                format!("nesting deeper than {MAX_BRACKET_DEPTH} brackets"),
                at..at + 1,
                "too deep from here",
            )
            .with_help("split the expression with `let`"),
        );
    }

    fn close_bracket(&mut self, b: u8) {
        if self.cur.overflow > 0 {
            self.cur.overflow -= 1;
            return;
        }
        let Some(&(open, at)) = self.cur.brackets.last() else {
            self.diags.push(Diagnostic::error(
                Code::Delimiter,
                format!("unmatched `{}`", show(b)),
                self.pos..self.pos + 1,
                "no bracket to close here",
            ));
            self.cur.poisoned = true;
            return;
        };
        if closer_of(open) == b {
            self.cur.brackets.pop();
            return;
        }
        self.diags.push(
            Diagnostic::error(
                Code::Delimiter,
                format!("mismatched `{}`", show(b)),
                self.pos..self.pos + 1,
                format!("expected `{}` here", show(closer_of(open))),
            )
            .with_label(at..at + 1, format!("to close this `{}`", show(open))),
        );
        self.cur.poisoned = true;
        // Resynchronise on the opener this closer matches, if any; else take it as a typo for
        // the right closer.
        let matching = self
            .cur
            .brackets
            .iter()
            .rposition(|&(o, _)| closer_of(o) == b);
        let keep = matching.unwrap_or(self.cur.brackets.len() - 1);
        self.cur.brackets.truncate(keep);
    }

    fn unclosed(&mut self) {
        if let Some(&(open, at)) = self.cur.brackets.first() {
            self.diags.push(
                Diagnostic::error(
                    Code::Delimiter,
                    format!("unclosed `{}`", show(open)),
                    at..at + 1,
                    format!("this `{}` is never closed", show(open)),
                )
                .with_help(format!(
                    "add `{}` where the expression ends",
                    show(closer_of(open))
                )),
            );
            self.cur.poisoned = true;
        }
        self.cur.brackets.clear();
        self.cur.overflow = 0;
    }

    /// An unclosed bracket ran to the end of the file: end its statement at the end of the line
    /// that opened it, and scan the rest again as statements of their own.
    fn rewind(&mut self) {
        self.rewinds -= 1;
        let Some(&(_, at)) = self.cur.brackets.first() else {
            return;
        };
        let end = self.line_end(at);
        self.diags.truncate(self.cur.diags_at_start);
        if let Some(deep) = self.cur.too_deep_at {
            self.push_too_deep(deep);
        }
        self.unclosed();
        self.flat[end..].copy_from_slice(&self.src[end..]);
        self.end_statement(end);
        self.pos = end;
    }

    fn end_statement(&mut self, end: usize) {
        if !self.cur.brackets.is_empty() {
            self.unclosed();
        }
        let cur = std::mem::take(&mut self.cur);
        if let Some(start) = cur.start {
            let span = self.trim(start, end);
            if !span.is_empty() && !self.frames.last().is_some_and(|f| f.discard) {
                self.items.push(Item::Stmt {
                    span,
                    poisoned: cur.poisoned,
                });
            }
        }
    }

    fn trim(&self, start: usize, end: usize) -> Span {
        let text = &self.flat[start..end];
        let lead = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let trail = text[lead..]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        start + lead..end - trail
    }

    fn open_block(&mut self) {
        let open = self.pos;
        let (head, head_poisoned) = match self.cur.start {
            Some(start) => (self.trim(start, open), self.cur.poisoned),
            None => (open..open, false),
        };
        self.cur = Current::default();
        let parent_discarded = self.frames.last().is_some_and(|f| f.discard);
        let too_deep = self.frames.len() >= MAX_SECTION_DEPTH;
        if too_deep && !self.sections_reported {
            self.sections_reported = true;
            self.diags.push(Diagnostic::error(
                Code::TooDeep,
                format!("sections nested deeper than {MAX_SECTION_DEPTH}"),
                open..open + 1,
                "too deep from here",
            ));
        }
        self.frames.push(Frame {
            head,
            head_poisoned,
            open,
            saved: std::mem::take(&mut self.items),
            discard: too_deep || parent_discarded,
        });
        self.pos += 1;
    }

    fn close_block(&mut self) {
        let at = self.pos;
        self.end_statement(at);
        self.pos += 1;
        match self.frames.pop() {
            Some(frame) => self.close_frame(frame, Some(at)),
            None => self.diags.push(
                Diagnostic::error(
                    Code::Delimiter,
                    "unmatched `}`",
                    at..at + 1,
                    "no section body to close here",
                )
                .with_help("remove it, or open the section with `section \"title\" {`"),
            ),
        }
    }

    fn close_frame(&mut self, frame: Frame, close: Option<usize>) {
        let body = std::mem::replace(&mut self.items, frame.saved);
        if frame.discard {
            return;
        }
        self.items.push(Item::Block {
            head: frame.head,
            head_poisoned: frame.head_poisoned,
            open: frame.open,
            body,
            close,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(src: &str) -> Vec<&str> {
        let l = scan(src);
        l.items
            .iter()
            .filter_map(|i| match i {
                Item::Stmt { span, .. } => Some(&src[span.clone()]),
                Item::Block { .. } => None,
            })
            .collect()
    }

    #[test]
    fn newlines_and_semicolons_end_statements() {
        assert_eq!(spans("!vm\n lm ; k  # stack\n\n"), ["!vm", "lm", "k"]);
    }

    #[test]
    fn brackets_and_pipes_continue() {
        let src = "let x = f(1,\n 2)\nthreads\n  | count\nprocesses |\n show";
        assert_eq!(
            spans(src),
            [
                "let x = f(1,\n 2)",
                "threads\n  | count",
                "processes |\n show"
            ]
        );
        let l = scan(src);
        assert!(!l.flat.contains("\n  |"));
        assert_eq!(l.flat.len(), src.len());
    }

    #[test]
    fn comments_are_blanked_but_not_in_strings() {
        let l = scan("let s = \"a # b\" # note\n");
        assert_eq!(l.flat, "let s = \"a # b\"       \n");
    }

    #[test]
    fn sections_nest() {
        let l = scan("section \"a\" {\n !vm\n section \"b\" { k }\n}\nlm");
        assert_eq!(l.items.len(), 2);
        match &l.items[0] {
            Item::Block { body, close, .. } => {
                assert_eq!(body.len(), 2);
                assert!(close.is_some());
            }
            Item::Stmt { .. } => panic!("expected a block"),
        }
        assert!(l.diagnostics.is_empty());
    }

    #[test]
    fn unclosed_bracket_rewinds_to_its_line() {
        let src = "let x = (1 +\n!vm\nlm";
        let l = scan(src);
        assert_eq!(l.diagnostics.len(), 1);
        assert_eq!(l.diagnostics[0].message, "unclosed `(`");
        assert_eq!(spans(src), ["let x = (1 +", "!vm", "lm"]);
    }

    #[test]
    fn deep_nesting_is_reported_once() {
        let src = "(".repeat(100_000);
        let l = scan(&src);
        assert!(l.diagnostics.iter().any(|d| d.code == Code::TooDeep));
        assert!(l.diagnostics.len() <= 2);
    }
}
