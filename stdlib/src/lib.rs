//! kds standard library: one module per command, each a structured result plus a
//! WinDbg-faithful text renderer.

pub mod bugcheck;
pub mod format;
pub mod info;
pub mod vm;
