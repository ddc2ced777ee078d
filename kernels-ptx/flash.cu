// Causal GQA flash attention on the tensor cores (mma.sync m16n8k16, bf16
// inputs, f32 accumulation), forward and backward. Same contract as
// attention.cu, which stays the exact f32 path: no T x T matrix is stored, the
// forward saves the natural-log row log-sum-exp, and the backward recomputes
// probabilities from it once, per key block and query head: dK and dV, and
// the block's share of dQ added into one f32 sum per query in a fixed order
// of key blocks (then a sum over each GQA group's dK/dV), so it is
// deterministic. The backward writes the gradient of the fused q/k/v
// projection attention's entry read (layout.cu's qkv_from_tokens), RoPE
// rotated back on the way: no separate exit pass.
//
// Each warp owns 16 rows (32 in the forward up to head_dim 64). Score
// fragments are kept in registers and turned into the A operand of the next
// product directly (the m16n8 accumulator layout matches the m16n8k16 A
// layout), as in FlashAttention-2.
// Layouts: k/v [B, Hkv, cap, D]; queries, outputs and their gradients
// token-major [tokens, Hq, D] (as the projections around attention), the
// log-sum-exp and row dots [tokens, Hq]. The forward takes its queries as
// spans (four u32 each: first token, queries, key/value row, valid keys):
// span s's query i is token q0 + i and sits at position kv_len - queries + i
// of its key row, so one kernel runs equal rows (q0 = b * Tq) and packed
// prompts of different lengths. The backward (training) takes B rows of T
// tokens with T keys per row, and writes [tokens, (Hq + 2 Hkv) · D].
#include "common.cuh"

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

// Register layouts of m16n8k16 (g = lane / 4, t = lane % 4):
//   A 16x16: a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
//   B 16x8:  b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8..2t+9, n g)
//   C 16x8:  c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#ifdef KERNEL_EMULATION
    emu::mma_m16n8k16(d, a, b0, b1);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Two bf16 in one register, the first in the low half (the lower index).
__device__ __forceinline__ unsigned pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned *>(&v);
}
__device__ __forceinline__ unsigned pack(bf16 lo, bf16 hi) {
    __nv_bfloat162 v;
    v.x = lo;
    v.y = hi;
    return *reinterpret_cast<unsigned *>(&v);
}
// Four 8x8 bf16 matrices from shared memory in one instruction: lane l
// gives the address of row l % 8 of matrix l / 8 (16-byte aligned), and
// every lane gets, of each matrix, the pair (row l / 4, columns 2(l % 4),
// +1), or with .trans the pair (rows 2(l % 4), +1, column l / 4): two
// m16n8k16 B fragments, or one A fragment, either way.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const bf16 *p) {
#ifdef KERNEL_EMULATION
    emu::ldmatrix_x4(r, p, false);
#else
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const bf16 *p) {
#ifdef KERNEL_EMULATION
    emu::ldmatrix_x4(r, p, true);
#else
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}

// 2^x in one special-function instruction: results below the smallest
// normal float flush to zero (exp2f keeps them, for a few more instructions
// per call), which no softmax sum can tell apart.
__device__ __forceinline__ float fast_exp2(float x) {
#ifdef KERNEL_EMULATION
    float r = exp2f(x);
    return r < 1.17549435e-38f ? 0.0f : r;
#else
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
#endif
}

