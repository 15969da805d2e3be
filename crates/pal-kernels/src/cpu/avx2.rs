//! AVX2 + FMA versions of the inner loops, written with intrinsics because LLVM's auto-vectoriser
//! does not reliably keep several accumulators in registers (and one widening load in assembly,
//! [`unpack_from`], where LLVM's own choice spilled). Every function is
//! `#[inline(always)]` and `unsafe`: callers must have checked that the CPU has AVX2 and FMA and
//! must call from a function compiled with those target features (see `cpu::decode`).
//! Slices are indexed through raw pointers after the length checks at the top of each function.

use super::math::Ahead;
use pal_core::{DType, Element};
use std::arch::x86_64::*;

/// Prefetch into L1 the line at byte `line` of row `t` of `ahead` (no-op past the end of its
/// rows). A prefetch is a hint: it never faults, so the address is formed with `wrapping_add`.
#[inline(always)]
pub(super) unsafe fn prefetch_line(ahead: &Ahead<'_>, t: usize, line: usize) {
    if t < ahead.rows.len() {
        _mm_prefetch::<_MM_HINT_T0>(ahead.rows.get_unchecked(t).wrapping_add(line) as *const i8);
    }
}

/// Prefetch every line of row `t` of `ahead`.
#[inline(always)]
unsafe fn prefetch_row(ahead: &Ahead<'_>, t: usize) {
    if t < ahead.rows.len() {
        let p = *ahead.rows.get_unchecked(t);
        let mut b = 0;
        while b < ahead.bytes {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(b) as *const i8);
            b += 64;
        }
    }
}

/// The line of the next pass's rows that starts within bytes `from..to` of a row, if any: a
/// loop that walks rows chunk by chunk prefetches it while it reads that chunk.
#[inline(always)]
pub(super) fn line_in(ahead: &Ahead<'_>, from: usize, to: usize) -> Option<usize> {
    let line = from.next_multiple_of(64);
    (line < to && line < ahead.bytes).then_some(line)
}

/// Prefetch the lines of row `t` of `ahead` that start within bytes `from..to` of the row.
#[inline(always)]
pub(super) unsafe fn prefetch_lines(ahead: &Ahead<'_>, t: usize, from: usize, to: usize) {
    let mut line = from.next_multiple_of(64);
    while line < to && line < ahead.bytes {
        prefetch_line(ahead, t, line);
        line += 64;
    }
}

#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// Eight consecutive elements of K or V storage as f32 (bf16: widen and shift; f16: F16C).
#[inline(always)]
unsafe fn load8<KV: Element>(p: *const KV) -> __m256 {
    match KV::DTYPE {
        DType::BF16 => {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i))))
        }
        DType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        DType::F32 => _mm256_loadu_ps(p as *const f32),
    }
}

/// Lane `i` of the result is the sum of the lanes of `a[i]`.
#[inline(always)]
pub(super) unsafe fn reduce8(a: &[__m256; 8]) -> __m256 {
    let t0 = _mm256_hadd_ps(a[0], a[1]);
    let t1 = _mm256_hadd_ps(a[2], a[3]);
    let t2 = _mm256_hadd_ps(a[4], a[5]);
    let t3 = _mm256_hadd_ps(a[6], a[7]);
    let u0 = _mm256_hadd_ps(t0, t1);
    let u1 = _mm256_hadd_ps(t2, t3);
    _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(u0, u1), _mm256_permute2f128_ps::<0x31>(u0, u1))
}

/// Most rows one call handles (the attention tile).
pub(crate) const MAX_ROWS: usize = 64;

/// Row start pointers, computed once per call so the inner loops do one load per row.
#[inline(always)]
pub(super) unsafe fn row_ptrs<KV>(kv: &[KV], offs: &[usize], hoff: usize) -> [*const KV; MAX_ROWS] {
    let mut p = [kv.as_ptr(); MAX_ROWS];
    for (x, &o) in p.iter_mut().zip(offs) {
        *x = kv.as_ptr().add(o + hoff);
    }
    p
}

/// Every `offs[t] + hoff + d` must lie within `kv`: checked once per call so that the loops
/// below can use unchecked pointer arithmetic.
#[inline(always)]
pub(super) fn check_rows<KV>(kv: &[KV], offs: &[usize], hoff: usize, d: usize) {
    assert!(offs.len() <= MAX_ROWS && offs.iter().all(|&o| o + hoff + d <= kv.len()), "tile row outside its buffer");
}

