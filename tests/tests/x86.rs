//! x86 targets end to end: the fixture's 32-bit machines (Windows 10 with PAE, Windows 7
//! without) written as 32-bit crash dumps and raw images, opened by kds with the table the
//! fixture wrote (`-y <dir>`), and every value checked against the fixture's truth.
//!
//! Most checks produce what `kds info -z <dump> -y <dir>` and
//! `kds run -c "!process 0 0; lm" -z <dump> -y <dir>` print in process, by the same code the
//! binary runs (`kds_stdlib::info::collect` + `render_text`, the interpreter);
//! [`the_kds_binary_reads_the_dumps`] runs the binary itself.

use kds_e2e::{scratch_dir, x86_fixture_dump, x86_tables};
use kds_exec::OutputItem;
use kds_fixture::dumpfile::DumpKind;
use kds_fixture::{Fixture, ProcessTruth};
use kds_runtime::model::ModelContext;
use kds_runtime::session::Session;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::target::{DumpTarget, SnapshotTarget, Target};
use std::path::Path;
use std::sync::Arc;

const SEED: u64 = 5;

fn session_of(target: Arc<dyn Target>, symbols: &Path) -> Session {
    let sympath = SymbolPath::parse(&symbols.display().to_string()).expect("symbol path");
    Session::open(target, sympath).expect("session opens")
}

fn dump_session(dump: &Path, symbols: &Path) -> Session {
    let target: Arc<dyn Target> = Arc::new(DumpTarget::open(dump).expect("32-bit dump opens"));
    session_of(target, symbols)
}

/// What `kds info` prints.
fn info_text(session: &Session, dump: &Path) -> String {
    let size = std::fs::metadata(dump).map(|m| m.len()).ok();
    let info = kds_stdlib::info::collect(session, size);
    kds_stdlib::info::render_text(&info)
}

/// What `kds run -c <commands>` prints, command by command.
fn run_commands(session: &Session, commands: &str) -> Vec<(String, String)> {
    let model = ModelContext::from_session(session).expect("model of the x86 target");
    let mut s = kds_e2e::Session::new(model);
    s.run(commands)
        .into_iter()
        .filter_map(|i| match i {
            OutputItem::Command { command, text, .. } => Some((command, text)),
            _ => None,
        })
        .collect()
}

fn output_of<'a>(outputs: &'a [(String, String)], command: &str) -> &'a str {
    outputs
        .iter()
        .find(|(c, _)| c == command)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("{command} ran: {outputs:?}"))
}

/// Each bitmap dump of each x86 table, with its fixture and table directory.
fn each_x86_dump(test: &str, kind: DumpKind, case: impl Fn(&str, &Fixture, &Path, &Path)) {
    kds_e2e::each_x86_fixture(test, SEED, kind, case);
}

fn pae(fixture: &Fixture) -> bool {
    fixture.x86_table.as_ref().is_some_and(|t| t.pae)
}

#[test]
fn the_dump_opens_as_x86_with_the_header_the_machine_has() {
    each_x86_dump("header", DumpKind::BitmapFull, |name, f, dump, _| {
        let target = DumpTarget::open(dump).expect("dump opens");
        let id = target.identity();
        let t = &f.truth;
        assert_eq!(
            id.arch,
            kds_runtime::target::Arch::X86 { pae: pae(f) },
            "{name}"
        );
        assert_eq!(id.directory_table_base, t.kernel_dtb, "{name}");
        assert_eq!(id.processor_count, t.processor_count, "{name}");
        assert_eq!(
            id.ps_loaded_module_list,
            Some(t.ps_loaded_module_list),
            "{name}"
        );
        assert_eq!(
            id.ps_active_process_head,
            Some(t.ps_active_process_head),
            "{name}"
        );
        assert_eq!(
            id.kd_debugger_data_block,
            Some(t.kd_debugger_data_block),
            "{name}"
        );
        let raw = kds_crashdump::CrashDump::open(dump).expect("dump parses");
        assert_eq!(raw.bitness(), kds_crashdump::Bitness::Bits32, "{name}");
        assert_eq!(raw.pae_enabled(), Some(pae(f)), "{name}");
    });
}

