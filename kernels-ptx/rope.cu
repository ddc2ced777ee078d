// Rotary position embedding in HF's rotate_half convention, in place on
// token-major [rows, heads, head_dim] activations, with f32 cos/sin tables
// [max_pos, head_dim/2]. sign = -1 applies the inverse rotation (the backward).
#include "common.cuh"

// One thread per rotated pair, indexed in 32 bits (the host checks the size).
template <typename T>
__device__ void rope(T *x, const float *cos_t, const float *sin_t, const unsigned *positions, int rows, int heads, int head_dim, float sign) {
    int half = head_dim / 2, per_row = heads * half;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < rows * per_row; k += gridDim.x * blockDim.x) {
        int row = k / per_row, rest = k - row * per_row;
        int h = rest / half, i = rest - h * half;
        long base = ((long)row * heads + h) * head_dim;
        long tab = (long)positions[row] * half + i;
        float c = cos_t[tab], s = sign * sin_t[tab];
        float a = ld(x, base + i), b = ld(x, base + i + half);
        st(x, base + i, a * c - b * s);
        st(x, base + i + half, b * c + a * s);
    }
}

#define INSTANTIATE(T, S)                                                                                                   \
    extern "C" __global__ void rope_##S(T *x, const float *c, const float *s, const unsigned *pos, int rows, int heads,     \
                                        int head_dim, float sign) {                                                         \
        rope(x, c, s, pos, rows, heads, head_dim, sign);                                                                    \
    }

INSTANTIATE(float, f32)
INSTANTIATE(bf16, bf16)
