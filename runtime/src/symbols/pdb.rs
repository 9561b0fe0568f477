//! PDB files (MSF 7.0) read with the `pdb` crate into the layout model the ISF loader fills.
//!
//! Names follow volatility3's `pdbconv`, so that a type reads the same from a PDB and from the
//! ISF table converted from it: base types by their C names (`unsigned long`, `wchar`, `f32`),
//! unnamed types as `__unnamed_<type index in hex>`, anonymous members flattened into their
//! parent (as the compiler records them), fields sorted by offset, then name.
//!
//! ```no_run
//! use kds_runtime::symbols::load_pdb_file;
//! let table = load_pdb_file(std::path::Path::new("ntkrnlmp.pdb")).expect("PDB loads");
//! let offset = table.offset_of("_EPROCESS", "ActiveProcessLinks").expect("field exists");
//! # let _ = offset;
//! ```

use super::layout::{
    BaseType, EnumType, Field, FrameDescription, FrameRecord, FunctionRange, SymbolTable, TypeKind,
    TypeRef, UserType,
};
use super::pdb_id::{Guid, PdbIdentity};
use crate::unwind::x86_program::{FrameProgram, FrameSizes};
use pdb::{
    AddressMap, FallibleIterator, PrimitiveKind, SymbolData, TypeData, TypeFinder, TypeIndex,
    Variant, PDB,
};
use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use thiserror::Error;

/// How deep type references may nest before the file is called corrupt (a cycle).
const MAX_TYPE_DEPTH: u32 = 64;

/// Why a PDB could not be loaded.
#[derive(Debug, Error)]
pub enum PdbLoadError {
    #[error("cannot read PDB {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("PDB {path}: cannot read {what}: {source}")]
    Pdb {
        path: String,
        what: &'static str,
        source: pdb::Error,
    },
    #[error("PDB {path}: {what}: {message}")]
    Invalid {
        path: String,
        what: &'static str,
        message: String,
    },
    #[error("PDB {path}: the reader failed on malformed data ({message})")]
    Malformed { path: String, message: String },
}

/// What to read from a PDB: the benchmark times the parts apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdbParts {
    /// Structures, unions, enums and base types.
    pub types: bool,
    /// Publics, global data and procedures with their code ranges.
    pub symbols: bool,
}

impl PdbParts {
    pub const ALL: PdbParts = PdbParts {
        types: true,
        symbols: true,
    };
}

/// Load every type and symbol of a PDB file.
pub fn load_pdb_file(path: &Path) -> Result<SymbolTable, PdbLoadError> {
    load_pdb_file_parts(path, PdbParts::ALL)
}

/// Load the chosen parts of a PDB file.
pub fn load_pdb_file_parts(path: &Path, parts: PdbParts) -> Result<SymbolTable, PdbLoadError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| PdbLoadError::Io {
        path: shown.clone(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| shown.clone());
    parse_pdb(&bytes, &shown, &name, parts)
}

/// Parse a PDB held in memory. `origin` names the source in errors; `database` is the PDB's
/// file name as images name it (`ntkrnlmp.pdb`), recorded in the identity.
pub fn parse_pdb(
    bytes: &[u8],
    origin: &str,
    database: &str,
    parts: PdbParts,
) -> Result<SymbolTable, PdbLoadError> {
    // The pdb crate returns errors for what it checks; a panic on data it does not check is
    // still the file's fault, so it becomes an error naming the file.
    let result = std::panic::catch_unwind(|| read_pdb(bytes, origin, database, parts));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".into());
            Err(PdbLoadError::Malformed {
                path: origin.to_string(),
                message,
            })
        }
    }
}

