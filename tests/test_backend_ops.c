/* One harness for every backend. A table of cases, each an op run through
 * the public API (a builder) on inputs the table describes, over dtypes and
 * layouts (contiguous, transposed, strided, offset: a slice, broadcast:
 * expanded; zero-size shapes are cases of their own). Every case runs on
 * every device present: every registered kind with devices (cpu, cuda where
 * there is a GPU, the "prim" backend of primitives only, the kernel-less
 * "test" device), against the CPU's result and against a float64 reference
 * (the inputs cast to float64, run on the CPU).
 *
 *   test_backend_ops            correctness
 *   test_backend_ops --grad     gradients: backward on the device against the
 *                               CPU and the float64 reference, and finite
 *                               differences in float64 where the device has it
 *   test_backend_ops --perf     median time per case and device (printed only)
 *   --case SUBSTR, --device NAME, --verbose narrow or widen the run.
 *
 * A case a device cannot run (a dtype its backend does not declare, graph
 * capture where it has none) prints as SKIPPED and never counts as passed. */
#include "kn_test.h"
#include "ops/fused.h"
#include "ops/ops_internal.h"

#include <time.h>

/* ---- the table's vocabulary ---------------------------------------------------------------- */
enum { CONTIG, TRANSPOSED, STRIDED, OFFSET, BROADCAST, N_LAYOUTS };
static const char *layout_name[N_LAYOUTS] = {"contiguous", "transposed", "strided", "offset", "broadcast"};
#define L_ALL ((1u << N_LAYOUTS) - 1)
#define L_C (1u << CONTIG)
#define L_CTS ((1u << CONTIG) | (1u << TRANSPOSED) | (1u << STRIDED))
/* Not broadcast: a batch of one repeated row has no variance to normalize by. */
#define L_NOB (L_ALL & ~(1u << BROADCAST))

#define BIT(dt) (1u << (dt))
#define FLOATS (BIT(KN_F32) | BIT(KN_F64) | BIT(KN_F16) | BIT(KN_BF16))
#define F32_64 (BIT(KN_F32) | BIT(KN_F64))
#define INTS (BIT(KN_I32) | BIT(KN_I64) | BIT(KN_U8))
#define NUMERIC (FLOATS | INTS)
#define ALL (NUMERIC | BIT(KN_BOOL))

/* Case flags. */
enum {
    GRAD = 1,      /* --grad compares gradients of the float inputs */
    GRADCHECK = 2, /* --grad also runs finite differences in float64 (shapes clipped to 4) */
    EXACT = 4,     /* bit-equal results (float64: 1e-15, for a device's libm) */
    NO_REF = 8,    /* no float64 reference (random draws: another dtype draws other numbers) */
    GRAPH = 16,    /* needs graph capture (skipped where the device has none) */
    HOST_OUT = 32, /* results are host tensors (losses read back) */
};

/* Inputs. */
enum { KT_DATA = 0, KT_INDEX, KT_CODES, KT_VALUES };
typedef struct {
    int kind;
    int dt; /* -1: the case's dtype */
    int nd;
    int64_t shape[4];
    double lo, hi;      /* values: uniform in [lo, hi) (integers: see gen_values) */
    bool fixed;         /* updated in place (running stats, counts): contiguous, no gradient */
    bool nograd;        /* a float input whose gradient is not wanted (class weights) */
    const double *vals; /* KT_VALUES */
} kt_in;

#define MAX_IN 8
#define MAX_OUT 16
struct kt_case;
typedef struct {
    const struct kt_case *c;
    kn_device dev;
    kn_dtype dt; /* the case's dtype (float64 in the reference run) */
} kt_ctx;
typedef int (*kt_build)(const kt_ctx *k, kn_tensor **x, kn_tensor **out);

typedef struct kt_case {
    const char *name;
    kt_build build;
    uint32_t dtypes, layouts;
    unsigned flags;
    int n_in;
    kt_in in[MAX_IN];
    int p[4];        /* builder parameters */
    double r;        /* a real parameter (dropout p) */
    double tol;      /* scales the dtype tolerance (0: 1) */
    double htol;     /* scales it again for float16/bfloat16 gradients (0: 1): sums that cancel */
    const char *err; /* an error case: every device fails with this message */
} kt_case;

