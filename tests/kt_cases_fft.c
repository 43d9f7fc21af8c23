/* The backend harness's cases for the FFT ops (include/kiln/fft.h). Complex
 * inputs are built from two real inputs (kn_complex), complex results are
 * compared through their real views. In the float64 reference run each
 * builder computes its result with a direct DFT on the host (kt_ctx.ref),
 * code that shares nothing with the library; with gradients on, the
 * reference is the op in float64 and the finite differences of GRADCHECK.
 * p[0] the transform (below), p[1] n (-1: the input's), p[2] the dim,
 * p[3] norm * 10 + (1: the complex input transposed, a strided operand). */
#include "kt_cases.h"
#include "kiln/fft.h"

#define B(name) static int name(const kt_ctx *k, kn_tensor **x, kn_tensor **o)
#define P(i) (k->c->p[i])

enum { FFT, IFFT, RFFT, IRFFT, FFT2, IFFT2, RFFT2, IRFFT2 };

static bool naive(const kt_ctx *k, kn_tensor **x, int n) {
    if (!k->ref) return false;
    for (int i = 0; i < n; i++)
        if (x[i] && kn_requires_grad(x[i])) return false;
    return true;
}

/* ---- the direct reference on [A, B] complex host arrays ------------------------------------------ */
typedef struct {
    int64_t a, b; /* shape */
    double *v;    /* 2 a b doubles: (re, im) row-major */
} cmat;

static cmat cm_new(int64_t a, int64_t b) {
    return (cmat){a, b, calloc((size_t)(2 * a * b + 2), sizeof(double))};
}

/* The DFT along dim (0 or 1) of m, cropped / zero-padded to n, sign, scale. */
static cmat cm_dft(cmat m, int dim, int64_t n, int sign, double scale) {
    int64_t len = dim ? m.b : m.a, other = dim ? m.a : m.b, use = len < n ? len : n;
    cmat r = dim ? cm_new(m.a, n) : cm_new(n, m.b);
    const double pi = 3.14159265358979323846;
    for (int64_t o = 0; o < other; o++)
        for (int64_t kk = 0; kk < n; kk++) {
            double re = 0, im = 0;
            for (int64_t j = 0; j < use; j++) {
                double ang = sign * 2 * pi * (double)((j * kk) % n) / (double)n;
                const double *z = m.v + 2 * (dim ? o * m.b + j : j * m.b + o);
                re += z[0] * cos(ang) - z[1] * sin(ang);
                im += z[0] * sin(ang) + z[1] * cos(ang);
            }
            double *y = r.v + 2 * (dim ? o * n + kk : kk * m.b + o);
            y[0] = re * scale, y[1] = im * scale;
        }
    free(m.v);
    return r;
}

/* The first `keep` entries along dim. */
static cmat cm_crop(cmat m, int dim, int64_t keep) {
    cmat r = dim ? cm_new(m.a, keep) : cm_new(keep, m.b);
    for (int64_t i = 0; i < r.a; i++)
        for (int64_t j = 0; j < r.b; j++)
            for (int p = 0; p < 2; p++) r.v[2 * (i * r.b + j) + p] = m.v[2 * (i * m.b + j) + p];
    free(m.v);
    return r;
}

/* irfft along dim to n: bins cropped/padded to n/2 + 1, the Hermitian rest
 * filled in, the zero (and even-n Nyquist) bins' imaginary parts dropped,
 * the inverse DFT's real part (imaginary parts zero). */
static cmat cm_irfft(cmat m, int dim, int64_t n, double scale) {
    int64_t bins = n / 2 + 1, have = dim ? m.b : m.a, other = dim ? m.a : m.b;
    cmat full = dim ? cm_new(m.a, n) : cm_new(n, m.b);
    for (int64_t o = 0; o < other; o++)
        for (int64_t kk = 0; kk < n; kk++) {
            int64_t src = kk < bins ? kk : n - kk;
            double sg = kk < bins ? 1 : -1;
            double *y = full.v + 2 * (dim ? o * n + kk : kk * m.b + o);
            if (src >= have) continue;
            const double *z = m.v + 2 * (dim ? o * m.b + src : src * m.b + o);
            y[0] = z[0];
            y[1] = (src == 0 || (n % 2 == 0 && src == n / 2)) ? 0 : sg * z[1];
        }
    free(m.v);
    cmat r = cm_dft(full, dim, n, 1, scale);
    for (int64_t i = 0; i < r.a * r.b; i++) r.v[2 * i + 1] = 0;
    return r;
}

