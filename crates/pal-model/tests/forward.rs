//! The paged forward (chunked prefill with history, batched decode, scattered blocks) against the
//! dense single-sequence oracle, on tiny random GGUF models written by the test itself.

use pal_core::{f16, Element, KvLayout, PageTable};
use pal_kernels::dispatch::{AttentionPath, Dispatch};
use pal_model::dense::DenseLlama;
use pal_model::gguf::{GgmlType, GgufFile};
use pal_model::testing::{tiny_model, TinySpec};
use pal_model::{KvCache, LlamaModel, StepInput};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

struct Seq {
    tokens: Vec<u32>,
    pages: Vec<u32>,
    done: usize,
}

/// Runs `seqs` through the paged forward in steps of `chunks[step][seq]` new tokens each and
/// returns, per sequence, the logits of every position, for comparison with the dense oracle.
fn paged_logits<KV: Element>(
    model: &LlamaModel,
    seqs: &mut [Seq],
    chunks: &[Vec<usize>],
    block: usize,
    rng: &mut impl Rng,
) -> Vec<Vec<f32>> {
    let vocab = model.config.vocab_size;
    let need: usize = seqs.iter().map(|s| s.tokens.len().div_ceil(block)).sum();
    // Twice the blocks needed, handed out in random order: pages are scattered through the pool.
    let mut free: Vec<u32> = (0..(2 * need) as u32).collect();
    free.shuffle(rng);
    let layout = KvLayout::new(2 * need, block, model.config.num_kv_heads, model.config.head_dim).unwrap();
    let mut cache = KvCache::<KV>::new(model.config.num_layers, layout);
    let mut out: Vec<Vec<f32>> = seqs.iter().map(|s| vec![f32::NAN; s.tokens.len() * vocab]).collect();
    for step in chunks {
        let (mut tokens, mut positions, mut slots, mut qo, mut lens, mut lists) =
            (vec![], vec![], vec![], vec![0u32], vec![], vec![]);
        let mut owners = Vec::new();
        for (si, (s, &n)) in seqs.iter_mut().zip(step).enumerate() {
            if n == 0 {
                continue;
            }
            let end = s.done + n;
            while s.pages.len() * block < end {
                s.pages.push(free.pop().unwrap());
            }
            for p in s.done..end {
                tokens.push(s.tokens[p]);
                positions.push(p as u32);
                slots.push(Some(s.pages[p / block] * block as u32 + (p % block) as u32));
                owners.push((si, p));
            }
            qo.push(tokens.len() as u32);
            lens.push(end);
            lists.push(s.pages[..end.div_ceil(block)].to_vec());
            s.done = end;
        }
        let table = PageTable::from_lists(&lists, &lens, block).unwrap();
        let rows: Vec<usize> = (0..tokens.len()).collect();
        let input = StepInput {
            tokens: &tokens,
            positions: &positions,
            slots: &slots,
            qo_indptr: &qo,
            page_table: &table,
            logit_rows: &rows,
        };
        let logits = model.forward(&input, &mut cache).unwrap();
        for (r, &(si, p)) in owners.iter().enumerate() {
            out[si][p * vocab..(p + 1) * vocab].copy_from_slice(&logits[r * vocab..(r + 1) * vocab]);
        }
    }
    out
}

/// How close the paged forward must come to the dense oracle, relative to the oracle's logits of
/// each sequence: the largest error against the largest |logit|, and the root-mean-square error
/// against the root-mean-square logit.
#[derive(Clone, Copy, Debug)]
struct Tolerance {
    max_rel: f32,
    rms_rel: f32,
}

impl Tolerance {
    /// Both bounds at `tol`: for paths that round only in f32/f16 arithmetic.
    fn tight(tol: f32) -> Self {
        Tolerance { max_rel: tol, rms_rel: tol }
    }
}

fn check(spec: TinySpec, kv_f16: bool, block: usize, tol: f32) {
    check_with(spec, kv_f16, block, Tolerance::tight(tol), Dispatch::Auto, false)
}

