/* Elementwise losses: mse, l1, huber, smooth_l1, binary cross-entropy on
 * probabilities and on logits. Each is PyTorch's functional loss of the same
 * name, with its reduction in kn_loss_opts (nll_loss and cross_entropy, which
 * take the same options, are in nn_functional.c).
 *
 * They are compositions of public ops, so autograd and every device come for
 * free; only bce_loss has its own backward rule, PyTorch's, which stays
 * finite where a probability is exactly 0 or 1 (the composition's would be
 * 0 * inf there). */
#include "ops_internal.h"

#include <math.h>
#include <string.h>

bool kn__reduction_check(const char *op, kn_reduction r) {
    if (r == KN_REDUCTION_MEAN || r == KN_REDUCTION_SUM || r == KN_REDUCTION_NONE) return true;
    kn__err(KN_ERR_INVALID, "%s: invalid reduction %d", op, (int)r);
    return false;
}

kn_tensor *kn__reduce_loss(kn_tensor *loss, kn_reduction r) {
    if (r == KN_REDUCTION_SUM) return kn_sum_all(loss);
    if (r == KN_REDUCTION_MEAN) return kn_mean_all(loss);
    return loss;
}

/* What every elementwise loss checks: inputs present, on one device, of one
 * shape (no broadcasting: [N, 1] against [N] is almost always a bug), a valid
 * reduction, and no option that only another loss uses (it would be ignored
 * silently). uses: the options this loss reads. */
enum { USES_WEIGHT = 1, USES_POS_WEIGHT = 2 };
static bool loss_check(const char *op, kn_tensor *input, kn_tensor *target, const kn_loss_opts *o, unsigned uses) {
    if (!input || !target) return kn__err_null(op), false;
    kn_tensor *all[4] = {input, target, o->weight, o->pos_weight};
    if (!kn__same_device(op, 4, all) || !kn__reduction_check(op, o->reduction)) return false;
    char a[128], b[128];
    if (input->ndim != target->ndim || memcmp(input->shape, target->shape, (size_t)input->ndim * sizeof(int64_t))) {
        kn__err(KN_ERR_SHAPE, "%s: input %s and target %s must have the same shape", op,
                kn__shape_str(input->ndim, input->shape, a, sizeof a),
                kn__shape_str(target->ndim, target->shape, b, sizeof b));
        return false;
    }
    const char *unused = o->weight && !(uses & USES_WEIGHT)           ? "weight"
                         : o->pos_weight && !(uses & USES_POS_WEIGHT) ? "pos_weight"
                         : o->label_smoothing != 0                    ? "label_smoothing"
                                                                      : NULL;
    if (unused) {
        kn__err(KN_ERR_INVALID, "%s: option %s is not used by this loss (leave it at its default)", op, unused);
        return false;
    }
    /* A weight broadcasts to the input's shape, never the other way. */
    kn_tensor *ws[2] = {o->weight, o->pos_weight};
    const char *wn[2] = {"weight", "pos_weight"};
    for (int k = 0; k < 2; k++) {
        if (!ws[k]) continue;
        int64_t shape[KN_MAX_DIMS];
        int nd = kn__broadcast(op, ws[k]->ndim, ws[k]->shape, input->ndim, input->shape, shape);
        if (nd < 0) return false;
        if (nd != input->ndim || memcmp(shape, input->shape, (size_t)nd * sizeof(int64_t))) {
            kn__err(KN_ERR_SHAPE, "%s: %s %s does not broadcast to the input's shape %s", op, wn[k],
                    kn__shape_str(ws[k]->ndim, ws[k]->shape, a, sizeof a),
                    kn__shape_str(input->ndim, input->shape, b, sizeof b));
            return false;
        }
    }
    return true;
}

static kn_loss_opts opts_or_default(const kn_loss_opts *opts) { return opts ? *opts : kn_loss_opts_default(); }

/* input - target in a floating dtype (integer inputs compute in float32). */
static kn_tensor *diff(kn_tensor *input, kn_tensor *target) {
    kn_tensor *d = kn_sub(input, target);
    return d && !kn_dtype_is_float(kn_dtype_of(d)) ? kn_cast(d, KN_F32) : d;
}

