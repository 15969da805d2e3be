//! AVX2 kernels of the packed integer products (x86-64 only, chosen at run time):
//! [`packed_group_avx2`] multiplies a packed group of 8 rows of a 4-, 5-, 6- or 8-bit format (see
//! [`crate::packed`]) with up to 16 activation rows of 8-bit blocks at a time: `maddubs` of a
//! weight chunk with broadcast activation bytes, i16 sums per block, `madd` to i32, one scaled
//! FMA per block for all eight rows. Scales are converted with F16C in-line.

use crate::gguf::GgmlType;
use crate::packed::{group_bytes, quant_bytes, scale_bytes, ActBlock, GROUP};

/// Calls `$kernel::<TM>` for a token tile of `$tm` rows (16, 8, 4, 3, 2 or 1).
macro_rules! with_tile {
    ($tm:expr, $kernel:ident $(::<$f:ident>)?, $($arg:expr),*) => {
        match $tm {
            16 => $kernel::<$($f,)? 16>($($arg),*),
            8 => $kernel::<$($f,)? 8>($($arg),*),
            4 => $kernel::<$($f,)? 4>($($arg),*),
            3 => $kernel::<$($f,)? 3>($($arg),*),
            2 => $kernel::<$($f,)? 2>($($arg),*),
            _ => $kernel::<$($f,)? 1>($($arg),*),
        }
    };
}

/// One packed group (see [`crate::packed`]) times `m` activation rows: `out[t * ldc + r]` for
/// `r < valid`. Token tiles of up to [`MAX_TILE`] share each unpacked weight chunk.
///
/// # Safety
/// AVX2, FMA and F16C must be present; `group` is one group of a packed `dtype` matrix with `nb`
/// blocks per row; `acts` holds `m * nb` blocks; `out` is valid for writes at `t * ldc + r`,
/// `t < m`, `r < valid <= 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn packed_group_avx2(
    dtype: GgmlType,
    group: &[u8],
    nb: usize,
    acts: &[ActBlock],
    m: usize,
    out: *mut f32,
    ldc: usize,
    valid: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(acts.len() >= m * nb && group.len() >= group_bytes(dtype, nb));
    let (g, a) = (group.as_ptr(), acts.as_ptr());
    // Q8_0 tiles stop at 8 rows (see MAX_TILE).
    let max_tile = if matches!(dtype, GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS) { 8 } else { MAX_TILE };
    let mut t0 = 0;
    while t0 < m {
        let tm = [16, 8, 4, 3, 2, 1].into_iter().find(|&n| n <= max_tile && n <= m - t0).unwrap_or(1);
        let at = a.add(t0 * nb);
        let mut acc = [_mm256_setzero_ps(); MAX_TILE];
        match dtype {
            GgmlType::Q8_0 => with_tile!(tm, q8_tile, g, nb, at, &mut acc),
            GgmlType::Q4_0 => with_tile!(tm, nib_tile::<Q4_0>, g, nb, at, &mut acc),
            GgmlType::Q4_1 => with_tile!(tm, nib_tile::<Q4_1>, g, nb, at, &mut acc),
            GgmlType::Q5_0 => with_tile!(tm, nib_tile::<Q5_0>, g, nb, at, &mut acc),
            GgmlType::Q5_1 => with_tile!(tm, nib_tile::<Q5_1>, g, nb, at, &mut acc),
            GgmlType::Q4_K => with_tile!(tm, nib_tile::<Q4_K>, g, nb, at, &mut acc),
            GgmlType::Q5_K => with_tile!(tm, nib_tile::<Q5_K>, g, nb, at, &mut acc),
            GgmlType::Q6_K => with_tile!(tm, half_scaled_tile::<Q6_K>, g, nb, at, &mut acc),
            GgmlType::Q3_K => with_tile!(tm, half_scaled_tile::<Q3_K>, g, nb, at, &mut acc),
            GgmlType::Q2_K => with_tile!(tm, half_scaled_tile::<Q2_K>, g, nb, at, &mut acc),
            GgmlType::IQ4_NL => with_tile!(tm, grid_tile::<IQ4_NL>, g, nb, at, &mut acc),
            GgmlType::IQ4_XS => with_tile!(tm, grid_tile::<IQ4_XS>, g, nb, at, &mut acc),
            _ => unreachable!("{dtype} has no packed form"),
        }
        for (t, v) in acc.iter().enumerate().take(tm) {
            let dst = out.add((t0 + t) * ldc);
            if valid == GROUP {
                _mm256_storeu_ps(dst, *v);
            } else {
                let mut tmp = [0f32; GROUP];
                _mm256_storeu_ps(tmp.as_mut_ptr(), *v);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, valid);
            }
        }
        t0 += tm;
    }
}

