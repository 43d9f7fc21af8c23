/* The backend harness's cases: builders that run each op through the public
 * API, graph-replay steps, and the table of cases (test_backend_ops.c runs it). */
#include "kt_cases.h"
#include "ops/fused.h"
#include "ops/ops_internal.h"

const char *const kt_layout_name[N_LAYOUTS] = {"contiguous", "transposed", "strided", "offset", "broadcast"};

#define B(name) static int name(const kt_ctx *k, kn_tensor **x, kn_tensor **o)
#define P(i) (k->c->p[i])

/* ---- builders: each runs an op through the public API --------------------------------------- */
static kn_tensor *unary_of(int f, kn_tensor *a) {
    switch (f) {
    case 0: return kn_neg(a);
    case 1: return kn_exp(a);
    case 2: return kn_log(a);
    case 3: return kn_sqrt(a);
    case 4: return kn_abs(a);
    case 5: return kn_relu(a);
    case 6: return kn_leaky_relu(a, 0.1);
    case 7: return kn_gelu(a);
    case 8: return kn_sigmoid(a);
    case 9: return kn_tanh(a);
    case 10: return kn_softplus(a);
    case 11: return kn_clamp(a, -0.5, 0.7);
    case 12: return kn_pow_scalar(a, 3);
    case 13: return kn_add_scalar(a, 2);
    case 14: return kn_mul_scalar(a, -3);
    case 15: return kn_rsub_scalar(a, 1);
    case 16: return kn_pow_scalar(a, 0.5);
    case 17: return kn_sin(a);
    case 18: return kn_cos(a);
    case 19: return kn_tan(a);
    default: return NULL;
    }
}
B(b_unary) {
    o[0] = unary_of(P(0), x[0]);
    return 1;
}

static kn_tensor *binary_of(int f, kn_tensor *a, kn_tensor *b) {
    kn_tensor *(*fns[])(kn_tensor *, kn_tensor *) = {kn_add, kn_sub, kn_mul, kn_div, kn_pow, kn_maximum, kn_minimum,
                                                     kn_eq,  kn_ne,  kn_lt,  kn_le,  kn_gt,  kn_ge};
    return fns[f](a, b);
}
B(b_binary) {
    o[0] = binary_of(P(0), x[0], x[1]);
    return 1;
}

B(b_where) {
    (void)k;
    o[0] = kn_where(x[0], x[1], x[2]);
    return 1;
}

/* x converted to every dtype: copy with conversion (rounding, saturation, wrapping). */
/* A device without float64 holds float64 tensors (kn_to) but computes
 * nothing in it (its ops would run on the host): the cases make theirs on
 * the host there and move the result to the device. */
static bool computes_f64(kn_device dev) {
    const kn_backend *b = kn__backend(dev.kind);
    return !b || !b->dtypes || (b->dtypes >> KN_F64 & 1);
}

B(b_cast) {
    for (int d = 0; d < KN_DTYPE_REAL_COUNT; d++)
        o[d] = d == KN_F64 && !computes_f64(k->dev) ? kn_to(kn_cast(kn_to(x[0], KN_CPU), KN_F64), k->dev)
                                                    : kn_cast(x[0], (kn_dtype)d);
    return KN_DTYPE_REAL_COUNT;
}

/* copy_ and fill_ into strided views, from another device, with broadcast and conversion. */
B(b_copy_into) {
    kn_tensor *z = kn_zeros(KN_SHAPE(6, 8), k->dt, k->dev);
    kn_fill_(kn_slice(z, 1, 1, 8, 3), 5);
    kn_copy_(kn_select(z, 0, 2), x[0]);
    kn_copy_(kn_select(z, 1, 7), kn_select(x[1], 1, 0));
    kn_copy_(kn_select(z, 0, 4), kn_to(x[0], KN_CPU)); /* from the host into a row */
    bool f64 = computes_f64(k->dev);
    kn_tensor *w = kn_zeros(KN_SHAPE(3, 8), KN_F64, f64 ? k->dev : KN_CPU), *h = kn_zeros(KN_SHAPE(8, 6), KN_F32, k->dev);
    kn_copy_(w, x[0]);                       /* broadcast and conversion */
    kn_copy_(kn_transpose(h, 0, 1), kn_expand(kn_unsqueeze(kn_select(x[1], 1, 1), 1), KN_SHAPE(6, 8)));
    o[0] = z, o[1] = f64 ? w : kn_to(w, k->dev), o[2] = h;
    return 3;
}

B(b_fill) {
    (void)x;
    kn_dtype dt = k->dt;
    kn_device d = k->dev;
    o[0] = kn_full(KN_SHAPE(3, 5), 2.75, dt, d);
    o[1] = kn_arange(-3, 40, 0.7, dt, d);
    o[2] = kn_dtype_is_float(dt) ? kn_linspace(-1, 1, 7, dt, d) : kn_arange(0, 5, 1, dt, d);
    o[3] = kn_eye(4, dt, d);
    o[4] = kn_ones(KN_SHAPE(2, 0, 3), dt, d);
    o[5] = kn_scalar(-1.5, dt, d);
    kn_tensor *s = kn_zeros(KN_SHAPE(5, 6), dt, d);
    kn_fill_(kn_slice(kn_transpose(s, 0, 1), 0, 1, 6, 2), 3);
    o[6] = s;
    return 7;
}

B(b_concat) {
    (void)k;
    o[0] = kn_concat(3, x, 1);
    o[1] = kn_stack(2, (kn_tensor *[]){x[0], x[0]}, 1);
    o[2] = kn_contiguous(x[2]);
    o[3] = kn_reshape(x[2], KN_SHAPE(-1));
    return 4;
}

static const int red_dims[6][3] = {{0}, {1}, {2}, {0, 2}, {1, 2}, {0, 1, 2}};
static const int red_nd[6] = {1, 1, 1, 2, 2, 3};
static kn_tensor *reduce_of(int f, kn_tensor *a, int nd, const int *dims, bool keep) {
    switch (f) {
    case 0: return kn_sum(a, nd, dims, keep);
    case 1: return kn_mean(a, nd, dims, keep);
    case 2: return kn_max(a, nd, dims, keep);
    case 3: return kn_min(a, nd, dims, keep);
    case 4: return kn_var(a, nd, dims, 1, keep);
    default: return kn_std(a, nd, dims, 0, keep);
    }
}
/* Over every set of dims of a 3-D input (keepdim alternating), and over all. */
B(b_reduce) {
    int f = P(0), n = 0;
    if (f >= 6) {
        for (int d = 0; d < 3; d++) o[n++] = (f == 6 ? kn_argmax : kn_argmin)(x[0], d, d % 2);
        return n;
    }
    for (int q = 0; q < 6; q++) o[n++] = reduce_of(f, x[0], red_nd[q], red_dims[q], q % 2);
    o[n++] = reduce_of(f, x[0], 0, NULL, false);
    return n;
}

