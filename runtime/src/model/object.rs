//! Typed views: [`Scope`] (where and with which table to read), [`Object`] (a structure at an
//! address) and [`Pointer`] (a typed address that follows itself on field access).

use super::{addr, rows, ModelContext, ModelError, Value};
use crate::mmu::AddressSpace;
use crate::symbols::{BaseType, SymbolTable, TypeRef};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// How deep the offset-0 fallback (`p.DirectoryTableBase` → `p.Pcb.DirectoryTableBase`) looks.
const EMBEDDED_FALLBACK_DEPTH: u32 = 3;

/// Where values are read: an address space, the table that lays them out, and the model
/// (for per-process spaces, limits and the clock).
#[derive(Clone)]
pub struct Scope {
    model: Arc<ModelContext>,
    space: Arc<AddressSpace>,
    table: Arc<SymbolTable>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope(dtb {:#x})", self.space.dtb())
    }
}

impl Scope {
    #[must_use]
    pub fn new(
        model: Arc<ModelContext>,
        space: Arc<AddressSpace>,
        table: Arc<SymbolTable>,
    ) -> Scope {
        Scope {
            model,
            space,
            table,
        }
    }

    #[must_use]
    pub fn model(&self) -> &Arc<ModelContext> {
        &self.model
    }

    #[must_use]
    pub fn space(&self) -> &Arc<AddressSpace> {
        &self.space
    }

    #[must_use]
    pub fn table(&self) -> &Arc<SymbolTable> {
        &self.table
    }

    /// Same model and table, another space.
    #[must_use]
    pub fn with_space(&self, space: Arc<AddressSpace>) -> Scope {
        Scope {
            model: Arc::clone(&self.model),
            space,
            table: Arc::clone(&self.table),
        }
    }

    fn pointer_size(&self) -> u64 {
        match self.table.pointer_size() {
            0 => self.space.spec().pointer_size,
            n => n,
        }
    }

    /// Read exactly `len` bytes at `address`; the error names `what`.
    pub fn read(&self, address: u64, len: u64, what: &str) -> Result<Vec<u8>, ModelError> {
        let n = usize::try_from(len).map_err(|_| ModelError::Unsupported {
            type_name: what.to_string(),
            address,
            reason: format!("{len} bytes is too large to read"),
        })?;
        let mut buf = vec![0u8; n];
        self.space
            .read(address, &mut buf)
            .map_err(|source| ModelError::Read {
                address,
                len,
                what: what.to_string(),
                source,
                pointer_size: self.pointer_size(),
            })?;
        Ok(buf)
    }

    /// Read a pointer of the table's width.
    pub fn read_pointer(&self, address: u64, what: &str) -> Result<u64, ModelError> {
        let bytes = self.read(address, self.pointer_size(), what)?;
        Ok(le_unsigned(&bytes) as u64)
    }

    /// The value of type `ty` at `address`. Structures become lazy [`Object`]s (nothing is
    /// read); strings, large integers and scalars are read now, bytes of the field only.
    pub fn value_at(&self, ty: &TypeRef, address: u64, what: &str) -> Result<Value, ModelError> {
        match ty {
            TypeRef::Base(_)
            | TypeRef::Enum(_)
            | TypeRef::Pointer(_)
            | TypeRef::Bitfield { .. } => {
                let size = self.table.size_of_ref(ty)?;
                let bytes = self.read(address, size, what)?;
                self.decode_scalar(ty, &bytes, address)
            }
            TypeRef::Array { count, element } => self.array_at(*count, element, address, what),
            TypeRef::User(name) => match name.as_str() {
                "_UNICODE_STRING" => Ok(Value::Str(self.unicode_string(address, what)?)),
                "_STRING" | "_ANSI_STRING" => Ok(Value::Str(self.ansi_string(address, what)?)),
                "_LARGE_INTEGER" | "_ULARGE_INTEGER" => {
                    let quad = self.table.field(name, "QuadPart")?;
                    self.value_at(&quad.ty, address.wrapping_add(quad.offset), what)
                }
                _ => Ok(Value::Object(Object::in_scope(
                    self.clone(),
                    name,
                    address,
                )?)),
            },
            TypeRef::Function => Err(ModelError::Unsupported {
                type_name: what.to_string(),
                address,
                reason: "a function has no value to read".into(),
            }),
        }
    }

