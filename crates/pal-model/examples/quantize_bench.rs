//! Time of the per-step helpers that run between the parallel products at decode: activation
//! rounding (`quantize_acts`), RMSNorm and SwiGLU, on one thread, for `m` rows (default 16) of
//! SmolLM2's widths: `cargo run --release -p pal-model --example quantize_bench -- [M]`.
use pal_model::packed::{quantize_acts, ActBlock};
use std::time::Instant;

fn best_of<F: FnMut()>(mut f: F) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..2000 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best * 1e6
}

fn main() {
    let m: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    for k in [576usize, 1536] {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let mut acts: Vec<ActBlock> = Vec::new();
        let q = best_of(|| quantize_acts(std::hint::black_box(&x), &mut acts));
        let w = vec![1.0f32; k];
        let mut out = vec![0f32; m * k];
        let n = best_of(|| pal_model::rms_norm(std::hint::black_box(&x), &w, 1e-5, &mut out));
        let mut g = x.clone();
        let s = best_of(|| pal_model::swiglu(std::hint::black_box(&mut g), &x));
        println!("m={m} k={k}: quantize_acts {q:.2} us, rms_norm {n:.2} us, swiglu {s:.2} us");
    }
}
