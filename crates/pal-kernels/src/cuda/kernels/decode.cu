// Split-KV paged decode. One block = one work item (chunk of one sequence, one KV head); it
// computes all PAL_GROUP query heads of that KV head, so each K/V byte is read once per group.
//
// Lanes: a "token group" of LPT = next_pow2(HEAD_DIM / 8) lanes reads one token's K (and V) row
// with 16-byte loads (8 elements per lane); a warp holds 32 / LPT token groups; the block's warps
// stride over the chunk. Each token group keeps its own online-softmax state, merged through
// shared memory at the end; the block writes a partial (o, lse) per query head, and the row's
// last block (split.cuh) or `pal_merge` combines the chunks of a sequence.

#define HD PAL_HEAD_DIM
#define G PAL_GROUP  // query heads per block: the GQA group, or a divisor of it when the group exceeds 8
#define WARPS 4
static_assert(WARPS * 32 == SPLIT_THREADS, "split.cuh merges with the decode block's threads");
// Dims per lane (PAL_DEC_VEC, chosen by the host: tuning.rs decode_lane_dims): 16 for wide heads
// with few query heads per block, else 8. The fallback below is only for standalone compiles.
#if defined(PAL_DEC_VEC) && PAL_DEC_VEC > 0
#define VEC PAL_DEC_VEC
#else
#define VEC ((HD % 16 == 0 && HD >= 128) ? 16 : 8)
#endif
#define P8 (VEC / 8)
#define LPT_RAW (HD / VEC)
#define LPT (LPT_RAW <= 1 ? 1 : LPT_RAW <= 2 ? 2 : LPT_RAW <= 4 ? 4 : LPT_RAW <= 8 ? 8 : LPT_RAW <= 16 ? 16 : 32)
#define GROUPS_PER_WARP (32 / LPT)
#define GROUPS (WARPS * GROUPS_PER_WARP)
#ifndef PAL_UNROLL
#define PAL_UNROLL 4
#endif
#define UNROLL PAL_UNROLL  // tokens per token group whose loads are in flight together

// The end of a work item, shared by `pal_decode` and `pal_decode_pipe`. First the token groups of
// a warp merge their online-softmax states by shuffles (lanes LPT apart hold the same dims), so
// that every token group then holds the warp's state.
__device__ __forceinline__ void merge_token_groups(float (&m)[G], float (&l)[G], float (&acc)[G][VEC]) {
#pragma unroll
    for (int o = LPT; o < 32; o <<= 1) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[g], o);
            const float lo = __shfl_xor_sync(0xffffffffu, l[g], o);
            const float mn = fmaxf(m[g], mo);
            const float a = m[g] == PAL_NEG_INF ? 0.f : __expf(m[g] - mn);
            const float c = mo == PAL_NEG_INF ? 0.f : __expf(mo - mn);
            l[g] = l[g] * a + lo * c;
            m[g] = mn;
#pragma unroll
            for (int i = 0; i < VEC; ++i) {
                const float ao = __shfl_xor_sync(0xffffffffu, acc[g][i], o);
                acc[g][i] = acc[g][i] * a + ao * c;
            }
        }
    }
}

