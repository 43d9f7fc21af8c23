/* The CPU FFT: plans (cpu_fft_plan.c), the passes that run them
 * (cpu_fft_pass.c), the op kernels (cpu_fft.c). */
#ifndef KILN_CPU_FFT_H
#define KILN_CPU_FFT_H

#include "cpu_internal.h"

typedef struct {
    double re, im;
} kn_cpx;

/* One pass of a mixed radix transform (the Stockham layout of
 * cpu_fft_pass.c): radix ip over l1 blocks of ido elements. */
typedef struct {
    int ip;
    int64_t l1, ido;
    kn_cpx *tw;    /* (ip - 1) * ido twiddles: tw[(m - 1) ido + i] = exp(-2 pi i m i l1 / n) */
    kn_cpx *roots; /* radix > 5: exp(-2 pi i q / ip), q < ip */
} kn_fft_pass;

typedef struct kn_fft_plan {
    int64_t n;
    bool real;     /* a real transform (rfft / irfft) of length n */
    int np;
    kn_fft_pass passes[64];
    bool bluestein;            /* a prime factor too large for a direct pass */
    int64_t m;                 /* Bluestein: the convolution's length (factors 2, 3, 5) */
    struct kn_fft_plan *sub;   /* Bluestein: the plan of m; real: the complex plan of n/2 (even n) or n */
    kn_cpx *chirp;             /* Bluestein: exp(-pi i j^2/n), j < n */
    kn_cpx *bf, *bi;           /* Bluestein: the DFTs of the forward and inverse kernels, over m */
    kn_cpx *rtw;               /* real, even n: exp(-2 pi i k/n), k <= n/2 */
    size_t bytes;              /* the tables' size, sub-plans included */
} kn_fft_plan;

/* The complex (real = false) or real plan of length n >= 1, cached;
 * *owned: the caller releases it. NULL when out of memory. */
const kn_fft_plan *kn__fft_plan(int64_t n, bool real, bool *owned);
void kn__fft_plan_release(const kn_fft_plan *p, bool owned);
/* Complex elements of scratch kn__fft_exec needs (complex plans). */
size_t kn__fft_scratch_len(const kn_fft_plan *p);
/* The unscaled DFT of c (sign + when inverse), complex plans: returns where
 * it is, c or scratch (whose other elements it used). Long transforms split
 * their passes between threads (when not called from a pool worker). */
kn_cpx *kn__fft_exec(const kn_fft_plan *p, kn_cpx *c, bool inverse, kn_cpx *scratch);
/* One pass (cpu_fft_pass.c) over k0 <= k < k1 of l1 and i0 <= i < i1 of
 * ido: those outputs of ch = the pass of cc (distinct). */
void kn__fft_pass(const kn_fft_pass *ps, const kn_cpx *cc, kn_cpx *ch, bool inverse, int64_t k0, int64_t k1,
                  int64_t i0, int64_t i1);

#endif
