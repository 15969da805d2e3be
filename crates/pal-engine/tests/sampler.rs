//! The sampler: greedy, seeded draws, truncations, penalties, validation.

use pal_engine::sampler::{argmax, sample};
use pal_engine::SamplingParams;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_logits(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-5.0..5.0)).collect()
}

#[test]
fn greedy_is_argmax_and_top_k_1_is_greedy() {
    let mut rng = StdRng::seed_from_u64(rand::random());
    for _ in 0..50 {
        let l = random_logits(&mut rng, 100);
        let g = sample(&l, &SamplingParams::greedy(1), &[], &mut rng);
        assert_eq!(g, argmax(&l));
        let p = SamplingParams { temperature: 0.8, top_k: 1, ..SamplingParams::default() };
        assert_eq!(sample(&l, &p, &[], &mut rng), g);
    }
    assert_eq!(argmax(&[f32::NAN, 1.0, 3.0, 3.0]), 2, "NaN never wins, first of ties");
}

#[test]
fn same_seed_same_tokens() {
    let mut r = StdRng::seed_from_u64(rand::random());
    let l = random_logits(&mut r, 1000);
    let p = SamplingParams { temperature: 1.0, ..SamplingParams::default() };
    let draw = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..20).map(|_| sample(&l, &p, &[], &mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}

#[test]
fn temperature_draws_follow_the_softmax() {
    let l = [0.0f32, 1.0, 2.0, -1.0];
    let t = 0.7f64;
    let z: f64 = l.iter().map(|&v| (v as f64 / t).exp()).sum();
    let want: Vec<f64> = l.iter().map(|&v| (v as f64 / t).exp() / z).collect();
    let p = SamplingParams { temperature: t as f32, ..SamplingParams::default() };
    let mut rng = StdRng::seed_from_u64(rand::random());
    let n = 40_000;
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[sample(&l, &p, &[], &mut rng) as usize] += 1;
    }
    for i in 0..4 {
        let got = counts[i] as f64 / n as f64;
        // 5 standard deviations of a binomial proportion.
        let sd = (want[i] * (1.0 - want[i]) / n as f64).sqrt();
        assert!((got - want[i]).abs() < 5.0 * sd + 1e-3, "token {i}: {got} vs {}", want[i]);
    }
}

#[test]
fn top_p_and_min_p_cut_the_tail() {
    // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps 2 tokens, min_p 0.2 keeps 2.
    let l = [3.0f32, 2.0, 1.0, -0.1];
    let mut rng = StdRng::seed_from_u64(rand::random());
    for p in [
        SamplingParams { temperature: 1.0, top_p: 0.8, ..SamplingParams::default() },
        SamplingParams { temperature: 1.0, min_p: 0.2, ..SamplingParams::default() },
    ] {
        let mut seen = [false; 4];
        for _ in 0..2000 {
            seen[sample(&l, &p, &[], &mut rng) as usize] = true;
        }
        assert_eq!(seen, [true, true, false, false], "{p:?}");
    }
}

#[test]
fn penalties_push_seen_tokens_down() {
    let l = [2.0f32, 1.9, -1.0];
    let mut rng = StdRng::seed_from_u64(0);
    let rep = SamplingParams { repetition_penalty: 1.5, ..SamplingParams::default() };
    assert_eq!(sample(&l, &rep, &[0], &mut rng), 1, "2.0/1.5 < 1.9");
    let pres = SamplingParams { presence_penalty: 0.5, ..SamplingParams::default() };
    assert_eq!(sample(&l, &pres, &[0], &mut rng), 1);
    let freq = SamplingParams { frequency_penalty: 0.06, ..SamplingParams::default() };
    assert_eq!(sample(&l, &freq, &[0], &mut rng), 0, "one occurrence: 2.0-0.06 > 1.9");
    assert_eq!(sample(&l, &freq, &[0, 0], &mut rng), 1, "two: 2.0-0.12 < 1.9");
    // Only the last `penalty_last_n` tokens count.
    let short = SamplingParams { presence_penalty: 0.5, penalty_last_n: 1, ..SamplingParams::default() };
    assert_eq!(sample(&l, &short, &[0, 2], &mut rng), 0);
}

