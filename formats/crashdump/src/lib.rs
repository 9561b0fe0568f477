//! Bytes of Windows kernel crash dumps, 64-bit (`PAGEDU64`) and 32-bit (`PAGEDUMP`): a
//! zero-copy reader and a writer.
//!
//! This crate knows the file format only: no symbols, no paging, no commands (like `minidump`
//! next to `minidump-processor`). Interpreting the pages is the caller's business.
//!
//! Layouts read:
//!
//! | `DumpType` | 64-bit: page area at 0x2000 | 32-bit: page area at 0x1000 | lookup |
//! |---|---|---|---|
//! | 1 full | pages in the order of the header's runs | same (runs of 8 bytes) | binary search over runs |
//! | 2, 5, 6 | `SDMP`/`FDMP` bitmap header + bitmap | same header at 0x1000 | rank index over the bitmap |
//! | 8, 9, 0xA | `SDMP`/`FDMP` bitmap, or `RDMP` page ranges | refused (`RDMP` is 64-bit only) | rank index / binary search |
//!
//! A 32-bit dump's header ([`Header32`], offsets in [`off32`]) is also given widened as a
//! [`Header64`] by [`CrashDump::header`]: pointers zero-extended, never sign-extended;
//! [`CrashDump::bitness`], [`CrashDump::pae_enabled`] and [`CrashDump::context_record`] say
//! what a caller needs to pick the architecture (x86 with or without PAE) and its registers.
//! The 32-bit bitmap header at 0x1000 is placed as Volatility 3's `WindowsCrashDump32Layer`
//! reads it (its `_SUMMARY_DUMP` at `0x1000 * headerpages`); type 2 is read like type 6.
//!
//! Invariants: opening costs one pass over the bitmap or run list and allocates nothing per
//! page; every read of file data is bounds-checked and a malformed file is a [`DumpError`]
//! naming the offset, never a panic; a [`CrashDump`] only exists for a file whose every
//! described page lies inside it.
//!
//! Written files ([`write_dump`], [`write_dump32`]) are read back identically by this crate;
//! 64-bit ones by kdmp-parser 0.8 (types 1, 5, 6), and both widths follow what Volatility 3
//! reads (types 1, 5); see [`writer`] for what those readers require.

mod bitmap_index;
mod bytes;
mod error;
mod header;
mod reader;
mod run_index;
pub mod writer;

pub use error::{DumpError, Found, MissingPage};
pub use header::{
    off, off32, BitmapHeader, BitmapSignature, Bitness, DumpType, Header32, Header64, PhysicalRun,
    RdmpHeader, COMMENT_SIZE, CONTEXT32_SIZE, CONTEXT64_SIZE, EXCEPTION_RECORD32_SIZE,
    EXCEPTION_RECORD64_SIZE, HEADER32_SIZE, HEADER64_SIZE, MACHINE_AMD64, MACHINE_I386, MAX_RUNS,
    MAX_RUNS32, PAGE_PATTERN,
};
pub use reader::CrashDump;
pub use writer::{
    encode_headers, encode_headers32, write_dump, write_dump32, EncodedHeaders, HeaderFields,
    HeaderFields32, WriteError, WriteKind, MAX_BITMAP_BYTES,
};

/// Size of a physical page, and of every page stored in a dump.
pub const PAGE_SIZE: usize = 0x1000;

// A dump is shared across threads by the layers above.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CrashDump>();
};
