//! The rhai engine of one interpreter: its limits, the scripts loaded into it, and the state
//! its native functions share (the model, what scripts printed, list warnings, registered
//! commands).
//!
//! Every compile and every call runs on a large stack segment (see [`BigStack`]): rhai
//! evaluates (and drops nested values) recursively, and although the limits bound that
//! recursion, the bound must hold whatever thread the interpreter runs on (test threads have
//! 2 MiB). A panic in the engine, should one happen, becomes an error.

use super::api::{self, Fault};
use super::convert::{from_dynamic, to_dynamic};
use kds_runtime::model::{ModelContext, Object, Scope, Value};
use rhai::{
    Array, CallFnOptions, Dynamic, Engine, EvalAltResult, FnAccess, FnPtr, LexError, ParseError,
    ParseErrorType, Position, AST,
};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The bounds every load of an extension, and every call into one, runs under. Rhai
/// enforces the first seven; kds the printing and time budgets (checked every 1024
/// operations), which also stop the one cost rhai does not count as operations: re-measuring
/// a large array or map after each change to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionLimits {
    /// Operations (statements, expressions, calls): a loop that never ends stops here.
    pub max_operations: u64,
    /// Nested function calls (recursion included).
    pub max_call_levels: usize,
    /// Nesting of expressions at the top level of a script.
    pub max_expr_depth: usize,
    /// Nesting of expressions inside functions.
    pub max_function_expr_depth: usize,
    /// Bytes in one string (and in all the strings inside one array or map).
    pub max_string_size: usize,
    /// Elements in one array (nested arrays counted) or bytes in one BLOB.
    pub max_array_size: usize,
    /// Entries in one object map (nested maps counted).
    pub max_map_size: usize,
    /// Bytes one load or call may `print`.
    pub max_print_bytes: usize,
    /// Time one load or call may take.
    pub max_duration: Duration,
}

impl Default for ExtensionLimits {
    fn default() -> ExtensionLimits {
        ExtensionLimits {
            max_operations: 5_000_000,
            max_call_levels: 64,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 1 << 20,
            max_array_size: 200_000,
            max_map_size: 100_000,
            max_print_bytes: 1 << 20,
            max_duration: Duration::from_secs(10),
        }
    }
}

/// Size of a `.rhai` (or included `.kds`) file.
pub const MAX_SCRIPT_BYTES: u64 = 1 << 20;
/// Stack a script runs on (reserved, not committed): room for the deepest recursion the
/// limits allow, with a wide margin.
const SCRIPT_STACK: usize = 256 << 20;
/// Scripts start on a fresh stack segment unless this much is left.
const STACK_RED_ZONE: usize = 64 << 20;

/// A command an extension registered with `register_command`.
pub(crate) struct UserCommand {
    pub name: String,
    pub function: FnPtr,
    /// Index of the script that registered it.
    pub script: usize,
}

/// What native functions share with the interpreter.
pub(crate) struct SharedState {
    pub model: Arc<ModelContext>,
    limits: ExtensionLimits,
    inner: Mutex<Inner>,
    print_overflow: AtomicBool,
}

#[derive(Default)]
struct Inner {
    printed: String,
    warnings: Vec<String>,
    commands: Vec<UserCommand>,
    current_process: Option<Object>,
    collections: HashMap<&'static str, Array>,
    /// The script whose top level is running (`register_command` is allowed there only).
    loading: Option<usize>,
    /// When the run in progress must stop.
    deadline: Option<Instant>,
}

/// Why kds stopped a script (the value of rhai's `ErrorTerminated`).
const STOPPED_PRINTING: &str = "print";
const STOPPED_TIME: &str = "time";

