//! Bad input: a typed error naming the argument, on every backend; never a panic, never a write.

use pal_core::{AttentionOptions, KvLayout, PageTable, PagedKv, PagedKvMut, PalError};
use pal_kernels::testing::{PagedFixture, Rng};
use pal_kernels::{
    cpu, gather, reference, AppendArgs, DecodeArgs, DecodePlan, PrefillArgs, PrefillPlan, RaggedKv, Rope, RopeConfig,
    RopeStyle,
};
use proptest::prelude::*;

/// A backend under test: its name and a call writing into `out`.
type Run<'a> = (&'static str, Box<dyn Fn(&mut [f32]) -> Result<(), PalError> + 'a>);
/// An append case: expected argument, positions, slots, q tokens, rope.
type AppendCase<'a> = (&'static str, Vec<u32>, Vec<Option<u32>>, usize, Option<&'a Rope>);

/// Run decode on all backends; every one must fail with an error about `arg`, leaving `out` poisoned.
fn decode_fails(a: &DecodeArgs<'_, f32, f32>, out_len: usize, arg: &str) {
    let plan = DecodePlan::new(a.page_table, a.kv.layout.num_kv_heads.max(1), &a.opts, 2);
    let runs: [Run; 3] = [
        ("reference", Box::new(|o| reference::paged_decode(a, o))),
        ("cpu", Box::new(|o| cpu::paged_decode(a, &plan, o))),
        ("gather", Box::new(|o| gather::paged_decode(a, o))),
    ];
    for (name, run) in runs {
        let mut out = vec![f32::NAN; out_len];
        let e = run(&mut out).expect_err(name);
        assert_eq!(e.arg(), Some(arg), "{name}: {e}");
        assert!(out.iter().all(|x| x.is_nan()), "{name} wrote output before failing");
        assert!(!e.to_string().is_empty());
    }
}

fn fixture() -> PagedFixture<f32> {
    PagedFixture::new(&mut Rng::new(7), &[20, 3], 2, 16, 8, true).unwrap()
}

#[test]
fn decode_rejects_bad_arguments() {
    let fx = fixture();
    let (hq, d) = (4, 16);
    let q = vec![0.1f32; 2 * hq * d];
    let ok = DecodeArgs {
        q: &q,
        num_qo_heads: hq,
        kv: fx.view(),
        page_table: &fx.page_table,
        opts: AttentionOptions::default(),
    };
    decode_fails(&DecodeArgs { q: &q[1..], ..ok }, q.len(), "q");
    decode_fails(&ok, q.len() + 1, "out");
    decode_fails(&DecodeArgs { num_qo_heads: 3, ..ok }, q.len(), "num_qo_heads");
    decode_fails(&DecodeArgs { num_qo_heads: 0, ..ok }, q.len(), "num_qo_heads");
    let bad_scale = AttentionOptions { sm_scale: Some(f32::NAN), ..Default::default() };
    decode_fails(&DecodeArgs { opts: bad_scale, ..ok }, q.len(), "sm_scale");
    let bad_cap = AttentionOptions { logit_soft_cap: Some(-1.0), ..Default::default() };
    decode_fails(&DecodeArgs { opts: bad_cap, ..ok }, q.len(), "logit_soft_cap");
    // A page id outside the pool.
    let outside = PageTable::from_lists(&[vec![fx.layout.num_blocks as u32 + 5, 0, 1], vec![2]], &[20, 3], 8).unwrap();
    decode_fails(&DecodeArgs { page_table: &outside, ..ok }, q.len(), "indices");
    // Page table of another block size.
    let other_bs = PageTable::from_lists(&[vec![0, 1], vec![2]], &[20, 3], 16).unwrap();
    decode_fails(&DecodeArgs { page_table: &other_bs, ..ok }, q.len(), "page_table");
    // An empty sequence.
    let empty = PageTable::from_lists(&[vec![0u32], vec![]], &[5, 0], 8).unwrap();
    decode_fails(&DecodeArgs { page_table: &empty, ..ok }, q.len(), "page_table");
    // K/V buffers that do not match the layout.
    let short = PagedKv { k: &fx.k[1..], v: &fx.v, layout: fx.layout };
    decode_fails(&DecodeArgs { kv: short, ..ok }, q.len(), "k_cache");
    // Head dims outside the supported set.
    let odd = KvLayout::new(4, 8, 2, 12).unwrap();
    let (k12, v12) = (vec![0f32; odd.elems()], vec![0f32; odd.elems()]);
    let t12 = PageTable::from_lists(&[vec![0u32], vec![1]], &[2, 2], 8).unwrap();
    let q12 = vec![0f32; 2 * hq * 12];
    let a12 = DecodeArgs {
        q: &q12,
        num_qo_heads: hq,
        kv: PagedKv::new(&k12, &v12, odd).unwrap(),
        page_table: &t12,
        opts: AttentionOptions::default(),
    };
    decode_fails(&a12, q12.len(), "head_dim");
}

