//! The kds executor: runs a parsed and checked playbook against a target's object model and
//! collects what it shows, in order. A run never loses output: an error stops it, and what
//! came before the error is kept in the report.
//!
//! The executor sits above `kds-lang` (the syntax), `kds-runtime` (targets and the object
//! model) and `kds-stdlib` (command renderers), so that the runtime stays free of the language.

mod commands;
mod error;
mod eval;
pub mod extensions;
pub mod output;

pub use error::ExecError;
pub use output::{render_json, render_jsonl, render_text, OutputItem, SeverityName};

use commands::command_error;
use kds_lang::ast::{ExprKind, ParamType, Playbook, Severity, Span, Stmt, StmtKind};
use kds_runtime::model::{ModelContext, Object, Pointer, Value};
use kds_stdlib::Debugger;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// How to run: values for the playbook's parameters (`--set name=value`), and the directory
/// `use "file"` paths are relative to (the playbook's own; `None`: the current directory).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub params: Vec<(String, String)>,
    pub base_dir: Option<std::path::PathBuf>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub items: Vec<OutputItem>,
    /// The error that stopped the run, if one did.
    pub error: Option<ExecError>,
    /// `expect`/`check` conditions of severity `fail` that did not hold.
    pub failed_expectations: usize,
}

impl RunReport {
    /// The process exit code: 0 success, 1 an expectation failed, 2 a script error, 3 a
    /// target error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match &self.error {
            Some(e) if e.is_target_error() => 3,
            Some(_) => 2,
            None if self.failed_expectations > 0 => 1,
            None => 0,
        }
    }
}

/// Run `playbook` (parsed from `source`) against `model`: a fresh [`Interpreter`], one run.
#[must_use]
pub fn run(
    source: &str,
    playbook: &Playbook,
    model: Arc<ModelContext>,
    options: &RunOptions,
) -> RunReport {
    Interpreter::new(model, options).run(source, playbook)
}

/// Receives `line N: <statement>` before each statement runs.
type ProgressReport = Box<dyn FnMut(&str) + Send>;

/// Runs playbooks one after another against one target, keeping bindings, parameters and the
/// implicit process between runs: what a REPL needs.
pub struct Interpreter {
    /// The source of the run in progress (spans index into it).
    source: String,
    model: Arc<ModelContext>,
    /// Parameters and `let` bindings.
    bindings: HashMap<String, Value>,
    /// Collections walked once (the target is frozen).
    collections: HashMap<&'static str, Vec<Value>>,
    /// Debugger state the commands share: implicit process and thread, module lists.
    debugger: Debugger,
    items: Vec<OutputItem>,
    /// Warnings already given: a torn list met by several walks is reported once.
    warned: HashSet<String>,
    failed_expectations: usize,
    overrides: HashMap<String, String>,
    /// Loaded rhai extensions and the playbooks being included (`use`).
    extensions: extensions::Extensions,
    /// Told which statement is about to run (`line N: text`), for a progress display.
    progress: Option<ProgressReport>,
}

impl Interpreter {
    #[must_use]
    pub fn new(model: Arc<ModelContext>, options: &RunOptions) -> Interpreter {
        Interpreter {
            source: String::new(),
            debugger: Debugger::new(Arc::clone(&model)),
            model,
            bindings: HashMap::new(),
            collections: HashMap::new(),
            items: Vec::new(),
            warned: HashSet::new(),
            failed_expectations: 0,
            overrides: options.params.iter().cloned().collect(),
            extensions: extensions::Extensions::new(options.base_dir.clone()),
            progress: None,
        }
    }

    /// Run one playbook (or one REPL line) parsed from `source`; state carries over.
    pub fn run(&mut self, source: &str, playbook: &Playbook) -> RunReport {
        self.source = source.to_string();
        self.failed_expectations = 0;
        // Once per run: a REPL line that walks a torn list again says so again.
        self.warned.clear();
        let error = self.statements(&playbook.statements).err();
        RunReport {
            items: std::mem::take(&mut self.items),
            error,
            failed_expectations: self.failed_expectations,
        }
    }

