//! Test support shared by the integration tests and `pal selftest`: random fixtures with
//! fragmented block ids and poisoned pool padding, error statistics against the reference, and the
//! correctness grid (seed cases plus awkward random shapes).
//!
//! Poisoning: every pool slot that no sequence owns (spacer blocks, the tail of last pages) holds
//! NaN, and outputs are filled with NaN before a kernel runs, so a kernel that reads a wrong slot or
//! skips a write produces NaN and fails the comparison.

use crate::cuda::PrefillKernel;
use crate::dispatch::{self, AttentionPath, Dispatch};
use crate::{cpu, reference, DecodeArgs, DecodePlan, PrefillArgs, PrefillPlan, RaggedKv};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, KvLayout, PageTable, PagedKv, Result};

/// SplitMix64: tiny, seedable, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
    pub fn fill<T: Element>(&mut self, n: usize, scale: f32) -> Vec<T> {
        (0..n).map(|_| T::from_f32(self.uniform() * scale)).collect()
    }
}

/// A seed that differs on every run unless `PAL_TEST_SEED` pins it.
pub fn fresh_seed() -> u64 {
    if let Some(s) = std::env::var("PAL_TEST_SEED").ok().and_then(|s| s.parse().ok()) {
        return s;
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as u64) ^ ((t >> 64) as u64) ^ (std::process::id() as u64).rotate_left(32)
}

/// A paged pool whose sequences own randomly scattered blocks, with every unowned slot poisoned.
pub struct PagedFixture<KV> {
    pub k: Vec<KV>,
    pub v: Vec<KV>,
    pub layout: KvLayout,
    pub page_table: PageTable,
}

impl<KV: Element> PagedFixture<KV> {
    /// `seq_lens` tokens per sequence; `fragmented` scatters the blocks among as many unused
    /// (poisoned) spacer blocks, otherwise blocks are handed out in order.
    pub fn new(
        rng: &mut Rng,
        seq_lens: &[usize],
        num_kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        fragmented: bool,
    ) -> Result<Self> {
        let pages: Vec<usize> = seq_lens.iter().map(|l| l.div_ceil(block_size)).collect();
        let used: usize = pages.iter().sum();
        let num_blocks = if fragmented { 2 * used + 1 } else { used };
        let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
        if fragmented {
            rng.shuffle(&mut ids);
        }
        let mut next = 0;
        let lists: Vec<Vec<u32>> = pages
            .iter()
            .map(|&p| {
                let l = ids[next..next + p].to_vec();
                next += p;
                l
            })
            .collect();
        let page_table = PageTable::from_lists(&lists, seq_lens, block_size)?;
        let layout = KvLayout::new(num_blocks, block_size, num_kv_heads, head_dim)?;
        let mut k = vec![KV::poison(); layout.elems()];
        let mut v = vec![KV::poison(); layout.elems()];
        for (b, &len) in seq_lens.iter().enumerate() {
            for pos in 0..len {
                let off = layout.row_offset(page_table.slot(b, pos), 0);
                for x in &mut k[off..off + layout.token_stride()] {
                    *x = KV::from_f32(rng.uniform());
                }
                for x in &mut v[off..off + layout.token_stride()] {
                    *x = KV::from_f32(rng.uniform());
                }
            }
        }
        Ok(PagedFixture { k, v, layout, page_table })
    }

    pub fn view(&self) -> PagedKv<'_, KV> {
        PagedKv { k: &self.k, v: &self.v, layout: self.layout }
    }
}

/// Error of an output against the reference, both read as f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrStats {
    pub max_abs: f64,
    pub rms: f64,
    /// Largest `|err| - rtol*|ref|` excess over `atol` (<= 0 means within tolerance).
    pub worst_excess: f64,
    pub non_finite: usize,
}

/// Tolerances by output dtype: atol + rtol * |ref| per element, and an RMS bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
    pub rms: f64,
}

