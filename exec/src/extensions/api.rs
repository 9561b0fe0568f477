//! What a rhai extension sees of the target: the object model as custom types (`Object`,
//! `Pointer`, `Enum`) and functions that read (never write) through it. Every read goes
//! through [`kds_runtime::model`]: in the address space of the object or pointer it starts
//! from, else in the implicit process's space (kernel addresses resolve there too), else in
//! the kernel's.

use super::convert::{int_address, to_dynamic};
use super::host::SharedState;
use crate::error::ExecError;
use kds_runtime::model::{EnumValue, ModelError, Object, Pointer, Scope, Value};
use kds_runtime::symbols::TypeRef;
use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Position, INT};
use std::sync::Arc;

/// Bytes one `read_bytes` call returns at most.
pub const MAX_READ_BYTES: INT = 0x1_0000;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A failure raised by a model function: its message, and whether the target (memory not in
/// the dump) rather than the script is to blame. Scripts can catch it (`try { } catch (e) { }`)
/// and print it.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub message: String,
    pub target: bool,
}

pub(crate) fn fault(message: impl Into<String>, target: bool) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(
        Dynamic::from(Fault {
            message: message.into(),
            target,
        }),
        Position::NONE,
    )
    .into()
}

fn misuse(message: impl Into<String>) -> Box<EvalAltResult> {
    fault(message, false)
}

fn model_fault(e: &ModelError) -> Box<EvalAltResult> {
    fault(
        e.to_string(),
        ExecError::from_model(e, &(0..0)).is_target_error(),
    )
}

/// Where an address argument reads: an `Object` or `Pointer` in its own space, an `INT` in
/// the default space.
fn locate(state: &SharedState, at: &Dynamic) -> RhaiResult<(Scope, u64)> {
    if let Ok(i) = at.as_int() {
        return Ok((state.default_scope(), int_address(i)));
    }
    if let Some(o) = at.clone().try_cast::<Object>() {
        return Ok((o.scope().clone(), o.address()));
    }
    if let Some(p) = at.clone().try_cast::<Pointer>() {
        let scope = p.scope().cloned().unwrap_or_else(|| state.default_scope());
        return Ok((scope, p.address));
    }
    Err(misuse(format!(
        "expected an address (an integer, a Pointer or an Object), found {}",
        at.type_name()
    )))
}

fn offset_address(state: &SharedState, at: &Dynamic, offset: INT) -> RhaiResult<(Scope, u64)> {
    let (scope, address) = locate(state, at)?;
    Ok((scope, address.wrapping_add(offset as u64)))
}

fn read_int(scope: &Scope, address: u64, width: u64) -> RhaiResult<INT> {
    let bytes = scope
        .read(address, width, "memory")
        .map_err(|e| model_fault(&e))?;
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    Ok(u64::from_le_bytes(buf) as INT)
}

fn untyped_in(scope: &Scope, address: u64) -> Pointer {
    Pointer::new(address, TypeRef::Base("void".into()), Some(scope.clone()))
}

fn read_pointer(state: &SharedState, scope: &Scope, address: u64) -> RhaiResult<Pointer> {
    let width = state.model.pointer_size();
    let value = read_int(scope, address, width)?;
    Ok(untyped_in(scope, int_address(value)))
}

fn read_bytes(scope: &Scope, address: u64, len: INT) -> RhaiResult<Blob> {
    if !(0..=MAX_READ_BYTES).contains(&len) {
        return Err(misuse(format!(
            "read_bytes reads 0 to {MAX_READ_BYTES:#x} bytes at a time, not {len}"
        )));
    }
    scope
        .read(address, len as u64, "memory")
        .map_err(|e| model_fault(&e))
}

fn field_of(value: Value, name: &str) -> RhaiResult<Dynamic> {
    value
        .field(name)
        .map(|v| to_dynamic(&v))
        .map_err(|e| model_fault(&e))
}

fn read_only<T>(what: &str) -> RhaiResult<T> {
    Err(misuse(format!(
        "cannot assign to a field of {what}: extensions read the target, they never write to it"
    )))
}

