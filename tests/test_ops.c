/* The op harness: every op over dtypes and layouts (contiguous, transposed,
 * strided with an offset, broadcast, zero-size, one element, 0-d) on every
 * device present, against plain double-precision reference loops. Devices
 * come from the registry, so a new backend is tested without new code here;
 * the kernel-less test device checks the CPU fallback the same way. */
#include "kn_test.h"

enum { CONTIG, TRANSPOSED, STRIDED, N_LAYOUTS };
static const char *layout_names[] = {"contiguous", "transposed", "strided+offset"};

static kn_device devices[8];
static int n_devices;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double urand(void) { /* xorshift: test data only */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static double round_to(double v, kn_dtype dt) {
    char buf[8];
    if (kn_dtype_is_float(dt)) kn__store(buf, dt, v);
    else kn__store_i64(buf, dt, (int64_t)llround(v));
    return kn__load(buf, dt);
}

static double tol_of(kn_dtype dt) {
    switch (dt) {
    case KN_F64: return 1e-10;
    case KN_F32: return 2e-5;
    case KN_F16: return 4e-3;
    case KN_BF16: return 3e-2;
    default: return 0;
    }
}

/* Random values valid for dt within [lo, hi], rounded to dt. */
static void fill_values(double *v, int64_t n, kn_dtype dt, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) {
        double x = lo + (hi - lo) * urand();
        if (dt == KN_BOOL) x = urand() < 0.5;
        else if (dt == KN_U8) x = floor(fabs(x) * 10) ;
        else if (!kn_dtype_is_float(dt)) x = floor(x * 10);
        v[i] = round_to(x, dt);
    }
}

/* A tensor on dev whose logical row-major values are v, built in a layout.
 * The unused elements of strided layouts hold NaN (or 99) so that a kernel
 * reading the wrong element shows up. */
static kn_tensor *make(const double *v, int nd, const int64_t *shape, kn_dtype dt, kn_device dev, int layout) {
    int64_t n = kn__numel_shape(nd, shape);
    size_t es = kn_dtype_size(dt);
    if (layout == TRANSPOSED && nd >= 2) {
        int64_t ts[KN_MAX_DIMS];
        memcpy(ts, shape, (size_t)nd * 8);
        ts[nd - 1] = shape[nd - 2];
        ts[nd - 2] = shape[nd - 1];
        char *buf = malloc((size_t)(n ? n : 1) * es);
        int64_t R = shape[nd - 2], C = shape[nd - 1], RC = R * C, B = RC > 0 ? n / RC : 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t c = 0; c < C; c++)
                    kn__store(buf + (size_t)(b * R * C + c * R + r) * es, dt, v[b * R * C + r * C + c]);
        kn_tensor *base = kn_to(kn_from_data(buf, dt, nd, ts, KN_CPU), dev);
        free(buf);
        return kn_transpose(base, -1, -2);
    }
    if (layout == STRIDED && nd >= 1) {
        /* Every other element of the last dim, starting at 1, of a wider base. */
        int64_t bs[KN_MAX_DIMS];
        memcpy(bs, shape, (size_t)nd * 8);
        bs[nd - 1] = 2 * shape[nd - 1] + 1;
        int64_t bn = kn__numel_shape(nd, bs), C = shape[nd - 1];
        char *buf = malloc((size_t)(bn ? bn : 1) * es);
        for (int64_t i = 0; i < bn; i++) kn__store(buf + (size_t)i * es, dt, kn_dtype_is_float(dt) ? NAN : 99);
        for (int64_t i = 0; i < n; i++) {
            int64_t row = i / C, col = i % C;
            kn__store(buf + (size_t)(row * bs[nd - 1] + 1 + 2 * col) * es, dt, v[i]);
        }
        kn_tensor *base = kn_to(kn_from_data(buf, dt, nd, bs, KN_CPU), dev);
        free(buf);
        return kn_slice(base, nd - 1, 1, 2 * C + 1, 2);
    }
    char *buf = malloc((size_t)(n ? n : 1) * es);
    for (int64_t i = 0; i < n; i++) kn__store(buf + (size_t)i * es, dt, v[i]);
    kn_tensor *t = kn_to(kn_from_data(buf, dt, nd, shape, KN_CPU), dev);
    free(buf);
    return t;
}

