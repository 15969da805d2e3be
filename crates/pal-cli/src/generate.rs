//! `pal generate`: text from one prompt (streamed) or many (one continuous batch).

use crate::model_args::{engine, tokenizer, ModelArgs};
use pal_engine::{Engine, Event, FinishReason, Output, SamplingParams};
use pal_model::{ChatMessage, TextStream};
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (raw text, or the user message with --chat).
    #[arg(long, conflicts_with = "prompts_file")]
    pub prompt: Option<String>,
    /// A file with one prompt per line, run together as one continuous batch.
    #[arg(long)]
    pub prompts_file: Option<std::path::PathBuf>,
    /// Wrap each prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Subtracted once per earlier occurrence of a token (negative values favour repeats).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Subtracted once from every token seen before (negative values favour repeats).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the text contains this (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// One JSON object per prompt instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    fn params(&self, seed_offset: u64) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed.wrapping_add(seed_offset),
            max_tokens: self.max_tokens,
            stop_strings: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            ..SamplingParams::default()
        }
    }
}

fn prompt_ids(e: &Engine, a: &Args, text: &str) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
    let tok = tokenizer(e)?;
    if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.push(ChatMessage::new("user", text));
        let rendered = tok.apply_chat_template(&msgs, true)?;
        // The template writes its own BOS when it wants one.
        Ok(tok.encode(&rendered, false)?)
    } else {
        Ok(tok.encode(text, true)?)
    }
}

fn json_row(o: &Output, prompt: &str) -> serde_json::Value {
    serde_json::json!({
        "prompt": prompt,
        "prompt_ids": o.prompt_ids,
        "gen_ids": o.gen_ids,
        "text": o.text,
        "finish_reason": o.finish.map(|f| f.as_str()),
        "cached_prompt_tokens": o.cached_prompt_tokens,
        "preemptions": o.preemptions,
        "prefill_tok_s": o.prefill_tok_s,
        "decode_tok_s": o.decode_tok_s,
    })
}

pub fn run(a: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let prompts: Vec<String> = match (&a.prompt, &a.prompts_file) {
        (Some(p), None) => vec![p.clone()],
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("--prompts-file {}: {e}", f.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.replace("\\n", "\n"))
            .collect(),
        _ => return Err("give --prompt TEXT or --prompts-file FILE".into()),
    };
    if prompts.is_empty() {
        return Err("--prompts-file has no prompts".into());
    }
    let mut e = engine(&a.model)?;
    let mut ids = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let pi = prompt_ids(&e, a, p)?;
        ids.push(e.add_request(pi, a.params(i as u64)).map_err(|err| format!("prompt {}: {err}", i + 1))?);
    }
    let stream = prompts.len() == 1 && !a.json;
    let t0 = Instant::now();
    let mut printed = 0usize;
    // Hold back as many bytes as the longest stop string, so that a stop string is never shown.
    let hold = a.stop.iter().map(String::len).max().unwrap_or(0);
    // The text decoded a few tokens at a time (an incomplete UTF-8 tail is held back).
    let mut shown = TextStream::new();
    let outs = e.run(|eng, ev| {
        if !stream {
            return;
        }
        if let Event::Token { id, .. } = ev {
            if let (Some(gen), Some(tok)) = (eng.generated(*id), eng.tokenizer()) {
                if let Ok(Some(_)) = shown.update(tok, gen, true) {
                    let text = shown.text();
                    let mut upto = text.len().saturating_sub(hold);
                    while !text.is_char_boundary(upto) {
                        upto -= 1;
                    }
                    if upto > printed && text.is_char_boundary(printed) {
                        print!("{}", &text[printed..upto]);
                        printed = upto;
                        let _ = std::io::stdout().flush();
                    }
                }
            }
        }
    })?;
    let wall = t0.elapsed().as_secs_f64();
    if stream {
        // The held-back tail, up to the stop string when one matched.
        let text = outs[0].text.as_deref().unwrap_or("");
        if text.len() > printed && text.is_char_boundary(printed) {
            print!("{}", &text[printed..]);
        }
        println!();
    }
    for (o, p) in outs.iter().zip(&prompts) {
        if a.json {
            println!("{}", json_row(o, p));
        } else if !stream {
            println!("--- {}\n{}", p, o.text.as_deref().unwrap_or(""));
        }
    }
    let st = e.stats();
    let gen: usize = outs.iter().map(|o| o.gen_ids.len()).sum();
    if outs.len() == 1 {
        let o = &outs[0];
        eprintln!(
            "prefill {} tokens at {:.1} tok/s, decode {} tokens at {:.1} tok/s ({})",
            o.prompt_ids.len() - o.cached_prompt_tokens,
            o.prefill_tok_s,
            o.gen_ids.len(),
            o.decode_tok_s,
            o.finish.map_or("running", |f| f.as_str())
        );
    } else {
        eprintln!(
            "{} prompts, {} prefill + {} generated tokens in {wall:.2} s: {:.1} generated tok/s aggregate, {} steps, {} preemptions, prefix-cache hit rate {:.0}%",
            outs.len(),
            st.prefill_tokens,
            gen,
            gen as f64 / wall,
            st.steps,
            st.preemptions,
            100.0 * e.cache_stats().hit_rate()
        );
    }
    let broken = outs.iter().filter(|o| o.finish == Some(FinishReason::NonFiniteLogits)).count();
    if broken > 0 {
        return Err(format!(
            "the model gave {broken} of {} prompts no finite logits (NaN or infinite): broken weights or an overflow",
            outs.len()
        )
        .into());
    }
    Ok(ExitCode::SUCCESS)
}
