//! Prefix-cache keys: a chained hash over full blocks of token ids.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// Identity of a full block in the prefix cache: the hash of the block before it plus its tokens.
/// The tokens are kept so that a hash collision can never make two different prefixes share a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockKey {
    pub parent: u64,
    pub tokens: Box<[u32]>,
}

impl BlockKey {
    pub fn new(parent: u64, tokens: &[u32]) -> Self {
        BlockKey { parent, tokens: tokens.into() }
    }

    /// Chained hash: equal only for equal token prefixes (up to 64-bit collisions, which the
    /// stored tokens rule out on lookup).
    pub fn hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.parent.hash(&mut h);
        self.tokens.hash(&mut h);
        h.finish()
    }
}

/// Hash of the empty prefix: the parent of a sequence's first block.
pub(crate) const ROOT_HASH: u64 = 0x5041_4c5f_524f_4f54; // "PAL_ROOT"
