//! `dt [-r[N]] [module!]Type [address] [field ...]`: a type's layout from the symbol table,
//! or the values of a structure at an address, as WinDbg prints them.

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::format::pointer;
use crate::pattern::matches_wildcard;
use crate::report::Report;
use kds_runtime::model::{Scope, Value};
use kds_runtime::symbols::{SymbolTable, TypeRef};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// Deepest `-r` honoured.
const MAX_DEPTH: usize = 8;
/// Array elements shown in a `[N]` summary of a character array.
const MAX_CHARS: usize = 256;

/// One line of `dt` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DtLine {
    pub depth: usize,
    pub offset: u64,
    pub name: String,
    /// WinDbg's type text (`Ptr64 _KTHREAD`, `[15] UChar`, `Pos 3, 1 Bit`).
    pub type_text: String,
    /// The value shown at an address (absent for a layout).
    pub value: Option<String>,
}

/// `dt` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DtReport {
    pub module: String,
    pub type_name: String,
    pub address: Option<u64>,
    pub lines: Vec<DtLine>,
}

/// Run `dt`. `fields` selects top-level fields by name or wildcard; dotted names select a
/// path (`Pcb.DirectoryTableBase`).
pub fn dt_command(
    dbg: &mut Debugger,
    module: Option<&str>,
    type_name: &str,
    address: Option<u64>,
    fields: &[String],
    depth: usize,
) -> Result<DtReport, CommandError> {
    let module = module.unwrap_or("nt");
    if !module.eq_ignore_ascii_case("nt") {
        return Err(CommandError::not_found(format!(
            "no type information for module `{module}` (only the kernel's symbol table is loaded)"
        )));
    }
    let table = Arc::clone(dbg.model().table());
    if !table.has_type(type_name) {
        return Err(CommandError::not_found(format!(
            "Symbol {module}!{type_name} not found."
        )));
    }
    let scope = address.map(|_| {
        dbg.current_process()
            .map_or_else(|| dbg.model().kernel_scope(), |p| p.scope().clone())
    });
    let mut walker = Walker {
        table: &table,
        scope: scope.as_ref(),
        ps: dbg.pointer_size(),
        max_depth: depth.min(MAX_DEPTH),
        lines: Vec::new(),
    };
    let selection: Vec<Vec<&str>> = fields.iter().map(|f| f.split('.').collect()).collect();
    walker.structure(type_name, address, 0, &selection)?;
    Ok(DtReport {
        module: module.to_string(),
        type_name: type_name.to_string(),
        address,
        lines: walker.lines,
    })
}

struct Walker<'a> {
    table: &'a SymbolTable,
    scope: Option<&'a Scope>,
    ps: u64,
    max_depth: usize,
    lines: Vec<DtLine>,
}

