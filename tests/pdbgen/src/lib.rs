//! Real PDB files for tests, built by a real toolchain from a symbol table.
//!
//! [`emit_source`] writes C++ declarations that reproduce chosen types of a [`SymbolTable`]
//! byte for byte (`#pragma pack(1)`, gaps filled with unnamed bitfields so that no extra
//! member appears, overlapping members as anonymous unions of anonymous structs, bitfield
//! groups closed to their storage unit), one exported global per type and enum (clang emits
//! only the types that are used), and exported globals and functions named as asked.
//! [`generate`] compiles it with `clang --target=x86_64-pc-windows-msvc -gcodeview` (or
//! `i686-pc-windows-msvc`, see [`PdbRequest::x86`]; optimised C units ride along, see
//! [`PdbRequest::optimized_c`]) and links it with `lld-link /dll /debug /map`, returning the PDB, the DLL that names it, the linker's
//! map (an independent record of every public's RVA) and the PDB identity read back from the
//! DLL's RSDS record.
//!
//! ```no_run
//! use kds_pdbgen::{generate, PdbRequest};
//! let table = kds_runtime::symbols::load_isf_file("table.json.xz".as_ref()).unwrap();
//! let request = PdbRequest::new("kds_test", &table)
//!     .types(["_EPROCESS", "_KTHREAD"])
//!     .globals(["PsActiveProcessHead"])
//!     .functions(["KiSwapContext"]);
//! let built = generate(&request).unwrap();
//! println!("{} ({})", built.pdb.display(), built.identity.isf_stem());
//! ```

use kds_runtime::symbols::{Guid, PdbIdentity, SymbolTable, TypeKind, TypeRef};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use thiserror::Error;

/// Why a PDB could not be generated.
#[derive(Debug, Error)]
pub enum GenError {
    #[error("`{tool}` is not on PATH: run .ci/run (it installs Debian's clang and lld) or `apt-get install -y clang lld`")]
    ToolMissing { tool: &'static str },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}):\n{stderr}")]
    ToolFailed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Output(String),
}

/// What to put in a generated PDB.
pub struct PdbRequest<'a> {
    /// File stem of the DLL and PDB.
    pub name: String,
    pub table: &'a SymbolTable,
    pub types: Vec<String>,
    /// Enums to define even when no type uses them.
    pub enums: Vec<String>,
    pub globals: Vec<String>,
    pub functions: Vec<String>,
    /// Extra copies of every type, each in its own namespace (`kds_copy_N::`), to make large
    /// PDBs for benchmarks.
    pub copies: usize,
    /// Build for 32-bit x86 (`i686-pc-windows-msvc`, 4-byte pointers) instead of x64.
    pub x86: bool,
    /// Put every global and function at its table RVA (see [`PdbRequest::at_table_rvas`]).
    pub at_table_rvas: bool,
    /// C translation units compiled optimised, without frame pointers (see
    /// [`PdbRequest::optimized_c`]).
    pub optimized_c: Vec<String>,
}

impl<'a> PdbRequest<'a> {
    #[must_use]
    pub fn new(name: &str, table: &'a SymbolTable) -> PdbRequest<'a> {
        PdbRequest {
            name: name.to_string(),
            table,
            types: Vec::new(),
            enums: Vec::new(),
            globals: Vec::new(),
            functions: Vec::new(),
            copies: 0,
            x86: false,
            at_table_rvas: false,
            optimized_c: Vec::new(),
        }
    }

    #[must_use]
    pub fn types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.types.extend(names.into_iter().map(Into::into));
        self
    }

    /// Build for 32-bit x86: `--target=i686-pc-windows-msvc` and `lld-link /machine:x86`. C
    /// names get x86's cdecl decoration in the publics (`_name`); the PDB's procedure and data
    /// symbols keep the C name.
    #[must_use]
    pub fn x86(mut self, x86: bool) -> Self {
        self.x86 = x86;
        self
    }

