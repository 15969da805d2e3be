//! Tiny random GGUF models for tests: a real file layout (metadata, tokenizer, tensors) with
//! random weights, small enough to check against [`crate::dense::DenseLlama`] in milliseconds.

use crate::gguf::{type_id, GgmlType, GgufWriter, MetaArray, MetaValue};
use crate::quant::quantize;

/// Shape and encoding of a tiny model.
#[derive(Clone, Debug)]
pub struct TinySpec {
    pub architecture: &'static str,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub context: usize,
    pub theta: f32,
    /// Encoding of the matrices (norms stay F32). K-quants need `hidden` and `ffn` multiples of 256.
    pub weights: GgmlType,
    /// No `output.weight`: the head reuses the embedding.
    pub tied: bool,
    /// q/k/v biases (Qwen2).
    pub bias: bool,
    /// Write a `rope_freqs.weight` tensor (Llama 3.1 style per-pair frequency divisors).
    pub rope_freqs: bool,
    /// Write `rope.scaling.type = linear` with this factor.
    pub linear_rope: Option<f32>,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            architecture: "llama",
            layers: 2,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            ffn: 96,
            context: 256,
            theta: 10_000.0,
            weights: GgmlType::F32,
            tied: false,
            bias: false,
            rope_freqs: false,
            linear_rope: None,
        }
    }
}

/// The byte-level vocabulary of tiny models: the 256 byte symbols, a few merges, and the chat
/// control tokens.
pub const TINY_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// GPT-2's byte-to-symbol map (printable bytes map to themselves, the others above U+0100).
pub fn byte_symbols() -> Vec<char> {
    let printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut map = vec!['\0'; 256];
    for &b in &printable {
        map[b as usize] = char::from_u32(b).unwrap();
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            map[b as usize] = char::from_u32(256 + n).unwrap();
            n += 1;
        }
    }
    map
}

fn tiny_vocab() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = TINY_SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![3i32; tokens.len()];
    for c in byte_symbols() {
        tokens.push(c.to_string());
        types.push(1);
    }
    let merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (tokens, merges.iter().map(|s| s.to_string()).collect(), types)
}