    /// Decode a base, enum, pointer or bitfield value from its bytes.
    fn decode_scalar(&self, ty: &TypeRef, bytes: &[u8], address: u64) -> Result<Value, ModelError> {
        match ty {
            TypeRef::Base(name) => {
                let base = self.table.base_type(name)?;
                decode_base(name, base, bytes, address, self.pointer_size())
            }
            TypeRef::Enum(name) => {
                let e = self.table.enum_type(name)?;
                let signed = self.table.base_type(&e.base).map_or(true, |b| b.signed);
                let raw = le_unsigned(bytes);
                let value = if signed {
                    sign_extend(raw, bytes.len() as u32 * 8)
                } else {
                    raw as i128
                };
                Ok(self.enum_value(name, value as i64))
            }
            TypeRef::Pointer(target) => Ok(Value::Pointer(Pointer::new(
                le_unsigned(bytes) as u64,
                (**target).clone(),
                Some(self.clone()),
            ))),
            TypeRef::Bitfield {
                position,
                length,
                storage,
            } => {
                let raw = le_unsigned(bytes);
                let mask = if *length >= 128 {
                    u128::MAX
                } else {
                    (1u128 << length) - 1
                };
                let bits = raw.checked_shr(*position).unwrap_or(0) & mask;
                match storage.as_ref() {
                    TypeRef::Enum(name) => Ok(self.enum_value(name, bits as i64)),
                    TypeRef::Base(name) if self.table.base_type(name)?.signed => {
                        Ok(Value::Int(sign_extend(bits, *length)))
                    }
                    _ => Ok(Value::Int(bits as i128)),
                }
            }
            other => Err(ModelError::Unsupported {
                type_name: type_ref_name(other),
                address,
                reason: "not a scalar".into(),
            }),
        }
    }

    /// An enum value, named from the table's constants.
    #[must_use]
    pub fn enum_value(&self, type_name: &str, value: i64) -> Value {
        let name = self
            .table
            .enum_type(type_name)
            .ok()
            .and_then(|e| e.name_of(value))
            .map(str::to_string);
        Value::Enum(super::EnumValue {
            type_name: type_name.to_string(),
            value,
            name,
        })
    }

