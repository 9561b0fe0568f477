//! `kds info` on fixture dumps of every build and both dump layouts. The snapshots are
//! reviewed claims about correct output; the values in them are the fixture's truth, which
//! the assertions beside them check independently of the snapshot.

use kds_crashdump::CrashDump;
use kds_e2e::{fixture_dump, scratch_dir, symbol_dir_with, x64_tables};
use kds_fixture::dumpfile::DumpKind;
use kds_runtime::session::Session;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::target::{DumpTarget, Target};
use kds_stdlib::info::{collect, render_text, SymbolStatus};
use std::sync::Arc;

#[test]
fn info_on_every_build_and_layout() {
    let dir = scratch_dir("info_snapshots");
    for (name, table) in x64_tables() {
        let symbols = symbol_dir_with(&table, &dir.join(name));
        for (kind, suffix) in [(DumpKind::Full, "full"), (DumpKind::BitmapFull, "bitmap")] {
            let file = format!("{name}-{suffix}.dmp");
            let (fixture, path) = fixture_dump(&table, 7, kind, &dir, &file);
            let dump = CrashDump::open(&path).expect("dump opens");
            let target: Arc<dyn Target> = Arc::new(DumpTarget::from_dump(dump, file.clone()));
            let sympath = SymbolPath::parse(&symbols.display().to_string()).expect("path parses");
            let session = Session::open(target, sympath).expect("x64 session");
            let info = collect(&session, None);

            // Independent of the snapshot: what the builder put there.
            let t = &fixture.truth;
            let kernel = info.kernel.as_ref().expect("kernel found");
            assert_eq!(info.kernel_error, None);
            assert_eq!(kernel.base, t.kernel_base);
            assert_eq!(
                kernel.pdb.as_ref().map(|p| p.isf_stem()),
                Some(t.pdb.clone())
            );
            assert!(matches!(info.symbols, SymbolStatus::Loaded { .. }));
            assert_eq!(info.os.as_ref().and_then(|o| o.build), Some(t.build));
            assert_eq!(
                info.target.ps_active_process_head,
                Some(t.ps_active_process_head)
            );
            assert_eq!(
                info.bugcheck.as_ref().map(|b| b.code),
                Some(t.bugcheck_code)
            );

            let text = render_text(&info).replace(&symbols.display().to_string(), "<symbols>");
            insta::assert_snapshot!(format!("info-{name}-{suffix}"), text);
            let _ = std::fs::remove_file(&path);
        }
    }
}
