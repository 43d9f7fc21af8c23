/* Fused training ops: Adam / AdamW as one dispatch per parameter
 * (shaders/adam.comp) instead of the composite's twenty-odd elementwise
 * passes, which made the optimizer most of a small model's step, and
 * dropout. */
#include "vk_ops.h"

#include <math.h>

bool kvk_adam_supports(const kn_adam_args *a) {
    /* The op gives contiguous param, m and v; grad is checked too. The bias
     * corrections are computed as -expm1(t log beta): betas in [0, 1]. */
    return kn_operand_contiguous(&a->param) && kn_operand_contiguous(&a->m) && kn_operand_contiguous(&a->v) &&
           kn_operand_contiguous(&a->grad) && kn_operand_numel(&a->step) == 1 && a->beta1 >= 0 && a->beta1 <= 1 &&
           a->beta2 >= 0 && a->beta2 <= 1 && kn_operand_numel(&a->param) <= UINT32_MAX;
}

kn_status kvk_adam(int device, const void *args) {
    const kn_adam_args *a = args;
    int64_t n = kn_operand_numel(&a->param);
    if (n == 0) return KN_OK;
    uint32_t p[KVK_PARAMS] = {0};
    p[0] = (uint32_t)n;
    kvk_dispatch w = {.shader = KVK_SH_ADAM, .params = p, .n_params = KVK_PARAMS};
    const kn_operand *ops[5] = {&a->param, &a->m, &a->v, &a->grad, &a->step};
    for (int k = 0; k < 5; k++) {
        kvk_bind(&w, k, ops[k], 1 + k);
        p[6 + k] = (uint32_t)ops[k]->dtype;
    }
    p[11] = a->decoupled != 0;
    const double reals[7] = {a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, log(a->beta1), log(a->beta2)};
    for (int k = 0; k < 7; k++) kvk_put_real(p, 12 + 3 * k, 14 + 3 * k, reals[k]);
    kvk_dev *d = kvk_enter(device, "adam");
    if (!d) return kn_error_code();
    /* Doubles where the device has them: the CPU's constants. */
    w.f64 = d->f64;
    w.groups[0] = kvk_groups(d, n);
    kn_status s = kvk_record(d, &w, "adam");
    kvk_leave(d);
    return s;
}

/* Dropout as one dispatch (shaders/dropout.comp) instead of the composite's
 * draw, compare, select and multiply. */
bool kvk_dropout_supports(const kn_dropout_args *a) {
    return kn_operand_contiguous(&a->x) && kn_operand_contiguous(&a->out) &&
           (!kn_operand_present(&a->mask) || (kn_operand_contiguous(&a->mask) && a->mask.dtype == KN_U8)) &&
           kn_operand_numel(&a->x) <= UINT32_MAX && a->p >= 0 && a->p <= 1;
}

kn_status kvk_dropout(int device, const void *args) {
    const kn_dropout_args *a = args;
    int64_t n = kn_operand_numel(&a->x);
    if (n == 0) return KN_OK;
    uint32_t p[KVK_PARAMS] = {0};
    p[0] = (uint32_t)n;
    kvk_dispatch w = {.shader = KVK_SH_DROPOUT, .params = p, .n_params = KVK_PARAMS};
    kvk_bind(&w, 0, &a->out, 1);
    if (kn_operand_present(&a->mask)) kvk_bind(&w, 1, &a->mask, 2);
    kvk_bind(&w, 2, &a->x, 3);
    p[4] = (uint32_t)a->out.dtype;
    p[5] = kn_operand_present(&a->mask);
    p[6] = (uint32_t)a->x.dtype;
    kvk_put_real(p, 7, 9, 1 - a->p > 0 ? 1 / (1 - a->p) : 0);
    /* keep = uniform >= p, i.e. the draw's top 24 bits >= ceil(p 2^24), as the CPU decides */
    p[10] = (uint32_t)ceil(a->p * 16777216.0);
    kvk_put64(p, 11, (uint64_t)a->seed);
    kvk_put64(p, 13, (uint64_t)a->offset);
    kvk_dev *d = kvk_enter(device, "dropout");
    if (!d) return kn_error_code();
    w.f64 = d->f64;
    w.groups[0] = kvk_groups(d, n);
    kn_status s = kvk_record(d, &w, "dropout");
    kvk_leave(d);
    return s;
}