    /// Call `report` with `line N: <statement>` before each statement runs (sections report
    /// their inner statements): a CLI shows it as a spinner on long steps.
    pub fn set_progress(&mut self, report: impl FnMut(&str) + Send + 'static) {
        self.progress = Some(Box::new(report));
    }

    /// The implicit process's EPROCESS address, if one is set (for a `kd>`-style prompt).
    #[must_use]
    pub fn current_process_address(&self) -> Option<u64> {
        self.debugger.current_process_address()
    }

    /// The names bound so far (parameters and `let`s), sorted.
    #[must_use]
    pub fn bound_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.bindings.keys().cloned().collect();
        names.sort();
        names
    }

    /// The object model the interpreter reads through.
    #[must_use]
    pub fn model(&self) -> &Arc<ModelContext> {
        &self.model
    }
}

impl Interpreter {
    fn statements(&mut self, statements: &[Stmt]) -> Result<(), ExecError> {
        for stmt in statements {
            if let Some(reason) = self.model.target().session_ended() {
                return Err(ExecError::target(
                    format!("the live session ended ({reason}); the target was resumed"),
                    &stmt.span,
                ));
            }
            self.statement(stmt)?;
        }
        Ok(())
    }

    fn statement(&mut self, stmt: &Stmt) -> Result<(), ExecError> {
        if self.progress.is_some() && !matches!(stmt.kind, StmtKind::Section { .. }) {
            let line = self.line_of(&stmt.span);
            let text = self.source.get(stmt.span.clone()).unwrap_or("");
            let head: String = text.lines().next().unwrap_or("").chars().take(60).collect();
            if let Some(report) = self.progress.as_mut() {
                report(&format!("line {line}: {}", head.trim()));
            }
        }
        match &stmt.kind {
            StmtKind::Param(param) => {
                let value = match self.overrides.get(&param.name.name) {
                    Some(text) => {
                        let ty = param.ty.as_ref().map(|t| t.ty.clone()).or_else(|| {
                            param.default.as_ref().map(|d| match d.kind {
                                ExprKind::Int(_) => ParamType::Int,
                                ExprKind::Bool(_) => ParamType::Bool,
                                _ => ParamType::String,
                            })
                        });
                        parse_param(text, ty.as_ref().unwrap_or(&ParamType::String)).map_err(
                            |m| {
                                ExecError::script(
                                    format!("--set {}={text}: {m}", param.name.name),
                                    &param.name.span,
                                )
                            },
                        )?
                    }
                    None => match &param.default {
                        Some(default) => self.eval(default, None)?,
                        None => {
                            return Err(ExecError::script(
                                format!(
                                    "parameter `{0}` has no default: give it with --set {0}=...",
                                    param.name.name
                                ),
                                &param.name.span,
                            ))
                        }
                    },
                };
                self.bindings.insert(param.name.name.clone(), value);
            }
            StmtKind::Let { name, value } => {
                let v = self.eval(value, None)?;
                self.bindings.insert(name.name.clone(), v);
            }
            StmtKind::Command(command) => {
                let rendered = self.command(command, &stmt.span);
                self.flush_debugger_warnings();
                let rendered = rendered?;
                let written = self
                    .source
                    .get(stmt.span.clone())
                    .unwrap_or("")
                    .trim()
                    .to_string();
                self.items.push(OutputItem::Command {
                    command: written,
                    text: rendered.text,
                    data: rendered.data,
                });
            }
            StmtKind::Expr(expr) => {
                let shows = matches!(&expr.kind, ExprKind::Pipeline { stages, .. }
                    if stages.iter().any(|s| matches!(s.kind, kds_lang::ast::StageKind::Show(_))));
                let value = self.eval(expr, None)?;
                if !shows {
                    self.display(value);
                }
            }
            StmtKind::Expect(expect) => {
                let holds = eval::truthy(&self.eval(&expect.condition, None)?);
                if !holds {
                    let severity = expect.effective_severity();
                    if severity == Severity::Fail {
                        self.failed_expectations += 1;
                    }
                    let message = expect.message.as_ref().map_or_else(
                        || {
                            let cond = self
                                .source
                                .get(expect.condition.span.clone())
                                .unwrap_or("?");
                            format!("expected {}", cond.trim())
                        },
                        |m| m.value.clone(),
                    );
                    self.items.push(OutputItem::Expectation {
                        severity: severity.into(),
                        message,
                        line: self.line_of(&stmt.span),
                    });
                }
            }
            StmtKind::Section { title, body } => {
                self.items.push(OutputItem::SectionStart {
                    title: title.value.clone(),
                });
                self.statements(body)?;
                self.items.push(OutputItem::SectionEnd {
                    title: title.value.clone(),
                });
            }
            StmtKind::Use { path } => self.use_file(&path.value, &path.span)?,
        }
        Ok(())
    }

