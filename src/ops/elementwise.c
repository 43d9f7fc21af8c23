/* Elementwise ops (arithmetic, comparison, where, functions) and their
 * backward rules. Backward rules are written with ops, so they run on
 * whatever device the tensors live on. */
#include "complex_internal.h"

#include <math.h>
#include <string.h>

/* ---- unary ------------------------------------------------------------------------ */
/* Forward output is what the backward kernel wants for these (see kn__unary_grad). */
static bool grad_uses_output(kn_unary_fn f) {
    return f == KN_UNARY_EXP || f == KN_UNARY_SIGMOID || f == KN_UNARY_TANH;
}

typedef struct {
    kn_unary_fn fn;
    double p0, p1;
} unary_state;

/* saved[0]: the forward input, or its output where grad_uses_output. */
static kn_status unary_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const unary_state *st = KN_STATE(n, unary_state);
    kn_tensor *x = n->saved[0];
    kn_device dev = x->storage->device;
    kn_tensor *gc = kn__cast_raw(g, x->dtype);
    kn_tensor *out = gc ? kn__new(x->ndim, x->shape, x->dtype, dev) : NULL;
    if (out) {
        kn_unary_backward_args a = {.out = kn__view(out), .grad = kn__view(gc), .x = kn__view(x), .fn = st->fn,
                                    .p0 = st->p0, .p1 = st->p1};
        out = kn__run_out(KN_OP_UNARY_BACKWARD, dev, &a, out);
    }
    kn_release(gc);
    if (!out) return kn_error_code();
    gin[0] = kn__scoped(out);
    return KN_OK;
}

static bool float_only(kn_unary_fn f) {
    switch (f) {
    case KN_UNARY_NEG: case KN_UNARY_ABS: case KN_UNARY_RELU: case KN_UNARY_CLAMP:
    case KN_UNARY_ADD_SCALAR: case KN_UNARY_MUL_SCALAR: case KN_UNARY_RSUB_SCALAR:
        return false;
    default:
        return true;
    }
}

static kn_tensor *unary(kn_unary_fn f, kn_tensor *a, double p0, double p1) {
    const char *name = kn__unary_name(f);
    if (!a) return kn__err_null(name), NULL;
    if (kn_dtype_is_complex(a->dtype)) return kn__complex_unary(f, a, p0, p1);
    kn_dtype dt = a->dtype;
    if (float_only(f)) dt = kn__float_dtype(dt);
    /* A fractional scalar makes an integer tensor float, as in PyTorch. */
    if ((f == KN_UNARY_ADD_SCALAR || f == KN_UNARY_MUL_SCALAR || f == KN_UNARY_RSUB_SCALAR ||
         f == KN_UNARY_CLAMP) && !kn_dtype_is_float(dt) &&
        (p0 != floor(p0) || (f == KN_UNARY_CLAMP && isfinite(p1) && p1 != floor(p1))))
        dt = KN_F32;
    if (dt == KN_BOOL && f != KN_UNARY_RELU) dt = KN_I64;
    kn_device dev = a->storage->device;
    kn_tensor *in = kn_dtype_is_float(dt) ? kn__cast_raw(a, dt) : kn_retain(a);
    kn_tensor *out = in ? kn__new(a->ndim, a->shape, dt, dev) : NULL;
    if (out) {
        kn_unary_args args = {.out = kn__view(out), .x = kn__view(in), .fn = f, .p0 = p0, .p1 = p1};
        out = kn__run_out(KN_OP_UNARY, dev, &args, out);
    }
    kn_release(in);
    if (!out) return NULL;
    kn_node *n = kn__record(out, name, unary_backward, 1, &a, sizeof(unary_state));
    if (n) {
        kn__save(n, 0, grad_uses_output(f) ? out : a);
        *KN_STATE(n, unary_state) = (unary_state){f, p0, p1};
    }
    return kn__scoped(out);
}

