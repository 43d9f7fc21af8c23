/* The FFT ops (kiln/fft.h). Every transform is one FFT op (core/ops.def) on
 * a complex tensor's real view, between differentiable views and copies:
 * cropping is a narrow, padding a concat with zeros; rfft and irfft are the
 * RFFT and IRFFT ops (real input to its n/2 + 1 bins, and back). The
 * gradients are the adjoints, as PyTorch defines them: the FFT op's own
 * backward is the transform of the opposite sign with the same scale (the
 * DFT matrix is symmetric, its adjoint its conjugate); RFFT's is IRFFT of
 * the bins with those counted twice by the Hermitian extension halved,
 * IRFFT's is RFFT with them doubled; the rest is the views'. */
#include "kiln/fft.h"
#include "core/complex.h"
#include "ops_internal.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    int dim;
    bool inverse;
    double scale;
} fft_state;

static kn_tensor *c2c(const char *op, kn_tensor *z, int dim, bool inverse, double scale);

static kn_status c2c_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const fft_state *st = KN_STATE(n, fft_state);
    kn_tensor *gc = kn_dtype_is_complex(g->dtype) ? g : kn_cast(g, n->in[0]->dtype);
    if (gc && gc->dtype != n->in[0]->dtype) gc = kn_cast(gc, n->in[0]->dtype);
    gin[0] = gc ? c2c("fft_backward", gc, st->dim, !st->inverse, st->scale) : NULL;
    return gin[0] ? KN_OK : kn_error_code();
}

/* The FFT op along dim of complex z (scoped result, recorded). */
static kn_tensor *c2c(const char *op, kn_tensor *z, int dim, bool inverse, double scale) {
    if (!z) return NULL;
    if (z->ndim >= KN_MAX_DIMS) {
        kn__err(KN_ERR_SHAPE, "%s: complex tensors have at most %d dims", op, KN_MAX_DIMS - 1);
        return NULL;
    }
    kn_device dev = z->storage->device;
    kn_tensor *out = kn__new_named(op, z->ndim, z->shape, z->dtype, dev);
    if (!out) return NULL;
    if (kn_numel(out) > 0) {
        kn_operand zv = kn__view(z), ov = kn__view(out);
        kn_fft_args a = {.out = kn__operand_real_view(&ov), .x = kn__operand_real_view(&zv), .dim = dim,
                         .inverse = inverse, .scale = scale};
        if (!kn__run_out(KN_OP_FFT, dev, &a, out)) return NULL;
    }
    kn_node *n = kn__record(out, "fft", c2c_backward, 1, &z, sizeof(fft_state));
    if (n) *KN_STATE(n, fft_state) = (fft_state){dim, inverse, scale};
    return kn__scoped(out);
}

/* ---- the real transforms ------------------------------------------------------------------------ */
typedef struct {
    int dim;
    int64_t n; /* the real length */
    double scale;
} rfft_state;

static kn_tensor *r2c(const char *op, kn_tensor *x, int dim, double scale);
static kn_tensor *c2r(const char *op, kn_tensor *z, int dim, int64_t n, double scale);

/* z (complex, n/2 + 1 bins along dim) times `inner` on the bins that the
 * Hermitian extension of length n holds twice (all but bin 0 and, even n,
 * bin n/2), 1 on the others. */
static kn_tensor *weigh_bins(kn_tensor *z, int dim, int64_t n, double inner) {
    if (!z) return NULL;
    int64_t bins = n / 2 + 1, shape[KN_MAX_DIMS];
    double *w = malloc((size_t)bins * sizeof *w);
    if (!w) return kn__err(KN_ERR_OOM, "fft: out of memory"), NULL;
    for (int64_t k = 0; k < bins; k++) w[k] = k == 0 || (n % 2 == 0 && k == n / 2) ? 1 : inner;
    for (int d = 0; d <= z->ndim; d++) shape[d] = d == dim ? bins : 1;
    kn_tensor *wt = kn_from_data(w, KN_F64, 1, &bins, KN_CPU);
    wt = kn_to(kn_cast(kn_reshape(wt, z->ndim + 1, shape), kn_dtype_real(z->dtype)), z->storage->device);
    free(w);
    return wt ? kn_view_as_complex(kn_mul(kn_view_as_real(kn_contiguous(z)), wt)) : NULL;
}

