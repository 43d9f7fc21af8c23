/* CPU reductions. Accumulation is in double, so float32 sums over millions
 * of elements keep their precision. Two strategies: rows (the reduced dims
 * are the innermost, contiguous ones: parallel over rows) and scatter (any
 * layout: walk the input once, adding into per-output accumulators). */
#include "cpu_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    kn_reduce_fn fn;
    kn_dtype dt;
    const char *x;
    int64_t row_len;
    double *acc;
    const double *mean; /* VAR second pass */
} rows_ctx;

static double fold_row(const rows_ctx *r, const char *p, int64_t n, double mean) {
    double acc = r->fn == KN_REDUCE_MAX ? -INFINITY : r->fn == KN_REDUCE_MIN ? INFINITY : 0;
    if (r->dt == KN_F32) {
        const float *x = (const float *)p;
        switch (r->fn) {
        case KN_REDUCE_SUM: case KN_REDUCE_MEAN:
            for (int64_t i = 0; i < n; i++) acc += x[i];
            return acc;
        case KN_REDUCE_VAR:
            for (int64_t i = 0; i < n; i++) acc += (x[i] - mean) * (x[i] - mean);
            return acc;
        default: break;
        }
    }
    size_t es = kn_dtype_size(r->dt);
    for (int64_t i = 0; i < n; i++) {
        double v = kn__load(p + (size_t)i * es, r->dt);
        switch (r->fn) {
        case KN_REDUCE_MAX: acc = v != v || acc != acc ? NAN : v > acc ? v : acc; break;
        case KN_REDUCE_MIN: acc = v != v || acc != acc ? NAN : v < acc ? v : acc; break;
        case KN_REDUCE_VAR: acc += (v - mean) * (v - mean); break;
        default: acc += v; break;
        }
    }
    return acc;
}

static void rows_range(int64_t b, int64_t e, void *p) {
    rows_ctx *r = p;
    size_t es = kn_dtype_size(r->dt);
    for (int64_t i = b; i < e; i++)
        r->acc[i] = fold_row(r, r->x + (size_t)(i * r->row_len) * es, r->row_len,
                             r->mean ? r->mean[i] : 0);
}

/* One output: chunks in parallel, then combine. */
typedef struct {
    rows_ctx *r;
    int64_t n, chunk;
    double *partial;
    double mean;
} chunk_ctx;

static void chunk_range(int64_t b, int64_t e, void *p) {
    chunk_ctx *c = p;
    size_t es = kn_dtype_size(c->r->dt);
    for (int64_t k = b; k < e; k++) {
        int64_t lo = k * c->chunk, hi = lo + c->chunk < c->n ? lo + c->chunk : c->n;
        c->partial[k] = fold_row(c->r, c->r->x + (size_t)lo * es, hi - lo, c->mean);
    }
}

static double combine(kn_reduce_fn fn, double a, double b) {
    if (fn == KN_REDUCE_MAX) return a != a || b != b ? NAN : a > b ? a : b;
    if (fn == KN_REDUCE_MIN) return a != a || b != b ? NAN : a < b ? a : b;
    return a + b;
}

static void reduce_rows(rows_ctx *r, int64_t n_out, double *acc) {
    r->acc = acc;
    if (n_out > 1) {
        kn__parallel_for(n_out, r->row_len >= 4096 ? 1 : 4096 / (r->row_len + 1) + 1, rows_range, r);
        return;
    }
    enum { CHUNK = 16384 };
    int64_t n = r->row_len, nchunks = n / CHUNK + 1;
    double *partial = malloc((size_t)nchunks * sizeof *partial);
    if (!partial) { /* tiny fallback: serial */
        rows_range(0, 1, r);
        return;
    }
    chunk_ctx c = {r, n, CHUNK, partial, r->mean ? r->mean[0] : 0};
    kn__parallel_for(nchunks, 1, chunk_range, &c);
    double a = partial[0];
    for (int64_t k = 1; k < nchunks; k++) a = combine(r->fn, a, partial[k]);
    acc[0] = a;
    free(partial);
}

/* Walks x in its own order; acc index from out strides (0 on reduced dims). */
static void reduce_scatter(kn_reduce_fn fn, const kn_operand *x, const int64_t *ostride, double *acc,
                           const double *mean) {
    int64_t n = kn_operand_numel(x);
    int64_t idx[KN_MAX_DIMS] = {0}, xo = 0, oo = 0;
    const char *base = x->data;
    size_t es = kn_dtype_size(x->dtype);
    int last = x->ndim - 1;
    for (int64_t k = 0; k < n;) {
        /* Inner run along the last dim. */
        int64_t len = last >= 0 ? x->shape[last] : 1, xs = last >= 0 ? x->stride[last] : 0,
                os = last >= 0 ? ostride[last] : 0;
        if (x->dtype == KN_F32 && (fn == KN_REDUCE_SUM || fn == KN_REDUCE_MEAN)) {
            /* The common case (bias gradients: sum over rows) as a tight loop. */
            const float *xp = (const float *)base + xo;
            double *ap = acc + oo;
            if (xs == 1 && os == 1)
                for (int64_t i = 0; i < len; i++) ap[i] += xp[i];
            else
                for (int64_t i = 0; i < len; i++) ap[i * os] += xp[i * xs];
        } else {
            for (int64_t i = 0; i < len; i++) {
                double v = kn__load(base + (size_t)(xo + i * xs) * es, x->dtype);
                double *a = &acc[oo + i * os];
                switch (fn) {
                case KN_REDUCE_MAX: *a = v != v || *a != *a ? NAN : v > *a ? v : *a; break;
                case KN_REDUCE_MIN: *a = v != v || *a != *a ? NAN : v < *a ? v : *a; break;
                case KN_REDUCE_VAR: *a += (v - mean[oo + i * os]) * (v - mean[oo + i * os]); break;
                default: *a += v; break;
                }
            }
        }
        k += len;
        for (int d = last - 1; d >= 0; d--) {
            idx[d]++;
            xo += x->stride[d];
            oo += ostride[d];
            if (idx[d] < x->shape[d]) break;
            xo -= idx[d] * x->stride[d];
            oo -= idx[d] * ostride[d];
            idx[d] = 0;
        }
    }
}

