//! `kds check`: lint playbooks without a target.

use crate::exit;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct CheckArgs {
    /// Playbooks to lint.
    #[arg(value_name = "PLAYBOOK", required = true)]
    pub playbooks: Vec<PathBuf>,
}

pub fn check(args: &CheckArgs) -> u8 {
    let mut failed = false;
    for path in &args.playbooks {
        let name = path.display().to_string();
        let source = match std::fs::read(path).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => {
                eprintln!(
                    "error: {name} is not a text playbook: invalid UTF-8 at byte {}",
                    e.utf8_error().valid_up_to()
                );
                failed = true;
                continue;
            }
            Err(e) => {
                eprintln!("error: cannot read {name}: {e}");
                failed = true;
                continue;
            }
        };
        let problems = kds_lang::lint(&source, &name);
        if problems.iter().any(kds_lang::Diagnostic::is_error) {
            failed = true;
        }
        if problems.is_empty() {
            println!("{name}: ok");
        } else {
            eprint!("{}", kds_lang::render(&problems, &name, &source));
        }
    }
    if failed {
        exit::SCRIPT_ERROR
    } else {
        0
    }
}