/* The gradient of a complex output as complex of dtype dt. */
static kn_tensor *complex_grad(kn_tensor *g, kn_dtype dt) {
    return g && g->dtype != dt ? kn_cast(g, dt) : g;
}

/* y = scale crop(F x): x = scale Re(sum_{k <= n/2} g_k e^{+}) = IRFFT of g
 * with the bins IRFFT counts twice halved. */
static kn_status r2c_backward(kn_node *nd, kn_tensor *g, kn_tensor **gin) {
    const rfft_state *st = KN_STATE(nd, rfft_state);
    kn_tensor *gc = complex_grad(g, kn_dtype_complex(nd->in[0]->dtype));
    gin[0] = c2r("rfft_backward", weigh_bins(gc, st->dim, st->n, 0.5), st->dim, st->n, st->scale);
    return gin[0] ? KN_OK : kn_error_code();
}

/* y = scale Re(F^-1 hermitian(z)): bin k's gradient is RFFT of g, doubled
 * where the extension holds the bin twice (0 in the ignored imaginary parts:
 * RFFT's bin 0 and even-n bin n/2 of a real g are real). */
static kn_status c2r_backward(kn_node *nd, kn_tensor *g, kn_tensor **gin) {
    const rfft_state *st = KN_STATE(nd, rfft_state);
    kn_tensor *gr = g && g->dtype != kn_dtype_real(nd->in[0]->dtype) ? kn_cast(g, kn_dtype_real(nd->in[0]->dtype)) : g;
    gin[0] = weigh_bins(r2c("irfft_backward", gr, st->dim, st->scale), st->dim, st->n, 2);
    return gin[0] ? KN_OK : kn_error_code();
}

/* The RFFT op along dim of real x (float32/float64): its n/2 + 1 bins
 * (scoped, recorded). */
static kn_tensor *r2c(const char *op, kn_tensor *x, int dim, double scale) {
    if (!x) return NULL;
    if (x->ndim >= KN_MAX_DIMS) {
        kn__err(KN_ERR_SHAPE, "%s: at most %d dims (the complex result needs one more)", op, KN_MAX_DIMS - 1);
        return NULL;
    }
    int64_t n = x->shape[dim], shape[KN_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) shape[d] = d == dim ? n / 2 + 1 : x->shape[d];
    kn_device dev = x->storage->device;
    kn_tensor *out = kn__new_named(op, x->ndim, shape, kn_dtype_complex(x->dtype), dev);
    if (!out) return NULL;
    if (kn_numel(out) > 0) {
        kn_operand xv = kn__view(x), ov = kn__view(out);
        kn_rfft_args a = {.out = kn__operand_real_view(&ov), .x = xv, .dim = dim, .scale = scale};
        if (!kn__run_out(KN_OP_RFFT, dev, &a, out)) return NULL;
    }
    kn_node *nd = kn__record(out, "rfft", r2c_backward, 1, &x, sizeof(rfft_state));
    if (nd) *KN_STATE(nd, rfft_state) = (rfft_state){dim, n, scale};
    return kn__scoped(out);
}

/* The IRFFT op along dim of complex z (n/2 + 1 bins) to real length n
 * (scoped, recorded). */
static kn_tensor *c2r(const char *op, kn_tensor *z, int dim, int64_t n, double scale) {
    if (!z) return NULL;
    if (z->ndim >= KN_MAX_DIMS) {
        kn__err(KN_ERR_SHAPE, "%s: complex tensors have at most %d dims", op, KN_MAX_DIMS - 1);
        return NULL;
    }
    int64_t shape[KN_MAX_DIMS];
    for (int d = 0; d < z->ndim; d++) shape[d] = d == dim ? n : z->shape[d];
    kn_device dev = z->storage->device;
    kn_tensor *out = kn__new_named(op, z->ndim, shape, kn_dtype_real(z->dtype), dev);
    if (!out) return NULL;
    if (kn_numel(out) > 0) {
        kn_operand zv = kn__view(z), ov = kn__view(out);
        kn_irfft_args a = {.out = ov, .x = kn__operand_real_view(&zv), .dim = dim, .n = n, .scale = scale};
        if (!kn__run_out(KN_OP_IRFFT, dev, &a, out)) return NULL;
    }
    kn_node *nd = kn__record(out, "irfft", c2r_backward, 1, &z, sizeof(rfft_state));
    if (nd) *KN_STATE(nd, rfft_state) = (rfft_state){dim, n, scale};
    return kn__scoped(out);
}

