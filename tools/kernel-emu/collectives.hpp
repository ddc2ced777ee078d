// Warp collectives (shuffles, mma.sync m16n8k16, ldmatrix, cp.async,
// __syncwarp) and barriers: a lane deposits its operands and waits; once
// all 32 lanes of its warp wait at the same collective, the scheduler
// evaluates it for all of them, from the PTX ISA's layouts written out here
// independently of the kernels that rely on them.
#pragma once
#include "atomics.hpp"

namespace emu {

// Enters a warp collective: this lane's operands are already in `in`/`addr`.
inline Lane &collective(Op op, unsigned mask) {
    if (mask != 0xffffffffu) fail("warp collectives here support only the full mask");
    me().op = op;
    wait(State::AtWarp);
    return me();
}

template <typename T> inline T shuffle_from(T v, unsigned mask, unsigned src) {
    static_assert(sizeof(T) <= 8, "shuffled values are at most 8 bytes");
    Lane &l = me();
    l.in[0] = 0;
    std::memcpy(&l.in[0], &v, sizeof(T));
    l.in[1] = src;
    collective(Op::Shuffle, mask);
    T out;
    std::memcpy(&out, &me().out[0], sizeof(T));
    return out;
}

inline float bf16_lo(uint64_t reg) { return __bfloat162float({uint16_t(reg & 0xffff)}); }
inline float bf16_hi(uint64_t reg) { return __bfloat162float({uint16_t((reg >> 16) & 0xffff)}); }
inline uint16_t bf16_at(const void *row, int col) {
    uint16_t v;
    std::memcpy(&v, static_cast<const char *>(row) + 2 * col, 2);
    return v;
}

// D = A·B + C for mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32. Per lane
// (g = lane / 4, t = lane % 4) the PTX ISA places: A regs 0-3 at rows
// g, g+8, g, g+8 and columns 2t, 2t, 2t+8, 2t+8 (each reg two consecutive
// columns, the lower in the low half); B regs 0-1 at rows (k) 2t, 2t+8 (two
// consecutive k), column g; C/D 0-3 at (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
inline void resolve_mma(Lane *w) {
    float a[16][16], b[16][8], c[16][8];
    for (int lane = 0; lane < 32; lane++) {
        const uint64_t *in = w[lane].in;
        int g = lane / 4, t = lane % 4;
        for (int r = 0; r < 4; r++) {
            int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
            a[row][col] = bf16_lo(in[r]);
            a[row][col + 1] = bf16_hi(in[r]);
        }
        for (int r = 0; r < 2; r++) {
            b[2 * t + 8 * r][g] = bf16_lo(in[4 + r]);
            b[2 * t + 8 * r + 1][g] = bf16_hi(in[4 + r]);
        }
        for (int e = 0; e < 4; e++) c[g + 8 * (e >> 1)][2 * t + (e & 1)] = __uint_as_float(unsigned(in[6 + e]));
    }
    for (int lane = 0; lane < 32; lane++) {
        int g = lane / 4, t = lane % 4;
        for (int e = 0; e < 4; e++) {
            int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
            float acc = c[row][col];
            for (int k = 0; k < 16; k++) acc += a[row][k] * b[k][col];
            w[lane].out[e] = __float_as_uint(acc);
        }
    }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give
// the 16-byte-aligned addresses of rows 0-7 of matrix i (each lane has read
// its row into in[0..1], its address into in[2]). Lane l receives, in
// register i, row l/4 columns 2(l%4), 2(l%4)+1 of matrix i; with .trans,
// rows 2(l%4), 2(l%4)+1 of column l/4.
inline void resolve_ldmatrix(Lane *w, bool trans) {
    // Shared memory serves one 8x8 matrix (eight 16-byte rows) per cycle
    // when the rows fall in the eight distinct 16-byte bank groups; kernels
    // pad their tiles for it, so rows that share a group are a failure.
    for (int i = 0; i < 4; i++) {
        unsigned seen = 0;
        for (int r = 0; r < 8; r++) {
            unsigned group = unsigned(w[8 * i + r].in[2] / 16 % 8);
            if (seen >> group & 1) return fail("ldmatrix rows in the same shared-memory bank group (a bank conflict): pad the tile's rows");
            seen |= 1u << group;
        }
    }
    for (int lane = 0; lane < 32; lane++)
        for (int i = 0; i < 4; i++) {
            uint16_t lo, hi;
            if (trans) {
                lo = bf16_at(w[8 * i + 2 * (lane % 4)].in, lane / 4);
                hi = bf16_at(w[8 * i + 2 * (lane % 4) + 1].in, lane / 4);
            } else {
                lo = bf16_at(w[8 * i + lane / 4].in, 2 * (lane % 4));
                hi = bf16_at(w[8 * i + lane / 4].in, 2 * (lane % 4) + 1);
            }
            w[lane].out[i] = uint64_t(lo) | (uint64_t(hi) << 16);
        }
}

inline void resolve(Lane *w) {
    Op op = w[0].op;
    for (int lane = 1; lane < 32; lane++)
        if (w[lane].op != op) return fail("lanes of one warp reached different collectives");
    switch (op) {
    case Op::Shuffle:
        for (int lane = 0; lane < 32; lane++) w[lane].out[0] = w[w[lane].in[1]].in[0];
        break;
    case Op::Mma:
        resolve_mma(w);
        break;
    case Op::Ldmatrix:
    case Op::LdmatrixTrans:
        resolve_ldmatrix(w, op == Op::LdmatrixTrans);
        break;
    case Op::SyncWarp:
        break;
    }
}

inline void mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    Lane &l = me();
    for (int r = 0; r < 4; r++) l.in[r] = a[r];
    l.in[4] = b0;
    l.in[5] = b1;
    for (int e = 0; e < 4; e++) l.in[6 + e] = __float_as_uint(d[e]);
    collective(Op::Mma, 0xffffffffu);
    for (int e = 0; e < 4; e++) d[e] = __uint_as_float(unsigned(me().out[e]));
}

// Each lane reads its own row, so the race check sees the read in the lane
// that made it.
inline void ldmatrix_x4(unsigned (&r)[4], const void *row, bool trans) {
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0) fail("ldmatrix row address not 16-byte aligned");
    std::memcpy(me().in, row, 16);
    me().in[2] = reinterpret_cast<uintptr_t>(row);
    collective(trans ? Op::LdmatrixTrans : Op::Ldmatrix, 0xffffffffu);
    for (int i = 0; i < 4; i++) r[i] = unsigned(me().out[i]);
}

