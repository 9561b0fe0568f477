//! `!vm` on fixture dumps of every shipped build: each counter against the fixture's truth,
//! the process order, and the text (snapshots, reviewed).

use super::{collect, render_text, Counter, PageFileName, VmReport, FLAG_NO_PROCESSES};
use kds_fixture::dumpfile::{write_dump, DumpKind};
use kds_fixture::{build, FixtureSpec, GroundTruth};
use kds_runtime::model::ModelContext;
use kds_runtime::session::Session;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::target::{DumpTarget, Target};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The shipped x64 kernel tables: (short name, table stem).
const BUILDS: [(&str, &str); 3] = [
    ("win10_19041", "68A17FAF3012B7846079AEECDBE0A583-1"),
    ("win2022_20348", "C339CA26E8E26BB7F4C9BB7B8244A46A-1"),
    ("win7_7601", "339E74133576439CBCDF7E0229DA3773-1"),
];

fn symbols_dir() -> PathBuf {
    std::env::var_os("KDS_SHARED_SYMBOLS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/symbols"),
        PathBuf::from,
    )
}

struct Case {
    name: &'static str,
    truth: GroundTruth,
    report: VmReport,
}

/// Each build's hung server written as a dump, opened through a session like `kds` does,
/// and `!vm` collected from its model: once per test binary.
fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kds-stdlib-vm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cases = BUILDS
            .iter()
            .map(|(name, stem)| {
                let table = symbols_dir()
                    .join("ntkrnlmp.pdb")
                    .join(format!("{stem}.json.xz"));
                let fixture = build(&FixtureSpec::hung_server(&table, 7)).expect("fixture builds");
                let path = dir.join(format!("{name}.dmp"));
                write_dump(&fixture, &path, DumpKind::BitmapFull).expect("dump written");
                let model = model_for(&path);
                let report = collect(&model).expect("!vm collects");
                Case {
                    name,
                    truth: fixture.truth,
                    report,
                }
            })
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        cases
    })
}

fn model_for(dump: &std::path::Path) -> Arc<ModelContext> {
    let crash_dump = kds_crashdump::CrashDump::open(dump).expect("dump opens");
    let target: Arc<dyn Target> = Arc::new(DumpTarget::from_dump(crash_dump, "fixture".into()));
    let sympath = SymbolPath::parse(&symbols_dir().display().to_string()).expect("symbol path");
    let session = Session::open(target, sympath).expect("session");
    ModelContext::from_session(&session).expect("model")
}

/// A counter is what the truth says was written, or has no source where nothing was.
fn check(case: &str, label: &str, counter: &Counter, truth: Option<u64>) {
    match truth {
        Some(v) => assert_eq!(
            counter.pages,
            Some(v),
            "{case}: {label} from {:?} ({:?})",
            counter.source,
            counter.error
        ),
        None => assert!(
            !counter.has_source(),
            "{case}: {label} has a source ({:?}) but the fixture wrote none",
            counter.source
        ),
    }
}

#[test]
fn every_counter_is_the_fixtures() {
    for c in cases() {
        let (r, m, n) = (&c.report, &c.truth.memory, c.name);
        assert!(r.warnings.is_empty(), "{n}: {:?}", r.warnings);
        check(n, "physical", &r.physical_memory, Some(m.physical_pages));
        check(n, "available", &r.available_pages, m.available_pages);
        check(
            n,
            "resavail",
            &r.resident_available_pages,
            m.resident_available_pages,
        );
        check(n, "locked IO", &r.locked_io_pages, None);
        check(n, "free PTEs", &r.free_system_ptes, m.free_system_ptes);
        check(n, "modified", &r.modified_pages, m.modified_pages);
        check(n, "modified PF", &r.modified_pf_pages, m.modified_pf_pages);
        check(
            n,
            "modified no write",
            &r.modified_no_write_pages,
            m.modified_no_write_pages,
        );
        check(
            n,
            "nonpaged usage",
            &r.nonpaged_pool_usage,
            m.nonpaged_pool_pages,
        );
        check(n, "nonpaged NX", &r.nonpaged_pool_nx_usage, None);
        check(
            n,
            "nonpaged max",
            &r.nonpaged_pool_max,
            m.nonpaged_pool_max_pages,
        );
        let pools: Vec<Option<u64>> = r.paged_pools.iter().map(|p| p.pages).collect();
        let truth_pools: Vec<Option<u64>> = m.paged_pools.iter().copied().map(Some).collect();
        assert_eq!(pools, truth_pools, "{n}: paged pools");
        check(n, "paged usage", &r.paged_pool_usage, m.paged_pool_pages);
        check(n, "paged max", &r.paged_pool_max, m.paged_pool_max_pages);
        check(n, "session commit", &r.session_commit, m.session_commit);
        check(n, "shared commit", &r.shared_commit, m.shared_commit);
        check(n, "special pool", &r.special_pool, m.special_pool_pages);
        check(
            n,
            "shared process",
            &r.shared_process,
            m.shared_process_commit,
        );
        check(
            n,
            "paged pool commit",
            &r.paged_pool_commit,
            m.paged_pool_commit,
        );
        check(n, "driver commit", &r.driver_commit, m.driver_commit);
        check(n, "committed", &r.committed_pages, m.committed_pages);
        check(n, "commit limit", &r.commit_limit, m.commit_limit);
        assert_eq!(r.total_private, m.total_private, "{n}: total private");
    }
}

