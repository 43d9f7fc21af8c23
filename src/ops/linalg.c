/* matmul and linear, with their backward rules. */
#include "ops_internal.h"

#include <string.h>

static bool float_check(const char *op, kn_dtype dt) {
    if (kn_dtype_is_float(dt)) return true;
    kn__err(KN_ERR_DTYPE, "%s: %s is not supported (floating-point dtypes only); cast first", op,
            kn_dtype_name(dt));
    return false;
}

/* act(a3 [B, M, K] @ b3 [B, K, N] (+ bias [N])) into a new contiguous tensor
 * of shape oshape (its trailing dims M and N, B * M * N elements); raw. */
static kn_tensor *gemm(const kn_operand *a3, const kn_operand *b3, kn_tensor *bias, int ndim,
                       const int64_t *oshape, kn_activation act, kn_device dev) {
    kn_tensor *out = kn__new(ndim, oshape, a3->dtype, dev);
    if (!out) return NULL;
    int64_t B = a3->shape[0], M = a3->shape[1], N = b3->shape[2];
    kn_matmul_args args = {.out = kn__view(out), .a = *a3, .b = *b3, .bias = kn__view(bias), .act = act};
    args.out.ndim = 3;
    memcpy(args.out.shape, (int64_t[]){B, M, N}, 3 * sizeof(int64_t));
    memcpy(args.out.stride, (int64_t[]){M * N, N, 1}, 3 * sizeof(int64_t));
    return kn__run_out(KN_OP_MATMUL, dev, &args, out);
}

/* *v = a 3-D [B, R, C] operand of t (batch dims expanded to bshape), copying
 * (into a scoped tensor) only when the batch dims cannot be merged into one
 * stride. false on failure. */
static bool as3d(kn_tensor *t, int nb, const int64_t *bshape, int64_t B, kn_operand *v) {
    int64_t shape[KN_MAX_DIMS];
    memcpy(shape, bshape, (size_t)nb * 8);
    shape[nb] = t->shape[t->ndim - 2];
    shape[nb + 1] = t->shape[t->ndim - 1];
    kn_operand e = kn__view_expand(t, nb + 2, shape);
    /* The batch dims (size-1 ones aside) merge into one stride when each is
     * the next one's stride times its size, or when all are broadcast (0). */
    int64_t bstride = 0;
    bool mergeable = true, all_zero = true;
    int prev = -1;
    for (int d = nb - 1; d >= 0; d--) {
        if (shape[d] == 1) continue;
        if (e.stride[d] != 0) all_zero = false;
        if (prev < 0) bstride = e.stride[d];
        else if (e.stride[d] != e.stride[prev] * shape[prev]) mergeable = false;
        prev = d;
    }
    mergeable = mergeable || all_zero;
    if (!mergeable) {
        kn_device dev = t->storage->device;
        kn_tensor *c = kn__new(nb + 2, shape, t->dtype, dev);
        if (!c) return false;
        kn_copy_args cp = {.out = kn__view(c), .x = e};
        if (!kn__scoped(kn__run_out(KN_OP_COPY, dev, &cp, c))) return false;
        e = kn__view(c);
        bstride = shape[nb] * shape[nb + 1];
    }
    *v = e;
    v->ndim = 3;
    memcpy(v->shape, (int64_t[]){B, shape[nb], shape[nb + 1]}, 3 * sizeof(int64_t));
    memcpy(v->stride, (int64_t[]){bstride, e.stride[nb], e.stride[nb + 1]}, 3 * sizeof(int64_t));
    return true;
}

static kn_status matmul_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *a = n->saved[0], *b = n->saved[1];
    if (n->needs[0]) gin[0] = kn__sum_to(kn_matmul(g, kn_transpose(b, -1, -2)), a->ndim, a->shape);
    if (n->needs[1]) gin[1] = kn__sum_to(kn_matmul(kn_transpose(a, -1, -2), g), b->ndim, b->shape);
    return (n->needs[0] && !gin[0]) || (n->needs[1] && !gin[1]) ? kn_error_code() : KN_OK;
}

