// A CUDA driver for machines without a GPU: the subset of the driver API the
// CUDA backend calls through cudarc, over host memory, with kernel launches
// run by the emulated kernel families (emu.hpp). Built as libcuda.so and
// loaded by tests/cuda_emulated.rs before the backend opens the device (or
// preloaded into the vul2safe binary, LD_PRELOAD, with the families listed
// in KERNEL_EMU_FAMILIES), so the backend's own code (buffers, bf16 copies,
// launch arguments, dispatch) runs unchanged. Everything is synchronous; one
// call runs at a time.
//
// Stream capture (CUDA graphs): while a stream captures, launches, device
// copies, memsets and cuBLAS calls (emu_enqueue) are recorded, not run, and
// a graph launch runs them in order. Host copies and synchronization are
// refused there, as the real driver refuses them; so are allocation and
// free, which the real driver would turn into graph memory nodes but which
// the backend promises never to do in a captured step.
#include <dlfcn.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum : CUresult {
    OK = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    INVALID_DEVICE = 101,
    CAPTURE_UNSUPPORTED = 900,
    NOT_FOUND = 500,
    OUT_OF_RESOURCES = 701,
    LAUNCH_FAILED = 719,
};

namespace {

struct Family {
    void *lib;
    int (*has)(const char *);
    int (*pack)(const char *, void **, uint64_t *, int);
    const char *(*launch)(const char *, const uint64_t *, const unsigned *, const unsigned *, unsigned, uint64_t);
};

struct Function {
    std::string name;
    const Family *family;
    // Threads a block may have: the PTX's .maxntid (from __launch_bounds__),
    // else the hardware's 1024. A GPU refuses larger launches.
    unsigned max_threads;
    // Dynamic shared memory a launch may ask for: 48 KB unless raised
    // (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), as on a GPU.
    int max_dynamic_shared = 48 * 1024;
};

struct Entry {
    std::string name;
    unsigned max_threads;
};
struct Module {
    std::vector<Entry> entries;
};

// An entry's .maxntid x, y, z (between its parameter list and its body), as
// the product of the three, or 1024 without one.
unsigned max_threads_of(const char *entry) {
    const char *body = std::strchr(entry, '{'), *bound = std::strstr(entry, ".maxntid ");
    if (!bound || (body && bound > body)) return 1024;
    unsigned x = 1, y = 1, z = 1;
    std::sscanf(bound + 9, "%u, %u, %u", &x, &y, &z);
    return x * y * z;
}

struct Event {
    std::chrono::steady_clock::time_point at;
};

// Queued work: a captured graph's, run in order by a graph launch.
using Work = std::function<CUresult()>;
struct Graph {
    std::vector<Work> work;
};

// Each allocation sits between guard bytes, checked after every launch, so
// a kernel writing past a buffer's end fails the launch that did it.
constexpr size_t GUARD = 256;  // keeps the 256-byte alignment the driver promises
constexpr unsigned char GUARD_BYTE = 0xA5;
// A fresh allocation's contents are undefined on a GPU (and a pooled one
// holds its last user's data): they start as NaN in f32 and bf16 here, so a
// kernel or copy reading what nothing wrote shows in the results.
constexpr unsigned char FRESH_BYTE = 0xFF;

// KERNEL_EMU_DRY_RUN: launches, device-to-device copies and large memsets
// (the GPU's own work) do nothing, kernels need no family library, and fresh
// allocations of up to 64 KB read as zeros (so sampled tokens are 0 and the
// host logic proceeds): this times the engine's own host work per step, and
// the pool's high-water mark is the memory plan's exact peak.
const bool dry_run = std::getenv("KERNEL_EMU_DRY_RUN") != nullptr;
constexpr size_t DRY_RUN_ZEROED = 65536;

std::mutex big_lock;
std::vector<Family> families;
std::map<uintptr_t, size_t> allocations;  // data address -> bytes
size_t used = 0, used_high = 0;
uint64_t launches = 0;
int pool_tag, context_tag;
// The capture in progress on this thread: the backend captures in
// thread-local mode, and tests run their own backends on threads of their own.
thread_local Graph *capturing = nullptr;

// Runs `w`, or records it when the stream is capturing.
CUresult submit(Work w) {
    if (!capturing) return w();
    capturing->work.push_back(std::move(w));
    return OK;
}

// What may not happen while capturing: returns the refusal, after saying so.
CUresult refused_in_capture(const char *what) {
    std::fprintf(stderr, "emulated driver: %s during stream capture\n", what);
    return CAPTURE_UNSUPPORTED;
}

// Under AddressSanitizer (tools/kernel-emu/run --asan) the guards are
// poisoned too, so a kernel touching them, read or write, is reported there.
void poison_guards(char *data, size_t bytes, bool poison) {
#if defined(__SANITIZE_ADDRESS__)
    if (poison) {
        ASAN_POISON_MEMORY_REGION(data - GUARD, GUARD);
        ASAN_POISON_MEMORY_REGION(data + bytes, GUARD);
    } else {
        ASAN_UNPOISON_MEMORY_REGION(data - GUARD, GUARD);
        ASAN_UNPOISON_MEMORY_REGION(data + bytes, GUARD);
    }
#else
    (void)data, (void)bytes, (void)poison;
#endif
}

bool guards_intact(const unsigned char *data, size_t bytes) {
    for (size_t i = 0; i < GUARD; i++)
        if (data[-1 - (long)i] != GUARD_BYTE || data[bytes + i] != GUARD_BYTE) return false;
    return true;
}

// The check itself reads the guards, so it unpoisons them for the read.
bool guards_intact_unpoisoned(char *data, size_t bytes) {
    poison_guards(data, bytes, false);
    bool ok = guards_intact((const unsigned char *)data, bytes);
    poison_guards(data, bytes, true);
    return ok;
}

}  // namespace

