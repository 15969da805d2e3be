#!/usr/bin/env bash
# Tokens-as-rows tensor-core decode (PAL_DEC_TC_TOKROWS=1): correctness, sanitizers, same-call A/B.
set -u
P=.dev/pal
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/device.txt
t0=$(date +%s)
PAL_DEC_TC_TOKROWS=1 timeout 200 $P selftest --device cuda --op decode > $OUT/selftest_tokrows.txt 2>&1; echo "selftest tokrows exit $?"; tail -4 $OUT/selftest_tokrows.txt
grep -i "fail" $OUT/selftest_tokrows.txt | head -5
echo "t=$(( $(date +%s) - t0 ))"
for tool in memcheck racecheck; do
  for shape in "9 3 64" "16 2 256"; do
    set -- $shape
    PAL_DEC_TC_TOKROWS=1 timeout 60 compute-sanitizer --tool $tool --error-exitcode 9 $P bench decode --device cuda --batch 3 --context 97,300 --page 8 --hq $1 --hkv $2 --head-dim $3 --budget-ms 1 > /tmp/san.txt 2>&1
    echo "$tool hq=$1 hkv=$2 d=$3 exit $?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' /tmp/san.txt | head -2 | tr '\n' ' ')"
  done
done
echo "t=$(( $(date +%s) - t0 ))"
OUT=$OUT bench/gpu_env_ab.sh $P smollm PAL_DEC_TC_TOKROWS 0 1 3 decode --device cuda --batch 1,8,32 --context 1024,4096,16384,32768 --hq 9 --hkv 3 --head-dim 64 --budget-ms 100 | tee $OUT/ab_smollm.txt
echo "t=$(( $(date +%s) - t0 ))"
OUT=$OUT bench/gpu_env_ab.sh $P llama PAL_DEC_TC_TOKROWS 0 1 2 decode --device cuda --batch 1,8,32 --context 1024,4096,16384,32768 --hq 32 --hkv 8 --head-dim 128 --budget-ms 100 | tee $OUT/ab_llama.txt
echo "t=$(( $(date +%s) - t0 ))"
cd $OUT && tar czf ab_json.tgz ab_smollm ab_llama && rm -rf ab_smollm ab_llama
