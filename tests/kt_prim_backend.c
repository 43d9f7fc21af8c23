/* The "prim" test backend (see kt_prim_backend.h): one plain scalar loop per
 * PRIMITIVE op over kn_operands, from the contract alone: core/backend.h and
 * backends/common/ (geometry for the strided walks, dtype.h for every load
 * and store, scalar_math.h for the functions, philox.h for random). Slow on
 * purpose and simple enough to check by eye; no fused kernel, so softmax,
 * losses, norms, dropout, embeddings and optimizer steps all run as the op
 * layer's composites on this device. */
#include "kt_prim_backend.h"

#include "core/backend.h"
#include "backends/common/dtype.h"
#include "backends/common/geometry.h"
#include "backends/common/philox.h"
#include "backends/common/scalar_math.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t calls[KN_OP_COUNT]; /* kernel runs, for the harness's coverage check */

/* ---- views --------------------------------------------------------------------------------- */
static inline size_t esize(const kn_operand *v) { return kn_dtype_size(v->dtype); }
static inline char *at(const kn_operand *v, int64_t off) { return (char *)v->data + off * (int64_t)esize(v); }

/* v seen with ref's shape: trailing dims aligned; missing and size-1 dims of
 * another size broadcast with stride 0 (the op layer usually did this already). */
static kn_operand bcast(const kn_operand *v, const kn_operand *ref) {
    if (v->ndim > ref->ndim) return *v;
    kn_operand r = *v;
    r.ndim = ref->ndim;
    for (int d = 0; d < ref->ndim; d++) {
        int sd = d - (ref->ndim - v->ndim);
        r.shape[d] = ref->shape[d];
        r.stride[d] = sd >= 0 && v->shape[sd] == ref->shape[d] ? v->stride[sd] : 0;
    }
    return r;
}

/* The merged geometry of v[0] (the output) and the others broadcast to it. */
static void geom_of(kn_geom *g, int n, kn_operand *v) {
    const kn_operand *ptrs[KN_GEOM_MAX_OPS];
    for (int k = 0; k < n; k++) {
        if (k > 0) v[k] = bcast(&v[k], &v[0]);
        ptrs[k] = &v[k];
    }
    kn_geom_init(g, n, ptrs);
}
#define ELEM(g, v, k, i) at(&(v)[k], kn_geom_offset(&(g), (k), (i)))

/* Row-major index i of shape -> multi-index; element offset of a multi-index in v. */
static void unravel(int64_t i, int nd, const int64_t *shape, int64_t *idx) {
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = shape[d] ? i % shape[d] : 0;
        i = shape[d] ? i / shape[d] : 0;
    }
}

static int64_t offset_of(const kn_operand *v, const int64_t *idx) {
    int64_t off = 0;
    for (int d = 0; d < v->ndim; d++) off += idx[d] * v->stride[d];
    return off;
}

static inline bool is_int(kn_dtype dt) { return !kn_dtype_is_float(dt); }

/* ---- copy, fill ---------------------------------------------------------------------------- */
static kn_status k_copy(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_COPY]++;
    const kn_copy_args *a = pa;
    kn_operand v[2] = {a->out, a->x};
    kn_geom g;
    geom_of(&g, 2, v);
    /* Integer to integer goes through int64 (exact, and wraps as C does). */
    bool ints = is_int(v[0].dtype) && is_int(v[1].dtype);
    for (int64_t i = 0; i < g.numel; i++) {
        char *o = ELEM(g, v, 0, i), *x = ELEM(g, v, 1, i);
        if (ints) kn__store_i64(o, v[0].dtype, kn__load_i64(x, v[1].dtype));
        else kn__store(o, v[0].dtype, kn__load(x, v[1].dtype));
    }
    return KN_OK;
}

static kn_status k_fill(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_FILL]++;
    const kn_fill_args *a = pa;
    kn_operand v[1] = {a->out};
    kn_geom g;
    geom_of(&g, 1, v); /* merging keeps row-major order: i is the element's index k */
    for (int64_t i = 0; i < g.numel; i++) kn__store(ELEM(g, v, 0, i), v[0].dtype, a->value + (double)i * a->step);
    return KN_OK;
}

/* ---- elementwise ----------------------------------------------------------------------------- */
/* Integer results of the functions that stay integer, computed exactly. */
static bool unary_int(int fn, int64_t x, double p0, int64_t *r) {
    switch (fn) {
    case KN_UNARY_NEG: *r = -x; return true;
    case KN_UNARY_ABS: *r = x < 0 ? -x : x; return true;
    case KN_UNARY_RELU: *r = x > 0 ? x : 0; return true;
    case KN_UNARY_ADD_SCALAR: *r = x + (int64_t)p0; return true;
    case KN_UNARY_MUL_SCALAR: *r = x * (int64_t)p0; return true;
    case KN_UNARY_RSUB_SCALAR: *r = (int64_t)p0 - x; return true;
    default: return false;
    }
}

