// Split-KV paged decode on tensor cores. Same work item, arguments and outputs as `pal_decode`
// (decode.cu): one block = one chunk of one sequence for one KV head and its PAL_GROUP query heads.
//
// Why tensor cores for a memory-bound op: the CUDA-core kernel spends ~4 FMAs plus a widening per
// K/V byte per query head; at HBM3e speed (H200, 4.8 TB/s) that issue rate, not the memory, was
// the limit (76% of the read ceiling). Here the query heads of the block are the rows of an
// m16n8k16 mma (rows past the group are zeros: wasted tensor-core work, which is cheap), so the
// arithmetic per byte costs a few mma instructions instead.
//
// Pipeline: tiles of BT = 4 warps x 16 tokens stream from their pages into shared memory with
// cp.async, STAGES - 1 tiles ahead of the one being computed. Each warp owns 16 tokens of every
// tile: S = Q K^T (16 rows x 16 tokens), an online softmax per row, then O += P V, with P's
// accumulator layout reused as the next mma's A operand. The four warps' states (m, l, O) merge
// through shared memory at the end, and the block writes the output or a partial (o, lse), which
// the row's last block merges (split.cuh) or `pal_merge` does.
//
// Requires PAL_T == PAL_KV (f16 or bf16) and HD % 16 == 0 (the host picks `pal_decode` otherwise).

#define HD PAL_HEAD_DIM
#define G PAL_GROUP                     // query heads of the block: rows 0..G-1 of the m-tile
#define WARPS 4
static_assert(WARPS * 32 == SPLIT_THREADS, "split.cuh merges with the decode block's threads");
#define WT 16                           // tokens per warp per tile (one k-step of P V)
#define BT (WARPS * WT)                 // tokens per tile
#define STAGES PAL_DEC_STAGES
#define KSTEPS (HD / 16)
#define DT (HD / 8)                     // 8-column blocks of O
#define CHUNKS (HD / 8)                 // 16-byte words per row
#define LOADS ((BT * CHUNKS + WARPS * 32 - 1) / (WARPS * 32))  // K (and V) words per thread per tile
#define QREG (HD <= 128)                // q fragments live in registers (wide heads: from smem)
#define LOG2E 1.4426950408889634f
static_assert(G <= 8, "a tensor-core decode block computes at most 8 query heads");
static_assert(STAGES >= 2, "PAL_DEC_STAGES must be at least 2");

typedef PAL_KV kv_t;
#define STAGE_BYTES (BT * ROW_BYTES)    // one K (or V) stage (ROW_BYTES, EB: mma.cuh)

// Row pitch STRIDE and chunk offsets so(r, ch): the shared-memory layout in mma.cuh. Shared
// memory is addressed with 32-bit byte addresses, a per-lane base plus compile-time offsets that
// ptxas folds into the instructions (as in prefill.cu).

