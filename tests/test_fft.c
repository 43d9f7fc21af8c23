/* Complex tensors and the FFT ops (kiln/fft.h) against direct float64 DFTs
 * written here, on every device present: lengths of every kind (powers of
 * two, mixed radix, primes that take Bluestein's path), every dim,
 * non-contiguous inputs, norm modes, cropping and padding, round trips,
 * Parseval, the real transforms' shapes and Hermitian halves, gradients by
 * finite differences through the real view, and the errors. */
#include "kn_test.h"

#include "kiln/fft.h"

static const double PI = 3.14159265358979323846;

/* ---- host references ------------------------------------------------------------------------------ */
/* Random pairs in [-1, 1): n complex values, interleaved. */
static double *rand_pairs(int64_t n, uint64_t *state) {
    double *v = malloc((size_t)(2 * n + 1) * sizeof *v);
    for (int64_t i = 0; i < 2 * n; i++) {
        *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
        v[i] = (double)(*state >> 11) / 9007199254740992.0 * 2 - 1;
    }
    return v;
}

/* The direct DFT along dim of a row-major complex array of shape sh (rank
 * nd): out (n_out along dim) from in cropped / zero-padded to n_out. The
 * roots come from a table of exp(sign 2 pi i q/n_out) in long double. */
static void naive_dft(const double *in, double *out, int nd, const int64_t *sh, int dim, int64_t n_out, int sign,
                      double scale) {
    int64_t outer = 1, inner = 1, n_in = sh[dim];
    for (int d = 0; d < dim; d++) outer *= sh[d];
    for (int d = dim + 1; d < nd; d++) inner *= sh[d];
    int64_t len = n_in < n_out ? n_in : n_out;
    long double *c = malloc((size_t)n_out * sizeof *c), *sn = malloc((size_t)n_out * sizeof *sn);
    for (int64_t q = 0; q < n_out; q++) {
        long double a = (long double)sign * 2 * (long double)PI * (long double)q / (long double)n_out;
        c[q] = cosl(a), sn[q] = sinl(a);
    }
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++)
            for (int64_t k = 0; k < n_out; k++) {
                long double re = 0, im = 0;
                for (int64_t j = 0, q = 0; j < len; j++, q = (q + k) % n_out) {
                    const double *x = in + 2 * ((o * n_in + j) * inner + i);
                    re += x[0] * c[q] - x[1] * sn[q];
                    im += x[0] * sn[q] + x[1] * c[q];
                }
                double *y = out + 2 * ((o * n_out + k) * inner + i);
                y[0] = (double)re * scale, y[1] = (double)im * scale;
            }
    free(c), free(sn);
}

/* max |a - b| / max(1, max |b|) */
static double rel_err(const double *a, const double *b, int64_t n) {
    double e = 0, m = 1;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return e / m;
}

static double *host_c(kn_tensor *t) {
    int64_t n = t ? kn_numel(t) : 0;
    double *v = malloc((size_t)(2 * n + 2) * sizeof *v);
    if (!t || kn_to_host(t, v, KN_C128) != KN_OK) v[0] = NAN;
    return v;
}
static double *host_r(kn_tensor *t) {
    int64_t n = t ? kn_numel(t) : 0;
    double *v = malloc((size_t)(n + 1) * sizeof *v);
    if (!t || kn_to_host(t, v, KN_F64) != KN_OK) v[0] = NAN;
    return v;
}

static bool same_shape(kn_tensor *t, int nd, const int64_t *sh) {
    if (!t || kn_ndim(t) != nd) return false;
    for (int d = 0; d < nd; d++)
        if (kn_shape(t)[d] != sh[d]) return false;
    return true;
}

static double tol_of(kn_dtype dt, int64_t n) {
    double lg = log2((double)n + 1) + 1;
    return (dt == KN_C128 || dt == KN_F64 ? 1e-14 : 2e-7) * lg * 8;
}

static kn_device devs[16];
static int n_devs;

/* Is dev one whose FFT is the composite (an O(n^2) matrix): keep lengths small there. */
static bool is_cpu(kn_device d) { return d.kind == KN_DEVICE_CPU; }