/// Software prefetch distance in bytes of a group's stream (quants, then scales). The weights
/// stream from memory once per step, and the hardware prefetchers alone leave one core of the
/// dev VM (Zen 3) at 9 GB/s. The prefetch follows the stream itself, quants and scales: until
/// the ninth session it followed the quants only, fell 32 of every 160 bytes behind per block
/// and so left a fifth of each Q4_1 group to demand misses (one core 12-13 -> 17-19 GB/s, two
/// 22-23 -> 25-28, batch-1 decode +13-25%). 8 KiB beat 4 KiB by 1-3%, 2 KiB lost 10%.
const PF: usize = 8192;

/// Prefetch the lines [`PF`] bytes ahead of block `b` in a packed group's stream (quants, then
/// scales: `block_bytes` of it per block, so the prefetch keeps pace with both). Past the end of
/// the matrix it is harmless: a hint, never a fault.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_stream(group: *const u8, b: usize, block_bytes: usize) {
    use std::arch::x86_64::*;
    let ahead = group.wrapping_add(PF + b * block_bytes);
    for line in 0..block_bytes.div_ceil(64) {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line) as *const i8);
    }
}

/// Most activation rows that share one unpacking of a weight chunk. The weight loads and the
/// nibble unpacking (3 ops per 32 bytes) are paid once per tile, so larger tiles leave more of
/// the issue slots to `maddubs`, although beyond 4 rows the per-row integer sums outnumber the
/// registers. Measured on one core of the dev VM, 16 rows (`qmatmul_bench FILE 3` / `... head`):
/// tiles of 4 / 8 / 16 rows run SmolLM2's Q4_1 layer at 77-78 / 83 / 85 GMAC/s and its Q8_0 head
/// at 51 / 57 / 54, so Q8_0 tiles stop at 8. Keeping the unpacked weights in registers and the
/// rows' sums in memory instead measured 80 GMAC/s, broadcasting activations by in-lane shuffles
/// of one 16-byte load 80-81.
const MAX_TILE: usize = 16;

// The nibble formats of `nib_tile` (const generic: `u8` ids, not the enum).
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q4_K: u8 = 4;
const Q5_K: u8 = 5;

