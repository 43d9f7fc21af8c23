/* CPU kernels for joined embeddings (KN_OP_EMBEDDING_CAT and its backward):
 * T tables looked up with one row of codes each and written side by side,
 * the tabular model's first layer as one op. */
#include "cpu_nn.h"

/* The codes [N, T] widened to int64 and checked against each table's rows
 * (tables' row counts in rows[]); NULL with an error naming the first bad one. */
static int64_t *load_codes(const kn_operand *codes, int64_t T, const int64_t *rows) {
    int64_t N = codes->shape[0];
    int64_t *v = malloc((size_t)(N * T > 0 ? N * T : 1) * sizeof *v);
    if (!v) {
        kn__err(KN_ERR_OOM, "embedding_cat: out of host memory for %lld codes", (long long)(N * T));
        return NULL;
    }
    const char *base = codes->data;
    size_t es = kn_dtype_size(codes->dtype);
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < T; k++) {
            int64_t x = kn__load_i64(base + (size_t)(n * codes->stride[0] + k * codes->stride[1]) * es, codes->dtype);
            if ((uint64_t)x >= (uint64_t)rows[k]) {
                kn__err(KN_ERR_INVALID, "embedding_cat: index %lld is out of range for table %d of %lld rows",
                        (long long)x, (int)k, (long long)rows[k]);
                free(v);
                return NULL;
            }
            v[n * T + k] = x;
        }
    return v;
}

/* Row counts of T tables (and, with start, the offsets of each one's values
 * in one array of all of them: start[T + 1]); malloc'd, NULL on OOM. */
static int64_t *table_rows(const kn_operand *tables, int64_t T, int64_t **start) {
    int64_t *rows = malloc((size_t)(2 * T + 1) * sizeof *rows);
    if (!rows) {
        kn__err(KN_ERR_OOM, "embedding_cat: out of memory");
        return NULL;
    }
    int64_t *st = rows + T;
    st[0] = 0;
    for (int64_t k = 0; k < T; k++) {
        rows[k] = tables[k].shape[0];
        st[k + 1] = st[k] + rows[k] * tables[k].shape[1];
    }
    if (start) *start = st;
    return rows;
}

kn_status kn__cpu_embedding_cat(int device, const void *args) {
    (void)device;
    const kn_embedding_cat_args *a = args;
    const kn_operand *out = &a->out;
    int64_t T = a->n_tables, N = out->shape[0];
    int64_t *rows = table_rows(a->tables, T, NULL);
    if (!rows) return kn_error_code();
    int64_t *code = load_codes(&a->codes, T, rows);
    free(rows);
    if (!code) return kn_error_code();
    size_t es = kn_dtype_size(out->dtype);
    char *o = out->data;
    for (int64_t n = 0; n < N; n++) {
        int64_t col = 0;
        for (int64_t k = 0; k < T; k++) {
            const kn_operand *w = &a->tables[k];
            int64_t D = w->shape[1];
            const char *src = (const char *)w->data + (size_t)(code[n * T + k] * D) * es;
            char *dst = o + (size_t)(n * out->stride[0] + col * out->stride[1]) * es;
            if (out->stride[1] == 1) memcpy(dst, src, (size_t)D * es);
            else
                for (int64_t d = 0; d < D; d++) memcpy(dst + (size_t)(d * out->stride[1]) * es, src + (size_t)d * es, es);
            col += D;
        }
    }
    free(code);
    return KN_OK;
}

kn_status kn__cpu_embedding_cat_backward(int device, const void *args) {
    (void)device;
    const kn_embedding_cat_backward_args *a = args;
    const kn_operand *g = &a->grad;
    int64_t T = a->n_tables, N = g->shape[0], *start;
    int64_t *rows = table_rows(a->grads, T, &start);
    if (!rows) return kn_error_code();
    int64_t *code = load_codes(&a->codes, T, rows);
    if (!code) {
        free(rows);
        return kn_error_code();
    }
    /* Sums in double for every dtype, then stored once. */
    double *acc = calloc((size_t)(start[T] > 0 ? start[T] : 1), sizeof *acc);
    if (!acc) {
        free(code);
        free(rows);
        return oom("embedding_cat");
    }
    const char *gp = g->data;
    size_t gs = kn_dtype_size(g->dtype);
    for (int64_t n = 0; n < N; n++) {
        int64_t col = 0;
        for (int64_t k = 0; k < T; k++) {
            int64_t D = a->grads[k].shape[1];
            double *dst = acc + start[k] + code[n * T + k] * D;
            for (int64_t d = 0; d < D; d++)
                dst[d] += kn__load(gp + (size_t)(n * g->stride[0] + (col + d) * g->stride[1]) * gs, g->dtype);
            col += D;
        }
    }
    for (int64_t k = 0; k < T; k++) {
        const kn_operand *o = &a->grads[k];
        size_t es = kn_dtype_size(o->dtype);
        for (int64_t i = 0; i < start[k + 1] - start[k]; i++)
            kn__store((char *)o->data + (size_t)i * es, o->dtype, acc[start[k] + i]);
    }
    free(acc);
    free(code);
    free(rows);
    return KN_OK;
}
