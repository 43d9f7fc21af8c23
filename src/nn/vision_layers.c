/* The vision layers: Conv2d, ConvTranspose2d, the pools, BatchNorm2d,
 * Flatten, Upsample; on the module API like a user's own layers. */
#include "kiln/vision.h"
#include "nn_internal.h"
#include "ops/fused.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* A raw (unscoped) float32 CPU tensor: the module will own it. */
static kn_tensor *own_uniform(int ndim, const int64_t *shape, double bound) {
    kn_scope s = kn_scope_begin();
    kn_tensor *t = kn_empty(ndim, shape, KN_F32, KN_CPU);
    if (t && kn_uniform_(t, -bound, bound, NULL) != KN_OK) t = NULL;
    kn_retain(t);
    kn_scope_end(s);
    return t;
}

static kn_tensor *own_full(int ndim, int64_t n, double v, kn_dtype dt) {
    kn_scope s = kn_scope_begin();
    kn_tensor *t = kn_retain(kn_full(ndim, &n, v, dt, KN_CPU));
    kn_scope_end(s);
    return t;
}

/* Adds t (dropping the creation reference); frees m and returns NULL on failure. */
static kn_module *with(kn_module *m, const char *name, kn_tensor *t, bool param) {
    bool ok = m && t && (param ? kn_module_add_param(m, name, t) : kn_module_add_buffer(m, name, t));
    kn_release(t);
    if (!ok) {
        kn_module_free(m);
        return NULL;
    }
    return m;
}

static bool positive(const char *op, const char *what, int64_t v) {
    if (v > 0) return true;
    kn__err(KN_ERR_INVALID, "%s: %s must be positive, got %lld", op, what, (long long)v);
    return false;
}

/* ---- Conv2d, ConvTranspose2d ------------------------------------------------------------------- */
typedef struct {
    kn_conv_opts o;
} conv_state;

static kn_tensor *conv_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    const conv_state *s = kn_module_state(m);
    return kn_conv2d(x[0], kn_module_get(m, "weight"), kn_module_get(m, "bias"), &s->o);
}

static kn_tensor *conv_transpose_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    const conv_state *s = kn_module_state(m);
    return kn_conv_transpose2d(x[0], kn_module_get(m, "weight"), kn_module_get(m, "bias"), &s->o);
}

static kn_module *conv_module(const char *type, bool transposed, int64_t in, int64_t out, int64_t kh, int64_t kw,
                              const kn_conv_opts *opts, bool bias) {
    kn_conv_opts o = opts ? *opts : kn_conv_opts_default();
    if (!positive(type, "in_channels", in) || !positive(type, "out_channels", out) ||
        !positive(type, "kernel size", kh) || !positive(type, "kernel size", kw) || !positive(type, "groups", o.groups))
        return NULL;
    if (in % o.groups || out % o.groups) {
        kn__err(KN_ERR_INVALID, "%s: in_channels %lld and out_channels %lld must be divisible by groups %lld", type,
                (long long)in, (long long)out, (long long)o.groups);
        return NULL;
    }
    kn_module *m = kn_module_new(type, transposed ? conv_transpose_forward : conv_forward, sizeof(conv_state), NULL);
    if (!m) return NULL;
    ((conv_state *)kn_module_state(m))->o = o;
    char extra[96] = "";
    if (o.padding_same) snprintf(extra, sizeof extra, ", padding=same");
    else if (o.padding[0] || o.padding[1])
        snprintf(extra, sizeof extra, ", padding=(%lld, %lld)", (long long)o.padding[0], (long long)o.padding[1]);
    size_t e = strlen(extra);
    if (o.dilation[0] != 1 || o.dilation[1] != 1)
        snprintf(extra + e, sizeof extra - e, ", dilation=(%lld, %lld)", (long long)o.dilation[0],
                 (long long)o.dilation[1]);
    e = strlen(extra);
    if (o.groups != 1) snprintf(extra + e, sizeof extra - e, ", groups=%lld", (long long)o.groups);
    e = strlen(extra);
    if (!bias) snprintf(extra + e, sizeof extra - e, ", bias=False");
    kn__module_set_repr(m, "%lld, %lld, kernel_size=(%lld, %lld), stride=(%lld, %lld)%s", (long long)in,
                        (long long)out, (long long)kh, (long long)kw, (long long)o.stride[0], (long long)o.stride[1],
                        extra);
    /* PyTorch's kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
     * fan_in = weight.shape[1] * kh * kw; the bias uses the same bound. */
    int64_t w_shape[4] = {transposed ? in : out, (transposed ? out : in) / o.groups, kh, kw};
    double bound = 1.0 / sqrt((double)(w_shape[1] * kh * kw));
    m = with(m, "weight", own_uniform(4, w_shape, bound), true);
    int64_t nb = out;
    if (m && bias) m = with(m, "bias", own_uniform(1, &nb, bound), true);
    return m;
}

