//! PDBs built by clang and lld-link from the shared ISF tables read back, through kds's PDB
//! loader, to the same layouts the ISF loader gives; symbols come back at the RVAs the
//! linker's map records.

use kds_pdbgen::{generate, map_publics, require_toolchain, PdbRequest};
use kds_runtime::symbols::{load_isf_file, load_pdb_file, SymbolTable, TypeRef};
use std::path::PathBuf;

const TABLES: [&str; 3] = [
    "339E74133576439CBCDF7E0229DA3773-1.json.xz",
    "68A17FAF3012B7846079AEECDBE0A583-1.json.xz",
    "C339CA26E8E26BB7F4C9BB7B8244A46A-1.json.xz",
];

const TYPES: [&str; 16] = [
    "_EPROCESS",
    "_KTHREAD",
    "_ETHREAD",
    "_KPRCB",
    "_PEB",
    "_LDR_DATA_TABLE_ENTRY",
    "_HANDLE_TABLE_ENTRY",
    "_HANDLE_TABLE",
    "_KTRAP_FRAME",
    "_MMPFN",
    "_POOL_HEADER",
    "_KPCR",
    "_OBJECT_HEADER",
    "_TEB",
    "_MMVAD",
    "_KUSER_SHARED_DATA",
];

const GLOBALS: [&str; 4] = [
    "PsActiveProcessHead",
    "PsLoadedModuleList",
    "KdDebuggerDataBlock",
    "MmPfnDatabase",
];

const FUNCTIONS: [&str; 4] = [
    "KiSwapContext",
    "KeBugCheckEx",
    "NtCreateFile",
    "PspCreateProcess",
];

fn table(name: &str) -> SymbolTable {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/symbols/ntkrnlmp.pdb")
        .join(name);
    load_isf_file(&path).expect("shared table loads")
}

fn toolchain() {
    if let Err(e) = require_toolchain() {
        panic!("{e}");
    }
}

/// The x86 tables come from Volatility 2's vtypes (vtypes2isf), which call `f32` `float`.
fn vtypes_names(ty: &TypeRef) -> TypeRef {
    match ty {
        TypeRef::Base(n) if n == "float" => TypeRef::Base("f32".into()),
        TypeRef::Pointer(t) => TypeRef::Pointer(Box::new(vtypes_names(t))),
        TypeRef::Array { count, element } => TypeRef::Array {
            count: *count,
            element: Box::new(vtypes_names(element)),
        },
        TypeRef::Bitfield {
            position,
            length,
            storage,
        } => TypeRef::Bitfield {
            position: *position,
            length: *length,
            storage: Box::new(vtypes_names(storage)),
        },
        other => other.clone(),
    }
}

/// Every defined type and enum of `pdb` equals the ISF table's, field by field.
fn assert_same_layouts(isf: &SymbolTable, pdb: &SymbolTable, types: &[String], enums: &[String]) {
    assert_same_layouts_as(isf, pdb, types, enums, TypeRef::clone);
}

fn assert_same_layouts_as(
    isf: &SymbolTable,
    pdb: &SymbolTable,
    types: &[String],
    enums: &[String],
    isf_name: impl Fn(&TypeRef) -> TypeRef,
) {
    for name in types {
        let want = isf.user_type(name).expect("ISF type");
        let got = pdb
            .user_type(name)
            .unwrap_or_else(|e| panic!("{name} missing from the PDB: {e}"));
        assert_eq!(got.size, want.size, "size of {name}");
        assert_eq!(got.kind, want.kind, "kind of {name}");
        for (g, w) in got.fields.iter().zip(&want.fields) {
            assert_eq!((&g.name, g.offset), (&w.name, w.offset), "field of {name}");
            assert_eq!(g.ty, isf_name(&w.ty), "type of {name}.{}", w.name);
        }
        assert_eq!(got.fields.len(), want.fields.len(), "field count of {name}");
    }
    for name in enums {
        assert_eq!(
            pdb.enum_type(name).expect("enum in PDB"),
            isf.enum_type(name).expect("enum in ISF"),
            "enum {name}"
        );
    }
}

