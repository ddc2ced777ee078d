// Decode attention, one query per row (the generation step), flash-decoding
// style. Block (split, kv head, row) takes keys [split * chunk, +chunk) for
// every query head of the GQA group, one warp per query head, so each staged
// key/value tile serves the whole group. With one split it writes the output
// and log-sum-exp; with several, each split leaves its (max, sum, output)
// and attention_decode_combine merges them, so a long cache or a small batch
// still fills the GPU.
//
// Layouts: q/out [B, Hq, 1, D] (f32); k/v [B, Hkv, cap, D] (KT: f32 or bf16)
// with kv_lens[b] valid positions, all of which the query sees. lse may be
// null (generation does not keep it); out16, when not null, gets the output
// rounded to bf16 for the output projection.
#include "warp_attention.cuh"

// Writes one output value, and its bf16 rounding when out16 is not null
// (the output projection's matmul reads that; out may then be null).
__device__ __forceinline__ void put_out(float *out, bf16 *out16, long i, float v) {
    if (out) out[i] = v;
    if (out16) out16[i] = __float2bfloat16(v);
}

template <int D, typename KT>
__device__ void attention_decode(float *out, bf16 *out16, float *lse, float *part_o, float *part_ml, const float *q, const KT *k,
                                 const KT *v, const unsigned *kv_lens, int hq, int hkv, int cap, int chunk, float scale) {
    constexpr int P = D / 32;
    __shared__ float ks[TILE][D], vs[TILE][D];
    int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int h = kvh * (hq / hkv) + warp;
    int kv_len = kv_lens[b], begin = split * chunk, end = min(kv_len, begin + chunk);
    long row = (long)b * hq + h;
    long kbase = ((long)b * hkv + kvh) * cap * D;
    float qr[P], acc[P];
    for (int p = 0; p < P; p++) {
        qr[p] = q[row * D + lane + 32 * p] * scale;
        acc[p] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j0 = begin; j0 < end; j0 += TILE) {
        __syncthreads();
        load_kv_tile<D>(ks, vs, k, v, kbase, j0, end);
        __syncthreads();
        for (int jj = 0; jj < TILE && j0 + jj < end; jj++) online_step<P>(qr, ks[jj], vs[jj], m, l, acc);
    }
    if (gridDim.x == 1) {
        for (int p = 0; p < P; p++) put_out(out, out16, row * D + lane + 32 * p, l > 0.0f ? acc[p] / l : 0.0f);
        if (lse && lane == 0) lse[row] = m + __logf(l);
        return;
    }
    long part = row * gridDim.x + split;
    for (int p = 0; p < P; p++) part_o[part * D + lane + 32 * p] = acc[p];
    if (lane == 0) {
        part_ml[2 * part] = m;
        part_ml[2 * part + 1] = l;
    }
}

// Merges each row's splits: out = Σ e^(m_s - M) acc_s / Σ e^(m_s - M) l_s, one warp per (row, head).
template <int D>
__device__ void attention_decode_combine(float *out, bf16 *out16, float *lse, const float *part_o, const float *part_ml, long rows, int splits) {
    constexpr int P = D / 32;
    long r = (long)blockIdx.x * WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    float big = -INFINITY;
    for (int s = 0; s < splits; s++) big = fmaxf(big, part_ml[2 * (r * splits + s)]);
    float l = 0.0f, acc[P] = {};
    for (int s = 0; s < splits; s++) {
        float m = part_ml[2 * (r * splits + s)];
        if (m == -INFINITY) continue;  // a split past this row's keys
        float w = __expf(m - big);
        l += w * part_ml[2 * (r * splits + s) + 1];
        for (int p = 0; p < P; p++) acc[p] += w * part_o[(r * splits + s) * D + lane + 32 * p];
    }
    for (int p = 0; p < P; p++) put_out(out, out16, r * D + lane + 32 * p, l > 0.0f ? acc[p] / l : 0.0f);
    if (lse && lane == 0) lse[r] = big + __logf(l);
}

#define INSTANTIATE(D, KT, NAME)                                                                                            \
    extern "C" __global__ void NAME(float *out, bf16 *out16, float *lse, float *part_o, float *part_ml, const float *q,    \
                                    const KT *k, const KT *v, const unsigned *lens, int hq, int hkv, int cap, int chunk,     \
                                    float scale) {                                                                            \
        attention_decode<D, KT>(out, out16, lse, part_o, part_ml, q, k, v, lens, hq, hkv, cap, chunk, scale);                 \
    }
#define INSTANTIATE_COMBINE(D)                                                                                              \
    extern "C" __global__ void attention_decode_combine_d##D(float *out, bf16 *out16, float *lse, const float *part_o,    \
                                                             const float *part_ml, long rows, int splits) {                   \
        attention_decode_combine<D>(out, out16, lse, part_o, part_ml, rows, splits);                                          \
    }

// f32 activations against an f32 cache, and against a bf16 cache.
INSTANTIATE(32, float, attention_decode_d32_f32)
INSTANTIATE(64, float, attention_decode_d64_f32)
INSTANTIATE(128, float, attention_decode_d128_f32)
INSTANTIATE(32, bf16, attention_decode_bf16kv_d32_f32)
INSTANTIATE(64, bf16, attention_decode_bf16kv_d64_f32)
INSTANTIATE(128, bf16, attention_decode_bf16kv_d128_f32)
INSTANTIATE_COMBINE(32)
INSTANTIATE_COMBINE(64)
INSTANTIATE_COMBINE(128)