B(b_reduce_2d) {
    (void)k;
    o[0] = kn_sum(x[0], KN_DIMS(0), false);
    o[1] = kn_sum(x[0], KN_DIMS(1), true);
    o[2] = kn_max(x[0], KN_DIMS(0), false);
    o[3] = kn_var(x[0], KN_DIMS(1), 1, false);
    return 4;
}

B(b_reduce_large) {
    (void)k;
    kn_tensor *t = kn_transpose(x[0], 0, 1);
    o[0] = kn_sum_all(x[0]);
    o[1] = kn_sum(x[0], KN_DIMS(1), false);
    o[2] = kn_var(x[0], KN_DIMS(1), 1, false);
    o[3] = kn_sum(t, KN_DIMS(0), false);
    o[4] = kn_max(t, KN_DIMS(0), false);
    return 5;
}

B(b_reduce_special) {
    (void)k;
    o[0] = kn_max(x[0], KN_DIMS(1), false);
    o[1] = kn_min(x[0], KN_DIMS(1), false);
    o[2] = kn_argmax(x[0], 1, false);
    o[3] = kn_argmin(x[0], 1, false);
    o[4] = kn_sum(x[0], KN_DIMS(1), false);
    return 5;
}

B(b_reduce_empty) {
    (void)k;
    o[0] = kn_sum(x[0], KN_DIMS(0), false);
    o[1] = kn_mean(x[0], KN_DIMS(0), false);
    o[2] = kn_sum_all(x[0]);
    o[3] = kn_sum(x[0], KN_DIMS(1), false);
    return 4;
}

B(b_matmul) {
    (void)k;
    o[0] = kn_matmul(x[0], x[1]);
    return 1;
}

/* p0: 0 linear, 1 linear + relu (the GEMM's epilogue), 2 and 3 the same without bias. */
B(b_linear) {
    kn_tensor *bias = P(0) >= 2 ? NULL : x[2];
    o[0] = P(0) % 2 ? kn__linear_act(x[0], x[1], bias, KN_ACT_RELU) : kn_linear(x[0], x[1], bias);
    return 1;
}

B(b_gather) {
    o[0] = kn_gather(x[0], P(0), x[1]);
    return 1;
}

B(b_index_select) {
    o[0] = kn_index_select(x[0], P(0), x[1]);
    return 1;
}

B(b_index_add) {
    o[0] = kn_index_add(x[0], P(0), x[1], x[2]);
    return 1;
}

/* The SCATTER_ADD primitive itself (no public op is only that): out = x0
 * with src x2 added at index x1 along dim p0; p1: a 1-D index repeated with
 * stride 0 across the other dim. */
B(b_scatter_add) {
    kn_tensor *out = kn_clone(x[0]), *idx = x[1];
    if (!out || !idx || !x[2]) return 0;
    if (P(1)) idx = kn_expand(kn_unsqueeze(x[1], 1), 2, kn_shape(x[2]));
    kn_scatter_add_args a = {.out = kn__view(out), .src = kn__view(x[2]), .index = kn__view(idx), .dim = P(0)};
    if (!idx || kn__run(KN_OP_SCATTER_ADD, k->dev, &a) != KN_OK) return 0;
    o[0] = out;
    return 1;
}

B(b_embedding) {
    (void)k;
    o[0] = kn_embedding(x[0], x[1]);
    return 1;
}

B(b_embedding_cat) {
    o[0] = kn_embedding_cat(k->c->n_in - 1, x + 1, x[0]);
    return 1;
}

/* Many tables: the slices of one [T, V, D] pool (each table has an offset). */
B(b_embedding_cat_pool) {
    (void)k;
    kn_tensor *t[64];
    int64_t T = x[1] ? kn_size(x[1], 0) : 0;
    if (!x[1] || T > 64) return 0;
    for (int64_t i = 0; i < T; i++) t[i] = kn_select(x[1], 0, i);
    o[0] = kn_embedding_cat((int)T, t, x[0]);
    return 1;
}

B(b_softmax) {
    o[0] = P(1) ? kn_log_softmax(x[0], P(0)) : kn_softmax(x[0], P(0));
    return 1;
}

/* p0 bits: 1 class weights, 2 label smoothing 0.1, 4 ignore_index 2; p1 the reduction. */
static kn_loss_opts loss_opts(const kt_case *c, kn_tensor *w) {
    kn_loss_opts o = kn_loss_opts_default();
    if (c->p[0] & 1) o.weight = w;
    if (c->p[0] & 2) o.label_smoothing = 0.1;
    if (c->p[0] & 4) o.ignore_index = 2;
    o.reduction = (kn_reduction)c->p[1];
    return o;
}
B(b_nll) {
    kn_loss_opts lo = loss_opts(k->c, k->c->n_in > 2 ? x[2] : NULL);
    o[0] = kn_nll_loss(x[0], x[1], &lo);
    return 1;
}
B(b_cross_entropy) {
    kn_loss_opts lo = loss_opts(k->c, k->c->n_in > 2 ? x[2] : NULL);
    o[0] = kn_cross_entropy_ex(x[0], x[1], &lo);
    return 1;
}
B(b_mse) {
    o[0] = kn_mse_loss(x[0], x[1], (kn_reduction)P(0));
    return 1;
}

/* The elementwise losses: p0 the loss (0 mse_ex, 1 l1, 2 huber delta 0.7, 3
 * smooth_l1 beta 0.5, 4 bce, 5 bce_with_logits), p1 the reduction, p2 bits:
 * 1 x[2] is the weight, 2 x[3] (or x[2] without a weight) the pos_weight. */
B(b_loss) {
    kn_loss_opts lo = kn_loss_opts_default();
    lo.reduction = (kn_reduction)P(1);
    lo.delta = 0.7;
    lo.beta = 0.5;
    if (P(2) & 1) lo.weight = x[2];
    if (P(2) & 2) lo.pos_weight = x[P(2) & 1 ? 3 : 2];
    kn_tensor *(*fns[])(kn_tensor *, kn_tensor *, const kn_loss_opts *) = {
        kn_mse_loss_ex, kn_l1_loss, kn_huber_loss, kn_smooth_l1_loss, kn_bce_loss, kn_bce_with_logits_loss};
    o[0] = fns[P(0)](x[0], x[1], &lo);
    return 1;
}

/* x, weight, bias, running mean, running var, count; p0 training, p1 bare (no
 * affine, no running stats). The in-place operands are results too. */
B(b_batch_norm) {
    if (P(1)) {
        o[0] = kn_batch_norm(x[0], NULL, NULL, NULL, NULL, P(0), 0.1, 1e-5);
        return 1;
    }
    o[0] = kn__batch_norm_ex(x[0], x[3], x[4], x[1], x[2], x[5], P(0), 0.1, 1e-5);
    o[1] = x[3], o[2] = x[4], o[3] = x[5];
    return 4;
}

