// Hopper warpgroup MMA (wgmma, sm_90a) building blocks for the wgmma prefill: shared-memory
// matrix descriptors, the fence / commit / wait protocol, and the m64nNk16 instructions it uses
// (f32 accumulators; A and B from shared memory, or A from registers).
#pragma once

// Shared-memory operand tiles use the 128-byte swizzle (the layout TMA writes and CUTLASS uses):
// a tile of rows of 16-bit elements is split into column blocks of 64 elements (128 bytes), each
// block a [rows][128 bytes] region; 16-byte chunk `c` of row `r` of a region sits at
// r * 128 + ((c ^ (r % 8)) * 16). Eight rows form a 1024-byte atom, and regions start on 1024-byte
// boundaries (the hardware swizzles on address bits 4-6 ^ 7-9). A warp copies whole 128-byte
// rows: global reads are full lines (the unswizzled "core matrix" layout made each warp touch 8
// half-lines, and the L2 ran at 80% of its request rate) and the shared writes are conflict-free.
__device__ __forceinline__ unsigned swz128(int row, int chunk) {
    return (unsigned)(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// Descriptor of a 128-byte-swizzled operand at shared byte address `addr` (PTX ISA "matrix
// descriptor": start address, leading and stride byte offsets >> 4, layout type 1 = 128B swizzle
// in bits 62-63). K-major (Q, K): `sbo` = 1024, the next 8 rows; `lbo` unused (a k-step of 16
// elements stays inside a 128-byte row, and the caller moves the start address 32 bytes per
// step). MN-major (V read transposed): `lbo` = the next 64-element column block (region), `sbo` =
// 1024, the next 8 keys.
__device__ __forceinline__ unsigned long long wg_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)((lbo >> 4) & 0x3FFF) << 16) |
           ((unsigned long long)((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}
// Order register writes before the next wgmma reads them (accumulators, A fragments).
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Wait for every committed group, then pin the accumulators it wrote (`acc`: ROWS x 4 floats):
// each pin is an empty asm ordered after the wait (both volatile) that every later use of the
// register depends on, so no read of an accumulator moves above the wait.
template <int ROWS> __device__ __forceinline__ void wg_wait_pinned(float (&acc)[ROWS][4]) {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(acc[r][e])::"memory");
}
// Make this thread's generic-proxy shared-memory writes (cp.async, stores) visible to wgmma's
// async proxy; then a barrier.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Accumulator operand lists: N/2 f32 registers of an m64nN tile per thread.
#define PAL_WG_D32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define PAL_WG_C32(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define PAL_WG_D64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define PAL_WG_C64(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// The m64nNk16 products with f32 accumulators for one 16-bit input type (PTX name TY):
// wg_ss_nN: D (+)= A B, A and B from shared memory, both K-major (`accumulate` 0: D = A B);
// wg_rs_nN: D += A B, A from registers (per warp the mma.m16n8k16 A fragment), B from shared
// memory MN-major (transposed).
#define PAL_WG_PRODUCTS(TY, CTY)                                                                                  \
    __device__ __forceinline__ void wg_ss_n64(float* d, unsigned long long da, unsigned long long db, int accumulate, \
                                              CTY) {                                                               \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                  \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " PAL_WG_D32 ", %32, %33, p, 1, 1, 0, 0;\n}\n" \
                     : PAL_WG_C32(d)                                                                               \
                     : "l"(da), "l"(db), "r"(accumulate));                                                         \
    }                                                                                                              \
    __device__ __forceinline__ void wg_ss_n128(float* d, unsigned long long da, unsigned long long db, int accumulate, \
                                               CTY) {                                                              \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                  \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " PAL_WG_D64 ", %64, %65, p, 1, 1, 0, 0;\n}\n" \
                     : PAL_WG_C64(d)                                                                               \
                     : "l"(da), "l"(db), "r"(accumulate));                                                         \
    }                                                                                                              \
    __device__ __forceinline__ void wg_rs_n64(float* d, const unsigned* a, unsigned long long db, CTY) {          \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                  \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " PAL_WG_D32                        \
                     ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"                                                \
                     : PAL_WG_C32(d)                                                                               \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));                              \
    }                                                                                                              \
    __device__ __forceinline__ void wg_rs_n128(float* d, const unsigned* a, unsigned long long db, CTY) {         \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                  \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " PAL_WG_D64                       \
                     ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"                                                \
                     : PAL_WG_C64(d)                                                                               \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));                              \
    }
PAL_WG_PRODUCTS("bf16", __nv_bfloat16)
PAL_WG_PRODUCTS("f16", __half)
#undef PAL_WG_PRODUCTS
