/* The standard layers, built on the module API like a user's own would be. */
#include "nn_internal.h"
#include "ops/fused.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Parameters are raw references (in no scope): the module will own them. */
static kn_tensor *param_uniform(int ndim, const int64_t *shape, double bound) {
    kn_scope s = kn_scope_begin();
    kn_tensor *t = kn_empty(ndim, shape, KN_F32, KN_CPU);
    if (t && kn_uniform_(t, -bound, bound, NULL) != KN_OK) t = NULL;
    kn_retain(t);
    kn_scope_end(s);
    return t;
}

static kn_module *with_param(kn_module *m, const char *name, kn_tensor *t) {
    /* kn_module_add_param retains; drop the creation reference. */
    bool ok = m && t && kn_module_add_param(m, name, t);
    kn_release(t);
    if (!ok) {
        kn_module_free(m);
        return NULL;
    }
    return m;
}

static kn_module *with_buffer(kn_module *m, const char *name, kn_tensor *t) {
    bool ok = m && t && kn_module_add_buffer(m, name, t);
    kn_release(t);
    if (!ok) {
        kn_module_free(m);
        return NULL;
    }
    return m;
}

static kn_tensor *own_full(int64_t n, double v, kn_dtype dt) {
    kn_scope s = kn_scope_begin();
    kn_tensor *t = n < 0 ? kn_full(0, NULL, v, dt, KN_CPU) : kn_full(1, &n, v, dt, KN_CPU);
    kn_retain(t);
    kn_scope_end(s);
    return t;
}

static bool positive(const char *op, const char *what, int64_t v) {
    if (v > 0) return true;
    kn__err(KN_ERR_INVALID, "%s: %s must be positive, got %lld", op, what, (long long)v);
    return false;
}

/* ---- Linear ------------------------------------------------------------------------------ */
static kn_tensor *linear_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    return kn_linear(x[0], kn_module_get(m, "weight"), kn_module_get(m, "bias"));
}

kn_module *kn_nn_linear(int64_t in, int64_t out, bool bias) {
    if (!positive("Linear", "in_features", in) || !positive("Linear", "out_features", out)) return NULL;
    kn_module *m = kn_module_new("Linear", linear_forward, 0, NULL);
    if (!m) return NULL;
    kn__module_set_repr(m, "in_features=%lld, out_features=%lld, bias=%s", (long long)in,
                        (long long)out, bias ? "True" : "False");
    /* PyTorch's kaiming_uniform(a=sqrt(5)) reduces to U(-1/sqrt(in), 1/sqrt(in)). */
    double bound = 1.0 / sqrt((double)in);
    m = with_param(m, "weight", param_uniform(KN_SHAPE(out, in), bound));
    if (m && bias) m = with_param(m, "bias", param_uniform(KN_SHAPE(out), bound));
    return m;
}

/* ---- Embedding ------------------------------------------------------------------------------ */
static kn_tensor *embedding_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    return kn_embedding(kn_module_get(m, "weight"), x[0]);
}

kn_module *kn_nn_embedding(int64_t num, int64_t dim) {
    if (!positive("Embedding", "num_embeddings", num) || !positive("Embedding", "embedding_dim", dim)) return NULL;
    kn_module *m = kn_module_new("Embedding", embedding_forward, 0, NULL);
    if (!m) return NULL;
    kn__module_set_repr(m, "%lld, %lld", (long long)num, (long long)dim);
    kn_scope s = kn_scope_begin();
    kn_tensor *w = kn_retain(kn_randn(KN_SHAPE(num, dim), KN_F32, KN_CPU, NULL));
    kn_scope_end(s);
    return with_param(m, "weight", w);
}

/* ---- BatchNorm1d ------------------------------------------------------------------------------ */
typedef struct {
    double eps, momentum;
} bn_state;

/* num_batches_tracked counts on the device, inside the norm's kernel. */
static kn_tensor *batch_norm_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    bn_state *s = kn_module_state(m);
    return kn__batch_norm_ex(x[0], kn_module_get(m, "running_mean"), kn_module_get(m, "running_var"),
                             kn_module_get(m, "weight"), kn_module_get(m, "bias"),
                             kn_module_get(m, "num_batches_tracked"), kn_module_training(m), s->momentum, s->eps);
}

