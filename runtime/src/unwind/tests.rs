//! Unwinder tests over synthetic images in a [`MemoryTarget`]: PE32+ headers with an exception
//! directory, `.pdata` arrays and `UNWIND_INFO` bytes encoded by hand from Microsoft's "x64
//! exception handling" tables, and hand-built stacks.
//!
//! Encoding reminders (all little-endian):
//! - `RUNTIME_FUNCTION` = begin RVA, end RVA, unwind info RVA (bit 0 set: indirect).
//! - `UNWIND_INFO` byte 0 = version | flags << 3; byte 1 = prolog size; byte 2 = slot count;
//!   byte 3 = frame register | scaled frame offset << 4; then the slots, padded to an even
//!   count; then the chained `RUNTIME_FUNCTION` when flags has `UNW_FLAG_CHAININFO` (4).
//! - A code slot = prolog offset | op << 8 | op info << 12 ([`code`]); operand slots follow.
//! - Ops: 0 PUSH_NONVOL, 1 ALLOC_LARGE, 2 ALLOC_SMALL, 3 SET_FPREG, 4 SAVE_NONVOL,
//!   5 SAVE_NONVOL_FAR, 6 EPILOG (v2), 8 SAVE_XMM128, 9 SAVE_XMM128_FAR, 10 PUSH_MACHFRAME.
//! - Registers: 0 rax, 1 rcx, 2 rdx, 3 rbx, 4 rsp, 5 rbp, 6 rsi, 7 rdi, 8-15 r8-r15.

use super::codes::{decode, CodeError, Register, UnwindOp};
use super::pdata::{FunctionTable, Lookup, RuntimeFunction, UnwindCache};
use super::virtual_unwind::{virtual_unwind, EpilogCheck, MachineFrame, Unwound};
use super::walk::{walk, ModuleRange, StackWalk, WalkEnd};
use super::{Context, UnwindError};
use crate::mmu::{AddressSpace, X64};
use crate::target::{CountingTarget, MemoryTarget, PAGE_SIZE};
use std::sync::Arc;

/// Base of the "kernel" module A.
const KB: u64 = 0xFFFF_F800_0000_0000;
/// Base of the "user" module B.
const UB: u64 = 0x0000_7FF6_0000_0000;
const MODULE_SIZE: u64 = 0x1_0000;
const PDATA: u32 = 0x2000;

// Op codes and registers, as the spec numbers them.
const PUSH_NONVOL: u8 = 0;
const ALLOC_LARGE: u8 = 1;
const ALLOC_SMALL: u8 = 2;
const SET_FPREG: u8 = 3;
const SAVE_NONVOL: u8 = 4;
const SAVE_NONVOL_FAR: u8 = 5;
const EPILOG: u8 = 6;
const SAVE_XMM128: u8 = 8;
const PUSH_MACHFRAME: u8 = 10;
const RBX: u8 = 3;
const RBP: u8 = 5;
const RSI: u8 = 6;
const RDI: u8 = 7;
const R12: u8 = 12;
const R15: u8 = 15;
const UNW_FLAG_CHAININFO: u8 = 4;

/// One unwind code slot: offset in prolog, operation, operation info.
fn code(offset: u8, op: u8, info: u8) -> u16 {
    u16::from(offset) | u16::from(op) << 8 | u16::from(info) << 12
}

/// `UNWIND_INFO` bytes: the 4-byte header, the slots padded to an even count, the chained entry.
fn unwind_info(
    version: u8,
    flags: u8,
    prolog: u8,
    frame: (u8, u8),
    slots: &[u16],
    chained: Option<(u32, u32, u32)>,
) -> Vec<u8> {
    let mut b = vec![
        version | flags << 3,
        prolog,
        slots.len() as u8,
        frame.0 | frame.1 << 4,
    ];
    for s in slots {
        b.extend_from_slice(&s.to_le_bytes());
    }
    if slots.len() % 2 == 1 {
        b.extend_from_slice(&[0, 0]);
    }
    if let Some((begin, end, info)) = chained {
        for w in [begin, end, info] {
            b.extend_from_slice(&w.to_le_bytes());
        }
    }
    b
}

/// A machine under construction; writes to `holes` pages are dropped, so those pages stay
/// unmapped.
struct Machine {
    target: MemoryTarget,
    holes: Vec<u64>,
}

impl Machine {
    fn new(holes: &[u64]) -> Machine {
        Machine {
            target: MemoryTarget::x64(1),
            holes: holes.to_vec(),
        }
    }

    fn write(&self, va: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let at = va + i as u64;
            if !self.holes.contains(&(at & !(PAGE_SIZE - 1))) {
                self.target.write_virtual(at, &[*b]);
            }
        }
    }

    fn u64(&self, va: u64, value: u64) {
        self.write(va, &value.to_le_bytes());
    }

    fn u32(&self, va: u64, value: u32) {
        self.write(va, &value.to_le_bytes());
    }

    /// Minimal PE32+ headers: `MZ`, `e_lfanew` = 0x80, `PE\0\0`, an AMD64 file header with no
    /// sections and a 240-byte optional header (112 fixed bytes, 16 data directories), the
    /// exception directory (index 3) naming `count` entries at [`PDATA`].
    fn pe(&self, base: u64, pdata: &[(u32, u32, u32)]) {
        self.write(base, b"MZ");
        self.u32(base + 0x3c, 0x80);
        let nt = base + 0x80;
        self.write(nt, b"PE\0\0");
        self.write(nt + 4, &0x8664u16.to_le_bytes()); // Machine: AMD64
        self.write(nt + 6, &0u16.to_le_bytes()); // NumberOfSections
        self.write(nt + 20, &240u16.to_le_bytes()); // SizeOfOptionalHeader
        let opt = nt + 24;
        self.write(opt, &0x20bu16.to_le_bytes()); // PE32+ magic
        self.u64(opt + 24, base); // ImageBase
        self.u32(opt + 56, MODULE_SIZE as u32); // SizeOfImage
        self.u32(opt + 60, 0x400); // SizeOfHeaders
        self.u32(opt + 108, 16); // NumberOfRvaAndSizes
        let exception_directory = opt + 112 + 3 * 8;
        self.u32(exception_directory, PDATA);
        self.u32(exception_directory + 4, pdata.len() as u32 * 12);
        for (i, &(begin, end, info)) in pdata.iter().enumerate() {
            let at = base + u64::from(PDATA) + i as u64 * 12;
            self.u32(at, begin);
            self.u32(at + 4, end);
            self.u32(at + 8, info);
        }
    }

    fn space(self) -> AddressSpace {
        AddressSpace::new(Arc::new(self.target), &X64, PAGE_SIZE)
    }
}

