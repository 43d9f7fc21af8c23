/* Complex tensors in the op layer: views between a complex tensor and its
 * real pairs, parts, construction, and the few elementwise ops that are
 * exact on the pairs. Everything is written with real ops on the real view,
 * so it runs on every device and its gradients come from theirs: the
 * gradient of a complex tensor is the complex tensor whose real view is the
 * gradient of its real view (dL/dRe + i dL/dIm, PyTorch's convention). */
#include "complex_internal.h"
#include "core/complex.h"
#include "kiln/fft.h"

#include <math.h>
#include <string.h>

/* ---- view_as_real / view_as_complex ------------------------------------------------------------ */
static kn_status view_as_real_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    (void)n;
    gin[0] = kn_view_as_complex(g);
    return gin[0] ? KN_OK : kn_error_code();
}

/* Whether t (real, last dim 2) can be seen as complex without a copy. */
static bool pairs_viewable(const kn_tensor *t) {
    if (t->ndim < 1 || t->shape[t->ndim - 1] != 2 || t->stride[t->ndim - 1] != 1 || t->offset % 2) return false;
    for (int d = 0; d < t->ndim - 1; d++)
        if (t->shape[d] != 1 && t->stride[d] % 2) return false;
    return true;
}

static kn_status view_as_complex_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    (void)n;
    gin[0] = kn_view_as_real(g);
    return gin[0] ? KN_OK : kn_error_code();
}

kn_tensor *kn_view_as_real(kn_tensor *z) {
    const char *op = "view_as_real";
    if (!z) return kn__err_null(op), NULL;
    if (!kn_dtype_is_complex(z->dtype)) {
        kn__err(KN_ERR_DTYPE, "%s: expected a complex tensor, got %s", op, kn_dtype_name(z->dtype));
        return NULL;
    }
    if (z->ndim >= KN_MAX_DIMS) {
        kn__err(KN_ERR_SHAPE, "%s: a complex tensor of %d dims has no real view (at most %d dims)", op, z->ndim,
                KN_MAX_DIMS - 1);
        return NULL;
    }
    int64_t shape[KN_MAX_DIMS], stride[KN_MAX_DIMS];
    for (int d = 0; d < z->ndim; d++) shape[d] = z->shape[d], stride[d] = 2 * z->stride[d];
    shape[z->ndim] = 2, stride[z->ndim] = 1;
    kn_tensor *v = kn__alias(z, z->ndim + 1, shape, stride, 0);
    if (!v) return NULL;
    v->dtype = kn_dtype_real(z->dtype);
    v->offset = 2 * z->offset;
    kn__record(v, op, view_as_real_backward, 1, &z, 0);
    return kn__scoped(v);
}

kn_tensor *kn_view_as_complex(kn_tensor *x) {
    const char *op = "view_as_complex";
    if (!x) return kn__err_null(op), NULL;
    if (x->dtype != KN_F32 && x->dtype != KN_F64) {
        kn__err(KN_ERR_DTYPE, "%s: expected float32 or float64 pairs, got %s", op, kn_dtype_name(x->dtype));
        return NULL;
    }
    char b[128];
    if (x->ndim < 1 || x->shape[x->ndim - 1] != 2) {
        kn__err(KN_ERR_SHAPE, "%s: the last dim must have size 2 (real, imaginary), got shape %s", op,
                kn__shape_str(x->ndim, x->shape, b, sizeof b));
        return NULL;
    }
    if (!pairs_viewable(x)) {
        kn__err(KN_ERR_SHAPE, "%s: the pairs must be contiguous (last stride 1, even strides and offset); "
                "call kn_contiguous first", op);
        return NULL;
    }
    int64_t stride[KN_MAX_DIMS];
    for (int d = 0; d < x->ndim - 1; d++) stride[d] = x->stride[d] / 2;
    kn_tensor *v = kn__alias(x, x->ndim - 1, x->shape, stride, 0);
    if (!v) return NULL;
    v->dtype = kn_dtype_complex(x->dtype);
    kn__complex_note(v->dtype);
    v->offset = x->offset / 2;
    kn__record(v, op, view_as_complex_backward, 1, &x, 0);
    return kn__scoped(v);
}

/* A complex view of real pairs of any layout (copied when not viewable); scoped. */
static kn_tensor *as_complex(kn_tensor *pairs) {
    if (!pairs) return NULL;
    return kn_view_as_complex(pairs_viewable(pairs) ? pairs : kn_contiguous(pairs));
}

/* ---- parts and construction ---------------------------------------------------------------------- */
kn_tensor *kn_real(kn_tensor *z) {
    if (!z) return kn__err_null("real"), NULL;
    if (!kn_dtype_is_complex(z->dtype)) return kn__scoped(kn_retain(z)); /* as torch.real */
    return kn_select(kn_view_as_real(z), -1, 0);
}

kn_tensor *kn_imag(kn_tensor *z) {
    if (!z) return kn__err_null("imag"), NULL;
    if (!kn_dtype_is_complex(z->dtype)) {
        kn__err(KN_ERR_DTYPE, "imag: expected a complex tensor, got %s", kn_dtype_name(z->dtype));
        return NULL;
    }
    return kn_select(kn_view_as_real(z), -1, 1);
}

