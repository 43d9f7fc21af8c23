/* One harness for every backend. A table of cases, each an op run through
 * the public API (a builder) on inputs the table describes, over dtypes and
 * layouts (contiguous, transposed, strided, offset: a slice, broadcast:
 * expanded; zero-size shapes are cases of their own). Every case runs on
 * every device present: every registered kind with devices (cpu, cuda where
 * there is a GPU, the "prim" backend of primitives only, the kernel-less
 * "test" device), against the CPU's result and against a float64 reference
 * (the inputs cast to float64, run on the CPU).
 *
 *   test_backend_ops            correctness
 *   test_backend_ops --grad     gradients: backward on the device against the
 *                               CPU and the float64 reference, and finite
 *                               differences in float64 where the device has it
 *   test_backend_ops --perf     median time per case and device (printed only)
 *   --case SUBSTR, --device NAME, --verbose narrow or widen the run.
 *
 * A case a device cannot run (a dtype its backend does not declare, graph
 * capture where it has none) prints as SKIPPED and never counts as passed. */
#include "kt_cases.h"

/* Case ci of the tables in turn: kt_cases, kt_vision_cases, then kt_fft_cases. */
#define N_CASES (kt_case_count + kt_vision_case_count + kt_fft_case_count)
#define CASE_AT(ci)                                                                                       \
    ((ci) < kt_case_count                          ? &kt_cases[ci]                                       \
     : (ci) < kt_case_count + kt_vision_case_count ? &kt_vision_cases[(ci)-kt_case_count]                \
                                                   : &kt_fft_cases[(ci)-kt_case_count - kt_vision_case_count])

#include <time.h>

/* ---- inputs ----------------------------------------------------------------------------------- */
static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0); }

static int64_t numel_of(int nd, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n *= shape[d];
    return n;
}

/* The shape of input i (dims clipped to `clip` for finite differences). */
static void input_shape(const kt_case *c, int i, int clip, int64_t *shape) {
    const kt_in *in = &c->in[i];
    for (int d = 0; d < in->nd; d++) {
        shape[d] = in->shape[d];
        bool keep = in->kind == KT_CODES && d == in->nd - 1; /* one column per table */
        if (clip && !keep && shape[d] > clip) shape[d] = clip;
    }
}

/* n values for input i: data uniform in [lo, hi) (integers: 10x that,
 * floored; uint8 of its magnitude; bool a coin), indices floored uniform in
 * [lo, hi), codes below their table's row count, or the given values. */
static void gen_values(const kt_case *c, int i, kn_dtype dt, int nd, const int64_t *shape, int clip, double *v,
                       uint64_t seed) {
    const kt_in *in = &c->in[i];
    int64_t n = numel_of(nd, shape);
    for (int64_t j = 0; j < n; j++) {
        double u = unif(&seed), x;
        switch (in->kind) {
        case KT_INDEX: {
            double hi = clip && in->hi > clip ? clip : in->hi;
            x = floor(in->lo + (hi - in->lo) * u);
            break;
        }
        case KT_CODES: {
            int col = (int)(j % shape[nd - 1]);
            int64_t ts[4];
            input_shape(c, 1 + col, clip, ts);
            x = floor(u * (double)ts[0]);
            break;
        }
        case KT_VALUES: x = in->vals[j]; break;
        default:
            x = in->lo + (in->hi - in->lo) * u;
            if (dt == KN_BOOL) x = u < 0.5;
            else if (dt == KN_U8) x = floor(fabs(x) * 10);
            else if (!kn_dtype_is_float(dt)) x = floor(x * 10);
            break;
        }
        v[j] = x;
    }
}

static kn_dtype input_dtype(const kt_case *c, int i, kn_dtype dt) {
    return c->in[i].dt < 0 ? dt : (kn_dtype)c->in[i].dt;
}

/* Whether input i is a leaf whose gradient is compared. */
static bool wants_grad(const kt_case *c, int i, kn_dtype dt) {
    const kt_in *in = &c->in[i];
    return in->kind == KT_DATA && !in->fixed && !in->nograd && kn_dtype_is_float(input_dtype(c, i, dt));
}

