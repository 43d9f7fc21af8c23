/* Shared plumbing of the op families. */
#include "ops_internal.h"

#include <string.h>

bool kn__same_device(const char *op, int n, kn_tensor *const *ts) {
    const kn_tensor *first = NULL;
    for (int k = 0; k < n; k++) {
        if (!ts[k]) continue;
        if (!first) {
            first = ts[k];
        } else if (!kn_device_equal(first->storage->device, ts[k]->storage->device)) {
            kn__err(KN_ERR_DEVICE, "%s: tensors are on different devices (%s and %s); move them with kn_to first",
                    op, kn_device_str(first->storage->device), kn_device_str(ts[k]->storage->device));
            return false;
        }
    }
    return true;
}

kn_tensor *kn__run_out(kn_op op, kn_device dev, void *args, kn_tensor *out) {
    if (kn__run(op, dev, args) == KN_OK) return out;
    kn_release(out);
    return NULL;
}

kn_operand kn__view_expand(const kn_tensor *t, int ndim, const int64_t *shape) {
    kn_operand v = kn__view(t);
    int lead = ndim - t->ndim;
    for (int d = ndim - 1; d >= 0; d--) {
        int j = d - lead;
        v.stride[d] = (j < 0 || t->shape[j] == 1) ? 0 : t->stride[j];
        v.shape[d] = shape[d];
    }
    v.ndim = ndim;
    return v;
}

/* out <- t as a COPY (same shape; dtype conversion); out is returned, or
 * released on failure. */
static kn_tensor *copy_into(kn_tensor *out, kn_tensor *t) {
    if (!out) return NULL;
    kn_copy_args a = {.out = kn__view(out), .x = kn__view(t)};
    return kn__run_out(KN_OP_COPY, t->storage->device, &a, out);
}

kn_tensor *kn__cast_raw(kn_tensor *t, kn_dtype dt) {
    if (t->dtype == dt) return kn_retain(t);
    return copy_into(kn__new(t->ndim, t->shape, dt, t->storage->device), t);
}

kn_tensor *kn__contiguous_raw(kn_tensor *t) {
    if (kn__is_contiguous(t)) return kn_retain(t);
    return copy_into(kn__new_like(t), t);
}

kn_dtype kn__result_dtype(const kn_tensor *a, const kn_tensor *b) {
    if ((a->ndim == 0) == (b->ndim == 0)) return kn_dtype_promote(a->dtype, b->dtype);
    const kn_tensor *t = a->ndim ? a : b, *s = a->ndim ? b : a;
    bool tf = kn_dtype_is_float(t->dtype), sf = kn_dtype_is_float(s->dtype);
    if (tf == sf) {
        /* bool is its own kind: a bool tensor with an integer scalar is integer. */
        if (t->dtype == KN_BOOL && s->dtype != KN_BOOL) return kn_dtype_promote(t->dtype, s->dtype);
        return t->dtype;
    }
    return tf ? t->dtype : KN_F32;
}

kn_tensor *kn__view_raw(kn_tensor *t, int ndim, const int64_t *shape) {
    int64_t stride[KN_MAX_DIMS];
    kn__contiguous_strides(ndim, shape, stride);
    return kn__alias(t, ndim, shape, stride, t->offset);
}
