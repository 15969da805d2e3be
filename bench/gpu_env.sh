# Sourced by the GPU session scripts (bench/gpu_run.sh, bench/gpu_prefill_run.sh): the pal binary
# ($1, default ./target/release/pal), the results folder, the CUDA libraries, and the peers that
# travel as wheels (FlashInfer, built from its sdist: see BENCHMARKS.md).
PAL=${1:-./target/release/pal}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# (Once per session: the check script, sourced again from a run script, inherits PYTHONPATH.)
if [ "${PYTHONPATH:-}" != /tmp/site ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export TORCH_CUDA_ARCH_LIST=9.0a FLASHINFER_CUDA_ARCH_LIST=9.0a
