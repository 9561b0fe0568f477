//! The payloads KDCOM carries: manipulate requests and replies (DBGKD_MANIPULATE_STATE64),
//! wait-state changes (DBGKD_ANY_WAIT_STATE_CHANGE) and debug I/O. Layouts from
//! ../shared/KD-PROTOCOL.md; every decoder checks lengths and returns typed errors.

use thiserror::Error;

/// Length of the manipulate header, union included; bulk data follows it.
pub const MANIPULATE_HEADER_LEN: usize = 56;
/// Offset of the 40-byte union in a manipulate packet.
const UNION: usize = 16;
/// Largest bulk transfer one manipulate packet carries.
pub const MAX_TRANSFER: usize = crate::packet::MAX_PAYLOAD - MANIPULATE_HEADER_LEN;
/// Length of DBGKD_ANY_WAIT_STATE_CHANGE without trailing extras.
pub const STATE_CHANGE_LEN: usize = 0xF0;
/// Length of an AMD64 `CONTEXT`.
pub const AMD64_CONTEXT_LEN: usize = 1232;
/// Bytes of the x86 `CONTEXT` a 32-bit kernel's GetContext returns.
pub const X86_CONTEXT_LEN: usize = 0x2CC;

/// NTSTATUS values the protocol uses.
pub mod status {
    pub const SUCCESS: u32 = 0;
    pub const UNSUCCESSFUL: u32 = 0xC000_0001;
    pub const INVALID_PARAMETER: u32 = 0xC000_000D;
    pub const DBG_CONTINUE: u32 = 0x0001_0002;
    pub const BREAKPOINT: u32 = 0x8000_0003;
}

/// Manipulate API numbers.
pub mod apinum {
    pub const READ_VIRTUAL_MEMORY: u32 = 0x3130;
    pub const WRITE_VIRTUAL_MEMORY: u32 = 0x3131;
    pub const GET_CONTEXT: u32 = 0x3132;
    pub const SET_CONTEXT: u32 = 0x3133;
    pub const CONTINUE: u32 = 0x3136;
    pub const READ_CONTROL_SPACE: u32 = 0x3137;
    pub const WRITE_CONTROL_SPACE: u32 = 0x3138;
    pub const REBOOT: u32 = 0x313B;
    pub const CONTINUE2: u32 = 0x313C;
    pub const READ_PHYSICAL_MEMORY: u32 = 0x313D;
    pub const WRITE_PHYSICAL_MEMORY: u32 = 0x313E;
    pub const GET_VERSION: u32 = 0x3146;
    pub const SWITCH_PROCESSOR: u32 = 0x3150;
    pub const READ_MSR: u32 = 0x3152;
    pub const WRITE_MSR: u32 = 0x3153;
}

/// State-change kinds (NewState).
pub mod newstate {
    pub const EXCEPTION: u32 = 0x3030;
    pub const LOAD_SYMBOLS: u32 = 0x3031;
    pub const COMMAND_STRING: u32 = 0x3032;
}

/// Debug I/O API numbers.
pub mod debugio {
    pub const PRINT_STRING: u32 = 0x3230;
    pub const GET_STRING: u32 = 0x3231;
}

/// A payload that does not have the layout its type promises.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("{what} needs {needed} bytes, the packet has {found}")]
    Short {
        what: &'static str,
        needed: usize,
        found: usize,
    },
}