// Then the warps' states, staged in shared memory as sm_m, sm_l [WARPS][G] and sm_o
// [WARPS][G][HD], combine, and the block writes its output rows (PAL_FINISH_OUT) or the chunk's
// partial (o, natural-log lse) for the merge (split.cuh, or `pal_merge`).
__device__ __forceinline__ void write_block_state(const float* sm_m, const float* sm_l, const float* sm_o,
                                                  PAL_T* __restrict__ out, float* __restrict__ part_o,
                                                  float* __restrict__ part_lse, int finish, int qrow, int chunk,
                                                  int hq, int head0) {
    for (int e = threadIdx.x; e < G * HD; e += WARPS * 32) {
        const int g = e / HD, d = e % HD;
        float mm = PAL_NEG_INF;
        for (int r = 0; r < WARPS; ++r) mm = fmaxf(mm, sm_m[r * G + g]);
        float ll = 0.f, oo = 0.f;
        if (mm != PAL_NEG_INF) {
            for (int r = 0; r < WARPS; ++r) {
                const float w = __expf(sm_m[r * G + g] - mm);
                ll += sm_l[r * G + g] * w;
                oo += sm_o[(r * G + g) * HD + d] * w;
            }
        }
        if (finish == PAL_FINISH_OUT) {
            out[((long)qrow * hq + head0 + g) * HD + d] = from_f32<PAL_T>(ll > 0.f ? oo / ll : 0.f);
        } else {
            const long row = (long)chunk * hq + head0 + g;
            part_o[row * HD + d] = ll > 0.f ? oo / ll : 0.f;
            if (d == 0) part_lse[row] = ll > 0.f ? mm + logf(ll) : PAL_NEG_INF;
        }
    }
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
pal_decode(const PAL_T* __restrict__ q,            // [B, Hq, HD]
           const PAL_KV* __restrict__ k_cache,     // [blocks, page, Hkv, HD]
           const PAL_KV* __restrict__ v_cache,
           const int* __restrict__ indptr,         // [B+1]
           const int* __restrict__ indices,        // [nnz pages]
           const int* __restrict__ chunk_seq,      // [chunks] page-table row of the chunk
           const int* __restrict__ chunk_row,      // [chunks] query row (decode: = sequence; prefill: token)
           const int* __restrict__ chunk_start,    // [chunks]
           const int* __restrict__ chunk_end,      // [chunks]
           float* __restrict__ part_o,             // [chunks, Hq, HD]
           float* __restrict__ part_lse,           // [chunks, Hq]
           PAL_T* __restrict__ out,                // [B, Hq, HD]
           const int* __restrict__ row_chunk_indptr,  // [rows+1] chunks of each query row
           int* __restrict__ merge_count,          // [rows, Hkv, Hq / (Hkv * G)] zeros (split.cuh)
           int finish,                             // PAL_FINISH_* (split.cuh)
           int num_kv_heads, int group, int page_size, AttnOpts opts) {
    const int chunk = blockIdx.x;
    const int h = blockIdx.y;
    const int hq = num_kv_heads * group;
    const int head0 = h * group + blockIdx.z * G;  // first query head of this block
    const int b = chunk_seq[chunk];
    const int qrow = chunk_row[chunk];
    const int start = chunk_start[chunk], end = chunk_end[chunk];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane / LPT, li = lane % LPT;
    const int grp = warp * GROUPS_PER_WARP + sub;
    const bool active = li * VEC < HD;
    const int d0 = li * VEC;
    const int* pages = indices + indptr[b];
    const long token_stride = (long)num_kv_heads * HD;
    // Power-of-two pages (the common case) avoid a division per token.
    const int page_shift = (page_size & (page_size - 1)) == 0 ? __ffs(page_size) - 1 : -1;

    // q for the G heads, this lane's VEC dims, pre-scaled.
    float qv[G][VEC];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const PAL_T* qp = q + ((long)qrow * hq + head0 + g) * HD + d0;
#pragma unroll
        for (int i = 0; i < VEC; ++i) qv[g][i] = active ? to_f32(qp[i]) * opts.scale : 0.f;
    }
    float m[G], l[G], acc[G][VEC];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = PAL_NEG_INF; l[g] = 0.f;
#pragma unroll
        for (int i = 0; i < VEC; ++i) acc[g][i] = 0.f;
    }

    // The loop bound is uniform across the block so that whole warps reach every shuffle.
    for (int base0 = start; base0 < end; base0 += GROUPS * UNROLL) {
        // Issue the loads of UNROLL tokens (kept packed) before using any of them.
        Pack8<PAL_KV> kx[UNROLL][P8], vx[UNROLL][P8];
        bool ok[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int j = base0 + grp + u * GROUPS;
            ok[u] = j < end;
            if (ok[u] && active) {
                const int pg = page_shift >= 0 ? (j >> page_shift) : j / page_size;
                const int po = page_shift >= 0 ? (j & (page_size - 1)) : j - pg * page_size;
                const long slot = (long)pages[pg] * page_size + po;
                const long off = slot * token_stride + (long)h * HD + d0;
#pragma unroll
                for (int c = 0; c < P8; ++c) {
                    kx[u][c].load(k_cache + off + 8 * c);
                    vx[u][c].load(v_cache + off + 8 * c);
                }
            } else {
#pragma unroll
                for (int c = 0; c < P8; ++c) { kx[u][c].zero(); vx[u][c].zero(); }
            }
        }
        // Scores of the UNROLL tokens for every head, reduced across the token group's lanes.
        float s[G][UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            float kf[VEC];
#pragma unroll
            for (int c = 0; c < P8; ++c) kx[u][c].widen(kf + 8 * c);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                float t = 0.f;
#pragma unroll
                for (int i = 0; i < VEC; ++i) t = fmaf(qv[g][i], kf[i], t);
                s[g][u] = t;
            }
        }
