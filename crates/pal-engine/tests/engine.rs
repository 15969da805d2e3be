//! Continuous batching on a tiny random model: a batch equals each prompt alone (chunked
//! prefill, decode batching, preemption, prefix sharing, fragmented blocks), stop conditions,
//! and typed errors for requests that can never run.

mod common;

use common::{assert_same_greedy, fragmented, greedy_margins};
use pal_engine::{Engine, EngineConfig, EngineError, FinishReason, SamplingParams};
use pal_model::gguf::GgufFile;
use pal_model::testing::{tiny_model, TinySpec};
use pal_model::{LlamaModel, Tokenizer};
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn tiny(seed: u64) -> (LlamaModel, Tokenizer) {
    let spec = TinySpec { layers: 2, hidden: 64, heads: 4, kv_heads: 2, context: 512, ..TinySpec::default() };
    let f = Arc::new(GgufFile::from_bytes(tiny_model(&spec, seed)).unwrap());
    (LlamaModel::load(f.clone()).unwrap(), Tokenizer::from_gguf(&f).unwrap())
}

fn engine(seed: u64, cfg: EngineConfig) -> Engine {
    let (m, t) = tiny(seed);
    Engine::new(m, Some(t), cfg).unwrap()
}

#[test]
fn batch_equals_each_prompt_alone_with_preemption() {
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let vocab = 264u32;
    let shared: Vec<u32> = (0..24).map(|_| rng.gen_range(3..vocab)).collect();
    let prompts: Vec<Vec<u32>> = (0..12)
        .map(|i| {
            let n = [5, 17, 40, 90, 1, 33][i % 6];
            let mut p = if i % 3 == 0 { shared.clone() } else { vec![] };
            p.extend((0..n).map(|_| rng.gen_range(3..vocab)));
            p
        })
        .collect();
    let params = SamplingParams { max_tokens: 20, ignore_eos: true, ..SamplingParams::greedy(20) };

    let mut alone_engine = engine(seed, EngineConfig { max_batch_tokens: 512, ..EngineConfig::with_capacity(4096) });
    let mut alone = Vec::new();
    for p in &prompts {
        alone_engine.add_request(p.clone(), params.clone()).unwrap();
        let out = alone_engine.run(|_, _| {}).unwrap().remove(0);
        let m = greedy_margins(&mut alone_engine, &out);
        alone.push((out, m));
    }

    // 48 blocks of 4 tokens: far less than the ~1000 tokens the batch needs at once.
    let cfg = EngineConfig {
        block_size: 4,
        num_blocks: 48,
        max_batch_tokens: 64,
        max_seqs: 16,
        ..EngineConfig::with_capacity(0)
    };
    let mut e = engine(seed, cfg);
    for p in &prompts {
        e.add_request(p.clone(), params.clone()).unwrap();
    }
    let mut saw_fragmented = false;
    let outs = e
        .run(|eng, _| {
            saw_fragmented |= (0..prompts.len()).any(|i| fragmented(&eng.block_table(i)));
        })
        .unwrap();
    assert_eq!(outs.len(), prompts.len());
    assert!(e.stats().preemptions > 0, "the pool was meant to force a preemption");
    assert!(saw_fragmented, "block ids were meant to be fragmented");
    let mut compared = 0;
    for (i, (o, (a, m))) in outs.iter().zip(&alone).enumerate() {
        assert_eq!(o.finish, Some(FinishReason::Length), "prompt {i}");
        compared += assert_same_greedy(&o.gen_ids, &a.gen_ids, m, 0.01, &format!("seed {seed} prompt {i}"));
    }
    assert!(compared >= prompts.len() * 20 / 2, "only {compared} tokens above the margin");
    let st = e.cache_stats();
    assert_eq!(st.used, 0, "every block returned: {st:?}");
}

#[test]
fn prefix_cache_reuses_blocks_and_changes_nothing() {
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shared: Vec<u32> = (0..64).map(|_| rng.gen_range(3..264)).collect();
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(8) };
    let run = |caching: bool| {
        let mut e = engine(seed, EngineConfig { prefix_caching: caching, ..EngineConfig::with_capacity(2048) });
        let mut outs = Vec::new();
        for tail in [[7u32, 8, 9], [10, 11, 12]] {
            let mut p = shared.clone();
            p.extend(tail);
            e.add_request(p, params.clone()).unwrap();
            outs.extend(e.run(|_, _| {}).unwrap());
        }
        (outs, e.cache_stats())
    };
    let (cached, stats) = run(true);
    let (plain, _) = run(false);
    assert_eq!(cached[1].cached_prompt_tokens, 64, "the second prompt reuses the 4 shared blocks");
    assert!(stats.hit_rate() > 0.0);
    for (a, b) in cached.iter().zip(&plain) {
        assert_eq!(a.gen_ids, b.gen_ids);
    }
}

