//! The host side of KDCOM: connecting to a debuggee, manipulate exchanges with
//! acknowledgements, resends, resets and reconnection, and letting the target run again.
//!
//! The engine never sends a write request unless writes were allowed, checks the freeze budget
//! and the interrupt flag before every exchange (and resumes the target when either trips),
//! and counts everything it puts on and takes off the wire.

use crate::api::{
    apinum, status, Manipulate, StateChange, Version, AMD64_CONTEXT_LEN, MAX_TRANSFER,
    X86_CONTEXT_LEN,
};
use crate::cache::{BlockCache, Cached, BLOCK};
use crate::framer::{Frame, FrameDecoder};
use crate::link::{Link, LinkError};
use crate::packet::{
    next_packet_id, Packet, PacketType, BREAKIN_BYTE, INITIAL_PACKET_ID, SYNC_PACKET_ID,
};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How the host behaves on the wire.
#[derive(Clone)]
pub struct HostOptions {
    /// Silence after which an unanswered packet is sent again.
    pub packet_timeout: Duration,
    /// Resends of one packet before the exchange fails.
    pub retries: u32,
    /// How long to wait for the debuggee to answer a break-in (None: forever).
    pub connect_timeout: Option<Duration>,
    /// How often to repeat break-in (and RESET) while waiting.
    pub breakin_interval: Duration,
    /// RESET packets to send while connecting (None: on every attempt).
    pub resets: Option<u32>,
    /// Allow requests that change the target.
    pub allow_write: bool,
    /// Set from a signal handler: resume the target and stop at the next exchange.
    pub interrupt: Arc<AtomicBool>,
    /// Longest the target may stay frozen; the engine resumes it and fails once exceeded.
    pub max_freeze: Option<Duration>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            packet_timeout: Duration::from_millis(400),
            retries: 20,
            connect_timeout: None,
            breakin_interval: Duration::from_secs(2),
            resets: None,
            allow_write: false,
            interrupt: Arc::new(AtomicBool::new(false)),
            max_freeze: None,
        }
    }
}

/// What went wrong talking to the debuggee.
#[derive(Debug, Error)]
pub enum KdError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("no answer from the target to {what} after {attempts} attempts")]
    NoResponse { what: String, attempts: u32 },
    #[error("the target did not answer the break-in within {0:?}")]
    ConnectTimeout(Duration),
    #[error("interrupted")]
    Interrupted,
    #[error("the target stayed frozen longer than the --max-freeze budget of {0:?}")]
    FreezeBudget(Duration),
    #[error("refusing to send {0} without --allow-write")]
    WriteRefused(&'static str),
    #[error("{what} failed on the target with status {status:#010x}")]
    Status { what: String, status: u32 },
    #[error("the target's answer is malformed: {0}")]
    Decode(#[from] crate::api::DecodeError),
    #[error("the target is not broken in")]
    NotHalted,
    #[error("the session has ended ({0}); the target was resumed")]
    Ended(String),
}

/// Everything the host counted on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WireStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Manipulate requests answered (one request, one reply).
    pub round_trips: u64,
    pub resends: u64,
    pub resend_requests: u64,
    pub corrupt_packets: u64,
    pub resets: u64,
    pub reconnects: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// What the host tells its user while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Waiting,
    /// Text the debuggee printed (DbgPrint).
    DebugPrint(String),
    LinkLost(String),
    Reconnected,
    Resumed,
}

/// Reopens a link that dropped (a pipe server that comes back, a socket to reconnect).
pub type Reopen = Box<dyn FnMut() -> Result<Box<dyn Link>, LinkError> + Send>;

/// A host-side KDCOM session.
pub struct KdHost {
    link: Box<dyn Link>,
    reopen: Option<Reopen>,
    decoder: FrameDecoder,
    frames: VecDeque<Frame>,
    out_id: u32,
    /// The id the next delivered data packet must carry (SYNC cleared); None accepts any.
    in_id: Option<u32>,
    options: HostOptions,
    stats: WireStats,
    halted: Option<(StateChange, Instant)>,
    version: Option<Version>,
    cache: BlockCache,
    notify: Box<dyn FnMut(Notice) + Send>,
    ended: Option<String>,
}

