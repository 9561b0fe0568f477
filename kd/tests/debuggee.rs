//! The host engine against the debuggee engine over a socket pair, with and without faults.

#![cfg(unix)]

use kds_kd::api::{Version, AMD64_CONTEXT_LEN, MAX_TRANSFER};
use kds_kd::debuggee::{BreakInState, Debuggee, DebuggeeOptions, DebuggeeStats, Kernel, ServeEnd};
use kds_kd::fault::{FaultConfig, FaultLink, FaultState, XorShift};
use kds_kd::host::{HostOptions, KdHost, ReadFailure};
use kds_kd::link::{Link, SocketLink};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

const VIRTUAL_BASE: u64 = 0xFFFF_F800_0000_0000;
const MEMORY: usize = 256 * 1024;

/// A machine with `MEMORY` bytes of random physical memory, mapped one to one at
/// `VIRTUAL_BASE`.
struct MemoryKernel {
    physical: Vec<u8>,
    context: Vec<u8>,
}

impl MemoryKernel {
    fn new(seed: u64) -> MemoryKernel {
        let mut rng = XorShift::new(seed);
        let physical = (0..MEMORY).map(|_| rng.next_u64() as u8).collect();
        let context = (0..AMD64_CONTEXT_LEN)
            .map(|_| rng.next_u64() as u8)
            .collect();
        MemoryKernel { physical, context }
    }

    fn physical_at(&self, address: u64, buf: &mut [u8]) -> usize {
        let Ok(start) = usize::try_from(address) else {
            return 0;
        };
        if start >= self.physical.len() {
            return 0;
        }
        let n = buf.len().min(self.physical.len() - start);
        buf[..n].copy_from_slice(&self.physical[start..start + n]);
        n
    }
}

impl Kernel for MemoryKernel {
    fn version(&self) -> Version {
        Version {
            major: 0x0F,
            minor: 20348,
            protocol: 6,
            secondary: 2,
            flags: Version::FLAG_MP | Version::FLAG_DATA | Version::FLAG_PTR64,
            machine: 0x8664,
            max_packet_type: 12,
            max_state_change: 3,
            max_manipulate: 0x33,
            simulation: 0,
            kernel_base: VIRTUAL_BASE + 0x1000,
            ps_loaded_module_list: VIRTUAL_BASE + 0x2000,
            debugger_data_list: VIRTUAL_BASE + 0x3000,
        }
    }
    fn processor_count(&self) -> u32 {
        2
    }
    fn break_in_state(&self, processor: u16) -> BreakInState {
        BreakInState {
            thread: VIRTUAL_BASE + 0x8000 + u64::from(processor) * 0x100,
            pc: VIRTUAL_BASE + 0x1234,
            instruction: self.physical[0x1234..0x1244].to_vec(),
        }
    }
    fn read_virtual(&self, _processor: u16, address: u64, buf: &mut [u8]) -> usize {
        match address.checked_sub(VIRTUAL_BASE) {
            Some(pa) => self.physical_at(pa, buf),
            None => 0,
        }
    }
    fn read_physical(&self, address: u64, buf: &mut [u8]) -> usize {
        self.physical_at(address, buf)
    }
    fn context(&self, processor: u16) -> Option<Vec<u8>> {
        (processor == 0).then(|| self.context.clone())
    }
    fn control_space(&self, processor: u16, selector: u64, _len: usize) -> Option<Vec<u8>> {
        match selector {
            3 => Some(self.break_in_state(processor).thread.to_le_bytes().to_vec()),
            _ => None,
        }
    }
    fn read_msr(&self, _processor: u16, msr: u32) -> Option<u64> {
        (msr == 0xC000_0080).then_some(0xD01)
    }
    fn set_context(&mut self, processor: u16, offset: usize, bytes: &[u8]) -> bool {
        let end = offset + bytes.len();
        if processor != 0 || end > self.context.len() {
            return false;
        }
        self.context[offset..end].copy_from_slice(bytes);
        true
    }
}

