//! Tokenizer built from GGUF metadata with the `tokenizers` crate, plus the chat template.
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE from `tokens` + `merges`, pre-tokenized by the
//!   regexes llama.cpp uses for `tokenizer.ggml.pre` (smollm, llama-bpe, gpt2, qwen2, ...).
//! - `tokenizer.ggml.model = "llama"`: SentencePiece vocabulary (`tokens` + `scores`, byte
//!   fallback `<0xXX>`), spaces as `▁` and a leading `▁`; merges are derived from the vocabulary,
//!   ranked by the score of the merged piece as SentencePiece's BPE does.
//! - Control and user-defined tokens (`token_type` 3 and 4) are matched whole in the text.
//! - BOS is added when `tokenizer.ggml.add_bos_token` says so (SentencePiece defaults to yes).

use crate::gguf::GgufFile;
use crate::{ModelError, Result};
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer regexes (applied in order, each splitting the pieces of the previous) that
/// llama.cpp uses for a `tokenizer.ggml.pre` name.
fn pre_regexes(pre: &str) -> Option<Vec<&'static str>> {
    Some(match pre {
        "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" => vec![GPT2_REGEX],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => vec![r"\p{N}", GPT2_REGEX],
        "llama-bpe" | "llama3" | "llama-v3" | "dbrx" | "smaug-bpe" | "falcon3" => vec![LLAMA3_REGEX],
        "qwen2" | "stablelm2" | "deepseek-r1-qwen" => vec![QWEN2_REGEX],
        _ => return None,
    })
}

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// Text <-> token ids for a GGUF model, plus its special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    tokens: Vec<String>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    stop_ids: Vec<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({} tokens, bos {:?}, eos {:?})", self.tokens.len(), self.bos, self.eos)
    }
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// Texts of end-of-generation tokens llama.cpp recognises besides the declared EOS.
const EOG_TEXTS: &[&str] =
    &["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "</s>"];

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let kind = f.get_str("tokenizer.ggml.model")?;
        let tokens: Vec<String> = f
            .get_array("tokenizer.ggml.tokens")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ModelError::bad_meta("tokenizer.ggml.tokens", format!("entry {i} is not a string")))
            })
            .collect::<Result<_>>()?;
        let n = tokens.len();
        let types: Vec<i64> = match f.get("tokenizer.ggml.token_type") {
            Some(_) => f.get_array("tokenizer.ggml.token_type")?.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            None => vec![1; n],
        };
        if types.len() != n {
            return Err(ModelError::bad_meta(
                "tokenizer.ggml.token_type",
                format!("{} types for {n} tokens", types.len()),
            ));
        }
        let id = |key: &str| -> Result<Option<u32>> {
            match f.get(key) {
                None => Ok(None),
                Some(_) => {
                    let v = f.get_u64(key)?;
                    if v as usize >= n {
                        return Err(ModelError::bad_meta(key, format!("{v} is outside the vocabulary ({n})")));
                    }
                    Ok(Some(v as u32))
                }
            }
        };
        let (bos, eos) = (id("tokenizer.ggml.bos_token_id")?, id("tokenizer.ggml.eos_token_id")?);
        let flag = |key: &str, default: bool| f.get(key).and_then(|v| v.as_bool()).unwrap_or(default);
        let mut vocab: Vocab = Vocab::default();
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
        }
        let mut inner = match kind {
            "gpt2" => {
                let merges = parse_merges(f)?;
                let model = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
                let pre = f.get_str("tokenizer.ggml.pre").unwrap_or("default");
                let regexes = pre_regexes(pre).ok_or_else(|| {
                    ModelError::bad_meta("tokenizer.ggml.pre", format!("pre-tokenizer `{pre}` is not supported"))
                })?;
                let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
                for r in regexes {
                    let split = Split::new(SplitPattern::Regex(r.into()), SplitDelimiterBehavior::Isolated, false)
                        .map_err(tok_err)?;
                    steps.push(split.into());
                }
                steps.push(ByteLevel::new(false, false, false).into());
                let mut t = tokenizers::Tokenizer::new(model);
                t.with_pre_tokenizer(Some(PreSequence::new(steps)));
                t.with_decoder(Some(ByteLevelDecoder::default()));
                t
            }
            "llama" => {
                let scores: Vec<f64> =
                    f.get_array("tokenizer.ggml.scores")?.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect();
                if scores.len() != n {
                    return Err(ModelError::bad_meta(
                        "tokenizer.ggml.scores",
                        format!("{} scores for {n} tokens", scores.len()),
                    ));
                }
                let merges = spm_merges(&tokens, &scores, &types);
                let unk = id("tokenizer.ggml.unknown_token_id")?.map(|u| tokens[u as usize].clone());
                let mut b = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true);
                if let Some(u) = unk {
                    b = b.unk_token(u);
                }
                let model = b.build().map_err(tok_err)?;
                let mut norm: Vec<NormalizerWrapper> = Vec::new();
                if flag("tokenizer.ggml.add_space_prefix", true) {
                    norm.push(Prepend::new("▁".into()).into());
                }
                norm.push(Replace::new(" ", "▁").map_err(tok_err)?.into());
                let mut t = tokenizers::Tokenizer::new(model);
                t.with_normalizer(Some(NormalizerSequence::new(norm)));
                let dec: Vec<DecoderWrapper> = vec![
                    tokenizers::decoders::DecoderWrapper::Replace(Replace::new("▁", " ").map_err(tok_err)?),
                    ByteFallback::new().into(),
                    Fuse::new().into(),
                    Strip::new(' ', 1, 0).into(),
                ];
                t.with_decoder(Some(DecoderSequence::new(dec)));
                t
            }
            other => {
                return Err(ModelError::bad_meta(
                    "tokenizer.ggml.model",
                    format!("tokenizer `{other}` is not supported"),
                ))
            }
        };
        // Control and user-defined tokens are matched whole, before the model sees the text.
        let specials: Vec<AddedToken> = (0..n)
            .filter(|&i| matches!(types[i], 3 | 4))
            .map(|i| AddedToken::from(tokens[i].clone(), types[i] == 3).normalized(false))
            .collect();
        inner.add_special_tokens(&specials);
        let mut stop_ids: Vec<u32> = eos.into_iter().collect();
        for (i, t) in tokens.iter().enumerate() {
            if types[i] == 3 && EOG_TEXTS.contains(&t.as_str()) && !stop_ids.contains(&(i as u32)) {
                stop_ids.push(i as u32);
            }
        }
        Ok(Tokenizer {
            inner,
            add_bos: flag("tokenizer.ggml.add_bos_token", kind == "llama") && bos.is_some(),
            tokens,
            bos,
            eos,
            stop_ids,
            chat_template: f.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// Tokens that end generation: EOS and the end-of-turn tokens of the vocabulary.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Token ids of `text`, special tokens matched whole, BOS first when the model wants it and
    /// `add_bos` is set (as llama.cpp's `tokenize(text, add_special, parse_special=true)`).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`; special tokens are kept unless `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.tokens.len()) {
            return Err(ModelError::invalid(
                "ids",
                format!("token {bad} is outside the vocabulary ({})", self.tokens.len()),
            ));
        }
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// Render the file's chat template (Jinja, via `minijinja`) for `messages`, ending with the
    /// assistant prompt when `add_generation_prompt`.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let src = self
            .chat_template
            .as_deref()
            .ok_or_else(|| ModelError::Template("the model has no chat template".into()))?;
        let mut env = minijinja::Environment::new();
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", src).map_err(|e| ModelError::Template(e.to_string()))?;
        let msgs: Vec<HashMap<&str, &str>> = messages
            .iter()
            .map(|m| HashMap::from([("role", m.role.as_str()), ("content", m.content.as_str())]))
            .collect();
        let text = |id: Option<u32>| id.and_then(|i| self.token_text(i)).unwrap_or("").to_string();
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => msgs,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => text(self.bos),
                    eos_token => text(self.eos),
                })
            })
            .map_err(|e| ModelError::Template(e.to_string()))
    }
}