/* Compares t (any device) with want[] elementwise. */
static bool same(const char *what, kn_tensor *t, const double *want, int64_t n, double tol) {
    if (!t) {
        CHECK(false, "%s: op failed", what);
        return false;
    }
    if (kn_numel(t) != n) {
        CHECK(false, "%s: %lld elements, expected %lld", what, (long long)kn_numel(t), (long long)n);
        return false;
    }
    double *got = malloc((size_t)(n ? n : 1) * sizeof *got);
    kn_to_host(t, got, KN_F64);
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++) {
        bool nan_ok = isnan(want[i]) && isnan(got[i]);
        bool inf_ok = isinf(want[i]) && got[i] == want[i];
        if (!nan_ok && !inf_ok && !(fabs(got[i] - want[i]) <= tol * (1 + fabs(want[i])))) bad = i;
    }
    CHECK(bad < 0, "%s: element %lld is %.9g, expected %.9g", what, (long long)bad, bad >= 0 ? got[bad] : 0,
          bad >= 0 ? want[bad] : 0);
    free(got);
    return bad < 0;
}

/* ---- shapes --------------------------------------------------------------------- */
typedef struct {
    int nd;
    int64_t s[4];
} shp;
static const shp shapes[] = {{2, {3, 5}}, {3, {2, 3, 4}}, {1, {7}}, {2, {0, 3}}, {2, {1, 1}}, {0, {0}}};
#define N_SHAPES (int)(sizeof shapes / sizeof *shapes)

static const kn_dtype float_types[] = {KN_F32, KN_F64, KN_F16, KN_BF16};
static const kn_dtype all_types[] = {KN_F32, KN_F64, KN_F16, KN_BF16, KN_I32, KN_I64, KN_U8, KN_BOOL};

/* ---- unary ------------------------------------------------------------------------ */
typedef struct {
    const char *name;
    kn_tensor *(*op)(kn_tensor *);
    double (*ref)(double);
    double lo, hi;
    bool ints;
} unary_case;

static double r_neg(double x) { return -x; }
static double r_exp(double x) { return exp(x); }
static double r_log(double x) { return log(x); }
static double r_sqrt(double x) { return sqrt(x); }
static double r_abs(double x) { return fabs(x); }
static double r_relu(double x) { return x > 0 ? x : 0; }
static double r_gelu(double x) { return 0.5 * x * (1 + erf(x / sqrt(2))); }
static double r_sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double r_tanh(double x) { return tanh(x); }
static double r_softplus(double x) { return log1p(exp(x)); }
static kn_tensor *o_leaky(kn_tensor *a) { return kn_leaky_relu(a, 0.1); }
static double r_leaky(double x) { return x > 0 ? x : 0.1 * x; }
static kn_tensor *o_clamp(kn_tensor *a) { return kn_clamp(a, -0.5, 0.7); }
static double r_clamp(double x) { return x < -0.5 ? -0.5 : x > 0.7 ? 0.7 : x; }
static kn_tensor *o_adds(kn_tensor *a) { return kn_add_scalar(a, 3); }
static double r_adds(double x) { return x + 3; }
static kn_tensor *o_muls(kn_tensor *a) { return kn_mul_scalar(a, -2); }
static double r_muls(double x) { return -2 * x; }
static kn_tensor *o_pows(kn_tensor *a) { return kn_pow_scalar(a, 2.5); }
static double r_pows(double x) { return pow(x, 2.5); }
static kn_tensor *o_rsub(kn_tensor *a) { return kn_rsub_scalar(a, 1); }
static double r_rsub(double x) { return 1 - x; }

static const unary_case unaries[] = {
    {"neg", kn_neg, r_neg, -3, 3, true},           {"exp", kn_exp, r_exp, -3, 3, false},
    {"log", kn_log, r_log, 0.1, 5, false},         {"sqrt", kn_sqrt, r_sqrt, 0, 5, false},
    {"abs", kn_abs, r_abs, -3, 3, true},           {"relu", kn_relu, r_relu, -3, 3, true},
    {"leaky_relu", o_leaky, r_leaky, -3, 3, false}, {"gelu", kn_gelu, r_gelu, -3, 3, false},
    {"sigmoid", kn_sigmoid, r_sigmoid, -6, 6, false}, {"tanh", kn_tanh, r_tanh, -3, 3, false},
    {"softplus", kn_softplus, r_softplus, -5, 5, false}, {"clamp", o_clamp, r_clamp, -2, 2, false},
    {"add_scalar", o_adds, r_adds, -3, 3, true},   {"mul_scalar", o_muls, r_muls, -3, 3, true},
    {"pow_scalar", o_pows, r_pows, 0, 3, false},   {"rsub_scalar", o_rsub, r_rsub, -3, 3, true},
};

