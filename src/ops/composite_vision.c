/* Composites of the vision ops (see composite.c for the rules): windows are
 * strided views of a padded copy of the input, gathered by one COPY
 * (im2col); convolution is then a batched MATMUL, pooling a REDUCE; the
 * backward passes add window values back with SCATTER_ADD at tap positions
 * computed on the host. Slow but everywhere: a backend with a kernel of its
 * own never comes here. */
#include "composite.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A contiguous [N, C, Hp, Wp] of fill with x [N, C, H, W] copied at (ph, pw). */
static kn_tensor *padded(kn__cx *cx, const kn_operand *x, int64_t Hp, int64_t Wp, int64_t ph, int64_t pw,
                         double fill) {
    int64_t shape[4] = {x->shape[0], x->shape[1], Hp, Wp};
    kn_tensor *t = kn_full(4, shape, fill, x->dtype, cx->dev);
    if (!t) return NULL;
    kn_operand in = kn__view(t);
    in.data = (char *)in.data + (size_t)(ph * Wp + pw) * kn_dtype_size(x->dtype);
    in.shape[2] = x->shape[2];
    in.shape[3] = x->shape[3];
    kn_copy_args c = {.out = in, .x = *x};
    return kn__launch(KN_OP_COPY, cx->dev, &c) == KN_OK ? t : NULL;
}

/* The windows of padded xp as a contiguous 6-D tensor: [N, C, kh, kw, OH,
 * OW] (taps_first, for im2col) or [N, C, OH, OW, kh, kw]. */
static kn_tensor *windows(kn__cx *cx, kn_tensor *xp, int64_t OH, int64_t OW, int64_t kh, int64_t kw, int64_t sh,
                          int64_t sw, int64_t dh, int64_t dw, bool taps_first) {
    if (!xp) return NULL;
    kn_operand v = kn__view(xp);
    int64_t Wp = xp->shape[3];
    int64_t tap[2][2] = {{kh, dh * Wp}, {kw, dw}}, pos[2][2] = {{OH, sh * Wp}, {OW, sw}};
    int64_t (*first)[2] = taps_first ? tap : pos, (*second)[2] = taps_first ? pos : tap;
    v.ndim = 6;
    v.shape[2] = first[0][0], v.stride[2] = first[0][1];
    v.shape[3] = first[1][0], v.stride[3] = first[1][1];
    v.shape[4] = second[0][0], v.stride[4] = second[0][1];
    v.shape[5] = second[1][0], v.stride[5] = second[1][1];
    kn_tensor *t = kn_empty(6, v.shape, xp->dtype, cx->dev);
    if (!t) return NULL;
    kn_copy_args c = {.out = kn__view(t), .x = v};
    return kn__launch(KN_OP_COPY, cx->dev, &c) == KN_OK ? t : NULL;
}

/* A host int64 table on the device. */
static kn_tensor *table(kn__cx *cx, const int64_t *v, int64_t n) {
    return kn_to(kn_from_data(v, KN_I64, 1, &n, KN_CPU), cx->dev);
}

/* dst [N, C, H, W] (contiguous) = the (ph, pw) interior of flat [N, C, Hp*Wp]. */
static kn_status crop_into(kn__cx *cx, const kn_operand *dst, kn_tensor *flat, int64_t Wp, int64_t ph, int64_t pw) {
    if (!flat) return kn_error_code();
    kn_operand v = kn__view(flat);
    v.ndim = 4;
    v.shape[2] = dst->shape[2], v.shape[3] = dst->shape[3];
    v.stride[3] = 1, v.stride[2] = Wp;
    v.data = (char *)v.data + (size_t)(ph * Wp + pw) * kn_dtype_size(flat->dtype);
    kn_copy_args c = {.out = *dst, .x = v};
    return kn__launch(KN_OP_COPY, cx->dev, &c);
}

/* flat [N, C, Hp*Wp] of zeros plus src [N, C, L] at pos [L] (the same for
 * every plane), in src's dtype. */