impl Tolerance {
    pub fn for_dtype(d: DType) -> Self {
        match d {
            DType::F32 => Tolerance { atol: 1e-5, rtol: 1e-5, rms: 2e-6 },
            DType::F16 => Tolerance { atol: 2e-3, rtol: 1e-3, rms: 5e-4 },
            DType::BF16 => Tolerance { atol: 1e-2, rtol: 1e-4, rms: 5e-3 },
        }
    }
}

impl ErrStats {
    pub fn compare<T: Element>(got: &[T], want: &[T], tol: &Tolerance) -> Self {
        let mut s = ErrStats { worst_excess: f64::NEG_INFINITY, ..Default::default() };
        let mut sq = 0.0;
        for (g, w) in got.iter().zip(want) {
            let (g, w) = (g.to_f64(), w.to_f64());
            if !g.is_finite() {
                s.non_finite += 1;
                continue;
            }
            let e = (g - w).abs();
            s.max_abs = s.max_abs.max(e);
            s.worst_excess = s.worst_excess.max(e - tol.rtol * w.abs() - tol.atol);
            sq += e * e;
        }
        s.rms = (sq / got.len().max(1) as f64).sqrt();
        if got.len() != want.len() {
            s.non_finite += got.len().abs_diff(want.len());
        }
        s
    }
    pub fn passes(&self, tol: &Tolerance) -> bool {
        self.non_finite == 0 && self.worst_excess <= 0.0 && self.rms <= tol.rms
    }
}

/// The backends a case is checked on (the reference is the oracle, never checked against itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    /// The CPU kernels with a plan that forces split-KV, so the merge path is exercised.
    CpuSplit,
    Gather,
    /// The CUDA kernels with the device's own plan (prefill: tensor cores where they apply).
    Cuda,
    /// The CUDA kernels forced into split-KV and the merge kernel (decode: chunks of 7 tokens;
    /// prefill: 3 key splits per tensor-core tile, or the row path in chunks of 7).
    CudaSplit,
    /// Decode: one chunk per sequence, the decode kernel writes the output itself. Prefill: the
    /// row-by-row fallback with whole rows.
    CudaWhole,
    /// The CUDA decode step captured into a CUDA graph and replayed.
    CudaGraph,
    /// The CUDA decode step forced onto the gather path (`Dispatch::Force(Gather)`).
    CudaGather,
    /// Prefill only: the mma.sync tensor-core kernel even where the wgmma one is the device's
    /// choice (Hopper), so both kernels stay checked.
    CudaMma,
}

impl Backend {
    /// The CPU-side backends.
    pub const ALL: [Backend; 3] = [Backend::Cpu, Backend::CpuSplit, Backend::Gather];
    /// The GPU backends.
    pub const CUDA: [Backend; 6] = [
        Backend::Cuda,
        Backend::CudaSplit,
        Backend::CudaWhole,
        Backend::CudaGraph,
        Backend::CudaGather,
        Backend::CudaMma,
    ];
    /// Whether this backend runs `case` yet (the GPU has no ragged-K/V prefill, and its graph
    /// variant is decode-only).
    pub fn supports(self, case: &AttnCase) -> bool {
        match self {
            Backend::Cpu | Backend::CpuSplit | Backend::Gather => true,
            Backend::Cuda | Backend::CudaSplit | Backend::CudaWhole => case.new_lens.is_none() || !case.ragged_new,
            Backend::CudaGraph | Backend::CudaGather => case.new_lens.is_none(),
            Backend::CudaMma => {
                case.new_lens.is_some()
                    && !case.ragged_new
                    && crate::cuda::tensor_core_supports(case.dtype, case.dtype, case.head_dim)
            }
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::CpuSplit => "cpu-split",
            Backend::Gather => "gather",
            Backend::Cuda => "cuda",
            Backend::CudaSplit => "cuda-split",
            Backend::CudaWhole => "cuda-whole",
            Backend::CudaGraph => "cuda-graph",
            Backend::CudaGather => "cuda-gather",
            Backend::CudaMma => "cuda-mma",
        }
    }
}

