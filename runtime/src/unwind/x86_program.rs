//! FrameData program strings: how an x86 function's caller registers are recovered.
//!
//! A FrameData record (the PDB's `DEBUG_S_FRAMEDATA` / "New FPO" stream) carries the sizes of a
//! frame and a program in reverse Polish notation, for example
//! `$T0 .raSearch = $eip $T0 ^ = $esp $T0 4 + = $ebx $T0 4 - ^ =`. Tokens are separated by
//! white space:
//!
//! - `$name` (`$eip`, `$esp`, `$ebp`, `$ebx`, `$esi`, `$edi`, temporaries `$T0`..`$Tn`):
//!   registers before the program runs and variables it assigns;
//! - `.raSearch` (also `.raSearchStart`): where the return address is, `esp + locals + saved
//!   registers` of the record; `.cbLocals`, `.cbParams`, `.cbSavedRegs`: the record's sizes;
//! - numbers (decimal, or hex with `0x`);
//! - `+ - * / %` on the two top operands, `@` aligns the first down to the second (a power of
//!   two), `^` replaces the top operand by the 4 bytes of target memory it addresses, `=` assigns
//!   the top operand to the `$` variable below it.
//!
//! After the program, `$eip`, `$esp` and `$ebp` are the caller's (each kept when the program
//! does not assign it). Errors never panic: a garbage string gives a [`ProgramError`].
//!
//! ```
//! use kds_runtime::unwind::x86_program::{run_program, FrameSizes, ProgramRegisters};
//! use std::collections::HashMap;
//!
//! let memory: HashMap<u32, u32> = [(0x1010, 0x7000_1234), (0x100C, 0x55)].into();
//! let start = ProgramRegisters { eip: 0x40_1000, esp: 0x1000, ebp: 0x99 };
//! let sizes = FrameSizes { locals: 12, params: 8, saved_regs: 4 };
//! let program = "$T0 .raSearch = $eip $T0 ^ = $esp $T0 4 + = $ebp $T0 4 - ^ =";
//! let out = run_program(program, start, sizes, &|at| memory.get(&at).copied()).unwrap();
//! assert_eq!((out.eip, out.esp, out.ebp), (0x7000_1234, 0x1014, 0x55));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Why a program string could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProgramError {
    #[error("unknown token `{token}` in the frame program")]
    UnknownToken { token: String },
    #[error("`{operator}` needs more operands than the frame program pushed")]
    StackUnderflow { operator: String },
    #[error("the frame program reads {address:08x}, which is not readable")]
    UnreadableMemory { address: u32 },
    #[error("the frame program uses `{name}` before it has a value")]
    Undefined { name: String },
    #[error("the frame program assigns to `{target}`, which is not a `$` variable")]
    NotAssignable { target: String },
    #[error("the frame program divides by zero")]
    DivisionByZero,
    #[error("the frame program leaves {count} operand(s) unused")]
    LeftOver { count: usize },
    #[error("the frame program does not assign `{name}`")]
    Unassigned { name: &'static str },
}

/// The registers a frame program starts from (the frame's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgramRegisters {
    pub eip: u32,
    pub esp: u32,
    pub ebp: u32,
}

/// The sizes of a FrameData record, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameSizes {
    pub locals: u32,
    pub params: u32,
    pub saved_regs: u32,
}

impl FrameSizes {
    /// `.raSearch`: the return address's slot, above the locals and the saved registers
    /// (Microsoft's and Breakpad's definition, for an ESP that already excludes the arguments
    /// this frame pushed for its callee).
    #[must_use]
    pub fn ra_search(&self, esp: u32) -> u32 {
        esp.wrapping_add(self.locals).wrapping_add(self.saved_regs)
    }
}

/// A FrameData record as the PDB holds it: the frame's sizes, its flags and its program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameProgram {
    pub sizes: FrameSizes,
    /// Bytes of prologue code from the record's start.
    pub prolog_size: u32,
    /// The most bytes the function pushes, when the record says.
    pub max_stack_size: Option<u32>,
    pub has_structured_eh: bool,
    pub has_cpp_eh: bool,
    /// The record starts a function (later records of the same function describe the
    /// prologue's following steps).
    pub is_function_start: bool,
    pub uses_base_pointer: bool,
    pub program: String,
}

