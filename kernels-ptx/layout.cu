// Layout moves between token-major [batch, seq, heads, hd] activations and
// head-major [batch, heads, cap, hd] attention operands (the KV-cache write
// when cap > seq, at per-row offsets starts[b]).
#include "common.cuh"

// Coordinates of flat element k of a [batch, seq, heads, hd] tensor.
struct Bthd {
    int b, t, h, d;
};

__device__ __forceinline__ Bthd unflatten(long k, int seq, int heads, int hd) {
    Bthd c;
    c.d = (int)(k % hd);
    long r = k / hd;
    c.h = (int)(r % heads);
    r /= heads;
    c.t = (int)(r % seq);
    c.b = (int)(r / seq);
    return c;
}

template <typename T>
__device__ void to_head_major(T *dst, const T *src, int batch, int seq, int heads, int hd, int cap, const unsigned *starts) {
    FOR_EACH(k, (long)batch * seq * heads * hd) {
        Bthd c = unflatten(k, seq, heads, hd);
        st(dst, (((long)c.b * heads + c.h) * cap + starts[c.b] + c.t) * hd + c.d, ld(src, k));
    }
}

template <typename T> __device__ void to_token_major(T *dst, const T *src, int batch, int seq, int heads, int hd) {
    FOR_EACH(k, (long)batch * seq * heads * hd) {
        Bthd c = unflatten(k, seq, heads, hd);
        st(dst, k, ld(src, (((long)c.b * heads + c.h) * seq + c.t) * hd + c.d));
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
