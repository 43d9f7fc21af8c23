/* The CPU FFT (cpu_fft_plan.c plans, cpu_fft.c the op's kernel). */
#ifndef KILN_CPU_FFT_H
#define KILN_CPU_FFT_H

#include "cpu_internal.h"

typedef struct {
    double re, im;
} kn_cpx;

typedef struct kn_fft_plan {
    int64_t n;
    int nf;
    int factors[64];     /* radices, in the order the passes split n */
    kn_cpx *tw;          /* exp(-2 pi i j/n), j < n (mixed radix) */
    bool bluestein;      /* a prime factor too large for a direct pass */
    int64_t m;           /* Bluestein: the convolution's power-of-two length */
    struct kn_fft_plan *sub; /* its plan */
    kn_cpx *chirp;       /* exp(-pi i j^2/n), j < n */
    kn_cpx *bf, *bi;     /* the DFTs of the forward and the inverse chirp kernels */
} kn_fft_plan;

/* The plan of length n >= 1 (cached; *owned: the caller releases it). NULL
 * when out of memory. */
const kn_fft_plan *kn__fft_plan(int64_t n, bool *owned);
void kn__fft_plan_release(const kn_fft_plan *p, bool owned);
/* Complex elements of scratch kn__fft_exec needs. */
size_t kn__fft_scratch_len(const kn_fft_plan *p);
/* out = the unscaled DFT of in (sign + when inverse); in and out distinct. */
void kn__fft_exec(const kn_fft_plan *p, const kn_cpx *in, kn_cpx *out, bool inverse, kn_cpx *scratch);

#endif