/// What a program left: the caller's registers and where its return address was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramResult {
    pub eip: u32,
    pub esp: u32,
    pub ebp: u32,
    /// Every `$` variable after the program (`$ebx`, `$T0`, ...), for callers that track more
    /// registers.
    pub variables: BTreeMap<String, u32>,
}

#[derive(Debug, Clone)]
enum Operand {
    Value(u32),
    /// A `$` variable, resolved when an operator uses it (so `=` can assign it).
    Name(String),
}

/// One program run: the variables and the operand stack.
struct Machine<'r> {
    variables: BTreeMap<String, u32>,
    constants: [(&'static str, u32); 5],
    stack: Vec<Operand>,
    /// Names assigned so far.
    assigned: BTreeSet<String>,
    read: &'r dyn Fn(u32) -> Option<u32>,
}

impl Machine<'_> {
    fn pop(&mut self, operator: &str) -> Result<Operand, ProgramError> {
        self.stack
            .pop()
            .ok_or_else(|| ProgramError::StackUnderflow {
                operator: operator.to_string(),
            })
    }

    fn value(&self, operand: Operand) -> Result<u32, ProgramError> {
        match operand {
            Operand::Value(v) => Ok(v),
            Operand::Name(name) => self
                .variables
                .get(&name)
                .copied()
                .ok_or(ProgramError::Undefined { name }),
        }
    }

    fn pop_value(&mut self, operator: &str) -> Result<u32, ProgramError> {
        let operand = self.pop(operator)?;
        self.value(operand)
    }

    fn binary(&mut self, operator: &str) -> Result<(), ProgramError> {
        let right = self.pop_value(operator)?;
        let left = self.pop_value(operator)?;
        let result = match operator {
            "+" => left.wrapping_add(right),
            "-" => left.wrapping_sub(right),
            "*" => left.wrapping_mul(right),
            "/" => left
                .checked_div(right)
                .ok_or(ProgramError::DivisionByZero)?,
            "%" => left
                .checked_rem(right)
                .ok_or(ProgramError::DivisionByZero)?,
            // `@`: align down to a power of two, as Breakpad computes it.
            _ => left & !right.wrapping_sub(1),
        };
        self.stack.push(Operand::Value(result));
        Ok(())
    }

    fn dereference(&mut self) -> Result<(), ProgramError> {
        let address = self.pop_value("^")?;
        let value = (self.read)(address).ok_or(ProgramError::UnreadableMemory { address })?;
        self.stack.push(Operand::Value(value));
        Ok(())
    }

    fn assign(&mut self) -> Result<(), ProgramError> {
        let value = self.pop_value("=")?;
        match self.pop("=")? {
            Operand::Name(name) => {
                self.assigned.insert(name.clone());
                self.variables.insert(name, value);
                Ok(())
            }
            Operand::Value(v) => Err(ProgramError::NotAssignable {
                target: format!("{v:#x}"),
            }),
        }
    }

    fn operand(&self, token: &str) -> Result<Operand, ProgramError> {
        if token.len() > 1 && token.starts_with('$') {
            return Ok(Operand::Name(token.to_string()));
        }
        if let Some((_, v)) = self.constants.iter().find(|(n, _)| *n == token) {
            return Ok(Operand::Value(*v));
        }
        parse_number(token)
            .map(Operand::Value)
            .ok_or_else(|| ProgramError::UnknownToken {
                token: token.to_string(),
            })
    }

    fn step(&mut self, token: &str) -> Result<(), ProgramError> {
        match token {
            "+" | "-" | "*" | "/" | "%" | "@" => self.binary(token),
            "^" => self.dereference(),
            "=" => self.assign(),
            _ => {
                let operand = self.operand(token)?;
                self.stack.push(operand);
                Ok(())
            }
        }
    }
}

