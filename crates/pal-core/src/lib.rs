//! PAL core: the vocabulary every other PAL crate speaks.
//!
//! - [`DType`] and the [`Element`] trait: f32, f16 and bf16 storage with f32 arithmetic.
//! - [`PalError`]: the one error enum of the kernel layer; every variant names the argument at fault.
//! - [`PageTable`]: the CSR page table of a batch step (`indptr`, `indices`, `last_page_len`), and
//!   [`PageTable::from_padded`] for vLLM-style padded block tables.
//! - [`KvLayout`], [`PagedKv`], [`PagedKvMut`]: views of a KV pool laid out as
//!   `[num_blocks, block_size, num_kv_heads, head_dim]` (NHD) for K and for V.
//! - [`AttentionOptions`], [`HeadConfig`]: softmax scale, sliding window, soft-cap, head counts.
//! - [`Device`]: where a kernel runs; [`alloc::large_vec`]: huge-page backed pool buffers.
//!
//! Nothing here allocates on a hot path or knows about sequences; see `pal-kvcache` for block
//! bookkeeping and `pal-kernels` for the attention ops.

pub mod alloc;
mod device;
mod dtype;
mod error;
mod heads;
mod options;
mod page_table;
mod paged_kv;

pub use device::Device;
pub use dtype::{DType, Element};
pub use error::{check_len, PalError, Result};
pub use heads::HeadConfig;
pub use options::AttentionOptions;
pub use page_table::PageTable;
pub use paged_kv::{KvLayout, PagedKv, PagedKvMut};

/// Re-exported so that users of PAL name the same `f16`/`bf16` types PAL does.
pub use half::{bf16, f16};