fn parse_merges(f: &GgufFile) -> Result<Vec<(String, String)>> {
    f.get_array("tokenizer.ggml.merges")?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let s = v
                .as_str()
                .ok_or_else(|| ModelError::bad_meta("tokenizer.ggml.merges", format!("entry {i} is not a string")))?;
            let (a, b) = s.split_once(' ').ok_or_else(|| {
                ModelError::bad_meta("tokenizer.ggml.merges", format!("entry {i} `{s}` is not `left right`"))
            })?;
            Ok((a.to_string(), b.to_string()))
        })
        .collect()
}

/// Merges of a SentencePiece BPE vocabulary: every split of a normal piece into two pieces of the
/// vocabulary, ranked by the merged piece's score (higher first), then by the pieces' ids.
fn spm_merges(tokens: &[String], scores: &[f64], types: &[i64]) -> Vec<(String, String)> {
    let index: HashMap<&str, usize> =
        tokens.iter().enumerate().filter(|(i, _)| types[*i] == 1).map(|(i, t)| (t.as_str(), i)).collect();
    let mut found: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (&piece, &id) in &index {
        for (cut, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(cut);
            if let (Some(&ia), Some(&ib)) = (index.get(a), index.get(b)) {
                found.push((scores[id], id, ia, ib));
            }
        }
    }
    found.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    found.into_iter().map(|(_, _, a, b)| (tokens[a].clone(), tokens[b].clone())).collect()
}
