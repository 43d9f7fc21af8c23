/* Composites of the fused neural-network ops: softmax, the losses and the
 * norms (see composite.c for the rules they follow). */
#include "composite.h"

/* ---- softmax -------------------------------------------------------------------------------- */
kn_status kn__composite_softmax(kn_device dev, kn_softmax_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int d = (int)a->dim;
    kn_tensor *x = kn__cx_wrap(&cx, &a->x);
    kn_tensor *z = kn_sub(x, kn_max(x, 1, &d, true)); /* shifted: exp cannot overflow */
    kn_tensor *e = kn_exp(z), *s = kn_sum(e, 1, &d, true);
    kn_tensor *y = a->log ? kn_sub(z, kn_log(s)) : kn_div(e, s);
    return kn__cx_end(&cx, kn__cx_put(&cx, &a->out, y));
}

kn_status kn__composite_softmax_backward(kn_device dev, kn_softmax_backward_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int d = (int)a->dim;
    kn_tensor *g = kn__cx_wrap(&cx, &a->grad), *y = kn__cx_wrap(&cx, &a->y);
    kn_tensor *gx = a->log ? kn_sub(g, kn_mul(kn_exp(y), kn_sum(g, 1, &d, true)))
                           : kn_mul(y, kn_sub(g, kn_sum(kn_mul(g, y), 1, &d, true)));
    return kn__cx_end(&cx, kn__cx_put(&cx, &a->out, gx));
}

/* ---- negative log-likelihood and cross-entropy --------------------------------------------------- */
typedef struct {
    kn_tensor *valid; /* [N] bool: the target is not ignore_index */
    kn_tensor *index; /* [N, 1] the target, 0 where ignored */
    kn_tensor *wrow;  /* [N] the row's class weight, 0 where ignored */
    kn_tensor *w;     /* [1, C] class weights, or NULL */
} targets;

static targets read_targets(kn__cx *cx, const kn_operand *target, const kn_operand *weight, int64_t ignore_index,
                            kn_dtype dt, int64_t N) {
    targets t = {0};
    kn_tensor *tg = kn__cx_wrap(cx, target);
    t.valid = kn_ne(tg, kn__cx_scalar(cx, (double)ignore_index, tg ? tg->dtype : KN_I64));
    kn_tensor *safe = kn_where(t.valid, tg, kn_zeros_like(tg));
    t.index = kn_unsqueeze(safe, 1);
    kn_tensor *w = kn__cx_wrap(cx, weight), *wt;
    if (w) {
        w = kn_cast(w, dt);
        wt = kn_index_select(w, 0, safe);
        t.w = kn_unsqueeze(w, 0);
    } else {
        wt = kn_ones(1, &N, dt, cx->dev);
    }
    t.wrow = kn_where(t.valid, wt, kn__cx_scalar(cx, 0, dt));
    return t;
}

/* A bad target, found by a device after the composite returned, is named as the fused kernels name it. */
static const kn_fault_context nll_faults = {"nll_loss", "target", "classes"},
                              ce_faults = {"cross_entropy", "target", "classes"};

/* Names a bad target as the fused kernels do, when that is why s failed. */
static kn_status target_error(kn__cx *cx, const char *op, const kn_operand *target, int64_t C, int64_t ignore_index,
                              kn_status s) {
    int64_t v;
    if (s != KN_OK && kn__cx_bad_index(cx, target, C, &ignore_index, &v))
        s = kn__err(KN_ERR_INVALID, "%s: target %lld is out of range for %lld classes", op, (long long)v,
                    (long long)C);
    return s;
}