/// Whether the loops read `KV` rows of width `d` in "swapped quads" order: bf16 rows are widened
/// 16 at a time with two in-lane unpacks, which yields dims `0-3, 8-11` then `4-7, 12-15` of each
/// 16. Callers then keep q and the output accumulators in that order (see [`swap_quads`]).
#[inline(always)]
pub(crate) fn swaps_quads<KV: Element>(d: usize) -> bool {
    KV::DTYPE == DType::BF16 && d.is_multiple_of(16)
}

/// Swap dims `4..8` and `8..12` of every 16 (its own inverse).
#[inline(always)]
pub(crate) fn swap_quads(x: &mut [f32]) {
    for c in x.chunks_exact_mut(16) {
        let (a, b) = c.split_at_mut(8);
        a[4..8].swap_with_slice(&mut b[..4]);
    }
}

/// How a loop reads `W` consecutive elements of a K/V row as `W / 8` f32 vectors.
pub(super) trait Chunk<KV> {
    const W: usize;
    unsafe fn load(p: *const KV) -> [__m256; 2];
    /// Vector `h` of [`Chunk::load`] alone, read from memory by the instruction that widens it.
    #[inline(always)]
    unsafe fn load_half(p: *const KV, h: usize) -> __m256 {
        Self::load(p)[h]
    }
}

/// 8 elements per step, natural order.
pub(super) struct By8;
/// 16 elements per step, natural order.
pub(super) struct By16;
/// 16 bf16 per step in swapped-quads order: one load, two unpacks.
pub(super) struct Bf16Swapped;

impl<KV: Element> Chunk<KV> for By8 {
    const W: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const KV) -> [__m256; 2] {
        [load8(p), _mm256_setzero_ps()]
    }
}
impl<KV: Element> Chunk<KV> for By16 {
    const W: usize = 16;
    #[inline(always)]
    unsafe fn load(p: *const KV) -> [__m256; 2] {
        [load8(p), load8(p.add(8))]
    }
}
impl<KV: Element> Chunk<KV> for Bf16Swapped {
    const W: usize = 16;
    #[inline(always)]
    unsafe fn load(p: *const KV) -> [__m256; 2] {
        let x = _mm256_loadu_si256(p as *const __m256i);
        let z = _mm256_setzero_si256();
        [_mm256_castsi256_ps(_mm256_unpacklo_epi16(z, x)), _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, x))]
    }
    #[inline(always)]
    unsafe fn load_half(p: *const KV, h: usize) -> __m256 {
        unpack_from(p as *const u8, h)
    }
}

/// Half `h` of a 32-byte bf16 chunk at `p` widened to f32 (`vpunpck{l,h}wd` with a memory
/// operand). In assembly because LLVM merges the two halves' identical loads into one register
/// and, where a loop keeps several chunks alive, spills it to the stack and reloads it: in the
/// 4 x 3 scores block (`avx2_tokens::score_block`) that reload cost up to 1.75x the whole decode,
/// depending on where the frame put the slot (BENCHMARKS.md, eighth session).
///
/// # Safety
/// AVX2 must be present; `p` must be valid for reads of 32 bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn unpack_from(p: *const u8, h: usize) -> __m256 {
    let z = _mm256_setzero_si256();
    let x: __m256i;
    if h == 0 {
        std::arch::asm!("vpunpcklwd {x}, {z}, ymmword ptr [{p}]", x = lateout(ymm_reg) x, z = in(ymm_reg) z,
            p = in(reg) p, options(pure, readonly, nostack, preserves_flags));
    } else {
        std::arch::asm!("vpunpckhwd {x}, {z}, ymmword ptr [{p}]", x = lateout(ymm_reg) x, z = in(ymm_reg) z,
            p = in(reg) p, options(pure, readonly, nostack, preserves_flags));
    }
    _mm256_castsi256_ps(x)
}

