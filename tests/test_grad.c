/* Every backward rule against central finite differences in float64, on
 * every device present (the kernel-less test device included). */
#include "kn_test.h"
#include "ops/fused.h"

typedef kn_tensor *(*fn1)(kn_tensor **, void *);

#define F(name, expr)                                                         \
    static kn_tensor *name(kn_tensor **x, void *ctx) {                        \
        (void)ctx;                                                            \
        return (expr);                                                        \
    }

F(g_add, kn_add(x[0], x[1]))
F(g_sub, kn_sub(x[0], x[1]))
F(g_mul, kn_mul(x[0], x[1]))
F(g_div, kn_div(x[0], kn_add_scalar(kn_abs(x[1]), 0.5)))
F(g_pow, kn_pow(kn_add_scalar(kn_abs(x[0]), 0.5), x[1]))
F(g_max, kn_maximum(x[0], x[1]))
F(g_min, kn_minimum(x[0], x[1]))
F(g_where, kn_where(kn_gt(x[0], x[1]), x[0], kn_mul(x[1], x[1])))
F(g_neg, kn_neg(x[0]))
F(g_exp, kn_exp(x[0]))
F(g_log, kn_log(kn_add_scalar(kn_abs(x[0]), 0.5)))
F(g_sqrt, kn_sqrt(kn_add_scalar(kn_abs(x[0]), 0.5)))
F(g_abs, kn_abs(x[0]))
F(g_clamp, kn_clamp(x[0], -0.5, 0.5))
F(g_relu, kn_relu(x[0]))
F(g_leaky, kn_leaky_relu(x[0], 0.2))
F(g_gelu, kn_gelu(x[0]))
F(g_sigmoid, kn_sigmoid(x[0]))
F(g_tanh, kn_tanh(x[0]))
F(g_softplus, kn_softplus(x[0]))
F(g_sin, kn_sin(x[0]))
F(g_cos, kn_cos(kn_mul_scalar(x[0], 2)))
F(g_tan, kn_tan(kn_mul_scalar(x[0], 0.3)))
F(g_scalars, kn_rsub_scalar(kn_pow_scalar(kn_mul_scalar(kn_add_scalar(x[0], 2), 0.5), 3), 1))
F(g_sum, kn_sum(x[0], KN_DIMS(1), true))
F(g_sum_all, kn_sum_all(x[0]))
F(g_mean, kn_mean(x[0], KN_DIMS(0), false))
F(g_max_r, kn_max(x[0], KN_DIMS(1), false))
F(g_min_r, kn_min(x[0], KN_DIMS(0), true))
F(g_var, kn_var(x[0], KN_DIMS(0), 1, false))
F(g_std, kn_std(x[0], KN_DIMS(1), 0, true))
F(g_matmul, kn_matmul(x[0], x[1]))
F(g_bmm, kn_matmul(kn_reshape(x[0], KN_SHAPE(2, 2, 3)), kn_unsqueeze(x[1], 0)))
F(g_matvec, kn_matmul(x[0], kn_select(x[1], 1, 0)))
F(g_linear, kn_linear(x[0], kn_transpose(x[1], 0, 1), kn_select(x[1], 0, 1)))
F(g_views, kn_mul(kn_permute(kn_reshape(x[0], KN_SHAPE(2, 2, 3)), KN_DIMS(2, 0, 1)),
                  kn_expand(kn_unsqueeze(kn_narrow(kn_select(x[1], 1, 0), 0, 1, 2), 0), KN_SHAPE(3, 2, 2))))
F(g_slice, kn_squeeze(kn_slice(kn_flatten(x[0], 0, 1), 0, 1, 12, 3), 0))
F(g_concat, kn_concat(2, (kn_tensor *[]){x[0], kn_transpose(x[1], 0, 1)}, 0))
F(g_stack, kn_stack(2, (kn_tensor *[]){x[0], kn_mul(x[0], x[0])}, 1))
F(g_split, kn_mul(kn_narrow(x[0], 1, 0, 1), kn_narrow(x[0], 1, 2, 1)))
F(g_contig, kn_contiguous(kn_transpose(x[0], 0, 1)))
F(g_cast, kn_cast(kn_cast(x[0], KN_F32), KN_F64))

