// KV append with fused RoPE. One block per new token: rotate its q heads in place and write its
// rotated k and its v into the token's slot of the pool. Padding tokens (slot < 0) are skipped.
// The cos/sin table is the f32 table of `Rope`, [max_position, rotary_dim / 2].

#define HD PAL_HEAD_DIM

__device__ __forceinline__ void rope_pair(int i, int half, int style, int* a, int* b) {
    if (style == 0) { *a = 2 * i; *b = 2 * i + 1; }   // adjacent pairs (GGUF)
    else { *a = i; *b = i + half; }                   // half split (NeoX / HF)
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