#pragma unroll
        for (int o = LPT / 2; o > 0; o >>= 1)
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int u = 0; u < UNROLL; ++u) s[g][u] += __shfl_xor_sync(0xffffffffu, s[g][u], o, LPT);
        // One online-softmax step per head for the whole tile of UNROLL tokens.
        float p[G][UNROLL];
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float mt = m[g];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                s[g][u] = ok[u] ? apply_cap(s[g][u], opts.soft_cap) : PAL_NEG_INF;
                mt = fmaxf(mt, s[g][u]);
            }
            const float alpha = mt == PAL_NEG_INF ? 1.f : __expf(m[g] - mt);
            float sum = 0.f;
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                p[g][u] = ok[u] ? __expf(s[g][u] - mt) : 0.f;
                sum += p[g][u];
            }
            l[g] = l[g] * alpha + sum;
            m[g] = mt;
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[g][i] *= alpha;
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            float vf[VEC];
#pragma unroll
            for (int c = 0; c < P8; ++c) vx[u][c].widen(vf + 8 * c);
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int i = 0; i < VEC; ++i) acc[g][i] = fmaf(p[g][u], vf[i], acc[g][i]);
        }
    }

    // Merge the token groups of each warp with shuffles (lanes with the same dims), then the warps
    // of the block through shared memory.
    merge_token_groups(m, l, acc);
    __shared__ float sm_m[WARPS][G], sm_l[WARPS][G];
    __shared__ float sm_o[WARPS][G][HD];
    if (sub == 0) {
        if (li == 0) {
#pragma unroll
            for (int g = 0; g < G; ++g) { sm_m[warp][g] = m[g]; sm_l[warp][g] = l[g]; }
        }
        if (active) {
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int i = 0; i < VEC; ++i) sm_o[warp][g][d0 + i] = acc[g][i];
        }
    }
    __syncthreads();
    write_block_state(&sm_m[0][0], &sm_l[0][0], &sm_o[0][0][0], out, part_o, part_lse, finish, qrow, chunk, hq,
                      head0);
    if (finish == PAL_FINISH_MERGE)
        merge_if_last<G, HD>(part_o, part_lse, row_chunk_indptr, merge_count, out, qrow, hq, head0,
                             &sm_o[0][0][0]);
}

// The same work item through a cp.async pipeline: K/V tiles of TILE tokens stream into shared
// memory STAGES - 1 tiles ahead of the tile being computed, so the loads of a block never wait for
// its arithmetic (the register-staged `pal_decode` issues UNROLL tokens, then stalls on them).
// Lane dims are interleaved (part c of lane li holds dims c * LPT * 8 + li * 8 .. + 8) so that the
// 8 lanes of a quarter warp read 128 contiguous bytes of a shared-memory row: no bank conflicts.
// The shared memory of the stages is reused by the final in-block merge.
#ifndef PAL_DEC_TILE
#define PAL_DEC_TILE GROUPS
#endif
#ifndef PAL_DEC_STAGES
#define PAL_DEC_STAGES 4
#endif
#define TILE PAL_DEC_TILE                                    // tokens per stage
#define STAGES PAL_DEC_STAGES
#define TU (TILE / GROUPS)                                   // tokens per token group per stage
#define ROW_WORDS (HD * (int)sizeof(PAL_KV) / 16)            // 16-byte words per K (or V) row
#define TILE_WORDS (TILE * ROW_WORDS)
#define CPT ((TILE_WORDS + WARPS * 32 - 1) / (WARPS * 32))   // words per thread per stage, K and V each
static_assert(TILE % GROUPS == 0, "PAL_DEC_TILE must be a multiple of the token groups per block");
static_assert(STAGES >= 2, "PAL_DEC_STAGES must be at least 2");

