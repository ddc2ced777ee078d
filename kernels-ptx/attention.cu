// Causal GQA attention, flash-style: no T x T matrix is stored. The forward
// keeps each query's running max, sum and output (online softmax) over key
// tiles staged in shared memory, and saves the row log-sum-exp. The backward
// recomputes probabilities from it: one pass for dQ (per query) and one for
// dK and dV (per key, over every query head of its GQA group).
//
// Layouts as in flash.cu: k/v [B, Hkv, cap, D]; queries, outputs and their
// gradients [tokens, Hq, D], the log-sum-exp and row dots [tokens, Hq]; the
// forward's queries come as spans (query i of a span is token q0 + i and
// sits at its key row's kv_len - queries + i), the backward takes B rows of
// T tokens with T keys per row. One warp owns one row (query or key); each
// lane holds D/32 of its dimensions. The forward skips the log-sum-exp when
// lse is null (inference).
#include "warp_attention.cuh"

template <int D, typename T, typename KT = T>
__device__ void attention_fwd(T *out, float *lse, const T *q, const KT *k, const KT *v, const unsigned *spans, int hq, int hkv, int cap,
                              float scale) {
    constexpr int P = D / 32;
    __shared__ float ks[TILE][D], vs[TILE][D];
    const unsigned *span = spans + 4 * blockIdx.z;
    int tq = span[1], kv_len = span[3];
    if ((int)blockIdx.x * WARPS >= tq) return;  // the grid covers the longest span
    int h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = h / (hq / hkv);
    int i = blockIdx.x * WARPS + warp;
    long row = ((long)span[0] + i) * hq + h;  // of the log-sum-exp; times D, of q and out
    long qrow = row * D;
    long kbase = ((long)span[2] * hkv + g) * cap * D;
    float qr[P], acc[P];
    float m = -INFINITY, l = 0.0f;
    bool active = i < tq;
    int pos = kv_len - tq + i;
    for (int p = 0; p < P; p++) {
        qr[p] = active ? ld(q, qrow + lane + 32 * p) * scale : 0.0f;
        acc[p] = 0.0f;
    }
    int last = min(kv_len, kv_len - tq + (int)(blockIdx.x + 1) * WARPS);  // keys any query of this block can see
    for (int j0 = 0; j0 < last; j0 += TILE) {
        __syncthreads();
        load_kv_tile<D>(ks, vs, k, v, kbase, j0, kv_len);
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < TILE && j0 + jj <= pos; jj++) online_step<P>(qr, ks[jj], vs[jj], m, l, acc);
    }
    if (!active) return;
    for (int p = 0; p < P; p++) st(out, qrow + lane + 32 * p, acc[p] / l);
    if (lse && lane == 0) lse[row] = m + __logf(l);
}

// rowdot[token, h] = dout . out over that head's row (the softmax backward's per-row constant).
template <int D, typename T> __device__ void attention_rowdot(float *rowdot, const T *dout, const T *out, long rows) {
    constexpr int P = D / 32;
    long r = (long)blockIdx.x * WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    float s = 0.0f;
    for (int p = 0; p < P; p++) s += ld(dout, r * D + lane + 32 * p) * ld(out, r * D + lane + 32 * p);
    s = warp_sum(s);
    if (lane == 0) rowdot[r] = s;
}

// dQ_i = scale * sum_j P_ij (dO_i . v_j - rowdot_i) k_j   (training: tq == cap == kv_len)
template <int D, typename T>
__device__ void attention_bwd_dq(T *dq, const T *dout, const T *q, const T *k, const T *v, const float *lse, const float *rowdot, int hq,
                                 int hkv, int t, float scale) {
    constexpr int P = D / 32;
    __shared__ float ks[TILE][D], vs[TILE][D];
    int b = blockIdx.z, h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = h / (hq / hkv);
    int i = blockIdx.x * WARPS + warp;
    bool active = i < t;
    long row = ((long)b * t + i) * hq + h, qrow = row * D;
    long kbase = ((long)b * hkv + g) * t * D;
    float qr[P], dor[P], acc[P];
    float li = 0.0f, di = 0.0f;
    if (active) {
        li = lse[row];
        di = rowdot[row];
    }
    for (int p = 0; p < P; p++) {
        qr[p] = active ? ld(q, qrow + lane + 32 * p) * scale : 0.0f;
        dor[p] = active ? ld(dout, qrow + lane + 32 * p) : 0.0f;
        acc[p] = 0.0f;
    }
    int last = min(t, (int)(blockIdx.x + 1) * WARPS);
    for (int j0 = 0; j0 < last; j0 += TILE) {
        __syncthreads();
        load_kv_tile<D>(ks, vs, k, v, kbase, j0, t);
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < TILE && j0 + jj <= i; jj++) {
            float s = 0.0f, dp = 0.0f;
            for (int p = 0; p < P; p++) {
                s += qr[p] * ks[jj][lane + 32 * p];
                dp += dor[p] * vs[jj][lane + 32 * p];
            }
            s = warp_sum(s);
            dp = warp_sum(dp);
            float ds = __expf(s - li) * (dp - di) * scale;
            for (int p = 0; p < P; p++) acc[p] += ds * ks[jj][lane + 32 * p];
        }
    }
    if (active)
        for (int p = 0; p < P; p++) st(dq, qrow + lane + 32 * p, acc[p]);
}

