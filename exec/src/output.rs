//! What a run produces, in order, and how it reads as text (for people) or JSON (for
//! machines). Text follows WinDbg where a command has a WinDbg form; tables are plain columns.

use kds_lang::ast::Severity;
use kds_runtime::model::Value;
use serde::Serialize;
use std::fmt::Write as _;

/// One piece of output.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputItem {
    /// Text a command printed, as WinDbg would print it.
    Command {
        command: String,
        text: String,
        /// The command's structured result (`--format json`), when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<serde_json::Value>,
    },
    /// A table of rows (`show table`, or a list of rows shown by default).
    Table {
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
    },
    /// `show list`: one block of `name: value` lines per row.
    List {
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
    },
    /// `show json`, or a single value.
    Value {
        value: Value,
    },
    /// An `expect`/`check` whose condition did not hold.
    Expectation {
        severity: SeverityName,
        message: String,
        line: usize,
    },
    SectionStart {
        title: String,
    },
    SectionEnd {
        title: String,
    },
    /// A problem that did not stop the run (a torn list, an unreadable field).
    Warning {
        message: String,
    },
}

/// Severity as it appears in output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeverityName {
    Note,
    Warn,
    Fail,
}

impl From<Severity> for SeverityName {
    fn from(s: Severity) -> SeverityName {
        match s {
            Severity::Note => SeverityName::Note,
            Severity::Warn => SeverityName::Warn,
            Severity::Fail => SeverityName::Fail,
        }
    }
}

impl SeverityName {
    fn label(self) -> &'static str {
        match self {
            SeverityName::Note => "NOTE",
            SeverityName::Warn => "WARNING",
            SeverityName::Fail => "FAILED",
        }
    }
}

/// Render items as text.
#[must_use]
pub fn render_text(items: &[OutputItem]) -> String {
    let mut out = String::new();
    for item in items {
        render_item(&mut out, item);
    }
    out
}

fn render_item(out: &mut String, item: &OutputItem) {
    match item {
        OutputItem::Command { command, text, .. } => {
            let _ = writeln!(out, "kd> {command}");
            out.push_str(text);
            if !text.ends_with('\n') && !text.is_empty() {
                out.push('\n');
            }
        }
        OutputItem::Table { columns, rows } => render_table(out, columns, rows),
        OutputItem::List { columns, rows } => {
            let width = columns.iter().map(String::len).max().unwrap_or(0);
            for row in rows {
                for (name, value) in columns.iter().zip(row) {
                    let _ = writeln!(out, "{name:>width$}: {}", cell(value));
                }
                out.push('\n');
            }
        }
        OutputItem::Value { value } => match value {
            Value::Record(_) | Value::List(_) => {
                let json = serde_json::to_string_pretty(value).unwrap_or_default();
                let _ = writeln!(out, "{json}");
            }
            other => {
                let _ = writeln!(out, "{other}");
            }
        },
        OutputItem::Expectation {
            severity,
            message,
            line,
        } => {
            let _ = writeln!(out, "{}: {message} (line {line})", severity.label());
        }
        OutputItem::SectionStart { title } => {
            let _ = writeln!(out, "\n== {title} ==");
        }
        OutputItem::SectionEnd { .. } => {}
        OutputItem::Warning { message } => {
            let _ = writeln!(out, "WARNING: {message}");
        }
    }
}

/// A value as a table cell: one line.
fn cell(value: &Value) -> String {
    match value {
        Value::List(items) => {
            let parts: Vec<String> = items.iter().map(cell).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string().replace('\n', " "),
    }
}

fn render_table(out: &mut String, columns: &[String], rows: &[Vec<Value>]) {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(|s| s.chars().count())
                .chain(std::iter::once(c.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |out: &mut String, parts: &[String]| {
        let mut text = String::new();
        for (i, part) in parts.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            if i + 1 == parts.len() {
                text.push_str(part);
            } else {
                let pad = width.saturating_sub(part.chars().count());
                text.push_str(part);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(out, columns);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(out, &rule);
    for row in &cells {
        line(out, row);
    }
    let _ = writeln!(out, "({} rows)", rows.len());
}

/// Render items as one JSON document.
#[must_use]
pub fn render_json(items: &[OutputItem]) -> String {
    serde_json::to_string_pretty(items).unwrap_or_default()
}

/// Render items as JSON lines, one item a line.
#[must_use]
pub fn render_jsonl(items: &[OutputItem]) -> String {
    let mut out = String::new();
    for item in items {
        let _ = writeln!(out, "{}", serde_json::to_string(item).unwrap_or_default());
    }
    out
}
