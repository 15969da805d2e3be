//! The CUDA backend: kernels embedded as CUDA C++ source, compiled at first use by NVRTC for the
//! device's architecture (cached on disk), launched through cudarc with dynamic loading, so the
//! same binary runs with or without a GPU.
//!
//! - [`CudaDevice::probe`]: finds the driver and a GPU (a typed error, never a panic, without one).
//! - [`DevicePool`], [`DeviceTable`]: the KV pool and the page table in device memory.
//! - [`CudaDecodePlan`]: split-KV partition (one wave of the kernel's resident blocks), with its
//!   workspace, built once per step; [`paged_decode`] then allocates nothing and reads no host
//!   data. It runs one of three kernels ([`tuning::DecodeKernel`]): tensor cores for f16/bf16 GQA
//!   (`decode_tc.cu`), else K/V through registers (`decode.cu`), or that arithmetic behind a
//!   cp.async pipeline.
//! - [`paged_decode_host`]: validate, upload, run, download (tests and `pal selftest`).
//! - [`append_kv`] / [`append_kv_host`]: KV append with fused RoPE ([`DeviceRope`] holds the table).
//! - [`paged_prefill`] / [`paged_prefill_host`]: chunked prefill with history on tensor cores
//!   (mma.sync, FlashAttention-2 style) over the pages, with a row-by-row fallback for shapes the
//!   tensor-core kernel does not take ([`CudaPrefillPlan`], [`PrefillKernel`]).
//! - [`CudaDecodeStep`]: a decode step planned for the path a [`crate::dispatch::Dispatch`] picks,
//!   the fused kernel or gather-then-dense ([`CudaGatherDecode`]).

mod compile;
mod decode_step;
mod prefill;
mod toolkit;
pub mod tuning;

pub use compile::{compile as compile_variant, Family, Variant};
pub use decode_step::{paged_decode_host_dispatch, CudaDecodeStep, CudaGatherDecode};
pub use prefill::{
    paged_prefill, paged_prefill_host, tensor_core_supports, wgmma_prefill_supports, CudaPrefillPlan, PrefillKernel,
};
pub use toolkit::{toolkit, Toolkit};

use crate::{validate, AppendArgs, DecodeArgs, DecodePlan, Rope, RopeStyle};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use pal_core::{AttentionOptions, DType, Element, HeadConfig, KvLayout, PageTable, PagedKvMut, PalError, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn fail(e: impl std::fmt::Debug) -> PalError {
    PalError::DeviceFailure { device: "cuda".into(), reason: format!("{e:?}") }
}

/// A GPU with its stream and compiled modules.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    arch: &'static str,
    sm_count: usize,
    kernels: Mutex<HashMap<Variant, Arc<Kernels>>>,
    /// Stands in for buffers a kernel is told not to read (the RoPE table without RoPE).
    placeholder: CudaSlice<f32>,
}

/// Virtual architecture to compile for, from the compute capability.
fn arch_for(cc: (i32, i32)) -> &'static str {
    match cc {
        (9, 0) => "compute_90a",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        (8, 9) => "compute_89",
        (8, 6) => "compute_86",
        (8, 0) => "compute_80",
        (7, 5) => "compute_75",
        _ => "compute_80",
    }
}

