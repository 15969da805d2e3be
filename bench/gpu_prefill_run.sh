#!/usr/bin/env bash
# One GPU session for the prefill: correctness (bench/gpu_check.sh: selftest on the GPU,
# compute-sanitizer memcheck and racecheck over every op), then PAL's prefill benchmark and the Python peers
# (FlashInfer fa2/fa3, PyTorch SDPA cuDNN/flash) on the same shapes, results under $OUT.
# Usage on the GPU machine: bench/gpu_prefill_run.sh PATH_TO_PAL_BINARY
# CHECKS=0 skips the correctness part (a device call is limited to 10 minutes). The JSON rows end
# up bundled in prefill_json.tgz (BUNDLE=0: loose).
set -u
CHECKS=${CHECKS:-1}
source "$(dirname "$0")/gpu_env.sh"
log="$OUT/prefill_log.txt"
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$log"
if [ "$CHECKS" = 1 ]; then
  bash "$(dirname "$0")/gpu_check.sh" "$PAL"
fi
echo "t=$(( $(date +%s) - t0 ))s" | tee -a "$log"
run() {  # name, then arguments shared by PAL and the peers
  local name=$1; shift
  echo "== prefill $name: $*" | tee -a "$log"
  "$PAL" bench prefill --device cuda "$@" --budget-ms 100 --json > "$OUT/prefill_pal_$name.json" 2>>"$log"
  timeout 300 python3 bench/peers/prefill_peers.py "$@" --budget-ms 100 --out "$OUT/prefill_peers_$name.json" 2>>"$log"
  echo "peers exit $? t=$(( $(date +%s) - t0 ))s" | tee -a "$log"
}
run llama --batch 1,8,32 --context 1024,4096,16384,32768 --new-tokens 512
run llama_nohist --batch 1,8 --context 1024,4096,16384 --new-tokens 16384
run smollm --batch 1,8,32 --context 4096,16384 --new-tokens 512 --hq 9 --hkv 3 --head-dim 64
run mha --batch 1,8 --context 4096,16384 --new-tokens 512 --hq 32 --hkv 32 --head-dim 128
python3 bench/summarize_prefill_gpu.py "$OUT" | tee -a "$log"
echo "done t=$(( $(date +%s) - t0 ))s" | tee -a "$log"
# The device returns at most 8 files per call: bundle the JSON rows (BUNDLE=0 keeps them loose;
# unpack with `tar xzf` before running the summary scripts on them).
if [ "${BUNDLE:-1}" = 1 ]; then
  (cd "$OUT" && tar czf prefill_json.tgz prefill_*.json && rm -f prefill_*.json)
fi
