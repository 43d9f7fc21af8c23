/* The FFT op on CUDA through cuFFT (opened at the first FFT: cuda_cufft.c).
 *
 * The op is a complex-to-complex transform along one dim of the real view
 * of complex data (core/ops.def): float32 pairs run as C2C, float64 as Z2Z,
 * out of place from x into the contiguous out. The layout maps onto cuFFT's
 * advanced layout, in complex elements: the transform dim gives the stride,
 * the other dims (merged where both x and out allow) the batch.
 *  - one batch dim left: one execution (this covers the last dim of any
 *    contiguous input and any dim of one whose other dims merge, such as
 *    out[k, n] = fft over dim 0 with stride k, distance 1);
 *  - several: the largest is cuFFT's batch and the rest are looped over when
 *    that makes at most KC_FFT_LOOPS executions; beyond, x is copied with
 *    the transform dim innermost, transformed in place, and copied into out
 *    (two extra passes beat many small executions);
 *  - x whose pairs are not (re, im) at unit stride, with odd, zero or
 *    negative strides, or not aligned for cufftComplex is copied first.
 * cuFFT does not normalize: a scale other than 1 is one more pass (or is
 * folded into the copy back).
 *
 * Plans are cached per device, keyed by everything a plan depends on, LRU
 * with KC_FFT_CACHE entries (plans hold device memory: twiddles, Bluestein
 * chirps). Their workspace is not cuFFT's own: auto allocation is off and
 * every execution takes its workspace from kiln's allocator, so it is
 * counted, reused as any scratch rather than held by each cached plan,
 * and taken from the graph's pool during a capture (the graph then owns
 * the block it baked in). A plan used during a capture is pinned, never
 * evicted: the graph's kernels keep pointing at its tables. One lock per
 * device covers the cache and the plan's stream and work area up to the
 * launch. */
#include "cuda_cufft.h"
#include "cuda_internal.h"

#include <stdlib.h>
#include <string.h>
#include <threads.h>

#define KC_FFT_DEVS 16
#define KC_FFT_CACHE 32 /* unpinned plans kept per device */
#define KC_FFT_LOOPS 8  /* executions over outer dims before the transposed copy is taken */
/* cuFFT uses Bluestein's algorithm for lengths with a prime factor above
 * this; making such a plan during stream capture is known to crash cuFFT. */
#define KC_FFT_SMOOTH 127

typedef struct {
    int type; /* CUFFT_C2C, CUFFT_Z2Z */
    long long n, istride, idist, ostride, odist, batch;
} plan_key;

typedef struct {
    plan_key key;
    cufftHandle h;
    size_t work; /* workspace bytes the plan needs */
    unsigned long long last; /* LRU tick */
    bool pinned;
} plan_entry;

typedef struct {
    plan_entry *e;
    int n, cap;
    unsigned long long tick;
} plan_cache;

static plan_cache caches[KC_FFT_DEVS];
static mtx_t locks[KC_FFT_DEVS];
static once_flag locks_once = ONCE_FLAG_INIT;

static void locks_init(void) {
    for (int i = 0; i < KC_FFT_DEVS; i++) mtx_init(&locks[i], mtx_plain);
}

static kn_status fft_check(cufftResult r, const kc_dev *d, const char *what, const plan_key *k) {
    if (r == CUFFT_SUCCESS) return KN_OK;
    return kn__err(r == CUFFT_ALLOC_FAILED ? KN_ERR_OOM : KN_ERR_DEVICE,
                   "fft: cuFFT error %s (%d) on cuda:%d %s (%s, length %lld, batch %lld, input stride %lld "
                   "distance %lld, output stride %lld distance %lld, in complex elements)",
                   kc_fft_result_name(r), (int)r, d->index, what, k->type == CUFFT_Z2Z ? "Z2Z" : "C2C", k->n,
                   k->batch, k->istride, k->idist, k->ostride, k->odist);
}

/* Whether every prime factor of n is at most KC_FFT_SMOOTH. */
static bool smooth(long long n) {
    for (long long p = 2; p <= KC_FFT_SMOOTH && n > 1; p++)
        while (n % p == 0) n /= p;
    return n == 1;
}

static void destroy(plan_entry *e) { (void)kc_fft.cufftDestroy(e->h); }

/* Drops the least recently used unpinned plan once KC_FFT_CACHE are kept.
 * Not during a capture: the stream cannot be waited for then (the cache
 * shrinks back at the next plan made outside one). */
