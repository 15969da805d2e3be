//! Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / IQ4_NL / IQ4_XS weights
//! repacked for integer matrix products with 8-bit activations.
//!
//! A GGUF row stores its blocks one after another, so a dot product has to scale and reduce every
//! block of every row on its own. [`PackedMatrix`] interleaves [`GROUP`] = 8 rows instead: for
//! each block of 32 elements, 32-byte chunks whose 4-byte lane `r` holds 4 consecutive quants of
//! row `r`. One `maddubs` of a chunk with 4 activation bytes broadcast to every lane then
//! advances eight dot products at once, the eight sums land in the lanes of one register, and
//! the per-block scaling is one vector multiply-add for eight rows. The unpacked weights of a
//! group are reused for up to 16 activation rows, and for prefill they stay in L1 while every
//! token passes over them.
//!
//! Every format becomes blocks of 32 with a scale `d` and an offset `mn` per row and block:
//! `w = d * q + mn` with unsigned `q`. K-quant super-blocks of 256 are cut into their 8
//! sub-blocks, each with its 6-bit scale and minimum (`d = d_sb * sc`, `mn = -dmin_sb * m`, exact
//! in f32). Q6_K, Q3_K and Q2_K keep their integer scales, one per half of 16 (`w = d_sb * sc *
//! (q - 32)`, `(q - 4)`, or `d_sb * sc * q - dmin_sb * m`), which their kernel multiplies in
//! the integer domain. Q3_K and Q2_K quants take a nibble each (4 bits for their 3 or 2).
//! IQ4_NL / IQ4_XS keep their nibbles, which index a fixed signed grid in the kernel, with `d`
//! per block (IQ4_NL) or the super-block's `d` and a signed 6-bit scale per block (IQ4_XS).
//!
//! Layout of one group (`nb` blocks of 32 per row; rows past the end of the matrix are zeros):
//! - quants, `nb` x `QB` bytes. Below 8 bits: chunk `c` (0..4) lane `r` = 4 bytes holding the
//!   low 4 bits of elements `4c..4c+4` in their low nibbles and of `16+4c..16+4c+4` in their
//!   high nibbles (Q4_0's order; the other formats are reordered to it). Then the bits above:
//!   - 5-bit: 32 bytes; lane `r` byte `k` holds in bit `c` the fifth bit of element `4c+k` and in
//!     bit `4+c` that of element `16+4c+k`, so one shift and mask per chunk moves them to bit 4
//!     of the nibbles they extend;
//!   - 6-bit: two planes of 32 bytes, plane `p` for chunks `2p` and `2p+1`; lane `r` byte `k`
//!     holds the two high bits of element `4c+k` at bits 0-1 (first chunk) / 4-5 (second), and
//!     those of element `16+4c+k` at bits 2-3 / 6-7.
//!
//!   Q8_0: chunk `c` (0..8) lane `r` = elements `4c..4c+4`.
//! - scales, `nb` x `SB` bytes: the eight rows' f16 `d`, then (Q4_1, Q5_1) their eight f16 `m`;
//!   Q4_K / Q5_K: the eight rows' 6-bit scales as bytes, then their 6-bit minimums; Q6_K, Q3_K:
//!   the eight rows' signed scales of the first half, then of the second; Q2_K: those, then the
//!   minimums of the first and second halves.
//! - K-quants only: `nb / 8` super-blocks of the eight rows' f16 `d` and (Q2_K, Q4_K, Q5_K) f16
//!   `dmin`.
//!
//! The packed matrix is about as large as the file's (Q4_K and Q5_K: 148 bytes per row and
//! super-block against 144; Q3_K and Q2_K, whose quants take a nibble: 146 against 110 and 164
//! against 84). Activations are rounded per block of 32 to 8 bits ([`ActBlock`]), as llama.cpp
//! does for the 32-element formats (its K-quant kernels round per 256), so products match its
//! numerics; the relative error per block is at most 1/254 of the block's largest activation.

use crate::gguf::GgmlType;
use crate::quant::f16_at;
use crate::{ModelError, Result};

/// Rows interleaved per group: one 32-bit lane each of a 256-bit register.
pub const GROUP: usize = 8;

/// 32 activations rounded to 8 bits: `x[i] ~= d * qs[i]`, and `s = d * sum(qs)` (the term that
/// the offsets of Q4_0 / Q5_0 and the minimums of the others multiply). `half_sums` are the
/// integer sums of `qs[..16]` and `qs[16..]` (Q6_K's per-16 scales multiply its offset by them).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(8))]
pub struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
    pub half_sums: [i16; 2],
}

