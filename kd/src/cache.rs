//! Memory read during one break-in, kept until the target runs again.

use std::collections::HashMap;

/// Bytes per cached block. Reads fetch whole blocks, so neighbouring fields cost one request;
/// small enough that a lone 8-byte page-table entry does not drag a whole page over the wire.
pub const BLOCK: u64 = 256;

/// Physical memory blocks fetched since the last break-in; absent blocks are remembered too.
#[derive(Debug, Default)]
pub struct BlockCache {
    blocks: HashMap<u64, Option<Box<[u8; BLOCK as usize]>>>,
    pub hits: u64,
    pub misses: u64,
}

/// What the cache knows about one block.
pub enum Cached<'a> {
    Bytes(&'a [u8; BLOCK as usize]),
    /// The target said this block cannot be read.
    Unreadable,
    Unknown,
}

impl BlockCache {
    /// The block holding `address` (its index, `address / BLOCK`).
    #[must_use]
    pub fn get(&self, index: u64) -> Cached<'_> {
        match self.blocks.get(&index) {
            Some(Some(bytes)) => Cached::Bytes(bytes),
            Some(None) => Cached::Unreadable,
            None => Cached::Unknown,
        }
    }

    /// Remember the bytes of block `index`.
    pub fn put(&mut self, index: u64, bytes: &[u8]) {
        let mut block = Box::new([0u8; BLOCK as usize]);
        block.copy_from_slice(bytes);
        self.blocks.insert(index, Some(block));
    }

    /// Remember that block `index` could not be read.
    pub fn put_unreadable(&mut self, index: u64) {
        self.blocks.insert(index, None);
    }

    /// Forget everything (the target ran).
    pub fn clear(&mut self) {
        self.blocks.clear();
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}
