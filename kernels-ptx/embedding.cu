// Token embedding forward (gather) and backward. The backward takes the rows
// sorted by token id (`order`, with `starts[v]..starts[v+1]` the rows of
// token v): one block per token sums its rows in order, so a hot token is
// summed by one owner, with no atomics and a deterministic result.
#include "common.cuh"

template <typename T> __device__ void embedding_fwd(T *out, const T *table, const unsigned *ids, long rows, int dim) {
    FOR_EACH(k, rows * dim) {
        long r = k / dim;
        int c = (int)(k % dim);
        st(out, k, ld(table, (long)ids[r] * dim + c));
    }
}

template <typename T> __device__ void embedding_bwd(T *dtable, const T *dout, const unsigned *order, const unsigned *starts, int dim) {
    long v = blockIdx.x;
    unsigned s0 = starts[v], s1 = starts[v + 1];
    if (s0 == s1) return;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float acc = ld(dtable, v * dim + c);
        for (unsigned j = s0; j < s1; j++) acc += ld(dout, (long)order[j] * dim + c);
        st(dtable, v * dim + c, acc);
    }
}

#define INSTANTIATE(T, S)                                                                                                   \
    extern "C" __global__ void embedding_fwd_##S(T *out, const T *table, const unsigned *ids, long rows, int dim) {        \
        embedding_fwd(out, table, ids, rows, dim);                                                                          \
    }                                                                                                                       \
    extern "C" __global__ void embedding_bwd_##S(T *dt, const T *dout, const unsigned *order, const unsigned *starts,       \
                                                 int dim) {                                                                 \
        embedding_bwd(dt, dout, order, starts, dim);                                                                        \
    }

INSTANTIATE(float, f32)
INSTANTIATE(bf16, bf16)
