//! x86 frame records from a PDB a real toolchain wrote: clang describes the frames of optimised
//! i686 functions with FrameData records (sizes and program strings), lld-link puts them in the
//! PDB. kds must read them as `llvm-pdbutil dump -fpo` (an independent reader) does, record for
//! record, and its x86 walk must unwind a stack laid out as `llvm-objdump` shows the linked
//! prologue leaves it.

use kds_pdbgen::{find_tool, generate, map_publics, require_toolchain, GeneratedPdb, PdbRequest};
use kds_runtime::mmu::{AddressSpace, X86_PAE};
use kds_runtime::symbols::{load_isf_file, load_pdb_file, FrameDescription, SymbolTable};
use kds_runtime::target::MemoryTarget;
use kds_runtime::unwind::x86::{
    walk_x86, Fpo, X86FrameInfo, X86Registers, X86WalkEnd, X86WalkOptions,
};
use kds_runtime::unwind::x86_program::{run_program, FrameProgram, ProgramRegisters};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Functions with arguments, locals and saved registers: non-trivial frame records.
/// `saver` pushes EBP, EBX, EDI and ESI and uses EBP as a general register.
const FUNCTIONS: &str = r"
volatile int kds_fpo_sink;

__declspec(dllexport) __attribute__((noinline)) int leaf_sum(int a, int b, int c) {
  volatile int buf[8];
  for (int i = 0; i < 8; i++) buf[i] = a * i + b;
  int s = 0;
  for (int i = 0; i < 8; i++) s += buf[i] ^ c;
  return s;
}

__declspec(dllexport) __attribute__((noinline)) int saver(int *p, int n) {
  int x = 0, y = 1, z = 2, w = 3;
  for (int i = 0; i < n; i++) {
    x += p[i];
    y *= p[i] | 1;
    z ^= leaf_sum(x, y, i);
    w += z;
  }
  kds_fpo_sink = x + y + z + w;
  return x - w;
}

__declspec(dllexport) int entry(void) {
  int a[4] = {1, 2, 3, 4};
  return saver(a, 4);
}
";

fn build() -> GeneratedPdb {
    if let Err(e) = require_toolchain() {
        panic!("{e}");
    }
    let table = load_isf_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/symbols/x86/win10_x86_19041.json.xz"),
    )
    .expect("x86 table loads");
    let request = PdbRequest::new("kds_fpo", &table)
        .x86(true)
        .optimized_c(FUNCTIONS);
    generate(&request).unwrap_or_else(|e| panic!("{e}"))
}

fn tool_output(names: &[&str], args: &[&str], file: &Path) -> String {
    let tool = find_tool(names).unwrap_or_else(|| {
        panic!(
            "{} is not on PATH: run .ci/run (it installs Debian's llvm)",
            names[0]
        )
    });
    let out = Command::new(&tool)
        .args(args)
        .arg(file)
        .output()
        .expect("the tool runs");
    assert!(out.status.success(), "{}: {:?}", tool.display(), out);
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// One row of `llvm-pdbutil dump -fpo`'s "New FPO Data" table, in kds's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    rva: u64,
    code: u64,
    locals: u32,
    params: u32,
    max_stack: u32,
    prolog: u32,
    saved_regs: u32,
    seh: bool,
    cpp_eh: bool,
    start: bool,
    program: String,
}

/// The rows of both tables: (old FPO rows as raw cells, new FrameData rows).
fn pdbutil_fpo(pdb: &Path) -> (Vec<Vec<String>>, Vec<Row>) {
    let text = tool_output(
        &["llvm-pdbutil", "llvm-pdbutil-14", "llvm-pdbutil-19"],
        &["dump", "-fpo"],
        pdb,
    );
    let (mut old, mut new) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in text.lines() {
        if line.contains("Old FPO Data") {
            section = "old";
            continue;
        }
        if line.contains("New FPO Data") {
            section = "new";
            continue;
        }
        let cells: Vec<String> = line.split('|').map(|c| c.trim().to_string()).collect();
        // Data rows start with a hex RVA; the header row starts with "RVA".
        if cells.len() < 2 || u64::from_str_radix(&cells[0], 16).is_err() {
            continue;
        }
        if section == "old" {
            old.push(cells);
            continue;
        }
        assert_eq!(cells.len(), 11, "{line}");
        let n = |i: usize| cells[i].parse::<u32>().expect("a decimal cell");
        let b = |i: usize| match cells[i].as_str() {
            "true" => true,
            "false" => false,
            other => panic!("not a flag: {other}"),
        };
        new.push(Row {
            rva: u64::from_str_radix(&cells[0], 16).expect("hex RVA"),
            code: u64::from(n(1)),
            locals: n(2),
            params: n(3),
            max_stack: n(4),
            prolog: n(5),
            saved_regs: n(6),
            seh: b(7),
            cpp_eh: b(8),
            start: b(9),
            program: cells[10].clone(),
        });
    }
    (old, new)
}

