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
#define BN PAL_PREFILL_BN               // KV tokens per tile: 64 or 32 by head dim and variant (tuning.rs)
#define KSTEPS (HD / 16)                // k-steps of Q K^T
#define NT (BN / 8)                     // 8-column blocks of S
#define DT (HD / 8)                     // 8-column blocks of O
#define CHUNKS (HD / 8)                 // 16-byte chunks per row
#define LOADS ((BN * CHUNKS + WARPS * 32 - 1) / (WARPS * 32))  // K (and V) chunks per thread per tile

typedef PAL_KV kv_t;
#define TILE_BYTES (BN * ROW_BYTES)    // one K (or V) buffer (ROW_BYTES, EB: mma.cuh)

// Row pitch STRIDE and chunk offsets so(r, ch): the shared-memory layout in mma.cuh. Shared
// memory is addressed with 32-bit byte addresses (lane base + compile-time offset), so that
// ptxas folds the offsets of the ldmatrix and cp.async instructions into their immediates: with
// generic pointers it recomputed every address every tile (Nsight/SASS: ~50 address
// instructions per tile on top of the copy math).

extern "C" __global__ void __launch_bounds__(WARPS * 32, PAL_PREFILL_MIN_BLOCKS)
pal_prefill_tc(PAL_PREFILL_PARAMS) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const unsigned sq = smem_addr(smem_raw);  // [BM][STRIDE]
    const unsigned sk = sq + BM * ROW_BYTES;  // [2][BN][STRIDE]
    const unsigned sv = sk + 2 * TILE_BYTES;  // [2][BN][STRIDE]

    // The tile's row carries its sequence's first page-table entry (page0): read from indptr it
    // was one more dependent load before the first copy of every block.
    const int* ti = tiles + 6 * blockIdx.x;
    const int q_start = ti[1], n_new = ti[2], total = ti[3], row0 = ti[4];
    const int h = blockIdx.y;
    const int hist = total - n_new;
    const int hq = num_kv_heads * group;
    const int rows = n_new * group;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int* pages = indices + ti[5];
    const long token_stride = (long)num_kv_heads * HD;
    const int page_shift = (page_size & (page_size - 1)) == 0 ? __ffs(page_size) - 1 : -1;

    // Rows are addressed by (token, head in group): a thread steps through its rows instead of
    // dividing each by the group (a division is ~25 instructions; at head dim 128 the Q load's
    // divisions were ~5% of the stall samples at L=1k). With whole rows per pass (ROW_PASSES) a
    // thread's rows are a fixed stride apart and its 16-byte chunk is the same in every pass.
    constexpr int NTHREADS = WARPS * 32;
    constexpr bool ROW_PASSES = NTHREADS % CHUNKS == 0;
    auto q_row = [&](int t, int gi) { return (long)(q_start + t) * hq + h * group + gi; };
    auto copy_q = [&](int r, int ch, int t, int gi, bool valid) {  // rows past the new tokens: zeros
        const kv_t* src = q + q_row(t, gi) * HD + ch * 8;
        cp_async16(sq + so(r, ch) * EB, valid ? src : q, valid);
    };
    if (ROW_PASSES) {
        constexpr int QSTEP = NTHREADS / CHUNKS;
        const int ch = tid % CHUNKS;
        int pr = row0 + tid / CHUNKS;
        int t = pr / group, gi = pr - t * group;
        const int dt = QSTEP / group, dg = QSTEP - dt * group;
        for (int r = tid / CHUNKS; r < BM; r += QSTEP, pr += QSTEP) {
            copy_q(r, ch, t, gi, pr < rows);
            t += dt;
            gi += dg;
            if (gi >= group) {
                gi -= group;
                ++t;
            }
        }
    } else {
        for (int c = tid; c < BM * CHUNKS; c += NTHREADS) {
            const int r = c / CHUNKS, ch = c % CHUNKS;
            const int pr = row0 + r;
            const bool valid = pr < rows;
            const int t = valid ? pr / group : 0, gi = valid ? pr - (pr / group) * group : 0;
            copy_q(r, ch, t, gi, valid);
        }
    }

    // Key range of the block; split-KV: block z of num_splits takes an even share of its tiles.
    const int split = blockIdx.z;
    const PrefillRange kr = prefill_range<BN>(row0, BM, rows, group, hist, total, opts, split, num_splits);
    const int lo_block = kr.lo_block, hi_block = kr.hi_block, t_begin = kr.first_tile, n_tiles = kr.n_tiles;

    // This thread's rows: lane-quad rows g and g + 8 of each of the warp's m-tiles.
    const int warp_row = warp * 16 * WM;
    const int first_row = row0 + warp_row + (lane >> 2);
    int pos_r[WM][2];
    row_positions(pos_r, first_row, rows, group, hist);

    // K/V tile loads. Each thread copies the same LOADS (row, chunk) pairs of every tile. The page
    // lookups (dependent global loads) run three tiles ahead, one key row per thread (threads
    // below BN): the slot is loaded into `pending`, published to shared memory a tile later, when
    // the load has landed, and read by the copies the tile after that, past a barrier. Before,
    // each thread looked up the page of every row it copies (the 16 threads of a row each did),
    // ~40 instructions per tile and LOADS registers held across it.
    const char* k_head = reinterpret_cast<const char*>(k_cache + (long)h * HD);
    const char* v_head = reinterpret_cast<const char*>(v_cache + (long)h * HD);
    const unsigned token_bytes = (unsigned)token_stride * EB;
    int* s_slot = reinterpret_cast<int*>(smem_raw + (BM + 4 * BN) * ROW_BYTES);  // [2][BN]
    // A lookup returns (page id, offset in page; -1 past the range) and `slot_of` combines them a
    // tile later: multiplying right away made the two lookup warps wait for the page-id load every
    // tile (Nsight: long-scoreboard stalls on that multiply), and the barrier then held the rest.
    auto lookup = [&](int it) {  // key row `tid` of tile `it`
        const int j = lo_block + (t_begin + it) * BN + tid;
        return page_lookup(pages, j, it < n_tiles && j < hi_block, page_shift, page_size);
    };
    const char* k_word = k_head + (tid % CHUNKS) * 16;
    const char* v_word = v_head + (tid % CHUNKS) * 16;
    static_assert(BN <= NTHREADS, "one lookup thread per key row");
    auto issue = [&](int buf) {  // tile with slots in s_slot[buf] -> K/V buffer `buf`
        const unsigned dk = sk + buf * TILE_BYTES, dv = sv + buf * TILE_BYTES;
        const int* slots = s_slot + buf * BN;
        auto row = [&](int k) {
            return ROW_PASSES ? tid / CHUNKS + k * (NTHREADS / CHUNKS) : (tid + k * NTHREADS) / CHUNKS;
        };
        auto copies = [&](int k) { return BN * CHUNKS % NTHREADS == 0 || tid + k * NTHREADS < BN * CHUNKS; };
        // All slots first: cp.async's asm carries a memory clobber, so a shared load between two
        // copies cannot move above the first one, and each copy waited for its own load
        // (Nsight: ~7% of the stall samples on the instruction after each load).
        int slot_k[LOADS];
#pragma unroll
        for (int k = 0; k < LOADS; ++k) slot_k[k] = copies(k) ? slots[row(k)] : -1;
#pragma unroll
        for (int k = 0; k < LOADS; ++k) {
            if (!copies(k)) break;
            const int r = row(k);
            const int ch = ROW_PASSES ? tid % CHUNKS : (tid + k * NTHREADS) % CHUNKS;
            const int slot = slot_k[k];
            // Past the range: zeros from row 0 (P is 0 there, and 0 * garbage could be NaN).
            const unsigned long long off = (unsigned long long)(unsigned)max(slot, 0) * token_bytes;
            // With ROW_PASSES the thread bases k/v_word hold the word.
            cp_async16(dk + so(r, ch) * EB, (ROW_PASSES ? k_word : k_head + ch * 16) + off, slot >= 0);
            cp_async16(dv + so(r, ch) * EB, (ROW_PASSES ? v_word : v_head + ch * 16) + off, slot >= 0);
        }
    };

    int2 pending = make_int2(0, -1);  // this thread's lookup for the tile after next (threads < BN)
    if (tid < BN) {
        s_slot[tid] = slot_of(lookup(0), page_size);
        s_slot[BN + tid] = slot_of(lookup(1), page_size);
        pending = lookup(2);
    }
    __syncthreads();
    if (n_tiles > 0) issue(0);
    cp_async_commit();

    float o[WM][DT][4];
