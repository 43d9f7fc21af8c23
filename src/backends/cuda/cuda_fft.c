/* The FFT ops on CUDA through cuFFT (opened at the first FFT: cuda_cufft.c).
 *
 * FFT is a complex-to-complex transform along one dim of the real view of
 * complex data (core/ops.def): float32 pairs run as C2C, float64 as Z2Z,
 * out of place from x into the contiguous out. RFFT (real x to its n/2 + 1
 * bins) runs as R2C / D2Z, out of place; IRFFT (the bins back to n reals)
 * as C2R / Z2D from a scratch copy of the bins, since cuFFT's C2R
 * overwrites its input: the copy takes the scale and has the imaginary
 * parts of bin 0 and (even n) bin n/2 zeroed, which the op ignores and
 * cuFFT's C2R would not (it assumes a Hermitian input).
 *
 * The layout maps onto cuFFT's advanced layout, in elements of each side
 * (complex, or real for R2C's input and C2R's output): the transform dim
 * gives the stride, the other dims (merged where both sides allow) the batch.
 *  - one batch dim left: one execution (this covers the last dim of any
 *    contiguous input and any dim of one whose other dims merge, such as
 *    out[k, n] = fft over dim 0 with stride k, distance 1);
 *  - several: the largest is cuFFT's batch and the rest are looped over when
 *    that makes at most KC_FFT_LOOPS executions; beyond, x is copied with
 *    the transform dim innermost, transformed there, and copied into out
 *    (two extra passes beat many small executions);
 *  - x that cuFFT cannot read in place (complex pairs not at unit stride,
 *    odd, zero or negative strides, a start not aligned to a complex
 *    element) is copied first.
 * cuFFT does not normalize: a scale other than 1 is one more pass (or is
 * folded into a copy).
 *
 * Plans are cached per device, keyed by everything a plan depends on (the
 * type among them), LRU with KC_FFT_CACHE entries (plans hold device
 * memory: twiddles, Bluestein chirps). Their workspace is not cuFFT's own:
 * auto allocation is off and every execution takes its workspace from
 * kiln's allocator, so it is counted, reused as any scratch rather than
 * held by each cached plan, and taken from the graph's pool during a
 * capture (the graph then owns the block it baked in). A plan used during a
 * capture is pinned, never evicted: the graph's kernels keep pointing at
 * its tables. One lock per device covers the cache and the plan's stream
 * and work area up to the launch. */
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
    long long type; /* a cufftType; as wide as the rest, so the key has no padding for memcmp */
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

static bool real_in(long long type) { return type == CUFFT_R2C || type == CUFFT_D2Z; }
static bool real_out(long long type) { return type == CUFFT_C2R || type == CUFFT_Z2D; }

/* The op a plan type serves, for messages. */
static const char *op_of(long long type) { return real_in(type) ? "rfft" : real_out(type) ? "irfft" : "fft"; }

static const char *type_name(long long type) {
    switch (type) {
    case CUFFT_C2C: return "C2C";
    case CUFFT_Z2Z: return "Z2Z";
    case CUFFT_R2C: return "R2C";
    case CUFFT_D2Z: return "D2Z";
    case CUFFT_C2R: return "C2R";
    case CUFFT_Z2D: return "Z2D";
    default: return "an unknown type";
    }
}

static kn_status fft_check(cufftResult r, const kc_dev *d, const char *what, const plan_key *k) {
    if (r == CUFFT_SUCCESS) return KN_OK;
    return kn__err(r == CUFFT_ALLOC_FAILED ? KN_ERR_OOM : KN_ERR_DEVICE,
                   "%s: cuFFT error %s (%d) on cuda:%d %s (%s, length %lld, batch %lld, input stride %lld "
                   "distance %lld in %s elements, output stride %lld distance %lld in %s elements)",
                   op_of(k->type), kc_fft_result_name(r), (int)r, d->index, what, type_name(k->type), k->n, k->batch,
                   k->istride, k->idist, real_in(k->type) ? "real" : "complex", k->ostride, k->odist,
                   real_out(k->type) ? "real" : "complex");
}

/* Whether every prime factor of n is at most KC_FFT_SMOOTH. */
static bool smooth(long long n) {
    for (long long p = 2; p <= KC_FFT_SMOOTH && n > 1; p++)
        while (n % p == 0) n /= p;
    return n == 1;
}