extern "C" __global__ void __launch_bounds__(WARPS * 32)
pal_decode_tc(const kv_t* __restrict__ q, const kv_t* __restrict__ k_cache, const kv_t* __restrict__ v_cache,
              const int* __restrict__ indptr, const int* __restrict__ indices, const int* __restrict__ chunk_seq,
              const int* __restrict__ chunk_row, const int* __restrict__ chunk_start,
              const int* __restrict__ chunk_end, float* __restrict__ part_o, float* __restrict__ part_lse,
              kv_t* __restrict__ out, const int* __restrict__ row_chunk_indptr, int* __restrict__ merge_count,
              int finish, int num_kv_heads, int group, int page_size, AttnOpts opts) {
    // 128-byte aligned: rows of K/V must not straddle 128-byte segments (split.cuh says why).
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const unsigned sq = smem_addr(smem_raw);       // [16][STRIDE]
    const unsigned sk = sq + 16 * ROW_BYTES;        // [STAGES][BT][STRIDE]
    const unsigned sv = sk + STAGES * STAGE_BYTES;  // [STAGES][BT][STRIDE]
    const int chunk = blockIdx.x;
    const int h = blockIdx.y;
    const int hq = num_kv_heads * group;
    const int head0 = h * group + blockIdx.z * G;
    const int b = chunk_seq[chunk];
    const int qrow = chunk_row[chunk];
    const int start = chunk_start[chunk], end = chunk_end[chunk];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int* pages = indices + indptr[b];
    const long token_stride = (long)num_kv_heads * HD;
    const int page_shift = (page_size & (page_size - 1)) == 0 ? __ffs(page_size) - 1 : -1;

    // Q rows -> shared memory: row r < G is query head head0 + r, the other rows are zeros.
    for (int c = tid; c < 16 * CHUNKS; c += WARPS * 32) {
        const int r = c / CHUNKS, ch = c % CHUNKS;
        const bool valid = r < G;
        const kv_t* src = q + ((long)qrow * hq + head0 + (valid ? r : 0)) * HD + ch * 8;
        cp_async16(sq + so(r, ch) * EB, src, valid);
    }
    cp_async_commit();

    // Each thread copies the same LOADS (row, word) pairs of every tile. Where the block's threads
    // divide into whole rows (HD 64, 128, 256) a thread takes one word column of LOADS consecutive
    // rows, so its rows usually share a page (a warp still copies whole 16-byte-word rows per
    // instruction); otherwise words go round-robin.
    constexpr bool ROW_RUNS = (WARPS * 32) % CHUNKS == 0;
    auto copy_row = [&](int k) { return ROW_RUNS ? (tid / CHUNKS) * LOADS + k : (tid + k * WARPS * 32) / CHUNKS; };
    auto copy_col = [&](int k) { return ROW_RUNS ? tid % CHUNKS : (tid + k * WARPS * 32) % CHUNKS; };
    auto copies = [&](int k) { return ROW_RUNS || BT * CHUNKS % (WARPS * 32) == 0 || tid + k * WARPS * 32 < BT * CHUNKS; };
    // The page ids of a tile are loaded one tile ahead and must stay in flight until that tile's
    // copies use them, so every row loads its own id straight into its register. An earlier form
    // loaded each distinct page once (`if (pg != prev) id = pages[pg]`), and the compiler moved
    // each loaded id out of that branch right away, so every tile waited for its page-table load
    // there (~30% of the stall samples at Llama B=32 1k with 16-token pages, Nsight; 16-token
    // pages ran 6% slower than one page per sequence on the same memory). The repeated loads hit
    // L1, and the loop got shorter (959 instructions per 64-token tile at head dim 128, from
    // 1056). Rows past the chunk load nothing: clamping them to the last row instead cost SmolLM
    // B=1 16k 20% (H100, h100_decode_page_ids_ab.txt).
    auto page_of = [&](int j) { return page_shift >= 0 ? (j >> page_shift) : j / page_size; };
    int cpage[LOADS];
    auto load_pages = [&](int base) {
#pragma unroll
        for (int k = 0; k < LOADS; ++k) {
            const int j = base + copy_row(k);
            if (copies(k) && j < end) cpage[k] = pages[page_of(j)];
        }
    };
    // A copy's source: this head's row base + pool slot * token bytes + the word (one wide
    // multiply-add; the 64-bit products per copy cost ~20 instructions per row).
    const char* k_head = reinterpret_cast<const char*>(k_cache + (long)h * HD);
    const char* v_head = reinterpret_cast<const char*>(v_cache + (long)h * HD);
    const unsigned token_bytes = (unsigned)token_stride * EB;
    const char* k_word = k_head + copy_col(0) * 16;
    const char* v_word = v_head + copy_col(0) * 16;
    auto issue = [&](int base, int stage) {
        const unsigned dk = sk + stage * STAGE_BYTES, dv = sv + stage * STAGE_BYTES;
#pragma unroll
        for (int k = 0; k < LOADS; ++k) {
            if (!copies(k)) break;
            const int r = copy_row(k), ch = copy_col(k);
            const int j = base + r;
            const bool valid = j < end;
            const int po = page_shift >= 0 ? (j & (page_size - 1)) : j - (j / page_size) * page_size;
            // Past the chunk: zeros from row 0 (P is 0 there, and 0 * garbage could be NaN).
            const unsigned slot = valid ? (unsigned)(cpage[k] * page_size + po) : 0u;
            const unsigned long long off = (unsigned long long)slot * token_bytes;
            const unsigned dst = so(r, ch) * EB;  // stage offsets are multiples of 8 rows
            // With whole rows per thread (ROW_RUNS) the word is fixed: thread bases k/v_word.
            cp_async16(dk + dst, (ROW_RUNS ? k_word : k_head + ch * 16) + off, valid);
            cp_async16(dv + dst, (ROW_RUNS ? v_word : v_head + ch * 16) + off, valid);
        }
    };

    const int ntiles = (end - start + BT - 1) / BT;
    load_pages(start);
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ntiles) {
            issue(start + s * BT, s);
            load_pages(start + (s + 1) * BT);
        }
        cp_async_commit();
    }

    // The row this lane's accumulators hold: rows g and g + 8 of the m-tile; g + 8 >= G always
    // (G <= 8), so only row g carries a query head.
    const int g = lane >> 2;
    float o[DT][4];