/* ---- checks and shapes -------------------------------------------------------------------------- */
static double norm_scale(kn_fft_norm norm, int64_t n, bool inverse) {
    switch (norm) {
    case KN_FFT_NORM_ORTHO: return 1 / sqrt((double)n);
    case KN_FFT_NORM_FORWARD: return inverse ? 1 : 1 / (double)n;
    default: return inverse ? 1 / (double)n : 1;
    }
}

/* The normalized dim of x for op (-1 with an error). */
static int fft_dim(const char *op, const kn_tensor *x, int dim, kn_fft_norm norm) {
    if ((unsigned)norm > KN_FFT_NORM_FORWARD) {
        kn__err(KN_ERR_INVALID, "%s: norm must be KN_FFT_NORM_BACKWARD, _ORTHO or _FORWARD, got %d", op, (int)norm);
        return -1;
    }
    if (x->ndim == 0) {
        kn__err(KN_ERR_SHAPE, "%s: expected a tensor of at least 1 dim, got a 0-d one", op);
        return -1;
    }
    return kn__dim(op, dim, x->ndim);
}

/* The transform length: n, or the input's length for -1; >= 1. */
static int64_t fft_len(const char *op, int64_t n, int64_t have) {
    if (n == -1) n = have;
    if (n < 1) {
        kn__err(KN_ERR_INVALID, "%s: the transform length must be >= 1 (n = -1: the input's length), got %lld", op,
                (long long)n);
        return -1;
    }
    return n;
}

/* x cropped or padded with zeros to n along dim (scoped; views where it can). */
static kn_tensor *resize(kn_tensor *x, int dim, int64_t n) {
    if (!x) return NULL;
    int64_t have = x->shape[dim];
    if (have == n) return x;
    if (have > n) return kn_narrow(x, dim, 0, n);
    int64_t shape[KN_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) shape[d] = x->shape[d];
    shape[dim] = n - have;
    kn_tensor *parts[2] = {x, kn_zeros(x->ndim, shape, x->dtype, x->storage->device)};
    return kn_concat(2, parts, dim);
}

/* x as complex (float64 -> complex128, other reals -> complex64). */
static kn_tensor *to_complex(kn_tensor *x) {
    if (kn_dtype_is_complex(x->dtype)) return x;
    return kn_cast(x, kn_dtype_complex(x->dtype));
}

/* ---- the 1-D transforms ----------------------------------------------------------------------- */
static kn_tensor *fft_c(const char *op, kn_tensor *x, int64_t n, int dim, kn_fft_norm norm, bool inverse) {
    if (!x) return kn__err_null(op), NULL;
    int d = fft_dim(op, x, dim, norm);
    if (d < 0 || (n = fft_len(op, n, x->shape[d])) < 0) return NULL;
    return c2c(op, resize(to_complex(x), d, n), d, inverse, norm_scale(norm, n, inverse));
}

/* x as the float dtype the real transforms take (float64, else float32). */
static kn_tensor *to_real_float(kn_tensor *x) {
    kn_dtype dt = kn_dtype_real(kn_dtype_complex(x->dtype));
    return x->dtype == dt ? x : kn_cast(x, dt);
}

static kn_tensor *rfft(const char *op, kn_tensor *x, int64_t n, int dim, kn_fft_norm norm) {
    if (!x) return kn__err_null(op), NULL;
    if (kn_dtype_is_complex(x->dtype)) {
        kn__err(KN_ERR_DTYPE, "%s: expected a real input, got %s (use kn_fft)", op, kn_dtype_name(x->dtype));
        return NULL;
    }
    int d = fft_dim(op, x, dim, norm);
    if (d < 0 || (n = fft_len(op, n, x->shape[d])) < 0) return NULL;
    return r2c(op, resize(to_real_float(x), d, n), d, norm_scale(norm, n, false));
}