static void test_unary(kn_device dev) {
    for (size_t u = 0; u < sizeof unaries / sizeof *unaries; u++)
        for (size_t d = 0; d < sizeof all_types / sizeof *all_types; d++) {
            kn_dtype dt = all_types[d];
            if (!kn_dtype_is_float(dt) && (!unaries[u].ints || dt == KN_BOOL || dt == KN_U8)) continue;
            for (int si = 0; si < N_SHAPES; si++)
                for (int l = 0; l < N_LAYOUTS; l++) {
                    const shp *s = &shapes[si];
                    if (l != CONTIG && s->nd < (l == TRANSPOSED ? 2 : 1)) continue;
                    kn_scope sc = kn_scope_begin();
                    int64_t n = kn__numel_shape(s->nd, s->s);
                    double *v = malloc((size_t)(n + 1) * sizeof *v), *want = malloc((size_t)(n + 1) * sizeof *want);
                    fill_values(v, n, dt, unaries[u].lo, unaries[u].hi);
                    kn_dtype odt = kn_dtype_is_float(dt) ? dt : dt;
                    for (int64_t i = 0; i < n; i++) want[i] = round_to(unaries[u].ref(v[i]), odt);
                    kn_tensor *out = unaries[u].op(make(v, s->nd, s->s, dt, dev, l));
                    char what[160];
                    snprintf(what, sizeof what, "%s %s %s shape#%d on %s", unaries[u].name, kn_dtype_name(dt),
                             layout_names[l], si, kn_device_str(dev));
                    /* Half types: the reference is rounded once, the kernel may round twice. */
                    same(what, out, want, n, tol_of(dt) * 2);
                    if (out) CHECK(kn_device_equal(kn_device_of(out), dev), "%s: result on its input's device", what);
                    free(v);
                    free(want);
                    kn_scope_end(sc);
                }
        }
}

/* ---- binary with broadcasting ------------------------------------------------------- */
typedef struct {
    const char *name;
    kn_tensor *(*op)(kn_tensor *, kn_tensor *);
    double (*ref)(double, double);
    bool cmp;
} binary_case;

static double b_add(double a, double b) { return a + b; }
static double b_sub(double a, double b) { return a - b; }
static double b_mul(double a, double b) { return a * b; }
static double b_div(double a, double b) { return a / b; }
static double b_pow(double a, double b) { return pow(a, b); }
static double b_max(double a, double b) { return a > b ? a : b; }
static double b_min(double a, double b) { return a < b ? a : b; }
static double b_eq(double a, double b) { return a == b; }
static double b_ne(double a, double b) { return a != b; }
static double b_lt(double a, double b) { return a < b; }
static double b_le(double a, double b) { return a <= b; }
static double b_gt(double a, double b) { return a > b; }
static double b_ge(double a, double b) { return a >= b; }

static const binary_case binaries[] = {
    {"add", kn_add, b_add, false}, {"sub", kn_sub, b_sub, false}, {"mul", kn_mul, b_mul, false},
    {"div", kn_div, b_div, false}, {"pow", kn_pow, b_pow, false}, {"maximum", kn_maximum, b_max, false},
    {"minimum", kn_minimum, b_min, false}, {"eq", kn_eq, b_eq, true}, {"ne", kn_ne, b_ne, true},
    {"lt", kn_lt, b_lt, true}, {"le", kn_le, b_le, true}, {"gt", kn_gt, b_gt, true}, {"ge", kn_ge, b_ge, true},
};

/* Pairs of shapes that broadcast: out index -> input index by stride 0. */
static const shp bshapes[][2] = {
    {{2, {3, 4}}, {2, {3, 4}}}, {{2, {3, 4}}, {1, {4}}}, {{2, {3, 1}}, {2, {1, 4}}},
    {{3, {2, 3, 4}}, {2, {3, 1}}}, {{0, {0}}, {2, {2, 3}}}, {{2, {0, 4}}, {1, {4}}},
};

static int64_t bcast_index(const shp *in, int ond, const int64_t *oshape, int64_t k) {
    int64_t idx = 0, mul = 1;
    for (int d = ond - 1; d >= 0; d--) {
        int64_t i = k % oshape[d];
        k /= oshape[d];
        int id = d - (ond - in->nd);
        if (id >= 0) {
            if (in->s[id] != 1) idx += i * mul;
            mul *= in->s[id];
        }
    }
    return idx;
}