fn modules() -> Vec<ModuleRange> {
    vec![
        ModuleRange {
            base: KB,
            size: MODULE_SIZE,
        },
        ModuleRange {
            base: UB,
            size: MODULE_SIZE,
        },
    ]
}

// Module A's functions (RVAs) and where their unwind infos sit.
const F1: (u32, u32, u32) = (0x1000, 0x1100, 0x3000); // push rbp; sub rsp,40h; lea rbp,[rsp+20h]
const F2: (u32, u32, u32) = (0x1100, 0x1200, 0x3020); // sub rsp,88h; saves of rbx, rsi, xmm6
const P3: (u32, u32, u32) = (0x1300, 0x1340, 0x3040); // push r12; push rdi; sub rsp,80008h
const C3: (u32, u32, u32) = (0x1340, 0x1380, 0x2F00 | 1); // chained to P3, through an indirect entry
const C3_INFO: u32 = 0x3060;
const F4: (u32, u32, u32) = (0x1400, 0x1500, 0x3080); // machine frame (error code); push r15; sub rsp,20h
const BAD_VERSION: (u32, u32, u32) = (0x1600, 0x1680, 0x30A0);
const BAD_OP: (u32, u32, u32) = (0x1700, 0x1780, 0x30C0);
const UNREADABLE: (u32, u32, u32) = (0x1800, 0x1880, 0x5000);
const CUT_SHORT: (u32, u32, u32) = (0x1900, 0x1980, 0x30E0);
const E1: (u32, u32, u32) = (0x1A00, 0x1A80, 0x3100); // push rbx; sub rsp,28h (v1 epilog tests)
const CHAIN_LOOP: (u32, u32, u32) = (0x1B00, 0x1B80, 0x3120);
// Module B.
const F5: (u32, u32, u32) = (0x1000, 0x1080, 0x3000); // v2: push rbx; sub rsp,28h; epilog at end
/// An RVA of module A no entry covers: a leaf.
const LEAF: u64 = 0x1F00;

/// Module A and module B with their tables and unwind infos, code bytes for the epilog tests.
fn images(m: &Machine) {
    m.pe(
        KB,
        &[
            F1,
            F2,
            P3,
            C3,
            F4,
            BAD_VERSION,
            BAD_OP,
            UNREADABLE,
            CUT_SHORT,
            E1,
            CHAIN_LOOP,
        ],
    );
    let info = |rva: u32, bytes: Vec<u8>| m.write(KB + u64::from(rva), &bytes);

    // F1: push rbp (ends at 1); sub rsp, 40h (ends at 5); lea rbp, [rsp+20h] (ends at 10).
    // Frame register rbp, offset 2 (2 * 16 = 20h). Codes in descending offset order.
    info(
        F1.2,
        unwind_info(
            1,
            0,
            10,
            (RBP, 2),
            &[
                code(10, SET_FPREG, 0),
                code(5, ALLOC_SMALL, 7), // 7 * 8 + 8 = 40h
                code(1, PUSH_NONVOL, RBP),
            ],
            None,
        ),
    );
    // F2: sub rsp, 88h (7 bytes, ends at 7); mov [rsp+90h], rbx (ends at 15);
    // mov [rsp+98h], rsi (ends at 23); movaps [rsp+40h], xmm6 (ends at 28).
    info(
        F2.2,
        unwind_info(
            1,
            0,
            28,
            (0, 0),
            &[
                code(28, SAVE_XMM128, 6),
                4, // 40h / 16
                code(23, SAVE_NONVOL_FAR, RSI),
                0x98, // unscaled, low word
                0,    // high word
                code(15, SAVE_NONVOL, RBX),
                0x12, // 90h / 8
                code(7, ALLOC_LARGE, 0),
                0x11, // 88h / 8 (op info 0: scaled, one operand slot)
            ],
            None,
        ),
    );
    // P3: push r12 (41 54, ends at 2); push rdi (ends at 3); sub rsp, 80008h (ends at 10).
    info(
        P3.2,
        unwind_info(
            1,
            0,
            10,
            (0, 0),
            &[
                code(10, ALLOC_LARGE, 1), // op info 1: unscaled, two operand slots
                0x0008,
                0x0008, // 0008_0008h
                code(3, PUSH_NONVOL, RDI),
                code(2, PUSH_NONVOL, R12),
            ],
            None,
        ),
    );
    // C3's indirect entry points at a RUNTIME_FUNCTION holding the real info address.
    m.u32(KB + 0x2F00, C3.0);
    m.u32(KB + 0x2F04, C3.1);
    m.u32(KB + 0x2F08, C3_INFO);
    // C3: a chained (shrink-wrapped) part of P3: mov [rsp+10h], rbp (ends at 8), then P3's
    // RUNTIME_FUNCTION.
    info(
        C3_INFO,
        unwind_info(
            1,
            UNW_FLAG_CHAININFO,
            8,
            (0, 0),
            &[code(8, SAVE_NONVOL, RBP), 2], // 10h / 8
            Some(P3),
        ),
    );
    // F4: an interrupt handler: a dummy prolog "pushes" a machine frame with an error code,
    // then push r15 (ends at 2); sub rsp, 20h (ends at 6).
    info(
        F4.2,
        unwind_info(
            1,
            0,
            6,
            (0, 0),
            &[
                code(6, ALLOC_SMALL, 3), // 3 * 8 + 8 = 20h
                code(2, PUSH_NONVOL, R15),
                code(0, PUSH_MACHFRAME, 1),
            ],
            None,
        ),
    );
    // Garbage: version 7; op 11 (undefined); ALLOC_LARGE with its operand slot missing.
    info(BAD_VERSION.2, vec![0x07, 0, 0, 0]);
    info(
        BAD_OP.2,
        unwind_info(1, 0, 0, (0, 0), &[code(0, 11, 0)], None),
    );
    info(
        CUT_SHORT.2,
        unwind_info(1, 0, 4, (0, 0), &[code(4, ALLOC_LARGE, 0)], None),
    );
    // E1: push rbx (ends at 1); sub rsp, 28h (ends at 5).
    info(
        E1.2,
        unwind_info(
            1,
            0,
            5,
            (0, 0),
            &[code(5, ALLOC_SMALL, 4), code(1, PUSH_NONVOL, RBX)],
            None,
        ),
    );
    // E1's code: at 1A40 an epilog (add rsp, 28h; pop rbx; ret); at 1A50 one ending in a tail
    // call out of the function (add rsp, 28h; pop rbx; jmp rel32 to 1F00); at 1A60 a jump to
    // the next instruction, inside the function: no epilog.
    m.write(KB + 0x1A40, &[0x48, 0x83, 0xc4, 0x28, 0x5b, 0xc3]);
    let rel = (0x1F00i64 - (0x1A50 + 5 + 5)) as i32;
    let mut tail = vec![0x48, 0x83, 0xc4, 0x28, 0x5b, 0xe9];
    tail.extend_from_slice(&rel.to_le_bytes());
    m.write(KB + 0x1A50, &tail);
    m.write(KB + 0x1A60, &[0xeb, 0x00]);
    // A chained info whose parent is itself.
    info(
        CHAIN_LOOP.2,
        unwind_info(1, UNW_FLAG_CHAININFO, 0, (0, 0), &[], Some(CHAIN_LOOP)),
    );

    // Module B. F5, version 2: two epilog codes first (size 2 at the function's end; a zero
    // padding entry), then push rbx (ends at 1); sub rsp, 28h (ends at 5).
    m.pe(UB, &[F5]);
    m.write(
        UB + u64::from(F5.2),
        &unwind_info(
            2,
            0,
            5,
            (0, 0),
            &[
                code(2, EPILOG, 1), // epilog size 2, op info bit 0: at the end
                code(0, EPILOG, 0), // padding
                code(5, ALLOC_SMALL, 4),
                code(1, PUSH_NONVOL, RBX),
            ],
            None,
        ),
    );
}

