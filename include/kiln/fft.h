/* kiln — complex tensors and the discrete Fourier transform (docs/FFT.md).
 *
 * A complex tensor (KN_C64, KN_C128) holds interleaved (real, imaginary)
 * pairs. It can be created, copied, moved between devices, read back, viewed
 * (reshape, transpose, slice...) and added or subtracted; other ops refuse it
 * with an error naming the op. The FFT ops run on every device: the CPU has
 * its own kernel, other devices a composite of their primitives.
 *
 * The transforms follow numpy.fft: n is the length of the transformed dim
 * (the input is cropped or padded with zeros to n; -1 keeps the input's
 * length), dim may be negative, and norm scales as numpy's norm modes. They
 * are differentiable, with PyTorch's gradients (the adjoints). */
#ifndef KILN_FFT_H
#define KILN_FFT_H

#include "kiln/core.h"
#include "kiln/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- complex tensors ---------------------------------------------------------- */
/* z [...] complex -> its pairs [..., 2] (float32 for complex64): a view. */
kn_tensor *kn_view_as_real(kn_tensor *z);
/* x [..., 2] float32/float64, pairs contiguous (last stride 1, even strides
 * and offset) -> complex [...]: a view. */
kn_tensor *kn_view_as_complex(kn_tensor *x);
/* The real part (a view; a real tensor is its own real part) and the
 * imaginary part (a view; complex only). */
kn_tensor *kn_real(kn_tensor *z);
kn_tensor *kn_imag(kn_tensor *z);
/* re + i im (broadcast; complex128 when either is float64, else complex64). */
kn_tensor *kn_complex(kn_tensor *re, kn_tensor *im);
/* The complex conjugate (a real tensor is returned as it is). */
kn_tensor *kn_conj(kn_tensor *z);
/* kn_abs (kiln/ops.h) of a complex tensor is its modulus, in its parts' dtype. */

/* ---- transforms ---------------------------------------------------------------- */
/* numpy's norm modes: which direction is scaled, by 1/n or both by 1/sqrt(n). */
typedef enum {
    KN_FFT_NORM_BACKWARD = 0, /* forward unscaled, inverse by 1/n (the default) */
    KN_FFT_NORM_ORTHO,        /* both by 1/sqrt(n): unitary */
    KN_FFT_NORM_FORWARD       /* forward by 1/n, inverse unscaled */
} kn_fft_norm;

/* X[k] = sum_j x[j] exp(-2 pi i jk/n) along dim. A real (or integer) input
 * is taken as complex (float64 gives complex128, others complex64). */
kn_tensor *kn_fft(kn_tensor *x, int64_t n, int dim, kn_fft_norm norm);
/* x[j] = 1/n sum_k X[k] exp(+2 pi i jk/n) (with norm backward). */
kn_tensor *kn_ifft(kn_tensor *x, int64_t n, int dim, kn_fft_norm norm);
/* The fft of a real input, its first n/2 + 1 outputs (the rest are their
 * conjugates). */
kn_tensor *kn_rfft(kn_tensor *x, int64_t n, int dim, kn_fft_norm norm);
/* The real inverse of rfft: x (n/2 + 1 bins along dim, cropped or padded
 * with zeros to that) -> n real values; n = -1: 2 * (bins - 1). The
 * imaginary parts of the zero bin and (n even) the Nyquist bin are ignored. */
kn_tensor *kn_irfft(kn_tensor *x, int64_t n, int dim, kn_fft_norm norm);

/* Over two dims: s[2] the lengths (NULL, or an entry -1: the input's, for
 * irfft2 the last 2 * (bins - 1)), dims[2] (NULL: {-2, -1}). rfft2 is rfft
 * over dims[1] then fft over dims[0]; irfft2 the inverse. */
kn_tensor *kn_fft2(kn_tensor *x, const int64_t *s, const int *dims, kn_fft_norm norm);
kn_tensor *kn_ifft2(kn_tensor *x, const int64_t *s, const int *dims, kn_fft_norm norm);
kn_tensor *kn_rfft2(kn_tensor *x, const int64_t *s, const int *dims, kn_fft_norm norm);
kn_tensor *kn_irfft2(kn_tensor *x, const int64_t *s, const int *dims, kn_fft_norm norm);

#ifdef __cplusplus
}
#endif
#endif
