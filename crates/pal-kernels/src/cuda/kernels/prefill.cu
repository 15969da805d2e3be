// Paged prefill (append attention with history) on tensor cores, FlashAttention-2 style.
//
// Work item = one tile of BM "packed rows" of one sequence, for one KV head. GQA is folded into
// the rows: packed row r of a sequence is (new token r / group, query head r % group of this KV
// head), so the block reads each K/V tile once for the whole group. Four warps own WM x 16 rows
// each: with two 16-row m-tiles per warp every K/V fragment read from shared memory feeds two
// mma instructions, which halves the shared-memory traffic per FLOP (one m-tile left the kernel
// bound by shared-memory bandwidth at ~25% of the tensor-core peak).
//
// Per KV tile of BN tokens: K and V rows are copied from their pages into shared memory with
// cp.async (double buffered: tile i+1 is in flight while tile i is computed); S = Q K^T and
// O += P V run on mma.sync m16n8k16 (f16 or bf16 inputs, f32 accumulation); softmax is online,
// in base 2, with the row state kept per thread (each row lives in one lane quad).
//
// Requires PAL_T == PAL_KV (f16 or bf16) and HD % 16 == 0, HD <= 256 (the host dispatches other
// shapes to the row-by-row path). Causal masking, the sliding window and the soft-cap follow the
// CPU reference: query at position p sees keys [first_visible(p), p] (causal) or
// [first_visible(p), total) (not causal); the cap applies to scaled scores.

#define HD PAL_HEAD_DIM
#define WARPS PAL_PREFILL_WARPS         // 4 (or 8: tuning)
#define WM (HD <= 128 ? 2 : 1)          // 16-row m-tiles per warp (wide heads: register budget)
#define BM (WARPS * 16 * WM)            // packed rows per block
#define BN PAL_PREFILL_BN               // KV tokens per tile: 64 up to HD 64, else 32 (register budget)
#define KSTEPS (HD / 16)                // k-steps of Q K^T
#define NT (BN / 8)                     // 8-column blocks of S
#define DT (HD / 8)                     // 8-column blocks of O
#define CHUNKS (HD / 8)                 // 16-byte chunks per row
#define LOADS ((BN * CHUNKS + WARPS * 32 - 1) / (WARPS * 32))  // K (and V) chunks per thread per tile
#define LOG2E 1.4426950408889634f

typedef PAL_KV kv_t;

// Row pitch STRIDE and chunk offsets so(r, ch): the shared-memory layout in mma.cuh.

extern "C" __global__ void __launch_bounds__(WARPS * 32)
pal_prefill_tc(const kv_t* __restrict__ q,          // [tokens, Hq, HD]
               const kv_t* __restrict__ k_cache,    // [blocks, page, Hkv, HD]
               const kv_t* __restrict__ v_cache,
               const int* __restrict__ indptr,      // [B+1] page-table rows
               const int* __restrict__ indices,     // [nnz pages]
               const int* __restrict__ tiles,       // [tiles, 5]: seq, q_start, n_new, total, row0
               kv_t* __restrict__ out,              // [tokens, Hq, HD], written when num_splits == 1
               float* __restrict__ part_o,          // [num_splits, tokens, Hq, HD] otherwise
               float* __restrict__ part_lse,        // [num_splits, tokens, Hq] (base 2)
               int num_splits, int num_tokens, int num_kv_heads, int group, int page_size, AttnOpts opts) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    kv_t* sq = reinterpret_cast<kv_t*>(smem_raw);  // [BM][STRIDE]
    kv_t* sk = sq + BM * STRIDE;                    // [2][BN][STRIDE]
    kv_t* sv = sk + 2 * BN * STRIDE;                // [2][BN][STRIDE]

    const int* ti = tiles + 5 * blockIdx.x;
    const int seq = ti[0], q_start = ti[1], n_new = ti[2], total = ti[3], row0 = ti[4];
    const int h = blockIdx.y;
    const int hist = total - n_new;
    const int hq = num_kv_heads * group;
    const int rows = n_new * group;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int* pages = indices + indptr[seq];
    const long token_stride = (long)num_kv_heads * HD;
    const int page_shift = (page_size & (page_size - 1)) == 0 ? __ffs(page_size) - 1 : -1;

    // Q tile -> shared memory (rows past the sequence's new tokens are zeros).
    for (int c = tid; c < BM * CHUNKS; c += WARPS * 32) {
        const int r = c / CHUNKS, ch = c % CHUNKS;
        const int pr = row0 + r;
        const bool valid = pr < rows;
        const int t = valid ? pr / group : 0, gi = valid ? pr - (pr / group) * group : 0;
        const kv_t* src = q + ((long)(q_start + t) * hq + h * group + gi) * HD + ch * 8;
        cp_async16(sq + so(r, ch), valid ? src : q, valid);
    }

    // Key range of the block, and the part of it every row sees (tiles there need no mask).
    const int last_row = min(row0 + BM, rows) - 1;
    const int t_first = row0 / group, t_last = last_row / group;
    auto first_visible = [&](int pos) { return opts.window_left >= 0 ? max(0, pos - opts.window_left) : 0; };
    const int lo_block = first_visible(hist + t_first);
    const int hi_block = opts.causal ? hist + t_last + 1 : total;
    const int lo_all = first_visible(hist + t_last);
    const int hi_all = opts.causal ? hist + t_first + 1 : total;
    const int all_tiles = hi_block > lo_block ? (hi_block - lo_block + BN - 1) / BN : 0;
    // Split-KV: block z of num_splits takes an even share of the key tiles.
    const int split = blockIdx.z;
    const int t_begin = all_tiles * split / num_splits, t_end = all_tiles * (split + 1) / num_splits;
    const int n_tiles = t_end - t_begin;

    // This thread's rows: lane-quad rows g and g + 8 of each of the warp's m-tiles.
    const int warp_row = warp * 16 * WM;
    int pos_r[WM][2];  // query position, or -1 for a padding row (sees nothing, written nowhere)
