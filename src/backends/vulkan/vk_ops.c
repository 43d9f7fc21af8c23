/* Host side of the elementwise, indexing and random kernels: each fills a
 * parameter block (shaders/common.glsl) and records one dispatch. The
 * batch runs when the host next waits. */
#include "vk_ops.h"

#include "backends/common/dtype.h"

#include <math.h>

bool kvk_any_f64(int n, const kn_operand *const *ops) {
    for (int k = 0; k < n; k++)
        if (ops[k] && kn_operand_present(ops[k]) && ops[k]->dtype == KN_F64) return true;
    return false;
}

static kn_status geometry_error(const char *op) {
    return kn__err(KN_ERR_UNSUPPORTED, "%s: the tensor is too large for one Vulkan dispatch (2^32 elements or "
                                       "strides beyond 2^31)", op);
}

kn_status kvk_elementwise(kvk_dev *d, kvk_shader sh, bool f64, int nops, const kn_operand *const *ops, uint32_t *p,
                          const char *op) {
    kn_geom g;
    kn_geom_init(&g, nops, ops);
    if (g.numel == 0) return KN_OK;
    if (g.numel > UINT32_MAX) return geometry_error(op);
    p[0] = (uint32_t)g.numel;
    p[1] = (uint32_t)g.ndim;
    for (int i = 0; i < g.ndim; i++) p[2 + i] = (uint32_t)g.shape[i];
    kvk_dispatch w = {.shader = sh, .f64 = f64, .params = p, .n_params = KVK_PARAMS};
    for (int k = 0; k < nops; k++) {
        p[KVK_OPB(k) + 1] = (uint32_t)ops[k]->dtype;
        for (int i = 0; i < g.ndim; i++) {
            if (!kvk_fits32(g.stride[k][i])) return geometry_error(op);
            p[KVK_OPB(k) + 2 + i] = (uint32_t)(int32_t)g.stride[k][i];
        }
        kvk_bind(&w, k, ops[k], KVK_OPB(k));
    }
    w.groups[0] = kvk_groups(d, g.numel);
    return kvk_record(d, &w, op);
}


kn_status kvk_copy(int device, const void *args) {
    const kn_copy_args *a = args;
    kn_operand x = kn_view_expand(&a->x, &a->out);
    const kn_operand *ops[2] = {&a->out, &x};
    uint32_t p[KVK_PARAMS] = {0};
    KVK_WITH_DEVICE("copy", kvk_elementwise(d, KVK_SH_COPY, kvk_any_f64(2, ops), 2, ops, p, "copy"));
}

static bool integral(double v) { return v == floor(v) && fabs(v) < 9007199254740992.0; }

kn_status kvk_record_fill(kvk_dev *d, const kn_fill_args *a) {
    const kn_operand *ops[1] = {&a->out};
    uint32_t p[KVK_PARAMS] = {0};
    bool f64 = a->out.dtype == KN_F64;
    if (a->step == 0) {
        /* The value converted once, on the host, as the CPU converts it. */
        uint64_t bits = 0;
        kn__store(&bits, a->out.dtype, a->value);
        p[KVK_EXT] = 0;
        kvk_put64(p, KVK_EXT + 1, bits);
    } else if (!kn_dtype_is_float(a->out.dtype) && integral(a->value) && integral(a->step)) {
        p[KVK_EXT] = 2;
        kvk_put64(p, KVK_EXT + 3, (uint64_t)(int64_t)a->value);
        kvk_put64(p, KVK_EXT + 5, (uint64_t)(int64_t)a->step);
    } else {
        /* value + k * step in double where the device has it, as the CPU does. */
        p[KVK_EXT] = 1;
        kvk_put_real(p, KVK_EXT + 3, KVK_EXT + 7, a->value);
        kvk_put_real(p, KVK_EXT + 5, KVK_EXT + 8, a->step);
        f64 = d->f64;
    }
    return kvk_elementwise(d, KVK_SH_FILL, f64, 1, ops, p, "fill");
}

kn_status kvk_fill(int device, const void *args) { KVK_WITH_DEVICE("fill", kvk_record_fill(d, args)); }

static void unary_params(uint32_t *p, int64_t fn, double p0, double p1, bool backward) {
    p[KVK_EXT] = (uint32_t)fn;
    kvk_put_real(p, KVK_EXT + 1, KVK_EXT + 3, p0);
    kvk_put_real(p, KVK_EXT + 4, KVK_EXT + 6, p1);
    p[KVK_EXT + 7] = backward;
    /* the integer path's scalar, as the CPU casts it */
    kvk_put64(p, KVK_EXT + 8, (uint64_t)(int64_t)(isfinite(p0) && fabs(p0) < 9.2e18 ? p0 : 0));
}

