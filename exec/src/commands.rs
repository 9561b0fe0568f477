//! WinDbg commands. This version runs `!process` (flags 0: the one-block-per-process form)
//! and `.process`; the rest of the command set arrives with the standard library issue.

use crate::error::ExecError;
use crate::Interpreter;
use kds_lang::ast::{Command, CommandArgKind, Span};
use kds_runtime::model::{Object, Value};
use kds_stdlib::format::pointer;
use std::fmt::Write as _;

impl Interpreter {
    pub(crate) fn command(&mut self, command: &Command, span: &Span) -> Result<String, ExecError> {
        match command.name.name.as_str() {
            "!process" => self.process_command(command, span),
            ".process" => self.dot_process(command, span),
            other if self.has_extension_command(other) => {
                let mut args = Vec::with_capacity(command.args.len());
                for arg in &command.args {
                    args.push(self.argument_value(&arg.kind, &arg.span)?);
                }
                self.extension_command(other, &args, span)
            }
            other => Err(ExecError::script(
                format!("`{other}` is not implemented in this version of kds (available: !process, .process, and commands extensions register)"),
                &command.name.span,
            )),
        }
    }

    /// A command argument's value: numbers as written (hex by default), expressions evaluated.
    fn argument_value(&mut self, kind: &CommandArgKind, span: &Span) -> Result<Value, ExecError> {
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

    /// `!process [0|<address>|<cid>] [flags] [image]`.
    fn process_command(&mut self, command: &Command, span: &Span) -> Result<String, ExecError> {
        let mut selector: Option<(Value, Span)> = None;
        let mut flags: Option<(u64, Span)> = None;
        let mut image: Option<String> = None;
        for arg in &command.args {
            let value = self.argument_value(&arg.kind, &arg.span)?;
            if selector.is_none() && !matches!(value, Value::Str(_)) {
                selector = Some((value, arg.span.clone()));
            } else if flags.is_none() && !matches!(value, Value::Str(_)) {
                let f = value
                    .as_u64()
                    .ok_or_else(|| ExecError::script("`!process` flags are a number", &arg.span))?;
                flags = Some((f, arg.span.clone()));
            } else if let Value::Str(s) = value {
                image = Some(s);
            } else {
                return Err(ExecError::script(
                    "`!process` takes a process, flags and an image name",
                    &arg.span,
                ));
            }
        }
        if let Some((f, fspan)) = &flags {
            if *f != 0 {
                return Err(ExecError::script(
                    format!(
                        "`!process` flags {f:#x}: only flags 0 are implemented in this version"
                    ),
                    fspan,
                ));
            }
        }
        let processes = match self.collection("processes", span)? {
            Value::List(p) => p,
            _ => Vec::new(),
        };
        let selected: Vec<Object> = match selector.as_ref().map(|(v, s)| (v.clone(), s.clone())) {
            None => processes
                .iter()
                .filter_map(|p| p.as_object().cloned())
                .collect(),
            Some((Value::Int(0), _)) => processes
                .iter()
                .filter_map(|p| p.as_object().cloned())
                .collect(),
            Some((Value::Object(o), _)) => vec![o],
            Some((v, vspan)) => {
                let n = v.as_u64().ok_or_else(|| {
                    ExecError::script(
                        format!("`!process` cannot select by a {}", v.kind()),
                        &vspan,
                    )
                })?;
                processes
                    .iter()
                    .filter_map(|p| p.as_object().cloned())
                    .filter(|p| {
                        p.address() == n || p.field("pid").ok().and_then(|v| v.as_u64()) == Some(n)
                    })
                    .collect()
            }
        };
        let mut out = String::new();
        let all = selector
            .as_ref()
            .is_none_or(|(v, _)| matches!(v, Value::Int(0)));
        if all {
            out.push_str("**** NT ACTIVE PROCESS DUMP ****\n");
        }
        for p in selected {
            let name = p
                .field("name")
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            if let Some(want) = &image {
                if !name.eq_ignore_ascii_case(want) {
                    continue;
                }
            }
            self.process_block(&mut out, &p, &name, span)?;
        }
        Ok(out)
    }

    fn process_block(
        &self,
        out: &mut String,
        p: &Object,
        name: &str,
        span: &Span,
    ) -> Result<(), ExecError> {
        let ps = self.model.pointer_size();
        let get = |field: &str| p.field(field).map_err(|e| ExecError::from_model(&e, span));
        let number = |v: &Value| v.as_u64().unwrap_or(0);
        let session = match get("session")? {
            Value::Null => "none".to_string(),
            v => v.to_string(),
        };
        let handles = match get("handles")? {
            Value::Null => "<Data Not Accessible>".to_string(),
            v => format!("{v}."),
        };
        let object_table = p
            .raw_field("ObjectTable")
            .ok()
            .and_then(|v| v.as_u64())
            .map_or_else(|| "?".into(), |a| pointer(a, ps));
        let _ = writeln!(out, "PROCESS {}", pointer(p.address(), ps));
        let _ = writeln!(
            out,
            "    SessionId: {session}  Cid: {:04x}    Peb: {:08x}  ParentCid: {:04x}",
            number(&get("pid")?),
            number(&get("peb")?),
            number(&get("ppid")?)
        );
        let _ = writeln!(
            out,
            "    DirBase: {:08x}  ObjectTable: {object_table}  HandleCount: {handles}",
            number(&get("dtb")?)
        );
        let _ = writeln!(out, "    Image: {name}");
        out.push('\n');
        Ok(())
    }

    /// `.process [/p] [/r] [<process>]`: set or show the implicit process.
    fn dot_process(&mut self, command: &Command, span: &Span) -> Result<String, ExecError> {
        let mut target = None;
        let mut reload = false;
        for arg in &command.args {
            match &arg.kind {
                CommandArgKind::Flag(f) => match f.as_str() {
                    "p" | "i" => {}
                    "r" => reload = true,
                    other => {
                        return Err(ExecError::script(
                            format!("`.process` has no flag /{other}"),
                            &arg.span,
                        ))
                    }
                },
                kind => {
                    let v = self.argument_value(kind, &arg.span)?;
                    target = Some((v, arg.span.clone()));
                }
            }
        }
        let ps = self.model.pointer_size();
        let Some((value, vspan)) = target else {
            let current = self.implicit_process(span)?;
            return Ok(format!(
                "Implicit process is now {}\n",
                pointer(current.address(), ps)
            ));
        };
        let process = match value {
            Value::Object(o) => o,
            other => {
                let address = other.as_u64().ok_or_else(|| {
                    ExecError::script(
                        format!("`.process` needs a process, not a {}", other.kind()),
                        &vspan,
                    )
                })?;
                self.model
                    .process(address)
                    .map_err(|e| ExecError::from_model(&e, &vspan))?
            }
        };
        if process.type_name() != "_EPROCESS" {
            return Err(ExecError::script(
                format!("`.process` needs a process, not a {}", process.type_name()),
                &vspan,
            ));
        }
        let mut out = format!(
            "Implicit process is now {}\n",
            pointer(process.address(), ps)
        );
        if reload {
            out.push_str("Loading User Symbols\n");
        }
        self.current_process = Some(process);
        Ok(out)
    }
}