kn_module *kn_nn_batch_norm1d(int64_t c) {
    if (!positive("BatchNorm1d", "num_features", c)) return NULL;
    kn_module *m = kn_module_new("BatchNorm1d", batch_norm_forward, sizeof(bn_state), NULL);
    if (!m) return NULL;
    *(bn_state *)kn_module_state(m) = (bn_state){1e-5, 0.1};
    kn__module_set_repr(m, "%lld, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True", (long long)c);
    m = with_param(m, "weight", own_full(c, 1, KN_F32));
    if (m) m = with_param(m, "bias", own_full(c, 0, KN_F32));
    if (m) m = with_buffer(m, "running_mean", own_full(c, 0, KN_F32));
    if (m) m = with_buffer(m, "running_var", own_full(c, 1, KN_F32));
    if (m) m = with_buffer(m, "num_batches_tracked", own_full(-1, 0, KN_I64));
    return m;
}

/* ---- LayerNorm ------------------------------------------------------------------------------ */
static kn_tensor *layer_norm_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    return kn_layer_norm(x[0], 1, kn_module_get(m, "weight"), kn_module_get(m, "bias"), 1e-5);
}

kn_module *kn_nn_layer_norm(int64_t c) {
    if (!positive("LayerNorm", "normalized_shape", c)) return NULL;
    kn_module *m = kn_module_new("LayerNorm", layer_norm_forward, 0, NULL);
    if (!m) return NULL;
    kn__module_set_repr(m, "(%lld,), eps=1e-05, elementwise_affine=True", (long long)c);
    m = with_param(m, "weight", own_full(c, 1, KN_F32));
    return m ? with_param(m, "bias", own_full(c, 0, KN_F32)) : NULL;
}

/* ---- Dropout and activations -------------------------------------------------------------------- */
typedef struct {
    double p;
} scalar_state;

static kn_tensor *dropout_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    return kn_dropout(x[0], ((scalar_state *)kn_module_state(m))->p, kn_module_training(m), NULL);
}

kn_module *kn_nn_dropout(double p) {
    if (!(p >= 0 && p <= 1)) {
        kn__err(KN_ERR_INVALID, "Dropout: p must be in [0, 1], got %g", p);
        return NULL;
    }
    kn_module *m = kn_module_new("Dropout", dropout_forward, sizeof(scalar_state), NULL);
    if (!m) return NULL;
    ((scalar_state *)kn_module_state(m))->p = p;
    kn__module_set_repr(m, "p=%g, inplace=False", p);
    return m;
}

#define ACTIVATION(fn, Name, call)                                                  \
    static kn_tensor *fn##_forward(kn_module *m, int n, kn_tensor *const *x) {      \
        (void)n;                                                                     \
        (void)m;                                                                     \
        return call;                                                                 \
    }                                                                                \
    kn_module *kn_nn_##fn(void) { return kn_module_new(Name, fn##_forward, 0, NULL); }

ACTIVATION(relu, "ReLU", kn_relu(x[0]))
ACTIVATION(gelu, "GELU", kn_gelu(x[0]))
ACTIVATION(sigmoid, "Sigmoid", kn_sigmoid(x[0]))
ACTIVATION(tanh, "Tanh", kn_tanh(x[0]))

static kn_tensor *leaky_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    return kn_leaky_relu(x[0], ((scalar_state *)kn_module_state(m))->p);
}

kn_module *kn_nn_leaky_relu(double slope) {
    kn_module *m = kn_module_new("LeakyReLU", leaky_forward, sizeof(scalar_state), NULL);
    if (!m) return NULL;
    ((scalar_state *)kn_module_state(m))->p = slope;
    kn__module_set_repr(m, "negative_slope=%g", slope);
    return m;
}

/* ---- Sequential -------------------------------------------------------------------------------- */
/* Runs of built-in layers that have a fused form run as one op (src/ops/fused.h):
 *   Linear, ReLU                          -> one GEMM with ReLU in its epilogue
 *   Linear [, ReLU], BatchNorm1d [, Dropout] -> GEMM + one norm kernel, and back
 * with the same results (and random draws) as the layers one by one. Only the
 * library's own layer types are fused (a user's module never is), on 2-D
 * input. KILN_FUSE=0 turns it off. */
