// Layout moves between token-major [batch, seq, heads, hd] activations and
// head-major [batch, heads, cap, hd] attention operands (the KV-cache write
// when cap > seq, at per-row offsets starts[b]).
#include "common.cuh"

template <typename T>
__device__ void to_head_major(T *dst, const T *src, int batch, int seq, int heads, int hd, int cap, const unsigned *starts) {
    FOR_EACH(k, (long)batch * seq * heads * hd) {
        int d = (int)(k % hd);
        long r = k / hd;
        int h = (int)(r % heads);
        r /= heads;
        int t = (int)(r % seq);
        int b = (int)(r / seq);
        st(dst, (((long)b * heads + h) * cap + starts[b] + t) * hd + d, ld(src, k));
    }
}

template <typename T> __device__ void to_token_major(T *dst, const T *src, int batch, int seq, int heads, int hd) {
    FOR_EACH(k, (long)batch * seq * heads * hd) {
        int d = (int)(k % hd);
        long r = k / hd;
        int h = (int)(r % heads);
        r /= heads;
        int t = (int)(r % seq);
        int b = (int)(r / seq);
        st(dst, k, ld(src, (((long)b * heads + h) * seq + t) * hd + d));
    }
}

#define INSTANTIATE(T, S)                                                                                                   \
    extern "C" __global__ void to_head_major_##S(T *dst, const T *src, int batch, int seq, int heads, int hd, int cap,     \
                                                 const unsigned *starts) {                                                  \
        to_head_major(dst, src, batch, seq, heads, hd, cap, starts);                                                        \
    }                                                                                                                       \
    extern "C" __global__ void to_token_major_##S(T *dst, const T *src, int batch, int seq, int heads, int hd) {           \
        to_token_major(dst, src, batch, seq, heads, hd);                                                                    \
    }

INSTANTIATE(float, f32)
INSTANTIATE(bf16, bf16)
