use crate::{PalError, Result};

/// The page table of one batch step in CSR form (FlashInfer's layout).
///
/// Sequence `b` owns the physical blocks `indices[indptr[b]..indptr[b+1]]`, in order; its length is
/// `(pages - 1) * block_size + last_page_len[b]`, or 0 when it owns no page (then `last_page_len`
/// must be 0). Construction checks the structure; [`PageTable::check_pool`] checks block ids against
/// a pool. Entries of a padded table that a sequence does not need are dropped by
/// [`PageTable::from_lists`] and never read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageTable {
    indptr: Vec<u32>,
    indices: Vec<u32>,
    last_page_len: Vec<u32>,
    block_size: usize,
    seq_lens: Vec<usize>,
}

impl PageTable {
    pub fn new(indptr: Vec<u32>, indices: Vec<u32>, last_page_len: Vec<u32>, block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(PalError::invalid("block_size", "must be at least 1"));
        }
        if indptr.len() < 2 {
            return Err(PalError::EmptyBatch {
                arg: "indptr",
                reason: format!("needs batch+1 >= 2 entries, got {}", indptr.len()),
            });
        }
        let batch = indptr.len() - 1;
        if last_page_len.len() != batch {
            return Err(PalError::ShapeMismatch {
                arg: "last_page_len",
                expected: batch,
                got: last_page_len.len(),
                shape: "[batch]".into(),
            });
        }
        if indptr[0] != 0 {
            return Err(PalError::invalid("indptr", format!("indptr[0] = {} must be 0", indptr[0])));
        }
        if indptr[batch] as usize != indices.len() {
            return Err(PalError::invalid(
                "indptr",
                format!("indptr[{batch}] = {} but indices has {} entries", indptr[batch], indices.len()),
            ));
        }
        let mut seq_lens = Vec::with_capacity(batch);
        for b in 0..batch {
            if indptr[b + 1] < indptr[b] {
                return Err(PalError::invalid(
                    "indptr",
                    format!("decreases at {b}: {} > {}", indptr[b], indptr[b + 1]),
                ));
            }
            let pages = (indptr[b + 1] - indptr[b]) as usize;
            let last = last_page_len[b] as usize;
            if pages == 0 {
                if last != 0 {
                    return Err(PalError::invalid(
                        "last_page_len",
                        format!("sequence {b} owns no page but last_page_len is {last} (must be 0)"),
                    ));
                }
                seq_lens.push(0);
            } else {
                if last == 0 || last > block_size {
                    return Err(PalError::invalid(
                        "last_page_len",
                        format!("last_page_len[{b}] = {last} must be in 1..={block_size}"),
                    ));
                }
                seq_lens.push((pages - 1) * block_size + last);
            }
        }
        Ok(PageTable { indptr, indices, last_page_len, block_size, seq_lens })
    }

    /// Build from one block list per sequence and the sequence lengths. Each list must hold at least
    /// `ceil(len / block_size)` blocks; further entries (padding, possibly garbage) are ignored.
    pub fn from_lists<L: AsRef<[u32]>>(lists: &[L], seq_lens: &[usize], block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(PalError::invalid("block_size", "must be at least 1"));
        }
        if lists.len() != seq_lens.len() {
            return Err(PalError::ShapeMismatch {
                arg: "seq_lens",
                expected: lists.len(),
                got: seq_lens.len(),
                shape: "[batch]".into(),
            });
        }
        let mut indptr = vec![0u32];
        let mut indices = Vec::new();
        let mut last = Vec::with_capacity(seq_lens.len());
        for (b, (list, &len)) in lists.iter().zip(seq_lens).enumerate() {
            let list = list.as_ref();
            let pages = len.div_ceil(block_size);
            if pages > list.len() {
                return Err(PalError::invalid(
                    "block_tables",
                    format!("sequence {b} of length {len} needs {pages} pages, its table has {}", list.len()),
                ));
            }
            indices.extend_from_slice(&list[..pages]);
            indptr.push(
                u32::try_from(indices.len()).map_err(|_| PalError::invalid("block_tables", "more than 2^32 pages"))?,
            );
            last.push(if pages == 0 { 0 } else { (len - (pages - 1) * block_size) as u32 });
        }
        Self::new(indptr, indices, last, block_size)
    }

    /// Build from a padded `[batch, max_pages]` block table (vLLM's layout).
    pub fn from_padded(block_tables: &[u32], max_pages: usize, seq_lens: &[usize], block_size: usize) -> Result<Self> {
        if max_pages == 0 || block_tables.len() != seq_lens.len() * max_pages {
            return Err(PalError::ShapeMismatch {
                arg: "block_tables",
                expected: seq_lens.len() * max_pages,
                got: block_tables.len(),
                shape: format!("[batch={}, max_pages={max_pages}]", seq_lens.len()),
            });
        }
        let lists: Vec<&[u32]> = block_tables.chunks(max_pages).collect();
        Self::from_lists(&lists, seq_lens, block_size)
    }

    /// Fail with [`PalError::OutOfPool`] if a block id is not below `num_blocks`.
    pub fn check_pool(&self, num_blocks: usize) -> Result<()> {
        for (i, &p) in self.indices.iter().enumerate() {
            if p as usize >= num_blocks {
                return Err(PalError::OutOfPool {
                    arg: "indices",
                    index: i,
                    value: p as u64,
                    limit: num_blocks as u64,
                });
            }
        }
        Ok(())
    }

    pub fn batch(&self) -> usize {
        self.seq_lens.len()
    }
    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn indptr(&self) -> &[u32] {
        &self.indptr
    }
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }
    pub fn last_page_len(&self) -> &[u32] {
        &self.last_page_len
    }
    /// Tokens of every sequence.
    pub fn seq_lens(&self) -> &[usize] {
        &self.seq_lens
    }
    pub fn seq_len(&self, b: usize) -> usize {
        self.seq_lens[b]
    }
    /// Physical blocks of sequence `b`.
    pub fn pages(&self, b: usize) -> &[u32] {
        &self.indices[self.indptr[b] as usize..self.indptr[b + 1] as usize]
    }
    pub fn total_tokens(&self) -> usize {
        self.seq_lens.iter().sum()
    }
    /// Physical slot (`block * block_size + offset`) of token `pos` of sequence `b`.
    #[inline]
    pub fn slot(&self, b: usize, pos: usize) -> usize {
        let page = self.indices[self.indptr[b] as usize + pos / self.block_size] as usize;
        page * self.block_size + pos % self.block_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_last_page_len() {
        let t = PageTable::new(vec![0, 1, 3, 3], vec![4, 2, 7], vec![3, 16, 0], 16).unwrap();
        assert_eq!(t.seq_lens(), &[3, 32, 0]);
        assert_eq!(t.pages(1), &[2, 7]);
        assert_eq!(t.slot(1, 17), 7 * 16 + 1);
    }

    #[test]
    fn bad_tables_are_typed_errors() {
        let e = PageTable::new(vec![0, 1], vec![0], vec![0], 16).unwrap_err();
        assert_eq!(e.arg(), Some("last_page_len"));
        let e = PageTable::new(vec![0, 1], vec![0], vec![17], 16).unwrap_err();
        assert_eq!(e.arg(), Some("last_page_len"));
        let e = PageTable::new(vec![0], vec![], vec![], 16).unwrap_err();
        assert_eq!(e.arg(), Some("indptr"));
        let e = PageTable::new(vec![0, 2], vec![0], vec![1], 16).unwrap_err();
        assert_eq!(e.arg(), Some("indptr"));
        let e = PageTable::new(vec![0, 2, 1], vec![0, 1], vec![1, 1], 16).unwrap_err();
        assert_eq!(e.arg(), Some("indptr"));
        let e = PageTable::new(vec![0, 1], vec![0], vec![1], 0).unwrap_err();
        assert_eq!(e.arg(), Some("block_size"));
        let t = PageTable::new(vec![0, 1], vec![5], vec![1], 4).unwrap();
        assert!(matches!(t.check_pool(5), Err(PalError::OutOfPool { arg: "indices", .. })));
        assert!(t.check_pool(6).is_ok());
    }

    #[test]
    fn padded_tables_drop_unused_entries() {
        // Seed A1: entries 99 and 88 are beyond each sequence's length and never kept.
        let t = PageTable::from_padded(&[0, 99, 1, 88], 2, &[1, 1], 16).unwrap();
        assert_eq!(t.indices(), &[0, 1]);
        assert!(t.check_pool(2).is_ok());
        let e = PageTable::from_padded(&[0, 1], 1, &[17], 16).unwrap_err();
        assert_eq!(e.arg(), Some("block_tables"));
    }
}