kn_tensor *kn_neg(kn_tensor *a) { return unary(KN_UNARY_NEG, a, 0, 0); }
kn_tensor *kn_exp(kn_tensor *a) { return unary(KN_UNARY_EXP, a, 0, 0); }
kn_tensor *kn_log(kn_tensor *a) { return unary(KN_UNARY_LOG, a, 0, 0); }
kn_tensor *kn_sqrt(kn_tensor *a) { return unary(KN_UNARY_SQRT, a, 0, 0); }
kn_tensor *kn_abs(kn_tensor *a) { return unary(KN_UNARY_ABS, a, 0, 0); }
kn_tensor *kn_relu(kn_tensor *a) { return unary(KN_UNARY_RELU, a, 0, 0); }
kn_tensor *kn_leaky_relu(kn_tensor *a, double s) { return unary(KN_UNARY_LEAKY_RELU, a, s, 0); }
kn_tensor *kn_gelu(kn_tensor *a) { return unary(KN_UNARY_GELU, a, 0, 0); }
kn_tensor *kn_sigmoid(kn_tensor *a) { return unary(KN_UNARY_SIGMOID, a, 0, 0); }
kn_tensor *kn_tanh(kn_tensor *a) { return unary(KN_UNARY_TANH, a, 0, 0); }
kn_tensor *kn_softplus(kn_tensor *a) { return unary(KN_UNARY_SOFTPLUS, a, 0, 0); }
kn_tensor *kn_sin(kn_tensor *a) { return unary(KN_UNARY_SIN, a, 0, 0); }
kn_tensor *kn_cos(kn_tensor *a) { return unary(KN_UNARY_COS, a, 0, 0); }
kn_tensor *kn_tan(kn_tensor *a) { return unary(KN_UNARY_TAN, a, 0, 0); }
kn_tensor *kn_clamp(kn_tensor *a, double lo, double hi) {
    if (lo > hi) {
        kn__err(KN_ERR_INVALID, "clamp: min %g is greater than max %g", lo, hi);
        return NULL;
    }
    return unary(KN_UNARY_CLAMP, a, lo, hi);
}
kn_tensor *kn_add_scalar(kn_tensor *a, double s) { return unary(KN_UNARY_ADD_SCALAR, a, s, 0); }
kn_tensor *kn_mul_scalar(kn_tensor *a, double s) { return unary(KN_UNARY_MUL_SCALAR, a, s, 0); }
kn_tensor *kn_rsub_scalar(kn_tensor *a, double s) { return unary(KN_UNARY_RSUB_SCALAR, a, s, 0); }
kn_tensor *kn_pow_scalar(kn_tensor *a, double s) { return unary(KN_UNARY_POW_SCALAR, a, s, 0); }

/* ---- binary ------------------------------------------------------------------------ */
static bool is_comparison(kn_binary_fn f) { return f >= KN_BINARY_EQ; }

typedef struct {
    kn_binary_fn fn;
} binary_state;

/* saved[0] a, [1] b. */
static kn_status binary_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_binary_fn fn = KN_STATE(n, binary_state)->fn;
    kn_tensor *a = n->saved[0], *b = n->saved[1];
    kn_tensor *ga = NULL, *gb = NULL;
    switch (fn) {
    case KN_BINARY_ADD: ga = g; gb = g; break;
    case KN_BINARY_SUB: ga = g; gb = n->needs[1] ? kn_neg(g) : NULL; break;
    case KN_BINARY_MUL:
        ga = n->needs[0] ? kn_mul(g, b) : NULL;
        gb = n->needs[1] ? kn_mul(g, a) : NULL;
        break;
    case KN_BINARY_DIV:
        ga = n->needs[0] ? kn_div(g, b) : NULL;
        gb = n->needs[1] ? kn_neg(kn_div(kn_mul(g, a), kn_mul(b, b))) : NULL;
        break;
    case KN_BINARY_POW:
        ga = n->needs[0] ? kn_mul(g, kn_mul(b, kn_pow(a, kn_add_scalar(b, -1)))) : NULL;
        /* d/db a^b = a^b log a; defined as 0 where a == 0 (as PyTorch does). */
        gb = n->needs[1] ? kn_where(kn_eq(a, kn_zeros_like(a)), kn_zeros_like(g),
                                    kn_mul(g, kn_mul(kn_pow(a, b), kn_log(a))))
                         : NULL;
        break;
    case KN_BINARY_MAX:
    case KN_BINARY_MIN: {
        /* The larger (smaller) input gets the gradient; ties split it evenly. */
        bool mx = fn == KN_BINARY_MAX;
        kn_tensor *half = kn_mul_scalar(g, 0.5), *zero = kn_zeros_like(g), *tie = kn_eq(a, b);
        kn_tensor *a_wins = mx ? kn_gt(a, b) : kn_lt(a, b), *b_wins = mx ? kn_lt(a, b) : kn_gt(a, b);
        ga = kn_where(a_wins, g, kn_where(tie, half, zero));
        gb = kn_where(b_wins, g, kn_where(tie, half, zero));
        break;
    }
    default:
        return kn__err(KN_ERR_AUTOGRAD, "backward: %s is not differentiable", n->name);
    }
    if (n->needs[0]) gin[0] = kn__sum_to(ga, a->ndim, a->shape);
    if (n->needs[1]) gin[1] = kn__sum_to(gb, b->ndim, b->shape);
    return (n->needs[0] && !gin[0]) || (n->needs[1] && !gin[1]) ? kn_error_code() : KN_OK;
}

