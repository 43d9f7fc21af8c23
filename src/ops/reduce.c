/* Reductions over any set of dims, with keepdim, and their backward rules. */
#include "ops_internal.h"

#include <math.h>
#include <string.h>

typedef struct {
    uint64_t mask;
    int64_t keep_shape[KN_MAX_DIMS]; /* input rank, reduced dims set to 1 */
    int64_t out_shape[KN_MAX_DIMS];
    int out_ndim;
    int64_t count; /* elements folded into each output */
} reduce_plan;

static bool plan(const char *op, const kn_tensor *a, int ndims, const int *dims, bool keepdim,
                 reduce_plan *p) {
    memset(p, 0, sizeof *p);
    if (ndims < 0 || ndims > KN_MAX_DIMS || (ndims && !dims)) {
        kn__err(KN_ERR_INVALID, "%s: invalid list of %d dims", op, ndims);
        return false;
    }
    for (int k = 0; k < ndims; k++) {
        int d = kn__dim(op, dims[k], a->ndim);
        if (d < 0) return false;
        if (p->mask >> d & 1) {
            kn__err(KN_ERR_INVALID, "%s: dim %d appears twice", op, dims[k]);
            return false;
        }
        p->mask |= 1ull << d;
    }
    if (ndims == 0) p->mask = a->ndim ? (1ull << a->ndim) - 1 : 0;
    p->count = 1;
    for (int d = 0; d < a->ndim; d++) {
        bool red = p->mask >> d & 1;
        p->keep_shape[d] = red ? 1 : a->shape[d];
        if (red) p->count *= a->shape[d];
        if (!red || keepdim) p->out_shape[p->out_ndim++] = red ? 1 : a->shape[d];
    }
    return true;
}

/* The reduction into a new tensor of the output's shape (raw); the kernel
 * sees it with the keepdim shape, which has the same contiguous layout. */
static kn_tensor *run_reduce(kn_reduce_fn fn, kn_tensor *a, const reduce_plan *p, kn_dtype odt,
                             int correction) {
    kn_device dev = a->storage->device;
    kn_tensor *out = kn__new(p->out_ndim, p->out_shape, odt, dev);
    if (!out) return NULL;
    kn_reduce_args args = {.out = kn__view(out), .x = kn__view(a), .fn = fn, .dims = (int64_t)p->mask,
                           .correction = correction};
    args.out.ndim = a->ndim;
    memcpy(args.out.shape, p->keep_shape, sizeof p->keep_shape);
    kn__contiguous_strides(a->ndim, p->keep_shape, args.out.stride);
    return kn__run_out(KN_OP_REDUCE, dev, &args, out);
}

typedef struct {
    kn_reduce_fn fn;
    bool is_std;       /* var then sqrt: saved[0] is the std */
    uint64_t mask;     /* the reduced dims */
    int64_t correction;
    double count;      /* elements folded into each output */
} reduce_state;

/* grad (output shape) viewed with keepdim shape and broadcast to x's shape. */
static kn_tensor *expand_back(kn_tensor *g, const kn_node *n) {
    kn_tensor *x = n->in[0];
    uint64_t mask = KN_STATE(n, reduce_state)->mask;
    int64_t keep[KN_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) keep[d] = mask >> d & 1 ? 1 : x->shape[d];
    return kn_expand(kn_reshape(g, x->ndim, keep), x->ndim, x->shape);
}

/* saved[0]: the output, for max/min (the hits) and std. */
static kn_status reduce_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const reduce_state *st = KN_STATE(n, reduce_state);
    kn_tensor *x = n->in[0];
    double count = st->count;
    kn_tensor *ge = expand_back(g, n);
    kn_tensor *r = NULL;
    switch (st->fn) {
    case KN_REDUCE_SUM: r = ge; break;
    case KN_REDUCE_MEAN: r = kn_mul_scalar(ge, 1.0 / count); break;
    case KN_REDUCE_MAX:
    case KN_REDUCE_MIN: {
        /* Ties share the gradient evenly. */
        kn_tensor *hit = kn_cast(kn_eq(x, expand_back(n->saved[0], n)), x->dtype);
        int dims[KN_MAX_DIMS], nd = 0;
        for (int d = 0; d < x->ndim; d++)
            if (st->mask >> d & 1) dims[nd++] = d;
        kn_tensor *hits = kn_expand(kn_sum(hit, nd, dims, true), x->ndim, x->shape);
        r = kn_div(kn_mul(ge, hit), hits);
        break;
    }
    case KN_REDUCE_VAR: {
        /* d var / dx = 2 (x - mean) / (N - correction); std divides by 2 std more. */
        int dims[KN_MAX_DIMS], nd = 0;
        for (int d = 0; d < x->ndim; d++)
            if (st->mask >> d & 1) dims[nd++] = d;
        kn_tensor *dev = kn_sub(x, kn_mean(x, nd, dims, true));
        r = kn_mul(ge, kn_mul_scalar(dev, 2.0 / (count - (double)st->correction)));
        if (st->is_std) r = kn_div(r, kn_mul_scalar(expand_back(n->saved[0], n), 2.0));
        break;
    }
    default: return kn__err(KN_ERR_AUTOGRAD, "backward: %s is not differentiable", n->name);
    }
    gin[0] = r;
    return r ? KN_OK : kn_error_code();
}

