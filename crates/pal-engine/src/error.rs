use pal_core::PalError;
use pal_kvcache::KvCacheError;
use pal_model::ModelError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("invalid `{arg}`: {reason}")]
    InvalidArgument { arg: &'static str, reason: String },
    /// The request can never run: it does not fit the context or the whole KV pool.
    #[error("request too long: {0}")]
    TooLong(String),
    /// A bookkeeping invariant of the engine does not hold (a bug, reported instead of a panic).
    #[error("engine invariant broken: {0}")]
    Internal(&'static str),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    KvCache(#[from] KvCacheError),
    #[error(transparent)]
    Kernel(#[from] PalError),
}

impl EngineError {
    pub fn invalid(arg: &'static str, reason: impl Into<String>) -> Self {
        EngineError::InvalidArgument { arg, reason: reason.into() }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
