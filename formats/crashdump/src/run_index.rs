//! Page lookup for dumps that store runs of consecutive pages back to back: full dumps (runs
//! from `PHYSICAL_MEMORY_DESCRIPTOR64`, pages from 0x2000, or `PHYSICAL_MEMORY_DESCRIPTOR32`,
//! pages from 0x1000) and `RDMP` dumps (page ranges at
//! 0x2030, pages from the header's first-page offset).
//!
//! Invariant: runs are sorted by base page and do not overlap, and every page they describe
//! lies inside the file, so a lookup is one binary search over the (few) runs plus a prefix sum.

use crate::error::DumpError;
use crate::header::PhysicalRun;
use crate::PAGE_SIZE;

#[derive(Debug, Clone, Copy)]
struct IndexedRun {
    base_page: u64,
    page_count: u64,
    /// Pages stored before this run.
    pages_before: u64,
}

#[derive(Debug)]
pub(crate) struct RunIndex {
    runs: Vec<IndexedRun>,
    first_page: u64,
    total: u64,
}

impl RunIndex {
    /// Validates `runs` (whose entries are `stride` bytes apart from file offset
    /// `table_offset`) and builds the index; pages are stored from file offset `first_page`.
    pub(crate) fn build(
        runs: &[PhysicalRun],
        table_offset: u64,
        stride: u64,
        first_page: u64,
        file_len: u64,
    ) -> Result<RunIndex, DumpError> {
        let mut indexed = Vec::with_capacity(runs.len());
        let mut total = 0u64;
        let mut previous_end = 0u64;
        for (index, run) in runs.iter().enumerate() {
            let offset = table_offset + stride * index as u64;
            let end = run
                .base_page
                .checked_add(run.page_count)
                .filter(|&end| end <= u64::MAX / PAGE_SIZE as u64)
                .ok_or(DumpError::RunOverflow {
                    index,
                    offset,
                    base_page: run.base_page,
                    page_count: run.page_count,
                })?;
            if index > 0 && run.base_page < previous_end {
                return Err(DumpError::RunsOverlap {
                    index,
                    offset,
                    base_page: run.base_page,
                    previous_end,
                });
            }
            previous_end = end;
            if run.page_count > 0 {
                indexed.push(IndexedRun {
                    base_page: run.base_page,
                    page_count: run.page_count,
                    pages_before: total,
                });
            }
            // Cannot overflow: the runs are disjoint and below u64::MAX / PAGE_SIZE.
            total += run.page_count;
        }
        let held = file_len.saturating_sub(first_page) / PAGE_SIZE as u64;
        if total > held {
            return Err(DumpError::RunsPastEnd {
                offset: table_offset,
                pages: total,
                first_page,
                held,
                file_len,
            });
        }
        Ok(RunIndex {
            runs: indexed,
            first_page,
            total,
        })
    }

    pub(crate) fn page_offset(&self, pfn: u64) -> Option<u64> {
        let at = self.runs.partition_point(|r| r.base_page <= pfn);
        let run = self.runs.get(at.checked_sub(1)?)?;
        let within = pfn - run.base_page;
        if within >= run.page_count {
            return None;
        }
        (run.pages_before + within)
            .checked_mul(PAGE_SIZE as u64)?
            .checked_add(self.first_page)
    }

    pub(crate) fn present(&self) -> u64 {
        self.total
    }

    pub(crate) fn highest(&self) -> Option<u64> {
        self.runs.last().map(|r| r.base_page + r.page_count - 1)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs
            .iter()
            .flat_map(|r| r.base_page..r.base_page + r.page_count)
    }
}