// 16 bytes from global to shared memory without passing through registers
// (cp.async, sm_80+), or 16 zero bytes when `fill` is false. Copies are
// grouped by commit and waited for by group: wait<N> returns once at most N
// of this thread's groups are still in flight (a __syncthreads must follow
// before other threads read them).
__device__ __forceinline__ void copy_async16(void *smem, const void *gmem, bool fill) {
#ifdef KERNEL_EMULATION
    emu::cp_async(smem, gmem, 16, fill);
#else
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(fill ? 16 : 0));
#endif
}
__device__ __forceinline__ void commit_copies() {
#ifdef KERNEL_EMULATION
    emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void wait_copies() {
#ifdef KERNEL_EMULATION
    emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// The flash backward's dQ sums are added in a fixed order of key blocks:
// each block waits for the blocks before it in that order to have added
// their shares, through a counter per (row, head, query tile, warp). Blocks
// are dispatched in index order and wait only for lower-indexed ones, which
// are then resident or done, so every wait ends. wait_count returns, in the
// whole warp, once *counter reaches `count` (one lane polls, acquiring what
// the counted warps wrote); count_done adds one to *counter once the warp's
// additions are issued (a release: they are visible before the count).
__device__ __forceinline__ void wait_count(const unsigned *counter, unsigned count) {
#ifdef KERNEL_EMULATION
    emu::expect_count(counter, count);
#else
    if ((threadIdx.x & 31) == 0)
        for (unsigned polls = 0;; polls++) {
            unsigned seen;
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(seen) : "l"(counter) : "memory");
            if (seen >= count) break;
            // A wait lasts microseconds; one past seconds of polls means the
            // order it relies on failed: end the launch with an error, not a hang.
            if (polls == 1u << 22) __trap();
        }
#endif
    __syncwarp();
}
__device__ __forceinline__ void count_done(unsigned *counter) {
    __syncwarp();
    if ((threadIdx.x & 31) == 0) {
#ifdef KERNEL_EMULATION
        atomicAdd(counter, 1u);
#else
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;\n" ::"l"(counter) : "memory");
#endif
    }
}
// *p += v where the L2 cache holds p (red.add.f32: the warp does not wait for it).
__device__ __forceinline__ void add_at_l2(float *p, float v) {
#ifdef KERNEL_EMULATION
    atomicAdd(p, v);
#else
    asm volatile("red.global.add.f32 [%0], %1;\n" ::"l"(p), "f"(v) : "memory");
#endif
}

// Rows of D values `pitch` apart from `base` on (D for keys and values, Hq · D
// for token-major queries) are the operands below.

// Stages rows [r0, r0 + ROWS) as bf16 with row stride SD (zeros at and past `valid`),
// four values per thread and step; f32 sources convert on the way, so these stores are synchronous.
template <int ROWS, int D, int SD, typename T>
__device__ __forceinline__ void stage(bf16 *dst, const T *src, long base, int pitch, int r0, int valid) {
    for (int e = threadIdx.x; e < ROWS * D / 4; e += blockDim.x) {
        int r = e / (D / 4), c = e % (D / 4) * 4;
        float4 x = r0 + r < valid ? ld4(src, base + (r0 + r) * pitch + c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        *reinterpret_cast<uint2 *>(dst + r * SD + c) = make_uint2(pack(x.x, x.y), pack(x.z, x.w));
    }
}

// bf16 sources need no conversion: copied asynchronously, 16 bytes per
// thread and step (zero-filled at and past `valid`); wait_copies completes them.
template <int ROWS, int D, int SD>
__device__ __forceinline__ void stage(bf16 *dst, const bf16 *src, long base, int pitch, int r0, int valid) {
    for (int e = threadIdx.x; e < ROWS * D / 8; e += blockDim.x) {
        int r = e / (D / 8), c = e % (D / 8) * 8;
        bool in = r0 + r < valid;
        // A zero-filling copy reads nothing, but still gets an address inside the source.
        copy_async16(dst + r * SD + c, src + base + (in ? r0 + r : 0) * pitch + c, in);
    }
}

// Tiles in flight while the previous one is computed on: two stages when
// both buffers fit in the 48 KB of static shared memory, else one.
__device__ constexpr int stages_for(int tile_bytes) { return 2 * tile_bytes <= 48 * 1024 ? 2 : 1; }

// Elements o and o + 1 (o even) as one packed bf16 pair.
__device__ __forceinline__ unsigned pair_at(const float *src, long o) { return pack(src[o], src[o + 1]); }
__device__ __forceinline__ unsigned pair_at(const bf16 *src, long o) { return *reinterpret_cast<const unsigned *>(src + o); }

// A fragments of a warp's 16 rows [row0, row0 + 16) in global memory.
template <int D, typename T>
__device__ __forceinline__ void rows_as_a(unsigned (&a)[D / 16][4], const T *src, long base, int pitch, int row0, int rows) {
    int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    for (int kk = 0; kk < D / 16; kk++)
        for (int half = 0; half < 2; half++) {
            int c = kk * 16 + 2 * t + 8 * half;
            for (int hi = 0; hi < 2; hi++) {
                int r = row0 + g + 8 * hi;
                long o = base + r * pitch + c;
                a[kk][2 * half + hi] = r < rows ? pair_at(src, o) : 0u;
            }
        }
}

// acc[m][n] (16 x 8 tiles over N columns) = rows(a[m]) . tileᵀ for each of
// MT 16-row tiles, where tile holds N rows of D in shared memory: each
// load from shared memory feeds 2·MT products.
// B[k][n] = tile[n][k]: matrix i is rows n*8.., columns kk*16 + 8i, each
// load bringing two steps of k (kk and kk + 1).
template <int D, int SD, int N, int MT>
__device__ __forceinline__ void rows_times_tile_t(float (&acc)[MT][N / 8][4], const unsigned (&a)[MT][D / 16][4], const bf16 *tile) {
    static_assert(D % 32 == 0, "k steps come in pairs");
    int lane = threadIdx.x & 31;
    for (int n = 0; n < N / 8; n++) {
#pragma unroll
        for (int m = 0; m < MT; m++) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.0f;
        const bf16 *row = tile + (n * 8 + (lane & 7)) * SD + 8 * (lane >> 3);
        for (int kk = 0; kk < D / 16; kk += 2) {
            unsigned b[4];
            ldmatrix_x4(b, row + kk * 16);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                mma(acc[m][n], a[m][kk], b[0], b[1]);
                mma(acc[m][n], a[m][kk + 1], b[2], b[3]);
            }
        }
    }
}
// One 16-row tile.
template <int D, int SD, int N>
__device__ __forceinline__ void rows_times_tile_t(float (&acc)[N / 8][4], const unsigned (&a)[D / 16][4], const bf16 *tile) {
    rows_times_tile_t<D, SD, N, 1>(reinterpret_cast<float(&)[1][N / 8][4]>(acc), reinterpret_cast<const unsigned(&)[1][D / 16][4]>(a), tile);
}

// out[m][d] (16 x 8 tiles over D) += p[m] . tile for each of MT 16-row
// tiles, p[m] a 16 x K score block in accumulator layout, tile K rows of D.
// B[k][n] = tile[k][n], loaded transposed: matrix i is rows kk*16 + 8(i % 2)..,
// columns (d + i / 2)*8, each load bringing two column blocks (d and d + 1).
template <int D, int SD, int K, int MT>
__device__ __forceinline__ void scores_times_tile(float (&out)[MT][D / 8][4], const float (&p)[MT][K / 8][4], const bf16 *tile) {
    int lane = threadIdx.x & 31;
    for (int kk = 0; kk < K / 16; kk++) {
        unsigned a[MT][4];
#pragma unroll
        for (int m = 0; m < MT; m++) {
            a[m][0] = pack(p[m][2 * kk][0], p[m][2 * kk][1]);
            a[m][1] = pack(p[m][2 * kk][2], p[m][2 * kk][3]);
            a[m][2] = pack(p[m][2 * kk + 1][0], p[m][2 * kk + 1][1]);
            a[m][3] = pack(p[m][2 * kk + 1][2], p[m][2 * kk + 1][3]);
        }
        const bf16 *rows = tile + (kk * 16 + 8 * ((lane >> 3) & 1) + (lane & 7)) * SD + 8 * (lane >> 4);
        for (int d = 0; d < D / 8; d += 2) {
            unsigned b[4];
            ldmatrix_x4_trans(b, rows + d * 8);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                mma(out[m][d], a[m], b[0], b[1]);
                mma(out[m][d + 1], a[m], b[2], b[3]);
            }
        }
    }
}
// One 16-row tile.
template <int D, int SD, int K>
__device__ __forceinline__ void scores_times_tile(float (&out)[D / 8][4], const float (&p)[K / 8][4], const bf16 *tile) {
    scores_times_tile<D, SD, K, 1>(reinterpret_cast<float(&)[1][D / 8][4]>(out), reinterpret_cast<const float(&)[1][K / 8][4]>(p), tile);
}