// The stack of the full walk, innermost first.
const S0: u64 = 0xFFFF_8000_0010_0F00; // frame 0 (leaf)
const RA0: u64 = KB + 0x1055; // in F1
const S1: u64 = S0 + 8; // frame 1 (F1), with 60h of alloca below its fixed allocation
const F1_FIXED: u64 = S1 + 0x60;
const RBP1: u64 = F1_FIXED + 0x20; // lea rbp, [rsp+20h]
const RBP_IN_F2: u64 = 0x0000_0000_DEAD_0002;
const RA1: u64 = KB + 0x1180; // in F2
const S2: u64 = F1_FIXED + 0x40 + 8 + 8; // frame 2 (F2)
const RA2: u64 = KB + 0x1350; // in C3
const S3: u64 = S2 + 0x88 + 8; // frame 3 (C3 + P3), on the next stack page
const RBX_IN_F3: u64 = 0x0000_0000_0B0B_0003;
const RSI_IN_F3: u64 = 0x0000_0000_0515_0003;
const RBP_IN_F4: u64 = 0x0000_0000_0B0B_0004;
const RDI_IN_F4: u64 = 0x0000_0000_0D1D_0004;
const R12_IN_F4: u64 = 0x0000_0000_0012_0004;
const RA3: u64 = KB + 0x1420; // in F4
const S4: u64 = S3 + 0x8_0008 + 8 + 8 + 8; // frame 4 (F4)
const R15_IN_F5: u64 = 0x0000_0000_0015_0005;
const MACHINE_FRAME: u64 = S4 + 0x20 + 8;
const UIP: u64 = UB + 0x1010; // interrupted user code, in F5
const USP: u64 = 0x0000_0000_0014_FE00; // its stack
const RBX_IN_CALLER_OF_F5: u64 = 0x0000_0000_0B0B_0006;

/// The six-frame stack: leaf, F1, F2, C3/P3, F4 (machine frame), F5 in module B.
fn stack(m: &Machine) {
    m.u64(S0, RA0);
    // F1's frame: saved rbp at its fixed allocation + 40h, return address above it.
    m.u64(F1_FIXED + 0x40, RBP_IN_F2);
    m.u64(F1_FIXED + 0x48, RA1);
    // F2's frame: 88h allocated, return address above, rbx and rsi in its caller's home area.
    m.u64(S2 + 0x88, RA2);
    m.u64(S2 + 0x90, RBX_IN_F3);
    m.u64(S2 + 0x98, RSI_IN_F3);
    // C3 saved rbp at establisher + 10h; P3 allocated 80008h, below its pushes of rdi and r12.
    m.u64(S3 + 0x10, RBP_IN_F4);
    m.u64(S3 + 0x8_0008, RDI_IN_F4);
    m.u64(S3 + 0x8_0010, R12_IN_F4);
    m.u64(S3 + 0x8_0018, RA3);
    // F4: 20h allocated, r15 pushed, then the machine frame: error code, RIP, CS, EFLAGS, RSP, SS.
    m.u64(S4 + 0x20, R15_IN_F5);
    m.u64(MACHINE_FRAME, 0x10);
    m.u64(MACHINE_FRAME + 8, UIP);
    m.u64(MACHINE_FRAME + 16, 0x33);
    m.u64(MACHINE_FRAME + 24, 0x246);
    m.u64(MACHINE_FRAME + 32, USP);
    m.u64(MACHINE_FRAME + 40, 0x2b);
    // F5 (user): 28h allocated, rbx pushed, return address 0: the bottom.
    m.u64(USP + 0x28, RBX_IN_CALLER_OF_F5);
    m.u64(USP + 0x30, 0);
}

fn start() -> Context {
    Context::new(KB + LEAF, S0)
        .with(Register::Rax, 0xAAAA)
        .with(Register::Rbx, 0x1111)
        .with(Register::Rbp, RBP1)
        .with(Register::Rsi, 0x5151)
        .with(Register::Rdi, 0xD1D1)
        .with(Register::R12, 0x1212)
        .with(Register::R15, 0x1515)
}

fn scenario(holes: &[u64]) -> AddressSpace {
    let m = Machine::new(holes);
    images(&m);
    stack(&m);
    m.space()
}

fn walk_scenario(holes: &[u64]) -> StackWalk {
    walk(
        &scenario(holes),
        &modules(),
        &mut UnwindCache::new(),
        start(),
        64,
    )
}

fn rf((begin, end, unwind_info): (u32, u32, u32)) -> RuntimeFunction {
    RuntimeFunction {
        begin,
        end,
        unwind_info,
    }
}

