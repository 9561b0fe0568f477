//! The KDCOM kernel-debugger protocol, as WinDbg speaks it over a serial line.
//!
//! Layers, bottom up: [`packet`] (bytes of one packet), [`framer`] (a byte stream into
//! packets, with resynchronisation), [`api`] (what manipulate and state-change packets carry),
//! [`link`] and [`connection`] (the streams: serial, TCP, unix socket, named pipe), then the two
//! engines: [`host`] (the debugger's side) and [`debuggee`] (a kernel's side, for the emulator).

pub mod api;
pub mod cache;
pub mod connection;
pub mod debuggee;
pub mod fault;
pub mod framer;
pub mod host;
pub mod link;
pub mod packet;