#define SH(...) .nd = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), .shape = {__VA_ARGS__}
#define D(lo_, hi_, ...) {.kind = KT_DATA, .dt = -1, .lo = lo_, .hi = hi_, SH(__VA_ARGS__)}
#define D0(lo_, hi_) {.kind = KT_DATA, .dt = -1, .lo = lo_, .hi = hi_, .nd = 0}
#define DT(dt_, lo_, hi_, ...) {.kind = KT_DATA, .dt = dt_, .lo = lo_, .hi = hi_, SH(__VA_ARGS__)}
#define DNG(lo_, hi_, ...) {.kind = KT_DATA, .dt = -1, .lo = lo_, .hi = hi_, .nograd = true, SH(__VA_ARGS__)}
#define FIX(dt_, lo_, hi_, ...) {.kind = KT_DATA, .dt = dt_, .lo = lo_, .hi = hi_, .fixed = true, SH(__VA_ARGS__)}
#define COUNT0 {.kind = KT_VALUES, .dt = KN_I64, .nd = 0, .fixed = true, .vals = (const double[]){3}}
#define IX(dt_, hi_, ...) {.kind = KT_INDEX, .dt = dt_, .lo = 0, .hi = hi_, SH(__VA_ARGS__)}
#define CODES(...) {.kind = KT_CODES, .dt = KN_I64, SH(__VA_ARGS__)}
#define VALS(dt_, v, ...) {.kind = KT_VALUES, .dt = dt_, .vals = (const double[])v, .fixed = true, SH(__VA_ARGS__)}
#define BOOLS(...) {.kind = KT_DATA, .dt = KN_BOOL, SH(__VA_ARGS__)}
#define IN(...) .in = {__VA_ARGS__}, .n_in = (int)(sizeof((kt_in[]){__VA_ARGS__}) / sizeof(kt_in))
#define LIST(...) {__VA_ARGS__}
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
    default: return kn_pow_scalar(a, 0.5);
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
B(b_cast) {
    (void)k;
    for (int d = 0; d < KN_DTYPE_COUNT; d++) o[d] = kn_cast(x[0], (kn_dtype)d);
    return KN_DTYPE_COUNT;
}

/* copy_ and fill_ into strided views, from another device, with broadcast and conversion. */
B(b_copy_into) {
    kn_tensor *z = kn_zeros(KN_SHAPE(6, 8), k->dt, k->dev);
    kn_fill_(kn_slice(z, 1, 1, 8, 3), 5);
    kn_copy_(kn_select(z, 0, 2), x[0]);
    kn_copy_(kn_select(z, 1, 7), kn_select(x[1], 1, 0));
    kn_copy_(kn_select(z, 0, 4), kn_to(x[0], KN_CPU)); /* from the host into a row */
    kn_tensor *w = kn_zeros(KN_SHAPE(3, 8), KN_F64, k->dev), *h = kn_zeros(KN_SHAPE(8, 6), KN_F32, k->dev);
    kn_copy_(w, x[0]);                       /* broadcast and conversion */
    kn_copy_(kn_transpose(h, 0, 1), kn_expand(kn_unsqueeze(kn_select(x[1], 1, 1), 1), KN_SHAPE(6, 8)));
    o[0] = z, o[1] = w, o[2] = h;
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
            FIX(KN_F32, -1, 1, 45), FIX(KN_F32, 0.5, 2, 45), COUNT0), .p = {mode}, .tol = 2, .htol = 4)
#define LOSS_IN D(-3, 0, 40, 7), IX(KN_I64, 7, 40), DNG(0.5, 2, 7)
#define NLL(nm, mode, red) CASE("nll_loss " nm, b_nll, FLOATS, L_ALL, GRAD | GRADCHECK, IN(LOSS_IN), .p = {mode, red})
#define CE(nm, mode, red) \
    CASE("cross_entropy " nm, b_cross_entropy, FLOATS, L_ALL, GRAD | GRADCHECK, IN(LOSS_IN), .p = {mode, red}, .tol = 2)
#define OPTIM(nm, kind) CASE(nm, b_optim, F32_64, L_C, 0, IN(D(-1, 1, 17), D(-1, 1, 1017), D(-1, 1, 2017)), .p = {kind})
#define RANDOM(nm, kind, dts) CASE("random " nm, b_random, dts, L_C, EXACT | NO_REF, .p = {kind})

static const kt_case cases[] = {
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
    CASE("cross_entropy every row ignored", b_cross_entropy, F32_64, L_C, 0,
         IN(D(-3, 3, 4, 5), VALS(KN_I64, LIST(2, 2, 2, 2), 4)), .p = {4, 0}),
    CASE("mse_loss mean", b_mse, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-2, 2, 8, 5), D(-2, 2, 8, 5)), .p = {0}),
    CASE("mse_loss sum", b_mse, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-2, 2, 8, 5), D(-2, 2, 8, 5)), .p = {1}),
    CASE("mse_loss none", b_mse, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-2, 2, 8, 5), D(-2, 2, 8, 5)), .p = {2}),
    /* ---- fused: norms ---- */
    CASE("batch_norm train [300, 45]", b_batch_norm, FLOATS, L_NOB, GRAD | GRADCHECK, BN_IN(45, 300, 45), .p = {1},
         .tol = 2),
    CASE("batch_norm eval [300, 45]", b_batch_norm, FLOATS, L_ALL, GRAD | GRADCHECK, BN_IN(45, 300, 45), .p = {0},
         .tol = 2),
    CASE("batch_norm train [6, 5, 33]", b_batch_norm, FLOATS, L_NOB, GRAD | GRADCHECK, BN_IN(5, 6, 5, 33), .p = {1},
         .tol = 2),
    CASE("batch_norm eval [6, 5, 33]", b_batch_norm, FLOATS, L_ALL, GRAD | GRADCHECK, BN_IN(5, 6, 5, 33), .p = {0},
         .tol = 2),
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
    CASE("dropout eval", b_dropout, FLOATS, L_CTS, GRAD, IN(D(-1, 1, 37, 41)), .p = {0}, .r = 0.3),
    /* ---- fused: embeddings and indexing ---- */
    CASE("embedding", b_embedding, FLOATS, L_ALL, GRAD | GRADCHECK, IN(D(-1, 1, 10, 4), IX(KN_I64, 10, 300))),
    CASE("embedding 2-D indices", b_embedding, FLOATS, L_CTS, GRAD | GRADCHECK,
         IN(D(-1, 1, 10, 4), IX(KN_I32, 10, 30, 7))),
    CASE("embedding_cat 3 tables", b_embedding_cat, FLOATS, L_ALL, GRAD | GRADCHECK,
         IN(CODES(500, 3), D(-1, 1, 4, 3), D(-1, 1, 7, 2), D(-1, 1, 2, 5)), .tol = 2),
    CASE("embedding_cat big table", b_embedding_cat, FLOATS, L_CTS, GRAD,
         IN(CODES(500, 3), D(-1, 1, 4, 3), D(-1, 1, 3000, 2), D(-1, 1, 2, 5)), .tol = 2),
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
};
#define N_CASES ((int)(sizeof cases / sizeof *cases))