/* Input i on dev in a layout: logical row-major values v (for broadcast: the
 * values of the size-1 first dim), laid into a base tensor that the layout
 * views. Unused elements of strided and offset bases hold NaN (99 for
 * integers), so a kernel that reads one shows. f64: case-dtype floats are
 * cast to float64 after rounding to the case's dtype (the reference). */
static kn_tensor *make_input(const kt_case *c, int ci, int i, kn_dtype cdt, int layout, kn_device dev, bool f64,
                             bool grad, int clip, kn_tensor **leaf) {
    const kt_in *in = &c->in[i];
    kn_dtype dt = input_dtype(c, i, cdt);
    int nd = in->nd, lay = in->fixed || in->kind == KT_VALUES ? CONTIG : layout;
    if ((lay == TRANSPOSED && nd < 2) || nd < 1) lay = CONTIG;
    int64_t shape[4] = {0}, bs[4];
    input_shape(c, i, clip, shape);
    memcpy(bs, shape, sizeof bs);
    if (lay == TRANSPOSED) bs[nd - 1] = shape[nd - 2], bs[nd - 2] = shape[nd - 1];
    if (lay == STRIDED) bs[nd - 1] = 2 * shape[nd - 1] + 1;
    if (lay == OFFSET) bs[0] = shape[0] + 3;
    if (lay == BROADCAST) bs[0] = 1;
    int64_t n = numel_of(nd, shape), bn = numel_of(nd, bs);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v), *b = malloc((size_t)(bn ? bn : 1) * sizeof *b);
    uint64_t seed = (uint64_t)ci * 1000003u + (uint64_t)i * 7919u + (uint64_t)cdt * 131u + (uint64_t)layout * 17u + 1;
    double filler = kn_dtype_is_float(dt) ? NAN : 99;
    if (lay == BROADCAST) gen_values(c, i, dt, nd, bs, clip, b, seed);
    else gen_values(c, i, dt, nd, shape, clip, v, seed);
    if (lay != BROADCAST) {
        for (int64_t j = 0; j < bn; j++) b[j] = filler;
        /* Element j of the logical shape -> its place in the base. */
        int64_t rows = nd >= 2 ? shape[nd - 2] : 1, cols = nd >= 1 ? shape[nd - 1] : 1, inner = rows * cols;
        for (int64_t j = 0; j < n; j++) {
            int64_t q = j / cols, col = j % cols, pos = j;
            if (lay == TRANSPOSED) pos = (j / inner) * inner + col * rows + (j % inner) / cols;
            if (lay == STRIDED) pos = q * bs[nd - 1] + 2 * col + 1;
            if (lay == OFFSET) pos = j + 2 * (n / (shape[0] ? shape[0] : 1));
            b[pos] = v[j];
        }
    }
    kn_tensor *t = kn_cast(kn_from_data(b, KN_F64, nd, bs, KN_CPU), dt);
    free(v);
    free(b);
    if (f64 && in->dt < 0 && kn_dtype_is_float(dt)) t = kn_cast(t, KN_F64);
    t = kn_to(t, dev);
    if (t && kn_device_equal(dev, KN_CPU)) t = kn_clone(t); /* a leaf of its own */
    if (leaf) *leaf = NULL;
    if (t && grad && wants_grad(c, i, cdt)) {
        kn_requires_grad_(t, true);
        if (leaf) *leaf = t;
    }
    switch (lay) {
    case TRANSPOSED: return kn_transpose(t, -1, -2);
    case STRIDED: return kn_slice(t, -1, 1, bs[nd - 1], 2);
    case OFFSET: return kn_narrow(t, 0, 2, shape[0]);
    case BROADCAST: return kn_expand(t, nd, shape);
    default: return t;
    }
}

/* ---- running a case -------------------------------------------------------------------------- */
typedef struct {
    kn_tensor *in[MAX_IN], *leaf[MAX_IN], *out[MAX_OUT];
    int n_out;
} kt_run;

static int run_case(const kt_case *c, int ci, kn_dtype dt, int layout, kn_device dev, bool f64, bool grad, kt_run *r) {
    memset(r, 0, sizeof *r);
    kt_ctx k = {c, dev, f64 && kn_dtype_is_float(dt) ? KN_F64 : dt, f64};
    for (int i = 0; i < c->n_in; i++) r->in[i] = make_input(c, ci, i, dt, layout, dev, f64, grad, 0, &r->leaf[i]);
    r->n_out = c->build(&k, r->in, r->out);
    return r->n_out;
}

