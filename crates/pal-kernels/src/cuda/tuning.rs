//! Tuning knobs of the CUDA decode, with defaults chosen from H100 measurements (BENCHMARKS.md).
//! Environment overrides exist for experiments: `PAL_CUDA_BLOCKS_PER_SM`, `PAL_CUDA_UNROLL`,
//! `PAL_CUDA_LOAD_HINT`.

fn env_usize(name: &str, default: usize, allowed: impl Fn(usize) -> bool) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|v| allowed(*v)).unwrap_or(default)
}

/// Thread blocks per SM the split-KV plan aims for.
pub fn blocks_per_sm() -> usize {
    env_usize("PAL_CUDA_BLOCKS_PER_SM", 4, |v| (1..=64).contains(&v))
}

/// Tokens per token group whose K/V loads are issued together (compiled into the kernel).
pub fn unroll() -> usize {
    env_usize("PAL_CUDA_UNROLL", 4, |v| [1, 2, 4, 8].contains(&v))
}

/// Whether K/V loads carry the L1::no_allocate / L2::256B hints.
pub fn load_hint() -> bool {
    env_usize("PAL_CUDA_LOAD_HINT", 1, |v| v <= 1) == 1
}
