/* Batch norm and layer norm, forward and backward. Statistics combine in
 * double with the CPU's formulas (batch norm shifts by the channel's first
 * element, so one pass gives an accurate variance); per-thread partial sums
 * and the elementwise pass are float for float32 and double otherwise.
 *
 * Batch norm is one kernel per call: a block owns a few channels, reduces
 * their statistics, finishes them (running stats, saved mean and invstd) and
 * then normalises its channels, so nothing crosses blocks. */
#include "cuda_common.cuh"

#include <limits.h>
#include <math.h>

/* A 1-D parameter vector of any float dtype and stride (NULL allowed). */
typedef struct {
    char *p;
    long long s;
    int dt;
} vec;

static vec mkvec(const kn_operand *t) {
    vec v = {NULL, 0, KN_F32};
    if (kn_operand_present(t)) {
        v.p = (char *)t->data;
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
/* The same for a vector known to hold C (float32 for float, float64 for
 * double): plain loads, which the compiler can issue together (vget's dtype
 * switch makes a chain of dependent branches, one memory latency each). */
template <typename C>
__device__ __forceinline__ double tget(vec v, long long k, double def) {
    return v.p ? (double)((const C *)v.p)[k * v.s] : def;
}
template <typename C>
__device__ __forceinline__ void tset(vec v, long long k, double x) {
    if (v.p) ((C *)v.p)[k * v.s] = (C)x;
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

/* ---- batch norm ------------------------------------------------------------------------
 * One kernel per call each way. A block owns BN_CPB channels (L == 1: x is
 * [N, C], a warp reads 8 rows of 4 channels) or one channel (L > 1). Each
 * thread keeps its elements in registers when they fit (N <= BN_RPB *
 * BN_CACHE), so x and the gradient are read once; the per-channel sums fold
 * in shuffles, then one warp per channel, whose lane 0 (the finisher)
 * finishes the statistics. Fused neighbours (KN_OP_BATCH_NORM's contract):
 * dropout on y forward and on the incoming gradient backward (the mask
 * regenerated from Philox), the ReLU before the norm (backward: grad x is
 * zero where x <= 0) and the sums of grad x (a Linear's bias gradient). */
typedef struct {
    const char *x, *g; /* contiguous [N, C, L]; g only backward */
    char *y;           /* y (forward) or grad x (backward), may be NULL backward */
    int dt;
    long long N, C, L;
    vec w, b, rm, rv;  /* forward: weight, bias, running stats */
    vec mean, invstd;  /* forward: outputs; backward: inputs */
    vec gw, gb, gsum;  /* backward outputs */
    char *count;       /* forward: the batch count (integer 0-d) or NULL */
    int count_dt;
    bool training, relu;
    bool typed;        /* every vector above holds x's dtype, float32 or float64 */
    double momentum, eps, inv_m; /* inv_m: 1 / (N L) */
    /* dropout after the norm: p > 0 */
    double p, scale;
    uint32_t thresh;
    unsigned long long seed, offset;
    const unsigned long long *shift;
} bn_args;

#define BN_CPB 4    /* channels per block when L == 1 */
#define BN_RPB 256  /* rows per block when L == 1 (BN_CPB * BN_RPB threads) */
#define BN_CACHE 8  /* elements a thread keeps in registers */
#define BN_THREADS 256 /* threads per block (one channel) when L > 1 */

/* A vector's element k, through tget when the vectors are typed. */
template <typename C>
__device__ __forceinline__ double pget(const bn_args &a, vec v, long long k, double def) {
    return a.typed ? tget<C>(v, k, def) : vget(v, k, def);
}
template <typename C>
__device__ __forceinline__ void pset(const bn_args &a, vec v, long long k, double x) {
    if (a.typed) tset<C>(v, k, x);
    else vset(v, k, x);
}

/* Element m of channel ch (m = n * L + l): its index in the contiguous [N, C, L]. */
template <bool ROWS>
__device__ __forceinline__ long long bn_at(const bn_args &a, long long ch, long long m) {
    return ROWS ? m * a.C + ch : (m / a.L * a.C + ch) * a.L + m % a.L;
}

/* Where a thread of a batch-norm block sits: its channel c (lane cx of the
 * block's channels) and first row ry, stepping nt rows; M elements a
 * channel. The finisher, lane 0 of warp k (channel k of the block, L == 1)
 * or of warp 0 (L > 1), finishes channel cf's statistics. */
struct bn_place {
    int cx, ry, nt, tid, fch;
    long long c, cf, M;
    bool live, finisher;
};
template <bool ROWS>
__device__ __forceinline__ bn_place bn_place_of(const bn_args &a) {
    bn_place p;
    p.cx = ROWS ? threadIdx.x : 0;
    p.ry = ROWS ? threadIdx.y : threadIdx.x;
    p.nt = ROWS ? BN_RPB : blockDim.x;
    p.tid = threadIdx.y * blockDim.x + threadIdx.x;
    int warp = p.tid >> 5;
    long long c0 = ROWS ? (long long)blockIdx.x * BN_CPB : blockIdx.x;
    p.c = c0 + p.cx;
    p.M = a.N * a.L;
    p.live = p.c < a.C;
    p.fch = ROWS ? warp : 0;
    p.cf = c0 + p.fch;
    p.finisher = (p.tid & 31) == 0 && (ROWS ? warp < BN_CPB : warp == 0) && p.cf < a.C;
    return p;
}

/* Folds (v1, v2) over the threads of each channel. The result is in the
 * channel's finisher: lane 0 of warp k (channel k of the block, L == 1) or of
 * warp 0 (L > 1). Every thread must call it. */
template <bool ROWS>
__device__ __forceinline__ void bn_fold(double *v1, double *v2) {
    __shared__ double r1[32][BN_CPB], r2[32][BN_CPB];
    int tid = threadIdx.y * blockDim.x + threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int nw = (blockDim.x * blockDim.y + 31) >> 5;
    double a = *v1, b = *v2;
    if (ROWS) { /* lanes l, l + 4, ... hold channel l % 4 */
#pragma unroll
        for (int o = BN_CPB; o < 32; o <<= 1) {
            a += __shfl_xor_sync(0xffffffffu, a, o);
            b += __shfl_xor_sync(0xffffffffu, b, o);
        }
        if (lane < BN_CPB) r1[warp][lane] = a, r2[warp][lane] = b;
    } else {
        a = kc_warp_sum(a);
        b = kc_warp_sum(b);
        if (lane == 0) r1[warp][0] = a, r2[warp][0] = b;
    }
    __syncthreads();
    bool fin = ROWS ? warp < BN_CPB : warp == 0;
    if (fin) {
        int ch = ROWS ? warp : 0;
        a = kc_warp_sum(lane < nw ? r1[lane][ch] : 0.0);
        b = kc_warp_sum(lane < nw ? r2[lane][ch] : 0.0);
    }
    __syncthreads(); /* r1, r2 free for the next fold */
    *v1 = a, *v2 = b;
}

/* v rounded to dtype dt, where a fused step stands for an op whose output
 * the unfused sequence stores (float32 computes in float already). */
template <typename C>
__device__ __forceinline__ C bn_round(C v, int dt) {
    if (sizeof(C) == 4 || dt == KN_F64) return v;
    uint16_t h;
    kc_store(&h, dt, (double)v); /* the half types, the only others here */
    return (C)kc_load(&h, dt);
}

/* The incoming element of the gradient: through the dropout after y, if any. */
template <typename C>
__device__ __forceinline__ C bn_grad_in(const bn_args &a, long long i, unsigned long long off) {
    C g = ld<C>(a.g, i, a.dt);
    if (a.p > 0) g = bn_round(kc_keep(a.seed, off, i, a.thresh) ? g * (C)a.scale : C(0), a.dt);
    return g;
}

/* Dropout decisions for a thread's CACHE element slots (bit j: slot j,
 * row ry + j * nt, kept). With 4 channels per block and C % 4 == 0 the 4
 * elements of a row in the block share one Philox counter, so the 4 lanes
 * of a row group each compute a quarter of the group's blocks and trade the
 * words by shuffles (4x less arithmetic than a block per element; every
 * lane of the warp takes part). Otherwise a block per element. */
template <bool ROWS, int CACHE>
__device__ __forceinline__ unsigned bn_keep_slots(const bn_args &a, unsigned long long off, long long c, int ry, int nt) {
    constexpr int Q = CACHE >= 4 ? CACHE / 4 : 1; /* blocks a lane computes */
    unsigned keep = 0;
    if (ROWS && CACHE >= 4 && CACHE % 4 == 0 && a.C % 4 == 0) {
        int lane = (threadIdx.y * blockDim.x + threadIdx.x) & 31, base = lane & ~3, tx = lane & 3;
        uint32_t w[Q][4];
#pragma unroll
        for (int q = 0; q < Q; q++) { /* this lane's blocks: slots tx * Q + q */
            long long m = ry + (long long)(tx * Q + q) * nt;
            philox_block(a.seed, off + (unsigned long long)((m * a.C + c - tx) >> 2), w[q]);
        }
#pragma unroll
        for (int j = 0; j < CACHE; j++) {
            int owner = base + j / Q, q = j % Q;
            uint32_t v0 = __shfl_sync(0xffffffffu, w[q][0], owner), v1 = __shfl_sync(0xffffffffu, w[q][1], owner);
            uint32_t v2 = __shfl_sync(0xffffffffu, w[q][2], owner), v3 = __shfl_sync(0xffffffffu, w[q][3], owner);
            uint32_t x = tx == 0 ? v0 : tx == 1 ? v1 : tx == 2 ? v2 : v3;
            if ((x >> 8) >= a.thresh) keep |= 1u << j;
        }
        return keep;
    }
#pragma unroll
    for (int j = 0; j < CACHE; j++) {
        long long m = ry + (long long)j * nt;
        if (c < a.C && m < a.N * a.L && kc_keep(a.seed, off, bn_at<ROWS>(a, c, m), a.thresh)) keep |= 1u << j;
    }
    return keep;
}

template <typename C, bool ROWS, int CACHE>
__global__ void __launch_bounds__(1024) bn_forward(const __grid_constant__ bn_args a) {
    kc_pdl_wait();
    __shared__ double kk[3][BN_CPB]; /* per channel: mean, k0, k1 of y = (x - mean) k1 + k0 */
    const bn_place P = bn_place_of<ROWS>(a);
    const int cx = P.cx, ry = P.ry, nt = P.nt, tid = P.tid, fch = P.fch;
    const long long c = P.c, cf = P.cf, M = P.M;
    const bool live = P.live, finisher = P.finisher;
    /* The finisher's parameters, loaded early to hide their latency. */
    double pw = 1, pb = 0, prm = 0, prv = 0, kf = 0;
    if (finisher) {
        if (a.typed)
            pw = tget<C>(a.w, cf, 1), pb = tget<C>(a.b, cf, 0), prm = tget<C>(a.rm, cf, 0), prv = tget<C>(a.rv, cf, 0);
        else
            pw = vget(a.w, cf, 1), pb = vget(a.b, cf, 0), prm = vget(a.rm, cf, 0), prv = vget(a.rv, cf, 0);
        if (a.training && M) kf = ld<C>(a.x, bn_at<ROWS>(a, cf, 0), a.dt);
    }
    /* With CACHE (ROWS only), element j of this thread is x[i0 + j * step],
     * an int (launch_bn checks). */
    int i0 = CACHE ? ry * (int)a.C + (int)c : 0, step = CACHE ? nt * (int)a.C : 0;
    /* Statistics shifted by the channel's first element: one accurate pass. */
    C K = live && M ? ld<C>(a.x, bn_at<ROWS>(a, c, 0), a.dt) : C(0), s1 = 0, s2 = 0;
    C xs[CACHE ? CACHE : 1];
    if (CACHE) {
#pragma unroll
        for (int j = 0; j < CACHE; j++) xs[j] = live && ry + j * nt < M ? ld<C>(a.x, i0 + j * step, a.dt) : K;
        if (a.training)
#pragma unroll
            for (int j = 0; j < CACHE; j++) {
                C d = xs[j] - K;
                s1 += d;
                s2 += d * d;
            }
    } else if (a.training && live) {
        for (long long m = ry; m < M; m += nt) {
            C d = ld<C>(a.x, bn_at<ROWS>(a, c, m), a.dt) - K;
            s1 += d;
            s2 += d * d;
        }
    }
    double d1 = s1, d2 = s2;
    if (a.training) bn_fold<ROWS>(&d1, &d2);
    if (finisher) {
        double mean, invstd;
        if (a.training) {
            double Md = (double)M, dm = d1 * a.inv_m, var = d2 * a.inv_m - dm * dm;
            if (var < 0) var = 0;
            mean = kf + dm;
            invstd = rsqrt(var + a.eps);
            /* Running stats take the unbiased variance, as in PyTorch. */
            if (a.rm.p) pset<C>(a, a.rm, cf, (1 - a.momentum) * prm + a.momentum * mean);
            if (a.rv.p) pset<C>(a, a.rv, cf, (1 - a.momentum) * prv + a.momentum * (M > 1 ? var * Md / (Md - 1) : NAN));
        } else { /* evaluation: the running statistics */
            mean = prm;
            invstd = 1 / sqrt(prv + a.eps);
        }
        pset<C>(a, a.mean, cf, mean);
        pset<C>(a, a.invstd, cf, invstd);
        kk[0][fch] = mean, kk[1][fch] = pb, kk[2][fch] = invstd * pw;
    }
    /* The batch count: an atomic add needs no answer, so nothing waits on it. */
    if (a.count && a.training && blockIdx.x == 0 && tid == 0) {
        if (a.count_dt == KN_I64) atomicAdd((unsigned long long *)a.count, 1ull);
        else if (a.count_dt == KN_I32) atomicAdd((int *)a.count, 1);
        else kc_store_i(a.count, a.count_dt, kc_load_i(a.count, a.count_dt) + 1);
    }
    unsigned long long off = a.offset + (a.shift ? *a.shift : 0ull);
    unsigned keep = CACHE && a.p > 0 ? bn_keep_slots<ROWS, CACHE>(a, off, c, ry, nt) : ~0u; /* all lanes */
    __syncthreads();
    if (!live || !a.y) return;
    C mean = (C)kk[0][cx], k0 = (C)kk[1][cx], k1 = (C)kk[2][cx], scale = (C)a.scale;
    if (CACHE) {
#pragma unroll
        for (int j = 0; j < CACHE; j++)
            if (ry + j * nt < M) {
                C v = (xs[j] - mean) * k1 + k0;
                if (a.p > 0) v = (keep >> j & 1) ? bn_round(v, a.dt) * scale : C(0);
                st<C>(a.y, i0 + j * step, a.dt, v);
            }
    } else {
        for (long long m = ry; m < M; m += nt) {
            long long i = bn_at<ROWS>(a, c, m);
            C v = (ld<C>(a.x, i, a.dt) - mean) * k1 + k0;
            if (a.p > 0) v = kc_keep(a.seed, off, i, a.thresh) ? bn_round(v, a.dt) * scale : C(0);
            st<C>(a.y, i, a.dt, v);
        }
    }
}

template <typename C, bool ROWS, int CACHE>
__global__ void __launch_bounds__(1024) bn_backward(const __grid_constant__ bn_args a) {
    kc_pdl_wait();
    __shared__ double kk[3][BN_CPB]; /* per channel: k0, k1, k2 of gx = k1 (g - k0 - (x - mean) k2) */
    const bn_place P = bn_place_of<ROWS>(a);
    const int cx = P.cx, ry = P.ry, nt = P.nt, fch = P.fch;
    const long long c = P.c, cf = P.cf, M = P.M;
    const bool live = P.live, finisher = P.finisher;
    double pw = 1, pis = 0;
    if (finisher) pw = pget<C>(a, a.w, cf, 1), pis = pget<C>(a, a.invstd, cf, 0);
    unsigned long long off = a.offset + (a.shift ? *a.shift : 0ull);
    C mean = live ? (C)pget<C>(a, a.mean, c, 0) : C(0), s1 = 0, s2 = 0;
    C xs[CACHE ? CACHE : 1], gs[CACHE ? CACHE : 1];
    /* As forward: with CACHE, element j is at i0 + j * step. */
    int i0 = CACHE ? ry * (int)a.C + (int)c : 0, step = CACHE ? nt * (int)a.C : 0;
    if (CACHE) {
        unsigned keep = a.p > 0 ? bn_keep_slots<ROWS, CACHE>(a, off, c, ry, nt) : ~0u; /* all lanes */
#pragma unroll
        for (int j = 0; j < CACHE; j++) {
            bool in = live && ry + j * nt < M;
            int i = in ? i0 + j * step : 0;
            xs[j] = in ? ld<C>(a.x, i, a.dt) : mean;
            C gv = in ? ld<C>(a.g, i, a.dt) : C(0);
            if (a.p > 0) gv = bn_round((keep >> j & 1) ? gv * (C)a.scale : C(0), a.dt);
            gs[j] = gv;
        }
#pragma unroll
        for (int j = 0; j < CACHE; j++) {
            s1 += gs[j];
            s2 += gs[j] * (xs[j] - mean);
        }
    } else if (live) {
        for (long long m = ry; m < M; m += nt) {
            long long i = bn_at<ROWS>(a, c, m);
            C gv = bn_grad_in<C>(a, i, off);
            s1 += gv;
            s2 += gv * (ld<C>(a.x, i, a.dt) - mean);
        }
    }
    double d1 = s1, d2 = s2;
    bn_fold<ROWS>(&d1, &d2);
    if (finisher) {
        kk[0][fch] = a.training ? d1 * a.inv_m : 0;
        kk[1][fch] = pis * pw;
        kk[2][fch] = a.training ? pis * pis * d2 * a.inv_m : 0;
        pset<C>(a, a.gw, cf, d2 * pis);
        pset<C>(a, a.gb, cf, d1);
    }
    __syncthreads();
    C k0 = (C)kk[0][cx], k1 = (C)kk[1][cx], k2 = (C)kk[2][cx], s3 = 0;
    if (live && a.y) {
        if (CACHE) {
#pragma unroll
            for (int j = 0; j < CACHE; j++)
                if (ry + j * nt < M) {
                    C v = bn_round(k1 * (gs[j] - k0 - (xs[j] - mean) * k2), a.dt);
                    if (a.relu && !(xs[j] > C(0))) v = C(0);
                    st<C>(a.y, i0 + j * step, a.dt, v);
                    s3 += v;
                }
        } else {
            for (long long m = ry; m < M; m += nt) {
                long long i = bn_at<ROWS>(a, c, m);
                C xv = ld<C>(a.x, i, a.dt), gv = bn_grad_in<C>(a, i, off);
                C v = bn_round(k1 * (gv - k0 - (xv - mean) * k2), a.dt);
                if (a.relu && !(xv > C(0))) v = C(0);
                st<C>(a.y, i, a.dt, v);
                s3 += v;
            }
        }
    }
    if (!a.gsum.p) return; /* uniform: every thread returns */
    double e1 = s3, e2 = 0;
    bn_fold<ROWS>(&e1, &e2);
    if (finisher) pset<C>(a, a.gsum, cf, e1);
}

template <typename C, bool BACKWARD>
static void launch_bn(kc_dev *d, const bn_args &a) {
    if (a.L == 1) {
        unsigned grid = (unsigned)((a.C + BN_CPB - 1) / BN_CPB);
        dim3 block(BN_CPB, BN_RPB);
        /* Cached: every index a thread forms, below BN_RPB * BN_CACHE * (C + BN_CPB), is an int. */
        if (a.N <= (long long)BN_RPB * BN_CACHE && (long long)BN_RPB * BN_CACHE * (a.C + BN_CPB) <= INT_MAX) {
            if (BACKWARD) KC_LAUNCH(d, (bn_backward<C, true, BN_CACHE>), grid, block, a);
            else KC_LAUNCH(d, (bn_forward<C, true, BN_CACHE>), grid, block, a);
        } else {
            if (BACKWARD) KC_LAUNCH(d, (bn_backward<C, true, 0>), grid, block, a);
            else KC_LAUNCH(d, (bn_forward<C, true, 0>), grid, block, a);
        }
    } else {
        if (BACKWARD) KC_LAUNCH(d, (bn_backward<C, false, 0>), (unsigned)a.C, BN_THREADS, a);
        else KC_LAUNCH(d, (bn_forward<C, false, 0>), (unsigned)a.C, BN_THREADS, a);
    }
}

/* Whether x's dtype is float32 or float64 and every vector in vs holds it
 * (or is absent): the kernels then load and store them directly. */
static bool bn_typed(int dt, const vec *vs, int n) {
    if (dt != KN_F32 && dt != KN_F64) return false;
    for (int k = 0; k < n; k++)
        if (vs[k].p && vs[k].dt != dt) return false;
    return true;
}

/* [N, C, L] of x (L: the product of the dims after C, 1 for 2-D input). */
static void bn_dims(const kn_operand *x, bn_args *a) {
    int64_t n, c, l;
    kn_geom_split(x, 1, &n, &c, &l);
    a->N = n, a->C = c, a->L = l;
}

/* Dropout parameters of a call, with the graph's device-side shift when
 * capturing. */
static kn_status bn_dropout(kc_dev *d, double p, int64_t seed, int64_t offset, long long n, bn_args *a) {
    a->p = p;
    if (!(a->p > 0)) {
        a->p = 0;
        return KN_OK;
    }
    a->scale = 1 / (1 - a->p);
    a->thresh = (uint32_t)ceil(a->p * 16777216.0);
    a->seed = (unsigned long long)seed;
    a->offset = (unsigned long long)offset;
    return kc_capture_shift(d, a->seed, a->offset, n, 4, &a->shift);
}

extern "C" kn_status kn__cuda_batch_norm(int device, const void *args) {
    const kn_batch_norm_args *b = (const kn_batch_norm_args *)args;
    kc_dev *d = kc_enter(device, "batch_norm", false);
    if (!d) return kn_error_code();
    kc_buf x;
    kn_status s = kc_contig(d, &b->x, b->x.dtype, &x);
    if (s != KN_OK) return s;
    bn_args a;
    memset(&a, 0, sizeof a);
    a.x = (const char *)x.v.data;
    a.y = (char *)b->y.data;
    a.dt = x.v.dtype;
    bn_dims(&x.v, &a);
    a.w = mkvec(&b->weight), a.b = mkvec(&b->bias), a.rm = mkvec(&b->running_mean), a.rv = mkvec(&b->running_var);
    if (kn_operand_present(&b->count)) a.count = (char *)b->count.data, a.count_dt = b->count.dtype;
    a.mean = mkvec(&b->mean), a.invstd = mkvec(&b->invstd);
    a.training = b->training != 0;
    a.momentum = b->momentum, a.eps = b->eps;
    a.inv_m = a.N * a.L > 0 ? 1.0 / (double)(a.N * a.L) : 0;
    vec vs[6] = {a.w, a.b, a.rm, a.rv, a.mean, a.invstd};
    a.typed = bn_typed(a.dt, vs, 6);
    s = bn_dropout(d, b->p, b->seed, b->offset, a.N * a.C * a.L, &a);
    if (s == KN_OK && a.C > 0) {
        if (a.dt == KN_F32) launch_bn<float, false>(d, a);
        else launch_bn<double, false>(d, a);
        s = kc_after(d, "batch_norm");
    }
    kc_buf_free(d, &x);
    return s;
}

extern "C" kn_status kn__cuda_batch_norm_backward(int device, const void *args) {
    const kn_batch_norm_backward_args *b = (const kn_batch_norm_backward_args *)args;
    kc_dev *d = kc_enter(device, "batch_norm_backward", false);
    if (!d) return kn_error_code();
    kc_buf x, g;
    memset(&g, 0, sizeof g);
    kn_status s = kc_contig(d, &b->x, b->x.dtype, &x);
    if (s == KN_OK) s = kc_contig(d, &b->grad, x.v.dtype, &g);
    if (s == KN_OK) {
        bn_args a;
        memset(&a, 0, sizeof a);
        a.x = (const char *)x.v.data;
        a.g = (const char *)g.v.data;
        a.y = (char *)b->grad_x.data; /* NULL: no grad x */
        a.dt = x.v.dtype;
        bn_dims(&x.v, &a);
        a.w = mkvec(&b->weight), a.mean = mkvec(&b->mean), a.invstd = mkvec(&b->invstd);
        a.gw = mkvec(&b->grad_weight), a.gb = mkvec(&b->grad_bias);
        if (a.y) a.gsum = mkvec(&b->grad_pre_bias);
        a.training = b->training != 0;
        a.relu = b->relu != 0;
        a.inv_m = a.N * a.L > 0 ? 1.0 / (double)(a.N * a.L) : 0;
        vec vs[6] = {a.w, a.mean, a.invstd, a.gw, a.gb, a.gsum};
        a.typed = bn_typed(a.dt, vs, 6);
        s = bn_dropout(d, b->p, b->seed, b->offset, a.N * a.C * a.L, &a);
        if (s == KN_OK && a.C > 0) {
            if (a.dt == KN_F32) launch_bn<float, true>(d, a);
            else launch_bn<double, true>(d, a);
            s = kc_after(d, "batch_norm_backward");
        }
    }
    kc_buf_free(d, &x);
    kc_buf_free(d, &g);
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

extern "C" kn_status kn__cuda_layer_norm(int device, const void *args) {
    const kn_layer_norm_args *l = (const kn_layer_norm_args *)args;
    kc_dev *d = kc_enter(device, "layer_norm", false);
    if (!d) return kn_error_code();
    kc_buf x, w, b;
    memset(&w, 0, sizeof w);
    memset(&b, 0, sizeof b);
    kn_status s = kc_contig(d, &l->x, l->x.dtype, &x);
    if (s == KN_OK) s = kc_contig(d, &l->weight, x.v.dtype, &w);
    if (s == KN_OK) s = kc_contig(d, &l->bias, x.v.dtype, &b);
    if (s == KN_OK) {
        ln_args a;
        memset(&a, 0, sizeof a);
        a.x = (const char *)x.v.data;
        a.w = (const char *)w.v.data; /* NULL when absent */
        a.b = (const char *)b.v.data;
        a.y = (char *)l->y.data;
        a.dt = x.v.dtype;
        a.H = l->n;
        a.R = a.H ? kn_operand_numel(&x.v) / a.H : 0;
        a.eps = l->eps;
        a.mean = mkvec(&l->mean), a.invstd = mkvec(&l->invstd);
        if (a.R > 0) {
            unsigned grid = (unsigned)((a.R + 7) / 8);
            if (a.dt == KN_F32) KC_LAUNCH(d, ln_forward<float>, grid, dim3(32, 8), a);
            else KC_LAUNCH(d, ln_forward<double>, grid, dim3(32, 8), a);
            s = kc_after(d, "layer_norm");
        }
    }
    kc_buf_free(d, &x), kc_buf_free(d, &w), kc_buf_free(d, &b);
    return s;
}

extern "C" kn_status kn__cuda_layer_norm_backward(int device, const void *args) {
    const kn_layer_norm_backward_args *l = (const kn_layer_norm_backward_args *)args;
    kc_dev *d = kc_enter(device, "layer_norm_backward", false);
    if (!d) return kn_error_code();
    kc_buf x, g, w;
    memset(&g, 0, sizeof g);
    memset(&w, 0, sizeof w);
    kn_status s = kc_contig(d, &l->x, l->x.dtype, &x);
    if (s == KN_OK) s = kc_contig(d, &l->grad, x.v.dtype, &g);
    if (s == KN_OK) s = kc_contig(d, &l->weight, x.v.dtype, &w);
    if (s == KN_OK) {
        bool gx = kn_operand_present(&l->grad_x), gw = kn_operand_present(&l->grad_weight),
             gb = kn_operand_present(&l->grad_bias);
        ln_args a;
        memset(&a, 0, sizeof a);
        a.x = (const char *)x.v.data;
        a.g = (const char *)g.v.data;
        a.w = (const char *)w.v.data;
        a.dt = x.v.dtype;
        a.R = kn_operand_numel(&l->mean);
        a.H = a.R ? kn_operand_numel(&x.v) / a.R : 0;
        a.mean = mkvec(&l->mean), a.invstd = mkvec(&l->invstd);
        a.gw = mkvec(&l->grad_weight), a.gb = mkvec(&l->grad_bias);
        if (!a.R && (gw || gb)) /* no rows: the weight grads are zeros */
            a.H = kn_operand_numel(gw ? &l->grad_weight : &l->grad_bias);
        if (gx && a.R > 0) {
            a.y = (char *)l->grad_x.data;
            unsigned grid = (unsigned)((a.R + 7) / 8);
            if (a.dt == KN_F32) KC_LAUNCH(d, ln_backward_rows<float>, grid, dim3(32, 8), a);
            else KC_LAUNCH(d, ln_backward_rows<double>, grid, dim3(32, 8), a);
            s = kc_after(d, "layer_norm_backward");
        }
        if (s == KN_OK && (gw || gb) && a.H > 0) {
            KC_LAUNCH(d, ln_backward_cols, (unsigned)((a.H + 31) / 32), dim3(32, 8), a);
            s = kc_after(d, "layer_norm_backward");
        }
    }
    kc_buf_free(d, &x), kc_buf_free(d, &g), kc_buf_free(d, &w);
    return s;
}
