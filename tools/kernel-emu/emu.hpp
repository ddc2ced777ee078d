// Runs the CUDA kernels of kernels-ptx/ on the CPU, so their indexing,
// tiling, masking and warp-level data movement are tested on machines
// without a GPU (tests/kernel_emulation.rs). Each kernel source is compiled
// as C++ with this header standing in for the CUDA toolkit (include/cuda_bf16.h
// includes it): every GPU thread runs as a fiber, one block at a time, and a
// fiber runs until it reaches a barrier or a warp collective. The fibers of
// a block are resumed in a seeded random order at each step, so a missing
// barrier shows as a result that changes with the seed.
//
// Warp collectives (shuffles, mma.sync m16n8k16, ldmatrix) are evaluated when
// all 32 lanes of the warp have arrived, from the PTX ISA's fragment layouts,
// which are written out here independently of the kernels that rely on them.
// What this cannot show: timing, register spills, bank conflicts, and the
// fast-math intrinsics' last-bit differences.
#pragma once
#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#define KERNEL_EMULATION 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One block runs at a time, so a static is exactly the block's shared memory.
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};
inline uint3 threadIdx, blockIdx, blockDim, gridDim;

struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

template <typename A, typename B> inline std::common_type_t<A, B> min(A a, B b) { return a < b ? a : b; }
template <typename A, typename B> inline std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }

inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
using std::isnan;
inline float __logf(float x) { return logf(x); }

