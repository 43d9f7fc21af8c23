/* The FFT's composite (see composite.c for the rules): the DFT along dim as
 * one MATMUL on the real pairs. The lines are moved last and flattened to
 * [R, 2n] rows of interleaved (re, im); y = x @ M with M [2n, 2n] built on
 * the host in double and uploaded in the dtype, so every device computes it
 * with its GEMM, accumulating in the dtype. O(n^2) work and 4 n^2 elements
 * of matrix: what a device without an FFT kernel of its own gets. */
#include "composite.h"
#include "kiln/fft.h"

#include <math.h>
#include <stdlib.h>

/* M[2j + a][2k + b]: how part a of x_j enters part b of y_k, for y_k = scale
 * sum_j x_j w^(jk), w = exp(sign 2 pi i/n) = c + i s:
 * re += c xr - s xi, im += s xr + c xi. */
static kn_tensor *dft_matrix(kn__cx *cx, int64_t n, bool inverse, double scale, kn_dtype dt) {
    int64_t m = 2 * n;
    if (n > (int64_t)1 << 15)
        return kn__err(KN_ERR_UNSUPPORTED, "fft: length %lld is too long for the composite of primitives "
                       "(a %lld x %lld matrix); run it on the CPU", (long long)n, (long long)m, (long long)m), NULL;
    double *M = malloc((size_t)(m * m) * sizeof *M);
    if (!M) return kn__err(KN_ERR_OOM, "fft: out of memory for a %lld x %lld DFT matrix", (long long)m, (long long)m), NULL;
    const double two_pi = 6.28318530717958647692528676655900577;
    for (int64_t j = 0; j < n; j++)
        for (int64_t k = 0; k < n; k++) {
            int64_t q = j * k % n; /* n <= 2^15: exact */
            double ang = (inverse ? 1 : -1) * two_pi * (double)q / (double)n;
            double c = cos(ang) * scale, s = sin(ang) * scale;
            M[(2 * j) * m + 2 * k] = c;
            M[(2 * j) * m + 2 * k + 1] = s;
            M[(2 * j + 1) * m + 2 * k] = -s;
            M[(2 * j + 1) * m + 2 * k + 1] = c;
        }
    kn_tensor *t = kn_cast(kn_from_data(M, KN_F64, KN_SHAPE(m, m), KN_CPU), dt);
    free(M);
    return kn_to(t, cx->dev);
}

kn_status kn__composite_fft(kn_device dev, kn_fft_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int nd = a->x.ndim, dim = (int)a->dim;
    int64_t n = a->x.shape[dim];
    if (kn_operand_numel(&a->x) == 0) return kn__cx_end(&cx, KN_OK);
    /* [..., n, ..., 2] -> [..., ..., n, 2] -> [R, 2n] */
    kn_tensor *x = kn__cx_wrap(&cx, &a->x);
    int perm[KN_MAX_DIMS], k = 0;
    for (int d = 0; d < nd - 1; d++)
        if (d != dim) perm[k++] = d;
    perm[k++] = dim;
    perm[k++] = nd - 1;
    kn_tensor *xt = kn_contiguous(kn_permute(x, nd, perm));
    kn_tensor *rows = xt ? kn_reshape(xt, KN_SHAPE(-1, 2 * n)) : NULL;
    kn_tensor *M = rows ? dft_matrix(&cx, n, a->inverse != 0, a->scale, a->x.dtype) : NULL;
    kn_tensor *y = M ? kn_reshape(kn_matmul(rows, M), nd, xt->shape) : NULL;
    int inv[KN_MAX_DIMS];
    for (int d = 0; d < nd; d++) inv[perm[d]] = d;
    return kn__cx_end(&cx, kn__cx_put(&cx, &a->out, y ? kn_permute(y, nd, inv) : NULL));
}

/* RFFT: the FFT op (this device's kernel, or the composite above) of x
 * taken as complex, its first n/2 + 1 bins scaled. */
kn_status kn__composite_rfft(kn_device dev, kn_rfft_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    if (kn_operand_numel(&a->x) == 0) return kn__cx_end(&cx, KN_OK);
    int dim = (int)a->dim;
    int64_t n = a->x.shape[dim];
    kn_tensor *x = kn__cx_wrap(&cx, &a->x);
    kn_tensor *y = x ? kn_fft(kn_complex(x, kn_zeros_like(x)), -1, dim, KN_FFT_NORM_BACKWARD) : NULL;
    y = y ? kn_view_as_real(kn_mul_scalar(kn_narrow(y, dim, 0, n / 2 + 1), a->scale)) : NULL;
    return kn__cx_end(&cx, kn__cx_put(&cx, &a->out, y));
}

/* IRFFT: the Hermitian spectrum rebuilt (bins n/2 + 1 .. n - 1 are the
 * conjugates of bins n - n/2 - 1 .. 1, in that order), the inverse FFT op,
 * its real part scaled. The imaginary parts of bin 0 and (even n) bin n/2
 * add only imaginary terms, so the real part ignores them. */
kn_status kn__composite_irfft(kn_device dev, kn_irfft_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    if (kn_operand_numel(&a->out) == 0) return kn__cx_end(&cx, KN_OK);
    int dim = (int)a->dim;
    int64_t n = a->n, tail = n - (n / 2 + 1);
    kn_tensor *x = kn__cx_wrap(&cx, &a->x);
    kn_tensor *z = x ? kn_view_as_complex(kn_contiguous(x)) : NULL, *full = z;
    if (z && tail > 0) {
        int64_t *idx = malloc((size_t)tail * sizeof *idx);
        if (!idx) return kn__cx_end(&cx, kn__err(KN_ERR_OOM, "irfft: out of memory"));
        for (int64_t t = 0; t < tail; t++) idx[t] = tail - t;
        kn_tensor *it = kn_to(kn_from_data(idx, KN_I64, 1, &tail, KN_CPU), dev);
        free(idx);
        kn_tensor *mirror = it ? kn_index_select(kn_view_as_real(z), dim, it) : NULL;
        kn_tensor *parts[2] = {z, mirror ? kn_conj(kn_view_as_complex(kn_contiguous(mirror))) : NULL};
        full = parts[1] ? kn_concat(2, parts, dim) : NULL;
    }
    kn_tensor *y = full ? kn_ifft(full, -1, dim, KN_FFT_NORM_FORWARD) : NULL;
    return kn__cx_end(&cx, kn__cx_put(&cx, &a->out, y ? kn_mul_scalar(kn_real(y), a->scale) : NULL));
}