static void test_binary(kn_device dev) {
    for (size_t b = 0; b < sizeof binaries / sizeof *binaries; b++)
        for (size_t d = 0; d < sizeof all_types / sizeof *all_types; d++) {
            kn_dtype dt = all_types[d];
            bool is_pow = !strcmp(binaries[b].name, "pow"), is_div = !strcmp(binaries[b].name, "div");
            if ((is_pow && !kn_dtype_is_float(dt)) || (dt == KN_BOOL && !binaries[b].cmp)) continue;
            for (size_t p = 0; p < sizeof bshapes / sizeof *bshapes; p++)
                for (int l = 0; l < N_LAYOUTS; l++) {
                    const shp *sa = &bshapes[p][0], *sb = &bshapes[p][1];
                    if (l == TRANSPOSED && (sa->nd < 2 || sb->nd < 2)) continue;
                    if (l == STRIDED && (sa->nd < 1 || sb->nd < 1)) continue;
                    kn_scope sc = kn_scope_begin();
                    int64_t oshape[4];
                    int ond = kn__broadcast("test", sa->nd, sa->s, sb->nd, sb->s, oshape);
                    int64_t na = kn__numel_shape(sa->nd, sa->s), nb = kn__numel_shape(sb->nd, sb->s),
                            no = kn__numel_shape(ond, oshape);
                    double *va = malloc((size_t)(na + 1) * 8), *vb = malloc((size_t)(nb + 1) * 8),
                           *want = malloc((size_t)(no + 1) * 8);
                    fill_values(va, na, dt, is_pow ? 0.1 : -3, 3);
                    fill_values(vb, nb, dt, is_pow ? -2 : is_div ? 0.5 : -3, is_div ? 4 : 3);
                    if (binaries[b].cmp && nb > 1 && na > 1) vb[0] = va[0]; /* some equal pairs */
                    kn_dtype odt = binaries[b].cmp ? KN_BOOL : is_div ? (kn_dtype_is_float(dt) ? dt : KN_F32) : dt;
                    for (int64_t k = 0; k < no; k++) {
                        double x = va[bcast_index(sa, ond, oshape, k)], y = vb[bcast_index(sb, ond, oshape, k)];
                        want[k] = !kn_dtype_is_float(dt) && !binaries[b].cmp && !is_div
                                      ? round_to(binaries[b].ref(x, y), odt) : binaries[b].ref(x, y);
                    }
                    kn_tensor *out = binaries[b].op(make(va, sa->nd, sa->s, dt, dev, l), make(vb, sb->nd, sb->s, dt, dev, CONTIG));
                    char what[160];
                    snprintf(what, sizeof what, "%s %s %s pair#%zu on %s", binaries[b].name, kn_dtype_name(dt),
                             layout_names[l], p, kn_device_str(dev));
                    if (same(what, out, want, no, tol_of(odt) * 2))
                        CHECK(kn_dtype_of(out) == odt, "%s: dtype %s", what, kn_dtype_name(kn_dtype_of(out)));
                    free(va);
                    free(vb);
                    free(want);
                    kn_scope_end(sc);
                }
        }
}

static void test_where_and_cast(kn_device dev) {
    kn_scope sc = kn_scope_begin();
    double c[12], a[12], b[4], want[12];
    fill_values(c, 12, KN_BOOL, 0, 1);
    fill_values(a, 12, KN_F32, -3, 3);
    fill_values(b, 4, KN_F32, -3, 3);
    for (int i = 0; i < 12; i++) want[i] = c[i] ? a[i] : b[i % 4];
    kn_tensor *w = kn_where(make(c, KN_SHAPE(3, 4), KN_BOOL, dev, STRIDED), make(a, KN_SHAPE(3, 4), KN_F32, dev, TRANSPOSED),
                            make(b, KN_SHAPE(4), KN_F32, dev, CONTIG));
    same("where", w, want, 12, 0);
    /* Every dtype pair through kn_cast. */
    for (size_t i = 0; i < 8; i++)
        for (size_t j = 0; j < 8; j++) {
            double v[12], wv[12];
            fill_values(v, 12, all_types[i], -3, 3);
            kn_dtype to = all_types[j];
            for (int k = 0; k < 12; k++)
                wv[k] = kn_dtype_is_float(to) ? round_to(v[k], to) : to == KN_BOOL ? v[k] != 0
                        : to == KN_U8 && v[k] < 0 ? (kn_dtype_is_float(all_types[i]) ? 0 : 256 + v[k]) : trunc(v[k]);
            char what[96];
            snprintf(what, sizeof what, "cast %s -> %s on %s", kn_dtype_name(all_types[i]), kn_dtype_name(all_types[j]), kn_device_str(dev));
            same(what, kn_cast(make(v, KN_SHAPE(3, 4), all_types[i], dev, TRANSPOSED), all_types[j]), wv, 12,
                 tol_of(all_types[j]));
        }
    kn_scope_end(sc);
}

