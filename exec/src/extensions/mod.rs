//! `use "file"`: rhai extensions and included playbooks.
//!
//! # `use "other.kds"`
//! Parses the file and runs its statements in the same interpreter, as if they were written
//! at the `use`: its `param`s and `let`s stay bound afterwards, its output comes in order.
//! Paths are relative to the directory of the playbook that says `use` (the top-level
//! playbook's is [`crate::RunOptions::base_dir`], else the current directory). An error in
//! the included file is reported at the `use`, prefixed with the file and line it happened
//! on (`` `common.kds` line 3: ... ``). Includes nest at most [`MAX_INCLUDE_DEPTH`] deep, and a
//! file that includes itself, directly or not, is an error naming the cycle.
//!
//! # `use "ext.rhai"`
//! Compiles a [rhai](https://rhai.rs) script and runs its top level once. Then:
//!
//! - **Functions.** Every function the script defines (not `private`) is a function of the
//!   playbook, called by name with the same number of arguments:
//!   `processes | where is_suspicious(name)`. A later `use` shadows an earlier script's
//!   function of the same name; kds's own functions (`len`, `hex`, `lower`, `upper`,
//!   `filetime`, `poi`) cannot be shadowed (a warning says so). A function returning a list of
//!   maps is a table (`suspicious() | sort by pid | show table(pid, name)`).
//! - **Commands.** At its top level a script may call `register_command("!name", "function")`
//!   (or pass a closure). `!name args...` is then a statement of the playbook: the function
//!   receives one array of the arguments as the command line gives them (numbers as written,
//!   hex by default; `$var` and `(expr)` values; words and `"strings"` as strings; `/x` flags
//!   as `"/x"`), and what it prints plus what it returns (a string as is, anything else as
//!   the playbook would show it) is the command's output, shown after `kd> !name args` like a
//!   WinDbg command's. Built-in command names cannot be taken. Note: `kds check` (and so
//!   `kds run`, which checks first) knows only the built-in commands; until the checker
//!   accepts commands after a `use "*.rhai"`, call the function directly as a statement
//!   (`triage("lsass.exe")`), which it accepts.
//! - **Output.** What a script `print`s (or `debug`s) comes out as text, in order; warnings
//!   of the list walks it makes (torn lists, cycles) as warnings.
//!
//! Scripts see the object model (see [`api`] and the README's "Extensions"):
//! `processes()`, `threads()`, `modules()`, `threads(p)`, `modules(p)`, `current_process()`,
//! `symbol("nt!Name")`, `kernel_base()`, `object(address, "_TYPE")`,
//! `walk_list(head, "_TYPE", "Link.Field")`, `offset_of("_TYPE", "Field")`, `size_of("_TYPE")`,
//! `read_u8/u16/u32/u64(address [, offset])`,
//! `read_pointer(address [, offset])`, `read_bytes(address [, offset], len)`, `hex(n)`;
//! objects and pointers with `.field("Name")`, `obj["Name"]`, `obj.Name`, `.address`,
//! `.type_name`, `.cast("_TYPE")`, `.field_address("Path")`; enum constants compare with their
//! name (`t.state == "Waiting"`). Nothing writes to the target: assigning to a field is an
//! error. Values convert as [`convert`] says; addresses are 64-bit `INT`s (kernel addresses
//! negative in rhai) or `Pointer`s, which keep their address space.
//!
//! # The sandbox
//! A script cannot load files (`import` is disabled, and no module resolver is set), run code
//! from strings (`eval` is disabled), nor reach the file system, processes or network (rhai
//! has no such functions and kds registers none). Each load and each call runs under
//! [`ExtensionLimits`]: by default 5,000,000 operations (a loop that never ends stops with
//! "extension `x.rhai` exceeded 5000000 operations (in `f`)"), 64 nested calls, expressions
//! nested 64 deep (32 in functions), strings of 1 MiB, arrays of 200,000 elements, maps of
//! 100,000 entries, 1 MiB printed and 10 seconds; `read_bytes` reads [`api::MAX_READ_BYTES`]
//! at most, and files are at most [`MAX_SCRIPT_BYTES`]. Any failure is a script error (exit
//! code 2) at the `use`, the call or the command, naming the script, the line and column in it
//! and the function; a read of memory the dump does not hold is a target error (exit code 3),
//! as in the playbook itself. (Rhai reports a limit at the outermost call, without a line.)

pub mod api;
pub mod convert;
mod host;

use crate::error::ExecError;
use crate::{Interpreter, OutputItem};
pub use host::{ExtensionLimits, MAX_SCRIPT_BYTES};
use host::{Failure, Host};
use kds_lang::ast::Span;
use kds_runtime::model::Value;
use std::path::{Path, PathBuf};

/// How deeply `use "x.kds"` may nest.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// The functions kds defines itself; an extension cannot replace them.
const BUILTIN_FUNCTIONS: &[&str] = &["len", "hex", "lower", "upper", "filetime", "poi"];