inline void land(const Copy &c) {
    if (c.fill)
        std::memcpy(c.dst, c.src, c.bytes);
    else
        std::memset(c.dst, 0, c.bytes);
}

// A copy lands at issue or only when waited for, at random: the first
// catches a buffer refilled while other warps still read it, the second a
// read before the wait.
inline void cp_async(void *dst, const void *src, unsigned bytes, bool fill) {
    if (reinterpret_cast<uintptr_t>(dst) % bytes != 0 || (fill && reinterpret_cast<uintptr_t>(src) % bytes != 0))
        return fail("cp.async addresses must be aligned to the copy size");
    Copy c{dst, src, bytes, fill};
    bool at_issue;
    {
        race::Internal internal;
        at_issue = next_random(run->random) & 1;
    }
    if (at_issue)
        land(c);
    else
        me().open.push_back(c);
}
inline void cp_async_commit() {
    me().groups.push_back(std::move(me().open));
    me().open.clear();
}
// Lands all but the newest `pending` committed groups.
inline void cp_async_wait(int pending) {
    std::vector<std::vector<Copy>> &g = me().groups;
    while ((int)g.size() > pending) {
        for (const Copy &c : g.front()) land(c);
        g.erase(g.begin());
    }
}

}  // namespace emu

template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    return emu::shuffle_from(v, mask, (threadIdx.x & 31) ^ unsigned(lane_mask));
}
template <typename T> inline T __shfl_sync(unsigned mask, T v, int src_lane) { return emu::shuffle_from(v, mask, unsigned(src_lane) & 31u); }
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta) {
    unsigned lane = threadIdx.x & 31;
    return emu::shuffle_from(v, mask, lane >= delta ? lane - delta : lane);
}
namespace emu {
// __syncthreads at `site` (file:line, which the scheduler compares: every
// thread waiting must wait at the same barrier, as the GPU requires).
inline void sync_threads(const char *site) {
    unsigned generation = me().barriers++;
    me().barrier_site = site;
    race::barrier_arrive(generation);
    wait(State::AtBarrier);
    race::barrier_leave(generation);
}
}  // namespace emu
#define EMU_STRINGIFY(x) #x
#define EMU_SITE(file, line) file ":" EMU_STRINGIFY(line)
#define __syncthreads() emu::sync_threads(EMU_SITE(__FILE__, __LINE__))

namespace emu {
// __syncwarp: the warp's lanes wait for one another, and what each wrote
// before is ordered before what each does after (the race check's view).
inline void sync_warp() {
    unsigned generation = me().warp_syncs++, warp = run->current / 32;
    race::warp_arrive(warp, generation);
    collective(Op::SyncWarp, 0xffffffffu);
    race::warp_leave(warp, generation);
}
}  // namespace emu
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (mask != 0xffffffffu) return emu::fail("__syncwarp here supports only the full mask");
    emu::sync_warp();
}
