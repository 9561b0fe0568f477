//! kds standard library: one module per command, each a structured result ([`Report`]) plus
//! a WinDbg-faithful text renderer, over the shared [`Debugger`] state.

pub mod bugcheck;
pub mod debugger;
pub mod dt;
pub mod error;
mod fields;
pub mod format;
pub mod info;
pub mod lm;
pub mod memory;
mod pattern;
pub mod peb;
pub mod process;
pub mod pte;
pub mod registers;
pub mod report;
pub mod stack;
pub mod switch;
pub mod symbols;
pub mod thread;
pub mod vm;
pub mod xsym;

pub use debugger::Debugger;
pub use error::CommandError;
pub use report::{Rendered, Report};
