//! Errors while running a playbook, each tied to the span of the source that caused it.

use kds_lang::ast::Span;
use kds_runtime::model::ModelError;
use thiserror::Error;

/// What went wrong, and whether the playbook or the target is to blame: the CLI turns the
/// first into exit code 2 and the second into 3.
#[derive(Debug, Clone, Error)]
pub enum ExecError {
    /// The playbook asked for something that does not make sense (unknown name, wrong type,
    /// `single` over three rows).
    #[error("{message}")]
    Script { message: String, span: Span },
    /// The target could not give what was asked (memory not in the dump, symbols missing).
    #[error("{message}")]
    Target { message: String, span: Span },
}

impl ExecError {
    pub fn script(message: impl Into<String>, span: &Span) -> ExecError {
        ExecError::Script {
            message: message.into(),
            span: span.clone(),
        }
    }

    pub fn target(message: impl Into<String>, span: &Span) -> ExecError {
        ExecError::Target {
            message: message.into(),
            span: span.clone(),
        }
    }

    /// A model error: reading failed (target) unless the name or type was wrong (script).
    pub fn from_model(error: &ModelError, span: &Span) -> ExecError {
        let message = error.to_string();
        if is_script_mistake(error) {
            ExecError::script(message, span)
        } else {
            ExecError::target(message, span)
        }
    }

    #[must_use]
    pub fn span(&self) -> &Span {
        match self {
            ExecError::Script { span, .. } | ExecError::Target { span, .. } => span,
        }
    }

    #[must_use]
    pub fn is_target_error(&self) -> bool {
        matches!(self, ExecError::Target { .. })
    }
}

fn is_script_mistake(error: &ModelError) -> bool {
    matches!(
        error,
        ModelError::Symbol(_)
            | ModelError::NoField { .. }
            | ModelError::NotAStructure { .. }
            | ModelError::Untyped { .. }
            | ModelError::Unsupported { .. }
    )
}
