/* cuFFT, opened at run time (cuda_cufft.c), as cuBLASLt is (cuda_lt.h):
 * libkiln links nothing of it, so a program that never runs an FFT on a
 * CUDA device never maps it. The header gives the types; calls go through
 * kc_fft. */
#ifndef KILN_CUDA_CUFFT_H
#define KILN_CUDA_CUFFT_H

#include "cuda_internal.h"

#include <cufft.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every cuFFT function kiln calls, typed by the header's declarations
 * (__typeof__), so calls are checked as direct ones would be. */
#define KC_FFT_FUNCS(X)                                                                                      \
    X(cufftGetVersion)                                                                                       \
    X(cufftCreate)                                                                                           \
    X(cufftDestroy)                                                                                          \
    X(cufftSetAutoAllocation)                                                                                \
    X(cufftMakePlanMany64)                                                                                   \
    X(cufftSetWorkArea)                                                                                      \
    X(cufftSetStream)                                                                                        \
    X(cufftExecC2C)                                                                                          \
    X(cufftExecZ2Z)                                                                                          \
    X(cufftExecR2C)                                                                                          \
    X(cufftExecD2Z)                                                                                          \
    X(cufftExecC2R)                                                                                          \
    X(cufftExecZ2D)

typedef struct {
#define KC_FFT_FIELD(f) __typeof__(f) *f;
    KC_FFT_FUNCS(KC_FFT_FIELD)
#undef KC_FFT_FIELD
} kc_fft_fns;

/* Filled by kc_fft_load; every field is set once it returned KN_OK. */
extern kc_fft_fns kc_fft;

/* Opens cuFFT once (thread-safe). KILN_CUFFT names the file to open instead;
 * otherwise libcufft.so.<CUFFT_VER_MAJOR of the headers> through the dynamic
 * linker's search, then in the toolkit's library directory recorded at build
 * time. On failure the same error, naming op, the file and the fix, is
 * returned on every call. */
kn_status kc_fft_load(const char *op);

/* "CUFFT_INVALID_SIZE" for a cufftResult. */
const char *kc_fft_result_name(cufftResult r);

/* out[i] = scale * x[i] over n contiguous reals of dt (float32 or float64),
 * on d's stream; out may be x (cuda_fft_kernels.cu). cuFFT does not
 * normalize, so inverse and orthonormal transforms end with this (and the
 * inverse real transform starts with it, on its copy of the bins). op names
 * the transform in a launch error. */
kn_status kc_fft_scale(kc_dev *d, void *out, const void *x, kn_dtype dt, int64_t n, double scale, const char *op);

#ifdef __cplusplus
}
#endif
#endif