static kn_tensor *g_index_select(kn_tensor **x, void *ctx) {
    (void)ctx;
    int64_t idx[] = {2, 0, 2, 3};
    kn_tensor *i = kn_to(kn_from_data(idx, KN_I64, KN_SHAPE(4), KN_CPU), kn_device_of(x[0]));
    return kn_index_select(x[0], 0, i);
}
static kn_tensor *g_gather(kn_tensor **x, void *ctx) {
    (void)ctx;
    int64_t idx[] = {0, 2, 2, 1, 1, 1, 0, 0};
    kn_tensor *i = kn_to(kn_from_data(idx, KN_I64, KN_SHAPE(4, 2), KN_CPU), kn_device_of(x[0]));
    return kn_gather(x[0], 1, i);
}
static kn_tensor *g_embedding(kn_tensor **x, void *ctx) {
    (void)ctx;
    int64_t idx[] = {1, 1, 3, 0, 1};
    kn_tensor *i = kn_to(kn_from_data(idx, KN_I64, KN_SHAPE(5), KN_CPU), kn_device_of(x[0]));
    return kn_embedding(x[0], i);
}
static kn_tensor *g_index_add(kn_tensor **x, void *ctx) {
    (void)ctx;
    int64_t idx[] = {1, 1};
    kn_tensor *i = kn_to(kn_from_data(idx, KN_I64, KN_SHAPE(2), KN_CPU), kn_device_of(x[0]));
    return kn_index_add(x[0], 0, i, kn_narrow(x[0], 0, 2, 2));
}

F(g_softmax0, kn_softmax(x[0], 0))
F(g_softmax1, kn_softmax(x[0], 1))
F(g_log_softmax, kn_log_softmax(x[0], -1))

static kn_tensor *targets(kn_tensor *like) {
    int64_t t[] = {2, 0, 1, 2};
    return kn_to(kn_from_data(t, KN_I64, KN_SHAPE(4), KN_CPU), kn_device_of(like));
}
static kn_tensor *g_ce(kn_tensor **x, void *ctx) {
    (void)ctx;
    return kn_cross_entropy(x[0], targets(x[0]));
}
static kn_tensor *g_ce_opts(kn_tensor **x, void *ctx) {
    (void)ctx;
    double w[] = {0.5, 2.0, 1.0};
    kn_loss_opts o = kn_loss_opts_default();
    o.weight = kn_to(kn_from_data(w, KN_F64, KN_SHAPE(3), KN_CPU), kn_device_of(x[0]));
    o.label_smoothing = 0.1;
    o.ignore_index = 1;
    return kn_cross_entropy_ex(x[0], targets(x[0]), &o);
}
static kn_tensor *g_nll_sum(kn_tensor **x, void *ctx) {
    (void)ctx;
    kn_loss_opts o = kn_loss_opts_default();
    o.reduction = KN_REDUCTION_SUM;
    return kn_nll_loss(kn_log_softmax(x[0], 1), targets(x[0]), &o);
}
F(g_mse, kn_mse_loss(x[0], x[1], KN_REDUCTION_MEAN))
static kn_tensor *g_bn_train(kn_tensor **x, void *ctx) {
    (void)ctx;
    return kn_batch_norm(x[0], NULL, NULL, kn_select(x[1], 0, 0), kn_select(x[1], 0, 1), true, 0.1, 1e-5);
}
static kn_tensor *g_bn_eval(kn_tensor **x, void *ctx) {
    (void)ctx;
    /* Running statistics are constants here (not functions of the inputs). */
    double m[] = {0.1, -0.2, 0.3}, v[] = {0.5, 1.5, 2.0};
    kn_device d = kn_device_of(x[0]);
    kn_tensor *rm = kn_to(kn_from_data(m, KN_F64, KN_SHAPE(3), KN_CPU), d), *rv = kn_to(kn_from_data(v, KN_F64, KN_SHAPE(3), KN_CPU), d);
    return kn_batch_norm(x[0], rm, rv, kn_select(x[1], 0, 0), kn_select(x[1], 0, 1), false, 0.1, 1e-5);
}
static kn_tensor *g_ln(kn_tensor **x, void *ctx) {
    (void)ctx;
    return kn_layer_norm(kn_transpose(x[0], 0, 1), 1, kn_select(x[1], 1, 0), kn_select(x[1], 1, 1), 1e-5);
}
static kn_tensor *g_dropout(kn_tensor **x, void *ctx) {
    (void)ctx;
    kn_generator g = kn_generator_make(7); /* the same mask at every evaluation */
    return kn_dropout(x[0], 0.3, true, &g);
}

