//! Paged prefill (append attention with history) on the GPU.
//!
//! Three kernels, chosen per call by [`PrefillKernel`]:
//! - **Tensor cores** (`prefill.cu`, FlashAttention-2 style, mma.sync): one block per tile of 128
//!   (64 for head dims above 128) packed (token, query head) rows of a sequence and one KV head,
//!   streaming the sequence's K/V pages through shared memory. Needs 16-bit q equal to the pool's
//!   dtype and a head dim that is a multiple of 16 up to 256.
//! - **wgmma** (`prefill_wg.cu`, Hopper only): the same tiles, work items and partial states, with
//!   both products on warpgroup MMAs that read Q, K and V from shared memory themselves. Taken by
//!   the tensor-core choices on compute_90a for f16/bf16 head dims 64 and 128 (1.4-1.5x the
//!   mma.sync kernel on an H100, BENCHMARKS.md); `PAL_PREFILL_KERNEL=mma` or
//!   [`PrefillKernel::MmaSync`] keeps the mma.sync kernel.
//! - **Rows**: every new token is a query row run through the split-KV decode kernels. Correct for
//!   every dtype and head dim, but it re-reads the history once per token: the fallback.
//!
//! Both need the new tokens' K/V in the pool already (append first); ragged new K/V stays CPU-only.

use super::compile::{Family, Variant};
use super::tuning;
use super::{check_pool_heads, fail, launch_split, CudaDevice, DevicePool, DeviceTable, KernelOpts, SplitWork};
use crate::validate;
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
use pal_core::{AttentionOptions, DType, Element, HeadConfig, PageTable, PalError, Result};

/// Which GPU prefill kernel to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillKernel {
    /// Tensor cores where the dtypes and head dim allow them, else rows (the default).
    Auto,
    /// The tensor-core kernel; an error where it does not apply.
    TensorCore,
    /// The tensor-core kernel with each tile's key range cut into this many splits (tests force
    /// the split-KV merge with it); an error where the kernel does not apply.
    TensorCoreSplits(usize),
    /// The mma.sync tensor-core kernel (`prefill.cu`) even where the wgmma one applies (tests and
    /// A/B runs on Hopper); an error where tensor cores do not apply.
    MmaSync,
    /// The row-by-row fallback, cutting each row's key range into chunks of this many tokens.
    Rows { chunk_tokens: usize },
}

/// Packed rows per block of a tensor-core kernel: `BM` in prefill.cu (warps of two 16-row m-tiles,
/// one for head dims above 128), or prefill_wg.cu's two warpgroups of 64 rows.
fn tc_rows(head_dim: usize, wgmma: bool) -> usize {
    if wgmma {
        return 128;
    }
    tuning::prefill_warps() * if head_dim <= 128 { 32 } else { 16 }
}
/// Threads per block of a tensor-core kernel.
fn tc_threads(wgmma: bool) -> usize {
    if wgmma {
        256
    } else {
        32 * tuning::prefill_warps()
    }
}
/// Dynamic shared memory of a tensor-core kernel: a Q tile and double-buffered K and V tiles of
/// `BN` keys (prefill.cu: rows padded by 16 bytes; prefill_wg.cu: 128-byte swizzled, unpadded, plus
/// 1 KiB to align the tiles to the swizzle's 1024 bytes), then two tiles of pool slots (i32 per
/// key; prefill_wg.cu: and two of page ids).
fn tc_shared_bytes(head_dim: usize, min_blocks: usize, wgmma: bool) -> usize {
    if wgmma {
        let keys = tuning::prefill_wg_keys(head_dim);
        return 1024 + (tc_rows(head_dim, true) + 4 * keys) * head_dim * 2 + 4 * keys * 4;
    }
    let keys = tuning::prefill_keys(head_dim, min_blocks);
    (tc_rows(head_dim, false) + 4 * keys) * (head_dim + 8) * 2 + 2 * keys * 4
}

