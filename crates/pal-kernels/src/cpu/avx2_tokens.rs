//! Token-major AVX2 loops: the scores and the P·V product of a tile for *every* KV head of a work
//! item, with keys in the outer loop and heads inside it, so that K and V are read in the pool's
//! own order (a token's rows for all heads are contiguous, and a page's tokens too).
//!
//! Why: the head-major loops in `avx2.rs` walk a tile once per head, reading 256-byte slices
//! 2 KiB apart (8 KV heads of 128 bf16). The hardware prefetchers do not follow that far, and the
//! tile's rows of one pass share two L1 sets per line offset. Read in token order the same bytes
//! form a sequential stream: on the 2-vCPU Zen 3 dev VM one core reads 24 GB/s sequentially and
//! 14 GB/s in the head-pass pattern. The price is a larger hot set in L1 (the q rows, or the
//! accumulators, of all heads of the item: 16 KiB for 8 heads x 4 rows x 128 f32), which is why
//! this order serves only items of up to 4 rows per head (decode), not prefill tiles.
//!
//! Same preconditions as `avx2.rs`: callers checked AVX2/FMA/F16C and run inside a
//! `#[target_feature]` function; slices are checked once per call, then read through pointers.

use super::avx2::{by_chunk, check_rows, prefetch_lines, reduce8, row_ptrs, Chunk, PV_GROUP};
use super::math::Ahead;
use pal_core::Element;
use std::arch::x86_64::*;

/// `s[(h * rows + r) * ld + t] = q_(h, r) · k_(t, h)` for `heads` heads of `rows <= 4` query rows;
/// query row `(h, r)` is `q[(h * rows + r) * d..][..d]` and key `t` of head `h` is
/// `kv[offs[t] + hoff + h * d..][..d]`. `ahead.rows[t]`: a token row (all heads) to pull into L1 while
/// key `t` is processed. When [`super::avx2::swaps_quads`] holds, `q` is in swapped-quads order.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn scores_heads<KV: Element>(
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
    check_rows(kv, offs, hoff, heads * d);
    assert!((1..=4).contains(&rows) && d.is_multiple_of(8) && offs.len() <= ld && q.len() >= heads * rows * d);
    assert!(heads == 0 || offs.is_empty() || s.len() >= (heads * rows - 1) * ld + offs.len());
    by_chunk!(KV, d, C => match rows {
        4 => scores_with::<KV, C, 4, 3>(q, heads, kv, offs, hoff, d, s, ld, ahead),
        3 => scores_with::<KV, C, 3, 2>(q, heads, kv, offs, hoff, d, s, ld, ahead),
        2 => scores_with::<KV, C, 2, 4>(q, heads, kv, offs, hoff, d, s, ld, ahead),
        _ => scores_with::<KV, C, 1, 8>(q, heads, kv, offs, hoff, d, s, ld, ahead),
    })
}

/// Blocks of `KB` keys: for each, every head's `R x KB` dot products (`R * KB <= 12`
/// accumulators, reduced together); the last `< KB` keys one at a time. Four rows take three
/// keys (12 accumulators): 2.5-4% faster decode on the dev VM than 4 x 2, whose 8 chains of
/// 4-cycle FMAs leave no slack at 2 FMAs per cycle; 3 x 4 spills (18 registers) and is slower.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn scores_with<KV: Element, C: Chunk<KV>, const R: usize, const KB: usize>(
    q: &[f32],
    heads: usize,
    kv: &[KV],
    offs: &[usize],
    hoff: usize,
    d: usize,
    s: &mut [f32],
    ld: usize,
    ahead: Ahead<'_>,
) {
    let n = offs.len();
    let ptrs = row_ptrs(kv, offs, hoff);
    let (qp, sp) = (q.as_ptr(), s.as_mut_ptr());
    let head_bytes = d * std::mem::size_of::<KV>();
    let mut t = 0;
    while t < n {
        let kb = if t + KB <= n { KB } else { 1 };
        for h in 0..heads {
            // The lines of this head's slice of the rows ahead.
            for k in 0..kb {
                prefetch_lines(&ahead, t + k, h * head_bytes, (h + 1) * head_bytes);
            }
            let q0 = qp.add(h * R * d);
            let s0 = sp.add(h * R * ld + t);
            if kb == KB {
                let mut keys = [ptrs[0]; KB];
                for (k, p) in keys.iter_mut().enumerate() {
                    *p = ptrs.get_unchecked(t + k).add(h * d);
                }
                score_block::<KV, C, R, KB>(q0, d, &keys, s0, ld);
            } else {
                let keys = [ptrs.get_unchecked(t).add(h * d)];
                score_block::<KV, C, R, 1>(q0, d, &keys, s0, ld);
            }
        }
        t += kb;
    }
}