static kn_status k_unary(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_UNARY]++;
    const kn_unary_args *a = pa;
    kn_operand v[2] = {a->out, a->x};
    kn_geom g;
    geom_of(&g, 2, v);
    bool ints = is_int(v[0].dtype) && is_int(v[1].dtype);
    for (int64_t i = 0; i < g.numel; i++) {
        char *o = ELEM(g, v, 0, i), *x = ELEM(g, v, 1, i);
        int64_t r;
        if (ints && unary_int((int)a->fn, kn__load_i64(x, v[1].dtype), a->p0, &r)) kn__store_i64(o, v[0].dtype, r);
        else kn__store(o, v[0].dtype, kn__unary_eval((int)a->fn, kn__load(x, v[1].dtype), a->p0, a->p1));
    }
    return KN_OK;
}

static kn_status k_unary_backward(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_UNARY_BACKWARD]++;
    const kn_unary_backward_args *a = pa;
    kn_operand v[3] = {a->out, a->grad, a->x};
    kn_geom g;
    geom_of(&g, 3, v);
    for (int64_t i = 0; i < g.numel; i++) {
        double gr = kn__load(ELEM(g, v, 1, i), v[1].dtype), x = kn__load(ELEM(g, v, 2, i), v[2].dtype);
        kn__store(ELEM(g, v, 0, i), v[0].dtype, kn__unary_grad((int)a->fn, gr, x, a->p0, a->p1));
    }
    return KN_OK;
}

static kn_status k_binary(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_BINARY]++;
    const kn_binary_args *a = pa;
    kn_operand v[3] = {a->out, a->a, a->b};
    kn_geom g;
    geom_of(&g, 3, v);
    bool ints = is_int(v[1].dtype); /* integer operands: exact int64 math (comparisons too) */
    for (int64_t i = 0; i < g.numel; i++) {
        char *o = ELEM(g, v, 0, i), *x = ELEM(g, v, 1, i), *y = ELEM(g, v, 2, i);
        if (ints)
            kn__store_i64(o, v[0].dtype,
                          kn__binary_i64((int)a->fn, kn__load_i64(x, v[1].dtype), kn__load_i64(y, v[2].dtype)));
        else
            kn__store(o, v[0].dtype, kn__binary_eval((int)a->fn, kn__load(x, v[1].dtype), kn__load(y, v[2].dtype)));
    }
    return KN_OK;
}

static kn_status k_where(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_WHERE]++;
    const kn_where_args *a = pa;
    kn_operand v[4] = {a->out, a->cond, a->a, a->b};
    kn_geom g;
    geom_of(&g, 4, v);
    for (int64_t i = 0; i < g.numel; i++) {
        bool c = kn__load_i64(ELEM(g, v, 1, i), v[1].dtype) != 0;
        memcpy(ELEM(g, v, 0, i), ELEM(g, v, c ? 2 : 3, i), esize(&v[0]));
    }
    return KN_OK;
}

/* ---- reductions ---------------------------------------------------------------------------- */
static double fold(int fn, double acc, double v) {
    switch (fn) {
    case KN_REDUCE_MAX: return v != v || acc != acc ? NAN : v > acc ? v : acc;
    case KN_REDUCE_MIN: return v != v || acc != acc ? NAN : v < acc ? v : acc;
    default: return acc + v;
    }
}

/* ARGMAX / ARGMIN along one dim: the first extreme, or the first NaN. */
static kn_status arg_reduce(const kn_reduce_args *a, int dim) {
    const kn_operand *x = &a->x, *out = &a->out;
    int64_t nout = kn_operand_numel(out), len = x->shape[dim], idx[KN_MAX_DIMS];
    bool mx = a->fn == KN_REDUCE_ARGMAX;
    for (int64_t o = 0; o < nout; o++) {
        unravel(o, out->ndim, out->shape, idx);
        int64_t oo = offset_of(out, idx), best_i = 0;
        double best = 0;
        for (int64_t i = 0; i < len; i++) {
            idx[dim] = i;
            double v = kn__load(at(x, offset_of(x, idx)), x->dtype);
            if (i == 0 || v != v || (mx ? v > best : v < best)) {
                best = v;
                best_i = i;
                if (v != v) break;
            }
        }
        kn__store_i64(at(out, oo), out->dtype, best_i);
    }
    return KN_OK;
}