    fn line_of(&self, span: &Span) -> usize {
        self.source
            .get(..span.start)
            .map_or(0, |before| before.matches('\n').count() + 1)
    }

    /// Show a value computed by a statement.
    fn display(&mut self, value: Value) {
        match value {
            Value::List(rows)
                if rows
                    .iter()
                    .all(|r| matches!(r, Value::Object(_) | Value::Record(_))) =>
            {
                let columns = rows.first().map(eval::default_columns).unwrap_or_default();
                let table = rows
                    .iter()
                    .map(|r| {
                        columns
                            .iter()
                            .map(|c| eval::row_field(r, c).ok().flatten().unwrap_or(Value::Null))
                            .collect()
                    })
                    .collect();
                self.items.push(OutputItem::Table {
                    columns,
                    rows: table,
                });
            }
            Value::Object(_) => {
                let columns = eval::default_columns(&value);
                let row = columns
                    .iter()
                    .map(|c| {
                        eval::row_field(&value, c)
                            .ok()
                            .flatten()
                            .unwrap_or(Value::Null)
                    })
                    .collect();
                self.items.push(OutputItem::List {
                    columns,
                    rows: vec![row],
                });
            }
            other => self.items.push(OutputItem::Value { value: other }),
        }
    }

    fn emit_shown(&mut self, shown: eval::Shown) {
        use kds_lang::ast::Show;
        let item = match shown.spec {
            Show::Table(_) => OutputItem::Table {
                columns: shown.columns,
                rows: shown.rows,
            },
            Show::List(_) => OutputItem::List {
                columns: shown.columns,
                rows: shown.rows,
            },
            Show::Json => {
                let rows = shown
                    .rows
                    .into_iter()
                    .map(|row| {
                        let mut record = kds_runtime::model::Record::new();
                        for (name, value) in shown.columns.iter().zip(row) {
                            record.insert(name.clone(), value);
                        }
                        Value::Record(record)
                    })
                    .collect();
                OutputItem::Value {
                    value: Value::List(rows),
                }
            }
        };
        self.items.push(item);
    }

