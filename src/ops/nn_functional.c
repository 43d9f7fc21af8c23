/* Neural-network functions: softmax, the class losses (the elementwise ones
 * are in loss.c), normalization and dropout, with
 * their backward rules. Statistics-heavy parts run as fused kernels
 * (KN_OP_SOFTMAX, NLL, BATCH_NORM, LAYER_NORM, DROPOUT); loss reductions and
 * the simple compositions use public ops, so autograd covers them for free.
 *
 * Backward rules run inside the autograd engine's scope, so their temporaries
 * are scoped and need no releasing. */
#include "fused.h"
#include "ops_internal.h"

#include <math.h>
#include <string.h>

static bool float_check(const char *op, const char *what, const kn_tensor *t) {
    if (kn_dtype_is_float(t->dtype)) return true;
    kn__err(KN_ERR_DTYPE, "%s: %s must be floating point, got %s", op, what, kn_dtype_name(t->dtype));
    return false;
}

/* t converted to dt and made contiguous (raw; NULL in, NULL out without error). */
static kn_tensor *prep(kn_tensor *t, kn_dtype dt, bool *ok) {
    if (!t) return NULL;
    kn_tensor *c = kn__cast_raw(t, dt), *r = c ? kn__contiguous_raw(c) : NULL;
    kn_release(c);
    if (!r) *ok = false;
    return r;
}

/* A 1-D parameter must be [n]. */
static bool vec_check(const char *op, const char *what, const kn_tensor *t, int64_t n) {
    if (!t || (t->ndim == 1 && t->shape[0] == n)) return true;
    char s[128];
    kn__err(KN_ERR_SHAPE, "%s: %s must have shape [%lld], got %s", op, what, (long long)n,
            kn__shape_str(t->ndim, t->shape, s, sizeof s));
    return false;
}

/* Saved slot k, or NULL when nothing was saved there (an absent optional
 * operand: kn__save skips NULL, so the slot may lie past the last one). */
static kn_tensor *saved_at(const kn_node *n, int k) { return k < n->n_saved ? n->saved[k] : NULL; }

/* A backward rule's last step: runs op into the scoped out (NULL after a
 * failed allocation) and hands it out as *gin. */
static kn_status run_grad(kn_tensor *out, kn_op op, kn_device dev, void *args, kn_tensor **gin) {
    if (!out) return kn_error_code();
    kn_status s = kn__run(op, dev, args);
    if (s == KN_OK) *gin = out;
    return s;
}

/* ---- softmax / log_softmax ------------------------------------------------------------ */
typedef struct {
    int64_t dim;
    bool log;
} softmax_state;

/* saved[0] the output y. */
static kn_status softmax_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const softmax_state *st = KN_STATE(n, softmax_state);
    kn_tensor *y = n->saved[0];
    kn_device dev = y->storage->device;
    kn_tensor *gc = kn__scoped(kn__cast_raw(g, y->dtype));
    kn_tensor *out = gc ? kn__scoped(kn__new(y->ndim, y->shape, y->dtype, dev)) : NULL;
    kn_softmax_backward_args a = {.out = kn__view(out), .grad = kn__view(gc), .y = kn__view(y), .dim = st->dim,
                                  .log = st->log};
    return run_grad(out, KN_OP_SOFTMAX_BACKWARD, dev, &a, &gin[0]);
}

/* Scoped result. */
static kn_tensor *softmax_fwd(const char *name, kn_tensor *x, int dim, bool log) {
    int d = kn__dim(name, dim, x->ndim);
    if (d < 0) return NULL;
    kn_dtype dt = kn__float_dtype(x->dtype);
    kn_device dev = x->storage->device;
    bool ok = true;
    /* The kernel walks [outer, D, inner] of a contiguous input. */
    kn_tensor *in = prep(x, dt, &ok);
    kn_tensor *out = ok ? kn__new(x->ndim, x->shape, dt, dev) : NULL;
    kn_softmax_args a = {.out = kn__view(out), .x = kn__view(in), .dim = d, .log = log};
    out = out ? kn__run_out(KN_OP_SOFTMAX, dev, &a, out) : NULL;
    kn_release(in);
    if (!out) return NULL;
    kn_node *n = kn__record(out, name, softmax_backward, 1, &x, sizeof(softmax_state));
    if (n) {
        kn__save(n, 0, out);
        *KN_STATE(n, softmax_state) = (softmax_state){.dim = d, .log = log};
    }
    return kn__scoped(out);
}

