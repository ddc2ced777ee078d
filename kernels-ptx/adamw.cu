// AdamW (decoupled weight decay, bias-corrected) on f32 weights and f32
// moments, and the per-block sum of squares the global grad norm is built
// from (partials summed in order on the host: deterministic).
#include "common.cuh"

extern "C" __global__ void adamw_f32(float *p, const float *g, float *m, float *v, long n, float lr, float beta1, float beta2, float eps,
                                     float weight_decay, float bc1, float bc2) {
    FOR_EACH(i, n) {
        float gi = g[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * (1.0f - lr * weight_decay) - (lr / bc1) * mi / (sqrtf(vi / bc2) + eps);
    }
}

extern "C" __global__ void sum_squares_partial(float *partial, const float *x, long n) {
    float acc = 0.0f;
    FOR_EACH(i, n) acc += x[i] * x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
