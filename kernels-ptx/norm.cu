// RMSNorm (HF LlamaRMSNorm: w * x / sqrt(mean(x^2) + eps)) forward and
// backward. Forward and dx take one warp per row, four values per lane and
// step (dim is a multiple of 4): a row of a few thousand values is too
// little work for a block and its barriers. The backward adds into dx, so it
// fuses the residual-stream accumulation; the weight gradient is reduced per
// block of rows into partials that a second kernel sums in order
// (deterministic). Up to dim 1024 one kernel does both from the same reads
// of dy and x (rmsnorm_bwd); wider rows take dx and the partials in two.
#include "common.cuh"

#define NORM_ROWS 8  // rows per block: a warp each

// out16, when not null, also gets the output rounded to bf16: the copy a
// tensor-core matmul reading `out` would otherwise cast in a pass of its own;
// out may then be null (a matmul-only output needs nothing else).
template <typename T>
__device__ void rmsnorm_fwd(T *out, float *rstd, const T *x, const T *w, long rows, int dim, float eps, bf16 *out16) {
    long row = (long)blockIdx.x * NORM_ROWS + (threadIdx.x >> 5), base = row * dim;
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float ss = 0.0f;
    for (int i = 4 * lane; i < dim; i += 128) {
        float4 v = ld4(x, base + i);
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    float r = rsqrtf(warp_sum(ss) / dim + eps);
    if (lane == 0) rstd[row] = r;
    for (int i = 4 * lane; i < dim; i += 128) {
        float4 v = ld4(x, base + i), g = ld4(w, i);
        float4 y = make_float4(g.x * (v.x * r), g.y * (v.y * r), g.z * (v.z * r), g.w * (v.w * r));
        if (out) st4(out, base + i, y);
        if (out16) st4(out16, base + i, y);
    }
}

// The backward's two steps on four values of a row: their share of
// sum(w*dy*x), and dx's new values a + r*w*dy - c*x (c = r^3/dim * the sum).
__device__ __forceinline__ float dot3(float4 d, float4 g, float4 v) {
    return d.x * g.x * v.x + d.y * g.y * v.y + d.z * g.z * v.z + d.w * g.w * v.w;
}
__device__ __forceinline__ float4 dx_step(float4 a, float4 d, float4 g, float4 v, float r, float c) {
    return make_float4(a.x + r * g.x * d.x - c * v.x, a.y + r * g.y * d.y - c * v.y, a.z + r * g.z * d.z - c * v.z,
                       a.w + r * g.w * d.w - c * v.w);
}

// dx += r*w*dy - r^3/dim * x * sum(w*dy*x); dx16, when not null, gets the sum rounded to bf16.
template <typename T, typename TD>
__device__ void rmsnorm_bwd_dx(T *dx, const TD *dout, const T *x, const T *w, const float *rstd, long rows, int dim, bf16 *dx16) {
    long row = (long)blockIdx.x * NORM_ROWS + (threadIdx.x >> 5), base = row * dim;
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float r = rstd[row];
    float gx = 0.0f;
    for (int i = 4 * lane; i < dim; i += 128) gx += dot3(ld4(dout, base + i), ld4(w, i), ld4(x, base + i));
    float c = r * r * r * warp_sum(gx) / dim;
    for (int i = 4 * lane; i < dim; i += 128) {
        float4 y = dx_step(ld4(dx, base + i), ld4(dout, base + i), ld4(w, i), ld4(x, base + i), r, c);
        st4(dx, base + i, y);
        if (dx16) st4(dx16, base + i, y);
    }
}

// partial[b, i] = sum over rows of block b of dy * x * rstd; rows_per_block rows per block.
template <typename T, typename TD>
__device__ void rmsnorm_bwd_dw_partial(float *partial, const TD *dout, const T *x, const float *rstd, long rows, int dim, int rows_per_block) {
    long r0 = (long)blockIdx.x * rows_per_block;
    long r1 = min(rows, r0 + rows_per_block);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float acc = 0.0f;
        for (long r = r0; r < r1; r++) acc += ld(dout, r * dim + i) * ld(x, r * dim + i) * rstd[r];
        partial[(long)blockIdx.x * dim + i] = acc;
    }
}

#define NORM_BWD_VECS 8  // four-value groups per lane in rmsnorm_bwd: dim <= 4 * 32 * 8
static_assert(4 * 32 * NORM_BWD_VECS == 1024, "engine/backend/cuda/mod.rs's NORM_BWD_FUSED_DIM sends rows up to 1024 values here");

