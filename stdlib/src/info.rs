//! `kds info`: what a target is, what kernel it holds, and whether its symbols were found.
//! The first lines read like WinDbg's banner when it opens a dump.

use crate::bugcheck::{self, BugCheckInfo};
use crate::format::{filetime, pointer, pointer_0x, uptime};
use kds_runtime::kernel::{kuser_shared_data, KernelSource};
use kds_runtime::session::Session;
use kds_runtime::symbols::{PdbIdentity, SymbolTable};
use kds_runtime::target::{Arch, TargetIdentity, TargetKind};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub target: TargetIdentity,
    pub captured_pages: Option<u64>,
    pub file_size: Option<u64>,
    pub kernel: Option<KernelSummary>,
    /// Why no kernel was found, when none was.
    pub kernel_error: Option<String>,
    pub symbol_path: String,
    pub symbols: SymbolStatus,
    /// What the kernel itself says (needs symbols).
    pub os: Option<OsSummary>,
    pub bugcheck: Option<BugCheckInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelSummary {
    pub base: u64,
    pub found_by: KernelSource,
    pub size_of_image: u32,
    pub time_date_stamp: u32,
    pub pdb: Option<PdbIdentity>,
    /// Why the image names no usable PDB, when it does not.
    pub pdb_problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SymbolStatus {
    Loaded { path: String, types: usize },
    Missing { message: String },
    NotSearched { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct OsSummary {
    pub major: u32,
    pub minor: u32,
    pub build: Option<u32>,
    /// `NtProductType`: 1 WinNt (workstation), 2 LanManNt (domain controller), 3 Server.
    pub product_type: Option<u32>,
    /// `KUSER_SHARED_DATA.SuiteMask` (VER_SUITE_* bits).
    pub suite_mask: Option<u32>,
    /// Service pack from `CmNtCSDVersion` (major in bits 8..16), 0 when none.
    pub service_pack: Option<u32>,
    pub system_root: Option<String>,
    pub build_lab: Option<String>,
}

/// Gather everything `kds info` shows.
#[must_use]
pub fn collect(session: &Session, file_size: Option<u64>) -> TargetInfo {
    let mut identity = session.target.identity().clone();
    // A 32-bit kernel's addresses may arrive sign-extended in 64-bit fields (KD, KDBG).
    let arch = identity.arch;
    for slot in [
        &mut identity.ps_loaded_module_list,
        &mut identity.ps_active_process_head,
        &mut identity.kd_debugger_data_block,
        &mut identity.pfn_database,
        &mut identity.kernel_base,
    ] {
        *slot = slot.map(|a| arch.narrow(a));
    }
    // A header-less image names none of these: they come from the kernel's symbols.
    if identity.processor_count == 0 {
        identity.processor_count = session.processor_count();
    }
    let mut from_symbols = Vec::new();
    for (name, slot) in [
        ("PsLoadedModuleList", &mut identity.ps_loaded_module_list),
        ("PsActiveProcessHead", &mut identity.ps_active_process_head),
    ] {
        if slot.is_none() {
            *slot = session.kernel_symbol(name);
            if slot.is_some() {
                from_symbols.push(name);
            }
        }
    }
    if !from_symbols.is_empty() && !identity.discovery.is_empty() {
        identity.discovery.push(format!(
            "{} from the kernel's symbols",
            from_symbols.join(", ")
        ));
    }
    let kernel_error = session.kernel.as_ref().err().map(ToString::to_string);
    let kernel = match &session.kernel {
        Ok(k) => Some(KernelSummary {
            base: k.base,
            found_by: k.source,
            size_of_image: k.pe.size_of_image,
            time_date_stamp: k.pe.time_date_stamp,
            pdb: k.pdb().ok().cloned(),
            pdb_problem: k.pdb().err().map(|e| e.to_string()),
        }),
        Err(_) => None,
    };
    let symbols = match &session.symbols {
        Some(Ok(loaded)) => SymbolStatus::Loaded {
            path: loaded.path.display().to_string(),
            types: loaded.table.type_names().count(),
        },
        Some(Err(e)) => SymbolStatus::Missing {
            message: e.to_string(),
        },
        None => SymbolStatus::NotSearched {
            reason: match &kernel {
                Some(k) => k
                    .pdb_problem
                    .clone()
                    .unwrap_or_else(|| "the kernel image names no PDB".into()),
                None => "no kernel image was found".into(),
            },
        },
    };
    let os = session
        .kernel_symbols()
        .and_then(|table| read_os_summary(session, table));
    TargetInfo {
        bugcheck: session
            .bugcheck()
            .map(|b| bugcheck::decode(b.code, b.parameters)),
        captured_pages: session.target.captured_pages(),
        file_size,
        kernel,
        kernel_error,
        symbol_path: session.symbol_path.to_string(),
        symbols,
        os,
        target: identity,
    }
}

fn read_os_summary(session: &Session, table: &SymbolTable) -> Option<OsSummary> {
    let space = &session.kernel_space;
    let base = kuser_shared_data(space.spec().pointer_size);
    let kuser = |field: &str| {
        table
            .offset_of("_KUSER_SHARED_DATA", field)
            .ok()
            .map(|off| base + off)
    };
    let major = space.read_u32(kuser("NtMajorVersion")?).ok()?;
    let minor = space.read_u32(kuser("NtMinorVersion")?).ok()?;
    let build = kuser("NtBuildNumber")
        .and_then(|a| space.read_u32(a).ok())
        .or_else(|| {
            let at = session.kernel_symbol("NtBuildNumber")?;
            space.read_u32(at).ok().map(|v| v & 0xFFFF)
        });
    let product_type = kuser("NtProductType").and_then(|a| space.read_u32(a).ok());
    let suite_mask = kuser("SuiteMask").and_then(|a| space.read_u32(a).ok());
    let service_pack = session
        .kernel_symbol("CmNtCSDVersion")
        .and_then(|a| space.read_u32(a).ok())
        .map(|v| (v >> 8) & 0xFF);
    let system_root = kuser("NtSystemRoot").and_then(|a| read_utf16z(session, a, 260));
    let build_lab = session
        .kernel_symbol("NtBuildLab")
        .and_then(|a| read_asciiz(session, a, 256));
    Some(OsSummary {
        major,
        minor,
        build,
        product_type,
        suite_mask,
        service_pack,
        system_root,
        build_lab,
    })
}

fn read_utf16z(session: &Session, va: u64, max_chars: usize) -> Option<String> {
    let mut raw = vec![0u8; max_chars * 2];
    let n = session.kernel_space.read_partial(va, &mut raw);
    let units: Vec<u16> = raw[..n]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    (!units.is_empty()).then(|| String::from_utf16_lossy(&units))
}

fn read_asciiz(session: &Session, va: u64, max: usize) -> Option<String> {
    let mut raw = vec![0u8; max];
    let n = session.kernel_space.read_partial(va, &mut raw);
    let text: Vec<u8> = raw[..n].iter().copied().take_while(|&b| b != 0).collect();
    (!text.is_empty()).then(|| String::from_utf8_lossy(&text).into_owned())
}

/// WinDbg's line about what a dump type makes available.
fn dump_banner(dump_type: u32) -> &'static str {
    match dump_type {
        1 => "Kernel Complete Dump File: Full address space is available",
        2 => "Kernel Summary Dump File: Only kernel address space is available",
        5 | 0xA => "Kernel Bitmap Dump File: Full address space is available",
        6 | 8 => "Kernel Bitmap Dump File: Kernel address space is available, User address space may not be available.",
        9 => "Kernel Bitmap Dump File: Kernel and user address space is available",
        _ => "Kernel Dump File",
    }
}

fn os_name(major: u32, minor: u32) -> String {
    match (major, minor) {
        (5, 2) => "Windows Server 2003".into(),
        (6, 0) => "Windows Vista".into(),
        (6, 1) => "Windows 7".into(),
        (6, 2) => "Windows 8".into(),
        (6, 3) => "Windows 8.1".into(),
        (10, 0) => "Windows 10".into(),
        _ => format!("Windows {major}.{minor}"),
    }
}

fn product_name(product_type: u32) -> &'static str {
    match product_type {
        1 => "WinNt",
        2 => "LanManNt",
        3 => "Server",
        _ => "unknown",
    }
}

/// Names of the `VER_SUITE_*` bits, as WinDbg prints them after `suite:`.
const SUITES: &[(u32, &str)] = &[
    (0x0001, "SmallBusiness"),
    (0x0002, "Enterprise"),
    (0x0004, "BackOffice"),
    (0x0008, "CommunicationServer"),
    (0x0010, "TerminalServer"),
    (0x0020, "SmallBusinessRestricted"),
    (0x0040, "EmbeddedNT"),
    (0x0080, "DataCenter"),
    (0x0100, "SingleUserTS"),
    (0x0200, "Personal"),
    (0x0400, "Blade"),
    (0x0800, "EmbeddedRestricted"),
    (0x1000, "SecurityAppliance"),
    (0x2000, "StorageServer"),
    (0x4000, "ComputeServer"),
    (0x8000, "WHServer"),
];

fn suite_names(mask: u32) -> String {
    SUITES
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The architecture as the `Kernel Version` banner line ends: `Free x64`, and on 32-bit
/// kernels (PAE or not) `Free x86 compatible`.
fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::X64 => "x64",
        Arch::X86 { .. } => "x86 compatible",
    }
}

