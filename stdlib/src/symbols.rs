//! `.reload` and `!sym`: (re)load the module lists symbols resolve against, and say what was
//! found for each module when noisy.

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::report::Report;
use kds_runtime::symbolize::SymbolSource;
use serde::Serialize;
use std::fmt::Write as _;

/// `!sym noisy|quiet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymMode {
    pub noisy: bool,
}

impl Report for SymMode {
    fn render(&self, out: &mut String) {
        out.push_str(if self.noisy {
            "noisy mode - symbol prompts on\n"
        } else {
            "quiet mode - symbol prompts on\n"
        });
    }
}

/// `!sym noisy|quiet`.
pub fn sym_command(dbg: &mut Debugger, noisy: bool) -> SymMode {
    dbg.set_noisy(noisy);
    SymMode { noisy }
}

/// What `.reload` found for one module (loaded now with `/f`, deferred otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleSymbolState {
    pub module: String,
    pub image_name: String,
    pub user: bool,
    /// `None`: deferred until first needed.
    pub source: Option<SymbolSource>,
    pub note: Option<String>,
}

/// `.reload` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub kernel: bool,
    pub user: bool,
    pub modules: Vec<ModuleSymbolState>,
    /// How the kernel's symbols were found (`SYMSRV:` lines), shown in noisy mode.
    pub symsrv: Vec<String>,
    #[serde(skip)]
    pub noisy: bool,
}

/// `.reload [/f] [/user]`: walk the kernel's module list again and, in a process context,
/// the process's loader list; `/f` loads every module's symbols now.
pub fn reload_command(
    dbg: &mut Debugger,
    force: bool,
    user_only: bool,
) -> Result<ReloadReport, CommandError> {
    if !user_only {
        dbg.forget_kernel_modules();
    }
    let process = dbg.process_if_set();
    let user = match &process {
        Some(p) if p.field("peb")?.as_u64().is_some_and(|peb| peb != 0) => {
            dbg.load_user_modules(p)?;
            true
        }
        _ => false,
    };
    let modules = dbg.modules()?;
    let states = modules
        .modules()
        .iter()
        .filter(|m| !user_only || m.user)
        .map(|m| {
            let loaded = force || m.symbols_loaded();
            ModuleSymbolState {
                module: m.name.clone(),
                image_name: m.image_name.clone(),
                user: m.user,
                source: loaded.then(|| m.symbols().source),
                note: if loaded {
                    m.symbols().note.clone()
                } else {
                    None
                },
            }
        })
        .collect();
    Ok(ReloadReport {
        kernel: !user_only,
        user,
        modules: states,
        symsrv: if user_only {
            Vec::new()
        } else {
            dbg.model().kernel_symbol_log().to_vec()
        },
        noisy: dbg.noisy(),
    })
}

impl Report for ReloadReport {
    fn render(&self, out: &mut String) {
        let dots = |out: &mut String, user: bool| {
            let n = self.modules.iter().filter(|m| m.user == user).count();
            if n > 0 {
                let _ = writeln!(out, "{}", ".".repeat(n));
            }
        };
        if self.kernel {
            out.push_str("Loading Kernel Symbols\n");
            dots(out, false);
        }
        if self.user {
            out.push_str("Loading User Symbols\n");
            dots(out, true);
        }
        if self.noisy {
            for line in &self.symsrv {
                let _ = writeln!(out, "{line}");
            }
            for m in &self.modules {
                match m.source {
                    Some(SymbolSource::Pdb) => {
                        let _ = writeln!(out, "DBGHELP: {} - public symbols", m.module);
                    }
                    Some(SymbolSource::Export) => {
                        let _ = writeln!(out, "DBGHELP: {} - export symbols", m.module);
                    }
                    Some(SymbolSource::None) => {
                        let _ = writeln!(
                            out,
                            "*** ERROR: Module load completed but symbols could not be loaded for {}",
                            m.image_name
                        );
                        let _ = writeln!(out, "DBGHELP: {} - no symbols loaded", m.module);
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_reload_shows_how_the_kernel_symbols_were_found() {
        let mut report = ReloadReport {
            kernel: true,
            user: false,
            modules: Vec::new(),
            symsrv: vec![
                "SYMSRV:  /s/nt.pdb/K/nt.pdb not found".into(),
                "SYMSRV:  /s/nt.pdb/K/nt.pdb from http://x/nt.pdb/K/nt.pdb: 10 bytes - copied"
                    .into(),
            ],
            noisy: true,
        };
        let mut out = String::new();
        report.render(&mut out);
        assert_eq!(
            out,
            "Loading Kernel Symbols\nSYMSRV:  /s/nt.pdb/K/nt.pdb not found\n\
             SYMSRV:  /s/nt.pdb/K/nt.pdb from http://x/nt.pdb/K/nt.pdb: 10 bytes - copied\n"
        );
        report.noisy = false;
        let mut quiet = String::new();
        report.render(&mut quiet);
        assert_eq!(quiet, "Loading Kernel Symbols\n");
    }
}

/// `.sympath [path]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymPath {
    pub path: String,
}

impl Report for SymPath {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "Symbol search path is: {}", self.path);
        let _ = writeln!(out, "Expanded Symbol search path is: {}", self.path);
    }
}

/// `.sympath [path]`: show the symbol path, or set it (modules look their tables up along it
/// from then on; the kernel keeps the table it has).
pub fn sympath_command(dbg: &mut Debugger, new: Option<&str>) -> Result<SymPath, CommandError> {
    if let Some(text) = new {
        let path = kds_runtime::symbols::sympath::SymbolPath::parse(text)
            .map_err(|e| CommandError::usage(e.to_string()))?;
        dbg.model().set_symbol_path(path);
        // Module maps made with the old path are rebuilt when next needed.
        dbg.forget_kernel_modules();
        dbg.forget_user_modules();
    }
    Ok(SymPath {
        path: dbg
            .model()
            .symbol_path()
            .map_or_else(|| "<none>".to_string(), |p| p.to_string()),
    })
}
