/* Softmax / log_softmax (+ backward) and the negative log-likelihood (+
 * backward). float32 computes in float, other float dtypes in double, as the
 * CPU kernels do; bulk inputs are made contiguous first. */
#include "cuda_common.cuh"

#include <math.h>

/* Element access in the compute type: float32 directly, others by dtype. */
template <typename C>
struct elt;
template <>
struct elt<float> {
    static __device__ __forceinline__ float ld(const char *p, long long k, int) { return ((const float *)p)[k]; }
    static __device__ __forceinline__ void st(char *p, long long k, int, float v) { ((float *)p)[k] = v; }
};
template <>
struct elt<double> {
    static __device__ __forceinline__ double ld(const char *p, long long k, int dt) {
        return kc_load(p + k * kc_dsize(dt), dt);
    }
    static __device__ __forceinline__ void st(char *p, long long k, int dt, double v) {
        kc_store(p + k * kc_dsize(dt), dt, v);
    }
};

__device__ __forceinline__ float kexp(float x) { return expf(x); }
__device__ __forceinline__ double kexp(double x) { return exp(x); }
__device__ __forceinline__ float klog(float x) { return logf(x); }
__device__ __forceinline__ double klog(double x) { return log(x); }

template <typename C>
__device__ __forceinline__ C nanmax(C a, C b) { return b > a || b != b ? b : a; }

