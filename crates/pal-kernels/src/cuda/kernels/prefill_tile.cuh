// The parts of a prefill tile both tensor-core prefills share (prefill.cu on mma.sync,
// prefill_wg.cu on wgmma): the block's key range, page lookups, the scores' scaling, cap and
// mask, the online softmax, P packed as the next product's A operand, and the epilogue. Both
// kernels hold S and O in the mma.m16n8 accumulator layout, as WM m-tiles of 16 rows per warp
// (prefill_wg.cu: WM = 1, a warp's 16 rows of its warpgroup's 64): element e of 8-column block n
// is row (lane / 4) + 8 (e / 2), column 8 n + 2 (lane % 4) + e % 2. Everything is forceinline and
// sized by template arguments, so each kernel compiles to the code it had inline.
#pragma once

#define PAL_LOG2E 1.4426950408889634f

// The arguments of both kernels, in the order prefill.rs launches them (one launch serves both;
// `kv_t` is the kernel file's 16-bit type of q, the pool and the output).
#define PAL_PREFILL_PARAMS                                                                           \
    const kv_t *__restrict__ q,       /* [tokens, Hq, HD] */                                            \
    const kv_t *__restrict__ k_cache, /* [blocks, page, Hkv, HD] */                                     \
    const kv_t *__restrict__ v_cache,                                                                   \
    const int *__restrict__ indices,  /* [nnz pages] */                                                 \
    const int *__restrict__ tiles,    /* [tiles, 6]: seq, q_start, n_new, total, row0, page0 */         \
    kv_t *__restrict__ out,           /* [tokens, Hq, HD], written when num_splits == 1 */              \
    float *__restrict__ part_o,       /* [num_splits, tokens, Hq, HD] otherwise */                      \
    float *__restrict__ part_lse,     /* [num_splits, tokens, Hq] (base 2) */                           \
    int num_splits, int num_tokens, int num_kv_heads, int group, int page_size, AttnOpts opts

// First key a query at position `pos` sees (the sliding window), 0 without one.
__device__ __forceinline__ int first_visible(const AttnOpts& opts, int pos) {
    return opts.window_left >= 0 ? max(0, pos - opts.window_left) : 0;
}

// Key range of a block of packed rows [row0, row0 + bm) and the part of it every row sees (tiles
// there need no mask); `first_tile`, `n_tiles`: this split's even share of the range's key tiles.
struct PrefillRange {
    int lo_block, hi_block, lo_all, hi_all, first_tile, n_tiles;
};
template <int BN>
__device__ __forceinline__ PrefillRange prefill_range(int row0, int bm, int rows, int group, int hist, int total,
                                                      const AttnOpts& opts, int split, int num_splits) {
    PrefillRange r;
    const int last_row = min(row0 + bm, rows) - 1;
    const int t_first = row0 / group, t_last = last_row / group;
    r.lo_block = first_visible(opts, hist + t_first);
    r.hi_block = opts.causal ? hist + t_last + 1 : total;
    r.lo_all = first_visible(opts, hist + t_last);
    r.hi_all = opts.causal ? hist + t_first + 1 : total;
    const int all_tiles = r.hi_block > r.lo_block ? (r.hi_block - r.lo_block + BN - 1) / BN : 0;
    r.first_tile = all_tiles * split / num_splits;
    r.n_tiles = all_tiles * (split + 1) / num_splits - r.first_tile;
    return r;
}

// Query position of each accumulator row of this lane (m-tile mi, half i), -1 for a padding row
// (sees nothing, written nowhere). `first_row`: the packed row of (mi, i) = (0, 0).
template <int WM>
__device__ __forceinline__ void row_positions(int (&pos)[WM][2], int first_row, int rows, int group, int hist) {
#pragma unroll
    for (int mi = 0; mi < WM; ++mi)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int pr = first_row + mi * 16 + 8 * i;
            pos[mi][i] = pr < rows ? hist + pr / group : -1;
        }
}

// Page lookup of key `j`, split in two so that the multiply waits a tile for the page id:
// (page id, offset in page), offset -1 when `valid` is false; `slot_of` combines them.
__device__ __forceinline__ int2 page_lookup(const int* pages, int j, bool valid, int page_shift, int page_size) {
    if (!valid) return make_int2(0, -1);
    const int pg = page_shift >= 0 ? (j >> page_shift) : j / page_size;
    const int po = page_shift >= 0 ? (j & (page_size - 1)) : j - pg * page_size;
    return make_int2(pages[pg], po);
}
__device__ __forceinline__ int slot_of(int2 x, int page_size) { return x.y < 0 ? -1 : x.x * page_size + x.y; }