// Writes a warp's 16 x D accumulator block (times `mul`) to rows [row0, row0 + 16) below `rows`.
template <int D, typename T>
__device__ __forceinline__ void store_rows(T *dst, long base, int pitch, int row0, int rows, const float (&acc)[D / 8][4], float mul0,
                                           float mul1) {
    int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    for (int d = 0; d < D / 8; d++)
        for (int hi = 0; hi < 2; hi++) {
            int r = row0 + g + 8 * hi;
            if (r >= rows) continue;
            float mul = hi ? mul1 : mul0;
            st2(dst, base + r * pitch + d * 8 + 2 * t, acc[d][2 * hi] * mul, acc[d][2 * hi + 1] * mul);
        }
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffff, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffff, v, 1);
    return v + __shfl_xor_sync(0xffffffff, v, 2);
}

// Query rows per forward block. Each warp takes FWD_TILES(D) 16-row tiles:
// two up to head_dim 64, so every K/V fragment read from shared memory feeds
// two products (with one, those reads rather than the tensor cores set the
// pace), one at 128, where two would not fit in registers. So the forward
// runs 4 warps (8 at head_dim 128); the backward BWD_KEYS / 16.
#define FWD_ROWS 128
#define FWD_TILES(D) ((D) <= 64 ? 2 : 1)
#define FWD_THREADS(D) (FWD_ROWS / (16 * FWD_TILES(D)) * 32)
#define BWD_KEYS(D) ((D) <= 64 ? 128 : 64)  // keys per backward block: its K and dS tiles fit in shared memory
#define BK 64  // keys per staged tile

// s <- -inf where the key is past the row's position or the keys' end
// (MASK); mx <- each of the lane's two rows' maximum, unscaled (the scale
// joins the exponent's argument in one fma). Tiles every row of the warp
// sees whole (all but the diagonal's in a causal prefix) skip the compares.
template <bool MASK>
__device__ __forceinline__ void mask_scores(float (&s)[BK / 8][4], float (&mx)[2], int j0, int t, const int (&pos)[2], int kv_len) {
    #pragma unroll
    for (int n = 0; n < BK / 8; n++)
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            int key = j0 + n * 8 + 2 * t + (e & 1);
            if (MASK && !(key <= pos[e >> 1] && key < kv_len)) s[n][e] = -INFINITY;
            mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
        }
}

// The forward's shared memory: ST stages of K and V tiles, rows padded to
// SD = D + 8 so the fragment loads hit distinct banks.
template <int D, int ST> struct __align__(16) FwdSmem {
    static constexpr int SD = D + 8;
    bf16 ks[ST][BK * SD], vs[ST][BK * SD];
};
// Stages that fit in static shared memory.
#define FWD_STAGES(D) stages_for(2 * BK * ((D) + 8) * 2)
typedef FwdSmem<128, 2> StagedFwdSmem;  // the staged head_dim-128 forward's, in dynamic shared memory (below)
static_assert(sizeof(StagedFwdSmem) == 69632, "attention.rs's FLASH_FWD_STAGED_SMEM launches the staged forward with 69632 bytes");

template <int D, typename T, typename KT = T, int MT = FWD_TILES(D), int ST>
__device__ void flash_fwd(FwdSmem<D, ST> &sm, T *out, float *lse, const T *q, const KT *k, const KT *v, const unsigned *spans, int hq,
                          int hkv, int cap, float scale) {
    constexpr int SD = D + 8;
    auto &ks = sm.ks, &vs = sm.vs;
    const unsigned *span = spans + 4 * blockIdx.z;
    int tq = span[1], kv_len = span[3], tiles_here = (tq + FWD_ROWS - 1) / FWD_ROWS;
    if ((int)blockIdx.x >= tiles_here) return;  // the grid covers the longest span
    int h = blockIdx.y, warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    int kvh = h / (hq / hkv);
    int tile = tiles_here - 1 - blockIdx.x;  // the last query tiles see the most keys: start them first
    int row0 = tile * FWD_ROWS + warp * 16 * MT;  // this warp's rows: MT tiles of 16 from here
    long qbase = ((long)span[0] * hq + h) * D, kbase = ((long)span[2] * hkv + kvh) * cap * D;
    int pitch = hq * D;
    unsigned qa[MT][D / 16][4];
    float o[MT][D / 8][4] = {};
    float m[MT][2], l[MT][2];
    int pos[MT][2];
    #pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        rows_as_a<D>(qa[mt], q, qbase, pitch, row0 + 16 * mt, tq);
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            m[mt][r] = -INFINITY;
            l[mt][r] = 0.0f;
            pos[mt][r] = kv_len - tq + row0 + 16 * mt + g + 8 * r;
        }
    }
    float sl2 = scale * LOG2E;
    int last = min(kv_len, kv_len - tq + (tile + 1) * FWD_ROWS);  // keys any query of this block can see
    auto fetch = [&](int j) {
        stage<BK, D, SD>(ks[j % ST], k, kbase, D, j * BK, kv_len);
        stage<BK, D, SD>(vs[j % ST], v, kbase, D, j * BK, kv_len);
        commit_copies();
    };
    int tiles = last > 0 ? (last + BK - 1) / BK : 0;
    if (ST == 2 && tiles > 0) fetch(0);
    for (int j = 0; j < tiles; j++) {
        if (ST == 1) {
            __syncthreads();  // every warp is done with the previous tile
            fetch(j);
        }
        wait_copies<0>();
        __syncthreads();
        // Past the barrier every warp is done with tile j - 1, whose buffer
        // the next tile fills while this one is computed on: one barrier per tile.
        if (ST == 2 && j + 1 < tiles) fetch(j + 1);
        int j0 = j * BK;
        if (j0 <= kv_len - tq + row0 + 16 * MT - 1) {  // else every key of the tile is in this warp's future
            float s[MT][BK / 8][4];
            rows_times_tile_t<D, SD, BK, MT>(s, qa, ks[j % ST]);
            bool whole = j0 + BK - 1 <= kv_len - tq + row0 && j0 + BK <= kv_len;  // warp-uniform
            #pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                float mx[2] = {-INFINITY, -INFINITY};
                if (whole)
                    mask_scores<false>(s[mt], mx, j0, t, pos[mt], kv_len);
                else
                    mask_scores<true>(s[mt], mx, j0, t, pos[mt], kv_len);
                float alpha[2];
                #pragma unroll
                for (int r = 0; r < 2; r++) {
                    float m_new = fmaxf(m[mt][r], quad_max(mx[r]) * sl2);  // log2 units (sl2 > 0 keeps the maximum)
                    float base = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet keeps zeros
                    alpha[r] = fast_exp2(m[mt][r] - base);
                    l[mt][r] *= alpha[r];
                    m[mt][r] = m_new;
                    mx[r] = base;
                }
                #pragma unroll
                for (int n = 0; n < BK / 8; n++)
                    #pragma unroll
                    for (int e = 0; e < 4; e++) {
                        s[mt][n][e] = fast_exp2(fmaf(s[mt][n][e], sl2, -mx[e >> 1]));
                        l[mt][e >> 1] += s[mt][n][e];
                    }
                #pragma unroll
                for (int d = 0; d < D / 8; d++) {
                    o[mt][d][0] *= alpha[0];
                    o[mt][d][1] *= alpha[0];
                    o[mt][d][2] *= alpha[1];
                    o[mt][d][3] *= alpha[1];
                }
            }
            scores_times_tile<D, SD, BK, MT>(o, s, vs[j % ST]);
        }
    }
    #pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float inv[2];
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            l[mt][r] = quad_sum(l[mt][r]);
            inv[r] = l[mt][r] > 0.0f ? 1.0f / l[mt][r] : 0.0f;
        }
        store_rows<D>(out, qbase, pitch, row0 + 16 * mt, tq, o[mt], inv[0], inv[1]);
        if (lse && t == 0)  // null in inference
            #pragma unroll
            for (int r = 0; r < 2; r++) {
                int i = row0 + 16 * mt + g + 8 * r;
                if (i < tq) lse[((long)span[0] + i) * hq + h] = (m[mt][r] + log2f(l[mt][r])) * LN2;
            }
    }
}

