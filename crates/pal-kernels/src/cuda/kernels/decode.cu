// Split-KV paged decode. One block = one work item (chunk of one sequence, one KV head); it
// computes all PAL_GROUP query heads of that KV head, so each K/V byte is read once per group.
//
// Lanes: a "token group" of LPT = next_pow2(HEAD_DIM / 8) lanes reads one token's K (and V) row
// with 16-byte loads (8 elements per lane); a warp holds 32 / LPT token groups; the block's warps
// stride over the chunk. Each token group keeps its own online-softmax state, merged through
// shared memory at the end; the block writes a partial (o, lse) per query head, and
// `pal_merge` combines the chunks of a sequence.

#define HD PAL_HEAD_DIM
#define G PAL_GROUP  // query heads per block: the GQA group, or a divisor of it when the group exceeds 8
#define WARPS 4
#define LPT_RAW (HD / 8)
#define LPT (LPT_RAW <= 1 ? 1 : LPT_RAW <= 2 ? 2 : LPT_RAW <= 4 ? 4 : LPT_RAW <= 8 ? 8 : LPT_RAW <= 16 ? 16 : 32)
#define GROUPS_PER_WARP (32 / LPT)
#define GROUPS (WARPS * GROUPS_PER_WARP)
#define UNROLL 4

extern "C" __global__ void __launch_bounds__(WARPS * 32)
pal_decode(const PAL_T* __restrict__ q,            // [B, Hq, HD]
           const PAL_KV* __restrict__ k_cache,     // [blocks, page, Hkv, HD]
           const PAL_KV* __restrict__ v_cache,
           const int* __restrict__ indptr,         // [B+1]
           const int* __restrict__ indices,        // [nnz pages]
           const int* __restrict__ chunk_seq,      // [chunks]
           const int* __restrict__ chunk_start,    // [chunks]
           const int* __restrict__ chunk_end,      // [chunks]
           float* __restrict__ part_o,             // [chunks, Hq, HD]
           float* __restrict__ part_lse,           // [chunks, Hq]
           int num_kv_heads, int group, int page_size, AttnOpts opts) {
    const int chunk = blockIdx.x;
    const int h = blockIdx.y;
    const int hq = num_kv_heads * group;
    const int head0 = h * group + blockIdx.z * G;  // first query head of this block
    const int b = chunk_seq[chunk];
    const int start = chunk_start[chunk], end = chunk_end[chunk];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane / LPT, li = lane % LPT;
    const int grp = warp * GROUPS_PER_WARP + sub;
    const bool active = li * 8 < HD;
    const int d0 = li * 8;
    const int* pages = indices + indptr[b];
    const long token_stride = (long)num_kv_heads * HD;

    // q for the G heads, this lane's 8 dims, pre-scaled.
    float qv[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        if (active) {
            const PAL_T* qp = q + ((long)b * hq + head0 + g) * HD + d0;
#pragma unroll
            for (int i = 0; i < 8; ++i) qv[g][i] = to_f32(qp[i]) * opts.scale;
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) qv[g][i] = 0.f;
        }
    }
    float m[G], l[G], acc[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = PAL_NEG_INF; l[g] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
    }

    for (int base = start + grp; base < end; base += GROUPS * UNROLL) {
        // Issue the loads of UNROLL tokens before using any of them.
        float kx[UNROLL][8], vx[UNROLL][8];
        bool ok[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int j = base + u * GROUPS;
            ok[u] = j < end;
            if (ok[u] && active) {
                const long slot = (long)pages[j / page_size] * page_size + j % page_size;
                const long off = slot * token_stride + (long)h * HD + d0;
                load8(k_cache + off, kx[u]);
                load8(v_cache + off, vx[u]);
            } else {
#pragma unroll
                for (int i = 0; i < 8; ++i) { kx[u][i] = 0.f; vx[u][i] = 0.f; }
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            if (!ok[u]) continue;
#pragma unroll
            for (int g = 0; g < G; ++g) {
                float s = 0.f;
#pragma unroll
                for (int i = 0; i < 8; ++i) s += qv[g][i] * kx[u][i];
#pragma unroll
                for (int o = LPT / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o, LPT);
                s = apply_cap(s, opts.soft_cap);
                const float m_new = fmaxf(m[g], s);
                const float alpha = __expf(m[g] - m_new);
                const float p = __expf(s - m_new);
                l[g] = l[g] * alpha + p;
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[g][i] = acc[g][i] * alpha + p * vx[u][i];
                m[g] = m_new;
            }
        }
    }

    // Merge the GROUPS token groups of the block through shared memory.
    __shared__ float sm_m[GROUPS][G], sm_l[GROUPS][G];
    __shared__ float sm_o[GROUPS][G][HD];
    if (li == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) { sm_m[grp][g] = m[g]; sm_l[grp][g] = l[g]; }
    }
    if (active) {
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int i = 0; i < 8; ++i) sm_o[grp][g][d0 + i] = acc[g][i];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < G * HD; e += WARPS * 32) {
        const int g = e / HD, d = e % HD;
        float mm = PAL_NEG_INF;
        for (int r = 0; r < GROUPS; ++r) mm = fmaxf(mm, sm_m[r][g]);
        float ll = 0.f, oo = 0.f;
        if (mm != PAL_NEG_INF) {
            for (int r = 0; r < GROUPS; ++r) {
                const float w = __expf(sm_m[r][g] - mm);
                ll += sm_l[r][g] * w;
                oo += sm_o[r][g][d] * w;
            }
        }
        const long row = (long)chunk * hq + head0 + g;
        part_o[row * HD + d] = ll > 0.f ? oo / ll : 0.f;
        if (d == 0) part_lse[row] = ll > 0.f ? mm + logf(ll) : PAL_NEG_INF;
    }
}

// Merge the chunks of each sequence: one block per (sequence, query head), HD threads.
extern "C" __global__ void pal_merge(const float* __restrict__ part_o, const float* __restrict__ part_lse,
                                     const int* __restrict__ seq_chunk_indptr, PAL_T* __restrict__ out, int hq) {
    const int b = blockIdx.x, hh = blockIdx.y;
    const int c0 = seq_chunk_indptr[b], c1 = seq_chunk_indptr[b + 1];
    float mm = PAL_NEG_INF;
    for (int c = c0; c < c1; ++c) mm = fmaxf(mm, part_lse[(long)c * hq + hh]);
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float ww = 0.f, oo = 0.f;
        if (mm != PAL_NEG_INF) {
            for (int c = c0; c < c1; ++c) {
                const float w = __expf(part_lse[(long)c * hq + hh] - mm);
                ww += w;
                oo += w * part_o[((long)c * hq + hh) * HD + d];
            }
        }
        out[((long)b * hq + hh) * HD + d] = from_f32<PAL_T>(ww > 0.f ? oo / ww : 0.f);
    }
}
