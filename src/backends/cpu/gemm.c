/* GEMM for the CPU backend (see gemm.h).
 *
 * Built-in path, GotoBLAS/BLIS style on row-major C: op(B) is packed into
 * KC x NR micro-panels, op(A) into MR x KC micro-panels, and a register-tiled
 * MR x NR micro-kernel (vectors along N, A broadcast) accumulates over KC.
 * Loops: jc (NC, B block in L3) > pc (KC) > ic (MC, A block in L2) > jr (B
 * micro-panel in L1) > ir. Transposes are only strides, handled by packing.
 * Threads split C into a grid of tasks, each a full serial GEMM with its own
 * packing buffers: no barriers, and redundant packing is O(1/M) of the work.
 * Kernels: AVX-512 and AVX2+FMA (gemm_x86.c, picked at run time so binaries
 * stay portable), else a 6 x (2 vectors) kernel in GCC vector extensions,
 * else plain C. */
#include "backends/cpu/gemm.h"
#include "backends/cpu/gemm_kernels.h"
#include "core/backend.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#if defined(KILN_HAVE_CBLAS)
#include <cblas.h>
#endif

typedef struct gemm_prob gemm_prob;
typedef struct {
    const char *name;
    int esz, mr, nr;
    int64_t mc, kc, nc;
    kn_gemm_kern kern, kern_half; /* kern_half: NR / 2 wide, or NULL */
    kn_gemm_pack pack;
    void (*naive)(const gemm_prob *p, int64_t i0, int64_t i1, int64_t j0, int64_t j1);
} gemm_cfg;

/* op(A)(i, p) = A[i*rsa + p*csa], op(B)(p, j) = B[p*rsb + j*csb], C(i, j) = C[i*rsc + j*csc]. */
struct gemm_prob {
    const gemm_cfg *g;
    int64_t M, N, K;
    double alpha, beta;
    const char *A, *B;
    char *C;
    int64_t rsa, csa, rsb, csb, rsc, csc;
    int tm, tn; /* task grid */
};

static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---- typed helpers: packing, edge stores, naive loops, beta scaling -------------- */

