/* Views (no copy) and conversions between dtypes and devices, with their
 * backward rules. */
#include "ops_internal.h"

#include <string.h>

/* ---- backward rules ------------------------------------------------------------------ */
static kn_status reshape_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    gin[0] = kn_reshape(g, n->in[0]->ndim, n->in[0]->shape);
    return gin[0] ? KN_OK : kn_error_code();
}

typedef struct {
    int perm[KN_MAX_DIMS]; /* output dim k is input dim perm[k] */
} permute_state;

static kn_status permute_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const permute_state *st = KN_STATE(n, permute_state);
    int inv[KN_MAX_DIMS];
    for (int d = 0; d < n->in[0]->ndim; d++) inv[st->perm[d]] = d;
    gin[0] = kn_permute(g, n->in[0]->ndim, inv);
    return gin[0] ? KN_OK : kn_error_code();
}

/* Slice-like views (slice, select) of one dim of the input. */
typedef struct {
    int dim;
    bool removed; /* select: the dim is gone from the output */
    int64_t start, step;
} slice_state;

/* Scatters the gradient into zeros of the input's shape: g copied into the
 * slice's place (a strided view of the zeros; a removed dim comes back as
 * size 1). */
static kn_status slice_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const slice_state *st = KN_STATE(n, slice_state);
    kn_tensor *x = n->in[0];
    kn_device dev = g->storage->device;
    kn_tensor *z = kn_zeros(x->ndim, x->shape, g->dtype, dev);
    if (!z) return kn_error_code();
    gin[0] = z;
    int dim = st->dim;
    kn_copy_args a = {.out = kn__view(z), .x = kn__view(g)};
    a.out.data = (char *)a.out.data + (size_t)(st->start * z->stride[dim]) * kn_dtype_size(z->dtype);
    a.out.shape[dim] = st->removed ? 1 : g->shape[dim];
    a.out.stride[dim] *= st->step;
    if (st->removed) {
        for (int d = x->ndim - 1; d > dim; d--) {
            a.x.shape[d] = a.x.shape[d - 1];
            a.x.stride[d] = a.x.stride[d - 1];
        }
        a.x.shape[dim] = 1;
        a.x.stride[dim] = 0;
        a.x.ndim = x->ndim;
    }
    return kn_numel(g) ? kn__run(KN_OP_COPY, dev, &a) : KN_OK;
}

static kn_status expand_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    gin[0] = kn__sum_to(g, n->in[0]->ndim, n->in[0]->shape);
    return gin[0] ? KN_OK : kn_error_code();
}

static kn_status identity_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    (void)n;
    gin[0] = g;
    return KN_OK;
}

static kn_status convert_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    /* Real to complex: the real input moved only the real parts. */
    if (kn_dtype_is_complex(g->dtype) && !kn_dtype_is_complex(n->in[0]->dtype)) g = kn_real(g);
    gin[0] = kn_to_dtype(g, n->in[0]->storage->device, n->in[0]->dtype);
    return gin[0] ? KN_OK : kn_error_code();
}

/* A view of t recorded on the tape. */
static kn_tensor *make_view(const char *name, kn_tensor *t, int ndim, const int64_t *shape,
                            const int64_t *stride, int64_t offset, kn_backward_fn bw,
                            size_t state_size, kn_node **node) {
    kn_tensor *v = kn__alias(t, ndim, shape, stride, offset);
    if (!v) return NULL;
    kn_node *n = kn__record(v, name, bw, 1, &t, state_size);
    if (node) *node = n;
    return kn__scoped(v);
}

/* ---- reshape ------------------------------------------------------------------------------ */
/* Strides for viewing t as shape without a copy (PyTorch's rule); false when impossible. */
static bool view_strides(const kn_tensor *t, int nd, const int64_t *shape, int64_t *stride) {
    if (kn__numel_shape(t->ndim, t->shape) == 0 || t->ndim == 0) {
        kn__contiguous_strides(nd, shape, stride);
        return true;
    }
    int view_d = nd - 1;
    int64_t base = t->stride[t->ndim - 1], tensor_n = 1, view_n = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        tensor_n *= t->shape[d];
        if (d == 0 || (t->shape[d - 1] != 1 && t->stride[d - 1] != tensor_n * base)) {
            while (view_d >= 0 && (view_n < tensor_n || shape[view_d] == 1)) {
                stride[view_d] = view_n * base;
                view_n *= shape[view_d];
                view_d--;
            }
            if (view_n != tensor_n) return false;
            if (d > 0) {
                base = t->stride[d - 1];
                tensor_n = view_n = 1;
            }
        }
    }
    return view_d == -1;
}