/// Evaluates `$body` with the type `$c` bound to the [`Chunk`] reader for `$kv` rows of width
/// `$d`: swapped-quads bf16 where [`swaps_quads`] holds, else 16 or 8 elements per step.
macro_rules! by_chunk {
    ($kv:ty, $d:expr, $c:ident => $body:expr) => {
        if $crate::cpu::avx2::swaps_quads::<$kv>($d) {
            type $c = $crate::cpu::avx2::Bf16Swapped;
            $body
        } else if ($d).is_multiple_of(16) {
            type $c = $crate::cpu::avx2::By16;
            $body
        } else {
            type $c = $crate::cpu::avx2::By8;
            $body
        }
    };
}
pub(super) use by_chunk;

/// `s[r * ld + t] = q_r · k_t`, where key row `t` is `kv[offs[t] + hoff ..][..d]` in storage
/// type; `d` a multiple of 8. When [`swaps_quads`] holds, `q` must be in swapped-quads order.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn scores<KV: Element>(
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
    check_rows(kv, offs, hoff, d);
    assert!(q.len() >= rows * d && d.is_multiple_of(8) && offs.len() <= ld);
    assert!(rows == 0 || offs.is_empty() || s.len() >= (rows - 1) * ld + offs.len());
    by_chunk!(KV, d, C => scores_with::<KV, C>(q, rows, kv, offs, hoff, d, s, ld, ahead))
}

#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
unsafe fn scores_with<KV: Element, C: Chunk<KV>>(
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
    let n = offs.len();
    let (qp, sp) = (q.as_ptr(), s.as_mut_ptr());
    let ptrs = row_ptrs(kv, offs, hoff);
    let key = |t: usize| *ptrs.get_unchecked(t);
    let halves = C::W / 8;
    let mut r = 0;
    // Only the first block of rows prefetches: it alone reads every key's row.
    let mut ahead = ahead;
    // Blocks of 4 rows (then one of 3 or 2: GQA groups of 3 and 6 are common) share each key load.
    while r + 4 <= rows {
        score_rows::<KV, C, 4>(qp.add(r * d), &ptrs, n, d, sp.add(r * ld), ld, ahead);
        ahead = Ahead::NONE;
        r += 4;
    }
    match rows - r {
        3 => {
            score_rows::<KV, C, 3>(qp.add(r * d), &ptrs, n, d, sp.add(r * ld), ld, ahead);
            ahead = Ahead::NONE;
            r = rows;
        }
        2 => {
            score_rows::<KV, C, 2>(qp.add(r * d), &ptrs, n, d, sp.add(r * ld), ld, ahead);
            ahead = Ahead::NONE;
            r = rows;
        }
        _ => {}
    }
    // Remaining rows: 1 row x 8 keys, the 8 dot products reduced into one vector.
    while r < rows {
        let q0 = qp.add(r * d);
        let mut t = 0;
        while t + 8 <= n {
            for j in 0..8 {
                prefetch_row(&ahead, t + j);
            }
            let mut a = [_mm256_setzero_ps(); 8];
            let mut c = 0;
            while c < d {
                for h in 0..halves {
                    let qv = _mm256_loadu_ps(q0.add(c + 8 * h));
                    for (j, acc) in a.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(qv, C::load(key(t + j).add(c))[h], *acc);
                    }
                }
                c += C::W;
            }
            _mm256_storeu_ps(sp.add(r * ld + t), reduce8(&a));
            t += 8;
        }
        while t < n {
            prefetch_row(&ahead, t);
            let k0 = key(t);
            let mut a = [_mm256_setzero_ps(); 2];
            let mut c = 0;
            while c < d {
                let x = C::load(k0.add(c));
                for h in 0..halves {
                    a[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q0.add(c + 8 * h)), x[h], a[h]);
                }
                c += C::W;
            }
            *sp.add(r * ld + t) = hsum(_mm256_add_ps(a[0], a[1]));
            t += 1;
        }
        ahead = Ahead::NONE;
        r += 1;
    }
}