#define CALL std::lock_guard<std::mutex> guard(big_lock)

// Loads the kernel families, one library path per line. Returns 0, or the count that failed.
extern "C" int emu_driver_init(const char *paths) {
    CALL;
    families.clear();
    int failed = 0;
    std::string all(paths);
    size_t at = 0;
    while (at < all.size()) {
        size_t end = all.find('\n', at);
        if (end == std::string::npos) end = all.size();
        std::string path = all.substr(at, end - at);
        at = end + 1;
        if (path.empty()) continue;
        void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        auto has = lib ? (int (*)(const char *))dlsym(lib, "emu_has") : nullptr;
        auto pack = lib ? (int (*)(const char *, void **, uint64_t *, int))dlsym(lib, "emu_pack_params") : nullptr;
        auto launch =
            lib ? (const char *(*)(const char *, const uint64_t *, const unsigned *, const unsigned *, unsigned, uint64_t))dlsym(lib, "emu_launch_args")
                : nullptr;
        if (!has || !pack || !launch) {
            std::fprintf(stderr, "emulated driver: cannot load %s\n", path.c_str());
            failed++;
            continue;
        }
        families.push_back({lib, has, pack, launch});
    }
    return failed;
}

extern "C" {

// A preloaded driver finds its kernel families in the environment.
CUresult cuInit(unsigned) {
    const char *paths = std::getenv("KERNEL_EMU_FAMILIES");
    bool loaded;
    {
        CALL;
        loaded = !families.empty();
    }
    if (!loaded && paths && emu_driver_init(paths) != 0) return NOT_FOUND;
    return OK;
}
CUresult cuDriverGetVersion(int *v) {
    *v = 13000;
    return OK;
}
CUresult cuDeviceGetCount(int *n) {
    *n = 1;
    return OK;
}
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *d = 0;
    return OK;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice) {
    std::snprintf(name, len, "CPU kernel emulator (tools/kernel-emu)");
    return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice) {
    switch (attr) {
    case 16:  // multiprocessors: few, so split-K decode sizing still splits
        *v = 4;
        break;
    case 75:  // compute capability 9.0
        *v = 9;
        break;
    case 76:
        *v = 0;
        break;
    case 115:  // memory pools supported
        *v = 1;
        break;
    default:
        *v = 0;
    }
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice) {
    *bytes = size_t(16) << 30;
    return OK;
}
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
    *total = size_t(16) << 30;
    *free_bytes = *total - used;
    return OK;
}