static bool infer_shape(const char *op, const kn_tensor *t, int nd, const int64_t *in, int64_t *out) {
    if (nd < 0 || nd > KN_MAX_DIMS || (nd && !in)) {
        kn__err(KN_ERR_INVALID, "%s: invalid shape of %d dims", op, nd);
        return false;
    }
    int infer = -1;
    int64_t known = 1, total = kn__numel_shape(t->ndim, t->shape);
    for (int d = 0; d < nd; d++) {
        out[d] = in[d];
        if (in[d] == -1 && infer < 0) infer = d;
        else if (in[d] < 0) {
            kn__err(KN_ERR_INVALID, "%s: invalid size %lld", op, (long long)in[d]);
            return false;
        } else known *= in[d];
    }
    if (infer >= 0) {
        if (known == 0 || total % known) goto bad;
        out[infer] = total / known;
    }
    if (kn__numel_shape(nd, out) == total) return true;
bad:;
    char a[128], b[128];
    kn__err(KN_ERR_SHAPE, "%s: shape %s is invalid for a tensor of shape %s (%lld elements)", op,
            kn__shape_str(nd, in, a, sizeof a), kn__shape_str(t->ndim, t->shape, b, sizeof b),
            (long long)total);
    return false;
}

static kn_tensor *reshape_impl(const char *op, kn_tensor *t, int nd, const int64_t *in, bool copy_ok) {
    if (!t) return kn__err_null(op), NULL;
    int64_t shape[KN_MAX_DIMS], stride[KN_MAX_DIMS];
    if (!infer_shape(op, t, nd, in, shape)) return NULL;
    if (view_strides(t, nd, shape, stride))
        return make_view(op, t, nd, shape, stride, t->offset, reshape_backward, 0, NULL);
    if (!copy_ok) {
        kn__err(KN_ERR_SHAPE, "view: the tensor's strides cannot be viewed as this shape; use kn_reshape (which copies) or kn_contiguous first");
        return NULL;
    }
    return kn_view(kn_contiguous(t), nd, shape);
}

kn_tensor *kn_reshape(kn_tensor *t, int nd, const int64_t *shape) {
    return reshape_impl("reshape", t, nd, shape, true);
}
kn_tensor *kn_view(kn_tensor *t, int nd, const int64_t *shape) {
    return reshape_impl("view", t, nd, shape, false);
}

kn_tensor *kn_flatten(kn_tensor *t, int start, int end) {
    if (!t) return kn__err_null("flatten"), NULL;
    if (t->ndim == 0) return kn_reshape(t, KN_SHAPE(1));
    int s = kn__dim("flatten", start, t->ndim), e = kn__dim("flatten", end, t->ndim);
    if (s < 0 || e < 0) return NULL;
    if (s > e) {
        kn__err(KN_ERR_INVALID, "flatten: start_dim %d comes after end_dim %d", start, end);
        return NULL;
    }
    int64_t shape[KN_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < s; d++) shape[nd++] = t->shape[d];
    shape[nd++] = kn__numel_shape(e - s + 1, t->shape + s);
    for (int d = e + 1; d < t->ndim; d++) shape[nd++] = t->shape[d];
    return kn_reshape(t, nd, shape);
}

kn_tensor *kn_squeeze(kn_tensor *t, int dim) {
    if (!t) return kn__err_null("squeeze"), NULL;
    int d = kn__dim("squeeze", dim, t->ndim);
    if (d < 0) return NULL;
    if (t->ndim == 0 || t->shape[d] != 1) return kn__scoped(kn_retain(t));
    int64_t shape[KN_MAX_DIMS], stride[KN_MAX_DIMS];
    int nd = 0;
    for (int k = 0; k < t->ndim; k++)
        if (k != d) {
            shape[nd] = t->shape[k];
            stride[nd++] = t->stride[k];
        }
    return make_view("squeeze", t, nd, shape, stride, t->offset, reshape_backward, 0, NULL);
}

kn_tensor *kn_unsqueeze(kn_tensor *t, int dim) {
    if (!t) return kn__err_null("unsqueeze"), NULL;
    int d = kn__dim("unsqueeze", dim, t->ndim + 1);
    if (d < 0) return NULL;
    if (t->ndim == KN_MAX_DIMS) {
        kn__err(KN_ERR_INVALID, "unsqueeze: tensors have at most %d dims", KN_MAX_DIMS);
        return NULL;
    }
    int64_t shape[KN_MAX_DIMS], stride[KN_MAX_DIMS];
    for (int k = 0, j = 0; k <= t->ndim; k++) {
        if (k == d) {
            shape[k] = 1;
            stride[k] = k < t->ndim ? t->stride[k] * t->shape[k] : 1;
        } else {
            shape[k] = t->shape[j];
            stride[k] = t->stride[j++];
        }
    }
    return make_view("unsqueeze", t, t->ndim + 1, shape, stride, t->offset, reshape_backward, 0, NULL);
}

