//! Continuous batching by counting blocks: which sequences run this step and how many tokens each.
//!
//! Every step: running sequences that are decoding get one token each (a block is taken when
//! their last one is full); when the pool is empty the most recently admitted running sequence
//! is preempted (its blocks freed, its tokens recomputed later). Then sequences still in prefill
//! continue, and waiting ones are admitted (prefix-cache hits skip their cached blocks), their
//! prompts cut into chunks so that the step stays under the token budget.

use crate::sequence::Sequence;
use crate::{EngineError, Result};
use pal_kvcache::{BlockManager, CopyOp, KvCacheError, SeqId};
use std::collections::VecDeque;

/// One sequence's share of a step: tokens `start..start+len` of it are computed, in the blocks of
/// block-manager sequence `kv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub seq: usize,
    pub kv: SeqId,
    pub start: usize,
    pub len: usize,
}

#[derive(Debug, Default)]
pub struct StepPlan {
    pub scheduled: Vec<Scheduled>,
    /// Copy-on-write to do on the KV pool before the forward.
    pub copies: Vec<CopyOp>,
    pub preempted: Vec<usize>,
}

pub(crate) struct Scheduler {
    /// Most new tokens in one forward (prefill chunks plus decode tokens).
    pub max_batch_tokens: usize,
    /// Most sequences in flight.
    pub max_seqs: usize,
    /// Admission order; preempted sequences go back to the front.
    pub waiting: VecDeque<usize>,
    /// In admission order (the last one is preempted first).
    pub running: Vec<usize>,
}

impl Scheduler {
    pub fn new(max_batch_tokens: usize, max_seqs: usize) -> Self {
        Scheduler { max_batch_tokens, max_seqs, waiting: VecDeque::new(), running: Vec::new() }
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    fn preempt(
        &mut self,
        idx: usize,
        seqs: &mut [Sequence],
        blocks: &mut BlockManager,
        plan: &mut StepPlan,
    ) -> Result<()> {
        let s = &mut seqs[idx];
        if let Some(kv) = s.kv.take() {
            blocks.free_sequence(kv)?;
        }
        s.computed = 0;
        s.preemptions += 1;
        self.running.retain(|&r| r != idx);
        self.waiting.push_front(idx);
        plan.preempted.push(idx);
        Ok(())
    }

    pub fn schedule(&mut self, seqs: &mut [Sequence], blocks: &mut BlockManager) -> Result<StepPlan> {
        let mut plan = StepPlan::default();
        let mut budget = self.max_batch_tokens;
        // 1. Running sequences, oldest first: decode one token or continue a prefill chunk.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let idx = self.running[i];
            let s = &seqs[idx];
            let kv = s.kv.ok_or(EngineError::Internal("a running sequence holds no blocks"))?;
            let have = blocks.seq_len(kv)?;
            let todo = s.tokens.len() - s.computed;
            let n = todo.min(budget);
            // Tokens not yet given slots (sampled since the last step) need blocks now.
            let new_slots = s.tokens.len() - have;
            if new_slots > 0 {
                match blocks.append_tokens(kv, &s.tokens[have..]) {
                    Ok(r) => plan.copies.extend(r.copy),
                    Err(KvCacheError::OutOfBlocks { .. }) => {
                        // Free the newest running sequence (maybe this one; never one already
                        // scheduled, those come before `i`) and retry. When the victim is `idx`
                        // itself, `running[i]` is now the next sequence.
                        let victim = self.running[self.running.len() - 1];
                        self.preempt(victim, seqs, blocks, &mut plan)?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            plan.scheduled.push(Scheduled { seq: idx, kv, start: s.computed, len: n });
            budget -= n;
            i += 1;
        }
        // 2. Admit waiting sequences while there is budget, room and blocks.
        while budget > 0 && self.running.len() < self.max_seqs {
            let Some(&idx) = self.waiting.front() else { break };
            let s = &mut seqs[idx];
            match blocks.add_sequence(&s.tokens) {
                Ok(adm) => {
                    self.waiting.pop_front();
                    s.kv = Some(adm.seq);
                    s.computed = adm.cached_tokens;
                    if s.preemptions == 0 {
                        s.cached_prompt_tokens = adm.cached_tokens;
                    }
                    let n = (s.tokens.len() - s.computed).min(budget);
                    plan.scheduled.push(Scheduled { seq: idx, kv: adm.seq, start: s.computed, len: n });
                    budget -= n;
                    self.running.push(idx);
                }
                Err(KvCacheError::OutOfBlocks { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(plan)
    }
}