static double scale_of(int norm, int64_t n, bool inverse) {
    return norm == 1 ? 1 / sqrt((double)n) : (norm == 2) != inverse ? 1 / (double)n : 1;
}

static cmat cm_from(kn_tensor *z) {
    cmat m = cm_new(kn_shape(z)[0], kn_shape(z)[1]);
    if (kn_to_host(kn_dtype_is_complex(kn_dtype_of(z)) ? z : kn_complex(z, kn_zeros_like(z)), m.v, KN_C128) != KN_OK)
        m.v[0] = NAN;
    return m;
}

/* The pairs [A, B, 2] (complex) or the real parts [A, B]. */
static kn_tensor *cm_tensor(cmat m, bool real) {
    kn_tensor *t = kn_from_data(m.v, KN_C128, KN_SHAPE(m.a, m.b), KN_CPU);
    free(m.v);
    return real ? kn_contiguous(kn_real(t)) : kn_view_as_real(t);
}

static int64_t len_or(int64_t n, int64_t have) { return n == -1 ? have : n; }

/* ---- the builder ------------------------------------------------------------------------------------ */
B(b_fft) {
    int kind = P(0), norm = P(3) / 10, dim = P(2);
    int64_t n = P(1);
    bool real_in = kind == RFFT || kind == RFFT2;
    kn_tensor *in = real_in ? x[0] : kn_complex(x[0], x[1]);
    if (P(3) % 10) in = kn_transpose(in, 0, 1);
    int d = dim < 0 ? dim + 2 : dim;
    kn_fft_norm nm = (kn_fft_norm)norm;
    int64_t s2[2] = {-1, n};
    if (naive(k, x, real_in ? 1 : 2)) {
        cmat m = cm_from(in);
        int64_t la = m.a, lb = m.b;
        switch (kind) {
        case FFT: case IFFT: {
            int64_t L = len_or(n, d ? lb : la);
            o[0] = cm_tensor(cm_dft(m, d, L, kind == IFFT ? 1 : -1, scale_of(norm, L, kind == IFFT)), false);
            break;
        }
        case RFFT: {
            int64_t L = len_or(n, d ? lb : la);
            o[0] = cm_tensor(cm_crop(cm_dft(m, d, L, -1, scale_of(norm, L, false)), d, L / 2 + 1), false);
            break;
        }
        case IRFFT: {
            int64_t L = n == -1 ? 2 * ((d ? lb : la) - 1) : n;
            o[0] = cm_tensor(cm_irfft(m, d, L, scale_of(norm, L, true)), true);
            break;
        }
        case FFT2: case IFFT2: {
            bool inv = kind == IFFT2;
            m = cm_dft(m, 1, len_or(n, lb), inv ? 1 : -1, scale_of(norm, len_or(n, lb), inv));
            o[0] = cm_tensor(cm_dft(m, 0, la, inv ? 1 : -1, scale_of(norm, la, inv)), false);
            break;
        }
        case RFFT2: {
            int64_t L = len_or(n, lb);
            m = cm_crop(cm_dft(m, 1, L, -1, scale_of(norm, L, false)), 1, L / 2 + 1);
            o[0] = cm_tensor(cm_dft(m, 0, la, -1, scale_of(norm, la, false)), false);
            break;
        }
        default: { /* IRFFT2 */
            int64_t L = n == -1 ? 2 * (lb - 1) : n;
            m = cm_dft(m, 0, la, 1, scale_of(norm, la, true));
            o[0] = cm_tensor(cm_irfft(m, 1, L, scale_of(norm, L, true)), true);
        }
        }
        return 1;
    }
    switch (kind) {
    case FFT: o[0] = kn_view_as_real(kn_fft(in, n, dim, nm)); break;
    case IFFT: o[0] = kn_view_as_real(kn_ifft(in, n, dim, nm)); break;
    case RFFT: o[0] = kn_view_as_real(kn_rfft(in, n, dim, nm)); break;
    case IRFFT: o[0] = kn_irfft(in, n, dim, nm); break;
    case FFT2: o[0] = kn_view_as_real(kn_fft2(in, s2, NULL, nm)); break;
    case IFFT2: o[0] = kn_view_as_real(kn_ifft2(in, s2, NULL, nm)); break;
    case RFFT2: o[0] = kn_view_as_real(kn_rfft2(in, s2, NULL, nm)); break;
    default: o[0] = kn_irfft2(in, s2, NULL, nm);
    }
    return 1;
}

