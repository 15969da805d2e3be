"""llama.cpp (through llama-cpp-python) on the same GGUF model and thread count as `pal bench-model`.

Usage: python llama_cpp_engine.py MODEL.gguf [--threads 2] [--gen-tokens 128] [--prompt-tokens 512] [--reps 3]
Prints a JSON array of rows shaped like `pal bench-model --json`: prefill tok/s of one prompt,
decode tok/s at batch 1 (greedy, one token per llama_decode). Only the `eval` calls are timed
(llama_decode plus copying the logits row out); the arg-max in NumPy is not counted. llama.cpp's
own perf counters read zero through this binding, hence wall time around each call.
"""
import argparse
import json
import platform
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    llm = Llama(model_path=a.model, n_ctx=2048, n_threads=a.threads, n_threads_batch=a.threads,
                n_batch=512, verbose=False)
    rows = []
    text = ("The quick brown fox jumps over the lazy dog. " * (a.prompt_tokens // 8 + 1)).encode()
    prompt = llm.tokenize(text, add_bos=True)[: a.prompt_tokens]
    best = None
    for _ in range(a.reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        rate = len(prompt) / (time.perf_counter() - t0)
        best = max(best or 0.0, rate)
    rows.append({"bench": "prefill", "engine": "llama.cpp", "version": llama_cpp.__version__,
                 "cpu": platform.processor() or platform.machine(), "threads": a.threads, "batch": 1,
                 "tokens": len(prompt), "tok_s": best})
    start = llm.tokenize(b"Write a short story about the ocean.", add_bos=True)
    best = None
    for _ in range(a.reps):
        llm.reset()
        llm.eval(start)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        spent = 0.0
        for _ in range(a.gen_tokens):
            t0 = time.perf_counter()
            llm.eval([tok])
            spent += time.perf_counter() - t0
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        best = max(best or 0.0, a.gen_tokens / spent)
    rows.append({"bench": "decode", "engine": "llama.cpp", "version": llama_cpp.__version__, "threads": a.threads,
                 "batch": 1, "gen_tokens": a.gen_tokens, "tok_s": best})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
