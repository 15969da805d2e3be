//! The paged KV pool of a model: one K and one V pool per layer, all with the same block layout.

use crate::{ModelError, Result};
use pal_core::{Element, KvLayout, PagedKv, PagedKvMut};

/// K/V pools `[num_blocks, block_size, num_kv_heads, head_dim]` for every layer.
/// Blocks are handed out by a `pal_kvcache::BlockManager`; this type only holds the numbers.
pub struct KvCache<KV> {
    layout: KvLayout,
    k: Vec<Vec<KV>>,
    v: Vec<Vec<KV>>,
}

impl<KV: Element> KvCache<KV> {
    pub fn new(num_layers: usize, layout: KvLayout) -> Self {
        let alloc = || (0..num_layers).map(|_| vec![KV::default(); layout.elems()]).collect();
        KvCache { layout, k: alloc(), v: alloc() }
    }
    pub fn layout(&self) -> KvLayout {
        self.layout
    }
    pub fn num_layers(&self) -> usize {
        self.k.len()
    }
    pub fn layer(&self, l: usize) -> PagedKv<'_, KV> {
        PagedKv { k: &self.k[l], v: &self.v[l], layout: self.layout }
    }
    pub fn layer_mut(&mut self, l: usize) -> PagedKvMut<'_, KV> {
        PagedKvMut { k: &mut self.k[l], v: &mut self.v[l], layout: self.layout }
    }
    /// Copy the first `num_tokens` slots of block `src` into block `dst` in every layer
    /// (copy-on-write of a shared partial block).
    pub fn copy_block(&mut self, src: usize, dst: usize, num_tokens: usize) -> Result<()> {
        let l = self.layout;
        if src >= l.num_blocks || dst >= l.num_blocks || num_tokens > l.block_size {
            return Err(ModelError::invalid(
                "copy",
                format!(
                    "blocks {src}->{dst} ({num_tokens} tokens) outside a pool of {} x {}",
                    l.num_blocks, l.block_size
                ),
            ));
        }
        let n = num_tokens * l.token_stride();
        let (s, d) = (l.row_offset(src * l.block_size, 0), l.row_offset(dst * l.block_size, 0));
        for pool in self.k.iter_mut().chain(self.v.iter_mut()) {
            pool.copy_within(s..s + n, d);
        }
        Ok(())
    }
}