/* ---- dtypes and complex tensors --------------------------------------------------------------------- */
static void test_dtypes(void) {
    CHECK(kn_dtype_size(KN_C64) == 8 && kn_dtype_size(KN_C128) == 16, "sizes");
    CHECK(!strcmp(kn_dtype_name(KN_C64), "complex64") && !strcmp(kn_dtype_name(KN_C128), "complex128"), "names");
    CHECK(kn_dtype_from_name("c64") == KN_C64 && kn_dtype_from_name("complex128") == KN_C128, "parsed");
    CHECK(kn_dtype_is_complex(KN_C64) && !kn_dtype_is_float(KN_C64) && !kn_dtype_is_complex(KN_F64), "kinds");
    CHECK(kn_dtype_promote(KN_C64, KN_F64) == KN_C128 && kn_dtype_promote(KN_F16, KN_C64) == KN_C64 &&
              kn_dtype_promote(KN_C64, KN_I64) == KN_C64 && kn_dtype_promote(KN_C128, KN_F32) == KN_C128 &&
              kn_dtype_promote(KN_C64, KN_C128) == KN_C128,
          "promotion: complex of the wider float");
    CHECK(kn_dtype_real(KN_C64) == KN_F32 && kn_dtype_complex(KN_F64) == KN_C128, "parts");
}

static void test_complex_tensors(kn_device dev) {
    kn_scope s = kn_scope_begin();
    const char *dn = kn_device_str(dev);
    uint64_t st = 7;
    double *v = rand_pairs(12, &st);
    for (int c = 0; c < 2; c++) {
        kn_dtype dt = c ? KN_C128 : KN_C64;
        float f[24];
        for (int i = 0; i < 24; i++) f[i] = (float)v[i];
        kn_tensor *z = kn_from_data(c ? (const void *)v : (const void *)f, dt, KN_SHAPE(3, 4), dev);
        double *back = host_c(z);
        CHECK(rel_err(back, v, 24) <= (c ? 0 : 1e-7), "%s %s: from_data / to_host", dn, kn_dtype_name(dt));
        free(back);
        /* A transposed view made contiguous on the device, and moved back. */
        kn_tensor *t = kn_contiguous(kn_transpose(z, 0, 1));
        kn_tensor *h = kn_to(t, KN_CPU);
        double *tv = host_c(h);
        double err = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                for (int p = 0; p < 2; p++) err = fmax(err, fabs(tv[2 * (j * 3 + i) + p] - v[2 * (i * 4 + j) + p]));
        CHECK(t && kn_is_contiguous(t) && err < (c ? 1e-300 : 1e-7), "%s %s: contiguous of a transpose", dn,
              kn_dtype_name(dt));
        free(tv);
        /* The views, the parts and the helpers. */
        kn_tensor *r = kn_view_as_real(z);
        CHECK(r && kn_dtype_of(r) == kn_dtype_real(dt) && same_shape(r, KN_SHAPE(3, 4, 2)), "%s view_as_real", dn);
        kn_tensor *zz = kn_view_as_complex(r);
        CHECK(zz && kn_dtype_of(zz) == dt && same_shape(zz, KN_SHAPE(3, 4)), "%s view_as_complex", dn);
        double *re = host_r(kn_real(z)), *im = host_r(kn_imag(z));
        kn_tensor *abs = kn_abs(z), *cj = kn_conj(z), *sum = kn_add(z, kn_mul_scalar(z, 2));
        kn_tensor *mk = kn_complex(kn_imag(z), kn_real(z));
        double *av = host_r(abs), *cv = host_c(cj), *sv = host_c(sum), *mv = host_c(mk);
        double e1 = 0, e2 = 0, e3 = 0, e4 = 0, tol = c ? 1e-15 : 1e-6;
        for (int i = 0; i < 12; i++) {
            e1 = fmax(e1, fabs(re[i] - v[2 * i]) + fabs(im[i] - v[2 * i + 1]));
            e2 = fmax(e2, fabs(av[i] - hypot(v[2 * i], v[2 * i + 1])));
            e3 = fmax(e3, fabs(cv[2 * i] - v[2 * i]) + fabs(cv[2 * i + 1] + v[2 * i + 1]) +
                              fabs(sv[2 * i] - 3 * v[2 * i]) + fabs(sv[2 * i + 1] - 3 * v[2 * i + 1]));
            e4 = fmax(e4, fabs(mv[2 * i] - v[2 * i + 1]) + fabs(mv[2 * i + 1] - v[2 * i]));
        }
        CHECK(e1 < tol && e2 < 2 * tol && e3 < 4 * tol && e4 < tol,
              "%s %s: real/imag %g, abs %g, conj and add %g, complex %g", dn, kn_dtype_name(dt), e1, e2, e3, e4);
        free(re), free(im), free(av), free(cv), free(sv), free(mv);
        /* zeros and ones are (0, 0) and (1, 0); a real cast takes zero imaginary parts. */
        double *ov = host_c(kn_ones(KN_SHAPE(2), dt, dev));
        double *cr = host_c(kn_cast(kn_arange(0, 3, 1, KN_F32, dev), dt));
        CHECK(ov[0] == 1 && ov[1] == 0 && ov[2] == 1 && ov[3] == 0, "%s ones", dn);
        CHECK(cr[0] == 0 && cr[2] == 1 && cr[3] == 0 && cr[4] == 2 && cr[5] == 0, "%s cast from real", dn);
        free(ov), free(cr);
        kn_tensor *c64 = kn_cast(z, c ? KN_C64 : KN_C128);
        double *cc = host_c(c64);
        CHECK(rel_err(cc, v, 24) < 1e-7, "%s cast between complex dtypes", dn);
        free(cc);
    }
    free(v);
    kn_scope_end(s);
}