impl CudaDevice {
    /// Open GPU 0. Fails with [`PalError::DeviceUnavailable`] when there is no driver or no GPU.
    pub fn probe() -> Result<Self> {
        let unavailable = |reason: String| PalError::DeviceUnavailable { device: "cuda".into(), reason };
        // SAFETY: only tries to dlopen the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(unavailable("no CUDA driver (libcuda) on this machine".into()));
        }
        let n = CudaContext::device_count().map_err(|e| unavailable(format!("{e:?}")))?;
        if n < 1 {
            return Err(unavailable("the driver reports no GPU".into()));
        }
        toolkit().map_err(unavailable)?;
        let ctx = CudaContext::new(0).map_err(|e| unavailable(format!("{e:?}")))?;
        let name = ctx.name().map_err(fail)?;
        let cc = ctx.compute_capability().map_err(fail)?;
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(fail)? as usize;
        // One stream of our own (the legacy default stream cannot be captured into a graph). All
        // work of a `CudaDevice` is ordered on it, so cudarc's cross-stream event tracking is not
        // needed, and it would insert event waits into graph captures.
        // SAFETY: nothing in PAL uses a second stream of this context.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| unavailable(format!("{e:?}")))?;
        let placeholder = stream.alloc_zeros::<f32>(1).map_err(fail)?;
        Ok(CudaDevice {
            placeholder,
            ctx,
            stream,
            name,
            arch: arch_for(cc),
            sm_count,
            kernels: Mutex::new(HashMap::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn sm_count(&self) -> usize {
        self.sm_count
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    /// The virtual architecture kernels are compiled for (`compute_90a` on Hopper).
    pub fn arch(&self) -> &'static str {
        self.arch
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(fail)
    }

    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return Err(PalError::invalid("upload", "cannot place an empty buffer on the device"));
        }
        self.stream.clone_htod(host).map_err(fail)
    }
    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(dev).map_err(fail)
    }
    pub fn zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(n.max(1)).map_err(fail)
    }

    /// The kernels of `variant` (every entry point of its family), compiled on first use.
    fn kernels(&self, variant: &Variant) -> Result<Arc<Kernels>> {
        let mut map = self.kernels.lock().map_err(|_| fail("kernel cache poisoned"))?;
        if let Some(k) = map.get(variant) {
            return Ok(k.clone());
        }
        let ptx = compile::compile(variant, self.arch).map_err(fail)?;
        let module = self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx)).map_err(fail)?;
        let functions = variant
            .family
            .entries()
            .iter()
            .map(|&name| module.load_function(name).map(|f| (name, f)).map_err(fail))
            .collect::<Result<Vec<_>>>()?;
        let k = Arc::new(Kernels { functions, _module: module });
        // Once per loaded module, not per launch: the opt-in above 48 KB of shared memory.
        match variant.family {
            Family::Prefill => prefill::allow_shared_memory(&k, variant.head_dim, variant.group, false)?,
            Family::PrefillWg => prefill::allow_shared_memory(&k, variant.head_dim, variant.group, true)?,
            Family::Decode => allow_shared(
                &k,
                "pal_decode_pipe",
                tuning::decode_shared_bytes(variant.head_dim, variant.kv.size(), variant.group),
            )?,
            Family::DecodeTc => {
                allow_shared(&k, "pal_decode_tc", tuning::decode_tc_shared_bytes(variant.head_dim, variant.kv.size()))?
            }
            Family::Append => {}
        }
        map.insert(variant.clone(), k.clone());
        Ok(k)
    }

    /// Device read bandwidth in GB/s: a streaming read of `src` (the decode ceiling), timed with
    /// CUDA events over `iters` launches.
    pub fn read_bandwidth(&self, src: &CudaSlice<u8>, iters: usize) -> Result<f64> {
        let ms = self.read_probe_ms(src, iters)?;
        Ok((src.len() / 16 * 16) as f64 / ms / 1e6)
    }

    /// Milliseconds per launch of the streaming-read probe over `src` (whole 16-byte words), mean
    /// over `iters` back-to-back launches: what reading that many bytes costs with nothing else to
    /// do, fixed costs (ramp-up, tail) included.
    pub fn read_probe_ms(&self, src: &CudaSlice<u8>, iters: usize) -> Result<f64> {
        let kernels = self.kernels(&Variant {
            family: Family::Decode,
            q: pal_core::DType::BF16,
            kv: pal_core::DType::BF16,
            head_dim: 128,
            group: 1,
        })?;
        let probe = kernels.get("pal_read_probe")?;
        let words = (src.len() / 16) as i64;
        let blocks = (self.sm_count * 8) as u32;
        let mut sink = self.zeros::<u32>(blocks as usize)?;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (512, 1, 1), shared_mem_bytes: 0 };
        self.time_ms(iters, || {
            let mut b = self.stream.launch_builder(probe);
            b.arg(src).arg(&words).arg(&mut sink);
            // SAFETY: `src` holds `words` 16-byte words; `sink` has one slot per block.
            unsafe { b.launch(cfg) }.map(|_| ()).map_err(fail)
        })
    }

    /// Device copy bandwidth in GB/s (bytes read plus bytes written) of a device-to-device copy of
    /// `src` into `dst` (the append ceiling).
    pub fn copy_bandwidth(&self, src: &CudaSlice<u8>, dst: &mut CudaSlice<u8>, iters: usize) -> Result<f64> {
        let n = src.len().min(dst.len());
        let ms = self.time_ms(iters, || self.stream.memcpy_dtod(src, dst).map_err(fail))?;
        Ok((2 * n) as f64 / ms / 1e6)
    }

    /// Dense bf16 matrix-multiply rate in TFLOP/s (cuBLAS, f32 accumulation, `n x n x n`): the
    /// compute ceiling of the tensor-core prefill. A typed error when cuBLAS cannot be loaded.
    pub fn matmul_tflops_bf16(&self, n: usize, iters: usize) -> Result<f64> {
        use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
        // SAFETY: only tries to dlopen the library.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(PalError::DeviceUnavailable {
                device: "cuda".into(),
                reason: "cuBLAS is not installed".into(),
            });
        }
        let blas = CudaBlas::new(self.stream.clone()).map_err(fail)?;
        // Random operands: zeros would let the tensor cores idle at lower power and flatter clocks.
        let mut rng = crate::testing::Rng::new(0x5eed);
        let host: Vec<half::bf16> = (0..n * n).map(|_| half::bf16::from_f32(rng.uniform())).collect();
        let a = self.upload(&host)?;
        let b = self.upload(&host)?;
        let mut c = self.zeros::<half::bf16>(n * n)?;
        let ni = n as i32;
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_N,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: ni,
            n: ni,
            k: ni,
            alpha: half::bf16::ONE,
            lda: ni,
            ldb: ni,
            beta: half::bf16::ZERO,
            ldc: ni,
        };
        let ms = self.time_ms(iters, || {
            // SAFETY: a, b and c each hold n * n elements, matching the configuration.
            unsafe { blas.gemm(cfg, &a, &b, &mut c) }.map_err(fail)
        })?;
        Ok(2.0 * (n as f64).powi(3) / ms / 1e9)
    }

    /// Mean milliseconds of `f` over `iters` runs, after 3 warm-up runs, timed with CUDA events.
    pub fn time_ms(&self, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        for _ in 0..3 {
            f()?;
        }
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.stream.record_event(flags).map_err(fail)?;
        for _ in 0..iters.max(1) {
            f()?;
        }
        let end = self.stream.record_event(flags).map_err(fail)?;
        end.synchronize().map_err(fail)?;
        Ok(start.elapsed_ms(&end).map_err(fail)? as f64 / iters.max(1) as f64)
    }
}