/// One attention correctness case.
#[derive(Clone, Debug, PartialEq)]
pub struct AttnCase {
    pub name: String,
    /// Decode: tokens of each sequence. Prefill: history before the new tokens.
    pub kv_lens: Vec<usize>,
    /// `None` for decode; new tokens per sequence for prefill.
    pub new_lens: Option<Vec<usize>>,
    /// Prefill only: keep new K/V in a ragged buffer instead of the pool.
    pub ragged_new: bool,
    pub hq: usize,
    pub hkv: usize,
    pub head_dim: usize,
    pub page: usize,
    pub dtype: DType,
    pub opts: AttentionOptions,
    /// Multiplies q, so that softmax is peaked rather than flat.
    pub q_scale: f32,
}

impl AttnCase {
    pub fn decode(
        name: impl Into<String>,
        kv_lens: Vec<usize>,
        hq: usize,
        hkv: usize,
        head_dim: usize,
        page: usize,
        dtype: DType,
    ) -> Self {
        AttnCase {
            name: name.into(),
            kv_lens,
            new_lens: None,
            ragged_new: false,
            hq,
            hkv,
            head_dim,
            page,
            dtype,
            opts: AttentionOptions::default(),
            q_scale: 1.0,
        }
    }
    #[allow(clippy::too_many_arguments)]
    pub fn prefill(
        name: impl Into<String>,
        hist: Vec<usize>,
        new: Vec<usize>,
        hq: usize,
        hkv: usize,
        head_dim: usize,
        page: usize,
        dtype: DType,
    ) -> Self {
        AttnCase { new_lens: Some(new), ..Self::decode(name, hist, hq, hkv, head_dim, page, dtype) }
    }
    pub fn op(&self) -> &'static str {
        if self.new_lens.is_some() {
            "prefill"
        } else {
            "decode"
        }
    }
    /// Short description of the shape.
    pub fn shape(&self) -> String {
        let b = self.kv_lens.len();
        let lens = |v: &[usize]| {
            if v.len() <= 4 {
                format!("{v:?}")
            } else {
                format!("[{}..{}]x{}", v.iter().min().unwrap(), v.iter().max().unwrap(), v.len())
            }
        };
        let mut s = format!(
            "B={b} kv={} Hq={} Hkv={} D={} page={} {}",
            lens(&self.kv_lens),
            self.hq,
            self.hkv,
            self.head_dim,
            self.page,
            self.dtype
        );
        if let Some(n) = &self.new_lens {
            s += &format!(" new={}", lens(n));
        }
        if self.ragged_new {
            s += " ragged";
        }
        if let Some(w) = self.opts.window_left {
            s += &format!(" window={w}");
        }
        if let Some(c) = self.opts.logit_soft_cap {
            s += &format!(" softcap={c}");
        }
        if !self.opts.causal {
            s += " non-causal";
        }
        s
    }
}

/// Result of one backend on one case.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub backend: Backend,
    pub err: ErrStats,
    pub pass: bool,
    /// Bitwise-equal output on a second call.
    pub deterministic: bool,
}

/// Run `case` on `backends` with fresh data from `seed`, comparing each to the reference.
pub fn run_case(case: &AttnCase, seed: u64, backends: &[Backend]) -> Result<Vec<Outcome>> {
    run_case_on(case, seed, backends, None)
}

/// [`run_case`] with a GPU for the CUDA backends (which are skipped for ops they do not run).
pub fn run_case_on(
    case: &AttnCase,
    seed: u64,
    backends: &[Backend],
    gpu: Option<&crate::cuda::CudaDevice>,
) -> Result<Vec<Outcome>> {
    let backends: Vec<Backend> = backends.iter().copied().filter(|b| b.supports(case)).collect();
    match case.dtype {
        DType::F32 => run_typed::<f32>(case, seed, &backends, gpu),
        DType::F16 => run_typed::<f16>(case, seed, &backends, gpu),
        DType::BF16 => run_typed::<bf16>(case, seed, &backends, gpu),
    }
}

