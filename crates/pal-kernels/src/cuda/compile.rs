//! Kernel sources (embedded), their specialisations, and NVRTC compilation with an on-disk cache
//! keyed by a hash of the full source, the architecture and the options.

use super::toolkit::toolkit;
use super::tuning;
use pal_core::DType;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

const COMMON: &str = include_str!("kernels/common.cuh");
const DECODE: &str = include_str!("kernels/decode.cu");
const APPEND: &str = include_str!("kernels/append.cu");
const PREFILL: &str = include_str!("kernels/prefill.cu");
const MMA: &str = include_str!("kernels/mma.cuh");
const DECODE_TC: &str = include_str!("kernels/decode_tc.cu");
const SPLIT: &str = include_str!("kernels/split.cuh");
const WGMMA: &str = include_str!("kernels/wgmma.cuh");
const PREFILL_WG: &str = include_str!("kernels/prefill_wg.cu");
const PREFILL_MERGE: &str = include_str!("kernels/prefill_merge.cuh");
const PREFILL_TILE: &str = include_str!("kernels/prefill_tile.cuh");

/// One compiled specialisation of a kernel family.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub family: Family,
    pub q: DType,
    pub kv: DType,
    pub head_dim: usize,
    /// Query heads one block handles (decode); for the prefills, the blocks per SM they are
    /// compiled to fit (`__launch_bounds__`, see `tuning::prefill_min_blocks`); 1 otherwise.
    pub group: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Decode,
    /// KV append with fused RoPE (`group` unused, 1).
    Append,
    /// Tensor-core prefill (`group`: blocks per SM it is compiled for; q and kv both f16 or both
    /// bf16).
    Prefill,
    /// Tensor-core prefill on Hopper's wgmma (`group`: blocks per SM; q and kv both f16 or both
    /// bf16, head dim 64 or 128; compute_90a only).
    PrefillWg,
    /// Tensor-core decode (q and kv both f16 or both bf16, head dim a multiple of 16); its
    /// split-KV partial states merge with the `Decode` module's `pal_merge`.
    DecodeTc,
}

impl Family {
    /// The `extern "C"` kernels a module of this family defines.
    pub fn entries(self) -> &'static [&'static str] {
        match self {
            Family::Decode => &["pal_decode", "pal_decode_pipe", "pal_merge", "pal_gather", "pal_read_probe"],
            Family::Append => &["pal_append", "pal_append_vec"],
            Family::Prefill => &["pal_prefill_tc", "pal_prefill_merge"],
            Family::DecodeTc => &["pal_decode_tc"],
            Family::PrefillWg => &["pal_prefill_wg", "pal_prefill_merge"],
        }
    }

    /// Whether this family compiles for virtual architecture `arch` (wgmma needs sm_90a).
    pub fn compiles_for(self, arch: &str) -> bool {
        self != Family::PrefillWg || arch == "compute_90a"
    }
}

pub fn cuda_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "float",
        DType::F16 => "__half",
        DType::BF16 => "__nv_bfloat16",
    }
}