static kn_tensor *binary(kn_binary_fn f, kn_tensor *a, kn_tensor *b) {
    const char *name = kn__binary_name(f);
    if (!a || !b) return kn__err_null(name), NULL;
    kn_tensor *ab[2] = {a, b};
    if (!kn__same_device(name, 2, ab)) return NULL;
    if (kn_dtype_is_complex(a->dtype) || kn_dtype_is_complex(b->dtype)) return kn__complex_binary(f, a, b);
    kn_dtype dt = kn__result_dtype(a, b);
    if (f == KN_BINARY_DIV) dt = kn__float_dtype(dt);
    if (dt == KN_BOOL && (f <= KN_BINARY_POW)) dt = KN_I64; /* bool arithmetic: as integers */
    int64_t shape[KN_MAX_DIMS];
    int nd = kn__broadcast(name, a->ndim, a->shape, b->ndim, b->shape, shape);
    if (nd < 0) return NULL;
    kn_device dev = a->storage->device;
    kn_tensor *ca = kn__cast_raw(a, dt), *cb = ca ? kn__cast_raw(b, dt) : NULL;
    kn_tensor *out = cb ? kn__new(nd, shape, is_comparison(f) ? KN_BOOL : dt, dev) : NULL;
    if (out) {
        kn_binary_args args = {.out = kn__view(out), .a = kn__view_expand(ca, nd, shape),
                               .b = kn__view_expand(cb, nd, shape), .fn = f};
        out = kn__run_out(KN_OP_BINARY, dev, &args, out);
    }
    kn_release(ca);
    kn_release(cb);
    if (!out) return NULL;
    if (!is_comparison(f)) {
        kn_node *n = kn__record(out, name, binary_backward, 2, ab, sizeof(binary_state));
        if (n) {
            kn__save(n, 0, a);
            kn__save(n, 1, b);
            KN_STATE(n, binary_state)->fn = f;
        }
    }
    return kn__scoped(out);
}

kn_tensor *kn_add(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_ADD, a, b); }
kn_tensor *kn_sub(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_SUB, a, b); }
kn_tensor *kn_mul(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_MUL, a, b); }
kn_tensor *kn_div(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_DIV, a, b); }
kn_tensor *kn_pow(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_POW, a, b); }
kn_tensor *kn_maximum(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_MAX, a, b); }
kn_tensor *kn_minimum(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_MIN, a, b); }
kn_tensor *kn_eq(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_EQ, a, b); }
kn_tensor *kn_ne(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_NE, a, b); }
kn_tensor *kn_lt(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_LT, a, b); }
kn_tensor *kn_le(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_LE, a, b); }
kn_tensor *kn_gt(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_GT, a, b); }
kn_tensor *kn_ge(kn_tensor *a, kn_tensor *b) { return binary(KN_BINARY_GE, a, b); }

/* ---- where ------------------------------------------------------------------------- */
static kn_status where_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *cond = n->saved[0], *zero = kn_zeros_like(g);
    if (n->needs[1]) gin[1] = kn__sum_to(kn_where(cond, g, zero), n->in[1]->ndim, n->in[1]->shape);
    if (n->needs[2]) gin[2] = kn__sum_to(kn_where(cond, zero, g), n->in[2]->ndim, n->in[2]->shape);
    return (n->needs[1] && !gin[1]) || (n->needs[2] && !gin[2]) ? kn_error_code() : KN_OK;
}

kn_tensor *kn_where(kn_tensor *cond, kn_tensor *a, kn_tensor *b) {
    if (!cond || !a || !b) return kn__err_null("where"), NULL;
    kn_tensor *all[3] = {cond, a, b};
    if (!kn__same_device("where", 3, all)) return NULL;
    int64_t s1[KN_MAX_DIMS], shape[KN_MAX_DIMS];
    int n1 = kn__broadcast("where", cond->ndim, cond->shape, a->ndim, a->shape, s1);
    int nd = n1 < 0 ? -1 : kn__broadcast("where", n1, s1, b->ndim, b->shape, shape);
    if (nd < 0) return NULL;
    kn_dtype dt = kn_dtype_promote(a->dtype, b->dtype);
    kn_device dev = a->storage->device;
    kn_tensor *cc = kn__cast_raw(cond, KN_BOOL);
    kn_tensor *ca = cc ? kn__cast_raw(a, dt) : NULL, *cb = ca ? kn__cast_raw(b, dt) : NULL;
    kn_tensor *out = cb ? kn__new(nd, shape, dt, dev) : NULL;
    if (out) {
        kn_where_args args = {.out = kn__view(out), .cond = kn__view_expand(cc, nd, shape),
                              .a = kn__view_expand(ca, nd, shape), .b = kn__view_expand(cb, nd, shape)};
        out = kn__run_out(KN_OP_WHERE, dev, &args, out);
    }
    kn_release(cc);
    kn_release(ca);
    kn_release(cb);
    if (!out) return NULL;
    kn_node *n = kn__record(out, "where", where_backward, 3, all, 0);
    if (n) {
        n->needs[0] = false;
        kn__save(n, 0, cond);
    }
    return kn__scoped(out);
}
