//! Argument checks shared by every backend. They run before any memory is touched, so an error
//! leaves outputs and the KV pool exactly as they were.

use crate::{AppendArgs, DecodeArgs, PrefillArgs};
use pal_core::{check_len, HeadConfig, KvLayout, PageTable, PalError, Result};

/// Shapes of a validated decode call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodeShape {
    pub batch: usize,
    pub heads: HeadConfig,
}

/// Shapes of a validated prefill call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PrefillShape {
    pub batch: usize,
    pub heads: HeadConfig,
}

fn pool_and_table<T>(
    k: &[T],
    v: &[T],
    layout: &KvLayout,
    table: &PageTable,
    num_qo_heads: usize,
) -> Result<HeadConfig> {
    let heads = HeadConfig::new(num_qo_heads, layout.num_kv_heads, layout.head_dim)?;
    let shape = || {
        format!(
            "[num_blocks={}, block_size={}, num_kv_heads={}, head_dim={}]",
            layout.num_blocks, layout.block_size, layout.num_kv_heads, layout.head_dim
        )
    };
    check_len("k_cache", k.len(), layout.elems(), shape)?;
    check_len("v_cache", v.len(), layout.elems(), shape)?;
    if table.block_size() != layout.block_size {
        return Err(PalError::invalid(
            "page_table",
            format!("block size {} differs from the pool's {}", table.block_size(), layout.block_size),
        ));
    }
    table.check_pool(layout.num_blocks)?;
    Ok(heads)
}

pub(crate) fn decode<Q, KV>(a: &DecodeArgs<'_, Q, KV>, out_len: usize) -> Result<DecodeShape> {
    a.opts.validate()?;
    let heads = pool_and_table(a.kv.k, a.kv.v, &a.kv.layout, a.page_table, a.num_qo_heads)?;
    let batch = a.page_table.batch();
    let want = batch * heads.num_qo_heads * heads.head_dim;
    let shape = || format!("[batch={batch}, num_qo_heads={}, head_dim={}]", heads.num_qo_heads, heads.head_dim);
    check_len("q", a.q.len(), want, shape)?;
    check_len("out", out_len, want, shape)?;
    if let Some(b) = a.page_table.seq_lens().iter().position(|&l| l == 0) {
        return Err(PalError::invalid("page_table", format!("sequence {b} holds no token; decode needs at least one")));
    }
    Ok(DecodeShape { batch, heads })
}

pub(crate) fn prefill<Q, KV>(a: &PrefillArgs<'_, Q, KV>, out_len: usize) -> Result<PrefillShape> {
    a.opts.validate()?;
    let heads = pool_and_table(a.kv.k, a.kv.v, &a.kv.layout, a.page_table, a.num_qo_heads)?;
    let batch = a.page_table.batch();
    let qo = a.qo_indptr;
    if qo.len() != batch + 1 {
        return Err(PalError::ShapeMismatch {
            arg: "qo_indptr",
            expected: batch + 1,
            got: qo.len(),
            shape: "[batch+1] (batch from page_table)".into(),
        });
    }
    if qo[0] != 0 {
        return Err(PalError::invalid("qo_indptr", format!("qo_indptr[0] = {} must be 0", qo[0])));
    }
    for b in 0..batch {
        if qo[b + 1] < qo[b] {
            return Err(PalError::invalid("qo_indptr", format!("decreases at {b}: {} > {}", qo[b], qo[b + 1])));
        }
        let new = (qo[b + 1] - qo[b]) as usize;
        if a.new_kv.is_none() && new > a.page_table.seq_len(b) {
            return Err(PalError::invalid(
                "qo_indptr",
                format!(
                    "sequence {b} has {new} new tokens but the page table holds only {} (append them first)",
                    a.page_table.seq_len(b)
                ),
            ));
        }
    }
    let tokens = qo[batch] as usize;
    if tokens == 0 {
        return Err(PalError::EmptyBatch { arg: "q", reason: "no query tokens in the batch".into() });
    }
    let (hq, hkv, d) = (heads.num_qo_heads, heads.num_kv_heads, heads.head_dim);
    let qshape = || format!("[tokens={tokens}, num_qo_heads={hq}, head_dim={d}]");
    check_len("q", a.q.len(), tokens * hq * d, qshape)?;
    check_len("out", out_len, tokens * hq * d, qshape)?;
    if let Some(n) = &a.new_kv {
        let kshape = || format!("[tokens={tokens}, num_kv_heads={hkv}, head_dim={d}]");
        check_len("new_kv.k", n.k.len(), tokens * hkv * d, kshape)?;
        check_len("new_kv.v", n.v.len(), tokens * hkv * d, kshape)?;
    }
    Ok(PrefillShape { batch, heads })
}

pub(crate) fn append<Q>(a: &AppendArgs<'_, Q>, layout: &KvLayout, k_len: usize, v_len: usize) -> Result<HeadConfig> {
    let heads = HeadConfig::new(a.num_qo_heads, layout.num_kv_heads, layout.head_dim)?;
    let pool_shape = || format!("{layout:?}");
    check_len("k_cache", k_len, layout.elems(), pool_shape)?;
    check_len("v_cache", v_len, layout.elems(), pool_shape)?;
    let t = a.positions.len();
    if t == 0 {
        return Err(PalError::EmptyBatch { arg: "positions", reason: "no tokens to append".into() });
    }
    let (hq, hkv, d) = (heads.num_qo_heads, heads.num_kv_heads, heads.head_dim);
    check_len("slots", a.slots.len(), t, || format!("[tokens={t}]"))?;
    check_len("q", a.q.len(), t * hq * d, || format!("[tokens={t}, num_qo_heads={hq}, head_dim={d}]"))?;
    let kshape = || format!("[tokens={t}, num_kv_heads={hkv}, head_dim={d}]");
    check_len("k", a.k.len(), t * hkv * d, kshape)?;
    check_len("v", a.v.len(), t * hkv * d, kshape)?;
    if let Some(rope) = a.rope {
        if rope.head_dim() != d {
            return Err(PalError::invalid("rope", format!("built for head_dim {}, pool has {d}", rope.head_dim())));
        }
        for (i, &p) in a.positions.iter().enumerate() {
            if p as usize >= rope.max_position() {
                return Err(PalError::OutOfPool {
                    arg: "positions",
                    index: i,
                    value: p as u64,
                    limit: rope.max_position() as u64,
                });
            }
        }
    }
    let num_slots = layout.num_slots();
    let mut seen: Vec<(u32, usize)> = Vec::with_capacity(t);
    for (i, s) in a.slots.iter().enumerate() {
        if let Some(s) = *s {
            if s as usize >= num_slots {
                return Err(PalError::OutOfPool { arg: "slots", index: i, value: s as u64, limit: num_slots as u64 });
            }
            seen.push((s, i));
        }
    }
    seen.sort_unstable();
    if let Some(w) = seen.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(PalError::invalid(
            "slots",
            format!("slot {} is written by tokens {} and {}", w[0].0, w[0].1, w[1].1),
        ));
    }
    Ok(heads)
}
