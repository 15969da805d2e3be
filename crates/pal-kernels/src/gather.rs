//! The baseline PAL must beat: gather each sequence's pages into contiguous K/V, then run dense
//! attention over the copy. "Dense" here is the optimized CPU kernel reading one contiguous block
//! per sequence, so the difference between `gather` and `cpu` is exactly the cost of the copy.

use crate::{cpu, validate, DecodeArgs, DecodePlan, PrefillArgs, PrefillPlan};
use pal_core::alloc::large_vec;
use pal_core::{Element, KvLayout, PageTable, PagedKv, Result};
use rayon::prelude::*;

/// Contiguous K/V of a batch: sequence `b` occupies block `b` of a pool whose block size is the
/// longest sequence, so the dense kernels can read it through a trivial page table.
pub struct Contiguous<KV> {
    pub k: Vec<KV>,
    pub v: Vec<KV>,
    pub layout: KvLayout,
    pub page_table: PageTable,
}

impl<KV: Element> Contiguous<KV> {
    /// Allocate (without gathering) room for the sequences of `table`.
    pub fn for_table(table: &PageTable, num_kv_heads: usize, head_dim: usize) -> Result<Self> {
        let batch = table.batch();
        let max_len = table.seq_lens().iter().copied().max().unwrap_or(0).max(1);
        let layout = KvLayout::new(batch, max_len, num_kv_heads, head_dim)?;
        let lists: Vec<[u32; 1]> = (0..batch as u32).map(|b| [b]).collect();
        let page_table = PageTable::from_lists(&lists, table.seq_lens(), max_len)?;
        Ok(Contiguous { k: large_vec(layout.elems()), v: large_vec(layout.elems()), layout, page_table })
    }

    /// Copy every token of every sequence of `table` from the paged pool (rayon over sequences).
    pub fn gather_from(&mut self, kv: &PagedKv<'_, KV>, table: &PageTable) {
        let stride = kv.layout.token_stride();
        let bs = kv.layout.block_size;
        let per_seq = self.layout.block_size * stride;
        for (dst, src) in [(&mut self.k, kv.k), (&mut self.v, kv.v)] {
            dst.par_chunks_mut(per_seq).enumerate().for_each(|(b, dst)| {
                let len = table.seq_len(b);
                for (p, &page) in table.pages(b).iter().enumerate() {
                    let n = bs.min(len - p * bs);
                    let s = page as usize * bs * stride;
                    dst[p * bs * stride..(p * bs + n) * stride].copy_from_slice(&src[s..s + n * stride]);
                }
            });
        }
    }

    pub fn view(&self) -> PagedKv<'_, KV> {
        PagedKv { k: &self.k, v: &self.v, layout: self.layout }
    }
}

/// Gather, then dense decode. Allocates the contiguous copy on every call, like the naive path.
pub fn paged_decode<Q: Element, KV: Element>(a: &DecodeArgs<'_, Q, KV>, out: &mut [Q]) -> Result<()> {
    let sh = validate::decode(a, out.len())?;
    let mut c = Contiguous::for_table(a.page_table, sh.heads.num_kv_heads, sh.heads.head_dim)?;
    c.gather_from(&a.kv, a.page_table);
    dense_decode(a, &c, out)
}

/// Dense decode over an already gathered copy (the "dense" row of the benchmarks).
pub fn dense_decode<Q: Element, KV: Element>(
    a: &DecodeArgs<'_, Q, KV>,
    c: &Contiguous<KV>,
    out: &mut [Q],
) -> Result<()> {
    let dense = DecodeArgs { kv: c.view(), page_table: &c.page_table, ..*a };
    let plan = DecodePlan::new(&c.page_table, c.layout.num_kv_heads, &a.opts, rayon::current_num_threads());
    cpu::paged_decode(&dense, &plan, out)
}

/// Gather, then dense prefill.
pub fn paged_prefill<Q: Element, KV: Element>(a: &PrefillArgs<'_, Q, KV>, out: &mut [Q]) -> Result<()> {
    let sh = validate::prefill(a, out.len())?;
    let mut c = Contiguous::for_table(a.page_table, sh.heads.num_kv_heads, sh.heads.head_dim)?;
    c.gather_from(&a.kv, a.page_table);
    dense_prefill(a, &c, out)
}

/// Dense prefill over an already gathered copy.
pub fn dense_prefill<Q: Element, KV: Element>(
    a: &PrefillArgs<'_, Q, KV>,
    c: &Contiguous<KV>,
    out: &mut [Q],
) -> Result<()> {
    let dense = PrefillArgs { kv: c.view(), page_table: &c.page_table, ..*a };
    let plan = PrefillPlan::new(a.qo_indptr, &c.page_table, a.num_qo_heads / c.layout.num_kv_heads);
    cpu::paged_prefill(&dense, &plan, out)
}