/* fft or ifft (p[0] 1) along dim 1 of complex [A, n, B]: batch dims on both
 * sides of the transform, which a device may loop over or copy around;
 * p[1] > 0: the input is [1, n, B] expanded to p[1] rows (a zero stride).
 * The reference is a direct DFT on the host. */
B(b_fft_mid) {
    kn_tensor *z = kn_complex(x[0], x[1]);
    if (P(1) > 0) z = kn_expand(z, KN_SHAPE(P(1), -1, -1));
    bool inv = P(0) != 0;
    if (naive(k, x, 2)) {
        const int64_t *s = kn_shape(z);
        int64_t A = s[0], n = s[1], C = s[2];
        size_t len = (size_t)(2 * A * n * C + 2);
        double *v = calloc(len, sizeof *v), *r = calloc(len, sizeof *r);
        if (v && r && kn_to_host(z, v, KN_C128) != KN_OK) v[0] = NAN;
        const double pi = 3.14159265358979323846;
        for (int64_t a = 0; v && r && a < A; a++)
            for (int64_t kk = 0; kk < n; kk++)
                for (int64_t c = 0; c < C; c++) {
                    double re = 0, im = 0;
                    for (int64_t j = 0; j < n; j++) {
                        double ang = (inv ? 2 : -2) * pi * (double)((j * kk) % n) / (double)n;
                        const double *q = v + 2 * ((a * n + j) * C + c);
                        re += q[0] * cos(ang) - q[1] * sin(ang);
                        im += q[0] * sin(ang) + q[1] * cos(ang);
                    }
                    double *y = r + 2 * ((a * n + kk) * C + c), sc = inv ? 1 / (double)n : 1;
                    y[0] = re * sc, y[1] = im * sc;
                }
        o[0] = v && r ? kn_view_as_real(kn_from_data(r, KN_C128, KN_SHAPE(A, n, C), KN_CPU)) : NULL;
        free(v);
        free(r);
        return 1;
    }
    o[0] = kn_view_as_real(inv ? kn_ifft(z, -1, 1, KN_FFT_NORM_BACKWARD) : kn_fft(z, -1, 1, KN_FFT_NORM_BACKWARD));
    return 1;
}

/* rfft (p[0] RFFT) or irfft (p[0] IRFFT, to length p[1]) along dim 1 of
 * [A, m, C], default norm: batch dims on both sides of the transform,
 * which a device may loop over or copy around. The reference is a direct
 * DFT on the host (irfft: the Hermitian extension, the imaginary parts of
 * bin 0 and the even-n Nyquist bin dropped). */