#[test]
fn full_walk_gives_windbg_columns_and_nonvolatile_registers() {
    let w = walk_scenario(&[]);
    let columns: Vec<(u64, u64, Option<u64>)> = w
        .frames
        .iter()
        .map(|f| (f.child_sp, f.ip, f.return_address))
        .collect();
    assert_eq!(
        columns,
        vec![
            (
                0xFFFF_8000_0010_0F00,
                0xFFFF_F800_0000_1F00,
                Some(0xFFFF_F800_0000_1055)
            ),
            (
                0xFFFF_8000_0010_0F08,
                0xFFFF_F800_0000_1055,
                Some(0xFFFF_F800_0000_1180)
            ),
            (
                0xFFFF_8000_0010_0FB8,
                0xFFFF_F800_0000_1180,
                Some(0xFFFF_F800_0000_1350)
            ),
            (
                0xFFFF_8000_0010_1048,
                0xFFFF_F800_0000_1350,
                Some(0xFFFF_F800_0000_1420)
            ),
            (
                0xFFFF_8000_0018_1068,
                0xFFFF_F800_0000_1420,
                Some(0x0000_7FF6_0000_1010)
            ),
            (0x0000_0000_0014_FE00, 0x0000_7FF6_0000_1010, Some(0)),
        ]
    );
    assert_eq!(w.end, WalkEnd::ReachedZero);

    // Function entries: none for the leaf; C3's indirect entry resolved.
    let functions: Vec<_> = w.frames.iter().map(|f| f.function).collect();
    assert_eq!(
        functions,
        vec![
            None,
            Some(rf(F1)),
            Some(rf(F2)),
            Some(rf((C3.0, C3.1, C3_INFO))),
            Some(rf(F4)),
            Some(rf(F5)),
        ]
    );
    assert!(w.frames.iter().all(|f| f.in_module && !f.in_epilog));

    // Only F4's frame went through the machine frame (WinDbg's "(TrapFrame @ ...)").
    let machine: Vec<_> = w
        .frames
        .iter()
        .map(|f| (f.machine_frame_at, f.machine_frame_error_code))
        .collect();
    assert_eq!(machine[4], (Some(0xFFFF_8000_0018_1090), true));
    assert!(machine
        .iter()
        .enumerate()
        .all(|(i, m)| i == 4 || *m == (None, false)));

    // Registers as each frame sees them.
    let reg = |frame: usize, r: Register| w.frames[frame].context.get(r);
    assert_eq!(reg(0, Register::Rax), Some(0xAAAA));
    // Volatile registers are forgotten once unwound past a call.
    assert_eq!(reg(1, Register::Rax), None);
    assert_eq!(reg(1, Register::Rbp), Some(RBP1));
    assert_eq!(reg(1, Register::Rbx), Some(0x1111));
    // F1 popped rbp.
    assert_eq!(reg(2, Register::Rbp), Some(RBP_IN_F2));
    // F2 restored rbx and rsi from its saves, far and near.
    assert_eq!(reg(3, Register::Rbx), Some(RBX_IN_F3));
    assert_eq!(reg(3, Register::Rsi), Some(RSI_IN_F3));
    assert_eq!(reg(3, Register::Rdi), Some(0xD1D1));
    // C3 restored rbp; its parent P3 popped rdi and r12.
    assert_eq!(reg(4, Register::Rbp), Some(RBP_IN_F4));
    assert_eq!(reg(4, Register::Rdi), Some(RDI_IN_F4));
    assert_eq!(reg(4, Register::R12), Some(R12_IN_F4));
    assert_eq!(reg(4, Register::Rbx), Some(RBX_IN_F3));
    // F4 popped r15; the machine frame gave RIP and RSP.
    assert_eq!(reg(5, Register::R15), Some(R15_IN_F5));
    assert_eq!(reg(5, Register::Rsp), Some(USP));
}

#[test]
fn stack_page_missing_mid_walk_keeps_the_frames_before_it() {
    // S3's page (...10_1000) holds F2's return address and its saves: frame 2 cannot be
    // unwound. The read that fails first is F2's first code in array order, the far save of
    // rsi at S2 + 98h.
    let w = walk_scenario(&[0xFFFF_8000_0010_1000]);
    assert_eq!(w.end, WalkEnd::StackNotReadable { address: S2 + 0x98 });
    assert_eq!(w.frames.len(), 3);
    assert_eq!(w.frames[1].return_address, Some(RA1));
    assert_eq!(w.frames[2].child_sp, S2);
    assert_eq!(w.frames[2].ip, RA1);
    assert_eq!(w.frames[2].return_address, None);
    assert_eq!(
        w.end.to_string(),
        "cannot read the stack at 0xffff800000101050"
    );
}

#[test]
fn user_stack_missing_after_the_machine_frame() {
    let w = walk_scenario(&[USP & !(PAGE_SIZE - 1)]);
    assert_eq!(w.frames.len(), 6);
    assert_eq!(w.frames[4].return_address, Some(UIP));
    assert_eq!(
        w.end,
        WalkEnd::StackNotReadable {
            address: USP + 0x28
        }
    );
}

#[test]
fn frame_limit_stops_the_walk() {
    let space = scenario(&[]);
    let w = walk(&space, &modules(), &mut UnwindCache::new(), start(), 3);
    assert_eq!(w.frames.len(), 3);
    assert_eq!(w.end, WalkEnd::FrameLimit);
    // The last frame still has its return address.
    assert_eq!(w.frames[2].return_address, Some(RA2));
    let w = walk(&space, &modules(), &mut UnwindCache::new(), start(), 0);
    assert!(w.frames.is_empty());
    assert_eq!(w.end, WalkEnd::FrameLimit);
}

#[test]
fn frame_pointer_below_the_stack_is_not_progressing() {
    // In F1 past its prolog, with rbp pointing below RSP: the unwound RSP is lower.
    let m = Machine::new(&[]);
    images(&m);
    let rsp = 0xFFFF_8000_0030_0800u64;
    let rbp = rsp - 0x100;
    m.u64(rbp - 0x20 + 0x40, 0x1234);
    m.u64(rbp - 0x20 + 0x48, KB + 0x1055);
    let ctx = Context::new(KB + 0x1050, rsp).with(Register::Rbp, rbp);
    let w = walk(&m.space(), &modules(), &mut UnwindCache::new(), ctx, 64);
    assert_eq!(w.frames.len(), 1);
    assert_eq!(w.frames[0].return_address, Some(KB + 0x1055));
    assert_eq!(w.end, WalkEnd::NotProgressing { rsp: rbp + 0x30 });
}

#[test]
fn machine_frame_back_to_a_seen_frame_is_not_progressing() {
    // F4's machine frame hands back the very RIP and RSP the walk started at.
    let m = Machine::new(&[]);
    images(&m);
    let rsp = 0xFFFF_8000_0040_0000u64;
    m.u64(rsp + 0x20 + 8 + 8, KB + 0x1420);
    m.u64(rsp + 0x20 + 8 + 8 + 24, rsp);
    let w = walk(
        &m.space(),
        &modules(),
        &mut UnwindCache::new(),
        Context::new(KB + 0x1420, rsp),
        64,
    );
    assert_eq!(w.frames.len(), 1);
    assert_eq!(w.end, WalkEnd::NotProgressing { rsp });
}

#[test]
fn ip_in_no_module_is_a_leaf_and_flagged() {
    let m = Machine::new(&[]);
    images(&m);
    stack(&m);
    // Frame 0 at a wild address, its return address into F1's frame as in the full walk.
    let ctx = Context::new(0x4141_4141_4141, S0).with(Register::Rbp, RBP1);
    let w = walk(&m.space(), &modules(), &mut UnwindCache::new(), ctx, 64);
    assert_eq!(w.end, WalkEnd::ReachedZero);
    assert_eq!(w.frames.len(), 6);
    assert!(!w.frames[0].in_module);
    assert_eq!(w.frames[0].module, None);
    assert_eq!(w.frames[0].return_address, Some(RA0));
    assert!(w.frames[1..].iter().all(|f| f.in_module));
}

