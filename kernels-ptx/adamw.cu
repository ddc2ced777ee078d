// AdamW (decoupled weight decay, bias-corrected) on f32 master weights and
// f32 moments, optionally writing a bf16 copy of the weights for compute.
// Multi-tensor: one launch covers many tensors, described by pointer tables.
#include "common.cuh"

struct AdamWParams {
    float lr, beta1, beta2, eps, bc1, bc2;
};

// Tensor t spans [offsets[t], offsets[t+1]) of a flat index space; decay[t] is its weight decay.
extern "C" __global__ void adamw_multi(float **params, const float **grads, float **m, float **v, bf16 **bf16_copies,
                                       const long *offsets, const float *decay, int tensors, AdamWParams hp) {
    long total = offsets[tensors];
    FOR_EACH(k, total) {
        // Binary search for the tensor that holds flat index k.
        int lo = 0, hi = tensors - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (offsets[mid] <= k) lo = mid; else hi = mid - 1;
        }
        long i = k - offsets[lo];
        float g = grads[lo][i];
        float mi = hp.beta1 * m[lo][i] + (1.0f - hp.beta1) * g;
        float vi = hp.beta2 * v[lo][i] + (1.0f - hp.beta2) * g * g;
        m[lo][i] = mi;
        v[lo][i] = vi;
        float p = params[lo][i] * (1.0f - hp.lr * decay[lo]) - (hp.lr / hp.bc1) * mi / (sqrtf(vi / hp.bc2) + hp.eps);
        params[lo][i] = p;
        if (bf16_copies[lo]) bf16_copies[lo][i] = __float2bfloat16(p);
    }
}

// Sum of squares of a tensor into per-block partials (summed in order by the host or a second pass).
extern "C" __global__ void sum_squares_partial(float *partial, const float *x, long n) {
    float acc = 0.0f;
    FOR_EACH(i, n) acc += x[i] * x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
