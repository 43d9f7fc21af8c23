/* Fused index ops: index_select and index_add on the gather and scatter_add
 * shaders, and the joined embeddings on shaders/embed.comp (six tables a
 * dispatch). Their value over the composites: fewer dispatches, and an index
 * out of range is reported under the op's own name (the fault is read when
 * the host next waits, after the op has returned, too late for a composite
 * to rename it). */
#include "vk_ops.h"
#include "backends/common/views.h"


kn_status kvk_index_select(int device, const void *args) {
    const kn_index_select_args *a = args;
    kn_gather_args g = {.out = a->out, .x = a->x, .index = kn_view_index_along(&a->index, &a->out, a->dim), .dim = a->dim};
    KVK_WITH_DEVICE("index_select", kvk_record_gather(d, &g, KVK_FAULT_INDEX_SELECT, 0));
}

kn_status kvk_index_add(int device, const void *args) {
    const kn_index_add_args *a = args;
    kn_scatter_add_args s = {.out = a->out, .src = a->src, .index = kn_view_index_along(&a->index, &a->src, a->dim),
                             .dim = a->dim};
    KVK_WITH_DEVICE("index_add", kvk_record_scatter_add(d, &s, KVK_FAULT_INDEX_ADD, 0));
}

/* Up to six tables per dispatch (bindings 2..7 of shaders/embed.comp). */
#define EMBED_CHUNK 6
/* The backward's fused path: an invocation per gradient element reads every
 * code of its table, so it is for small tables (categorical columns). */
#define EMBED_SMALL_ROWS 64

/* Records embed.comp over tables [k0, k0 + nt) (in backward, those listed
 * in ks); false in *done when the sizes do not fit its 32-bit indices. */
static kn_status embed_record(kvk_dev *d, bool backward, const kn_operand *x, const kn_operand *codes,
                              const kn_operand *tabs, const int64_t *ks, const int64_t *cols, int nt, bool *done) {
    *done = false;
    uint32_t p[KVK_PARAMS] = {0};
    int64_t N = x->shape[0], dsum = 0, work = 0;
    if (!kvk_fits32(codes->stride[0]) || !kvk_fits32(codes->stride[1]) || !kvk_fits32(x->stride[0]) ||
        !kvk_fits32(x->stride[1]) || N > UINT32_MAX)
        return KN_OK;
    kvk_dispatch w = {.shader = KVK_SH_EMBED, .f64 = d->f64, .params = p, .n_params = KVK_PARAMS};
    for (int i = 0; i < nt; i++) {
        const kn_operand *t = &tabs[ks[i]];
        int64_t V = t->shape[0], D = t->shape[1];
        if (V > UINT32_MAX || D > UINT32_MAX || cols[i] > UINT32_MAX || V * D > UINT32_MAX) return KN_OK;
        p[20 + i] = (uint32_t)V, p[26 + i] = (uint32_t)D, p[32 + i] = (uint32_t)cols[i];
        p[38 + i] = (uint32_t)ks[i], p[46 + i] = (uint32_t)t->dtype;
        dsum += D;
        work += backward ? V * D : 0;
        kvk_bind(&w, 2 + i, t, 12 + i);
    }
    if (!backward) work = N * dsum;
    if (work > UINT32_MAX) return KN_OK;
    *done = true;
    if (work == 0) return KN_OK;
    p[0] = backward, p[1] = (uint32_t)N, p[2] = (uint32_t)nt;
    p[3] = (uint32_t)(int32_t)codes->stride[0], p[4] = (uint32_t)(int32_t)codes->stride[1];
    p[5] = (uint32_t)(int32_t)x->stride[0], p[6] = (uint32_t)(int32_t)x->stride[1];
    p[7] = (uint32_t)x->dtype, p[8] = (uint32_t)codes->dtype, p[9] = (uint32_t)work, p[19] = (uint32_t)dsum;
    p[44] = kvk_fault_code(d, KVK_FAULT_EMBEDDING_CAT);
    kvk_bind(&w, 0, x, 10);
    kvk_bind(&w, 1, codes, 11);
    w.groups[0] = kvk_groups(d, work);
    return kvk_record(d, &w, backward ? "embedding_cat_backward" : "embedding_cat");
}

static kn_status embedding_cat(kvk_dev *d, const kn_embedding_cat_args *a) {
    int64_t off = 0;
    kn_status s = KN_OK;
    for (int64_t k0 = 0; k0 < a->n_tables && s == KN_OK; k0 += EMBED_CHUNK) {
        int64_t ks[EMBED_CHUNK], cols[EMBED_CHUNK], c = off;
        int nt = 0;
        for (int64_t k = k0; k < a->n_tables && nt < EMBED_CHUNK; k++, nt++) {
            ks[nt] = k, cols[nt] = c;
            c += a->tables[k].shape[1];
        }
        bool done;
        s = embed_record(d, false, &a->out, &a->codes, a->tables, ks, cols, nt, &done);
        for (int i = 0; i < nt && s == KN_OK && !done; i++) { /* too large for it: a gather per table */
            int64_t D = a->tables[ks[i]].shape[1];
            kn_gather_args g = {.out = kn_view_columns(&a->out, cols[i], D), .x = a->tables[ks[i]],
                                .index = kn_view_code_column(&a->codes, ks[i], D), .dim = 0};
            s = kvk_record_gather(d, &g, KVK_FAULT_EMBEDDING_CAT, (uint32_t)ks[i]);
        }
        off = c;
    }
    return s;
}

kn_status kvk_embedding_cat(int device, const void *args) {
    KVK_WITH_DEVICE("embedding_cat", embedding_cat(d, args));
}

/* A table's gradient as a fill and a scatter_add (large tables). */
static kn_status embedding_grad_scatter(kvk_dev *d, const kn_embedding_cat_backward_args *a, int64_t k, int64_t col) {
    int64_t D = a->grads[k].shape[1];
    kn_fill_args z = {.out = a->grads[k], .value = 0};
    kn_scatter_add_args sa = {.out = a->grads[k], .src = kn_view_columns(&a->grad, col, D),
                              .index = kn_view_code_column(&a->codes, k, D), .dim = 0};
    kn_status s = kvk_record_fill(d, &z);
    if (s == KN_OK) s = kvk_record_scatter_add(d, &sa, KVK_FAULT_EMBEDDING_CAT, (uint32_t)k);
    return s;
}

static kn_status embedding_cat_backward(kvk_dev *d, const kn_embedding_cat_backward_args *a) {
    int64_t ks[EMBED_CHUNK], cols[EMBED_CHUNK], off = 0;
    int nt = 0;
    kn_status s = KN_OK;
    for (int64_t k = 0; k <= a->n_tables && s == KN_OK; k++) {
        bool small = k < a->n_tables && a->grads[k].shape[0] <= EMBED_SMALL_ROWS;
        if (small) ks[nt] = k, cols[nt++] = off;
        if (nt == EMBED_CHUNK || (k == a->n_tables && nt)) {
            bool done;
            s = embed_record(d, true, &a->grad, &a->codes, a->grads, ks, cols, nt, &done);
            for (int i = 0; i < nt && s == KN_OK && !done; i++) s = embedding_grad_scatter(d, a, ks[i], cols[i]);
            nt = 0;
        }
        if (k < a->n_tables && !small && s == KN_OK) s = embedding_grad_scatter(d, a, k, off);
        if (k < a->n_tables) off += a->grads[k].shape[1];
    }
    return s;
}

kn_status kvk_embedding_cat_backward(int device, const void *args) {
    KVK_WITH_DEVICE("embedding_cat_backward", embedding_cat_backward(d, args));
}
