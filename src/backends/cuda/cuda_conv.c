/* CONV2D and CONV2D_BACKWARD on CUDA: through cuDNN when it can be opened
 * (cuda_cudnn.c) and has an engine for the convolution, else kiln's own
 * implicit-GEMM kernels (cuda_conv_igemm.cu); KILN_CUDNN=0 picks the latter
 * always. The bias is added by a small kernel after cuDNN (fused into the
 * store of kiln's own forward), and its gradient is one reduction kernel
 * for both. float32 follows the GEMMs' policy: full FP32 unless
 * KILN_ALLOW_TF32=1. Pooling is in cuda_pool.cu; this file says which of
 * the vision ops have a kernel here (kc_vision_supports). */
#include "cuda_cudnn.h"

#include <stdlib.h>
#include <string.h>

static bool small(const kn_operand *v) { return !kn_operand_present(v) || kn_operand_numel(v) <= INT32_MAX; }

/* Every kernel here uses 32-bit offsets: operands of 2^31 elements or more
 * run as the op's composite. The GEMM tiles' grid also bounds M. */
bool kc_vision_supports(int index, kn_op op, const void *args) {
    (void)index;
    switch (op) {
    case KN_OP_CONV2D: {
        const kn_conv2d_args *a = args;
        return small(&a->out) && small(&a->x) && small(&a->weight) && a->groups > 0 &&
               a->x.shape[1] / a->groups <= 65535LL * 64 && a->out.shape[1] / a->groups <= 65535LL * 64;
    }
    case KN_OP_CONV2D_BACKWARD: {
        const kn_conv2d_backward_args *a = args;
        const kn_operand *xs = kn_operand_present(&a->grad_x) ? &a->grad_x : &a->x;
        return small(&a->grad) && small(&a->grad_x) && small(&a->x) && small(&a->grad_weight) && small(&a->weight) &&
               a->groups > 0 && xs->shape[1] / a->groups <= 65535LL * 64 &&
               a->grad.shape[1] / a->groups <= 65535LL * 64;
    }
    case KN_OP_MAX_POOL2D: {
        const kn_max_pool2d_args *a = args;
        return small(&a->x) && small(&a->out);
    }
    case KN_OP_MAX_POOL2D_BACKWARD: {
        const kn_max_pool2d_backward_args *a = args;
        return small(&a->grad_x) && small(&a->grad);
    }
    case KN_OP_AVG_POOL2D: {
        const kn_avg_pool2d_args *a = args;
        return small(&a->x) && small(&a->out);
    }
    case KN_OP_AVG_POOL2D_BACKWARD: {
        const kn_avg_pool2d_backward_args *a = args;
        return small(&a->grad_x) && small(&a->grad);
    }
    default: return false;
    }
}

static kc_conv_geom geom(const kn_operand *x, const kn_operand *y, const kn_operand *w, int64_t sh, int64_t sw,
                         int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
    return (kc_conv_geom){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .K = y->shape[1],
                          .OH = y->shape[2], .OW = y->shape[3], .kh = w->shape[2], .kw = w->shape[3], .sh = sh,
                          .sw = sw, .ph = ph, .pw = pw, .dh = dh, .dw = dw, .G = groups};
}

static bool tf32_allowed(kn_dtype dt) {
    const char *tf = getenv("KILN_ALLOW_TF32");
    return dt == KN_F32 && tf && !strcmp(tf, "1");
}

/* Packed NCHW or NHWC (size-1 dims aside): the layouts cuDNN's convolution
 * engines are written for. Its descriptors take any strides, but on the H100
 * some engines gave wrong results for other dense orders (H and W swapped),
 * so those are copied to NCHW, as PyTorch does before calling cuDNN. */
static bool cudnn_layout(const kn_operand *v) {
    static const int orders[2][4] = {{0, 1, 2, 3}, {0, 2, 3, 1}}; /* outermost first */
    if (v->ndim != 4) return false;
    for (int o = 0; o < 2; o++) {
        int64_t want = 1;
        bool ok = true;
        for (int i = 3; i >= 0 && ok; i--) {
            int dd = orders[o][i];
            ok = v->shape[dd] == 1 || v->stride[dd] == want;
            want *= v->shape[dd];
        }
        if (ok) return true;
    }
    return false;
}

/* An input for cuDNN (its own strides when NCHW or NHWC, else a contiguous copy)
 * or, when !keep, for kiln's kernels (contiguous). */
static kn_status input(kc_dev *d, const kn_operand *v, kn_dtype dt, bool keep, kc_buf *b) {
    if (keep && kn_operand_present(v) && v->dtype == dt && cudnn_layout(v)) {
        memset(b, 0, sizeof *b);
        b->v = *v;
        return KN_OK;
    }
    return kc_contig(d, v, dt, b);
}

/* After cuDNN declined: the inputs it was given, made contiguous. */
static kn_status to_contiguous(kc_dev *d, kc_buf *b) {
    if (!kn_operand_present(&b->v) || kn_operand_contiguous(&b->v)) return KN_OK;
    kc_buf c;
    kn_status s = kc_contig(d, &b->v, b->v.dtype, &c);
    if (s != KN_OK) return s;
    kc_buf_free(d, b);
    *b = c;
    return KN_OK;
}

/* cuDNN is tried when loaded and the sizes are not degenerate (it refuses
 * empty tensors, which kiln's kernels handle). */
