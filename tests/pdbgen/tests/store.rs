//! `kernel::load_symbols` loads a PDB found in a symbol store with kds's PDB loader.

use kds_pdbgen::{generate, require_toolchain, PdbRequest};
use kds_runtime::kernel::{load_symbols, SymbolLoadError};
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::symbols::{load_isf_file, PdbIdentity};
use std::path::PathBuf;

#[test]
fn a_pdb_in_a_symbol_store_loads_and_must_match_the_image() {
    if let Err(e) = require_toolchain() {
        panic!("{e}");
    }
    let isf =
        load_isf_file(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
            "../../../shared/symbols/ntkrnlmp.pdb/68A17FAF3012B7846079AEECDBE0A583-1.json.xz",
        ))
        .expect("shared table loads");
    let request = PdbRequest::new("kds_store", &isf)
        .types(["_EPROCESS"])
        .globals(["PsActiveProcessHead"]);
    let built = generate(&request).unwrap_or_else(|e| panic!("{e}"));
    let id = built.identity.clone();
    // <store>/<name>/<GUID><AGE>/<name>, as symbol servers lay it out.
    let store = built.dir.join("store");
    let dir = store.join(&id.name).join(id.store_key());
    std::fs::create_dir_all(&dir).expect("store dir");
    std::fs::copy(&built.pdb, dir.join(&id.name)).expect("copy pdb");
    let path = SymbolPath::parse(&store.display().to_string()).expect("symbol path");

    let loaded = load_symbols(&path, &id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.table.identity(), Some(&id));
    assert_eq!(
        loaded
            .table
            .offset_of("_EPROCESS", "ActiveProcessLinks")
            .unwrap(),
        isf.offset_of("_EPROCESS", "ActiveProcessLinks").unwrap()
    );
    assert!(loaded.table.try_symbol_rva("PsActiveProcessHead").is_some());

    // A PDB whose GUID-age differs from what the image names is refused.
    let wanted = PdbIdentity {
        age: id.age + 1,
        ..id.clone()
    };
    let dir = store.join(&id.name).join(wanted.store_key());
    std::fs::create_dir_all(&dir).expect("store dir");
    std::fs::copy(&built.pdb, dir.join(&id.name)).expect("copy pdb");
    let err = load_symbols(&path, &wanted).unwrap_err();
    assert!(matches!(err, SymbolLoadError::Mismatch { .. }), "{err}");

    // A corrupt PDB is an error naming the file.
    let dir = store.join(&id.name).join("0".repeat(32) + "1");
    std::fs::create_dir_all(&dir).expect("store dir");
    std::fs::write(
        dir.join(&id.name),
        b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0",
    )
    .expect("write");
    let zero = PdbIdentity {
        guid: kds_runtime::symbols::Guid::default(),
        age: 1,
        ..id.clone()
    };
    let err = load_symbols(&path, &zero).unwrap_err();
    assert!(matches!(err, SymbolLoadError::Pdb(_)), "{err}");
    assert!(err.to_string().contains(&id.name), "{err}");
}
