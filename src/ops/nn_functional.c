/* Neural-network functions: softmax, losses, normalization and dropout, with
 * their backward rules. Statistics-heavy parts run as fused kernels
 * (KN_OP_SOFTMAX, NLL, BATCH_NORM, LAYER_NORM, DROPOUT); loss reductions and
 * the simple compositions use public ops, so autograd covers them for free. */
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

static bool reduction_check(const char *op, kn_reduction r) {
    if (r == KN_REDUCTION_MEAN || r == KN_REDUCTION_SUM || r == KN_REDUCTION_NONE) return true;
    kn__err(KN_ERR_INVALID, "%s: invalid reduction %d", op, (int)r);
    return false;
}

/* ---- softmax / log_softmax ------------------------------------------------------------ */
static kn_status softmax_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *y = n->saved[0];
    kn_tensor *gc = kn__cast_raw(g, y->dtype);
    kn_tensor *out = gc ? kn__new(y->ndim, y->shape, y->dtype, y->storage->device) : NULL;
    if (!out) {
        kn_release(gc);
        return kn_error_code();
    }
    kn_call c = {.op = KN_OP_SOFTMAX_BACKWARD, .device = y->storage->device, .in = {gc, y},
                 .out = {out}, .i = {n->i[0], n->i[1]}};
    bool ok = kn__run_ok(&c);
    kn_release(gc);
    if (!ok) return kn_error_code();
    gin[0] = kn__scoped(out);
    return KN_OK;
}

/* Raw result (the caller scopes it). */
static kn_tensor *softmax_raw(const char *name, kn_tensor *a, int dim, bool log) {
    int d = kn__dim(name, dim, a->ndim);
    if (d < 0) return NULL;
    kn_dtype dt = kn__float_dtype(a->dtype);
    kn_device dev = a->storage->device;
    bool ok = true;
    /* The kernel walks [outer, D, inner] of a contiguous input. */
    kn_tensor *in = prep(a, dt, &ok);
    kn_tensor *out = ok ? kn__new(a->ndim, a->shape, dt, dev) : NULL;
    if (!out) {
        kn_release(in);
        return NULL;
    }
    kn_call c = {.op = KN_OP_SOFTMAX, .device = dev, .in = {in}, .out = {out}, .i = {d, log}};
    ok = kn__run_ok(&c);
    kn_release(in);
    if (!ok) return NULL;
    kn_node *n = kn__record(out, name, softmax_backward, 1, &a);
    if (n) {
        kn__save(n, 0, out);
        n->i[0] = d;
        n->i[1] = log;
    }
    return out;
}

kn_tensor *kn_softmax(kn_tensor *a, int dim) {
    if (!a) return kn__err_null("softmax"), NULL;
    return kn__scoped(softmax_raw("softmax", a, dim, false));
}

kn_tensor *kn_log_softmax(kn_tensor *a, int dim) {
    if (!a) return kn__err_null("log_softmax"), NULL;
    return kn__scoped(softmax_raw("log_softmax", a, dim, true));
}

/* ---- nll_loss / cross_entropy ------------------------------------------------------------- */
kn_loss_opts kn_loss_opts_default(void) {
    return (kn_loss_opts){.weight = NULL, .label_smoothing = 0, .reduction = KN_REDUCTION_MEAN,
                          .ignore_index = -100};
}

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
    return reduction_check(op, o->reduction);
}

/* saved[0] target, saved[1] weights (lp's dtype) or NULL; f[0] smoothing,
 * i[0] ignore_index. */
static kn_status nll_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *lp = n->in[0];
    kn_device dev = lp->storage->device;
    kn_tensor *gc = kn__cast_raw(g, lp->dtype);
    kn_tensor *out = gc ? kn__new(2, lp->shape, lp->dtype, dev) : NULL;
    if (!out) {
        kn_release(gc);
        return kn_error_code();
    }
    kn_call c = {.op = KN_OP_NLL_BACKWARD, .device = dev, .in = {gc, n->saved[0], n->saved[1]},
                 .out = {out}, .i = {n->i[0], n->i[1]}, .f = {n->f[0]}};
    bool ok = kn__run_ok(&c);
    kn_release(gc);
    if (!ok) return kn_error_code();
    gin[0] = kn__scoped(out);
    return KN_OK;
}

