// PAL CUDA kernels: shared definitions. Compiled at run time by NVRTC; every kernel file is
// specialised by the macros PAL_T (storage type of q/out), PAL_KV (storage type of the pool),
// PAL_HEAD_DIM and PAL_GROUP, defined by the host before this header.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define PAL_NEG_INF (-__int_as_float(0x7f800000))

// 8 storage elements kept packed in registers (one 16-byte word for 16-bit types, two for f32)
// and widened to f32 only when used: halves the registers held by loads in flight.
template <typename T> struct Pack8;
template <> struct Pack8<float> {
    float4 a, b;
    __device__ __forceinline__ void load(const float* p) {
        a = *reinterpret_cast<const float4*>(p);
        b = *reinterpret_cast<const float4*>(p + 4);
    }
    __device__ __forceinline__ void load_shared(const float* p) { load(p); }
    __device__ __forceinline__ void zero() { a = make_float4(0.f, 0.f, 0.f, 0.f); b = a; }
    __device__ __forceinline__ void widen(float* x) const {
        x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w; x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    }
};
// A 16-byte streaming load of read-once K/V: no L1 allocation, and (with PAL_LOAD_HINT) a hint
// that L2 fetch the whole 256-byte block (one head row of 128 bf16).
__device__ __forceinline__ uint4 load_stream(const void* p) {
    uint4 w;
#if PAL_LOAD_HINT
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(w.x), "=r"(w.y), "=r"(w.z), "=r"(w.w)
                 : "l"(p));
#else
    w = *reinterpret_cast<const uint4*>(p);
#endif
    return w;
}

template <> struct Pack8<__nv_bfloat16> {
    uint4 w;
    __device__ __forceinline__ void load(const __nv_bfloat16* p) { w = load_stream(p); }
    __device__ __forceinline__ void load_shared(const __nv_bfloat16* p) { w = *reinterpret_cast<const uint4*>(p); }
    __device__ __forceinline__ void zero() { w = make_uint4(0u, 0u, 0u, 0u); }
    __device__ __forceinline__ void widen(float* x) const {
        const unsigned int u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            x[2 * i] = __uint_as_float(u[i] << 16);
            x[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
        }
    }
};
template <> struct Pack8<__half> {
    uint4 w;
    __device__ __forceinline__ void load(const __half* p) { w = load_stream(p); }
    __device__ __forceinline__ void load_shared(const __half* p) { w = *reinterpret_cast<const uint4*>(p); }
    __device__ __forceinline__ void zero() { w = make_uint4(0u, 0u, 0u, 0u); }
    __device__ __forceinline__ void widen(float* x) const {
        const __half2* h = reinterpret_cast<const __half2*>(&w);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float2 f = __half22float2(h[i]);
            x[2 * i] = f.x;
            x[2 * i + 1] = f.y;
        }
    }
};

// Store 8 f32 values as 8 storage elements (one 16-byte word for 16-bit types).
__device__ __forceinline__ void store8(float* p, const float* x) {
    *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
    *reinterpret_cast<float4*>(p + 4) = make_float4(x[4], x[5], x[6], x[7]);
}
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float* x) {
    uint4 w;
    unsigned int* u = reinterpret_cast<unsigned int*>(&w);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        __nv_bfloat162 h = __floats2bfloat162_rn(x[2 * i], x[2 * i + 1]);
        u[i] = *reinterpret_cast<unsigned int*>(&h);
    }
    *reinterpret_cast<uint4*>(p) = w;
}
__device__ __forceinline__ void store8(__half* p, const float* x) {
    uint4 w;
    unsigned int* u = reinterpret_cast<unsigned int*>(&w);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        __half2 h = __floats2half2_rn(x[2 * i], x[2 * i + 1]);
        u[i] = *reinterpret_cast<unsigned int*>(&h);
    }
    *reinterpret_cast<uint4*>(p) = w;
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Options shared by the attention kernels (passed by value).
struct AttnOpts {
    float scale;        // softmax scale
    float soft_cap;     // <= 0: off
    int window_left;    // < 0: off
    int causal;         // prefill only
};

// tanh through ex2.approx (relative error ~2^-22). The kernels compile with --use_fast_math,
// which turns tanhf into tanh.approx (relative error 2^-11): that took f32 outputs with a
// soft-cap past their 1e-5 tolerance (a selftest case failed on an H100).
__device__ __forceinline__ float tanh_f32(float x) {
    return 1.f - 2.f / (__expf(2.f * x) + 1.f);
}

__device__ __forceinline__ float apply_cap(float s, float cap) {
    return cap > 0.f ? cap * tanh_f32(s / cap) : s;
}

// --- cp.async (sm_80+): global -> shared copies that bypass registers ---
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// 16-byte global -> shared copy; `valid == false` writes zeros (src-size 0) and reads nothing.
// PAL_CP_PREFETCH (0, 64, 128 or 256) adds the L2 prefetch-size hint: the L2 fetches that many
// bytes around the sector from DRAM (the copies of a tile cover whole rows anyway).
#if PAL_CP_PREFETCH == 256
#define PAL_CP_HINT ".L2::256B"
#elif PAL_CP_PREFETCH == 128
#define PAL_CP_HINT ".L2::128B"
#elif PAL_CP_PREFETCH == 64
#define PAL_CP_HINT ".L2::64B"
#else
#define PAL_CP_HINT ""
#endif
// An invalid copy writes zeros: the ignore-src predicate, set from `valid` directly (a source
// size of `valid ? 16 : 0` made ptxas rebuild the predicate from the size, ~3 instructions per
// copy when `valid` is a sign test).
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool valid) {
    asm volatile("{\n .reg .pred ign;\n setp.eq.u32 ign, %2, 0;\n cp.async.cg.shared.global" PAL_CP_HINT
                 " [%0], [%1], 16, ign;\n}\n" ::"r"(dst), "l"(src), "r"((unsigned)valid) : "memory");
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    cp_async16(smem_addr(dst), src, valid);
}
// 4-byte global -> shared copy (through L1: .cg takes 16 bytes only). Lets a thread stage a value
// it needs a tile later without a register waiting on the load (prefill_wg.cu's page ids: an
// outstanding load held the warpgroup's next wgmma).
__device__ __forceinline__ void cp_async4(unsigned dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
// Wait until at most N committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