kn_module *kn_nn_conv2d(int64_t in, int64_t out, int64_t kh, int64_t kw, const kn_conv_opts *opts, bool bias) {
    return conv_module("Conv2d", false, in, out, kh, kw, opts, bias);
}

kn_module *kn_nn_conv_transpose2d(int64_t in, int64_t out, int64_t kh, int64_t kw, const kn_conv_opts *opts,
                                  bool bias) {
    return conv_module("ConvTranspose2d", true, in, out, kh, kw, opts, bias);
}

/* ---- pools ------------------------------------------------------------------------------------ */
typedef struct {
    kn_pool_opts o;
    int64_t out_h, out_w; /* adaptive */
} pool_state;

static kn_tensor *max_pool_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    return kn_max_pool2d(x[0], &((pool_state *)kn_module_state(m))->o, NULL);
}
static kn_tensor *avg_pool_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    return kn_avg_pool2d(x[0], &((pool_state *)kn_module_state(m))->o);
}
static kn_tensor *adaptive_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    const pool_state *s = kn_module_state(m);
    return kn_adaptive_avg_pool2d(x[0], s->out_h, s->out_w);
}

static kn_module *pool_module(const char *type, kn_forward_fn fwd, const kn_pool_opts *opts) {
    if (!opts) return kn__err_null(type), NULL;
    for (int d = 0; d < 2; d++)
        if (opts->kernel[d] < 1 || opts->stride[d] < 0 || opts->padding[d] < 0) {
            kn__err(KN_ERR_INVALID, "%s: kernel must be >= 1, stride and padding >= 0", type);
            return NULL;
        }
    kn_module *m = kn_module_new(type, fwd, sizeof(pool_state), NULL);
    if (!m) return NULL;
    pool_state *s = kn_module_state(m);
    s->o = *opts;
    int64_t sh = opts->stride[0] ? opts->stride[0] : opts->kernel[0], sw = opts->stride[1] ? opts->stride[1] : opts->kernel[1];
    kn__module_set_repr(m, "kernel_size=(%lld, %lld), stride=(%lld, %lld), padding=(%lld, %lld), ceil_mode=%s",
                        (long long)opts->kernel[0], (long long)opts->kernel[1], (long long)sh, (long long)sw,
                        (long long)opts->padding[0], (long long)opts->padding[1], opts->ceil_mode ? "True" : "False");
    return m;
}

kn_module *kn_nn_max_pool2d(const kn_pool_opts *opts) { return pool_module("MaxPool2d", max_pool_forward, opts); }
kn_module *kn_nn_avg_pool2d(const kn_pool_opts *opts) { return pool_module("AvgPool2d", avg_pool_forward, opts); }

kn_module *kn_nn_adaptive_avg_pool2d(int64_t out_h, int64_t out_w) {
    if (!positive("AdaptiveAvgPool2d", "output size", out_h) || !positive("AdaptiveAvgPool2d", "output size", out_w))
        return NULL;
    kn_module *m = kn_module_new("AdaptiveAvgPool2d", adaptive_forward, sizeof(pool_state), NULL);
    if (!m) return NULL;
    pool_state *s = kn_module_state(m);
    s->out_h = out_h, s->out_w = out_w;
    kn__module_set_repr(m, "output_size=(%lld, %lld)", (long long)out_h, (long long)out_w);
    return m;
}

