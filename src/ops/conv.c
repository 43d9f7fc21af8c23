/* conv2d, conv1d and conv_transpose2d with their backward rules. One op each
 * way (KN_OP_CONV2D, KN_OP_CONV2D_BACKWARD): the transposed convolution is
 * conv2d's input gradient forward, and conv2d forward for its own input
 * gradient. conv1d is conv2d over a height of 1 (views, so autograd goes
 * through them). Backward rules run in the engine's scope (scoped temporaries). */
#include "kiln/vision.h"
#include "ops_internal.h"

#include <string.h>

kn_conv_opts kn_conv_opts_default(void) {
    return (kn_conv_opts){.stride = {1, 1}, .padding = {0, 0}, .dilation = {1, 1}, .groups = 1};
}

typedef struct {
    int64_t sh, sw, ph, pw, dh, dw, G;
} conv_state;

/* Options checked; st gets the op's parameters for kernel (kh, kw), with
 * the padding before that 'same' needs. */
static bool opts_check(const char *op, const kn_conv_opts *o, int64_t kh, int64_t kw, conv_state *st) {
    for (int d = 0; d < 2; d++) {
        if (o->stride[d] < 1 || o->dilation[d] < 1 || o->padding[d] < 0) {
            kn__err(KN_ERR_INVALID, "%s: stride and dilation must be >= 1 and padding >= 0, got stride [%lld, %lld], "
                    "padding [%lld, %lld], dilation [%lld, %lld]", op, (long long)o->stride[0], (long long)o->stride[1],
                    (long long)o->padding[0], (long long)o->padding[1], (long long)o->dilation[0],
                    (long long)o->dilation[1]);
            return false;
        }
    }
    if (o->groups < 1) {
        kn__err(KN_ERR_INVALID, "%s: groups must be >= 1, got %lld", op, (long long)o->groups);
        return false;
    }
    *st = (conv_state){o->stride[0], o->stride[1], o->padding[0], o->padding[1], o->dilation[0], o->dilation[1],
                       o->groups};
    if (o->padding_same) {
        if (o->stride[0] != 1 || o->stride[1] != 1) {
            kn__err(KN_ERR_INVALID, "%s: padding 'same' needs stride 1, got [%lld, %lld]", op, (long long)o->stride[0],
                    (long long)o->stride[1]);
            return false;
        }
        /* The odd element of an even total goes after (PyTorch): the kernel's
         * windows past the end read zeros. */
        st->ph = o->dilation[0] * (kh - 1) / 2;
        st->pw = o->dilation[1] * (kw - 1) / 2;
    }
    return true;
}

/* x [N, C, H, W] and weight [K, C/groups, kh, kw] (transposed: [C, K/groups,
 * kh, kw]) of one device, floats; bias [out channels] or NULL. */
static bool conv_check(const char *op, kn_tensor *x, kn_tensor *w, kn_tensor *b, int64_t groups, bool transposed) {
    kn_tensor *all[3] = {x, w, b};
    if (!kn__same_device(op, 3, all)) return false;
    if (!kn_dtype_is_float(x->dtype) || !kn_dtype_is_float(w->dtype) || (b && !kn_dtype_is_float(b->dtype))) {
        kn__err(KN_ERR_DTYPE, "%s: input, weight and bias must be floating point, got %s, %s%s%s", op,
                kn_dtype_name(x->dtype), kn_dtype_name(w->dtype), b ? " and " : "", b ? kn_dtype_name(b->dtype) : "");
        return false;
    }
    char s1[128], s2[128];
    if (x->ndim != 4 || w->ndim != 4) {
        kn__err(KN_ERR_SHAPE, "%s: expected input [N, C, H, W] and weight [out, in/groups, kh, kw], got %s and %s", op,
                kn__shape_str(x->ndim, x->shape, s1, sizeof s1), kn__shape_str(w->ndim, w->shape, s2, sizeof s2));
        return false;
    }
    int64_t C = x->shape[1];
    int64_t in_per = transposed ? w->shape[0] : w->shape[1] * groups; /* input channels the weight expects */
    int64_t out_ch = transposed ? w->shape[1] * groups : w->shape[0];
    if (in_per != C || (!transposed && w->shape[0] % groups) || (transposed && w->shape[0] % groups) ||
        w->shape[2] < 1 || w->shape[3] < 1) {
        kn__err(KN_ERR_SHAPE, "%s: weight %s does not fit an input of %lld channels with groups = %lld", op,
                kn__shape_str(w->ndim, w->shape, s2, sizeof s2), (long long)C, (long long)groups);
        return false;
    }
    if (b && (b->ndim != 1 || b->shape[0] != out_ch)) {
        kn__err(KN_ERR_SHAPE, "%s: bias must have shape [%lld], got %s", op, (long long)out_ch,
                kn__shape_str(b->ndim, b->shape, s1, sizeof s1));
        return false;
    }
    return true;
}