#define KN_DEF_HELPERS(T, sfx)                                                                   \
    void kn__gemm_pack_##sfx(int64_t rows, int64_t cols, const void *src, int64_t rs,            \
                             int64_t cs, int w, void *dst) {                                                   \
        const T *s = src;                                                                        \
        T *d = dst;                                                                              \
        for (int64_t r0 = 0; r0 < rows; r0 += w, d += cols * w) {                                \
            int wr = (int)imin(w, rows - r0);                                                    \
            const T *sp = s + r0 * rs;                                                           \
            if (rs == 1) {                                                                       \
                for (int64_t c = 0; c < cols; c++) {                                             \
                    const T *col = sp + c * cs;                                                  \
                    T *o = d + c * w;                                                            \
                    int r = 0;                                                                   \
                    for (; r < wr; r++) o[r] = col[r];                                           \
                    for (; r < w; r++) o[r] = 0;                                                 \
                }                                                                                \
            } else {                                                                             \
                for (int r = 0; r < wr; r++) {                                                   \
                    const T *row = sp + r * rs;                                                  \
                    for (int64_t c = 0; c < cols; c++) d[c * w + r] = row[c * cs];               \
                }                                                                                \
                for (int r = wr; r < w; r++)                                                     \
                    for (int64_t c = 0; c < cols; c++) d[c * w + r] = 0;                         \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    void kn__gemm_merge_##sfx(const T *buf, int nr, T *c, int64_t rs, int64_t cs, T alpha,        \
                              T beta, int m, int n) {                                              \
        if (rs == 1 && cs != 1) { /* C^T problem: columns of the tile are contiguous */          \
            for (int j = 0; j < n; j++)                                                          \
                for (int i = 0; i < m; i++) {                                                    \
                    T *o = c + j * cs + i;                                                       \
                    *o = beta == 0 ? alpha * buf[i * nr + j] : alpha * buf[i * nr + j] + beta * *o; \
                }                                                                                \
            return;                                                                              \
        }                                                                                        \
        for (int i = 0; i < m; i++)                                                              \
            for (int j = 0; j < n; j++) {                                                        \
                T *o = c + i * rs + j * cs;                                                      \
                *o = beta == 0 ? alpha * buf[i * nr + j] : alpha * buf[i * nr + j] + beta * *o;  \
            }                                                                                    \
    }                                                                                            \
    /* Unpacked loops for tiny problems and as the out-of-memory fallback. */                  \
    static void naive_##sfx(const gemm_prob *P, int64_t i0, int64_t i1, int64_t j0, int64_t j1) { \
        const T *A = (const T *)P->A, *B = (const T *)P->B;                                      \
        T *C = (T *)P->C;                                                                        \
        const T alpha = (T)P->alpha, beta = (T)P->beta;                                          \
        for (int64_t i = i0; i < i1; i++) {                                                      \
            const T *a = A + i * P->rsa;                                                         \
            T *c = C + i * P->rsc;                                                               \
            if (j1 - j0 <= 4) { /* dot products */                                               \
                for (int64_t j = j0; j < j1; j++) {                                              \
                    const T *b = B + j * P->csb;                                                 \
                    T s0 = 0, s1 = 0, s2 = 0, s3 = 0; /* four chains hide FMA latency */         \
                    int64_t p = 0;                                                               \
                    for (; p + 4 <= P->K; p += 4) {                                              \
                        s0 += a[p * P->csa] * b[p * P->rsb];                                     \
                        s1 += a[(p + 1) * P->csa] * b[(p + 1) * P->rsb];                         \
                        s2 += a[(p + 2) * P->csa] * b[(p + 2) * P->rsb];                         \
                        s3 += a[(p + 3) * P->csa] * b[(p + 3) * P->rsb];                         \
                    }                                                                            \
                    for (; p < P->K; p++) s0 += a[p * P->csa] * b[p * P->rsb];                   \
                    const T s = (s0 + s1) + (s2 + s3);                                           \
                    T *o = c + j * P->csc;                                                       \
                    *o = beta == 0 ? alpha * s : alpha * s + beta * *o;                          \
                }                                                                                \
                continue;                                                                        \
            }                                                                                    \
            for (int64_t j = j0; j < j1; j++) /* rows of axpys */                                \
                c[j * P->csc] = beta == 0 ? 0 : beta * c[j * P->csc];                            \
            for (int64_t p = 0; p < P->K; p++) {                                                 \
                const T s = alpha * a[p * P->csa];                                               \
                const T *b = B + p * P->rsb;                                                     \
                if (P->csb == 1 && P->csc == 1) {                                                \
                    T *restrict cc = c;                                                          \
                    const T *restrict bb = b;                                                    \
                    for (int64_t j = j0; j < j1; j++) cc[j] += s * bb[j];                        \
                } else {                                                                         \
                    for (int64_t j = j0; j < j1; j++) c[j * P->csc] += s * b[j * P->csb];        \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* C = beta * C; beta == 0 overwrites (C may hold NaN). */                                   \
    static void scale_##sfx(int64_t M, int64_t N, T beta, T *C, int64_t ldc) {                    \
        if (beta == 1) return;                                                                   \
        for (int64_t i = 0; i < M; i++)                                                          \
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j]; \
    }

KN_DEF_HELPERS(float, f32)
KN_DEF_HELPERS(double, f64)

/* ---- portable micro-kernel ----------------------------------------------------------
 * (-DKN_GEMM_PLAIN_C tests the plain-C kernel with GCC or clang.) */
#if defined(__GNUC__) && !defined(KN_GEMM_PLAIN_C)
/* 16-byte GCC vectors (SSE2, NEON): 6 x 8 floats, 6 x 4 doubles. */
typedef float kn_v4f __attribute__((vector_size(16)));
typedef double kn_v2d __attribute__((vector_size(16)));
static inline kn_v4f vload_s(const float *p) {
    kn_v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vstore_s(float *p, kn_v4f v) { memcpy(p, &v, sizeof v); }
static inline kn_v2d vload_d(const double *p) {
    kn_v2d v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vstore_d(double *p, kn_v2d v) { memcpy(p, &v, sizeof v); }
#define GS_T float
#define GS_V kn_v4f
#define GS_L 4
#define GS_LOAD(p) vload_s(p)
#define GS_STORE(p, v) vstore_s((p), (v))
#define GD_T double
#define GD_V kn_v2d
#define GD_L 2
#define GD_LOAD(p) vload_d(p)
#define GD_STORE(p, v) vstore_d((p), (v))
#define GS_ZERO() ((GS_V){0})
#define GS_BCAST(p) (GS_ZERO() + *(p))
#define GS_SET1(x) (GS_ZERO() + (x))
#define GD_ZERO() ((GD_V){0})
#define GD_BCAST(p) (GD_ZERO() + *(p))
#define GD_SET1(x) (GD_ZERO() + (x))
#define GS_FMA(x, y, z) ((x) * (y) + (z))
#define GD_FMA(x, y, z) ((x) * (y) + (z))
#define GS_MUL(x, y) ((x) * (y))
#define GD_MUL(x, y) ((x) * (y))
#define GS_HAS_MASK 0 /* partial tiles go through the buffer */
#define GD_HAS_MASK 0
#define GS_MASK int
#define GD_MASK int
#define GS_MASK_MAKE(n) 0
#define GD_MASK_MAKE(n) 0
#define GS_MLOAD(p, k) GS_LOAD(p)
#define GD_MLOAD(p, k) GD_LOAD(p)
#define GS_MSTORE(p, k, v) GS_STORE((p), (v))
#define GD_MSTORE(p, k, v) GD_STORE((p), (v))
static KN_KERNEL(, kern_s_gen, GS, 6, 2, KN_ROWS6, kn__gemm_merge_f32)
static KN_KERNEL(, kern_d_gen, GD, 6, 2, KN_ROWS6, kn__gemm_merge_f64)
#define KN_GEN_MR 6
#define KN_GEN_NR_S 8
#define KN_GEN_NR_D 4
#else
/* Plain C: a 4 x 4 tile the compiler keeps in registers. */
#define KN_DEF_SCALAR_KERNEL(name, T, MERGE)                                                     \
    static void name(int64_t k, const void *av, int64_t as, const void *bv, int64_t bs,         \
                     void *cv, int64_t rs, int64_t cs, double alpha, double beta, int m, int n) { \
        const T *a = av, *b = bv;                                                                \
        T acc[16] = {0};                                                                         \
        for (int64_t p = 0; p < k; p++, a += as, b += bs)                                        \
            for (int i = 0; i < 4; i++)                                                          \
                for (int j = 0; j < 4; j++) acc[i * 4 + j] += a[i] * b[j];                       \
        MERGE(acc, 4, (T *)cv, rs, cs, (T)alpha, (T)beta, m, n);                                 \
    }
KN_DEF_SCALAR_KERNEL(kern_s_gen, float, kn__gemm_merge_f32)
KN_DEF_SCALAR_KERNEL(kern_d_gen, double, kn__gemm_merge_f64)
#define KN_GEN_MR 4
#define KN_GEN_NR_S 4
#define KN_GEN_NR_D 4
#endif

/* ---- configurations ------------------------------------------------------------------
 * MC x KC of A stays in L2, KC x NR of B in L1, KC x NC of B in L3. */
static const gemm_cfg cfg_s_gen = {"generic", 4, KN_GEN_MR, KN_GEN_NR_S, 120, 256, 4096,
                                   kern_s_gen, NULL, kn__gemm_pack_f32, naive_f32};
static const gemm_cfg cfg_d_gen = {"generic", 8, KN_GEN_MR, KN_GEN_NR_D, 120, 256, 4096,
                                   kern_d_gen, NULL, kn__gemm_pack_f64, naive_f64};
#if defined(KN_GEMM_X86)
static const gemm_cfg cfg_s_avx2 = {"avx2", 4, 6, 16, 144, 256, 4096, kn__gemm_kern_s_avx2,
                                    kn__gemm_kern_s_avx2_h, kn__gemm_pack_f32_avx2, naive_f32};
static const gemm_cfg cfg_d_avx2 = {"avx2", 8, 6, 8, 72, 256, 4096, kn__gemm_kern_d_avx2,
                                    kn__gemm_kern_d_avx2_h, kn__gemm_pack_f64_avx2, naive_f64};
static const gemm_cfg cfg_s_avx512 = {"avx512", 4, 12, 32, 144, 256, 4096, kn__gemm_kern_s_avx512,
                                      kn__gemm_kern_s_avx512_h, kn__gemm_pack_f32_avx2, naive_f32};
static const gemm_cfg cfg_d_avx512 = {"avx512", 8, 12, 16, 72, 256, 4096, kn__gemm_kern_d_avx512,
                                      kn__gemm_kern_d_avx512_h, kn__gemm_pack_f64_avx2, naive_f64};

static bool has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static bool has_avx512(void) { return has_avx2() && __builtin_cpu_supports("avx512f"); }
#endif

enum { FORCE_NONE = 0, FORCE_BLAS, FORCE_AVX512, FORCE_AVX2, FORCE_GENERIC };
static int g_force = FORCE_NONE;

static const gemm_cfg *pick(bool dbl) {
#if defined(KN_GEMM_X86)
    if (g_force != FORCE_GENERIC) {
        if (g_force != FORCE_AVX2 && has_avx512()) return dbl ? &cfg_d_avx512 : &cfg_s_avx512;
        if (has_avx2()) return dbl ? &cfg_d_avx2 : &cfg_s_avx2;
    }
#endif
    return dbl ? &cfg_d_gen : &cfg_s_gen;
}

bool kn__gemm_force(const char *name) {
    int f = FORCE_NONE;
    if (!name) {
        f = FORCE_NONE;
    } else if (strcmp(name, "blas") == 0) {
#if defined(KILN_HAVE_CBLAS)
        f = FORCE_BLAS;
#else
        return false;
#endif
    } else if (strcmp(name, "generic") == 0) {
        f = FORCE_GENERIC;
#if defined(KN_GEMM_X86)
    } else if (strcmp(name, "avx2") == 0 && has_avx2()) {
        f = FORCE_AVX2;
    } else if (strcmp(name, "avx512") == 0 && has_avx512()) {
        f = FORCE_AVX512;
#endif
    } else {
        return false;
    }
    g_force = f;
    return true;
}

/* KILN_GEMM=blas|avx512|avx2|generic picks the kernel family at run time
 * (read once; an unknown or unavailable name keeps the default). */
static void env_once(void) {
    const char *e = getenv("KILN_GEMM");
    if (e && *e) kn__gemm_force(e);
}

static bool use_blas(void) {
    static once_flag once = ONCE_FLAG_INIT;
    call_once(&once, env_once);
#if defined(KILN_HAVE_CBLAS)
    return g_force == FORCE_NONE || g_force == FORCE_BLAS;
#else
    return false;
#endif
}

const char *kn__gemm_kernel_name(void) { return use_blas() ? "blas" : pick(false)->name; }

/* ---- driver --------------------------------------------------------------------- */

/* Splits total into equal blocks of at most maxb, rounded up to unit. */
static int64_t block_step(int64_t total, int64_t maxb, int64_t unit) {
    int64_t nb = cdiv(total, maxb);
    return cdiv(cdiv(total, nb), unit) * unit;
}

/* The serial blocked GEMM on C rows [i0, i1) x columns [j0, j1). An operand
 * that meets at most two micro-tiles of the other is read in place when its
 * k-steps are contiguous (B rows, A^T rows): packing it would cost more than
 * it saves. Partial panels are always packed (zero padding). */
static void gemm_block(const gemm_prob *P, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const gemm_cfg *g = P->g;
    const int64_t esz = g->esz, mr = g->mr, nr = g->nr;
    const int64_t m = i1 - i0, n = j1 - j0, K = P->K;
    const bool direct_b = P->csb == 1 && cdiv(m, mr) <= 2;
    const bool direct_a = P->rsa == 1 && cdiv(n, nr) <= 2;
    const int64_t mcs = block_step(m, g->mc, mr), kcs = block_step(K, g->kc, 1),
                  ncs = block_step(n, g->nc, nr);
    const size_t asz = (size_t)((direct_a ? mr : mcs) * kcs * esz),
                 bsz = (size_t)((direct_b ? nr : ncs) * kcs * esz);
    char *bufA = aligned_alloc(64, (asz + 63) & ~(size_t)63);
    char *bufB = aligned_alloc(64, (bsz + 63) & ~(size_t)63);
    if (!bufA || !bufB) { /* keep going, slowly, rather than fail */
        free(bufA);
        free(bufB);
        g->naive(P, i0, i1, j0, j1);
        return;
    }
    for (int64_t jc = j0; jc < j1; jc += ncs) {
        const int64_t nc = imin(ncs, j1 - jc), ntail = nc % nr;
        for (int64_t pc = 0; pc < K; pc += kcs) {
            const int64_t kc = imin(kcs, K - pc);
            const double beta = pc == 0 ? P->beta : 1.0;
            const char *Bb = P->B + (pc * P->rsb + jc * P->csb) * esz;
            /* B^T viewed as rows of length kc: panels of nr columns. */
            if (!direct_b)
                g->pack(nc, kc, Bb, P->csb, P->rsb, (int)nr, bufB);
            else if (ntail)
                g->pack(ntail, kc, Bb + (nc - ntail) * esz, 1, P->rsb, (int)nr, bufB);
            for (int64_t ic = i0; ic < i1; ic += mcs) {
                const int64_t mc = imin(mcs, i1 - ic), mtail = mc % mr;
                const char *Ab = P->A + (ic * P->rsa + pc * P->csa) * esz;
                if (!direct_a)
                    g->pack(mc, kc, Ab, P->rsa, P->csa, (int)mr, bufA);
                else if (mtail)
                    g->pack(mtail, kc, Ab + (mc - mtail) * esz, 1, P->csa, (int)mr, bufA);
                for (int64_t jr = 0; jr < nc; jr += nr) {
                    const int nn = (int)imin(nr, nc - jr);
                    const char *bp = !direct_b ? bufB + jr * kc * esz
                                     : nn == nr ? Bb + jr * esz : bufB;
                    const int64_t bs = direct_b && nn == nr ? P->rsb : nr;
                    kn_gemm_kern kern = nn <= nr / 2 && g->kern_half ? g->kern_half : g->kern;
                    for (int64_t ir = 0; ir < mc; ir += mr) {
                        const int mm = (int)imin(mr, mc - ir);
                        const char *ap = !direct_a ? bufA + ir * kc * esz
                                         : mm == mr ? Ab + ir * esz : bufA;
                        const int64_t as = direct_a && mm == mr ? P->csa : mr;
                        char *c = P->C + ((ic + ir) * P->rsc + (jc + jr) * P->csc) * esz;
                        kern(kc, ap, as, bp, bs, c, P->rsc, P->csc, P->alpha, beta, mm, nn);
                    }
                }
            }
        }
    }
    free(bufA);
    free(bufB);
}

static void gemm_tasks(int64_t t0, int64_t t1, void *ctx) {
    const gemm_prob *P = ctx;
    const int64_t mr = P->g->mr, nr = P->g->nr;
    const int64_t mb = cdiv(P->M, mr), nb = cdiv(P->N, nr);
    for (int64_t t = t0; t < t1; t++) {
        int64_t ti = t / P->tn, tj = t % P->tn;
        int64_t i0 = imin(P->M, ti * mb / P->tm * mr), i1 = imin(P->M, (ti + 1) * mb / P->tm * mr);
        int64_t j0 = imin(P->N, tj * nb / P->tn * nr), j1 = imin(P->N, (tj + 1) * nb / P->tn * nr);
        if (i0 < i1 && j0 < j1) gemm_block(P, i0, i1, j0, j1);
    }
}

/* A task should be worth a few microseconds, well above a region's cost. */
#define KN_GEMM_TASK_FLOPS 400000.0
/* Below this M*N*K (or for a C of a few elements, dot products) packing
 * costs more than it saves. */
#define KN_GEMM_TINY 512.0

/* Picks a tm x tn task grid (tm * tn <= threads) minimising the largest
 * task's tile area plus its packing, in units of micro-tiles. */
static void plan_tasks(gemm_prob *P) {
    const gemm_cfg *g = P->g;
    P->tm = P->tn = 1;
    double by_work = 2.0 * (double)P->M * (double)P->N * (double)P->K / KN_GEMM_TASK_FLOPS;
    int nt = kn_num_threads();
    if (by_work < nt) nt = (int)by_work;
    if (nt <= 1) return;
    const int64_t mb = cdiv(P->M, g->mr), nb = cdiv(P->N, g->nr);
    double best = 0;
    for (int a = 1; a <= nt && a <= mb; a++) {
        int b = (int)imin(nt / a, nb);
        double rows = (double)cdiv(mb, a) * g->mr, cols = (double)cdiv(nb, b) * g->nr;
        double cost = rows * cols + 8.0 * (rows + cols);
        if (a == 1 || cost <= best) {
            best = cost;
            P->tm = a;
            P->tn = b;
        }
    }
}

/* Vector FMAs per k step for M x N (a half-width tail panel costs half). */
static double fma_cost(const gemm_cfg *g, int64_t M, int64_t N) {
    int64_t rem = N % g->nr;
    double vecs = 2.0 * (double)(N / g->nr) + (rem == 0 ? 0 : rem <= g->nr / 2 && g->kern_half ? 1 : 2);
    return (double)(cdiv(M, g->mr) * g->mr) * vecs;
}

static void gemm_run(const gemm_cfg *g, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                     double alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
                     double beta, void *C, int64_t ldc) {
    gemm_prob P = {g, M, N, K, alpha, beta, A, B, C,
                   ta ? 1 : lda, ta ? lda : 1, tb ? 1 : ldb, tb ? ldb : 1, ldc, 1, 1, 1};
    if ((double)M * (double)N * (double)K <= KN_GEMM_TINY || M * N <= 4) {
        g->naive(&P, 0, M, 0, N);
        return;
    }
    /* A narrow C (N well under NR) wastes most of each tile: computing
     * C^T = op(B)^T op(A)^T instead only swaps strides, but C^T's tiles are
     * stored element by element. */
    if (fma_cost(g, N, M) * (double)K + 8.0 * (double)M * (double)N < /* scalar stores */
        0.9 * fma_cost(g, M, N) * (double)K) {
        gemm_prob T = {g, N, M, K, alpha, beta, B, A, C,
                       P.csb, P.rsb, P.csa, P.rsa, 1, ldc, 1, 1};
        P = T;
    }
    plan_tasks(&P);
    if (P.tm * P.tn == 1)
        gemm_block(&P, 0, P.M, 0, P.N);
    else
        kn__parallel_for(P.tm * P.tn, 1, gemm_tasks, &P);
}

#if defined(KILN_HAVE_CBLAS)
static bool blas_fits(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
    return M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
           ldc <= INT_MAX;
}
/* BLAS rejects ld < columns even for a one-row matrix, where ld is unused. */
static int64_t blas_ld(int64_t ld, int64_t rows, int64_t cols) {
    return rows <= 1 && ld < cols ? cols : ld;
}
#endif

void kn__sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
               int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0) {
        scale_f32(M, N, beta, C, ldc);
        return;
    }
#if defined(KILN_HAVE_CBLAS)
    if (use_blas() && blas_fits(M, N, K, lda, ldb, ldc)) {
        kn_num_threads(); /* first use: sets OpenBLAS's thread count (KILN_THREADS) */
        lda = ta ? blas_ld(lda, K, M) : blas_ld(lda, M, K);
        ldb = tb ? blas_ld(ldb, N, K) : blas_ld(ldb, K, N);
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C,
                    (int)blas_ld(ldc, M, N));
        return;
    }
#endif
    gemm_run(pick(false), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void kn__dgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
               int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0) {
        scale_f64(M, N, beta, C, ldc);
        return;
    }
#if defined(KILN_HAVE_CBLAS)
    if (use_blas() && blas_fits(M, N, K, lda, ldb, ldc)) {
        kn_num_threads(); /* first use: sets OpenBLAS's thread count (KILN_THREADS) */
        lda = ta ? blas_ld(lda, K, M) : blas_ld(lda, M, K);
        ldb = tb ? blas_ld(ldb, N, K) : blas_ld(ldb, K, N);
        cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C,
                    (int)blas_ld(ldc, M, N));
        return;
    }
#endif
    gemm_run(pick(true), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
