// Paged prefill (append attention with history) on Hopper's warpgroup MMA (wgmma, sm_90a).
//
// The same work items, arguments and results as prefill.cu (a tile of BM packed (token, query
// head) rows of one sequence and one KV head; split-KV partial states in the same layout), with
// the products on wgmma instead of mma.sync:
// - two warpgroups of four warps, each owning 64 of the block's 128 rows;
// - S = Q K^T with Q and K read by the tensor cores straight from shared memory (no ldmatrix, no
//   fragment registers: the instruction stream of a tile is a handful of wgmma plus the softmax);
// - O += P V with P from registers (the S accumulators rounded to 16 bits are already the
//   A-operand layout) and V from shared memory, read transposed by the tensor cores.
// K/V pages are copied into shared memory with cp.async, double buffered; every tile is one
// barrier. The tiles use the 128-byte swizzle (wgmma.cuh): a warp copies whole 128-byte rows. The
// page lookups run three tiles ahead as in prefill.cu, but the page ids travel by cp.async into
// shared memory rather than through a register: a load still in flight at the next wgmma.fence
// held the whole warpgroup (Nsight: 7% of the stall samples on the instruction after it).
//
// Requires PAL_T == PAL_KV (f16 or bf16) and HD 64 or 128 (the host picks prefill.cu otherwise).
// Masking, the sliding window and the soft-cap are prefill.cu's, row for row.

#define HD PAL_HEAD_DIM
#define NWG 2                             // warpgroups per block
#define NTHREADS (NWG * 128)
#define BM (NWG * 64)                     // packed rows per block
#define BN PAL_PREFILL_BN                 // keys per tile: 64, or 128 (tuning::prefill_wg_keys)
#define NT (BN / 8)                       // 8-column blocks of S
#define DT (HD / 8)                       // 8-column blocks of O
#define CHUNKS (HD / 8)                   // 16-byte chunks per row
#define ROWSTEP (NTHREADS / CHUNKS)       // rows between a thread's successive copies
#define LOADS (BN * CHUNKS / NTHREADS)    // K (and V) chunks per thread per tile
#define QLOADS (BM * CHUNKS / NTHREADS)   // Q chunks per thread
#define TILE_BYTES (BN * HD * 2)
// A tile of R rows is HD / 64 regions of R x 128 bytes (wgmma.cuh). Descriptor strides: Q and K
// (K-major) 1024 bytes per 8 rows; V (MN-major) the next region along the head dim and 1024 bytes
// per 8 keys. PAL_WG_VSWAP bit 0 swaps V's pair (a check switch; 0 is the PTX ISA's reading).
#if PAL_WG_VSWAP & 1
#define V_LBO 1024
#define V_SBO (BN * 128)
#else
#define V_LBO (BN * 128)
#define V_SBO 1024
#endif

static_assert(HD == 64 || HD == 128, "wgmma prefill: head dim 64 or 128");
static_assert(BN == 64 || BN == 128, "wgmma prefill: 64 or 128 keys per tile");
static_assert(NTHREADS % CHUNKS == 0 && ROWSTEP % 8 == 0 && (BN * CHUNKS) % NTHREADS == 0, "whole copy passes");
static_assert(BN <= NTHREADS, "one lookup thread per key row");

typedef PAL_KV kv_t;

// S (+)= Q K^T over one 16-wide k-step, and O += P V over 16 keys, for this warpgroup's 64 rows
// (one m-tile of 16 rows per warp: the [1][..][4] accumulators of prefill_tile.cuh).
__device__ __forceinline__ void wg_qk(float (&s)[1][NT][4], unsigned long long dq, unsigned long long dk, int acc) {
#if BN == 64
    wg_ss_n64(&s[0][0][0], dq, dk, acc, kv_t());
#else
    wg_ss_n128(&s[0][0][0], dq, dk, acc, kv_t());
#endif
}
__device__ __forceinline__ void wg_pv(float (&o)[1][DT][4], const unsigned* a, unsigned long long dv) {
#if HD == 64
    wg_rs_n64(&o[0][0][0], a, dv, kv_t());
#else
    wg_rs_n128(&o[0][0][0], a, dv, kv_t());
#endif
}