static kn_status argreduce(const kn_reduce_args *a, int dim) {
    const kn_operand *x = &a->x, *out = &a->out;
    bool mx = a->fn == KN_REDUCE_ARGMAX;
    int64_t n_out = kn_operand_numel(out), len = x->shape[dim];
    int64_t idx[KN_MAX_DIMS] = {0};
    const char *base = x->data;
    size_t es = kn_dtype_size(x->dtype);
    int64_t *o = out->data;
    for (int64_t k = 0; k < n_out; k++) {
        int64_t off = 0;
        for (int d = 0; d < x->ndim; d++) off += idx[d] * x->stride[d];
        double best = 0;
        int64_t bi = 0;
        for (int64_t i = 0; i < len; i++) {
            double v = kn__load(base + (size_t)(off + i * x->stride[dim]) * es, x->dtype);
            if (i == 0 || v != v || (mx ? v > best : v < best)) {
                best = v;
                bi = i;
                if (v != v) break; /* NaN wins, as in PyTorch */
            }
        }
        o[k] = bi;
        for (int d = out->ndim - 1; d >= 0; d--) {
            if (d == dim) continue;
            if (++idx[d] < out->shape[d]) break;
            idx[d] = 0;
        }
    }
    return KN_OK;
}

kn_status kn__cpu_reduce(int device, const void *args) {
    (void)device;
    const kn_reduce_args *a = args;
    kn_reduce_fn fn = (kn_reduce_fn)a->fn;
    uint64_t mask = (uint64_t)a->dims;
    const kn_operand *x = &a->x, *out = &a->out;
    if (fn == KN_REDUCE_ARGMAX || fn == KN_REDUCE_ARGMIN) {
        int dim = 0;
        while (dim < x->ndim && !(mask >> dim & 1)) dim++;
        return argreduce(a, dim);
    }
    int64_t n_out = kn_operand_numel(out), R = 1;
    if (n_out == 0) return KN_OK; /* nothing to write (e.g. a batch of 0 rows) */
    for (int d = 0; d < x->ndim; d++)
        if (mask >> d & 1) R *= x->shape[d];
    double *acc = malloc((size_t)(n_out ? n_out : 1) * sizeof *acc);
    double *mean = fn == KN_REDUCE_VAR ? malloc((size_t)(n_out ? n_out : 1) * sizeof *mean) : NULL;
    if (!acc || (fn == KN_REDUCE_VAR && !mean)) {
        free(acc);
        free(mean);
        return kn__err(KN_ERR_OOM, "%s: out of host memory", kn__reduce_name(fn));
    }
    /* Rows strategy: reduced dims trailing and x contiguous. */
    bool trailing = kn_operand_contiguous(x);
    for (int d = 0, seen = 0; d < x->ndim && trailing; d++) {
        if (mask >> d & 1) seen = 1;
        else if (seen && x->shape[d] != 1) trailing = false;
    }
    int passes = fn == KN_REDUCE_VAR ? 2 : 1;
    for (int pass = 0; pass < passes; pass++) {
        kn_reduce_fn f = pass == 0 && fn == KN_REDUCE_VAR ? KN_REDUCE_SUM : fn;
        if (trailing && R > 0) {
            rows_ctx r = {f, x->dtype, x->data, R, NULL, pass ? mean : NULL};
            reduce_rows(&r, n_out, acc);
        } else {
            double init = f == KN_REDUCE_MAX ? -INFINITY : f == KN_REDUCE_MIN ? INFINITY : 0;
            for (int64_t k = 0; k < n_out; k++) acc[k] = init;
            int64_t ostride[KN_MAX_DIMS], st = 1;
            for (int d = out->ndim - 1; d >= 0; d--) { /* acc is in out's row-major order */
                ostride[d] = st;
                st *= out->shape[d] > 1 ? out->shape[d] : 1;
            }
            for (int d = 0; d < x->ndim; d++)
                if (mask >> d & 1) ostride[d] = 0;
            if (R > 0) reduce_scatter(f, x, ostride, acc, pass ? mean : NULL);
        }
        if (pass == 0 && fn == KN_REDUCE_VAR)
            for (int64_t k = 0; k < n_out; k++) mean[k] = acc[k] / (double)R;
    }
    char *o = out->data;
    size_t es = kn_dtype_size(out->dtype);
    double denom = fn == KN_REDUCE_MEAN ? (double)R : fn == KN_REDUCE_VAR ? (double)(R - a->correction) : 1;
    for (int64_t k = 0; k < n_out; k++) {
        double v = acc[k];
        if (fn == KN_REDUCE_MEAN || fn == KN_REDUCE_VAR) v = denom > 0 ? v / denom : NAN;
        if ((fn == KN_REDUCE_MAX || fn == KN_REDUCE_MIN) && R == 0) v = NAN;
        if (!kn_dtype_is_float(out->dtype) && fn == KN_REDUCE_SUM) kn__store_i64(o + k * es, out->dtype, (int64_t)llround(v));
        else kn__store(o + k * es, out->dtype, v);
    }
    free(acc);
    free(mean);
    return KN_OK;
}
