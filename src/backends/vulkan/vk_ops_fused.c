/* Fused index ops: index_select, index_add and the joined embeddings, on
 * the gather and scatter_add shaders. Their value over the composites: one
 * dispatch per table, and an index out of range is reported under the op's
 * own name (the fault is read when the host next waits, after the op has
 * returned, too late for a composite to rename it). */
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

static kn_status embedding_cat(kvk_dev *d, const kn_embedding_cat_args *a) {
    int64_t off = 0;
    kn_status s = KN_OK;
    for (int64_t k = 0; k < a->n_tables && s == KN_OK; k++) {
        int64_t D = a->tables[k].shape[1];
        kn_gather_args g = {.out = kn_view_columns(&a->out, off, D), .x = a->tables[k], .index = kn_view_code_column(&a->codes, k, D),
                            .dim = 0};
        s = kvk_record_gather(d, &g, KVK_FAULT_EMBEDDING_CAT, (uint32_t)k);
        off += D;
    }
    return s;
}

kn_status kvk_embedding_cat(int device, const void *args) {
    KVK_WITH_DEVICE("embedding_cat", embedding_cat(d, args));
}

static kn_status embedding_cat_backward(kvk_dev *d, const kn_embedding_cat_backward_args *a) {
    int64_t off = 0;
    kn_status s = KN_OK;
    for (int64_t k = 0; k < a->n_tables && s == KN_OK; k++) {
        int64_t D = a->grads[k].shape[1];
        kn_fill_args z = {.out = a->grads[k], .value = 0};
        kn_scatter_add_args sa = {.out = a->grads[k], .src = kn_view_columns(&a->grad, off, D),
                                  .index = kn_view_code_column(&a->codes, k, D), .dim = 0};
        s = kvk_record_fill(d, &z);
        if (s == KN_OK) s = kvk_record_scatter_add(d, &sa, KVK_FAULT_EMBEDDING_CAT, (uint32_t)k);
        off += D;
    }
    return s;
}

kn_status kvk_embedding_cat_backward(int device, const void *args) {
    KVK_WITH_DEVICE("embedding_cat_backward", embedding_cat_backward(d, args));
}