#[test]
fn page_files_are_the_fixtures() {
    for c in cases() {
        let got: Vec<_> = c
            .report
            .page_files
            .iter()
            .map(|p| {
                (
                    match &p.name {
                        PageFileName::Named(n) => n.clone(),
                        other => format!("{other:?}"),
                    },
                    p.size,
                    p.free_space,
                    p.minimum,
                    p.maximum,
                )
            })
            .collect();
        let want: Vec<_> = c
            .truth
            .memory
            .page_files
            .iter()
            .map(|p| (p.name.clone(), p.size, p.free, p.minimum, p.maximum))
            .collect();
        assert_eq!(got, want, "{}", c.name);
        assert!(!want.is_empty(), "{}: the fixture has a page file", c.name);
    }
}

#[test]
fn processes_are_sorted_by_private_pages() {
    for c in cases() {
        let mut want: Vec<(u64, String, u64)> = c
            .truth
            .processes
            .iter()
            .map(|p| (p.pid, p.image_file_name.clone(), p.commit_charge))
            .collect();
        want.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        let got: Vec<(u64, String, u64)> = c
            .report
            .processes
            .iter()
            .map(|p| (p.pid, p.image.clone(), p.pages))
            .collect();
        assert_eq!(got, want, "{}", c.name);
    }
}

#[test]
fn flag_1_leaves_the_processes_out() {
    for c in cases() {
        let all = render_text(&c.report, 0);
        let short = render_text(&c.report, FLAG_NO_PROCESSES);
        assert!(all.contains("\tTotal Private:"));
        assert!(!short.contains("Total Private"), "{}", c.name);
        let first = &c.report.processes[0];
        assert!(all.contains(&format!("\t{:04x} {:<15} ", first.pid, first.image)));
        assert!(!short.contains(&format!("\t{:04x} {} ", first.pid, first.image)));
        assert!(
            all.starts_with(&short),
            "{}: the counters come first",
            c.name
        );
    }
}

#[test]
fn report_serializes() {
    for c in cases() {
        let json = serde_json::to_value(&c.report).expect("serializes");
        assert_eq!(
            json["physical_memory"]["pages"],
            serde_json::json!(c.truth.memory.physical_pages)
        );
    }
}

#[test]
fn text_snapshots() {
    for c in cases() {
        insta::assert_snapshot!(format!("vm-{}", c.name), render_text(&c.report, 0));
    }
}

#[test]
fn missing_counters_print_no_line_and_unreadable_ones_say_so() {
    let mut report = VmReport {
        physical_memory: Counter {
            pages: Some(0x4000),
            source: Some("nt!MmNumberOfPhysicalPages".into()),
            error: None,
        },
        ..VmReport::default()
    };
    report.available_pages = Counter {
        pages: None,
        source: Some("nt!MmAvailablePages".into()),
        error: Some("page not captured".into()),
    };
    let text = render_text(&report, FLAG_NO_PROCESSES);
    assert_eq!(
        text,
        "\n*** Virtual Memory Usage ***\n\
         \tPhysical Memory:       16384 (     65536 Kb)\n\
         \tunable to get nt!MmAvailablePages: page not captured\n\n"
    );
}

#[test]
fn a_table_without_memory_counters_is_an_error() {
    use kds_runtime::mmu::X64;
    use kds_runtime::symbols::SymbolTable;
    use kds_runtime::target::MemoryTarget;
    let target: Arc<dyn Target> = Arc::new(MemoryTarget::x64(0x10));
    let model = ModelContext::new(target, &X64, 0x10_000, Arc::new(SymbolTable::default()), 0);
    assert!(matches!(collect(&model), Err(super::VmError::NoCounters)));
}

