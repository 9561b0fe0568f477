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

/// `ln address`: the symbols around an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearSymbols {
    pub address: u64,
    /// The symbol at or below the address (`module!name`, its address, displacement).
    pub below: Option<(String, u64)>,
    /// The next symbol above it.
    pub above: Option<(String, u64)>,
    pub exact: bool,
    #[serde(skip)]
    pub pointer_size: u64,
}

/// `ln address`.
pub fn ln_command(dbg: &mut Debugger, address: u64) -> Result<NearSymbols, CommandError> {
    let ps = dbg.pointer_size();
    let modules = dbg.modules()?;
    let module = modules.module_at(address).ok_or_else(|| {
        CommandError::not_found(format!("{} is in no loaded module", pointer(address, ps)))
    })?;
    let names = &module.symbols().names;
    let rva = address - module.base;
    let i = names.partition_point(|(r, _)| *r <= rva);
    let below = i
        .checked_sub(1)
        .and_then(|j| names.get(j))
        .map(|(r, n)| (format!("{}!{n}", module.name), module.base + r));
    let above = names
        .get(i)
        .map(|(r, n)| (format!("{}!{n}", module.name), module.base + r));
    Ok(NearSymbols {
        address,
        exact: below.as_ref().is_some_and(|(_, a)| *a == address),
        below,
        above,
        pointer_size: ps,
    })
}

impl Report for NearSymbols {
    fn render(&self, out: &mut String) {
        let ps = self.pointer_size;
        let side = |s: &Option<(String, u64)>| {
            s.as_ref().map(|(name, at)| {
                let off = if *at < self.address && s == &self.below {
                    format!("+{:#x}", self.address - at)
                } else {
                    String::new()
                };
                format!("({})   {name}{off}", pointer(*at, ps))
            })
        };
        let line = match (side(&self.below), side(&self.above)) {
            (Some(b), Some(a)) => format!("{b}   |  {a}"),
            (Some(b), None) => b,
            (None, Some(a)) => format!("|  {a}"),
            (None, None) => "No symbols near this address".to_string(),
        };
        let _ = writeln!(out, "{line}");
        if self.exact {
            if let Some((name, _)) = &self.below {
                let _ = writeln!(out, "Exact matches:\n    {name} (<no parameter info>)");
            }
        }
    }
}
