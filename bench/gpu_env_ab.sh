#!/usr/bin/env bash
# Same-call A/B of one environment switch on the GPU: ROUNDS interleaved rounds of
# `pal bench ARGS --json` with VAR=A, then VAR=B (so drift between rounds hits both sides),
# one JSON file per (round, side) under $OUT/ab_<tag>/, and a table of pal's median time per cell
# with the B/A ratio of the per-side median over rounds.
# Usage on the GPU machine: bench/gpu_env_ab.sh PAL TAG VAR A B ROUNDS pal-bench-args...
#   e.g. bench/gpu_env_ab.sh .dev/pal merge PAL_FUSED_MERGE 0 1 3 decode --device cuda --batch 1,8
set -u
PAL=$1 TAG=$2 VAR=$3 A=$4 B=$5 ROUNDS=$6
shift 6
OUT=${OUT:-bench/results/gpu}
dir="$OUT/ab_$TAG"
mkdir -p "$dir"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    val=$A; [ $side = B ] && val=$B
    env "$VAR=$val" "$PAL" bench "$@" --json > "$dir/r${r}_$side.json" 2>> "$dir/stderr.txt" || echo "round $r $side failed" >&2
  done
done
python3 - "$dir" "$VAR" "$A" "$B" <<'EOF'
import json, glob, os, statistics, sys
d, var, a, b = sys.argv[1:5]
t = {}
for f in sorted(glob.glob(os.path.join(d, "r*_*.json"))):
    side = os.path.basename(f).split("_")[1][0]
    try:
        rows = json.load(open(f))
    except Exception:
        continue
    for r in rows:
        if r["kernel"] != "pal":
            continue
        key = (r["hq"], r["hkv"], r["head_dim"], r["batch"], r["context"], r.get("new_tokens", 0))
        t.setdefault(key, {"A": [], "B": []})[side].append(r["ms"] * 1e3)
print(f"{var}: A={a} B={b}; pal median µs per round, B/A of the medians (<1: B faster)")
for key, v in sorted(t.items()):
    if not v["A"] or not v["B"]:
        continue
    ma, mb = statistics.median(v["A"]), statistics.median(v["B"])
    fa = " ".join(f"{x:.1f}" for x in v["A"])
    fb = " ".join(f"{x:.1f}" for x in v["B"])
    print(f"hq={key[0]} hkv={key[1]} d={key[2]} B={key[3]} L={key[4]} new={key[5]}: A [{fa}] B [{fb}] B/A {mb / ma:.3f}")
EOF
