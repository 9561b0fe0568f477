//! Independent readers see in our fixture dumps what the builder put there.
//!
//! Volatility 3 (`windows.info`, `windows.pslist`, `windows.modules`, `windows.handles`) finds
//! the kernel in the fixtures the way it finds it in Windows' own dumps, with nothing
//! special-cased: the self-referencing system PML4 in low memory, KUSER_SHARED_DATA at
//! 0xFFFFF780`00000000 and 0x7FFE0000, the processor start block, a decoded KDBG whose KernBase
//! leads to an MZ image with the table's RSDS record, and the table's globals (for handles:
//! `ObTypeIndexTable` and the `_OBJECT_TYPE` names, `ObHeaderCookie`). The C++ kdmp-parser (its
//! Python bindings) reads all three dump kinds.
//!
//! Both readers live in `<repo>/.venv`, which `.ci/venv.sh` creates (CI runs it). Without the
//! venv these tests fail: run `bash .ci/venv.sh`.

use kds_e2e::{scratch_dir, x64_tables};
use kds_fixture::dumpfile::{dump_pfns, write_dump, DumpKind};
use kds_fixture::{build, Fixture, FixtureSpec};
use kds_runtime::mmu::X64;
use kds_runtime::model::ModelContext;
use kds_runtime::target::{DumpTarget, Target};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Virtual addresses as Volatility prints them: the 48 bits its layer works with.
const VA_MASK: u64 = 0xFFFF_FFFF_FFFF;
const SEED: u64 = 7;

/// The venv's Python and `vol`, or a failure saying how to create them.
/// The venv with Volatility 3 and kdmp-parser: `.ci/venv.sh` makes it on first use.
fn venv() -> PathBuf {
    let venv = kds_e2e::python_venv();
    for tool in ["bin/vol", "bin/python"] {
        assert!(
            venv.join(tool).exists(),
            "{} is missing after .ci/venv.sh ran",
            venv.join(tool).display()
        );
    }
    venv
}

/// A symbol directory in Volatility's layout: `<dir>/windows/ntkrnlmp.pdb/<GUID>-<AGE>.json.xz`.
fn volatility_symbols(table: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("symbols");
    let pdb = root.join("windows").join("ntkrnlmp.pdb");
    std::fs::create_dir_all(&pdb).expect("symbol dir");
    let file = table.file_name().expect("table file name");
    std::fs::copy(table, pdb.join(file)).expect("copy the table");
    root
}