struct __nv_bfloat16 {
    uint16_t bits;
};
struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
// Round to nearest even, as cvt.rn.bf16.f32 does.
inline __nv_bfloat16 __float2bfloat16(float f) {
    unsigned u = __float_as_uint(f);
    if (std::isnan(f)) return {uint16_t((u >> 16) | 0x40)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return {uint16_t(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 b) { return __uint_as_float(unsigned(b.bits) << 16); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) { return {__float2bfloat16(lo), __float2bfloat16(hi)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {__bfloat162float(v.x), __bfloat162float(v.y)}; }

namespace emu {

enum class State { Ready, AtBarrier, AtWarp, Done };
enum class Op { Shuffle, Mma, Ldmatrix, LdmatrixTrans };

constexpr size_t STACK_BYTES = 128 * 1024;

// An asynchronous copy (cp.async) not yet landed.
struct Copy {
    void *dst;
    const void *src;
    unsigned bytes;
    bool fill;
};

struct Lane {
    ucontext_t start;  // entered once, to begin the fiber on its own stack
    jmp_buf at;        // where the fiber waits; switches use _setjmp/_longjmp, no signal-mask syscalls
    bool started;
    State state;
    Op op;
    uint64_t in[10];
    const void *addr;
    uint64_t out[4];
    std::vector<Copy> open;                 // cp.async since the last commit
    std::vector<std::vector<Copy>> groups;  // committed, oldest first
};

struct Run {
    std::vector<Lane> lanes;
    std::vector<std::unique_ptr<char[]>> stacks;
    jmp_buf scheduler;
    unsigned current = 0;
    std::string error;
    void (*body)(void *fn, const uint64_t *args) = nullptr;
    void *fn = nullptr;
    const uint64_t *args = nullptr;
    uint64_t random = 0;  // the schedule's generator, also deciding when async copies land
};
inline Run *run;

inline void fail(const std::string &why) {
    if (run->error.empty()) run->error = why;
}

inline Lane &me() { return run->lanes[run->current]; }

inline void wait(State s) {
    me().state = s;
    if (!_setjmp(me().at)) _longjmp(run->scheduler, 1);
}

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

// ldmatrix.sync.aligned.m8n8.x2[.trans].shared.b16: lanes 8i..8i+7 give the
// 16-byte-aligned addresses of rows 0-7 of matrix i. Lane l receives, in
// register i, row l/4 columns 2(l%4), 2(l%4)+1 of matrix i; with .trans,
// rows 2(l%4), 2(l%4)+1 of column l/4.
inline void resolve_ldmatrix(Lane *w, bool trans) {
    for (int lane = 0; lane < 16; lane++)
        if (reinterpret_cast<uintptr_t>(w[lane].addr) % 16 != 0) fail("ldmatrix row address not 16-byte aligned");
    for (int lane = 0; lane < 32; lane++)
        for (int i = 0; i < 2; i++) {
            uint16_t lo, hi;
            if (trans) {
                lo = bf16_at(w[8 * i + 2 * (lane % 4)].addr, lane / 4);
                hi = bf16_at(w[8 * i + 2 * (lane % 4) + 1].addr, lane / 4);
            } else {
                lo = bf16_at(w[8 * i + lane / 4].addr, 2 * (lane % 4));
                hi = bf16_at(w[8 * i + lane / 4].addr, 2 * (lane % 4) + 1);
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

inline void ldmatrix_x2(unsigned &r0, unsigned &r1, const void *row, bool trans) {
    me().addr = row;
    collective(trans ? Op::LdmatrixTrans : Op::Ldmatrix, 0xffffffffu);
    r0 = unsigned(me().out[0]);
    r1 = unsigned(me().out[1]);
}

inline uint64_t next_random(uint64_t &s) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
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
    if (next_random(run->random) & 1)
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

inline void fiber_main() {
    run->body(run->fn, run->args);
    me().state = State::Done;
    _longjmp(run->scheduler, 1);
}

// Resumes lane i until it waits or finishes; false once the kernel misused something.
inline bool resume(unsigned i) {
    Lane &l = run->lanes[i];
    run->current = i;
    threadIdx = {i % blockDim.x, i / blockDim.x % blockDim.y, i / (blockDim.x * blockDim.y)};
    if (!_setjmp(run->scheduler)) {
        if (l.started) {
            _longjmp(l.at, 1);
        } else {
            l.started = true;
            ucontext_t unused;  // the fiber comes back through run->scheduler
            swapcontext(&unused, &l.start);
        }
    }
    return run->error.empty();
}

// Evaluates warp w's collective once all its lanes wait at it; true if it did.
inline bool resolve_if_full(unsigned w) {
    Lane *lanes = &run->lanes[w * 32];
    for (unsigned l = 0; l < 32; l++)
        if (lanes[l].state != State::AtWarp) return false;
    resolve(lanes);
    for (unsigned l = 0; l < 32; l++) lanes[l].state = State::Ready;
    return true;
}

template <typename V> inline void shuffle(V &v, uint64_t &seed) {
    for (size_t i = v.size(); i > 1; i--) std::swap(v[i - 1], v[next_random(seed) % i]);
}

// Runs one block to completion; false (with run->error set) on a deadlock or
// misuse. Between barriers, either every lane advances one step at a time
// (warps in lockstep) or one warp at a time runs until it reaches the barrier
// (warps as far apart as they can be), chosen per barrier interval at random:
// the two extremes of what hardware may do, so a race shows under one.
inline bool run_block(unsigned threads, uint64_t &seed) {
    std::vector<Lane> &lanes = run->lanes;
    for (unsigned i = 0; i < threads; i++) {
        Lane &l = lanes[i];
        getcontext(&l.start);
        l.start.uc_stack.ss_sp = run->stacks[i].get();
        l.start.uc_stack.ss_size = STACK_BYTES;
        l.start.uc_link = nullptr;
        makecontext(&l.start, fiber_main, 0);
        l.started = false;
        l.open.clear();
        l.groups.clear();
        l.state = State::Ready;
    }
    unsigned warps = threads / 32;
    std::vector<unsigned> order(threads), warp_order(warps), lane_order(32);
    for (unsigned i = 0; i < threads; i++) order[i] = i;
    for (unsigned w = 0; w < warps; w++) warp_order[w] = w;
    for (unsigned l = 0; l < 32; l++) lane_order[l] = l;
    for (;;) {
        if (next_random(seed) & 1) {
            shuffle(order, seed);
            for (bool ran = true; ran;) {
                ran = false;
                for (unsigned i : order)
                    if (lanes[i].state == State::Ready) {
                        if (!resume(i)) return false;
                        ran = true;
                    }
                for (unsigned w = 0; w < warps; w++) ran |= resolve_if_full(w);
                if (!run->error.empty()) return false;
            }
        } else {
            shuffle(warp_order, seed);
            for (unsigned w : warp_order)
                for (bool ran = true; ran;) {
                    ran = false;
                    shuffle(lane_order, seed);
                    for (unsigned l : lane_order)
                        if (lanes[w * 32 + l].state == State::Ready) {
                            if (!resume(w * 32 + l)) return false;
                            ran = true;
                        }
                    ran |= resolve_if_full(w);
                    if (!run->error.empty()) return false;
                }
        }
        // Nothing can run: every lane is done, at the barrier, or stuck at a collective.
        bool any_left = false;
        for (unsigned i = 0; i < threads; i++) {
            if (lanes[i].state == State::AtWarp) {
                fail("a warp collective was reached by only part of its warp (exited, diverged, or at __syncthreads)");
                return false;
            }
            any_left |= lanes[i].state != State::Done;
        }
        if (!any_left) return true;
        for (unsigned i = 0; i < threads; i++)
            if (lanes[i].state == State::AtBarrier) lanes[i].state = State::Ready;
    }
}

// Argument decoding: each kernel parameter arrives as 64 raw bits.
template <typename T> inline T decode(uint64_t raw) {
    if constexpr (std::is_pointer_v<T>) {
        return reinterpret_cast<T>(uintptr_t(raw));
    } else if constexpr (std::is_same_v<T, float>) {
        return __uint_as_float(unsigned(raw));
    } else {
        static_assert(std::is_integral_v<T>, "kernel parameters are pointers, integers or floats");
        return T(raw);
    }
}
template <typename T> constexpr char code() {
    if constexpr (std::is_pointer_v<T>) return 'p';
    else if constexpr (std::is_same_v<T, float>) return 'f';
    else if constexpr (sizeof(T) == 8) return 'l';
    else return 'i';
}

struct Entry {
    const char *name;
    std::string signature;
    void *fn;
    void (*call)(void *fn, const uint64_t *args);
};
inline std::vector<Entry> &entries() {
    static std::vector<Entry> all;
    return all;
}

template <typename... A, size_t... I> void call_with(void (*f)(A...), const uint64_t *args, std::index_sequence<I...>) {
    f(decode<A>(args[I])...);
}
template <typename... A> struct Register {
    Register(const char *name, void (*f)(A...)) {
        entries().push_back({name, std::string{code<A>()...}, reinterpret_cast<void *>(f), [](void *fn, const uint64_t *args) {
                                 call_with(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
                             }});
    }
};

}  // namespace emu

template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    return emu::shuffle_from(v, mask, (threadIdx.x & 31) ^ unsigned(lane_mask));
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta) {
    unsigned lane = threadIdx.x & 31;
    return emu::shuffle_from(v, mask, lane >= delta ? lane - delta : lane);
}
inline void __syncthreads() { emu::wait(emu::State::AtBarrier); }

#define EMU_ENTRY(name) static emu::Register emu_entry_##name(#name, &name);

namespace emu {
inline const Entry *find(const char *name) {
    for (const Entry &x : entries())
        if (std::strcmp(x.name, name) == 0) return &x;
    return nullptr;
}

// Runs kernel `e` over grid x block, one block at a time; returns null or why it failed.
inline const char *launch(const Entry *e, const uint64_t *args, const unsigned *grid, const unsigned *block, uint64_t seed) {
    static std::string error;
    unsigned threads = block[0] * block[1] * block[2];
    if (threads == 0 || threads > 1024 || threads % 32 != 0) return (error = "blocks of 32 to 1024 threads, a multiple of 32").c_str();
    Run r;
    r.lanes.resize(threads);
    for (unsigned i = 0; i < threads; i++) r.stacks.emplace_back(new char[STACK_BYTES]);  // untouched pages cost nothing
    r.body = e->call;
    r.fn = e->fn;
    r.args = args;
    run = &r;
    blockDim = {block[0], block[1], block[2]};
    gridDim = {grid[0], grid[1], grid[2]};
    seed = seed * 0x9E3779B97F4A7C15ull + 1;
    r.random = seed ^ 0x5DEECE66Dull;
    for (unsigned z = 0; z < grid[2]; z++)
        for (unsigned y = 0; y < grid[1]; y++)
            for (unsigned x = 0; x < grid[0]; x++) {
                blockIdx = {x, y, z};
                if (!run_block(threads, seed)) {
                    error = std::string(e->name) + " block (" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + "): " + r.error;
                    run = nullptr;
                    return error.c_str();
                }
            }
    run = nullptr;
    return nullptr;
}
}  // namespace emu

// Whether this library holds kernel `name` (driver.cpp asks each family).
extern "C" int emu_has(const char *name) { return emu::find(name) != nullptr; }

// cuLaunchKernel's form: params[i] points at argument i, sized by the
// kernel's own signature.
extern "C" const char *emu_launch_params(const char *name, void **params, const unsigned *grid, const unsigned *block, uint64_t seed) {
    const emu::Entry *e = emu::find(name);
    if (!e) return "no such kernel";
    std::vector<uint64_t> args(e->signature.size());
    for (size_t i = 0; i < args.size(); i++) {
        size_t bytes = e->signature[i] == 'p' || e->signature[i] == 'l' ? 8 : 4;
        args[i] = 0;
        std::memcpy(&args[i], params[i], bytes);
    }
    return emu::launch(e, args.data(), grid, block, seed);
}