/* sum_k sum(out_k * w_k) over the results that need grad, w_k fixed random
 * values (rounded to the case's dtype), then backward. */
static kn_status backprop(kt_run *r, int ci, kn_dtype dt) {
    kn_tensor *L = NULL;
    kn_dtype wdt = kn_dtype_is_float(dt) ? dt : KN_F32;
    for (int k = 0; k < r->n_out; k++) {
        kn_tensor *o = r->out[k];
        if (!o || !kn_requires_grad(o)) continue;
        int64_t n = kn_numel(o);
        double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
        uint64_t seed = (uint64_t)ci * 31u + (uint64_t)k + 77;
        for (int64_t j = 0; j < n; j++) v[j] = 2 * unif(&seed) - 1;
        kn_tensor *w = kn_to(kn_cast(kn_cast(kn_from_data(v, KN_F64, kn_ndim(o), kn_shape(o), KN_CPU), wdt),
                                     kn_dtype_of(o)), kn_device_of(o));
        free(v);
        kn_tensor *term = kn_sum_all(kn_mul(o, w));
        if (!term) return kn_error_code();
        L = L ? kn_add(L, kn_cast(term, kn_dtype_of(L))) : term;
    }
    if (!L) return kn__err(KN_ERR_AUTOGRAD, "harness: no result requires grad");
    return kn_backward(L);
}

/* The gradient of leaf i (zeros where none arrived). */
static kn_tensor *grad_of(kt_run *r, int i) {
    kn_tensor *l = r->leaf[i];
    if (!l) return NULL;
    kn_tensor *g = kn_grad(l);
    return g ? g : kn_zeros_like(l);
}

/* ---- comparing -------------------------------------------------------------------------------- */
typedef struct {
    double err;
    int64_t at;
    double got, want;
    char why[160];
} kt_diff;

/* Largest |got - want| / (1 + |want|); NaN matches NaN, infinities their own sign. */
static kt_diff compare(kn_tensor *got, kn_tensor *want, bool same_dtype) {
    kt_diff r = {0, -1, 0, 0, ""};
    char s1[64], s2[64];
    if (!got || !want) {
        r.err = INFINITY;
        snprintf(r.why, sizeof r.why, "%s", got ? "no reference result" : "no result");
        return r;
    }
    if (kn_ndim(got) != kn_ndim(want) || memcmp(kn_shape(got), kn_shape(want), (size_t)kn_ndim(got) * 8)) {
        r.err = INFINITY;
        snprintf(r.why, sizeof r.why, "shape %s, expected %s", kn_shape_str(got, s1, sizeof s1),
                 kn_shape_str(want, s2, sizeof s2));
        return r;
    }
    if (same_dtype && kn_dtype_of(got) != kn_dtype_of(want)) {
        r.err = INFINITY;
        snprintf(r.why, sizeof r.why, "dtype %s, expected %s", kn_dtype_name(kn_dtype_of(got)),
                 kn_dtype_name(kn_dtype_of(want)));
        return r;
    }
    int64_t n = kn_numel(got);
    double *a = malloc((size_t)(n ? n : 1) * 8), *b = malloc((size_t)(n ? n : 1) * 8);
    if (kn_to_host(got, a, KN_F64) != KN_OK || kn_to_host(want, b, KN_F64) != KN_OK) {
        r.err = INFINITY;
        snprintf(r.why, sizeof r.why, "read failed: %s", kn_error());
        n = 0;
    }
    for (int64_t i = 0; i < n; i++) {
        if ((a[i] != a[i] && b[i] != b[i]) || a[i] == b[i]) continue;
        double e = fabs(a[i] - b[i]) / (1 + fabs(b[i]));
        if (e != e) e = INFINITY;
        if (e > r.err) r.err = e, r.at = i, r.got = a[i], r.want = b[i];
    }
    free(a);
    free(b);
    return r;
}