/* Runs the loss body inside a scope; the reduced result outlives it. */
#define LOSS_BODY(r, o, expr)                          \
    do {                                               \
        kn_scope s_ = kn_scope_begin();                \
        r = kn__reduce_loss((expr), (o).reduction);    \
        kn_keep(r);                                    \
        kn_scope_end(s_);                              \
    } while (0)

/* ---- regression ------------------------------------------------------------------------------- */
kn_tensor *kn_mse_loss_ex(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts) {
    kn_loss_opts o = opts_or_default(opts);
    if (!loss_check("mse_loss", input, target, &o, 0)) return NULL;
    kn_scope s = kn_scope_begin();
    kn_tensor *d = diff(input, target);
    kn_tensor *r = kn__reduce_loss(kn_mul(d, d), o.reduction);
    kn_keep(r);
    kn_scope_end(s);
    return r;
}

kn_tensor *kn_mse_loss(kn_tensor *input, kn_tensor *target, kn_reduction reduction) {
    kn_loss_opts o = kn_loss_opts_default();
    o.reduction = reduction;
    return kn_mse_loss_ex(input, target, &o);
}

kn_tensor *kn_l1_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts) {
    kn_loss_opts o = opts_or_default(opts);
    if (!loss_check("l1_loss", input, target, &o, 0)) return NULL;
    kn_tensor *r;
    LOSS_BODY(r, o, kn_abs(diff(input, target)));
    return r;
}

/* |d| < t ? a * d^2 : b * (|d| - t / 2): huber (a = 1/2, b = t = delta) and
 * smooth_l1 (a = 1 / (2 beta), b = 1, t = beta). */
static kn_tensor *piecewise(kn_tensor *d, double t, double a, double b) {
    kn_tensor *ad = kn_abs(d);
    if (!ad) return NULL;
    kn_tensor *quad = kn_mul_scalar(kn_mul(d, d), a);
    kn_tensor *lin = kn_mul_scalar(kn_add_scalar(ad, -t / 2), b);
    return kn_where(kn_lt(ad, kn_scalar(t, kn_dtype_of(ad), kn_device_of(ad))), quad, lin);
}

kn_tensor *kn_huber_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts) {
    kn_loss_opts o = opts_or_default(opts);
    if (!loss_check("huber_loss", input, target, &o, 0)) return NULL;
    if (!(o.delta > 0) || isinf(o.delta)) {
        kn__err(KN_ERR_INVALID, "huber_loss: delta must be positive and finite, got %g", o.delta);
        return NULL;
    }
    kn_tensor *r;
    LOSS_BODY(r, o, piecewise(diff(input, target), o.delta, 0.5, o.delta));
    return r;
}

kn_tensor *kn_smooth_l1_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts) {
    kn_loss_opts o = opts_or_default(opts);
    if (!loss_check("smooth_l1_loss", input, target, &o, 0)) return NULL;
    if (!(o.beta >= 0) || isinf(o.beta)) {
        kn__err(KN_ERR_INVALID, "smooth_l1_loss: beta must be >= 0 and finite, got %g", o.beta);
        return NULL;
    }
    kn_tensor *r;
    if (o.beta == 0) LOSS_BODY(r, o, kn_abs(diff(input, target))); /* PyTorch: beta 0 is l1_loss */
    else LOSS_BODY(r, o, piecewise(diff(input, target), o.beta, 0.5 / o.beta, 1));
    return r;
}

/* ---- binary cross-entropy ------------------------------------------------------------------------ */
/* The floating dtype of a probability or logit input. */
static bool float_input(const char *op, kn_tensor *input) {
    if (kn_dtype_is_float(kn_dtype_of(input))) return true;
    kn__err(KN_ERR_DTYPE, "%s: input must be floating point, got %s", op, kn_dtype_name(kn_dtype_of(input)));
    return false;
}