kn_tensor *kn_softmax(kn_tensor *a, int dim) {
    if (!a) return kn__err_null("softmax"), NULL;
    return softmax_fwd("softmax", a, dim, false);
}

kn_tensor *kn_log_softmax(kn_tensor *a, int dim) {
    if (!a) return kn__err_null("log_softmax"), NULL;
    return softmax_fwd("log_softmax", a, dim, true);
}

/* ---- nll_loss / cross_entropy ------------------------------------------------------------- */
kn_loss_opts kn_loss_opts_default(void) {
    return (kn_loss_opts){.weight = NULL, .label_smoothing = 0, .reduction = KN_REDUCTION_MEAN,
                          .ignore_index = -100, .pos_weight = NULL, .delta = 1, .beta = 1};
}

/* The options the loss kernels' backward needs again (nll_loss and cross_entropy). */
typedef struct {
    double smoothing;
    int64_t ignore_index;
    int64_t reduction; /* kn_reduction; cross_entropy only */
} loss_state;

/* Shapes, dtypes and options of (input [N, C], target [N]); `what` names the input. */
static bool nll_check(const char *op, const char *what, kn_tensor *in, kn_tensor *target,
                      const kn_loss_opts *o) {
    kn_tensor *all[3] = {in, target, o->weight};
    if (!kn__same_device(op, 3, all) || !float_check(op, what, in)) return false;
    char s[128];
    if (in->ndim != 2) {
        kn__err(KN_ERR_SHAPE, "%s: %s must have shape [N, C], got %s", op, what,
                kn__shape_str(in->ndim, in->shape, s, sizeof s));
        return false;
    }
    if (kn_dtype_is_float(target->dtype) || target->dtype == KN_BOOL) {
        kn__err(KN_ERR_DTYPE, "%s: target must be an integer tensor of class indices, got %s", op,
                kn_dtype_name(target->dtype));
        return false;
    }
    if (!vec_check(op, "target", target, in->shape[0]) || !vec_check(op, "weight", o->weight, in->shape[1]))
        return false;
    if (!(o->label_smoothing >= 0 && o->label_smoothing <= 1)) {
        kn__err(KN_ERR_INVALID, "%s: label_smoothing must be in [0, 1], got %g", op, o->label_smoothing);
        return false;
    }
    if (o->pos_weight) {
        kn__err(KN_ERR_INVALID, "%s: option pos_weight is not used by this loss (leave it at its default)", op);
        return false;
    }
    return kn__reduction_check(op, o->reduction);
}

/* saved[0] target, [1] weights (lp's dtype) or absent. */
static kn_status nll_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const loss_state *st = KN_STATE(n, loss_state);
    kn_tensor *lp = n->in[0];
    kn_device dev = lp->storage->device;
    kn_tensor *gc = kn__scoped(kn__cast_raw(g, lp->dtype));
    kn_tensor *out = gc ? kn__scoped(kn__new(2, lp->shape, lp->dtype, dev)) : NULL;
    kn_nll_backward_args a = {.out = kn__view(out), .grad = kn__view(gc), .target = kn__view(n->saved[0]),
                              .weight = kn__view(saved_at(n, 1)), .smoothing = st->smoothing,
                              .ignore_index = st->ignore_index};
    return run_grad(out, KN_OP_NLL_BACKWARD, dev, &a, &gin[0]);
}

/* Checked inputs; returns the reduced loss (scoped). */
static kn_tensor *nll_core(const char *op, kn_tensor *lp, kn_tensor *target, const kn_loss_opts *o) {
    int64_t N = lp->shape[0];
    kn_device dev = lp->storage->device;
    kn_scope s = kn_scope_begin();
    bool ok = true;
    kn_tensor *w = kn__scoped(prep(o->weight, lp->dtype, &ok));
    kn_tensor *loss = ok ? kn__scoped(kn__new(1, &N, lp->dtype, dev)) : NULL;
    kn_tensor *rw = loss ? kn__scoped(kn__new(1, &N, lp->dtype, dev)) : NULL;
    kn_nll_args a = {.loss = kn__view(loss), .row_weight = kn__view(rw), .logp = kn__view(lp),
                     .target = kn__view(target), .weight = kn__view(w), .smoothing = o->label_smoothing,
                     .ignore_index = o->ignore_index};
    kn_tensor *r = NULL;
    if (rw && kn__run(KN_OP_NLL, dev, &a) == KN_OK) {
        kn_node *n = kn__record(loss, op, nll_backward, 1, &lp, sizeof(loss_state));
        if (n) {
            kn__save(n, 0, target);
            kn__save(n, 1, w);
            *KN_STATE(n, loss_state) = (loss_state){.smoothing = o->label_smoothing, .ignore_index = o->ignore_index};
        }
        r = loss;
        /* mean divides by the summed weights of the rows not ignored, as PyTorch does. */
        if (o->reduction == KN_REDUCTION_SUM) r = kn_sum_all(loss);
        else if (o->reduction == KN_REDUCTION_MEAN) r = kn_div(kn_sum_all(loss), kn_sum_all(rw));
    }
    kn_keep(r);
    kn_scope_end(s);
    return r;
}