/* Checked inputs; returns the reduced loss (scoped). */
static kn_tensor *nll_core(const char *op, kn_tensor *lp, kn_tensor *target, const kn_loss_opts *o) {
    int64_t N = lp->shape[0];
    kn_device dev = lp->storage->device;
    bool ok = true;
    kn_tensor *w = prep(o->weight, lp->dtype, &ok);
    kn_tensor *loss = ok ? kn__new(1, &N, lp->dtype, dev) : NULL;
    kn_tensor *rw = loss ? kn__new(1, &N, lp->dtype, dev) : NULL;
    if (!rw) {
        kn_release(w);
        kn_release(loss);
        return NULL;
    }
    kn_call c = {.op = KN_OP_NLL, .device = dev, .in = {lp, target, w}, .out = {loss, rw},
                 .i = {o->ignore_index}, .f = {o->label_smoothing}};
    if (!kn__run_ok(&c)) {
        kn_release(w);
        return NULL;
    }
    kn_node *n = kn__record(loss, op, nll_backward, 1, &lp);
    if (n) {
        kn__save(n, 0, target);
        kn__save(n, 1, w);
        n->f[0] = o->label_smoothing;
        n->i[0] = o->ignore_index;
    }
    kn_release(w);
    kn_scope s = kn_scope_begin();
    kn__scoped(loss);
    kn__scoped(rw);
    kn_tensor *r = loss;
    /* mean divides by the summed weights of the rows not ignored, as PyTorch does. */
    if (o->reduction == KN_REDUCTION_SUM) r = kn_sum_all(loss);
    else if (o->reduction == KN_REDUCTION_MEAN) r = kn_div(kn_sum_all(loss), kn_sum_all(rw));
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
 * NULL, [3] log-sum-exp, [4] the weight sum; f[0] smoothing, i[0]
 * ignore_index, i[1] reduction. */
static kn_status cross_entropy_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *z = n->saved[0];
    kn_device dev = z->storage->device;
    kn_tensor *gc = kn__cast_raw(g, z->dtype);
    kn_tensor *out = gc ? kn__new(2, z->shape, z->dtype, dev) : NULL;
    kn_call c = {.op = KN_OP_CROSS_ENTROPY_BACKWARD, .device = dev,
                 .in = {gc, z, n->saved[1], n->saved[2], n->saved[3], n->saved[4]}, .out = {out},
                 .i = {n->i[0], n->i[1]}, .f = {n->f[0]}};
    bool ok = out && kn__run_ok(&c);
    kn_release(gc);
    if (!ok) return kn_error_code();
    gin[0] = kn__scoped(out);
    return KN_OK;
}

kn_tensor *kn_cross_entropy_ex(kn_tensor *logits, kn_tensor *target, const kn_loss_opts *opts) {
    const char *op = "cross_entropy";
    if (!logits || !target) return kn__err_null(op), NULL;
    kn_loss_opts o = opts ? *opts : kn_loss_opts_default();
    if (!nll_check(op, "logits", logits, target, &o)) return NULL;
    int64_t N = logits->shape[0];
    kn_device dev = logits->storage->device;
    bool ok = true;
    kn_tensor *z = prep(logits, logits->dtype, &ok);
    kn_tensor *w = ok ? prep(o.weight, logits->dtype, &ok) : NULL;
    kn_tensor *loss = ok ? kn__new(o.reduction == KN_REDUCTION_NONE ? 1 : 0, &N, logits->dtype, dev) : NULL;
    kn_tensor *lse = loss ? kn__new(1, &N, logits->dtype, dev) : NULL;
    kn_tensor *wsum = lse ? kn__new(0, NULL, logits->dtype, dev) : NULL;
    if (!wsum) {
        kn_release(z), kn_release(w), kn_release(loss), kn_release(lse);
        return NULL;
    }
    kn_call c = {.op = KN_OP_CROSS_ENTROPY, .device = dev, .in = {z, target, w}, .out = {loss, lse, wsum},
                 .i = {o.ignore_index, o.reduction}, .f = {o.label_smoothing}};
    if (kn__run_ok(&c)) {
        kn_node *n = kn__record(loss, op, cross_entropy_backward, 1, &logits);
        if (n) {
            kn__save(n, 0, z);
            kn__save(n, 1, target);
            kn__save(n, 2, w);
            kn__save(n, 3, lse);
            kn__save(n, 4, wsum);
            n->f[0] = o.label_smoothing;
            n->i[0] = o.ignore_index;
            n->i[1] = o.reduction;
        }
        kn_release(lse), kn_release(wsum);
    } else {
        loss = NULL;
    }
    kn_release(z), kn_release(w);
    return kn__scoped(loss);
}