extern "C" __global__ void __launch_bounds__(NTHREADS, PAL_PREFILL_MIN_BLOCKS)
pal_prefill_wg(PAL_PREFILL_PARAMS) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    // The swizzle works on address bits, so the tiles start on a 1024-byte boundary (the host
    // adds 1 KiB of slack: tc_shared_bytes).
    const unsigned base = (smem_addr(smem_raw) + 1023u) & ~1023u;
    unsigned char* smem = smem_raw + (base - smem_addr(smem_raw));
    const unsigned sq = base;                 // [BM rows]
    const unsigned sk = sq + BM * HD * 2;     // [2][BN rows]
    const unsigned sv = sk + 2 * TILE_BYTES;  // [2][BN rows]
    int* s_slot = reinterpret_cast<int*>(smem + (BM + 4 * BN) * HD * 2);  // [2][BN] pool slots
    const int* s_pid = s_slot + 2 * BN;  // [2][BN] page ids, written by cp.async (fetch_pid)

    const int* ti = tiles + 6 * blockIdx.x;
    const int q_start = ti[1], n_new = ti[2], total = ti[3], row0 = ti[4];
    const int h = blockIdx.y;
    const int hist = total - n_new;
    const int hq = num_kv_heads * group;
    const int rows = n_new * group;
    const int tid = threadIdx.x, lane = tid & 31;
    const int wg = tid >> 7, warp_in_wg = (tid >> 5) & 3;
    const int* pages = indices + ti[5];
    const long token_stride = (long)num_kv_heads * HD;
    const int page_shift = (page_size & (page_size - 1)) == 0 ? __ffs(page_size) - 1 : -1;

    // Copy mapping: a row's CHUNKS chunks go to consecutive threads (a warp reads whole rows);
    // a thread's chunk is fixed, its rows ROWSTEP apart (a multiple of 8, so its swizzle phase and
    // offset inside a region are fixed too).
    const int my_ch = tid % CHUNKS;
    const int my_row = tid / CHUNKS;
    constexpr unsigned PASS_BYTES = ROWSTEP * 128;
    // Offset in a tile of R rows: region my_ch / 8 of R x 128 bytes, then the swizzled chunk.
    const unsigned my_off = swz128(my_row, my_ch & 7);
    const unsigned q_off = my_off + (unsigned)(my_ch >> 3) * (BM * 128);
    const unsigned kv_dst = sk + my_off + (unsigned)(my_ch >> 3) * (BN * 128);  // in K buffer 0

    // Q tile: packed row pr = (token pr / group, head pr % group), stepped, not divided.
    {
        int pr = row0 + my_row;
        int t = pr / group, gi = pr - t * group;
        const int dt = ROWSTEP / group, dg = ROWSTEP - dt * group;
#pragma unroll
        for (int k = 0; k < QLOADS; ++k, pr += ROWSTEP) {
            const bool valid = pr < rows;  // rows past the new tokens: zeros
            const kv_t* src = q + ((long)(q_start + t) * hq + h * group + gi) * HD + my_ch * 8;
            cp_async16(sq + q_off + k * PASS_BYTES, valid ? src : q, valid);
            t += dt;
            gi += dg;
            if (gi >= group) {
                gi -= group;
                ++t;
            }
        }
    }

    // Key range of the block and this split's share of its tiles.
    const int split = blockIdx.z;
    const PrefillRange kr = prefill_range<BN>(row0, BM, rows, group, hist, total, opts, split, num_splits);
    const int lo_block = kr.lo_block, hi_block = kr.hi_block, t_begin = kr.first_tile, n_tiles = kr.n_tiles;

    // This thread's rows in the accumulators: warp w of a warpgroup holds its rows 16w..16w+15,
    // lane-quad rows g and g + 8 (the mma.m16n8 layout).
    const int first_row = row0 + wg * 64 + warp_in_wg * 16 + (lane >> 2);
    int pos_r[1][2];
    row_positions(pos_r, first_row, rows, group, hist);

    // Page lookups three tiles ahead (prefill.cu explains the staging): key row `tid` of tile
    // `it`; its page id is fetched by cp.async two tiles before it becomes a slot.
    const char* k_word = reinterpret_cast<const char*>(k_cache + (long)h * HD) + my_ch * 16;
    const char* v_word = reinterpret_cast<const char*>(v_cache + (long)h * HD) + my_ch * 16;
    const unsigned token_bytes = (unsigned)token_stride * 2;
    // Key row `tid` of tile `it` is key0 + it * BN; it is read if below key_end (the block's range
    // cut to this split's tiles).
    const int key0 = lo_block + t_begin * BN + tid;
    const int key_end = min(hi_block, lo_block + (t_begin + n_tiles) * BN);
    auto key_of = [&](int it) { return key0 + it * BN; };
    auto key_valid = [&](int it) { return key_of(it) < key_end; };
    auto page_of = [&](int j) { return page_shift >= 0 ? (j >> page_shift) : j / page_size; };
    auto fetch_pid = [&](int it) {  // page id of tile `it` -> s_pid[it & 1][tid]
        if (key_valid(it)) cp_async4(smem_addr(s_pid + (it & 1) * BN + tid), pages + page_of(key_of(it)));
    };
    auto slot_from_pid = [&](int it) {  // pool slot of tile `it`, its page id landed
        if (!key_valid(it)) return -1;
        const int j = key_of(it), pg = page_of(j);
        const int pid = s_pid[(it & 1) * BN + tid];  // landed: cp_async_wait_all ran since fetch_pid
        return pid * page_size + (j - pg * page_size);
    };
    auto issue = [&](int buf) {  // tile with slots in s_slot[buf] -> K/V buffer `buf`
        const unsigned dk = kv_dst + buf * TILE_BYTES, dv = dk + (sv - sk);  // sv - sk: a constant
        const int* slots = s_slot + buf * BN + my_row;
        int slot_k[LOADS];
#pragma unroll
        for (int k = 0; k < LOADS; ++k) slot_k[k] = slots[k * ROWSTEP];
#pragma unroll
        for (int k = 0; k < LOADS; ++k) {
            // Past the range: zeros from row 0 (P is 0 there, and 0 * garbage could be NaN).
            const unsigned long long off = (unsigned long long)(unsigned)max(slot_k[k], 0) * token_bytes;
            cp_async16(dk + k * PASS_BYTES, k_word + off, slot_k[k] >= 0);
            cp_async16(dv + k * PASS_BYTES, v_word + off, slot_k[k] >= 0);
        }
    };

    if (tid < BN) {
        s_slot[tid] = slot_of(page_lookup(pages, key_of(0), key_valid(0), page_shift, page_size), page_size);
        s_slot[BN + tid] = slot_of(page_lookup(pages, key_of(1), key_valid(1), page_shift, page_size), page_size);
        fetch_pid(2);
    }
    __syncthreads();
    if (n_tiles > 0) issue(0);
    cp_async_commit();

    float o[1][DT][4];
