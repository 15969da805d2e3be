//! Host-side work partitions, computed once per batch step and reused by every layer.

use pal_core::{AttentionOptions, PageTable, PalError, Result};

/// Split-KV partition of a decode step: each sequence's visible tokens are cut into chunks; a work
/// item is one (chunk, KV head) pair and yields a partial `(o, lse)` state for the whole GQA group,
/// merged afterwards. Chunks are only cut where the batch alone would leave threads idle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodePlan {
    seq_lens: Vec<usize>,
    window_left: Option<u32>,
    chunk_indptr: Vec<usize>,
    chunks: Vec<(usize, usize)>,
}

/// Tokens per chunk never drop below this: a chunk must amortise its merge.
const MIN_CHUNK_TOKENS: usize = 256;
/// Work items per thread the planner aims for, so that uneven sequences still balance.
const ITEMS_PER_THREAD: usize = 4;

impl DecodePlan {
    /// Plan for `threads` workers (use `rayon::current_num_threads()` on the CPU).
    pub fn new(page_table: &PageTable, num_kv_heads: usize, opts: &AttentionOptions, threads: usize) -> Self {
        let visible: usize = page_table.seq_lens().iter().map(|&l| visible_range(l, opts).len()).sum();
        let target_items = (threads.max(1) * ITEMS_PER_THREAD).div_ceil(num_kv_heads.max(1));
        let chunk = visible.div_ceil(target_items.max(1)).max(MIN_CHUNK_TOKENS);
        Self::with_chunk_tokens(page_table, opts, chunk)
    }

    /// Plan with a fixed chunk length (tokens); `usize::MAX` disables splitting.
    pub fn with_chunk_tokens(page_table: &PageTable, opts: &AttentionOptions, chunk_tokens: usize) -> Self {
        let chunk_tokens = chunk_tokens.max(1);
        let mut chunk_indptr = vec![0];
        let mut chunks = Vec::new();
        for &len in page_table.seq_lens() {
            let r = visible_range(len, opts);
            let mut s = r.start;
            loop {
                let e = s.saturating_add(chunk_tokens).min(r.end);
                chunks.push((s, e));
                s = e;
                if s >= r.end {
                    break;
                }
            }
            chunk_indptr.push(chunks.len());
        }
        DecodePlan { seq_lens: page_table.seq_lens().to_vec(), window_left: opts.window_left, chunk_indptr, chunks }
    }

    /// Every chunk as `(sequence, start, end)`.
    pub fn chunks(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.seq_lens.len())
            .flat_map(move |b| self.chunks[self.chunk_indptr[b]..self.chunk_indptr[b + 1]].iter().map(move |&(s, e)| (b, s, e)))
    }
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }
    /// Chunk index range of sequence `b`.
    pub fn seq_chunks(&self, b: usize) -> std::ops::Range<usize> {
        self.chunk_indptr[b]..self.chunk_indptr[b + 1]
    }
    pub(crate) fn chunk(&self, i: usize) -> (usize, usize) {
        self.chunks[i]
    }
    /// Whether any sequence is split across several chunks.
    pub fn is_split(&self) -> bool {
        self.chunks.len() > self.seq_lens.len()
    }

    /// The plan must come from the same page table lengths and window as the run.
    pub(crate) fn check(&self, page_table: &PageTable, opts: &AttentionOptions) -> Result<()> {
        if self.seq_lens != page_table.seq_lens() || self.window_left != opts.window_left {
            return Err(PalError::invalid(
                "plan",
                "was built for other sequence lengths or another window; plan again for this step",
            ));
        }
        Ok(())
    }
}

/// Tokens a decode query (at the last position) may see.
pub(crate) fn visible_range(len: usize, opts: &AttentionOptions) -> std::ops::Range<usize> {
    if len == 0 {
        return 0..0;
    }
    opts.first_visible(len - 1)..len
}

/// Partition of a prefill step: each work item is a tile of consecutive query tokens of one
/// sequence, processed for one KV head and its whole GQA group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefillPlan {
    qo_indptr: Vec<u32>,
    seq_lens: Vec<usize>,
    /// `(sequence, first query, end query)`, query indices local to the sequence.
    tiles: Vec<(usize, usize, usize)>,
}

/// Query rows (tokens x group heads) per tile: enough to reuse each K/V row, small enough for L1/L2.
const PREFILL_TILE_ROWS: usize = 64;

impl PrefillPlan {
    pub fn new(qo_indptr: &[u32], page_table: &PageTable, group_size: usize) -> Self {
        let tile = (PREFILL_TILE_ROWS / group_size.max(1)).max(1);
        let mut tiles = Vec::new();
        for b in 0..qo_indptr.len().saturating_sub(1) {
            let n = qo_indptr[b + 1].saturating_sub(qo_indptr[b]) as usize;
            let mut s = 0;
            while s < n {
                let e = (s + tile).min(n);
                tiles.push((b, s, e));
                s = e;
            }
        }
        PrefillPlan { qo_indptr: qo_indptr.to_vec(), seq_lens: page_table.seq_lens().to_vec(), tiles }
    }
    pub fn tiles(&self) -> &[(usize, usize, usize)] {
        &self.tiles
    }
    pub(crate) fn check(&self, qo_indptr: &[u32], page_table: &PageTable) -> Result<()> {
        if self.qo_indptr != qo_indptr || self.seq_lens != page_table.seq_lens() {
            return Err(PalError::invalid("plan", "was built for another batch; plan again for this step"));
        }
        Ok(())
    }
}