/* Each row's loss [N] of log-probabilities lp [N, C]. */
static kn_tensor *nll_rows(kn__cx *cx, kn_tensor *lp, const targets *t, double s) {
    int64_t C = lp->shape[1];
    int one = 1;
    kn_tensor *lpt = kn_squeeze(kn_gather(lp, 1, t->index), 1);
    kn_tensor *loss = kn_mul(kn_mul_scalar(t->wrow, -(1 - s)), lpt);
    if (s != 0) {
        kn_tensor *acc = kn_sum(t->w ? kn_mul(t->w, lp) : lp, 1, &one, false);
        loss = kn_sub(loss, kn_mul_scalar(acc, s / (double)C));
    }
    /* 0 * -inf would be NaN: ignored rows are exactly 0. */
    return kn_where(t->valid, loss, kn__cx_scalar(cx, 0, lp->dtype));
}

/* coef [N, C]: loss_n = -sum_c coef[n, c] lp[n, c]. */
static kn_tensor *nll_coef(kn__cx *cx, const targets *t, int64_t N, int64_t C, kn_dtype dt, double s) {
    int64_t shape[2] = {N, C};
    kn_tensor *coef = kn_zeros(2, shape, dt, cx->dev);
    kn_tensor *src = kn_contiguous(kn_unsqueeze(kn_mul_scalar(t->wrow, 1 - s), 1));
    kn_tensor *idx = kn_contiguous(t->index);
    if (!coef || !src || !idx) return NULL;
    kn_scatter_add_args sa = {.out = kn__view(coef), .src = kn__view(src), .index = kn__view(idx), .dim = 1};
    if (kn__launch(KN_OP_SCATTER_ADD, cx->dev, &sa) != KN_OK) return NULL;
    if (s != 0) {
        kn_tensor *valid = kn_unsqueeze(kn_cast(t->valid, dt), 1);
        kn_tensor *spread = kn_mul_scalar(t->w ? kn_mul(valid, t->w) : valid, s / (double)C);
        coef = kn_add(coef, spread);
    }
    return coef;
}

/* Ignored rows' gradients are exactly 0, as the fused kernels write them:
 * when every row is ignored, a mean's gradient is inf (0 / 0 weight) and
 * inf * 0 would make them NaN. */
static kn_tensor *zero_ignored(kn__cx *cx, const targets *t, kn_tensor *gx) {
    return gx ? kn_where(kn_unsqueeze(t->valid, 1), gx, kn__cx_scalar(cx, 0, kn_dtype_of(gx))) : NULL;
}

kn_status kn__composite_nll(kn_device dev, kn_nll_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    kn__cx_fault_context(&cx, &nll_faults);
    kn_tensor *lp = kn__cx_wrap(&cx, &a->logp);
    targets t = read_targets(&cx, &a->target, &a->weight, a->ignore_index, a->logp.dtype, a->logp.shape[0]);
    kn_status s = kn__cx_put(&cx, &a->loss, nll_rows(&cx, lp, &t, a->smoothing));
    if (s == KN_OK) s = kn__cx_put(&cx, &a->row_weight, t.wrow);
    return kn__cx_end(&cx, target_error(&cx, "nll_loss", &a->target, a->logp.shape[1], a->ignore_index, s));
}

kn_status kn__composite_nll_backward(kn_device dev, kn_nll_backward_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    kn__cx_fault_context(&cx, &nll_faults);
    int64_t N = a->out.shape[0], C = a->out.shape[1];
    targets t = read_targets(&cx, &a->target, &a->weight, a->ignore_index, a->out.dtype, N);
    kn_tensor *g = kn_unsqueeze(kn_cast(kn__cx_wrap(&cx, &a->grad), a->out.dtype), 1);
    kn_tensor *gx = kn_neg(kn_mul(g, nll_coef(&cx, &t, N, C, a->out.dtype, a->smoothing)));
    kn_status s = kn__cx_put(&cx, &a->out, zero_ignored(&cx, &t, gx));
    return kn__cx_end(&cx, target_error(&cx, "nll_loss", &a->target, C, a->ignore_index, s));
}

