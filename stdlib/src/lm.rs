//! `lm`: loaded modules (kernel, and the implicit process's user modules once loaded), with
//! their symbol state; `lm m <pattern>` filters, `lmv` adds the image details.

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::format::pointer;
use crate::pattern::matches_wildcard;
use crate::peb::timestamp_date;
use crate::report::Report;
use kds_runtime::kernel::MappedImage;
use kds_runtime::pe::parse_headers;
use kds_runtime::symbolize::SymbolSource;
use serde::Serialize;
use std::fmt::Write as _;

/// One module line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleLine {
    pub start: u64,
    pub end: u64,
    pub name: String,
    pub image_name: String,
    pub path: String,
    pub user: bool,
    /// `None` while symbols are deferred (not needed yet).
    pub symbols: Option<SymbolSource>,
    /// The symbol file, for modules with a table.
    pub symbol_file: Option<String>,
    /// From the image's headers (`lmv`).
    pub timestamp: Option<u32>,
    pub image_size: Option<u32>,
}

/// `lm` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleList {
    pub verbose: bool,
    pub modules: Vec<ModuleLine>,
    #[serde(skip)]
    pub pointer_size: u64,
}

/// `lm [v] [m pattern]`.
pub fn lm_command(
    dbg: &mut Debugger,
    verbose: bool,
    pattern: Option<&str>,
) -> Result<ModuleList, CommandError> {
    let ps = dbg.pointer_size();
    let modules = dbg.modules()?;
    let user_space = dbg
        .current_process()
        .map(|p| std::sync::Arc::clone(p.space()));
    let kernel_space = std::sync::Arc::clone(dbg.model().kernel_space());
    let mut lines = Vec::new();
    for m in modules.modules() {
        if let Some(p) = pattern {
            if !matches_wildcard(p, &m.name) {
                continue;
            }
        }
        let (timestamp, image_size) = if verbose {
            let space = if m.user {
                user_space.as_ref().unwrap_or(&kernel_space)
            } else {
                &kernel_space
            };
            match parse_headers(&MappedImage {
                space,
                base: m.base,
            }) {
                Ok(h) => (Some(h.time_date_stamp), Some(h.size_of_image)),
                Err(_) => (None, None),
            }
        } else {
            (None, None)
        };
        let symbols = if verbose || m.symbols_loaded() || m.has_table() {
            Some(m.symbols().source)
        } else {
            None
        };
        let symbol_file = if symbols.is_some() {
            m.symbols().file.as_ref().map(|p| p.display().to_string())
        } else {
            None
        };
        lines.push(ModuleLine {
            symbol_file,
            start: m.base,
            end: m.end(),
            name: m.name.clone(),
            image_name: m.image_name.clone(),
            path: m.path.clone(),
            user: m.user,
            symbols,
            timestamp,
            image_size,
        });
    }
    Ok(ModuleList {
        verbose,
        modules: lines,
        pointer_size: ps,
    })
}

impl Report for ModuleList {
    fn render(&self, out: &mut String) {
        let ps = self.pointer_size;
        let width = pointer(0, ps).len();
        let _ = writeln!(
            out,
            "{:<w$} {:<w$}   module name",
            "start",
            "end",
            w = width
        );
        for m in &self.modules {
            let status = match m.symbols {
                Some(SymbolSource::Pdb) => "(pdb symbols)",
                Some(SymbolSource::Export) => "(export symbols)",
                Some(SymbolSource::None) => "(no symbols)",
                None => "(deferred)",
            };
            let file = match (&m.symbols, &m.symbol_file) {
                (Some(SymbolSource::Pdb), Some(path)) => path.as_str(),
                (Some(SymbolSource::Export), _) => m.image_name.as_str(),
                _ => "",
            };
            let line = format!(
                "{} {}   {:<10} {:<22} {file}",
                pointer(m.start, ps),
                pointer(m.end, ps),
                m.name,
                status
            );
            let _ = writeln!(out, "{}", line.trim_end());
            if self.verbose {
                let _ = writeln!(out, "    Loaded symbol image file: {}", m.image_name);
                let _ = writeln!(out, "    Image path: {}", m.path);
                let _ = writeln!(out, "    Image name: {}", m.image_name);
                if let Some(t) = m.timestamp {
                    let _ = writeln!(out, "    Timestamp:        {} ({t:08X})", timestamp_date(t));
                }
                if let Some(size) = m.image_size {
                    let _ = writeln!(out, "    ImageSize:        {size:08X}");
                }
            }
        }
    }
}
