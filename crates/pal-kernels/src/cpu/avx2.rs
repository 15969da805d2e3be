//! AVX2 + FMA versions of the inner loops, written with intrinsics because LLVM's auto-vectoriser
//! does not reliably keep several accumulators in registers. Every function is
//! `#[inline(always)]` and `unsafe`: callers must have checked that the CPU has AVX2 and FMA and
//! must call from a function compiled with those target features (see `cpu::decode`).
//! Slices are indexed through raw pointers after the length checks at the top of each function.

use pal_core::{DType, Element};
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// Eight consecutive elements of K or V storage as f32 (bf16: widen and shift; f16: F16C).
#[inline(always)]
unsafe fn load8<KV: Element>(p: *const KV) -> __m256 {
    match KV::DTYPE {
        DType::BF16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)))),
        DType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        DType::F32 => _mm256_loadu_ps(p as *const f32),
    }
}

/// Lane `i` of the result is the sum of the lanes of `a[i]`.
#[inline(always)]
unsafe fn reduce8(a: &[__m256; 8]) -> __m256 {
    let t0 = _mm256_hadd_ps(a[0], a[1]);
    let t1 = _mm256_hadd_ps(a[2], a[3]);
    let t2 = _mm256_hadd_ps(a[4], a[5]);
    let t3 = _mm256_hadd_ps(a[6], a[7]);
    let u0 = _mm256_hadd_ps(t0, t1);
    let u1 = _mm256_hadd_ps(t2, t3);
    _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(u0, u1), _mm256_permute2f128_ps::<0x31>(u0, u1))
}

/// Every `offs[t] + hoff + d` must lie within `kv`: checked once per call so that the loops
/// below can use unchecked pointer arithmetic.
#[inline(always)]
fn check_rows<KV>(kv: &[KV], offs: &[usize], hoff: usize, d: usize) {
    assert!(offs.iter().all(|&o| o + hoff + d <= kv.len()), "tile row outside its buffer");
}

/// `s[r * ld + t] = q_r · k_t`, where key row `t` is `kv[offs[t] + hoff ..][..d]` in storage
/// type; `d` a multiple of 8.
#[inline(always)]
pub(crate) unsafe fn scores<KV: Element>(q: &[f32], rows: usize, kv: &[KV], offs: &[usize], hoff: usize, d: usize, s: &mut [f32], ld: usize) {
    let n = offs.len();
    check_rows(kv, offs, hoff, d);
    assert!(q.len() >= rows * d && d % 8 == 0 && n <= ld);
    assert!(rows == 0 || n == 0 || s.len() >= (rows - 1) * ld + n);
    let (qp, sp) = (q.as_ptr(), s.as_mut_ptr());
    let key = |t: usize| kv.as_ptr().add(offs[t] + hoff);
    let mut r = 0;
    // 4 rows x 2 keys: 8 accumulators reduced together.
    while r + 4 <= rows {
        let q0 = qp.add(r * d);
        let mut t = 0;
        while t + 2 <= n {
            let (k0, k1) = (key(t), key(t + 1));
            let mut a = [_mm256_setzero_ps(); 8];
            let mut c = 0;
            while c < d {
                let (x0, x1) = (load8(k0.add(c)), load8(k1.add(c)));
                for i in 0..4 {
                    let qv = _mm256_loadu_ps(q0.add(i * d + c));
                    a[2 * i] = _mm256_fmadd_ps(qv, x0, a[2 * i]);
                    a[2 * i + 1] = _mm256_fmadd_ps(qv, x1, a[2 * i + 1]);
                }
                c += 8;
            }
            // Lanes: [r0k0, r0k1, r1k0, r1k1, r2k0, r2k1, r3k0, r3k1]; store key pairs per row.
            let v = reduce8(&a);
            let (lo, hi) = (_mm_castps_pd(_mm256_castps256_ps128(v)), _mm_castps_pd(_mm256_extractf128_ps::<1>(v)));
            _mm_store_sd(sp.add(r * ld + t) as *mut f64, lo);
            _mm_storeh_pd(sp.add((r + 1) * ld + t) as *mut f64, lo);
            _mm_store_sd(sp.add((r + 2) * ld + t) as *mut f64, hi);
            _mm_storeh_pd(sp.add((r + 3) * ld + t) as *mut f64, hi);
            t += 2;
        }
        if t < n {
            let k0 = key(t);
            let mut a = [_mm256_setzero_ps(); 4];
            let mut c = 0;
            while c < d {
                let x0 = load8(k0.add(c));
                for (i, acc) in a.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(q0.add(i * d + c)), x0, *acc);
                }
                c += 8;
            }
            for (i, acc) in a.iter().enumerate() {
                *sp.add((r + i) * ld + t) = hsum(*acc);
            }
        }
        r += 4;
    }
    // Remaining rows: 1 row x 8 keys, the 8 dot products reduced into one vector.
    while r < rows {
        let q0 = qp.add(r * d);
        let mut t = 0;
        while t + 8 <= n {
            let mut a = [_mm256_setzero_ps(); 8];
            let mut c = 0;
            while c < d {
                let qv = _mm256_loadu_ps(q0.add(c));
                for (j, acc) in a.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(qv, load8(key(t + j).add(c)), *acc);
                }
                c += 8;
            }
            _mm256_storeu_ps(sp.add(r * ld + t), reduce8(&a));
            t += 8;
        }
        while t < n {
            let k0 = key(t);
            let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut c = 0;
            while c + 16 <= d {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(q0.add(c)), load8(k0.add(c)), a);
                b = _mm256_fmadd_ps(_mm256_loadu_ps(q0.add(c + 8)), load8(k0.add(c + 8)), b);
                c += 16;
            }
            if c < d {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(q0.add(c)), load8(k0.add(c)), a);
            }
            *sp.add(r * ld + t) = hsum(_mm256_add_ps(a, b));
            t += 1;
        }
        r += 1;
    }
}

