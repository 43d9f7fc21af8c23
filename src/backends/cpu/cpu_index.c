/* CPU kernels for indexing: index_select, gather, index_add, scatter_add.
 *
 * Indices are widened to int64 and range-checked serially before any parallel
 * work, so an error is recorded on the caller's thread (errors are
 * thread-local). index_select and index_add view their tensors as
 * [outer, n, inner] around the indexed dim; an operand whose strides cannot be
 * merged that way is first copied to a contiguous one. gather and scatter_add
 * walk any strides directly, since x (out) may be larger than the index. */
#include "cpu_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------------- */
/* Merges dims [lo, hi) into one (size, stride in elements); false when the
 * strides do not allow it. */
static bool merge(const int64_t *shape, const int64_t *stride, int lo, int hi, int64_t *size,
                  int64_t *st) {
    int64_t sz = 1, s = 0;
    for (int d = hi - 1; d >= lo; d--) {
        if (shape[d] == 0) {
            *size = 0;
            *st = 0;
            return true;
        }
        if (shape[d] == 1) continue;
        if (sz == 1) s = stride[d];
        else if (stride[d] != s * sz) return false;
        sz *= shape[d];
    }
    *size = sz;
    *st = sz == 1 ? 1 : s; /* a lone element counts as dense */
    return true;
}

/* A tensor as [outer, n, inner] around dim; strides in bytes. */
typedef struct {
    char *base;
    int64_t outer, n, inner;
    int64_t so, sn, si;
} view3;

static bool make_view3(const kn_operand *t, int dim, view3 *v) {
    int64_t es = (int64_t)kn_dtype_size(t->dtype), so, si;
    if (t->ndim == 0) {
        *v = (view3){t->data, 1, 1, 1, 0, 0, 0};
        return true;
    }
    if (!merge(t->shape, t->stride, 0, dim, &v->outer, &so) ||
        !merge(t->shape, t->stride, dim + 1, t->ndim, &v->inner, &si))
        return false;
    v->base = t->data;
    v->n = t->shape[dim];
    v->so = so * es;
    v->sn = t->stride[dim] * es;
    v->si = si * es;
    return true;
}

/* view3 of t, through a contiguous copy (tmp) when its strides do not merge. */
static bool view3_or_copy(const char *op, const kn_operand *t, int dim, view3 *v, kn_dense *tmp) {
    memset(tmp, 0, sizeof *tmp);
    if (make_view3(t, dim, v)) return true;
    /* Not mergeable, so not contiguous: kn__cpu_dense copies it. */
    if (kn__cpu_dense(op, tmp, t, t->dtype) != KN_OK) return false;
    return make_view3(&tmp->v, dim, v);
}

/* Widens t's values (row-major order) to int64 and checks 0 <= v < limit.
 * NULL with an error naming op otherwise. The caller frees the array. */
static int64_t *load_indices(const char *op, const kn_operand *t, int dim, int64_t limit) {
    int64_t n = kn_operand_numel(t);
    int64_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v) {
        kn__err(KN_ERR_OOM, "%s: out of host memory for %lld indices", op, (long long)n);
        return NULL;
    }
    const char *base = t->data;
    int64_t es = (int64_t)kn_dtype_size(t->dtype), off = 0, idx[KN_MAX_DIMS] = {0};
    int last = t->ndim - 1;
    int64_t len = last >= 0 ? t->shape[last] : 1, st = last >= 0 ? t->stride[last] : 0;
    for (int64_t k = 0; k < n; k += len) {
        const char *p = base + off * es;
        int64_t *o = v + k;
        switch (t->dtype) {
        case KN_I64: for (int64_t i = 0; i < len; i++) o[i] = ((const int64_t *)p)[i * st]; break;
        case KN_I32: for (int64_t i = 0; i < len; i++) o[i] = ((const int32_t *)p)[i * st]; break;
        case KN_U8: for (int64_t i = 0; i < len; i++) o[i] = ((const uint8_t *)p)[i * st]; break;
        default:
            for (int64_t i = 0; i < len; i++) o[i] = kn__load_i64(p + i * st * es, t->dtype);
            break;
        }
        for (int d = last - 1; d >= 0; d--) {
            off += t->stride[d];
            if (++idx[d] < t->shape[d]) break;
            off -= idx[d] * t->stride[d];
            idx[d] = 0;
        }
    }
    int64_t bad = -1;
    for (int64_t k = 0; k < n; k++)
        if ((uint64_t)v[k] >= (uint64_t)limit) { /* negatives too */
            bad = k;
            break;
        }
    if (bad >= 0) {
        kn__err(KN_ERR_INVALID, "%s: index %lld is out of range for dim %d of size %lld", op,
                (long long)v[bad], dim, (long long)limit);
        free(v);
        return NULL;
    }
    return v;
}