kn_tensor *kn_nll_loss(kn_tensor *lp, kn_tensor *target, const kn_loss_opts *opts) {
    if (!lp || !target) return kn__err_null("nll_loss"), NULL;
    kn_loss_opts o = opts ? *opts : kn_loss_opts_default();
    if (!nll_check("nll_loss", "input", lp, target, &o)) return NULL;
    return nll_core("nll_loss", lp, target, &o);
}

/* Cross-entropy is one kernel each way (KN_OP_CROSS_ENTROPY): the loss with
 * its reduction, and the logits' gradient from the saved log-sum-exp.
 * saved[0] logits (contiguous), [1] target, [2] weights (logits' dtype) or
 * absent, [3] log-sum-exp, [4] the weight sum. */
static kn_status cross_entropy_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const loss_state *st = KN_STATE(n, loss_state);
    kn_tensor *z = n->saved[0];
    kn_device dev = z->storage->device;
    kn_tensor *gc = kn__scoped(kn__cast_raw(g, z->dtype));
    kn_tensor *out = gc ? kn__scoped(kn__new(2, z->shape, z->dtype, dev)) : NULL;
    kn_cross_entropy_backward_args a = {
        .out = kn__view(out), .grad = kn__view(gc), .logits = kn__view(z), .target = kn__view(n->saved[1]),
        .weight = kn__view(saved_at(n, 2)), .lse = kn__view(n->saved[3]), .weight_sum = kn__view(n->saved[4]),
        .smoothing = st->smoothing, .ignore_index = st->ignore_index, .reduction = st->reduction};
    return run_grad(out, KN_OP_CROSS_ENTROPY_BACKWARD, dev, &a, &gin[0]);
}

kn_tensor *kn_cross_entropy_ex(kn_tensor *logits, kn_tensor *target, const kn_loss_opts *opts) {
    const char *op = "cross_entropy";
    if (!logits || !target) return kn__err_null(op), NULL;
    kn_loss_opts o = opts ? *opts : kn_loss_opts_default();
    if (!nll_check(op, "logits", logits, target, &o)) return NULL;
    int64_t N = logits->shape[0];
    kn_dtype dt = logits->dtype;
    kn_device dev = logits->storage->device;
    kn_scope s = kn_scope_begin();
    bool ok = true;
    kn_tensor *z = kn__scoped(prep(logits, dt, &ok));
    kn_tensor *w = ok ? kn__scoped(prep(o.weight, dt, &ok)) : NULL;
    kn_tensor *loss = ok ? kn__scoped(kn__new(o.reduction == KN_REDUCTION_NONE ? 1 : 0, &N, dt, dev)) : NULL;
    kn_tensor *lse = loss ? kn__scoped(kn__new(1, &N, dt, dev)) : NULL;
    kn_tensor *wsum = lse ? kn__scoped(kn__new(0, NULL, dt, dev)) : NULL;
    kn_cross_entropy_args a = {.loss = kn__view(loss), .lse = kn__view(lse), .weight_sum = kn__view(wsum),
                               .logits = kn__view(z), .target = kn__view(target), .weight = kn__view(w),
                               .smoothing = o.label_smoothing, .ignore_index = o.ignore_index,
                               .reduction = o.reduction};
    kn_tensor *r = wsum && kn__run(KN_OP_CROSS_ENTROPY, dev, &a) == KN_OK ? loss : NULL;
    kn_node *n = r ? kn__record(r, op, cross_entropy_backward, 1, &logits, sizeof(loss_state)) : NULL;
    if (n) {
        kn__save(n, 0, z);
        kn__save(n, 1, target);
        kn__save(n, 2, w);
        kn__save(n, 3, lse);
        kn__save(n, 4, wsum);
        *KN_STATE(n, loss_state) = (loss_state){.smoothing = o.label_smoothing, .ignore_index = o.ignore_index,
                                                .reduction = o.reduction};
    }
    kn_keep(r);
    kn_scope_end(s);
    return r;
}