/// The entry point of a tensor-core kernel.
fn tc_entry(wgmma: bool) -> &'static str {
    if wgmma {
        "pal_prefill_wg"
    } else {
        "pal_prefill_tc"
    }
}

/// Let the tensor-core kernel of a freshly loaded module use its dynamic shared memory (above the
/// default 48 KB a launch needs this opt-in).
pub(super) fn allow_shared_memory(
    kernels: &super::Kernels,
    head_dim: usize,
    min_blocks: usize,
    wgmma: bool,
) -> Result<()> {
    kernels
        .get(tc_entry(wgmma))?
        .set_attribute(
            cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            tc_shared_bytes(head_dim, min_blocks, wgmma) as i32,
        )
        .map_err(fail)
}

/// Whether the tensor-core kernel runs these dtypes and this head dim.
pub fn tensor_core_supports(q: DType, kv: DType, head_dim: usize) -> bool {
    q == kv && matches!(kv, DType::F16 | DType::BF16) && head_dim.is_multiple_of(16) && head_dim <= 256
}

/// Whether the wgmma kernel runs these dtypes and this head dim (on a compute_90a device).
pub fn wgmma_prefill_supports(q: DType, kv: DType, head_dim: usize) -> bool {
    tensor_core_supports(q, kv, head_dim) && matches!(head_dim, 64 | 128)
}

enum Work {
    /// `tiles`: `[num_tiles, 6]`: sequence, first query token, new tokens, total tokens, first
    /// packed row, the sequence's first page-table entry. With `splits > 1` each tile's key range
    /// is cut in `splits` and the partial states (`part_o`, `part_lse`) are merged by a second
    /// kernel. `min_blocks`: the blocks per SM the kernel variant is compiled for
    /// (`tuning::prefill_min_blocks`). `wgmma`: prefill_wg.cu rather than prefill.cu.
    TensorCore {
        wgmma: bool,
        tiles: CudaSlice<i32>,
        num_tiles: usize,
        min_blocks: usize,
        splits: usize,
        part_o: CudaSlice<f32>,
        part_lse: CudaSlice<f32>,
    },
    Rows(Box<SplitWork>),
}

/// A prefill plan: the work partition of one batch, built on the host once per step and uploaded;
/// [`paged_prefill`] then allocates nothing and reads no host data.
pub struct CudaPrefillPlan {
    qo_indptr: Vec<u32>,
    seq_lens: Vec<usize>,
    /// The page table's `indptr` the tiles were built from (they carry each sequence's start).
    page_starts: Vec<u32>,
    opts: AttentionOptions,
    heads: HeadConfig,
    dtypes: (DType, DType),
    work: Work,
}