/// Round rows of activations (`x.len()` a multiple of 32) to [`ActBlock`]s into `out`.
pub fn quantize_acts(x: &[f32], out: &mut Vec<ActBlock>) {
    debug_assert!(x.len().is_multiple_of(32));
    out.clear();
    out.resize(x.len() / 32, ActBlock::default());
    quantize_acts_into(x, out);
}

/// [`quantize_acts`] into a slice of exactly `x.len() / 32` blocks.
pub(crate) fn quantize_acts_into(x: &[f32], out: &mut [ActBlock]) {
    assert_eq!(out.len() * 32, x.len(), "one block per 32 activations");
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() {
        // SAFETY: AVX2 is present; `out` holds one block per 32 inputs.
        unsafe { crate::simd::quantize_acts_avx2(x, out) };
        return;
    }
    quantize_acts_portable(x, out);
}

/// [`quantize_acts`] in plain Rust (the fallback, and the SIMD version's oracle: equal to the bit).
pub fn quantize_acts_portable(x: &[f32], out: &mut [ActBlock]) {
    for (b, a) in x.chunks_exact(32).zip(out.iter_mut()) {
        let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sums = [0i32; 2];
        for (i, (q, &v)) in a.qs.iter_mut().zip(b).enumerate() {
            // Round half to even by the 1.5 * 2^23 trick (|v * id| <= 127), as `roundps` does.
            const MAGIC: f32 = 12_582_912.0;
            let r = (v * id + MAGIC) - MAGIC;
            *q = r as i8;
            sums[i / 16] += r as i32;
        }
        a.d = d;
        a.s = d * (sums[0] + sums[1]) as f32;
        a.half_sums = sums.map(|s| s as i16);
    }
}

/// A `[rows, cols]` matrix of Q4_0, Q4_1 or Q8_0 blocks in the interleaved layout above.
#[derive(Clone)]
pub struct PackedMatrix {
    dtype: GgmlType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedMatrix({}x{} {})", self.rows, self.cols, self.dtype)
    }
}

/// Quant bytes per block of 32 per group: 4-bit quants 128, plus 32 of fifth bits or 64 of
/// sixth-and-fifth bits; Q8_0 256.
pub(crate) const fn quant_bytes(dtype: GgmlType) -> usize {
    match dtype {
        GgmlType::Q8_0 => 256,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 160,
        GgmlType::Q6_K => 192,
        _ => 128,
    }
}

/// Scale bytes per block of 32 per group.
pub(crate) const fn scale_bytes(dtype: GgmlType) -> usize {
    match dtype {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q2_K => 32,
        GgmlType::IQ4_XS => 8,
        _ => 16,
    }
}

/// Bytes per super-block of 256 per group after the scales (K-quants' f16 `d`, and `dmin`).
pub(crate) const fn super_bytes(dtype: GgmlType) -> usize {
    match dtype {
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q2_K => 32,
        GgmlType::Q6_K | GgmlType::Q3_K | GgmlType::IQ4_XS => 16,
        _ => 0,
    }
}

/// Bytes of one packed group of `nb` blocks of 32.
pub(crate) const fn group_bytes(dtype: GgmlType, nb: usize) -> usize {
    nb * (quant_bytes(dtype) + scale_bytes(dtype)) + nb / 8 * super_bytes(dtype)
}

/// One block of 32 of one row as the file stores it, unpacked.
struct FileBlock {
    /// The quants: unsigned 4-, 5- or 6-bit values, or Q8_0's signed bytes.
    q: [u8; 32],
    /// f16 bits of `d`, and of `m` (Q4_1, Q5_1) or `dmin` (Q4_K, Q5_K), as the file stores them;
    /// for K-quants those of the super-block.
    d: [u8; 2],
    m: [u8; 2],
    /// K-quants' sub-block scales, stored at scale byte `8 * i + row`: the 6-bit scale and
    /// minimum (Q4_K, Q5_K); the signed scales of the two halves of 16 (Q6_K, Q3_K); the 4-bit
    /// scales of the halves, then their minimums (Q2_K).
    sub: [u8; 4],
}

