//! `pal bench decode|prefill|append`: PAL's kernels beside the baselines on the same data, with
//! the machine's ceiling measured in the same run. See BENCHMARKS.md for the method.

mod append;
mod append_cuda;
mod ceiling;
mod cuda_cell;
mod decode;
mod decode_cuda;
mod prefill;
mod prefill_cuda;
mod timing;

use indicatif::{ProgressBar, ProgressStyle};
use pal_core::{DType, Device, PalError};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Decode,
    Prefill,
    Append,
}

#[derive(clap::Args)]
pub struct Args {
    /// Which op to time.
    #[arg(value_enum)]
    pub op: Op,
    /// auto, cpu or cuda.
    #[arg(long, default_value = "auto", value_parser = crate::parse_device)]
    pub device: Device,
    /// Sequences per step, comma-separated (default: decode 1,8; prefill 1; append 16).
    #[arg(long, value_delimiter = ',')]
    pub batch: Option<Vec<usize>>,
    /// KV tokens per sequence after the step, comma-separated (default: decode 4096,32768;
    /// prefill 512,4096; append 4096).
    #[arg(long, value_delimiter = ',')]
    pub context: Option<Vec<usize>>,
    /// New tokens per sequence (prefill chunk, append length); capped at the context.
    #[arg(long, default_value_t = 512)]
    pub new_tokens: usize,
    #[arg(long, default_value_t = 32)]
    pub hq: usize,
    #[arg(long, default_value_t = 8)]
    pub hkv: usize,
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    #[arg(long, default_value_t = 16)]
    pub page: usize,
    /// Storage type of q and the pool: f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: DType,
    /// Time budget per measurement, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub budget_ms: u64,
    /// Print one JSON array of rows instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured (op, kernel, shape).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: &'static str,
    pub kernel: &'static str,
    pub device: String,
    pub threads: usize,
    pub batch: usize,
    pub context: usize,
    pub new_tokens: usize,
    pub hq: usize,
    pub hkv: usize,
    pub head_dim: usize,
    pub page: usize,
    pub dtype: &'static str,
    pub ms: f64,
    pub min_ms: f64,
    pub iters: usize,
    pub bytes: f64,
    pub gbps: f64,
    pub gflops: Option<f64>,
    pub ceiling: &'static str,
    pub ceiling_value: f64,
    pub frac_of_ceiling: f64,
    pub speedup_vs_gather: Option<f64>,
    pub speedup_vs_dense: Option<f64>,
}

/// Shape of one benchmark cell.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    pub batch: usize,
    pub context: usize,
    pub new_tokens: usize,
    pub hq: usize,
    pub hkv: usize,
    pub head_dim: usize,
    pub page: usize,
    pub dtype: DType,
    pub budget: Duration,
}

/// Ceilings measured once per run.
#[derive(Clone, Copy, Debug)]
pub struct Ceilings {
    pub read_gbps: f64,
    pub copy_gbps: f64,
    pub fma_gflops: f64,
}