fn no_gpu() -> pal_core::PalError {
    pal_core::PalError::DeviceUnavailable { device: "cuda".into(), reason: "no GPU was given to the test".into() }
}

fn run_typed<T: Element + cudarc::driver::DeviceRepr>(
    case: &AttnCase,
    seed: u64,
    backends: &[Backend],
    gpu: Option<&crate::cuda::CudaDevice>,
) -> Result<Vec<Outcome>> {
    let mut rng = Rng::new(seed);
    let tol = Tolerance::for_dtype(case.dtype);
    let d = case.head_dim;
    let new = case.new_lens.clone();
    // Tokens in the pool: decode = kv_lens; prefill = history (+ new unless ragged).
    let pool_lens: Vec<usize> = match (&new, case.ragged_new) {
        (Some(n), false) => case.kv_lens.iter().zip(n).map(|(h, n)| h + n).collect(),
        _ => case.kv_lens.clone(),
    };
    let fx = PagedFixture::<T>::new(&mut rng, &pool_lens, case.hkv, d, case.page, true)?;
    let mut outcomes = Vec::new();
    let poisoned = |n: usize| vec![T::poison(); n];
    match new {
        None => {
            let q: Vec<T> = rng.fill(case.kv_lens.len() * case.hq * d, case.q_scale);
            let a =
                DecodeArgs { q: &q, num_qo_heads: case.hq, kv: fx.view(), page_table: &fx.page_table, opts: case.opts };
            let mut want = poisoned(q.len());
            reference::paged_decode(&a, &mut want)?;
            for &be in backends {
                let run = |out: &mut [T]| -> Result<()> {
                    match be {
                        // The CPU paths go through the dispatch: Auto (the fused kernel) and the
                        // forced gather path.
                        Backend::Cpu | Backend::Gather => {
                            let plan =
                                DecodePlan::new(&fx.page_table, case.hkv, &case.opts, rayon::current_num_threads());
                            let dispatch = if be == Backend::Cpu {
                                Dispatch::Auto
                            } else {
                                Dispatch::Force(AttentionPath::Gather)
                            };
                            dispatch::paged_decode(&a, &plan, dispatch, out).map(|_| ())
                        }
                        Backend::CpuSplit => {
                            let plan = DecodePlan::with_partition(&fx.page_table, &case.opts, 7, case.hkv);
                            cpu::paged_decode(&a, &plan, out)
                        }
                        Backend::Cuda => crate::cuda::paged_decode_host(gpu.ok_or_else(no_gpu)?, &a, None, out),
                        Backend::CudaSplit => crate::cuda::paged_decode_host(gpu.ok_or_else(no_gpu)?, &a, Some(7), out),
                        Backend::CudaWhole => {
                            crate::cuda::paged_decode_host(gpu.ok_or_else(no_gpu)?, &a, Some(usize::MAX), out)
                        }
                        Backend::CudaGraph => crate::cuda::paged_decode_host_graph(gpu.ok_or_else(no_gpu)?, &a, out),
                        Backend::CudaGather => {
                            let gather = Dispatch::Force(AttentionPath::Gather);
                            crate::cuda::paged_decode_host_dispatch(gpu.ok_or_else(no_gpu)?, &a, gather, out)
                                .map(|_| ())
                        }
                        // Prefill-only (`supports` keeps decode cases away from it).
                        Backend::CudaMma => Err(no_gpu()),
                    }
                };
                outcomes.push(check(be, &want, &tol, q.len(), run)?);
            }
        }
        Some(new) => {
            let tokens: usize = new.iter().sum();
            let mut qo = vec![0u32];
            for n in &new {
                qo.push(qo.last().unwrap() + *n as u32);
            }
            let q: Vec<T> = rng.fill(tokens * case.hq * d, case.q_scale);
            let (nk, nv): (Vec<T>, Vec<T>) = if case.ragged_new {
                (rng.fill(tokens * case.hkv * d, 1.0), rng.fill(tokens * case.hkv * d, 1.0))
            } else {
                (Vec::new(), Vec::new())
            };
            let a = PrefillArgs {
                q: &q,
                qo_indptr: &qo,
                num_qo_heads: case.hq,
                kv: fx.view(),
                page_table: &fx.page_table,
                new_kv: case.ragged_new.then_some(RaggedKv { k: &nk, v: &nv }),
                opts: case.opts,
            };
            let mut want = poisoned(q.len());
            reference::paged_prefill(&a, &mut want)?;
            for &be in backends {
                let run = |out: &mut [T]| -> Result<()> {
                    match be {
                        Backend::Cpu | Backend::CpuSplit | Backend::Gather => {
                            let plan = PrefillPlan::new(&qo, &fx.page_table, case.hq / case.hkv);
                            let dispatch = if be == Backend::Gather {
                                Dispatch::Force(AttentionPath::Gather)
                            } else {
                                Dispatch::Auto
                            };
                            dispatch::paged_prefill(&a, &plan, dispatch, out).map(|_| ())
                        }
                        Backend::Cuda => {
                            crate::cuda::paged_prefill_host(gpu.ok_or_else(no_gpu)?, &a, PrefillKernel::Auto, out)
                        }
                        Backend::CudaSplit => {
                            // Tensor cores with the key ranges forced into 3 splits (the merge
                            // pass), or the row path in small chunks where tensor cores do not apply.
                            let kernel = if crate::cuda::tensor_core_supports(T::DTYPE, T::DTYPE, d) {
                                PrefillKernel::TensorCoreSplits(3)
                            } else {
                                PrefillKernel::Rows { chunk_tokens: 7 }
                            };
                            crate::cuda::paged_prefill_host(gpu.ok_or_else(no_gpu)?, &a, kernel, out)
                        }
                        Backend::CudaWhole => crate::cuda::paged_prefill_host(
                            gpu.ok_or_else(no_gpu)?,
                            &a,
                            PrefillKernel::Rows { chunk_tokens: usize::MAX },
                            out,
                        ),
                        Backend::CudaMma => {
                            crate::cuda::paged_prefill_host(gpu.ok_or_else(no_gpu)?, &a, PrefillKernel::MmaSync, out)
                        }
                        // Decode-only backends (`supports` keeps prefill cases away from them).
                        Backend::CudaGraph | Backend::CudaGather => Err(no_gpu()),
                    }
                };
                outcomes.push(check(be, &want, &tol, q.len(), run)?);
            }
        }
    }
    Ok(outcomes)
}

