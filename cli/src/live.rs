//! Live KD in the CLI: the `-k` options, Ctrl-C, the connect banner, and ending a session
//! with the target resumed (or, with `--stay-broken`, saying loudly that it is not).

use kds_kd::connection::Connection;
use kds_kd::host::{HostOptions, Notice};
use kds_runtime::target::{KdTarget, LiveOptions};
use miette::{miette, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Set by SIGINT/SIGTERM; the KD engine resumes the target at its next exchange and stops.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&flag);
        // A second signal while the first is being handled leaves the process as the default
        // handler would; the first only raises the flag.
        let _ = ctrlc::set_handler(move || {
            if set.swap(true, Ordering::SeqCst) {
                eprintln!("interrupted again: exiting without waiting for the target");
                std::process::exit(130);
            }
        });
        flag
    })
    .clone()
}

/// Whether Ctrl-C was pressed during this run.
pub fn interrupted() -> bool {
    interrupt_flag().load(Ordering::SeqCst)
}

/// `30s`, `500ms`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// What the user asked of a live session.
pub struct LiveArgs<'a> {
    pub connection: &'a str,
    pub stay_broken: bool,
    pub allow_write: bool,
    pub max_freeze: Option<Duration>,
    pub connect_timeout: Option<Duration>,
}

/// Open the link and break in; notices go to stderr as WinDbg shows them.
pub fn connect(args: &LiveArgs<'_>) -> Result<KdTarget> {
    let connection = Connection::parse(args.connection).map_err(|e| {
        miette!(
            help =
                "e.g. -k com:port=COM1,baud=115200, -k com:pipe,port=\\\\.\\pipe\\kd,reconnect, \
                    -k tcp:host:port or -k unix:/path",
            "bad connection string `{}`: {e}",
            args.connection
        )
    })?;
    let options = LiveOptions {
        host: HostOptions {
            allow_write: args.allow_write,
            interrupt: interrupt_flag(),
            max_freeze: args.max_freeze,
            connect_timeout: args.connect_timeout,
            resets: connection.resets,
            ..HostOptions::default()
        },
        stay_broken: args.stay_broken,
    };
    let notify = Box::new(|notice: Notice| match notice {
        Notice::Waiting => eprintln!("Waiting to reconnect..."),
        Notice::DebugPrint(text) => eprint!("{text}"),
        Notice::LinkLost(reason) => eprintln!("The link dropped ({reason}); reconnecting..."),
        Notice::Reconnected => eprintln!("Reconnected; resynchronising with the target."),
        Notice::Resumed => {}
    });
    KdTarget::connect(&connection, options, notify).map_err(|e| {
        if interrupted() {
            miette!("interrupted while waiting for the target ({connection})")
        } else {
            miette!("cannot break in to {connection}: {e}")
        }
    })
}

/// WinDbg's connect banner (to stderr, before the playbook's output): the connection line,
/// then what `kds info` says of the kernel (version, build lab, kernel base,
/// PsLoadedModuleList, uptime), then why the target stopped.
#[must_use]
pub fn connect_banner(target: &KdTarget, session: &kds_runtime::session::Session) -> String {
    let v = target.version();
    let arch = if v.is_ptr64() { "x64" } else { "x86" };
    let now = chrono_like_now();
    let mut out = format!(
        "Connected to Windows {} {arch} compatible target at ({now}), ptr64 {}\n\
         Kernel Debugger connection established.\n",
        v.minor,
        if v.is_ptr64() { "TRUE" } else { "FALSE" }
    );
    let info = kds_stdlib::info::collect(session, None);
    let banner = kds_stdlib::info::render_banner(&info);
    // The stdlib banner opens with its own connection line; WinDbg's is the one above.
    let from = banner.find("Symbol search path is:").unwrap_or(0);
    out.push_str(&banner[from..]);
    let b = target.break_in();
    if b.exception_code == kds_kd::api::status::BREAKPOINT {
        out.push_str(&format!(
            "Break instruction exception - code {:08x} ({} chance)\n",
            b.exception_code,
            if b.first_chance { "first" } else { "second" }
        ));
    }
    out
}

fn chrono_like_now() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let since_1970 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // FILETIME (100 ns since 1601) so the stdlib's WinDbg time format applies.
    let filetime = (since_1970.as_secs() + 11_644_473_600) * 10_000_000
        + u64::from(since_1970.subsec_nanos() / 100);
    kds_stdlib::format::filetime(filetime).unwrap_or_else(|| format!("{}", since_1970.as_secs()))
}

/// End the session: resume unless `--stay-broken`; report either way. Returns false when the
/// target could not be resumed.
pub fn finish(target: &KdTarget, stay_broken: bool, stats: bool) -> bool {
    let ok = if stay_broken {
        eprintln!(
            "The target stays broken in (--stay-broken): it is frozen and serves nobody until a \
             debugger continues it."
        );
        true
    } else {
        match target.resume_now() {
            Ok(()) => {
                eprintln!("Target resumed.");
                true
            }
            Err(e) => {
                eprintln!("error: the target could not be resumed: {e}");
                false
            }
        }
    };
    if stats {
        let s = target.wire_stats();
        eprintln!(
            "wire: {} bytes sent, {} bytes received, {} round trips, {} packets out, {} in, \
             {} resends, {} corrupt, {} resets, {} reconnects; cache {} hits, {} misses",
            s.bytes_sent,
            s.bytes_received,
            s.round_trips,
            s.packets_sent,
            s.packets_received,
            s.resends,
            s.corrupt_packets,
            s.resets,
            s.reconnects,
            s.cache_hits,
            s.cache_misses
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }
}