impl KdHost {
    /// A session over `link`; nothing is sent until [`KdHost::connect`].
    pub fn new(link: Box<dyn Link>, options: HostOptions) -> KdHost {
        KdHost {
            link,
            reopen: None,
            decoder: FrameDecoder::default(),
            frames: VecDeque::new(),
            out_id: INITIAL_PACKET_ID,
            in_id: None,
            options,
            stats: WireStats::default(),
            halted: None,
            version: None,
            cache: BlockCache::default(),
            notify: Box::new(|_| {}),
            ended: None,
        }
    }

    /// Reopen the link this way when it drops.
    pub fn set_reopen(&mut self, reopen: Reopen) {
        self.reopen = Some(reopen);
    }

    /// Receive notices (waiting, debug prints, link lost, resumed).
    pub fn set_notify(&mut self, notify: Box<dyn FnMut(Notice) + Send>) {
        self.notify = notify;
    }

    #[must_use]
    pub fn stats(&self) -> WireStats {
        let mut s = self.stats;
        s.cache_hits = self.cache.hits;
        s.cache_misses = self.cache.misses;
        s
    }

    /// The state change the target stopped with, while it is stopped.
    #[must_use]
    pub fn halted(&self) -> Option<&StateChange> {
        self.halted.as_ref().map(|(s, _)| s)
    }

    /// Why the session ended (interrupt, freeze budget), if it has.
    #[must_use]
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// The target's GetVersion answer, once connected.
    #[must_use]
    pub fn version(&self) -> Option<&Version> {
        self.version.as_ref()
    }

    /// Break in and wait for the target to stop, then ask for its version.
    pub fn connect(&mut self) -> Result<Version, KdError> {
        (self.notify)(Notice::Waiting);
        self.break_in()?;
        let reply = match self.exchange(Manipulate::new(apinum::GET_VERSION, self.processor())) {
            Ok(reply) => reply,
            Err(e) => {
                // The kernel is frozen and no session will follow: let it run.
                let _ = self.resume();
                return Err(e);
            }
        };
        let version = Version::from_union(&reply.union);
        self.version = Some(version);
        Ok(version)
    }

    fn processor(&self) -> u16 {
        self.halted.as_ref().map_or(0, |(s, _)| s.processor)
    }

    /// Send break-ins (and RESETs) until a state change arrives.
    fn break_in(&mut self) -> Result<(), KdError> {
        let started = Instant::now();
        let mut resets_sent = 0u32;
        loop {
            if self.options.interrupt.load(Ordering::SeqCst) {
                return Err(KdError::Interrupted);
            }
            if let Some(limit) = self.options.connect_timeout {
                if started.elapsed() > limit {
                    return Err(KdError::ConnectTimeout(limit));
                }
            }
            if self.options.resets.is_none_or(|max| resets_sent < max) {
                self.link.discard_input()?;
                self.decoder.clear();
                self.frames.clear();
                self.send(&Packet::control(PacketType::Reset, 0))?;
                self.stats.resets += 1;
                resets_sent += 1;
            }
            self.link.write_all(&[BREAKIN_BYTE])?;
            self.stats.bytes_sent += 1;
            let round = Instant::now();
            while round.elapsed() < self.options.breakin_interval {
                if self.options.interrupt.load(Ordering::SeqCst) {
                    return Err(KdError::Interrupted);
                }
                let Some(frame) = self.next_frame(Duration::from_millis(100))? else {
                    continue;
                };
                self.handle_unsolicited(frame)?;
                if self.halted.is_some() {
                    return Ok(());
                }
            }
        }
    }

