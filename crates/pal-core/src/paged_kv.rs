use crate::{check_len, PalError, Result};

/// Shape of a KV pool: K and V are each `[num_blocks, block_size, num_kv_heads, head_dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl KvLayout {
    pub fn new(num_blocks: usize, block_size: usize, num_kv_heads: usize, head_dim: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(PalError::invalid("block_size", "must be at least 1"));
        }
        if num_kv_heads == 0 {
            return Err(PalError::invalid("num_kv_heads", "must be at least 1"));
        }
        if head_dim == 0 {
            return Err(PalError::invalid("head_dim", "must be at least 1"));
        }
        Ok(KvLayout { num_blocks, block_size, num_kv_heads, head_dim })
    }
    /// Elements of one of K or V.
    pub fn elems(&self) -> usize {
        self.num_blocks * self.block_size * self.num_kv_heads * self.head_dim
    }
    /// Token slots in the pool.
    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }
    /// Elements between consecutive tokens (all heads of one token).
    pub fn token_stride(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
    /// Offset of the row of `head` at physical `slot`.
    #[inline]
    pub fn row_offset(&self, slot: usize, head: usize) -> usize {
        (slot * self.num_kv_heads + head) * self.head_dim
    }
    fn shape(&self) -> String {
        format!(
            "[num_blocks={}, block_size={}, num_kv_heads={}, head_dim={}]",
            self.num_blocks, self.block_size, self.num_kv_heads, self.head_dim
        )
    }
}

/// A read-only view of a KV pool (one layer).
#[derive(Clone, Copy, Debug)]
pub struct PagedKv<'a, T> {
    pub k: &'a [T],
    pub v: &'a [T],
    pub layout: KvLayout,
}

impl<'a, T> PagedKv<'a, T> {
    pub fn new(k: &'a [T], v: &'a [T], layout: KvLayout) -> Result<Self> {
        check_len("k_cache", k.len(), layout.elems(), || layout.shape())?;
        check_len("v_cache", v.len(), layout.elems(), || layout.shape())?;
        Ok(PagedKv { k, v, layout })
    }
}

/// A writable view of a KV pool (one layer), for appends.
#[derive(Debug)]
pub struct PagedKvMut<'a, T> {
    pub k: &'a mut [T],
    pub v: &'a mut [T],
    pub layout: KvLayout,
}

impl<'a, T> PagedKvMut<'a, T> {
    pub fn new(k: &'a mut [T], v: &'a mut [T], layout: KvLayout) -> Result<Self> {
        check_len("k_cache", k.len(), layout.elems(), || layout.shape())?;
        check_len("v_cache", v.len(), layout.elems(), || layout.shape())?;
        Ok(PagedKvMut { k, v, layout })
    }
    pub fn as_ref(&self) -> PagedKv<'_, T> {
        PagedKv { k: self.k, v: self.v, layout: self.layout }
    }
}
