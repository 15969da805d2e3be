#!/usr/bin/env python3
"""Decode peers for `pal bench decode --device cuda`, on the same shapes, in the same GPU call.

Prints one JSON array of rows shaped like PAL's (op, kernel, device, batch, context, hq, hkv,
head_dim, page, dtype, ms, gbps, frac_of_ceiling, ...). Kernels:
  torch-sdpa          PyTorch SDPA on contiguous K/V (the dense peer; cuDNN/flash/efficient backend
                      as PyTorch picks; GQA through enable_gqa)
  torch-gather-sdpa   index_select the pages of a paged pool into contiguous K/V, then SDPA
  flashinfer-cuda     FlashInfer BatchDecodeWithPagedKVCacheWrapper, CUDA cores   (if importable)
  flashinfer-tc       the same with use_tensor_cores=True                          (if importable)
The read-bandwidth ceiling is measured here too (a streaming sum of a 2 GiB tensor).
"""
import argparse, json, sys
import torch
import torch.nn.functional as F
from common import paged_cell, time_ms


def read_ceiling():
    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda").view(torch.int64)
    x.random_()
    ms = time_ms(lambda: x.sum(), 300)
    return x.numel() * 8 / ms / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,8,32")
    ap.add_argument("--context", default="1024,4096,16384,32768")
    ap.add_argument("--hq", type=int, default=32)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--budget-ms", type=float, default=300)
    ap.add_argument("--no-flashinfer", action="store_true", help="skip FlashInfer (its JIT build takes minutes)")
    ap.add_argument("--out", help="write the JSON array here after every cell (a timeout keeps what was measured)")
    a = ap.parse_args()
    dev = torch.cuda.get_device_name()
    ceil = read_ceiling()
    try:
        if a.no_flashinfer:
            raise RuntimeError("skipped (--no-flashinfer)")
        import flashinfer  # noqa
        have_fi = True
    except Exception as ex:  # not installed or failed to load
        print(f"flashinfer unavailable: {ex}", file=sys.stderr)
        have_fi = False
    rows = []
    dt = torch.bfloat16
    hq, hkv, d, page = a.hq, a.hkv, a.head_dim, a.page
    for B in [int(x) for x in a.batch.split(",")]:
        for L in [int(x) for x in a.context.split(",")]:
            k_pool, v_pool, table, pages, kd, vd = paged_cell(B, L, hkv, d, page, dt)
            q = torch.randn(B, hq, d, dtype=dt, device="cuda")
            qq = q.unsqueeze(2)
            bytes_ = (2 * B * L * hkv * d + 2 * B * hq * d) * 2
            def sdpa():
                return F.scaled_dot_product_attention(qq, kd, vd, enable_gqa=(hq != hkv))
            def gather_sdpa():
                k = k_pool.index_select(0, table.view(-1).long()).view(B, pages * page, hkv, d)[:, :L].transpose(1, 2)
                v = v_pool.index_select(0, table.view(-1).long()).view(B, pages * page, hkv, d)[:, :L].transpose(1, 2)
                return F.scaled_dot_product_attention(qq, k, v, enable_gqa=(hq != hkv))
            kernels = [("torch-sdpa", sdpa), ("torch-gather-sdpa", gather_sdpa)]
            if have_fi:
                indptr = torch.arange(0, B + 1, dtype=torch.int32, device="cuda") * pages
                last = torch.full((B,), L - (pages - 1) * page, dtype=torch.int32, device="cuda")
                ws = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
                for name, tc in [("flashinfer-cuda", False), ("flashinfer-tc", True)]:
                    try:
                        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", use_tensor_cores=tc)
                        w.plan(indptr, table.view(-1), last, hq, hkv, d, page, data_type=dt, q_data_type=dt)
                        kernels.append((name, (lambda w=w: w.run(q, (k_pool, v_pool)))))
                    except Exception as ex:
                        print(f"{name} failed to plan: {ex}", file=sys.stderr)
            ref = sdpa().squeeze(2).float()
            for name, fn in kernels:
                try:
                    out = fn()
                    err = (out.reshape(B, hq, d).float() - ref).abs().max().item()
                    ms = time_ms(fn, a.budget_ms)
                except Exception as ex:
                    print(f"{name} B={B} L={L} failed: {ex}", file=sys.stderr)
                    continue
                rows.append(dict(op="decode", kernel=name, device=dev, batch=B, context=L, hq=hq, hkv=hkv,
                                 head_dim=d, page=page, dtype="bf16", ms=ms, gbps=bytes_ / ms / 1e6,
                                 ceiling="read_gbps", ceiling_value=ceil, frac_of_ceiling=bytes_ / ms / 1e6 / ceil,
                                 max_abs_vs_sdpa=err))
                if a.out:
                    with open(a.out, "w") as f:
                        json.dump(rows, f, indent=1)
            del k_pool, v_pool, kd, vd
            torch.cuda.empty_cache()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