/* n elements of es bytes from src (stride ss bytes) to dst (stride ds). */
static inline void copy_run(char *dst, int64_t ds, const char *src, int64_t ss, int64_t n, size_t es) {
    if (ds == (int64_t)es && ss == (int64_t)es) {
        memcpy(dst, src, (size_t)n * es);
        return;
    }
#define RUN(NB)                                                                                   \
    for (int64_t i = 0; i < n; i++) memcpy(dst + i * ds, src + i * ss, NB);                       \
    return
    switch (es) {
    case 1: RUN(1);
    case 2: RUN(2);
    case 4: RUN(4);
    case 8: RUN(8);
    default: RUN(es);
    }
#undef RUN
}

/* ---- index_select ------------------------------------------------------------------------------- */
typedef struct {
    view3 a, o;
    const int64_t *idx;
    int64_t L;
    size_t es;
} sel_ctx;

static void sel_rows(int64_t b, int64_t e, void *p) {
    const sel_ctx *c = p;
    const view3 *a = &c->a, *o = &c->o;
    /* Common case (embedding): one outer block, dense rows in and out. */
    if (a->outer == 1 && a->si == (int64_t)c->es && o->si == (int64_t)c->es &&
        o->sn == a->inner * (int64_t)c->es) {
        size_t rb = (size_t)a->inner * c->es;
        char *dst = o->base;
        const char *src = a->base;
        const int64_t *idx = c->idx;
        int64_t sn = a->sn;
#define ROWS(NB)                                                                                  \
    for (int64_t r = b; r < e; r++) memcpy(dst + (size_t)r * rb, src + idx[r] * sn, NB);          \
    return
        switch (rb) {
        case 4: ROWS(4);
        case 8: ROWS(8);
        case 16: ROWS(16);
        case 32: ROWS(32);
        default: ROWS(rb);
        }
#undef ROWS
    }
    for (int64_t r = b; r < e; r++) {
        int64_t oi = r / c->L, i = r % c->L;
        copy_run(o->base + oi * o->so + i * o->sn, o->si, a->base + oi * a->so + c->idx[i] * a->sn,
                 a->si, a->inner, c->es);
    }
}

kn_status kn__cpu_index_select(int device, const void *args) {
    (void)device;
    const kn_index_select_args *a = args;
    const kn_operand *x = &a->x, *out = &a->out;
    int dim = (int)a->dim;
    int64_t *idx = load_indices("index_select", &a->index, dim, x->ndim ? x->shape[dim] : 1);
    if (!idx) return kn_error_code();
    kn_status s = KN_OK;
    kn_dense tx = {0}, to = {0};
    sel_ctx sc = {.idx = idx, .L = kn_operand_numel(&a->index), .es = kn_dtype_size(x->dtype)};
    if (kn_operand_numel(out) == 0) goto done;
    if (!view3_or_copy("index_select", x, dim, &sc.a, &tx) ||
        !view3_or_copy("index_select", out, dim, &sc.o, &to)) {
        s = kn_error_code();
        goto done;
    }
    int64_t rows = sc.a.outer * sc.L, rb = sc.a.inner * (int64_t)sc.es;
    kn__parallel_for(rows, 65536 / (rb + 1) + 1, sel_rows, &sc);
    if (to.owned) { /* out was not mergeable: write the result back through its strides */
        kn_copy_args back = {.out = *out, .x = to.v};
        s = kn__cpu_copy(0, &back);
    }
done:
    kn__cpu_dense_free(&tx);
    kn__cpu_dense_free(&to);
    free(idx);
    return s;
}

