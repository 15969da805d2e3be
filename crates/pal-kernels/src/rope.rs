//! Rotary position embedding: configuration, frequencies and a cos/sin table.

use pal_core::{PalError, Result};

/// How the rotated dimensions are paired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(x[2i], x[2i+1])`: GGUF / llama.cpp / original Llama layout.
    AdjacentPairs,
    /// Pairs `(x[i], x[i + rotary_dim/2])`: NeoX / Hugging Face layout.
    HalfSplit,
}

/// Llama-3.1 frequency scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeConfig {
    pub style: RopeStyle,
    /// Base of the frequencies (`rope_theta`, 10000 for Llama 2, 500000 for Llama 3).
    pub theta: f64,
    /// Rotated leading dimensions; `None` = the whole head.
    pub rotary_dim: Option<usize>,
    pub llama3: Option<Llama3Scaling>,
}

impl RopeConfig {
    pub fn new(style: RopeStyle, theta: f64) -> Self {
        RopeConfig { style, theta, rotary_dim: None, llama3: None }
    }
}

/// A ready-to-use RoPE: per-pair inverse frequencies (f64) and an f32 cos/sin table for positions
/// `0..max_position`, computed once in f64 so that kernels do no trigonometry on the hot path.
#[derive(Clone, Debug)]
pub struct Rope {
    config: RopeConfig,
    head_dim: usize,
    rotary_dim: usize,
    max_position: usize,
    inv_freq: Vec<f64>,
    /// `[max_position, rotary_dim/2]` cosines and sines.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    pub fn new(config: RopeConfig, head_dim: usize, max_position: usize) -> Result<Self> {
        Self::build(config, head_dim, max_position, None)
    }

    /// Like [`Rope::new`], with each pair's frequency divided by `freq_factors[i]` (after the
    /// Llama-3 scaling, if any): the `rope_freqs` tensor of Llama 3.1+ GGUF files, or a linear
    /// position interpolation (every factor equal). Fails, naming `freq_factors`, unless there is
    /// one finite positive factor per rotated pair.
    pub fn with_freq_factors(
        config: RopeConfig,
        head_dim: usize,
        max_position: usize,
        freq_factors: &[f64],
    ) -> Result<Self> {
        Self::build(config, head_dim, max_position, Some(freq_factors))
    }

    fn build(config: RopeConfig, head_dim: usize, max_position: usize, factors: Option<&[f64]>) -> Result<Self> {
        let rotary_dim = config.rotary_dim.unwrap_or(head_dim);
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || rotary_dim > head_dim {
            return Err(PalError::invalid("rotary_dim", format!("{rotary_dim} must be even and in 2..={head_dim}")));
        }
        if !(config.theta.is_finite() && config.theta > 1.0) {
            return Err(PalError::invalid("theta", format!("{} must be finite and > 1", config.theta)));
        }
        if max_position == 0 {
            return Err(PalError::invalid("max_position", "must be at least 1"));
        }
        if let Some(s) = config.llama3 {
            let ok = s.factor >= 1.0
                && s.low_freq_factor > 0.0
                && s.high_freq_factor > s.low_freq_factor
                && s.original_max_position > 0.0;
            if !ok {
                return Err(PalError::invalid(
                    "llama3",
                    format!(
                        "{s:?}: need factor >= 1, 0 < low_freq_factor < high_freq_factor, original_max_position > 0"
                    ),
                ));
            }
        }
        let half = rotary_dim / 2;
        if let Some(f) = factors {
            if f.len() != half || !f.iter().all(|v| v.is_finite() && *v > 0.0) {
                return Err(PalError::invalid(
                    "freq_factors",
                    format!("need {half} finite positive factors (one per rotated pair), got {} values", f.len()),
                ));
            }
        }
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| {
                let f = config.theta.powf(-((2 * i) as f64) / rotary_dim as f64);
                let f = match config.llama3 {
                    Some(s) => llama3_scale(f, &s),
                    None => f,
                };
                f / factors.map_or(1.0, |x| x[i])
            })
            .collect();
        let mut cos = Vec::with_capacity(max_position * half);
        let mut sin = Vec::with_capacity(max_position * half);
        for p in 0..max_position {
            for &f in &inv_freq {
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        Ok(Rope { config, head_dim, rotary_dim, max_position, inv_freq, cos, sin })
    }

    pub fn config(&self) -> &RopeConfig {
        &self.config
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }
    /// Positions the table covers (exclusive bound).
    pub fn max_position(&self) -> usize {
        self.max_position
    }
    /// Inverse frequency of each rotated pair, after scaling.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }
    /// Cosines and sines for one position, one per pair.
    #[inline]
    pub(crate) fn table(&self, pos: usize) -> (&[f32], &[f32]) {
        let h = self.rotary_dim / 2;
        (&self.cos[pos * h..(pos + 1) * h], &self.sin[pos * h..(pos + 1) * h])
    }
    /// The whole cos and sin tables, `[max_position, rotary_dim / 2]` each.
    pub(crate) fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }
    /// Indices `(a, b)` of the pair rotated by frequency `i`.
    #[inline(always)]
    pub(crate) fn pair(&self, i: usize) -> (usize, usize) {
        match self.config.style {
            RopeStyle::AdjacentPairs => (2 * i, 2 * i + 1),
            RopeStyle::HalfSplit => (i, i + self.rotary_dim / 2),
        }
    }
}

