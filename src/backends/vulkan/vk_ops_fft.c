/* The FFT op (complex to complex along one dim of float pairs) as Stockham
 * autosort passes of radix 4, 2, 3 and 5 (shaders/fft*.comp), in place of
 * the composite's O(n^2) DFT by GEMM:
 *
 * - a length whose lines fit one workgroup's shared memory (the device's
 *   limit, read at pipeline creation) runs whole in one dispatch
 *   (fft_local.comp), several short lines to a workgroup;
 * - a longer one runs a dispatch per pass (fft_pass.comp), ping-ponging
 *   between two scratch buffers from the device's allocator; the first pass
 *   gathers from the input's strides, the last writes the output.
 *
 * Lengths with a prime factor above 5 run Bluestein's chirp-z transform: a
 * circular convolution of length 2^k >= 2n - 1 through two such
 * transforms (fft_chirp.comp chirps, pads and multiplies).
 *
 * The twiddles w^m = exp(-2 pi i m / n), the chirps and the convolution
 * kernel's spectrum are computed on the host in double from reduced angles
 * (as the CPU's tables are) and uploaded in the dtype; arithmetic is in the
 * dtype. float64 only where the device has it.
 *
 * The tables are kept in device memory (the allocator's), per device in
 * kvk_dev.fft_tables under the device's lock, by kind, length, direction
 * and dtype, least recently used evicted: a repeated length does no host
 * trig and no upload. A lookup and the recording that reads what it found
 * share one hold of the lock, so no other thread evicts a table between;
 * an evicted table is freed after that recording (the queue runs in order).
 * The backend tears no device down before the process exits, so nothing
 * empties the cache otherwise; its memory counts as in use. */
#include "vk_ops.h"

#include <math.h>
#include <stdlib.h>

/* Per-invocation values of fft_local.comp (its MAXREG). */
#define LOCAL_REG 16
/* Parameter words (shaders/fft.glsl, fft_local.comp). */
#define P_VIN 10
#define P_VOUT 30
#define P_TW 50
#define P_RADICES 60
#define MAX_PASSES (KVK_PARAMS - P_RADICES)
#define VIEW_DIMS 7

typedef struct {
    int np;
    int radix[64]; /* a length below 2^32 has at most 32 factors */
} fft_plan;

/* Radices of n in pass order (4s, then a 2, 3s, 5s); false if n has another prime factor. */
static bool factor(int64_t n, fft_plan *pl) {
    pl->np = 0;
    static const int rs[4] = {4, 2, 3, 5};
    for (int i = 0; i < 4; i++)
        while (n % rs[i] == 0 && pl->np < 64) {
            pl->radix[pl->np++] = rs[i];
            n /= rs[i];
            if (rs[i] == 2) break; /* one 2 at most: the rest went in 4s */
        }
    return n == 1;
}

/* A view of lines for the shaders: the line dims (the dims other than dim
 * and the pairs, size-1 dims dropped, neighbours merged where both operands
 * allow), the stride along the line and to the imaginary part, in reals. */
typedef struct {
    int nd;
    int64_t shape[VIEW_DIMS], stride[2][VIEW_DIMS];
} line_dims;

static void lines_of(const kn_operand *x, const kn_operand *out, int dim, line_dims *ld) {
    ld->nd = 0;
    for (int d = 0; d < x->ndim - 1; d++) {
        if (d == dim || x->shape[d] == 1) continue;
        int k = ld->nd;
        if (k > 0 && ld->stride[0][k - 1] == x->stride[d] * x->shape[d] &&
            ld->stride[1][k - 1] == out->stride[d] * x->shape[d]) { /* merge into the outer one */
            ld->shape[k - 1] *= x->shape[d];
            ld->stride[0][k - 1] = x->stride[d];
            ld->stride[1][k - 1] = out->stride[d];
            continue;
        }
        ld->shape[k] = x->shape[d];
        ld->stride[0][k] = x->stride[d];
        ld->stride[1][k] = out->stride[d];
        ld->nd++;
    }
}

