/* Optimizers: SGD (momentum, Nesterov, weight decay), Adam and AdamW. Each
 * parameter's update is one fused kernel (KN_OP_SGD / KN_OP_ADAM) on the
 * parameter's own device, or its composite where the backend has none. */
#include "ops/ops_internal.h" /* kn__run: fused ops with their composites */
#include "optim/optim_internal.h"

#include <math.h>
#include <stdlib.h>

kn_sgd_opts kn_sgd_defaults(double lr) { return (kn_sgd_opts){lr, 0, 0, 0, false}; }
kn_adam_opts kn_adam_defaults(double lr) { return (kn_adam_opts){lr, 0.9, 0.999, 1e-8, 0}; }
kn_adam_opts kn_adamw_defaults(double lr) { return (kn_adam_opts){lr, 0.9, 0.999, 1e-8, 0.01}; } /* torch.optim.AdamW */

static kn_optim *make(const char *name, opt_kind kind, int n, kn_tensor *const *params, double lr) {
    if (n < 0 || (n && !params)) {
        kn__err(KN_ERR_INVALID, "%s: invalid parameter list", name);
        return NULL;
    }
    if (!(lr >= 0)) {
        kn__err(KN_ERR_INVALID, "%s: invalid learning rate %g", name, lr);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (!params[i]) return kn__err_null(name), NULL;
        if (!kn_requires_grad(params[i])) {
            kn__err(KN_ERR_INVALID, "%s: parameter %d does not require grad", name, i);
            return NULL;
        }
    }
    kn_optim *o = calloc(1, sizeof *o);
    if (o) {
        o->params = calloc((size_t)n + 1, sizeof *o->params);
        o->state_a = calloc((size_t)n + 1, sizeof *o->state_a);
        o->state_b = calloc((size_t)n + 1, sizeof *o->state_b);
    }
    if (!o || !o->params || !o->state_a || !o->state_b) {
        kn_optim_free(o);
        kn__err(KN_ERR_OOM, "%s: out of memory", name);
        return NULL;
    }
    o->kind = kind;
    o->n = n;
    o->lr = lr;
    for (int i = 0; i < n; i++) o->params[i] = kn_retain(params[i]);
    return o;
}

static kn_optim *from_module(kn_module *m, const char *name, opt_kind kind, double lr) {
    if (!m) return kn__err_null(name), NULL;
    int n = 0;
    const kn_named_tensor *p = kn_module_parameters(m, &n);
    if (!p) return NULL;
    kn_tensor **list = malloc(((size_t)n + 1) * sizeof *list);
    if (!list) return kn__err(KN_ERR_OOM, "%s: out of memory", name), NULL;
    for (int i = 0; i < n; i++) list[i] = p[i].tensor;
    kn_optim *o = make(name, kind, n, list, lr);
    free(list);
    return o;
}

static bool check_sgd(kn_sgd_opts o) {
    if (o.momentum < 0 || o.weight_decay < 0 || (o.nesterov && (o.momentum <= 0 || o.dampening != 0))) {
        kn__err(KN_ERR_INVALID, "sgd: invalid options (momentum >= 0, weight_decay >= 0; Nesterov needs momentum > 0 and no dampening)");
        return false;
    }
    return true;
}

static bool check_adam(kn_adam_opts o) {
    if (!(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps >= 0 && o.weight_decay >= 0)) {
        kn__err(KN_ERR_INVALID, "adam: invalid options (betas in [0, 1), eps >= 0, weight_decay >= 0)");
        return false;
    }
    return true;
}

kn_optim *kn_sgd_params(int n, kn_tensor *const *params, kn_sgd_opts opts) {
    if (!check_sgd(opts)) return NULL;
    kn_optim *o = make("sgd", OPT_SGD, n, params, opts.lr);
    if (o) o->sgd = opts;
    return o;
}
kn_optim *kn_sgd(kn_module *m, kn_sgd_opts opts) {
    if (!check_sgd(opts)) return NULL;
    kn_optim *o = from_module(m, "sgd", OPT_SGD, opts.lr);
    if (o) o->sgd = opts;
    return o;
}

static kn_optim *adam_common(kn_module *m, int n, kn_tensor *const *params, kn_adam_opts opts, opt_kind kind) {
    const char *name = kind == OPT_ADAM ? "adam" : "adamw";
    if (!check_adam(opts)) return NULL;
    kn_optim *o = m ? from_module(m, name, kind, opts.lr) : make(name, kind, n, params, opts.lr);
    if (o) o->adam = opts;
    return o;
}
kn_optim *kn_adam(kn_module *m, kn_adam_opts opts) {
    if (!m) return kn__err_null("adam"), NULL;
    return adam_common(m, 0, NULL, opts, OPT_ADAM);
}
kn_optim *kn_adam_params(int n, kn_tensor *const *p, kn_adam_opts opts) {
    return adam_common(NULL, n, p, opts, OPT_ADAM);
}
kn_optim *kn_adamw(kn_module *m, kn_adam_opts opts) {
    if (!m) return kn__err_null("adamw"), NULL;
    return adam_common(m, 0, NULL, opts, OPT_ADAMW);
}
kn_optim *kn_adamw_params(int n, kn_tensor *const *p, kn_adam_opts opts) {
    return adam_common(NULL, n, p, opts, OPT_ADAMW);
}