/* ---- gather --------------------------------------------------------------------------------------- */
typedef struct {
    int nd, dim;
    const int64_t *shape;       /* the index's (= out's) shape */
    const int64_t *as, *os;     /* strides in elements of a and out */
    const char *abase;          /* a's first element */
    char *obase;                /* out's first element */
    const int64_t *idx;         /* row-major, out's order */
    size_t es;
} gat_ctx;

static void gat_rows(int64_t b, int64_t e, void *p) {
    const gat_ctx *g = p;
    int last = g->nd - 1, dim = g->dim;
    int64_t len = g->shape[last], coord[KN_MAX_DIMS] = {0}, ao = 0, oo = 0, rem = b;
    for (int d = last - 1; d >= 0; d--) {
        coord[d] = rem % g->shape[d];
        rem /= g->shape[d];
        if (d != dim) ao += coord[d] * g->as[d];
        oo += coord[d] * g->os[d];
    }
    int64_t es = (int64_t)g->es, aj = last == dim ? 0 : g->as[last], ad = g->as[dim], oj = g->os[last];
    for (int64_t r = b; r < e; r++) {
        const int64_t *v = g->idx + r * len;
        const char *src = g->abase + ao * es;
        char *dst = g->obase + oo * es;
        switch (es) {
        case 4:
            for (int64_t j = 0; j < len; j++) memcpy(dst + j * oj * 4, src + (j * aj + v[j] * ad) * 4, 4);
            break;
        case 8:
            for (int64_t j = 0; j < len; j++) memcpy(dst + j * oj * 8, src + (j * aj + v[j] * ad) * 8, 8);
            break;
        default:
            for (int64_t j = 0; j < len; j++)
                memcpy(dst + j * oj * es, src + (j * aj + v[j] * ad) * es, (size_t)es);
            break;
        }
        for (int d = last - 1; d >= 0; d--) {
            if (d != dim) ao += g->as[d];
            oo += g->os[d];
            if (++coord[d] < g->shape[d]) break;
            if (d != dim) ao -= coord[d] * g->as[d];
            oo -= coord[d] * g->os[d];
            coord[d] = 0;
        }
    }
}

kn_status kn__cpu_gather(int device, const void *args) {
    (void)device;
    const kn_gather_args *ga = args;
    const kn_operand *a = &ga->x, *out = &ga->out;
    int dim = (int)ga->dim;
    int64_t *idx = load_indices("gather", &ga->index, dim, a->ndim ? a->shape[dim] : 1);
    if (!idx) return kn_error_code();
    int64_t n = kn_operand_numel(out);
    if (n > 0) {
        /* 0-d operands are walked as [1]. */
        int64_t one = 1, zero = 0;
        bool scalar = out->ndim == 0;
        gat_ctx g = {.nd = scalar ? 1 : out->ndim, .dim = scalar ? 0 : dim,
                     .shape = scalar ? &one : out->shape, .as = scalar ? &zero : a->stride,
                     .os = scalar ? &zero : out->stride, .abase = a->data, .obase = out->data,
                     .idx = idx, .es = kn_dtype_size(a->dtype)};
        int64_t len = g.shape[g.nd - 1];
        kn__parallel_for(n / len, 16384 / len + 1, gat_rows, &g);
    }
    free(idx);
    return KN_OK;
}

/* ---- index_add ----------------------------------------------------------------------------------- */
/* Work items are (outer, block of inner) columns: each owns the output
 * elements it adds into, whatever the indices repeat, so no two threads
 * touch the same element. */
