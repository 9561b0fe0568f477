//! The object model against the fixture's ground truth on every build: process, thread and
//! module rows, per-process address spaces, and list walks over torn and cyclic lists.

use kds_crashdump::CrashDump;
use kds_e2e::{fixture_dump, scratch_dir, symbol_dir_with, x64_tables};
use kds_fixture::dumpfile::DumpKind;
use kds_fixture::{Fixture, ProcessTruth};
use kds_runtime::mmu::X64;
use kds_runtime::model::{
    format_filetime, ListProblem, ModelContext, Object, Scope, Value, MODULE_FIELDS,
    PROCESS_FIELDS, THREAD_FIELDS,
};
use kds_runtime::session::Session;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::target::{CountingTarget, DumpTarget, Target};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// One fixture per build, written once as a bitmap dump of all used memory (user pages
/// included) and shared by every test of this binary.
struct Built {
    name: &'static str,
    table: PathBuf,
    fixture: Fixture,
    dump: PathBuf,
}

fn builds() -> &'static [Built] {
    static BUILDS: OnceLock<Vec<Built>> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let dir = scratch_dir("model");
        x64_tables()
            .into_iter()
            .map(|(name, table)| {
                let file = format!("{name}.dmp");
                let (fixture, dump) = fixture_dump(&table, 11, DumpKind::BitmapFull, &dir, &file);
                Built {
                    name,
                    table,
                    fixture,
                    dump,
                }
            })
            .collect()
    })
}

fn model_over(b: &Built, target: Arc<dyn Target>) -> Arc<ModelContext> {
    let dtb = target.identity().directory_table_base;
    ModelContext::new(
        target,
        &X64,
        dtb,
        Arc::new(b.fixture.table.clone()),
        b.fixture.truth.kernel_base,
    )
}

fn model(b: &Built) -> Arc<ModelContext> {
    let target: Arc<dyn Target> = Arc::new(DumpTarget::open(&b.dump).expect("dump opens"));
    model_over(b, target)
}

fn model_of_bytes(b: &Built, bytes: Vec<u8>) -> Arc<ModelContext> {
    let dump = CrashDump::from_bytes(bytes).expect("patched dump parses");
    model_over(
        b,
        Arc::new(DumpTarget::from_dump(dump, "patched.dmp".into())),
    )
}

fn int(v: u64) -> Value {
    Value::uint(v)
}

fn field(o: &Object, name: &str) -> Value {
    o.field(name)
        .unwrap_or_else(|e| panic!("{} field `{name}`: {e}", o.type_name()))
}

fn addr_of(v: &Value) -> u64 {
    match v {
        Value::Pointer(p) => p.address,
        other => panic!("expected a pointer, got {other:?}"),
    }
}

/// Truth strings that are empty are fields a process does not have (System): `Null`.
fn text_or_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::from(s)
    }
}

fn check_process(name: &str, row: &Object, t: &ProcessTruth) {
    let ctx = format!("{name} pid {}", t.pid);
    assert_eq!(row.address(), t.eprocess, "{ctx}");
    assert_eq!(field(row, "pid"), int(t.pid), "{ctx}");
    assert_eq!(field(row, "ppid"), int(t.ppid), "{ctx}");
    assert_eq!(
        field(row, "name"),
        Value::from(t.image_file_name.as_str()),
        "{ctx}"
    );
    assert_eq!(field(row, "threads"), int(t.threads.len() as u64), "{ctx}");
    assert_eq!(field(row, "create_time"), int(t.create_time), "{ctx}");
    assert_eq!(
        field(row, "command_line"),
        text_or_null(&t.command_line),
        "{ctx}"
    );
    assert_eq!(
        field(row, "image_path"),
        text_or_null(&t.image_path),
        "{ctx}"
    );
    assert_eq!(field(row, "dtb"), int(t.dtb), "{ctx}");
    assert_eq!(addr_of(&field(row, "peb")), t.peb, "{ctx}");
    assert_eq!(addr_of(&field(row, "address")), t.eprocess, "{ctx}");
    assert_eq!(field(row, "commit"), int(t.commit_charge), "{ctx}");
    assert_eq!(
        field(row, "session"),
        t.session_id.map_or(Value::Null, |s| int(u64::from(s))),
        "{ctx}"
    );
    // Windows 7 keeps `HandleCount`; later builds' tables are counted entry by entry.
    let expected_handles = if t.object_table != 0 {
        int(u64::from(t.handle_count))
    } else {
        Value::Null
    };
    assert_eq!(field(row, "handles"), expected_handles, "{ctx}");
    // The view uses the process's own address space.
    assert_eq!(row.space().dtb(), t.dtb, "{ctx}");
}

