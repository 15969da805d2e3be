//! Llama-family decoder forward over the paged KV cache (CPU).
//!
//! One call of [`LlamaModel::forward`] runs one engine step: the new tokens of any mix of
//! sequences (prefill chunks and decode tokens), their K/V written into the paged pool by
//! `append_kv` (RoPE fused), attention read straight from the pool by `paged_decode` (every
//! sequence has one new token) or `paged_prefill`, and logits for the rows the caller asks for.

use crate::config::LlamaConfig;
use crate::gguf::{GgufFile, TensorInfo};
use crate::kv_cache::KvCache;
use crate::qmatmul::{matmul_many, swiglu_product, QMatrix};
use crate::quant::dequantize_unchecked as dequantize;
use crate::{ModelError, Result};
use pal_core::{AttentionOptions, Element, PageTable};
use pal_kernels::dispatch::{self, Dispatch};
use pal_kernels::{cpu, AppendArgs, DecodeArgs, DecodePlan, PrefillArgs, PrefillPlan, Rope};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;

pub(crate) struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: QMatrix,
    pub wk: QMatrix,
    pub wv: QMatrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub wo: QMatrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: QMatrix,
    pub w_up: QMatrix,
    pub w_down: QMatrix,
}

/// A loaded Llama-family model: config, weights (still in their file encoding) and RoPE table.
pub struct LlamaModel {
    pub config: LlamaConfig,
    file: Arc<GgufFile>,
    pub(crate) embed: QMatrix,
    pub(crate) layers: Vec<Layer>,
    pub(crate) out_norm: Vec<f32>,
    pub(crate) output: QMatrix,
    pub(crate) rope: Rope,
    /// Which attention implementation the forward runs (fused paged kernels unless forced).
    attention: Dispatch,
}

/// The new tokens of one step and where they go.
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    /// Token ids, `[T]`, grouped by sequence in `qo_indptr` order.
    pub tokens: &'a [u32],
    /// Absolute position of each token.
    pub positions: &'a [u32],
    /// Pool slot of each token (`None`: padding, computed but not stored).
    pub slots: &'a [Option<u32>],
    /// `[B+1]`: sequence `b` owns tokens `qo_indptr[b]..qo_indptr[b+1]`.
    pub qo_indptr: &'a [u32],
    /// Pages of every sequence, the new tokens included.
    pub page_table: &'a PageTable,
    /// Token rows whose logits are returned, in this order.
    pub logit_rows: &'a [usize],
}