/// Run a debuggee over the links that arrive on `links`, until one closes after a resume.
fn spawn_debuggee(
    options: DebuggeeOptions,
    faults: Option<FaultConfig>,
    links: mpsc::Receiver<UnixStream>,
) -> JoinHandle<(DebuggeeStats, Vec<ServeEnd>)> {
    std::thread::spawn(move || {
        let mut debuggee = Debuggee::new(MemoryKernel::new(1), options);
        let stop = AtomicBool::new(false);
        let mut fault_state = faults.map(FaultState::new);
        let mut ends = Vec::new();
        while let Ok(stream) = links.recv() {
            let socket = SocketLink::new(stream);
            let end = match fault_state.take() {
                Some(state) => {
                    let mut link = FaultLink::new(socket, state);
                    let end = debuggee.serve(&mut link, &stop, &mut |_, _| {}).unwrap();
                    fault_state = Some(link.into_state());
                    end
                }
                None => {
                    let mut link = socket;
                    debuggee.serve(&mut link, &stop, &mut |_, _| {}).unwrap()
                }
            };
            ends.push(end);
            if end == ServeEnd::Closed && !debuggee.is_halted() {
                break;
            }
        }
        (debuggee.stats().clone(), ends)
    })
}

fn host_options() -> HostOptions {
    HostOptions {
        packet_timeout: Duration::from_millis(400),
        breakin_interval: Duration::from_millis(500),
        connect_timeout: Some(Duration::from_secs(30)),
        ..HostOptions::default()
    }
}

fn fast_debuggee() -> DebuggeeOptions {
    DebuggeeOptions {
        retry_interval: Duration::from_millis(400),
        ..DebuggeeOptions::default()
    }
}

fn connected(options: DebuggeeOptions, faults: Option<FaultConfig>) -> Session {
    let (tx, rx) = mpsc::channel();
    let debuggee = spawn_debuggee(options, faults, rx);
    let (host_end, kernel_end) = UnixStream::pair().unwrap();
    tx.send(kernel_end).unwrap();
    let host = KdHost::new(Box::new(SocketLink::new(host_end)), host_options());
    Session {
        host,
        debuggee,
        links: tx,
    }
}

struct Session {
    host: KdHost,
    debuggee: JoinHandle<(DebuggeeStats, Vec<ServeEnd>)>,
    links: mpsc::Sender<UnixStream>,
}

impl Session {
    fn finish(self) -> (DebuggeeStats, Vec<ServeEnd>) {
        drop(self.host);
        drop(self.links);
        self.debuggee.join().unwrap()
    }
}

/// `KdHost::read_physical`, which must succeed: a state change in the middle of a
/// multi-transfer read (the kernel's answer to a RESET or a reconnect) repeats the same stop
/// and keeps the blocks already fetched.
fn read_physical(host: &mut KdHost, address: u64, buf: &mut [u8]) {
    host.read_physical(address, buf).unwrap();
}

fn check_reads(host: &mut KdHost, reference: &MemoryKernel) {
    // Across 512-byte blocks and several 3944-byte transfers.
    for (address, len) in [
        (0u64, 16usize),
        (500, 3 * MAX_TRANSFER + 700),
        (0x1_0000 - 3, 2 * MAX_TRANSFER + 9),
        (0x2_0000 + 511, 1),
    ] {
        let mut buf = vec![0u8; len];
        read_physical(host, address, &mut buf);
        let start = address as usize;
        assert_eq!(
            buf,
            reference.physical[start..start + len],
            "physical {address:#x}"
        );
    }
    let mut buf = vec![0u8; MAX_TRANSFER + 100];
    host.read_virtual(VIRTUAL_BASE + 0x3000 - 50, &mut buf)
        .unwrap();
    assert_eq!(
        buf,
        reference.physical[0x3000 - 50..0x3000 - 50 + buf.len()]
    );
}