kn_status kn__composite_cross_entropy(kn_device dev, kn_cross_entropy_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    kn__cx_fault_context(&cx, &ce_faults);
    int one = 1;
    kn_tensor *x = kn__cx_wrap(&cx, &a->logits);
    kn_tensor *m = kn_max(x, 1, &one, true);
    kn_tensor *lse = kn_add(m, kn_log(kn_sum(kn_exp(kn_sub(x, m)), 1, &one, true))); /* [N, 1] */
    targets t = read_targets(&cx, &a->target, &a->weight, a->ignore_index, a->logits.dtype, a->logits.shape[0]);
    kn_tensor *rows = nll_rows(&cx, kn_sub(x, lse), &t, a->smoothing);
    kn_tensor *wsum = kn_sum_all(t.wrow), *loss = rows;
    if (a->reduction == KN_REDUCTION_MEAN) loss = kn_div(kn_sum_all(rows), wsum);
    else if (a->reduction == KN_REDUCTION_SUM) loss = kn_sum_all(rows);
    kn_status s = kn__cx_put(&cx, &a->loss, loss);
    if (s == KN_OK) s = kn__cx_put(&cx, &a->lse, lse);
    if (s == KN_OK) s = kn__cx_put(&cx, &a->weight_sum, wsum);
    s = target_error(&cx, "cross_entropy", &a->target, a->logits.shape[1], a->ignore_index, s);
    return kn__cx_end(&cx, s);
}

kn_status kn__composite_cross_entropy_backward(kn_device dev, kn_cross_entropy_backward_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    kn__cx_fault_context(&cx, &ce_faults);
    int one = 1;
    int64_t N = a->logits.shape[0], C = a->logits.shape[1];
    kn_dtype dt = a->out.dtype;
    kn_tensor *x = kn__cx_wrap(&cx, &a->logits), *g = kn_cast(kn__cx_wrap(&cx, &a->grad), dt);
    kn_tensor *lse = kn__cx_wrap_as(&cx, &a->lse, 2, (int64_t[]){N, 1});
    targets t = read_targets(&cx, &a->target, &a->weight, a->ignore_index, dt, N);
    /* The gradient of each row's loss: shared by all rows unless reduction is none. */
    if (a->reduction == KN_REDUCTION_MEAN) g = kn_div(g, kn_cast(kn__cx_wrap(&cx, &a->weight_sum), dt));
    if (a->reduction == KN_REDUCTION_NONE) g = kn_unsqueeze(g, 1);
    kn_tensor *coef = nll_coef(&cx, &t, N, C, dt, a->smoothing);
    kn_tensor *p = kn_exp(kn_sub(x, lse));
    kn_tensor *gx = kn_mul(g, kn_sub(kn_mul(p, kn_sum(coef, 1, &one, true)), coef));
    kn_status s = target_error(&cx, "cross_entropy", &a->target, C, a->ignore_index,
                               kn__cx_put(&cx, &a->out, zero_ignored(&cx, &t, gx)));
    return kn__cx_end(&cx, s);
}

/* ---- batch norm ------------------------------------------------------------------------------- */
/* The norms' statistics are sums that cancel: float16 and bfloat16 compute
 * in float32 (as the fused kernels do), and the results are stored back. */
static kn_dtype norm_type(kn_dtype dt) { return dt == KN_F16 || dt == KN_BF16 ? KN_F32 : dt; }

/* A [C] vector seen as [1, C, 1], in dtype dt (NULL when absent). */
static kn_tensor *per_channel(kn__cx *cx, const kn_operand *v, kn_dtype dt) {
    if (!kn_operand_present(v)) return NULL;
    return kn_cast(kn__cx_wrap_as(cx, v, 3, (int64_t[]){1, v->shape[0], 1}), dt);
}

