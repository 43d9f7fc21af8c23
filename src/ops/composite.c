/* Composites: each FUSED op of core/ops.def written once with primitives, so
 * a backend that lacks the fused kernel (or declines its arguments) still
 * runs the op on its own device. They compute what the fused kernels
 * compute, in the operands' dtype (the CPU's kernels accumulate in double,
 * so results agree to rounding), and draw the same Philox counters, so a
 * dropout keeps the same elements on every device. tests/test_backend_ops.c
 * checks each against the fused kernels on a backend that has only
 * primitives.
 *
 * Two kinds: index ops are pure view arithmetic over GATHER / SCATTER_ADD;
 * the rest wrap their views as tensors and use public ops (which resolve to
 * primitives: no composite calls a fused op, so none can recurse) inside a
 * scope with gradients off. */
#include "composite.h"
#include "backends/common/views.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------- */
kn_status kn__cx_begin(kn__cx *cx, kn_device dev) {
    cx->dev = dev;
    cx->scope = kn_scope_begin();
    cx->outer = kn__fault_context();
    kn_no_grad_begin();
    return KN_OK;
}

kn_status kn__cx_end(kn__cx *cx, kn_status s) {
    kn_no_grad_end();
    kn_scope_end(cx->scope);
    kn__fault_context_set(cx->outer);
    return s;
}

void kn__cx_fault_context(kn__cx *cx, const kn_fault_context *c) {
    (void)cx;
    kn__fault_context_set(c);
}

kn_tensor *kn__cx_wrap(kn__cx *cx, const kn_operand *v) {
    return kn_operand_present(v) ? kn__scoped(kn__wrap_view(v, cx->dev)) : NULL;
}

kn_tensor *kn__cx_wrap_as(kn__cx *cx, const kn_operand *v, int ndim, const int64_t *shape) {
    kn_tensor *t = kn__cx_wrap(cx, v);
    return t ? kn_reshape(t, ndim, shape) : NULL;
}

kn_status kn__cx_put(kn__cx *cx, const kn_operand *out, kn_tensor *val) {
    if (!kn_operand_present(out)) return KN_OK;
    if (!val) return kn_error_code() != KN_OK ? kn_error_code() : KN_ERR_INVALID;
    kn_operand v = kn__view(val);
    /* val may hold out's elements in another shape ([1, C, 1] for [C]): reshape it. */
    bool same = v.ndim == out->ndim;
    for (int d = 0; same && d < v.ndim; d++) same = v.shape[d] == out->shape[d];
    if (!same && kn_operand_numel(&v) == kn_operand_numel(out)) {
        kn_tensor *r = kn_reshape(val, out->ndim, out->shape);
        if (!r) return kn_error_code();
        v = kn__view(r);
    }
    kn_copy_args a = {.out = *out, .x = v};
    return kn__launch(KN_OP_COPY, cx->dev, &a);
}

kn_tensor *kn__cx_scalar(kn__cx *cx, double v, kn_dtype dt) { return kn_scalar(v, dt, cx->dev); }

/* Error paths only (it reads the index on the host): the first entry of index
 * outside [0, limit), skipping *skip when given, so that a composite whose
 * GATHER failed names the bad value as the fused kernel would. */
bool kn__cx_bad_index(kn__cx *cx, const kn_operand *index, int64_t limit, const int64_t *skip, int64_t *value) {
    kn_tensor *h = kn_operand_present(index) ? kn_contiguous(kn_cast(kn_to(kn__cx_wrap(cx, index), KN_CPU), KN_I64))
                                             : NULL;
    if (!h) return false;
    const int64_t *idx = (const int64_t *)kn__data(h);
    int64_t n = kn_numel(h);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = idx[i];
        if (skip && v == *skip) continue;
        if (v < 0 || v >= limit) {
            *value = v;
            return true;
        }
    }
    return false;
}

/* The dtype a uniform draw is compared in: f64 where the backend computes it
 * (the CPU compares in double), else f32. */
static kn_dtype draw_dtype(kn_device dev) {
    const kn_backend *b = kn__backend(dev.kind);
    return !b->dtypes || (b->dtypes >> KN_F64 & 1) ? KN_F64 : KN_F32;
}

kn_tensor *kn__cx_keep_mask(kn__cx *cx, int ndim, const int64_t *shape, double p, int64_t seed, int64_t offset) {
    kn_tensor *u = kn_empty(ndim, shape, draw_dtype(cx->dev), cx->dev);
    if (!u) return NULL;
    kn_random_args r = {.out = kn__view(u), .kind = KN_RANDOM_UNIFORM, .seed = seed, .offset = offset, .a = 0, .b = 1};
    if (kn__launch(KN_OP_RANDOM, cx->dev, &r) != KN_OK) return NULL;
    return kn_ge(u, kn__cx_scalar(cx, p, u->dtype));
}

