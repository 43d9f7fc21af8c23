/* Image filtering two ways: a Gaussian blur and Sobel edge detection of a
 * real photograph, computed by convolution (kn_conv2d) and by the FFT
 * (kn_rfft2, a product of spectra, kn_irfft2), on the best device and on the
 * CPU. The two must agree to within what float32 rounding allows; the
 * program fails (exit 1) when they do not. It writes the photograph and the
 * results as PNG files.
 *
 * Usage: image_filter [IMAGE.pgm] [--out DIR]
 *   IMAGE.pgm  binary 8-bit PGM (P5); default data/camera/camera.pgm
 *   --out DIR  where the PNGs go (default: the current directory) */
#include <kiln.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIDE 16384 /* larger pictures are refused before anything is allocated */

/* ---- the picture: a strict reader of binary PGM (Netpbm P5, maxval <= 255) ----------- */
typedef struct {
    int w, h;
    unsigned char *px; /* h rows of w bytes, each in 0 .. maxval */
    int maxval;
} gray_image;

/* Skips whitespace and '#' comments (to the end of their line) between header fields. */
static int skip_space(FILE *f) {
    int c;
    while ((c = getc(f)) != EOF) {
        if (c == '#') {
            while ((c = getc(f)) != EOF && c != '\n' && c != '\r') {}
            if (c == EOF) break;
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') {
            break;
        }
    }
    return c;
}

/* A header field: a decimal number in [lo, hi] and the one whitespace that ends it. */
static bool header_number(FILE *f, const char *path, const char *what, long lo, long hi, long *out) {
    int c = skip_space(f);
    long v = 0;
    int digits = 0;
    for (; c >= '0' && c <= '9'; c = getc(f), digits++) {
        if (v > hi) break; /* already too large: stop before it can overflow */
        v = v * 10 + (c - '0');
    }
    if (!digits || v < lo || v > hi) {
        fprintf(stderr, "image_filter: %s: the %s is %s (want a number in %ld .. %ld)\n", path, what,
                digits ? "out of range" : "missing", lo, hi);
        return false;
    }
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') {
        fprintf(stderr, "image_filter: %s: the %s is not followed by whitespace\n", path, what);
        return false;
    }
    *out = v;
    return true;
}

static bool pgm_read(const char *path, gray_image *im) {
    *im = (gray_image){0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "image_filter: %s: %s\n", path, strerror(errno));
        return false;
    }
    bool ok = false;
    long w, h, maxval, start, end;
    char magic[2];
    if (fread(magic, 1, 2, f) != 2 || magic[0] != 'P' || magic[1] != '5') {
        fprintf(stderr, "image_filter: %s: not a binary PGM file (it does not start with P5)\n", path);
        goto done;
    }
    if (!header_number(f, path, "width", 1, MAX_SIDE, &w) || !header_number(f, path, "height", 1, MAX_SIDE, &h) ||
        !header_number(f, path, "maximum value", 1, 255, &maxval))
        goto done; /* a maxval over 255 means 16-bit samples: not read here */
    /* The pixels are exactly the rest of the file: checked before allocating. */
    if ((start = ftell(f)) < 0 || fseek(f, 0, SEEK_END) || (end = ftell(f)) < 0 || fseek(f, start, SEEK_SET)) {
        fprintf(stderr, "image_filter: %s: cannot be read to its end\n", path);
        goto done;
    }
    if (end - start != w * h) {
        fprintf(stderr, "image_filter: %s: %ld bytes of pixels for a %ld x %ld image (want %ld)\n", path,
                end - start, w, h, w * h);
        goto done;
    }
    if (!(im->px = malloc((size_t)(w * h)))) {
        fprintf(stderr, "image_filter: %s: out of memory for %ld x %ld pixels\n", path, w, h);
        goto done;
    }
    if (fread(im->px, 1, (size_t)(w * h), f) != (size_t)(w * h)) {
        fprintf(stderr, "image_filter: %s: the pixels could not be read\n", path);
        goto done;
    }
    for (long i = 0; i < w * h; i++)
        if (im->px[i] > maxval) {
            fprintf(stderr, "image_filter: %s: pixel %ld is %d, above the maximum value %ld\n", path, i, im->px[i],
                    maxval);
            goto done;
        }
    im->w = (int)w, im->h = (int)h, im->maxval = (int)maxval;
    ok = true;
done:
    fclose(f);
    if (!ok) free(im->px), im->px = NULL;
    return ok;
}