impl LlamaModel {
    /// Open and load a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(Arc::new(GgufFile::open(path)?))
    }

    /// Like [`LlamaModel::open`], with the file copied into huge-page memory first.
    pub fn open_in_memory(path: impl AsRef<Path>, progress: &mut dyn FnMut(u64, u64)) -> Result<Self> {
        Self::load(Arc::new(GgufFile::open_in_memory(path, progress)?))
    }

    /// Choose the attention implementation of [`LlamaModel::forward`]: `Dispatch::Auto` (the
    /// default: the fused kernels over the pages, see [`Dispatch::path`]) or a forced path, e.g.
    /// gather-then-dense to compare against.
    pub fn set_attention(&mut self, attention: Dispatch) {
        self.attention = attention;
    }

    /// The attention implementation the forward runs.
    pub fn attention(&self) -> Dispatch {
        self.attention
    }

    /// Multiply every weight matrix with unrounded f32 activations: the integer kernels of the
    /// packed formats (which round activations to 8-bit blocks, as llama.cpp does) give way to the
    /// dequantize-and-dot path of the other formats, and their packed copies are freed. Several
    /// times slower; meant for accuracy checks, where it separates the model's wiring (exact to
    /// f32 rounding against [`crate::dense::DenseLlama`]) from activation rounding.
    pub fn use_float_activations(&mut self) {
        for l in &mut self.layers {
            for m in [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down] {
                m.drop_packed();
            }
        }
        self.output.drop_packed();
    }

    pub fn load(file: Arc<GgufFile>) -> Result<Self> {
        let config = LlamaConfig::from_gguf(&file)?;
        let c = &config;
        let info = |name: &str, cols: usize, rows: usize| -> Result<TensorInfo> {
            let t = tensor(&file, name)?;
            if t.dims != [cols, rows] {
                return Err(ModelError::bad_tensor(name, format!("dims {:?}, expected [{cols}, {rows}]", t.dims)));
            }
            if !cols.is_multiple_of(32) {
                return Err(ModelError::bad_tensor(name, format!("row length {cols} is not a multiple of 32")));
            }
            Ok(t.clone())
        };
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            let t = tensor(&file, name)?;
            if t.elems() != len {
                return Err(ModelError::bad_tensor(name, format!("dims {:?}, expected [{len}]", t.dims)));
            }
            let mut out = vec![0f32; len];
            dequantize(t.dtype, file.data(t), &mut out);
            Ok(out)
        };
        let optional = |name: &str, len: usize| -> Result<Option<Vec<f32>>> {
            if file.tensor(name).is_some() {
                vector(name, len).map(Some)
            } else {
                Ok(None)
            }
        };
        let matrix = |name: &str, cols: usize, rows: usize| QMatrix::new(file.clone(), info(name, cols, rows)?);
        let embed_info = info("token_embd.weight", c.hidden, c.vocab_size)?;
        let output = match file.tensor("output.weight") {
            Some(_) => matrix("output.weight", c.hidden, c.vocab_size)?,
            None => QMatrix::new(file.clone(), embed_info.clone())?, // tied embeddings
        };
        let embed = QMatrix::rows_only(file.clone(), embed_info);
        // Not `with_capacity(num_layers)`: a corrupt block count would ask for terabytes before
        // the first missing tensor ends the loop with an error.
        let mut layers = Vec::with_capacity(c.num_layers.min(file.tensors().len()));
        for i in 0..c.num_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: vector(&n("attn_norm.weight"), c.hidden)?,
                wq: matrix(&n("attn_q.weight"), c.hidden, c.q_dim())?,
                wk: matrix(&n("attn_k.weight"), c.hidden, c.kv_dim())?,
                wv: matrix(&n("attn_v.weight"), c.hidden, c.kv_dim())?,
                bq: optional(&n("attn_q.bias"), c.q_dim())?,
                bk: optional(&n("attn_k.bias"), c.kv_dim())?,
                bv: optional(&n("attn_v.bias"), c.kv_dim())?,
                wo: matrix(&n("attn_output.weight"), c.q_dim(), c.hidden)?,
                ffn_norm: vector(&n("ffn_norm.weight"), c.hidden)?,
                w_gate: matrix(&n("ffn_gate.weight"), c.hidden, c.ffn_hidden)?,
                w_up: matrix(&n("ffn_up.weight"), c.hidden, c.ffn_hidden)?,
                w_down: matrix(&n("ffn_down.weight"), c.ffn_hidden, c.hidden)?,
            });
        }
        let out_norm = vector("output_norm.weight", c.hidden)?;
        let rope = c.rope()?;
        Ok(LlamaModel { config, file, embed, layers, out_norm, output, rope, attention: Dispatch::Auto })
    }

    pub fn gguf(&self) -> &Arc<GgufFile> {
        &self.file
    }

    fn check_input(&self, s: &StepInput<'_>) -> Result<()> {
        let t = s.tokens.len();
        if t == 0 {
            return Err(ModelError::invalid("tokens", "the step has no tokens"));
        }
        if s.positions.len() != t || s.slots.len() != t {
            return Err(ModelError::invalid(
                "positions",
                format!("{} positions and {} slots for {t} tokens", s.positions.len(), s.slots.len()),
            ));
        }
        if let Some((i, &tok)) = s.tokens.iter().enumerate().find(|(_, &x)| x as usize >= self.config.vocab_size) {
            return Err(ModelError::invalid(
                "tokens",
                format!("tokens[{i}] = {tok} is outside the vocabulary ({})", self.config.vocab_size),
            ));
        }
        if let Some((i, &p)) = s.positions.iter().enumerate().find(|(_, &p)| p as usize >= self.config.context_length) {
            return Err(ModelError::invalid(
                "positions",
                format!("positions[{i}] = {p} is beyond the context length {}", self.config.context_length),
            ));
        }
        if let Some(&r) = s.logit_rows.iter().find(|&&r| r >= t) {
            return Err(ModelError::invalid("logit_rows", format!("row {r} of a step with {t} tokens")));
        }
        Ok(())
    }

    /// Run one step; returns logits `[logit_rows.len(), vocab_size]`.
    pub fn forward<KV: Element>(&self, s: &StepInput<'_>, cache: &mut KvCache<KV>) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        self.forward_into(s, cache, &mut logits)?;
        Ok(logits)
    }

    /// [`Self::forward`] into `logits` (resized to `[logit_rows.len(), vocab_size]`), so that a
    /// caller stepping many times reuses one buffer: a batch-16 SmolLM2 step's 3 MB of logits
    /// were otherwise fresh pages, mapped and zeroed by the kernel every step.
    pub fn forward_into<KV: Element>(
        &self,
        s: &StepInput<'_>,
        cache: &mut KvCache<KV>,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.check_input(s)?;
        let c = &self.config;
        let (t, e) = (s.tokens.len(), c.hidden);
        if cache.num_layers() != c.num_layers {
            return Err(ModelError::invalid(
                "cache",
                format!("{} layers for a {}-layer model", cache.num_layers(), c.num_layers),
            ));
        }
        let opts = AttentionOptions::default();
        let decode = s.qo_indptr.windows(2).all(|w| w[1] == w[0] + 1);
        let hkv = c.num_kv_heads;
        let decode_plan = decode.then(|| DecodePlan::new(s.page_table, hkv, &opts, rayon::current_num_threads()));
        let prefill_plan = (!decode).then(|| PrefillPlan::new(s.qo_indptr, s.page_table, c.num_heads / hkv));

        let mut x = vec![0f32; t * e];
        x.par_chunks_mut(e)
            .zip(s.tokens.par_iter())
            .try_for_each(|(row, &tok)| self.embed.row_into(tok as usize, row))?;
        let mut h = vec![0f32; t * e];
        let mut q = vec![0f32; t * c.q_dim()];
        let mut k = vec![0f32; t * c.kv_dim()];
        let mut v = vec![0f32; t * c.kv_dim()];
        let mut attn = vec![0f32; t * c.q_dim()];
        let mut proj = vec![0f32; t * e];
        let mut gate = vec![0f32; t * c.ffn_hidden];
        let mut up = vec![0f32; t * c.ffn_hidden];
        let mut down_acts = Vec::new();
        for (li, l) in self.layers.iter().enumerate() {
            rms_norm(&x, &l.attn_norm, c.rms_eps, &mut h);
            matmul_many(&mut [(&l.wq, &mut q), (&l.wk, &mut k), (&l.wv, &mut v)], &h)?;
            add_bias(&mut q, l.bq.as_deref());
            add_bias(&mut k, l.bk.as_deref());
            add_bias(&mut v, l.bv.as_deref());
            let append = AppendArgs {
                q: &mut q,
                num_qo_heads: c.num_heads,
                k: &k,
                v: &v,
                positions: s.positions,
                slots: s.slots,
                rope: Some(&self.rope),
            };
            cpu::append_kv(append, &mut cache.layer_mut(li))?;
            let kv = cache.layer(li);
            if let Some(plan) = &decode_plan {
                let args = DecodeArgs { q: &q, num_qo_heads: c.num_heads, kv, page_table: s.page_table, opts };
                dispatch::paged_decode(&args, plan, self.attention, &mut attn)?;
            } else if let Some(plan) = &prefill_plan {
                let args = PrefillArgs {
                    q: &q,
                    qo_indptr: s.qo_indptr,
                    num_qo_heads: c.num_heads,
                    kv,
                    page_table: s.page_table,
                    new_kv: None,
                    opts,
                };
                dispatch::paged_prefill(&args, plan, self.attention, &mut attn)?;
            }
            l.wo.matmul(&attn, &mut proj)?;
            add_into(&mut x, &proj);
            rms_norm(&x, &l.ffn_norm, c.rms_eps, &mut h);
            swiglu_product(&l.w_gate, &l.w_up, &h, &mut gate, &mut up, &mut down_acts)?;
            l.w_down.matmul_acts(&gate, &down_acts, &mut proj)?;
            add_into(&mut x, &proj);
        }
        let mut last = Vec::with_capacity(s.logit_rows.len() * e);
        for &r in s.logit_rows {
            last.extend_from_slice(&x[r * e..(r + 1) * e]);
        }
        let mut normed = vec![0f32; last.len()];
        rms_norm(&last, &self.out_norm, c.rms_eps, &mut normed);
        // Every element is written by the product; only growth needs filling.
        logits.resize(s.logit_rows.len() * c.vocab_size, 0.0);
        self.output.matmul(&normed, logits)
    }
}

fn tensor<'a>(file: &'a GgufFile, name: &str) -> Result<&'a TensorInfo> {
    file.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))
}

/// `out = x / rms(x) * w`, row by row (`w.len()` columns).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let ss = sum_of_squares(xr) / n as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

/// `sum(x^2)` in 8 interleaved partial sums: one running sum is a chain of dependent adds (3-4
/// cycles each) that the compiler may not reorder, and the norms run on one thread between the
/// parallel products. `perf` of a batch-16 SmolLM2 run on the dev VM: 1.3-1.5% of the samples
/// with one sum, 0.3% with eight.
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn add_bias(x: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in x.chunks_exact_mut(b.len()) {
            add_into(row, b);
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `gate = silu(gate) * up`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() && up.len() >= gate.len() {
        // SAFETY: AVX2 and FMA are present; `up` covers `gate`.
        return unsafe { crate::simd::silu_mul_avx2(gate, up) };
    }
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}
