//! `kds`: the command line. Argument parsing and wiring only; the work is in the crates.

use clap::{Args, Parser, Subcommand, ValueEnum};
use kds_runtime::session::Session;
use kds_runtime::symbols::sympath::SymbolPath;
use kds_runtime::target::{DumpTarget, Target};
use miette::{miette, IntoDiagnostic, Result, WrapErr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "kds",
    version,
    about = "Declarative playbooks for Windows kernel debugging"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Identify a target: dump header, kernel, symbols, bugcheck.
    Info(InfoArgs),
}

#[derive(Args)]
struct TargetArgs {
    /// A kernel crash dump (MEMORY.DMP); `-z` as in WinDbg.
    #[arg(short = 'z', long = "dump", value_name = "DUMP")]
    dump_flag: Option<PathBuf>,
    /// The dump, given without `-z`.
    #[arg(value_name = "DUMP", conflicts_with = "dump_flag")]
    dump: Option<PathBuf>,
    /// Symbol search path (`_NT_SYMBOL_PATH` syntax); defaults to `_NT_SYMBOL_PATH`.
    #[arg(short = 'y', long = "sympath", value_name = "PATH")]
    sympath: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Args)]
struct InfoArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Exit codes shared by every command: 2 usage/script errors, 3 target errors.
const EXIT_TARGET_ERROR: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(EXIT_TARGET_ERROR)
        }
    }
}

fn open_session(args: &TargetArgs) -> Result<(Session, Option<u64>)> {
    let path = args
        .dump_flag
        .as_ref()
        .or(args.dump.as_ref())
        .ok_or_else(|| miette!(help = "kds info -z MEMORY.DMP", "no target given"))?;
    let symbol_path = SymbolPath::from_env_and_arg(args.sympath.as_deref()).into_diagnostic()?;
    let target = DumpTarget::open(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {}", path.display()))?;
    let file_size = std::fs::metadata(path).ok().map(|m| m.len());
    let target: Arc<dyn Target> = Arc::new(target);
    let session = Session::open(target, symbol_path).into_diagnostic()?;
    Ok((session, file_size))
}

fn info(args: &InfoArgs) -> Result<()> {
    let (session, file_size) = open_session(&args.target)?;
    let info = kds_stdlib::info::collect(&session, file_size);
    match args.format {
        Format::Text => print!("{}", kds_stdlib::info::render_text(&info)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&info).into_diagnostic()?),
    }
    Ok(())
}
