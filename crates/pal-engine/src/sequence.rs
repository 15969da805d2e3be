//! One request as the engine sees it: its tokens, how many have K/V in the cache, its sampling
//! state and its timings.

use crate::SamplingParams;
use pal_kvcache::SeqId;
use pal_model::TextStream;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Instant;

pub type RequestId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop token was sampled.
    Stop,
    /// A stop string appeared in the text.
    StopString,
    /// `max_tokens` were generated.
    Length,
    /// The context length was reached.
    ContextFull,
    /// The model gave no finite logit to sample (all NaN or -inf, or a +inf): broken weights or
    /// an overflow. The request ends without the token.
    NonFiniteLogits,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::StopString => "stop_string",
            FinishReason::Length => "length",
            FinishReason::ContextFull => "context_full",
            FinishReason::NonFiniteLogits => "non_finite_logits",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Sequence {
    pub prompt_len: usize,
    /// Prompt then generated tokens.
    pub tokens: Vec<u32>,
    /// Leading tokens whose K/V is in the cache.
    pub computed: usize,
    /// Block-manager sequence while the request holds blocks.
    pub kv: Option<SeqId>,
    pub params: SamplingParams,
    pub rng: StdRng,
    pub finished: Option<FinishReason>,
    /// The generated text so far, kept only when the request has stop strings.
    pub text: TextStream,
    /// Text cut at a stop string, when one matched.
    pub stop_text: Option<String>,
    pub preemptions: usize,
    pub cached_prompt_tokens: usize,
    pub arrived: Instant,
    pub first_token: Option<Instant>,
    pub last_token: Option<Instant>,
}

impl Sequence {
    pub fn new(prompt: Vec<u32>, params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Sequence {
            prompt_len: prompt.len(),
            tokens: prompt,
            computed: 0,
            kv: None,
            params,
            rng,
            finished: None,
            text: TextStream::new(),
            stop_text: None,
            preemptions: 0,
            cached_prompt_tokens: 0,
            arrived: Instant::now(),
            first_token: None,
            last_token: None,
        }
    }
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }
}
