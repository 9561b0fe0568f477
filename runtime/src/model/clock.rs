//! The kernel's clock at capture: the tick count and the length of a tick, for wait times.
//! Both come from where the build keeps them (fields of `_KUSER_SHARED_DATA` and kernel
//! globals, as the table says), never from a build number.

use super::{ModelContext, ModelError};
use crate::mmu::AddressSpace;
use crate::symbols::{SymbolTable, TypeRef};
use serde::Serialize;

const KUSER: &str = "_KUSER_SHARED_DATA";

/// Tick count and tick length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clock {
    /// Clock ticks since boot.
    pub tick_count: u64,
    /// Where the tick count was read (`_KUSER_SHARED_DATA.TickCountQuad`, ...).
    pub tick_source: String,
    /// `KeMaximumIncrement`: the clock tick in 100 ns units, when readable.
    pub max_increment: Option<u64>,
    /// `_KUSER_SHARED_DATA.TickCountMultiplier` (ms per tick × 2^24), when readable.
    pub tick_count_multiplier: Option<u64>,
    /// `_KUSER_SHARED_DATA.SystemTime` (FILETIME), when readable: "now" on a live target.
    pub system_time: Option<u64>,
}

impl Clock {
    /// Milliseconds in `ticks`: from `KeMaximumIncrement` when known, else from the
    /// multiplier; `None` when neither could be read.
    #[must_use]
    pub fn ticks_to_ms(&self, ticks: u64) -> Option<u64> {
        let ticks = u128::from(ticks);
        let ms = match (self.max_increment, self.tick_count_multiplier) {
            (Some(inc), _) if inc != 0 => ticks * u128::from(inc) / 10_000,
            (_, Some(mul)) if mul != 0 => (ticks * u128::from(mul)) >> 24,
            _ => return None,
        };
        u64::try_from(ms).ok()
    }

    /// Ticks from `since` to now, where `since` is stored in `bits` bits (a thread's
    /// `WaitTime` keeps the low 32 bits of the tick count): modular arithmetic.
    #[must_use]
    pub fn ticks_since(&self, since: u64, bits: u32) -> u64 {
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        (self.tick_count & mask).wrapping_sub(since & mask) & mask
    }

    pub(crate) fn read(model: &ModelContext, kuser: u64) -> Result<Clock, ModelError> {
        let table = model.table();
        let space = model.kernel_space();
        let (tick_count, tick_source) = read_tick_count(model, table, space, kuser)?;
        let max_increment = model
            .symbol_address("KeMaximumIncrement")
            // KeMaximumIncrement is a ULONG on every build.
            .and_then(|at| space.read_u32(at).ok())
            .map(u64::from)
            .filter(|v| *v != 0);
        let tick_count_multiplier = table
            .field(KUSER, "TickCountMultiplier")
            .ok()
            .and_then(|f| {
                let size = table.size_of_ref(&f.ty).ok()?;
                read_uint(space, kuser.wrapping_add(f.offset), size)
            })
            .filter(|v| *v != 0);
        let system_time = table
            .field(KUSER, "SystemTime")
            .ok()
            .and_then(|f| read_system_time(table, space, &f.ty, kuser.wrapping_add(f.offset)))
            .filter(|v| *v != 0);
        Ok(Clock {
            tick_count,
            tick_source,
            max_increment,
            tick_count_multiplier,
            system_time,
        })
    }
}

fn read_tick_count(
    model: &ModelContext,
    table: &SymbolTable,
    space: &AddressSpace,
    kuser: u64,
) -> Result<(u64, String), ModelError> {
    let fail = |what: &str, at: u64| {
        ModelError::NoClock(format!(
            "{what} at {} cannot be read",
            super::format_address(at, model.pointer_size())
        ))
    };
    if let Ok(f) = table.field(KUSER, "TickCountQuad") {
        let at = kuser.wrapping_add(f.offset);
        let size = table.size_of_ref(&f.ty)?;
        let v = read_uint(space, at, size).ok_or_else(|| fail("TickCountQuad", at))?;
        return Ok((v, format!("{KUSER}.TickCountQuad")));
    }
    if let Ok(f) = table.field(KUSER, "TickCount") {
        let at = kuser.wrapping_add(f.offset);
        let v = read_system_time(table, space, &f.ty, at).ok_or_else(|| fail("TickCount", at))?;
        return Ok((v, format!("{KUSER}.TickCount")));
    }
    if let Some(at) = model.symbol_address("KeTickCount") {
        let ty = if table.has_type("_KSYSTEM_TIME") {
            TypeRef::User("_KSYSTEM_TIME".into())
        } else {
            TypeRef::Base("pointer".into())
        };
        let v = read_system_time(table, space, &ty, at).ok_or_else(|| fail("KeTickCount", at))?;
        return Ok((v, "KeTickCount".into()));
    }
    Err(ModelError::NoClock(
        "the table has neither _KUSER_SHARED_DATA.TickCountQuad / TickCount nor KeTickCount".into(),
    ))
}

/// A `_KSYSTEM_TIME` (LowPart + High1Time << 32) or a plain integer.
fn read_system_time(
    table: &SymbolTable,
    space: &AddressSpace,
    ty: &TypeRef,
    at: u64,
) -> Option<u64> {
    if let TypeRef::User(name) = ty {
        let low = table.field(name, "LowPart").ok()?;
        let high = table.field(name, "High1Time").ok()?;
        let lo = read_uint(
            space,
            at.wrapping_add(low.offset),
            table.size_of_ref(&low.ty).ok()?,
        )?;
        let hi = read_uint(
            space,
            at.wrapping_add(high.offset),
            table.size_of_ref(&high.ty).ok()?,
        )?;
        return Some((hi << 32) | (lo & 0xFFFF_FFFF));
    }
    let size = match ty {
        TypeRef::Base(name) if name == "pointer" => match table.pointer_size() {
            0 => space.spec().pointer_size,
            n => n,
        },
        other => table.size_of_ref(other).ok()?,
    };
    read_uint(space, at, size)
}

fn read_uint(space: &AddressSpace, at: u64, size: u64) -> Option<u64> {
    let n = usize::try_from(size).ok().filter(|n| (1..=8).contains(n))?;
    let mut buf = [0u8; 8];
    space.read(at, &mut buf[..n]).ok()?;
    Some(u64::from_le_bytes(buf))
}

/// A FILETIME (100 ns since 1601-01-01 UTC) as `2024-05-06 12:34:56.789`, UTC.
#[must_use]
pub fn format_filetime(filetime: u64) -> String {
    const TICKS_PER_DAY: u64 = 864_000_000_000;
    let days = filetime / TICKS_PER_DAY;
    let rest = filetime % TICKS_PER_DAY;
    let (h, m, s, ms) = (
        rest / 36_000_000_000,
        rest / 600_000_000 % 60,
        rest / 10_000_000 % 60,
        rest / 10_000 % 1000,
    );
    let (y, mo, d) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}.{ms:03}")
}

/// Days since 1601-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days_since_1601: i64) -> (i64, u32, u32) {
    // 1601-01-01 is day -134774 relative to 1970-01-01.
    let z = days_since_1601.saturating_sub(134_774) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
