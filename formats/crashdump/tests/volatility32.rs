//! Volatility 3's `WindowsCrashDump32Layer` reads the 32-bit dumps this crate writes (types 1
//! and 5, the two it supports) with the same pages: an independent check of the PAGEDUMP
//! header offsets, the 8-byte runs and the bitmap header at 0x1000.
//!
//! Uses the venv that `bash .ci/venv.sh` creates (Volatility 3 2.28.2); the test runs the
//! script first, as the e2e tests do.

use std::path::PathBuf;
use std::process::Command;

use kds_crashdump::{write_dump32, DumpType, HeaderFields32, WriteKind, PAGE_SIZE};

const SCRIPT: &str = r#"
import sys, hashlib
from volatility3.framework import contexts
from volatility3.framework.layers import physical, crash
path, pfns = sys.argv[1], [int(p, 0) for p in sys.argv[2].split(",")]
ctx = contexts.Context()
ctx.config["File.location"] = "file://" + path
ctx.add_layer(physical.FileLayer(ctx, "File", "File"))
ctx.config["Crash.base_layer"] = "File"
layer = crash.WindowsCrashDump32Layer(ctx, "Crash", "Crash")
print("dtb", hex(layer.dtb), "type", layer.dump_type)
h = layer.get_header()
for name in ["PfnDataBase", "PsLoadedModuleList", "PsActiveProcessHead", "MachineImageType",
             "NumberProcessors", "BugCheckCode", "PaeEnabled", "KdDebuggerDataBlock", "ProductType",
             "SuiteMask", "RequiredDumpSpace", "SystemUpTime", "SystemTime"]:
    print(name, hex(int(getattr(h, name))))
print("BugCheckCodeParameter", [hex(int(p)) for p in h.BugCheckCodeParameter])
print("Runs", hex(int(h.PhysicalMemoryBlockBuffer.NumberOfRuns)),
      hex(int(h.PhysicalMemoryBlockBuffer.NumberOfPages)))
print("Comment", bytes(int(c) for c in h.Comment).split(b"\0")[0].decode())
for pfn in pfns:
    print(hex(pfn), hashlib.sha256(layer.read(pfn * 0x1000, 0x1000)).hexdigest()[:16])
print("mapped", hex(sum(length for _, _, length, _ in layer._segments) // 0x1000))
# The automagic that stacks layers on a file picks the 32-bit layer by itself.
print("stacked", type(crash.WindowsCrashDumpStacker.stack(ctx, "File")).__name__)
"#;

fn page_bytes(pfn: u64) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    for (i, b) in page.iter_mut().enumerate() {
        *b = (pfn as usize).wrapping_mul(13).wrapping_add(i / 7) as u8;
    }
    page
}

/// The first 16 hex digits of the page's SHA-256, computed by the venv's Python like the
/// script's (no hashing crate needed here).
fn sha16(page: &[u8]) -> String {
    let out = Command::new(venv_python())
        .args([
            "-c",
            "import sys,hashlib;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(page)?;
            child.wait_with_output()
        })
        .expect("python");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The venv's Python, after `.ci/venv.sh` made sure Volatility 3 is installed (a no-op when
/// it is; CI runs it too).
fn venv_python() -> PathBuf {
    static VENV: std::sync::Once = std::sync::Once::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    VENV.call_once(|| {
        let status = Command::new("bash")
            .arg(root.join(".ci/venv.sh"))
            .status()
            .expect("bash runs .ci/venv.sh");
        assert!(
            status.success(),
            ".ci/venv.sh failed: cannot install Volatility 3"
        );
    });
    root.join(".venv/bin/python")
}

#[test]
fn volatility_reads_written_32_bit_dumps() {
    let pfns: Vec<u64> = [1, 2, 3, 0x39, 0x40, 0x41, 0x1ff, 0x1000]
        .into_iter()
        .collect();
    let header = HeaderFields32 {
        directory_table_base: 0x39_020,
        pfn_database: 0x8440_0000,
        ps_loaded_module_list: 0x8273_a2d0,
        ps_active_process_head: 0x8271_e040,
        number_processors: 3,
        bugcheck_code: 0xE2,
        bugcheck_parameters: [1, 0x8000_0022, 0x333, 0xffff_ffff],
        pae_enabled: true,
        kd_debugger_data_block: 0x8270_0b20,
        system_time: 0x01d9_8a3b_c0ff_ee00,
        system_up_time: 0x1234_5678,
        comment: "kds x86 dump".into(),
        product_type: 3,
        suite_mask: 0x112,
        ..HeaderFields32::default()
    };
    for kind in [
        WriteKind::Full,
        WriteKind::Bitmap {
            dump_type: DumpType::BitmapFull,
        },
    ] {
        let path = std::env::temp_dir().join(format!(
            "kds-vol32-{}-{}.dmp",
            std::process::id(),
            kind.dump_type().code()
        ));
        let file = std::fs::File::create(&path).expect("create");
        write_dump32(file, &header, kind, &pfns, |pfn, page| {
            *page = page_bytes(pfn);
            Ok(())
        })
        .expect("write");
        let list: Vec<String> = pfns.iter().map(|p| format!("{p:#x}")).collect();
        let out = Command::new(venv_python())
            .args(["-c", SCRIPT])
            .arg(&path)
            .arg(list.join(","))
            .output()
            .expect("run the venv's python (bash .ci/venv.sh)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "Volatility refused the {kind:?} dump: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file_len = std::fs::metadata(&path).expect("written").len();
        let mut expected = format!("dtb 0x39020 type {}\n", kind.dump_type().code());
        expected += &format!(
            "PfnDataBase 0x84400000\nPsLoadedModuleList 0x8273a2d0\nPsActiveProcessHead 0x8271e040\n\
             MachineImageType 0x14c\nNumberProcessors 0x3\nBugCheckCode 0xe2\nPaeEnabled 0x1\n\
             KdDebuggerDataBlock 0x82700b20\nProductType 0x3\nSuiteMask 0x112\n\
             RequiredDumpSpace {file_len:#x}\nSystemUpTime 0x12345678\nSystemTime 0x1d98a3bc0ffee00\n\
             BugCheckCodeParameter ['0x1', '0x80000022', '0x333', '0xffffffff']\n"
        );
        // The pfns form 5 runs of 8 pages (a bitmap dump keeps them: fewer than 86).
        expected += "Runs 0x5 0x8\n";
        expected += "Comment kds x86 dump\n";
        for &pfn in &pfns {
            expected += &format!("{pfn:#x} {}\n", sha16(&page_bytes(pfn)));
        }
        expected += &format!("mapped {:#x}\n", pfns.len());
        expected += "stacked WindowsCrashDump32Layer\n";
        let _ = std::fs::remove_file(&path);
        assert_eq!(stdout, expected, "{kind:?}");
    }
}