#[test]
fn plan_from_another_batch_is_rejected() {
    let fx = fixture();
    let q = vec![0.1f32; 2 * 4 * 16];
    let a = DecodeArgs {
        q: &q,
        num_qo_heads: 4,
        kv: fx.view(),
        page_table: &fx.page_table,
        opts: AttentionOptions::default(),
    };
    let other = PageTable::from_lists(&[vec![0u32], vec![1]], &[4, 3], 8).unwrap();
    let plan = DecodePlan::new(&other, 2, &AttentionOptions::default(), 2);
    let mut out = vec![f32::NAN; q.len()];
    assert_eq!(cpu::paged_decode(&a, &plan, &mut out).unwrap_err().arg(), Some("plan"));
    let qo = [0u32, 1, 2];
    let pplan = PrefillPlan::new(&qo, &other, 2);
    let p = PrefillArgs {
        q: &q,
        qo_indptr: &qo,
        num_qo_heads: 4,
        kv: fx.view(),
        page_table: &fx.page_table,
        new_kv: None,
        opts: AttentionOptions::default(),
    };
    assert_eq!(cpu::paged_prefill(&p, &pplan, &mut out).unwrap_err().arg(), Some("plan"));
    assert!(out.iter().all(|x| x.is_nan()));
}

fn prefill_fails(a: &PrefillArgs<'_, f32, f32>, out_len: usize, arg: &str) {
    let plan = PrefillPlan::new(a.qo_indptr, a.page_table, 2);
    let runs: [Run; 3] = [
        ("reference", Box::new(|o| reference::paged_prefill(a, o))),
        ("cpu", Box::new(|o| cpu::paged_prefill(a, &plan, o))),
        ("gather", Box::new(|o| gather::paged_prefill(a, o))),
    ];
    for (name, run) in runs {
        let mut out = vec![f32::NAN; out_len];
        let e = run(&mut out).expect_err(name);
        assert_eq!(e.arg(), Some(arg), "{name}: {e}");
        assert!(out.iter().all(|x| x.is_nan()));
    }
}

#[test]
fn prefill_rejects_bad_arguments() {
    let fx = fixture();
    let (hq, d) = (4, 16);
    let q = vec![0.1f32; 5 * hq * d];
    let qo = [0u32, 4, 5];
    let ok = PrefillArgs {
        q: &q,
        qo_indptr: &qo,
        num_qo_heads: hq,
        kv: fx.view(),
        page_table: &fx.page_table,
        new_kv: None,
        opts: AttentionOptions::default(),
    };
    prefill_fails(&PrefillArgs { qo_indptr: &[0, 5], ..ok }, q.len(), "qo_indptr");
    prefill_fails(&PrefillArgs { qo_indptr: &[1, 4, 5], ..ok }, q.len(), "qo_indptr");
    prefill_fails(&PrefillArgs { qo_indptr: &[0, 4, 3], ..ok }, q.len(), "qo_indptr");
    // 5 new tokens for a sequence that holds 3.
    prefill_fails(&PrefillArgs { q: &q[..0], qo_indptr: &[0, 0, 0], ..ok }, 0, "q");
    let q9 = vec![0.1f32; 9 * hq * d];
    prefill_fails(&PrefillArgs { q: &q9, qo_indptr: &[0, 4, 9], ..ok }, q9.len(), "qo_indptr");
    prefill_fails(&PrefillArgs { q: &q[hq..], ..ok }, q.len(), "q");
    let nk = vec![0f32; 5 * 2 * d];
    let ragged = PrefillArgs { new_kv: Some(RaggedKv { k: &nk[1..], v: &nk }), ..ok };
    prefill_fails(&ragged, q.len(), "new_kv.k");
}

