//! A progress bar on stderr for symbol downloads, when stderr is a terminal.

use indicatif::{ProgressBar, ProgressStyle};
use kds_runtime::symbols::fetch::{set_default_progress, DownloadProgress};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// Draws one bar per download: the file name, bytes so far and the total when known.
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    fn with(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        match self.bar.lock() {
            Ok(mut bar) => f(&mut bar),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// The last path segment of a URL: what is being downloaded.
fn file_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

impl DownloadProgress for Bar {
    fn started(&self, url: &str) {
        let message = format!("downloading {}", file_of(url));
        self.with(|slot| {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} ({bytes_per_sec})",
            ) {
                bar.set_style(style);
            }
            bar.set_message(message);
            *slot = Some(bar);
        });
    }

    fn progress(&self, _url: &str, bytes: u64, total: Option<u64>) {
        self.with(|slot| {
            if let Some(bar) = slot {
                if let Some(total) = total {
                    bar.set_length(total);
                }
                bar.set_position(bytes);
            }
        });
    }

    fn finished(&self, _url: &str) {
        self.with(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        });
    }
}

/// Show symbol downloads on stderr, when it is a terminal (pipes and files stay clean).
pub fn install() {
    if std::io::stderr().is_terminal() {
        set_default_progress(Arc::new(Bar {
            bar: Mutex::new(None),
        }));
    }
}