static kn_status k_reduce(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_REDUCE]++;
    const kn_reduce_args *a = pa;
    const kn_operand *x = &a->x, *out = &a->out;
    uint64_t mask = (uint64_t)a->dims;
    int fn = (int)a->fn;
    if (fn == KN_REDUCE_ARGMAX || fn == KN_REDUCE_ARGMIN) {
        int dim = 0;
        while (dim < x->ndim && !(mask >> dim & 1)) dim++;
        if (dim == x->ndim) return kn__err(KN_ERR_INVALID, "%s: no dim to reduce", kn__reduce_name(a->fn));
        return arg_reduce(a, dim);
    }
    int64_t nout = kn_operand_numel(out), nx = kn_operand_numel(x), R = 1, idx[KN_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        if (mask >> d & 1) R *= x->shape[d];
    if (nout == 0) return KN_OK;
    double *acc = malloc((size_t)nout * sizeof *acc), *mean = malloc((size_t)nout * sizeof *mean);
    if (!acc || !mean) {
        free(acc);
        free(mean);
        return kn__err(KN_ERR_OOM, "%s: out of host memory", kn__reduce_name(a->fn));
    }
    /* VAR: a first pass for the mean, then the squared deviations. */
    for (int pass = fn == KN_REDUCE_VAR ? 0 : 1; pass < 2; pass++) {
        int f = pass == 0 ? KN_REDUCE_SUM : fn;
        for (int64_t o = 0; o < nout; o++) acc[o] = f == KN_REDUCE_MAX ? -INFINITY : f == KN_REDUCE_MIN ? INFINITY : 0;
        for (int64_t k = 0; k < nx; k++) {
            unravel(k, x->ndim, x->shape, idx);
            int64_t o = 0;
            for (int d = 0; d < x->ndim; d++) o = o * out->shape[d] + (mask >> d & 1 ? 0 : idx[d]);
            double v = kn__load(at(x, offset_of(x, idx)), x->dtype);
            if (f == KN_REDUCE_VAR) v = (v - mean[o]) * (v - mean[o]);
            acc[o] = fold(f, acc[o], v);
        }
        if (pass == 0)
            for (int64_t o = 0; o < nout; o++) mean[o] = acc[o] / (double)R;
    }
    for (int64_t o = 0; o < nout; o++) {
        double v = acc[o];
        if (fn == KN_REDUCE_MEAN) v = R > 0 ? v / (double)R : NAN;
        if (fn == KN_REDUCE_VAR) v = R - a->correction > 0 ? v / (double)(R - a->correction) : NAN;
        if ((fn == KN_REDUCE_MAX || fn == KN_REDUCE_MIN) && R == 0) v = NAN;
        unravel(o, out->ndim, out->shape, idx);
        char *p = at(out, offset_of(out, idx));
        if (is_int(out->dtype) && fn == KN_REDUCE_SUM) kn__store_i64(p, out->dtype, (int64_t)llround(v));
        else kn__store(p, out->dtype, v);
    }
    free(acc);
    free(mean);
    return KN_OK;
}

/* ---- matmul -------------------------------------------------------------------------------- */
static kn_status k_matmul(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_MATMUL]++;
    const kn_matmul_args *m = pa;
    const kn_operand *a = &m->a, *b = &m->b, *out = &m->out, *bias = &m->bias;
    int64_t B = out->shape[0], M = out->shape[1], N = out->shape[2], K = a->shape[2];
    for (int64_t bi = 0; bi < B; bi++) {
        /* A batch dim of size 1 broadcasts whatever its stride. */
        const char *pa_ = at(a, (a->shape[0] == 1 ? 0 : bi) * a->stride[0]);
        const char *pb_ = at(b, (b->shape[0] == 1 ? 0 : bi) * b->stride[0]);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++)
                    acc += kn__load(pa_ + (i * a->stride[1] + k * a->stride[2]) * (int64_t)esize(a), a->dtype) *
                           kn__load(pb_ + (k * b->stride[1] + j * b->stride[2]) * (int64_t)esize(b), b->dtype);
                if (kn_operand_present(bias)) acc += kn__load(at(bias, j * bias->stride[bias->ndim - 1]), bias->dtype);
                if (m->act == KN_ACT_RELU && acc <= 0) acc = 0; /* NaN stays NaN */
                kn__store(at(out, bi * out->stride[0] + i * out->stride[1] + j * out->stride[2]), out->dtype, acc);
            }
    }
    return KN_OK;
}

/* ---- indexing ------------------------------------------------------------------------------ */
static kn_status bad_index(const char *op, int64_t j, int dim, int64_t size) {
    return kn__err(KN_ERR_INVALID, "%s: index %lld is out of range for dim %d of size %lld", op, (long long)j, dim,
                   (long long)size);
}

