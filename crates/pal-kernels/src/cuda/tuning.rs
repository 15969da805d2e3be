//! Tuning knobs of the CUDA kernels, with defaults chosen from H100 measurements (BENCHMARKS.md).
//! Environment overrides exist for experiments: `PAL_CUDA_BLOCKS_PER_SM`, `PAL_CUDA_UNROLL`,
//! `PAL_CUDA_LOAD_HINT`, `PAL_CP_L2_PREFETCH`, `PAL_SMEM_SWIZZLE`, `PAL_PREFILL_SWIZZLE`,
//! `PAL_DECODE_KERNEL`, `PAL_DEC_*`, `PAL_FUSED_MERGE`, and for the tensor-core prefill
//! `PAL_PREFILL_WARPS`, `PAL_PREFILL_BN`, `PAL_PREFILL_FOLD`, `PAL_PREFILL_MIN_BLOCKS`; for the wgmma
//! prefill `PAL_PREFILL_KERNEL`, `PAL_PREFILL_WG_BN`, `PAL_PREFILL_WG_MIN_BLOCKS`, `PAL_WG_VSWAP`; for
//! both `PAL_PREFILL_SPLITS`; for the append `PAL_APPEND_TOKENS`.

fn env_usize(name: &str, default: usize, allowed: impl Fn(usize) -> bool) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|v| allowed(*v)).unwrap_or(default)
}

/// Thread blocks per SM the split-KV plan aims for, when `PAL_CUDA_BLOCKS_PER_SM` sets it;
/// otherwise the plan asks the driver for the kernel's occupancy.
pub fn blocks_per_sm() -> Option<usize> {
    std::env::var("PAL_CUDA_BLOCKS_PER_SM").ok().and_then(|v| v.parse().ok()).filter(|v| (1..=64).contains(v))
}

/// Tokens per token group whose K/V loads are issued together (compiled into the kernel).
pub fn unroll() -> usize {
    env_usize("PAL_CUDA_UNROLL", 4, |v| [1, 2, 4, 8].contains(&v))
}

/// Whether the last block of a split-KV row merges the row's partial states (split.cuh) instead
/// of a second kernel doing it: H100, same call, 3-20% faster in the split cells (B=1, B=8 at
/// 1k-4k), the rest unchanged. `PAL_FUSED_MERGE=0|1` overrides (read once: every launch asks).
pub fn fused_merge() -> bool {
    static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FUSED.get_or_init(|| env_usize("PAL_FUSED_MERGE", 1, |v| v <= 1) == 1)
}

/// Whether K/V loads carry the L1::no_allocate / L2::256B hints.
pub fn load_hint() -> bool {
    env_usize("PAL_CUDA_LOAD_HINT", 1, |v| v <= 1) == 1
}

/// L2 prefetch size hint (bytes: 0 = none, 64, 128, 256) on the cp.async copies of K/V tiles
/// (tensor-core decode, pipelined decode, prefill). 128 measured best on an H100 (two rounds,
/// same call): tensor-core decode Llama B=8/32 x 16k/32k 1.5-2.5% faster than no hint, SmolLM
/// within noise, prefill neutral; 256 cost SmolLM (128-byte rows) 7% at B=32 16k/32k.
pub fn cp_prefetch_bytes() -> usize {
    env_usize("PAL_CP_L2_PREFETCH", 128, |v| [0, 64, 128, 256].contains(&v))
}

/// Whether a tensor-core kernel stores K/V/Q rows in shared memory XOR-swizzled and unpadded
/// (head dims 64, 128, 256) instead of padded by 16 bytes. H100, same call, two rounds: the
/// decode kernel's copies then stop being fetched twice from L2 (Nsight: L2 sectors 1.5x -> 1.0x
/// the DRAM sectors) and Llama B=8/32 x 16k/32k decode runs 4-4.6% faster (94% -> 98% of the
/// read probe at B=32 32k). The prefill is bound by instruction issue rather than memory: with
/// the XOR computed per ldmatrix it ran 3-5% slower, with per-lane constants (mma.cuh `ldsm_col`)
/// within -2%..+1% of the padded layout, so it keeps the padding.
/// `PAL_SMEM_SWIZZLE=0|1` (decode) and `PAL_PREFILL_SWIZZLE=0|1` override.
pub fn smem_swizzle(prefill: bool) -> bool {
    if prefill {
        env_usize("PAL_PREFILL_SWIZZLE", 0, |v| v <= 1) == 1
    } else {
        env_usize("PAL_SMEM_SWIZZLE", 1, |v| v <= 1) == 1
    }
}