#[test]
fn stop_tokens_stop_strings_and_max_tokens() {
    let (m, t) = tiny(3);
    let mut e = Engine::new(m, Some(t), EngineConfig::with_capacity(1024)).unwrap();
    let prompt = vec![10u32, 20, 30];
    e.add_request(prompt.clone(), SamplingParams { ignore_eos: true, ..SamplingParams::greedy(12) }).unwrap();
    let free = e.run(|_, _| {}).unwrap().remove(0);
    assert_eq!((free.gen_ids.len(), free.finish), (12, Some(FinishReason::Length)));
    // Stop on the 4th generated token.
    let stop = free.gen_ids[3];
    let first = free.gen_ids.iter().position(|&x| x == stop).unwrap();
    e.add_request(
        prompt.clone(),
        SamplingParams { ignore_eos: true, stop_token_ids: vec![stop], ..SamplingParams::greedy(12) },
    )
    .unwrap();
    let o = e.run(|_, _| {}).unwrap().remove(0);
    assert_eq!((o.gen_ids.len(), o.finish), (first + 1, Some(FinishReason::Stop)));
    // A stop string taken from the free text: the output is cut before it.
    let text = e.tokenizer().unwrap().decode(&free.gen_ids, false).unwrap();
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 6 {
        let needle: String = chars[3..6].iter().collect();
        e.add_request(
            prompt,
            SamplingParams { ignore_eos: true, stop_strings: vec![needle.clone()], ..SamplingParams::greedy(12) },
        )
        .unwrap();
        let o = e.run(|_, _| {}).unwrap().remove(0);
        assert_eq!(o.finish, Some(FinishReason::StopString));
        let cut = o.text.unwrap();
        assert!(!cut.contains(&needle) && text.starts_with(&cut), "{cut:?} vs {text:?} / {needle:?}");
    }
}

#[test]
fn requests_that_cannot_run_are_typed_errors() {
    let (m, t) = tiny(5);
    let mut e = Engine::new(m, Some(t), EngineConfig::with_capacity(256)).unwrap();
    let long = vec![5u32; 600];
    assert!(
        matches!(e.add_request(long, SamplingParams::greedy(1)), Err(EngineError::TooLong(_))),
        "longer than the context"
    );
    assert!(
        matches!(e.add_request(vec![5; 200], SamplingParams::greedy(100)), Err(EngineError::TooLong(_))),
        "longer than the pool"
    );
    assert!(matches!(
        e.add_request(vec![], SamplingParams::greedy(1)),
        Err(EngineError::InvalidArgument { arg: "prompt", .. })
    ));
    assert!(matches!(
        e.add_request(vec![9999], SamplingParams::greedy(1)),
        Err(EngineError::InvalidArgument { arg: "prompt", .. })
    ));
    let bad = SamplingParams { temperature: -2.0, ..SamplingParams::default() };
    assert!(matches!(e.add_request(vec![5], bad), Err(EngineError::InvalidArgument { arg: "temperature", .. })));
    assert!(!e.has_work(), "nothing was queued");
}

/// A model whose logits are all NaN (its final norm's weights overwritten) ends each request
/// with `NonFiniteLogits` and no token, greedy or drawn, instead of sampling token 0 forever; the
/// engine stays usable (every request finishes, blocks are freed).
#[test]
fn non_finite_logits_end_the_request() {
    let spec = TinySpec { layers: 1, hidden: 64, heads: 4, kv_heads: 2, context: 128, ..TinySpec::default() };
    let mut bytes = tiny_model(&spec, 9);
    let info = GgufFile::from_bytes(bytes.clone()).unwrap().tensor("output_norm.weight").unwrap().clone();
    assert_eq!(info.dtype, pal_model::gguf::GgmlType::F32);
    for x in bytes[info.offset..info.offset + info.nbytes].chunks_exact_mut(4) {
        x.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let f = Arc::new(GgufFile::from_bytes(bytes).unwrap());
    let mut e = Engine::new(LlamaModel::load(f).unwrap(), None, EngineConfig::with_capacity(256)).unwrap();
    for temperature in [0.0, 0.8] {
        for n in [3, 40] {
            let p = SamplingParams { temperature, top_p: 0.9, ..SamplingParams::greedy(4) };
            e.add_request((0..n).map(|i| 5 + i as u32).collect(), p).unwrap();
        }
    }
    let outs = e.run(|_, _| {}).unwrap();
    assert_eq!(outs.len(), 4);
    for o in &outs {
        assert_eq!((o.finish, o.gen_ids.len()), (Some(FinishReason::NonFiniteLogits), 0), "request {}", o.id);
    }
    assert_eq!(e.cache_stats().used, 0, "every block freed");
}