#pragma unroll
    for (int d = 0; d < DT; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    float m = PAL_NEG_INF, l = 0.f;  // base-2 running max and (per-lane partial) sum of row g
    const float scale_log2 = opts.scale * LOG2E;
#if QREG
    unsigned qa[KSTEPS][4];
    bool q_loaded = false;
#endif

    // ldmatrix addresses of K and V: per-lane bases (the warp's 16 tokens) plus ldsm_col offsets
    // (mma.cuh).
    const int bit_k = (lane >> 3) & 1, bit_v = lane >> 4;
    const int y_k = ldsm_y(bit_k, lane), y_v = ldsm_y(bit_v, lane);
    const unsigned k_lane = sk + (warp * WT + (lane & 7) + (lane >> 4) * 8) * ROW_BYTES + ldsm_lane_col(bit_k);
    const unsigned v_lane = sv + (warp * WT + (lane & 7) + ((lane >> 3) & 1) * 8) * ROW_BYTES + ldsm_lane_col(bit_v);

    for (int t = 0; t < ntiles; ++t) {
        cp_async_wait<STAGES - 2>();  // tile t (and Q) landed for this thread's copies ...
        __syncthreads();              // ... and every thread's; tile t - 1's buffer is free
        const int next = t + STAGES - 1;
        if (next < ntiles) {
            issue(start + next * BT, next % STAGES);
            load_pages(start + (next + 1) * BT);
        }
        cp_async_commit();
#if QREG
        if (!q_loaded) {
#pragma unroll
            for (int kk = 0; kk < KSTEPS; ++kk) ldsm_x4(qa[kk], sq + so(lane & 15, kk * 2 + (lane >> 4)) * EB);
            q_loaded = true;
        }
#endif
        const int stage = t % STAGES;
        const unsigned kt = k_lane + stage * STAGE_BYTES, vt = v_lane + stage * STAGE_BYTES;
        const int j0 = start + t * BT + warp * WT;  // first token of this warp's 16
        if (j0 >= end) continue;                    // no token of this warp in the last tile

        // S = Q K^T: 16 rows x 16 tokens as two 8-column blocks.
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int kk = 0; kk < KSTEPS; ++kk) {
#if QREG
            const unsigned* a = qa[kk];
#else
            unsigned a[4];
            ldsm_x4(a, sq + so(lane & 15, kk * 2 + (lane >> 4)) * EB);
#endif
            unsigned bk[4];
            ldsm_x4(bk, kt + ldsm_col(kk * 2, y_k));
            mma16816(s[0], a, bk, kv_t());
            mma16816(s[1], a, bk + 2, kv_t());
        }

        // Base-2 logits of row g (elements 0 and 1 of each block; 2 and 3 are the zero row g + 8),
        // masked past the chunk, then one online-softmax step over the 16 tokens.
        float x[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float v = s[e >> 1][e & 1];
            const int j = j0 + (e >> 1) * 8 + 2 * (lane & 3) + (e & 1);
            float y = opts.soft_cap > 0.f ? opts.soft_cap * tanh_f32(v * opts.scale / opts.soft_cap) * LOG2E
                                          : v * scale_log2;
            x[e] = j < end ? y : PAL_NEG_INF;
        }
        float mx = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        mx = fmaxf(mx, m);  // finite: the warp's first token is visible
        const float alpha = exp2f(m - mx);  // m = -inf -> 0
        m = mx;
        float p[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) p[e] = exp2f(x[e] - mx);
        l = l * alpha + (p[0] + p[1] + p[2] + p[3]);
        // Once the maxima settle no row rescales: skip the DT x 2 multiplies.
        if (__any_sync(0xffffffffu, alpha != 1.f)) {
#pragma unroll
            for (int d = 0; d < DT; ++d) { o[d][0] *= alpha; o[d][1] *= alpha; }
        }

        // O += P V over the warp's 16 tokens (rows g + 8 of P are zero).
        unsigned pa[4];
        pa[0] = pack2(p[0], p[1], kv_t());
        pa[1] = 0u;
        pa[2] = pack2(p[2], p[3], kv_t());
        pa[3] = 0u;
#pragma unroll
        for (int d = 0; d < DT; d += 2) {
            unsigned bv[4];
            ldsm_x4_trans(bv, vt + ldsm_col(d, y_v));
            mma16816(o[d], pa, bv, kv_t());
            mma16816(o[d + 1], pa, bv + 2, kv_t());
        }
    }
    cp_async_wait_all();

    // Merge the warps: row sums over the lane quad, then (m, l, O) of each warp through the idle
    // stage memory. m and l are base 2 here; the partial lse is written in natural log like
    // `pal_decode`'s, for `pal_merge`.
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    __syncthreads();
    float* sm_m = reinterpret_cast<float*>(smem_raw);  // [WARPS][G]
    float* sm_l = sm_m + WARPS * G;                    // [WARPS][G]
    float* sm_o = sm_l + WARPS * G;                    // [WARPS][G][HD]
    if (g < G) {
        if ((lane & 3) == 0) { sm_m[warp * G + g] = m; sm_l[warp * G + g] = l; }
        float* dst = sm_o + (warp * G + g) * HD + 2 * (lane & 3);
#pragma unroll
        for (int d = 0; d < DT; ++d) { dst[d * 8] = o[d][0]; dst[d * 8 + 1] = o[d][1]; }
    }
    __syncthreads();
    for (int e = tid; e < G * HD; e += WARPS * 32) {
        const int r = e / HD, d = e % HD;
        float mm = PAL_NEG_INF;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) mm = fmaxf(mm, sm_m[w * G + r]);
        float ll = 0.f, oo = 0.f;
        if (mm != PAL_NEG_INF) {
#pragma unroll
            for (int w = 0; w < WARPS; ++w) {
                const float wt = exp2f(sm_m[w * G + r] - mm);  // 0 for a warp that saw no token
                ll += sm_l[w * G + r] * wt;
                oo += sm_o[(w * G + r) * HD + d] * wt;
            }
        }
        const float val = ll > 0.f ? oo / ll : 0.f;
        if (finish == PAL_FINISH_OUT) {
            out[((long)qrow * hq + head0 + r) * HD + d] = from_f32<kv_t>(val);
        } else {
            const long row = (long)chunk * hq + head0 + r;
            part_o[row * HD + d] = val;
            if (d == 0) part_lse[row] = ll > 0.f ? (mm + __log2f(ll)) * 0.6931471805599453f : PAL_NEG_INF;
        }
    }
    if (finish == PAL_FINISH_MERGE)
        merge_if_last<G, HD>(part_o, part_lse, row_chunk_indptr, merge_count, out, qrow, hq, head0,
                             reinterpret_cast<float*>(smem_raw));
}