/// A group of a 4- or 5-bit format (`F`: Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K) times `TM`
/// activation rows. Per block: `w = d * q + mn` with unsigned `q`, so the dot product is
/// `d * x.d * sum(q * x.qs) + mn * x.s`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nib_tile<const F: u8, const TM: usize>(
    g: *const u8,
    nb: usize,
    acts: *const ActBlock,
    acc: &mut [std::arch::x86_64::__m256; MAX_TILE],
) {
    use std::arch::x86_64::*;
    let five = matches!(F, Q5_0 | Q5_1 | Q5_K);
    let kq = matches!(F, Q4_K | Q5_K);
    let (qb, sb) = (if five { 160 } else { 128 }, if matches!(F, Q4_1 | Q5_1) { 32 } else { 16 });
    let mask = _mm256_set1_epi8(0x0F);
    let bit4 = _mm256_set1_epi8(0x10);
    let ones = _mm256_set1_epi16(1);
    let scales = g.add(nb * qb);
    let supers = scales.add(nb * sb);
    let (mut dk, mut dmin_neg) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for b in 0..nb {
        let q = g.add(b * qb);
        prefetch_stream(g, b, qb + sb + if kq { 4 } else { 0 });
        if kq && b % 8 == 0 {
            let sp = supers.add(b / 8 * 32);
            dk = _mm256_cvtph_ps(_mm_loadu_si128(sp as *const __m128i));
            let dmin = _mm256_cvtph_ps(_mm_loadu_si128(sp.add(16) as *const __m128i));
            dmin_neg = _mm256_xor_ps(dmin, _mm256_set1_ps(-0.0));
        }
        let sp = scales.add(b * sb);
        let (d, mn) = match F {
            Q4_1 | Q5_1 => (
                _mm256_cvtph_ps(_mm_loadu_si128(sp as *const __m128i)),
                _mm256_cvtph_ps(_mm_loadu_si128(sp.add(16) as *const __m128i)),
            ),
            Q4_0 | Q5_0 => {
                let d = _mm256_cvtph_ps(_mm_loadu_si128(sp as *const __m128i));
                (d, _mm256_mul_ps(d, _mm256_set1_ps(if F == Q4_0 { -8.0 } else { -16.0 })))
            }
            _ => {
                // The eight rows' 6-bit scales, then minimums, one byte each.
                let sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(sp as *const __m128i)));
                let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(sp.add(8) as *const __m128i)));
                (_mm256_mul_ps(dk, sc), _mm256_mul_ps(dmin_neg, m))
            }
        };
        if five {
            // The block's eight unpacked chunks stay in registers while every activation row
            // passes (per-row i16 and i32 sums for a whole tile would not fit them).
            let hv = _mm256_loadu_si256(q.add(128) as *const __m256i);
            let mut w = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
                // Bit c (low-nibble elements) and bit 4 + c (high-nibble elements) of each byte
                // to bit 4; 16-bit shifts of at most 4 bring no neighbour's bit to bit 4.
                let (l, h) = match c {
                    0 => (_mm256_slli_epi16(hv, 4), hv),
                    1 => (_mm256_slli_epi16(hv, 3), _mm256_srli_epi16(hv, 1)),
                    2 => (_mm256_slli_epi16(hv, 2), _mm256_srli_epi16(hv, 2)),
                    _ => (_mm256_slli_epi16(hv, 1), _mm256_srli_epi16(hv, 3)),
                };
                w[2 * c] = _mm256_or_si256(_mm256_and_si256(raw, mask), _mm256_and_si256(l, bit4));
                w[2 * c + 1] =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), mask), _mm256_and_si256(h, bit4));
            }
            for (t, acc) in acc.iter_mut().enumerate().take(TM) {
                let xb = &*acts.add(t * nb + b);
                let x = xb.qs.as_ptr();
                let mut s32 = _mm256_setzero_si256();
                for half in 0..2 {
                    // Per i16 lane two chunks of 4 products of a 5-bit quant and an |x| <= 127:
                    // 8 * 31 * 127 = 31496; then to i32.
                    let mut s16 = _mm256_setzero_si256();
                    for c in 2 * half..2 * half + 2 {
                        let xlo = _mm256_set1_epi32((x.add(4 * c) as *const i32).read_unaligned());
                        let xhi = _mm256_set1_epi32((x.add(16 + 4 * c) as *const i32).read_unaligned());
                        let p = _mm256_add_epi16(
                            _mm256_maddubs_epi16(w[2 * c], xlo),
                            _mm256_maddubs_epi16(w[2 * c + 1], xhi),
                        );
                        s16 = _mm256_add_epi16(s16, p);
                    }
                    s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(s16, ones));
                }
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_mul_ps(d, _mm256_set1_ps(xb.d)), *acc);
                *acc = _mm256_fmadd_ps(mn, _mm256_set1_ps(xb.s), *acc);
            }
            continue;
        }
        let mut isum = [_mm256_setzero_si256(); TM];
        for c in 0..4 {
            let raw = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
            let lo = _mm256_and_si256(raw, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
            for (t, s) in isum.iter_mut().enumerate() {
                let x = (*acts.add(t * nb + b)).qs.as_ptr();
                let xlo = _mm256_set1_epi32((x.add(4 * c) as *const i32).read_unaligned());
                let xhi = _mm256_set1_epi32((x.add(16 + 4 * c) as *const i32).read_unaligned());
                // An i16 lane gains 4 products of a 4-bit quant and an |x| <= 127 per chunk:
                // 16 * 15 * 127 = 30480 after all four.
                let p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
                *s = _mm256_add_epi16(*s, p);
            }
        }
        for t in 0..TM {
            let x = &*acts.add(t * nb + b);
            let s32 = _mm256_madd_epi16(isum[t], ones);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_mul_ps(d, _mm256_set1_ps(x.d)), acc[t]);
            acc[t] = _mm256_fmadd_ps(mn, _mm256_set1_ps(x.s), acc[t]);
        }
    }
}