kn_tensor *kn_cross_entropy(kn_tensor *logits, kn_tensor *target) {
    return kn_cross_entropy_ex(logits, target, NULL);
}

/* ---- batch_norm ---------------------------------------------------------------------------- */
/* The statistics dtype: float32 for float32/16/bf16 inputs, as PyTorch does. */
static kn_dtype stat_dtype(kn_dtype dt) { return dt == KN_F64 ? KN_F64 : KN_F32; }

/* A batch-norm node's state (batch_norm, and the fused linear block). */
typedef struct {
    bool training;
    bool relu;             /* the norm's input is a ReLU's output (the fused block) */
    double p;              /* the fused dropout's probability (0: none) */
    uint64_t seed, offset; /* its Philox stream */
} bn_state;

/* BATCH_NORM_BACKWARD for grad g of the norm's output (x3's shape, or x3's
 * without the trailing L = 1; any strides): gr[0] grad x [N, C, L], and where
 * want[k], gr[1] grad weight, gr[2] grad bias, gr[3] the sums of gr[0] (the
 * bias gradient of a Linear before the norm), [C] each. Scoped. */
static kn_status bn_backward_run(const bn_state *st, kn_tensor *g, kn_tensor *x3, kn_tensor *weight,
                                 kn_tensor *mean, kn_tensor *invstd, const bool want[4], kn_tensor *gr[4]) {
    kn_device dev = x3->storage->device;
    int64_t C = x3->shape[1];
    kn_tensor *gc = kn__scoped(kn__cast_raw(g, x3->dtype));
    /* As [N, C, L], a 2-D g is a view (L = 1). */
    kn_tensor *g3 = !gc || gc->ndim == 3 ? gc
                    : kn__scoped(kn__alias(gc, 3, x3->shape, (int64_t[]){gc->stride[0], gc->stride[1], 1},
                                           gc->offset));
    gr[0] = g3 ? kn__scoped(kn__new(3, x3->shape, x3->dtype, dev)) : NULL;
    if (!gr[0]) return kn_error_code();
    for (int k = 1; k < 4; k++) {
        gr[k] = want[k] ? kn__scoped(kn__new(1, &C, x3->dtype, dev)) : NULL;
        if (want[k] && !gr[k]) return kn_error_code();
    }
    kn_batch_norm_backward_args a = {
        .grad_x = kn__view(gr[0]), .grad_weight = kn__view(gr[1]), .grad_bias = kn__view(gr[2]),
        .grad_pre_bias = kn__view(gr[3]), .grad = kn__view(g3), .x = kn__view(x3), .weight = kn__view(weight),
        .mean = kn__view(mean), .invstd = kn__view(invstd), .training = st->training, .p = st->p,
        .seed = (int64_t)st->seed, .offset = (int64_t)st->offset, .relu = st->relu};
    return kn__run(KN_OP_BATCH_NORM_BACKWARD, dev, &a);
}

/* saved[0] x as [N, C, L], [1] weight (x's dtype) or absent, [2] mean, [3]
 * invstd. Inputs: x, weight, bias. */
static kn_status batch_norm_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *x = n->in[0], *gr[4];
    bool want[4] = {true, n->needs[1], n->needs[2], false};
    kn_status s = bn_backward_run(KN_STATE(n, bn_state), g, n->saved[0], saved_at(n, 1), n->saved[2],
                                  n->saved[3], want, gr);
    if (s != KN_OK) return s;
    if (n->needs[0] && !(gin[0] = kn__scoped(kn__view_raw(gr[0], x->ndim, x->shape)))) return kn_error_code();
    gin[1] = gr[1];
    gin[2] = gr[2];
    return KN_OK;
}