fn need(what: &'static str, bytes: &[u8], needed: usize) -> Result<(), DecodeError> {
    if bytes.len() < needed {
        return Err(DecodeError::Short {
            what,
            needed,
            found: bytes.len(),
        });
    }
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(le)
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A decoded DBGKD_MANIPULATE_STATE64: the header fields, the raw union and the bulk data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manipulate {
    pub api: u32,
    pub processor_level: u16,
    pub processor: u16,
    pub status: u32,
    pub union: [u8; 40],
    pub data: Vec<u8>,
}

impl Manipulate {
    /// A request for `api` on `processor` with a zeroed union.
    #[must_use]
    pub fn new(api: u32, processor: u16) -> Manipulate {
        Manipulate {
            api,
            processor_level: 0,
            processor,
            status: status::SUCCESS,
            union: [0; 40],
            data: Vec::new(),
        }
    }

    /// Decode a manipulate payload.
    pub fn decode(payload: &[u8]) -> Result<Manipulate, DecodeError> {
        need("a manipulate packet", payload, MANIPULATE_HEADER_LEN)?;
        let mut union = [0u8; 40];
        union.copy_from_slice(&payload[UNION..MANIPULATE_HEADER_LEN]);
        Ok(Manipulate {
            api: u32_at(payload, 0),
            processor_level: u16_at(payload, 4),
            processor: u16_at(payload, 6),
            status: u32_at(payload, 8),
            union,
            data: payload[MANIPULATE_HEADER_LEN..].to_vec(),
        })
    }

    /// The payload bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; MANIPULATE_HEADER_LEN];
        put_u32(&mut out, 0, self.api);
        put_u16(&mut out, 4, self.processor_level);
        put_u16(&mut out, 6, self.processor);
        put_u32(&mut out, 8, self.status);
        out[UNION..].copy_from_slice(&self.union);
        out.extend_from_slice(&self.data);
        out
    }

    /// The union as DBGKD_READ_MEMORY64 / WRITE_MEMORY64 (also control space).
    #[must_use]
    pub fn memory(&self) -> MemoryUnion {
        MemoryUnion {
            address: u64_at(&self.union, 0),
            transfer_count: u32_at(&self.union, 8),
            actual: u32_at(&self.union, 12),
        }
    }

    /// Set the union as DBGKD_READ_MEMORY64.
    pub fn set_memory(&mut self, m: MemoryUnion) {
        put_u64(&mut self.union, 0, m.address);
        put_u32(&mut self.union, 8, m.transfer_count);
        put_u32(&mut self.union, 12, m.actual);
    }

    /// A memory-read request: virtual, physical or control space.
    #[must_use]
    pub fn read(api: u32, processor: u16, address: u64, count: u32) -> Manipulate {
        let mut m = Manipulate::new(api, processor);
        m.set_memory(MemoryUnion {
            address,
            transfer_count: count,
            actual: 0,
        });
        m
    }

    /// The union as DBGKD_READ_WRITE_MSR: (msr, value).
    #[must_use]
    pub fn msr(&self) -> (u32, u64) {
        let low = u64::from(u32_at(&self.union, 4));
        let high = u64::from(u32_at(&self.union, 8));
        (u32_at(&self.union, 0), low | (high << 32))
    }

    /// A ReadMSR request.
    #[must_use]
    pub fn read_msr(processor: u16, msr: u32) -> Manipulate {
        let mut m = Manipulate::new(apinum::READ_MSR, processor);
        put_u32(&mut m.union, 0, msr);
        m
    }

    /// Set the MSR value of a ReadMSR reply.
    pub fn set_msr_value(&mut self, value: u64) {
        put_u32(&mut self.union, 4, value as u32);
        put_u32(&mut self.union, 8, (value >> 32) as u32);
    }

    /// A Continue2 request that lets the target run (DBG_CONTINUE, no tracing, Dr7 0x400).
    #[must_use]
    pub fn resume(processor: u16) -> Manipulate {
        let mut m = Manipulate::new(apinum::CONTINUE2, processor);
        put_u32(&mut m.union, 0, status::DBG_CONTINUE);
        put_u32(&mut m.union, 4, 0);
        put_u64(&mut m.union, 8, 0x400);
        m
    }

    /// ContinueStatus of a Continue or Continue2 request.
    #[must_use]
    pub fn continue_status(&self) -> u32 {
        u32_at(&self.union, 0)
    }

    /// TraceFlag of a Continue2 request (non-zero asks for a single step).
    #[must_use]
    pub fn continue_trace_flag(&self) -> u32 {
        u32_at(&self.union, 4)
    }

    /// Whether this request changes the target (memory, registers, MSRs, reboot).
    #[must_use]
    pub fn is_write(&self) -> bool {
        matches!(
            self.api,
            apinum::WRITE_VIRTUAL_MEMORY
                | apinum::WRITE_PHYSICAL_MEMORY
                | apinum::SET_CONTEXT
                | apinum::WRITE_CONTROL_SPACE
                | apinum::WRITE_MSR
                | apinum::REBOOT
        )
    }
}

