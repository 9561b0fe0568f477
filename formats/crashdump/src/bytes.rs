//! Little-endian field access over the file bytes; every read is bounds-checked and names the
//! field it wanted, so a short file becomes [`DumpError::Truncated`], never a panic.

use crate::error::DumpError;

#[derive(Clone, Copy)]
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl<'a> Bytes<'a> {
    pub(crate) fn len(self) -> u64 {
        self.0.len() as u64
    }

    pub(crate) fn slice(
        self,
        offset: usize,
        len: usize,
        what: &'static str,
    ) -> Result<&'a [u8], DumpError> {
        offset
            .checked_add(len)
            .and_then(|end| self.0.get(offset..end))
            .ok_or(DumpError::Truncated {
                what,
                offset: offset as u64,
                needed: len as u64,
                file_len: self.len(),
            })
    }

    pub(crate) fn array<const N: usize>(
        self,
        offset: usize,
        what: &'static str,
    ) -> Result<[u8; N], DumpError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(offset, N, what)?);
        Ok(out)
    }

    pub(crate) fn u32(self, offset: usize, what: &'static str) -> Result<u32, DumpError> {
        self.array(offset, what).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(self, offset: usize, what: &'static str) -> Result<u64, DumpError> {
        self.array(offset, what).map(u64::from_le_bytes)
    }
}