// dQ (16-row tiles) += dSᵀ·K over the block's keys, with dS [keys, QT] and
// K [keys, D] staged in shared memory: warp w takes query rows
// 16 (w % ROW_TILES).. and DQ_COLS columns from (w / ROW_TILES) · DQ_COLS on,
// so the QT x D tile is split over the warps with no reduction between them.
#define DQ_COLS(D, QT, KEYS) ((D) * (QT) / (KEYS))
template <int D, int SD, int QT, int KEYS, int SDS>
__device__ __forceinline__ void ds_t_times_keys(float (&acc)[DQ_COLS(D, QT, KEYS) / 8][4], const bf16 *ds_t, const bf16 *ks) {
    constexpr int ROW_TILES = QT / 16, COLS = DQ_COLS(D, QT, KEYS);
    static_assert(KEYS / 16 % ROW_TILES == 0 && COLS % 8 == 0, "the warps split the dQ tile evenly");
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int m0 = (warp % ROW_TILES) * 16, c0 = (warp / ROW_TILES) * COLS;
    for (int n = 0; n < COLS / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    for (int kk = 0; kk < KEYS / 16; kk++) {
        // A[q][key] = ds_t[key][q]: transposed loads of the stored [key][q] blocks.
        // Lanes 16-31 address the next 8 queries (A) or columns (B).
        int r = kk * 16 + 8 * ((lane >> 3) & 1) + (lane & 7), hi = 8 * (lane >> 4);
        unsigned t[4];
        ldmatrix_x4_trans(t, ds_t + r * SDS + m0 + hi);
        unsigned a[4] = {t[0], t[2], t[1], t[3]};  // matrices: (keys 0-7, queries 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15)
        const bf16 *brow = ks + r * SD + c0 + hi;
        for (int n = 0; n < COLS / 8; n += 2) {
            unsigned b[4];
            ldmatrix_x4_trans(b, brow + n * 8);
            mma(acc[n], a, b[0], b[1]);
            // An odd last block's load brings 8 more columns (the next warp's, or the row's padding): unused.
            if (n + 1 < COLS / 8) mma(acc[n + 1], a, b[2], b[3]);
        }
    }
}

// The backward's shared memory for QT-query tiles: K and dSᵀ for the
// block's keys, and ST stages of the query tiles (Q, dO, scaled log-sum-exp,
// row dot). Every bf16 array is a multiple of 16 bytes (cp.async, ldmatrix).
template <int D, int QT, int ST> struct __align__(16) BwdSmem {
    static constexpr int SD = D + 8, KEYS = BWD_KEYS(D), SDS = QT + 8;
    bf16 qs[ST][QT * SD], dos[ST][QT * SD], ks[KEYS * SD], ds_t[KEYS * SDS];
    float ls[ST][QT], ds[ST][QT];
};
// Stages of query tiles: two (loads overlap the tile before) where they fit
// in `budget` bytes beside the fixed K and dS tiles.
template <int D, int QT> __host__ __device__ constexpr int bwd_stages(int budget) {
    return sizeof(BwdSmem<D, QT, 2>) <= (unsigned)budget ? 2 : 1;
}
#define STATIC_SMEM (48 * 1024)
// The wide head_dim-64 backward's layout, in dynamic shared memory: within
// 96 KB two stages fit (an sm_80 block may have 163 KB). The host launches
// it with FLASH_BWD_WIDE_SMEM bytes (engine/backend/cuda/attention.rs),
// which must be this struct's size.
typedef BwdSmem<64, 64, bwd_stages<64, 64>(96 * 1024)> WideBwdSmem;
static_assert(sizeof(WideBwdSmem) == 74752, "attention.rs's FLASH_BWD_WIDE_SMEM launches the wide backward with 74752 bytes");
// At head_dim 128 one stage of tiles fits in 48 KB, so the static-memory
// kernels wait for each tile's copy before computing on it; the "staged"
// variants take two stages in dynamic shared memory (attention.rs's
// FLASH_FWD_STAGED_SMEM and FLASH_BWD_STAGED_SMEM, which must be these
// sizes) so the next tile's copy overlaps the current tile's products.
typedef BwdSmem<128, 32, 2> StagedBwdSmem;
static_assert(sizeof(StagedBwdSmem) == 57856, "attention.rs's FLASH_BWD_STAGED_SMEM launches the staged backward with 57856 bytes");

// The probabilities P = exp2(S · sl2 − lse) of a warp's 16 keys against a
// tile of QT queries (zero where a query precedes the key or is past the
// end when MASK) into s, and dS = P ∘ (dP − rowdot) into dp. Tiles whose
// every query sees every key of the warp skip the compares.
template <bool MASK, int QT>
__device__ __forceinline__ void probs_and_grads(float (&s)[QT / 8][4], float (&dp)[QT / 8][4], const float *lt, const float *dt, int i0,
                                                int key0, int g, int t, int tlen, float sl2) {
    #pragma unroll
    for (int n = 0; n < QT / 8; n++)
        #pragma unroll
        for (int e = 0; e < 4; e++) {
            int c = n * 8 + 2 * t + (e & 1), qi = i0 + c, j = key0 + g + 8 * (e >> 1);
            float p = !MASK || (j <= qi && qi < tlen) ? fast_exp2(s[n][e] * sl2 - lt[c]) : 0.0f;
            s[n][e] = p;
            dp[n][e] = p * (dp[n][e] - dt[c]);
        }
}

// Where the backward writes dK and dV: token b · T + j's row of `pitch`
// values, head h's D values from k_off + h · D (dV: v_off + h · D), in f32
// and/or bf16 (a null pointer is skipped). Into the fused q/k/v projection's
// gradient [tokens, (Hq + 2 Hkv) · D], keys rotated back (RoPE's inverse),
// when each query head has its own key head; else into [tokens, Hq, D] per
// query head, unrotated (cos_t null), which flash_group_sum adds up.
struct GradOut {
    float *dk, *dv;
    bf16 *dk16, *dv16;
    int pitch, k_off, v_off;
    const float *cos_t, *sin_t;
    const unsigned *positions;
};

// A warp's 16 x D block of dK or dV (times `mul`), rows [row0, row0 + 16)
// below `rows`, at `base` in rows of `pitch`; rotated back first when cos_t
// is given: the lane holds columns c and c + D/2 of its rows (acc[d] and
// acc[d + D/16]), the rotation's pairs.
template <int D>
__device__ __forceinline__ void store_grad_rows(float *dst, bf16 *dst16, long base, int pitch, int row0, int rows, float (&acc)[D / 8][4],
                                                float mul, const float *cos_t, const float *sin_t, const unsigned *positions) {
    int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    for (int hi = 0; hi < 2; hi++) {
        int r = row0 + g + 8 * hi;
        if (r >= rows) continue;
        if (cos_t) {
            long tab = (long)positions[r] * (D / 2);
            for (int d = 0; d < D / 16; d++)
                for (int e = 2 * hi; e < 2 * hi + 2; e++) {
                    int c = d * 8 + 2 * t + (e & 1);
                    float co = cos_t[tab + c], si = sin_t[tab + c], a = acc[d][e], b = acc[d + D / 16][e];
                    acc[d][e] = a * co + b * si;
                    acc[d + D / 16][e] = b * co - a * si;
                }
        }
        for (int d = 0; d < D / 8; d++) {
            long o = base + (long)r * pitch + d * 8 + 2 * t;
            float x0 = acc[d][2 * hi] * mul, x1 = acc[d][2 * hi + 1] * mul;
            if (dst) st2(dst, o, x0, x1);
            if (dst16) st2(dst16, o, x0, x1);
        }
    }
}

// The whole backward for query head h in one pass over the query tiles, per
// block of KEYS keys (so GQA groups add parallelism rather than work per
// block): dV_j = Σ_{i ≥ j} P_ij dO_i and dK_j = scale Σ_i dS_ij q_i with
// dS_ij = P_ij (dO_i · v_j - rowdot_i), written as `out` says; and this key
// block's share of dQ_i = Σ_j dS_ij k_j, added into dq_acc [tokens, Hq, D]
// (f32, unscaled) in descending key-block order: a query tile's last key
// block that any of its queries sees writes the sum, each block before it
// adds its share once the one after it has (wait_count), down to block 0
// (deterministic, and no partial per key block crosses memory);
// flash_dq_finish scales and rotates the sums. Key blocks run last first
// (block index 0 takes the last), so a block waits only for blocks
// dispatched before it. `counters` holds at least B · Hq · (T / 16 rounded
// up) · warps zeros, and is left zeroed. Null `counters` is the escape
// hatch for a card where that order fails: dq_acc starts zeroed and every
// block adds its share as soon as it has it (in no fixed order, so the
// sums' last bits may differ from run to run).
template <int D, typename T, int QT, int ST>
__device__ void flash_bwd(BwdSmem<D, QT, ST> &sm, const GradOut &out, float *dq_acc, unsigned *counters, const T *dout, const T *q,
                          const T *k, const T *v, const float *lse, const float *rowdot, int hq, int hkv, int tlen, float scale) {
    constexpr int SD = D + 8, KEYS = BWD_KEYS(D), SDS = QT + 8;
    auto &qs = sm.qs, &dos = sm.dos;
    auto &ls = sm.ls, &ds = sm.ds;
    bf16 *ks = sm.ks, *ds_t = sm.ds_t;
    int b = blockIdx.z, h = blockIdx.y, warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    int kvh = h / (hq / hkv);
    int kblocks = gridDim.x, kb = kblocks - 1 - blockIdx.x;
    int kblock0 = kb * KEYS, key0 = kblock0 + warp * 16;
    long kbase = ((long)b * hkv + kvh) * tlen * D;
    long rbase = (long)b * tlen * hq + h, qbase = rbase * D;  // query i's row: rbase + i · hq
    int pitch = hq * D;
    unsigned ka[D / 16][4], va[D / 16][4];
    rows_as_a<D>(ka, k, kbase, D, key0, tlen);
    rows_as_a<D>(va, v, kbase, D, key0, tlen);
    float dka[D / 8][4] = {}, dva[D / 8][4] = {};
    float sl2 = scale * LOG2E;
    stage<KEYS, D, SD>(ks, k, kbase, D, kblock0, tlen);  // lands with the first query tile
    // Queries before the block's first key see none of its keys: start at the tile holding it.
    int first = kblock0 / QT, tiles = (tlen + QT - 1) / QT;
    // This warp's counter for query tile i.
    auto counter = [&](int i) { return counters + (((long)b * hq + h) * tiles + i) * (blockDim.x >> 5) + warp; };
    bool ordered = counters != nullptr;
    // A tile's share is counted done a tile later: the release then finds
    // it landed, and the block waiting for it, whose first tile comes KEYS /
    // QT tiles before this block's, reaches each tile that many iterations later.
    int done = -1;
    auto fetch = [&](int i) {
        int i0 = i * QT;
        stage<QT, D, SD>(qs[i % ST], q, qbase, pitch, i0, tlen);
        stage<QT, D, SD>(dos[i % ST], dout, qbase, pitch, i0, tlen);
        for (int e = threadIdx.x; e < QT; e += blockDim.x) {
            ls[i % ST][e] = i0 + e < tlen ? lse[rbase + (long)(i0 + e) * hq] * LOG2E : 0.0f;
            ds[i % ST][e] = i0 + e < tlen ? rowdot[rbase + (long)(i0 + e) * hq] : 0.0f;
        }
        commit_copies();
    };
    if (ST == 2 && first < tiles) fetch(first);
    for (int i = first; i < tiles; i++) {
        if (ST == 1) {
            fetch(i);  // the tile's buffers were last read before the previous dSᵀ barrier
            wait_copies<0>();
        } else if (i + 1 < tiles) {
            fetch(i + 1);
            wait_copies<1>();
        } else {
            wait_copies<0>();
        }
        __syncthreads();
        int i0 = i * QT;
        // This warp's rows of dSᵀ [its 16 keys, QT queries], in bf16 (zeros
        // where every query of the tile precedes its keys).
        bf16 *my_ds = ds_t + (warp * 16) * SDS;
        if (i0 + QT - 1 >= key0) {
            const float *lt = ls[i % ST], *dt = ds[i % ST];
            float s[QT / 8][4], dp[QT / 8][4];
            rows_times_tile_t<D, SD, QT>(s, ka, qs[i % ST]);
            rows_times_tile_t<D, SD, QT>(dp, va, dos[i % ST]);
            if (i0 >= key0 + 15 && i0 + QT <= tlen)  // warp-uniform: every query of the tile sees every key of the warp
                probs_and_grads<false, QT>(s, dp, lt, dt, i0, key0, g, t, tlen, sl2);
            else
                probs_and_grads<true, QT>(s, dp, lt, dt, i0, key0, g, t, tlen, sl2);
            for (int n = 0; n < QT / 8; n++)
                for (int hi = 0; hi < 2; hi++)
                    *reinterpret_cast<unsigned *>(my_ds + (g + 8 * hi) * SDS + n * 8 + 2 * t) = pack(dp[n][2 * hi], dp[n][2 * hi + 1]);
            scores_times_tile<D, SD, QT>(dva, s, dos[i % ST]);
            scores_times_tile<D, SD, QT>(dka, dp, qs[i % ST]);
        } else {
            for (int n = 0; n < QT / 8; n++)
                for (int hi = 0; hi < 2; hi++) *reinterpret_cast<unsigned *>(my_ds + (g + 8 * hi) * SDS + n * 8 + 2 * t) = 0u;
        }
        __syncthreads();  // every warp's dS rows are in place
        constexpr int COLS = DQ_COLS(D, QT, KEYS);
        float acc[COLS / 8][4];
        ds_t_times_keys<D, SD, QT, KEYS, SDS>(acc, ds_t, ks);
        int m0 = (warp % (QT / 16)) * 16, c0 = (warp / (QT / 16)) * COLS;
        // The tile's last key block writes its sums; the blocks before it
        // add in turn (unordered: no block is last, every block adds).
        int last = ordered ? min(kblocks - 1, (i0 + QT - 1) / KEYS) : -1;
        if (done >= 0) count_done(counter(done));
        done = -1;
        if (kb < last) wait_count(counter(i), last - kb);
        for (int n = 0; n < COLS / 8; n++)
            for (int hi = 0; hi < 2; hi++) {
                int qi = i0 + m0 + g + 8 * hi;
                if (qi >= tlen) continue;
                long o = qbase + qi * pitch + c0 + n * 8 + 2 * t;
                if (kb == last) {
                    st2(dq_acc, o, acc[n][2 * hi], acc[n][2 * hi + 1]);
                } else {
                    add_at_l2(dq_acc + o, acc[n][2 * hi]);
                    add_at_l2(dq_acc + o + 1, acc[n][2 * hi + 1]);
                }
            }
        if (ordered && kb > 0)
            done = i;
        else if (last > 0 && (threadIdx.x & 31) == 0)
            *counter(i) = 0;  // every share is in: zero for the next launch
        // No barrier here: the next tile's fetch refills buffers last read
        // before the one above, and dSᵀ is rewritten only after the next
        // tile's first barrier, which every warp reaches once done with it.
    }
    if (done >= 0) count_done(counter(done));
    long row0 = (long)b * tlen * out.pitch + h * D;  // this head's key rows
    store_grad_rows<D>(out.dk, out.dk16, row0 + out.k_off, out.pitch, key0, tlen, dka, scale, out.cos_t, out.sin_t, out.positions + (long)b * tlen);
    store_grad_rows<D>(out.dv, out.dv16, row0 + out.v_off, out.pitch, key0, tlen, dva, 1.0f, nullptr, nullptr, nullptr);
}

// The sums below write into the fused q/k/v projection's gradient (rows
// of `pitch` values per token) in f32 and/or bf16 (a null pointer is
// skipped), one thread per four rotation pairs of one head of one token
// (values i..i+3 and i+D/2..i+D/2+3; D/2 a multiple of 4), each value
// summed in a fixed order.
__device__ __forceinline__ void add4(float4 &a, float4 b) { a = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w); }
__device__ __forceinline__ float4 mul4(float4 a, float s) { return make_float4(a.x * s, a.y * s, a.z * s, a.w * s); }

