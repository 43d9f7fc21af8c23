/* CPU convolution: im2col + GEMM (cpu_conv_impl.h), float32 for float32,
 * float16 and bfloat16 (converted on the way in and out), float64 for
 * float64. docs/VISION.md says why this lowering and not a direct kernel. */
#include "cpu_vision.h"
#include "gemm.h"

#include <string.h>

#define T float
#define SFX f32
#define GEMM kn__sgemm
#include "cpu_conv_impl.h"
#undef T
#undef SFX
#undef GEMM
#define T double
#define SFX f64
#define GEMM kn__dgemm
#include "cpu_conv_impl.h"
#undef T
#undef SFX
#undef GEMM

static kn_win conv_geom(const kn_operand *x, const kn_operand *y, const kn_operand *w, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
    return (kn_win){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .K = y->shape[1],
                    .OH = y->shape[2], .OW = y->shape[3], .kh = w->shape[2], .kw = w->shape[3], .sh = sh, .sw = sw,
                    .ph = ph, .pw = pw, .dh = dh, .dw = dw, .G = groups};
}

kn_status kn__cpu_conv2d(int device, const void *args) {
    (void)device;
    const kn_conv2d_args *a = args;
    kn_dtype wt = kn__win_work(a->out.dtype);
    kn_win g = conv_geom(&a->x, &a->out, &a->weight, a->stride_h, a->stride_w, a->pad_h, a->pad_w, a->dilation_h,
                         a->dilation_w, a->groups);
    kn_dense x, w, b;
    kn_win_out o;
    kn_status s = kn__cpu_dense("conv2d", &x, &a->x, wt);
    if (s == KN_OK) s = kn__cpu_dense("conv2d", &w, &a->weight, wt);
    if (s == KN_OK) s = kn__cpu_dense("conv2d", &b, &a->bias, wt);
    if (s == KN_OK) s = kn__win_out_begin("conv2d", &o, &a->out, wt);
    if (s == KN_OK) {
        s = wt == KN_F32 ? conv_forward_f32(&g, o.p, x.v.data, w.v.data, b.v.data)
                         : conv_forward_f64(&g, o.p, x.v.data, w.v.data, b.v.data);
        kn_status e = kn__win_out_end(&o, wt, s == KN_OK);
        if (s == KN_OK) s = e;
    }
    kn__cpu_dense_free(&x), kn__cpu_dense_free(&w), kn__cpu_dense_free(&b);
    return s;
}

kn_status kn__cpu_conv2d_backward(int device, const void *args) {
    (void)device;
    const kn_conv2d_backward_args *a = args;
    kn_dtype wt = kn__win_work(a->grad.dtype);
    /* The geometry from the outputs and grad; x and weight may be absent. */
    const kn_operand *xs = kn_operand_present(&a->grad_x) ? &a->grad_x : &a->x;
    const kn_operand *ws = kn_operand_present(&a->grad_weight) ? &a->grad_weight : &a->weight;
    kn_win g = conv_geom(xs, &a->grad, ws, a->stride_h, a->stride_w, a->pad_h, a->pad_w, a->dilation_h,
                         a->dilation_w, a->groups);
    bool want_w = kn_operand_present(&a->grad_weight), want_x = kn_operand_present(&a->grad_x);
    kn_dense gy, x = {0}, w = {0};
    kn_win_out ox = {0}, ow = {0}, ob = {0};
    kn_status s = kn__cpu_dense("conv2d_backward", &gy, &a->grad, wt);
    if (s == KN_OK && want_w) s = kn__cpu_dense("conv2d_backward", &x, &a->x, wt);
    if (s == KN_OK && want_x) s = kn__cpu_dense("conv2d_backward", &w, &a->weight, wt);
    if (s == KN_OK) s = kn__win_out_begin("conv2d_backward", &ox, &a->grad_x, wt);
    if (s == KN_OK) s = kn__win_out_begin("conv2d_backward", &ow, &a->grad_weight, wt);
    if (s == KN_OK) s = kn__win_out_begin("conv2d_backward", &ob, &a->grad_bias, wt);
    if (s == KN_OK)
        s = wt == KN_F32 ? conv_backward_f32(&g, gy.v.data, x.v.data, w.v.data, ox.p, ow.p, ob.p)
                         : conv_backward_f64(&g, gy.v.data, x.v.data, w.v.data, ox.p, ow.p, ob.p);
    kn_win_out *outs[3] = {&ox, &ow, &ob};
    for (int k = 0; k < 3; k++) {
        kn_status e = kn__win_out_end(outs[k], wt, s == KN_OK);
        if (s == KN_OK) s = e;
    }
    kn__cpu_dense_free(&gy), kn__cpu_dense_free(&x), kn__cpu_dense_free(&w);
    return s;
}
