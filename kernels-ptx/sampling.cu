// Token sampling on the device, one block per row of logits, as the CPU's
// `generate::sample_row` defines it: greedy (first maximum), or temperature
// with optional top-k and top-p, one uniform draw per row from the host's
// seeded streams. Top-k and top-p keep a prefix of the tokens in descending
// logit order (ties by id); the draw then lands, in id order, on the first
// kept token whose cumulative probability passes it. Only the picked ids and
// their logprobs leave the device.
//
// A truncation prefix is written (key, ties): all tokens whose order key is
// above `key`, then the first `ties` tokens (by id) whose key equals it.
// Each threshold is found by searching the 32-bit key three bits per pass
// over the row (seven candidates measured at once), so the row is never
// sorted. An untruncated row needs none of that: a pass for its maximum,
// and one summing its mass per warp part of the row, whose sums also place
// the draw (draw_by_id: the landing part split among the warps again, and
// one warp scanning the part of that the draw lands in).
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
struct MinU32 {
    __device__ unsigned operator()(unsigned a, unsigned b) const { return min(a, b); }
};
struct MaxI32 {
    __device__ int operator()(int a, int b) const { return max(a, b); }
};

// A token's probability from its scaled logit and the row's log-sum-exp
// (expf, not exp2f of a product: the extra rounding of the product moves
// the top-p cut-off by a token more often).
__device__ __forceinline__ float prob(float x, float lse) { return expf(x - lse); }

// Sums each of v[0..N) over the block in one reduction (fixed order:
// deterministic).
template <int N> __device__ __forceinline__ void block_sums(float (&v)[N]) {
    __shared__ float partial[32][N];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int j = 0; j < N; j++) v[j] = warp_sum(v[j]);
    if (lane == 0)
        for (int j = 0; j < N; j++) partial[warp][j] = v[j];
    __syncthreads();
    if (warp == 0)
        for (int j = 0; j < N; j++) {
            float x = warp_sum(lane < (int)(blockDim.x >> 5) ? partial[lane][j] : 0.0f);
            if (lane == 0) partial[0][j] = x;
        }
    __syncthreads();
    for (int j = 0; j < N; j++) v[j] = partial[0][j];
    __syncthreads();
}

// The largest key from which the measure (Σ probability when by_mass, else
// the count) of the tokens at or above it reaches `target`. The measure
// only grows as the key falls, so the key is built
// three bits per pass over the row (two in the last): candidate j sets the
// pass's bits to j, and a token at or above candidate 1 adds to the measure
// of every candidate up to its own digit (of all of them once its higher
// bits exceed the key's).
__device__ unsigned bisect(const float *s, int vocab, bool by_mass, float lse, float target) {
    unsigned key = 0;
    for (int shift = 29; shift > -3; shift -= 3) {
        int lo = max(shift, 0), top = (1 << (shift < 0 ? 3 + shift : 3)) - 1;  // this pass's bits from lo: candidates 1..top
        unsigned first = key | (1u << lo);
        float m[7] = {};
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            float x = s[i];
            unsigned k = order_key(x);
            if (k < first) continue;
            unsigned d = (k >> lo) - (key >> lo);  // past top when the higher bits exceed the key's
            float w = by_mass ? prob(x, lse) : 1.0f;
#pragma unroll
            for (int j = 0; j < 7; j++) m[j] += d > (unsigned)j ? w : 0.0f;  // m[j]: candidate j + 1
        }
        block_sums(m);
        for (int j = top; j >= 1; j--)
            if (m[j - 1] >= target) {
                key |= (unsigned)j << lo;
                break;
            }
    }
    return key;
}

// Tokens above a key (count and mass), how many share it, and the
// probability of one of those.
struct Tally {
    float above_n, above_mass, equal_n, p;
};

__device__ Tally tally(const float *s, int vocab, unsigned key, float lse) {
    float v[3] = {0.0f, 0.0f, 0.0f};  // above_n, above_mass, equal_n
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float x = s[i];
        unsigned k = order_key(x);
        if (k > key) {
            v[0] += 1.0f;
            v[1] += prob(x, lse);
        } else if (k == key) {
            v[2] += 1.0f;
        }
    }
    block_sums(v);
    return {v[0], v[1], v[2], prob(key_float(key), lse)};
}