// The query gradient: dQ = scale · the backward's sums, rotated back
// (RoPE's inverse), into the first Hq · D values of each row.
__device__ void finish_dq(float *dst, bf16 *dst16, int pitch, const float *sums, long tokens, int hq, int d, float scale,
                          const float *cos_t, const float *sin_t, const unsigned *positions) {
    int half = d / 2, quads = half / 4;
    FOR_EACH(e, tokens * hq * quads) {
        long token = e / (hq * quads);
        int j = (int)(e - token * hq * quads), h = j / quads, i = 4 * (j - h * quads);
        long src = (token * hq + h) * d + i;
        float4 a = mul4(ld4(sums, src), scale), c = mul4(ld4(sums, src + half), scale);
        rotate4(a, c, cos_t, sin_t, (long)positions[token] * half + i, -1.0f);
        long o = token * pitch + h * d + i;
        st_pair(dst, o, half, a, c);
        st_pair(dst16, o, half, a, c);
    }
}

// A GQA group's key or value gradient: the sum over its query heads of
// part [tokens, Hq, D] (the backward's per-head dK or dV), in head order,
// rotated back when cos_t is given, into values off + kvh · D of each row.
template <typename T>
__device__ void flash_group_sum(float *dst, bf16 *dst16, int pitch, int off, const T *part, long tokens, int hq, int hkv, int d,
                                const float *cos_t, const float *sin_t, const unsigned *positions) {
    int half = d / 2, quads = half / 4, group = hq / hkv;
    FOR_EACH(e, tokens * hkv * quads) {
        long token = e / (hkv * quads);
        int j = (int)(e - token * hkv * quads), kvh = j / quads, i = 4 * (j - kvh * quads);
        float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f), c = a;
        for (int g = 0; g < group; g++) {
            long src = (token * hq + kvh * group + g) * d + i;
            add4(a, ld4(part, src));
            add4(c, ld4(part, src + half));
        }
        if (cos_t) rotate4(a, c, cos_t, sin_t, (long)positions[token] * half + i, -1.0f);
        long o = token * pitch + off + kvh * d + i;
        st_pair(dst, o, half, a, c);
        st_pair(dst16, o, half, a, c);
    }
}

