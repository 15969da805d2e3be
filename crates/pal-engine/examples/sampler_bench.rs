//! Time of one `sample` call on a 49,152-token vocabulary (SmolLM2's) for the common settings,
//! on a peaked and on a flat distribution: `cargo run --release -p pal-engine --example
//! sampler_bench`. A development probe (the engine benchmark of record is `pal bench-model`).
use pal_engine::sampler::sample;
use pal_engine::SamplingParams;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    let n = 49_152;
    // Peaked: a language model's usual shape (a few strong candidates over a wide tail).
    let mut peaked: Vec<f32> = (0..n).map(|_| rng.gen_range(-8.0f32..2.0)).collect();
    for i in 0..20 {
        peaked[i * 997] = 8.0 + i as f32 * 0.3;
    }
    // Flat: logits within a few units of each other (high temperature, an unsure model).
    let flat: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    let settings = [
        ("temperature 0.8", SamplingParams { temperature: 0.8, ..Default::default() }),
        ("top-k 40", SamplingParams { temperature: 0.8, top_k: 40, ..Default::default() }),
        ("top-p 0.95", SamplingParams { temperature: 0.8, top_p: 0.95, ..Default::default() }),
        ("top-p 0.9 min-p 0.05", SamplingParams { temperature: 1.0, top_p: 0.9, min_p: 0.05, ..Default::default() }),
        ("min-p 0.1", SamplingParams { temperature: 1.0, min_p: 0.1, ..Default::default() }),
    ];
    // SB_ONLY=text times only the settings whose name contains it (for profilers).
    let only = std::env::var("SB_ONLY").unwrap_or_default();
    for (what, logits) in [("peaked", &peaked), ("flat", &flat)] {
        for (name, p) in settings.iter().filter(|(n, _)| n.contains(&only)) {
            let mut best = f64::INFINITY;
            for _ in 0..if only.is_empty() { 200 } else { 5000 } {
                let t = Instant::now();
                std::hint::black_box(sample(logits, p, &[], &mut rng));
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("{what:>6} {name:<22} {:8.1} us", best * 1e6);
        }
    }
}