    /// Add a C translation unit compiled with `-O2 -fomit-frame-pointer` and linked into the
    /// same DLL (export its functions with `__declspec(dllexport)`). For x86, clang describes
    /// every such function's frame with FrameData records (`.cv_fpo_proc`: sizes and a program
    /// string for each step of the prologue), as Windows' own x86 binaries have.
    ///
    /// ```no_run
    /// # let table = kds_runtime::symbols::SymbolTable::default();
    /// let request = kds_pdbgen::PdbRequest::new("kds_fpo", &table)
    ///     .x86(true)
    ///     .optimized_c("__declspec(dllexport) int twice(int x) { return 2 * x; }");
    /// ```
    #[must_use]
    pub fn optimized_c(mut self, source: &str) -> Self {
        self.optimized_c.push(source.to_string());
        self
    }

    /// Place every requested global and function at its RVA in the table, so that the PDB gives
    /// the table's RVAs: they become labels in one `.text` section that starts at RVA 0x1000
    /// (an assembly file, zero-filled between labels), and the type anchors become internal
    /// (no publics besides the requested names). Names without a table RVA of at least 0x1000
    /// are left out. [`generate`] checks every placed RVA in the linker map.
    #[must_use]
    pub fn at_table_rvas(mut self, yes: bool) -> Self {
        self.at_table_rvas = yes;
        self
    }

    #[must_use]
    pub fn copies(mut self, copies: usize) -> Self {
        self.copies = copies;
        self
    }

    #[must_use]
    pub fn enums<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.enums.extend(names.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn globals<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.globals.extend(names.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn functions<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.functions.extend(names.into_iter().map(Into::into));
        self
    }
}

/// The C++ text for a request and what it holds.
#[derive(Debug, Clone)]
pub struct Source {
    pub text: String,
    /// Structures and unions defined (the requested ones and everything they embed).
    pub types: BTreeSet<String>,
    /// Enums defined.
    pub enums: BTreeSet<String>,
    /// Requested types left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Globals and functions defined.
    pub globals: Vec<String>,
    pub functions: Vec<String>,
    /// With [`PdbRequest::at_table_rvas`]: the assembly that places them, and each placed name
    /// with its table RVA.
    pub asm: Option<String>,
    pub placed: Vec<(String, u64)>,
}

/// A built DLL and its PDB, in a directory removed on drop (set `KDS_PDBGEN_KEEP` to keep it).
#[derive(Debug)]
pub struct GeneratedPdb {
    pub dir: PathBuf,
    pub pdb: PathBuf,
    pub dll: PathBuf,
    pub map: PathBuf,
    /// Name, GUID and age as the DLL's RSDS record names the PDB.
    pub identity: PdbIdentity,
    pub source: Source,
}

impl Drop for GeneratedPdb {
    fn drop(&mut self) {
        if std::env::var_os("KDS_PDBGEN_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn c_base(name: &str) -> Option<&'static str> {
    Some(match name {
        "char" => "char",
        "unsigned char" => "unsigned char",
        "short" => "short",
        "unsigned short" => "unsigned short",
        "int" => "int",
        "unsigned int" => "unsigned int",
        "long" => "long",
        "unsigned long" => "unsigned long",
        "long long" => "long long",
        "unsigned long long" => "unsigned long long",
        "wchar" => "wchar_t",
        "f32" | "float" => "float",
        "double" => "double",
        "void" => "void",
        "bool" => "bool",
        _ => return None,
    })
}

/// An unsigned integer type of `size` bytes, for filler bitfields.
fn filler(size: u64) -> &'static str {
    match size {
        1 => "unsigned char",
        2 => "unsigned short",
        4 => "unsigned int",
        _ => "unsigned long long",
    }
}

struct Emitter<'a> {
    table: &'a SymbolTable,
    enums: BTreeSet<String>,
    forward: BTreeSet<String>,
}

impl Emitter<'_> {
    fn tag(&self, name: &str) -> &'static str {
        match self.table.user_type(name).map(|u| u.kind) {
            Ok(TypeKind::Union) => "union",
            _ => "struct",
        }
    }

    /// A C declarator for `inner` of type `ty`.
    fn decl(&mut self, ty: &TypeRef, inner: &str) -> Result<String, String> {
        Ok(match ty {
            TypeRef::Base(n) => {
                let c = c_base(n).ok_or_else(|| format!("base type `{n}` has no C spelling"))?;
                format!("{c} {inner}")
            }
            TypeRef::User(n) | TypeRef::Enum(n) if !is_identifier(n) => {
                return Err(format!("`{n}` is not a C identifier"))
            }
            TypeRef::User(n) => {
                self.forward.insert(n.clone());
                format!("{} {n} {inner}", self.tag(n))
            }
            TypeRef::Enum(n) => {
                self.table.enum_type(n).map_err(|e| e.to_string())?;
                self.enums.insert(n.clone());
                format!("{n} {inner}")
            }
            TypeRef::Pointer(t) => {
                let p = format!("*{inner}");
                match **t {
                    TypeRef::Array { .. } | TypeRef::Function => self.decl(t, &format!("({p})"))?,
                    _ => self.decl(t, &p)?,
                }
            }
            TypeRef::Array { count, element } => {
                self.decl(element, &format!("{inner}[{count}]"))?
            }
            TypeRef::Function => format!("void {inner}()"),
            TypeRef::Bitfield { .. } => return Err("a bitfield outside a structure".into()),
        })
    }

    fn bitfield_storage(&mut self, ty: &TypeRef) -> Result<String, String> {
        match ty {
            TypeRef::Base(n) => c_base(n)
                .map(str::to_string)
                .ok_or_else(|| format!("base type `{n}` has no C spelling")),
            TypeRef::Enum(n) if !is_identifier(n) => Err(format!("`{n}` is not a C identifier")),
            TypeRef::Enum(n) => {
                self.table.enum_type(n).map_err(|e| e.to_string())?;
                self.enums.insert(n.clone());
                Ok(n.clone())
            }
            other => Err(format!("bitfield stored in a {}", other.kind_name())),
        }
    }
}