fn kds_rows(table: &SymbolTable) -> (Vec<(u64, Fpo)>, Vec<Row>) {
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for r in table.frame_records() {
        match &r.frame {
            FrameDescription::Fpo(f) => old.push((r.rva, *f)),
            FrameDescription::Program(p) => new.push(Row {
                rva: r.rva,
                code: r.len,
                locals: p.sizes.locals,
                params: p.sizes.params,
                max_stack: p
                    .max_stack_size
                    .expect("FrameData records have a max stack size"),
                prolog: p.prolog_size,
                saved_regs: p.sizes.saved_regs,
                seh: p.has_structured_eh,
                cpp_eh: p.has_cpp_eh,
                start: p.is_function_start,
                program: p.program.trim().to_string(),
            }),
        }
    }
    (old, new)
}

#[test]
fn frame_records_of_clang_i686_code_match_llvm_pdbutil_record_for_record() {
    let built = build();
    let table = load_pdb_file(&built.pdb).unwrap_or_else(|e| panic!("{e}"));
    let (peer_old, peer_new) = pdbutil_fpo(&built.pdb);
    let (kds_old, kds_new) = kds_rows(&table);
    assert_eq!(kds_new, peer_new);
    assert!(peer_old.is_empty() && kds_old.is_empty(), "{peer_old:?}");

    // Not trivial: every exported function is described, from its first byte, with locals,
    // parameters and saved registers among them, and `saver` restores EBP from its frame.
    let publics = map_publics(&std::fs::read_to_string(&built.map).expect("map"));
    for (name, params) in [("_leaf_sum", 12), ("_saver", 8), ("_entry", 0)] {
        let rva = publics[name];
        let first = peer_new
            .iter()
            .find(|r| r.rva == rva)
            .unwrap_or_else(|| panic!("no record at {name}"));
        assert!(first.start && first.params == params, "{first:?}");
    }
    assert!(peer_new.iter().any(|r| r.locals == 32 && r.saved_regs == 8));
    assert!(peer_new
        .iter()
        .any(|r| r.program.contains("$ebp $T0 4 - ^ =") && r.saved_regs == 16));
    assert!(peer_new.len() >= 10, "{peer_new:?}");
}

/// Where the DLL is taken to be loaded, and the kernel stack page (2 MiB, PAE large page).
const LOAD: u64 = 0x8280_0000;
const STACK: u64 = 0x8240_0000;
const STACK_PHYS: u64 = 0x0060_0000;

struct PdbFrames<'t>(&'t SymbolTable);

impl X86FrameInfo for PdbFrames<'_> {
    fn fpo(&self, ip: u64) -> Option<Fpo> {
        self.0.frame_data_at(ip.checked_sub(LOAD)?)
    }
    fn frame_program(&self, ip: u64) -> Option<FrameProgram> {
        self.0.frame_program_at(ip.checked_sub(LOAD)?).cloned()
    }
    fn is_trap_entry(&self, _ip: u64) -> bool {
        false
    }
}

