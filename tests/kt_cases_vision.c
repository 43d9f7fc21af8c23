/* The backend harness's cases for the vision ops (include/kiln/vision.h).
 * In the float64 reference run each builder computes its results directly
 * with naive loops on the host (kt_ctx.ref), so every device's result, the
 * CPU's kernels included, is checked against code that shares nothing with
 * the library; with gradients on, the reference is the op in float64 and
 * the finite differences of GRADCHECK. Parameters are packed in p[] as
 * tens and units: p = 21 is (2, 1) for (height, width). */
#include "kt_cases.h"
#include "kiln/vision.h"

#define B(name) static int name(const kt_ctx *k, kn_tensor **x, kn_tensor **o)
#define P(i) (k->c->p[i])
#define HI(v) ((v) / 10)
#define LO(v) ((v) % 10)

/* ---- the naive references -------------------------------------------------------------------- */
/* Whether this run computes the reference directly (float64, no gradient wanted). */
static bool naive(const kt_ctx *k, kn_tensor **x, int n) {
    if (!k->ref) return false;
    for (int i = 0; i < n; i++)
        if (x[i] && kn_requires_grad(x[i])) return false;
    return true;
}

/* t's values as doubles (malloc'ed), row-major. */
static double *host(kn_tensor *t) {
    int64_t n = t ? kn_numel(t) : 0;
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (t && kn_to_host(t, v, KN_F64) != KN_OK) v[0] = NAN;
    return v;
}

static kn_tensor *result(double *v, int nd, const int64_t *shape) {
    kn_tensor *t = kn_from_data(v, KN_F64, nd, shape, KN_CPU);
    free(v);
    return t;
}

typedef struct {
    int64_t sh, sw, ph, pw, dh, dw, G;
} cparams;

/* out[n, k, i, j] = b[k] + sum w[k, c, a, b] x[n, g*Cg + c, i*sh - ph + a*dh, j*sw - pw + b*dw]. */
static kn_tensor *naive_conv(kn_tensor *xt, kn_tensor *wt, kn_tensor *bt, cparams p, bool same) {
    const int64_t *xs = kn_shape(xt), *ws = kn_shape(wt);
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], K = ws[0], Cg = ws[1], kh = ws[2], kw = ws[3];
    if (same) p.ph = p.dh * (kh - 1) / 2, p.pw = p.dw * (kw - 1) / 2;
    int64_t OH = same ? H : (H + 2 * p.ph - p.dh * (kh - 1) - 1) / p.sh + 1;
    int64_t OW = same ? W : (W + 2 * p.pw - p.dw * (kw - 1) - 1) / p.sw + 1;
    double *x = host(xt), *w = host(wt), *b = bt ? host(bt) : NULL;
    double *y = malloc((size_t)(N * K * OH * OW) * sizeof *y);
    int64_t Kg = K / p.G;
    (void)C;
    for (int64_t n = 0; n < N; n++)
        for (int64_t kk = 0; kk < K; kk++)
            for (int64_t i = 0; i < OH; i++)
                for (int64_t j = 0; j < OW; j++) {
                    double s = b ? b[kk] : 0;
                    int64_t g = kk / Kg;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t a = 0; a < kh; a++)
                            for (int64_t bb = 0; bb < kw; bb++) {
                                int64_t h = i * p.sh - p.ph + a * p.dh, ww = j * p.sw - p.pw + bb * p.dw;
                                if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
                                s += w[((kk * Cg + c) * kh + a) * kw + bb] * x[((n * xs[1] + g * Cg + c) * H + h) * W + ww];
                            }
                    y[((n * K + kk) * OH + i) * OW + j] = s;
                }
    free(x), free(w), free(b);
    return result(y, 4, (int64_t[]){N, K, OH, OW});
}

/* The transposed convolution as a scatter: each input element adds its
 * weighted kernel to the output. */
