/* Softmax / log_softmax (+ backward), the negative log-likelihood (+
 * backward) and cross-entropy on logits, fused (+ backward). float32
 * computes in float, other float dtypes in double, as the CPU kernels do;
 * bulk inputs are made contiguous first. */
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

/* x: the input (forward) or the output's grad (backward); y: the forward output. */
static kn_status softmax_run(int device, const kn_operand *out, const kn_operand *x, const kn_operand *y,
                             int64_t dim_arg, bool log, bool backward) {
    const char *name = backward ? "softmax_backward" : "softmax";
    kc_dev *d = kc_enter(device, name, false);
    if (!d) return kn_error_code();
    int nd = out->ndim, dim = nd ? (int)dim_arg : 0;
    kc_buf a, b;
    memset(&b, 0, sizeof b);
    kn_status st = kc_contig(d, x, out->dtype, &a);
    if (st == KN_OK && backward) st = kc_contig(d, y, out->dtype, &b);
    sm_args s = {(const char *)a.v.data, (const char *)b.v.data, (char *)out->data, out->dtype, 1,
                 nd ? out->shape[dim] : 1, 1, log, backward};
    for (int k = 0; k < dim; k++) s.outer *= out->shape[k];
    for (int k = dim + 1; k < nd; k++) s.inner *= out->shape[k];
    if (st == KN_OK && s.D > 0 && s.outer * s.inner > 0) {
        if (out->dtype == KN_F32) launch_softmax<float>(d, s);
        else launch_softmax<double>(d, s);
        st = kc_after(d, name);
    }
    kc_buf_free(d, &a);
    kc_buf_free(d, &b);
    return st;
}

extern "C" kn_status kn__cuda_softmax(int device, const void *args) {
    const kn_softmax_args *a = (const kn_softmax_args *)args;
    return softmax_run(device, &a->out, &a->x, NULL, a->dim, a->log != 0, false);
}

extern "C" kn_status kn__cuda_softmax_backward(int device, const void *args) {
    const kn_softmax_backward_args *a = (const kn_softmax_backward_args *)args;
    return softmax_run(device, &a->out, &a->grad, &a->y, a->dim, a->log != 0, true);
}

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

/* The class targets and weights of an NLL or cross-entropy call, into the
 * kernel's arguments (both structs name them alike). */
template <typename A>
static void set_targets(A *a, const kn_operand *tg, const kn_operand *w) {
    a->tg = (const char *)tg->data;
    a->ts = tg->ndim ? tg->stride[0] : 0;
    a->tdt = tg->dtype;
    if (kn_operand_present(w)) {
        a->w = (const char *)w->data;
        a->ws = w->ndim ? w->stride[0] : 0;
        a->wdt = w->dtype;
    }
}

static nll_args nll_setup(const kn_operand *x, const kn_operand *tg, const kn_operand *w, const kn_operand *out,
                          const kn_operand *rw, long long N, long long C, int64_t ignore, double smoothing) {
    nll_args a;
    memset(&a, 0, sizeof a);
    a.x = (const char *)x->data;
    a.xs0 = x->ndim > 0 ? x->stride[0] : 0;
    a.xs1 = x->ndim > 1 ? x->stride[1] : 0;
    a.xdt = x->dtype;
    set_targets(&a, tg, w);
    a.out = (char *)out->data;
    a.os = out->ndim ? out->stride[0] : 0;
    if (rw && kn_operand_present(rw)) {
        a.rw = (char *)rw->data;
        a.rs = rw->ndim ? rw->stride[0] : 0;
    }
    a.odt = out->dtype;
    a.N = N;
    a.C = C;
    a.ignore = ignore;
    a.smooth = smoothing;
    a.op = KC_OP_NLL;
    return a;
}

extern "C" kn_status kn__cuda_nll(int device, const void *args) {
    const kn_nll_args *n = (const kn_nll_args *)args;
    kc_dev *d = kc_enter(device, "nll", false);
    if (!d) return kn_error_code();
    const kn_operand *lp = &n->logp;
    nll_args a = nll_setup(lp, &n->target, &n->weight, &n->loss, &n->row_weight, lp->shape[0], lp->shape[1],
                           n->ignore_index, n->smoothing);
    if (a.N == 0) return KN_OK;
    KC_LAUNCH(d, nll_kernel, (unsigned)((a.N + 7) / 8), dim3(32, 8), a, d->err_dev);
    return kc_after(d, "nll_loss");
}

extern "C" kn_status kn__cuda_nll_backward(int device, const void *args) {
    const kn_nll_backward_args *n = (const kn_nll_backward_args *)args;
    kc_dev *d = kc_enter(device, "nll_backward", false);
    if (!d) return kn_error_code();
    const kn_operand *out = &n->out;
    nll_args a = nll_setup(&n->grad, &n->target, &n->weight, out, NULL, out->shape[0], out->shape[1], n->ignore_index,
                           n->smoothing);
    if (a.N * a.C == 0) return KN_OK;
    KC_LAUNCH(d, nll_backward_kernel, kc_blocks(a.N * a.C), KC_THREADS, a, d->err_dev);
    return kc_after(d, "nll_loss");
}