fn check_with(spec: TinySpec, kv_f16: bool, block: usize, tol: Tolerance, attention: Dispatch, float_acts: bool) {
    let seed = pal_kernels::testing::fresh_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut model = LlamaModel::load(Arc::new(GgufFile::from_bytes(tiny_model(&spec, seed)).unwrap())).unwrap();
    model.set_attention(attention);
    if float_acts {
        model.use_float_activations();
    }
    let vocab = model.config.vocab_size as u32;
    // Three sequences: prefill in uneven chunks (with history), then batched decode steps, with
    // a sequence sitting a step out so that prefill and decode rows mix in one batch.
    let lens = [23usize, 9, 31];
    let chunks = vec![
        vec![7, 9, 1],
        vec![10, 0, 20],
        vec![6, 0, 5],
        vec![0, 0, 1],
        vec![0, 0, 1],
        vec![0, 0, 1],
        vec![0, 0, 1],
        vec![0, 0, 1],
    ];
    for (i, &l) in lens.iter().enumerate() {
        assert_eq!(chunks.iter().map(|c| c[i]).sum::<usize>(), l);
    }
    let mut seqs: Vec<Seq> = lens
        .iter()
        .map(|&l| Seq { tokens: (0..l).map(|_| rng.gen_range(0..vocab)).collect(), pages: vec![], done: 0 })
        .collect();
    let got = if kv_f16 {
        paged_logits::<f16>(&model, &mut seqs, &chunks, block, &mut rng)
    } else {
        paged_logits::<f32>(&model, &mut seqs, &chunks, block, &mut rng)
    };
    let dense = DenseLlama::new(&model);
    for (si, s) in seqs.iter().enumerate() {
        let want = dense.logits(&s.tokens);
        assert!(got[si].iter().all(|v| v.is_finite()), "seed {seed}: sequence {si} has non-finite logits");
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = got[si].iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        let err2: f64 = got[si].iter().zip(&want).map(|(g, w)| ((g - w) as f64).powi(2)).sum();
        let want2: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
        let rms_rel = (err2 / want2).sqrt() as f32;
        assert!(
            err <= tol.max_rel * scale && rms_rel <= tol.rms_rel,
            "{spec:?} kv_f16={kv_f16} block={block} {attention:?} float_acts={float_acts} seed={seed} (rerun with \
             PAL_TEST_SEED={seed}): sequence {si} max |err| {err} vs max |logit| {scale}, rms error {rms_rel} of the \
             rms logit; allowed {tol:?}"
        );
    }
}

#[test]
fn f32_weights_match_dense_oracle_tightly() {
    check(TinySpec::default(), false, 4, 1e-4);
    check(TinySpec { heads: 4, kv_heads: 4, ..TinySpec::default() }, false, 1, 1e-4);
    check(TinySpec { heads: 8, kv_heads: 2, hidden: 128, ..TinySpec::default() }, false, 16, 1e-4);
}

#[test]
fn forced_paths_match_the_dense_oracle_too() {
    // The caller's override of the dispatch policy: the same forward through gather-then-dense
    // attention, and through the fused kernels named explicitly.
    for path in [AttentionPath::Gather, AttentionPath::Fused] {
        let forced = Dispatch::Force(path);
        check_with(TinySpec::default(), false, 4, Tolerance::tight(1e-4), forced, false);
        let spec = TinySpec { heads: 8, kv_heads: 2, hidden: 128, ..TinySpec::default() };
        check_with(spec, true, 16, Tolerance::tight(1e-2), forced, false);
    }
}

#[test]
fn f16_cache_and_tied_head() {
    check(TinySpec { tied: true, weights: GgmlType::F16, ..TinySpec::default() }, true, 8, 1e-2);
}

#[test]
fn qwen2_biases_and_half_split_rope() {
    check(TinySpec { architecture: "qwen2", bias: true, ..TinySpec::default() }, false, 4, 1e-4);
}