/// The `R x KB` dot products of rows `q0 + i * d` with `keys[k]`, stored to `s0[i * ld + k]`;
/// `R * KB <= 12`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn score_block<KV: Element, C: Chunk<KV>, const R: usize, const KB: usize>(
    q0: *const f32,
    d: usize,
    keys: &[*const KV; KB],
    s0: *mut f32,
    ld: usize,
) {
    const { assert!(R * KB <= 12) };
    let halves = C::W / 8;
    let mut a = [_mm256_setzero_ps(); 12];
    let mut c = 0;
    while c < d {
        if KB <= 2 {
            // Both keys' chunks stay in registers; each q vector serves both.
            let mut x = [[_mm256_setzero_ps(); 2]; 2];
            for k in 0..KB {
                x[k] = C::load(keys[k].add(c));
            }
            for h in 0..halves {
                for i in 0..R {
                    let qv = _mm256_loadu_ps(q0.add(i * d + c + 8 * h));
                    for k in 0..KB {
                        a[i * KB + k] = _mm256_fmadd_ps(qv, x[k][h], a[i * KB + k]);
                    }
                }
            }
        } else {
            // One half of every key's chunk at a time (the other half is dead code).
            for h in 0..halves {
                let mut x = [_mm256_setzero_ps(); KB];
                for k in 0..KB {
                    x[k] = C::load_half(keys[k].add(c), h);
                }
                for i in 0..R {
                    let qv = _mm256_loadu_ps(q0.add(i * d + c + 8 * h));
                    for k in 0..KB {
                        a[i * KB + k] = _mm256_fmadd_ps(qv, x[k], a[i * KB + k]);
                    }
                }
            }
        }
        c += C::W;
    }
    if R * KB <= 8 {
        let mut b = [_mm256_setzero_ps(); 8];
        b.copy_from_slice(&a[..8]);
        store_block::<R, KB>(reduce8(&b), s0, ld);
    } else {
        let mut b = [_mm256_setzero_ps(); 8];
        b.copy_from_slice(&a[..8]);
        let mut c8 = [_mm256_setzero_ps(); 8];
        c8[..4].copy_from_slice(&a[8..12]);
        let mut lanes = [0f32; 16];
        _mm256_storeu_ps(lanes.as_mut_ptr(), reduce8(&b));
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), reduce8(&c8));
        for i in 0..R {
            for k in 0..KB {
                *s0.add(i * ld + k) = lanes[i * KB + k];
            }
        }
    }
}

/// `s0[i * ld + k] = lane i * KB + k of v`.
#[inline(always)]
unsafe fn store_block<const R: usize, const KB: usize>(v: __m256, s0: *mut f32, ld: usize) {
    match KB {
        8 => _mm256_storeu_ps(s0, v),
        4 => {
            _mm_storeu_ps(s0, _mm256_castps256_ps128(v));
            _mm_storeu_ps(s0.add(ld), _mm256_extractf128_ps::<1>(v));
        }
        2 => {
            let (lo, hi) = (_mm_castps_pd(_mm256_castps256_ps128(v)), _mm_castps_pd(_mm256_extractf128_ps::<1>(v)));
            _mm_store_sd(s0 as *mut f64, lo);
            if R > 1 {
                _mm_storeh_pd(s0.add(ld) as *mut f64, lo);
            }
            if R > 2 {
                _mm_store_sd(s0.add(2 * ld) as *mut f64, hi);
            }
            if R > 3 {
                _mm_storeh_pd(s0.add(3 * ld) as *mut f64, hi);
            }
        }
        _ => {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            for i in 0..R {
                *s0.add(i * ld) = lanes[i * KB];
            }
        }
    }
}