#pragma unroll
    for (int mi = 0; mi < WM; ++mi)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int pr = row0 + warp_row + mi * 16 + (lane >> 2) + 8 * i;
            pos_r[mi][i] = pr < rows ? hist + pr / group : -1;
        }

    // K/V tile loads. Each thread copies the same LOADS (row, chunk) pairs of every tile; the page
    // lookups of a tile (dependent global loads) are staged one tile ahead, into `slot`, so their
    // latency hides behind a tile of compute instead of stalling the copy.
    int slot[LOADS];  // pool slot of each row this thread copies next, -1 past the key range
    auto stage = [&](int it) {
        const int j0 = lo_block + (t_begin + it) * BN;
#pragma unroll
        for (int k = 0; k < LOADS; ++k) {
            const int j = j0 + (tid + k * WARPS * 32) / CHUNKS;
            slot[k] = -1;
            if (j < hi_block) {
                const int pg = page_shift >= 0 ? (j >> page_shift) : j / page_size;
                const int po = page_shift >= 0 ? (j & (page_size - 1)) : j - pg * page_size;
                slot[k] = pages[pg] * page_size + po;
            }
        }
    };
    auto issue = [&](int buf) {
        kv_t* dk = sk + buf * BN * STRIDE;
        kv_t* dv = sv + buf * BN * STRIDE;
#pragma unroll
        for (int k = 0; k < LOADS; ++k) {
            const int c = tid + k * WARPS * 32;
            if (BN * CHUNKS % (WARPS * 32) != 0 && c >= BN * CHUNKS) break;
            const int r = c / CHUNKS, ch = c % CHUNKS;
            const bool valid = slot[k] >= 0;
            const long off = valid ? (long)slot[k] * token_stride + (long)h * HD + ch * 8 : 0;
            // Zeros past the range: P is 0 there, and 0 * garbage could be NaN.
            cp_async16(dk + so(r, ch), k_cache + off, valid);
            cp_async16(dv + so(r, ch), v_cache + off, valid);
        }
    };

    if (n_tiles > 0) {
        stage(0);
        issue(0);
    }
    cp_async_commit();
    if (n_tiles > 1) stage(1);

    float o[WM][DT][4];
#pragma unroll
    for (int mi = 0; mi < WM; ++mi)
#pragma unroll
        for (int d = 0; d < DT; ++d) o[mi][d][0] = o[mi][d][1] = o[mi][d][2] = o[mi][d][3] = 0.f;
    float m[WM][2], l[WM][2];