// dV_j = sum_{h in group, i >= j} P_ij dO_i;  dK_j = scale * sum P_ij (dO_i . v_j - rowdot_i) q_i
template <int D, typename T>
__device__ void attention_bwd_dkdv(T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v, const float *lse, const float *rowdot,
                                   int hq, int hkv, int t, float scale) {
    constexpr int P = D / 32;
    __shared__ float qs[TILE][D], dos[TILE][D];
    __shared__ float ls[TILE], ds_[TILE];
    int b = blockIdx.z, g = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int group = hq / hkv;
    int j = blockIdx.x * WARPS + warp;
    bool active = j < t;
    long krow = (((long)b * hkv + g) * t + j) * D;
    float kr[P], vr[P], dka[P], dva[P];
    for (int p = 0; p < P; p++) {
        kr[p] = active ? ld(k, krow + lane + 32 * p) : 0.0f;
        vr[p] = active ? ld(v, krow + lane + 32 * p) : 0.0f;
        dka[p] = 0.0f;
        dva[p] = 0.0f;
    }
    int first = blockIdx.x * WARPS;  // queries before the block's first key see none of its keys
    for (int hh = 0; hh < group; hh++) {
        int h = g * group + hh;
        long qbase = (long)b * t * hq + h;  // query i's row: qbase + i · hq
        for (int i0 = first - first % TILE; i0 < t; i0 += TILE) {
            __syncthreads();
            for (int e = threadIdx.x; e < TILE * D; e += blockDim.x) {
                int i = i0 + e / D, d = e % D;
                qs[e / D][d] = i < t ? ld(q, (qbase + (long)i * hq) * D + d) * scale : 0.0f;
                dos[e / D][d] = i < t ? ld(dout, (qbase + (long)i * hq) * D + d) : 0.0f;
            }
            for (int e = threadIdx.x; e < TILE; e += blockDim.x) {
                ls[e] = i0 + e < t ? lse[qbase + (long)(i0 + e) * hq] : 0.0f;
                ds_[e] = i0 + e < t ? rowdot[qbase + (long)(i0 + e) * hq] : 0.0f;
            }
            __syncthreads();
            if (!active) continue;
            for (int ii = 0; ii < TILE && i0 + ii < t; ii++) {
                if (i0 + ii < j) continue;
                float s = 0.0f, dp = 0.0f;
                for (int p = 0; p < P; p++) {
                    s += qs[ii][lane + 32 * p] * kr[p];
                    dp += dos[ii][lane + 32 * p] * vr[p];
                }
                s = warp_sum(s);
                dp = warp_sum(dp);
                float pr = __expf(s - ls[ii]);
                float dsv = pr * (dp - ds_[ii]);
                for (int p = 0; p < P; p++) {
                    dva[p] += pr * dos[ii][lane + 32 * p];
                    dka[p] += dsv * qs[ii][lane + 32 * p];  // qs already carries the scale
                }
            }
        }
    }
    if (active)
        for (int p = 0; p < P; p++) {
            st(dk, krow + lane + 32 * p, dka[p]);
            st(dv, krow + lane + 32 * p, dva[p]);
        }
}

#define INSTANTIATE(D, T, S)                                                                                                \
    extern "C" __global__ void attention_fwd_d##D##_##S(T *out, float *lse, const T *q, const T *k, const T *v,              \
                                                        const unsigned *spans, int hq, int hkv, int cap, float scale) {       \
        attention_fwd<D, T>(out, lse, q, k, v, spans, hq, hkv, cap, scale);                                                   \
    }                                                                                                                         \
    extern "C" __global__ void attention_rowdot_d##D##_##S(float *rowdot, const T *dout, const T *out, long rows) {          \
        attention_rowdot<D, T>(rowdot, dout, out, rows);                                                                      \
    }                                                                                                                         \
    extern "C" __global__ void attention_bwd_dq_d##D##_##S(T *dq, const T *dout, const T *q, const T *k, const T *v,         \
                                                           const float *lse, const float *rowdot, int hq, int hkv, int t,    \
                                                           float scale) {                                                     \
        attention_bwd_dq<D, T>(dq, dout, q, k, v, lse, rowdot, hq, hkv, t, scale);                                            \
    }                                                                                                                         \
    extern "C" __global__ void attention_bwd_dkdv_d##D##_##S(T *dk, T *dv, const T *dout, const T *q, const T *k,            \
                                                             const T *v, const float *lse, const float *rowdot, int hq,      \
                                                             int hkv, int t, float scale) {                                   \
        attention_bwd_dkdv<D, T>(dk, dv, dout, q, k, v, lse, rowdot, hq, hkv, t, scale);                                      \
    }

// Prefill of f32 activations against a bf16 KV cache (generation off the tensor cores).
#define INSTANTIATE_BF16_KV(D)                                                                                              \
    extern "C" __global__ void attention_fwd_bf16kv_d##D##_f32(float *out, float *lse, const float *q, const bf16 *k,      \
                                                               const bf16 *v, const unsigned *spans, int hq, int hkv,       \
                                                               int cap, float scale) {                                       \
        attention_fwd<D, float, bf16>(out, lse, q, k, v, spans, hq, hkv, cap, scale);                                        \
    }

INSTANTIATE(32, float, f32)
INSTANTIATE(64, float, f32)
INSTANTIATE(128, float, f32)
INSTANTIATE(32, bf16, bf16)
INSTANTIATE(64, bf16, bf16)
INSTANTIATE(128, bf16, bf16)
INSTANTIATE_BF16_KV(32)
INSTANTIATE_BF16_KV(64)
INSTANTIATE_BF16_KV(128)
