//! Matrix products with quantized weights: `out[m, n] = sum_k x[m, k] * W[n, k]`.
//!
//! [`QMatrix`] is one weight matrix of a GGUF file. How it multiplies depends on its format:
//! - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS are repacked once at load into [`PackedMatrix`]
//!   (about the file's size, eight rows interleaved). The activations are rounded per block of 32 to 8 bits
//!   ([`crate::packed::ActBlock`], as llama.cpp does) and every product is an integer kernel: decode rows and
//!   prefill chunks alike, so a weight byte is unpacked once per four activation rows and read
//!   from memory once per step.
//! - F32, F16, BF16: below [`GEMM_MIN_ROWS`] activation rows each weight row is
//!   dequantized once and dotted with every activation row; from there on each task dequantizes a
//!   tile of weight rows and runs a register-blocked f32 product (AVX2 or `matrixmultiply`).
//!
//! Work is split over output rows (rayon); one fork-join can serve several matrices that share
//! their input ([`matmul_many`]: q/k/v), and the gate/up pair fuses SwiGLU and the rounding of
//! the down projection's input into its pass ([`swiglu_product`]).

use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::packed::{quantize_acts, ActBlock, PackedMatrix, GROUP};
use crate::quant::dequantize_unchecked as dequantize;
use crate::{ModelError, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// A weight matrix `[rows, cols]` (`cols` contiguous) of a GGUF file, with its packed copy when
/// the format has integer kernels.
#[derive(Clone)]
pub struct QMatrix {
    file: Arc<GgufFile>,
    info: TensorInfo,
    packed: Option<Arc<PackedMatrix>>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({} {}x{} {})", self.info.name, self.rows(), self.cols(), self.info.dtype)
    }
}

impl QMatrix {
    /// A 2-D tensor of `file` (validated when the file was parsed), repacked for the integer
    /// kernels when its format has them.
    pub fn new(file: Arc<GgufFile>, info: TensorInfo) -> Result<Self> {
        let mut m = Self::rows_only(file, info);
        if PackedMatrix::supports(m.dtype()) {
            m.packed = Some(Arc::new(PackedMatrix::pack(m.dtype(), m.bytes(), m.rows(), m.cols())?));
        }
        Ok(m)
    }
    /// A matrix used for row lookups only (an embedding table): no packed copy.
    pub fn rows_only(file: Arc<GgufFile>, info: TensorInfo) -> Self {
        debug_assert!(info.dims.len() <= 2);
        QMatrix { file, info, packed: None }
    }
    /// Frees the packed copy: products then dequantize weight rows and multiply the activations
    /// unrounded, in f32 (slower; what [`crate::LlamaModel::use_float_activations`] does).
    pub fn drop_packed(&mut self) {
        self.packed = None;
    }
    pub fn rows(&self) -> usize {
        self.info.rows()
    }
    pub fn cols(&self) -> usize {
        self.info.row_len()
    }
    pub fn dtype(&self) -> GgmlType {
        self.info.dtype
    }
    pub fn name(&self) -> &str {
        &self.info.name
    }
    pub fn bytes(&self) -> &[u8] {
        self.file.data(&self.info)
    }
    fn row_bytes(&self) -> usize {
        self.info.nbytes / self.rows()
    }
    /// Row `r` dequantized into `out` (`cols` elements): embedding lookup.
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.rows() || out.len() != self.cols() {
            return Err(ModelError::invalid(
                "row",
                format!("row {r} into {} floats of a {}x{} matrix", out.len(), self.rows(), self.cols()),
            ));
        }
        let rb = self.row_bytes();
        dequantize(self.dtype(), &self.bytes()[r * rb..(r + 1) * rb], out);
        Ok(())
    }

    /// `out[m, n] = sum_k x[m, k] * W[n, k]` for `m` in `0..x.len()/cols`. Fails, naming the
    /// argument, when `x.len()` is not a multiple of `cols` or `out.len() != m * rows`.
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        matmul_many(&mut [(self, out)], x)
    }

    /// [`Self::matmul`] with `x` already rounded to activation blocks (`acts`, as
    /// [`crate::packed::quantize_acts`] makes them, e.g. by [`swiglu_product`]): a packed matrix
    /// uses them instead of rounding `x` again; other formats, or `acts` of another length, use `x`.
    pub fn matmul_acts(&self, x: &[f32], acts: &[ActBlock], out: &mut [f32]) -> Result<()> {
        let pre = (self.packed.is_some() && acts.len() * 32 == x.len()).then_some(acts);
        matmul_many_with(&mut [(self, out)], x, pre)
    }
}