fn read_pdb(
    bytes: &[u8],
    origin: &str,
    database: &str,
    parts: PdbParts,
) -> Result<SymbolTable, PdbLoadError> {
    let err = |what: &'static str| {
        move |source: pdb::Error| PdbLoadError::Pdb {
            path: origin.to_string(),
            what,
            source,
        }
    };
    let mut pdb = PDB::open(Cursor::new(bytes)).map_err(err("the MSF container"))?;
    let info = pdb
        .pdb_information()
        .map_err(err("the PDB information stream"))?;
    let (d1, d2, d3, d4) = info.guid.as_fields();
    let identity = PdbIdentity {
        name: database.to_string(),
        guid: Guid {
            data1: d1,
            data2: d2,
            data3: d3,
            data4: *d4,
        },
        age: info.age,
    };
    let dbi = pdb
        .debug_information()
        .map_err(err("the debug information stream"))?;
    let pointer_size = match dbi.machine_type().map_err(err("the machine type"))? {
        pdb::MachineType::X86 | pdb::MachineType::Arm | pdb::MachineType::ArmNT => 4,
        _ => 8,
    };

    let mut table = SymbolTable {
        identity: Some(identity),
        pointer_size,
        ..SymbolTable::default()
    };
    table.base_types.insert(
        "pointer".into(),
        BaseType {
            size: pointer_size,
            signed: false,
            kind: "int".into(),
        },
    );

    if parts.types {
        read_types(&mut pdb, &mut table, origin)?;
    }
    if parts.symbols {
        let address_map = pdb.address_map().map_err(err("the section map"))?;
        read_globals(&mut pdb, &address_map, &mut table, origin)?;
        read_procedures(&mut pdb, &dbi, &address_map, &mut table, origin)?;
        if pointer_size == 4 {
            // Optional: a PDB without a frame table (or with an unreadable one) still loads.
            read_frame_data(&mut pdb, &address_map, &mut table);
        }
        table
            .functions
            .sort_by(|a, b| (a.rva, &a.name).cmp(&(b.rva, &b.name)));
    }
    Ok(table)
}

/// The pdbconv name of a base type, with its size, signedness and kind.
fn primitive(kind: PrimitiveKind) -> (&'static str, BaseType) {
    let b = |size: u64, signed: bool, kind: &str| BaseType {
        size,
        signed,
        kind: kind.into(),
    };
    match kind {
        PrimitiveKind::Void | PrimitiveKind::NoType => ("void", b(0, true, "void")),
        PrimitiveKind::HRESULT => ("HRESULT", b(4, false, "int")),
        PrimitiveKind::Char | PrimitiveKind::RChar => ("char", b(1, true, "char")),
        PrimitiveKind::UChar => ("unsigned char", b(1, false, "char")),
        PrimitiveKind::I8 => ("int8", b(1, true, "int")),
        PrimitiveKind::U8 => ("uint8", b(1, false, "int")),
        PrimitiveKind::WChar | PrimitiveKind::RChar16 => ("wchar", b(2, true, "int")),
        PrimitiveKind::RChar32 => ("dchar", b(4, true, "int")),
        PrimitiveKind::Short | PrimitiveKind::I16 => ("short", b(2, true, "int")),
        PrimitiveKind::UShort | PrimitiveKind::U16 => ("unsigned short", b(2, false, "int")),
        PrimitiveKind::Long => ("long", b(4, true, "int")),
        PrimitiveKind::ULong => ("unsigned long", b(4, false, "int")),
        PrimitiveKind::I32 => ("int", b(4, true, "int")),
        PrimitiveKind::U32 => ("unsigned int", b(4, false, "int")),
        PrimitiveKind::Quad | PrimitiveKind::I64 => ("long long", b(8, true, "int")),
        PrimitiveKind::UQuad | PrimitiveKind::U64 => ("unsigned long long", b(8, false, "int")),
        PrimitiveKind::Octa | PrimitiveKind::I128 => ("int128", b(16, true, "int")),
        PrimitiveKind::UOcta | PrimitiveKind::U128 => ("uint128", b(16, false, "int")),
        PrimitiveKind::F16 => ("f16", b(2, true, "float")),
        PrimitiveKind::F32 | PrimitiveKind::F32PP => ("f32", b(4, true, "float")),
        PrimitiveKind::F48 => ("f48", b(6, true, "float")),
        PrimitiveKind::F64 => ("double", b(8, true, "float")),
        PrimitiveKind::F80 => ("f80", b(10, true, "float")),
        PrimitiveKind::F128 => ("f128", b(16, true, "float")),
        PrimitiveKind::Bool8 => ("bool", b(1, false, "bool")),
        PrimitiveKind::Bool16 => ("bool16", b(2, false, "bool")),
        PrimitiveKind::Bool32 => ("bool32", b(4, false, "bool")),
        PrimitiveKind::Bool64 => ("bool64", b(8, false, "bool")),
        _ => ("void", b(0, true, "void")),
    }
}