fn rows(state: &SharedState, rows: kds_runtime::model::Rows) -> Array {
    state.warn(rows.warnings.iter().map(ToString::to_string));
    rows.rows.into_iter().map(Dynamic::from).collect()
}

fn as_process(at: &Dynamic, what: &str) -> RhaiResult<Object> {
    at.clone().try_cast::<Object>().ok_or_else(|| {
        misuse(format!(
            "`{what}(process)` takes a process Object, not {}",
            at.type_name()
        ))
    })
}

/// `nt!Name`, `Name`: a global of the kernel.
fn symbol(state: &SharedState, name: &str) -> RhaiResult<Pointer> {
    let (module, bare) = match name.split_once('!') {
        Some((m, n)) => (m, n),
        None => ("nt", name),
    };
    let is_kernel = ["nt", "ntoskrnl", "ntkrnlmp", "ntkrnlpa", "ntkrpamp"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(module));
    if !is_kernel {
        return Err(misuse(format!(
            "symbols of `{module}` are not loaded: only the kernel's (`nt!`) are"
        )));
    }
    let address = state.model.symbol_address(bare).ok_or_else(|| {
        misuse(format!(
            "`{module}!{bare}` is not in the kernel's symbol table"
        ))
    })?;
    Ok(untyped_in(&state.model.kernel_scope(), address))
}

/// A command name as the playbook writes it: `!name` or `.name`, not a built-in command.
fn command_name(name: &str) -> RhaiResult<String> {
    let name = name.trim();
    let full = if name.starts_with(['!', '.']) {
        name.to_string()
    } else {
        format!("!{name}")
    };
    let rest = &full[1..];
    if rest.is_empty() || !rest.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
        return Err(misuse(format!(
            "`{full}` is not a command name: write `!name` with letters, digits and `_`"
        )));
    }
    if kds_lang::commands::lookup(&full).is_some() {
        return Err(misuse(format!(
            "`{full}` is a built-in command: give the extension command another name"
        )));
    }
    Ok(full)
}

