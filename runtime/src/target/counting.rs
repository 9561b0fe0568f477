//! A target wrapper that counts physical reads, for `kds run --stats`.

use super::{Capabilities, ProcessorContext, ReadError, Target, TargetError, TargetIdentity};
use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a [`CountingTarget`] has counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    /// `read_physical` calls.
    pub reads: u64,
    /// Bytes asked for.
    pub bytes: u64,
    /// Calls that failed.
    pub failures: u64,
}

impl fmt::Display for ReadStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} physical reads, {} bytes, {} failed",
            self.reads, self.bytes, self.failures
        )
    }
}

/// Any target, with its physical reads counted. Everything else is passed through.
pub struct CountingTarget {
    inner: Arc<dyn Target>,
    reads: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
}

impl CountingTarget {
    #[must_use]
    pub fn new(inner: Arc<dyn Target>) -> CountingTarget {
        CountingTarget {
            inner,
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// The wrapped target.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn Target> {
        &self.inner
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> ReadStats {
        ReadStats {
            reads: self.reads.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Start counting from zero again.
    pub fn reset(&self) {
        self.reads.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
    }
}

impl Target for CountingTarget {
    fn identity(&self) -> &TargetIdentity {
        self.inner.identity()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn read_physical(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        let result = self.inner.read_physical(address, buf);
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn processor_context(&self, processor: u32) -> Result<ProcessorContext, TargetError> {
        self.inner.processor_context(processor)
    }

    fn captured_pages(&self) -> Option<u64> {
        self.inner.captured_pages()
    }

    fn resume(&self) -> Result<(), TargetError> {
        self.inner.resume()
    }
}
