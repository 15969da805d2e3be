//! Block manager behaviour: hand-written scenarios plus a property test that drives random
//! operation sequences against a shadow copy of the pool's contents.

use pal_kvcache::{BlockManager, KvCacheError, SeqId};
use proptest::prelude::*;
use std::collections::HashMap;

#[test]
fn new_block_only_when_last_is_full() {
    let mut m = BlockManager::new(8, 4, false).unwrap();
    let a = m.add_sequence(&[1, 2, 3]).unwrap().seq;
    assert_eq!(m.block_table(a).unwrap().len(), 1);
    let r = m.append_tokens(a, &[4]).unwrap();
    assert_eq!(m.block_table(a).unwrap().len(), 1);
    assert_eq!(r.slots, vec![m.block_table(a).unwrap()[0] as usize * 4 + 3]);
    m.append_tokens(a, &[5]).unwrap();
    assert_eq!(m.block_table(a).unwrap().len(), 2);
    m.check_invariants().unwrap();
}

#[test]
fn freed_sequence_returns_every_block() {
    let mut m = BlockManager::new(10, 4, false).unwrap();
    let a = m.add_sequence(&[7; 13]).unwrap().seq;
    assert_eq!(m.stats().used, 4);
    m.free_sequence(a).unwrap();
    let s = m.stats();
    assert_eq!((s.free, s.used, s.cached), (10, 0, 0));
    assert_eq!(m.free_sequence(a), Err(KvCacheError::UnknownSequence(a)));
    m.check_invariants().unwrap();
}

#[test]
fn fork_then_child_appends_without_changing_parent() {
    // Seed F: parent 20 tokens, child grows to 25.
    let mut m = BlockManager::new(16, 8, false).unwrap();
    let parent_tokens: Vec<u32> = (0..20).collect();
    let p = m.add_sequence(&parent_tokens).unwrap().seq;
    let parent_blocks = m.block_table(p).unwrap().to_vec();
    let c = m.fork(p).unwrap();
    for &b in &parent_blocks {
        assert_eq!(m.ref_count(b), 2);
    }
    let r = m.append_tokens(c, &[100, 101, 102, 103, 104]).unwrap();
    // The shared last block (4 of 8 used) is copied before the child writes into it.
    let cow = r.copy.expect("shared partial block must be copied");
    assert_eq!((cow.src, cow.num_tokens), (parent_blocks[2], 4));
    assert_eq!(m.block_table(p).unwrap(), &parent_blocks[..]);
    assert_eq!(m.tokens(p).unwrap(), &parent_tokens[..]);
    assert_eq!(m.seq_len(c).unwrap(), 25);
    assert_eq!(m.ref_count(parent_blocks[2]), 1);
    assert!(r.slots[..4].iter().all(|&s| s / 8 == cow.dst as usize));
    assert_eq!(r.slots[4] % 8, 0, "token 24 opens a fresh block");
    m.check_invariants().unwrap();
}

#[test]
fn out_of_blocks_is_an_error_and_changes_nothing() {
    let mut m = BlockManager::new(3, 4, true).unwrap();
    let a = m.add_sequence(&[1; 8]).unwrap().seq;
    let before = m.stats();
    let err = m.add_sequence(&[2; 9]).unwrap_err();
    assert_eq!(err, KvCacheError::OutOfBlocks { needed: 3, available: 1 });
    assert_eq!(m.stats(), before);
    m.append_tokens(a, &[1; 4]).unwrap();
    let err = m.append_tokens(a, &[1]).unwrap_err();
    assert!(matches!(err, KvCacheError::OutOfBlocks { needed: 1, available: 0 }));
    assert_eq!(m.seq_len(a).unwrap(), 12);
    m.check_invariants().unwrap();
}

#[test]
fn prefix_cache_reuses_full_blocks_and_evicts_lru_only_when_needed() {
    let mut m = BlockManager::new(6, 4, true).unwrap();
    let prompt: Vec<u32> = (0..10).collect();
    let a = m.add_sequence(&prompt).unwrap();
    assert_eq!(a.cached_tokens, 0);
    m.mark_computed(a.seq, 10).unwrap();
    let b = m.add_sequence(&prompt).unwrap();
    assert_eq!(b.cached_tokens, 8);
    assert_eq!(m.block_table(b.seq).unwrap()[..2], m.block_table(a.seq).unwrap()[..2]);
    assert_eq!(m.stats().hit_blocks, 2);
    m.free_sequence(a.seq).unwrap();
    m.free_sequence(b.seq).unwrap();
    let s = m.stats();
    assert_eq!((s.free, s.cached), (4, 2));
    // A different prompt of 3 blocks takes free blocks first, keeping the cached ones.
    let c = m.add_sequence(&[50; 12]).unwrap();
    assert_eq!(m.stats().cached, 2);
    // The original prompt still hits.
    let d = m.add_sequence(&prompt[..9]).unwrap();
    assert_eq!(d.cached_tokens, 8);
    m.free_sequence(d.seq).unwrap();
    // One free block and 2 cached ones remain: a new 3-block prompt must evict both.
    let e = m.add_sequence(&[60; 12]).unwrap();
    assert_eq!(e.cached_tokens, 0);
    assert_eq!(m.stats().cached, 0);
    let f = m.add_sequence(&prompt).unwrap_err();
    assert!(matches!(f, KvCacheError::OutOfBlocks { .. }));
    let _ = c;
    m.check_invariants().unwrap();
}

