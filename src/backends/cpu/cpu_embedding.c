/* CPU kernels for joined embeddings (KN_OP_EMBEDDING_CAT and its backward):
 * T tables looked up with one row of codes each and written side by side,
 * the tabular model's first layer as one op. */
#include "cpu_nn.h"

/* The codes [N, T] widened to int64 and checked against each table's rows
 * (tables' row counts in rows[]); NULL with an error naming the first bad one. */
static int64_t *load_codes(const kn_tensor *codes, int T, const int64_t *rows) {
    int64_t N = codes->shape[0];
    int64_t *v = malloc((size_t)(N * T > 0 ? N * T : 1) * sizeof *v);
    if (!v) {
        kn__err(KN_ERR_OOM, "embedding_cat: out of host memory for %lld codes", (long long)(N * T));
        return NULL;
    }
    const char *base = kn__data(codes);
    size_t es = kn_dtype_size(codes->dtype);
    for (int64_t n = 0; n < N; n++)
        for (int k = 0; k < T; k++) {
            int64_t x = kn__load_i64(base + (size_t)(n * codes->stride[0] + k * codes->stride[1]) * es, codes->dtype);
            if ((uint64_t)x >= (uint64_t)rows[k]) {
                kn__err(KN_ERR_INVALID, "embedding_cat: index %lld is out of range for table %d of %lld rows",
                        (long long)x, k, (long long)rows[k]);
                free(v);
                return NULL;
            }
            v[n * T + k] = x;
        }
    return v;
}

kn_status kn__cpu_embedding_cat(const kn_call *c) {
    int T = (int)c->i[0];
    kn_tensor *out = c->out[0];
    int64_t N = out->shape[0], rows[KN_EMBEDDING_CAT_MAX];
    for (int k = 0; k < T; k++) rows[k] = c->in[1 + k]->shape[0];
    int64_t *code = load_codes(c->in[0], T, rows);
    if (!code) return kn_error_code();
    size_t es = kn_dtype_size(out->dtype);
    char *o = kn__data(out);
    for (int64_t n = 0; n < N; n++) {
        int64_t col = 0;
        for (int k = 0; k < T; k++) {
            const kn_tensor *w = c->in[1 + k];
            int64_t D = w->shape[1];
            const char *src = (const char *)kn__data(w) + (size_t)(code[n * T + k] * D) * es;
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

kn_status kn__cpu_embedding_cat_backward(const kn_call *c) {
    int T = (int)c->i[0];
    const kn_tensor *g = c->in[0];
    int64_t N = g->shape[0], rows[KN_EMBEDDING_CAT_MAX], start[KN_EMBEDDING_CAT_MAX + 1] = {0};
    for (int k = 0; k < T; k++) {
        rows[k] = c->out[k]->shape[0];
        start[k + 1] = start[k] + rows[k] * c->out[k]->shape[1];
    }
    int64_t *code = load_codes(c->in[1], T, rows);
    /* Sums in double for every dtype, then stored once. */
    double *acc = code ? calloc((size_t)(start[T] > 0 ? start[T] : 1), sizeof *acc) : NULL;
    if (!acc) {
        free(code);
        return code ? oom("embedding_cat") : kn_error_code();
    }
    const char *gp = kn__data(g);
    size_t gs = kn_dtype_size(g->dtype);
    for (int64_t n = 0; n < N; n++) {
        int64_t col = 0;
        for (int k = 0; k < T; k++) {
            int64_t D = c->out[k]->shape[1];
            double *dst = acc + start[k] + code[n * T + k] * D;
            for (int64_t d = 0; d < D; d++)
                dst[d] += kn__load(gp + (size_t)(n * g->stride[0] + (col + d) * g->stride[1]) * gs, g->dtype);
            col += D;
        }
    }
    for (int k = 0; k < T; k++) {
        kn_tensor *o = c->out[k];
        size_t es = kn_dtype_size(o->dtype);
        for (int64_t i = 0; i < start[k + 1] - start[k]; i++)
            kn__store((char *)kn__data(o) + (size_t)i * es, o->dtype, acc[start[k] + i]);
    }
    free(acc);
    free(code);
    return KN_OK;
}
