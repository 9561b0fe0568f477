//! The standard library's commands on fixture dumps of every build: their structured results
//! (what `--format json` prints) are checked against the fixture's truth, and their text is
//! snapshotted (reviewed: a claim of what WinDbg would print for that target).

use kds_e2e::{
    each_x86_fixture, fixture_dump, lsass, model_for, n, scratch_dir, symbol_dir_with, x64_tables,
    Session,
};
use kds_exec::{render_text, OutputItem};
use kds_fixture::dumpfile::DumpKind;
use kds_fixture::{FrameTruth, GroundTruth, ThreadTruth};
use kds_runtime::symbols::SymbolTable;
use serde_json::Value as Json;
use std::sync::Arc;

fn hex(v: u64) -> String {
    format!("{v:x}")
}

fn check_process_list(s: &mut Session, truth: &GroundTruth) {
    let data = s.data("!process 0 0");
    let blocks = data["processes"].as_array().expect("process blocks");
    assert_eq!(blocks.len(), truth.processes.len());
    for (block, p) in blocks.iter().zip(&truth.processes) {
        assert_eq!(n(&block["address"]), p.eprocess);
        assert_eq!(n(&block["pid"]), p.pid);
        assert_eq!(n(&block["parent_pid"]), p.ppid);
        assert_eq!(n(&block["peb"]), p.peb);
        assert_eq!(n(&block["dir_base"]), p.dtb);
        assert_eq!(n(&block["object_table"]), p.object_table);
        assert_eq!(block["image"], p.image_file_name);
        assert_eq!(
            block["session"].as_u64(),
            p.session_id.map(u64::from),
            "{}",
            p.image_file_name
        );
    }
    // By name, by address and by cid select the same one block.
    let l = lsass(truth);
    for selector in [
        "!process 0 0 lsass.exe".to_string(),
        format!("!process {} 0", hex(l.eprocess)),
        format!("!process {} 0", hex(l.pid)),
    ] {
        let data = s.data(&selector);
        let blocks = data["processes"].as_array().expect("blocks");
        assert_eq!(blocks.len(), 1, "{selector}");
        assert_eq!(n(&blocks[0]["address"]), l.eprocess, "{selector}");
    }
}