static void fill_args(kn_conv2d_args *a, const conv_state *st) {
    a->stride_h = st->sh, a->stride_w = st->sw, a->pad_h = st->ph, a->pad_w = st->pw;
    a->dilation_h = st->dh, a->dilation_w = st->dw, a->groups = st->G;
}
static void fill_bargs(kn_conv2d_backward_args *a, const conv_state *st) {
    a->stride_h = st->sh, a->stride_w = st->sw, a->pad_h = st->ph, a->pad_w = st->pw;
    a->dilation_h = st->dh, a->dilation_w = st->dw, a->groups = st->G;
}

/* conv2d of x by w (one dtype) into a new raw [N, K, OH, OW]. */
static kn_tensor *conv_fwd_raw(kn_tensor *x, kn_tensor *w, kn_tensor *b, const conv_state *st, int64_t OH,
                               int64_t OW) {
    kn_device dev = x->storage->device;
    kn_tensor *out = kn__new(4, (int64_t[]){x->shape[0], w->shape[0], OH, OW}, x->dtype, dev);
    if (!out) return NULL;
    kn_conv2d_args a = {.out = kn__view(out), .x = kn__view(x), .weight = kn__view(w), .bias = kn__view(b)};
    fill_args(&a, st);
    return kn__run_out(KN_OP_CONV2D, dev, &a, out);
}

/* CONV2D_BACKWARD into scoped outputs of the given shapes (NULL shape: not wanted). */
static kn_status conv_bwd_run(kn_tensor *g, kn_tensor *x, kn_tensor *w, const conv_state *st, const int64_t *x_shape,
                              const int64_t *w_shape, int64_t bias_n, kn_tensor **gx, kn_tensor **gw, kn_tensor **gb) {
    kn_device dev = g->storage->device;
    kn_dtype dt = g->dtype;
    *gx = x_shape ? kn__scoped(kn__new(4, x_shape, dt, dev)) : NULL;
    *gw = w_shape ? kn__scoped(kn__new(4, w_shape, dt, dev)) : NULL;
    *gb = bias_n >= 0 ? kn__scoped(kn__new(1, &bias_n, dt, dev)) : NULL;
    if ((x_shape && !*gx) || (w_shape && !*gw) || (bias_n >= 0 && !*gb)) return kn_error_code();
    kn_conv2d_backward_args a = {.grad_x = kn__view(*gx), .grad_weight = kn__view(*gw), .grad_bias = kn__view(*gb),
                                 .grad = kn__view(g), .x = kn__view(x), .weight = kn__view(w)};
    fill_bargs(&a, st);
    return kn__run(KN_OP_CONV2D_BACKWARD, dev, &a);
}

/* ---- conv2d ------------------------------------------------------------------------------------- */
/* saved[0] x, [1] weight (x's dtype). Inputs: x, weight, bias. */
static kn_status conv2d_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const conv_state *st = KN_STATE(n, conv_state);
    kn_tensor *x = n->saved[0], *w = n->saved[1];
    kn_tensor *gc = kn__scoped(kn__cast_raw(g, x->dtype));
    if (!gc) return kn_error_code();
    bool want_b = n->in[2] && n->needs[2];
    return conv_bwd_run(gc, x, w, st, n->needs[0] ? x->shape : NULL, n->needs[1] ? w->shape : NULL,
                        want_b ? w->shape[0] : -1, &gin[0], &gin[1], &gin[2]);
}

