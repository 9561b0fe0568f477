//! Volatility 3 ISF ("Intermediate Symbol Format") tables, plain `.json` or `.json.xz`.

use super::layout::{BaseType, EnumType, Field, SymbolTable, TypeKind, TypeRef, UserType};
use super::pdb_id::{Guid, PdbIdentity};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use thiserror::Error;

/// Why an ISF table could not be loaded.
#[derive(Debug, Error)]
pub enum IsfError {
    #[error("cannot read symbol table {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("symbol table {path} is not valid ISF JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("symbol table {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
struct IsfFile {
    metadata: IsfMetadata,
    #[serde(default)]
    base_types: HashMap<String, IsfBaseType>,
    #[serde(default)]
    user_types: HashMap<String, IsfUserType>,
    #[serde(default)]
    enums: HashMap<String, IsfEnum>,
    #[serde(default)]
    symbols: HashMap<String, IsfSymbol>,
}

#[derive(Deserialize)]
struct IsfMetadata {
    windows: Option<IsfWindows>,
}

#[derive(Deserialize)]
struct IsfWindows {
    pdb: Option<IsfPdb>,
}

#[derive(Deserialize)]
struct IsfPdb {
    #[serde(rename = "GUID")]
    guid: String,
    age: u32,
    database: String,
}

#[derive(Deserialize)]
struct IsfBaseType {
    size: u64,
    #[serde(default)]
    signed: bool,
    kind: String,
}

#[derive(Deserialize)]
struct IsfUserType {
    kind: String,
    size: u64,
    #[serde(default)]
    fields: HashMap<String, IsfField>,
}

#[derive(Deserialize)]
struct IsfField {
    offset: u64,
    #[serde(rename = "type")]
    ty: IsfType,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum IsfType {
    Base {
        name: String,
    },
    Pointer {
        subtype: Box<IsfType>,
    },
    Struct {
        name: String,
    },
    Union {
        name: String,
    },
    Class {
        name: String,
    },
    Enum {
        name: String,
    },
    Array {
        /// Converted tables carry a few negative counts; those arrays are of unknown length.
        count: i64,
        subtype: Box<IsfType>,
    },
    Bitfield {
        bit_position: u32,
        bit_length: u32,
        #[serde(rename = "type")]
        storage: Box<IsfType>,
    },
    Function,
}

#[derive(Deserialize)]
struct IsfEnum {
    size: u64,
    base: String,
    constants: HashMap<String, i64>,
}

#[derive(Deserialize)]
struct IsfSymbol {
    address: u64,
}

impl From<IsfType> for TypeRef {
    fn from(t: IsfType) -> TypeRef {
        match t {
            IsfType::Base { name } => TypeRef::Base(name),
            IsfType::Pointer { subtype } => TypeRef::Pointer(Box::new((*subtype).into())),
            IsfType::Struct { name } | IsfType::Union { name } | IsfType::Class { name } => {
                TypeRef::User(name)
            }
            IsfType::Enum { name } => TypeRef::Enum(name),
            IsfType::Array { count, subtype } => TypeRef::Array {
                count: u64::try_from(count).unwrap_or(0),
                element: Box::new((*subtype).into()),
            },
            IsfType::Bitfield {
                bit_position,
                bit_length,
                storage,
            } => TypeRef::Bitfield {
                position: bit_position,
                length: bit_length,
                storage: Box::new((*storage).into()),
            },
            IsfType::Function => TypeRef::Function,
        }
    }
}

/// Load an ISF table from a `.json` or `.json.xz` file.
pub fn load_isf_file(path: &Path) -> Result<SymbolTable, IsfError> {
    let shown = path.display().to_string();
    let io = |source| IsfError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = Vec::new();
    let is_xz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xz"));
    if is_xz {
        xz2::read::XzDecoder::new(std::io::BufReader::new(file))
            .read_to_end(&mut text)
            .map_err(io)?;
    } else {
        std::io::BufReader::new(file)
            .read_to_end(&mut text)
            .map_err(io)?;
    }
    parse_isf(&text, &shown)
}

/// Parse ISF JSON text; `origin` names the source in errors.
pub fn parse_isf(json: &[u8], origin: &str) -> Result<SymbolTable, IsfError> {
    let file: IsfFile = serde_json::from_slice(json).map_err(|source| IsfError::Json {
        path: origin.to_string(),
        source,
    })?;
    let invalid = |message: String| IsfError::Invalid {
        path: origin.to_string(),
        message,
    };

    let identity = match file.metadata.windows.and_then(|w| w.pdb) {
        Some(pdb) => {
            let guid: Guid = pdb.guid.parse().map_err(|e| invalid(format!("{e}")))?;
            // Tables converted from types-only sources carry a zero GUID: no identity.
            (guid != Guid::default()).then_some(PdbIdentity {
                name: pdb.database,
                guid,
                age: pdb.age,
            })
        }
        None => None,
    };

    let pointer_size = file
        .base_types
        .get("pointer")
        .map(|p| p.size)
        .ok_or_else(|| invalid("no `pointer` base type: pointer size unknown".into()))?;

    let base_types = file
        .base_types
        .into_iter()
        .map(|(name, b)| {
            (
                name,
                BaseType {
                    size: b.size,
                    signed: b.signed,
                    kind: b.kind,
                },
            )
        })
        .collect();

    let mut user_types = HashMap::with_capacity(file.user_types.len());
    for (name, u) in file.user_types {
        let kind = match u.kind.as_str() {
            "struct" => TypeKind::Struct,
            "union" => TypeKind::Union,
            "class" => TypeKind::Class,
            other => return Err(invalid(format!("type `{name}` has unknown kind `{other}`"))),
        };
        let mut fields: Vec<Field> = u
            .fields
            .into_iter()
            .map(|(fname, f)| Field {
                name: fname,
                offset: f.offset,
                ty: f.ty.into(),
            })
            .collect();
        fields.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
        user_types.insert(
            name.clone(),
            UserType {
                name,
                kind,
                size: u.size,
                fields,
            },
        );
    }

    let enums = file
        .enums
        .into_iter()
        .map(|(name, e)| {
            let mut constants: Vec<(String, i64)> = e.constants.into_iter().collect();
            constants.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            (
                name.clone(),
                EnumType {
                    name,
                    size: e.size,
                    base: e.base,
                    constants,
                },
            )
        })
        .collect();

    let symbols = file
        .symbols
        .into_iter()
        .map(|(name, s)| (name, s.address))
        .collect();

    Ok(SymbolTable {
        identity,
        pointer_size,
        base_types,
        user_types,
        enums,
        symbols,
        functions: Vec::new(),
        // ISF tables carry no x86 frame data.
        frame_data: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::TypeRef;
    use std::path::PathBuf;

    fn shared_table(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/symbols/ntkrnlmp.pdb")
            .join(name)
    }

    #[test]
    fn loads_windows_10_table_with_real_offsets() {
        let t = load_isf_file(&shared_table("68A17FAF3012B7846079AEECDBE0A583-1.json.xz"))
            .expect("shared table loads");
        let id = t.identity().expect("table has a PDB identity");
        assert_eq!(id.name, "ntkrnlmp.pdb");
        assert_eq!(id.isf_stem(), "68A17FAF3012B7846079AEECDBE0A583-1");
        assert_eq!(t.pointer_size(), 8);
        // Values read from the table itself with python's json module.
        assert_eq!(
            t.offset_of("_EPROCESS", "ActiveProcessLinks").unwrap(),
            1096
        );
        assert_eq!(t.offset_of("_EPROCESS", "ImageFileName").unwrap(), 1448);
        assert_eq!(
            t.offset_of("_EPROCESS", "Pcb.DirectoryTableBase").unwrap(),
            0x28
        );
        assert_eq!(t.size_of("_EPROCESS").unwrap(), 2624);
        assert_eq!(t.size_of("_LIST_ENTRY").unwrap(), 16);
        assert_eq!(t.symbol_rva("PsActiveProcessHead").unwrap(), 12_705_632);
        let name = t.field("_EPROCESS", "ImageFileName").unwrap();
        assert_eq!(
            name.ty,
            TypeRef::Array {
                count: 15,
                element: Box::new(TypeRef::Base("unsigned char".into()))
            }
        );
        assert_eq!(t.size_of_ref(&name.ty).unwrap(), 15);
    }

    #[test]
    fn reports_unknown_fields_and_non_structures_on_a_path() {
        let t = load_isf_file(&shared_table("68A17FAF3012B7846079AEECDBE0A583-1.json.xz"))
            .expect("shared table loads");
        let err = t.field("_EPROCESS", "Pcb.NoSuchField").unwrap_err();
        assert_eq!(err.to_string(), "`_KPROCESS` has no field `NoSuchField`");
        let err = t.field("_EPROCESS", "Peb.Ldr").unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `Peb` of `_EPROCESS` is a pointer, not a structure: cannot look up `Ldr` in it"
        );
        assert!(t.symbol_rva("NoSuchGlobal").is_err());
    }

    #[test]
    fn types_only_table_has_no_identity_and_32_bit_pointers() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/symbols/x86/win7_sp1_x86.json.xz");
        let t = load_isf_file(&path).expect("x86 table loads");
        assert!(t.identity().is_none());
        assert_eq!(t.pointer_size(), 4);
        assert_eq!(t.size_of("_LIST_ENTRY").unwrap(), 8);
    }

    #[test]
    fn malformed_tables_are_errors_that_name_the_source() {
        let err = parse_isf(b"{\"metadata\": {}", "bad.json").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("symbol table bad.json is not valid ISF JSON"));
        let err = parse_isf(b"{\"metadata\": {}, \"base_types\": {}}", "nop.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "symbol table nop.json: no `pointer` base type: pointer size unknown"
        );
    }
}