#[test]
fn process_rows_equal_truth_on_every_build() {
    for b in builds() {
        let model = model(b);
        let truth = &b.fixture.truth;
        let rows = model.processes().expect("processes");
        assert!(rows.warnings.is_empty(), "{}: {:?}", b.name, rows.warnings);
        assert_eq!(rows.rows.len(), truth.processes.len(), "{}", b.name);
        for (row, t) in rows.rows.iter().zip(&truth.processes) {
            check_process(b.name, row, t);
        }
        // Friendly names first, then every raw field of _EPROCESS.
        let names = rows.rows[0].field_names();
        assert_eq!(&names[..PROCESS_FIELDS.len()], PROCESS_FIELDS);
        assert!(names.iter().any(|n| n == "ActiveProcessLinks"));
        assert_eq!(
            field(&rows.rows[0], "UniqueProcessId").as_u64(),
            Some(truth.processes[0].pid)
        );
        // Raw names reach through the embedded Pcb.
        assert_eq!(
            field(&rows.rows[1], "DirectoryTableBase"),
            int(truth.processes[1].dtb)
        );
    }
}

#[test]
fn a_session_opens_a_model() {
    let b = &builds()[0];
    let dir = scratch_dir("model_session");
    let symbols = symbol_dir_with(&b.table, &dir);
    let target: Arc<dyn Target> = Arc::new(DumpTarget::open(&b.dump).expect("dump opens"));
    let sympath = SymbolPath::parse(&symbols.display().to_string()).expect("path parses");
    let session = Session::open(target, sympath).expect("session");
    let model = ModelContext::from_session(&session).expect("model of the session");
    assert_eq!(model.kernel_base(), b.fixture.truth.kernel_base);
    let rows = model.processes().expect("processes");
    assert_eq!(rows.rows.len(), b.fixture.truth.processes.len());
}

#[test]
fn user_pointers_follow_in_the_process_space() {
    for b in builds() {
        let model = model(b);
        let truth = &b.fixture.truth;
        // The dump header's DTB is the crashing processor's current process: take another.
        let header_dtb = model.kernel_space().dtb();
        let t = truth
            .processes
            .iter()
            .find(|p| p.peb != 0 && !p.command_line.is_empty() && p.dtb != header_dtb)
            .expect("a user process");
        let p = model.process(t.eprocess).expect("process view");
        // `p.Peb.ProcessParameters.CommandLine`, as the language writes it.
        let cmd = Value::Object(p.clone())
            .field("Peb")
            .and_then(|peb| peb.field("ProcessParameters"))
            .and_then(|pp| pp.field("CommandLine"))
            .expect("command line through the PEB");
        assert_eq!(cmd, Value::from(t.command_line.as_str()), "{}", b.name);
        let peb = field(&p, "peb");
        match &peb {
            Value::Pointer(ptr) => {
                assert_eq!(ptr.scope().map(|s| s.space().dtb()), Some(t.dtb));
            }
            other => panic!("peb is {other:?}"),
        }
        assert_eq!(
            peb.field("ImageBaseAddress").map(|v| addr_of(&v)).ok(),
            Some(t.image_base),
            "{}",
            b.name
        );
        // The same EPROCESS viewed in the header's space cannot read its user half.
        let kernel_view = Object::in_scope(model.kernel_scope(), "_EPROCESS", t.eprocess)
            .expect("kernel-space view");
        // (Same virtual addresses may be mapped there, to that process's own data.)
        let elsewhere = kernel_view.field("Peb.ProcessParameters.CommandLine");
        assert!(
            !matches!(&elsewhere, Ok(v) if *v == cmd),
            "{}: another process's space read {elsewhere:?}",
            b.name
        );
        // One space per DTB, shared.
        let again = model.process(t.eprocess).expect("process view");
        assert!(Arc::ptr_eq(p.space(), again.space()));
        assert!(Arc::ptr_eq(p.space(), &model.space_for(t.dtb)));
        // A _KPROCESS pointer (a thread's Tcb.Process) is viewed as its _EPROCESS.
        let threads = model.process_threads(&p).expect("threads");
        let owner = field(&threads.rows[0], "Tcb.Process");
        assert_eq!(
            owner.field("name").ok(),
            Some(Value::from(t.image_file_name.as_str()))
        );
        // A thread view reached from the kernel space moves to its process's space, and its
        // TEB is read there.
        let first = &t.threads[0];
        let thread = model.thread(first.ethread).expect("thread view");
        assert_eq!(thread.space().dtb(), t.dtb, "{}", b.name);
        let stack_base = field(&thread, "teb").field("NtTib.StackBase").expect("TEB");
        assert_eq!(addr_of(&stack_base), first.user_stack_base, "{}", b.name);
        let _: &Scope = p.scope();
    }
}

