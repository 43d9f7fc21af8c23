/* max_pool2d, avg_pool2d and adaptive_avg_pool2d with their backward rules.
 * Max and average pooling are ops of their own (KN_OP_MAX_POOL2D,
 * KN_OP_AVG_POOL2D and their backwards); adaptive average pooling is one of
 * them when the sizes divide, else two GEMMs with averaging matrices (the
 * windows are separable), so autograd covers it. */
#include "kiln/vision.h"
#include "ops_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

kn_pool_opts kn_pool_opts_default(int64_t kh, int64_t kw) {
    return (kn_pool_opts){.kernel = {kh, kw}, .dilation = {1, 1}, .count_include_pad = true};
}

typedef struct {
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    bool include_pad;
    int64_t divisor;
    int64_t H, W; /* the input's plane */
} pool_state;

/* PyTorch's pooling output size. */
static int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
    int64_t num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    if (num < 0) return 0;
    int64_t out = num / s + 1;
    if (ceil_mode && (out - 1) * s >= in + p) out--; /* the last window starts inside */
    return out;
}

/* Checks x and the options; fills st and the output size. */
static bool pool_check(const char *op, kn_tensor *x, const kn_pool_opts *o, bool is_max, pool_state *st, int64_t *OH,
                       int64_t *OW) {
    char s[128];
    if (!kn_dtype_is_float(x->dtype)) {
        kn__err(KN_ERR_DTYPE, "%s: input must be floating point, got %s (cast first)", op, kn_dtype_name(x->dtype));
        return false;
    }
    if (x->ndim != 4) {
        kn__err(KN_ERR_SHAPE, "%s: expected input [N, C, H, W] or [C, H, W], got %s", op,
                kn__shape_str(x->ndim, x->shape, s, sizeof s));
        return false;
    }
    int64_t in[2] = {x->shape[2], x->shape[3]}, out[2];
    for (int d = 0; d < 2; d++) {
        int64_t k = o->kernel[d], str = o->stride[d] ? o->stride[d] : k, p = o->padding[d];
        int64_t dl = is_max ? o->dilation[d] : 1;
        if (k < 1 || str < 1 || p < 0 || dl < 1) {
            kn__err(KN_ERR_INVALID, "%s: kernel, stride and dilation must be >= 1 and padding >= 0, got kernel %lld, "
                    "stride %lld, padding %lld, dilation %lld", op, (long long)k, (long long)str, (long long)p,
                    (long long)dl);
            return false;
        }
        if (p > (dl * (k - 1) + 1) / 2) {
            kn__err(KN_ERR_INVALID, "%s: padding %lld is more than half the kernel (%lld)", op, (long long)p,
                    (long long)(dl * (k - 1) + 1));
            return false;
        }
        out[d] = pool_out(in[d], k, str, p, dl, o->ceil_mode);
        if (out[d] < 1) {
            kn__err(KN_ERR_SHAPE, "%s: input %s is smaller than the kernel", op,
                    kn__shape_str(x->ndim, x->shape, s, sizeof s));
            return false;
        }
        /* Every window must reach the input (with dilation one may fall in the gaps). */
        for (int64_t i = 0; i < out[d]; i++) {
            bool hit = false;
            for (int64_t a = 0; a < k && !hit; a++) {
                int64_t t = i * str - p + a * dl;
                hit = t >= 0 && t < in[d];
            }
            if (!hit) {
                kn__err(KN_ERR_INVALID, "%s: window %lld along %s has no element of the input", op, (long long)i,
                        d ? "the width" : "the height");
                return false;
            }
        }
    }
    if (!is_max && (o->divisor_override < 0)) {
        kn__err(KN_ERR_INVALID, "%s: divisor_override must be >= 0, got %lld", op, (long long)o->divisor_override);
        return false;
    }
    *st = (pool_state){.kh = o->kernel[0], .kw = o->kernel[1], .sh = o->stride[0] ? o->stride[0] : o->kernel[0],
                       .sw = o->stride[1] ? o->stride[1] : o->kernel[1], .ph = o->padding[0], .pw = o->padding[1],
                       .dh = is_max ? o->dilation[0] : 1, .dw = is_max ? o->dilation[1] : 1,
                       .include_pad = o->count_include_pad, .divisor = o->divisor_override, .H = in[0], .W = in[1]};
    *OH = out[0], *OW = out[1];
    return true;
}

