//! Writing a standard 64-bit bitmap crash dump from any target: a dump, a memory image or a
//! live kernel. The header carries what WinDbg and kdmp-parser need to open it (DTB, list
//! heads, KDBG, stop code, machine, processors, context); the pages are the ones chosen:
//! everything captured, the kernel's (mapped in the kernel half, with their page tables), or
//! those a playbook run touched (a recording that replays offline).

use crate::discovery::{kernel_half_frames, DiscoveryLimits};
use crate::model::ModelContext;
use crate::session::Session;
use crate::target::{ProcessorContext, PAGE_SIZE};
use kds_crashdump::{write_dump, DumpType, HeaderFields, WriteError, WriteKind};
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
/// target. `system_time` is the capture time when the caller knows it (a live kernel's
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
        PageSelection::Kernel => kernel_half_frames(
            target.as_ref(),
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
    write_dump(
        BufWriter::new(file),
        &header,
        kind,
        &readable,
        |pfn, buf| {
            target
                .read_physical(pfn * PAGE_SIZE, buf)
                .map_err(std::io::Error::other)
        },
    )
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
        // A 32-bit target's context goes into a 32-bit header (issue 8 brings that writer).
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