/* ---- reductions ---------------------------------------------------------------------- */
static void test_reduce(kn_device dev) {
    static const int dimsets[][4] = {{0}, {1, 0}, {1, 1}, {1, 2}, {2, 0, 2}, {3, 0, 1, 2}};
    for (size_t d = 0; d < 4; d++)
        for (int l = 0; l < N_LAYOUTS; l++)
            for (size_t ds = 0; ds < sizeof dimsets / sizeof *dimsets; ds++)
                for (int fn = 0; fn < 6; fn++) {
                    kn_dtype dt = float_types[d];
                    const int64_t shape[3] = {3, 4, 5};
                    kn_scope sc = kn_scope_begin();
                    double v[60], want[60];
                    fill_values(v, 60, dt, -3, 3);
                    int nd = dimsets[ds][0];
                    const int *dims = &dimsets[ds][1];
                    bool red[3] = {nd == 0, nd == 0, nd == 0};
                    for (int k = 0; k < nd; k++) red[dims[k]] = true;
                    int64_t cnt = 1, nout = 1;
                    for (int k = 0; k < 3; k++) {
                        if (red[k]) cnt *= shape[k];
                        else nout *= shape[k];
                    }
                    /* Reference: per output, fold its elements. */
                    for (int64_t o = 0; o < nout; o++) {
                        double acc = fn == 2 ? -INFINITY : fn == 3 ? INFINITY : 0, vals[60];
                        int nv = 0;
                        for (int64_t k = 0; k < 60; k++) {
                            int64_t i0 = k / 20, i1 = k / 5 % 4, i2 = k % 5, oi = 0;
                            int64_t idx[3] = {i0, i1, i2};
                            for (int q = 0; q < 3; q++) if (!red[q]) oi = oi * shape[q] + idx[q];
                            if (oi == o) vals[nv++] = v[k];
                        }
                        double mean = 0;
                        for (int k = 0; k < nv; k++) mean += vals[k] / nv;
                        for (int k = 0; k < nv; k++) {
                            if (fn == 0 || fn == 1) acc += vals[k];
                            if (fn == 2) acc = fmax(acc, vals[k]);
                            if (fn == 3) acc = fmin(acc, vals[k]);
                            if (fn >= 4) acc += (vals[k] - mean) * (vals[k] - mean);
                        }
                        if (fn == 1) acc /= cnt;
                        if (fn >= 4) acc /= (double)(cnt - 1);
                        if (fn == 5) acc = sqrt(acc);
                        want[o] = acc;
                    }
                    kn_tensor *x = make(v, 3, shape, dt, dev, l), *r = NULL;
                    switch (fn) {
                    case 0: r = kn_sum(x, nd, dims, ds % 2); break;
                    case 1: r = kn_mean(x, nd, dims, ds % 2); break;
                    case 2: r = kn_max(x, nd, dims, ds % 2); break;
                    case 3: r = kn_min(x, nd, dims, ds % 2); break;
                    case 4: r = kn_var(x, nd, dims, 1, ds % 2); break;
                    default: r = kn_std(x, nd, dims, 1, ds % 2); break;
                    }
                    static const char *names[] = {"sum", "mean", "max", "min", "var", "std"};
                    char what[128];
                    snprintf(what, sizeof what, "%s %s %s dims#%zu on %s", names[fn], kn_dtype_name(dt), layout_names[l],
                             ds, kn_device_str(dev));
                    /* Half types round the input sum of 60 values once at the end. */
                    same(what, r, want, nout, tol_of(dt) * (dt == KN_F16 || dt == KN_BF16 ? 4 : 2));
                    if (r) CHECK(kn_ndim(r) == (ds % 2 ? 3 : 3 - (nd ? nd : 3)), "%s: keepdim rank %d", what, kn_ndim(r));
                    kn_scope_end(sc);
                }
    /* argmax / argmin along each dim, with ties resolved to the first. */
    for (int l = 0; l < N_LAYOUTS; l++)
        for (int dim = 0; dim < 2; dim++) {
            kn_scope sc = kn_scope_begin();
            double v[20], wmax[5], wmin[5];
            fill_values(v, 20, KN_I32, -2, 2);
            int64_t R = 4, C = 5, nout = dim == 0 ? C : R;
            for (int64_t o = 0; o < nout; o++) {
                int64_t bi = 0, si = 0, len = dim == 0 ? R : C;
                for (int64_t k = 0; k < len; k++) {
                    double x = dim == 0 ? v[k * C + o] : v[o * C + k];
                    double bx = dim == 0 ? v[bi * C + o] : v[o * C + bi], sx = dim == 0 ? v[si * C + o] : v[o * C + si];
                    if (x > bx) bi = k;
                    if (x < sx) si = k;
                }
                wmax[o] = (double)bi;
                wmin[o] = (double)si;
            }
            kn_tensor *x = make(v, KN_SHAPE(4, 5), KN_F32, dev, l);
            char what[96];
            snprintf(what, sizeof what, "argmax dim %d %s on %s", dim, layout_names[l], kn_device_str(dev));
            same(what, kn_argmax(x, dim, false), wmax, nout, 0);
            snprintf(what, sizeof what, "argmin dim %d %s on %s", dim, layout_names[l], kn_device_str(dev));
            same(what, kn_argmin(x, dim, false), wmin, nout, 0);
            kn_scope_end(sc);
        }
}

