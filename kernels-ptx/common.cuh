// Shared helpers for the kernel families: bf16 <-> f32 loads and stores, so
// each kernel is written once over its storage type and accumulates in f32.
#pragma once
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float ld(const float *p, long i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16 *p, long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float *p, long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16 *p, long i, float v) { p[i] = __float2bfloat16(v); }

// Four consecutive values as f32, and stored from f32: one 16-byte f32 or
// 8-byte bf16 access (i a multiple of 4, the buffer 16-byte aligned).
__device__ __forceinline__ float4 ld4(const float *p, long i) { return *reinterpret_cast<const float4 *>(p + i); }
__device__ __forceinline__ float4 ld4(const bf16 *p, long i) {
    uint2 u = *reinterpret_cast<const uint2 *>(p + i);
    float2 lo = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&u.x));
    float2 hi = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&u.y));
    return make_float4(lo.x, lo.y, hi.x, hi.y);
}
// Four f32 rounded to bf16, packed for one 8-byte store.
__device__ __forceinline__ uint2 to_bf16x4(float4 x) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
    return make_uint2(*reinterpret_cast<unsigned *>(&lo), *reinterpret_cast<unsigned *>(&hi));
}
__device__ __forceinline__ void st4(float *p, long i, float4 v) { *reinterpret_cast<float4 *>(p + i) = v; }
__device__ __forceinline__ void st4(bf16 *p, long i, float4 v) { *reinterpret_cast<uint2 *>(p + i) = to_bf16x4(v); }
// Two consecutive values in one 8-byte f32 or 4-byte bf16 store (i even).
__device__ __forceinline__ void st2(float *p, long i, float a, float b) { *reinterpret_cast<float2 *>(p + i) = make_float2(a, b); }
__device__ __forceinline__ void st2(bf16 *p, long i, float a, float b) {
    *reinterpret_cast<__nv_bfloat162 *>(p + i) = __floats2bfloat162_rn(a, b);
}

// Stores a at i and c at i + gap (a pair of values, or of four-value
// vectors), unless p is null: the kernels writing an f32 output and its
// bf16 copy skip whichever their caller does not keep.
template <typename T> __device__ __forceinline__ void st_pair(T *p, long i, long gap, float a, float c) {
    if (!p) return;
    st(p, i, a);
    st(p, i + gap, c);
}
template <typename T> __device__ __forceinline__ void st_pair(T *p, long i, long gap, float4 a, float4 c) {
    if (!p) return;
    st4(p, i, a);
    st4(p, i + gap, c);
}

// RoPE (HF's rotate_half rotation) on four pairs (a[k], c[k]) of one
// head's values i + k and i + k + head_dim / 2, at `tab` = position ·
// head_dim / 2 + i of the cos/sin tables; `sign` -1 is the inverse rotation
// (the backward's).
__device__ __forceinline__ void rotate4(float4 &a, float4 &c, const float *cos_t, const float *sin_t, long tab, float sign) {
    float4 co = ld4(cos_t, tab), si = ld4(sin_t, tab);
    float4 x0 = make_float4(a.x * co.x - c.x * sign * si.x, a.y * co.y - c.y * sign * si.y, a.z * co.z - c.z * sign * si.z,
                            a.w * co.w - c.w * sign * si.w);
    c = make_float4(c.x * co.x + a.x * sign * si.x, c.y * co.y + a.y * sign * si.y, c.z * co.z + a.z * sign * si.z, c.w * co.w + a.w * sign * si.w);
    a = x0;
}

// `T *name` on the block's dynamic shared memory (sized at launch, which
// may pass the 48 KB static limit once the function allows it).
#ifndef DYNAMIC_SHARED
#define DYNAMIC_SHARED(T, name)                                 \
    extern __shared__ __align__(16) unsigned char name##_raw[]; \
    T *name = reinterpret_cast<T *>(name##_raw)
#endif

// Grid-stride loop over n elements.
#define FOR_EACH(i, n) for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < (long)(n); i += (long)gridDim.x * blockDim.x)

// Reduces v over the warp with `op`, the same tree in every lane (so every
// lane gets the same bits).
template <typename T, typename Op> __device__ __forceinline__ T warp_reduce(T v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// Reduces v over the block with `op` (blockDim.x a multiple of 32, at most
// 1024); `identity` fills the lanes past the last warp's partial.
template <typename T, typename Op> __device__ __forceinline__ T block_reduce(T v, Op op, T identity) {
    __shared__ T partial[32];
    v = warp_reduce(v, op);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = warp_reduce(lane < (int)(blockDim.x >> 5) ? partial[lane] : identity, op);
        if (lane == 0) partial[0] = v;
    }
    __syncthreads();
    T out = partial[0];
    __syncthreads();
    return out;
}

struct SumOp {
    __device__ float operator()(float a, float b) const { return a + b; }
};

// Sum of a float over the warp, and over the block.
__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp()); }
__device__ __forceinline__ float block_sum(float v) { return block_reduce(v, SumOp(), 0.0f); }
