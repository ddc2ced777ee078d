// Layout moves between token-major [tokens, heads, hd] activations and
// head-major [rows, heads, cap, hd] attention operands. Into head-major,
// token i goes to row slots[i] / cap, position slots[i] % cap (the KV-cache
// write at each row's length, a packed prefill's rows, or in place).
//
// Values move four at a time (V: float4 for f32, uint2 for bf16; hd is a
// multiple of 4), with 32-bit index arithmetic (the host checks the sizes):
// the 64-bit divisions of an element-wise loop cost more than the copy.
#include "common.cuh"

// Stores a vector as it came, or four f32 rounded into a bf16 cache.
template <typename V> __device__ __forceinline__ void put(V *dst, long i, V x) { dst[i] = x; }
__device__ __forceinline__ void put(uint2 *dst, long i, float4 x) { dst[i] = to_bf16x4(x); }

// Element `i` of head `h` (of `heads`) at `slot` in a head-major operand of rows of `cap` positions.
__device__ __forceinline__ long head_major_at(unsigned slot, int cap, int heads, int h, int hd, int i) {
    unsigned b = slot / cap, pos = slot - b * cap;
    return (((long)b * heads + h) * cap + pos) * hd + i;
}

// Into storage of src's type, or f32 into a bf16 cache (the KV-cache write);
// positions count in vectors of four values.
template <typename VD, typename VS>
__device__ void to_head_major(VD *dst, const VS *src, int rows, int heads, int hd4, int cap, const unsigned *slots) {
    int per_row = heads * hd4;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < rows * per_row; k += gridDim.x * blockDim.x) {
        int row = k / per_row, j = k - row * per_row, h = j / hd4, d = j - h * hd4;
        put(dst, head_major_at(slots[row], cap, heads, h, hd4, d), src[k]);
    }
}

// dst16 (f32 only; may be null) also gets the values rounded to bf16: the
// copy the output projection's matmuls read; dst may then be null.
template <typename V> __device__ void to_token_major(V *dst, const V *src, int rows, int seq, int heads, int hd4, uint2 *dst16) {
    int per_row = heads * hd4;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < rows * per_row; k += gridDim.x * blockDim.x) {
        int row = k / per_row, j = k - row * per_row;
        int b = row / seq, t = row - b * seq, h = j / hd4, d = j - h * hd4;
        V x = src[(((long)b * heads + h) * seq + t) * hd4 + d];
        if (dst) dst[k] = x;
        if constexpr (sizeof(V) == sizeof(float4)) {
            if (dst16) dst16[k] = to_bf16x4(x);
        }
    }
}

#define INSTANTIATE(V, S)                                                                                                   \
    extern "C" __global__ void to_head_major_##S(V *dst, const V *src, int rows, int heads, int hd4, int cap,              \
                                                 const unsigned *slots) {                                                   \
        to_head_major(dst, src, rows, heads, hd4, cap, slots);                                                              \
    }                                                                                                                       \
    extern "C" __global__ void to_token_major_##S(V *dst, const V *src, int rows, int seq, int heads, int hd4,             \
                                                  uint2 *dst16) {                                                           \
        to_token_major(dst, src, rows, seq, heads, hd4, dst16);                                                             \
    }

INSTANTIATE(float4, f32)
INSTANTIATE(uint2, bf16)

extern "C" __global__ void to_head_major_f32_to_bf16(uint2 *dst, const float4 *src, int rows, int heads, int hd4, int cap,
                                                     const unsigned *slots) {
    to_head_major(dst, src, rows, heads, hd4, cap, slots);
}

// Attention's entry and exit fused with what surrounds them, over the fused
// q/k/v projection [tokens, (hq + 2 hkv) · hd] (each token's query heads,
// then its key heads, then its value heads): one thread per four rotation
// pairs (i..i+3, i+hd/2..i+hd/2+3) of one head of one token (hd/2 is a
// multiple of 4, so every access moves four values). qkv_from_tokens adds
// the bias (if any), rotates queries and keys and writes each head
// head-major at its token's slot (queries into q at q_slots, keys and values
// into k and v at kv_slots; in f32, or rounded into bf16); tokens_from_qkv
// moves the three gradients back into the fused token-major layout with the
// inverse rotation on queries and keys (into f32 and, when dst16 is given,
// the bf16 copy the projection's matmuls read; dst may then be null, when
// only matmuls read the result). The rotation is rope.cu's; `sign` -1 is its
// inverse.
__device__ __forceinline__ void rotate4(float4 &a, float4 &c, const float *cos_t, const float *sin_t, long tab, float sign) {
    float4 co = ld4(cos_t, tab), si = ld4(sin_t, tab);
    float4 x0 = make_float4(a.x * co.x - c.x * sign * si.x, a.y * co.y - c.y * sign * si.y, a.z * co.z - c.z * sign * si.z,
                            a.w * co.w - c.w * sign * si.w);
    c = make_float4(c.x * co.x + a.x * sign * si.x, c.y * co.y + a.y * sign * si.y, c.z * co.z + a.z * sign * si.z, c.w * co.w + a.w * sign * si.w);
    a = x0;
}