/* ---- matmul and linear ---------------------------------------------------------------- */
static void test_matmul(kn_device dev) {
    typedef struct {
        shp a, b;
    } mm;
    static const mm cases[] = {
        {{2, {3, 4}}, {2, {4, 5}}}, {{3, {2, 3, 4}}, {3, {2, 4, 5}}}, {{3, {2, 3, 4}}, {2, {4, 5}}},
        {{1, {4}}, {2, {4, 5}}}, {{2, {3, 4}}, {1, {4}}}, {{2, {0, 4}}, {2, {4, 5}}}, {{2, {3, 0}}, {2, {0, 5}}},
        {{4, {2, 1, 3, 4}}, {3, {3, 4, 2}}}, {{2, {65, 33}}, {2, {33, 17}}},
    };
    for (size_t d = 0; d < 4; d++)
        for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++)
            for (int la = 0; la < N_LAYOUTS; la++)
                for (int lb = 0; lb < N_LAYOUTS; lb++) {
                    const shp *sa = &cases[ci].a, *sb = &cases[ci].b;
                    if ((la == TRANSPOSED && sa->nd < 2) || (lb == TRANSPOSED && sb->nd < 2)) continue;
                    kn_dtype dt = float_types[d];
                    kn_scope sc = kn_scope_begin();
                    int64_t na = kn__numel_shape(sa->nd, sa->s), nb = kn__numel_shape(sb->nd, sb->s);
                    double *va = malloc((size_t)(na + 1) * 8), *vb = malloc((size_t)(nb + 1) * 8);
                    fill_values(va, na, dt, -1, 1);
                    fill_values(vb, nb, dt, -1, 1);
                    /* Reference through 3-D broadcasting on the host. */
                    shp a2 = *sa, b2 = *sb;
                    if (a2.nd == 1) { a2.nd = 2; a2.s[1] = a2.s[0]; a2.s[0] = 1; }
                    if (b2.nd == 1) { b2.nd = 2; b2.s[1] = 1; }
                    int64_t M = a2.s[a2.nd - 2], K = a2.s[a2.nd - 1], N = b2.s[b2.nd - 1], bsh[4];
                    int nbd = kn__broadcast("t", a2.nd - 2, a2.s, b2.nd - 2, b2.s, bsh);
                    int64_t B = kn__numel_shape(nbd, bsh), no = B * M * N;
                    double *want = malloc((size_t)(no + 1) * 8);
                    shp ab = {a2.nd - 2, {0}}, bb = {b2.nd - 2, {0}};
                    memcpy(ab.s, a2.s, sizeof(int64_t) * (size_t)ab.nd);
                    memcpy(bb.s, b2.s, sizeof(int64_t) * (size_t)bb.nd);
                    for (int64_t bi = 0; bi < B; bi++) {
                        int64_t ia = bcast_index(&ab, nbd, bsh, bi), ib = bcast_index(&bb, nbd, bsh, bi);
                        for (int64_t i = 0; i < M; i++)
                            for (int64_t j = 0; j < N; j++) {
                                double acc = 0;
                                for (int64_t k = 0; k < K; k++) acc += va[ia * M * K + i * K + k] * vb[ib * K * N + k * N + j];
                                want[bi * M * N + i * N + j] = acc;
                            }
                    }
                    kn_tensor *r = kn_matmul(make(va, sa->nd, sa->s, dt, dev, la), make(vb, sb->nd, sb->s, dt, dev, lb));
                    char what[128];
                    snprintf(what, sizeof what, "matmul %s case#%zu %s x %s on %s", kn_dtype_name(dt), ci, layout_names[la],
                             layout_names[lb], kn_device_str(dev));
                    same(what, r, want, no, tol_of(dt) * (dt == KN_F32 ? 5 : 2) * sqrt((double)K + 1));
                    free(va);
                    free(vb);
                    free(want);
                    kn_scope_end(sc);
                }
    /* linear = x @ w^T + b, with a 3-D input. */
    kn_scope sc = kn_scope_begin();
    double x[2 * 3 * 4], w[5 * 4], b[5], want[2 * 3 * 5];
    fill_values(x, 24, KN_F64, -1, 1);
    fill_values(w, 20, KN_F64, -1, 1);
    fill_values(b, 5, KN_F64, -1, 1);
    for (int r = 0; r < 6; r++)
        for (int o = 0; o < 5; o++) {
            double acc = b[o];
            for (int k = 0; k < 4; k++) acc += x[r * 4 + k] * w[o * 4 + k];
            want[r * 5 + o] = acc;
        }
    same("linear", kn_linear(make(x, KN_SHAPE(2, 3, 4), KN_F64, dev, STRIDED), make(w, KN_SHAPE(5, 4), KN_F64, dev, TRANSPOSED),
                             make(b, KN_SHAPE(5), KN_F64, dev, CONTIG)),
         want, 30, 1e-12);
    kn_scope_end(sc);
}

