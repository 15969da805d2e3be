//! AVX2 integer dot products for the quantized matmul (x86-64 only, chosen at run time).
//!
//! Weights stay 4- or 8-bit; activations are 16-bit ([`ActBlock`]); `madd_epi16` multiplies and
//! adds pairs into i32 lanes, and each block's sum is scaled once in f32. Scales are converted
//! with F16C in-line: a call into a generic f16 routine here would spill every ymm register.
//! (A four-row variant sharing the activation loads measured slower on Zen: register pressure.)

use crate::gguf::GgmlType;
use crate::qmatmul::ActBlock;

#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    })
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` holds whole blocks of `dtype` (Q4_0, Q4_1 or
/// Q8_0), at least as many as `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_quant_avx2(dtype: GgmlType, w: &[u8], x: &[ActBlock]) -> f32 {
    debug_assert!(w.len() >= x.len() * dtype.block_bytes());
    match dtype {
        GgmlType::Q8_0 => dot::<0>(w, x),
        GgmlType::Q4_0 => dot::<1>(w, x),
        _ => dot::<2>(w, x),
    }
}

/// `KIND`: 0 = Q8_0, 1 = Q4_0, 2 = Q4_1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<const KIND: u8>(w: &[u8], x: &[ActBlock]) -> f32 {
    use std::arch::x86_64::*;
    let bb = match KIND {
        0 => 34,
        1 => 18,
        _ => 20,
    };
    let low = _mm256_set1_epi16(0x0F);
    // Two accumulators: consecutive blocks do not wait on each other's FMA.
    let mut acc = [_mm256_setzero_ps(), _mm256_setzero_ps()];
    let mut acc_min = _mm_setzero_ps();
    let wp = w.as_ptr();
    for (i, a) in x.iter().enumerate() {
        let blk = wp.add(i * bb);
        // d (and m for Q4_1) from f16, in one conversion (every block is at least 4 bytes).
        let scales = _mm_cvtph_ps(_mm_cvtsi32_si128((blk as *const u32).read_unaligned() as i32));
        let d = _mm_cvtss_f32(scales);
        let x0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let x1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
        let (w0, w1) = if KIND == 0 {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(2) as *const __m128i)),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(18) as *const __m128i)),
            )
        } else {
            // One widening of the 16 bytes: each 16-bit lane holds `lo | hi << 4` of one byte,
            // so the low nibbles (elements 0..16) and high nibbles (16..32) are a mask and a
            // shift away, with no second cross-lane shuffle.
            let bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128(blk.add(if KIND == 2 { 4 } else { 2 }) as *const __m128i));
            (_mm256_and_si256(bytes, low), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low))
        };
        if KIND != 0 {
            // Q4_1's minimum m, or Q4_0's implicit -8 d, times the activation sum.
            let m = if KIND == 2 { _mm_movehdup_ps(scales) } else { _mm_set_ss(-8.0 * d) };
            acc_min = _mm_fmadd_ss(m, _mm_set_ss(a.s), acc_min);
        }
        // |w| <= 128, |x| <= 32767, 32 terms: the i32 lanes cannot overflow.
        let s32 = _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
        let k = i & 1;
        acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_set1_ps(d * a.d), acc[k]);
    }
    let v = _mm256_add_ps(acc[0], acc[1]);
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h) + _mm_cvtss_f32(acc_min)
}