/* Every op but the few complex ones refuses complex operands, naming itself and the dtype. */
static void test_complex_refused(kn_device dev) {
    kn_scope s = kn_scope_begin();
    kn_tensor *z = kn_zeros(KN_SHAPE(2, 3), KN_C64, dev), *w = kn_zeros(KN_SHAPE(3, 2), KN_C64, dev);
    kn_tensor *res;
#define REFUSED(expr, opname)                                                                              \
    kn_error_clear();                                                                                      \
    res = (expr);                                                                                          \
    CHECK(!res && strstr(kn_error(), opname) && strstr(kn_error(), "complex64"), "%s: %s refuses complex64", \
          kn_device_str(dev), opname)
    REFUSED(kn_mul(z, z), "mul");
    REFUSED(kn_div(z, z), "div");
    REFUSED(kn_exp(z), "exp");
    REFUSED(kn_sum_all(z), "sum");
    REFUSED(kn_matmul(z, w), "matmul");
    REFUSED(kn_eq(z, z), "eq");
    REFUSED(kn_relu(z), "relu");
    REFUSED(kn_max(z, KN_DIMS(0), false), "max");
    REFUSED(kn_where(kn_ones(KN_SHAPE(2, 3), KN_BOOL, dev), z, z), "where");
    REFUSED(kn_cast(z, KN_F32), "complex64");
    REFUSED(kn_rfft(z, -1, -1, KN_FFT_NORM_BACKWARD), "rfft");
    kn_error_clear();
    CHECK(!kn_view_as_complex(kn_zeros(KN_SHAPE(3, 3), KN_F32, dev)) && strstr(kn_error(), "last dim must have size 2"),
          "view_as_complex needs pairs");
    CHECK(!kn_view_as_complex(kn_transpose(kn_zeros(KN_SHAPE(2, 3), KN_F32, dev), 0, 1)) &&
              strstr(kn_error(), "pairs must be contiguous"),
          "view_as_complex needs contiguous pairs");
    CHECK(!kn_view_as_real(kn_zeros(KN_SHAPE(3), KN_F32, dev)) && strstr(kn_error(), "expected a complex tensor"),
          "view_as_real needs a complex tensor");
    double out[12];
    CHECK(kn_to_host(z, out, KN_F64) != KN_OK && strstr(kn_error(), "complex64"), "to_host to a real dtype refused");
#undef REFUSED
    kn_error_clear();
    kn_scope_end(s);
}

/* ---- transforms against the direct DFT -------------------------------------------------------------- */
typedef enum { T_FFT, T_IFFT } kind;

/* fft / ifft of a random complex tensor of shape sh along dim with length n
 * (-1: the input's), every norm, on dev, in dt; against the reference. */
static void check_c2c(kn_device dev, kn_dtype dt, int nd, const int64_t *sh, int dim, int64_t n, bool transposed) {
    kn_scope s = kn_scope_begin();
    uint64_t st = (uint64_t)(nd * 131 + dim * 7 + n + 1000 * (dt == KN_C64));
    int64_t numel = kn__numel_shape(nd, sh);
    double *v = rand_pairs(numel, &st);
    int d = dim < 0 ? dim + nd : dim;
    int64_t n_out = n < 0 ? sh[d] : n, osh[KN_MAX_DIMS];
    for (int k = 0; k < nd; k++) osh[k] = k == d ? n_out : sh[k];
    int64_t on = kn__numel_shape(nd, osh);
    kn_tensor *z = kn_cast(kn_from_data(v, KN_C128, nd, sh, KN_CPU), dt);
    if (transposed && nd >= 2) {
        /* The same values reached through a transposed copy: a non-contiguous input. */
        kn_tensor *tz = kn_contiguous(kn_transpose(z, 0, nd - 1));
        z = kn_transpose(tz, 0, nd - 1);
    }
    z = kn_to(z, dev);
    double *ref = malloc((size_t)(2 * on + 2) * sizeof *ref);
    char shs[64];
    kn__shape_str(nd, sh, shs, sizeof shs);
    double *scaled = malloc((size_t)(2 * on + 2) * sizeof *scaled);
    for (int t = 0; t < 2; t++) {
        bool inv = t == T_IFFT;
        naive_dft(v, ref, nd, sh, d, n_out, inv ? 1 : -1, 1);
        for (int norm = 0; norm < 3; norm++) {
            double sc = norm == KN_FFT_NORM_ORTHO ? 1 / sqrt((double)n_out)
                        : (norm == KN_FFT_NORM_FORWARD) != inv ? 1 / (double)n_out : 1;
            for (int64_t i = 0; i < 2 * on; i++) scaled[i] = ref[i] * sc;
            kn_tensor *y = inv ? kn_ifft(z, n, dim, (kn_fft_norm)norm) : kn_fft(z, n, dim, (kn_fft_norm)norm);
            double *got = host_c(y);
            double e = rel_err(got, scaled, 2 * on);
            CHECK(same_shape(y, nd, osh) && kn_dtype_of(y) == dt && e < tol_of(dt, n_out),
                  "%s %s %s %s dim %d n %lld norm %d%s: error %g", kn_device_str(dev), inv ? "ifft" : "fft",
                  kn_dtype_name(dt), shs, dim, (long long)n, norm, transposed ? " (strided)" : "", e);
            free(got);
        }
    }
    free(ref), free(scaled);
    free(v);
    kn_scope_end(s);
}

