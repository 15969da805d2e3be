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
                for (e, (y, q)) in y.iter_mut().zip(q2k_values(blk)).enumerate() {
                    let sc = blk[e / 16];
                    *y = d * (sc & 0xF) as f32 * q as f32 - dmin * (sc >> 4) as f32;
                }
            }
            GgmlType::Q3_K => {
                let d = f16_at(blk, 108);
                for (e, (y, q)) in y.iter_mut().zip(q3k_values(blk)).enumerate() {
                    *y = d * q3k_scale(e / 16, blk) as f32 * (q as i32 - 4) as f32;
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
            GgmlType::Q4_K => dequant_q4k(blk, y),
            GgmlType::Q5_K => dequant_q5k(blk, y),
            GgmlType::Q6_K => dequant_q6k(blk, y),
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

/// The 256 2-bit values of a Q2_K block: each half of 128 elements takes 32 bytes of `qs`;
/// element `32 j + l` of a half is bits `2j..2j+2` of byte `l`.
pub(crate) fn q2k_values(blk: &[u8]) -> [u8; 256] {
    let mut out = [0u8; 256];
    for (e, v) in out.iter_mut().enumerate() {
        let (half, j, l) = (e / 128, e % 128 / 32, e % 32);
        *v = (blk[16 + 32 * half + l] >> (2 * j)) & 3;
    }
    out
}

/// The 256 unsigned 3-bit values of a Q3_K block (the value minus 4 is the signed quant): two low
/// bits as Q2_K's (from byte 32 on), the third from bit `4 * half + j` of `hmask[l]` (32 bytes).
pub(crate) fn q3k_values(blk: &[u8]) -> [u8; 256] {
    let mut out = [0u8; 256];
    for (e, v) in out.iter_mut().enumerate() {
        let (half, j, l) = (e / 128, e % 128 / 32, e % 32);
        let low = (blk[32 + 32 * half + l] >> (2 * j)) & 3;
        *v = low | (((blk[l] >> (4 * half + j)) & 1) << 2);
    }
    out
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

fn dequant_q4k(blk: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
    let scales = &blk[4..16];
    let qs = &blk[16..144];
    // Each 32 bytes of nibbles hold two sub-blocks of 32: low nibbles first, then high.
    for pair in 0..4 {
        let q = &qs[pair * 32..pair * 32 + 32];
        let (s1, m1) = q4k_scale_min(2 * pair, scales);
        let (s2, m2) = q4k_scale_min(2 * pair + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        let out = &mut y[pair * 64..pair * 64 + 64];
        for l in 0..32 {
            out[l] = d1 * (q[l] & 0xF) as f32 - m1;
            out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn dequant_q5k(blk: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
    let scales = &blk[4..16];
    let qh = &blk[16..48];
    let qs = &blk[48..176];
    // As Q4_K, plus a fifth bit per element: bit `s` of `qh[l]` for element `l` of sub-block `s`.
    for pair in 0..4 {
        let q = &qs[pair * 32..pair * 32 + 32];
        let (s1, m1) = q4k_scale_min(2 * pair, scales);
        let (s2, m2) = q4k_scale_min(2 * pair + 1, scales);
        let (d1, m1) = (d * s1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * s2 as f32, dmin * m2 as f32);
        let out = &mut y[pair * 64..pair * 64 + 64];
        for l in 0..32 {
            let h1 = ((qh[l] >> (2 * pair)) & 1) << 4;
            let h2 = ((qh[l] >> (2 * pair + 1)) & 1) << 4;
            out[l] = d1 * ((q[l] & 0xF) | h1) as f32 - m1;
            out[l + 32] = d2 * ((q[l] >> 4) | h2) as f32 - m2;
        }
    }
}

fn dequant_q6k(blk: &[u8], y: &mut [f32]) {
    let d = f16_at(blk, 208);
    for (e, (y, q)) in y.iter_mut().zip(q6k_values(blk)).enumerate() {
        *y = d * (blk[192 + e / 16] as i8) as f32 * (q as i32 - 32) as f32;
    }
}

/// The 256 unsigned 6-bit values of a Q6_K block (element `e` is scaled by signed byte `e / 16`
/// of the scales). Each half of 128 elements takes 64 bytes of low nibbles and 32 of high bit
/// pairs: element `l + 32 k` (`l < 32`) is nibble `k / 2` of `ql[l + 32 (k % 2)]` with bits `2k`
/// and `2k + 1` of `qh[l]` above it.
pub(crate) fn q6k_values(blk: &[u8]) -> [u8; 256] {
    let mut out = [0u8; 256];
    for half in 0..2 {
        let ql = &blk[half * 64..half * 64 + 64];
        let qh = &blk[128 + half * 32..128 + half * 32 + 32];
        for l in 0..32 {
            for k in 0..4 {
                let low = (ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 0xF;
                out[half * 128 + l + 32 * k] = low | (((qh[l] >> (2 * k)) & 3) << 4);
            }
        }
    }
    out
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
