/* Dense matrix multiply for the CPU backend: OpenBLAS when the build found it
 * (KILN_HAVE_CBLAS), else a built-in packed, cache-blocked, multithreaded
 * kernel with AVX-512 / AVX2+FMA micro-kernels picked at run time on x86. */
#ifndef KILN_CPU_GEMM_H
#define KILN_CPU_GEMM_H

#include <stdbool.h>
#include <stdint.h>

/* C = alpha * op(A) @ op(B) + beta * C, row-major. op(A) is M x K: A is M x K
 * (lda >= K) or, when ta, K x M (lda >= M). op(B) is K x N likewise. ldc >= N.
 * beta == 0 overwrites C without reading it (NaN garbage is fine). K == 0 or
 * alpha == 0 gives C = beta * C without reading A or B. */
void kn__sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
               int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void kn__dgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
               int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

/* Tests and benchmarks: forces the built-in kernel family ("avx512", "avx2",
 * "generic"; "blas" = OpenBLAS when built with it), or NULL for the default.
 * Returns false (changing nothing) when it is not available here. Not thread
 * safe with concurrent GEMMs. */
bool kn__gemm_force(const char *name);
/* The family kn__sgemm uses now ("blas", "avx512", "avx2", "generic"). */
const char *kn__gemm_kernel_name(void);

#endif
