//! SmolLM2: 16 different prompts generated together equal each prompt alone (greedy, up to the
//! 0.5-logit margin rule), with a pool small enough to force preemption and fragment block ids.

mod common;

use common::{assert_same_greedy, fragmented, greedy_margins};
use pal_engine::{Engine, EngineConfig, SamplingParams};
use pal_model::fetch::local_or_fetch;
use pal_model::{LlamaModel, Tokenizer};

const PROMPTS: [&str; 16] = [
    "The capital of France is",
    "Write a haiku about the sea:",
    "1, 2, 3, 4, 5,",
    "def add(a, b):",
    "The quick brown fox",
    "Photosynthesis is the process by which",
    "<|im_start|>user\nName three fruits.<|im_end|>\n<|im_start|>assistant\n",
    "In 1969, astronauts",
    "The best way to learn a language is",
    "SELECT * FROM users WHERE",
    "Once upon a time in a small village, there lived an old woman who had a cat named",
    "Water boils at",
    "My favourite colour is",
    "import numpy as np\n",
    "The mitochondria is",
    "A B C D E F G",
];

fn load() -> (LlamaModel, Tokenizer) {
    let path = local_or_fetch("smollm2").expect("fetch SmolLM2");
    let m = LlamaModel::open(path).unwrap();
    let t = Tokenizer::from_gguf(m.gguf()).unwrap();
    (m, t)
}

#[test]
fn sixteen_prompts_together_equal_each_alone() {
    let max = 24;
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(max) };
    let (m, t) = load();
    let ids: Vec<Vec<u32>> = PROMPTS.iter().map(|p| t.encode(p, true).unwrap()).collect();
    let mut alone_engine = Engine::new(m, Some(t), EngineConfig::with_capacity(1024)).unwrap();
    let mut alone = Vec::new();
    for p in &ids {
        alone_engine.add_request(p.clone(), params.clone()).unwrap();
        let out = alone_engine.run(|_, _| {}).unwrap().remove(0);
        let margins = greedy_margins(&mut alone_engine, &out);
        alone.push((out, margins));
    }

    let (m, t) = load();
    // 40 blocks of 8 tokens = 320 tokens, far below the ~700 that 16 prompts need together.
    let cfg = EngineConfig {
        block_size: 8,
        num_blocks: 40,
        max_batch_tokens: 96,
        max_seqs: 16,
        ..EngineConfig::with_capacity(0)
    };
    let mut e = Engine::new(m, Some(t), cfg).unwrap();
    for p in &ids {
        e.add_request(p.clone(), params.clone()).unwrap();
    }
    let mut saw_fragmented = false;
    let outs = e.run(|eng, _| saw_fragmented |= (0..16).any(|i| fragmented(&eng.block_table(i)))).unwrap();
    assert!(e.stats().preemptions >= 1, "a preemption was meant to be forced");
    assert!(saw_fragmented);
    let mut compared = 0;
    for (i, (o, (a, margins))) in outs.iter().zip(&alone).enumerate() {
        compared += assert_same_greedy(&o.gen_ids, &a.gen_ids, margins, 0.5, PROMPTS[i]);
    }
    // The margin rule stops each comparison at the first near-tie; 60-70 tokens survive it.
    assert!(compared >= 40, "only {compared} tokens above the margin");
    eprintln!("compared {compared} tokens, {} preemptions", e.stats().preemptions);
}
