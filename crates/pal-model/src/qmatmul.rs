//! Matrix products with quantized weights: `out[m, n] = sum_k x[m, k] * W[n, k]`.
//!
//! [`QMatrix`] keeps the weight bytes as they are in the GGUF file (no dequantized copy).
//! - Q4_0, Q4_1, Q8_0: the activations are quantized to 16-bit blocks of 32 ([`ActBlock`]) and
//!   each block product is an integer dot product (AVX2 `madd_epi16` when the CPU has it), scaled
//!   once per block. llama.cpp rounds activations to 8 bits here; SmolLM-class models have outlier
//!   channels that make 8-bit blocks coarse (logits moved by up to 0.3 against an f32 forward),
//!   while 16 bits stay within 0.01 of it at about the same decode speed (memory-bound).
//! - F32, F16, BF16, Q4_K, Q6_K: each weight row is dequantized once to f32 and dotted with every
//!   activation row.
//!
//! - Batches of [`GEMM_MIN_ROWS`] or more activation rows (prefill, batched decode), any type:
//!   each task dequantizes a tile of weight rows to f32 once and multiplies it with the whole
//!   batch through `matrixmultiply`'s blocked SGEMM, so the unpacking is paid once per step
//!   instead of once per token and the FMA units stay busy.
//!
//! Work is split over output rows (rayon).

use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::quant::{dequantize_unchecked as dequantize, f16_at};
use crate::{ModelError, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// A weight matrix `[rows, cols]` (`cols` contiguous) in its file encoding.
#[derive(Clone)]
pub struct QMatrix {
    file: Arc<GgufFile>,
    info: TensorInfo,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({} {}x{} {})", self.info.name, self.rows(), self.cols(), self.info.dtype)
    }
}

/// One block of 32 quantized activations: `x[i] ~= d * qs[i]`, and `s = d * sum(qs)`.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(8))]
pub struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub qs: [i16; 32],
}

/// Largest quantized activation magnitude. Kept below `i16::MAX` so that a Q8_0 pair product sum
/// (`2 * 127 * ACT_MAX`) and a 32-element block sum fit `i32` in the SIMD kernels.
pub const ACT_MAX: f32 = 32767.0;