#[test]
fn kds_info_names_x86_the_kernel_and_the_bugcheck() {
    each_x86_dump("info", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let session = dump_session(dump, symbols);
        let text = info_text(&session, dump);
        let t = &f.truth;
        let arch = if pae(f) { "x86 (PAE)" } else { "x86" };
        let expect = [
            format!("Kernel Version {}", t.build),
            "MP (4 procs) Free x86 compatible\n".to_string(),
            format!(
                "Kernel base = 0x{:08x} PsLoadedModuleList = 0x{:08x}",
                t.kernel_base, t.ps_loaded_module_list
            ),
            format!("  {:<22}{arch}\n", "Architecture"),
            format!("  {:<22}{:08x}\n", "DirectoryTableBase", t.kernel_dtb),
            format!(
                "  {:<22}{:08x}\n",
                "PsActiveProcessHead", t.ps_active_process_head
            ),
            format!(
                "  {:<22}{:08x}\n",
                "KdDebuggerDataBlock", t.kd_debugger_data_block
            ),
            "MANUALLY_INITIATED_CRASH (e2)".to_string(),
        ];
        for line in expect {
            assert!(text.contains(&line), "{name}: no {line:?} in\n{text}");
        }
    });
}

/// `!process 0 0`'s block of `p`: `PROCESS <8 digits>`, its Cid, Peb, ParentCid, raw DirBase
/// (with PAE the PDPT's address, e.g. 1f9020) and image name.
fn check_process_block(name: &str, text: &str, p: &ProcessTruth) {
    let header = format!("PROCESS {:08x}", p.eprocess);
    let block = text
        .split("PROCESS ")
        .map(|b| format!("PROCESS {b}"))
        .find(|b| b.starts_with(&header))
        .unwrap_or_else(|| panic!("{name}: no {header} in\n{text}"));
    for want in [
        format!("Cid: {:04x}", p.pid),
        format!("Peb: {:08x}", p.peb),
        format!("ParentCid: {:04x}", p.ppid),
        format!("DirBase: {:08x}", p.dtb),
        format!("ObjectTable: {:08x}", p.object_table),
        format!("Image: {}", p.image_file_name),
    ] {
        assert!(
            block.contains(&want),
            "{name}: {} ({}): no {want:?} in\n{block}",
            p.image_file_name,
            p.pid
        );
    }
}

#[test]
fn process_0_0_lists_every_process_as_the_truth_has_it() {
    each_x86_dump("process", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let session = dump_session(dump, symbols);
        let outputs = run_commands(&session, "!process 0 0");
        let text = output_of(&outputs, "!process 0 0");
        let blocks = text.lines().filter(|l| l.starts_with("PROCESS ")).count();
        assert_eq!(blocks, f.truth.processes.len(), "{name}:\n{text}");
        for p in &f.truth.processes {
            check_process_block(name, text, p);
        }
        if pae(f) {
            // Process PDPTs are packed 32 bytes apart: DirBase is not page aligned.
            assert!(
                f.truth.processes.iter().any(|p| p.dtb & 0xFFF != 0),
                "{name}: some PAE DirBase has low bits"
            );
        }
    });
}

#[test]
fn process_0_0_counts_every_process_handles() {
    each_x86_dump("handles", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let session = dump_session(dump, symbols);
        let outputs = run_commands(&session, "!process 0 0");
        let text = output_of(&outputs, "!process 0 0");
        for p in &f.truth.processes {
            let block = text
                .split("PROCESS ")
                .find(|b| b.starts_with(&format!("{:08x}", p.eprocess)))
                .unwrap_or_else(|| panic!("{name}: no PROCESS {:08x}", p.eprocess));
            let want = format!("HandleCount: {}.", p.handle_count);
            assert!(
                block.contains(&want),
                "{name}: {} ({}): no {want:?} in\n{block}",
                p.image_file_name,
                p.pid
            );
        }
    });
}

/// Text with every run of whitespace made one space.
fn collapsed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `!process` blocks of `text`, by EPROCESS address, whitespace collapsed.
fn blocks_by_process(text: &str) -> std::collections::HashMap<u64, String> {
    text.split("PROCESS ")
        .skip(1)
        .filter_map(|b| {
            let address = u64::from_str_radix(b.get(..8)?, 16).ok()?;
            Some((address, collapsed(b)))
        })
        .collect()
}