kn_tensor *kn_cross_entropy(kn_tensor *logits, kn_tensor *target) {
    return kn_cross_entropy_ex(logits, target, NULL);
}

/* ---- mse_loss -------------------------------------------------------------------------------- */
kn_tensor *kn_mse_loss(kn_tensor *input, kn_tensor *target, kn_reduction reduction) {
    if (!input || !target) return kn__err_null("mse_loss"), NULL;
    if (!reduction_check("mse_loss", reduction)) return NULL;
    /* No broadcasting: [N, 1] against [N] is almost always a bug. */
    if (input->ndim != target->ndim || memcmp(input->shape, target->shape, (size_t)input->ndim * 8)) {
        char a[128], b[128];
        kn__err(KN_ERR_SHAPE, "mse_loss: input %s and target %s must have the same shape",
                kn__shape_str(input->ndim, input->shape, a, sizeof a),
                kn__shape_str(target->ndim, target->shape, b, sizeof b));
        return NULL;
    }
    kn_scope s = kn_scope_begin();
    kn_tensor *d = kn_sub(input, target);
    if (d && !kn_dtype_is_float(d->dtype)) d = kn_cast(d, KN_F32);
    kn_tensor *r = kn_mul(d, d);
    if (reduction == KN_REDUCTION_SUM) r = kn_sum_all(r);
    else if (reduction == KN_REDUCTION_MEAN) r = kn_mean_all(r);
    kn_keep(r);
    kn_scope_end(s);
    return r;
}

/* ---- batch_norm ---------------------------------------------------------------------------- */
/* The statistics dtype: float32 for float32/16/bf16 inputs, as PyTorch does. */
static kn_dtype stat_dtype(kn_dtype dt) { return dt == KN_F64 ? KN_F64 : KN_F32; }

/* saved[0] x as [N, C, L], [1] weight (x's dtype) or NULL, [2] mean, [3]
 * invstd; i[0] training. */
static kn_status batch_norm_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *x3 = n->saved[0], *x = n->in[0];
    kn_device dev = x3->storage->device;
    int64_t C = x3->shape[1];
    kn_tensor *gc = kn__cast_raw(g, x3->dtype);
    /* g has x's shape; as [N, C, L] it is a view (L = 1 for 2-D input). */
    kn_tensor *g3 = !gc ? NULL : gc->ndim == 3 ? kn_retain(gc)
                                   : kn__alias(gc, 3, x3->shape, (int64_t[]){gc->stride[0], gc->stride[1], 1},
                                               gc->offset);
    kn_release(gc);
    kn_tensor *gx = g3 ? kn__new(3, x3->shape, x3->dtype, dev) : NULL;
    kn_tensor *gw = gx && n->needs[1] ? kn__new(1, &C, x3->dtype, dev) : NULL;
    kn_tensor *gb = gx && n->needs[2] ? kn__new(1, &C, x3->dtype, dev) : NULL;
    if (!gx || (n->needs[1] && !gw) || (n->needs[2] && !gb)) {
        kn_release(g3), kn_release(gx), kn_release(gw), kn_release(gb);
        return kn_error_code();
    }
    kn_call c = {.op = KN_OP_BATCH_NORM_BACKWARD, .device = dev,
                 .in = {g3, x3, n->saved[1], n->saved[2], n->saved[3]}, .out = {gx, gw, gb},
                 .i = {n->i[0]}};
    bool ok = kn__run_ok(&c);
    kn_release(g3);
    if (!ok) return kn_error_code();
    if (n->needs[0]) gin[0] = kn__scoped(kn__view_raw(gx, x->ndim, x->shape));
    kn_release(gx);
    gin[1] = kn__scoped(gw);
    gin[2] = kn__scoped(gb);
    return n->needs[0] && !gin[0] ? kn_error_code() : KN_OK;
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