#[test]
fn thread_rows_equal_truth_on_every_build() {
    for b in builds() {
        let model = model(b);
        let truth = &b.fixture.truth;
        let table = &b.fixture.table;
        let states = table.enum_type("_KTHREAD_STATE").ok();
        let reasons = table.enum_type("_KWAIT_REASON").expect("wait reasons");
        let tick_100ns = b.fixture.kernel.tick_100ns;
        let processes = model.processes().expect("processes");
        let mut total = 0;
        for (p, pt) in processes.rows.iter().zip(&truth.processes) {
            let rows = model.process_threads(p).expect("threads of a process");
            assert!(rows.warnings.is_empty(), "{:?}", rows.warnings);
            assert_eq!(
                rows.rows.len(),
                pt.threads.len(),
                "{} pid {}",
                b.name,
                pt.pid
            );
            total += rows.rows.len();
            for (row, t) in rows.rows.iter().zip(&pt.threads) {
                let ctx = format!("{} tid {}", b.name, t.tid);
                assert_eq!(row.address(), t.ethread, "{ctx}");
                assert_eq!(field(row, "tid"), int(t.tid), "{ctx}");
                assert_eq!(field(row, "pid"), int(pt.pid), "{ctx}");
                let process = field(row, "process");
                assert_eq!(process.field("pid").ok(), Some(int(pt.pid)), "{ctx}");
                let state = field(row, "state");
                let Value::Enum(state) = state else {
                    panic!("{ctx}: state is {state:?}");
                };
                assert_eq!(state.value, i64::from(t.state), "{ctx}");
                let state_name = state.name.clone().expect("state has a name");
                if let Some(e) = states {
                    assert_eq!(Some(state_name.as_str()), e.name_of(state.value), "{ctx}");
                }
                let expected_state = match t.state {
                    1 => "Ready",
                    2 => "Running",
                    5 => "Waiting",
                    other => panic!("{ctx}: fixture state {other}"),
                };
                assert_eq!(state_name, expected_state, "{ctx}");
                let reason = field(row, "wait_reason");
                let Value::Enum(reason) = reason else {
                    panic!("{ctx}: wait_reason is {reason:?}");
                };
                assert_eq!(reason.value, i64::from(t.wait_reason), "{ctx}");
                assert_eq!(
                    reason.name.as_deref(),
                    reasons.name_of(reason.value),
                    "{ctx}"
                );
                // Wait times from the truth's tick numbers: 32-bit WaitTime, ms from the
                // clock tick length.
                let ticks = (truth.tick_count as u32).wrapping_sub(t.wait_tick as u32) as u64;
                assert_eq!(field(row, "wait_ticks"), int(ticks), "{ctx}");
                assert_eq!(
                    field(row, "wait_ms"),
                    int(ticks * tick_100ns / 10_000),
                    "{ctx}"
                );
                assert_eq!(addr_of(&field(row, "teb")), t.teb, "{ctx}");
                assert_eq!(
                    addr_of(&field(row, "start_address")),
                    t.start_address,
                    "{ctx}"
                );
                assert_eq!(
                    addr_of(&field(row, "win32_start_address")),
                    t.win32_start_address,
                    "{ctx}"
                );
                assert_eq!(field(row, "priority"), int(u64::from(t.priority)), "{ctx}");
                assert_eq!(
                    field(row, "base_priority"),
                    int(u64::from(t.base_priority)),
                    "{ctx}"
                );
                assert_eq!(
                    field(row, "kernel_stack_resident"),
                    Value::Bool(t.kernel_stack_resident),
                    "{ctx}"
                );
                // The language's comparisons on rows.
                assert!(field(row, "state").equals(&Value::from(expected_state.to_lowercase())));
            }
        }
        let all = model.threads().expect("all threads");
        assert_eq!(all.rows.len(), total, "{}", b.name);
        assert!(total >= 200, "{}: {total} threads", b.name);
        assert_eq!(
            &all.rows[0].field_names()[..THREAD_FIELDS.len()],
            THREAD_FIELDS
        );
        let clock = model.clock().expect("clock");
        assert_eq!(clock.tick_count, truth.tick_count, "{}", b.name);
    }
}

