// Per-thread state of an emulated block: each GPU thread is a fiber (a lane)
// that runs until it waits at a barrier or a warp collective.
#pragma once
#include <setjmp.h>
#include <ucontext.h>

#include <memory>
#include <string>
#include <vector>

#include "cuda_shim.hpp"
#include "race.hpp"

namespace emu {

enum class State { Ready, AtBarrier, AtWarp, Done };
enum class Op { Shuffle, Mma, Ldmatrix, LdmatrixTrans, SyncWarp };  // ldmatrix: the .x4 form

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
    Op op;             // the collective it waits at
    uint64_t in[10];   // that collective's operands (registers, a shuffle's value and source lane, an ldmatrix row)
    unsigned barriers; // __syncthreads passed in this block
    unsigned warp_syncs;  // __syncwarp passed
    const char *barrier_site;  // file:line of the one it waits at
    uint64_t out[4];   // the collective's results for this lane
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
    unsigned block = 0;   // blocks of this launch run before the current one
};
inline Run *run;

inline void fail(const std::string &why) {
    race::Internal internal;
    if (run->error.empty()) run->error = why;
}

inline Lane &me() { return run->lanes[run->current]; }

inline void wait(State s) {
    me().state = s;
    if (!_setjmp(me().at)) {
        race::to_scheduler();
        _longjmp(run->scheduler, 1);
    }
}

inline uint64_t next_random(uint64_t &s) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

}  // namespace emu
