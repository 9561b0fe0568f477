//! `x module!pattern`: the symbols of a module that match a wildcard pattern.

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::format::pointer;
use crate::pattern::matches_wildcard;
use crate::report::Report;
use serde::Serialize;
use std::fmt::Write as _;

/// Most symbols listed (`x nt!*` on a kernel has ~40 000).
const MAX_MATCHES: usize = 10_000;

/// One matching symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolMatch {
    pub address: u64,
    pub module: String,
    pub name: String,
}

/// `x` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolMatches {
    pub matches: Vec<SymbolMatch>,
    pub truncated: bool,
    #[serde(skip)]
    pub pointer_size: u64,
}

/// `x module!pattern` (the module part may be a pattern too).
pub fn x_command(
    dbg: &mut Debugger,
    module: &str,
    pattern: &str,
) -> Result<SymbolMatches, CommandError> {
    let ps = dbg.pointer_size();
    let modules = dbg.modules()?;
    let mut matches = Vec::new();
    let mut any_module = false;
    for m in modules.modules() {
        if !matches_wildcard(module, &m.name) {
            continue;
        }
        any_module = true;
        for (rva, name) in &m.symbols().names {
            if matches_wildcard(pattern, name) {
                matches.push(SymbolMatch {
                    address: m.base.wrapping_add(*rva),
                    module: m.name.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    if !any_module {
        return Err(CommandError::not_found(format!(
            "no loaded module matches `{module}`"
        )));
    }
    matches.sort_by(|a, b| a.module.cmp(&b.module).then(a.name.cmp(&b.name)));
    let truncated = matches.len() > MAX_MATCHES;
    matches.truncate(MAX_MATCHES);
    Ok(SymbolMatches {
        matches,
        truncated,
        pointer_size: ps,
    })
}

impl Report for SymbolMatches {
    fn render(&self, out: &mut String) {
        for m in &self.matches {
            let _ = writeln!(
                out,
                "{} {}!{} = <no type information>",
                pointer(m.address, self.pointer_size),
                m.module,
                m.name
            );
        }
        if self.truncated {
            let _ = writeln!(out, "(only the first {MAX_MATCHES} matches are listed)");
        }
    }
}
