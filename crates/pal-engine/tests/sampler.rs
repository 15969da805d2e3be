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
