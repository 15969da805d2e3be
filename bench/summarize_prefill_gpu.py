#!/usr/bin/env python3
"""Summarize a GPU prefill run (prefill_pal_*.json + prefill_peers_*.json from
bench/gpu_prefill_run.sh) as Markdown tables: time and TFLOP/s per kernel, PAL's ratios."""
import json, sys, os
d = sys.argv[1] if len(sys.argv) > 1 else "bench/results/gpu"
for shape in ["llama", "llama_nohist", "smollm", "mha"]:
    try:
        pal = json.load(open(os.path.join(d, f"prefill_pal_{shape}.json")))
    except (OSError, ValueError):
        continue
    try:
        peers = json.load(open(os.path.join(d, f"prefill_peers_{shape}.json")))
    except (OSError, ValueError):
        peers = []
    r0 = pal[0]
    print(f"\n#### {shape}: Hq={r0['hq']} Hkv={r0['hkv']} D={r0['head_dim']} page={r0['page']} bf16 — {r0['device']}")
    ceil = r0["ceiling_value"] / 1e3
    torch_ceil = peers[0]["ceiling_value"] / 1e3 if peers else float("nan")
    print(f"bf16 GEMM ceiling: {ceil:.0f} TFLOP/s (cuBLAS through PAL), {torch_ceil:.0f} TFLOP/s (torch.matmul)\n")
    names = ["pal", "gather", "dense", "flashinfer-fa2", "flashinfer-fa3", "torch-sdpa-cudnn", "torch-sdpa-flash"]
    print("| B | L | new | " + " | ".join(f"{n} µs" for n in names)
          + " | pal TFLOP/s | pal % ceil | vs fa2 | vs fa3 | vs cuDNN | vs gather |")
    print("|" + "---|" * (len(names) + 9))
    cells = sorted({(r["batch"], r["context"], r["new_tokens"]) for r in pal})
    for b, l, n in cells:
        t = {}
        for r in pal + peers:
            if r["batch"] == b and r["context"] == l and r.get("new_tokens", n) == n:
                t[r["kernel"]] = r
        pr = t.get("pal") or t.get("pal-rows")
        ratio = lambda k: f"{t[k]['ms'] / pr['ms']:.2f}x" if k in t else "-"
        cols = " | ".join(f"{t[k]['ms'] * 1e3:.0f}" if k in t else "-" for k in names)
        print(f"| {b} | {l} | {n} | {cols} | {pr['gflops'] / 1e3:.0f} | {pr['frac_of_ceiling'] * 100:.0f}% | "
              f"{ratio('flashinfer-fa2')} | {ratio('flashinfer-fa3')} | {ratio('torch-sdpa-cudnn')} | {ratio('gather')} |")
