/* Fused batch norm, forward and backward, in two dispatches each
 * (shaders/bn_stats.comp: a workgroup per channel reduces it; bn_apply.comp:
 * the elementwise pass with the dropout of y, or back through it and a
 * ReLU) where the composites ran two dozen. The per-channel constants pass
 * between them in a scratch buffer of four `real`s a channel. Parameter
 * block: shaders/bn.glsl. */
#include "vk_ops.h"

#include <math.h>

/* The [C] vectors are contiguous, x [N, C, L] has elements, the dtypes are
 * one float type, and the counts fit the shaders' 32-bit indices. */
static bool vec_ok(const kn_operand *v, int64_t C) {
    return !kn_operand_present(v) || (v->ndim == 1 && v->shape[0] == C && (C == 1 || v->stride[0] == 1));
}

static bool geometry_ok(const kn_operand *x, const kn_operand *grad) {
    if (x->ndim != 3 || !kn_dtype_is_float(x->dtype)) return false;
    int64_t total = x->shape[0] * x->shape[1] * x->shape[2];
    if (total == 0 || total > UINT32_MAX) return false;
    for (int i = 0; i < 3; i++)
        if (!kvk_fits32(x->stride[i]) || (grad && !kvk_fits32(grad->stride[i]))) return false;
    return !grad || grad->dtype == x->dtype;
}

bool kvk_batch_norm_supports(const kn_batch_norm_args *a) {
    int64_t C = a->x.shape[1];
    const kn_operand *v[6] = {&a->mean, &a->invstd, &a->running_mean, &a->running_var, &a->weight, &a->bias};
    for (int k = 0; k < 6; k++)
        if (!vec_ok(v[k], C)) return false;
    /* Eval mode reads the running statistics. */
    if (!a->training && (!kn_operand_present(&a->running_mean) || !kn_operand_present(&a->running_var))) return false;
    return geometry_ok(&a->x, NULL) && a->y.dtype == a->x.dtype && kn_operand_contiguous(&a->y);
}

bool kvk_batch_norm_backward_supports(const kn_batch_norm_backward_args *a) {
    int64_t C = a->x.shape[1];
    const kn_operand *v[6] = {&a->mean, &a->invstd, &a->weight, &a->grad_weight, &a->grad_bias, &a->grad_pre_bias};
    for (int k = 0; k < 6; k++)
        if (!vec_ok(v[k], C)) return false;
    if (!kn_operand_present(&a->mean) || !kn_operand_present(&a->invstd)) return false;
    if (kn_operand_present(&a->grad_x) && (a->grad_x.dtype != a->x.dtype || !kn_operand_contiguous(&a->grad_x)))
        return false;
    return geometry_ok(&a->x, &a->grad);
}

/* The block both passes read; ops[k] is binding k (NULL or absent: none). */
static void bn_params(uint32_t *p, const kn_operand *x, const kn_operand *grad, const kn_operand *const *ops,
                      bool backward, bool training, double p_drop, int64_t seed, int64_t offset) {
    p[0] = backward;
    for (int i = 0; i < 3; i++) {
        p[1 + i] = (uint32_t)x->shape[i];
        p[5 + i] = (uint32_t)(int32_t)x->stride[i];
        if (grad) p[8 + i] = (uint32_t)(int32_t)grad->stride[i];
    }
    p[4] = training;
    for (int k = 0; k < KVK_BINDINGS; k++)
        if (ops[k] && kn_operand_present(ops[k])) {
            p[19 + k] = (uint32_t)ops[k]->dtype;
            p[27] |= 1u << k;
        }
    if (p_drop > 0) {
        /* keep = uniform >= p, i.e. the draw's top 24 bits >= ceil(p 2^24) (as the CPU decides) */
        kvk_put_real(p, 36, 38, 1 - p_drop > 0 ? 1 / (1 - p_drop) : 0);
        double t = ceil(p_drop * 16777216.0);
        p[39] = t > 16777216.0 ? 16777217u : (uint32_t)t; /* p >= 1: nothing kept */
        kvk_put64(p, 40, (uint64_t)seed);
        kvk_put64(p, 42, (uint64_t)offset);
    }
}

static kn_status bn_record(kvk_dev *d, kvk_shader sh, const kn_operand *const *ops, uint32_t *p, uint32_t groups,
                           const char *op) {
    kvk_dispatch w = {.shader = sh, .f64 = d->f64, .params = p, .n_params = KVK_PARAMS};
    for (int k = 0; k < KVK_BINDINGS; k++) {
        p[11 + k] = 0;
        if (ops[k] && kn_operand_present(ops[k])) kvk_bind(&w, k, ops[k], 11 + k);
    }
    w.groups[0] = groups;
    return kvk_record(d, &w, op);
}

/* Four `real`s per channel, in the shaders' real: double where the device has it. */
static kn_operand scratch_view(void *data, bool f64, int64_t C) {
    kn_operand v = {.data = data, .dtype = f64 ? KN_F64 : KN_F32, .ndim = 1, .shape = {4 * C}, .stride = {1}};
    return v;
}

static uint32_t channel_groups(const kvk_dev *d, int64_t C) {
    uint32_t cap = d->props.limits.maxComputeWorkGroupCount[0];
    if (cap > 65535) cap = 65535;
    return C < (int64_t)cap ? (uint32_t)C : cap;
}

