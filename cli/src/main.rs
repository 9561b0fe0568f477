//! `kds`: the command line. Argument parsing and wiring only; the work is in the crates.

mod check;
mod download_progress;
mod live;
mod repl;
mod run;
mod snapshot;
mod target;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

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
    Info(target::InfoArgs),
    /// Run a playbook (or `-c` commands) against a target.
    Run(run::RunArgs),
    /// Lint playbooks without a target; exits 2 when any has errors.
    Check(check::CheckArgs),
    /// An interactive `kd>` prompt in the playbook language against a target.
    Repl(repl::ReplArgs),
    /// Write a standard bitmap crash dump (64-bit, or 32-bit for an x86 kernel) from any target
    /// (dump, image, live kernel).
    Snapshot(snapshot::SnapshotArgs),
}

/// Output formats shared by the commands.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Jsonl,
}

/// Exit codes: 1 an expectation failed, 2 usage or script errors, 3 target errors.
pub mod exit {
    pub const EXPECTATION_FAILED: u8 = 1;
    pub const SCRIPT_ERROR: u8 = 2;
    pub const TARGET_ERROR: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Info(args) => target::info(&args),
        Command::Run(args) => run::run(&args),
        Command::Check(args) => check::check(&args),
        Command::Repl(args) => repl::repl(&args),
        Command::Snapshot(args) => snapshot::snapshot(&args),
    };
    ExitCode::from(code)
}
