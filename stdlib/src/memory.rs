//! `db`, `dw`, `dd`, `dq`, `dp`, `dc`, `da`, `du`, `dps`/`dqs`/`dds`: memory as WinDbg shows
//! it, read in the implicit process's address space (its user half and the kernel's).
//! Bytes that are not in memory print as `??`.

use crate::debugger::Debugger;
use crate::error::CommandError;
use crate::format::pointer;
use crate::report::Report;
use kds_runtime::mmu::AddressSpace;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// Most units one command shows (WinDbg asks before larger ranges; we cap).
const MAX_UNITS: u64 = 0x1_0000;
/// Default length of `da`/`du` strings, in characters.
const DEFAULT_STRING: u64 = 0x100;
/// Characters per `da`/`du` line.
const STRING_LINE: usize = 48;

/// Which display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpFormat {
    Bytes,
    Words,
    Dwords,
    Qwords,
    DwordsAscii,
    Ascii,
    Unicode,
    /// One pointer-sized value a line with its symbol (`dps`, `dqs`, `dds`).
    Symbols {
        unit: usize,
    },
}

impl DumpFormat {
    /// The display a command name asks for, on a target with `pointer_size`.
    #[must_use]
    pub fn for_command(name: &str, pointer_size: u64) -> Option<DumpFormat> {
        let ps = if pointer_size == 4 { 4 } else { 8 };
        Some(match name {
            "db" => DumpFormat::Bytes,
            "dw" => DumpFormat::Words,
            "dd" => DumpFormat::Dwords,
            "dq" => DumpFormat::Qwords,
            "dp" if ps == 8 => DumpFormat::Qwords,
            "dp" => DumpFormat::Dwords,
            "dc" => DumpFormat::DwordsAscii,
            "da" => DumpFormat::Ascii,
            "du" => DumpFormat::Unicode,
            "dps" => DumpFormat::Symbols { unit: ps },
            "dqs" => DumpFormat::Symbols { unit: 8 },
            "dds" => DumpFormat::Symbols { unit: 4 },
            _ => return None,
        })
    }

    fn unit(self) -> usize {
        match self {
            DumpFormat::Bytes | DumpFormat::Ascii => 1,
            DumpFormat::Words | DumpFormat::Unicode => 2,
            DumpFormat::Dwords | DumpFormat::DwordsAscii => 4,
            DumpFormat::Qwords => 8,
            DumpFormat::Symbols { unit } => unit,
        }
    }

    /// Units shown without an `L` count: 0x80 bytes, as WinDbg.
    fn default_units(self) -> u64 {
        match self {
            DumpFormat::Ascii | DumpFormat::Unicode => DEFAULT_STRING,
            DumpFormat::Symbols { unit } => 0x80 / unit as u64,
            other => 0x80 / other.unit() as u64,
        }
    }
}

/// The bytes read, one entry per byte (`None`: not in memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryDump {
    pub format: DumpFormat,
    pub address: u64,
    pub bytes: Vec<Option<u8>>,
    /// `dps`-style: the symbol of each value, when it has one.
    pub symbols: Vec<Option<String>>,
    #[serde(skip)]
    pub pointer_size: u64,
}

