/* Host side of reduce and matmul: their own parameter blocks (layouts at
 * the top of shaders/reduce.comp and shaders/matmul.comp). */
#include "vk_ops.h"

#include <stdlib.h>
#include <string.h>

static kn_status too_large(const char *op) {
    return kn__err(KN_ERR_UNSUPPORTED, "%s: the tensor is too large for one Vulkan dispatch (2^32 elements or "
                                       "strides beyond 2^31)", op);
}

kn_status kvk_record_reduce(kvk_dev *d, const kn_reduce_args *a) {
    const kn_operand *x = &a->x, *out = &a->out;
    const char *name = kn__reduce_name((kn_reduce_fn)a->fn);
    int64_t n_out = kn_operand_numel(out), R = 1;
    if (n_out == 0) return KN_OK;
    uint32_t p[KVK_PARAMS] = {0};
    int nk = 0, nr = 0;
    uint64_t mask = (uint64_t)a->dims;
    /* Kept dims (out's row-major order) and reduced dims, each with x's strides. */
    for (int dd = 0; dd < x->ndim; dd++) {
        if (!kvk_fits32(x->stride[dd])) return too_large(name);
        if (mask >> dd & 1) {
            R *= x->shape[dd];
            p[20 + nr] = (uint32_t)x->shape[dd];
            p[28 + nr++] = (uint32_t)(int32_t)x->stride[dd];
        } else {
            p[3 + nk] = (uint32_t)x->shape[dd];
            p[11 + nk++] = (uint32_t)(int32_t)x->stride[dd];
        }
    }
    if (n_out > UINT32_MAX || R > UINT32_MAX || !kvk_fits32(a->correction)) return too_large(name);
    p[0] = (uint32_t)n_out;
    p[1] = (uint32_t)R;
    p[2] = (uint32_t)nk;
    p[19] = (uint32_t)nr;
    p[37] = (uint32_t)x->dtype;
    p[39] = (uint32_t)out->dtype;
    p[40] = (uint32_t)a->fn;
    p[41] = (uint32_t)(int32_t)a->correction;
    kvk_dispatch w = {.shader = KVK_SH_REDUCE, .params = p, .n_params = KVK_PARAMS};
    const kn_operand *ops[2] = {out, x};
    w.f64 = kvk_any_f64(2, ops);
    kvk_bind(&w, 0, out, 38);
    kvk_bind(&w, 1, x, 36);
    /* Few elements per output, or enough outputs to fill the device: one
     * invocation per output; else a workgroup per output. */
    bool serial = R <= 64 || n_out >= 4096;
    p[42] = serial;
    uint32_t cap = d->props.limits.maxComputeWorkGroupCount[0];
    if (cap > 65535) cap = 65535;
    w.groups[0] = serial ? kvk_groups(d, n_out) : (uint32_t)(n_out < (int64_t)cap ? n_out : cap);
    return kvk_record(d, &w, name);
}

kn_status kvk_reduce(int device, const void *args) {
    const kn_reduce_args *a = args;
    KVK_WITH_DEVICE(kn__reduce_name((kn_reduce_fn)a->fn), kvk_record_reduce(d, a));
}

kn_status kvk_matmul(int device, const void *args) {
    const kn_matmul_args *mm = args;
    const kn_operand *a = &mm->a, *b = &mm->b, *out = &mm->out, *bias = &mm->bias;
    int64_t B = out->shape[0], M = out->shape[1], N = out->shape[2], K = a->shape[2];
    if (B * M * N == 0) return KN_OK;
    if (B * M * N > UINT32_MAX || K > UINT32_MAX) return too_large("matmul");
    const kn_operand *st[3] = {a, b, out};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 3; i++)
            if (!kvk_fits32(st[k]->stride[i])) return too_large("matmul");
    uint32_t p[KVK_PARAMS] = {0};
    p[0] = (uint32_t)B;
    p[1] = (uint32_t)M;
    p[2] = (uint32_t)N;
    p[3] = (uint32_t)K;
    for (int k = 0; k < 3; k++) {
        p[5 + 5 * k] = (uint32_t)st[k]->dtype;
        for (int i = 0; i < 3; i++) p[6 + 5 * k + i] = (uint32_t)(int32_t)st[k]->stride[i];
    }
    kvk_dispatch w = {.shader = KVK_SH_MATMUL, .params = p, .n_params = KVK_PARAMS};
    kvk_bind(&w, 0, out, 14);
    kvk_bind(&w, 1, a, 4);
    kvk_bind(&w, 2, b, 9);
    bool has_bias = kn_operand_present(bias);
    if (has_bias) {
        if (!kvk_fits32(bias->stride[0])) return too_large("matmul");
        p[19] = 1;
        p[21] = (uint32_t)bias->dtype;
        p[22] = (uint32_t)(int32_t)(bias->ndim ? bias->stride[0] : 0);
        kvk_bind(&w, 3, bias, 20);
    }
    p[23] = (uint32_t)mm->act;
    const kn_operand *ops[4] = {out, a, b, has_bias ? bias : NULL};
    w.f64 = kvk_any_f64(4, ops);
    kvk_dev *d = kvk_enter(device, "matmul");
    if (!d) return kn_error_code();
    /* float32 throughout: the register-tiled shader (128 x 128 tiles of 256
     * invocations, shaders/gemm.comp); other dtypes, or a device that cannot
     * run 256 invocations, the general one. KILN_VULKAN_GEMM=general forces
     * the general one (to compare them). */
    const char *force = getenv("KILN_VULKAN_GEMM");
    bool fast = !(force && !strcmp(force, "general")) && d->props.limits.maxComputeWorkGroupInvocations >= 256 && a->dtype == KN_F32 &&
                b->dtype == KN_F32 && out->dtype == KN_F32 && (!has_bias || bias->dtype == KN_F32);
    if (fast) w.shader = KVK_SH_GEMM;
    uint32_t tile = fast ? 128 : kvk_wg(d) == 256 ? 16 : 8;
    const uint32_t *cap = d->props.limits.maxComputeWorkGroupCount;
    int64_t gx = (N + tile - 1) / tile, gy = (M + tile - 1) / tile;
    kn_status s;
    if (gx > cap[0] || gy > cap[1]) s = too_large("matmul");
    else {
        w.groups[0] = (uint32_t)gx;
        w.groups[1] = (uint32_t)gy;
        w.groups[2] = (uint32_t)(B < (int64_t)cap[2] ? B : cap[2]);
        s = kvk_record(d, &w, "matmul");
    }
    kvk_leave(d);
    return s;
}
