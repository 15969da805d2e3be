//! seed-cases.md sections A, B, E and F, on every backend (reference, gather, cpu).

use pal_core::{bf16, f16, AttentionOptions, Element, KvLayout, PageTable, PagedKv, PagedKvMut};
use pal_kernels::testing::{fresh_seed, ErrStats, Rng, Tolerance};
use pal_kernels::{cpu, gather, reference, AppendArgs, DecodeArgs, DecodePlan, PrefillArgs, PrefillPlan, RaggedKv};
use pal_kvcache::BlockManager;

/// Decode on every backend; returns the outputs (reference first).
fn decode_all<T: Element>(a: &DecodeArgs<'_, T, T>) -> Vec<Vec<T>> {
    let n = a.q.len();
    let mut outs = Vec::new();
    let mut o = vec![T::poison(); n];
    reference::paged_decode(a, &mut o).unwrap();
    outs.push(o);
    for chunk in [usize::MAX, 1] {
        let plan = DecodePlan::with_chunk_tokens(a.page_table, &a.opts, chunk);
        let mut o = vec![T::poison(); n];
        cpu::paged_decode(a, &plan, &mut o).unwrap();
        outs.push(o);
    }
    let mut o = vec![T::poison(); n];
    gather::paged_decode(a, &mut o).unwrap();
    outs.push(o);
    outs
}

fn prefill_all<T: Element>(a: &PrefillArgs<'_, T, T>) -> Vec<Vec<T>> {
    let n = a.q.len();
    let mut outs = Vec::new();
    let mut o = vec![T::poison(); n];
    reference::paged_prefill(a, &mut o).unwrap();
    outs.push(o);
    let plan = PrefillPlan::new(a.qo_indptr, a.page_table, a.num_qo_heads / a.kv.layout.num_kv_heads);
    let mut o = vec![T::poison(); n];
    cpu::paged_prefill(a, &plan, &mut o).unwrap();
    outs.push(o);
    let mut o = vec![T::poison(); n];
    gather::paged_prefill(a, &mut o).unwrap();
    outs.push(o);
    outs
}

fn to_f64<T: Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

// ---------- A. hand-computed ----------

fn a1_single_token_is_exactly_v<T: Element>() {
    let mut rng = Rng::new(fresh_seed());
    let (hq, hkv, d, bs) = (4, 2, 64, 16);
    let layout = KvLayout::new(2, bs, hkv, d).unwrap();
    let k: Vec<T> = rng.fill(layout.elems(), 1.0);
    let v: Vec<T> = rng.fill(layout.elems(), 1.0);
    let (k0, v0) = (k.clone(), v.clone());
    // Entries 99 and 88 are outside the 2-block pool and beyond each sequence's length.
    let table = PageTable::from_padded(&[0, 99, 1, 88], 2, &[1, 1], bs).unwrap();
    let q: Vec<T> = rng.fill(2 * hq * d, 1.0);
    let a = DecodeArgs {
        q: &q,
        num_qo_heads: hq,
        kv: PagedKv::new(&k, &v, layout).unwrap(),
        page_table: &table,
        opts: AttentionOptions::default(),
    };
    for out in decode_all(&a) {
        for b in 0..2 {
            for h in 0..hq {
                let got = &out[(b * hq + h) * d..(b * hq + h + 1) * d];
                let want = &v[layout.row_offset(b * bs, h / (hq / hkv))..][..d];
                assert_eq!(got, want, "seq {b} head {h}");
            }
        }
    }
    assert!(k == k0 && v == v0, "decode must not write the cache");
}

#[test]
fn a1_decode_history_of_one_token_returns_its_v() {
    a1_single_token_is_exactly_v::<f32>();
    a1_single_token_is_exactly_v::<f16>();
    a1_single_token_is_exactly_v::<bf16>();
}