impl SharedState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where plain addresses are read: the implicit process's space (which maps the kernel
    /// too) when there is one, else the kernel's.
    pub fn default_scope(&self) -> Scope {
        match &self.lock().current_process {
            Some(p) => p.scope().clone(),
            None => self.model.kernel_scope(),
        }
    }

    pub fn current_process(&self) -> Option<Object> {
        self.lock().current_process.clone()
    }

    pub fn warn(&self, warnings: impl Iterator<Item = String>) {
        self.lock().warnings.extend(warnings);
    }

    /// `processes()`, `threads()`, `modules()`: walked once, like the playbook's.
    pub fn collection(&self, name: &'static str) -> Result<Array, Box<EvalAltResult>> {
        if let Some(rows) = self.lock().collections.get(name) {
            return Ok(rows.clone());
        }
        let walked = match name {
            "processes" => self.model.processes(),
            "threads" => self.model.threads(),
            _ => self.model.kernel_modules(),
        }
        .map_err(|e| {
            api::fault(
                e.to_string(),
                crate::ExecError::from_model(&e, &(0..0)).is_target_error(),
            )
        })?;
        let rows: Array = walked.rows.iter().cloned().map(Dynamic::from).collect();
        let mut inner = self.lock();
        inner
            .warnings
            .extend(walked.warnings.iter().map(ToString::to_string));
        inner.collections.insert(name, rows.clone());
        Ok(rows)
    }

    pub fn register_command(
        &self,
        name: String,
        function: FnPtr,
    ) -> Result<(), Box<EvalAltResult>> {
        let mut inner = self.lock();
        let Some(script) = inner.loading else {
            return Err(api::fault(
                "register_command works only at the top level of an extension, while `use` loads it",
                false,
            ));
        };
        inner.commands.retain(|c| c.name != name);
        inner.commands.push(UserCommand {
            name,
            function,
            script,
        });
        Ok(())
    }

    fn print(&self, text: &str) {
        let mut inner = self.lock();
        if inner.printed.len() + text.len() + 1 > self.limits.max_print_bytes {
            self.print_overflow.store(true, Ordering::Relaxed);
            return;
        }
        inner.printed.push_str(text);
        inner.printed.push('\n');
    }

    /// Start the budgets of one load or call.
    fn start(&self) {
        self.print_overflow.store(false, Ordering::Relaxed);
        self.lock().deadline = Instant::now().checked_add(self.limits.max_duration);
    }

    /// Called by rhai at every operation: why to stop, if the script must.
    fn progress(&self, operations: u64) -> Option<Dynamic> {
        if self.print_overflow.load(Ordering::Relaxed) {
            return Some(Dynamic::from(STOPPED_PRINTING));
        }
        if operations % 1024 == 0 {
            let deadline = self.lock().deadline;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Some(Dynamic::from(STOPPED_TIME));
            }
        }
        None
    }
}

/// A loaded `.rhai` file.
pub(crate) struct Script {
    /// As the playbook wrote it (`ext/triage.rhai`), for messages.
    pub name: String,
    pub path: PathBuf,
    ast: Arc<AST>,
    /// Public functions: name and number of parameters.
    pub functions: Vec<(String, usize)>,
}

/// Why a load or a call failed: the message, and whether the target is to blame.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub message: String,
    pub target: bool,
}

impl Failure {
    fn script(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            target: false,
        }
    }
}

/// The engine and the scripts loaded into it.
pub(crate) struct Host {
    engine: Arc<Engine>,
    stack: BigStack,
    state: Arc<SharedState>,
    scripts: Vec<Script>,
    limits: ExtensionLimits,
}

