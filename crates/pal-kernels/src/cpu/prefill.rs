//! Paged prefill (append attention): work item = (tile of query tokens of one sequence, KV head);
//! rows are the tile's tokens times the GQA group, each with its own causal / window range.

use super::attend::{KvRows, RowBlock};
use super::math::{Isa, Plain};
use super::SharedMut;
use crate::{validate, PrefillArgs, PrefillPlan};
use pal_core::{Element, Result};
use rayon::prelude::*;

/// What one item needs besides the K/V rows.
struct Tile<'a, Q> {
    q: &'a [Q],
    q0: usize,
    i0: usize,
    i1: usize,
    hist: usize,
    total: usize,
    h: usize,
    hq: usize,
    g: usize,
}

#[inline(always)]
fn item<I: Isa, Q: Element, KV: Element>(
    isa: I,
    blk: &mut RowBlock,
    t: &Tile<'_, Q>,
    kv: &KvRows<'_, KV>,
    opts: &pal_core::AttentionOptions,
    out: SharedMut<Q>,
) {
    let d = blk.d;
    let (g, hq) = (t.g, t.hq);
    let rows = (t.i1 - t.i0) * g;
    blk.reset(1, rows);
    let scale = opts.scale(d);
    let (mut lo_all, mut hi_all) = (usize::MAX, 0);
    for i in t.i0..t.i1 {
        let pos = t.hist + i;
        let lo = opts.first_visible(pos);
        let hi = if opts.causal { pos + 1 } else { t.total };
        lo_all = lo_all.min(lo);
        hi_all = hi_all.max(hi);
        for gi in 0..g {
            let r = (i - t.i0) * g + gi;
            let src = ((t.q0 + i) * hq + t.h * g + gi) * d;
            blk.load_q(r, &t.q[src..src + d], scale);
            blk.lo[r] = lo;
            blk.hi[r] = hi;
        }
    }
    blk.scan(isa, kv, lo_all, hi_all, opts.logit_soft_cap);
    let mut row = [0f32; pal_core::HeadConfig::MAX_HEAD_DIM];
    for r in 0..rows {
        blk.finish_row(r, &mut row[..d]);
        let (i, gi) = (t.i0 + r / g, r % g);
        let dst = ((t.q0 + i) * hq + t.h * g + gi) * d;
        for (k, x) in row[..d].iter().enumerate() {
            // SAFETY: validation sized `out` to [tokens, hq, d]; each (token, head) row belongs to
            // exactly one work item (its query tile and its KV head), so writes never overlap.
            unsafe { *out.get().add(dst + k) = Q::from_f32(*x) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn item_avx2<Q: Element, KV: Element>(
    isa: super::math::Avx2,
    blk: &mut RowBlock,
    t: &Tile<'_, Q>,
    kv: &KvRows<'_, KV>,
    opts: &pal_core::AttentionOptions,
    out: SharedMut<Q>,
) {
    item(isa, blk, t, kv, opts, out)
}

/// Prefill / append attention over a paged cache. See [`PrefillArgs`] and [`PrefillPlan`].
pub fn paged_prefill<Q: Element, KV: Element>(
    a: &PrefillArgs<'_, Q, KV>,
    plan: &PrefillPlan,
    out: &mut [Q],
) -> Result<()> {
    let sh = validate::prefill(a, out.len())?;
    plan.check(a.qo_indptr, a.page_table)?;
    let (hq, hkv, d, g) = (sh.heads.num_qo_heads, sh.heads.num_kv_heads, sh.heads.head_dim, sh.heads.group_size());
    let tiles = plan.tiles();
    let max_rows = tiles.iter().map(|&(_, s, e)| (e - s) * g).max().unwrap_or(1);
    #[cfg(target_arch = "x86_64")]
    let avx2 = super::math::Avx2::detect();
    let out_ptr = SharedMut(out.as_mut_ptr());
    (0..tiles.len() * hkv).into_par_iter().for_each(|idx| {
        RowBlock::with_cached(1, max_rows, d, |blk| {
            let (b, i0, i1) = tiles[idx / hkv];
            let h = idx % hkv;
            let q0 = a.qo_indptr[b] as usize;
            let n_new = a.qo_indptr[b + 1] as usize - q0;
            let paged = a.page_table.seq_len(b);
            let total = if a.new_kv.is_some() { paged + n_new } else { paged };
            let t = Tile { q: a.q, q0, i0, i1, hist: total - n_new, total, h, hq, g };
            let kv = KvRows::of_sequence(&a.kv, a.page_table, b, h * d, a.new_kv.as_ref().map(|n| (n.k, n.v, q0)));
            #[cfg(target_arch = "x86_64")]
            if let Some(isa) = avx2 {
                // SAFETY: `isa` proves the CPU has AVX2, FMA and F16C.
                return unsafe { item_avx2(isa, blk, &t, &kv, &a.opts, out_ptr) };
            }
            item(Plain, blk, &t, &kv, &a.opts, out_ptr)
        })
    });
    Ok(())
}