static kn_tensor *g_embedding_cat(kn_tensor **x, void *ctx) {
    (void)ctx;
    int64_t idx[] = {1, 2, 1, 0, 3, 2, 0, 0, 1, 1}; /* [5, 2]: rows of x[0] [4, 3] and of x[1] [3, 2] */
    kn_tensor *i = kn_to(kn_from_data(idx, KN_I64, KN_SHAPE(5, 2), KN_CPU), kn_device_of(x[0]));
    return kn_mul(kn_embedding_cat(2, x, i), kn_embedding_cat(2, x, i)); /* squared: gradients depend on values */
}
static kn_tensor *g_ce_sum(kn_tensor **x, void *ctx) {
    (void)ctx;
    kn_loss_opts o = kn_loss_opts_default();
    o.reduction = KN_REDUCTION_SUM;
    o.label_smoothing = 0.2;
    return kn_cross_entropy_ex(x[0], targets(x[0]), &o);
}
static kn_tensor *g_ce_none(kn_tensor **x, void *ctx) {
    (void)ctx;
    kn_loss_opts o = kn_loss_opts_default();
    o.reduction = KN_REDUCTION_NONE;
    o.ignore_index = 0;
    return kn_cross_entropy_ex(x[0], targets(x[0]), &o);
}
F(g_linear_relu, kn__linear_act(x[0], kn_narrow(x[1], 0, 0, 3), kn_select(x[1], 0, 3), KN_ACT_RELU))
/* x[0] [4, 3] input; x[1] [6, 3]: the Linear's weight (rows 0-2), its bias
 * (row 3), the norm's weight and bias (rows 4, 5). Dropout with a fixed
 * generator: the same mask at every evaluation. */
static kn_tensor *linear_bn_case(kn_tensor **x, kn_activation act, bool training, double p) {
    kn_generator g = kn_generator_make(11);
    double m[] = {0.1, -0.2, 0.3}, v[] = {0.5, 1.5, 2.0};
    kn_device d = kn_device_of(x[0]);
    kn__bn_opts o = {.weight = kn_select(x[1], 0, 4), .bias = kn_select(x[1], 0, 5), .training = training,
                     .momentum = 0.1, .eps = 1e-5, .dropout = p, .gen = &g};
    if (!training) { /* eval: fixed running statistics */
        o.running_mean = kn_to(kn_from_data(m, KN_F64, KN_SHAPE(3), KN_CPU), d);
        o.running_var = kn_to(kn_from_data(v, KN_F64, KN_SHAPE(3), KN_CPU), d);
    }
    return kn__linear_bn(x[0], kn_narrow(x[1], 0, 0, 3), kn_select(x[1], 0, 3), act, &o);
}
static kn_tensor *g_lbn_relu_drop(kn_tensor **x, void *c) { (void)c; return linear_bn_case(x, KN_ACT_RELU, true, 0.3); }
static kn_tensor *g_lbn_plain(kn_tensor **x, void *c) { (void)c; return linear_bn_case(x, KN_ACT_NONE, true, 0); }
static kn_tensor *g_lbn_eval(kn_tensor **x, void *c) { (void)c; return linear_bn_case(x, KN_ACT_RELU, false, 0); }

typedef struct {
    const char *name;
    fn1 f;
    int n;
    int64_t shapes[2][2];
} grad_case;

