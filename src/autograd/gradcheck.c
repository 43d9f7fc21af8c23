/* Gradient checking: analytic gradients from kn_backward against central
 * finite differences, in float64, on the inputs' own device. */
#include "core/internal.h"

#include <math.h>
#include <stdlib.h>

/* sum(f(inputs) * w) as a host double (grad mode as the caller set it). */
static kn_tensor *weighted(kn_gradcheck_fn f, kn_tensor **in, void *ctx, kn_tensor **w) {
    kn_tensor *out = f(in, ctx);
    if (!out) return NULL;
    if (!*w) {
        kn_generator g = kn_generator_make(1234);
        *w = kn_randn(out->ndim, out->shape, KN_F64, out->storage->device, &g); /* lives in the caller's outer scope */
    }
    return kn_sum_all(kn_mul(kn_cast(out, KN_F64), *w));
}

double kn_gradcheck(kn_gradcheck_fn f, int n, kn_tensor **inputs, void *ctx, double eps) {
    if (n <= 0 || n > 16 || !inputs || !f) {
        kn__err(KN_ERR_INVALID, "gradcheck: invalid arguments");
        return -1;
    }
    kn_scope outer = kn_scope_begin();
    kn_tensor *x[16] = {0}, *w = NULL;
    double *host[16] = {0}, worst = 0;
    bool ok = true;
    for (int k = 0; k < n && ok; k++) {
        if (!inputs[k]) { ok = false; break; }
        bool fl = kn_dtype_is_float(inputs[k]->dtype);
        kn_tensor *c = fl ? kn_to_dtype(kn_detach(inputs[k]), inputs[k]->storage->device, KN_F64)
                          : inputs[k];
        x[k] = fl ? kn_clone(c) : c;
        if (!x[k]) { ok = false; break; }
        if (fl) {
            kn_requires_grad_(x[k], true);
            int64_t m = kn_numel(x[k]);
            host[k] = malloc((size_t)(m ? m : 1) * sizeof(double));
            if (!host[k] || kn_to_host(x[k], host[k], KN_F64) != KN_OK) ok = false;
        }
    }
    /* Analytic. */
    kn_tensor *L = ok ? weighted(f, x, ctx, &w) : NULL;
    if (!L || kn_backward(L) != KN_OK) ok = false;
    for (int k = 0; k < n && ok; k++) {
        if (!host[k]) continue;
        int64_t m = kn_numel(x[k]);
        double *ag = malloc((size_t)(m ? m : 1) * sizeof(double));
        kn_tensor *g = kn_grad(x[k]);
        if (!ag) { ok = false; break; }
        if (g) ok = kn_to_host(g, ag, KN_F64) == KN_OK;
        else for (int64_t j = 0; j < m; j++) ag[j] = 0;
        kn_no_grad_begin();
        for (int64_t j = 0; j < m && ok; j++) {
            double v = host[k][j], lp, lm;
            kn_tensor *saved = x[k];
            kn_scope s = kn_scope_begin();
            host[k][j] = v + eps;
            x[k] = kn_from_data(host[k], KN_F64, saved->ndim, saved->shape, saved->storage->device);
            kn_tensor *Lp = x[k] ? weighted(f, x, ctx, &w) : NULL;
            host[k][j] = v - eps;
            x[k] = kn_from_data(host[k], KN_F64, saved->ndim, saved->shape, saved->storage->device);
            kn_tensor *Lm = x[k] ? weighted(f, x, ctx, &w) : NULL;
            host[k][j] = v;
            x[k] = saved;
            if (!Lp || !Lm) ok = false;
            else {
                lp = kn_item(Lp);
                lm = kn_item(Lm);
                double num = (lp - lm) / (2 * eps), a = ag[j];
                double err = fabs(num - a) / fmax(1.0, fmax(fabs(num), fabs(a)));
                if (err != err) err = INFINITY;
                if (err > worst) worst = err;
            }
            kn_scope_end(s);
        }
        kn_no_grad_end();
        free(ag);
    }
    for (int k = 0; k < n; k++) free(host[k]);
    kn_scope_end(outer);
    return ok ? worst : -1;
}