static kn_status evict(kc_dev *d, plan_cache *c) {
    int unpinned = 0, lru = -1;
    for (int i = 0; i < c->n; i++)
        if (!c->e[i].pinned) {
            unpinned++;
            if (lru < 0 || c->e[i].last < c->e[lru].last) lru = i;
        }
    if (unpinned < KC_FFT_CACHE || d->capture) return KN_OK;
    /* Queued executions may still read its tables. */
    kn_status s = kc_check(cudaStreamSynchronize(d->stream), "fft");
    if (s != KN_OK) return s;
    plan_entry e = c->e[lru];
    c->e[lru] = c->e[--c->n];
    return fft_check(kc_fft.cufftDestroy(e.h), d, "destroying an evicted plan", &e.key);
}

/* A new plan for key in p (h, work); cuFFT's status. */
static cufftResult make_plan(kc_dev *d, const plan_key *key, plan_entry *p) {
    cufftResult r = kc_fft.cufftCreate(&p->h);
    if (r != CUFFT_SUCCESS) return r;
    /* The workspace comes from kiln's allocator at each execution. */
    r = kc_fft.cufftSetAutoAllocation(p->h, 0);
    /* Plan setup may allocate and copy tables, which a capture in global
     * mode forbids on this thread; kiln captures relaxed, and the thread's
     * mode is made relaxed explicitly around it (where that fails, kiln's
     * own capture is relaxed anyway). The plan's stream is still the
     * default one here, so nothing of the setup is captured. */
    enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    bool swap = d->capture != NULL && r == CUFFT_SUCCESS &&
                cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess;
    if (r == CUFFT_SUCCESS) {
        long long n = key->n, inembed = key->n, onembed = key->n; /* non-NULL: the advanced layout */
        r = kc_fft.cufftMakePlanMany64(p->h, 1, &n, &inembed, key->istride, key->idist, &onembed, key->ostride,
                                       key->odist, (cufftType)key->type, key->batch, &p->work);
    }
    if (swap) (void)cudaThreadExchangeStreamCaptureMode(&mode); /* back to what it was; cannot fail after the first */
    if (r != CUFFT_SUCCESS) (void)kc_fft.cufftDestroy(p->h); /* the caller reports r */
    return r;
}

/* The cached plan for key, made on a miss. Lock held. */
static plan_entry *get_plan(kc_dev *d, plan_cache *c, const plan_key *key) {
    for (int i = 0; i < c->n; i++)
        if (!memcmp(&c->e[i].key, key, sizeof *key)) {
            c->e[i].last = ++c->tick;
            return &c->e[i];
        }
    if (d->capture && !smooth(key->n)) {
        kn__err(KN_ERR_UNSUPPORTED,
                "fft: length %lld has a prime factor above %d (cuFFT's Bluestein path), whose plan cannot be "
                "made safely during a graph capture on cuda:%d; run the step once before capturing it, so "
                "the plan is cached",
                key->n, KC_FFT_SMOOTH, d->index);
        return NULL;
    }
    if (evict(d, c) != KN_OK) return NULL;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : KC_FFT_CACHE;
        plan_entry *e = realloc(c->e, (size_t)cap * sizeof *e);
        if (!e) return kn__err(KN_ERR_OOM, "fft: out of host memory for the plan cache"), NULL;
        c->e = e;
        c->cap = cap;
    }
    plan_entry p = {.key = *key};
    cufftResult r = make_plan(d, key, &p);
    if (r == CUFFT_ALLOC_FAILED && !d->capture && kc_empty_cache(d->index) == KN_OK)
        r = make_plan(d, key, &p); /* kiln's cache may hold the memory cuFFT's tables need */
    if (fft_check(r, d, d->capture ? "making a plan during a graph capture" : "making a plan", key) != KN_OK)
        return NULL;
    p.last = ++c->tick;
    c->e[c->n] = p;
    return &c->e[c->n++];
}

/* ---- layout ----------------------------------------------------------------------------------- */
/* One batch dim of the transform, in complex elements. */
typedef struct {
    int64_t size, xs, os;
} bdim;

/* The transform of one view pair: length n at strides (is, os) and the
 * batch dims left after merging, outermost first. */
typedef struct {
    int64_t n, is, os;
    int nb;
    bdim b[KN_MAX_DIMS];
} layout;

/* Whether x's real view can be read as complex elements in place: pairs at
 * unit stride, every other stride even and positive, the start aligned. */
static bool complex_view_ok(const kn_operand *x) {
    int r = x->ndim - 1;
    size_t cs = 2 * kn_dtype_size(x->dtype);
    if (r < 1 || x->shape[r] != 2 || x->stride[r] != 1 || (uintptr_t)x->data % cs) return false;
    for (int d = 0; d < r; d++)
        if (x->shape[d] > 1 && (x->stride[d] <= 0 || x->stride[d] % 2)) return false;
    return true;
}