#[test]
fn quantized_weights_are_wired_exactly() {
    // With unrounded f32 activations a Q8_0/Q4_x model is the oracle's to f32 rounding: this is
    // where a wrong matrix, row, group or nibble order would show.
    for w in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL] {
        let spec = TinySpec { weights: w, ..TinySpec::default() };
        check_with(spec, false, 16, Tolerance::tight(1e-4), Dispatch::Auto, true);
    }
    for w in [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS] {
        check_with(k_quant_spec(w), false, 8, Tolerance::tight(1e-4), Dispatch::Auto, true);
    }
}

#[test]
fn quantized_weights_match_within_activation_rounding() {
    // The integer kernels multiply activations rounded to 8-bit blocks (a step of 1/127 of the
    // block's largest value, as llama.cpp does) and the cache is f16; the oracle is f32/f64
    // throughout. On these random two-layer models that moves the logits, over 1800 sequences
    // per format: rms error 1.5% of the rms logit (median; largest 2.6%), largest error 2.0% of
    // the largest logit (median; 3.8% at the 99th percentile, 5.8% at most: single rounding
    // flips, hence the wide bound). Wiring errors are O(100%) and are caught to 1e-4 above; the
    // kernels themselves are checked to the bit and to 1e-5 in tests/quant.rs.
    let tol = Tolerance { max_rel: 0.12, rms_rel: 0.04 };
    for w in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL] {
        check_with(TinySpec { weights: w, ..TinySpec::default() }, true, 16, tol, Dispatch::Auto, false);
    }
    for w in [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS] {
        check_with(k_quant_spec(w), true, 8, tol, Dispatch::Auto, false);
    }
}

/// A tiny model whose rows are whole K-quant super-blocks (256).
fn k_quant_spec(weights: GgmlType) -> TinySpec {
    TinySpec { weights, hidden: 256, heads: 4, kv_heads: 2, ffn: 256, ..TinySpec::default() }
}

#[test]
fn float_weights_take_the_generic_paths() {
    // F16 has no integer dot product: f32 dot products below 4 rows, SGEMM tiles above.
    check(TinySpec { weights: GgmlType::F16, ..TinySpec::default() }, false, 8, 1e-4);
}

#[test]
fn rope_frequency_factors_and_linear_scaling() {
    // Llama 3.1's `rope_freqs` tensor, linear position interpolation, and both at once; the oracle
    // applies the divisors in its own f64 RoPE. Long enough for the slow pairs to matter.
    check(TinySpec { rope_freqs: true, ..TinySpec::default() }, false, 4, 1e-4);
    check(TinySpec { linear_rope: Some(4.0), ..TinySpec::default() }, false, 8, 1e-4);
    check(
        TinySpec { rope_freqs: true, linear_rope: Some(2.0), theta: 500_000.0, ..TinySpec::default() },
        false,
        16,
        1e-4,
    );
}

#[test]
fn rope_factors_change_the_logits_and_bad_ones_are_refused() {
    use pal_model::ModelError;
    let load = |s: &TinySpec| LlamaModel::load(Arc::new(GgufFile::from_bytes(tiny_model(s, 7)).unwrap()));
    let plain = load(&TinySpec::default()).unwrap();
    let scaled = load(&TinySpec { rope_freqs: true, ..TinySpec::default() }).unwrap();
    let f = scaled.config.rope_freq_factors.clone().unwrap();
    assert_eq!(f.len(), 8);
    assert!((f[0] - 1.0).abs() < 1e-6 && (f[7] - 8.0).abs() < 1e-5);
    let toks: Vec<u32> = (0..40).map(|i| (i * 37 % 200) as u32).collect();
    let (a, b) = (DenseLlama::new(&plain).logits(&toks), DenseLlama::new(&scaled).logits(&toks));
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3), "the factors must reach the forward");
    assert!(matches!(
        load(&TinySpec { linear_rope: Some(0.0), ..TinySpec::default() }),
        Err(ModelError::BadMetadata { .. })
    ));
}