#[test]
fn kernel_types_from_a_real_pdb_equal_the_isf_tables() {
    toolchain();
    for file in TABLES {
        let isf = table(file);
        let wanted: Vec<&str> = TYPES.iter().copied().filter(|t| isf.has_type(t)).collect();
        let request = PdbRequest::new("kds_layouts", &isf)
            .types(wanted.iter().copied())
            .enums([
                "_KWAIT_REASON",
                "_POOL_TYPE",
                "_MODE",
                "_EXCEPTION_DISPOSITION",
            ])
            .globals(GLOBALS)
            .functions(FUNCTIONS);
        let built = generate(&request).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            built.source.skipped.is_empty(),
            "{file}: skipped {:?}",
            built.source.skipped
        );
        for t in &wanted {
            assert!(built.source.types.contains(*t), "{file}: {t} emitted");
        }
        let pdb = load_pdb_file(&built.pdb).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pdb.identity(),
            Some(&built.identity),
            "{file}: RSDS names this PDB"
        );
        assert_eq!(pdb.pointer_size(), 8);
        let types: Vec<String> = built.source.types.iter().cloned().collect();
        let enums: Vec<String> = built.source.enums.iter().cloned().collect();
        assert!(types.len() > 50, "{file}: {} types", types.len());
        assert!(
            enums.contains(&"_KWAIT_REASON".to_string()),
            "{file}: enums {enums:?}"
        );
        assert_same_layouts(&isf, &pdb, &types, &enums);

        // Symbols: the linker's map is the reference, not our loader.
        let map = map_publics(&std::fs::read_to_string(&built.map).expect("map"));
        for name in GLOBALS.iter().chain(FUNCTIONS.iter()) {
            let want = map.get(*name).unwrap_or_else(|| panic!("{name} in map"));
            assert_eq!(pdb.symbol_rva(name).expect("symbol"), *want, "{name}");
        }
        let mut starts: Vec<u64> = map.values().copied().collect();
        starts.sort_unstable();
        for name in FUNCTIONS {
            let rva = map[name];
            let f = pdb
                .function_at(rva)
                .unwrap_or_else(|| panic!("{name} range"));
            assert_eq!(f.name, name);
            assert_eq!(f.rva, rva);
            assert!(f.len > 0 && f.contains(rva + f.len - 1));
            let next = starts.iter().copied().find(|&s| s > rva);
            if let Some(next) = next {
                assert!(rva + f.len <= next, "{name} ends before the next public");
            }
        }
    }
}

#[test]
fn every_type_of_a_kernel_table_round_trips() {
    toolchain();
    let isf = table(TABLES[1]);
    let mut types: Vec<String> = isf.type_names().map(str::to_string).collect();
    types.sort();
    let mut enums: Vec<String> = isf.enum_names().map(str::to_string).collect();
    enums.sort();
    let request = PdbRequest::new("kds_all", &isf)
        .types(types.clone())
        .enums(enums);
    let built = generate(&request).unwrap_or_else(|e| panic!("{e}"));
    // Every type is reproduced but those a C++ compiler cannot name (`<unnamed-enum-...>`)
    // and those with an `HRESULT` member (a PDB base type clang never emits).
    for (name, why) in &built.source.skipped {
        assert!(
            why.contains("is not a C identifier") || why.contains("`HRESULT` has no C spelling"),
            "{name}: {why}"
        );
    }
    eprintln!(
        "{} of {} types reproduced, {} enums; skipped: {:?}",
        built.source.types.len(),
        types.len(),
        built.source.enums.len(),
        built.source.skipped
    );
    assert!(
        built.source.skipped.len() < 20,
        "{:?}",
        built.source.skipped
    );
    assert!(built.source.types.len() + 20 > types.len());
    let pdb = load_pdb_file(&built.pdb).unwrap_or_else(|e| panic!("{e}"));
    let defined: Vec<String> = built.source.types.iter().cloned().collect();
    let enums: Vec<String> = built.source.enums.iter().cloned().collect();
    assert!(enums.len() > 250, "{} enums", enums.len());
    assert_same_layouts(&isf, &pdb, &defined, &enums);
}

