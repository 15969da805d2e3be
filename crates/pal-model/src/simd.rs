//! AVX2 integer dot products for the quantized matmul (x86-64 only, chosen at run time).

use crate::gguf::GgmlType;
use crate::qmatmul::ActBlock;

#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// # Safety
/// The CPU must support AVX2 and FMA; `w` holds whole blocks of `dtype` (Q4_0, Q4_1 or Q8_0),
/// as many as `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_quant_avx2(dtype: GgmlType, w: &[u8], x: &[ActBlock]) -> f32 {
    use std::arch::x86_64::*;
    let bb = dtype.block_bytes();
    let nb = x.len().min(w.len() / bb);
    let low = _mm_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = 0f32;
    let wp = w.as_ptr();
    for (i, a) in x.iter().enumerate().take(nb) {
        let blk = wp.add(i * bb);
        let d = half::f16::from_bits(u16::from_le_bytes([*blk, *blk.add(1)])).to_f32();
        // Activations 0..16 and 16..32 as i16.
        let x0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let x1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
        // Weights 0..16 and 16..32 widened to i16.
        let (w0, w1) = match dtype {
            GgmlType::Q8_0 => (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(2) as *const __m128i)),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(18) as *const __m128i)),
            ),
            _ => {
                let off = if dtype == GgmlType::Q4_1 { 4 } else { 2 };
                let bytes = _mm_loadu_si128(blk.add(off) as *const __m128i);
                let lo = _mm_and_si128(bytes, low);
                let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low);
                let m = if dtype == GgmlType::Q4_1 {
                    half::f16::from_bits(u16::from_le_bytes([*blk.add(2), *blk.add(3)])).to_f32()
                } else {
                    -8.0 * d
                };
                acc_min += m * a.s;
                (_mm256_cvtepu8_epi16(lo), _mm256_cvtepu8_epi16(hi))
            }
        };
        // Pairwise products summed to i32: |w| <= 128, |x| <= 32767, 32 terms: fits i32.
        let s32 = _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), _mm256_set1_ps(d * a.d), acc);
    }
    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h) + acc_min
}