static double tol_of(kn_dtype dt) {
    switch (dt) {
    case KN_F64: return 1e-9;
    case KN_F32: return 1e-4;
    case KN_F16: return 1e-2;
    case KN_BF16: return 4e-2;
    default: return 0;
    }
}

/* The tolerance of a result of dtype odt from a case run in dt. */
static bool computes_f64(kn_device dev) {
    const kn_backend *b = kn__backend(dev.kind);
    return !b || !b->dtypes || (b->dtypes >> KN_F64 & 1);
}

static double tol_for(const kt_case *c, kn_dtype dt, kn_dtype odt, double extra, kn_device dev) {
    bool exact = (c->flags & EXACT) && (!(c->flags & EXACT_F64) || computes_f64(dev));
    if (exact) return odt == KN_F64 ? 1e-15 : 0;
    if (!kn_dtype_is_float(odt)) return 0;
    double t = tol_of(odt);
    if (kn_dtype_is_float(dt) && tol_of(dt) > t) t = tol_of(dt);
    return t * (c->tol > 0 ? c->tol : 1) * extra;
}

/* ---- bookkeeping ------------------------------------------------------------------------------ */
#define MAX_DEV 16
static kn_device devs[MAX_DEV];
static int n_devs;
static struct {
    int passed, failed, skipped;
} tally[MAX_DEV];
static bool verbose;
static int printed_failures;

static void describe(char *buf, size_t cap, const kt_case *c, kn_dtype dt, int layout, int d, const char *mode) {
    snprintf(buf, cap, "%s%s [%s, %s] on %s", mode, c->name, kn_dtype_name(dt), kt_layout_name[layout],
             kn_device_str(devs[d]));
}

static void skip(int d, const kt_case *c, kn_dtype dt, int layout, const char *mode, const char *why) {
    char what[256];
    tally[d].skipped++;
    describe(what, sizeof what, c, dt, layout, d, mode);
    printf("SKIPPED %s: %s\n", what, why);
}

static void result(int d, const kt_case *c, kn_dtype dt, int layout, const char *mode, bool ok, const char *fmt, ...)
    KN_PRINTF(7, 8);
static void result(int d, const kt_case *c, kn_dtype dt, int layout, const char *mode, bool ok, const char *fmt, ...) {
    char what[256];
    describe(what, sizeof what, c, dt, layout, d, mode);
    if (ok) {
        tally[d].passed++;
        if (verbose) printf("ok %s\n", what);
        return;
    }
    tally[d].failed++;
    if (printed_failures++ >= 300) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("FAILED %s: %s\n", what, msg);
}

/* Why dev cannot run this case (NULL: it can). */
static const char *unsupported(const kt_case *c, kn_dtype dt, kn_device dev) {
    const kn_backend *b = kn__backend(dev.kind);
    uint32_t have = b && b->dtypes ? b->dtypes : KN_DTYPES_ALL;
    if (!(have >> dt & 1)) return "the backend does not declare this dtype";
    for (int i = 0; i < c->n_in; i++)
        if (!(have >> input_dtype(c, i, dt) & 1)) return "the backend does not declare an input's dtype";
    if ((c->flags & GRAPH) && !kn_graph_supported(dev)) return "the device cannot capture graphs";
    if ((c->flags & OWN_FFT) && (!b || !b->kernels[KN_OP_FFT])) return "no FFT kernel of its own (too long for the composite)";
    return NULL;
}

/* Checks results against the CPU's (the same dtype; not on the CPU itself)
 * and the float64 reference's; the first mismatch goes to msg. */