fn check<T: Element>(
    be: Backend,
    want: &[T],
    tol: &Tolerance,
    n: usize,
    run: impl Fn(&mut [T]) -> Result<()>,
) -> Result<Outcome> {
    let mut out = vec![T::poison(); n];
    run(&mut out)?;
    let err = ErrStats::compare(&out, want, tol);
    let mut again = vec![T::poison(); n];
    run(&mut again)?;
    let bits = |v: &[T]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
    Ok(Outcome { backend: be, err, pass: err.passes(tol), deterministic: bits(&out) == bits(&again) })
}

/// The correctness grid of `pal selftest`: seed-case shapes (seed-cases.md C and D) on every dtype
/// plus awkward random shapes. `quick` keeps it to a few seconds.
pub fn selftest_grid(rng: &mut Rng, quick: bool) -> Vec<AttnCase> {
    let mut cases = Vec::new();
    let c_shapes: &[(usize, usize, usize, usize, usize)] = &[
        (1, 16, 1, 1, 32),
        (1, 32, 1, 1, 32),
        (1, 16, 4, 1, 32),
        (1, 16, 4, 2, 32),
        (1, 16, 1, 1, 64),
        (1, 64, 2, 2, 32),
        (1, 64, 4, 2, 128),
        (1, 64, 32, 16, 128),
        (2, 32, 4, 4, 32),
        (2, 64, 32, 16, 128),
        (3, 128, 32, 16, 128),
        (16, 64, 4, 4, 32),
        (1, 1024, 32, 16, 128),
        (1, 4096, 32, 16, 128),
        (1, 8192, 32, 16, 128),
        (1, 32768, 32, 8, 128),
    ];
    let dtypes: &[DType] = if quick { &[DType::BF16] } else { &DType::ALL };
    for &dt in dtypes {
        for &(b, l, hq, hkv, d) in c_shapes {
            if quick && l > 4096 {
                continue;
            }
            cases.push(AttnCase::decode(format!("C decode {b}x{l}"), vec![l; b], hq, hkv, d, 16, dt));
        }
        cases.push(AttnCase::decode("C padded table", vec![16, 32, 48, 25], 8, 2, 64, 16, dt));
        cases.push(AttnCase::decode("C full pages", vec![32, 48], 8, 2, 64, 16, dt));
        cases.push(AttnCase::decode("C length 1", vec![1], 8, 2, 64, 16, dt));
        // SmolLM2 attention (GQA 9:3, D=64) and odd groups.
        cases.push(AttnCase::decode("C smollm shape", vec![1000, 17, 300, 64], 9, 3, 64, 16, dt));
        cases.push(AttnCase::decode("C group 5", vec![70, 129], 10, 2, 128, 16, dt));
        let d_shapes: &[(usize, usize, usize, usize, usize, usize)] = &[
            (1, 0, 16, 4, 4, 64),
            (1, 128, 16, 4, 4, 64),
            (2, 64, 32, 8, 2, 128),
            (1, 256, 1, 32, 8, 128),
            (1, 0, 128, 32, 8, 128),
        ];
        for &(b, h, n, hq, hkv, d) in d_shapes {
            cases.push(AttnCase::prefill(format!("D prefill {b}x{h}+{n}"), vec![h; b], vec![n; b], hq, hkv, d, 16, dt));
        }
        cases.push(AttnCase::prefill("D mixed lengths", vec![0, 37, 5, 130], vec![9, 1, 33, 17], 8, 2, 64, 16, dt));
        let mut ragged = AttnCase::prefill("D ragged new K/V", vec![0, 20, 3], vec![5, 7, 1], 8, 4, 64, 8, dt);
        ragged.ragged_new = true;
        cases.push(ragged);
        cases.extend(tensor_core_prefill_cases(dt, quick));
    }
    // Awkward random shapes: batch, lengths, page sizes, GQA, head dims, options.
    let n_random = if quick { 6 } else { 24 };
    for i in 0..n_random {
        let batch = [1, 12, 17][rng.below(3)];
        let page = [1, 8, 16, 32][rng.below(4)];
        let group = [1, 3, 4, 6, 8][rng.below(5)];
        let hkv = [1, 2][rng.below(2)];
        let d = [64, 80, 96, 128, 256][rng.below(5)];
        let dt = DType::ALL[rng.below(3)];
        let lens: Vec<usize> = (0..batch).map(|_| [1, 54, 97, 300][rng.below(4)]).collect();
        let mut c = if i % 2 == 0 {
            AttnCase::decode(format!("random decode #{i}"), lens, hkv * group, hkv, d, page, dt)
        } else {
            let new: Vec<usize> = (0..batch).map(|_| 1 + rng.below(20)).collect();
            let hist: Vec<usize> = lens.iter().map(|l| l - 1).collect();
            AttnCase::prefill(format!("random prefill #{i}"), hist, new, hkv * group, hkv, d, page, dt)
        };
        if rng.below(3) == 0 {
            c.opts.window_left = Some(rng.below(64) as u32);
        }
        if rng.below(3) == 0 {
            c.opts.logit_soft_cap = Some(5.0 + rng.uniform().abs() * 30.0);
        }
        c.q_scale = [1.0, 4.0][rng.below(2)];
        cases.push(c);
    }
    cases
}