/* dropout(batch_norm(act(linear))), the fused block: x, w, b, gamma, beta, rm, rv, count.
 * p0 bits: 1 relu, 2 dropout 0.3, 4 eval. */
B(b_linear_bn) {
    int mode = P(0);
    kn_generator g = kn_generator_make(21);
    kn__bn_opts bo = {.running_mean = x[5], .running_var = x[6], .weight = x[3], .bias = x[4], .num_batches = x[7],
                      .training = !(mode & 4), .momentum = 0.1, .eps = 1e-5, .dropout = mode & 2 ? 0.3 : 0, .gen = &g};
    o[0] = kn__linear_bn(x[0], x[1], x[2], mode & 1 ? KN_ACT_RELU : KN_ACT_NONE, &bo);
    o[1] = x[5], o[2] = x[6], o[3] = x[7];
    return 4;
}

/* p0 normalized dims, p1 affine. */
B(b_layer_norm) {
    o[0] = kn_layer_norm(x[0], P(0), P(1) ? x[1] : NULL, P(1) ? x[2] : NULL, 1e-5);
    return 1;
}

/* Two draws from one generator (the second at an odd offset), and their masks. */
B(b_dropout) {
    kn_generator g = kn_generator_make(11);
    o[0] = kn_dropout(x[0], k->c->r, P(0), &g);
    o[1] = kn_dropout(x[0], k->c->r, P(0), &g);
    for (int i = 0; i < 2; i++) o[2 + i] = o[i] ? kn_ne(o[i], kn_zeros_like(o[i])) : NULL;
    return 4;
}

/* Three steps on three parameters. p0: 0 adam, 1 adamw, 2 sgd, 3 sgd + momentum,
 * 4 nesterov, 5 momentum with dampening and weight decay. */
B(b_optim) {
    int kind = P(0);
    kn_tensor *p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = x[i] ? kn_requires_grad_(kn_clone(kn_detach(x[i])), true) : NULL;
        if (!p[i]) return 0;
    }
    kn_adam_opts ao = kn_adam_defaults(0.01);
    ao.weight_decay = 0.1;
    kn_sgd_opts so = kn_sgd_defaults(0.1);
    so.momentum = kind >= 3 ? 0.9 : 0;
    so.nesterov = kind == 4;
    if (kind == 5) so.dampening = 0.1, so.weight_decay = 0.01;
    kn_optim *op = kind == 0   ? kn_adam_params(3, p, ao)
                   : kind == 1 ? kn_adamw_params(3, p, ao)
                               : kn_sgd_params(3, p, so);
    kn_status st = op ? KN_OK : kn_error_code();
    for (int step = 0; step < 3 && st == KN_OK; step++) {
        kn_scope s = kn_scope_begin();
        kn_optim_zero_grad(op);
        for (int i = 0; i < 3 && st == KN_OK; i++) st = kn_backward(kn_sum_all(kn_mul(p[i], kn_mul(p[i], p[i]))));
        if (st == KN_OK) st = kn_optim_step(op);
        kn_scope_end(s);
    }
    kn_optim_free(op);
    if (st != KN_OK) return 0;
    for (int i = 0; i < 3; i++) o[i] = kn_detach(p[i]);
    return 3;
}

/* p0: 0 rand, 1 randn, 2 randint, 3 uniform_, 4 normal_, 5 randperm; two draws each. */
B(b_random) {
    (void)x;
    kn_generator g = kn_generator_make(99);
    for (int rep = 0; rep < 2; rep++) {
        switch (P(0)) {
        case 0: o[rep] = kn_rand(KN_SHAPE(1001), k->dt, k->dev, &g); break;
        case 1: o[rep] = kn_randn(KN_SHAPE(3, 333), k->dt, k->dev, &g); break;
        case 2: o[rep] = kn_randint(-7, 200, KN_SHAPE(999), k->dt, k->dev, &g); break;
        case 3:
            o[rep] = kn_empty(KN_SHAPE(77), k->dt, k->dev);
            if (kn_uniform_(o[rep], -3, 5, &g) != KN_OK) o[rep] = NULL;
            break;
        case 4:
            o[rep] = kn_empty(KN_SHAPE(7, 11), k->dt, k->dev);
            if (kn_normal_(o[rep], 2, 3, &g) != KN_OK) o[rep] = NULL;
            break;
        default: o[rep] = kn_randperm(500, k->dev, &g); break;
        }
    }
    return 2;
}

/* ---- graph capture and replay: the replayed losses are the eager ones ----------------------- */
typedef struct {
    kn_module *model;
    kn_optim *opt;
    kn_tensor *x, *y, *loss;
} train_ctx;

static kn_status train_step(void *p) {
    train_ctx *t = p;
    kn_scope s = kn_scope_begin();
    kn_tensor *loss = kn_cross_entropy(kn_module_forward(t->model, t->x), t->y);
    kn_optim_zero_grad(t->opt);
    kn_status st = loss ? kn_backward(loss) : kn_error_code();
    if (st == KN_OK) st = kn_optim_step(t->opt);
    kn_release(t->loss);
    t->loss = kn_retain(loss);
    kn_scope_end(s);
    return st;
}

static void make_train(train_ctx *t, kn_device dev, double p, int sgd) {
    kn_manual_seed(7);
    kn_module *m = kn_nn_sequential(0, NULL);
    kn_nn_sequential_append(m, kn_nn_linear(8, 32, true));
    kn_nn_sequential_append(m, kn_nn_relu());
    kn_nn_sequential_append(m, kn_nn_batch_norm1d(32));
    kn_nn_sequential_append(m, kn_nn_dropout(p));
    kn_nn_sequential_append(m, kn_nn_linear(32, 4, true));
    kn_module_to(m, dev);
    kn_generator g = kn_generator_make(1);
    kn_scope s = kn_scope_begin();
    t->x = kn_retain(kn_randn(KN_SHAPE(64, 8), KN_F32, dev, &g));
    t->y = kn_retain(kn_randint(0, 4, KN_SHAPE(64), KN_I64, dev, &g));
    kn_scope_end(s);
    t->model = m;
    kn_sgd_opts so = kn_sgd_defaults(0.05);
    so.momentum = 0.9;
    t->opt = sgd ? kn_sgd(m, so) : kn_adam(m, kn_adam_defaults(0.01));
    t->loss = NULL;
}

static void free_train(train_ctx *t) {
    kn_optim_free(t->opt);
    kn_module_free(t->model);
    kn_release(t->x), kn_release(t->y), kn_release(t->loss);
}

/* Results: the losses of a captured step replayed (eager where the device
 * cannot capture: the CPU's reference), and the eager losses. */