/// The loaded entry points of one variant (kept with their module).
struct Kernels {
    functions: Vec<(&'static str, CudaFunction)>,
    _module: Arc<CudaModule>,
}

impl Kernels {
    fn get(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.iter().find(|(n, _)| *n == name).map(|(_, f)| f).ok_or_else(|| fail(format!("no kernel {name}")))
    }
}

/// A KV pool (one layer) in device memory.
pub struct DevicePool<KV> {
    pub k: CudaSlice<KV>,
    pub v: CudaSlice<KV>,
    pub layout: KvLayout,
}

impl<KV: DeviceRepr> DevicePool<KV> {
    pub fn upload(dev: &CudaDevice, k: &[KV], v: &[KV], layout: KvLayout) -> Result<Self> {
        pal_core::check_len("k_cache", k.len(), layout.elems(), || format!("{layout:?}"))?;
        pal_core::check_len("v_cache", v.len(), layout.elems(), || format!("{layout:?}"))?;
        if layout.elems() == 0 {
            return Err(PalError::invalid("k_cache", "an empty pool cannot live on the device"));
        }
        Ok(DevicePool { k: dev.upload(k)?, v: dev.upload(v)?, layout })
    }
}

/// A page table in device memory, validated against a pool layout when made.
pub struct DeviceTable {
    pub host: PageTable,
    indptr: CudaSlice<i32>,
    indices: CudaSlice<i32>,
}

impl DeviceTable {
    pub fn upload(dev: &CudaDevice, table: &PageTable, layout: &KvLayout) -> Result<Self> {
        table.check_pool(layout.num_blocks)?;
        if table.block_size() != layout.block_size {
            return Err(PalError::invalid("page_table", "block size differs from the pool's"));
        }
        let to_i32 = |v: &[u32]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
        let mut indices = to_i32(table.indices());
        if indices.is_empty() {
            indices.push(0);
        }
        Ok(DeviceTable {
            host: table.clone(),
            indptr: dev.upload(&to_i32(table.indptr()))?,
            indices: dev.upload(&indices)?,
        })
    }
}

/// The device side of a split-KV partition, shared by decode and prefill: chunk `c` attends query
/// row `chunk_row[c]` to tokens `chunk_start[c]..chunk_end[c]` of page-table row `chunk_seq[c]`;
/// the chunks of query row `r` are `row_chunk_indptr[r]..row_chunk_indptr[r+1]`.
struct SplitWork {
    chunk_seq: CudaSlice<i32>,
    chunk_row: CudaSlice<i32>,
    chunk_start: CudaSlice<i32>,
    chunk_end: CudaSlice<i32>,
    row_chunk_indptr: CudaSlice<i32>,
    part_o: CudaSlice<f32>,
    part_lse: CudaSlice<f32>,
    /// One counter per (query row, KV head, query sub-group), zero between launches: the chunks
    /// of a row count themselves and the last one merges the row (split.cuh).
    merge_count: CudaSlice<i32>,
    num_chunks: usize,
    rows: usize,
    /// Every row has exactly one chunk: the kernel writes the output, no merge pass.
    direct: bool,
}

impl SplitWork {
    /// `chunks`: `(page-table row, query row, start, end)`, grouped by query row in order.
    fn upload(
        dev: &CudaDevice,
        chunks: &[(usize, usize, usize, usize)],
        rows: usize,
        heads: HeadConfig,
    ) -> Result<Self> {
        let col =
            |f: fn(&(usize, usize, usize, usize)) -> usize| chunks.iter().map(|c| f(c) as i32).collect::<Vec<i32>>();
        let mut indptr = vec![0i32; rows + 1];
        for c in chunks {
            indptr[c.1 + 1] += 1;
        }
        for r in 0..rows {
            indptr[r + 1] += indptr[r];
        }
        let n = chunks.len();
        Ok(SplitWork {
            chunk_seq: dev.upload(&col(|c| c.0))?,
            chunk_row: dev.upload(&col(|c| c.1))?,
            chunk_start: dev.upload(&col(|c| c.2))?,
            chunk_end: dev.upload(&col(|c| c.3))?,
            row_chunk_indptr: dev.upload(&indptr)?,
            part_o: dev.zeros(n * heads.num_qo_heads * heads.head_dim)?,
            part_lse: dev.zeros(n * heads.num_qo_heads)?,
            // Indexed like the launch grid (split.cuh): row, KV head, query sub-group.
            merge_count: dev.zeros((rows * heads.num_kv_heads * sub_groups(heads)).max(1))?,
            num_chunks: n,
            rows,
            direct: n == rows,
        })
    }
}

/// Split-KV decode partition for the GPU, with the workspace for partial states and the merge
/// counters. The workspace belongs to one launch at a time: launches of one plan on the same
/// stream (or replays of a graph captured from it) are fine, concurrent launches on two streams
/// are not (give each stream its own plan).
pub struct CudaDecodePlan {
    pub host: DecodePlan,
    heads: HeadConfig,
    /// (q, pool) storage types the plan was sized for; launches check them.
    dtypes: (DType, DType),
    work: SplitWork,
}

/// How a split-KV decode block finishes: `PAL_FINISH_*` in split.cuh (the kernels' `finish`).
const FINISH_PARTIAL: i32 = 0;
const FINISH_OUT: i32 = 1;
const FINISH_MERGE: i32 = 2;

/// Threads of a merge block; must equal `MERGE_THREADS` in decode.cu (the kernel strides by it).
const MERGE_THREADS: u32 = 128;
/// Threads of a decode block; must equal `WARPS * 32` in decode.cu.
const DECODE_THREADS: u32 = 128;
/// Smallest chunk worth a block of its own.
const MIN_CHUNK: usize = 128;

impl CudaDecodePlan {
    /// The partition for one decode step over `table`: one block per (sequence, KV head) when
    /// that already fills the SMs, else chunks sized so that the blocks fill every SM to the
    /// kernel's occupancy (asked from the driver for these dtypes and heads).
    pub fn new(
        dev: &CudaDevice,
        table: &PageTable,
        heads: HeadConfig,
        opts: &AttentionOptions,
        dtypes: (DType, DType),
    ) -> Result<Self> {
        heads.validate()?;
        // Without a split, blocks = sequences x KV heads x query sub-groups. When that already
        // fills the GPU, splitting only adds a merge pass: write the output directly.
        let unsplit_blocks = table.batch() * heads.num_kv_heads * sub_groups(heads);
        if unsplit_blocks >= dev.sm_count {
            return Self::with_chunk_tokens(dev, table, heads, opts, dtypes, usize::MAX);
        }
        let visible: Vec<usize> = table.seq_lens().iter().map(|&l| crate::plan::visible_range(l, opts).len()).collect();
        let slots = dev.sm_count * decode_blocks_per_sm(dev, heads, dtypes)?;
        let chunk = one_wave_chunk(&visible, heads.num_kv_heads * sub_groups(heads), slots, MIN_CHUNK);
        Self::with_chunk_tokens(dev, table, heads, opts, dtypes, chunk)
    }

