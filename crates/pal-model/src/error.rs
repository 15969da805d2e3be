use pal_core::PalError;
use std::path::PathBuf;
use thiserror::Error;

/// Errors of loading and running a model. Each variant says what is wrong and where, so that a
/// CLI message alone tells the user what to fix.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not GGUF, or a field is cut off or inconsistent.
    #[error("corrupt GGUF at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error(
        "tensor `{name}` has type {}, which PAL does not read (it reads {})",
        crate::gguf::GgmlType::describe_id(*type_id),
        crate::gguf::GgmlType::ALL.map(|t| t.name()).join(", ")
    )]
    UnknownTensorType { name: String, type_id: u32 },
    #[error("tensor `{name}`: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("metadata key `{key}`: {reason}")]
    BadMetadata { key: String, reason: String },
    #[error("missing metadata key `{0}`")]
    MissingKey(String),
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("architecture `{0}` is not supported (llama, mistral, qwen2 and smollm are)")]
    UnsupportedArchitecture(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("invalid `{arg}`: {reason}")]
    InvalidArgument { arg: &'static str, reason: String },
    #[error(transparent)]
    Kernel(#[from] PalError),
}

impl ModelError {
    pub(crate) fn corrupt(offset: usize, reason: impl Into<String>) -> Self {
        ModelError::Corrupt { offset: offset as u64, reason: reason.into() }
    }
    pub(crate) fn bad_tensor(name: &str, reason: impl Into<String>) -> Self {
        ModelError::BadTensor { name: name.to_string(), reason: reason.into() }
    }
    pub(crate) fn bad_meta(key: &str, reason: impl Into<String>) -> Self {
        ModelError::BadMetadata { key: key.to_string(), reason: reason.into() }
    }
    pub fn invalid(arg: &'static str, reason: impl Into<String>) -> Self {
        ModelError::InvalidArgument { arg, reason: reason.into() }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
