"""Greedy generation of PAL against llama.cpp on any GGUF file PAL reads: for a few raw prompts,
how many tokens agree before the first difference, and llama.cpp's top-1/top-2 logit margin
there (a difference under ~0.5 is rounding, not a bug). A quick check for formats without
stored golden data (e.g. the Q5_K_M / Q3_K_M mixes bench/golden/requantize.py makes).

Usage: python compare_greedy.py MODEL.gguf PATH/TO/pal [TOKENS]
"""
import json
import subprocess
import sys

import numpy as np
from llama_cpp import Llama

PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little robot who",
    "def fibonacci(n):\n",
    "The three primary colors are",
]


def main(model, pal, n=32):
    n = int(n)
    llm = Llama(model_path=model, n_ctx=512, n_threads=2, logits_all=True, verbose=False, seed=0)
    worst = []
    for p in PROMPTS:
        ids = llm.tokenize(p.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        ref, margins = [], []
        for _ in range(n):
            s = np.array(llm.scores[llm.n_tokens - 1])
            top = np.argsort(-s)[:2]
            ref.append(int(top[0]))
            margins.append(float(s[top[0]] - s[top[1]]))
            llm.eval([ref[-1]])
        out = subprocess.run([pal, "generate", "--model", model, "--prompt", p, "--max-tokens", str(n),
                              "--temperature", "0", "--ignore-eos", "--json"],
                             capture_output=True, text=True, check=True).stdout
        gen = json.loads(out.strip().splitlines()[-1])["gen_ids"]
        same = next((i for i, (a, b) in enumerate(zip(gen, ref)) if a != b), min(len(gen), len(ref)))
        at = f"margin there {margins[same]:.2f}" if same < min(len(gen), len(ref)) else "all agree"
        print(f"{p[:40]!r:44} {same:3d}/{n} tokens agree ({at})")
        worst.append(same)
    print(f"fewest agreeing tokens: {min(worst)}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