/// `acc[(h * rows + r) * d..] += sum_t p[(h * rows + r) * ld + t] * v_(t, h)` for `heads` heads of
/// `rows <= 4` rows; value `t` of head `h` is `kv[offs[t] + hoff + h * d..][..d]`. `ahead` as in
/// [`scores_heads`]. When [`super::avx2::swaps_quads`] holds, `acc` is in swapped-quads order.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn pv_heads<KV: Element>(
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
    check_rows(kv, offs, hoff, heads * d);
    assert!((1..=4).contains(&rows) && d.is_multiple_of(8) && offs.len() <= ld && acc.len() >= heads * rows * d);
    assert!(heads == 0 || offs.is_empty() || p.len() >= (heads * rows - 1) * ld + offs.len());
    by_chunk!(KV, d, C => match rows {
        4 => pv_with::<KV, C, 4, 1>(acc, heads, p, ld, kv, offs, hoff, d, ahead),
        3 => pv_with::<KV, C, 3, 1>(acc, heads, p, ld, kv, offs, hoff, d, ahead),
        2 => pv_with::<KV, C, 2, 2>(acc, heads, p, ld, kv, offs, hoff, d, ahead),
        _ => pv_with::<KV, C, 1, 4>(acc, heads, p, ld, kv, offs, hoff, d, ahead),
    })
}

/// Groups of [`PV_GROUP`] keys; per group and head, `CH` chunks of `W` dims at a time (`CH` as
/// many as keep up to 8 accumulators busy: fewer rows, more chunks), then single chunks.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pv_with<KV: Element, C: Chunk<KV>, const R: usize, const CH: usize>(
    acc: &mut [f32],
    heads: usize,
    p: &[f32],
    ld: usize,
    kv: &[KV],
    offs: &[usize],
    hoff: usize,
    d: usize,
    ahead: Ahead<'_>,
) {
    let n = offs.len();
    let ptrs = row_ptrs(kv, offs, hoff);
    let (ap, pp) = (acc.as_mut_ptr(), p.as_ptr());
    let size = std::mem::size_of::<KV>();
    let mut g = 0;
    while g < n {
        let g_end = (g + PV_GROUP).min(n);
        for h in 0..heads {
            let (a0, p0) = (ap.add(h * R * d), pp.add(h * R * ld));
            let mut c = 0;
            while c + CH * C::W <= d {
                let from = (h * d + c) * size;
                pv_span::<KV, C, R, CH>(a0, p0, ld, &ptrs, (g, g_end), h * d, c, d, &ahead, from);
                c += CH * C::W;
            }
            while c < d {
                let from = (h * d + c) * size;
                pv_span::<KV, C, R, 1>(a0, p0, ld, &ptrs, (g, g_end), h * d, c, d, &ahead, from);
                c += C::W;
            }
        }
        g = g_end;
    }
}

/// Dims `c..c + N * W` of one head's `R` rows over keys `g.0..g.1`; prefetches the lines of the
/// rows ahead that start within those bytes (`from` = byte offset of the span in a token row).
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
unsafe fn pv_span<KV: Element, C: Chunk<KV>, const R: usize, const N: usize>(
    a0: *mut f32,
    p0: *const f32,
    ld: usize,
    ptrs: &[*const KV; super::avx2::MAX_ROWS],
    g: (usize, usize),
    hoff: usize,
    c: usize,
    d: usize,
    ahead: &Ahead<'_>,
    from: usize,
) {
    let halves = C::W / 8;
    let to = from + N * C::W * std::mem::size_of::<KV>();
    let mut a = [_mm256_setzero_ps(); 8];
    for i in 0..R {
        for j in 0..N {
            for h in 0..halves {
                a[(i * N + j) * 2 + h] = _mm256_loadu_ps(a0.add(i * d + c + j * C::W + 8 * h));
            }
        }
    }
    for t in g.0..g.1 {
        prefetch_lines(ahead, t, from, to);
        let row = ptrs.get_unchecked(t).add(hoff + c);
        let mut pb = [_mm256_setzero_ps(); 4];
        for (i, b) in pb.iter_mut().enumerate().take(R) {
            *b = _mm256_broadcast_ss(&*p0.add(i * ld + t));
        }
        for j in 0..N {
            let v = C::load(row.add(j * C::W));
            for i in 0..R {
                for h in 0..halves {
                    let k = (i * N + j) * 2 + h;
                    a[k] = _mm256_fmadd_ps(pb[i], v[h], a[k]);
                }
            }
        }
    }
    for i in 0..R {
        for j in 0..N {
            for h in 0..halves {
                _mm256_storeu_ps(a0.add(i * d + c + j * C::W + 8 * h), a[(i * N + j) * 2 + h]);
            }
        }
    }
}
