// Global-memory atomics and the flash backward's cross-block waits. Blocks
// run one at a time, in index order, so an atomic (or a release) is a plain
// read-modify-write, and a block that waits for a count must find exactly
// that count: less means it waits for a block that runs after it (on a GPU,
// which dispatches blocks in index order, it could wait forever) or for one
// that never counts; more, a count left over from an earlier launch (the
// order of the sums would be lost).
#pragma once
#include "lanes.hpp"

namespace emu {
// red/atom.add.f32: round to nearest, subnormal inputs and results flushed
// to sign-preserving zero (the PTX ISA's rule for these).
inline float flush_subnormal(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; }

inline void expect_count(const unsigned *counter, unsigned count) {
    if (*counter != count)
        fail("a block waits for a count of " + std::to_string(count) + " and finds " + std::to_string(*counter) +
             " (less: only blocks after it could count, so a GPU could wait forever; more: a count left from before)");
}
}  // namespace emu

inline float atomicAdd(float *p, float v) {
    float old = *p;
    *p = emu::flush_subnormal(emu::flush_subnormal(old) + emu::flush_subnormal(v));
    return old;
}
inline unsigned atomicAdd(unsigned *p, unsigned v) {
    unsigned old = *p;
    *p = old + v;
    return old;
}
