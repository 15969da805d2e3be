#!/usr/bin/env bash
# A check-and-measure session for the wgmma prefill (the Hopper default since the fourth session):
# 1. the quick prefill selftest with each reading of V's descriptor (PAL_WG_VSWAP 0/1: which
#    field holds the stride between column blocks and which the one between 8-key groups), the
#    first that passes is kept;
# 2. the full prefill selftest and compute-sanitizer memcheck with it;
# 3. same-call A/B against the mma.sync kernel (PAL_PREFILL_KERNEL=mma|wgmma), 2 rounds:
#    Llama B x L, SmolLM (head dim 64), no history.
# 4. with TUNE=1, keys per tile at head dim 64 (64, 128); with NCU=1, Nsight sections and
#    SASS source counters of the wgmma kernel at Llama B=8 4k.
# Usage on the GPU machine: bench/gpu_prefill_wg_check.sh [PAL_BINARY]; results under $OUT.
# The A/B sets PAL_PREFILL_KERNEL itself, so PAL_WG_VSWAP is what carries over.
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
P=${1:-.dev/pal}
OUT=${OUT:-bench/results/gpu/wg_check}; mkdir -p $OUT
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
good=
for vs in ${VSWAPS:-0 1}; do
  echo "== VSWAP=$vs quick prefill selftest (wgmma)"
  PAL_PREFILL_KERNEL=wgmma PAL_WG_VSWAP=$vs timeout 60 $P selftest --device cuda --quick --op prefill > $OUT/st_q_$vs.txt 2>&1; rc=$?
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
  OUT=$OUT/ab bash bench/gpu_env_ab.sh $P bn64 PAL_PREFILL_WG_BN 64 128 2 prefill --device cuda --batch 1,8,32 --context 4096,16384 --new-tokens 512 --hq 9 --hkv 3 --head-dim 64 --budget-ms 60
  echo "t=$(( $(date +%s) - t0 ))"
fi
if [ "${NCU:-0}" = 1 ]; then  # where the wgmma kernel's time goes, Llama B=8 4k
  NCUB=$(ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats"
  PAL_PREFILL_KERNEL=wgmma timeout 150 $NCUB $SEC -k regex:pal_prefill_wg --launch-skip 3 --launch-count 1 $P bench prefill --device cuda --batch 8 --context 4096 --new-tokens 512 --budget-ms 20 > $OUT/ab/ncu_sec_wg.txt 2>&1
  PAL_PREFILL_KERNEL=wgmma timeout 200 $NCUB --section SourceCounters --section WarpStateStats -k regex:pal_prefill_wg --launch-skip 3 --launch-count 1 -o /tmp/rep_wg $P bench prefill --device cuda --batch 8 --context 4096 --new-tokens 512 --budget-ms 20 > /dev/null 2>&1
  $NCUB -i /tmp/rep_wg.ncu-rep --page source --print-source sass --csv > $OUT/ab/ncu_sass_wg.csv 2>&1
  echo "ncu t=$(( $(date +%s) - t0 ))"
fi
(cd $OUT && tar czf ab.tgz ab && rm -rf ab)
