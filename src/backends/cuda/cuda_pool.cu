/* Max and average pooling on CUDA, forward and backward, one thread per
 * output element (forward, average backward) or per gradient element (max
 * backward), every float dtype (float16/bfloat16 through float). Results
 * follow the CPU kernels (cpu_pool_impl.h): the first maximum in window
 * order with a NaN beating any number, PyTorch's average divisors. Average
 * backward gathers (each input sums the windows that hold it: no atomics);
 * max backward has only the indices, so it scatters with atomics (float32
 * and float64 in place, 16-bit floats through a float32 scratch). */
#include "cuda_common.cuh"

namespace {

template <int DT> struct pe;
template <> struct pe<KN_F32> {
    typedef float T;
    typedef float A;
    static __device__ __forceinline__ A in(T v) { return v; }
    static __device__ __forceinline__ T out(A v) { return v; }
};
template <> struct pe<KN_F64> {
    typedef double T;
    typedef double A;
    static __device__ __forceinline__ A in(T v) { return v; }
    static __device__ __forceinline__ T out(A v) { return v; }
};
template <> struct pe<KN_F16> {
    typedef uint16_t T;
    typedef float A;
    static __device__ __forceinline__ A in(T v) { return kc_h2f(v); }
    static __device__ __forceinline__ T out(A v) { return kc_f2h(v); }
};
template <> struct pe<KN_BF16> {
    typedef uint16_t T;
    typedef float A;
    static __device__ __forceinline__ A in(T v) { return kc_b2f(v); }
    static __device__ __forceinline__ T out(A v) { return kc_f2b(v); }
};

/* Planes (N * C), sizes, window; 32-bit (cuda_conv.c checks the sizes). */
struct pg {
    int planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw;
    int include_pad, divisor;
};

template <int DT>
__global__ void max_fwd(pg p, typename pe<DT>::T *y, long long *idx, const typename pe<DT>::T *__restrict__ x) {
    typedef typename pe<DT>::A A;
    kc_pdl_wait();
    long long total = (long long)p.planes * p.OH * p.OW;
    KC_LOOP(o, total) {
        int u = (int)(o / (p.OH * p.OW)), q = (int)(o - (long long)u * p.OH * p.OW), i = q / p.OW, j = q - i * p.OW;
        const typename pe<DT>::T *xp = x + (long long)u * p.H * p.W;
        A best = 0;
        int at = -1;
        for (int a = 0; a < p.kh; a++) {
            int h = i * p.sh - p.ph + a * p.dh;
            if (h < 0 || h >= p.H) continue;
            for (int b = 0; b < p.kw; b++) {
                int w = j * p.sw - p.pw + b * p.dw;
                if (w < 0 || w >= p.W) continue;
                A v = pe<DT>::in(xp[h * p.W + w]);
                /* The first maximum; the first NaN beats everything. */
                if (at < 0 || v > best || (v != v && best == best)) best = v, at = h * p.W + w;
            }
        }
        y[o] = pe<DT>::out(best);
        if (idx) idx[o] = at;
    }
}

/* gx (already zero, of accumulation type AT) += grad at the indices, each
 * checked to lie in its plane (else recorded for the host, and skipped). */
template <int DT, typename AT>
__global__ void max_bwd(pg p, AT *gx, const typename pe<DT>::T *__restrict__ gy, const long long *__restrict__ idx,
                        long long *err) {
    kc_pdl_wait();
    long long total = (long long)p.planes * p.OH * p.OW, HW = (long long)p.H * p.W;
    KC_LOOP(o, total) {
        long long u = o / (p.OH * p.OW), at = idx[o];
        if (at < 0 || at >= HW) {
            kc_fault(err, KC_FAULT_INDEX, KC_OP_MAX_POOL2D_BACKWARD, at, HW, 2);
            continue;
        }
        atomicAdd(gx + u * HW + at, (AT)pe<DT>::in(gy[o]));
    }
}

template <int DT>
__global__ void from_float(typename pe<DT>::T *out, const float *in, long long n) {
    kc_pdl_wait();
    KC_LOOP(i, n) out[i] = pe<DT>::out(in[i]);
}

/* PyTorch's divisor of window (i, j) and its taps inside x: rows [h0, h1),
 * columns [w0, w1). */
__device__ __forceinline__ int avg_window(const pg &p, int i, int j, int *h0, int *h1, int *w0, int *w1) {
    int hs = i * p.sh - p.ph, ws = j * p.sw - p.pw;
    int he = min(hs + p.kh, p.H + p.ph), we = min(ws + p.kw, p.W + p.pw);
    int pool = (he - hs) * (we - ws);
    *h0 = max(hs, 0), *w0 = max(ws, 0), *h1 = min(he, p.H), *w1 = min(we, p.W);
    if (p.divisor > 0) return p.divisor;
    return p.include_pad ? pool : (*h1 - *h0) * (*w1 - *w0);
}

template <int DT>
__global__ void avg_fwd(pg p, typename pe<DT>::T *y, const typename pe<DT>::T *__restrict__ x) {
    typedef typename pe<DT>::A A;
    kc_pdl_wait();
    long long total = (long long)p.planes * p.OH * p.OW;
    KC_LOOP(o, total) {
        int u = (int)(o / (p.OH * p.OW)), q = (int)(o - (long long)u * p.OH * p.OW), i = q / p.OW, j = q - i * p.OW;
        const typename pe<DT>::T *xp = x + (long long)u * p.H * p.W;
        int h0, h1, w0, w1, d = avg_window(p, i, j, &h0, &h1, &w0, &w1);
        double s = 0; /* in double, as the CPU */
        for (int h = h0; h < h1; h++)
            for (int w = w0; w < w1; w++) s += pe<DT>::in(xp[h * p.W + w]);
        y[o] = pe<DT>::out(h1 > h0 && w1 > w0 ? (A)(s / (double)d) : A(0));
    }
}

/* Each input element sums grad / divisor over the windows that hold it:
 * outputs i with i*sh - ph <= h < i*sh - ph + kh (and the same for w). */
template <int DT>
__global__ void avg_bwd(pg p, typename pe<DT>::T *gx, const typename pe<DT>::T *__restrict__ gy) {
    typedef typename pe<DT>::A A;
    kc_pdl_wait();
    long long total = (long long)p.planes * p.H * p.W;
    KC_LOOP(e, total) {
        int u = (int)(e / (p.H * p.W)), r = (int)(e - (long long)u * p.H * p.W), h = r / p.W, w = r - h * p.W;
        const typename pe<DT>::T *gp = gy + (long long)u * p.OH * p.OW;
        /* i*sh <= h + ph and i*sh > h + ph - kh */
        int ilo = h + p.ph - p.kh < 0 ? 0 : (h + p.ph - p.kh) / p.sh + 1, ihi = min((h + p.ph) / p.sh, p.OH - 1);
        int jlo = w + p.pw - p.kw < 0 ? 0 : (w + p.pw - p.kw) / p.sw + 1, jhi = min((w + p.pw) / p.sw, p.OW - 1);
        A s = 0;
        for (int i = ilo; i <= ihi; i++)
            for (int j = jlo; j <= jhi; j++) {
                int h0, h1, w0, w1, d = avg_window(p, i, j, &h0, &h1, &w0, &w1);
                s += pe<DT>::in(gp[i * p.OW + j]) / (A)d;
            }
        gx[e] = pe<DT>::out(s);
    }
}

/* The kernels above, as launch's and dispatch's KIND. */
enum { MAX_FWD, MAX_BWD, AVG_FWD, AVG_BWD, FROM_FLOAT };

/* Queues kernel KIND for dtype DT over n items. out: y (the forwards),
 * grad_x (average backward), the accumulator in pe<DT>::A (max backward:
 * grad_x itself for float32 and float64, the float32 scratch for the 16-bit
 * floats) or the 16-bit grad_x (from_float, which queues nothing for
 * float32 and float64); in: x, grad, or the float32 scratch (from_float);
 * idx: max's indices (max forward: NULL for none). */
template <int DT, int KIND>
void launch(kc_dev *d, const pg &p, long long n, void *out, const void *in, long long *idx) {
    typedef typename pe<DT>::T T;
    typedef typename pe<DT>::A A;
    if constexpr (KIND == MAX_FWD)
        KC_LAUNCH(d, max_fwd<DT>, kc_blocks(n), KC_THREADS, p, (T *)out, idx, (const T *)in);
    else if constexpr (KIND == MAX_BWD)
        KC_LAUNCH(d, (max_bwd<DT, A>), kc_blocks(n), KC_THREADS, p, (A *)out, (const T *)in, idx, d->err_dev);
    else if constexpr (KIND == AVG_FWD)
        KC_LAUNCH(d, avg_fwd<DT>, kc_blocks(n), KC_THREADS, p, (T *)out, (const T *)in);
    else if constexpr (KIND == AVG_BWD)
        KC_LAUNCH(d, avg_bwd<DT>, kc_blocks(n), KC_THREADS, p, (T *)out, (const T *)in);
    else if constexpr (DT == KN_F16 || DT == KN_BF16) /* float32 and float64 accumulate in grad_x itself */
        KC_LAUNCH(d, from_float<DT>, kc_blocks(n), KC_THREADS, (T *)out, (const float *)in, n);
}

/* launch<DT, KIND> for the dtype dt, or an error naming op. */
template <int KIND>
kn_status dispatch(kc_dev *d, kn_dtype dt, const pg &p, long long n, void *out, const void *in, long long *idx,
                   const char *op) {
    switch (dt) {
    case KN_F32: launch<KN_F32, KIND>(d, p, n, out, in, idx); return KN_OK;
    case KN_F64: launch<KN_F64, KIND>(d, p, n, out, in, idx); return KN_OK;
    case KN_F16: launch<KN_F16, KIND>(d, p, n, out, in, idx); return KN_OK;
    case KN_BF16: launch<KN_BF16, KIND>(d, p, n, out, in, idx); return KN_OK;
    default: return kn__err(KN_ERR_DTYPE, "%s: no CUDA kernel for %s", op, kn_dtype_name(dt));
    }
}

pg geom(const kn_operand *x, const kn_operand *y, long long kh, long long kw, long long sh, long long sw,
        long long ph, long long pw, long long dh, long long dw) {
    pg p;
    p.planes = (int)(x->shape[0] * x->shape[1]), p.H = (int)x->shape[2], p.W = (int)x->shape[3];
    p.OH = (int)y->shape[2], p.OW = (int)y->shape[3], p.kh = (int)kh, p.kw = (int)kw, p.sh = (int)sh;
    p.sw = (int)sw, p.ph = (int)ph, p.pw = (int)pw, p.dh = (int)dh, p.dw = (int)dw;
    p.include_pad = 0, p.divisor = 0;
    return p;
}

/* Contiguous inputs of dtype dt; freed by the caller in stream order. */
kn_status inputs(kc_dev *d, const kn_operand *a, kn_dtype da, kc_buf *ba, const kn_operand *b, kn_dtype db,
                 kc_buf *bb) {
    memset(bb, 0, sizeof *bb);
    kn_status s = kc_contig(d, a, da, ba);
    if (s == KN_OK && b) s = kc_contig(d, b, db, bb);
    return s;
}

} // namespace

