use crate::prefix::{BlockKey, ROOT_HASH};
use crate::KvCacheError;
use std::collections::{BTreeMap, HashMap};

pub type BlockId = u32;
pub type SeqId = u64;

/// What [`BlockManager::add_sequence`] gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceAdmission {
    pub seq: SeqId,
    /// Leading prompt tokens whose K/V is already in cached blocks: the engine skips computing them.
    /// Always below the prompt length, so the last prompt token is always computed.
    pub cached_tokens: usize,
}

/// Copy the first `num_tokens` slots of block `src` into block `dst` (all layers) before writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOp {
    pub src: BlockId,
    pub dst: BlockId,
    pub num_tokens: usize,
}

/// Result of [`BlockManager::append_tokens`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// Physical slot (`block * block_size + offset`) of each appended token.
    pub slots: Vec<usize>,
    /// Copy-on-write the caller must perform before writing the new tokens.
    pub copy: Option<CopyOp>,
}

/// Pool occupancy and prefix-cache effectiveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    pub num_blocks: usize,
    /// On the free list (no content worth keeping).
    pub free: usize,
    /// Held by at least one sequence.
    pub used: usize,
    /// Unreferenced but kept for prefix reuse (evictable, in LRU order).
    pub cached: usize,
    /// Prompt blocks found in the prefix cache / prompt blocks looked up.
    pub hit_blocks: u64,
    pub queried_blocks: u64,
}

impl CacheStats {
    pub fn hit_rate(&self) -> f64 {
        if self.queried_blocks == 0 {
            0.0
        } else {
            self.hit_blocks as f64 / self.queried_blocks as f64
        }
    }
}

#[derive(Clone, Debug)]
struct Sequence {
    blocks: Vec<BlockId>,
    tokens: Vec<u32>,
    /// Chained hashes of the leading full blocks that are published in the prefix cache.
    block_hashes: Vec<u64>,
}

/// The block pool of one model and the block table of every live sequence.
#[derive(Debug)]
pub struct BlockManager {
    block_size: usize,
    prefix_caching: bool,
    ref_count: Vec<u32>,
    /// Stack of free blocks; the lowest ids are handed out first.
    free: Vec<BlockId>,
    /// Prefix-cache key of each block that is published.
    key: Vec<Option<BlockKey>>,
    by_hash: HashMap<u64, BlockId>,
    /// Unreferenced published blocks, oldest first (tick -> block), and each block's tick.
    lru: BTreeMap<u64, BlockId>,
    lru_tick: Vec<Option<u64>>,
    tick: u64,
    seqs: HashMap<SeqId, Sequence>,
    next_seq: SeqId,
    hit_blocks: u64,
    queried_blocks: u64,
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Result<Self, KvCacheError> {
        if block_size == 0 {
            return Err(KvCacheError::InvalidArgument { arg: "block_size", reason: "must be at least 1".into() });
        }
        if num_blocks > u32::MAX as usize {
            return Err(KvCacheError::InvalidArgument { arg: "num_blocks", reason: "must fit in u32".into() });
        }
        Ok(BlockManager {
            block_size,
            prefix_caching,
            ref_count: vec![0; num_blocks],
            free: (0..num_blocks as u32).rev().collect(),
            key: vec![None; num_blocks],
            by_hash: HashMap::new(),
            lru: BTreeMap::new(),
            lru_tick: vec![None; num_blocks],
            tick: 0,
            seqs: HashMap::new(),
            next_seq: 0,
            hit_blocks: 0,
            queried_blocks: 0,
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn num_blocks(&self) -> usize {
        self.ref_count.len()
    }
    /// Blocks that can be handed out now (free plus evictable).
    pub fn available(&self) -> usize {
        self.free.len() + self.lru.len()
    }
    /// Whether a new sequence of `num_tokens` fits without prefix hits.
    pub fn can_allocate(&self, num_tokens: usize) -> bool {
        num_tokens.div_ceil(self.block_size) <= self.available()
    }

    pub fn stats(&self) -> CacheStats {
        let used = self.ref_count.iter().filter(|&&r| r > 0).count();
        CacheStats {
            num_blocks: self.num_blocks(),
            free: self.free.len(),
            used,
            cached: self.lru.len(),
            hit_blocks: self.hit_blocks,
            queried_blocks: self.queried_blocks,
        }
    }

    fn seq(&self, seq: SeqId) -> Result<&Sequence, KvCacheError> {
        self.seqs.get(&seq).ok_or(KvCacheError::UnknownSequence(seq))
    }
    /// Physical blocks of a sequence, in order.
    pub fn block_table(&self, seq: SeqId) -> Result<&[BlockId], KvCacheError> {
        Ok(&self.seq(seq)?.blocks)
    }
    pub fn tokens(&self, seq: SeqId) -> Result<&[u32], KvCacheError> {
        Ok(&self.seq(seq)?.tokens)
    }
    pub fn seq_len(&self, seq: SeqId) -> Result<usize, KvCacheError> {
        Ok(self.seq(seq)?.tokens.len())
    }
    /// Physical slot of token `pos` of `seq`.
    pub fn slot(&self, seq: SeqId, pos: usize) -> Result<usize, KvCacheError> {
        let s = self.seq(seq)?;
        if pos >= s.tokens.len() {
            return Err(KvCacheError::InvalidArgument {
                arg: "pos",
                reason: format!("{pos} is beyond sequence length {}", s.tokens.len()),
            });
        }
        Ok(s.blocks[pos / self.block_size] as usize * self.block_size + pos % self.block_size)
    }
    pub fn sequences(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.keys().copied()
    }
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.ref_count[block as usize]
    }

    /// Take a block for writing: from the free list, else evict the least recently used cached one.
    fn take_block(&mut self) -> BlockId {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.lru.pop_first().expect("caller checked availability");
                self.lru_tick[b as usize] = None;
                let key = self.key[b as usize].take().expect("LRU blocks are published");
                self.by_hash.remove(&key.hash());
                b
            }
        };
        self.ref_count[b as usize] = 1;
        b
    }

