//! The kds runtime: everything that touches a target.
//!
//! - [`target`]: one [`target::Target`] trait for dumps, live KD and snapshots.
//! - [`mmu`]: virtual-to-physical translation (x64 4-level today) with a small cache.
//! - [`symbols`]: one layout model filled from Volatility ISF tables (PDB later), symbol
//!   paths and kernel identification by RSDS record.
//! - [`pe`]: just enough of the PE format, read from target memory, to identify images.
//! - [`discovery`]: the kernel DTB and base of a header-less image, found by validated scans.
//! - [`kernel`]: finding and identifying the kernel of a target.
//! - [`model`]: values and typed views over target memory; processes, threads, modules.
//! - [`symbolize`]: addresses to `module!symbol+0xoff` over kernel and user modules.
//! - [`stack`]: a thread's stack: start context, unwind, symbolized frames.
//! - [`unwind`]: x64 stack walks from `.pdata` unwind data, as the Windows unwinder does them.

pub mod discovery;
pub mod dump_writer;
pub mod kernel;
pub mod mmu;
pub mod model;
pub mod pe;
pub mod session;
pub mod stack;
pub mod symbolize;
pub mod symbols;
pub mod target;
pub mod unwind;