#[test]
fn process_flags_1_and_2_show_the_statistics_and_threads_of_the_truth() {
    each_x86_dump(
        "statistics",
        DumpKind::BitmapFull,
        |name, f, dump, symbols| {
            let session = dump_session(dump, symbols);
            let outputs = run_commands(&session, "!process 0 1; !process 0 2");
            let stats = blocks_by_process(output_of(&outputs, "!process 0 1"));
            let threads = blocks_by_process(output_of(&outputs, "!process 0 2"));
            for p in &f.truth.processes {
                let what = format!("{name}: {} ({})", p.image_file_name, p.pid);
                let block = &stats[&p.eprocess];
                for want in [
                    format!("Private {}.", p.commit_charge),
                    format!("({}, 50, 345)", p.working_set),
                    format!("PeakWorkingSetSize {}", p.peak_working_set),
                    format!("PageFaultCount {}", p.page_faults),
                    format!("CommitCharge {}", p.commit_charge),
                    format!("QuotaPoolUsage[PagedPool] {}", p.quota_paged),
                    format!("QuotaPoolUsage[NonPagedPool] {}", p.quota_nonpaged),
                ] {
                    assert!(block.contains(&want), "{what}: no {want:?} in\n{block}");
                }
                let block = &threads[&p.eprocess];
                assert_eq!(
                    block.matches("THREAD ").count(),
                    p.threads.len(),
                    "{what}:\n{block}"
                );
                for t in &p.threads {
                    for want in [
                        format!(
                            "THREAD {:08x} Cid {:04x}.{:04x} Teb: {:08x}",
                            t.ethread, p.pid, t.tid, t.teb
                        ),
                        format!("Wait Start TickCount {}", t.wait_tick),
                        format!("Stack Init {:08x}", t.initial_stack),
                    ] {
                        assert!(block.contains(&want), "{what}: no {want:?} in\n{block}");
                    }
                }
            }
            let many = f.truth.processes.iter().filter(|p| p.threads.len() > 1);
            assert!(many.count() >= 2, "{name}: processes with several threads");
        },
    );
}

#[test]
fn waiting_threads_show_their_wait_reason_and_mode() {
    each_x86_dump("waits", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let session = dump_session(dump, symbols);
        let outputs = run_commands(&session, "!process 0 2");
        let threads = blocks_by_process(output_of(&outputs, "!process 0 2"));
        for p in &f.truth.processes {
            let block = &threads[&p.eprocess];
            for t in &p.threads {
                if t.state != 5 {
                    continue;
                }
                let reason = match t.wait_reason {
                    0 => "Executive",
                    6 => "UserRequest",
                    r if i64::from(r) == kds_e2e::wait_reason_value(&f.table, "WrResource") => {
                        "WrResource"
                    }
                    other => panic!("{name}: wait reason {other} not in this test"),
                };
                let mode = if t.wait_mode == 1 {
                    "UserMode"
                } else {
                    "KernelMode"
                };
                let want = format!("WAIT: ({reason}) {mode} Non-Alertable");
                assert!(
                    block.contains(&want),
                    "{name}: {} ({}): no {want:?} in\n{block}",
                    p.image_file_name,
                    p.pid
                );
            }
        }
    });
}

#[test]
fn peb_shows_each_processs_parameters_and_environment() {
    each_x86_dump("peb", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let session = dump_session(dump, symbols);
        for p in f.truth.processes.iter().filter(|p| p.peb != 0) {
            let what = format!("{name}: {} ({})", p.image_file_name, p.pid);
            let commands = format!(".process /p /r {:08x}; !peb", p.eprocess);
            let outputs = run_commands(&session, &commands);
            let text = output_of(&outputs, "!peb");
            let mut want = vec![
                format!("PEB at {:08x}", p.peb),
                format!("ProcessParameters: {:08x}", p.process_parameters),
                format!("CurrentDirectory:  '{}'", p.current_directory),
                format!("ImageFile:    '{}'", p.image_path),
                format!("CommandLine:  '{}'", p.command_line),
            ];
            want.extend(p.environment.iter().map(|e| format!("        {e}\n")));
            for m in &p.modules {
                want.push(format!("{:x} 4a5b1234", m.base));
            }
            for w in want {
                assert!(text.contains(&w), "{what}: no {w:?} in\n{text}");
            }
        }
    });
}

#[test]
fn lm_lists_the_kernel_modules_at_their_bases() {
    each_x86_dump("lm", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let session = dump_session(dump, symbols);
        let outputs = run_commands(&session, "lm");
        let text = output_of(&outputs, "lm");
        for m in &f.truth.modules {
            let range = format!("{:08x} {:08x}", m.base, m.base + m.size);
            let short = if m.name == "ntoskrnl.exe" {
                "nt"
            } else {
                m.name.split('.').next().unwrap_or_default()
            };
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&range) && l.contains(short)),
                "{name}: no {range} {short} in\n{text}"
            );
        }
    });
}

#[test]
fn the_kernel_is_found_with_the_written_table() {
    each_x86_dump(
        "kernel",
        DumpKind::BitmapKernel,
        |name, f, dump, symbols| {
            let session = dump_session(dump, symbols);
            let kernel = session
                .kernel
                .as_ref()
                .unwrap_or_else(|e| panic!("{name}: kernel not found: {e}"));
            assert_eq!(kernel.base, f.truth.kernel_base, "{name}");
            assert_eq!(
                session.kernel_symbol("PsActiveProcessHead"),
                Some(f.truth.ps_active_process_head),
                "{name}"
            );
        },
    );
}

