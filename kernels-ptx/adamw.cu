// AdamW (decoupled weight decay, bias-corrected) on f32 weights and f32
// moments, reading each gradient times grad_scale (the clip coefficient:
// clipping costs no pass of its own), and the per-block sum of squares the
// global grad norm is built from (partials summed in order on the host:
// deterministic). The _multi
// kernels cover every tensor of a model in one launch: block c works on chunk
// c, elements [chunk_start[c], chunk_start[c] + MT_CHUNK) of tensor
// chunk_tensor[c], through a table of device pointers.
#include "common.cuh"

#define MT_CHUNK 65536

// p16, when not null, gets the updated weight rounded to bf16: the working
// copy the next step's matmuls read (f32 stays the master copy).
__device__ __forceinline__ void adamw_one(float *p, const float *g, float *m, float *v, bf16 *p16, long i, float lr, float beta1, float beta2,
                                          float eps, float weight_decay, float bc1, float bc2, float grad_scale) {
    float gi = g[i] * grad_scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i] * (1.0f - lr * weight_decay) - (lr / bc1) * mi / (sqrtf(vi / bc2) + eps);
    p[i] = pi;
    if (p16) p16[i] = __float2bfloat16(pi);
}

extern "C" __global__ void adamw_f32(float *p, const float *g, float *m, float *v, long n, float lr, float beta1, float beta2, float eps,
                                     float weight_decay, float bc1, float bc2, float grad_scale) {
    FOR_EACH(i, n) adamw_one(p, g, m, v, nullptr, i, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale);
}

// ptrs holds (param, grad, m, v, bf16 copy or null) per tensor.
extern "C" __global__ void adamw_multi_f32(void *const *ptrs, const long *sizes, const float *decays, const int *chunk_tensor,
                                           const long *chunk_start, float lr, float beta1, float beta2, float eps, float bc1, float bc2,
                                           float grad_scale) {
    int t = chunk_tensor[blockIdx.x];
    long lo = chunk_start[blockIdx.x], hi = min(sizes[t], lo + MT_CHUNK);
    float *p = (float *)ptrs[5 * t], *g = (float *)ptrs[5 * t + 1], *m = (float *)ptrs[5 * t + 2], *v = (float *)ptrs[5 * t + 3];
    bf16 *p16 = (bf16 *)ptrs[5 * t + 4];
    for (long i = lo + threadIdx.x; i < hi; i += blockDim.x) adamw_one(p, g, m, v, p16, i, lr, beta1, beta2, eps, decays[t], bc1, bc2, grad_scale);
}

// partial[c] = sum of squares over chunk c.
extern "C" __global__ void sum_squares_multi(float *partial, const float *const *ptrs, const long *sizes, const int *chunk_tensor,
                                             const long *chunk_start) {
    int t = chunk_tensor[blockIdx.x];
    long lo = chunk_start[blockIdx.x], hi = min(sizes[t], lo + MT_CHUNK);
    const float *x = ptrs[t];
    float acc = 0.0f;
    for (long i = lo + threadIdx.x; i < hi; i += blockDim.x) acc += x[i] * x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

extern "C" __global__ void sum_squares_partial(float *partial, const float *x, long n) {
    float acc = 0.0f;
    FOR_EACH(i, n) acc += x[i] * x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
