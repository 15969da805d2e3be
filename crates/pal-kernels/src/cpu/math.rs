//! The inner loops behind one trait, [`Isa`], with two implementations: [`Plain`] (portable
//! Rust the compiler may vectorise) and, on x86-64, [`Avx2`] (intrinsics, see `avx2.rs`). Kernels
//! are generic over the ISA and instantiated inside `#[target_feature]` trampolines, so the AVX2
//! loops are compiled with AVX2 enabled while the binary still runs on any x86-64.

use pal_core::Element;

/// Rows a loop should pull toward L1 while it runs, one per key it processes: `rows[t]` is the
/// first byte of the row that the *next* pass over the tile will read in place of key `t`, and
/// `bytes` its length. The lead is one pass (a few KiB), short enough to stay in L1 and long
/// enough to cover DRAM latency; `rows` may be shorter than the tile (or empty: no prefetch).
#[derive(Clone, Copy)]
pub(crate) struct Ahead<'a> {
    pub rows: &'a [*const u8],
    pub bytes: usize,
}

impl Ahead<'_> {
    pub const NONE: Ahead<'static> = Ahead { rows: &[], bytes: 0 };
}

/// Inner loops of the attention engine.
pub(crate) trait Isa: Copy + Send + Sync + 'static {
    /// `s[r * ld + t] = q_r · k_t` for `rows` query rows; key row `t` is `kv[offs[t] + hoff..][..d]`
    /// in storage type.
    #[allow(clippy::too_many_arguments)]
    fn scores<KV: Element>(
        self,
        q: &[f32],
        rows: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        s: &mut [f32],
        ld: usize,
        ahead: Ahead<'_>,
    );
    /// `acc[r] += sum_t p[r * ld + t] * v_t` for `rows` rows; value row `t` is
    /// `kv[offs[t] + hoff..][..d]`.
    #[allow(clippy::too_many_arguments)]
    fn pv<KV: Element>(
        self,
        acc: &mut [f32],
        rows: usize,
        p: &[f32],
        ld: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        ahead: Ahead<'_>,
    );
    /// [`Isa::scores`] for `heads` consecutive KV heads of `rows` rows each, keys in the outer
    /// loop: `s[(h * rows + r) * ld + t] = q_(h, r) · k_(t, h)`, query row `(h, r)` at
    /// `q[(h * rows + r) * d..]`, key `t` of head `h` at `kv[offs[t] + hoff + h * d..]`. `ahead.rows[t]`
    /// is a whole token row (all heads). Only for `rows <= 4` (see `avx2_tokens`).
    #[allow(clippy::too_many_arguments)]
    fn scores_heads<KV: Element>(
        self,
        q: &[f32],
        heads: usize,
        rows: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        s: &mut [f32],
        ld: usize,
        _ahead: Ahead<'_>,
    ) {
        for h in 0..heads {
            self.scores(&q[h * rows * d..], rows, kv, offs, hoff + h * d, d, &mut s[h * rows * ld..], ld, Ahead::NONE);
        }
    }
    /// [`Isa::pv`] for `heads` consecutive KV heads of `rows` rows each, keys in the outer loop
    /// (layout as in [`Isa::scores_heads`]).
    #[allow(clippy::too_many_arguments)]
    fn pv_heads<KV: Element>(
        self,
        acc: &mut [f32],
        heads: usize,
        rows: usize,
        p: &[f32],
        ld: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        _ahead: Ahead<'_>,
    ) {
        for h in 0..heads {
            self.pv(&mut acc[h * rows * d..], rows, &p[h * rows * ld..], ld, kv, offs, hoff + h * d, d, Ahead::NONE);
        }
    }
    /// `x[i] = exp(x[i] - m)` (all `x[i] - m <= 0`); returns the sum.
    fn exp_shift_sum(self, x: &mut [f32], m: f32) -> f32;
    /// `exp(x)` for one `x <= 0`.
    fn exp1(self, x: f32) -> f32;
    /// Whether `scores`/`pv` expect q and the accumulators of `KV` rows of width `d` in the
    /// swapped-quads order of `avx2::swap_quads` (a layout trick that halves bf16 widening).
    fn swaps_quads<KV: Element>(self, _d: usize) -> bool {
        false
    }
}