static kn_tensor *reduce(kn_reduce_fn fn, kn_tensor *a, int ndims, const int *dims, bool keepdim,
                         int correction, bool is_std) {
    const char *name = is_std ? "std" : kn__reduce_name(fn);
    if (!a) return kn__err_null(name), NULL;
    reduce_plan p;
    if (!plan(name, a, ndims, dims, keepdim, &p)) return NULL;
    kn_dtype odt = a->dtype;
    if (fn == KN_REDUCE_SUM && !kn_dtype_is_float(odt)) odt = KN_I64;
    if (fn == KN_REDUCE_MEAN || fn == KN_REDUCE_VAR) odt = kn__float_dtype(odt);
    if ((fn == KN_REDUCE_MAX || fn == KN_REDUCE_MIN) && p.count == 0) {
        kn__err(KN_ERR_SHAPE, "%s: cannot reduce over a dimension of size 0", name);
        return NULL;
    }
    kn_tensor *out = run_reduce(fn, a, &p, odt, correction);
    if (!out) return NULL;
    if (is_std) {
        kn_tensor *var = out;
        out = kn__new_like(var);
        if (out) {
            kn_unary_args args = {.out = kn__view(out), .x = kn__view(var), .fn = KN_UNARY_SQRT};
            out = kn__run_out(KN_OP_UNARY, var->storage->device, &args, out);
        }
        kn_release(var);
        if (!out) return NULL;
    }
    kn_node *n = kn__record(out, name, reduce_backward, 1, &a, sizeof(reduce_state));
    if (n) {
        *KN_STATE(n, reduce_state) = (reduce_state){.fn = fn, .is_std = is_std, .mask = p.mask,
                                                    .correction = correction, .count = (double)p.count};
        if (fn == KN_REDUCE_MAX || fn == KN_REDUCE_MIN || is_std) kn__save(n, 0, out);
    }
    return kn__scoped(out);
}

kn_tensor *kn_sum(kn_tensor *a, int nd, const int *dims, bool keepdim) {
    return reduce(KN_REDUCE_SUM, a, nd, dims, keepdim, 0, false);
}
kn_tensor *kn_mean(kn_tensor *a, int nd, const int *dims, bool keepdim) {
    return reduce(KN_REDUCE_MEAN, a, nd, dims, keepdim, 0, false);
}
kn_tensor *kn_max(kn_tensor *a, int nd, const int *dims, bool keepdim) {
    return reduce(KN_REDUCE_MAX, a, nd, dims, keepdim, 0, false);
}
kn_tensor *kn_min(kn_tensor *a, int nd, const int *dims, bool keepdim) {
    return reduce(KN_REDUCE_MIN, a, nd, dims, keepdim, 0, false);
}
kn_tensor *kn_var(kn_tensor *a, int nd, const int *dims, int correction, bool keepdim) {
    return reduce(KN_REDUCE_VAR, a, nd, dims, keepdim, correction, false);
}
kn_tensor *kn_std(kn_tensor *a, int nd, const int *dims, int correction, bool keepdim) {
    return reduce(KN_REDUCE_VAR, a, nd, dims, keepdim, correction, true);
}
kn_tensor *kn_sum_all(kn_tensor *a) { return kn_sum(a, 0, NULL, false); }
kn_tensor *kn_mean_all(kn_tensor *a) { return kn_mean(a, 0, NULL, false); }

static kn_tensor *argreduce(kn_reduce_fn fn, kn_tensor *a, int dim, bool keepdim) {
    const char *name = kn__reduce_name(fn);
    if (!a) return kn__err_null(name), NULL;
    reduce_plan p;
    if (!plan(name, a, 1, &dim, keepdim, &p)) return NULL;
    if (p.count == 0) {
        kn__err(KN_ERR_SHAPE, "%s: cannot reduce over a dimension of size 0", name);
        return NULL;
    }
    return kn__scoped(run_reduce(fn, a, &p, KN_I64, 0));
}

kn_tensor *kn_argmax(kn_tensor *a, int dim, bool keepdim) {
    return argreduce(KN_REDUCE_ARGMAX, a, dim, keepdim);
}
kn_tensor *kn_argmin(kn_tensor *a, int dim, bool keepdim) {
    return argreduce(KN_REDUCE_ARGMIN, a, dim, keepdim);
}

kn_tensor *kn__sum_to(kn_tensor *g, int ndim, const int64_t *shape) {
    if (!g) return NULL;
    if (g->ndim == ndim && !memcmp(g->shape, shape, (size_t)ndim * sizeof *shape)) return g;
    int dims[KN_MAX_DIMS], nd = 0, lead = g->ndim - ndim;
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (shape[d - lead] == 1 && g->shape[d] != 1)) dims[nd++] = d;
    kn_tensor *s = nd ? kn_sum(g, nd, dims, true) : g;
    return kn_reshape(s, ndim, shape);
}
