//! Host-side work partitions, computed once per batch step and reused by every layer.

use pal_core::{AttentionOptions, PageTable, PalError, Result};

/// Split-KV partition of a decode step: each sequence's visible tokens are cut into chunks, and
/// the KV heads into `head_splits` equal spans; a work item is one (chunk, head span) pair and
/// yields partial `(o, lse)` states for every query head of its span, merged afterwards. Chunks and
/// head spans are only cut where the batch alone would leave threads idle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodePlan {
    seq_lens: Vec<usize>,
    window_left: Option<u32>,
    chunk_indptr: Vec<usize>,
    /// `(sequence, start, end)` of every chunk, in sequence order.
    chunks: Vec<(usize, usize, usize)>,
    head_splits: usize,
}

/// Tokens per chunk never drop below this: a chunk must amortise its merge.
const MIN_CHUNK_TOKENS: usize = 256;
/// Work items per thread the planner aims for, so that uneven sequences still balance.
const ITEMS_PER_THREAD: usize = 4;

impl DecodePlan {
    /// Plan for `threads` workers (use `rayon::current_num_threads()` on the CPU).
    pub fn new(page_table: &PageTable, num_kv_heads: usize, opts: &AttentionOptions, threads: usize) -> Self {
        let visible: usize = page_table.seq_lens().iter().map(|&l| visible_range(l, opts).len()).sum();
        let target_items = threads.max(1) * ITEMS_PER_THREAD;
        let chunk = visible.div_ceil(target_items).max(MIN_CHUNK_TOKENS);
        let mut plan = Self::with_partition(page_table, opts, chunk, 1);
        // Too few chunks (short sequences): also split the KV heads, into a divisor of their count.
        let want = target_items.div_ceil(plan.num_chunks());
        plan.head_splits =
            (1..=num_kv_heads.max(1)).filter(|s| num_kv_heads.is_multiple_of(*s) && *s <= want).max().unwrap_or(1);
        plan
    }

    /// Plan with a fixed chunk length (tokens; `usize::MAX` disables splitting) and KV heads cut
    /// into `head_splits` spans (must divide the number of KV heads at run time).
    pub fn with_partition(
        page_table: &PageTable,
        opts: &AttentionOptions,
        chunk_tokens: usize,
        head_splits: usize,
    ) -> Self {
        let chunk_tokens = chunk_tokens.max(1);
        let mut chunk_indptr = vec![0];
        let mut chunks = Vec::new();
        for &len in page_table.seq_lens() {
            let r = visible_range(len, opts);
            let mut s = r.start;
            loop {
                let e = s.saturating_add(chunk_tokens).min(r.end);
                chunks.push((chunk_indptr.len() - 1, s, e));
                s = e;
                if s >= r.end {
                    break;
                }
            }
            chunk_indptr.push(chunks.len());
        }
        DecodePlan {
            seq_lens: page_table.seq_lens().to_vec(),
            window_left: opts.window_left,
            chunk_indptr,
            chunks,
            head_splits: head_splits.max(1),
        }
    }

    /// Plan with a fixed chunk length and no head split.
    pub fn with_chunk_tokens(page_table: &PageTable, opts: &AttentionOptions, chunk_tokens: usize) -> Self {
        Self::with_partition(page_table, opts, chunk_tokens, 1)
    }

    /// Spans the KV heads are cut into.
    pub fn head_splits(&self) -> usize {
        self.head_splits
    }

    /// Every chunk as `(sequence, start, end)`.
    pub fn chunks(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.chunks.iter().copied()
    }
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }
    /// Chunk index range of sequence `b`.
    pub fn seq_chunks(&self, b: usize) -> std::ops::Range<usize> {
        self.chunk_indptr[b]..self.chunk_indptr[b + 1]
    }
    /// `(sequence, start, end)` of chunk `i`.
    pub(crate) fn chunk(&self, i: usize) -> (usize, usize, usize) {
        self.chunks[i]
    }
    /// Whether any sequence is split across several chunks.
    pub fn is_split(&self) -> bool {
        self.chunks.len() > self.seq_lens.len()
    }

    /// The plan must come from the same page table lengths and window as the run.
    pub(crate) fn check(&self, page_table: &PageTable, opts: &AttentionOptions, num_kv_heads: usize) -> Result<()> {
        if self.seq_lens != page_table.seq_lens() || self.window_left != opts.window_left {
            return Err(PalError::invalid(
                "plan",
                "was built for other sequence lengths or another window; plan again for this step",
            ));
        }
        if !num_kv_heads.is_multiple_of(self.head_splits) {
            return Err(PalError::invalid(
                "plan",
                format!("{} head spans do not divide {num_kv_heads} KV heads", self.head_splits),
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