/// DBGKD_READ_MEMORY64 (and WRITE, and control space): address, count, actual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUnion {
    pub address: u64,
    pub transfer_count: u32,
    /// Bytes actually transferred in a reply; the caching flag in a physical request.
    pub actual: u32,
}

/// DBGKD_GET_VERSION64, the union of a GetVersion reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Version {
    pub major: u16,
    /// The build number.
    pub minor: u16,
    pub protocol: u8,
    pub secondary: u8,
    pub flags: u16,
    pub machine: u16,
    pub max_packet_type: u8,
    pub max_state_change: u8,
    pub max_manipulate: u8,
    pub simulation: u8,
    pub kernel_base: u64,
    pub ps_loaded_module_list: u64,
    pub debugger_data_list: u64,
}

impl Version {
    pub const FLAG_MP: u16 = 1;
    pub const FLAG_DATA: u16 = 2;
    pub const FLAG_PTR64: u16 = 4;

    /// From a manipulate union.
    #[must_use]
    pub fn from_union(u: &[u8; 40]) -> Version {
        Version {
            major: u16_at(u, 0),
            minor: u16_at(u, 2),
            protocol: u[4],
            secondary: u[5],
            flags: u16_at(u, 6),
            machine: u16_at(u, 8),
            max_packet_type: u[10],
            max_state_change: u[11],
            max_manipulate: u[12],
            simulation: u[13],
            kernel_base: u64_at(u, 16),
            ps_loaded_module_list: u64_at(u, 24),
            debugger_data_list: u64_at(u, 32),
        }
    }

    /// Into a manipulate union.
    #[must_use]
    pub fn to_union(&self) -> [u8; 40] {
        let mut u = [0u8; 40];
        put_u16(&mut u, 0, self.major);
        put_u16(&mut u, 2, self.minor);
        u[4] = self.protocol;
        u[5] = self.secondary;
        put_u16(&mut u, 6, self.flags);
        put_u16(&mut u, 8, self.machine);
        u[10] = self.max_packet_type;
        u[11] = self.max_state_change;
        u[12] = self.max_manipulate;
        u[13] = self.simulation;
        put_u64(&mut u, 16, self.kernel_base);
        put_u64(&mut u, 24, self.ps_loaded_module_list);
        put_u64(&mut u, 32, self.debugger_data_list);
        u
    }

    /// Whether the kernel is 64-bit.
    #[must_use]
    pub fn is_ptr64(&self) -> bool {
        self.flags & Version::FLAG_PTR64 != 0
    }

    /// "Free" (0x0F) or "Checked" (0x0C) build, as WinDbg's banner says it.
    #[must_use]
    pub fn build_kind(&self) -> &'static str {
        if self.major == 0x0C {
            "checked"
        } else {
            "free"
        }
    }
}

/// The part of DBGKD_ANY_WAIT_STATE_CHANGE a host acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub new_state: u32,
    pub processor_level: u16,
    pub processor: u16,
    pub processor_count: u32,
    pub thread: u64,
    pub program_counter: u64,
    /// For exceptions: the code (0x80000003 for a break-in); for load-symbols: 0.
    pub exception_code: u32,
    pub first_chance: bool,
    /// For load-symbols: the image path that follows the structure.
    pub path: Option<String>,
    /// The whole structure as received (control report included).
    pub raw: Vec<u8>,
}

impl StateChange {
    /// Decode a STATE_CHANGE64 payload; trailing bytes beyond 0xF0 are allowed.
    pub fn decode(payload: &[u8]) -> Result<StateChange, DecodeError> {
        need("a state change", payload, STATE_CHANGE_LEN)?;
        let new_state = u32_at(payload, 0);
        let (exception_code, first_chance, path) = match new_state {
            newstate::EXCEPTION => (u32_at(payload, 0x20), u32_at(payload, 0xB8) != 0, None),
            newstate::LOAD_SYMBOLS => {
                let tail = &payload[STATE_CHANGE_LEN..];
                let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
                (
                    0,
                    false,
                    Some(String::from_utf8_lossy(&tail[..end]).into_owned()),
                )
            }
            _ => (0, false, None),
        };
        Ok(StateChange {
            new_state,
            processor_level: u16_at(payload, 4),
            processor: u16_at(payload, 6),
            processor_count: u32_at(payload, 8),
            thread: u64_at(payload, 0x10),
            program_counter: u64_at(payload, 0x18),
            exception_code,
            first_chance,
            path,
            raw: payload.to_vec(),
        })
    }

