// The GEMM both emulated BLAS libraries run (cublas.cpp, cublaslt.cpp) on
// the CPU: column-major, f32 or bf16 operands, inputs and outputs, f32
// accumulation, D = alpha op(A) op(B) + beta C (C may be D), K summed in
// order, or in parts added after (split-K, another rounding). While the
// emulated driver captures a stream, a GEMM is recorded into the graph
// (emu_enqueue) instead of run.
#pragma once
#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

typedef int cublasStatus_t;
enum { N = 0, T = 1 };
enum { R_32F = 0, R_16BF = 14 };

namespace {

float element(const void *p, int type, long i) {
    if (type == R_32F) return static_cast<const float *>(p)[i];
    uint32_t bits = uint32_t(static_cast<const uint16_t *>(p)[i]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Round to nearest even, as the tensor cores' bf16 output does.
void store(void *p, int type, long i, float v) {
    if (type == R_32F) {
        static_cast<float *>(p)[i] = v;
        return;
    }
    uint32_t u;
    std::memcpy(&u, &v, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    static_cast<uint16_t *>(p)[i] = uint16_t(u >> 16);
}

bool known(int type) { return type == R_32F || type == R_16BF; }

struct Gemm {
    int ta, tb, m, n, k;
    float alpha;
    const void *a;
    int atype, lda;
    const void *b;
    int btype, ldb;
    float beta;
    const void *c;
    int ctype, ldc;
    void *d;
    int dtype, ldd;
    int split_k = 1;  // parts K is summed in, each apart, then added (a cuBLASLt algorithm's split-K)
};

// D[i + j ldd] = alpha Σ_l op(A)[i, l] op(B)[l, j] + beta C[i + j ldc], op(A) m x k, op(B) k x n.
int run(void *p) {
    const auto [ta, tb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c, ctype, ldc, d, dtype, ldd, split_k] = *static_cast<const Gemm *>(p);
    std::vector<float> ak(k);
    int part = (k + split_k - 1) / split_k;
    for (int i = 0; i < m; i++) {
        for (int l = 0; l < k; l++) ak[l] = element(a, atype, ta == N ? i + (long)l * lda : l + (long)i * lda);
        for (int j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int l0 = 0; l0 < k; l0 += part) {
                float sum = 0.0f;
                for (int l = l0; l < l0 + part && l < k; l++) sum += ak[l] * element(b, btype, tb == N ? l + (long)j * ldb : j + (long)l * ldb);
                acc += sum;
            }
            store(d, dtype, i + (long)j * ldd, alpha * acc + (beta == 0.0f ? 0.0f : beta * element(c, ctype, i + (long)j * ldc)));
        }
    }
    return 0;
}

cublasStatus_t gemm(const Gemm &g) {
    if (!known(g.atype) || !known(g.btype) || !known(g.ctype) || !known(g.dtype)) return 7;  // CUBLAS_STATUS_INVALID_VALUE
    if (std::getenv("KERNEL_EMU_DRY_RUN")) return 0;  // driver.cpp's dry run: host work only
    using Enqueue = int (*)(int (*)(void *), void *, void (*)(void *));
    static const Enqueue enqueue = (Enqueue)dlsym(RTLD_DEFAULT, "emu_enqueue");
    Gemm *owned = new Gemm(g);
    if (enqueue && enqueue(run, owned, [](void *p) { delete static_cast<Gemm *>(p); })) return 0;
    int r = run(owned);
    delete owned;
    return r;
}
}  // namespace

