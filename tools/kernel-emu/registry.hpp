// The kernels a family library holds (EMU_ENTRY lines, which
// tools/kernel-emu/build writes from the PTX's entry points) and the C entry
// points the emulated driver calls: emu_has, emu_pack_params and emu_launch_args.
#pragma once
#include "schedule.hpp"

namespace emu {

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

#define EMU_ENTRY(name) static emu::Register emu_entry_##name(#name, &name);

namespace emu {
inline const Entry *find(const char *name) {
    for (const Entry &x : entries())
        if (std::strcmp(x.name, name) == 0) return &x;
    return nullptr;
}

// Runs kernel `e` over grid x block, one block at a time, with `shared`
// bytes of dynamic shared memory; returns null or why it failed.
inline const char *launch(const Entry *e, const uint64_t *args, const unsigned *grid, const unsigned *block, unsigned shared, uint64_t seed) {
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
    std::vector<unsigned char> dynamic(shared);  // 16-byte aligned, as operator new aligns
    dynamic_shared = shared ? dynamic.data() : nullptr;
    race::launch_begins();
    auto blocks = [&]() -> bool {
        for (unsigned z = 0; z < grid[2]; z++)
            for (unsigned y = 0; y < grid[1]; y++)
                for (unsigned x = 0; x < grid[0]; x++, r.block++) {
                    blockIdx = {x, y, z};
                    std::memset(dynamic.data(), 0xFF, shared);  // NaN in f32 and bf16: reads before writes show
                    if (!run_block(threads, seed)) {
                        error = std::string(e->name) + " block (" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + "): " + r.error;
                        return false;
                    }
                }
        return true;
    };
    bool ok = blocks();
    race::launch_ends(r.block);
    run = nullptr;
    dynamic_shared = nullptr;
    return ok ? nullptr : error.c_str();
}
}  // namespace emu

// Whether this library holds kernel `name` (driver.cpp asks each family).
extern "C" int emu_has(const char *name) { return emu::find(name) != nullptr; }

// Packs cuLaunchKernel's params (params[i] points at argument i, sized by
// the kernel's own signature) into 64-bit words; returns how many, or -1
// for an unknown kernel. The driver keeps packed arguments for graphs.
extern "C" int emu_pack_params(const char *name, void **params, uint64_t *out, int room) {
    const emu::Entry *e = emu::find(name);
    if (!e || (int)e->signature.size() > room) return -1;
    for (size_t i = 0; i < e->signature.size(); i++) {
        size_t bytes = e->signature[i] == 'p' || e->signature[i] == 'l' ? 8 : 4;
        out[i] = 0;
        std::memcpy(&out[i], params[i], bytes);
    }
    return (int)e->signature.size();
}

// Runs kernel `name` on packed arguments; returns null or why it failed.
extern "C" const char *emu_launch_args(const char *name, const uint64_t *args, const unsigned *grid, const unsigned *block, unsigned shared,
                                       uint64_t seed) {
    const emu::Entry *e = emu::find(name);
    if (!e) return "no such kernel";
    return emu::launch(e, args, grid, block, shared, seed);
}