/// Prefill shapes that walk the GPU tensor-core kernel's edges: several 64-row tiles per sequence
/// with GQA rows packed across tokens (groups 3, 4, 6), histories of several key tiles, empty
/// histories, non-power-of-two and 1-token pages, a sliding window that skips whole tiles, soft-cap,
/// non-causal attention, custom (also negative) softmax scales, and head dims 64, 80, 96, 128 and
/// 256 (32-key tiles).
fn tensor_core_prefill_cases(dt: DType, quick: bool) -> Vec<AttnCase> {
    let mut v = vec![
        AttnCase::prefill("E tc chunk+history", vec![700, 0, 333], vec![150, 129, 64], 16, 4, 128, 16, dt),
        AttnCase::prefill("E tc smollm page 12", vec![400, 5], vec![100, 77], 9, 3, 64, 12, dt),
    ];
    if quick {
        return v;
    }
    let mut window = AttnCase::prefill("E tc D256 window", vec![500], vec![90], 8, 2, 256, 32, dt);
    window.opts.window_left = Some(100);
    let mut cap = AttnCase::prefill("E tc D80 page 1 non-causal", vec![90], vec![70], 4, 4, 80, 1, dt);
    cap.opts.causal = false;
    cap.opts.logit_soft_cap = Some(20.0);
    cap.q_scale = 4.0;
    v.push(window);
    v.push(cap);
    v.push(AttnCase::prefill("E tc D96 group 6", vec![257, 64], vec![65, 3], 12, 2, 96, 8, dt));
    // A caller's softmax scale, also a negative one (the max of the scaled scores flips).
    for (name, scale) in [("E tc scale 0.3", 0.3f32), ("E tc scale -0.08", -0.08)] {
        let mut c = AttnCase::prefill(name, vec![130], vec![100], 8, 2, 64, 16, dt);
        c.opts.sm_scale = Some(scale);
        v.push(c);
    }
    v
}

