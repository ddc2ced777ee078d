// Row-wise softmax kernels over chunks of LM-head logits, one block per row,
// each reading the row once for its statistics (online softmax) and once
// more to write, and never storing a softmax: the fused cross-entropy that
// overwrites logits with their gradient, target logprob + entropy, and the
// logit gradient of any loss on those two (the PPO policy loss). The last
// two read the logits times `inv_temp`, the distribution a policy samples
// from at temperature 1 / inv_temp (the cross-entropy passes 1). bf16 rows
// (training's logits) move 8 values per 16-byte load and store.
#include "common.cuh"

#define IGNORE 0xffffffffu

// Running softmax statistics of a set of logits: max m, s = Σ e^(x - m)
// and sx = Σ e^(x - m) (x - m), so log Z = m + log s and H = log s - sx / s.
struct Stats {
    float m, s, sx;
};

// Folds `b` into `a` (either may be empty: m = -inf, s = 0).
__device__ __forceinline__ Stats merge(Stats a, Stats b) {
    if (b.m > a.m) {
        Stats t = a;
        a = b;
        b = t;
    }
    float d = b.m - a.m, c = __expf(d);
    if (b.s == 0.0f || !(c > 0.0f)) return a;  // nothing to add, or only -inf logits
    return {a.m, a.s + c * b.s, a.sx + c * (b.sx + d * b.s)};
}

// A bf16 row in 16-byte vectors: values [0, head) before its first 16-byte
// boundary (a row of an odd vocab starts at any even address), `vectors`
// groups of 8 from there, and the tail [rest, vocab) after them.
struct Spans {
    int head, vectors, rest;
};
__device__ __forceinline__ Spans spans(const bf16 *z, int vocab) {
    int head = min(vocab, (int)((16 - ((size_t)z & 15)) & 15) / 2);
    int vectors = (vocab - head) / 8;
    return {head, vectors, head + 8 * vectors};
}

__device__ __forceinline__ void unpack8(uint4 u, float (&x)[8]) {
    const __nv_bfloat162 *p = reinterpret_cast<const __nv_bfloat162 *>(&u);
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(p[k]);
        x[2 * k] = f.x;
        x[2 * k + 1] = f.y;
    }
}
__device__ __forceinline__ uint4 pack8(const float (&x)[8]) {
    uint4 u;
    __nv_bfloat162 *p = reinterpret_cast<__nv_bfloat162 *>(&u);
    for (int k = 0; k < 4; k++) p[k] = __floats2bfloat162_rn(x[2 * k], x[2 * k + 1]);
    return u;
}

// The statistics of 8 values in one merge's worth of work: their max first, then the sums against it.
__device__ __forceinline__ Stats stats8(const float (&x)[8]) {
    float m = x[0];
    for (int k = 1; k < 8; k++) m = fmaxf(m, x[k]);
    if (m == -INFINITY) return {-INFINITY, 0.0f, 0.0f};
    float s = 0.0f, sx = 0.0f;
    for (int k = 0; k < 8; k++) {
        float d = x[k] - m, e = __expf(d);
        s += e;
        sx += e * d;
    }
    return {m, s, sx};
}

// This thread's share of the statistics of a row times s.
__device__ __forceinline__ Stats thread_stats(const float *z, int vocab, float s) {
    Stats st = {-INFINITY, 0.0f, 0.0f};
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) st = merge(st, {z[i] * s, 1.0f, 0.0f});
    return st;
}
__device__ __forceinline__ Stats thread_stats(const bf16 *z, int vocab, float s) {
    Spans sp = spans(z, vocab);
    Stats st = {-INFINITY, 0.0f, 0.0f};
    for (int i = threadIdx.x; i < sp.head; i += blockDim.x) st = merge(st, {ld(z, i) * s, 1.0f, 0.0f});
    const uint4 *v = reinterpret_cast<const uint4 *>(z + sp.head);
    for (int j = threadIdx.x; j < sp.vectors; j += blockDim.x) {
        float x[8];
        unpack8(v[j], x);
        for (int k = 0; k < 8; k++) x[k] *= s;
        st = merge(st, stats8(x));
    }
    for (int i = sp.rest + threadIdx.x; i < vocab; i += blockDim.x) st = merge(st, {ld(z, i) * s, 1.0f, 0.0f});
    return st;
}

// Log-partition and entropy of a row times s in one pass over it (online softmax).
template <typename T> __device__ void row_stats(const T *z, int vocab, float s, float *log_z, float *entropy) {
    Stats st = thread_stats(z, vocab, s);
    for (int o = 16; o > 0; o >>= 1)
        st = merge(st, {__shfl_xor_sync(0xffffffff, st.m, o), __shfl_xor_sync(0xffffffff, st.s, o), __shfl_xor_sync(0xffffffff, st.sx, o)});
    __shared__ Stats warp_stats[32];
    if ((threadIdx.x & 31) == 0) warp_stats[threadIdx.x >> 5] = st;
    __syncthreads();
    if (threadIdx.x == 0) {
        Stats all = warp_stats[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) all = merge(all, warp_stats[w]);
        warp_stats[0] = all;
    }
    __syncthreads();
    Stats all = warp_stats[0];
    __syncthreads();
    *log_z = all.m + __logf(all.s);
    *entropy = __logf(all.s) - all.sx / all.s;
}

// Stores a gradient value, and its bf16 rounding when z16 is not null: the
// copy the LM head's backward matmuls read, made here instead of in a pass
// of its own. keep_f32 = 0 skips the f32 store (the matmuls need only the copy).
template <typename T> __device__ __forceinline__ void put(T *z, bf16 *z16, int i, float v, int keep_f32) {
    if (keep_f32) st(z, i, v);
    if (z16) z16[i] = __float2bfloat16(v);
}

