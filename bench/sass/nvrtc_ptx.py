"""Compile one CUDA source to PTX with NVRTC through ctypes (no GPU, no nvcc front end), with the
options PAL's runtime uses (compile.rs). Usage: nvrtc_ptx.py SRC.cu OUT.ptx [ARCH]
Needs libnvrtc from the `nvidia-cuda-nvrtc==13.0.88` wheel (the one .ci/run installs into
.ci/nvrtc) on LD_LIBRARY_PATH, and its headers (`nvidia-cuda-runtime==13.0.96`)."""
import ctypes
import os
import sys

root = os.environ.get("PAL_CUDA_ROOT", os.path.join(os.path.dirname(__file__), "../../.ci/nvrtc/nvidia/cu13"))
lib = ctypes.CDLL(os.path.join(root, "lib", "libnvrtc.so.13"))
src = open(sys.argv[1], "rb").read()
arch = sys.argv[3] if len(sys.argv) > 3 else "compute_90a"
prog = ctypes.c_void_p()
assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"k.cu", 0, None, None) == 0
opts = [b"--std=c++17", b"--use_fast_math", b"-default-device", b"-arch=" + arch.encode(),
        b"-I" + os.path.join(root, "include").encode()]
arr = (ctypes.c_char_p * len(opts))(*opts)
rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
n = ctypes.c_size_t()
lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
log = ctypes.create_string_buffer(n.value)
lib.nvrtcGetProgramLog(prog, log)
if rc != 0:
    sys.exit(log.value.decode())
lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
ptx = ctypes.create_string_buffer(n.value)
lib.nvrtcGetPTX(prog, ptx)
open(sys.argv[2], "wb").write(ptx.value)
