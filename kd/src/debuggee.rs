//! The kernel side of KDCOM, for the emulator: a state machine over a [`Link`] that behaves
//! as a Windows kernel's kdcom does.
//!
//! While running it watches only for the break-in byte and for RESET. On a break-in it halts
//! and reports a first-chance breakpoint (STATE_CHANGE64), retried about every second until
//! acknowledged. While halted it ACKs every well-formed data packet, acts on the one carrying
//! the expected id, answers manipulate requests from a [`Kernel`] with its own id sequence
//! (each reply retried until ACKed) and asks for a resend on corrupt input. A RESET restarts
//! both id sequences, is answered with a RESET, and the halted kernel sends its state change
//! again. Continue and Continue2 are ACKed only, and the kernel runs again.

use crate::api::{apinum, status, Manipulate, StateChange, Version, MAX_TRANSFER};
use crate::framer::{Frame, FrameDecoder};
use crate::host::api_name;
use crate::link::{Link, LinkError};
use crate::packet::{next_packet_id, Packet, PacketType, INITIAL_PACKET_ID, SYNC_PACKET_ID};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Manipulate APIs beyond those in [`crate::api::apinum`] (windbgkd.h numbering).
pub mod more_apinum {
    pub const WRITE_BREAKPOINT: u32 = 0x3134;
    pub const RESTORE_BREAKPOINT: u32 = 0x3135;
    pub const WRITE_IO_SPACE: u32 = 0x313A;
    pub const SET_SPECIAL_CALL: u32 = 0x3140;
    pub const SET_INTERNAL_BREAKPOINT: u32 = 0x3142;
    pub const WRITE_IO_SPACE_EXTENDED: u32 = 0x3145;
    pub const WRITE_BREAKPOINT_EX: u32 = 0x3147;
    pub const RESTORE_BREAKPOINT_EX: u32 = 0x3148;
    pub const CAUSE_BUGCHECK: u32 = 0x3149;
    pub const SET_BUS_DATA: u32 = 0x3158;
    pub const FILL_MEMORY: u32 = 0x315B;
    pub const WRITE_CUSTOM_BREAKPOINT: u32 = 0x315E;
    pub const GET_CONTEXT_EX: u32 = 0x315F;
    pub const SET_CONTEXT_EX: u32 = 0x3160;
}

/// The name of a manipulate API for the counters: the host's names, a few more, else hex.
#[must_use]
pub fn api_label(api: u32) -> String {
    use more_apinum::*;
    let name = match api {
        WRITE_BREAKPOINT => "WriteBreakPoint",
        RESTORE_BREAKPOINT => "RestoreBreakPoint",
        WRITE_BREAKPOINT_EX => "WriteBreakPointEx",
        RESTORE_BREAKPOINT_EX => "RestoreBreakPointEx",
        GET_CONTEXT_EX => "GetContextEx",
        SET_CONTEXT_EX => "SetContextEx",
        FILL_MEMORY => "FillMemory",
        CAUSE_BUGCHECK => "CauseBugCheck",
        _ => api_name(api),
    };
    if name == api_name(0) {
        format!("{api:#06x}")
    } else {
        name.to_string()
    }
}

/// Whether a request would change the target: memory, registers, breakpoints, MSRs, I/O,
/// bus data, a reboot or a bug check.
#[must_use]
pub fn changes_target(api: u32) -> bool {
    use more_apinum::*;
    matches!(
        api,
        apinum::WRITE_VIRTUAL_MEMORY
            | apinum::SET_CONTEXT
            | apinum::WRITE_CONTROL_SPACE
            | apinum::REBOOT
            | apinum::WRITE_PHYSICAL_MEMORY
            | apinum::WRITE_MSR
            | WRITE_BREAKPOINT
            | WRITE_IO_SPACE
            | SET_SPECIAL_CALL
            | SET_INTERNAL_BREAKPOINT
            | WRITE_IO_SPACE_EXTENDED
            | WRITE_BREAKPOINT_EX
            | CAUSE_BUGCHECK
            | SET_BUS_DATA
            | FILL_MEMORY
            | WRITE_CUSTOM_BREAKPOINT
            | SET_CONTEXT_EX
    )
}