/// A run of members at one place: one member, or bitfields sharing a storage unit.
struct Item {
    offset: u64,
    size: u64,
    lines: Vec<String>,
}

fn pad(out: &mut Vec<String>, mut gap: u64) {
    while gap >= 8 {
        out.push("unsigned long long : 64;".into());
        gap -= 8;
    }
    while gap > 0 {
        out.push("unsigned char : 8;".into());
        gap -= 1;
    }
}

/// A bitfield member: position, length, name, storage type.
type Bits<'t> = (u32, u32, String, &'t TypeRef);

fn items_of(e: &mut Emitter<'_>, name: &str) -> Result<Vec<Item>, String> {
    let table = e.table;
    let ty = table.user_type(name).map_err(|e| e.to_string())?;
    let mut items = Vec::new();
    // Bitfields by (offset, storage size): each group is one storage unit, or several when
    // bit ranges overlap (a union of bitfield layouts).
    let mut groups: BTreeMap<(u64, u64), Vec<Bits<'_>>> = BTreeMap::new();
    for f in &ty.fields {
        match &f.ty {
            TypeRef::Bitfield {
                position,
                length,
                storage,
            } => {
                let size = table.size_of_ref(storage).map_err(|e| e.to_string())?;
                groups.entry((f.offset, size)).or_default().push((
                    *position,
                    *length,
                    f.name.clone(),
                    storage,
                ));
            }
            TypeRef::Function => return Err(format!("field `{}` is a function", f.name)),
            other => {
                let size = table.size_of_ref(other).map_err(|e| e.to_string())?;
                items.push(Item {
                    offset: f.offset,
                    size,
                    lines: vec![format!("{};", e.decl(other, &f.name)?)],
                });
            }
        }
    }
    for ((offset, size), mut bits) in groups {
        bits.sort_by_key(|b| (b.0, b.1));
        // Lanes of non-overlapping bit ranges.
        let mut lanes: Vec<(u32, Vec<String>)> = Vec::new();
        for (position, length, fname, storage) in bits {
            let storage = e.bitfield_storage(storage)?;
            let lane = match lanes.iter().position(|l| l.0 <= position) {
                Some(i) => i,
                None => {
                    lanes.push((0, Vec::new()));
                    lanes.len() - 1
                }
            };
            let (end, lines) = &mut lanes[lane];
            if position > *end {
                lines.push(format!("{} : {};", filler(size), position - *end));
            }
            lines.push(format!("{storage} {fname} : {length};"));
            *end = position + length;
        }
        for (end, mut lines) in lanes {
            let unit = u32::try_from(size * 8).map_err(|e| e.to_string())?;
            if end < unit {
                lines.push(format!("{} : {};", filler(size), unit - end));
            }
            items.push(Item {
                offset,
                size,
                lines,
            });
        }
    }
    Ok(items)
}