// Scores -> base-2 logits (the cap, or the scale unless the exponent applies it: `fold`), then
// -inf for the keys a row must not see, unless every row sees the whole tile (`full`). The
// uniform conditions are tested once per tile, outside the element loops: tested per element they
// split the tile into ~20 basic blocks (Nsight: 23 branch instructions per warp and tile against
// FA2's 1) and the compiler could not overlap the softmax latencies across them.
template <int WM, int NT>
__device__ __forceinline__ void scores_to_logits(float (&s)[WM][NT][4], const int (&pos)[WM][2], bool full, int j0,
                                                 int lane, int total, bool fold, const AttnOpts& opts) {
    if (opts.soft_cap > 0.f) {
        const float inv_cap = opts.scale / opts.soft_cap, cap_log2 = opts.soft_cap * PAL_LOG2E;
#pragma unroll
        for (int mi = 0; mi < WM; ++mi)
#pragma unroll
            for (int n = 0; n < NT; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mi][n][e] = cap_log2 * tanh_f32(s[mi][n][e] * inv_cap);
    } else if (!fold) {
        const float scale_log2 = opts.scale * PAL_LOG2E;
#pragma unroll
        for (int mi = 0; mi < WM; ++mi)
#pragma unroll
            for (int n = 0; n < NT; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mi][n][e] *= scale_log2;
    }
    if (!full) {
        // Each row's visible keys [lo, hi) once, then two compares per element (computed per
        // element, the window's condition split the loop into a branch per element).
#pragma unroll
        for (int mi = 0; mi < WM; ++mi)
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int p = pos[mi][i];
                const int lo = first_visible(opts, max(p, 0));
                const int hi = p < 0 ? 0 : opts.causal ? p + 1 : total;
#pragma unroll
                for (int n = 0; n < NT; ++n)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int j = j0 + n * 8 + 2 * (lane & 3) + e;
                        if (j < lo || j >= hi) s[mi][n][2 * i + e] = PAL_NEG_INF;
                    }
            }
    }
}

// Online softmax of one tile per row (the 4 lanes of a quad share a row): logits -> P in place,
// running maxima m and per-lane sums l updated, O rescaled where a maximum moved. `e_scale`
// turns stored scores into base-2 logits inside the exponent (1 unless the scale is folded).
template <int WM, int NT, int DT>
__device__ __forceinline__ void online_softmax(float (&s)[WM][NT][4], float (&m)[WM][2], float (&l)[WM][2],
                                               float (&o)[WM][DT][4], float e_scale) {
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
            const float base = mx == PAL_NEG_INF ? 0.f : mx * e_scale;  // a row that saw nothing yet
            alpha[i] = exp2f(fmaf(m[mi][i], e_scale, -base));           // m = -inf -> 0
            m[mi][i] = mx;
            float sum = 0.f;
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                s[mi][n][2 * i] = exp2f(fmaf(s[mi][n][2 * i], e_scale, -base));
                s[mi][n][2 * i + 1] = exp2f(fmaf(s[mi][n][2 * i + 1], e_scale, -base));
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
}

// P's columns 16 kk .. 16 kk + 15 of one m-tile as the A operand of the next product (the
// accumulator layout is the A-operand layout).
template <int NT, typename T>
__device__ __forceinline__ void pack_p(unsigned (&a)[4], const float (&s)[NT][4], int kk, T) {
    a[0] = pack2(s[2 * kk][0], s[2 * kk][1], T());
    a[1] = pack2(s[2 * kk][2], s[2 * kk][3], T());
    a[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], T());
    a[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], T());
}

// Normalise and write this lane's rows: the output (one split), or this split's partial state
// (O and the base-2 log-sum-exp). `first_row` as in row_positions.
template <int HD, int WM, int DT, typename T>
__device__ __forceinline__ void write_rows(const float (&o)[WM][DT][4], const float (&m)[WM][2],
                                           const float (&l)[WM][2], float e_scale, int first_row, int rows,
                                           int group, int q_start, int hq, int h, int lane, T* out, float* part_o,
                                           float* part_lse, int split, int num_splits, int num_tokens) {
#pragma unroll
    for (int mi = 0; mi < WM; ++mi)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float li = l[mi][i];
            li += __shfl_xor_sync(0xffffffffu, li, 1);
            li += __shfl_xor_sync(0xffffffffu, li, 2);
            const int pr = first_row + mi * 16 + 8 * i;
            if (pr >= rows) continue;
            const int t = pr / group, gi = pr - t * group;
            const float inv = li > 0.f ? 1.f / li : 0.f;
            const long row = (long)(q_start + t) * hq + h * group + gi;
            if (num_splits == 1) {
                T* dst = out + row * HD + 2 * (lane & 3);
#pragma unroll
                for (int d = 0; d < DT; ++d)
                    *reinterpret_cast<unsigned*>(dst + d * 8) =
                        pack2(o[mi][d][2 * i] * inv, o[mi][d][2 * i + 1] * inv, T());
            } else {
                const long prow = (long)split * num_tokens * hq + row;
                float* dst = part_o + prow * HD + 2 * (lane & 3);
#pragma unroll
                for (int d = 0; d < DT; ++d)
                    *reinterpret_cast<float2*>(dst + d * 8) =
                        make_float2(o[mi][d][2 * i] * inv, o[mi][d][2 * i + 1] * inv);
                if ((lane & 3) == 0) part_lse[prow] = li > 0.f ? m[mi][i] * e_scale + __log2f(li) : PAL_NEG_INF;
            }
        }
}
