// Helpers of the one-warp-per-row attention kernels (attention.cu, decode.cu):
// a warp owns one row, each lane D/32 of its dimensions, and key/value tiles
// are staged in shared memory in f32.
#pragma once
#include "common.cuh"

#define WARPS 8
#define TILE 32

// Stages keys and values [j0, j0 + TILE) of one head into shared memory (zeros past `valid`).
template <int D, typename T>
__device__ __forceinline__ void load_kv_tile(float (*ks)[D], float (*vs)[D], const T *k, const T *v, long base, int j0, int valid) {
    for (int e = threadIdx.x; e < TILE * D; e += blockDim.x) {
        int j = j0 + e / D, d = e % D;
        ks[e / D][d] = j < valid ? ld(k, base + (long)j * D + d) : 0.0f;
        vs[e / D][d] = j < valid ? ld(v, base + (long)j * D + d) : 0.0f;
    }
}

// Folds one key (row kr) and value (row vr) into a warp's online softmax:
// running max m, sum l and unnormalized output acc, for the scaled query qr.
template <int P>
__device__ __forceinline__ void online_step(const float (&qr)[P], const float *kr, const float *vr, float &m, float &l, float (&acc)[P]) {
    int lane = threadIdx.x & 31;
    float s = 0.0f;
    for (int p = 0; p < P; p++) s += qr[p] * kr[lane + 32 * p];
    s = warp_sum(s);
    float m2 = fmaxf(m, s);
    float corr = __expf(m - m2), w = __expf(s - m2);
    l = l * corr + w;
    for (int p = 0; p < P; p++) acc[p] = acc[p] * corr + w * vr[lane + 32 * p];
    m = m2;
}