/// Several products of the same input (q/k/v, gate/up) in one parallel pass: the activations are
/// quantized once and one fork-join serves all matrices, which matters at decode where each
/// product is a few microseconds of work.
///
/// Fails, naming the argument, when the matrices' `cols` differ, `x.len()` is not a multiple of
/// them, or an output's length is not `m * rows`; nothing is written then.
pub fn matmul_many(pairs: &mut [(&QMatrix, &mut [f32])], x: &[f32]) -> Result<()> {
    matmul_many_with(pairs, x, None)
}

/// [`matmul_many`], with `x`'s activation blocks when the caller has them (`pre`).
fn matmul_many_with(pairs: &mut [(&QMatrix, &mut [f32])], x: &[f32], pre: Option<&[ActBlock]>) -> Result<()> {
    let Some(k) = pairs.first().map(|p| p.0.cols()) else { return Ok(()) };
    if !x.len().is_multiple_of(k) {
        return Err(ModelError::invalid("x", format!("{} floats are not rows of {k}", x.len())));
    }
    let m = x.len() / k;
    for (w, out) in pairs.iter() {
        if w.cols() != k || out.len() != m * w.rows() {
            return Err(ModelError::invalid(
                "out",
                format!(
                    "{} ({}x{}) times {m}x{k} needs {} outputs, got {}",
                    w.name(),
                    w.rows(),
                    w.cols(),
                    m * w.rows(),
                    out.len()
                ),
            ));
        }
    }
    if m == 0 {
        return Ok(());
    }
    let mut own = Vec::new();
    let acts = match pre {
        Some(a) => a,
        None => {
            if pairs.iter().any(|p| p.0.packed.is_some()) {
                quantize_acts(x, &mut own);
            }
            &own
        }
    };
    // Tasks of whole packed groups: at decode enough of them to balance the threads (each at
    // least 8 rows); with a batch, 48 rows whose weights stay in L1 while every row passes.
    let threads = rayon::current_num_threads();
    let total: usize = pairs.iter().map(|p| p.0.rows()).sum();
    let chunk =
        if m >= GEMM_MIN_ROWS { GEMM_TILE_ROWS } else { (total / (threads * 8)).clamp(8, 256).next_multiple_of(GROUP) };
    let mut tasks = Vec::new();
    for (i, (w, _)) in pairs.iter().enumerate() {
        let n = w.rows();
        tasks.extend((0..n.div_ceil(chunk)).map(|c| (i, c * chunk, ((c + 1) * chunk).min(n))));
    }
    let mats: Vec<&QMatrix> = pairs.iter().map(|p| p.0).collect();
    let dsts: Vec<SyncPtr<f32>> = pairs.iter_mut().map(|p| SyncPtr(p.1.as_mut_ptr())).collect();
    tasks.into_par_iter().for_each(|(i, r0, r1)| {
        let w = mats[i];
        // SAFETY (all arms): this task alone writes columns r0..r1 of output i, whose length was
        // checked to be m * rows; r0 is a multiple of GROUP, so the groups cover exactly r0..r1.
        if let Some(p) = &w.packed {
            unsafe { p.gemm_groups(acts, m, r0 / GROUP, r1.div_ceil(GROUP), dsts[i].at(0), w.rows()) };
        } else {
            unsafe { w.float_rows(x, m, r0, r1, dsts[i].at(0)) };
        }
    });
    Ok(())
}

