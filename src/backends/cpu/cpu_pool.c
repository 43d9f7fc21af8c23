/* CPU max and average pooling, direct loops over each output plane
 * (cpu_pool_impl.h), in float32 (float64 for float64). */
#include "cpu_vision.h"

#include <string.h>

#define T float
#define SFX f32
#include "cpu_pool_impl.h"
#undef T
#undef SFX
#define T double
#define SFX f64
#include "cpu_pool_impl.h"
#undef T
#undef SFX

static kn_win pool_geom(const kn_operand *x, const kn_operand *y, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
    return (kn_win){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .K = x->shape[1],
                    .OH = y->shape[2], .OW = y->shape[3], .kh = kh, .kw = kw, .sh = sh, .sw = sw, .ph = ph, .pw = pw,
                    .dh = dh, .dw = dw, .G = 1};
}

static int64_t plane_grain(const kn_win *g, int64_t per_out) {
    int64_t per = g->OH * g->OW * per_out + g->H * g->W;
    return per >= 16384 ? 1 : 16384 / (per ? per : 1);
}

kn_status kn__cpu_max_pool2d(int device, const void *args) {
    (void)device;
    const kn_max_pool2d_args *a = args;
    kn_dtype wt = kn__win_work(a->out.dtype);
    kn_win g = pool_geom(&a->x, &a->out, a->kernel_h, a->kernel_w, a->stride_h, a->stride_w, a->pad_h, a->pad_w,
                         a->dilation_h, a->dilation_w);
    kn_dense x;
    kn_win_out o, oi;
    kn_status s = kn__cpu_dense("max_pool2d", &x, &a->x, wt);
    if (s == KN_OK) s = kn__win_out_begin("max_pool2d", &o, &a->out, wt);
    if (s == KN_OK) s = kn__win_out_begin("max_pool2d", &oi, &a->indices, KN_I64);
    if (s == KN_OK) {
        int64_t *idx = oi.p;
        int64_t tmp = 0;
        if (!idx) idx = g.N * g.C * g.OH * g.OW > 0 ? kn__cpu_scratch((size_t)(g.N * g.C * g.OH * g.OW) * 8) : &tmp;
        if (!idx) s = kn__err(KN_ERR_OOM, "max_pool2d: out of memory");
        if (s == KN_OK) {
            int64_t grain = plane_grain(&g, g.kh * g.kw);
            if (wt == KN_F32) {
                pool_ctx_f32 c = {.g = &g, .x = x.v.data, .y = o.p, .idx = idx};
                kn__parallel_for(g.N * g.C, grain, max_range_f32, &c);
            } else {
                pool_ctx_f64 c = {.g = &g, .x = x.v.data, .y = o.p, .idx = idx};
                kn__parallel_for(g.N * g.C, grain, max_range_f64, &c);
            }
        }
        if (idx && idx != oi.p && idx != &tmp) kn__cpu_scratch_free(idx, (size_t)(g.N * g.C * g.OH * g.OW) * 8);
        kn_status e1 = kn__win_out_end(&o, wt, s == KN_OK), e2 = kn__win_out_end(&oi, KN_I64, s == KN_OK);
        if (s == KN_OK) s = e1 != KN_OK ? e1 : e2;
    }
    kn__cpu_dense_free(&x);
    return s;
}