/// Portable loops.
#[derive(Clone, Copy)]
pub(crate) struct Plain;

impl Isa for Plain {
    #[inline(always)]
    fn scores<KV: Element>(
        self,
        q: &[f32],
        rows: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        s: &mut [f32],
        ld: usize,
        _ahead: Ahead<'_>,
    ) {
        let mut k = [0f32; pal_core::HeadConfig::MAX_HEAD_DIM];
        for (t, &o) in offs.iter().enumerate() {
            KV::load_row(&kv[o + hoff..o + hoff + d], &mut k[..d]);
            scores_one_key(q, rows, &k[..d], d, &mut s[t..], ld);
        }
    }
    #[inline(always)]
    fn pv<KV: Element>(
        self,
        acc: &mut [f32],
        rows: usize,
        p: &[f32],
        ld: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        _ahead: Ahead<'_>,
    ) {
        let mut v = [0f32; pal_core::HeadConfig::MAX_HEAD_DIM];
        for (t, &o) in offs.iter().enumerate() {
            KV::load_row(&kv[o + hoff..o + hoff + d], &mut v[..d]);
            for r in 0..rows {
                let pt = p[r * ld + t];
                if pt != 0.0 {
                    for (a, x) in acc[r * d..(r + 1) * d].iter_mut().zip(&v[..d]) {
                        *a += pt * x;
                    }
                }
            }
        }
    }
    #[inline(always)]
    fn exp_shift_sum(self, x: &mut [f32], m: f32) -> f32 {
        exp_shift_sum(x, m)
    }
    #[inline(always)]
    fn exp1(self, x: f32) -> f32 {
        exp_neg(x)
    }
}

/// AVX2 + FMA loops. Only [`Avx2::detect`] makes one, so holding an `Avx2` proves the CPU has
/// the features; kernels must still run it inside a `#[target_feature]` function for speed.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx2(());

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    pub fn detect() -> Option<Self> {
        super::uses_avx2().then_some(Avx2(()))
    }
}

#[cfg(target_arch = "x86_64")]
impl Isa for Avx2 {
    #[inline(always)]
    fn scores<KV: Element>(
        self,
        q: &[f32],
        rows: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        s: &mut [f32],
        ld: usize,
        ahead: Ahead<'_>,
    ) {
        // SAFETY: an `Avx2` exists only when the CPU has AVX2, FMA and F16C; `scores` checks
        // every row against `kv` before reading.
        unsafe { super::avx2::scores(q, rows, kv, offs, hoff, d, s, ld, ahead) }
    }
    #[inline(always)]
    fn pv<KV: Element>(
        self,
        acc: &mut [f32],
        rows: usize,
        p: &[f32],
        ld: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        ahead: Ahead<'_>,
    ) {
        // SAFETY: as above.
        unsafe { super::avx2::pv(acc, rows, p, ld, kv, offs, hoff, d, ahead) }
    }
    #[inline(always)]
    fn scores_heads<KV: Element>(
        self,
        q: &[f32],
        heads: usize,
        rows: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        s: &mut [f32],
        ld: usize,
        ahead: Ahead<'_>,
    ) {
        // SAFETY: as above (every token row is checked for all heads).
        unsafe { super::avx2_tokens::scores_heads(q, heads, rows, kv, offs, hoff, d, s, ld, ahead) }
    }
    #[inline(always)]
    fn pv_heads<KV: Element>(
        self,
        acc: &mut [f32],
        heads: usize,
        rows: usize,
        p: &[f32],
        ld: usize,
        kv: &[KV],
        offs: &[usize],
        hoff: usize,
        d: usize,
        ahead: Ahead<'_>,
    ) {
        // SAFETY: as above.
        unsafe { super::avx2_tokens::pv_heads(acc, heads, rows, p, ld, kv, offs, hoff, d, ahead) }
    }
    #[inline(always)]
    fn exp_shift_sum(self, x: &mut [f32], m: f32) -> f32 {
        // SAFETY: as above.
        unsafe { super::avx2::exp_shift_sum(x, m) }
    }
    #[inline(always)]
    fn exp1(self, x: f32) -> f32 {
        exp_neg(x)
    }
    #[inline(always)]
    fn swaps_quads<KV: Element>(self, d: usize) -> bool {
        super::avx2::swaps_quads::<KV>(d)
    }
}

