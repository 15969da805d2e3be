//! Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q4_K / Q5_K weights repacked for integer matrix products
//! with 8-bit activations.
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
//! in f32).
//!
//! Layout of one group (`nb` blocks of 32 per row; rows past the end of the matrix are zeros):
//! - quants, `nb` x `QB` bytes. 4- and 5-bit: chunk `c` (0..4) lane `r` = bytes `4c..4c+4` of the
//!   block's 16 nibble bytes, which hold elements `4c..4c+4` in their low nibbles and
//!   `16+4c..16+4c+4` in their high nibbles (Q4_0's order; K-quants are reordered to it). 5-bit
//!   formats then add 32 bytes of fifth bits: lane `r` byte `k` holds in bit `c` the fifth bit of
//!   element `4c+k` and in bit `4+c` that of element `16+4c+k`, so one shift and mask per chunk
//!   moves them to bit 4 of the nibbles they extend. Q8_0: chunk `c` (0..8) lane `r` = elements
//!   `4c..4c+4`.
//! - scales, `nb` x `SB` bytes: the eight rows' f16 `d`, then (Q4_1, Q5_1) their eight f16 `m`;
//!   K-quants: the eight rows' 6-bit scales as bytes, then their 6-bit minimums.
//! - K-quants only: `nb / 8` x 32 bytes, the eight rows' f16 `d` and f16 `dmin` per super-block.
//!
//! The packed matrix is as large as the file's (K-quants: 4 bytes more per row and super-block,
//! 148 against 144 for Q4_K). Activations are rounded per block of 32 to 8 bits ([`ActBlock`]), as
//! llama.cpp does for the 32-element formats, so products match its numerics; the relative error
//! per block is at most 1/254 of the block's largest activation.

use crate::gguf::GgmlType;
use crate::quant::f16_at;
use crate::{ModelError, Result};

/// Rows interleaved per group: one 32-bit lane each of a 256-bit register.
pub const GROUP: usize = 8;

/// 32 activations rounded to 8 bits: `x[i] ~= d * qs[i]`, and `s = d * sum(qs)` (the term that
/// Q4_0's offset and Q4_1's minimum multiply).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(8))]
pub struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
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
        let mut sum = 0i32;
        for (q, &v) in a.qs.iter_mut().zip(b) {
            // Round half to even by the 1.5 * 2^23 trick (|v * id| <= 127), as `roundps` does.
            const MAGIC: f32 = 12_582_912.0;
            let r = (v * id + MAGIC) - MAGIC;
            *q = r as i8;
            sum += r as i32;
        }
        a.d = d;
        a.s = d * sum as f32;
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

/// Quant bytes per block of 32 per group.
pub(crate) const fn quant_bytes(dtype: GgmlType) -> usize {
    match dtype {
        GgmlType::Q8_0 => 256,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 160,
        _ => 128,
    }
}

/// Scale bytes per block of 32 per group.
pub(crate) const fn scale_bytes(dtype: GgmlType) -> usize {
    match dtype {
        GgmlType::Q4_1 | GgmlType::Q5_1 => 32,
        _ => 16,
    }
}

/// Whether `dtype` is a K-quant (super-blocks of 256 with per-sub-block 6-bit scales).
pub(crate) const fn is_k_quant(dtype: GgmlType) -> bool {
    matches!(dtype, GgmlType::Q4_K | GgmlType::Q5_K)
}

/// Bytes of one packed group of `nb` blocks of 32.
pub(crate) const fn group_bytes(dtype: GgmlType, nb: usize) -> usize {
    nb * (quant_bytes(dtype) + scale_bytes(dtype)) + if is_k_quant(dtype) { nb / 8 * 32 } else { 0 }
}

/// One block of 32 of one row in the common form: `w[j] = d * q[j] + mn`, `q` unsigned (4 or 5
/// bits; Q8_0 keeps its signed bytes in `q8`). K-quants carry their raw 6-bit scale and minimum
/// (`sc`, `m`) and their super-block's `d`, `dmin` as f16 bits.
struct RowBlock {
    /// Nibble bytes in Q4_0's order: low nibble element `j`, high nibble element `j + 16`.
    nibbles: [u8; 16],
    /// Fifth bit of element `j` at bit `j`.
    high: u32,
    q8: [u8; 32],
    /// f16 bits of `d` and of `m` (Q4_1, Q5_1) as the file stores them.
    d: [u8; 2],
    m: [u8; 2],
    sc: u8,
    min: u8,
}

