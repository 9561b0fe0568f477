//! Writing a standard bitmap crash dump from any target: a dump, a memory image or a live
//! kernel; 64-bit (`PAGEDU64`) for an x64 session, 32-bit (`PAGEDUMP`, with `PaeEnabled` from
//! the paging mode and processor 0's x86 `CONTEXT`) for an x86 one. The header carries what WinDbg and kdmp-parser need to open it (DTB, list
//! heads, KDBG, stop code, machine, processors, context); the pages are the ones chosen:
//! everything captured, the kernel's (mapped in the kernel half, with their page tables), or
//! those a playbook run touched (a recording that replays offline).

use crate::discovery::{kernel_half_frames_with, DiscoveryLimits};
use crate::model::ModelContext;
use crate::session::Session;
use crate::target::{Arch, ProcessorContext, PAGE_SIZE};
use kds_crashdump::{
    write_dump, write_dump32, DumpType, HeaderFields, HeaderFields32, WriteError, WriteKind,
};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use thiserror::Error;

/// Which pages go into the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageSelection {
    /// Every page the target holds (dumps and images); for a live kernel, every page of the
    /// RAM runs in the kernel's `MmPhysicalMemoryBlock`.
    All,
    /// Page tables of the kernel half and every frame they map there.
    Kernel,
    /// These page frames.
    Frames(Vec<u64>),
}

/// Why no dump was written.
#[derive(Debug, Error)]
pub enum DumpWriteError {
    #[error(
        "this target cannot list its pages and the kernel's physical memory runs cannot be \
         read ({0}): use --pages kernel"
    )]
    NoPageList(String),
    #[error("cannot create {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path} failed: {source}")]
    Write {
        path: String,
        #[source]
        source: WriteError,
    },
    #[error("none of the chosen pages could be read: nothing to write")]
    NoPages,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DumpWritten {
    pub pages: u64,
    /// Chosen pages the target could not give (left out).
    pub unreadable: u64,
    pub file_size: u64,
}

/// Write `path` as a bitmap dump (type 5, "FDMP") holding the `selection` of `session`'s
/// target: a 64-bit dump for an x64 target, a 32-bit one for an x86 target. `system_time` is the capture time when the caller knows it (a live kernel's
/// `KUSER_SHARED_DATA.SystemTime`).
pub fn write_bitmap_dump(
    session: &Session,
    selection: &PageSelection,
    system_time: Option<u64>,
    path: &Path,
) -> Result<DumpWritten, DumpWriteError> {
    let target = &session.target;
    let wanted: Vec<u64> = match selection {
        PageSelection::All => match target.captured_pfns() {
            Some(pfns) => pfns,
            None => ram_frames(session).map_err(DumpWriteError::NoPageList)?,
        },
        PageSelection::Kernel => kernel_half_frames_with(
            target.as_ref(),
            session.kernel_space.spec(),
            session.kernel_space.dtb(),
            &DiscoveryLimits::default(),
        ),
        PageSelection::Frames(frames) => frames.clone(),
    };
    let mut page = [0u8; PAGE_SIZE as usize];
    let readable: Vec<u64> = wanted
        .iter()
        .copied()
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .filter(|&pfn| target.read_physical(pfn * PAGE_SIZE, &mut page).is_ok())
        .collect();
    if readable.is_empty() {
        return Err(DumpWriteError::NoPages);
    }
    let header = header_fields(session, system_time);
    let file = File::create(path).map_err(|source| DumpWriteError::Create {
        path: path.display().to_string(),
        source,
    })?;
    let kind = WriteKind::Bitmap {
        dump_type: DumpType::BitmapFull,
    };
    let read_page = |pfn: u64, buf: &mut [u8; PAGE_SIZE as usize]| {
        target
            .read_physical(pfn * PAGE_SIZE, buf)
            .map_err(std::io::Error::other)
    };
    let out = BufWriter::new(file);
    match target.identity().arch {
        Arch::X64 => write_dump(out, &header, kind, &readable, read_page),
        arch @ Arch::X86 { .. } => {
            let header = header_fields32(session, &header, arch);
            write_dump32(out, &header, kind, &readable, read_page)
        }
    }
    .map_err(|source| DumpWriteError::Write {
        path: path.display().to_string(),
        source,
    })?;
    Ok(DumpWritten {
        pages: readable.len() as u64,
        unreadable: (wanted.len() - readable.len()) as u64,
        file_size: std::fs::metadata(path).map_or(0, |m| m.len()),
    })
}

/// The most RAM runs believed: the descriptor Windows keeps has a handful (a dump header's
/// copy holds 86); more means the memory read is not a descriptor.
const MAX_RAM_RUNS: u64 = 1024;
/// The most pages believed in one run or in all: 2^40 pages are 4 PiB, past any x64 machine.
const MAX_RAM_PAGES: u64 = 1 << 40;