static bool check_lists(const kt_case *c, kn_dtype dt, kn_device dev, kn_tensor **got, int ng, kn_tensor **cpu, int nc,
                        kn_tensor **ref, int nr, double extra, const char *what, char *msg, size_t cap) {
    bool on_cpu = kn_device_equal(dev, KN_CPU);
    if ((cpu && !on_cpu && ng != nc) || (ref && ng != nr)) {
        snprintf(msg, cap, "%d %s, the CPU gave %d and the reference %d", ng, what, nc, nr);
        return false;
    }
    for (int k = 0; k < ng; k++) {
        if (!got[k]) {
            snprintf(msg, cap, "%s %d: none (%s)", what, k, kn_error());
            return false;
        }
        if (!(c->flags & HOST_OUT) && !kn_device_equal(kn_device_of(got[k]), dev)) {
            snprintf(msg, cap, "%s %d is on %s, not on the device", what, k, kn_device_str(kn_device_of(got[k])));
            return false;
        }
        for (int against = 0; against < 2; against++) {
            if (against ? !ref : !cpu || on_cpu) continue;
            kn_tensor *want = against ? ref[k] : cpu[k];
            kt_diff df = compare(got[k], want, against == 0);
            double tol = tol_for(c, dt, kn_dtype_of(got[k]), extra, dev);
            if (df.err > tol) {
                if (df.why[0])
                    snprintf(msg, cap, "%s %d against the %s: %s", what, k, against ? "float64 reference" : "CPU",
                             df.why);
                else
                    snprintf(msg, cap, "%s %d against the %s: error %.3g > %.3g at element %lld (%.9g, expected %.9g)",
                             what, k, against ? "float64 reference" : "CPU", df.err, tol, (long long)df.at, df.got,
                             df.want);
                return false;
            }
        }
    }
    return true;
}

static bool outputs_ok(const kt_run *r) {
    if (r->n_out <= 0) return false;
    for (int k = 0; k < r->n_out; k++)
        if (!r->out[k]) return false;
    return true;
}

/* ---- modes ------------------------------------------------------------------------------------- */
/* An error case: the op fails on the device (at once, or when a result is
 * read), with the message the table gives, and the device works afterwards. */
static void run_error(int ci, kn_dtype dt, int layout, int d) {
    const kt_case *c = CASE_AT(ci);
    kn_scope s = kn_scope_begin();
    kn_error_clear();
    kt_run got;
    int ng = run_case(c, ci, dt, layout, devs[d], false, false, &got);
    bool failed = ng <= 0 || kn_error_code() != KN_OK;
    for (int k = 0; k < ng && !failed; k++) {
        int64_t n = got.out[k] ? kn_numel(got.out[k]) : 0;
        double *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
        if (!got.out[k] || kn_to_host(got.out[k], buf, KN_F64) != KN_OK) failed = true;
        free(buf);
    }
    if (!failed && kn_device_synchronize(devs[d]) != KN_OK) failed = true;
    char err[256];
    snprintf(err, sizeof err, "%s", failed ? kn_error() : "no error");
    bool ok = failed && strstr(err, c->err);
    kn_error_clear();
    double after = kn_item(kn_sum_all(kn_ones(KN_SHAPE(3), KN_F32, devs[d])));
    result(d, c, dt, layout, "", ok && after == 3, "expected the error \"%s\", got \"%s\"%s", c->err, err,
           after == 3 ? "" : "; the device does not work afterwards");
    kn_error_clear();
    kn_scope_end(s);
}

static void run_correctness(int ci) {
    const kt_case *c = CASE_AT(ci);
    for (int dti = 0; dti < KN_DTYPE_COUNT; dti++)
        for (int layout = 0; layout < N_LAYOUTS; layout++) {
            kn_dtype dt = (kn_dtype)dti;
            if (!(c->dtypes >> dt & 1) || !(c->layouts >> layout & 1)) continue;
            kn_scope outer = kn_scope_begin();
            if (c->err) {
                for (int d = 0; d < n_devs; d++) {
                    const char *why = unsupported(c, dt, devs[d]);
                    if (why) skip(d, c, dt, layout, "", why);
                    else run_error(ci, dt, layout, d);
                }
                kn_scope_end(outer);
                continue;
            }
            kt_run cpu, ref;
            int nc = run_case(c, ci, dt, layout, KN_CPU, false, false, &cpu);
            bool have_ref = kn_dtype_is_float(dt) && !(c->flags & NO_REF);
            int nr = have_ref ? run_case(c, ci, dt, layout, KN_CPU, true, false, &ref) : 0;
            kn_error_clear();
            for (int d = 0; d < n_devs; d++) {
                const char *why = unsupported(c, dt, devs[d]);
                if (why) {
                    skip(d, c, dt, layout, "", why);
                    continue;
                }
                kn_scope s = kn_scope_begin();
                kt_run got;
                char msg[512] = "";
                bool ok;
                if (kn_device_equal(devs[d], KN_CPU)) got = cpu; /* the CPU against the reference */
                else run_case(c, ci, dt, layout, devs[d], false, false, &got);
                if (!outputs_ok(&got)) {
                    ok = false;
                    snprintf(msg, sizeof msg, "the op failed: %s", kn_error());
                } else {
                    ok = check_lists(c, dt, devs[d], got.out, got.n_out, cpu.out, nc, have_ref ? ref.out : NULL, nr, 1,
                                     "result", msg, sizeof msg);
                }
                result(d, c, dt, layout, "", ok, "%s", msg);
                kn_error_clear();
                kn_scope_end(s);
            }
            kn_scope_end(outer);
        }
}