    fn array_at(
        &self,
        count: u64,
        element: &TypeRef,
        address: u64,
        what: &str,
    ) -> Result<Value, ModelError> {
        let limits = self.model.limits();
        let size = self.table.size_of_ref(element)?;
        if size == 0 {
            return Err(ModelError::Unsupported {
                type_name: what.to_string(),
                address,
                reason: "array elements have no size".into(),
            });
        }
        if let TypeRef::Base(name) = element {
            let base = self.table.base_type(name)?;
            if base.kind == "char" && size == 1 {
                let n = count.min(limits.max_string_bytes);
                let bytes = self.read(address, n, what)?;
                return Ok(match printable_c_string(&bytes) {
                    Some(s) => Value::Str(s),
                    None => Value::List(bytes.iter().map(|b| Value::from(u32::from(*b))).collect()),
                });
            }
            if is_wide_char(name, base) {
                let n = count.min(limits.max_string_bytes / 2);
                let bytes = self.read(address, n * 2, what)?;
                return Ok(Value::Str(utf16_until_nul(&bytes)));
            }
        }
        let n = count.min(limits.max_array_elements);
        match element {
            TypeRef::Base(_)
            | TypeRef::Enum(_)
            | TypeRef::Pointer(_)
            | TypeRef::Bitfield { .. } => {
                let bytes = self.read(address, n * size, what)?;
                let width = usize::try_from(size).unwrap_or(usize::MAX);
                bytes
                    .chunks(width)
                    .enumerate()
                    .map(|(i, chunk)| {
                        self.decode_scalar(element, chunk, address.wrapping_add(i as u64 * size))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::List)
            }
            _ => (0..n)
                .map(|i| {
                    self.value_at(
                        element,
                        address.wrapping_add(i * size),
                        &format!("{what}[{i}]"),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List),
        }
    }

    /// A `_UNICODE_STRING` at `address`: `Length` bytes at `Buffer`, bounded by the limits.
    pub fn unicode_string(&self, address: u64, what: &str) -> Result<String, ModelError> {
        let (length, buffer) = self.counted_string("_UNICODE_STRING", address, what)?;
        if length == 0 {
            return Ok(String::new());
        }
        let bytes = self.read(buffer, length & !1, &format!("the text of {what}"))?;
        Ok(utf16_until_nul(&bytes))
    }

    /// A `_STRING` / `_ANSI_STRING` at `address` (bytes read as Latin-1).
    pub fn ansi_string(&self, address: u64, what: &str) -> Result<String, ModelError> {
        let ty = if self.table.has_type("_STRING") {
            "_STRING"
        } else {
            "_ANSI_STRING"
        };
        let (length, buffer) = self.counted_string(ty, address, what)?;
        if length == 0 {
            return Ok(String::new());
        }
        let bytes = self.read(buffer, length, &format!("the text of {what}"))?;
        Ok(latin1_until_nul(&bytes))
    }

    /// (bounded `Length`, `Buffer`) of a counted string structure.
    fn counted_string(&self, ty: &str, address: u64, what: &str) -> Result<(u64, u64), ModelError> {
        let length = self.table.field(ty, "Length")?;
        let buffer = self.table.field(ty, "Buffer")?;
        let size = self.table.size_of(ty)?;
        let bytes = self.read(address, size, what)?;
        let slice = |offset: u64, len: u64| -> Result<&[u8], ModelError> {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
            bytes
                .get(start..end)
                .ok_or_else(|| ModelError::Unsupported {
                    type_name: ty.to_string(),
                    address,
                    reason: "field lies outside the structure".into(),
                })
        };
        let len = le_unsigned(slice(length.offset, self.table.size_of_ref(&length.ty)?)?) as u64;
        let buf = le_unsigned(slice(buffer.offset, self.pointer_size())?) as u64;
        let len = len.min(self.model.limits().max_string_bytes);
        if len != 0 && buf == 0 {
            return Err(ModelError::NullPointer {
                target: ty.to_string(),
                field: format!("{what}.Buffer"),
            });
        }
        Ok((len, buf))
    }

    /// A NUL-terminated 8-bit string of at most `max` bytes, read as Latin-1 (a page at a
    /// time, so an unmapped page after the terminator does not matter).
    pub fn c_string(&self, address: u64, max: u64, what: &str) -> Result<String, ModelError> {
        let mut out = Vec::new();
        let mut at = address;
        while (out.len() as u64) < max {
            let in_page = crate::target::PAGE_SIZE - at % crate::target::PAGE_SIZE;
            let n = in_page.min(max - out.len() as u64);
            let chunk = self.read(at, n, what)?;
            if let Some(end) = chunk.iter().position(|b| *b == 0) {
                out.extend_from_slice(&chunk[..end]);
                return Ok(latin1_until_nul(&out));
            }
            out.extend_from_slice(&chunk);
            at = at.wrapping_add(n);
        }
        Ok(latin1_until_nul(&out))
    }
}

/// What a structure view offers beyond its raw fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// Raw fields only.
    Plain,
    /// `_EPROCESS`: [`super::PROCESS_FIELDS`].
    Process,
    /// `_ETHREAD`: [`super::THREAD_FIELDS`].
    Thread,
    /// A loader entry (kernel or user): [`super::MODULE_FIELDS`].
    Module,
}

impl RowKind {
    #[must_use]
    pub fn of_type(type_name: &str) -> RowKind {
        match type_name {
            "_EPROCESS" => RowKind::Process,
            "_ETHREAD" => RowKind::Thread,
            "_KLDR_DATA_TABLE_ENTRY" | "_LDR_DATA_TABLE_ENTRY" => RowKind::Module,
            _ => RowKind::Plain,
        }
    }
}

/// A typed view of a structure at an address in one address space. Cheap to clone; reads
/// nothing until a field is asked for.
#[derive(Clone)]
pub struct Object {
    scope: Scope,
    type_name: Arc<str>,
    address: u64,
    kind: RowKind,
    memo: Arc<Mutex<HashMap<&'static str, Value>>>,
}

impl Object {
    /// A view of `type_name` at `address`, as a pointer to it is followed: a `_KPROCESS` /
    /// `_KTHREAD` is viewed as the `_EPROCESS` / `_ETHREAD` embedding it at offset 0 (when
    /// the table says it does), and process and thread views move to their own space.
    pub fn new(scope: Scope, type_name: &str, address: u64) -> Result<Object, ModelError> {
        let table = Arc::clone(scope.table());
        let widened = match type_name {
            "_KPROCESS" if embeds_at_zero(&table, "_EPROCESS", "Pcb") => "_EPROCESS",
            "_KTHREAD" if embeds_at_zero(&table, "_ETHREAD", "Tcb") => "_ETHREAD",
            other => other,
        };
        let scope = match widened {
            "_EPROCESS" => scope.with_space(scope.model().process_space(address)?),
            "_ETHREAD" => {
                let owner = table.field("_ETHREAD", "Tcb.Process")?;
                match scope.read_pointer(address.wrapping_add(owner.offset), "_KTHREAD.Process") {
                    Ok(process) if process != 0 => {
                        scope.with_space(scope.model().process_space(process)?)
                    }
                    _ => scope,
                }
            }
            _ => scope,
        };
        Object::in_scope(scope, widened, address)
    }

    /// A view of `type_name` at `address` read in exactly this scope (embedded structures,
    /// list entries whose space is known).
    pub fn in_scope(scope: Scope, type_name: &str, address: u64) -> Result<Object, ModelError> {
        scope.table().user_type(type_name)?;
        Ok(Object {
            scope,
            type_name: Arc::from(type_name),
            address,
            kind: RowKind::of_type(type_name),
            memo: Arc::default(),
        })
    }

    #[must_use]
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    #[must_use]
    pub fn address(&self) -> u64 {
        self.address
    }

    #[must_use]
    pub fn kind(&self) -> RowKind {
        self.kind
    }

    #[must_use]
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    #[must_use]
    pub fn space(&self) -> &Arc<AddressSpace> {
        self.scope.space()
    }

    #[must_use]
    pub fn table(&self) -> &Arc<SymbolTable> {
        self.scope.table()
    }

    #[must_use]
    pub fn model(&self) -> &Arc<ModelContext> {
        self.scope.model()
    }

    /// Same type, address and space.
    #[must_use]
    pub fn same_view(&self, other: &Object) -> bool {
        self.type_name == other.type_name
            && self.address == other.address
            && self.space().dtb() == other.space().dtb()
    }

    /// Size of the structure.
    pub fn size(&self) -> Result<u64, ModelError> {
        Ok(self.table().size_of(&self.type_name)?)
    }

    /// A pointer to this object.
    #[must_use]
    pub fn pointer(&self) -> Pointer {
        Pointer::new(
            self.address,
            TypeRef::User(self.type_name.to_string()),
            Some(self.scope.clone()),
        )
    }

    /// The same address viewed as another structure, in the same space.
    pub fn cast(&self, type_name: &str) -> Result<Object, ModelError> {
        Object::in_scope(self.scope.clone(), type_name, self.address)
    }

    /// Friendly field names of this view (empty for plain structures).
    #[must_use]
    pub fn friendly_fields(&self) -> &'static [&'static str] {
        rows::friendly_names(self.kind)
    }

    /// Every name [`Object::field`] answers directly: friendly names, then raw fields.
    #[must_use]
    pub fn field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .friendly_fields()
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        if let Ok(t) = self.table().user_type(&self.type_name) {
            names.extend(t.fields.iter().map(|f| f.name.clone()));
        }
        names
    }

