//! Diagnostics: what went wrong, where, and how to fix it.
//!
//! A [`Diagnostic`] labels byte spans of the playbook, says what was expected and, where the fix
//! is likely, offers one as `help`. It implements [`miette::Diagnostic`], so the CLI can print it
//! with any miette handler; [`render`] gives the plain-text form used by `kds check` snapshots.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};

use crate::ast::Span;

pub use miette::Severity;

/// What kind of problem a diagnostic reports; printed as its miette code (`kds::syntax`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Code {
    /// The statement does not follow the grammar.
    Syntax,
    /// A `(`, `[`, `{` or string that is never closed, or a closer with no opener.
    Delimiter,
    /// Brackets, sections or an expression nested deeper than the parser accepts.
    TooDeep,
    /// A literal that is malformed: number too large, unknown string escape, unknown type.
    Literal,
    /// A WinDbg command the registry does not know.
    UnknownCommand,
    /// A command argument of the wrong shape, a missing or an extra one.
    CommandArgument,
    /// `$name` with no `param` or `let` of that name.
    UnknownVariable,
    /// A bare name that is neither a binding nor a known collection.
    UnknownName,
    /// A `let` name used before the `let`.
    UseBeforeDefinition,
    /// A second `param` with the same name.
    DuplicateParam,
    /// A `param` whose default does not fit its type, or a bad `--set` value.
    ParamType,
    /// A pipeline stage that is unknown, misplaced or missing what it needs.
    Pipeline,
    /// A bare word in a command that names a binding (`p` where `$p` was meant).
    BareBinding,
    /// A `use` of something that is neither `.rhai` nor `.kds`.
    Use,
    /// More problems than are worth listing.
    TooManyErrors,
}

impl Code {
    /// The miette code, `kds::<kind>`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "kds::syntax",
            Code::Delimiter => "kds::delimiter",
            Code::TooDeep => "kds::too_deep",
            Code::Literal => "kds::literal",
            Code::UnknownCommand => "kds::unknown_command",
            Code::CommandArgument => "kds::command_argument",
            Code::UnknownVariable => "kds::unknown_variable",
            Code::UnknownName => "kds::unknown_name",
            Code::UseBeforeDefinition => "kds::use_before_definition",
            Code::DuplicateParam => "kds::duplicate_param",
            Code::ParamType => "kds::param_type",
            Code::Pipeline => "kds::pipeline",
            Code::BareBinding => "kds::bare_binding",
            Code::Use => "kds::use",
            Code::TooManyErrors => "kds::too_many_errors",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One labelled span of a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub text: String,
    /// The span the diagnostic is about (one per diagnostic); others give context
    /// ("opened here", "first declared here").
    pub primary: bool,
}

/// A problem found in a playbook, with the spans it is about.
#[derive(Clone, thiserror::Error)]
#[error("{message}")]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    /// The first label is the primary one.
    pub labels: Vec<Label>,
    pub help: Option<String>,
    source_code: Option<Arc<Attached>>,
}

/// The text a diagnostic renders against: the whole playbook, or, for a diagnostic on a very
/// long line, an excerpt of that line around the primary span (miette draws every column of a
/// highlighted line, and cannot draw past column 65535).
#[derive(Debug)]
pub(crate) struct Attached {
    code: NamedSource<String>,
    /// The part of the playbook `code` holds (all of it, or the excerpt).
    window: Span,
}

/// Lines longer than this are shown as an excerpt around the problem.
const LONG_LINE: usize = 400;
/// Bytes of context on each side of the span in an excerpt.
const EXCERPT_CONTEXT: usize = 60;

impl Attached {
    pub(crate) fn whole(name: &str, source: &str) -> Arc<Attached> {
        // miette draws no label at the very end of a text that does not end in a newline
        // ("expected an expression here" after `let x = 1 +` at the end of the file); a
        // trailing blank gives it a place.
        let mut text = source.to_string();
        if !text.ends_with('\n') {
            text.push(' ');
        }
        Arc::new(Attached {
            code: NamedSource::new(name, text),
            window: 0..source.len(),
        })
    }
}