static kn_tensor *naive_conv_t(kn_tensor *xt, kn_tensor *wt, kn_tensor *bt, cparams p, int64_t oph, int64_t opw) {
    const int64_t *xs = kn_shape(xt), *ws = kn_shape(wt);
    int64_t N = xs[0], Cin = xs[1], H = xs[2], W = xs[3], Cog = ws[1], kh = ws[2], kw = ws[3];
    int64_t Cout = Cog * p.G, Cig = Cin / p.G;
    int64_t OH = (H - 1) * p.sh - 2 * p.ph + p.dh * (kh - 1) + oph + 1;
    int64_t OW = (W - 1) * p.sw - 2 * p.pw + p.dw * (kw - 1) + opw + 1;
    double *x = host(xt), *w = host(wt), *b = bt ? host(bt) : NULL;
    double *y = calloc((size_t)(N * Cout * OH * OW), sizeof *y);
    for (int64_t n = 0; n < N; n++)
        for (int64_t co = 0; co < Cout; co++)
            for (int64_t q = 0; q < OH * OW; q++) y[(n * Cout + co) * OH * OW + q] = b ? b[co] : 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t ci = 0; ci < Cin; ci++)
            for (int64_t i = 0; i < H; i++)
                for (int64_t j = 0; j < W; j++) {
                    double v = x[((n * Cin + ci) * H + i) * W + j];
                    int64_t g = ci / Cig;
                    for (int64_t c = 0; c < Cog; c++)
                        for (int64_t a = 0; a < kh; a++)
                            for (int64_t bb = 0; bb < kw; bb++) {
                                int64_t h = i * p.sh - p.ph + a * p.dh, ww = j * p.sw - p.pw + bb * p.dw;
                                if (h < 0 || h >= OH || ww < 0 || ww >= OW) continue;
                                y[((n * Cout + g * Cog + c) * OH + h) * OW + ww] +=
                                    v * w[((ci * Cog + c) * kh + a) * kw + bb];
                            }
                }
    free(x), free(w), free(b);
    return result(y, 4, (int64_t[]){N, Cout, OH, OW});
}

/* PyTorch's pooled size. */
static int64_t pooled(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
    int64_t o = (in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0)) / s + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

/* Max pool (first maximum in window order) and its flat indices. */
static int naive_max_pool(kn_tensor *xt, const kn_pool_opts *po, kn_tensor **o) {
    const int64_t *xs = kn_shape(xt);
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
    int64_t kh = po->kernel[0], kw = po->kernel[1], sh = po->stride[0] ? po->stride[0] : kh,
            sw = po->stride[1] ? po->stride[1] : kw;
    int64_t OH = pooled(H, kh, sh, po->padding[0], po->dilation[0], po->ceil_mode);
    int64_t OW = pooled(W, kw, sw, po->padding[1], po->dilation[1], po->ceil_mode);
    double *x = host(xt), *y = malloc((size_t)(N * C * OH * OW) * sizeof *y), *ix = malloc((size_t)(N * C * OH * OW) * 8);
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t i = 0; i < OH; i++)
            for (int64_t j = 0; j < OW; j++) {
                double best = -INFINITY;
                int64_t at = -1;
                for (int64_t a = 0; a < kh; a++)
                    for (int64_t b = 0; b < kw; b++) {
                        int64_t h = i * sh - po->padding[0] + a * po->dilation[0];
                        int64_t w = j * sw - po->padding[1] + b * po->dilation[1];
                        if (h < 0 || h >= H || w < 0 || w >= W) continue;
                        double v = x[p * H * W + h * W + w];
                        if (at < 0 || v > best) best = v, at = h * W + w;
                    }
                y[(p * OH + i) * OW + j] = best;
                ix[(p * OH + i) * OW + j] = (double)at;
            }
    free(x);
    int64_t shape[4] = {N, C, OH, OW};
    o[0] = result(y, 4, shape);
    o[1] = kn_cast(result(ix, 4, shape), KN_I64);
    return 2;
}