/* ---- permutations --------------------------------------------------------------------- */
kn_tensor *kn_permute(kn_tensor *t, int nd, const int *dims) {
    if (!t) return kn__err_null("permute"), NULL;
    if (nd != t->ndim) {
        kn__err(KN_ERR_INVALID, "permute: %d dims given for a %d-d tensor", nd, t->ndim);
        return NULL;
    }
    int64_t shape[KN_MAX_DIMS], stride[KN_MAX_DIMS];
    bool seen[KN_MAX_DIMS] = {0};
    int perm[KN_MAX_DIMS];
    for (int k = 0; k < nd; k++) {
        int d = kn__dim("permute", dims[k], nd);
        if (d < 0) return NULL;
        if (seen[d]) {
            kn__err(KN_ERR_INVALID, "permute: dim %d repeated", dims[k]);
            return NULL;
        }
        seen[d] = true;
        perm[k] = d;
        shape[k] = t->shape[d];
        stride[k] = t->stride[d];
    }
    kn_node *n = NULL;
    kn_tensor *v = make_view("permute", t, nd, shape, stride, t->offset, permute_backward, sizeof(permute_state),
                             &n);
    if (n) memcpy(KN_STATE(n, permute_state)->perm, perm, sizeof perm);
    return v;
}

kn_tensor *kn_transpose(kn_tensor *t, int d0, int d1) {
    if (!t) return kn__err_null("transpose"), NULL;
    int a = kn__dim("transpose", d0, t->ndim), b = kn__dim("transpose", d1, t->ndim);
    if (a < 0 || b < 0) return NULL;
    if (t->ndim == 0) return kn__scoped(kn_retain(t));
    int perm[KN_MAX_DIMS];
    for (int k = 0; k < t->ndim; k++) perm[k] = k;
    perm[a] = b;
    perm[b] = a;
    return kn_permute(t, t->ndim, perm);
}

