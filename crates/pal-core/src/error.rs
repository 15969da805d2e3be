use thiserror::Error;

/// Errors of the kernel layer. Every variant names the argument at fault so that a caller (or a
/// user reading a CLI message) knows what to fix. Validation happens before any write: when an op
/// returns an error, its outputs and the KV pool are untouched.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PalError {
    /// A buffer does not have the length its shape implies.
    #[error("`{arg}` has {got} elements, expected {expected} ({shape})")]
    ShapeMismatch { arg: &'static str, expected: usize, got: usize, shape: String },
    /// A scalar or structural argument is invalid.
    #[error("invalid `{arg}`: {reason}")]
    InvalidArgument { arg: &'static str, reason: String },
    /// An index (page id, slot) points outside the KV pool.
    #[error("`{arg}`[{index}] = {value} is outside the pool (limit {limit})")]
    OutOfPool { arg: &'static str, index: usize, value: u64, limit: u64 },
    /// The batch has no sequences or no tokens.
    #[error("`{arg}` is empty: {reason}")]
    EmptyBatch { arg: &'static str, reason: String },
    /// The requested backend is not available on this machine or build.
    #[error("device `{device}` unavailable: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    /// The device reported an error while running (driver, compiler, out of memory).
    #[error("device `{device}` failed: {reason}")]
    DeviceFailure { device: String, reason: String },
}

impl PalError {
    pub fn invalid(arg: &'static str, reason: impl Into<String>) -> Self {
        PalError::InvalidArgument { arg, reason: reason.into() }
    }
    /// The argument name this error is about (None for device errors).
    pub fn arg(&self) -> Option<&'static str> {
        match self {
            PalError::ShapeMismatch { arg, .. }
            | PalError::InvalidArgument { arg, .. }
            | PalError::OutOfPool { arg, .. }
            | PalError::EmptyBatch { arg, .. } => Some(arg),
            PalError::DeviceUnavailable { .. } | PalError::DeviceFailure { .. } => None,
        }
    }
}

pub type Result<T, E = PalError> = std::result::Result<T, E>;

/// Check that `got == expected`, naming `arg` and its logical `shape` on failure.
pub fn check_len(arg: &'static str, got: usize, expected: usize, shape: impl FnOnce() -> String) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(PalError::ShapeMismatch { arg, expected, got, shape: shape() })
    }
}
