/* Regressions: one check per defect found in review, so none comes back. */
#include "kn_test.h"

#include <stdint.h>

/* Batch broadcasting where a size-1 batch dim sits between real ones. */
static void matmul_broadcast_batches(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_randn(KN_SHAPE(1, 1, 3, 4, 5), KN_F32, KN_CPU, NULL);
    kn_tensor *b = kn_randn(KN_SHAPE(2, 1, 3, 5, 2), KN_F32, KN_CPU, NULL);
    kn_tensor *c = kn_matmul(a, b);
    CHECK(c && kn_ndim(c) == 5 && kn_size(c, 0) == 2 && kn_size(c, 2) == 3, "shape");
    double worst = 0;
    for (int i = 0; i < 2 && c; i++)
        for (int j = 0; j < 3; j++) {
            kn_tensor *ref = kn_matmul(kn_select(kn_select(kn_select(a, 0, 0), 0, 0), 0, j),
                                       kn_select(kn_select(kn_select(b, 0, i), 0, 0), 0, j));
            kn_tensor *got = kn_select(kn_select(kn_select(c, 0, i), 0, 0), 0, j);
            double d = kn_item(kn_max(kn_abs(kn_sub(ref, got)), 0, NULL, false));
            if (d > worst) worst = d;
        }
    CHECK(worst < 1e-5, "each batch equals its own matmul (worst %g)", worst);
    kn_scope_end(s);
}

static void reduce_empty_rows(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_zeros(KN_SHAPE(0, 1000), KN_F32, KN_CPU);
    kn_tensor *r = kn_sum(x, KN_DIMS(1), false);
    CHECK(r && kn_numel(r) == 0, "sum over the columns of 0 rows is empty");
    CHECK(kn_mean(x, KN_DIMS(1), true) && kn_var(x, KN_DIMS(1), 1, false), "mean and var too");
    kn_scope_end(s);
}

static void scope_overflow(void) {
    kn_scope outer = kn_scope_begin();
    kn_tensor *a = kn_ones(KN_SHAPE(4), KN_F32, KN_CPU);
    kn_scope scopes[300];
    int n = 0;
    for (; n < 300; n++) {
        scopes[n] = kn_scope_begin();
        if (scopes[n].depth < 0) break;
    }
    CHECK(n < 300 && scopes[n].depth < 0, "nesting beyond the limit fails");
    CHECK_ERROR("nested scopes");
    kn_scope_end(scopes[n]); /* must free nothing */
    for (int i = n - 1; i >= 0; i--) kn_scope_end(scopes[i]);
    CHECK(kn_get(a, (int64_t[]){0}) == 1, "the outer tensor survives");
    kn_scope_end(outer);
}

static void leaf_grads_are_own(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_requires_grad_(kn_ones(KN_SHAPE(3), KN_F32, KN_CPU), true);
    kn_tensor *b = kn_requires_grad_(kn_ones(KN_SHAPE(3), KN_F32, KN_CPU), true);
    kn_tensor *g = kn_full(KN_SHAPE(3), 2, KN_F32, KN_CPU);
    CHECK(kn_backward_with(kn_add(a, b), g) == KN_OK, "backward");
    CHECK(kn_grad(a) != kn_grad(b) && kn_grad(a) != g && !kn_shares_storage(kn_grad(a), g), "separate gradients");
    kn_fill_(kn_grad(b), 0);
    CHECK(kn_get(kn_grad(a), (int64_t[]){0}) == 2 && kn_get(g, (int64_t[]){0}) == 2, "writing one leaves the others");
    kn_scope_end(s);
}

static void inplace_and_autograd(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_requires_grad_(kn_ones(KN_SHAPE(3), KN_F32, KN_CPU), true);
    kn_tensor *y = kn_exp(x);
    CHECK(kn_fill_(y, 0) != KN_OK, "fill_ into an op's result while recording");
    CHECK_ERROR("made by 'exp'");
    CHECK(kn_copy_(y, kn_zeros(KN_SHAPE(3), KN_F32, KN_CPU)) != KN_OK, "copy_ likewise");
    /* Writing a saved tensor through a detached view is caught at backward. */
    kn_tensor *z = kn_exp(x);
    CHECK(kn_fill_(kn_detach(z), 0) == KN_OK, "a detached view may be written");
    CHECK(kn_backward(kn_sum_all(z)) != KN_OK, "backward notices the saved output changed");
    CHECK_ERROR("modified in place");
    kn_scope_end(s);
}