#[test]
fn a2_three_tokens_hand_computed_softmax() {
    let mut rng = Rng::new(fresh_seed());
    let (d, bs) = (32, 16);
    let layout = KvLayout::new(1, bs, 1, d).unwrap();
    let base: Vec<f32> = (0..d).map(|_| rng.uniform()).collect();
    let q: Vec<f32> = (0..d).map(|_| rng.uniform() * 3.0).collect();
    let mut k = vec![f32::NAN; layout.elems()];
    let mut v = vec![f32::NAN; layout.elems()];
    let mult = [1.0f32, 2.0, 0.5];
    for (t, m) in mult.iter().enumerate() {
        for i in 0..d {
            k[t * d + i] = base[i] * m;
            v[t * d + i] = rng.uniform();
        }
    }
    let (k0, v0) = (k.clone(), v.clone());
    let table = PageTable::from_lists(&[[0u32]], &[3], bs).unwrap();
    let a = DecodeArgs {
        q: &q,
        num_qo_heads: 1,
        kv: PagedKv::new(&k, &v, layout).unwrap(),
        page_table: &table,
        opts: AttentionOptions::default(),
    };
    let qb: f64 = q.iter().zip(&base).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (d as f64).sqrt();
    let s: Vec<f64> = mult.iter().map(|m| *m as f64 * qb).collect();
    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
    let w: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
    let l: f64 = w.iter().sum();
    let want: Vec<f64> = (0..d).map(|i| (0..3).map(|t| w[t] / l * v[t * d + i] as f64).sum()).collect();
    for out in decode_all(&a) {
        for (g, w) in out.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
    assert!(k.iter().zip(&k0).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(v.iter().zip(&v0).all(|(a, b)| a.to_bits() == b.to_bits()));
}

fn one_hot(n: usize, d: usize) -> Vec<f32> {
    let mut v = vec![0.0; n * d];
    for t in 0..n {
        v[t * d + t] = 1.0;
    }
    v
}

#[test]
fn a3_prefill_equal_scores_with_empty_pool() {
    let d = 8;
    let q: Vec<f32> = (0..2 * d).map(|i| i as f32 * 0.1).collect();
    let k_new = vec![0.0f32; 2 * d];
    let v_new = one_hot(2, d);
    let layout = KvLayout::new(0, 16, 1, d).unwrap();
    let table = PageTable::new(vec![0, 0], vec![], vec![0], 16).unwrap();
    let a = PrefillArgs {
        q: &q,
        qo_indptr: &[0, 2],
        num_qo_heads: 1,
        kv: PagedKv::new(&[], &[], layout).unwrap(),
        page_table: &table,
        new_kv: Some(RaggedKv { k: &k_new, v: &v_new }),
        opts: AttentionOptions::default(),
    };
    for out in prefill_all(&a) {
        assert_eq!(&out[..4], &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(&out[d..d + 4], &[0.5, 0.5, 0.0, 0.0]);
    }
}

#[test]
fn a3_a4_prefill_equal_scores_from_the_pool() {
    // A3 with the new tokens already appended, and A4: 2 history + 2 new tokens.
    let d = 8;
    for (hist, rows) in [
        (0usize, vec![vec![1.0, 0.0, 0.0, 0.0], vec![0.5, 0.5, 0.0, 0.0]]),
        (2, vec![vec![1.0 / 3.0; 3], vec![0.25; 4]]),
    ] {
        let total = hist + 2;
        let layout = KvLayout::new(3, 2, 1, d).unwrap();
        let table = PageTable::from_lists(&[[2u32, 0]], &[total], 2).unwrap();
        let mut k = vec![f32::NAN; layout.elems()];
        let mut v = vec![f32::NAN; layout.elems()];
        let hot = one_hot(total, d);
        for t in 0..total {
            let off = layout.row_offset(table.slot(0, t), 0);
            k[off..off + d].fill(0.0);
            v[off..off + d].copy_from_slice(&hot[t * d..(t + 1) * d]);
        }
        let q: Vec<f32> = (0..2 * d).map(|i| 1.0 - i as f32 * 0.05).collect();
        let a = PrefillArgs {
            q: &q,
            qo_indptr: &[0, 2],
            num_qo_heads: 1,
            kv: PagedKv::new(&k, &v, layout).unwrap(),
            page_table: &table,
            new_kv: None,
            opts: AttentionOptions::default(),
        };
        for out in prefill_all(&a) {
            for (i, want) in rows.iter().enumerate() {
                for (j, w) in want.iter().enumerate() {
                    assert!((out[i * d + j] - w).abs() < 1e-6, "hist {hist} row {i}: {:?}", &out[i * d..i * d + 4]);
                }
                assert!(out[i * d + want.len()..(i + 1) * d].iter().all(|x| *x == 0.0));
            }
        }
    }
}

// ---------- B. KV write layout ----------

/// Append `tokens` with the given slots on a poisoned pool with both the reference and the CPU
/// kernel; both pools must be identical (no RoPE: values are copied exactly). Returns the pool K.
fn append_layout(
    num_blocks: usize,
    bs: usize,
    hkv: usize,
    d: usize,
    slots: &[Option<u32>],
) -> (Vec<f32>, Vec<f32>, KvLayout) {
    let mut rng = Rng::new(fresh_seed());
    let t = slots.len();
    let layout = KvLayout::new(num_blocks, bs, hkv, d).unwrap();
    let k: Vec<f32> = rng.fill(t * hkv * d, 1.0);
    let v: Vec<f32> = rng.fill(t * hkv * d, 1.0);
    let positions: Vec<u32> = (0..t as u32).collect();
    let mut pools = Vec::new();
    for use_ref in [true, false] {
        let mut pk = vec![f32::NAN; layout.elems()];
        let mut pv = vec![f32::NAN; layout.elems()];
        let mut q = vec![0.5f32; t * hkv * d];
        let args = AppendArgs { q: &mut q, num_qo_heads: hkv, k: &k, v: &v, positions: &positions, slots, rope: None };
        let mut cache = PagedKvMut::new(&mut pk, &mut pv, layout).unwrap();
        if use_ref {
            reference::append_kv(args, &mut cache).unwrap();
        } else {
            cpu::append_kv(args, &mut cache).unwrap();
        }
        // Every written row equals the input row; padding wrote nothing.
        for (i, s) in slots.iter().enumerate() {
            if let Some(s) = s {
                let off = layout.row_offset(*s as usize, 0);
                assert_eq!(&pk[off..off + hkv * d], &k[i * hkv * d..(i + 1) * hkv * d]);
                assert_eq!(&pv[off..off + hkv * d], &v[i * hkv * d..(i + 1) * hkv * d]);
            }
        }
        pools.push((pk, pv));
    }
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&pools[0].0), bits(&pools[1].0));
    assert_eq!(bits(&pools[0].1), bits(&pools[1].1));
    let (pk, pv) = pools.pop().unwrap();
    (pk, pv, layout)
}

fn written_slots(pool: &[f32], layout: &KvLayout) -> Vec<usize> {
    (0..layout.num_slots()).filter(|&s| !pool[layout.row_offset(s, 0)].is_nan()).collect()
}

#[test]
fn b1_seventeen_tokens_fill_one_page_and_one_slot() {
    let bs = 16;
    let slots: Vec<Option<u32>> =
        (0..17u32).map(|p| Some(if p < 16 { bs as u32 + p } else { 2 * bs as u32 })).collect();
    let (pk, pv, layout) = append_layout(3, bs, 8, 128, &slots);
    let want: Vec<usize> = (16..33).collect();
    assert_eq!(written_slots(&pk, &layout), want);
    assert_eq!(written_slots(&pv, &layout), want);
    // Slots 1..15 of page 2 are still poisoned in every element.
    assert!(pk[layout.row_offset(33, 0)..].iter().all(|x| x.is_nan()));
}

#[test]
fn b2_crossing_a_page_boundary() {
    // page size 2, pages [5, 10]: positions 1..3 -> page 5 slot 1, page 10 slots 0 and 1.
    let slots = [Some(5 * 2 + 1), Some(10 * 2), Some(10 * 2 + 1)];
    let (pk, _, layout) = append_layout(12, 2, 2, 16, &slots);
    assert_eq!(written_slots(&pk, &layout), vec![11, 20, 21]);
}

#[test]
fn b3_batched_decode_append() {
    // Two sequences, pages [[1], [3]], positions [0, 1].
    let bs = 4;
    let slots = [Some(bs), Some(3 * bs + 1)];
    let (pk, _, layout) = append_layout(4, bs as u32 as usize, 4, 32, &slots.map(|s| s.map(|x| x as u32)));
    assert_eq!(written_slots(&pk, &layout), vec![4, 13]);
}

#[test]
fn b4_two_sequences_sharing_a_page() {
    // After a fork both sequences map page 2; they write positions 1 and 3 of it.
    let mut m = BlockManager::new(4, 4, false).unwrap();
    let spacer = m.add_sequence(&[9; 8]).unwrap().seq;
    let parent = m.add_sequence(&[1]).unwrap().seq;
    let child = m.fork(parent).unwrap();
    assert_eq!(m.block_table(parent).unwrap(), m.block_table(child).unwrap());
    let page = m.block_table(parent).unwrap()[0] as usize;
    assert_eq!(page, 2);
    let slots = [Some((page * 4 + 1) as u32), Some((page * 4 + 3) as u32)];
    let (pk, _, layout) = append_layout(4, 4, 2, 16, &slots);
    assert_eq!(written_slots(&pk, &layout), vec![9, 11]);
    m.free_sequence(spacer).unwrap();
}

#[test]
fn b5_padding_slots_write_nothing() {
    let slots = [None, Some(3), None, Some(0), None];
    let (pk, pv, layout) = append_layout(2, 4, 2, 8, &slots);
    assert_eq!(written_slots(&pk, &layout), vec![0, 3]);
    assert_eq!(written_slots(&pv, &layout), vec![0, 3]);
}

// ---------- E. long decode parity ----------

fn rms(a: &[bf16], b: &[bf16]) -> f64 {
    let (a, b) = (to_f64(a), to_f64(b));
    (a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / a.len() as f64).sqrt()
}

/// Append one token of `seq` through the block manager and the CPU append kernel.
fn append_token(
    m: &mut BlockManager,
    seq: u64,
    rng: &mut Rng,
    pk: &mut [bf16],
    pv: &mut [bf16],
    layout: KvLayout,
    hq: usize,
) {
    let d = layout.head_dim;
    let r = m.append_tokens(seq, &[0]).unwrap();
    assert!(r.copy.is_none());
    let pos = m.seq_len(seq).unwrap() as u32 - 1;
    let k: Vec<bf16> = rng.fill(layout.num_kv_heads * d, 1.0);
    let v: Vec<bf16> = rng.fill(layout.num_kv_heads * d, 1.0);
    let mut q: Vec<bf16> = rng.fill(hq * d, 1.0);
    let slot = [Some(r.slots[0] as u32)];
    let args = AppendArgs { q: &mut q, num_qo_heads: hq, k: &k, v: &v, positions: &[pos], slots: &slot, rope: None };
    cpu::append_kv(args, &mut PagedKvMut::new(pk, pv, layout).unwrap()).unwrap();
}

#[test]
fn e1_two_hundred_decode_steps_on_fragmented_blocks() {
    let mut rng = Rng::new(fresh_seed());
    let (h, d, bs) = (4, 8, 4);
    let layout = KvLayout::new(128, bs, h, d).unwrap();
    let mut pk = vec![bf16::NAN; layout.elems()];
    let mut pv = vec![bf16::NAN; layout.elems()];
    let mut m = BlockManager::new(128, bs, false).unwrap();
    let target = m.add_sequence(&[]).unwrap().seq;
    let mut spacers = Vec::new();
    for step in 0..200 {
        if m.seq_len(target).unwrap().is_multiple_of(bs) {
            spacers.push(m.add_sequence(&[7; 4]).unwrap().seq);
        }
        append_token(&mut m, target, &mut rng, &mut pk, &mut pv, layout, h);
        let len = m.seq_len(target).unwrap();
        let table = PageTable::from_lists(&[m.block_table(target).unwrap()], &[len], bs).unwrap();
        let q: Vec<bf16> = rng.fill(h * d, 2.0);
        let a = DecodeArgs {
            q: &q,
            num_qo_heads: h,
            kv: PagedKv::new(&pk, &pv, layout).unwrap(),
            page_table: &table,
            opts: AttentionOptions::default(),
        };
        let outs = decode_all(&a);
        for o in &outs[1..] {
            let e = rms(o, &outs[0]);
            assert!(e < 5e-3, "step {step}: rms {e}");
        }
    }
    let blocks = m.block_table(target).unwrap();
    assert_eq!(blocks.len(), 50);
    let span = blocks.iter().max().unwrap() - blocks.iter().min().unwrap() + 1;
    assert!(span > 50, "block ids span {span}");
}

#[test]
fn e2_gqa_batched_interleaved_writes() {
    let mut rng = Rng::new(fresh_seed());
    let (hq, hkv, d, bs) = (8, 2, 8, 4);
    let layout = KvLayout::new(16, bs, hkv, d).unwrap();
    let mut pk = vec![bf16::NAN; layout.elems()];
    let mut pv = vec![bf16::NAN; layout.elems()];
    let mut m = BlockManager::new(16, bs, false).unwrap();
    let a = m.add_sequence(&[]).unwrap().seq;
    let b = m.add_sequence(&[]).unwrap().seq;
    for i in 0..17 {
        if i < 10 {
            append_token(&mut m, a, &mut rng, &mut pk, &mut pv, layout, hq);
        }
        append_token(&mut m, b, &mut rng, &mut pk, &mut pv, layout, hq);
    }
    let table = PageTable::from_lists(&[m.block_table(a).unwrap(), m.block_table(b).unwrap()], &[10, 17], bs).unwrap();
    let q: Vec<bf16> = rng.fill(2 * hq * d, 2.0);
    let args = DecodeArgs {
        q: &q,
        num_qo_heads: hq,
        kv: PagedKv::new(&pk, &pv, layout).unwrap(),
        page_table: &table,
        opts: AttentionOptions::default(),
    };
    let outs = decode_all(&args);
    for o in &outs[1..] {
        assert_eq!(o.len(), 2 * 8 * 8);
        assert!(rms(o, &outs[0]) < 5e-3);
    }
}

#[test]
fn e3_sliding_window_equals_attention_over_the_window() {
    let mut rng = Rng::new(fresh_seed());
    let (h, d, bs) = (2, 16, 4);
    let layout = KvLayout::new(3, bs, h, d).unwrap();
    let pk: Vec<f32> = rng.fill(layout.elems(), 1.0);
    let pv: Vec<f32> = rng.fill(layout.elems(), 1.0);
    let table = PageTable::from_lists(&[[2u32, 0, 1]], &[12], bs).unwrap();
    let q: Vec<f32> = rng.fill(h * d, 3.0);
    // The query sits at position 11; window_left 6 covers positions [5, 12).
    let opts = AttentionOptions { window_left: Some(6), ..Default::default() };
    let a =
        DecodeArgs { q: &q, num_qo_heads: h, kv: PagedKv::new(&pk, &pv, layout).unwrap(), page_table: &table, opts };
    // The same 7 tokens copied into a pool of their own, attended without a window.
    let win = KvLayout::new(7, 1, h, d).unwrap();
    let (mut wk, mut wv) = (Vec::new(), Vec::new());
    for pos in 5..12 {
        let off = layout.row_offset(table.slot(0, pos), 0);
        wk.extend_from_slice(&pk[off..off + h * d]);
        wv.extend_from_slice(&pv[off..off + h * d]);
    }
    let wt = PageTable::from_lists(&[[0u32, 1, 2, 3, 4, 5, 6]], &[7], 1).unwrap();
    let wa = DecodeArgs {
        q: &q,
        num_qo_heads: h,
        kv: PagedKv::new(&wk, &wv, win).unwrap(),
        page_table: &wt,
        opts: AttentionOptions::default(),
    };
    let want = &decode_all(&wa)[0];
    let tol = Tolerance::for_dtype(pal_core::DType::F32);
    for o in decode_all(&a) {
        let e = ErrStats::compare(&o, want, &tol);
        assert!(e.passes(&tol), "{e:?}");
    }
}

// ---------- F. determinism and isolation ----------

#[test]
fn f_batched_calls_are_bitwise_deterministic_and_isolated() {
    let mut rng = Rng::new(fresh_seed());
    let (hq, hkv, d) = (8, 2, 64);
    let lens = [300, 17, 1024, 5, 640];
    let mut fx = pal_kernels::testing::PagedFixture::<bf16>::new(&mut rng, &lens, hkv, d, 16, true).unwrap();
    let q: Vec<bf16> = rng.fill(lens.len() * hq * d, 2.0);
    let plan = DecodePlan::with_chunk_tokens(&fx.page_table, &AttentionOptions::default(), 100);
    assert!(plan.is_split());
    let run = |fx: &pal_kernels::testing::PagedFixture<bf16>| {
        let a = DecodeArgs {
            q: &q,
            num_qo_heads: hq,
            kv: fx.view(),
            page_table: &fx.page_table,
            opts: AttentionOptions::default(),
        };
        let mut o = vec![bf16::NAN; q.len()];
        cpu::paged_decode(&a, &plan, &mut o).unwrap();
        o.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    let first = run(&fx);
    for _ in 0..3 {
        assert_eq!(run(&fx), first);
    }
    // Rewrite every token of sequence 2: only sequence 2's output may change.
    for pos in 0..lens[2] {
        let off = fx.layout.row_offset(fx.page_table.slot(2, pos), 0);
        for x in &mut fx.k[off..off + hkv * d] {
            *x = bf16::from_f32(rng.uniform());
        }
    }
    let after = run(&fx);
    let row = hq * d;
    for b in 0..lens.len() {
        let same = after[b * row..(b + 1) * row] == first[b * row..(b + 1) * row];
        assert_eq!(same, b != 2, "sequence {b}");
    }
}