enum { ADD_BLOCK = 256 };

typedef struct {
    view3 o, s;
    const int64_t *idx;
    int64_t L, nblocks;
    kn_dtype dt;
} add_ctx;

static void add_cols(int64_t b, int64_t e, void *p) {
    const add_ctx *c = p;
    const view3 *o = &c->o, *s = &c->s;
    for (int64_t w = b; w < e; w++) {
        int64_t oi = w / c->nblocks, r0 = (w % c->nblocks) * ADD_BLOCK;
        int64_t n = o->inner - r0 < ADD_BLOCK ? o->inner - r0 : ADD_BLOCK;
        char *obase = o->base + oi * o->so + r0 * o->si;
        const char *sbase = s->base + oi * s->so + r0 * s->si;
        for (int64_t i = 0; i < c->L; i++) {
            char *dst = obase + c->idx[i] * o->sn;
            const char *src = sbase + i * s->sn;
            int64_t ds = o->si, ss = s->si;
            /* One float add rounds exactly as the sum in double rounded to float. */
            switch (c->dt) {
            case KN_F32:
                for (int64_t r = 0; r < n; r++) *(float *)(dst + r * ds) += *(const float *)(src + r * ss);
                break;
            case KN_F64:
                for (int64_t r = 0; r < n; r++) *(double *)(dst + r * ds) += *(const double *)(src + r * ss);
                break;
            case KN_F16: case KN_BF16:
                for (int64_t r = 0; r < n; r++)
                    kn__store(dst + r * ds, c->dt, kn__load(dst + r * ds, c->dt) + kn__load(src + r * ss, c->dt));
                break;
            default: /* integers and bool: exact in int64 */
                for (int64_t r = 0; r < n; r++)
                    kn__store_i64(dst + r * ds, c->dt,
                                  kn__load_i64(dst + r * ds, c->dt) + kn__load_i64(src + r * ss, c->dt));
                break;
            }
        }
    }
}

kn_status kn__cpu_index_add(int device, const void *args) {
    (void)device;
    const kn_index_add_args *a = args;
    const kn_operand *src = &a->src, *out = &a->out;
    int dim = (int)a->dim;
    int64_t *idx = load_indices("index_add", &a->index, dim, out->ndim ? out->shape[dim] : 1);
    if (!idx) return kn_error_code();
    kn_status s = KN_OK;
    kn_dense to = {0}, ts = {0};
    add_ctx ac = {.idx = idx, .L = kn_operand_numel(&a->index), .dt = out->dtype};
    if (kn_operand_numel(src) == 0 || kn_operand_numel(out) == 0) goto done;
    if (!view3_or_copy("index_add", out, dim, &ac.o, &to) ||
        !view3_or_copy("index_add", src, dim, &ac.s, &ts)) {
        s = kn_error_code();
        goto done;
    }
    ac.nblocks = (ac.o.inner + ADD_BLOCK - 1) / ADD_BLOCK;
    int64_t items = ac.o.outer * ac.nblocks, per = ac.L * (ac.o.inner < ADD_BLOCK ? ac.o.inner : ADD_BLOCK);
    kn__parallel_for(items, 32768 / (per + 1) + 1, add_cols, &ac);
    if (to.owned) { /* out was not mergeable: the sums went to a copy; write them back */
        kn_copy_args back = {.out = *out, .x = to.v};
        s = kn__cpu_copy(0, &back);
    }
done:
    kn__cpu_dense_free(&to);
    kn__cpu_dense_free(&ts);
    free(idx);
    return s;
}

/* ---- scatter_add ---------------------------------------------------------------------------------
 * Work items are the positions of index (= src) in every dim but `dim`: an
 * item adds only into out elements of its own coordinates in those dims, so
 * items run in parallel and each walks `dim` serially, repeated indices
 * included. Items go in blocks of consecutive positions, which share cache
 * lines of src and out, taking one step along `dim` at a time. */