kn_tensor *kn_complex(kn_tensor *re, kn_tensor *im) {
    const char *op = "complex";
    if (!re || !im) return kn__err_null(op), NULL;
    kn_tensor *both[2] = {re, im};
    if (!kn__same_device(op, 2, both)) return NULL;
    if (kn_dtype_is_complex(re->dtype) || kn_dtype_is_complex(im->dtype) || re->dtype == KN_BOOL ||
        im->dtype == KN_BOOL) {
        kn__err(KN_ERR_DTYPE, "%s: expected real parts, got %s and %s", op, kn_dtype_name(re->dtype),
                kn_dtype_name(im->dtype));
        return NULL;
    }
    kn_dtype part = kn_dtype_real(kn_dtype_complex(kn_dtype_promote(kn__float_dtype(re->dtype),
                                                                     kn__float_dtype(im->dtype))));
    int64_t shape[KN_MAX_DIMS];
    int nd = kn__broadcast(op, re->ndim, re->shape, im->ndim, im->shape, shape);
    if (nd < 0) return NULL;
    if (nd >= KN_MAX_DIMS) {
        kn__err(KN_ERR_SHAPE, "%s: complex tensors have at most %d dims", op, KN_MAX_DIMS - 1);
        return NULL;
    }
    kn_tensor *parts[2] = {kn_unsqueeze(kn_expand(kn_cast(re, part), nd, shape), nd),
                           kn_unsqueeze(kn_expand(kn_cast(im, part), nd, shape), nd)};
    return as_complex(kn_concat(2, parts, nd));
}

kn_tensor *kn_conj(kn_tensor *z) {
    if (!z) return kn__err_null("conj"), NULL;
    if (!kn_dtype_is_complex(z->dtype)) return kn__scoped(kn_retain(z));
    kn_dtype part = kn_dtype_real(z->dtype);
    double sign[2] = {1, -1};
    kn_tensor *s = kn_cast(kn_from_data(sign, KN_F64, 1, (int64_t[]){2}, KN_CPU), part);
    return as_complex(kn_mul(kn_view_as_real(z), kn_to(s, z->storage->device)));
}

/* ---- elementwise --------------------------------------------------------------------------------- */
static kn_tensor *refuse(const char *name, kn_dtype dt) {
    kn__err(KN_ERR_DTYPE, "%s: %s is not supported (complex tensors take copies, views, +, -, scaling by a real, "
            "kn_real/kn_imag/kn_abs and the FFT ops)", name, kn_dtype_name(dt));
    return NULL;
}

kn_tensor *kn__complex_binary(kn_binary_fn f, kn_tensor *a, kn_tensor *b) {
    kn_dtype dt = kn__result_dtype(a, b);
    if (!kn_dtype_is_complex(dt)) dt = kn_dtype_promote(a->dtype, b->dtype);
    if (f != KN_BINARY_ADD && f != KN_BINARY_SUB) return refuse(kn__binary_name(f), dt);
    /* A 0-d operand's real view is [2]: it broadcasts against the pairs as it should. */
    kn_tensor *ra = kn_view_as_real(kn_cast(a, dt)), *rb = kn_view_as_real(kn_cast(b, dt));
    return as_complex(f == KN_BINARY_ADD ? kn_add(ra, rb) : kn_sub(ra, rb));
}

/* |z| of the pairs r [..., 2] -> [...]: sqrt(re^2 + im^2), scaled by the
 * larger part so that neither overflows nor underflows where the modulus
 * itself does not. */
static kn_tensor *modulus(kn_tensor *r) {
    kn_tensor *m = kn_max(kn_abs(r), KN_DIMS(-1), true);
    kn_tensor *safe = kn_where(kn_gt(m, kn_zeros_like(m)), m, kn_ones_like(m));
    kn_tensor *q = kn_div(r, safe);
    return kn_squeeze(kn_mul(kn_sqrt(kn_sum(kn_mul(q, q), KN_DIMS(-1), true)), m), -1);
}

/* d|z| = Re(conj(sgn z) dz): the gradient is g sgn(z), sgn(z) = z / |z| and
 * 0 at z = 0, as PyTorch takes it (the composite's own rule would give NaN
 * there, through sqrt at 0). */
static kn_status complex_abs_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *r = kn_view_as_real(n->saved[0]), *m = kn_unsqueeze(n->saved[1], -1);
    kn_tensor *safe = kn_where(kn_gt(m, kn_zeros_like(m)), m, kn_ones_like(m));
    gin[0] = as_complex(kn_mul(kn_unsqueeze(g, -1), kn_div(r, safe))); /* r is 0 where m is */
    return gin[0] ? KN_OK : kn_error_code();
}

static kn_tensor *complex_abs(kn_tensor *z, kn_tensor *r) {
    kn_no_grad_begin();
    kn_tensor *out = modulus(r);
    kn_no_grad_end();
    if (!out) return NULL;
    kn_node *n = kn__record(out, "abs", complex_abs_backward, 1, &z, 0);
    kn__save(n, 0, z);
    kn__save(n, 1, out);
    return out;
}

kn_tensor *kn__complex_unary(kn_unary_fn f, kn_tensor *a, double p0, double p1) {
    (void)p1;
    kn_tensor *r = kn_view_as_real(a);
    switch (f) {
    case KN_UNARY_NEG: return as_complex(kn_neg(r));
    case KN_UNARY_MUL_SCALAR: return as_complex(kn_mul_scalar(r, p0));
    case KN_UNARY_ABS: return complex_abs(a, r);
    default: return refuse(kn__unary_name(f), a->dtype);
    }
}