/// Where a processor stopped, for its state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakInState {
    /// The current thread (KTHREAD address).
    pub thread: u64,
    /// The program counter.
    pub pc: u64,
    /// Up to 16 instruction bytes at `pc` (fewer when they cannot be read).
    pub instruction: Vec<u8>,
}

/// What the debuggee engine asks of the machine it debugs. Reads return how many bytes they
/// filled from the start of `buf` (a short count is a partial read).
pub trait Kernel: Send {
    /// The GetVersion answer.
    fn version(&self) -> Version;
    fn processor_count(&self) -> u32;
    /// Where `processor` is stopped.
    fn break_in_state(&self, processor: u16) -> BreakInState;
    fn read_virtual(&self, processor: u16, address: u64, buf: &mut [u8]) -> usize;
    fn read_physical(&self, address: u64, buf: &mut [u8]) -> usize;
    /// The raw `CONTEXT` of `processor` (AMD64: 1232 bytes; x86: 0x2CC), if known.
    fn context(&self, processor: u16) -> Option<Vec<u8>>;
    /// Control space. AMD64: selector 0 KPCR, 1 KPRCB, 2 KSPECIAL_REGISTERS, 3 KTHREAD;
    /// x86: an offset into the processor's KPROCESSOR_STATE.
    fn control_space(&self, processor: u16, selector: u64, len: usize) -> Option<Vec<u8>>;
    fn read_msr(&self, processor: u16, msr: u32) -> Option<u64>;
    /// Write virtual memory (only with writes allowed); bytes written.
    fn write_virtual(&mut self, _processor: u16, _address: u64, _data: &[u8]) -> usize {
        0
    }
    /// Write physical memory (only with writes allowed); bytes written.
    fn write_physical(&mut self, _address: u64, _data: &[u8]) -> usize {
        0
    }
    /// Replace `bytes.len()` bytes of a processor's CONTEXT at `offset` (only with writes
    /// allowed); false when the context cannot be changed.
    fn set_context(&mut self, _processor: u16, _offset: usize, _bytes: &[u8]) -> bool {
        false
    }
}

/// How the debuggee behaves, and the protocol-level faults it injects.
#[derive(Debug, Clone)]
pub struct DebuggeeOptions {
    /// Carry out write requests (they are always counted).
    pub allow_write: bool,
    /// Silence after which an unacknowledged packet is sent again.
    pub retry_interval: Duration,
    /// Resends of one packet before the kernel stops resending and just waits.
    pub retries: u32,
    /// After this many manipulate requests, answer the next one with a RESET (once).
    pub reset_after: Option<u64>,
    /// After this many manipulate requests, drop the link at the next one (once).
    pub disconnect_after: Option<u64>,
    /// A RESET also stops a running kernel (answered with a RESET and a state change), as
    /// hosts that never send a break-in byte (pykdclient) need.
    pub reset_breaks_in: bool,
    /// The first packet after a RESET carries SYNC (0x80800800), as KD-PROTOCOL.md says.
    /// ReactOS's kdcom restarts at plain 0x80800000, and pykdclient only follows that.
    pub sync_after_reset: bool,
}

impl Default for DebuggeeOptions {
    fn default() -> Self {
        DebuggeeOptions {
            allow_write: false,
            retry_interval: Duration::from_secs(1),
            retries: 20,
            reset_after: None,
            disconnect_after: None,
            reset_breaks_in: true,
            sync_after_reset: true,
        }
    }
}

/// Everything the debuggee counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DebuggeeStats {
    /// Manipulate requests acted on, by API name.
    pub requests: BTreeMap<String, u64>,
    pub break_ins: u64,
    /// RESET packets received.
    pub resets: u64,
    /// Continue and Continue2 requests acted on.
    pub resumes: u64,
    /// Requests that would change the target (refused unless writes are allowed).
    pub write_attempts: u64,
    /// Protocol faults injected by the engine (RESET mid-exchange, dropped link).
    pub faults_injected: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
    /// Data packets ACKed but not acted on (duplicates, unexpected ids).
    pub duplicates_received: u64,
    /// Corrupt packets received (each answered with RESEND while halted).
    pub corrupt_received: u64,
    /// Packets sent again (timeouts, RESEND, RESET, duplicate requests).
    pub resent: u64,
    /// ContinueStatus of the last Continue.
    pub last_continue_status: Option<u32>,
}