    /// A first-chance breakpoint exception, as a 64-bit kernel reports a break-in.
    /// `instruction` holds up to 16 bytes at the program counter for the control report.
    #[must_use]
    pub fn break_in(
        processor: u16,
        processor_count: u32,
        thread: u64,
        pc: u64,
        instruction: &[u8],
    ) -> Vec<u8> {
        let mut b = Self::break_in_common(processor, processor_count, thread, pc);
        // AMD64 control report: Dr7 0x400 idle, then the instruction stream.
        put_u64(&mut b, 0xC8, 0x400);
        let n = instruction.len().min(16);
        put_u16(&mut b, 0xD4, n as u16);
        b[0xD8..0xD8 + n].copy_from_slice(&instruction[..n]);
        b
    }

    /// The same break-in as a 32-bit kernel reports it: `thread` and `pc` sign-extended
    /// into the 64-bit fields, and the x86 control report (Dr6, Dr7, instruction count,
    /// report flags, 16 instruction bytes, Cs/Ds/Es/Fs, EFlags).
    #[must_use]
    pub fn break_in_x86(
        processor: u16,
        processor_count: u32,
        thread: u32,
        pc: u32,
        instruction: &[u8],
    ) -> Vec<u8> {
        let widen = |v: u32| v as i32 as i64 as u64;
        let mut b = Self::break_in_common(processor, processor_count, widen(thread), widen(pc));
        put_u32(&mut b, 0xC4, 0x400);
        let n = instruction.len().min(16);
        put_u16(&mut b, 0xC8, n as u16);
        // REPORT_INCLUDES_SEGS | REPORT_STANDARD_CS: kernel code segment 8.
        put_u16(&mut b, 0xCA, 0x3);
        b[0xCC..0xCC + n].copy_from_slice(&instruction[..n]);
        put_u16(&mut b, 0xDC, 0x08);
        put_u16(&mut b, 0xDE, 0x23);
        put_u16(&mut b, 0xE0, 0x23);
        put_u16(&mut b, 0xE2, 0x30);
        put_u32(&mut b, 0xE4, 0x246);
        b
    }

    fn break_in_common(processor: u16, processor_count: u32, thread: u64, pc: u64) -> Vec<u8> {
        let mut b = vec![0u8; STATE_CHANGE_LEN];
        put_u32(&mut b, 0, newstate::EXCEPTION);
        put_u16(&mut b, 6, processor);
        put_u32(&mut b, 8, processor_count);
        put_u64(&mut b, 0x10, thread);
        put_u64(&mut b, 0x18, pc);
        put_u32(&mut b, 0x20, status::BREAKPOINT);
        put_u64(&mut b, 0x30, pc);
        put_u32(&mut b, 0xB8, 1);
        b
    }

    /// Whether this is the breakpoint a break-in produces.
    #[must_use]
    pub fn is_break_in(&self) -> bool {
        self.new_state == newstate::EXCEPTION && self.exception_code == status::BREAKPOINT
    }
}

/// A DEBUG_IO print request's text, if the payload is one.
pub fn debug_print(payload: &[u8]) -> Result<Option<String>, DecodeError> {
    need("a debug I/O packet", payload, 16)?;
    if u32_at(payload, 0) != debugio::PRINT_STRING {
        return Ok(None);
    }
    let length = u32_at(payload, 8) as usize;
    let text = &payload[16..];
    let text = &text[..length.min(text.len())];
    Ok(Some(String::from_utf8_lossy(text).into_owned()))
}