static kn_tensor *scatter_planes(kn__cx *cx, kn_tensor *src, int64_t HWp, const int64_t *pos, int64_t L) {
    kn_tensor *idx = table(cx, pos, L);
    kn_tensor *flat = src && idx ? kn_zeros(KN_SHAPE(src->shape[0], src->shape[1], HWp), src->dtype, cx->dev) : NULL;
    if (!flat) return NULL;
    kn_operand iv = kn__view(idx);
    iv.ndim = 3;
    iv.shape[0] = src->shape[0], iv.shape[1] = src->shape[1], iv.shape[2] = L;
    iv.stride[0] = iv.stride[1] = 0, iv.stride[2] = 1;
    kn_scatter_add_args s = {.out = kn__view(flat), .src = kn__view(src), .index = iv, .dim = 2};
    return kn__launch(KN_OP_SCATTER_ADD, cx->dev, &s) == KN_OK ? flat : NULL;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ---- convolution ------------------------------------------------------------------------------- */
typedef struct {
    int64_t N, C, H, W, K, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, G, Hp, Wp;
} geom;

static geom conv_geom(const kn_operand *x, const kn_operand *y, const kn_operand *w, const int64_t p[7]) {
    geom g = {.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .K = y->shape[1],
              .OH = y->shape[2], .OW = y->shape[3], .kh = w->shape[2], .kw = w->shape[3], .sh = p[0], .sw = p[1],
              .ph = p[2], .pw = p[3], .dh = p[4], .dw = p[5], .G = p[6]};
    g.Hp = max64(g.ph + g.H, (g.OH - 1) * g.sh + (g.kh - 1) * g.dh + 1);
    g.Wp = max64(g.pw + g.W, (g.OW - 1) * g.sw + (g.kw - 1) * g.dw + 1);
    return g;
}

/* x lowered to [N, G, C/G*kh*kw, OH*OW]. */
static kn_tensor *im2col(kn__cx *cx, const kn_operand *x, const geom *g) {
    kn_tensor *cols = windows(cx, padded(cx, x, g->Hp, g->Wp, g->ph, g->pw, 0), g->OH, g->OW, g->kh, g->kw, g->sh,
                              g->sw, g->dh, g->dw, true);
    return cols ? kn_reshape(cols, KN_SHAPE(g->N, g->G, g->C / g->G * g->kh * g->kw, g->OH * g->OW)) : NULL;
}

static kn_status conv2d(kn_device dev, kn_conv2d_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int64_t p[7] = {a->stride_h, a->stride_w, a->pad_h, a->pad_w, a->dilation_h, a->dilation_w, a->groups};
    geom g = conv_geom(&a->x, &a->out, &a->weight, p);
    kn_tensor *w = kn__cx_wrap_as(&cx, &a->weight, 3, (int64_t[]){g.G, g.K / g.G, g.C / g.G * g.kh * g.kw});
    kn_tensor *y = kn_reshape(kn_matmul(w, im2col(&cx, &a->x, &g)), KN_SHAPE(g.N, g.K, g.OH, g.OW));
    if (kn_operand_present(&a->bias)) y = kn_add(y, kn__cx_wrap_as(&cx, &a->bias, 4, (int64_t[]){1, g.K, 1, 1}));
    return kn__cx_end(&cx, kn__cx_put(&cx, &a->out, y));
}

static kn_status conv2d_backward(kn_device dev, kn_conv2d_backward_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int64_t p[7] = {a->stride_h, a->stride_w, a->pad_h, a->pad_w, a->dilation_h, a->dilation_w, a->groups};
    const kn_operand *xs = kn_operand_present(&a->grad_x) ? &a->grad_x : &a->x;
    const kn_operand *ws = kn_operand_present(&a->grad_weight) ? &a->grad_weight : &a->weight;
    geom g = conv_geom(xs, &a->grad, ws, p);
    int64_t Kg = g.K / g.G, CKK = g.C / g.G * g.kh * g.kw, OHW = g.OH * g.OW;
    kn_tensor *gy = kn__cx_wrap_as(&cx, &a->grad, 4, (int64_t[]){g.N, g.G, Kg, OHW});
    kn_status s = gy ? KN_OK : kn_error_code();
    if (s == KN_OK && kn_operand_present(&a->grad_bias))
        s = kn__cx_put(&cx, &a->grad_bias, kn_sum(kn__cx_wrap(&cx, &a->grad), KN_DIMS(0, 2, 3), false));
    if (s == KN_OK && kn_operand_present(&a->grad_weight)) {
        kn_tensor *gw = kn_matmul(gy, kn_transpose(im2col(&cx, &a->x, &g), 2, 3)); /* [N, G, Kg, CKK] */
        s = kn__cx_put(&cx, &a->grad_weight, kn_sum(gw, KN_DIMS(0), false));
    }
    if (s == KN_OK && kn_operand_present(&a->grad_x)) {
        kn_tensor *w = kn__cx_wrap_as(&cx, &a->weight, 3, (int64_t[]){g.G, Kg, CKK});
        kn_tensor *cols = kn_matmul(kn_transpose(w, 1, 2), gy); /* [N, G, CKK, OHW] */
        int64_t L = g.kh * g.kw * OHW;
        int64_t *pos = malloc((size_t)(L ? L : 1) * sizeof *pos);
        if (!pos) s = kn__err(KN_ERR_OOM, "conv2d_backward: out of memory");
        for (int64_t q = 0; s == KN_OK && q < L; q++) {
            int64_t t = q / OHW, o = q % OHW, i = o / g.OW, j = o % g.OW, ta = t / g.kw, tb = t % g.kw;
            pos[q] = (i * g.sh + ta * g.dh) * g.Wp + j * g.sw + tb * g.dw;
        }
        if (s == KN_OK) {
            kn_tensor *src = kn_reshape(kn_contiguous(cols), KN_SHAPE(g.N, g.C, L));
            s = crop_into(&cx, &a->grad_x, scatter_planes(&cx, src, g.Hp * g.Wp, pos, L), g.Wp, g.ph, g.pw);
        }
        free(pos);
    }
    return kn__cx_end(&cx, s);
}

/* ---- pooling ------------------------------------------------------------------------------------ */
static kn_status max_pool2d(kn_device dev, kn_max_pool2d_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int64_t H = a->x.shape[2], W = a->x.shape[3], OH = a->out.shape[2], OW = a->out.shape[3];
    int64_t kh = a->kernel_h, kw = a->kernel_w, T = kh * kw;
    int64_t Hp = max64(a->pad_h + H, (OH - 1) * a->stride_h + (kh - 1) * a->dilation_h + 1);
    int64_t Wp = max64(a->pad_w + W, (OW - 1) * a->stride_w + (kw - 1) * a->dilation_w + 1);
    kn_tensor *win = windows(&cx, padded(&cx, &a->x, Hp, Wp, a->pad_h, a->pad_w, -INFINITY), OH, OW, kh, kw,
                             a->stride_h, a->stride_w, a->dilation_h, a->dilation_w, false);
    int64_t shape5[5] = {a->x.shape[0], a->x.shape[1], OH, OW, T};
    win = win ? kn_reshape(win, 5, shape5) : NULL;
    /* Each tap's flat input position; a tap in the padding stands for its
     * window's first tap inside (the one the kernel picks when all are -inf). */
    int64_t L = OH * OW * T, *pos = malloc((size_t)(L ? L : 1) * sizeof *pos);
    kn_status s = pos ? KN_OK : kn__err(KN_ERR_OOM, "max_pool2d: out of memory");
    for (int64_t o = 0; s == KN_OK && o < OH * OW; o++) {
        int64_t i = o / OW, j = o % OW, first = -1;
        for (int64_t t = T - 1; t >= -T; t--) { /* second sweep (t < 0) fills the padding taps */
            int64_t tt = t >= 0 ? t : t + T;
            int64_t h = i * a->stride_h - a->pad_h + tt / kw * a->dilation_h;
            int64_t w = j * a->stride_w - a->pad_w + tt % kw * a->dilation_w;
            bool in = h >= 0 && h < H && w >= 0 && w < W;
            if (t >= 0 && in) first = h * W + w;
            if (t >= 0) pos[o * T + tt] = in ? h * W + w : -1;
            else if (pos[o * T + tt] < 0) pos[o * T + tt] = first;
        }
    }
    if (s == KN_OK) {
        kn_tensor *tab = table(&cx, pos, L);
        kn_tensor *tabv = tab ? kn_expand(kn_reshape(tab, KN_SHAPE(1, 1, OH, OW, T)), 5, shape5) : NULL;
        kn_tensor *am = win ? kn_argmax(win, 4, true) : NULL;
        s = kn__cx_put(&cx, &a->out, win ? kn_max(win, KN_DIMS(4), false) : NULL);
        if (s == KN_OK) s = kn__cx_put(&cx, &a->indices, tabv && am ? kn_gather(tabv, 4, am) : NULL);
    }
    free(pos);
    return kn__cx_end(&cx, s);
}

static kn_status max_pool2d_backward(kn_device dev, kn_max_pool2d_backward_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int64_t N = a->grad_x.shape[0], C = a->grad_x.shape[1], HW = a->grad_x.shape[2] * a->grad_x.shape[3];
    int64_t L = a->grad.shape[2] * a->grad.shape[3];
    kn_tensor *g = kn_contiguous(kn__cx_wrap_as(&cx, &a->grad, 3, (int64_t[]){N, C, L}));
    kn_tensor *ix = kn_contiguous(kn__cx_wrap_as(&cx, &a->indices, 3, (int64_t[]){N, C, L}));
    kn_fill_args z = {.out = a->grad_x, .value = 0};
    kn_status s = g && ix ? kn__launch(KN_OP_FILL, dev, &z) : kn_error_code();
    if (s == KN_OK) {
        kn_operand out = a->grad_x; /* contiguous: [N, C, H*W] */
        out.ndim = 3;
        out.shape[2] = HW;
        out.stride[0] = C * HW, out.stride[1] = HW, out.stride[2] = 1;
        kn_scatter_add_args sa = {.out = out, .src = kn__view(g), .index = kn__view(ix), .dim = 2};
        s = kn__launch(KN_OP_SCATTER_ADD, dev, &sa);
    }
    return kn__cx_end(&cx, s);
}

/* PyTorch's avg_pool2d divisor of each output position, [OH, OW] in dt. */
static kn_tensor *avg_divisors(kn__cx *cx, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kh, int64_t kw,
                               int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool include_pad, int64_t override,
                               kn_dtype dt) {
    double *d = malloc((size_t)(OH * OW > 0 ? OH * OW : 1) * sizeof *d);
    if (!d) return kn__err(KN_ERR_OOM, "avg_pool2d: out of memory"), NULL;
    for (int64_t i = 0; i < OH; i++)
        for (int64_t j = 0; j < OW; j++) {
            int64_t hs = i * sh - ph, ws = j * sw - pw;
            int64_t he = hs + kh < H + ph ? hs + kh : H + ph, we = ws + kw < W + pw ? ws + kw : W + pw;
            int64_t pool = (he - hs) * (we - ws);
            int64_t h0 = max64(hs, 0), w0 = max64(ws, 0), h1 = he < H ? he : H, w1 = we < W ? we : W;
            double v = override > 0 ? (double)override : include_pad ? (double)pool : (double)((h1 - h0) * (w1 - w0));
            d[i * OW + j] = v > 0 ? v : 1;
        }
    kn_tensor *t = kn_to(kn_cast(kn_from_data(d, KN_F64, KN_SHAPE(OH, OW), KN_CPU), dt), cx->dev);
    free(d);
    return t;
}

static kn_status avg_pool2d(kn_device dev, kn_avg_pool2d_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int64_t H = a->x.shape[2], W = a->x.shape[3], OH = a->out.shape[2], OW = a->out.shape[3];
    int64_t Hp = max64(a->pad_h + H, (OH - 1) * a->stride_h + a->kernel_h);
    int64_t Wp = max64(a->pad_w + W, (OW - 1) * a->stride_w + a->kernel_w);
    kn_tensor *win = windows(&cx, padded(&cx, &a->x, Hp, Wp, a->pad_h, a->pad_w, 0), OH, OW, a->kernel_h,
                             a->kernel_w, a->stride_h, a->stride_w, 1, 1, false);
    kn_tensor *d = avg_divisors(&cx, H, W, OH, OW, a->kernel_h, a->kernel_w, a->stride_h, a->stride_w, a->pad_h,
                                a->pad_w, a->count_include_pad, a->divisor_override, a->x.dtype);
    kn_tensor *y = win && d ? kn_div(kn_sum(win, KN_DIMS(4, 5), false), d) : NULL;
    return kn__cx_end(&cx, kn__cx_put(&cx, &a->out, y));
}

static kn_status avg_pool2d_backward(kn_device dev, kn_avg_pool2d_backward_args *a) {
    kn__cx cx;
    kn__cx_begin(&cx, dev);
    int64_t N = a->grad_x.shape[0], C = a->grad_x.shape[1], H = a->grad_x.shape[2], W = a->grad_x.shape[3];
    int64_t OH = a->grad.shape[2], OW = a->grad.shape[3], kh = a->kernel_h, kw = a->kernel_w;
    int64_t Hp = max64(a->pad_h + H, (OH - 1) * a->stride_h + kh), Wp = max64(a->pad_w + W, (OW - 1) * a->stride_w + kw);
    kn_tensor *d = avg_divisors(&cx, H, W, OH, OW, kh, kw, a->stride_h, a->stride_w, a->pad_h, a->pad_w,
                                a->count_include_pad, a->divisor_override, a->grad_x.dtype);
    kn_tensor *gd = d ? kn_div(kn_cast(kn__cx_wrap(&cx, &a->grad), a->grad_x.dtype), d) : NULL;
    int64_t L = OH * OW * kh * kw;
    kn_tensor *src = gd ? kn_reshape(kn_contiguous(kn_expand(kn_reshape(gd, KN_SHAPE(N, C, OH, OW, 1, 1)),
                                                             KN_SHAPE(N, C, OH, OW, kh, kw))),
                                     KN_SHAPE(N, C, L))
                        : NULL;
    int64_t *pos = malloc((size_t)(L ? L : 1) * sizeof *pos);
    kn_status s = pos ? KN_OK : kn__err(KN_ERR_OOM, "avg_pool2d_backward: out of memory");
    for (int64_t q = 0; s == KN_OK && q < L; q++) {
        int64_t t = q % (kh * kw), o = q / (kh * kw), i = o / OW, j = o % OW;
        pos[q] = (i * a->stride_h + t / kw) * Wp + j * a->stride_w + t % kw;
    }
    if (s == KN_OK) s = crop_into(&cx, &a->grad_x, scatter_planes(&cx, src, Hp * Wp, pos, L), Wp, a->pad_h, a->pad_w);
    free(pos);
    return kn__cx_end(&cx, s);
}

kn_status kn__composite_vision(kn_op op, kn_device dev, void *args) {
    switch (op) {
    case KN_OP_CONV2D: return conv2d(dev, args);
    case KN_OP_CONV2D_BACKWARD: return conv2d_backward(dev, args);
    case KN_OP_MAX_POOL2D: return max_pool2d(dev, args);
    case KN_OP_MAX_POOL2D_BACKWARD: return max_pool2d_backward(dev, args);
    case KN_OP_AVG_POOL2D: return avg_pool2d(dev, args);
    case KN_OP_AVG_POOL2D_BACKWARD: return avg_pool2d_backward(dev, args);
    default: return kn__err(KN_ERR_UNSUPPORTED, "%s: not a vision op", kn__op_name(op));
    }
}