/// Whether the tensor-core prefill applies a positive softmax scale inside the exponent's FFMA
/// (raw running maxima, as FlashAttention-2) instead of multiplying every score first: for head
/// dims up to 64 (H100, same call: SmolLM 3% faster); above, the separate multiply measured 8%
/// faster (Llama B=8 16k with 64-key tiles). `PAL_PREFILL_FOLD=0|1` overrides.
pub fn prefill_fold_scale(head_dim: usize) -> bool {
    env_usize("PAL_PREFILL_FOLD", (head_dim <= 64) as usize, |v| v <= 1) == 1
}

/// Blocks per SM the tensor-core prefill is compiled to fit (`__launch_bounds__`: caps its
/// registers at 64K / (blocks x threads)); 1 lets the compiler use up to 255 per thread. Head
/// dims up to 64, when the grid fills the GPU without splits (`many_blocks`): 3 (168 registers,
/// with 32-key tiles, see [`prefill_keys`]; H100 same call, SmolLM B=8 16k 28% faster than 2
/// blocks of 254 registers, but B=1 16k, split, 17% slower); otherwise 1.
/// `PAL_PREFILL_MIN_BLOCKS=1..4` overrides both (read once: every prefill plan asks).
pub fn prefill_min_blocks(head_dim: usize, many_blocks: bool) -> usize {
    static OVERRIDE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match *OVERRIDE.get_or_init(|| env_usize("PAL_PREFILL_MIN_BLOCKS", 0, |v| (1..=4).contains(&v))) {
        0 if head_dim <= 64 && many_blocks => 3,
        0 => 1,
        v => v,
    }
}

/// The `prefill_min_blocks` values a head dim can launch with (the variants to compile).
pub fn prefill_occupancies(head_dim: usize) -> Vec<usize> {
    let (few, many) = (prefill_min_blocks(head_dim, false), prefill_min_blocks(head_dim, true));
    if few == many {
        vec![few]
    } else {
        vec![few, many]
    }
}

/// Warps per block of the tensor-core prefill (each owns two 16-row m-tiles; one for wide heads).
/// Read from the environment once: the launch path asks for it every call.
pub fn prefill_warps() -> usize {
    static WARPS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WARPS.get_or_init(|| env_usize("PAL_PREFILL_WARPS", 4, |v| [4, 8].contains(&v)))
}

/// Keys per shared-memory tile of the tensor-core prefill for `head_dim` and the variant's
/// `min_blocks` ([`prefill_min_blocks`]): 64 up to head dim 128 (with shared-memory addressing
/// and staged page lookups the 128 fits without spilling in the hot path; H100: Llama 5-18%
/// faster than 32-key tiles), else 32; and 32 for the 3-blocks/SM variant, whose 168 registers
/// hold a 32-key tile without spilling (H100 same call, SmolLM B=8/32 x 4k/16k 6-10% faster than
/// 64-key tiles, `h100_prefill_hd64_tiles_occupancy_ab.txt`). `PAL_PREFILL_BN` overrides (read
/// once).
pub fn prefill_keys(head_dim: usize, min_blocks: usize) -> usize {
    static BN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match *BN.get_or_init(|| env_usize("PAL_PREFILL_BN", 0, |v| [0, 16, 32, 64].contains(&v))) {
        0 if head_dim <= 128 && min_blocks < 3 => 64,
        0 => 32,
        v => v,
    }
}

/// Whether the prefill runs the wgmma kernel (`prefill_wg.cu`) where it applies (Hopper, f16/bf16
/// with q and pool alike, head dim 64 or 128) rather than the mma.sync kernel (`prefill.cu`): yes,
/// it takes 0.66-0.73x the mma.sync kernel's time at head dim 128 and, with 128-key tiles, about
/// 0.65-0.78x at 64 on an H100
/// (`bench/results/gpu/h100_prefill_wg_swizzle_check/`). `PAL_PREFILL_KERNEL=mma` keeps the
/// mma.sync kernel (read once).
pub fn prefill_wgmma() -> bool {
    static CHOICE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| !matches!(std::env::var("PAL_PREFILL_KERNEL").as_deref(), Ok("mma")))
}

/// Tokens per block of the vectorised append (`append.cu`, compiled in): 2. Same call on an H100
/// (`bench/results/gpu/h100_2026-11-23g/append_tokens_ab.txt`), 8192 tokens with RoPE: 87% of the
/// copy bandwidth against 79% with 4, 83% with 8, 88% with 1; 32768 tokens: 93% against 91%;
/// without RoPE 2 is the best or tied. `PAL_APPEND_TOKENS=1|2|4|8|16` overrides (read once: the
/// kernel and its launch must agree).
pub fn append_tokens_per_block() -> usize {
    static TOKENS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *TOKENS.get_or_init(|| env_usize("PAL_APPEND_TOKENS", 2, |v| [1, 2, 4, 8, 16].contains(&v)))
}

