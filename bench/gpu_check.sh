#!/usr/bin/env bash
# Correctness of the tree on one GPU, in one device call (no timing), and the check part of
# bench/gpu_run.sh and bench/gpu_prefill_run.sh: `pal kernels build`, the full
# `pal selftest --device cuda` grid (every op, seed cases and random shapes against the f64
# reference), the register and pipelined decode kernels that the default does not pick for bf16,
# compute-sanitizer memcheck + racecheck over the quick grid of each op and over a small decode
# with each decode kernel, and the decode kernels' registers and spills as ptxas reports them.
# Summary in $OUT/check_log.txt, full outputs beside it. Usage on the GPU machine:
# bench/gpu_check.sh PATH_TO_PAL_BINARY
set -u
source "$(dirname "$0")/gpu_env.sh"
log="$OUT/check_log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
start=$(date +%s)
"$PAL" kernels build > "$OUT/kernels_build.txt" 2>&1; echo "kernels build exit $? ($(tail -n 1 "$OUT/kernels_build.txt"))" | tee -a "$log"
"$PAL" selftest --device cuda > "$OUT/selftest_cuda.txt" 2>&1; echo "selftest --device cuda exit $?: $(tail -n 1 "$OUT/selftest_cuda.txt")" | tee -a "$log"
grep -E "FAIL|NONDET" "$OUT/selftest_cuda.txt" | head -n 10 | tee -a "$log"
for k in reg pipe; do
  PAL_DECODE_KERNEL=$k "$PAL" selftest --device cuda --op decode --quick > "$OUT/selftest_cuda_$k.txt" 2>&1
  echo "selftest --op decode --quick (PAL_DECODE_KERNEL=$k) exit $?: $(tail -n 1 "$OUT/selftest_cuda_$k.txt")" | tee -a "$log"
done
summary() { echo "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$1" | tail -n 1) / $(grep -E 'passed' "$1" | tail -n 1)"; }
for op in decode prefill append; do
  for tool in memcheck racecheck; do
    timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 "$PAL" selftest --device cuda --quick --op $op > "$OUT/san_${tool}_$op.txt" 2>&1
    echo "$tool --op $op exit $?: $(summary "$OUT/san_${tool}_$op.txt")" | tee -a "$log"
  done
done
# Each decode kernel under the sanitizers (racecheck is for the shared-memory pipelines).
small=(bench decode --device cuda --batch 3 --context 97,300 --page 8 --hq 8 --hkv 2 --head-dim 64 --budget-ms 1)
for k in tc reg pipe; do
  for tool in memcheck racecheck; do
    PAL_DECODE_KERNEL=$k compute-sanitizer --tool $tool --error-exitcode 9 "$PAL" "${small[@]}" > /tmp/san.txt 2>&1
    echo "$tool small decode (PAL_DECODE_KERNEL=$k) exit $?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/san.txt | tail -n 1)" | tee -a "$log"
  done
done
# Registers and spills of the kernels as ptxas sees them.
for f in ~/.cache/pal/kernels/*.ptx; do /usr/local/cuda/bin/ptxas -arch=sm_90a -v "$f" -o /dev/null 2>&1 | grep -E "Used|spill" | head -4; done > "$OUT/ptxas_usage.txt" 2>&1
echo "total $(( $(date +%s) - start )) s" | tee -a "$log"