static kn_status use_cudnn(const char *op, const kc_conv_geom *g, bool *yes) {
    *yes = false;
    if (g->N == 0 || g->C == 0 || g->K == 0 || g->H == 0 || g->W == 0 || g->OH == 0 || g->OW == 0) return KN_OK;
    return kc_cudnn_ready(op, yes);
}

kn_status kn__cuda_conv2d(int device, const void *args) {
    const kn_conv2d_args *a = args;
    const char *op = "conv2d";
    kc_dev *d = kc_enter(device, op, false);
    if (!d) return kn_error_code();
    if (kn_operand_numel(&a->out) == 0) return KN_OK;
    kc_conv_geom g = geom(&a->x, &a->out, &a->weight, a->stride_h, a->stride_w, a->pad_h, a->pad_w, a->dilation_h,
                          a->dilation_w, a->groups);
    kn_dtype dt = a->out.dtype;
    bool dnn = false, declined = true;
    kc_buf x = {0}, w = {0}, b = {0};
    kn_status s = use_cudnn(op, &g, &dnn);
    if (s == KN_OK) s = input(d, &a->x, dt, dnn, &x);
    if (s == KN_OK) s = input(d, &a->weight, dt, dnn, &w);
    if (s == KN_OK) s = kc_contig(d, &a->bias, dt, &b);
    if (s == KN_OK && dnn) {
        s = kc_cudnn_conv(d, op, KC_CONV_FWD, &g, tf32_allowed(dt), &x.v, &w.v, &a->out, &declined);
        if (s == KN_OK && !declined && kn_operand_present(&b.v)) s = kc_conv_bias_add(d, &g, dt, a->out.data, b.v.data);
    }
    if (s == KN_OK && declined) {
        s = to_contiguous(d, &x);
        if (s == KN_OK) s = to_contiguous(d, &w);
        if (s == KN_OK) s = kc_igemm_forward(d, &g, dt, a->out.data, x.v.data, w.v.data, b.v.data);
    }
    /* Stream order keeps the copies alive for the kernels queued. */
    kc_buf_free(d, &x), kc_buf_free(d, &w), kc_buf_free(d, &b);
    return s;
}

kn_status kn__cuda_conv2d_backward(int device, const void *args) {
    const kn_conv2d_backward_args *a = args;
    const char *op = "conv2d_backward";
    kc_dev *d = kc_enter(device, op, false);
    if (!d) return kn_error_code();
    bool want_x = kn_operand_present(&a->grad_x), want_w = kn_operand_present(&a->grad_weight);
    /* The geometry from the outputs and grad; x and weight may be absent. */
    const kn_operand *xs = want_x ? &a->grad_x : &a->x, *ws = want_w ? &a->grad_weight : &a->weight;
    if (!kn_operand_present(xs) || !kn_operand_present(ws)) { /* only the bias gradient: no shapes needed */
        if (!kn_operand_present(&a->grad_bias)) return KN_OK;
    }
    kn_dtype dt = a->grad.dtype;
    kc_conv_geom g = {0};
    if (kn_operand_present(xs) && kn_operand_present(ws))
        g = geom(xs, &a->grad, ws, a->stride_h, a->stride_w, a->pad_h, a->pad_w, a->dilation_h, a->dilation_w,
                 a->groups);
    else
        g.N = a->grad.shape[0], g.K = a->grad.shape[1], g.OH = a->grad.shape[2], g.OW = a->grad.shape[3];
    bool dnn = false;
    kc_buf gy = {0}, x = {0}, w = {0};
    kn_status s = want_x || want_w ? use_cudnn(op, &g, &dnn) : KN_OK;
    if (s == KN_OK) s = input(d, &a->grad, dt, dnn, &gy);
    if (s == KN_OK && want_w) s = input(d, &a->x, dt, dnn, &x);
    if (s == KN_OK && want_x) s = input(d, &a->weight, dt, dnn, &w);
    if (s == KN_OK && kn_operand_present(&a->grad_bias)) {
        kc_buf c = {0}; /* the reduction reads contiguous NCHW */
        s = kn_operand_contiguous(&gy.v) ? KN_OK : kc_contig(d, &gy.v, dt, &c);
        if (s == KN_OK)
            s = kc_conv_bias_grad(d, &g, dt, a->grad_bias.data, c.scratch ? c.v.data : gy.v.data);
        kc_buf_free(d, &c);
    }
    bool tf32 = tf32_allowed(dt);
    if (s == KN_OK && want_x) {
        bool declined = true;
        if (dnn) s = kc_cudnn_conv(d, op, KC_CONV_BWD_DATA, &g, tf32, &a->grad_x, &w.v, &gy.v, &declined);
        if (s == KN_OK && declined) {
            s = to_contiguous(d, &gy);
            if (s == KN_OK) s = to_contiguous(d, &w);
            if (s == KN_OK) s = kc_igemm_backward_data(d, &g, dt, a->grad_x.data, gy.v.data, w.v.data);
        }
    }
    if (s == KN_OK && want_w) {
        bool declined = true;
        if (dnn) s = kc_cudnn_conv(d, op, KC_CONV_BWD_FILTER, &g, tf32, &x.v, &a->grad_weight, &gy.v, &declined);
        if (s == KN_OK && declined) {
            s = to_contiguous(d, &gy);
            if (s == KN_OK) s = to_contiguous(d, &x);
            if (s == KN_OK) s = kc_igemm_backward_filter(d, &g, dt, a->grad_weight.data, gy.v.data, x.v.data);
        }
    }
    kc_buf_free(d, &gy), kc_buf_free(d, &x), kc_buf_free(d, &w);
    return s;
}