/// Run one Volatility plugin, offline, and parse its JSON rows.
fn vol(venv: &Path, dump: &Path, symbols: &Path, cache: &Path, plugin: &str) -> Vec<Value> {
    let out = Command::new(venv.join("bin/vol"))
        .args(["-q", "-r", "json", "--offline", "-f"])
        .arg(dump)
        .arg("-s")
        .arg(symbols)
        .arg("--cache-path")
        .arg(cache)
        .arg(plugin)
        .output()
        .expect("vol runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vol {plugin} on {} failed ({}):\n{stderr}\n{stdout}",
        dump.display(),
        out.status
    );
    match serde_json::from_str::<Value>(&stdout) {
        Ok(Value::Array(rows)) => rows,
        other => panic!(
            "vol {plugin} on {}: not a JSON array: {other:?}\n{stderr}",
            dump.display()
        ),
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a FILETIME.
fn filetime_text(filetime: u64) -> String {
    let secs = (filetime / 10_000_000) as i64 - 11_644_473_600;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Volatility's datetime text without the fraction and zone, `T` or space separated.
fn vol_time(v: &Value) -> String {
    v.as_str()
        .unwrap_or_default()
        .replace('T', " ")
        .chars()
        .take(19)
        .collect()
}

fn check_info(f: &Fixture, rows: &[Value], what: &str) {
    let get = |name: &str| -> String {
        rows.iter()
            .find(|r| r["Variable"] == name)
            .and_then(|r| r["Value"].as_str())
            .unwrap_or_else(|| panic!("{what}: windows.info has no {name}: {rows:?}"))
            .to_string()
    };
    let t = &f.truth;
    let v = f.spec.version;
    assert_eq!(
        get("Kernel Base"),
        format!("{:#x}", t.kernel_base & VA_MASK),
        "{what}"
    );
    assert_eq!(get("DTB"), format!("{:#x}", t.kernel_dtb), "{what}");
    assert!(
        get("Symbols").ends_with(&format!("ntkrnlmp.pdb/{}.json.xz", t.pdb)),
        "{what}"
    );
    assert_eq!(get("Is64Bit"), "True", "{what}");
    assert_eq!(get("IsPAE"), "False", "{what}");
    assert!(
        get("memory_layer").contains("WindowsCrashDump64Layer"),
        "{what}"
    );
    assert_eq!(
        get("KdDebuggerDataBlock"),
        format!("{:#x}", t.kd_debugger_data_block & VA_MASK),
        "{what}"
    );
    assert!(
        get("NTBuildLab").starts_with(&format!("{}.", v.build)),
        "{what}"
    );
    assert_eq!(
        get("CSDVersion"),
        if v.build == 7601 { "1" } else { "0" },
        "{what}"
    );
    assert_eq!(get("Major/Minor"), format!("15.{}", v.build), "{what}");
    assert_eq!(get("MachineType"), "34404", "{what}");
    assert_eq!(
        get("KeNumberProcessors"),
        f.spec.processor_count.to_string(),
        "{what}"
    );
    assert_eq!(
        get("SystemTime").chars().take(19).collect::<String>(),
        filetime_text(t.system_time),
        "{what}"
    );
    assert_eq!(get("NtSystemRoot"), "C:\\Windows", "{what}");
    let product = if v.server {
        "NtProductServer"
    } else {
        "NtProductWinNt"
    };
    assert_eq!(get("NtProductType"), product, "{what}");
    assert_eq!(get("NtMajorVersion"), v.major.to_string(), "{what}");
    assert_eq!(get("NtMinorVersion"), v.minor.to_string(), "{what}");
    assert_eq!(
        get("PE MajorOperatingSystemVersion"),
        v.major.to_string(),
        "{what}"
    );
    assert_eq!(
        get("PE MinorOperatingSystemVersion"),
        v.minor.to_string(),
        "{what}"
    );
    assert_eq!(get("PE Machine"), "34404", "{what}");
}

fn check_pslist(f: &Fixture, rows: &[Value], what: &str) {
    let truth = &f.truth.processes;
    assert!(!truth.is_empty(), "{what}: the fixture has no processes");
    let seen: Vec<(u64, u64, String, u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["PID"].as_u64().unwrap_or(u64::MAX),
                r["PPID"].as_u64().unwrap_or(u64::MAX),
                r["ImageFileName"].as_str().unwrap_or_default().to_string(),
                r["Threads"].as_u64().unwrap_or(u64::MAX),
                vol_time(&r["CreateTime"]),
            )
        })
        .collect();
    let expected: Vec<(u64, u64, String, u64, String)> = truth
        .iter()
        .map(|p| {
            (
                p.pid,
                p.ppid,
                p.image_file_name.clone(),
                p.threads.len() as u64,
                filetime_text(p.create_time),
            )
        })
        .collect();
    assert_eq!(
        seen, expected,
        "{what}: (PID, PPID, ImageFileName, Threads, CreateTime)"
    );
    for (row, p) in rows.iter().zip(truth) {
        assert_eq!(
            row["Offset(V)"].as_u64(),
            Some(p.eprocess & VA_MASK),
            "{what}: pid {}",
            p.pid
        );
        assert!(
            row["ExitTime"].is_null(),
            "{what}: pid {} has exited",
            p.pid
        );
    }
}

/// A fresh Volatility cache directory for one capture file in `dir`.
fn cache_for(dir: &Path, file: &str) -> PathBuf {
    let cache = dir.join(format!("cache-{file}"));
    std::fs::create_dir_all(&cache).expect("cache dir");
    cache
}

/// Volatility's process and module lists of `memory` equal the fixture's.
fn check_lists(f: &Fixture, venv: &Path, memory: &Path, symbols: &Path, cache: &Path, what: &str) {
    check_pslist(
        f,
        &vol(venv, memory, symbols, cache, "windows.pslist"),
        what,
    );
    check_modules(
        f,
        &vol(venv, memory, symbols, cache, "windows.modules"),
        what,
    );
}

fn check_modules(f: &Fixture, rows: &[Value], what: &str) {
    let seen: Vec<(String, String, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["Name"].as_str().unwrap_or_default().to_string(),
                r["Path"].as_str().unwrap_or_default().to_string(),
                r["Base"].as_u64().unwrap_or_default(),
                r["Size"].as_u64().unwrap_or_default(),
                r["Offset"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64, u64, u64)> = f
        .truth
        .modules
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.path.clone(),
                m.base & VA_MASK,
                m.size,
                m.entry & VA_MASK,
            )
        })
        .collect();
    assert!(
        expected.len() > 20,
        "{what}: only {} modules",
        expected.len()
    );
    assert_eq!(seen, expected, "{what}: (Name, Path, Base, Size, entry)");
}