/* Moves optimizer state to where its parameter now lives (the model moved). */
static kn_status follow(kn_tensor **state, const kn_tensor *p) {
    kn_tensor *t = *state;
    if (!t || (kn_device_equal(t->storage->device, p->storage->device) && t->dtype == p->dtype)) return KN_OK;
    kn_scope s = kn_scope_begin();
    kn_no_grad_begin();
    kn_tensor *m = kn_to_dtype(t, p->storage->device, p->dtype);
    kn_no_grad_end();
    kn_retain(m);
    kn_scope_end(s);
    if (!m) return kn_error_code();
    kn_release(t);
    *state = m;
    return KN_OK;
}

/* Optimizer state lives beside the parameter, in its dtype, in no scope. */
static kn_tensor *state_like(kn_tensor *p) {
    kn_tensor *t = kn__new_like(p);
    if (!t) return NULL;
    kn_fill_args a = {.out = kn__view(t), .value = 0};
    return kn__run_out(KN_OP_FILL, p->storage->device, &a, t);
}

/* Advances the device-side step counter Adam reads (t += 1 on the device). */
static kn_status advance_step(kn_optim *o, kn_device dev) {
    if (!o->step_t) {
        o->step_t = kn__new(0, NULL, KN_F32, dev);
        if (!o->step_t) return kn_error_code();
        kn_fill_args z = {.out = kn__view(o->step_t), .value = (double)o->steps - 1};
        if (kn__run(KN_OP_FILL, dev, &z) != KN_OK) return kn_error_code();
    }
    kn_operand t = kn__view(o->step_t);
    kn_unary_args a = {.out = t, .x = t, .fn = KN_UNARY_ADD_SCALAR, .p0 = 1};
    return kn__run(KN_OP_UNARY, dev, &a);
}

kn_status kn_optim_step(kn_optim *o) {
    if (!o) return kn__err_null("optim_step"), KN_ERR_NULL;
    o->steps++;
    if (o->kind != OPT_SGD && o->n > 0) {
        kn_device dev = o->params[0]->storage->device;
        if (o->step_t && !kn_device_equal(o->step_t->storage->device, dev)) { /* the model moved */
            kn_release(o->step_t);
            o->step_t = NULL;
        }
        kn_status s = advance_step(o, dev);
        if (s != KN_OK) return s;
    }
    for (int i = 0; i < o->n; i++) {
        kn_tensor *p = o->params[i], *g = p->grad;
        if (!g) continue;
        if (!kn__is_contiguous(p))
            return kn__err(KN_ERR_INVALID, "optim_step: parameter %d is not contiguous", i);
        if (!kn_device_equal(p->storage->device, g->storage->device) ||
            g->ndim != p->ndim || !kn__is_contiguous(g))
            return kn__err(KN_ERR_INVALID, "optim_step: gradient of parameter %d does not match it", i);
        kn_status fs = follow(&o->state_a[i], p);
        if (fs == KN_OK) fs = follow(&o->state_b[i], p);
        if (fs != KN_OK) return fs;
        kn_device dev = p->storage->device;
        kn_status s;
        if (o->kind == OPT_SGD) {
            bool fresh = false;
            if (o->sgd.momentum > 0 && !o->state_a[i]) {
                if (!(o->state_a[i] = state_like(p))) return kn_error_code();
                fresh = true;
            }
            kn_sgd_args a = {.param = kn__view(p), .buf = kn__view(o->state_a[i]), .grad = kn__view(g),
                             .lr = o->lr, .momentum = o->sgd.momentum, .dampening = o->sgd.dampening,
                             .weight_decay = o->sgd.weight_decay, .nesterov = o->sgd.nesterov, .fresh = fresh};
            s = kn__run(KN_OP_SGD, dev, &a);
        } else {
            if (!o->state_a[i] && !(o->state_a[i] = state_like(p))) return kn_error_code();
            if (!o->state_b[i] && !(o->state_b[i] = state_like(p))) return kn_error_code();
            if (!kn_device_equal(o->step_t->storage->device, p->storage->device))
                return kn__err(KN_ERR_DEVICE, "optim_step: parameters on different devices (%s and %s)",
                               kn_device_str(o->step_t->storage->device), kn_device_str(p->storage->device));
            kn_adam_args a = {.param = kn__view(p), .m = kn__view(o->state_a[i]), .v = kn__view(o->state_b[i]),
                              .grad = kn__view(g), .step = kn__view(o->step_t), .lr = o->lr,
                              .beta1 = o->adam.beta1, .beta2 = o->adam.beta2, .eps = o->adam.eps,
                              .weight_decay = o->adam.weight_decay, .decoupled = o->kind == OPT_ADAMW};
            s = kn__run(KN_OP_ADAM, dev, &a);
        }
        if (s != KN_OK) return s;
    }
    return KN_OK;
}

void kn_optim_zero_grad(kn_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) kn_zero_grad(o->params[i]);
}

double kn_optim_lr(const kn_optim *o) { return o ? o->lr : NAN; }
void kn_optim_set_lr(kn_optim *o, double lr) {
    if (o) o->lr = lr;
}
int64_t kn_optim_steps(const kn_optim *o) { return o ? o->steps : 0; }

void kn_optim_free(kn_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        if (o->params) kn_release(o->params[i]);
        if (o->state_a) kn_release(o->state_a[i]);
        if (o->state_b) kn_release(o->state_b[i]);
    }
    kn_release(o->step_t);
    free(o->params);
    free(o->state_a);
    free(o->state_b);
    free(o);
}