// Overwrites values [lo, hi) of a row with g(i, z[i]), through put.
template <typename T, typename G> __device__ __forceinline__ void rewrite_span(T *z, bf16 *z16, int lo, int hi, int keep_f32, G g) {
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) put(z, z16, i, g(i, ld(z, i)), keep_f32);
}
// The whole row. A bf16 row written in place (no copy beside it) goes 8
// values per 16-byte load and store between its scalar head and tail.
template <typename T, typename G> __device__ __forceinline__ void rewrite_row(T *z, bf16 *z16, int vocab, int keep_f32, G g) {
    rewrite_span(z, z16, 0, vocab, keep_f32, g);
}
template <typename G> __device__ __forceinline__ void rewrite_row(bf16 *z, bf16 *z16, int vocab, int keep_f32, G g) {
    if (z16 || !keep_f32) return rewrite_span(z, z16, 0, vocab, keep_f32, g);
    Spans sp = spans(z, vocab);
    rewrite_span(z, z16, 0, sp.head, 1, g);
    uint4 *v = reinterpret_cast<uint4 *>(z + sp.head);
    for (int j = threadIdx.x; j < sp.vectors; j += blockDim.x) {
        float x[8];
        unpack8(v[j], x);
        for (int k = 0; k < 8; k++) x[k] = g(sp.head + 8 * j + k, x[k]);
        v[j] = pack8(x);
    }
    rewrite_span(z, z16, sp.rest, vocab, 1, g);
}

// loss[row] = w * (log Z - z[t]); z <- w * (softmax - onehot), 0 for ignored rows.
template <typename T>
__device__ void cross_entropy(T *logits, float *loss, const unsigned *targets, const float *weights, int vocab, bf16 *logits16, int keep_f32) {
    long row = blockIdx.x;
    T *z = logits + row * vocab;
    bf16 *z16 = logits16 ? logits16 + row * vocab : nullptr;
    unsigned t = targets[row];
    float w = weights[row];
    if (t == IGNORE || w == 0.0f) {
        rewrite_row(z, z16, vocab, keep_f32, [](int, float) { return 0.0f; });
        if (threadIdx.x == 0) loss[row] = 0.0f;
        return;
    }
    float log_z, h;
    row_stats(z, vocab, 1.0f, &log_z, &h);
    float zt = ld(z, t);
    __syncthreads();
    rewrite_row(z, z16, vocab, keep_f32, [&](int i, float x) { return w * (__expf(x - log_z) - (i == (int)t ? 1.0f : 0.0f)); });
    if (threadIdx.x == 0) loss[row] = w * (log_z - zt);
}

template <typename T>
__device__ void logprob_entropy(const T *logits, float *logp, float *entropy, const unsigned *targets, int vocab, float inv_temp) {
    long row = blockIdx.x;
    const T *z = logits + row * vocab;
    float log_z, h;
    row_stats(z, vocab, inv_temp, &log_z, &h);
    if (threadIdx.x == 0) {
        unsigned t = targets[row];
        logp[row] = t == IGNORE ? 0.0f : ld(z, t) * inv_temp - log_z;
        entropy[row] = h;
    }
}

// z <- inv_temp * (c_logp * (onehot - p) - c_ent * p * (log p + H)), p the softmax of z * inv_temp
template <typename T>
__device__ void logit_grad(T *logits, const unsigned *targets, const float *c_logp, const float *c_ent, int vocab, float inv_temp,
                           bf16 *logits16, int keep_f32) {
    long row = blockIdx.x;
    T *z = logits + row * vocab;
    bf16 *z16 = logits16 ? logits16 + row * vocab : nullptr;
    unsigned t = targets[row];
    float cl = c_logp[row], ce = c_ent[row];
    if (t == IGNORE || (cl == 0.0f && ce == 0.0f)) {
        rewrite_row(z, z16, vocab, keep_f32, [](int, float) { return 0.0f; });
        return;
    }
    float log_z, h;
    row_stats(z, vocab, inv_temp, &log_z, &h);  // its barriers order every read of the row before the rewrite
    rewrite_row(z, z16, vocab, keep_f32, [&](int i, float x) {
        float lp = x * inv_temp - log_z, p = __expf(lp);
        return inv_temp * (-cl * p - ce * p * (lp + h) + (i == (int)t ? cl : 0.0f));
    });
}

#define INSTANTIATE(T, S)                                                                                                   \
    extern "C" __global__ void cross_entropy_##S(T *z, float *loss, const unsigned *t, const float *w, int vocab,          \
                                                 bf16 *z16, int keep_f32) {                                                 \
        cross_entropy(z, loss, t, w, vocab, z16, keep_f32);                                                                 \
    }                                                                                                                       \
    extern "C" __global__ void logprob_entropy_##S(const T *z, float *lp, float *h, const unsigned *t, int vocab,          \
                                                   float inv_temp) {                                                        \
        logprob_entropy(z, lp, h, t, vocab, inv_temp);                                                                      \
    }                                                                                                                       \
    extern "C" __global__ void logit_grad_##S(T *z, const unsigned *t, const float *cl, const float *ce, int vocab,        \
                                              float inv_temp, bf16 *z16, int keep_f32) {                                    \
        logit_grad(z, t, cl, ce, vocab, inv_temp, z16, keep_f32);                                                           \
    }

INSTANTIATE(float, f32)
INSTANTIATE(bf16, bf16)