#[inline(always)]
fn hsum8(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// Largest element (`-inf` for an empty slice; NaN-free input). Eight independent lanes, so the
/// compiler emits a vector max instead of a serial chain of scalar ones (a fold over `f32::max`
/// is a 32-long latency chain per tile row).
#[inline(always)]
pub(crate) fn max_of(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
        }
    }
    for &v in chunks.remainder() {
        m[0] = if v > m[0] { v } else { m[0] };
    }
    let a = [m[0].max(m[4]), m[1].max(m[5]), m[2].max(m[6]), m[3].max(m[7])];
    a[0].max(a[2]).max(a[1].max(a[3]))
}

/// Dot product; `a.len() == b.len()`, a multiple of 8.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut x = [0f32; 8];
    let mut y = [0f32; 8];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (p, q) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            x[i] += p[i] * q[i];
            y[i] += p[8 + i] * q[8 + i];
        }
    }
    for (p, q) in ca.remainder().chunks_exact(8).zip(cb.remainder().chunks_exact(8)) {
        for i in 0..8 {
            x[i] += p[i] * q[i];
        }
    }
    for i in 0..8 {
        x[i] += y[i];
    }
    hsum8(x)
}

/// Four dot products sharing `k`: rows `q[0..d]`, `q[d..2d]`, `q[2d..3d]`, `q[3d..4d]`.
#[inline(always)]
pub(crate) fn dot4(q: &[f32], k: &[f32], d: usize) -> [f32; 4] {
    let (q0, rest) = q.split_at(d);
    let (q1, rest) = rest.split_at(d);
    let (q2, rest) = rest.split_at(d);
    let q3 = &rest[..d];
    let mut acc = [[0f32; 8]; 4];
    let it = k
        .chunks_exact(8)
        .zip(q0.chunks_exact(8))
        .zip(q1.chunks_exact(8))
        .zip(q2.chunks_exact(8))
        .zip(q3.chunks_exact(8));
    for ((((kc, a), b), c), e) in it {
        for i in 0..8 {
            acc[0][i] += a[i] * kc[i];
            acc[1][i] += b[i] * kc[i];
            acc[2][i] += c[i] * kc[i];
            acc[3][i] += e[i] * kc[i];
        }
    }
    [hsum8(acc[0]), hsum8(acc[1]), hsum8(acc[2]), hsum8(acc[3])]
}