/* ---- PNG output: 8-bit grayscale, stored (uncompressed) deflate blocks --------------- */
static uint32_t crc_update(uint32_t c, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* One chunk: length, type, data, CRC of type and data. */
static bool put_chunk(FILE *f, const char *type, const unsigned char *data, size_t n) {
    unsigned char b[4];
    put_be32(b, (uint32_t)n);
    uint32_t crc = crc_update(crc_update(0xffffffffu, (const unsigned char *)type, 4), data, n) ^ 0xffffffffu;
    bool ok = fwrite(b, 1, 4, f) == 4 && fwrite(type, 1, 4, f) == 4 && (!n || fwrite(data, 1, n, f) == n);
    put_be32(b, crc);
    return ok && fwrite(b, 1, 4, f) == 4;
}

/* v: h x w values mapped linearly from [lo, hi] to 0 .. 255 (clamped). */
static bool png_write(const char *path, const float *v, int w, int h, float lo, float hi) {
    size_t raw = (size_t)h * ((size_t)w + 1), blocks = raw / 65535 + 1, zn = 2 + 5 * blocks + raw + 4;
    unsigned char *z = malloc(zn), *p = z;
    FILE *f = z ? fopen(path, "wb") : NULL;
    if (!f) {
        fprintf(stderr, "image_filter: %s: %s\n", path, z ? strerror(errno) : "out of memory");
        free(z);
        return false;
    }
    *p++ = 0x78, *p++ = 0x01; /* zlib: deflate, 32 KiB window */
    uint32_t a = 1, b = 0;
    size_t left = raw, pos = 0;
    while (left) {
        size_t n = left < 65535 ? left : 65535;
        *p++ = left == n, *p++ = (unsigned char)n, *p++ = (unsigned char)(n >> 8);
        *p++ = (unsigned char)~n, *p++ = (unsigned char)(~n >> 8);
        for (size_t i = 0; i < n; i++, pos++) {
            size_t row = pos / ((size_t)w + 1), col = pos % ((size_t)w + 1);
            unsigned char q = 0; /* column 0: the row's filter byte, 0 (none) */
            if (col) {
                float t = (v[row * (size_t)w + col - 1] - lo) / (hi > lo ? hi - lo : 1);
                q = (unsigned char)lrintf(255 * (t < 0 ? 0 : t > 1 ? 1 : t));
            }
            *p++ = q;
            a = (a + q) % 65521, b = (b + a) % 65521;
        }
        left -= n;
    }
    put_be32(p, b << 16 | a);
    p += 4;
    unsigned char ihdr[13];
    put_be32(ihdr, (uint32_t)w), put_be32(ihdr + 4, (uint32_t)h);
    memcpy(ihdr + 8, (const unsigned char[]){8, 0, 0, 0, 0}, 5); /* 8 bits, grayscale, no interlace */
    bool ok = fwrite("\x89PNG\r\n\x1a\n", 1, 8, f) == 8 && put_chunk(f, "IHDR", ihdr, 13) &&
              put_chunk(f, "IDAT", z, (size_t)(p - z)) && put_chunk(f, "IEND", NULL, 0);
    ok = fclose(f) == 0 && ok;
    free(z);
    if (!ok) fprintf(stderr, "image_filter: %s: writing failed\n", path);
    return ok;
}

/* ---- the filters ----------------------------------------------------------------------- */
#define GAUSS 7 /* 7 x 7 taps: +-3 sigma of sigma 1 */
typedef struct {
    const char *name;
    int kh, kw;
    float k[GAUSS * GAUSS];
    double l1; /* sum of |k|: what the tolerance scales with */
} filter;

static void make_filters(filter f[3]) {
    f[0] = (filter){"gaussian blur", GAUSS, GAUSS, {0}, 0};
    double sum = 0;
    for (int i = 0; i < GAUSS; i++)
        for (int j = 0; j < GAUSS; j++) {
            double di = i - GAUSS / 2, dj = j - GAUSS / 2;
            sum += f[0].k[i * GAUSS + j] = (float)exp(-(di * di + dj * dj) / 2);
        }
    for (int i = 0; i < GAUSS * GAUSS; i++) f[0].k[i] = (float)(f[0].k[i] / sum);
    /* Sobel: the horizontal derivative (as a cross-correlation: positive where
     * brightness rises to the right) and the vertical one. */
    f[1] = (filter){"sobel x", 3, 3, {-1, 0, 1, -2, 0, 2, -1, 0, 1}, 0};
    f[2] = (filter){"sobel y", 3, 3, {-1, -2, -1, 0, 0, 0, 1, 2, 1}, 0};
    for (int q = 0; q < 3; q++)
        for (int i = 0; i < f[q].kh * f[q].kw; i++) f[q].l1 += fabs(f[q].k[i]);
}

/* kn_conv2d is a cross-correlation: y[i, j] = sum_ab x[i + a - ph, j + b - pw] k[a, b],
 * with zeros outside the picture (padding ph = kh / 2, pw = kw / 2: the output has the input's size). */
static kn_tensor *by_conv(kn_tensor *x, const filter *f, kn_device dev) {
    kn_conv_opts o = kn_conv_opts_default();
    o.padding[0] = f->kh / 2, o.padding[1] = f->kw / 2;
    return kn_conv2d(x, kn_from_data(f->k, KN_F32, KN_SHAPE(1, 1, f->kh, f->kw), dev), NULL, &o);
}

static int64_t pow2_at_least(int64_t n) {
    int64_t p = 1;
    while (p < n) p *= 2;
    return p;
}

/* The same by the FFT. A product of spectra is a circular convolution; with
 * both zero-padded to at least (H + kh - 1) x (W + kw - 1) it equals the
 * linear (full) convolution, in which the kernel is flipped. Flipping k
 * first turns it into the cross-correlation above, and the "same" part of
 * the full result starts at (ph, pw). Sizes are rounded up to powers of 2,
 * the fast case of every backend's transform. */
static kn_tensor *by_fft(kn_tensor *x, const filter *f, int h, int w, kn_device dev, int64_t s[2]) {
    float flipped[GAUSS * GAUSS];
    int n = f->kh * f->kw;
    for (int i = 0; i < n; i++) flipped[i] = f->k[n - 1 - i];
    s[0] = pow2_at_least(h + f->kh - 1), s[1] = pow2_at_least(w + f->kw - 1);
    kn_tensor *X = kn_rfft2(x, s, NULL, KN_FFT_NORM_BACKWARD); /* [1, 1, P, Q/2 + 1] */
    kn_tensor *K = kn_rfft2(kn_from_data(flipped, KN_F32, KN_SHAPE(f->kh, f->kw), dev), s, NULL,
                            KN_FFT_NORM_BACKWARD);         /* [P, Q/2 + 1], broadcast over X */
    kn_tensor *xr = kn_real(X), *xi = kn_imag(X), *kr = kn_real(K), *ki = kn_imag(K);
    /* Complex tensors only add and subtract: the product by its parts. */
    kn_tensor *prod = kn_complex(kn_sub(kn_mul(xr, kr), kn_mul(xi, ki)), kn_add(kn_mul(xr, ki), kn_mul(xi, kr)));
    kn_tensor *full = kn_irfft2(prod, s, NULL, KN_FFT_NORM_BACKWARD); /* [1, 1, P, Q] */
    return kn_narrow(kn_narrow(full, 2, f->kh / 2, h), 3, f->kw / 2, w);
}

/* t [1, 1, h, w] to a host array of h * w floats (malloc'ed; NULL on an error). */
static float *host(kn_tensor *t, int h, int w) {
    float *v = malloc((size_t)h * (size_t)w * sizeof *v);
    if (v && kn_to_host(kn_contiguous(t), v, KN_F32) != KN_OK) free(v), v = NULL;
    return v;
}

/* Runs the three filters both ways on dev; false when a pair disagrees or an op failed.
 * out_dir: write the PNGs (NULL: not this time). */
static bool run(const gray_image *im, kn_device dev, const char *out_dir) {
    printf("Using %s device\n", kn_device_kind_name(dev.kind));
    /* KILN_ALLOW_TF32=1 lets a GPU multiply in TF32 (10-bit mantissa): its roundoff then sets the bound. */
    const char *env = getenv("KILN_ALLOW_TF32");
    bool tf32 = dev.kind != KN_CPU.kind && env && !strcmp(env, "1");
    kn_scope sc = kn_scope_begin();
    int h = im->h, w = im->w;
    size_t n = (size_t)h * (size_t)w;
    float *px = malloc(n * sizeof *px), *res[3][2] = {{NULL}};
    bool ok = px != NULL;
    double x_l2 = 0; /* ||x||_2 */
    for (size_t i = 0; ok && i < n; i++) px[i] = (float)im->px[i] / (float)im->maxval, x_l2 += (double)px[i] * px[i];
    x_l2 = sqrt(x_l2);
    kn_tensor *x = ok ? kn_from_data(px, KN_F32, KN_SHAPE(1, 1, h, w), dev) : NULL;
    filter f[3];
    make_filters(f);
    bool computed = ok; /* every op ran (a disagreement still shows all three filters) */
    for (int q = 0; computed && q < 3; q++) {
        int64_t s[2];
        res[q][0] = host(by_conv(x, &f[q], dev), h, w);
        res[q][1] = host(by_fft(x, &f[q], h, w, dev, s), h, w);
        if (!res[q][0] || !res[q][1]) {
            fprintf(stderr, "image_filter: %s on %s: %s\n", f[q].name, kn_device_str(dev),
                    kn_error()[0] ? kn_error() : "out of memory");
            ok = computed = false;
            break;
        }
        double diff = 0, ref = 0;
        for (size_t i = 0; i < n; i++) {
            diff = fmax(diff, fabs((double)res[q][0][i] - res[q][1][i]));
            ref = fmax(ref, fabs((double)res[q][0][i]));
        }
        /* The bound. With unit roundoff u, an FFT of N points computes y with
         * ||error||_2 <= c u log2(N) ||y||_2 for a small c (Higham, Accuracy
         * and Stability of Numerical Algorithms, 2nd ed., sec. 24.1). Three
         * transforms (x, k, the inverse) and the product, with |K^| <= ||k||_1,
         * make the result's error ||e||_2 <~ 4 u log2(PQ) ||x||_2 ||k||_1. Each
         * pixel is a sum over every frequency, so the error spreads evenly:
         * a pixel's is about ||e||_2 / sqrt(PQ); 4 times that allows for the
         * largest. The direct sums' own error (kh kw u ||k||_1 max|x|) is
         * smaller. A wrong flip, crop or padding gives differences of the
         * order of max |y|, thousands of times the bound. */
        double u = ldexp(1, tf32 ? -11 : -24);
        double tol = 16 * u * log2((double)s[0] * (double)s[1]) * x_l2 / sqrt((double)s[0] * (double)s[1]) * f[q].l1;
        bool agree = diff <= tol;
        printf("  %-14s %3lld x %-3lld FFT: max |conv - fft| %.3g (relative to max |conv| %.3g: %.3g); "
               "tolerance %.3g: %s\n", f[q].name, (long long)s[0], (long long)s[1], diff, ref, ref > 0 ? diff / ref : 0,
               tol, agree ? "agree" : "DISAGREE");
        ok = ok && agree;
    }
    if (computed && out_dir) { /* PNGs of this (the first) device's results */
        float *mag[2] = {malloc(n * sizeof(float)), malloc(n * sizeof(float))};
        float top = 0;
        for (int k = 0; k < 2 && mag[0] && mag[1]; k++)
            for (size_t i = 0; i < n; i++) {
                mag[k][i] = hypotf(res[1][k][i], res[2][k][i]); /* the gradient's magnitude */
                top = k ? top : fmaxf(top, mag[k][i]);
            }
        const char *names[5] = {"input.png", "blur_conv.png", "blur_fft.png", "edges_conv.png", "edges_fft.png"};
        const float *img[5] = {px, res[0][0], res[0][1], mag[0], mag[1]};
        for (int k = 0; k < 5 && computed; k++) {
            size_t len = strlen(out_dir) + strlen(names[k]) + 2;
            char *path = malloc(len);
            if (!path || !img[k]) fprintf(stderr, "image_filter: out of memory\n");
            else snprintf(path, len, "%s/%s", out_dir, names[k]);
            computed = path && img[k] && png_write(path, img[k], w, h, 0, k >= 3 ? top : 1);
            if (computed) printf("  wrote %s\n", path);
            ok = ok && computed;
            free(path);
        }
        free(mag[0]), free(mag[1]);
    }
    for (int q = 0; q < 3; q++) free(res[q][0]), free(res[q][1]);
    free(px);
    kn_scope_end(sc);
    return ok;
}

int main(int argc, char **argv) {
    const char *path = "data/camera/camera.pgm", *out_dir = ".";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out_dir = argv[++i];
        else if (argv[i][0] != '-') path = argv[i];
        else {
            fprintf(stderr, "usage: %s [IMAGE.pgm] [--out DIR]\n", argv[0]);
            return 2;
        }
    }
    gray_image im;
    if (!pgm_read(path, &im)) return 1;
    printf("%s: %d x %d, 8-bit gray\n", path, im.w, im.h);
    kn_device dev = kn_device_default(); /* KILN_DEVICE=cpu|cuda|vulkan overrides */
    if (!kn_device_ok(dev)) {
        fprintf(stderr, "image_filter: %s\n", kn_error());
        free(im.px);
        return 1;
    }
    bool ok = run(&im, dev, out_dir);
    if (dev.kind != KN_CPU.kind) ok = run(&im, KN_CPU, NULL) && ok; /* and the reference backend */
    free(im.px);
    if (ok) printf("convolution and FFT agree\n");
    else fprintf(stderr, "image_filter: failed: a filter disagreed or an op failed (above)\n");
    return ok ? 0 : 1;
}