/* ---- BatchNorm2d: batch norm over N, H, W as [N, C, H*W] ------------------------------------- */
static kn_tensor *batch_norm2d_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    kn_tensor *t = x[0];
    if (kn_ndim(t) != 4) {
        char s[128];
        kn__err(KN_ERR_SHAPE, "BatchNorm2d: expected a 4-D [N, C, H, W] input, got %s", kn_shape_str(t, s, sizeof s));
        return NULL;
    }
    const int64_t *sh = kn_shape(t);
    kn_scope sc = kn_scope_begin();
    kn_tensor *y = kn__batch_norm_ex(kn_reshape(t, KN_SHAPE(sh[0], sh[1], sh[2] * sh[3])),
                                     kn_module_get(m, "running_mean"), kn_module_get(m, "running_var"),
                                     kn_module_get(m, "weight"), kn_module_get(m, "bias"),
                                     kn_module_get(m, "num_batches_tracked"), kn_module_training(m), 0.1, 1e-5);
    y = kn_keep(y ? kn_reshape(y, 4, sh) : NULL);
    kn_scope_end(sc);
    return y;
}

kn_module *kn_nn_batch_norm2d(int64_t c) {
    if (!positive("BatchNorm2d", "num_features", c)) return NULL;
    kn_module *m = kn_module_new("BatchNorm2d", batch_norm2d_forward, 0, NULL);
    if (!m) return NULL;
    kn__module_set_repr(m, "%lld, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True", (long long)c);
    m = with(m, "weight", own_full(1, c, 1, KN_F32), true);
    if (m) m = with(m, "bias", own_full(1, c, 0, KN_F32), true);
    if (m) m = with(m, "running_mean", own_full(1, c, 0, KN_F32), false);
    if (m) m = with(m, "running_var", own_full(1, c, 1, KN_F32), false);
    if (m) m = with(m, "num_batches_tracked", own_full(0, 0, 0, KN_I64), false);
    return m;
}

/* ---- Flatten, Upsample ------------------------------------------------------------------------- */
static kn_tensor *flatten_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n, (void)m;
    return kn_flatten(x[0], 1, -1);
}

kn_module *kn_nn_flatten(void) {
    kn_module *m = kn_module_new("Flatten", flatten_forward, 0, NULL);
    if (m) kn__module_set_repr(m, "start_dim=1, end_dim=-1");
    return m;
}

typedef struct {
    int64_t out_h, out_w;
    double scale_h, scale_w; /* > 0: by scale */
    kn_interp_mode mode;
    bool align;
} upsample_state;

static kn_tensor *upsample_forward(kn_module *m, int n, kn_tensor *const *x) {
    (void)n;
    const upsample_state *s = kn_module_state(m);
    if (s->scale_h > 0) return kn_interpolate_scale(x[0], s->scale_h, s->scale_w, s->mode, s->align);
    return kn_interpolate(x[0], s->out_h, s->out_w, s->mode, s->align);
}

static kn_module *upsample(upsample_state st) {
    if (st.mode != KN_INTERP_NEAREST && st.mode != KN_INTERP_BILINEAR) {
        kn__err(KN_ERR_INVALID, "Upsample: unknown mode %d", (int)st.mode);
        return NULL;
    }
    kn_module *m = kn_module_new("Upsample", upsample_forward, sizeof(upsample_state), NULL);
    if (!m) return NULL;
    *(upsample_state *)kn_module_state(m) = st;
    const char *mode = st.mode == KN_INTERP_NEAREST ? "nearest" : "bilinear";
    if (st.scale_h > 0) kn__module_set_repr(m, "scale_factor=(%g, %g), mode='%s'", st.scale_h, st.scale_w, mode);
    else kn__module_set_repr(m, "size=(%lld, %lld), mode='%s'", (long long)st.out_h, (long long)st.out_w, mode);
    return m;
}

kn_module *kn_nn_upsample(int64_t out_h, int64_t out_w, kn_interp_mode mode, bool align_corners) {
    if (!positive("Upsample", "size", out_h) || !positive("Upsample", "size", out_w)) return NULL;
    return upsample((upsample_state){.out_h = out_h, .out_w = out_w, .mode = mode, .align = align_corners});
}

kn_module *kn_nn_upsample_scale(double sh, double sw, kn_interp_mode mode, bool align_corners) {
    if (!(sh > 0 && sw > 0)) {
        kn__err(KN_ERR_INVALID, "Upsample: scale factors must be > 0, got %g and %g", sh, sw);
        return NULL;
    }
    return upsample((upsample_state){.scale_h = sh, .scale_w = sw, .mode = mode, .align = align_corners});
}