kn_status kn__composite_batch_norm(kn_device dev, kn_batch_norm_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    const int dims[2] = {0, 2};
    kn_dtype dt = norm_type(a->x.dtype);
    kn_tensor *x = kn_cast(kn__cx_wrap(&cx, &a->x), dt);
    int64_t M = a->x.shape[0] * a->x.shape[2];
    kn_tensor *mean, *invstd;
    kn_status s = KN_OK;
    if (a->training) {
        mean = kn_mean(x, 2, dims, true);
        kn_tensor *var = kn_var(x, 2, dims, 0, true);
        invstd = kn_pow_scalar(kn_add_scalar(var, a->eps), -0.5);
        if (kn_operand_present(&a->running_mean)) {
            kn_tensor *rm = per_channel(&cx, &a->running_mean, dt);
            s = kn__cx_put(&cx, &a->running_mean,
                           kn_add(kn_mul_scalar(rm, 1 - a->momentum), kn_mul_scalar(mean, a->momentum)));
        }
        if (s == KN_OK && kn_operand_present(&a->running_var)) {
            /* The running variance is the unbiased one, as in PyTorch. */
            kn_tensor *rv = per_channel(&cx, &a->running_var, dt);
            kn_tensor *unbiased = M > 1 ? kn_mul_scalar(var, (double)M / (double)(M - 1)) : var;
            s = kn__cx_put(&cx, &a->running_var,
                           kn_add(kn_mul_scalar(rv, 1 - a->momentum), kn_mul_scalar(unbiased, a->momentum)));
        }
        if (s == KN_OK && kn_operand_present(&a->count))
            s = kn__cx_put(&cx, &a->count, kn_add_scalar(kn__cx_wrap(&cx, &a->count), 1));
    } else {
        mean = per_channel(&cx, &a->running_mean, dt);
        invstd = kn_pow_scalar(kn_add_scalar(per_channel(&cx, &a->running_var, dt), a->eps), -0.5);
    }
    kn_tensor *y = kn_mul(kn_sub(x, mean), invstd);
    kn_tensor *w = per_channel(&cx, &a->weight, dt), *b = per_channel(&cx, &a->bias, dt);
    if (w) y = kn_mul(y, w);
    if (b) y = kn_add(y, b);
    if (a->p > 0) y = kn__cx_dropout(&cx, y, a->p, a->seed, a->offset, NULL);
    if (s == KN_OK) s = kn__cx_put(&cx, &a->y, y);
    if (s == KN_OK) s = kn__cx_put(&cx, &a->mean, mean);
    if (s == KN_OK) s = kn__cx_put(&cx, &a->invstd, invstd);
    return kn__cx_end(&cx, s);
}

kn_status kn__composite_batch_norm_backward(kn_device dev, kn_batch_norm_backward_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    const int dims[2] = {0, 2};
    kn_dtype dt = norm_type(a->x.dtype);
    kn_tensor *g = kn_cast(kn__cx_wrap(&cx, &a->grad), dt), *x = kn_cast(kn__cx_wrap(&cx, &a->x), dt);
    if (a->p > 0) g = kn__cx_dropout(&cx, g, a->p, a->seed, a->offset, NULL); /* the same mask as forward */
    kn_tensor *mean = per_channel(&cx, &a->mean, dt), *invstd = per_channel(&cx, &a->invstd, dt);
    kn_tensor *w = per_channel(&cx, &a->weight, dt);
    kn_tensor *xhat = kn_mul(kn_sub(x, mean), invstd);
    kn_status s = kn__cx_put(&cx, &a->grad_bias, kn_sum(g, 2, dims, false));
    if (s == KN_OK) s = kn__cx_put(&cx, &a->grad_weight, kn_sum(kn_mul(g, xhat), 2, dims, false));
    if (s == KN_OK && kn_operand_present(&a->grad_x)) {
        kn_tensor *scale = w ? kn_mul(w, invstd) : invstd, *gx;
        if (a->training)
            gx = kn_mul(scale, kn_sub(kn_sub(g, kn_mean(g, 2, dims, true)),
                                      kn_mul(xhat, kn_mean(kn_mul(g, xhat), 2, dims, true))));
        else
            gx = kn_mul(g, scale);
        if (a->relu) gx = kn_where(kn_gt(x, kn__cx_scalar(&cx, 0, dt)), gx, kn__cx_scalar(&cx, 0, dt));
        s = kn__cx_put(&cx, &a->grad_x, gx);
        if (s == KN_OK) s = kn__cx_put(&cx, &a->grad_pre_bias, kn_sum(gx, 2, dims, false));
    }
    return kn__cx_end(&cx, s);
}