/// Key-range splits per tile of the tensor-core prefills when `PAL_PREFILL_SPLITS=1..16` sets them
/// (an A/B switch; read once); otherwise the plan picks them from the grid's wave fill.
pub fn prefill_splits() -> Option<usize> {
    static SPLITS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    Some(*SPLITS.get_or_init(|| env_usize("PAL_PREFILL_SPLITS", 0, |v| v <= 16))).filter(|&v| v > 0)
}

/// Keys per shared-memory tile of the wgmma prefill: 128 at head dim 64 (9-15% faster than 64 in
/// the same call, where S and O still fit the 128 registers of two blocks per SM), 64 at 128.
/// `PAL_PREFILL_WG_BN=64|128` overrides (read once).
pub fn prefill_wg_keys(head_dim: usize) -> usize {
    static BN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match *BN.get_or_init(|| env_usize("PAL_PREFILL_WG_BN", 0, |v| [0, 64, 128].contains(&v))) {
        0 if head_dim <= 64 => 128,
        0 => 64,
        v => v,
    }
}

/// Blocks per SM the wgmma prefill is compiled to fit (`__launch_bounds__`): 2, so that two
/// independent blocks overlap one's softmax with the other's products: 1 was 3-15% slower in the
/// same call except at Llama B=1 1k (`h100_prefill_wg_first_check/`, before the swizzled layout).
/// Offline SASS at head dim 128: 128 registers, a 16-byte spill (one reload per tile).
/// `PAL_PREFILL_WG_MIN_BLOCKS=1|2` overrides (read once).
pub fn prefill_wg_min_blocks() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| env_usize("PAL_PREFILL_WG_MIN_BLOCKS", 2, |v| (1..=2).contains(&v)))
}

/// Which descriptor field of the wgmma prefill's V operand holds which stride: `PAL_WG_VSWAP=1`
/// swaps the leading and stride byte offsets (a check switch: 0 is the PTX ISA's reading, the one
/// that passes on an H100; 1 must fail, which `bench/gpu_prefill_wg_check.sh` shows).
pub fn wg_vswap() -> usize {
    env_usize("PAL_WG_VSWAP", 0, |v| v <= 1)
}

/// The decode attention kernels (all compute the same chunks; the host picks one per launch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeKernel {
    /// `pal_decode`: K/V staged through registers, CUDA-core arithmetic; every dtype and head dim.
    Register,
    /// `pal_decode_pipe`: the same arithmetic fed by a cp.async shared-memory pipeline.
    Pipelined,
    /// `pal_decode_tc`: cp.async pipeline and mma.sync (f16/bf16 with q and pool alike, head
    /// dim a multiple of 16).
    TensorCore,
}

/// The decode kernel: `PAL_DECODE_KERNEL=reg|pipe|tc` (read once) forces one where it applies. By
/// default the tensor-core kernel wherever it applies (f16/bf16, q and pool alike, head dim a
/// multiple of 16), else the register kernel. Measured (BENCHMARKS.md, "GPU results (decode)"):
/// for GQA the tensor-core kernel is 1.18x the register kernel in bandwidth-bound cells on an H200
/// and up to 1.5x in low-parallelism cells on an H100; for MHA (one query head per block) it was
/// 5% slower on an H100 until its page ids were loaded per row, and since then it is 1.28x at B=1
/// 1k and 0.4-1.7% faster in 9 of the other 11 cells (`h100_decode_mha_tc_ab.txt`).
pub fn decode_kernel(tensor_cores_apply: bool) -> DecodeKernel {
    static CHOICE: std::sync::OnceLock<Option<DecodeKernel>> = std::sync::OnceLock::new();
    let forced = *CHOICE.get_or_init(|| match std::env::var("PAL_DECODE_KERNEL").as_deref() {
        Ok("reg") => Some(DecodeKernel::Register),
        Ok("pipe") => Some(DecodeKernel::Pipelined),
        Ok("tc") => Some(DecodeKernel::TensorCore),
        _ => None,
    });
    pick_decode_kernel(forced, tensor_cores_apply)
}

/// [`decode_kernel`] without the environment: `forced` is what `PAL_DECODE_KERNEL` asked for.
fn pick_decode_kernel(forced: Option<DecodeKernel>, tensor_cores_apply: bool) -> DecodeKernel {
    match forced {
        Some(DecodeKernel::TensorCore) | None if tensor_cores_apply => DecodeKernel::TensorCore,
        Some(k @ (DecodeKernel::Register | DecodeKernel::Pipelined)) => k,
        _ => DecodeKernel::Register,
    }
}

