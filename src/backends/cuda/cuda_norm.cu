/* Batch norm and layer norm, forward and backward. Statistics accumulate in
 * double with the CPU's formulas (batch norm shifts by the channel's first
 * element, so one pass gives an accurate variance); the elementwise pass is
 * float for float32 and double otherwise.
 *
 * Batch norm is one kernel per call: a block owns a few channels, reduces
 * their statistics, finishes them (running stats, saved mean and invstd) and
 * then normalises its channels, so nothing crosses blocks. */
#include "cuda_common.cuh"

#include <math.h>

/* A 1-D parameter vector of any float dtype and stride (NULL allowed). */
typedef struct {
    char *p;
    long long s;
    int dt;
} vec;

static vec mkvec(const kn_tensor *t) {
    vec v = {NULL, 0, KN_F32};
    if (t) {
        v.p = (char *)kn__data(t);
        v.s = t->ndim ? t->stride[0] : 0;
        v.dt = t->dtype;
    }
    return v;
}
__device__ __forceinline__ double vget(vec v, long long k, double def) {
    return v.p ? kc_load(v.p + k * v.s * kc_dsize(v.dt), v.dt) : def;
}
__device__ __forceinline__ void vset(vec v, long long k, double x) {
    if (v.p) kc_store(v.p + k * v.s * kc_dsize(v.dt), v.dt, x);
}

template <typename C>
__device__ __forceinline__ C ld(const char *p, long long k, int dt) {
    if (sizeof(C) == 4) return ((const float *)p)[k];
    return (C)kc_load(p + k * kc_dsize(dt), dt);
}
template <typename C>
__device__ __forceinline__ void st(char *p, long long k, int dt, C v) {
    if (sizeof(C) == 4) ((float *)p)[k] = (float)v;
    else kc_store(p + k * kc_dsize(dt), dt, (double)v);
}

/* ---- batch norm ------------------------------------------------------------------------ */
typedef struct {
    const char *x, *g; /* contiguous [N, C, L]; g only backward */
    char *y;           /* y (forward) or grad x (backward), may be NULL backward */
    int dt;
    long long N, C, L;
    vec w, b, rm, rv;  /* forward: weight, bias, running stats */
    vec mean, invstd;  /* forward: outputs; backward: inputs */
    vec gw, gb;        /* backward outputs */
    bool training;
    double momentum, eps;
} bn_args;

#define BN_CPB 4   /* channels per block when L == 1 */
#define BN_RPB 256 /* rows per block when L == 1 (BN_CPB * BN_RPB threads) */

/* Sums (s1, s2) over the block for its channel(s). ROWS: blockDim (BN_CPB,
 * BN_RPB), a warp holds 8 rows of BN_CPB channels: shuffles fold the rows,
 * then warp 0 folds the 32 warps. Otherwise: one channel, a block sum. */
template <bool ROWS>
__device__ __forceinline__ void bn_block_sums(double *s1, double *s2) {
    __shared__ double w1[32][BN_CPB], w2[32][BN_CPB];
    if (!ROWS) {
        *s1 = kc_block_sum(*s1, &w1[0][0]);
        *s2 = kc_block_sum(*s2, &w2[0][0]);
        return;
    }
    __shared__ double fin[2 * BN_CPB];
    double a = *s1, b = *s2;
#pragma unroll
    for (int o = BN_CPB; o < 32; o <<= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, o);
        b += __shfl_xor_sync(0xffffffffu, b, o);
    }
    int tid = threadIdx.y * BN_CPB + threadIdx.x, warp = tid >> 5, lane = tid & 31;
    if (lane < BN_CPB) w1[warp][lane] = a, w2[warp][lane] = b;
    __syncthreads();
    if (tid < 2 * BN_CPB) { /* one thread per (channel, sum) folds the 32 warps */
        const double *src = tid < BN_CPB ? &w1[0][tid] : &w2[0][tid - BN_CPB];
        double p[4] = {0, 0, 0, 0};
#pragma unroll
        for (int w = 0; w < 32; w++) p[w & 3] += src[w * BN_CPB];
        fin[tid] = (p[0] + p[1]) + (p[2] + p[3]);
    }
    __syncthreads();
    *s1 = fin[threadIdx.x];
    *s2 = fin[BN_CPB + threadIdx.x];
}

