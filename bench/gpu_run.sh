#!/usr/bin/env bash
# One GPU session: correctness (selftest on the GPU, compute-sanitizer memcheck + racecheck),
# then PAL's decode benchmark and the Python peers on the same shapes, results under $OUT.
# Usage on the GPU machine: bench/gpu_run.sh PATH_TO_PAL_BINARY
# A device call is limited to 10 minutes: CHECKS=0 skips the correctness part, SHAPES="smollm mha"
# runs a subset of the shapes (llama, smollm, mha).
set -u
CHECKS=${CHECKS:-1}
SHAPES=${SHAPES:-llama smollm mha}
source "$(dirname "$0")/gpu_env.sh"
log="$OUT/gpu_log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee -a "$log"
if [ "$CHECKS" = 1 ]; then
  echo "== selftest --device cuda" | tee -a "$log"
  "$PAL" selftest --device cuda > "$OUT/selftest_cuda.txt" 2>&1; echo "selftest exit $?" | tee -a "$log"
  tail -n 3 "$OUT/selftest_cuda.txt" | tee -a "$log"
  small=(bench decode --device cuda --batch 3 --context 97,300 --page 8 --hq 8 --hkv 2 --head-dim 64 --budget-ms 1)
  # The decode kernels the default does not pick for bf16 (register, cp.async pipelined) too, and
  # the sanitizers over each (racecheck is for the shared-memory pipelines).
  for k in reg pipe; do
    PAL_DECODE_KERNEL=$k "$PAL" selftest --device cuda --op decode --quick > "$OUT/selftest_cuda_$k.txt" 2>&1
    echo "selftest (PAL_DECODE_KERNEL=$k, decode) exit $?: $(tail -n 1 "$OUT/selftest_cuda_$k.txt")" | tee -a "$log"
  done
  for k in tc reg pipe; do
    for tool in memcheck racecheck; do
      echo "== compute-sanitizer $tool (PAL_DECODE_KERNEL=$k)" | tee -a "$log"
      PAL_DECODE_KERNEL=$k compute-sanitizer --tool $tool --error-exitcode 9 "$PAL" "${small[@]}" > /tmp/san.txt 2>&1
      echo "$tool exit $?" | tee -a "$log"
      grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Error|error" /tmp/san.txt | head -n 5 | tee -a "$log"
    done
  done
  # Registers and spills of the decode kernels as ptxas sees them.
  for f in ~/.cache/pal/kernels/*.ptx; do /usr/local/cuda/bin/ptxas -arch=sm_90a -v "$f" -o /dev/null 2>&1 | grep -E "Used|spill" | head -4; done >> "$log" 2>&1
fi
grid=(--batch 1,8,32 --context 1024,4096,16384,32768)
declare -A DIMS=([llama]="32 8 128" [smollm]="9 3 64" [mha]="32 32 128")
for name in $SHAPES; do
  set -- $name ${DIMS[$name]}
  echo "== pal bench decode $1" | tee -a "$log"
  "$PAL" bench decode --device cuda "${grid[@]}" --hq $2 --hkv $3 --head-dim $4 --budget-ms 150 --json > "$OUT/pal_$1.json" 2>>"$log"
  echo "== peers $1" | tee -a "$log"
  lim=420; [ "$1" = llama ] || lim=170
  timeout $lim python3 bench/peers/decode_peers.py --batch 1,8,32 --context 1024,4096,16384,32768 --hq $2 --hkv $3 --head-dim $4 --budget-ms 150 --out "$OUT/peers_$1.json" 2>>"$log"; echo "peers exit $?" | tee -a "$log"
done
if [ "$CHECKS" = 1 ]; then
  echo "== pal bench append (cuda)" | tee -a "$log"
  "$PAL" bench append --device cuda --batch 16,64 --context 4096 --new-tokens 512 2>>"$log" | tee -a "$log"
fi
echo done | tee -a "$log"
# The device returns at most 8 files per call: bundle the JSON rows (BUNDLE=0 keeps them loose;
# unpack with `tar xzf` before running the summary scripts on them).
if [ "${BUNDLE:-1}" = 1 ]; then
  (cd "$OUT" && tar czf decode_json.tgz *.json && rm -f *.json)
fi