impl CudaPrefillPlan {
    /// Plan for new tokens whose K/V is already in the pool (the last `qo_indptr[b+1] -
    /// qo_indptr[b]` tokens of sequence `b`), with q of dtype `q` and a pool of dtype `kv`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dev: &CudaDevice,
        qo_indptr: &[u32],
        table: &PageTable,
        heads: HeadConfig,
        opts: &AttentionOptions,
        (q, kv): (DType, DType),
        kernel: PrefillKernel,
    ) -> Result<Self> {
        heads.validate()?;
        opts.validate()?;
        if qo_indptr.len() != table.batch() + 1 {
            return Err(PalError::invalid("qo_indptr", format!("needs batch + 1 = {} entries", table.batch() + 1)));
        }
        let mut seqs = Vec::with_capacity(table.batch());
        for b in 0..table.batch() {
            let (q0, q1) = (qo_indptr[b] as usize, qo_indptr[b + 1] as usize);
            let n = q1.checked_sub(q0).ok_or_else(|| PalError::invalid("qo_indptr", "must not decrease"))?;
            let total = table.seq_len(b);
            let hist = total
                .checked_sub(n)
                .ok_or_else(|| PalError::invalid("qo_indptr", "more new tokens than the sequence holds"))?;
            seqs.push((q0, n, hist, total));
        }
        let tc_ok = tensor_core_supports(q, kv, heads.head_dim);
        let work = match kernel {
            PrefillKernel::TensorCore | PrefillKernel::TensorCoreSplits(_) | PrefillKernel::MmaSync if !tc_ok => {
                return Err(PalError::invalid(
                    "kernel",
                    format!(
                        "the tensor-core prefill needs f16/bf16 q equal to the pool's dtype and a head dim that is a \
                         multiple of 16 up to 256 (got q {q}, pool {kv}, head_dim {})",
                        heads.head_dim
                    ),
                ))
            }
            PrefillKernel::TensorCore
            | PrefillKernel::TensorCoreSplits(_)
            | PrefillKernel::MmaSync
            | PrefillKernel::Auto
                if tc_ok =>
            {
                let wgmma = kernel != PrefillKernel::MmaSync
                    && Family::PrefillWg.compiles_for(dev.arch())
                    && tuning::prefill_wgmma()
                    && wgmma_prefill_supports(q, kv, heads.head_dim);
                let tile_rows = tc_rows(heads.head_dim, wgmma);
                let (tiles, num_tiles, mean_keys) = tensor_core_tiles(&seqs, table.indptr(), heads, opts, tile_rows);
                // Resident blocks per SM: prefill.cu runs two (its register budget); the wgmma
                // kernel as many as it is compiled for.
                let per_sm = if wgmma { tuning::prefill_wg_min_blocks() } else { 2 };
                let splits = match kernel {
                    PrefillKernel::TensorCoreSplits(n) => n.clamp(1, 64),
                    _ => tuning::prefill_splits().unwrap_or_else(|| {
                        let (blocks, slots) = (num_tiles * heads.num_kv_heads, per_sm * dev.sm_count());
                        // prefill.cu keeps a grid of more blocks than slots whole: there it takes
                        // the variant with three blocks per SM at head dims <= 64 (`many` below),
                        // and splitting such grids was not measured for it.
                        if !wgmma && blocks >= slots {
                            1
                        } else {
                            tc_splits(slots, blocks, mean_keys, min_keys_per_split(wgmma))
                        }
                    }),
                };
                // The grid is large enough to fill the GPU without splits: the variant compiled
                // for more blocks per SM (head dims <= 64) pays there; with splits it does not.
                let many = splits == 1 && num_tiles * heads.num_kv_heads >= 2 * dev.sm_count();
                let min_blocks = if wgmma {
                    tuning::prefill_wg_min_blocks()
                } else {
                    tuning::prefill_min_blocks(heads.head_dim, many)
                };
                let tokens = seqs.last().map(|s| s.0 + s.1).unwrap_or(0);
                let part = if splits > 1 { splits * tokens * heads.num_qo_heads } else { 1 };
                Work::TensorCore {
                    wgmma,
                    tiles: dev.upload(&tiles)?,
                    num_tiles,
                    min_blocks,
                    splits,
                    part_o: dev.zeros(part * heads.head_dim)?,
                    part_lse: dev.zeros(part)?,
                }
            }
            PrefillKernel::Rows { chunk_tokens } => {
                Work::Rows(Box::new(row_work(dev, &seqs, heads, opts, chunk_tokens)?))
            }
            _ => Work::Rows(Box::new(row_work(dev, &seqs, heads, opts, 512)?)),
        };
        Ok(CudaPrefillPlan {
            qo_indptr: qo_indptr.to_vec(),
            seq_lens: table.seq_lens().to_vec(),
            page_starts: table.indptr().to_vec(),
            opts: *opts,
            heads,
            dtypes: (q, kv),
            work,
        })
    }

    /// The kernel this plan runs.
    pub fn kernel(&self) -> &'static str {
        match self.work {
            Work::TensorCore { wgmma: true, .. } => "wgmma",
            Work::TensorCore { .. } => "tensor-core",
            Work::Rows(_) => "rows",
        }
    }

    /// Key-range splits per tile of the tensor-core kernel (1: no merge pass; rows: 0).
    pub fn splits(&self) -> usize {
        match self.work {
            Work::TensorCore { splits, .. } => splits,
            Work::Rows(_) => 0,
        }
    }
}