impl Variant {
    pub fn source(&self) -> String {
        let (helpers, body) = match self.family {
            Family::Decode => (SPLIT.to_string(), DECODE.to_string()),
            Family::Append => (String::new(), APPEND.to_string()),
            Family::Prefill => (format!("{MMA}\n{PREFILL_TILE}"), format!("{PREFILL}\n{PREFILL_MERGE}")),
            Family::PrefillWg => (format!("{MMA}\n{WGMMA}\n{PREFILL_TILE}"), format!("{PREFILL_WG}\n{PREFILL_MERGE}")),
            Family::DecodeTc => (format!("{MMA}\n{SPLIT}"), DECODE_TC.to_string()),
        };
        // For the prefills, `group` is the blocks per SM the variant is compiled for.
        let wg = self.family == Family::PrefillWg;
        let prefill_blocks = if self.family == Family::Prefill || wg { self.group } else { 1 };
        let prefill_keys = if wg {
            tuning::prefill_wg_keys(self.head_dim)
        } else {
            tuning::prefill_keys(self.head_dim, prefill_blocks)
        };
        format!(
            "#define PAL_T {}\n#define PAL_KV {}\n#define PAL_HEAD_DIM {}\n#define PAL_GROUP {}\n#define PAL_UNROLL {}\n#define PAL_LOAD_HINT {}\n#define PAL_PREFILL_WARPS {}\n#define PAL_PREFILL_BN {}\n#define PAL_DEC_TILE {}\n#define PAL_DEC_STAGES {}\n#define PAL_DEC_VEC {}\n#define PAL_CP_PREFETCH {}\n#define PAL_SMEM_SWIZZLE {}\n#define PAL_PREFILL_FOLD {}\n#define PAL_PREFILL_MIN_BLOCKS {}\n#define PAL_WG_VSWAP {}\n#define PAL_APPEND_TOKENS {}\n{}\n{}\n{}",
            cuda_type(self.q),
            cuda_type(self.kv),
            self.head_dim,
            self.group,
            tuning::unroll(),
            tuning::load_hint() as u8,
            tuning::prefill_warps(),
            prefill_keys,
            tuning::decode_tile_tokens(self.head_dim, self.kv.size(), self.group),
            if self.family == Family::DecodeTc { tuning::decode_tc_stages() } else { tuning::decode_stages() },
            tuning::decode_lane_dims(self.head_dim, self.group),
            tuning::cp_prefetch_bytes(),
            tuning::smem_swizzle(self.family == Family::Prefill) as u8,
            tuning::prefill_fold_scale(self.head_dim) as u8,
            prefill_blocks,
            tuning::wg_vswap(),
            tuning::append_tokens_per_block(),
            COMMON,
            helpers,
            body
        )
    }

    /// Every variant the library can launch, for ahead-of-time builds and the CI compile test
    /// (filter with [`Family::compiles_for`] for an architecture other than compute_90a).
    pub fn all() -> Vec<Variant> {
        let mut v = Vec::new();
        for dt in DType::ALL {
            for head_dim in [64, 80, 96, 128, 256] {
                for group in 1..=8 {
                    v.push(Variant { family: Family::Decode, q: dt, kv: dt, head_dim, group });
                    if super::tensor_core_supports(dt, dt, head_dim) {
                        v.push(Variant { family: Family::DecodeTc, q: dt, kv: dt, head_dim, group });
                    }
                }
                v.push(Variant { family: Family::Append, q: dt, kv: dt, head_dim, group: 1 });
                if super::tensor_core_supports(dt, dt, head_dim) {
                    for group in tuning::prefill_occupancies(head_dim) {
                        v.push(Variant { family: Family::Prefill, q: dt, kv: dt, head_dim, group });
                    }
                    if super::wgmma_prefill_supports(dt, dt, head_dim) {
                        let group = tuning::prefill_wg_min_blocks();
                        v.push(Variant { family: Family::PrefillWg, q: dt, kv: dt, head_dim, group });
                    }
                }
            }
        }
        v
    }
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PAL_KERNEL_CACHE") {
        return d.into();
    }
    let home = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    home.join("pal").join("kernels")
}

/// PTX for `variant` on virtual architecture `arch` (e.g. `compute_90a`), from the disk cache or
/// NVRTC. Returns the PTX text.
pub fn compile(variant: &Variant, arch: &'static str) -> Result<String, String> {
    let tk = toolkit()?;
    let src = variant.source();
    let opts = ["--std=c++17", "--use_fast_math", "-default-device"];
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&src, arch, &opts[..], env!("CARGO_PKG_VERSION")).hash(&mut h);
    let key = format!("{:016x}-{arch}.ptx", h.finish());
    let path = cache_dir().join(&key);
    if let Ok(ptx) = std::fs::read_to_string(&path) {
        return Ok(ptx);
    }
    let copts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        include_paths: vec![tk.include_dir.display().to_string()],
        options: opts.iter().map(|s| s.to_string()).collect(),
        name: Some(format!("pal_{:?}_{}_{}_{}.cu", variant.family, variant.q, variant.head_dim, variant.group)),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(&src, copts)
        .map_err(|e| format!("NVRTC failed for {variant:?}: {e:?}"))?;
    let text = ptx.to_src();
    // A failed cache write only costs a recompile next time.
    let _ = std::fs::create_dir_all(cache_dir()).and_then(|_| std::fs::write(&path, &text));
    Ok(text)
}