/* Both operands at least 2-D. */
static kn_tensor *matmul_nd(kn_tensor *a, kn_tensor *b) {
    char sa[128], sb[128];
    int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1], N = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != K) {
        kn__err(KN_ERR_SHAPE, "matmul: shapes %s and %s do not match",
                kn__shape_str(a->ndim, a->shape, sa, sizeof sa), kn__shape_str(b->ndim, b->shape, sb, sizeof sb));
        return NULL;
    }
    int64_t bshape[KN_MAX_DIMS];
    int nb = kn__broadcast("matmul", a->ndim - 2, a->shape, b->ndim - 2, b->shape, bshape);
    if (nb < 0) return NULL;
    int64_t B = kn__numel_shape(nb, bshape);
    kn_dtype dt = kn_dtype_promote(a->dtype, b->dtype);
    int64_t oshape[KN_MAX_DIMS];
    memcpy(oshape, bshape, (size_t)nb * 8);
    oshape[nb] = M;
    oshape[nb + 1] = N;
    kn_scope s = kn_scope_begin();
    kn_tensor *ca = kn__scoped(kn__cast_raw(a, dt)), *cb = ca ? kn__scoped(kn__cast_raw(b, dt)) : NULL;
    kn_operand a3, b3;
    kn_tensor *out = cb && as3d(ca, nb, bshape, B, &a3) && as3d(cb, nb, bshape, B, &b3)
                         ? gemm(&a3, &b3, NULL, nb + 2, oshape, KN_ACT_NONE, a->storage->device)
                         : NULL;
    kn_scope_end(s);
    if (!out) return NULL;
    kn_tensor *ab[2] = {a, b};
    kn_node *node = kn__record(out, "matmul", matmul_backward, 2, ab, 0);
    if (node) {
        kn__save(node, 0, a);
        kn__save(node, 1, b);
    }
    return kn__scoped(out);
}

kn_tensor *kn_matmul(kn_tensor *a, kn_tensor *b) {
    if (!a || !b) return kn__err_null("matmul"), NULL;
    kn_tensor *ab[2] = {a, b};
    if (!kn__same_device("matmul", 2, ab) || !float_check("matmul", a->dtype) ||
        !float_check("matmul", b->dtype))
        return NULL;
    if (a->ndim == 0 || b->ndim == 0) {
        kn__err(KN_ERR_SHAPE, "matmul: both arguments need at least 1 dimension");
        return NULL;
    }
    if (a->ndim >= 2 && b->ndim >= 2) return matmul_nd(a, b);
    /* 1-D operands become matrices and the added dim is removed after. */
    kn_scope s = kn_scope_begin();
    kn_tensor *a2 = a->ndim == 1 ? kn_unsqueeze(a, 0) : a;
    kn_tensor *b2 = b->ndim == 1 ? kn_unsqueeze(b, 1) : b;
    kn_tensor *r = matmul_nd(a2, b2);
    if (r && b->ndim == 1) r = kn_squeeze(r, -1);
    if (r && a->ndim == 1) r = kn_squeeze(r, -2);
    kn_keep(r);
    kn_scope_end(s);
    return r;
}

/* ---- linear ------------------------------------------------------------------------------ */
/* x2 [R, in] @ w^T [in, out] (+ bias) through act, as one GEMM with a
 * batch-1 3-D view and the bias and activation in its epilogue; operands
 * already of one dtype and device. Raw [R, out]; no tape node. */
kn_tensor *kn__linear_raw(kn_tensor *x2, kn_tensor *w, kn_tensor *bias, kn_activation act) {
    int64_t R = x2->shape[0], in = w->shape[1], outf = w->shape[0];
    kn_operand a3 = kn__view(x2), b3 = kn__view(w);
    a3.ndim = b3.ndim = 3;
    memcpy(a3.shape, (int64_t[]){1, R, in}, 3 * sizeof(int64_t));
    memcpy(a3.stride, (int64_t[]){0, x2->stride[0], x2->stride[1]}, 3 * sizeof(int64_t));
    memcpy(b3.shape, (int64_t[]){1, in, outf}, 3 * sizeof(int64_t));
    memcpy(b3.stride, (int64_t[]){0, w->stride[1], w->stride[0]}, 3 * sizeof(int64_t));
    return gemm(&a3, &b3, bias, 2, (int64_t[]){R, outf}, act, x2->storage->device);
}