/* Finite differences in float64 on the device, over the inputs that want
 * gradients; the others (indices, in-place state, class weights) stay put. */
typedef struct {
    const kt_case *c;
    kn_device dev;
    kn_tensor *all[MAX_IN];
    int map[MAX_IN], n;
} gc_ctx;

static kn_tensor *gc_fn(kn_tensor **in, void *p) {
    gc_ctx *g = p;
    kn_tensor *x[MAX_IN], *o[MAX_OUT] = {0};
    memcpy(x, g->all, sizeof x);
    for (int j = 0; j < g->n; j++) x[g->map[j]] = in[j];
    kt_ctx k = {g->c, g->dev, KN_F64, false};
    return g->c->build(&k, x, o) > 0 ? o[0] : NULL;
}

static void run_gradcheck(int ci, int d) {
    const kt_case *c = CASE_AT(ci);
    const char *why = unsupported(c, KN_F64, devs[d]);
    if (why) {
        skip(d, c, KN_F64, CONTIG, "gradcheck ", why);
        return;
    }
    kn_scope s = kn_scope_begin();
    gc_ctx g = {.c = c, .dev = devs[d]};
    kn_tensor *gin[MAX_IN];
    for (int i = 0; i < c->n_in; i++) {
        g.all[i] = make_input(c, ci, i, KN_F64, CONTIG, devs[d], false, false, 4, NULL);
        if (wants_grad(c, i, KN_F64)) g.map[g.n] = i, gin[g.n++] = g.all[i];
    }
    double e = g.n ? kn_gradcheck(gc_fn, g.n, gin, &g, 1e-6) : -1;
    result(d, c, KN_F64, CONTIG, "gradcheck ", e >= 0 && e < 1e-5, "finite differences: error %g%s%s", e,
           e < 0 ? ": " : "", e < 0 ? kn_error() : "");
    kn_error_clear();
    kn_scope_end(s);
}

