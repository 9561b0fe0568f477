//! The pest grammar (`kds.pest`), compiled.

#![allow(missing_docs)]

/// The generated parser; [`Rule`] names the grammar's rules.
#[derive(pest_derive::Parser)]
#[grammar = "kds.pest"]
pub(crate) struct KdsParser;