/// The interpreter's extension state: the rhai host (created on the first `use "*.rhai"`)
/// and the stack of playbooks being included.
pub(crate) struct Extensions {
    host: Option<Host>,
    /// The bounds scripts run under (set before the first `use "*.rhai"`).
    pub(crate) limits: host::ExtensionLimits,
    /// The top-level playbook's directory.
    base_dir: Option<PathBuf>,
    /// Included playbooks being run, outermost first: (name as written, canonical path,
    /// directory).
    including: Vec<(String, PathBuf, PathBuf)>,
}

impl Extensions {
    pub(crate) fn new(base_dir: Option<PathBuf>) -> Extensions {
        Extensions {
            host: None,
            limits: host::ExtensionLimits::default(),
            base_dir,
            including: Vec::new(),
        }
    }

    /// Where `written` is: relative to the including playbook's directory.
    fn resolve(&self, written: &str) -> PathBuf {
        let path = Path::new(written);
        if path.is_absolute() {
            return path.to_path_buf();
        }
        match self.including.last() {
            Some((_, _, dir)) => dir.join(path),
            None => match &self.base_dir {
                Some(dir) => dir.join(path),
                // The current directory, named in full so that messages say where kds looked.
                None => std::env::current_dir()
                    .map_or_else(|_| path.to_path_buf(), |cwd| cwd.join(path)),
            },
        }
    }
}

fn exec_error(failure: Failure, span: &Span) -> ExecError {
    if failure.target {
        ExecError::target(failure.message, span)
    } else {
        ExecError::script(failure.message, span)
    }
}

