//! Opening a target and `kds info`.

use crate::{exit, Format};
use clap::Args;
use kds_runtime::session::Session;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::target::{CountingTarget, DumpTarget, Target};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct TargetArgs {
    /// A kernel crash dump (MEMORY.DMP); `-z` as in WinDbg.
    #[arg(short = 'z', long = "dump", value_name = "DUMP")]
    pub dump: Option<PathBuf>,
    /// Symbol search path (`_NT_SYMBOL_PATH` syntax: directories, `cache*<dir>`,
    /// `srv*<downstream>*<url>`, `symsrv*symsrv.dll*<downstream>*<url>`); defaults to
    /// `_NT_ALT_SYMBOL_PATH` then `_NT_SYMBOL_PATH`. Servers are asked only for the PDB's name,
    /// GUID and age; downloads are cached in the downstream store.
    #[arg(short = 'y', long = "sympath", value_name = "PATH")]
    pub sympath: Option<String>,
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
}

pub fn open(args: &TargetArgs, positional: Option<&PathBuf>) -> Result<Opened> {
    let path = args
        .dump
        .as_ref()
        .or(positional)
        .ok_or_else(|| miette!(help = "give a dump with -z MEMORY.DMP", "no target given"))?;
    let symbol_path = SymbolPath::from_env_and_arg(args.sympath.as_deref()).into_diagnostic()?;
    crate::download_progress::install();
    let dump = DumpTarget::open(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {}", path.display()))?;
    let file_size = std::fs::metadata(path).ok().map(|m| m.len());
    let inner: Arc<dyn Target> = Arc::new(dump);
    let counter = Arc::new(CountingTarget::new(inner));
    let target: Arc<dyn Target> = counter.clone();
    let session = Session::open(target, symbol_path).into_diagnostic()?;
    Ok(Opened {
        session,
        counter,
        file_size,
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
    match args.format {
        Format::Text => print!("{}", kds_stdlib::info::render_text(&info)),
        Format::Json | Format::Jsonl => match serde_json::to_string_pretty(&info) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("cannot render JSON: {e}");
                return exit::TARGET_ERROR;
            }
        },
    }
    0
}