/* ---- indexing and joining ------------------------------------------------------------------ */
static void test_index(kn_device dev) {
    for (size_t d = 0; d < sizeof all_types / sizeof *all_types; d++)
        for (int l = 0; l < N_LAYOUTS; l++) {
            kn_dtype dt = all_types[d];
            kn_scope sc = kn_scope_begin();
            double a[12], b[8], want[20];
            fill_values(a, 12, dt, -3, 3);
            fill_values(b, 8, dt, -3, 3);
            kn_tensor *ta = make(a, KN_SHAPE(3, 4), dt, dev, l), *tb = make(b, KN_SHAPE(2, 4), dt, dev, CONTIG);
            char what[128];
            /* concat along 0 */
            for (int i = 0; i < 12; i++) want[i] = a[i];
            for (int i = 0; i < 8; i++) want[12 + i] = b[i];
            snprintf(what, sizeof what, "concat %s %s on %s", kn_dtype_name(dt), layout_names[l], kn_device_str(dev));
            same(what, kn_concat(2, (kn_tensor *[]){ta, tb}, 0), want, 20, 0);
            /* index_select rows 2, 0, 2 and columns 3, 1 */
            double idx[] = {2, 0, 2};
            kn_tensor *ti = make(idx, KN_SHAPE(3), KN_I64, dev, CONTIG);
            for (int r = 0; r < 3; r++) for (int c = 0; c < 4; c++) want[r * 4 + c] = a[(int)idx[r] * 4 + c];
            snprintf(what, sizeof what, "index_select %s %s on %s", kn_dtype_name(dt), layout_names[l], kn_device_str(dev));
            same(what, kn_index_select(ta, 0, ti), want, 12, 0);
            double ci[] = {3, 1};
            for (int r = 0; r < 3; r++) for (int c = 0; c < 2; c++) want[r * 2 + c] = a[r * 4 + (int)ci[c]];
            same(what, kn_index_select(ta, 1, make(ci, KN_SHAPE(2), KN_I32, dev, CONTIG)), want, 6, 0);
            /* gather along 1 */
            double gi[6] = {0, 3, 2, 2, 1, 0};
            for (int r = 0; r < 3; r++) for (int c = 0; c < 2; c++) want[r * 2 + c] = a[r * 4 + (int)gi[r * 2 + c]];
            snprintf(what, sizeof what, "gather %s %s on %s", kn_dtype_name(dt), layout_names[l], kn_device_str(dev));
            same(what, kn_gather(ta, 1, make(gi, KN_SHAPE(3, 2), KN_I64, dev, l == TRANSPOSED ? TRANSPOSED : CONTIG)), want, 6, 0);
            kn_scope_end(sc);
        }
    /* embedding with repeated indices, and its backward (scatter-add). */
    kn_scope sc = kn_scope_begin();
    double w[8] = {1, 2, 3, 4, 5, 6, 7, 8}, ix[5] = {3, 0, 3, 3, 1}, want[10], gwant[8] = {1, 1, 1, 1, 0, 0, 3, 3};
    for (int i = 0; i < 5; i++) for (int c = 0; c < 2; c++) want[i * 2 + c] = w[(int)ix[i] * 2 + c];
    kn_tensor *tw = kn_requires_grad_(make(w, KN_SHAPE(4, 2), KN_F32, dev, CONTIG), true);
    kn_tensor *e = kn_embedding(tw, make(ix, KN_SHAPE(5), KN_I64, dev, CONTIG));
    same("embedding", e, want, 10, 0);
    CHECK(kn_backward(kn_sum_all(e)) == KN_OK, "embedding backward");
    same("embedding grad", kn_grad(tw), gwant, 8, 0);
    double big[1] = {9};
    CHECK(kn_embedding(tw, make(big, KN_SHAPE(1), KN_I64, dev, CONTIG)) == NULL || kn_device_synchronize(dev) != KN_OK,
          "out-of-range embedding index is an error");
    kn_scope_end(sc);
}

