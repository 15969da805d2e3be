//! `pal bench-model`: engine throughput on a real model: prefill tokens/s of one long prompt,
//! and decode tokens/s at each batch size (B different prompts decoding together, aggregate).

use crate::model_args::{engine, tokenizer, ModelArgs};
use pal_engine::SamplingParams;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sequences decoding together, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub batch: Vec<usize>,
    /// Tokens generated per sequence.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Length of the prompt timed for prefill.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Repetitions; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long)]
    pub json: bool,
}

const TOPICS: [&str; 16] = [
    "the ocean",
    "a robot",
    "mountains",
    "coffee",
    "the moon",
    "a library",
    "winter",
    "trains",
    "a garden",
    "music",
    "the desert",
    "bicycles",
    "rain",
    "a lighthouse",
    "chess",
    "bread",
];

pub fn run(a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if a.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    let mut e = engine(&a.model)?;
    let tok = tokenizer(&e)?;
    let threads = rayon::current_num_threads();
    let cpu = crate::device::cpu_name();
    let mut rows = Vec::new();
    // Prefill: one prompt of `prompt_tokens` tokens, timed through the engine's score path.
    let base = tok.encode(&"The quick brown fox jumps over the lazy dog. ".repeat(a.prompt_tokens / 8 + 1), true)?;
    let prompt: Vec<u32> = base.into_iter().take(a.prompt_tokens).collect();
    let mut best = f64::MAX;
    for _ in 0..a.reps {
        let t0 = Instant::now();
        e.score(&prompt)?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    rows.push(serde_json::json!({
        "bench": "prefill", "engine": "pal", "cpu": cpu, "threads": threads, "batch": 1,
        "tokens": prompt.len(), "ms": best * 1e3, "tok_s": prompt.len() as f64 / best,
    }));
    for &b in &a.batch {
        let mut best = (0f64, 0f64);
        for _ in 0..a.reps {
            let before = e.stats();
            for i in 0..b {
                let text = format!("Write a short story about {}.", TOPICS[i % TOPICS.len()]);
                let ids = tokenizer(&e)?.encode(&text, true)?;
                e.add_request(ids, SamplingParams { ignore_eos: true, ..SamplingParams::greedy(a.gen_tokens) })?;
            }
            e.run(|_, _| {})?;
            let st = e.stats();
            let secs = (st.decode_step_time - before.decode_step_time).as_secs_f64();
            let toks = (st.decode_step_tokens - before.decode_step_tokens) as f64;
            let steps = (st.decode_steps - before.decode_steps) as f64;
            let r = (toks / secs, secs / steps * 1e3);
            if r.0 > best.0 {
                best = r;
            }
        }
        let (tok_s, ms) = best;
        rows.push(serde_json::json!({
            "bench": "decode", "engine": "pal", "cpu": cpu, "threads": threads, "batch": b,
            "gen_tokens": a.gen_tokens, "tok_s": tok_s, "ms_per_step": ms, "tok_s_per_seq": tok_s / b as f64,
        }));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            println!("{r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
