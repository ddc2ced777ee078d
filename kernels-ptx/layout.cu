// Attention's entry and exit: the fused q/k/v projection to queries
// [tokens, hq, hd] and head-major keys and values [rows, hkv, cap, hd] (a KV
// cache's layout; token i at row slots[i] / cap, position slots[i] % cap:
// the KV-cache write at each row's length, a packed prefill's rows, or a
// training batch in place), and their gradients back.
//
// 32-bit index arithmetic where it fits (the host checks the sizes): the
// 64-bit divisions of an element-wise loop cost more than the copy.
#include "common.cuh"

// Element `i` of head `h` (of `heads`) at `slot` in a head-major operand of rows of `cap` positions.
__device__ __forceinline__ long head_major_at(unsigned slot, int cap, int heads, int h, int hd, int i) {
    unsigned b = slot / cap, pos = slot - b * cap;
    return (((long)b * heads + h) * cap + pos) * hd + i;
}

// Both are fused with what surrounds them, over the fused q/k/v projection
// [tokens, (hq + 2 hkv) · hd] (each token's query heads, then its key heads,
// then its value heads): one thread per four rotation pairs (i..i+3,
// i+hd/2..i+hd/2+3) of one head of one token (hd/2 is a multiple of 4, so
// every access moves four values). qkv_from_tokens adds the bias (if any),
// rotates queries and keys and writes queries at their token, keys and
// values at their token's slot (in f32, or rounded into bf16); tokens_from_qkv
// moves the three gradients back into the fused token-major layout with the
// inverse rotation on queries and keys (into f32 and, when dst16 is given,
// the bf16 copy the projection's matmuls read; dst may then be null, when
// only matmuls read the result). The rotation is common.cuh's rotate4.
template <typename OQ, typename OKV, typename TS>
__device__ void qkv_from_tokens(OQ *q, OKV *k, OKV *v, const TS *src, const float *bias, const float *cos_t, const float *sin_t,
                                const unsigned *positions, int rows, int hq, int hkv, int hd, int kv_cap, const unsigned *kv_slots) {
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
            st_pair(q, ((long)row * hq + hh) * hd + i, half, a, c);
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
        long s = hh < hq ? ((long)row * hq + hh) * hd + i : (((long)b * nh + h) * seq + t) * hd + i;
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
                                                   int kv_cap, const unsigned *kv_slots) {                                  \
        qkv_from_tokens(q, k, v, src, bias, c, s, pos, rows, hq, hkv, hd, kv_cap, kv_slots);                                 \
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
