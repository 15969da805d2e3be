//! Q4_0 / Q4_1 / Q8_0 weights repacked for integer matrix products with 8-bit activations.
//!
//! A GGUF row stores its 32-element blocks one after another, so a dot product has to scale and
//! reduce every block of every row on its own. [`PackedMatrix`] interleaves [`GROUP`] = 8 rows
//! instead: for each block, 32-byte chunks whose 4-byte lane `r` holds 4 consecutive quants of
//! row `r`. One `maddubs` of a chunk with 4 activation bytes broadcast to every lane then
//! advances eight dot products at once, the eight sums land in the lanes of one register, and
//! the per-block scaling is one vector multiply-add for eight rows. The unpacked weights of a
//! group are reused for up to four activation rows, and for prefill they stay in L1 while every
//! token passes over them.
//!
//! Layout of one group (`nb` blocks per row; rows past the end of the matrix are zeros):
//! - quants, `nb` x `QB` bytes. Q4: chunk `c` (0..4) lane `r` = file bytes `4c..4c+4` of the
//!   block, which hold elements `4c..4c+4` in their low nibbles and `16+4c..16+4c+4` in their high
//!   nibbles. Q8_0: chunk `c` (0..8) lane `r` = elements `4c..4c+4`.
//! - scales, `nb` x `SB` bytes: the eight rows' f16 `d`, then (Q4_1) their eight f16 `m`.
//!
//! The packed matrix is exactly as large as the file's. Activations are rounded per block of 32 to
//! 8 bits ([`ActBlock`]), as llama.cpp does for these formats, so products match its numerics; the
//! relative error per block is at most 1/254 of the block's largest activation.

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

/// Quant bytes per block per group.
pub(crate) const fn quant_bytes(dtype: GgmlType) -> usize {
    match dtype {
        GgmlType::Q8_0 => 256,
        _ => 128,
    }
}

/// Scale bytes per block per group.
pub(crate) const fn scale_bytes(dtype: GgmlType) -> usize {
    match dtype {
        GgmlType::Q4_1 => 32,
        _ => 16,
    }
}

impl PackedMatrix {
    /// Whether `dtype` has a packed form.
    pub fn supports(dtype: GgmlType) -> bool {
        matches!(dtype, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
    }

    /// Repack `bytes`, a GGUF `[rows, cols]` tensor of `dtype`. Fails, naming the argument, for an
    /// unsupported type, a `cols` that is not whole blocks, or a byte count that does not match.
    pub fn pack(dtype: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        if !Self::supports(dtype) {
            return Err(ModelError::invalid("dtype", format!("{dtype} has no packed form")));
        }
        if cols == 0 || !cols.is_multiple_of(32) {
            return Err(ModelError::invalid("cols", format!("{cols} is not a positive multiple of 32")));
        }
        let bb = dtype.block_bytes();
        let nb = cols / 32;
        if rows.checked_mul(nb * bb) != Some(bytes.len()) {
            return Err(ModelError::invalid("bytes", format!("{} bytes are not {rows}x{cols} {dtype}", bytes.len())));
        }
        let (qb, sb) = (quant_bytes(dtype), scale_bytes(dtype));
        let group_bytes = nb * (qb + sb);
        let groups = rows.div_ceil(GROUP);
        // Huge pages: the weights are streamed once per step, 4 KiB pages would cost a TLB miss each.
        let mut data = pal_core::alloc::large_vec::<u8>(groups * group_bytes);
        let qoff = match dtype {
            GgmlType::Q4_1 => 4,
            _ => 2,
        };
        for (g, gd) in data.chunks_exact_mut(group_bytes).enumerate() {
            let (quants, scales) = gd.split_at_mut(nb * qb);
            for r in 0..GROUP.min(rows - g * GROUP) {
                let row = &bytes[(g * GROUP + r) * nb * bb..][..nb * bb];
                for (b, blk) in row.chunks_exact(bb).enumerate() {
                    let qs = &blk[qoff..];
                    for c in 0..qb / 32 {
                        let at = b * qb + c * 32 + r * 4;
                        quants[at..at + 4].copy_from_slice(&qs[4 * c..4 * c + 4]);
                    }
                    let s = &mut scales[b * sb..];
                    s[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
                    if dtype == GgmlType::Q4_1 {
                        s[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&blk[2..4]);
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
        let gb = self.blocks() * (quant_bytes(self.dtype) + scale_bytes(self.dtype));
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
        let (quants, scales) = self.group(g).split_at(nb * qb);
        *out = [0.0; GROUP];
        for (b, a) in acts.iter().enumerate().take(nb) {
            let q = &quants[b * qb..(b + 1) * qb];
            let s = &scales[b * sb..(b + 1) * sb];
            for (r, o) in out.iter_mut().enumerate() {
                let mut isum = 0i32;
                for c in 0..qb / 32 {
                    for i in 0..4 {
                        let w = q[c * 32 + r * 4 + i];
                        if self.dtype == GgmlType::Q8_0 {
                            isum += (w as i8 as i32) * a.qs[4 * c + i] as i32;
                        } else {
                            isum += (w & 0xF) as i32 * a.qs[4 * c + i] as i32
                                + (w >> 4) as i32 * a.qs[16 + 4 * c + i] as i32;
                        }
                    }
                }
                let d = f16_at(s, 2 * r);
                *o = (isum as f32).mul_add(d * a.d, *o);
                match self.dtype {
                    GgmlType::Q4_1 => *o = f16_at(s, 16 + 2 * r).mul_add(a.s, *o),
                    GgmlType::Q4_0 => *o = (d * -8.0).mul_add(a.s, *o),
                    _ => {}
                }
            }
        }
    }
}