// The formats of `half_scaled_tile`, with one integer scale per half block of 16.
const Q6_K: u8 = 6;
const Q3_K: u8 = 7;
const Q2_K: u8 = 8;

/// A group of a format with one integer scale per 16 elements (`F`: Q6_K, Q3_K, Q2_K) times `TM`
/// activation rows: Q6_K / Q3_K `w = d * sc * (q - 32 / 4)` with signed scales, Q2_K
/// `w = d * sc * q - dmin * m` with 4-bit scales and minimums; `q` unsigned. The halves of 16
/// are the low-nibble (elements 0..16) and high-nibble (16..32) parts of every chunk. Scales
/// multiply in the integer domain (`madd` of the i16 sums with the scale in both halves of each
/// lane), offsets and minimums too (`madd` of the two halves' values with the activations' half
/// sums), so one f32 multiply-add per block is left (two for Q2_K).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn half_scaled_tile<const F: u8, const TM: usize>(
    g: *const u8,
    nb: usize,
    acts: *const ActBlock,
    acc: &mut [std::arch::x86_64::__m256; MAX_TILE],
) {
    use std::arch::x86_64::*;
    let six = F == Q6_K;
    let (qb, sb, supb) = if six {
        (192, 16, 16)
    } else if F == Q3_K {
        (128, 16, 16)
    } else {
        (128, 32, 32)
    };
    let mask = _mm256_set1_epi8(0x0F);
    let bits45 = _mm256_set1_epi8(0x30);
    let low16 = _mm256_set1_epi32(0xFFFF);
    let scales = g.add(nb * qb);
    let supers = scales.add(nb * sb);
    let (mut d, mut dmin_neg) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for b in 0..nb {
        let q = g.add(b * qb);
        prefetch_stream(g, b, qb + sb + supb / 8);
        if b % 8 == 0 {
            let sp = supers.add(b / 8 * supb);
            d = _mm256_cvtph_ps(_mm_loadu_si128(sp as *const __m128i));
            if F == Q2_K {
                let dmin = _mm256_cvtph_ps(_mm_loadu_si128(sp.add(16) as *const __m128i));
                dmin_neg = _mm256_xor_ps(dmin, _mm256_set1_ps(-0.0));
            }
        }
        // The halves' scales as i32 lanes, then as i16 pairs: (a, a), (b, b) and (a, b); Q2_K's
        // minimums as the pair (a, b).
        let sp = scales.add(b * sb);
        let lanes = |o: usize| _mm256_cvtepi8_epi32(_mm_loadl_epi64(sp.add(o) as *const __m128i));
        let pair = |lo: __m256i, hi: __m256i| _mm256_or_si256(_mm256_and_si256(lo, low16), _mm256_slli_epi32(hi, 16));
        let (sa, sbv) = (lanes(0), lanes(8));
        let (saa, sbb, sab) = (pair(sa, sa), pair(sbv, sbv), pair(sa, sbv));
        let mab = if F == Q2_K { pair(lanes(16), lanes(24)) } else { _mm256_setzero_si256() };
        let mut isum = [_mm256_setzero_si256(); TM];
        for half in 0..2 {
            // Q6_K: two chunks share a plane of high bit pairs: bits 0-1 / 2-3 of each byte for
            // the first chunk's low / high nibbles, bits 4-5 / 6-7 for the second's. 16-bit
            // shifts of at most 4 bring no neighbour's bit to bits 4-5.
            let hb =
                if six { _mm256_loadu_si256(q.add(128 + 32 * half) as *const __m256i) } else { _mm256_setzero_si256() };
            let mut w = [_mm256_setzero_si256(); 4];
            for k in 0..2 {
                let raw = _mm256_loadu_si256(q.add(32 * (2 * half + k)) as *const __m256i);
                w[2 * k] = _mm256_and_si256(raw, mask);
                w[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
                if six {
                    let (hl, hh) = if k == 0 {
                        (_mm256_slli_epi16(hb, 4), _mm256_slli_epi16(hb, 2))
                    } else {
                        (hb, _mm256_srli_epi16(hb, 2))
                    };
                    w[2 * k] = _mm256_or_si256(w[2 * k], _mm256_and_si256(hl, bits45));
                    w[2 * k + 1] = _mm256_or_si256(w[2 * k + 1], _mm256_and_si256(hh, bits45));
                }
            }
            for (t, s) in isum.iter_mut().enumerate() {
                let x = (*acts.add(t * nb + b)).qs.as_ptr();
                let c0 = 8 * half;
                let bx = |o: usize| _mm256_set1_epi32((x.add(o) as *const i32).read_unaligned());
                // Per i16 lane two chunks of 2 products of a quant <= 63 and an |x| <= 127:
                // 4 * 63 * 127 = 32004.
                let lo = _mm256_add_epi16(_mm256_maddubs_epi16(w[0], bx(c0)), _mm256_maddubs_epi16(w[2], bx(c0 + 4)));
                let hi = _mm256_add_epi16(
                    _mm256_maddubs_epi16(w[1], bx(16 + c0)),
                    _mm256_maddubs_epi16(w[3], bx(16 + c0 + 4)),
                );
                *s = _mm256_add_epi32(*s, _mm256_add_epi32(_mm256_madd_epi16(lo, saa), _mm256_madd_epi16(hi, sbb)));
            }
        }
        for (t, s) in isum.iter().enumerate() {
            let x = &*acts.add(t * nb + b);
            let halves = _mm256_set1_epi32((x.half_sums.as_ptr() as *const i32).read_unaligned());
            // Minus 32 (Q6_K) or 4 (Q3_K) times (sc_a * sum(x[..16]) + sc_b * sum(x[16..])).
            let s = match F {
                Q6_K => _mm256_sub_epi32(*s, _mm256_slli_epi32(_mm256_madd_epi16(sab, halves), 5)),
                Q3_K => _mm256_sub_epi32(*s, _mm256_slli_epi32(_mm256_madd_epi16(sab, halves), 2)),
                _ => *s,
            };
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(d, _mm256_set1_ps(x.d)), acc[t]);
            if F == Q2_K {
                let mins = _mm256_cvtepi32_ps(_mm256_madd_epi16(mab, halves));
                acc[t] = _mm256_fmadd_ps(mins, _mm256_mul_ps(dmin_neg, _mm256_set1_ps(x.d)), acc[t]);
            }
        }
    }
}

