//! `pal score`: teacher-forced evaluation of a text: perplexity and per-position predictions.

use crate::model_args::{engine, tokenizer, ModelArgs};
use pal_engine::sampler::top2;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to evaluate (BOS is added when the model wants it).
    #[arg(long)]
    pub text: String,
    /// ids, per-position top-1 id, top-1 and top-2 logits, log-prob of the actual next token, ppl.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut e = engine(&a.model)?;
    let ids = tokenizer(&e)?.encode(&a.text, true)?;
    if ids.len() < 2 {
        return Err(format!("--text has {} token(s); perplexity needs at least 2", ids.len()).into());
    }
    let vocab = e.model().config.vocab_size;
    let logits = e.score(&ids)?;
    let mut rows = Vec::new();
    let mut nll = 0f64;
    for i in 0..ids.len() - 1 {
        let r = &logits[i * vocab..(i + 1) * vocab];
        let (top1, l1, l2) = top2(r);
        let lse = l1 as f64 + r.iter().map(|&v| ((v - l1) as f64).exp()).sum::<f64>().ln();
        let lp = r[ids[i + 1] as usize] as f64 - lse;
        nll -= lp;
        rows.push(serde_json::json!({"pos": i, "top1": top1, "top1_logit": l1, "top2_logit": l2, "next": ids[i + 1], "logprob_next": lp}));
    }
    let ppl = (nll / (ids.len() - 1) as f64).exp();
    if a.json {
        println!("{}", serde_json::json!({"ids": ids, "positions": rows, "ppl": ppl}));
    } else {
        println!("{} tokens, perplexity {ppl:.3}", ids.len());
    }
    Ok(ExitCode::SUCCESS)
}