/* Per channel: statistics (or their gradients), then the elementwise pass.
 * ROWS (L == 1): blockDim (BN_CPB, BN_RPB), channel c0 + x, rows y, y + RPB, ...
 * otherwise: blockDim (256, 1), one channel, elements strided by the block. */
template <typename C, bool BACKWARD, bool ROWS>
__global__ void bn_kernel(bn_args a) {
    kc_pdl_wait();
    __shared__ double k[4][BN_CPB]; /* mean, k0, k1, k2 */
    int cx = ROWS ? threadIdx.x : 0, ry = ROWS ? threadIdx.y : threadIdx.x;
    int nthreads = ROWS ? BN_RPB : blockDim.x;
    long long c = ROWS ? (long long)blockIdx.x * BN_CPB + cx : blockIdx.x;
    bool live = c < a.C;
    long long M = a.N * a.L;
    /* element m of channel c (m = n * L + l) */
#define AT(m) (ROWS ? (m) * a.C + c : ((m) / a.L * a.C + c) * a.L + (m) % a.L)
    bool stats = BACKWARD || a.training;
    /* The finishing thread's parameters, loaded now so their latency hides
     * behind the statistics pass. */
    double pw = 1, pb = 0, p1 = 0, p2 = 0;
    if (ry == 0 && live) {
        pw = vget(a.w, c, 1);
        if (BACKWARD) {
            p1 = vget(a.invstd, c, 0);
        } else {
            pb = vget(a.b, c, 0);
            p1 = vget(a.rm, c, 0);
            p2 = vget(a.rv, c, 0);
        }
    }
    if (stats) {
        double K = 0, s1 = 0, s2 = 0;
        if (live) K = BACKWARD ? vget(a.mean, c, 0) : (M ? kc_load(a.x + AT(0) * kc_dsize(a.dt), a.dt) : 0);
        if (live) {
#pragma unroll 4
            for (long long m = ry; m < M; m += nthreads) {
                double xv = (double)ld<C>(a.x, AT(m), a.dt) - K;
                if (!BACKWARD) {
                    s1 += xv;
                    s2 += xv * xv;
                } else {
                    double gv = ld<C>(a.g, AT(m), a.dt);
                    s1 += gv;
                    s2 += gv * xv;
                }
            }
        }
        bn_block_sums<ROWS>(&s1, &s2);
        if (ry == 0 && live) {
            double mean, invstd, k0, k1, k2 = 0, Md = (double)M;
            if (!BACKWARD) {
                double dm = s1 / Md, var = s2 / Md - dm * dm;
                if (var < 0) var = 0;
                mean = K + dm;
                invstd = 1 / sqrt(var + a.eps);
                /* Running stats take the unbiased variance, as in PyTorch. */
                if (a.rm.p) vset(a.rm, c, (1 - a.momentum) * p1 + a.momentum * mean);
                if (a.rv.p) vset(a.rv, c, (1 - a.momentum) * p2 + a.momentum * (M > 1 ? var * Md / (Md - 1) : NAN));
                k1 = invstd * pw;
                k0 = pb;
                vset(a.mean, c, mean);
                vset(a.invstd, c, invstd);
            } else {
                mean = K;
                invstd = p1;
                k1 = invstd * pw;
                k0 = a.training ? s1 / Md : 0;
                k2 = a.training ? invstd * invstd * s2 / Md : 0;
                vset(a.gw, c, s2 * invstd);
                vset(a.gb, c, s1);
            }
            k[0][cx] = mean, k[1][cx] = k0, k[2][cx] = k1, k[3][cx] = k2;
        }
    } else if (ry == 0 && live) { /* evaluation: the running statistics */
        double mean = p1, invstd = 1 / sqrt(p2 + a.eps);
        vset(a.mean, c, mean);
        vset(a.invstd, c, invstd);
        k[0][cx] = mean, k[1][cx] = pb, k[2][cx] = invstd * pw, k[3][cx] = 0;
    }
    __syncthreads();
    if (!live || !a.y) return;
    C mean = (C)k[0][cx], k0 = (C)k[1][cx], k1 = (C)k[2][cx], k2 = (C)k[3][cx];
#pragma unroll 4
    for (long long m = ry; m < M; m += nthreads) {
        long long i = AT(m);
        C xv = ld<C>(a.x, i, a.dt) - mean;
        if (!BACKWARD) st<C>(a.y, i, a.dt, xv * k1 + k0);
        else st<C>(a.y, i, a.dt, k1 * (ld<C>(a.g, i, a.dt) - k0 - xv * k2));
    }
#undef AT
}