impl QMatrix {
    /// A 2-D tensor of `file` (validated when the file was parsed).
    pub fn new(file: Arc<GgufFile>, info: TensorInfo) -> Self {
        debug_assert!(info.dims.len() <= 2);
        QMatrix { file, info }
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
    fn integer_path(&self) -> bool {
        matches!(self.dtype(), GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
    }

    /// `out[m, n] = sum_k x[m, k] * W[n, k]` for `m` in `0..x.len()/cols`. Fails, naming the
    /// argument, when `x.len()` is not a multiple of `cols` or `out.len() != m * rows`.
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        matmul_many(&mut [(self, out)], x)
    }
}

/// Several products of the same input (q/k/v, gate/up) in one parallel pass: the activations are
/// quantized once and one fork-join serves all matrices, which matters at decode where each
/// product is a few microseconds of work.
///
/// Fails, naming the argument, when the matrices' `cols` differ, `x.len()` is not a multiple of
/// them, or an output's length is not `m * rows`; nothing is written then.
pub fn matmul_many(pairs: &mut [(&QMatrix, &mut [f32])], x: &[f32]) -> Result<()> {
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
    if m >= GEMM_MIN_ROWS {
        gemm_many(pairs, x, m, k);
        return Ok(());
    }
    let acts = if pairs.iter().any(|p| p.0.integer_path()) { quantize_acts(x, k) } else { Vec::new() };
    let threads = rayon::current_num_threads();
    let total: usize = pairs.iter().map(|p| p.0.rows()).sum();
    // Enough tasks to balance the threads, each at least 8 rows.
    let chunk = (total / (threads * 8)).clamp(8, 256);
    let mut tasks = Vec::new();
    for (i, (w, _)) in pairs.iter().enumerate() {
        let n = w.rows();
        tasks.extend((0..n.div_ceil(chunk)).map(|c| (i, c * chunk, ((c + 1) * chunk).min(n))));
    }
    let mats: Vec<&QMatrix> = pairs.iter().map(|p| p.0).collect();
    let dsts: Vec<SyncPtr> = pairs.iter_mut().map(|p| SyncPtr(p.1.as_mut_ptr())).collect();
    tasks.into_par_iter().for_each_init(Vec::new, |scratch: &mut Vec<f32>, (i, r0, r1)| {
        let w = mats[i];
        let (n, rb, dtype) = (w.rows(), w.row_bytes(), w.dtype());
        let wb = &w.bytes()[r0 * rb..r1 * rb];
        let write = |mi: usize, r: usize, v: f32| {
            // SAFETY: this task alone writes columns r0..r1 of output i; `mi < m`, `r < n`.
            unsafe { *dsts[i].at(mi * n + r) = v }
        };
        if w.integer_path() {
            let nb = k / 32;
            for mi in 0..m {
                let xa = &acts[mi * nb..(mi + 1) * nb];
                for (j, wr) in wb.chunks_exact(rb).enumerate() {
                    write(mi, r0 + j, dot_quant(dtype, wr, xa));
                }
            }
        } else {
            scratch.resize((r1 - r0) * k, 0.0);
            for (wr, out_row) in wb.chunks_exact(rb).zip(scratch.chunks_exact_mut(k)) {
                dequantize(dtype, wr, out_row);
            }
            for mi in 0..m {
                let xm = &x[mi * k..(mi + 1) * k];
                for (j, wr) in scratch.chunks_exact(k).enumerate() {
                    write(mi, r0 + j, dot_f32(wr, xm));
                }
            }
        }
    });
    Ok(())
}

/// From this many activation rows on, dequantize-then-SGEMM beats the per-token dot products.
pub const GEMM_MIN_ROWS: usize = 4;

/// Weight rows per SGEMM task: the f32 tile stays in L2 (48 x 1536 x 4 B = 288 KB); 48, 96
/// and 128 measured the same on the dev VM.
const GEMM_TILE_ROWS: usize = 48;

fn gemm_many(pairs: &mut [(&QMatrix, &mut [f32])], x: &[f32], m: usize, k: usize) {
    let mut tasks = Vec::new();
    for (i, (w, _)) in pairs.iter().enumerate() {
        let n = w.rows();
        tasks.extend(
            (0..n.div_ceil(GEMM_TILE_ROWS)).map(|c| (i, c * GEMM_TILE_ROWS, ((c + 1) * GEMM_TILE_ROWS).min(n))),
        );
    }
    let mats: Vec<&QMatrix> = pairs.iter().map(|p| p.0).collect();
    let dsts: Vec<SyncPtr> = pairs.iter_mut().map(|p| SyncPtr(p.1.as_mut_ptr())).collect();
    thread_local! {
        /// One weight tile per worker thread, reused across calls (no zeroing per task).
        static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    tasks.into_par_iter().for_each(|(i, r0, r1)| {
        TILE.with_borrow_mut(|tile| {
            let w = mats[i];
            let (n, rb) = (w.rows(), w.row_bytes());
            let rows = r1 - r0;
            if tile.len() < rows * k {
                tile.resize(rows * k, 0.0);
            }
            let tile = &mut tile[..rows * k];
            let wb = &w.bytes()[r0 * rb..r1 * rb];
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx2() && k.is_multiple_of(8) {
                // SAFETY: AVX2/FMA/F16C present; the tile holds exactly the rows' elements; the
                // output pointer covers columns r0..r1 of the m x n output, written by this task only.
                unsafe {
                    if w.integer_path() {
                        crate::simd::dequantize_avx2(w.dtype(), wb, tile);
                    } else {
                        dequantize(w.dtype(), wb, tile);
                    }
                    crate::simd::gemm_nt_avx2(x, tile, m, rows, k, dsts[i].at(r0), n);
                }
                return;
            }
            dequantize(w.dtype(), wb, tile);
            // C[m, rows] (columns r0..r1 of out, row stride n) = X[m, k] * tile^T.
            // SAFETY: the pointers cover x (m x k), the tile (rows x k) and columns r0..r1 of the
            // m x n output, which no other task writes.
            unsafe {
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
                    dsts[i].at(r0),
                    n as isize,
                    1,
                );
            }
        })
    });
}

struct SyncPtr(*mut f32);
impl SyncPtr {
    /// A method (not a field access) so that closures capture the whole `Sync` wrapper.
    fn at(&self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}
unsafe impl Sync for SyncPtr {}
unsafe impl Send for SyncPtr {}

/// Quantize activation rows of length `k` (a multiple of 32) into 16-bit blocks.
pub fn quantize_acts(x: &[f32], k: usize) -> Vec<ActBlock> {
    debug_assert!(k.is_multiple_of(32));
    x.chunks_exact(32)
        .map(|b| {
            let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / ACT_MAX;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i16; 32];
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(b) {
                *q = (v * id).round() as i16;
                sum += *q as i32;
            }
            ActBlock { d, s: d * sum as f32, qs }
        })
        .collect()
}

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

/// Dot product of one quantized weight row with quantized activations.
pub fn dot_quant(dtype: GgmlType, w: &[u8], x: &[ActBlock]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
        return unsafe { crate::simd::dot_quant_avx2(dtype, w, x) };
    }
    dot_quant_portable(dtype, w, x)
}

/// The portable twin of the AVX2 dot products (and their test oracle).
pub fn dot_quant_portable(dtype: GgmlType, w: &[u8], x: &[ActBlock]) -> f32 {
    let bb = dtype.block_bytes();
    let mut acc = 0f32;
    for (blk, a) in w.chunks_exact(bb).zip(x) {
        match dtype {
            GgmlType::Q8_0 => {
                let s: i32 = blk[2..34].iter().zip(&a.qs).map(|(&q, &v)| (q as i8 as i32) * v as i32).sum();
                acc += f16_at(blk, 0) * a.d * s as f32;
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let off = if dtype == GgmlType::Q4_1 { 4 } else { 2 };
                let mut s = 0i32;
                for j in 0..16 {
                    let q = blk[off + j];
                    s += (q & 0xF) as i32 * a.qs[j] as i32 + (q >> 4) as i32 * a.qs[j + 16] as i32;
                }
                let d = f16_at(blk, 0);
                // Q4_0 is Q4_1 with the implicit minimum -8 d.
                let m = if dtype == GgmlType::Q4_1 { f16_at(blk, 2) } else { -8.0 * d };
                acc += d * a.d * s as f32 + m * a.s;
            }
            _ => unreachable!("{dtype} has no integer dot product"),
        }
    }
    acc
}