/// A DEBUG_IO print packet's payload.
#[must_use]
pub fn encode_debug_print(processor: u16, text: &str) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    put_u32(&mut b, 0, debugio::PRINT_STRING);
    put_u16(&mut b, 6, processor);
    put_u32(&mut b, 8, text.len() as u32);
    b.extend_from_slice(text.as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manipulate_round_trips() {
        let mut m = Manipulate::read(apinum::READ_VIRTUAL_MEMORY, 1, 0xFFFF_F800_0000_1000, 3944);
        m.data = vec![9; 5];
        let bytes = m.encode();
        assert_eq!(bytes.len(), 61);
        assert_eq!(&bytes[16..24], &0xFFFF_F800_0000_1000u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &3944u32.to_le_bytes());
        let back = Manipulate::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.memory().transfer_count, 3944);
    }

    #[test]
    fn continue2_layout() {
        let bytes = Manipulate::resume(0).encode();
        assert_eq!(&bytes[0..4], &0x313Cu32.to_le_bytes());
        assert_eq!(&bytes[16..20], &0x0001_0002u32.to_le_bytes());
        assert_eq!(&bytes[20..24], &0u32.to_le_bytes());
        assert_eq!(&bytes[24..32], &0x400u64.to_le_bytes());
    }

    #[test]
    fn version_round_trips() {
        let v = Version {
            major: 0x0F,
            minor: 19041,
            protocol: 6,
            secondary: 2,
            flags: Version::FLAG_MP | Version::FLAG_DATA | Version::FLAG_PTR64,
            machine: 0x8664,
            max_packet_type: 12,
            max_state_change: 3,
            max_manipulate: 0x33,
            simulation: 0,
            kernel_base: 0xFFFF_F800_1000_0000,
            ps_loaded_module_list: 0xFFFF_F800_1020_0000,
            debugger_data_list: 0xFFFF_F800_1030_0000,
        };
        let u = v.to_union();
        assert_eq!(&u[16..24], &0xFFFF_F800_1000_0000u64.to_le_bytes());
        assert_eq!(Version::from_union(&u), v);
        assert!(v.is_ptr64());
    }

    #[test]
    fn break_in_state_change_decodes() {
        let raw =
            StateChange::break_in(0, 2, 0xFFFF_A000_0000_0080, 0xFFFF_F800_1000_2000, &[0xCC]);
        let s = StateChange::decode(&raw).unwrap();
        assert!(s.is_break_in());
        assert!(s.first_chance);
        assert_eq!(s.processor_count, 2);
        assert_eq!(s.thread, 0xFFFF_A000_0000_0080);
        assert_eq!(s.program_counter, 0xFFFF_F800_1000_2000);
    }

    #[test]
    fn x86_break_in_carries_sign_extended_addresses_and_the_x86_control_report() {
        let raw = StateChange::break_in_x86(1, 2, 0x8554_2020, 0x8288_1234, &[0xCC, 0x90]);
        assert_eq!(raw.len(), STATE_CHANGE_LEN);
        let s = StateChange::decode(&raw).unwrap();
        assert!(s.is_break_in());
        assert_eq!(s.processor, 1);
        assert_eq!(s.thread, 0xFFFF_FFFF_8554_2020);
        assert_eq!(s.program_counter, 0xFFFF_FFFF_8288_1234);
        // X86_DBGKD_CONTROL_REPORT: Dr6, Dr7, InstructionCount, ReportFlags, stream, Cs..Fs.
        assert_eq!(u32_at(&raw, 0xC4), 0x400);
        assert_eq!(u16_at(&raw, 0xC8), 2);
        assert_eq!(&raw[0xCC..0xCE], &[0xCC, 0x90]);
        assert_eq!(u16_at(&raw, 0xDC), 8);
        assert_eq!(u32_at(&raw, 0xE4), 0x246);
    }

    #[test]
    fn short_payloads_are_errors() {
        assert!(Manipulate::decode(&[0; 55]).is_err());
        assert!(StateChange::decode(&[0; 0xEF]).is_err());
        assert!(debug_print(&[0; 4]).is_err());
    }

    #[test]
    fn debug_print_round_trips() {
        let p = encode_debug_print(0, "hello\n");
        assert_eq!(debug_print(&p).unwrap().as_deref(), Some("hello\n"));
    }
}
