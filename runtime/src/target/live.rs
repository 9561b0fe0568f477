//! A live kernel over KDCOM as a [`Target`]: the handshake fills the identity, physical reads
//! go through the host engine's block cache, and the target is resumed when this value goes
//! away unless the user asked to leave it broken in.

use super::{
    Arch, Capabilities, Consistency, ProcessorContext, ReadError, Target, TargetError,
    TargetIdentity, TargetKind, X64Context, X86Context,
};
use kds_kd::api::Version;
use kds_kd::connection::Connection;
use kds_kd::host::{HostOptions, KdError, KdHost, Notice, ReadFailure, WireStats};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Control-space selector of the processor's KSPECIAL_REGISTERS on AMD64.
const SPECIAL_REGISTERS: u64 = 2;
/// Cr0, Cr2, Cr3, Cr4 open KSPECIAL_REGISTERS, eight bytes each (fixed by the AMD64 KD
/// protocol, not by a kernel build): Cr3 is the third.
const CR3_OFFSET: usize = 0x10;
/// On x86, control-space addresses are offsets into the processor's KPROCESSOR_STATE: its
/// CONTEXT (0x2CC bytes), then KSPECIAL_REGISTERS, whose Cr0, Cr2, Cr3, Cr4 are four bytes
/// each. Fixed by the x86 KD protocol (the debugger reads them before it has symbols).
const X86_SPECIAL_REGISTERS: u64 = 0x2CC;
const X86_CR3_OFFSET: usize = 8;
const X86_CR4_OFFSET: usize = 0xC;
/// CR4.PAE: the kernel pages with 3-level PAE tables.
const CR4_PAE: u32 = 1 << 5;

/// How to run a live session.
#[derive(Clone, Default)]
pub struct LiveOptions {
    pub host: HostOptions,
    /// Leave the target broken in when the session ends.
    pub stay_broken: bool,
}

/// A live kernel, broken in.
pub struct KdTarget {
    host: Mutex<KdHost>,
    identity: TargetIdentity,
    version: Version,
    break_in: BreakIn,
    stay_broken: bool,
    can_write: bool,
}

/// Why the target stopped, as its state change said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BreakIn {
    pub exception_code: u32,
    pub first_chance: bool,
    pub processor: u16,
    pub thread: u64,
    pub program_counter: u64,
}

impl KdTarget {
    /// Open the link, break in, and read what the identity needs (version, CR3, KDBG).
    pub fn connect(
        connection: &Connection,
        options: LiveOptions,
        notify: Box<dyn FnMut(Notice) + Send>,
    ) -> Result<KdTarget, KdError> {
        let link = connection.open()?;
        let mut host = KdHost::new(link, options.host.clone());
        host.set_notify(notify);
        let reopen = connection.clone();
        host.set_reopen(Box::new(move || reopen.open()));
        let version = host.connect()?;
        // From here the kernel is frozen: whatever fails, let it run again before returning.
        match Self::identify(&mut host, connection, version) {
            Ok((identity, break_in)) => Ok(KdTarget {
                host: Mutex::new(host),
                identity,
                version,
                break_in,
                stay_broken: options.stay_broken,
                can_write: options.host.allow_write,
            }),
            Err(e) => {
                if !options.stay_broken {
                    let _ = host.resume();
                }
                Err(e)
            }
        }
    }