/// Why [`Debuggee::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEnd {
    /// The other end closed the link.
    Closed,
    /// The engine dropped the link on purpose (`disconnect_after`).
    Disconnected,
    /// The stop flag was set.
    Stopped,
}

/// What happened, for the caller (reports, messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    BrokenIn,
    /// A Continue arrived with this ContinueStatus.
    Resumed(u32),
    FaultInjected(&'static str),
}

/// A link failure that is not the other end going away.
#[derive(Debug, Error)]
pub enum DebuggeeError {
    #[error(transparent)]
    Link(#[from] LinkError),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

struct Pending {
    packet: Packet,
    /// The request payload this packet answers (None for a state change).
    answers: Option<Vec<u8>>,
    sent_at: Instant,
    retries: u32,
}

/// The kernel side of a KDCOM session. The state (halted or running, packet ids, the packet
/// awaiting acknowledgement) survives across links: serve one link, then the next.
pub struct Debuggee<K: Kernel> {
    kernel: K,
    options: DebuggeeOptions,
    stats: DebuggeeStats,
    halted: Option<u16>,
    out_id: u32,
    in_id: u32,
    sync_next: bool,
    pending: Option<Pending>,
    /// The id (SYNC cleared) of the last data packet acted on: re-ACKed even while running.
    last_delivered: Option<u32>,
    decoder: FrameDecoder,
    requests_seen: u64,
    reset_done: bool,
    disconnect_done: bool,
}

impl<K: Kernel> Debuggee<K> {
    /// A running kernel that has just booted (its first packet will carry SYNC).
    pub fn new(kernel: K, options: DebuggeeOptions) -> Debuggee<K> {
        Debuggee {
            kernel,
            options,
            stats: DebuggeeStats::default(),
            halted: None,
            out_id: INITIAL_PACKET_ID,
            in_id: INITIAL_PACKET_ID,
            sync_next: true,
            pending: None,
            last_delivered: None,
            decoder: FrameDecoder::default(),
            requests_seen: 0,
            reset_done: false,
            disconnect_done: false,
        }
    }

    #[must_use]
    pub fn stats(&self) -> &DebuggeeStats {
        &self.stats
    }

    #[must_use]
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// Whether the kernel is stopped in the debugger.
    #[must_use]
    pub fn is_halted(&self) -> bool {
        self.halted.is_some()
    }

    /// Serve one link until it closes, the engine drops it, or `stop` is set. `events` hears
    /// about break-ins, resumes and injected faults as they happen.
    pub fn serve(
        &mut self,
        link: &mut dyn Link,
        stop: &AtomicBool,
        events: &mut dyn FnMut(Event, &DebuggeeStats),
    ) -> Result<ServeEnd, DebuggeeError> {
        self.decoder.clear();
        // A new link: an unacknowledged packet gets its full set of retries again.
        if let Some(p) = self.pending.as_mut() {
            p.retries = 0;
        }
        let mut buf = vec![0u8; 8192];
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(ServeEnd::Stopped);
            }
            match self.retry_pending(link) {
                Ok(()) => {}
                Err(LinkError::Closed(_)) => return Ok(ServeEnd::Closed),
                Err(e) => return Err(e.into()),
            }
            let n = match link.read(&mut buf, Duration::from_millis(20)) {
                Ok(n) => n,
                Err(LinkError::Closed(_)) => return Ok(ServeEnd::Closed),
                Err(e) => return Err(e.into()),
            };
            for &b in &buf[..n] {
                let Some(frame) = self.decoder.push(b) else {
                    continue;
                };
                match self.handle(frame, link, events) {
                    Ok(None) => {}
                    Ok(Some(end)) => return Ok(end),
                    Err(LinkError::Closed(_)) => return Ok(ServeEnd::Closed),
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    fn retry_pending(&mut self, link: &mut dyn Link) -> Result<(), LinkError> {
        if self.halted.is_none() {
            return Ok(());
        }
        let due = self.pending.as_ref().is_some_and(|p| {
            p.retries < self.options.retries && p.sent_at.elapsed() >= self.options.retry_interval
        });
        if due {
            self.resend(link)?;
            if let Some(p) = self.pending.as_mut() {
                p.retries += 1;
            }
        }
        Ok(())
    }

    fn resend(&mut self, link: &mut dyn Link) -> Result<(), LinkError> {
        let Some(p) = self.pending.as_mut() else {
            return Ok(());
        };
        link.write_all(&p.packet.encode())?;
        p.sent_at = Instant::now();
        self.stats.packets_sent += 1;
        self.stats.resent += 1;
        Ok(())
    }

    fn send_control(
        &mut self,
        link: &mut dyn Link,
        kind: PacketType,
        id: u32,
    ) -> Result<(), LinkError> {
        link.write_all(&Packet::control(kind, id).encode())?;
        self.stats.packets_sent += 1;
        Ok(())
    }

    /// Send a new data packet and keep it until it is acknowledged.
    fn send_data(
        &mut self,
        link: &mut dyn Link,
        kind: PacketType,
        payload: Vec<u8>,
        answers: Option<Vec<u8>>,
    ) -> Result<(), LinkError> {
        let mut id = self.out_id;
        if self.sync_next {
            id |= SYNC_PACKET_ID;
            self.sync_next = false;
        }
        let packet = match Packet::data(kind, id, payload) {
            Ok(p) => p,
            // Replies are built within MAX_PAYLOAD; should one not be, send nothing.
            Err(_) => return Ok(()),
        };
        link.write_all(&packet.encode())?;
        self.stats.packets_sent += 1;
        self.pending = Some(Pending {
            packet,
            answers,
            sent_at: Instant::now(),
            retries: 0,
        });
        Ok(())
    }

    /// The pending packet was received by the host (ACK, or a new request implies it).
    fn complete_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            self.out_id = next_packet_id(p.packet.id);
        }
    }

    fn send_state_change(&mut self, link: &mut dyn Link, processor: u16) -> Result<(), LinkError> {
        self.pending = None;
        let state = self.kernel.break_in_state(processor);
        let payload = if self.kernel.version().is_ptr64() {
            StateChange::break_in(
                processor,
                self.kernel.processor_count(),
                state.thread,
                state.pc,
                &state.instruction,
            )
        } else {
            // A 32-bit kernel: its addresses are 32 bits, sign-extended on the wire.
            StateChange::break_in_x86(
                processor,
                self.kernel.processor_count(),
                (state.thread & 0xFFFF_FFFF) as u32,
                (state.pc & 0xFFFF_FFFF) as u32,
                &state.instruction,
            )
        };
        self.send_data(link, PacketType::StateChange64, payload, None)
    }

    /// Restart both id sequences; a halted kernel answers with a RESET and reports its state
    /// again.
    fn reset(&mut self, link: &mut dyn Link) -> Result<(), LinkError> {
        self.out_id = INITIAL_PACKET_ID;
        self.in_id = INITIAL_PACKET_ID;
        self.sync_next = self.options.sync_after_reset;
        self.last_delivered = None;
        if let Some(processor) = self.halted {
            self.pending = None;
            self.send_control(link, PacketType::Reset, 0)?;
            self.send_state_change(link, processor)?;
        }
        Ok(())
    }

    fn handle(
        &mut self,
        frame: Frame,
        link: &mut dyn Link,
        events: &mut dyn FnMut(Event, &DebuggeeStats),
    ) -> Result<Option<ServeEnd>, LinkError> {
        match frame {
            Frame::BreakIn => match self.halted {
                None => {
                    self.halted = Some(0);
                    self.stats.break_ins += 1;
                    self.send_state_change(link, 0)?;
                    events(Event::BrokenIn, &self.stats);
                }
                // Already stopped: a host that just arrived asks where; report the stop again
                // (the pending state change, or a new one if nothing is in flight).
                Some(processor) => match &self.pending {
                    Some(p) if p.answers.is_none() => self.resend(link)?,
                    Some(_) => {}
                    None => self.send_state_change(link, processor)?,
                },
            },
            Frame::Corrupt(_) => {
                self.stats.corrupt_received += 1;
                if self.halted.is_some() {
                    self.send_control(link, PacketType::Resend, 0)?;
                }
            }
            Frame::Packet(p) => {
                self.stats.packets_received += 1;
                match p.kind {
                    PacketType::Acknowledge => {
                        if self
                            .pending
                            .as_ref()
                            .is_some_and(|q| q.packet.id & !SYNC_PACKET_ID == p.id)
                        {
                            self.complete_pending();
                        }
                    }
                    PacketType::Resend => {
                        if self.halted.is_some() {
                            self.resend(link)?;
                        }
                    }
                    PacketType::Reset => {
                        self.stats.resets += 1;
                        if self.halted.is_none() && self.options.reset_breaks_in {
                            self.halted = Some(0);
                            self.stats.break_ins += 1;
                            self.reset(link)?;
                            events(Event::BrokenIn, &self.stats);
                        } else {
                            self.reset(link)?;
                        }
                    }
                    _ => return self.data_packet(p, link, events),
                }
            }
        }
        Ok(None)
    }

    fn data_packet(
        &mut self,
        p: Packet,
        link: &mut dyn Link,
        events: &mut dyn FnMut(Event, &DebuggeeStats),
    ) -> Result<Option<ServeEnd>, LinkError> {
        let id = p.id & !SYNC_PACKET_ID;
        if self.halted.is_none() {
            // A running kernel only polls for break-in; it re-ACKs the Continue it acted on
            // in case that ACK was lost.
            if self.last_delivered == Some(id) {
                self.send_control(link, PacketType::Acknowledge, id)?;
            }
            return Ok(None);
        }
        self.send_control(link, PacketType::Acknowledge, id)?;
        let sync = p.id & SYNC_PACKET_ID != 0;
        if sync {
            self.in_id = id;
            self.out_id = INITIAL_PACKET_ID;
        }
        if id != self.in_id {
            self.stats.duplicates_received += 1;
            // The host sent its request again: it has not seen the answer yet.
            if self.pending.as_ref().is_some_and(|q| q.answers.is_some()) {
                self.resend(link)?;
            }
            return Ok(None);
        }
        self.in_id = next_packet_id(id);
        self.last_delivered = Some(id);
        if p.kind != PacketType::StateManipulate {
            return Ok(None);
        }
        if let Some(q) = &self.pending {
            if q.answers.as_deref() == Some(p.payload.as_slice()) {
                // The same request under a new id: the host lost the answer, not the ACK.
                self.resend(link)?;
                return Ok(None);
            }
        }
        // A new request means the host has what was pending.
        self.complete_pending();
        let Ok(request) = Manipulate::decode(&p.payload) else {
            return Ok(None);
        };
        self.manipulate(request, p.payload, link, events)
    }

    fn manipulate(
        &mut self,
        request: Manipulate,
        raw: Vec<u8>,
        link: &mut dyn Link,
        events: &mut dyn FnMut(Event, &DebuggeeStats),
    ) -> Result<Option<ServeEnd>, LinkError> {
        *self
            .stats
            .requests
            .entry(api_label(request.api))
            .or_default() += 1;
        let resumes = matches!(request.api, apinum::CONTINUE | apinum::CONTINUE2);
        if !resumes {
            self.requests_seen += 1;
            if self
                .options
                .disconnect_after
                .is_some_and(|n| self.requests_seen > n && !self.disconnect_done)
            {
                self.disconnect_done = true;
                self.stats.faults_injected += 1;
                events(Event::FaultInjected("disconnect"), &self.stats);
                return Ok(Some(ServeEnd::Disconnected));
            }
            if self
                .options
                .reset_after
                .is_some_and(|n| self.requests_seen > n && !self.reset_done)
            {
                self.reset_done = true;
                self.stats.faults_injected += 1;
                events(Event::FaultInjected("reset"), &self.stats);
                self.reset(link)?;
                return Ok(None);
            }
        }
        if changes_target(request.api) {
            self.stats.write_attempts += 1;
        }
        let processor = request.processor;
        let mut reply = Manipulate {
            api: request.api,
            processor_level: request.processor_level,
            processor,
            status: status::SUCCESS,
            union: request.union,
            data: Vec::new(),
        };
        let known_processor = u32::from(processor) < self.kernel.processor_count();
        match request.api {
            apinum::CONTINUE | apinum::CONTINUE2 => {
                let continue_status = request.continue_status();
                self.stats.resumes += 1;
                self.stats.last_continue_status = Some(continue_status);
                self.halted = None;
                self.pending = None;
                events(Event::Resumed(continue_status), &self.stats);
                return Ok(None);
            }
            apinum::GET_VERSION => {
                reply.union = self.kernel.version().to_union();
            }
            apinum::READ_VIRTUAL_MEMORY | apinum::READ_PHYSICAL_MEMORY => {
                let mut m = request.memory();
                let count = (m.transfer_count as usize).min(MAX_TRANSFER);
                let mut buf = vec![0u8; count];
                let got = if request.api == apinum::READ_VIRTUAL_MEMORY {
                    self.kernel.read_virtual(processor, m.address, &mut buf)
                } else {
                    self.kernel.read_physical(m.address, &mut buf)
                }
                .min(count);
                buf.truncate(got);
                if got < count {
                    reply.status = status::UNSUCCESSFUL;
                }
                m.actual = got as u32;
                reply.set_memory(m);
                reply.data = buf;
            }
            apinum::READ_CONTROL_SPACE => {
                let mut m = request.memory();
                let count = (m.transfer_count as usize).min(MAX_TRANSFER);
                let bytes = known_processor
                    .then(|| self.kernel.control_space(processor, m.address, count))
                    .flatten();
                match bytes {
                    Some(mut bytes) => {
                        bytes.truncate(count);
                        m.actual = bytes.len() as u32;
                        reply.data = bytes;
                    }
                    None => {
                        m.actual = 0;
                        reply.status = status::UNSUCCESSFUL;
                    }
                }
                reply.set_memory(m);
            }
            apinum::GET_CONTEXT => {
                match known_processor
                    .then(|| self.kernel.context(processor))
                    .flatten()
                {
                    Some(context) => reply.data = context,
                    None => reply.status = status::UNSUCCESSFUL,
                }
            }
            more_apinum::GET_CONTEXT_EX => {
                let offset = u32_at(&request.union, 0) as usize;
                let count = (u32_at(&request.union, 4) as usize).min(MAX_TRANSFER);
                match known_processor
                    .then(|| self.kernel.context(processor))
                    .flatten()
                {
                    Some(context) if offset <= context.len() => {
                        let end = offset.saturating_add(count).min(context.len());
                        reply.data = context[offset..end].to_vec();
                        put_u32(&mut reply.union, 8, reply.data.len() as u32);
                    }
                    _ => reply.status = status::UNSUCCESSFUL,
                }
            }
            apinum::SET_CONTEXT | more_apinum::SET_CONTEXT_EX if self.options.allow_write => {
                let (offset, count) = if request.api == apinum::SET_CONTEXT {
                    (0, request.data.len())
                } else {
                    (
                        u32_at(&request.union, 0) as usize,
                        u32_at(&request.union, 4) as usize,
                    )
                };
                let bytes = &request.data[..count.min(request.data.len())];
                let done = known_processor && self.kernel.set_context(processor, offset, bytes);
                if done {
                    if request.api == more_apinum::SET_CONTEXT_EX {
                        put_u32(&mut reply.union, 8, bytes.len() as u32);
                    }
                } else {
                    reply.status = status::UNSUCCESSFUL;
                }
            }
            apinum::READ_MSR => {
                let (msr, _) = request.msr();
                match known_processor
                    .then(|| self.kernel.read_msr(processor, msr))
                    .flatten()
                {
                    Some(value) => reply.set_msr_value(value),
                    None => reply.status = status::UNSUCCESSFUL,
                }
            }
            apinum::SWITCH_PROCESSOR => {
                if known_processor {
                    self.halted = Some(processor);
                    self.send_state_change(link, processor)?;
                    return Ok(None);
                }
                reply.status = status::UNSUCCESSFUL;
            }
            apinum::REBOOT => return Ok(None),
            apinum::WRITE_VIRTUAL_MEMORY | apinum::WRITE_PHYSICAL_MEMORY
                if self.options.allow_write =>
            {
                let mut m = request.memory();
                let data = &request.data[..request.data.len().min(m.transfer_count as usize)];
                let wrote = if request.api == apinum::WRITE_VIRTUAL_MEMORY {
                    self.kernel.write_virtual(processor, m.address, data)
                } else {
                    self.kernel.write_physical(m.address, data)
                };
                if wrote < m.transfer_count as usize {
                    reply.status = status::UNSUCCESSFUL;
                }
                m.actual = wrote as u32;
                reply.set_memory(m);
            }
            _ => reply.status = status::UNSUCCESSFUL,
        }
        self.send_data(link, PacketType::StateManipulate, reply.encode(), Some(raw))?;
        Ok(None)
    }
}