struct Prefix {
    unsigned key;
    int ties;
};

__device__ __forceinline__ bool shorter(Prefix a, Prefix b) {
    return a.key > b.key || (a.key == b.key && a.ties < b.ties);
}

// How many of a tie group a prefix must take to reach `target`: the
// smallest j with above + j·p ≥ target, within 1..n.
__device__ __forceinline__ int ties_to_reach(Tally t, float target) {
    if (t.p <= 0.0f) return (int)t.equal_n;
    int j = (int)ceilf((target - t.above_mass) / t.p);
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

#define NO_TOKEN 0xffffffffu

// The tokens a draw may land on: those whose order key is above `key`, and
// those at it with ids up to `cut`. {0, NO_TOKEN} keeps every token.
struct Kept {
    unsigned key, cut;
};
__device__ __forceinline__ bool is_kept(Kept k, float x, int i) {
    unsigned o = order_key(x);
    return o > k.key || (o == k.key && (unsigned)i <= k.cut);
}

// The draw works on ids split into one contiguous part per warp, whose
// lanes stride it (coalesced): part `p` of [lo, hi) is [plo, phi).
__device__ __forceinline__ void part_of(int lo, int hi, int p, int &plo, int &phi) {
    int warps = blockDim.x >> 5, span = (hi - lo + warps - 1) / warps;
    plo = min(hi, lo + p * span);
    phi = min(hi, plo + span);
}

// Σ exp(x − base) over the kept tokens of each warp's part of [lo, hi),
// into part_mass[warp] (a fixed order: deterministic).
__device__ void kept_part_masses(float *part_mass, const float *s, int lo, int hi, float base, Kept k) {
    int plo, phi, lane = threadIdx.x & 31;
    part_of(lo, hi, threadIdx.x >> 5, plo, phi);
    float m = 0.0f;
    for (int i = plo + lane; i < phi; i += 32)
        if (is_kept(k, s[i], i)) m += prob(s[i], base);
    m = warp_sum(m);
    if (lane == 0) part_mass[threadIdx.x >> 5] = m;
}

// The part whose mass takes the running sum (from `before`, which moves past
// the parts before it) beyond `target`; past them all (rounding), the last
// part with mass, `before` then excluding it.
__device__ __forceinline__ int landing_part(const float *part_mass, float target, float &before) {
    int landed = -1;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
        if (part_mass[w] <= 0.0f) continue;
        landed = w;
        if (before + part_mass[w] > target) return w;
        before += part_mass[w];
    }
    if (landed >= 0) before -= part_mass[landed];
    return landed;
}

// The draw in id order over the kept tokens, given the kept mass
// (exp(x − base) summed) of each warp's part of the row: the first kept
// token whose cumulative mass exceeds u times the total. The part the draw
// lands in is split among the warps again, and the part of that it lands
// in is scanned 32 ids at a time by its warp. Where rounding carries the
// draw past the sums, the last kept token with mass there is the pick.
__device__ unsigned draw_by_id(const float *row_parts, const float *s, int vocab, float base, Kept k, float u) {
    __shared__ float sub_parts[32];
    __shared__ unsigned picked;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float total = 0.0f;
    for (int w = 0; w < warps; w++) total += row_parts[w];
    float target = u * total, before = 0.0f;
    int lo, hi;
    part_of(0, vocab, landing_part(row_parts, target, before), lo, hi);
    kept_part_masses(sub_parts, s, lo, hi, base, k);
    __syncthreads();
    int landed = landing_part(sub_parts, target, before);
    if (warp == landed) {
        int plo, phi;
        part_of(lo, hi, landed, plo, phi);
        float run = before;
        unsigned found = NO_TOKEN;
        int last = -1;
        for (int i0 = plo; i0 < phi && found == NO_TOKEN; i0 += 32) {
            int i = i0 + lane;
            float p = i < phi && is_kept(k, s[i], i) ? prob(s[i], base) : 0.0f, incl = p;
            for (int o = 1; o < 32; o <<= 1) {
                float y = __shfl_up_sync(0xffffffff, incl, o);
                if (lane >= o) incl += y;
            }
            found = warp_reduce(p > 0.0f && run + incl > target ? (unsigned)i : NO_TOKEN, MinU32());
            last = max(last, warp_reduce(p > 0.0f ? i : -1, MaxI32()));
            run += __shfl_sync(0xffffffff, incl, 31);
        }
        if (lane == 0) picked = found != NO_TOKEN ? found : (unsigned)last;
    }
    __syncthreads();
    return picked;
}

