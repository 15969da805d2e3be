// How a split-KV decode block finishes, shared by `pal_decode`, `pal_decode_pipe` and
// `pal_decode_tc`. A block computes one chunk of one query row for G query heads; the host says
// through the kernels' `finish` argument what it does with the result:
#define PAL_FINISH_PARTIAL 0  // write the chunk's partial (o, lse); the `pal_merge` kernel combines them
#define PAL_FINISH_OUT 1      // every row is one chunk: write the output rows
#define PAL_FINISH_MERGE 2    // write the partial; the last of the row's chunks to finish merges them
//
// Why merge in the attention kernel: the split cells are the short ones (B=1, B=8 at 1k-4k: tens
// of µs), where the second launch, its drain and its own L2 round trips cost a few percent. With
// PAL_FINISH_MERGE every block counts itself in `merge_count` (one counter per query row and head
// block, zero before the launch); the block that brings the count to the row's number of chunks
// merges the row's partials and resets the counter to zero, so the next launch (or graph replay)
// needs no memset. The classic "last block" pattern: partial writes, __threadfence, count; the
// last block fences again before it reads the others' partials (through L2: __ldcg).

#define SPLIT_THREADS 128  // threads of every decode block (WARPS * 32 in each kernel)
#define SPLIT_SLICE 64     // chunks whose lse a merging block stages in shared memory at once

// Called by every thread of the block after the block wrote the partial rows head0 .. head0 +
// G_ - 1 of `chunk`'s query row `qrow` (part_o [chunks][hq][HD_], part_lse [chunks][hq]).
// `scratch`: shared memory the block no longer needs, at least G_ * SPLIT_SLICE floats. The
// helper declares no shared memory of its own and is not inlined: either changes the attention
// kernels for every launch, merging or not. Inlined, it changed the main loop's register
// allocation (head dim 64: 9% more instructions per tile). With 1 KB of static shared memory here
// the bandwidth-bound cells ran 4-7% slower on an H100, the main loop's SASS unchanged: the
// dynamic region then started 16 bytes past a 128-byte boundary, so each 256-byte K/V row copied
// by cp.async straddled three 128-byte segments (the L2 refetch BENCHMARKS.md describes for padded
// rows; h100_smem_align_ab.txt). The kernels now declare their dynamic shared memory 128-byte
// aligned, which keeps it so whatever static shared memory is added.
template <int G_, int HD_, typename T>
__device__ __noinline__ void merge_if_last(const float* __restrict__ part_o, const float* __restrict__ part_lse,
                                           const int* __restrict__ row_chunk_indptr, int* __restrict__ merge_count,
                                           T* __restrict__ out, int qrow, int hq, int head0, float* scratch) {
    const int c0 = row_chunk_indptr[qrow], c1 = row_chunk_indptr[qrow + 1];
    int* count = merge_count + ((long)qrow * gridDim.y + blockIdx.y) * gridDim.z + blockIdx.z;
    __threadfence();  // this thread's partial writes are visible device-wide before the count
    // Thread 0 counts the block only once every thread has fenced: the count is taken as the
    // argument of the barrier below, i.e. before it, and without this one thread 0 could count
    // while other warps were still writing, and the last block read a stale partial (seen under
    // compute-sanitizer racecheck, whose scheduling widened the window: a wrong f32 row-path
    // prefill, max error 0.49).
    __syncthreads();
    // The barrier also ends the block's use of `scratch` and broadcasts thread 0's verdict.
    const bool last = __syncthreads_or(threadIdx.x == 0 && atomicAdd(count, 1) == c1 - c0 - 1);
    if (!last) return;
    __threadfence();  // the other blocks' partials, counted before us, are visible to our reads
    if (threadIdx.x == 0) *count = 0;
    float (*s_lse)[SPLIT_SLICE] = reinterpret_cast<float (*)[SPLIT_SLICE]>(scratch);

    // Each thread merges QPT quads (4 consecutive dims of one head) with a running max over the
    // slices; the partial o loads of a slice are independent, so they overlap.
    constexpr int QUADS = G_ * HD_ / 4, QPT = (QUADS + SPLIT_THREADS - 1) / SPLIT_THREADS;
    float mm[QPT], total[QPT];
    float4 acc[QPT];
#pragma unroll
    for (int k = 0; k < QPT; ++k) {
        mm[k] = PAL_NEG_INF;
        total[k] = 0.f;
        acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    for (int s0 = c0; s0 < c1; s0 += SPLIT_SLICE) {
        const int n = min(SPLIT_SLICE, c1 - s0);
        __syncthreads();  // the previous slice's lse is consumed
        for (int i = threadIdx.x; i < G_ * n; i += SPLIT_THREADS) {
            const int g = i / n, c = i - g * n;
            s_lse[g][c] = __ldcg(&part_lse[(long)(s0 + c) * hq + head0 + g]);
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < QPT; ++k) {
            const int qd = threadIdx.x + k * SPLIT_THREADS;
            if (qd >= QUADS) break;
            const int g = qd / (HD_ / 4), d = (qd % (HD_ / 4)) * 4;
            float mx = mm[k];
            for (int c = 0; c < n; ++c) mx = fmaxf(mx, s_lse[g][c]);
            if (mx == PAL_NEG_INF) continue;  // no chunk so far saw a key
            const float r = __expf(mm[k] - mx);  // mm = -inf -> 0
            float4 a = make_float4(acc[k].x * r, acc[k].y * r, acc[k].z * r, acc[k].w * r);
            float t = total[k] * r;
            const float* src = part_o + ((long)s0 * hq + head0 + g) * HD_ + d;
#pragma unroll 8
            for (int c = 0; c < n; ++c) {
                const float w = __expf(s_lse[g][c] - mx);  // empty chunk: lse -inf -> 0
                const float4 o = __ldcg(reinterpret_cast<const float4*>(src + (long)c * hq * HD_));
                a.x = fmaf(w, o.x, a.x);
                a.y = fmaf(w, o.y, a.y);
                a.z = fmaf(w, o.z, a.z);
                a.w = fmaf(w, o.w, a.w);
                t += w;
            }
            mm[k] = mx;
            acc[k] = a;
            total[k] = t;
        }
    }
#pragma unroll
    for (int k = 0; k < QPT; ++k) {
        const int qd = threadIdx.x + k * SPLIT_THREADS;
        if (qd >= QUADS) break;
        const int g = qd / (HD_ / 4), d = (qd % (HD_ / 4)) * 4;
        const float inv = total[k] > 0.f ? 1.f / total[k] : 0.f;
        T* dst = out + ((long)qrow * hq + head0 + g) * HD_ + d;
        dst[0] = from_f32<T>(acc[k].x * inv);
        dst[1] = from_f32<T>(acc[k].y * inv);
        dst[2] = from_f32<T>(acc[k].z * inv);
        dst[3] = from_f32<T>(acc[k].w * inv);
    }
}
