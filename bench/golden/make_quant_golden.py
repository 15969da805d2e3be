"""Golden dequantization values from the `gguf` Python package (independent of PAL).

Usage: python make_quant_golden.py OUT.json
For each format: random blocks (scales drawn as finite f16, the rest random bytes), encoded as
hex, and the f32 values gguf.quants.dequantize gives for them.
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

rng = np.random.default_rng(20261122)


def f16_bytes(n, lo=-2.0, hi=2.0):
    return np.asarray(rng.uniform(lo, hi, n), dtype=np.float16).view(np.uint8)


def blocks(kind, nblocks):
    out = []
    for _ in range(nblocks):
        if kind == "Q4_0":
            b = np.concatenate([f16_bytes(1), rng.integers(0, 256, 16, dtype=np.uint8)])
        elif kind == "Q4_1":
            b = np.concatenate([f16_bytes(2), rng.integers(0, 256, 16, dtype=np.uint8)])
        elif kind == "Q8_0":
            b = np.concatenate([f16_bytes(1), rng.integers(0, 256, 32, dtype=np.uint8)])
        elif kind == "Q4_K":
            b = np.concatenate([f16_bytes(2, 0.0, 0.1), rng.integers(0, 256, 12 + 128, dtype=np.uint8)])
        elif kind == "Q5_0":
            b = np.concatenate([f16_bytes(1), rng.integers(0, 256, 4 + 16, dtype=np.uint8)])
        elif kind == "Q5_1":
            b = np.concatenate([f16_bytes(2), rng.integers(0, 256, 4 + 16, dtype=np.uint8)])
        elif kind == "Q5_K":
            b = np.concatenate([f16_bytes(2, 0.0, 0.1), rng.integers(0, 256, 12 + 32 + 128, dtype=np.uint8)])
        elif kind == "Q2_K":
            b = np.concatenate([rng.integers(0, 256, 16 + 64, dtype=np.uint8), f16_bytes(2, 0.0, 0.1)])
        elif kind == "Q3_K":
            b = np.concatenate([rng.integers(0, 256, 32 + 64 + 12, dtype=np.uint8), f16_bytes(1, -0.1, 0.1)])
        elif kind == "IQ4_NL":
            b = np.concatenate([f16_bytes(1), rng.integers(0, 256, 16, dtype=np.uint8)])
        elif kind == "IQ4_XS":
            b = np.concatenate([f16_bytes(1, -0.1, 0.1), rng.integers(0, 256, 2 + 4 + 128, dtype=np.uint8)])
        elif kind == "Q6_K":
            b = np.concatenate([rng.integers(0, 256, 128 + 64 + 16, dtype=np.uint8), f16_bytes(1, -0.1, 0.1)])
        elif kind == "F16":
            b = f16_bytes(1, -100, 100)
        elif kind == "BF16":
            v = np.asarray(rng.uniform(-100, 100, 1), dtype=np.float32).view(np.uint32) >> 16
            b = v.astype(np.uint16).view(np.uint8)
        elif kind == "F32":
            b = np.asarray(rng.uniform(-100, 100, 1), dtype=np.float32).view(np.uint8)
        out.append(b)
    return np.concatenate(out).astype(np.uint8)


def main(out):
    res = []
    for kind, n in [("F32", 64), ("F16", 64), ("BF16", 64), ("Q4_0", 8), ("Q4_1", 8), ("Q8_0", 8), ("Q4_K", 3), ("Q6_K", 3),
                    ("Q5_0", 8), ("Q5_1", 8), ("Q5_K", 3), ("Q2_K", 3), ("Q3_K", 3),
                    ("IQ4_NL", 8), ("IQ4_XS", 3)]:
        raw = blocks(kind, n)
        vals = quants.dequantize(raw, getattr(T, kind)).astype(np.float32).reshape(-1)
        res.append({"type": kind, "hex": raw.tobytes().hex(), "values": [float(x) for x in vals]})
    with open(out, "w") as f:
        json.dump({"source": "gguf (Python) quants.dequantize", "cases": res}, f)


if __name__ == "__main__":
    main(sys.argv[1])
