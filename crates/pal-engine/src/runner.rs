//! ModelRunner: the one place where block bookkeeping becomes kernel inputs (page table,
//! positions, slots) for a step of the model.

use crate::scheduler::Scheduled;
use crate::sequence::Sequence;
use crate::Result;
use pal_core::PageTable;
use pal_kvcache::BlockManager;

/// The device inputs of one step, owned.
pub(crate) struct StepBatch {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    pub slots: Vec<Option<u32>>,
    pub qo_indptr: Vec<u32>,
    pub page_table: PageTable,
    /// Rows whose logits are needed, and the sequence each one samples for.
    pub logit_rows: Vec<usize>,
    pub samplers: Vec<usize>,
}

pub(crate) fn build_batch(scheduled: &[Scheduled], seqs: &[Sequence], blocks: &BlockManager) -> Result<StepBatch> {
    let bs = blocks.block_size();
    let (mut tokens, mut positions, mut slots, mut qo_indptr) = (vec![], vec![], vec![], vec![0u32]);
    let (mut logit_rows, mut samplers) = (vec![], vec![]);
    let mut lists: Vec<&[u32]> = Vec::with_capacity(scheduled.len());
    let mut lens = Vec::with_capacity(scheduled.len());
    for sc in scheduled {
        let s = &seqs[sc.seq];
        let kv = s.kv.expect("scheduled sequences hold blocks");
        let table = blocks.block_table(kv)?;
        let end = sc.start + sc.len;
        for p in sc.start..end {
            tokens.push(s.tokens[p]);
            positions.push(p as u32);
            slots.push(Some(blocks.slot(kv, p)? as u32));
        }
        qo_indptr.push(tokens.len() as u32);
        lists.push(&table[..end.div_ceil(bs)]);
        lens.push(end);
        // The sequence samples when this chunk reaches its last token.
        if end == s.tokens.len() {
            logit_rows.push(tokens.len() - 1);
            samplers.push(sc.seq);
        }
    }
    let page_table = PageTable::from_lists(&lists, &lens, bs)?;
    Ok(StepBatch { tokens, positions, slots, qo_indptr, page_table, logit_rows, samplers })
}
