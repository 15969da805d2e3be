#!/usr/bin/env python3
"""Prefill peers for `pal bench prefill --device cuda`, on the same shapes, in the same GPU call.

Each cell: B sequences of `context` tokens whose last `new` tokens are new queries (causal; the
rest is history), bf16, page 16, fragmented page ids. Kernels:
  torch-sdpa-cudnn      PyTorch SDPA, cuDNN backend, contiguous K/V        (where cuDNN takes the shape)
  torch-sdpa-flash      PyTorch SDPA, FlashAttention-2 backend, contiguous  (where it takes the shape)
  flashinfer-fa2        FlashInfer BatchPrefillWithPagedKVCacheWrapper, backend="fa2"
  flashinfer-fa3        the same with backend="fa3" (Hopper)
With history (new < context) SDPA needs a lower-right causal mask (torch.nn.attention.bias).
The bf16 matmul ceiling (torch.matmul, cuBLAS, 8192^3) is measured here too.
Prints / writes one JSON array of rows shaped like PAL's.
"""
import argparse, json, sys
import torch
import torch.nn.functional as F
from common import paged_cell, time_ms


def matmul_ceiling():
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    ms = time_ms(lambda: a @ b, 300)
    return 2 * 8192 ** 3 / ms / 1e6  # GFLOP/s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,8,32")
    ap.add_argument("--context", default="1024,4096,16384,32768")
    ap.add_argument("--new-tokens", type=int, default=512, help="capped at the context (= no history)")
    ap.add_argument("--hq", type=int, default=32)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--budget-ms", type=float, default=150)
    ap.add_argument("--backends", default="cudnn,flash,fa2,fa3")
    ap.add_argument("--out", help="write the JSON array here after every cell (a timeout keeps what was measured)")
    a = ap.parse_args()
    want = set(a.backends.split(","))
    dev = torch.cuda.get_device_name()
    ceil = matmul_ceiling()
    print(f"bf16 matmul ceiling {ceil / 1e3:.1f} TFLOP/s on {dev}", file=sys.stderr)
    fi = None
    if want & {"fa2", "fa3"}:
        try:
            import flashinfer
            fi = flashinfer
        except Exception as ex:
            print(f"flashinfer unavailable: {ex}", file=sys.stderr)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right
    rows = []
    dt = torch.bfloat16
    hq, hkv, d, page = a.hq, a.hkv, a.head_dim, a.page
    ws = torch.empty(512 << 20, dtype=torch.uint8, device="cuda")
    for B in [int(x) for x in a.batch.split(",")]:
        for L in [int(x) for x in a.context.split(",")]:
            n = min(a.new_tokens, L)
            k_pool, v_pool, table, pages, kd, vd = paged_cell(B, L, hkv, d, page, dt)
            q = torch.randn(B * n, hq, d, dtype=dt, device="cuda")
            qd = q.view(B, n, hq, d).transpose(1, 2).contiguous()
            hist = L - n
            flops = 4.0 * B * (n * hist + n * (n + 1) / 2) * d * hq
            mask = None if n == L else causal_lower_right(n, L)
            kernels = []
            for name, be in [("torch-sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("torch-sdpa-flash", SDPBackend.FLASH_ATTENTION)]:
                if name.split("-")[-1] not in want:
                    continue
                def sdpa(be=be):
                    with sdpa_kernel(be):
                        if mask is None:
                            return F.scaled_dot_product_attention(qd, kd, vd, is_causal=True, enable_gqa=(hq != hkv))
                        return F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask, enable_gqa=(hq != hkv))
                kernels.append((name, sdpa, lambda o: o.transpose(1, 2).reshape(B * n, hq, d)))
            if fi is not None:
                qo_indptr = torch.arange(0, B + 1, dtype=torch.int32, device="cuda") * n
                kv_indptr = torch.arange(0, B + 1, dtype=torch.int32, device="cuda") * pages
                last = torch.full((B,), L - (pages - 1) * page, dtype=torch.int32, device="cuda")
                for be in ["fa2", "fa3"]:
                    if be not in want:
                        continue
                    try:
                        w = fi.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD", backend=be)
                        w.plan(qo_indptr, kv_indptr, table.reshape(-1), last, hq, hkv, d, page, causal=True,
                               q_data_type=dt, kv_data_type=dt)
                        kernels.append((f"flashinfer-{be}", (lambda w=w: w.run(q, (k_pool, v_pool))), lambda o: o))
                    except Exception as ex:
                        print(f"flashinfer-{be} failed to plan: {ex}", file=sys.stderr)
            ref = None
            for name, fn, to_rows in kernels:
                try:
                    out = to_rows(fn()).float()
                    if ref is None:
                        ref = out
                    err = (out - ref).abs().max().item()
                    ms = time_ms(fn, a.budget_ms, warmup=2, min_iters=3)
                except Exception as ex:
                    print(f"{name} B={B} L={L} new={n} failed: {str(ex).splitlines()[0] if str(ex) else ex!r}", file=sys.stderr)
                    continue
                gf = flops / ms / 1e6
                rows.append(dict(op="prefill", kernel=name, device=dev, batch=B, context=L, new_tokens=n, hq=hq,
                                 hkv=hkv, head_dim=d, page=page, dtype="bf16", ms=ms, gflops=gf,
                                 ceiling="bf16_mma_gflops", ceiling_value=ceil, frac_of_ceiling=gf / ceil,
                                 max_abs_vs_first=err))
                print(f"{name:18} B={B:<3} L={L:<6} new={n:<6} {ms:9.3f} ms {gf / 1e3:7.1f} TFLOP/s", file=sys.stderr)
                if a.out:
                    with open(a.out, "w") as f:
                        json.dump(rows, f, indent=1)
            del k_pool, v_pool, kd, vd, qd, q
            torch.cuda.empty_cache()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