kn_status kn__cuda_max_pool2d(int device, const void *args) {
    const kn_max_pool2d_args *a = (const kn_max_pool2d_args *)args;
    const char *op = "max_pool2d";
    kc_dev *d = kc_enter(device, op, false);
    if (!d) return kn_error_code();
    if (kn_operand_numel(&a->out) == 0) return KN_OK;
    pg p = geom(&a->x, &a->out, a->kernel_h, a->kernel_w, a->stride_h, a->stride_w, a->pad_h, a->pad_w,
                a->dilation_h, a->dilation_w);
    kn_dtype dt = a->out.dtype;
    kc_buf x, unused;
    kn_status s = inputs(d, &a->x, dt, &x, NULL, dt, &unused);
    long long *idx = kn_operand_present(&a->indices) ? (long long *)a->indices.data : NULL;
    long long n = kn_operand_numel(&a->out);
    if (s == KN_OK) s = dispatch<MAX_FWD>(d, dt, p, n, a->out.data, x.v.data, idx, op);
    if (s == KN_OK) s = kc_after(d, op);
    kc_buf_free(d, &x);
    return s;
}

kn_status kn__cuda_max_pool2d_backward(int device, const void *args) {
    const kn_max_pool2d_backward_args *a = (const kn_max_pool2d_backward_args *)args;
    const char *op = "max_pool2d_backward";
    kc_dev *d = kc_enter(device, op, false);
    if (!d) return kn_error_code();
    long long nx = kn_operand_numel(&a->grad_x), n = kn_operand_numel(&a->grad);
    if (nx == 0) return KN_OK;
    kn_dtype dt = a->grad_x.dtype;
    pg p = geom(&a->grad_x, &a->grad, 1, 1, 1, 1, 0, 0, 1, 1);
    bool half = dt == KN_F16 || dt == KN_BF16;
    size_t sbytes = half ? (size_t)nx * sizeof(float) : 0;
    float *acc = NULL;
    kc_buf g, ix;
    kn_status s = inputs(d, &a->grad, dt, &g, &a->indices, KN_I64, &ix);
    if (s == KN_OK && half && !(acc = (float *)kc_alloc(d->index, sbytes))) s = kn_error_code();
    /* grad_x is contiguous (the contract) and zero bits are 0.0 in every float dtype. */
    if (s == KN_OK)
        s = kc_check(cudaMemsetAsync(half ? (void *)acc : a->grad_x.data, 0,
                                     half ? sbytes : (size_t)nx * kn_dtype_size(dt), d->stream),
                     op);
    if (s == KN_OK && n > 0)
        s = dispatch<MAX_BWD>(d, dt, p, n, half ? (void *)acc : a->grad_x.data, g.v.data, (long long *)ix.v.data, op);
    if (s == KN_OK && half) s = dispatch<FROM_FLOAT>(d, dt, p, nx, a->grad_x.data, acc, NULL, op);
    if (s == KN_OK) s = kc_after(d, op);
    if (acc) kc_free(d->index, acc, sbytes);
    kc_buf_free(d, &g);
    kc_buf_free(d, &ix);
    return s;
}