/* x[0] is [4, 3] unless said; x[1] [4, 3] or as given. */
static const grad_case cases[] = {
    {"add", g_add, 2, {{4, 3}, {1, 3}}},   {"sub", g_sub, 2, {{4, 3}, {4, 1}}},
    {"mul", g_mul, 2, {{4, 3}, {4, 3}}},   {"div", g_div, 2, {{4, 3}, {1, 3}}},
    {"pow", g_pow, 2, {{4, 3}, {4, 3}}},   {"maximum", g_max, 2, {{4, 3}, {4, 3}}},
    {"minimum", g_min, 2, {{4, 3}, {1, 3}}}, {"where", g_where, 2, {{4, 3}, {4, 3}}},
    {"neg", g_neg, 1, {{4, 3}}},           {"exp", g_exp, 1, {{4, 3}}},
    {"log", g_log, 1, {{4, 3}}},           {"sqrt", g_sqrt, 1, {{4, 3}}},
    {"abs", g_abs, 1, {{4, 3}}},           {"clamp", g_clamp, 1, {{4, 3}}},
    {"relu", g_relu, 1, {{4, 3}}},         {"leaky_relu", g_leaky, 1, {{4, 3}}},
    {"gelu", g_gelu, 1, {{4, 3}}},         {"sigmoid", g_sigmoid, 1, {{4, 3}}},
    {"tanh", g_tanh, 1, {{4, 3}}},         {"softplus", g_softplus, 1, {{4, 3}}},
    {"sin", g_sin, 1, {{4, 3}}},           {"cos", g_cos, 1, {{4, 3}}},
    {"tan", g_tan, 1, {{4, 3}}},
    {"scalar ops", g_scalars, 1, {{4, 3}}}, {"sum", g_sum, 1, {{4, 3}}},
    {"sum_all", g_sum_all, 1, {{4, 3}}},   {"mean", g_mean, 1, {{4, 3}}},
    {"max", g_max_r, 1, {{4, 3}}},         {"min", g_min_r, 1, {{4, 3}}},
    {"var", g_var, 1, {{4, 3}}},           {"std", g_std, 1, {{4, 3}}},
    {"matmul", g_matmul, 2, {{4, 3}, {3, 2}}}, {"batched matmul", g_bmm, 2, {{4, 3}, {3, 2}}},
    {"matvec", g_matvec, 2, {{4, 3}, {3, 2}}}, {"linear", g_linear, 2, {{4, 3}, {3, 2}}},
    {"views", g_views, 2, {{4, 3}, {3, 2}}}, {"slice", g_slice, 1, {{4, 3}}},
    {"concat", g_concat, 2, {{4, 3}, {3, 2}}}, {"stack", g_stack, 1, {{4, 3}}},
    {"split", g_split, 1, {{4, 3}}},       {"contiguous", g_contig, 1, {{4, 3}}},
    {"cast", g_cast, 1, {{4, 3}}},         {"index_select", g_index_select, 1, {{4, 3}}},
    {"gather", g_gather, 1, {{4, 3}}},     {"embedding", g_embedding, 1, {{4, 3}}},
    {"index_add", g_index_add, 1, {{4, 3}}}, {"softmax dim 0", g_softmax0, 1, {{4, 3}}},
    {"softmax dim 1", g_softmax1, 1, {{4, 3}}}, {"log_softmax", g_log_softmax, 1, {{4, 3}}},
    {"cross_entropy", g_ce, 1, {{4, 3}}},  {"cross_entropy weights+smoothing+ignore", g_ce_opts, 1, {{4, 3}}},
    {"nll sum", g_nll_sum, 1, {{4, 3}}},   {"mse", g_mse, 2, {{4, 3}, {4, 3}}},
    {"batch_norm train", g_bn_train, 2, {{4, 3}, {3, 3}}}, {"batch_norm eval", g_bn_eval, 2, {{4, 3}, {3, 3}}},
    {"layer_norm", g_ln, 2, {{4, 3}, {4, 2}}}, {"dropout", g_dropout, 1, {{4, 3}}},
    {"embedding_cat", g_embedding_cat, 2, {{4, 3}, {3, 2}}}, {"cross_entropy sum, smoothing", g_ce_sum, 1, {{4, 3}}},
    {"cross_entropy none, ignore", g_ce_none, 1, {{4, 3}}}, {"linear+relu", g_linear_relu, 2, {{4, 3}, {4, 3}}},
    {"linear+relu+batch_norm+dropout", g_lbn_relu_drop, 2, {{4, 3}, {6, 3}}},
    {"linear+batch_norm", g_lbn_plain, 2, {{4, 3}, {6, 3}}},
    {"linear+relu+batch_norm eval", g_lbn_eval, 2, {{4, 3}, {6, 3}}},
};

/* kn_backward_hooked: each leaf once, when its gradient is final (the
 * gradient then is the one backward ends with), in the order they become
 * final; a failing hook stops the walk. */
