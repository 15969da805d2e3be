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
/// far as they look ([`BestFirst`]); top-p alone over thousands of tokens (a flat distribution)
/// orders only its boundary ([`top_p_edge`]); weights come from a vectorisable `exp`
/// ([`weight`]) and the draw without an order walks the vocabulary in index order (the same
/// distribution).
pub fn sample(logits: &[f32], params: &SamplingParams, history: &[u32], rng: &mut impl Rng) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `sample_avx2` is compiled for.
        return unsafe { sample_avx2(logits, params, history, rng) };
    }
    sample_inlined(logits, params, history, rng)
}

/// [`sample`] compiled for AVX2 and FMA. The workspace builds for baseline x86-64, where the
/// loops over the vocabulary (the `exp` of every logit above all) vectorise four lanes wide
/// (SSE2); inlined here they take eight. The results do not change: Rust does not contract
/// `a * b + c` into an FMA, and every lane keeps its order of additions. On the dev VM (49k
/// logits, `sampler_bench`): a temperature draw 136 -> 59 us, of which `n as i32` in [`weight`]
/// (a saturating conversion, which does not vectorise) was a third.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sample_avx2(logits: &[f32], params: &SamplingParams, history: &[u32], rng: &mut impl Rng) -> u32 {
    sample_inlined(logits, params, history, rng)
}

#[inline(always)]
fn sample_inlined(logits: &[f32], params: &SamplingParams, history: &[u32], rng: &mut impl Rng) -> u32 {
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
        return draw_unordered(&l, top, cut, inv_t, (&[], 0.0), rng);
    }
    // Top-k and top-p keep a best-first prefix. Only logits within `delta` of the best can be in
    // it once those alone number `top_k`, or (top-p alone) carry `top_p` of the probability:
    // find such a delta (doubling from 1), then order just those.
    // The T=1 weights, for top-p only (top-k counts).
    let mut w = vec![];
    if params.top_p < 1.0 {
        w.resize(l.len(), 0.0);
        for (x, &v) in w.iter_mut().zip(&l) {
            *x = weight(v - top, 1.0);
        }
    }
    let z_all = if params.top_p < 1.0 { mass_above(&l, &w, f32::NEG_INFINITY) } else { 0.0 };
    // (A function, not a closure: closures do not inline into `sample_avx2`.)
    #[inline(always)]
    fn enough(l: &[f32], w: &[f32], params: &SamplingParams, z_all: f64, thr: f32) -> bool {
        if params.top_k > 0 {
            count_above(l, thr) >= params.top_k
        } else {
            mass_above(l, w, thr) >= params.top_p as f64 * z_all * 1.000_01
        }
    }
    // Double the distance until enough, then halve the overshoot a few times (each test is a
    // vectorised pass; the candidates to order shrink to about what is kept).
    let mut delta = 1.0f32;
    while delta <= 128.0 && !enough(&l, &w, params, z_all, top - delta) {
        delta *= 2.0;
    }
    // Past 128 the weights are below e^-128 at T=1: take everything.
    let thr = if delta > 128.0 {
        f32::NEG_INFINITY
    } else {
        let (mut lo, mut hi) = (if delta > 1.0 { delta / 2.0 } else { 0.0 }, delta);
        for _ in 0..BISECT {
            let mid = 0.5 * (lo + hi);
            if enough(&l, &w, params, z_all, top - mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        top - hi
    };
    let everything = thr == f32::NEG_INFINITY;
    if params.top_k == 0 && !everything && count_above(&l, thr) > BUCKETS_FROM {
        // Top-p alone: its set is every logit better than its last token's, and that token's
        // ties up to it (lower token first); min-p then keeps those at or above `cut`. Drawn
        // without ordering the set.
        let (edge, edge_id) = top_p_edge(&l, &w, top, thr, params.top_p as f64 * z_all);
        if cut > edge {
            return draw_unordered(&l, top, cut, inv_t, (&[], 0.0), rng);
        }
        let mut ties = Vec::new();
        for (i, &v) in l[..=edge_id as usize].iter().enumerate() {
            if v == edge {
                ties.push(i as u32);
            }
        }
        return draw_unordered(&l, top, edge.next_up(), inv_t, (&ties, weight(edge - top, inv_t) as f64), rng);
    }
    let mut cand: Vec<(u32, f32)> =
        l.iter().enumerate().filter(|(_, &v)| v >= thr).map(|(i, &v)| (i as u32, v)).collect();
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
        return draw_unordered(&l, top, cut, inv_t, (&[], 0.0), rng);
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

/// Buckets of [`top_p_edge`].
const MASS_BUCKETS: usize = 2048;

/// Top-p alone takes [`top_p_edge`] from this many candidates on; below, ordering them costs
/// less than the bucket passes over the vocabulary.
const BUCKETS_FROM: usize = 4096;

/// How many logits are `>= thr` (a vectorised count).
#[inline(always)]
fn count_above(l: &[f32], thr: f32) -> usize {
    l.iter().filter(|&&v| v >= thr).count()
}

/// The last token of top-p's set, `(logit, id)`: the best-first prefix (descending logit, lower
/// token first on ties) of the logits `>= thr` (finite; the set lies among them) whose T=1
/// weights `w` first reach `target`. On a flat distribution that prefix is most of the
/// vocabulary, and ordering it took 2.5 ms per token (49k logits). Instead the logits go into
/// buckets of equal width from the best down (a monotone map: a better bucket holds only better
/// logits), whose masses add up to the boundary bucket; only that bucket is ordered.
#[inline(always)]
fn top_p_edge(l: &[f32], w: &[f32], top: f32, thr: f32, target: f64) -> (f32, u32) {
    const LAST: f32 = (MASS_BUCKETS - 1) as f32;
    let scale = LAST / (top - thr).max(f32::MIN_POSITIVE);
    // Every logit's bucket, `MASS_BUCKETS` for those below `thr` (and NaN), in a vectorised pass.
    let mut bucket = vec![0u16; l.len()];
    for (b, &v) in bucket.iter_mut().zip(l) {
        let keep = v >= thr;
        // In [0, LAST] and finite: `top` is the largest logit and the others become `top`.
        let x = ((top - if keep { v } else { top }) * scale).min(LAST);
        // SAFETY: x is finite and within u32 (above).
        let i = unsafe { x.to_int_unchecked::<u32>() } as u16;
        *b = if keep { i } else { MASS_BUCKETS as u16 };
    }
    let mut mass = vec![0f64; MASS_BUCKETS + 1];
    for (&b, &x) in bucket.iter().zip(w) {
        mass[b as usize] += x as f64;
    }
    // The bucket where the mass reaches the target; should rounding keep it short of the target,
    // the last bucket with a candidate (the best logit always is one, so the edge has some).
    let (mut acc, mut edge, mut before) = (0f64, None, 0f64);
    for (b, &m) in mass[..MASS_BUCKETS].iter().enumerate() {
        if m > 0.0 {
            (edge, before) = (Some(b), acc);
            if acc + m >= target {
                break;
            }
        }
        acc += m;
    }
    let (edge, mut acc) = (edge.unwrap_or(0), before);
    let mut boundary = Vec::new();
    for (i, &b) in bucket.iter().enumerate() {
        if b as usize == edge {
            boundary.push((i as u32, l[i]));
        }
    }
    boundary.sort_unstable_by(BestFirst::order);
    // (Never empty, see above; the best logit otherwise.)
    let mut last = boundary.first().copied().unwrap_or((l.iter().position(|&v| v == top).unwrap_or(0) as u32, top));
    for &c in &boundary {
        last = c;
        acc += w[c.0 as usize] as f64;
        if acc >= target {
            break;
        }
    }
    (last.1, last.0)
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
    let shifted = y * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = y - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p * r + c;
    }
    let e = (p * r) * r + r + 1.0;
    // 2^n from the integer in `shifted`'s low mantissa bits: `n as i32` (a saturating
    // conversion) kept the loops from vectorising.
    let ni = shifted.to_bits() as i32 - MAGIC.to_bits() as i32;
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    if valid {
        e * scale
    } else {
        0.0
    }
}

/// `sum weight(v - top, inv_t)` over the logits at or above `cut` (in f64 over lanes of f32).
#[inline(always)]
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
        let mut b = 0f64;
        for x in lanes {
            b += x as f64;
        }
        total += b;
        lanes = [0.0; 8];
    }
    total
}

