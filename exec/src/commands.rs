//! WinDbg commands: arguments are evaluated here, the work and the rendering are the standard
//! library's ([`kds_stdlib`]); extensions' commands come last.

use crate::error::ExecError;
use crate::Interpreter;
use kds_lang::ast::{Command, CommandArg, CommandArgKind, Span};
use kds_runtime::model::{Object, Value};
use kds_stdlib::memory::DumpFormat;
use kds_stdlib::process::{process_command, ProcessSelector};
use kds_stdlib::stack::StackStyle;
use kds_stdlib::{
    bugcheck, dt, lm, memory, peb, pte, switch, symbols, thread, xsym, CommandError, Rendered,
};

/// What a command produced: its text and, for standard commands, its structured result.
pub(crate) struct CommandOutput {
    pub text: String,
    pub data: Option<serde_json::Value>,
}

impl From<Rendered> for CommandOutput {
    fn from(r: Rendered) -> CommandOutput {
        CommandOutput {
            text: r.text,
            data: Some(r.data),
        }
    }
}

/// A standard library error at the command's span.
pub(crate) fn command_error(error: CommandError, span: &Span) -> ExecError {
    match error {
        CommandError::Model(e) => ExecError::from_model(&e, span),
        CommandError::Usage(m) => ExecError::script(m, span),
        CommandError::NotFound(m) => ExecError::target(m, span),
        CommandError::Symbols(e) => ExecError::target(e.to_string(), span),
    }
}

/// The command's arguments split into options (`/p`) and positional arguments.
struct Args<'a> {
    flags: Vec<&'a str>,
    positional: Vec<&'a CommandArg>,
}

