//! KV append with fused RoPE: one pass over the new tokens rotates q in place and writes the
//! rotated k and the v of each token into its slot.

use super::SharedMut;
use crate::{validate, AppendArgs, Rope, RopeStyle};
use pal_core::{Element, PagedKvMut, Result};
use rayon::prelude::*;

/// Rotate `x` (f32, one head) with the table row of its position. One loop per layout, each
/// written over plain slices so that it vectorises.
#[inline(always)]
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], rope: &Rope) {
    let half = cos.len();
    match rope.config().style {
        RopeStyle::HalfSplit => {
            let (lo, hi) = x[..2 * half].split_at_mut(half);
            for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
                let (xa, xb) = (*a, *b);
                *a = xa * c - xb * s;
                *b = xa * s + xb * c;
            }
        }
        RopeStyle::AdjacentPairs => {
            for ((p, &c), &s) in x[..2 * half].chunks_exact_mut(2).zip(cos).zip(sin) {
                let (xa, xb) = (p[0], p[1]);
                p[0] = xa * c - xb * s;
                p[1] = xa * s + xb * c;
            }
        }
    }
}

#[inline(always)]
fn store_row<T: Element>(src: &[f32], dst: &mut [T]) {
    T::store_row(src, dst);
}

/// Everything one token needs: its q heads (rotated in place), its new k/v rows, its slot.
struct Token<'a, Q, KV> {
    q: &'a mut [Q],
    k: &'a [Q],
    v: &'a [Q],
    /// Destination rows in the pool, `[num_kv_heads * head_dim]` each.
    k_dst: &'a mut [KV],
    v_dst: &'a mut [KV],
    table: Option<(&'a Rope, &'a [f32], &'a [f32])>,
}

#[inline(always)]
fn token<Q: Element, KV: Element>(t: Token<'_, Q, KV>, d: usize, x: &mut [f32]) {
    if let Some((r, c, s)) = t.table {
        for q_row in t.q.chunks_exact_mut(d) {
            Q::load_row(q_row, x);
            rotate(x, c, s, r);
            store_row(x, q_row);
        }
    }
    for (src, dst) in t.k.chunks_exact(d).zip(t.k_dst.chunks_exact_mut(d)) {
        Q::load_row(src, x);
        if let Some((r, c, s)) = t.table {
            rotate(x, c, s, r);
        }
        store_row(x, dst);
    }
    for (src, dst) in t.v.chunks_exact(d).zip(t.v_dst.chunks_exact_mut(d)) {
        Q::load_row(src, x);
        store_row(x, dst);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn token_avx2<Q: Element, KV: Element>(t: Token<'_, Q, KV>, d: usize, x: &mut [f32]) {
    token(t, d, x)
}

/// Write new K/V into the pool (skipping padding) with RoPE fused on q and k. See [`AppendArgs`].
pub fn append_kv<Q: Element, KV: Element>(a: AppendArgs<'_, Q>, cache: &mut PagedKvMut<'_, KV>) -> Result<()> {
    let heads = validate::append(&a, &cache.layout, cache.k.len(), cache.v.len())?;
    let (hq, hkv, d) = (heads.num_qo_heads, heads.num_kv_heads, heads.head_dim);
    let layout = cache.layout;
    let (kp, vp) = (SharedMut(cache.k.as_mut_ptr()), SharedMut(cache.v.as_mut_ptr()));
    let (k_new, v_new, positions, slots, rope) = (a.k, a.v, a.positions, a.slots, a.rope);
    let w = hkv * d;
    #[cfg(target_arch = "x86_64")]
    let avx2 = super::uses_avx2();
    a.q.par_chunks_mut(hq * d).enumerate().with_min_len(8).for_each_init(
        || vec![0f32; d],
        |x, (t, q)| {
            let Some(slot) = slots[t] else { return };
            let dst = layout.row_offset(slot as usize, 0);
            // SAFETY: validation proved every slot is inside the pool and no two tokens share a
            // slot, so each destination row is written by exactly one worker.
            let (k_dst, v_dst) = unsafe {
                (
                    std::slice::from_raw_parts_mut(kp.get().add(dst), w),
                    std::slice::from_raw_parts_mut(vp.get().add(dst), w),
                )
            };
            let table = rope.map(|r| {
                let (c, s) = r.table(positions[t] as usize);
                (r, c, s)
            });
            let tok = Token { q, k: &k_new[t * w..(t + 1) * w], v: &v_new[t * w..(t + 1) * w], k_dst, v_dst, table };
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: uses_avx2 checked AVX2, FMA and F16C.
                return unsafe { token_avx2(tok, d, x) };
            }
            token(tok, d, x)
        },
    );
    Ok(())
}