static void test_c2c(kn_device dev) {
    static const int64_t lens_all[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 25, 30, 49, 60, 97, 128};
    static const int64_t lens_cpu[] = {210, 243, 256, 343, 1000, 1009, 1024, 2310, 4099, 4096 + 7 * 11};
    for (size_t k = 0; k < sizeof lens_all / sizeof *lens_all; k++) {
        check_c2c(dev, KN_C128, 1, (int64_t[]){lens_all[k]}, 0, -1, false);
        check_c2c(dev, KN_C64, 2, (int64_t[]){3, lens_all[k]}, -1, -1, false);
    }
    if (is_cpu(dev))
        for (size_t k = 0; k < sizeof lens_cpu / sizeof *lens_cpu; k++) {
            check_c2c(dev, KN_C128, 1, (int64_t[]){lens_cpu[k]}, 0, -1, false);
            check_c2c(dev, KN_C64, 2, (int64_t[]){2, lens_cpu[k]}, 1, -1, false);
        }
    /* Every dim, negative dims, strided inputs, cropping and padding. */
    int64_t sh[3] = {4, 5, 6};
    for (int dim = -3; dim < 3; dim++) {
        check_c2c(dev, KN_C128, 3, sh, dim, -1, dim % 2 == 0);
        check_c2c(dev, KN_C64, 3, sh, dim, -1, true);
    }
    check_c2c(dev, KN_C128, 3, sh, 1, 3, true);  /* cropped */
    check_c2c(dev, KN_C128, 3, sh, 1, 11, true); /* padded to a prime */
    check_c2c(dev, KN_C64, 3, sh, 2, 16, false);
    check_c2c(dev, KN_C128, 3, (int64_t[]){2, 0, 5}, 2, -1, false); /* empty: an empty result */
}

/* Long transforms (whose passes are split between threads), checked on a
 * few bins against direct long-double sums: fft and ifft of complex data,
 * rfft of its real parts, irfft of rfft's bins back to the input. */
static void check_long(kn_device dev, int64_t n) {
    kn_scope s = kn_scope_begin();
    uint64_t st = (uint64_t)n;
    double *v = rand_pairs(n, &st);
    kn_tensor *z = kn_to(kn_from_data(v, KN_C128, KN_SHAPE(n), KN_CPU), dev);
    kn_tensor *y[3] = {kn_fft(z, -1, 0, KN_FFT_NORM_BACKWARD), kn_ifft(z, -1, 0, KN_FFT_NORM_FORWARD),
                       kn_rfft(kn_real(z), -1, 0, KN_FFT_NORM_BACKWARD)};
    const char *names[3] = {"fft", "ifft", "rfft"};
    for (int t = 0; t < 3; t++) {
        double *got = host_c(y[t]), e = 0, m = 1;
        int64_t bins = t == 2 ? n / 2 + 1 : n;
        for (int q = 0; q < 24; q++) {
            int64_t k = q < 3 ? (q == 2 ? bins - 1 : q) : (int64_t)((uint64_t)q * 2654435761u % (uint64_t)bins);
            long double re = 0, im = 0;
            for (int64_t j = 0; j < n; j++) {
                /* exp(-+2 pi i jk/n) from the reduced j k mod n, exact in 64 bits */
                long double a = (t == 1 ? 2 : -2) * (long double)PI * (long double)((j * k) % n) / (long double)n;
                long double xr = v[2 * j], xi = t == 2 ? 0 : v[2 * j + 1], c = cosl(a), sn = sinl(a);
                re += xr * c - xi * sn, im += xr * sn + xi * c;
            }
            e = fmax(e, fmax(fabs(got[2 * k] - (double)re), fabs(got[2 * k + 1] - (double)im)));
            m = fmax(m, fmax(fabs((double)re), fabs((double)im)));
        }
        CHECK(y[t] && kn_shape(y[t])[0] == bins && e / m < tol_of(KN_F64, n), "%s %s long n %lld: error %g",
              kn_device_str(dev), names[t], (long long)n, e / m);
        free(got);
    }
    double *back = host_r(kn_irfft(y[2], n, 0, KN_FFT_NORM_BACKWARD)), e = 0;
    for (int64_t j = 0; j < n; j++) e = fmax(e, fabs(back[j] - v[2 * j]));
    CHECK(e < tol_of(KN_F64, n), "%s irfft(rfft) long n %lld: error %g", kn_device_str(dev), (long long)n, e);
    free(back), free(v);
    kn_scope_end(s);
}

