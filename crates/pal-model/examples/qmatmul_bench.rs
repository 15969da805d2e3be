//! Throughput of `QMatrix::matmul` on a model's own weights, for a few activation batch sizes:
//! `cargo run --release --example qmatmul_bench -- FILE.gguf [LAYER]` (threads: RAYON_NUM_THREADS).
//! Times q/k/v/o/gate/up/down of every layer (or one layer, cache-resident; `head`: the output
//! matrix; `QB_TYPE=Q6_K` keeps the matrices of one format) and prints GB/s of
//! weights read and GMAC/s, the best of 7 passes. A development probe, not a benchmark of record
//! (`pal bench-model` is that).
use pal_model::gguf::GgufFile;
use pal_model::QMatrix;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: qmatmul_bench FILE.gguf [LAYER]");
    let layer = args.next();
    let file = Arc::new(GgufFile::open_in_memory(&path, &mut |_, _| {}).expect("open"));
    let mats: Vec<QMatrix> = file
        .tensors()
        .iter()
        .filter(|t| match layer.as_deref() {
            // The output head (tied to the embedding table in SmolLM2: Q8_0).
            Some("head") => t.name == "output.weight" || t.name == "token_embd.weight",
            Some(l) => t.name.starts_with(&format!("blk.{l}.")) && t.name.ends_with(".weight") && t.dims.len() == 2,
            None => t.name.starts_with("blk.") && t.name.ends_with(".weight") && t.dims.len() == 2,
        })
        .filter(|t| std::env::var("QB_TYPE").map_or(true, |ty| t.dtype.name() == ty))
        .map(|t| QMatrix::new(file.clone(), t.clone()).expect("pack"))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().build().expect("pool");
    pool.install(|| {
        // QB_M=16,64 picks the activation row counts (default: all five).
        let ms: Vec<usize> = match std::env::var("QB_M") {
            Ok(v) => v.split(',').map(|s| s.trim().parse().expect("QB_M: comma-separated row counts")).collect(),
            Err(_) => vec![1, 2, 4, 16, 64],
        };
        for m in ms {
            let xs: Vec<Vec<f32>> = mats
                .iter()
                .map(|w| (0..m * w.cols()).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect())
                .collect();
            let mut outs: Vec<Vec<f32>> = mats.iter().map(|w| vec![0f32; m * w.rows()]).collect();
            let reps = (64 / m).max(1);
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t = Instant::now();
                for _ in 0..reps {
                    for ((w, x), out) in mats.iter().zip(&xs).zip(outs.iter_mut()) {
                        w.matmul(x, out).expect("matmul");
                    }
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            let bytes: usize = mats.iter().map(|w| w.bytes().len()).sum();
            let macs: usize = mats.iter().map(|w| w.rows() * w.cols() * m).sum();
            println!(
                "m={m:3}: {:7.3} ms/pass {:6.1} GB/s {:6.1} GMAC/s",
                best * 1e3,
                bytes as f64 / best / 1e9,
                macs as f64 / best / 1e9
            );
        }
    });
}