    fn retain(&mut self, b: BlockId) {
        if self.ref_count[b as usize] == 0 {
            let tick = self.lru_tick[b as usize].take().expect("unreferenced published block is in the LRU");
            self.lru.remove(&tick);
        }
        self.ref_count[b as usize] += 1;
    }

    fn release(&mut self, b: BlockId) {
        let rc = &mut self.ref_count[b as usize];
        *rc -= 1;
        if *rc == 0 {
            if self.key[b as usize].is_some() {
                self.tick += 1;
                self.lru.insert(self.tick, b);
                self.lru_tick[b as usize] = Some(self.tick);
            } else {
                self.free.push(b);
            }
        }
    }

    /// Admit a prompt: reuse its leading full blocks from the prefix cache and allocate the rest.
    /// Fails with [`KvCacheError::OutOfBlocks`] (changing nothing) when the pool is too small.
    pub fn add_sequence(&mut self, prompt: &[u32]) -> Result<SequenceAdmission, KvCacheError> {
        let bs = self.block_size;
        let total_blocks = prompt.len().div_ceil(bs);
        // Reuse at most the full blocks before the last token: its logits must be computed.
        let reusable = if self.prefix_caching { prompt.len().saturating_sub(1) / bs } else { 0 };
        let mut hits = Vec::new();
        let mut hashes = Vec::new();
        let mut parent = ROOT_HASH;
        for i in 0..reusable {
            let key = BlockKey::new(parent, &prompt[i * bs..(i + 1) * bs]);
            let h = key.hash();
            match self.by_hash.get(&h) {
                Some(&b) if self.key[b as usize].as_ref() == Some(&key) => {
                    hits.push(b);
                    hashes.push(h);
                    parent = h;
                }
                _ => break,
            }
        }
        let evictable_hits = hits.iter().filter(|&&b| self.ref_count[b as usize] == 0).count();
        let needed = total_blocks - hits.len();
        let available = self.available() - evictable_hits;
        if needed > available {
            return Err(KvCacheError::OutOfBlocks { needed, available });
        }
        if self.prefix_caching {
            self.queried_blocks += reusable as u64;
            self.hit_blocks += hits.len() as u64;
        }
        for &b in &hits {
            self.retain(b);
        }
        let mut blocks = hits;
        for _ in 0..needed {
            let b = self.take_block();
            blocks.push(b);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let cached_tokens = hashes.len() * bs;
        self.seqs.insert(seq, Sequence { blocks, tokens: prompt.to_vec(), block_hashes: hashes });
        Ok(SequenceAdmission { seq, cached_tokens })
    }

    /// Blocks that appending `n` tokens to `seq` would take from the pool.
    pub fn blocks_needed_to_append(&self, seq: SeqId, n: usize) -> Result<usize, KvCacheError> {
        let s = self.seq(seq)?;
        Ok(self.append_need(s, n).0)
    }

    /// (blocks to take, whether the last block must be copied first).
    fn append_need(&self, s: &Sequence, n: usize) -> (usize, bool) {
        let bs = self.block_size;
        let len = s.tokens.len();
        let used_in_last = len % bs;
        let cow = n > 0 && used_in_last != 0 && s.blocks.last().is_some_and(|&b| self.ref_count[b as usize] > 1);
        let new_blocks = (len + n).div_ceil(bs) - len.div_ceil(bs);
        (new_blocks + cow as usize, cow)
    }

    /// Append tokens to `seq`, returning their slots and the copy-on-write to perform first, if any.
    pub fn append_tokens(&mut self, seq: SeqId, tokens: &[u32]) -> Result<AppendResult, KvCacheError> {
        let bs = self.block_size;
        let s = self.seq(seq)?;
        let (needed, cow) = self.append_need(s, tokens.len());
        if needed > self.available() {
            return Err(KvCacheError::OutOfBlocks { needed, available: self.available() });
        }
        let mut s = self.seqs.remove(&seq).ok_or(KvCacheError::UnknownSequence(seq))?;
        let mut copy = None;
        // `cow` implies a partly filled, shared last block.
        if let (true, Some(&old)) = (cow, s.blocks.last()) {
            let new = self.take_block();
            self.release(old);
            let last = s.blocks.len() - 1;
            s.blocks[last] = new;
            copy = Some(CopyOp { src: old, dst: new, num_tokens: s.tokens.len() % bs });
        }
        let mut slots = Vec::with_capacity(tokens.len());
        for &t in tokens {
            let pos = s.tokens.len();
            if pos.is_multiple_of(bs) && pos / bs == s.blocks.len() {
                let b = self.take_block();
                s.blocks.push(b);
            }
            slots.push(s.blocks[pos / bs] as usize * bs + pos % bs);
            s.tokens.push(t);
        }
        self.seqs.insert(seq, s);
        Ok(AppendResult { slots, copy })
    }

    /// Publish the full blocks among the first `computed_tokens` of `seq` to the prefix cache.
    /// Call after the K/V of those tokens has been written.
    pub fn mark_computed(&mut self, seq: SeqId, computed_tokens: usize) -> Result<(), KvCacheError> {
        let bs = self.block_size;
        let s = self.seqs.get_mut(&seq).ok_or(KvCacheError::UnknownSequence(seq))?;
        if computed_tokens > s.tokens.len() {
            return Err(KvCacheError::InvalidArgument {
                arg: "computed_tokens",
                reason: format!("{computed_tokens} exceeds sequence length {}", s.tokens.len()),
            });
        }
        if !self.prefix_caching {
            return Ok(());
        }
        let full = computed_tokens / bs;
        while s.block_hashes.len() < full {
            let i = s.block_hashes.len();
            let parent = s.block_hashes.last().copied().unwrap_or(ROOT_HASH);
            let key = BlockKey::new(parent, &s.tokens[i * bs..(i + 1) * bs]);
            let h = key.hash();
            let b = s.blocks[i];
            // Publish unless an identical block is already published or this one is (shared by a fork).
            if self.key[b as usize].is_none() && !self.by_hash.contains_key(&h) {
                self.by_hash.insert(h, b);
                self.key[b as usize] = Some(key);
            }
            s.block_hashes.push(h);
        }
        Ok(())
    }

    /// A child that shares every block of `parent` (ref counts go up; nothing is copied).
    pub fn fork(&mut self, parent: SeqId) -> Result<SeqId, KvCacheError> {
        let s = self.seq(parent)?.clone();
        for &b in &s.blocks {
            self.retain(b);
        }
        let child = self.next_seq;
        self.next_seq += 1;
        self.seqs.insert(child, s);
        Ok(child)
    }

    /// Return every block of `seq`; published blocks stay cached until evicted.
    pub fn free_sequence(&mut self, seq: SeqId) -> Result<(), KvCacheError> {
        let s = self.seqs.remove(&seq).ok_or(KvCacheError::UnknownSequence(seq))?;
        // Tail first, so that the LRU evicts the ends of prompts before their shared beginnings.
        for &b in s.blocks.iter().rev() {
            self.release(b);
        }
        Ok(())
    }

    /// Check every internal invariant; returns a description of the first violation.
    /// Cheap enough for tests and debug assertions, not for a hot path.
    pub fn check_invariants(&self) -> Result<(), String> {
        let n = self.num_blocks();
        let mut holders = vec![0u32; n];
        for (id, s) in &self.seqs {
            if s.blocks.len() != s.tokens.len().div_ceil(self.block_size) {
                return Err(format!("seq {id}: {} blocks for {} tokens", s.blocks.len(), s.tokens.len()));
            }
            for &b in &s.blocks {
                if b as usize >= n {
                    return Err(format!("seq {id} holds block {b} outside the pool"));
                }
                holders[b as usize] += 1;
            }
        }
        let mut place = vec![0u8; n];
        for &b in &self.free {
            place[b as usize] += 1;
            if self.key[b as usize].is_some() {
                return Err(format!("free block {b} is still published"));
            }
        }
        for (&tick, &b) in &self.lru {
            place[b as usize] += 1;
            if self.lru_tick[b as usize] != Some(tick) {
                return Err(format!("LRU block {b} has tick {:?}, map says {tick}", self.lru_tick[b as usize]));
            }
            if self.key[b as usize].is_none() {
                return Err(format!("LRU block {b} is not published"));
            }
        }
        for b in 0..n {
            if holders[b] != self.ref_count[b] {
                return Err(format!("block {b}: ref count {} but {} holders", self.ref_count[b], holders[b]));
            }
            let expected = if self.ref_count[b] > 0 { 0 } else { 1 };
            if place[b] != expected {
                return Err(format!(
                    "block {b} (ref {}) appears {} times in free list + LRU",
                    self.ref_count[b], place[b]
                ));
            }
        }
        for (&h, &b) in &self.by_hash {
            match &self.key[b as usize] {
                Some(k) if k.hash() == h => {}
                _ => return Err(format!("hash {h:#x} points to block {b} with another key")),
            }
        }
        let published = self.key.iter().filter(|k| k.is_some()).count();
        if published != self.by_hash.len() {
            return Err(format!("{published} published blocks but {} hash entries", self.by_hash.len()));
        }
        Ok(())
    }
}