kn_tensor *kn__cx_dropout(kn__cx *cx, kn_tensor *x, double p, int64_t seed, int64_t offset, kn_tensor **keep_out) {
    kn_tensor *keep = kn__cx_keep_mask(cx, x->ndim, x->shape, p, seed, offset);
    double scale = 1 - p > 0 ? 1 / (1 - p) : 0;
    if (keep_out) *keep_out = keep;
    return kn_mul(x, kn_where(keep, kn__cx_scalar(cx, scale, x->dtype), kn__cx_scalar(cx, 0, x->dtype)));
}

/* ---- index ops: views over GATHER and SCATTER_ADD ----------------------------------------- */
static kn_status index_select(kn_device dev, kn_index_select_args *a) {
    kn_gather_args g = {.out = a->out, .x = a->x, .index = kn_view_index_along(&a->index, &a->out, a->dim), .dim = a->dim};
    return kn__launch(KN_OP_GATHER, dev, &g);
}

static kn_status index_add(kn_device dev, kn_index_add_args *a) {
    kn_scatter_add_args s = {.out = a->out, .src = a->src, .index = kn_view_index_along(&a->index, &a->src, a->dim),
                             .dim = a->dim};
    return kn__launch(KN_OP_SCATTER_ADD, dev, &s);
}

/* Names a bad code of table k as the fused kernel does, when that is why s failed. */
static kn_status code_error(kn_device dev, const kn_operand *codes, int64_t k, int64_t rows, kn_status s) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    kn_operand col = kn_view_code_column(codes, k, 1);
    int64_t v;
    if (kn__cx_bad_index(&cx, &col, rows, NULL, &v))
        s = kn__err(KN_ERR_INVALID, "embedding_cat: index %lld is out of range for table %lld of %lld rows",
                    (long long)v, (long long)k, (long long)rows);
    return kn__cx_end(&cx, s);
}

static kn_status embedding_cat(kn_device dev, kn_embedding_cat_args *a) {
    int64_t off = 0;
    for (int64_t k = 0; k < a->n_tables; k++) {
        int64_t D = a->tables[k].shape[1];
        kn_gather_args g = {.out = kn_view_columns(&a->out, off, D), .x = a->tables[k], .index = kn_view_code_column(&a->codes, k, D),
                            .dim = 0};
        kn_status s = kn__launch(KN_OP_GATHER, dev, &g);
        if (s != KN_OK) return code_error(dev, &a->codes, k, a->tables[k].shape[0], s);
        off += D;
    }
    return KN_OK;
}

static kn_status embedding_cat_backward(kn_device dev, kn_embedding_cat_backward_args *a) {
    int64_t off = 0;
    for (int64_t k = 0; k < a->n_tables; k++) {
        int64_t D = a->grads[k].shape[1];
        kn_fill_args z = {.out = a->grads[k], .value = 0};
        kn_scatter_add_args s = {.out = a->grads[k], .src = kn_view_columns(&a->grad, off, D),
                                 .index = kn_view_code_column(&a->codes, k, D), .dim = 0};
        kn_status st = kn__launch(KN_OP_FILL, dev, &z);
        if (st == KN_OK) st = kn__launch(KN_OP_SCATTER_ADD, dev, &s);
        if (st != KN_OK) return code_error(dev, &a->codes, k, a->grads[k].shape[0], st);
        off += D;
    }
    return KN_OK;
}

/* ---- dropout and the optimizers ------------------------------------------------------------- */
static kn_status dropout(kn_device dev, kn_dropout_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    kn_tensor *x = kn__cx_wrap(&cx, &a->x), *keep = NULL;
    kn_tensor *y = x ? kn__cx_dropout(&cx, x, a->p, a->seed, a->offset, &keep) : NULL;
    kn_status s = kn__cx_put(&cx, &a->out, y);
    if (s == KN_OK) s = kn__cx_put(&cx, &a->mask, keep ? kn_cast(keep, KN_U8) : NULL);
    return kn__cx_end(&cx, s);
}