static kn_tensor *naive_avg_pool(kn_tensor *xt, const kn_pool_opts *po) {
    const int64_t *xs = kn_shape(xt);
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
    int64_t kh = po->kernel[0], kw = po->kernel[1], sh = po->stride[0] ? po->stride[0] : kh,
            sw = po->stride[1] ? po->stride[1] : kw, ph = po->padding[0], pw = po->padding[1];
    int64_t OH = pooled(H, kh, sh, ph, 1, po->ceil_mode), OW = pooled(W, kw, sw, pw, 1, po->ceil_mode);
    double *x = host(xt), *y = malloc((size_t)(N * C * OH * OW) * sizeof *y);
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t i = 0; i < OH; i++)
            for (int64_t j = 0; j < OW; j++) {
                double s = 0;
                int64_t inside = 0, padded = 0;
                for (int64_t a = 0; a < kh; a++)
                    for (int64_t b = 0; b < kw; b++) {
                        int64_t h = i * sh - ph + a, w = j * sw - pw + b;
                        if (h < H + ph && w < W + pw) padded++; /* inside the padded input */
                        if (h < 0 || h >= H || w < 0 || w >= W) continue;
                        s += x[p * H * W + h * W + w];
                        inside++;
                    }
                double d = po->divisor_override > 0 ? (double)po->divisor_override
                           : po->count_include_pad ? (double)padded
                                                   : (double)inside;
                y[(p * OH + i) * OW + j] = s / d;
            }
    free(x);
    return result(y, 4, (int64_t[]){N, C, OH, OW});
}

static kn_tensor *naive_adaptive(kn_tensor *xt, int64_t OH, int64_t OW) {
    const int64_t *xs = kn_shape(xt);
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
    double *x = host(xt), *y = malloc((size_t)(N * C * OH * OW) * sizeof *y);
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t i = 0; i < OH; i++)
            for (int64_t j = 0; j < OW; j++) {
                int64_t h0 = i * H / OH, h1 = ((i + 1) * H + OH - 1) / OH;
                int64_t w0 = j * W / OW, w1 = ((j + 1) * W + OW - 1) / OW;
                double s = 0;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) s += x[p * H * W + h * W + w];
                y[(p * OH + i) * OW + j] = s / (double)((h1 - h0) * (w1 - w0));
            }
    free(x);
    return result(y, 4, (int64_t[]){N, C, OH, OW});
}

/* PyTorch's interpolate: nearest floor(dst * in/out); bilinear from the
 * four neighbours of the source point. */
static double src_of(int64_t dst, int64_t in, int64_t out, bool align) {
    if (align) return out > 1 ? (double)dst * (double)(in - 1) / (double)(out - 1) : 0;
    double s = ((double)dst + 0.5) * (double)in / (double)out - 0.5;
    return s < 0 ? 0 : s;
}
static kn_tensor *naive_interp(kn_tensor *xt, int64_t OH, int64_t OW, int mode, bool align) {
    const int64_t *xs = kn_shape(xt);
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
    double *x = host(xt), *y = malloc((size_t)(N * C * OH * OW) * sizeof *y);
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t i = 0; i < OH; i++)
            for (int64_t j = 0; j < OW; j++) {
                const double *xp = x + p * H * W;
                double v;
                if (mode == KN_INTERP_NEAREST) {
                    int64_t h = (int64_t)floorf((float)i * ((float)H / (float)OH));
                    int64_t w = (int64_t)floorf((float)j * ((float)W / (float)OW));
                    v = xp[(h < H ? h : H - 1) * W + (w < W ? w : W - 1)];
                } else {
                    double sh = src_of(i, H, OH, align), sw = src_of(j, W, OW, align);
                    int64_t h0 = (int64_t)sh, w0 = (int64_t)sw;
                    int64_t h1 = h0 + 1 < H ? h0 + 1 : H - 1, w1 = w0 + 1 < W ? w0 + 1 : W - 1;
                    double lh = sh - (double)h0, lw = sw - (double)w0;
                    v = (1 - lh) * ((1 - lw) * xp[h0 * W + w0] + lw * xp[h0 * W + w1]) +
                        lh * ((1 - lw) * xp[h1 * W + w0] + lw * xp[h1 * W + w1]);
                }
                y[(p * OH + i) * OW + j] = v;
            }
    free(x);
    return result(y, 4, (int64_t[]){N, C, OH, OW});
}