/// Render as text: WinDbg's opening banner, then the details.
#[must_use]
pub fn render_text(info: &TargetInfo) -> String {
    let mut out = render_banner(info);
    out.push_str(&render_details(info));
    out
}

/// WinDbg's opening banner: what it prints when a dump opens, down to the bugcheck.
#[must_use]
pub fn render_banner(info: &TargetInfo) -> String {
    let t = &info.target;
    let ps = u64::from(t.arch.pointer_size());
    let mut out = String::new();
    let w = &mut out;
    match &t.kind {
        TargetKind::Dump {
            path, dump_type, ..
        } => {
            let _ = writeln!(w, "Loading Dump File [{path}]");
            let _ = writeln!(w, "{}", dump_banner(*dump_type));
        }
        TargetKind::LiveKd { connection } => {
            let _ = writeln!(w, "Connected to {connection}");
        }
        TargetKind::Snapshot { path, format } => {
            let _ = writeln!(w, "Loading {format} snapshot [{path}]");
            if t.consistency == kds_runtime::target::Consistency::MayBeInconsistent {
                let _ = writeln!(
                    w,
                    "This capture was taken while the system ran: it may be inconsistent."
                );
            }
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "Symbol search path is: {}", info.symbol_path);
    let build = info
        .os
        .as_ref()
        .and_then(|o| o.build)
        .or(t.os_build)
        .map_or_else(|| "?".to_string(), |b| b.to_string());
    let name = info
        .os
        .as_ref()
        .map_or_else(|| "Windows".to_string(), |o| os_name(o.major, o.minor));
    let mp = if t.processor_count > 1 {
        format!("MP ({} procs)", t.processor_count)
    } else {
        "UP".to_string()
    };
    let flavour = if t.checked_build { "Checked" } else { "Free" };
    let service_pack = match info.os.as_ref().and_then(|o| o.service_pack) {
        Some(sp) if sp > 0 => format!(" (Service Pack {sp})"),
        _ => String::new(),
    };
    let _ = writeln!(
        w,
        "{name} Kernel Version {build}{service_pack} {mp} {flavour} {}",
        arch_name(t.arch)
    );
    if let Some(product) = info.os.as_ref().and_then(|o| o.product_type) {
        let suites = info
            .os
            .as_ref()
            .and_then(|o| o.suite_mask)
            .map(suite_names)
            .unwrap_or_default();
        if suites.is_empty() {
            let _ = writeln!(w, "Product: {}", product_name(product));
        } else {
            let _ = writeln!(w, "Product: {}, suite: {suites}", product_name(product));
        }
    }
    if let Some(lab) = info.os.as_ref().and_then(|o| o.build_lab.as_ref()) {
        let _ = writeln!(w, "Edition build lab: {lab}");
    }
    let base = info
        .kernel
        .as_ref()
        .map_or_else(|| "?".to_string(), |k| pointer_0x(k.base, ps));
    let modules = t
        .ps_loaded_module_list
        .map_or_else(|| "?".to_string(), |v| pointer_0x(v, ps));
    let _ = writeln!(w, "Kernel base = {base} PsLoadedModuleList = {modules}");
    if let Some(time) = t.system_time.and_then(|s| filetime(s.0)) {
        let _ = writeln!(w, "Debug session time: {time}");
    }
    if let Some(up) = t.system_up_time {
        let _ = writeln!(w, "System Uptime: {}", uptime(up));
    }
    if let Some(b) = &info.bugcheck {
        let _ = writeln!(w);
        let _ = writeln!(w, "{}", b.windbg_line());
        let _ = writeln!(
            w,
            "{} ({:x})",
            b.name.unwrap_or("unknown stop code"),
            b.code
        );
        if b.taken_on_demand {
            let _ = writeln!(
                w,
                "This dump was taken on demand: analyse it as a hang, not as a crash cause."
            );
        }
    }
    out
}

/// The details below the banner: target, kernel, symbols.
#[must_use]
pub fn render_details(info: &TargetInfo) -> String {
    let t = &info.target;
    let ps = u64::from(t.arch.pointer_size());
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w);
    let _ = writeln!(w, "Target");
    let row = |w: &mut String, label: &str, value: String| {
        let _ = writeln!(w, "  {label:<22}{value}");
    };
    if let TargetKind::Dump {
        dump_type,
        dump_type_name,
        ..
    } = &t.kind
    {
        row(w, "Dump type", format!("{dump_type} ({dump_type_name})"));
    }
    row(w, "Architecture", t.arch.to_string());
    row(w, "Processors", t.processor_count.to_string());
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| pointer(v, ps));
    row(w, "DirectoryTableBase", pointer(t.directory_table_base, ps));
    row(w, "PsLoadedModuleList", opt(t.ps_loaded_module_list));
    row(w, "PsActiveProcessHead", opt(t.ps_active_process_head));
    row(w, "KdDebuggerDataBlock", opt(t.kd_debugger_data_block));
    row(w, "PfnDataBase", opt(t.pfn_database));
    if let Some(pages) = info.captured_pages {
        row(
            w,
            "Pages captured",
            format!("{pages} ({} MiB)", pages * 4096 / (1024 * 1024)),
        );
    }
    if let Some(size) = info.file_size {
        row(w, "File size", format!("{size} bytes"));
    }
    if let Some(comment) = &t.comment {
        row(w, "Comment", comment.clone());
    }
    if t.consistency == kds_runtime::target::Consistency::MayBeInconsistent {
        row(
            w,
            "Consistency",
            "may be inconsistent: captured while the system ran, lists may be torn".into(),
        );
    }
    for (i, how) in t.discovery.iter().enumerate() {
        row(w, if i == 0 { "Discovery" } else { "" }, how.clone());
    }

    let _ = writeln!(w);
    let _ = writeln!(w, "Kernel");
    match (&info.kernel, &info.kernel_error) {
        (Some(k), _) => {
            let how = match k.found_by {
                KernelSource::LoadedModuleList => "first entry of PsLoadedModuleList",
                KernelSource::DebuggerDataBlock => "KernBase of the KDBG block",
                KernelSource::TargetIdentity => "base the target names (KD handshake or discovery)",
            };
            row(
                w,
                "Base",
                format!("{} (from the {how})", pointer(k.base, ps)),
            );
            row(w, "SizeOfImage", format!("{:#x}", k.size_of_image));
            row(w, "TimeDateStamp", format!("{:08x}", k.time_date_stamp));
            match (&k.pdb, &k.pdb_problem) {
                (Some(pdb), _) => row(w, "PDB", format!("{} {}", pdb.name, pdb.isf_stem())),
                (None, Some(problem)) => row(w, "PDB", format!("none: {problem}")),
                (None, None) => row(w, "PDB", "none".into()),
            }
        }
        (None, error) => row(
            w,
            "Not found",
            error.clone().unwrap_or_else(|| "no kernel".into()),
        ),
    }
    match &info.symbols {
        SymbolStatus::Loaded { path, types } => {
            row(w, "Symbols", format!("{path} ({types} types)"));
        }
        SymbolStatus::Missing { message } => {
            row(w, "Symbols", "not loaded".into());
            for line in message.lines() {
                let _ = writeln!(w, "    {line}");
            }
        }
        SymbolStatus::NotSearched { reason } => {
            row(w, "Symbols", format!("not searched: {reason}"));
        }
    }
    if let Some(os) = &info.os {
        row(
            w,
            "Version",
            format!(
                "{}.{}.{}",
                os.major,
                os.minor,
                os.build.map_or_else(|| "?".into(), |b| b.to_string())
            ),
        );
        if let Some(root) = &os.system_root {
            row(w, "SystemRoot", root.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_names_32_bit_kernels_x86_compatible() {
        assert_eq!(arch_name(Arch::X64), "x64");
        assert_eq!(arch_name(Arch::X86 { pae: true }), "x86 compatible");
        assert_eq!(arch_name(Arch::X86 { pae: false }), "x86 compatible");
    }
}