kn_status kvk_unary(int device, const void *args) {
    const kn_unary_args *a = args;
    kn_operand x = kn_view_expand(&a->x, &a->out);
    const kn_operand *ops[2] = {&a->out, &x};
    uint32_t p[KVK_PARAMS] = {0};
    unary_params(p, a->fn, a->p0, a->p1, false);
    KVK_WITH_DEVICE(kn__unary_name((kn_unary_fn)a->fn),
                kvk_elementwise(d, KVK_SH_UNARY, kvk_any_f64(2, ops), 2, ops, p, kn__unary_name((kn_unary_fn)a->fn)));
}

kn_status kvk_unary_backward(int device, const void *args) {
    const kn_unary_backward_args *a = args;
    kn_operand g = kn_view_expand(&a->grad, &a->out), x = kn_view_expand(&a->x, &a->out);
    const kn_operand *ops[3] = {&a->out, &g, &x};
    uint32_t p[KVK_PARAMS] = {0};
    unary_params(p, a->fn, a->p0, a->p1, true);
    KVK_WITH_DEVICE("unary_backward", kvk_elementwise(d, KVK_SH_UNARY, kvk_any_f64(3, ops), 3, ops, p, "unary_backward"));
}

kn_status kvk_binary(int device, const void *args) {
    const kn_binary_args *a = args;
    kn_operand x = kn_view_expand(&a->a, &a->out), y = kn_view_expand(&a->b, &a->out);
    const kn_operand *ops[3] = {&a->out, &x, &y};
    uint32_t p[KVK_PARAMS] = {0};
    p[KVK_EXT] = (uint32_t)a->fn;
    const char *name = kn__binary_name((kn_binary_fn)a->fn);
    KVK_WITH_DEVICE(name, kvk_elementwise(d, KVK_SH_BINARY, kvk_any_f64(3, ops), 3, ops, p, name));
}

kn_status kvk_where(int device, const void *args) {
    const kn_where_args *a = args;
    kn_operand c = kn_view_expand(&a->cond, &a->out), x = kn_view_expand(&a->a, &a->out), y = kn_view_expand(&a->b, &a->out);
    const kn_operand *ops[4] = {&a->out, &c, &x, &y};
    uint32_t p[KVK_PARAMS] = {0};
    /* Bits are moved, not values: no float64 arithmetic is needed. */
    KVK_WITH_DEVICE("where", kvk_elementwise(d, KVK_SH_WHERE, false, 4, ops, p, "where"));
}

kn_status kvk_random(int device, const void *args) {
    const kn_random_args *a = args;
    const kn_operand *ops[1] = {&a->out};
    uint32_t p[KVK_PARAMS] = {0};
    p[KVK_EXT] = (uint32_t)a->kind;
    kvk_put64(p, KVK_EXT + 1, (uint64_t)a->seed);
    kvk_put64(p, KVK_EXT + 3, (uint64_t)a->offset);
    kvk_put_real(p, KVK_EXT + 5, KVK_EXT + 7, a->a);
    kvk_put_real(p, KVK_EXT + 8, KVK_EXT + 10, a->b);
    double span = a->b - a->a;
    if (a->kind == KN_RANDOM_INT && integral(a->a) && integral(span) && span >= 0 && span < 2097152.0) {
        p[KVK_EXT + 11] = 1;
        kvk_put64(p, KVK_EXT + 12, (uint64_t)(int64_t)a->a);
        kvk_put64(p, KVK_EXT + 14, (uint64_t)(int64_t)span);
    }
    kvk_dev *d = kvk_enter(device, "random");
    if (!d) return kn_error_code();
    /* Doubles where the device has them: the CPU's numbers, bit for bit. */
    kn_status s = kvk_elementwise(d, KVK_SH_RANDOM, d->f64, 1, ops, p, "random");
    kvk_leave(d);
    return s;
}

/* ---- indexing --------------------------------------------------------------------- */
/* The three operands walked over `shape` (no merging: dim is special). */
static kn_status kvk_index_dispatch(kvk_dev *d, kvk_shader sh, int nd, const int64_t *shape, const kn_operand *const *v,
                                const int64_t *const *strides, int64_t n, uint32_t *p, const char *op) {
    if (n > UINT32_MAX) return geometry_error(op);
    p[0] = (uint32_t)n;
    p[1] = (uint32_t)nd;
    for (int i = 0; i < nd; i++) p[2 + i] = (uint32_t)shape[i];
    kvk_dispatch w = {.shader = sh, .f64 = kvk_any_f64(3, v), .params = p, .n_params = KVK_PARAMS};
    for (int k = 0; k < 3; k++) {
        p[KVK_OPB(k) + 1] = (uint32_t)v[k]->dtype;
        for (int i = 0; i < nd; i++) {
            if (!kvk_fits32(strides[k][i])) return geometry_error(op);
            p[KVK_OPB(k) + 2 + i] = (uint32_t)(int32_t)strides[k][i];
        }
        kvk_bind(&w, k, v[k], KVK_OPB(k));
    }
    w.groups[0] = kvk_groups(d, n);
    return kvk_record(d, &w, op);
}