/// One `append_kv` correctness case: random tokens at random positions into scattered slots (some
/// padding), with or without RoPE.
#[derive(Clone, Debug)]
pub struct AppendCase {
    pub name: String,
    pub tokens: usize,
    pub hq: usize,
    pub hkv: usize,
    pub head_dim: usize,
    pub page: usize,
    pub dtype: DType,
    pub rope: Option<crate::RopeConfig>,
}

/// Append cases for the selftest: both pair layouts, Llama-3 scaling, partial rotary, no RoPE.
pub fn append_cases() -> Vec<AppendCase> {
    use crate::{Llama3Scaling, RopeConfig, RopeStyle};
    let llama3 =
        Llama3Scaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8192.0 };
    let mut v = Vec::new();
    for dt in DType::ALL {
        let cfgs: [(Option<RopeConfig>, usize); 6] = [
            (Some(RopeConfig::new(RopeStyle::AdjacentPairs, 10000.0)), 64),
            (Some(RopeConfig::new(RopeStyle::HalfSplit, 10000.0)), 128),
            (Some(RopeConfig { llama3: Some(llama3), ..RopeConfig::new(RopeStyle::HalfSplit, 500000.0) }), 128),
            (Some(RopeConfig { rotary_dim: Some(32), ..RopeConfig::new(RopeStyle::AdjacentPairs, 10000.0) }), 80),
            // rotary_dim not a multiple of 16: the GPU's scalar append path.
            (Some(RopeConfig { rotary_dim: Some(24), ..RopeConfig::new(RopeStyle::HalfSplit, 10000.0) }), 64),
            (None, 256),
        ];
        for (i, (rope, d)) in cfgs.into_iter().enumerate() {
            v.push(AppendCase {
                name: format!("B append #{i}"),
                tokens: 37,
                hq: 8,
                hkv: 2,
                head_dim: d,
                page: 16,
                dtype: dt,
                rope,
            });
        }
    }
    v
}

/// Run an append case on `backends` (Cpu and Cuda run appends) against the reference.
pub fn run_append_case(
    c: &AppendCase,
    seed: u64,
    backends: &[Backend],
    gpu: Option<&crate::cuda::CudaDevice>,
) -> Result<Vec<Outcome>> {
    match c.dtype {
        DType::F32 => run_append_typed::<f32>(c, seed, backends, gpu),
        DType::F16 => run_append_typed::<f16>(c, seed, backends, gpu),
        DType::BF16 => run_append_typed::<bf16>(c, seed, backends, gpu),
    }
}

