#!/usr/bin/env bash
# Offline SASS of one PAL kernel variant, on a machine without a GPU: assemble the source the way
# compile.rs does (defines + common.cuh + mma.cuh [+ split.cuh] + the kernel file), NVRTC -> PTX, ptxas -v
# (registers, spills), then the instruction count of the hottest loop (loop_count.py).
# (prefill kernels also get prefill_tile.cuh, the wgmma one wgmma.cuh.)
# Usage: bench/sass/kernel_sass.sh prefill|prefill_wg|decode_tc [DTYPE HEAD_DIM]
#   env: BN (prefill keys per tile, 64), GROUP (decode_tc heads, 4), SW (swizzle), FOLD, MINB,
#   HOT=1 compiles the soft-cap and partial-tile mask branches out (prefill), so the loop count
#   is what a full tile without soft-cap executes.
# Tools (pip wheels, into any folder on PATH): nvidia-cuda-nvcc==13.0.* (ptxas),
# nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm; NVRTC from .ci/nvrtc (bash .ci/run installs it).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
K=$here/../../crates/pal-kernels/src/cuda/kernels
kind=${1:-prefill}; T=${2:-__nv_bfloat16}; HD=${3:-128}
case $kind in
  prefill) body=prefill.cu; entry=pal_prefill_tc; extra=$K/prefill_tile.cuh ;;
  prefill_wg) body=prefill_wg.cu; entry=pal_prefill_wg; extra="$K/wgmma.cuh $K/prefill_tile.cuh" ;;
  decode_tc) body=decode_tc.cu; entry=pal_decode_tc; extra=$K/split.cuh ;;
  *) echo "prefill|prefill_wg|decode_tc"; exit 2 ;;
esac
sw_default=0; [ "$kind" = decode_tc ] && sw_default=1
F=/tmp/pal_sass_${kind}_${HD}.cu
{
  printf '#define PAL_T %s\n#define PAL_KV %s\n#define PAL_HEAD_DIM %s\n#define PAL_GROUP %s\n' "$T" "$T" "$HD" "${GROUP:-4}"
  printf '#define PAL_UNROLL 4\n#define PAL_LOAD_HINT 1\n#define PAL_PREFILL_WARPS 4\n#define PAL_PREFILL_BN %s\n' "${BN:-64}"
  printf '#define PAL_DEC_TILE 32\n#define PAL_DEC_STAGES 3\n#define PAL_DEC_VEC 8\n#define PAL_CP_PREFETCH 128\n'
  printf '#define PAL_SMEM_SWIZZLE %s\n#define PAL_PREFILL_FOLD %s\n#define PAL_PREFILL_MIN_BLOCKS %s\n' "${SW:-$sw_default}" "${FOLD:-0}" "${MINB:-1}"
  printf '#define PAL_WG_VSWAP 0\n#define PAL_APPEND_TOKENS 2\n'
  cat "$K/common.cuh" "$K/mma.cuh" $extra "$K/$body"
} | grep -v '#pragma once' | if [ -n "${HOT:-}" ]; then sed 's/if (opts.soft_cap > 0.f) {/if (false) {/; s/if (!full) {/if (false) {/'; else cat; fi > "$F"
root=${PAL_CUDA_ROOT:-$here/../../.ci/nvrtc/nvidia/cu13}
LD_LIBRARY_PATH=$root/lib python3 "$here/nvrtc_ptx.py" "$F" "${F%.cu}.ptx"
ptxas -arch sm_90a -v "${F%.cu}.ptx" -o "${F%.cu}.cubin" 2>&1 | grep -A2 "for $entry" | grep -v Compiling
python3 "$here/loop_count.py" "${F%.cu}.cubin" "$entry" ${VERBOSE:+v}