#[test]
fn garbage_unwind_info_ends_the_walk_with_the_error() {
    let m = Machine::new(&[]);
    images(&m);
    let space = m.space();
    let rsp = 0xFFFF_8000_0050_0000u64;
    let at = |rva: u32| {
        walk(
            &space,
            &modules(),
            &mut UnwindCache::new(),
            Context::new(KB + u64::from(rva) + 0x10, rsp),
            64,
        )
    };

    let w = at(BAD_VERSION.0);
    assert_eq!(w.frames.len(), 1);
    assert_eq!(w.frames[0].return_address, None);
    assert_eq!(
        w.end,
        WalkEnd::BadUnwindInfo {
            module_base: KB,
            error: UnwindError::BadUnwindInfo {
                module_base: KB,
                rva: BAD_VERSION.2,
                source: CodeError::UnsupportedVersion { version: 7 }
            }
        }
    );
    let WalkEnd::BadUnwindInfo { error, .. } = at(BAD_OP.0).end else {
        panic!("expected a bad unwind info")
    };
    assert_eq!(
        error.to_string(),
        "the unwind info at rva 0x30c0 of the module at 0xfffff80000000000 is invalid: unwind code at slot 0 has unknown operation 11"
    );
    let WalkEnd::BadUnwindInfo { error, .. } = at(CUT_SHORT.0).end else {
        panic!("expected a bad unwind info")
    };
    assert!(matches!(
        error,
        UnwindError::BadUnwindInfo {
            source: CodeError::CutShort {
                slot: 0,
                op: 1,
                slots: 2,
                count: 1
            },
            ..
        }
    ));
    assert_eq!(
        at(UNREADABLE.0).end,
        WalkEnd::UnwindInfoUnreadable {
            module_base: KB,
            rva: UNREADABLE.2
        }
    );
    let WalkEnd::BadUnwindInfo { error, .. } = at(CHAIN_LOOP.0).end else {
        panic!("expected a chain too long")
    };
    assert_eq!(
        error,
        UnwindError::ChainTooLong {
            module_base: KB,
            rva: CHAIN_LOOP.2
        }
    );
}

#[test]
fn missing_headers_make_the_function_table_unavailable() {
    // Module B's header page is not mapped.
    let m = Machine::new(&[UB]);
    images(&m);
    let w = walk(
        &m.space(),
        &modules(),
        &mut UnwindCache::new(),
        Context::new(UB + 0x1010, 0xFFFF_8000_0050_0000),
        64,
    );
    assert_eq!(w.frames.len(), 1);
    assert!(matches!(
        w.end,
        WalkEnd::FunctionTableUnavailable {
            module_base: UB,
            error: UnwindError::Headers { .. }
        }
    ));
}

/// Unwind one frame of module A at `ip` (an exact RIP) with the given RSP and registers.
fn unwind_a(m: Machine, ctx: Context) -> Result<Unwound, UnwindError> {
    let space = m.space();
    let mut cache = UnwindCache::new();
    let table = cache.table(&space, KB).unwrap();
    let rva = (ctx.rip - KB) as u32;
    let Lookup::Found(entry) = table.lookup(rva) else {
        panic!("no entry for rva {rva:#x}")
    };
    virtual_unwind(&space, &table, entry, &ctx, EpilogCheck::Detect)
}

#[test]
fn partial_prolog_undoes_only_the_codes_already_executed() {
    const RSP: u64 = 0xFFFF_8000_0060_0000;
    let setup = || {
        let m = Machine::new(&[]);
        images(&m);
        for i in 0..16u64 {
            m.u64(RSP + i * 8, 0x100 + i);
        }
        m
    };
    let unwind_with = |offset: u64, rsp: u64, rbp: Option<u64>| {
        let mut ctx = Context::new(KB + 0x1000 + offset, rsp);
        if let Some(rbp) = rbp {
            ctx.set(Register::Rbp, rbp);
        }
        unwind_a(setup(), ctx).unwrap().context
    };
    let unwind = |offset: u64, rbp: Option<u64>| unwind_with(offset, RSP, rbp);
    // Offset 0: nothing pushed yet; [RSP] is the return address.
    let c = unwind(0, None);
    assert_eq!((c.rip, c.rsp, c.get(Register::Rbp)), (0x100, RSP + 8, None));
    // Offset 1: push rbp done.
    let c = unwind(1, None);
    assert_eq!(
        (c.rip, c.rsp, c.get(Register::Rbp)),
        (0x101, RSP + 16, Some(0x100))
    );
    // Offset 5: sub rsp, 40h done too.
    let c = unwind(5, None);
    assert_eq!(
        (c.rip, c.rsp, c.get(Register::Rbp)),
        (0x109, RSP + 0x50, Some(0x108))
    );
    // (At offset 5 rbp is not the frame pointer yet, so an unknown rbp was fine.)
    // Offset 10: lea rbp done; RSP comes from rbp - 20h, whatever RSP says (60h lower here,
    // as after an alloca).
    let c = unwind_with(10, RSP - 0x60, Some(RSP + 0x20));
    assert_eq!(
        (c.rip, c.rsp, c.get(Register::Rbp)),
        (0x109, RSP + 0x50, Some(0x108))
    );
    // Past the prolog without rbp: it is needed and unknown.
    let m = setup();
    assert_eq!(
        unwind_a(m, Context::new(KB + 0x1050, RSP)).unwrap_err(),
        UnwindError::RegisterUnknown {
            register: Register::Rbp
        }
    );
}

