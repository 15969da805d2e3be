//! Dequantization of GGML block formats to f32, and round-to-nearest quantizers (used for
//! activations and by tests that write tiny models).
//!
//! Block layouts (little-endian, `d`/`m` are f16 unless noted):
//! - `Q4_0`: 32 elements = `d`, 16 bytes of nibbles; `x[j] = d * (lo(q[j]) - 8)`, `x[j+16] = d * (hi(q[j]) - 8)`.
//! - `Q4_1`: 32 elements = `d`, `m`, 16 bytes of nibbles; `x = d * nibble + m` (same order as Q4_0).
//! - `Q5_0`: 32 elements = `d`, 4 bytes of fifth bits (bit `j` for element `j`), 16 bytes of nibbles
//!   (as Q4_0); `x = d * (q5 - 16)`.
//! - `Q5_1`: 32 elements = `d`, `m`, fifth bits, nibbles; `x = d * q5 + m`.
//! - `Q8_0`: 32 elements = `d`, 32 signed bytes; `x = d * q`.
//! - `Q2_K`: 256 elements = 16 bytes of 4-bit (scale, min) pairs, one per 16 elements, 64 bytes of
//!   2-bit quants, `d`, `dmin`; `x = d * scale * q2 - dmin * min`.
//! - `Q3_K`: 256 elements = 32 bytes of third bits, 64 bytes of 2-bit quants, 12 bytes of packed
//!   6-bit scales (one per 16 elements, stored plus 32), `d`; `x = d * (scale - 32) * (q3 - 4)`.
//! - `Q4_K`: 256 elements = `d`, `dmin`, 12 bytes of packed 6-bit (scale, min) pairs for 8 sub-blocks
//!   of 32, 128 bytes of nibbles; `x = d * scale * nibble - dmin * min`.
//! - `Q5_K`: 256 elements = Q4_K's `d`, `dmin` and scales, 32 bytes of fifth bits (bit `s` of byte
//!   `l` for element `l` of sub-block `s`), 128 bytes of nibbles; `x = d * scale * q5 - dmin * min`.
//! - `IQ4_NL`: 32 elements = `d`, 16 bytes of nibbles (as Q4_0) indexing a fixed non-uniform grid
//!   of 16 signed values; `x = d * grid[nibble]`.
//! - `IQ4_XS`: 256 elements = `d`, 6-bit signed scales per 32 (2 high bits in a u16, 4 low bits in
//!   4 bytes), 128 bytes of nibbles (16 per 32 elements, as Q4_0); `x = d * scale * grid[nibble]`.
//! - `Q6_K`: 256 elements = 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed 8-bit
//!   scales (one per 16 elements), `d`; `x = d * scale * (q6 - 32)`.

use crate::gguf::GgmlType;
use half::{bf16, f16};

