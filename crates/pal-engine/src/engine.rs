//! The engine loop: admit requests, schedule a step, run the model on the paged cache, sample,
//! stop, free. Nothing is lost: a preempted request is recomputed later and every request ends
//! with a [`FinishReason`].

use crate::runner::{build_batch, BatchItem, Logits};
use crate::sampler::sample;
use crate::scheduler::Scheduler;
use crate::sequence::{FinishReason, RequestId, Sequence};
use crate::{EngineError, Result, SamplingParams};
use pal_core::{f16, KvLayout};
use pal_kernels::dispatch::Dispatch;
use pal_kvcache::{BlockManager, CacheStats};
use pal_model::{KvCache, LlamaModel, Tokenizer};
use std::time::{Duration, Instant};

/// Sizes of the KV pool and of a step.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    pub block_size: usize,
    pub num_blocks: usize,
    pub max_batch_tokens: usize,
    pub max_seqs: usize,
    pub prefix_caching: bool,
    /// Attention implementation of the model's forward: `Dispatch::Auto` (fused paged kernels)
    /// or a forced path (`Force(Gather)`: gather the pages, then dense attention).
    pub attention: Dispatch,
}

impl EngineConfig {
    /// Enough blocks for `tokens` cached tokens in total, 16-token blocks.
    pub fn with_capacity(tokens: usize) -> Self {
        EngineConfig {
            block_size: 16,
            num_blocks: tokens.div_ceil(16),
            max_batch_tokens: 512,
            max_seqs: 64,
            prefix_caching: true,
            attention: Dispatch::Auto,
        }
    }
}

/// What a step produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Token { id: RequestId, token: u32 },
    Finished { id: RequestId, reason: FinishReason },
}

/// A finished (or running) request.
#[derive(Clone, Debug)]
pub struct Output {
    pub id: RequestId,
    pub prompt_ids: Vec<u32>,
    pub gen_ids: Vec<u32>,
    pub finish: Option<FinishReason>,
    /// The generated text, cut at the stop string (when the engine has a tokenizer).
    pub text: Option<String>,
    /// Prompt tokens computed / time from arrival to the first token.
    pub prefill_tok_s: f64,
    /// Tokens after the first / time from the first to the last.
    pub decode_tok_s: f64,
    pub cached_prompt_tokens: usize,
    pub preemptions: usize,
}

/// Totals since the engine started.
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineStats {
    pub steps: usize,
    pub prefill_tokens: usize,
    pub decode_tokens: usize,
    pub forward_time: Duration,
    /// Steps in which every sequence decodes one token, and their forward time.
    pub decode_steps: usize,
    pub decode_step_time: Duration,
    pub decode_step_tokens: usize,
    pub preemptions: usize,
}

pub struct Engine {
    model: LlamaModel,
    tokenizer: Option<Tokenizer>,
    cache: KvCache<f16>,
    blocks: BlockManager,
    sched: Scheduler,
    seqs: Vec<Sequence>,
    stop_ids: Vec<u32>,
    stats: EngineStats,
    /// The last step's logits, kept so that the next step reuses the buffer.
    logits: Vec<f32>,
}

impl Engine {
    pub fn new(mut model: LlamaModel, tokenizer: Option<Tokenizer>, config: EngineConfig) -> Result<Self> {
        if config.max_batch_tokens == 0 || config.max_seqs == 0 || config.num_blocks == 0 {
            return Err(EngineError::invalid(
                "config",
                format!("{config:?}: batch tokens, sequences and blocks must be > 0"),
            ));
        }
        model.set_attention(config.attention);
        let c = &model.config;
        let layout = KvLayout::new(config.num_blocks, config.block_size, c.num_kv_heads, c.head_dim)
            .map_err(pal_model::ModelError::from)?;
        let cache = KvCache::new(c.num_layers, layout);
        let blocks = BlockManager::new(config.num_blocks, config.block_size, config.prefix_caching)?;
        let stop_ids = tokenizer.as_ref().map(|t| t.stop_ids().to_vec()).unwrap_or_default();
        let sched = Scheduler::new(config.max_batch_tokens, config.max_seqs);
        Ok(Engine {
            model,
            tokenizer,
            cache,
            blocks,
            sched,
            seqs: vec![],
            stop_ids,
            stats: EngineStats::default(),
            logits: vec![],
        })
    }