/* ---- layer norm ---------------------------------------------------------------------------------- */
static kn_tensor *row_vector(kn__cx *cx, const kn_operand *v, kn_dtype dt, int64_t n) {
    return kn_operand_present(v) ? kn_cast(kn__cx_wrap_as(cx, v, 2, (int64_t[]){1, n}), dt) : NULL;
}

kn_status kn__composite_layer_norm(kn_device dev, kn_layer_norm_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int one = 1;
    int64_t n = a->n, R = n ? kn_operand_numel(&a->x) / n : 0;
    kn_dtype dt = norm_type(a->x.dtype);
    kn_tensor *x = kn_cast(kn__cx_wrap_as(&cx, &a->x, 2, (int64_t[]){R, n}), dt);
    kn_tensor *mean = kn_mean(x, 1, &one, true);
    kn_tensor *invstd = kn_pow_scalar(kn_add_scalar(kn_var(x, 1, &one, 0, true), a->eps), -0.5);
    kn_tensor *y = kn_mul(kn_sub(x, mean), invstd);
    kn_tensor *w = row_vector(&cx, &a->weight, dt, n), *b = row_vector(&cx, &a->bias, dt, n);
    if (w) y = kn_mul(y, w);
    if (b) y = kn_add(y, b);
    kn_status s = kn__cx_put(&cx, &a->y, y);
    if (s == KN_OK) s = kn__cx_put(&cx, &a->mean, mean);
    if (s == KN_OK) s = kn__cx_put(&cx, &a->invstd, invstd);
    return kn__cx_end(&cx, s);
}

kn_status kn__composite_layer_norm_backward(kn_device dev, kn_layer_norm_backward_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int zero = 0, one = 1;
    int64_t n = a->n, R = n ? kn_operand_numel(&a->x) / n : 0;
    kn_dtype dt = norm_type(a->x.dtype);
    kn_tensor *x = kn_cast(kn__cx_wrap_as(&cx, &a->x, 2, (int64_t[]){R, n}), dt);
    kn_tensor *g = kn_cast(kn__cx_wrap_as(&cx, &a->grad, 2, (int64_t[]){R, n}), dt);
    kn_tensor *mean = kn_cast(kn__cx_wrap_as(&cx, &a->mean, 2, (int64_t[]){R, 1}), dt);
    kn_tensor *invstd = kn_cast(kn__cx_wrap_as(&cx, &a->invstd, 2, (int64_t[]){R, 1}), dt);
    kn_tensor *w = row_vector(&cx, &a->weight, dt, n);
    kn_tensor *xhat = kn_mul(kn_sub(x, mean), invstd);
    kn_status s = kn__cx_put(&cx, &a->grad_bias, kn_sum(g, 1, &zero, false));
    if (s == KN_OK) s = kn__cx_put(&cx, &a->grad_weight, kn_sum(kn_mul(g, xhat), 1, &zero, false));
    if (s == KN_OK && kn_operand_present(&a->grad_x)) {
        kn_tensor *gh = w ? kn_mul(g, w) : g;
        kn_tensor *gx = kn_mul(invstd, kn_sub(kn_sub(gh, kn_mean(gh, 1, &one, true)),
                                              kn_mul(xhat, kn_mean(kn_mul(gh, xhat), 1, &one, true))));
        s = kn__cx_put(&cx, &a->grad_x, gx);
    }
    return kn__cx_end(&cx, s);
}
