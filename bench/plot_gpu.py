#!/usr/bin/env python3
"""Plot GB/s against context per batch size for PAL and its peers (one PNG per shape)."""
import json, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

d = sys.argv[1] if len(sys.argv) > 1 else "bench/results/gpu"
out = sys.argv[2] if len(sys.argv) > 2 else "bench/plots"
os.makedirs(out, exist_ok=True)
styles = {"pal": ("C0", "-", "o"), "gather": ("C0", ":", "x"), "torch-sdpa": ("C1", "-", "s"),
          "torch-gather-sdpa": ("C1", ":", "x"), "flashinfer-cuda": ("C2", "--", "^"), "flashinfer-tc": ("C2", "-", "v"),
          # newer runs: a pure read of the same bytes (the ceiling at that size)
          "read-probe": ("0.5", "--", ".")}
for shape in ["llama", "smollm", "mha"]:
    rows = json.load(open(os.path.join(d, f"pal_{shape}.json"))) + json.load(open(os.path.join(d, f"peers_{shape}.json")))
    r0 = rows[0]
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), sharey=True)
    for ax, b in zip(axes, batches):
        for k, (c, ls, m) in styles.items():
            pts = sorted((r["context"], r["gbps"]) for r in rows if r["batch"] == b and r["kernel"] == k)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=c, linestyle=ls, marker=m, label=k)
        ax.axhline(r0["ceiling_value"], color="gray", linewidth=0.8, label="read ceiling")
        ax.set_xscale("log", base=2)
        ax.set_title(f"B={b}")
        ax.set_xlabel("context (tokens)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("GB/s (K/V bytes / time)")
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"decode, Hq={r0['hq']} Hkv={r0['hkv']} D={r0['head_dim']} page={r0['page']} bf16 — {r0['device'].split(':',1)[-1].strip()}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"decode_{shape}.png"), dpi=90)
    print("wrote", os.path.join(out, f"decode_{shape}.png"))