#pragma unroll
    for (int d = 0; d < DT; ++d) o[0][d][0] = o[0][d][1] = o[0][d][2] = o[0][d][3] = 0.f;
    float m[1][2] = {{PAL_NEG_INF, PAL_NEG_INF}}, l[1][2] = {{0.f, 0.f}};
    const float scale_log2 = opts.scale * PAL_LOG2E;
    const bool fold = PAL_PREFILL_FOLD && !(opts.soft_cap > 0.f) && scale_log2 > 0.f;  // prefill.cu says why
    const float e_scale = fold ? scale_log2 : 1.f;
    // Descriptors of Q (this warpgroup's 64 rows), K and V. A k-step of 16 columns of Q and K is
    // 32 bytes along a 128-byte row, four steps a region; one of 16 keys of V is 16 rows on.
    const unsigned long long q_desc = wg_desc(sq + wg * 64 * 128, 16, 1024);
    const unsigned long long k_desc = wg_desc(sk, 16, 1024);
    const unsigned long long v_desc = wg_desc(sv, V_LBO, V_SBO);
    auto qk_step = [](int kk, int rows) {  // descriptor offset (16-byte units) of k-step kk
        return (unsigned long long)((kk >> 2) * rows * 128 + (kk & 3) * 32) >> 4;
    };
    constexpr unsigned long long VSTEP = (16 * 128) >> 4, BUF = TILE_BYTES >> 4;

    for (int it = 0; it < n_tiles; ++it) {
        cp_async_wait_all();
        fence_proxy_async();
        __syncthreads();
        if (it + 1 < n_tiles) issue((it + 1) & 1);
        if (tid < BN) {
            s_slot[(it & 1) * BN + tid] = slot_from_pid(it + 2);
            fetch_pid(it + 3);
        }
        cp_async_commit();
        const unsigned long long buf = (it & 1) * BUF;
        const int j0 = lo_block + (t_begin + it) * BN;

        float s[1][NT][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) wg_qk(s, q_desc + qk_step(kk, BM), k_desc + buf + qk_step(kk, BN), kk > 0);
        wg_commit();
        wg_wait_pinned(s[0]);

        const bool full = j0 >= kr.lo_all && j0 + BN <= kr.hi_all;
        scores_to_logits(s, pos_r, full, j0, lane, total, fold, opts);
        online_softmax(s, m, l, o, e_scale);

        // O += P V, 16 keys per wgmma.
        unsigned a[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) pack_p(a[kk], s[0], kk, kv_t());
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) wg_pv(o, a[kk], v_desc + buf + kk * VSTEP);
        wg_commit();
        wg_wait_pinned(o[0]);
    }
    cp_async_wait_all();

    write_rows<HD>(o, m, l, e_scale, first_row, rows, group, q_start, hq, h, lane, out, part_o, part_lse, split,
                   num_splits, num_tokens);
}