/// Key-range splits per tile. With `blocks` tiles and `slots` resident blocks on the GPU (SMs
/// times the kernel's occupancy), `s` splits run `s * blocks` blocks in `ceil(s * blocks / slots)`
/// waves: take the fewest splits that keep the waves at least 75% full (every split adds merge
/// traffic and a block prologue), else the fullest; and at least `min_keys` keys per split on
/// average. A grid of more blocks than slots splits too when its last wave would leave the waves
/// under 75% full: SmolLM B=8 16k, 288 blocks on 264 slots, took 0.76x the time with 4 splits
/// (wgmma kernel, `h100_prefill_wg_splits_ab/`).
fn tc_splits(slots: usize, blocks: usize, mean_keys: usize, min_keys: usize) -> usize {
    let fill = |s: usize| (s * blocks) as f64 / ((s * blocks).div_ceil(slots) * slots) as f64;
    if blocks == 0 || slots == 0 || fill(1) >= 0.75 {
        return 1;
    }
    let max = (mean_keys / min_keys.max(1)).clamp(1, 16);
    (1..=max)
        .find(|&s| fill(s) >= 0.75)
        .unwrap_or_else(|| (1..=max).fold(1, |best, s| if fill(s) > fill(best) + 1e-9 { s } else { best }))
}

/// Fewest keys per split on average: the wgmma kernel runs a tile's keys ~1.5x faster, so its
/// fixed costs per split (merge traffic, block prologue) weigh more: at Llama B=1 1k (~770 keys
/// per tile) no split was 8% faster than two (`h100_prefill_wg_splits_ab/`).
fn min_keys_per_split(wgmma: bool) -> usize {
    if wgmma {
        512
    } else {
        256
    }
}

/// Key range from which a sequence's prefill tiles are kept together (see [`tensor_core_tiles`]):
/// between the 1k (interleaving 1-5% faster) and 4k (grouping 4% faster) contexts measured.
const GROUP_TILES_FROM_KEYS: usize = 2048;

/// Tiles of the tensor-core kernel with their count and mean key range. Long work goes first, so
/// that the grid's tail is short tiles. Where a sequence's key range reaches
/// [`GROUP_TILES_FROM_KEYS`], its tiles stay together (sequences longest first, each one's tiles
/// longest first): they read the same K/V, and run side by side they find it in L2. (Sorting all
/// tiles by key range interleaves equal sequences: at Llama B=32 L=16k the 16 tiles of a sequence
/// were 32 blocks apart, ran in different waves, and Nsight counted 15.3 GB of DRAM reads for
/// 2.2 GB of K/V, against FlashInfer's 2.5 GB.) Shorter sequences' tiles are sorted by key range
/// over the batch, which balances the tail better (H100: 1-5% at L=1k over two calls).
fn tensor_core_tiles(
    seqs: &[(usize, usize, usize, usize)],
    page_starts: &[u32],
    heads: HeadConfig,
    opts: &AttentionOptions,
    tile_rows: usize,
) -> (Vec<i32>, usize, usize) {
    let g = heads.group_size();
    let mut tiles: Vec<(usize, [i32; 6])> = Vec::new();
    for (b, &(q0, n, hist, total)) in seqs.iter().enumerate() {
        let rows = n * g;
        for row0 in (0..rows).step_by(tile_rows) {
            let (t0, t1) = (row0 / g, ((row0 + tile_rows).min(rows) - 1) / g);
            let lo = opts.first_visible(hist + t0);
            let hi = if opts.causal { hist + t1 + 1 } else { total };
            let row = [b as i32, q0 as i32, n as i32, total as i32, row0 as i32, page_starts[b] as i32];
            tiles.push((hi.saturating_sub(lo), row));
        }
    }
    let mut seq_keys = vec![0usize; seqs.len()];
    for (keys, t) in &tiles {
        let b = t[0] as usize;
        seq_keys[b] = seq_keys[b].max(*keys);
    }
    // Sort key: (sequence's range, sequence, tile's range) for grouped sequences; (tile's range,
    // none, 0) for the others, so they interleave among themselves by tile length.
    tiles.sort_by_key(|(keys, t)| {
        let b = t[0] as usize;
        if seq_keys[b] >= GROUP_TILES_FROM_KEYS {
            (std::cmp::Reverse(seq_keys[b]), b, std::cmp::Reverse(*keys))
        } else {
            (std::cmp::Reverse(*keys), usize::MAX, std::cmp::Reverse(0))
        }
    });
    let n = tiles.len();
    let mean_keys = tiles.iter().map(|t| t.0).sum::<usize>() / n.max(1);
    let mut flat: Vec<i32> = tiles.into_iter().flat_map(|(_, t)| t).collect();
    if flat.is_empty() {
        flat = vec![0; 6]; // the device needs a buffer; no block reads it
    }
    (flat, n, mean_keys)
}

