//! Why a model operation failed. Every variant names the address, type or field it is about.

use crate::mmu::VirtualReadError;
use crate::symbols::SymbolError;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// A type, field or symbol the table does not have.
    #[error(transparent)]
    Symbol(#[from] SymbolError),
    /// Target memory behind a field could not be read.
    #[error("cannot read {len} bytes of {what} at {}: {source}", super::format_address(*.address, *.pointer_size))]
    Read {
        address: u64,
        len: u64,
        what: String,
        source: VirtualReadError,
        /// Width of the target's pointers: the address prints at it.
        pointer_size: u64,
    },
    /// A name that is neither a friendly nor a raw field of the structure.
    #[error("`{type_name}` has no field `{field}`")]
    NoField { type_name: String, field: String },
    /// Following a null pointer.
    #[error("cannot read `{field}` through a null `{target} *`")]
    NullPointer { target: String, field: String },
    /// A pointer whose target has no layout (`void *`, a function pointer).
    #[error("the pointer {} is a `{target} *`: it has no fields (cast it to a structure first)", super::format_address(*.address, *.pointer_size))]
    Untyped {
        address: u64,
        target: String,
        /// Width of the target's pointers (8 when the pointer has no address space).
        pointer_size: u64,
    },
    /// A pointer value with no address space (a literal): nothing to read it in.
    #[error("the address {} belongs to no address space: it cannot be dereferenced", super::addr(*.address))]
    NoAddressSpace { address: u64 },
    /// Field access on something that is not a structure or a pointer to one.
    #[error("cannot access `{field}`: a `{kind}` value has no fields")]
    NotAStructure { kind: String, field: String },
    /// A layout the model does not decode.
    #[error("cannot decode `{type_name}` at {}: {reason}", super::addr(*.address))]
    Unsupported {
        type_name: String,
        address: u64,
        reason: String,
    },
    /// A collection needs a list head the target and table do not give.
    #[error("cannot find `{0}`: neither the symbol table nor the target names it")]
    NoListHead(&'static str),
    /// The session has no kernel to model.
    #[error("no kernel: {0}")]
    NoKernel(String),
    /// The session has no kernel symbols.
    #[error("no kernel symbols: {0}")]
    NoSymbols(String),
    /// The tick count could not be found or read.
    #[error("cannot read the tick count: {0}")]
    NoClock(String),
}