extern "C" __global__ void __launch_bounds__(WARPS * 32)
pal_decode_pipe(const PAL_T* __restrict__ q, const PAL_KV* __restrict__ k_cache,
                const PAL_KV* __restrict__ v_cache, const int* __restrict__ indptr,
                const int* __restrict__ indices, const int* __restrict__ chunk_seq,
                const int* __restrict__ chunk_row, const int* __restrict__ chunk_start,
                const int* __restrict__ chunk_end, float* __restrict__ part_o, float* __restrict__ part_lse,
                PAL_T* __restrict__ out, const int* __restrict__ row_chunk_indptr,
                int* __restrict__ merge_count, int finish, int num_kv_heads, int group, int page_size,
                AttnOpts opts) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    PAL_KV* sk = reinterpret_cast<PAL_KV*>(smem_raw);  // [STAGES][TILE][HD]
    PAL_KV* sv = sk + STAGES * TILE * HD;
    const int chunk = blockIdx.x;
    const int h = blockIdx.y;
    const int hq = num_kv_heads * group;
    const int head0 = h * group + blockIdx.z * G;
    const int b = chunk_seq[chunk];
    const int qrow = chunk_row[chunk];
    const int start = chunk_start[chunk], end = chunk_end[chunk];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane / LPT, li = lane % LPT;
    const int grp = warp * GROUPS_PER_WARP + sub;
    const int* pages = indices + indptr[b];
    const long token_stride = (long)num_kv_heads * HD;
    const int page_shift = (page_size & (page_size - 1)) == 0 ? __ffs(page_size) - 1 : -1;

    // The words this thread copies each stage: word w = tid + i * threads is row w / ROW_WORDS,
    // element column (w % ROW_WORDS) * 16 / sizeof(PAL_KV).
    constexpr int ELEMS_PER_WORD = 16 / (int)sizeof(PAL_KV);
    int crow[CPT], ccol[CPT], cpage[CPT];
#pragma unroll
    for (int i = 0; i < CPT; ++i) {
        const int w = threadIdx.x + i * WARPS * 32;
        crow[i] = w < TILE_WORDS ? w / ROW_WORDS : TILE;  // TILE: no word (past the tile)
        ccol[i] = (w % ROW_WORDS) * ELEMS_PER_WORD;
        cpage[i] = 0;
    }
    // Page ids of the tile starting at `base`, read one stage before they are used so that the
    // copies never wait on the page-table load.
    auto load_pages = [&](int base) {
#pragma unroll
        for (int i = 0; i < CPT; ++i) {
            const int j = base + crow[i];
            if (crow[i] < TILE && j < end) cpage[i] = pages[page_shift >= 0 ? (j >> page_shift) : j / page_size];
        }
    };
    auto issue = [&](int base, int stage) {
#pragma unroll
        for (int i = 0; i < CPT; ++i) {
            if (crow[i] >= TILE) continue;
            const int j = base + crow[i];
            const bool valid = j < end;
            const int po = page_shift >= 0 ? (j & (page_size - 1)) : j - (j / page_size) * page_size;
            const long off = ((long)cpage[i] * page_size + po) * token_stride + (long)h * HD + ccol[i];
            const int dst = (stage * TILE + crow[i]) * HD + ccol[i];
            cp_async16(sk + dst, valid ? k_cache + off : k_cache, valid);
            cp_async16(sv + dst, valid ? v_cache + off : v_cache, valid);
        }
    };

    const int ntiles = (end - start + TILE - 1) / TILE;
    load_pages(start);
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ntiles) {
            issue(start + s * TILE, s);
            load_pages(start + (s + 1) * TILE);
        }
        cp_async_commit();
    }

    // q for the G heads, this lane's dims, pre-scaled (part c at qv[g][8c .. 8c + 8]).
    float qv[G][VEC];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const PAL_T* qp = q + ((long)qrow * hq + head0 + g) * HD;
#pragma unroll
        for (int c = 0; c < P8; ++c) {
            const int d = c * LPT * 8 + li * 8;
#pragma unroll
            for (int i = 0; i < 8; ++i) qv[g][8 * c + i] = d < HD ? to_f32(qp[d + i]) * opts.scale : 0.f;
        }
    }
    float m[G], l[G], acc[G][VEC];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = PAL_NEG_INF; l[g] = 0.f;