#[test]
fn kernel_and_user_modules_equal_truth() {
    for b in builds() {
        let model = model(b);
        let truth = &b.fixture.truth;
        let rows = model.kernel_modules().expect("kernel modules");
        assert!(rows.warnings.is_empty(), "{:?}", rows.warnings);
        assert_eq!(rows.rows.len(), truth.modules.len(), "{}", b.name);
        for (row, m) in rows.rows.iter().zip(&truth.modules) {
            check_module(b.name, row, m);
        }
        assert_eq!(
            &rows.rows[0].field_names()[..MODULE_FIELDS.len()],
            MODULE_FIELDS
        );
        let processes = model.processes().expect("processes");
        let mut checked = 0;
        for (p, pt) in processes.rows.iter().zip(&truth.processes) {
            let mods = model.process_modules(p).expect("user modules");
            assert!(mods.warnings.is_empty(), "{:?}", mods.warnings);
            assert_eq!(
                mods.rows.len(),
                pt.modules.len(),
                "{} pid {}",
                b.name,
                pt.pid
            );
            for (row, m) in mods.rows.iter().zip(&pt.modules) {
                check_module(b.name, row, m);
                assert_eq!(row.space().dtb(), pt.dtb);
            }
            checked += usize::from(!pt.modules.is_empty());
        }
        assert!(checked > 30, "{}: {checked} processes with modules", b.name);
    }
}

fn check_module(name: &str, row: &Object, m: &kds_fixture::ModuleTruth) {
    let ctx = format!("{name} {}", m.name);
    assert_eq!(row.address(), m.entry, "{ctx}");
    assert_eq!(field(row, "name"), Value::from(m.name.as_str()), "{ctx}");
    assert_eq!(field(row, "path"), Value::from(m.path.as_str()), "{ctx}");
    assert_eq!(addr_of(&field(row, "base")), m.base, "{ctx}");
    assert_eq!(field(row, "size"), int(m.size), "{ctx}");
    assert_eq!(addr_of(&field(row, "end")), m.base + m.size, "{ctx}");
}

/// The dump file offset of the kernel virtual address `va`.
fn file_offset(b: &Built, bytes: &[u8], va: u64) -> usize {
    let physical = b
        .fixture
        .machine
        .translate(b.fixture.machine.kernel_dtb, va)
        .expect("mapped in the kernel");
    let dump = CrashDump::from_bytes(bytes.to_vec()).expect("dump parses");
    let page = dump.page_offset(physical >> 12).expect("page in the dump");
    usize::try_from(page + (physical & 0xFFF)).expect("offset fits")
}

