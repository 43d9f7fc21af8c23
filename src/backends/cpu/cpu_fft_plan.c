/* FFT plans for the CPU kernel (cpu_fft.h): mixed radix for lengths whose
 * prime factors are small, Bluestein's chirp-z for the others, twiddles
 * computed in double. Plans are cached per length, shared by every thread. */
#include "cpu_fft.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

/* Past this prime factor a generic O(p^2) pass costs more than Bluestein's
 * three power-of-two transforms of about 2n. */
#define KN_FFT_MAX_RADIX 61
/* Plans kept at most (the rest are built per call). */
#define KN_FFT_CACHE 64

static const double kn_pi = 3.14159265358979323846264338327950288;

/* exp(-2 pi i num/den) with the angle reduced first: exact symmetry, and
 * sin/cos of small arguments only. */
static kn_cpx root(int64_t num, int64_t den) {
    num %= den;
    if (num < 0) num += den;
    double a = -2 * kn_pi * (double)num / (double)den;
    return (kn_cpx){cos(a), sin(a)};
}

static void factorize(kn_fft_plan *p, int64_t n) {
    p->nf = 0;
    while (n % 4 == 0) p->factors[p->nf++] = 4, n /= 4;
    if (n % 2 == 0) p->factors[p->nf++] = 2, n /= 2;
    for (int64_t f = 3; n > 1; f += 2) {
        if (f * f > n) f = n; /* n is prime */
        while (n % f == 0) p->factors[p->nf++] = (int)(f > INT32_MAX ? INT32_MAX : f), n /= f;
    }
}

static bool small_factors(const kn_fft_plan *p) {
    for (int k = 0; k < p->nf; k++)
        if (p->factors[k] > KN_FFT_MAX_RADIX) return false;
    return true;
}

static void plan_free(kn_fft_plan *p) {
    if (!p) return;
    free(p->tw);
    free(p->chirp);
    free(p->bf);
    free(p->bi);
    plan_free(p->sub);
    free(p);
}

static kn_fft_plan *plan_new(int64_t n);

/* Bluestein: X_k = c_k sum_j (x_j c_j) conj(c_{k-j}), c_j = exp(-pi i j^2/n):
 * a cyclic convolution of length m >= 2n - 1, a power of two. */
static bool bluestein_init(kn_fft_plan *p) {
    int64_t n = p->n, m = 1;
    while (m < 2 * n - 1) m *= 2;
    p->m = m;
    p->sub = plan_new(m);
    p->chirp = malloc((size_t)n * sizeof *p->chirp);
    p->bf = calloc((size_t)m, sizeof *p->bf);
    p->bi = calloc((size_t)m, sizeof *p->bi);
    kn_cpx *b = calloc((size_t)m, sizeof *b), *scratch = malloc((size_t)m * sizeof *scratch);
    bool ok = p->sub && p->chirp && p->bf && p->bi && b && scratch;
    /* j^2 mod 2n keeps the angle small (j^2 itself loses the phase); by the
     * recurrence (j + 1)^2 = j^2 + 2j + 1, exact in 64 bits. */
    for (int64_t j = 0, q = 0; ok && j < n; q = (q + 2 * j + 1) % (2 * n), j++) {
        p->chirp[j] = root(q, 2 * n);
        kn_cpx c = {p->chirp[j].re, -p->chirp[j].im};
        b[j] = c;
        if (j) b[m - j] = c;
    }
    if (ok) {
        kn__fft_exec(p->sub, b, p->bf, false, scratch);
        for (int64_t t = 0; t < m; t++) b[t].im = -b[t].im; /* the inverse's kernel: conj(b) */
        kn__fft_exec(p->sub, b, p->bi, false, scratch);
    }
    free(b);
    free(scratch);
    return ok;
}

static kn_fft_plan *plan_new(int64_t n) {
    kn_fft_plan *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n;
    factorize(p, n);
    if (!small_factors(p)) {
        p->bluestein = true;
        if (!bluestein_init(p)) return plan_free(p), NULL;
        return p;
    }
    p->tw = malloc((size_t)n * sizeof *p->tw);
    if (!p->tw) return plan_free(p), NULL;
    for (int64_t j = 0; j < n; j++) p->tw[j] = root(j, n);
    return p;
}

/* ---- the cache ------------------------------------------------------------------------------- */
static mtx_t cache_lock;
static once_flag cache_once = ONCE_FLAG_INIT;
static kn_fft_plan *cache[KN_FFT_CACHE];
static int cache_n;

static void cache_init(void) { mtx_init(&cache_lock, mtx_plain); }

const kn_fft_plan *kn__fft_plan(int64_t n, bool *owned) {
    call_once(&cache_once, cache_init);
    *owned = false;
    mtx_lock(&cache_lock);
    for (int k = 0; k < cache_n; k++)
        if (cache[k]->n == n) {
            kn_fft_plan *p = cache[k];
            mtx_unlock(&cache_lock);
            return p;
        }
    mtx_unlock(&cache_lock);
    /* Built outside the lock (a long length takes a while); a plan that
     * another thread made meanwhile wins, this one is dropped. */
    kn_fft_plan *p = plan_new(n);
    if (!p) return NULL;
    mtx_lock(&cache_lock);
    for (int k = 0; k < cache_n; k++)
        if (cache[k]->n == n) {
            kn_fft_plan *q = cache[k];
            mtx_unlock(&cache_lock);
            plan_free(p);
            return q;
        }
    if (cache_n < KN_FFT_CACHE) {
        cache[cache_n++] = p;
    } else {
        *owned = true;
    }
    mtx_unlock(&cache_lock);
    return p;
}