    /// The identity a broken-in kernel gives: CR3, the KDBG, the processor count.
    fn identify(
        host: &mut KdHost,
        connection: &Connection,
        version: Version,
    ) -> Result<(TargetIdentity, BreakIn), KdError> {
        let state = host.halted().cloned().ok_or(KdError::NotHalted)?;
        let (arch, directory_table_base) = if version.is_ptr64() {
            let special = host.read_control_space(state.processor, SPECIAL_REGISTERS, 0x20)?;
            let cr3 = le_u64(&special, CR3_OFFSET).ok_or_else(short_special_registers)?;
            (Arch::X64, cr3 & !0xFFF)
        } else {
            let special = host.read_control_space(state.processor, X86_SPECIAL_REGISTERS, 0x10)?;
            let cr3 = le_u32(&special, X86_CR3_OFFSET).ok_or_else(short_special_registers)?;
            let cr4 = le_u32(&special, X86_CR4_OFFSET).ok_or_else(short_special_registers)?;
            let arch = Arch::X86 {
                pae: cr4 & CR4_PAE != 0,
            };
            let root_mask = crate::session::paging_spec(arch).map_or(!0xFFF, |s| s.root_mask);
            (arch, u64::from(cr3) & root_mask)
        };
        // The debugger data list head is a LIST_ENTRY of the kernel's pointer size; its
        // address and the KDBG address come sign-extended from a 32-bit kernel.
        let kdbg = (version.debugger_data_list != 0)
            .then(|| {
                let mut flink = [0u8; 8];
                let width = usize::from(arch.pointer_size());
                host.read_virtual(version.debugger_data_list, &mut flink[..width])
                    .ok()
                    .map(|()| u64::from_le_bytes(flink))
            })
            .flatten()
            .map(|a| arch.narrow(a))
            .filter(|&a| a != 0 && a != arch.narrow(version.debugger_data_list));
        let identity = TargetIdentity {
            kind: TargetKind::LiveKd {
                connection: connection.text.clone(),
            },
            arch,
            os_build: Some(u32::from(version.minor)),
            checked_build: version.major == 0x0C,
            kernel_base: Some(arch.narrow(version.kernel_base)),
            ps_loaded_module_list: (version.ps_loaded_module_list != 0)
                .then_some(arch.narrow(version.ps_loaded_module_list)),
            ps_active_process_head: None,
            kd_debugger_data_block: kdbg,
            pfn_database: None,
            directory_table_base,
            bugcheck: None,
            processor_count: state.processor_count.max(1),
            system_time: None,
            system_up_time: None,
            comment: None,
            consistency: Consistency::Frozen,
            discovery: Vec::new(),
        };
        let break_in = BreakIn {
            exception_code: state.exception_code,
            first_chance: state.first_chance,
            processor: state.processor,
            thread: arch.narrow(state.thread),
            program_counter: arch.narrow(state.program_counter),
        };
        Ok((identity, break_in))
    }

    fn host(&self) -> MutexGuard<'_, KdHost> {
        self.host.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The GetVersion answer.
    #[must_use]
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The state change the target stopped with.
    #[must_use]
    pub fn break_in(&self) -> BreakIn {
        self.break_in
    }

    /// Everything counted on the wire so far.
    #[must_use]
    pub fn wire_stats(&self) -> WireStats {
        self.host().stats()
    }

    /// Whether the target is still stopped.
    #[must_use]
    pub fn is_halted(&self) -> bool {
        self.host().halted().is_some()
    }

    /// Let the target run now (whatever `stay_broken` says).
    pub fn resume_now(&self) -> Result<(), KdError> {
        self.host().resume()
    }
}

impl Drop for KdTarget {
    fn drop(&mut self) {
        if !self.stay_broken {
            let _ = self.host().resume();
        }
    }
}

fn read_error(address: u64, failure: ReadFailure) -> ReadError {
    match failure {
        ReadFailure::Unreadable { address } => ReadError::OutOfRange { address },
        ReadFailure::Kd(e) => ReadError::Transport {
            address,
            reason: e.to_string(),
        },
    }
}

impl Target for KdTarget {
    fn identity(&self) -> &TargetIdentity {
        &self.identity
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            consistency: Consistency::Frozen,
            can_resume: true,
            can_write: self.can_write,
        }
    }

    fn read_physical(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.host()
            .read_physical(address, buf)
            .map_err(|e| read_error(address, e))
    }

    fn processor_context(&self, processor: u32) -> Result<ProcessorContext, TargetError> {
        let count = self.identity.processor_count;
        if processor >= count {
            return Err(TargetError::NoSuchProcessor { processor, count });
        }
        let raw = u16::try_from(processor)
            .map_err(|_| TargetError::NoSuchProcessor { processor, count })
            .and_then(|p| {
                self.host()
                    .get_context(p)
                    .map_err(|e| TargetError::ContextUnavailable {
                        processor,
                        reason: e.to_string(),
                    })
            })?;
        Ok(match self.identity.arch {
            Arch::X64 => ProcessorContext::X64(X64Context::from_amd64_context(&raw)),
            Arch::X86 { .. } => ProcessorContext::X86(X86Context::from_x86_context(&raw)),
        })
    }

    fn resume(&self) -> Result<(), TargetError> {
        if self.stay_broken {
            return Ok(());
        }
        self.host()
            .resume()
            .map_err(|e| TargetError::Other(e.to_string()))
    }

    fn session_ended(&self) -> Option<String> {
        self.host().ended().map(str::to_string)
    }
}

fn short_special_registers() -> KdError {
    KdError::Status {
        what: "ReadControlSpace (special registers) returned too little".into(),
        status: kds_kd::api::status::UNSUCCESSFUL,
    }
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}