    /// A plan with a fixed chunk length (tests force split-KV with small chunks).
    pub fn with_chunk_tokens(
        dev: &CudaDevice,
        table: &PageTable,
        heads: HeadConfig,
        opts: &AttentionOptions,
        dtypes: (DType, DType),
        chunk: usize,
    ) -> Result<Self> {
        heads.validate()?;
        let host = DecodePlan::with_partition(table, opts, chunk, 1);
        let chunks: Vec<_> = host.chunks().map(|(b, s, e)| (b, b, s, e)).collect();
        let work = SplitWork::upload(dev, &chunks, table.batch(), heads)?;
        Ok(CudaDecodePlan { host, heads, dtypes, work })
    }
}

/// The shortest chunk length (at least `min_chunk`) whose blocks fit in one wave of `slots`
/// resident blocks: each sequence of `lens[i]` visible tokens becomes `ceil(lens[i] / chunk)`
/// chunks of `blocks_per_chunk` blocks (KV heads x query sub-groups). One wave matters: with
/// `ceil(total / slots)` as the length, the rounding per sequence made a few blocks more than the
/// slots, and that second wave of long chunks ran after the first (10-20% of a B=8 decode).
fn one_wave_chunk(lens: &[usize], blocks_per_chunk: usize, slots: usize, min_chunk: usize) -> usize {
    let blocks = |c: usize| lens.iter().map(|&l| l.div_ceil(c).max(1)).sum::<usize>() * blocks_per_chunk;
    let longest = lens.iter().copied().max().unwrap_or(0);
    if longest <= min_chunk || blocks(min_chunk) <= slots {
        return min_chunk;
    }
    // blocks(c) falls as c grows; find the first c in (min_chunk, longest] that fits.
    let (mut lo, mut hi) = (min_chunk, longest);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if blocks(mid) <= slots {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The decode kernel specialisation for these heads and dtypes: one block computes
/// `block_group(group)` query heads.
fn decode_variant(heads: HeadConfig, (q, kv): (DType, DType)) -> Variant {
    Variant { family: Family::Decode, q, kv, head_dim: heads.head_dim, group: block_group(heads.group_size()) }
}

/// The attention kernel a decode launch runs: the module it lives in, its entry point and its
/// dynamic shared memory per block. The split-KV merge always comes from `decode_variant`.
fn decode_attention(heads: HeadConfig, dtypes: (DType, DType)) -> (Variant, &'static str, usize) {
    let v = decode_variant(heads, dtypes);
    let tc = tensor_core_supports(dtypes.0, dtypes.1, heads.head_dim);
    match tuning::decode_kernel(tc) {
        tuning::DecodeKernel::TensorCore => {
            let smem = tuning::decode_tc_shared_bytes(v.head_dim, v.kv.size());
            (Variant { family: Family::DecodeTc, ..v }, "pal_decode_tc", smem)
        }
        tuning::DecodeKernel::Pipelined => {
            let smem = tuning::decode_shared_bytes(v.head_dim, v.kv.size(), v.group);
            (v, "pal_decode_pipe", smem)
        }
        tuning::DecodeKernel::Register => (v, "pal_decode", 0),
    }
}

/// Resident decode blocks per SM: the driver's occupancy for the kernel (registers and shared
/// memory), unless `PAL_CUDA_BLOCKS_PER_SM` says otherwise.
fn decode_blocks_per_sm(dev: &CudaDevice, heads: HeadConfig, dtypes: (DType, DType)) -> Result<usize> {
    if let Some(b) = tuning::blocks_per_sm() {
        return Ok(b);
    }
    let (v, name, smem) = decode_attention(heads, dtypes);
    let kernels = dev.kernels(&v)?;
    let n =
        kernels.get(name)?.occupancy_max_active_blocks_per_multiprocessor(DECODE_THREADS, smem, None).map_err(fail)?;
    Ok((n as usize).max(1))
}

/// Let `name` launch with `bytes` of dynamic shared memory (above 48 KB needs the opt-in).
fn allow_shared(k: &Kernels, name: &str, bytes: usize) -> Result<()> {
    let attr = cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
    k.get(name)?.set_attribute(attr, bytes as i32).map_err(fail)
}

/// Options as the kernels take them (`repr(C)`, matches `AttnOpts` in common.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct KernelOpts {
    scale: f32,
    soft_cap: f32,
    window_left: i32,
    causal: i32,
}
// SAFETY: plain-old-data with the same layout as the CUDA struct.
unsafe impl DeviceRepr for KernelOpts {}

impl KernelOpts {
    fn new(o: &AttentionOptions, d: usize) -> Self {
        KernelOpts {
            scale: o.scale(d),
            soft_cap: o.logit_soft_cap.unwrap_or(0.0),
            window_left: o.window_left.map(|w| w.min(i32::MAX as u32) as i32).unwrap_or(-1),
            causal: o.causal as i32,
        }
    }
}

/// Decode blocks per KV head (the grid's z): the group split into blocks of [`block_group`] heads.
fn sub_groups(heads: HeadConfig) -> usize {
    heads.group_size() / block_group(heads.group_size())
}

/// Query heads per decode block: the group, or its largest divisor up to 8.
fn block_group(g: usize) -> usize {
    (1..=8.min(g)).rev().find(|s| g.is_multiple_of(*s)).unwrap_or(1)
}

/// Decode on device buffers. `q` and `out` are `[batch, num_qo_heads, head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn paged_decode<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    q: &CudaSlice<Q>,
    pool: &DevicePool<KV>,
    table: &DeviceTable,
    plan: &mut CudaDecodePlan,
    opts: &AttentionOptions,
    out: &mut CudaSlice<Q>,
) -> Result<()> {
    opts.validate()?;
    if plan.dtypes != (Q::DTYPE, KV::DTYPE) {
        return Err(PalError::invalid("plan", "was built for other dtypes of q and the pool"));
    }
    plan.host.check(&table.host, opts, plan.heads.num_kv_heads)?;
    if table.host.seq_lens().contains(&0) {
        return Err(PalError::invalid("page_table", "a sequence holds no token; decode needs at least one"));
    }
    launch_split(dev, q, pool, table, &mut plan.work, plan.heads, opts, out)
}

/// A plan's head counts must be the pool's.
fn check_pool_heads(layout: &KvLayout, heads: HeadConfig) -> Result<()> {
    if layout.num_kv_heads != heads.num_kv_heads || layout.head_dim != heads.head_dim {
        return Err(PalError::invalid("plan", "was built for other head counts than the pool's"));
    }
    Ok(())
}

/// The split-KV launch shared by decode and prefill: the attention kernel over every chunk, then
/// (unless each row is one chunk) the merge kernel over every query row.
#[allow(clippy::too_many_arguments)]
fn launch_split<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    q: &CudaSlice<Q>,
    pool: &DevicePool<KV>,
    table: &DeviceTable,
    work: &mut SplitWork,
    heads: HeadConfig,
    opts: &AttentionOptions,
    out: &mut CudaSlice<Q>,
) -> Result<()> {
    let (hq, hkv, d, g) = (heads.num_qo_heads, heads.num_kv_heads, heads.head_dim, heads.group_size());
    check_pool_heads(&pool.layout, heads)?;
    let rows = work.rows;
    pal_core::check_len("q", q.len(), rows * hq * d, || format!("[{rows}, {hq}, {d}]"))?;
    pal_core::check_len("out", out.len(), rows * hq * d, || format!("[{rows}, {hq}, {d}]"))?;
    if work.num_chunks == 0 {
        return Ok(());
    }
    let (attn_variant, entry, smem) = decode_attention(heads, (Q::DTYPE, KV::DTYPE));
    let attn = dev.kernels(&attn_variant)?;
    let fd = attn.get(entry)?;
    let kopts = KernelOpts::new(opts, d);
    let (hkv_i, g_i, page_i, hq_i) = (hkv as i32, g as i32, pool.layout.block_size as i32, hq as i32);
    // How blocks finish (split.cuh): write the output, or partials merged by the row's last
    // block, or (PAL_FUSED_MERGE=0) partials for the merge kernel below.
    let fused = tuning::fused_merge();
    let finish = match (work.direct, fused) {
        (true, _) => FINISH_OUT,
        (false, true) => FINISH_MERGE,
        (false, false) => FINISH_PARTIAL,
    };
    let cfg = LaunchConfig {
        grid_dim: (work.num_chunks as u32, hkv as u32, sub_groups(heads) as u32),
        block_dim: (DECODE_THREADS, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let mut b = dev.stream.launch_builder(fd);
    b.arg(q)
        .arg(&pool.k)
        .arg(&pool.v)
        .arg(&table.indptr)
        .arg(&table.indices)
        .arg(&work.chunk_seq)
        .arg(&work.chunk_row)
        .arg(&work.chunk_start)
        .arg(&work.chunk_end)
        .arg(&mut work.part_o)
        .arg(&mut work.part_lse)
        .arg(&mut *out)
        .arg(&work.row_chunk_indptr)
        .arg(&mut work.merge_count)
        .arg(&finish)
        .arg(&hkv_i)
        .arg(&g_i)
        .arg(&page_i)
        .arg(&kopts);
    // SAFETY: argument types and order match `pal_decode`, `pal_decode_pipe` and `pal_decode_tc`
    // (whose q/out type is the pool's: it is only chosen when they are equal); every buffer was
    // sized and every index validated on the host (page ids in the pool, chunk ranges within each
    // sequence).
    unsafe { b.launch(cfg) }.map_err(fail)?;
    if work.direct || fused {
        return Ok(());
    }
    // The merge kernel lives in the register kernel's module (compiled with the same dtypes).
    let merge = dev.kernels(&decode_variant(heads, (Q::DTYPE, KV::DTYPE)))?;
    let fm = merge.get("pal_merge")?;
    let mcfg =
        LaunchConfig { grid_dim: (rows as u32, hq as u32, 1), block_dim: (MERGE_THREADS, 1, 1), shared_mem_bytes: 0 };
    let mut m = dev.stream.launch_builder(fm);
    m.arg(&work.part_o).arg(&work.part_lse).arg(&work.row_chunk_indptr).arg(out).arg(&hq_i);
    // SAFETY: as above; `out` holds rows * hq * d elements.
    unsafe { m.launch(mcfg) }.map_err(fail)?;
    Ok(())
}

/// Capture one decode step (the decode and merge launches) into a CUDA graph. Replaying the graph
/// reruns the step on the same buffers, so the caller updates q and the pool in place between
/// replays. Run the step once before capturing, so that its kernels are already compiled.
#[allow(clippy::too_many_arguments)]
pub fn capture_decode<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    q: &CudaSlice<Q>,
    pool: &DevicePool<KV>,
    table: &DeviceTable,
    plan: &mut CudaDecodePlan,
    opts: &AttentionOptions,
    out: &mut CudaSlice<Q>,
) -> Result<cudarc::driver::CudaGraph> {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    dev.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(fail)?;
    let run = paged_decode(dev, q, pool, table, plan, opts, out);
    let graph = dev.stream.end_capture(CUgraphInstantiate_flags(0)).map_err(fail);
    run?;
    graph?.ok_or_else(|| fail("the capture recorded no work"))
}

/// Validate on the host exactly like the CPU backend, then upload, decode on the GPU, download.
/// `chunk_tokens` forces a split-KV chunk length (`None`: the device plan).
pub fn paged_decode_host<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    a: &DecodeArgs<'_, Q, KV>,
    chunk_tokens: Option<usize>,
    out: &mut [Q],
) -> Result<()> {
    with_uploaded_decode(dev, a, out, |heads, pool, table, q, o| {
        let dtypes = (Q::DTYPE, KV::DTYPE);
        let mut plan = match chunk_tokens {
            Some(c) => CudaDecodePlan::with_chunk_tokens(dev, a.page_table, heads, &a.opts, dtypes, c)?,
            None => CudaDecodePlan::new(dev, a.page_table, heads, &a.opts, dtypes)?,
        };
        paged_decode(dev, q, pool, table, &mut plan, &a.opts, o)
    })
}

