use crate::{PalError, Result};

/// Head counts and size of an attention layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadConfig {
    pub num_qo_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl HeadConfig {
    /// Largest head dimension the kernels are built for.
    pub const MAX_HEAD_DIM: usize = 256;

    pub fn new(num_qo_heads: usize, num_kv_heads: usize, head_dim: usize) -> Result<Self> {
        let h = HeadConfig { num_qo_heads, num_kv_heads, head_dim };
        h.validate()?;
        Ok(h)
    }

    /// GQA group: query heads per KV head (1 = MHA, Hq = MQA).
    pub fn group_size(&self) -> usize {
        self.num_qo_heads / self.num_kv_heads
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_kv_heads == 0 {
            return Err(PalError::invalid("num_kv_heads", "must be at least 1"));
        }
        if self.num_qo_heads == 0 {
            return Err(PalError::invalid("num_qo_heads", "must be at least 1"));
        }
        if !self.num_qo_heads.is_multiple_of(self.num_kv_heads) {
            return Err(PalError::invalid(
                "num_qo_heads",
                format!("{} query heads is not a multiple of {} KV heads", self.num_qo_heads, self.num_kv_heads),
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(8) || self.head_dim > Self::MAX_HEAD_DIM {
            return Err(PalError::invalid(
                "head_dim",
                format!("{} is not a multiple of 8 in 8..={}", self.head_dim, Self::MAX_HEAD_DIM),
            ));
        }
        Ok(())
    }
}