/// Run `case(name, table, case_dir, venv)` for every x64 build, one thread each.
fn each_build(dir: &Path, case: impl Fn(&str, &Path, &Path, &Path) + Sync) {
    let venv = venv();
    std::thread::scope(|scope| {
        let handles: Vec<_> = x64_tables()
            .into_iter()
            .map(|(name, table)| {
                let (dir, venv, case) = (dir.join(name), venv.clone(), &case);
                scope.spawn(move || {
                    std::fs::create_dir_all(&dir).expect("case dir");
                    case(name, &table, &dir, &venv);
                })
            })
            .collect();
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

#[test]
fn volatility_reads_full_and_bitmap_dumps_of_every_build() {
    let dir = scratch_dir("volatility");
    each_build(&dir, |name, table, dir, venv| {
        let fixture = build(&FixtureSpec::hung_server(table, SEED)).expect("fixture builds");
        let symbols = volatility_symbols(table, dir);
        for (kind, file) in [
            (DumpKind::BitmapFull, "bitmap.dmp"),
            (DumpKind::Full, "full.dmp"),
        ] {
            let dump = dir.join(file);
            write_dump(&fixture, &dump, kind).expect("dump written");
            let cache = cache_for(dir, file);
            let what = format!("{name} {file}");
            check_info(
                &fixture,
                &vol(venv, &dump, &symbols, &cache, "windows.info"),
                &what,
            );
            check_lists(&fixture, venv, &dump, &symbols, &cache, &what);
            std::fs::remove_file(&dump).ok();
        }
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// Header-less images: Volatility 3 finds the kernel in our raw images and ELF cores with its
/// own scanning (an independent discovery) and lists the processes and modules the fixture
/// put there.
#[test]
fn volatility_reads_raw_images_and_elf_cores_of_every_build() {
    use kds_fixture::snapshotfile::{write_elf_core, write_raw_image};
    let dir = scratch_dir("volatility-images");
    each_build(&dir, |name, table, dir, venv| {
        let fixture = build(&FixtureSpec::hung_server(table, SEED)).expect("fixture builds");
        let symbols = volatility_symbols(table, dir);
        for file in ["memory.raw", "memory.elf"] {
            let image = dir.join(file);
            if file.ends_with("raw") {
                write_raw_image(&fixture, &image).expect("raw image written");
            } else {
                write_elf_core(&fixture, &image).expect("ELF core written");
            }
            let cache = cache_for(dir, file);
            check_lists(
                &fixture,
                venv,
                &image,
                &symbols,
                &cache,
                &format!("{name} {file}"),
            );
            std::fs::remove_file(&image).ok();
        }
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// VMware snapshots: Volatility 3's `VmwareLayer` lays out the fixture's `.vmem` with the
/// regions of the `.vmss` beside it (the legacy hole left out of the file, so every page past it
/// is at another file offset than its physical address) and lists the same processes and modules.
#[test]
fn volatility_reads_vmware_vmem_with_vmss_of_every_build() {
    use kds_fixture::vmwarefile::{regions, state_file_with, write_vmware};
    let dir = scratch_dir("volatility-vmware");
    each_build(&dir, |name, table, dir, venv| {
        let fixture = build(&FixtureSpec::hung_server(table, SEED)).expect("fixture builds");
        let symbols = volatility_symbols(table, dir);
        let vmem = dir.join("memory.vmem");
        let vmss = write_vmware(&fixture, &vmem).expect("vmem and vmss written");
        // The same memory with a version-0 state file whose "memory" group starts with tags in
        // the large-data form (4-byte sizes): both readers must step over them alike.
        let large = dir.join("large.vmem");
        std::fs::copy(&vmem, &large).expect("copy the vmem");
        let state = state_file_with(&regions(&fixture).expect("regions"), 0xbed2_bed0, true)
            .expect("state file");
        std::fs::write(large.with_extension("vmss"), state).expect("large-tag vmss written");
        for image in [&vmem, &large] {
            let file = image.file_name().and_then(|n| n.to_str()).expect("name");
            let cache = cache_for(dir, file);
            check_lists(
                &fixture,
                venv,
                image,
                &symbols,
                &cache,
                &format!("{name} {file}"),
            );
        }
        for file in [&vmem, &vmss, &large, &large.with_extension("vmss")] {
            std::fs::remove_file(file).ok();
        }
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// kds's `handles` field of each process, by PID, read from `dump`.
fn kds_handle_counts(f: &Fixture, dump: &Path) -> HashMap<u64, Option<u64>> {
    let target: Arc<dyn Target> = Arc::new(DumpTarget::open(dump).expect("dump opens"));
    let dtb = target.identity().directory_table_base;
    let model = ModelContext::new(
        target,
        &X64,
        dtb,
        Arc::new(f.table.clone()),
        f.truth.kernel_base,
    );
    let rows = model.processes().expect("processes");
    rows.rows
        .iter()
        .map(|r| {
            let pid = r.field("pid").ok().and_then(|v| v.as_u64()).expect("pid");
            (pid, r.field("handles").expect("handles").as_u64())
        })
        .collect()
}

/// `windows.handles` lists, per process, the handles the fixture opened: same values, object
/// bodies, types and access masks; its count and kds's equal truth. Volatility skips an entry
/// whose header's stored `TypeIndex` byte is 0 before decoding it (`if item.TypeIndex != 0`),
/// which on cookie-encoded builds (`index ^ ObHeaderCookie ^ header >> 8`) is a valid object
/// one time in 256: those handles, and only those, are expected missing from its list.
fn check_handles(f: &Fixture, dump: &Path, rows: &[Value], what: &str) {
    let kds = kds_handle_counts(f, dump);
    let type_index = f
        .table
        .offset_of("_OBJECT_HEADER", "TypeIndex")
        .expect("TypeIndex");
    let target = DumpTarget::open(dump).expect("dump opens");
    let dtb = target.identity().directory_table_base;
    let space = kds_runtime::mmu::AddressSpace::new(Arc::new(target), &X64, dtb);
    let mut listed: HashMap<u64, Vec<(u64, u64, String, u64)>> = HashMap::new();
    for r in rows {
        listed
            .entry(r["PID"].as_u64().expect("PID"))
            .or_default()
            .push((
                r["HandleValue"].as_u64().expect("HandleValue"),
                r["Offset"].as_u64().expect("Offset"),
                r["Type"].as_str().unwrap_or_default().to_string(),
                r["GrantedAccess"].as_u64().expect("GrantedAccess"),
            ));
    }
    let mut total = 0;
    let mut skipped = 0;
    for p in &f.truth.processes {
        let ctx = format!("{what}: pid {} ({})", p.pid, p.image_file_name);
        let mut seen = listed.remove(&p.pid).unwrap_or_default();
        seen.sort_unstable();
        if p.object_table == 0 {
            assert!(seen.is_empty(), "{ctx}: handles without a table");
            assert_eq!(kds[&p.pid], None, "{ctx}");
            continue;
        }
        assert_eq!(kds[&p.pid], Some(u64::from(p.handle_count)), "{ctx}: kds");
        let expected: Vec<(u64, u64, String, u64)> = p
            .handles
            .iter()
            .filter(|h| {
                let stored = space.read_u8(h.header + type_index).expect("TypeIndex");
                if stored == 0 {
                    skipped += 1;
                }
                stored != 0
            })
            .map(|h| (h.handle, h.object & VA_MASK, h.kind.clone(), h.access))
            .collect();
        assert_eq!(
            seen, expected,
            "{ctx}: (HandleValue, Offset, Type, GrantedAccess)"
        );
        total += seen.len();
    }
    assert!(listed.is_empty(), "{what}: handles of unknown processes");
    let truth_total: usize = f.truth.processes.iter().map(|p| p.handles.len()).sum();
    assert_eq!(total + skipped, truth_total, "{what}");
    eprintln!(
        "{what}: windows.handles lists {total} handles, skips {skipped} with TypeIndex byte 0"
    );
}

#[test]
fn volatility_lists_the_handles_kds_counts_on_every_build() {
    let venv = venv();
    let dir = scratch_dir("volatility-handles");
    std::thread::scope(|scope| {
        let jobs: Vec<_> = x64_tables()
            .into_iter()
            .map(|(name, table)| {
                let (dir, venv) = (dir.join(name), venv.clone());
                scope.spawn(move || {
                    std::fs::create_dir_all(&dir).expect("case dir");
                    let fixture =
                        build(&FixtureSpec::hung_server(&table, SEED)).expect("fixture builds");
                    let symbols = volatility_symbols(&table, &dir);
                    let dump = dir.join("bitmap.dmp");
                    write_dump(&fixture, &dump, DumpKind::BitmapFull).expect("dump written");
                    let cache = dir.join("cache");
                    std::fs::create_dir_all(&cache).expect("cache dir");
                    let rows = vol(&venv, &dump, &symbols, &cache, "windows.handles");
                    check_handles(&fixture, &dump, &rows, name);
                    std::fs::remove_file(&dump).ok();
                })
            })
            .collect();
        for job in jobs {
            if let Err(panic) = job.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    std::fs::remove_dir_all(&dir).ok();
}

/// What the Python kdmp-parser reports about a dump, as JSON.
const KDMP_SCRIPT: &str = r#"
import json, sys, kdmp_parser
path, kdbg, probes = sys.argv[1], int(sys.argv[2], 16), json.loads(sys.argv[3])
p = kdmp_parser.KernelDumpParser(path)
dtb = p.directory_table_base
def read(va, n):
    page = p.read_virtual_page(va & ~0xFFF, dtb)
    return None if page is None else bytes(page[(va & 0xFFF):(va & 0xFFF) + n])
tag = read(kdbg + 0x10, 4)
out = {
    "type": int(p.type),
    "dtb": dtb,
    "rip": p.context.Rip,
    "rsp": p.context.Rsp,
    "pages": sorted(pa >> 12 for pa in (x if isinstance(x, int) else x[0] for x in p.pages)),
    "kdbg_tag": None if tag is None else tag.decode("latin-1"),
    "kuser_kernel": p.translate_virtual(0xFFFFF78000000000, dtb),
    "kuser_user": p.translate_virtual(0x7FFE0000, dtb),
    "present": {str(pa): p.read_physical_page(pa) is not None for pa in probes},
}
print("KDS-JSON " + json.dumps(out))
"#;

#[test]
fn kdmp_parser_reads_full_bitmap_and_kernel_dumps() {
    let venv = venv();
    let dir = scratch_dir("kdmp-python");
    for (name, table) in x64_tables() {
        let fixture = build(&FixtureSpec::hung_server(&table, SEED)).expect("fixture builds");
        let m = &fixture.machine;
        // A user-only page (a PEB) and a kernel page (the KDBG), by physical address.
        let process = fixture
            .truth
            .processes
            .iter()
            .find(|p| p.peb != 0)
            .expect("a process with a PEB");
        let peb_pa = m
            .translate(process.dtb, process.peb)
            .expect("PEB is mapped")
            & !0xFFF;
        let kdbg = fixture.truth.kd_debugger_data_block;
        let kdbg_pa = m.translate(m.kernel_dtb, kdbg).expect("KDBG is mapped") & !0xFFF;
        let kuser_pa = fixture.kernel.kuser_shared_data_pfn << 12;
        for (kind, code) in [
            (DumpKind::Full, 1),
            (DumpKind::BitmapFull, 5),
            (DumpKind::BitmapKernel, 6),
        ] {
            let what = format!("{name} {kind:?}");
            let dump = dir.join(format!("{name}-{code}.dmp"));
            write_dump(&fixture, &dump, kind).expect("dump written");
            let out = Command::new(venv.join("bin/python"))
                .arg("-c")
                .arg(KDMP_SCRIPT)
                .arg(&dump)
                .arg(format!("{kdbg:x}"))
                .arg(format!("[{peb_pa}, {kdbg_pa}]"))
                .output()
                .expect("python runs");
            assert!(
                out.status.success(),
                "{what}: kdmp-parser failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The C++ library prints its own diagnostics on stdout: take the marked line.
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout
                .lines()
                .find_map(|l| l.strip_prefix("KDS-JSON "))
                .unwrap_or_else(|| panic!("{what}: no result from the script:\n{stdout}"));
            let v: Value = serde_json::from_str(line).expect("JSON from the script");
            assert_eq!(v["type"], code, "{what}");
            // Every page the dump holds, no more: the C++ parser walks `Pages / 8` whole bytes
            // of the bitmap, so a `Pages` that is not a multiple of 8 hides the last pages.
            let pages: Vec<u64> = serde_json::from_value(v["pages"].clone()).expect("page list");
            let expected = dump_pfns(&fixture, kind);
            let missing: Vec<_> = expected
                .iter()
                .filter(|p| pages.binary_search(p).is_err())
                .collect();
            assert!(
                missing.is_empty(),
                "{what}: kdmp-parser does not see pages {missing:x?}"
            );
            assert_eq!(pages, expected, "{what}: page set");

            // The header names processor 0's CR3: the page tables of the process it ran.
            let current_dtb = fixture
                .truth
                .processes
                .iter()
                .find(|p| p.threads.iter().any(|t| t.processor == Some(0)))
                .map(|p| p.dtb);
            assert_eq!(v["dtb"].as_u64(), current_dtb, "{what}");
            assert_ne!(
                current_dtb,
                Some(m.kernel_dtb),
                "{what}: processor 0 runs a user process"
            );
            assert_eq!(v["kdbg_tag"], "KDBG", "{what}");
            assert_eq!(v["kuser_kernel"].as_u64(), Some(kuser_pa), "{what}");
            assert_eq!(v["kuser_user"].as_u64(), Some(kuser_pa), "{what}");
            let rip = v["rip"].as_u64().unwrap_or_default();
            let bugcheck = fixture.truth.kernel_base
                + fixture
                    .table
                    .symbol_rva("KeBugCheckEx")
                    .expect("KeBugCheckEx");
            assert_eq!(rip, bugcheck, "{what}: the context is KeBugCheckEx's");
            let present = |pa: u64| v["present"][pa.to_string()].as_bool();
            assert_eq!(present(kdbg_pa), Some(true), "{what}: KDBG page");
            assert_eq!(
                present(peb_pa),
                Some(kind != DumpKind::BitmapKernel),
                "{what}: PEB page"
            );
            std::fs::remove_file(&dump).ok();
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Our fixed `KDDEBUGGER_DATA64` layout (from wdbgexts.h) agrees with the one Volatility ships.
#[test]
fn kdbg_layout_matches_volatilitys() {
    let venv = venv();
    let lib = std::fs::read_dir(venv.join("lib"))
        .expect("venv lib dir")
        .filter_map(Result::ok)
        .map(|e| {
            e.path()
                .join("site-packages/volatility3/framework/symbols/windows/kdbg.json")
        })
        .find(|p| p.exists())
        .expect("volatility3's kdbg.json in the venv");
    let isf: Value =
        serde_json::from_slice(&std::fs::read(&lib).expect("read kdbg.json")).expect("JSON");
    let fields = isf["user_types"]["_KDDEBUGGER_DATA64"]["fields"]
        .as_object()
        .expect("_KDDEBUGGER_DATA64 fields");
    let mut compared = 0;
    for (name, field) in fields {
        let theirs = field["offset"].as_u64().expect("offset");
        if let Some(ours) = kds_fixture::kernel::kdbg::field_offset(name) {
            assert_eq!(ours, theirs, "KDDEBUGGER_DATA64.{name}");
            compared += 1;
        }
    }
    assert!(compared > 100, "only {compared} fields compared");
}

/// Volatility's `windows.cmdline` rows as (PID, Process, Args), in its order.
fn check_cmdline(f: &Fixture, rows: &[Value], what: &str) {
    let seen: Vec<(u64, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["PID"].as_u64().unwrap_or(u64::MAX),
                r["Process"].as_str().unwrap_or_default().to_string(),
                r["Args"].as_str().unwrap_or_default().to_string(),
            )
        })
        .filter(|(pid, _, _)| *pid != 4)
        .collect();
    let expected: Vec<(u64, String, String)> = f
        .truth
        .processes
        .iter()
        .filter(|p| p.peb != 0)
        .map(|p| (p.pid, p.image_file_name.clone(), p.command_line.clone()))
        .collect();
    assert!(
        expected.iter().all(|(_, _, c)| !c.is_empty()),
        "{what}: every user process has a command line"
    );
    assert_eq!(seen, expected, "{what}: (PID, Process, Args)");
}

/// `windows.modules` of an x86 kernel: (Name, Path, Base, Size, entry) in list order.
fn check_modules_x86(f: &Fixture, rows: &[Value], what: &str) {
    let seen: Vec<(String, String, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["Name"].as_str().unwrap_or_default().to_string(),
                r["Path"].as_str().unwrap_or_default().to_string(),
                r["Base"].as_u64().unwrap_or_default(),
                r["Size"].as_u64().unwrap_or_default(),
                r["Offset"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64, u64, u64)> = f
        .truth
        .modules
        .iter()
        .map(|m| (m.name.clone(), m.path.clone(), m.base, m.size, m.entry))
        .collect();
    assert_eq!(seen, expected, "{what}: (Name, Path, Base, Size, entry)");
}

/// Volatility 3 reads the fixture's 32-bit dumps (PAE and not; full and bitmap, the types its
/// `WindowsCrashDump32Layer` reads) with the table the fixture wrote as its symbol table
/// (`<dir>/windows/<pdb>/<GUID>-1.json.xz`) and lists the processes, their command lines
/// and the kernel modules the builder put there; from the dumps also each process's session
/// and VAD tree.
#[test]
fn volatility_reads_32_bit_dumps_of_x86_machines() {
    let venv = venv();
    let dir = scratch_dir("x86_dumps");
    for (name, table) in kds_e2e::x86_tables() {
        let case = dir.join(name);
        std::fs::create_dir_all(&case).expect("case dir");
        let f = build(&FixtureSpec::hung_server(&table, SEED)).expect("x86 fixture builds");
        let symbols = case.join("symbols");
        f.x86_table
            .as_ref()
            .expect("an x86 fixture pairs with a written table")
            .store(&symbols.join("windows"))
            .expect("the table is written");
        for (kind, label) in [(DumpKind::BitmapFull, "bitmap"), (DumpKind::Full, "full")] {
            let dump = case.join(format!("{name}.{label}.dmp"));
            write_dump(&f, &dump, kind).expect("32-bit dump written");
            let cache = case.join(format!("cache-{label}"));
            std::fs::create_dir_all(&cache).expect("cache dir");
            let what = format!("{name} {label}");
            let pslist = vol(&venv, &dump, &symbols, &cache, "windows.pslist");
            check_pslist(&f, &pslist, &what);
            let cmdline = vol(&venv, &dump, &symbols, &cache, "windows.cmdline");
            check_cmdline(&f, &cmdline, &what);
            let modules = vol(&venv, &dump, &symbols, &cache, "windows.modules");
            check_modules_x86(&f, &modules, &what);
            check_sessions(&f, &pslist, &what);
            let vads = vol(&venv, &dump, &symbols, &cache, "windows.vadwalk");
            check_vads(&f, &vads, &what);
        }
        // The machine as a VMware snapshot, and the dump `kds snapshot` writes from it (kds
        // finds the kernel by discovery, then writes a 32-bit PAGEDUMP): Volatility reads both.
        let vmem = case.join(format!("{name}.vmem"));
        kds_fixture::vmwarefile::write_vmware(&f, &vmem).expect("vmem and vmss written");
        let written = case.join(format!("{name}.kds.dmp"));
        write_x86_dump_with_kds(&f, &vmem, &symbols.join("windows"), &written);
        for (memory, label) in [(&vmem, "vmem"), (&written, "kds-written")] {
            let cache = case.join(format!("cache-{label}"));
            std::fs::create_dir_all(&cache).expect("cache dir");
            let what = format!("{name} {label}");
            check_pslist(
                &f,
                &vol(&venv, memory, &symbols, &cache, "windows.pslist"),
                &what,
            );
            check_cmdline(
                &f,
                &vol(&venv, memory, &symbols, &cache, "windows.cmdline"),
                &what,
            );
            let modules = vol(&venv, memory, &symbols, &cache, "windows.modules");
            check_modules_x86(&f, &modules, &what);
        }
    }
}

/// `windows.pslist`'s SessionId (read through `_EPROCESS.Session`) of each process is the
/// truth's: none for System and smss.exe, else its session.
fn check_sessions(f: &Fixture, rows: &[Value], what: &str) {
    for p in &f.truth.processes {
        let row = rows
            .iter()
            .find(|r| r["PID"].as_u64() == Some(p.pid))
            .unwrap_or_else(|| panic!("{what}: pslist has no pid {}", p.pid));
        assert_eq!(
            row["SessionId"].as_u64(),
            p.session_id.map(u64::from),
            "{what}: {} ({}) SessionId",
            p.image_file_name,
            p.pid
        );
    }
}

/// `windows.vadwalk` (which walks the VAD tree from `VadRoot` and keeps only nodes whose pool
/// tag says VAD) finds each process's VADs as the truth has them: node, range and tag.
fn check_vads(f: &Fixture, rows: &[Value], what: &str) {
    for p in &f.truth.processes {
        let mut seen: Vec<(u64, u64, u64, String)> = rows
            .iter()
            .filter(|r| r["PID"].as_u64() == Some(p.pid))
            .map(|r| {
                (
                    r["Offset"].as_u64().unwrap_or(0),
                    r["Start"].as_u64().unwrap_or(0),
                    r["End"].as_u64().unwrap_or(0),
                    r["Tag"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        seen.sort();
        let mut want: Vec<(u64, u64, u64, String)> = p
            .vads
            .iter()
            .map(|v| {
                let tag = if v.image { "Vad " } else { "VadS" };
                (v.address, v.start, v.end, tag.to_string())
            })
            .collect();
        want.sort();
        assert_eq!(
            seen, want,
            "{what}: {} ({}) VADs (node, start, end, tag)",
            p.image_file_name, p.pid
        );
    }
}

/// What `kds snapshot -z <image> -y <tables> -o <out> --pages all` does: open the image (x86,
/// PAE as the machine has it, found by discovery), find the kernel with the written table and
/// write every page as a 32-bit bitmap dump.
fn write_x86_dump_with_kds(f: &Fixture, image: &Path, tables: &Path, out: &Path) {
    use kds_runtime::dump_writer::{write_bitmap_dump, PageSelection};
    use kds_runtime::target::{Arch, SnapshotTarget};
    let pae = f.x86_table.as_ref().is_some_and(|t| t.pae);
    let source: Arc<dyn Target> = Arc::new(SnapshotTarget::open(image).expect("kds opens it"));
    assert_eq!(source.identity().arch, Arch::X86 { pae });
    let path = kds_runtime::symbols::sympath::SymbolPath::parse(&tables.display().to_string())
        .expect("symbol path");
    let session = kds_runtime::session::Session::open(source, path).expect("session");
    let written = write_bitmap_dump(&session, &PageSelection::All, None, out).expect("written");
    assert_eq!(written.unreadable, 0);
    let dump = kds_crashdump::CrashDump::open(out).expect("kds reads what it wrote");
    assert_eq!(dump.bitness(), kds_crashdump::Bitness::Bits32);
    assert_eq!(dump.pae_enabled(), Some(pae));
    let reread = DumpTarget::open(out).expect("the written dump opens");
    let id = reread.identity();
    assert_eq!(id.directory_table_base, f.truth.kernel_dtb);
    assert_eq!(
        id.ps_active_process_head,
        Some(f.truth.ps_active_process_head)
    );
    assert_eq!(
        id.ps_loaded_module_list,
        Some(f.truth.ps_loaded_module_list)
    );
    assert_eq!(id.processor_count, f.truth.processor_count);
}