#[test]
fn append_rejects_bad_arguments_and_leaves_the_pool_untouched() {
    let (hq, hkv, d, bs) = (4, 2, 16, 4);
    let layout = KvLayout::new(3, bs, hkv, d).unwrap();
    let rope = Rope::new(RopeConfig::new(RopeStyle::HalfSplit, 10000.0), d, 100).unwrap();
    let rope_other = Rope::new(RopeConfig::new(RopeStyle::HalfSplit, 10000.0), 32, 100).unwrap();
    let k = vec![0.5f32; 3 * hkv * d];
    let v = vec![0.25f32; 3 * hkv * d];
    let cases: Vec<AppendCase> = vec![
        ("slots", vec![0, 1, 2], vec![Some(0), Some(12), Some(1)], 3, Some(&rope)),
        ("slots", vec![0, 1, 2], vec![Some(4), Some(5), Some(4)], 3, None),
        ("slots", vec![0, 1, 2], vec![Some(4), Some(5)], 3, None),
        ("positions", vec![0, 100, 2], vec![Some(0), Some(1), Some(2)], 3, Some(&rope)),
        ("positions", vec![], vec![], 0, None),
        ("rope", vec![0, 1, 2], vec![Some(0), Some(1), Some(2)], 3, Some(&rope_other)),
        ("q", vec![0, 1, 2], vec![Some(0), Some(1), Some(2)], 2, None),
        ("k", vec![0, 1], vec![Some(0), Some(1)], 2, None),
    ];
    for (arg, positions, slots, q_tokens, r) in cases {
        for use_ref in [true, false] {
            let mut pk = vec![f32::NAN; layout.elems()];
            let mut pv = vec![f32::NAN; layout.elems()];
            let mut q = vec![1.0f32; q_tokens * hq * d];
            let args =
                AppendArgs { q: &mut q, num_qo_heads: hq, k: &k, v: &v, positions: &positions, slots: &slots, rope: r };
            let mut cache = PagedKvMut::new(&mut pk, &mut pv, layout).unwrap();
            let e = if use_ref { reference::append_kv(args, &mut cache) } else { cpu::append_kv(args, &mut cache) }
                .unwrap_err();
            assert_eq!(e.arg(), Some(arg), "{e}");
            assert!(pk.iter().chain(&pv).all(|x| x.is_nan()), "pool written before failing ({arg})");
            assert!(q.iter().all(|x| *x == 1.0), "q rotated before failing ({arg})");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    /// Arbitrary (often invalid) page tables and sizes: every backend returns Ok or a typed error,
    /// never panics or reads outside the pool; when the reference accepts, the CPU kernel agrees.
    #[test]
    fn random_tables_never_panic(
        num_blocks in 0usize..6,
        bs in 1usize..5,
        lists in prop::collection::vec(prop::collection::vec(0u32..7, 0..7), 1..4),
        lens in prop::collection::vec(0usize..9, 1..4),
        hq in 1usize..5,
        q_extra in 0usize..2,
    ) {
        let (hkv, d) = (1, 8);
        let Ok(layout) = KvLayout::new(num_blocks, bs, hkv, d) else { return Ok(()) };
        let mut rng = Rng::new(num_blocks as u64 * 31 + bs as u64);
        let k: Vec<f32> = rng.fill(layout.elems(), 1.0);
        let v: Vec<f32> = rng.fill(layout.elems(), 1.0);
        let n = lists.len().min(lens.len());
        let Ok(table) = PageTable::from_lists(&lists[..n], &lens[..n], bs) else { return Ok(()) };
        let q = vec![0.3f32; n * hq * d + q_extra];
        let a = DecodeArgs { q: &q, num_qo_heads: hq, kv: PagedKv::new(&k, &v, layout).unwrap(), page_table: &table, opts: AttentionOptions::default() };
        let mut want = vec![f32::NAN; n * hq * d];
        let r = reference::paged_decode(&a, &mut want);
        let plan = DecodePlan::new(&table, hkv, &a.opts, 2);
        let mut got = vec![f32::NAN; n * hq * d];
        let c = cpu::paged_decode(&a, &plan, &mut got);
        let mut g2 = vec![f32::NAN; n * hq * d];
        let g = gather::paged_decode(&a, &mut g2);
        prop_assert_eq!(r.is_ok(), c.is_ok());
        prop_assert_eq!(r.is_ok(), g.is_ok());
        if r.is_ok() {
            for (x, y) in got.iter().zip(&want).chain(g2.iter().zip(&want)) {
                prop_assert!((x - y).abs() < 1e-5);
            }
        } else {
            prop_assert_eq!(r.unwrap_err().arg(), c.unwrap_err().arg());
        }
    }
}
