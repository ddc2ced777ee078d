// RMSNorm (HF LlamaRMSNorm: w * x / sqrt(mean(x^2) + eps)) forward and
// backward, one block per row. The backward adds into dx, so it fuses the
// residual-stream accumulation; the weight gradient is reduced per block of
// rows into partials that a second kernel sums in order (deterministic).
#include "common.cuh"

// out16, when not null, also gets the output rounded to bf16: the copy a
// tensor-core matmul reading `out` would otherwise cast in a pass of its own;
// out may then be null (a matmul-only output needs nothing else).
template <typename T> __device__ void rmsnorm_fwd(T *out, float *rstd, const T *x, const T *w, int dim, float eps, bf16 *out16) {
    long row = blockIdx.x;
    const T *xr = x + row * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = ld(xr, i);
        ss += v * v;
    }
    float r = rsqrtf(block_sum(ss) / dim + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float y = ld(w, i) * (ld(xr, i) * r);
        if (out) st(out, row * dim + i, y);
        if (out16) out16[row * dim + i] = __float2bfloat16(y);
    }
}

// dx += r*w*dy - r^3/dim * x * sum(w*dy*x); dx16, when not null, gets the sum rounded to bf16.
template <typename T>
__device__ void rmsnorm_bwd_dx(T *dx, const T *dout, const T *x, const T *w, const float *rstd, int dim, bf16 *dx16) {
    long row = blockIdx.x;
    long base = row * dim;
    float r = rstd[row];
    float gx = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) gx += ld(dout, base + i) * ld(w, i) * ld(x, base + i);
    gx = block_sum(gx);
    float c = r * r * r * gx / dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = ld(dx, base + i) + r * ld(w, i) * ld(dout, base + i) - c * ld(x, base + i);
        st(dx, base + i, v);
        if (dx16) dx16[base + i] = __float2bfloat16(v);
    }
}

// partial[b, i] = sum over rows of block b of dy * x * rstd; rows_per_block rows per block.
template <typename T> __device__ void rmsnorm_bwd_dw_partial(float *partial, const T *dout, const T *x, const float *rstd, long rows, int dim, int rows_per_block) {
    long r0 = (long)blockIdx.x * rows_per_block;
    long r1 = min(rows, r0 + rows_per_block);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float acc = 0.0f;
        for (long r = r0; r < r1; r++) acc += ld(dout, r * dim + i) * ld(x, r * dim + i) * rstd[r];
        partial[(long)blockIdx.x * dim + i] = acc;
    }
}

#define INSTANTIATE(T, S)                                                                                                   \
    extern "C" __global__ void rmsnorm_fwd_##S(T *out, float *rstd, const T *x, const T *w, int dim, float eps,            \
                                               bf16 *out16) {                                                               \
        rmsnorm_fwd(out, rstd, x, w, dim, eps, out16);                                                                      \
    }                                                                                                                       \
    extern "C" __global__ void rmsnorm_bwd_dx_##S(T *dx, const T *dy, const T *x, const T *w, const float *rstd, int dim,  \
                                                  bf16 *dx16) {                                                             \
        rmsnorm_bwd_dx(dx, dy, x, w, rstd, dim, dx16);                                                                      \
    }                                                                                                                       \
    extern "C" __global__ void rmsnorm_bwd_dw_partial_##S(float *p, const T *dy, const T *x, const float *rstd, long rows, \
                                                          int dim, int rows_per_block) {                                   \
        rmsnorm_bwd_dw_partial(p, dy, x, rstd, rows, dim, rows_per_block);                                                  \
    }

INSTANTIATE(float, f32)
INSTANTIATE(bf16, bf16)