    pub fn model(&self) -> &LlamaModel {
        &self.model
    }
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }
    pub fn stats(&self) -> EngineStats {
        self.stats
    }
    pub fn cache_stats(&self) -> CacheStats {
        self.blocks.stats()
    }
    pub fn has_work(&self) -> bool {
        self.sched.has_work()
    }
    /// Physical blocks held by a request now (empty when it holds none): for inspection and tests.
    pub fn block_table(&self, id: RequestId) -> Vec<u32> {
        self.seqs
            .get(id)
            .and_then(|s| s.kv)
            .and_then(|kv| self.blocks.block_table(kv).ok())
            .map(<[u32]>::to_vec)
            .unwrap_or_default()
    }

    /// The pool's capacity in tokens.
    pub fn capacity_tokens(&self) -> usize {
        self.blocks.num_blocks() * self.blocks.block_size()
    }

    /// Queue a request. Fails when it could never run: tokens outside the vocabulary, invalid
    /// sampling values, or a prompt plus `max_tokens` longer than the context or the pool.
    pub fn add_request(&mut self, prompt: Vec<u32>, params: SamplingParams) -> Result<RequestId> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(EngineError::invalid("prompt", "is empty"));
        }
        let vocab = self.model.config.vocab_size;
        if let Some(&t) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::invalid("prompt", format!("token {t} is outside the vocabulary ({vocab})")));
        }
        let ctx = self.model.config.context_length;
        if prompt.len() >= ctx {
            return Err(EngineError::TooLong(format!(
                "the prompt has {} tokens; the model's context is {ctx}",
                prompt.len()
            )));
        }
        let need = (prompt.len() + params.max_tokens).min(ctx);
        if need > self.capacity_tokens() {
            return Err(EngineError::TooLong(format!(
                "{} prompt tokens + {} new tokens exceed the KV pool ({} tokens)",
                prompt.len(),
                params.max_tokens,
                self.capacity_tokens()
            )));
        }
        let id = self.seqs.len();
        self.seqs.push(Sequence::new(prompt, params));
        self.sched.waiting.push_back(id);
        Ok(id)
    }

    /// One scheduling step and one forward. Returns the sampled tokens and the finished requests.
    pub fn step(&mut self) -> Result<Vec<Event>> {
        let plan = self.sched.schedule(&mut self.seqs, &mut self.blocks)?;
        self.stats.preemptions += plan.preempted.len();
        if plan.scheduled.is_empty() {
            return Ok(vec![]);
        }
        for c in &plan.copies {
            self.cache.copy_block(c.src as usize, c.dst as usize, c.num_tokens)?;
        }
        let items: Vec<BatchItem<'_>> = plan
            .scheduled
            .iter()
            .map(|sc| BatchItem {
                tokens: &self.seqs[sc.seq].tokens,
                kv: sc.kv,
                start: sc.start,
                len: sc.len,
                logits: Logits::IfComplete,
            })
            .collect();
        let batch = build_batch(&items, &self.blocks)?;
        let decode_only = plan.scheduled.iter().all(|sc| sc.len == 1 && sc.start >= self.seqs[sc.seq].prompt_len);
        let t0 = Instant::now();
        let mut logits = std::mem::take(&mut self.logits);
        self.model.forward_into(&batch.input(), &mut self.cache, &mut logits)?;
        let dt = t0.elapsed();
        self.stats.forward_time += dt;
        if decode_only {
            self.stats.decode_steps += 1;
            self.stats.decode_step_time += dt;
            self.stats.decode_step_tokens += plan.scheduled.len();
        }
        self.stats.steps += 1;
        for sc in &plan.scheduled {
            let s = &mut self.seqs[sc.seq];
            s.computed += sc.len;
            if sc.len == 1 && s.computed > s.prompt_len {
                self.stats.decode_tokens += 1;
            } else {
                self.stats.prefill_tokens += sc.len;
            }
            self.blocks.mark_computed(sc.kv, s.computed)?;
        }
        let vocab = self.model.config.vocab_size;
        let mut events = Vec::new();
        let now = Instant::now();
        // Draw every row's token first, in parallel when there are several: with top-p over a 49k
        // vocabulary a draw is 0.1-0.3 ms, and a batch's draws ran one after another between two
        // forward passes. Each sequence has its own RNG (and at most one row), so the tokens do
        // not depend on the threads.
        let mut row_of = vec![None; self.seqs.len()];
        for (r, &item) in batch.logit_items.iter().enumerate() {
            row_of[plan.scheduled[item].seq] = Some(r);
        }
        let draw = |(idx, s): (usize, &mut Sequence)| {
            row_of[idx].map(|r| (r, sample(&logits[r * vocab..(r + 1) * vocab], &s.params, &s.tokens, &mut s.rng)))
        };
        let mut drawn: Vec<(usize, u32)> = if batch.logit_items.len() > 1 {
            use rayon::prelude::*;
            self.seqs.par_iter_mut().enumerate().filter_map(draw).collect()
        } else {
            self.seqs.iter_mut().enumerate().filter_map(draw).collect()
        };
        drawn.sort_unstable();
        debug_assert_eq!(drawn.len(), batch.logit_items.len(), "one logits row per sequence");
        for (&item, &(r, tok)) in batch.logit_items.iter().zip(&drawn) {
            let idx = plan.scheduled[item].seq;
            // The sampler picks a finite logit whenever there is one (NaN never wins): without,
            // the model is broken for this request, and it ends here instead of going on with
            // arbitrary tokens.
            if !logits[r * vocab + tok as usize].is_finite() {
                self.finish(idx, FinishReason::NonFiniteLogits)?;
                events.push(Event::Finished { id: idx, reason: FinishReason::NonFiniteLogits });
                continue;
            }
            let s = &mut self.seqs[idx];
            s.tokens.push(tok);
            s.first_token.get_or_insert(now);
            s.last_token = Some(now);
            events.push(Event::Token { id: idx, token: tok });
            if let Some(reason) = self.finish_reason(idx, tok) {
                self.finish(idx, reason)?;
                events.push(Event::Finished { id: idx, reason });
            }
        }
        self.logits = logits;
        Ok(events)
    }

    fn finish_reason(&mut self, idx: usize, tok: u32) -> Option<FinishReason> {
        let s = &self.seqs[idx];
        if (!s.params.ignore_eos && self.stop_ids.contains(&tok)) || s.params.stop_token_ids.contains(&tok) {
            return Some(FinishReason::Stop);
        }
        if !s.params.stop_strings.is_empty() {
            if let Some(tk) = &self.tokenizer {
                // Matched on the visible text (special tokens skipped), the text users see, kept
                // up to date a few tokens at a time. A match ends in the new text (an earlier one
                // would have stopped the request), so only the new text and the longest stop
                // string's length before it are searched.
                let s = &mut self.seqs[idx];
                let generated = &s.tokens[s.prompt_len..];
                if let Ok(Some(new)) = s.text.update(tk, generated, true) {
                    let text = s.text.text();
                    let longest = s.params.stop_strings.iter().map(String::len).max().unwrap_or(0);
                    let mut from = new.saturating_sub(longest.saturating_sub(1));
                    while !text.is_char_boundary(from) {
                        from -= 1;
                    }
                    let hit = s.params.stop_strings.iter().filter_map(|p| text[from..].find(p.as_str())).min();
                    if let Some(at) = hit {
                        s.stop_text = Some(text[..from + at].to_string());
                        return Some(FinishReason::StopString);
                    }
                }
            }
        }
        let s = &self.seqs[idx];
        if s.generated().len() >= s.params.max_tokens {
            return Some(FinishReason::Length);
        }
        if s.tokens.len() >= self.model.config.context_length {
            return Some(FinishReason::ContextFull);
        }
        None
    }

    fn finish(&mut self, idx: usize, reason: FinishReason) -> Result<()> {
        let s = &mut self.seqs[idx];
        s.finished = Some(reason);
        if let Some(kv) = s.kv.take() {
            self.blocks.free_sequence(kv)?;
        }
        self.sched.running.retain(|&r| r != idx);
        Ok(())
    }

    /// The tokens generated so far for a request (cheap: for streaming).
    pub fn generated(&self, id: RequestId) -> Option<&[u32]> {
        self.seqs.get(id).map(Sequence::generated)
    }

    pub fn output(&self, id: RequestId) -> Option<Output> {
        let s = self.seqs.get(id)?;
        let text = match (&s.stop_text, &self.tokenizer) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(tk)) => tk.decode(s.generated(), true).ok(),
            _ => None,
        };
        let secs = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64().max(1e-9);
        let prefill_tok_s =
            s.first_token.map_or(0.0, |f| (s.prompt_len - s.cached_prompt_tokens) as f64 / secs(s.arrived, f));
        let decode_tok_s = match (s.first_token, s.last_token) {
            (Some(f), Some(l)) if s.generated().len() > 1 => (s.generated().len() - 1) as f64 / secs(f, l),
            _ => 0.0,
        };
        Some(Output {
            id,
            prompt_ids: s.tokens[..s.prompt_len].to_vec(),
            gen_ids: s.generated().to_vec(),
            finish: s.finished,
            text,
            prefill_tok_s,
            decode_tok_s,
            cached_prompt_tokens: s.cached_prompt_tokens,
            preemptions: s.preemptions,
        })
    }

    /// Step until every request has finished; `on_event` sees each event as it happens.
    pub fn run(&mut self, mut on_event: impl FnMut(&Engine, &Event)) -> Result<Vec<Output>> {
        let first = self.seqs.iter().position(|s| s.finished.is_none()).unwrap_or(self.seqs.len());
        while self.has_work() {
            for e in self.step()? {
                on_event(self, &e);
            }
        }
        Ok((first..self.seqs.len()).filter_map(|i| self.output(i)).collect())
    }

    /// Teacher-forced logits of `tokens` at every position, `[tokens.len(), vocab]`, computed on the
    /// paged cache in chunks of the step budget. Needs an idle engine.
    pub fn score(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if self.has_work() {
            return Err(EngineError::invalid("score", "the engine is busy with requests"));
        }
        let vocab = self.model.config.vocab_size;
        if tokens.is_empty() {
            return Err(EngineError::invalid("text", "has no tokens"));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::invalid("tokens", format!("token {t} is outside the vocabulary ({vocab})")));
        }
        let ctx = self.model.config.context_length;
        if tokens.len() > ctx || tokens.len() > self.capacity_tokens() {
            return Err(EngineError::TooLong(format!(
                "{} tokens; context {ctx}, pool {} tokens",
                tokens.len(),
                self.capacity_tokens()
            )));
        }
        let kv = self.blocks.add_sequence(&tokens[..1])?.seq;
        let mut logits = Vec::with_capacity(tokens.len() * vocab);
        let chunk = self.sched.max_batch_tokens;
        let result = (|| -> Result<()> {
            let mut start = 0;
            while start < tokens.len() {
                let end = (start + chunk).min(tokens.len());
                let have = self.blocks.seq_len(kv)?;
                if end > have {
                    self.blocks.append_tokens(kv, &tokens[have..end])?;
                }
                let item = BatchItem { tokens, kv, start, len: end - start, logits: Logits::All };
                let batch = build_batch(&[item], &self.blocks)?;
                logits.extend(self.model.forward(&batch.input(), &mut self.cache)?);
                start = end;
            }
            Ok(())
        })();
        self.blocks.free_sequence(kv)?;
        result.map(|_| logits)
    }
}