B(b_rfft_mid) {
    bool inv = P(0) == IRFFT;
    kn_tensor *z = inv ? kn_complex(x[0], x[1]) : x[0];
    if (naive(k, x, inv ? 2 : 1)) {
        const int64_t *s = kn_shape(z);
        int64_t A = s[0], m = s[1], C = s[2], n = inv ? P(1) : m, bins = n / 2 + 1, olen = inv ? n : bins;
        double *v = calloc((size_t)(2 * A * m * C + 2), sizeof *v), *r = calloc((size_t)(2 * A * olen * C + 2), sizeof *r);
        if (v && r && kn_to_host(inv ? z : kn_complex(z, kn_zeros_like(z)), v, KN_C128) != KN_OK) v[0] = NAN;
        const double pi = 3.14159265358979323846;
        for (int64_t a = 0; v && r && a < A; a++)
            for (int64_t q0 = 0; q0 < olen; q0++)
                for (int64_t c = 0; c < C; c++) {
                    double re = 0, im = 0;
                    for (int64_t j = 0; j < n; j++) {
                        int64_t src = inv ? (j < bins ? j : n - j) : j;
                        if (src >= m) continue; /* irfft: bins padded with zeros */
                        const double *q = v + 2 * ((a * m + src) * C + c);
                        double qr = q[0], qi = q[1];
                        if (inv && (src == 0 || (n % 2 == 0 && src == n / 2))) qi = 0;
                        if (inv && j >= bins) qi = -qi;
                        double ang = (inv ? 2 : -2) * pi * (double)((j * q0) % n) / (double)n;
                        re += qr * cos(ang) - qi * sin(ang);
                        im += qr * sin(ang) + qi * cos(ang);
                    }
                    if (inv) r[(a * olen + q0) * C + c] = re / (double)n;
                    else r[2 * ((a * olen + q0) * C + c)] = re, r[2 * ((a * olen + q0) * C + c) + 1] = im;
                }
        o[0] = !v || !r ? NULL
               : inv    ? kn_from_data(r, KN_F64, KN_SHAPE(A, olen, C), KN_CPU)
                        : kn_view_as_real(kn_from_data(r, KN_C128, KN_SHAPE(A, olen, C), KN_CPU));
        free(v);
        free(r);
        return 1;
    }
    o[0] = inv ? kn_irfft(z, P(1), 1, KN_FFT_NORM_BACKWARD) : kn_view_as_real(kn_rfft(z, -1, 1, KN_FFT_NORM_BACKWARD));
    return 1;
}

/* A complex operand given to an op without complex support. */
B(b_complex_mul) {
    (void)k;
    kn_tensor *z = kn_complex(x[0], x[1]);
    o[0] = kn_view_as_real(kn_mul(z, z));
    return 1;
}

/* ---- the cases ---------------------------------------------------------------------------------- */
#define CASE(name_, fn_, dts_, lay_, flags_, ...) \
    {.name = name_, .build = fn_, .dtypes = dts_, .layouts = lay_, .flags = flags_, __VA_ARGS__}
#define GC (GRAD | GRADCHECK)
#define C2(...) IN(D(-1, 1, __VA_ARGS__), D(-1, 1, __VA_ARGS__))