/// [`paged_decode_host`] through a CUDA graph: run once, poison the output, capture the step,
/// replay the graph, download. Shows that a decode step is capturable and replays correctly.
pub fn paged_decode_host_graph<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    a: &DecodeArgs<'_, Q, KV>,
    out: &mut [Q],
) -> Result<()> {
    with_uploaded_decode(dev, a, out, |heads, pool, table, q, o| {
        let mut plan = CudaDecodePlan::new(dev, a.page_table, heads, &a.opts, (Q::DTYPE, KV::DTYPE))?;
        paged_decode(dev, q, pool, table, &mut plan, &a.opts, o)?;
        let poison = vec![Q::poison(); o.len()];
        dev.stream.memcpy_htod(&poison, o).map_err(fail)?;
        let graph = capture_decode(dev, q, pool, table, &mut plan, &a.opts, o)?;
        graph.launch().map_err(fail)
    })
}

/// The host wrappers' common frame: validate `a` exactly like the CPU backend, upload the pool,
/// the page table, q and `out`, run `step` on them, download the result into `out`.
fn with_uploaded_decode<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    a: &DecodeArgs<'_, Q, KV>,
    out: &mut [Q],
    step: impl FnOnce(HeadConfig, &DevicePool<KV>, &DeviceTable, &CudaSlice<Q>, &mut CudaSlice<Q>) -> Result<()>,
) -> Result<()> {
    let sh = validate::decode(a, out.len())?;
    let pool = DevicePool::upload(dev, a.kv.k, a.kv.v, a.kv.layout)?;
    let table = DeviceTable::upload(dev, a.page_table, &a.kv.layout)?;
    let q = dev.upload(a.q)?;
    let mut o = dev.upload(out)?;
    step(sh.heads, &pool, &table, &q, &mut o)?;
    let host = dev.download(&o)?;
    out.copy_from_slice(&host);
    Ok(())
}