#[test]
fn host_connects_reads_and_resumes() {
    let reference = MemoryKernel::new(1);
    let mut s = connected(fast_debuggee(), None);
    let version = s.host.connect().unwrap();
    assert_eq!(version, reference.version());
    let halted = s.host.halted().unwrap().clone();
    assert!(halted.is_break_in());
    assert_eq!(halted.processor_count, 2);
    assert_eq!(halted.program_counter, VIRTUAL_BASE + 0x1234);
    assert_eq!(halted.thread, reference.break_in_state(0).thread);

    check_reads(&mut s.host, &reference);

    // A read that runs off the end of memory names the first missing byte.
    let mut tail = vec![0u8; 600];
    let err = s
        .host
        .read_virtual(VIRTUAL_BASE + MEMORY as u64 - 100, &mut tail)
        .unwrap_err();
    assert!(
        matches!(err, ReadFailure::Unreadable { address } if address == VIRTUAL_BASE + MEMORY as u64),
        "{err}"
    );
    assert_eq!(&tail[..100], &reference.physical[MEMORY - 100..]);

    assert_eq!(s.host.get_context(0).unwrap(), reference.context);
    assert!(s.host.get_context(1).is_err());
    assert_eq!(
        s.host.read_control_space(1, 3, 8).unwrap(),
        reference.break_in_state(1).thread.to_le_bytes()
    );
    assert_eq!(s.host.read_msr(0, 0xC000_0080).unwrap(), 0xD01);
    s.host.resume().unwrap();

    let (stats, ends) = s.finish();
    assert_eq!(stats.resumes, 1);
    assert_eq!(stats.break_ins, 1);
    assert_eq!(stats.write_attempts, 0);
    assert_eq!(stats.requests.get("GetVersion"), Some(&1));
    assert_eq!(stats.requests.get("Continue2"), Some(&1));
    assert_eq!(ends, [ServeEnd::Closed]);
}

#[test]
fn reads_survive_flips_drops_duplicates_and_a_reset() {
    let reference = MemoryKernel::new(1);
    let options = DebuggeeOptions {
        reset_after: Some(4),
        ..fast_debuggee()
    };
    let faults = FaultConfig {
        flip: 0.01,
        drop: 0.01,
        duplicate: 0.05,
        seed: 3,
        baud: None,
        ..FaultConfig::default()
    };
    let mut s = connected(options, Some(faults));
    s.host.connect().unwrap();
    check_reads(&mut s.host, &reference);
    // The whole memory, block by block through the cache.
    let mut all = vec![0u8; MEMORY];
    read_physical(&mut s.host, 0, &mut all);
    assert!(all == reference.physical, "physical memory differs");
    s.host.resume().unwrap();
    let (stats, _) = s.finish();
    assert_eq!(stats.resumes, 1);
    assert_eq!(stats.faults_injected, 1, "the reset mid-read");
    assert!(stats.resets >= 1);
}

#[test]
fn heavy_faults_still_give_right_bytes() {
    let reference = MemoryKernel::new(1);
    let faults = FaultConfig {
        flip: 0.1,
        drop: 0.1,
        duplicate: 0.2,
        seed: 11,
        baud: None,
        ..FaultConfig::default()
    };
    let mut s = connected(fast_debuggee(), Some(faults));
    s.host.connect().unwrap();
    check_reads(&mut s.host, &reference);
    let stats = s.host.stats();
    assert!(stats.corrupt_packets + stats.resends > 0, "{stats:?}");
    s.host.resume().unwrap();
    let (stats, _) = s.finish();
    assert_eq!(stats.resumes, 1);
}

#[test]
fn a_link_that_goes_away_is_reopened_and_the_kernel_is_still_halted() {
    let reference = MemoryKernel::new(1);
    let options = DebuggeeOptions {
        disconnect_after: Some(3),
        ..fast_debuggee()
    };
    let mut s = connected(options, None);
    let links = s.links.clone();
    s.host.set_reopen(Box::new(move || {
        let (host_end, kernel_end) = UnixStream::pair()?;
        links
            .send(kernel_end)
            .map_err(|e| kds_kd::link::LinkError::Closed(e.to_string()))?;
        Ok(Box::new(SocketLink::new(host_end)) as Box<dyn Link>)
    }));
    s.host.connect().unwrap();
    check_reads(&mut s.host, &reference);
    assert_eq!(s.host.stats().reconnects, 1);
    s.host.resume().unwrap();
    let (stats, ends) = s.finish();
    assert_eq!(ends, [ServeEnd::Disconnected, ServeEnd::Closed]);
    assert_eq!(stats.resumes, 1);
    assert_eq!(stats.break_ins, 1, "halted across the reconnect");
    assert_eq!(stats.faults_injected, 1);
}