/* rfft / irfft along a dim that is not the innermost (lines gathered in
 * blocks), of a strided input, against the direct DFT. */
static void check_real_dim0(kn_device dev, kn_dtype rt, int64_t n, int64_t cols) {
    kn_scope s = kn_scope_begin();
    uint64_t st = (uint64_t)(n * 7 + cols);
    int64_t bins = n / 2 + 1;
    double *v = rand_pairs(n * cols, &st); /* [n, cols] reals: the first n cols values */
    double *vc = calloc((size_t)(2 * n * cols), sizeof *vc), *ref = malloc((size_t)(2 * n * cols) * sizeof *ref);
    for (int64_t i = 0; i < n * cols; i++) vc[2 * i] = v[i];
    naive_dft(vc, ref, 2, (int64_t[]){n, cols}, 0, n, -1, 1);
    /* every other column of a [n, 2 cols] tensor: strides (2 cols, 2) */
    kn_tensor *wide = kn_zeros(KN_SHAPE(n, cols, 2), rt, dev);
    kn_tensor *x = kn_select(wide, 2, 0);
    kn_copy_(x, kn_to(kn_cast(kn_from_data(v, KN_F64, KN_SHAPE(n, cols), KN_CPU), rt), dev));
    kn_tensor *y = kn_rfft(x, -1, 0, KN_FFT_NORM_BACKWARD);
    double *got = host_c(y), e = 0, m = 1;
    for (int64_t k = 0; k < bins; k++)
        for (int64_t c = 0; c < 2 * cols; c++) {
            e = fmax(e, fabs(got[k * 2 * cols + c] - ref[k * 2 * cols + c]));
            m = fmax(m, fabs(ref[k * 2 * cols + c]));
        }
    CHECK(same_shape(y, KN_SHAPE(bins, cols)) && e / m < tol_of(rt, n), "%s rfft dim 0 %s n %lld: error %g",
          kn_device_str(dev), kn_dtype_name(rt), (long long)n, e / m);
    double *back = host_r(kn_irfft(kn_transpose(kn_contiguous(kn_transpose(y, 0, 1)), 0, 1), n, 0,
                                   KN_FFT_NORM_BACKWARD));
    CHECK(back && rel_err(back, v, n * cols) < tol_of(rt, n), "%s irfft dim 0 (strided bins) %s n %lld",
          kn_device_str(dev), kn_dtype_name(rt), (long long)n);
    free(got), free(back), free(v), free(vc), free(ref);
    kn_scope_end(s);
}