/// Scores of `R <= 4` query rows (from `q0`, stride `d`) against the `n` keys at `ptrs` into
/// `s0[i * ld + t]`: 2 keys at a time, `2R` accumulators reduced together.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn score_rows<KV: Element, C: Chunk<KV>, const R: usize>(
    q0: *const f32,
    ptrs: &[*const KV; MAX_ROWS],
    n: usize,
    d: usize,
    s0: *mut f32,
    ld: usize,
    ahead: Ahead<'_>,
) {
    let key = |t: usize| *ptrs.get_unchecked(t);
    let halves = C::W / 8;
    let mut t = 0;
    while t + 2 <= n {
        prefetch_row(&ahead, t);
        prefetch_row(&ahead, t + 1);
        let (k0, k1) = (key(t), key(t + 1));
        let mut a = [_mm256_setzero_ps(); 8];
        let mut c = 0;
        while c < d {
            let (x0, x1) = (C::load(k0.add(c)), C::load(k1.add(c)));
            for h in 0..halves {
                for i in 0..R {
                    let qv = _mm256_loadu_ps(q0.add(i * d + c + 8 * h));
                    a[2 * i] = _mm256_fmadd_ps(qv, x0[h], a[2 * i]);
                    a[2 * i + 1] = _mm256_fmadd_ps(qv, x1[h], a[2 * i + 1]);
                }
            }
            c += C::W;
        }
        // Lanes: [r0k0, r0k1, r1k0, r1k1, r2k0, r2k1, r3k0, r3k1] (unused rows sum zeros).
        let v = reduce8(&a);
        let (lo, hi) = (_mm_castps_pd(_mm256_castps256_ps128(v)), _mm_castps_pd(_mm256_extractf128_ps::<1>(v)));
        _mm_store_sd(s0.add(t) as *mut f64, lo);
        if R > 1 {
            _mm_storeh_pd(s0.add(ld + t) as *mut f64, lo);
        }
        if R > 2 {
            _mm_store_sd(s0.add(2 * ld + t) as *mut f64, hi);
        }
        if R > 3 {
            _mm_storeh_pd(s0.add(3 * ld + t) as *mut f64, hi);
        }
        t += 2;
    }
    if t < n {
        prefetch_row(&ahead, t);
        let k0 = key(t);
        let mut a = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < d {
            let x0 = C::load(k0.add(c));
            for h in 0..halves {
                for (i, acc) in a.iter_mut().enumerate().take(R) {
                    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(q0.add(i * d + c + 8 * h)), x0[h], *acc);
                }
            }
            c += C::W;
        }
        for (i, acc) in a.iter().enumerate().take(R) {
            *s0.add(i * ld + t) = hsum(*acc);
        }
    }
}

/// `acc[r] += sum_t p[r * ld + t] * v_t`, where value row `t` is `kv[offs[t] + hoff ..][..d]`.
/// When [`swaps_quads`] holds, `acc` is in swapped-quads order.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn pv<KV: Element>(
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
    check_rows(kv, offs, hoff, d);
    assert!(acc.len() >= rows * d && d.is_multiple_of(8) && offs.len() <= ld);
    assert!(rows == 0 || offs.is_empty() || p.len() >= (rows - 1) * ld + offs.len());
    by_chunk!(KV, d, C => pv_with::<KV, C>(acc, rows, p, ld, kv, offs, hoff, d, ahead))
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pv_with<KV: Element, C: Chunk<KV>>(
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
    let n = offs.len();
    let (ap, pp) = (acc.as_mut_ptr(), p.as_ptr());
    let ptrs = row_ptrs(kv, offs, hoff);
    let val = |t: usize| *ptrs.get_unchecked(t);
    let halves = C::W / 8;
    let mut r = 0;
    // Only the first block of rows prefetches, as in `scores_with`.
    let mut ahead = ahead;
    // Blocks of 4 rows (then one of 3 or 2) share each chunk of V.
    while r + 4 <= rows {
        pv_rows::<KV, C, 4>(ap.add(r * d), pp.add(r * ld), ld, &ptrs, n, d, ahead);
        ahead = Ahead::NONE;
        r += 4;
    }
    match rows - r {
        3 => {
            pv_rows::<KV, C, 3>(ap.add(r * d), pp.add(r * ld), ld, &ptrs, n, d, ahead);
            ahead = Ahead::NONE;
            r = rows;
        }
        2 => {
            pv_rows::<KV, C, 2>(ap.add(r * d), pp.add(r * ld), ld, &ptrs, n, d, ahead);
            ahead = Ahead::NONE;
            r = rows;
        }
        _ => {}
    }
    // Remaining rows: 1 row x 2W dims (or W at the end of the row).
    while r < rows {
        let mut c = 0;
        while c < d {
            let two = c + 2 * C::W <= d;
            let mut a = [_mm256_setzero_ps(); 4];
            for h in 0..halves {
                a[h] = _mm256_loadu_ps(ap.add(r * d + c + 8 * h));
                if two {
                    a[2 + h] = _mm256_loadu_ps(ap.add(r * d + c + C::W + 8 * h));
                }
            }
            let width = if two { 2 * C::W } else { C::W } * std::mem::size_of::<KV>();
            let from = c * std::mem::size_of::<KV>();
            let line = line_in(&ahead, from, from + width);
            for t in 0..n {
                if let Some(line) = line {
                    prefetch_line(&ahead, t, line);
                }
                let pb = _mm256_broadcast_ss(&*pp.add(r * ld + t));
                let v = val(t);
                let x = C::load(v.add(c));
                for h in 0..halves {
                    a[h] = _mm256_fmadd_ps(pb, x[h], a[h]);
                }
                if two {
                    let y = C::load(v.add(c + C::W));
                    for h in 0..halves {
                        a[2 + h] = _mm256_fmadd_ps(pb, y[h], a[2 + h]);
                    }
                }
            }
            for h in 0..halves {
                _mm256_storeu_ps(ap.add(r * d + c + 8 * h), a[h]);
                if two {
                    _mm256_storeu_ps(ap.add(r * d + c + C::W + 8 * h), a[2 + h]);
                }
            }
            c += if two { 2 * C::W } else { C::W };
        }
        ahead = Ahead::NONE;
        r += 1;
    }
}