/* The checks of batch_norm over x (2-D or 3-D) with its parameters. */
static bool batch_norm_check(const char *op, kn_tensor *x, kn_tensor *running_mean, kn_tensor *running_var,
                             kn_tensor *weight, kn_tensor *bias, kn_tensor *count, bool training) {
    kn_tensor *all[6] = {x, running_mean, running_var, weight, bias, count};
    if (!kn__same_device(op, 6, all) || !float_check(op, "input", x)) return false;
    char s[128];
    if (x->ndim != 2 && x->ndim != 3) {
        kn__err(KN_ERR_SHAPE, "%s: expected a 2-D [N, C] or 3-D [N, C, L] input, got %s", op,
                kn__shape_str(x->ndim, x->shape, s, sizeof s));
        return false;
    }
    int64_t N = x->shape[0], C = x->shape[1], L = x->ndim == 3 ? x->shape[2] : 1;
    if (!vec_check(op, "running_mean", running_mean, C) || !vec_check(op, "running_var", running_var, C) ||
        !vec_check(op, "weight", weight, C) || !vec_check(op, "bias", bias, C))
        return false;
    if (!running_mean != !running_var) {
        kn__err(KN_ERR_INVALID, "%s: running_mean and running_var must be given together", op);
        return false;
    }
    if ((running_mean && !float_check(op, "running_mean", running_mean)) ||
        (running_var && !float_check(op, "running_var", running_var)))
        return false;
    if (count && (count->ndim != 0 || kn_dtype_is_float(count->dtype) || count->dtype == KN_BOOL)) {
        kn__err(KN_ERR_INVALID, "%s: num_batches_tracked must be an integer 0-d tensor", op);
        return false;
    }
    if (!training && !running_mean) {
        kn__err(KN_ERR_INVALID, "%s: running_mean and running_var are needed when not training", op);
        return false;
    }
    if (training && N * L == 1) {
        kn__err(KN_ERR_SHAPE, "%s: expected more than 1 value per channel when training, got input of shape %s",
                op, kn__shape_str(x->ndim, x->shape, s, sizeof s));
        return false;
    }
    return true;
}

/* What a BATCH_NORM run leaves for its node (scoped tensors). */
typedef struct {
    kn_tensor *y3, *weight, *mean, *invstd; /* y [N, C, L]; the norm's weight in x's dtype (or NULL) */
    bn_state st;
} bn_result;

/* The norm (and its dropout) of the checked, contiguous x3 [N, C, L] under o;
 * the running statistics and the count are updated in place, so no tape. */
static bool bn_forward_run(kn_tensor *x3, const kn__bn_opts *o, bn_result *r) {
    kn_device dev = x3->storage->device;
    kn_dtype dt = x3->dtype;
    int64_t C = x3->shape[1];
    bool ok = true;
    r->weight = kn__scoped(prep(o->weight, dt, &ok));
    kn_tensor *b = ok ? kn__scoped(prep(o->bias, dt, &ok)) : NULL;
    r->y3 = ok ? kn__scoped(kn__new(3, x3->shape, dt, dev)) : NULL;
    r->mean = r->y3 ? kn__scoped(kn__new(1, &C, stat_dtype(dt), dev)) : NULL;
    r->invstd = r->mean ? kn__scoped(kn__new(1, &C, stat_dtype(dt), dev)) : NULL;
    if (!r->invstd) return false;
    r->st = (bn_state){.training = o->training, .p = o->dropout};
    if (o->dropout > 0) {
        kn_generator *gen = o->gen ? o->gen : kn_default_generator();
        r->st.seed = gen->seed;
        r->st.offset = kn__generator_take(gen, kn__numel_shape(3, x3->shape), 4);
    }
    kn_batch_norm_args a = {
        .y = kn__view(r->y3), .mean = kn__view(r->mean), .invstd = kn__view(r->invstd),
        .running_mean = kn__view(o->running_mean), .running_var = kn__view(o->running_var),
        .count = kn__view(o->num_batches), .x = kn__view(x3), .weight = kn__view(r->weight), .bias = kn__view(b),
        .training = o->training, .momentum = o->momentum, .eps = o->eps, .p = r->st.p,
        .seed = (int64_t)r->st.seed, .offset = (int64_t)r->st.offset};
    return kn__run(KN_OP_BATCH_NORM, dev, &a) == KN_OK;
}

kn_tensor *kn_batch_norm(kn_tensor *x, kn_tensor *running_mean, kn_tensor *running_var,
                         kn_tensor *weight, kn_tensor *bias, bool training, double momentum,
                         double eps) {
    return kn__batch_norm_ex(x, running_mean, running_var, weight, bias, NULL, training, momentum, eps);
}