// draws[row] is the row's uniform draw in [0, 1); NaN skips the row.
// `scaled` is [rows, vocab] scratch for logits / temperature (unused at 1).
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS, 1)
    sample_rows_f32(const float *logits, float *scaled, const float *draws, unsigned *tokens, float *logprobs, int vocab,
                    float temperature, int top_k, float top_p) {
    long row = blockIdx.x;
    float u = draws[row];
    if (isnan(u)) return;
    const float *z = logits + row * vocab;
    // Divide, as the CPU does, so both order the same scaled values; at
    // temperature 1 (and greedy) those are the logits themselves, read in
    // place (scaled may then be null).
    float t = temperature > 0.0f ? temperature : 1.0f;
    const float *s = t == 1.0f ? z : scaled + row * vocab;
    // The maximum, and the first id holding it (the greedy pick): each
    // thread's own first, then the block's.
    float mx = -INFINITY;
    unsigned first = NO_TOKEN;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float x = z[i] / t;
        if (t != 1.0f) scaled[row * vocab + i] = x;
        if (x > mx || first == NO_TOKEN) {  // a row of -inf still picks its first token
            mx = x;
            first = (unsigned)i;
        }
    }
    float mine = mx;
    mx = block_reduce(mx, MaxOp(), -INFINITY);
    unsigned pick = block_reduce(mine == mx ? first : NO_TOKEN, MinU32(), NO_TOKEN);
    // The row's mass, summed per warp part: an untruncated draw reuses the sums.
    __shared__ float row_parts[32];
    const Kept all = {0u, NO_TOKEN};
    kept_part_masses(row_parts, s, 0, vocab, mx, all);
    __syncthreads();
    float mass = 0.0f;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) mass += row_parts[w];
    float lse = mx + logf(mass);
    if (temperature > 0.0f) {
        // Every token is kept unless top-k or top-p keeps a prefix.
        Prefix keep = {0u, 0};
        float group = 0.0f;  // how many tokens share keep.key
        bool truncated = false;
        if (top_k > 0 && top_k < vocab) {
            unsigned key = bisect(s, vocab, false, lse, (float)top_k);
            Tally at = tally(s, vocab, key, lse);
            keep = {key, top_k - (int)at.above_n};
            group = at.equal_n;
            truncated = true;
        }
        if (top_p < 1.0f) {
            unsigned key = bisect(s, vocab, true, lse, top_p);
            Tally at = tally(s, vocab, key, lse);
            Prefix nucleus = {key, ties_to_reach(at, top_p)};
            if (!truncated || shorter(nucleus, keep)) {
                keep = nucleus;
                group = at.equal_n;
                truncated = true;
            }
        }
        Kept kept = all;
        if (truncated) {
            // A tie group cut short keeps its first `ties` tokens by id.
            kept = {keep.key, keep.ties < (int)group ? nth_with_key(s, vocab, keep.key, keep.ties) : NO_TOKEN};
            __syncthreads();  // every thread has read the whole row's masses above
            kept_part_masses(row_parts, s, 0, vocab, mx, kept);
            __syncthreads();
        }
        unsigned drawn = draw_by_id(row_parts, s, vocab, mx, kept, u);
        // A kept token always has mass (the maximum's is at least 1/vocab); the greedy pick only guards the index.
        if (drawn < (unsigned)vocab) pick = drawn;
    }
    if (threadIdx.x == 0) {
        tokens[row] = pick;
        logprobs[row] = s[pick] - lse;
    }
}
