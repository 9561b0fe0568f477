//! A [`Link`] that misbehaves on purpose: flipped bits, dropped bytes and duplicated packets
//! from a seeded generator, and a line rate (so many bits per second) for every byte that
//! passes. Protocol-level faults (a RESET mid-exchange, a link that goes away) are the
//! debuggee engine's (`DebuggeeOptions::reset_after`, `disconnect_after`).
//!
//! Probabilities apply per write (one packet: every engine writes a packet in one call) and
//! per chunk read, so a 4000-byte packet is no likelier to be hit than a 16-byte ACK.

use crate::link::{Link, LinkError};
use crate::packet::DATA_LEADER;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A tiny xorshift64* generator: reproducible faults from a seed, no dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    #[must_use]
    pub fn new(seed: u64) -> XorShift {
        // Zero is xorshift's fixed point; mix the seed so 0, 1, 2... all start well.
        XorShift((seed ^ 0x9E37_79B9_7F4A_7C15).max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
}

/// Which faults to inject, and the line rate.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Probability that a write or a read chunk has one bit flipped.
    pub flip: f64,
    /// Probability that a write or a read chunk loses one byte.
    pub drop: f64,
    /// Probability that an outgoing data packet is written twice.
    pub duplicate: f64,
    /// Probability that each byte, on its own, gets one bit flipped (line noise).
    pub flip_bytes: f64,
    /// Probability that each byte, on its own, is lost.
    pub drop_bytes: f64,
    pub seed: u64,
    /// Simulated line rate in baud (10 bits a byte at 8N1); None for full speed.
    pub baud: Option<u32>,
}

/// Faults injected so far; shared so they outlive each link.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub flips: AtomicU64,
    pub drops: AtomicU64,
    pub duplicates: AtomicU64,
}

/// A snapshot of [`FaultCounts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultTotals {
    pub flips: u64,
    pub drops: u64,
    pub duplicates: u64,
}

impl FaultCounts {
    #[must_use]
    pub fn totals(&self) -> FaultTotals {
        FaultTotals {
            flips: self.flips.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
        }
    }
}

impl FaultTotals {
    #[must_use]
    pub fn total(&self) -> u64 {
        self.flips + self.drops + self.duplicates
    }
}

/// The generator and counters that carry over from one link to the next.
#[derive(Debug, Clone)]
pub struct FaultState {
    pub config: FaultConfig,
    pub rng: XorShift,
    pub counts: Arc<FaultCounts>,
}

impl FaultState {
    #[must_use]
    pub fn new(config: FaultConfig) -> FaultState {
        FaultState {
            rng: XorShift::new(config.seed),
            config,
            counts: Arc::new(FaultCounts::default()),
        }
    }

    /// Flip a bit and/or drop a byte of `bytes`, each with its probability.
    fn mangle(&mut self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if self.rng.chance(self.config.flip) {
            let at = self.rng.below(bytes.len());
            bytes[at] ^= 1 << self.rng.below(8);
            self.counts.flips.fetch_add(1, Ordering::Relaxed);
        }
        if self.rng.chance(self.config.drop) {
            let at = self.rng.below(bytes.len());
            bytes.remove(at);
            self.counts.drops.fetch_add(1, Ordering::Relaxed);
        }
        if self.config.flip_bytes > 0.0 || self.config.drop_bytes > 0.0 {
            let mut kept = Vec::with_capacity(bytes.len());
            for &b in bytes.iter() {
                if self.rng.chance(self.config.drop_bytes) {
                    self.counts.drops.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if self.rng.chance(self.config.flip_bytes) {
                    kept.push(b ^ (1 << self.rng.below(8)));
                    self.counts.flips.fetch_add(1, Ordering::Relaxed);
                } else {
                    kept.push(b);
                }
            }
            *bytes = kept;
        }
    }

    fn line_delay(&self, bytes: usize) {
        if let Some(baud) = self.config.baud.filter(|&b| b > 0) {
            let secs = bytes as f64 * 10.0 / f64::from(baud);
            std::thread::sleep(Duration::from_secs_f64(secs));
        }
    }
}

/// A link with faults and a line rate.
pub struct FaultLink<L: Link> {
    inner: L,
    state: FaultState,
    /// Bytes read but not yet handed out (a read may return fewer than it got).
    pending: Vec<u8>,
}

impl<L: Link> FaultLink<L> {
    pub fn new(inner: L, state: FaultState) -> FaultLink<L> {
        FaultLink {
            inner,
            state,
            pending: Vec::new(),
        }
    }

    /// The generator and counters, to carry over to the next link.
    #[must_use]
    pub fn into_state(self) -> FaultState {
        self.state
    }
}

impl<L: Link> Link for FaultLink<L> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, LinkError> {
        if self.pending.is_empty() {
            let mut chunk = vec![0u8; buf.len()];
            let n = self.inner.read(&mut chunk, timeout)?;
            if n == 0 {
                return Ok(0);
            }
            chunk.truncate(n);
            self.state.line_delay(n);
            self.state.mangle(&mut chunk);
            self.pending = chunk;
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        let is_data = bytes.len() > 4 && bytes[..4] == DATA_LEADER.to_le_bytes();
        let copies = if is_data && self.state.rng.chance(self.state.config.duplicate) {
            self.state.counts.duplicates.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut out = bytes.to_vec();
            self.state.mangle(&mut out);
            self.state.line_delay(out.len());
            self.inner.write_all(&out)?;
        }
        Ok(())
    }

    fn discard_input(&mut self) -> Result<(), LinkError> {
        self.pending.clear();
        self.inner.discard_input()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_reproducible_and_spread() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut c = XorShift::new(0);
        let hits = (0..10_000).filter(|_| c.chance(0.1)).count();
        assert!((800..1200).contains(&hits), "{hits}");
    }
}