    /// Frames that arrive outside an exchange: state changes, prints, resets.
    fn handle_unsolicited(&mut self, frame: Frame) -> Result<(), KdError> {
        match frame {
            Frame::Packet(p) if p.kind == PacketType::Reset => {
                self.out_id = INITIAL_PACKET_ID;
                self.in_id = None;
            }
            Frame::Packet(p) if !p.kind.is_control() => {
                if let Some(p) = self.accept(p)? {
                    self.deliver_async(&p)?;
                }
            }
            Frame::Corrupt(_) => {
                self.stats.corrupt_packets += 1;
                self.send(&Packet::control(PacketType::Resend, 0))?;
                self.stats.resend_requests += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// State changes and prints, whenever they arrive.
    fn deliver_async(&mut self, p: &Packet) -> Result<(), KdError> {
        match p.kind {
            PacketType::StateChange64 => {
                let state = StateChange::decode(&p.payload)?;
                // A kernel repeats its state change after a RESET or a reconnect without having
                // run: memory read since the break-in is still good. A different stop means
                // it ran.
                let same_stop = self.halted.as_ref().is_some_and(|(old, _)| {
                    (old.processor, old.thread, old.program_counter)
                        == (state.processor, state.thread, state.program_counter)
                });
                let since = match &self.halted {
                    Some((_, t)) if same_stop => *t,
                    _ => Instant::now(),
                };
                if !same_stop {
                    self.cache.clear();
                }
                self.halted = Some((state, since));
            }
            PacketType::DebugIo => {
                if let Ok(Some(text)) = crate::api::debug_print(&p.payload) {
                    (self.notify)(Notice::DebugPrint(text));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// ACK a data packet; return it if it is the one expected next (not a duplicate).
    fn accept(&mut self, p: Packet) -> Result<Option<Packet>, KdError> {
        self.send(&Packet::control(
            PacketType::Acknowledge,
            p.id & !SYNC_PACKET_ID,
        ))?;
        let restarted = p.id & SYNC_PACKET_ID != 0;
        if restarted {
            self.out_id = INITIAL_PACKET_ID;
        }
        let expected = self.in_id.is_none_or(|id| id == p.id & !SYNC_PACKET_ID);
        if !(expected || restarted) {
            return Ok(None);
        }
        self.in_id = Some(next_packet_id(p.id));
        Ok(Some(p))
    }

    fn send(&mut self, p: &Packet) -> Result<(), KdError> {
        let bytes = p.encode();
        self.link.write_all(&bytes)?;
        self.stats.bytes_sent += bytes.len() as u64;
        self.stats.packets_sent += 1;
        Ok(())
    }

    /// The next frame, or None after `silence` without a byte.
    fn next_frame(&mut self, silence: Duration) -> Result<Option<Frame>, KdError> {
        let mut last_byte = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(frame) = self.frames.pop_front() {
                if matches!(frame, Frame::Packet(_)) {
                    self.stats.packets_received += 1;
                }
                return Ok(Some(frame));
            }
            let left = silence.saturating_sub(last_byte.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            let n = self
                .link
                .read(&mut buf, left.min(Duration::from_millis(100)))?;
            if n > 0 {
                last_byte = Instant::now();
                self.stats.bytes_received += n as u64;
                for &b in &buf[..n] {
                    if let Some(frame) = self.decoder.push(b) {
                        self.frames.push_back(frame);
                    }
                }
            }
        }
    }

    fn check_budgets(&mut self) -> Result<(), KdError> {
        if let Some(reason) = &self.ended {
            return Err(KdError::Ended(reason.clone()));
        }
        if self.options.interrupt.load(Ordering::SeqCst) {
            self.end("interrupted");
            return Err(KdError::Interrupted);
        }
        if let (Some(budget), Some((_, since))) = (self.options.max_freeze, &self.halted) {
            if since.elapsed() > budget {
                self.end("freeze budget exceeded");
                return Err(KdError::FreezeBudget(budget));
            }
        }
        Ok(())
    }

    /// Resume the target and refuse further requests.
    fn end(&mut self, reason: &str) {
        let _ = self.resume();
        self.ended = Some(reason.to_string());
    }

    /// One manipulate request and its reply, with resends, resets and reconnection.
    pub fn exchange(&mut self, request: Manipulate) -> Result<Manipulate, KdError> {
        self.check_budgets()?;
        if request.is_write() && !self.options.allow_write {
            return Err(KdError::WriteRefused(api_name(request.api)));
        }
        if self.halted.is_none() {
            return Err(KdError::NotHalted);
        }
        self.transact(&request)?.ok_or_else(|| KdError::Status {
            what: "a Continue has no reply: use resume()".into(),
            status: status::INVALID_PARAMETER,
        })
    }

    /// Send `request` until the target acknowledges it, then (unless it is a Continue, which
    /// has no reply) until its reply arrives: resends on silence, RESEND and RESET, a repeated
    /// stop, reconnection when the link closes. `Ok(None)` for a Continue.
    fn transact(&mut self, request: &Manipulate) -> Result<Option<Manipulate>, KdError> {
        let wants_reply = !matches!(request.api, apinum::CONTINUE | apinum::CONTINUE2);
        let what = api_name(request.api);
        let payload = request.encode();
        let mut attempts = 0u32;
        'send: loop {
            let packet = Packet::data(PacketType::StateManipulate, self.out_id, payload.clone())
                .map_err(|e| KdError::Status {
                    what: e.to_string(),
                    status: status::INVALID_PARAMETER,
                })?;
            if let Err(e) = self.send(&packet) {
                self.recover(e)?;
                continue 'send;
            }
            let mut acked = false;
            loop {
                let frame = match self.next_frame(self.options.packet_timeout) {
                    Ok(frame) => frame,
                    Err(e) => {
                        self.recover(e)?;
                        continue 'send;
                    }
                };
                let Some(frame) = frame else {
                    attempts += 1;
                    if attempts > self.options.retries {
                        if wants_reply {
                            // A target that stopped answering would make every later read
                            // wait as long: end the session (resuming it if it still can).
                            self.end(&format!("no answer from the target to {what}"));
                        }
                        return Err(KdError::NoResponse {
                            what: what.into(),
                            attempts,
                        });
                    }
                    self.stats.resends += 1;
                    continue 'send;
                };
                match frame {
                    Frame::Packet(p)
                        if p.kind == PacketType::Acknowledge
                            && !acked
                            && p.id == self.out_id & !SYNC_PACKET_ID =>
                    {
                        acked = true;
                        self.out_id = next_packet_id(self.out_id);
                        if !wants_reply {
                            return Ok(None);
                        }
                    }
                    Frame::Packet(p) if p.kind == PacketType::Resend && !acked => {
                        self.stats.resends += 1;
                        continue 'send;
                    }
                    Frame::Packet(p) if p.kind == PacketType::Reset => {
                        self.out_id = INITIAL_PACKET_ID;
                        self.in_id = None;
                        self.stats.resends += 1;
                        continue 'send;
                    }
                    Frame::Packet(p) if wants_reply && p.kind == PacketType::StateManipulate => {
                        let sync = p.id & SYNC_PACKET_ID != 0;
                        let Some(p) = self.accept(p)? else { continue };
                        let reply = Manipulate::decode(&p.payload)?;
                        if !answers(request, &reply) {
                            continue;
                        }
                        if !acked && !sync {
                            self.out_id = next_packet_id(self.out_id);
                        }
                        self.stats.round_trips += 1;
                        return Ok(Some(reply));
                    }
                    Frame::Packet(p) if p.kind == PacketType::StateChange64 => {
                        // The target stopped anew (it restarted, or the link came back):
                        // the request is lost with the old state; ask again.
                        if let Some(p) = self.accept(p)? {
                            self.deliver_async(&p)?;
                            continue 'send;
                        }
                    }
                    other => self.handle_unsolicited(other)?,
                }
            }
        }
    }

    /// The link failed mid-exchange: reopen it, resynchronise, and let the caller resend.
    fn recover(&mut self, error: KdError) -> Result<(), KdError> {
        let KdError::Link(LinkError::Closed(reason)) = &error else {
            return Err(error);
        };
        let Some(reopen) = self.reopen.as_mut() else {
            return Err(error);
        };
        (self.notify)(Notice::LinkLost(reason.clone()));
        let started = Instant::now();
        let limit = self
            .options
            .connect_timeout
            .unwrap_or(Duration::from_secs(60));
        let link = loop {
            if self.options.interrupt.load(Ordering::SeqCst) {
                return Err(KdError::Interrupted);
            }
            match reopen() {
                Ok(link) => break link,
                Err(_) if started.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.link = link;
        self.stats.reconnects += 1;
        self.decoder.clear();
        self.frames.clear();
        // A RESET makes a waiting kernel restart its ids and resend its state change.
        self.link.discard_input()?;
        self.send(&Packet::control(PacketType::Reset, 0))?;
        self.stats.resets += 1;
        self.out_id = INITIAL_PACKET_ID;
        self.in_id = None;
        (self.notify)(Notice::Reconnected);
        Ok(())
    }

    /// Let the target run: Continue2 with DBG_CONTINUE, acknowledged, no reply expected.
    /// The block cache is dropped. Harmless when the target is not stopped.
    pub fn resume(&mut self) -> Result<(), KdError> {
        if self.halted.is_none() {
            return Ok(());
        }
        // Ids alternate between two values, so a late ACK of an earlier packet would pass for
        // the Continue2's: let the line go quiet first, answering what arrives.
        self.drain(Duration::from_millis(100))?;
        self.transact(&Manipulate::resume(self.processor()))?;
        self.halted = None;
        self.cache.clear();
        (self.notify)(Notice::Resumed);
        Ok(())
    }

    /// Take in whatever arrives until the line has been silent for `quiet`: stale ACKs are
    /// dropped, data packets acknowledged (a repeated reply included).
    fn drain(&mut self, quiet: Duration) -> Result<(), KdError> {
        let started = Instant::now();
        while started.elapsed() < quiet * 20 {
            match self.next_frame(quiet) {
                Ok(None) => return Ok(()),
                Ok(Some(Frame::Packet(p))) if !p.kind.is_control() => {
                    if let Some(p) = self.accept(p)? {
                        self.deliver_async(&p)?;
                    }
                }
                Ok(Some(_)) => {}
                Err(e) => return self.recover(e),
            }
        }
        Ok(())
    }

    /// Physical memory through the block cache, in transfers of at most the protocol maximum.
    /// Unreadable memory fails naming the first address that could not be read.
    pub fn read_physical(&mut self, address: u64, buf: &mut [u8]) -> Result<(), ReadFailure> {
        if buf.is_empty() {
            return Ok(());
        }
        let first = address / BLOCK;
        let last = (address + buf.len() as u64 - 1) / BLOCK;
        self.fill_blocks(first, last)?;
        let mut at = address;
        let end = address + buf.len() as u64;
        let mut refills = 0;
        while at < end {
            let index = at / BLOCK;
            if matches!(self.cache.get(index), Cached::Unknown) {
                // The target stopped anew while the blocks were fetched (it ran in between):
                // fetch the rest again from the new stop.
                refills += 1;
                if refills > 3 {
                    return Err(ReadFailure::Unreadable { address: at });
                }
                self.fill_blocks(index, last)?;
                continue;
            }
            let offset = (at % BLOCK) as usize;
            let take = ((BLOCK as usize - offset) as u64).min(end - at) as usize;
            let dst = (at - address) as usize;
            match self.cache.get(index) {
                Cached::Bytes(block) => {
                    buf[dst..dst + take].copy_from_slice(&block[offset..offset + take]);
                }
                _ => return Err(ReadFailure::Unreadable { address: at }),
            }
            at += take as u64;
        }
        Ok(())
    }

    /// Fetch the blocks `first..=last` that are not cached, in runs as long as a packet allows.
    fn fill_blocks(&mut self, first: u64, last: u64) -> Result<(), ReadFailure> {
        let per_transfer = (MAX_TRANSFER as u64 / BLOCK).max(1);
        let mut index = first;
        while index <= last {
            if !matches!(self.cache.get(index), Cached::Unknown) {
                self.cache.hits += 1;
                index += 1;
                continue;
            }
            let mut run = 1;
            while index + run <= last
                && run < per_transfer
                && matches!(self.cache.get(index + run), Cached::Unknown)
            {
                run += 1;
            }
            self.cache.misses += run;
            let count = (run * BLOCK) as u32;
            let reply = self.exchange(Manipulate::read(
                apinum::READ_PHYSICAL_MEMORY,
                self.processor(),
                index * BLOCK,
                count,
            ))?;
            let got = (reply.memory().actual as usize).min(reply.data.len());
            for i in 0..run {
                let from = (i * BLOCK) as usize;
                if from + BLOCK as usize <= got {
                    self.cache
                        .put(index + i, &reply.data[from..from + BLOCK as usize]);
                } else {
                    self.cache.put_unreadable(index + i);
                }
            }
            index += run;
        }
        Ok(())
    }

    /// Virtual memory as the target translates it (used before symbols give a DTB).
    pub fn read_virtual(&mut self, address: u64, buf: &mut [u8]) -> Result<(), ReadFailure> {
        let mut done = 0usize;
        while done < buf.len() {
            let count = (buf.len() - done).min(MAX_TRANSFER);
            let at = address.wrapping_add(done as u64);
            let reply = self.exchange(Manipulate::read(
                apinum::READ_VIRTUAL_MEMORY,
                self.processor(),
                at,
                count as u32,
            ))?;
            let got = (reply.memory().actual as usize)
                .min(reply.data.len())
                .min(count);
            buf[done..done + got].copy_from_slice(&reply.data[..got]);
            if got < count {
                return Err(ReadFailure::Unreadable {
                    address: at + got as u64,
                });
            }
            done += count;
        }
        Ok(())
    }

    /// Control space of a processor (AMD64 selectors: 0 KPCR, 1 KPRCB, 2 special registers,
    /// 3 current thread).
    pub fn read_control_space(
        &mut self,
        processor: u16,
        selector: u64,
        count: u32,
    ) -> Result<Vec<u8>, KdError> {
        let reply = self.exchange(Manipulate::read(
            apinum::READ_CONTROL_SPACE,
            processor,
            selector,
            count,
        ))?;
        check(&reply, "ReadControlSpace")?;
        let got = (reply.memory().actual as usize).min(reply.data.len());
        Ok(reply.data[..got].to_vec())
    }

    /// The raw AMD64 `CONTEXT` of a processor.
    pub fn get_context(&mut self, processor: u16) -> Result<Vec<u8>, KdError> {
        let reply = self.exchange(Manipulate::new(apinum::GET_CONTEXT, processor))?;
        check(&reply, "GetContext")?;
        // A 32-bit kernel (GetVersion without PTR64) answers with an x86 CONTEXT.
        let (what, needed) = match self.version {
            Some(v) if !v.is_ptr64() => ("an x86 CONTEXT", X86_CONTEXT_LEN),
            _ => ("an AMD64 CONTEXT", AMD64_CONTEXT_LEN),
        };
        if reply.data.len() < needed {
            return Err(KdError::Decode(crate::api::DecodeError::Short {
                what,
                needed,
                found: reply.data.len(),
            }));
        }
        Ok(reply.data)
    }

    /// An MSR of a processor.
    pub fn read_msr(&mut self, processor: u16, msr: u32) -> Result<u64, KdError> {
        let reply = self.exchange(Manipulate::read_msr(processor, msr))?;
        check(&reply, "ReadMSR")?;
        Ok(reply.msr().1)
    }
}

/// A read that failed: either the link/session, or memory the target could not read.
#[derive(Debug, Error)]
pub enum ReadFailure {
    #[error("the target could not read {address:#x}")]
    Unreadable { address: u64 },
    #[error(transparent)]
    Kd(#[from] KdError),
}

fn check(reply: &Manipulate, what: &str) -> Result<(), KdError> {
    if reply.status != status::SUCCESS {
        return Err(KdError::Status {
            what: what.into(),
            status: reply.status,
        });
    }
    Ok(())
}

/// Whether `reply` answers `request` (a stale reply to an earlier, resent request does not).
fn answers(request: &Manipulate, reply: &Manipulate) -> bool {
    if reply.api != request.api {
        return false;
    }
    match request.api {
        apinum::READ_VIRTUAL_MEMORY | apinum::READ_PHYSICAL_MEMORY | apinum::READ_CONTROL_SPACE => {
            reply.memory().address == request.memory().address
        }
        _ => true,
    }
}

/// The name of a manipulate API, for messages.
#[must_use]
pub fn api_name(api: u32) -> &'static str {
    match api {
        apinum::READ_VIRTUAL_MEMORY => "ReadVirtualMemory",
        apinum::WRITE_VIRTUAL_MEMORY => "WriteVirtualMemory",
        apinum::GET_CONTEXT => "GetContext",
        apinum::SET_CONTEXT => "SetContext",
        apinum::CONTINUE => "Continue",
        apinum::READ_CONTROL_SPACE => "ReadControlSpace",
        apinum::WRITE_CONTROL_SPACE => "WriteControlSpace",
        apinum::REBOOT => "Reboot",
        apinum::CONTINUE2 => "Continue2",
        apinum::READ_PHYSICAL_MEMORY => "ReadPhysicalMemory",
        apinum::WRITE_PHYSICAL_MEMORY => "WritePhysicalMemory",
        apinum::GET_VERSION => "GetVersion",
        apinum::SWITCH_PROCESSOR => "SwitchProcessor",
        apinum::READ_MSR => "ReadMSR",
        apinum::WRITE_MSR => "WriteMSR",
        _ => "an unknown request",
    }
}