/// Every page frame of RAM, from the kernel's `MmPhysicalMemoryBlock` (the runs a complete
/// dump writes): what `--pages all` means for a target that cannot list its pages.
fn ram_frames(session: &Session) -> Result<Vec<u64>, String> {
    let model = ModelContext::from_session(session).map_err(|e| e.to_string())?;
    let symbol = "MmPhysicalMemoryBlock";
    let at = model
        .symbol_address(symbol)
        .ok_or_else(|| format!("the kernel's symbols have no `{symbol}`"))?;
    let scope = model.kernel_scope();
    let block = scope.read_pointer(at, symbol).map_err(|e| e.to_string())?;
    if block == 0 {
        return Err(format!("`{symbol}` is null"));
    }
    let descriptor = model
        .object("_PHYSICAL_MEMORY_DESCRIPTOR", block)
        .map_err(|e| e.to_string())?;
    let number = |o: &crate::model::Object, field: &str| -> Result<u64, String> {
        o.raw_field(field)
            .map_err(|e| e.to_string())?
            .as_u64()
            .ok_or_else(|| format!("`{}.{field}` is not a number", o.type_name()))
    };
    let count = number(&descriptor, "NumberOfRuns")?;
    if count == 0 || count > MAX_RAM_RUNS {
        return Err(format!(
            "the descriptor at {block:#x} says {count} runs (expected 1 to {MAX_RAM_RUNS})"
        ));
    }
    let first_run = descriptor.field_address("Run").map_err(|e| e.to_string())?;
    let run_size = model
        .table()
        .size_of("_PHYSICAL_MEMORY_RUN")
        .map_err(|e| e.to_string())?;
    let mut frames = Vec::new();
    for index in 0..count {
        let run = model
            .object("_PHYSICAL_MEMORY_RUN", first_run + index * run_size)
            .map_err(|e| e.to_string())?;
        let base = number(&run, "BasePage")?;
        let pages = number(&run, "PageCount")?;
        if pages > MAX_RAM_PAGES
            || base > MAX_RAM_PAGES
            || frames.len() as u64 + pages > MAX_RAM_PAGES
        {
            return Err(format!(
                "run {index} of the descriptor at {block:#x} ({pages:#x} pages at pfn {base:#x}) \
                 is past any machine's memory"
            ));
        }
        frames.extend(base..base + pages);
    }
    Ok(frames)
}

/// The header of the written dump: from the target's identity, else from the kernel's
/// symbols and memory.
fn header_fields(session: &Session, system_time: Option<u64>) -> HeaderFields {
    let identity = session.target.identity();
    let symbol = |name: &str| session.kernel_symbol(name).unwrap_or(0);
    let bugcheck = session.bugcheck();
    let context = match session.target.processor_context(0) {
        Ok(ProcessorContext::X64(c)) => c.to_amd64_context(),
        // A 32-bit target's context goes into a 32-bit header: `header_fields32`.
        Ok(ProcessorContext::X86(_)) | Err(_) => [0; kds_crashdump::CONTEXT64_SIZE],
    };
    HeaderFields {
        major_version: if identity.checked_build { 0xC } else { 0xF },
        minor_version: identity.os_build.unwrap_or(0),
        directory_table_base: identity.directory_table_base,
        pfn_database: identity.pfn_database.unwrap_or(0),
        ps_loaded_module_list: identity
            .ps_loaded_module_list
            .unwrap_or_else(|| symbol("PsLoadedModuleList")),
        ps_active_process_head: identity
            .ps_active_process_head
            .unwrap_or_else(|| symbol("PsActiveProcessHead")),
        number_processors: session.processor_count().max(1),
        bugcheck_code: bugcheck.map_or(0, |b| b.code),
        bugcheck_parameters: bugcheck.map_or([0; 4], |b| b.parameters),
        kd_debugger_data_block: identity
            .kd_debugger_data_block
            .unwrap_or_else(|| symbol("KdDebuggerDataBlock")),
        context,
        system_time: identity
            .system_time
            .map(|t| t.0)
            .or(system_time)
            .unwrap_or(0),
        system_up_time: identity.system_up_time.unwrap_or(0),
        comment: "written by kds".into(),
        ..HeaderFields::default()
    }
}

