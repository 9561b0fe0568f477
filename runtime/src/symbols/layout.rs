//! The layout model every symbol source fills: types with sizes, fields with offsets,
//! bitfields, arrays, pointers, enums, and symbol RVAs.

use super::pdb_id::PdbIdentity;
use std::collections::HashMap;
use thiserror::Error;

/// Failure to find a type, field or symbol in a table.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SymbolError {
    #[error("type `{0}` is not in the symbol table")]
    UnknownType(String),
    #[error("`{type_name}` has no field `{field}`")]
    UnknownField { type_name: String, field: String },
    #[error("symbol `{0}` is not in the symbol table")]
    UnknownSymbol(String),
    #[error("field `{field}` of `{type_name}` is a {kind}, not a structure: cannot look up `{rest}` in it")]
    NotAStructure {
        type_name: String,
        field: String,
        kind: &'static str,
        rest: String,
    },
    #[error("size of `{0}` is not known")]
    UnsizedType(String),
}

/// How a value of some type is laid out: a reference to a named type or a constructed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeRef {
    /// A base type by name (`unsigned long`, `void`, `unsigned char`).
    Base(String),
    /// A struct, union or class by name.
    User(String),
    Enum(String),
    Pointer(Box<TypeRef>),
    Array {
        count: u64,
        element: Box<TypeRef>,
    },
    Bitfield {
        position: u32,
        length: u32,
        storage: Box<TypeRef>,
    },
    Function,
}

impl TypeRef {
    /// A short word for what this is, for messages.
    #[must_use]
    pub fn kind_name(&self) -> &'static str {
        match self {
            TypeRef::Base(_) => "base type",
            TypeRef::User(_) => "structure",
            TypeRef::Enum(_) => "enum",
            TypeRef::Pointer(_) => "pointer",
            TypeRef::Array { .. } => "array",
            TypeRef::Bitfield { .. } => "bitfield",
            TypeRef::Function => "function",
        }
    }
}

/// Integer, float, char or void, with its size and signedness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseType {
    pub size: u64,
    pub signed: bool,
    /// `int`, `char`, `float`, `bool`, `void`.
    pub kind: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeKind {
    Struct,
    Union,
    Class,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u64,
    pub ty: TypeRef,
}

/// A struct, union or class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserType {
    pub name: String,
    pub kind: TypeKind,
    pub size: u64,
    /// Fields in offset order (then name, for fields sharing an offset).
    pub fields: Vec<Field>,
}

impl UserType {
    /// The direct field called `name`.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumType {
    pub name: String,
    pub size: u64,
    pub base: String,
    /// Constants in value order.
    pub constants: Vec<(String, i64)>,
}

impl EnumType {
    /// The name of the constant with this value, if any.
    #[must_use]
    pub fn name_of(&self, value: i64) -> Option<&str> {
        self.constants
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(n, _)| n.as_str())
    }
}

/// Where a (possibly nested) field lives relative to the start of its outermost structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLocation {
    pub offset: u64,
    pub ty: TypeRef,
}

/// A function's code: where it starts (RVA) and how many bytes it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRange {
    pub rva: u64,
    pub len: u64,
    pub name: String,
}

impl FunctionRange {
    /// Whether `rva` falls inside the function.
    #[must_use]
    pub fn contains(&self, rva: u64) -> bool {
        rva >= self.rva && rva - self.rva < self.len
    }
}

/// All types and symbols of one module (a kernel, a driver, a DLL).
#[derive(Debug, Clone, Default)]
pub struct SymbolTable {
    pub(crate) identity: Option<PdbIdentity>,
    pub(crate) pointer_size: u64,
    pub(crate) base_types: HashMap<String, BaseType>,
    pub(crate) user_types: HashMap<String, UserType>,
    pub(crate) enums: HashMap<String, EnumType>,
    pub(crate) symbols: HashMap<String, u64>,
    /// Procedures with their code ranges, sorted by RVA (PDBs record them; ISF does not).
    pub(crate) functions: Vec<FunctionRange>,
    /// x86 frame descriptions (FPO_DATA / FRAME_DATA) by code range, sorted by RVA; only
    /// x86 PDBs have them (ISF tables and x64 PDBs leave this empty).
    pub(crate) frame_data: Vec<FrameRecord>,
}

/// One x86 frame description: the code it covers and its frame layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRecord {
    pub rva: u64,
    pub len: u64,
    pub frame: FrameDescription,
}

/// How a [`FrameRecord`] describes its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameDescription {
    /// An `FPO_DATA` record (the PDB's old FPO stream): sizes and a frame type.
    Fpo(crate::unwind::x86::Fpo),
    /// A FrameData record (the new FPO stream): sizes and a program string.
    Program(crate::unwind::x86_program::FrameProgram),
}

impl SymbolTable {
    /// The PDB this table was made from, when the source records it.
    #[must_use]
    pub fn identity(&self) -> Option<&PdbIdentity> {
        self.identity.as_ref()
    }

    /// Width of a pointer in this module, from its base types (`pointer` or `void *`).
    #[must_use]
    pub fn pointer_size(&self) -> u64 {
        self.pointer_size
    }

    pub fn user_type(&self, name: &str) -> Result<&UserType, SymbolError> {
        self.user_types
            .get(name)
            .ok_or_else(|| SymbolError::UnknownType(name.to_string()))
    }

    #[must_use]
    pub fn has_type(&self, name: &str) -> bool {
        self.user_types.contains_key(name)
    }

    pub fn enum_type(&self, name: &str) -> Result<&EnumType, SymbolError> {
        self.enums
            .get(name)
            .ok_or_else(|| SymbolError::UnknownType(name.to_string()))
    }

