// The cuBLAS calls the CUDA backend makes (engine/backend/cuda/gemm.rs), on
// the CPU, for the emulated driver (driver.cpp): column-major GEMM with f32
// or bf16 operands, f32 output and accumulation. Built as libcublas.so.
#include <cstdint>
#include <cstring>
#include <vector>

typedef int cublasStatus_t;
enum { N = 0, T = 1 };
enum { R_32F = 0, R_16BF = 14 };

namespace {
int handle_tag;

float element(const void *p, int type, long i) {
    if (type == R_32F) return static_cast<const float *>(p)[i];
    uint32_t bits = uint32_t(static_cast<const uint16_t *>(p)[i]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// C[i + j ldc] = alpha Σ_l op(A)[i, l] op(B)[l, j] + beta C, op(A) m x k, op(B) k x n.
cublasStatus_t gemm(int ta, int tb, int m, int n, int k, float alpha, const void *a, int atype, int lda, const void *b, int btype, int ldb,
                    float beta, float *c, int ldc) {
    if ((atype != R_32F && atype != R_16BF) || (btype != R_32F && btype != R_16BF)) return 7;  // CUBLAS_STATUS_INVALID_VALUE
    std::vector<float> ak(k);
    for (int i = 0; i < m; i++) {
        for (int l = 0; l < k; l++) ak[l] = element(a, atype, ta == N ? i + (long)l * lda : l + (long)i * lda);
        for (int j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int l = 0; l < k; l++) acc += ak[l] * element(b, btype, tb == N ? l + (long)j * ldb : j + (long)l * ldb);
            float &out = c[i + (long)j * ldc];
            out = alpha * acc + (beta == 0.0f ? 0.0f : beta * out);
        }
    }
    return 0;
}
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
    return gemm(ta, tb, m, n, k, *alpha, a, R_32F, lda, b, R_32F, ldb, *beta, c, ldc);
}

cublasStatus_t cublasGemmEx(void *, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int atype, int lda, const void *b,
                            int btype, int ldb, const void *beta, void *c, int ctype, int ldc, int, int) {
    if (ctype != R_32F) return 7;
    return gemm(ta, tb, m, n, k, *(const float *)alpha, a, atype, lda, b, btype, ldb, *(const float *)beta, (float *)c, ldc);
}

}  // extern "C"
