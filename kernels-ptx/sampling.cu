// Token sampling on the device, one block per row of logits, as the CPU's
// `generate::sample_row` defines it: greedy (first maximum), or temperature
// with optional top-k and top-p over the tokens in descending logit order
// (ties by id), one uniform draw per row from the host's seeded streams.
// Only the picked ids and their logprobs leave the device.
//
// Every truncation is a prefix of that order, written (key, ties): all
// tokens whose order key is above `key`, then the first `ties` tokens (by
// id) whose key equals it. Each threshold is found by searching the 32-bit
// key two bits per pass over the row, so the row is never sorted.
#include "common.cuh"

#define SAMPLE_THREADS 1024

// A float's bits mapped so that unsigned order is the float total order.
__device__ __forceinline__ unsigned order_key(float x) {
    unsigned b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_float(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

struct MaxOp {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct MinOp {
    __device__ float operator()(float a, float b) const { return fminf(a, b); }
};
struct MinU32 {
    __device__ unsigned operator()(unsigned a, unsigned b) const { return min(a, b); }
};

// The largest key from which the measure (Σ probability when by_mass, else
// the count) of the tokens at or above it reaches `target` (exceeds it when
// strict). The measure only grows as the key falls, so the key is built two
// bits per pass over the row, three candidates measured at once.
__device__ unsigned bisect(const float *s, int vocab, bool by_mass, float lse, float target, bool strict) {
    unsigned key = 0;
    for (int bit = 30; bit >= 0; bit -= 2) {
        unsigned c1 = key | (1u << bit), c2 = key | (2u << bit), c3 = key | (3u << bit);
        float m1 = 0.0f, m2 = 0.0f, m3 = 0.0f;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            float x = s[i];
            unsigned k = order_key(x);
            if (k < c1) continue;
            float w = by_mass ? expf(x - lse) : 1.0f;
            m1 += w;
            if (k >= c2) m2 += w;
            if (k >= c3) m3 += w;
        }
        m1 = block_sum(m1);
        m2 = block_sum(m2);
        m3 = block_sum(m3);
        if (strict ? m3 > target : m3 >= target)
            key = c3;
        else if (strict ? m2 > target : m2 >= target)
            key = c2;
        else if (strict ? m1 > target : m1 >= target)
            key = c1;
    }
    return key;
}

// Tokens above a key (count and mass), how many share it, and the
// probability of one of those.
struct Tally {
    float above_n, above_mass, equal_n, p;
};

__device__ Tally tally(const float *s, int vocab, unsigned key, float lse) {
    float an = 0.0f, am = 0.0f, en = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float x = s[i];
        unsigned k = order_key(x);
        if (k > key) {
            an += 1.0f;
            am += expf(x - lse);
        } else if (k == key) {
            en += 1.0f;
        }
    }
    Tally t;
    t.above_n = block_sum(an);
    t.above_mass = block_sum(am);
    t.equal_n = block_sum(en);
    t.p = expf(key_float(key) - lse);
    return t;
}

struct Prefix {
    unsigned key;
    int ties;
};

__device__ __forceinline__ bool shorter(Prefix a, Prefix b) {
    return a.key > b.key || (a.key == b.key && a.ties < b.ties);
}

// How many of a tie group a prefix must take to reach `target`: the
// smallest j with above + j·p ≥ target (> when strict), within 1..n.
__device__ __forceinline__ int ties_to_reach(Tally t, float target, bool strict) {
    if (t.p <= 0.0f) return (int)t.equal_n;
    float need = (target - t.above_mass) / t.p;
    int j = strict ? (int)floorf(need) + 1 : (int)ceilf(need);
    return max(1, min(j, (int)t.equal_n));
}

// The id of the `nth` (1-based) token, by id, whose key is `key`: each
// thread counts a contiguous run of ids, and a block scan finds the owner.
__device__ unsigned nth_with_key(const float *s, int vocab, unsigned key, int nth) {
    __shared__ int warp_totals[32];
    __shared__ unsigned found;
    int run = (vocab + blockDim.x - 1) / blockDim.x;
    int lo = min(vocab, (int)threadIdx.x * run), hi = min(vocab, lo + run);
    int count = 0;
    for (int i = lo; i < hi; i++) count += order_key(s[i]) == key;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int incl = count;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffff, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) warp_totals[warp] = incl;
    if (threadIdx.x == 0) found = 0xffffffffu;
    __syncthreads();
    int before = incl - count;
    for (int w = 0; w < warp; w++) before += warp_totals[w];
    if (nth > before && nth <= before + count) {
        int seen = before;
        for (int i = lo; i < hi; i++)
            if (order_key(s[i]) == key && ++seen == nth) found = (unsigned)i;
    }
    __syncthreads();
    return found;
}

// draws[row] is the row's uniform draw in [0, 1); NaN skips the row.
// `scaled` is [rows, vocab] scratch for logits / temperature.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_rows_f32(const float *logits, float *scaled, const float *draws, unsigned *tokens, float *logprobs, int vocab,
                    float temperature, int top_k, float top_p) {
    long row = blockIdx.x;
    float u = draws[row];
    if (isnan(u)) return;
    const float *z = logits + row * vocab;
    float *s = scaled + row * vocab;
    // Divide, as the CPU does, so both order the same scaled values.
    float t = temperature > 0.0f ? temperature : 1.0f;
    float mx = -INFINITY, mn = INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float x = z[i] / t;
        s[i] = x;
        mx = fmaxf(mx, x);
        mn = fminf(mn, x);
    }
    mx = block_reduce(mx, MaxOp(), -INFINITY);
    mn = block_reduce(mn, MinOp(), INFINITY);
    float sum = 0.0f;
    unsigned first = 0xffffffffu;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float x = s[i];
        sum += expf(x - mx);
        if (x == mx) first = min(first, (unsigned)i);
    }
    float lse = mx + logf(block_sum(sum));
    unsigned pick = block_reduce(first, MinU32(), 0xffffffffu);
    if (temperature > 0.0f) {
        unsigned lowest = order_key(mn);
        Tally kept = tally(s, vocab, lowest, lse);  // the tally at keep.key
        Prefix keep = {lowest, (int)kept.equal_n};
        if (top_k > 0 && top_k < vocab) {
            unsigned key = bisect(s, vocab, false, lse, (float)top_k, false);
            kept = tally(s, vocab, key, lse);
            keep = {key, top_k - (int)kept.above_n};
        }
        if (top_p < 1.0f) {
            unsigned key = bisect(s, vocab, true, lse, top_p, false);
            Tally at = tally(s, vocab, key, lse);
            Prefix nucleus = {key, ties_to_reach(at, top_p, false)};
            if (shorter(nucleus, keep)) {
                keep = nucleus;
                kept = at;
            }
        }
        float target = u * (kept.above_mass + keep.ties * kept.p);
        // The draw lands on the first token whose cumulative mass exceeds it.
        unsigned key = bisect(s, vocab, true, lse, target, true);
        Tally at = tally(s, vocab, key, lse);
        Prefix landed = keep;
        if (at.equal_n > 0.0f) {
            Prefix p = {key, ties_to_reach(at, target, true)};
            if (shorter(p, keep)) landed = p;
        }
        unsigned nth = nth_with_key(s, vocab, landed.key, landed.ties);
        // A prefix is always found; the greedy pick only guards the index.
        if (nth < (unsigned)vocab) pick = nth;
    }
    if (threadIdx.x == 0) {
        tokens[row] = pick;
        logprobs[row] = s[pick] - lse;
    }
}