/* ---- builders ------------------------------------------------------------------------------- */
/* p0 stride, p1 padding (-1: 'same'), p2 dilation, p3 groups; x, weight[, bias]. */
static kn_conv_opts conv_opts(const kt_ctx *k) {
    kn_conv_opts o = kn_conv_opts_default();
    o.stride[0] = HI(P(0)), o.stride[1] = LO(P(0));
    if (P(1) < 0) o.padding_same = true;
    else o.padding[0] = HI(P(1)), o.padding[1] = LO(P(1));
    o.dilation[0] = HI(P(2)), o.dilation[1] = LO(P(2));
    o.groups = P(3);
    return o;
}
static cparams cp_of(const kn_conv_opts *o) {
    return (cparams){o->stride[0], o->stride[1], o->padding[0], o->padding[1], o->dilation[0], o->dilation[1],
                     o->groups};
}

B(b_conv2d) {
    kn_conv_opts co = conv_opts(k);
    kn_tensor *bias = k->c->n_in > 2 ? x[2] : NULL;
    o[0] = naive(k, x, k->c->n_in) ? naive_conv(x[0], x[1], bias, cp_of(&co), co.padding_same)
                                   : kn_conv2d(x[0], x[1], bias, &co);
    return 1;
}

/* conv1d: x [N, C, L], weight [K, C/g, k]; p as conv2d's, the width digit used. */
B(b_conv1d) {
    kn_conv_opts co = conv_opts(k), c1 = co;
    c1.stride[0] = co.stride[1], c1.padding[0] = co.padding[1], c1.dilation[0] = co.dilation[1];
    kn_tensor *bias = k->c->n_in > 2 ? x[2] : NULL;
    if (naive(k, x, k->c->n_in)) {
        co.stride[0] = co.dilation[0] = 1, co.padding[0] = 0;
        kn_tensor *r = naive_conv(kn_unsqueeze(x[0], 2), kn_unsqueeze(x[1], 2), bias, cp_of(&co), co.padding_same);
        o[0] = kn_squeeze(r, 2);
    } else {
        o[0] = kn_conv1d(x[0], x[1], bias, &c1);
    }
    return 1;
}

/* r: output padding (tens: height). */
B(b_conv_t) {
    kn_conv_opts co = conv_opts(k);
    int op = (int)k->c->r;
    co.output_padding[0] = HI(op), co.output_padding[1] = LO(op);
    kn_tensor *bias = k->c->n_in > 2 ? x[2] : NULL;
    o[0] = naive(k, x, k->c->n_in) ? naive_conv_t(x[0], x[1], bias, cp_of(&co), HI(op), LO(op))
                                   : kn_conv_transpose2d(x[0], x[1], bias, &co);
    return 1;
}

/* p0 kernel, p1 stride, p2 padding, p3 dilation*10 + ceil_mode (max) or
 * count_include_pad*10 + ceil_mode (avg); r: divisor_override. */
static kn_pool_opts pool_opts(const kt_ctx *k, bool is_max) {
    kn_pool_opts o = kn_pool_opts_default(HI(P(0)), LO(P(0)));
    o.stride[0] = HI(P(1)), o.stride[1] = LO(P(1));
    o.padding[0] = HI(P(2)), o.padding[1] = LO(P(2));
    o.ceil_mode = P(3) % 10;
    if (is_max) o.dilation[0] = o.dilation[1] = P(3) / 10;
    else o.count_include_pad = P(3) / 10, o.divisor_override = (int64_t)k->c->r;
    return o;
}