// The formats of `grid_tile`.
const IQ4_NL: u8 = 9;
const IQ4_XS: u8 = 10;

/// An IQ4_NL or IQ4_XS group (`F`) times `TM` activation rows: the nibbles index a
/// signed grid (one `pshufb` per 32 of them, paid once per tile), whose values then multiply as
/// Q8_0's do (`maddubs(|w|, sign(x, w))`, one `madd` per chunk half: two products of 127 fill an
/// i16). Per block `d` (IQ4_NL) or the super-block's `d` times the block's signed 6-bit scale.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn grid_tile<const F: u8, const TM: usize>(
    g: *const u8,
    nb: usize,
    acts: *const ActBlock,
    acc: &mut [std::arch::x86_64::__m256; MAX_TILE],
) {
    use std::arch::x86_64::*;
    let xs = F == IQ4_XS;
    let (qb, sb) = (128, if xs { 8 } else { 16 });
    let grid = _mm256_broadcastsi128_si256(_mm_loadu_si128(crate::quant::IQ4_VALUES.as_ptr() as *const __m128i));
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let scales = g.add(nb * qb);
    let supers = scales.add(nb * sb);
    let mut dsb = _mm256_setzero_ps();
    for b in 0..nb {
        let q = g.add(b * qb);
        prefetch_stream(g, b, qb + sb + if xs { 2 } else { 0 });
        let sp = scales.add(b * sb);
        let d = if xs {
            if b % 8 == 0 {
                dsb = _mm256_cvtph_ps(_mm_loadu_si128(supers.add(b / 8 * 16) as *const __m128i));
            }
            _mm256_mul_ps(dsb, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(sp as *const __m128i))))
        } else {
            _mm256_cvtph_ps(_mm_loadu_si128(sp as *const __m128i))
        };
        let mut isum = [_mm256_setzero_si256(); TM];
        for c in 0..4 {
            let raw = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
            let lo = _mm256_shuffle_epi8(grid, _mm256_and_si256(raw, mask));
            let hi = _mm256_shuffle_epi8(grid, _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask));
            let (alo, ahi) = (_mm256_abs_epi8(lo), _mm256_abs_epi8(hi));
            for (t, s) in isum.iter_mut().enumerate() {
                let x = (*acts.add(t * nb + b)).qs.as_ptr();
                let xlo = _mm256_set1_epi32((x.add(4 * c) as *const i32).read_unaligned());
                let xhi = _mm256_set1_epi32((x.add(16 + 4 * c) as *const i32).read_unaligned());
                let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(alo, _mm256_sign_epi8(xlo, lo)), ones);
                let phi = _mm256_madd_epi16(_mm256_maddubs_epi16(ahi, _mm256_sign_epi8(xhi, hi)), ones);
                *s = _mm256_add_epi32(*s, _mm256_add_epi32(plo, phi));
            }
        }
        for (t, s) in isum.iter().enumerate() {
            let x = &*acts.add(t * nb + b);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(*s), _mm256_mul_ps(d, _mm256_set1_ps(x.d)), acc[t]);
        }
    }
}

