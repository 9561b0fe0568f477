//! What every command returns: a structured result that serializes for `--format json` and
//! renders as the text WinDbg prints.

use serde::Serialize;

/// A command's structured result.
pub trait Report: Serialize {
    /// Append the WinDbg-style text.
    fn render(&self, out: &mut String);
}

/// A result rendered both ways, ready for output.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: String,
    pub data: serde_json::Value,
}

impl Rendered {
    /// Render `report` as text and as JSON data.
    #[must_use]
    pub fn of<R: Report>(report: &R) -> Rendered {
        let mut text = String::new();
        report.render(&mut text);
        Rendered {
            text,
            data: serde_json::to_value(report).unwrap_or(serde_json::Value::Null),
        }
    }
}
