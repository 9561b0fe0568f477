//! An independent peer on the same files: `ntoseye` (a WinDbg-like Rust debugger, installed
//! into the venv by `.ci/venv.sh`) opens the fixture dumps and fetches the kernel's PDB from a
//! symbol store that this test serves over HTTP on 127.0.0.1.
//!
//! How ntoseye finds things in a (non-triage) kernel dump: the page-table root is the header's
//! `DirectoryTableBase`; the kernel image is the first kernel-only, no-execute page in
//! `0xFFFFF800'00000000..=0xFFFFF808'00000000` that starts with `MZ\x90\0` and has `POOLCODE`
//! (8-byte aligned) in its first 4 KiB, with a PE header of machine AMD64. Its CodeView record
//! gives the PDB identity, fetched as `<server>/<name>/<GUID><AGE hex>/<name>`. Everything else
//! (processes, modules, the PEB) comes from that PDB.
//!
//! - `ntoseye_finds_the_fixture_kernel` needs no PDB: the store answers 404 and the test checks
//!   that ntoseye asked for exactly the fixture kernel's identity, which it can only have read
//!   from the nt image it located.
//! - `ntoseye_agrees_with_kds_and_the_truth` builds the fixture from a generated PDB of the
//!   kernel ([`kernel_pdb`]: kds-pdbgen, every symbol at its table RVA), serves that PDB in
//!   store layout, lets kds read it from the store directory, and compares `!process 0 0`,
//!   `lm` and `!peb` (after `.process /p /r <lsass>`) with the fixture's truth and kds's
//!   structured results. The process address, Cid, image name, `lm`'s start addresses and the
//!   PEB address and image base must be printed; ParentCid, Peb, DirBase, ObjectTable, Ldr,
//!   ProcessParameters, ImageFile and CommandLine are checked wherever ntoseye prints them.
//!   ntoseye 0.52 prints `!process 0 0` as a table (full image names past `ImageFileName`'s
//!   15 characters) and `!peb` as `Name : value` rows.
//! - `pdb_built_fixture_analyses_as_the_isf_one` runs kds (no ntoseye) on the ISF-built and the
//!   PDB-built fixture of each table and checks both against their truth.

use kds_e2e::{
    fixture_dump, fixture_with_pdb, lsass, model_for, model_with_sympath, n, pdb_store_with,
    python_venv, scratch_dir, symbol_dir_with, x64_tables,
};
use kds_exec::{Interpreter, RunOptions};
use kds_fixture::dumpfile::DumpKind;
use kds_fixture::{Fixture, GroundTruth};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------------------------
// The symbol store and its HTTP server.

/// The store path of a PDB: `<name>/<GUID><AGE hex>/<name>` (`truth.pdb` is `GUID-AGE`, age in
/// decimal).
fn store_path(truth: &GroundTruth) -> String {
    let (guid, age) = truth
        .pdb
        .split_once('-')
        .unwrap_or_else(|| panic!("truth.pdb {} is GUID-AGE", truth.pdb));
    let age: u32 = age.parse().expect("the age is decimal");
    format!("{0}/{guid}{age:X}/{0}", truth.pdb_name)
}