CUresult cuDevicePrimaryCtxRetain(void **ctx, CUdevice) {
    *ctx = &context_tag;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return OK; }
CUresult cuCtxSetCurrent(void *) { return OK; }
CUresult cuCtxGetCurrent(void **ctx) {
    *ctx = &context_tag;
    return OK;
}
CUresult cuCtxSynchronize() {
    CALL;
    return capturing ? refused_in_capture("context synchronize") : OK;
}
CUresult cuStreamCreate(void **s, unsigned) {
    *s = nullptr;
    return OK;
}
CUresult cuStreamDestroy_v2(void *) { return OK; }
CUresult cuStreamSynchronize(void *) {
    CALL;
    return capturing ? refused_in_capture("stream synchronize") : OK;
}
CUresult cuStreamWaitEvent(void *, void *, unsigned) { return OK; }

CUresult cuDeviceGetDefaultMemPool(void **pool, CUdevice) {
    *pool = &pool_tag;
    return OK;
}
CUresult cuMemPoolSetAttribute(void *, int, void *) { return OK; }
CUresult cuMemPoolGetAttribute(void *, int attr, void *value) {
    CALL;
    uint64_t v = attr == 8 ? used_high : attr == 7 ? used : 0;  // used high-water mark, used now
    std::memcpy(value, &v, 8);
    return OK;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
    CALL;
    if (capturing) return refused_in_capture("allocation");
    char *m = (char *)std::aligned_alloc(GUARD, GUARD + (bytes + GUARD - 1) / GUARD * GUARD + GUARD);
    if (!m) return OUT_OF_MEMORY;
    if (!dry_run)
        std::memset(m + GUARD, FRESH_BYTE, bytes);
    else if (bytes <= DRY_RUN_ZEROED)
        std::memset(m + GUARD, 0, bytes);
    std::memset(m, GUARD_BYTE, GUARD);
    std::memset(m + GUARD + bytes, GUARD_BYTE, GUARD);
    *p = (CUdeviceptr)(m + GUARD);
    allocations[(uintptr_t)(m + GUARD)] = bytes;
    poison_guards(m + GUARD, bytes, true);
    used += bytes;
    used_high = used > used_high ? used : used_high;
    return OK;
}
CUresult cuMemAllocAsync(CUdeviceptr *p, size_t bytes, void *) { return cuMemAlloc_v2(p, bytes); }
CUresult cuMemFree_v2(CUdeviceptr p) {
    CALL;
    if (capturing) return refused_in_capture("free");
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end()) return INVALID_VALUE;
    used -= it->second;
    poison_guards((char *)p, it->second, false);
    allocations.erase(it);
    std::free((char *)p - GUARD);
    return OK;
}
CUresult cuMemFreeAsync(CUdeviceptr p, void *) { return cuMemFree_v2(p); }

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
    CALL;
    if (capturing) return refused_in_capture("a copy from host memory");
    std::memcpy((void *)dst, src, n);
    return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *) { return cuMemcpyHtoD_v2(dst, src, n); }
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
    CALL;
    if (capturing) return refused_in_capture("a copy to host memory");
    std::memcpy(dst, (const void *)src, n);
    return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *) { return cuMemcpyDtoH_v2(dst, src, n); }
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    CALL;
    if (dry_run) return OK;
    return submit([=] {
        std::memmove((void *)dst, (const void *)src, n);
        return OK;
    });
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void *) { return cuMemcpyDtoD_v2(dst, src, n); }
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    CALL;
    if (dry_run && n > DRY_RUN_ZEROED) return OK;
    return submit([=] {
        std::memset((void *)dst, v, n);
        return OK;
    });
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void *) { return cuMemsetD8_v2(dst, v, n); }

