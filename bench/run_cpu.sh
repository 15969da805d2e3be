#!/usr/bin/env bash
# Run PAL's CPU benchmarks (decode, prefill, append at their default shapes, and a chunked
# prefill of 16 new tokens) and store the JSON rows under bench/results/.
# Usage: bench/run_cpu.sh [extra pal bench args...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p pal-cli
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for op in decode prefill append; do
  ./target/release/pal bench "$op" --json "$@" > "bench/results/cpu-$op-$stamp.json"
  echo "wrote bench/results/cpu-$op-$stamp.json"
done
# Chunked prefill: 16 new tokens over a long history, where reading the pages in place (rather
# than gathering the history first) is a visible part of the time.
./target/release/pal bench prefill --batch 1,8 --context 4096,32768 --new-tokens 16 --json "$@" \
  > "bench/results/cpu-prefill16-$stamp.json"
echo "wrote bench/results/cpu-prefill16-$stamp.json"