#[test]
fn a_raw_image_of_an_x86_machine_is_discovered() {
    use kds_fixture::snapshotfile::write_raw_image;
    let dir = scratch_dir("raw");
    for (name, table) in x86_tables() {
        let here = dir.join(name);
        std::fs::create_dir_all(&here).expect("scratch dir");
        let (f, _, symbols) =
            x86_fixture_dump(&table, SEED, DumpKind::BitmapFull, &here, "unused.dmp");
        let image = here.join(format!("{name}.raw"));
        write_raw_image(&f, &image).expect("raw image written");
        let target = SnapshotTarget::open(&image)
            .unwrap_or_else(|e| panic!("{name}: discovery over the raw image: {e}"));
        let id = target.identity().clone();
        assert_eq!(
            id.arch,
            kds_runtime::target::Arch::X86 { pae: pae(&f) },
            "{name}"
        );
        assert_eq!(id.directory_table_base, f.truth.kernel_dtb, "{name}");
        let session = session_of(Arc::new(target), &symbols);
        let kernel = session
            .kernel
            .as_ref()
            .unwrap_or_else(|e| panic!("{name}: kernel not found: {e}"));
        assert_eq!(kernel.base, f.truth.kernel_base, "{name}");
    }
}

/// `kds <args>`: its stdout, failing the test on a non-zero exit.
fn kds(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(kds_e2e::kds_binary())
        .args(args)
        .output()
        .expect("kds runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kds {args:?} failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_kds_binary_reads_the_dumps() {
    each_x86_dump("binary", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let (z, y) = (dump.as_os_str(), symbols.as_os_str());
        let info = kds(&["info".as_ref(), "-z".as_ref(), z, "-y".as_ref(), y]);
        let t = &f.truth;
        let arch = if pae(f) { "x86 (PAE)" } else { "x86" };
        for line in [
            "MP (4 procs) Free x86 compatible\n".to_string(),
            format!("Kernel base = 0x{:08x}", t.kernel_base),
            format!("  {:<22}{arch}\n", "Architecture"),
            format!("  {:<22}{:08x}\n", "DirectoryTableBase", t.kernel_dtb),
        ] {
            assert!(info.contains(&line), "{name}: no {line:?} in\n{info}");
        }
        let run = kds(&[
            "run".as_ref(),
            "-c".as_ref(),
            "!process 0 0; lm".as_ref(),
            "-z".as_ref(),
            z,
            "-y".as_ref(),
            y,
        ]);
        for p in &t.processes {
            check_process_block(name, &run, p);
        }
        for m in &t.modules {
            let range = format!("{:08x} {:08x}", m.base, m.base + m.size);
            assert!(
                run.lines().any(|l| l.starts_with(&range)),
                "{name}: no module line {range} in\n{run}"
            );
        }
    });
}

/// The lines of `k`/`kb` output that start with a frame's `ChildEBP RetAddr` (8 digits each).
fn frame_line(text: &str, child: u64, ret: u64) -> Option<&str> {
    let head = format!("{child:08x} {ret:08x} ");
    text.lines().find(|l| l.trim_start().starts_with(&head))
}

/// Check that `text` shows each of the thread's frames, in order: `ChildEBP RetAddr`, then
/// (kernel frames) the call site at the end of the line. Without the process's user modules
/// the EBP chain goes on through the user frames, each a bare address (as in WinDbg).
fn check_frames(name: &str, what: &str, text: &str, t: &kds_fixture::ThreadTruth) {
    check_thread_frames(name, what, text, t, false);
}

