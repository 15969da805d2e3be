use crate::Rope;
use pal_core::{AttentionOptions, PageTable, PagedKv};

/// Inputs of `paged_decode`: one query token per sequence of the page table.
#[derive(Clone, Copy, Debug)]
pub struct DecodeArgs<'a, Q, KV> {
    /// `[batch, num_qo_heads, head_dim]`.
    pub q: &'a [Q],
    pub num_qo_heads: usize,
    pub kv: PagedKv<'a, KV>,
    /// Sequence `b` attends to every token it holds (its query is its last position).
    pub page_table: &'a PageTable,
    pub opts: AttentionOptions,
}

/// K/V of the new tokens kept outside the pool, `[total_new_tokens, num_kv_heads, head_dim]` each,
/// rows ordered like `qo_indptr`.
#[derive(Clone, Copy, Debug)]
pub struct RaggedKv<'a, KV> {
    pub k: &'a [KV],
    pub v: &'a [KV],
}

/// Inputs of `paged_prefill` (also called append attention, or chunked prefill with history).
///
/// Sequence `b` has `qo_indptr[b+1] - qo_indptr[b]` new query tokens. Without `new_kv`, the page
/// table already holds their K/V (written by `append_kv`) as the last tokens of each sequence;
/// with `new_kv`, the page table holds only the history and the new K/V come from `new_kv`.
/// New token `i` of a sequence with history `h` sits at position `h + i`.
#[derive(Clone, Copy, Debug)]
pub struct PrefillArgs<'a, Q, KV> {
    /// `[total_new_tokens, num_qo_heads, head_dim]`.
    pub q: &'a [Q],
    pub qo_indptr: &'a [u32],
    pub num_qo_heads: usize,
    pub kv: PagedKv<'a, KV>,
    pub page_table: &'a PageTable,
    pub new_kv: Option<RaggedKv<'a, KV>>,
    pub opts: AttentionOptions,
}

/// Inputs of `append_kv`: new tokens (any mix of sequences) with their positions and slots.
#[derive(Debug)]
pub struct AppendArgs<'a, Q> {
    /// `[tokens, num_qo_heads, head_dim]`, rotated in place when `rope` is set.
    pub q: &'a mut [Q],
    pub num_qo_heads: usize,
    /// `[tokens, num_kv_heads, head_dim]`; k is rotated on its way into the pool.
    pub k: &'a [Q],
    pub v: &'a [Q],
    /// Absolute position of each token (drives RoPE).
    pub positions: &'a [u32],
    /// Physical slot (`block * block_size + offset`) of each token; `None` = padding, skipped.
    pub slots: &'a [Option<u32>],
    pub rope: Option<&'a Rope>,
}
