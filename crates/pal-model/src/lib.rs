//! PAL models: GGUF files to logits on the paged KV cache.
//!
//! - [`gguf::GgufFile`]: the GGUF reader (v2, v3; every metadata type; memory-mapped tensors) and
//!   [`gguf::GgufWriter`] for tiny test models.
//! - [`quant`]: dequantization of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K,
//!   Q5_K, Q6_K, IQ4_NL, IQ4_XS.
//! - [`QMatrix`]: a weight matrix of the file; quantized ones (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q2_K/
//!   Q3_K/Q4_K/Q5_K/Q6_K/IQ4_NL/IQ4_XS) are repacked ([`packed::PackedMatrix`]) for integer kernels with 8-bit
//!   activations (AVX2 in `packed_avx2`, a portable twin in `packed`).
//! - [`Tokenizer`]: byte-level BPE and SentencePiece vocabularies from GGUF metadata (via the
//!   `tokenizers` crate), special tokens, and the file's chat template (`minijinja`);
//!   [`TextStream`]: the text of generated tokens, decoded a few tokens at a time.
//! - [`LlamaModel`]: the Llama-family forward over a [`KvCache`]; [`dense::DenseLlama`] is its
//!   slow, contiguous twin used as the test oracle.

mod config;
pub mod dense;
mod error;
pub mod fetch;
pub mod gguf;
mod kv_cache;
mod llama;
pub mod packed;
mod packed_avx2;
pub mod qmatmul;
pub mod quant;
mod simd;
pub mod testing;
mod text_stream;
mod tokenizer;

pub use config::LlamaConfig;
pub use error::{ModelError, Result};
pub use kv_cache::KvCache;
pub use llama::{rms_norm, swiglu, LlamaModel, StepInput};
pub use qmatmul::QMatrix;
pub use text_stream::TextStream;
pub use tokenizer::{ChatMessage, Tokenizer};