    /// A field by name: friendly first (rows), then raw, then through the structure embedded
    /// at offset 0. Dotted names follow pointers: `Peb.ProcessParameters.CommandLine`.
    pub fn field(&self, name: &str) -> Result<Value, ModelError> {
        if let Some((first, rest)) = name.split_once('.') {
            return self.field(first)?.field(rest);
        }
        if let Some(v) = rows::friendly(self, name) {
            return v;
        }
        self.raw_field(name)
    }

    /// A raw field of the structure only (no friendly names); dotted paths go through
    /// embedded structures and pointers.
    pub fn raw_field(&self, name: &str) -> Result<Value, ModelError> {
        if let Some((first, rest)) = name.split_once('.') {
            return self.raw_field(first)?.field(rest);
        }
        match self.raw_lookup(name, EMBEDDED_FALLBACK_DEPTH)? {
            Some(v) => Ok(v),
            None => Err(ModelError::NoField {
                type_name: self.type_name.to_string(),
                field: name.to_string(),
            }),
        }
    }

    fn raw_lookup(&self, name: &str, depth: u32) -> Result<Option<Value>, ModelError> {
        let table = Arc::clone(self.table());
        let ut = table.user_type(&self.type_name)?;
        if let Some(f) = ut.field(name) {
            let what = format!("`{}.{}`", self.type_name, name);
            return self
                .scope
                .value_at(&f.ty, self.address.wrapping_add(f.offset), &what)
                .map(Some);
        }
        if depth == 0 {
            return Ok(None);
        }
        for f in ut.fields.iter().filter(|f| f.offset == 0) {
            if let TypeRef::User(inner) = &f.ty {
                let embedded = Object::in_scope(self.scope.clone(), inner, self.address)?;
                if let Some(v) = embedded.raw_lookup(name, depth - 1)? {
                    return Ok(Some(v));
                }
            }
        }
        Ok(None)
    }