/// `acc[r] += sum_t p[r * ld + t] * v_t`, where value row `t` is `kv[offs[t] + hoff ..][..d]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn pv<KV: Element>(acc: &mut [f32], rows: usize, p: &[f32], ld: usize, kv: &[KV], offs: &[usize], hoff: usize, d: usize) {
    let n = offs.len();
    check_rows(kv, offs, hoff, d);
    assert!(acc.len() >= rows * d && d % 8 == 0 && n <= ld);
    assert!(rows == 0 || n == 0 || p.len() >= (rows - 1) * ld + n);
    let (ap, pp) = (acc.as_mut_ptr(), p.as_ptr());
    let val = |t: usize| kv.as_ptr().add(offs[t] + hoff);
    let mut r = 0;
    // 4 rows x 16 dims: 8 accumulators; per key 2 value loads and 4 broadcasts.
    while r + 4 <= rows {
        let mut c = 0;
        while c + 16 <= d {
            let mut a = [_mm256_setzero_ps(); 8];
            for i in 0..4 {
                a[2 * i] = _mm256_loadu_ps(ap.add((r + i) * d + c));
                a[2 * i + 1] = _mm256_loadu_ps(ap.add((r + i) * d + c + 8));
            }
            for t in 0..n {
                let v = val(t);
                let (v0, v1) = (load8(v.add(c)), load8(v.add(c + 8)));
                for i in 0..4 {
                    let pb = _mm256_broadcast_ss(&*pp.add((r + i) * ld + t));
                    a[2 * i] = _mm256_fmadd_ps(pb, v0, a[2 * i]);
                    a[2 * i + 1] = _mm256_fmadd_ps(pb, v1, a[2 * i + 1]);
                }
            }
            for i in 0..4 {
                _mm256_storeu_ps(ap.add((r + i) * d + c), a[2 * i]);
                _mm256_storeu_ps(ap.add((r + i) * d + c + 8), a[2 * i + 1]);
            }
            c += 16;
        }
        if c < d {
            let mut a = [_mm256_setzero_ps(); 4];
            for (i, x) in a.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(ap.add((r + i) * d + c));
            }
            for t in 0..n {
                let v0 = load8(val(t).add(c));
                for (i, x) in a.iter_mut().enumerate() {
                    *x = _mm256_fmadd_ps(_mm256_broadcast_ss(&*pp.add((r + i) * ld + t)), v0, *x);
                }
            }
            for (i, x) in a.iter().enumerate() {
                _mm256_storeu_ps(ap.add((r + i) * d + c), *x);
            }
        }
        r += 4;
    }
    while r < rows {
        let mut c = 0;
        while c < d {
            let w = if c + 32 <= d { 4 } else { (d - c) / 8 };
            let mut a = [_mm256_setzero_ps(); 4];
            for (j, x) in a.iter_mut().enumerate().take(w) {
                *x = _mm256_loadu_ps(ap.add(r * d + c + 8 * j));
            }
            for t in 0..n {
                let pb = _mm256_broadcast_ss(&*pp.add(r * ld + t));
                let v = val(t);
                for (j, x) in a.iter_mut().enumerate().take(w) {
                    *x = _mm256_fmadd_ps(pb, load8(v.add(c + 8 * j)), *x);
                }
            }
            for (j, x) in a.iter().enumerate().take(w) {
                _mm256_storeu_ps(ap.add(r * d + c + 8 * j), *x);
            }
            c += 8 * w;
        }
        r += 1;
    }
}

/// Eight lanes of `exp(x)` for `x <= 0`; exactly 0 below -87 (masked `-inf` scores). Same
/// algorithm as `math::exp_neg`: Cody-Waite reduction, then a degree-6 polynomial.
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    use super::math::{LN2_HI, LN2_LO};
    let lo = _mm256_set1_ps(-87.0);
    let xc = _mm256_max_ps(x, lo);
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.000_000_1e-1));
    let e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
    let s = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
    let v = _mm256_mul_ps(e, _mm256_castsi256_ps(s));
    // Zero where x < -87 (including -inf).
    _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_GE_OQ>(x, lo))
}

/// `x[i] = exp(x[i] - m)`; returns the sum.
#[inline(always)]
pub(crate) unsafe fn exp_shift_sum(x: &mut [f32], m: f32) -> f32 {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mv = _mm256_set1_ps(m);
    let mut sum = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv));
        _mm256_storeu_ps(p.add(i), e);
        sum = _mm256_add_ps(sum, e);
        i += 8;
    }
    let mut s = hsum(sum);
    while i < n {
        let mut lane = [0f32; 8];
        lane[0] = *p.add(i) - m;
        let e = exp8(_mm256_loadu_ps(lane.as_ptr()));
        let v = _mm256_cvtss_f32(e);
        *p.add(i) = v;
        s += v;
        i += 1;
    }
    s
}

/// Peak-rate probe for the benchmarks: `iters` rounds of 10 independent FMA chains.
#[inline(always)]
pub(crate) unsafe fn fma_burn(iters: usize, seed: f32) -> f32 {
    let m = _mm256_set1_ps(0.999_999);
    let c = _mm256_set1_ps(1e-7);
    let mut a = [_mm256_set1_ps(seed); 10];
    for _ in 0..iters {
        for x in a.iter_mut() {
            *x = _mm256_fmadd_ps(*x, m, c);
        }
    }
    let mut s = _mm256_setzero_ps();
    for x in a {
        s = _mm256_add_ps(s, x);
    }
    hsum(s)
}
