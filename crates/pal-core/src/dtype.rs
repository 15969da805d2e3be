use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use std::fmt;
use std::str::FromStr;

/// Storage type of a tensor. Arithmetic is always done in f32 (f64 in the reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(DType::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            other => Err(format!("unknown dtype `{other}` (expected f32, f16 or bf16)")),
        }
    }
}

/// A storage element: f32, f16 or bf16. Kernels load rows into f32 scratch with [`Element::load_row`]
/// (vectorised where the hardware allows) and round results back with [`Element::from_f32`].
pub trait Element: Copy + Send + Sync + Default + PartialEq + fmt::Debug + 'static {
    const DTYPE: DType;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    /// Round an f64 directly to this type (one rounding, used by the reference).
    fn from_f64(v: f64) -> Self;
    /// `dst[i] = src[i] as f32`; both slices have the same length.
    fn load_row(src: &[Self], dst: &mut [f32]);
    /// `dst[i] = round(src[i])` (round to nearest even); both slices have the same length.
    fn store_row(src: &[f32], dst: &mut [Self]);
    /// A value that no correct kernel produces, used to poison outputs in tests.
    fn poison() -> Self {
        Self::from_f32(f32::NAN)
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn load_row(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn store_row(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    #[inline(always)]
    fn load_row(src: &[Self], dst: &mut [f32]) {
        // `half` uses F16C when the CPU has it (detected at run time).
        src.convert_to_f32_slice(dst);
    }
    #[inline(always)]
    fn store_row(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    #[inline(always)]
    fn load_row(src: &[Self], dst: &mut [f32]) {
        // bf16 is the top half of an f32: a shift the compiler vectorises.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
    #[inline(always)]
    fn store_row(src: &[f32], dst: &mut [Self]) {
        // Round to nearest even on the bit pattern, branch-free so that it vectorises; NaN stays
        // a (quiet) NaN. Same results as `bf16::from_f32`.
        for (d, s) in dst.iter_mut().zip(src) {
            let b = s.to_bits();
            let rounded = (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16;
            let nan = ((b >> 16) as u16) | 0x40;
            *d = bf16::from_bits(if s.is_nan() { nan } else { rounded });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_store_row_matches_half() {
        let mut vals =
            vec![0.0f32, -0.0, 1.0, -1.5, 3.0e38, -3.4e38, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, 65504.0];
        let mut x = 0x1234_5678u32;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            vals.push(f32::from_bits(x));
        }
        let mut out = vec![bf16::ZERO; vals.len()];
        bf16::store_row(&vals, &mut out);
        for (v, o) in vals.iter().zip(&out) {
            let want = bf16::from_f32(*v);
            if v.is_nan() {
                assert!(o.is_nan());
            } else {
                assert_eq!(o.to_bits(), want.to_bits(), "{v:e}");
            }
        }
        let mut h = vec![f16::ZERO; 3];
        f16::store_row(&[1.0, 0.5, -2.0], &mut h);
        assert_eq!(h, [f16::from_f32(1.0), f16::from_f32(0.5), f16::from_f32(-2.0)]);
    }
}
