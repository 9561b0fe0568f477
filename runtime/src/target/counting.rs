//! A target wrapper that counts physical reads, for `kds run --stats`.

use super::{Capabilities, ProcessorContext, ReadError, Target, TargetError, TargetIdentity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What a [`CountingTarget`] has counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    /// `read_physical` calls.
    pub reads: u64,
    /// Bytes asked for.
    pub bytes: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Distinct bytes asked for: what a perfect cache would have had to fetch.
    pub distinct_bytes: u64,
}

impl fmt::Display for ReadStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} physical reads, {} bytes ({} distinct), {} failed",
            self.reads, self.bytes, self.distinct_bytes, self.failures
        )
    }
}

/// Any target, with its physical reads counted. Everything else is passed through.
pub struct CountingTarget {
    inner: Arc<dyn Target>,
    reads: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
    distinct: Mutex<RangeSet>,
}

/// Disjoint half-open ranges, merged as they are added.
#[derive(Default)]
struct RangeSet {
    ranges: BTreeMap<u64, u64>,
    total: u64,
}

impl RangeSet {
    fn add(&mut self, start: u64, end: u64) {
        let (mut start, mut end) = (start, end);
        // Absorb every range that overlaps or touches [start, end).
        let first = self
            .ranges
            .range(..=start)
            .next_back()
            .filter(|(_, &e)| e >= start)
            .map(|(&s, _)| s);
        let from = first.unwrap_or(start);
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(from..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            self.total -= e - s;
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.total += end - start;
    }
}

impl CountingTarget {
    #[must_use]
    pub fn new(inner: Arc<dyn Target>) -> CountingTarget {
        CountingTarget {
            inner,
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            distinct: Mutex::new(RangeSet::default()),
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
            distinct_bytes: self
                .distinct
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .total,
        }
    }

    /// The page frames the reads so far touched, ascending: what a recording must hold to
    /// replay them.
    #[must_use]
    pub fn touched_pfns(&self) -> Vec<u64> {
        let set = self.distinct.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pfns: Vec<u64> = Vec::new();
        for (&start, &end) in &set.ranges {
            let first = start / super::PAGE_SIZE;
            let last = (end - 1) / super::PAGE_SIZE;
            let from = pfns.last().map_or(first, |&p| first.max(p + 1));
            pfns.extend(from..=last);
        }
        pfns
    }

    /// Start counting from zero again.
    pub fn reset(&self) {
        self.reads.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        *self.distinct.lock().unwrap_or_else(PoisonError::into_inner) = RangeSet::default();
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
        if !buf.is_empty() {
            self.distinct
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(address, address.saturating_add(buf.len() as u64));
        }
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

    fn captured_pfns(&self) -> Option<Vec<u64>> {
        self.inner.captured_pfns()
    }

    fn resume(&self) -> Result<(), TargetError> {
        self.inner.resume()
    }

    fn session_ended(&self) -> Option<String> {
        self.inner.session_ended()
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSet;

    #[test]
    fn distinct_bytes_merge_overlaps_and_neighbours() {
        let mut set = RangeSet::default();
        set.add(100, 108);
        set.add(104, 112);
        assert_eq!(set.total, 12);
        set.add(112, 120);
        assert_eq!(set.total, 20);
        set.add(0, 8);
        assert_eq!(set.total, 28);
        set.add(0, 200);
        assert_eq!(set.total, 200);
        assert_eq!(set.ranges.len(), 1);
    }
}