/// `s[r * ld] = q_r · k` for `rows` query rows against one key row `k` (width `d`).
#[inline(always)]
fn scores_one_key(q: &[f32], rows: usize, k: &[f32], d: usize, s: &mut [f32], ld: usize) {
    let mut r = 0;
    while r + 4 <= rows {
        for (i, x) in dot4(&q[r * d..(r + 4) * d], k, d).into_iter().enumerate() {
            s[(r + i) * ld] = x;
        }
        r += 4;
    }
    while r < rows {
        s[r * ld] = dot(&q[r * d..(r + 1) * d], k);
        r += 1;
    }
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n * LN2_HI` is exact for |n| < 2^10.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;

/// `exp(x)` for `x <= 0` (softmax exponents), relative error below 2e-7; exactly 0 below -87
/// (so masked `-inf` scores give 0). Branch-free, so loops over it vectorise.
#[inline(always)]
pub(crate) fn exp_neg(x: f32) -> f32 {
    let xc = x.max(-87.0);
    // n = round(x / ln 2) by the magic-number trick (vectorises, unlike `round`), then Cody-Waite:
    // r = x - n ln2 in two steps so that r keeps full precision even for large |x|.
    let n = (xc * LOG2E + 12582912.0) - 12582912.0;
    let r = n * -LN2_LO + (n * -LN2_HI + xc);
    // e^r on [-ln2/2, ln2/2] (Cephes expf coefficients).
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

/// `x[i] = exp(x[i] - m)`; returns the sum.
#[inline(always)]
pub(crate) fn exp_shift_sum(x: &mut [f32], m: f32) -> f32 {
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = exp_neg(*v - m);
        sum += *v;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_of_matches_a_serial_fold() {
        // Fresh values each run; every length up to three vectors plus a tail, the maximum in
        // every position, and all--inf rows (fully masked tiles).
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 200.0 - 100.0
        };
        for n in 0..27 {
            let base: Vec<f32> = (0..n).map(|_| next()).collect();
            for peak in 0..n {
                let mut x = base.clone();
                x[peak] = 1e6;
                assert_eq!(max_of(&x), 1e6, "seed {seed} n {n} peak {peak}");
            }
            let want = base.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert_eq!(max_of(&base), want, "seed {seed} n {n}");
            assert_eq!(max_of(&vec![f32::NEG_INFINITY; n]), f32::NEG_INFINITY);
        }
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0f64;
        for i in 0..200_000 {
            // Down to -87; below that exp_neg returns exactly 0 (the true value is < 1.7e-38).
            let x = -(i as f32) * 4.35e-4;
            let e = exp_neg(x) as f64;
            let r = (x as f64).exp();
            worst = worst.max(((e - r) / r).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_neg(-90.0), 0.0);
        assert_eq!(exp_neg(0.0), 1.0);
    }

    #[test]
    fn dots_match_naive() {
        for d in [8, 16, 24, 64, 80, 96, 128, 256] {
            let q: Vec<f32> = (0..4 * d).map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0).collect();
            let k: Vec<f32> = (0..d).map(|i| ((i * 104729) % 97) as f32 / 40.0 - 1.2).collect();
            let naive: Vec<f64> = (0..4).map(|r| (0..d).map(|i| q[r * d + i] as f64 * k[i] as f64).sum()).collect();
            let four = dot4(&q, &k, d);
            for r in 0..4 {
                assert!((four[r] as f64 - naive[r]).abs() < 1e-4);
                assert!((dot(&q[r * d..(r + 1) * d], &k) as f64 - naive[r]).abs() < 1e-4);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod avx2_tests {
    use super::*;
    use pal_core::{bf16, f16};

    fn agree<KV: Element>() {
        let Some(avx) = Avx2::detect() else { return };
        let mut rng = crate::testing::Rng::new(crate::testing::fresh_seed());
        for d in [8, 24, 64, 80, 96, 128, 256] {
            for (rows, n) in [(1, 1), (1, 9), (3, 5), (4, 16), (7, 32), (8, 9)] {
                let q: Vec<f32> = (0..rows * d).map(|_| rng.uniform()).collect();
                // Rows of width 2d scattered in a buffer; the kernels read the second head (hoff = d).
                let kv: Vec<KV> = rng.fill(40 * 2 * d, 1.0);
                let mut offs: Vec<usize> = (0..40).map(|i| i * 2 * d).collect();
                rng.shuffle(&mut offs);
                let offs = &offs[..n];
                // Prefetch the first head's rows of the same keys (any valid address works).
                let rows_ahead: Vec<*const u8> = offs.iter().map(|&o| kv[o..].as_ptr() as *const u8).collect();
                let ahead = Ahead { rows: &rows_ahead, bytes: d * std::mem::size_of::<KV>() };
                let ld = 32;
                let swap = avx.swaps_quads::<KV>(d);
                let permuted = |x: &[f32]| {
                    let mut y = x.to_vec();
                    if swap {
                        for row in y.chunks_exact_mut(d) {
                            crate::cpu::avx2::swap_quads(row);
                        }
                    }
                    y
                };
                let (mut s1, mut s2) = (vec![0f32; rows * ld], vec![0f32; rows * ld]);
                Plain.scores(&q, rows, &kv, offs, d, d, &mut s1, ld, Ahead::NONE);
                avx.scores(&permuted(&q), rows, &kv, offs, d, d, &mut s2, ld, ahead);
                for (a, b) in s1.iter().zip(&s2) {
                    assert!((a - b).abs() < 1e-4, "scores d={d} rows={rows} n={n}: {a} {b}");
                }
                let p: Vec<f32> = (0..rows * ld).map(|_| rng.uniform().abs()).collect();
                let mut a1: Vec<f32> = (0..rows * d).map(|_| rng.uniform()).collect();
                let mut a2 = permuted(&a1);
                Plain.pv(&mut a1, rows, &p, ld, &kv, offs, d, d, Ahead::NONE);
                avx.pv(&mut a2, rows, &p, ld, &kv, offs, d, d, ahead);
                for (a, b) in a1.iter().zip(&permuted(&a2)) {
                    assert!((a - b).abs() < 1e-4, "pv d={d} rows={rows} n={n}");
                }
            }
        }
    }

    /// The token-major loops (all heads of a tile, keys outermost) against the portable per-head
    /// loops: every row count they take, head dims that leave chunk tails, tiles that leave key
    /// tails, rows scattered in the pool, and prefetch rows that run past the tile.
    fn agree_token_major<KV: Element>() {
        let Some(avx) = Avx2::detect() else { return };
        let mut rng = crate::testing::Rng::new(crate::testing::fresh_seed());
        for d in [8, 24, 64, 80, 128] {
            for heads in [1, 3] {
                for rows in 1..=4 {
                    for n in [1, 7, 9, 32] {
                        // Token rows of `heads + 1` heads; the item's heads start at the second.
                        let width = (heads + 1) * d;
                        let kv: Vec<KV> = rng.fill(40 * width, 1.0);
                        let mut offs: Vec<usize> = (0..40).map(|i| i * width).collect();
                        rng.shuffle(&mut offs);
                        let offs = &offs[..n];
                        let rows_ahead: Vec<*const u8> =
                            offs.iter().skip(n / 2).map(|&o| kv[o + d..].as_ptr() as *const u8).collect();
                        let ahead = Ahead { rows: &rows_ahead, bytes: heads * d * std::mem::size_of::<KV>() };
                        let swap = avx.swaps_quads::<KV>(d);
                        let permuted = |x: &[f32]| {
                            let mut y = x.to_vec();
                            if swap {
                                for row in y.chunks_exact_mut(d) {
                                    crate::cpu::avx2::swap_quads(row);
                                }
                            }
                            y
                        };
                        let (all, ld) = (heads * rows, 33);
                        let q: Vec<f32> = (0..all * d).map(|_| rng.uniform()).collect();
                        let (mut s1, mut s2) = (vec![0f32; all * ld], vec![f32::NAN; all * ld]);
                        Plain.scores_heads(&q, heads, rows, &kv, offs, d, d, &mut s1, ld, Ahead::NONE);
                        avx.scores_heads(&permuted(&q), heads, rows, &kv, offs, d, d, &mut s2, ld, ahead);
                        for r in 0..all {
                            for t in 0..n {
                                let (a, b) = (s1[r * ld + t], s2[r * ld + t]);
                                assert!((a - b).abs() < 1e-4, "scores d={d} heads={heads} rows={rows} n={n}: {a} {b}");
                            }
                        }
                        let p: Vec<f32> = (0..all * ld).map(|_| rng.uniform().abs()).collect();
                        let mut a1: Vec<f32> = (0..all * d).map(|_| rng.uniform()).collect();
                        let mut a2 = permuted(&a1);
                        Plain.pv_heads(&mut a1, heads, rows, &p, ld, &kv, offs, d, d, Ahead::NONE);
                        avx.pv_heads(&mut a2, heads, rows, &p, ld, &kv, offs, d, d, ahead);
                        for (a, b) in a1.iter().zip(&permuted(&a2)) {
                            assert!((a - b).abs() < 1e-4, "pv d={d} heads={heads} rows={rows} n={n}: {a} {b}");
                        }
                    }
                }
            }
        }
    }

    /// The AVX2 loops agree with the portable ones for every storage type.
    #[test]
    fn avx2_and_portable_paths_agree() {
        agree::<f32>();
        agree::<f16>();
        agree::<bf16>();
        agree_token_major::<f32>();
        agree_token_major::<f16>();
        agree_token_major::<bf16>();
        let Some(avx) = Avx2::detect() else { return };
        let mut x1: Vec<f32> = (0..37).map(|i| -(i as f32) * 2.5).collect();
        x1[5] = f32::NEG_INFINITY;
        let mut x2 = x1.clone();
        let (s1, s2) = (Plain.exp_shift_sum(&mut x1, 0.5), avx.exp_shift_sum(&mut x2, 0.5));
        assert!((s1 - s2).abs() < 1e-6 * s1.abs());
        for (a, b) in x1.iter().zip(&x2) {
            assert!((a - b).abs() <= 1e-6 * a.abs());
        }
        assert_eq!(x2[5], 0.0);
    }
}
