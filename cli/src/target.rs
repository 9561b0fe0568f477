//! Opening a target and `kds info`.

use crate::{exit, Format};
use clap::Args;
use kds_runtime::session::Session;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::target::{CountingTarget, DumpTarget, KdTarget, SnapshotTarget, Target};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct TargetArgs {
    /// A kernel crash dump (MEMORY.DMP), `-z` as in WinDbg; or a memory image of a running
    /// system (raw physical, ELF core from QEMU/libvirt), whose kernel is found by scanning.
    #[arg(short = 'z', long = "dump", value_name = "DUMP")]
    pub dump: Option<PathBuf>,
    /// Symbol search path (`_NT_SYMBOL_PATH` syntax: directories, `cache*<dir>`,
    /// `srv*<downstream>*<url>`, `symsrv*symsrv.dll*<downstream>*<url>`); defaults to
    /// `_NT_ALT_SYMBOL_PATH` then `_NT_SYMBOL_PATH`. Servers are asked only for the PDB's name,
    /// GUID and age; downloads are cached in the downstream store.
    #[arg(short = 'y', long = "sympath", value_name = "PATH")]
    pub sympath: Option<String>,
    /// A live kernel over KDCOM, as WinDbg's `-k`: `com:port=COM1,baud=115200`,
    /// `com:pipe,port=\\.\pipe\name[,resets=0][,reconnect]`, `com:ipport=PORT,port=IP`,
    /// `tcp:host:port` or `unix:path`. The target is resumed when kds ends, however it ends.
    #[arg(
        short = 'k',
        long = "kd",
        value_name = "CONNECTION",
        conflicts_with = "dump"
    )]
    pub kd: Option<String>,
    /// Leave a live target broken in at the end (it serves nobody until continued).
    #[arg(long, requires = "kd")]
    pub stay_broken: bool,
    /// Resume a live target and fail the run once it has been frozen this long (30s, 2m).
    #[arg(long, value_name = "DURATION", value_parser = crate::live::parse_duration, requires = "kd")]
    pub max_freeze: Option<std::time::Duration>,
    /// How long to wait for a live target to answer the break-in (default: forever).
    #[arg(long, value_name = "DURATION", value_parser = crate::live::parse_duration, requires = "kd")]
    pub connect_timeout: Option<std::time::Duration>,
    /// Allow requests that change a live target (none of the commands needs one).
    #[arg(long, requires = "kd")]
    pub allow_write: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The dump, given without `-z`.
    #[arg(value_name = "DUMP", conflicts_with = "dump")]
    pub positional: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// An opened target: the session over a read-counting wrapper, and the file size.
pub struct Opened {
    pub session: Session,
    pub counter: Arc<CountingTarget>,
    pub file_size: Option<u64>,
    /// The live kernel, when the target is one (resume it through [`Opened::finish`]).
    pub live: Option<Arc<KdTarget>>,
    pub stay_broken: bool,
}

impl Opened {
    /// End a live session (resume unless `--stay-broken`), print the wire stats when asked.
    /// Returns the exit code the session's end calls for: 130 after Ctrl-C, 3 when the
    /// target could not be resumed, else `code`.
    pub fn finish(&self, code: u8, stats: bool) -> u8 {
        let Some(live) = &self.live else {
            return code;
        };
        let resumed = crate::live::finish(live, self.stay_broken, stats);
        if crate::live::interrupted() {
            eprintln!("interrupted");
            130
        } else if !resumed {
            exit::TARGET_ERROR
        } else {
            code
        }
    }
}

pub fn open(args: &TargetArgs, positional: Option<&PathBuf>) -> Result<Opened> {
    if let Some(connection) = &args.kd {
        return open_live(args, connection);
    }
    let path = args.dump.as_ref().or(positional).ok_or_else(|| {
        miette!(
            help = "give a dump with -z MEMORY.DMP or a live kernel with -k com:port=COM1",
            "no target given"
        )
    })?;
    let symbol_path = SymbolPath::from_env_and_arg(args.sympath.as_deref()).into_diagnostic()?;
    crate::download_progress::install();
    let inner: Arc<dyn Target> = if is_crash_dump(path) {
        Arc::new(
            DumpTarget::open(path)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot open {}", path.display()))?,
        )
    } else {
        // No crash-dump header: a memory image (raw, ELF core, VMware .vmem/.vmss); its kernel is
        // found by scanning.
        let snapshot = SnapshotTarget::open(path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot open {} as a memory image", path.display()))?;
        eprintln!(
            "{} is a memory capture taken while the system ran: it may be inconsistent \
             (torn lists are reported as warnings).",
            path.display()
        );
        Arc::new(snapshot)
    };
    let file_size = std::fs::metadata(path).ok().map(|m| m.len());
    let counter = Arc::new(CountingTarget::new(inner));
    let target: Arc<dyn Target> = counter.clone();
    let session = Session::open(target, symbol_path).into_diagnostic()?;
    Ok(Opened {
        session,
        counter,
        file_size,
        live: None,
        stay_broken: false,
    })
}

/// Whether to open the file as a crash dump: it starts with a dump signature (PAGEDU64,
/// PAGEDUMP, or a user-mode MDMP, which the dump reader refuses precisely), or is too short to
/// be anything else. Everything else is opened as a memory image (raw or ELF core).
fn is_crash_dump(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut signature = [0u8; 8];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut signature)) {
        Ok(()) => {
            &signature == b"PAGEDU64" || &signature == b"PAGEDUMP" || signature.starts_with(b"MDMP")
        }
        Err(_) => true,
    }
}

fn open_live(args: &TargetArgs, connection: &str) -> Result<Opened> {
    let symbol_path = SymbolPath::from_env_and_arg(args.sympath.as_deref()).into_diagnostic()?;
    crate::download_progress::install();
    let live = Arc::new(crate::live::connect(&crate::live::LiveArgs {
        connection,
        stay_broken: args.stay_broken,
        allow_write: args.allow_write,
        max_freeze: args.max_freeze,
        connect_timeout: args.connect_timeout,
    })?);
    let inner: Arc<dyn Target> = live.clone();
    let counter = Arc::new(CountingTarget::new(inner));
    let target: Arc<dyn Target> = counter.clone();
    let session = match Session::open(target, symbol_path) {
        Ok(session) => session,
        Err(e) => {
            crate::live::finish(&live, args.stay_broken, false);
            return Err(e).into_diagnostic();
        }
    };
    eprint!("{}", crate::live::connect_banner(&live, &session));
    Ok(Opened {
        session,
        counter,
        file_size: None,
        live: Some(live),
        stay_broken: args.stay_broken,
    })
}

pub fn info(args: &InfoArgs) -> u8 {
    let opened = match open(&args.target, args.positional.as_ref()) {
        Ok(o) => o,
        Err(report) => {
            eprintln!("{report:?}");
            return exit::TARGET_ERROR;
        }
    };
    let info = kds_stdlib::info::collect(&opened.session, opened.file_size);
    let code = match args.format {
        Format::Text => {
            print!("{}", kds_stdlib::info::render_text(&info));
            0
        }
        Format::Json | Format::Jsonl => match serde_json::to_string_pretty(&info) {
            Ok(json) => {
                println!("{json}");
                0
            }
            Err(e) => {
                eprintln!("cannot render JSON: {e}");
                exit::TARGET_ERROR
            }
        },
    };
    opened.finish(code, false)
}