const kt_case kt_fft_cases[] = {
    CASE("fft 16", b_fft, F32_64, L_ALL, GRAD, C2(3, 16), .p = {FFT, -1, 1, 0}),
    CASE("fft 12 (radix 4 x 3), ortho", b_fft, F32_64, L_ALL, GRAD, C2(4, 12), .p = {FFT, -1, -1, 10}),
    CASE("fft 7 (prime), forward norm, dim 0", b_fft, F32_64, L_ALL, GRAD, C2(7, 3), .p = {FFT, -1, 0, 20}),
    CASE("fft 97 (Bluestein)", b_fft, F32_64, L_CTS, GRAD, C2(2, 97), .p = {FFT, -1, 1, 0}, .tol = 4),
    CASE("fft 131 (a prime above 127: Bluestein on cuFFT too)", b_fft, F32_64, L_CTS, GRAD, C2(2, 131),
         .p = {FFT, -1, 1, 0}, .tol = 4),
    CASE("fft of length 1", b_fft, F32_64, L_CTS, GRAD, C2(3, 1), .p = {FFT, -1, 1, 0}),
    CASE("fft along the middle of [3, 8, 5]", b_fft_mid, F32_64, L_CTS, GRAD, C2(3, 8, 5), .p = {0, 0}),
    CASE("ifft along the middle of [12, 6, 10] (many outer lines)", b_fft_mid, F32_64, L_CTS, GRAD, C2(12, 6, 10),
         .p = {1, 0}),
    /* No gradient: expand's backward sums, which complex tensors lack. */
    CASE("fft of an expanded input [1 -> 4, 8, 5]", b_fft_mid, F32_64, L_CTS, 0, C2(1, 8, 5), .p = {0, 4}),
    CASE("fft 30 of a transposed input", b_fft, F32_64, L_CTS, GRAD, C2(30, 5), .p = {FFT, -1, 1, 1}),
    CASE("fft padded 10 -> 16, cropped", b_fft, F32_64, L_ALL, GRAD, C2(3, 10), .p = {FFT, 16, 1, 0}),
    CASE("fft cropped 10 -> 6", b_fft, F32_64, L_ALL, GRAD, C2(3, 10), .p = {FFT, 6, 1, 10}),
    CASE("ifft 15 (radix 3 x 5)", b_fft, F32_64, L_ALL, GRAD, C2(2, 15), .p = {IFFT, -1, 1, 0}),
    CASE("ifft 25, ortho, transposed", b_fft, F32_64, L_CTS, GRAD, C2(25, 3), .p = {IFFT, -1, 0, 11}),
    /* ---- lengths for a device's own kernels (Vulkan: one workgroup's shared memory up to 4096
     * points in float32, 2048 in float64 on lavapipe; longer lengths a dispatch per pass).
     * OWN_FFT: above 4096 points the composite's DFT matrix (4 n^2 entries) would not fit, so a
     * device without an FFT kernel of its own skips those cases. ---- */
    CASE("fft 2", b_fft, F32_64, L_ALL, GRAD, C2(3, 2), .p = {FFT, -1, 1, 0}),
    CASE("ifft 8, ortho", b_fft, F32_64, L_CTS, GRAD, C2(5, 8), .p = {IFFT, -1, 1, 10}),
    CASE("fft 64 along dim 0", b_fft, F32_64, L_CTS, GRAD, C2(64, 3), .p = {FFT, -1, 0, 0}),
    CASE("fft 1024", b_fft, F32_64, L_CTS, GRAD, C2(3, 1024), .p = {FFT, -1, 1, 0}),
    CASE("ifft 1000 (radix 4, 2, 5), forward norm", b_fft, F32_64, L_C, GRAD, C2(2, 1000), .p = {IFFT, -1, 1, 20}),
    CASE("fft 243 (3^5) of a transposed input", b_fft, F32_64, L_C, GRAD, C2(243, 2), .p = {FFT, -1, 1, 1}),
    CASE("fft 4096", b_fft, F32_64, L_C, GRAD, C2(2, 4096), .p = {FFT, -1, 1, 0}),
    CASE("ifft 4096 of a transposed input", b_fft, F32_64, L_C, 0, C2(4096, 2), .p = {IFFT, -1, 1, 1}),
    CASE("fft along the middle of [4, 1024, 3]", b_fft_mid, F32_64, L_C, GRAD, C2(4, 1024, 3), .p = {0, 0}),
    /* A direct DFT of 2^15 points a line is too slow for a reference: the CPU's result is the one. */
    CASE("fft 2^15", b_fft, F32_64, L_C, GRAD | NO_REF | OWN_FFT, C2(2, 32768), .p = {FFT, -1, 1, 0}),
    /* Unnormalised, each output sums 2^16 terms: the absolute rounding error,
     * which the check scales by 1 + |want|, grows like sqrt(n) log n (cuFFT
     * against the CPU: 1.1e-4 on an H100). */
    CASE("fft 2^16, a batch of 3", b_fft, F32_64, L_C, GRAD | NO_REF | OWN_FFT, C2(3, 65536), .p = {FFT, -1, 1, 0},
         .tol = 4),
    CASE("ifft 2^15 of a transposed input, ortho", b_fft, F32_64, L_C, GRAD | NO_REF | OWN_FFT, C2(32768, 2),
         .p = {IFFT, -1, 1, 11}),
    CASE("fft 2^15 along dim 0", b_fft, F32_64, L_C, GRAD | NO_REF | OWN_FFT, C2(32768, 3), .p = {FFT, -1, 0, 0}),
    CASE("fft 45000 (2^3 3^2 5^4: passes of every radix)", b_fft, F32_64, L_C, NO_REF | OWN_FFT, C2(2, 45000),
         .p = {FFT, -1, 1, 0}),
    CASE("ifft 1031 (prime: Bluestein over 2048 points) of a transposed input, ortho", b_fft, F32_64, L_C, GRAD,
         C2(1031, 3), .p = {IFFT, -1, 1, 11}, .tol = 4),
    CASE("fft 4099 (prime: Bluestein over 2^13 points)", b_fft, F32_64, L_C, GRAD | OWN_FFT, C2(2, 4099),
         .p = {FFT, -1, 1, 0}, .tol = 4),
    CASE("fft 40009 (prime: Bluestein over 2^17 points) along dim 0", b_fft, F32_64, L_C, GRAD | NO_REF | OWN_FFT,
         C2(40009, 2), .p = {FFT, -1, 0, 0}, .tol = 4),
    CASE("rfft 2^16 (the FFT op of 2^16 points inside)", b_fft, F32_64, L_C, NO_REF | OWN_FFT, IN(D(-1, 1, 2, 65536)),
         .p = {RFFT, -1, 1, 0}),
    CASE("rfft 16", b_fft, F32_64, L_ALL, GRAD, IN(D(-1, 1, 3, 16)), .p = {RFFT, -1, 1, 0}),
    CASE("rfft 9 (odd), forward norm", b_fft, F32_64, L_ALL, GRAD, IN(D(-1, 1, 9, 4)), .p = {RFFT, -1, 0, 20}),
    CASE("rfft padded 5 -> 8", b_fft, F32_64, L_ALL, GRAD, IN(D(-1, 1, 3, 5)), .p = {RFFT, 8, 1, 0}),
    CASE("irfft 5 bins -> 8", b_fft, F32_64, L_ALL, GRAD, C2(3, 5), .p = {IRFFT, -1, 1, 0}),
    CASE("irfft 5 bins -> 9 (odd), ortho", b_fft, F32_64, L_ALL, GRAD, C2(3, 5), .p = {IRFFT, 9, 1, 10}),
    CASE("irfft 4 bins -> 11 (padded), dim 0", b_fft, F32_64, L_ALL, GRAD, C2(4, 3), .p = {IRFFT, 11, 0, 0}),
    CASE("rfft 97 (odd prime: Bluestein)", b_fft, F32_64, L_CTS, GRAD, IN(D(-1, 1, 2, 97)), .p = {RFFT, -1, 1, 0},
         .tol = 4),
    CASE("rfft 30 along dim 0 (lines in blocks)", b_fft, F32_64, L_ALL, GRAD, IN(D(-1, 1, 30, 5)),
         .p = {RFFT, -1, 0, 10}),
    CASE("rfft 14 of a transposed input", b_fft, F32_64, L_CTS, GRAD, IN(D(-1, 1, 14, 3)), .p = {RFFT, -1, 1, 1}),
    CASE("irfft 6 bins -> 10 along dim 0", b_fft, F32_64, L_ALL, GRAD, C2(6, 4), .p = {IRFFT, 10, 0, 20}),
    CASE("irfft 68 bins -> 134 (Bluestein half)", b_fft, F32_64, L_CTS, GRAD, C2(2, 68), .p = {IRFFT, -1, 1, 0},
         .tol = 4),
    CASE("irfft 4 bins of a transposed input -> 7", b_fft, F32_64, L_CTS, GRAD, C2(4, 3), .p = {IRFFT, 7, 0, 1}),
    CASE("rfft of length 1", b_fft, F32_64, L_CTS, GRAD, IN(D(-1, 1, 3, 1)), .p = {RFFT, -1, 1, 0}),
    CASE("rfft 2 along dim 0, ortho", b_fft, F32_64, L_ALL, GRAD, IN(D(-1, 1, 2, 5)), .p = {RFFT, -1, 0, 10}),
    CASE("irfft 1 bin -> 1", b_fft, F32_64, L_CTS, GRAD, C2(3, 1), .p = {IRFFT, 1, 1, 0}),
    CASE("irfft 2 bins -> 2, ortho", b_fft, F32_64, L_ALL, GRAD, C2(3, 2), .p = {IRFFT, 2, 1, 10}),
    CASE("rfft 8 along the middle of [3, 8, 5]", b_rfft_mid, F32_64, L_CTS, GRAD, IN(D(-1, 1, 3, 8, 5)), .p = {RFFT}),
    CASE("rfft 7 along the middle of [12, 7, 10] (many outer lines)", b_rfft_mid, F32_64, L_CTS, GRAD,
         IN(D(-1, 1, 12, 7, 10)), .p = {RFFT}),
    CASE("irfft 5 bins -> 8 along the middle of [3, 5, 4]", b_rfft_mid, F32_64, L_CTS, GRAD, C2(3, 5, 4),
         .p = {IRFFT, 8}),
    CASE("irfft 4 bins -> 7 along the middle of [12, 4, 10] (many outer lines)", b_rfft_mid, F32_64, L_CTS, GRAD,
         C2(12, 4, 10), .p = {IRFFT, 7}),
    CASE("fft2 6 x 8", b_fft, F32_64, L_ALL, GRAD, C2(6, 8), .p = {FFT2, -1, 0, 0}),
    CASE("ifft2 5 x 4, ortho", b_fft, F32_64, L_ALL, GRAD, C2(5, 4), .p = {IFFT2, -1, 0, 10}),
    CASE("rfft2 6 x 7", b_fft, F32_64, L_ALL, GRAD, IN(D(-1, 1, 6, 7)), .p = {RFFT2, -1, 0, 0}),
    CASE("irfft2 4 x 5 bins -> 4 x 8", b_fft, F32_64, L_ALL, GRAD, C2(4, 5), .p = {IRFFT2, -1, 0, 0}),
    CASE("irfft2 4 x 3 bins -> 4 x 5", b_fft, F32_64, L_ALL, GRAD, C2(4, 3), .p = {IRFFT2, 5, 0, 20}),
    /* ---- gradients by finite differences (the adjoints; the Hermitian halves of rfft/irfft) ---- */
    CASE("fft gradcheck", b_fft, F32_64, L_CTS, GC, C2(2, 6), .p = {FFT, -1, 1, 0}),
    CASE("fft gradcheck padded, ortho", b_fft, F32_64, L_CTS, GC, C2(3, 2), .p = {FFT, 5, 0, 11}),
    CASE("rfft gradcheck", b_fft, F32_64, L_CTS, GC, IN(D(-1, 1, 2, 6)), .p = {RFFT, -1, 1, 0}),
    CASE("rfft gradcheck odd", b_fft, F32_64, L_CTS, GC, IN(D(-1, 1, 2, 5)), .p = {RFFT, -1, 1, 20}),
    CASE("irfft gradcheck even", b_fft, F32_64, L_CTS, GC, C2(2, 4), .p = {IRFFT, -1, 1, 0}),
    CASE("rfft gradcheck dim 0", b_fft, F32_64, L_CTS, GC, IN(D(-1, 1, 6, 3)), .p = {RFFT, -1, 0, 10}),
    CASE("irfft gradcheck dim 0, odd", b_fft, F32_64, L_CTS, GC, C2(3, 2), .p = {IRFFT, 5, 0, 20}),
    CASE("irfft gradcheck odd", b_fft, F32_64, L_CTS, GC, C2(2, 4), .p = {IRFFT, 7, 1, 10}),
    CASE("rfft2 gradcheck", b_fft, F32_64, L_CTS, GC, IN(D(-1, 1, 3, 4)), .p = {RFFT2, -1, 0, 0}),
    CASE("irfft2 gradcheck", b_fft, F32_64, L_CTS, GC, C2(3, 3), .p = {IRFFT2, -1, 0, 0}),
    /* ---- errors: the same message on every device ---- */
    CASE("error: fft n 0", b_fft, BIT(KN_F32), L_C, 0, C2(2, 4), .p = {FFT, 0, 1, 0},
         .err = "fft: the transform length must be >= 1"),
    CASE("error: fft dim out of range", b_fft, BIT(KN_F32), L_C, 0, C2(2, 4), .p = {FFT, -1, 2, 0}, .err = "fft"),
    CASE("error: irfft of one bin", b_fft, BIT(KN_F32), L_C, 0, C2(2, 1), .p = {IRFFT, -1, 1, 0},
         .err = "irfft: the output length must be >= 1"),
    CASE("error: a complex operand to mul", b_complex_mul, BIT(KN_F32), L_C, 0, C2(2, 4),
         .err = "mul: complex64 is not supported"),
};
const int kt_fft_case_count = (int)(sizeof kt_fft_cases / sizeof *kt_fft_cases);
