//! Zero-page detection and the page map of a memory section.
//!
//! A paused sandbox's linear memory is mostly zero (a 4 GiB reservation with a
//! few MiB touched is typical), so the blob stores only the 64 KiB wasm pages
//! that hold a non-zero byte, as runs of consecutive pages. The page unit is
//! the wasm page so that a run maps one-to-one onto `memory.grow` granularity
//! and the data stays aligned for a later copy-on-write mmap.

/// The page unit of the page map: one wasm page, 64 KiB.
pub const PAGE_SIZE: u64 = 64 * 1024;

/// A run of consecutive present (not all-zero) pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    /// Index of the first page of the run.
    pub start_page: u64,
    /// Number of pages in the run; never zero in a valid map.
    pub page_count: u64,
}

impl PageRun {
    /// The byte range `[start, end)` this run covers in a memory of
    /// `byte_len` bytes. The last page of a memory whose length is not a
    /// multiple of [`PAGE_SIZE`] is partial, so the end is clamped.
    /// Returns `None` when the run does not fit in the memory.
    pub fn byte_range(&self, byte_len: u64) -> Option<(u64, u64)> {
        let start = self.start_page.checked_mul(PAGE_SIZE)?;
        let end_page = self.start_page.checked_add(self.page_count)?;
        let end = end_page.checked_mul(PAGE_SIZE)?.min(byte_len);
        if self.page_count == 0 || start >= end {
            return None;
        }
        Some((start, end))
    }
}

/// Whether `page` holds only zero bytes.
///
/// OR-folding fixed 256-byte blocks lets the compiler vectorise the inner loop
/// while still stopping at the first non-zero block.
fn is_zero(page: &[u8]) -> bool {
    let mut blocks = page.chunks_exact(256);
    let all_blocks = blocks
        .by_ref()
        .all(|b| b.iter().fold(0u8, |acc, &x| acc | x) == 0);
    all_blocks && blocks.remainder().iter().all(|&x| x == 0)
}

/// Scans `data` page by page and returns the runs of pages that hold at least
/// one non-zero byte, in ascending order, adjacent runs merged.
pub fn present_runs(data: &[u8]) -> Vec<PageRun> {
    let mut runs: Vec<PageRun> = Vec::new();
    for (index, page) in data.chunks(PAGE_SIZE as usize).enumerate() {
        if is_zero(page) {
            continue;
        }
        let index = index as u64;
        match runs.last_mut() {
            Some(run) if run.start_page + run.page_count == index => run.page_count += 1,
            _ => runs.push(PageRun {
                start_page: index,
                page_count: 1,
            }),
        }
    }
    runs
}

/// Why a page map is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageMapViolation {
    /// A run has zero pages.
    EmptyRun,
    /// A run reaches beyond the memory's byte length.
    RunBeyondMemory,
    /// Runs are not strictly ascending, or overlap or touch a previous run.
    NotAscending,
}

impl PageMapViolation {
    /// A short human-readable reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyRun => "a run has zero pages",
            Self::RunBeyondMemory => "a run reaches beyond the memory length",
            Self::NotAscending => "runs are not ascending and disjoint",
        }
    }
}

/// Checks that `runs` is a canonical page map of a memory of `byte_len`
/// bytes and returns the number of data bytes it covers.
///
/// Canonical (ascending, disjoint, non-adjacent) is required rather than
/// merely non-overlapping so that every memory has exactly one encoding.
pub fn validate(runs: &[PageRun], byte_len: u64) -> Result<u64, PageMapViolation> {
    let mut next_free_page = 0u64;
    let mut total = 0u64;
    for (i, run) in runs.iter().enumerate() {
        if run.page_count == 0 {
            return Err(PageMapViolation::EmptyRun);
        }
        if i > 0 && run.start_page <= next_free_page {
            return Err(PageMapViolation::NotAscending);
        }
        let (start, end) = run
            .byte_range(byte_len)
            .ok_or(PageMapViolation::RunBeyondMemory)?;
        // The clamped end must be the real end: only the final page may be
        // partial, so a run may not claim pages past the memory.
        let end_page = run.start_page + run.page_count;
        if end_page.saturating_sub(1).saturating_mul(PAGE_SIZE) >= byte_len {
            return Err(PageMapViolation::RunBeyondMemory);
        }
        next_free_page = end_page;
        total += end - start;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_sparse_memory() {
        let mut mem = vec![0u8; 10 * PAGE_SIZE as usize];
        mem[0] = 1;
        mem[PAGE_SIZE as usize + 5] = 1;
        mem[4 * PAGE_SIZE as usize + 65535] = 9;
        let runs = present_runs(&mem);
        assert_eq!(
            runs,
            vec![
                PageRun {
                    start_page: 0,
                    page_count: 2
                },
                PageRun {
                    start_page: 4,
                    page_count: 1
                }
            ]
        );
        assert_eq!(validate(&runs, mem.len() as u64), Ok(3 * PAGE_SIZE));
    }

    #[test]
    fn partial_last_page_is_clamped() {
        let mem = vec![1u8; PAGE_SIZE as usize + 10];
        let runs = present_runs(&mem);
        assert_eq!(
            runs,
            vec![PageRun {
                start_page: 0,
                page_count: 2
            }]
        );
        assert_eq!(validate(&runs, mem.len() as u64), Ok(PAGE_SIZE + 10));
    }

    #[test]
    fn invalid_maps_are_refused() {
        let r = |s, c| PageRun {
            start_page: s,
            page_count: c,
        };
        assert_eq!(
            validate(&[r(0, 0)], PAGE_SIZE),
            Err(PageMapViolation::EmptyRun)
        );
        assert_eq!(
            validate(&[r(0, 2)], PAGE_SIZE),
            Err(PageMapViolation::RunBeyondMemory)
        );
        assert_eq!(
            validate(&[r(1, 1)], PAGE_SIZE),
            Err(PageMapViolation::RunBeyondMemory)
        );
        assert_eq!(
            validate(&[r(u64::MAX, 1)], u64::MAX),
            Err(PageMapViolation::RunBeyondMemory)
        );
        assert_eq!(
            validate(&[r(0, 1), r(1, 1)], 4 * PAGE_SIZE),
            Err(PageMapViolation::NotAscending)
        );
        assert_eq!(
            validate(&[r(2, 1), r(0, 1)], 4 * PAGE_SIZE),
            Err(PageMapViolation::NotAscending)
        );
    }
}