/// Read `count` units (default per format) at `address`.
pub fn dump_command(
    dbg: &mut Debugger,
    format: DumpFormat,
    address: u64,
    count: Option<u64>,
) -> Result<MemoryDump, CommandError> {
    let ps = dbg.pointer_size();
    let space = dbg.current_process().map_or_else(
        || Arc::clone(dbg.model().kernel_space()),
        |p| Arc::clone(p.space()),
    );
    let units = count
        .unwrap_or_else(|| format.default_units())
        .min(MAX_UNITS);
    let len = units * format.unit() as u64;
    let mut bytes = read_bytes(&space, address, len);
    if matches!(format, DumpFormat::Ascii | DumpFormat::Unicode) {
        // Strings end at their terminator.
        let unit = format.unit();
        if let Some(end) = bytes
            .chunks(unit)
            .position(|c| c.iter().all(|b| *b == Some(0)) || c.iter().any(Option::is_none))
        {
            bytes.truncate(end * unit);
        }
    }
    let symbols = match format {
        DumpFormat::Symbols { unit } => {
            let modules = dbg.modules()?;
            bytes
                .chunks(unit)
                .map(|c| {
                    let v = value_of(c)?;
                    modules.symbolize(v).map(|s| s.to_string())
                })
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(MemoryDump {
        format,
        address,
        bytes,
        symbols,
        pointer_size: ps,
    })
}

/// Bytes at `address`, page by page, `None` where a page cannot be read.
fn read_bytes(space: &AddressSpace, address: u64, len: u64) -> Vec<Option<u8>> {
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut at = address;
    let end = address.saturating_add(len);
    while at < end {
        let page_end = (at | 0xfff).saturating_add(1).min(end);
        let mut chunk = vec![0u8; usize::try_from(page_end - at).unwrap_or(0)];
        match space.read(at, &mut chunk) {
            Ok(()) => out.extend(chunk.into_iter().map(Some)),
            Err(_) => out.extend(std::iter::repeat_n(None, chunk.len())),
        }
        if page_end == at {
            break;
        }
        at = page_end;
    }
    out
}

/// A little-endian unit, `None` if any byte is missing.
fn value_of(chunk: &[Option<u8>]) -> Option<u64> {
    chunk
        .iter()
        .rev()
        .try_fold(0u64, |acc, b| Some(acc << 8 | u64::from((*b)?)))
}

fn printable(b: Option<u8>) -> char {
    match b {
        Some(b) if (0x20..0x7f).contains(&b) => b as char,
        Some(_) => '.',
        None => '?',
    }
}

impl MemoryDump {
    fn hex_unit(&self, chunk: &[Option<u8>]) -> String {
        let digits = chunk.len() * 2;
        match value_of(chunk) {
            Some(v) if chunk.len() == 8 => pointer(v, 8),
            Some(v) => format!("{v:0digits$x}"),
            None if chunk.len() == 8 => "????????`????????".to_string(),
            None => "?".repeat(digits),
        }
    }

    fn render_units(&self, out: &mut String, per_line: usize) {
        let ps = self.pointer_size;
        let unit = self.format.unit();
        for (i, line) in self.bytes.chunks(per_line).enumerate() {
            let at = self.address.wrapping_add((i * per_line) as u64);
            let mut text = format!("{}  ", pointer(at, ps));
            match self.format {
                DumpFormat::Bytes => {
                    for (j, b) in line.iter().enumerate() {
                        let sep = if j == 7 && line.len() > 8 { '-' } else { ' ' };
                        let hex = b.map_or_else(|| "??".to_string(), |b| format!("{b:02x}"));
                        let _ = write!(text, "{hex}{sep}");
                    }
                    let pad = (per_line - line.len()) * 3;
                    text.push_str(&" ".repeat(pad + 1));
                    text.extend(line.iter().map(|b| printable(*b)));
                }
                _ => {
                    let units: Vec<String> = line.chunks(unit).map(|c| self.hex_unit(c)).collect();
                    text.push_str(&units.join(" "));
                    if self.format == DumpFormat::DwordsAscii {
                        let width = (per_line / unit) * (unit * 2 + 1);
                        let used = units.iter().map(|u| u.len() + 1).sum::<usize>();
                        text.push_str(&" ".repeat(width.saturating_sub(used) + 2));
                        text.extend(line.iter().map(|b| printable(*b)));
                    }
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        }
    }
}

impl Report for MemoryDump {
    fn render(&self, out: &mut String) {
        let ps = self.pointer_size;
        match self.format {
            DumpFormat::Bytes | DumpFormat::Words | DumpFormat::Dwords | DumpFormat::Qwords => {
                self.render_units(out, 16);
            }
            DumpFormat::DwordsAscii => self.render_units(out, 16),
            DumpFormat::Symbols { unit } => {
                for (i, chunk) in self.bytes.chunks(unit).enumerate() {
                    let at = self.address.wrapping_add((i * unit) as u64);
                    let symbol = self
                        .symbols
                        .get(i)
                        .and_then(Clone::clone)
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default();
                    let _ = writeln!(out, "{}  {}{symbol}", pointer(at, ps), self.hex_unit(chunk));
                }
            }
            DumpFormat::Ascii | DumpFormat::Unicode => {
                let unit = self.format.unit();
                let chars: Vec<char> = if unit == 1 {
                    self.bytes.iter().map(|b| printable(*b)).collect()
                } else {
                    let units: Vec<u16> = self
                        .bytes
                        .chunks(2)
                        .filter_map(|c| {
                            Some(
                                u16::from(c.first().copied()??)
                                    | u16::from(c.get(1).copied()??) << 8,
                            )
                        })
                        .collect();
                    char::decode_utf16(units)
                        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                        .collect()
                };
                if chars.is_empty() {
                    let _ = writeln!(out, "{}  \"\"", pointer(self.address, ps));
                }
                for (i, line) in chars.chunks(STRING_LINE).enumerate() {
                    let at = self.address.wrapping_add((i * STRING_LINE * unit) as u64);
                    let s: String = line.iter().collect();
                    let _ = writeln!(out, "{}  \"{s}\"", pointer(at, ps));
                }
            }
        }
    }
}