#[test]
fn waiting_threads_show_their_kernel_stacks_as_the_truth_has_them() {
    each_x86_dump("stacks", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let session = dump_session(dump, symbols);
        let threads: Vec<_> = f
            .truth
            .processes
            .iter()
            .flat_map(|p| p.threads.iter())
            .filter(|t| t.state == 5 && !t.frames.is_empty())
            .collect();
        assert!(threads.len() >= 8, "{name}: waiting threads with frames");
        assert!(
            threads.iter().any(|t| t.trap_frame == 0) && threads.iter().any(|t| t.trap_frame != 0),
            "{name}: system and user waits"
        );
        let mut commands = String::new();
        for t in &threads {
            let e = t.ethread;
            commands.push_str(&format!("!thread {e:x}; .thread {e:x}; kb; "));
        }
        let outputs = run_commands(&session, &commands);
        for t in &threads {
            let e = t.ethread;
            let shown = output_of(&outputs, &format!("!thread {e:x}"));
            assert!(
                !shown.contains("Kernel stack not resident"),
                "{name}: {e:x}: {shown}"
            );
            check_frames(name, &format!("!thread {e:x}"), shown, t);
            // `kb` after `.thread`: the outputs of `kb` in order, one per thread.
            let index = threads.iter().position(|x| x.ethread == e).unwrap();
            let kb = outputs
                .iter()
                .filter(|(c, _)| c == "kb")
                .nth(index)
                .map(|(_, t)| t.as_str())
                .expect("kb ran");
            check_frames(name, &format!(".thread {e:x}; kb"), kb, t);
            // KeWaitForSingleObject's arguments: the object, the wait reason and mode.
            let wait = t
                .frames
                .iter()
                .find(|f| f.call_site.starts_with("nt!KeWait"))
                .unwrap();
            let args = format!(
                "{:08x} {:08x} {:08x} {:08x} {:08x} {}",
                wait.child_sp,
                wait.return_address,
                t.wait_objects[0],
                t.wait_reason,
                t.wait_mode,
                wait.call_site
            );
            assert!(kb.contains(&args), "{name}: no {args:?} in\n{kb}");
            // The innermost frame is KiSwapContext, the SwapContext frame at KernelStack.
            assert_eq!(t.frames[0].child_sp, t.kernel_stack + 0x18, "{name}");
            assert!(t.frames[0].call_site.starts_with("nt!KiSwapContext+"));
        }
    });
}

/// The rows of the first table in `section` of a playbook's output.
fn section_rows<'a>(
    items: &'a [OutputItem],
    section: &str,
) -> (&'a [String], &'a [Vec<kds_runtime::model::Value>]) {
    let mut inside = false;
    for item in items {
        match item {
            OutputItem::SectionStart { title } => inside = title == section,
            OutputItem::Table { columns, rows } if inside => return (columns, rows),
            _ => {}
        }
    }
    panic!("no table in section {section:?}")
}

/// A column of rows as numbers.
fn column(columns: &[String], rows: &[Vec<kds_runtime::model::Value>], name: &str) -> Vec<u64> {
    let i = columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {columns:?}"));
    rows.iter()
        .map(|r| r[i].as_u64().expect("a number"))
        .collect()
}

#[test]
fn the_hang_shows_on_x86() {
    let source = std::fs::read_to_string(kds_e2e::repo_root().join("examples/hang-triage.kds"))
        .expect("the playbook");
    let playbook = kds_lang::parse(&source).expect("the playbook parses");
    each_x86_dump("hang", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let session = dump_session(dump, symbols);
        let model = ModelContext::from_session(&session).expect("model of the x86 target");
        let report = kds_exec::run(
            &source,
            &playbook,
            Arc::clone(&model),
            &kds_exec::RunOptions::default(),
        );
        assert!(report.error.is_none(), "{name}: {:?}", report.error);
        let threads: Vec<_> = f.truth.processes.iter().flat_map(|p| &p.threads).collect();
        // The ERESOURCE waiters are the truth's, longest wait first.
        let reason = kds_e2e::wait_reason_value(&f.table, "WrResource");
        let mut waiters: Vec<_> = threads
            .iter()
            .filter(|t| t.state == 5 && i64::from(t.wait_reason) == reason)
            .collect();
        assert!(!waiters.is_empty(), "{name}: the hang has waiters");
        let (columns, rows) = section_rows(&report.items, "Waiting on an executive resource");
        waiters.sort_by_key(|t| t.wait_tick);
        let tids: Vec<u64> = waiters.iter().map(|t| t.tid).collect();
        assert_eq!(column(columns, rows, "tid"), tids, "{name}");
        // One running thread per processor: the truth's.
        let (columns, rows) = section_rows(&report.items, "On the processors");
        assert_eq!(rows.len() as u32, f.truth.processor_count, "{name}");
        let mut shown = column(columns, rows, "tid");
        shown.sort_unstable();
        let mut running: Vec<u64> = threads
            .iter()
            .filter(|t| t.state == 2)
            .map(|t| t.tid)
            .collect();
        running.sort_unstable();
        assert_eq!(shown, running, "{name}");
        // The stuck waiters are grouped under their process and reason.
        let (_, rows) = section_rows(&report.items, "Stuck threads, grouped");
        let hung = rows
            .iter()
            .find(|r| r[2].to_string().contains("WrResource"))
            .unwrap_or_else(|| panic!("{name}: no WrResource group in {rows:?}"));
        assert_eq!(hung[0].as_u64(), Some(waiters.len() as u64), "{name}");
        assert_eq!(report.failed_expectations, 0, "{name}");
        // `!thread` on a waiter names the resource's event (or semaphore) it waits on; on a
        // running thread it walks from its processor's context into the interrupted user code.
        let commands: String = waiters
            .iter()
            .map(|t| &***t)
            .chain(threads.iter().copied().filter(|t| t.state == 2))
            .map(|t| format!("!thread {:x}; ", t.ethread))
            .collect();
        let outputs = run_commands(&session, &commands);
        for t in threads.iter().filter(|t| t.state == 2) {
            let text = output_of(&outputs, &format!("!thread {:x}", t.ethread));
            let cpu = t.processor.expect("a running thread's processor");
            assert!(
                text.contains(&format!("RUNNING on processor {cpu}")),
                "{name}:\n{text}"
            );
            check_frames(name, &format!("!thread {:x}", t.ethread), text, t);
            assert!(!text.contains("WARNING: the frame"), "{name}:\n{text}");
        }
        for t in &waiters {
            let text = output_of(&outputs, &format!("!thread {:x}", t.ethread));
            let object = t.wait_objects[0];
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{object:08x}")))
                .unwrap_or_else(|| panic!("{name}: no wait object {object:08x} in\n{text}"));
            assert!(
                line.ends_with("SynchronizationEvent") || line.ends_with("Semaphore"),
                "{name}: {line:?}"
            );
            assert!(
                text.contains("WAIT: (WrResource) KernelMode"),
                "{name}:\n{text}"
            );
        }
    });
}