B(b_max_pool) {
    kn_pool_opts po = pool_opts(k, true);
    if (naive(k, x, 1)) return naive_max_pool(x[0], &po, o);
    o[0] = kn_max_pool2d(x[0], &po, &o[1]);
    return 2;
}

B(b_avg_pool) {
    kn_pool_opts po = pool_opts(k, false);
    o[0] = naive(k, x, 1) ? naive_avg_pool(x[0], &po) : kn_avg_pool2d(x[0], &po);
    return 1;
}

B(b_adaptive) {
    o[0] = naive(k, x, 1) ? naive_adaptive(x[0], P(0), P(1)) : kn_adaptive_avg_pool2d(x[0], P(0), P(1));
    return 1;
}

/* p0, p1 the size, p2 the mode, p3 align_corners. */
B(b_interp) {
    o[0] = naive(k, x, 1) ? naive_interp(x[0], P(0), P(1), P(2), P(3))
                          : kn_interpolate(x[0], P(0), P(1), (kn_interp_mode)P(2), P(3));
    return 1;
}

/* A small CNN block end to end: conv + bias, ReLU, max pool, flatten. */
B(b_cnn_block) {
    kn_conv_opts co = kn_conv_opts_default();
    co.padding[0] = co.padding[1] = 1;
    kn_pool_opts po = kn_pool_opts_default(2, 2);
    if (naive(k, x, 3)) {
        kn_tensor *pair[2]; /* the pooled values and their indices */
        naive_max_pool(kn_relu(naive_conv(x[0], x[1], x[2], cp_of(&co), false)), &po, pair);
        o[0] = kn_flatten(pair[0], 1, -1);
        return 1;
    }
    o[0] = kn_flatten(kn_max_pool2d(kn_relu(kn_conv2d(x[0], x[1], x[2], &co)), &po, NULL), 1, -1);
    return 1;
}

/* ---- the cases ---------------------------------------------------------------------------------- */
#define CASE(name_, fn_, dts_, lay_, flags_, ...) \
    {.name = name_, .build = fn_, .dtypes = dts_, .layouts = lay_, .flags = flags_, __VA_ARGS__}
#define GC (GRAD | GRADCHECK)