/// Keys per group of the P·V loops (here and in `avx2_tokens`): a group's V rows stay in L1 while
/// every chunk of them is read, next to the accumulators (8 tokens of 2 KiB for a Llama item;
/// 4 and 16 were slower on the dev VM).
pub(super) const PV_GROUP: usize = 8;

/// `acc0[i * d ..] += sum_t p0[i * ld + t] * v_t` for `R <= 4` rows: W dims at a time, up to
/// `2R` accumulators; per key one chunk of V and `R` broadcasts of p.
///
/// Keys are taken in groups of [`PV_GROUP`], every chunk of a group before the next group. Walking
/// all keys per chunk instead re-reads each 64-byte line once per chunk in it, 32 rows later: in
/// the pool's token-major layout rows sit 2 KiB apart (8 KV heads of 128 bf16), so the tile's 32
/// rows share two L1 sets per line offset, twice the ways there are, and the second read missed.
#[inline(always)]
unsafe fn pv_rows<KV: Element, C: Chunk<KV>, const R: usize>(
    acc0: *mut f32,
    p0: *const f32,
    ld: usize,
    ptrs: &[*const KV; MAX_ROWS],
    n: usize,
    d: usize,
    ahead: Ahead<'_>,
) {
    let halves = C::W / 8;
    let mut g = 0;
    while g < n {
        let g_end = (g + PV_GROUP).min(n);
        let mut c = 0;
        while c < d {
            // The lines of the next pass's rows that start within this chunk's bytes, spread over
            // the keys of the group.
            let from = c * std::mem::size_of::<KV>();
            let line = line_in(&ahead, from, from + C::W * std::mem::size_of::<KV>());
            let mut a = [_mm256_setzero_ps(); 8];
            for i in 0..R {
                for h in 0..halves {
                    a[2 * i + h] = _mm256_loadu_ps(acc0.add(i * d + c + 8 * h));
                }
            }
            for t in g..g_end {
                if let Some(line) = line {
                    prefetch_line(&ahead, t, line);
                }
                let v = C::load(ptrs.get_unchecked(t).add(c));
                for i in 0..R {
                    let pb = _mm256_broadcast_ss(&*p0.add(i * ld + t));
                    for h in 0..halves {
                        a[2 * i + h] = _mm256_fmadd_ps(pb, v[h], a[2 * i + h]);
                    }
                }
            }
            for i in 0..R {
                for h in 0..halves {
                    _mm256_storeu_ps(acc0.add(i * d + c + 8 * h), a[2 * i + h]);
                }
            }
            c += C::W;
        }
        g = g_end;
    }
}

/// Eight lanes of `exp(x)` for `x <= 0`; exactly 0 below -87 (masked `-inf` scores). Same
/// algorithm as `math::exp_neg`: Cody-Waite reduction, then a degree-6 polynomial.
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    use super::math::{LN2_HI, LN2_LO};
    let lo = _mm256_set1_ps(-87.0);
    let xc = _mm256_max_ps(x, lo);
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5e-1));
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