enum { STEPS = 6 };
B(b_graph_train) {
    (void)x;
    double e[STEPS], r[STEPS];
    train_ctx t;
    make_train(&t, k->dev, k->c->r, P(0));
    for (int i = 0; i < STEPS; i++) e[i] = train_step(&t) == KN_OK ? kn_item(t.loss) : NAN;
    free_train(&t);
    if (kn_graph_supported(k->dev)) {
        make_train(&t, k->dev, k->c->r, P(0));
        r[0] = train_step(&t) == KN_OK ? kn_item(t.loss) : NAN; /* warm-up: the optimizer's state exists */
        kn_graph *g = kn_graph_capture(k->dev, train_step, &t);
        for (int i = 1; i < STEPS; i++) r[i] = g && kn_graph_replay(g) == KN_OK ? kn_item(t.loss) : NAN;
        kn_graph_free(g);
        free_train(&t);
    } else {
        memcpy(r, e, sizeof r);
    }
    o[0] = kn_from_data(r, KN_F64, KN_SHAPE(STEPS), KN_CPU);
    o[1] = kn_from_data(e, KN_F64, KN_SHAPE(STEPS), KN_CPU);
    return 2;
}

/* Replays of a captured random op draw what eager calls draw. */
static kn_tensor *rng_buf;
static kn_status rng_step(void *p) {
    (void)p;
    return kn_uniform_(rng_buf, 0, 1, NULL);
}
B(b_graph_rng) {
    (void)x;
    kn_manual_seed(5);
    rng_buf = kn_empty(KN_SHAPE(3, 333), KN_F32, k->dev);
    if (!rng_buf || rng_step(NULL) != KN_OK) return 0;
    o[0] = kn_clone(rng_buf);
    kn_graph *g = kn_graph_supported(k->dev) ? kn_graph_capture(k->dev, rng_step, NULL) : NULL;
    if (kn_graph_supported(k->dev) && !g) return 0;
    for (int i = 1; i < 5; i++) {
        kn_status s = g ? kn_graph_replay(g) : rng_step(NULL);
        o[i] = s == KN_OK ? kn_clone(rng_buf) : NULL;
    }
    kn_graph_free(g);
    return 5;
}

/* ---- the cases ------------------------------------------------------------------------------ */
#define CASE(name_, fn_, dts_, lay_, flags_, ...) \
    {.name = name_, .build = fn_, .dtypes = dts_, .layouts = lay_, .flags = flags_, __VA_ARGS__}
#define UNARY(nm, id, lo, hi, dts)                                                                                   \
    CASE("unary " nm, b_unary, dts, L_ALL, GRAD | GRADCHECK, IN(D(lo, hi, 13, 9)), .p = {id})
#define BINARY(nm, id, dts, fl)                                                                                      \
    CASE("binary " nm, b_binary, dts, L_ALL, fl, IN(D(0.5, 2, 6, 1, 10), D(0.5, 2, 5, 10)), .p = {id})
#define REDUCE(nm, id, dts, fl) CASE("reduce " nm, b_reduce, dts, L_ALL, fl, IN(D(-4, 4, 5, 6, 37)), .p = {id})
#define MATMUL(nm, a, b) CASE("matmul " nm, b_matmul, FLOATS, L_ALL, GRAD | GRADCHECK, IN(a, b))
#define BN_IN(C, ...) \
    IN(D(-2, 5, __VA_ARGS__), D(0.5, 1.5, C), D(-1, 1, C), FIX(KN_F32, -1, 1, C), FIX(KN_F32, 0.5, 2, C), COUNT0)
#define LBN(nm, mode, N, dts) \
    CASE("linear_batch_norm " nm, b_linear_bn, dts, L_CTS, GRAD | GRADCHECK, \
         IN(D(-2, 2, N, 13), D(-0.5, 0.5, 45, 13), D(-0.5, 0.5, 45), D(0.5, 1.5, 45), D(-1, 1, 45), \
            FIX(KN_F32, -1, 1, 45), FIX(KN_F32, 0.5, 2, 45), COUNT0), .p = {mode}, .tol = 2)
#define LOSS_IN D(-3, 0, 40, 7), IX(KN_I64, 7, 40), DNG(0.5, 2, 7)
#define NLL(nm, mode, red) CASE("nll_loss " nm, b_nll, FLOATS, L_ALL, GRAD | GRADCHECK, IN(LOSS_IN), .p = {mode, red})
#define CE(nm, mode, red) \
    CASE("cross_entropy " nm, b_cross_entropy, FLOATS, L_ALL, GRAD | GRADCHECK, IN(LOSS_IN), .p = {mode, red}, .tol = 2)
#define REG_IN IN(D(-2, 2, 8, 5), D(-2, 2, 8, 5))
#define LOSS(nm, which, red, bits, ins) \
    CASE(nm, b_loss, FLOATS, L_ALL, GRAD | GRADCHECK, ins, .p = {which, red, bits}, .tol = 2)
#define OPTIM(nm, kind) CASE(nm, b_optim, F32_64, L_C, 0, IN(D(-1, 1, 17), D(-1, 1, 1017), D(-1, 1, 2017)), .p = {kind})
/* Normal draws (randn 1, normal_ 4) are bit-equal only where the device has float64 (the CPU's Box-Muller is in double). */
#define RANDOM(nm, kind, dts)                                                                                        \
    CASE("random " nm, b_random, dts, L_C, EXACT | NO_REF | ((kind) == 1 || (kind) == 4 ? EXACT_F64 : 0), .p = {kind})