#[test]
fn v1_epilog_is_emulated_from_the_code_stream() {
    const RSP: u64 = 0xFFFF_8000_0070_0000;
    let setup = || {
        let m = Machine::new(&[]);
        images(&m);
        m.u64(RSP, 0xAA); // what rsp points at before add rsp, 28h
        m.u64(RSP + 0x28, 0xB0B); // rbx's saved value
        m.u64(RSP + 0x30, KB + 0x1234); // return address
        m
    };
    // At add rsp, 28h; pop rbx; ret.
    let u = unwind_a(setup(), Context::new(KB + 0x1A40, RSP)).unwrap();
    assert!(u.in_epilog);
    assert_eq!(
        (u.context.rip, u.context.rsp, u.context.get(Register::Rbx)),
        (KB + 0x1234, RSP + 0x38, Some(0xB0B))
    );
    // At pop rbx (after the add): RSP already points at rbx's slot.
    let u = unwind_a(setup(), Context::new(KB + 0x1A44, RSP + 0x28)).unwrap();
    assert!(u.in_epilog);
    assert_eq!(
        (u.context.rip, u.context.rsp, u.context.get(Register::Rbx)),
        (KB + 0x1234, RSP + 0x38, Some(0xB0B))
    );
    // At the ret.
    let u = unwind_a(setup(), Context::new(KB + 0x1A45, RSP + 0x30)).unwrap();
    assert!(u.in_epilog);
    assert_eq!((u.context.rip, u.context.rsp), (KB + 0x1234, RSP + 0x38));
    // An epilog ending in a jump out of the function (a tail call) counts.
    let u = unwind_a(setup(), Context::new(KB + 0x1A50, RSP)).unwrap();
    assert!(u.in_epilog);
    assert_eq!(u.context.rip, KB + 0x1234);
    // A jump inside the function does not: the prolog is undone instead (all codes).
    let u = unwind_a(setup(), Context::new(KB + 0x1A60, RSP)).unwrap();
    assert!(!u.in_epilog);
    assert_eq!(
        (u.context.rip, u.context.rsp, u.context.get(Register::Rbx)),
        (KB + 0x1234, RSP + 0x38, Some(0xB0B))
    );
}

#[test]
fn v2_epilog_is_found_by_its_descriptor() {
    const RSP: u64 = 0xFFFF_8000_0080_0000;
    let unwind = |rva: u64, rsp: u64| {
        let m = Machine::new(&[]);
        images(&m);
        m.u64(RSP + 0x28, 0xB0B);
        m.u64(RSP + 0x30, UB + 0x1234);
        let space = m.space();
        let w = walk(
            &space,
            &modules(),
            &mut UnwindCache::new(),
            Context::new(UB + rva, rsp),
            1,
        );
        let f = w.frames[0].clone();
        (f.in_epilog, f.return_address)
    };
    // The epilog is the last 2 bytes of F5 (107E: pop rbx; 107F: ret).
    assert_eq!(unwind(0x107E, RSP + 0x28), (true, Some(UB + 0x1234)));
    assert_eq!(unwind(0x107F, RSP + 0x30), (true, Some(UB + 0x1234)));
    // Before it, the body: the prolog codes (after the skipped epilog codes) are undone.
    assert_eq!(unwind(0x107D, RSP), (false, Some(UB + 0x1234)));
}

#[test]
fn function_table_is_sorted_and_searched() {
    let m = Machine::new(&[]);
    // Out of order on purpose, with an empty entry that is dropped.
    m.pe(
        KB,
        &[
            (0x3000, 0x3100, 0x10),
            (0x1000, 0x1100, 0x20),
            (0x5, 0x5, 0),
        ],
    );
    let space = m.space();
    let table = FunctionTable::read(&space, KB).unwrap();
    assert_eq!(
        table.entries(),
        &[rf((0x1000, 0x1100, 0x20)), rf((0x3000, 0x3100, 0x10))]
    );
    assert_eq!(
        table.lookup(0x1000),
        Lookup::Found(rf((0x1000, 0x1100, 0x20)))
    );
    assert_eq!(
        table.lookup(0x10FF),
        Lookup::Found(rf((0x1000, 0x1100, 0x20)))
    );
    assert_eq!(table.lookup(0x1100), Lookup::NotFound);
    assert_eq!(table.lookup(0xFFF), Lookup::NotFound);
    assert_eq!(
        table.lookup(0x30FF),
        Lookup::Found(rf((0x3000, 0x3100, 0x10)))
    );
    assert_eq!(table.lookup(u32::MAX), Lookup::NotFound);
}

#[test]
fn unreadable_pdata_pages_make_lookups_there_unknown() {
    // 1000 entries from 2000h run to 4EE0h; page 3000h is missing. Entry i sits at
    // 2000h + 12 i: entries 341 (across 2FFCh) to 682 (across 3FF8h) touch the missing page.
    let m = Machine::new(&[KB + 0x3000]);
    let entries: Vec<(u32, u32, u32)> = (0..1000u32)
        .map(|i| (0x10_0000 + i * 0x100, 0x10_0000 + i * 0x100 + 0x80, 0x9000))
        .collect();
    m.pe(KB, &entries);
    let table = FunctionTable::read(&m.space(), KB).unwrap();
    assert!(table.has_gaps());
    assert_eq!(table.entries().len(), 1000 - 342);
    assert_eq!(
        table.lookup(0x10_0000 + 340 * 0x100 + 0x10),
        Lookup::Found(rf(entries[340]))
    );
    // Between entry 340's end and entry 683's start, nothing can be said.
    for i in [340, 341, 400, 682] {
        assert_eq!(
            table.lookup(0x10_0000 + i * 0x100 + 0x90),
            Lookup::Unknown {
                pdata_rva: 0x2000 + 341 * 12
            }
        );
    }
    assert_eq!(
        table.lookup(0x10_0000 + 683 * 0x100),
        Lookup::Found(rf(entries[683]))
    );
    assert_eq!(table.lookup(0x10), Lookup::NotFound);
}

#[test]
fn cache_reads_a_table_once() {
    let m = Machine::new(&[]);
    images(&m);
    let counting = Arc::new(CountingTarget::new(Arc::new(m.target)));
    let space = AddressSpace::new(counting.clone(), &X64, PAGE_SIZE);
    let mut cache = UnwindCache::new();
    let first = cache.table(&space, KB).unwrap();
    let reads = counting.stats().reads;
    let again = cache.table(&space, KB).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(counting.stats().reads, reads);
    assert_eq!(first.entries().len(), 11);
}