/// The pdbconv name for a type the compiler left without one: `<unnamed-tag>` and `__unnamed`
/// become `__unnamed_<index>`, `<anonymous-tag>` and `__anonymous` become `__anonymous_<index>`.
fn unnamed_name(name: &str, index: TypeIndex) -> Option<String> {
    match name {
        "<unnamed-tag>" | "__unnamed" => Some(format!("__unnamed_{:x}", index.0)),
        "<anonymous-tag>" | "__anonymous" => Some(format!("__anonymous_{:x}", index.0)),
        "" => Some(format!("__unnamed_{:x}", index.0)),
        _ => None,
    }
}

/// A public's name without its decoration, as pdbconv strips it: `?name@@...@@` to `name`,
/// a leading `_`, `@` or DEL dropped, and a `@<bytes>` stdcall suffix dropped.
fn strip_decoration(name: &str) -> &str {
    if name.starts_with('?') {
        let parts: Vec<&str> = name.split("@@").collect();
        if parts.len() == 3 {
            return &parts[0][1..];
        }
    }
    let trimmed = name.strip_prefix(['_', '@', '\u{7f}']).unwrap_or(name);
    let mut parts = trimmed.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(head), Some(tail), None) => {
            if !tail.is_empty()
                && tail.bytes().all(|b| b.is_ascii_digit())
                && !head.starts_with('?')
            {
                head
            } else {
                name
            }
        }
        _ => trimmed,
    }
}

struct TypeReader<'a, 't> {
    finder: &'a TypeFinder<'t>,
    /// Full definitions by unique name (else name), for forward references.
    definitions: &'a HashMap<String, TypeIndex>,
    base_types: &'a mut HashMap<String, BaseType>,
    pointer_size: u64,
}