// A PTX image: its entry points are the kernels the families provide.
CUresult cuModuleLoadData(void **module, const void *image) {
    Module *m = new Module;
    const char *ptx = (const char *)image;
    for (const char *at = std::strstr(ptx, ".entry "); at; at = std::strstr(at + 1, ".entry ")) {
        const char *name = at + 7, *end = name;
        while (*end && *end != '(' && *end != ' ' && *end != '\n') end++;
        m->entries.push_back({std::string(name, end), max_threads_of(end)});
    }
    *module = m;
    return OK;
}
CUresult cuModuleUnload(void *module) {
    delete (Module *)module;
    return OK;
}
CUresult cuModuleGetFunction(void **f, void *module, const char *name) {
    CALL;
    const Entry *entry = nullptr;
    for (const Entry &e : ((Module *)module)->entries)
        if (e.name == name) entry = &e;
    if (!entry) return NOT_FOUND;
    for (const Family &fam : families)
        if (fam.has(name)) {
            *f = new Function{name, &fam, entry->max_threads};
            return OK;
        }
    if (dry_run) {  // nothing runs, so any listed kernel will do
        *f = new Function{name, nullptr, entry->max_threads};
        return OK;
    }
    std::fprintf(stderr, "emulated driver: no family provides kernel %s\n", name);
    return NOT_FOUND;
}
CUresult cuFuncGetAttribute(int *v, int, void *) {
    *v = 0;
    return OK;
}
CUresult cuFuncSetAttribute(void *f, int attr, int value) {
    constexpr int MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
    if (attr == MAX_DYNAMIC_SHARED_SIZE_BYTES) ((Function *)f)->max_dynamic_shared = value;
    return OK;
}
// One block runs at a time here.
// KERNEL_EMU_NO_ROOM: kernels (comma-separated names) that act as on a card
// whose SMs cannot hold one of their blocks (too many registers or too much
// shared memory at the launched size): no block resident, launches refused.
bool no_room(const std::string &name) {
    const char *list = std::getenv("KERNEL_EMU_NO_ROOM");
    if (!list) return false;
    std::string names = std::string(",") + list + ",";
    return names.find("," + name + ",") != std::string::npos;
}

CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *blocks, void *f, int, size_t, unsigned) {
    *blocks = no_room(((Function *)f)->name) ? 0 : 1;
    return OK;
}

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared, void *,
                        void **params, void **extra) {
    CALL;
    const Function *fn = (const Function *)f;
    if (extra != nullptr) return INVALID_VALUE;  // the kernels take kernelParams
    if (bx * by * bz > fn->max_threads) {
        std::fprintf(stderr, "emulated driver: %s launched with %u threads a block, its launch bounds allow %u\n", fn->name.c_str(),
                     bx * by * bz, fn->max_threads);
        return INVALID_VALUE;
    }
    if (no_room(fn->name)) {
        std::fprintf(stderr, "emulated driver: %s: no room for a block on an SM (KERNEL_EMU_NO_ROOM)\n", fn->name.c_str());
        return OUT_OF_RESOURCES;
    }
    if ((int)shared > fn->max_dynamic_shared) {
        std::fprintf(stderr, "emulated driver: %s asks for %u bytes of dynamic shared memory, %d allowed\n", fn->name.c_str(), shared,
                     fn->max_dynamic_shared);
        return INVALID_VALUE;
    }
    if (dry_run) return OK;
    std::vector<uint64_t> args(64);
    int n = fn->family->pack(fn->name.c_str(), params, args.data(), (int)args.size());
    if (n < 0) return INVALID_VALUE;
    args.resize(n);
    // Arguments are packed now: a graph keeps their values, as the real one does.
    return submit([=] {
        unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
        const char *err = fn->family->launch(fn->name.c_str(), args.data(), grid, block, shared, ++launches);
        if (err) {
            std::fprintf(stderr, "emulated driver: %s: %s\n", fn->name.c_str(), err);
            return LAUNCH_FAILED;
        }
        for (const auto &[addr, bytes] : allocations)
            if (!guards_intact_unpoisoned((char *)addr, bytes)) {
                std::fprintf(stderr, "emulated driver: %s wrote outside an allocation of %zu bytes\n", fn->name.c_str(), bytes);
                return LAUNCH_FAILED;
            }
        return OK;
    });
}