/// Block `b` (of 32) of a GGUF row of `dtype`.
fn row_block(dtype: GgmlType, row: &[u8], b: usize) -> RowBlock {
    let mut out = RowBlock { nibbles: [0; 16], high: 0, q8: [0; 32], d: [0; 2], m: [0; 2], sc: 0, min: 0 };
    let at = |o: usize| [row[o], row[o + 1]];
    match dtype {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
            let blk = &row[b * dtype.block_bytes()..(b + 1) * dtype.block_bytes()];
            out.d = [blk[0], blk[1]];
            let with_m = matches!(dtype, GgmlType::Q4_1 | GgmlType::Q5_1);
            if with_m {
                out.m = [blk[2], blk[3]];
            }
            let mut q = &blk[if with_m { 4 } else { 2 }..];
            if matches!(dtype, GgmlType::Q5_0 | GgmlType::Q5_1) {
                out.high = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
                q = &q[4..];
            }
            if dtype == GgmlType::Q8_0 {
                out.q8.copy_from_slice(&q[..32]);
            } else {
                out.nibbles.copy_from_slice(&q[..16]);
            }
        }
        _ => {
            // K-quant sub-block `s` of super-block `sb`: nibbles of bytes `32 * (s / 2)..` of the
            // quants, low for even `s`, high for odd; Q5_K's fifth bits are bit `s` of `qh[l]`.
            let (sb, s) = (b / 8, b % 8);
            let blk = &row[sb * dtype.block_bytes()..(sb + 1) * dtype.block_bytes()];
            out.d = at(sb * dtype.block_bytes());
            out.m = at(sb * dtype.block_bytes() + 2);
            (out.sc, out.min) = crate::quant::q4k_scale_min(s, &blk[4..16]);
            let qs = if dtype == GgmlType::Q5_K { &blk[48..176] } else { &blk[16..144] };
            let nib = |l: usize| (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF;
            for j in 0..16 {
                out.nibbles[j] = nib(j) | (nib(j + 16) << 4);
            }
            if dtype == GgmlType::Q5_K {
                out.high = (0..32).fold(0u32, |h, l| h | ((((blk[16 + l] >> s) & 1) as u32) << l));
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
                | GgmlType::Q4_K
                | GgmlType::Q5_K
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
                    if dtype == GgmlType::Q8_0 {
                        for c in 0..8 {
                            q[c * 32 + r * 4..][..4].copy_from_slice(&blk.q8[4 * c..4 * c + 4]);
                        }
                    } else {
                        for c in 0..4 {
                            q[c * 32 + r * 4..][..4].copy_from_slice(&blk.nibbles[4 * c..4 * c + 4]);
                        }
                    }
                    if qb == 160 {
                        for k in 0..4 {
                            let bit = |j: usize| ((blk.high >> j) & 1) as u8;
                            q[128 + r * 4 + k] =
                                (0..4).fold(0, |h, c| h | bit(4 * c + k) << c | bit(16 + 4 * c + k) << (4 + c));
                        }
                    }
                    if is_k_quant(dtype) {
                        (s[r], s[8 + r]) = (blk.sc, blk.min);
                        if b % 8 == 0 {
                            let sp = &mut supers[b / 8 * 32..];
                            sp[2 * r..2 * r + 2].copy_from_slice(&blk.d);
                            sp[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&blk.m);
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
                crate::simd::packed_group_avx2(self.dtype, self.group(g), self.blocks(), acts, m, dst, ldc, valid);
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
            for (r, o) in out.iter_mut().enumerate() {
                let mut isum = 0i32;
                if self.dtype == GgmlType::Q8_0 {
                    for c in 0..8 {
                        for i in 0..4 {
                            isum += (q[c * 32 + r * 4 + i] as i8 as i32) * a.qs[4 * c + i] as i32;
                        }
                    }
                } else {
                    for c in 0..4 {
                        for i in 0..4 {
                            let w = q[c * 32 + r * 4 + i];
                            let (mut lo, mut hi) = ((w & 0xF) as i32, (w >> 4) as i32);
                            if qb == 160 {
                                let h = q[128 + r * 4 + i];
                                lo |= (((h >> c) & 1) as i32) << 4;
                                hi |= (((h >> (4 + c)) & 1) as i32) << 4;
                            }
                            isum += lo * a.qs[4 * c + i] as i32 + hi * a.qs[16 + 4 * c + i] as i32;
                        }
                    }
                }
                let (d, mn) = if is_k_quant(self.dtype) {
                    let sp = &supers[b / 8 * 32..];
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
