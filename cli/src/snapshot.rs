//! `kds snapshot`: write a standard bitmap crash dump from any target, and `kds run --record`.

use crate::target::{open, TargetArgs};
use clap::{Args, ValueEnum};
use kds_runtime::dump_writer::{write_bitmap_dump, PageSelection};
use kds_runtime::model::ModelContext;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, ValueEnum)]
pub enum Pages {
    /// Every page the target holds (dumps and images); on a live kernel, every RAM page of
    /// its physical memory runs (`MmPhysicalMemoryBlock`).
    All,
    /// The kernel half: its page tables and every frame they map.
    Kernel,
}

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The dump to write: a bitmap dump (type 5), `PAGEDU64` for an x64 kernel, `PAGEDUMP`
    /// for an x86 one.
    #[arg(short = 'o', long = "output", value_name = "DUMP")]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "all")]
    pub pages: Pages,
}

pub fn snapshot(args: &SnapshotArgs) -> u8 {
    let opened = match open(&args.target, None) {
        Ok(o) => o,
        Err(report) => {
            eprintln!("{report:?}");
            return crate::exit::TARGET_ERROR;
        }
    };
    let selection = match args.pages {
        Pages::All => PageSelection::All,
        Pages::Kernel => PageSelection::Kernel,
    };
    let code = write(&opened.session, &selection, &args.output);
    opened.finish(code, false)
}

/// Write `selection` of the session's target to `path`; report on stderr; an exit code.
pub fn write(
    session: &kds_runtime::session::Session,
    selection: &PageSelection,
    path: &Path,
) -> u8 {
    let system_time = ModelContext::from_session(session)
        .ok()
        .and_then(|m| m.system_time());
    match write_bitmap_dump(session, selection, system_time, path) {
        Ok(written) => {
            eprintln!(
                "wrote {}: {} pages ({} bytes){}",
                path.display(),
                written.pages,
                written.file_size,
                if written.unreadable > 0 {
                    format!(", {} chosen pages could not be read", written.unreadable)
                } else {
                    String::new()
                }
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            crate::exit::TARGET_ERROR
        }
    }
}