kn_status kvk_record_gather(kvk_dev *d, const kn_gather_args *a, uint32_t fault, uint32_t fault_dim) {
    int64_t n = kn_operand_numel(&a->out);
    if (n == 0) return KN_OK;
    int dim = a->out.ndim ? (int)a->dim : 0, nd = a->out.ndim ? a->out.ndim : 1;
    int64_t one = 1, zero = 0;
    const int64_t *shape = a->out.ndim ? a->out.shape : &one;
    int64_t xs[KN_MAX_DIMS] = {0};
    for (int i = 0; i < a->x.ndim && a->out.ndim; i++) xs[i] = i == dim ? 0 : a->x.stride[i];
    const int64_t *st[3] = {a->out.ndim ? a->out.stride : &zero, xs, a->index.ndim ? a->index.stride : &zero};
    const kn_operand *v[3] = {&a->out, &a->x, &a->index};
    int64_t limit = a->x.ndim ? a->x.shape[dim] : 1, xsd = a->x.ndim ? a->x.stride[dim] : 0;
    if (!kvk_fits32(xsd) || limit > UINT32_MAX) return geometry_error("gather");
    uint32_t p[KVK_PARAMS] = {0};
    p[KVK_EXT] = (uint32_t)dim;
    p[KVK_EXT + 1] = (uint32_t)limit;
    p[KVK_EXT + 2] = (uint32_t)(int32_t)xsd;
    p[KVK_EXT + 3] = kvk_fault_code(d, fault);
    p[KVK_EXT + 4] = fault == KVK_FAULT_EMBEDDING_CAT ? fault_dim : (uint32_t)dim;
    return kvk_index_dispatch(d, KVK_SH_GATHER, nd, shape, v, st, n, p, "gather");
}

kn_status kvk_gather(int device, const void *args) {
    KVK_WITH_DEVICE("gather", kvk_record_gather(d, args, KVK_FAULT_GATHER, 0));
}

kn_status kvk_record_scatter_add(kvk_dev *d, const kn_scatter_add_args *a, uint32_t fault, uint32_t fault_dim) {
    int64_t total = kn_operand_numel(&a->index);
    if (total == 0) return KN_OK;
    bool scalar = a->index.ndim == 0;
    int dim = scalar ? 0 : (int)a->dim, nd = scalar ? 1 : a->index.ndim;
    int64_t shape[KN_MAX_DIMS] = {1}, zero[KN_MAX_DIMS] = {0};
    for (int i = 0; i < nd && !scalar; i++) shape[i] = a->index.shape[i];
    int64_t n = shape[dim];
    shape[dim] = 1; /* the items: every position but along dim */
    const int64_t *st[3] = {scalar ? zero : a->out.stride, scalar ? zero : a->src.stride,
                            scalar ? zero : a->index.stride};
    const kn_operand *v[3] = {&a->out, &a->src, &a->index};
    int64_t ssd = scalar ? 0 : a->src.stride[dim], isd = scalar ? 0 : a->index.stride[dim],
            osd = scalar ? 0 : a->out.stride[dim], limit = a->out.ndim ? a->out.shape[dim] : 1;
    if (!kvk_fits32(ssd) || !kvk_fits32(isd) || !kvk_fits32(osd) || limit > UINT32_MAX || n > UINT32_MAX)
        return geometry_error("scatter_add");
    uint32_t p[KVK_PARAMS] = {0};
    p[KVK_EXT] = (uint32_t)n;
    p[KVK_EXT + 1] = (uint32_t)(int32_t)ssd;
    p[KVK_EXT + 2] = (uint32_t)(int32_t)isd;
    p[KVK_EXT + 3] = (uint32_t)(int32_t)osd;
    p[KVK_EXT + 4] = (uint32_t)limit;
    p[KVK_EXT + 5] = fault == KVK_FAULT_EMBEDDING_CAT ? fault_dim : (uint32_t)dim;
    p[KVK_EXT + 6] = kvk_fault_code(d, fault);
    return kvk_index_dispatch(d, KVK_SH_SCATTER_ADD, nd, shape, v, st, total / n, p, "scatter_add");
}

kn_status kvk_scatter_add(int device, const void *args) {
    KVK_WITH_DEVICE("scatter_add", kvk_record_scatter_add(d, args, KVK_FAULT_SCATTER_ADD, 0));
}