static void put_view(uint32_t *p, int at, const line_dims *ld, int which, int64_t jstride, int64_t istride) {
    p[at + 1] = (uint32_t)ld->nd;
    p[at + 2] = (uint32_t)(int32_t)jstride;
    p[at + 3] = (uint32_t)(int32_t)istride;
    for (int d = 0; d < ld->nd; d++) {
        p[at + 4 + d] = (uint32_t)ld->shape[d];
        p[at + 11 + d] = (uint32_t)(int32_t)ld->stride[which][d];
    }
}

/* A scratch buffer of lines of n complex, each contiguous. */
static void put_scratch_view(uint32_t *p, int at, int64_t lines, int64_t n) {
    p[at + 1] = 1;
    p[at + 2] = 2;
    p[at + 3] = 1;
    p[at + 4] = (uint32_t)lines;
    p[at + 11] = (uint32_t)(2 * n);
}

/* Lines of n complex a workgroup of fft_local.comp takes (0: the line does
 * not fit): L n within the shared array and each invocation's values of
 * every pass (ceil(L n / (R wg)) R) within LOCAL_REG. */
static int64_t local_lines(const kvk_dev *d, bool f64, int64_t n, int64_t lines, const fft_plan *pl) {
    int64_t cap = (int64_t)d->props.limits.maxComputeSharedMemorySize / (f64 ? 16 : 8), wg = kvk_wg(d);
    if (cap > wg * LOCAL_REG) cap = wg * LOCAL_REG; /* the shader's array is no larger */
    for (int i = 0; i < pl->np; i++) {
        int64_t r = pl->radix[i], room = wg * (LOCAL_REG / r) * r;
        if (room < cap) cap = room;
    }
    if (n > cap || pl->np > MAX_PASSES) return 0;
    int64_t L = cap / n;
    return L < lines ? L : lines;
}

/* Binds device memory that is no operand (scratch, tables) to slot k. */
static void bind_raw(kvk_dispatch *w, int k, const void *ptr, size_t bytes, int slot) {
    w->ptr[k] = ptr;
    w->lo[k] = 0;
    w->hi[k] = (int64_t)bytes;
    w->base_slot[k] = slot;
}

/* Where a transform reads or writes: the op's input or output through its
 * line dims (op set), or a scratch buffer of contiguous lines. */
typedef struct {
    const kn_operand *op;
    int which; /* 0 the input's strides, 1 the output's */
    const void *ptr;
    size_t bytes;
} fview;

typedef struct {
    const kn_fft_args *a;
    bool f64;
    int64_t lines;
    line_dims ld;
} fft_job;

static void bind_view(const fft_job *j, kvk_dispatch *w, uint32_t *p, int k, int at, const fview *v, int64_t len) {
    if (v->op) {
        int nd = v->op->ndim;
        put_view(p, at, &j->ld, v->which, v->op->stride[j->a->dim], v->op->stride[nd - 1]);
        kvk_bind(w, k, v->op, at);
    } else {
        put_scratch_view(p, at, j->lines, len);
        bind_raw(w, k, v->ptr, v->bytes, at);
    }
}

/* One complex transform of length n over the job's lines, from in to out
 * (which may be the same scratch), scaled; tw its twiddles, sc[2] the
 * scratch of the passes (NULL where L > 0). */
typedef struct {
    int64_t n, L; /* L: lines a workgroup of fft_local.comp (0: a dispatch per pass) */
    fft_plan pl;
    bool inverse;
    double scale;
    const void *tw;
    size_t tw_bytes;
    fview sc[2];
} fft_xform;

static void xform_params(const fft_job *j, const fft_xform *t, uint32_t *p, bool scaled) {
    p[0] = (uint32_t)t->n;
    p[1] = (uint32_t)j->lines;
    p[4] = (t->inverse ? 1u : 0u) | (scaled ? 2u : 0u);
    kvk_put_real(p, 6, 8, t->scale);
}