/// The 16 values an IQ4_NL / IQ4_XS nibble selects (ggml's `kvalues_iq4nl`): a non-uniform grid,
/// denser near zero.
pub(crate) const IQ4_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// The signed scale of sub-block `ib` (0..8, 32 elements each) of an IQ4_XS block: 4 low bits
/// from the nibbles of `scales_l` (bytes 4..8), 2 high bits from `scales_h` (bytes 2..4), minus 32.
pub(crate) fn iq4xs_scale(ib: usize, blk: &[u8]) -> i32 {
    let high = u16::from_le_bytes([blk[2], blk[3]]);
    let low = (blk[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
    (low as i32 | ((((high >> (2 * ib)) & 3) as i32) << 4)) - 32
}

/// The little-endian f16 at byte `i`, as f32 (block scales).
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantize `bytes` (whole blocks of `dtype`) into `out` (`out.len()` elements). Fails, naming
/// `bytes`, when their length is not exactly the encoding of `out.len()` elements.
pub fn dequantize(dtype: GgmlType, bytes: &[u8], out: &mut [f32]) -> crate::Result<()> {
    let n = out.len();
    if dtype.row_bytes(n) != Some(bytes.len()) {
        return Err(crate::ModelError::invalid(
            "bytes",
            format!("{} bytes do not encode {n} {dtype} elements", bytes.len()),
        ));
    }
    dequantize_unchecked(dtype, bytes, out);
    Ok(())
}

/// [`dequantize`] for callers that sized both buffers from a validated tensor shape.
pub(crate) fn dequantize_unchecked(dtype: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let bb = dtype.block_bytes();
    let be = dtype.block_elems();
    for (blk, y) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
        match dtype {
            GgmlType::F32 => y[0] = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]),
            GgmlType::F16 => y[0] = f16_at(blk, 0),
            GgmlType::BF16 => y[0] = bf16::from_le_bytes([blk[0], blk[1]]).to_f32(),
            GgmlType::Q4_0 => {
                let d = f16_at(blk, 0);
                for j in 0..16 {
                    let q = blk[2 + j];
                    y[j] = d * ((q & 0xF) as i32 - 8) as f32;
                    y[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
                }
            }
            GgmlType::Q4_1 => {
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                for j in 0..16 {
                    let q = blk[4 + j];
                    y[j] = d * (q & 0xF) as f32 + m;
                    y[j + 16] = d * (q >> 4) as f32 + m;
                }
            }
            GgmlType::Q5_0 => {
                let d = f16_at(blk, 0);
                for (y, q) in y.iter_mut().zip(q5_values(&blk[2..22])) {
                    *y = d * (q as i32 - 16) as f32;
                }
            }
            GgmlType::Q5_1 => {
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                for (y, q) in y.iter_mut().zip(q5_values(&blk[4..24])) {
                    *y = d * q as f32 + m;
                }
            }
            GgmlType::Q8_0 => {
                let d = f16_at(blk, 0);
                for j in 0..32 {
                    y[j] = d * (blk[2 + j] as i8) as f32;
                }
            }
            GgmlType::Q2_K => {
                let (d, dmin) = (f16_at(blk, 80), f16_at(blk, 82));
                for (e, y) in y.iter_mut().enumerate() {
                    let sc = blk[e / 16];
                    *y = d * (sc & 0xF) as f32 * k_quant_value(dtype, blk, e) as f32 - dmin * (sc >> 4) as f32;
                }
            }
            GgmlType::Q3_K => {
                let d = f16_at(blk, 108);
                for (e, y) in y.iter_mut().enumerate() {
                    *y = d * q3k_scale(e / 16, blk) as f32 * (k_quant_value(dtype, blk, e) as i32 - 4) as f32;
                }
            }
            GgmlType::IQ4_NL => {
                let d = f16_at(blk, 0);
                for j in 0..16 {
                    y[j] = d * IQ4_VALUES[(blk[2 + j] & 0xF) as usize] as f32;
                    y[j + 16] = d * IQ4_VALUES[(blk[2 + j] >> 4) as usize] as f32;
                }
            }
            GgmlType::IQ4_XS => {
                let d = f16_at(blk, 0);
                for (ib, y) in y.chunks_exact_mut(32).enumerate() {
                    let dl = d * iq4xs_scale(ib, blk) as f32;
                    let q = &blk[8 + 16 * ib..8 + 16 * ib + 16];
                    for j in 0..16 {
                        y[j] = dl * IQ4_VALUES[(q[j] & 0xF) as usize] as f32;
                        y[j + 16] = dl * IQ4_VALUES[(q[j] >> 4) as usize] as f32;
                    }
                }
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                for (sub, y) in y.chunks_exact_mut(32).enumerate() {
                    let (sc, m) = q4k_scale_min(sub, &blk[4..16]);
                    let (ds, ms) = (d * sc as f32, dmin * m as f32);
                    for (l, y) in y.iter_mut().enumerate() {
                        *y = ds * k_quant_value(dtype, blk, 32 * sub + l) as f32 - ms;
                    }
                }
            }
            GgmlType::Q6_K => {
                let d = f16_at(blk, 208);
                for (e, y) in y.iter_mut().enumerate() {
                    *y = d * (blk[192 + e / 16] as i8) as f32 * (k_quant_value(dtype, blk, e) as i32 - 32) as f32;
                }
            }
        }
    }
}

