//! A 32-bit kernel over KD: GetVersion without PTR64, addresses sign-extended on the wire, an
//! x86 control report, control space addressed as offsets into KPROCESSOR_STATE, and an x86
//! CONTEXT from GetContext. The live target's identity must come out in 32-bit terms.

#![cfg(unix)]

use kds_kd::api::Version;
use kds_kd::connection::Connection;
use kds_kd::debuggee::{BreakInState, Debuggee, DebuggeeOptions, Kernel};
use kds_kd::link::SocketLink;
use kds_runtime::target::{Arch, ProcessorContext, Target, X86Context};
use kds_runtime::target::{KdTarget, LiveOptions};
use std::os::unix::net::UnixListener;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Sign-extend a 32-bit address as a 32-bit kernel writes it into a 64-bit field.
fn widen(address: u32) -> u64 {
    address as i32 as i64 as u64
}

const KERN_BASE: u32 = 0x8284_B000;
const MODULE_LIST: u32 = 0x8298_5850;
const DATA_LIST: u32 = 0x8296_1C40;
const KDBG: u32 = 0x8296_0C28;
const THREAD: u32 = 0x8554_2020;
const EIP: u32 = 0x828C_8110;

/// The KPROCESSOR_STATE of processor 0 (CONTEXT, then KSPECIAL_REGISTERS) and a few bytes of
/// virtual memory: the debugger data list head.
struct X86Kernel {
    processor_state: Vec<u8>,
}

impl X86Kernel {
    fn new(cr3: u32, cr4: u32) -> X86Kernel {
        let context = X86Context {
            eip: EIP,
            esp: 0x8D3F_FB00,
            ebp: 0x8D3F_FB20,
            ..X86Context::default()
        };
        let mut processor_state = context.to_x86_context().to_vec();
        for value in [0x8001_003B_u32, 0, cr3, cr4] {
            processor_state.extend_from_slice(&value.to_le_bytes());
        }
        X86Kernel { processor_state }
    }
}

impl Kernel for X86Kernel {
    fn version(&self) -> Version {
        Version {
            major: 0x0F,
            minor: 6001,
            protocol: 6,
            secondary: 0,
            flags: Version::FLAG_MP | Version::FLAG_DATA,
            machine: 0x14C,
            max_packet_type: 12,
            max_state_change: 3,
            max_manipulate: 0x31,
            simulation: 0,
            kernel_base: widen(KERN_BASE),
            ps_loaded_module_list: widen(MODULE_LIST),
            debugger_data_list: widen(DATA_LIST),
        }
    }
    fn processor_count(&self) -> u32 {
        1
    }
    fn break_in_state(&self, _processor: u16) -> BreakInState {
        BreakInState {
            thread: u64::from(THREAD),
            pc: u64::from(EIP),
            instruction: vec![0xCC],
        }
    }
    fn read_virtual(&self, _processor: u16, address: u64, buf: &mut [u8]) -> usize {
        // The host must send the list head's address sign-extended, as the kernel gave it.
        if address != widen(DATA_LIST) {
            return 0;
        }
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&KDBG.to_le_bytes());
        head[4..].copy_from_slice(&KDBG.to_le_bytes());
        let n = buf.len().min(8);
        buf[..n].copy_from_slice(&head[..n]);
        n
    }
    fn read_physical(&self, _address: u64, _buf: &mut [u8]) -> usize {
        0
    }
    fn context(&self, processor: u16) -> Option<Vec<u8>> {
        (processor == 0).then(|| self.processor_state[..0x2CC].to_vec())
    }
    fn control_space(&self, processor: u16, offset: u64, len: usize) -> Option<Vec<u8>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?.min(self.processor_state.len());
        (processor == 0 && start < end).then(|| self.processor_state[start..end].to_vec())
    }
    fn read_msr(&self, _processor: u16, _msr: u32) -> Option<u64> {
        None
    }
}

/// Serve `kernel` on a fresh unix socket and connect a live target to it.
fn connect(name: &str, kernel: X86Kernel) -> (KdTarget, std::thread::JoinHandle<()>) {
    let dir = std::env::temp_dir().join("kds-runtime-live-x86").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let socket = dir.join("kd.sock");
    let listener = UnixListener::bind(&socket).expect("listen");
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut link = SocketLink::new(stream);
        let mut debuggee = Debuggee::new(kernel, DebuggeeOptions::default());
        let stop = AtomicBool::new(false);
        let _ = debuggee.serve(&mut link, &stop, &mut |_, _| {});
    });
    let connection = Connection::parse(&format!("unix:{}", socket.display())).expect("parse");
    let target =
        KdTarget::connect(&connection, LiveOptions::default(), Box::new(|_| {})).expect("connect");
    (target, server)
}

#[test]
fn a_32_bit_pae_kernel_gives_a_32_bit_identity() {
    // A PAE CR3: the PDPT is 32-byte aligned, not page aligned.
    let (target, server) = connect("pae", X86Kernel::new(0x1F7C_90E0, 0x0000_06F9));
    let identity = target.identity().clone();
    assert_eq!(identity.arch, Arch::X86 { pae: true });
    assert_eq!(identity.directory_table_base, 0x1F7C_90E0);
    assert_eq!(identity.kernel_base, Some(u64::from(KERN_BASE)));
    assert_eq!(identity.ps_loaded_module_list, Some(u64::from(MODULE_LIST)));
    assert_eq!(identity.kd_debugger_data_block, Some(u64::from(KDBG)));
    assert_eq!(identity.os_build, Some(6001));
    let break_in = target.break_in();
    assert_eq!(break_in.thread, u64::from(THREAD));
    assert_eq!(break_in.program_counter, u64::from(EIP));
    match target.processor_context(0).expect("context") {
        ProcessorContext::X86(c) => {
            assert_eq!((c.eip, c.esp, c.ebp), (EIP, 0x8D3F_FB00, 0x8D3F_FB20));
        }
        other => panic!("an x64 context from a 32-bit kernel: {other:?}"),
    }
    let target: Arc<dyn Target> = Arc::new(target);
    drop(target); // resumes
    server.join().expect("debuggee");
}

#[test]
fn a_32_bit_kernel_without_pae_pages_with_two_levels() {
    let (target, server) = connect("non-pae", X86Kernel::new(0x0018_5000, 0x0000_0690));
    let identity = target.identity().clone();
    assert_eq!(identity.arch, Arch::X86 { pae: false });
    assert_eq!(identity.directory_table_base, 0x0018_5000);
    drop(target);
    server.join().expect("debuggee");
}
