/* Interpolation and the image helpers, from existing ops: nearest is two
 * index_selects, bilinear two GEMMs with interpolation matrices (it is
 * separable), crops and flips one gather each. Autograd comes with the ops. */
#include "kiln/vision.h"
#include "ops_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- interpolate ------------------------------------------------------------------------------ */
/* PyTorch's source-index scale: scale_factor given (> 0) -> 1 / it, else in / out. */
static double src_scale(int64_t in, int64_t out, double given, bool align) {
    if (align) return out > 1 ? (double)(in - 1) / (double)(out - 1) : 0;
    return given > 0 ? 1.0 / given : (double)in / (double)out;
}

/* Nearest sources along one dim as an int64 tensor on dev (float arithmetic, as PyTorch). */
static kn_tensor *nearest_index(int64_t in, int64_t out, double given, kn_device dev) {
    int64_t *v = malloc((size_t)out * sizeof *v);
    if (!v) return kn__err(KN_ERR_OOM, "interpolate: out of memory"), NULL;
    float scale = (float)src_scale(in, out, given, false);
    for (int64_t i = 0; i < out; i++) {
        int64_t s = (int64_t)floorf((float)i * scale);
        v[i] = s < in - 1 ? s : in - 1;
    }
    kn_tensor *t = kn_to(kn_from_data(v, KN_I64, 1, &out, KN_CPU), dev);
    free(v);
    return t;
}

/* [out, in] (transposed: [in, out]) linear interpolation weights along one dim. */
static kn_tensor *linear_matrix(int64_t in, int64_t out, double given, bool align, bool transposed, kn_dtype dt,
                                kn_device dev) {
    double *m = calloc((size_t)(in * out), sizeof *m);
    if (!m) return kn__err(KN_ERR_OOM, "interpolate: out of memory"), NULL;
    double scale = src_scale(in, out, given, align);
    for (int64_t i = 0; i < out; i++) {
        double src = align ? scale * (double)i : scale * ((double)i + 0.5) - 0.5;
        if (src < 0) src = 0;
        int64_t i0 = (int64_t)src;
        if (i0 > in - 1) i0 = in - 1;
        int64_t i1 = i0 < in - 1 ? i0 + 1 : i0;
        double l1 = src - (double)i0, l0 = 1 - l1;
        if (i1 == i0) l0 = 1, l1 = 0;
        m[transposed ? i0 * out + i : i * in + i0] += l0;
        m[transposed ? i1 * out + i : i * in + i1] += l1;
    }
    int64_t shape[2] = {transposed ? in : out, transposed ? out : in};
    kn_tensor *t = kn_to(kn_cast(kn_from_data(m, KN_F64, 2, shape, KN_CPU), dt), dev);
    free(m);
    return t;
}

static kn_tensor *interp(const char *op, kn_tensor *x, int64_t oh, int64_t ow, double sh, double sw,
                         kn_interp_mode mode, bool align) {
    if (!x) return kn__err_null(op), NULL;
    char s[128];
    if (x->ndim != 4 && x->ndim != 3) {
        kn__err(KN_ERR_SHAPE, "%s: expected [N, C, H, W] or [C, H, W], got %s", op,
                kn__shape_str(x->ndim, x->shape, s, sizeof s));
        return NULL;
    }
    int64_t H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1];
    if (oh < 1 || ow < 1 || H < 1 || W < 1) {
        kn__err(KN_ERR_INVALID, "%s: sizes must be >= 1, got %lld x %lld from %s", op, (long long)oh, (long long)ow,
                kn__shape_str(x->ndim, x->shape, s, sizeof s));
        return NULL;
    }
    if (mode != KN_INTERP_NEAREST && mode != KN_INTERP_BILINEAR) {
        kn__err(KN_ERR_INVALID, "%s: unknown mode %d", op, (int)mode);
        return NULL;
    }
    if (mode == KN_INTERP_NEAREST && align) {
        kn__err(KN_ERR_INVALID, "%s: align_corners is for bilinear only (as PyTorch)", op);
        return NULL;
    }
    if (mode == KN_INTERP_BILINEAR && !kn_dtype_is_float(x->dtype)) {
        kn__err(KN_ERR_DTYPE, "%s: bilinear needs a floating input, got %s", op, kn_dtype_name(x->dtype));
        return NULL;
    }
    kn_device dev = x->storage->device;
    int hd = x->ndim - 2, wd = x->ndim - 1;
    kn_scope sc = kn_scope_begin();
    kn_tensor *y;
    if (mode == KN_INTERP_NEAREST)
        y = kn_index_select(kn_index_select(x, hd, nearest_index(H, oh, sh, dev)), wd, nearest_index(W, ow, sw, dev));
    else
        y = kn_matmul(linear_matrix(H, oh, sh, align, false, x->dtype, dev),
                      kn_matmul(x, linear_matrix(W, ow, sw, align, true, x->dtype, dev)));
    kn_keep(y);
    kn_scope_end(sc);
    return y;
}

