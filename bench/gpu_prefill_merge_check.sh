#!/usr/bin/env bash
# Check and measure the split-KV merge inside the tensor-core prefills (the last split block of a
# (tile, KV head) merges; PAL_FUSED_MERGE=0 brings back the pal_prefill_merge kernel):
# 1. the full prefill selftest (its `cuda-split` backend forces 3 splits on every tile, so every
#    case goes through the merge; `cuda-mma` runs the mma.sync kernel);
# 2. compute-sanitizer memcheck and racecheck over the quick prefill selftest;
# 3. same-call A/B PAL_FUSED_MERGE=0|1, 3 interleaved rounds: Llama with history (B 1, 8), no
#    history (B 1), SmolLM (B 1, 8).
# Usage on the GPU machine: bench/gpu_prefill_merge_check.sh [PAL_BINARY]; results under $OUT.
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
P=${1:-.dev/pal}
OUT=${OUT:-bench/results/gpu/prefill_merge_check}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/device.txt
t0=$(date +%s)
echo "== full prefill selftest"
timeout 300 $P selftest --device cuda --op prefill > $OUT/selftest_prefill.txt 2>&1; echo "exit $? t=$(( $(date +%s) - t0 ))"
grep -E "FAIL|NONDET" $OUT/selftest_prefill.txt | head -5; tail -n 1 $OUT/selftest_prefill.txt
for tool in memcheck racecheck; do
  echo "== $tool quick prefill selftest"
  timeout 240 compute-sanitizer --tool $tool --error-exitcode 9 $P selftest --device cuda --quick --op prefill > $OUT/$tool.txt 2>&1
  echo "exit $? t=$(( $(date +%s) - t0 ))"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|selftest:" $OUT/$tool.txt | tail -n 2
done
mkdir -p $OUT/ab
AB="bash bench/gpu_env_ab.sh $P"
OUT=$OUT/ab $AB llama PAL_FUSED_MERGE 0 1 3 prefill --device cuda --batch 1,8 --context 1024,4096,16384,32768 --new-tokens 512 --budget-ms 50 > $OUT/ab_llama.txt
cat $OUT/ab_llama.txt; echo "t=$(( $(date +%s) - t0 ))"
OUT=$OUT/ab $AB nohist PAL_FUSED_MERGE 0 1 3 prefill --device cuda --batch 1 --context 1024,4096 --new-tokens 16384 --budget-ms 50 > $OUT/ab_nohist.txt
cat $OUT/ab_nohist.txt; echo "t=$(( $(date +%s) - t0 ))"
OUT=$OUT/ab $AB smollm PAL_FUSED_MERGE 0 1 3 prefill --device cuda --batch 1,8 --context 4096,16384 --new-tokens 512 --hq 9 --hkv 3 --head-dim 64 --budget-ms 50 > $OUT/ab_smollm.txt
cat $OUT/ab_smollm.txt; echo "t=$(( $(date +%s) - t0 ))"