    pub fn base_type(&self, name: &str) -> Result<&BaseType, SymbolError> {
        self.base_types
            .get(name)
            .ok_or_else(|| SymbolError::UnknownType(name.to_string()))
    }

    /// Size in bytes of a structure, union or class.
    pub fn size_of(&self, type_name: &str) -> Result<u64, SymbolError> {
        Ok(self.user_type(type_name)?.size)
    }

    /// Size in bytes of any type reference. Bitfields report their storage size.
    pub fn size_of_ref(&self, ty: &TypeRef) -> Result<u64, SymbolError> {
        match ty {
            TypeRef::Base(name) => Ok(self.base_type(name)?.size),
            TypeRef::User(name) => self.size_of(name),
            TypeRef::Enum(name) => Ok(self.enum_type(name)?.size),
            TypeRef::Pointer(_) => Ok(self.pointer_size),
            TypeRef::Array { count, element } => Ok(count * self.size_of_ref(element)?),
            TypeRef::Bitfield { storage, .. } => self.size_of_ref(storage),
            TypeRef::Function => Err(SymbolError::UnsizedType("function".into())),
        }
    }

    /// Locate a field by a dotted path through embedded structures:
    /// `field("_EPROCESS", "Pcb.DirectoryTableBase")`. Pointers are not followed.
    pub fn field(&self, type_name: &str, path: &str) -> Result<FieldLocation, SymbolError> {
        let mut current = self.user_type(type_name)?;
        let mut offset = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let field = current
                .field(part)
                .ok_or_else(|| SymbolError::UnknownField {
                    type_name: current.name.clone(),
                    field: part.to_string(),
                })?;
            offset += field.offset;
            if parts.peek().is_none() {
                return Ok(FieldLocation {
                    offset,
                    ty: field.ty.clone(),
                });
            }
            current = match &field.ty {
                TypeRef::User(inner) => self.user_type(inner)?,
                other => {
                    return Err(SymbolError::NotAStructure {
                        type_name: current.name.clone(),
                        field: part.to_string(),
                        kind: other.kind_name(),
                        rest: parts.collect::<Vec<_>>().join("."),
                    })
                }
            };
        }
        Err(SymbolError::UnknownField {
            type_name: type_name.to_string(),
            field: path.to_string(),
        })
    }

    /// Byte offset of a (dotted) field path.
    pub fn offset_of(&self, type_name: &str, path: &str) -> Result<u64, SymbolError> {
        Ok(self.field(type_name, path)?.offset)
    }

    /// RVA of a global symbol from the module base.
    pub fn symbol_rva(&self, name: &str) -> Result<u64, SymbolError> {
        self.symbols
            .get(name)
            .copied()
            .ok_or_else(|| SymbolError::UnknownSymbol(name.to_string()))
    }

    /// RVA of a symbol, `None` when absent: for globals that only some builds have.
    #[must_use]
    pub fn try_symbol_rva(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// All symbols, for address-to-name lookups.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, u64)> {
        self.symbols.iter().map(|(n, a)| (n.as_str(), *a))
    }

    /// Names of all structures, unions and classes.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.user_types.keys().map(String::as_str)
    }

    /// Functions with their code ranges, sorted by RVA; empty when the source has none.
    #[must_use]
    pub fn functions(&self) -> &[FunctionRange] {
        &self.functions
    }

    /// The function whose code contains `rva`, when the source records ranges.
    #[must_use]
    pub fn function_at(&self, rva: u64) -> Option<&FunctionRange> {
        let after = self.functions.partition_point(|f| f.rva <= rva);
        self.functions[..after]
            .iter()
            .rev()
            .find(|f| f.contains(rva))
    }

    /// The `FPO_DATA` record covering `rva`, when the PDB has one; the innermost
    /// (latest-starting) record wins. FrameData records are left to [`Self::frame_program_at`].
    #[must_use]
    pub fn frame_data_at(&self, rva: u64) -> Option<crate::unwind::x86::Fpo> {
        self.frame_records_at(rva).find_map(|f| match &f.frame {
            FrameDescription::Fpo(fpo) => Some(*fpo),
            FrameDescription::Program(_) => None,
        })
    }

    /// The FrameData record covering `rva`, when the innermost record covering it (FPO or
    /// FrameData) is one: its program string unwinds the frame.
    #[must_use]
    pub fn frame_program_at(&self, rva: u64) -> Option<&crate::unwind::x86_program::FrameProgram> {
        match &self.frame_records_at(rva).next()?.frame {
            FrameDescription::Program(p) => Some(p),
            FrameDescription::Fpo(_) => None,
        }
    }

    /// Every x86 frame record, sorted by RVA.
    #[must_use]
    pub fn frame_records(&self) -> &[FrameRecord] {
        &self.frame_data
    }

    /// The records covering `rva`, innermost (latest-starting) first.
    fn frame_records_at(&self, rva: u64) -> impl Iterator<Item = &FrameRecord> {
        let after = self.frame_data.partition_point(|f| f.rva <= rva);
        self.frame_data[..after]
            .iter()
            .rev()
            .filter(move |f| rva - f.rva < f.len)
    }

    /// Names of all enums.
    pub fn enum_names(&self) -> impl Iterator<Item = &str> {
        self.enums.keys().map(String::as_str)
    }

    /// Add or replace a symbol (fixture builders choose their own RVAs for x86 tables).
    pub fn set_symbol(&mut self, name: &str, rva: u64) {
        self.symbols.insert(name.to_string(), rva);
    }

    /// Stamp the PDB identity a table pairs with.
    pub fn set_identity(&mut self, identity: PdbIdentity) {
        self.identity = Some(identity);
    }
}
