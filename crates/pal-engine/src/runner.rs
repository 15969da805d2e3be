//! ModelRunner: the one place where block bookkeeping becomes kernel inputs (page table,
//! positions, slots) for a step of the model.

use crate::Result;
use pal_core::PageTable;
use pal_kvcache::{BlockManager, SeqId};
use pal_model::StepInput;

/// Which rows of a sequence's chunk need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Logits {
    /// The last row, only when the chunk ends the sequence (it will sample).
    IfComplete,
    /// Every row (teacher-forced scoring).
    All,
}

/// One sequence's share of a step: `tokens[start..start+len]` computed in the blocks of `kv`.
pub(crate) struct BatchItem<'a> {
    /// All tokens of the sequence (the chunk's history included).
    pub tokens: &'a [u32],
    pub kv: SeqId,
    pub start: usize,
    pub len: usize,
    pub logits: Logits,
}

/// The device inputs of one step, owned.
pub(crate) struct StepBatch {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    pub slots: Vec<Option<u32>>,
    pub qo_indptr: Vec<u32>,
    pub page_table: PageTable,
    /// Rows whose logits are needed, and the item each one belongs to.
    pub logit_rows: Vec<usize>,
    pub logit_items: Vec<usize>,
}

impl StepBatch {
    pub fn input(&self) -> StepInput<'_> {
        StepInput {
            tokens: &self.tokens,
            positions: &self.positions,
            slots: &self.slots,
            qo_indptr: &self.qo_indptr,
            page_table: &self.page_table,
            logit_rows: &self.logit_rows,
        }
    }
}

pub(crate) fn build_batch(items: &[BatchItem<'_>], blocks: &BlockManager) -> Result<StepBatch> {
    let bs = blocks.block_size();
    let (mut tokens, mut positions, mut slots, mut qo_indptr) = (vec![], vec![], vec![], vec![0u32]);
    let (mut logit_rows, mut logit_items) = (vec![], vec![]);
    let mut lists: Vec<&[u32]> = Vec::with_capacity(items.len());
    let mut lens = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let table = blocks.block_table(it.kv)?;
        let end = it.start + it.len;
        let first_row = tokens.len();
        for p in it.start..end {
            tokens.push(it.tokens[p]);
            positions.push(p as u32);
            slots.push(Some(blocks.slot(it.kv, p)? as u32));
        }
        qo_indptr.push(tokens.len() as u32);
        lists.push(&table[..end.div_ceil(bs)]);
        lens.push(end);
        let rows = match it.logits {
            Logits::IfComplete if end == it.tokens.len() => tokens.len() - 1..tokens.len(),
            Logits::IfComplete => 0..0,
            Logits::All => first_row..tokens.len(),
        };
        logit_items.extend(rows.clone().map(|_| i));
        logit_rows.extend(rows);
    }
    let page_table = PageTable::from_lists(&lists, &lens, bs)?;
    Ok(StepBatch { tokens, positions, slots, qo_indptr, page_table, logit_rows, logit_items })
}
