"""What the peer scripts share: CUDA-event timing and a fragmented paged cell with its contiguous copy."""
import torch


def time_ms(fn, budget_ms, warmup=3, min_iters=5):
    """Mean milliseconds of `fn` over enough back-to-back launches to take about `budget_ms`."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); fn(); e.record(); torch.cuda.synchronize()
    once = max(s.elapsed_time(e), 1e-3)
    n = int(min(2000, max(min_iters, budget_ms / once)))
    s.record()
    for _ in range(n):
        fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / n


def paged_cell(B, L, hkv, d, page, dt):
    """B sequences of L tokens in a pool of pages whose ids are a random permutation (as PAL's bench
    uses). Returns (k_pool, v_pool, table [B, pages] int32, pages, kd, vd) with kd/vd the
    contiguous [B, hkv, L, d] copies the SDPA peers read."""
    pages = (L + page - 1) // page
    nb = B * pages
    k_pool = torch.randn(nb, page, hkv, d, dtype=dt, device="cuda")
    v_pool = torch.randn(nb, page, hkv, d, dtype=dt, device="cuda")
    table = torch.randperm(nb, device="cuda", dtype=torch.int32).view(B, pages)
    kd = k_pool[table.long()].reshape(B, pages * page, hkv, d)[:, :L].transpose(1, 2).contiguous()
    vd = v_pool[table.long()].reshape(B, pages * page, hkv, d)[:, :L].transpose(1, 2).contiguous()
    return k_pool, v_pool, table, pages, kd, vd