/* ---- cross-entropy on logits: one kernel each way ---------------------------------------------
 * Forward: a warp per row (max, log-sum-exp, the row's NLL with smoothing),
 * the rows' losses and weights summed per block, and the last block to
 * finish adds the blocks' sums and writes the reduced loss. Backward: a
 * thread per logit, d loss_n / d z_j = G_n (p_j A_n - B_nj) (see
 * src/backends/cpu/cpu_softmax.c), from the saved log-sum-exp. */
typedef struct {
    const char *z; /* logits [N, C], contiguous */
    int dt;
    long long N, C;
    const char *tg;
    long long ts;
    int tdt;
    const char *w; /* [C] or NULL */
    long long ws;
    int wdt;
    char *loss, *lse, *wsum; /* forward outputs; backward: lse and wsum are inputs */
    long long ls;            /* loss stride (reduction none) */
    const char *g;           /* backward: the loss's gradient (0-d, or [N] with stride gs) */
    long long gs;
    int gdt;
    char *out;               /* backward: [N, C] contiguous */
    long long ignore;
    double smooth;
    int red;
    double *partial; /* [blocks][2] */
    unsigned int *ticket;
} ce_args;

__device__ __forceinline__ double ce_w(const ce_args &a, long long k) {
    return a.w ? kc_load(a.w + k * a.ws * kc_dsize(a.wdt), a.wdt) : 1.0;
}

__device__ void ce_finish(const ce_args &a, double total, double wsum) {
    if (a.red != KN_REDUCTION_NONE) kc_store(a.loss, a.dt, a.red == KN_REDUCTION_SUM ? total : total / wsum);
    kc_store(a.wsum, a.dt, wsum);
}

/* blockDim 256: a warp per row. */
template <typename C>
__global__ void ce_forward(const __grid_constant__ ce_args a, long long *err) {
    kc_pdl_wait();
    typedef elt<C> E;
    __shared__ double sl[8], sw[8];
    __shared__ bool last;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    double tl = 0, tw = 0;
    for (long long r = (long long)blockIdx.x * 8 + warp; r < a.N; r += (long long)gridDim.x * 8) {
        long long base = r * a.C;
        C mx = -INFINITY, se = 0;
        for (long long j = lane; j < a.C; j += 32) mx = nanmax(mx, E::ld(a.z, base + j, a.dt));
        mx = warp_max(mx);
        for (long long j = lane; j < a.C; j += 32) se += kexp(E::ld(a.z, base + j, a.dt) - mx);
        C lse = mx + klog(kc_warp_sum(se));
        long long t = kc_load_i(a.tg + r * a.ts * kc_dsize(a.tdt), a.tdt);
        bool valid = t != a.ignore && t >= 0 && t < a.C;
        if (t != a.ignore && !valid && lane == 0) kc_fault(err, KC_FAULT_TARGET, KC_OP_CROSS_ENTROPY, t, a.C, 1);
        double l = 0, rw = 0;
        if (valid) {
            double acc = 0;
            if (a.smooth != 0) {
                for (long long j = lane; j < a.C; j += 32) acc += ce_w(a, j) * (double)(E::ld(a.z, base + j, a.dt) - lse);
                acc = kc_warp_sum(acc);
            }
            rw = ce_w(a, t);
            l = -(1 - a.smooth) * rw * (double)(E::ld(a.z, base + t, a.dt) - lse) - a.smooth / (double)a.C * acc;
        }
        if (lane == 0) {
            if (a.red == KN_REDUCTION_NONE) kc_store(a.loss + r * a.ls * kc_dsize(a.dt), a.dt, l);
            E::st(a.lse, r, a.dt, lse);
            tl += l;
            tw += rw;
        }
    }
    if (lane == 0) sl[warp] = tl, sw[warp] = tw;
    __syncthreads();
    if (warp == 0) {
        tl = kc_warp_sum(lane < 8 ? sl[lane] : 0.0);
        tw = kc_warp_sum(lane < 8 ? sw[lane] : 0.0);
    }
    if (gridDim.x == 1) {
        if (threadIdx.x == 0) ce_finish(a, tl, tw);
        return;
    }
    if (threadIdx.x == 0) a.partial[2 * blockIdx.x] = tl, a.partial[2 * blockIdx.x + 1] = tw;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(a.ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last || warp) return;
    __threadfence();
    /* lane l folds blocks l, l + 32, ...: loss sums at even, weights at odd places */
    long long mine = ((long long)gridDim.x - lane + 31) / 32;
    double x = kc_warp_sum(kc_sum_strided(a.partial + 2 * lane, 64, mine));
    double y = kc_warp_sum(kc_sum_strided(a.partial + 2 * lane + 1, 64, mine));
    if (lane == 0) {
        ce_finish(a, x, y);
        *a.ticket = 0;
    }
}