static kn_status record_local(kvk_dev *d, const fft_job *j, const fft_xform *t, const fview *in, const fview *out) {
    uint32_t p[KVK_PARAMS] = {0};
    xform_params(j, t, p, true);
    p[2] = (uint32_t)t->pl.np;
    p[3] = (uint32_t)t->L;
    for (int i = 0; i < t->pl.np; i++) p[P_RADICES + i] = (uint32_t)t->pl.radix[i];
    kvk_dispatch w = {.shader = KVK_SH_FFT_LOCAL, .f64 = j->f64, .params = p, .n_params = KVK_PARAMS};
    bind_view(j, &w, p, 0, P_VIN, in, t->n);
    bind_view(j, &w, p, 1, P_VOUT, out, t->n);
    bind_raw(&w, 2, t->tw, t->tw_bytes, P_TW);
    int64_t groups = (j->lines + t->L - 1) / t->L;
    uint32_t cap = d->props.limits.maxComputeWorkGroupCount[0];
    if (cap > 65535) cap = 65535;
    w.groups[0] = groups > cap ? cap : (uint32_t)groups;
    return kvk_record(d, &w, "fft");
}

/* The passes: pass i reads in (i = 0) or the scratch the previous pass
 * wrote, and writes the other scratch or (the last) out. */
static kn_status record_passes(kvk_dev *d, const fft_job *j, const fft_xform *t, const fview *in, const fview *out) {
    kn_status s = KN_OK;
    int64_t Ns = 1;
    for (int i = 0; i < t->pl.np && s == KN_OK; i++) {
        bool last = i == t->pl.np - 1;
        uint32_t p[KVK_PARAMS] = {0};
        xform_params(j, t, p, last);
        p[2] = (uint32_t)t->pl.radix[i];
        p[3] = (uint32_t)Ns;
        kvk_dispatch w = {.shader = KVK_SH_FFT_PASS, .f64 = j->f64, .params = p, .n_params = KVK_PARAMS};
        bind_view(j, &w, p, 0, P_VIN, i == 0 ? in : &t->sc[(i - 1) % 2], t->n);
        bind_view(j, &w, p, 1, P_VOUT, last ? out : &t->sc[i % 2], t->n);
        bind_raw(&w, 2, t->tw, t->tw_bytes, P_TW);
        w.groups[0] = kvk_groups(d, j->lines * (t->n / t->pl.radix[i]));
        s = kvk_record(d, &w, "fft");
        Ns *= t->pl.radix[i];
    }
    return s;
}

static kn_status record_xform(kvk_dev *d, const fft_job *j, const fft_xform *t, const fview *in, const fview *out) {
    return t->L > 0 ? record_local(d, j, t, in, out) : record_passes(d, j, t, in, out);
}

/* Bluestein's steps (fft_chirp.comp): 0 the chirped input zero-padded to m,
 * 1 the product with the kernel's spectrum, 2 the chirped, scaled output. */
static kn_status record_chirp(kvk_dev *d, const fft_job *j, int mode, int64_t len, int64_t n, double scale,
                              const fview *in, const fview *out, int64_t in_len, int64_t out_len, const void *tab,
                              size_t tab_bytes) {
    uint32_t p[KVK_PARAMS] = {0};
    p[0] = (uint32_t)len;
    p[1] = (uint32_t)j->lines;
    p[2] = (uint32_t)mode;
    p[3] = (uint32_t)n;
    kvk_put_real(p, 6, 8, scale);
    kvk_dispatch w = {.shader = KVK_SH_FFT_CHIRP, .f64 = j->f64, .params = p, .n_params = KVK_PARAMS};
    bind_view(j, &w, p, 0, P_VIN, in, in_len);
    bind_view(j, &w, p, 1, P_VOUT, out, out_len);
    bind_raw(&w, 2, tab, tab_bytes, P_TW);
    w.groups[0] = kvk_groups(d, j->lines * len);
    return kvk_record(d, &w, "fft");
}

/* ---- host tables ------------------------------------------------------------------------------- */
/* The allocator's own message where it left one (a binding's limit). */
static kn_status oom(size_t bytes, int device, const char *what) {
    if (kn_error_code() != KN_OK) return kn_error_code();
    return kn__err(KN_ERR_OOM, "fft: out of memory for %zu bytes of %s on vulkan:%d", bytes, what, device);
}