/// Check that `text` shows every frame of the thread, kernel then user, in order and nothing
/// after them: `ChildEBP RetAddr` and the call site (user ones by the images' exports).
fn check_frames_with_user(name: &str, what: &str, text: &str, t: &kds_fixture::ThreadTruth) {
    check_thread_frames(name, what, text, t, true);
}

/// Every frame of `t` in `text`, in order, and no other frame line: `ChildEBP RetAddr`, then
/// the call site (with its `TrapFrame @`), or for a user frame without `user_modules` loaded
/// its bare address.
fn check_thread_frames(
    name: &str,
    what: &str,
    text: &str,
    t: &kds_fixture::ThreadTruth,
    user_modules: bool,
) {
    let mut last = 0;
    for frame in &t.frames {
        let line = frame_line(text, frame.child_sp, frame.return_address).unwrap_or_else(|| {
            panic!(
                "{name}: {what}: no frame {:08x} {:08x} ({}) in\n{text}",
                frame.child_sp, frame.return_address, frame.call_site
            )
        });
        let want = if frame.user && !user_modules {
            format!("{:08x}", frame.ip)
        } else if frame.trap_frame != 0 {
            format!("{} (TrapFrame @ {:08x})", frame.call_site, frame.trap_frame)
        } else {
            frame.call_site.clone()
        };
        assert!(
            line.trim_end().ends_with(&want),
            "{name}: {what}: {line:?} does not end with {want}"
        );
        let at = text.find(line).expect("line in text");
        assert!(at >= last, "{name}: {what}: frames out of order in\n{text}");
        last = at;
    }
    let frames = text
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            let hex8 = |w: Option<&str>| {
                w.is_some_and(|w| w.len() == 8 && w.chars().all(|c| c.is_ascii_hexdigit()))
            };
            hex8(words.next()) && hex8(words.next())
        })
        .count();
    assert_eq!(
        frames,
        t.frames.len(),
        "{name}: {what}: frame lines in\n{text}"
    );
}

#[test]
fn after_process_r_user_stacks_go_on_into_user_mode_by_exports() {
    each_x86_dump("user", DumpKind::BitmapFull, |name, f, dump, symbols| {
        // lsass, and explorer for several threads (their own user stacks and start routines).
        for image in ["lsass.exe", "explorer.exe"] {
            let p = f
                .truth
                .processes
                .iter()
                .find(|p| p.image_file_name == image)
                .expect("the process in the truth");
            check_user_stacks(name, p, dump, symbols);
        }
    });
}