#[test]
fn writes_are_refused_and_counted() {
    let mut s = connected(fast_debuggee(), None);
    s.host.connect().unwrap();
    let mut request =
        kds_kd::api::Manipulate::read(kds_kd::api::apinum::WRITE_PHYSICAL_MEMORY, 0, 0x1000, 4);
    request.data = vec![1, 2, 3, 4];
    // The host itself refuses without allow_write; a host that allows it meets the kernel's
    // refusal.
    assert!(s.host.exchange(request.clone()).is_err());
    s.host.resume().unwrap();
    let (stats, _) = s.finish();
    assert_eq!(stats.write_attempts, 0);

    let (tx, rx) = mpsc::channel();
    let debuggee = spawn_debuggee(fast_debuggee(), None, rx);
    let (host_end, kernel_end) = UnixStream::pair().unwrap();
    tx.send(kernel_end).unwrap();
    let mut host = KdHost::new(
        Box::new(SocketLink::new(host_end)),
        HostOptions {
            allow_write: true,
            ..host_options()
        },
    );
    host.connect().unwrap();
    let reply = host.exchange(request).unwrap();
    assert_eq!(reply.status, kds_kd::api::status::UNSUCCESSFUL);
    host.resume().unwrap();
    drop(host);
    drop(tx);
    let (stats, _) = debuggee.join().unwrap();
    assert_eq!(stats.write_attempts, 1);
}

#[test]
fn set_context_ex_needs_allow_write_and_is_read_back() {
    use kds_kd::api::Manipulate;
    use kds_kd::debuggee::more_apinum::{GET_CONTEXT_EX, SET_CONTEXT_EX};
    let reference = MemoryKernel::new(1);
    let set = |offset: u32, bytes: &[u8]| {
        let mut m = Manipulate::new(SET_CONTEXT_EX, 0);
        m.union[0..4].copy_from_slice(&offset.to_le_bytes());
        m.union[4..8].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        m.data = bytes.to_vec();
        m
    };
    let new_rip = 0xFFFF_F800_1234_5678u64.to_le_bytes();

    // Refused without --allow-write, and counted.
    let mut s = connected(fast_debuggee(), None);
    s.host.connect().unwrap();
    let reply = s.host.exchange(set(0xF8, &new_rip)).unwrap();
    assert_eq!(reply.status, kds_kd::api::status::UNSUCCESSFUL);
    assert_eq!(s.host.get_context(0).unwrap(), reference.context);
    s.host.resume().unwrap();
    let (stats, _) = s.finish();
    assert_eq!(stats.write_attempts, 1);
    assert_eq!(stats.requests.get("SetContextEx"), Some(&1));

    // Carried out with it: BytesCopied echoes the count, GetContextEx reads it back.
    let options = DebuggeeOptions {
        allow_write: true,
        ..fast_debuggee()
    };
    let mut s = connected(options, None);
    s.host.connect().unwrap();
    let reply = s.host.exchange(set(0xF8, &new_rip)).unwrap();
    assert_eq!(reply.status, 0);
    assert_eq!(&reply.union[8..12], &8u32.to_le_bytes());
    let mut get = Manipulate::new(GET_CONTEXT_EX, 0);
    get.union[0..4].copy_from_slice(&0xF0u32.to_le_bytes());
    get.union[4..8].copy_from_slice(&0x10u32.to_le_bytes());
    let reply = s.host.exchange(get).unwrap();
    assert_eq!(&reply.data[..8], &reference.context[0xF0..0xF8]);
    assert_eq!(&reply.data[8..], &new_rip);
    s.host.resume().unwrap();
    let (stats, _) = s.finish();
    assert_eq!(stats.write_attempts, 1);
    assert_eq!(stats.resumes, 1);
}

