// The cuBLASLt calls the CUDA backend makes (engine/backend/cuda/gemm_lt.rs,
// gemm_tune.rs), on the CPU (gemm.hpp), for the emulated driver
// (driver.cpp): descriptors hold what the GEMM needs, the heuristic offers
// three algorithms, the second of which splits K in two (so its sums round
// otherwise, as a real split-K's do, and a test can tell which ran), and a
// matmul runs D = alpha op(A) op(B) + beta C (C apart from D or D itself)
// with the algorithm it is given. Anything else the backend might set is
// refused, so a new use shows up here first.
// With KERNEL_EMU_LT_DECLINE set, the heuristic offers no algorithm (as
// cuBLASLt does for a product it cannot run), so the backend's fallback
// runs; with KERNEL_EMU_LT_FAIL set, it offers them but every matmul call
// fails, which takes the fallback after an algorithm was chosen.
// Built as libcublasLt.so.
#include "gemm.hpp"

#include <algorithm>

namespace {
int handle_tag;
enum { TRANSA = 3, TRANSB = 4 };  // cublasLtMatmulDescAttributes_t
enum { COMPUTE_32F = 68, COMPUTE_32F_FAST_TF32 = 77 };
enum { NOT_SUPPORTED = 15, INVALID_VALUE = 7 };
constexpr int ALGORITHMS = 3;

struct Layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};
struct Desc {
    int ta = N, tb = N;
};
// cublasLtMatmulAlgo_t: here its id and how many parts it splits K into.
struct Algo {
    uint64_t id, split_k, unused[6];
};
// cublasLtMatmulHeuristicResult_t.
struct Heuristic {
    Algo algo;
    size_t workspace;
    int state;
    float waves;
    int reserved[4];
};
}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(void **h) {
    *h = &handle_tag;
    return 0;
}
cublasStatus_t cublasLtDestroy(void *) { return 0; }

cublasStatus_t cublasLtMatrixLayoutCreate(Layout **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    if (!known(type) || ld < (int64_t)rows) return INVALID_VALUE;
    *l = new Layout{type, rows, cols, ld};
    return 0;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(Layout *l) {
    delete l;
    return 0;
}

cublasStatus_t cublasLtMatmulDescCreate(Desc **d, int compute, int scale) {
    if ((compute != COMPUTE_32F && compute != COMPUTE_32F_FAST_TF32) || scale != R_32F) return NOT_SUPPORTED;
    *d = new Desc;
    return 0;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(Desc *d, int attr, const void *buf, size_t size) {
    if ((attr != TRANSA && attr != TRANSB) || size != sizeof(int)) return NOT_SUPPORTED;
    (attr == TRANSA ? d->ta : d->tb) = *static_cast<const int *>(buf);
    return 0;
}
cublasStatus_t cublasLtMatmulDescDestroy(Desc *d) {
    delete d;
    return 0;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(void **p) {
    *p = &handle_tag;
    return 0;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(void *, int, const void *, size_t) { return 0; }
cublasStatus_t cublasLtMatmulPreferenceDestroy(void *) { return 0; }

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(void *, Desc *, Layout *, Layout *, Layout *, Layout *, void *, int requested,
                                              Heuristic *out, int *count) {
    if (requested < 1) return INVALID_VALUE;
    if (std::getenv("KERNEL_EMU_LT_DECLINE")) {
        *count = 0;
        return 0;
    }
    *count = std::min(requested, ALGORITHMS);
    for (int i = 0; i < *count; i++) {
        std::memset(&out[i], 0, sizeof(Heuristic));
        out[i].algo.id = i;
        out[i].algo.split_k = i == 1 ? 2 : 1;
        out[i].waves = 1.0f;
    }
    return 0;
}

cublasStatus_t cublasLtMatmul(void *, const Desc *desc, const void *alpha, const void *a, const Layout *la, const void *b, const Layout *lb,
                              const void *beta, const void *c, const Layout *lc, void *d, const Layout *ld, const Algo *algo, void *, size_t,
                              void *) {
    long m = desc->ta == N ? la->rows : la->cols, k = desc->ta == N ? la->cols : la->rows;
    long kb = desc->tb == N ? lb->rows : lb->cols, n = desc->tb == N ? lb->cols : lb->rows;
    bool shaped = k == kb && (long)ld->rows == m && (long)ld->cols == n && lc->rows == ld->rows && lc->cols == ld->cols;
    if (!shaped || algo == nullptr || algo->id >= ALGORITHMS || lc->type != ld->type) return INVALID_VALUE;
    if (std::getenv("KERNEL_EMU_LT_FAIL")) return NOT_SUPPORTED;
    return gemm({desc->ta, desc->tb, (int)m, (int)n, (int)k, *(const float *)alpha, a, la->type, (int)la->ld, b, lb->type, (int)lb->ld,
                 *(const float *)beta, c, lc->type, (int)lc->ld, d, ld->type, (int)ld->ld, (int)algo->split_k});
}

}  // extern "C"
