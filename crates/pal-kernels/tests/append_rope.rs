//! `append_kv` with fused RoPE: the CPU kernel against the f64 reference for both pair layouts,
//! partial rotary dims, Llama-3 scaling and every dtype; plus RoPE facts checked by hand.

use pal_core::{bf16, f16, Element, KvLayout, PagedKvMut};
use pal_kernels::testing::{fresh_seed, ErrStats, Rng, Tolerance};
use pal_kernels::{cpu, reference, AppendArgs, Llama3Scaling, Rope, RopeConfig, RopeStyle};

fn configs() -> Vec<(RopeConfig, usize)> {
    let llama3 =
        Llama3Scaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8192.0 };
    vec![
        (RopeConfig::new(RopeStyle::AdjacentPairs, 10000.0), 64),
        (RopeConfig::new(RopeStyle::HalfSplit, 10000.0), 128),
        (RopeConfig { llama3: Some(llama3), ..RopeConfig::new(RopeStyle::HalfSplit, 500000.0) }, 128),
        (RopeConfig { rotary_dim: Some(32), ..RopeConfig::new(RopeStyle::AdjacentPairs, 10000.0) }, 80),
        (RopeConfig::new(RopeStyle::AdjacentPairs, 100000.0), 256),
    ]
}

fn check<T: Element>(dtype: pal_core::DType) {
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for (cfg, d) in configs() {
        let (hq, hkv, bs, blocks, t) = (8, 2, 16, 9, 37);
        let max_pos = 40000;
        let rope = Rope::new(cfg, d, max_pos).unwrap();
        let layout = KvLayout::new(blocks, bs, hkv, d).unwrap();
        let positions: Vec<u32> = (0..t).map(|_| rng.below(max_pos) as u32).collect();
        let mut all_slots: Vec<u32> = (0..layout.num_slots() as u32).collect();
        rng.shuffle(&mut all_slots);
        let slots: Vec<Option<u32>> = (0..t).map(|i| if i % 5 == 3 { None } else { Some(all_slots[i]) }).collect();
        let q0: Vec<T> = rng.fill(t * hq * d, 1.0);
        let k: Vec<T> = rng.fill(t * hkv * d, 1.0);
        let v: Vec<T> = rng.fill(t * hkv * d, 1.0);
        let mut results = Vec::new();
        for use_ref in [true, false] {
            let mut q = q0.clone();
            let mut pk = vec![T::poison(); layout.elems()];
            let mut pv = vec![T::poison(); layout.elems()];
            let args = AppendArgs {
                q: &mut q,
                num_qo_heads: hq,
                k: &k,
                v: &v,
                positions: &positions,
                slots: &slots,
                rope: Some(&rope),
            };
            let mut cache = PagedKvMut::new(&mut pk, &mut pv, layout).unwrap();
            if use_ref {
                reference::append_kv(args, &mut cache).unwrap();
            } else {
                cpu::append_kv(args, &mut cache).unwrap();
            }
            results.push((q, pk, pv));
        }
        let tol = Tolerance::for_dtype(dtype);
        let (r, c) = (&results[0], &results[1]);
        let nan_pattern = |x: &[T]| x.iter().map(|v| v.to_f64().is_nan()).collect::<Vec<_>>();
        assert_eq!(nan_pattern(&r.1), nan_pattern(&c.1), "same slots written (seed {seed})");
        let finite =
            |x: &[T]| x.iter().map(|v| if v.to_f64().is_nan() { T::from_f32(0.0) } else { *v }).collect::<Vec<_>>();
        for (name, a, b) in
            [("q", &r.0, &c.0), ("k", &finite(&r.1), &finite(&c.1)), ("v", &finite(&r.2), &finite(&c.2))]
        {
            let e = ErrStats::compare(b, a, &tol);
            assert!(e.passes(&tol), "{name} {cfg:?} d={d} {dtype}: {e:?} (seed {seed})");
        }
        // Padding tokens keep their q untouched.
        for (i, s) in slots.iter().enumerate() {
            if s.is_none() {
                assert_eq!(&c.0[i * hq * d..(i + 1) * hq * d], &q0[i * hq * d..(i + 1) * hq * d]);
            }
        }
    }
}

#[test]
fn fused_rope_append_matches_reference_f32() {
    check::<f32>(pal_core::DType::F32);
}
#[test]
fn fused_rope_append_matches_reference_f16() {
    check::<f16>(pal_core::DType::F16);
}
#[test]
fn fused_rope_append_matches_reference_bf16() {
    check::<bf16>(pal_core::DType::BF16);
}

#[test]
fn rope_by_hand() {
    // Position p rotates the first pair (frequency 1) by p radians; position 0 is the identity.
    for style in [RopeStyle::AdjacentPairs, RopeStyle::HalfSplit] {
        let d = 8;
        let rope = Rope::new(RopeConfig::new(style, 10000.0), d, 10).unwrap();
        let second = if style == RopeStyle::AdjacentPairs { 1 } else { d / 2 };
        for p in [0usize, 3] {
            let mut q = vec![0.0f32; d];
            q[0] = 1.0;
            let k = q.clone();
            let v = vec![0.0f32; d];
            let mut pk = vec![0.0f32; d];
            let mut pv = vec![0.0f32; d];
            let layout = KvLayout::new(1, 1, 1, d).unwrap();
            let args = AppendArgs {
                q: &mut q,
                num_qo_heads: 1,
                k: &k,
                v: &v,
                positions: &[p as u32],
                slots: &[Some(0)],
                rope: Some(&rope),
            };
            cpu::append_kv(args, &mut PagedKvMut::new(&mut pk, &mut pv, layout).unwrap()).unwrap();
            for x in [&q, &pk] {
                assert!((x[0] - (p as f32).cos()).abs() < 1e-6);
                assert!((x[second] - (p as f32).sin()).abs() < 1e-6);
                let norm: f32 = x.iter().map(|v| v * v).sum();
                assert!((norm - 1.0).abs() < 1e-6);
            }
        }
    }
}
