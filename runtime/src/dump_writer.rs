//! Writing a standard 64-bit bitmap crash dump from any target: a dump, a memory image or a
//! live kernel. The header carries what WinDbg and kdmp-parser need to open it (DTB, list
//! heads, KDBG, stop code, machine, processors, context); the pages are the ones chosen:
//! everything captured, the kernel's (mapped in the kernel half, with their page tables), or
//! those a playbook run touched (a recording that replays offline).

use crate::mmu::AddressSpace;
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
    /// Every page the target holds (dumps and images); a live kernel has no list of them.
    All,
    /// Page tables of the kernel half and every frame they map there.
    Kernel,
    /// These page frames.
    Frames(Vec<u64>),
}

/// Why no dump was written.
#[derive(Debug, Error)]
pub enum DumpWriteError {
    #[error("this target cannot list its pages (a live kernel): use --pages kernel or touched")]
    NoPageList,
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
        PageSelection::All => target.captured_pfns().ok_or(DumpWriteError::NoPageList)?,
        PageSelection::Kernel => kernel_frames(&session.kernel_space),
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

/// The header of the written dump: from the target's identity, else from the kernel's
/// symbols and memory.
fn header_fields(session: &Session, system_time: Option<u64>) -> HeaderFields {
    let identity = session.target.identity();
    let symbol = |name: &str| session.kernel_symbol(name).unwrap_or(0);
    let bugcheck = session.bugcheck();
    let context = match session.target.processor_context(0) {
        Ok(ProcessorContext::X64(c)) => c.to_amd64_context(),
        Err(_) => [0; kds_crashdump::CONTEXT64_SIZE],
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

/// Page-table frames of the kernel half of `space`'s PML4 and every frame they map there
/// (large pages expanded), bounded.
#[must_use]
pub fn kernel_frames(space: &AddressSpace) -> Vec<u64> {
    const PRESENT: u64 = 1;
    const LARGE: u64 = 1 << 7;
    const FRAME: u64 = 0x000F_FFFF_FFFF_F000;
    const LIMIT: usize = 1 << 22;
    let target = space.target();
    let entry = |table: u64, index: u64| -> Option<u64> {
        let mut b = [0u8; 8];
        target.read_physical(table + index * 8, &mut b).ok()?;
        let e = u64::from_le_bytes(b);
        (e & PRESENT != 0).then_some(e)
    };
    let pml4 = space.dtb() & FRAME;
    let mut frames = BTreeSet::new();
    frames.insert(pml4 / PAGE_SIZE);
    // (table, level): 3 = PDPT, 2 = PD, 1 = PT.
    let mut tables: Vec<(u64, u8)> = (256..512)
        .filter_map(|i| entry(pml4, i))
        .map(|e| e & FRAME)
        .filter(|&t| t != pml4)
        .map(|t| (t, 3))
        .collect();
    while let Some((table, level)) = tables.pop() {
        if frames.len() > LIMIT || !frames.insert(table / PAGE_SIZE) {
            continue;
        }
        for i in 0..512 {
            let Some(e) = entry(table, i) else { continue };
            let frame = e & FRAME;
            if level == 1 {
                frames.insert(frame / PAGE_SIZE);
            } else if e & LARGE != 0 {
                let pages = if level == 3 { 512 * 512 } else { 512 };
                frames.extend((0..pages).map(|p| frame / PAGE_SIZE + p));
            } else if frame != pml4 {
                tables.push((frame, level - 1));
            }
        }
    }
    frames.into_iter().collect()
}
