#!/usr/bin/env bash
# Correctness of the tree on one GPU, in one device call (no timing): `pal kernels build`, the full
# `pal selftest --device cuda` grid (every op, seed cases and random shapes against the f64
# reference), the register and pipelined decode kernels that the default does not pick for bf16,
# and compute-sanitizer memcheck + racecheck over the quick grid of each op. Summary in
# $OUT/check_log.txt, full outputs beside it.
# Usage on the GPU machine: bench/gpu_check.sh PATH_TO_PAL_BINARY
set -u
source "$(dirname "$0")/gpu_env.sh"
log="$OUT/check_log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
start=$(date +%s)
"$PAL" kernels build > "$OUT/kernels_build.txt" 2>&1; echo "kernels build exit $? ($(tail -n 1 "$OUT/kernels_build.txt"))" | tee -a "$log"
"$PAL" selftest --device cuda > "$OUT/selftest_cuda.txt" 2>&1; echo "selftest --device cuda exit $?: $(tail -n 1 "$OUT/selftest_cuda.txt")" | tee -a "$log"
for k in reg pipe; do
  PAL_DECODE_KERNEL=$k "$PAL" selftest --device cuda --op decode --quick > "$OUT/selftest_cuda_$k.txt" 2>&1
  echo "selftest --op decode --quick (PAL_DECODE_KERNEL=$k) exit $?: $(tail -n 1 "$OUT/selftest_cuda_$k.txt")" | tee -a "$log"
done
for op in decode prefill append; do
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 "$PAL" selftest --device cuda --quick --op $op > "$OUT/san_${tool}_$op.txt" 2>&1
    echo "$tool --op $op exit $?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/san_${tool}_$op.txt" | tail -n 1) / $(grep -E 'passed' "$OUT/san_${tool}_$op.txt" | tail -n 1)" | tee -a "$log"
  done
done
echo "total $(( $(date +%s) - start )) s" | tee -a "$log"