impl<'t> TypeReader<'_, 't> {
    fn parse(&self, index: TypeIndex) -> Result<TypeData<'t>, String> {
        self.finder
            .find(index)
            .and_then(|item| item.parse())
            .map_err(|e| format!("type {:#x}: {e}", index.0))
    }

    /// The definition a forward reference stands for (itself when it is one).
    fn definition(&self, index: TypeIndex) -> TypeIndex {
        let Ok(data) = self.parse(index) else {
            return index;
        };
        let (forward, name, unique) = match &data {
            TypeData::Class(c) => (c.properties.forward_reference(), c.name, c.unique_name),
            TypeData::Union(u) => (u.properties.forward_reference(), u.name, u.unique_name),
            TypeData::Enumeration(e) => (e.properties.forward_reference(), e.name, e.unique_name),
            _ => return index,
        };
        if !forward {
            return index;
        }
        let key = unique.unwrap_or(name).to_string().into_owned();
        self.definitions.get(&key).copied().unwrap_or(index)
    }

    /// The table's name of a struct, union or enum at `index` (a definition).
    fn user_name(&self, index: TypeIndex, name: &str) -> String {
        unnamed_name(name, index).unwrap_or_else(|| name.to_string())
    }

    fn type_ref(&mut self, index: TypeIndex, depth: u32) -> Result<TypeRef, String> {
        if depth > MAX_TYPE_DEPTH {
            return Err(format!("type {:#x} nests too deeply (a cycle?)", index.0));
        }
        let data = self.parse(index)?;
        Ok(match data {
            TypeData::Primitive(p) => {
                let (name, base) = primitive(p.kind);
                self.base_types.entry(name.to_string()).or_insert(base);
                let base = TypeRef::Base(name.to_string());
                if p.indirection.is_some() {
                    TypeRef::Pointer(Box::new(base))
                } else {
                    base
                }
            }
            TypeData::Class(_) | TypeData::Union(_) | TypeData::Enumeration(_) => {
                let def = self.definition(index);
                let data = self.parse(def)?;
                match data {
                    TypeData::Class(c) => TypeRef::User(self.user_name(def, &c.name.to_string())),
                    TypeData::Union(u) => TypeRef::User(self.user_name(def, &u.name.to_string())),
                    TypeData::Enumeration(e) => {
                        TypeRef::Enum(self.user_name(def, &e.name.to_string()))
                    }
                    _ => return Err(format!("type {:#x} changed kind", def.0)),
                }
            }
            TypeData::Pointer(p) => {
                TypeRef::Pointer(Box::new(self.type_ref(p.underlying_type, depth + 1)?))
            }
            TypeData::Modifier(m) => self.type_ref(m.underlying_type, depth + 1)?,
            TypeData::Procedure(_) | TypeData::MemberFunction(_) => TypeRef::Function,
            TypeData::Bitfield(b) => TypeRef::Bitfield {
                position: u32::from(b.position),
                length: u32::from(b.length),
                storage: Box::new(self.type_ref(b.underlying_type, depth + 1)?),
            },
            TypeData::Array(a) => {
                let element = self.type_ref(a.element_type, depth + 1)?;
                let element_size = self.size_of(a.element_type, depth + 1)?;
                // Dimensions are byte sizes, each the size of the whole array so far.
                let mut ty = element;
                let mut inner_size = element_size;
                for &dim in &a.dimensions {
                    let dim = u64::from(dim);
                    let count = dim.checked_div(inner_size).unwrap_or(0);
                    ty = TypeRef::Array {
                        count,
                        element: Box::new(ty),
                    };
                    inner_size = dim;
                }
                ty
            }
            other => return Err(format!("type {:#x} is an unexpected {other:?}", index.0)),
        })
    }

    fn size_of(&self, index: TypeIndex, depth: u32) -> Result<u64, String> {
        if depth > MAX_TYPE_DEPTH {
            return Err(format!("type {:#x} nests too deeply (a cycle?)", index.0));
        }
        let data = self.parse(index)?;
        Ok(match data {
            TypeData::Primitive(p) => match p.indirection {
                Some(_) => self.pointer_size,
                None => primitive(p.kind).1.size,
            },
            TypeData::Class(_) | TypeData::Union(_) | TypeData::Enumeration(_) => {
                match self.parse(self.definition(index))? {
                    TypeData::Class(c) => c.size,
                    TypeData::Union(u) => u.size,
                    TypeData::Enumeration(e) => self.size_of(e.underlying_type, depth + 1)?,
                    _ => 0,
                }
            }
            TypeData::Pointer(p) => u64::from(p.attributes.size()),
            TypeData::Modifier(m) => self.size_of(m.underlying_type, depth + 1)?,
            TypeData::Bitfield(b) => self.size_of(b.underlying_type, depth + 1)?,
            TypeData::Array(a) => a.dimensions.last().map_or(0, |d| u64::from(*d)),
            _ => 0,
        })
    }

    /// Every entry of a field list, following continuations.
    fn field_list(&self, index: TypeIndex) -> Result<Vec<TypeData<'t>>, String> {
        let mut out = Vec::new();
        let mut next = Some(index);
        let mut hops = 0;
        while let Some(i) = next {
            hops += 1;
            if hops > 4096 {
                return Err(format!("field list {:#x} continues without end", index.0));
            }
            match self.parse(i)? {
                TypeData::FieldList(list) => {
                    out.extend(list.fields);
                    next = list.continuation;
                }
                other => return Err(format!("type {:#x} is not a field list: {other:?}", i.0)),
            }
        }
        Ok(out)
    }
}