/// A draw over the logits at or above `cut`, plus the tokens `ties` (each of weight `tie_w`),
/// with probabilities `weight(v - top, inv_t) / z`, walking them in index order (blocks of 256
/// first, by their sums), then the ties.
#[inline(always)]
fn draw_unordered(l: &[f32], top: f32, cut: f32, inv_t: f32, (ties, tie_w): (&[u32], f64), rng: &mut impl Rng) -> u32 {
    // Plain loops (no iterator adapters) so that everything inlines into `sample_avx2`.
    let mut sums = Vec::with_capacity(l.len().div_ceil(256));
    let mut z = 0.0;
    for b in l.chunks(256) {
        let s = sum_weights(b, top, cut, inv_t);
        sums.push(s);
        z += s;
    }
    let mut u = rng.gen::<f64>() * (z + ties.len() as f64 * tie_w);
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
    if let Some(&t) = ties.last() {
        return ties.get((u / tie_w) as usize).copied().unwrap_or(t);
    }
    // Rounding left u at the very end: the last token in the set.
    last.map_or_else(|| argmax(l), |i| i as u32)
}

/// `sum w[i]` over the logits `l[i] >= thr` (f32 lanes per block of 256, f64 across blocks).
#[inline(always)]
fn mass_above(l: &[f32], w: &[f32], thr: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && l.len() == w.len() {
        // SAFETY: the CPU has AVX2; `w` is as long as `l`.
        return unsafe { mass_above_avx2(l, w, thr) };
    }
    mass_above_portable(l, w, thr)
}