impl<'a> Args<'a> {
    fn of(command: &'a Command) -> Args<'a> {
        let mut flags = Vec::new();
        let mut positional = Vec::new();
        for arg in &command.args {
            match &arg.kind {
                CommandArgKind::Flag(f) => flags.push(f.as_str()),
                _ => positional.push(arg),
            }
        }
        Args { flags, positional }
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

impl Interpreter {
    pub(crate) fn command(
        &mut self,
        command: &Command,
        span: &Span,
    ) -> Result<CommandOutput, ExecError> {
        let name = command.name.name.as_str();
        let args = Args::of(command);
        let result: Result<Rendered, ExecError> = match name {
            "!process" => self.process_cmd(&args, span),
            ".process" => {
                let process = self.object_arg(args.positional.first().copied(), "_EPROCESS")?;
                let r = switch::dot_process(&mut self.debugger, process, args.has("r"));
                self.std(r, span)
            }
            ".thread" => {
                let thread = self.object_arg(args.positional.first().copied(), "_ETHREAD")?;
                let r =
                    switch::dot_thread(&mut self.debugger, thread, args.has("p"), args.has("r"));
                self.std(r, span)
            }
            "!thread" => {
                let address = match args.positional.first() {
                    Some(a) => Some(self.address_arg(a)?),
                    None => None,
                };
                let r = thread::thread_command(&mut self.debugger, address);
                self.std(r, span)
            }
            "k" | "kb" | "kn" | "kbn" | "kp" | "kv" | "kpn" | "kvn" | "kc" | "kd" | "kf" => {
                let style = match name {
                    "kb" | "kp" => StackStyle::WithArgs,
                    "kv" => StackStyle::Verbose,
                    "kn" => StackStyle::Numbered,
                    "kbn" | "kpn" => StackStyle::NumberedWithArgs,
                    "kvn" => StackStyle::NumberedVerbose,
                    _ => StackStyle::Plain,
                };
                let count = match args.positional.first() {
                    Some(a) => Some(self.address_arg(a)?),
                    None => None,
                };
                let r = kds_stdlib::stack::stack_command(&mut self.debugger, style, count);
                self.std(r, span)
            }
            "!peb" => {
                let address = match args.positional.first() {
                    Some(a) => Some(self.address_arg(a)?),
                    None => None,
                };
                let r = peb::peb_command(&mut self.debugger, address);
                self.std(r, span)
            }
            "lm" | "lmv" | "lmm" | "lmvm" => {
                let mut verbose = name.starts_with("lmv");
                let mut pattern = None;
                let mut expect_pattern = name.ends_with('m') && name != "lm";
                for arg in &args.positional {
                    let word = self.word_arg(arg)?;
                    match word.as_str() {
                        "v" if !expect_pattern => verbose = true,
                        "m" if !expect_pattern => expect_pattern = true,
                        _ => pattern = Some(word),
                    }
                }
                let r = lm::lm_command(&mut self.debugger, verbose, pattern.as_deref());
                self.std(r, span)
            }
            "x" => {
                let Some(arg) = args.positional.first() else {
                    return Err(ExecError::script("`x` needs module!pattern", span));
                };
                let (module, pattern) = match &arg.kind {
                    CommandArgKind::Qualified { module, name } => (module.clone(), name.clone()),
                    _ => {
                        let w = self.word_arg(arg)?;
                        match w.split_once('!') {
                            Some((m, p)) => (m.to_string(), p.to_string()),
                            None => ("*".to_string(), w),
                        }
                    }
                };
                let r = xsym::x_command(&mut self.debugger, &module, &pattern);
                self.std(r, span)
            }
            "dt" => self.dt_cmd(&args, span),
            "ln" => {
                let Some(arg) = args.positional.first() else {
                    return Err(ExecError::script("`ln` needs an address", span));
                };
                let address = self.address_arg(arg)?;
                let r = xsym::ln_command(&mut self.debugger, address);
                self.std(r, span)
            }
            "r" => {
                let name = match args.positional.first() {
                    Some(a) => Some(self.word_arg(a)?),
                    None => None,
                };
                let r = kds_stdlib::registers::r_command(&mut self.debugger, name.as_deref());
                self.std(r, span)
            }
            "!vm" => {
                let flags = match args.positional.first() {
                    Some(a) => u32::try_from(self.address_arg(a)?).map_err(|_| {
                        ExecError::script("`!vm` flags are a 32-bit number", &a.span)
                    })?,
                    None => 0,
                };
                let r = kds_stdlib::vm::vm_command(&self.debugger, flags);
                self.std(r, span)
            }
            "!pte" | "!vtop" => {
                let Some(arg) = args.positional.last() else {
                    return Err(ExecError::script(
                        format!("`{name}` needs an address"),
                        span,
                    ));
                };
                let va = self.address_arg(arg)?;
                let r = pte::pte_command(&mut self.debugger, va, name == "!vtop");
                self.std(r, span)
            }
            ".bugcheck" => {
                let r = bugcheck::bugcheck_report(self.model.bugcheck(), self.model.pointer_size());
                Ok(Rendered::of(&r))
            }
            ".sympath" => {
                let new = match args.positional.first() {
                    Some(a) => Some(self.word_arg(a)?),
                    None => None,
                };
                let r = symbols::sympath_command(&mut self.debugger, new.as_deref());
                self.std(r, span)
            }
            "!sym" => {
                let mode = match args.positional.first() {
                    Some(a) => self.word_arg(a)?,
                    None => String::new(),
                };
                let noisy = match mode.to_ascii_lowercase().as_str() {
                    "noisy" => true,
                    "quiet" => false,
                    _ => return Err(ExecError::script("`!sym` takes `noisy` or `quiet`", span)),
                };
                Ok(Rendered::of(&symbols::sym_command(
                    &mut self.debugger,
                    noisy,
                )))
            }
            ".reload" => {
                let r =
                    symbols::reload_command(&mut self.debugger, args.has("f"), args.has("user"));
                self.std(r, span)
            }
            dump if DumpFormat::for_command(dump, self.model.pointer_size()).is_some() => {
                let format = DumpFormat::for_command(dump, self.model.pointer_size())
                    .unwrap_or(DumpFormat::Bytes);
                let mut address = None;
                let mut count = None;
                for arg in &args.positional {
                    match &arg.kind {
                        CommandArgKind::Length { value, .. } => count = Some(*value),
                        _ => address = Some(self.address_arg(arg)?),
                    }
                }
                let Some(address) = address else {
                    return Err(ExecError::script(
                        format!("`{dump}` needs an address"),
                        span,
                    ));
                };
                let r = memory::dump_command(&mut self.debugger, format, address, count);
                self.std(r, span)
            }
            other if self.has_extension_command(other) => {
                let mut values = Vec::with_capacity(command.args.len());
                for arg in &command.args {
                    values.push(self.argument_value(&arg.kind, &arg.span)?);
                }
                return Ok(CommandOutput {
                    text: self.extension_command(other, &values, span)?,
                    data: None,
                });
            }
            other => Err(ExecError::script(
                format!("`{other}` is not implemented in this version of kds"),
                &command.name.span,
            )),
        };
        result.map(CommandOutput::from)
    }

    /// A standard library result rendered, or its error at `span`.
    fn std<R: kds_stdlib::Report>(
        &mut self,
        result: Result<R, CommandError>,
        span: &Span,
    ) -> Result<Rendered, ExecError> {
        let mut rendered = result
            .map(|r| Rendered::of(&r))
            .map_err(|e| command_error(e, span))?;
        // `!sym noisy`: say which modules' symbols the command loaded, before its output.
        let loads = self.debugger.take_symbol_loads();
        if !loads.is_empty() {
            rendered.text = format!("{}\n{}", loads.join("\n"), rendered.text);
        }
        Ok(rendered)
    }

    /// A command argument's value: numbers as written (hex by default), expressions evaluated.
    pub(crate) fn argument_value(
        &mut self,
        kind: &CommandArgKind,
        span: &Span,
    ) -> Result<Value, ExecError> {
        match kind {
            CommandArgKind::Number(n) => Ok(Value::Int(i128::from(*n))),
            CommandArgKind::Expr(e) => self.eval(e, None),
            CommandArgKind::Register(r) => self.eval(
                &kds_lang::ast::Expr {
                    kind: kds_lang::ast::ExprKind::Register(r.clone()),
                    span: span.clone(),
                },
                None,
            ),
            CommandArgKind::Word(w) => Ok(Value::Str(w.clone())),
            CommandArgKind::Qualified { module, name } => {
                Ok(Value::Str(format!("{module}!{name}")))
            }
            CommandArgKind::Length { value, .. } => Ok(Value::Int(i128::from(*value))),
            CommandArgKind::Flag(f) => Ok(Value::Str(format!("/{f}"))),
        }
    }

    /// An argument that names an address: a number, a pointer, an object (its address) or
    /// `module!symbol`.
    pub(crate) fn address_arg(&mut self, arg: &CommandArg) -> Result<u64, ExecError> {
        if let CommandArgKind::Qualified { module, name } = &arg.kind {
            return self.resolve_symbol(module, name, &arg.span);
        }
        let value = self.argument_value(&arg.kind, &arg.span)?;
        match &value {
            Value::Object(o) => Ok(o.address()),
            other => other.as_u64().ok_or_else(|| {
                ExecError::script(
                    format!("expected an address, found a {}", other.kind()),
                    &arg.span,
                )
            }),
        }
    }

    /// `module!symbol` through the loaded modules' symbols.
    pub(crate) fn resolve_symbol(
        &mut self,
        module: &str,
        name: &str,
        span: &Span,
    ) -> Result<u64, ExecError> {
        let modules = self
            .debugger
            .modules()
            .map_err(|e| command_error(e, span))?;
        modules.resolve(module, name).ok_or_else(|| {
            ExecError::script(format!("`{module}!{name}` is not a known symbol"), span)
        })
    }

    /// An optional argument that is an object of `type_name`: an object value as it is, an
    /// address viewed as that type.
    fn object_arg(
        &mut self,
        arg: Option<&CommandArg>,
        type_name: &str,
    ) -> Result<Option<Object>, ExecError> {
        let Some(arg) = arg else {
            return Ok(None);
        };
        if let CommandArgKind::Expr(e) = &arg.kind {
            if let Value::Object(o) = self.eval(e, None)? {
                return Ok(Some(o));
            }
        }
        let address = self.address_arg(arg)?;
        let object = match type_name {
            "_EPROCESS" => self.model.process(address),
            "_ETHREAD" => self.model.thread(address),
            other => self.model.object(other, address),
        };
        object
            .map(Some)
            .map_err(|e| ExecError::from_model(&e, &arg.span))
    }

    /// An argument taken as a word (an image name, a pattern, a keyword).
    fn word_arg(&mut self, arg: &CommandArg) -> Result<String, ExecError> {
        Ok(match &arg.kind {
            CommandArgKind::Word(w) => w.clone(),
            CommandArgKind::Register(r) => r.clone(),
            CommandArgKind::Qualified { module, name } => format!("{module}!{name}"),
            CommandArgKind::Number(n) => format!("{n:x}"),
            kind => match self.argument_value(kind, &arg.span)? {
                Value::Str(s) => s,
                other => other.to_string(),
            },
        })
    }

    /// `dt [-r[N]] [module!]Type [address] [field ...]`.
    fn dt_cmd(&mut self, args: &Args<'_>, span: &Span) -> Result<Rendered, ExecError> {
        let mut depth = 0usize;
        let mut type_arg = None;
        let mut address = None;
        let mut fields = Vec::new();
        for arg in &args.positional {
            if let CommandArgKind::Word(w) = &arg.kind {
                if let Some(n) = w.strip_prefix("-r") {
                    depth = if n.is_empty() {
                        1
                    } else {
                        n.parse().map_err(|_| {
                            ExecError::script("`-r` takes a depth such as -r2", &arg.span)
                        })?
                    };
                    continue;
                }
            }
            if type_arg.is_none() {
                type_arg = Some(match &arg.kind {
                    CommandArgKind::Qualified { module, name } => {
                        (Some(module.clone()), name.clone())
                    }
                    _ => (None, self.word_arg(arg)?),
                });
            } else if address.is_none()
                && fields.is_empty()
                && !matches!(arg.kind, CommandArgKind::Word(_))
            {
                address = Some(self.address_arg(arg)?);
            } else {
                fields.push(self.word_arg(arg)?);
            }
        }
        let Some((module, type_name)) = type_arg else {
            return Err(ExecError::script(
                "`dt` needs a type such as nt!_EPROCESS",
                span,
            ));
        };
        let r = dt::dt_command(
            &mut self.debugger,
            module.as_deref(),
            &type_name,
            address,
            &fields,
            depth,
        );
        self.std(r, span)
    }

    /// `!process [0|<address>|<cid>] [flags] [image]`.
    fn process_cmd(&mut self, args: &Args<'_>, span: &Span) -> Result<Rendered, ExecError> {
        let mut selector = None;
        let mut flags = None;
        let mut image = None;
        for arg in &args.positional {
            let value = match &arg.kind {
                CommandArgKind::Word(w) => Value::Str(w.clone()),
                kind => self.argument_value(kind, &arg.span)?,
            };
            match value {
                Value::Str(s) => image = Some(s),
                Value::Object(o) if selector.is_none() => {
                    selector = Some(ProcessSelector::Object(o));
                }
                v if selector.is_none() => {
                    let n = v.as_u64().ok_or_else(|| {
                        ExecError::script(
                            format!("`!process` cannot select by a {}", v.kind()),
                            &arg.span,
                        )
                    })?;
                    selector = Some(if n == 0 {
                        ProcessSelector::All
                    } else {
                        ProcessSelector::AddressOrCid(n)
                    });
                }
                v if flags.is_none() => {
                    flags = Some(v.as_u64().ok_or_else(|| {
                        ExecError::script("`!process` flags are a number", &arg.span)
                    })?);
                }
                _ => {
                    return Err(ExecError::script(
                        "`!process` takes a process, flags and an image name",
                        &arg.span,
                    ))
                }
            }
        }
        // `!process 0 0 name` and a bare `!process` without a selector but with an image name
        // search all processes.
        let selector = selector.unwrap_or(if image.is_some() {
            ProcessSelector::All
        } else {
            ProcessSelector::Current
        });
        let r = process_command(&mut self.debugger, selector, flags, image.as_deref());
        self.std(r, span)
    }
}