template <typename C>
__global__ void ce_backward(const __grid_constant__ ce_args a) {
    kc_pdl_wait();
    typedef elt<C> E;
    __shared__ double part[32];
    double wall = (double)a.C; /* the sum of the class weights */
    if (a.smooth != 0 && a.w) {
        double v = 0;
        for (long long k = threadIdx.x; k < a.C; k += blockDim.x) v += ce_w(a, k);
        wall = kc_block_sum(v, part);
    }
    double G = 0;
    if (a.red != KN_REDUCTION_NONE) {
        G = kc_load(a.g, a.gdt);
        if (a.red == KN_REDUCTION_MEAN) G /= kc_load(a.wsum, a.dt);
    }
    double sc = a.smooth / (double)a.C;
    KC_LOOP(i, a.N * a.C) {
        long long n = i / a.C, j = i - n * a.C;
        long long t = kc_load_i(a.tg + n * a.ts * kc_dsize(a.tdt), a.tdt);
        if (t == a.ignore || t < 0 || t >= a.C) { /* ignored (a bad target was reported forward) */
            E::st(a.out, i, a.dt, C(0));
            continue;
        }
        double Gn = a.red == KN_REDUCTION_NONE ? kc_load(a.g + n * a.gs * kc_dsize(a.gdt), a.gdt) : G;
        double p = (double)kexp(E::ld(a.z, i, a.dt) - E::ld(a.lse, n, a.dt)), wt = ce_w(a, t);
        double A = (1 - a.smooth) * wt + sc * wall, B = (j == t ? (1 - a.smooth) * wt : 0.0) + sc * ce_w(a, j);
        E::st(a.out, i, a.dt, (C)(Gn * (p * A - B)));
    }
}

static ce_args ce_setup(const kn_operand *z, const kn_operand *tg, const kn_operand *w, int64_t ignore,
                        int64_t reduction, double smoothing) {
    ce_args a;
    memset(&a, 0, sizeof a);
    a.z = (const char *)z->data;
    a.dt = z->dtype;
    a.N = z->shape[0];
    a.C = z->shape[1];
    set_targets(&a, tg, w);
    a.ignore = ignore;
    a.red = (int)reduction;
    a.smooth = smoothing;
    return a;
}

extern "C" kn_status kn__cuda_cross_entropy(int device, const void *args) {
    const kn_cross_entropy_args *e = (const kn_cross_entropy_args *)args;
    kc_dev *d = kc_enter(device, "cross_entropy", false);
    if (!d) return kn_error_code();
    ce_args a = ce_setup(&e->logits, &e->target, &e->weight, e->ignore_index, e->reduction, e->smoothing);
    a.loss = (char *)e->loss.data;
    a.ls = e->loss.ndim ? e->loss.stride[0] : 0;
    a.lse = (char *)e->lse.data;
    a.wsum = (char *)e->weight_sum.data;
    a.ticket = d->tickets;
    long long blocks = (a.N + 7) / 8;
    if (blocks < 1) blocks = 1;
    if (blocks > KC_TICKETS) blocks = KC_TICKETS;
    size_t nbytes = blocks > 1 ? (size_t)(2 * blocks) * sizeof(double) : 0;
    if (nbytes && !(a.partial = (double *)kc_alloc(d->index, nbytes))) return kn_error_code();
    if (a.dt == KN_F32) KC_LAUNCH(d, ce_forward<float>, (unsigned)blocks, 256, a, d->err_dev);
    else KC_LAUNCH(d, ce_forward<double>, (unsigned)blocks, 256, a, d->err_dev);
    kc_free(d->index, a.partial, nbytes); /* stream order keeps it alive for the kernel queued */
    return kc_after(d, "cross_entropy");
}

extern "C" kn_status kn__cuda_cross_entropy_backward(int device, const void *args) {
    const kn_cross_entropy_backward_args *e = (const kn_cross_entropy_backward_args *)args;
    kc_dev *d = kc_enter(device, "cross_entropy_backward", false);
    if (!d) return kn_error_code();
    ce_args a = ce_setup(&e->logits, &e->target, &e->weight, e->ignore_index, e->reduction, e->smoothing);
    if (a.N * a.C == 0) return KN_OK;
    /* The saved log-sum-exp is read as a contiguous [N]. */
    kc_buf lse;
    kn_status s = kc_contig(d, &e->lse, e->logits.dtype, &lse);
    if (s != KN_OK) return s;
    a.g = (const char *)e->grad.data;
    a.gs = e->grad.ndim ? e->grad.stride[0] : 0;
    a.gdt = e->grad.dtype;
    a.lse = (char *)lse.v.data;
    a.wsum = (char *)e->weight_sum.data;
    a.out = (char *)e->out.data;
    if (a.dt == KN_F32) KC_LAUNCH(d, ce_backward<float>, kc_blocks(a.N * a.C), KC_THREADS, a);
    else KC_LAUNCH(d, ce_backward<double>, kc_blocks(a.N * a.C), KC_THREADS, a);
    kc_buf_free(d, &lse);
    return kc_after(d, "cross_entropy");
}