#pragma unroll
    for (int mi = 0; mi < WM; ++mi) { m[mi][0] = m[mi][1] = PAL_NEG_INF; l[mi][0] = l[mi][1] = 0.f; }
    const float scale_log2 = opts.scale * LOG2E;
    const kv_t* q_warp = sq + warp_row * STRIDE;
    // ldmatrix columns. Every row an ldmatrix lane addresses has (row & 7) == (lane & 7), and the
    // chunk is an even compile-time c0 plus a per-lane bit, so the swizzled chunk is
    // (c0 & ~7) | ((c0 & 7) ^ y) with y = bit ^ (lane & 7) fixed per lane: one logic op per
    // distinct c0 & 7, which the compiler keeps out of the tile loop.
    const int bit_q = lane >> 4, bit_k = (lane >> 3) & 1, bit_v = lane >> 4;
    const int y_q = bit_q ^ (lane & 7), y_k = bit_k ^ (lane & 7), y_v = bit_v ^ (lane & 7);
    auto col = [&](int c0, int bit, int y) { return SWZ ? ((c0 & ~7) | ((c0 & 7) ^ y)) * 8 : (c0 + bit) * 8; };

    for (int it = 0; it < n_tiles; ++it) {
        cp_async_wait_all();
        __syncthreads();
        if (it + 1 < n_tiles) issue((it + 1) & 1);
        cp_async_commit();
        if (it + 2 < n_tiles) stage(it + 2);
        const kv_t* kt = sk + (it & 1) * BN * STRIDE;
        const kv_t* vt = sv + (it & 1) * BN * STRIDE;
        const int j0 = lo_block + (t_begin + it) * BN;

        // S = Q K^T for this warp's rows and the tile's BN keys; each K fragment feeds WM mmas.
        float s[WM][NT][4];
#pragma unroll
        for (int mi = 0; mi < WM; ++mi)
#pragma unroll
            for (int n = 0; n < NT; ++n) s[mi][n][0] = s[mi][n][1] = s[mi][n][2] = s[mi][n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KSTEPS; ++kk) {
            unsigned a[WM][4];
#pragma unroll
            for (int mi = 0; mi < WM; ++mi)
                ldsm_x4(a[mi], q_warp + (mi * 16 + (lane & 15)) * STRIDE + col(kk * 2, bit_q, y_q));
#pragma unroll
            for (int n = 0; n < NT; n += 2) {
                unsigned b[4];
                ldsm_x4(b, kt + (n * 8 + (lane & 7) + (lane >> 4) * 8) * STRIDE + col(kk * 2, bit_k, y_k));
#pragma unroll
                for (int mi = 0; mi < WM; ++mi) {
                    mma16816(s[mi][n], a[mi], b, kv_t());
                    mma16816(s[mi][n + 1], a[mi], b + 2, kv_t());
                }
            }
        }

        // Scale (and cap) into base-2 logits; mask keys a row must not see. (Folding the scale
        // into the exponent's FFMA instead measured 7% slower on H100: more live registers.) The
        // uniform conditions (soft-cap, a tile every row sees whole) are tested once per tile,
        // outside the element loops: tested per element they split the tile into ~20 basic
        // blocks (Nsight: 23 branch instructions per warp and tile against FA2's 1) and the
        // compiler could not overlap the softmax latencies across them.
        const bool full = j0 >= lo_all && j0 + BN <= hi_all;
        if (opts.soft_cap > 0.f) {
            const float inv_cap = opts.scale / opts.soft_cap, cap_log2 = opts.soft_cap * LOG2E;
#pragma unroll
            for (int mi = 0; mi < WM; ++mi)
#pragma unroll
                for (int n = 0; n < NT; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) s[mi][n][e] = cap_log2 * tanh_f32(s[mi][n][e] * inv_cap);
        } else {
#pragma unroll
            for (int mi = 0; mi < WM; ++mi)
#pragma unroll
                for (int n = 0; n < NT; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) s[mi][n][e] *= scale_log2;
        }
        if (!full) {
#pragma unroll
            for (int mi = 0; mi < WM; ++mi)
#pragma unroll
                for (int n = 0; n < NT; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int j = j0 + n * 8 + 2 * (lane & 3) + (e & 1);
                        const int pos = pos_r[mi][e >> 1];
                        const int hi = pos < 0 ? 0 : opts.causal ? pos + 1 : total;
                        if (j < first_visible(pos) || j >= hi) s[mi][n][e] = PAL_NEG_INF;
                    }
        }

        // Online softmax per row (the 4 lanes of a quad share a row).
#pragma unroll
        for (int mi = 0; mi < WM; ++mi) {
            float alpha[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                float mx = m[mi][i];
#pragma unroll
                for (int n = 0; n < NT; ++n) mx = fmaxf(mx, fmaxf(s[mi][n][2 * i], s[mi][n][2 * i + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float base = mx == PAL_NEG_INF ? 0.f : mx;  // a row that saw nothing yet
                alpha[i] = exp2f(m[mi][i] - base);                 // m = -inf -> 0
                m[mi][i] = mx;
                float sum = 0.f;
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    s[mi][n][2 * i] = exp2f(s[mi][n][2 * i] - base);
                    s[mi][n][2 * i + 1] = exp2f(s[mi][n][2 * i + 1] - base);
                    sum += s[mi][n][2 * i] + s[mi][n][2 * i + 1];
                }
                l[mi][i] = l[mi][i] * alpha[i] + sum;  // per-lane partial; the quad is summed at the end
            }
            // Once the running maxima settle (most tiles of a long range) no row of the warp
            // rescales: skip the DT x 4 multiplies.
            if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
                for (int d = 0; d < DT; ++d) {
                    o[mi][d][0] *= alpha[0]; o[mi][d][1] *= alpha[0];
                    o[mi][d][2] *= alpha[1]; o[mi][d][3] *= alpha[1];
                }
            }
        }

        // O += P V: P's accumulator layout is the A-operand layout of the next mma; each V
        // fragment feeds WM mmas.
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            unsigned a[WM][4];
#pragma unroll
            for (int mi = 0; mi < WM; ++mi) {
                a[mi][0] = pack2(s[mi][2 * kk][0], s[mi][2 * kk][1], kv_t());
                a[mi][1] = pack2(s[mi][2 * kk][2], s[mi][2 * kk][3], kv_t());
                a[mi][2] = pack2(s[mi][2 * kk + 1][0], s[mi][2 * kk + 1][1], kv_t());
                a[mi][3] = pack2(s[mi][2 * kk + 1][2], s[mi][2 * kk + 1][3], kv_t());
            }
#pragma unroll
            for (int d = 0; d < DT; d += 2) {
                unsigned b[4];
                ldsm_x4_trans(b, vt + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * STRIDE + col(d, bit_v, y_v));
#pragma unroll
                for (int mi = 0; mi < WM; ++mi) {
                    mma16816(o[mi][d], a[mi], b, kv_t());
                    mma16816(o[mi][d + 1], a[mi], b + 2, kv_t());
                }
            }
        }
    }
    cp_async_wait_all();

    // Normalise and write this thread's rows: the output, or this split's partial state.