/// SwiGLU's input to the down projection, `out = silu(x Wg^T) * (x Wu^T)`, with `up_out` as
/// scratch (`m x rows` each), and `acts` = `out` rounded to activation blocks for
/// [`QMatrix::matmul_acts`].
///
/// When both matrices are packed and their rows are a multiple of 32, one parallel pass does it
/// all: each task takes the same 32-aligned column span of both products, then applies SiLU and
/// rounds its span of every row. At decode these two steps otherwise ran on one thread between
/// the parallel products (batch 16 of SmolLM2 on the dev VM: 13 + 8 us per layer). The results
/// are the same to the bit. Otherwise: [`matmul_many`], then [`crate::swiglu`], and `acts` empty.
///
/// Fails, naming the argument, as [`matmul_many`] does, or when `gate` and `up` differ in shape.
pub fn swiglu_product(
    gate: &QMatrix,
    up: &QMatrix,
    x: &[f32],
    out: &mut [f32],
    up_out: &mut [f32],
    acts: &mut Vec<ActBlock>,
) -> Result<()> {
    if (gate.rows(), gate.cols()) != (up.rows(), up.cols()) {
        return Err(ModelError::invalid(
            "up",
            format!("{} is {}x{}, {} is {}x{}", up.name(), up.rows(), up.cols(), gate.name(), gate.rows(), gate.cols()),
        ));
    }
    acts.clear();
    let (n, k) = (gate.rows(), gate.cols());
    let fused = gate.packed.is_some() && up.packed.is_some() && n.is_multiple_of(32) && k.is_multiple_of(32);
    if !fused || !x.len().is_multiple_of(k) || out.len() != x.len() / k * n || up_out.len() != out.len() {
        // Unfused (this also reports any shape error).
        matmul_many(&mut [(gate, &mut *out), (up, &mut *up_out)], x)?;
        crate::swiglu(out, up_out);
        return Ok(());
    }
    let m = x.len() / k;
    if m == 0 {
        return Ok(());
    }
    let mut x_acts = Vec::new();
    quantize_acts(x, &mut x_acts);
    acts.resize(m * n / 32, ActBlock::default());
    let threads = rayon::current_num_threads();
    // Column spans: as matmul_many's tasks (two matrices per span), rounded to whole blocks.
    let span =
        if m >= GEMM_MIN_ROWS { 64 } else { (2 * n / (threads * 8)).clamp(8, 256).div_ceil(2).next_multiple_of(32) };
    let (g, u) = (gate.packed.as_deref().expect("fused: packed"), up.packed.as_deref().expect("fused: packed"));
    let (dst, udst, adst) = (SyncPtr(out.as_mut_ptr()), SyncPtr(up_out.as_mut_ptr()), SyncPtr(acts.as_mut_ptr()));
    (0..n.div_ceil(span)).into_par_iter().for_each(|i| {
        let (c0, c1) = (i * span, ((i + 1) * span).min(n));
        // SAFETY: this task alone writes columns c0..c1 of `out` and `up_out` (m * n each, checked
        // above) and blocks c0/32..c1/32 of every row of `acts` (m * n / 32); c0 and c1 are
        // multiples of 32 (n is), so the groups of 8 rows cover exactly c0..c1.
        unsafe {
            g.gemm_groups(&x_acts, m, c0 / GROUP, c1 / GROUP, dst.at(0), n);
            u.gemm_groups(&x_acts, m, c0 / GROUP, c1 / GROUP, udst.at(0), n);
            for t in 0..m {
                let o = std::slice::from_raw_parts_mut(dst.at(t * n + c0), c1 - c0);
                crate::swiglu(o, std::slice::from_raw_parts(udst.at(t * n + c0), c1 - c0));
                let a = std::slice::from_raw_parts_mut(adst.at((t * n + c0) / 32), (c1 - c0) / 32);
                crate::packed::quantize_acts_into(o, a);
            }
        }
    });
    Ok(())
}

/// From this many activation rows on, the formats without integer kernels dequantize a weight
/// tile and run an f32 GEMM, and packed matrices use batch-sized tasks.
pub const GEMM_MIN_ROWS: usize = 4;

/// Weight rows per batched task: the f32 tile stays in L2 (48 x 1536 x 4 B = 288 KB), a packed
/// tile in L1 (48 x 576 x 0.56 B = 16 KB).
const GEMM_TILE_ROWS: usize = 48;

impl QMatrix {
    /// Rows `r0..r1` of `out = x W^T` for a format without integer kernels.
    ///
    /// # Safety
    /// `out` is valid for writes at `t * rows + r`, `t < m`, `r0 <= r < r1`, and nobody else
    /// writes those elements meanwhile.
    unsafe fn float_rows(&self, x: &[f32], m: usize, r0: usize, r1: usize, out: *mut f32) {
        thread_local! {
            /// One weight tile per worker thread, reused across calls (no zeroing per task).
            static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let (n, k, rb) = (self.rows(), self.cols(), self.row_bytes());
        let rows = r1 - r0;
        TILE.with_borrow_mut(|tile| {
            if tile.len() < rows * k {
                tile.resize(rows * k, 0.0);
            }
            let tile = &mut tile[..rows * k];
            dequantize(self.dtype(), &self.bytes()[r0 * rb..r1 * rb], tile);
            if m < GEMM_MIN_ROWS {
                for t in 0..m {
                    let xt = &x[t * k..(t + 1) * k];
                    for (j, wr) in tile.chunks_exact(k).enumerate() {
                        *out.add(t * n + r0 + j) = dot_f32(wr, xt);
                    }
                }
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx2() && k.is_multiple_of(8) {
                crate::simd::gemm_nt_avx2(x, tile, m, rows, k, out.add(r0), n);
                return;
            }
            // C[m, rows] (columns r0..r1 of out, row stride n) = X[m, k] * tile^T.
            matrixmultiply::sgemm(
                m,
                k,
                rows,
                1.0,
                x.as_ptr(),
                k as isize,
                1,
                tile.as_ptr(),
                1,
                k as isize,
                0.0,
                out.add(r0),
                n as isize,
                1,
            );
        })
    }
}

/// An output pointer shared by parallel tasks that write disjoint elements.
struct SyncPtr<T>(*mut T);
impl<T> SyncPtr<T> {
    /// A method (not a field access) so that closures capture the whole `Sync` wrapper.
    fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}
unsafe impl<T> Sync for SyncPtr<T> {}
unsafe impl<T> Send for SyncPtr<T> {}

/// f32 dot product with 8 independent accumulators (vectorised by the compiler).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}