// The backward's kernel parameters for its GradOut.
#define GRAD_OUT_PARAMS                                                                                                       \
    float *dk, bf16 *dk16, float *dv, bf16 *dv16, int out_pitch, int k_off, int v_off, const float *cos_t, const float *sin_t, \
        const unsigned *positions
#define GRAD_OUT GradOut{dk, dv, dk16, dv16, out_pitch, k_off, v_off, cos_t, sin_t, positions}

#define INSTANTIATE(D, T, S)                                                                                                  \
    extern "C" __global__ void __launch_bounds__(FWD_THREADS(D), D <= 64 ? 2 : 1) flash_fwd_d##D##_##S(T *out, float *lse, const T *q, const T *k,      \
                                                                           const T *v, const unsigned *spans, int hq,       \
                                                                           int hkv, int cap, float scale) {                  \
        __shared__ FwdSmem<D, FWD_STAGES(D)> sm;                                                                              \
        flash_fwd<D, T>(sm, out, lse, q, k, v, spans, hq, hkv, cap, scale);                                           \
    }                                                                                                                         \
    extern "C" __global__ void __launch_bounds__(BWD_KEYS(D) * 2)                                                             \
        flash_bwd_d##D##_##S(GRAD_OUT_PARAMS, float *dq_acc, unsigned *counters, const T *dout, const T *q, const T *k,       \
                             const T *v, const float *lse, const float *rowdot, int hq, int hkv, int t, float scale) {        \
        __shared__ BwdSmem<D, 32, bwd_stages<D, 32>(STATIC_SMEM)> sm;                                                         \
        flash_bwd(sm, GRAD_OUT, dq_acc, counters, dout, q, k, v, lse, rowdot, hq, hkv, t, scale);                             \
    }