template <typename C, bool BACKWARD>
static void launch_bn(kc_dev *d, const bn_args &a) {
    if (a.L == 1)
        KC_LAUNCH(d, (bn_kernel<C, BACKWARD, true>), (unsigned)((a.C + BN_CPB - 1) / BN_CPB), dim3(BN_CPB, BN_RPB), a);
    else
        KC_LAUNCH(d, (bn_kernel<C, BACKWARD, false>), (unsigned)a.C, 256, a);
}

extern "C" kn_status kn__cuda_batch_norm(const kn_call *c) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    kn_tensor *x = kc_contig(c->in[0], c->in[0]->dtype);
    if (!x) return kn_error_code();
    bn_args a;
    memset(&a, 0, sizeof a);
    a.x = (const char *)kn__data(x);
    a.y = (char *)kn__data(c->out[0]);
    a.dt = x->dtype;
    a.N = x->shape[0], a.C = x->shape[1], a.L = x->shape[2];
    a.w = mkvec(c->in[1]), a.b = mkvec(c->in[2]), a.rm = mkvec(c->in[3]), a.rv = mkvec(c->in[4]);
    a.mean = mkvec(c->out[1]), a.invstd = mkvec(c->out[2]);
    a.training = c->i[0] != 0;
    a.momentum = c->f[0], a.eps = c->f[1];
    kn_status s = KN_OK;
    if (a.C > 0) {
        if (a.dt == KN_F32) launch_bn<float, false>(d, a);
        else launch_bn<double, false>(d, a);
        s = kc_after(d, "batch_norm");
    }
    kn_release(x);
    return s;
}

extern "C" kn_status kn__cuda_batch_norm_backward(const kn_call *c) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    kn_tensor *x = kc_contig(c->in[1], c->in[1]->dtype);
    kn_tensor *g = x ? kc_contig(c->in[0], x->dtype) : NULL;
    kn_status s = g ? KN_OK : kn_error_code();
    if (s == KN_OK) {
        bn_args a;
        memset(&a, 0, sizeof a);
        a.x = (const char *)kn__data(x);
        a.g = (const char *)kn__data(g);
        a.y = c->out[0] ? (char *)kn__data(c->out[0]) : NULL;
        a.dt = x->dtype;
        a.N = x->shape[0], a.C = x->shape[1], a.L = x->shape[2];
        a.w = mkvec(c->in[2]), a.mean = mkvec(c->in[3]), a.invstd = mkvec(c->in[4]);
        a.gw = mkvec(c->out[1]), a.gb = mkvec(c->out[2]);
        a.training = c->i[0] != 0;
        if (a.C > 0) {
            if (a.dt == KN_F32) launch_bn<float, true>(d, a);
            else launch_bn<double, true>(d, a);
            s = kc_after(d, "batch_norm_backward");
        }
    }
    kn_release(x);
    kn_release(g);
    return s;
}