/* ---- nn functions ---------------------------------------------------------------------- */
static void test_nn(kn_device dev) {
    for (size_t d = 0; d < 2; d++)
        for (int l = 0; l < N_LAYOUTS; l++) {
            kn_dtype dt = float_types[d];
            kn_scope sc = kn_scope_begin();
            double x[20], want[20], t[4] = {1, 0, 4, 2};
            fill_values(x, 20, dt, -3, 3);
            char what[128];
            for (int dim = 0; dim < 2; dim++) {
                /* softmax and log_softmax over rows (dim 1) or columns (dim 0) of [4, 5] */
                for (int lg = 0; lg < 2; lg++) {
                    for (int o = 0; o < (dim ? 4 : 5); o++) {
                        double mx = -INFINITY, s = 0;
                        for (int k = 0; k < (dim ? 5 : 4); k++) mx = fmax(mx, x[dim ? o * 5 + k : k * 5 + o]);
                        for (int k = 0; k < (dim ? 5 : 4); k++) s += exp(x[dim ? o * 5 + k : k * 5 + o] - mx);
                        for (int k = 0; k < (dim ? 5 : 4); k++) {
                            int i = dim ? o * 5 + k : k * 5 + o;
                            want[i] = lg ? x[i] - mx - log(s) : exp(x[i] - mx) / s;
                        }
                    }
                    kn_tensor *in = make(x, KN_SHAPE(4, 5), dt, dev, l);
                    snprintf(what, sizeof what, "%s dim %d %s %s on %s", lg ? "log_softmax" : "softmax", dim, kn_dtype_name(dt),
                             layout_names[l], kn_device_str(dev));
                    same(what, lg ? kn_log_softmax(in, dim) : kn_softmax(in, dim), want, 20, tol_of(dt) * 4);
                }
            }
            /* cross_entropy mean over rows */
            double ce = 0;
            for (int r = 0; r < 4; r++) {
                double mx = -INFINITY, s = 0;
                for (int c = 0; c < 5; c++) mx = fmax(mx, x[r * 5 + c]);
                for (int c = 0; c < 5; c++) s += exp(x[r * 5 + c] - mx);
                ce += -(x[r * 5 + (int)t[r]] - mx - log(s)) / 4;
            }
            snprintf(what, sizeof what, "cross_entropy %s %s on %s", kn_dtype_name(dt), layout_names[l], kn_device_str(dev));
            same(what, kn_cross_entropy(make(x, KN_SHAPE(4, 5), dt, dev, l), make(t, KN_SHAPE(4), KN_I64, dev, CONTIG)), &ce, 1,
                 tol_of(dt) * 4);
            /* batch_norm (training, batch statistics) and layer_norm, no affine */
            for (int ln = 0; ln < 2; ln++) {
                for (int o = 0; o < (ln ? 4 : 5); o++) {
                    double m = 0, v = 0;
                    int n = ln ? 5 : 4;
                    for (int k = 0; k < n; k++) m += x[ln ? o * 5 + k : k * 5 + o] / n;
                    for (int k = 0; k < n; k++) v += pow(x[ln ? o * 5 + k : k * 5 + o] - m, 2) / n;
                    for (int k = 0; k < n; k++) {
                        int i = ln ? o * 5 + k : k * 5 + o;
                        want[i] = (x[i] - m) / sqrt(v + 1e-5);
                    }
                }
                kn_tensor *in = make(x, KN_SHAPE(4, 5), dt, dev, l);
                snprintf(what, sizeof what, "%s %s %s on %s", ln ? "layer_norm" : "batch_norm", kn_dtype_name(dt), layout_names[l],
                         kn_device_str(dev));
                same(what, ln ? kn_layer_norm(in, 1, NULL, NULL, 1e-5) : kn_batch_norm(in, NULL, NULL, NULL, NULL, true, 0.1, 1e-5),
                     want, 20, tol_of(dt) * 8);
            }
            kn_scope_end(sc);
        }
}

int main(void) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    n_devices = kt_devices(devices, 8);
    for (int i = 0; i < n_devices; i++) {
        int before = kt_failed;
        test_unary(devices[i]);
        test_binary(devices[i]);
        test_where_and_cast(devices[i]);
        test_reduce(devices[i]);
        test_matmul(devices[i]);
        test_index(devices[i]);
        test_nn(devices[i]);
        printf("ops on %s (%s): %s\n", kn_device_str(devices[i]), kn_device_description(devices[i]),
               kt_failed == before ? "all passed" : "FAILURES");
    }
    for (int k = KN_DEVICE_CUDA; k < kn__backend_kinds(); k++)
        if (kn_device_count((kn_device_kind)k) == 0)
            printf("ops on %s: skipped (no device present; not counted as passed)\n", kn_device_kind_name((kn_device_kind)k));
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("ops");
}
