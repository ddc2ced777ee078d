// Runs one block's fibers to completion, between barriers either in
// lockstep or one warp at a time (see run_block).
#pragma once
#include "collectives.hpp"

namespace emu {

inline void fiber_main() {
    Run *r = run;
    r->body(r->fn, r->args);
    me().state = State::Done;
    race::finish_lane(r->block);
    _longjmp(r->scheduler, 1);
}

// Resumes lane i until it waits or finishes; false once the kernel misused something.
inline bool resume(unsigned i) {
    Lane &l = run->lanes[i];
    run->current = i;
    threadIdx = {i % blockDim.x, i / blockDim.x % blockDim.y, i / (blockDim.x * blockDim.y)};
    if (!_setjmp(run->scheduler)) {
        bool started = l.started;
        l.started = true;
        unsigned block = run->block;
        race::to_lane(i);
        if (started) {
            _longjmp(l.at, 1);
        } else {
            race::start_lane(block);
            setcontext(&l.start);  // the fiber comes back through run->scheduler
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
        l.barriers = 0;
        l.warp_syncs = 0;
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
        // Threads still running all wait at a barrier: the same one, as many times passed.
        const Lane *first = nullptr;
        for (unsigned i = 0; i < threads; i++) {
            const Lane &l = lanes[i];
            if (l.state != State::AtBarrier) continue;
            if (!first) {
                first = &l;
            } else if (l.barriers != first->barriers || std::strcmp(l.barrier_site, first->barrier_site) != 0) {
                fail(std::string("threads of a block wait at different barriers: ") + first->barrier_site + " (passed " + std::to_string(first->barriers) + ") and " + l.barrier_site + " (passed " + std::to_string(l.barriers) + ")");
                return false;
            }
        }
        for (unsigned i = 0; i < threads; i++)
            if (lanes[i].state == State::AtBarrier) lanes[i].state = State::Ready;
    }
}

}  // namespace emu
