#!/usr/bin/env bash
# One GPU session: correctness (bench/gpu_check.sh: selftest on the GPU, compute-sanitizer
# memcheck + racecheck), then PAL's decode benchmark and the Python peers on the same shapes, results under $OUT.
# Usage on the GPU machine: bench/gpu_run.sh PATH_TO_PAL_BINARY
# A device call is limited to 10 minutes: CHECKS=0 skips the correctness part, SHAPES="smollm mha"
# runs a subset of the shapes (llama, smollm, mha), SHAPES="" none (the checks alone).
set -u
CHECKS=${CHECKS:-1}
SHAPES=${SHAPES-llama smollm mha}
source "$(dirname "$0")/gpu_env.sh"
log="$OUT/gpu_log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee -a "$log"
if [ "$CHECKS" = 1 ]; then
  bash "$(dirname "$0")/gpu_check.sh" "$PAL"
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