fn line_bounds(source: &str, at: usize) -> Span {
    let at = floor_boundary(source, at);
    let start = source[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = source[at..].find('\n').map_or(source.len(), |i| at + i);
    start..end
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

impl Diagnostic {
    /// An error about `span`, labelled `label`.
    #[must_use]
    pub fn error(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            labels: vec![Label {
                span,
                text: label.into(),
                primary: true,
            }],
            help: None,
            source_code: None,
        }
    }

    /// A warning about `span`, labelled `label`.
    #[must_use]
    pub fn warning(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message, span, label)
        }
    }

    /// Adds a secondary label.
    #[must_use]
    pub fn with_label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: text.into(),
            primary: false,
        });
        self
    }

    /// Sets the help line: the likely fix.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Attaches the playbook text, so that the diagnostic renders on its own (as a
    /// `miette::Report`, for example). The spans stay those of the whole text.
    #[must_use]
    pub fn with_source(self, name: &str, source: &str) -> Self {
        let whole = Attached::whole(name, source);
        self.with_shared_source(&whole)
    }

    /// Attaches an already shared source (one copy for all diagnostics of a file), or an
    /// excerpt of it when the diagnostic sits on a very long line.
    #[must_use]
    pub(crate) fn with_shared_source(mut self, whole: &Arc<Attached>) -> Self {
        let source = &whole.code.inner()[..whole.window.end];
        let primary = self.span();
        let too_long = self.labels.iter().any(|l| {
            let line = line_bounds(source, l.span.start);
            line.len() > LONG_LINE
        });
        if !too_long || primary.start > source.len() {
            self.source_code = Some(Arc::clone(whole));
            return self;
        }
        let line = line_bounds(source, primary.start);
        let start = floor_boundary(
            source,
            primary
                .start
                .saturating_sub(EXCERPT_CONTEXT)
                .max(line.start),
        );
        let shown_end = primary.end.min(primary.start + 2 * EXCERPT_CONTEXT);
        let end = ceil_boundary(source, (shown_end + EXCERPT_CONTEXT).min(line.end)).max(start);
        let line_number = source[..line.start].matches('\n').count() + 1;
        let column = source[line.start..start].chars().count() + 1;
        let name = format!(
            "{}, line {line_number} from column {column} (excerpt of a long line)",
            whole.code.name()
        );
        self.source_code = Some(Arc::new(Attached {
            // The trailing blank gives a label at the very end something to point at.
            code: NamedSource::new(name, format!("{} ", &source[start..end])),
            window: start..end,
        }));
        self
    }

    /// The span the diagnostic is about.
    #[must_use]
    pub fn span(&self) -> Span {
        self.labels
            .iter()
            .find(|l| l.primary)
            .or(self.labels.first())
            .map_or(0..0, |l| l.span.clone())
    }

    /// Whether this is an error (as opposed to a warning or advice).
    #[must_use]
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Debug for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Diagnostic")
            .field("severity", &self.severity)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("labels", &self.labels)
            .field("help", &self.help)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Diagnostic {
    fn eq(&self, other: &Self) -> bool {
        self.severity == other.severity
            && self.code == other.code
            && self.message == other.message
            && self.labels == other.labels
            && self.help == other.help
    }
}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code.as_str()))
    }

    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source_code
            .as_deref()
            .map(|s| &s.code as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let window = self.source_code.as_ref().map(|a| a.window.clone());
        let labels = self.labels.iter().filter_map(move |l| {
            // Spans are of the whole playbook; shift them into the excerpt, if there is one,
            // leaving out those that fall outside it.
            let (start, end) = match &window {
                Some(w) if w.start > 0 || l.span.end > w.end => {
                    if l.span.start > w.end || l.span.end < w.start {
                        return None;
                    }
                    let start = l.span.start.max(w.start) - w.start;
                    let end = l.span.end.min(w.end) - w.start;
                    (start, end)
                }
                _ => (l.span.start, l.span.end),
            };
            let text = (!l.text.is_empty()).then(|| l.text.clone());
            let span = (start, end.saturating_sub(start));
            Some(if l.primary {
                LabeledSpan::new_primary_with_span(text, span)
            } else {
                LabeledSpan::new_with_span(text, span)
            })
        });
        Some(Box::new(labels))
    }
}

/// Renders diagnostics for the source `name` as plain text (no colour, unicode box drawing,
/// 100 columns), one report after another. This is what `kds check` prints and what the
/// snapshot tests compare.
///
/// ```
/// let source = "!proces 0 0\n";
/// let text = kds_lang::render(&kds_lang::lint(source, "triage.kds"), "triage.kds", source);
/// assert!(text.contains("unknown command `!proces`"));
/// assert!(text.contains("did you mean `!process`?"));
/// ```
#[must_use]
pub fn render(diagnostics: &[Diagnostic], name: &str, source: &str) -> String {
    let shared = Attached::whole(name, source);
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for d in diagnostics {
        let d = d.clone().with_shared_source(&shared);
        let mut one = String::new();
        if handler.render_report(&mut one, &d).is_err() {
            // Rendering into a String cannot fail; keep the message if it somehow does.
            one = format!("{}: {}\n", d.code, d.message);
        }
        out.push_str(&one);
    }
    out
}

/// Keeps the diagnostics in source order (stable for equal positions) and at most `max` of
/// them, followed by a note saying how many were left out.
pub(crate) fn finish(mut diagnostics: Vec<Diagnostic>, max: usize) -> Vec<Diagnostic> {
    diagnostics.sort_by_key(|d| {
        let s = d.span();
        (s.start, s.end)
    });
    if diagnostics.len() > max {
        let left = diagnostics.len() - max;
        let at = diagnostics[max].span();
        diagnostics.truncate(max);
        diagnostics.push(Diagnostic {
            severity: Severity::Advice,
            ..Diagnostic::error(
                Code::TooManyErrors,
                format!("{left} more problems not shown"),
                at.start..at.start,
                "stopped listing here",
            )
        });
    }
    diagnostics
}