#pragma unroll
    for (int mi = 0; mi < WM; ++mi)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float li = l[mi][i];
            li += __shfl_xor_sync(0xffffffffu, li, 1);
            li += __shfl_xor_sync(0xffffffffu, li, 2);
            const int pr = row0 + warp_row + mi * 16 + (lane >> 2) + 8 * i;
            if (pr >= rows) continue;
            const int t = pr / group, gi = pr - t * group;
            const float inv = li > 0.f ? 1.f / li : 0.f;
            const long row = (long)(q_start + t) * hq + h * group + gi;
            if (num_splits == 1) {
                kv_t* dst = out + row * HD + 2 * (lane & 3);
#pragma unroll
                for (int d = 0; d < DT; ++d)
                    *reinterpret_cast<unsigned*>(dst + d * 8) =
                        pack2(o[mi][d][2 * i] * inv, o[mi][d][2 * i + 1] * inv, kv_t());
            } else {
                const long prow = (long)split * num_tokens * hq + row;
                float* dst = part_o + prow * HD + 2 * (lane & 3);
#pragma unroll
                for (int d = 0; d < DT; ++d)
                    *reinterpret_cast<float2*>(dst + d * 8) = make_float2(o[mi][d][2 * i] * inv, o[mi][d][2 * i + 1] * inv);
                if ((lane & 3) == 0) part_lse[prow] = li > 0.f ? m[mi][i] + __log2f(li) : PAL_NEG_INF;
            }
        }
}

// Combine the split-KV partial states of every (token, query head): one block per pair.
extern "C" __global__ void __launch_bounds__(128)
pal_prefill_merge(const float* __restrict__ part_o, const float* __restrict__ part_lse, kv_t* __restrict__ out,
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
        if (d < HD) out[row * HD + d] = from_f32<kv_t>(acc[k] * inv);
    }
}
