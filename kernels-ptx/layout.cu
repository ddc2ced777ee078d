// Layout moves between token-major [tokens, heads, hd] activations and
// head-major [rows, heads, cap, hd] attention operands. Into head-major,
// token i goes to row slots[i] / cap, position slots[i] % cap (the KV-cache
// write at each row's length, a packed prefill's rows, or in place).
//
// Values move four at a time (V: float4 for f32, uint2 for bf16; hd is a
// multiple of 4), with 32-bit index arithmetic (the host checks the sizes):
// the 64-bit divisions of an element-wise loop cost more than the copy.
#include "common.cuh"

// Four f32 rounded to bf16, as one 8-byte store.
__device__ __forceinline__ uint2 to_bf16x4(float4 x) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
    return make_uint2(*reinterpret_cast<unsigned *>(&lo), *reinterpret_cast<unsigned *>(&hi));
}

// Stores a vector as it came, or four f32 rounded into a bf16 cache.
template <typename V> __device__ __forceinline__ void put(V *dst, long i, V x) { dst[i] = x; }
__device__ __forceinline__ void put(uint2 *dst, long i, float4 x) { dst[i] = to_bf16x4(x); }

// Into storage of src's type, or f32 into a bf16 cache (the KV-cache write).
template <typename VD, typename VS>
__device__ void to_head_major(VD *dst, const VS *src, int rows, int heads, int hd4, int cap, const unsigned *slots) {
    int per_row = heads * hd4;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < rows * per_row; k += gridDim.x * blockDim.x) {
        int row = k / per_row, j = k - row * per_row, h = j / hd4, d = j - h * hd4;
        unsigned slot = slots[row], b = slot / cap, pos = slot - b * cap;
        put(dst, (((long)b * heads + h) * cap + pos) * hd4 + d, src[k]);
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

// Attention's entry and exit fused with what surrounds them: one thread per
// four rotation pairs (i..i+3, i+hd/2..i+hd/2+3) of a token's head (hd/2 is
// a multiple of 4, so every access moves four values). heads_from_tokens
// adds the bias (if any), rotates (if cos is given) and writes head-major at
// the token's slot (in f32, or rounded into bf16); tokens_from_heads
// moves back to token-major and applies the inverse rotation (into f32 and,
// when dst16 is given, the bf16 copy the projections' matmuls read; dst may
// then be null, when only matmuls read the result). The
// rotation is rope.cu's; `sign` -1 is its inverse.
__device__ __forceinline__ void rotate4(float4 &a, float4 &c, const float *cos_t, const float *sin_t, long tab, float sign) {
    float4 co = ld4(cos_t, tab), si = ld4(sin_t, tab);
    float4 x0 = make_float4(a.x * co.x - c.x * sign * si.x, a.y * co.y - c.y * sign * si.y, a.z * co.z - c.z * sign * si.z,
                            a.w * co.w - c.w * sign * si.w);
    c = make_float4(c.x * co.x + a.x * sign * si.x, c.y * co.y + a.y * sign * si.y, c.z * co.z + a.z * sign * si.z, c.w * co.w + a.w * sign * si.w);
    a = x0;
}

template <typename OUT, typename TS>
__device__ void heads_from_tokens(OUT *dst, const TS *src, const float *bias, const float *cos_t, const float *sin_t, const unsigned *positions,
                                  int rows, int heads, int hd, int cap, const unsigned *slots) {
    int half = hd / 2, quads = half / 4, per_row = heads * quads;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < rows * per_row; k += gridDim.x * blockDim.x) {
        int row = k / per_row, j = k - row * per_row, h = j / quads, i = 4 * (j - h * quads);
        unsigned slot = slots[row], b = slot / cap, pos = slot - b * cap;
        long s = ((long)row * heads + h) * hd + i;
        float4 a = ld4(src, s), c = ld4(src, s + half);
        if (bias) {
            float4 ba = ld4(bias, h * hd + i), bc = ld4(bias, h * hd + i + half);
            a = make_float4(a.x + ba.x, a.y + ba.y, a.z + ba.z, a.w + ba.w);
            c = make_float4(c.x + bc.x, c.y + bc.y, c.z + bc.z, c.w + bc.w);
        }
        if (cos_t) rotate4(a, c, cos_t, sin_t, (long)positions[row] * half + i, 1.0f);
        long o = (((long)b * heads + h) * cap + pos) * hd + i;
        st4(dst, o, a);
        st4(dst, o + half, c);
    }
}

template <typename TS>
__device__ void tokens_from_heads(float *dst, const TS *src, const float *cos_t, const float *sin_t, const unsigned *positions, int rows,
                                  int seq, int heads, int hd, bf16 *dst16) {
    int half = hd / 2, quads = half / 4, per_row = heads * quads;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < rows * per_row; k += gridDim.x * blockDim.x) {
        int row = k / per_row, j = k - row * per_row, h = j / quads, i = 4 * (j - h * quads);
        int b = row / seq, t = row - b * seq;
        long s = (((long)b * heads + h) * seq + t) * hd + i;
        float4 a = ld4(src, s), c = ld4(src, s + half);
        if (cos_t) rotate4(a, c, cos_t, sin_t, (long)positions[row] * half + i, -1.0f);
        long o = ((long)row * heads + h) * hd + i;
        if (dst) {
            st4(dst, o, a);
            st4(dst, o + half, c);
        }
        if (dst16) {
            st4(dst16, o, a);
            st4(dst16, o + half, c);
        }
    }
}

#define INSTANTIATE_HEADS(OUT, TS, S)                                                                                       \
    extern "C" __global__ void heads_from_tokens_##S(OUT *dst, const TS *src, const float *bias, const float *c,           \
                                                     const float *s, const unsigned *pos, int rows, int heads, int hd,      \
                                                     int cap, const unsigned *slots) {                                      \
        heads_from_tokens(dst, src, bias, c, s, pos, rows, heads, hd, cap, slots);                                          \
    }

INSTANTIATE_HEADS(float, float, f32)
INSTANTIATE_HEADS(bf16, float, bf16)
// From bf16 projections (training's q/k/v) into bf16 attention operands.
INSTANTIATE_HEADS(bf16, bf16, bf16_to_bf16)

extern "C" __global__ void tokens_from_heads_f32(float *dst, const float *src, const float *c, const float *s, const unsigned *pos, int rows,
                                                 int seq, int heads, int hd, bf16 *dst16) {
    tokens_from_heads(dst, src, c, s, pos, rows, seq, heads, hd, dst16);
}
// From bf16 attention gradients (training with bf16 attention operands).
extern "C" __global__ void tokens_from_heads_bf16_to_f32(float *dst, const bf16 *src, const float *c, const float *s, const unsigned *pos,
                                                         int rows, int seq, int heads, int hd, bf16 *dst16) {
    tokens_from_heads(dst, src, c, s, pos, rows, seq, heads, hd, dst16);
}
