// KV append with fused RoPE. One block per new token: rotate its q heads in place and write its
// rotated k and its v into the token's slot of the pool. Padding tokens (slot < 0) are skipped.
// The cos/sin table is the f32 table of `Rope`, [max_position, rotary_dim / 2].

#define HD PAL_HEAD_DIM

__device__ __forceinline__ void rope_pair(int i, int half, int style, int* a, int* b) {
    if (style == 0) { *a = 2 * i; *b = 2 * i + 1; }   // adjacent pairs (GGUF)
    else { *a = i; *b = i + half; }                   // half split (NeoX / HF)
}

// Rotate or copy one unit of 8 dims of a head row `x` (length HD) into `y` (may alias `x`).
// Adjacent pairs: dims [c, c+8) are 4 whole pairs. Half split: the unit is pairs [c, c+8) and
// touches dims [c, c+8) and [c+half, c+half+8). Dims at or past rotary_dim are copied.
template <typename S, typename D>
__device__ __forceinline__ void rope_unit(const S* x, D* y, int c, int rotary_dim, int style, const float* cs, const float* sn) {
    const int half = rotary_dim / 2;
    float a[8], b[8];
    Pack8<S> pa;
    pa.load(x + c);
    pa.widen(a);
    if (c >= rotary_dim || (style == 1 && c >= half)) {
        store8(y + c, a);  // pass-through (half-split units never start in [half, rotary_dim))
        return;
    }
    if (style == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float cc = cs[c / 2 + i], ss = sn[c / 2 + i];
            const float xa = a[2 * i], xb = a[2 * i + 1];
            b[2 * i] = xa * cc - xb * ss;
            b[2 * i + 1] = xa * ss + xb * cc;
        }
        store8(y + c, b);
    } else {
        float hi[8], lo_out[8], hi_out[8];
        Pack8<S> pb;
        pb.load(x + c + half);
        pb.widen(hi);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float cc = cs[c + i], ss = sn[c + i];
            lo_out[i] = a[i] * cc - hi[i] * ss;
            hi_out[i] = a[i] * ss + hi[i] * cc;
        }
        store8(y + c, lo_out);
        store8(y + c + half, hi_out);
    }
}

// Vectorised append: 16-byte loads and stores, 8 dims per thread step, several tokens per block.
// Requires rotary_dim % 16 == 0 (so half-split units are whole 8-dim words); else `pal_append`.
// Tokens per block: PAL_APPEND_TOKENS (tuning::append_tokens_per_block).
#define TOKENS_PER_BLOCK PAL_APPEND_TOKENS
extern "C" __global__ void __launch_bounds__(128)
pal_append_vec(PAL_T* __restrict__ q, const PAL_T* __restrict__ k_new, const PAL_T* __restrict__ v_new,
               const int* __restrict__ positions, const int* __restrict__ slots,
               const float* __restrict__ cos_t, const float* __restrict__ sin_t,
               PAL_KV* __restrict__ k_cache, PAL_KV* __restrict__ v_cache,
               int num_tokens, int num_qo_heads, int num_kv_heads, int rotary_dim, int style, int use_rope,
               long num_slots, int max_position) {
    const int units = HD / 8;
    const int half = rotary_dim / 2;
    for (int tt = 0; tt < TOKENS_PER_BLOCK; ++tt) {
        const int t = blockIdx.x * TOKENS_PER_BLOCK + tt;
        if (t >= num_tokens) return;
        const int slot = slots[t];
        if (slot < 0 || slot >= num_slots || positions[t] < 0 || (use_rope && positions[t] >= max_position)) continue;
        const float* cs = cos_t + (long)positions[t] * half;
        const float* sn = sin_t + (long)positions[t] * half;
        const int rot = use_rope ? rotary_dim : 0;
        // Units per head: the half-split rotary region is covered by its first half's units.
        if (use_rope) {
            for (int e = threadIdx.x; e < num_qo_heads * units; e += blockDim.x) {
                const int h = e / units, c = (e % units) * 8;
                if (c >= rotary_dim || (style == 1 && c >= half)) continue;  // q outside the rotary dims: unchanged
                PAL_T* x = q + ((long)t * num_qo_heads + h) * HD;
                rope_unit(x, x, c, rotary_dim, style, cs, sn);
            }
        }
        const long kv_row = (long)slot * num_kv_heads * HD;
        for (int e = threadIdx.x; e < num_kv_heads * units; e += blockDim.x) {
            const int h = e / units, c = (e % units) * 8;
            const PAL_T* kx = k_new + ((long)t * num_kv_heads + h) * HD;
            PAL_KV* ky = k_cache + kv_row + (long)h * HD;
            if (!(style == 1 && rot > 0 && c >= half && c < rot)) rope_unit(kx, ky, c, rot, style, cs, sn);
            float vv[8];
            Pack8<PAL_T> pv;
            pv.load(v_new + ((long)t * num_kv_heads + h) * HD + c);
            pv.widen(vv);
            store8(v_cache + kv_row + (long)h * HD + c, vv);
        }
    }
}

