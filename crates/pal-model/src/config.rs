//! Model hyper-parameters read from GGUF metadata.

use crate::gguf::GgufFile;
use crate::{ModelError, Result};
use pal_kernels::{RopeConfig, RopeStyle};

/// Longest context a model may declare (4M tokens; RoPE tables are built for all of it).
pub const MAX_CONTEXT: usize = 1 << 22;

/// Hyper-parameters of a Llama-family decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub architecture: String,
    pub num_layers: usize,
    pub hidden: usize,
    pub ffn_hidden: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope: RopeConfig,
    /// Divisors of each rotated pair's frequency (linear scaling, Llama 3.1 `rope_freqs`).
    pub rope_freq_factors: Option<Vec<f64>>,
}

/// Architectures whose GGUF layout this forward implements, with their RoPE convention:
/// llama.cpp permutes Q/K of Llama-style models for adjacent pairs; Qwen2 keeps NeoX halves.
fn rope_style(arch: &str) -> Option<RopeStyle> {
    match arch {
        "llama" | "mistral" | "smollm" => Some(RopeStyle::AdjacentPairs),
        "qwen2" => Some(RopeStyle::HalfSplit),
        _ => None,
    }
}

impl LlamaConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch = f.get_str("general.architecture")?.to_string();
        let style = rope_style(&arch).ok_or_else(|| ModelError::UnsupportedArchitecture(arch.clone()))?;
        let key = |k: &str| format!("{arch}.{k}");
        let num_heads = f.get_usize(&key("attention.head_count"))?;
        let hidden = f.get_usize(&key("embedding_length"))?;
        let num_kv_heads = match f.get(&key("attention.head_count_kv")) {
            Some(_) => f.get_usize(&key("attention.head_count_kv"))?,
            None => num_heads,
        };
        if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return Err(ModelError::bad_meta(
                &key("attention.head_count_kv"),
                format!("{num_kv_heads} KV heads for {num_heads} query heads"),
            ));
        }
        let head_dim = match f.get(&key("attention.key_length")) {
            Some(_) => f.get_usize(&key("attention.key_length"))?,
            None if hidden.is_multiple_of(num_heads) => hidden / num_heads,
            None => return Err(ModelError::bad_meta(&key("embedding_length"), "not a multiple of the head count")),
        };
        let rotary_dim = match f.get(&key("rope.dimension_count")) {
            Some(_) => Some(f.get_usize(&key("rope.dimension_count"))?),
            None => None,
        };
        let theta = match f.get(&key("rope.freq_base")) {
            Some(_) => f.get_f64(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let rope_freq_factors = rope_freq_factors(f, &key, rotary_dim.unwrap_or(head_dim))?;
        let vocab_size = match f.get(&key("vocab_size")) {
            Some(_) => f.get_usize(&key("vocab_size"))?,
            None => f.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let rms_eps = f.get_f64(&key("attention.layer_norm_rms_epsilon"))? as f32;
        if !(rms_eps > 0.0 && rms_eps < 1.0) {
            return Err(ModelError::bad_meta(&key("attention.layer_norm_rms_epsilon"), format!("{rms_eps}")));
        }
        let cfg = LlamaConfig {
            num_layers: f.get_usize(&key("block_count"))?,
            hidden,
            ffn_hidden: f.get_usize(&key("feed_forward_length"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            context_length: f.get_usize(&key("context_length"))?,
            rms_eps,
            rope: RopeConfig { style, theta, rotary_dim, llama3: None },
            rope_freq_factors,
            architecture: arch.clone(),
        };
        if cfg.num_layers == 0 || cfg.hidden == 0 || cfg.ffn_hidden == 0 || cfg.context_length == 0 {
            return Err(ModelError::bad_meta(&key("block_count"), "layers, widths and context must be non-zero"));
        }
        // The RoPE table holds every position (64 MB for Llama 3.1's 128k at head dim 128); a
        // corrupt length would otherwise ask for terabytes.
        if cfg.context_length > MAX_CONTEXT {
            return Err(ModelError::bad_meta(
                &key("context_length"),
                format!("{} tokens is beyond the {MAX_CONTEXT} that PAL supports", cfg.context_length),
            ));
        }
        if !cfg.head_dim.is_multiple_of(8) || cfg.head_dim > 256 {
            return Err(ModelError::bad_meta(
                &key("attention.key_length"),
                format!("head dim {} (need a multiple of 8 up to 256)", cfg.head_dim),
            ));
        }
        Ok(cfg)
    }

    /// The RoPE table for this model: theta and style from the metadata, each pair's frequency
    /// divided by [`LlamaConfig::rope_freq_factors`] when the file has them.
    pub fn rope(&self) -> std::result::Result<pal_kernels::Rope, pal_core::PalError> {
        match &self.rope_freq_factors {
            Some(f) => pal_kernels::Rope::with_freq_factors(self.rope, self.head_dim, self.context_length, f),
            None => pal_kernels::Rope::new(self.rope, self.head_dim, self.context_length),
        }
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// Per-pair RoPE frequency divisors: linear scaling (`rope.scaling.type = linear`, every pair
/// divided by `rope.scaling.factor`, i.e. positions interpolated) times the `rope_freqs.weight`
/// tensor of Llama 3.1+ files (llama.cpp divides each pair's frequency by it). `None` when the
/// file has neither. Other scaling types (YaRN, LongRoPE) are refused by name.
fn rope_freq_factors(f: &GgufFile, key: &dyn Fn(&str) -> String, rotary_dim: usize) -> Result<Option<Vec<f64>>> {
    let half = rotary_dim / 2;
    let mut factors: Option<Vec<f64>> = None;
    match f.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
        None | Some("none") => {}
        Some("linear") => {
            let s = f.get_f64(&key("rope.scaling.factor"))?;
            if !(s.is_finite() && s > 0.0) {
                return Err(ModelError::bad_meta(&key("rope.scaling.factor"), format!("{s} (need a positive factor)")));
            }
            factors = Some(vec![s; half]);
        }
        Some(kind) => {
            return Err(ModelError::bad_meta(
                &key("rope.scaling.type"),
                format!("`{kind}` scaling is not supported yet"),
            ));
        }
    }
    if let Some(t) = f.tensor("rope_freqs.weight") {
        if t.elems() != half {
            return Err(ModelError::bad_tensor(
                "rope_freqs.weight",
                format!("dims {:?}, expected [{half}] (one factor per rotated pair)", t.dims),
            ));
        }
        let mut v = vec![0f32; half];
        crate::quant::dequantize(t.dtype, f.data(t), &mut v)?;
        if let Some(bad) = v.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
            return Err(ModelError::bad_tensor("rope_freqs.weight", format!("factor {bad} (need finite, positive)")));
        }
        let base = factors.unwrap_or_else(|| vec![1.0; half]);
        factors = Some(base.iter().zip(&v).map(|(a, &b)| a * b as f64).collect());
    }
    Ok(factors)
}