kn_tensor *kn__batch_norm_ex(kn_tensor *x, kn_tensor *running_mean, kn_tensor *running_var, kn_tensor *weight,
                             kn_tensor *bias, kn_tensor *count, bool training, double momentum, double eps) {
    const char *op = "batch_norm";
    if (!x) return kn__err_null(op), NULL;
    if (!batch_norm_check(op, x, running_mean, running_var, weight, bias, count, training)) return NULL;
    int64_t shape3[3] = {x->shape[0], x->shape[1], x->ndim == 3 ? x->shape[2] : 1};
    kn__bn_opts o = {.running_mean = running_mean, .running_var = running_var, .weight = weight, .bias = bias,
                     .num_batches = count, .training = training, .momentum = momentum, .eps = eps};
    kn_scope s = kn_scope_begin();
    kn_tensor *xc = kn__scoped(kn__contiguous_raw(x));
    kn_tensor *x3 = xc ? kn__scoped(kn__view_raw(xc, 3, shape3)) : NULL;
    bn_result r = {0};
    kn_tensor *y = x3 && bn_forward_run(x3, &o, &r) ? kn__scoped(kn__view_raw(r.y3, x->ndim, x->shape)) : NULL;
    kn_tensor *ins[3] = {x, weight, bias};
    kn_node *n = y ? kn__record(y, op, batch_norm_backward, 3, ins, sizeof(bn_state)) : NULL;
    if (n) {
        kn__save(n, 0, x3);
        kn__save(n, 1, r.weight);
        kn__save(n, 2, r.mean);
        kn__save(n, 3, r.invstd);
        *KN_STATE(n, bn_state) = r.st;
    }
    kn_keep(y);
    kn_scope_end(s);
    return y;
}

/* ---- linear (+ ReLU) -> batch_norm (+ dropout), fused ------------------------------------------
 * saved[0] x [N, in], [1] w (x's dtype), [2] a = act(x w^T + b) [N, C, 1]
 * (the norm's input), [3] the norm's weight (x's dtype) or absent, [4] mean,
 * [5] invstd. Inputs: x, w, bias, weight, bias of the norm. */
static kn_status linear_bn_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *x = n->saved[0], *w = n->saved[1], *a3 = n->saved[2], *gr[4];
    bool want[4] = {true, n->needs[3], n->needs[4], n->in[2] && n->needs[2]};
    kn_status s = bn_backward_run(KN_STATE(n, bn_state), g, a3, saved_at(n, 3), n->saved[4], n->saved[5], want,
                                  gr);
    if (s != KN_OK) return s;
    gin[2] = gr[3];
    gin[3] = gr[1];
    gin[4] = gr[2];
    kn_tensor *g2 = kn__scoped(kn__view_raw(gr[0], 2, (int64_t[]){a3->shape[0], a3->shape[1]}));
    if (!g2) return kn_error_code();
    if (n->needs[1] && !(gin[1] = kn_matmul(kn_transpose(g2, 0, 1), x))) return kn_error_code();
    if (n->needs[0] && !(gin[0] = kn_matmul(g2, w))) return kn_error_code();
    return KN_OK;
}

kn_tensor *kn__linear_bn(kn_tensor *x, kn_tensor *w, kn_tensor *bias, kn_activation act, const kn__bn_opts *o) {
    const char *op = "linear_batch_norm";
    if (!x || !w || !o) return kn__err_null(op), NULL;
    if (!kn__linear_check("linear", x, w, bias)) return NULL; /* errors name the layer at fault */
    char s[128];
    if (x->ndim != 2) {
        kn__err(KN_ERR_SHAPE, "%s: expected a 2-D [N, in] input, got %s", op, kn__shape_str(x->ndim, x->shape, s, sizeof s));
        return NULL;
    }
    if (!(o->dropout >= 0 && o->dropout < 1)) {
        kn__err(KN_ERR_INVALID, "%s: dropout probability must be in [0, 1), got %g", op, o->dropout);
        return NULL;
    }
    int64_t N = x->shape[0], C = w->shape[0];
    kn_scope sc = kn_scope_begin();
    kn_tensor *cw = kn__scoped(kn__cast_raw(w, x->dtype));
    kn_tensor *cb = cw && bias ? kn__scoped(kn__cast_raw(bias, x->dtype)) : NULL;
    kn_tensor *a = cw && (!bias || cb) ? kn__scoped(kn__linear_raw(x, cw, cb, act)) : NULL;
    /* The norm's checks, on the GEMM's output. */
    bool ok = a && batch_norm_check("batch_norm", a, o->running_mean, o->running_var, o->weight, o->bias,
                                    o->num_batches, o->training);
    kn_tensor *a3 = ok ? kn__scoped(kn__view_raw(a, 3, (int64_t[]){N, C, 1})) : NULL;
    bn_result r = {0};
    kn_tensor *y = a3 && bn_forward_run(a3, o, &r) ? kn__scoped(kn__view_raw(r.y3, 2, (int64_t[]){N, C})) : NULL;
    kn_tensor *ins[5] = {x, w, bias, o->weight, o->bias};
    kn_node *n = y ? kn__record(y, op, linear_bn_backward, 5, ins, sizeof(bn_state)) : NULL;
    if (n) {
        kn__save(n, 0, x);
        kn__save(n, 1, cw);
        kn__save(n, 2, a3);
        kn__save(n, 3, r.weight);
        kn__save(n, 4, r.mean);
        kn__save(n, 5, r.invstd);
        r.st.relu = act == KN_ACT_RELU;
        *KN_STATE(n, bn_state) = r.st;
    }
    kn_keep(y);
    kn_scope_end(sc);
    return y;
}