/// The row-by-row partition: every new token a query row, its visible range cut into chunks.
fn row_work(
    dev: &CudaDevice,
    seqs: &[(usize, usize, usize, usize)],
    heads: HeadConfig,
    opts: &AttentionOptions,
    chunk_tokens: usize,
) -> Result<SplitWork> {
    let chunk = chunk_tokens.max(1);
    let mut chunks = Vec::new();
    for (b, &(q0, n, hist, total)) in seqs.iter().enumerate() {
        for i in 0..n {
            let pos = hist + i;
            let (lo, hi) = (opts.first_visible(pos), if opts.causal { pos + 1 } else { total });
            let mut s = lo;
            while s < hi {
                let e = s.saturating_add(chunk).min(hi);
                chunks.push((b, q0 + i, s, e));
                s = e;
            }
        }
    }
    let rows = seqs.last().map(|s| s.0 + s.1).unwrap_or(0);
    SplitWork::upload(dev, &chunks, rows, heads)
}

/// Prefill (append attention) on device buffers; `q`/`out` are `[tokens, num_qo_heads, head_dim]`
/// and the new tokens' K/V must already be in the pool. See [`CudaPrefillPlan`].
#[allow(clippy::too_many_arguments)]
pub fn paged_prefill<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    q: &CudaSlice<Q>,
    qo_indptr: &[u32],
    pool: &DevicePool<KV>,
    table: &DeviceTable,
    plan: &mut CudaPrefillPlan,
    opts: &AttentionOptions,
    out: &mut CudaSlice<Q>,
) -> Result<()> {
    opts.validate()?;
    if plan.qo_indptr != qo_indptr
        || plan.seq_lens != table.host.seq_lens()
        || plan.page_starts != table.host.indptr()
        || plan.opts != *opts
    {
        return Err(PalError::invalid("plan", "was built for another batch or other options; plan again"));
    }
    if plan.dtypes != (Q::DTYPE, KV::DTYPE) {
        return Err(PalError::invalid("plan", "was built for other dtypes of q and the pool"));
    }
    let heads = plan.heads;
    let tokens = qo_indptr.last().map_or(0, |&t| t as usize);
    let (hq, d) = (heads.num_qo_heads, heads.head_dim);
    pal_core::check_len("q", q.len(), tokens * hq * d, || format!("[{tokens}, {hq}, {d}]"))?;
    pal_core::check_len("out", out.len(), tokens * hq * d, || format!("[{tokens}, {hq}, {d}]"))?;
    match &mut plan.work {
        Work::Rows(work) => launch_split(dev, q, pool, table, work, heads, opts, out),
        Work::TensorCore { wgmma, tiles, num_tiles, min_blocks, splits, part_o, part_lse } => {
            let split = SplitState { splits: *splits, part_o, part_lse, tokens };
            let kernel = TcKernel { wgmma: *wgmma, tiles, num_tiles: *num_tiles, min_blocks: *min_blocks };
            launch_tensor_core(dev, q, pool, table, kernel, split, heads, opts, out)
        }
    }
}