/// After `.process /p /r <p>`: `!process <p> 6` and `k` after `.thread` show every thread's
/// truth frames, kernel then user; `lm` lists the user images, `x` finds ntdll's exports.
fn check_user_stacks(name: &str, p: &ProcessTruth, dump: &Path, symbols: &Path) {
    let session = dump_session(dump, symbols);
    let e = p.eprocess;
    let mut commands =
        format!(".process /p /r {e:08x}; !process {e:08x} 6; lm; x ntdll!NtWaitForSingleObject; ");
    for t in &p.threads {
        commands.push_str(&format!(".thread {:08x}; k; ", t.ethread));
    }
    let outputs = run_commands(&session, &commands);
    let process = output_of(&outputs, &format!("!process {e:08x} 6"));
    let blocks: Vec<&str> = process.split("THREAD ").skip(1).collect();
    assert_eq!(blocks.len(), p.threads.len(), "{name}:\n{process}");
    let ks = outputs.iter().filter(|(c, _)| c == "k").map(|(_, t)| t);
    for ((t, block), k) in p.threads.iter().zip(&blocks).zip(ks) {
        // A waiting thread's user stack runs from the system-call stub down to its start; a
        // running thread was interrupted in its own code (one user frame).
        let user_frames = if t.state == 5 { 8 } else { 1 };
        assert!(
            t.frames.iter().filter(|f| f.user).count() >= user_frames,
            "{name}: the truth has the user frames"
        );
        let what = format!("thread {:x}", t.tid);
        check_frames_with_user(name, &format!("!process: {what}"), block, t);
        check_frames_with_user(name, &format!("k: {what}"), k, t);
    }
    // Every user image of p, at its base.
    let lm = output_of(&outputs, "lm");
    for m in &p.modules {
        let range = format!("{:08x} {:08x}", m.base, m.base + m.size);
        let short = m.name.split('.').next().unwrap_or_default();
        assert!(
            lm.lines()
                .any(|l| l.starts_with(&range) && l.contains(short)),
            "{name}: no {range} {short} in\n{lm}"
        );
    }
    // The stub's export: the user frame returning into it, less the call's length.
    let stub = p.threads[0]
        .frames
        .iter()
        .find(|f| f.call_site == "ntdll!NtWaitForSingleObject+0xc")
        .expect("a frame in the stub")
        .ip
        - 0xC;
    let x = output_of(&outputs, "x ntdll!NtWaitForSingleObject");
    assert!(
        x.contains(&format!("{stub:08x} ntdll!NtWaitForSingleObject")),
        "{name}: no {stub:08x} in\n{x}"
    );
}

/// The VAD tree under `p`'s `VadRoot` walked in order through the machine (offsets from the
/// written table): each node's `(address, StartingVpn, EndingVpn)`.
fn vads_in_order(f: &Fixture, p: &ProcessTruth) -> Vec<(u64, u64, u64)> {
    let t = &f.table;
    let modern = t.field("_MMVAD_SHORT", "VadNode").is_ok();
    let (left, right) = if modern {
        let node = t.offset_of("_MMVAD_SHORT", "VadNode").expect("VadNode");
        (
            node + t.offset_of("_RTL_BALANCED_NODE", "Left").expect("Left"),
            node + t.offset_of("_RTL_BALANCED_NODE", "Right").expect("Right"),
        )
    } else {
        (
            t.offset_of("_MMVAD_SHORT", "LeftChild").expect("LeftChild"),
            t.offset_of("_MMVAD_SHORT", "RightChild")
                .expect("RightChild"),
        )
    };
    let start = t
        .offset_of("_MMVAD_SHORT", "StartingVpn")
        .expect("StartingVpn");
    let end = t.offset_of("_MMVAD_SHORT", "EndingVpn").expect("EndingVpn");
    let kd = f.machine.kernel_dtb;
    let read = |va: u64| {
        let mut b = [0u8; 4];
        f.machine
            .read_virt(kd, va, &mut b)
            .expect("VAD node mapped");
        u64::from(u32::from_le_bytes(b))
    };
    fn walk(node: u64, out: &mut Vec<(u64, u64, u64)>, visit: &dyn Fn(u64) -> [u64; 4]) {
        if node == 0 {
            return;
        }
        let [l, r, s, e] = visit(node);
        walk(l, out, visit);
        out.push((node, s, e));
        walk(r, out, visit);
    }
    let visit = |n: u64| {
        [
            read(n + left),
            read(n + right),
            read(n + start),
            read(n + end),
        ]
    };
    let mut out = Vec::new();
    walk(p.vad_root, &mut out, &visit);
    out
}

