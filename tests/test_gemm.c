/* kn__sgemm / kn__dgemm against a naive double reference: every transpose
 * combination, odd sizes, padded leading dimensions (whose padding must
 * survive), alpha/beta variants (beta = 0 over NaN), random non-zero inputs.
 * Each case runs on every kernel family this machine has ("blas" when the
 * library was built with OpenBLAS) with 1, the default and 3 threads; the
 * reference is computed once per case. Exit status 1 on any failure. */
#include "backends/cpu/gemm.h"
#include "core/internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_pass, g_fail;
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static const char *g_kinds[4];
static int g_nkinds;
static int g_threads[3], g_nthreads; /* 1, default (when > 1), 3 */

static double urand(void) { /* non-zero, in [-1, -1/64] U [1/64, 1] */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    double u = (double)(g_rng >> 11) / 9007199254740992.0;
    double v = 1.0 / 64 + u * (1 - 1.0 / 64);
    return (g_rng & 1) ? v : -v;
}

typedef struct {
    bool ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    double alpha, beta;
} gcase;

enum { ALL_THREADS, SPLIT_ONLY, DEFAULT_ONLY }; /* which thread counts run a case */

static const double SENTINEL = 12345.0;

static void *to_type(const double *x, size_t n, bool dbl) {
    void *p = malloc(n * (dbl ? 8 : 4));
    for (size_t i = 0; i < n; i++) {
        if (dbl) ((double *)p)[i] = x[i];
        else ((float *)p)[i] = (float)x[i];
    }
    return p;
}

/* Compares C (the result) with ref/bound; the ldc padding must be intact. */
static bool check(const gcase *c, bool dbl, const void *C, const double *ref, const double *bound,
                  int64_t *wi, int64_t *wj, double *worst) {
    const double eps = dbl ? DBL_EPSILON : FLT_EPSILON;
    bool ok = true;
    *worst = 0;
    for (int64_t i = 0; i < c->M; i++) {
        for (int64_t j = 0; j < c->ldc; j++) {
            size_t k = (size_t)(i * c->ldc + j);
            double got = dbl ? ((const double *)C)[k] : ((const float *)C)[k];
            if (j >= c->N) {
                if (got != SENTINEL) ok = false, *wi = i, *wj = j, *worst = INFINITY;
                continue;
            }
            double err = fabs(got - ref[k]), tol = 4.0 * (double)(c->K + 4) * eps * bound[k] + 1e-300;
            if (!(err <= tol)) ok = false;
            if (!(err / tol <= *worst)) *worst = err / tol, *wi = i, *wj = j;
        }
    }
    return ok;
}

static void run_case(const gcase *c, bool dbl, int which) {
    const int64_t arows = c->ta ? c->K : c->M, brows = c->tb ? c->N : c->K;
    const size_t na = (size_t)(arows * c->lda) + 1, nb = (size_t)(brows * c->ldb) + 1,
                 nc = (size_t)(c->M * c->ldc) + 1;
    double *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *C0 = malloc(nc * sizeof *C0);
    /* Inputs rounded to the tested type, so the reference sees the same values. */
    for (size_t i = 0; i < na; i++) A[i] = dbl ? urand() : (float)urand();
    for (size_t i = 0; i < nb; i++) B[i] = dbl ? urand() : (float)urand();
    for (size_t i = 0; i < nc; i++) C0[i] = c->beta == 0 ? NAN : dbl ? urand() : (float)urand();
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t j = c->N; j < c->ldc; j++) C0[i * c->ldc + j] = SENTINEL;

    /* Reference, from op(A) and op(B)^T as contiguous rows. */
    double *opA = malloc((size_t)(c->M * c->K + 1) * sizeof *opA);
    double *opBt = malloc((size_t)(c->N * c->K + 1) * sizeof *opBt);
    double *ref = calloc(nc, sizeof *ref), *bound = calloc(nc, sizeof *bound);
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t p = 0; p < c->K; p++)
            opA[i * c->K + p] = c->ta ? A[p * c->lda + i] : A[i * c->lda + p];
    for (int64_t j = 0; j < c->N; j++)
        for (int64_t p = 0; p < c->K; p++)
            opBt[j * c->K + p] = c->tb ? B[j * c->ldb + p] : B[p * c->ldb + j];
    for (int64_t i = 0; i < c->M; i++)
        for (int64_t j = 0; j < c->N; j++) {
            const double *a = opA + i * c->K, *b = opBt + j * c->K;
            double s = 0, mag = 0;
            for (int64_t p = 0; p < c->K; p++) {
                s += a[p] * b[p];
                mag += fabs(a[p] * b[p]);
            }
            size_t k = (size_t)(i * c->ldc + j);
            ref[k] = c->alpha * s;
            bound[k] = fabs(c->alpha) * mag;
            if (c->beta != 0) {
                ref[k] += c->beta * C0[k];
                bound[k] += fabs(c->beta * C0[k]);
            }
        }

    void *Ab = to_type(A, na, dbl), *Bb = to_type(B, nb, dbl);
    for (int f = 0; f < g_nkinds; f++) {
        kn__gemm_force(g_kinds[f]);
        for (int t = 0; t < g_nthreads; t++) {
            if (which == DEFAULT_ONLY && t != 1 % g_nthreads) continue;
            if (which == SPLIT_ONLY && g_threads[t] == 1) continue;
            kn_set_num_threads(g_threads[t]);
            void *Cb = to_type(C0, nc, dbl);
            if (dbl)
                kn__dgemm(c->ta, c->tb, c->M, c->N, c->K, c->alpha, Ab, c->lda, Bb, c->ldb,
                          c->beta, Cb, c->ldc);
            else
                kn__sgemm(c->ta, c->tb, c->M, c->N, c->K, (float)c->alpha, Ab, c->lda, Bb,
                          c->ldb, (float)c->beta, Cb, c->ldc);
            int64_t wi = 0, wj = 0;
            double worst;
            if (check(c, dbl, Cb, ref, bound, &wi, &wj, &worst)) {
                g_pass++;
            } else if (g_fail++ < 20) {
                fprintf(stderr,
                        "FAIL %s %s ta=%d tb=%d M=%lld N=%lld K=%lld ld=%lld,%lld,%lld "
                        "alpha=%g beta=%g threads=%d: worst at (%lld,%lld), err/tol %g\n",
                        g_kinds[f], dbl ? "f64" : "f32", c->ta, c->tb, (long long)c->M,
                        (long long)c->N, (long long)c->K, (long long)c->lda, (long long)c->ldb,
                        (long long)c->ldc, c->alpha, c->beta, g_threads[t], (long long)wi,
                        (long long)wj, worst);
            }
            free(Cb);
        }
    }
    free(A), free(B), free(C0), free(opA), free(opBt), free(ref), free(bound), free(Ab), free(Bb);
}

