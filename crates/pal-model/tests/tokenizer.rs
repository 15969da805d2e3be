//! Tokenizers of every kind against llama.cpp: tiny vocab-only GGUF files (SentencePiece with byte
//! fallback; byte-level BPE with the gpt-2, llama-bpe, qwen2 and smollm pre-tokenizers), token ids
//! from llama-cpp-python (`bench/golden/make_tokenizer_golden.py`). Plus decode round trips and
//! the chat template.

use pal_model::gguf::GgufFile;
use pal_model::testing::{tiny_model, TinySpec};
use pal_model::{ChatMessage, ModelError, Tokenizer};

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tok")
}

#[test]
fn token_ids_equal_llama_cpp_for_every_tokenizer_kind() {
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("golden.json")).unwrap()).unwrap();
    let files = golden["files"].as_object().unwrap();
    assert_eq!(files.len(), 5);
    for (name, cases) in files {
        let f = GgufFile::open(dir().join(format!("{name}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&f).unwrap();
        for c in cases.as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let want: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(tok.encode(text, true).unwrap(), want, "{name}: {text:?}");
        }
    }
}

#[test]
fn decode_inverts_encode() {
    for name in ["spm", "gpt2", "llama-bpe", "qwen2", "smollm"] {
        let f = GgufFile::open(dir().join(format!("{name}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&f).unwrap();
        for text in ["Hello world", "the cat  in the hat", "CJK 日本語 🙂", "tabs\tand\nnew lines"] {
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(tok.decode(&ids, false).unwrap(), text, "{name}");
        }
        assert!(matches!(tok.decode(&[u32::MAX], false), Err(ModelError::InvalidArgument { arg: "ids", .. })));
    }
}

#[test]
fn chat_template_renders_messages_and_generation_prompt() {
    let f = GgufFile::from_bytes(tiny_model(&TinySpec::default(), 1)).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let text = tok
        .apply_chat_template(&[ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi!")], true)
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    );
    // The control tokens of the rendered text are single ids.
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 3, "<|im_start|> x3 in {ids:?}");
    assert!(tok.stop_ids().contains(&2), "<|im_end|> ends generation");
}

/// The incremental text equals the full decode after every token whose text is complete, for
/// every tokenizer kind: random ids (byte pieces that split UTF-8 characters, special tokens that
/// decode to nothing, SentencePiece's stripped leading space) and the ids of real texts.
#[test]
fn text_stream_equals_the_full_decode() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for name in ["spm", "gpt2", "llama-bpe", "qwen2", "smollm"] {
        let f = GgufFile::open(dir().join(format!("{name}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&f).unwrap();
        let vocab = tok.vocab_size() as u32;
        let mut streams: Vec<Vec<u32>> =
            (0..40).map(|_| (0..rng.gen_range(1..60)).map(|_| rng.gen_range(0..vocab)).collect()).collect();
        for text in ["Hello world, again", "CJK 日本語 🙂 and é", "  two  spaces\n\nand <|im_end|> inside"] {
            streams.push(tok.encode(text, false).unwrap());
        }
        // Streams mostly of byte pieces and special tokens: byte-fallback runs that a skipped
        // special token splits (whole once it vanishes), valid or not.
        let focus: Vec<u32> = (0..vocab)
            .filter(|&i| tok.token_text(i).is_some_and(|t| t.len() == 6 && t.starts_with("<0x")))
            .chain(tok.bos())
            .chain(tok.eos())
            .collect();
        if focus.len() > 2 {
            for _ in 0..40 {
                let n = rng.gen_range(2..40);
                streams.push(
                    (0..n)
                        .map(|_| {
                            if rng.gen_bool(0.85) {
                                focus[rng.gen_range(0..focus.len())]
                            } else {
                                rng.gen_range(0..vocab)
                            }
                        })
                        .collect(),
                );
            }
        }
        for skip_special in [true, false] {
            for ids in &streams {
                let mut s = pal_model::TextStream::new();
                for n in 1..=ids.len() {
                    let before = s.text().to_string();
                    let at = s.update(&tok, &ids[..n], skip_special).unwrap();
                    let full = tok.decode(&ids[..n], skip_special).unwrap();
                    let ctx = format!("{name} seed {seed} skip {skip_special} ids {:?}", &ids[..n]);
                    match at {
                        Some(at) => {
                            assert!(at <= before.len() && s.text()[..at] == before[..at], "{ctx}");
                        }
                        None => assert_eq!(s.text(), before, "{ctx}"),
                    }
                    // While the end is an incomplete character the full decode may show more of
                    // it as U+FFFD (a byte-fallback run decodes as a whole); once complete, equal.
                    if !full.ends_with('\u{FFFD}') {
                        assert_eq!(s.text(), full, "{ctx}");
                    }
                }
            }
        }
    }
}
