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

void kn__release_outs(kn_call *c) {
    for (int k = 0; k < KN_CALL_MAX_OUT; k++) {
        kn_release(c->out[k]);
        c->out[k] = NULL;
    }
}

bool kn__run_ok(kn_call *c) {
    if (kn__run(c) == KN_OK) return true;
    kn__release_outs(c);
    return false;
}

kn_tensor *kn__cast_raw(kn_tensor *t, kn_dtype dt) {
    if (t->dtype == dt) return kn_retain(t);
    kn_tensor *out = kn__new(t->ndim, t->shape, dt, t->storage->device);
    if (!out) return NULL;
    kn_call c = {.op = KN_OP_COPY, .device = t->storage->device, .in = {t}, .out = {out}};
    return kn__run_ok(&c) ? out : NULL;
}

kn_tensor *kn__contiguous_raw(kn_tensor *t) {
    if (kn__is_contiguous(t)) return kn_retain(t);
    kn_tensor *out = kn__new_like(t);
    if (!out) return NULL;
    kn_call c = {.op = KN_OP_COPY, .device = t->storage->device, .in = {t}, .out = {out}};
    return kn__run_ok(&c) ? out : NULL;
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

/* ---- names for messages and fallback counters ------------------------------------------ */
static const char *unary_names[KN_UNARY_COUNT] = {
    "neg", "exp", "log", "sqrt", "abs", "relu", "leaky_relu", "gelu", "sigmoid", "tanh",
    "softplus", "clamp", "pow", "add", "mul", "rsub", "rsqrt"};
static const char *binary_names[KN_BINARY_COUNT] = {"add", "sub", "mul", "div", "pow", "maximum",
                                                    "minimum", "eq", "ne", "lt", "le", "gt", "ge"};
static const char *reduce_names[KN_REDUCE_COUNT] = {"sum", "mean", "max", "min", "var", "argmax",
                                                    "argmin"};

const char *kn__unary_name(kn_unary_fn f) {
    return (unsigned)f < KN_UNARY_COUNT ? unary_names[f] : "unary";
}
const char *kn__binary_name(kn_binary_fn f) {
    return (unsigned)f < KN_BINARY_COUNT ? binary_names[f] : "binary";
}
const char *kn__reduce_name(kn_reduce_fn f) {
    return (unsigned)f < KN_REDUCE_COUNT ? reduce_names[f] : "reduce";
}
