//! Symbols: one layout model, filled from Volatility ISF tables and from PDB files,
//! and the search for the table that matches an image.

pub mod fetch;
mod isf;
mod layout;
mod pdb;
mod pdb_id;
pub mod store;
pub mod sympath;

pub use isf::{load_isf_file, parse_isf, IsfError};
pub use layout::{
    BaseType, EnumType, Field, FieldLocation, FrameDescription, FrameRecord, FunctionRange,
    SymbolError, SymbolTable, TypeKind, TypeRef, UserType,
};
pub use pdb::{load_pdb_file, load_pdb_file_parts, parse_pdb, PdbLoadError, PdbParts};
pub use pdb_id::{Guid, GuidParseError, PdbIdentity};
