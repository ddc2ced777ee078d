// Element-wise kernels: the bias gradient's column sums, SwiGLU
// forward and backward, and f32 <-> bf16 casts. Each exists for f32
// and bf16 storage (suffix _f32 / _bf16); math is in f32.
#include "common.cuh"

// dbias[c] += sum_r dy[r, c]: one thread per column, rows in order (deterministic).
// Column sums in two deterministic passes (many row blocks keep every SM
// busy): partial[b, c] = sum of dy over block b's rows, then
// out[c] += sum_b partial[b, c] in block order.
template <typename T> __device__ void bias_grad_partial(float *partial, const T *dy, long rows, int cols, int rows_per_block) {
    long r0 = (long)blockIdx.x * rows_per_block;
    long r1 = min(rows, r0 + rows_per_block);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float acc = 0.0f;
        for (long r = r0; r < r1; r++) acc += ld(dy, r * cols + c);
        partial[(long)blockIdx.x * cols + c] = acc;
    }
}

// out[c] += Σ_b partial[b, c], in a fixed order (deterministic). A block of
// 32 warps takes 32 columns: warp w sums partial rows w, w + 32, ... (its
// lanes read 32 adjacent values of a row), then the first warp adds the 32
// sums in warp order. Few columns make few blocks, so each block brings many
// warps to hide the loads' latency. Launched with cols / 32 blocks (rounded
// up) of 1024 threads.
#define COLUMN_WARPS 32
static_assert(COLUMN_WARPS * 32 == 1024, "engine/backend/cuda/mod.rs launches column_partials_add with 1024 threads");
template <typename T> __device__ void column_partials_add(T *out, const float *partial, int blocks, int cols) {
    __shared__ float sums[COLUMN_WARPS][32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, c = blockIdx.x * 32 + lane;
    float acc = 0.0f;
    if (c < cols)
        for (int b = warp; b < blocks; b += COLUMN_WARPS) acc += partial[(long)b * cols + c];
    sums[warp][lane] = acc;
    __syncthreads();
    if (warp != 0 || c >= cols) return;
    float total = sums[0][lane];
    for (int w = 1; w < COLUMN_WARPS; w++) total += sums[w][lane];
    st(out, c, ld(out, c) + total);
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + __expf(-x)); }

// The SwiGLU kernels read the stacked projection gu [rows, 2 ff] (each
// row's gate values, then its up values) and index in 32 bits (the host
// checks the sizes). When ff is a multiple of 4 they take four values per
// thread and step (16-byte f32 and 8-byte bf16 accesses, aligned because
// every buffer starts 16-byte aligned), else one.
__device__ __forceinline__ float swiglu(float g, float u) { return g * sigmoidf(g) * u; }
// d/dgate and d/dup of swiglu(g, u) times d.
__device__ __forceinline__ float2 swiglu_grad(float g, float u, float d) {
    float s = sigmoidf(g);
    return make_float2(d * u * s * (1.0f + g * (1.0f - s)), d * (g * s));
}

// Element group e's offsets (64-bit: rows x 2 ff passes 2^31 on large
// models), each row of ff / step groups of `step` values: its gate in the
// projection [rows, 2 ff] (the up value ff further), and its output [rows, ff].
struct SwigluOffsets {
    long gate, out;
};
__device__ __forceinline__ SwigluOffsets swiglu_offsets(long e, int per_row, int step, int ff) {
    long r = e / per_row;
    int c = step * (int)(e - r * per_row);
    return {2 * r * ff + c, r * ff + c};
}

// h [rows, ff]; h16, when not null, also gets h rounded to bf16 (the down
// projection's input); h may then be null (a matmul-only output). The
// projection (TI) may be stored in bf16 while the rest is f32 (training).
template <typename T, typename TI> __device__ void swiglu_fwd(T *h, const TI *gu, int rows, int ff, bf16 *h16) {
    int step = ff % 4 == 0 ? 4 : 1, per_row = ff / step;
    FOR_EACH(e, (long)rows * per_row) {
        auto [gi, o] = swiglu_offsets(e, per_row, step, ff);
        if (step == 1) {
            float y = swiglu(ld(gu, gi), ld(gu, gi + ff));
            if (h) st(h, o, y);
            if (h16) st(h16, o, y);
            continue;
        }
        float4 g = ld4(gu, gi), u = ld4(gu, gi + ff);
        float4 y = make_float4(swiglu(g.x, u.x), swiglu(g.y, u.y), swiglu(g.z, u.z), swiglu(g.w, u.w));
        if (h) st4(h, o, y);
        if (h16) st4(h16, o, y);
    }
}

