// Race detection for the emulated kernels (KERNEL_EMU_TSAN=1 builds them
// with ThreadSanitizer): each lane of a block is a TSan fiber of its own,
// switched to without synchronising, so two lanes' accesses are ordered only
// by what the GPU orders them by: a __syncthreads (every lane releases at
// it and acquires once the block passes it), a __syncwarp (the same within
// its warp), a cp.async wait (the copy lands in the waiting lane), and the
// end of the block (the next block's lanes acquire what it released; blocks
// are never checked against one another). Other warp collectives order
// nothing, as on the GPU. The scheduler's own bookkeeping is ignored.
// Without the sanitizer every hook is empty.
#pragma once
#include <vector>

#if defined(__SANITIZE_THREAD__)
extern "C" {
void *__tsan_get_current_fiber();
void *__tsan_create_fiber(unsigned flags);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
void __tsan_ignore_thread_begin();
void __tsan_ignore_thread_end();
}
#endif

namespace emu::race {

#if defined(__SANITIZE_THREAD__)
constexpr unsigned NO_SYNC = 1;  // __tsan_switch_to_fiber_no_sync

// Fibers for lane slots, made once and kept: launches are ordered anyway.
inline void *lane_fiber(unsigned i) {
    static std::vector<void *> fibers;
    while (fibers.size() <= i) fibers.push_back(__tsan_create_fiber(0));
    return fibers[i];
}
inline void *host_fiber = nullptr;
// Sync objects: two each, used alternately, so a lane already past a
// barrier (or block) never leaks its later accesses to one still at it.
inline char block_sync[2], barrier_sync[2];

// Inlined into the function that then jumps: TSan moves that function's
// frame from one fiber's shadow stack to the other's, no more.
[[gnu::always_inline]] inline void to_lane(unsigned i) { __tsan_switch_to_fiber(lane_fiber(i), NO_SYNC); }
[[gnu::always_inline]] inline void to_scheduler() { __tsan_switch_to_fiber(host_fiber, NO_SYNC); }
// The launching thread's writes happen before block 0; it ignores its own
// accesses while the blocks run (the scheduler reads every lane's state).
inline void launch_begins() {
    host_fiber = __tsan_get_current_fiber();
    __tsan_release(&block_sync[0]);
    __tsan_ignore_thread_begin();
}
inline void launch_ends(unsigned blocks) {
    __tsan_ignore_thread_end();
    __tsan_acquire(&block_sync[blocks % 2]);
}
// A lane's first act once switched to, before it reads anything.
inline void start_lane(unsigned block) { __tsan_acquire(&block_sync[block % 2]); }
// A lane's last act: it touches nothing after its release (the launching
// thread's next writes are ordered only after what precedes it).
[[gnu::always_inline]] inline void finish_lane(unsigned block) {
    void *host = host_fiber;
    __tsan_release(&block_sync[(block + 1) % 2]);
    __tsan_switch_to_fiber(host, NO_SYNC);
}
inline void barrier_arrive(unsigned generation) { __tsan_release(&barrier_sync[generation % 2]); }
inline void barrier_leave(unsigned generation) { __tsan_acquire(&barrier_sync[generation % 2]); }
// __syncwarp: as a barrier, per warp.
inline char warp_sync[32][2];
inline void warp_arrive(unsigned warp, unsigned generation) { __tsan_release(&warp_sync[warp][generation % 2]); }
inline void warp_leave(unsigned warp, unsigned generation) { __tsan_acquire(&warp_sync[warp][generation % 2]); }
// The emulator's state that every lane touches (the error, the random draws).
struct Internal {
    Internal() { __tsan_ignore_thread_begin(); }
    ~Internal() { __tsan_ignore_thread_end(); }
};
#else
inline void to_lane(unsigned) {}
inline void to_scheduler() {}
inline void launch_begins() {}
inline void launch_ends(unsigned) {}
inline void start_lane(unsigned) {}
inline void finish_lane(unsigned) {}
inline void barrier_arrive(unsigned) {}
inline void barrier_leave(unsigned) {}
inline void warp_arrive(unsigned, unsigned) {}
inline void warp_leave(unsigned, unsigned) {}
struct Internal {};
#endif

}  // namespace emu::race