/* Output size of a window op along one dim (< 1: the input is too small). */
static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p_total, int64_t d) {
    int64_t span = d * (k - 1) + 1;
    return in + p_total < span ? 0 : (in + p_total - span) / s + 1;
}

kn_tensor *kn_conv2d(kn_tensor *x, kn_tensor *weight, kn_tensor *bias, const kn_conv_opts *opts) {
    const char *op = "conv2d";
    if (!x || !weight) return kn__err_null(op), NULL;
    kn_conv_opts o = opts ? *opts : kn_conv_opts_default();
    if (x->ndim == 3) { /* one image */
        kn_scope s = kn_scope_begin();
        kn_tensor *r = kn_squeeze(kn_conv2d(kn_unsqueeze(x, 0), weight, bias, &o), 0);
        kn_keep(r);
        kn_scope_end(s);
        return r;
    }
    conv_state st;
    if (!conv_check(op, x, weight, bias, o.groups, false) ||
        !opts_check(op, &o, weight->shape[2], weight->shape[3], &st))
        return NULL;
    int64_t H = x->shape[2], W = x->shape[3], kh = weight->shape[2], kw = weight->shape[3];
    int64_t OH = o.padding_same ? H : out_size(H, kh, st.sh, 2 * st.ph, st.dh);
    int64_t OW = o.padding_same ? W : out_size(W, kw, st.sw, 2 * st.pw, st.dw);
    if (OH < 1 || OW < 1) {
        char s[128];
        kn__err(KN_ERR_SHAPE, "%s: input %s with padding [%lld, %lld] is smaller than the dilated kernel %lld x %lld",
                op, kn__shape_str(x->ndim, x->shape, s, sizeof s), (long long)st.ph, (long long)st.pw,
                (long long)(st.dh * (kh - 1) + 1), (long long)(st.dw * (kw - 1) + 1));
        return NULL;
    }
    kn_scope sc = kn_scope_begin();
    kn_tensor *w = kn__scoped(kn__cast_raw(weight, x->dtype));
    kn_tensor *b = w && bias ? kn__scoped(kn__cast_raw(bias, x->dtype)) : NULL;
    kn_tensor *y = w && (!bias || b) ? kn__scoped(conv_fwd_raw(x, w, b, &st, OH, OW)) : NULL;
    kn_tensor *ins[3] = {x, weight, bias};
    kn_node *n = y ? kn__record(y, op, conv2d_backward, 3, ins, sizeof(conv_state)) : NULL;
    if (n) {
        kn__save(n, 0, x);
        kn__save(n, 1, w);
        *KN_STATE(n, conv_state) = st;
    }
    kn_keep(y);
    kn_scope_end(sc);
    return y;
}

kn_tensor *kn_conv1d(kn_tensor *x, kn_tensor *weight, kn_tensor *bias, const kn_conv_opts *opts) {
    const char *op = "conv1d";
    if (!x || !weight) return kn__err_null(op), NULL;
    char s1[128], s2[128];
    if ((x->ndim != 3 && x->ndim != 2) || weight->ndim != 3) {
        kn__err(KN_ERR_SHAPE, "%s: expected input [N, C, L] or [C, L] and weight [out, in/groups, k], got %s and %s", op,
                kn__shape_str(x->ndim, x->shape, s1, sizeof s1),
                kn__shape_str(weight->ndim, weight->shape, s2, sizeof s2));
        return NULL;
    }
    kn_conv_opts o = opts ? *opts : kn_conv_opts_default(), o2 = o;
    o2.stride[0] = 1, o2.stride[1] = o.stride[0];
    o2.padding[0] = 0, o2.padding[1] = o.padding[0];
    o2.dilation[0] = 1, o2.dilation[1] = o.dilation[0];
    kn_scope s = kn_scope_begin();
    int hd = x->ndim - 1; /* the new height dim sits before the length */
    kn_tensor *y = kn_squeeze(kn_conv2d(kn_unsqueeze(x, hd), kn_unsqueeze(weight, 2), bias, &o2), hd);
    kn_keep(y);
    kn_scope_end(s);
    return y;
}