/* Bits of the updated-in-place inputs of a BATCH_NORM call. */
static unsigned bn_inout(bool training, const kn_tensor *count) {
    return training ? 3u << 3 | (count ? 1u << 5 : 0u) : 0u;
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
    int64_t N = x->shape[0], C = x->shape[1], L = x->ndim == 3 ? x->shape[2] : 1;
    kn_device dev = x->storage->device;
    int64_t shape3[3] = {N, C, L};
    bool ok = true;
    kn_tensor *xc = kn__contiguous_raw(x);
    kn_tensor *x3 = xc ? kn__view_raw(xc, 3, shape3) : NULL;
    kn_release(xc);
    kn_tensor *w = x3 ? prep(weight, x->dtype, &ok) : NULL;
    kn_tensor *b = x3 && ok ? prep(bias, x->dtype, &ok) : NULL;
    kn_tensor *y3 = x3 && ok ? kn__new(3, shape3, x->dtype, dev) : NULL;
    kn_tensor *mean = y3 ? kn__new(1, &C, stat_dtype(x->dtype), dev) : NULL;
    kn_tensor *invstd = mean ? kn__new(1, &C, stat_dtype(x->dtype), dev) : NULL;
    kn_tensor *y = NULL;
    if (!invstd) {
        kn_release(y3), kn_release(mean);
    } else {
        /* Running statistics are updated in place by the kernel: no tape. */
        kn_call c = {.op = KN_OP_BATCH_NORM, .device = dev,
                     .in = {x3, w, b, running_mean, running_var, count}, .out = {y3, mean, invstd},
                     .i = {training}, .f = {momentum, eps}, .inout = bn_inout(training, count)};
        if (kn__run_ok(&c)) { /* on failure it released the outputs */
            y = kn__view_raw(y3, x->ndim, x->shape);
            kn_tensor *ins[3] = {x, weight, bias};
            kn_node *n = kn__record(y, op, batch_norm_backward, 3, ins);
            if (n) {
                kn__save(n, 0, x3);
                kn__save(n, 1, w);
                kn__save(n, 2, mean);
                kn__save(n, 3, invstd);
                n->i[0] = training;
            }
            kn_release(y3), kn_release(mean), kn_release(invstd);
        }
    }
    kn_release(x3), kn_release(w), kn_release(b);
    return kn__scoped(y);
}

/* ---- linear (+ ReLU) -> batch_norm (+ dropout), fused ------------------------------------------
 * saved[0] x [N, in], [1] w (x's dtype), [2] a = act(x w^T + b) [N, C, 1]
 * (the norm's input), [3] the norm's weight (x's dtype) or NULL, [4] mean,
 * [5] invstd; i[0] training, i[1] seed, i[2] offset, i[3] act; f[0] the
 * dropout's p (0: none). Inputs: x, w, bias, weight, bias of the norm. */