struct Lcg(u64);
impl Lcg {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// `rows x cols` random weights of about `scale` encoded as `dtype`: round-to-nearest for the
/// plain and 32-element formats, random but well-formed blocks for the K-quants (which have no
/// encoder here). `cols` must be whole blocks.
pub fn random_weights(dtype: GgmlType, rows: usize, cols: usize, scale: f32, seed: u64) -> Vec<u8> {
    random_encoded(&mut Lcg(seed ^ 0x5851_F42D_4C95_7F2D), dtype, rows * cols, scale)
}

/// `elems` random values of about `scale` as `dtype`: [`quantize`]d where it has an encoder,
/// otherwise random but well-formed blocks.
fn random_encoded(rng: &mut Lcg, dtype: GgmlType, elems: usize, scale: f32) -> Vec<u8> {
    quantize(dtype, &rng.vec(elems, scale)).unwrap_or_else(|| k_quant_blocks(rng, dtype, elems, scale))
}

/// Random but well-formed blocks of a format without an encoder here (K-quants, IQ4) for `elems`
/// elements, with magnitudes around `scale`.
fn k_quant_blocks(rng: &mut Lcg, dtype: GgmlType, elems: usize, scale: f32) -> Vec<u8> {
    let blocks = elems / dtype.block_elems();
    use half::f16;
    let mut byte = || ((rng.next() + 1.0) * 127.99) as u8;
    let mut out = Vec::with_capacity(blocks * dtype.block_bytes());
    for _ in 0..blocks {
        if dtype == GgmlType::Q4_K {
            // x = d * sc * q - dmin * m with 6-bit sc, m and 4-bit q: keep d * 63 * 15 ~ 2 scale.
            out.extend_from_slice(&f16::from_f32(2.0 * scale / (63.0 * 15.0)).to_le_bytes());
            out.extend_from_slice(&f16::from_f32(scale / 63.0).to_le_bytes());
            out.extend((0..140).map(|_| byte()));
        } else if dtype == GgmlType::IQ4_NL {
            // x = d * grid[q] with |grid| <= 127: d * 127 ~ scale.
            out.extend_from_slice(&f16::from_f32(scale / 127.0).to_le_bytes());
            out.extend((0..16).map(|_| byte()));
        } else if dtype == GgmlType::IQ4_XS {
            // x = d * (ls - 32) * grid[q]: d * 32 * 127 ~ scale.
            out.extend_from_slice(&f16::from_f32(scale / (32.0 * 127.0)).to_le_bytes());
            out.extend((0..134).map(|_| byte()));
        } else if dtype == GgmlType::Q2_K {
            // x = d * sc * q - dmin * m with 4-bit sc, m and 2-bit q: d * 15 * 3 ~ 2 scale.
            out.extend((0..80).map(|_| byte()));
            out.extend_from_slice(&f16::from_f32(2.0 * scale / (15.0 * 3.0)).to_le_bytes());
            out.extend_from_slice(&f16::from_f32(scale / 15.0).to_le_bytes());
        } else if dtype == GgmlType::Q3_K {
            // x = d * (sc - 32) * (q - 4) with 6-bit sc and 3-bit q: d * 32 * 4 ~ scale.
            out.extend((0..108).map(|_| byte()));
            out.extend_from_slice(&f16::from_f32(scale / (32.0 * 4.0)).to_le_bytes());
        } else if dtype == GgmlType::Q5_K {
            // As Q4_K with 5-bit q: d * 63 * 31 ~ 2 scale.
            out.extend_from_slice(&f16::from_f32(2.0 * scale / (63.0 * 31.0)).to_le_bytes());
            out.extend_from_slice(&f16::from_f32(scale / 63.0).to_le_bytes());
            out.extend((0..172).map(|_| byte()));
        } else {
            // x = d * sc * (q - 32) with signed 8-bit sc and 6-bit q: d * 127 * 32 ~ scale.
            out.extend((0..192).map(|_| byte()));
            out.extend((0..16).map(|_| byte()));
            out.extend_from_slice(&f16::from_f32(scale / (127.0 * 32.0)).to_le_bytes());
        }
    }
    out
}

fn strings(v: &[String]) -> MetaValue {
    MetaValue::Array(MetaArray {
        elem_type: type_id::STRING,
        values: v.iter().map(|s| MetaValue::String(s.clone())).collect(),
    })
}

/// Encode a tiny model as GGUF bytes; `seed` picks the random weights.
pub fn tiny_model(spec: &TinySpec, seed: u64) -> Vec<u8> {
    let (tokens, merges, types) = tiny_vocab();
    let vocab = tokens.len();
    let a = spec.architecture;
    let d = spec.hidden / spec.heads;
    let mut w = GgufWriter::new();
    let u32v = |v: usize| MetaValue::U32(v as u32);
    w.meta("general.architecture", MetaValue::String(a.into()))
        .meta(&format!("{a}.block_count"), u32v(spec.layers))
        .meta(&format!("{a}.context_length"), u32v(spec.context))
        .meta(&format!("{a}.embedding_length"), u32v(spec.hidden))
        .meta(&format!("{a}.feed_forward_length"), u32v(spec.ffn))
        .meta(&format!("{a}.attention.head_count"), u32v(spec.heads))
        .meta(&format!("{a}.attention.head_count_kv"), u32v(spec.kv_heads))
        .meta(&format!("{a}.rope.freq_base"), MetaValue::F32(spec.theta))
        .meta(&format!("{a}.attention.layer_norm_rms_epsilon"), MetaValue::F32(1e-5))
        .meta("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", MetaValue::String("smollm".into()))
        .meta("tokenizer.ggml.tokens", strings(&tokens))
        .meta(
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray { elem_type: type_id::I32, values: types.iter().map(|&t| MetaValue::I32(t)).collect() }),
        )
        .meta("tokenizer.ggml.merges", strings(&merges))
        .meta("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .meta("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
        .meta("tokenizer.ggml.add_bos_token", MetaValue::Bool(false))
        .meta(
            "tokenizer.chat_template",
            MetaValue::String(
                "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into(),
            ),
        );
    if let Some(f) = spec.linear_rope {
        w.meta(&format!("{a}.rope.scaling.type"), MetaValue::String("linear".into()))
            .meta(&format!("{a}.rope.scaling.factor"), MetaValue::F32(f));
    }
    if spec.rope_freqs {
        // Divisors growing from 1 (fast pairs untouched) to 8 (slow pairs), as Llama 3.1's do.
        let f: Vec<f32> = (0..d / 2).map(|i| 8f32.powf(i as f32 / (d / 2 - 1).max(1) as f32)).collect();
        w.tensor("rope_freqs.weight", &[d / 2], GgmlType::F32, quantize(GgmlType::F32, &f).unwrap()).unwrap();
    }
    let mut rng = Lcg(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut mat = |w: &mut GgufWriter, name: &str, cols: usize, rows: usize, dtype: GgmlType, scale: f32| {
        let bytes = random_encoded(&mut rng, dtype, rows * cols, scale);
        w.tensor(name, &[cols, rows], dtype, bytes).expect("sizes match");
    };
    let (e, f, qd, kvd) = (spec.hidden, spec.ffn, spec.heads * d, spec.kv_heads * d);
    let s_in = 1.0 / (e as f32).sqrt() * 1.7;
    mat(&mut w, "token_embd.weight", e, vocab, spec.weights, 1.0);
    for l in 0..spec.layers {
        let n = |s: &str| format!("blk.{l}.{s}");
        let norm = |w: &mut GgufWriter, name: &str| {
            let g: Vec<f32> = (0..e).map(|i| 1.0 + 0.2 * ((i * 7 + l) as f32 * 0.37).sin()).collect();
            w.tensor(name, &[e], GgmlType::F32, quantize(GgmlType::F32, &g).unwrap()).unwrap();
        };
        norm(&mut w, &n("attn_norm.weight"));
        norm(&mut w, &n("ffn_norm.weight"));
        mat(&mut w, &n("attn_q.weight"), e, qd, spec.weights, s_in * 2.0);
        mat(&mut w, &n("attn_k.weight"), e, kvd, spec.weights, s_in * 2.0);
        mat(&mut w, &n("attn_v.weight"), e, kvd, spec.weights, s_in);
        mat(&mut w, &n("attn_output.weight"), qd, e, spec.weights, 1.0 / (qd as f32).sqrt());
        mat(&mut w, &n("ffn_gate.weight"), e, f, spec.weights, s_in);
        mat(&mut w, &n("ffn_up.weight"), e, f, spec.weights, s_in);
        mat(&mut w, &n("ffn_down.weight"), f, e, spec.weights, 1.0 / (f as f32).sqrt());
        if spec.bias {
            for (name, len) in [("attn_q.bias", qd), ("attn_k.bias", kvd), ("attn_v.bias", kvd)] {
                let b: Vec<f32> = (0..len).map(|i| 0.1 * ((i + l) as f32).cos()).collect();
                w.tensor(&n(name), &[len], GgmlType::F32, quantize(GgmlType::F32, &b).unwrap()).unwrap();
            }
        }
    }
    let g: Vec<f32> = (0..e).map(|i| 1.0 + 0.1 * (i as f32).cos()).collect();
    w.tensor("output_norm.weight", &[e], GgmlType::F32, quantize(GgmlType::F32, &g).unwrap()).unwrap();
    if !spec.tied {
        mat(&mut w, "output.weight", e, vocab, spec.weights, s_in * 3.0);
    }
    w.to_bytes()
}