/* ---- conv_transpose2d ------------------------------------------------------------------------------ */
/* saved[0] x, [1] weight (x's dtype). Inputs: x, weight. */
static kn_status conv_transpose2d_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const conv_state *st = KN_STATE(n, conv_state);
    kn_tensor *x = n->saved[0], *w = n->saved[1];
    kn_tensor *gc = kn__scoped(kn__cast_raw(g, x->dtype));
    if (!gc) return kn_error_code();
    if (n->needs[0] && !(gin[0] = kn__scoped(conv_fwd_raw(gc, w, NULL, st, x->shape[2], x->shape[3]))))
        return kn_error_code();
    if (n->needs[1]) { /* conv2d's weight gradient with the roles of input and output swapped */
        kn_tensor *gx, *gb;
        kn_status s = conv_bwd_run(x, gc, NULL, st, NULL, w->shape, -1, &gx, &gin[1], &gb);
        if (s != KN_OK) return s;
    }
    return KN_OK;
}

kn_tensor *kn_conv_transpose2d(kn_tensor *x, kn_tensor *weight, kn_tensor *bias, const kn_conv_opts *opts) {
    const char *op = "conv_transpose2d";
    if (!x || !weight) return kn__err_null(op), NULL;
    kn_conv_opts o = opts ? *opts : kn_conv_opts_default();
    if (x->ndim == 3) {
        kn_scope s = kn_scope_begin();
        kn_tensor *r = kn_squeeze(kn_conv_transpose2d(kn_unsqueeze(x, 0), weight, bias, &o), 0);
        kn_keep(r);
        kn_scope_end(s);
        return r;
    }
    if (o.padding_same) {
        kn__err(KN_ERR_INVALID, "%s: padding 'same' is not supported for transposed convolution", op);
        return NULL;
    }
    conv_state st;
    if (!conv_check(op, x, weight, bias, o.groups, true) ||
        !opts_check(op, &o, weight->shape[2], weight->shape[3], &st))
        return NULL;
    int64_t k[2] = {weight->shape[2], weight->shape[3]}, size[2];
    for (int d = 0; d < 2; d++) {
        int64_t op_ = o.output_padding[d], s = o.stride[d], dl = o.dilation[d];
        if (op_ < 0 || (op_ >= s && op_ >= dl)) {
            kn__err(KN_ERR_INVALID, "%s: output_padding must be >= 0 and smaller than the stride or the dilation, "
                    "got %lld (stride %lld, dilation %lld)", op, (long long)op_, (long long)s, (long long)dl);
            return NULL;
        }
        size[d] = (x->shape[2 + d] - 1) * s - 2 * o.padding[d] + dl * (k[d] - 1) + op_ + 1;
    }
    if (size[0] < 1 || size[1] < 1) {
        kn__err(KN_ERR_SHAPE, "%s: the output would be %lld x %lld: padding too large for this input", op,
                (long long)size[0], (long long)size[1]);
        return NULL;
    }
    int64_t N = x->shape[0], Cout = weight->shape[1] * o.groups;
    kn_scope sc = kn_scope_begin();
    kn_tensor *w = kn__scoped(kn__cast_raw(weight, x->dtype)), *y = NULL, *gw, *gb;
    if (w && conv_bwd_run(x, NULL, w, &st, (int64_t[]){N, Cout, size[0], size[1]}, NULL, -1, &y, &gw, &gb) != KN_OK)
        y = NULL;
    kn_tensor *ins[2] = {x, weight};
    kn_node *n = y ? kn__record(y, op, conv_transpose2d_backward, 2, ins, sizeof(conv_state)) : NULL;
    if (n) {
        kn__save(n, 0, x);
        kn__save(n, 1, w);
        *KN_STATE(n, conv_state) = st;
    }
    if (y && bias) y = kn_add(y, kn_reshape(kn_cast(bias, x->dtype), KN_SHAPE(1, Cout, 1, 1)));
    kn_keep(y);
    kn_scope_end(sc);
    return y;
}