/* rfft / irfft against the complex transforms' references. */
static void test_real(kn_device dev) {
    kn_scope s = kn_scope_begin();
    /* even lengths take the half-length complex path, odd ones the full one;
     * 1009 and 2018 reach Bluestein's through it */
    static const int64_t lens[] = {1, 2, 3, 4, 5, 7, 8, 12, 15, 16, 97, 100, 1000, 1009, 1024, 2018};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        int64_t n = lens[li], bins = n / 2 + 1;
        if (n > 128 && !is_cpu(dev)) continue;
        for (int f = 0; f < 2; f++) {
            kn_dtype rt = f ? KN_F64 : KN_F32;
            uint64_t st = (uint64_t)n * 3 + (uint64_t)f;
            double *v = rand_pairs(3 * n, &st); /* 3 rows of n reals (the first 3n values) */
            double *vc = calloc((size_t)(6 * n), sizeof *vc), *ref = malloc((size_t)(6 * n) * sizeof *ref);
            for (int64_t i = 0; i < 3 * n; i++) vc[2 * i] = v[i];
            naive_dft(vc, ref, 2, (int64_t[]){3, n}, 1, n, -1, 1);
            kn_tensor *x = kn_to(kn_cast(kn_from_data(v, KN_F64, KN_SHAPE(3, n), KN_CPU), rt), dev);
            kn_tensor *y = kn_rfft(x, -1, 1, KN_FFT_NORM_BACKWARD);
            double *got = host_c(y), e = 0;
            for (int r = 0; r < 3; r++)
                for (int64_t k = 0; k < bins; k++)
                    for (int p = 0; p < 2; p++)
                        e = fmax(e, fabs(got[2 * (r * bins + k) + p] - ref[2 * (r * n + k) + p]));
            double tol = tol_of(rt, n) * (1 + sqrt((double)n));
            CHECK(same_shape(y, KN_SHAPE(3, bins)) && kn_dtype_of(y) == kn_dtype_complex(rt) && e < tol,
                  "%s rfft n %lld %s: error %g", kn_device_str(dev), (long long)n, kn_dtype_name(rt), e);
            /* irfft(rfft(x), n) == x, for even and odd n; and irfft with its default length. */
            kn_tensor *back = kn_irfft(y, n, -1, KN_FFT_NORM_BACKWARD);
            double *bv = host_r(back);
            CHECK(same_shape(back, KN_SHAPE(3, n)) && rel_err(bv, v, 3 * n) < tol, "%s irfft(rfft) n %lld",
                  kn_device_str(dev), (long long)n);
            kn_tensor *dflt = kn_irfft(y, -1, 1, KN_FFT_NORM_ORTHO);
            CHECK(n == 1 ? !dflt : same_shape(dflt, KN_SHAPE(3, 2 * (bins - 1))), "%s irfft default length",
                  kn_device_str(dev));
            kn_error_clear();
            free(got), free(bv), free(v), free(vc), free(ref);
        }
    }
    /* irfft ignores the imaginary parts of the zero and Nyquist bins, as numpy. */
    double spec[10] = {1, 5, 2, -1, 0.5, 0.25, -3, 2, 4, 7}; /* 5 bins */
    kn_tensor *X = kn_to(kn_from_data(spec, KN_C128, KN_SHAPE(5), KN_CPU), dev);
    kn_tensor *xe = kn_irfft(X, 8, 0, KN_FFT_NORM_BACKWARD);
    double *xv = host_r(xe), e = 0;
    for (int t = 0; t < 8; t++) {
        double acc = spec[0] + spec[8] * (t % 2 ? -1 : 1);
        for (int k = 1; k < 4; k++) {
            double a = 2 * PI * k * t / 8;
            acc += 2 * (spec[2 * k] * cos(a) - spec[2 * k + 1] * sin(a));
        }
        e = fmax(e, fabs(xv[t] - acc / 8));
    }
    CHECK(e < 1e-14, "%s irfft Hermitian reconstruction: error %g", kn_device_str(dev), e);
    free(xv);
    kn_scope_end(s);
}

static void test_round_trips(kn_device dev) {
    kn_scope s = kn_scope_begin();
    uint64_t st = 99;
    int64_t n = is_cpu(dev) ? 1009 : 97;
    double *v = rand_pairs(4 * n, &st);
    kn_tensor *z = kn_to(kn_from_data(v, KN_C128, KN_SHAPE(4, n), KN_CPU), dev);
    for (int norm = 0; norm < 3; norm++) {
        kn_tensor *back = kn_ifft(kn_fft(z, -1, -1, (kn_fft_norm)norm), -1, -1, (kn_fft_norm)norm);
        double *b = host_c(back);
        CHECK(rel_err(b, v, 8 * n) < 1e-12, "%s ifft(fft(x)) == x, norm %d", kn_device_str(dev), norm);
        free(b);
    }
    /* Parseval: sum |x|^2 = sum |X|^2 / n (ortho: equal). */
    kn_tensor *X = kn_fft(z, -1, 1, KN_FFT_NORM_ORTHO);
    double *xv = host_c(X), ex = 0, eX = 0;
    for (int64_t i = 0; i < 8 * n; i++) ex += v[i] * v[i], eX += xv[i] * xv[i];
    CHECK(fabs(ex - eX) < 1e-10 * ex, "%s Parseval: %.15g vs %.15g", kn_device_str(dev), ex, eX);
    free(xv);
    /* 2-D: fft2 is the two 1-D transforms, ifft2 undoes it; rfft2/irfft2 likewise. */
    kn_tensor *z3 = kn_reshape(z, KN_SHAPE(2, 2, n));
    kn_tensor *f2 = kn_fft2(z3, NULL, NULL, KN_FFT_NORM_BACKWARD);
    kn_tensor *f11 = kn_fft(kn_fft(z3, -1, 2, KN_FFT_NORM_BACKWARD), -1, 1, KN_FFT_NORM_BACKWARD);
    double *a = host_c(f2), *b = host_c(f11);
    CHECK(rel_err(a, b, 8 * n) < 1e-13, "%s fft2 = fft . fft", kn_device_str(dev));
    free(a), free(b);
    double *i2 = host_c(kn_ifft2(f2, NULL, (int[]){-2, -1}, KN_FFT_NORM_BACKWARD));
    CHECK(rel_err(i2, v, 8 * n) < 1e-12, "%s ifft2(fft2(x)) == x", kn_device_str(dev));
    free(i2);
    kn_tensor *xr = kn_real(z3);
    kn_tensor *r2 = kn_rfft2(xr, NULL, (int[]){0, 2}, KN_FFT_NORM_ORTHO);
    CHECK(same_shape(r2, KN_SHAPE(2, 2, n / 2 + 1)), "%s rfft2 shape", kn_device_str(dev));
    kn_tensor *back2 = kn_irfft2(r2, (int64_t[]){-1, n}, (int[]){0, 2}, KN_FFT_NORM_ORTHO);
    double *bx = host_r(back2), *rx = host_r(xr);
    CHECK(same_shape(back2, KN_SHAPE(2, 2, n)) && rel_err(bx, rx, 4 * n) < 1e-12, "%s irfft2(rfft2(x)) == x",
          kn_device_str(dev));
    free(bx), free(rx), free(v);
    kn_scope_end(s);
}