/* ---- inputs ----------------------------------------------------------------------------------- */
static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0); }

static int64_t numel_of(int nd, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n *= shape[d];
    return n;
}

/* The shape of input i (dims clipped to `clip` for finite differences). */
static void input_shape(const kt_case *c, int i, int clip, int64_t *shape) {
    const kt_in *in = &c->in[i];
    for (int d = 0; d < in->nd; d++) {
        shape[d] = in->shape[d];
        bool keep = in->kind == KT_CODES && d == in->nd - 1; /* one column per table */
        if (clip && !keep && shape[d] > clip) shape[d] = clip;
    }
}

/* n values for input i: data uniform in [lo, hi) (integers: 10x that,
 * floored; uint8 of its magnitude; bool a coin), indices floored uniform in
 * [lo, hi), codes below their table's row count, or the given values. */
static void gen_values(const kt_case *c, int i, kn_dtype dt, int nd, const int64_t *shape, int clip, double *v,
                       uint64_t seed) {
    const kt_in *in = &c->in[i];
    int64_t n = numel_of(nd, shape);
    for (int64_t j = 0; j < n; j++) {
        double u = unif(&seed), x;
        switch (in->kind) {
        case KT_INDEX: {
            double hi = clip && in->hi > clip ? clip : in->hi;
            x = floor(in->lo + (hi - in->lo) * u);
            break;
        }
        case KT_CODES: {
            int col = (int)(j % shape[nd - 1]);
            int64_t ts[4];
            input_shape(c, 1 + col, clip, ts);
            x = floor(u * (double)ts[0]);
            break;
        }
        case KT_VALUES: x = in->vals[j]; break;
        default:
            x = in->lo + (in->hi - in->lo) * u;
            if (dt == KN_BOOL) x = u < 0.5;
            else if (dt == KN_U8) x = floor(fabs(x) * 10);
            else if (!kn_dtype_is_float(dt)) x = floor(x * 10);
            break;
        }
        v[j] = x;
    }
}

static kn_dtype input_dtype(const kt_case *c, int i, kn_dtype dt) {
    return c->in[i].dt < 0 ? dt : (kn_dtype)c->in[i].dt;
}

/* Whether input i is a leaf whose gradient is compared. */
static bool wants_grad(const kt_case *c, int i, kn_dtype dt) {
    const kt_in *in = &c->in[i];
    return in->kind == KT_DATA && !in->fixed && !in->nograd && kn_dtype_is_float(input_dtype(c, i, dt));
}

/* Input i on dev in a layout: logical row-major values v (for broadcast: the
 * values of the size-1 first dim), laid into a base tensor that the layout
 * views. Unused elements of strided and offset bases hold NaN (99 for
 * integers), so a kernel that reads one shows. f64: case-dtype floats are
 * cast to float64 after rounding to the case's dtype (the reference). */