fn links_of(b: &Built, p: &ProcessTruth) -> u64 {
    p.eprocess
        + b.fixture
            .table
            .offset_of("_EPROCESS", "ActiveProcessLinks")
            .expect("links")
}

fn patched(b: &Built, original: &[u8], at: u64, value: u64) -> Vec<u8> {
    let flink = b
        .fixture
        .table
        .offset_of("_LIST_ENTRY", "Flink")
        .expect("Flink");
    let off = file_offset(b, original, at + flink);
    let mut bytes = original.to_vec();
    bytes[off..off + 8].copy_from_slice(&value.to_le_bytes());
    bytes
}

fn pids(rows: &[Object]) -> Vec<u64> {
    rows.iter()
        .map(|r| field(r, "pid").as_u64().expect("pid"))
        .collect()
}

#[test]
fn torn_and_cyclic_process_lists_stop_with_warnings() {
    for b in builds() {
        let truth = &b.fixture.truth;
        let original = std::fs::read(&b.dump).expect("dump bytes");
        let k = 5;
        let before: Vec<u64> = truth.processes[..=k].iter().map(|p| p.pid).collect();
        let entry = links_of(b, &truth.processes[k]);

        // A Flink into unmapped memory: the entries before it and a warning naming it.
        let bad = 0xFFFF_8F00_DEAD_0000;
        let model = model_of_bytes(b, patched(b, &original, entry, bad));
        let rows = model.processes().expect("processes");
        assert_eq!(pids(&rows.rows), before, "{}", b.name);
        assert_eq!(rows.warnings.len(), 1, "{}", b.name);
        let w = &rows.warnings[0];
        assert!(
            matches!(&w.problem, ListProblem::Unreadable { entry: e, linked_from, .. }
                if *e == bad && *linked_from == entry),
            "{}: {w}",
            b.name
        );
        assert_eq!(w.entries_before, k + 1);
        assert!(w.to_string().contains("ffff8f00`dead0000"), "{w}");

        // A Flink that skips an entry: that entry's Blink does not point back (torn).
        let skipped = links_of(b, &truth.processes[k + 2]);
        let model = model_of_bytes(b, patched(b, &original, entry, skipped));
        let rows = model.processes().expect("processes");
        assert_eq!(pids(&rows.rows), before, "{}", b.name);
        let w = &rows.warnings[0];
        assert_eq!(
            w.problem,
            ListProblem::Torn {
                entry,
                flink: skipped,
                back: links_of(b, &truth.processes[k + 1]),
            },
            "{}",
            b.name
        );
        let text = w.to_string();
        let shown = format!("{:08x}`{:08x}", entry >> 32, entry & 0xFFFF_FFFF);
        assert!(text.contains("torn") && text.contains(&shown), "{text}");

        // A Flink back to an earlier entry: the walk ends, with a cycle warning.
        let earlier = links_of(b, &truth.processes[2]);
        let model = model_of_bytes(b, patched(b, &original, entry, earlier));
        let rows = model.processes().expect("processes");
        assert_eq!(pids(&rows.rows), before, "{}", b.name);
        assert_eq!(
            rows.warnings[0].problem,
            ListProblem::Cycle {
                entry,
                flink: earlier
            },
            "{}",
            b.name
        );
        // Threads of the processes read still come.
        assert!(!model.threads().expect("threads").rows.is_empty());
    }
}

#[test]
fn counting_target_counts_what_a_query_reads() {
    let b = &builds()[1];
    let counting = Arc::new(CountingTarget::new(Arc::new(
        DumpTarget::open(&b.dump).expect("dump opens"),
    )));
    let model = model_over(b, counting.clone());
    assert_eq!(counting.stats().reads, 0);
    let rows = model.processes().expect("processes");
    let walked = counting.stats();
    assert!(walked.reads > 0 && walked.bytes > 0);
    // Reading one friendly field of every row reads that field, not the structures.
    for r in &rows.rows {
        field(r, "pid");
    }
    let after = counting.stats();
    let per_row = (after.bytes - walked.bytes) / rows.rows.len() as u64;
    assert!(per_row <= 8 + 4 * 8, "{per_row} bytes per pid");
    // A second read of the same field is remembered.
    for r in &rows.rows {
        field(r, "pid");
    }
    assert_eq!(counting.stats().reads, after.reads);
}