extern "C" __global__ void __launch_bounds__(128)
pal_append(PAL_T* __restrict__ q,              // [T, Hq, HD], rotated in place
           const PAL_T* __restrict__ k_new,    // [T, Hkv, HD]
           const PAL_T* __restrict__ v_new,    // [T, Hkv, HD]
           const int* __restrict__ positions,  // [T]
           const int* __restrict__ slots,      // [T], < 0 = padding
           const float* __restrict__ cos_t,    // [max_pos, half]
           const float* __restrict__ sin_t,
           PAL_KV* __restrict__ k_cache, PAL_KV* __restrict__ v_cache,
           int num_qo_heads, int num_kv_heads, int rotary_dim, int style, int use_rope,
           long num_slots, int max_position) {
    const int t = blockIdx.x;
    const int slot = slots[t];
    // Padding, and (defensively: the host validates) anything outside the pool or the table.
    if (slot < 0 || slot >= num_slots || positions[t] < 0 || (use_rope && positions[t] >= max_position)) return;
    const int half = rotary_dim / 2;
    const float* cs = cos_t + (long)positions[t] * half;
    const float* sn = sin_t + (long)positions[t] * half;
    const long kv_row = (long)slot * num_kv_heads * HD;
    // q: rotate the pairs in place (heads x pairs spread over the threads).
    if (use_rope) {
        for (int e = threadIdx.x; e < num_qo_heads * half; e += blockDim.x) {
            const int h = e / half, i = e % half;
            int a, b;
            rope_pair(i, half, style, &a, &b);
            PAL_T* x = q + ((long)t * num_qo_heads + h) * HD;
            const float xa = to_f32(x[a]), xb = to_f32(x[b]);
            x[a] = from_f32<PAL_T>(xa * cs[i] - xb * sn[i]);
            x[b] = from_f32<PAL_T>(xa * sn[i] + xb * cs[i]);
        }
    }
    // k: rotated pairs, then the dims past rotary_dim copied; v: copied.
    for (int e = threadIdx.x; e < num_kv_heads * HD; e += blockDim.x) {
        const int h = e / HD, d = e % HD;
        const PAL_T* kx = k_new + ((long)t * num_kv_heads + h) * HD;
        float val;
        if (use_rope && d < rotary_dim) {
            int i, a, b;
            if (style == 0) { i = d / 2; } else { i = d < half ? d : d - half; }
            rope_pair(i, half, style, &a, &b);
            const float xa = to_f32(kx[a]), xb = to_f32(kx[b]);
            val = d == a ? xa * cs[i] - xb * sn[i] : xa * sn[i] + xb * cs[i];
        } else {
            val = to_f32(kx[d]);
        }
        k_cache[kv_row + e] = from_f32<PAL_KV>(val);
        v_cache[kv_row + e] = from_f32<PAL_KV>(to_f32(v_new[((long)t * num_kv_heads) * HD + e]));
    }
}