/// Which tensor-core kernel a launch runs, over which tiles.
struct TcKernel<'a> {
    wgmma: bool,
    tiles: &'a CudaSlice<i32>,
    num_tiles: usize,
    min_blocks: usize,
}

/// The split-KV workspace of a tensor-core launch.
struct SplitState<'a> {
    splits: usize,
    part_o: &'a mut CudaSlice<f32>,
    part_lse: &'a mut CudaSlice<f32>,
    tokens: usize,
}

#[allow(clippy::too_many_arguments)]
fn launch_tensor_core<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    q: &CudaSlice<Q>,
    pool: &DevicePool<KV>,
    table: &DeviceTable,
    TcKernel { wgmma, tiles, num_tiles, min_blocks }: TcKernel<'_>,
    split: SplitState<'_>,
    heads: HeadConfig,
    opts: &AttentionOptions,
    out: &mut CudaSlice<Q>,
) -> Result<()> {
    let (hkv, d) = (heads.num_kv_heads, heads.head_dim);
    check_pool_heads(&pool.layout, heads)?;
    if num_tiles == 0 {
        return Ok(());
    }
    let family = if wgmma { Family::PrefillWg } else { Family::Prefill };
    let kernels = dev.kernels(&Variant { family, q: Q::DTYPE, kv: KV::DTYPE, head_dim: d, group: min_blocks })?;
    let f = kernels.get(tc_entry(wgmma))?;
    let smem = tc_shared_bytes(d, min_blocks, wgmma);
    let kopts = KernelOpts::new(opts, d);
    let (hkv_i, g_i, page_i) = (hkv as i32, heads.group_size() as i32, pool.layout.block_size as i32);
    let (splits_i, tokens_i) = (split.splits as i32, split.tokens as i32);
    let cfg = LaunchConfig {
        grid_dim: (num_tiles as u32, hkv as u32, split.splits as u32),
        block_dim: (tc_threads(wgmma) as u32, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let mut b = dev.stream.launch_builder(f);
    b.arg(q)
        .arg(&pool.k)
        .arg(&pool.v)
        .arg(&table.indices)
        .arg(tiles)
        .arg(&mut *out)
        .arg(&mut *split.part_o)
        .arg(&mut *split.part_lse)
        .arg(&splits_i)
        .arg(&tokens_i)
        .arg(&hkv_i)
        .arg(&g_i)
        .arg(&page_i)
        .arg(&kopts);
    // SAFETY: argument order and types match PAL_PREFILL_PARAMS (prefill_tile.cuh), the one
    // parameter list of `pal_prefill_tc` and `pal_prefill_wg` (q, out and the pool share one
    // 16-bit dtype, checked by the plan); page ids were validated against the pool, and every
    // tile's query rows and key range lie within its sequence (the plan checked qo_indptr
    // against the table).
    unsafe { b.launch(cfg) }.map_err(fail)?;
    if split.splits > 1 {
        let rows = (split.tokens * heads.num_qo_heads) as i64;
        let mcfg =
            LaunchConfig { grid_dim: ((rows as u32).div_ceil(4), 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let mut m = dev.stream.launch_builder(kernels.get("pal_prefill_merge")?);
        m.arg(&*split.part_o).arg(&*split.part_lse).arg(out).arg(&splits_i).arg(&rows);
        // SAFETY: the workspace holds `splits` x rows partial states, all written by the launch
        // above (every valid row of every split); `out` holds rows x head_dim elements.
        unsafe { m.launch(mcfg) }.map_err(fail)?;
    }
    Ok(())
}

/// Validate like the CPU backend, then upload, prefill on the GPU, download. New K/V must be in
/// the pool (`new_kv: None`); ragged new K/V is not supported on the GPU yet.
pub fn paged_prefill_host<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    a: &crate::PrefillArgs<'_, Q, KV>,
    kernel: PrefillKernel,
    out: &mut [Q],
) -> Result<()> {
    let sh = validate::prefill(a, out.len())?;
    if a.new_kv.is_some() {
        return Err(PalError::DeviceUnavailable {
            device: "cuda".into(),
            reason: "ragged new K/V (`new_kv`) is not supported on the GPU yet; append first".into(),
        });
    }
    let pool = DevicePool::upload(dev, a.kv.k, a.kv.v, a.kv.layout)?;
    let table = DeviceTable::upload(dev, a.page_table, &a.kv.layout)?;
    let mut plan =
        CudaPrefillPlan::new(dev, a.qo_indptr, a.page_table, sh.heads, &a.opts, (Q::DTYPE, KV::DTYPE), kernel)?;
    let q = dev.upload(a.q)?;
    let mut o = dev.upload(out)?;
    paged_prefill(dev, &q, a.qo_indptr, &pool, &table, &mut plan, &a.opts, &mut o)?;
    out.copy_from_slice(&dev.download(&o)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_cores_take_16_bit_matching_dtypes_and_head_dims_divisible_by_16() {
        assert!(tensor_core_supports(DType::BF16, DType::BF16, 128));
        assert!(tensor_core_supports(DType::F16, DType::F16, 80));
        assert!(tensor_core_supports(DType::BF16, DType::BF16, 256));
        assert!(!tensor_core_supports(DType::F32, DType::F32, 128));
        assert!(!tensor_core_supports(DType::F16, DType::BF16, 128));
        assert!(!tensor_core_supports(DType::BF16, DType::BF16, 72));
        assert!(!tensor_core_supports(DType::BF16, DType::BF16, 272));
        // The wgmma kernel: the same dtypes, head dims 64 and 128 only.
        assert!(
            wgmma_prefill_supports(DType::BF16, DType::BF16, 128) && wgmma_prefill_supports(DType::F16, DType::F16, 64)
        );
        assert!(!wgmma_prefill_supports(DType::BF16, DType::BF16, 80));
        assert!(!wgmma_prefill_supports(DType::BF16, DType::BF16, 256));
        assert!(!wgmma_prefill_supports(DType::F32, DType::F32, 128));
        assert!(!wgmma_prefill_supports(DType::F16, DType::BF16, 128));
    }

    #[test]
    fn wgmma_variants_are_built_for_hopper_only() {
        use super::super::compile::{Family, Variant};
        let wg: Vec<Variant> = Variant::all().into_iter().filter(|v| v.family == Family::PrefillWg).collect();
        assert_eq!(wg.len(), 4, "f16/bf16 x head dims 64/128: {wg:?}");
        assert!(wg.iter().all(|v| wgmma_prefill_supports(v.q, v.kv, v.head_dim)));
        assert!(Family::PrefillWg.compiles_for("compute_90a"));
        assert!(!Family::PrefillWg.compiles_for("compute_80") && !Family::PrefillWg.compiles_for("compute_100"));
        assert!(Family::Prefill.compiles_for("compute_80"));
        let source = wg[0].source();
        assert!(source.contains("pal_prefill_wg") && source.contains("pal_prefill_merge"));
    }

    #[test]
    fn wgmma_tiles_are_wider_at_head_dim_64_and_two_blocks_fit_an_sm() {
        use super::super::compile::{Family, Variant};
        // Hopper: 228 KiB of shared memory per SM, 1 KiB of it reserved per block.
        let per_block_for_two = (228 - 2) * 1024 / 2;
        for v in Variant::all().into_iter().filter(|v| v.family == Family::PrefillWg) {
            let keys = if v.head_dim == 64 { 128 } else { 64 };
            assert!(v.source().contains(&format!("#define PAL_PREFILL_BN {keys}\n")), "{v:?}");
            let bytes = tc_shared_bytes(v.head_dim, v.group, true);
            assert!(bytes <= per_block_for_two, "{v:?}: {bytes} bytes");
            // The Q tile, both K/V buffers, slots and page ids, and the 1 KiB that aligns the swizzle.
            assert_eq!(bytes, 1024 + (128 + 4 * keys) * v.head_dim * 2 + 4 * keys * 4);
        }
    }

    #[test]
    fn tiles_cover_every_packed_row_once_long_sequences_together_then_longest_first() {
        let heads = HeadConfig::new(12, 4, 128).unwrap(); // group 3: rows straddle tokens
        let opts = AttentionOptions::default();
        // (first query token, new tokens, history, total): two sequences past
        // GROUP_TILES_FROM_KEYS (kept together), two short ones (interleaved), one with no new token.
        let seqs = [(0, 100, 2500, 2600), (100, 1, 0, 1), (101, 300, 33, 333), (401, 0, 5, 5), (401, 50, 3000, 3050)];
        let page_starts = [0, 7, 8, 29, 30];
        let (flat, n, mean) = tensor_core_tiles(&seqs, &page_starts, heads, &opts, tc_rows(128, false));
        assert_eq!(flat.len(), 6 * n);
        let mut covered = vec![Vec::new(); seqs.len()];
        let mut work = Vec::new();
        for t in flat.chunks(6) {
            let (b, q0, nn, total, row0) = (t[0] as usize, t[1], t[2], t[3], t[4] as usize);
            assert_eq!(t[5] as u32, page_starts[b]);
            assert_eq!((q0 as usize, nn as usize, total as usize), (seqs[b].0, seqs[b].1, seqs[b].3));
            let rows = seqs[b].1 * 3;
            let end = (row0 + tc_rows(128, false)).min(rows);
            covered[b].extend(row0..end);
            let last_token = (end - 1) / 3;
            work.push((b, seqs[b].2 + last_token + 1)); // causal: keys up to the tile's last token
        }
        for (b, c) in covered.iter_mut().enumerate() {
            c.sort();
            assert_eq!(*c, (0..seqs[b].1 * 3).collect::<Vec<_>>(), "sequence {b}");
        }
        // First the long sequences, longest first, each one's tiles together and longest first
        // (sequence 4: 2 tiles, then sequence 0: 3 tiles); then the short sequences' tiles by
        // key range, interleaved.
        let order: Vec<usize> = work.iter().map(|w| w.0).collect();
        assert_eq!(&order[..5], &[4, 4, 0, 0, 0], "{work:?}");
        assert!(work[..2].windows(2).all(|w| w[0].1 >= w[1].1) && work[2..5].windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(work[5..].iter().all(|w| w.0 == 1 || w.0 == 2));
        assert!(work[5..].windows(2).all(|w| w[0].1 >= w[1].1), "short tiles longest first: {work:?}");
        assert!(mean > 0);
    }

    #[test]
    fn splits_fill_the_gpu_only_when_tiles_are_few_and_long() {
        // 132 SMs, two blocks each: 264 slots.
        assert_eq!(tc_splits(264, 1024, 16384, 256), 1); // enough blocks already (97% full)
        assert_eq!(tc_splits(264, 128, 4096, 256), 2); // 256 blocks: one wave of 264 slots (3 would take 1.45)
        assert_eq!(tc_splits(264, 100, 4096, 256), 2); // 200 blocks (3: 300, two waves)
        assert_eq!(tc_splits(264, 40, 8192, 256), 5); // 200 blocks
        assert_eq!(tc_splits(264, 128, 300, 256), 1); // too few keys to split
        assert_eq!(tc_splits(264, 128, 768, 512), 1); // too few for the wgmma kernel
        assert_eq!(tc_splits(264, 128, 768, 256), 2);
        assert_eq!(tc_splits(264, 288, 16384, 512), 3); // 288 blocks: 55% full; 864 in 4 waves 82%
        assert_eq!(tc_splits(264, 600, 16384, 512), 1); // 600 blocks: 76% full
        assert_eq!(tc_splits(264, 1, 1 << 20, 256), 16); // capped
        assert_eq!(tc_splits(264, 0, 100, 256), 1);
    }
}