kn_status kn__cpu_max_pool2d_backward(int device, const void *args) {
    (void)device;
    const kn_max_pool2d_backward_args *a = args;
    kn_dtype wt = kn__win_work(a->grad_x.dtype);
    kn_win g = pool_geom(&a->grad_x, &a->grad, 1, 1, 1, 1, 0, 0, 1, 1);
    kn_dense gy, ix;
    kn_win_out o;
    kn_status s = kn__cpu_dense("max_pool2d_backward", &gy, &a->grad, wt);
    if (s == KN_OK) s = kn__cpu_dense("max_pool2d_backward", &ix, &a->indices, KN_I64);
    if (s == KN_OK) { /* the indices address one plane each: checked before any write */
        const int64_t *ip = ix.v.data;
        int64_t n = kn_operand_numel(&ix.v);
        for (int64_t q = 0; q < n && s == KN_OK; q++)
            if (ip[q] < 0 || ip[q] >= g.H * g.W)
                s = kn__err(KN_ERR_INVALID, "max_pool2d_backward: index %lld is outside a plane of %lld x %lld",
                            (long long)ip[q], (long long)g.H, (long long)g.W);
    }
    if (s == KN_OK) s = kn__win_out_begin("max_pool2d_backward", &o, &a->grad_x, wt);
    if (s == KN_OK) {
        int64_t grain = plane_grain(&g, 1);
        if (wt == KN_F32) {
            pool_ctx_f32 c = {.g = &g, .x = gy.v.data, .y = o.p, .cidx = ix.v.data};
            kn__parallel_for(g.N * g.C, grain, max_back_range_f32, &c);
        } else {
            pool_ctx_f64 c = {.g = &g, .x = gy.v.data, .y = o.p, .cidx = ix.v.data};
            kn__parallel_for(g.N * g.C, grain, max_back_range_f64, &c);
        }
        s = kn__win_out_end(&o, wt, true);
    }
    kn__cpu_dense_free(&gy);
    kn__cpu_dense_free(&ix);
    return s;
}

kn_status kn__cpu_avg_pool2d(int device, const void *args) {
    (void)device;
    const kn_avg_pool2d_args *a = args;
    kn_dtype wt = kn__win_work(a->out.dtype);
    kn_win g = pool_geom(&a->x, &a->out, a->kernel_h, a->kernel_w, a->stride_h, a->stride_w, a->pad_h, a->pad_w, 1, 1);
    kn_dense x;
    kn_win_out o;
    kn_status s = kn__cpu_dense("avg_pool2d", &x, &a->x, wt);
    if (s == KN_OK) s = kn__win_out_begin("avg_pool2d", &o, &a->out, wt);
    if (s == KN_OK) {
        int64_t grain = plane_grain(&g, g.kh * g.kw);
        if (wt == KN_F32) {
            pool_ctx_f32 c = {.g = &g, .x = x.v.data, .y = o.p, .include_pad = a->count_include_pad != 0,
                              .divisor = a->divisor_override};
            kn__parallel_for(g.N * g.C, grain, avg_range_f32, &c);
        } else {
            pool_ctx_f64 c = {.g = &g, .x = x.v.data, .y = o.p, .include_pad = a->count_include_pad != 0,
                              .divisor = a->divisor_override};
            kn__parallel_for(g.N * g.C, grain, avg_range_f64, &c);
        }
        s = kn__win_out_end(&o, wt, true);
    }
    kn__cpu_dense_free(&x);
    return s;
}

kn_status kn__cpu_avg_pool2d_backward(int device, const void *args) {
    (void)device;
    const kn_avg_pool2d_backward_args *a = args;
    kn_dtype wt = kn__win_work(a->grad_x.dtype);
    kn_win g = pool_geom(&a->grad_x, &a->grad, a->kernel_h, a->kernel_w, a->stride_h, a->stride_w, a->pad_h, a->pad_w,
                         1, 1);
    kn_dense gy;
    kn_win_out o;
    kn_status s = kn__cpu_dense("avg_pool2d_backward", &gy, &a->grad, wt);
    if (s == KN_OK) s = kn__win_out_begin("avg_pool2d_backward", &o, &a->grad_x, wt);
    if (s == KN_OK) {
        int64_t grain = plane_grain(&g, g.kh * g.kw);
        if (wt == KN_F32) {
            pool_ctx_f32 c = {.g = &g, .x = gy.v.data, .y = o.p, .include_pad = a->count_include_pad != 0,
                              .divisor = a->divisor_override};
            kn__parallel_for(g.N * g.C, grain, avg_back_range_f32, &c);
        } else {
            pool_ctx_f64 c = {.g = &g, .x = gy.v.data, .y = o.p, .include_pad = a->count_include_pad != 0,
                              .divisor = a->divisor_override};
            kn__parallel_for(g.N * g.C, grain, avg_back_range_f64, &c);
        }
        s = kn__win_out_end(&o, wt, true);
    }
    kn__cpu_dense_free(&gy);
    return s;
}