/// Dequantize whole Q4_0 / Q4_1 / Q8_0 blocks to f32 (the SGEMM path's weight tiles).
///
/// # Safety
/// AVX2, FMA and F16C must be present; `bytes` holds whole blocks of `dtype` and `out` exactly
/// their elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_avx2(dtype: GgmlType, bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let bb = dtype.block_bytes();
    let low = _mm256_set1_epi16(0x0F);
    debug_assert_eq!(bytes.len() / bb * 32, out.len());
    for (i, blk) in bytes.chunks_exact(bb).enumerate() {
        let p = blk.as_ptr();
        let o = out.as_mut_ptr().add(i * 32);
        let scales = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u32).read_unaligned() as i32));
        let d = _mm256_broadcastss_ps(scales);
        if dtype == GgmlType::Q8_0 {
            for j in 0..4 {
                let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(2 + 8 * j) as *const __m128i));
                _mm256_storeu_ps(o.add(8 * j), _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
            }
            continue;
        }
        let (off, m) = if dtype == GgmlType::Q4_1 {
            (4, _mm256_broadcastss_ps(_mm_movehdup_ps(scales)))
        } else {
            (2, _mm256_mul_ps(d, _mm256_set1_ps(-8.0)))
        };
        let b16 = _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(off) as *const __m128i));
        let halves = [_mm256_and_si256(b16, low), _mm256_and_si256(_mm256_srli_epi16(b16, 4), low)];
        for (h, v) in halves.iter().enumerate() {
            let lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(*v));
            let hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(*v, 1));
            _mm256_storeu_ps(o.add(16 * h), _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lo), m));
            _mm256_storeu_ps(o.add(16 * h + 8), _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(hi), m));
        }
    }
}

/// `out[t * ldc + r] = dot(x[t], w[r])` for `t < m`, `r < rows` (`x` is `m x k`, `w` is
/// `rows x k`, both row-major): register blocks of up to 4 activation rows x 3 weight rows
/// (12 accumulators, 7 loads per 12 FMAs), read straight from the row-major operands (no packing),
/// horizontal sums once per pair. Edges use the same kernel with smaller blocks.
///
/// # Safety
/// AVX2 and FMA must be present; `k` is a multiple of 8; `out` covers `(m-1) * ldc + rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm_nt_avx2(x: &[f32], w: &[f32], m: usize, rows: usize, k: usize, out: *mut f32, ldc: usize) {
    let mut t0 = 0;
    while t0 < m {
        let tm = 4.min(m - t0);
        let mut r0 = 0;
        while r0 < rows {
            let tr = 3.min(rows - r0);
            let (xp, wp, op) = (x.as_ptr().add(t0 * k), w.as_ptr().add(r0 * k), out.add(t0 * ldc + r0));
            match (tm, tr) {
                (4, 3) => block::<4, 3>(xp, wp, k, op, ldc),
                (3, 3) => block::<3, 3>(xp, wp, k, op, ldc),
                (2, 3) => block::<2, 3>(xp, wp, k, op, ldc),
                (1, 3) => block::<1, 3>(xp, wp, k, op, ldc),
                (4, 2) => block::<4, 2>(xp, wp, k, op, ldc),
                (3, 2) => block::<3, 2>(xp, wp, k, op, ldc),
                (2, 2) => block::<2, 2>(xp, wp, k, op, ldc),
                (1, 2) => block::<1, 2>(xp, wp, k, op, ldc),
                (4, _) => block::<4, 1>(xp, wp, k, op, ldc),
                (3, _) => block::<3, 1>(xp, wp, k, op, ldc),
                (2, _) => block::<2, 1>(xp, wp, k, op, ldc),
                _ => block::<1, 1>(xp, wp, k, op, ldc),
            }
            r0 += tr;
        }
        t0 += tm;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block<const TM: usize, const TR: usize>(x: *const f32, w: *const f32, k: usize, out: *mut f32, ldc: usize) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); TR]; TM];
    let mut kk = 0;
    while kk < k {
        let mut wv = [_mm256_setzero_ps(); TR];
        for (r, v) in wv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(w.add(r * k + kk));
        }
        for (t, a) in acc.iter_mut().enumerate() {
            let xv = _mm256_loadu_ps(x.add(t * k + kk));
            for r in 0..TR {
                a[r] = _mm256_fmadd_ps(xv, wv[r], a[r]);
            }
        }
        kk += 8;
    }
    for (t, a) in acc.iter().enumerate() {
        for (r, v) in a.iter().enumerate() {
            let h = _mm_add_ps(_mm256_castps256_ps128(*v), _mm256_extractf128_ps(*v, 1));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            *out.add(t * ldc + r) = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
        }
    }
}