    /// Virtual address of a (dotted, embedded-only) field.
    pub fn field_address(&self, path: &str) -> Result<u64, ModelError> {
        Ok(self
            .address
            .wrapping_add(self.table().offset_of(&self.type_name, path)?))
    }

    /// The raw bytes of the whole structure.
    pub fn bytes(&self) -> Result<Vec<u8>, ModelError> {
        self.scope
            .read(self.address, self.size()?, &format!("`{}`", self.type_name))
    }

    /// A record of the named fields (friendly or raw), in the order asked.
    pub fn record(&self, names: &[&str]) -> Result<super::Record, ModelError> {
        names
            .iter()
            .map(|n| Ok(((*n).to_string(), self.field(n)?)))
            .collect()
    }

    /// A friendly value computed once per view.
    pub(crate) fn memoized(
        &self,
        key: &'static str,
        compute: impl FnOnce(&Object) -> Result<Value, ModelError>,
    ) -> Result<Value, ModelError> {
        if let Some(v) = self
            .memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Ok(v.clone());
        }
        let v = compute(self)?;
        self.memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, v.clone());
        Ok(v)
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [Type: {}]",
            super::format_address(self.address, self.scope.pointer_size()),
            self.type_name
        )
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Object({} @ {:#x}, dtb {:#x})",
            self.type_name,
            self.address,
            self.space().dtb()
        )
    }
}

/// A typed address. Field access follows it (in its own address space); it is never read
/// until then.
#[derive(Clone)]
pub struct Pointer {
    pub address: u64,
    /// What it points to.
    pub target: TypeRef,
    scope: Option<Scope>,
}

impl Pointer {
    #[must_use]
    pub fn new(address: u64, target: TypeRef, scope: Option<Scope>) -> Pointer {
        Pointer {
            address,
            target,
            scope,
        }
    }

    /// An address with no type and no space (a literal): prints and compares as a pointer,
    /// cannot be followed.
    #[must_use]
    pub fn untyped(address: u64) -> Pointer {
        Pointer::new(address, TypeRef::Base("void".into()), None)
    }

    #[must_use]
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    #[must_use]
    pub fn is_null(&self) -> bool {
        self.address == 0
    }

    /// The same address as a pointer to `type_name`.
    #[must_use]
    pub fn cast(&self, type_name: &str) -> Pointer {
        Pointer::new(
            self.address,
            TypeRef::User(type_name.to_string()),
            self.scope.clone(),
        )
    }

    fn live_scope(&self, field: &str) -> Result<&Scope, ModelError> {
        if self.address == 0 {
            return Err(ModelError::NullPointer {
                target: type_ref_name(&self.target),
                field: field.to_string(),
            });
        }
        self.scope.as_ref().ok_or(ModelError::NoAddressSpace {
            address: self.address,
        })
    }

    /// The structure it points to, as an object.
    pub fn object(&self) -> Result<Object, ModelError> {
        let scope = self.live_scope("*")?;
        match &self.target {
            TypeRef::User(name) => Object::new(scope.clone(), name, self.address),
            other => Err(ModelError::Untyped {
                address: self.address,
                target: type_ref_name(other),
                pointer_size: scope.pointer_size(),
            }),
        }
    }

    /// The value it points to: an object for structures, a string for counted strings, the
    /// number for scalars.
    pub fn deref(&self) -> Result<Value, ModelError> {
        let scope = self.live_scope("*")?;
        match &self.target {
            TypeRef::User(name) if !is_decoded_struct(name) => Ok(Value::Object(Object::new(
                scope.clone(),
                name,
                self.address,
            )?)),
            TypeRef::Base(name) if name == "void" => Err(ModelError::Untyped {
                address: self.address,
                target: name.clone(),
                pointer_size: scope.pointer_size(),
            }),
            TypeRef::Function => Err(ModelError::Untyped {
                address: self.address,
                target: "function".into(),
                pointer_size: scope.pointer_size(),
            }),
            ty => scope.value_at(ty, self.address, &format!("*({} *)", type_ref_name(ty))),
        }
    }

    /// A field of the structure it points to.
    pub fn field(&self, name: &str) -> Result<Value, ModelError> {
        let scope = self.live_scope(name)?;
        match &self.target {
            TypeRef::User(_) => self.object()?.field(name),
            TypeRef::Pointer(_) => self.deref()?.field(name),
            other => Err(ModelError::Untyped {
                address: self.address,
                target: type_ref_name(other),
                pointer_size: scope.pointer_size(),
            }),
        }
    }
}

