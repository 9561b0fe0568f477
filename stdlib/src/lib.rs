//! kds standard library: one module per command, each a structured result ([`Report`]) plus
//! a WinDbg-faithful text renderer, over the shared [`Debugger`] state.

pub mod bugcheck;
pub mod debugger;
pub mod error;
mod fields;
pub mod format;
pub mod info;
pub mod process;
pub mod report;
pub mod stack;
pub mod switch;
pub mod thread;

pub use debugger::Debugger;
pub use error::CommandError;
pub use report::{Rendered, Report};