static int fusion = -1; /* -1: not read yet */

void kn__nn_set_fusion(bool on) { fusion = on; }

static bool fusion_on(void) {
    if (fusion < 0) {
        const char *e = getenv("KILN_FUSE");
        fusion = !(e && !strcmp(e, "0"));
    }
    return fusion;
}

static bool is(kn_module *m, kn_forward_fn f) { return m && kn__module_forward_fn(m) == f; }

/* Children [i, *next) fused, when they start with a Linear that fuses with
 * what follows; NULL with *next == i when they do not (no error then). */
static kn_tensor *fused_run(kn_module *seq, int i, int *next, kn_tensor *x) {
    int nc = kn_module_num_children(seq), j = i + 1;
    *next = i;
    kn_module *lin = kn_module_child_at(seq, i);
    if (!fusion_on() || !is(lin, linear_forward) || !x || kn_ndim(x) != 2 || j >= nc) return NULL;
    bool relu = is(kn_module_child_at(seq, j), relu_forward);
    if (relu) j++;
    kn_module *bn = j < nc && is(kn_module_child_at(seq, j), batch_norm_forward) ? kn_module_child_at(seq, j) : NULL;
    if (!bn && !relu) return NULL;
    kn_tensor *w = kn_module_get(lin, "weight"), *b = kn_module_get(lin, "bias");
    kn_activation act = relu ? KN_ACT_RELU : KN_ACT_NONE;
    if (!bn) {
        *next = j;
        return kn__linear_act(x, w, b, act);
    }
    j++;
    const bn_state *st = kn_module_state(bn);
    kn__bn_opts o = {.running_mean = kn_module_get(bn, "running_mean"), .running_var = kn_module_get(bn, "running_var"),
                     .weight = kn_module_get(bn, "weight"), .bias = kn_module_get(bn, "bias"),
                     .num_batches = kn_module_get(bn, "num_batches_tracked"), .training = kn_module_training(bn),
                     .momentum = st->momentum, .eps = st->eps};
    kn_module *drop = j < nc && is(kn_module_child_at(seq, j), dropout_forward) ? kn_module_child_at(seq, j) : NULL;
    double p = drop ? ((scalar_state *)kn_module_state(drop))->p : 0;
    if (drop && (!kn_module_training(drop) || p < 1)) { /* p = 1 stays a layer of its own (no random draw) */
        o.dropout = kn_module_training(drop) ? p : 0;
        j++;
    }
    *next = j;
    return kn__linear_bn(x, w, b, act, &o);
}

static kn_tensor *sequential_forward(kn_module *m, int n, kn_tensor *const *x) {
    kn_tensor *h = NULL;
    for (int i = 0; i < kn_module_num_children(m);) {
        int next = i;
        kn_tensor *f = n == 1 || i > 0 ? fused_run(m, i, &next, i == 0 ? x[0] : h) : NULL;
        if (next > i) {
            h = f;
            i = next;
        } else {
            kn_module *c = kn_module_child_at(m, i);
            h = i == 0 ? kn_module_forward_n(c, n, x) : kn_module_forward(c, h);
            i++;
        }
        if (!h) return NULL;
    }
    return n == 1 && !h ? kn__scoped(kn_retain(x[0])) : h;
}

kn_module *kn_nn_sequential_append(kn_module *seq, kn_module *m) {
    if (!seq || !m) {
        kn__err_null("Sequential");
        kn_module_free(m);
        return NULL;
    }
    char name[16];
    snprintf(name, sizeof name, "%d", kn_module_num_children(seq));
    return kn_module_add(seq, name, m) ? seq : NULL;
}

kn_module *kn_nn_sequential(int n, kn_module *const *mods) {
    kn_module *seq = kn_module_new("Sequential", sequential_forward, 0, NULL);
    bool ok = seq != NULL;
    for (int i = 0; i < n; i++) {
        if (!ok || !mods[i]) {
            if (ok) kn__err_null("Sequential");
            ok = false;
            kn_module_free(mods[i]);
            continue;
        }
        ok = kn_nn_sequential_append(seq, mods[i]) != NULL;
    }
    if (!ok) {
        kn_module_free(seq);
        return NULL;
    }
    return seq;
}
