/* FFT plans for the CPU kernels (cpu_fft.h): mixed radix passes for lengths
 * whose prime factors are small, Bluestein's chirp-z for the others, real
 * plans over a complex one of half the length. Every twiddle is computed
 * once per plan, in double, from a reduced angle; plans are cached per
 * (length, kind), shared by every thread. */
#include "cpu_fft.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

/* Past this prime factor a generic O(p^2) pass costs more than Bluestein's
 * three transforms of about 2n. */
#define KN_FFT_MAX_RADIX 61
/* Plans kept at most, and their tables' bytes at most (the rest are built
 * per call). */
#define KN_FFT_CACHE 64
#define KN_FFT_CACHE_BYTES ((size_t)256 << 20)

static const double kn_pi = 3.14159265358979323846264338327950288;

/* exp(-2 pi i num/den) with the angle reduced to |r| <= pi/4 around a
 * multiple of pi/2 first: exact symmetries, and sin/cos of small arguments
 * only. 4 num fits: den <= 2n is far below 2^61. */
static kn_cpx root(int64_t num, int64_t den) {
    num %= den;
    if (num < 0) num += den;
    int64_t q = (4 * num + den / 2) / den; /* 0..4: the nearest quarter turn */
    double r = 2 * kn_pi * (double)(4 * num - q * den) / (double)(4 * den);
    double c = cos(r), s = sin(r); /* exp(2 pi i num/den) = i^q (c + i s) */
    switch (q % 4) {
    case 0: return (kn_cpx){c, -s};
    case 1: return (kn_cpx){-s, -c};
    case 2: return (kn_cpx){-c, s};
    default: return (kn_cpx){s, c};
    }
}

static int factorize(int64_t n, int *f) {
    int nf = 0;
    while (n % 4 == 0) f[nf++] = 4, n /= 4;
    if (n % 2 == 0) f[nf++] = 2, n /= 2;
    for (int64_t p = 3; n > 1; p += 2) {
        if (p * p > n) p = n; /* n is prime */
        while (n % p == 0) f[nf++] = p > KN_FFT_MAX_RADIX ? KN_FFT_MAX_RADIX + 1 : (int)p, n /= p;
    }
    return nf;
}

static void plan_free(kn_fft_plan *p) {
    if (!p) return;
    for (int k = 0; k < p->np; k++) free(p->passes[k].tw), free(p->passes[k].roots);
    free(p->chirp);
    free(p->bf);
    free(p->bi);
    free(p->rtw);
    plan_free(p->sub);
    free(p);
}

static kn_fft_plan *plan_new(int64_t n, bool real);

/* The smallest m >= n whose prime factors are 2, 3 and 5. */
static int64_t smooth_at_least(int64_t n) {
    int64_t best = 1;
    while (best < n) best *= 2;
    for (int64_t f5 = 1; f5 < best; f5 *= 5)
        for (int64_t f35 = f5; f35 < best; f35 *= 3) {
            int64_t m = f35;
            while (m < n) m *= 2;
            if (m < best) best = m;
        }
    return best;
}

/* Bluestein: X_k = c_k sum_j (x_j c_j) conj(c_{k-j}), c_j = exp(-pi i j^2/n):
 * a cyclic convolution of length m >= 2n - 1. The kernels' DFTs carry the
 * inverse's 1/m. */
