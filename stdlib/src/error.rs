//! Why a command could not produce its result.

use kds_runtime::model::ModelError;
use thiserror::Error;

/// A command failed as a whole (partial problems become warnings in its result instead).
#[derive(Debug, Error)]
pub enum CommandError {
    /// Reading the target through the object model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The symbol table lacks a type or field the command needs.
    #[error(transparent)]
    Symbols(#[from] kds_runtime::symbols::SymbolError),
    /// The arguments do not make sense for the command (the script is wrong).
    #[error("{0}")]
    Usage(String),
    /// What the command was asked for is not in the target.
    #[error("{0}")]
    NotFound(String),
}

impl CommandError {
    pub(crate) fn usage(message: impl Into<String>) -> CommandError {
        CommandError::Usage(message.into())
    }

    pub(crate) fn not_found(message: impl Into<String>) -> CommandError {
        CommandError::NotFound(message.into())
    }
}