/* ---- layer norm: x as [R, H], contiguous --------------------------------------------------- */
typedef struct {
    const char *x, *g, *w, *b; /* w, b: contiguous [H] of x's dtype, or NULL */
    char *y;
    int dt;
    long long R, H;
    double eps;
    vec mean, invstd;
    vec gw, gb;
} ln_args;

/* blockDim (32, 8): a warp per row. */
template <typename C>
__global__ void ln_forward(ln_args a) {
    kc_pdl_wait();
    long long r = (long long)blockIdx.x * blockDim.y + threadIdx.y;
    if (r >= a.R) return;
    long long base = r * a.H;
    double sum = 0, sq = 0;
    for (long long k = threadIdx.x; k < a.H; k += 32) sum += ld<C>(a.x, base + k, a.dt);
    double m = kc_warp_sum(sum) / (double)a.H;
    for (long long k = threadIdx.x; k < a.H; k += 32) {
        double dv = ld<C>(a.x, base + k, a.dt) - m;
        sq += dv * dv;
    }
    double is = 1 / sqrt(kc_warp_sum(sq) / (double)a.H + a.eps);
    C fm = (C)m, fi = (C)is;
    for (long long k = threadIdx.x; k < a.H; k += 32) {
        C v = (ld<C>(a.x, base + k, a.dt) - fm) * fi;
        if (a.w) v *= ld<C>(a.w, k, a.dt);
        if (a.b) v += ld<C>(a.b, k, a.dt);
        st<C>(a.y, base + k, a.dt, v);
    }
    if (threadIdx.x == 0) {
        vset(a.mean, r, m);
        vset(a.invstd, r, is);
    }
}

/* grad x: gh = g * w; gx = invstd * (gh - mean(gh) - xhat * mean(gh * xhat)). */
template <typename C>
__global__ void ln_backward_rows(ln_args a) {
    kc_pdl_wait();
    long long r = (long long)blockIdx.x * blockDim.y + threadIdx.y;
    if (r >= a.R) return;
    long long base = r * a.H;
    C fm = (C)vget(a.mean, r, 0), fi = (C)vget(a.invstd, r, 0);
    double a1 = 0, a2 = 0;
    for (long long k = threadIdx.x; k < a.H; k += 32) {
        C gh = ld<C>(a.g, base + k, a.dt);
        if (a.w) gh *= ld<C>(a.w, k, a.dt);
        a1 += gh;
        a2 += (double)gh * (double)((ld<C>(a.x, base + k, a.dt) - fm) * fi);
    }
    C c1 = (C)(kc_warp_sum(a1) / (double)a.H), c2 = (C)(kc_warp_sum(a2) / (double)a.H);
    for (long long k = threadIdx.x; k < a.H; k += 32) {
        C gh = ld<C>(a.g, base + k, a.dt);
        if (a.w) gh *= ld<C>(a.w, k, a.dt);
        st<C>(a.y, base + k, a.dt, fi * (gh - c1 - (ld<C>(a.x, base + k, a.dt) - fm) * fi * c2));
    }
}

/* grad weight and bias: column sums over rows. blockDim (32, 8): column x,
 * rows y, y + 8, ... */
__global__ void ln_backward_cols(ln_args a) {
    kc_pdl_wait();
    __shared__ double sw[8][33], sb[8][33];
    long long k = (long long)blockIdx.x * 32 + threadIdx.x;
    double aw = 0, ab = 0;
    if (k < a.H)
        for (long long r = threadIdx.y; r < a.R; r += 8) {
            double m = vget(a.mean, r, 0), is = vget(a.invstd, r, 0);
            double gv = kc_load(a.g + (r * a.H + k) * kc_dsize(a.dt), a.dt);
            aw += gv * (kc_load(a.x + (r * a.H + k) * kc_dsize(a.dt), a.dt) - m) * is;
            ab += gv;
        }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y || k >= a.H) return;
    for (int j = 1; j < 8; j++) aw += sw[j][threadIdx.x], ab += sb[j][threadIdx.x];
    vset(a.gw, k, aw);
    vset(a.gb, k, ab);
}