/// Q8_0 group times `TM` activation rows (signed weights: `maddubs(|w|, sign(x, w))`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q8_tile<const TM: usize>(
    g: *const u8,
    nb: usize,
    acts: *const ActBlock,
    acc: &mut [std::arch::x86_64::__m256; MAX_TILE],
) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let scales = g.add(nb * 256);
    for b in 0..nb {
        let q = g.add(b * 256);
        prefetch_stream(g, b, quant_bytes(GgmlType::Q8_0) + scale_bytes(GgmlType::Q8_0));
        let mut isum = [_mm256_setzero_si256(); TM];
        for c in 0..8 {
            let w = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
            let aw = _mm256_sign_epi8(w, w);
            for (t, s) in isum.iter_mut().enumerate() {
                let x = (*acts.add(t * nb + b)).qs.as_ptr();
                let xv = _mm256_set1_epi32((x.add(4 * c) as *const i32).read_unaligned());
                // A pair of |w| <= 128 and |x| <= 127 products fits i16; two pairs may not.
                let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, w));
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(scales.add(b * 16) as *const __m128i));
        for (t, s) in isum.iter().enumerate() {
            let x = &*acts.add(t * nb + b);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(*s), _mm256_mul_ps(d, _mm256_set1_ps(x.d)), acc[t]);
        }
    }
}
