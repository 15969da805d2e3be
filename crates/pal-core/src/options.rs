use crate::{PalError, Result};

/// Options every attention op honours.
///
/// - `sm_scale`: softmax scale applied to `q·k`; `None` means `1/sqrt(head_dim)`.
/// - `window_left`: sliding window. A query at absolute position `p` sees key `j` only when
///   `p - window_left <= j <= p` (FlashInfer's convention: the window holds `window_left + 1` keys).
/// - `logit_soft_cap`: Gemma-2 style cap, `logit = cap * tanh(logit / cap)`, applied to the scaled logit.
/// - `causal`: prefill only; a query sees keys up to its own position. Decode queries sit at the
///   end of their sequence, so decode is causal by construction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionOptions {
    pub sm_scale: Option<f32>,
    pub window_left: Option<u32>,
    pub logit_soft_cap: Option<f32>,
    pub causal: bool,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        AttentionOptions { sm_scale: None, window_left: None, logit_soft_cap: None, causal: true }
    }
}

impl AttentionOptions {
    /// The scale actually used for a given head dimension.
    pub fn scale(&self, head_dim: usize) -> f32 {
        self.sm_scale.unwrap_or(1.0 / (head_dim as f32).sqrt())
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(s) = self.sm_scale {
            if !s.is_finite() || s == 0.0 {
                return Err(PalError::invalid("sm_scale", format!("{s} must be finite and non-zero")));
            }
        }
        if let Some(c) = self.logit_soft_cap {
            if !c.is_finite() || c <= 0.0 {
                return Err(PalError::invalid("logit_soft_cap", format!("{c} must be finite and > 0")));
            }
        }
        Ok(())
    }

    /// First key position visible to a query at `pos` (inclusive).
    #[inline]
    pub fn first_visible(&self, pos: usize) -> usize {
        match self.window_left {
            Some(w) => pos.saturating_sub(w as usize),
            None => 0,
        }
    }
}
