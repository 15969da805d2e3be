//! GGUF files (versions 2 and 3): metadata, tensor index and memory-mapped tensor data.
//!
//! [`GgufFile`] parses the header with bounds checks on every read: a truncated or corrupt file,
//! an unknown tensor type or an impossible shape is a [`ModelError`](crate::ModelError), never a
//! panic. [`GgufWriter`] writes files (tests build tiny models with it).

mod reader;
mod types;
mod value;
mod writer;

pub use reader::{GgufFile, TensorInfo};
pub use types::GgmlType;
pub use value::{type_id, MetaArray, MetaValue};
pub use writer::GgufWriter;