/// The 32 five-bit values of a Q5_0 / Q5_1 block from its fifth bits (4 bytes, little-endian) and
/// nibbles (16 bytes): element `j < 16` is the low nibble of byte `j`, `j + 16` its high nibble.
pub(crate) fn q5_values(b: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (b[4 + j] & 0xF) | (((qh >> j) & 1) << 4) as u8;
        q[j + 16] = (b[4 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
    }
    q
}

/// The unsigned quant of element `e` (0..256) of a K-quant block of `dtype`, before its scale
/// and offset (Q3_K: the 3-bit value, minus 4 is the signed quant; Q6_K: minus 32). Shared by
/// the dequantizer and the packing for the integer kernels.
/// - Q2_K / Q3_K: each half of 128 elements takes 32 bytes of 2-bit quants (Q2_K from byte 16,
///   Q3_K from byte 32); element `32 j + l` of a half is bits `2j..2j+2` of byte `l`. Q3_K's
///   third bit is bit `4 * half + j` of `hmask[l]` (bytes 0..32).
/// - Q4_K / Q5_K: sub-block `s` of 32 is the low (even `s`) or high nibbles of the 32 quant bytes
///   `32 * (s / 2)..` (from byte 16, or 48 for Q5_K); Q5_K's fifth bit is bit `s` of `qh[l]`
///   (bytes 16..48).
/// - Q6_K: each half of 128 takes 64 bytes of low nibbles and 32 of high bit pairs: element
///   `32 k + l` is nibble `k / 2` of `ql[l + 32 (k % 2)]` with bits `2k..2k+2` of `qh[l]` above.
#[inline]
pub(crate) fn k_quant_value(dtype: GgmlType, blk: &[u8], e: usize) -> u8 {
    let (half, k, l) = (e / 128, e % 128 / 32, e % 32);
    match dtype {
        GgmlType::Q2_K => (blk[16 + 32 * half + l] >> (2 * k)) & 3,
        GgmlType::Q3_K => ((blk[32 + 32 * half + l] >> (2 * k)) & 3) | (((blk[l] >> (4 * half + k)) & 1) << 2),
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (s, five) = (e / 32, dtype == GgmlType::Q5_K);
            let q = (blk[if five { 48 } else { 16 } + 32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF;
            if five {
                q | (((blk[16 + l] >> s) & 1) << 4)
            } else {
                q
            }
        }
        GgmlType::Q6_K => {
            let low = (blk[64 * half + l + 32 * (k % 2)] >> (4 * (k / 2))) & 0xF;
            low | (((blk[128 + 32 * half + l] >> (2 * k)) & 3) << 4)
        }
        _ => unreachable!("{dtype} is not a K-quant"),
    }
}

/// Scale `k` (0..16, one per 16 elements) of a Q3_K block, as the signed value it multiplies:
/// low 4 bits from the nibbles of bytes 96..104, high 2 bits from bytes 104..108.
pub(crate) fn q3k_scale(k: usize, blk: &[u8]) -> i32 {
    let s = &blk[96..108];
    let low = if k < 8 { s[k] & 0xF } else { s[k - 8] >> 4 };
    let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// The 6-bit (scale, min) of sub-block `j` (0..8) of a Q4_K or Q5_K block.
pub(crate) fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Encode `x` (a whole number of blocks) as `dtype` with round-to-nearest, as ggml's reference
/// quantizers do. Supports the plain and 32-element formats (F32, F16, BF16, Q4_0, Q4_1, Q5_0,
/// Q5_1, Q8_0); K-quants return `None`.
pub fn quantize(dtype: GgmlType, x: &[f32]) -> Option<Vec<u8>> {
    let be = dtype.block_elems();
    if !x.len().is_multiple_of(be) {
        return None;
    }
    let mut out = Vec::with_capacity(dtype.row_bytes(x.len())?);
    for b in x.chunks_exact(be) {
        match dtype {
            GgmlType::F32 => out.extend_from_slice(&b[0].to_le_bytes()),
            GgmlType::F16 => out.extend_from_slice(&f16::from_f32(b[0]).to_le_bytes()),
            GgmlType::BF16 => out.extend_from_slice(&bf16::from_f32(b[0]).to_le_bytes()),
            GgmlType::Q8_0 => {
                let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
            }
            GgmlType::Q4_0 => {
                // ggml's choice: the value of largest magnitude maps to -8.
                let max = b.iter().fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
            }
            GgmlType::Q4_1 => {
                let min = b.iter().copied().fold(f32::INFINITY, f32::min);
                let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
            }
            GgmlType::Q5_0 => {
                // As Q4_0 with 32 levels: the value of largest magnitude maps to -16.
                let max = b.iter().fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let d = max / -16.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<u8> = b.iter().map(|&v| ((v * id + 16.5) as i32).clamp(0, 31) as u8).collect();
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                push_q5(&q, &mut out);
            }
            GgmlType::Q5_1 => {
                let min = b.iter().copied().fold(f32::INFINITY, f32::min);
                let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 31.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<u8> = b.iter().map(|&v| (((v - min) * id + 0.5) as i32).clamp(0, 31) as u8).collect();
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                push_q5(&q, &mut out);
            }
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_NL
            | GgmlType::IQ4_XS => return None,
        }
    }
    Some(out)
}

/// Append the fifth bits and nibbles of 32 five-bit values (the inverse of [`q5_values`]).
fn push_q5(q: &[u8], out: &mut Vec<u8>) {
    let qh = q.iter().enumerate().fold(0u32, |h, (j, &v)| h | (((v >> 4) as u32 & 1) << j));
    out.extend_from_slice(&qh.to_le_bytes());
    out.extend((0..16).map(|j| (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4)));
}
