//! Runs the CPU paged decode in a loop on one shape, for profilers (`perf record`) and quick
//! A/B timing of the inner loops: `cargo run --release -p pal-kernels --example decode_profile --
//! BATCH CONTEXT SECONDS` (defaults 8 256 3). Prints GB/s of K/V read. Pages are shuffled.
//! Environment: `HKV` KV heads (default 8), `GQA` query heads per KV head (default 4), `HOT=n`
//! maps every page onto the first `n` blocks so K/V stay in cache (the kernel's compute speed
//! without DRAM; `HKV=2 HOT=1` fits L1); `CONTIG=1` keeps every sequence's pages in order and
//! adjacent, `PAGE=n` sets the page size (default 16; what paging costs against a contiguous
//! cache), `D=n` the head dimension (default 128), `F16=1` stores q and K/V in f16 (default bf16).
use pal_core::{bf16, f16, AttentionOptions, Element, KvLayout, PageTable, PagedKv};
use pal_kernels::{cpu, DecodeArgs, DecodePlan};
use std::time::Instant;

fn main() -> Result<(), pal_core::PalError> {
    if std::env::var_os("F16").is_some() {
        run::<f16>()
    } else {
        run::<bf16>()
    }
}

fn run<T: Element>() -> Result<(), pal_core::PalError> {
    let arg = |i: usize, d: f64| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (batch, context, secs) = (arg(1, 8.0) as usize, arg(2, 256.0) as usize, arg(3, 3.0));
    let (hkv, group, page) = (env_num("HKV").unwrap_or(8), env_num("GQA").unwrap_or(4), env_num("PAGE").unwrap_or(16));
    let (hq, d) = (group * hkv, env_num("D").unwrap_or(128));
    let pages_per_seq = context.div_ceil(page);
    let blocks = batch * pages_per_seq;
    let layout = KvLayout::new(blocks, page, hkv, d)?;
    // Deterministic scramble of the block ids (a fixed odd multiplier is a permutation mod 2^k only
    // for powers of two, so use a simple LCG shuffle instead).
    let mut ids: Vec<u32> = (0..blocks as u32).collect();
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let contiguous = std::env::var_os("CONTIG").is_some();
    for i in (1..ids.len()).rev().filter(|_| !contiguous) {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ids.swap(i, (s >> 33) as usize % (i + 1));
    }
    if let Some(hot) = env_num::<u32>("HOT") {
        ids.iter_mut().for_each(|x| *x %= hot);
    }
    let lists: Vec<Vec<u32>> = ids.chunks(pages_per_seq).map(|c| c.to_vec()).collect();
    let table = PageTable::from_lists(&lists, &vec![context; batch], page)?;
    // Huge-page backed like `pal bench`'s pools (TLB misses would otherwise dominate).
    let rnd = |n: usize, seed: u64| {
        let mut s = seed;
        let mut v = pal_core::alloc::large_vec::<T>(n);
        for x in v.iter_mut() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *x = T::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5);
        }
        v
    };
    let (k, v, q) = (rnd(layout.elems(), 1), rnd(layout.elems(), 2), rnd(batch * hq * d, 3));
    let opts = AttentionOptions::default();
    let args = DecodeArgs { q: &q, num_qo_heads: hq, kv: PagedKv::new(&k, &v, layout)?, page_table: &table, opts };
    let plan = DecodePlan::new(&table, hkv, &args.opts, rayon::current_num_threads());
    let mut out = vec![T::default(); q.len()];
    // The fastest call: on a shared VM the mean drifts with the neighbours, the minimum much less.
    let t = Instant::now();
    let mut per = f64::INFINITY;
    while t.elapsed().as_secs_f64() < secs {
        let c = Instant::now();
        cpu::paged_decode(&args, &plan, &mut out)?;
        per = per.min(c.elapsed().as_secs_f64());
    }
    let bytes = 2.0 * (batch * context * hkv * d * 2) as f64;
    println!(
        "B={batch} L={context}: {:.3} ms/call (fastest), {:.2} GB/s, {:.1} ns per (token, kv head)",
        per * 1e3,
        bytes / per / 1e9,
        per * 1e9 / (batch * context * hkv) as f64
    );
    Ok(())
}

/// The environment variable `name` parsed as a number, if set and valid.
fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
