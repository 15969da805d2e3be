// Tensor-core building blocks shared by the prefill and the tensor-core decode kernels: their
// shared-memory row layout, ldmatrix loads from it, the m16n8k16 mma with f32 accumulators, and
// packing two f32 into one register of 16-bit values. sm_80+; f16 and bf16 only.
#pragma once

// Shared-memory rows for ldmatrix. With PAL_SMEM_SWIZZLE and a multiple of 8 16-byte chunks per
// row (head dims 64, 128, 256): rows packed without padding, chunk `ch` of row `r` stored at chunk
// `ch ^ (r & 7)`. Every row then starts 128-byte aligned, so a warp's cp.async copies land in
// whole 128-byte shared segments (with 16-byte padding, odd rows straddled segments and the
// copies were split and fetched twice from L2: Nsight counted 1.5x the L2 sectors of the DRAM
// reads), and the 8 rows an ldmatrix reads still fall in 8 different bank groups. Otherwise rows
// are padded by 16 bytes, which keeps ldmatrix conflict-free the same way.
#define SWZ (PAL_SMEM_SWIZZLE && (PAL_HEAD_DIM / 8) % 8 == 0)
#define STRIDE (SWZ ? PAL_HEAD_DIM : PAL_HEAD_DIM + 8)  // row pitch, elements
// Element offset of chunk `ch` of row `r` (row offsets of tiles must be multiples of 8 rows).
__device__ __forceinline__ int so(int r, int ch) { return r * STRIDE + (SWZ ? (ch ^ (r & 7)) : ch) * 8; }
#define EB 2                        // bytes per element (f16/bf16)
#define ROW_BYTES (STRIDE * EB)     // row pitch, bytes

// ldmatrix addresses in the hot loops: a per-lane base (the lane's row, plus, unswizzled, its
// column bit: `ldsm_lane_col`) and a column offset `ldsm_col(c0, y)` for the even compile-time
// chunk c0. Every row an ldmatrix lane addresses has (row & 7) == (lane & 7), and its chunk is
// c0 plus a per-lane bit, so the swizzled chunk is (c0 & ~7) | ((c0 & 7) ^ y) with
// y = bit ^ (lane & 7) (`ldsm_y`) fixed per lane: one logic op per distinct c0 & 7, which the
// compiler keeps out of the tile loop; unswizzled the offset is a compile-time constant.
__device__ __forceinline__ int ldsm_y(int bit, int lane) { return bit ^ (lane & 7); }
__device__ __forceinline__ int ldsm_lane_col(int bit) { return SWZ ? 0 : bit * 8 * EB; }
__device__ __forceinline__ int ldsm_col(int c0, int y) { return (SWZ ? ((c0 & ~7) | ((c0 & 7) ^ y)) : c0) * 8 * EB; }

// ldmatrix from a 32-bit shared-memory address. Hot loops keep per-lane base addresses in this
// form and add compile-time offsets: ptxas folds those into the instruction's immediate, where
// offsets added to generic pointers before the conversion cost an address computation each.
__device__ __forceinline__ void ldsm_x4(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned* r, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4(unsigned* r, const void* p) { ldsm_x4(r, smem_addr(p)); }
__device__ __forceinline__ void ldsm_x4_trans(unsigned* r, const void* p) { ldsm_x4_trans(r, smem_addr(p)); }

// c[16x8] += a[16x16] * b[16x8], f32 accumulators.
__device__ __forceinline__ void mma16816(float* c, const unsigned* a, const unsigned* b, __nv_bfloat16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma16816(float* c, const unsigned* a, const unsigned* b, __half) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Two f32 -> one 32-bit register of two 16-bit values (the lower column in the low half).
__device__ __forceinline__ unsigned pack2(float lo, float hi, __nv_bfloat16) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}
__device__ __forceinline__ unsigned pack2(float lo, float hi, __half) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}
