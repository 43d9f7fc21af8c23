/* Internal to the CPU GEMM (gemm.c, gemm_x86.c): the micro-kernel and packing
 * contracts, and the template that stamps out a micro-kernel per ISA. */
#ifndef KILN_CPU_GEMM_KERNELS_H
#define KILN_CPU_GEMM_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

/* C[0..m) x [0..n) (strides rs, cs) = alpha * sum_p a[p*as + i] * b[p*bs + j]
 * + beta * C over k steps; beta == 0 never reads C. a and b hold full MR and
 * NR lanes per step (packed panels are zero padded). */
typedef void (*kn_gemm_kern)(int64_t k, const void *a, int64_t as, const void *b, int64_t bs,
                             void *c, int64_t rs, int64_t cs, double alpha, double beta, int m,
                             int n);
/* Packs rows x cols of a strided source (element (r, c) at r*rs + c*cs) into
 * panels of w rows: panel q holds rows [q*w, q*w + w) as cols groups of w
 * values, zero padded. A is packed with rows = i, B with rows = j. */
typedef void (*kn_gemm_pack)(int64_t rows, int64_t cols, const void *src, int64_t rs, int64_t cs,
                             int w, void *dst);

void kn__gemm_pack_f32(int64_t rows, int64_t cols, const void *src, int64_t rs, int64_t cs, int w,
                       void *dst);
void kn__gemm_pack_f64(int64_t rows, int64_t cols, const void *src, int64_t rs, int64_t cs, int w,
                       void *dst);
/* C(i, j) = alpha * buf[i*nr + j] + beta * C(i, j) for an edge or strided tile. */
void kn__gemm_merge_f32(const float *buf, int nr, float *c, int64_t rs, int64_t cs, float alpha,
                        float beta, int m, int n);
void kn__gemm_merge_f64(const double *buf, int nr, double *c, int64_t rs, int64_t cs, double alpha,
                        double beta, int m, int n);

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define KN_GEMM_X86 1
/* gemm_x86.c; call only when the CPU has the ISA (AVX2 + FMA, AVX-512F). */
#define KN_GEMM_KERN_DECL(name)                                                                     \
    void name(int64_t k, const void *a, int64_t as, const void *b, int64_t bs, void *c,             \
              int64_t rs, int64_t cs, double alpha, double beta, int m, int n)
/* MR x NR: float 6 x 16 (half 6 x 8), double 6 x 8 (6 x 4) */
KN_GEMM_KERN_DECL(kn__gemm_kern_s_avx2);
KN_GEMM_KERN_DECL(kn__gemm_kern_s_avx2_h);
KN_GEMM_KERN_DECL(kn__gemm_kern_d_avx2);
KN_GEMM_KERN_DECL(kn__gemm_kern_d_avx2_h);
/* float 12 x 32 (12 x 16), double 12 x 16 (12 x 8) */
KN_GEMM_KERN_DECL(kn__gemm_kern_s_avx512);
KN_GEMM_KERN_DECL(kn__gemm_kern_s_avx512_h);
KN_GEMM_KERN_DECL(kn__gemm_kern_d_avx512);
KN_GEMM_KERN_DECL(kn__gemm_kern_d_avx512_h);
void kn__gemm_pack_f32_avx2(int64_t rows, int64_t cols, const void *src, int64_t rs, int64_t cs,
                            int w, void *dst);
void kn__gemm_pack_f64_avx2(int64_t rows, int64_t cols, const void *src, int64_t rs, int64_t cs,
                            int w, void *dst);
#endif

/* ---- the micro-kernel template ---------------------------------------------------
 * KN_KERNEL(ATTR, name, V, MR, W, ROWS, MERGE) defines name() for the vector
 * set V: macros V_T (element), V_V (vector), V_L (lanes), V_ZERO(),
 * V_LOAD(p), V_STORE(p, v), V_BCAST(p), V_SET1(x), V_FMA(x, y, z) = x*y + z,
 * V_MUL, and V_HAS_MASK with V_MASK, V_MASK_MAKE(n) (first n lanes),
 * V_MLOAD, V_MSTORE. Row r keeps W (1 or 2) vectors c<r>a, c<r>b in
 * registers, so NR = W * V_L; W = 1 is the "half" kernel for narrow tail
 * panels. The loop always runs the full tile; the store writes m x n: with
 * masks when cs == 1, else through a buffer and MERGE. */
#if defined(__GNUC__)
#define KN_PREFETCH(p) __builtin_prefetch(p)
#else
#define KN_PREFETCH(p) ((void)0)
#endif
#define KN_ROWS6(X, V) X(0, V) X(1, V) X(2, V) X(3, V) X(4, V) X(5, V)
#define KN_ROWS12(X, V) KN_ROWS6(X, V) X(6, V) X(7, V) X(8, V) X(9, V) X(10, V) X(11, V)

