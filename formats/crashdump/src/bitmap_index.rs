//! Rank index over the page bitmap of bitmap dumps.
//!
//! Invariant: stored pages are in ascending pfn order, so page `pfn` lives at
//! `first_page + rank(pfn) * PAGE_SIZE`, where `rank(pfn)` is the number of set bits below
//! `pfn`. Opening does one pass over the bitmap and keeps one `u64` per [`WORDS_PER_BLOCK`]
//! 64-bit words (1/512 of the bitmap); a lookup then reads at most [`WORDS_PER_BLOCK`] words.
//! Nothing is allocated per page.

use crate::bytes::Bytes;
use crate::error::DumpError;
use crate::header::{BitmapHeader, BitmapOffsets};
use crate::PAGE_SIZE;

/// Number of 64-bit bitmap words covered by one cumulative count.
pub(crate) const WORDS_PER_BLOCK: usize = 8;

#[derive(Debug)]
pub(crate) struct BitmapIndex {
    /// File offset of the bitmap.
    bitmap_offset: usize,
    /// Bits in the bitmap (the header's `Pages`).
    bits: u64,
    /// Bytes of bitmap: `ceil(bits / 8)`.
    bytes: usize,
    /// `block_ranks[b]` = set bits in words `[0, b * WORDS_PER_BLOCK)`.
    block_ranks: Vec<u64>,
    /// File offset of the first page.
    first_page: u64,
    present: u64,
    highest: Option<u64>,
}

impl BitmapIndex {
    /// Validates the bitmap described by `hdr` (whose fields are at `at`) against the file
    /// and builds the index.
    pub(crate) fn build(
        data: Bytes<'_>,
        hdr: &BitmapHeader,
        at: BitmapOffsets,
    ) -> Result<BitmapIndex, DumpError> {
        let file_len = data.len();
        let bitmap_offset = at.bitmap;
        let bytes64 = hdr.pages.div_ceil(8);
        let past_end = || DumpError::BitmapPastEnd {
            offset: bitmap_offset as u64,
            bits: hdr.pages,
            bytes: bytes64,
            file_len,
        };
        let bytes = usize::try_from(bytes64).map_err(|_| past_end())?;
        let bitmap_end = bitmap_offset.checked_add(bytes).ok_or_else(past_end)?;
        if bitmap_end as u64 > file_len {
            return Err(past_end());
        }
        if hdr.first_page < bitmap_end as u64 {
            return Err(DumpError::FirstPageInsideBitmap {
                field_offset: at.first_page as u64,
                first_page: hdr.first_page,
                bitmap_end: bitmap_end as u64,
            });
        }

        let mut index = BitmapIndex {
            bitmap_offset,
            bits: hdr.pages,
            bytes,
            block_ranks: Vec::with_capacity(bytes.div_ceil(8 * WORDS_PER_BLOCK)),
            first_page: hdr.first_page,
            present: 0,
            highest: None,
        };
        let mut count = 0u64;
        for w in 0..index.words() {
            if w % WORDS_PER_BLOCK == 0 {
                index.block_ranks.push(count);
            }
            let word = index.word(data.0, w);
            if word != 0 {
                count += u64::from(word.count_ones());
                index.highest = Some(w as u64 * 64 + 63 - u64::from(word.leading_zeros()));
            }
        }
        index.present = count;

        let held = file_len.saturating_sub(hdr.first_page) / PAGE_SIZE as u64;
        if count > held {
            return Err(DumpError::BitmapClaimsTooMany {
                bitmap_offset: bitmap_offset as u64,
                present: count,
                held,
                first_page: hdr.first_page,
            });
        }
        if count != hdr.total_present_pages {
            return Err(DumpError::PresentPagesMismatch {
                field_offset: at.total_present_pages as u64,
                stated: hdr.total_present_pages,
                bitmap_offset: bitmap_offset as u64,
                counted: count,
            });
        }
        Ok(index)
    }

    fn words(&self) -> usize {
        self.bytes.div_ceil(8)
    }

    /// Word `w` of the bitmap, with bits at or past `self.bits` cleared (kdmp-parser masks
    /// them the same way). `w` must be below `self.words()`, which `build` checked is in the file.
    fn word(&self, data: &[u8], w: usize) -> u64 {
        let start = self.bitmap_offset + w * 8;
        let end = (start + 8).min(self.bitmap_offset + self.bytes);
        let mut le = [0u8; 8];
        if let Some(src) = data.get(start..end) {
            le[..src.len()].copy_from_slice(src);
        }
        let mut word = u64::from_le_bytes(le);
        let tail = self.bits % 64;
        if tail != 0 && w + 1 == self.words() {
            word &= (1u64 << tail) - 1;
        }
        word
    }

    /// File offset of page `pfn`, if the bitmap marks it present.
    pub(crate) fn page_offset(&self, data: &[u8], pfn: u64) -> Option<u64> {
        if pfn >= self.bits {
            return None;
        }
        let w = usize::try_from(pfn / 64).ok()?;
        let bit = pfn % 64;
        let word = self.word(data, w);
        if word & (1u64 << bit) == 0 {
            return None;
        }
        let block = w / WORDS_PER_BLOCK;
        let mut rank = *self.block_ranks.get(block)?;
        for before in block * WORDS_PER_BLOCK..w {
            rank += u64::from(self.word(data, before).count_ones());
        }
        rank += u64::from((word & ((1u64 << bit) - 1)).count_ones());
        rank.checked_mul(PAGE_SIZE as u64)?
            .checked_add(self.first_page)
    }

    pub(crate) fn present(&self) -> u64 {
        self.present
    }

    pub(crate) fn highest(&self) -> Option<u64> {
        self.highest
    }

    pub(crate) fn iter<'a>(&'a self, data: &'a [u8]) -> BitmapPfns<'a> {
        BitmapPfns {
            index: self,
            data,
            next_word: 0,
            current: 0,
            current_base: 0,
        }
    }
}

/// Set bits of the bitmap, ascending.
pub(crate) struct BitmapPfns<'a> {
    index: &'a BitmapIndex,
    data: &'a [u8],
    next_word: usize,
    current: u64,
    current_base: u64,
}

impl Iterator for BitmapPfns<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        while self.current == 0 {
            if self.next_word >= self.index.words() {
                return None;
            }
            self.current = self.index.word(self.data, self.next_word);
            self.current_base = self.next_word as u64 * 64;
            self.next_word += 1;
        }
        let bit = u64::from(self.current.trailing_zeros());
        self.current &= self.current - 1;
        Some(self.current_base + bit)
    }
}
