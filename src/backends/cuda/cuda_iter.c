/* Host side of strided iteration: the geometry kernels walk, with dims merged
 * where every operand allows, so most tensors become one flat run. */
#include "cuda_internal.h"

#include <string.h>

void kc_iter_init(kc_iter *it, int nops, kn_tensor *const *ops) {
    const kn_tensor *ref = ops[0];
    memset(it, 0, sizeof *it);
    it->nops = nops;
    it->numel = kn__numel_shape(ref->ndim, ref->shape);
    int nd = 0;
    /* Innermost first, so merging looks at the already merged inner dim. */
    long long shape[KN_MAX_DIMS], stride[KC_MAX_OPS][KN_MAX_DIMS];
    for (int d = ref->ndim - 1; d >= 0; d--) {
        if (ref->shape[d] == 1) continue;
        if (nd > 0) {
            bool merge = true;
            for (int k = 0; k < nops; k++)
                if (ops[k]->stride[d] != stride[k][nd - 1] * shape[nd - 1]) merge = false;
            if (merge) {
                shape[nd - 1] *= ref->shape[d];
                continue;
            }
        }
        shape[nd] = ref->shape[d];
        for (int k = 0; k < nops; k++) stride[k][nd] = ops[k]->stride[d];
        nd++;
    }
    if (nd == 0) {
        shape[0] = 1;
        for (int k = 0; k < nops; k++) stride[k][0] = 0;
        nd = 1;
    }
    /* Stored outermost first, as tensors are. */
    it->ndim = nd;
    for (int d = 0; d < nd; d++) {
        it->shape[d] = shape[nd - 1 - d];
        for (int k = 0; k < nops; k++) it->stride[k][d] = stride[k][nd - 1 - d];
    }
}

bool kc_iter_flat(const kc_iter *it) {
    if (it->ndim != 1) return false;
    for (int k = 0; k < it->nops; k++)
        if (it->stride[k][0] != 1 && it->stride[k][0] != 0) return false;
    return true;
}

kn_tensor *kc_contig(kn_tensor *t, kn_dtype dt) {
    if (!t) return NULL;
    if (t->dtype == dt && kn__is_contiguous(t)) return kn_retain(t);
    kn_tensor *o = kc_scratch(t->ndim, t->shape, dt, t->storage->device);
    if (!o) return NULL;
    kn_call c = {.op = KN_OP_COPY, .device = t->storage->device, .in = {t}, .out = {o}};
    if (kn__cuda_copy(&c) != KN_OK) {
        kn_release(o);
        return NULL;
    }
    return o;
}
