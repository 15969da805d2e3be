#!/usr/bin/env bash
# Engine benchmark on the CPU: PAL and llama.cpp on SmolLM2-135M-Instruct (Q4_1), same threads,
# same machine, interleaved runs. Writes bench/results/engine-cpu.json and prints a summary.
# MODEL=FILE.gguf and OUT=FILE.json run another model (e.g. the Q4_K_M file that
# bench/golden/requantize.py makes) into another file.
#
# Needs llama-cpp-python for the peer (builds from source in ~7 min):
#   python3 -m venv /tmp/llama && CMAKE_ARGS="-DGGML_NATIVE=ON" /tmp/llama/bin/pip install numpy llama-cpp-python
#   LLAMA_PY=/tmp/llama/bin/python bench/run_engine.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
LLAMA_PY=${LLAMA_PY:-python3}
cargo build --release -q -p pal-cli
PAL=target/release/pal
MODEL=${MODEL:-$($PAL fetch smollm2)}
OUT=${OUT:-bench/results/engine-cpu.json}
tmp=$(mktemp -d)
for run in 1 2; do
  $PAL --threads "$THREADS" bench-model --model "$MODEL" --batch 1,16 --gen-tokens 128 --prompt-tokens 512 --reps 3 --json > "$tmp/pal$run.json"
  "$LLAMA_PY" bench/peers/llama_cpp_engine.py "$MODEL" --threads "$THREADS" --gen-tokens 128 --prompt-tokens 512 --reps 3 > "$tmp/llama$run.json"
done
python3 - "$tmp" "$OUT" <<'PY'
import json, sys, glob
tmp, out = sys.argv[1], sys.argv[2]
rows = []
for f in sorted(glob.glob(tmp + "/*.json")):
    run = f.rsplit("/", 1)[1]
    for r in json.load(open(f)):
        r["run"] = run
        rows.append(r)
json.dump(rows, open(out, "w"), indent=1)
def best(engine, bench, batch):
    v = [r["tok_s"] for r in rows if r["engine"] == engine and r["bench"] == bench and r["batch"] == batch]
    return max(v) if v else float("nan")
p1, l1 = best("pal", "decode", 1), best("llama.cpp", "decode", 1)
p16 = best("pal", "decode", 16)
pp, lp = best("pal", "prefill", 1), best("llama.cpp", "prefill", 1)
print(f"decode batch 1 : PAL {p1:7.1f} tok/s, llama.cpp {l1:7.1f} tok/s -> {p1 / l1:.2f}x (target >= 1.0x)")
print(f"decode batch 16: PAL {p16:7.1f} tok/s aggregate -> {p16 / p1:.2f}x PAL batch 1 (target >= 4x)")
print(f"prefill 512    : PAL {pp:7.1f} tok/s, llama.cpp {lp:7.1f} tok/s -> {pp / lp:.2f}x")
print(f"best of 2 runs x 3 reps each; rows in {out}")
PY
rm -rf "$tmp"
