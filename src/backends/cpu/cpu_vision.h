/* Shared pieces of the CPU convolution and pooling kernels (cpu_conv.c,
 * cpu_pool.c): the window geometry of an op's arguments, and outputs of any
 * float dtype computed in a work type (float32, or float64 for float64). */
#ifndef KILN_CPU_VISION_H
#define KILN_CPU_VISION_H

#include "cpu_internal.h"

/* The type-generic kernel files (cpu_conv_impl.h, cpu_pool_impl.h) name their
 * functions F(name) = name_SFX, once per element type. */
#define KN_CPU_CAT_(a, b) a##_##b
#define KN_CPU_CAT(a, b) KN_CPU_CAT_(a, b)

/* One NCHW window op: input [N, C, H, W], output [N, K, OH, OW] (pools: K =
 * C), kernel kh x kw, strides, padding before, dilations, groups. */
typedef struct {
    int64_t N, C, H, W, K, OH, OW;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw, G;
} kn_win;

/* [lo, hi): the outputs o in [0, n_out) whose tap o*s - p + off lies in [0, size). */
static inline void kn__win_range(int64_t n_out, int64_t s, int64_t p, int64_t off, int64_t size, int64_t *lo,
                                 int64_t *hi) {
    int64_t base = off - p; /* tap = o*s + base */
    int64_t l = base >= 0 ? 0 : (-base + s - 1) / s;
    int64_t h = size - base <= 0 ? 0 : (size - base + s - 1) / s;
    if (l > n_out) l = n_out;
    if (h > n_out) h = n_out;
    if (h < l) h = l;
    *lo = l, *hi = h;
}

/* Work dtype of a kernel whose results are of dtype dt. */
static inline kn_dtype kn__win_work(kn_dtype dt) { return dt == KN_F64 ? KN_F64 : KN_F32; }

/* An output view as contiguous work-type memory: the view's own when it
 * already is, else scratch that kn__win_out_end converts into it. */
typedef struct {
    const kn_operand *v;
    void *p;
    void *owned;
    size_t nbytes;
} kn_win_out;

static inline kn_status kn__win_out_begin(const char *op, kn_win_out *o, const kn_operand *v, kn_dtype wt) {
    o->v = v;
    o->owned = NULL;
    o->nbytes = 0;
    o->p = NULL;
    if (!kn_operand_present(v)) return KN_OK;
    if (v->dtype == wt && kn_operand_contiguous(v)) {
        o->p = v->data;
        return KN_OK;
    }
    o->nbytes = (size_t)kn_operand_numel(v) * kn_dtype_size(wt);
    if (!(o->owned = o->p = kn__cpu_scratch(o->nbytes))) return kn__err(KN_ERR_OOM, "%s: out of memory", op);
    return KN_OK;
}

/* Converts the scratch into the view (when there is one) and frees it; ok:
 * the kernel succeeded (else the scratch is only freed). */
static inline kn_status kn__win_out_end(kn_win_out *o, kn_dtype wt, bool ok) {
    kn_status s = KN_OK;
    if (o->owned && ok) {
        kn_copy_args c = {.out = *o->v, .x = kn__cpu_dense_view(o->v, wt, o->owned)};
        s = kn__cpu_copy(0, &c);
    }
    kn__cpu_scratch_free(o->owned, o->nbytes);
    o->owned = NULL;
    return s;
}

#endif