/// [`mass_above`] in plain Rust (the fallback, and the AVX2 version's oracle: equal to the bit).
#[inline(always)]
fn mass_above_portable(l: &[f32], w: &[f32], thr: f32) -> f64 {
    let mut total = 0f64;
    for (lb, wb) in l.chunks(256).zip(w.chunks(256)) {
        let mut lanes = [0f32; 8];
        for (lc, wc) in lb.chunks(8).zip(wb.chunks(8)) {
            for ((a, &v), &x) in lanes.iter_mut().zip(lc).zip(wc) {
                *a += if v >= thr { x } else { 0.0 };
            }
        }
        let mut block = 0f64;
        for x in lanes {
            block += x as f64;
        }
        total += block;
    }
    total
}

/// [`mass_above`] with explicit AVX2: a compare and an `and` per 8 logits. Left to the compiler,
/// the select became a branch that mispredicts on flat distributions, or a scalar loop (the
/// threshold search made six such passes per top-p draw: 150 of 260 us). The same lanes and
/// the same order of additions as the portable loop, so the same sums to the bit.
///
/// # Safety
/// AVX2 must be present; `w.len() == l.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn mass_above_avx2(l: &[f32], w: &[f32], thr: f32) -> f64 {
    use std::arch::x86_64::*;
    let t = _mm256_set1_ps(thr);
    let mut total = 0f64;
    for (lb, wb) in l.chunks(256).zip(w.chunks(256)) {
        let mut acc = _mm256_setzero_ps();
        let full = lb.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            let v = _mm256_loadu_ps(lb.as_ptr().add(i));
            let x = _mm256_loadu_ps(wb.as_ptr().add(i));
            acc = _mm256_add_ps(acc, _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(v, t), x));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        for ((a, &v), &x) in lanes.iter_mut().zip(&lb[full..]).zip(&wb[full..]) {
            *a += if v >= thr { x } else { 0.0 };
        }
        let mut block = 0f64;
        for x in lanes {
            block += x as f64;
        }
        total += block;
    }
    total
}

/// The largest logit, NaN ignored (-inf when there is none).
#[inline(always)]
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
#[inline(always)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// The AVX2 mass pass equals the portable one to the bit: awkward lengths (tails of a
    /// chunk of 8 and of a block of 256), NaN, infinities, thresholds inside and outside.
    #[test]
    fn mass_above_avx2_equals_the_portable_loop() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut rng = StdRng::seed_from_u64(rand::random());
            for n in [0usize, 1, 7, 8, 9, 255, 256, 257, 1000, 49_152] {
                let mut l: Vec<f32> = (0..n).map(|_| rng.gen_range(-10.0f32..10.0)).collect();
                // Specials, and logits equal to the thresholds below (`>=` must take them).
                for (i, v) in [f32::NAN, f32::NEG_INFINITY, f32::INFINITY, -3.0, 0.0].into_iter().enumerate() {
                    if i < n {
                        l[i * 3 % n] = v;
                    }
                }
                let w: Vec<f32> = l.iter().map(|&v| weight(v - 10.0, 1.0)).collect();
                for thr in [f32::NEG_INFINITY, -3.0, 0.0, 9.5, f32::INFINITY, rng.gen_range(-10.0..10.0)] {
                    // SAFETY: AVX2 was detected; `w` is as long as `l`.
                    let fast = unsafe { mass_above_avx2(&l, &w, thr) };
                    assert_eq!(fast.to_bits(), mass_above_portable(&l, &w, thr).to_bits(), "n {n} thr {thr}");
                }
            }
        }
    }

    /// `top_p_edge` ends exactly where a full sort's best-first prefix first reaches the target:
    /// flat, tied and wide logits, NaN and -inf, thresholds anywhere below the edge.
    #[test]
    fn top_p_edge_is_where_the_sorted_prefix_ends() {
        let seed = rand::random();
        let mut rng = StdRng::seed_from_u64(seed);
        for case in 0..300 {
            let n = rng.gen_range(1..6000);
            let mut l: Vec<f32> = (0..n)
                .map(|_| match case % 3 {
                    0 => rng.gen_range(-3.0f32..3.0),
                    1 => (rng.gen_range(-3.0f32..3.0) * 2.0).round() / 2.0,
                    _ => rng.gen_range(-20.0f32..5.0),
                })
                .collect();
            if case % 5 == 0 && n > 2 {
                (l[0], l[1]) = (f32::NAN, f32::NEG_INFINITY);
            }
            let top = max_logit(&l);
            let w: Vec<f32> = l.iter().map(|&v| weight(v - top, 1.0)).collect();
            let target = rng.gen_range(0.05..0.999) * w.iter().map(|&x| x as f64).sum::<f64>();
            let mut order: Vec<(u32, f32)> =
                l.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(i, &v)| (i as u32, v)).collect();
            order.sort_by(BestFirst::order);
            let mut acc = 0.0;
            let last = *order
                .iter()
                .find(|c| {
                    acc += w[c.0 as usize] as f64;
                    acc >= target
                })
                .unwrap_or(order.last().unwrap());
            let thr = last.1 - rng.gen_range(0.0f32..2.0);
            if !thr.is_finite() {
                continue;
            }
            let (v, id) = top_p_edge(&l, &w, top, thr, target);
            assert_eq!((v.to_bits(), id), (last.1.to_bits(), last.0), "seed {seed} case {case} n {n}");
        }
    }
}