    fn collection(&mut self, name: &str, span: &Span) -> Result<Value, ExecError> {
        let key: &'static str = match name {
            "processes" => "processes",
            "threads" => "threads",
            _ => "modules",
        };
        if key == "modules" {
            // The kernel's modules, then the implicit process's user modules once loaded
            // (`.process /r`), as `lm` lists them.
            let mut rows = match self.collections.get(key) {
                Some(rows) => rows.clone(),
                None => {
                    let walked = self
                        .model
                        .kernel_modules()
                        .map_err(|e| ExecError::from_model(&e, span))?;
                    for warning in &walked.warnings {
                        self.warn(warning.to_string());
                    }
                    let rows = walked.values();
                    self.collections.insert(key, rows.clone());
                    rows
                }
            };
            rows.extend(
                self.debugger
                    .user_module_rows()
                    .into_iter()
                    .map(Value::Object),
            );
            return Ok(Value::List(rows));
        }
        if let Some(rows) = self.collections.get(key) {
            return Ok(Value::List(rows.clone()));
        }
        if key == "processes" {
            let processes = self.debugger.processes();
            self.flush_debugger_warnings();
            let rows: Vec<Value> = processes
                .map_err(|e| command_error(e, span))?
                .into_iter()
                .map(Value::Object)
                .collect();
            self.collections.insert(key, rows.clone());
            return Ok(Value::List(rows));
        }
        let walked = match key {
            "processes" => self.model.processes(),
            "threads" => self.model.threads(),
            _ => self.model.kernel_modules(),
        }
        .map_err(|e| ExecError::from_model(&e, span))?;
        for warning in &walked.warnings {
            self.warn(warning.to_string());
        }
        let rows = walked.values();
        self.collections.insert(key, rows.clone());
        Ok(Value::List(rows))
    }

    /// Names for what the target says about itself: `bugcheck` (the stop code),
    /// `bugcheck_parameters`, `taken_on_demand`, `build`, `processors`, `kernel_base` (the checker's
    /// `kds_lang::check::GLOBALS`; a test keeps the two lists equal).
    pub(crate) fn target_global(&self, name: &str) -> Option<Value> {
        let identity = self.model.target().identity();
        let bugcheck = self.model.bugcheck();
        match name {
            // The stop code, named (`bugcheck == 0xE2`, `bugcheck == "MANUALLY_INITIATED_CRASH"`).
            "bugcheck" => bugcheck.map(|b| {
                let info = kds_stdlib::bugcheck::decode(b.code, b.parameters);
                Value::Enum(kds_runtime::model::EnumValue {
                    type_name: "BUGCHECK_CODE".into(),
                    value: i64::from(b.code),
                    name: info.name.map(str::to_string),
                })
            }),
            // The dump was taken on purpose (keyboard, NMI button, live dump): a hang to
            // analyse, not a crash cause.
            "taken_on_demand" => bugcheck.map(|b| {
                Value::Bool(kds_stdlib::bugcheck::decode(b.code, b.parameters).taken_on_demand)
            }),
            "bugcheck_parameters" => bugcheck.map(|b| {
                Value::List(
                    b.parameters
                        .iter()
                        .map(|p| Value::Int(i128::from(*p)))
                        .collect(),
                )
            }),
            "build" => identity.os_build.map(|b| Value::Int(i128::from(b))),
            "processors" => Some(Value::Int(i128::from(self.model.processor_count()))),
            "kernel_base" => Some(Value::Pointer(Pointer::untyped(self.model.kernel_base()))),
            _ => None,
        }
    }

    /// `module!symbol`: the address of a global of the kernel (`nt`, `nt!`, `ntoskrnl`,
    /// `ntkrnlmp`).
    fn symbol_address(&self, module: &str, name: &str, span: &Span) -> Result<u64, ExecError> {
        let is_kernel = ["nt", "ntoskrnl", "ntkrnlmp", "ntkrnlpa", "ntkrpamp"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(module));
        if !is_kernel {
            return Err(ExecError::script(
                format!("symbols of `{module}` are not loaded: only the kernel's (`nt!`) are, in this version"),
                span,
            ));
        }
        self.model.symbol_address(name).ok_or_else(|| {
            ExecError::script(
                format!("`{module}!{name}` is not in the kernel's symbol table"),
                span,
            )
        })
    }

    /// The implicit process: as set by `.process`, else the one whose page tables the dump
    /// header names (the process running on the crashing processor).
    pub(crate) fn implicit_process(&mut self, span: &Span) -> Result<Object, ExecError> {
        let p = self.debugger.implicit_process();
        self.flush_debugger_warnings();
        p.map_err(|e| command_error(e, span))
    }

    /// Report what the debugger state met (torn lists) as warnings, in order.
    pub(crate) fn flush_debugger_warnings(&mut self) {
        for message in self.debugger.take_warnings() {
            self.warn(message);
        }
    }

    /// Give a warning unless the same one was already given in this run.
    pub(crate) fn warn(&mut self, message: String) {
        if self.warned.insert(message.clone()) {
            self.items.push(OutputItem::Warning { message });
        }
    }

    fn register(&mut self, name: &str, span: &Span) -> Result<Value, ExecError> {
        match name.to_ascii_lowercase().as_str() {
            "$proc" => Ok(Value::Object(self.implicit_process(span)?)),
            "$peb" => self
                .implicit_process(span)?
                .field("Peb")
                .map_err(|e| ExecError::from_model(&e, span)),
            "$thread" => self
                .debugger
                .implicit_thread()
                .map(Value::Object)
                .map_err(|e| commands::command_error(e, span)),
            other => {
                let registers = kds_stdlib::registers::r_command(&mut self.debugger, Some(other))
                    .map_err(|e| match e {
                        kds_stdlib::CommandError::Usage(_) => ExecError::script(
                            format!("unknown register `@{other}` (known: @$proc, @$peb, @$thread and the target's integer registers and instruction pointer)"),
                            span,
                        ),
                        e => commands::command_error(e, span),
                    })?;
                match registers.registers.first().and_then(|r| r.value) {
                    Some(v) => Ok(Value::Int(i128::from(v))),
                    None => Err(ExecError::target(
                        format!("@{other} was not saved for this thread (only the context switch's registers are known)"),
                        span,
                    )),
                }
            }
        }
    }

    fn call(&mut self, function: &str, args: &[Value], span: &Span) -> Result<Value, ExecError> {
        let one = |what: &str| -> Result<&Value, ExecError> {
            match args {
                [v] => Ok(v),
                _ => Err(ExecError::script(
                    format!("`{what}` takes one argument, given {}", args.len()),
                    span,
                )),
            }
        };
        match function {
            "len" => match one("len")? {
                Value::List(l) => Ok(Value::Int(l.len() as i128)),
                Value::Str(s) => Ok(Value::Int(s.chars().count() as i128)),
                other => Err(ExecError::script(
                    format!("`len` of a {}", other.kind()),
                    span,
                )),
            },
            "hex" => {
                let v = one("hex")?;
                let n = v
                    .as_number()
                    .ok_or_else(|| ExecError::script(format!("`hex` of a {}", v.kind()), span))?;
                Ok(Value::Str(format!("{n:#x}")))
            }
            "lower" | "upper" => {
                let v = one(function)?;
                let s = v.as_str().ok_or_else(|| {
                    ExecError::script(format!("`{function}` of a {}", v.kind()), span)
                })?;
                Ok(Value::Str(if function == "lower" {
                    s.to_lowercase()
                } else {
                    s.to_uppercase()
                }))
            }
            "filetime" => {
                let v = one("filetime")?;
                let t = v.as_u64().ok_or_else(|| {
                    ExecError::script(format!("`filetime` of a {}", v.kind()), span)
                })?;
                Ok(Value::Str(kds_runtime::model::format_filetime(t)))
            }
            "poi" => {
                let v = one("poi")?;
                let address = v
                    .as_u64()
                    .ok_or_else(|| ExecError::script(format!("`poi` of a {}", v.kind()), span))?;
                let space = match self.debugger.current_process() {
                    Some(p) => Arc::clone(p.space()),
                    None => Arc::clone(self.model.kernel_space()),
                };
                let pointer = space
                    .read_pointer(address)
                    .map_err(|e| ExecError::target(format!("poi({address:#x}): {e}"), span))?;
                Ok(Value::Pointer(Pointer::untyped(pointer)))
            }
            other => match self.call_extension(other, args, span) {
                Some(result) => result,
                None => Err(ExecError::script(
                    format!(
                        "unknown function `{other}` (known: len, hex, lower, upper, filetime, poi{})",
                        self.extension_function_hint()
                    ),
                    span,
                )),
            },
        }
    }
}

/// A `--set` value for a parameter of type `ty`.
fn parse_param(text: &str, ty: &ParamType) -> Result<Value, String> {
    match ty {
        ParamType::String => Ok(Value::Str(text.to_string())),
        ParamType::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" => Ok(Value::Bool(false)),
            _ => Err("expected true or false".into()),
        },
        ParamType::Int | ParamType::Address => {
            let clean = text.replace('`', "");
            let parsed = match clean
                .strip_prefix("0x")
                .or_else(|| clean.strip_prefix("0X"))
            {
                Some(hex) => u64::from_str_radix(hex, 16).map(i128::from),
                None if matches!(ty, ParamType::Address) => {
                    u64::from_str_radix(&clean, 16).map(i128::from)
                }
                None => clean
                    .parse::<i128>()
                    .map_err(|_| "".parse::<u64>().unwrap_err()),
            };
            parsed.map(Value::Int).map_err(|_| {
                format!(
                    "expected {}",
                    if matches!(ty, ParamType::Address) {
                        "an address"
                    } else {
                        "an integer"
                    }
                )
            })
        }
        ParamType::List(inner) => text
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_param(s.trim(), inner))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List),
    }
}