/// `llvm-objdump -d` of the DLL: (RVA, mnemonic, operands) of each instruction.
fn disassembly(dll: &Path, base: u64) -> Vec<(u64, String, String)> {
    let text = tool_output(
        &["llvm-objdump", "llvm-objdump-14", "llvm-objdump-19"],
        &["-d", "--no-show-raw-insn"],
        dll,
    );
    text.lines()
        .filter_map(|line| {
            let (addr, rest) = line.split_once(':')?;
            let va = u64::from_str_radix(addr.trim(), 16).ok()?;
            let mut parts = rest.split_whitespace();
            let mnemonic = parts.next()?.to_string();
            Some((va - base, mnemonic, parts.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

fn image_base(map: &str) -> u64 {
    map.lines()
        .find_map(|l| l.trim().strip_prefix("Preferred load address is "))
        .and_then(|b| u64::from_str_radix(b.trim(), 16).ok())
        .expect("the map gives the image base")
}

/// A stack in one PAE large page.
struct Stack {
    memory: Arc<MemoryTarget>,
}

impl Stack {
    fn new() -> Stack {
        let m = MemoryTarget::x64(1);
        m.write_physical(0x1000 + 2 * 8, &(0x2000u64 | 1).to_le_bytes());
        m.write_physical(0x2000 + 0x12 * 8, &(STACK_PHYS | 0x83).to_le_bytes());
        Stack {
            memory: Arc::new(m),
        }
    }
    fn put(&self, va: u64, value: u32) {
        self.memory
            .write_physical(va - STACK + STACK_PHYS, &value.to_le_bytes());
    }
    fn space(&self) -> AddressSpace {
        AddressSpace::new(self.memory.clone(), &X86_PAE, 0x1000)
    }
}

const CALLER_EBP: u32 = 0x8240_2F80;
/// EBP once `saver` has saved the caller's: it uses EBP as a general register.
const CLOBBERED_EBP: u32 = 0xEEEE_0000;

/// `entry` calls `saver(a, 4)`; at every instruction of `saver`'s prologue (and the first of
/// its body), with the stack as the instructions before it left it, the walk recovers the
/// return into `entry` and `entry`'s ESP and EBP, then unwinds `entry` by its own record to
/// the zero return address its caller left.
#[test]
fn the_walk_unwinds_clangs_framedata_at_every_step_of_a_real_prologue() {
    let built = build();
    let table = load_pdb_file(&built.pdb).unwrap_or_else(|e| panic!("{e}"));
    let map = std::fs::read_to_string(&built.map).expect("map");
    let publics = map_publics(&map);
    let code = disassembly(&built.dll, image_base(&map));
    let (saver, entry) = (publics["_saver"], publics["_entry"]);

    // `entry`: `sub $16, %esp`, pushes of the two arguments, `call saver`.
    let at = |rva: u64| {
        code.iter()
            .position(|i| i.0 == rva)
            .expect("an instruction")
    };
    let entry_code = &code[at(entry)..];
    assert_eq!(
        (entry_code[0].1.as_str(), entry_code[0].2.as_str()),
        ("subl", "$16, %esp")
    );
    let call = entry_code
        .iter()
        .position(|i| i.1 == "calll" && i.2.contains("<saver>"))
        .expect("entry calls saver");
    let pushes = entry_code[1..call]
        .iter()
        .filter(|i| i.1 == "pushl")
        .count() as u64;
    assert_eq!(pushes * 4, 8, "saver's two arguments");
    let return_into_entry = LOAD + entry_code[call + 1].0;

    // The stack from the top: entry's return slot (0: the bottom), 16 bytes of entry's
    // locals, saver's arguments, the return address into entry.
    let stack = Stack::new();
    let entry_ret_slot = STACK + 0x2000;
    stack.put(entry_ret_slot, 0);
    let entry_esp = entry_ret_slot - 16;
    let mut esp = entry_esp - 8 - 4;
    stack.put(esp, u32::try_from(return_into_entry).expect("32-bit"));

    // saver's prologue: pushes and a stack allocation, up to the first other instruction.
    let saver_code = &code[at(saver)..];
    let prologue_len = saver_code
        .iter()
        .position(|i| !(i.1 == "pushl" || (i.1 == "subl" && i.2.ends_with("%esp"))))
        .expect("a body");
    assert!(prologue_len >= 5, "{:?}", &saver_code[..prologue_len]);
    let value_of = |reg: &str| match reg {
        "%ebp" => CALLER_EBP,
        "%ebx" => 0xB0B0_0001,
        "%edi" => 0xD1D1_0001,
        "%esi" => 0x5151_0001,
        _ => 0xAAAA_0001,
    };
    let mut ebp = CALLER_EBP;
    for (step, (rva, mnemonic, operands)) in saver_code[..=prologue_len].iter().enumerate() {
        let start = X86Registers {
            eip: LOAD + rva,
            esp,
            ebp: u64::from(ebp),
        };
        let walked = walk_x86(
            &stack.space(),
            &PdbFrames(&table),
            start,
            &X86WalkOptions {
                stack: Some(STACK..STACK + 0x3000),
                ..X86WalkOptions::default()
            },
        );
        let context = format!("at saver+{:#x} ({mnemonic} {operands})", rva - saver);
        assert_eq!(walked.end, X86WalkEnd::ReachedZero, "{context}: {walked:?}");
        assert_eq!(walked.frames.len(), 2, "{context}");
        assert!(walked
            .frames
            .iter()
            .all(|f| f.program.is_some() && f.fpo.is_none()));
        assert_eq!(
            walked.frames[1].registers,
            X86Registers {
                eip: return_into_entry,
                esp: entry_esp,
                ebp: u64::from(CALLER_EBP),
            },
            "{context}"
        );
        assert_eq!(walked.frames[1].return_address, Some(0), "{context}");
        if step == prologue_len {
            break;
        }
        // Run the instruction.
        if mnemonic == "pushl" {
            esp -= 4;
            stack.put(esp, value_of(operands));
            if operands == "%ebp" {
                ebp = CLOBBERED_EBP;
            }
        } else {
            let bytes = operands
                .strip_prefix('$')
                .and_then(|o| o.strip_suffix(", %esp"))
                .and_then(|n| n.parse::<u64>().ok())
                .expect("subl $N, %esp");
            esp -= bytes;
        }
    }
    // Arguments and return address, four saved registers, four bytes of locals.
    assert_eq!(esp, entry_esp - 12 - 16 - 4);

    // The body's record also restores the other registers saver saved.
    let body = saver_code[prologue_len].0;
    let record = table.frame_program_at(body).expect("a record for the body");
    let space = stack.space();
    let out = run_program(
        &record.program,
        ProgramRegisters {
            eip: u32::try_from(LOAD + body).expect("32-bit"),
            esp: u32::try_from(esp).expect("32-bit"),
            ebp: CLOBBERED_EBP,
        },
        record.sizes,
        &|at| space.read_u32(u64::from(at)).ok(),
    )
    .expect("the program runs");
    for reg in ["%ebx", "%edi", "%esi"] {
        let name = format!("${}", &reg[1..]);
        assert_eq!(out.variables.get(&name), Some(&value_of(reg)), "{name}");
    }
}
