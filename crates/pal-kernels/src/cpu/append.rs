//! KV append with fused RoPE: one pass over the new tokens rotates q in place and writes the
//! rotated k and the v of each token into its slot.

use super::SharedMut;
use crate::{validate, AppendArgs, Rope};
use pal_core::{Element, PagedKvMut, Result};
use rayon::prelude::*;

/// Rotate `x` (f32, one head) with the table row of its position.
#[inline(always)]
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], rope: &Rope) {
    for (i, (&c, &s)) in cos.iter().zip(sin).enumerate() {
        let (a, b) = rope.pair(i);
        let (xa, xb) = (x[a], x[b]);
        x[a] = xa * c - xb * s;
        x[b] = xa * s + xb * c;
    }
}

#[inline(always)]
fn store_row<T: Element>(src: &[f32], dst: &mut [T]) {
    for (o, x) in dst.iter_mut().zip(src) {
        *o = T::from_f32(*x);
    }
}

/// Write new K/V into the pool (skipping padding) with RoPE fused on q and k. See [`AppendArgs`].
pub fn append_kv<Q: Element, KV: Element>(a: AppendArgs<'_, Q>, cache: &mut PagedKvMut<'_, KV>) -> Result<()> {
    let heads = validate::append(&a, &cache.layout, cache.k.len(), cache.v.len())?;
    let (hq, hkv, d) = (heads.num_qo_heads, heads.num_kv_heads, heads.head_dim);
    let layout = cache.layout;
    let (kp, vp) = (SharedMut(cache.k.as_mut_ptr()), SharedMut(cache.v.as_mut_ptr()));
    let (k_new, v_new, positions, slots, rope) = (a.k, a.v, a.positions, a.slots, a.rope);
    let same_type = Q::DTYPE == KV::DTYPE;
    a.q.par_chunks_mut(hq * d).enumerate().with_min_len(4).for_each_init(
        || vec![0f32; d],
        |x, (t, q_tok)| {
            let Some(slot) = slots[t] else { return };
            let table = rope.map(|r| (r, r.table(positions[t] as usize)));
            if let Some((r, (c, s))) = table {
                for q_row in q_tok.chunks_exact_mut(d) {
                    Q::load_row(q_row, x);
                    rotate(x, c, s, r);
                    store_row(x, q_row);
                }
            }
            for h in 0..hkv {
                let src = (t * hkv + h) * d;
                let dst = layout.row_offset(slot as usize, h);
                // SAFETY: validation proved every slot is inside the pool and no two tokens share a
                // slot, so each destination row is written by exactly one worker.
                let (k_dst, v_dst) = unsafe {
                    (std::slice::from_raw_parts_mut(kp.get().add(dst), d), std::slice::from_raw_parts_mut(vp.get().add(dst), d))
                };
                Q::load_row(&k_new[src..src + d], x);
                if let Some((r, (c, s))) = table {
                    rotate(x, c, s, r);
                }
                store_row(x, k_dst);
                if same_type {
                    // SAFETY: Q and KV are the same type (same DType), so this is a plain copy.
                    unsafe { std::ptr::copy_nonoverlapping(v_new[src..src + d].as_ptr() as *const KV, v_dst.as_mut_ptr(), d) };
                } else {
                    Q::load_row(&v_new[src..src + d], x);
                    store_row(x, v_dst);
                }
            }
        },
    );
    Ok(())
}