static void run_gradients(int ci) {
    const kt_case *c = CASE_AT(ci);
    if (!(c->flags & GRAD) || c->err) return;
    for (int dti = 0; dti < KN_DTYPE_COUNT; dti++)
        for (int layout = 0; layout < N_LAYOUTS; layout++) {
            kn_dtype dt = (kn_dtype)dti;
            if (!(c->dtypes >> dt & 1) || !(c->layouts >> layout & 1) || !kn_dtype_is_float(dt)) continue;
            kn_scope outer = kn_scope_begin();
            kt_run cpu, ref;
            bool have_ref = !(c->flags & NO_REF);
            kn_status sc =
                run_case(c, ci, dt, layout, KN_CPU, false, true, &cpu) > 0 ? backprop(&cpu, ci, dt) : KN_ERR_NULL;
            kn_status sr = have_ref && run_case(c, ci, dt, layout, KN_CPU, true, true, &ref) > 0
                               ? backprop(&ref, ci, dt)
                               : KN_ERR_NULL;
            kn_tensor *gc[MAX_IN] = {0}, *gr[MAX_IN] = {0};
            int ng = 0;
            for (int i = 0; i < c->n_in; i++)
                if (cpu.leaf[i]) {
                    gc[ng] = sc == KN_OK ? grad_of(&cpu, i) : NULL;
                    gr[ng++] = sr == KN_OK ? grad_of(&ref, i) : NULL;
                }
            kn_error_clear();
            for (int d = 0; d < n_devs; d++) {
                const char *why = unsupported(c, dt, devs[d]);
                if (why) {
                    skip(d, c, dt, layout, "grad ", why);
                    continue;
                }
                kn_scope s = kn_scope_begin();
                kt_run got;
                char msg[512] = "";
                bool ok = false;
                kn_status st = run_case(c, ci, dt, layout, devs[d], false, true, &got) > 0 ? backprop(&got, ci, dt)
                                                                                          : kn_error_code();
                if (st != KN_OK) {
                    snprintf(msg, sizeof msg, "forward or backward failed: %s", kn_error());
                } else {
                    kn_tensor *gd[MAX_IN] = {0};
                    int n = 0;
                    for (int i = 0; i < c->n_in; i++)
                        if (got.leaf[i]) gd[n++] = grad_of(&got, i);
                    ok = check_lists(c, dt, devs[d], gd, n, gc, ng, have_ref ? gr : NULL, ng, 2, "gradient", msg,
                                     sizeof msg);
                }
                result(d, c, dt, layout, "grad ", ok, "%s", msg);
                kn_error_clear();
                kn_scope_end(s);
            }
            kn_scope_end(outer);
        }
    if ((c->flags & GRADCHECK) && (c->dtypes & BIT(KN_F64)))
        for (int d = 0; d < n_devs; d++) run_gradcheck(ci, d);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median time of the builder (inputs made beforehand), float32 where the
 * case has it, contiguous, to the device's synchronize. */
static void run_perf(int ci) {
    const kt_case *c = CASE_AT(ci);
    if (c->err) return;
    kn_dtype dt = KN_F32;
    if (!(c->dtypes & BIT(KN_F32)))
        for (int i = KN_DTYPE_COUNT - 1; i >= 0; i--)
            if (c->dtypes >> i & 1) dt = (kn_dtype)i;
    printf("%-44.44s %-8s", c->name, kn_dtype_name(dt));
    for (int d = 0; d < n_devs; d++) {
        if (unsupported(c, dt, devs[d])) {
            printf(" %11s", "skipped");
            continue;
        }
        kn_scope outer = kn_scope_begin();
        kn_tensor *x[MAX_IN], *o[MAX_OUT];
        for (int i = 0; i < c->n_in; i++) x[i] = make_input(c, ci, i, dt, CONTIG, devs[d], false, false, 0, NULL);
        kt_ctx k = {c, devs[d], dt, false};
        double t[25], total = 0;
        int reps = 0;
        bool ok = true;
        for (int r = -1; r < 25 && ok && (r < 3 || total < 0.3); r++) {
            kn_scope s = kn_scope_begin();
            double t0 = now();
            ok = c->build(&k, x, o) > 0 && kn_device_synchronize(devs[d]) == KN_OK;
            double dt_ = now() - t0;
            kn_scope_end(s);
            if (r >= 0) t[reps++] = dt_, total += dt_; /* r = -1: warm-up */
        }
        if (ok && reps) {
            qsort(t, (size_t)reps, sizeof *t, cmp_double);
            printf(" %9.1f us", t[reps / 2] * 1e6);
        } else {
            printf(" %11s", "failed");
        }
        kn_error_clear();
        kn_scope_end(outer);
    }
    printf("\n");
}

/* ---- main ---------------------------------------------------------------------------------------- */
static bool is_fused_name(const char *name) {
    for (int op = 0; op < KN_OP_COUNT; op++)
        if (kn__op_tier((kn_op)op) == KN_TIER_FUSED && !strcmp(kn__op_name((kn_op)op), name)) return true;
    return false;
}

int main(int argc, char **argv) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    bool grad = false, perf = false;
    const char *only_case = NULL, *only_device = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--grad")) grad = true;
        else if (!strcmp(argv[i], "--perf")) perf = true;
        else if (!strcmp(argv[i], "--verbose")) verbose = true;
        else if (!strcmp(argv[i], "--case") && i + 1 < argc) only_case = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) only_device = argv[++i];
        else {
            printf("usage: %s [--grad | --perf] [--case SUBSTR] [--device NAME] [--verbose]\n", argv[0]);
            return !strcmp(argv[i], "--help") ? 0 : 2;
        }
    }
    kn_device all[MAX_DEV];
    int n_all = kt_devices(all, MAX_DEV);
    int test_kind = kt_test_kind();
    for (int d = 0; d < n_all; d++) {
        const char *name = kn_device_str(all[d]);
        size_t len = only_device ? strlen(only_device) : 0;
        if (only_device && strcmp(name, only_device) && !(strncmp(name, only_device, len) == 0 && name[len] == ':'))
            continue;
        devs[n_devs++] = all[d];
    }
    if (!n_devs) {
        /* A backend this build has but this machine lacks is skipped, not failed. */
        size_t len = only_device ? strcspn(only_device, ":") : 0;
        for (int k = 0; only_device && k < kn__backend_kinds(); k++) {
            const kn_backend *b = kn__backend(k);
            if (b && strlen(b->name) == len && !strncmp(b->name, only_device, len)) {
                printf("SKIPPED backend_ops: no %s device on this machine\n", b->title);
                return 77;
            }
        }
        printf("backend_ops: no device matches '%s'\n", only_device ? only_device : "");
        return 2;
    }
    printf("backend_ops (%s) on", perf ? "timing" : grad ? "gradients" : "correctness");
    for (int d = 0; d < n_devs; d++) printf(" %s%s", kn_device_str(devs[d]), d + 1 < n_devs ? "," : "\n");
    if (perf) {
        printf("%-44s %-8s", "case", "dtype");
        for (int d = 0; d < n_devs; d++) printf(" %11s", kn_device_str(devs[d]));
        printf("\n");
    }
    kn_fallback_stats_reset();
    int ran = 0;
    for (int ci = 0; ci < N_CASES; ci++) {
        if (only_case && !strstr(CASE_AT(ci)->name, only_case)) continue;
        ran++;
        if (perf) run_perf(ci);
        else if (grad) run_gradients(ci);
        else run_correctness(ci);
    }
    if (perf) {
        printf("backend_ops: timed %d cases (not checked)\n", ran);
        return 0;
    }
    /* Where each device ran its ops: prim and the GPUs run every op
     * themselves; the kernel-less device sends primitives to the host, never
     * a fused op (those run as composites on the device). */
    kn_fallback_stat st[128];
    int nst = kn_fallback_stats(st, 128);
    for (int d = 0; d < n_devs; d++) {
        bool ok = true;
        char msg[256] = "";
        for (int i = 0; i < nst && i < 128; i++) {
            if ((int)st[i].kind != devs[d].kind) continue;
            if (devs[d].kind == test_kind && !is_fused_name(st[i].op)) continue;
            ok = false;
            snprintf(msg, sizeof msg, "op '%s' ran on the host %lld times", st[i].op, (long long)st[i].count);
        }
        char what[128];
        snprintf(what, sizeof what, "host fallback on %s", kn_device_str(devs[d]));
        if (ok) tally[d].passed++;
        else tally[d].failed++, printf("FAILED %s: %s\n", what, msg);
    }
    /* Every primitive ran on prim (when every case ran): the cases reach them
     * all (unary_backward only with gradients). */
    for (int d = 0; d < n_devs && !only_case; d++) {
        if (devs[d].kind != kt_prim_register()) continue;
        for (int op = 0; op < KN_OP_COUNT; op++) {
            if (kn__op_tier((kn_op)op) != KN_TIER_PRIMITIVE || (op == KN_OP_UNARY_BACKWARD && !grad)) continue;
            bool ran_op = kt_prim_calls(op) > 0;
            if (ran_op) tally[d].passed++;
            else tally[d].failed++, printf("FAILED no case ran the %s primitive on prim\n", kn__op_name((kn_op)op));
        }
    }
    int passed = 0, failed = 0, skipped = 0;
    for (int d = 0; d < n_devs; d++) {
        printf("%-8s %-64.64s %5d passed, %d failed, %d skipped\n", kn_device_str(devs[d]),
               kn_device_description(devs[d]), tally[d].passed, tally[d].failed, tally[d].skipped);
        passed += tally[d].passed, failed += tally[d].failed, skipped += tally[d].skipped;
    }
    if (kn_live_tensors() != 0) {
        printf("FAILED: %lld tensors leaked\n", (long long)kn_live_tensors());
        failed++;
    }
    printf("backend_ops: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