#pragma unroll
        for (int i = 0; i < VEC; ++i) acc[g][i] = 0.f;
    }

    for (int t = 0; t < ntiles; ++t) {
        cp_async_wait<STAGES - 2>();  // tile t has landed (for this thread's copies) ...
        __syncthreads();              // ... for every thread's, and tile t - 1's buffer is free
        const int next = t + STAGES - 1;
        if (next < ntiles) {
            issue(start + next * TILE, next % STAGES);
            load_pages(start + (next + 1) * TILE);
        }
        cp_async_commit();
        const int stage = t % STAGES;
        const int base = start + t * TILE;

        Pack8<PAL_KV> kx[TU][P8], vx[TU][P8];
        bool ok[TU];
#pragma unroll
        for (int u = 0; u < TU; ++u) {
            const int row = grp + u * GROUPS;
            ok[u] = base + row < end;
            const int r = (stage * TILE + row) * HD;
#pragma unroll
            for (int c = 0; c < P8; ++c) {
                const int d = c * LPT * 8 + li * 8;
                if (d < HD) {
                    kx[u][c].load_shared(sk + r + d);
                    vx[u][c].load_shared(sv + r + d);
                } else {
                    kx[u][c].zero();
                    vx[u][c].zero();
                }
            }
        }
        float s[G][TU];
#pragma unroll
        for (int u = 0; u < TU; ++u) {
            float kf[VEC];
#pragma unroll
            for (int c = 0; c < P8; ++c) kx[u][c].widen(kf + 8 * c);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                float a = 0.f;
#pragma unroll
                for (int i = 0; i < VEC; ++i) a = fmaf(qv[g][i], kf[i], a);
                s[g][u] = a;
            }
        }
#pragma unroll
        for (int o = LPT / 2; o > 0; o >>= 1)
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int u = 0; u < TU; ++u) s[g][u] += __shfl_xor_sync(0xffffffffu, s[g][u], o, LPT);
        float p[G][TU];
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float mt = m[g];
#pragma unroll
            for (int u = 0; u < TU; ++u) {
                s[g][u] = ok[u] ? apply_cap(s[g][u], opts.soft_cap) : PAL_NEG_INF;
                mt = fmaxf(mt, s[g][u]);
            }
            // Rescale only when the running max moved (rare after the first tokens): saves
            // G * VEC multiplies per tile, as many as the P V product itself.
            if (mt != m[g]) {
                const float alpha = __expf(m[g] - mt);  // 0 when m was -inf
                l[g] *= alpha;
#pragma unroll
                for (int i = 0; i < VEC; ++i) acc[g][i] *= alpha;
                m[g] = mt;
            }
#pragma unroll
            for (int u = 0; u < TU; ++u) {
                p[g][u] = ok[u] ? __expf(s[g][u] - mt) : 0.f;
                l[g] += p[g][u];
            }
        }
#pragma unroll
        for (int u = 0; u < TU; ++u) {
            float vf[VEC];
#pragma unroll
            for (int c = 0; c < P8; ++c) vx[u][c].widen(vf + 8 * c);
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int i = 0; i < VEC; ++i) acc[g][i] = fmaf(p[g][u], vf[i], acc[g][i]);
        }
    }

    // Token groups of a warp merge by shuffles, warps through the (now idle) stage memory.
    merge_token_groups(m, l, acc);
    cp_async_wait_all();
    __syncthreads();
    float* sm_m = reinterpret_cast<float*>(smem_raw);  // [WARPS][G]
    float* sm_l = sm_m + WARPS * G;                    // [WARPS][G]
    float* sm_o = sm_l + WARPS * G;                    // [WARPS][G][HD]
    if (sub == 0) {
        if (li == 0) {
#pragma unroll
            for (int g = 0; g < G; ++g) { sm_m[warp * G + g] = m[g]; sm_l[warp * G + g] = l[g]; }
        }
#pragma unroll
        for (int c = 0; c < P8; ++c) {
            const int d = c * LPT * 8 + li * 8;
            if (d < HD) {
#pragma unroll
                for (int g = 0; g < G; ++g)
#pragma unroll
                    for (int i = 0; i < 8; ++i) sm_o[(warp * G + g) * HD + d + i] = acc[g][8 * c + i];
            }
        }
    }
    __syncthreads();
    write_block_state(sm_m, sm_l, sm_o, out, part_o, part_lse, finish, qrow, chunk, hq, head0);
    if (finish == PAL_FINISH_MERGE)
        merge_if_last<G, HD>(part_o, part_lse, row_chunk_indptr, merge_count, out, qrow, hq, head0, sm_o);
}