fn llama3_scale(freq: f64, s: &Llama3Scaling) -> f64 {
    let low_wavelen = s.original_max_position / s.low_freq_factor;
    let high_wavelen = s.original_max_position / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    if wavelen < high_wavelen {
        freq
    } else if wavelen > low_wavelen {
        freq / s.factor
    } else {
        let smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freq_factors_divide_each_frequency_and_are_validated() {
        let c = RopeConfig::new(RopeStyle::AdjacentPairs, 10000.0);
        let plain = Rope::new(c, 16, 8).unwrap();
        let factors = [1.0, 2.0, 4.0, 8.0, 1.5, 1.0, 3.0, 0.5];
        let scaled = Rope::with_freq_factors(c, 16, 8, &factors).unwrap();
        for ((a, b), f) in scaled.inv_freq().iter().zip(plain.inv_freq()).zip(factors) {
            assert_eq!(*a, b / f);
        }
        let (cos, sin) = scaled.table(5);
        assert!(((5.0 * plain.inv_freq()[3] / 8.0).cos() as f32 - cos[3]).abs() < 1e-7);
        assert!(((5.0 * plain.inv_freq()[3] / 8.0).sin() as f32 - sin[3]).abs() < 1e-7);
        for bad in [&factors[..7], &[1.0, 2.0, 4.0, 8.0, 1.5, 1.0, 3.0, 0.0][..], &[f64::NAN; 8][..]] {
            match Rope::with_freq_factors(c, 16, 8, bad) {
                Err(PalError::InvalidArgument { arg, .. }) => assert_eq!(arg, "freq_factors"),
                other => panic!("expected a typed error, got {other:?}"),
            }
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let s =
            Llama3Scaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8192.0 };
        let mut c = RopeConfig::new(RopeStyle::HalfSplit, 500000.0);
        let plain = Rope::new(c, 128, 4).unwrap();
        c.llama3 = Some(s);
        let scaled = Rope::new(c, 128, 4).unwrap();
        assert_eq!(scaled.inv_freq()[0], plain.inv_freq()[0]);
        let last = plain.inv_freq().len() - 1;
        assert!((scaled.inv_freq()[last] - plain.inv_freq()[last] / 8.0).abs() < 1e-15);
        // In between, the scaled frequency lies between freq/8 and freq.
        for (a, b) in scaled.inv_freq().iter().zip(plain.inv_freq()) {
            assert!(*a <= *b && *a >= b / 8.0 - 1e-18);
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let c = RopeConfig { rotary_dim: Some(3), ..RopeConfig::new(RopeStyle::AdjacentPairs, 1e4) };
        assert_eq!(Rope::new(c, 64, 8).unwrap_err().arg(), Some("rotary_dim"));
        let c = RopeConfig::new(RopeStyle::AdjacentPairs, f64::NAN);
        assert_eq!(Rope::new(c, 64, 8).unwrap_err().arg(), Some("theta"));
    }
}