static bool bluestein_init(kn_fft_plan *p) {
    int64_t n = p->n, m = smooth_at_least(2 * n - 1);
    p->m = m;
    p->sub = plan_new(m, false);
    p->chirp = malloc((size_t)n * sizeof *p->chirp);
    p->bf = calloc((size_t)m, sizeof *p->bf);
    p->bi = calloc((size_t)m, sizeof *p->bi);
    p->bytes += (size_t)(n + 2 * m) * sizeof(kn_cpx) + (p->sub ? p->sub->bytes : 0);
    kn_cpx *scratch = p->sub ? malloc(kn__fft_scratch_len(p->sub) * sizeof *scratch) : NULL;
    bool ok = p->sub && p->chirp && p->bf && p->bi && scratch;
    /* j^2 mod 2n keeps the angle small (j^2 itself loses the phase); by the
     * recurrence (j + 1)^2 = j^2 + 2j + 1, exact in 64 bits. */
    for (int64_t j = 0, q = 0; ok && j < n; q = (q + 2 * j + 1) % (2 * n), j++) {
        p->chirp[j] = root(q, 2 * n);
        kn_cpx c = {p->chirp[j].re / (double)m, -p->chirp[j].im / (double)m};
        p->bf[j] = c;
        if (j) p->bf[m - j] = c;
    }
    if (ok) {
        for (int64_t t = 0; t < m; t++) p->bi[t] = (kn_cpx){p->bf[t].re, -p->bf[t].im}; /* conj */
        kn_cpx *r = kn__fft_exec(p->sub, p->bf, false, scratch);
        if (r != p->bf) memcpy(p->bf, r, (size_t)m * sizeof *r);
        r = kn__fft_exec(p->sub, p->bi, false, scratch);
        if (r != p->bi) memcpy(p->bi, r, (size_t)m * sizeof *r);
    }
    free(scratch);
    return ok;
}

static bool mixed_init(kn_fft_plan *p, const int *f, int nf) {
    int64_t n = p->n, l1 = 1;
    p->np = nf;
    for (int k = 0; k < nf; k++) {
        kn_fft_pass *ps = &p->passes[k];
        int ip = f[k];
        ps->ip = ip;
        ps->l1 = l1;
        ps->ido = n / (l1 * ip);
        ps->tw = malloc((size_t)((ip - 1) * ps->ido) * sizeof *ps->tw + 1);
        p->bytes += (size_t)((ip - 1) * ps->ido + ip) * sizeof *ps->tw;
        if (!ps->tw) return false;
        for (int m = 1; m < ip; m++)
            for (int64_t i = 0; i < ps->ido; i++) ps->tw[(m - 1) * ps->ido + i] = root(m * i * l1, n);
        if (ip > 5) {
            ps->roots = malloc((size_t)ip * sizeof *ps->roots);
            if (!ps->roots) return false;
            for (int q = 0; q < ip; q++) ps->roots[q] = root(q, ip);
        }
        l1 *= ip;
    }
    return true;
}

static kn_fft_plan *plan_new(int64_t n, bool real) {
    kn_fft_plan *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n;
    p->real = real;
    if (real) {
        bool even = n % 2 == 0;
        p->sub = plan_new(even ? n / 2 : n, false);
        if (!p->sub) return plan_free(p), NULL;
        p->bytes = p->sub->bytes + (size_t)(n / 2 + 1) * sizeof(kn_cpx);
        if (even) {
            p->rtw = malloc((size_t)(n / 2 + 1) * sizeof *p->rtw);
            if (!p->rtw) return plan_free(p), NULL;
            for (int64_t k = 0; k <= n / 2; k++) p->rtw[k] = root(k, n);
        }
        return p;
    }
    int f[64];
    int nf = factorize(n, f);
    for (int k = 0; k < nf; k++)
        if (f[k] > KN_FFT_MAX_RADIX) p->bluestein = true;
    if (!(p->bluestein ? bluestein_init(p) : mixed_init(p, f, nf))) return plan_free(p), NULL;
    return p;
}

/* ---- the cache ------------------------------------------------------------------------------- */
static mtx_t cache_lock;
static once_flag cache_once = ONCE_FLAG_INIT;
static kn_fft_plan *cache[KN_FFT_CACHE];
static int cache_n;
static size_t cache_bytes;

static void cache_init(void) { mtx_init(&cache_lock, mtx_plain); }

static kn_fft_plan *cache_find(int64_t n, bool real) {
    for (int k = 0; k < cache_n; k++)
        if (cache[k]->n == n && cache[k]->real == real) return cache[k];
    return NULL;
}

