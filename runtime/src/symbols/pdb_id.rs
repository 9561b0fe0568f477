//! The identity of a PDB: name, GUID and age, as an image's RSDS record names it.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A Windows GUID in its in-memory layout (`Data1` to `Data4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl Guid {
    /// Parse the 16 bytes of a GUID as Windows stores it (little-endian `Data1..Data3`).
    #[must_use]
    pub fn from_le_bytes(b: [u8; 16]) -> Guid {
        Guid {
            data1: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            data2: u16::from_le_bytes([b[4], b[5]]),
            data3: u16::from_le_bytes([b[6], b[7]]),
            data4: [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
        }
    }

    /// The 16 bytes of the GUID as Windows stores it.
    #[must_use]
    pub fn to_le_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.data1.to_le_bytes());
        b[4..6].copy_from_slice(&self.data2.to_le_bytes());
        b[6..8].copy_from_slice(&self.data3.to_le_bytes());
        b[8..16].copy_from_slice(&self.data4);
        b
    }
}

/// Formats as symbol stores name it: 32 upper-case hex digits, no dashes.
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:04X}{:04X}", self.data1, self.data2, self.data3)?;
        for b in self.data4 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// A GUID string that is not 32 hex digits (dashes and braces allowed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a GUID (expected 32 hex digits, dashes and braces allowed)")]
pub struct GuidParseError(pub String);

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        let hex: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | '{' | '}'))
            .collect();
        let bad = || GuidParseError(s.to_string());
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let field = |from: usize, to: usize| u64::from_str_radix(&hex[from..to], 16);
        let data1 = u32::try_from(field(0, 8).map_err(|_| bad())?).map_err(|_| bad())?;
        let data2 = u16::try_from(field(8, 12).map_err(|_| bad())?).map_err(|_| bad())?;
        let data3 = u16::try_from(field(12, 16).map_err(|_| bad())?).map_err(|_| bad())?;
        let mut data4 = [0u8; 8];
        for (i, byte) in data4.iter_mut().enumerate() {
            let at = 16 + i * 2;
            *byte = u8::from_str_radix(&hex[at..at + 2], 16).map_err(|_| bad())?;
        }
        Ok(Guid {
            data1,
            data2,
            data3,
            data4,
        })
    }
}

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which PDB an image was built with: the key for every symbol lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PdbIdentity {
    /// File name of the PDB as recorded (`ntkrnlmp.pdb`), without directories.
    pub name: String,
    pub guid: Guid,
    pub age: u32,
}

impl PdbIdentity {
    /// The store key `<GUID><AGE>` with the age in upper-case hex, as symbol servers use.
    #[must_use]
    pub fn store_key(&self) -> String {
        format!("{}{:X}", self.guid, self.age)
    }

    /// The Volatility ISF file stem `<GUID>-<AGE>` (age in decimal).
    #[must_use]
    pub fn isf_stem(&self) -> String {
        format!("{}-{}", self.guid, self.age)
    }
}

impl fmt::Display for PdbIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}-{}", self.name, self.guid, self.age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trips_through_text_and_bytes() {
        let g: Guid = "68A17FAF3012B7846079AEECDBE0A583".parse().unwrap();
        assert_eq!(g.data1, 0x68A1_7FAF);
        assert_eq!(g.data2, 0x3012);
        assert_eq!(g.data3, 0xB784);
        assert_eq!(g.data4, [0x60, 0x79, 0xAE, 0xEC, 0xDB, 0xE0, 0xA5, 0x83]);
        assert_eq!(g.to_string(), "68A17FAF3012B7846079AEECDBE0A583");
        assert_eq!(Guid::from_le_bytes(g.to_le_bytes()), g);
        // In memory Data1 is little-endian.
        assert_eq!(&g.to_le_bytes()[..4], &[0xAF, 0x7F, 0xA1, 0x68]);
    }

    #[test]
    fn guid_accepts_registry_form_and_rejects_short_text() {
        let g: Guid = "{68A17FAF-3012-B784-6079-AEECDBE0A583}".parse().unwrap();
        assert_eq!(g.to_string(), "68A17FAF3012B7846079AEECDBE0A583");
        assert!("68A17FAF".parse::<Guid>().is_err());
        assert!("ZZA17FAF3012B7846079AEECDBE0A583".parse::<Guid>().is_err());
    }

    #[test]
    fn store_key_uses_hex_age_and_isf_stem_decimal_age() {
        let id = PdbIdentity {
            name: "ntkrnlmp.pdb".into(),
            guid: "68A17FAF3012B7846079AEECDBE0A583".parse().unwrap(),
            age: 26,
        };
        assert_eq!(id.store_key(), "68A17FAF3012B7846079AEECDBE0A5831A");
        assert_eq!(id.isf_stem(), "68A17FAF3012B7846079AEECDBE0A583-26");
    }
}