static layout layout_of(const kn_operand *x, const kn_operand *out, int dim) {
    layout L = {.n = x->shape[dim], .is = x->stride[dim] / 2, .os = out->stride[dim] / 2};
    for (int d = 0; d < x->ndim - 1; d++) {
        if (d == dim || x->shape[d] == 1) continue;
        bdim b = {x->shape[d], x->stride[d] / 2, out->stride[d] / 2};
        bdim *p = L.nb ? &L.b[L.nb - 1] : NULL;
        /* The outer dim p and this one walk as one when both views step
         * across p as across size(this) elements of this one. */
        if (p && p->xs == b.xs * b.size && p->os == b.os * b.size) {
            p->size *= b.size;
            p->xs = b.xs;
            p->os = b.os;
        } else {
            L.b[L.nb++] = b;
        }
    }
    return L;
}

/* ---- execution -------------------------------------------------------------------------------- */
/* Executes the plan for key at every (x, out) offset that the loop dims
 * (all of L's batch dims but `batch`, or none when batch < 0) give. */
static kn_status run_plan(kc_dev *d, const plan_key *key, char *x, char *out, size_t cs, int dir, const layout *L,
                          int batch) {
    call_once(&locks_once, locks_init);
    plan_cache *c = &caches[d->index];
    mtx_lock(&locks[d->index]);
    kn_status s = KN_OK;
    plan_entry *p = get_plan(d, c, key);
    void *work = NULL;
    if (!p) s = kn_error_code();
    if (s == KN_OK && d->capture) p->pinned = true;
    if (s == KN_OK) s = fft_check(kc_fft.cufftSetStream(p->h, d->stream), d, "setting the stream", key);
    if (s == KN_OK && p->work) {
        /* Freed right after the launch: the allocator's next user of the
         * block queues behind it on the same stream. */
        if (!(work = kc_alloc(d->index, p->work))) s = kn_error_code();
        if (s == KN_OK) s = fft_check(kc_fft.cufftSetWorkArea(p->h, work), d, "setting the work area", key);
    }
    int64_t idx[KN_MAX_DIMS] = {0};
    for (bool more = s == KN_OK; more;) {
        int64_t xo = 0, oo = 0;
        for (int j = 0; j < L->nb; j++)
            if (batch >= 0 && j != batch) {
                xo += idx[j] * L->b[j].xs;
                oo += idx[j] * L->b[j].os;
            }
        void *in = x + xo * (int64_t)cs, *o = out + oo * (int64_t)cs;
        cufftResult r = key->type == CUFFT_Z2Z
                            ? kc_fft.cufftExecZ2Z(p->h, (cufftDoubleComplex *)in, (cufftDoubleComplex *)o, dir)
                            : kc_fft.cufftExecC2C(p->h, (cufftComplex *)in, (cufftComplex *)o, dir);
        s = fft_check(r, d, "executing a plan", key);
        /* The next index of the loop dims (innermost fastest). */
        more = false;
        for (int j = L->nb - 1; s == KN_OK && batch >= 0 && j >= 0 && !more; j--) {
            if (j == batch) continue;
            if (++idx[j] < L->b[j].size) more = true;
            else idx[j] = 0;
        }
    }
    if (work) kc_free(d->index, work, p->work);
    mtx_unlock(&locks[d->index]);
    return s;
}

static plan_key key_of(kn_dtype dt, int64_t n, int64_t is, int64_t idist, int64_t os, int64_t odist,
                       int64_t batch) {
    plan_key k;
    memset(&k, 0, sizeof k); /* no padding bytes in the memcmp */
    k.type = dt == KN_F64 ? CUFFT_Z2Z : CUFFT_C2C;
    k.n = n, k.istride = is, k.idist = idist, k.ostride = os, k.odist = odist, k.batch = batch;
    return k;
}

/* The transform through a copy with dim innermost: x -> t (contiguous in
 * that order), in place on t, t -> out with the scale folded in. */