/// Register the custom types and the model functions on `engine`.
#[allow(clippy::too_many_lines)]
pub(crate) fn register(engine: &mut Engine, state: &Arc<SharedState>) {
    engine
        .register_type_with_name::<Object>("Object")
        .register_type_with_name::<Pointer>("Pointer")
        .register_type_with_name::<EnumValue>("Enum")
        .register_type_with_name::<Fault>("Error");

    // Errors raised by model functions, as scripts see them when they catch one.
    engine
        .register_fn("to_string", |f: &mut Fault| f.message.clone())
        .register_fn("to_debug", |f: &mut Fault| f.message.clone())
        .register_get("message", |f: &mut Fault| f.message.clone());

    // Objects: typed views of structures.
    engine
        .register_get("address", |o: &mut Object| o.address() as INT)
        .register_get("type_name", |o: &mut Object| o.type_name().to_string())
        .register_fn("field", |o: &mut Object, name: &str| {
            field_of(Value::Object(o.clone()), name)
        })
        .register_indexer_get(|o: &mut Object, name: &str| field_of(Value::Object(o.clone()), name))
        .register_indexer_set(|_: &mut Object, _: &str, _: Dynamic| read_only::<()>("an object"))
        .register_fn("fields", |o: &mut Object| -> Array {
            o.field_names().into_iter().map(Dynamic::from).collect()
        })
        .register_fn("field_address", |o: &mut Object, path: &str| {
            o.field_address(path)
                .map(|a| untyped_in(o.scope(), a))
                .map_err(|e| model_fault(&e))
        })
        .register_fn("pointer", |o: &mut Object| o.pointer())
        .register_fn("cast", |o: &mut Object, ty: &str| {
            o.cast(ty).map_err(|e| model_fault(&e))
        })
        .register_fn("to_string", |o: &mut Object| o.to_string())
        .register_fn("to_debug", |o: &mut Object| o.to_string())
        .register_fn("==", |a: &mut Object, b: Object| a.same_view(&b))
        .register_fn("!=", |a: &mut Object, b: Object| !a.same_view(&b));

    // Pointers: typed addresses, followed on field access.
    engine
        .register_get("address", |p: &mut Pointer| p.address as INT)
        .register_get("type_name", |p: &mut Pointer| {
            Value::Pointer(p.clone()).type_name()
        })
        .register_get("is_null", |p: &mut Pointer| p.is_null())
        .register_fn("field", |p: &mut Pointer, name: &str| {
            field_of(Value::Pointer(p.clone()), name)
        })
        .register_indexer_get(|p: &mut Pointer, name: &str| {
            field_of(Value::Pointer(p.clone()), name)
        })
        .register_indexer_set(|_: &mut Pointer, _: &str, _: Dynamic| read_only::<()>("a pointer"))
        .register_fn("deref", |p: &mut Pointer| {
            p.deref()
                .map(|v| to_dynamic(&v))
                .map_err(|e| model_fault(&e))
        })
        .register_fn("cast", |p: &mut Pointer, ty: &str| p.cast(ty))
        .register_fn("+", |p: Pointer, n: INT| {
            Pointer::new(
                p.address.wrapping_add(n as u64),
                TypeRef::Base("void".into()),
                p.scope().cloned(),
            )
        })
        .register_fn("-", |p: Pointer, n: INT| {
            Pointer::new(
                p.address.wrapping_sub(n as u64),
                TypeRef::Base("void".into()),
                p.scope().cloned(),
            )
        })
        .register_fn("-", |a: Pointer, b: Pointer| {
            a.address.wrapping_sub(b.address) as INT
        })
        .register_fn("==", |a: Pointer, b: Pointer| a.address == b.address)
        .register_fn("!=", |a: Pointer, b: Pointer| a.address != b.address)
        .register_fn("==", |a: Pointer, b: INT| a.address == int_address(b))
        .register_fn("!=", |a: Pointer, b: INT| a.address != int_address(b))
        .register_fn("==", |a: INT, b: Pointer| int_address(a) == b.address)
        .register_fn("!=", |a: INT, b: Pointer| int_address(a) != b.address)
        .register_fn("to_string", |p: &mut Pointer| p.to_string())
        .register_fn("to_debug", |p: &mut Pointer| p.to_string());

    // Enum constants: compare with their name (any case) or their number.
    let enum_eq_str = |e: &EnumValue, s: &str| Value::Enum(e.clone()).equals(&Value::from(s));
    engine
        .register_get("name", |e: &mut EnumValue| {
            e.name.clone().map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_get("value", |e: &mut EnumValue| e.value)
        .register_get("type_name", |e: &mut EnumValue| e.type_name.clone())
        .register_fn("==", move |e: EnumValue, s: ImmutableString| {
            enum_eq_str(&e, &s)
        })
        .register_fn("!=", move |e: EnumValue, s: ImmutableString| {
            !enum_eq_str(&e, &s)
        })
        .register_fn("==", move |s: ImmutableString, e: EnumValue| {
            enum_eq_str(&e, &s)
        })
        .register_fn("!=", move |s: ImmutableString, e: EnumValue| {
            !enum_eq_str(&e, &s)
        })
        .register_fn("==", |e: EnumValue, n: INT| e.value == n)
        .register_fn("!=", |e: EnumValue, n: INT| e.value != n)
        .register_fn("==", |n: INT, e: EnumValue| e.value == n)
        .register_fn("!=", |n: INT, e: EnumValue| e.value != n)
        .register_fn("==", |a: EnumValue, b: EnumValue| a == b)
        .register_fn("!=", |a: EnumValue, b: EnumValue| a != b)
        .register_fn("to_string", |e: &mut EnumValue| e.to_string())
        .register_fn("to_debug", |e: &mut EnumValue| e.to_string());

    // Numbers as WinDbg people read them.
    engine
        .register_fn("hex", |n: INT| format!("{:#x}", n as u64))
        .register_fn("hex", |p: Pointer| format!("{:#x}", p.address));

    // Collections.
    for name in ["processes", "threads", "modules"] {
        let s = Arc::clone(state);
        engine.register_fn(name, move || s.collection(name));
    }
    let s = Arc::clone(state);
    engine.register_fn("threads", move |p: Dynamic| {
        let process = as_process(&p, "threads")?;
        let found = s
            .model
            .process_threads(&process)
            .map_err(|e| model_fault(&e))?;
        Ok::<_, Box<EvalAltResult>>(rows(&s, found))
    });
    let s = Arc::clone(state);
    engine.register_fn("modules", move |p: Dynamic| {
        let process = as_process(&p, "modules")?;
        let found = s
            .model
            .process_modules(&process)
            .map_err(|e| model_fault(&e))?;
        Ok::<_, Box<EvalAltResult>>(rows(&s, found))
    });
    let s = Arc::clone(state);
    engine.register_fn("current_process", move || {
        s.current_process().map_or(Dynamic::UNIT, Dynamic::from)
    });
    let s = Arc::clone(state);
    engine.register_fn("kernel_base", move || {
        untyped_in(&s.model.kernel_scope(), s.model.kernel_base())
    });

    // Symbols and typed views.
    let s = Arc::clone(state);
    engine.register_fn("symbol", move |name: &str| symbol(&s, name));
    let s = Arc::clone(state);
    engine.register_fn("object", move |at: Dynamic, ty: &str| {
        let (scope, address) = locate(&s, &at)?;
        Object::new(scope, ty, address).map_err(|e| model_fault(&e))
    });
    let s = Arc::clone(state);
    engine.register_fn("offset_of", move |ty: &str, path: &str| {
        s.model
            .table()
            .offset_of(ty, path)
            .map(|o| o as INT)
            .map_err(|e| misuse(e.to_string()))
    });
    let s = Arc::clone(state);
    engine.register_fn("size_of", move |ty: &str| {
        s.model
            .table()
            .size_of(ty)
            .map(|o| o as INT)
            .map_err(|e| misuse(e.to_string()))
    });
    let s = Arc::clone(state);
    engine.register_fn("walk_list", move |head: Dynamic, ty: &str, link: &str| {
        let (scope, address) = locate(&s, &head)?;
        let found = s
            .model
            .walk_list(Arc::clone(scope.space()), address, ty, link)
            .map_err(|e| model_fault(&e))?;
        Ok::<_, Box<EvalAltResult>>(rows(&s, found))
    });

    // Memory.
    for (name, width) in [
        ("read_u8", 1u64),
        ("read_u16", 2),
        ("read_u32", 4),
        ("read_u64", 8),
    ] {
        let s = Arc::clone(state);
        engine.register_fn(name, move |at: Dynamic| {
            let (scope, address) = locate(&s, &at)?;
            read_int(&scope, address, width)
        });
        let s = Arc::clone(state);
        engine.register_fn(name, move |at: Dynamic, offset: INT| {
            let (scope, address) = offset_address(&s, &at, offset)?;
            read_int(&scope, address, width)
        });
    }
    let s = Arc::clone(state);
    engine.register_fn("read_pointer", move |at: Dynamic| {
        let (scope, address) = locate(&s, &at)?;
        read_pointer(&s, &scope, address)
    });
    let s = Arc::clone(state);
    engine.register_fn("read_pointer", move |at: Dynamic, offset: INT| {
        let (scope, address) = offset_address(&s, &at, offset)?;
        read_pointer(&s, &scope, address)
    });
    let s = Arc::clone(state);
    engine.register_fn("read_bytes", move |at: Dynamic, len: INT| {
        let (scope, address) = locate(&s, &at)?;
        read_bytes(&scope, address, len)
    });
    let s = Arc::clone(state);
    engine.register_fn("read_bytes", move |at: Dynamic, offset: INT, len: INT| {
        let (scope, address) = offset_address(&s, &at, offset)?;
        read_bytes(&scope, address, len)
    });

    // User commands.
    let s = Arc::clone(state);
    engine.register_fn("register_command", move |name: &str, f: FnPtr| {
        s.register_command(command_name(name)?, f)
    });
    let s = Arc::clone(state);
    engine.register_fn("register_command", move |name: &str, f: &str| {
        let f = FnPtr::new(f).map_err(|_| misuse(format!("`{f}` is not a function name")))?;
        s.register_command(command_name(name)?, f)
    });
}