fn parse_number(token: &str) -> Option<u32> {
    match token
        .strip_prefix("0x")
        .or_else(|| token.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None if token.bytes().all(|b| b.is_ascii_digit()) => token.parse().ok(),
        None => None,
    }
}

/// The program's tokens. Some compilers glue `=` to the next name (`=$esp`): it is split off.
fn tokens(program: &str) -> impl Iterator<Item = &str> {
    program.split_whitespace().flat_map(|t| {
        let split = t.len() > 1 && t.starts_with('=');
        let (head, tail) = if split { t.split_at(1) } else { (t, "") };
        [head, tail].into_iter().filter(|s| !s.is_empty())
    })
}

/// Run a FrameData program from the frame's registers. `read` gives 4 bytes of target memory
/// at an address (`None` when unreadable). `$eip` and `$esp` must be assigned; `$ebp` keeps its
/// value unless assigned.
pub fn run_program(
    program: &str,
    registers: ProgramRegisters,
    sizes: FrameSizes,
    read: &dyn Fn(u32) -> Option<u32>,
) -> Result<ProgramResult, ProgramError> {
    let ra_search = sizes.ra_search(registers.esp);
    let mut machine = Machine {
        variables: BTreeMap::from([
            ("$eip".to_string(), registers.eip),
            ("$esp".to_string(), registers.esp),
            ("$ebp".to_string(), registers.ebp),
        ]),
        constants: [
            (".raSearch", ra_search),
            (".raSearchStart", ra_search),
            (".cbLocals", sizes.locals),
            (".cbParams", sizes.params),
            (".cbSavedRegs", sizes.saved_regs),
        ],
        stack: Vec::new(),
        assigned: BTreeSet::new(),
        read,
    };
    for token in tokens(program) {
        machine.step(token)?;
    }
    if !machine.stack.is_empty() {
        return Err(ProgramError::LeftOver {
            count: machine.stack.len(),
        });
    }
    for name in ["$eip", "$esp"] {
        if !machine.assigned.contains(name) {
            return Err(ProgramError::Unassigned { name });
        }
    }
    let get = |name: &str| machine.variables.get(name).copied().unwrap_or_default();
    Ok(ProgramResult {
        eip: get("$eip"),
        esp: get("$esp"),
        ebp: get("$ebp"),
        variables: machine.variables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const START: ProgramRegisters = ProgramRegisters {
        eip: 0x0040_1020,
        esp: 0x0012_FF00,
        ebp: 0x0012_FFA0,
    };

    fn run(
        program: &str,
        sizes: FrameSizes,
        memory: &[(u32, u32)],
    ) -> Result<ProgramResult, ProgramError> {
        let memory: HashMap<u32, u32> = memory.iter().copied().collect();
        run_program(program, START, sizes, &|at| memory.get(&at).copied())
    }

    #[test]
    fn an_fpo_program_reads_the_return_address_and_saved_registers_above_ra_search() {
        // 0x10 bytes of locals, 8 of saved registers: the return address is at esp + 0x18,
        // EBP was pushed first (just below it), EBX next.
        let sizes = FrameSizes {
            locals: 0x10,
            params: 8,
            saved_regs: 8,
        };
        let program = "$T0 .raSearch = $eip $T0 ^ = $esp $T0 4 + = $ebp $T0 4 - ^ = \
                       $ebx $T0 8 - ^ = ";
        let memory = [
            (0x0012_FF18, 0x0040_5555),
            (0x0012_FF14, 0x0012_FFC0),
            (0x0012_FF10, 0xB0B0_B0B0),
        ];
        let out = run(program, sizes, &memory).expect("runs");
        assert_eq!(
            (out.eip, out.esp, out.ebp),
            (0x0040_5555, 0x0012_FF1C, 0x0012_FFC0)
        );
        assert_eq!(out.variables["$ebx"], 0xB0B0_B0B0);
        assert_eq!(out.variables["$T0"], 0x0012_FF18);
    }

    #[test]
    fn an_ebp_frame_program_and_size_constants_and_operators() {
        // Microsoft's program for an EBP frame: the saved EBP at [ebp], the return address
        // above it.
        let program = "$T0 $ebp = $eip $T0 4 + ^ = $ebp $T0 ^ = $esp $T0 8 + =";
        let memory = [(0x0012_FFA0, 0x0012_FFE0), (0x0012_FFA4, 0x0040_7777)];
        let out = run(program, FrameSizes::default(), &memory).expect("runs");
        assert_eq!(
            (out.eip, out.esp, out.ebp),
            (0x0040_7777, 0x0012_FFA8, 0x0012_FFE0)
        );

        // `@` aligns down; `.cb*` name the record's sizes; `*`, `/`, `%`; hex numbers; `=`
        // glued to the next name.
        let sizes = FrameSizes {
            locals: 12,
            params: 4,
            saved_regs: 8,
        };
        let program = "$T1 $esp 0x1F + 16 @ = $T2 .cbLocals .cbSavedRegs * .cbParams / 7 % = \
                       $eip $T1 =$esp $T2 =";
        let out = run(program, sizes, &[]).expect("runs");
        assert_eq!(out.eip, 0x0012_FF10);
        assert_eq!(out.esp, 12 * 8 / 4 % 7);
        assert_eq!(out.ebp, START.ebp, "EBP is kept when not assigned");
    }

    #[test]
    fn garbage_programs_are_errors_not_panics() {
        let err = |p: &str| run(p, FrameSizes::default(), &[]).expect_err(p);
        assert_eq!(
            err("$eip $esp frob ="),
            ProgramError::UnknownToken {
                token: "frob".into()
            }
        );
        assert_eq!(
            err("$eip +"),
            ProgramError::StackUnderflow {
                operator: "+".into()
            }
        );
        assert_eq!(
            err("^"),
            ProgramError::StackUnderflow {
                operator: "^".into()
            }
        );
        assert_eq!(
            err("$eip $esp 0x20 + ^ ="),
            ProgramError::UnreadableMemory {
                address: 0x0012_FF20
            }
        );
        assert_eq!(
            err("$eip $T3 ="),
            ProgramError::Undefined { name: "$T3".into() }
        );
        assert_eq!(
            err("4 5 ="),
            ProgramError::NotAssignable {
                target: "0x4".into()
            }
        );
        assert_eq!(err("$eip 1 0 / ="), ProgramError::DivisionByZero);
        assert_eq!(err("$eip 1 0 % ="), ProgramError::DivisionByZero);
        assert_eq!(err("$eip 4 = 5"), ProgramError::LeftOver { count: 1 });
        assert_eq!(err("$eip 4 ="), ProgramError::Unassigned { name: "$esp" });
        assert_eq!(err(""), ProgramError::Unassigned { name: "$eip" });
        assert_eq!(
            err("$eip 99999999999 ="),
            ProgramError::UnknownToken {
                token: "99999999999".into()
            }
        );
        // Arithmetic wraps at 32 bits instead of overflowing.
        let out = run(
            "$eip 0xFFFFFFFF 2 + = $esp 0 1 - 3 * =",
            FrameSizes::default(),
            &[],
        )
        .expect("wraps");
        assert_eq!((out.eip, out.esp), (1, 0xFFFF_FFFD));
        // Error messages name the problem.
        assert!(err("$eip $esp 0x20 + ^ =").to_string().contains("0012ff20"));
        // A few random byte strings.
        for seed in 0..200u32 {
            let s: String = (0..40)
                .map(|i| {
                    let c = seed.wrapping_mul(2_654_435_761).rotate_left(i) % 17;
                    [
                        "$T0",
                        "$eip",
                        "$esp",
                        "=",
                        "^",
                        "+",
                        "@",
                        "/",
                        "4",
                        " ",
                        ".raSearch",
                        "-",
                        "$ebp",
                        "x",
                        "0",
                        "*",
                        "%",
                    ][c as usize]
                })
                .collect::<Vec<_>>()
                .join(" ");
            let _ = run(&s, FrameSizes::default(), &[]);
        }
    }
}