impl Host {
    pub fn new(model: Arc<ModelContext>, limits: ExtensionLimits) -> Host {
        let state = Arc::new(SharedState {
            model,
            limits,
            inner: Mutex::new(Inner::default()),
            print_overflow: AtomicBool::new(false),
        });
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_levels)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            // No files: `import` is not a keyword, and no resolver could load one anyway.
            .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
            .disable_symbol("import")
            .disable_symbol("eval");
        let printer = Arc::clone(&state);
        engine.on_print(move |s| printer.print(s));
        let debugger = Arc::clone(&state);
        engine.on_debug(move |s, _, _| debugger.print(s));
        let progress = Arc::clone(&state);
        engine.on_progress(move |operations| progress.progress(operations));
        api::register(&mut engine, &state);
        Host {
            engine: Arc::new(engine),
            stack: BigStack,
            state,
            scripts: Vec::new(),
            limits,
        }
    }

    /// Set the implicit process scripts read plain addresses in.
    pub fn set_process(&self, process: Option<Object>) {
        self.state.lock().current_process = process;
    }

    /// Text printed and warnings raised since the last call.
    pub fn take_output(&self) -> (String, Vec<String>) {
        let mut inner = self.state.lock();
        (
            std::mem::take(&mut inner.printed),
            std::mem::take(&mut inner.warnings),
        )
    }

    /// Compile `source` and run its top level (which may register commands); a file loaded
    /// again replaces its earlier version.
    pub fn load(&mut self, name: &str, path: &Path, source: &str) -> Result<&Script, Failure> {
        let index = self
            .scripts
            .iter()
            .position(|s| s.path == path)
            .unwrap_or(self.scripts.len());
        self.state.start();
        let (engine, limits, script) = (Arc::clone(&self.engine), self.limits, name.to_string());
        let text = source.to_string();
        let ast = self.stack.run(move || {
            engine
                .compile(text)
                .map(Arc::new)
                .map_err(|e| parse_failure(&script, &limits, &e))
        })??;
        let functions: Vec<(String, usize)> = ast
            .iter_functions()
            .filter(|f| f.access == FnAccess::Public && !f.name.starts_with("anon$"))
            .map(|f| (f.name.to_string(), f.params.len()))
            .collect();
        {
            let mut inner = self.state.lock();
            inner.commands.retain(|c| c.script != index);
            inner.loading = Some(index);
        }
        let (engine, limits, script, top) = (
            Arc::clone(&self.engine),
            self.limits,
            name.to_string(),
            Arc::clone(&ast),
        );
        self.state.start();
        let ran = self.stack.run(move || {
            engine
                .run_ast(&top)
                .map_err(|e| failure(&script, None, &limits, &e))
        });
        let mut inner = self.state.lock();
        inner.loading = None;
        let checked = ran.and_then(|r| r).and_then(|()| {
            for c in inner.commands.iter().filter(|c| c.script == index) {
                let f = c.function.fn_name();
                let anonymous = f.starts_with("anon$") || !c.function.curry().is_empty();
                if !anonymous && !functions.iter().any(|(n, arity)| n == f && *arity == 1) {
                    return Err(Failure::script(format!(
                        "extension `{name}`: register_command(\"{}\", \"{f}\"): it defines no function `{f}(args)` taking one argument",
                        c.name
                    )));
                }
            }
            Ok(())
        });
        if let Err(e) = checked {
            inner.commands.retain(|c| c.script != index);
            return Err(e);
        }
        drop(inner);
        let script = Script {
            name: name.to_string(),
            path: path.to_path_buf(),
            ast,
            functions,
        };
        if index == self.scripts.len() {
            self.scripts.push(script);
        } else {
            self.scripts[index] = script;
        }
        Ok(&self.scripts[index])
    }

    /// The script that defines `name` (the one loaded last, when several do), and whether it
    /// takes `arity` arguments: `Err` lists the arities it has.
    pub fn find_function(&self, name: &str, arity: usize) -> Option<Result<usize, Vec<usize>>> {
        let mut arities = Vec::new();
        for (i, script) in self.scripts.iter().enumerate().rev() {
            for (n, a) in &script.functions {
                if n == name {
                    if *a == arity {
                        return Some(Ok(i));
                    }
                    arities.push(*a);
                }
            }
        }
        if arities.is_empty() {
            None
        } else {
            arities.sort_unstable();
            arities.dedup();
            Some(Err(arities))
        }
    }

    /// `name/arity` of every function scripts define, sorted.
    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .scripts
            .iter()
            .flat_map(|s| s.functions.iter().map(|(n, _)| n.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn command_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .state
            .lock()
            .commands
            .iter()
            .map(|c| c.name.clone())
            .collect();
        names.sort();
        names
    }

    pub fn has_command(&self, name: &str) -> bool {
        self.state.lock().commands.iter().any(|c| c.name == name)
    }

    /// Call `name` of script `index` with `args`.
    pub fn call_function(
        &self,
        index: usize,
        name: &str,
        args: &[Value],
    ) -> Result<Value, Failure> {
        let script = self
            .scripts
            .get(index)
            .ok_or_else(|| Failure::script(format!("no extension defines `{name}`")))?;
        self.state.start();
        let (engine, limits, ast) = (
            Arc::clone(&self.engine),
            self.limits,
            Arc::clone(&script.ast),
        );
        let (script, function, args) = (script.name.clone(), name.to_string(), args.to_vec());
        self.stack.run(move || {
            let args: Vec<Dynamic> = args.iter().map(to_dynamic).collect();
            let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
            let result = engine.call_fn_with_options::<Dynamic>(
                options,
                &mut rhai::Scope::new(),
                &ast,
                &function,
                args,
            );
            returned(&script, &function, &limits, result)
        })?
    }

    /// Run the user command `name` with its arguments (one array).
    pub fn call_command(&self, name: &str, args: &[Value]) -> Result<Value, Failure> {
        let (function, index) = {
            let inner = self.state.lock();
            let c = inner
                .commands
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| Failure::script(format!("no extension defines `{name}`")))?;
            (c.function.clone(), c.script)
        };
        let script = self
            .scripts
            .get(index)
            .ok_or_else(|| Failure::script(format!("no extension defines `{name}`")))?;
        self.state.start();
        let (engine, limits, ast) = (
            Arc::clone(&self.engine),
            self.limits,
            Arc::clone(&script.ast),
        );
        let (script, command, args) = (script.name.clone(), name.to_string(), args.to_vec());
        self.stack.run(move || {
            let args = Dynamic::from_array(args.iter().map(to_dynamic).collect());
            let result = function.call::<Dynamic>(&engine, &ast, (args,));
            returned(&script, &command, &limits, result)
        })?
    }
}