impl PartialEq for Pointer {
    fn eq(&self, other: &Pointer) -> bool {
        self.address == other.address
            && self.target == other.target
            && self.scope.as_ref().map(|s| s.space().dtb())
                == other.scope.as_ref().map(|s| s.space().dtb())
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = self.scope.as_ref().map_or(8, Scope::pointer_size);
        f.write_str(&super::format_address(self.address, size))
    }
}

impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Pointer({} *, {}",
            type_ref_name(&self.target),
            addr(self.address)
        )?;
        if let Some(s) = &self.scope {
            write!(f, ", dtb {:#x}", s.space().dtb())?;
        }
        f.write_str(")")
    }
}

/// How a type reference is written in messages: `_PEB *`, `unsigned char[15]`.
#[must_use]
pub fn type_ref_name(ty: &TypeRef) -> String {
    match ty {
        TypeRef::Base(n) | TypeRef::User(n) | TypeRef::Enum(n) => n.clone(),
        TypeRef::Pointer(inner) => format!("{} *", type_ref_name(inner)),
        TypeRef::Array { count, element } => format!("{}[{count}]", type_ref_name(element)),
        TypeRef::Bitfield {
            length, storage, ..
        } => format!("{}:{length}", type_ref_name(storage)),
        TypeRef::Function => "function".into(),
    }
}

/// Structures read as a value rather than viewed.
fn is_decoded_struct(name: &str) -> bool {
    matches!(
        name,
        "_UNICODE_STRING" | "_STRING" | "_ANSI_STRING" | "_LARGE_INTEGER" | "_ULARGE_INTEGER"
    )
}

fn embeds_at_zero(table: &SymbolTable, outer: &str, field: &str) -> bool {
    table.field(outer, field).is_ok_and(|f| f.offset == 0)
}

fn is_wide_char(name: &str, base: &BaseType) -> bool {
    base.size == 2 && (name == "wchar" || name == "wchar_t" || base.kind == "wchar")
}

fn decode_base(
    name: &str,
    base: &BaseType,
    bytes: &[u8],
    address: u64,
    pointer_size: u64,
) -> Result<Value, ModelError> {
    match base.kind.as_str() {
        "void" => Err(ModelError::Untyped {
            address,
            target: name.to_string(),
            pointer_size,
        }),
        "bool" => Ok(Value::Bool(bytes.iter().any(|b| *b != 0))),
        "float" => {
            // Value has no float: show the number as WinDbg would, as text.
            let text = match bytes.len() {
                4 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).to_string(),
                8 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(bytes);
                    f64::from_le_bytes(b).to_string()
                }
                n => {
                    return Err(ModelError::Unsupported {
                        type_name: name.to_string(),
                        address,
                        reason: format!("{n}-byte floats are not decoded"),
                    })
                }
            };
            Ok(Value::Str(text))
        }
        _ if bytes.len() > 16 => Err(ModelError::Unsupported {
            type_name: name.to_string(),
            address,
            reason: format!("{}-byte integers are not decoded", bytes.len()),
        }),
        _ => {
            let raw = le_unsigned(bytes);
            Ok(Value::Int(if base.signed {
                sign_extend(raw, bytes.len() as u32 * 8)
            } else {
                raw as i128
            }))
        }
    }
}

/// Little-endian unsigned integer of up to 16 bytes (extra bytes are ignored).
pub(crate) fn le_unsigned(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .take(16)
        .rev()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}

fn sign_extend(raw: u128, bits: u32) -> i128 {
    if bits == 0 || bits >= 128 {
        return raw as i128;
    }
    let shift = 128 - bits;
    ((raw << shift) as i128) >> shift
}

fn utf16_until_nul(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

pub(crate) fn latin1_until_nul(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| char::from(*b))
        .collect()
}

/// The text of a char array when it looks like text: no control bytes before the NUL, and
/// not an empty string followed by data (`ProcessorFeatures` is bytes, not text).
fn printable_c_string(bytes: &[u8]) -> Option<String> {
    if bytes.first() == Some(&0) && bytes.iter().any(|b| *b != 0) {
        return None;
    }
    let text = bytes.iter().take_while(|b| **b != 0);
    text.clone()
        .all(|b| *b >= 0x20 && *b != 0x7F)
        .then(|| text.map(|b| char::from(*b)).collect())
}