enum { SCAT_BLOCK = 64 };

/* dst += src for one element (of dtype dt). One float add rounds exactly as
 * the sum in double rounded to float. */
static inline void add_elem(char *dst, const char *src, kn_dtype dt) {
    switch (dt) {
    case KN_F32: *(float *)dst += *(const float *)src; break;
    case KN_F64: *(double *)dst += *(const double *)src; break;
    case KN_F16: case KN_BF16: kn__store(dst, dt, kn__load(dst, dt) + kn__load(src, dt)); break;
    default: kn__store_i64(dst, dt, kn__load_i64(dst, dt) + kn__load_i64(src, dt)); break; /* exact */
    }
}

typedef struct {
    int nd, dim;
    const int64_t *shape;          /* index's (= src's) shape */
    const int64_t *ss, *os;        /* src and out strides in elements */
    const char *sbase;
    char *obase;
    const int64_t *idx;            /* row-major in index's shape */
    int64_t n, inner;              /* index's size along dim, and the product after it */
    size_t es;
    kn_dtype dt;
} scat_ctx;

static void scat_items(int64_t b, int64_t e, void *p) {
    const scat_ctx *c = p;
    int64_t es = (int64_t)c->es, ssd = c->ss[c->dim], osd = c->os[c->dim];
    for (int64_t i0 = b; i0 < e; i0 += SCAT_BLOCK) {
        int nb = (int)(e - i0 < SCAT_BLOCK ? e - i0 : SCAT_BLOCK);
        int64_t so[SCAT_BLOCK], oo[SCAT_BLOCK], io[SCAT_BLOCK];
        for (int t = 0; t < nb; t++) {
            /* Item -> coordinates in the dims but `dim`, innermost first. */
            int64_t rem = i0 + t, s = 0, o = 0;
            for (int d = c->nd - 1; d >= 0; d--) {
                if (d == c->dim) continue;
                int64_t x = rem % c->shape[d];
                rem /= c->shape[d];
                s += x * c->ss[d];
                o += x * c->os[d];
            }
            so[t] = s;
            oo[t] = o;
            io[t] = (i0 + t) / c->inner * c->n * c->inner + (i0 + t) % c->inner;
        }
        for (int64_t j = 0; j < c->n; j++)
            for (int t = 0; t < nb; t++) {
                char *dst = c->obase + (oo[t] + c->idx[io[t] + j * c->inner] * osd) * es;
                add_elem(dst, c->sbase + (so[t] + j * ssd) * es, c->dt);
            }
    }
}

kn_status kn__cpu_scatter_add(int device, const void *args) {
    (void)device;
    const kn_scatter_add_args *a = args;
    const kn_operand *src = &a->src, *out = &a->out, *index = &a->index;
    int dim = (int)a->dim;
    int64_t *idx = load_indices("scatter_add", index, dim, out->ndim ? out->shape[dim] : 1);
    if (!idx) return kn_error_code();
    int64_t total = kn_operand_numel(index);
    if (total > 0) {
        /* 0-d operands are walked as [1]. */
        int64_t one = 1, zero = 0;
        bool scalar = index->ndim == 0;
        scat_ctx c = {.nd = scalar ? 1 : index->ndim, .dim = scalar ? 0 : dim,
                      .shape = scalar ? &one : index->shape, .ss = scalar ? &zero : src->stride,
                      .os = scalar ? &zero : out->stride, .sbase = src->data, .obase = out->data,
                      .idx = idx, .inner = 1, .es = kn_dtype_size(out->dtype), .dt = out->dtype};
        c.n = c.shape[c.dim];
        for (int d = c.dim + 1; d < c.nd; d++) c.inner *= c.shape[d];
        int64_t items = total / c.n;
        kn__parallel_for(items, 16384 / c.n + 1, scat_items, &c);
    }
    free(idx);
    return KN_OK;
}