kn_tensor *kn_interpolate(kn_tensor *x, int64_t out_h, int64_t out_w, kn_interp_mode mode, bool align_corners) {
    return interp("interpolate", x, out_h, out_w, 0, 0, mode, align_corners);
}

kn_tensor *kn_interpolate_scale(kn_tensor *x, double scale_h, double scale_w, kn_interp_mode mode,
                                bool align_corners) {
    const char *op = "interpolate";
    if (!x) return kn__err_null(op), NULL;
    if (x->ndim != 3 && x->ndim != 4) return interp(op, x, 1, 1, 0, 0, mode, align_corners); /* its shape error */
    if (!(scale_h > 0 && scale_w > 0)) {
        kn__err(KN_ERR_INVALID, "%s: scale factors must be > 0, got %g and %g", op, scale_h, scale_w);
        return NULL;
    }
    double oh = floor((double)x->shape[x->ndim - 2] * scale_h), ow = floor((double)x->shape[x->ndim - 1] * scale_w);
    if (oh > 1e9 || ow > 1e9) {
        kn__err(KN_ERR_INVALID, "%s: scale factors %g, %g give an output too large", op, scale_h, scale_w);
        return NULL;
    }
    return interp(op, x, (int64_t)oh, (int64_t)ow, scale_h, scale_w, mode, align_corners);
}

/* ---- image helpers ------------------------------------------------------------------------------- */
static bool image_check(const char *op, kn_tensor *x) {
    if (!x) return kn__err_null(op), false;
    if (x->ndim == 3 || x->ndim == 4) return true;
    char s[128];
    kn__err(KN_ERR_SHAPE, "%s: expected images [N, C, H, W] or [C, H, W], got %s", op,
            kn__shape_str(x->ndim, x->shape, s, sizeof s));
    return false;
}

kn_tensor *kn_image_normalize(kn_tensor *x, const double *mean, const double *std) {
    const char *op = "image_normalize";
    if (!image_check(op, x)) return NULL;
    int64_t C = x->shape[x->ndim - 3];
    if (C > 4096) {
        kn__err(KN_ERR_SHAPE, "%s: %lld channels: is the input NCHW?", op, (long long)C);
        return NULL;
    }
    double *sc = malloc((size_t)C * sizeof *sc), *sh = malloc((size_t)C * sizeof *sh);
    kn_tensor *r = NULL;
    if (!sc || !sh) {
        kn__err(KN_ERR_OOM, "%s: out of memory", op);
        goto done;
    }
    double base = x->dtype == KN_U8 ? 1.0 / 255 : 1;
    for (int64_t c = 0; c < C; c++) {
        double m = mean ? mean[c] : 0, s = std ? std[c] : 1;
        if (!(s != 0) || !isfinite(m) || !isfinite(s)) {
            kn__err(KN_ERR_INVALID, "%s: channel %lld has mean %g and std %g (std must be finite and non-zero)", op,
                    (long long)c, m, s);
            goto done;
        }
        sc[c] = base / s, sh[c] = -m / s; /* y = x * base / s - m / s */
    }
    kn_scope s = kn_scope_begin();
    kn_device dev = x->storage->device;
    kn_tensor *a = kn_to(kn_cast(kn_from_data(sc, KN_F64, KN_SHAPE(C, 1, 1), KN_CPU), KN_F32), dev);
    kn_tensor *b = kn_to(kn_cast(kn_from_data(sh, KN_F64, KN_SHAPE(C, 1, 1), KN_CPU), KN_F32), dev);
    r = kn_keep(kn_add(kn_mul(kn_cast(x, KN_F32), a), b));
    kn_scope_end(s);
done:
    free(sc);
    free(sh);
    return r;
}

kn_tensor *kn_image_resize(kn_tensor *x, int64_t out_h, int64_t out_w) {
    if (!image_check("image_resize", x)) return NULL;
    return interp("image_resize", x, out_h, out_w, 0, 0, KN_INTERP_BILINEAR, false);
}

/* n integers in [0, hi) from gen, on the host. */
static bool draws(int64_t n, int64_t hi, kn_generator *gen, int64_t *out) {
    kn_scope s = kn_scope_begin();
    kn_tensor *t = kn_randint(0, hi, 1, &n, KN_I64, KN_CPU, gen);
    bool ok = t && kn_to_host(t, out, KN_I64) == KN_OK;
    kn_scope_end(s);
    return ok;
}