/* ---- gradients: finite differences through the real view ------------------------------------------ */
typedef struct {
    int which; /* 0 fft, 1 ifft, 2 rfft, 3 irfft, 4 fft2, 5 rfft2, 6 irfft2 */
    int64_t n;
    int dim;
    kn_fft_norm norm;
} gcase;

static kn_tensor *gfn(kn_tensor **in, void *ctx) {
    const gcase *g = ctx;
    kn_tensor *x = in[0];
    kn_tensor *z = kn_view_as_complex(kn_contiguous(x)); /* x [..., 2] as complex */
    switch (g->which) {
    case 0: return kn_view_as_real(kn_fft(z, g->n, g->dim, g->norm));
    case 1: return kn_view_as_real(kn_ifft(z, g->n, g->dim, g->norm));
    case 2: return kn_view_as_real(kn_rfft(x, g->n, g->dim, g->norm)); /* x itself is the real input */
    case 3: return kn_irfft(z, g->n, g->dim, g->norm);
    case 4: return kn_view_as_real(kn_fft2(z, NULL, NULL, g->norm));
    case 5: return kn_view_as_real(kn_rfft2(x, NULL, (int[]){0, 1}, g->norm));
    default: return kn_irfft2(z, (int64_t[]){-1, g->n}, (int[]){0, 1}, g->norm);
    }
}

static void test_gradients(kn_device dev) {
    kn_scope s = kn_scope_begin();
    static const gcase cases[] = {
        {0, -1, 0, KN_FFT_NORM_BACKWARD}, {0, 3, 1, KN_FFT_NORM_ORTHO},     {0, 7, 0, KN_FFT_NORM_FORWARD},
        {1, -1, 1, KN_FFT_NORM_BACKWARD}, {1, 6, 0, KN_FFT_NORM_ORTHO},     {2, -1, 0, KN_FFT_NORM_BACKWARD},
        {2, 5, 1, KN_FFT_NORM_ORTHO},     {2, 8, 0, KN_FFT_NORM_FORWARD},   {3, -1, 0, KN_FFT_NORM_BACKWARD},
        {3, 7, 0, KN_FFT_NORM_ORTHO},     {3, 4, 1, KN_FFT_NORM_FORWARD},   {3, 9, 0, KN_FFT_NORM_BACKWARD},
        {4, -1, 0, KN_FFT_NORM_ORTHO},    {5, -1, 0, KN_FFT_NORM_BACKWARD}, {6, 6, 0, KN_FFT_NORM_BACKWARD},
        {6, 5, 0, KN_FFT_NORM_ORTHO},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const gcase *g = &cases[k];
        /* complex cases: [5, 4] complex as [5, 4, 2]; real (rfft): [5, 4, 2] real with dims 0, 1. */
        kn_tensor *x = kn_requires_grad_(kn_randn(KN_SHAPE(5, 4, 2), KN_F64, dev, NULL), true);
        double e = kn_gradcheck(gfn, 1, &x, (void *)g, 1e-6);
        CHECK(e >= 0 && e < 1e-6, "%s gradcheck %d (n %lld, dim %d, norm %d): %g", kn_device_str(dev), g->which,
              (long long)g->n, g->dim, (int)g->norm, e);
    }
    kn_scope_end(s);
}

