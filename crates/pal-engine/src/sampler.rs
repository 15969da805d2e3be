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
///
/// Cost: sorting the whole vocabulary (49k for SmolLM2) took ~2.3 ms per token, more than a
/// decode step. Now nothing is sorted unless top-k or top-p asks for an order, and then only as
/// far as they look ([`BestFirst`]); weights come from a vectorisable `exp` ([`weight`]) and the
/// draw without an order walks the vocabulary in index order (the same distribution).
pub fn sample(logits: &[f32], params: &SamplingParams, history: &[u32], rng: &mut impl Rng) -> u32 {
    let penalised =
        params.repetition_penalty != 1.0 || params.frequency_penalty != 0.0 || params.presence_penalty != 0.0;
    if params.temperature == 0.0 && !penalised {
        return argmax(logits);
    }
    let mut l = logits.to_vec();
    apply_penalties(&mut l, params, history);
    let top = max_logit(&l);
    if params.temperature == 0.0 || !top.is_finite() {
        // Greedy, or no finite best logit to measure probabilities against (all NaN / -inf, or
        // a +inf): the arg-max.
        return argmax(&l);
    }
    // min-p keeps the tokens whose probability is at least `min_p` times the best one's.
    let cut = if params.min_p > 0.0 { top + params.min_p.ln() } else { f32::NEG_INFINITY };
    let inv_t = 1.0 / params.temperature;
    if params.top_k == 0 && params.top_p >= 1.0 {
        return draw_unordered(&l, top, cut, inv_t, rng);
    }
    // Top-k and top-p keep a best-first prefix. Only logits within `delta` of the best can be in
    // it once those alone number `top_k`, or (top-p alone) carry `top_p` of the probability:
    // find such a delta (doubling from 1), then order just those.
    // The T=1 weights, for top-p only (top-k counts).
    let w: Vec<f32> = if params.top_p < 1.0 { l.iter().map(|&v| weight(v - top, 1.0)).collect() } else { vec![] };
    let z_all = if params.top_p < 1.0 { mass_above(&l, &w, f32::NEG_INFINITY) } else { 0.0 };
    let enough = |thr: f32| {
        if params.top_k > 0 {
            l.iter().filter(|&&v| v >= thr).count() >= params.top_k
        } else {
            mass_above(&l, &w, thr) >= params.top_p as f64 * z_all * 1.000_01
        }
    };
    // Double the distance until enough, then halve the overshoot a few times (each test is a
    // vectorised pass; the candidates to order shrink to about what is kept).
    let mut delta = 1.0f32;
    while delta <= 128.0 && !enough(top - delta) {
        delta *= 2.0;
    }
    // Past 128 the weights are below e^-128 at T=1: take everything.
    let thr = if delta > 128.0 {
        f32::NEG_INFINITY
    } else {
        let (mut lo, mut hi) = (if delta > 1.0 { delta / 2.0 } else { 0.0 }, delta);
        for _ in 0..BISECT {
            let mid = 0.5 * (lo + hi);
            if enough(top - mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        top - hi
    };
    let mut cand: Vec<(u32, f32)> =
        l.iter().enumerate().filter(|(_, &v)| v >= thr).map(|(i, &v)| (i as u32, v)).collect();
    let everything = thr == f32::NEG_INFINITY;
    let mut best = BestFirst::new(&mut cand);
    // The kept candidates are always the best `k`.
    let mut k = best.len();
    if params.top_k > 0 && params.top_k < k {
        k = params.top_k;
    }
    if params.top_p < 1.0 {
        // Normalised over the top-k set (all of it is among the candidates), else over everything.
        let z = if params.top_k > 0 { best.sum_best(k, top, 1.0) } else { z_all };
        let mut acc = 0.0;
        for i in 0..k {
            acc += weight(best.get(i).1 - top, 1.0) as f64 / z;
            if acc >= params.top_p as f64 {
                k = i + 1;
                break;
            }
        }
    }
    if params.min_p > 0.0 {
        // A prefix again; the best candidate always stays (its weight is 1 >= min_p).
        let mut n = 1;
        while n < k && best.get(n).1 >= cut {
            n += 1;
        }
        k = n;
    }
    if everything && k == best.len() {
        return draw_unordered(&l, top, cut, inv_t, rng);
    }
    let z = best.sum_best(k, top, inv_t);
    let mut u = rng.gen::<f64>() * z;
    for i in 0..k {
        let (id, v) = best.get(i);
        let w = weight(v - top, inv_t) as f64;
        if u < w {
            return id;
        }
        u -= w;
    }
    best.get(k - 1).0
}

/// Halvings of the candidate distance after the doubling overshoots (each a pass over the
/// vocabulary; the last ones shrink the candidates to order by less than they cost).
const BISECT: usize = 2;

/// `exp(x * inv_t)` for `x <= 0` (a logit minus the best one), 0 for NaN: Cephes' degree-5
/// polynomial after a range reduction by ln 2, branch-free so that loops over logits
/// vectorise; within a few ulp of `f32::exp` down to its underflow (-87.3 is clamped there).
#[inline(always)]
pub fn weight(x: f32, inv_t: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer (half to even)
    let y = x * inv_t;
    let valid = !y.is_nan();
    let y = if valid { y.clamp(-87.3, 0.0) } else { -87.3 };
    let n = (y * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = y - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p * r + c;
    }
    let e = (p * r) * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    if valid {
        e * scale
    } else {
        0.0
    }
}

/// `sum weight(v - top, inv_t)` over the logits at or above `cut` (in f64 over lanes of f32).
fn sum_weights(l: &[f32], top: f32, cut: f32, inv_t: f32) -> f64 {
    let mut lanes = [0f32; 8];
    let mut total = 0f64;
    for block in l.chunks(256) {
        for c in block.chunks(8) {
            for (a, &v) in lanes.iter_mut().zip(c) {
                *a += if v >= cut { weight(v - top, inv_t) } else { 0.0 };
            }
        }
        // Flush to f64 every 256 logits: f32 sums of at most 32 weights <= 1 lose nothing that matters.
        total += lanes.iter().map(|&x| x as f64).sum::<f64>();
        lanes = [0.0; 8];
    }
    total
}

/// A draw over the logits at or above `cut` with probabilities `weight(v - top, inv_t) / z`,
/// walking them in index order (blocks of 256 first, by their sums).
fn draw_unordered(l: &[f32], top: f32, cut: f32, inv_t: f32, rng: &mut impl Rng) -> u32 {
    let block_sum = |b: &[f32]| sum_weights(b, top, cut, inv_t);
    let sums: Vec<f64> = l.chunks(256).map(block_sum).collect();
    let z: f64 = sums.iter().sum();
    let mut u = rng.gen::<f64>() * z;
    let mut last = None;
    for (bi, (&s, block)) in sums.iter().zip(l.chunks(256)).enumerate() {
        if s == 0.0 {
            continue;
        }
        let mut in_block = None;
        if u < s {
            for (i, &v) in block.iter().enumerate() {
                if v >= cut {
                    let w = weight(v - top, inv_t) as f64;
                    if u < w {
                        return (bi * 256 + i) as u32;
                    }
                    u -= w;
                    in_block = Some(bi * 256 + i);
                }
            }
            // u fell within this block's sum but past its last weight by rounding.
            if let Some(i) = in_block {
                return i as u32;
            }
        }
        u -= s;
        last = block.iter().rposition(|&v| v >= cut).map(|i| bi * 256 + i).or(last);
    }
    // Rounding left u at the very end: the last token in the set.
    last.map_or_else(|| argmax(l), |i| i as u32)
}

/// `sum w[i]` over the logits `l[i] >= thr` (f32 lanes per block of 256, f64 across blocks).
fn mass_above(l: &[f32], w: &[f32], thr: f32) -> f64 {
    l.chunks(256)
        .zip(w.chunks(256))
        .map(|(lb, wb)| {
            let mut lanes = [0f32; 8];
            for (lc, wc) in lb.chunks(8).zip(wb.chunks(8)) {
                for ((a, &v), &x) in lanes.iter_mut().zip(lc).zip(wc) {
                    *a += if v >= thr { x } else { 0.0 };
                }
            }
            lanes.iter().map(|&x| x as f64).sum::<f64>()
        })
        .sum()
}

/// The largest logit, NaN ignored (-inf when there is none).
fn max_logit(l: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = l.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Candidates `(token, logit)` visited in descending logit order (ties: lower token first), with
/// only the visited prefix sorted: each extension selects the next best block (linear time) and
/// sorts just that block, blocks growing four-fold. The order is exactly a full sort's.
pub struct BestFirst<'a> {
    cand: &'a mut [(u32, f32)],
    /// `cand[..sorted]` is in final order and no later candidate is better.
    sorted: usize,
}

impl<'a> BestFirst<'a> {
    pub fn new(cand: &'a mut [(u32, f32)]) -> Self {
        BestFirst { cand, sorted: 0 }
    }

    pub fn len(&self) -> usize {
        self.cand.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cand.is_empty()
    }

    fn order(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
        b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
    }

    /// Sort at least the best `n` candidates into place.
    fn extend_to(&mut self, n: usize) {
        let len = self.cand.len();
        while self.sorted < n.min(len) {
            let from = self.sorted;
            let to = (from.max(16) * 4).max(n).min(len);
            let rest = &mut self.cand[from..];
            if to < len {
                rest.select_nth_unstable_by(to - from - 1, Self::order);
            }
            rest[..to - from].sort_unstable_by(Self::order);
            self.sorted = to;
        }
    }

    /// The `i`-th best candidate.
    pub fn get(&mut self, i: usize) -> (u32, f32) {
        self.extend_to(i + 1);
        self.cand[i]
    }

    /// `sum weight(logit - top, inv_t)` over the best `k` candidates (sorted into place first).
    pub fn sum_best(&mut self, k: usize, top: f32, inv_t: f32) -> f64 {
        self.extend_to(k);
        self.cand[..k.min(self.cand.len())].iter().map(|c| weight(c.1 - top, inv_t) as f64).sum()
    }
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

/// Index of the largest logit (the first one on ties; NaN never wins; 0 when nothing beats
/// -inf). The maximum is found with independent lanes (vectorised; a branchy single pass took
/// ~35 us over SmolLM2's 49k logits, 3% of a batch-16 decode step), then its first position.
pub fn argmax(l: &[f32]) -> u32 {
    const LANES: usize = 16;
    let top = max_logit(l);
    if top == f32::NEG_INFINITY {
        return 0;
    }
    // First block holding the maximum (a vectorised test per block), then its position there.
    let at = l.chunks(LANES).position(|c| c.iter().fold(false, |f, &v| f | (v == top))).unwrap_or(0);
    (at * LANES + l[at * LANES..].iter().position(|&v| v == top).unwrap_or(0)) as u32
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