#[test]
fn invalid_values_name_the_argument() {
    let cases: Vec<(SamplingParams, &str)> = vec![
        (SamplingParams { temperature: -1.0, ..Default::default() }, "temperature"),
        (SamplingParams { temperature: f32::NAN, ..Default::default() }, "temperature"),
        (SamplingParams { top_p: 0.0, ..Default::default() }, "top_p"),
        (SamplingParams { top_p: 1.5, ..Default::default() }, "top_p"),
        (SamplingParams { min_p: -0.1, ..Default::default() }, "min_p"),
        (SamplingParams { repetition_penalty: 0.0, ..Default::default() }, "repetition_penalty"),
        (SamplingParams { max_tokens: 0, ..Default::default() }, "max_tokens"),
        (SamplingParams { stop_strings: vec![String::new()], ..Default::default() }, "stop_strings"),
    ];
    for (p, arg) in cases {
        let e = p.validate().unwrap_err();
        assert!(matches!(&e, pal_engine::EngineError::InvalidArgument { arg: a, .. } if *a == arg), "{e}");
    }
    assert!(SamplingParams::default().validate().is_ok());
}

/// An RNG whose `gen::<f64>()` is a chosen `u` in [0, 1) (rand 0.8 takes the top 53 bits).
struct FixedU(u64);
impl rand::RngCore for FixedU {
    fn next_u32(&mut self) -> u32 {
        (self.0 >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        dest.fill(0);
        Ok(())
    }
}
fn fixed_u(u: f64) -> FixedU {
    FixedU(((u * (1u64 << 53) as f64) as u64) << 11)
}

/// The sampler's distribution as it was specified and first written: every non-NaN candidate
/// sorted (logit descending, lower id first), top-k, top-p (probabilities at T=1 over the
/// kept set), min-p (against the best), then softmax at the temperature, all in f64.
fn reference_distribution(l: &[f32], p: &SamplingParams) -> Vec<(u32, f64)> {
    let mut cand: Vec<(u32, f32)> =
        l.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(i, &v)| (i as u32, v)).collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 {
        cand.truncate(p.top_k);
    }
    let probs = |c: &[(u32, f32)], t: f64| -> Vec<f64> {
        let m = c[0].1 as f64;
        let e: Vec<f64> = c.iter().map(|&(_, v)| ((v as f64 - m) / t).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|x| x / z).collect()
    };
    if p.top_p < 1.0 {
        let pr = probs(&cand, 1.0);
        let mut acc = 0.0;
        let keep = pr.iter().position(|&x| {
            acc += x;
            acc >= p.top_p as f64
        });
        cand.truncate(keep.map_or(cand.len(), |i| i + 1));
    }
    if p.min_p > 0.0 {
        let pr = probs(&cand, 1.0);
        let floor = pr[0] * p.min_p as f64;
        let n = pr.iter().take_while(|&&x| x >= floor).count().max(1);
        cand.truncate(n);
    }
    let pr = probs(&cand, p.temperature as f64);
    cand.iter().map(|c| c.0).zip(pr).collect()
}

/// How far (in probability) the reference's running sum over the best-first T=1 probabilities is
/// from `top_p` at the edge of the top-p set: before its last token and with it.
fn top_p_margin(l: &[f32], top_p: f32) -> f64 {
    let mut v: Vec<f64> = l.iter().filter(|x| !x.is_nan()).map(|&x| x as f64).collect();
    v.sort_by(|a, b| b.total_cmp(a));
    let z: f64 = v.iter().map(|&x| (x - v[0]).exp()).sum();
    let mut acc = 0.0;
    for &x in &v {
        let next = acc + (x - v[0]).exp() / z;
        if next >= top_p as f64 {
            return (top_p as f64 - acc).min(next - top_p as f64);
        }
        acc = next;
    }
    f64::INFINITY
}