static kn_tensor *irfft(const char *op, kn_tensor *x, int64_t n, int dim, kn_fft_norm norm) {
    if (!x) return kn__err_null(op), NULL;
    int d = fft_dim(op, x, dim, norm);
    if (d < 0) return NULL;
    if (n == -1) n = 2 * (x->shape[d] - 1);
    if (n < 1) {
        kn__err(KN_ERR_INVALID, "%s: the output length must be >= 1 (n = -1: 2 * (bins - 1) with %lld bins), got %lld",
                op, (long long)x->shape[d], (long long)n);
        return NULL;
    }
    return c2r(op, resize(to_complex(x), d, n / 2 + 1), d, n, norm_scale(norm, n, true));
}

kn_tensor *kn_fft(kn_tensor *x, int64_t n, int dim, kn_fft_norm norm) { return fft_c("fft", x, n, dim, norm, false); }
kn_tensor *kn_ifft(kn_tensor *x, int64_t n, int dim, kn_fft_norm norm) { return fft_c("ifft", x, n, dim, norm, true); }
kn_tensor *kn_rfft(kn_tensor *x, int64_t n, int dim, kn_fft_norm norm) { return rfft("rfft", x, n, dim, norm); }
kn_tensor *kn_irfft(kn_tensor *x, int64_t n, int dim, kn_fft_norm norm) { return irfft("irfft", x, n, dim, norm); }

/* ---- over two dims ---------------------------------------------------------------------------- */
/* dims (NULL: -2, -1) normalized and distinct; lengths (NULL: -1, -1). */
static bool dims2(const char *op, const kn_tensor *x, const int64_t *s, const int *dims, int out[2], int64_t n[2]) {
    if (!x) return kn__err_null(op), false;
    if (x->ndim < 2) {
        kn__err(KN_ERR_SHAPE, "%s: expected a tensor of at least 2 dims, got %d", op, x->ndim);
        return false;
    }
    for (int k = 0; k < 2; k++) {
        out[k] = kn__dim(op, dims ? dims[k] : k - 2, x->ndim);
        if (out[k] < 0) return false;
        n[k] = s ? s[k] : -1;
    }
    if (out[0] == out[1]) {
        kn__err(KN_ERR_INVALID, "%s: the two dims must differ, got %d twice", op, out[0]);
        return false;
    }
    return true;
}

kn_tensor *kn_fft2(kn_tensor *x, const int64_t *s, const int *dims, kn_fft_norm norm) {
    int d[2];
    int64_t n[2];
    if (!dims2("fft2", x, s, dims, d, n)) return NULL;
    return fft_c("fft2", fft_c("fft2", x, n[1], d[1], norm, false), n[0], d[0], norm, false);
}

kn_tensor *kn_ifft2(kn_tensor *x, const int64_t *s, const int *dims, kn_fft_norm norm) {
    int d[2];
    int64_t n[2];
    if (!dims2("ifft2", x, s, dims, d, n)) return NULL;
    return fft_c("ifft2", fft_c("ifft2", x, n[1], d[1], norm, true), n[0], d[0], norm, true);
}

kn_tensor *kn_rfft2(kn_tensor *x, const int64_t *s, const int *dims, kn_fft_norm norm) {
    int d[2];
    int64_t n[2];
    if (!dims2("rfft2", x, s, dims, d, n)) return NULL;
    return fft_c("rfft2", rfft("rfft2", x, n[1], d[1], norm), n[0], d[0], norm, false);
}

kn_tensor *kn_irfft2(kn_tensor *x, const int64_t *s, const int *dims, kn_fft_norm norm) {
    int d[2];
    int64_t n[2];
    if (!dims2("irfft2", x, s, dims, d, n)) return NULL;
    return irfft("irfft2", fft_c("irfft2", x, n[0], d[0], norm, true), n[1], d[1], norm);
}