/* A host table of cnt complex doubles uploaded in the dtype; NULL with an error. */
static void *upload(int device, const double *t, int64_t cnt, bool f64, size_t *bytes) {
    *bytes = (size_t)cnt * 2 * (f64 ? 8 : 4);
    float *f = f64 ? NULL : malloc(*bytes);
    if (!f64 && !f)
        return kn__err(KN_ERR_OOM, "fft: out of host memory for a table of %lld complex values", (long long)cnt), NULL;
    for (int64_t i = 0; !f64 && i < 2 * cnt; i++) f[i] = (float)t[i];
    void *dev = kvk_alloc(device, *bytes);
    kn_status s = dev ? kvk_copy_h2d(device, dev, f64 ? (const void *)t : f, *bytes) : oom(*bytes, device, "a table");
    free(f);
    if (s != KN_OK && dev) kvk_free(device, dev, *bytes), dev = NULL;
    return dev;
}

/* exp(sign 2 pi i q / (4 n)) for an integer q: reduced to within pi/4 of a
 * multiple of pi/2, whose rotation is exact (as the CPU's tables are). */
static void expi(int64_t q, int64_t n, int sign, double *re, double *im) {
    q %= 4 * n;
    int64_t k = (2 * q + n) / (2 * n); /* the nearest quarter turn */
    double a = 6.28318530717958647692528676655900577 * (double)(q - k * n) / (4.0 * (double)n), c = cos(a), s = sin(a);
    switch (k & 3) {
    case 0: *re = c, *im = s; break;
    case 1: *re = -s, *im = c; break;
    case 2: *re = -c, *im = -s; break;
    default: *re = s, *im = -c;
    }
    *im *= sign;
}

/* The forward twiddles exp(-2 pi i m / n), m < n. */
static double *twiddles(int64_t n) {
    double *t = malloc((size_t)n * 2 * sizeof *t);
    for (int64_t m = 0; t && m < n; m++) expi(4 * m, n, -1, &t[2 * m], &t[2 * m + 1]);
    return t;
}

/* In place, on the host in double: the forward DFT of v (m complex, m a
 * power of two), iterative radix-2 with table tw = twiddles(m). */
static void host_fft(double *v, int64_t m, const double *tw) {
    for (int64_t i = 1, j = 0; i < m; i++) { /* bit reversal */
        int64_t b = m >> 1;
        for (; j & b; b >>= 1) j ^= b;
        j |= b;
        if (i < j)
            for (int p = 0; p < 2; p++) {
                double t = v[2 * i + p];
                v[2 * i + p] = v[2 * j + p], v[2 * j + p] = t;
            }
    }
    for (int64_t len = 2; len <= m; len *= 2)
        for (int64_t i = 0; i < m; i += len)
            for (int64_t k = 0; k < len / 2; k++) {
                const double *w = &tw[2 * (k * (m / len))];
                double *a = &v[2 * (i + k)], *b = &v[2 * (i + k + len / 2)];
                double br = b[0] * w[0] - b[1] * w[1], bi = b[0] * w[1] + b[1] * w[0];
                b[0] = a[0] - br, b[1] = a[1] - bi;
                a[0] += br, a[1] += bi;
            }
}

/* Bluestein's length: the power of two m >= 2n - 1. */
static int64_t bluestein_len(int64_t n) {
    int64_t m = 1;
    while (m < 2 * n - 1) m *= 2;
    return m;
}

/* Lines a workgroup takes for a length (0: passes), for its plan. */
static bool plan_xform(const kvk_dev *d, bool f64, int64_t n, int64_t lines, fft_xform *t) {
    t->n = n;
    if (!factor(n, &t->pl)) return false;
    t->L = local_lines(d, f64, n, lines, &t->pl);
    return true;
}

bool kvk_fft_supports(const kvk_dev *d, const kn_fft_args *a) {
    const kn_operand *x = &a->x, *o = &a->out;
    if (x->dtype != o->dtype || (x->dtype != KN_F32 && !(x->dtype == KN_F64 && d->f64))) return false;
    if (x->ndim < 2 || a->dim < 0 || a->dim >= x->ndim - 1) return false;
    fft_plan pl;
    int64_t n = x->shape[a->dim], cx = kn_operand_numel(x) / 2;
    if (n < 1 || n > (int64_t)1 << 30) return false;
    /* Bluestein works on lines of m >= 2n - 1 points. */
    if (!factor(n, &pl)) cx = cx / n * bluestein_len(n);
    /* Element indices, counts and strides in 32 bits; a scratch buffer within one binding. */
    if (cx > (int64_t)UINT32_MAX / 2 || (size_t)cx * 2 * kn_dtype_size(x->dtype) > d->max_binding) return false;
    for (int k = 0; k < x->ndim; k++)
        if (!kvk_fits32(x->stride[k]) || !kvk_fits32(o->stride[k])) return false;
    return true;
}

