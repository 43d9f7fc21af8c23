/* kiln — automatic differentiation. Ops record a tape node when an input
 * requires grad; kn_backward walks it in reverse and accumulates gradients
 * into the leaves. */
#ifndef KILN_AUTOGRAD_H
#define KILN_AUTOGRAD_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Marks a leaf tensor as a parameter whose gradient is wanted. Returns t. */
kn_tensor *kn_requires_grad_(kn_tensor *t, bool requires_grad);
bool kn_requires_grad(const kn_tensor *t);
/* The accumulated gradient of a leaf (owned by t; NULL before any backward). */
kn_tensor *kn_grad(const kn_tensor *t);
/* Drops t's gradient (like zero_grad(set_to_none=True)). */
void kn_zero_grad(kn_tensor *t);
/* A view of t that shares storage but is cut from the tape. */
kn_tensor *kn_detach(kn_tensor *t);
/* True for tensors made by an op on the tape (not leaves). */
bool kn_has_grad_fn(const kn_tensor *t);
/* The name of the op that made t ("mul", "linear"), or NULL for leaves. */
const char *kn_grad_fn_name(const kn_tensor *t);

/* Backpropagates from a scalar (grad 1) or with an explicit gradient. The
 * tape behind `root` is freed afterwards; a second backward through it is an
 * error. */
kn_status kn_backward(kn_tensor *root);
kn_status kn_backward_with(kn_tensor *root, kn_tensor *grad);
/* The same, calling ready(leaf, ctx) once for each leaf that requires grad
 * as soon as its gradient is final in this backward (after the last op that
 * feeds it), in that order: what PyTorch's post-accumulate-grad hooks give
 * DistributedDataParallel, which starts a bucket's all-reduce while the
 * rest of backward runs (kn_dist_backward does). A leaf that gets no
 * gradient is not called. ready runs with autograd off; a status other
 * than KN_OK stops the walk and is returned. */
typedef kn_status (*kn_grad_ready_fn)(kn_tensor *leaf, void *ctx);
kn_status kn_backward_hooked(kn_tensor *root, kn_tensor *grad, kn_grad_ready_fn ready, void *ctx);

/* Regions where ops record nothing (nesting). */
void kn_no_grad_begin(void);
void kn_no_grad_end(void);
bool kn_grad_enabled(void);

/* Central finite differences on f64 copies of the inputs against the analytic
 * gradient of sum(f(inputs) * w) for a random w. Returns the largest relative
 * error found (negative on failure to run). */
typedef kn_tensor *(*kn_gradcheck_fn)(kn_tensor **inputs, void *ctx);
double kn_gradcheck(kn_gradcheck_fn f, int n, kn_tensor **inputs, void *ctx, double eps);

#ifdef __cplusplus
}
#endif
#endif