static kn_tensor *make_input(const kt_case *c, int ci, int i, kn_dtype cdt, int layout, kn_device dev, bool f64,
                             bool grad, int clip, kn_tensor **leaf) {
    const kt_in *in = &c->in[i];
    kn_dtype dt = input_dtype(c, i, cdt);
    int nd = in->nd, lay = in->fixed || in->kind == KT_VALUES ? CONTIG : layout;
    if ((lay == TRANSPOSED && nd < 2) || nd < 1) lay = CONTIG;
    int64_t shape[4] = {0}, bs[4];
    input_shape(c, i, clip, shape);
    memcpy(bs, shape, sizeof bs);
    if (lay == TRANSPOSED) bs[nd - 1] = shape[nd - 2], bs[nd - 2] = shape[nd - 1];
    if (lay == STRIDED) bs[nd - 1] = 2 * shape[nd - 1] + 1;
    if (lay == OFFSET) bs[0] = shape[0] + 3;
    if (lay == BROADCAST) bs[0] = 1;
    int64_t n = numel_of(nd, shape), bn = numel_of(nd, bs);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v), *b = malloc((size_t)(bn ? bn : 1) * sizeof *b);
    uint64_t seed = (uint64_t)ci * 1000003u + (uint64_t)i * 7919u + (uint64_t)cdt * 131u + (uint64_t)layout * 17u + 1;
    double filler = kn_dtype_is_float(dt) ? NAN : 99;
    if (lay == BROADCAST) gen_values(c, i, dt, nd, bs, clip, b, seed);
    else gen_values(c, i, dt, nd, shape, clip, v, seed);
    if (lay != BROADCAST) {
        for (int64_t j = 0; j < bn; j++) b[j] = filler;
        /* Element j of the logical shape -> its place in the base. */
        int64_t rows = nd >= 2 ? shape[nd - 2] : 1, cols = nd >= 1 ? shape[nd - 1] : 1, inner = rows * cols;
        for (int64_t j = 0; j < n; j++) {
            int64_t q = j / cols, col = j % cols, pos = j;
            if (lay == TRANSPOSED) pos = (j / inner) * inner + col * rows + (j % inner) / cols;
            if (lay == STRIDED) pos = q * bs[nd - 1] + 2 * col + 1;
            if (lay == OFFSET) pos = j + 2 * (n / (shape[0] ? shape[0] : 1));
            b[pos] = v[j];
        }
    }
    kn_tensor *t = kn_cast(kn_from_data(b, KN_F64, nd, bs, KN_CPU), dt);
    free(v);
    free(b);
    if (f64 && in->dt < 0 && kn_dtype_is_float(dt)) t = kn_cast(t, KN_F64);
    t = kn_to(t, dev);
    if (t && kn_device_equal(dev, KN_CPU)) t = kn_clone(t); /* a leaf of its own */
    if (leaf) *leaf = NULL;
    if (t && grad && wants_grad(c, i, cdt)) {
        kn_requires_grad_(t, true);
        if (leaf) *leaf = t;
    }
    switch (lay) {
    case TRANSPOSED: return kn_transpose(t, -1, -2);
    case STRIDED: return kn_slice(t, -1, 1, bs[nd - 1], 2);
    case OFFSET: return kn_narrow(t, 0, 2, shape[0]);
    case BROADCAST: return kn_expand(t, nd, shape);
    default: return t;
    }
}

/* ---- running a case -------------------------------------------------------------------------- */
typedef struct {
    kn_tensor *in[MAX_IN], *leaf[MAX_IN], *out[MAX_OUT];
    int n_out;
} kt_run;

static int run_case(const kt_case *c, int ci, kn_dtype dt, int layout, kn_device dev, bool f64, bool grad, kt_run *r) {
    memset(r, 0, sizeof *r);
    kt_ctx k = {c, dev, f64 && kn_dtype_is_float(dt) ? KN_F64 : dt};
    for (int i = 0; i < c->n_in; i++) r->in[i] = make_input(c, ci, i, dt, layout, dev, f64, grad, 0, &r->leaf[i]);
    r->n_out = c->build(&k, r->in, r->out);
    return r->n_out;
}

/* sum_k sum(out_k * w_k) over the results that need grad, w_k fixed random
 * values (rounded to the case's dtype), then backward. */
static kn_status backprop(kt_run *r, int ci, kn_dtype dt) {
    kn_tensor *L = NULL;
    kn_dtype wdt = kn_dtype_is_float(dt) ? dt : KN_F32;
    for (int k = 0; k < r->n_out; k++) {
        kn_tensor *o = r->out[k];
        if (!o || !kn_requires_grad(o)) continue;
        int64_t n = kn_numel(o);
        double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
        uint64_t seed = (uint64_t)ci * 31u + (uint64_t)k + 77;
        for (int64_t j = 0; j < n; j++) v[j] = 2 * unif(&seed) - 1;
        kn_tensor *w = kn_to(kn_cast(kn_cast(kn_from_data(v, KN_F64, kn_ndim(o), kn_shape(o), KN_CPU), wdt),
                                     kn_dtype_of(o)), kn_device_of(o));
        free(v);
        kn_tensor *term = kn_sum_all(kn_mul(o, w));
        if (!term) return kn_error_code();
        L = L ? kn_add(L, kn_cast(term, kn_dtype_of(L))) : term;
    }
    if (!L) return kn__err(KN_ERR_AUTOGRAD, "harness: no result requires grad");
    return kn_backward(L);
}

/* The gradient of leaf i (zeros where none arrived). */
static kn_tensor *grad_of(kt_run *r, int i) {
    kn_tensor *l = r->leaf[i];
    if (!l) return NULL;
    kn_tensor *g = kn_grad(l);
    return g ? g : kn_zeros_like(l);
}

/* ---- comparing -------------------------------------------------------------------------------- */
typedef struct {
    double err;
    int64_t at;
    double got, want;
    char why[160];
} kt_diff;