fn read_types<'s>(
    pdb: &mut PDB<'s, Cursor<&'s [u8]>>,
    table: &mut SymbolTable,
    origin: &str,
) -> Result<(), PdbLoadError> {
    let invalid = |message: String| PdbLoadError::Invalid {
        path: origin.to_string(),
        what: "the type stream",
        message,
    };
    let tpi = pdb.type_information().map_err(|source| PdbLoadError::Pdb {
        path: origin.to_string(),
        what: "the type stream",
        source,
    })?;
    let mut finder = tpi.finder();
    let mut iter = tpi.iter();
    let mut definitions = HashMap::new();
    // Definitions to read, by index, once every record can be found.
    let mut wanted = Vec::new();
    loop {
        let item = match iter.next() {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => return Err(invalid(format!("after {} records: {e}", wanted.len()))),
        };
        finder.update(&iter);
        let Ok(data) = item.parse() else {
            continue;
        };
        let (forward, name, unique) = match &data {
            TypeData::Class(c) => (c.properties.forward_reference(), c.name, c.unique_name),
            TypeData::Union(u) => (u.properties.forward_reference(), u.name, u.unique_name),
            TypeData::Enumeration(e) => (e.properties.forward_reference(), e.name, e.unique_name),
            _ => continue,
        };
        if forward {
            continue;
        }
        definitions.insert(
            unique.unwrap_or(name).to_string().into_owned(),
            item.index(),
        );
        wanted.push(item.index());
    }

    let mut reader = TypeReader {
        finder: &finder,
        definitions: &definitions,
        base_types: &mut table.base_types,
        pointer_size: table.pointer_size,
    };
    let mut user_types = HashMap::new();
    let mut enums = HashMap::new();
    for index in wanted {
        let data = reader.parse(index).map_err(invalid)?;
        match data {
            TypeData::Class(c) => {
                let name = reader.user_name(index, &c.name.to_string());
                // pdbconv records classes and interfaces as structs too.
                let kind = TypeKind::Struct;
                let fields = match c.fields {
                    Some(list) => read_fields(&mut reader, list).map_err(invalid)?,
                    None => Vec::new(),
                };
                user_types.insert(
                    name.clone(),
                    UserType {
                        name,
                        kind,
                        size: c.size,
                        fields,
                    },
                );
            }
            TypeData::Union(u) => {
                let name = reader.user_name(index, &u.name.to_string());
                let fields = read_fields(&mut reader, u.fields).map_err(invalid)?;
                user_types.insert(
                    name.clone(),
                    UserType {
                        name,
                        kind: TypeKind::Union,
                        size: u.size,
                        fields,
                    },
                );
            }
            TypeData::Enumeration(e) => {
                let name = reader.user_name(index, &e.name.to_string());
                let base = match reader.type_ref(e.underlying_type, 0).map_err(invalid)? {
                    TypeRef::Base(b) => b,
                    other => {
                        return Err(invalid(format!(
                            "enum `{name}` has a {} as its underlying type",
                            other.kind_name()
                        )))
                    }
                };
                let size = reader.size_of(e.underlying_type, 0).map_err(invalid)?;
                let signed = reader.base_types.get(&base).is_none_or(|b| b.signed);
                let mut constants = Vec::new();
                for entry in reader.field_list(e.fields).map_err(invalid)? {
                    if let TypeData::Enumerate(c) = entry {
                        let value = as_enum_value(variant_value(c.value), size, signed);
                        constants.push((c.name.to_string().into_owned(), value));
                    }
                }
                constants.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
                enums.insert(
                    name.clone(),
                    EnumType {
                        name,
                        size,
                        base,
                        constants,
                    },
                );
            }
            _ => {}
        }
    }
    table.user_types = user_types;
    table.enums = enums;
    Ok(())
}

fn variant_value(v: Variant) -> i64 {
    match v {
        Variant::U8(x) => i64::from(x),
        Variant::U16(x) => i64::from(x),
        Variant::U32(x) => i64::from(x),
        // Values past i64::MAX keep their bits, as a 64-bit enum's constants do.
        Variant::U64(x) => x as i64,
        Variant::I8(x) => i64::from(x),
        Variant::I16(x) => i64::from(x),
        Variant::I32(x) => i64::from(x),
        Variant::I64(x) => x,
    }
}

/// A constant as a value of the enum's underlying type: compilers record `-1` of an `int`
/// enum as either a signed or an unsigned number.
fn as_enum_value(raw: i64, size: u64, signed: bool) -> i64 {
    if size == 0 || size >= 8 {
        return raw;
    }
    let bits = size * 8;
    let shift = 64 - bits;
    if signed {
        (raw << shift) >> shift
    } else {
        ((raw as u64) & ((1u64 << bits) - 1)) as i64
    }
}

fn read_fields(reader: &mut TypeReader<'_, '_>, list: TypeIndex) -> Result<Vec<Field>, String> {
    let members: Vec<(String, u64, TypeIndex)> = reader
        .field_list(list)?
        .into_iter()
        .filter_map(|entry| match entry {
            TypeData::Member(m) => Some((m.name.to_string().into_owned(), m.offset, m.field_type)),
            _ => None,
        })
        .collect();
    let mut fields: Vec<Field> = Vec::with_capacity(members.len());
    for (name, offset, ty) in members {
        let ty = reader.type_ref(ty, 0)?;
        // A later member of the same name replaces the earlier one, as in pdbconv's output.
        fields.retain(|f| f.name != name);
        fields.push(Field { name, offset, ty });
    }
    fields.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
    Ok(fields)
}