/* ---- max_pool2d -------------------------------------------------------------------------------- */
/* saved[0] the indices. */
static kn_status max_pool_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const pool_state *st = KN_STATE(n, pool_state);
    kn_tensor *x = n->in[0], *ix = n->saved[0];
    kn_device dev = g->storage->device;
    kn_dtype dt = kn_dtype_is_float(x->dtype) ? x->dtype : KN_F32;
    kn_tensor *gc = kn__scoped(kn__cast_raw(g, dt));
    kn_tensor *gx = gc ? kn__scoped(kn__new(4, (int64_t[]){x->shape[0], x->shape[1], st->H, st->W}, dt, dev)) : NULL;
    if (!gx) return kn_error_code();
    kn_max_pool2d_backward_args a = {.grad_x = kn__view(gx), .grad = kn__view(gc), .indices = kn__view(ix)};
    kn_status s = kn__run(KN_OP_MAX_POOL2D_BACKWARD, dev, &a);
    if (s == KN_OK) gin[0] = gx;
    return s;
}

kn_tensor *kn_max_pool2d(kn_tensor *x, const kn_pool_opts *opts, kn_tensor **indices) {
    const char *op = "max_pool2d";
    if (indices) *indices = NULL;
    if (!x || !opts) return kn__err_null(op), NULL;
    if (x->ndim == 3) {
        kn_scope s = kn_scope_begin();
        kn_tensor *ix = NULL, *r = kn_squeeze(kn_max_pool2d(kn_unsqueeze(x, 0), opts, indices ? &ix : NULL), 0);
        if (r && ix) *indices = kn_keep(kn_squeeze(ix, 0));
        kn_keep(r);
        kn_scope_end(s);
        return r;
    }
    pool_state st;
    int64_t OH, OW;
    if (!pool_check(op, x, opts, true, &st, &OH, &OW)) return NULL;
    kn_device dev = x->storage->device;
    int64_t shape[4] = {x->shape[0], x->shape[1], OH, OW};
    kn_scope sc = kn_scope_begin();
    kn_tensor *y = kn__scoped(kn__new(4, shape, x->dtype, dev));
    kn_tensor *ix = y ? kn__scoped(kn__new(4, shape, KN_I64, dev)) : NULL;
    kn_max_pool2d_args a = {.out = kn__view(y), .indices = kn__view(ix), .x = kn__view(x), .kernel_h = st.kh,
                            .kernel_w = st.kw, .stride_h = st.sh, .stride_w = st.sw, .pad_h = st.ph, .pad_w = st.pw,
                            .dilation_h = st.dh, .dilation_w = st.dw};
    if (ix && kn__run(KN_OP_MAX_POOL2D, dev, &a) != KN_OK) y = NULL;
    kn_node *n = y && ix ? kn__record(y, op, max_pool_backward, 1, &x, sizeof(pool_state)) : NULL;
    if (n) {
        kn__save(n, 0, ix);
        *KN_STATE(n, pool_state) = st;
    }
    if (!ix) y = NULL;
    if (y && indices) *indices = kn_keep(ix);
    kn_keep(y);
    kn_scope_end(sc);
    return y;
}

/* ---- avg_pool2d ---------------------------------------------------------------------------------- */
static void avg_args(kn_avg_pool2d_args *a, const pool_state *st) {
    a->kernel_h = st->kh, a->kernel_w = st->kw, a->stride_h = st->sh, a->stride_w = st->sw;
    a->pad_h = st->ph, a->pad_w = st->pw, a->count_include_pad = st->include_pad, a->divisor_override = st->divisor;
}

static kn_status avg_pool_backward(kn_node *n, kn_tensor *g, kn_tensor **gin) {
    const pool_state *st = KN_STATE(n, pool_state);
    kn_tensor *x = n->in[0];
    kn_device dev = g->storage->device;
    kn_tensor *gc = kn__scoped(kn__cast_raw(g, x->dtype));
    kn_tensor *gx = gc ? kn__scoped(kn__new(4, x->shape, x->dtype, dev)) : NULL;
    if (!gx) return kn_error_code();
    kn_avg_pool2d_args f = {0};
    avg_args(&f, st);
    kn_avg_pool2d_backward_args a = {.grad_x = kn__view(gx), .grad = kn__view(gc), .kernel_h = f.kernel_h,
                                     .kernel_w = f.kernel_w, .stride_h = f.stride_h, .stride_w = f.stride_w,
                                     .pad_h = f.pad_h, .pad_w = f.pad_w, .count_include_pad = f.count_include_pad,
                                     .divisor_override = f.divisor_override};
    kn_status s = kn__run(KN_OP_AVG_POOL2D_BACKWARD, dev, &a);
    if (s == KN_OK) gin[0] = gx;
    return s;
}