/* Largest |got - want| / (1 + |want|); NaN matches NaN, infinities their own sign. */
static kt_diff compare(kn_tensor *got, kn_tensor *want, bool same_dtype) {
    kt_diff r = {0, -1, 0, 0, ""};
    char s1[64], s2[64];
    if (!got || !want) {
        r.err = INFINITY;
        snprintf(r.why, sizeof r.why, "%s", got ? "no reference result" : "no result");
        return r;
    }
    if (kn_ndim(got) != kn_ndim(want) || memcmp(kn_shape(got), kn_shape(want), (size_t)kn_ndim(got) * 8)) {
        r.err = INFINITY;
        snprintf(r.why, sizeof r.why, "shape %s, expected %s", kn_shape_str(got, s1, sizeof s1),
                 kn_shape_str(want, s2, sizeof s2));
        return r;
    }
    if (same_dtype && kn_dtype_of(got) != kn_dtype_of(want)) {
        r.err = INFINITY;
        snprintf(r.why, sizeof r.why, "dtype %s, expected %s", kn_dtype_name(kn_dtype_of(got)),
                 kn_dtype_name(kn_dtype_of(want)));
        return r;
    }
    int64_t n = kn_numel(got);
    double *a = malloc((size_t)(n ? n : 1) * 8), *b = malloc((size_t)(n ? n : 1) * 8);
    if (kn_to_host(got, a, KN_F64) != KN_OK || kn_to_host(want, b, KN_F64) != KN_OK) {
        r.err = INFINITY;
        snprintf(r.why, sizeof r.why, "read failed: %s", kn_error());
        n = 0;
    }
    for (int64_t i = 0; i < n; i++) {
        if ((a[i] != a[i] && b[i] != b[i]) || a[i] == b[i]) continue;
        double e = fabs(a[i] - b[i]) / (1 + fabs(b[i]));
        if (e != e) e = INFINITY;
        if (e > r.err) r.err = e, r.at = i, r.got = a[i], r.want = b[i];
    }
    free(a);
    free(b);
    return r;
}

static double tol_of(kn_dtype dt) {
    switch (dt) {
    case KN_F64: return 1e-9;
    case KN_F32: return 1e-4;
    case KN_F16: return 1e-2;
    case KN_BF16: return 4e-2;
    default: return 0;
    }
}

/* The tolerance of a result of dtype odt from a case run in dt. */
static double tol_for(const kt_case *c, kn_dtype dt, kn_dtype odt, double extra) {
    if (c->flags & EXACT) return odt == KN_F64 ? 1e-15 : 0;
    if (!kn_dtype_is_float(odt)) return 0;
    double t = tol_of(odt);
    if (kn_dtype_is_float(dt) && tol_of(dt) > t) t = tol_of(dt);
    return t * (c->tol > 0 ? c->tol : 1) * extra;
}

/* ---- bookkeeping ------------------------------------------------------------------------------ */
#define MAX_DEV 16
static kn_device devs[MAX_DEV];
static int n_devs;
static struct {
    int passed, failed, skipped;
} tally[MAX_DEV];
static bool verbose;
static int printed_failures;

static void describe(char *buf, size_t cap, const kt_case *c, kn_dtype dt, int layout, int d, const char *mode) {
    snprintf(buf, cap, "%s%s [%s, %s] on %s", mode, c->name, kn_dtype_name(dt), layout_name[layout],
             kn_device_str(devs[d]));
}

static void skip(int d, const kt_case *c, kn_dtype dt, int layout, const char *mode, const char *why) {
    char what[256];
    tally[d].skipped++;
    describe(what, sizeof what, c, dt, layout, d, mode);
    printf("SKIPPED %s: %s\n", what, why);
}

static void result(int d, const kt_case *c, kn_dtype dt, int layout, const char *mode, bool ok, const char *fmt, ...)
    KN_PRINTF(7, 8);
static void result(int d, const kt_case *c, kn_dtype dt, int layout, const char *mode, bool ok, const char *fmt, ...) {
    char what[256];
    describe(what, sizeof what, c, dt, layout, d, mode);
    if (ok) {
        tally[d].passed++;
        if (verbose) printf("ok %s\n", what);
        return;
    }
    tally[d].failed++;
    if (printed_failures++ >= 300) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("FAILED %s: %s\n", what, msg);
}

/* Why dev cannot run this case (NULL: it can). */
static const char *unsupported(const kt_case *c, kn_dtype dt, kn_device dev) {
    const kn_backend *b = kn__backend(dev.kind);
    uint32_t have = b && b->dtypes ? b->dtypes : KN_DTYPES_ALL;
    if (!(have >> dt & 1)) return "the backend does not declare this dtype";
    for (int i = 0; i < c->n_in; i++)
        if (!(have >> input_dtype(c, i, dt) & 1)) return "the backend does not declare an input's dtype";
    if ((c->flags & GRAPH) && !kn_graph_supported(dev)) return "the device cannot capture graphs";
    return NULL;
}

/* Checks results against the CPU's (the same dtype; not on the CPU itself)
 * and the float64 reference's; the first mismatch goes to msg. */
static bool check_lists(const kt_case *c, kn_dtype dt, kn_device dev, kn_tensor **got, int ng, kn_tensor **cpu, int nc,
                        kn_tensor **ref, int nr, double extra, const char *what, char *msg, size_t cap) {
    bool on_cpu = kn_device_equal(dev, KN_CPU);
    if ((cpu && !on_cpu && ng != nc) || (ref && ng != nr)) {
        snprintf(msg, cap, "%d %s, the CPU gave %d and the reference %d", ng, what, nc, nr);
        return false;
    }
    for (int k = 0; k < ng; k++) {
        if (!got[k]) {
            snprintf(msg, cap, "%s %d: none (%s)", what, k, kn_error());
            return false;
        }
        if (!(c->flags & HOST_OUT) && !kn_device_equal(kn_device_of(got[k]), dev)) {
            snprintf(msg, cap, "%s %d is on %s, not on the device", what, k, kn_device_str(kn_device_of(got[k])));
            return false;
        }
        for (int against = 0; against < 2; against++) {
            if (against ? !ref : !cpu || on_cpu) continue;
            kn_tensor *want = against ? ref[k] : cpu[k];
            kt_diff df = compare(got[k], want, against == 0);
            double tol = tol_for(c, dt, kn_dtype_of(got[k]), extra);
            if (df.err > tol) {
                if (df.why[0])
                    snprintf(msg, cap, "%s %d against the %s: %s", what, k, against ? "float64 reference" : "CPU",
                             df.why);
                else
                    snprintf(msg, cap, "%s %d against the %s: error %.3g > %.3g at element %lld (%.9g, expected %.9g)",
                             what, k, against ? "float64 reference" : "CPU", df.err, tol, (long long)df.at, df.got,
                             df.want);
                return false;
            }
        }
    }
    return true;
}

