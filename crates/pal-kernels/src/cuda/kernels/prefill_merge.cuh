// The split-KV merge of the prefill kernels (mma.sync and wgmma): both write partial states in
// the same layout, [num_splits, tokens, Hq, HD] outputs and base-2 log-sum-exps.
#pragma once

// Combine the split-KV partial states of every (token, query head): one block per pair.
extern "C" __global__ void __launch_bounds__(128)
pal_prefill_merge(const float* __restrict__ part_o, const float* __restrict__ part_lse, PAL_KV* __restrict__ out,
                  int num_splits, long rows) {
    const long row = (long)blockIdx.x * 4 + (threadIdx.x >> 5);  // a warp per (token, head) row
    if (row >= rows) return;
    const int lane = threadIdx.x & 31;
    float mx = PAL_NEG_INF;
    for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, part_lse[s * rows + row]);
    float acc[(HD + 31) / 32], total = 0.f;
#pragma unroll
    for (int k = 0; k < (HD + 31) / 32; ++k) acc[k] = 0.f;
    for (int s = 0; s < num_splits; ++s) {
        const float lse = part_lse[s * rows + row];
        const float w = (mx == PAL_NEG_INF || lse == PAL_NEG_INF) ? 0.f : exp2f(lse - mx);
        total += w;
#pragma unroll
        for (int k = 0; k < (HD + 31) / 32; ++k) {
            const int d = lane + 32 * k;
            if (d < HD) acc[k] = fmaf(w, part_o[(s * rows + row) * HD + d], acc[k]);
        }
    }
    const float inv = total > 0.f ? 1.f / total : 0.f;
#pragma unroll
    for (int k = 0; k < (HD + 31) / 32; ++k) {
        const int d = lane + 32 * k;
        if (d < HD) out[row * HD + d] = from_f32<PAL_KV>(acc[k] * inv);
    }
}
