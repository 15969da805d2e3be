//! PAL engine: continuous batching of requests over a paged KV cache.
//!
//! - [`Engine`]: queue requests ([`Engine::add_request`]), [`Engine::step`] or [`Engine::run`] them;
//!   teacher-forced [`Engine::score`].
//! - The scheduler counts blocks ([`pal_kvcache::BlockManager`]): decodes first, then chunked
//!   prefill under a token budget, prefix-cache reuse, preemption by recompute when blocks run out.
//! - [`sampler::sample`]: a pure function of logits, [`SamplingParams`], history and a seeded RNG.
//! - The model runner turns block tables into page tables, positions and slots; only it does.
//!
//! ```no_run
//! use pal_engine::{Engine, EngineConfig, SamplingParams};
//! use pal_model::{LlamaModel, Tokenizer};
//!
//! let model = LlamaModel::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let tok = Tokenizer::from_gguf(model.gguf())?;
//! let prompts = ["The capital of France is", "def fibonacci(n):"];
//! let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p, true)).collect::<Result<_, _>>()?;
//! let mut engine = Engine::new(model, Some(tok), EngineConfig::with_capacity(4096))?;
//! for p in ids {
//!     engine.add_request(p, SamplingParams::greedy(32))?;
//! }
//! for out in engine.run(|_, _| {})? {
//!     println!("{:?}: {}", out.finish, out.text.unwrap_or_default());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod engine;
mod error;
mod runner;
pub mod sampler;
mod scheduler;
mod sequence;

pub use engine::{Engine, EngineConfig, EngineStats, Event, Output};
pub use error::{EngineError, Result};
pub use sampler::SamplingParams;
pub use sequence::{FinishReason, RequestId};