kn_tensor *kn_avg_pool2d(kn_tensor *x, const kn_pool_opts *opts) {
    const char *op = "avg_pool2d";
    if (!x || !opts) return kn__err_null(op), NULL;
    if (x->ndim == 3) {
        kn_scope s = kn_scope_begin();
        kn_tensor *r = kn_squeeze(kn_avg_pool2d(kn_unsqueeze(x, 0), opts), 0);
        kn_keep(r);
        kn_scope_end(s);
        return r;
    }
    if (opts->dilation[0] > 1 || opts->dilation[1] > 1) {
        kn__err(KN_ERR_INVALID, "%s: dilation is not supported (max_pool2d has it)", op);
        return NULL;
    }
    pool_state st;
    int64_t OH, OW;
    if (!pool_check(op, x, opts, false, &st, &OH, &OW)) return NULL;
    kn_device dev = x->storage->device;
    kn_tensor *y = kn__new(4, (int64_t[]){x->shape[0], x->shape[1], OH, OW}, x->dtype, dev);
    kn_avg_pool2d_args a = {.out = kn__view(y), .x = kn__view(x)};
    avg_args(&a, &st);
    if (!y || !(y = kn__run_out(KN_OP_AVG_POOL2D, dev, &a, y))) return NULL;
    kn_node *n = kn__record(y, op, avg_pool_backward, 1, &x, sizeof(pool_state));
    if (n) *KN_STATE(n, pool_state) = st;
    return kn__scoped(y);
}

/* ---- adaptive_avg_pool2d --------------------------------------------------------------------------- */
/* [out, in] (transposed: [in, out]) averaging matrix of adaptive pooling, in dt on dev. */
static kn_tensor *adaptive_matrix(int64_t in, int64_t out, bool transposed, kn_dtype dt, kn_device dev) {
    double *m = calloc((size_t)(in * out), sizeof *m);
    if (!m) return kn__err(KN_ERR_OOM, "adaptive_avg_pool2d: out of memory"), NULL;
    for (int64_t i = 0; i < out; i++) {
        int64_t s = i * in / out, e = ((i + 1) * in + out - 1) / out;
        for (int64_t h = s; h < e; h++) m[transposed ? h * out + i : i * in + h] = 1.0 / (double)(e - s);
    }
    int64_t shape[2] = {transposed ? in : out, transposed ? out : in};
    kn_tensor *t = kn_to(kn_cast(kn_from_data(m, KN_F64, 2, shape, KN_CPU), dt), dev);
    free(m);
    return t;
}

kn_tensor *kn_adaptive_avg_pool2d(kn_tensor *x, int64_t out_h, int64_t out_w) {
    const char *op = "adaptive_avg_pool2d";
    if (!x) return kn__err_null(op), NULL;
    char s[128];
    if ((x->ndim != 4 && x->ndim != 3) || !kn_dtype_is_float(x->dtype)) {
        kn__err(KN_ERR_SHAPE, "%s: expected a floating [N, C, H, W] or [C, H, W] input, got %s %s", op,
                kn_dtype_name(x->dtype), kn__shape_str(x->ndim, x->shape, s, sizeof s));
        return NULL;
    }
    int64_t H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1];
    if (out_h < 1 || out_w < 1 || H < 1 || W < 1) {
        kn__err(KN_ERR_INVALID, "%s: output size must be >= 1 and the input non-empty, got %lld x %lld from %s", op,
                (long long)out_h, (long long)out_w, kn__shape_str(x->ndim, x->shape, s, sizeof s));
        return NULL;
    }
    if (H % out_h == 0 && W % out_w == 0) { /* equal windows: one average pool */
        kn_pool_opts o = kn_pool_opts_default(H / out_h, W / out_w);
        return kn_avg_pool2d(x, &o);
    }
    kn_scope sc = kn_scope_begin();
    kn_device dev = x->storage->device;
    kn_tensor *y = kn_matmul(adaptive_matrix(H, out_h, false, x->dtype, dev),
                             kn_matmul(x, adaptive_matrix(W, out_w, true, x->dtype, dev)));
    kn_keep(y);
    kn_scope_end(sc);
    return y;
}
