//! The slow twin of [`LlamaModel::forward`](crate::LlamaModel::forward): one sequence, all
//! weights dequantized to f32, contiguous K/V, f64 attention and f64 RoPE computed here from the
//! config. No paging, no quantized activations (the fast path rounds the inputs of packed
//! matrices to 8-bit blocks), no shared code with the fast path beyond the dequantizer and the
//! weights. Tests use it as the oracle.

use crate::llama::LlamaModel;
use crate::quant::dequantize_unchecked as dequantize;
use crate::QMatrix;
use pal_kernels::RopeStyle;

pub struct DenseLlama<'m> {
    model: &'m LlamaModel,
}

fn dense(m: &QMatrix) -> Vec<f32> {
    let mut out = vec![0f32; m.rows() * m.cols()];
    dequantize(m.dtype(), m.bytes(), &mut out);
    out
}

/// `y[n] = sum_k x[k] w[n, k]` in f64.
fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len())
        .map(|row| row.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32)
        .collect()
}

fn rms(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ss = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ss + eps as f64).sqrt();
    x.iter().zip(w).map(|(&v, &g)| (v as f64 * inv * g as f64) as f32).collect()
}

impl<'m> DenseLlama<'m> {
    pub fn new(model: &'m LlamaModel) -> Self {
        DenseLlama { model }
    }

    fn rope(&self, x: &mut [f32], pos: usize) {
        let c = &self.model.config;
        let d = c.head_dim;
        let rd = c.rope.rotary_dim.unwrap_or(d);
        for head in x.chunks_exact_mut(d) {
            for i in 0..rd / 2 {
                let freq = c.rope.theta.powf(-(2.0 * i as f64) / rd as f64)
                    / c.rope_freq_factors.as_ref().map_or(1.0, |f| f[i]);
                let (s, co) = (pos as f64 * freq).sin_cos();
                let (a, b) = match c.rope.style {
                    RopeStyle::AdjacentPairs => (2 * i, 2 * i + 1),
                    RopeStyle::HalfSplit => (i, i + rd / 2),
                };
                let (x0, x1) = (head[a] as f64, head[b] as f64);
                head[a] = (x0 * co - x1 * s) as f32;
                head[b] = (x0 * s + x1 * co) as f32;
            }
        }
    }

    /// Logits `[tokens.len(), vocab]` of one sequence, every position.
    pub fn logits(&self, tokens: &[u32]) -> Vec<f32> {
        let m = self.model;
        let c = &m.config;
        let (e, d, hq, hkv) = (c.hidden, c.head_dim, c.num_heads, c.num_kv_heads);
        let g = hq / hkv;
        let embed = dense(&m.embed);
        let mut xs: Vec<Vec<f32>> =
            tokens.iter().map(|&t| embed[t as usize * e..(t as usize + 1) * e].to_vec()).collect();
        for l in &m.layers {
            let (wq, wk, wv, wo) = (dense(&l.wq), dense(&l.wk), dense(&l.wv), dense(&l.wo));
            let (wg, wu, wd) = (dense(&l.w_gate), dense(&l.w_up), dense(&l.w_down));
            let add = |v: &mut Vec<f32>, b: &Option<Vec<f32>>| {
                if let Some(b) = b {
                    v.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                }
            };
            let mut qs = Vec::new();
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            for (pos, x) in xs.iter().enumerate() {
                let h = rms(x, &l.attn_norm, c.rms_eps);
                let (mut q, mut k, mut v) = (matvec(&wq, &h), matvec(&wk, &h), matvec(&wv, &h));
                add(&mut q, &l.bq);
                add(&mut k, &l.bk);
                add(&mut v, &l.bv);
                self.rope(&mut q, pos);
                self.rope(&mut k, pos);
                qs.push(q);
                ks.push(k);
                vs.push(v);
            }
            let scale = 1.0 / (d as f64).sqrt();
            for (pos, x) in xs.iter_mut().enumerate() {
                let mut o = vec![0f32; hq * d];
                for h in 0..hq {
                    let kh = h / g;
                    let q = &qs[pos][h * d..(h + 1) * d];
                    let s: Vec<f64> = (0..=pos)
                        .map(|j| {
                            q.iter().zip(&ks[j][kh * d..(kh + 1) * d]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                                * scale
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let p: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                    let z: f64 = p.iter().sum();
                    for (i, oi) in o[h * d..(h + 1) * d].iter_mut().enumerate() {
                        *oi = ((0..=pos).map(|j| p[j] * vs[j][kh * d + i] as f64).sum::<f64>() / z) as f32;
                    }
                }
                let proj = matvec(&wo, &o);
                x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
                let h = rms(x, &l.ffn_norm, c.rms_eps);
                let (gt, up) = (matvec(&wg, &h), matvec(&wu, &h));
                let act: Vec<f32> = gt
                    .iter()
                    .zip(&up)
                    .map(|(&a, &b)| (a as f64 / (1.0 + (-a as f64).exp()) * b as f64) as f32)
                    .collect();
                let down = matvec(&wd, &act);
                x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            }
        }
        let out = dense(&m.output);
        xs.iter().flat_map(|x| matvec(&out, &rms(x, &m.out_norm, c.rms_eps))).collect()
    }
}
