#!/usr/bin/env bash
# Run PAL's CPU benchmarks (decode, prefill, append at their default shapes) and store the JSON
# rows under bench/results/. Usage: bench/run_cpu.sh [extra pal bench args...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p pal-cli
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for op in decode prefill append; do
  ./target/release/pal bench "$op" --json "$@" > "bench/results/cpu-$op-$stamp.json"
  echo "wrote bench/results/cpu-$op-$stamp.json"
done