// The head_dim 64 backward in two more variants of the same arithmetic (so
// the same results; Cuda::launch_tuned times them on the card and keeps the
// fastest): held to 128 registers so two blocks share an SM (ptxas spills
// a little for it), and "wide": 64-query tiles in dynamic shared memory,
// half the barriers and staging rounds per product.
#define INSTANTIATE_BWD_VARIANTS(T, S)                                                                                         \
    extern "C" __global__ void __launch_bounds__(BWD_KEYS(64) * 2, 2)                                                         \
        flash_bwd_d64_##S##_two_blocks(GRAD_OUT_PARAMS, float *dq_acc, unsigned *counters, const T *dout, const T *q, const T *k, \
                                       const T *v, const float *lse, const float *rowdot, int hq, int hkv, int t, float scale) { \
        __shared__ BwdSmem<64, 32, bwd_stages<64, 32>(STATIC_SMEM)> sm;                                                       \
        flash_bwd(sm, GRAD_OUT, dq_acc, counters, dout, q, k, v, lse, rowdot, hq, hkv, t, scale);                             \
    }                                                                                                                         \
    extern "C" __global__ void __launch_bounds__(BWD_KEYS(64) * 2)                                                            \
        flash_bwd_d64_##S##_wide(GRAD_OUT_PARAMS, float *dq_acc, unsigned *counters, const T *dout, const T *q, const T *k,   \
                                 const T *v, const float *lse, const float *rowdot, int hq, int hkv, int t, float scale) {    \
        DYNAMIC_SHARED(WideBwdSmem, sm);                                                                                       \
        flash_bwd(*sm, GRAD_OUT, dq_acc, counters, dout, q, k, v, lse, rowdot, hq, hkv, t, scale);                            \
    }