/* ---- layer_norm -------------------------------------------------------------------------------- */
typedef struct {
    int64_t n; /* normalized elements per row */
} layer_norm_state;

/* saved[0] x (contiguous), [1] weight (x's dtype, contiguous) or absent, [2]
 * mean, [3] invstd. Inputs: x, weight, bias. */
static kn_status layer_norm_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *x = n->saved[0];
    kn_device dev = x->storage->device;
    int64_t H = KN_STATE(n, layer_norm_state)->n;
    kn_tensor *gc = kn__scoped(kn__cast_raw(g, x->dtype));
    kn_tensor *gx = gc ? kn__scoped(kn__new(x->ndim, x->shape, x->dtype, dev)) : NULL;
    kn_tensor *gw = gx && n->needs[1] ? kn__scoped(kn__new(1, &H, x->dtype, dev)) : NULL;
    kn_tensor *gb = gx && n->needs[2] ? kn__scoped(kn__new(1, &H, x->dtype, dev)) : NULL;
    if (!gx || (n->needs[1] && !gw) || (n->needs[2] && !gb)) return kn_error_code();
    kn_layer_norm_backward_args a = {
        .grad_x = kn__view(gx), .grad_weight = kn__view(gw), .grad_bias = kn__view(gb), .grad = kn__view(gc),
        .x = kn__view(x), .weight = kn__view(saved_at(n, 1)), .mean = kn__view(n->saved[2]),
        .invstd = kn__view(n->saved[3]), .n = H};
    kn_status s = kn__run(KN_OP_LAYER_NORM_BACKWARD, dev, &a);
    if (s != KN_OK) return s;
    if (n->needs[0]) gin[0] = gx;
    for (int k = 1; k < 3; k++) {
        kn_tensor *t = k == 1 ? gw : gb, *p = n->in[k];
        if (t && !(gin[k] = kn__scoped(kn__view_raw(t, p->ndim, p->shape)))) return kn_error_code();
    }
    return KN_OK;
}