/// The text of a file `use` names, bounded; errors name the path tried.
fn read_source(written: &str, path: &Path, span: &Span) -> Result<String, ExecError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "no such file".to_string()
        } else {
            e.to_string()
        };
        ExecError::script(
            format!("cannot use `{written}`: {} ({why})", path.display()),
            span,
        )
    })?;
    if !meta.is_file() {
        return Err(ExecError::script(
            format!("cannot use `{written}`: {} is not a file", path.display()),
            span,
        ));
    }
    if meta.len() > host::MAX_SCRIPT_BYTES {
        return Err(ExecError::script(
            format!(
                "cannot use `{written}`: {} is {} bytes, more than the {} a script may have",
                path.display(),
                meta.len(),
                host::MAX_SCRIPT_BYTES
            ),
            span,
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        ExecError::script(
            format!(
                "cannot use `{written}`: cannot read {}: {e}",
                path.display()
            ),
            span,
        )
    })?;
    String::from_utf8(bytes).map_err(|e| {
        ExecError::script(
            format!(
                "cannot use `{written}`: {} is not UTF-8 text (invalid byte at {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
            span,
        )
    })
}

/// 1-based line of `offset` in `source`.
fn line_in(source: &str, offset: usize) -> usize {
    source
        .get(..offset.min(source.len()))
        .map_or(1, |before| before.matches('\n').count() + 1)
}

impl Interpreter {
    /// `use "path"`: load a rhai extension or run another playbook.
    pub(crate) fn use_file(&mut self, written: &str, span: &Span) -> Result<(), ExecError> {
        let path = self.extensions.resolve(written);
        if written.ends_with(".rhai") {
            self.load_extension(written, &path, span)
        } else if written.ends_with(".kds") {
            self.include_playbook(written, &path, span)
        } else {
            Err(ExecError::script(
                format!("cannot use `{written}`: `use` loads rhai extensions (`.rhai`) or playbooks (`.kds`)"),
                span,
            ))
        }
    }

    fn load_extension(&mut self, written: &str, path: &Path, span: &Span) -> Result<(), ExecError> {
        let source = read_source(written, path, span)?;
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let model = std::sync::Arc::clone(&self.model);
        let limits = self.extensions.limits;
        let host = self
            .extensions
            .host
            .get_or_insert_with(|| Host::new(model, limits));
        host.set_process(self.debugger.process_if_set());
        let loaded = host
            .load(written, &canonical, &source)
            .map(|script| script.functions.clone());
        self.show_printed();
        let functions = loaded.map_err(|f| exec_error(f, span))?;
        for (name, _) in functions {
            if BUILTIN_FUNCTIONS.contains(&name.as_str()) {
                self.warn(format!(
                    "`{name}` of `{written}` is hidden by kds's own `{name}`: the playbook cannot call it"
                ));
            }
        }
        Ok(())
    }

    fn include_playbook(
        &mut self,
        written: &str,
        path: &Path,
        span: &Span,
    ) -> Result<(), ExecError> {
        let source = read_source(written, path, span)?;
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if let Some(at) = self
            .extensions
            .including
            .iter()
            .position(|(_, p, _)| *p == canonical)
        {
            let mut chain: Vec<&str> = self.extensions.including[at..]
                .iter()
                .map(|(n, _, _)| n.as_str())
                .collect();
            chain.push(written);
            return Err(ExecError::script(
                format!(
                    "`use \"{written}\"` makes a cycle: {}",
                    chain.join(" uses ")
                ),
                span,
            ));
        }
        if self.extensions.including.len() >= MAX_INCLUDE_DEPTH {
            return Err(ExecError::script(
                format!(
                    "`use \"{written}\"`: playbooks nest deeper than {MAX_INCLUDE_DEPTH} `use`s"
                ),
                span,
            ));
        }
        let playbook = kds_lang::parse(&source).map_err(|diagnostics| {
            let count = diagnostics.0.len();
            let first = diagnostics.0.first().map_or_else(String::new, |d| {
                format!(": line {}: {}", line_in(&source, d.span().start), d.message)
            });
            ExecError::script(
                format!(
                    "`{written}` has {count} syntax error{}{first} (run `kds check {}`)",
                    if count == 1 { "" } else { "s" },
                    path.display()
                ),
                span,
            )
        })?;
        let dir = canonical
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        self.extensions
            .including
            .push((written.to_string(), canonical, dir));
        let outer = std::mem::replace(&mut self.source, source);
        let result = self.statements(&playbook.statements);
        let source = std::mem::replace(&mut self.source, outer);
        self.extensions.including.pop();
        result.map_err(|e| {
            let line = line_in(&source, e.span().start);
            let message = format!("`{written}` line {line}: {e}");
            if e.is_target_error() {
                ExecError::target(message, span)
            } else {
                ExecError::script(message, span)
            }
        })
    }

    /// Printed text and warnings of the last extension call, as output items.
    fn flush_extension_output(&mut self) -> String {
        let Some(host) = &self.extensions.host else {
            return String::new();
        };
        let (printed, warnings) = host.take_output();
        for message in warnings {
            self.warn(message);
        }
        printed
    }

    /// Show what the last extension call printed (as text) and its warnings.
    fn show_printed(&mut self) {
        let printed = self.flush_extension_output();
        if !printed.is_empty() {
            self.items.push(OutputItem::Value {
                value: Value::Str(printed.trim_end_matches('\n').to_string()),
            });
        }
    }

    /// A function of a loaded extension, called from an expression: `None` when no extension
    /// defines `name`.
    pub(crate) fn call_extension(
        &mut self,
        name: &str,
        args: &[Value],
        span: &Span,
    ) -> Option<Result<Value, ExecError>> {
        let host = self.extensions.host.as_ref()?;
        let index = match host.find_function(name, args.len())? {
            Ok(index) => index,
            Err(arities) => {
                let takes: Vec<String> = arities.iter().map(ToString::to_string).collect();
                return Some(Err(ExecError::script(
                    format!(
                        "`{name}` of an extension takes {} argument(s), given {}",
                        takes.join(" or "),
                        args.len()
                    ),
                    span,
                )));
            }
        };
        host.set_process(self.debugger.process_if_set());
        let result = host.call_function(index, name, args);
        self.show_printed();
        Some(result.map_err(|f| exec_error(f, span)))
    }

    /// Whether a loaded extension registered the command `name`.
    pub(crate) fn has_extension_command(&self, name: &str) -> bool {
        self.extensions
            .host
            .as_ref()
            .is_some_and(|h| h.has_command(name))
    }

    /// Run the extension command `name` with its evaluated arguments: its output text.
    pub(crate) fn extension_command(
        &mut self,
        name: &str,
        args: &[Value],
        span: &Span,
    ) -> Result<String, ExecError> {
        let Some(host) = self.extensions.host.as_ref() else {
            return Err(ExecError::script(
                format!("no extension defines `{name}`"),
                span,
            ));
        };
        host.set_process(self.debugger.process_if_set());
        let result = host.call_command(name, args);
        let mut text = self.flush_extension_output();
        match result.map_err(|f| exec_error(f, span))? {
            Value::Null => {}
            Value::Str(s) => text.push_str(&s),
            other => text.push_str(&other.to_string()),
        }
        Ok(text)
    }

    /// `name` of every function the loaded extensions define, sorted (for completion).
    #[must_use]
    pub fn extension_functions(&self) -> Vec<String> {
        self.extensions
            .host
            .as_ref()
            .map(Host::function_names)
            .unwrap_or_default()
    }

    /// Every command the loaded extensions registered (`!name`), sorted.
    #[must_use]
    pub fn extension_commands(&self) -> Vec<String> {
        self.extensions
            .host
            .as_ref()
            .map(Host::command_names)
            .unwrap_or_default()
    }

    /// For "unknown function" messages: the extension functions, if any.
    pub(crate) fn extension_function_hint(&self) -> String {
        let names = self.extension_functions();
        if names.is_empty() {
            String::new()
        } else {
            format!("; from extensions: {}", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests;