// The head_dim 128 kernels with two stages of tiles (StagedBwdSmem and
// FwdSmem<128, 2>, above and in flash_fwd's): the same arithmetic as the
// one-stage kernels, so the same results; Cuda::launch_tuned keeps the faster.
#define INSTANTIATE_D128_STAGED(T, S)                                                                                         \
    extern "C" __global__ void __launch_bounds__(BWD_KEYS(128) * 2)                                                           \
        flash_bwd_d128_##S##_staged(GRAD_OUT_PARAMS, float *dq_acc, unsigned *counters, const T *dout, const T *q, const T *k, \
                                    const T *v, const float *lse, const float *rowdot, int hq, int hkv, int t, float scale) { \
        DYNAMIC_SHARED(StagedBwdSmem, sm);                                                                                     \
        flash_bwd(*sm, GRAD_OUT, dq_acc, counters, dout, q, k, v, lse, rowdot, hq, hkv, t, scale);                            \
    }                                                                                                                         \
    INSTANTIATE_FWD_STAGED(T, T, flash_fwd_d128_##S##_staged)
#define INSTANTIATE_FWD_STAGED(T, KT, NAME)                                                                                   \
    extern "C" __global__ void __launch_bounds__(FWD_THREADS(128)) NAME(T *out, float *lse, const T *q, const KT *k,           \
                                                                      const KT *v, const unsigned *spans, int hq, int hkv,   \
                                                                      int cap, float scale) {                                \
        DYNAMIC_SHARED(StagedFwdSmem, sm);                                                                                     \
        flash_fwd<128, T, KT>(*sm, out, lse, q, k, v, spans, hq, hkv, cap, scale);                                            \
    }
// The head_dim 64 forward again with one 16-row tile per warp (8 warps,
// fewer registers, two blocks per SM at about half the registers): each
// row's arithmetic is the same, so are the results; Cuda::launch_tuned
// keeps the faster.
#define INSTANTIATE_FWD_ONE_TILE(T, KT, NAME)                                                                                 \
    extern "C" __global__ void __launch_bounds__(FWD_ROWS / 16 * 32, 2) NAME(T *out, float *lse, const T *q, const KT *k,       \
                                                                           const KT *v, const unsigned *spans, int hq,      \
                                                                           int hkv, int cap, float scale) {                  \
        __shared__ FwdSmem<64, FWD_STAGES(64)> sm;                                                                            \
        flash_fwd<64, T, KT, 1>(sm, out, lse, q, k, v, spans, hq, hkv, cap, scale);                                   \
    }
// Prefill of f32 activations against a bf16 KV cache (generation).
#define INSTANTIATE_BF16_KV(D)                                                                                              \
    extern "C" __global__ void __launch_bounds__(FWD_THREADS(D), D <= 64 ? 2 : 1) flash_fwd_bf16kv_d##D##_f32(                \
        float *out, float *lse, const float *q, const bf16 *k, const bf16 *v, const unsigned *spans, int hq, int hkv,        \
        int cap, float scale) {                                                                                      \
        __shared__ FwdSmem<D, FWD_STAGES(D)> sm;                                                                              \
        flash_fwd<D, float, bf16>(sm, out, lse, q, k, v, spans, hq, hkv, cap, scale);                                 \
    }
// The group sums read the per-head scratch in its storage type.
#define INSTANTIATE_GROUP_SUM(T, S)                                                                                           \
    extern "C" __global__ void flash_group_sum_##S(float *dst, bf16 *dst16, int pitch, int off, const T *part, long tokens,  \
                                                   int hq, int hkv, int d, const float *c, const float *s,                  \
                                                   const unsigned *pos) {                                                     \
        flash_group_sum<T>(dst, dst16, pitch, off, part, tokens, hq, hkv, d, c, s, pos);                                      \
    }

extern "C" __global__ void flash_dq_finish(float *dst, bf16 *dst16, int pitch, const float *sums, long tokens, int hq, int d, float scale,
                                           const float *c, const float *s, const unsigned *pos) {
    finish_dq(dst, dst16, pitch, sums, tokens, hq, d, scale, c, s, pos);
}

INSTANTIATE(32, float, f32)
INSTANTIATE(64, float, f32)
INSTANTIATE(128, float, f32)
INSTANTIATE(32, bf16, bf16)
INSTANTIATE(64, bf16, bf16)
INSTANTIATE(128, bf16, bf16)
INSTANTIATE_BWD_VARIANTS(float, f32)
INSTANTIATE_BWD_VARIANTS(bf16, bf16)
INSTANTIATE_D128_STAGED(float, f32)
INSTANTIATE_D128_STAGED(bf16, bf16)
INSTANTIATE_FWD_STAGED(float, bf16, flash_fwd_bf16kv_d128_f32_staged)
INSTANTIATE_FWD_ONE_TILE(float, float, flash_fwd_d64_f32_one_tile)
INSTANTIATE_FWD_ONE_TILE(bf16, bf16, flash_fwd_d64_bf16_one_tile)
INSTANTIATE_FWD_ONE_TILE(float, bf16, flash_fwd_bf16kv_d64_f32_one_tile)
INSTANTIATE_GROUP_SUM(float, f32)
INSTANTIATE_GROUP_SUM(bf16, bf16)
INSTANTIATE_BF16_KV(32)
INSTANTIATE_BF16_KV(64)
INSTANTIATE_BF16_KV(128)