kn_status kn__cuda_avg_pool2d(int device, const void *args) {
    const kn_avg_pool2d_args *a = (const kn_avg_pool2d_args *)args;
    const char *op = "avg_pool2d";
    kc_dev *d = kc_enter(device, op, false);
    if (!d) return kn_error_code();
    long long n = kn_operand_numel(&a->out);
    if (n == 0) return KN_OK;
    pg p = geom(&a->x, &a->out, a->kernel_h, a->kernel_w, a->stride_h, a->stride_w, a->pad_h, a->pad_w, 1, 1);
    p.include_pad = a->count_include_pad != 0;
    p.divisor = a->divisor_override > 0 ? (int)a->divisor_override : 0;
    kn_dtype dt = a->out.dtype;
    kc_buf x, unused;
    kn_status s = inputs(d, &a->x, dt, &x, NULL, dt, &unused);
    if (s == KN_OK) s = dispatch<AVG_FWD>(d, dt, p, n, a->out.data, x.v.data, NULL, op);
    if (s == KN_OK) s = kc_after(d, op);
    kc_buf_free(d, &x);
    return s;
}

kn_status kn__cuda_avg_pool2d_backward(int device, const void *args) {
    const kn_avg_pool2d_backward_args *a = (const kn_avg_pool2d_backward_args *)args;
    const char *op = "avg_pool2d_backward";
    kc_dev *d = kc_enter(device, op, false);
    if (!d) return kn_error_code();
    long long n = kn_operand_numel(&a->grad_x);
    if (n == 0) return KN_OK;
    pg p = geom(&a->grad_x, &a->grad, a->kernel_h, a->kernel_w, a->stride_h, a->stride_w, a->pad_h, a->pad_w, 1, 1);
    p.include_pad = a->count_include_pad != 0;
    p.divisor = a->divisor_override > 0 ? (int)a->divisor_override : 0;
    kn_dtype dt = a->grad_x.dtype;
    kc_buf g, unused;
    kn_status s = inputs(d, &a->grad, dt, &g, NULL, dt, &unused);
    if (s == KN_OK) s = dispatch<AVG_BWD>(d, dt, p, n, a->grad_x.data, g.v.data, NULL, op);
    if (s == KN_OK) s = kc_after(d, op);
    kc_buf_free(d, &g);
    return s;
}