fn check_statistics(s: &mut Session, truth: &GroundTruth) {
    let data = s.data("!process 0 1");
    for (block, p) in data["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .zip(&truth.processes)
    {
        let st = &block["statistics"];
        let what = &p.image_file_name;
        assert_eq!(
            st["device_map"].as_u64().unwrap_or(0),
            p.device_map,
            "{what}"
        );
        assert_eq!(n(&st["working_set"]), p.working_set, "{what}");
        assert_eq!(n(&st["peak_working_set"]), p.peak_working_set, "{what}");
        assert_eq!(n(&st["page_fault_count"]), p.page_faults, "{what}");
        assert_eq!(n(&st["quota_paged"]), p.quota_paged, "{what}");
        assert_eq!(n(&st["quota_nonpaged"]), p.quota_nonpaged, "{what}");
        assert_eq!(n(&st["commit_charge"]), p.commit_charge, "{what}");
        assert_eq!(n(&st["token"]), p.token, "{what}");
    }
}

fn check_threads(s: &mut Session, truth: &GroundTruth) {
    let l = lsass(truth);
    let data = s.data(&format!("!process {} 6", hex(l.eprocess)));
    let threads = data["processes"][0]["threads"]
        .as_array()
        .expect("thread blocks");
    assert_eq!(threads.len(), l.threads.len());
    for (block, t) in threads.iter().zip(&l.threads) {
        assert_eq!(n(&block["address"]), t.ethread);
        assert_eq!(n(&block["tid"]), t.tid);
        assert_eq!(n(&block["pid"]), l.pid);
        assert_eq!(n(&block["teb"]), t.teb);
        let d = &block["details"];
        assert_eq!(n(&d["stack_init"]), t.initial_stack);
        assert_eq!(n(&d["stack_current"]), t.kernel_stack);
        assert_eq!(n(&d["stack_base"]), t.stack_base);
        assert_eq!(n(&d["stack_limit"]), t.stack_limit);
        assert_eq!(n(&d["context_switches"]), u64::from(t.context_switches));
        assert_eq!(d["priority"].as_i64(), Some(i64::from(t.priority)));
        assert_eq!(
            d["base_priority"].as_i64(),
            Some(i64::from(t.base_priority))
        );
        assert_eq!(n(&d["owning_process"]["address"]), l.eprocess);
        assert_eq!(d["owning_process"]["image"], "lsass.exe");
        assert_eq!(n(&d["device_map"]), l.device_map);
        if t.state == 5 {
            assert_eq!(block["state"]["state"], "waiting");
            assert_eq!(
                block["state"]["alertable"].as_bool(),
                Some(t.alertable),
                "thread {:x}",
                t.tid
            );
            assert_eq!(n(&d["wait_start_tick"]), t.wait_tick & 0xffff_ffff);
            let objects: Vec<u64> = d["wait_objects"]
                .as_array()
                .expect("wait objects")
                .iter()
                .map(|o| n(&o["address"]))
                .collect();
            assert_eq!(objects, t.wait_objects, "thread {:x}", t.tid);
        }
        if !t.kernel_stack_resident {
            assert_eq!(block["stack"]["kind"], "not_resident");
        }
    }
}

/// The frames kds walked for one thread against the fixture's: every kernel frame, and the
/// user frames when `user` (after `.process /r`); before, the first user frame is a bare
/// address and the walk stops there.
fn check_frames(stack: &Json, t: &ThreadTruth, user: bool, what: &str) {
    if !t.kernel_stack_resident {
        assert_eq!(stack["kind"], "not_resident", "{what}");
        return;
    }
    assert_eq!(stack["kind"], "frames", "{what}: {stack}");
    let got = stack["frames"].as_array().expect("frames");
    let want: Vec<&FrameTruth> = t.frames.iter().filter(|f| user || !f.user).collect();
    assert!(
        !want.is_empty(),
        "{what}: the fixture gives every thread frames"
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(n(&g["child_sp"]), w.child_sp, "{what} frame {i}");
        assert_eq!(n(&g["ip"]), w.ip, "{what} frame {i}");
        assert_eq!(g["call_site"], w.call_site.as_str(), "{what} frame {i}");
        assert_eq!(
            g["trap_frame"].as_u64().unwrap_or(0),
            w.trap_frame,
            "{what} frame {i}"
        );
        if user || i + 1 < want.len() {
            assert_eq!(
                n(&g["return_address"]),
                w.return_address,
                "{what} frame {i}"
            );
        }
    }
    let user_frames = t.frames.iter().filter(|f| f.user).count();
    if user {
        assert_eq!(got.len(), t.frames.len(), "{what}");
    } else if user_frames > 0 {
        // Kernel frames, then the first user frame as a bare address.
        assert_eq!(got.len(), want.len() + 1, "{what}");
        let first_user = t.frames.iter().find(|f| f.user).expect("a user frame");
        let last = &got[want.len()];
        assert_eq!(n(&last["ip"]), first_user.ip, "{what}");
        assert!(last["call_site"].is_null(), "{what}");
    } else {
        assert_eq!(got.len(), want.len(), "{what}");
    }
}

fn check_stacks(s: &mut Session, truth: &GroundTruth) {
    // Every thread of every process: kernel frames (no process context switched to).
    let data = s.data("!process 0 6");
    for (block, p) in data["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .zip(&truth.processes)
    {
        for (tb, t) in block["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .zip(&p.threads)
        {
            let what = format!("{} thread {:x}", p.image_file_name, t.tid);
            check_frames(&tb["stack"], t, false, &what);
        }
    }
    // After `.process /p /r`, lsass's user frames resolve.
    let l = lsass(truth);
    s.run(&format!(".process /p /r {}", hex(l.eprocess)));
    let data = s.data(&format!("!process {} 6", hex(l.eprocess)));
    for (tb, t) in data["processes"][0]["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .zip(&l.threads)
    {
        check_frames(&tb["stack"], t, true, &format!("lsass thread {:x}", t.tid));
    }
    // `k` on a thread set with `.thread` is the same walk.
    let t = l
        .threads
        .iter()
        .find(|t| t.kernel_stack_resident)
        .expect("a resident lsass thread");
    s.run(&format!(".thread {}", hex(t.ethread)));
    check_frames(&s.data("k"), t, true, "k");
    // `r` shows the registers the walk starts from: frame 0's.
    let r = s.data("r");
    let reg = |name: &str| {
        r["registers"]
            .as_array()
            .expect("registers")
            .iter()
            .find(|x| x["name"] == name)
            .and_then(|x| x["value"].as_u64())
    };
    assert_eq!(reg("rip"), Some(t.frames[0].ip));
    assert_eq!(reg("rsp"), Some(t.frames[0].child_sp));
    // And for the thread running on processor 0, the dump's context.
    let running = truth
        .processes
        .iter()
        .flat_map(|p| &p.threads)
        .find(|t| t.processor == Some(0))
        .expect("a thread on processor 0");
    s.run(&format!(".thread {}", hex(running.ethread)));
    let rip = s.data("r rip");
    assert_eq!(
        rip["registers"][0]["value"].as_u64(),
        running.frames.first().map(|f| f.ip)
    );
}

fn check_peb(s: &mut Session, truth: &GroundTruth) {
    let l = lsass(truth);
    let switch = s.data(&format!(".process /p /r {}", hex(l.eprocess)));
    assert_eq!(n(&switch["process"]), l.eprocess);
    assert_eq!(n(&switch["user_modules"]), l.modules.len() as u64);
    let peb = s.data("!peb");
    assert_eq!(peb["kind"], "peb");
    assert_eq!(n(&peb["address"]), l.peb);
    assert_eq!(n(&peb["image_base"]), l.image_base);
    assert_eq!(n(&peb["ldr"]), l.ldr);
    assert_eq!(n(&peb["process_parameters"]), l.process_parameters);
    assert_eq!(peb["current_directory"], l.current_directory.as_str());
    assert_eq!(peb["command_line"], l.command_line.as_str());
    assert_eq!(peb["image_file"], l.image_path.as_str());
    let bases: Vec<u64> = peb["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .map(|m| n(&m["base"]))
        .collect();
    let want: Vec<u64> = l.modules.iter().map(|m| m.base).collect();
    assert_eq!(bases, want);
    let vars: Vec<String> = peb["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(vars, l.environment);

    // lm now lists the kernel's modules and lsass's.
    let lm = s.data("lm");
    let starts: Vec<u64> = lm["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .map(|m| n(&m["start"]))
        .collect();
    for m in truth.modules.iter().chain(&l.modules) {
        assert!(starts.contains(&m.base), "lm lists {}", m.name);
    }
    assert_eq!(starts.len(), truth.modules.len() + l.modules.len());

    // The System process has no PEB: WinDbg says so.
    let system = &truth.processes[0];
    s.run(&format!(".process /p {}", hex(system.eprocess)));
    assert_eq!(s.data("!peb")["kind"], "no_peb");
}

fn check_memory_and_symbols(s: &mut Session, truth: &GroundTruth, table: &SymbolTable) {
    let x = s.data("x nt!PsActiveProcessHead");
    assert_eq!(n(&x["matches"][0]["address"]), truth.ps_active_process_head);
    let ln = s.data(&format!("ln {}", hex(truth.ps_active_process_head + 8)));
    assert_eq!(ln["below"][0], "nt!PsActiveProcessHead");
    assert_eq!(n(&ln["below"][1]), truth.ps_active_process_head);
    assert_eq!(ln["exact"], false);
    let dq = s.data("dq nt!PsActiveProcessHead L2");
    let bytes: Vec<u8> = dq["bytes"]
        .as_array()
        .expect("bytes")
        .iter()
        .map(|b| u8::try_from(n(b)).expect("a byte"))
        .collect();
    let flink = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let links = table
        .offset_of("_EPROCESS", "ActiveProcessLinks")
        .expect("ActiveProcessLinks");
    assert_eq!(flink, truth.processes[0].eprocess + links);

    let dt = s.data(&format!(
        "dt nt!_EPROCESS {} UniqueProcessId",
        hex(truth.processes[1].eprocess)
    ));
    let line = &dt["lines"][0];
    assert_eq!(line["name"], "UniqueProcessId");
    assert_eq!(
        n(&line["offset"]),
        table
            .offset_of("_EPROCESS", "UniqueProcessId")
            .expect("pid field")
    );
    let shown = line["value"].as_str().expect("a value").replace('`', "");
    assert!(
        shown.ends_with(&format!("{:x} Void", truth.processes[1].pid)),
        "{shown}"
    );

    // A layout: every field of the table's type, at its offset, bitfields in bit order.
    let layout = s.data("dt nt!_KTHREAD");
    let lines = layout["lines"].as_array().expect("lines");
    let ut = table.user_type("_KTHREAD").expect("_KTHREAD");
    assert_eq!(lines.len(), ut.fields.len());
    for l in lines {
        let name = l["name"].as_str().expect("name");
        assert_eq!(
            n(&l["offset"]),
            table.offset_of("_KTHREAD", name).expect("field"),
            "{name}"
        );
    }
    let position = |l: &Json| {
        l["type_text"]
            .as_str()
            .and_then(|t| t.strip_prefix("Pos "))
            .and_then(|t| t.split(',').next())
            .and_then(|p| p.parse::<u32>().ok())
    };
    for pair in lines.windows(2) {
        if let (Some(a), Some(b)) = (position(&pair[0]), position(&pair[1])) {
            if pair[0]["offset"] == pair[1]["offset"] {
                assert!(a < b, "{} before {}", pair[0]["name"], pair[1]["name"]);
            }
        }
    }

    let bugcheck = s.data(".bugcheck");
    assert_eq!(
        n(&bugcheck["bugcheck"]["code"]),
        u64::from(truth.bugcheck_code)
    );
}

fn check_pte(s: &mut Session, truth: &GroundTruth) {
    let pte = s.data(&format!("!pte {}", hex(truth.ps_active_process_head)));
    let levels = pte["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 4);
    // Each entry's self-map address is where the walk found it physically.
    for level in levels {
        let va = n(&level["virtual_address"]);
        assert_eq!(va >> 39 & 0x1ff, truth.self_map_index, "{level}");
        let vtop = s.data(&format!("!vtop 0 {}", hex(va)));
        assert_eq!(
            n(&vtop["outcome"]["physical"]),
            n(&level["physical_address"]),
            "{level}"
        );
    }
    assert_eq!(pte["outcome"]["kind"], "mapped");
}

#[test]
fn commands_agree_with_the_fixture_on_every_build() {
    let dir = scratch_dir("commands");
    for (name, table_path) in x64_tables() {
        let (fixture, dump) = fixture_dump(
            &table_path,
            1,
            DumpKind::BitmapFull,
            &dir,
            &format!("{name}.dmp"),
        );
        let symbols = symbol_dir_with(&table_path, &dir.join(name));
        let model = model_for(&dump, &symbols);
        let mut s = Session::new(Arc::clone(&model));
        check_process_list(&mut s, &fixture.truth);
        check_threads(&mut s, &fixture.truth);
        check_statistics(&mut s, &fixture.truth);
        check_memory_and_symbols(&mut s, &fixture.truth, model.table());
        check_pte(&mut s, &fixture.truth);
        check_stacks(&mut Session::new(Arc::clone(&model)), &fixture.truth);
        check_peb(&mut s, &fixture.truth);

        // The text, as an engineer reads it.
        let l = lsass(&fixture.truth);
        let first_thread = l.threads.first().expect("lsass has threads").ethread;
        let script = format!(
            "!process 0 1 lsass.exe\n!thread {}\n.process /p /r {}\n!peb\nlm m n*\n\
             x nt!PsActiveProcessHead\n!pte nt!PsActiveProcessHead\ndq nt!PsActiveProcessHead L4\n\
             dt nt!_LIST_ENTRY\n.bugcheck\n",
            hex(first_thread),
            hex(l.eprocess)
        );
        // A new session: loaded user modules are session state.
        let mut fresh = Session::new(model_for(&dump, &symbols));
        // The symbol directory is a temporary one: name it, not its place.
        let text =
            render_text(&fresh.run(&script)).replace(&symbols.display().to_string(), "<symbols>");
        insta::assert_snapshot!(format!("commands-{name}"), text);
    }
}

/// Every standard library command on the 32-bit machines (PAE Windows 10, non-PAE Windows 7),
/// as an engineer reads them: 8-digit pointers, `ChildEBP RetAddr` stacks, the x86 registers,
/// the 2- and 3-level page tables. Each text is a reviewed snapshot `commands-<build>`; the
/// values in it are the fixture's (checked field by field in `tests/x86.rs`).
#[test]
fn every_command_reads_the_x86_builds() {
    each_x86_fixture(
        "commands-x86",
        11,
        DumpKind::BitmapFull,
        |name, fixture, dump, symbols| {
            let truth = &fixture.truth;
            let l = lsass(truth);
            let first_thread = l.threads.first().expect("lsass has threads");
            let running = truth
                .processes
                .iter()
                .flat_map(|p| &p.threads)
                .find(|t| t.processor == Some(0))
                .map_or(String::new(), |t| {
                    format!(".thread {}\nr\nkv\n", hex(t.ethread))
                });
            let script = format!(
            "!process 0 0\n!process 0 1 lsass.exe\n!thread {thread}\n.thread {thread}\nk\nkb\nkv\nkn\nr\n\
             {running}.process /p /r {lsass}\n!peb\n!process {lsass} 7\nlm\nlmv m nt\nlm m n*\n\
             x nt!PsActiveProcessHead\nln {head_plus_4}\n!pte nt!PsActiveProcessHead\n\
             !vtop 0 nt!PsActiveProcessHead\ndd nt!PsActiveProcessHead L4\ndp nt!PsActiveProcessHead L2\n\
             dps nt!PsActiveProcessHead L2\ndq nt!PsActiveProcessHead L2\ndb {peb} L20\n\
             dt nt!_LIST_ENTRY\ndt nt!_EPROCESS {lsass} ImageFileName UniqueProcessId\n!vm\n\
             .bugcheck\n!sym quiet\n.reload\n",
            thread = hex(first_thread.ethread),
            lsass = hex(l.eprocess),
            head_plus_4 = hex(truth.ps_active_process_head + 4),
            peb = hex(l.peb),
        );
            let mut fresh = Session::new(model_for(dump, symbols));
            let text = render_text(&fresh.run(&script))
                .replace(&symbols.display().to_string(), "<symbols>");
            insta::assert_snapshot!(format!("commands-{name}"), text);
        },
    );
}

/// Torn data: a cyclic process list and a paged-out PEB give WinDbg-style warnings and the
/// rest of the output, never an error or a hang.
#[test]
fn torn_data_gives_warnings_and_the_rest_of_the_output() {
    use kds_fixture::dumpfile::write_dump;
    let dir = scratch_dir("commands-torn");
    for (name, table_path) in x64_tables() {
        let mut fixture =
            kds_fixture::build(&kds_fixture::FixtureSpec::hung_server(&table_path, 1))
                .expect("fixture builds");
        let truth = fixture.truth.clone();
        let links = fixture
            .table
            .offset_of("_EPROCESS", "ActiveProcessLinks")
            .expect("ActiveProcessLinks");
        let lsass_at = truth
            .processes
            .iter()
            .position(|p| p.image_file_name == "lsass.exe")
            .expect("lsass");
        // The entry after lsass + 2 links back to the third process: a cycle.
        let k = lsass_at + 2;
        assert!(k + 2 < truth.processes.len());
        let kernel_dtb = fixture.machine.kernel_dtb;
        fixture
            .machine
            .write_u64(
                kernel_dtb,
                truth.processes[k].eprocess + links,
                truth.processes[2].eprocess + links,
            )
            .expect("patch Flink");
        // lsass's PEB page is in transition (on the standby list): not in the dump's view.
        let l = &truth.processes[lsass_at];
        let frame = fixture
            .machine
            .translate(l.dtb, l.peb & !0xfff)
            .expect("PEB mapped")
            >> 12;
        fixture
            .machine
            .replace_pte(l.dtb, l.peb & !0xfff, frame << 12 | 0x800 | 4 << 5)
            .expect("PEB paged out");
        // A w3wp thread's user stack page is gone (paged out): its walk ends there.
        let w3wp = truth
            .processes
            .iter()
            .find(|p| p.image_file_name == "w3wp.exe")
            .expect("w3wp");
        let torn = w3wp
            .threads
            .iter()
            .find(|t| t.kernel_stack_resident && t.frames.iter().any(|f| f.user))
            .expect("a w3wp thread with user frames");
        let first_user = torn.frames.iter().find(|f| f.user).expect("a user frame");
        fixture
            .machine
            .replace_pte(w3wp.dtb, first_user.child_sp & !0xfff, 0)
            .expect("user stack page dropped");
        let dump = dir.join(format!("{name}.dmp"));
        write_dump(&fixture, &dump, DumpKind::BitmapFull).expect("dump written");
        let symbols = symbol_dir_with(&table_path, &dir.join(name));
        let model = model_for(&dump, &symbols);
        let mut s = Session::new(model);
        let items = s.run(&format!(
            "!process 0 0\n.process /p /r {}\n!peb\nlm m nt\n",
            hex(l.eprocess)
        ));
        let warnings: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                OutputItem::Warning { message } => Some(message.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            warnings.iter().any(|w| w.contains("cycle")),
            "{name}: {warnings:?}"
        );
        let data: Vec<&Json> = items
            .iter()
            .filter_map(|i| match i {
                OutputItem::Command { data, .. } => data.as_ref(),
                _ => None,
            })
            .collect();
        assert_eq!(data.len(), 4, "{name}: every command printed");
        assert_eq!(
            data[0]["processes"].as_array().map(Vec::len),
            Some(k + 1),
            "{name}: the processes before the cycle"
        );
        assert_eq!(data[2]["kind"], "unreadable", "{name}");
        let reason = data[2]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("transition"), "{name}: {reason}");
        assert_eq!(data[3]["modules"][0]["name"], "nt", "{name}");
        let text = render_text(&items);
        assert!(
            text.contains(&format!("error 1 InitTypeRead( nt!_PEB at {:016x})", l.peb)),
            "{text}"
        );

        // The torn stack: the kernel frames and the interrupted user frame, then a warning
        // naming the missing memory; the commands after it still run.
        let items = s.run(&format!(
            ".process /p /r {}\n.thread {}\nk\nlm m ntdll",
            hex(w3wp.eprocess),
            hex(torn.ethread)
        ));
        let stack = items
            .iter()
            .filter_map(|i| match i {
                OutputItem::Command { command, data, .. } if command == "k" => data.clone(),
                _ => None,
            })
            .next()
            .expect("k ran");
        let frames = stack["frames"].as_array().expect("frames");
        let kernel_frames = torn.frames.iter().filter(|f| !f.user).count();
        assert_eq!(frames.len(), kernel_frames + 1, "{name}: {stack}");
        for (g, w) in frames.iter().zip(&torn.frames) {
            assert_eq!(n(&g["ip"]), w.ip, "{name}");
        }
        let stopped = stack["stopped"].as_str().unwrap_or_default();
        assert!(stopped.contains("not in memory"), "{name}: {stopped}");
        assert!(
            render_text(&items).contains("WARNING: stack memory at"),
            "{name}"
        );
        assert!(
            matches!(items.last(), Some(OutputItem::Command { command, .. }) if command == "lm m ntdll"),
            "{name}: the command after the torn stack ran"
        );
    }
}

/// `!sym noisy` reports each module whose symbols a command loads, once, before its output.
#[test]
fn noisy_symbols_report_each_load_once() {
    let dir = scratch_dir("commands-noisy");
    let (name, table_path) = x64_tables().into_iter().next().expect("a table");
    let (fixture, dump) = fixture_dump(&table_path, 1, DumpKind::BitmapFull, &dir, "noisy.dmp");
    let symbols = symbol_dir_with(&table_path, &dir.join(name));
    let mut s = Session::new(model_for(&dump, &symbols));
    let l = lsass(&fixture.truth);
    let t = l
        .threads
        .iter()
        .find(|t| t.kernel_stack_resident && t.frames.iter().any(|f| f.user))
        .expect("a thread with user frames");
    let items = s.run(&format!(
        "!sym noisy\n.process /p /r {}\n.thread {}\nk\nk",
        hex(l.eprocess),
        hex(t.ethread)
    ));
    let texts: Vec<&str> = items
        .iter()
        .filter_map(|i| match i {
            OutputItem::Command { command, text, .. } if command == "k" => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 2);
    // Every module of a user frame is reported by its symbol source, the first time only.
    for module in ["ntdll", "KERNELBASE"] {
        assert!(
            texts[0].contains(&format!("DBGHELP: {module} - export symbols")),
            "{}",
            texts[0]
        );
    }
    assert!(texts[0].contains("DBGHELP: lsass - no symbols loaded"));
    assert!(!texts[1].contains("DBGHELP"), "{}", texts[1]);
}

/// A driver's symbols come from the symbol path, found by the PDB identity its RSDS record
/// names, as the kernel's do; without a table, from its exports.
#[test]
fn module_symbols_are_looked_up_by_their_pdb_identity() {
    let dir = scratch_dir("commands-module-symbols");
    let (name, table_path) = x64_tables().into_iter().nth(1).expect("a table");
    let (fixture, dump) = fixture_dump(&table_path, 1, DumpKind::BitmapFull, &dir, "m.dmp");
    let symbols = symbol_dir_with(&table_path, &dir.join(name));
    let model = model_for(&dump, &symbols);
    let driver = fixture
        .truth
        .modules
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case("tcpip.sys"))
        .expect("tcpip.sys is loaded");
    let pdb = kds_runtime::kernel::image_at(model.kernel_space(), driver.base)
        .expect("tcpip's headers")
        .pdb_identity()
        .expect("tcpip names its PDB")
        .clone();
    // A table for tcpip's PDB in the Volatility layout, with two functions.
    let (first, second) = (0x1040u64, 0x2230u64);
    let isf = serde_json::json!({
        "metadata": {
            "format": "6.1.0",
            "windows": {"pdb": {"GUID": pdb.guid.to_string(), "age": pdb.age, "database": pdb.name}}
        },
        "base_types": {"unsigned long": {"kind": "int", "size": 4, "signed": false, "endian": "little"},
                       "pointer": {"kind": "int", "size": 8, "signed": false, "endian": "little"}},
        "user_types": {}, "enums": {},
        "symbols": {"TcpReceive": {"address": first}, "TcpSendData": {"address": second}}
    });
    let store = symbols.join(&pdb.name);
    std::fs::create_dir_all(&store).expect("store dir");
    std::fs::write(
        store.join(format!("{}.json", pdb.isf_stem())),
        serde_json::to_vec(&isf).expect("json"),
    )
    .expect("table written");

    let mut s = Session::new(model);
    assert_eq!(s.data(".sympath")["path"], symbols.display().to_string());
    // A path without the table: tcpip falls back to its exports; back to the table's path.
    let elsewhere = dir.join("empty-store");
    std::fs::create_dir_all(&elsewhere).expect("empty store");
    s.run(&format!(".sympath {}", elsewhere.display()));
    assert_ne!(s.data("lmv m tcpip")["modules"][0]["symbols"], "pdb");
    s.run(&format!(".sympath {}", symbols.display()));
    let x = s.data("x tcpip!Tcp*");
    let found: Vec<(u64, &str)> = x["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| (n(&m["address"]), m["name"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        found,
        vec![
            (driver.base + first, "TcpReceive"),
            (driver.base + second, "TcpSendData")
        ]
    );
    let lm = s.data("lm m tcpip");
    assert_eq!(lm["modules"][0]["symbols"], "pdb");
    // A module with no table on the path keeps its exports (or nothing).
    let lm = s.data("lmv m hal");
    assert_ne!(lm["modules"][0]["symbols"], "pdb");
}
