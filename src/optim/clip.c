/* Gradient clipping, as torch.nn.utils.clip_grad_norm_ and clip_grad_value_:
 * ops on the gradients' own devices, one read of the total norm. */
#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* The parameter list is usable: n >= 0, no NULL entries. */
static bool list_check(const char *op, int n, kn_tensor *const *params) {
    if (n < 0 || (n > 0 && !params)) {
        kn__err(KN_ERR_INVALID, "%s: invalid parameter list", op);
        return false;
    }
    for (int i = 0; i < n; i++)
        if (!params[i]) return kn__err_null(op), false;
    return true;
}

/* The gradient a clip works on, or NULL: none yet, or empty. */
static kn_tensor *grad_of(kn_tensor *p) {
    kn_tensor *g = kn_grad(p);
    return g && kn_numel(g) > 0 ? g : NULL;
}

/* sum |g|^p (or max |g| for p = inf) of one gradient, a 0-d tensor in
 * float32 (float64 for float64 gradients): half-precision sums would lose
 * the small gradients. */
static kn_tensor *partial(kn_tensor *g, double p) {
    kn_tensor *a = kn_abs(kn_cast(g, kn_dtype_of(g) == KN_F64 ? KN_F64 : KN_F32));
    if (isinf(p)) return kn_max(a, 0, NULL, false);
    if (p == 1) return kn_sum_all(a);
    if (p == 2) return kn_sum_all(kn_mul(a, a));
    return kn_sum_all(kn_pow_scalar(a, p));
}

static bool warned_nonfinite;

double kn_clip_grad_norm(int n, kn_tensor *const *params, double max_norm, double norm_type, bool error_if_nonfinite) {
    const char *op = "clip_grad_norm";
    if (!list_check(op, n, params)) return -1;
    if (!(max_norm >= 0)) {
        kn__err(KN_ERR_INVALID, "%s: max_norm must be >= 0, got %g", op, max_norm);
        return -1;
    }
    if (!(norm_type > 0)) {
        kn__err(KN_ERR_INVALID, "%s: norm_type must be positive (2, or INFINITY for the largest element), got %g", op,
                norm_type);
        return -1;
    }
    kn_scope s = kn_scope_begin();
    kn_no_grad_begin();
    kn_tensor *total = NULL;
    kn_device dev = KN_CPU;
    bool ok = true;
    for (int i = 0; ok && i < n; i++) {
        kn_tensor *g = grad_of(params[i]);
        if (!g) continue;
        kn_tensor *part = partial(g, norm_type);
        if (!total) {
            dev = kn_device_of(g);
            total = part;
        } else {
            part = kn_to(part, dev); /* gradients on several devices: summed on the first's */
            total = isinf(norm_type) ? kn_maximum(total, part) : kn_add(total, part);
        }
        ok = total != NULL;
    }
    double norm = 0;
    if (ok && total) {
        ok = kn_to_host(total, &norm, KN_F64) == KN_OK; /* the one read (a synchronization) */
        if (ok && !isinf(norm_type)) norm = norm_type == 2 ? sqrt(norm) : pow(norm, 1 / norm_type);
    }
    if (ok && !isfinite(norm)) {
        if (error_if_nonfinite) {
            kn__err(KN_ERR_INVALID,
                    "%s: the total norm of the gradients is %g; the gradients are left unchanged "
                    "(pass error_if_nonfinite false to scale them anyway)",
                    op, norm);
            ok = false;
        } else if (!warned_nonfinite) {
            warned_nonfinite = true;
            fprintf(stderr, "kiln: warning: %s: the total norm of the gradients is %g; scaling them makes them %s "
                            "(warned once)\n", op, norm, isnan(norm) ? "NaN" : "0 or NaN");
        }
    }
    /* PyTorch's coefficient, clamped at 1; NaN when the norm is NaN. */
    double coef = max_norm / (norm + 1e-6);
    for (int i = 0; ok && i < n && !(coef >= 1); i++) {
        kn_tensor *g = grad_of(params[i]);
        if (g) ok = kn_copy_(g, kn_mul_scalar(g, coef)) == KN_OK;
    }
    kn_no_grad_end();
    kn_scope_end(s);
    return ok ? norm : -1;
}

kn_status kn_clip_grad_value(int n, kn_tensor *const *params, double clip) {
    const char *op = "clip_grad_value";
    if (!list_check(op, n, params)) return kn_error_code();
    if (!(clip >= 0)) return kn__err(KN_ERR_INVALID, "%s: clip must be >= 0, got %g", op, clip);
    kn_status st = KN_OK;
    kn_scope s = kn_scope_begin();
    kn_no_grad_begin();
    for (int i = 0; st == KN_OK && i < n; i++) {
        kn_tensor *g = grad_of(params[i]);
        if (g) st = kn_copy_(g, kn_clamp(g, -clip, clip));
    }
    kn_no_grad_end();
    kn_scope_end(s);
    return st;
}

/* A module's parameters as a list (NULL on error; free it). */
static kn_tensor **module_list(const char *op, kn_module *m, int *n) {
    if (!m) return kn__err_null(op), NULL;
    const kn_named_tensor *p = kn_module_parameters(m, n);
    if (!p && *n > 0) return NULL;
    kn_tensor **list = malloc(((size_t)*n + 1) * sizeof *list);
    if (!list) return kn__err(KN_ERR_OOM, "%s: out of memory", op), NULL;
    for (int i = 0; i < *n; i++) list[i] = p[i].tensor;
    return list;
}

double kn_module_clip_grad_norm(kn_module *m, double max_norm, double norm_type, bool error_if_nonfinite) {
    int n = 0;
    kn_tensor **list = module_list("clip_grad_norm", m, &n);
    double r = list ? kn_clip_grad_norm(n, list, max_norm, norm_type, error_if_nonfinite) : -1;
    free(list);
    return r;
}

kn_status kn_module_clip_grad_value(kn_module *m, double clip) {
    int n = 0;
    kn_tensor **list = module_list("clip_grad_value", m, &n);
    kn_status s = list ? kn_clip_grad_value(n, list, clip) : kn_error_code();
    free(list);
    return s;
}