fn run_append_typed<T: Element + cudarc::driver::DeviceRepr>(
    c: &AppendCase,
    seed: u64,
    backends: &[Backend],
    gpu: Option<&crate::cuda::CudaDevice>,
) -> Result<Vec<Outcome>> {
    use crate::{AppendArgs, Rope};
    use pal_core::PagedKvMut;
    let mut rng = Rng::new(seed);
    let (t, d) = (c.tokens, c.head_dim);
    let max_pos = 40000;
    let rope = c.rope.map(|cfg| Rope::new(cfg, d, max_pos)).transpose()?;
    let layout = KvLayout::new((2 * t).div_ceil(c.page) + 1, c.page, c.hkv, d)?;
    let positions: Vec<u32> = (0..t).map(|_| rng.below(max_pos) as u32).collect();
    let mut all: Vec<u32> = (0..layout.num_slots() as u32).collect();
    rng.shuffle(&mut all);
    let slots: Vec<Option<u32>> = (0..t).map(|i| if i % 5 == 3 { None } else { Some(all[i]) }).collect();
    let q0: Vec<T> = rng.fill(t * c.hq * d, 1.0);
    let k: Vec<T> = rng.fill(t * c.hkv * d, 1.0);
    let v: Vec<T> = rng.fill(t * c.hkv * d, 1.0);
    let run = |be: Option<Backend>| -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let mut q = q0.clone();
        let mut pk = vec![T::poison(); layout.elems()];
        let mut pv = vec![T::poison(); layout.elems()];
        let args = AppendArgs {
            q: &mut q,
            num_qo_heads: c.hq,
            k: &k,
            v: &v,
            positions: &positions,
            slots: &slots,
            rope: rope.as_ref(),
        };
        let mut cache = PagedKvMut::new(&mut pk, &mut pv, layout)?;
        match be {
            None => reference::append_kv(args, &mut cache)?,
            Some(Backend::Cuda) => crate::cuda::append_kv_host(gpu.ok_or_else(no_gpu)?, args, &mut cache)?,
            Some(_) => cpu::append_kv(args, &mut cache)?,
        }
        Ok((q, pk, pv))
    };
    let want = run(None)?;
    let tol = Tolerance::for_dtype(c.dtype);
    // Untouched slots must stay poisoned (NaN) exactly where the reference left them.
    let zero_nan =
        |x: &[T]| x.iter().map(|v| if v.to_f64().is_nan() { T::from_f32(0.0) } else { *v }).collect::<Vec<T>>();
    let nan_mask = |x: &[T]| x.iter().map(|v| v.to_f64().is_nan()).collect::<Vec<bool>>();
    let mut out = Vec::new();
    for &be in backends.iter().filter(|b| matches!(b, Backend::Cpu | Backend::Cuda)) {
        let got = run(Some(be))?;
        let again = run(Some(be))?;
        let mut err = ErrStats::compare(&got.0, &want.0, &tol);
        for (g, w) in [(&got.1, &want.1), (&got.2, &want.2)] {
            let e = ErrStats::compare(&zero_nan(g), &zero_nan(w), &tol);
            err.max_abs = err.max_abs.max(e.max_abs);
            err.rms = err.rms.max(e.rms);
            err.worst_excess = err.worst_excess.max(e.worst_excess);
            if nan_mask(g) != nan_mask(w) {
                err.non_finite += 1;
            }
        }
        let bits = |x: &(Vec<T>, Vec<T>, Vec<T>)| {
            x.0.iter().chain(&x.1).chain(&x.2).map(|v| v.to_f64().to_bits()).collect::<Vec<_>>()
        };
        out.push(Outcome { backend: be, err, pass: err.passes(&tol), deterministic: bits(&got) == bits(&again) });
    }
    Ok(out)
}