/* Drops the least recently used unpinned plan once KC_FFT_CACHE are kept.
 * Not during a capture: the stream cannot be waited for then (the cache
 * shrinks back at the next plan made outside one). */
static kn_status evict(kc_dev *d, plan_cache *c, const char *op) {
    int unpinned = 0, lru = -1;
    for (int i = 0; i < c->n; i++)
        if (!c->e[i].pinned) {
            unpinned++;
            if (lru < 0 || c->e[i].last < c->e[lru].last) lru = i;
        }
    if (unpinned < KC_FFT_CACHE || d->capture) return KN_OK;
    /* Queued executions may still read its tables. */
    kn_status s = kc_check(cudaStreamSynchronize(d->stream), op);
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
    const char *op = op_of(key->type);
    if (d->capture && !smooth(key->n)) {
        kn__err(KN_ERR_UNSUPPORTED,
                "%s: length %lld has a prime factor above %d (cuFFT's Bluestein path), whose plan cannot be "
                "made safely during a graph capture on cuda:%d; run the step once before capturing it, so "
                "the plan is cached",
                op, key->n, KC_FFT_SMOOTH, d->index);
        return NULL;
    }
    if (evict(d, c, op) != KN_OK) return NULL;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : KC_FFT_CACHE;
        plan_entry *e = realloc(c->e, (size_t)cap * sizeof *e);
        if (!e) return kn__err(KN_ERR_OOM, "%s: out of host memory for the plan cache", op), NULL;
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
/* One batch dim of the transform, in elements of each side. */
typedef struct {
    int64_t size, xs, os;
} bdim;

/* The transform of one view pair: length n at strides (is, os), xlen and
 * olen elements along the dim on each side (n, or n/2 + 1 bins), and the
 * batch dims left after merging, outermost first. */
typedef struct {
    int64_t n, is, os, xlen, olen;
    int nb;
    bdim b[KN_MAX_DIMS];
} layout;

/* The layout of a transform along dim of nd dims of the given shape (the
 * size along dim ignored), x and out at strides xs and os in their own
 * elements. */
static layout layout_of(int nd, const int64_t *shape, const int64_t *xs, const int64_t *os, int dim, int64_t n,
                        int64_t xlen, int64_t olen) {
    layout L = {.n = n, .is = xs[dim], .os = os[dim], .xlen = xlen, .olen = olen};
    for (int d = 0; d < nd; d++) {
        if (d == dim || shape[d] == 1) continue;
        bdim b = {shape[d], xs[d], os[d]};
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

/* cuFFT's batch among L's dims (-1: at most one, nothing to loop over), and
 * in *loops the executions the others take. */
static int pick_batch(const layout *L, int64_t *loops) {
    *loops = 1;
    if (L->nb <= 1) return -1;
    int batch = 0;
    for (int j = 1; j < L->nb; j++)
        if (L->b[j].size > L->b[batch].size) batch = j;
    for (int j = 0; j < L->nb; j++)
        if (j != batch) *loops *= L->b[j].size;
    return batch;
}

/* Strides, in units of `unit` (2 for the real view of complex elements),
 * that store nd dims of shape, with len along dim, dim innermost and the
 * others in order outside it; returns the element count. */
static int64_t inner_order(int nd, const int64_t *shape, int dim, int64_t len, int64_t unit, int64_t *stride) {
    int64_t step = unit * len;
    stride[dim] = unit;
    for (int d = nd - 1; d >= 0; d--) {
        if (d == dim) continue;
        stride[d] = step;
        step *= shape[d];
    }
    return step / unit;
}

/* Row-major strides of nd dims of shape with len along dim, in units of
 * `unit`; returns the element count. */
static int64_t row_major(int nd, const int64_t *shape, int dim, int64_t len, int64_t unit, int64_t *stride) {
    int64_t step = unit;
    for (int d = nd - 1; d >= 0; d--) {
        stride[d] = step;
        step *= d == dim ? len : shape[d];
    }
    return step / unit;
}

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

/* Whether real x can be R2C's input in place: positive strides, the start
 * aligned to a complex element (cuFFT's real kernels read pairs). */
static bool real_view_ok(const kn_operand *x) {
    if ((uintptr_t)x->data % (2 * kn_dtype_size(x->dtype))) return false;
    for (int d = 0; d < x->ndim; d++)
        if (x->shape[d] > 1 && x->stride[d] <= 0) return false;
    return true;
}

/* ---- execution -------------------------------------------------------------------------------- */
static cufftResult exec(const plan_entry *p, void *in, void *out, int dir) {
    switch (p->key.type) {
    case CUFFT_C2C: return kc_fft.cufftExecC2C(p->h, (cufftComplex *)in, (cufftComplex *)out, dir);
    case CUFFT_Z2Z: return kc_fft.cufftExecZ2Z(p->h, (cufftDoubleComplex *)in, (cufftDoubleComplex *)out, dir);
    case CUFFT_R2C: return kc_fft.cufftExecR2C(p->h, (cufftReal *)in, (cufftComplex *)out);
    case CUFFT_D2Z: return kc_fft.cufftExecD2Z(p->h, (cufftDoubleReal *)in, (cufftDoubleComplex *)out);
    case CUFFT_C2R: return kc_fft.cufftExecC2R(p->h, (cufftComplex *)in, (cufftReal *)out);
    case CUFFT_Z2D: return kc_fft.cufftExecZ2D(p->h, (cufftDoubleComplex *)in, (cufftDoubleReal *)out);
    default: return CUFFT_INVALID_TYPE;
    }
}

/* The transform of L: the plan of `type` executed at every (x, out) offset
 * that the loop dims give (all of L's batch dims but `batch`, or none when
 * batch < 0). isz and osz: bytes of an element of each side. */
static kn_status run_plan(kc_dev *d, long long type, int dir, const layout *L, int batch, char *x, size_t isz,
                          char *out, size_t osz) {
    bdim b = L->nb ? L->b[batch < 0 ? 0 : batch] : (bdim){1, L->xlen * L->is, L->olen * L->os};
    plan_key key = {type, L->n, L->is, b.xs, L->os, b.os, b.size};
    call_once(&locks_once, locks_init);
    plan_cache *c = &caches[d->index];
    mtx_lock(&locks[d->index]);
    kn_status s = KN_OK;
    plan_entry *p = get_plan(d, c, &key);
    void *work = NULL;
    if (!p) s = kn_error_code();
    if (s == KN_OK && d->capture) p->pinned = true;
    if (s == KN_OK) s = fft_check(kc_fft.cufftSetStream(p->h, d->stream), d, "setting the stream", &key);
    if (s == KN_OK && p->work) {
        /* Freed right after the launch: the allocator's next user of the
         * block queues behind it on the same stream. */
        if (!(work = kc_alloc(d->index, p->work))) s = kn_error_code();
        if (s == KN_OK) s = fft_check(kc_fft.cufftSetWorkArea(p->h, work), d, "setting the work area", &key);
    }
    int64_t idx[KN_MAX_DIMS] = {0};
    for (bool more = s == KN_OK; more;) {
        int64_t xo = 0, oo = 0;
        for (int j = 0; j < L->nb; j++)
            if (batch >= 0 && j != batch) {
                xo += idx[j] * L->b[j].xs;
                oo += idx[j] * L->b[j].os;
            }
        s = fft_check(exec(p, x + xo * (int64_t)isz, out + oo * (int64_t)osz, dir), d, "executing a plan", &key);
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

/* The lines of a contiguous scratch with dim innermost: one batch of them. */
static layout lines(int64_t n, int64_t xlen, int64_t olen, int64_t count) {
    layout L = {.n = n, .is = 1, .os = 1, .xlen = xlen, .olen = olen, .nb = 1};
    L.b[0] = (bdim){count, xlen, olen};
    return L;
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

/* out = scale * x, element by element (views of one shape). */
static kn_status scaled_copy(kc_dev *d, const kn_operand *out, const kn_operand *x, double scale) {
    return scale == 1 ? kc_copy_view(d, out, x) : kc_unary_view(d, out, x, KN_UNARY_MUL_SCALAR, scale, 0);
}

/* ---- FFT (complex to complex) ------------------------------------------------------------------- */
/* The transform through a copy with dim innermost: x -> t (contiguous in
 * that order), in place on t, t -> out with the scale folded in. */
static kn_status fft_via_copy(kc_dev *d, const kn_fft_args *a, const kn_operand *x, int dim, int dir) {
    kn_dtype dt = x->dtype;
    int r = x->ndim - 1;
    int64_t n = x->shape[dim];
    kn_operand t = *x;
    t.stride[r] = 1;
    int64_t count = inner_order(r, x->shape, dim, n, 2, t.stride);
    size_t cs = 2 * kn_dtype_size(dt), nbytes = (size_t)count * cs;
    if (!(t.data = kc_alloc(d->index, nbytes))) return kn_error_code();
    kn_status s = kc_copy_view(d, &t, x);
    layout L = lines(n, n, n, count / n);
    if (s == KN_OK) s = run_plan(d, dt == KN_F64 ? CUFFT_Z2Z : CUFFT_C2C, dir, &L, -1, t.data, cs, t.data, cs);
    if (s == KN_OK) s = scaled_copy(d, &a->out, &t, a->scale);
    kc_free(d->index, t.data, nbytes);
    return s;
}

static kn_status fft_views(kc_dev *d, const kn_fft_args *a, const kn_operand *x, int dim) {
    const kn_operand *out = &a->out;
    kn_dtype dt = x->dtype;
    size_t cs = 2 * kn_dtype_size(dt);
    int dir = a->inverse ? CUFFT_INVERSE : CUFFT_FORWARD;
    int r = x->ndim - 1;
    int64_t n = x->shape[dim], xs[KN_MAX_DIMS], os[KN_MAX_DIMS], loops;
    for (int k = 0; k < r; k++) xs[k] = x->stride[k] / 2, os[k] = out->stride[k] / 2;
    layout L = layout_of(r, x->shape, xs, os, dim, n, n, n);
    int batch = pick_batch(&L, &loops);
    if (loops > KC_FFT_LOOPS) return fft_via_copy(d, a, x, dim, dir);
    kn_status s = run_plan(d, dt == KN_F64 ? CUFFT_Z2Z : CUFFT_C2C, dir, &L, batch, x->data, cs, out->data, cs);
    if (s == KN_OK && a->scale != 1)
        s = kc_fft_scale(d, out->data, out->data, dt, kn_operand_numel(out), a->scale, "fft");
    return s;
}

/* Float32 and float64 in and out: cuFFT has every length and layout the
 * ops can ask for; what it lacks (a plan it refuses, the library absent)
 * fails with cuFFT's own reason rather than falling to the composite,
 * which is quadratic in the length and refuses long ones anyway. */
static bool fft_dtypes(const kn_operand *x, const kn_operand *out) {
    return (x->dtype == KN_F32 || x->dtype == KN_F64) && out->dtype == x->dtype;
}

bool kc_fft_supports(int index, const void *args) {
    (void)index;
    const kn_fft_args *a = args;
    return fft_dtypes(&a->x, &a->out);
}

bool kc_fft_real_supports(int index, kn_op op, const void *args) {
    (void)index;
    if (op == KN_OP_RFFT) return fft_dtypes(&((const kn_rfft_args *)args)->x, &((const kn_rfft_args *)args)->out);
    return fft_dtypes(&((const kn_irfft_args *)args)->x, &((const kn_irfft_args *)args)->out);
}

kn_status kn__cuda_fft(int device, const void *args) {
    const kn_fft_args *a = args;
    kc_dev *d = kc_enter(device, "fft", false);
    if (!d) return kn_error_code();
    int r = a->x.ndim - 1, dim = (int)a->dim;
    if (r < 1 || dim < 0 || dim >= r || a->out.ndim != a->x.ndim || !fft_dtypes(&a->x, &a->out) ||
        memcmp(a->out.shape, a->x.shape, (size_t)a->x.ndim * sizeof a->x.shape[0]) || !kn_operand_contiguous(&a->out))
        return kn__err(KN_ERR_INVALID, "fft: expected float32/float64 x [..., 2] with dim < rank - 1 and a contiguous "
                       "out of its shape and dtype");
    if (kn_operand_numel(&a->x) == 0) return KN_OK;
    if (a->x.shape[dim] == 1) /* a transform of length 1 is the scale */
        return scaled_copy(d, &a->out, &a->x, a->scale);
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

/* ---- RFFT (real to its n/2 + 1 bins) --------------------------------------------------------------- */
/* One part (0 real, 1 imaginary) of the pairs view v: its shape less the pairs. */
static kn_operand part_of(const kn_operand *v, int part) {
    kn_operand p = *v;
    p.ndim = v->ndim - 1;
    p.data = (char *)v->data + part * kn_dtype_size(v->dtype);
    return p;
}

/* Through a copy with dim innermost: x -> t real, R2C into u (bins
 * innermost), u -> out with the scale folded in. */
static kn_status rfft_via_copy(kc_dev *d, const kn_rfft_args *a, const kn_operand *x, int dim) {
    kn_dtype dt = x->dtype;
    size_t es = kn_dtype_size(dt);
    int r = x->ndim;
    int64_t n = x->shape[dim], bins = n / 2 + 1;
    kn_operand t = *x, u = a->out;
    int64_t count = inner_order(r, x->shape, dim, n, 1, t.stride);
    (void)inner_order(r, x->shape, dim, bins, 2, u.stride);
    u.stride[r] = 1;
    size_t tbytes = (size_t)count * es, ubytes = (size_t)(count / n * bins) * 2 * es;
    t.data = kc_alloc(d->index, tbytes);
    u.data = t.data ? kc_alloc(d->index, ubytes) : NULL;
    kn_status s = u.data ? kc_copy_view(d, &t, x) : kn_error_code();
    layout L = lines(n, n, bins, count / n);
    if (s == KN_OK) s = run_plan(d, dt == KN_F64 ? CUFFT_D2Z : CUFFT_R2C, CUFFT_FORWARD, &L, -1, t.data, es, u.data, 2 * es);
    if (s == KN_OK) s = scaled_copy(d, &a->out, &u, a->scale);
    if (u.data) kc_free(d->index, u.data, ubytes);
    if (t.data) kc_free(d->index, t.data, tbytes);
    return s;
}

static kn_status rfft_views(kc_dev *d, const kn_rfft_args *a, const kn_operand *x, int dim) {
    const kn_operand *out = &a->out;
    kn_dtype dt = x->dtype;
    size_t es = kn_dtype_size(dt);
    int r = x->ndim;
    int64_t n = x->shape[dim], os[KN_MAX_DIMS], loops;
    for (int k = 0; k < r; k++) os[k] = out->stride[k] / 2;
    layout L = layout_of(r, x->shape, x->stride, os, dim, n, n, n / 2 + 1);
    int batch = pick_batch(&L, &loops);
    if (loops > KC_FFT_LOOPS) return rfft_via_copy(d, a, x, dim);
    kn_status s = run_plan(d, dt == KN_F64 ? CUFFT_D2Z : CUFFT_R2C, CUFFT_FORWARD, &L, batch, x->data, es, out->data,
                           2 * es);
    if (s == KN_OK && a->scale != 1)
        s = kc_fft_scale(d, out->data, out->data, dt, kn_operand_numel(out), a->scale, "rfft");
    return s;
}

kn_status kn__cuda_rfft(int device, const void *args) {
    const kn_rfft_args *a = args;
    kc_dev *d = kc_enter(device, "rfft", false);
    if (!d) return kn_error_code();
    int r = a->x.ndim, dim = (int)a->dim;
    bool ok = r >= 1 && r < KN_MAX_DIMS && dim >= 0 && dim < r && a->out.ndim == r + 1 && a->out.shape[r] == 2 &&
              fft_dtypes(&a->x, &a->out) && kn_operand_contiguous(&a->out) && a->x.shape[dim] >= 1;
    for (int k = 0; ok && k < r; k++)
        ok = a->out.shape[k] == (k == dim ? a->x.shape[dim] / 2 + 1 : a->x.shape[k]);
    if (!ok)
        return kn__err(KN_ERR_INVALID, "rfft: expected float32/float64 x with dim < rank and a contiguous out of "
                       "its dtype and shape, n/2 + 1 along dim, with a last dim of 2");
    if (kn_operand_numel(&a->x) == 0) return KN_OK;
    kn_status s = KN_OK;
    if (a->x.shape[dim] == 1) { /* one bin: the scaled sample, imaginary part 0 */
        kn_operand re = part_of(&a->out, 0), im = part_of(&a->out, 1);
        s = scaled_copy(d, &re, &a->x, a->scale);
        return s == KN_OK ? kc_fill_view(d, &im, 0, 0) : s;
    }
    if ((s = kc_fft_load("rfft")) != KN_OK) return s;
    kc_buf xb = {0};
    const kn_operand *x = &a->x;
    if (!real_view_ok(x)) {
        s = copy_in(d, x, &xb);
        x = &xb.v;
    }
    if (s == KN_OK) s = rfft_views(d, a, x, dim);
    kc_buf_free(d, &xb);
    return s == KN_OK ? kc_after(d, "rfft") : s;
}

/* ---- IRFFT (n/2 + 1 bins to n reals) ------------------------------------------------------------- */
/* The bins x copied into t (their pairs view, its strides set by the
 * caller, contiguous in some order) with the scale folded in and the
 * imaginary parts of bin 0 and (even n) bin n/2 zeroed. */
static kn_status c2r_input(kc_dev *d, const kn_operand *t, const kn_operand *x, int dim, int64_t n, double scale) {
    kn_status s;
    bool same = kn_operand_contiguous(x) && kn_operand_contiguous(t); /* one order: a flat pass */
    if (same && scale != 1)
        s = kc_fft_scale(d, t->data, x->data, x->dtype, kn_operand_numel(t), scale, "irfft");
    else
        s = scaled_copy(d, t, x, scale);
    /* Those bins' imaginary parts: one fill over a view with 1 or 2 entries
     * along dim, n/2 bins apart. */
    kn_operand im = part_of(t, 1);
    im.shape[dim] = n % 2 == 0 ? 2 : 1;
    im.stride[dim] = n / 2 * t->stride[dim];
    return s == KN_OK ? kc_fill_view(d, &im, 0, 0) : s;
}

kn_status kn__cuda_irfft(int device, const void *args) {
    const kn_irfft_args *a = args;
    kc_dev *d = kc_enter(device, "irfft", false);
    if (!d) return kn_error_code();
    int r = a->out.ndim, dim = (int)a->dim;
    int64_t n = a->n, bins = n / 2 + 1;
    bool ok = r >= 1 && r < KN_MAX_DIMS && dim >= 0 && dim < r && n >= 1 && a->x.ndim == r + 1 &&
              a->x.shape[r] == 2 && fft_dtypes(&a->x, &a->out) && kn_operand_contiguous(&a->out);
    for (int k = 0; ok && k < r; k++)
        ok = a->out.shape[k] == (k == dim ? n : a->x.shape[k]) && (k != dim || a->x.shape[k] == bins);
    if (!ok)
        return kn__err(KN_ERR_INVALID, "irfft: expected float32/float64 x [..., 2] with n/2 + 1 bins along dim < "
                       "rank - 1 and a contiguous out of its dtype and shape less the pairs, n along dim");
    if (kn_operand_numel(&a->out) == 0) return KN_OK;
    kn_status s = KN_OK;
    if (n == 1) { /* one sample: the scaled real part of the one bin */
        kn_operand re = part_of(&a->x, 0);
        return scaled_copy(d, &a->out, &re, a->scale);
    }
    if ((s = kc_fft_load("irfft")) != KN_OK) return s;
    kn_dtype dt = a->out.dtype;
    size_t es = kn_dtype_size(dt);
    long long type = dt == KN_F64 ? CUFFT_Z2D : CUFFT_C2R;
    /* C2R overwrites its input: it runs on a copy, in x's order (then
     * straight into out, when at most KC_FFT_LOOPS executions cover the
     * batch dims) or with dim innermost (into a second scratch, copied
     * into out). */
    kn_operand t = a->x, u = a->out;
    t.stride[r] = 1;
    int64_t count = row_major(r, a->x.shape, dim, bins, 2, t.stride), xs[KN_MAX_DIMS], loops;
    for (int k = 0; k < r; k++) xs[k] = t.stride[k] / 2;
    layout L = layout_of(r, a->out.shape, xs, a->out.stride, dim, n, bins, n);
    int batch = pick_batch(&L, &loops);
    bool direct = loops <= KC_FFT_LOOPS;
    if (!direct) {
        (void)inner_order(r, a->x.shape, dim, bins, 2, t.stride);
        (void)inner_order(r, a->out.shape, dim, n, 1, u.stride);
        L = lines(n, bins, n, count / bins);
        batch = -1;
    }
    size_t tbytes = (size_t)count * 2 * es, ubytes = direct ? 0 : (size_t)(count / bins * n) * es;
    t.data = kc_alloc(d->index, tbytes);
    if (!direct) u.data = t.data ? kc_alloc(d->index, ubytes) : NULL;
    s = t.data && u.data ? c2r_input(d, &t, &a->x, dim, n, a->scale) : kn_error_code();
    if (s == KN_OK) s = run_plan(d, type, CUFFT_INVERSE, &L, batch, t.data, 2 * es, u.data, es);
    if (s == KN_OK && !direct) s = kc_copy_view(d, &a->out, &u);
    if (!direct && u.data) kc_free(d->index, u.data, ubytes);
    if (t.data) kc_free(d->index, t.data, tbytes);
    return s == KN_OK ? kc_after(d, "irfft") : s;
}