/* d relu(h) / dh * g from the output y = relu(h): g where y > 0 (new, scoped). */
kn_tensor *kn__relu_grad(kn_tensor *g, kn_tensor *y) {
    kn_device dev = y->storage->device;
    kn_tensor *gc = kn__cast_raw(g, y->dtype);
    kn_tensor *out = gc ? kn__new(y->ndim, y->shape, y->dtype, dev) : NULL;
    if (out) {
        kn_unary_backward_args a = {.out = kn__view(out), .grad = kn__view(gc), .x = kn__view(y),
                                    .fn = KN_UNARY_RELU};
        out = kn__run_out(KN_OP_UNARY_BACKWARD, dev, &a, out);
    }
    kn_release(gc);
    return kn__scoped(out);
}

typedef struct {
    kn_activation act;
} linear_state;

/* saved[0] x [R, in], [1] w, [2] the output when the activation is relu. */
static kn_status linear_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    kn_tensor *x = n->saved[0], *w = n->saved[1];
    if (KN_STATE(n, linear_state)->act == KN_ACT_RELU && !(g = kn__relu_grad(g, n->saved[2])))
        return kn_error_code();
    if (n->needs[0]) gin[0] = kn_matmul(g, w);
    if (n->needs[1]) gin[1] = kn_matmul(kn_transpose(g, 0, 1), x);
    if (n->n_in > 2 && n->needs[2]) gin[2] = kn_sum(g, KN_DIMS(0), false);
    for (int k = 0; k < n->n_in; k++)
        if (n->needs[k] && !gin[k]) return kn_error_code();
    return KN_OK;
}

bool kn__linear_check(const char *op, kn_tensor *x, kn_tensor *w, kn_tensor *bias) {
    kn_tensor *all[3] = {x, w, bias};
    if (!kn__same_device(op, 3, all) || !float_check(op, x->dtype)) return false;
    char sx[128], sw[128];
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1] ||
        (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0]))) {
        kn__err(KN_ERR_SHAPE, "%s: input %s, weight %s%s do not match (weight is [out, in])", op,
                kn__shape_str(x->ndim, x->shape, sx, sizeof sx), kn__shape_str(w->ndim, w->shape, sw, sizeof sw),
                bias ? " and bias" : "");
        return false;
    }
    return true;
}

kn_tensor *kn__linear_act(kn_tensor *x, kn_tensor *w, kn_tensor *bias, kn_activation act) {
    if (!x || !w) return kn__err_null("linear"), NULL;
    if (!kn__linear_check("linear", x, w, bias)) return NULL;
    kn_scope s = kn_scope_begin();
    int64_t in = w->shape[1], outf = w->shape[0];
    kn_tensor *x2 = x->ndim == 2 ? x : kn_reshape(x, KN_SHAPE(-1, in));
    kn_tensor *cx = x2 ? kn__scoped(kn__cast_raw(x2, x->dtype)) : NULL;
    kn_tensor *cw = cx ? kn__scoped(kn__cast_raw(w, x->dtype)) : NULL, *cb = NULL;
    if (cw && bias) cb = kn__scoped(kn__cast_raw(bias, x->dtype));
    kn_tensor *r = cw && (!bias || cb) ? kn__scoped(kn__linear_raw(cx, cw, cb, act)) : NULL;
    if (r) {
        kn_tensor *ins[3] = {x2, w, bias};
        kn_node *n = kn__record(r, act == KN_ACT_RELU ? "linear_relu" : "linear", linear_backward, bias ? 3 : 2,
                                ins, sizeof(linear_state));
        if (n) {
            kn__save(n, 0, x2);
            kn__save(n, 1, w);
            if (act == KN_ACT_RELU) kn__save(n, 2, r);
            KN_STATE(n, linear_state)->act = act;
        }
    }
    if (r && x->ndim != 2) {
        int64_t shape[KN_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[x->ndim - 1] = outf;
        r = kn_reshape(r, x->ndim, shape);
    }
    kn_keep(r);
    kn_scope_end(s);
    return r;
}

kn_tensor *kn_linear(kn_tensor *x, kn_tensor *w, kn_tensor *bias) { return kn__linear_act(x, w, bias, KN_ACT_NONE); }