static void run(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int pad, double alpha,
                double beta, int which) {
    gcase c = {ta, tb, M, N, K, 0, 0, 0, alpha, beta};
    c.lda = (ta ? M : K) + pad;
    c.ldb = (tb ? K : N) + pad * 2;
    c.ldc = N + pad * 3;
    if (c.lda < 1) c.lda = 1;
    if (c.ldb < 1) c.ldb = 1;
    if (c.ldc < 1) c.ldc = 1;
    run_case(&c, false, which);
    run_case(&c, true, which);
}

int main(void) {
    static const char *kinds[] = {"blas", "avx512", "avx2", "generic"};
    for (int k = 0; k < 4; k++) {
        if (kn__gemm_force(kinds[k])) g_kinds[g_nkinds++] = kinds[k];
        else printf("gemm: kernel %s not available here, skipped\n", kinds[k]);
    }
    const int nt_default = kn_num_threads();
    g_threads[g_nthreads++] = 1;
    if (nt_default > 1) g_threads[g_nthreads++] = nt_default;
    g_threads[g_nthreads++] = 3;

    static const int64_t small[] = {1, 3, 17, 64, 65};
    static const double ab[][2] = {{1, 0}, {0.5, -1.25}, {-2, 1}};
    /* Block edges of every kernel (MR 4/6/12, NR 4..32, KC 256); large enough
     * to be split across threads. */
    static const int64_t mix[][3] = {{63, 129, 257}, {257, 63, 129}, {129, 257, 63},
                                     {65, 65, 300},  {257, 257, 17}, {300, 5, 70},
                                     {7, 300, 90},   {2, 500, 40},   {500, 2, 40}};
    int v = 0;
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++)
                for (int k = 0; k < 5; k++, v++)
                    run(ta, tb, small[i], small[j], small[k], v % 3 == 0 ? 0 : v % 5,
                        ab[v % 3][0], ab[v % 3][1], ALL_THREADS);
        for (int i = 0; i < 9; i++, v++)
            run(ta, tb, mix[i][0], mix[i][1], mix[i][2], v % 4, ab[v % 3][0], ab[v % 3][1],
                SPLIT_ONLY);
        /* a few outputs over a long K (dot products), vector x matrix, matrix x vector */
        run(ta, tb, 1, 1, 1000, 1, 1, 0, ALL_THREADS);
        run(ta, tb, 2, 2, 301, 2, 0.5, -1.25, ALL_THREADS);
        run(ta, tb, 1, 200, 100, 0, 1, 0, ALL_THREADS);
        run(ta, tb, 150, 1, 100, 3, -2, 1, ALL_THREADS);
        /* alpha = 0 and K = 0: C = beta * C; empty C */
        run(ta, tb, 17, 9, 5, 1, 0.0, 0.5, ALL_THREADS);
        run(ta, tb, 17, 9, 0, 1, 1.0, -2.0, ALL_THREADS);
        run(ta, tb, 17, 9, 0, 0, 1.0, 0.0, ALL_THREADS);
        run(ta, tb, 0, 9, 5, 1, 1.0, 0.0, ALL_THREADS);
        run(ta, tb, 9, 0, 5, 1, 1.0, 0.0, ALL_THREADS);
        /* the reference workload's shapes */
        run(ta, tb, 1382, 200, 12, 0, 1, 0, DEFAULT_ONLY);
        run(ta, tb, 1382, 12, 200, 0, 1, 1, DEFAULT_ONLY);
        run(ta, tb, 200, 100, 1382, 0, 1, 0, DEFAULT_ONLY);
    }
    kn__gemm_force(NULL);
    kn_set_num_threads(nt_default);
    printf("gemm: %d passed, %d failed (%d kernel families, default %s, %d threads)\n", g_pass,
           g_fail, g_nkinds, kn__gemm_kernel_name(), nt_default);
    return g_fail ? 1 : 0;
}