/* ---- errors --------------------------------------------------------------------------------------- */
static void test_errors(kn_device dev) {
    kn_scope s = kn_scope_begin();
    kn_tensor *z = kn_zeros(KN_SHAPE(3, 4), KN_C64, dev), *r = kn_zeros(KN_SHAPE(3, 4), KN_F32, dev);
    kn_tensor *res;
#define FAILS(expr, needle)                                                                                \
    kn_error_clear();                                                                                      \
    res = (expr);                                                                                          \
    CHECK(!res && strstr(kn_error(), needle), "%s: %s fails with \"%s\"", kn_device_str(dev), #expr, needle)
    FAILS(kn_fft(z, 0, -1, KN_FFT_NORM_BACKWARD), "fft: the transform length must be >= 1");
    FAILS(kn_fft(z, -2, -1, KN_FFT_NORM_BACKWARD), "got -2");
    FAILS(kn_ifft(z, -1, 2, KN_FFT_NORM_BACKWARD), "ifft");
    FAILS(kn_fft(z, -1, -3, KN_FFT_NORM_BACKWARD), "fft");
    FAILS(kn_fft(z, -1, 0, (kn_fft_norm)7), "fft: norm must be");
    FAILS(kn_rfft(r, 0, 0, KN_FFT_NORM_BACKWARD), "rfft: the transform length");
    FAILS(kn_irfft(r, 0, 0, KN_FFT_NORM_BACKWARD), "irfft: the output length must be >= 1");
    FAILS(kn_irfft(kn_zeros(KN_SHAPE(3, 1), KN_C64, dev), -1, 1, KN_FFT_NORM_BACKWARD), "with 1 bins");
    FAILS(kn_fft(kn_scalar(1, KN_F32, dev), -1, 0, KN_FFT_NORM_BACKWARD), "0-d");
    FAILS(kn_fft(kn_zeros(KN_SHAPE(3, 0), KN_C64, dev), -1, 1, KN_FFT_NORM_BACKWARD), "got 0");
    FAILS(kn_fft2(z, NULL, (int[]){1, -1}, KN_FFT_NORM_BACKWARD), "fft2: the two dims must differ");
    FAILS(kn_rfft2(kn_zeros(KN_SHAPE(3), KN_F32, dev), NULL, NULL, KN_FFT_NORM_BACKWARD), "at least 2 dims");
    FAILS(kn_fft(NULL, -1, 0, KN_FFT_NORM_BACKWARD), "fft");
    /* The empty tensor along another dim transforms to an empty result. */
    kn_tensor *e = kn_fft(kn_zeros(KN_SHAPE(0, 4), KN_C64, dev), -1, 1, KN_FFT_NORM_BACKWARD);
    CHECK(same_shape(e, KN_SHAPE(0, 4)), "%s empty batch", kn_device_str(dev));
    kn_tensor *re = kn_rfft(kn_zeros(KN_SHAPE(0, 6), KN_F64, dev), -1, 1, KN_FFT_NORM_BACKWARD);
    CHECK(same_shape(re, KN_SHAPE(0, 4)) && kn_dtype_of(re) == KN_C128, "%s empty rfft", kn_device_str(dev));
#undef FAILS
    kn_error_clear();
    kn_scope_end(s);
}

int main(void) {
    n_devs = kt_devices(devs, 16);
    test_dtypes();
    for (int d = 0; d < n_devs; d++) {
        kn_device dev = devs[d];
        printf("device %s\n", kn_device_str(dev));
        fflush(stdout);
        test_complex_tensors(dev);
        test_complex_refused(dev);
        test_c2c(dev);
        test_real(dev);
        check_real_dim0(dev, KN_F64, 12, 5);
        check_real_dim0(dev, KN_F32, 9, 11);
        if (is_cpu(dev)) {
            check_real_dim0(dev, KN_F64, 1000, 9);
            check_real_dim0(dev, KN_F32, 97, 20);
            check_long(dev, (int64_t)1 << 17);          /* radix 4 and 2 passes, split by threads */
            check_long(dev, (int64_t)3 * 5 * 7 << 12);  /* 3, 5, 7 passes */
            check_long(dev, (int64_t)2 * 65537);        /* Bluestein through a long convolution */
        }
        test_round_trips(dev);
        test_errors(dev);
        if (is_cpu(dev) || d == n_devs - 1) test_gradients(dev);
    }
    CHECK(kn_live_tensors() == 0, "no tensor leaked: %lld live", (long long)kn_live_tensors());
    return kt_finish("fft");
}