#pragma unroll
    for (int mi = 0; mi < WM; ++mi)
#pragma unroll
        for (int d = 0; d < DT; ++d) o[mi][d][0] = o[mi][d][1] = o[mi][d][2] = o[mi][d][3] = 0.f;
    float m[WM][2], l[WM][2];
#pragma unroll
    for (int mi = 0; mi < WM; ++mi) { m[mi][0] = m[mi][1] = PAL_NEG_INF; l[mi][0] = l[mi][1] = 0.f; }
    const float scale_log2 = opts.scale * PAL_LOG2E;
    // Factor from the stored scores to base-2 logits. With PAL_PREFILL_FOLD the scale is not
    // applied to the scores: the running maxima are of raw scores and the exponent's FFMA applies
    // it (p = 2^(s * e - m * e)), as FlashAttention-2 does. Only for a positive scale (a negative
    // one reverses the order of the scores, and the maximum of the raw scores is the minimum of
    // the logits); the soft-cap path produces base-2 logits itself (e = 1).
    const bool fold = PAL_PREFILL_FOLD && !(opts.soft_cap > 0.f) && scale_log2 > 0.f;
    const float e_scale = fold ? scale_log2 : 1.f;
    // ldmatrix addresses: per-lane bases plus ldsm_col offsets (mma.cuh).
    const int bit_q = lane >> 4, bit_k = (lane >> 3) & 1, bit_v = lane >> 4;
    const int y_q = ldsm_y(bit_q, lane), y_k = ldsm_y(bit_k, lane), y_v = ldsm_y(bit_v, lane);
    const unsigned q_lane = sq + (warp_row + (lane & 15)) * ROW_BYTES + ldsm_lane_col(bit_q);
    const unsigned k_lane = sk + ((lane & 7) + (lane >> 4) * 8) * ROW_BYTES + ldsm_lane_col(bit_k);
    const unsigned v_lane = sv + ((lane & 7) + ((lane >> 3) & 1) * 8) * ROW_BYTES + ldsm_lane_col(bit_v);

    for (int it = 0; it < n_tiles; ++it) {
        cp_async_wait_all();
        __syncthreads();
        if (it + 1 < n_tiles) issue((it + 1) & 1);
        cp_async_commit();
        // Tile it+2's slots replace tile it's (read by issue(it) before the barrier above); the
        // copies of iteration it+1 read them after the next barrier.
        if (tid < BN) {
            s_slot[(it & 1) * BN + tid] = slot_of(pending, page_size);
            pending = lookup(it + 3);
        }
        const unsigned kt = k_lane + (it & 1) * TILE_BYTES, vt = v_lane + (it & 1) * TILE_BYTES;
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
                ldsm_x4(a[mi], q_lane + mi * 16 * ROW_BYTES + ldsm_col(kk * 2, y_q));
#pragma unroll
            for (int n = 0; n < NT; n += 2) {
                unsigned b[4];
                ldsm_x4(b, kt + n * 8 * ROW_BYTES + ldsm_col(kk * 2, y_k));
#pragma unroll
                for (int mi = 0; mi < WM; ++mi) {
                    mma16816(s[mi][n], a[mi], b, kv_t());
                    mma16816(s[mi][n + 1], a[mi], b + 2, kv_t());
                }
            }
        }

        // Scores -> base-2 logits, keys a row must not see masked; then the online softmax.
        const bool full = j0 >= kr.lo_all && j0 + BN <= kr.hi_all;
        scores_to_logits(s, pos_r, full, j0, lane, total, fold, opts);
        online_softmax(s, m, l, o, e_scale);

        // O += P V: P's accumulator layout is the A-operand layout of the next mma; each V
        // fragment feeds WM mmas.
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            unsigned a[WM][4];
#pragma unroll
            for (int mi = 0; mi < WM; ++mi) pack_p(a[mi], s[mi], kk, kv_t());
#pragma unroll
            for (int d = 0; d < DT; d += 2) {
                unsigned b[4];
                ldsm_x4_trans(b, vt + kk * 16 * ROW_BYTES + ldsm_col(d, y_v));
#pragma unroll
                for (int mi = 0; mi < WM; ++mi) {
                    mma16816(o[mi][d], a[mi], b, kv_t());
                    mma16816(o[mi][d + 1], a[mi], b + 2, kv_t());
                }
            }
        }
    }
    cp_async_wait_all();

    write_rows<HD>(o, m, l, e_scale, first_row, rows, group, q_start, hq, h, lane, out, part_o, part_lse, split,
                   num_splits, num_tokens);
}