/// Where scripts run: on the calling thread, on a stack segment of [`SCRIPT_STACK`] bytes
/// when less than [`STACK_RED_ZONE`] is left (always, on ordinary threads). Cheaper than a
/// thread hop, and a panic in the engine, should one happen, becomes an error.
#[derive(Default)]
struct BigStack;

impl BigStack {
    fn run<R>(&self, f: impl FnOnce() -> R) -> Result<R, Failure> {
        stacker::maybe_grow(STACK_RED_ZONE, SCRIPT_STACK, || {
            std::panic::catch_unwind(AssertUnwindSafe(f))
        })
        .map_err(|_| Failure::script("the extension engine failed unexpectedly"))
    }
}

/// A call's result as a kds value (converted, and dropped, on the big stack).
fn returned(
    script: &str,
    function: &str,
    limits: &ExtensionLimits,
    result: Result<Dynamic, Box<EvalAltResult>>,
) -> Result<Value, Failure> {
    match result {
        Ok(d) => from_dynamic(&d).map_err(|m| {
            Failure::script(format!("extension `{script}`: `{function}` returned {m}"))
        }),
        Err(e) => Err(failure(script, Some(function), limits, &e)),
    }
}

/// `10 s`, `300 ms`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

fn at(pos: Position) -> Option<String> {
    match (pos.line(), pos.position()) {
        (Some(line), Some(column)) => Some(format!("line {line}, column {column}")),
        (Some(line), None) => Some(format!("line {line}")),
        _ => None,
    }
}

