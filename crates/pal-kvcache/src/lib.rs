//! PAL KV block manager: integer bookkeeping for a paged KV cache. No tensors live here.
//!
//! [`BlockManager`] owns the block pool of one model (every layer uses the same block ids) and the
//! block table of every sequence:
//! - [`BlockManager::add_sequence`] admits a prompt, reusing full blocks from the prefix cache;
//! - [`BlockManager::append_tokens`] extends a sequence, opening a block only when the last is full
//!   and copying a shared partial block first (copy-on-write, reported as a [`CopyOp`]);
//! - [`BlockManager::fork`] shares every block of a sequence with a child (ref counts);
//! - [`BlockManager::mark_computed`] publishes full, computed blocks to the prefix cache;
//! - [`BlockManager::free_sequence`] returns blocks: unreferenced cached blocks wait in an LRU and are
//!   evicted only when the free list is empty.
//!
//! Running out of blocks is [`KvCacheError::OutOfBlocks`], checked before anything changes, so the
//! engine can preempt a sequence and try again.

mod error;
mod manager;
mod prefix;

pub use error::KvCacheError;
pub use manager::{AppendResult, BlockId, BlockManager, CacheStats, CopyOp, SeqId, SequenceAdmission};