#[test]
fn an_unwalkable_process_list_is_said_and_the_counters_stay() {
    let mut report = cases()[0].report.clone();
    report.processes.clear();
    report.total_private = 0;
    report.processes_error = Some("cannot find `PsActiveProcessHead`".into());
    let text = render_text(&report, 0);
    assert!(text.contains("\tCommit limit:"));
    assert!(text.ends_with(
        "\nProcessCommitUsage could not be calculated: cannot find `PsActiveProcessHead`\n"
    ));
    assert!(!text.contains("Total Private"));
}

/// Where each counter came from, per build: decided by the table, never by the build.
#[test]
fn sources_snapshots() {
    for c in cases() {
        let r = &c.report;
        let mut lines = Vec::new();
        let mut add = |label: &str, counter: &Counter| {
            lines.push(format!(
                "{label:<22} {}",
                counter
                    .source
                    .as_deref()
                    .unwrap_or("(no source in this table)")
            ));
        };
        add("physical", &r.physical_memory);
        add("available", &r.available_pages);
        add("resavail", &r.resident_available_pages);
        add("locked IO", &r.locked_io_pages);
        add("free system PTEs", &r.free_system_ptes);
        add("modified", &r.modified_pages);
        add("modified PF", &r.modified_pf_pages);
        add("modified no write", &r.modified_no_write_pages);
        add("nonpaged usage", &r.nonpaged_pool_usage);
        add("nonpaged NX usage", &r.nonpaged_pool_nx_usage);
        add("nonpaged max", &r.nonpaged_pool_max);
        for pool in &r.paged_pools {
            add("paged pool", pool);
        }
        add("paged usage", &r.paged_pool_usage);
        add("paged max", &r.paged_pool_max);
        add("session commit", &r.session_commit);
        add("shared commit", &r.shared_commit);
        add("special pool", &r.special_pool);
        add("shared process", &r.shared_process);
        add("paged pool commit", &r.paged_pool_commit);
        add("driver commit", &r.driver_commit);
        add("committed", &r.committed_pages);
        add("commit limit", &r.commit_limit);
        lines.push(format!(
            "{:<22} {}",
            "page files",
            r.page_files_source.as_deref().unwrap_or("(none)")
        ));
        insta::assert_snapshot!(format!("vm-sources-{}", c.name), lines.join("\n"));
    }
}

/// Target data that lies (an unmapped page file pointer, an absurd pool count) costs the
/// counters it feeds, named, and nothing else.
#[test]
fn bad_target_data_is_reported_not_believed() {
    let (name, stem) = BUILDS[2];
    let table = symbols_dir()
        .join("ntkrnlmp.pdb")
        .join(format!("{stem}.json.xz"));
    let mut fixture = build(&FixtureSpec::hung_server(&table, 7)).expect("fixture builds");
    let kd = fixture.machine.kernel_dtb;
    let global = |f: &kds_fixture::Fixture, n: &str| {
        f.kernel.base + f.table.symbol_rva(n).expect("Windows 7 has it")
    };
    let paging_file = global(&fixture, "MmPagingFile");
    let pools = global(&fixture, "ExpNumberOfPagedPools");
    fixture
        .machine
        .write_virt(kd, paging_file, &0xFFFF_F8A0_DEAD_0000u64.to_le_bytes())
        .expect("MmPagingFile is mapped");
    fixture
        .machine
        .write_virt(kd, pools, &100_000u32.to_le_bytes())
        .expect("ExpNumberOfPagedPools is mapped");
    let dir = std::env::temp_dir().join(format!("kds-stdlib-vm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}-bad.dmp"));
    write_dump(&fixture, &path, DumpKind::BitmapFull).expect("dump written");
    let report = collect(&model_for(&path)).expect("!vm still collects");
    let _ = std::fs::remove_dir_all(&dir);

    assert!(report.page_files.is_empty());
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("page file 0: ")),
        "{:?}",
        report.warnings
    );
    assert_eq!(report.paged_pool_usage.pages, None);
    assert!(report.paged_pools.is_empty());
    let why = report.paged_pool_usage.error.clone().unwrap_or_default();
    assert!(why.contains("not believable"), "{why}");
    // Everything else is still read.
    assert_eq!(
        report.available_pages.pages,
        fixture.truth.memory.available_pages
    );
    let text = render_text(&report, FLAG_NO_PROCESSES);
    assert!(text.contains("\tunable to get nt!ExpPagedPoolDescriptor: "));
    assert!(text.contains("WARNING: page file 0: "));
    assert!(!text.contains("Page File:"));
    // The kernel says it has one: not "NO PAGING FILE".
    assert_eq!(report.number_of_paging_files, Some(1));
    assert!(!text.contains("NO PAGING FILE"));
}