static kn_status adam(kn_device dev, kn_adam_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    kn_tensor *p = kn__cx_wrap(&cx, &a->param), *m = kn__cx_wrap(&cx, &a->m), *v = kn__cx_wrap(&cx, &a->v);
    kn_tensor *g = kn__cx_wrap(&cx, &a->grad), *t = kn__cx_wrap(&cx, &a->step);
    kn_status s = p && m && v && g && t ? KN_OK : kn_error_code();
    if (s == KN_OK) {
        kn_dtype dt = p->dtype;
        g = kn_cast(g, dt);
        if (!a->decoupled && a->weight_decay != 0) g = kn_add(g, kn_mul_scalar(p, a->weight_decay));
        if (a->decoupled) p = kn_mul_scalar(p, 1 - a->lr * a->weight_decay);
        kn_tensor *m1 = kn_add(kn_mul_scalar(m, a->beta1), kn_mul_scalar(g, 1 - a->beta1));
        kn_tensor *v1 = kn_add(kn_mul_scalar(v, a->beta2), kn_mul_scalar(kn_mul(g, g), 1 - a->beta2));
        /* Bias corrections from the step on the device (a replayed graph reads it
         * anew), in f64 for f64 parameters, else f32 (a backend may lack f64). */
        kn_dtype ct = dt == KN_F64 ? KN_F64 : KN_F32;
        kn_tensor *tf = kn_cast(t, ct);
        kn_tensor *bc1 = kn_rsub_scalar(kn_pow(kn__cx_scalar(&cx, a->beta1, ct), tf), 1);
        kn_tensor *bc2 = kn_rsub_scalar(kn_pow(kn__cx_scalar(&cx, a->beta2, ct), tf), 1);
        kn_tensor *denom = kn_add_scalar(kn_div(kn_sqrt(v1), kn_cast(kn_sqrt(bc2), dt)), a->eps);
        kn_tensor *step = kn_cast(kn_mul_scalar(kn_pow_scalar(bc1, -1), a->lr), dt); /* lr / bc1 */
        kn_tensor *upd = kn_div(kn_mul(step, m1), denom);
        kn_tensor *p1 = kn_sub(p, upd);
        s = kn__cx_put(&cx, &a->m, m1);
        if (s == KN_OK) s = kn__cx_put(&cx, &a->v, v1);
        if (s == KN_OK) s = kn__cx_put(&cx, &a->param, p1);
    }
    return kn__cx_end(&cx, s);
}

static kn_status sgd(kn_device dev, kn_sgd_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    kn_tensor *p = kn__cx_wrap(&cx, &a->param), *g = kn__cx_wrap(&cx, &a->grad);
    kn_status s = p && g ? KN_OK : kn_error_code();
    if (s == KN_OK) {
        kn_tensor *d = kn_cast(g, p->dtype);
        if (a->weight_decay != 0) d = kn_add(d, kn_mul_scalar(p, a->weight_decay));
        if (kn_operand_present(&a->buf)) {
            kn_tensor *b = a->fresh ? d
                                    : kn_add(kn_mul_scalar(kn__cx_wrap(&cx, &a->buf), a->momentum),
                                             kn_mul_scalar(d, 1 - a->dampening));
            s = kn__cx_put(&cx, &a->buf, b);
            d = a->nesterov ? kn_add(d, kn_mul_scalar(b, a->momentum)) : b;
        }
        if (s == KN_OK) s = kn__cx_put(&cx, &a->param, kn_sub(p, kn_mul_scalar(d, a->lr)));
    }
    return kn__cx_end(&cx, s);
}

/* ---- the table ------------------------------------------------------------------------------- */
kn_status kn__composite(kn_op op, kn_device dev, void *args) {
    switch (op) {
    case KN_OP_INDEX_SELECT: return index_select(dev, args);
    case KN_OP_INDEX_ADD: return index_add(dev, args);
    case KN_OP_EMBEDDING_CAT: return embedding_cat(dev, args);
    case KN_OP_EMBEDDING_CAT_BACKWARD: return embedding_cat_backward(dev, args);
    case KN_OP_DROPOUT: return dropout(dev, args);
    case KN_OP_ADAM: return adam(dev, args);
    case KN_OP_SGD: return sgd(dev, args);
    case KN_OP_SOFTMAX: return kn__composite_softmax(dev, args);
    case KN_OP_SOFTMAX_BACKWARD: return kn__composite_softmax_backward(dev, args);
    case KN_OP_NLL: return kn__composite_nll(dev, args);
    case KN_OP_NLL_BACKWARD: return kn__composite_nll_backward(dev, args);
    case KN_OP_CROSS_ENTROPY: return kn__composite_cross_entropy(dev, args);
    case KN_OP_CROSS_ENTROPY_BACKWARD: return kn__composite_cross_entropy_backward(dev, args);
    case KN_OP_BATCH_NORM: return kn__composite_batch_norm(dev, args);
    case KN_OP_BATCH_NORM_BACKWARD: return kn__composite_batch_norm_backward(dev, args);
    case KN_OP_LAYER_NORM: return kn__composite_layer_norm(dev, args);
    case KN_OP_LAYER_NORM_BACKWARD: return kn__composite_layer_norm_backward(dev, args);
    case KN_OP_CONV2D:
    case KN_OP_CONV2D_BACKWARD:
    case KN_OP_MAX_POOL2D:
    case KN_OP_MAX_POOL2D_BACKWARD:
    case KN_OP_AVG_POOL2D:
    case KN_OP_AVG_POOL2D_BACKWARD: return kn__composite_vision(op, dev, args);
    case KN_OP_FFT: return kn__composite_fft(dev, args);
    case KN_OP_RFFT: return kn__composite_rfft(dev, args);
    case KN_OP_IRFFT: return kn__composite_irfft(dev, args);
    default:
        return kn__err(KN_ERR_UNSUPPORTED, "%s: no kernel on %s and no composite", kn__op_call_name(op, args),
                       kn_device_str(dev));
    }
}
