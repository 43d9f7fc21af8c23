/* Helpers of the kernels' host side: operand views and the parameter
 * blocks the shaders read (layouts in shaders/common.glsl). */
#ifndef KILN_VK_OPS_H
#define KILN_VK_OPS_H

#include "vk_internal.h"
#include "backends/common/geometry.h"
#include "backends/common/views.h"

#include <string.h>

#define KVK_PARAMS 80 /* words of a parameter block */
#define KVK_OPB(k) (10 + 10 * (k))
#define KVK_EXT 50

/* Invocations per workgroup: the value given to specialization constant 0. */
static inline uint32_t kvk_wg(const kvk_dev *d) {
    return d->props.limits.maxComputeWorkGroupInvocations >= 256 ? 256u : 128u;
}

/* Workgroups for n invocations of a grid-stride loop. */
static inline uint32_t kvk_groups(const kvk_dev *d, int64_t n) {
    int64_t g = (n + kvk_wg(d) - 1) / kvk_wg(d);
    uint32_t cap = d->props.limits.maxComputeWorkGroupCount[0];
    if (cap > 65535) cap = 65535;
    return g < 1 ? 1 : g > cap ? cap : (uint32_t)g;
}

/* [lo, hi): the bytes v touches, relative to v->data. */
static inline void kvk_span(const kn_operand *v, int64_t *lo, int64_t *hi) {
    int64_t a = 0, b = 0, es = (int64_t)kn_dtype_size(v->dtype);
    for (int d = 0; d < v->ndim; d++) {
        if (v->shape[d] == 0) {
            *lo = *hi = 0;
            return;
        }
        int64_t e = (v->shape[d] - 1) * v->stride[d];
        if (e < 0) a += e;
        else b += e;
    }
    *lo = a * es;
    *hi = (b + 1) * es;
}

static inline void kvk_put64(uint32_t *p, int at, uint64_t v) {
    p[at] = (uint32_t)v;
    p[at + 1] = (uint32_t)(v >> 32);
}
static inline void kvk_put_real(uint32_t *p, int at_d, int at_f, double v) {
    uint64_t b;
    memcpy(&b, &v, 8);
    kvk_put64(p, at_d, b);
    float f = (float)v;
    memcpy(&p[at_f], &f, 4);
}

/* The body of a kernel entry point: enter the device, run body, leave. */
#define KVK_WITH_DEVICE(op, body)                                                                                    \
    kvk_dev *d = kvk_enter(device, op);                                                                          \
    if (!d) return kn_error_code();                                                                              \
    kn_status s_ = (body);                                                                                       \
    kvk_leave(d);                                                                                                \
    return s_

/* Binds operand v to slot k of w (its span, and the word its offset goes to). */
static inline void kvk_bind(kvk_dispatch *w, int k, const kn_operand *v, int slot) {
    w->ptr[k] = v->data;
    kvk_span(v, &w->lo[k], &w->hi[k]);
    w->base_slot[k] = slot;
}

static inline bool kvk_fits32(int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; }

/* Records an elementwise dispatch over nops operands of one shape (the first
 * is the output): merged geometry, strides and dtypes into p (which holds
 * the op's EXT words already). */
kn_status kvk_elementwise(kvk_dev *d, kvk_shader sh, bool f64, int nops, const kn_operand *const *ops, uint32_t *p,
                          const char *op);
/* gather and scatter_add recorded on an entered device; fault names the op
 * an index error is reported under (KVK_FAULT_*), fault_dim the table of an
 * embedding_cat. */
kn_status kvk_record_gather(kvk_dev *d, const kn_gather_args *a, uint32_t fault, uint32_t fault_dim);
kn_status kvk_record_scatter_add(kvk_dev *d, const kn_scatter_add_args *a, uint32_t fault, uint32_t fault_dim);
kn_status kvk_record_fill(kvk_dev *d, const kn_fill_args *a);
kn_status kvk_record_reduce(kvk_dev *d, const kn_reduce_args *a);
/* Whether the op needs the float64 variant (an operand of that dtype). */
bool kvk_any_f64(int n, const kn_operand *const *ops);

#endif