#define KN_ACC_DECL(r, V) V##_V c##r##a = V##_ZERO(), c##r##b = V##_ZERO();
#define KN_ACC_FMA(r, V)                                                                            \
    {                                                                                               \
        V##_V t_ = V##_BCAST(a + (r));                                                              \
        c##r##a = V##_FMA(t_, b0, c##r##a);                                                         \
        if (KW == 2) c##r##b = V##_FMA(t_, b1, c##r##b);                                            \
    }
/* Row r of a tile into C (cs == 1): whole vectors, or masked for n < NR. */
#define KN_ACC_ST(r, V)                                                                             \
    if ((r) < m) {                                                                                  \
        kn_elem *cr = c + (r)*rs;                                                                   \
        V##_V x = V##_MUL(va, c##r##a), y = V##_MUL(va, c##r##b);                                   \
        if (full) {                                                                                 \
            if (beta != 0) x = V##_FMA(vb, V##_LOAD(cr), x);                                        \
            V##_STORE(cr, x);                                                                       \
            if (KW == 2) {                                                                          \
                if (beta != 0) y = V##_FMA(vb, V##_LOAD(cr + V##_L), y);                            \
                V##_STORE(cr + V##_L, y);                                                           \
            }                                                                                       \
        } else {                                                                                    \
            if (beta != 0) x = V##_FMA(vb, V##_MLOAD(cr, ma), x);                                   \
            V##_MSTORE(cr, ma, x);                                                                  \
            if (KW == 2 && n > V##_L) {                                                             \
                if (beta != 0) y = V##_FMA(vb, V##_MLOAD(cr + V##_L, mb), y);                       \
                V##_MSTORE(cr + V##_L, mb, y);                                                      \
            }                                                                                       \
        }                                                                                           \
    }
#define KN_ACC_BUF(r, V)                                                                            \
    V##_STORE(buf + (r)*KW * V##_L, c##r##a);                                                       \
    if (KW == 2) V##_STORE(buf + (r)*KW * V##_L + V##_L, c##r##b);
#define KN_ACC_PF(r, V)                                                                             \
    if ((r) < m) {                                                                                  \
        KN_PREFETCH(c + (r)*rs);                                                                    \
        KN_PREFETCH(c + (r)*rs + KW * V##_L - 1);                                                   \
    }
#define KN_STEP(ROWS, V)                                                                            \
    {                                                                                               \
        V##_V b0 = V##_LOAD(b), b1 = KW == 2 ? V##_LOAD(b + V##_L) : V##_ZERO();                    \
        ROWS(KN_ACC_FMA, V)                                                                         \
        a += as;                                                                                    \
        b += bs;                                                                                    \
    }
#define KN_KERNEL(ATTR, name, V, MR, W, ROWS, MERGE)                                                \
    ATTR void name(int64_t k, const void *av, int64_t as, const void *bv, int64_t bs, void *cv,     \
                   int64_t rs, int64_t cs, double alpha, double beta, int m, int n) {               \
        enum { KW = W };                                                                            \
        typedef V##_T kn_elem;                                                                      \
        const kn_elem *a = av, *b = bv;                                                             \
        kn_elem *c = cv;                                                                            \
        ROWS(KN_ACC_DECL, V)                                                                        \
        if (cs == 1) { ROWS(KN_ACC_PF, V) }                                                         \
        int64_t p = 0;                                                                              \
        for (; p + 4 <= k; p += 4) {                                                                \
            KN_STEP(ROWS, V) KN_STEP(ROWS, V) KN_STEP(ROWS, V) KN_STEP(ROWS, V)                     \
        }                                                                                           \
        for (; p < k; p++) KN_STEP(ROWS, V)                                                         \
        const bool full = n == KW * V##_L;                                                          \
        if (cs == 1 && (full || V##_HAS_MASK)) {                                                    \
            const V##_V va = V##_SET1((kn_elem)alpha), vb = V##_SET1((kn_elem)beta);                \
            const V##_MASK ma = V##_MASK_MAKE(n), mb = V##_MASK_MAKE(n - V##_L);                    \
            (void)ma, (void)mb;                                                                     \
            ROWS(KN_ACC_ST, V)                                                                      \
        } else {                                                                                    \
            _Alignas(64) kn_elem buf[(MR)*KW * V##_L];                                              \
            ROWS(KN_ACC_BUF, V)                                                                     \
            MERGE(buf, KW * V##_L, c, rs, cs, (kn_elem)alpha, (kn_elem)beta, m, n);                 \
        }                                                                                           \
    }

#endif