/// Block `b` (of 32) of a GGUF row of `dtype`.
fn row_block(dtype: GgmlType, row: &[u8], b: usize) -> FileBlock {
    let mut out = FileBlock { q: [0; 32], d: [0; 2], m: [0; 2], sub: [0; 4] };
    let (bb, be) = (dtype.block_bytes(), dtype.block_elems());
    let blk = &row[b * 32 / be * bb..][..bb];
    let nibbles = |q: &mut [u8; 32], bytes: &[u8]| {
        for j in 0..16 {
            (q[j], q[j + 16]) = (bytes[j] & 0xF, bytes[j] >> 4);
        }
    };
    match dtype {
        GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            out.d = [blk[0], blk[1]]
        }
        GgmlType::Q6_K => out.d = [blk[208], blk[209]],
        GgmlType::Q3_K => out.d = [blk[108], blk[109]],
        GgmlType::Q2_K => (out.d, out.m) = ([blk[80], blk[81]], [blk[82], blk[83]]),
        _ => (out.d, out.m) = ([blk[0], blk[1]], [blk[2], blk[3]]),
    }
    let s = b % 8; // sub-block of a K-quant super-block
    match dtype {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::IQ4_NL => nibbles(&mut out.q, &blk[bb - 16..]),
        GgmlType::IQ4_XS => {
            nibbles(&mut out.q, &blk[8 + 16 * s..]);
            out.sub[0] = crate::quant::iq4xs_scale(s, blk) as i8 as u8;
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => out.q = crate::quant::q5_values(&blk[bb - 20..]),
        GgmlType::Q8_0 => out.q.copy_from_slice(&blk[2..34]),
        _ => {
            for (l, q) in out.q.iter_mut().enumerate() {
                *q = crate::quant::k_quant_value(dtype, blk, 32 * s + l);
            }
            match dtype {
                GgmlType::Q4_K | GgmlType::Q5_K => {
                    (out.sub[0], out.sub[1]) = crate::quant::q4k_scale_min(s, &blk[4..16]);
                }
                GgmlType::Q2_K => {
                    let (a, b) = (blk[2 * s], blk[2 * s + 1]);
                    out.sub = [a & 0xF, b & 0xF, a >> 4, b >> 4];
                }
                GgmlType::Q3_K => {
                    let sc = |k: usize| crate::quant::q3k_scale(k, blk) as i8 as u8;
                    out.sub[..2].copy_from_slice(&[sc(2 * s), sc(2 * s + 1)]);
                }
                _ => out.sub[..2].copy_from_slice(&blk[192 + 2 * s..194 + 2 * s]),
            }
        }
    }
    out
}

impl PackedMatrix {
    /// Whether `dtype` has a packed form.
    pub fn supports(dtype: GgmlType) -> bool {
        matches!(
            dtype,
            GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q2_K
                | GgmlType::Q3_K
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
                | GgmlType::IQ4_NL
                | GgmlType::IQ4_XS
        )
    }