/* Scratch for the passes of t (none for one dispatch; one for two passes). */
static kn_status scratch_for(int device, fft_xform *t, int64_t lines, bool f64, int have) {
    int need = t->L > 0 || t->pl.np < 2 ? 0 : t->pl.np == 2 ? 1 : 2;
    size_t bytes = (size_t)(lines * t->n) * 2 * (f64 ? 8 : 4);
    for (int k = have; k < need; k++) {
        t->sc[k] = (fview){.ptr = kvk_alloc(device, bytes), .bytes = bytes};
        if (!t->sc[k].ptr) return oom(bytes, device, "scratch");
    }
    return KN_OK;
}

static void free_view(int device, fview *v) {
    if (v->ptr) kvk_free(device, (void *)v->ptr, v->bytes);
    v->ptr = NULL;
}

/* ---- the table cache ------------------------------------------------------------------------- */
/* The tables a transform reads: the twiddles of a length (either direction:
 * the shaders conjugate them), and Bluestein's chirps and kernel spectrum
 * of a length n with a prime factor above 5, and a direction. */
enum { TAB_TWIDDLES = 1, TAB_CHIRP, TAB_KERNEL };
#define MAX_TABS 3

typedef struct {
    int kind, sign; /* sign: 0 for the twiddles, else the transform's */
    int64_t n;      /* the twiddles' length, or Bluestein's n */
    const void *ptr; /* out: the device's copy */
    size_t bytes;
} tab_req;

/* Device memory to free once the work that reads it is recorded: tables
 * evicted, and tables built while another thread cached the same. At most
 * one a request. */
typedef struct {
    int n;
    void *ptr[MAX_TABS];
    size_t bytes[MAX_TABS];
} tab_trash;

/* Bluestein's chirps c_j = exp(sign pi i j^2 / n), j < n. */
static double *chirps(int64_t n, int sign) {
    double *c = malloc((size_t)n * 2 * sizeof *c);
    for (int64_t q = 0; c && q < n; q++) {
        /* j^2 mod 2n, so exp(sign 2 pi i (j^2 mod 2n) / (2n)); in quarters of 4n: 2 (j^2 mod 2n) */
        int64_t r = q * q % (2 * n); /* n <= 2^30: exact */
        expi(2 * r, n, sign, &c[2 * q], &c[2 * q + 1]);
    }
    return c;
}

/* The spectrum of conj(c) / m wrapped circularly onto m = bluestein_len(n)
 * points (the 1/m is the inverse FFT's). */
static double *kernel(int64_t n, int sign) {
    int64_t m = bluestein_len(n);
    double *c = chirps(n, sign), *k = calloc((size_t)m * 2, sizeof *k), *tw = twiddles(m);
    if (c && k && tw) {
        for (int64_t q = 0; q < n; q++) {
            double *k0 = &k[2 * q], *k1 = &k[2 * ((m - q) % m)];
            k0[0] = c[2 * q] / (double)m, k0[1] = -c[2 * q + 1] / (double)m;
            k1[0] = k0[0], k1[1] = k0[1];
        }
        host_fft(k, m, tw);
    } else {
        free(k), k = NULL;
    }
    free(c), free(tw);
    return k;
}

/* Request r's table computed on the host and uploaded; NULL with an error. */
static void *build_table(int device, bool f64, const tab_req *r, size_t *bytes) {
    int64_t cnt = r->kind == TAB_KERNEL ? bluestein_len(r->n) : r->n;
    double *h = r->kind == TAB_TWIDDLES ? twiddles(r->n) : r->kind == TAB_CHIRP ? chirps(r->n, r->sign)
                                                                                 : kernel(r->n, r->sign);
    static const char *const names[] = {"", "the twiddles", "Bluestein's chirps", "Bluestein's kernel"};
    if (!h)
        return kn__err(KN_ERR_OOM, "fft: out of host memory for %s of length %lld", names[r->kind], (long long)r->n),
               NULL;
    void *dev = upload(device, h, cnt, f64, bytes);
    free(h);
    return dev;
}