static kn_status k_gather(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_GATHER]++;
    const kn_gather_args *a = pa;
    const kn_operand *x = &a->x, *ix = &a->index, *out = &a->out;
    int dim = (int)a->dim;
    int64_t n = kn_operand_numel(out), idx[KN_MAX_DIMS];
    for (int64_t k = 0; k < n; k++) {
        unravel(k, out->ndim, out->shape, idx);
        char *o = at(out, offset_of(out, idx));
        int64_t j = kn__load_i64(at(ix, offset_of(ix, idx)), ix->dtype);
        if (j < 0 || j >= x->shape[dim]) return bad_index("gather", j, dim, x->shape[dim]);
        idx[dim] = j;
        memcpy(o, at(x, offset_of(x, idx)), esize(out));
    }
    return KN_OK;
}

static kn_status k_scatter_add(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_SCATTER_ADD]++;
    const kn_scatter_add_args *a = pa;
    const kn_operand *src = &a->src, *ix = &a->index, *out = &a->out;
    int dim = (int)a->dim;
    int64_t n = kn_operand_numel(src), idx[KN_MAX_DIMS];
    /* One element at a time, in order: repeated indices add up. */
    for (int64_t k = 0; k < n; k++) {
        unravel(k, src->ndim, src->shape, idx);
        const char *s = at(src, offset_of(src, idx));
        int64_t j = kn__load_i64(at(ix, offset_of(ix, idx)), ix->dtype);
        if (j < 0 || j >= out->shape[dim]) return bad_index("scatter_add", j, dim, out->shape[dim]);
        idx[dim] = j;
        char *o = at(out, offset_of(out, idx));
        if (is_int(out->dtype))
            kn__store_i64(o, out->dtype, kn__load_i64(o, out->dtype) + kn__load_i64(s, src->dtype));
        else
            kn__store(o, out->dtype, kn__load(o, out->dtype) + kn__load(s, src->dtype));
    }
    return KN_OK;
}

/* ---- random -------------------------------------------------------------------------------- */
static kn_status k_random(int dev, const void *pa) {
    (void)dev;
    calls[KN_OP_RANDOM]++;
    const kn_random_args *a = pa;
    kn_operand v[1] = {a->out};
    kn_geom g;
    geom_of(&g, 1, v);
    bool integral = a->kind == KN_RANDOM_INT || a->kind == KN_RANDOM_BITS;
    for (int64_t k = 0; k < g.numel; k++) {
        double x = kn__random_value((int)a->kind, (uint64_t)a->seed, (uint64_t)a->offset, k, a->a, a->b);
        if (integral) kn__store_i64(ELEM(g, v, 0, k), v[0].dtype, (int64_t)x);
        else kn__store(ELEM(g, v, 0, k), v[0].dtype, x);
    }
    return KN_OK;
}

/* ---- the device: host memory ---------------------------------------------------------------- */
static int count(void) { return 1; }
static const char *name(int i) {
    (void)i;
    return "host memory, scalar primitives only (fused ops run as composites)";
}
static kn_status memory(int i, size_t *f, size_t *t) {
    (void)i;
    *f = *t = (size_t)1 << 30;
    return KN_OK;
}
static void *alloc(int i, size_t n) {
    (void)i;
    return malloc(n ? n : 1);
}
static void release(int i, void *p, size_t n) {
    (void)i, (void)n;
    free(p);
}
static kn_status copy(int i, void *d, const void *s, size_t n) {
    (void)i;
    memmove(d, s, n);
    return KN_OK;
}
static kn_status sync(int i) {
    (void)i;
    return KN_OK;
}

static const kn_backend prim = {
    .name = "prim",
    .title = "Primitives",
    .priority = 0,
    .device_count = count,
    .device_name = name,
    .memory = memory,
    .alloc = alloc,
    .free = release,
    .copy_h2d = copy,
    .copy_d2h = copy,
    .copy_d2d = copy,
    .synchronize = sync,
    .dtypes = KN_DTYPES_ALL,
    .kernels =
        {
            [KN_OP_COPY] = k_copy,
            [KN_OP_FILL] = k_fill,
            [KN_OP_UNARY] = k_unary,
            [KN_OP_UNARY_BACKWARD] = k_unary_backward,
            [KN_OP_BINARY] = k_binary,
            [KN_OP_WHERE] = k_where,
            [KN_OP_REDUCE] = k_reduce,
            [KN_OP_MATMUL] = k_matmul,
            [KN_OP_GATHER] = k_gather,
            [KN_OP_SCATTER_ADD] = k_scatter_add,
            [KN_OP_RANDOM] = k_random,
        },
};

int kt_prim_register(void) {
    static int kind = -1;
    if (kind < 0) kind = kn__backend_register(&prim);
    return kind;
}

int64_t kt_prim_calls(int op) { return op >= 0 && op < KN_OP_COUNT ? calls[op] : 0; }

kn_device kt_prim_device(void) { return (kn_device){(int16_t)kt_prim_register(), 0}; }