// dx as rmsnorm_bwd_dx, and partial[block, :] = Σ dy·x·rstd over the block's
// rows, from the same reads: each warp takes rows_per_warp consecutive rows
// and keeps its lanes' column sums in registers, then the block adds its
// warps' sums in warp order (deterministic). dim <= 4 * 32 * NORM_BWD_VECS.
template <typename T, typename TD>
__device__ void rmsnorm_bwd(T *dx, float *partial, const TD *dout, const T *x, const T *w, const float *rstd, long rows, int dim,
                            int rows_per_warp, bf16 *dx16) {
    __shared__ float4 sums[NORM_ROWS][32 * NORM_BWD_VECS];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    long r0 = ((long)blockIdx.x * NORM_ROWS + warp) * rows_per_warp, r1 = min(rows, r0 + rows_per_warp);
    float4 acc[NORM_BWD_VECS];
    #pragma unroll
    for (int k = 0; k < NORM_BWD_VECS; k++) acc[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (long row = r0; row < r1; row++) {
        long base = row * dim;
        float r = rstd[row], gx = 0.0f;
        #pragma unroll
        for (int k = 0; k < NORM_BWD_VECS; k++) {
            int i = 4 * lane + 128 * k;
            if (i < dim) gx += dot3(ld4(dout, base + i), ld4(w, i), ld4(x, base + i));
        }
        float c = r * r * r * warp_sum(gx) / dim;
        #pragma unroll
        for (int k = 0; k < NORM_BWD_VECS; k++) {
            int i = 4 * lane + 128 * k;
            if (i >= dim) continue;
            float4 d = ld4(dout, base + i), v = ld4(x, base + i);
            float4 y = dx_step(ld4(dx, base + i), d, ld4(w, i), v, r, c);
            st4(dx, base + i, y);
            if (dx16) st4(dx16, base + i, y);
            acc[k] = make_float4(acc[k].x + d.x * v.x * r, acc[k].y + d.y * v.y * r, acc[k].z + d.z * v.z * r, acc[k].w + d.w * v.w * r);
        }
    }
    // Lane l's group k holds columns 4(l + 32k)..: entry l + 32k of its warp's row.
    #pragma unroll
    for (int k = 0; k < NORM_BWD_VECS; k++) sums[warp][32 * k + lane] = acc[k];
    __syncthreads();
    for (int e = threadIdx.x; e < dim / 4; e += blockDim.x) {
        float4 t = sums[0][e];
        for (int wi = 1; wi < NORM_ROWS; wi++) t = make_float4(t.x + sums[wi][e].x, t.y + sums[wi][e].y, t.z + sums[wi][e].z, t.w + sums[wi][e].w);
        st4(partial, (long)blockIdx.x * dim + 4 * e, t);
    }
}

#define INSTANTIATE_FWD(T, S)                                                                                               \
    extern "C" __global__ void rmsnorm_fwd_##S(T *out, float *rstd, const T *x, const T *w, long rows, int dim, float eps, \
                                               bf16 *out16) {                                                               \
        rmsnorm_fwd(out, rstd, x, w, rows, dim, eps, out16);                                                                \
    }
// T for dx, x and w; TD for the output gradient dy.
#define INSTANTIATE_BWD(T, TD, S)                                                                                           \
    extern "C" __global__ void rmsnorm_bwd_dx_##S(T *dx, const TD *dy, const T *x, const T *w, const float *rstd, long rows, \
                                                  int dim, bf16 *dx16) {                                                    \
        rmsnorm_bwd_dx(dx, dy, x, w, rstd, rows, dim, dx16);                                                                \
    }                                                                                                                       \
    extern "C" __global__ void rmsnorm_bwd_dw_partial_##S(float *p, const TD *dy, const T *x, const float *rstd, long rows, \
                                                          int dim, int rows_per_block) {                                   \
        rmsnorm_bwd_dw_partial(p, dy, x, rstd, rows, dim, rows_per_block);                                                  \
    }                                                                                                                       \
    extern "C" __global__ void rmsnorm_bwd_##S(T *dx, float *p, const TD *dy, const T *x, const T *w, const float *rstd,     \
                                               long rows, int dim, int rows_per_warp, bf16 *dx16) {                         \
        rmsnorm_bwd(dx, p, dy, x, w, rstd, rows, dim, rows_per_warp, dx16);                                                 \
    }

INSTANTIATE_FWD(float, f32)
INSTANTIATE_FWD(bf16, bf16)
INSTANTIATE_BWD(float, float, f32)
INSTANTIATE_BWD(bf16, bf16, bf16)
// A training step's: the output gradient is a bf16 matmul output (as
// autocast keeps it); dx, x and w are f32.
INSTANTIATE_BWD(float, bf16, bf16in_f32)