static bool outputs_ok(const kt_run *r) {
    if (r->n_out <= 0) return false;
    for (int k = 0; k < r->n_out; k++)
        if (!r->out[k]) return false;
    return true;
}

/* ---- modes ------------------------------------------------------------------------------------- */
/* An error case: the op fails on the device (at once, or when a result is
 * read), with the message the table gives, and the device works afterwards. */
static void run_error(int ci, kn_dtype dt, int layout, int d) {
    const kt_case *c = &cases[ci];
    kn_scope s = kn_scope_begin();
    kn_error_clear();
    kt_run got;
    int ng = run_case(c, ci, dt, layout, devs[d], false, false, &got);
    bool failed = ng <= 0 || kn_error_code() != KN_OK;
    for (int k = 0; k < ng && !failed; k++) {
        int64_t n = got.out[k] ? kn_numel(got.out[k]) : 0;
        double *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
        if (!got.out[k] || kn_to_host(got.out[k], buf, KN_F64) != KN_OK) failed = true;
        free(buf);
    }
    if (!failed && kn_device_synchronize(devs[d]) != KN_OK) failed = true;
    char err[256];
    snprintf(err, sizeof err, "%s", failed ? kn_error() : "no error");
    bool ok = failed && strstr(err, c->err);
    kn_error_clear();
    double after = kn_item(kn_sum_all(kn_ones(KN_SHAPE(3), KN_F32, devs[d])));
    result(d, c, dt, layout, "", ok && after == 3, "expected the error \"%s\", got \"%s\"%s", c->err, err,
           after == 3 ? "" : "; the device does not work afterwards");
    kn_error_clear();
    kn_scope_end(s);
}

static void run_correctness(int ci) {
    const kt_case *c = &cases[ci];
    for (int dti = 0; dti < KN_DTYPE_COUNT; dti++)
        for (int layout = 0; layout < N_LAYOUTS; layout++) {
            kn_dtype dt = (kn_dtype)dti;
            if (!(c->dtypes >> dt & 1) || !(c->layouts >> layout & 1)) continue;
            kn_scope outer = kn_scope_begin();
            if (c->err) {
                for (int d = 0; d < n_devs; d++) {
                    const char *why = unsupported(c, dt, devs[d]);
                    if (why) skip(d, c, dt, layout, "", why);
                    else run_error(ci, dt, layout, d);
                }
                kn_scope_end(outer);
                continue;
            }
            kt_run cpu, ref;
            int nc = run_case(c, ci, dt, layout, KN_CPU, false, false, &cpu);
            bool have_ref = kn_dtype_is_float(dt) && !(c->flags & NO_REF);
            int nr = have_ref ? run_case(c, ci, dt, layout, KN_CPU, true, false, &ref) : 0;
            kn_error_clear();
            for (int d = 0; d < n_devs; d++) {
                const char *why = unsupported(c, dt, devs[d]);
                if (why) {
                    skip(d, c, dt, layout, "", why);
                    continue;
                }
                kn_scope s = kn_scope_begin();
                kt_run got;
                char msg[512] = "";
                bool ok;
                if (kn_device_equal(devs[d], KN_CPU)) got = cpu; /* the CPU against the reference */
                else run_case(c, ci, dt, layout, devs[d], false, false, &got);
                if (!outputs_ok(&got)) {
                    ok = false;
                    snprintf(msg, sizeof msg, "the op failed: %s", kn_error());
                } else {
                    ok = check_lists(c, dt, devs[d], got.out, got.n_out, cpu.out, nc, have_ref ? ref.out : NULL, nr, 1,
                                     "result", msg, sizeof msg);
                }
                result(d, c, dt, layout, "", ok, "%s", msg);
                kn_error_clear();
                kn_scope_end(s);
            }
            kn_scope_end(outer);
        }
}

/* Finite differences in float64 on the device, over the inputs that want
 * gradients; the others (indices, in-place state, class weights) stay put. */
typedef struct {
    const kt_case *c;
    kn_device dev;
    kn_tensor *all[MAX_IN];
    int map[MAX_IN], n;
} gc_ctx;

static kn_tensor *gc_fn(kn_tensor **in, void *p) {
    gc_ctx *g = p;
    kn_tensor *x[MAX_IN], *o[MAX_OUT] = {0};
    memcpy(x, g->all, sizeof x);
    for (int j = 0; j < g->n; j++) x[g->map[j]] = in[j];
    kt_ctx k = {g->c, g->dev, KN_F64};
    return g->c->build(&k, x, o) > 0 ? o[0] : NULL;
}