template <typename OQ, typename OKV, typename TS>
__device__ void qkv_from_tokens(OQ *q, OKV *k, OKV *v, const TS *src, const float *bias, const float *cos_t, const float *sin_t,
                                const unsigned *positions, int rows, int hq, int hkv, int hd, int q_cap, const unsigned *q_slots, int kv_cap,
                                const unsigned *kv_slots) {
    int half = hd / 2, quads = half / 4, heads = hq + 2 * hkv, per_row = heads * quads;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < rows * per_row; e += gridDim.x * blockDim.x) {
        int row = e / per_row, j = e - row * per_row, hh = j / quads, i = 4 * (j - hh * quads);
        long s = ((long)row * heads + hh) * hd + i;
        float4 a = ld4(src, s), c = ld4(src, s + half);
        if (bias) {
            float4 ba = ld4(bias, hh * hd + i), bc = ld4(bias, hh * hd + i + half);
            a = make_float4(a.x + ba.x, a.y + ba.y, a.z + ba.z, a.w + ba.w);
            c = make_float4(c.x + bc.x, c.y + bc.y, c.z + bc.z, c.w + bc.w);
        }
        if (hh < hq + hkv) rotate4(a, c, cos_t, sin_t, (long)positions[row] * half + i, 1.0f);
        if (hh < hq) {
            st_pair(q, head_major_at(q_slots[row], q_cap, hq, hh, hd, i), half, a, c);
        } else {
            bool is_v = hh >= hq + hkv;
            st_pair(is_v ? v : k, head_major_at(kv_slots[row], kv_cap, hkv, hh - hq - (is_v ? hkv : 0), hd, i), half, a, c);
        }
    }
}

template <typename TS>
__device__ void tokens_from_qkv(float *dst, const TS *dq, const TS *dk, const TS *dv, const float *cos_t, const float *sin_t,
                                const unsigned *positions, int rows, int seq, int hq, int hkv, int hd, bf16 *dst16) {
    int half = hd / 2, quads = half / 4, heads = hq + 2 * hkv, per_row = heads * quads;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < rows * per_row; e += gridDim.x * blockDim.x) {
        int row = e / per_row, j = e - row * per_row, hh = j / quads, i = 4 * (j - hh * quads);
        int b = row / seq, t = row - b * seq;
        const TS *src = hh < hq ? dq : hh < hq + hkv ? dk : dv;
        int h = hh < hq ? hh : hh < hq + hkv ? hh - hq : hh - hq - hkv, nh = hh < hq ? hq : hkv;
        long s = (((long)b * nh + h) * seq + t) * hd + i;
        float4 a = ld4(src, s), c = ld4(src, s + half);
        if (hh < hq + hkv) rotate4(a, c, cos_t, sin_t, (long)positions[row] * half + i, -1.0f);
        long o = ((long)row * heads + hh) * hd + i;
        st_pair(dst, o, half, a, c);
        st_pair(dst16, o, half, a, c);
    }
}

// Named qkv_from_tokens_<q>_<k and v>_from_<projection>.
#define INSTANTIATE_QKV(OQ, OKV, TS, S)                                                                                      \
    extern "C" __global__ void qkv_from_tokens_##S(OQ *q, OKV *k, OKV *v, const TS *src, const float *bias, const float *c, \
                                                   const float *s, const unsigned *pos, int rows, int hq, int hkv, int hd,  \
                                                   int q_cap, const unsigned *q_slots, int kv_cap, const unsigned *kv_slots) { \
        qkv_from_tokens(q, k, v, src, bias, c, s, pos, rows, hq, hkv, hd, q_cap, q_slots, kv_cap, kv_slots);                 \
    }

INSTANTIATE_QKV(float, float, float, f32_f32_from_f32)
// Generation: f32 queries, a bf16 KV cache.
INSTANTIATE_QKV(float, bf16, float, f32_bf16_from_f32)
INSTANTIATE_QKV(bf16, bf16, float, bf16_bf16_from_f32)
// Training: bf16 projections into bf16 attention operands.
INSTANTIATE_QKV(bf16, bf16, bf16, bf16_bf16_from_bf16)

#define INSTANTIATE_TOKENS(TS, S)                                                                                             \
    extern "C" __global__ void tokens_from_qkv_##S(float *dst, const TS *dq, const TS *dk, const TS *dv, const float *c,      \
                                                   const float *s, const unsigned *pos, int rows, int seq, int hq, int hkv,  \
                                                   int hd, bf16 *dst16) {                                                    \
        tokens_from_qkv(dst, dq, dk, dv, c, s, pos, rows, seq, hq, hkv, hd, dst16);                                          \
    }

INSTANTIATE_TOKENS(float, f32)
// From bf16 attention gradients (training with bf16 attention operands).
INSTANTIATE_TOKENS(bf16, bf16_to_f32)
