//! PAL engine: continuous batching of requests over a paged KV cache.
//!
//! - [`Engine`]: queue requests ([`Engine::add_request`]), [`Engine::step`] or [`Engine::run`] them;
//!   teacher-forced [`Engine::score`].
//! - The scheduler counts blocks ([`pal_kvcache::BlockManager`]): decodes first, then chunked
//!   prefill under a token budget, prefix-cache reuse, preemption by recompute when blocks run out.
//! - [`sampler::sample`]: a pure function of logits, [`SamplingParams`], history and a seeded RNG.
//! - The model runner turns block tables into page tables, positions and slots; only it does.

mod engine;
mod error;
mod runner;
pub mod sampler;
mod scheduler;
mod sequence;

pub use engine::{Engine, EngineConfig, EngineStats, Event, Output};
pub use error::{EngineError, Result};
pub use sampler::SamplingParams;
pub use scheduler::SchedulerConfig;
pub use sequence::{FinishReason, RequestId};