pub fn run(a: &Args, device: Device) -> Result<ExitCode, PalError> {
    pal_core::HeadConfig::new(a.hq, a.hkv, a.head_dim)?;
    if a.page == 0 {
        return Err(PalError::invalid("page", "must be at least 1"));
    }
    let batches = a.batch.clone().unwrap_or_else(|| match a.op {
        Op::Decode => vec![1, 8],
        Op::Prefill => vec![1],
        // 16 x 512 tokens: ~100 MB of q, k and v, well beyond the last-level cache.
        Op::Append => vec![16],
    });
    let contexts = a.context.clone().unwrap_or_else(|| match a.op {
        Op::Decode => vec![4096, 32768],
        Op::Prefill => vec![512, 4096],
        Op::Append => vec![4096],
    });
    if batches.contains(&0) || contexts.contains(&0) || a.new_tokens == 0 {
        return Err(PalError::invalid("batch/context/new-tokens", "every value must be at least 1"));
    }
    let gpu = match device {
        Device::Cuda => Some(pal_kernels::cuda::CudaDevice::probe()?),
        _ => None,
    };
    let dev_name = match &gpu {
        Some(g) => format!("cuda: {} ({}, {} SMs)", g.name(), g.arch(), g.sm_count()),
        None => format!("{device}: {}", crate::device::cpu_name()),
    };
    if !a.json {
        eprintln!("pal bench {:?} on {dev_name}", a.op);
        eprintln!("measuring ceilings...");
    }
    // On the CPU one 512 MiB read probe gives the opening read ceiling, and CPU decode times it
    // again in the same interleaved rounds as its kernels (see decode.rs).
    let cpu_probe = gpu.is_none().then(|| ceiling::ReadProbe::new(512));
    let ceil = match &gpu {
        Some(g) => {
            let buf = g.zeros::<u8>(2 << 30)?;
            let mut dst = g.zeros::<u8>(2 << 30)?;
            Ceilings {
                read_gbps: g.read_bandwidth(&buf, 20)?,
                copy_gbps: g.copy_bandwidth(&buf, &mut dst, 10)?,
                // The prefill's compute ceiling: cuBLAS bf16 GEMM (8192^3), in GFLOP/s.
                fma_gflops: if a.op == Op::Prefill { g.matmul_tflops_bf16(8192, 20)? * 1e3 } else { 0.0 },
            }
        }
        None => Ceilings {
            read_gbps: cpu_probe.as_ref().map_or(0.0, |p| p.gbps()),
            copy_gbps: ceiling::copy_bandwidth(256),
            fma_gflops: ceiling::fma_peak(),
        },
    };
    let cells: Vec<Cell> = batches
        .iter()
        .flat_map(|&batch| {
            contexts.iter().map(move |&context| Cell {
                batch,
                context,
                new_tokens: a.new_tokens.min(context),
                hq: a.hq,
                hkv: a.hkv,
                head_dim: a.head_dim,
                page: a.page,
                dtype: a.dtype,
                budget: Duration::from_millis(a.budget_ms),
            })
        })
        .collect();
    let bar = ProgressBar::new(cells.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} cells {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    for c in &cells {
        bar.set_message(format!("B={} L={}", c.batch, c.context));
        let mut r = match (a.op, &gpu) {
            (Op::Decode, Some(g)) => decode_cuda::run(g, c, ceil.read_gbps)?,
            (Op::Decode, None) => decode::run(c, cpu_probe.as_ref().expect("CPU runs have a probe"))?,
            (Op::Prefill, Some(g)) => prefill_cuda::run(g, c, ceil.fma_gflops)?,
            (Op::Prefill, None) => prefill::run(c, &ceil)?,
            (Op::Append, Some(g)) => append_cuda::run(g, c, ceil.copy_gbps)?,
            (Op::Append, None) => append::run(c, &ceil)?,
        };
        for row in &mut r {
            row.device = dev_name.clone();
        }
        rows.extend(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        print_table(&rows, &ceil);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Row], c: &Ceilings) {
    println!(
        "ceilings: read {:.1} GB/s, copy {:.1} GB/s (read+write), compute {:.1} GFLOP/s (CPU: f32 FMA; GPU: bf16 GEMM)",
        c.read_gbps, c.copy_gbps, c.fma_gflops
    );
    println!(
        "{:<8} {:<11} {:>5} {:>7} {:>6} {:>5} {:>10} {:>9} {:>9} {:>7} {:>9} {:>9}",
        "op", "kernel", "batch", "context", "new", "dtype", "ms", "GB/s", "GFLOP/s", "ceil%", "x gather", "x dense"
    );
    let opt = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    for r in rows {
        println!(
            "{:<8} {:<11} {:>5} {:>7} {:>6} {:>5} {:>10.3} {:>9.2} {:>9} {:>6.1}% {:>9} {:>9}",
            r.op,
            r.kernel,
            r.batch,
            r.context,
            r.new_tokens,
            r.dtype,
            r.ms,
            r.gbps,
            opt(r.gflops, 1),
            r.frac_of_ceiling * 100.0,
            opt(r.speedup_vs_gather, 2),
            opt(r.speedup_vs_dense, 2)
        );
    }
}

/// Fill helpers shared by the cells: large random buffers, filled in parallel.
pub(crate) fn random_vec<T: pal_core::Element>(n: usize, seed: u64) -> Vec<T> {
    use rayon::prelude::*;
    let mut v: Vec<T> = pal_core::alloc::large_vec(n);
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(i, c)| {
        let mut r = pal_kernels::testing::Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for x in c {
            *x = T::from_f32(r.uniform());
        }
    });
    v
}

/// Block lists with shuffled (fragmented) physical ids: `batch` sequences of `pages` pages each.
/// `PAL_BENCH_PAGES=contiguous` keeps each sequence's pages in order and adjacent instead (an
/// experiment knob: it separates the cost of page-sized reads from that of their scattering).
pub(crate) fn fragmented_lists(batch: usize, pages: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut ids: Vec<u32> = (0..(batch * pages) as u32).collect();
    if std::env::var("PAL_BENCH_PAGES").as_deref() != Ok("contiguous") {
        pal_kernels::testing::Rng::new(seed).shuffle(&mut ids);
    }
    ids.chunks(pages.max(1)).map(|c| c.to_vec()).collect()
}

/// FLOPs of a prefill cell: query i of a sequence sees its history plus i + 1 new keys (causal);
/// 4 FLOPs per (query, key) pair and dim, for every query head.
pub(crate) fn prefill_flops(c: &Cell) -> f64 {
    let (n, hist) = (c.new_tokens, c.context - c.new_tokens);
    let pairs = c.batch as f64 * (n as f64 * hist as f64 + (n * (n + 1) / 2) as f64);
    4.0 * pairs * c.head_dim as f64 * c.hq as f64
}

/// Build the common part of a row.
pub(crate) fn row(op: &'static str, kernel: &'static str, c: &Cell, t: &timing::Timing, bytes: f64) -> Row {
    Row {
        op,
        kernel,
        device: String::new(),
        threads: rayon::current_num_threads(),
        batch: c.batch,
        context: c.context,
        new_tokens: c.new_tokens,
        hq: c.hq,
        hkv: c.hkv,
        head_dim: c.head_dim,
        page: c.page,
        dtype: c.dtype.name(),
        ms: t.median_ms,
        min_ms: t.min_ms,
        iters: t.iters,
        bytes,
        gbps: bytes / t.median_ms / 1e6,
        gflops: None,
        ceiling: "",
        ceiling_value: 0.0,
        frac_of_ceiling: 0.0,
        speedup_vs_gather: None,
        speedup_vs_dense: None,
    }
}

/// The paged pool of a cell: `batch` sequences of `context` tokens in fragmented blocks.
pub(crate) struct BenchPool<T> {
    pub layout: pal_core::KvLayout,
    pub k: Vec<T>,
    pub v: Vec<T>,
    pub table: pal_core::PageTable,
}

pub(crate) fn bench_pool<T: pal_core::Element>(c: &Cell) -> Result<BenchPool<T>, PalError> {
    let pages = c.context.div_ceil(c.page);
    let layout = pal_core::KvLayout::new(c.batch * pages, c.page, c.hkv, c.head_dim)?;
    let table =
        pal_core::PageTable::from_lists(&fragmented_lists(c.batch, pages, 3), &vec![c.context; c.batch], c.page)?;
    Ok(BenchPool { k: random_vec(layout.elems(), 1), v: random_vec(layout.elems(), 2), layout, table })
}

/// The paged kernel's output must match the contiguous baselines' (same math, other layout).
pub(crate) fn check_agree<T: pal_core::Element>(c: &Cell, paged: &[T], others: &[&[T]]) -> Result<(), PalError> {
    let worst = others
        .iter()
        .flat_map(|o| paged.iter().zip(o.iter()).map(|(x, y)| (x.to_f32() - y.to_f32()).abs()))
        .fold(0f32, f32::max);
    if worst.is_nan() || worst > 1e-2 {
        return Err(PalError::invalid(
            "bench",
            format!("paged and dense outputs disagree by {worst} at B={} L={}; run `pal selftest`", c.batch, c.context),
        ));
    }
    Ok(())
}

/// The `pal`, `gather` and `dense` rows of a cell, with ratios and the fraction of `ceiling`.
/// With `flops`, the ceiling is a FLOP rate; otherwise a bandwidth.
pub(crate) fn kernel_rows(
    op: &'static str,
    c: &Cell,
    [pal, gather, dense]: [timing::Timing; 3],
    bytes: f64,
    flops: Option<f64>,
    (ceiling, value): (&'static str, f64),
) -> Vec<Row> {
    let mut rows =
        vec![row(op, "pal", c, &pal, bytes), row(op, "gather", c, &gather, bytes), row(op, "dense", c, &dense, bytes)];
    for r in &mut rows {
        r.gflops = flops.map(|f| f / r.ms / 1e6);
        r.ceiling = ceiling;
        r.ceiling_value = value;
        r.frac_of_ceiling = r.gflops.unwrap_or(r.gbps) / value;
    }
    add_ratios(&mut rows);
    rows
}

/// Fill in the ratios of rows `[pal, gather, dense]` (any subset, by kernel name).
pub(crate) fn add_ratios(rows: &mut [Row]) {
    let ms = |k: &str| rows.iter().find(|r| r.kernel == k).map(|r| r.ms);
    let (g, d) = (ms("gather"), ms("dense"));
    for r in rows.iter_mut() {
        r.speedup_vs_gather = g.map(|g| g / r.ms);
        r.speedup_vs_dense = d.map(|d| d / r.ms);
    }
}