#[test]
fn truncated_and_garbled_pdbs_are_errors_not_panics() {
    toolchain();
    let isf = table(TABLES[1]);
    let request = PdbRequest::new("kds_corrupt", &isf)
        .types(["_EPROCESS", "_HANDLE_TABLE_ENTRY"])
        .globals(GLOBALS)
        .functions(FUNCTIONS);
    let built = generate(&request).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&built.pdb).expect("pdb");
    let parts = kds_runtime::symbols::PdbParts::ALL;
    let origin = "copy.pdb";
    // Truncated at many lengths: never a panic; the error names the file.
    let mut errors = 0;
    for len in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
        match kds_runtime::symbols::parse_pdb(&bytes[..len], origin, origin, parts) {
            Ok(_) => {}
            Err(e) => {
                assert!(e.to_string().contains(origin), "{e}");
                errors += 1;
            }
        }
    }
    assert!(errors > 50, "{errors} truncated copies failed");
    // Garbled: bytes overwritten at pseudo-random places, deterministic.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..200 {
        let mut copy = bytes.clone();
        for _ in 0..(1 + round % 16) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % copy.len() as u64) as usize;
            copy[at] = (seed >> 32) as u8;
        }
        if let Err(e) = kds_runtime::symbols::parse_pdb(&copy, origin, origin, parts) {
            assert!(e.to_string().contains(origin), "{e}");
        }
    }
}

#[test]
fn x86_tables_round_trip_with_four_byte_pointers() {
    toolchain();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/symbols/x86");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("x86 tables").flatten() {
        let path = entry.path();
        if !path.to_string_lossy().ends_with(".json.xz") {
            continue;
        }
        let isf = load_isf_file(&path).expect("x86 table loads");
        let mut types: Vec<String> = isf.type_names().map(str::to_string).collect();
        types.sort();
        let mut enums: Vec<String> = isf.enum_names().map(str::to_string).collect();
        enums.sort();
        let request = PdbRequest::new("kds_x86", &isf)
            .types(types.clone())
            .enums(enums)
            .globals(["PsActiveProcessHead"])
            .functions(["KiSwapContext"])
            .x86(true);
        let built = generate(&request).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (name, why) in &built.source.skipped {
            assert!(
                why.contains("is not a C identifier")
                    || why.contains("`HRESULT` has no C spelling"),
                "{name}: {why}"
            );
        }
        assert!(built.source.types.len() + 20 > types.len());
        let pdb = load_pdb_file(&built.pdb).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pdb.pointer_size(), 4);
        let defined: Vec<String> = built.source.types.iter().cloned().collect();
        let enums: Vec<String> = built.source.enums.iter().cloned().collect();
        assert_same_layouts_as(&isf, &pdb, &defined, &enums, vtypes_names);
        // x86 C names are decorated with `_` in publics; the data symbol keeps the C name.
        let map = map_publics(&std::fs::read_to_string(&built.map).expect("map"));
        let rva = map["_PsActiveProcessHead"];
        assert_eq!(pdb.symbol_rva("_PsActiveProcessHead").unwrap(), rva);
        assert_eq!(pdb.symbol_rva("PsActiveProcessHead").unwrap(), rva);
        let f = pdb.function_at(map["_KiSwapContext"]).expect("range");
        assert_eq!(f.name, "KiSwapContext");
        checked += 1;
    }
    assert_eq!(checked, 2, "two x86 tables");
}

/// Every type and every symbol of a table, the symbols placed at their table RVAs: the PDB
/// gives back the table's RVA for every symbol and adds no public of its own.
#[test]
fn placed_symbols_keep_their_table_rvas() {
    toolchain();
    let isf = table("68A17FAF3012B7846079AEECDBE0A583-1.json.xz");
    let names: Vec<String> = isf.symbols().map(|(n, _)| n.to_string()).collect();
    let request = PdbRequest::new("ntkrnlmp", &isf)
        .types(isf.type_names().map(str::to_string).collect::<Vec<_>>())
        .enums(isf.enum_names().map(str::to_string).collect::<Vec<_>>())
        .globals(names.clone())
        .at_table_rvas(true);
    let built = generate(&request).expect("generates");
    let pdb = load_pdb_file(&built.pdb).expect("PDB loads");
    for name in &names {
        assert_eq!(pdb.try_symbol_rva(name), isf.try_symbol_rva(name), "{name}");
    }
    for (name, rva) in pdb.symbols().filter(|(n, _)| *n != "kds_anchors") {
        assert!(
            isf.symbols().any(|(_, r)| r == rva),
            "{name} at {rva:#x} is not a table RVA"
        );
    }
    let skipped: Vec<_> = built.source.skipped.iter().map(|s| &s.0).collect();
    for name in isf.type_names() {
        if !skipped.contains(&&name.to_string()) {
            assert_eq!(
                pdb.user_type(name).ok().map(|t| t.size),
                isf.user_type(name).ok().map(|t| t.size),
                "{name}"
            );
        }
    }
    eprintln!("skipped types: {:?}", built.source.skipped);
}