    /// Repack `bytes`, a GGUF `[rows, cols]` tensor of `dtype`. Fails, naming the argument, for an
    /// unsupported type, a `cols` that is not whole blocks, or a byte count that does not match.
    pub fn pack(dtype: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        if !Self::supports(dtype) {
            return Err(ModelError::invalid("dtype", format!("{dtype} has no packed form")));
        }
        let be = dtype.block_elems();
        if cols == 0 || !cols.is_multiple_of(be) {
            return Err(ModelError::invalid("cols", format!("{cols} is not a positive multiple of {be}")));
        }
        let row_bytes = cols / be * dtype.block_bytes();
        if rows.checked_mul(row_bytes) != Some(bytes.len()) {
            return Err(ModelError::invalid("bytes", format!("{} bytes are not {rows}x{cols} {dtype}", bytes.len())));
        }
        let nb = cols / 32;
        let (qb, sb) = (quant_bytes(dtype), scale_bytes(dtype));
        let gb = group_bytes(dtype, nb);
        // Huge pages: the weights are streamed once per step, 4 KiB pages would cost a TLB miss each.
        let mut data = pal_core::alloc::large_vec::<u8>(rows.div_ceil(GROUP) * gb);
        for (g, gd) in data.chunks_exact_mut(gb).enumerate() {
            let (quants, rest) = gd.split_at_mut(nb * qb);
            let (scales, supers) = rest.split_at_mut(nb * sb);
            for r in 0..GROUP.min(rows - g * GROUP) {
                let row = &bytes[(g * GROUP + r) * row_bytes..][..row_bytes];
                for b in 0..nb {
                    let blk = row_block(dtype, row, b);
                    let q = &mut quants[b * qb..(b + 1) * qb];
                    let s = &mut scales[b * sb..(b + 1) * sb];
                    let (lane, v) = (r * 4, &blk.q);
                    if dtype == GgmlType::Q8_0 {
                        for c in 0..8 {
                            q[c * 32 + lane..][..4].copy_from_slice(&v[4 * c..4 * c + 4]);
                        }
                    } else {
                        for c in 0..4 {
                            for k in 0..4 {
                                q[c * 32 + lane + k] = (v[4 * c + k] & 0xF) | (v[16 + 4 * c + k] & 0xF) << 4;
                            }
                        }
                    }
                    for k in 0..4 {
                        // Bits above the nibbles of elements 4c+k and 16+4c+k, as the layout says.
                        let (lo, hi) = (|c: usize| v[4 * c + k] >> 4, |c: usize| v[16 + 4 * c + k] >> 4);
                        if qb == 160 {
                            q[128 + lane + k] = (0..4).fold(0, |h, c| h | (lo(c) & 1) << c | (hi(c) & 1) << (4 + c));
                        } else if qb == 192 {
                            for plane in 0..2 {
                                let (c0, c1) = (2 * plane, 2 * plane + 1);
                                q[128 + 32 * plane + lane + k] = lo(c0) | hi(c0) << 2 | lo(c1) << 4 | hi(c1) << 6;
                            }
                        }
                    }
                    if super_bytes(dtype) > 0 {
                        for (i, &v) in blk.sub.iter().enumerate().take(sb / 8) {
                            s[8 * i + r] = v;
                        }
                        if b % 8 == 0 {
                            let sp = &mut supers[b / 8 * super_bytes(dtype)..];
                            sp[2 * r..2 * r + 2].copy_from_slice(&blk.d);
                            if super_bytes(dtype) == 32 {
                                sp[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&blk.m);
                            }
                        }
                    } else {
                        s[2 * r..2 * r + 2].copy_from_slice(&blk.d);
                        if sb == 32 {
                            s[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&blk.m);
                        }
                    }
                }
            }
        }
        Ok(PackedMatrix { dtype, rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn dtype(&self) -> GgmlType {
        self.dtype
    }
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }
    fn blocks(&self) -> usize {
        self.cols / 32
    }
    fn group(&self, g: usize) -> &[u8] {
        let gb = group_bytes(self.dtype, self.blocks());
        &self.data[g * gb..(g + 1) * gb]
    }

    /// `out[t * ldc + r] = sum_k x[t, k] * W[r, k]` for the rows of groups `g0..g1` and the `m`
    /// activation rows of `acts` (`m * cols / 32` blocks).
    ///
    /// # Safety
    /// `out` must be valid for writes at `t * ldc + r` for `t < m` and every row `r` of the groups
    /// (`r < rows`), and no other thread may write those elements meanwhile.
    pub(crate) unsafe fn gemm_groups(
        &self,
        acts: &[ActBlock],
        m: usize,
        g0: usize,
        g1: usize,
        out: *mut f32,
        ldc: usize,
    ) {
        debug_assert_eq!(acts.len(), m * self.blocks());
        for g in g0..g1 {
            let valid = GROUP.min(self.rows - g * GROUP);
            let dst = out.add(g * GROUP);
            #[cfg(target_arch = "x86_64")]
            if crate::simd::has_avx2() {
                crate::packed_avx2::packed_group_avx2(
                    self.dtype,
                    self.group(g),
                    self.blocks(),
                    acts,
                    m,
                    dst,
                    ldc,
                    valid,
                );
                continue;
            }
            let mut tile = [0f32; GROUP];
            for t in 0..m {
                self.group_dot_portable(g, &acts[t * self.blocks()..(t + 1) * self.blocks()], &mut tile);
                std::ptr::copy_nonoverlapping(tile.as_ptr(), dst.add(t * ldc), valid);
            }
        }
    }

    /// The eight dot products of group `g` with one activation row, in plain Rust: the fallback
    /// without AVX2 and the oracle of the SIMD kernel (same integer sums, same f32 scaling order).
    pub fn group_dot_portable(&self, g: usize, acts: &[ActBlock], out: &mut [f32; GROUP]) {
        let (qb, sb, nb) = (quant_bytes(self.dtype), scale_bytes(self.dtype), self.blocks());
        let (quants, rest) = self.group(g).split_at(nb * qb);
        let (scales, supers) = rest.split_at(nb * sb);
        *out = [0.0; GROUP];
        for (b, a) in acts.iter().enumerate().take(nb) {
            let q = &quants[b * qb..(b + 1) * qb];
            let s = &scales[b * sb..(b + 1) * sb];
            let sp = &supers[b / 8 * super_bytes(self.dtype)..];
            for (r, o) in out.iter_mut().enumerate() {
                // The row's quants of the block, from the layout above.
                let mut v = [0i32; 32];
                if self.dtype == GgmlType::Q8_0 {
                    for (j, x) in v.iter_mut().enumerate() {
                        *x = q[j / 4 * 32 + r * 4 + j % 4] as i8 as i32;
                    }
                } else {
                    for c in 0..4 {
                        for k in 0..4 {
                            let w = q[c * 32 + r * 4 + k];
                            let (mut lo, mut hi) = ((w & 0xF) as i32, (w >> 4) as i32);
                            if qb == 160 {
                                let h = q[128 + r * 4 + k];
                                lo |= (((h >> c) & 1) as i32) << 4;
                                hi |= (((h >> (4 + c)) & 1) as i32) << 4;
                            } else if qb == 192 {
                                let h = q[128 + 32 * (c / 2) + r * 4 + k] >> (4 * (c % 2));
                                lo |= ((h & 3) as i32) << 4;
                                hi |= (((h >> 2) & 3) as i32) << 4;
                            }
                            (v[4 * c + k], v[16 + 4 * c + k]) = (lo, hi);
                        }
                    }
                }
                let dot = |range: std::ops::Range<usize>| range.map(|j| v[j] * a.qs[j] as i32).sum::<i32>();
                if matches!(self.dtype, GgmlType::IQ4_NL | GgmlType::IQ4_XS) {
                    // The nibbles index the grid: w = d * grid[q] (IQ4_XS: d * scale * grid[q]).
                    let isum: i32 =
                        (0..32).map(|j| crate::quant::IQ4_VALUES[v[j] as usize] as i32 * a.qs[j] as i32).sum();
                    let d = if self.dtype == GgmlType::IQ4_NL {
                        f16_at(s, 2 * r)
                    } else {
                        f16_at(sp, 2 * r) * s[r] as i8 as f32
                    };
                    *o = (isum as f32).mul_add(d * a.d, *o);
                    continue;
                }
                if matches!(self.dtype, GgmlType::Q6_K | GgmlType::Q3_K | GgmlType::Q2_K) {
                    // One integer scale per half of 16: Q6_K / Q3_K w = d * sc * (q - 32 / 4),
                    // Q2_K w = d * sc * q - dmin * m. Exact in i32.
                    let (sa, sb) = (s[r] as i8 as i32, s[8 + r] as i8 as i32);
                    let (ha, hb) = (a.half_sums[0] as i32, a.half_sums[1] as i32);
                    let off = match self.dtype {
                        GgmlType::Q6_K => 32,
                        GgmlType::Q3_K => 4,
                        _ => 0,
                    };
                    let isum = sa * dot(0..16) + sb * dot(16..32) - off * (sa * ha + sb * hb);
                    *o = (isum as f32).mul_add(f16_at(sp, 2 * r) * a.d, *o);
                    if self.dtype == GgmlType::Q2_K {
                        let mins = s[16 + r] as i32 * ha + s[24 + r] as i32 * hb;
                        *o = (mins as f32).mul_add(-f16_at(sp, 16 + 2 * r) * a.d, *o);
                    }
                    continue;
                }
                let isum = dot(0..32);
                let (d, mn) = if super_bytes(self.dtype) > 0 {
                    (f16_at(sp, 2 * r) * s[r] as f32, -f16_at(sp, 16 + 2 * r) * s[8 + r] as f32)
                } else {
                    let d = f16_at(s, 2 * r);
                    let mn = match self.dtype {
                        GgmlType::Q4_1 | GgmlType::Q5_1 => f16_at(s, 16 + 2 * r),
                        GgmlType::Q4_0 => d * -8.0,
                        GgmlType::Q5_0 => d * -16.0,
                        _ => 0.0,
                    };
                    (d, mn)
                };
                *o = (isum as f32).mul_add(d * a.d, *o);
                if self.dtype != GgmlType::Q8_0 {
                    *o = mn.mul_add(a.s, *o);
                }
            }
        }
    }
}
