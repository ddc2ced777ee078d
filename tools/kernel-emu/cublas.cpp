// The cuBLAS calls the CUDA backend makes (engine/backend/cuda/gemm.rs), on
// the CPU (gemm.hpp), for the emulated driver (driver.cpp). Built as
// libcublas.so.
#include "gemm.hpp"

namespace {
int handle_tag;
}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(void **h) {
    *h = &handle_tag;
    return 0;
}
cublasStatus_t cublasDestroy_v2(void *) { return 0; }
cublasStatus_t cublasSetStream_v2(void *, void *) { return 0; }
cublasStatus_t cublasSetMathMode(void *, int) { return 0; }
cublasStatus_t cublasSetWorkspace_v2(void *, void *, size_t) { return 0; }
cublasStatus_t cublasSetPointerMode_v2(void *, int) { return 0; }

cublasStatus_t cublasSgemm_v2(void *, int ta, int tb, int m, int n, int k, const float *alpha, const float *a, int lda, const float *b, int ldb,
                              const float *beta, float *c, int ldc) {
    return gemm({ta, tb, m, n, k, *alpha, a, R_32F, lda, b, R_32F, ldb, *beta, c, R_32F, ldc, c, R_32F, ldc});
}

cublasStatus_t cublasGemmEx(void *, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int atype, int lda, const void *b,
                            int btype, int ldb, const void *beta, void *c, int ctype, int ldc, int, int) {
    return gemm({ta, tb, m, n, k, *(const float *)alpha, a, atype, lda, b, btype, ldb, *(const float *)beta, c, ctype, ldc, c, ctype, ldc});
}

}  // extern "C"