// Merge the chunks of each query row (decode: sequence; prefill: token): one block per (row, head). Chunk weights are
// computed in parallel into shared memory (in slices of MERGE_SLICE chunks), then every thread
// sums its dims over the chunks with independent loads.
#define MERGE_THREADS 128
#define MERGE_SLICE 256
extern "C" __global__ void __launch_bounds__(MERGE_THREADS)
pal_merge(const float* __restrict__ part_o, const float* __restrict__ part_lse,
          const int* __restrict__ seq_chunk_indptr, PAL_T* __restrict__ out, int hq) {
    const int b = blockIdx.x, hh = blockIdx.y;
    const int c0 = seq_chunk_indptr[b], c1 = seq_chunk_indptr[b + 1];
    __shared__ float red[MERGE_THREADS / 32];
    __shared__ float w[MERGE_SLICE];
    // Block-wide max of the chunks' log-sum-exp.
    float mm = PAL_NEG_INF;
    for (int c = c0 + threadIdx.x; c < c1; c += MERGE_THREADS) mm = fmaxf(mm, part_lse[(long)c * hq + hh]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mm = fmaxf(mm, __shfl_xor_sync(0xffffffffu, mm, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mm;
    __syncthreads();
    mm = red[0];
#pragma unroll
    for (int i = 1; i < MERGE_THREADS / 32; ++i) mm = fmaxf(mm, red[i]);
    float acc[(HD + MERGE_THREADS - 1) / MERGE_THREADS];
#pragma unroll
    for (int k = 0; k < (HD + MERGE_THREADS - 1) / MERGE_THREADS; ++k) acc[k] = 0.f;
    float total = 0.f;
    for (int s0 = c0; s0 < c1; s0 += MERGE_SLICE) {
        const int n = min(MERGE_SLICE, c1 - s0);
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += MERGE_THREADS) {
            const float l = part_lse[(long)(s0 + i) * hq + hh];
            w[i] = (mm == PAL_NEG_INF || l == PAL_NEG_INF) ? 0.f : __expf(l - mm);
        }
        __syncthreads();
        for (int i = 0; i < n; ++i) total += w[i];
#pragma unroll
        for (int k = 0; k < (HD + MERGE_THREADS - 1) / MERGE_THREADS; ++k) {
            const int d = threadIdx.x + k * MERGE_THREADS;
            if (d < HD) {
                float a = 0.f;
#pragma unroll 8
                for (int i = 0; i < n; ++i) a = fmaf(w[i], part_o[((long)(s0 + i) * hq + hh) * HD + d], a);
                acc[k] += a;
            }
        }
    }
#pragma unroll
    for (int k = 0; k < (HD + MERGE_THREADS - 1) / MERGE_THREADS; ++k) {
        const int d = threadIdx.x + k * MERGE_THREADS;
        if (d < HD) out[((long)b * hq + hh) * HD + d] = from_f32<PAL_T>(total > 0.f ? acc[k] / total : 0.f);
    }
}

// Gather-then-dense baseline, step 1: copy the pages of each sequence into a contiguous buffer
// laid out as a pool whose block b holds sequence b (block size `max_len`). Grid (batch, pages).
extern "C" __global__ void pal_gather(const PAL_KV* __restrict__ k_cache, const PAL_KV* __restrict__ v_cache,
                                      const int* __restrict__ indptr, const int* __restrict__ indices,
                                      const int* __restrict__ seq_lens, PAL_KV* __restrict__ k_dst,
                                      PAL_KV* __restrict__ v_dst, int page_size, int max_len, int token_elems) {
    const int b = blockIdx.x, p = blockIdx.y;
    const int npages = indptr[b + 1] - indptr[b];
    if (p >= npages) return;
    const int first = p * page_size;
    const int n = min(page_size, seq_lens[b] - first);
    const long src = (long)indices[indptr[b] + p] * page_size * token_elems;
    const long dst = ((long)b * max_len + first) * token_elems;
    const long count = (long)n * token_elems * sizeof(PAL_KV) / 16;  // 16-byte words
    const uint4* ks = reinterpret_cast<const uint4*>(k_cache + src);
    const uint4* vs = reinterpret_cast<const uint4*>(v_cache + src);
    uint4* kd = reinterpret_cast<uint4*>(k_dst + dst);
    uint4* vd = reinterpret_cast<uint4*>(v_dst + dst);
    for (long i = threadIdx.x; i < count; i += blockDim.x) {
        kd[i] = ks[i];
        vd[i] = vs[i];
    }
}

// Read-bandwidth probe (the decode ceiling): every thread streams 16-byte words, XOR-folds them
// and writes one word per block so the loads cannot be removed.
extern "C" __global__ void pal_read_probe(const uint4* __restrict__ src, long words, unsigned int* __restrict__ sink) {
    unsigned int acc = 0;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += (long)gridDim.x * blockDim.x) {
        const uint4 w = src[i];
        acc ^= w.x ^ w.y ^ w.z ^ w.w;
    }
    if (acc == 0x12345678u) sink[blockIdx.x] = acc;
}
