//! Token sampling: a pure function of the logits, the parameters, the tokens seen so far and a
//! seeded RNG. The chain follows llama.cpp's default order: penalties, top-k, top-p, min-p,
//! temperature, then a draw (or the arg-max when the temperature is 0).

use crate::{EngineError, Result};
use rand::Rng;
use std::collections::HashMap;

/// How to pick the next token and when to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (arg-max after penalties).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 = off.
    pub min_p: f32,
    /// CTRL-style: divide positive logits (multiply negative ones) of seen tokens; 1 = off.
    pub repetition_penalty: f32,
    /// Subtract `frequency_penalty * count` from the logit of each seen token; 0 = off.
    pub frequency_penalty: f32,
    /// Subtract `presence_penalty` once from each seen token; 0 = off.
    pub presence_penalty: f32,
    /// The penalties look at the last `penalty_last_n` tokens (prompt included).
    pub penalty_last_n: usize,
    pub seed: u64,
    pub max_tokens: usize,
    /// Extra stop tokens (the model's end-of-generation tokens stop unless `ignore_eos`).
    pub stop_token_ids: Vec<u32>,
    /// Generation stops when the text ends with one of these; the stop string is cut off.
    pub stop_strings: Vec<String>,
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
            max_tokens: 128,
            stop_token_ids: vec![],
            stop_strings: vec![],
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    pub fn greedy(max_tokens: usize) -> Self {
        SamplingParams { max_tokens, ..Self::default() }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |arg, reason: String| Err(EngineError::invalid(arg, reason));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", format!("{} must be finite and >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", format!("{} must be in [0, 1]", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty", format!("{} must be finite and > 0", self.repetition_penalty));
        }
        if !self.frequency_penalty.is_finite() || !self.presence_penalty.is_finite() {
            return bad("frequency_penalty", "penalties must be finite".into());
        }
        if self.max_tokens == 0 {
            return bad("max_tokens", "must be at least 1".into());
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return bad("stop_strings", "an empty stop string would stop at once".into());
        }
        Ok(())
    }
}

/// Pick the next token. `history` is every token so far (prompt and generated), for the
/// penalties. Invalid logits (NaN) never win.
pub fn sample(logits: &[f32], params: &SamplingParams, history: &[u32], rng: &mut impl Rng) -> u32 {
    let penalised =
        params.repetition_penalty != 1.0 || params.frequency_penalty != 0.0 || params.presence_penalty != 0.0;
    if params.temperature == 0.0 && !penalised {
        return argmax(logits);
    }
    let mut l = logits.to_vec();
    apply_penalties(&mut l, params, history);
    if params.temperature == 0.0 {
        return argmax(&l);
    }
    // Candidates sorted by logit, best first.
    let mut cand: Vec<(u32, f32)> =
        l.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(i, &v)| (i as u32, v)).collect();
    if cand.is_empty() {
        return 0;
    }
    cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if params.top_k > 0 {
        cand.truncate(params.top_k);
    }
    let probs = |c: &[(u32, f32)], t: f32| -> Vec<f64> {
        let m = c[0].1 as f64;
        let e: Vec<f64> = c.iter().map(|&(_, v)| ((v as f64 - m) / t as f64).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|x| x / z).collect()
    };
    if params.top_p < 1.0 {
        let p = probs(&cand, 1.0);
        let mut acc = 0.0;
        let keep = p.iter().position(|&x| {
            acc += x;
            acc >= params.top_p as f64
        });
        cand.truncate(keep.map_or(cand.len(), |i| i + 1));
    }
    if params.min_p > 0.0 {
        let p = probs(&cand, 1.0);
        let floor = p[0] * params.min_p as f64;
        let n = p.iter().take_while(|&&x| x >= floor).count().max(1);
        cand.truncate(n);
    }
    let p = probs(&cand, params.temperature);
    let mut u: f64 = rng.gen::<f64>();
    for (i, &pi) in p.iter().enumerate() {
        if u < pi {
            return cand[i].0;
        }
        u -= pi;
    }
    cand[cand.len() - 1].0
}

fn apply_penalties(l: &mut [f32], p: &SamplingParams, history: &[u32]) {
    if p.repetition_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0 {
        return;
    }
    let recent = &history[history.len().saturating_sub(p.penalty_last_n)..];
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for &t in recent {
        *counts.entry(t).or_default() += 1;
    }
    for (&t, &c) in &counts {
        let Some(v) = l.get_mut(t as usize) else { continue };
        if p.repetition_penalty != 1.0 {
            *v = if *v > 0.0 { *v / p.repetition_penalty } else { *v * p.repetition_penalty };
        }
        *v -= c as f32 * p.frequency_penalty + p.presence_penalty;
    }
}

/// Index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(l: &[f32]) -> u32 {
    top2(l).0
}

/// The largest logit's index, the largest and the second largest logit (NaN never counts):
/// scoring reports and margin checks.
pub fn top2(l: &[f32]) -> (u32, f32, f32) {
    let (mut i1, mut l1, mut l2) = (0usize, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (i, &v) in l.iter().enumerate() {
        if v > l1 {
            l2 = l1;
            l1 = v;
            i1 = i;
        } else if v > l2 {
            l2 = v;
        }
    }
    (i1 as u32, l1, l2)
}