#[test]
fn rows_serialize_and_display() {
    let b = &builds()[0];
    let model = model(b);
    let rows = model.processes().expect("processes");
    let t = &b.fixture.truth.processes[3];
    let p = &rows.rows[3];
    let record = p
        .record(&["name", "pid", "address", "create_time"])
        .expect("record");
    let json = serde_json::to_value(Value::Record(record)).expect("json");
    assert_eq!(json["name"], t.image_file_name.as_str());
    assert_eq!(json["pid"], t.pid);
    assert_eq!(json["address"], format!("{:#x}", t.eprocess));
    assert_eq!(
        format_filetime(t.create_time).len(),
        "2024-01-01 00:00:00.000".len()
    );
    assert_eq!(
        Value::Object(p.clone()).to_string(),
        format!(
            "{:08x}`{:08x} [Type: _EPROCESS]",
            t.eprocess >> 32,
            t.eprocess & 0xFFFF_FFFF
        )
    );
}

#[test]
fn handle_table_walks_find_every_truth_handle_on_every_build() {
    use kds_runtime::model::handles::{walk_handle_table, HandleTableLayout};
    for b in builds() {
        let model = model(b);
        let layout = HandleTableLayout::from_table(&b.fixture.table).expect("layout");
        let space = model.kernel_space();
        let mut levels = std::collections::BTreeSet::new();
        for t in b
            .fixture
            .truth
            .processes
            .iter()
            .filter(|p| p.object_table != 0)
        {
            let mut seen = Vec::new();
            let walk = walk_handle_table(space, &layout, t.object_table, |e| {
                seen.push((e.handle, e.object_header));
            })
            .unwrap_or_else(|e| panic!("{} pid {}: {e}", b.name, t.pid));
            let truth: Vec<(u64, u64)> = t.handles.iter().map(|h| (h.handle, h.header)).collect();
            assert_eq!(seen, truth, "{} pid {}", b.name, t.pid);
            assert_eq!(walk.in_use, u64::from(t.handle_count));
            levels.insert(walk.levels);
        }
        assert_eq!(levels.into_iter().collect::<Vec<_>>(), [0, 1], "{}", b.name);
    }
}

#[test]
fn an_unreadable_handle_page_makes_the_count_unknown() {
    for b in builds() {
        if b.fixture
            .table
            .field("_HANDLE_TABLE", "HandleCount")
            .is_ok()
        {
            continue; // Windows 7 reads its counter, not the pages.
        }
        let original = std::fs::read(&b.dump).expect("dump");
        let code_at = b
            .fixture
            .table
            .offset_of("_HANDLE_TABLE", "TableCode")
            .unwrap();
        let t = b
            .fixture
            .truth
            .processes
            .iter()
            .find(|p| p.handle_count > 1000)
            .expect("a process with a level-1 table");
        // The first pointer of the level-1 page now names a page no one mapped: 8 GiB into
        // the paged pool's 16 GiB region, far past anything allocated.
        let model = model(b);
        let code = model
            .kernel_space()
            .read_u64(t.object_table + code_at)
            .expect("TableCode");
        assert_eq!(code & 3, 1);
        let nowhere = b.fixture.kernel.paged_pool.cursor() + 0x2_0000_0000;
        let patched = patched(b, &original, code & !3, nowhere);
        let model = model_of_bytes(b, patched);
        let rows = model.processes().expect("processes");
        let row = rows
            .rows
            .iter()
            .find(|r| r.address() == t.eprocess)
            .expect("the process");
        assert_eq!(field(row, "handles"), Value::Null, "{}", b.name);
        // The others still count.
        let other = rows
            .rows
            .iter()
            .zip(&b.fixture.truth.processes)
            .find(|(_, p)| p.object_table != 0 && p.pid != t.pid)
            .expect("another process");
        assert_eq!(
            field(other.0, "handles"),
            int(u64::from(other.1.handle_count))
        );
    }
}