extern "C" kn_status kn__cuda_layer_norm(const kn_call *c) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    kn_tensor *x = kc_contig(c->in[0], c->in[0]->dtype);
    kn_tensor *w = x && c->in[1] ? kc_contig(c->in[1], x->dtype) : NULL;
    kn_tensor *b = x && c->in[2] ? kc_contig(c->in[2], x->dtype) : NULL;
    kn_status s = !x || (c->in[1] && !w) || (c->in[2] && !b) ? kn_error_code() : KN_OK;
    if (s == KN_OK) {
        ln_args a;
        memset(&a, 0, sizeof a);
        a.x = (const char *)kn__data(x);
        a.w = w ? (const char *)kn__data(w) : NULL;
        a.b = b ? (const char *)kn__data(b) : NULL;
        a.y = (char *)kn__data(c->out[0]);
        a.dt = x->dtype;
        a.H = c->i[0];
        a.R = a.H ? kn__numel_shape(x->ndim, x->shape) / a.H : 0;
        a.eps = c->f[0];
        a.mean = mkvec(c->out[1]), a.invstd = mkvec(c->out[2]);
        if (a.R > 0) {
            unsigned grid = (unsigned)((a.R + 7) / 8);
            if (a.dt == KN_F32) KC_LAUNCH(d, ln_forward<float>, grid, dim3(32, 8), a);
            else KC_LAUNCH(d, ln_forward<double>, grid, dim3(32, 8), a);
            s = kc_after(d, "layer_norm");
        }
    }
    kn_release(x), kn_release(w), kn_release(b);
    return s;
}

extern "C" kn_status kn__cuda_layer_norm_backward(const kn_call *c) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    kn_tensor *x = kc_contig(c->in[1], c->in[1]->dtype);
    kn_tensor *g = x ? kc_contig(c->in[0], x->dtype) : NULL;
    kn_tensor *w = g && c->in[2] ? kc_contig(c->in[2], x->dtype) : NULL;
    kn_status s = !g || (c->in[2] && !w) ? kn_error_code() : KN_OK;
    if (s == KN_OK) {
        ln_args a;
        memset(&a, 0, sizeof a);
        a.x = (const char *)kn__data(x);
        a.g = (const char *)kn__data(g);
        a.w = w ? (const char *)kn__data(w) : NULL;
        a.dt = x->dtype;
        a.R = c->in[3]->shape[0];
        a.H = a.R ? kn__numel_shape(x->ndim, x->shape) / a.R : 0;
        a.mean = mkvec(c->in[3]), a.invstd = mkvec(c->in[4]);
        a.gw = mkvec(c->out[1]), a.gb = mkvec(c->out[2]);
        if (!a.R && (c->out[1] || c->out[2])) { /* no rows: the weight grads are zeros */
            kn_tensor *o = c->out[1] ? c->out[1] : c->out[2];
            a.H = kn__numel_shape(o->ndim, o->shape);
        }
        if (c->out[0] && a.R > 0) {
            a.y = (char *)kn__data(c->out[0]);
            unsigned grid = (unsigned)((a.R + 7) / 8);
            if (a.dt == KN_F32) KC_LAUNCH(d, ln_backward_rows<float>, grid, dim3(32, 8), a);
            else KC_LAUNCH(d, ln_backward_rows<double>, grid, dim3(32, 8), a);
            s = kc_after(d, "layer_norm_backward");
        }
        if (s == KN_OK && (c->out[1] || c->out[2]) && a.H > 0) {
            KC_LAUNCH(d, ln_backward_cols, (unsigned)((a.H + 31) / 32), dim3(32, 8), a);
            s = kc_after(d, "layer_norm_backward");
        }
    }
    kn_release(x), kn_release(g), kn_release(w);
    return s;
}