/* The scratch both passes share, and the device entered to record them. */
typedef struct {
    kvk_dev *d;
    bool f64;
    void *data;
    size_t bytes;
    kn_operand view;
} bn_scratch;

/* Memory first, then the device entered: the allocator enters the device
 * itself. On an error nothing is held. */
static kn_status bn_begin(int device, int64_t C, bn_scratch *sc) {
    kvk_dev *d = kvk_peek(device, "batch_norm");
    if (!d) return kn_error_code();
    sc->f64 = d->f64;
    kvk_leave(d);
    sc->bytes = (size_t)(4 * C) * (sc->f64 ? 8 : 4);
    sc->data = kvk_alloc(device, sc->bytes);
    if (!sc->data)
        return kn__err(KN_ERR_OOM, "batch_norm: out of memory on vulkan:%d (%zu bytes of scratch)", device, sc->bytes);
    sc->view = scratch_view(sc->data, sc->f64, C);
    sc->d = kvk_enter(device, "batch_norm");
    if (sc->d) return KN_OK;
    kn_status s = kn_error_code(); /* before kvk_free, which may set its own */
    kvk_free(device, sc->data, sc->bytes);
    return s;
}

/* Freed once recorded: the queue runs in order, so whatever reuses the range
 * runs after the passes. */
static void bn_end(int device, bn_scratch *sc) {
    kvk_leave(sc->d);
    kvk_free(device, sc->data, sc->bytes);
}

kn_status kvk_batch_norm(int device, const void *args) {
    const kn_batch_norm_args *a = args;
    int64_t C = a->x.shape[1], total = kn_operand_numel(&a->x);
    bn_scratch sc;
    kn_status s = bn_begin(device, C, &sc);
    if (s != KN_OK) return s;
    kvk_dev *d = sc.d;
    uint32_t p[KVK_PARAMS] = {0};
    const kn_operand *stats[KVK_BINDINGS] = {&a->x, &a->mean, &a->invstd, &a->running_mean, &a->running_var,
                                             &a->weight, &a->bias, &sc.view};
    bn_params(p, &a->x, NULL, stats, false, a->training != 0, a->p, a->seed, a->offset);
    kvk_put_real(p, 30, 32, a->momentum);
    kvk_put_real(p, 33, 35, a->eps);
    p[28] = sc.f64 ? KN_F64 : KN_F32;
    s = bn_record(d, KVK_SH_BN_STATS, stats, p, channel_groups(d, C), "batch_norm");
    const kn_operand *apply[KVK_BINDINGS] = {&a->y, &a->x, &sc.view, &a->count};
    uint32_t q[KVK_PARAMS] = {0};
    bn_params(q, &a->x, NULL, apply, false, a->training != 0, a->p, a->seed, a->offset);
    q[28] = p[28];
    if (s == KN_OK) s = bn_record(d, KVK_SH_BN_APPLY, apply, q, kvk_groups(d, total), "batch_norm");
    bn_end(device, &sc);
    return s;
}

kn_status kvk_batch_norm_backward(int device, const void *args) {
    const kn_batch_norm_backward_args *a = args;
    int64_t C = a->x.shape[1], total = kn_operand_numel(&a->x);
    bn_scratch sc;
    kn_status s = bn_begin(device, C, &sc);
    if (s != KN_OK) return s;
    kvk_dev *d = sc.d;
    uint32_t p[KVK_PARAMS] = {0};
    const kn_operand *stats[KVK_BINDINGS] = {&a->x, &a->mean, &a->invstd, &a->grad, &a->grad_weight,
                                             &a->weight, &a->grad_bias, &sc.view};
    bn_params(p, &a->x, &a->grad, stats, true, a->training != 0, a->p, a->seed, a->offset);
    p[28] = sc.f64 ? KN_F64 : KN_F32;
    s = bn_record(d, KVK_SH_BN_STATS, stats, p, channel_groups(d, C), "batch_norm");
    if (s == KN_OK && kn_operand_present(&a->grad_x)) {
        const kn_operand *apply[KVK_BINDINGS] = {&a->grad_x, &a->x, &sc.view, &a->grad};
        uint32_t q[KVK_PARAMS] = {0};
        bn_params(q, &a->x, &a->grad, apply, true, a->training != 0, a->p, a->seed, a->offset);
        q[28] = p[28];
        q[29] = a->relu != 0;
        s = bn_record(d, KVK_SH_BN_APPLY, apply, q, kvk_groups(d, total), "batch_norm");
        if (s == KN_OK && kn_operand_present(&a->grad_pre_bias)) {
            /* The Linear's bias gradient: grad_x summed over N and L. */
            kn_operand out = a->grad_pre_bias;
            out.ndim = 3;
            out.shape[0] = 1, out.shape[1] = C, out.shape[2] = 1;
            out.stride[0] = out.stride[2] = 0, out.stride[1] = 1;
            kn_reduce_args r = {.out = out, .x = a->grad_x, .fn = KN_REDUCE_SUM, .dims = 5};
            s = kvk_record_reduce(d, &r);
        }
    }
    bn_end(device, &sc);
    return s;
}