/// A symbol store served over HTTP on 127.0.0.1: a thread answers `GET`/`HEAD` from `root`
/// (404 when the file is not there) and records every path asked for.
struct SymbolServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl SymbolServer {
    fn start(root: PathBuf) -> SymbolServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve(stream, &root, &log));
            }
        });
        SymbolServer { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve(stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    // The headers, up to the blank line.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let mut words = request.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/").to_string();
    if let Ok(mut l) = log.lock() {
        l.push(path.clone());
    }
    let file = root.join(path.trim_start_matches('/'));
    let safe = !path.split('/').any(|c| c == "..");
    let mut out = &stream;
    match std::fs::read(&file) {
        Ok(body) if safe && file.is_file() => {
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if method != "HEAD" {
                let _ = out.write_all(&body);
            }
        }
        _ => {
            let _ = write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------
// The PDB: the integration point.

/// INTEGRATION POINT: the fixture kernel and a real PDB (MSF 7.0) of it, made in one step
/// (`fixture_with_pdb`: kds-pdbgen writes a PDB with every type of `table` and every symbol at
/// its table RVA, then the fixture is built from that PDB so its nt image names the PDB's
/// GUID and age). Returns the fixture, the PDB and the dump.
fn kernel_pdb(table: &Path, dir: &Path) -> (Fixture, PathBuf, PathBuf) {
    fixture_with_pdb(table, 1, DumpKind::BitmapFull, dir)
}

/// What ntoseye (0.52, which reads PDBs with the `pdb2` crate) takes from the kernel PDB for
/// these commands.
const NTOSEYE_NEEDS: &str = "an MSF 7.0 PDB whose PDB info stream has the image's CodeView \
     GUID and an age >= the image's; symbol RVAs from S_PUB32 records in the global symbol \
     stream or S_GDATA32/S_GPROC32 records in module streams, turned into RVAs through the DBI \
     section headers (so section:offset must land on the ISF RVA): PsInitialSystemProcess (the \
     process walk starts there), PsActiveProcessHead (ends it), PsLoadedModuleList; complete \
     (non-forward) LF_STRUCTURE records with field lists in the TPI stream for _EPROCESS \
     (Pcb, UniqueProcessId, ActiveProcessLinks, ImageFileName, Peb, ObjectTable, \
     InheritedFromUniqueProcessId, optional WoW64Process), _KPROCESS (DirectoryTableBase, \
     optional UserDirectoryTableBase), _KLDR_DATA_TABLE_ENTRY or _LDR_DATA_TABLE_ENTRY \
     (InLoadOrderLinks, DllBase, SizeOfImage, EntryPoint, FullDllName, BaseDllName, \
     TimeDateStamp, CheckSum), _PEB (ImageBaseAddress, Ldr, ProcessParameters), \
     _PEB_LDR_DATA (InLoadOrderModuleList), _RTL_USER_PROCESS_PARAMETERS, _LIST_ENTRY, \
     _UNICODE_STRING; Peb and Ldr typed as pointers to those structs (ntoseye follows them)";

// ---------------------------------------------------------------------------------------------
// Running ntoseye.

/// The ntoseye launcher in the venv.
fn ntoseye() -> PathBuf {
    let exe = python_venv().join("bin/ntoseye");
    assert!(
        exe.exists(),
        "{} missing: .ci/venv.sh installs ntoseye",
        exe.display()
    );
    exe
}

/// Run ntoseye in batch mode on `dump` with `commands`: (exit success, stdout + stderr).
/// `home` holds its symbol cache (`~/.ntoseye`), fresh per test.
fn run_ntoseye(dump: &Path, server: &SymbolServer, home: &Path, commands: &str) -> (bool, String) {
    let out = Command::new(ntoseye())
        .arg("--dump")
        .arg(dump)
        .arg("--pdb-server")
        .arg(server.url())
        .args([
            "--no-pdb-from-memory",
            "--plain-repl",
            "--batch",
            "-c",
            commands,
        ])
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("NTOSEYE_PDB_SERVERS")
        // ntoseye always tries Microsoft's server after ours: send that (https) to a closed
        // local port so it fails at once, online or not; ours (127.0.0.1) goes direct.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("https_proxy", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .expect("ntoseye runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------------
// Parsing WinDbg-style text.

/// A hex number as WinDbg prints it (`ffff8001`23456789`, `0x...`), or None.
fn hex_word(word: &str) -> Option<u64> {
    let w = word
        .trim_matches(|c: char| c == ',' || c == ';' || c == '\'')
        .trim_start_matches("0x")
        .replace('`', "");
    if w.is_empty() || w.len() > 16 {
        return None;
    }
    u64::from_str_radix(&w, 16).ok()
}

/// The word after `key` in `text` (`Cid: 01f0` -> `01f0`).
fn after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    text[at..].split_whitespace().next()
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ProcessBlock {
    address: u64,
    pid: Option<u64>,
    parent_pid: Option<u64>,
    peb: Option<u64>,
    dir_base: Option<u64>,
    object_table: Option<u64>,
    image: Option<String>,
}

/// A number as ntoseye prints it in its tables: `-` is none (zero), `588 (0x24c)` is decimal
/// with its hex, a lone word is hex.
fn table_number(cell: &str) -> Option<u64> {
    let cell = cell.trim();
    if cell == "-" {
        return Some(0);
    }
    if let Some(open) = cell.find("(0x") {
        return hex_word(cell[open + 1..].trim_end_matches(')'));
    }
    hex_word(cell)
}

/// ntoseye 0.52's `!process 0 0`: one table, a header row naming the columns (`PROCESS
/// SessionId Cid Peb Wow64 ParentCid DirBase ObjectTable HandleCount Image`) and one row per
/// process, cells starting where their header word starts.
fn parse_process_table(text: &str) -> Option<Vec<ProcessBlock>> {
    let mut lines = text.lines();
    let header = lines.find(|l| l.starts_with("PROCESS") && l.contains("SessionId"))?;
    let mut columns: Vec<(&str, usize)> = Vec::new();
    let mut at = 0;
    for word in header.split_whitespace() {
        let start = header[at..].find(word)? + at;
        columns.push((word, start));
        at = start + word.len();
    }
    let mut blocks = Vec::new();
    for line in lines {
        let cell = |name: &str| -> Option<&str> {
            let i = columns.iter().position(|(n, _)| *n == name)?;
            let start = columns[i].1;
            let end = columns
                .get(i + 1)
                .map_or(line.len(), |c| c.1)
                .min(line.len());
            line.get(start..end).map(str::trim)
        };
        let Some(address) = cell("PROCESS").and_then(hex_word) else {
            continue;
        };
        blocks.push(ProcessBlock {
            address,
            pid: cell("Cid").and_then(table_number),
            parent_pid: cell("ParentCid").and_then(table_number),
            peb: cell("Peb").and_then(table_number),
            dir_base: cell("DirBase").and_then(table_number),
            object_table: cell("ObjectTable").and_then(table_number),
            image: line
                .get(columns.iter().find(|c| c.0 == "Image")?.1..)
                .map(|s| s.trim().to_string()),
        });
    }
    Some(blocks)
}

/// `!process 0 0` as ntoseye's table ([`parse_process_table`]) or as WinDbg's blocks:
/// `PROCESS <addr>` then `Cid:`, `Peb:`, `ParentCid:`, `DirBase:`,
/// `ObjectTable:`, `Image:` on the following lines.
fn parse_process_blocks(text: &str) -> Vec<ProcessBlock> {
    if let Some(blocks) = parse_process_table(text) {
        return blocks;
    }
    let mut blocks: Vec<ProcessBlock> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("PROCESS ") {
            if let Some(address) = rest.split_whitespace().next().and_then(hex_word) {
                blocks.push(ProcessBlock {
                    address,
                    ..ProcessBlock::default()
                });
            }
            continue;
        }
        let Some(b) = blocks.last_mut() else { continue };
        let field = |key: &str| after(t, key).and_then(hex_word);
        // `ParentCid:` contains `Cid:`: read it first and cut it off.
        let (head, parent) = match t.find("ParentCid:") {
            Some(at) => (&t[..at], after(&t[at..], "ParentCid:").and_then(hex_word)),
            None => (t, None),
        };
        b.parent_pid = b.parent_pid.or(parent);
        b.pid = b.pid.or(after(head, "Cid:").and_then(hex_word));
        b.peb = b.peb.or(after(head, "Peb:").and_then(hex_word));
        b.dir_base = b.dir_base.or(field("DirBase:"));
        b.object_table = b.object_table.or(field("ObjectTable:"));
        if let Some(at) = t.find("Image: ") {
            b.image = Some(t[at + 7..].trim().to_string());
        }
    }
    blocks
}

/// `lm` rows: `<start> <end> <module> ...`; the start addresses.
fn parse_lm_starts(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            let start = hex_word(w.next()?)?;
            let end = hex_word(w.next()?)?;
            w.next()?;
            (end > start).then_some(start)
        })
        .collect()
}

#[derive(Debug, Default)]
struct PebText {
    address: Option<u64>,
    image_base: Option<u64>,
    ldr: Option<u64>,
    process_parameters: Option<u64>,
    image_file: Option<String>,
    command_line: Option<String>,
}

/// `!peb` as WinDbg prints it (`PEB at`, `ImageBaseAddress:`, `Ldr`, `ProcessParameters:`,
/// `ImageFile:`, `CommandLine:`) or as ntoseye 0.52 does (`PEB <addr>`, then `Name : value`
/// rows: `ImageBaseAddress`, `Ldr`, `ProcessParameters`, and under `ProcessParameters <addr>`
/// `CommandLine` and `ImagePathName`, unquoted).
fn parse_peb(text: &str) -> PebText {
    let mut p = PebText::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(r) = t.strip_prefix("PEB at ").or_else(|| t.strip_prefix("PEB ")) {
            p.address = r.split_whitespace().next().and_then(hex_word);
            continue;
        }
        // `Key: value`, `Key : value` or `Key value` (WinDbg's `Ldr`).
        let (key, value) = match t.split_once(':') {
            Some((k, v)) if !k.trim().contains(' ') => (k.trim(), v.trim()),
            _ => match t.split_once(char::is_whitespace) {
                Some((k, v)) if k == "Ldr" => (k, v.trim()),
                _ => continue,
            },
        };
        let word = || value.split_whitespace().next().and_then(hex_word);
        let quoted = || value.trim_matches('\'').to_string();
        match key {
            "ImageBaseAddress" => p.image_base = word(),
            "Ldr" => p.ldr = p.ldr.or(word()),
            "ProcessParameters" => p.process_parameters = p.process_parameters.or(word()),
            "ImageFile" | "ImagePathName" => p.image_file = Some(quoted()),
            "CommandLine" => p.command_line = Some(quoted()),
            _ => {}
        }
    }
    p
}

// ---------------------------------------------------------------------------------------------
// kds's side.

/// kds in process, as a test drives it.
type Kds = kds_e2e::Session;

// ---------------------------------------------------------------------------------------------
// The tests.

/// Without a PDB: ntoseye locates the kernel (header DTB, MZ + POOLCODE page scan) and reads
/// its CodeView identity, which shows in the one store path it asks our server for.
#[test]
fn ntoseye_finds_the_fixture_kernel() {
    let dir = scratch_dir("ntoseye-finds");
    for (name, table) in x64_tables() {
        for kind in [DumpKind::BitmapKernel, DumpKind::Full] {
            let (fixture, dump) =
                fixture_dump(&table, 1, kind, &dir, &format!("{name}-{kind:?}.dmp"));
            let store = dir.join(format!("empty-store-{name}"));
            std::fs::create_dir_all(&store).expect("store dir");
            let server = SymbolServer::start(store);
            let home = dir.join(format!("home-{name}-{kind:?}"));
            std::fs::create_dir_all(&home).expect("home dir");
            let (ok, text) = run_ntoseye(&dump, &server, &home, "lm");
            let want = format!("/{}", store_path(&fixture.truth));
            let asked = server.requests();
            assert!(
                !ok,
                "{name} {kind:?}: ntoseye ran without the kernel PDB:\n{text}"
            );
            assert!(
                !text.contains("ntoskrnl not found"),
                "{name} {kind:?}: ntoseye did not find the nt image:\n{text}"
            );
            assert!(
                asked.contains(&want),
                "{name} {kind:?}: ntoseye asked for {asked:?}, not {want}; it said:\n{text}"
            );
        }
    }
}

/// With the kernel PDB served: `!process 0 0`, `lm` and `!peb` after `.process /p /r <lsass>`
/// as ntoseye prints them agree with the fixture's truth and with kds.
#[test]
fn ntoseye_agrees_with_kds_and_the_truth() {
    let dir = scratch_dir("ntoseye-agrees");
    for (name, table) in x64_tables() {
        let (fixture, pdb, dump) = kernel_pdb(&table, &dir.join(name));
        let truth = &fixture.truth;

        // The store: the PDB at its store path, served over HTTP to ntoseye and read from the
        // directory by kds.
        let identity = fixture.table.identity().expect("the PDB has an identity");
        let store = pdb_store_with(&pdb, identity, &dir.join(name));
        assert!(
            store.join(store_path(truth)).is_file(),
            "{name}: the store holds {}",
            store_path(truth)
        );
        let server = SymbolServer::start(store.clone());
        let home = dir.join(format!("home-{name}"));
        std::fs::create_dir_all(&home).expect("home dir");

        let mut kds = Kds {
            interpreter: Interpreter::new(model_for(&dump, &store), &RunOptions::default()),
        };

        // !process 0 0
        let (ok, text) = run_ntoseye(&dump, &server, &home, "!process 0 0");
        assert!(
            ok,
            "{name}: ntoseye !process 0 0 failed (it needs {NTOSEYE_NEEDS}):\n{text}"
        );
        let blocks = parse_process_blocks(&text);
        let kds_blocks = kds.data("!process 0 0");
        let kds_blocks = kds_blocks["processes"].as_array().expect("process blocks");
        assert_eq!(
            blocks.len(),
            truth.processes.len(),
            "{name}: ntoseye's process count:\n{text}"
        );
        assert_eq!(blocks.len(), kds_blocks.len());
        for ((b, p), k) in blocks.iter().zip(&truth.processes).zip(kds_blocks) {
            let what = format!("{name} {}", p.image_file_name);
            assert_eq!(b.address, p.eprocess, "{what}");
            assert_eq!(b.address, n(&k["address"]), "{what}");
            assert_eq!(b.pid, Some(p.pid), "{what} Cid");
            // `ImageFileName` keeps 15 characters; ntoseye prints the full name (from the
            // process's image path) where it is longer: the truth's name must begin it.
            let image = b.image.as_deref().unwrap_or_default();
            assert!(
                image == p.image_file_name
                    || (p.image_file_name.len() == 15 && image.starts_with(&p.image_file_name)),
                "{what}: ntoseye's image {image:?}"
            );
            // ntoseye 0.52 prints its own block layout: the fields below are checked where it
            // prints them (WinDbg's labels), never skipped when printed wrong.
            let optional = [
                ("ParentCid", b.parent_pid, p.ppid, n(&k["parent_pid"])),
                ("Peb", b.peb, p.peb, n(&k["peb"])),
                ("DirBase", b.dir_base, p.dtb, n(&k["dir_base"])),
                (
                    "ObjectTable",
                    b.object_table,
                    p.object_table,
                    n(&k["object_table"]),
                ),
            ];
            for (label, got, want, kds_value) in optional {
                assert_eq!(want, kds_value, "{what} {label}: kds vs truth");
                if let Some(got) = got {
                    assert_eq!(got, want, "{what} {label}:\n{text}");
                }
            }
        }

        // lm: the kernel's modules.
        let (ok, text) = run_ntoseye(&dump, &server, &home, "lm");
        assert!(ok, "{name}: ntoseye lm failed:\n{text}");
        let starts = parse_lm_starts(&text);
        let kds_lm = kds.data("lm");
        let kds_starts: Vec<u64> = kds_lm["modules"]
            .as_array()
            .expect("modules")
            .iter()
            .map(|m| n(&m["start"]))
            .collect();
        for m in &truth.modules {
            assert!(
                starts.contains(&m.base),
                "{name}: ntoseye's lm lacks {} at {:#x}:\n{text}",
                m.name,
                m.base
            );
        }
        assert_eq!(
            starts.len(),
            truth.modules.len(),
            "{name}: lm rows:\n{text}"
        );
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        let mut kds_sorted = kds_starts;
        kds_sorted.sort_unstable();
        assert_eq!(sorted, kds_sorted, "{name}: lm (ntoseye vs kds)");

        // .process /p /r <lsass>; !peb
        let l = lsass(truth);
        let (ok, text) = run_ntoseye(
            &dump,
            &server,
            &home,
            &format!(".process /p /r {:x}; !peb", l.eprocess),
        );
        assert!(ok, "{name}: ntoseye !peb failed:\n{text}");
        let peb = parse_peb(&text);
        kds.data(&format!(".process /p /r {:x}", l.eprocess));
        let kds_peb = kds.data("!peb");
        assert_eq!(peb.address, Some(l.peb), "{name} PEB at:\n{text}");
        assert_eq!(
            peb.address,
            Some(n(&kds_peb["address"])),
            "{name} PEB (kds)"
        );
        assert_eq!(
            peb.image_base,
            Some(l.image_base),
            "{name} ImageBaseAddress:\n{text}"
        );
        // Checked where ntoseye prints them.
        if let Some(ldr) = peb.ldr {
            assert_eq!(ldr, l.ldr, "{name} Ldr:\n{text}");
        }
        if let Some(pp) = peb.process_parameters {
            assert_eq!(
                pp, l.process_parameters,
                "{name} ProcessParameters:\n{text}"
            );
        }
        if let Some(image) = &peb.image_file {
            assert_eq!(image, &l.image_path, "{name} ImageFile:\n{text}");
        }
        if let Some(cmd) = &peb.command_line {
            assert_eq!(cmd, &l.command_line, "{name} CommandLine:\n{text}");
        }
    }
}

/// kds's `!process 0 0` and `lm` on a dump agree with its fixture's truth, field by field.
fn kds_agrees_with_truth(kds: &mut Kds, truth: &GroundTruth, what: &str) {
    let blocks = kds.data("!process 0 0");
    let blocks = blocks["processes"].as_array().expect("process blocks");
    assert_eq!(blocks.len(), truth.processes.len(), "{what}: process count");
    for (k, p) in blocks.iter().zip(&truth.processes) {
        let who = format!("{what} {}", p.image_file_name);
        assert_eq!(n(&k["address"]), p.eprocess, "{who} address");
        assert_eq!(n(&k["pid"]), p.pid, "{who} pid");
        assert_eq!(n(&k["parent_pid"]), p.ppid, "{who} parent");
        assert_eq!(n(&k["peb"]), p.peb, "{who} peb");
        assert_eq!(n(&k["dir_base"]), p.dtb, "{who} dir_base");
        assert_eq!(n(&k["object_table"]), p.object_table, "{who} object_table");
        assert_eq!(
            k["image"].as_str(),
            Some(p.image_file_name.as_str()),
            "{who}"
        );
    }
    let lm = kds.data("lm");
    let mut got: Vec<(u64, String)> = lm["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .map(|m| {
            (
                n(&m["start"]),
                m["image_name"].as_str().unwrap_or_default().to_lowercase(),
            )
        })
        .collect();
    let mut want: Vec<(u64, String)> = truth
        .modules
        .iter()
        .map(|m| (m.base, m.name.to_lowercase()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{what}: lm");
}

/// A fixture built from a generated PDB (read by kds from the local symbol server) analyses
/// exactly as the fixture built from the ISF table: kds's `!process 0 0` and `lm` match each
/// fixture's truth, and the two machines hold the same processes and modules.
#[test]
fn pdb_built_fixture_analyses_as_the_isf_one() {
    let dir = scratch_dir("pdb-fixture");
    for (name, table) in x64_tables() {
        let (isf_fixture, isf_dump) = fixture_dump(
            &table,
            1,
            DumpKind::BitmapFull,
            &dir,
            &format!("{name}-isf.dmp"),
        );
        let symbols = symbol_dir_with(&table, &dir.join(format!("{name}-isf")));
        let mut kds = Kds {
            interpreter: Interpreter::new(model_for(&isf_dump, &symbols), &RunOptions::default()),
        };
        kds_agrees_with_truth(&mut kds, &isf_fixture.truth, &format!("{name} (ISF)"));

        let (fixture, pdb, dump) = kernel_pdb(&table, &dir.join(name));
        let identity = fixture.table.identity().expect("the PDB has an identity");
        assert_ne!(
            identity.isf_stem(),
            isf_fixture.truth.pdb,
            "{name}: the generated PDB has its own GUID"
        );
        assert_eq!(
            fixture.truth.pdb,
            identity.isf_stem(),
            "{name}: nt names the PDB"
        );
        // The store holds the PDB and nothing else, served over HTTP: kds can only have read
        // the kernel from it, through `-y srv*<downstream>*<url>`.
        let store = pdb_store_with(&pdb, identity, &dir.join(name));
        let server = SymbolServer::start(store);
        let downstream = dir.join(format!("{name}-downstream"));
        let sympath = format!("srv*{}*{}", downstream.display(), server.url());
        let mut kds = Kds {
            interpreter: Interpreter::new(
                model_with_sympath(&dump, &sympath),
                &RunOptions::default(),
            ),
        };
        kds_agrees_with_truth(&mut kds, &fixture.truth, &format!("{name} (PDB)"));
        let key = format!("/ntkrnlmp.pdb/{}/ntkrnlmp.pdb", identity.store_key());
        let asked = server.requests();
        assert!(
            asked.iter().any(|r| r.contains(&key)),
            "{name}: kds downloaded the PDB: {asked:?}"
        );
        if name == "win10_19041" {
            // What `!sym noisy` and `.reload` say about the search, as an engineer reads it
            // (a fresh downstream store, so the download shows; the port, the temporary
            // directories and the generated PDB's GUID are named, not shown).
            let fresh = dir.join(format!("{name}-noisy"));
            let noisy_path = format!("srv*{}*{}", fresh.display(), server.url());
            let mut noisy = Interpreter::new(
                model_with_sympath(&dump, &noisy_path),
                &RunOptions::default(),
            );
            let source = "!sym noisy\n.reload\nlm m nt";
            let playbook = kds_lang::parse(source).expect("commands parse");
            let report = noisy.run(source, &playbook);
            assert!(report.error.is_none(), "{:?}", report.error);
            let text = kds_exec::render_text(&report.items)
                .replace(&fresh.display().to_string(), "<downstream>")
                .replace(&server.url(), "<server>")
                .replace(&identity.store_key(), "<GUID><AGE>")
                .replace(&identity.isf_stem(), "<GUID>-<AGE>");
            // The image size follows the generated PDB's layout, which varies by a few pages.
            let end = fixture.truth.kernel_base + fixture.truth.kernel_size;
            let text = text.replace(
                &format!("{:08x}`{:08x}", end >> 32, end & 0xffff_ffff),
                "<nt end>",
            );
            let text = without_byte_counts(&text);
            assert!(text.contains("SYMSRV:  "), "{text}");
            insta::assert_snapshot!("sym-noisy-reload", text);
        }
        // A second run is served from the downstream store: no request at all.
        let before = server.requests().len();
        let mut again = Kds {
            interpreter: Interpreter::new(
                model_with_sympath(&dump, &sympath),
                &RunOptions::default(),
            ),
        };
        kds_agrees_with_truth(&mut again, &fixture.truth, &format!("{name} (cached PDB)"));
        assert_eq!(
            server.requests().len(),
            before,
            "{name}: the second run asked the server nothing"
        );
        let summary = |t: &GroundTruth| {
            (
                t.processes
                    .iter()
                    .map(|p| (p.image_file_name.clone(), p.pid, p.ppid))
                    .collect::<Vec<_>>(),
                t.modules.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            summary(&fixture.truth),
            summary(&isf_fixture.truth),
            "{name}: the PDB-built machine holds what the ISF-built one holds"
        );
    }
}

/// The parsers on WinDbg's own text.
#[test]
fn parsers_read_windbg_text() {
    let text = "PROCESS ffffa80123456080\n    SessionId: none  Cid: 0004    Peb: 00000000  \
                ParentCid: 0000\n    DirBase: 001ad000  ObjectTable: ffffc00012345680  \
                HandleCount: 2345.\n    Image: System\n\n\
                PROCESS ffffa801`23457080\n    SessionId: 0  Cid: 02a4    Peb: a1b2c3d000  \
                ParentCid: 0214\n    DirBase: 12345000  ObjectTable: ffffc00012399680  \
                HandleCount: 1200.\n    Image: lsass.exe\n";
    let b = parse_process_blocks(text);
    assert_eq!(b.len(), 2);
    assert_eq!(b[1].address, 0xffff_a801_2345_7080);
    assert_eq!(b[1].pid, Some(0x2a4));
    assert_eq!(b[1].parent_pid, Some(0x214));
    assert_eq!(b[1].peb, Some(0xa1_b2c3_d000));
    assert_eq!(b[1].dir_base, Some(0x1234_5000));
    assert_eq!(b[1].object_table, Some(0xffff_c000_1239_9680));
    assert_eq!(b[1].image.as_deref(), Some("lsass.exe"));
    assert_eq!(b[0].pid, Some(4));

    // ntoseye 0.52's table (its real output on a fixture, two rows).
    let table = "0: dmp> !process 0 0\n\
                 PROCESS           SessionId  Cid             Peb               Wow64  ParentCid       DirBase           ObjectTable       HandleCount  Image\n\
                 ffffc23c6403f1f0  0          4 (0x4)         -                 -      0 (0x0)         00000000001a0000  fffff4c7fa0000e0  2425         System\n\
                 ffffc23c64129040  0          5428 (0x1534)   00000043dcab9000  -      1792 (0x700)    0000000000d8f000  fffff4c7fa00c5f0  356          Microsoft.ActiveDirectory.WebServices.exe\n";
    let t = parse_process_blocks(table);
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].address, 0xffff_c23c_6403_f1f0);
    assert_eq!(
        (t[0].pid, t[0].peb, t[0].parent_pid),
        (Some(4), Some(0), Some(0))
    );
    assert_eq!(t[1].pid, Some(0x1534));
    assert_eq!(t[1].parent_pid, Some(0x700));
    assert_eq!(t[1].peb, Some(0x43_dcab_9000));
    assert_eq!(t[1].dir_base, Some(0xd8_f000));
    assert_eq!(t[1].object_table, Some(0xffff_f4c7_fa00_c5f0));
    assert_eq!(
        t[1].image.as_deref(),
        Some("Microsoft.ActiveDirectory.WebServices.exe")
    );
    let ntoseye_lm = "Start             End               Module                 Version  Symbols  Source  Image\n\
                      fffff801b2600000  fffff801b3441000  nt                     -        loaded   cached  ntoskrnl.exe\n";
    assert_eq!(parse_lm_starts(ntoseye_lm), vec![0xffff_f801_b260_0000]);
    let ntoseye_peb = "PEB 000000d950de8000\n\
                       \x20 ImageBaseAddress                    : 00007ff743880000\n\
                       \x20 Ldr                                 : 00007ffadd4031a0\n\
                       \x20 Ldr.InLoadOrderModuleList           : 0000020acd6f02d0 . 0000020acd6f2140\n\
                       \x20 ProcessParameters                   : 0000020acd6f22c0\n\
                       \x20 ProcessParameters 0000020acd6f22c0\n\
                       \x20   CommandLine      : C:\\Windows\\system32\\lsass.exe\n\
                       \x20   ImagePathName    : C:\\Windows\\system32\\lsass.exe\n\
                       \x20   CurrentDirectory : C:\\Windows\\system32\\\n";
    let p = parse_peb(ntoseye_peb);
    assert_eq!(p.address, Some(0xd9_50de_8000));
    assert_eq!(p.image_base, Some(0x7ff7_4388_0000));
    assert_eq!(p.ldr, Some(0x7ffa_dd40_31a0));
    assert_eq!(p.process_parameters, Some(0x20a_cd6f_22c0));
    assert_eq!(
        p.image_file.as_deref(),
        Some("C:\\Windows\\system32\\lsass.exe")
    );
    assert_eq!(
        p.command_line.as_deref(),
        Some("C:\\Windows\\system32\\lsass.exe")
    );

    let lm = "start             end                 module name\n\
              fffff801`b2600000 fffff801`b3646000   nt         (pdb symbols)\n\
              fffff801`b4000000 fffff801`b4010000   hal        (deferred)\n";
    assert_eq!(
        parse_lm_starts(lm),
        vec![0xffff_f801_b260_0000, 0xffff_f801_b400_0000]
    );

    let peb = "PEB at 000000a1b2c3d000\n    ImageBaseAddress:         00007ff6e7f40000\n\
               \x20   Ldr                       00007ffd3e0f53c0\n    Ldr.Initialized:          Yes\n\
               \x20   ProcessParameters: 000001f1f2a51b50\n\
               \x20   ImageFile:    'C:\\Windows\\system32\\lsass.exe'\n\
               \x20   CommandLine:  'C:\\Windows\\system32\\lsass.exe'\n";
    let p = parse_peb(peb);
    assert_eq!(p.address, Some(0xa1_b2c3_d000));
    assert_eq!(p.image_base, Some(0x7ff6_e7f4_0000));
    assert_eq!(p.ldr, Some(0x7ffd_3e0f_53c0));
    assert_eq!(p.process_parameters, Some(0x1f1_f2a5_1b50));
    assert_eq!(
        p.image_file.as_deref(),
        Some("C:\\Windows\\system32\\lsass.exe")
    );
}

/// `... from <url>: 123456 bytes - copied` with the count replaced by `<n>` (a generated
/// PDB's size varies with its build path).
fn without_byte_counts(text: &str) -> String {
    text.lines()
        .map(|line| match line.find(" bytes - copied") {
            Some(end) => {
                let start = line[..end].rfind(' ').map_or(0, |s| s + 1);
                format!("{}<n>{}", &line[..start], &line[end..])
            }
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