typedef struct {
    int calls, fail_at;
    kn_tensor *leaf[8], *seen[8];
} hook_log;
static kn_status log_ready(kn_tensor *leaf, void *ctx) {
    hook_log *h = ctx;
    if (h->calls == h->fail_at) return KN_ERR_INVALID;
    if (h->calls < 8) h->leaf[h->calls] = leaf, h->seen[h->calls] = kn_retain(kn_clone(kn_grad(leaf)));
    h->calls++;
    return KN_OK;
}
static void test_hooks(void) {
    kn_scope s = kn_scope_begin();
    kn_generator g = kn_generator_make(4);
    kn_tensor *x = kn_randn(KN_SHAPE(5, 4), KN_F64, KN_CPU, &g);
    kn_tensor *w1 = kn_requires_grad_(kn_randn(KN_SHAPE(4, 3), KN_F64, KN_CPU, &g), true);
    kn_tensor *b1 = kn_requires_grad_(kn_randn(KN_SHAPE(3), KN_F64, KN_CPU, &g), true);
    kn_tensor *w2 = kn_requires_grad_(kn_randn(KN_SHAPE(3, 2), KN_F64, KN_CPU, &g), true);
    kn_tensor *unused = kn_requires_grad_(kn_randn(KN_SHAPE(2), KN_F64, KN_CPU, &g), true);
    (void)unused;
    /* w2 twice: in the second layer and in a penalty taken last, whose
     * gradient comes first; w2 is final only after the second layer's. */
    kn_tensor *y = kn_matmul(kn_relu(kn_add(kn_matmul(x, w1), b1)), w2);
    kn_tensor *loss = kn_add(kn_sum_all(y), kn_sum_all(kn_mul(w2, w2)));
    hook_log h = {.fail_at = -1};
    CHECK(kn_backward_hooked(loss, NULL, log_ready, &h) == KN_OK, "hooked backward: %s", kn_error());
    CHECK(h.calls == 3, "three leaves got gradients, one call each (%d calls)", h.calls);
    kn_tensor *want[3] = {w2, b1, w1};
    for (int i = 0; i < 3 && i < h.calls; i++) {
        CHECK(h.leaf[i] == want[i], "leaf %d final in order (w2, then b1, then w1)", i);
        kn_tensor *d = kn_sum_all(kn_abs(kn_sub(h.seen[i], kn_grad(h.leaf[i]))));
        CHECK(d && kn_item(d) == 0, "leaf %d: the gradient at its hook is the final one", i);
    }
    for (int i = 0; i < h.calls && i < 8; i++) kn_release(h.seen[i]);
    /* A failing hook: the error comes back and the walk stops there. */
    kn_tensor *loss2 = kn_sum_all(kn_matmul(kn_relu(kn_add(kn_matmul(x, w1), b1)), w2));
    hook_log f = {.fail_at = 1};
    CHECK(kn_backward_hooked(loss2, NULL, log_ready, &f) == KN_ERR_INVALID && f.calls == 1,
          "a failing hook stops backward (%d calls)", f.calls);
    CHECK_ERROR("a gradient hook failed");
    kn_error_clear();
    CHECK(kn_backward(loss2) != KN_OK, "and its tape is spent");
    kn_error_clear();
    for (int i = 0; i < f.calls && i < 8; i++) kn_release(f.seen[i]);
    /* A leaf as the root: called at once. */
    hook_log l = {.fail_at = -1};
    CHECK(kn_backward_hooked(b1, kn_ones_like(b1), log_ready, &l) == KN_OK && l.calls == 1 && l.leaf[0] == b1,
          "a leaf root's hook (%d calls)", l.calls);
    for (int i = 0; i < l.calls && i < 8; i++) kn_release(l.seen[i]);
    kn_scope_end(s);
}

int main(void) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    kn_device devs[8];
    int nd = kt_devices(devs, 8);
    for (int d = 0; d < nd; d++) {
        int before = kt_failed;
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            kn_scope s = kn_scope_begin();
            kn_generator g = kn_generator_make(100 + c);
            kn_tensor *x[2];
            for (int k = 0; k < cases[c].n; k++)
                x[k] = kn_to(kn_randn(2, cases[c].shapes[k], KN_F64, KN_CPU, &g), devs[d]);
            double err = kn_gradcheck(cases[c].f, cases[c].n, x, NULL,
                                      cases[c].f == g_cast ? 1e-2 : 1e-6); /* through float32: a larger step */
            CHECK(err >= 0 && err < 1e-5, "gradcheck %s on %s: error %g", cases[c].name, kn_device_str(devs[d]), err);
            kn_scope_end(s);
        }
        printf("gradients on %s: %s\n", kn_device_str(devs[d]), kt_failed == before ? "all passed" : "FAILURES");
    }
    test_hooks();
    /* A non-differentiable path is an error, not a crash. */
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_requires_grad_(kn_randn(KN_SHAPE(3), KN_F64, KN_CPU, NULL), true);
    kn_tensor *y = kn_sum_all(kn_cast(kn_argmax(kn_unsqueeze(a, 0), 1, false), KN_F64));
    CHECK(kn_backward(y) != KN_OK, "backward through argmax fails");
    CHECK_ERROR("does not require grad");
    kn_scope_end(s);
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("grad");
}
