//! Number and time formats engineers know from WinDbg.

use chrono::{DateTime, Utc};

/// A pointer as WinDbg prints it: 64-bit as two 8-digit halves joined by a backtick,
/// 32-bit as 8 digits.
#[must_use]
pub fn pointer(value: u64, pointer_size: u64) -> String {
    if pointer_size == 4 {
        format!("{:08x}", value as u32)
    } else {
        format!("{:08x}`{:08x}", value >> 32, value & 0xFFFF_FFFF)
    }
}

/// A pointer as `!process` and `!thread` print it: all digits, no backtick
/// (`ffffe0009a25b840`); 8 digits on 32-bit targets.
#[must_use]
pub fn plain_pointer(value: u64, pointer_size: u64) -> String {
    if pointer_size == 4 {
        format!("{:08x}", value as u32)
    } else {
        format!("{value:016x}")
    }
}

/// Milliseconds as `hh:mm:ss.mmm` (thread and process times).
#[must_use]
pub fn hms_ms(ms: u64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    format!("{h:02}:{m:02}:{:02}.{:03}", rest / 1000, rest % 1000)
}

/// Milliseconds as `d:hh:mm:ss.mmm` (a wait's elapsed time after `Ticks:`).
#[must_use]
pub fn elapsed_ms(ms: u64) -> String {
    let (d, rest) = (ms / 86_400_000, ms % 86_400_000);
    let (h, rest) = (rest / 3_600_000, rest % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    format!("{d}:{h:02}:{m:02}:{:02}.{:03}", rest / 1000, rest % 1000)
}

/// `0x` + [`pointer`], as in `Kernel base = 0xfffff805`5a000000`.
#[must_use]
pub fn pointer_0x(value: u64, pointer_size: u64) -> String {
    format!("0x{}", pointer(value, pointer_size))
}

/// A FILETIME as WinDbg's "Debug session time": `Tue Mar 12 14:22:05.123 2024 (UTC + 0:00)`.
#[must_use]
pub fn filetime(filetime: u64) -> Option<String> {
    let since_1970 = filetime.checked_sub(116_444_736_000_000_000)?;
    let secs = i64::try_from(since_1970 / 10_000_000).ok()?;
    let nanos = u32::try_from((since_1970 % 10_000_000) * 100).ok()?;
    let t: DateTime<Utc> = DateTime::from_timestamp(secs, nanos)?;
    Some(format!(
        "{} (UTC + 0:00)",
        t.format("%a %b %e %H:%M:%S%.3f %Y")
    ))
}

/// A duration in 100 ns units as WinDbg's "System Uptime": `3 days 4:05:06.789`.
#[must_use]
pub fn uptime(units_100ns: u64) -> String {
    let ms = units_100ns / 10_000;
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    let (h, rest) = (rest / 3_600_000, rest % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{days} days {h}:{m:02}:{s:02}.{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_split_with_a_backtick_on_64_bit_only() {
        assert_eq!(pointer(0xffffe001_4ca22480, 8), "ffffe001`4ca22480");
        assert_eq!(pointer(0x1aa000, 8), "00000000`001aa000");
        assert_eq!(pointer(0x884aed90, 4), "884aed90");
        assert_eq!(pointer_0x(0xfffff805_5a000000, 8), "0xfffff805`5a000000");
    }

    #[test]
    fn durations_read_like_windbg() {
        assert_eq!(plain_pointer(0xffffe000_9a25b840, 8), "ffffe0009a25b840");
        assert_eq!(plain_pointer(0x7ffdf000, 4), "7ffdf000");
        assert_eq!(hms_ms(26_171), "00:00:26.171");
        assert_eq!(hms_ms(((5 * 60 + 6) * 60 + 4) * 1000 + 426), "05:06:04.426");
        assert_eq!(elapsed_ms(88_718), "0:00:01:28.718");
        assert_eq!(
            elapsed_ms((((2 * 24 + 5) * 60 + 4) * 60 + 29) * 1000 + 578),
            "2:05:04:29.578"
        );
    }

    #[test]
    fn filetime_and_uptime_read_like_windbg() {
        // 2024-03-12 14:22:05.123 UTC.
        let ft = (1_710_253_325_123u64 * 10_000) + 116_444_736_000_000_000;
        assert_eq!(
            filetime(ft).unwrap(),
            "Tue Mar 12 14:22:05.123 2024 (UTC + 0:00)"
        );
        assert_eq!(filetime(5), None);
        let up = ((3 * 86_400 + 4 * 3600 + 5 * 60 + 6) * 1000 + 789) * 10_000;
        assert_eq!(uptime(up), "3 days 4:05:06.789");
    }
}