/// pykdclient's handshake: a RESET (id INITIAL|SYNC) and no break-in byte; it needs a RESET
/// back, then the state change. Its Continue2 carries ContinueStatus 0.
#[test]
fn a_reset_alone_stops_a_running_kernel() {
    use kds_kd::api::{apinum, Manipulate, StateChange};
    use kds_kd::framer::{Frame, FrameDecoder};
    use kds_kd::packet::{Packet, PacketType};
    use std::io::{Read, Write};

    let (tx, rx) = mpsc::channel();
    let debuggee = spawn_debuggee(fast_debuggee(), None, rx);
    let (mut wire, kernel_end) = UnixStream::pair().unwrap();
    tx.send(kernel_end).unwrap();
    wire.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut decoder = FrameDecoder::default();
    let mut next = |wire: &mut UnixStream| -> Packet {
        let mut b = [0u8; 1];
        loop {
            wire.read_exact(&mut b).unwrap();
            if let Some(Frame::Packet(p)) = decoder.push(b[0]) {
                return p;
            }
        }
    };
    let send = |wire: &mut UnixStream, p: Packet| wire.write_all(&p.encode()).unwrap();

    send(&mut wire, Packet::control(PacketType::Reset, 0x8080_0800));
    assert_eq!(next(&mut wire).kind, PacketType::Reset);
    let state = next(&mut wire);
    assert_eq!(state.kind, PacketType::StateChange64);
    assert_eq!(state.id, 0x8080_0800);
    assert!(StateChange::decode(&state.payload).unwrap().is_break_in());
    send(
        &mut wire,
        Packet::control(PacketType::Acknowledge, 0x8080_0000),
    );

    let request = Manipulate::new(apinum::GET_VERSION, 0).encode();
    send(
        &mut wire,
        Packet::data(PacketType::StateManipulate, 0x8080_0000, request).unwrap(),
    );
    let ack = next(&mut wire);
    assert_eq!((ack.kind, ack.id), (PacketType::Acknowledge, 0x8080_0000));
    let reply = next(&mut wire);
    assert_eq!(
        (reply.kind, reply.id),
        (PacketType::StateManipulate, 0x8080_0001)
    );
    let version = Version::from_union(&Manipulate::decode(&reply.payload).unwrap().union);
    assert_eq!(version, MemoryKernel::new(1).version());
    send(
        &mut wire,
        Packet::control(PacketType::Acknowledge, 0x8080_0001),
    );

    let mut resume = Manipulate::resume(0);
    resume.union[0..4].copy_from_slice(&0u32.to_le_bytes());
    send(
        &mut wire,
        Packet::data(PacketType::StateManipulate, 0x8080_0001, resume.encode()).unwrap(),
    );
    let ack = next(&mut wire);
    assert_eq!((ack.kind, ack.id), (PacketType::Acknowledge, 0x8080_0001));
    drop(wire);
    drop(tx);
    let (stats, _) = debuggee.join().unwrap();
    assert_eq!(stats.resumes, 1);
    assert_eq!(stats.last_continue_status, Some(0));
    assert_eq!(stats.break_ins, 1);
    assert_eq!(stats.resets, 1);
}

#[test]
fn a_second_host_finds_the_kernel_still_halted() {
    let reference = MemoryKernel::new(1);
    let mut s = connected(fast_debuggee(), None);
    s.host.connect().unwrap();
    let mut buf = [0u8; 64];
    read_physical(&mut s.host, 0x800, &mut buf);
    // Gone without a Continue.
    let (host_end, kernel_end) = UnixStream::pair().unwrap();
    s.host = KdHost::new(Box::new(SocketLink::new(host_end)), host_options());
    s.links.send(kernel_end).unwrap();
    let version = s.host.connect().unwrap();
    assert_eq!(version, reference.version());
    read_physical(&mut s.host, 0x800, &mut buf);
    assert_eq!(buf, reference.physical[0x800..0x840]);
    s.host.resume().unwrap();
    let (stats, ends) = s.finish();
    assert_eq!(ends, [ServeEnd::Closed, ServeEnd::Closed]);
    assert_eq!(stats.break_ins, 1);
    assert_eq!(stats.resumes, 1);
}