fn read_globals<'s>(
    pdb: &mut PDB<'s, Cursor<&'s [u8]>>,
    address_map: &AddressMap<'_>,
    table: &mut SymbolTable,
    origin: &str,
) -> Result<(), PdbLoadError> {
    let err = |source: pdb::Error| PdbLoadError::Pdb {
        path: origin.to_string(),
        what: "the global symbol stream",
        source,
    };
    let globals = pdb.global_symbols().map_err(err)?;
    let mut iter = globals.iter();
    let mut data = Vec::new();
    let mut stripped_names = Vec::new();
    while let Some(symbol) = iter.next().map_err(err)? {
        match symbol.parse() {
            Ok(SymbolData::Public(p)) => {
                if let Some(rva) = p.offset.to_rva(address_map) {
                    let name = p.name.to_string();
                    let stripped = strip_decoration(&name);
                    if stripped != name {
                        stripped_names.push((stripped.to_string(), u64::from(rva.0)));
                    }
                    table.symbols.insert(name.into_owned(), u64::from(rva.0));
                }
            }
            Ok(SymbolData::Data(d)) => {
                if let Some(rva) = d.offset.to_rva(address_map) {
                    data.push((d.name.to_string().into_owned(), u64::from(rva.0)));
                }
            }
            _ => {}
        }
    }
    // Publics by their linker names win; then their undecorated names (`_X@8` is also `X`,
    // the first public of that name keeping it); then data symbols.
    for (name, rva) in stripped_names.into_iter().chain(data) {
        table.symbols.entry(name).or_insert(rva);
    }
    Ok(())
}

fn read_procedures<'s>(
    pdb: &mut PDB<'s, Cursor<&'s [u8]>>,
    dbi: &pdb::DebugInformation<'s>,
    address_map: &AddressMap<'_>,
    table: &mut SymbolTable,
    origin: &str,
) -> Result<(), PdbLoadError> {
    let err = |what: &'static str| {
        move |source: pdb::Error| PdbLoadError::Pdb {
            path: origin.to_string(),
            what,
            source,
        }
    };
    let mut modules = dbi.modules().map_err(err("the module list"))?;
    while let Some(module) = modules.next().map_err(err("the module list"))? {
        let Some(info) = pdb
            .module_info(&module)
            .map_err(err("a module's symbols"))?
        else {
            continue;
        };
        let mut symbols = info.symbols().map_err(err("a module's symbols"))?;
        while let Some(symbol) = symbols.next().map_err(err("a module's symbols"))? {
            if let Ok(SymbolData::Procedure(p)) = symbol.parse() {
                let Some(rva) = p.offset.to_rva(address_map) else {
                    continue;
                };
                let name = p.name.to_string().into_owned();
                table
                    .symbols
                    .entry(name.clone())
                    .or_insert(u64::from(rva.0));
                table.functions.push(FunctionRange {
                    rva: u64::from(rva.0),
                    len: u64::from(p.len),
                    name,
                });
            }
        }
    }
    Ok(())
}

/// The x86 FPO and FrameData records (`PDB::frame_table`), by RVA. A FrameData record whose
/// program string cannot be read is left out.
fn read_frame_data<'s>(
    pdb: &mut PDB<'s, Cursor<&'s [u8]>>,
    address_map: &AddressMap<'_>,
    table: &mut SymbolTable,
) {
    let strings = pdb.string_table().ok();
    let Ok(frames) = pdb.frame_table() else {
        return;
    };
    let mut iter = frames.iter();
    while let Ok(Some(f)) = iter.next() {
        let Some(rva) = f.code_start.to_rva(address_map) else {
            continue;
        };
        let frame = match f.ty {
            pdb::FrameType::FrameData => {
                let program = f
                    .program
                    .zip(strings.as_ref())
                    .and_then(|(p, strings)| p.to_string_lossy(strings).ok());
                match program {
                    Some(program) => FrameDescription::Program(frame_program(&f, &program)),
                    None => continue,
                }
            }
            _ => match fpo_of(&f) {
                Some(fpo) => FrameDescription::Fpo(fpo),
                None => continue,
            },
        };
        table.frame_data.push(FrameRecord {
            rva: u64::from(rva.0),
            len: u64::from(f.code_size),
            frame,
        });
    }
    table.frame_data.sort_by_key(|r| r.rva);
}