const kt_case kt_cases[] = {
    /* ---- primitives: copy and fill ---- */
    CASE("copy cast", b_cast, ALL, L_ALL, GRAD, IN(D(-300, 300, 9, 5))),
    CASE("copy cast special values", b_cast, F32_64, L_C, 0,
         IN(VALS(-1, LIST(NAN, INFINITY, -INFINITY, 1e10, -1e10, 65520, 1e-8, -0.0, 3e38, -2.5, 255.5, 300), 12))),
    CASE("copy_ and fill_ into views", b_copy_into, ALL, L_ALL, 0, IN(D(-9, 9, 8), D(-9, 9, 6, 2))),
    CASE("copy concat stack contiguous", b_concat, ALL, L_ALL, GRAD,
         IN(D(-1, 1, 4, 2), D(-1, 1, 4, 3), D(-1, 1, 4, 4))),
    CASE("fill full arange linspace eye", b_fill, ALL, L_C, 0),
    /* ---- unary: every function code ---- */
    UNARY("neg", 0, -3, 3, NUMERIC),
    UNARY("exp", 1, -3, 3, FLOATS),
    UNARY("log", 2, 0.1, 5, FLOATS),
    UNARY("sqrt", 3, 0.1, 5, FLOATS),
    UNARY("abs", 4, -3, 3, NUMERIC),
    UNARY("relu", 5, -3, 3, NUMERIC),
    UNARY("leaky_relu", 6, -3, 3, FLOATS),
    UNARY("gelu", 7, -3, 3, FLOATS),
    UNARY("sigmoid", 8, -5, 5, FLOATS),
    UNARY("tanh", 9, -3, 3, FLOATS),
    UNARY("softplus", 10, -30, 30, FLOATS),
    UNARY("clamp", 11, -2, 2, NUMERIC),
    UNARY("pow_scalar 3", 12, -2, 2, FLOATS),
    UNARY("add_scalar", 13, -3, 3, NUMERIC),
    UNARY("mul_scalar", 14, -3, 3, NUMERIC),
    UNARY("rsub_scalar", 15, -3, 3, NUMERIC),
    UNARY("pow_scalar 0.5 (rsqrt-like)", 16, 0.1, 4, FLOATS),
    UNARY("sin", 17, -7, 7, FLOATS),
    UNARY("cos", 18, -7, 7, FLOATS),
    UNARY("tan", 19, -1.3, 1.3, FLOATS),
    CASE("unary exp zero-size", b_unary, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 0, 5)), .p = {1}),
    CASE("unary relu 0-d", b_unary, NUMERIC, L_C, GRAD, IN(D0(-1, 1)), .p = {5}),
    /* ---- binary: every function code, broadcast ---- */
    BINARY("add", 0, NUMERIC, GRAD | GRADCHECK),
    BINARY("sub", 1, NUMERIC, GRAD | GRADCHECK),
    BINARY("mul", 2, NUMERIC, GRAD | GRADCHECK),
    BINARY("div", 3, NUMERIC, GRAD | GRADCHECK),
    BINARY("pow", 4, FLOATS, GRAD | GRADCHECK),
    BINARY("maximum", 5, NUMERIC, GRAD | GRADCHECK),
    BINARY("minimum", 6, NUMERIC, GRAD | GRADCHECK),
    BINARY("eq", 7, ALL, 0),
    BINARY("ne", 8, ALL, 0),
    BINARY("lt", 9, ALL, 0),
    BINARY("le", 10, ALL, 0),
    BINARY("gt", 11, ALL, 0),
    BINARY("ge", 12, ALL, 0),
    CASE("binary mul by a 0-d tensor", b_binary, NUMERIC, L_ALL, GRAD | GRADCHECK, IN(D(-2, 2, 4, 7), D0(-2, 2)),
         .p = {2}),
    CASE("binary int64 * float16", b_binary, BIT(KN_F16), L_ALL, 0, IN(DT(KN_I64, -5, 5, 3, 4), DT(KN_F16, -2, 2, 4)),
         .p = {2}),
    CASE("binary int32 / int32 is true division", b_binary, BIT(KN_F32), L_ALL, 0,
         IN(DT(KN_I32, -5, 5, 3, 4), DT(KN_I32, 1, 3, 3, 4)), .p = {3}),
    CASE("binary float32 + float64 0-d stays float32", b_binary, BIT(KN_F32), L_C, 0,
         IN(D(-2, 2, 3, 4), {.kind = KT_DATA, .dt = KN_F64, .lo = -2, .hi = 2, .nd = 0}), .p = {0}),
    CASE("binary add zero-size", b_binary, NUMERIC, L_ALL, GRAD, IN(D(-1, 1, 0, 4), D(-1, 1, 4)), .p = {0}),
    CASE("where", b_where, ALL, L_ALL, GRAD | GRADCHECK, IN(BOOLS(4, 7), D(-9, 9, 4, 7), D(-9, 9, 4, 7))),
    CASE("where broadcast", b_where, ALL, L_ALL, GRAD | GRADCHECK, IN(BOOLS(4, 1), D(-9, 9, 4, 7), D(-9, 9, 7))),
    /* ---- reductions: every function code over every set of dims ---- */
    REDUCE("sum", 0, ALL, GRAD | GRADCHECK),
    REDUCE("mean", 1, FLOATS | BIT(KN_I64), GRAD | GRADCHECK),
    REDUCE("max", 2, ALL, GRAD | GRADCHECK),
    REDUCE("min", 3, ALL, GRAD | GRADCHECK),
    REDUCE("var", 4, FLOATS | BIT(KN_I64), GRAD | GRADCHECK),
    REDUCE("std", 5, FLOATS | BIT(KN_I64), GRAD | GRADCHECK),
    REDUCE("argmax", 6, NUMERIC, 0),
    REDUCE("argmin", 7, NUMERIC, 0),
    CASE("reduce rows [1382, 7]", b_reduce_2d, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 1382, 7))),
    CASE("reduce rows [33, 1000]", b_reduce_2d, F32_64, L_ALL, GRAD, IN(D(-1, 1, 33, 1000))),
    CASE("reduce rows [5000, 1]", b_reduce_2d, F32_64, L_ALL, GRAD, IN(D(-1, 1, 5000, 1))),
    CASE("reduce large [3, 2^19]", b_reduce_large, BIT(KN_F32), L_C, 0, IN(D(-1, 1, 3, 1 << 19))),
    CASE("reduce NaN and ties", b_reduce_special, FLOATS, L_C, 0, IN(VALS(-1, LIST(1, NAN, 3, 7, 7, 2), 2, 3))),
    CASE("reduce over zero-size", b_reduce_empty, FLOATS, L_C | (1u << STRIDED), 0, IN(D(-1, 1, 0, 4))),
    /* ---- matmul: batched, broadcast, transposed, empty; bias and ReLU epilogue ---- */
    MATMUL("[33,17]x[17,29]", D(-1, 1, 33, 17), D(-1, 1, 17, 29)),
    MATMUL("batched [4,33,17]x[4,17,29]", D(-1, 1, 4, 33, 17), D(-1, 1, 4, 17, 29)),
    MATMUL("broadcast [4,33,17]x[17,29]", D(-1, 1, 4, 33, 17), D(-1, 1, 17, 29)),
    MATMUL("broadcast batch [2,1,5,7]x[3,7,4]", D(-1, 1, 2, 1, 5, 7), D(-1, 1, 3, 7, 4)),
    MATMUL("[1,64]x[64,1]", D(-1, 1, 1, 64), D(-1, 1, 64, 1)),
    MATMUL("vector [17]x[17,5]", D(-1, 1, 17), D(-1, 1, 17, 5)),
    MATMUL("K = 0 [3,0]x[0,4]", D(-1, 1, 3, 0), D(-1, 1, 0, 4)),
    MATMUL("M = 0 [0,5]x[5,3]", D(-1, 1, 0, 5), D(-1, 1, 5, 3)),
    CASE("matmul [128,256]x[256,96]", b_matmul, FLOATS, L_CTS, GRAD, IN(D(-1, 1, 128, 256), D(-1, 1, 256, 96))),
    /* More than one 128 x 128 tile of a GPU GEMM each way, ragged edges, K not a multiple of its step. */
    CASE("matmul [150,37]x[37,131]", b_matmul, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 150, 37), D(-1, 1, 37, 131))),
    CASE("matmul batched [3,130,9]x[3,9,140]", b_matmul, FLOATS, L_ALL, 0, IN(D(-1, 1, 3, 130, 9), D(-1, 1, 3, 9, 140))),
    CASE("linear + bias", b_linear, FLOATS, L_ALL, GRAD | GRADCHECK,
         IN(D(-1, 1, 50, 20), D(-1, 1, 30, 20), D(-1, 1, 30)), .p = {0}),
    CASE("linear + bias + relu epilogue", b_linear, FLOATS, L_ALL, GRAD | GRADCHECK,
         IN(D(-1, 1, 50, 20), D(-1, 1, 30, 20), D(-1, 1, 30)), .p = {1}),
    CASE("linear no bias, 3-D input", b_linear, FLOATS, L_ALL, GRAD | GRADCHECK,
         IN(D(-1, 1, 2, 25, 20), D(-1, 1, 30, 20)), .p = {2}),
    CASE("linear no bias + relu epilogue", b_linear, FLOATS, L_ALL, GRAD | GRADCHECK,
         IN(D(-1, 1, 50, 20), D(-1, 1, 30, 20)), .p = {3}),
    /* ---- gather and scatter_add ---- */
    CASE("gather dim 2", b_gather, ALL, L_ALL, GRAD | GRADCHECK, IN(D(-5, 5, 7, 5, 6), IX(KN_I64, 6, 7, 5, 4)),
         .p = {2}),
    CASE("gather dim 0 (repeats)", b_gather, ALL, L_ALL, GRAD | GRADCHECK,
         IN(D(-5, 5, 7, 5, 6), IX(KN_I64, 7, 9, 5, 6)), .p = {0}),
    CASE("gather dim 1, int32 index", b_gather, NUMERIC, L_ALL, GRAD | GRADCHECK,
         IN(D(-5, 5, 7, 5, 6), IX(KN_I32, 5, 7, 3, 6)), .p = {1}),
    CASE("gather uint8 index", b_gather, FLOATS, L_ALL, GRAD, IN(D(-5, 5, 7, 5), IX(KN_U8, 5, 7, 8)), .p = {1}),
    CASE("scatter_add dim 0 (repeats)", b_scatter_add, NUMERIC, L_ALL, 0,
         IN(D(-3, 3, 5, 4), IX(KN_I64, 5, 9, 4), D(-3, 3, 9, 4)), .p = {0}),
    CASE("scatter_add dim 1, int32 index", b_scatter_add, NUMERIC, L_ALL, 0,
         IN(D(-3, 3, 5, 4), IX(KN_I32, 4, 5, 11), D(-3, 3, 5, 11)), .p = {1}),
    CASE("scatter_add stride-0 index", b_scatter_add, NUMERIC, L_C | (1u << STRIDED), 0,
         IN(D(-3, 3, 5, 4), IX(KN_I64, 5, 9), D(-3, 3, 9, 4)), .p = {0, 1}),
    /* ---- random: the same bits on every device ---- */
    RANDOM("rand", 0, FLOATS),
    RANDOM("randn", 1, FLOATS),
    RANDOM("randint", 2, BIT(KN_I64) | BIT(KN_I32) | BIT(KN_U8) | BIT(KN_F32)),
    RANDOM("uniform_", 3, FLOATS),
    RANDOM("normal_", 4, FLOATS),
    RANDOM("randperm", 5, BIT(KN_I64)),
    /* ---- fused: softmax ---- */
    CASE("softmax dim 0", b_softmax, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-4, 4, 4, 9, 70)), .p = {0, 0}),
    CASE("softmax dim 1", b_softmax, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-4, 4, 4, 9, 70)), .p = {1, 0}),
    CASE("softmax dim -1", b_softmax, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-4, 4, 4, 9, 70)), .p = {-1, 0}),
    CASE("log_softmax dim 0", b_softmax, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-4, 4, 4, 9, 70)), .p = {0, 1}),
    CASE("log_softmax dim 1", b_softmax, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-4, 4, 4, 9, 70)), .p = {1, 1}),
    CASE("log_softmax dim 2", b_softmax, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-4, 4, 4, 9, 70)), .p = {2, 1}),
    CASE("softmax wide rows [3, 5000]", b_softmax, F32_64, L_C, GRAD, IN(D(-8, 8, 3, 5000)), .p = {1, 0}),
    /* ---- fused: losses (weights, smoothing, ignore_index, each reduction) ---- */
    NLL("mean", 0, 0),
    NLL("mean, weights", 1, 0),
    NLL("sum, weights", 1, 1),
    NLL("none", 0, 2),
    NLL("mean, ignore_index", 4, 0),
    NLL("none, weights + ignore_index", 5, 2),
    NLL("mean, everything", 7, 0),
    CE("mean", 0, 0),
    CE("mean, smoothing", 2, 0),
    CE("mean, weights", 1, 0),
    CE("sum, weights + smoothing", 3, 1),
    CE("mean, weights + smoothing + ignore_index", 7, 0),
    CE("sum, ignore_index", 4, 1),
    CE("none", 0, 2),
    CE("none, everything", 7, 2),
    CASE("cross_entropy int32 target", b_cross_entropy, FLOATS, L_ALL, GRAD, IN(D(-3, 3, 40, 7), IX(KN_I32, 7, 40)),
         .p = {0, 0}),
    /* Sizes around the Vulkan kernels' workgroups (one row; more rows than a
     * workgroup of 256 invocations; more than its fused kernel takes). */
    CASE("cross_entropy [1, 1]", b_cross_entropy, FLOATS, L_C, GRAD | GRADCHECK, IN(D(-3, 3, 1, 1), IX(KN_I64, 1, 1)),
         .p = {0, 0}),
    CASE("cross_entropy [257, 7], everything", b_cross_entropy, FLOATS, L_ALL, GRAD,
         IN(D(-3, 3, 257, 7), IX(KN_I64, 7, 257), DNG(0.5, 2, 7)), .p = {7, 0}, .tol = 2),
    CASE("cross_entropy [70000, 2] sum", b_cross_entropy, BIT(KN_F32), L_C, GRAD,
         IN(D(-3, 3, 70000, 2), IX(KN_I64, 2, 70000)), .p = {0, 1}, .tol = 4),
    CASE("cross_entropy [300, 2000]", b_cross_entropy, BIT(KN_F32), L_C, GRAD,
         IN(D(-3, 3, 300, 2000), IX(KN_I64, 2000, 300)), .p = {0, 0}, .tol = 2),
    CASE("cross_entropy every row ignored", b_cross_entropy, F32_64, L_C, 0,
         IN(D(-3, 3, 4, 5), VALS(KN_I64, LIST(2, 2, 2, 2), 4)), .p = {4, 0}),
    CASE("mse_loss mean", b_mse, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-2, 2, 8, 5), D(-2, 2, 8, 5)), .p = {0}),
    CASE("mse_loss sum", b_mse, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-2, 2, 8, 5), D(-2, 2, 8, 5)), .p = {1}),
    CASE("mse_loss none", b_mse, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-2, 2, 8, 5), D(-2, 2, 8, 5)), .p = {2}),
    /* ---- elementwise losses (compositions of the ops above) ---- */
    LOSS("mse_loss_ex sum", 0, 1, 0, REG_IN),
    LOSS("l1_loss mean", 1, 0, 0, REG_IN),
    LOSS("l1_loss none", 1, 2, 0, REG_IN),
    LOSS("huber_loss mean", 2, 0, 0, REG_IN),
    LOSS("huber_loss none", 2, 2, 0, REG_IN),
    LOSS("smooth_l1_loss sum", 3, 1, 0, REG_IN),
    LOSS("smooth_l1_loss none", 3, 2, 0, REG_IN),
    LOSS("bce_loss mean", 4, 0, 0, IN(D(0.05, 0.95, 8, 5), D(0, 1, 8, 5))),
    LOSS("bce_loss none, weight", 4, 2, 1, IN(D(0.05, 0.95, 8, 5), D(0, 1, 8, 5), DNG(0.5, 2, 5))),
    LOSS("bce_with_logits_loss mean", 5, 0, 0, IN(D(-6, 6, 8, 5), D(0, 1, 8, 5))),
    LOSS("bce_with_logits_loss sum, weight + pos_weight", 5, 1, 3,
         IN(D(-6, 6, 8, 5), D(0, 1, 8, 5), DNG(0.5, 2, 8, 5), DNG(0.5, 3, 5))),
    LOSS("bce_with_logits_loss none, pos_weight", 5, 2, 2, IN(D(-6, 6, 8, 5), D(0, 1, 8, 5), DNG(0.5, 3, 5))),
    /* ---- fused: norms ---- */
    CASE("batch_norm train [300, 45]", b_batch_norm, FLOATS, L_NOB, GRAD | GRADCHECK, BN_IN(45, 300, 45), .p = {1},
         .tol = 2),
    CASE("batch_norm eval [300, 45]", b_batch_norm, FLOATS, L_ALL, GRAD | GRADCHECK, BN_IN(45, 300, 45), .p = {0},
         .tol = 2),
    CASE("batch_norm train [6, 5, 33]", b_batch_norm, FLOATS, L_NOB, GRAD | GRADCHECK, BN_IN(5, 6, 5, 33), .p = {1},
         .tol = 2),
    CASE("batch_norm eval [6, 5, 33]", b_batch_norm, FLOATS, L_ALL, GRAD | GRADCHECK, BN_IN(5, 6, 5, 33), .p = {0},
         .tol = 2),
    CASE("batch_norm train [7, 1]", b_batch_norm, FLOATS, L_NOB, GRAD | GRADCHECK, BN_IN(1, 7, 1), .p = {1},
         .tol = 2),
    CASE("batch_norm eval [1, 7]", b_batch_norm, FLOATS, L_ALL, GRAD | GRADCHECK, BN_IN(7, 1, 7), .p = {0}, .tol = 2),
    CASE("batch_norm train [3, 257, 2]", b_batch_norm, FLOATS, L_NOB, GRAD, BN_IN(257, 3, 257, 2), .p = {1},
         .tol = 2),
    CASE("batch_norm train [600, 3]", b_batch_norm, F32_64, L_NOB, GRAD, BN_IN(3, 600, 3), .p = {1}, .tol = 2),
    CASE("batch_norm train, no affine or stats", b_batch_norm, FLOATS, L_NOB, GRAD | GRADCHECK, IN(D(-2, 5, 50, 6)),
         .p = {1, 1}, .tol = 2),
    LBN("linear", 0, 300, FLOATS),
    LBN("relu", 1, 300, FLOATS),
    LBN("dropout", 2, 300, FLOATS),
    LBN("relu + dropout", 3, 300, FLOATS),
    LBN("eval", 4, 300, FLOATS),
    LBN("relu eval", 5, 300, FLOATS),
    LBN("relu + dropout, 3000 rows", 3, 3000, BIT(KN_F32)),
    CASE("layer_norm last dim", b_layer_norm, FLOATS, L_ALL, GRAD | GRADCHECK,
         IN(D(-2, 2, 3, 11, 80), D(0.5, 1.5, 80), D(-1, 1, 80)), .p = {1, 1}, .tol = 2),
    CASE("layer_norm last 2 dims", b_layer_norm, FLOATS, L_ALL, GRAD | GRADCHECK,
         IN(D(-2, 2, 3, 11, 80), D(0.5, 1.5, 11, 80), D(-1, 1, 11, 80)), .p = {2, 1}, .tol = 2),
    CASE("layer_norm no affine", b_layer_norm, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-2, 2, 20, 33)), .p = {1, 0},
         .tol = 2),
    /* ---- fused: dropout (the same mask bits everywhere) ---- */
    CASE("dropout p 0.3", b_dropout, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-1, 1, 37, 41)), .p = {1}, .r = 0.3),
    CASE("dropout p 0.9", b_dropout, F32_64, L_C, GRAD, IN(D(-1, 1, 1000)), .p = {1}, .r = 0.9),
    CASE("dropout p 0.5 [1]", b_dropout, FLOATS, L_C, GRAD, IN(D(-1, 1, 1)), .p = {1}, .r = 0.5),
    CASE("dropout p 0.2 [7]", b_dropout, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 7)), .p = {1}, .r = 0.2),
    CASE("dropout p 0.4 [70001]", b_dropout, F32_64, L_CTS, GRAD, IN(D(-1, 1, 70001)), .p = {1}, .r = 0.4),
    CASE("dropout eval", b_dropout, FLOATS, L_CTS, GRAD, IN(D(-1, 1, 37, 41)), .p = {0}, .r = 0.3),
    /* ---- fused: embeddings and indexing ---- */
    CASE("embedding", b_embedding, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-1, 1, 10, 4), IX(KN_I64, 10, 300))),
    CASE("embedding 2-D indices", b_embedding, FLOATS, L_CTS, GRAD | GRADCHECK,
         IN(D(-1, 1, 10, 4), IX(KN_I32, 10, 30, 7))),
    CASE("embedding_cat 3 tables", b_embedding_cat, FLOATS, L_ALL, GRAD | GRADCHECK,
         IN(CODES(500, 3), D(-1, 1, 4, 3), D(-1, 1, 7, 2), D(-1, 1, 2, 5)), .tol = 2),
    CASE("embedding_cat big table", b_embedding_cat, FLOATS, L_CTS, GRAD,
         IN(CODES(500, 3), D(-1, 1, 4, 3), D(-1, 1, 3000, 2), D(-1, 1, 2, 5)), .tol = 2),
    /* Seven tables (more than a Vulkan dispatch takes), small and large mixed. */
    CASE("embedding_cat 7 tables, 257 rows", b_embedding_cat, FLOATS, L_CTS, GRAD,
         IN(CODES(257, 7), D(-1, 1, 1, 1), D(-1, 1, 65, 2), D(-1, 1, 7, 3), D(-1, 1, 2, 1), D(-1, 1, 3, 4),
            D(-1, 1, 1, 257), D(-1, 1, 5, 2)), .tol = 2),
    CASE("embedding_cat 7 tables, 1 row", b_embedding_cat, FLOATS, L_C, GRAD,
         IN(CODES(1, 7), D(-1, 1, 1, 1), D(-1, 1, 65, 2), D(-1, 1, 7, 3), D(-1, 1, 2, 1), D(-1, 1, 3, 4),
            D(-1, 1, 1, 257), D(-1, 1, 5, 2))),
    CASE("embedding_cat 20 tables", b_embedding_cat_pool, FLOATS, L_CTS, GRAD,
         IN(IX(KN_I64, 5, 64, 20), D(-1, 1, 20, 5, 3))),
    CASE("embedding_cat 40 tables, int32 codes", b_embedding_cat_pool, BIT(KN_F32), L_C, GRAD,
         IN(IX(KN_I32, 3, 16, 40), D(-1, 1, 40, 3, 2))),
    CASE("index_select dim 0", b_index_select, ALL, L_ALL, GRAD | GRADCHECK, IN(D(-5, 5, 7, 5, 6), IX(KN_I64, 7, 6)),
         .p = {0}),
    CASE("index_select dim 1, int32", b_index_select, ALL, L_ALL, GRAD | GRADCHECK,
         IN(D(-5, 5, 7, 5, 6), IX(KN_I32, 5, 9)), .p = {1}),
    CASE("index_select dim 2, uint8", b_index_select, ALL, L_ALL, GRAD | GRADCHECK,
         IN(D(-5, 5, 7, 5, 6), IX(KN_U8, 6, 4)), .p = {2}),
    CASE("index_select empty index", b_index_select, FLOATS, L_C, GRAD, IN(D(-5, 5, 7, 5), IX(KN_I64, 7, 0)),
         .p = {0}),
    CASE("index_add dim 0 (repeats)", b_index_add, NUMERIC, L_ALL, GRAD | GRADCHECK,
         IN(D(-5, 5, 7, 5, 6), IX(KN_I64, 7, 6), D(-3, 3, 6, 5, 6)), .p = {0}),
    CASE("index_add dim 2, int32", b_index_add, NUMERIC, L_ALL, GRAD | GRADCHECK,
         IN(D(-5, 5, 7, 5, 6), IX(KN_I32, 6, 9), D(-3, 3, 7, 5, 9)), .p = {2}),
    /* ---- fused: optimizer steps ---- */
    OPTIM("adam", 0),
    OPTIM("adamw", 1),
    CASE("adam sizes 1, 7, 257", b_optim, F32_64, L_C, 0, IN(D(-1, 1, 1), D(-1, 1, 7), D(-1, 1, 257)), .p = {0}),
    CASE("adamw sizes 70000, 1, 300", b_optim, BIT(KN_F32), L_C, 0, IN(D(-1, 1, 70000), D(-1, 1, 1), D(-1, 1, 300)),
         .p = {1}),
    OPTIM("sgd", 2),
    OPTIM("sgd momentum", 3),
    OPTIM("sgd nesterov", 4),
    OPTIM("sgd momentum, dampening, weight decay", 5),
    /* ---- graph capture and replay ---- */
    CASE("graph replay: sgd", b_graph_train, BIT(KN_F32), L_C, GRAPH | NO_REF | HOST_OUT, .p = {1}, .tol = 10),
    CASE("graph replay: adam", b_graph_train, BIT(KN_F32), L_C, GRAPH | NO_REF | HOST_OUT, .p = {0}, .tol = 10),
    CASE("graph replay: sgd + dropout", b_graph_train, BIT(KN_F32), L_C, GRAPH | NO_REF | HOST_OUT, .p = {1},
         .r = 0.3, .tol = 10),
    CASE("graph replay: random draws", b_graph_rng, BIT(KN_F32), L_C, GRAPH | NO_REF | EXACT),
    /* ---- errors: the same message on every device ---- */
    CASE("error: index_select index", b_index_select, BIT(KN_F32), L_C, 0,
         IN(D(-1, 1, 10, 4), VALS(KN_I64, LIST(1, 12, 0), 3)), .p = {0},
         .err = "index_select: index 12 is out of range for dim 0 of size 10"),
    CASE("error: gather index", b_gather, BIT(KN_F32), L_C, 0,
         IN(D(-1, 1, 2, 5), VALS(KN_I64, LIST(0, 1, 7, 2), 2, 2)), .p = {1},
         .err = "gather: index 7 is out of range for dim 1 of size 5"),
    CASE("error: index_add index", b_index_add, BIT(KN_F32), L_C, 0,
         IN(D(-1, 1, 7, 3), VALS(KN_I64, LIST(0, 9), 2), D(-1, 1, 2, 3)), .p = {0},
         .err = "index_add: index 9 is out of range for dim 0 of size 7"),
    CASE("error: embedding_cat code", b_embedding_cat, BIT(KN_F32), L_C, 0,
         IN(VALS(KN_I64, LIST(0, 1, 3, 0), 2, 2), D(-1, 1, 2, 2), D(-1, 1, 3, 1)),
         .err = "embedding_cat: index 3 is out of range for table 0 of 2 rows"),
    CASE("error: cross_entropy target", b_cross_entropy, BIT(KN_F32), L_C, 0,
         IN(D(-1, 1, 3, 4), VALS(KN_I64, LIST(0, 9, 1), 3)), .p = {0, 0},
         .err = "cross_entropy: target 9 is out of range for 4 classes"),
    CASE("error: nll_loss target", b_nll, BIT(KN_F32), L_C, 0, IN(D(-1, 0, 3, 4), VALS(KN_I64, LIST(0, -3, 1), 3)),
         .p = {0, 0}, .err = "nll_loss: target -3 is out of range for 4 classes"),
    /* Class weights: the composite looks the target up in them first (index_select). */
    CASE("error: cross_entropy target, weighted", b_cross_entropy, BIT(KN_F32), L_C, 0,
         IN(D(-1, 1, 3, 4), VALS(KN_I64, LIST(0, 1, 4), 3), D(0.5, 1, 4)), .p = {1, 1},
         .err = "cross_entropy: target 4 is out of range for 4 classes"),
};
const int kt_case_count = (int)(sizeof kt_cases / sizeof *kt_cases);