/// Gather-then-dense baseline on the GPU, step 1: copy every sequence of `table` into `dst`
/// (a pool whose block `b` holds sequence `b`, block size = the longest sequence).
pub fn gather<KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    pool: &DevicePool<KV>,
    table: &DeviceTable,
    seq_lens: &CudaSlice<i32>,
    dst: &mut DevicePool<KV>,
) -> Result<()> {
    let batch = table.host.batch();
    let max_len = table.host.seq_lens().iter().copied().max().unwrap_or(0);
    if dst.layout.num_blocks != batch
        || dst.layout.block_size != max_len.max(1)
        || dst.layout.token_stride() != pool.layout.token_stride()
    {
        return Err(PalError::invalid(
            "dst",
            "must be a pool of one block per sequence, block size = longest sequence",
        ));
    }
    if !(pool.layout.token_stride() * std::mem::size_of::<KV>()).is_multiple_of(16) {
        return Err(PalError::invalid("k_cache", "token rows must be a multiple of 16 bytes"));
    }
    pal_core::check_len("seq_lens", seq_lens.len(), batch, || format!("[{batch}]"))?;
    let variant =
        Variant { family: Family::Decode, q: KV::DTYPE, kv: KV::DTYPE, head_dim: pool.layout.head_dim, group: 1 };
    let kernels = dev.kernels(&variant)?;
    let max_pages = table.host.seq_lens().iter().map(|l| l.div_ceil(pool.layout.block_size)).max().unwrap_or(0);
    let (page_i, max_i, tok_i) = (pool.layout.block_size as i32, max_len as i32, pool.layout.token_stride() as i32);
    let cfg = LaunchConfig {
        grid_dim: (batch as u32, max_pages.max(1) as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = dev.stream.launch_builder(kernels.get("pal_gather")?);
    b.arg(&pool.k)
        .arg(&pool.v)
        .arg(&table.indptr)
        .arg(&table.indices)
        .arg(seq_lens)
        .arg(&mut dst.k)
        .arg(&mut dst.v)
        .arg(&page_i)
        .arg(&max_i)
        .arg(&tok_i);
    // SAFETY: page ids were checked against the pool; `dst` holds batch * max_len token rows.
    unsafe { b.launch(cfg) }.map_err(fail)?;
    Ok(())
}

/// A RoPE cos/sin table in device memory.
pub struct DeviceRope {
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
    head_dim: usize,
    rotary_dim: usize,
    max_position: usize,
    style: RopeStyle,
}

impl DeviceRope {
    pub fn upload(dev: &CudaDevice, rope: &Rope) -> Result<Self> {
        let (c, s) = rope.tables();
        Ok(DeviceRope {
            cos: dev.upload(c)?,
            sin: dev.upload(s)?,
            head_dim: rope.head_dim(),
            rotary_dim: rope.rotary_dim(),
            max_position: rope.max_position(),
            style: rope.config().style,
        })
    }
}

/// New tokens for [`append_kv`] in device memory. `slots` uses -1 for padding (the host API takes
/// `Option<u32>`; [`append_kv_host`] converts).
pub struct DeviceAppend<'a, Q> {
    pub q: &'a mut CudaSlice<Q>,
    pub k: &'a CudaSlice<Q>,
    pub v: &'a CudaSlice<Q>,
    pub positions: &'a CudaSlice<i32>,
    pub slots: &'a CudaSlice<i32>,
    pub tokens: usize,
    pub num_qo_heads: usize,
}

/// Append on device buffers: rotate q in place, write rotated k and v into their slots. Tokens
/// whose slot or position is out of range are skipped on the device; [`append_kv_host`] rejects
/// them (and duplicate slots) with a typed error first.
pub fn append_kv<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    a: DeviceAppend<'_, Q>,
    rope: Option<&DeviceRope>,
    pool: &mut DevicePool<KV>,
) -> Result<()> {
    let (t, hq, hkv, d) = (a.tokens, a.num_qo_heads, pool.layout.num_kv_heads, pool.layout.head_dim);
    HeadConfig::new(hq, hkv, d)?;
    pal_core::check_len("q", a.q.len(), t * hq * d, || format!("[{t}, {hq}, {d}]"))?;
    pal_core::check_len("k", a.k.len(), t * hkv * d, || format!("[{t}, {hkv}, {d}]"))?;
    pal_core::check_len("v", a.v.len(), t * hkv * d, || format!("[{t}, {hkv}, {d}]"))?;
    pal_core::check_len("positions", a.positions.len(), t, || format!("[{t}]"))?;
    pal_core::check_len("slots", a.slots.len(), t, || format!("[{t}]"))?;
    if let Some(r) = rope {
        if r.head_dim != d {
            return Err(PalError::invalid("rope", format!("built for head_dim {}, pool has {d}", r.head_dim)));
        }
    }
    let kernels =
        dev.kernels(&Variant { family: Family::Append, q: Q::DTYPE, kv: KV::DTYPE, head_dim: d, group: 1 })?;
    // Without RoPE the kernel never reads the table.
    let (cos, sin) = match rope {
        Some(r) => (&r.cos, &r.sin),
        None => (&dev.placeholder, &dev.placeholder),
    };
    let (hq_i, hkv_i) = (hq as i32, hkv as i32);
    let rot = rope.map(|r| r.rotary_dim as i32).unwrap_or(0);
    let style = rope.map(|r| i32::from(r.style == RopeStyle::HalfSplit)).unwrap_or(0);
    let use_rope = i32::from(rope.is_some());
    let num_slots = pool.layout.num_slots() as i64;
    let max_pos = rope.map(|r| r.max_position.min(i32::MAX as usize) as i32).unwrap_or(0);
    // The vectorised kernel needs whole 16-byte words in each rotated half (rotary_dim % 16 == 0).
    let vectorised = rope.is_none_or(|r| r.rotary_dim % 16 == 0);
    let t_i = t as i32;
    let mut b;
    let cfg;
    if vectorised {
        cfg = LaunchConfig {
            grid_dim: (t.div_ceil(tuning::append_tokens_per_block()) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        b = dev.stream.launch_builder(kernels.get("pal_append_vec")?);
        b.arg(a.q).arg(a.k).arg(a.v).arg(a.positions).arg(a.slots).arg(cos).arg(sin);
        b.arg(&mut pool.k).arg(&mut pool.v).arg(&t_i).arg(&hq_i).arg(&hkv_i).arg(&rot).arg(&style).arg(&use_rope);
    } else {
        cfg = LaunchConfig { grid_dim: (t as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        b = dev.stream.launch_builder(kernels.get("pal_append")?);
        b.arg(a.q).arg(a.k).arg(a.v).arg(a.positions).arg(a.slots).arg(cos).arg(sin);
        b.arg(&mut pool.k).arg(&mut pool.v).arg(&hq_i).arg(&hkv_i).arg(&rot).arg(&style).arg(&use_rope);
    }
    b.arg(&num_slots).arg(&max_pos);
    // SAFETY: buffer sizes checked above; the kernel skips tokens whose slot or position lies
    // outside the pool or the table. Duplicate slots (a race) are rejected by `append_kv_host`;
    // direct callers must not pass them.
    unsafe { b.launch(cfg) }.map_err(fail)?;
    Ok(())
}

/// Validate exactly like the CPU backend, then upload, append on the GPU, and download q and the
/// pool back into the host buffers.
pub fn append_kv_host<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    a: AppendArgs<'_, Q>,
    cache: &mut PagedKvMut<'_, KV>,
) -> Result<()> {
    let heads = validate::append(&a, &cache.layout, cache.k.len(), cache.v.len())?;
    let t = a.positions.len();
    let mut pool = DevicePool::upload(dev, cache.k, cache.v, cache.layout)?;
    let rope = a.rope.map(|r| DeviceRope::upload(dev, r)).transpose()?;
    if let Some(r) = &rope {
        if r.max_position == 0 {
            return Err(PalError::invalid("rope", "empty table"));
        }
    }
    let mut q = dev.upload(a.q)?;
    let k = dev.upload(a.k)?;
    let v = dev.upload(a.v)?;
    let positions = dev.upload(&a.positions.iter().map(|&p| p as i32).collect::<Vec<_>>())?;
    let slots = dev.upload(&a.slots.iter().map(|s| s.map(|x| x as i32).unwrap_or(-1)).collect::<Vec<_>>())?;
    let da = DeviceAppend {
        q: &mut q,
        k: &k,
        v: &v,
        positions: &positions,
        slots: &slots,
        tokens: t,
        num_qo_heads: heads.num_qo_heads,
    };
    append_kv(dev, da, rope.as_ref(), &mut pool)?;
    a.q.copy_from_slice(&dev.download(&q)?);
    cache.k.copy_from_slice(&dev.download(&pool.k)?);
    cache.v.copy_from_slice(&dev.download(&pool.v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::one_wave_chunk;

    #[test]
    fn one_wave_chunk_fills_the_slots_without_a_second_wave() {
        // Llama B=8, 32k tokens, 8 KV heads, 528 slots: 8 chunks of 4096 per sequence = 512 blocks
        // (the old ceil(total / slots) = 3971 made 9 chunks, 576 blocks).
        let c = one_wave_chunk(&[32768; 8], 8, 528, 128);
        assert_eq!(c, 4096);
        // Shortest such chunk: one token less needs a ninth chunk.
        assert!(32768usize.div_ceil(c - 1) * 64 > 528);
        // B=1: 66 chunks per head fit.
        let c = one_wave_chunk(&[32768], 8, 528, 128);
        assert!(32768usize.div_ceil(c) * 8 <= 528 && 32768usize.div_ceil(c - 1) * 8 > 528);
        // Mixed lengths: the total stays within the slots.
        let lens = [100, 5000, 70000, 3, 12345];
        let c = one_wave_chunk(&lens, 3, 660, 128);
        assert!(lens.iter().map(|l| l.div_ceil(c).max(1)).sum::<usize>() * 3 <= 660);
        // Short sequences never go below the minimum chunk.
        assert_eq!(one_wave_chunk(&[50, 60], 8, 528, 128), 128);
        assert_eq!(one_wave_chunk(&[1000], 1, 528, 128), 128);
    }
}