/* The cached table r asks for, made the most recently used; NULL: none. Lock held. */
static kvk_fft_table *tab_find(kvk_dev *d, const tab_req *r, bool f64) {
    for (int i = 0; i < KVK_FFT_TABLES; i++) {
        kvk_fft_table *e = &d->fft_tables[i];
        if (e->ptr && e->kind == r->kind && e->sign == r->sign && e->n == r->n && e->f64 == f64) {
            e->last = ++d->fft_tick;
            return e;
        }
    }
    return NULL;
}

/* Caches a table just built, in a free slot or the least recently used
 * one (whose memory goes to tr). Lock held. */
static kvk_fft_table *tab_put(kvk_dev *d, const tab_req *r, bool f64, void *ptr, size_t bytes, tab_trash *tr) {
    kvk_fft_table *e = &d->fft_tables[0];
    for (int i = 0; i < KVK_FFT_TABLES && e->ptr; i++)
        if (!d->fft_tables[i].ptr || d->fft_tables[i].last < e->last) e = &d->fft_tables[i];
    if (e->ptr) tr->ptr[tr->n] = e->ptr, tr->bytes[tr->n++] = e->bytes;
    *e = (kvk_fft_table){.ptr = ptr, .bytes = bytes, .kind = r->kind, .sign = r->sign, .f64 = f64, .n = r->n,
                         .last = ++d->fft_tick};
    return e;
}

/* The device entered, with r[0, nr)'s tables filled in from the cache; on
 * a miss they are all built outside the lock (the allocator and the copy
 * enter the device themselves: what was found may be evicted meanwhile),
 * then cached, or dropped where another thread cached one first. NULL with
 * an error, the device left and nothing cached. */
static kvk_dev *enter_with_tables(int device, bool f64, tab_req *r, int nr, tab_trash *tr) {
    kvk_dev *d = kvk_enter(device, "fft");
    int hits = 0;
    for (int i = 0; d && i < nr; i++) {
        const kvk_fft_table *e = tab_find(d, &r[i], f64);
        if (e) r[i].ptr = e->ptr, r[i].bytes = e->bytes, hits++;
    }
    if (!d || hits == nr) return d;
    kvk_leave(d);
    void *fresh[MAX_TABS] = {0};
    size_t bytes[MAX_TABS] = {0};
    kn_status s = KN_OK;
    for (int i = 0; i < nr && s == KN_OK; i++)
        if (!(fresh[i] = build_table(device, f64, &r[i], &bytes[i]))) s = kn_error_code();
    if (s == KN_OK && !(d = kvk_enter(device, "fft"))) s = kn_error_code();
    if (s != KN_OK) {
        for (int i = 0; i < nr; i++) kvk_free(device, fresh[i], bytes[i]);
        return NULL;
    }
    for (int i = 0; i < nr; i++) {
        const kvk_fft_table *e = tab_find(d, &r[i], f64);
        if (e) tr->ptr[tr->n] = fresh[i], tr->bytes[tr->n++] = bytes[i];
        else e = tab_put(d, &r[i], f64, fresh[i], bytes[i], tr);
        r[i].ptr = e->ptr, r[i].bytes = e->bytes;
    }
    return d;
}

static void empty_trash(int device, tab_trash *tr) {
    for (int i = 0; i < tr->n; i++) kvk_free(device, tr->ptr[i], tr->bytes[i]);
    tr->n = 0;
}

/* ---- the transforms --------------------------------------------------------------------------- */
/* Smooth n: one transform from the input to the output. */
static kn_status run_direct(int device, const fft_job *j, fft_xform *t) {
    const kn_fft_args *a = j->a;
    tab_req tw = {.kind = TAB_TWIDDLES, .n = t->n};
    tab_trash tr = {0};
    kn_status s = scratch_for(device, t, j->lines, j->f64, 0);
    kvk_dev *d = s == KN_OK ? enter_with_tables(device, j->f64, &tw, 1, &tr) : NULL;
    if (s == KN_OK && !d) s = kn_error_code();
    if (d) {
        t->tw = tw.ptr, t->tw_bytes = tw.bytes;
        fview in = {.op = &a->x, .which = 0}, out = {.op = &a->out, .which = 1};
        s = record_xform(d, j, t, &in, &out);
        kvk_leave(d);
    }
    for (int k = 0; k < 2; k++) free_view(device, &t->sc[k]);
    empty_trash(device, &tr);
    return s;
}