kn_tensor *kn_layer_norm(kn_tensor *x, int ndims, kn_tensor *weight, kn_tensor *bias, double eps) {
    const char *op = "layer_norm";
    if (!x) return kn__err_null(op), NULL;
    kn_tensor *all[3] = {x, weight, bias};
    if (!kn__same_device(op, 3, all) || !float_check(op, "input", x)) return NULL;
    if (ndims < 1 || ndims > x->ndim) {
        kn__err(KN_ERR_INVALID, "%s: cannot normalize over the last %d dims of a %d-d input", op, ndims, x->ndim);
        return NULL;
    }
    const int64_t *tail = x->shape + x->ndim - ndims;
    char s1[128], s2[128];
    for (int k = 1; k < 3; k++) {
        kn_tensor *p = k == 1 ? weight : bias;
        if (p && (p->ndim != ndims || memcmp(p->shape, tail, (size_t)ndims * 8))) {
            kn__err(KN_ERR_SHAPE, "%s: %s must have shape %s, got %s", op, k == 1 ? "weight" : "bias",
                    kn__shape_str(ndims, tail, s1, sizeof s1), kn__shape_str(p->ndim, p->shape, s2, sizeof s2));
            return NULL;
        }
    }
    int64_t H = kn__numel_shape(ndims, tail), R = kn__numel_shape(x->ndim - ndims, x->shape);
    kn_device dev = x->storage->device;
    kn_scope s = kn_scope_begin();
    bool ok = true;
    kn_tensor *xc = kn__scoped(kn__contiguous_raw(x));
    kn_tensor *w = xc ? kn__scoped(prep(weight, x->dtype, &ok)) : NULL;
    kn_tensor *b = xc && ok ? kn__scoped(prep(bias, x->dtype, &ok)) : NULL;
    kn_tensor *y = xc && ok ? kn__scoped(kn__new(x->ndim, x->shape, x->dtype, dev)) : NULL;
    kn_tensor *mean = y ? kn__scoped(kn__new(1, &R, stat_dtype(x->dtype), dev)) : NULL;
    kn_tensor *invstd = mean ? kn__scoped(kn__new(1, &R, stat_dtype(x->dtype), dev)) : NULL;
    kn_layer_norm_args a = {.y = kn__view(y), .mean = kn__view(mean), .invstd = kn__view(invstd), .x = kn__view(xc),
                            .weight = kn__view(w), .bias = kn__view(b), .n = H, .eps = eps};
    kn_tensor *r = invstd && kn__run(KN_OP_LAYER_NORM, dev, &a) == KN_OK ? y : NULL;
    kn_node *n = r ? kn__record(r, op, layer_norm_backward, 3, all, sizeof(layer_norm_state)) : NULL;
    if (n) {
        kn__save(n, 0, xc);
        kn__save(n, 1, w);
        kn__save(n, 2, mean);
        kn__save(n, 3, invstd);
        KN_STATE(n, layer_norm_state)->n = H;
    }
    kn_keep(r);
    kn_scope_end(s);
    return r;
}

/* ---- dropout ---------------------------------------------------------------------------------- */
typedef struct {
    double p;
    uint64_t seed, offset;
} dropout_state;

/* The mask is not stored: the same Philox counters give the same keep
 * decisions, so the backward is the dropout kernel applied to the gradient.
 * One pass, and no mask in memory between the passes. */
static kn_status dropout_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const dropout_state *st = KN_STATE(n, dropout_state);
    kn_device dev = g->storage->device;
    kn_tensor *gc = kn__scoped(kn__contiguous_raw(g));
    kn_tensor *out = gc ? kn__scoped(kn__new(g->ndim, g->shape, g->dtype, dev)) : NULL;
    kn_dropout_args a = {.out = kn__view(out), .x = kn__view(gc), .p = st->p, .seed = (int64_t)st->seed,
                         .offset = (int64_t)st->offset};
    return run_grad(out, KN_OP_DROPOUT, dev, &a, &gin[0]);
}

kn_tensor *kn_dropout(kn_tensor *x, double p, bool training, struct kn_generator *gen) {
    const char *op = "dropout";
    if (!x) return kn__err_null(op), NULL;
    if (!(p >= 0 && p <= 1)) {
        kn__err(KN_ERR_INVALID, "%s: probability must be in [0, 1], got %g", op, p);
        return NULL;
    }
    if (!training || p == 0) return kn__scoped(kn_retain(x)); /* x itself, as PyTorch */
    if (!float_check(op, "input", x)) return NULL;
    if (p == 1) return kn_mul_scalar(x, 0.0); /* all dropped; the gradient is 0 */
    if (!gen) gen = kn_default_generator();
    kn_device dev = x->storage->device;
    kn_tensor *xc = kn__contiguous_raw(x);
    kn_tensor *y = xc ? kn__new(x->ndim, x->shape, x->dtype, dev) : NULL;
    if (!y) {
        kn_release(xc);
        return NULL;
    }
    dropout_state st = {.p = p, .seed = gen->seed};
    st.offset = kn__generator_take(gen, kn__numel_shape(x->ndim, x->shape), 4);
    kn_dropout_args a = {.out = kn__view(y), .x = kn__view(xc), .p = p, .seed = (int64_t)st.seed,
                         .offset = (int64_t)st.offset};
    y = kn__run_out(KN_OP_DROPOUT, dev, &a, y);
    kn_release(xc);
    if (!y) return NULL;
    kn_node *n = kn__record(y, op, dropout_backward, 1, &x, sizeof(dropout_state));
    if (n) *KN_STATE(n, dropout_state) = st;
    return kn__scoped(y);
}
