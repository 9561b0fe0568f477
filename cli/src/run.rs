//! `kds run`: a playbook (or `-c` commands) against a target.

use crate::target::{open, TargetArgs};
use crate::{exit, Format};
use clap::Args;
use kds_exec::{render_json, render_jsonl, render_text, ExecError, RunOptions};
use kds_runtime::model::ModelContext;
use miette::{Diagnostic, NamedSource, SourceSpan};
use std::io::IsTerminal;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Args)]
pub struct RunArgs {
    /// The playbook (`.kds`).
    #[arg(value_name = "PLAYBOOK", required_unless_present = "commands")]
    pub playbook: Option<PathBuf>,
    /// Commands to run instead of a playbook, `;`-separated, as kd's `-c`.
    #[arg(
        short = 'c',
        long = "commands",
        value_name = "COMMANDS",
        conflicts_with = "playbook"
    )]
    pub commands: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Set a playbook parameter: `--set name=lsass.exe`.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Print target reads issued and bytes read (to stderr).
    #[arg(long)]
    pub stats: bool,
    /// Print the plan (each step, and the row fields each query reads) to stderr first.
    #[arg(long)]
    pub plan: bool,
    /// After the run, write the pages it read as a bitmap dump that replays it offline
    /// (`kds run x.kds -z <that dump>` gives the same output); before a live target resumes.
    #[arg(long, value_name = "DUMP")]
    pub record: Option<PathBuf>,
}

fn parse_set(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// An error of the run, shown against the playbook's source.
#[derive(Debug, Error, Diagnostic)]
#[error("{message}")]
pub(crate) struct RunError {
    message: String,
    #[source_code]
    source_code: NamedSource<String>,
    #[label("{label}")]
    span: SourceSpan,
    label: String,
}

pub fn run(args: &RunArgs) -> u8 {
    let (name, source) = match (&args.playbook, &args.commands) {
        (_, Some(commands)) => ("-c".to_string(), commands.clone()),
        (Some(path), None) => match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => (path.display().to_string(), text),
                Err(e) => {
                    eprintln!(
                        "error: {} is not a text playbook: invalid UTF-8 at byte {}",
                        path.display(),
                        e.utf8_error().valid_up_to()
                    );
                    return exit::SCRIPT_ERROR;
                }
            },
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return exit::SCRIPT_ERROR;
            }
        },
        (None, None) => {
            eprintln!("error: give a playbook or -c \"commands\"");
            return exit::SCRIPT_ERROR;
        }
    };

    let problems = kds_lang::lint(&source, &name);
    let errors: Vec<_> = problems.iter().filter(|d| d.is_error()).cloned().collect();
    if !problems.is_empty() {
        eprint!("{}", kds_lang::render(&problems, &name, &source));
    }
    if !errors.is_empty() {
        return exit::SCRIPT_ERROR;
    }
    let playbook = match kds_lang::parse(&source) {
        Ok(p) => p,
        Err(diagnostics) => {
            eprint!("{}", kds_lang::render(&diagnostics.0, &name, &source));
            return exit::SCRIPT_ERROR;
        }
    };

    if args.plan {
        eprint!(
            "plan of {name}:\n{}",
            kds_lang::plan::plan(&playbook, &source)
        );
    }
    let opened = match open(&args.target, None) {
        Ok(o) => o,
        Err(report) => {
            eprintln!("{report:?}");
            return exit::TARGET_ERROR;
        }
    };
    let model = match ModelContext::from_session(&opened.session) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return opened.finish(exit::TARGET_ERROR, false);
        }
    };
    let options = RunOptions {
        params: args.set.clone(),
        base_dir: args
            .playbook
            .as_ref()
            .and_then(|p| p.parent())
            .map(std::path::Path::to_path_buf),
    };
    let mut interpreter = kds_exec::Interpreter::new(model, &options);
    // A spinner naming the running statement, on a terminal only: long walks over a slow
    // target then show what they are doing; pipes and files get clean output.
    let spinner = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    if let Some(bar) = &spinner {
        let bar = bar.clone();
        interpreter.set_progress(move |step| bar.set_message(step.to_string()));
    }
    let report = interpreter.run(&source, &playbook);
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let rendered = match args.format {
        Format::Text => render_text(&report.items),
        Format::Json => render_json(&report.items) + "\n",
        Format::Jsonl => render_jsonl(&report.items),
    };
    print!("{rendered}");
    if let Some(error) = &report.error {
        eprintln!(
            "{:?}",
            miette::Report::new(run_error(error, &name, &source))
        );
    }
    if args.stats {
        let stats = opened.counter.stats();
        eprintln!(
            "target reads: {} ({} bytes, {} distinct)",
            stats.reads, stats.bytes, stats.distinct_bytes
        );
    }
    let mut code = report.exit_code();
    if let Some(path) = &args.record {
        let touched = opened.counter.touched_pfns();
        let selection = kds_runtime::dump_writer::PageSelection::Frames(touched);
        let written = crate::snapshot::write(&opened.session, &selection, path);
        if written != 0 && code == 0 {
            code = written;
        }
    }
    opened.finish(code, args.stats)
}

pub(crate) fn run_error(error: &ExecError, name: &str, source: &str) -> RunError {
    let span = error.span();
    let start = span.start.min(source.len());
    let len = span.end.min(source.len()).saturating_sub(start);
    RunError {
        message: error.to_string(),
        source_code: NamedSource::new(name, source.to_string()),
        span: (start, len).into(),
        label: if error.is_target_error() {
            "the target could not answer this".into()
        } else {
            "here".into()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::parse_set;

    #[test]
    fn set_takes_name_equals_value() {
        assert_eq!(
            parse_set("name=lsass.exe"),
            Ok(("name".into(), "lsass.exe".into()))
        );
        assert_eq!(parse_set("x=a=b"), Ok(("x".into(), "a=b".into())));
        assert!(parse_set("novalue").is_err());
        assert!(parse_set("=v").is_err());
    }
}