#[test]
fn whole_prompt_hit_still_computes_the_last_token() {
    let mut m = BlockManager::new(8, 4, true).unwrap();
    let a = m.add_sequence(&[3; 8]).unwrap();
    m.mark_computed(a.seq, 8).unwrap();
    let b = m.add_sequence(&[3; 8]).unwrap();
    assert_eq!(b.cached_tokens, 4, "the last block holds the last token and must be recomputed");
    m.check_invariants().unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Add(Vec<u32>),
    Append(usize, Vec<u32>),
    Fork(usize),
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    // A small alphabet and short prompts make prefix hits frequent.
    let tokens = |max| prop::collection::vec(0u32..3, 1..max);
    prop_oneof![
        3 => tokens(20).prop_map(Op::Add),
        4 => (any::<usize>(), tokens(7)).prop_map(|(i, t)| Op::Append(i, t)),
        2 => any::<usize>().prop_map(Op::Fork),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

/// Applies ops to a manager and to a shadow pool where "computing" a token writes its id into its
/// slot. After every op: the manager's invariants hold and every live sequence reads back exactly
/// its own tokens (so no block was lost, shared wrongly, overwritten, or evicted while in use).
fn run_ops(num_blocks: usize, block_size: usize, prefix: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut m = BlockManager::new(num_blocks, block_size, prefix).unwrap();
    let mut pool: Vec<Option<u32>> = vec![None; num_blocks * block_size];
    let mut live: Vec<SeqId> = Vec::new();
    let mut expected: HashMap<SeqId, Vec<u32>> = HashMap::new();
    for op in ops {
        let stats_before = m.stats();
        match op {
            Op::Add(prompt) => match m.add_sequence(&prompt) {
                Ok(adm) => {
                    prop_assert!(adm.cached_tokens < prompt.len());
                    for (pos, &t) in prompt.iter().enumerate() {
                        let slot = m.slot(adm.seq, pos).unwrap();
                        if pos < adm.cached_tokens {
                            prop_assert_eq!(pool[slot], Some(t), "prefix hit on wrong content");
                        } else {
                            pool[slot] = Some(t);
                        }
                    }
                    m.mark_computed(adm.seq, prompt.len()).unwrap();
                    live.push(adm.seq);
                    expected.insert(adm.seq, prompt);
                }
                Err(KvCacheError::OutOfBlocks { .. }) => prop_assert_eq!(m.stats(), stats_before),
                Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
            },
            Op::Append(i, toks) if !live.is_empty() => {
                let seq = live[i % live.len()];
                match m.append_tokens(seq, &toks) {
                    Ok(r) => {
                        if let Some(c) = r.copy {
                            for o in 0..c.num_tokens {
                                pool[c.dst as usize * block_size + o] = pool[c.src as usize * block_size + o];
                            }
                        }
                        for (&slot, &t) in r.slots.iter().zip(&toks) {
                            pool[slot] = Some(t);
                        }
                        let len = m.seq_len(seq).unwrap();
                        m.mark_computed(seq, len).unwrap();
                        expected.get_mut(&seq).unwrap().extend_from_slice(&toks);
                    }
                    Err(KvCacheError::OutOfBlocks { .. }) => prop_assert_eq!(m.stats(), stats_before),
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
                }
            }
            Op::Fork(i) if !live.is_empty() => {
                let parent = live[i % live.len()];
                let child = m.fork(parent).unwrap();
                live.push(child);
                expected.insert(child, expected[&parent].clone());
            }
            Op::Free(i) if !live.is_empty() => {
                let seq = live.swap_remove(i % live.len());
                m.free_sequence(seq).unwrap();
                expected.remove(&seq);
            }
            _ => {}
        }
        m.check_invariants().map_err(TestCaseError::fail)?;
        let s = m.stats();
        prop_assert_eq!(s.free + s.used + s.cached, num_blocks);
        for &seq in &live {
            let want = &expected[&seq];
            prop_assert_eq!(m.tokens(seq).unwrap(), &want[..]);
            for (pos, &t) in want.iter().enumerate() {
                prop_assert_eq!(pool[m.slot(seq, pos).unwrap()], Some(t), "seq {} pos {}", seq, pos);
            }
        }
    }
    // Freeing everything returns the whole pool.
    for seq in live {
        m.free_sequence(seq).unwrap();
    }
    let s = m.stats();
    prop_assert_eq!(s.used, 0);
    prop_assert_eq!(s.free + s.cached, num_blocks);
    m.check_invariants().map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_keep_every_invariant(
        num_blocks in 1usize..24,
        block_size in 1usize..6,
        prefix in any::<bool>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run_ops(num_blocks, block_size, prefix, ops)?;
    }
}
