//! Helpers shared by the engine tests.
#![allow(dead_code)]

use pal_engine::sampler::top2;
use pal_engine::{Engine, Output};

/// Top-1 minus top-2 logit of each row of `logits` (`vocab` columns).
pub fn margins(logits: &[f32], vocab: usize) -> Vec<f32> {
    logits
        .chunks_exact(vocab)
        .map(|r| {
            let (_, a, b) = top2(r);
            a - b
        })
        .collect()
}

/// Margins of the alone run's own greedy choices, teacher-forced on an idle engine.
pub fn greedy_margins(engine: &mut Engine, out: &Output) -> Vec<f32> {
    let vocab = engine.model().config.vocab_size;
    let full: Vec<u32> = out.prompt_ids.iter().chain(&out.gen_ids).copied().collect();
    let logits = engine.score(&full).unwrap();
    let p = out.prompt_ids.len();
    margins(&logits[(p - 1) * vocab..(full.len() - 1) * vocab], vocab)
}

/// Batched tokens equal the alone tokens up to the first position where the alone run's
/// top-1/top-2 margin is below `margin` (there a different rounding may pick the other token).
/// Returns how many tokens were compared.
pub fn assert_same_greedy(batched: &[u32], alone: &[u32], alone_margins: &[f32], margin: f32, what: &str) -> usize {
    for (i, (&b, &a)) in batched.iter().zip(alone).enumerate() {
        if alone_margins[i] < margin {
            return i;
        }
        assert_eq!(b, a, "{what}: token {i} differs (margin {})", alone_margins[i]);
    }
    assert_eq!(batched.len(), alone.len(), "{what}: lengths differ with every margin above {margin}");
    alone.len()
}

/// True when some block table is not a run of consecutive ids.
pub fn fragmented(table: &[u32]) -> bool {
    table.windows(2).any(|w| w[1] != w[0] + 1)
}
