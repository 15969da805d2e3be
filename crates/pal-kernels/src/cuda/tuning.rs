//! Tuning knobs of the CUDA decode, with defaults chosen from H100 measurements (BENCHMARKS.md).
//! Environment overrides exist for experiments: `PAL_CUDA_BLOCKS_PER_SM`, `PAL_CUDA_UNROLL`,
//! `PAL_CUDA_LOAD_HINT`, and for the tensor-core prefill `PAL_PREFILL_WARPS`, `PAL_PREFILL_BN`.

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

/// Warps per block of the tensor-core prefill (each owns two 16-row m-tiles; one for wide heads).
/// Read from the environment once: the launch path asks for it every call.
pub fn prefill_warps() -> usize {
    static WARPS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WARPS.get_or_init(|| env_usize("PAL_PREFILL_WARPS", 4, |v| [4, 8].contains(&v)))
}

/// Keys per shared-memory tile of the tensor-core prefill for `head_dim`: 64 for head dims up to
/// 64, else 32 (register budget), unless `PAL_PREFILL_BN` says otherwise (read once).
pub fn prefill_keys(head_dim: usize) -> usize {
    static BN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match *BN.get_or_init(|| env_usize("PAL_PREFILL_BN", 0, |v| [0, 16, 32, 64].contains(&v))) {
        0 if head_dim <= 64 => 64,
        0 => 32,
        v => v,
    }
}