static void argument_checks(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *t = kn_ones(KN_SHAPE(3), KN_F32, KN_CPU);
    CHECK(kn_expand(t, KN_SHAPE(-1, 3)) == NULL, "expand refuses -1 for a new dim");
    CHECK_ERROR("expand: invalid size -1");
    CHECK(kn_expand(t, KN_SHAPE(-5, 3)) == NULL, "expand refuses negative sizes");
    CHECK(kn_from_data(NULL, KN_F32, 0, NULL, KN_CPU) == NULL, "from_data NULL for a 0-d tensor");
    CHECK_ERROR("from_data: data is NULL");
    CHECK(kn_from_data(NULL, KN_F32, 2, NULL, KN_CPU) == NULL, "from_data NULL shape");
    kn_tensor *r = kn_slice(kn_arange(0, 10, 1, KN_F32, KN_CPU), 0, 0, 10, INT64_MAX);
    CHECK(r && kn_numel(r) == 1 && kn_get(r, (int64_t[]){0}) == 0, "slice with a huge step");
    CHECK(isnan(kn_get(t, NULL)), "get with a NULL index");
    kn_scope_end(s);
}

/* Adam's state moves with the parameters when the model moves. */
static void optimizer_follows_model(void) {
    kn_device dev = kt_register_test_device();
    kn_module *m = kn_nn_linear(3, 2, true);
    kn_optim *o = kn_adam(m, kn_adam_defaults(0.1));
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_ones(KN_SHAPE(4, 3), KN_F32, KN_CPU);
    kn_backward(kn_sum_all(kn_module_forward(m, x)));
    CHECK(kn_optim_step(o) == KN_OK, "step on the CPU");
    kn_scope_end(s);
    CHECK(kn_module_to(m, dev) == KN_OK, "model moved");
    s = kn_scope_begin();
    x = kn_ones(KN_SHAPE(4, 3), KN_F32, dev);
    kn_backward(kn_sum_all(kn_module_forward(m, x)));
    CHECK(kn_optim_step(o) == KN_OK, "step on the new device, with the old state");
    kn_scope_end(s);
    kn_optim_free(o);
    kn_module_free(m);
}

/* A 0-d operand does not widen a tensor of its kind (PyTorch's rule). */
static void scalar_promotion(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_ones(KN_SHAPE(3), KN_F32, KN_CPU), *i = kn_ones(KN_SHAPE(3), KN_I32, KN_CPU);
    CHECK(kn_dtype_of(kn_mul(x, kn_scalar(2, KN_F64, KN_CPU))) == KN_F32, "f32 * f64 scalar stays f32");
    CHECK(kn_dtype_of(kn_add(i, kn_scalar(2, KN_I64, KN_CPU))) == KN_I32, "i32 + i64 scalar stays i32");
    CHECK(kn_dtype_of(kn_mul(i, kn_scalar(0.5, KN_F64, KN_CPU))) == KN_F32, "int tensor * float scalar is f32");
    CHECK(kn_get(kn_mul(i, kn_scalar(0.5, KN_F64, KN_CPU)), (int64_t[]){0}) == 0.5, "and computes in float");
    CHECK(kn_dtype_of(kn_mul(x, kn_ones(KN_SHAPE(3), KN_F64, KN_CPU))) == KN_F64, "tensors still promote");
    CHECK(kn_dtype_of(kn_mul(kn_scalar(2, KN_F32, KN_CPU), kn_scalar(2, KN_F64, KN_CPU))) == KN_F64, "two scalars promote");
    kn_scope_end(s);
}

int main(void) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    matmul_broadcast_batches();
    reduce_empty_rows();
    scope_overflow();
    leaf_grads_are_own();
    inplace_and_autograd();
    argument_checks();
    optimizer_follows_model();
    scalar_promotion();
    kn_error_clear();
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("regressions");
}