/// Pipeline depth of the tensor-core decode (`PAL_DEC_TC_STAGES`, read once): tiles of 64
/// tokens' K and V in shared memory, `stages - 1` in flight while one is computed.
pub fn decode_tc_stages() -> usize {
    static STAGES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *STAGES.get_or_init(|| env_usize("PAL_DEC_TC_STAGES", 3, |v| (2..=8).contains(&v)))
}

/// Dynamic shared memory of one tensor-core decode block: 16 q rows and the K/V stages, sized
/// for rows padded by 8 elements (decode_tc.cu), an upper bound for the swizzled, unpadded rows
/// too (the swizzle saves 8 elements per row; the occupancy stays 2 blocks per SM at head dim
/// 128 either way).
pub fn decode_tc_shared_bytes(head_dim: usize, kv_bytes: usize) -> usize {
    (16 + 2 * decode_tc_stages() * 64) * (head_dim + 8) * kv_bytes
}

/// Pipeline depth of the decode kernel: K/V tiles in shared memory, `stages - 1` of them in
/// flight while one is computed (`PAL_DEC_STAGES`, read once).
pub fn decode_stages() -> usize {
    static STAGES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *STAGES.get_or_init(|| env_usize("PAL_DEC_STAGES", 3, |v| (2..=16).contains(&v)))
}

/// Bytes of K (and as many of V) per pipeline stage (`PAL_DEC_TILE_BYTES`, read once).
fn decode_tile_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| env_usize("PAL_DEC_TILE_BYTES", 8192, |v| (256..=65536).contains(&v)))
}

/// Head dims each lane of a decode block holds (`VEC` in decode.cu): 16 for wide heads with at
/// most 4 query heads per block, else 8, so that q and the accumulators of the block's query
/// heads (2 x heads x dims registers) stay in registers (8 heads x 16 dims spilled). For 4 heads
/// 16 dims beat 8 by 20% at batch 32 and lose 1-3% at batch 8 (H100). `PAL_DEC_VEC` overrides.
pub fn decode_lane_dims(head_dim: usize, block_heads: usize) -> usize {
    static VEC: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match *VEC.get_or_init(|| env_usize("PAL_DEC_VEC", 0, |v| [0, 8, 16].contains(&v))) {
        0 if head_dim.is_multiple_of(16) && head_dim >= 128 && block_heads <= 4 => 16,
        0 => 8,
        v => v,
    }
}

/// Token groups of a decode block (mirrors `GROUPS` in decode.cu): 4 warps, each split into
/// groups of `LPT` lanes that read one token row with 16-byte words.
fn decode_token_groups(head_dim: usize, block_heads: usize) -> usize {
    let lanes_per_token = (head_dim / decode_lane_dims(head_dim, block_heads)).next_power_of_two().clamp(1, 32);
    4 * 32 / lanes_per_token
}

/// Tokens per pipeline stage: about `decode_tile_bytes` of K, a multiple of the token groups.
pub fn decode_tile_tokens(head_dim: usize, kv_bytes: usize, block_heads: usize) -> usize {
    let groups = decode_token_groups(head_dim, block_heads);
    let tokens = decode_tile_bytes() / (head_dim * kv_bytes).max(1);
    (tokens / groups).max(1) * groups
}

/// Dynamic shared memory of one pipelined decode block: the K and V stages, or the in-block
/// merge that reuses them (`block_heads` query heads), whichever is larger.
pub fn decode_shared_bytes(head_dim: usize, kv_bytes: usize, block_heads: usize) -> usize {
    let stages = decode_stages() * 2 * decode_tile_tokens(head_dim, kv_bytes, block_heads) * head_dim * kv_bytes;
    let merge = 4 * block_heads * (head_dim + 2) * 4;
    stages.max(merge)
}

#[cfg(test)]
mod tests {
    use super::{pick_decode_kernel, DecodeKernel::*};

    #[test]
    fn decode_kernel_choice() {
        // Default: tensor cores wherever they apply (GQA and MHA), the register kernel otherwise.
        assert_eq!(pick_decode_kernel(None, true), TensorCore);
        assert_eq!(pick_decode_kernel(None, false), Register);
        assert_eq!(pick_decode_kernel(Some(TensorCore), true), TensorCore);
        assert_eq!(pick_decode_kernel(Some(TensorCore), false), Register);
        assert_eq!(pick_decode_kernel(Some(Pipelined), true), Pipelined);
        assert_eq!(pick_decode_kernel(Some(Register), true), Register);
    }
}