/// The body of a struct or union that puts every member at its table offset.
fn body_of(e: &mut Emitter<'_>, name: &str) -> Result<Vec<String>, String> {
    let ty = e.table.user_type(name).map_err(|e| e.to_string())?;
    let (size, kind) = (ty.size, ty.kind);
    let mut items = items_of(e, name)?;
    items.sort_by(|a, b| {
        (a.offset, std::cmp::Reverse(a.size)).cmp(&(b.offset, std::cmp::Reverse(b.size)))
    });
    let mut lanes: Vec<(u64, Vec<String>)> = Vec::new();
    for item in items {
        let lane = match lanes.iter().position(|l| l.0 <= item.offset) {
            Some(i) => i,
            None => {
                lanes.push((0, Vec::new()));
                lanes.len() - 1
            }
        };
        let (end, lines) = &mut lanes[lane];
        pad(lines, item.offset - *end);
        lines.extend(item.lines);
        *end = item.offset + item.size;
    }
    let max_end = lanes.iter().map(|l| l.0).max().unwrap_or(0);
    if max_end > size {
        return Err(format!(
            "members end at {max_end:#x}, past the size {size:#x}"
        ));
    }
    let mut out = Vec::new();
    let wrap = |out: &mut Vec<String>, lines: Vec<String>| {
        out.push("struct {".into());
        out.extend(lines.into_iter().map(|l| format!("  {l}")));
        out.push("};".into());
    };
    match (kind, lanes.len()) {
        (TypeKind::Union, _) => {
            for (_, lines) in lanes {
                wrap(&mut out, lines);
            }
            if max_end < size {
                let mut lines = Vec::new();
                pad(&mut lines, size);
                wrap(&mut out, lines);
            }
        }
        (_, 0 | 1) => {
            if let Some((_, lines)) = lanes.pop() {
                out.extend(lines);
            }
            pad(&mut out, size - max_end);
        }
        _ => {
            out.push("union {".into());
            for (_, lines) in lanes {
                let mut inner = Vec::new();
                wrap(&mut inner, lines);
                out.extend(inner.into_iter().map(|l| format!("  {l}")));
            }
            out.push("};".into());
            pad(&mut out, size - max_end);
        }
    }
    Ok(out)
}