static void run_gradcheck(int ci, int d) {
    const kt_case *c = &cases[ci];
    const char *why = unsupported(c, KN_F64, devs[d]);
    if (why) {
        skip(d, c, KN_F64, CONTIG, "gradcheck ", why);
        return;
    }
    kn_scope s = kn_scope_begin();
    gc_ctx g = {.c = c, .dev = devs[d]};
    kn_tensor *gin[MAX_IN];
    for (int i = 0; i < c->n_in; i++) {
        g.all[i] = make_input(c, ci, i, KN_F64, CONTIG, devs[d], false, false, 4, NULL);
        if (wants_grad(c, i, KN_F64)) g.map[g.n] = i, gin[g.n++] = g.all[i];
    }
    double e = g.n ? kn_gradcheck(gc_fn, g.n, gin, &g, 1e-6) : -1;
    result(d, c, KN_F64, CONTIG, "gradcheck ", e >= 0 && e < 1e-5, "finite differences: error %g%s%s", e,
           e < 0 ? ": " : "", e < 0 ? kn_error() : "");
    kn_error_clear();
    kn_scope_end(s);
}

static void run_gradients(int ci) {
    const kt_case *c = &cases[ci];
    if (!(c->flags & GRAD) || c->err) return;
    for (int dti = 0; dti < KN_DTYPE_COUNT; dti++)
        for (int layout = 0; layout < N_LAYOUTS; layout++) {
            kn_dtype dt = (kn_dtype)dti;
            if (!(c->dtypes >> dt & 1) || !(c->layouts >> layout & 1) || !kn_dtype_is_float(dt)) continue;
            kn_scope outer = kn_scope_begin();
            kt_run cpu, ref;
            bool have_ref = !(c->flags & NO_REF);
            kn_status sc =
                run_case(c, ci, dt, layout, KN_CPU, false, true, &cpu) > 0 ? backprop(&cpu, ci, dt) : KN_ERR_NULL;
            kn_status sr = have_ref && run_case(c, ci, dt, layout, KN_CPU, true, true, &ref) > 0
                               ? backprop(&ref, ci, dt)
                               : KN_ERR_NULL;
            kn_tensor *gc[MAX_IN] = {0}, *gr[MAX_IN] = {0};
            int ng = 0;
            for (int i = 0; i < c->n_in; i++)
                if (cpu.leaf[i]) {
                    gc[ng] = sc == KN_OK ? grad_of(&cpu, i) : NULL;
                    gr[ng++] = sr == KN_OK ? grad_of(&ref, i) : NULL;
                }
            kn_error_clear();
            for (int d = 0; d < n_devs; d++) {
                const char *why = unsupported(c, dt, devs[d]);
                if (why) {
                    skip(d, c, dt, layout, "grad ", why);
                    continue;
                }
                kn_scope s = kn_scope_begin();
                kt_run got;
                char msg[512] = "";
                bool ok = false;
                kn_status st = run_case(c, ci, dt, layout, devs[d], false, true, &got) > 0 ? backprop(&got, ci, dt)
                                                                                          : kn_error_code();
                if (st != KN_OK) {
                    snprintf(msg, sizeof msg, "forward or backward failed: %s", kn_error());
                } else {
                    kn_tensor *gd[MAX_IN] = {0};
                    int n = 0;
                    for (int i = 0; i < c->n_in; i++)
                        if (got.leaf[i]) gd[n++] = grad_of(&got, i);
                    bool half = dt == KN_F16 || dt == KN_BF16;
                    double extra = 2 * (half && c->htol > 0 ? c->htol : 1);
                    ok = check_lists(c, dt, devs[d], gd, n, gc, ng, have_ref ? gr : NULL, ng, extra, "gradient", msg,
                                     sizeof msg);
                }
                result(d, c, dt, layout, "grad ", ok, "%s", msg);
                kn_error_clear();
                kn_scope_end(s);
            }
            kn_scope_end(outer);
        }
    if ((c->flags & GRADCHECK) && (c->dtypes & BIT(KN_F64)))
        for (int d = 0; d < n_devs; d++) run_gradcheck(ci, d);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median time of the builder (inputs made beforehand), float32 where the
 * case has it, contiguous, to the device's synchronize. */
static void run_perf(int ci) {
    const kt_case *c = &cases[ci];
    if (c->err) return;
    kn_dtype dt = KN_F32;
    if (!(c->dtypes & BIT(KN_F32)))
        for (int i = KN_DTYPE_COUNT - 1; i >= 0; i--)
            if (c->dtypes >> i & 1) dt = (kn_dtype)i;
    printf("%-44.44s %-8s", c->name, kn_dtype_name(dt));
    for (int d = 0; d < n_devs; d++) {
        if (unsupported(c, dt, devs[d])) {
            printf(" %11s", "skipped");
            continue;
        }
        kn_scope outer = kn_scope_begin();
        kn_tensor *x[MAX_IN], *o[MAX_OUT];
        for (int i = 0; i < c->n_in; i++) x[i] = make_input(c, ci, i, dt, CONTIG, devs[d], false, false, 0, NULL);
        kt_ctx k = {c, devs[d], dt};
        double t[25], total = 0;
        int reps = 0;
        bool ok = true;
        for (int r = -1; r < 25 && ok && (r < 3 || total < 0.3); r++) {
            kn_scope s = kn_scope_begin();
            double t0 = now();
            ok = c->build(&k, x, o) > 0 && kn_device_synchronize(devs[d]) == KN_OK;
            double dt_ = now() - t0;
            kn_scope_end(s);
            if (r >= 0) t[reps++] = dt_, total += dt_; /* r = -1: warm-up */
        }
        if (ok && reps) {
            qsort(t, (size_t)reps, sizeof *t, cmp_double);
            printf(" %9.1f us", t[reps / 2] * 1e6);
        } else {
            printf(" %11s", "failed");
        }
        kn_error_clear();
        kn_scope_end(outer);
    }
    printf("\n");
}

/* ---- main ---------------------------------------------------------------------------------------- */
static bool is_fused_name(const char *name) {
    for (int op = 0; op < KN_OP_COUNT; op++)
        if (kn__op_tier((kn_op)op) == KN_TIER_FUSED && !strcmp(kn__op_name((kn_op)op), name)) return true;
    return false;
}

int main(int argc, char **argv) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    bool grad = false, perf = false;
    const char *only_case = NULL, *only_device = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--grad")) grad = true;
        else if (!strcmp(argv[i], "--perf")) perf = true;
        else if (!strcmp(argv[i], "--verbose")) verbose = true;
        else if (!strcmp(argv[i], "--case") && i + 1 < argc) only_case = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) only_device = argv[++i];
        else {
            printf("usage: %s [--grad | --perf] [--case SUBSTR] [--device NAME] [--verbose]\n", argv[0]);
            return !strcmp(argv[i], "--help") ? 0 : 2;
        }
    }
    kn_device all[MAX_DEV];
    int n_all = kt_devices(all, MAX_DEV);
    int test_kind = kt_test_kind();
    for (int d = 0; d < n_all; d++) {
        const char *name = kn_device_str(all[d]);
        size_t len = only_device ? strlen(only_device) : 0;
        if (only_device && strcmp(name, only_device) && !(strncmp(name, only_device, len) == 0 && name[len] == ':'))
            continue;
        devs[n_devs++] = all[d];
    }
    if (!n_devs) {
        printf("backend_ops: no device matches '%s'\n", only_device ? only_device : "");
        return 2;
    }
    printf("backend_ops (%s) on", perf ? "timing" : grad ? "gradients" : "correctness");
    for (int d = 0; d < n_devs; d++) printf(" %s%s", kn_device_str(devs[d]), d + 1 < n_devs ? "," : "\n");
    if (perf) {
        printf("%-44s %-8s", "case", "dtype");
        for (int d = 0; d < n_devs; d++) printf(" %11s", kn_device_str(devs[d]));
        printf("\n");
    }
    kn_fallback_stats_reset();
    int ran = 0;
    for (int ci = 0; ci < N_CASES; ci++) {
        if (only_case && !strstr(cases[ci].name, only_case)) continue;
        ran++;
        if (perf) run_perf(ci);
        else if (grad) run_gradients(ci);
        else run_correctness(ci);
    }
    if (perf) {
        printf("backend_ops: timed %d cases (not checked)\n", ran);
        return 0;
    }
    /* Where each device ran its ops: prim and the GPUs run every op
     * themselves; the kernel-less device sends primitives to the host, never
     * a fused op (those run as composites on the device). */
    kn_fallback_stat st[128];
    int nst = kn_fallback_stats(st, 128);
    for (int d = 0; d < n_devs; d++) {
        bool ok = true;
        char msg[256] = "";
        for (int i = 0; i < nst && i < 128; i++) {
            if ((int)st[i].kind != devs[d].kind) continue;
            if (devs[d].kind == test_kind && !is_fused_name(st[i].op)) continue;
            ok = false;
            snprintf(msg, sizeof msg, "op '%s' ran on the host %lld times", st[i].op, (long long)st[i].count);
        }
        char what[128];
        snprintf(what, sizeof what, "host fallback on %s", kn_device_str(devs[d]));
        if (ok) tally[d].passed++;
        else tally[d].failed++, printf("FAILED %s: %s\n", what, msg);
    }
    /* Every primitive ran on prim (when every case ran): the cases reach them
     * all (unary_backward only with gradients). */
    for (int d = 0; d < n_devs && !only_case; d++) {
        if (devs[d].kind != kt_prim_register()) continue;
        for (int op = 0; op < KN_OP_COUNT; op++) {
            if (kn__op_tier((kn_op)op) != KN_TIER_PRIMITIVE || (op == KN_OP_UNARY_BACKWARD && !grad)) continue;
            bool ran_op = kt_prim_calls(op) > 0;
            if (ran_op) tally[d].passed++;
            else tally[d].failed++, printf("FAILED no case ran the %s primitive on prim\n", kn__op_name((kn_op)op));
        }
    }
    int passed = 0, failed = 0, skipped = 0;
    for (int d = 0; d < n_devs; d++) {
        printf("%-8s %-64.64s %5d passed, %d failed, %d skipped\n", kn_device_str(devs[d]),
               kn_device_description(devs[d]), tally[d].passed, tally[d].failed, tally[d].skipped);
        passed += tally[d].passed, failed += tally[d].failed, skipped += tally[d].skipped;
    }
    if (kn_live_tensors() != 0) {
        printf("FAILED: %lld tensors leaked\n", (long long)kn_live_tensors());
        failed++;
    }
    printf("backend_ops: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
