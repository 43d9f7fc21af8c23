/* Vision beyond the backend harness: the IDX reader (values, every refusal,
 * gzip truncation and bombs), conv2d on random shapes against a naive
 * float64 loop with finite-difference gradients, the layers and the image
 * helpers. `test_vision --fashion-mnist` reads the installed Fashion-MNIST
 * files instead (exit 77, skipped, when they are absent). */
#include "io/idx_internal.h"
#include "kiln/vision.h"
#include "kn_test.h"

#include <unistd.h>

/* ---- IDX files written by hand -------------------------------------------------------------- */
static size_t put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8),
    p[3] = (unsigned char)v;
    return 4;
}

/* Header for type code and dims; returns its length. */
static size_t idx_header(unsigned char *p, int code, int nd, const uint32_t *dims) {
    p[0] = p[1] = 0, p[2] = (unsigned char)code, p[3] = (unsigned char)nd;
    for (int k = 0; k < nd; k++) put_be32(p + 4 + 4 * k, dims[k]);
    return 4 + 4 * (size_t)nd;
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c >> 1 ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* A gzip member of stored deflate blocks (no compression: no zlib needed
 * here); out must hold n + 18 + 5 * (n / 65535 + 1) bytes. */
static size_t gzip_stored(const unsigned char *src, size_t n, unsigned char *out) {
    static const unsigned char head[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
    size_t o = 0;
    memcpy(out, head, 10);
    o = 10;
    size_t off = 0;
    do {
        size_t len = n - off < 65535 ? n - off : 65535;
        out[o++] = off + len == n; /* BFINAL, BTYPE 00 */
        out[o++] = (unsigned char)len, out[o++] = (unsigned char)(len >> 8);
        out[o++] = (unsigned char)~len, out[o++] = (unsigned char)(~len >> 8);
        memcpy(out + o, src + off, len);
        o += len, off += len;
    } while (off < n);
    uint32_t crc = crc32_of(src, n), sz = (uint32_t)n;
    for (int k = 0; k < 4; k++) out[o++] = (unsigned char)(crc >> (8 * k));
    for (int k = 0; k < 4; k++) out[o++] = (unsigned char)(sz >> (8 * k));
    return o;
}

static kn_tensor *parse(const unsigned char *p, size_t n) {
    kn_error_clear();
    return kn__idx_parse(p, n, "t.idx", KN_CPU);
}

#define REFUSED(buf, n, needle)                                                            \
    do {                                                                                   \
        kn_tensor *t_ = parse(buf, n);                                                     \
        CHECK(t_ == NULL, "%s: accepted", needle);                                         \
        CHECK_ERROR(needle);                                                               \
        kn_release(t_);                                                                    \
    } while (0)

static void test_idx(void) {
    unsigned char b[4096], g[8192];
    /* uint8 [2, 3] */
    size_t n = idx_header(b, 0x08, 2, (uint32_t[]){2, 3});
    for (int i = 0; i < 6; i++) b[n++] = (unsigned char)(10 * i + 5);
    kn_tensor *t = parse(b, n);
    CHECK(t && kn_dtype_of(t) == KN_U8 && kn_ndim(t) == 2 && kn_shape(t)[0] == 2 && kn_shape(t)[1] == 3, "u8 shape");
    double v[8] = {0};
    if (t && kn_to_host(t, v, KN_F64) == KN_OK) CHECK(v[0] == 5 && v[5] == 55, "u8 values %g %g", v[0], v[5]);
    kn_release(t);
    /* big-endian int16 -2, 300; int8 -1; int32 -70000; float32 1.5; float64 -0.25 */
    struct {
        int code;
        unsigned char bytes[8];
        size_t len;
        double want;
        kn_dtype dt;
    } one[] = {{0x0B, {0xff, 0xfe}, 2, -2, KN_I32},
               {0x09, {0xff}, 1, -1, KN_I32},
               {0x0C, {0xff, 0xfe, 0xee, 0x90}, 4, -70000, KN_I32},
               {0x0D, {0x3f, 0xc0, 0, 0}, 4, 1.5, KN_F32},
               {0x0E, {0xbf, 0xd0, 0, 0, 0, 0, 0, 0}, 8, -0.25, KN_F64}};
    for (size_t k = 0; k < sizeof one / sizeof *one; k++) {
        n = idx_header(b, one[k].code, 1, (uint32_t[]){1});
        memcpy(b + n, one[k].bytes, one[k].len);
        t = parse(b, n + one[k].len);
        double x = NAN;
        if (t) kn_to_host(t, &x, KN_F64);
        CHECK(t && kn_dtype_of(t) == one[k].dt && x == one[k].want, "type 0x%02x: got %g", one[k].code, x);
        kn_release(t);
    }
    /* refusals */
    n = idx_header(b, 0x08, 2, (uint32_t[]){2, 3});
    memset(b + n, 7, 6);
    unsigned char bad[64];
    memcpy(bad, b, n + 6);
    bad[1] = 8;
    REFUSED(bad, n + 6, "t.idx: not an IDX file (it starts 0x00080802");
    memcpy(bad, b, n + 6);
    bad[2] = 0x0A;
    REFUSED(bad, n + 6, "unknown IDX type code 0x0a");
    memcpy(bad, b, n + 6);
    bad[3] = 0;
    REFUSED(bad, n + 6, "the IDX header has 0 dims");
    bad[3] = 9;
    REFUSED(bad, n + 6, "the IDX header has 9 dims");
    REFUSED(b, 3, "truncated: 3 bytes");
    REFUSED(b, 9, "truncated: the header of 2 dims needs 12 bytes, the file has 9");
    REFUSED(b, n + 5, "truncated: the shape [2, 3] of uint8 needs 6 bytes of data, the file holds 5");
    b[n + 6] = 0;
    REFUSED(b, n + 7, "1 bytes after the data of shape [2, 3]");
    n = idx_header(bad, 0x0E, 3, (uint32_t[]){0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu});
    REFUSED(bad, n, "more than 17179869184 bytes");
    uint64_t limit = kn__idx_limit;
    kn__idx_limit = 5;
    n = idx_header(b, 0x08, 2, (uint32_t[]){2, 3});
    REFUSED(b, n + 6, "t.idx: the IDX header's shape [2, 3] of uint8 is more than 5 bytes");
    kn__idx_limit = limit;
    n = idx_header(b, 0x08, 2, (uint32_t[]){0, 3}); /* an empty set is fine */
    t = parse(b, n);
    CHECK(t && kn_numel(t) == 0 && kn_shape(t)[1] == 3, "empty idx");
    kn_release(t);

    /* gzip: the same bytes through a stored-block gzip stream */
    n = idx_header(b, 0x08, 2, (uint32_t[]){2, 3});
    for (int i = 0; i < 6; i++) b[n + (size_t)i] = (unsigned char)(i + 1);
    size_t gn = gzip_stored(b, n + 6, g);
    t = parse(g, gn);
    bool zlib = t != NULL || !strstr(kn_error(), "built without zlib");
    if (!zlib) {
        CHECK_ERROR("t.idx: gzip-compressed, and this kiln was built without zlib");
        printf("SKIPPED gzip IDX checks: kiln was built without zlib\n");
        return;
    }
    CHECK(t && kn_numel(t) == 6, "gzip idx");
    if (t && kn_to_host(t, v, KN_F64) == KN_OK) CHECK(v[0] == 1 && v[5] == 6, "gzip values %g %g", v[0], v[5]);
    kn_release(t);
    REFUSED(g, gn - 8, "truncated"); /* no trailer */
    REFUSED(g, 20, "truncated");     /* ends in the header */
    g[gn - 6] ^= 0x55;               /* the CRC */
    REFUSED(g, gn, "corrupt gzip data");
    g[gn - 6] ^= 0x55;
    memcpy(g + gn, g, gn); /* a second member */
    REFUSED(g, 2 * gn, "bytes after the gzip stream");
    /* more data than the header says: refused after the declared bytes */
    n = idx_header(b, 0x08, 1, (uint32_t[]){4});
    memset(b + n, 1, 1000);
    gn = gzip_stored(b, n + 1000, g);
    REFUSED(g, gn, "the gzip data holds more than the 4 bytes of shape [4]");
    /* a header that claims more than the file can inflate to: refused before allocating */
    n = idx_header(b, 0x08, 3, (uint32_t[]){6000, 1000, 1000});
    gn = gzip_stored(b, n + 16, g);
    REFUSED(g, gn, "claims 6000000000 bytes, more than a 55-byte gzip file can hold (wrong sizes, or a gzip bomb)");
}

/* The installed Fashion-MNIST: 60000 + 10000 images of 28 x 28, ten classes of 6000 and 1000. */
static int fashion_mnist(void) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    const char *names[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                            "t10k-labels-idx1-ubyte.gz"};
    char path[4][256];
    for (int i = 0; i < 4; i++) {
        snprintf(path[i], sizeof path[i], "%s/%s", dir, names[i]);
        if (access(path[i], R_OK) != 0) {
            printf("vision_fashion_mnist: %s is absent (apt install dataset-fashion-mnist); skipped\n", path[i]);
            return 77;
        }
    }
    for (int split = 0; split < 2; split++) {
        int64_t N = split ? 10000 : 60000;
        kn_tensor *x = kn_idx_load(path[2 * split], KN_CPU), *y = kn_idx_load(path[2 * split + 1], KN_CPU);
        if (!x && strstr(kn_error(), "built without zlib")) {
            printf("vision_fashion_mnist: kiln was built without zlib; skipped\n");
            return 77;
        }
        CHECK(x && kn_dtype_of(x) == KN_U8 && kn_ndim(x) == 3 && kn_shape(x)[0] == N && kn_shape(x)[1] == 28 &&
                  kn_shape(x)[2] == 28, "%s: images", path[2 * split]);
        CHECK(y && kn_dtype_of(y) == KN_U8 && kn_ndim(y) == 1 && kn_shape(y)[0] == N, "%s: labels", path[2 * split + 1]);
        if (x && y) {
            uint8_t *lab = malloc((size_t)N), *img = malloc((size_t)N * 784);
            kn_to_host(y, lab, KN_U8);
            kn_to_host(x, img, KN_U8);
            int64_t count[10] = {0}, bad = 0, lit = 0;
            for (int64_t i = 0; i < N; i++) lab[i] < 10 ? count[lab[i]]++ : bad++;
            for (int64_t i = 0; i < N * 784; i++) lit += img[i] > 0;
            CHECK(bad == 0, "%lld labels outside 0..9", (long long)bad);
            for (int c = 0; c < 10; c++) CHECK(count[c] == N / 10, "class %d: %lld images", c, (long long)count[c]);
            CHECK(lit > N * 784 / 4 && lit < N * 784, "%lld of the pixels are lit", (long long)lit);
            free(lab), free(img);
        }
        kn_release(x), kn_release(y);
    }
    return kt_finish("vision_fashion_mnist");
}

/* ---- conv2d on random shapes, against naive float64 loops ------------------------------------ */
static uint64_t rng = 12345;
static int64_t rnd(int64_t lo, int64_t hi) { /* [lo, hi] */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (int64_t)((rng >> 33) % (uint64_t)(hi - lo + 1));
}

static double *vals(kn_tensor *t) {
    double *v = malloc((size_t)(kn_numel(t) + 1) * sizeof *v);
    kn_to_host(t, v, KN_F64);
    return v;
}

typedef struct {
    kn_conv_opts o;
} gc_conv;

static kn_tensor *gc_fn(kn_tensor **in, void *p) { return kn_conv2d(in[0], in[1], in[2], &((gc_conv *)p)->o); }

static void test_conv_random(void) {
    int fails = 0;
    for (int it = 0; it < 40; it++) {
        kn_scope s = kn_scope_begin();
        int64_t G = rnd(1, 3), Cg = rnd(1, 3), Kg = rnd(1, 3), kh = rnd(1, 4), kw = rnd(1, 4);
        int64_t sh = rnd(1, 3), sw = rnd(1, 3), dh = rnd(1, 2), dw = rnd(1, 2), ph = rnd(0, 2), pw = rnd(0, 2);
        int64_t N = rnd(1, 3), H = rnd(dh * (kh - 1) + 1, 12), W = rnd(dw * (kw - 1) + 1, 12);
        int64_t C = G * Cg, K = G * Kg;
        kn_conv_opts o = kn_conv_opts_default();
        o.stride[0] = sh, o.stride[1] = sw, o.dilation[0] = dh, o.dilation[1] = dw, o.padding[0] = ph;
        o.padding[1] = pw, o.groups = G;
        kn_generator gen = kn_generator_make((uint64_t)it);
        /* x non-contiguous: a transposed [N, C, W, H] */
        kn_tensor *xb = kn_randn(KN_SHAPE(N, C, W, H), KN_F32, KN_CPU, &gen), *x = kn_transpose(xb, 2, 3);
        kn_tensor *w = kn_randn(KN_SHAPE(K, Cg, kh, kw), KN_F32, KN_CPU, &gen), *b = kn_randn(KN_SHAPE(K), KN_F32, KN_CPU, &gen);
        kn_tensor *y = kn_conv2d(x, w, b, &o);
        int64_t OH = (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1, OW = (W + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
        bool shape_ok = y && kn_shape(y)[0] == N && kn_shape(y)[1] == K && kn_shape(y)[2] == OH && kn_shape(y)[3] == OW;
        CHECK(shape_ok, "iteration %d: output shape", it);
        if (shape_ok) {
            double *xv = vals(kn_contiguous(x)), *wv = vals(w), *bv = vals(b), *yv = vals(y), err = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t k = 0; k < K; k++)
                    for (int64_t i = 0; i < OH; i++)
                        for (int64_t j = 0; j < OW; j++) {
                            double acc = bv[k];
                            for (int64_t c = 0; c < Cg; c++)
                                for (int64_t a = 0; a < kh; a++)
                                    for (int64_t q = 0; q < kw; q++) {
                                        int64_t hh = i * sh - ph + a * dh, ww = j * sw - pw + q * dw;
                                        if (hh >= 0 && hh < H && ww >= 0 && ww < W)
                                            acc += wv[((k * Cg + c) * kh + a) * kw + q] *
                                                   xv[((n * C + k / Kg * Cg + c) * H + hh) * W + ww];
                                    }
                            double e = fabs(yv[((n * K + k) * OH + i) * OW + j] - acc) / (1 + fabs(acc));
                            if (e > err) err = e;
                        }
            if (err > 1e-5 && fails++ < 5) CHECK(err <= 1e-5, "iteration %d: error %g", it, err);
            else kt_passed++;
            free(xv), free(wv), free(bv), free(yv);
        }
        if (it % 4 == 0) { /* gradients by finite differences, float64 */
            gc_conv p = {o};
            kn_tensor *in[3] = {kn_cast(x, KN_F64), kn_cast(w, KN_F64), kn_cast(b, KN_F64)};
            double e = kn_gradcheck(gc_fn, 3, in, &p, 1e-6);
            CHECK(e >= 0 && e < 1e-5, "iteration %d: gradcheck error %g", it, e);
        }
        kn_scope_end(s);
    }
}

/* ---- layers -------------------------------------------------------------------------------------- */
static void test_layers(void) {
    kn_scope s = kn_scope_begin();
    kn_manual_seed(3);
    kn_conv_opts same = kn_conv_opts_default();
    same.padding_same = true;
    kn_module *conv = kn_nn_conv2d(3, 8, 3, 3, &same, true);
    CHECK(conv && kn_module_num_params(conv) == 8 * 3 * 9 + 8, "Conv2d parameters");
    kn_tensor *w = kn_module_get(conv, "weight");
    double *wv = w ? vals(w) : NULL, wmax = 0;
    for (int i = 0; wv && i < 8 * 27; i++) wmax = fmax(wmax, fabs(wv[i]));
    CHECK(wv && wmax > 0 && wmax <= 1 / sqrt(27.0), "Conv2d init bound: max |w| = %g", wmax);
    free(wv);
    kn_tensor *x = kn_randn(KN_SHAPE(2, 3, 9, 7), KN_F32, KN_CPU, NULL);
    kn_tensor *y = kn_module_forward(conv, x);
    CHECK(y && kn_shape(y)[1] == 8 && kn_shape(y)[2] == 9 && kn_shape(y)[3] == 7, "Conv2d same shape");
    kn_module *ct = kn_nn_conv_transpose2d(8, 4, 2, 2, &(kn_conv_opts){.stride = {2, 2}, .dilation = {1, 1}, .groups = 1}, true);
    CHECK(ct && kn_shape(kn_module_get(ct, "weight"))[0] == 8 && kn_shape(kn_module_get(ct, "weight"))[1] == 4,
          "ConvTranspose2d weight [in, out, kh, kw]");
    kn_tensor *u = kn_module_forward(ct, y);
    CHECK(u && kn_shape(u)[1] == 4 && kn_shape(u)[2] == 18 && kn_shape(u)[3] == 14, "ConvTranspose2d doubles");
    /* BatchNorm2d in training: per-channel batch statistics over N, H, W */
    kn_module *bn = kn_nn_batch_norm2d(8);
    kn_tensor *z = kn_module_forward(bn, y);
    if (z) {
        double *zv = vals(z), *yv = vals(y), *rm = vals(kn_module_get(bn, "running_mean"));
        for (int c = 0; c < 8; c++) {
            double m = 0, q = 0, my = 0;
            int cnt = 0;
            for (int n = 0; n < 2; n++)
                for (int k = 0; k < 63; k++) {
                    double v = zv[(n * 8 + c) * 63 + k];
                    m += v, q += v * v, my += yv[(n * 8 + c) * 63 + k], cnt++;
                }
            m /= cnt, q = q / cnt - m * m, my /= cnt;
            CHECK(fabs(m) < 1e-5 && fabs(q - 1) < 1e-3, "BatchNorm2d channel %d: mean %g var %g", c, m, q);
            CHECK_NEAR(rm[c], 0.1 * my, 1e-5);
        }
        free(zv), free(yv), free(rm);
    } else {
        CHECK(z, "BatchNorm2d forward");
    }
    kn_tensor *bad = kn_module_forward(bn, kn_randn(KN_SHAPE(2, 8, 3), KN_F32, KN_CPU, NULL));
    CHECK(!bad, "BatchNorm2d 3-D");
    CHECK_ERROR("BatchNorm2d: expected a 4-D [N, C, H, W] input, got [2, 8, 3]");
    /* a small CNN trains: the loss goes down over a few SGD steps on one batch */
    kn_pool_opts p2 = kn_pool_opts_default(2, 2);
    kn_module *net = kn_nn_sequential(6, (kn_module *[]){kn_nn_conv2d(1, 4, 3, 3, NULL, true), kn_nn_relu(),
                                                        kn_nn_max_pool2d(&p2), kn_nn_adaptive_avg_pool2d(3, 3),
                                                        kn_nn_flatten(), kn_nn_linear(36, 3, true)});
    kn_tensor *xb = kn_randn(KN_SHAPE(12, 1, 10, 10), KN_F32, KN_CPU, NULL);
    kn_tensor *yb = kn_from_data((int64_t[]){0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2}, KN_I64, KN_SHAPE(12), KN_CPU);
    kn_optim *opt = net ? kn_sgd(net, kn_sgd_defaults(0.1)) : NULL;
    double first = NAN, last = NAN;
    for (int step = 0; opt && step < 30; step++) {
        kn_scope st = kn_scope_begin();
        kn_optim_zero_grad(opt);
        kn_tensor *loss = kn_cross_entropy(kn_module_forward(net, xb), yb);
        if (!loss || kn_backward(loss) != KN_OK || kn_optim_step(opt) != KN_OK) {
            kn_scope_end(st);
            break;
        }
        last = kn_item(loss);
        if (step == 0) first = last;
        kn_scope_end(st);
    }
    CHECK(last < first * 0.8, "a CNN's loss from %g to %g", first, last);
    kn_module *up = kn_nn_upsample_scale(2, 2, KN_INTERP_NEAREST, false);
    kn_tensor *uy = kn_module_forward(up, x);
    CHECK(uy && kn_shape(uy)[2] == 18 && kn_shape(uy)[3] == 14, "Upsample x2");
    kn_optim_free(opt);
    kn_module_free(net), kn_module_free(conv), kn_module_free(ct), kn_module_free(bn), kn_module_free(up);
    kn_scope_end(s);
}

/* ---- image helpers and op errors ---------------------------------------------------------------- */
static void test_images(void) {
    kn_scope s = kn_scope_begin();
    uint8_t px[12];
    for (int i = 0; i < 12; i++) px[i] = (uint8_t)(i * 20);
    kn_tensor *img = kn_from_data(px, KN_U8, KN_SHAPE(1, 2, 2, 3), KN_CPU);
    double mean[2] = {0.5, 0.25}, std[2] = {0.5, 2};
    kn_tensor *f = kn_image_normalize(img, mean, std);
    double *fv = f ? vals(f) : NULL;
    CHECK(f && kn_dtype_of(f) == KN_F32, "normalize dtype");
    if (fv) {
        CHECK_NEAR(fv[1], (20 / 255.0 - 0.5) / 0.5, 1e-6);
        CHECK_NEAR(fv[7], (140 / 255.0 - 0.25) / 2, 1e-6);
    }
    free(fv);
    kn_tensor *r = kn_image_resize(f, 4, 6);
    CHECK(r && kn_shape(r)[2] == 4 && kn_shape(r)[3] == 6, "resize");
    /* flips: p = 1 mirrors every image, p = 0 none */
    kn_tensor *x = kn_arange(0, 2 * 3 * 4 * 5, 1, KN_F32, KN_CPU);
    x = kn_reshape(x, KN_SHAPE(2, 3, 4, 5));
    double *xv = vals(x), *a = vals(kn_image_random_flip(x, 1, NULL)), *b = vals(kn_image_random_flip(x, 0, NULL));
    bool mirrored = true, same = true;
    for (int i = 0; i < 120; i++) {
        int j = i % 5;
        mirrored &= a[i] == xv[i - j + 4 - j];
        same &= b[i] == xv[i];
    }
    CHECK(mirrored && same, "flip p=1 mirrors, p=0 keeps");
    free(a), free(b);
    /* crops: each image's crop is a window of it (padded by 1 with zeros) */
    kn_generator g = kn_generator_make(7);
    kn_tensor *c = kn_image_random_crop(x, 3, 4, 1, &g);
    double *cv = c ? vals(c) : NULL;
    CHECK(c && kn_shape(c)[2] == 3 && kn_shape(c)[3] == 4, "crop shape");
    for (int n = 0; cv && n < 2; n++) {
        bool found = false;
        for (int oy = 0; oy <= 3 && !found; oy++)
            for (int ox = 0; ox <= 3 && !found; ox++) {
                bool ok = true;
                for (int ch = 0; ch < 3; ch++)
                    for (int i = 0; i < 3; i++)
                        for (int j = 0; j < 4; j++) {
                            int h = oy + i - 1, w = ox + j - 1;
                            double want = h >= 0 && h < 4 && w >= 0 && w < 5 ? xv[((n * 3 + ch) * 4 + h) * 5 + w] : 0;
                            ok &= cv[((n * 3 + ch) * 3 + i) * 4 + j] == want;
                        }
                found = ok;
            }
        CHECK(found, "crop of image %d is a window of it", n);
    }
    free(cv), free(xv);
    CHECK(!kn_image_random_crop(x, 7, 4, 1, &g), "crop too large");
    CHECK_ERROR("image_random_crop: a 7 x 4 crop does not fit 4 x 5 images padded by 1");
    /* op errors */
    kn_tensor *xi = kn_zeros(KN_SHAPE(1, 2, 5, 5), KN_I32, KN_CPU), *w = kn_zeros(KN_SHAPE(2, 2, 3, 3), KN_F32, KN_CPU);
    CHECK(!kn_conv2d(xi, w, NULL, NULL), "int conv");
    CHECK_ERROR("conv2d: input, weight and bias must be floating point, got int32, float32");
    kn_conv_opts o = kn_conv_opts_default();
    o.stride[1] = 0;
    CHECK(!kn_conv2d(kn_cast(xi, KN_F32), w, NULL, &o), "stride 0");
    CHECK_ERROR("conv2d: stride and dilation must be >= 1 and padding >= 0");
    CHECK(!kn_conv2d(kn_cast(xi, KN_F32), w, kn_zeros(KN_SHAPE(3), KN_F32, KN_CPU), NULL), "bias shape");
    CHECK_ERROR("conv2d: bias must have shape [2], got [3]");
    kn_pool_opts po = kn_pool_opts_default(3, 3);
    po.kernel[0] = po.kernel[1] = 2, po.dilation[0] = po.dilation[1] = 3;
    po.padding[0] = po.padding[1] = 1, po.stride[0] = po.stride[1] = 1;
    CHECK(!kn_max_pool2d(kn_zeros(KN_SHAPE(1, 1, 2, 8), KN_F32, KN_CPU), &po, NULL), "window in the gaps");
    CHECK_ERROR("max_pool2d: window 0 along the height has no element of the input");
    kn_conv_opts t = kn_conv_opts_default();
    t.stride[0] = t.stride[1] = 2, t.output_padding[0] = 2;
    CHECK(!kn_conv_transpose2d(kn_cast(xi, KN_F32), w, NULL, &t), "output_padding too large");
    CHECK_ERROR("conv_transpose2d: output_padding must be >= 0 and smaller than the stride or the dilation");
    CHECK(!kn_interpolate(kn_cast(xi, KN_F32), 4, 4, KN_INTERP_NEAREST, true), "nearest align");
    CHECK_ERROR("interpolate: align_corners is for bilinear only");
    kn_scope_end(s);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--fashion-mnist")) return fashion_mnist();
    test_idx();
    test_conv_random();
    test_layers();
    test_images();
    CHECK(kn_live_tensors() == 0, "%lld tensors leaked", (long long)kn_live_tensors());
    return kt_finish("vision");
}