/// Types a type embeds by value (fields and array elements, not pointer targets).
fn embedded(ty: &TypeRef, out: &mut Vec<String>) {
    match ty {
        TypeRef::User(n) => out.push(n.clone()),
        TypeRef::Array { element, .. } => embedded(element, out),
        _ => {}
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// C++ declarations for a request; types that cannot be reproduced are listed in `skipped`.
pub fn emit_source(request: &PdbRequest<'_>) -> Source {
    let table = request.table;
    let mut e = Emitter {
        table,
        enums: BTreeSet::new(),
        forward: BTreeSet::new(),
    };
    for name in &request.enums {
        if table.enum_type(name).is_ok() {
            e.enums.insert(name.clone());
        }
    }
    // Bodies of every type needed, in an order where embedded types come first.
    let mut bodies: HashMap<String, Result<Vec<String>, String>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut skipped = Vec::new();
    let mut defined = BTreeSet::new();
    for root in &request.types {
        // Depth-first: (name, children pushed?)
        let mut stack = vec![(root.clone(), false)];
        let mut failed: Option<String> = None;
        let mut local = Vec::new();
        while let Some((name, expanded)) = stack.pop() {
            if defined.contains(&name) || local.contains(&name) {
                continue;
            }
            if expanded {
                local.push(name);
                continue;
            }
            let body = bodies
                .entry(name.clone())
                .or_insert_with(|| {
                    if !is_identifier(&name) {
                        return Err(format!("`{name}` is not a C identifier"));
                    }
                    body_of(&mut e, &name)
                })
                .clone();
            if let Err(why) = body {
                failed = Some(format!("{name}: {why}"));
                break;
            }
            stack.push((name.clone(), true));
            if let Ok(u) = table.user_type(&name) {
                for f in &u.fields {
                    let mut deps = Vec::new();
                    embedded(&f.ty, &mut deps);
                    for d in deps {
                        if !defined.contains(&d) && !local.contains(&d) {
                            stack.push((d, false));
                        }
                    }
                }
            }
        }
        match failed {
            Some(why) => skipped.push((root.clone(), why)),
            None => {
                for n in local {
                    defined.insert(n.clone());
                    order.push(n);
                }
            }
        }
    }

    let mut text = String::from(
        "// Generated by kds-pdbgen from a symbol table: every member at its table offset.\n\
         #pragma pack(push, 1)\n",
    );
    let mut types_text = String::new();
    for name in &e.forward.clone() {
        if is_identifier(name) {
            let _ = writeln!(types_text, "{} {name};", e.tag(name));
        }
    }
    let mut enums_out = BTreeSet::new();
    for name in &e.enums {
        let Ok(en) = table.enum_type(name) else {
            continue;
        };
        let Some(base) = c_base(&en.base) else {
            continue;
        };
        if !is_identifier(name) {
            continue;
        }
        let _ = writeln!(types_text, "enum class {name} : {base} {{");
        for (c, v) in &en.constants {
            if is_identifier(c) {
                let _ = writeln!(types_text, "  {c} = {v},");
            }
        }
        types_text.push_str("};\n");
        enums_out.insert(name.clone());
    }
    for name in &order {
        let Some(Ok(body)) = bodies.get(name) else {
            continue;
        };
        let _ = writeln!(types_text, "{} {name} {{", e.tag(name));
        for line in body {
            let _ = writeln!(types_text, "  {line}");
        }
        types_text.push_str("};\n");
    }
    text.push_str(&types_text);
    for copy in 1..=request.copies {
        let _ = writeln!(text, "namespace kds_copy_{copy} {{\n{types_text}}}");
    }
    // Placed requests keep the anchors as static locals of one function, `kds_anchors`: the
    // global symbol stream then holds no data symbol besides the requested names (lld puts
    // file-scope statics there, not function-scope ones).
    let anchor = if request.at_table_rvas {
        "  __attribute__((used)) static"
    } else {
        "__declspec(dllexport)"
    };
    text.push_str("#pragma pack(pop)\n\nextern \"C\" {\n");
    if request.at_table_rvas {
        text.push_str("__attribute__((used)) static void kds_anchors(void) {\n");
    } else {
        text.push_str("volatile unsigned long long kds_sink;\n");
    }
    for (i, name) in order.iter().enumerate() {
        let _ = writeln!(text, "{anchor} {} {name} kds_anchor_type_{i};", e.tag(name));
    }
    for (i, name) in enums_out.iter().enumerate() {
        let _ = writeln!(text, "{anchor} {name} kds_anchor_enum_{i};");
    }
    for copy in 1..=request.copies {
        for (i, name) in order.iter().enumerate() {
            let _ = writeln!(
                text,
                "__declspec(dllexport) kds_copy_{copy}::{name} kds_anchor_type_{copy}_{i};"
            );
        }
        for (i, name) in enums_out.iter().enumerate() {
            let _ = writeln!(
                text,
                "__declspec(dllexport) kds_copy_{copy}::{name} kds_anchor_enum_{copy}_{i};"
            );
        }
    }
    let taken: BTreeSet<&str> = order
        .iter()
        .chain(enums_out.iter())
        .map(String::as_str)
        .collect();
    if request.at_table_rvas {
        text.push_str("}\n}\n");
        let (asm, placed) = placement_asm(request);
        return Source {
            text,
            types: defined,
            enums: enums_out,
            skipped,
            globals: Vec::new(),
            functions: Vec::new(),
            asm: Some(asm),
            placed,
        };
    }
    let mut seen = BTreeSet::new();
    let mut globals = Vec::new();
    for name in &request.globals {
        if is_identifier(name) && !taken.contains(name.as_str()) && seen.insert(name.clone()) {
            let _ = writeln!(text, "__declspec(dllexport) unsigned long long {name};");
            globals.push(name.clone());
        }
    }
    let mut functions = Vec::new();
    for (i, name) in request.functions.iter().enumerate() {
        if is_identifier(name) && !taken.contains(name.as_str()) && seen.insert(name.clone()) {
            // Bodies of different lengths, so that ranges differ.
            let _ = write!(text, "__declspec(dllexport) void {name}(void) {{");
            for k in 0..=(i % 4) {
                let _ = write!(text, " kds_sink += {};", i + k);
            }
            text.push_str(" }\n");
            functions.push(name.clone());
        }
    }
    text.push_str("}\n");
    Source {
        text,
        types: defined,
        enums: enums_out,
        skipped,
        globals,
        functions,
        asm: None,
        placed: Vec::new(),
    }
}

/// Where the placement section starts: the first section lld lays out, after the headers.
const PLACED_BASE: u64 = 0x1000;

/// Assembly for one `.text` section holding every requested global and function as a label at
/// its table RVA (the section starts at [`PLACED_BASE`]), zero-filled between them.
fn placement_asm(request: &PdbRequest<'_>) -> (String, Vec<(String, u64)>) {
    let mut placed: Vec<(String, u64)> = Vec::new();
    let mut seen = BTreeSet::new();
    for name in request.globals.iter().chain(&request.functions) {
        if name.is_empty() || name.contains(['"', '\\', '\n']) || !seen.insert(name.clone()) {
            continue;
        }
        if let Some(rva) = request.table.try_symbol_rva(name) {
            if rva >= PLACED_BASE {
                placed.push((name.clone(), rva));
            }
        }
    }
    placed.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let mut asm = String::from("// Generated by kds-pdbgen: symbols at their table RVAs.\n");
    asm.push_str(".section .text,\"xr\"\n");
    let mut at = PLACED_BASE;
    for (name, rva) in &placed {
        if *rva > at {
            let _ = writeln!(asm, ".skip {:#x}", rva - at);
            at = *rva;
        }
        let _ = writeln!(asm, ".globl \"{name}\"\n\"{name}\":");
    }
    asm.push_str(".skip 0x10\n");
    (asm, placed)
}

/// The first of `names` found on PATH.
pub fn find_tool(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

fn clang() -> Result<PathBuf, GenError> {
    find_tool(&[
        "clang", "clang-20", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14",
    ])
    .ok_or(GenError::ToolMissing { tool: "clang" })
}

fn lld_link() -> Result<PathBuf, GenError> {
    find_tool(&[
        "lld-link",
        "lld-link-20",
        "lld-link-19",
        "lld-link-18",
        "lld-link-17",
        "lld-link-16",
        "lld-link-15",
        "lld-link-14",
    ])
    .ok_or(GenError::ToolMissing { tool: "lld-link" })
}

/// Fail with the hint to run `.ci/run` when the toolchain is missing.
pub fn require_toolchain() -> Result<(), GenError> {
    clang()?;
    lld_link()?;
    Ok(())
}

fn run(tool: &Path, args: &[String], dir: &Path) -> Result<(), GenError> {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|source| GenError::Io {
            what: format!("cannot run {}", tool.display()),
            source,
        })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        stderr.push_str(&String::from_utf8_lossy(&out.stdout));
        stderr.truncate(8000);
        return Err(GenError::ToolFailed {
            tool: tool.display().to_string(),
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Compile and link the request in a fresh temporary directory.
pub fn generate(request: &PdbRequest<'_>) -> Result<GeneratedPdb, GenError> {
    let clang = clang()?;
    let lld = lld_link()?;
    let dir = std::env::temp_dir().join(format!(
        "kds-pdbgen-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |what: String| move |source| GenError::Io { what, source };
    std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let source = emit_source(request);
    let name = &request.name;
    let cpp = dir.join(format!("{name}.cpp"));
    std::fs::write(&cpp, &source.text).map_err(io(format!("cannot write {}", cpp.display())))?;
    let obj = format!("{name}.obj");
    let target = if request.x86 {
        "--target=i686-pc-windows-msvc"
    } else {
        "--target=x86_64-pc-windows-msvc"
    };
    run(
        &clang,
        &[
            target.into(),
            "-gcodeview".into(),
            "-g".into(),
            "-c".into(),
            "-w".into(),
            "-x".into(),
            "c++".into(),
            cpp.display().to_string(),
            "-o".into(),
            obj.clone(),
        ],
        &dir,
    )?;
    let mut objects = vec![obj];
    for (i, unit) in request.optimized_c.iter().enumerate() {
        let c = dir.join(format!("{name}_c{i}.c"));
        std::fs::write(&c, unit).map_err(io(format!("cannot write {}", c.display())))?;
        let c_obj = format!("{name}_c{i}.obj");
        let args = [
            target,
            "-gcodeview",
            "-g",
            "-O2",
            "-fomit-frame-pointer",
            "-c",
            "-w",
            "-x",
            "c",
        ];
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
        args.extend([c.display().to_string(), "-o".into(), c_obj.clone()]);
        run(&clang, &args, &dir)?;
        objects.push(c_obj);
    }
    if let Some(asm) = &source.asm {
        let s = dir.join(format!("{name}_placed.s"));
        std::fs::write(&s, asm).map_err(io(format!("cannot write {}", s.display())))?;
        let placed_obj = format!("{name}_placed.obj");
        run(
            &clang,
            &[
                target.into(),
                "-c".into(),
                s.display().to_string(),
                "-o".into(),
                placed_obj.clone(),
            ],
            &dir,
        )?;
        // The placement object first, so that its `.text` contribution starts the section.
        objects.insert(0, placed_obj);
    }
    let pdb = dir.join(format!("{name}.pdb"));
    let dll = dir.join(format!("{name}.dll"));
    let map = dir.join(format!("{name}.map"));
    let mut args: Vec<String> = vec![
        "/nodefaultlib".into(),
        "/dll".into(),
        "/noentry".into(),
        "/debug".into(),
        format!("/pdb:{}", pdb.display()),
        format!("/out:{}", dll.display()),
        format!("/map:{}", map.display()),
    ];
    if request.x86 {
        args.push("/machine:x86".into());
    }
    args.extend(objects);
    run(&lld, &args, &dir)?;
    if !source.placed.is_empty() {
        let text =
            std::fs::read_to_string(&map).map_err(io(format!("cannot read {}", map.display())))?;
        let publics = map_publics(&text);
        if let Some((n, want)) = source
            .placed
            .iter()
            .find(|(n, rva)| publics.get(n.as_str()) != Some(rva))
        {
            return Err(GenError::Output(format!(
                "{n} is at {:?} in {}, not at its table RVA {want:#x}",
                publics.get(n.as_str()),
                map.display()
            )));
        }
    }
    let image = std::fs::read(&dll).map_err(io(format!("cannot read {}", dll.display())))?;
    let identity = rsds_identity(&image)
        .ok_or_else(|| GenError::Output(format!("{} has no RSDS record", dll.display())))?;
    Ok(GeneratedPdb {
        dir,
        pdb,
        dll,
        map,
        identity,
        source,
    })
}

/// The PDB identity in an image's RSDS (CodeView 7.0) record, found by its signature.
#[must_use]
pub fn rsds_identity(image: &[u8]) -> Option<PdbIdentity> {
    let at = image.windows(4).position(|w| w == b"RSDS")?;
    let rec = image.get(at + 4..)?;
    let guid: [u8; 16] = rec.get(..16)?.try_into().ok()?;
    let age = u32::from_le_bytes(rec.get(16..20)?.try_into().ok()?);
    let path = rec.get(20..)?;
    let end = path.iter().position(|&b| b == 0)?;
    let path = String::from_utf8_lossy(&path[..end]).into_owned();
    let name = path.rsplit(['/', '\\']).next().unwrap_or(&path).to_string();
    Some(PdbIdentity {
        name,
        guid: Guid::from_le_bytes(guid),
        age,
    })
}

/// Publics and their RVAs from an lld-link `/map` file ("Publics by Value").
pub fn map_publics(map: &str) -> HashMap<String, u64> {
    let mut base = None;
    let mut out = HashMap::new();
    for line in map.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Preferred load address is ") {
            base = u64::from_str_radix(rest.trim(), 16).ok();
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        // 0001:00000000       KiBar     0000000180001000     a.obj
        if parts.len() >= 3 && parts[0].len() == 13 && parts[0].as_bytes()[4] == b':' {
            if let (Some(base), Ok(va)) = (base, u64::from_str_radix(parts[2], 16)) {
                if let Some(rva) = va.checked_sub(base) {
                    out.insert(parts[1].to_string(), rva);
                }
            }
        }
    }
    out
}