#[test]
fn processes_and_threads_have_the_sessions_tokens_priorities_and_vads_of_the_truth() {
    each_x86_dump("details", DumpKind::BitmapFull, |name, f, dump, symbols| {
        // As Windows starts them.
        let by_name = |n: &str| {
            f.truth
                .processes
                .iter()
                .find(|p| p.image_file_name == n)
                .unwrap_or_else(|| panic!("{name}: no {n}"))
        };
        for (image, session, base_priority) in [
            ("System", None, 8),
            ("smss.exe", None, 11),
            ("csrss.exe", Some(0), 13),
            ("wininit.exe", Some(0), 13),
            ("services.exe", Some(0), 9),
            ("lsass.exe", Some(0), 9),
            ("explorer.exe", Some(1), 8),
        ] {
            let p = by_name(image);
            assert_eq!(p.session_id, session, "{name}: {image}");
            assert_eq!(p.base_priority, base_priority, "{name}: {image}");
        }
        let system = by_name("System");
        assert_eq!(
            by_name("lsass.exe").device_map,
            system.device_map,
            "{name}: SYSTEM's logon shares one device map"
        );
        assert_ne!(by_name("explorer.exe").device_map, system.device_map);

        // Ticks as `!process` and `!thread` print them: KUSER_SHARED_DATA's
        // `TickCountMultiplier` (ms per tick, 24-bit fixed point) applied.
        let multiplier = (f.kernel.tick_100ns << 24) / 10_000;
        let time = |ticks: u32| {
            let ms = (u64::from(ticks) * multiplier) >> 24;
            let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
            format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
        };
        let session = dump_session(dump, symbols);
        let lsass = kds_e2e::lsass(&f.truth);
        let mut commands = "!process 0 1".to_string();
        for t in &lsass.threads {
            commands.push_str(&format!("; !thread {:x}", t.ethread));
        }
        let outputs = run_commands(&session, &commands);
        let stats = blocks_by_process(output_of(&outputs, "!process 0 1"));
        for p in &f.truth.processes {
            let what = format!("{name}: {} ({})", p.image_file_name, p.pid);
            assert_ne!(p.token, 0, "{what}: a token");
            assert_ne!(p.device_map, 0, "{what}: a device map");
            let block = &stats[&p.eprocess];
            let session_id = p.session_id.map_or("none".into(), |s| format!("{s:x}"));
            let mut wants = vec![
                format!("SessionId: {session_id} "),
                format!("Token {:08x}", p.token),
                format!("DeviceMap {:08x}", p.device_map),
                format!("BasePriority {}", p.base_priority),
                format!("UserTime {}", time(p.user_time)),
                format!("KernelTime {}", time(p.kernel_time)),
            ];
            let threads =
                |f: fn(&kds_fixture::ThreadTruth) -> u32| -> u32 { p.threads.iter().map(f).sum() };
            assert_eq!(p.kernel_time, threads(|t| t.kernel_time), "{what}");
            assert_eq!(p.user_time, threads(|t| t.user_time), "{what}");
            if p.peb != 0 {
                assert!(p.vads.len() >= 7, "{what}: images, stack, TEB, PEB, heap");
                wants.push(format!("VadRoot {:08x} Vads {}", p.vad_root, p.vads.len()));
                let reserved: u64 = p.vads.iter().map(|v| v.end + 1 - v.start).sum();
                wants.push(format!("VirtualSize {} Mb", reserved >> 20));
                // The tree in memory holds the truth's VADs in address order.
                let walked = vads_in_order(f, p);
                let want: Vec<_> = p
                    .vads
                    .iter()
                    .map(|v| (v.address, v.start >> 12, v.end >> 12))
                    .collect();
                assert_eq!(walked, want, "{what}: the VAD tree");
                assert!(
                    walked.windows(2).all(|w| w[0].2 < w[1].1),
                    "{what}: disjoint"
                );
                for m in &p.modules {
                    assert!(
                        p.vads.iter().any(|v| v.image && v.start == m.base),
                        "{what}: a VAD for {}",
                        m.name
                    );
                }
            }
            for want in wants {
                assert!(block.contains(&want), "{what}: no {want:?} in\n{block}");
            }
        }
        for t in &lsass.threads {
            let shown = collapsed(output_of(&outputs, &format!("!thread {:x}", t.ethread)));
            assert!(t.context_switches >= 8, "{name}: {:x}", t.ethread);
            assert!(t.priority >= t.base_priority && t.base_priority == 9);
            for want in [
                format!("Context Switch Count {} ", t.context_switches),
                format!(
                    "Priority {} BasePriority {} PriorityDecrement 0",
                    t.priority, t.base_priority
                ),
                format!("UserTime {}", time(t.user_time)),
                format!("KernelTime {}", time(t.kernel_time)),
            ] {
                assert!(shown.contains(&want), "{name}: no {want:?} in\n{shown}");
            }
        }
    });
}

#[test]
fn vm_sums_the_commit_of_the_sessions() {
    each_x86_dump("vm", DumpKind::BitmapFull, |name, f, dump, symbols| {
        let session = dump_session(dump, symbols);
        let outputs = run_commands(&session, "!vm");
        let text = output_of(&outputs, "!vm");
        let want = f
            .truth
            .memory
            .session_commit
            .expect("the x86 machine has sessions with commit");
        assert!(want > 0, "{name}");
        let line = text
            .lines()
            .find(|l| l.contains("Session Commit:"))
            .unwrap_or_else(|| panic!("{name}: no Session Commit in\n{text}"));
        let pages: Option<u64> = line.split_whitespace().nth(2).and_then(|v| v.parse().ok());
        assert_eq!(pages, Some(want), "{name}: {line}");
    });
}