fn parse_failure(script: &str, limits: &ExtensionLimits, e: &ParseError) -> Failure {
    let ParseError(kind, pos) = e;
    let what = match kind.as_ref() {
        ParseErrorType::ExprTooDeep => format!(
            "expressions nest deeper than the limit ({} levels, {} in functions)",
            limits.max_expr_depth, limits.max_function_expr_depth
        ),
        ParseErrorType::Reserved(word)
        | ParseErrorType::BadInput(LexError::ImproperSymbol(word, _))
            if word == "import" || word == "eval" =>
        {
            format!(
                "`{word}` is not available to extensions (they load no files and run no code from strings)"
            )
        }
        other => other.to_string(),
    };
    let place = at(*pos).map_or_else(String::new, |p| format!(" at {p}"));
    Failure::script(format!(
        "extension `{script}` has a syntax error{place}: {what}"
    ))
}

/// A rhai error as a message naming the script, where it happened and in which function
/// (`function` is the one kds called, `None` for the top level). Rhai reports limit errors
/// at the outermost call only, so those name the function the playbook called.
fn failure(
    script: &str,
    function: Option<&str>,
    limits: &ExtensionLimits,
    err: &EvalAltResult,
) -> Failure {
    let mut calls: Vec<&str> = Vec::new();
    let mut e = err;
    let mut outer_pos = Position::NONE;
    loop {
        match e {
            EvalAltResult::ErrorInFunctionCall(name, _, inner, pos) => {
                calls.push(name.as_str());
                if outer_pos.is_none() {
                    outer_pos = *pos;
                }
                e = inner;
            }
            EvalAltResult::ErrorInModule(_, inner, _) => e = inner,
            _ => break,
        }
    }
    let pos = if e.position().is_none() {
        outer_pos
    } else {
        e.position()
    };
    let within = match calls.last().copied().or(function) {
        Some(f) => format!("in `{f}`"),
        None => "at its top level".to_string(),
    };
    let place = match at(pos) {
        Some(p) => format!("{p}, {within}"),
        None => within,
    };
    let (message, target) = match e {
        EvalAltResult::ErrorTooManyOperations(_) => (
            format!(
                "extension `{script}` exceeded {} operations ({place}): does a loop never end?",
                limits.max_operations
            ),
            false,
        ),
        EvalAltResult::ErrorStackOverflow(_) => (
            format!(
                "extension `{script}` exceeded {} nested function calls ({place})",
                limits.max_call_levels
            ),
            false,
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => (
            format!(
                "extension `{script}`: {} exceeded its limit ({place}; limits: strings {} bytes, arrays {} elements, maps {} entries)",
                what.to_lowercase(),
                limits.max_string_size,
                limits.max_array_size,
                limits.max_map_size
            ),
            false,
        ),
        EvalAltResult::ErrorTerminated(why, _)
            if why.clone().into_string().is_ok_and(|w| w == STOPPED_PRINTING) =>
        {
            (
                format!(
                    "extension `{script}` printed more than {} bytes ({place})",
                    limits.max_print_bytes
                ),
                false,
            )
        }
        EvalAltResult::ErrorTerminated(..) => (
            format!(
                "extension `{script}` ran longer than {} ({place}): does a loop never end, or grow a large array or map?",
                duration(limits.max_duration)
            ),
            false,
        ),
        EvalAltResult::ErrorRuntime(value, _) if value.is::<Fault>() => {
            let f = value.clone().cast::<Fault>();
            (
                format!("extension `{script}`: {} ({place})", f.message),
                f.target,
            )
        }
        other => {
            let mut text = other.to_string();
            if !other.position().is_none() {
                let suffix = format!(" ({})", other.position());
                if let Some(stripped) = text.strip_suffix(&suffix) {
                    text = stripped.to_string();
                }
            }
            (format!("extension `{script}`: {text} ({place})"), false)
        }
    };
    Failure {
        message: bounded(message),
        target,
    }
}

/// Messages quote what scripts throw: keep them readable.
fn bounded(mut message: String) -> String {
    const MAX: usize = 2000;
    if message.len() > MAX {
        let mut end = MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}