/// An `FPO_DATA` record's frame, when its type is one of the four `FPO_DATA` knows.
fn fpo_of(f: &pdb::FrameData) -> Option<crate::unwind::x86::Fpo> {
    use crate::unwind::x86::{Fpo, FpoKind};
    let kind = match f.ty {
        pdb::FrameType::FPO => FpoKind::Fpo,
        pdb::FrameType::Trap => FpoKind::Trap,
        pdb::FrameType::TSS => FpoKind::Tss,
        pdb::FrameType::Standard => FpoKind::NonFpo,
        _ => return None,
    };
    Some(Fpo {
        kind,
        locals_size: f.locals_size,
        params_size: f.params_size,
        saved_regs_size: u32::from(f.saved_regs_size),
        prolog_size: u32::from(f.prolog_size),
        uses_base_pointer: f.uses_base_pointer,
    })
}

fn frame_program(f: &pdb::FrameData, program: &str) -> FrameProgram {
    FrameProgram {
        sizes: FrameSizes {
            locals: f.locals_size,
            params: f.params_size,
            saved_regs: u32::from(f.saved_regs_size),
        },
        prolog_size: u32::from(f.prolog_size),
        max_stack_size: f.max_stack_size,
        has_structured_eh: f.has_structured_eh,
        has_cpp_eh: f.has_cpp_eh,
        is_function_start: f.is_function_start,
        uses_base_pointer: f.uses_base_pointer,
        program: program.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_bytes_are_errors_naming_the_file() {
        let err = parse_pdb(b"", "empty.pdb", "empty.pdb", PdbParts::ALL).unwrap_err();
        assert!(err.to_string().starts_with("PDB empty.pdb: "), "{err}");
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
        let err = parse_pdb(&garbage, "junk.pdb", "junk.pdb", PdbParts::ALL).unwrap_err();
        assert!(err.to_string().contains("junk.pdb"), "{err}");
        assert!(err.to_string().contains("MSF container"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let err = load_pdb_file(Path::new("/nonexistent/kds/ntkrnlmp.pdb")).unwrap_err();
        assert!(matches!(err, PdbLoadError::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/kds/ntkrnlmp.pdb"));
    }

    #[test]
    fn names_follow_pdbconv() {
        let at = TypeIndex(0x1043);
        assert_eq!(unnamed_name("<unnamed-tag>", at).unwrap(), "__unnamed_1043");
        assert_eq!(unnamed_name("__unnamed", at).unwrap(), "__unnamed_1043");
        assert_eq!(
            unnamed_name("<anonymous-tag>", at).unwrap(),
            "__anonymous_1043"
        );
        assert_eq!(unnamed_name("__unnamed_1043", at), None);
        assert_eq!(unnamed_name("_KTHREAD", at), None);
        assert_eq!(
            strip_decoration("_PsActiveProcessHead"),
            "PsActiveProcessHead"
        );
        assert_eq!(strip_decoration("_KeBugCheckEx@20"), "KeBugCheckEx");
        assert_eq!(strip_decoration("@KfRaiseIrql@4"), "KfRaiseIrql");
        assert_eq!(strip_decoration("?Foo@@YAXXZ@@x"), "Foo");
        assert_eq!(
            strip_decoration("PsActiveProcessHead"),
            "PsActiveProcessHead"
        );
        assert_eq!(strip_decoration("a@b@c"), "a@b@c");
        assert_eq!(primitive(PrimitiveKind::WChar).0, "wchar");
        assert_eq!(primitive(PrimitiveKind::ULong).0, "unsigned long");
        assert_eq!(primitive(PrimitiveKind::F32).0, "f32");
        assert_eq!(primitive(PrimitiveKind::Quad).0, "long long");
        assert_eq!(as_enum_value(0xFFFF_FFFF, 4, true), -1);
        assert_eq!(as_enum_value(-1, 4, false), 0xFFFF_FFFF);
        assert_eq!(as_enum_value(-1, 8, true), -1);
    }
}