CUresult cuStreamBeginCapture_v2(void *, int) {
    CALL;
    if (capturing) return INVALID_VALUE;
    capturing = new Graph;
    return OK;
}
CUresult cuStreamEndCapture(void *, void **graph) {
    CALL;
    if (!capturing) return INVALID_VALUE;
    *graph = capturing;
    capturing = nullptr;
    return OK;
}
CUresult cuStreamIsCapturing(void *, int *status) {
    CALL;
    *status = capturing ? 1 : 0;
    return OK;
}
CUresult cuGraphInstantiateWithFlags(void **exec, void *graph, unsigned long long) {
    *exec = new Graph(*(Graph *)graph);
    return OK;
}
CUresult cuGraphLaunch(void *exec, void *) {
    CALL;
    if (capturing) return refused_in_capture("a graph launch");
    for (const Work &w : ((Graph *)exec)->work)
        if (CUresult r = w(); r != OK) return r;
    return OK;
}
CUresult cuGraphUpload(void *, void *) { return OK; }
CUresult cuGraphExecDestroy(void *exec) {
    delete (Graph *)exec;
    return OK;
}
CUresult cuGraphDestroy(void *graph) {
    delete (Graph *)graph;
    return OK;
}

// For the emulated cuBLAS: records run(ctx) in the capture in progress and
// returns 1 (the graph then owns ctx, freed by drop), or returns 0 when
// nothing captures (the caller runs it now).
int emu_enqueue(int (*run)(void *), void *ctx, void (*drop)(void *)) {
    CALL;
    if (!capturing) return 0;
    std::shared_ptr<void> owned(ctx, drop);
    capturing->work.push_back([run, owned] { return run(owned.get()) == 0 ? OK : LAUNCH_FAILED; });
    return 1;
}

CUresult cuEventCreate(void **e, unsigned) {
    *e = new Event{std::chrono::steady_clock::now()};
    return OK;
}
CUresult cuEventDestroy_v2(void *e) {
    delete (Event *)e;
    return OK;
}
CUresult cuEventRecord(void *e, void *) {
    ((Event *)e)->at = std::chrono::steady_clock::now();
    return OK;
}
CUresult cuEventSynchronize(void *) { return OK; }
CUresult cuEventQuery(void *) { return OK; }
CUresult cuEventElapsedTime(float *ms, void *start, void *end) {
    *ms = std::chrono::duration<float, std::milli>(((Event *)end)->at - ((Event *)start)->at).count();
    return OK;
}
CUresult cuEventElapsedTime_v2(float *ms, void *start, void *end) { return cuEventElapsedTime(ms, start, end); }

CUresult cuGetErrorString(CUresult r, const char **s) {
    *s = r == LAUNCH_FAILED ? "emulated kernel failed (see stderr)" : "emulated driver error";
    return OK;
}
CUresult cuGetErrorName(CUresult r, const char **s) {
    *s = r == LAUNCH_FAILED ? "CUDA_ERROR_LAUNCH_FAILED" : "CUDA_ERROR_EMULATED";
    return OK;
}

}  // extern "C"