/* saved[0] x, [1] y (x's dtype), [2] the weight (x's dtype) or absent. */
static kn_status bce_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *x = n->saved[0], *y = n->saved[1], *w = n->n_saved > 2 ? n->saved[2] : NULL;
    kn_dtype dt = kn_dtype_of(x);
    kn_tensor *gw = w ? kn_mul(kn_cast(g, dt), w) : kn_cast(g, dt);
    if (n->needs[0]) {
        /* PyTorch's: g w (x - y) / max(x (1 - x), eps), finite at x = 0 and 1;
         * its eps is the float 1e-12 (in every dtype). */
        kn_tensor *den = kn_clamp(kn_mul(x, kn_rsub_scalar(x, 1)), (double)1e-12f, INFINITY);
        gin[0] = kn_div(kn_mul(gw, kn_sub(x, y)), den);
        if (!gin[0]) return kn_error_code();
    }
    if (n->needs[1]) {
        /* The derivative of the clamped loss: finite where x is 0 or 1
         * (PyTorch's, of unclamped logs, is infinite there). */
        kn_tensor *lx = kn_clamp(kn_log(x), -100, INFINITY);
        kn_tensor *l1x = kn_clamp(kn_log(kn_rsub_scalar(x, 1)), -100, INFINITY);
        gin[1] = kn_mul(gw, kn_sub(l1x, lx));
        if (!gin[1]) return kn_error_code();
    }
    return KN_OK;
}

kn_tensor *kn_bce_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts) {
    const char *op = "bce_loss";
    kn_loss_opts o = opts_or_default(opts);
    if (!loss_check(op, input, target, &o, USES_WEIGHT) || !float_input(op, input)) return NULL;
    kn_dtype dt = kn_dtype_of(input);
    kn_scope s = kn_scope_begin();
    /* The elementwise loss as one tape node, then the reduction (recorded as usual). */
    kn_no_grad_begin();
    kn_tensor *x = kn_detach(input), *y = kn_cast(kn_detach(target), dt);
    kn_tensor *w = o.weight ? kn_cast(kn_detach(o.weight), dt) : NULL;
    /* log clamped at -100, as PyTorch, so a probability of 0 or 1 costs 100, not inf. */
    kn_tensor *lx = kn_clamp(kn_log(x), -100, INFINITY);
    kn_tensor *l1x = kn_clamp(kn_log(kn_rsub_scalar(x, 1)), -100, INFINITY);
    kn_tensor *loss = kn_neg(kn_add(kn_mul(y, kn_sub(lx, l1x)), l1x)); /* -(y lx + (1 - y) l1x) */
    if (w) loss = kn_mul(loss, w);
    kn_no_grad_end();
    kn_tensor *r = NULL;
    if (loss && (!o.weight || w)) {
        kn_tensor *ins[2] = {input, target};
        kn_node *n = kn__record(loss, op, bce_backward, 2, ins, 0);
        if (n) {
            kn__save(n, 0, x);
            kn__save(n, 1, y);
            if (w) kn__save(n, 2, w);
        }
        r = kn__reduce_loss(loss, o.reduction);
    }
    kn_keep(r);
    kn_scope_end(s);
    return r;
}

kn_tensor *kn_bce_with_logits_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts) {
    const char *op = "bce_with_logits_loss";
    kn_loss_opts o = opts_or_default(opts);
    if (!loss_check(op, input, target, &o, USES_WEIGHT | USES_POS_WEIGHT) || !float_input(op, input)) return NULL;
    kn_dtype dt = kn_dtype_of(input);
    kn_tensor *r;
    kn_scope s = kn_scope_begin();
    /* -(p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))) = (1 - y) x + (1 + (p - 1) y) softplus(-x):
     * softplus never overflows, and its gradient is a sigmoid. */
    kn_tensor *y = kn_cast(target, dt);
    kn_tensor *sp = kn_softplus(kn_neg(input));
    kn_tensor *lw = o.pos_weight ? kn_add_scalar(kn_mul(kn_add_scalar(kn_cast(o.pos_weight, dt), -1), y), 1) : NULL;
    kn_tensor *loss = kn_add(kn_mul(kn_rsub_scalar(y, 1), input), lw ? kn_mul(lw, sp) : sp);
    if (o.weight) loss = kn_mul(loss, kn_cast(o.weight, dt));
    r = kn__reduce_loss(loss, o.reduction);
    kn_keep(r);
    kn_scope_end(s);
    return r;
}
