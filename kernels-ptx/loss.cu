// Row-wise softmax kernels over chunks of LM-head logits, one block per row,
// each reading the row twice (max/sum, then write) and never storing a
// softmax: the fused cross-entropy that overwrites logits with their
// gradient, target logprob + entropy, and the logit gradient of any loss on
// those two (the PPO policy loss).
#include "common.cuh"

#define IGNORE 0xffffffffu

// Max and log-partition of row `row`; also E[x - max] weighted by softmax.
template <typename T> __device__ void row_stats(const T *z, int vocab, float *log_z, float *entropy) {
    __shared__ float s_max;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, ld(z, i));
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, o));
    __shared__ float warp_max[32];
    if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        float mm = -INFINITY;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) mm = fmaxf(mm, warp_max[w]);
        s_max = mm;
    }
    __syncthreads();
    m = s_max;
    float s = 0.0f, sx = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float d = ld(z, i) - m, e = __expf(d);
        s += e;
        sx += e * d;
    }
    s = block_sum(s);
    sx = block_sum(sx);
    *log_z = m + __logf(s);
    *entropy = __logf(s) - sx / s;
}

// loss[row] = w * (log Z - z[t]); z <- w * (softmax - onehot), 0 for ignored rows.
template <typename T> __device__ void cross_entropy(T *logits, float *loss, const unsigned *targets, const float *weights, int vocab) {
    long row = blockIdx.x;
    T *z = logits + row * vocab;
    unsigned t = targets[row];
    float w = weights[row];
    if (t == IGNORE || w == 0.0f) {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) st(z, i, 0.0f);
        if (threadIdx.x == 0) loss[row] = 0.0f;
        return;
    }
    float log_z, h;
    row_stats(z, vocab, &log_z, &h);
    float zt = ld(z, t);
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) st(z, i, w * (__expf(ld(z, i) - log_z) - (i == (int)t ? 1.0f : 0.0f)));
    if (threadIdx.x == 0) loss[row] = w * (log_z - zt);
}

template <typename T> __device__ void logprob_entropy(const T *logits, float *logp, float *entropy, const unsigned *targets, int vocab) {
    long row = blockIdx.x;
    const T *z = logits + row * vocab;
    float log_z, h;
    row_stats(z, vocab, &log_z, &h);
    if (threadIdx.x == 0) {
        unsigned t = targets[row];
        logp[row] = t == IGNORE ? 0.0f : ld(z, t) - log_z;
        entropy[row] = h;
    }
}

// z <- c_logp * (onehot - p) - c_ent * p * (log p + H)
template <typename T> __device__ void logit_grad(T *logits, const unsigned *targets, const float *c_logp, const float *c_ent, int vocab) {
    long row = blockIdx.x;
    T *z = logits + row * vocab;
    unsigned t = targets[row];
    float cl = c_logp[row], ce = c_ent[row];
    if (t == IGNORE || (cl == 0.0f && ce == 0.0f)) {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) st(z, i, 0.0f);
        return;
    }
    float log_z, h;
    row_stats(z, vocab, &log_z, &h);
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float lp = ld(z, i) - log_z, p = __expf(lp);
        st(z, i, -cl * p - ce * p * (lp + h) + (i == (int)t ? cl : 0.0f));
    }
}

#define INSTANTIATE(T, S)                                                                                                   \
    extern "C" __global__ void cross_entropy_##S(T *z, float *loss, const unsigned *t, const float *w, int vocab) {        \
        cross_entropy(z, loss, t, w, vocab);                                                                                \
    }                                                                                                                       \
    extern "C" __global__ void logprob_entropy_##S(const T *z, float *lp, float *h, const unsigned *t, int vocab) {        \
        logprob_entropy(z, lp, h, t, vocab);                                                                                \
    }                                                                                                                       \
    extern "C" __global__ void logit_grad_##S(T *z, const unsigned *t, const float *cl, const float *ce, int vocab) {      \
        logit_grad(z, t, cl, ce, vocab);                                                                                    \
    }

INSTANTIATE(float, f32)
INSTANTIATE(bf16, bf16)
