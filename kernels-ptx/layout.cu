// Layout moves between token-major [batch, seq, heads, hd] activations and
// head-major [batch, heads, cap, hd] attention operands (the KV-cache write
// when cap > seq, at per-row offsets starts[b]).
//
// Values move four at a time (V: float4 for f32, uint2 for bf16; hd is a
// multiple of 4), with 32-bit index arithmetic (the host checks the sizes):
// the 64-bit divisions of an element-wise loop cost more than the copy.
#include "common.cuh"

template <typename V>
__device__ void to_head_major(V *dst, const V *src, int rows, int seq, int heads, int hd4, int cap, const unsigned *starts) {
    int per_row = heads * hd4;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < rows * per_row; k += gridDim.x * blockDim.x) {
        int row = k / per_row, j = k - row * per_row;
        int b = row / seq, t = row - b * seq, h = j / hd4, d = j - h * hd4;
        dst[(((long)b * heads + h) * cap + starts[b] + t) * hd4 + d] = src[k];
    }
}

// The KV-cache write into a bf16 cache: four f32 in, four bf16 out.
__device__ void to_head_major_to_bf16(uint2 *dst, const float4 *src, int rows, int seq, int heads, int hd4, int cap, const unsigned *starts) {
    int per_row = heads * hd4;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < rows * per_row; k += gridDim.x * blockDim.x) {
        int row = k / per_row, j = k - row * per_row;
        int b = row / seq, t = row - b * seq, h = j / hd4, d = j - h * hd4;
        float4 x = src[k];
        __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
        dst[(((long)b * heads + h) * cap + starts[b] + t) * hd4 + d] =
            make_uint2(*reinterpret_cast<unsigned *>(&lo), *reinterpret_cast<unsigned *>(&hi));
    }
}

template <typename V> __device__ void to_token_major(V *dst, const V *src, int rows, int seq, int heads, int hd4) {
    int per_row = heads * hd4;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < rows * per_row; k += gridDim.x * blockDim.x) {
        int row = k / per_row, j = k - row * per_row;
        int b = row / seq, t = row - b * seq, h = j / hd4, d = j - h * hd4;
        dst[k] = src[(((long)b * heads + h) * seq + t) * hd4 + d];
    }
}

#define INSTANTIATE(V, S)                                                                                                   \
    extern "C" __global__ void to_head_major_##S(V *dst, const V *src, int rows, int seq, int heads, int hd4, int cap,     \
                                                 const unsigned *starts) {                                                  \
        to_head_major(dst, src, rows, seq, heads, hd4, cap, starts);                                                        \
    }                                                                                                                       \
    extern "C" __global__ void to_token_major_##S(V *dst, const V *src, int rows, int seq, int heads, int hd4) {           \
        to_token_major(dst, src, rows, seq, heads, hd4);                                                                    \
    }

INSTANTIATE(float4, f32)
INSTANTIATE(uint2, bf16)

extern "C" __global__ void to_head_major_f32_to_bf16(uint2 *dst, const float4 *src, int rows, int seq, int heads, int hd4, int cap,
                                                     const unsigned *starts) {
    to_head_major_to_bf16(dst, src, rows, seq, heads, hd4, cap, starts);
}
