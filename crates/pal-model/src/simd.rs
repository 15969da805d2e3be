//! AVX2 kernels around the matrix products (x86-64 only, chosen at run time): SwiGLU with a
//! vector `exp`, the rounding of activations to 8-bit blocks, and [`gemm_nt_avx2`], an f32
//! register-blocked product for the formats without integer kernels (F32, F16, BF16) on
//! dequantized weight tiles. The integer kernels of packed groups are in
//! [`crate::packed_avx2`].

use crate::packed::ActBlock;

#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    })
}

/// `gate[i] = silu(gate[i]) * up[i]` (SwiGLU) with a vector `exp`: Cephes' degree-5 polynomial on
/// `[-ln2/2, ln2/2]` and an exponent built in the bits, within 2 ulp of `f32::exp` over the clamped
/// range `[-87.3, 88.3]` (outside it silu is `x` or `-0` to f32 precision anyway).
///
/// # Safety
/// AVX2 and FMA must be present; `up.len() >= gate.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn silu_mul_avx2(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let n8 = gate.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        let x = _mm256_loadu_ps(gate.as_ptr().add(i));
        let e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))));
    }
    for (g, &u) in gate[n8..].iter_mut().zip(&up[n8..]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3)), _mm256_set1_ps(88.3));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    // r = x - n ln2, with ln2 split in two for an exact first product.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    let pow2n =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    _mm256_mul_ps(y, pow2n)
}

/// [`crate::packed::quantize_acts`]: per block of 32, `d = amax / 127`, `q = round(x / d)`
/// (half to even), `s = d * sum(q)`; equal to the bit to the portable version.
///
/// # Safety
/// AVX2 must be present; `out` holds `x.len() / 32` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_acts_avx2(x: &[f32], out: &mut [ActBlock]) {
    use std::arch::x86_64::*;
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (b, a) in x.chunks_exact(32).zip(out.iter_mut()) {
        let p = b.as_ptr();
        let v = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))];
        let m01 = _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask));
        let m23 = _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask));
        let m = _mm256_max_ps(m01, m23);
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let q = v.map(|vi| {
            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(vi, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
        });
        // Sums of the two halves: [lo0+lo1, lo2+lo3, hi0+hi1, hi2+hi3 | lo4+lo5, ...], then
        // lanes 0 and 1 of the 128-bit sum and its pairwise sum hold lo and hi.
        let h = _mm256_hadd_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let h = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        let h = _mm_hadd_epi32(h, h);
        let (lo, hi) = (_mm_cvtsi128_si32(h), _mm_extract_epi32::<1>(h));
        a.half_sums = [lo as i16, hi as i16];
        let s = lo + hi;
        // packs interleave 128-bit lanes; the permutation restores element order.
        let q16 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256(a.qs.as_mut_ptr() as *mut __m256i, _mm256_permutevar8x32_epi32(q16, order));
        a.d = d;
        a.s = d * s as f32;
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