const kt_case kt_vision_cases[] = {
    /* ---- conv2d: strides, padding ('same' too), dilation, groups, depthwise; odd sizes ---- */
    CASE("conv2d 3x3", b_conv2d, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 3, 5, 11, 9), D(-1, 1, 7, 5, 3, 3), D(-1, 1, 7)),
         .p = {11, 0, 11, 1}, .tol = 2),
    CASE("conv2d 3x3 stride 2 padding 1", b_conv2d, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 2, 3, 13, 10), D(-1, 1, 4, 3, 3, 3), D(-1, 1, 4)), .p = {22, 11, 11, 1}, .tol = 2),
    CASE("conv2d 5x3 stride (2, 1) padding (2, 0) dilation (1, 2)", b_conv2d, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 2, 3, 12, 15), D(-1, 1, 5, 3, 5, 3), D(-1, 1, 5)), .p = {21, 20, 12, 1}, .tol = 2),
    CASE("conv2d padding same, even kernel", b_conv2d, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 2, 4, 9, 8), D(-1, 1, 3, 4, 4, 2), D(-1, 1, 3)), .p = {11, -1, 11, 1}, .tol = 2),
    CASE("conv2d padding same, dilation 2", b_conv2d, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 2, 2, 9, 7), D(-1, 1, 3, 2, 3, 3)), .p = {11, -1, 22, 1}, .tol = 2),
    CASE("conv2d groups 3", b_conv2d, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 2, 6, 9, 9), D(-1, 1, 9, 2, 3, 3), D(-1, 1, 9)), .p = {11, 11, 11, 3}, .tol = 2),
    CASE("conv2d depthwise stride 2", b_conv2d, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 3, 5, 10, 11), D(-1, 1, 5, 1, 3, 3), D(-1, 1, 5)), .p = {22, 11, 11, 5}, .tol = 2),
    CASE("conv2d 1x1 (no lowering), no bias", b_conv2d, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 3, 6, 7, 5), D(-1, 1, 4, 6, 1, 1)), .p = {11, 0, 11, 1}, .tol = 2),
    CASE("conv2d 1x1 stride 2", b_conv2d, FLOATS, L_CTS, GRAD, IN(D(-1, 1, 2, 3, 7, 6), D(-1, 1, 4, 3, 1, 1)),
         .p = {22, 0, 11, 1}, .tol = 2),
    CASE("conv2d 64 images (chunked lowering)", b_conv2d, F32_64, L_C, GRAD,
         IN(D(-1, 1, 64, 8, 14, 14), D(-1, 1, 16, 8, 3, 3), D(-1, 1, 16)), .p = {11, 11, 11, 1}, .tol = 2),
    /* Sizes past one 64 x 64 x 16 GEMM tile of the CUDA kernels in every
     * direction (70 channels, 180-deep taps, 969 positions; the weight
     * gradient splits its depth), and more groups than a tile has rows. */
    CASE("conv2d tile edges: 20 -> 70 channels, 17x19", b_conv2d, FLOATS, L_CTS, GRAD,
         IN(D(-1, 1, 3, 20, 17, 19), D(-1, 1, 70, 20, 3, 3), D(-1, 1, 70)), .p = {11, 11, 11, 1}, .tol = 4),
    CASE("conv2d 5x5 stride 2 padding 3 dilation 2 groups 4", b_conv2d, FLOATS, L_CTS, GRAD,
         IN(D(-1, 1, 2, 40, 23, 21), D(-1, 1, 24, 10, 5, 5), D(-1, 1, 24)), .p = {22, 33, 22, 4}, .tol = 4),
    CASE("conv2d depthwise 72 channels", b_conv2d, FLOATS, L_CTS, GRAD,
         IN(D(-1, 1, 2, 72, 15, 13), D(-1, 1, 72, 1, 3, 3), D(-1, 1, 72)), .p = {11, 11, 11, 72}, .tol = 2),
    /* Each gradient absent in turn (the backward op gets no output for it). */
    CASE("conv2d without the input gradient", b_conv2d, FLOATS, L_CTS, GRAD,
         IN(DNG(-1, 1, 2, 6, 9, 8), D(-1, 1, 5, 6, 3, 3), D(-1, 1, 5)), .p = {21, 11, 11, 1}, .tol = 2),
    CASE("conv2d without the weight gradient", b_conv2d, FLOATS, L_CTS, GRAD,
         IN(D(-1, 1, 2, 6, 9, 8), DNG(-1, 1, 4, 3, 3, 2), D(-1, 1, 4)), .p = {12, 10, 21, 2}, .tol = 2),
    CASE("conv2d with only the bias gradient", b_conv2d, FLOATS, L_CTS, GRAD,
         IN(DNG(-1, 1, 2, 4, 7, 6), DNG(-1, 1, 3, 4, 3, 3), D(-1, 1, 3)), .p = {11, 11, 11, 1}, .tol = 2),
    CASE("conv2d gradcheck", b_conv2d, FLOATS, L_ALL, GC, IN(D(-1, 1, 2, 4, 4, 4), D(-1, 1, 4, 2, 3, 3), D(-1, 1, 4)),
         .p = {11, 11, 11, 2}, .tol = 2),
    CASE("conv2d gradcheck stride 2 dilation 2", b_conv2d, FLOATS, L_CTS, GC,
         IN(D(-1, 1, 2, 2, 4, 4), D(-1, 1, 3, 2, 2, 2), D(-1, 1, 3)), .p = {22, 11, 22, 1}, .tol = 2),
    CASE("conv2d gradcheck depthwise", b_conv2d, FLOATS, L_CTS, GC, IN(D(-1, 1, 1, 4, 4, 4), D(-1, 1, 4, 1, 3, 3)),
         .p = {21, 11, 11, 4}, .tol = 2),
    /* ---- conv1d, conv_transpose2d ---- */
    CASE("conv1d stride 2 padding 1", b_conv1d, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 3, 4, 17), D(-1, 1, 5, 4, 3), D(-1, 1, 5)),
         .p = {12, 1, 11, 1}, .tol = 2),
    CASE("conv1d groups 2 dilation 3", b_conv1d, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 4, 19), D(-1, 1, 6, 2, 3)),
         .p = {11, 0, 13, 2}, .tol = 2),
    CASE("conv1d gradcheck", b_conv1d, FLOATS, L_CTS, GC, IN(D(-1, 1, 2, 3, 4), D(-1, 1, 4, 3, 2), D(-1, 1, 4)),
         .p = {11, 1, 11, 1}, .tol = 2),
    CASE("conv_transpose2d stride 2", b_conv_t, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 2, 4, 5, 6), D(-1, 1, 4, 3, 3, 3), D(-1, 1, 3)), .p = {22, 11, 11, 1}, .tol = 2),
    CASE("conv_transpose2d output_padding, groups 2", b_conv_t, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 2, 4, 5, 4), D(-1, 1, 4, 3, 3, 2), D(-1, 1, 6)), .p = {22, 10, 11, 2}, .r = 11, .tol = 2),
    CASE("conv_transpose2d dilation 2", b_conv_t, FLOATS, L_CTS, GRAD, IN(D(-1, 1, 1, 3, 6, 5), D(-1, 1, 3, 2, 3, 3)),
         .p = {11, 21, 22, 1}, .tol = 2),
    CASE("conv_transpose2d gradcheck", b_conv_t, FLOATS, L_CTS, GC,
         IN(D(-1, 1, 2, 2, 3, 3), D(-1, 1, 2, 3, 3, 3), D(-1, 1, 3)), .p = {22, 11, 11, 1}, .r = 1, .tol = 2),
    /* ---- pooling ---- */
    CASE("max_pool2d 2x2", b_max_pool, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 3, 4, 10, 12)), .p = {22, 0, 0, 10}),
    CASE("max_pool2d 3x3 stride 2 padding 1, odd", b_max_pool, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 3, 11, 9)),
         .p = {33, 22, 11, 10}),
    CASE("max_pool2d 3x2 ceil_mode", b_max_pool, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 3, 10, 9)), .p = {32, 22, 10, 11}),
    CASE("max_pool2d dilation 2", b_max_pool, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 2, 11, 10)), .p = {33, 11, 11, 20}),
    /* Overlapping windows: a maximum shared by windows gets each one's gradient. */
    CASE("max_pool2d 3x3 stride 1 (overlapping)", b_max_pool, FLOATS, L_CTS, GRAD, IN(D(-1, 1, 2, 3, 9, 8)),
         .p = {33, 11, 11, 10}),
    CASE("avg_pool2d 3x3 stride 1 (overlapping)", b_avg_pool, FLOATS, L_CTS, GRAD, IN(D(-1, 1, 2, 3, 9, 8)),
         .p = {33, 11, 11, 10}),
    CASE("max_pool2d gradcheck", b_max_pool, FLOATS, L_CTS, GC, IN(D(-1, 1, 2, 3, 4, 4)), .p = {22, 11, 11, 10}),
    CASE("avg_pool2d 2x2", b_avg_pool, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 3, 4, 10, 12)), .p = {22, 0, 0, 10}),
    CASE("avg_pool2d 3x3 stride 2 padding 1, count_include_pad", b_avg_pool, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 2, 3, 11, 9)), .p = {33, 22, 11, 10}),
    CASE("avg_pool2d 3x3 stride 2 padding 1, pad excluded, ceil_mode", b_avg_pool, FLOATS, L_ALL, GRAD,
         IN(D(-1, 1, 2, 3, 10, 9)), .p = {33, 22, 11, 1}),
    CASE("avg_pool2d divisor_override", b_avg_pool, FLOATS, L_CTS, GRAD, IN(D(-1, 1, 2, 3, 9, 8)), .p = {32, 21, 11, 10},
         .r = 5),
    CASE("avg_pool2d gradcheck", b_avg_pool, FLOATS, L_CTS, GC, IN(D(-1, 1, 2, 3, 4, 4)), .p = {33, 22, 11, 1}),
    CASE("adaptive_avg_pool2d 7x5 (uneven windows)", b_adaptive, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 3, 10, 11)),
         .p = {7, 5}),
    CASE("adaptive_avg_pool2d 1x1 (global)", b_adaptive, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 3, 4, 6, 8)), .p = {1, 1}),
    CASE("adaptive_avg_pool2d gradcheck", b_adaptive, FLOATS, L_CTS, GC, IN(D(-1, 1, 2, 2, 4, 4)), .p = {3, 2}),
    /* ---- interpolate ---- */
    CASE("interpolate nearest up", b_interp, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 3, 5, 7)), .p = {11, 16, 0, 0}),
    CASE("interpolate nearest down", b_interp, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 3, 13, 11)), .p = {5, 4, 0, 0}),
    CASE("interpolate bilinear up", b_interp, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 3, 5, 7)), .p = {11, 16, 1, 0}),
    CASE("interpolate bilinear down", b_interp, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 3, 13, 11)), .p = {5, 4, 1, 0}),
    CASE("interpolate bilinear align_corners", b_interp, FLOATS, L_ALL, GRAD, IN(D(-1, 1, 2, 3, 5, 7)),
         .p = {9, 13, 1, 1}),
    CASE("interpolate bilinear gradcheck", b_interp, FLOATS, L_CTS, GC, IN(D(-1, 1, 2, 2, 3, 4)), .p = {5, 3, 1, 0}),
    /* ---- composed (float32/64: in 16-bit floats the conv's rounding moves maxima between taps) ---- */
    CASE("conv + relu + max_pool + flatten", b_cnn_block, F32_64, L_CTS, GRAD,
         IN(D(-1, 1, 4, 3, 12, 10), D(-1, 1, 8, 3, 3, 3), D(-1, 1, 8)), .tol = 2),
    /* ---- errors: the same message on every device ---- */
    CASE("error: conv2d groups", b_conv2d, BIT(KN_F32), L_C, 0, IN(D(-1, 1, 1, 4, 5, 5), D(-1, 1, 4, 3, 3, 3)),
         .p = {11, 0, 11, 2}, .err = "conv2d: weight [4, 3, 3, 3] does not fit an input of 4 channels with groups = 2"),
    CASE("error: conv2d 'same' with stride 2", b_conv2d, BIT(KN_F32), L_C, 0,
         IN(D(-1, 1, 1, 2, 5, 5), D(-1, 1, 2, 2, 3, 3)), .p = {22, -1, 11, 1},
         .err = "conv2d: padding 'same' needs stride 1"),
    CASE("error: conv2d kernel larger than input", b_conv2d, BIT(KN_F32), L_C, 0,
         IN(D(-1, 1, 1, 2, 2, 5), D(-1, 1, 2, 2, 3, 3)), .p = {11, 0, 11, 1},
         .err = "is smaller than the dilated kernel 3 x 3"),
    CASE("error: max_pool2d padding over half the kernel", b_max_pool, BIT(KN_F32), L_C, 0, IN(D(-1, 1, 1, 2, 6, 6)),
         .p = {22, 22, 22, 10}, .err = "max_pool2d: padding 2 is more than half the kernel (2)"),
};
const int kt_vision_case_count = (int)(sizeof kt_vision_cases / sizeof *kt_vision_cases);
