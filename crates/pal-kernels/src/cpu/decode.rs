//! Split-KV paged decode: work item = (chunk of one sequence, KV head); the whole GQA group of
//! that head is processed together so each K/V byte is read once per group.

use super::attend::{KvRows, RowBlock};
use super::math::{Arith, Plain};
use super::uses_avx2;
use crate::merge::merge_rows;
use crate::{validate, DecodeArgs, DecodePlan};
use pal_core::{Element, Result};
use rayon::prelude::*;

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn item<A: Arith, Q: Element, KV: Element>(
    blk: &mut RowBlock,
    q: &[Q],
    scale: f32,
    kv: &KvRows<'_, KV>,
    start: usize,
    end: usize,
    cap: Option<f32>,
    o: &mut [f32],
    lse: &mut [f32],
) {
    let (g, d) = (lse.len(), blk.d);
    blk.reset(g);
    for r in 0..g {
        blk.load_q(r, &q[r * d..(r + 1) * d], scale);
        blk.lo[r] = start;
        blk.hi[r] = end;
    }
    blk.scan::<A, KV>(kv, start, end, cap);
    for r in 0..g {
        lse[r] = blk.finish_row(r, &mut o[r * d..(r + 1) * d]);
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn item_avx2<Q: Element, KV: Element>(
    blk: &mut RowBlock,
    q: &[Q],
    scale: f32,
    kv: &KvRows<'_, KV>,
    start: usize,
    end: usize,
    cap: Option<f32>,
    o: &mut [f32],
    lse: &mut [f32],
) {
    item::<super::math::Fused, Q, KV>(blk, q, scale, kv, start, end, cap, o, lse)
}

/// Decode attention for one query token per sequence. See [`DecodeArgs`] and [`DecodePlan`].
pub fn paged_decode<Q: Element, KV: Element>(a: &DecodeArgs<'_, Q, KV>, plan: &DecodePlan, out: &mut [Q]) -> Result<()> {
    let sh = validate::decode(a, out.len())?;
    plan.check(a.page_table, &a.opts)?;
    let (hq, hkv, d, g) = (sh.heads.num_qo_heads, sh.heads.num_kv_heads, sh.heads.head_dim, sh.heads.group_size());
    let scale = a.opts.scale(d);
    let cap = a.opts.logit_soft_cap;
    let layout = a.kv.layout;
    let n_items = plan.num_chunks() * hkv;
    let mut part_o = vec![0f32; n_items * g * d];
    let mut part_lse = vec![0f32; n_items * g];
    let avx2 = uses_avx2();
    let seq_of_chunk: Vec<usize> = plan.chunks().map(|(b, _, _)| b).collect();

    part_o.par_chunks_mut(g * d).zip(part_lse.par_chunks_mut(g)).enumerate().for_each_init(
        || RowBlock::new(g, d),
        |blk, (i, (o, lse))| {
            let (chunk, h) = (i / hkv, i % hkv);
            let b = seq_of_chunk[chunk];
            let (start, end) = plan.chunk(chunk);
            let kv = KvRows {
                k: a.kv.k,
                v: a.kv.v,
                pages: a.page_table.pages(b),
                block_size: layout.block_size,
                token_stride: layout.token_stride(),
                head_off: h * d,
                head_dim: d,
                paged_len: a.page_table.seq_len(b),
                tail: None,
            };
            let q = &a.q[(b * hq + h * g) * d..(b * hq + (h + 1) * g) * d];
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: `uses_avx2` checked that the CPU has AVX2, FMA and F16C.
                return unsafe { item_avx2::<Q, KV>(blk, q, scale, &kv, start, end, cap, o, lse) };
            }
            let _ = avx2;
            item::<Plain, Q, KV>(blk, q, scale, &kv, start, end, cap, o, lse)
        },
    );

    // Merge the chunks of each (sequence, KV head) into the output rows of its group.
    out.par_chunks_mut(g * d).enumerate().for_each_init(
        || vec![0f32; d],
        |row, (bh, dst)| {
            let (b, h) = (bh / hkv, bh % hkv);
            let chunks = plan.seq_chunks(b);
            for r in 0..g {
                let parts = chunks.clone().map(|c| {
                    let item = c * hkv + h;
                    let off = (item * g + r) * d;
                    (&part_o[off..off + d], part_lse[item * g + r])
                });
                merge_rows(parts, row);
                for (o, x) in dst[r * d..(r + 1) * d].iter_mut().zip(row.iter()) {
                    *o = Q::from_f32(*x);
                }
            }
        },
    );
    Ok(())
}