#[test]
fn decodes_every_operation() {
    let bytes = unwind_info(
        1,
        0,
        40,
        (RBP, 1),
        &[
            code(40, PUSH_MACHFRAME, 0),
            code(36, PUSH_MACHFRAME, 1),
            code(32, 9, 15), // SAVE_XMM128_FAR xmm15
            0x0010,
            0x0001,
            code(28, SAVE_XMM128, 6),
            3,
            code(24, SAVE_NONVOL_FAR, 14),
            0x0000,
            0x0002,
            code(20, SAVE_NONVOL, 13),
            5,
            code(16, SET_FPREG, 0),
            code(12, ALLOC_SMALL, 15),
            code(8, ALLOC_LARGE, 1),
            0x0000,
            0x0010,
            code(4, ALLOC_LARGE, 0),
            0xFFFF,
            code(2, PUSH_NONVOL, R12),
        ],
        None,
    );
    let info = decode(&bytes).unwrap();
    assert_eq!((info.version, info.size_of_prolog), (1, 40));
    assert_eq!(info.frame_register(), Some(Register::Rbp));
    assert_eq!(info.frame_offset, 1);
    let ops: Vec<(u8, UnwindOp)> = info.codes.iter().map(|c| (c.code_offset, c.op)).collect();
    assert_eq!(
        ops,
        vec![
            (40, UnwindOp::PushMachframe { error_code: false }),
            (36, UnwindOp::PushMachframe { error_code: true }),
            (
                32,
                UnwindOp::SaveXmm128 {
                    xmm: 15,
                    offset: 0x1_0010,
                    far: true
                }
            ),
            (
                28,
                UnwindOp::SaveXmm128 {
                    xmm: 6,
                    offset: 0x30,
                    far: false
                }
            ),
            (
                24,
                UnwindOp::SaveNonvol {
                    reg: Register::R14,
                    offset: 0x2_0000,
                    far: true
                }
            ),
            (
                20,
                UnwindOp::SaveNonvol {
                    reg: Register::R13,
                    offset: 0x28,
                    far: false
                }
            ),
            (16, UnwindOp::SetFpreg),
            (12, UnwindOp::AllocSmall { size: 128 }),
            (
                8,
                UnwindOp::AllocLarge {
                    size: 0x10_0000,
                    scaled: false
                }
            ),
            (
                4,
                UnwindOp::AllocLarge {
                    size: 0xFFFF * 8,
                    scaled: true
                }
            ),
            (2, UnwindOp::PushNonvol { reg: Register::R12 }),
        ]
    );
    // Slots: 1 + 1 + 3 + 2 + 3 + 2 + 1 + 1 + 3 + 2 + 1 = 20.
    assert_eq!(info.count_of_codes, 20);
    assert_eq!(info.codes.last().unwrap().slot, 19);
}

#[test]
fn version_2_epilog_codes_are_skipped_and_kept() {
    let bytes = unwind_info(
        2,
        0,
        5,
        (0, 0),
        &[
            code(3, EPILOG, 1),
            code(0x40, EPILOG, 1), // an epilog 140h before the end
            code(0x10, EPILOG, 0), // one 10h before the end
            code(0, EPILOG, 0),    // padding
            code(5, ALLOC_SMALL, 4),
            code(1, PUSH_NONVOL, RBX),
        ],
        None,
    );
    let info = decode(&bytes).unwrap();
    let e = info.epilogs.as_ref().unwrap();
    assert_eq!((e.size, e.at_end), (3, true));
    assert_eq!(e.from_end, vec![0x140, 0x10, 0]);
    assert_eq!(
        info.codes.iter().map(|c| c.op).collect::<Vec<_>>(),
        vec![
            UnwindOp::AllocSmall { size: 0x28 },
            UnwindOp::PushNonvol { reg: Register::Rbx }
        ]
    );
    // The same bytes as version 1: op 6 is the obsolete two-slot UWOP_SAVE_XMM.
    let mut v1 = bytes.clone();
    v1[0] = 1;
    let info = decode(&v1).unwrap();
    assert_eq!(info.epilogs, None);
    assert_eq!(info.codes[0].op, UnwindOp::Skipped { op: 6, slots: 2 });
    assert_eq!(info.codes.len(), 4);
}

#[test]
fn machine_frame_without_error_code() {
    let m = Machine::new(&[]);
    // A handler whose only code is a machine frame without error code.
    m.pe(KB, &[(0x1000, 0x1100, 0x3000)]);
    m.write(
        KB + 0x3000,
        &unwind_info(1, 0, 0, (0, 0), &[code(0, PUSH_MACHFRAME, 0)], None),
    );
    let rsp = 0xFFFF_8000_0090_0000u64;
    m.u64(rsp, UB + 0x10); // RIP
    m.u64(rsp + 24, 0x1000_0000); // RSP
    let u = unwind_a(m, Context::new(KB + 0x1010, rsp)).unwrap();
    assert_eq!(
        u.machine_frame,
        Some(MachineFrame {
            at: rsp,
            error_code: false
        })
    );
    assert_eq!((u.context.rip, u.context.rsp), (UB + 0x10, 0x1000_0000));
}

/// xorshift64*: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_unwind_info_never_panics_and_work_is_bounded() {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let n = (noise.next() % 600) as usize;
        let bytes = noise.bytes(n);
        let _ = decode(&bytes);
    }

    const LIMIT: usize = 16;
    for round in 0..120 {
        let m = Machine::new(&[]);
        // One function over most of the module; random unwind info, chained or not.
        m.pe(KB, &[(0x1000, 0x8000, 0x9000), (0x8000, 0x9000, 0x9001)]);
        // A third pure noise; the rest well-formed headers with codes of defined operations
        // and random operands, so that the unwinder, not only the decoder, meets the noise.
        let info = if round % 3 == 0 {
            noise.bytes(600)
        } else {
            let version = 1 + (round as u8 % 2);
            let codes = noise.next() % 12;
            let mut slots: Vec<u16> = Vec::new();
            for _ in 0..codes {
                let op = (noise.next() % 11) as u8;
                let info = (noise.next() % 16) as u8;
                slots.push(code(noise.next() as u8, op, info));
                let operands = match (op, info) {
                    (1, 0) | (4 | 6 | 8, _) => 1,
                    (1, _) | (5 | 7 | 9, _) => 2,
                    _ => 0,
                };
                slots.extend((0..operands).map(|_| noise.next() as u16));
            }
            let flags = (noise.next() % 8) as u8;
            let frame = ((noise.next() % 16) as u8, (noise.next() % 16) as u8);
            // Chained parents: the same info, the other entry's, or anywhere.
            let parent = match noise.next() % 3 {
                0 => (0x1000, 0x8000, 0x9000),
                1 => (0x8000, 0x9000, 0x9001),
                _ => (
                    noise.next() as u32,
                    noise.next() as u32,
                    noise.next() as u32,
                ),
            };
            let mut b = unwind_info(
                version,
                flags,
                noise.next() as u8,
                frame,
                &slots,
                Some(parent),
            );
            b.extend(noise.bytes(16));
            b
        };
        m.write(KB + 0x9000, &info);
        // The code at RIP and the stack are noise too; some stack words point into the module.
        let rip = KB + 0x1000 + noise.next() % 0x7000;
        m.write(rip, &noise.bytes(32));
        let rsp = 0xFFFF_8000_00A0_0000u64 + (noise.next() % 0x100) * 8;
        for i in 0..256u64 {
            let word = match noise.next() % 3 {
                0 => KB + 0x1000 + noise.next() % 0x8000,
                1 => rsp + noise.next() % 0x1000,
                _ => noise.next(),
            };
            m.u64(rsp + i * 8, word);
        }
        let counting = Arc::new(CountingTarget::new(Arc::new(m.target)));
        let space = AddressSpace::new(counting.clone(), &X64, PAGE_SIZE);
        let mut ctx = Context::new(rip, rsp);
        for r in Register::ALL {
            ctx.set(r, rsp + noise.next() % 0x1000);
        }
        ctx.rsp = rsp;
        let w = walk(&space, &modules(), &mut UnwindCache::new(), ctx, LIMIT);
        assert!(w.frames.len() <= LIMIT);
        // Per frame: a few dozen reads for the unwind info and its chain, the code window
        // and the stack; each may cost a page-table walk.
        assert!(
            counting.stats().reads < 50_000,
            "round {round}: {}",
            counting.stats()
        );
    }
}