template <typename C>
__device__ __forceinline__ C warp_max(C v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = nanmax(v, (C)__shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* ---- softmax: [outer, D, inner], contiguous ------------------------------------------- */
typedef struct {
    const char *a, *b; /* x (forward) or grad (backward); y (backward) */
    char *out;
    int dt;
    long long outer, D, inner;
    bool log, backward;
} sm_args;

/* inner == 1: blockDim (32, 8), a warp per row. */
template <typename C>
__global__ void softmax_rows(sm_args s) {
    kc_pdl_wait();
    long long r = (long long)blockIdx.x * blockDim.y + threadIdx.y;
    if (r >= s.outer) return;
    long long base = r * s.D;
    int lane = threadIdx.x;
    typedef elt<C> E;
    if (!s.backward) {
        C mx = -INFINITY, sum = 0;
        for (long long d = lane; d < s.D; d += 32) mx = nanmax(mx, E::ld(s.a, base + d, s.dt));
        mx = warp_max(mx);
        for (long long d = lane; d < s.D; d += 32) sum += kexp(E::ld(s.a, base + d, s.dt) - mx);
        sum = kc_warp_sum(sum);
        C ls = klog(sum), inv = C(1) / sum;
        for (long long d = lane; d < s.D; d += 32) {
            C z = E::ld(s.a, base + d, s.dt) - mx;
            E::st(s.out, base + d, s.dt, s.log ? z - ls : kexp(z) * inv);
        }
    } else {
        C sum = 0;
        for (long long d = lane; d < s.D; d += 32) {
            C g = E::ld(s.a, base + d, s.dt);
            sum += s.log ? g : g * E::ld(s.b, base + d, s.dt);
        }
        sum = kc_warp_sum(sum);
        for (long long d = lane; d < s.D; d += 32) {
            C g = E::ld(s.a, base + d, s.dt), y = E::ld(s.b, base + d, s.dt);
            E::st(s.out, base + d, s.dt, s.log ? g - kexp(y) * sum : y * (g - sum));
        }
    }
}

/* inner > 1: a thread per (outer, inner) column. */
template <typename C>
__global__ void softmax_cols(sm_args s) {
    kc_pdl_wait();
    typedef elt<C> E;
    KC_LOOP(u, s.outer * s.inner) {
        long long o = u / s.inner, j = u - o * s.inner, base = o * s.D * s.inner + j, st = s.inner;
        if (!s.backward) {
            C mx = -INFINITY, sum = 0;
            for (long long d = 0; d < s.D; d++) mx = nanmax(mx, E::ld(s.a, base + d * st, s.dt));
            for (long long d = 0; d < s.D; d++) sum += kexp(E::ld(s.a, base + d * st, s.dt) - mx);
            C ls = klog(sum), inv = C(1) / sum;
            for (long long d = 0; d < s.D; d++) {
                C z = E::ld(s.a, base + d * st, s.dt) - mx;
                E::st(s.out, base + d * st, s.dt, s.log ? z - ls : kexp(z) * inv);
            }
        } else {
            C sum = 0;
            for (long long d = 0; d < s.D; d++) {
                C g = E::ld(s.a, base + d * st, s.dt);
                sum += s.log ? g : g * E::ld(s.b, base + d * st, s.dt);
            }
            for (long long d = 0; d < s.D; d++) {
                C g = E::ld(s.a, base + d * st, s.dt), y = E::ld(s.b, base + d * st, s.dt);
                E::st(s.out, base + d * st, s.dt, s.log ? g - kexp(y) * sum : y * (g - sum));
            }
        }
    }
}

template <typename C>
static void launch_softmax(kc_dev *d, const sm_args &s) {
    if (s.inner == 1)
        KC_LAUNCH(d, softmax_rows<C>, (unsigned)((s.outer + 7) / 8), dim3(32, 8), s);
    else
        KC_LAUNCH(d, softmax_cols<C>, kc_blocks(s.outer * s.inner), KC_THREADS, s);
}

static kn_status softmax_run(const kn_call *c, bool backward) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    kn_tensor *out = c->out[0];
    int nd = out->ndim, dim = nd ? (int)c->i[0] : 0;
    kn_tensor *a = kc_contig(c->in[0], out->dtype), *b = backward && a ? kc_contig(c->in[1], out->dtype) : NULL;
    kn_status st = KN_OK;
    if (!a || (backward && !b)) st = kn_error_code();
    sm_args s = {a ? (const char *)kn__data(a) : NULL, b ? (const char *)kn__data(b) : NULL, (char *)kn__data(out),
                 out->dtype, 1, nd ? out->shape[dim] : 1, 1, c->i[1] != 0, backward};
    for (int k = 0; k < dim; k++) s.outer *= out->shape[k];
    for (int k = dim + 1; k < nd; k++) s.inner *= out->shape[k];
    if (st == KN_OK && s.D > 0 && s.outer * s.inner > 0) {
        if (out->dtype == KN_F32) launch_softmax<float>(d, s);
        else launch_softmax<double>(d, s);
        st = kc_after(d, backward ? "softmax_backward" : "softmax");
    }
    kn_release(a);
    kn_release(b);
    return st;
}

extern "C" kn_status kn__cuda_softmax(const kn_call *c) { return softmax_run(c, false); }
extern "C" kn_status kn__cuda_softmax_backward(const kn_call *c) { return softmax_run(c, true); }

/* ---- nll ------------------------------------------------------------------------------------ */
typedef struct {
    const char *x; /* lp [N, C] (forward) or per-row grads [N] (backward) */
    long long xs0, xs1;
    int xdt;
    const char *tg;
    long long ts;
    int tdt;
    const char *w; /* [C] or NULL */
    long long ws;
    int wdt;
    char *out; /* forward: loss [N]; backward: [N, C] contiguous */
    long long os;
    char *rw; /* forward: row weights [N] or NULL */
    long long rs;
    int odt;
    long long N, C, ignore;
    double smooth;
    int op;
} nll_args;

__device__ __forceinline__ double wt(const nll_args &a, long long k) {
    return a.w ? kc_load(a.w + k * a.ws * kc_dsize(a.wdt), a.wdt) : 1.0;
}

/* A valid target, or -1 (ignored) / -2 (out of range, recorded). */
__device__ __forceinline__ long long target(const nll_args &a, long long n, long long *err) {
    long long t = kc_load_i(a.tg + n * a.ts * kc_dsize(a.tdt), a.tdt);
    if (t == a.ignore) return -1;
    if (t < 0 || t >= a.C) {
        kc_fault(err, KC_FAULT_TARGET, a.op, t, a.C, 1);
        return -2;
    }
    return t;
}

/* blockDim (32, 8): a warp per row (the smoothing term sums the row). */
__global__ void nll_kernel(nll_args a, long long *err) {
    kc_pdl_wait();
    long long n = (long long)blockIdx.x * blockDim.y + threadIdx.y;
    if (n >= a.N) return;
    long long t = target(a, n, err);
    int es = kc_dsize(a.xdt), os = kc_dsize(a.odt);
    double acc = 0;
    if (t >= 0 && a.smooth != 0)
        for (long long k = threadIdx.x; k < a.C; k += 32)
            acc += wt(a, k) * kc_load(a.x + (n * a.xs0 + k * a.xs1) * es, a.xdt);
    acc = kc_warp_sum(acc);
    if (threadIdx.x) return;
    double l = 0, r = 0;
    if (t >= 0) {
        r = wt(a, t);
        l = -(1 - a.smooth) * r * kc_load(a.x + (n * a.xs0 + t * a.xs1) * es, a.xdt);
        if (a.smooth != 0) l -= a.smooth / (double)a.C * acc;
    }
    kc_store(a.out + n * a.os * os, a.odt, l);
    if (a.rw) kc_store(a.rw + n * a.rs * os, a.odt, r);
}

__global__ void nll_backward_kernel(nll_args a, long long *err) {
    kc_pdl_wait();
    int os = kc_dsize(a.odt), gs = kc_dsize(a.xdt);
    KC_LOOP(i, a.N * a.C) {
        long long n = i / a.C, k = i - n * a.C;
        long long t = target(a, n, err);
        double v = 0;
        if (t >= 0) {
            double gl = kc_load(a.x + n * a.xs0 * gs, a.xdt);
            if (a.smooth != 0) v = -gl * a.smooth / (double)a.C * wt(a, k);
            if (k == t) v -= gl * (1 - a.smooth) * wt(a, t);
        }
        kc_store(a.out + i * os, a.odt, v);
    }
}

static nll_args nll_setup(const kn_call *c, const kn_tensor *x, kn_tensor *out, kn_tensor *rw, long long N,
                          long long C) {
    const kn_tensor *tg = c->in[1], *w = c->in[2];
    nll_args a;
    memset(&a, 0, sizeof a);
    a.x = (const char *)kn__data(x);
    a.xs0 = x->ndim > 0 ? x->stride[0] : 0;
    a.xs1 = x->ndim > 1 ? x->stride[1] : 0;
    a.xdt = x->dtype;
    a.tg = (const char *)kn__data(tg);
    a.ts = tg->ndim ? tg->stride[0] : 0;
    a.tdt = tg->dtype;
    if (w) {
        a.w = (const char *)kn__data(w);
        a.ws = w->ndim ? w->stride[0] : 0;
        a.wdt = w->dtype;
    }
    a.out = (char *)kn__data(out);
    a.os = out->ndim ? out->stride[0] : 0;
    if (rw) {
        a.rw = (char *)kn__data(rw);
        a.rs = rw->ndim ? rw->stride[0] : 0;
    }
    a.odt = out->dtype;
    a.N = N;
    a.C = C;
    a.ignore = c->i[0];
    a.smooth = c->f[0];
    a.op = c->i[1] ? KC_OP_CROSS_ENTROPY : KC_OP_NLL;
    return a;
}

extern "C" kn_status kn__cuda_nll(const kn_call *c) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    const kn_tensor *lp = c->in[0];
    nll_args a = nll_setup(c, lp, c->out[0], c->out[1], lp->shape[0], lp->shape[1]);
    if (a.N == 0) return KN_OK;
    KC_LAUNCH(d, nll_kernel, (unsigned)((a.N + 7) / 8), dim3(32, 8), a, d->err_dev);
    return kc_after(d, c->i[1] ? "cross_entropy" : "nll_loss");
}

extern "C" kn_status kn__cuda_nll_backward(const kn_call *c) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    kn_tensor *out = c->out[0];
    nll_args a = nll_setup(c, c->in[0], out, NULL, out->shape[0], out->shape[1]);
    if (a.N * a.C == 0) return KN_OK;
    KC_LAUNCH(d, nll_backward_kernel, kc_blocks(a.N * a.C), KC_THREADS, a, d->err_dev);
    return kc_after(d, c->i[1] ? "cross_entropy" : "nll_loss");
}
