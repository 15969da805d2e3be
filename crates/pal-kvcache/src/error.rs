use crate::SeqId;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KvCacheError {
    /// Not enough free or evictable blocks; nothing was changed.
    #[error("out of KV blocks: need {needed}, {available} free or evictable")]
    OutOfBlocks { needed: usize, available: usize },
    #[error("unknown sequence {0}")]
    UnknownSequence(SeqId),
    #[error("invalid `{arg}`: {reason}")]
    InvalidArgument { arg: &'static str, reason: String },
}