#[test]
fn the_documentations_sample_prolog_unwinds_from_its_access_violation() {
    // The MASM sample of "x64 exception handling", assembled by hand:
    //   db 48h; push rbp            48 55            ends at 2   .pushreg rbp
    //   sub rsp, 40h                48 83 ec 40      ends at 6   .allocstack 40h
    //   lea rbp, [rsp+20h]          48 8d 6c 24 20   ends at 11  .setframe rbp, 20h
    //   movdqa [rbp], xmm7          66 0f 7f 7d 00   ends at 16  .savexmm128 xmm7, 20h
    //   mov [rbp+18h], rsi          48 89 75 18      ends at 20  .savereg rsi, 38h
    //   mov [rsp+10h], rdi          48 89 7c 24 10   ends at 25  .savereg rdi, 10h
    //   .endprolog
    //   sub rsp, 60h                48 83 ec 60      (an alloca: only rbp can undo it)
    //   mov rax, 0                  48 c7 c0 00 00 00 00
    //   mov rax, [rax]              at offset 36: the access violation
    let m = Machine::new(&[]);
    m.pe(KB, &[(0x1000, 0x1100, 0x3000)]);
    m.write(
        KB + 0x3000,
        &unwind_info(
            1,
            0,
            25,
            (RBP, 2),
            &[
                code(25, SAVE_NONVOL, RDI),
                2, // 10h / 8
                code(20, SAVE_NONVOL, RSI),
                7, // 38h / 8
                code(16, SAVE_XMM128, 7),
                2, // 20h / 16
                code(11, SET_FPREG, 0),
                code(6, ALLOC_SMALL, 7), // 40h
                code(2, PUSH_NONVOL, RBP),
            ],
            None,
        ),
    );
    m.write(
        KB + 0x1000,
        &[
            0x48, 0x55, 0x48, 0x83, 0xec, 0x40, 0x48, 0x8d, 0x6c, 0x24, 0x20, 0x66, 0x0f, 0x7f,
            0x7d, 0x00, 0x48, 0x89, 0x75, 0x18, 0x48, 0x89, 0x7c, 0x24, 0x10, 0x48, 0x83, 0xec,
            0x60, 0x48, 0xc7, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x48, 0x8b, 0x00,
        ],
    );
    // The fixed allocation starts at FIXED; rbp = FIXED + 20h; RSP is 60h lower.
    const FIXED: u64 = 0xFFFF_8000_00B0_0100;
    m.u64(FIXED + 0x10, 0xD1D1); // rdi
    m.u64(FIXED + 0x38, 0x5151); // rsi, at rbp + 18h
    m.u64(FIXED + 0x40, 0xB0B0); // the caller's rbp
    m.u64(FIXED + 0x48, KB + 0x4321); // return address
    let ctx = Context::new(KB + 0x1000 + 36, FIXED - 0x60).with(Register::Rbp, FIXED + 0x20);
    let u = unwind_a(m, ctx).unwrap();
    assert!(!u.in_epilog);
    let c = u.context;
    assert_eq!((c.rip, c.rsp), (KB + 0x4321, FIXED + 0x50));
    assert_eq!(c.get(Register::Rbp), Some(0xB0B0));
    assert_eq!(c.get(Register::Rsi), Some(0x5151));
    assert_eq!(c.get(Register::Rdi), Some(0xD1D1));
}

#[test]
fn context_from_a_processor_context_knows_every_register() {
    let x = crate::target::X64Context {
        rax: 1,
        rbx: 2,
        rsp: 3,
        rbp: 4,
        r15: 5,
        rip: 6,
        ..Default::default()
    };
    let c = Context::from(&x);
    assert_eq!((c.rip, c.rsp), (6, 3));
    assert_eq!(c.get(Register::Rax), Some(1));
    assert_eq!(c.get(Register::Rbx), Some(2));
    assert_eq!(c.get(Register::Rbp), Some(4));
    assert_eq!(c.get(Register::R15), Some(5));
    assert_eq!(c.get(Register::R9), Some(0));
    let mut after_call = c;
    after_call.forget_volatile();
    assert_eq!(after_call.get(Register::Rax), None);
    assert_eq!(after_call.get(Register::Rbx), Some(2));
    assert_eq!(after_call.get(Register::Rsp), Some(3));
}

#[test]
fn return_address_past_a_noreturn_call_belongs_to_the_caller() {
    // N: sub rsp, 28h (ends at 4) ... call KeBugCheckEx as its last instruction, so the return
    // address is N's end, which is the start of M, whose first instruction is a ret (C3).
    const N: (u32, u32, u32) = (0x1C00, 0x1C10, 0x3000);
    const M: (u32, u32, u32) = (0x1C10, 0x1C20, 0x3010);
    let m = Machine::new(&[]);
    m.pe(KB, &[N, M]);
    let sub_28 = unwind_info(1, 0, 4, (0, 0), &[code(4, ALLOC_SMALL, 4)], None);
    m.write(KB + u64::from(N.2), &sub_28);
    m.write(KB + u64::from(M.2), &sub_28);
    m.write(KB + u64::from(M.0), &[0xc3]);
    const RSP: u64 = 0xFFFF_8000_00C0_0000;
    m.u64(RSP, KB + u64::from(N.1)); // KeBugCheckEx's return address
    m.u64(RSP + 8 + 0x28, KB + 0x7777); // N's
    m.u64(RSP + 8 + 0x30, 0);
    let w = walk(
        &m.space(),
        &modules(),
        &mut UnwindCache::new(),
        // Frame 0 in no module (a stand-in for KeBugCheckEx).
        Context::new(0x4141_4141_4141, RSP),
        3,
    );
    let f = &w.frames[1];
    assert_eq!(f.ip, KB + 0x1C10);
    // Looked up as RIP - 1: N, not M; and M's ret was not taken for N's epilog.
    assert_eq!(f.function, Some(rf(N)));
    assert!(!f.in_epilog);
    assert_eq!(f.return_address, Some(KB + 0x7777));
    assert_eq!(w.frames[2].child_sp, RSP + 8 + 0x30);
}