static kn_status via_copy(kc_dev *d, const kn_fft_args *a, const kn_operand *x, int dim, int dir) {
    kn_dtype dt = x->dtype;
    int r = x->ndim - 1;
    kn_operand t = *x;
    int64_t n = x->shape[dim], total = 1, step = 2 * n;
    t.stride[r] = 1;
    t.stride[dim] = 2;
    for (int d = r - 1; d >= 0; d--) {
        total *= x->shape[d];
        if (d == dim) continue;
        t.stride[d] = step;
        step *= x->shape[d];
    }
    size_t nbytes = (size_t)total * 2 * kn_dtype_size(dt);
    if (!(t.data = kc_alloc(d->index, nbytes))) return kn_error_code();
    kn_status s = kc_copy_view(d, &t, x);
    layout one = {.nb = 0};
    plan_key key = key_of(dt, n, 1, n, 1, n, total / n);
    if (s == KN_OK) s = run_plan(d, &key, t.data, t.data, 2 * kn_dtype_size(dt), dir, &one, -1);
    if (s == KN_OK)
        s = a->scale == 1 ? kc_copy_view(d, &a->out, &t) : kc_unary_view(d, &a->out, &t, KN_UNARY_MUL_SCALAR, a->scale, 0);
    kc_free(d->index, t.data, nbytes);
    return s;
}

/* x copied into fresh contiguous scratch (kiln's blocks are aligned). */
static kn_status copy_in(kc_dev *d, const kn_operand *x, kc_buf *b) {
    kn_operand c = *x;
    int64_t n = 1;
    for (int k = x->ndim - 1; k >= 0; k--) {
        c.stride[k] = n;
        n *= x->shape[k];
    }
    size_t nbytes = (size_t)n * kn_dtype_size(x->dtype);
    if (!(c.data = kc_alloc(d->index, nbytes))) return kn_error_code();
    *b = (kc_buf){.v = c, .scratch = c.data, .nbytes = nbytes};
    return kc_copy_view(d, &c, x);
}

static kn_status fft_views(kc_dev *d, const kn_fft_args *a, const kn_operand *x, int dim) {
    const kn_operand *out = &a->out;
    kn_dtype dt = x->dtype;
    size_t cs = 2 * kn_dtype_size(dt);
    int dir = a->inverse ? CUFFT_INVERSE : CUFFT_FORWARD;
    layout L = layout_of(x, out, dim);
    int batch = -1;
    int64_t loops = 1;
    if (L.nb > 1) {
        batch = 0;
        for (int j = 1; j < L.nb; j++)
            if (L.b[j].size > L.b[batch].size) batch = j;
        for (int j = 0; j < L.nb; j++)
            if (j != batch) loops *= L.b[j].size;
        if (loops > KC_FFT_LOOPS) return via_copy(d, a, x, dim, dir);
    }
    bdim b = L.nb ? L.b[batch < 0 ? 0 : batch] : (bdim){1, L.n * L.is, L.n * L.os};
    plan_key key = key_of(dt, L.n, L.is, b.xs, L.os, b.os, b.size);
    kn_status s = run_plan(d, &key, x->data, out->data, cs, dir, &L, batch);
    if (s == KN_OK && a->scale != 1) s = kc_fft_scale(d, out->data, out->data, dt, kn_operand_numel(out), a->scale);
    return s;
}

bool kc_fft_supports(int index, const void *args) {
    (void)index;
    const kn_fft_args *a = args;
    /* cuFFT has every length and layout the op can ask for; what it lacks
     * (a plan it refuses, the library absent) fails with cuFFT's own reason
     * rather than falling to the composite, which is quadratic in the
     * length and refuses long ones anyway. */
    return (a->x.dtype == KN_F32 || a->x.dtype == KN_F64) && a->out.dtype == a->x.dtype;
}

kn_status kn__cuda_fft(int device, const void *args) {
    const kn_fft_args *a = args;
    kc_dev *d = kc_enter(device, "fft", false);
    if (!d) return kn_error_code();
    int r = a->x.ndim - 1, dim = (int)a->dim;
    if (r < 1 || dim < 0 || dim >= r || a->out.ndim != a->x.ndim ||
        memcmp(a->out.shape, a->x.shape, (size_t)a->x.ndim * sizeof a->x.shape[0]) || !kn_operand_contiguous(&a->out))
        return kn__err(KN_ERR_INVALID, "fft: expected x [..., 2] with dim < rank - 1 and a contiguous out of its shape");
    if (kn_operand_numel(&a->x) == 0) return KN_OK;
    if (a->x.shape[dim] == 1) /* a transform of length 1 is the scale */
        return a->scale == 1 ? kc_copy_view(d, &a->out, &a->x)
                             : kc_unary_view(d, &a->out, &a->x, KN_UNARY_MUL_SCALAR, a->scale, 0);
    kn_status s = kc_fft_load("fft");
    if (s != KN_OK) return s;
    kc_buf xb = {0};
    const kn_operand *x = &a->x;
    if (!complex_view_ok(x)) {
        s = copy_in(d, x, &xb);
        x = &xb.v;
    }
    if (s == KN_OK) s = fft_views(d, a, x, dim);
    kc_buf_free(d, &xb);
    return s == KN_OK ? kc_after(d, "fft") : s;
}
