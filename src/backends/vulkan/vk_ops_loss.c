/* Fused cross-entropy on logits, forward and backward: one dispatch each
 * (shaders/cross_entropy.comp) where the composites ran about twenty. The
 * forward runs in one workgroup (it ends in sums over the rows), so logits
 * of more than CE_MAX_ELEMENTS go to the composite, whose ops spread over
 * the whole device. A bad target is a shader fault, named as the CPU names it. */
#include "vk_ops.h"

/* 2,048 logits for each of a workgroup's 256 invocations, at most. */
enum { CE_MAX_ELEMENTS = 1 << 19, CE_MAX_SMOOTH_CLASSES = 1024 };

static bool vec_ok(const kn_operand *v, int64_t n) {
    return !kn_operand_present(v) || v->ndim == 0 || (v->ndim == 1 && v->shape[0] == n && kvk_fits32(v->stride[0]));
}

static bool ce_common(const kn_operand *logits, const kn_operand *target, const kn_operand *weight, double smoothing) {
    if (logits->ndim != 2 || !kn_operand_contiguous(logits)) return false;
    int64_t N = logits->shape[0], C = logits->shape[1];
    /* Smoothing with class weights: every element sums the weights (O(C) each). */
    if (smoothing != 0 && kn_operand_present(weight) && C > CE_MAX_SMOOTH_CLASSES) return false;
    return N > 0 && C > 0 && N * C <= UINT32_MAX && target->ndim == 1 && vec_ok(target, N) && vec_ok(weight, C);
}

bool kvk_cross_entropy_supports(const kn_cross_entropy_args *a) {
    int64_t N = a->logits.shape[0];
    return ce_common(&a->logits, &a->target, &a->weight, a->smoothing) && N * a->logits.shape[1] <= CE_MAX_ELEMENTS &&
           vec_ok(&a->lse, N) && (a->reduction != KN_REDUCTION_NONE || vec_ok(&a->loss, N));
}

bool kvk_cross_entropy_backward_supports(const kn_cross_entropy_backward_args *a) {
    int64_t N = a->logits.shape[0];
    return ce_common(&a->logits, &a->target, &a->weight, a->smoothing) && vec_ok(&a->lse, N) &&
           vec_ok(&a->grad, N) && kn_operand_contiguous(&a->out);
}

static int64_t stride0(const kn_operand *v) { return kn_operand_present(v) && v->ndim == 1 ? v->stride[0] : 0; }

static kn_status ce_record(kvk_dev *d, const kn_operand *const *ops, int n_ops, uint32_t *p, uint32_t groups) {
    kvk_dispatch w = {.shader = KVK_SH_CROSS_ENTROPY, .f64 = d->f64, .params = p, .n_params = KVK_PARAMS};
    for (int k = 0; k < n_ops; k++)
        if (kn_operand_present(ops[k])) {
            kvk_bind(&w, k, ops[k], 10 + k);
            p[17 + k] = (uint32_t)ops[k]->dtype;
            p[24] |= 1u << k;
        }
    p[28] = kvk_fault_code(d, KVK_FAULT_CROSS_ENTROPY);
    w.groups[0] = groups;
    return kvk_record(d, &w, "cross_entropy");
}

static void ce_params(uint32_t *p, const kn_operand *logits, int64_t ignore, int64_t reduction, double smoothing) {
    p[0] = (uint32_t)logits->shape[0];
    p[1] = (uint32_t)logits->shape[1];
    kvk_put64(p, 2, (uint64_t)ignore);
    p[4] = reduction == KN_REDUCTION_NONE ? 0 : reduction == KN_REDUCTION_MEAN ? 1 : 2;
    kvk_put_real(p, 25, 27, smoothing);
}

kn_status kvk_cross_entropy(int device, const void *args) {
    const kn_cross_entropy_args *a = args;
    uint32_t p[KVK_PARAMS] = {0};
    ce_params(p, &a->logits, a->ignore_index, a->reduction, a->smoothing);
    p[5] = (uint32_t)(int32_t)stride0(&a->target);
    p[6] = (uint32_t)(int32_t)stride0(&a->weight);
    p[7] = (uint32_t)(int32_t)stride0(&a->loss);
    p[8] = (uint32_t)(int32_t)stride0(&a->lse);
    const kn_operand *ops[6] = {&a->logits, &a->target, &a->weight, &a->loss, &a->lse, &a->weight_sum};
    KVK_WITH_DEVICE("cross_entropy", ce_record(d, ops, 6, p, 1));
}

kn_status kvk_cross_entropy_backward(int device, const void *args) {
    const kn_cross_entropy_backward_args *a = args;
    uint32_t p[KVK_PARAMS] = {0};
    ce_params(p, &a->logits, a->ignore_index, a->reduction, a->smoothing);
    p[5] = (uint32_t)(int32_t)stride0(&a->target);
    p[6] = (uint32_t)(int32_t)stride0(&a->weight);
    p[8] = (uint32_t)(int32_t)stride0(&a->lse);
    p[9] = (uint32_t)(int32_t)stride0(&a->grad);
    p[29] = 1;
    const kn_operand *ops[7] = {&a->out, &a->logits, &a->target, &a->weight, &a->lse, &a->weight_sum, &a->grad};
    KVK_WITH_DEVICE("cross_entropy", ce_record(d, ops, 7, p, kvk_groups(d, kn_operand_numel(&a->out))));
}