// dgu [rows, 2 ff] in the projection's layout; dgu16, when not null, also
// gets it rounded to bf16 (the projection's backward matmuls read that);
// dgu may then be null.
template <typename T, typename TD, typename TI>
__device__ void swiglu_bwd(T *dgu, const TD *dh, const TI *gu, int rows, int ff, bf16 *dgu16) {
    int step = ff % 4 == 0 ? 4 : 1, per_row = ff / step;
    FOR_EACH(e, (long)rows * per_row) {
        auto [gi, o] = swiglu_offsets(e, per_row, step, ff);
        if (step == 1) {
            float2 d = swiglu_grad(ld(gu, gi), ld(gu, gi + ff), ld(dh, o));
            st_pair(dgu, gi, ff, d.x, d.y);
            st_pair(dgu16, gi, ff, d.x, d.y);
            continue;
        }
        float4 g = ld4(gu, gi), u = ld4(gu, gi + ff), d = ld4(dh, o);
        float2 r0 = swiglu_grad(g.x, u.x, d.x), r1 = swiglu_grad(g.y, u.y, d.y), r2 = swiglu_grad(g.z, u.z, d.z), r3 = swiglu_grad(g.w, u.w, d.w);
        float4 dg = make_float4(r0.x, r1.x, r2.x, r3.x), du = make_float4(r0.y, r1.y, r2.y, r3.y);
        st_pair(dgu, gi, ff, dg, du);
        st_pair(dgu16, gi, ff, dg, du);
    }
}

#define INSTANTIATE(T, S)                                                                                                  \
    extern "C" __global__ void bias_grad_partial_##S(float *p, const T *dy, long rows, int cols, int rows_per_block) {    \
        bias_grad_partial(p, dy, rows, cols, rows_per_block);                                                              \
    }                                                                                                                      \
    extern "C" __global__ void column_partials_add_##S(T *out, const float *p, int blocks, int cols) {                    \
        column_partials_add(out, p, blocks, cols);                                                                         \
    }
INSTANTIATE(float, f32)
INSTANTIATE(bf16, bf16)

// f32 activations around a gate/up projection in f32, or stored in bf16 (training).
#define INSTANTIATE_SWIGLU(TI, S)                                                                                            \
    extern "C" __global__ void swiglu_fwd_##S(float *h, const TI *gu, int rows, int ff, bf16 *h16) {                        \
        swiglu_fwd(h, gu, rows, ff, h16);                                                                                   \
    }                                                                                                                       \
    extern "C" __global__ void swiglu_bwd_##S(float *dgu, const float *dh, const TI *gu, int rows, int ff, bf16 *dgu16) {   \
        swiglu_bwd(dgu, dh, gu, rows, ff, dgu16);                                                                           \
    }

INSTANTIATE_SWIGLU(float, f32)
INSTANTIATE_SWIGLU(bf16, bf16in_f32)
// A training step's: the SwiGLU output's gradient is a bf16 matmul output too.
extern "C" __global__ void swiglu_bwd_bf16(float *dgu, const bf16 *dh, const bf16 *gu, int rows, int ff, bf16 *dgu16) {
    swiglu_bwd(dgu, dh, gu, rows, ff, dgu16);
}

// Four values per thread and step (16-byte loads, 8-byte stores); both buffers start aligned.
extern "C" __global__ void cast_f32_to_bf16(bf16 *out, const float *in, long n) {
    long quads = n / 4;
    FOR_EACH(i, quads) {
        reinterpret_cast<uint2 *>(out)[i] = to_bf16x4(reinterpret_cast<const float4 *>(in)[i]);
    }
    FOR_EACH(i, n - quads * 4) out[quads * 4 + i] = __float2bfloat16(in[quads * 4 + i]);
}

extern "C" __global__ void cast_bf16_to_f32(float *out, const bf16 *in, long n) {
    FOR_EACH(i, n) out[i] = __bfloat162float(in[i]);
}