void kn__fft_plan_release(const kn_fft_plan *p, bool owned) {
    if (owned) plan_free((kn_fft_plan *)p);
}

size_t kn__fft_scratch_len(const kn_fft_plan *p) { return p->bluestein ? (size_t)(2 * p->m) : 1; }

/* ---- execution --------------------------------------------------------------------------------- */
static inline kn_cpx cmul(kn_cpx a, kn_cpx b) { return (kn_cpx){a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re}; }
static inline kn_cpx twiddle(const kn_fft_plan *p, int64_t idx, bool inv) {
    kn_cpx w = p->tw[idx];
    if (inv) w.im = -w.im;
    return w;
}

/* Decimation in time, out of place: out[0..n) = DFT of in[0], in[is], ...
 * tws = N/n (the plan's length over this level's), factors from fi on. */
static void dit(const kn_fft_plan *p, const kn_cpx *in, int64_t is, kn_cpx *out, int64_t n, int fi, int64_t tws,
                bool inv) {
    if (n == 1) {
        out[0] = in[0];
        return;
    }
    int r = p->factors[fi];
    int64_t m = n / r;
    for (int q = 0; q < r; q++) dit(p, in + q * is, is * r, out + q * m, m, fi + 1, tws * r, inv);
    double sg = inv ? 1 : -1; /* the sign of the exponent */
    for (int64_t k = 0; k < m; k++) {
        kn_cpx t[KN_FFT_MAX_RADIX + 1];
        t[0] = out[k];
        for (int q = 1; q < r; q++) t[q] = cmul(out[q * m + k], twiddle(p, q * k * tws, inv));
        switch (r) {
        case 2:
            out[k] = (kn_cpx){t[0].re + t[1].re, t[0].im + t[1].im};
            out[m + k] = (kn_cpx){t[0].re - t[1].re, t[0].im - t[1].im};
            break;
        case 3: {
            /* w = exp(sg 2 pi i/3) = -1/2 + sg i sqrt(3)/2 */
            const double h = 0.86602540378443864676372317075294;
            kn_cpx s = {t[1].re + t[2].re, t[1].im + t[2].im}, d = {t[1].re - t[2].re, t[1].im - t[2].im};
            kn_cpx c = {t[0].re - 0.5 * s.re, t[0].im - 0.5 * s.im};
            kn_cpx id = {-sg * h * d.im, sg * h * d.re}; /* sg i h d */
            out[k] = (kn_cpx){t[0].re + s.re, t[0].im + s.im};
            out[m + k] = (kn_cpx){c.re + id.re, c.im + id.im};
            out[2 * m + k] = (kn_cpx){c.re - id.re, c.im - id.im};
            break;
        }
        case 4: {
            kn_cpx a = {t[0].re + t[2].re, t[0].im + t[2].im}, b = {t[0].re - t[2].re, t[0].im - t[2].im};
            kn_cpx c = {t[1].re + t[3].re, t[1].im + t[3].im}, d = {t[1].re - t[3].re, t[1].im - t[3].im};
            kn_cpx wd = {-sg * d.im, sg * d.re}; /* (sg i) d */
            out[k] = (kn_cpx){a.re + c.re, a.im + c.im};
            out[m + k] = (kn_cpx){b.re + wd.re, b.im + wd.im};
            out[2 * m + k] = (kn_cpx){a.re - c.re, a.im - c.im};
            out[3 * m + k] = (kn_cpx){b.re - wd.re, b.im - wd.im};
            break;
        }
        default: {
            /* Any odd radix: y_q = sum_s t_s w^(sq), the roots from the table
             * (w^x = tw[x * N/r]), pairs s and r - s folded together. */
            int64_t step = tws * m; /* N / r */
            for (int q = 0; q < r; q++) {
                kn_cpx y = t[0];
                for (int s2 = 1; s2 <= r / 2; s2++) {
                    kn_cpx w = twiddle(p, (int64_t)((s2 * q) % r) * step, inv);
                    kn_cpx a = {t[s2].re + t[r - s2].re, t[s2].im + t[r - s2].im};
                    kn_cpx b = {t[s2].re - t[r - s2].re, t[s2].im - t[r - s2].im};
                    /* t_s w + t_{r-s} conj(w) = a re(w) + i b im(w) */
                    y.re += a.re * w.re - b.im * w.im;
                    y.im += a.im * w.re + b.re * w.im;
                }
                out[q * m + k] = y;
            }
        }
        }
    }
}

void kn__fft_exec(const kn_fft_plan *p, const kn_cpx *in, kn_cpx *out, bool inverse, kn_cpx *scratch) {
    if (!p->bluestein) {
        dit(p, in, 1, out, p->n, 0, 1, inverse);
        return;
    }
    int64_t n = p->n, m = p->m;
    kn_cpx *a = scratch, *A = scratch + m;
    for (int64_t j = 0; j < n; j++) {
        kn_cpx c = p->chirp[j];
        if (inverse) c.im = -c.im;
        a[j] = cmul(in[j], c);
    }
    memset(a + n, 0, (size_t)(m - n) * sizeof *a);
    dit(p->sub, a, 1, A, m, 0, 1, false);
    const kn_cpx *b = inverse ? p->bi : p->bf;
    for (int64_t t = 0; t < m; t++) A[t] = cmul(A[t], b[t]);
    dit(p->sub, A, 1, a, m, 0, 1, true);
    double inv_m = 1.0 / (double)m;
    for (int64_t k = 0; k < n; k++) {
        kn_cpx c = p->chirp[k];
        if (inverse) c.im = -c.im;
        kn_cpx v = cmul(a[k], c);
        out[k] = (kn_cpx){v.re * inv_m, v.im * inv_m};
    }
}
