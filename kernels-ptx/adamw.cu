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

// One value's update: returns the new weight, and updates its moments.
__device__ __forceinline__ float adamw_value(float p, float g, float &m, float &v, float lr, float beta1, float beta2, float eps, float weight_decay,
                                             float bc1, float bc2, float grad_scale) {
    float gi = g * grad_scale;
    m = beta1 * m + (1.0f - beta1) * gi;
    v = beta2 * v + (1.0f - beta2) * gi * gi;
    return p * (1.0f - lr * weight_decay) - (lr / bc1) * m / (sqrtf(v / bc2) + eps);
}

// p16, when not null, gets the updated weight rounded to bf16: the working
// copy the next step's matmuls read (f32 stays the master copy).
__device__ __forceinline__ void adamw_one(float *p, const float *g, float *m, float *v, bf16 *p16, long i, float lr, float beta1, float beta2,
                                          float eps, float weight_decay, float bc1, float bc2, float grad_scale) {
    float mi = m[i], vi = v[i];
    float pi = adamw_value(p[i], g[i], mi, vi, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
    if (p16) p16[i] = __float2bfloat16(pi);
}

// Values i..i+3 at once: 16-byte accesses, so each thread keeps four times
// the bytes in flight that one value at a time would (the kernel is bound
// by memory; the arithmetic is adamw_one's, value by value).
__device__ __forceinline__ void adamw_four(float *p, const float *g, float *m, float *v, bf16 *p16, long i, float lr, float beta1, float beta2,
                                           float eps, float weight_decay, float bc1, float bc2, float grad_scale) {
    float4 pv = ld4(p, i), gv = ld4(g, i), mv = ld4(m, i), vv = ld4(v, i);
    float *pe = &pv.x, *ge = &gv.x, *me = &mv.x, *ve = &vv.x;
#pragma unroll
    for (int e = 0; e < 4; e++) pe[e] = adamw_value(pe[e], ge[e], me[e], ve[e], lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale);
    st4(m, i, mv);
    st4(v, i, vv);
    st4(p, i, pv);
    if (p16) st4(p16, i, pv);
}

extern "C" __global__ void adamw_f32(float *p, const float *g, float *m, float *v, long n, float lr, float beta1, float beta2, float eps,
                                     float weight_decay, float bc1, float bc2, float grad_scale) {
    FOR_EACH(i, n) adamw_one(p, g, m, v, nullptr, i, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale);
}

// ptrs holds (param, grad, m, v, bf16 copy or null) per tensor, each 16-byte
// aligned (multi_tensor.rs checks); chunks start at multiples of MT_CHUNK,
// so all but a tensor's last (size mod 4) values go four at a time.
extern "C" __global__ void adamw_multi_f32(void *const *ptrs, const long *sizes, const float *decays, const int *chunk_tensor,
                                           const long *chunk_start, float lr, float beta1, float beta2, float eps, float bc1, float bc2,
                                           float grad_scale) {
    int t = chunk_tensor[blockIdx.x];
    long lo = chunk_start[blockIdx.x], hi = min(sizes[t], lo + MT_CHUNK), fours = lo + (hi - lo) / 4 * 4;
    float *p = (float *)ptrs[5 * t], *g = (float *)ptrs[5 * t + 1], *m = (float *)ptrs[5 * t + 2], *v = (float *)ptrs[5 * t + 3];
    bf16 *p16 = (bf16 *)ptrs[5 * t + 4];
    float wd = decays[t];
    for (long i = lo + 4 * threadIdx.x; i < fours; i += 4 * blockDim.x) adamw_four(p, g, m, v, p16, i, lr, beta1, beta2, eps, wd, bc1, bc2, grad_scale);
    for (long i = fours + threadIdx.x; i < hi; i += blockDim.x) adamw_one(p, g, m, v, p16, i, lr, beta1, beta2, eps, wd, bc1, bc2, grad_scale);
}

// partial[c] = sum of squares over chunk c.
extern "C" __global__ void sum_squares_multi(float *partial, const float *const *ptrs, const long *sizes, const int *chunk_tensor,
                                             const long *chunk_start) {
    int t = chunk_tensor[blockIdx.x];
    long lo = chunk_start[blockIdx.x], hi = min(sizes[t], lo + MT_CHUNK);
    const float *x = ptrs[t];
    long fours = lo + (hi - lo) / 4 * 4;
    float acc = 0.0f;
    // Four values per access, as adamw_multi_f32 reads them (same alignment).
    for (long i = lo + 4 * threadIdx.x; i < fours; i += 4 * blockDim.x) {
        float4 q = ld4(x, i);
        acc += q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w;
    }
    for (long i = fours + threadIdx.x; i < hi; i += blockDim.x) acc += x[i] * x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

extern "C" __global__ void sum_squares_partial(float *partial, const float *x, long n) {
    float acc = 0.0f;
    FOR_EACH(i, n) acc += x[i] * x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