static kn_status linear_bn_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *x = n->saved[0], *w = n->saved[1], *a3 = n->saved[2];
    kn_device dev = a3->storage->device;
    int64_t N = a3->shape[0], C = a3->shape[1];
    kn_tensor *gc = kn__cast_raw(g, a3->dtype);
    kn_tensor *g3 = gc ? kn__alias(gc, 3, a3->shape, (int64_t[]){gc->stride[0], gc->stride[1], 1}, gc->offset) : NULL;
    kn_release(gc);
    kn_tensor *gpre = g3 ? kn__new(3, a3->shape, a3->dtype, dev) : NULL;
    kn_tensor *gw = gpre && n->needs[3] ? kn__new(1, &C, a3->dtype, dev) : NULL;
    kn_tensor *gb = gpre && n->needs[4] ? kn__new(1, &C, a3->dtype, dev) : NULL;
    kn_tensor *glb = gpre && n->n_in > 2 && n->in[2] && n->needs[2] ? kn__new(1, &C, a3->dtype, dev) : NULL;
    bool want_glb = n->in[2] && n->needs[2];
    if (!gpre || (n->needs[3] && !gw) || (n->needs[4] && !gb) || (want_glb && !glb)) {
        kn_release(g3), kn_release(gpre), kn_release(gw), kn_release(gb), kn_release(glb);
        return kn_error_code();
    }
    kn_call c = {.op = KN_OP_BATCH_NORM_BACKWARD, .device = dev,
                 .in = {g3, a3, n->saved[3], n->saved[4], n->saved[5]}, .out = {gpre, gw, gb, glb},
                 .i = {n->i[0], n->i[1], n->i[2], n->i[3] == KN_ACT_RELU}, .f = {n->f[0]}};
    bool ok = kn__run_ok(&c);
    kn_release(g3);
    if (!ok) return kn_error_code();
    kn_tensor *g2 = kn__scoped(kn__view_raw(gpre, 2, (int64_t[]){N, C}));
    kn_release(gpre);
    gin[2] = kn__scoped(glb);
    gin[3] = kn__scoped(gw);
    gin[4] = kn__scoped(gb);
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
    kn_device dev = x->storage->device;
    bool ok = true;
    kn_tensor *cw = kn__cast_raw(w, x->dtype), *cb = cw && bias ? kn__cast_raw(bias, x->dtype) : NULL;
    kn_tensor *a = cw && (!bias || cb) ? kn__linear_raw(x, cw, cb, act) : NULL;
    /* The norm's checks, on the GEMM's output. */
    if (a && !batch_norm_check("batch_norm", a, o->running_mean, o->running_var, o->weight, o->bias, o->num_batches,
                               o->training)) {
        kn_release(a);
        a = NULL;
    }
    kn_tensor *nw = a ? prep(o->weight, x->dtype, &ok) : NULL;
    kn_tensor *nb = a && ok ? prep(o->bias, x->dtype, &ok) : NULL;
    kn_tensor *a3 = a && ok ? kn__view_raw(a, 3, (int64_t[]){N, C, 1}) : NULL;
    kn_release(a);
    kn_tensor *y3 = a3 ? kn__new(3, a3->shape, x->dtype, dev) : NULL;
    kn_tensor *mean = y3 ? kn__new(1, &C, stat_dtype(x->dtype), dev) : NULL;
    kn_tensor *invstd = mean ? kn__new(1, &C, stat_dtype(x->dtype), dev) : NULL;
    kn_tensor *y = NULL;
    if (invstd) {
        double p = o->dropout;
        uint64_t seed = 0, offset = 0;
        if (p > 0) {
            kn_generator *gen = o->gen ? o->gen : kn_default_generator();
            seed = gen->seed;
            offset = kn__generator_take(gen, N * C, 4);
        }
        kn_call c = {.op = KN_OP_BATCH_NORM, .device = dev,
                     .in = {a3, nw, nb, o->running_mean, o->running_var, o->num_batches}, .out = {y3, mean, invstd},
                     .i = {o->training, (int64_t)seed, (int64_t)offset}, .f = {o->momentum, o->eps, p},
                     .inout = bn_inout(o->training, o->num_batches)};
        if (kn__run_ok(&c)) {
            y = kn__view_raw(y3, 2, (int64_t[]){N, C});
            kn_tensor *ins[5] = {x, w, bias, o->weight, o->bias};
            kn_node *n = kn__record(y, op, linear_bn_backward, 5, ins);
            if (n) {
                kn__save(n, 0, x);
                kn__save(n, 1, cw);
                kn__save(n, 2, a3);
                kn__save(n, 3, nw);
                kn__save(n, 4, mean);
                kn__save(n, 5, invstd);
                n->i[0] = o->training;
                n->i[1] = (int64_t)seed;
                n->i[2] = (int64_t)offset;
                n->i[3] = act;
                n->f[0] = p;
            }
            kn_release(y3), kn_release(mean), kn_release(invstd);
        }
    } else {
        kn_release(y3), kn_release(mean);
    }
    kn_release(cw), kn_release(cb), kn_release(nw), kn_release(nb), kn_release(a3);
    return kn__scoped(y);
}

/* ---- layer_norm -------------------------------------------------------------------------------- */
/* saved[0] x (contiguous), [1] weight (x's dtype, contiguous) or NULL, [2]
 * mean, [3] invstd; i[0] = normalized elements. */