/// The 32-bit header of an x86 target's dump: the 64-bit fields cut to 32 bits (a 32-bit
/// kernel's addresses may arrive sign-extended), `PaeEnabled` from the paging mode, processor
/// 0's x86 `CONTEXT`.
fn header_fields32(session: &Session, wide: &HeaderFields, arch: Arch) -> HeaderFields32 {
    let narrow = |v: u64| arch.narrow(v) as u32;
    let context = match session.target.processor_context(0) {
        Ok(ProcessorContext::X86(c)) => c.to_x86_context(),
        Ok(ProcessorContext::X64(_)) | Err(_) => [0; kds_crashdump::CONTEXT32_SIZE],
    };
    HeaderFields32 {
        major_version: wide.major_version,
        minor_version: wide.minor_version,
        directory_table_base: narrow(wide.directory_table_base),
        pfn_database: narrow(wide.pfn_database),
        ps_loaded_module_list: narrow(wide.ps_loaded_module_list),
        ps_active_process_head: narrow(wide.ps_active_process_head),
        number_processors: wide.number_processors,
        bugcheck_code: wide.bugcheck_code,
        bugcheck_parameters: wide.bugcheck_parameters.map(narrow),
        pae_enabled: matches!(arch, Arch::X86 { pae: true }),
        kd_debugger_data_block: narrow(wide.kd_debugger_data_block),
        context,
        system_time: wide.system_time,
        system_up_time: wide.system_up_time,
        comment: wide.comment.clone(),
        ..HeaderFields32::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::sympath::SymbolPath;
    use crate::target::{DumpTarget, Target, X86Context};
    use kds_crashdump::{write_dump32, Bitness, CrashDump};
    use std::sync::Arc;

    /// An x86 PAE session (over a small 32-bit dump) snapshots to a 32-bit bitmap dump with
    /// the same identity, context and pages.
    #[test]
    fn an_x86_session_writes_a_pagedump() {
        let context = X86Context {
            esp: 0x8078_9a00,
            ebp: 0x8078_9abc,
            eip: 0x8234_5678,
            eflags: 0x246,
            cs: 8,
            ss: 0x10,
            ..X86Context::default()
        };
        let header = HeaderFields32 {
            minor_version: 19041,
            directory_table_base: 0x39_020,
            ps_loaded_module_list: 0x8273_a2d0,
            ps_active_process_head: 0x8271_e040,
            kd_debugger_data_block: 0x8270_0b20,
            bugcheck_code: 0xE2,
            bugcheck_parameters: [0x8000_0001, 2, 3, 4],
            pae_enabled: true,
            context: context.to_x86_context(),
            ..HeaderFields32::default()
        };
        let pfns = [0x1, 0x39, 0x3a, 0x400];
        let mut source = std::io::Cursor::new(Vec::new());
        let kind = WriteKind::Bitmap {
            dump_type: DumpType::BitmapKernel,
        };
        write_dump32(&mut source, &header, kind, &pfns, |pfn, page| {
            page.fill(pfn as u8 ^ 0x5a);
            Ok(())
        })
        .expect("write the source dump");
        let dump = CrashDump::from_bytes(source.into_inner()).expect("read the source dump");
        let target: Arc<dyn Target> = Arc::new(DumpTarget::from_dump(dump, "x86.dmp".into()));
        let session = Session::open(target, SymbolPath::default()).expect("session");

        let path = std::env::temp_dir().join(format!("kds-dump32-{}.dmp", std::process::id()));
        let written =
            write_bitmap_dump(&session, &PageSelection::All, None, &path).expect("snapshot");
        assert_eq!(written.pages, 4);
        let out = CrashDump::open(&path).expect("read the snapshot");
        let _ = std::fs::remove_file(&path);

        assert_eq!(&out.bytes()[..8], b"PAGEDUMP");
        assert_eq!(out.bitness(), Bitness::Bits32);
        assert_eq!(out.dump_type(), DumpType::BitmapFull);
        assert_eq!(out.pae_enabled(), Some(true));
        let h = out.header32().expect("32-bit header");
        assert_eq!(h.directory_table_base, 0x39_020);
        assert_eq!(h.ps_loaded_module_list, 0x8273_a2d0);
        assert_eq!(h.ps_active_process_head, 0x8271_e040);
        assert_eq!(h.kd_debugger_data_block, 0x8270_0b20);
        assert_eq!(h.bugcheck_code, 0xE2);
        assert_eq!(h.bugcheck_parameters, [0x8000_0001, 2, 3, 4]);
        assert_eq!(h.minor_version, 19041);
        assert_eq!(
            (h.context_eip(), h.context_esp(), h.context_ebp()),
            (0x8234_5678, 0x8078_9a00, 0x8078_9abc)
        );
        assert_eq!(X86Context::from_x86_context(&h.context), context);
        assert_eq!(out.present_pfns().collect::<Vec<_>>(), pfns);
        for pfn in pfns {
            assert_eq!(out.page(pfn).map(|p| p[0]), Some(pfn as u8 ^ 0x5a));
        }
    }
}
