//! PAL attention ops over a paged KV cache.
//!
//! Ops (each a function in every backend module, taking one argument struct):
//! - `append_kv` ([`AppendArgs`]): write new K/V tokens into their slots, RoPE fused on q and k
//!   ([`Rope`]: adjacent-pair or half-split layout, theta, optional Llama-3 scaling).
//! - `paged_decode` ([`DecodeArgs`]): one query token per sequence; split-KV from a host
//!   [`DecodePlan`], partial `(o, lse)` states merged exactly.
//! - `paged_prefill` ([`PrefillArgs`]): the new tokens of several sequences (`qo_indptr`), each
//!   attending causally to its history plus the new tokens up to itself; host [`PrefillPlan`].
//! - [`merge_states`]: combine partial attention states (split-KV, cascade, chunked prefill).
//!
//! Backends, same signatures, same validation:
//! - [`reference`]: naive dense attention with f64 accumulation: the oracle of every test.
//! - [`gather`]: gather pages into contiguous K/V, then dense attention: the baseline to beat.
//! - [`cpu`]: the optimized kernels (rayon over work items, f32 accumulation, AVX2/FMA when the
//!   CPU has them).
//! - [`cuda`]: NVIDIA GPUs; kernels compiled at run time by NVRTC, launched through cudarc.
//!
//! [`dispatch`] chooses between the fused kernel and gather-then-dense per op and backend
//! ([`dispatch::Dispatch`]: from measured crossovers, or forced by the caller).
//!
//! Every entry point validates its arguments before touching memory and returns a typed
//! [`pal_core::PalError`] naming the argument at fault; outputs and the pool are untouched on error.
//!
//! ```
//! use pal_core::{bf16, AttentionOptions, KvLayout, PageTable, PagedKv};
//! use pal_kernels::{cpu, DecodeArgs, DecodePlan};
//!
//! // A pool of 64 blocks of 16 tokens, 8 KV heads of dim 128; two sequences in scattered blocks.
//! let layout = KvLayout::new(64, 16, 8, 128)?;
//! let (k, v) = (vec![bf16::ZERO; layout.elems()], vec![bf16::ZERO; layout.elems()]);
//! let table = PageTable::from_lists(&[vec![7, 3], vec![12]], &[20, 9], 16)?;
//! let q = vec![bf16::ZERO; 2 * 32 * 128];
//! let args = DecodeArgs {
//!     q: &q,
//!     num_qo_heads: 32,
//!     kv: PagedKv::new(&k, &v, layout)?,
//!     page_table: &table,
//!     opts: AttentionOptions::default(),
//! };
//! let plan = DecodePlan::new(&table, 8, &args.opts, rayon::current_num_threads()); // once per step
//! let mut out = vec![bf16::ZERO; q.len()];
//! cpu::paged_decode(&args, &plan, &mut out)?; // once per layer
//! # Ok::<(), pal_core::PalError>(())
//! ```

mod args;
pub mod cpu;
pub mod cuda;
pub mod dispatch;
pub mod gather;
mod merge;
mod plan;
pub mod reference;
mod rope;
pub mod testing;
mod validate;

pub use args::{AppendArgs, DecodeArgs, PrefillArgs, RaggedKv};
pub use merge::merge_states;
pub use plan::{DecodePlan, PrefillPlan};
pub use rope::{Llama3Scaling, Rope, RopeConfig, RopeStyle};