/// The fast sampler (ordered only where top-k / top-p need it, vectorised weights, a draw in
/// index order when nothing is truncated) against the reference distribution: for a fine grid
/// of uniform draws `u`, the share of the grid that lands on each token is its probability
/// (within the grid's resolution and the f32 weights' rounding). Deterministic: no sampling
/// noise. Random logits with ties, NaNs and -inf, over two blocks of 256, and every truncation.
#[test]
fn fast_sampler_has_the_reference_distribution() {
    let seed = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..64 {
        // The last four: flat and wide, top-p alone keeping thousands of tokens (it then finds
        // its set by mass buckets), two with only a few distinct values (ties at the edge of the
        // set). Their tokens are rarer (~1/10000), so the grid is finer and the slack smaller.
        let flat = case >= 60;
        let (draws, slack) = if flat { (20_000usize, 1e-6) } else { (4000, 1e-4) };
        let n = if flat { rng.gen_range(9000..11000) } else { rng.gen_range(2..600) };
        let mut l: Vec<f32> = (0..n)
            .map(|_| match (flat, case % 2) {
                (false, _) => rng.gen_range(-6.0f32..6.0).round() * rng.gen_range(0.5f32..1.0),
                (true, 0) => rng.gen_range(-2.0f32..2.0),
                (true, _) => (rng.gen_range(-2.0f32..2.0) * 4.0).round() / 4.0,
            })
            .collect();
        // Ties (the rounding above makes some), a NaN and a -inf now and then, one peak.
        if n > 3 && case % 3 == 0 {
            l[1] = f32::NAN;
            l[2] = f32::NEG_INFINITY;
        }
        let peak = rng.gen_range(0..n);
        l[peak] += if flat { 1.0 } else { rng.gen_range(0.0..8.0) };
        let p = if flat {
            SamplingParams {
                temperature: [1.7, 1.0, 2.0, 0.8][case % 4],
                top_p: [0.9, 0.97, 0.97, 0.9][case % 4],
                min_p: [0.0, 0.0, 0.0, 0.1][case % 4],
                ..SamplingParams::default()
            }
        } else {
            SamplingParams {
                temperature: [0.3, 0.8, 1.0, 1.7][case % 4],
                top_k: [0, 0, 1, 5, 40][case % 5],
                top_p: [1.0, 0.9, 0.5][case % 3],
                min_p: [0.0, 0.0, 0.05, 0.3][(case / 3) % 4],
                ..SamplingParams::default()
            }
        };
        // The sampler's top-p target carries f32 rounding (~1e-7 of the mass). Over thousands of
        // tokens that can move the edge by one token when the f64 reference's running sum lands
        // that close to top_p; such a draw of the logits is ambiguous, not wrong: skip it.
        if flat && top_p_margin(&l, p.top_p) < 3e-6 {
            continue;
        }
        let want = reference_distribution(&l, &p);
        let mut got = vec![0usize; n];
        for j in 0..draws {
            let t = sample(&l, &p, &[], &mut fixed_u((j as f64 + 0.5) / draws as f64)) as usize;
            got[t] += 1;
        }
        let mut wanted = vec![0f64; n];
        for &(id, pr) in &want {
            wanted[id as usize] = pr;
        }
        for i in 0..n {
            let share = got[i] as f64 / draws as f64;
            assert!(
                (share - wanted[i]).abs() <= 2.0 / draws as f64 + slack,
                "seed {seed} case {case} ({p:?}, n={n}): token {i} drawn {share}, probability {}",
                wanted[i]
            );
        }
    }
}

/// The vectorised arg-max equals the first index of the largest logit (`top2`'s answer) on
/// awkward lengths, ties, NaNs and infinities.
#[test]
fn argmax_is_the_first_largest() {
    use pal_engine::sampler::top2;
    let mut rng = StdRng::seed_from_u64(rand::random());
    for n in (1..70).chain([255, 256, 257, 49152]) {
        for _ in 0..5 {
            let mut l: Vec<f32> = (0..n).map(|_| rng.gen_range(-4i32..4) as f32).collect();
            if rng.gen_bool(0.3) {
                let i = rng.gen_range(0..n);
                l[i] = f32::NAN;
            }
            assert_eq!(argmax(&l), top2(&l).0, "{l:?}");
        }
    }
    assert_eq!(argmax(&[f32::NAN; 20]), 0);
    assert_eq!(argmax(&[f32::NEG_INFINITY; 20]), 0);
    let mut l = vec![0.0f32; 37];
    l[36] = f32::INFINITY;
    assert_eq!(argmax(&l), 36);
}

/// The sampler's vectorisable weight is `exp` to a few ulp, and 0 for NaN.
#[test]
fn weight_is_exp() {
    use pal_engine::sampler::weight;
    for i in 0..=87_000 {
        let x = -(i as f32) * 1e-3;
        let (got, want) = (weight(x, 1.0) as f64, (x as f64).exp());
        assert!((got - want).abs() <= 4e-7 * want, "exp({x}): {got} vs {want}");
    }
    assert_eq!(weight(f32::NAN, 1.0), 0.0);
    assert!((weight(-2.0, 0.5) as f64 - (-1f64).exp()).abs() < 1e-7, "x * inv_t");
}
