//! pefile, an independent PE reader, agrees with the fixture's images: the nt image's and the
//! user DLLs' exception directories parse (RUNTIME_FUNCTIONs sorted, each with a decodable
//! UNWIND_INFO), every frame of the ground truth's stacks lies past the prologue of a function
//! there (with a machine frame where a trap frame is crossed), and the DLLs' exports resolve to
//! the names the truth's frames print. Also: the pages of nt's exception data are in the kernel
//! bitmap dump.
//!
//! The images are taken from the fixture's memory as mapped (unmapped pages read as zeros) and
//! turned back into file layout by `tests/scripts/pe_unwind_check.py`; pefile lives in the
//! venv `.ci/venv.sh` makes.

use kds_e2e::{python_venv, repo_root, scratch_dir, x64_tables};
use kds_fixture::dumpfile::{dump_pfns, DumpKind};
use kds_fixture::truth::ProcessTruth;
use kds_fixture::{build, Fixture, FixtureSpec};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const SEED: u64 = 7;
const PAGE: u64 = 0x1000;

/// The image at `base` as mapped in `dtb`, unmapped pages as zeros, into `path`.
fn write_mapped(f: &Fixture, dtb: u64, base: u64, size: u64, path: &Path) {
    let mut image = vec![0u8; size as usize];
    for page in (0..size).step_by(PAGE as usize) {
        if f.machine.translate(dtb, base + page).is_some() {
            let at = page as usize;
            f.machine
                .read_virt(dtb, base + page, &mut image[at..at + PAGE as usize])
                .expect("a mapped page reads");
        }
    }
    std::fs::write(path, image).expect("image file is written");
}

/// `(symbol, offset)` of a `module!symbol+0xoff` call site.
fn symbol_offset(call_site: &str) -> Option<(&str, u64)> {
    let (_, rest) = call_site.split_once('!')?;
    match rest.split_once("+0x") {
        Some((sym, off)) => Some((sym, u64::from_str_radix(off, 16).ok()?)),
        None => Some((rest, 0)),
    }
}

/// The spec entry of one user image of `p`: frames and exports the truth implies.
fn user_image(f: &Fixture, p: &ProcessTruth, module: &str, dir: &Path) -> Option<Value> {
    let m = p
        .modules
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(module))?;
    let stem = m.name.rsplit_once('.').map_or(m.name.as_str(), |(s, _)| s);
    let mut code = BTreeSet::new();
    let mut exports = Map::new();
    for th in &p.threads {
        let mut first_user = true;
        for fr in th.frames.iter().filter(|fr| fr.user) {
            let stub = std::mem::replace(&mut first_user, false);
            if fr.ip < m.base || fr.ip >= m.base + m.size {
                continue;
            }
            let rva = fr.ip - m.base;
            let module_of_site = fr.call_site.split(['!', '+']).next().unwrap_or_default();
            assert!(
                module_of_site.eq_ignore_ascii_case(stem),
                "{} names {module_of_site}, the address is in {stem}",
                fr.call_site
            );
            if let Some((sym, off)) =
                symbol_offset(&fr.call_site).filter(|_| fr.call_site.contains('!'))
            {
                exports.insert(sym.to_string(), json!(rva - off));
                if stub {
                    // ntdll exports each system-call stub as Nt* and Zw*.
                    if let Some(rest) = sym.strip_prefix("Nt") {
                        exports.insert(format!("Zw{rest}"), json!(rva - off));
                    }
                }
            }
            if !stub {
                code.insert(rva);
            }
        }
    }
    if code.is_empty() {
        return None;
    }
    let path = dir.join(format!("{}-{}", p.pid, m.name));
    write_mapped(f, p.dtb, m.base, m.size, &path);
    Some(json!({
        "name": format!("{} {}", p.image_file_name, m.name),
        "path": path,
        "exports": exports,
        "code_rvas": code.into_iter().collect::<Vec<_>>(),
        "machframe_rvas": [],
        "min_functions": 1,
    }))
}

#[test]
fn pefile_reads_the_exception_and_export_directories() {
    let venv = python_venv();
    let dir = scratch_dir("pe_unwind");
    let mut images = Vec::new();
    for (name, table) in x64_tables() {
        let f = build(&FixtureSpec::hung_server(&table, SEED)).expect("fixture builds");
        let kd = f.machine.kernel_dtb;
        let (base, size) = (f.truth.kernel_base, f.truth.kernel_size);

        // nt: every kernel frame of every thread.
        let mut code = BTreeSet::new();
        let mut machframes = BTreeSet::new();
        for th in f.truth.processes.iter().flat_map(|p| &p.threads) {
            for fr in th.frames.iter().filter(|fr| !fr.user) {
                assert!(fr.ip >= base && fr.ip < base + size, "{}", fr.call_site);
                if !fr.call_site.contains('+') {
                    // Stopped at a function's entry (processor 0 in KeBugCheckEx): before
                    // its prologue.
                    continue;
                }
                code.insert(fr.ip - base);
                if fr.trap_frame != 0 {
                    machframes.insert(fr.ip - base);
                }
            }
        }
        assert!(code.len() > 20, "{name}: {} kernel call sites", code.len());
        assert!(!machframes.is_empty(), "{name}: no system-call frames");
        let path = dir.join(format!("{name}-ntoskrnl.exe"));
        write_mapped(&f, kd, base, size, &path);
        images.push(json!({
            "name": format!("{name} nt"),
            "path": path,
            "exports": {},
            "code_rvas": code.into_iter().collect::<Vec<_>>(),
            "machframe_rvas": machframes.into_iter().collect::<Vec<_>>(),
            "min_functions": 20,
        }));

        // The exception data is in the kernel bitmap dump.
        let mut header = vec![0u8; PAGE as usize];
        f.machine
            .read_virt(kd, base, &mut header)
            .expect("nt headers");
        let pe = kds_runtime::pe::parse_headers(&header[..]).expect("nt headers parse");
        let (rva, len) = pe
            .exception_directory
            .expect("nt has an exception directory");
        let captured: BTreeSet<u64> = dump_pfns(&f, DumpKind::BitmapKernel).into_iter().collect();
        let mut va = (base + u64::from(rva)) & !(PAGE - 1);
        while va < base + u64::from(rva + len) {
            let pa = f
                .machine
                .translate(kd, va)
                .expect("exception data is mapped");
            assert!(
                captured.contains(&(pa / PAGE)),
                "{name}: .pdata page {va:#x} not in the kernel dump"
            );
            va += PAGE;
        }

        // User images of the first process with user frames through KERNELBASE.
        let p = f
            .truth
            .processes
            .iter()
            .find(|p| {
                p.threads.iter().any(|t| {
                    t.frames
                        .iter()
                        .any(|fr| fr.call_site.starts_with("KERNELBASE!"))
                })
            })
            .expect("a process waits through KERNELBASE");
        let exe = p
            .modules
            .first()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        for module in ["ntdll.dll", "KERNELBASE.dll", "kernel32.dll", exe.as_str()] {
            if let Some(v) = user_image(&f, p, module, &dir) {
                images.push(v);
            }
        }
    }
    let spec_path = dir.join("spec.json");
    std::fs::write(
        &spec_path,
        serde_json::to_vec_pretty(&json!({ "images": images })).unwrap(),
    )
    .expect("spec is written");
    let out = Command::new(venv.join("bin/python"))
        .arg(repo_root().join("tests/scripts/pe_unwind_check.py"))
        .arg(&spec_path)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "pefile check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("pefile: all images check"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
