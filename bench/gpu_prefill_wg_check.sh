#!/usr/bin/env bash
# The wgmma prefill's first GPU session (it compiles in CI but has not run on a GPU yet):
# 1. the quick prefill selftest with each reading of the descriptors (PAL_WG_VSWAP 0-3: which
#    field holds the K-direction core-matrix stride, for V and for Q/K), the first that passes
#    is kept;
# 2. the full prefill selftest and compute-sanitizer memcheck with it;
# 3. same-call A/B against the mma.sync kernel (PAL_PREFILL_KERNEL=mma|wgmma), 2 rounds:
#    Llama B x L, SmolLM (head dim 64), no history.
# 4. with TUNE=1, its knobs: blocks per SM (1 or 2) and, at head dim 64, keys per tile (64, 128).
# Usage on the GPU machine: bench/gpu_prefill_wg_check.sh [PAL_BINARY]; results under $OUT.
# The A/B sets PAL_PREFILL_KERNEL itself, so PAL_WG_VSWAP is what carries over.
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
P=${1:-.dev/pal}
OUT=${OUT:-bench/results/gpu/wg_check}; mkdir -p $OUT
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
good=
for vs in 0 1 2 3; do
  echo "== VSWAP=$vs quick prefill selftest (wgmma)"
  PAL_PREFILL_KERNEL=wgmma PAL_WG_VSWAP=$vs timeout 120 $P selftest --device cuda --quick --op prefill > $OUT/st_q_$vs.txt 2>&1; rc=$?
  echo "exit $rc t=$(( $(date +%s) - t0 ))"
  grep -E "FAIL|NONDET|rror" $OUT/st_q_$vs.txt | head -8; tail -n 2 $OUT/st_q_$vs.txt
  if [ $rc = 0 ] && [ -z "$good" ]; then good=$vs; fi
done
[ -z "$good" ] && { echo "no descriptor reading passed"; exit 1; }
export PAL_WG_VSWAP=$good
echo "== full prefill selftest wgmma (VSWAP=$good)"
PAL_PREFILL_KERNEL=wgmma timeout 240 $P selftest --device cuda --op prefill > $OUT/st_full_wg.txt 2>&1; echo "exit $? t=$(( $(date +%s) - t0 ))"
grep -E "FAIL|NONDET" $OUT/st_full_wg.txt | head -5; tail -n 1 $OUT/st_full_wg.txt
echo "== memcheck quick prefill (wgmma)"
PAL_PREFILL_KERNEL=wgmma timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $P selftest --device cuda --quick --op prefill > /tmp/mc.txt 2>&1; echo "exit $?"
grep -E "ERROR SUMMARY|selftest:" /tmp/mc.txt | tail -n 2
echo "t=$(( $(date +%s) - t0 ))"
mkdir -p $OUT/ab
OUT=$OUT/ab bash bench/gpu_env_ab.sh $P llama PAL_PREFILL_KERNEL mma wgmma 2 prefill --device cuda --batch 1,8,32 --context 1024,4096,16384 --new-tokens 512 --budget-ms 60
echo "t=$(( $(date +%s) - t0 ))"
OUT=$OUT/ab bash bench/gpu_env_ab.sh $P smollm PAL_PREFILL_KERNEL mma wgmma 2 prefill --device cuda --batch 1,8,32 --context 4096,16384 --new-tokens 512 --hq 9 --hkv 3 --head-dim 64 --budget-ms 60
echo "t=$(( $(date +%s) - t0 ))"
OUT=$OUT/ab bash bench/gpu_env_ab.sh $P nohist PAL_PREFILL_KERNEL mma wgmma 2 prefill --device cuda --batch 1,8 --context 1024,4096 --new-tokens 16384 --budget-ms 60
echo "t=$(( $(date +%s) - t0 ))"
if [ "${TUNE:-0}" = 1 ]; then  # the kernel's own knobs, wgmma on both sides
  export PAL_PREFILL_KERNEL=wgmma
  OUT=$OUT/ab bash bench/gpu_env_ab.sh $P minb PAL_PREFILL_WG_MIN_BLOCKS 1 2 2 prefill --device cuda --batch 1,8,32 --context 1024,16384 --new-tokens 512 --budget-ms 60
  OUT=$OUT/ab bash bench/gpu_env_ab.sh $P bn64 PAL_PREFILL_WG_BN 64 128 2 prefill --device cuda --batch 1,8,32 --context 4096,16384 --new-tokens 512 --hq 9 --hkv 3 --head-dim 64 --budget-ms 60
  echo "t=$(( $(date +%s) - t0 ))"
fi
(cd $OUT && tar czf ab.tgz ab && rm -rf ab)