static kn_status layer_norm_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *x = n->saved[0];
    kn_device dev = x->storage->device;
    int64_t H = n->i[0];
    kn_tensor *gc = kn__cast_raw(g, x->dtype);
    kn_tensor *gx = gc ? kn__new(x->ndim, x->shape, x->dtype, dev) : NULL;
    kn_tensor *gw = gx && n->needs[1] ? kn__new(1, &H, x->dtype, dev) : NULL;
    kn_tensor *gb = gx && n->needs[2] ? kn__new(1, &H, x->dtype, dev) : NULL;
    if (!gx || (n->needs[1] && !gw) || (n->needs[2] && !gb)) {
        kn_release(gc), kn_release(gx), kn_release(gw), kn_release(gb);
        return kn_error_code();
    }
    kn_call c = {.op = KN_OP_LAYER_NORM_BACKWARD, .device = dev,
                 .in = {gc, x, n->saved[1], n->saved[2], n->saved[3]}, .out = {gx, gw, gb},
                 .i = {H}};
    bool ok = kn__run_ok(&c);
    kn_release(gc);
    if (!ok) return kn_error_code();
    if (n->needs[0]) gin[0] = kn__scoped(gx);
    else kn_release(gx);
    for (int k = 1; k < 3; k++) {
        kn_tensor *t = k == 1 ? gw : gb, *p = n->in[k];
        if (!t) continue;
        gin[k] = kn__scoped(kn__view_raw(t, p->ndim, p->shape));
        kn_release(t);
        if (!gin[k]) return kn_error_code();
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
    bool ok = true;
    kn_tensor *xc = kn__contiguous_raw(x);
    kn_tensor *w = xc ? prep(weight, x->dtype, &ok) : NULL;
    kn_tensor *b = xc && ok ? prep(bias, x->dtype, &ok) : NULL;
    kn_tensor *y = xc && ok ? kn__new(x->ndim, x->shape, x->dtype, dev) : NULL;
    kn_tensor *mean = y ? kn__new(1, &R, stat_dtype(x->dtype), dev) : NULL;
    kn_tensor *invstd = mean ? kn__new(1, &R, stat_dtype(x->dtype), dev) : NULL;
    bool ran = false;
    if (invstd) {
        kn_call c = {.op = KN_OP_LAYER_NORM, .device = dev, .in = {xc, w, b}, .out = {y, mean, invstd},
                     .i = {H}, .f = {eps}};
        ran = kn__run_ok(&c);
    }
    if (ran) {
        kn_tensor *ins[3] = {x, weight, bias};
        kn_node *n = kn__record(y, op, layer_norm_backward, 3, ins);
        if (n) {
            kn__save(n, 0, xc);
            kn__save(n, 1, w);
            kn__save(n, 2, mean);
            kn__save(n, 3, invstd);
            n->i[0] = H;
        }
        kn_release(mean), kn_release(invstd);
    } else if (!invstd) {
        kn_release(y), kn_release(mean);
    }
    kn_release(xc), kn_release(w), kn_release(b);
    return ran ? kn__scoped(y) : NULL;
}

/* ---- dropout ---------------------------------------------------------------------------------- */
/* The mask is not stored: the same Philox counters (seed i[1], offset i[2])
 * give the same keep decisions, so the backward is the dropout kernel applied
 * to the gradient. One pass, and no mask in memory between the passes. */
static kn_status dropout_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *gc = kn__contiguous_raw(g);
    kn_tensor *out = gc ? kn__new(g->ndim, g->shape, g->dtype, g->storage->device) : NULL;
    kn_call c = {.op = KN_OP_DROPOUT, .device = g->storage->device, .in = {gc}, .out = {out},
                 .i = {0, n->i[1], n->i[2]}, .f = {n->f[1]}};
    bool ok = out && kn__run_ok(&c);
    kn_release(gc);
    gin[0] = ok ? kn__scoped(out) : NULL;
    return ok ? KN_OK : kn_error_code();
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
    int64_t numel = kn__numel_shape(x->ndim, x->shape);
    kn_tensor *xc = kn__contiguous_raw(x);
    kn_tensor *y = xc ? kn__new(x->ndim, x->shape, x->dtype, dev) : NULL;
    if (!y) {
        kn_release(xc);
        return NULL;
    }
    uint64_t seed = gen->seed, offset = kn__generator_take(gen, numel, 4);
    kn_call c = {.op = KN_OP_DROPOUT, .device = dev, .in = {xc}, .out = {y},
                 .i = {0, (int64_t)seed, (int64_t)offset}, .f = {p}};
    bool ok = kn__run_ok(&c);
    kn_release(xc);
    if (!ok) return NULL;
    kn_node *n = kn__record(y, op, dropout_backward, 1, &x);
    if (n) {
        n->i[1] = (int64_t)seed;
        n->i[2] = (int64_t)offset;
        n->f[1] = p;
    }
    return kn__scoped(y);
}
