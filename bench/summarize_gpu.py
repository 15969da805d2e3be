#!/usr/bin/env python3
"""Summarize a GPU run (pal_*.json + peers_*.json from bench/gpu_run.sh) as Markdown tables."""
import json, sys, os
d = sys.argv[1] if len(sys.argv) > 1 else "bench/results/gpu"
for shape in ["llama", "smollm", "mha"]:
    pal = json.load(open(os.path.join(d, f"pal_{shape}.json")))
    peers = json.load(open(os.path.join(d, f"peers_{shape}.json")))
    r0 = pal[0]
    print(f"\n#### {shape}: Hq={r0['hq']} Hkv={r0['hkv']} D={r0['head_dim']} page={r0['page']} bf16 — {r0['device']}")
    print(f"read ceiling (PAL probe) {r0['ceiling_value']:.0f} GB/s; (torch sum) {peers[0]['ceiling_value']:.0f} GB/s\n")
    names = ["pal", "gather", "dense", "torch-sdpa", "torch-gather-sdpa", "flashinfer-cuda", "flashinfer-tc"]
    # `read-probe` rows (newer runs): a pure streaming read of the cell's bytes, the ceiling at
    # that size with its fixed costs.
    probe = any(r["kernel"] == "read-probe" for r in pal)
    extra = " same-bytes read µs | pal % of it |" if probe else ""
    print("| B | L | " + " | ".join(f"{n} µs" for n in names) + " | pal GB/s | pal % ceil | pal vs FlashInfer best | pal vs SDPA | pal vs gather-SDPA |" + extra)
    print("|" + "---|" * (len(names) + 7 + (2 if probe else 0)))
    cells = sorted({(r["batch"], r["context"]) for r in pal})
    for b, l in cells:
        t = {}
        for r in pal + peers:
            if r["batch"] == b and r["context"] == l:
                t[r["kernel"]] = r
        pr = t["pal"]
        fi = [t[n]["ms"] for n in ["flashinfer-cuda", "flashinfer-tc"] if n in t]
        best_fi = min(fi) if fi else float("nan")
        sd = t.get("torch-sdpa", {}).get("ms", float("nan"))
        gs = t.get("torch-gather-sdpa", {}).get("ms", float("nan"))
        cols = " | ".join(f"{t[n]['ms']*1e3:.1f}" if n in t else "-" for n in names)
        tail = ""
        if probe and "read-probe" in t:
            pm = t["read-probe"]["ms"]
            tail = f" {pm*1e3:.1f} | {pm/pr['ms']*100:.0f}% |"
        print(f"| {b} | {l} | {cols} | {pr['gbps']:.0f} | {pr['frac_of_ceiling']*100:.0f}% | {best_fi/pr['ms']:.2f}x | {sd/pr['ms']:.2f}x | {gs/pr['ms']:.2f}x |" + tail)
