//! The oracle: naive dense attention in f64, one query row at a time, no tiling, no plan.
//! Slow on purpose; every optimized kernel is tested against it.

use crate::{validate, AppendArgs, DecodeArgs, PrefillArgs, Rope};
use pal_core::{Element, PagedKvMut, Result};

/// Attention of one query row over keys `lo..hi`, accumulated in f64.
fn attend_row<'k, Q: Element, KV: Element + 'k>(
    q: &[Q],
    key: impl Fn(usize) -> (&'k [KV], &'k [KV]),
    lo: usize,
    hi: usize,
    scale: f64,
    cap: Option<f64>,
    out: &mut [Q],
) {
    let scores: Vec<f64> = (lo..hi)
        .map(|j| {
            let k = key(j).0;
            let s = q.iter().zip(k).map(|(a, b)| a.to_f64() * b.to_f64()).sum::<f64>() * scale;
            match cap {
                Some(c) => c * (s / c).tanh(),
                None => s,
            }
        })
        .collect();
    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let l: f64 = w.iter().sum();
    for (d, o) in out.iter_mut().enumerate() {
        let acc: f64 = (lo..hi).zip(&w).map(|(j, p)| p * key(j).1[d].to_f64()).sum();
        *o = Q::from_f64(acc / l);
    }
}

pub fn paged_decode<Q: Element, KV: Element>(a: &DecodeArgs<'_, Q, KV>, out: &mut [Q]) -> Result<()> {
    let sh = validate::decode(a, out.len())?;
    let (hq, d, g) = (sh.heads.num_qo_heads, sh.heads.head_dim, sh.heads.group_size());
    let layout = a.kv.layout;
    let scale = a.opts.scale(d) as f64;
    let cap = a.opts.logit_soft_cap.map(|c| c as f64);
    for b in 0..sh.batch {
        let len = a.page_table.seq_len(b);
        let lo = a.opts.first_visible(len - 1);
        for h in 0..hq {
            let kvh = h / g;
            let key = |j: usize| {
                let off = layout.row_offset(a.page_table.slot(b, j), kvh);
                (&a.kv.k[off..off + d], &a.kv.v[off..off + d])
            };
            let row = (b * hq + h) * d;
            attend_row(&a.q[row..row + d], key, lo, len, scale, cap, &mut out[row..row + d]);
        }
    }
    Ok(())
}

pub fn paged_prefill<Q: Element, KV: Element>(a: &PrefillArgs<'_, Q, KV>, out: &mut [Q]) -> Result<()> {
    let sh = validate::prefill(a, out.len())?;
    let (hq, hkv, d, g) = (sh.heads.num_qo_heads, sh.heads.num_kv_heads, sh.heads.head_dim, sh.heads.group_size());
    let layout = a.kv.layout;
    let scale = a.opts.scale(d) as f64;
    let cap = a.opts.logit_soft_cap.map(|c| c as f64);
    for b in 0..sh.batch {
        let (q0, q1) = (a.qo_indptr[b] as usize, a.qo_indptr[b + 1] as usize);
        let n_new = q1 - q0;
        let paged = a.page_table.seq_len(b);
        let total = if a.new_kv.is_some() { paged + n_new } else { paged };
        let hist = total - n_new;
        for i in 0..n_new {
            let pos = hist + i;
            let lo = a.opts.first_visible(pos);
            let hi = if a.opts.causal { pos + 1 } else { total };
            for h in 0..hq {
                let kvh = h / g;
                let key = |j: usize| match &a.new_kv {
                    Some(n) if j >= paged => {
                        let off = ((q0 + j - paged) * hkv + kvh) * d;
                        (&n.k[off..off + d], &n.v[off..off + d])
                    }
                    _ => {
                        let off = layout.row_offset(a.page_table.slot(b, j), kvh);
                        (&a.kv.k[off..off + d], &a.kv.v[off..off + d])
                    }
                };
                let row = ((q0 + i) * hq + h) * d;
                attend_row(&a.q[row..row + d], key, lo, hi, scale, cap, &mut out[row..row + d]);
            }
        }
    }
    Ok(())
}

/// Rotate one head vector in f64 with frequencies computed from scratch (not the kernels' table).
pub fn rope_rotate_f64(x: &mut [f64], pos: usize, rope: &Rope) {
    for (i, &f) in rope.inv_freq().iter().enumerate() {
        let (a, b) = rope.pair(i);
        let (s, c) = (pos as f64 * f).sin_cos();
        let (xa, xb) = (x[a], x[b]);
        x[a] = xa * c - xb * s;
        x[b] = xa * s + xb * c;
    }
}

pub fn append_kv<Q: Element, KV: Element>(a: AppendArgs<'_, Q>, cache: &mut PagedKvMut<'_, KV>) -> Result<()> {
    let heads = validate::append(&a, &cache.layout, cache.k.len(), cache.v.len())?;
    let (hq, hkv, d) = (heads.num_qo_heads, heads.num_kv_heads, heads.head_dim);
    let layout = cache.layout;
    let rotate = |src: &[Q], pos: usize| -> Vec<f64> {
        let mut x: Vec<f64> = src.iter().map(|v| v.to_f64()).collect();
        if let Some(r) = a.rope {
            rope_rotate_f64(&mut x, pos, r);
        }
        x
    };
    for (t, slot) in a.slots.iter().enumerate() {
        let Some(slot) = *slot else { continue };
        let pos = a.positions[t] as usize;
        for h in 0..hq {
            let row = (t * hq + h) * d;
            let x = rotate(&a.q[row..row + d], pos);
            for (o, v) in a.q[row..row + d].iter_mut().zip(x) {
                *o = Q::from_f64(v);
            }
        }
        for h in 0..hkv {
            let src = (t * hkv + h) * d;
            let dst = layout.row_offset(slot as usize, h);
            let x = rotate(&a.k[src..src + d], pos);
            for (o, v) in cache.k[dst..dst + d].iter_mut().zip(x) {
                *o = KV::from_f64(v);
            }
            for (o, v) in cache.v[dst..dst + d].iter_mut().zip(&a.v[src..src + d]) {
                *o = KV::from_f64(v.to_f64());
            }
        }
    }
    Ok(())
}