kn_tensor *kn_image_random_crop(kn_tensor *x, int64_t oh, int64_t ow, int64_t padding, kn_generator *gen) {
    const char *op = "image_random_crop";
    if (!image_check(op, x)) return NULL;
    if (x->ndim == 3) {
        kn_scope s = kn_scope_begin();
        kn_tensor *r = kn_keep(kn_squeeze(kn_image_random_crop(kn_unsqueeze(x, 0), oh, ow, padding, gen), 0));
        kn_scope_end(s);
        return r;
    }
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t Hp = H + 2 * padding, Wp = W + 2 * padding;
    if (padding < 0 || oh < 1 || ow < 1 || oh > Hp || ow > Wp) {
        kn__err(KN_ERR_INVALID, "%s: a %lld x %lld crop does not fit %lld x %lld images padded by %lld", op,
                (long long)oh, (long long)ow, (long long)H, (long long)W, (long long)padding);
        return NULL;
    }
    int64_t *off = malloc((size_t)(2 * N + 1) * sizeof *off);
    int64_t *idx = malloc((size_t)(N * oh * ow + 1) * sizeof *idx);
    kn_tensor *r = NULL;
    kn_scope s = kn_scope_begin();
    if (!off || !idx) {
        kn__err(KN_ERR_OOM, "%s: out of memory", op);
        goto done;
    }
    if (!draws(N, Hp - oh + 1, gen, off) || !draws(N, Wp - ow + 1, gen, off + N)) goto done;
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) idx[(n * oh + i) * ow + j] = (off[n] + i) * Wp + off[N + n] + j;
    kn_tensor *xp = x;
    if (padding > 0) { /* zeros around, the images copied in (no gradient needed through the copy: a concat) */
        kn_tensor *zh = kn_zeros(KN_SHAPE(N, C, padding, W), x->dtype, x->storage->device);
        xp = kn_concat(3, (kn_tensor *[]){zh, x, zh}, 2);
        kn_tensor *zw = kn_zeros(KN_SHAPE(N, C, Hp, padding), x->dtype, x->storage->device);
        xp = kn_concat(3, (kn_tensor *[]){zw, xp, zw}, 3);
    }
    kn_tensor *it = kn_to(kn_from_data(idx, KN_I64, KN_SHAPE(N, 1, oh * ow), KN_CPU), x->storage->device);
    kn_tensor *flat = kn_reshape(xp, KN_SHAPE(N, C, Hp * Wp));
    r = kn_reshape(kn_gather(flat, 2, kn_expand(it, KN_SHAPE(N, C, oh * ow))), KN_SHAPE(N, C, oh, ow));
    kn_keep(r);
done:
    kn_scope_end(s);
    free(off);
    free(idx);
    return r;
}

kn_tensor *kn_image_random_flip(kn_tensor *x, double p, kn_generator *gen) {
    const char *op = "image_random_flip";
    if (!image_check(op, x)) return NULL;
    if (!(p >= 0 && p <= 1)) {
        kn__err(KN_ERR_INVALID, "%s: p must be in [0, 1], got %g", op, p);
        return NULL;
    }
    if (x->ndim == 3) {
        kn_scope s = kn_scope_begin();
        kn_tensor *r = kn_keep(kn_squeeze(kn_image_random_flip(kn_unsqueeze(x, 0), p, gen), 0));
        kn_scope_end(s);
        return r;
    }
    int64_t N = x->shape[0], W = x->shape[3];
    int64_t *idx = malloc((size_t)(N * W + 1) * sizeof *idx);
    double *u = malloc((size_t)(N + 1) * sizeof *u);
    kn_tensor *r = NULL;
    kn_scope s = kn_scope_begin();
    kn_tensor *ut = u && idx ? kn_rand(1, &N, KN_F64, KN_CPU, gen) : NULL;
    if (!u || !idx) kn__err(KN_ERR_OOM, "%s: out of memory", op);
    else if (ut && kn_to_host(ut, u, KN_F64) == KN_OK) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < W; j++) idx[n * W + j] = u[n] < p ? W - 1 - j : j;
        kn_tensor *it = kn_to(kn_from_data(idx, KN_I64, KN_SHAPE(N, 1, 1, W), KN_CPU), x->storage->device);
        r = kn_keep(kn_gather(x, 3, kn_expand(it, 4, x->shape)));
    }
    kn_scope_end(s);
    free(idx);
    free(u);
    return r;
}