const kn_fft_plan *kn__fft_plan(int64_t n, bool real, bool *owned) {
    call_once(&cache_once, cache_init);
    *owned = false;
    mtx_lock(&cache_lock);
    kn_fft_plan *p = cache_find(n, real);
    mtx_unlock(&cache_lock);
    if (p) return p;
    /* Built outside the lock (a long length takes a while); a plan that
     * another thread made meanwhile wins, this one is dropped. */
    p = plan_new(n, real);
    if (!p) return NULL;
    mtx_lock(&cache_lock);
    kn_fft_plan *q = cache_find(n, real);
    if (q) {
        mtx_unlock(&cache_lock);
        plan_free(p);
        return q;
    }
    if (cache_n < KN_FFT_CACHE && p->bytes <= KN_FFT_CACHE_BYTES - cache_bytes) {
        cache[cache_n++] = p;
        cache_bytes += p->bytes;
    } else {
        *owned = true;
    }
    mtx_unlock(&cache_lock);
    return p;
}

void kn__fft_plan_release(const kn_fft_plan *p, bool owned) {
    if (owned) plan_free((kn_fft_plan *)p);
}

size_t kn__fft_scratch_len(const kn_fft_plan *p) {
    return p->bluestein ? (size_t)p->m + kn__fft_scratch_len(p->sub) : (size_t)p->n;
}

/* ---- execution --------------------------------------------------------------------------------- */
static inline kn_cpx cmul(kn_cpx a, kn_cpx b) { return (kn_cpx){a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re}; }

/* Past this length each pass is split between the threads. */
#define KN_FFT_PARALLEL (1 << 15)

typedef struct {
    const kn_fft_pass *ps;
    const kn_cpx *cc;
    kn_cpx *ch;
    bool inverse, by_k; /* split over k (l1), else over i (ido) */
} pass_job;

static void pass_range(int64_t begin, int64_t end, void *ctx) {
    const pass_job *j = ctx;
    if (j->by_k)
        kn__fft_pass(j->ps, j->cc, j->ch, j->inverse, begin, end, 0, j->ps->ido);
    else
        kn__fft_pass(j->ps, j->cc, j->ch, j->inverse, 0, j->ps->l1, begin, end);
}

static void run_pass(const kn_fft_pass *ps, const kn_cpx *cc, kn_cpx *ch, bool inverse, int64_t n) {
    if (n < KN_FFT_PARALLEL) {
        kn__fft_pass(ps, cc, ch, inverse, 0, ps->l1, 0, ps->ido);
        return;
    }
    pass_job j = {ps, cc, ch, inverse, ps->l1 >= 64};
    int64_t units = j.by_k ? ps->l1 : ps->ido;
    kn__parallel_for(units, units / 64 + 1, pass_range, &j);
}

kn_cpx *kn__fft_exec(const kn_fft_plan *p, kn_cpx *c, bool inverse, kn_cpx *scratch) {
    if (!p->bluestein) {
        kn_cpx *a = c, *b = scratch;
        for (int k = 0; k < p->np; k++) {
            run_pass(&p->passes[k], a, b, inverse, p->n);
            kn_cpx *t = a;
            a = b, b = t;
        }
        return a;
    }
    int64_t n = p->n, m = p->m;
    kn_cpx *a = scratch;
    for (int64_t j = 0; j < n; j++) {
        kn_cpx w = p->chirp[j];
        a[j] = cmul(c[j], (kn_cpx){w.re, inverse ? -w.im : w.im});
    }
    memset(a + n, 0, (size_t)(m - n) * sizeof *a);
    kn_cpx *A = kn__fft_exec(p->sub, a, false, scratch + m);
    const kn_cpx *b = inverse ? p->bi : p->bf;
    for (int64_t t = 0; t < m; t++) A[t] = cmul(A[t], b[t]);
    /* A is a or the sub's scratch; the other one is free for the inverse */
    kn_cpx *B = kn__fft_exec(p->sub, A, true, A == a ? scratch + m : a);
    for (int64_t k = 0; k < n; k++) {
        kn_cpx w = p->chirp[k];
        c[k] = cmul(B[k], (kn_cpx){w.re, inverse ? -w.im : w.im});
    }
    return c;
}