/* ---- slicing ---------------------------------------------------------------------------- */
kn_tensor *kn_slice(kn_tensor *t, int dim, int64_t start, int64_t end, int64_t step) {
    if (!t) return kn__err_null("slice"), NULL;
    int d = kn__dim("slice", dim, t->ndim);
    if (d < 0 || t->ndim == 0) {
        if (d >= 0) kn__err(KN_ERR_INVALID, "slice: cannot slice a 0-d tensor");
        return NULL;
    }
    if (step <= 0) {
        kn__err(KN_ERR_INVALID, "slice: step must be positive, got %lld", (long long)step);
        return NULL;
    }
    int64_t n = t->shape[d];
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = start < 0 ? 0 : start > n ? n : start;
    end = end < start ? start : end > n ? n : end;
    int64_t shape[KN_MAX_DIMS], stride[KN_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    memcpy(stride, t->stride, sizeof stride);
    shape[d] = end == start ? 0 : (end - start - 1) / step + 1; /* no overflow for huge steps */
    if (shape[d] > 1) stride[d] *= step;
    kn_node *node = NULL;
    kn_tensor *v = make_view("slice", t, t->ndim, shape, stride, t->offset + start * t->stride[d],
                             slice_backward, sizeof(slice_state), &node);
    if (node) *KN_STATE(node, slice_state) = (slice_state){.dim = d, .start = start, .step = step};
    return v;
}

kn_tensor *kn_narrow(kn_tensor *t, int dim, int64_t start, int64_t length) {
    if (!t) return kn__err_null("narrow"), NULL;
    int d = kn__dim("narrow", dim, t->ndim);
    if (d < 0) return NULL;
    if (t->ndim == 0 || start < 0 || length < 0 || start + length > t->shape[d]) {
        kn__err(KN_ERR_INVALID, "narrow: [%lld, %lld) is outside dim %d of size %lld",
                (long long)start, (long long)(start + length), dim, (long long)(t->ndim ? t->shape[d] : 0));
        return NULL;
    }
    return kn_slice(t, d, start, start + length, 1);
}

kn_tensor *kn_select(kn_tensor *t, int dim, int64_t index) {
    if (!t) return kn__err_null("select"), NULL;
    int d = kn__dim("select", dim, t->ndim);
    if (d < 0 || t->ndim == 0) {
        if (d >= 0) kn__err(KN_ERR_INVALID, "select: cannot index a 0-d tensor");
        return NULL;
    }
    int64_t i = index < 0 ? index + t->shape[d] : index;
    if (i < 0 || i >= t->shape[d]) {
        kn__err(KN_ERR_INVALID, "select: index %lld is out of range for dim %d of size %lld",
                (long long)index, dim, (long long)t->shape[d]);
        return NULL;
    }
    int64_t shape[KN_MAX_DIMS], stride[KN_MAX_DIMS];
    int nd = 0;
    for (int k = 0; k < t->ndim; k++)
        if (k != d) {
            shape[nd] = t->shape[k];
            stride[nd++] = t->stride[k];
        }
    kn_node *node = NULL;
    kn_tensor *v = make_view("select", t, nd, shape, stride, t->offset + i * t->stride[d],
                             slice_backward, sizeof(slice_state), &node);
    if (node) *KN_STATE(node, slice_state) = (slice_state){.dim = d, .removed = true, .start = i, .step = 1};
    return v;
}

kn_tensor *kn_expand(kn_tensor *t, int nd, const int64_t *shape) {
    if (!t) return kn__err_null("expand"), NULL;
    if (nd < t->ndim || nd > KN_MAX_DIMS) {
        kn__err(KN_ERR_SHAPE, "expand: cannot expand a %d-d tensor to %d dims", t->ndim, nd);
        return NULL;
    }
    int64_t full[KN_MAX_DIMS];
    int lead = nd - t->ndim;
    for (int d = 0; d < nd; d++) {
        int64_t have = d < lead ? 1 : t->shape[d - lead];
        full[d] = shape[d] == -1 && d >= lead ? have : shape[d];
        if (full[d] < 0) {
            kn__err(KN_ERR_INVALID, "expand: invalid size %lld for dim %d (-1 keeps an existing size only)",
                    (long long)shape[d], d);
            return NULL;
        }
        if (have != full[d] && have != 1) {
            char a[128], b[128];
            kn__err(KN_ERR_SHAPE, "expand: cannot expand shape %s to %s",
                    kn__shape_str(t->ndim, t->shape, a, sizeof a), kn__shape_str(nd, shape, b, sizeof b));
            return NULL;
        }
    }
    kn_tensor *v = kn__expand(t, nd, full);
    if (!v) return NULL;
    kn__record(v, "expand", expand_backward, 1, &t, 0);
    return kn__scoped(v);
}

/* ---- copies and conversions --------------------------------------------------------------- */
/* A new tensor of x's shape in dtype dt, copied from x (on dev, x's device); raw. */
static kn_tensor *copy_new(kn_tensor *x, kn_dtype dt, kn_device dev) {
    kn_tensor *out = kn__new(x->ndim, x->shape, dt, dev);
    if (!out) return NULL;
    kn_copy_args a = {.out = kn__view(out), .x = kn__view(x)};
    return kn__run_out(KN_OP_COPY, dev, &a, out);
}

/* A recorded copy of t with dtype dt on dev. */
static kn_tensor *convert(const char *op, kn_tensor *t, kn_device dev, kn_dtype dt, kn_backward_fn bw) {
    if (!kn_device_ok(dev)) {
        if (kn_error_code() == KN_OK || dev.kind >= 0)
            kn__err(KN_ERR_DEVICE, "%s: device %s is not available", op, kn_device_str(dev));
        return NULL;
    }
    kn_device src = t->storage->device;
    kn_tensor *out;
    if (kn_device_equal(src, dev)) {
        out = copy_new(t, dt, dev);
    } else {
        /* Across devices: make the bytes contiguous in the source dtype where
         * they are, move them, then convert on the destination. */
        kn_tensor *cs = kn__contiguous_raw(t);
        kn_tensor *moved = cs ? kn__new(t->ndim, t->shape, t->dtype, dev) : NULL;
        if (moved && kn__copy_bytes(dev, moved->storage->data, src, kn__data(cs),
                                    (size_t)kn_numel(t) * kn_dtype_size(t->dtype)) != KN_OK) {
            kn_release(moved);
            moved = NULL;
        }
        kn_release(cs);
        out = moved && dt != t->dtype ? copy_new(moved, dt, dev) : kn_retain(moved);
        kn_release(moved);
    }
    if (!out) return NULL;
    if (kn_dtype_is_float(dt) || kn_dtype_is_complex(dt)) kn__record(out, op, bw, 1, &t, 0);
    return kn__scoped(out);
}

kn_tensor *kn_to_dtype(kn_tensor *t, kn_device dev, kn_dtype dt) {
    if (!t) return kn__err_null("to"), NULL;
    if ((unsigned)dt >= KN_DTYPE_COUNT) {
        kn__err(KN_ERR_DTYPE, "to: invalid dtype %d", (int)dt);
        return NULL;
    }
    if (kn_dtype_is_complex(t->dtype) && !kn_dtype_is_complex(dt)) {
        kn__err(KN_ERR_DTYPE, "to: cannot convert %s to %s (the imaginary part would be lost; take kn_real)",
                kn_dtype_name(t->dtype), kn_dtype_name(dt));
        return NULL;
    }
    if (kn_device_equal(t->storage->device, dev) && t->dtype == dt) return kn__scoped(kn_retain(t));
    return convert("to", t, dev, dt, convert_backward);
}

kn_tensor *kn_to(kn_tensor *t, kn_device dev) {
    if (!t) return kn__err_null("to"), NULL;
    return kn_to_dtype(t, dev, t->dtype);
}

kn_tensor *kn_cast(kn_tensor *t, kn_dtype dt) {
    if (!t) return kn__err_null("cast"), NULL;
    return kn_to_dtype(t, t->storage->device, dt);
}

kn_tensor *kn_clone(kn_tensor *t) {
    if (!t) return kn__err_null("clone"), NULL;
    return convert("clone", t, t->storage->device, t->dtype, identity_backward);
}

kn_tensor *kn_contiguous(kn_tensor *t) {
    if (!t) return kn__err_null("contiguous"), NULL;
    if (kn__is_contiguous(t)) return kn__scoped(kn_retain(t));
    return convert("contiguous", t, t->storage->device, t->dtype, identity_backward);
}

/* In-place writes are not recorded on the tape, so while gradients are being
 * recorded they are refused where autograd would be misled: into a leaf that
 * requires grad, or into an op's result. (Saved tensors written later are
 * caught at backward time by their storage version.) */
static bool inplace_ok(const char *op, const kn_tensor *dst) {
    if (!kn_grad_enabled()) return true;
    if (dst->grad_fn) {
        kn__err(KN_ERR_AUTOGRAD, "%s: in-place write into a tensor made by '%s' while gradients are recorded (use kn_detach, or kn_no_grad_begin)",
                op, dst->grad_fn->name);
        return false;
    }
    if (dst->requires_grad) {
        kn__err(KN_ERR_AUTOGRAD, "%s: in-place write into a leaf that requires grad (use kn_no_grad_begin)", op);
        return false;
    }
    return true;
}

kn_status kn_copy_(kn_tensor *dst, kn_tensor *src) {
    if (!dst || !src) return kn__err_null("copy_"), KN_ERR_NULL;
    int64_t shape[KN_MAX_DIMS];
    int nd = kn__broadcast("copy_", dst->ndim, dst->shape, src->ndim, src->shape, shape);
    if (nd < 0) return KN_ERR_SHAPE;
    if (nd != dst->ndim || memcmp(shape, dst->shape, (size_t)nd * 8)) {
        char a[128], b[128];
        return kn__err(KN_ERR_SHAPE, "copy_: source of shape %s does not fit destination %s",
                       kn__shape_str(src->ndim, src->shape, a, sizeof a),
                       kn__shape_str(dst->ndim, dst->shape, b, sizeof b));
    }
    if (!inplace_ok("copy_", dst)) return KN_ERR_AUTOGRAD;
    kn_scope sc = kn_scope_begin();
    kn_tensor *s = src;
    if (!kn_device_equal(src->storage->device, dst->storage->device)) {
        kn_no_grad_begin();
        s = kn_to(src, dst->storage->device);
        kn_no_grad_end();
    }
    kn_status st = kn_error_code();
    if (s) {
        /* The kernel takes the source broadcast to the destination's shape. */
        kn_copy_args a = {.out = kn__view(dst), .x = kn__view_expand(s, dst->ndim, dst->shape)};
        st = kn__run(KN_OP_COPY, dst->storage->device, &a);
    }
    kn_scope_end(sc);
    if (st == KN_OK) dst->storage->version++;
    return st;
}

kn_status kn_fill_(kn_tensor *dst, double v) {
    if (!dst) return kn__err_null("fill_"), KN_ERR_NULL;
    if (!inplace_ok("fill_", dst)) return KN_ERR_AUTOGRAD;
    kn_fill_args a = {.out = kn__view(dst), .value = v, .step = 0};
    kn_status st = kn__run(KN_OP_FILL, dst->storage->device, &a);
    if (st == KN_OK) dst->storage->version++;
    return st;
}