impl Walker<'_> {
    fn structure(
        &mut self,
        type_name: &str,
        address: Option<u64>,
        depth: usize,
        selection: &[Vec<&str>],
    ) -> Result<(), CommandError> {
        let mut fields = self.table.user_type(type_name)?.fields.clone();
        // Bitfields sharing their storage come in bit order, then the whole-storage member
        // of the same union (`ProcessFlags`), as `dt` lists them.
        let bit = |ty: &TypeRef| match ty {
            TypeRef::Bitfield { position, .. } => *position,
            _ => u32::MAX,
        };
        fields.sort_by_key(|f| (f.offset, bit(&f.ty)));
        for field in &fields {
            let chosen: Vec<Vec<&str>> = selection
                .iter()
                .filter(|path| {
                    path.first()
                        .is_some_and(|f| matches_wildcard(f, &field.name))
                })
                .map(|path| path[1..].to_vec())
                .collect();
            if !selection.is_empty() && chosen.is_empty() {
                continue;
            }
            let at = address.map(|a| a.wrapping_add(field.offset));
            let value = at.map(|a| self.value_text(&field.ty, a));
            self.lines.push(DtLine {
                depth,
                offset: field.offset,
                name: field.name.clone(),
                type_text: type_text(&field.ty, self.ps),
                value,
            });
            let deeper: Vec<Vec<&str>> = chosen.into_iter().filter(|p| !p.is_empty()).collect();
            if let TypeRef::User(inner) = &field.ty {
                if !deeper.is_empty() || depth < self.max_depth {
                    self.structure(inner, at, depth + 1, &deeper)?;
                }
            }
        }
        Ok(())
    }

    fn value_text(&self, ty: &TypeRef, address: u64) -> String {
        let Some(scope) = self.scope else {
            return String::new();
        };
        if let TypeRef::Array { count, element } = ty {
            if let TypeRef::Base(b) = element.as_ref() {
                if matches!(b.as_str(), "char" | "unsigned char") {
                    let len = (*count).min(MAX_CHARS as u64);
                    return match scope.read(address, len, "array") {
                        Ok(bytes) => {
                            let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                            format!("[{count}]  \"{}\"", String::from_utf8_lossy(&bytes[..end]))
                        }
                        Err(_) => format!("[{count}] <memory not readable>"),
                    };
                }
            }
        }
        match scope.value_at(ty, address, "field") {
            Err(_) => "<memory not readable>".to_string(),
            Ok(v) => self.value_string(ty, &v),
        }
    }

    fn value_string(&self, ty: &TypeRef, v: &Value) -> String {
        match (ty, v) {
            (TypeRef::Pointer(target), Value::Pointer(p)) => {
                if p.address == 0 {
                    "(null)".to_string()
                } else {
                    format!("0x{} {}", pointer(p.address, self.ps), short_type(target))
                }
            }
            (TypeRef::Bitfield { length, .. }, v) => {
                let n = v.as_u64().unwrap_or(0);
                format!("0y{n:0width$b}", width = *length as usize)
            }
            (TypeRef::Enum(_), Value::Enum(e)) => match &e.name {
                Some(name) => format!("0n{} ( {name} )", e.value),
                None => format!("0n{}", e.value),
            },
            (TypeRef::User(name), Value::Str(s)) => format!("{name} \"{s}\""),
            (TypeRef::User(_), Value::Int(i)) => format!("0x{i:x}"),
            (TypeRef::User(name), _) => name.clone(),
            (TypeRef::Array { count, .. }, Value::List(items)) => match items.first() {
                Some(first) => format!("[{count}] {}", scalar(first)),
                None => format!("[{count}]"),
            },
            (TypeRef::Base(b), Value::Int(i)) => match self.table.base_type(b) {
                Ok(base) if base.signed => format!("0n{i}"),
                _ => format!("0x{i:x}"),
            },
            (_, other) => scalar(other),
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Int(i) => format!("0x{i:x}"),
        other => other.to_string(),
    }
}

/// The pointed-to type as `dt` names it after a pointer value.
fn short_type(ty: &TypeRef) -> String {
    match ty {
        TypeRef::Base(b) if b == "void" => "Void".to_string(),
        TypeRef::Base(b) => base_name(b).to_string(),
        TypeRef::User(n) | TypeRef::Enum(n) => n.clone(),
        TypeRef::Pointer(_) => "Ptr".to_string(),
        _ => String::new(),
    }
}

/// WinDbg's names for base types.
fn base_name(name: &str) -> &str {
    match name {
        "unsigned char" => "UChar",
        "char" => "Char",
        "unsigned short" => "Uint2B",
        "short" => "Int2B",
        "unsigned long" | "unsigned int" => "Uint4B",
        "long" | "int" => "Int4B",
        "unsigned long long" => "Uint8B",
        "long long" => "Int8B",
        "void" => "Void",
        "wchar" => "Wchar",
        "double" | "float" | "f32" => "Float",
        "HRESULT" => "HRESULT",
        other => other,
    }
}

/// WinDbg's type text for a field.
fn type_text(ty: &TypeRef, ps: u64) -> String {
    let ptr = if ps == 4 { "Ptr32" } else { "Ptr64" };
    match ty {
        TypeRef::Base(b) => base_name(b).to_string(),
        TypeRef::User(n) | TypeRef::Enum(n) => n.clone(),
        TypeRef::Pointer(target) => match target.as_ref() {
            TypeRef::Function => format!("{ptr}     void "),
            inner => format!("{ptr} {}", type_text(inner, ps)),
        },
        TypeRef::Array { count, element } => format!("[{count}] {}", type_text(element, ps)),
        TypeRef::Bitfield {
            position, length, ..
        } => format!(
            "Pos {position}, {length} Bit{}",
            if *length == 1 { "" } else { "s" }
        ),
        TypeRef::Function => "void".to_string(),
    }
}

impl Report for DtReport {
    fn render(&self, out: &mut String) {
        if self.address.is_none() {
            let _ = writeln!(out, "{}!{}", self.module, self.type_name);
        }
        for l in &self.lines {
            let indent = "   ".repeat(l.depth + 1);
            let text = match &l.value {
                Some(v) => v.clone(),
                None => l.type_text.clone(),
            };
            let _ = writeln!(out, "{indent}+{:#05x} {:<16} : {text}", l.offset, l.name);
        }
    }
}
