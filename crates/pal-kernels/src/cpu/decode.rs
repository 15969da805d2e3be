//! Split-KV paged decode. A work item is (chunk of one sequence, span of KV heads); it streams its
//! tokens' K/V rows for the whole span in memory order and computes every query head of the span,
//! so each K/V byte is read once per GQA group (and once overall).

use super::attend::{KvRows, RowBlock};
use super::math::{Isa, Plain};
use crate::merge::merge_rows;
use crate::{validate, DecodeArgs, DecodePlan};
use pal_core::{Element, Result};
use rayon::prelude::*;

/// One item: rows are `heads * group` query heads, all seeing `start..end`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn item<I: Isa, Q: Element, KV: Element>(
    isa: I,
    blk: &mut RowBlock,
    q: &[Q],
    (heads, group): (usize, usize),
    scale: f32,
    kv: &KvRows<'_, KV>,
    (start, end): (usize, usize),
    cap: Option<f32>,
    o: &mut [f32],
    lse: &mut [f32],
) {
    let d = blk.d;
    blk.reset(heads, group);
    for r in 0..heads * group {
        blk.load_q(r, &q[r * d..(r + 1) * d], scale);
        blk.lo[r] = start;
        blk.hi[r] = end;
    }
    blk.scan(isa, kv, start, end, cap);
    for (r, l) in lse.iter_mut().enumerate() {
        *l = blk.finish_row(r, &mut o[r * d..(r + 1) * d]);
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn item_avx2<Q: Element, KV: Element>(
    isa: super::math::Avx2,
    blk: &mut RowBlock,
    q: &[Q],
    hg: (usize, usize),
    scale: f32,
    kv: &KvRows<'_, KV>,
    range: (usize, usize),
    cap: Option<f32>,
    o: &mut [f32],
    lse: &mut [f32],
) {
    item(isa, blk, q, hg, scale, kv, range, cap, o, lse)
}

/// Decode attention for one query token per sequence. See [`DecodeArgs`] and [`DecodePlan`].
pub fn paged_decode<Q: Element, KV: Element>(
    a: &DecodeArgs<'_, Q, KV>,
    plan: &DecodePlan,
    out: &mut [Q],
) -> Result<()> {
    let sh = validate::decode(a, out.len())?;
    let (hq, hkv, d, g) = (sh.heads.num_qo_heads, sh.heads.num_kv_heads, sh.heads.head_dim, sh.heads.group_size());
    plan.check(a.page_table, &a.opts, hkv)?;
    let scale = a.opts.scale(d);
    let cap = a.opts.logit_soft_cap;
    let splits = plan.head_splits();
    let span = hkv / splits;
    #[cfg(target_arch = "x86_64")]
    let avx2 = super::math::Avx2::detect();
    // Item `i` = (chunk, span of KV heads): its rows' normalised outputs into `o`, their
    // log-sum-exps into `lse`.
    let run = |blk: &mut RowBlock, i: usize, o: &mut [f32], lse: &mut [f32]| {
        let (chunk, s) = (i / splits, i % splits);
        let (b, start, end) = plan.chunk(chunk);
        let kv = KvRows::of_sequence(&a.kv, a.page_table, b, s * span * d, None);
        let q0 = (b * hq + s * span * g) * d;
        let q = &a.q[q0..q0 + span * g * d];
        let range = (start, end);
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = avx2 {
            // SAFETY: `isa` proves the CPU has AVX2, FMA and F16C.
            return unsafe { item_avx2(isa, blk, q, (span, g), scale, &kv, range, cap, o, lse) };
        }
        item(Plain, blk, q, (span, g), scale, &kv, range, cap, o, lse)
    };

    if !plan.is_split() {
        // One chunk per sequence (short contexts, large batches): each item writes its output
        // rows itself, which saves the partial states and a second parallel pass per call.
        out.par_chunks_mut(span * g * d).enumerate().for_each(|(i, dst)| {
            RowBlock::with_cached(span, g, d, |blk| {
                let (mut o, mut lse) = (std::mem::take(&mut blk.out_rows), std::mem::take(&mut blk.lse_rows));
                run(blk, i, &mut o[..span * g * d], &mut lse[..span * g]);
                Q::store_row(&o[..span * g * d], dst);
                (blk.out_rows, blk.lse_rows) = (o, lse);
            })
        });
        return Ok(());
    }

    // Partial states, [chunk][hq][d] and [chunk][hq]; item (chunk, s) owns heads s*span..(s+1)*span.
    let mut part_o = vec![0f32; plan.num_chunks() * hq * d];
    let mut part_lse = vec![0f32; plan.num_chunks() * hq];
    part_o
        .par_chunks_mut(span * g * d)
        .zip(part_lse.par_chunks_mut(span * g))
        .enumerate()
        .for_each(|(i, (o, lse))| RowBlock::with_cached(span, g, d, |blk| run(blk, i, o, lse)));

    // Merge the chunks of each sequence into its output rows.
    out.par_chunks_mut(hq * d).enumerate().for_each_init(
        || vec![0f32; d],
        |row, (b, dst)| {
            let chunks = plan.seq_chunks(b);
            for h in 0..hq {
                let parts = chunks.clone().map(|c| {
                    let off = (c * hq + h) * d;
                    (&part_o[off..off + d], part_lse[c * hq + h])
                });
                merge_rows(parts, row);
                for (o, x) in dst[h * d..(h + 1) * d].iter_mut().zip(row.iter()) {
                    *o = Q::from_f32(*x);
                }
            }
        },
    );
    Ok(())
}
