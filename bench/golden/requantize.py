"""Requantize a GGUF model with llama.cpp's quantizer (llama-cpp-python), e.g. SmolLM2's Q4_1 file
to the hub's usual Q4_K_M mix, for PAL's K-quant parity test and benchmarks.

Usage: python requantize.py IN.gguf OUT.gguf [FTYPE]   (FTYPE: a LLAMA_FTYPE_MOSTLY_* suffix,
default Q4_K_M). Rows that are not whole 256-element super-blocks (SmolLM2's 576 columns) fall
back to llama.cpp's 32-element choice (Q5_0 for Q4_K, Q8_0 for Q6_K), as on the hub.
"""
import ctypes
import sys

import llama_cpp


def main(src, dst, ftype="Q4_K_M"):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    p.allow_requantize = True
    p.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed: {rc}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