/* Bluestein: y_k = scale c_k sum_j (x_j c_j) conj(c_{k-j}), c_j =
 * exp(sign pi i j^2 / n), as a circular convolution of length m >= 2n - 1:
 * the chirped input padded to m, its FFT times the spectrum of conj(c)
 * (computed on the host in double, with the 1/m of the inverse), the
 * inverse FFT, chirped and scaled. */
static kn_status run_bluestein(int device, const fft_job *j, fft_xform *fw, fft_xform *bw) {
    const kn_fft_args *a = j->a;
    int64_t n = a->x.shape[a->dim], m = fw->n;
    int sign = a->inverse ? 1 : -1;
    tab_req r[3] = {{.kind = TAB_TWIDDLES, .n = m},
                    {.kind = TAB_CHIRP, .sign = sign, .n = n},
                    {.kind = TAB_KERNEL, .sign = sign, .n = n}};
    tab_trash tr = {0};
    size_t line_bytes = (size_t)(j->lines * m) * 2 * (j->f64 ? 8 : 4);
    fview buf = {.ptr = kvk_alloc(device, line_bytes), .bytes = line_bytes};
    kn_status s = buf.ptr ? scratch_for(device, fw, j->lines, j->f64, 0) : oom(line_bytes, device, "scratch");
    kvk_dev *d = s == KN_OK ? enter_with_tables(device, j->f64, r, 3, &tr) : NULL;
    if (s == KN_OK && !d) s = kn_error_code();
    if (d) {
        const void *chirp = r[1].ptr, *kern = r[2].ptr;
        size_t chirp_bytes = r[1].bytes, kern_bytes = r[2].bytes;
        fw->tw = r[0].ptr, fw->tw_bytes = r[0].bytes;
        bw->tw = fw->tw, bw->tw_bytes = fw->tw_bytes, bw->sc[0] = fw->sc[0], bw->sc[1] = fw->sc[1];
        fview in = {.op = &a->x, .which = 0}, out = {.op = &a->out, .which = 1};
        s = record_chirp(d, j, 0, m, n, 1, &in, &buf, n, m, chirp, chirp_bytes);
        if (s == KN_OK) s = record_xform(d, j, fw, &buf, &buf);
        if (s == KN_OK) s = record_chirp(d, j, 1, m, m, 1, &buf, &buf, m, m, kern, kern_bytes);
        if (s == KN_OK) s = record_xform(d, j, bw, &buf, &buf);
        if (s == KN_OK) s = record_chirp(d, j, 2, n, n, a->scale, &buf, &out, m, n, chirp, chirp_bytes);
        kvk_leave(d);
    }
    for (int k = 0; k < 2; k++) free_view(device, &fw->sc[k]);
    free_view(device, &buf);
    empty_trash(device, &tr);
    return s;
}

kn_status kvk_fft(int device, const void *args) {
    const kn_fft_args *a = args;
    if (kn_operand_numel(&a->x) == 0) return KN_OK;
    int64_t n = a->x.shape[a->dim];
    fft_job j = {.a = a, .f64 = a->x.dtype == KN_F64, .lines = kn_operand_numel(&a->x) / 2 / n};
    lines_of(&a->x, &a->out, (int)a->dim, &j.ld);
    /* The device's limits, read without making it. */
    kvk_dev *d = kvk_peek(device, "fft");
    if (!d) return kn_error_code();
    fft_xform t = {.inverse = a->inverse != 0, .scale = a->scale}, bw;
    bool smooth = plan_xform(d, j.f64, n, j.lines, &t);
    if (!smooth) {
        plan_xform(d, j.f64, bluestein_len(n), j.lines, &t);
        t.inverse = false, t.scale = 1;
        bw = t;
        bw.inverse = true;
    }
    kvk_leave(d);
    /* Memory first: the allocator enters the device itself. The queue runs
     * in order, so what is freed after recording is reused only by work
     * recorded after this. */
    return smooth ? run_direct(device, &j, &t) : run_bluestein(device, &j, &t, &bw);
}
