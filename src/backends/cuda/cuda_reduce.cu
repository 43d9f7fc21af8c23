/* Reductions (sum, mean, max, min, var, argmax, argmin) over any set of dims
 * of a strided input. Floats accumulate in double, integer sums in int64, as
 * the CPU does. Two layouts:
 *  - inner: the innermost reduced dim is contiguous: a warp per output reads
 *    along it;
 *  - outer: otherwise (e.g. a column sum): a thread per output, so adjacent
 *    threads read adjacent outputs' elements, with 8 threads sharing each
 *    output's range.
 * Few outputs over many elements split the range across blocks (partial
 * results, then a second small kernel). */
#include "cuda_common.cuh"

#include <math.h>

typedef struct {
    int nk, nr;
    long long kshape[KN_MAX_DIMS], kstride[KN_MAX_DIMS]; /* kept dims, x strides */
    long long rshape[KN_MAX_DIMS], rstride[KN_MAX_DIMS]; /* reduced dims */
    long long n_out, R;
} red_geom;

static void geometry(const kn_operand *x, unsigned long long mask, red_geom *g) {
    memset(g, 0, sizeof *g);
    g->n_out = 1;
    g->R = 1;
    for (int d = 0; d < x->ndim; d++) {
        bool red = mask >> d & 1;
        if (red) g->R *= x->shape[d];
        else g->n_out *= x->shape[d];
        if (x->shape[d] == 1) continue;
        int *n = red ? &g->nr : &g->nk;
        long long *shape = red ? g->rshape : g->kshape, *stride = red ? g->rstride : g->kstride;
        if (*n > 0 && stride[*n - 1] == x->stride[d] * x->shape[d]) { /* merge with the outer neighbour */
            shape[*n - 1] *= x->shape[d];
            stride[*n - 1] = x->stride[d];
        } else {
            shape[*n] = x->shape[d];
            stride[*n] = x->stride[d];
            (*n)++;
        }
    }
}

__device__ __forceinline__ long long goff(const long long *shape, const long long *stride, int n, long long i) {
    if (n == 1) return i * stride[0];
    long long off = 0;
    for (int d = n - 1; d >= 0; d--) {
        long long r;
        i = kc_divmod(i, shape[d], &r);
        off += r * stride[d];
    }
    return off;
}

__device__ __forceinline__ double red_init(int fn) {
    return fn == KN_REDUCE_MAX ? -INFINITY : fn == KN_REDUCE_MIN ? INFINITY : 0.0;
}

__device__ __forceinline__ double red_combine(int fn, double a, double b) {
    if (fn == KN_REDUCE_MAX) return a != a || b != b ? NAN : a > b ? a : b;
    if (fn == KN_REDUCE_MIN) return a != a || b != b ? NAN : a < b ? a : b;
    return a + b;
}

/* One output's accumulator: double, or int64 bits for integer sums. */
union acc_t {
    double f;
    long long i;
};

typedef struct {
    red_geom g;
    const char *x;
    int xdt, fn, odt;
    bool int_sum;         /* accumulate in int64 */
    const double *mean;   /* VAR's second pass */
    double *mean_out;     /* VAR's first pass writes sum / R here */
    int splits;           /* blocks sharing one output's range */
    int wpo;              /* inner layout: warps per output (1 or 8) */
    acc_t *partial;       /* [n_out][splits] when splits > 1 */
    unsigned int *tickets; /* per block column, zero between launches */
    char *out;
    long long corr;
} red_args;

__device__ __forceinline__ acc_t acc_init(const red_args &a) {
    acc_t r;
    if (a.int_sum) r.i = 0;
    else r.f = red_init(a.fn);
    return r;
}

__device__ __forceinline__ acc_t acc_add(const red_args &a, acc_t acc, const char *p, double mean) {
    if (a.int_sum) {
        acc.i += kc_load_i(p, a.xdt);
    } else {
        double v = a.xdt == KN_F32 ? (double)*(const float *)p : kc_load(p, a.xdt);
        if (a.fn == KN_REDUCE_VAR) acc.f += (v - mean) * (v - mean);
        else acc.f = red_combine(a.fn, acc.f, v);
    }
    return acc;
}

__device__ __forceinline__ acc_t acc_merge(const red_args &a, acc_t x, acc_t y) {
    if (a.int_sum) x.i += y.i;
    else x.f = red_combine(a.fn == KN_REDUCE_VAR ? KN_REDUCE_SUM : a.fn, x.f, y.f);
    return x;
}

__device__ __forceinline__ acc_t acc_shfl(acc_t v, int o) {
    acc_t r;
    r.i = __shfl_xor_sync(0xffffffffu, v.i, o);
    return r;
}

/* The final value of output o. */
__device__ void red_finish(const red_args &a, long long o, acc_t acc) {
    if (a.mean_out) {
        a.mean_out[o] = acc.f / (double)a.g.R;
        return;
    }
    int es = kc_dsize(a.odt);
    if (a.int_sum) {
        kc_store_i(a.out + o * es, a.odt, acc.i);
        return;
    }
    double v = acc.f, R = (double)a.g.R;
    if (a.fn == KN_REDUCE_MEAN) v = R > 0 ? v / R : NAN;
    if (a.fn == KN_REDUCE_VAR) {
        double den = R - (double)a.corr;
        v = den > 0 ? v / den : NAN;
    }
    if ((a.fn == KN_REDUCE_MAX || a.fn == KN_REDUCE_MIN) && a.g.R == 0) v = NAN;
    if (!kc_is_float(a.odt) && a.fn == KN_REDUCE_SUM) kc_store_i(a.out + o * es, a.odt, llround(v));
    else kc_store(a.out + o * es, a.odt, v);
}

/* The range of reduced elements split `s` of `splits` covers. */
__device__ __forceinline__ void split_range(long long R, int splits, int s, long long *lo, long long *hi) {
    long long per = (R + splits - 1) / splits;
    *lo = (long long)s * per;
    *hi = *lo + per < R ? *lo + per : R;
}

/* After a split launch wrote its partials: the block that arrives last for
 * its column of the grid combines them and writes the outputs o0 .. o0 + n,
 * then zeroes the ticket for the next launch. One kernel, deterministic. */
__device__ void finish_split(const red_args &a, long long o0, int n) {
    __shared__ bool last;
    int tid = threadIdx.y * blockDim.x + threadIdx.x, nt = blockDim.x * blockDim.y;
    __threadfence();
    __syncthreads();
    if (tid == 0) last = atomicAdd(&a.tickets[blockIdx.x], 1u) == (unsigned)a.splits - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    /* A warp per output: its lanes fold the splits, then a shuffle tree. */
    int lane = tid & 31;
    for (int k = tid >> 5; k < n && o0 + k < a.g.n_out; k += nt >> 5) {
        const long long *p = (const long long *)(a.partial + (o0 + k) * a.splits);
        acc_t acc = acc_init(a);
        for (int s = lane; s < a.splits; s += 32) {
            acc_t y;
            y.i = __ldcg(p + s);
            acc = acc_merge(a, acc, y);
        }
#pragma unroll
        for (int m = 16; m > 0; m >>= 1) acc = acc_merge(a, acc, acc_shfl(acc, m));
        if (lane == 0) red_finish(a, o0 + k, acc);
    }
    if (tid == 0) a.tickets[blockIdx.x] = 0;
}

/* blockDim (32, 8 or 32): each output gets wpo warps (a whole block, for
 * few large outputs, or one: blockDim.y outputs a block). */
__global__ void reduce_inner(const __grid_constant__ red_args a) {
    kc_pdl_wait();
    __shared__ acc_t wsum[32];
    int W = a.wpo, per_block = blockDim.y / W;
    long long o0 = (long long)blockIdx.x * per_block, o = o0 + threadIdx.y / W;
    int lane = (threadIdx.y % W) * 32 + threadIdx.x, es = kc_dsize(a.xdt);
    bool valid = o < a.g.n_out;
    acc_t acc = acc_init(a);
    if (valid) {
        long long base = goff(a.g.kshape, a.g.kstride, a.g.nk, o), lo, hi;
        split_range(a.g.R, a.splits, blockIdx.y, &lo, &hi);
        double mean = a.mean ? a.mean[o] : 0;
#pragma unroll 4
        for (long long r = lo + lane; r < hi; r += 32 * W)
            acc = acc_add(a, acc, a.x + (base + goff(a.g.rshape, a.g.rstride, a.g.nr, r)) * es, mean);
    }
#pragma unroll
    for (int k = 16; k > 0; k >>= 1) acc = acc_merge(a, acc, acc_shfl(acc, k));
    if (W > 1) {
        if (threadIdx.x == 0) wsum[threadIdx.y] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && threadIdx.x == 0)
            for (int k = 1; k < W; k++) acc = acc_merge(a, acc, wsum[k]);
    }
    bool holder = valid && threadIdx.x == 0 && threadIdx.y % W == 0;
    if (a.splits == 1) {
        if (holder) red_finish(a, o, acc);
        return;
    }
    if (holder) a.partial[o * a.splits + blockIdx.y] = acc;
    finish_split(a, o0, per_block);
}

/* blockDim (32, 8 or 32): thread x owns output blockIdx.x * 32 + x; the
 * threads of a column share its range. */
__global__ void reduce_outer(const __grid_constant__ red_args a) {
    kc_pdl_wait();
    __shared__ acc_t part[32][33];
    long long o = (long long)blockIdx.x * 32 + threadIdx.x;
    int es = kc_dsize(a.xdt);
    acc_t acc = acc_init(a);
    if (o < a.g.n_out) {
        long long base = goff(a.g.kshape, a.g.kstride, a.g.nk, o), lo, hi;
        split_range(a.g.R, a.splits, blockIdx.y, &lo, &hi);
        double mean = a.mean ? a.mean[o] : 0;
#pragma unroll 4
        for (long long r = lo + threadIdx.y; r < hi; r += blockDim.y)
            acc = acc_add(a, acc, a.x + (base + goff(a.g.rshape, a.g.rstride, a.g.nr, r)) * es, mean);
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && o < a.g.n_out) {
        for (int k = 1; k < (int)blockDim.y; k++) acc = acc_merge(a, acc, part[k][threadIdx.x]);
        if (a.splits == 1) red_finish(a, o, acc);
        else a.partial[o * a.splits + blockIdx.y] = acc;
    }
    if (a.splits > 1) finish_split(a, (long long)blockIdx.x * 32, 32);
}

static kn_status run(kc_dev *d, red_args a) {
    const red_geom &g = a.g;
    bool inner = g.nr >= 1 && (g.rstride[g.nr - 1] == 1 || g.nk == 0 || g.kstride[g.nk - 1] != 1);
    /* (A block of 1024 threads per few outputs, unsplit, measured slower on
     * an H100 for a step's bias gradients: 19 against 12 us.) */
    int wy = 8;
    a.wpo = inner && g.n_out < 2048 ? 8 : 1;
    long long per_block = inner ? wy / a.wpo : 32, gx = (g.n_out + per_block - 1) / per_block;
    /* Few blocks over long ranges: split the ranges until the GPU is busy,
     * each block still folding a fair number of elements per thread. */
    long long min_len = inner ? 32 * a.wpo * 8 : 8 * 8, splits = 1;
    if (gx < 264 && gx <= KC_TICKETS && g.R >= 2 * min_len) {
        splits = (528 + gx - 1) / gx;
        if (splits > g.R / min_len) splits = g.R / min_len;
        if (splits > 1024) splits = 1024;
    }
    a.splits = (int)splits;
    a.tickets = d->tickets;
    size_t nbytes = splits > 1 ? (size_t)(g.n_out * splits) * sizeof(acc_t) : 0;
    if (nbytes && !(a.partial = (acc_t *)kc_alloc(d->index, nbytes))) return kn_error_code();
    dim3 grid((unsigned)gx, (unsigned)splits), block(32, wy);
    if (inner) KC_LAUNCH(d, reduce_inner, grid, block, a);
    else KC_LAUNCH(d, reduce_outer, grid, block, a);
    kc_free(d->index, a.partial, nbytes); /* stream order keeps it alive for the kernel queued */
    return kc_after(d, "reduce");
}

/* ---- column sums of a float32 matrix (bias gradients) -----------------------------------------
 * out[c] = sum_r x[r * rs + c] for contiguous rows: the shape of every bias
 * gradient. Latency is what counts at these sizes, so each thread loads a
 * few rows at once, blocks of 32 columns x CS_ROWS rows each write a
 * partial, and the last block of a column tile adds them: one kernel, three
 * dependent memory steps. Sums in float (pairwise: 4, 8, then the chunks). */
#define CS_ROWS 32

__global__ void colsum_f32(const float *x, long long rs, long long R, long long C, float *out, float *partial,
                           unsigned int *tickets) {
    kc_pdl_wait();
    __shared__ float part[8][33];
    __shared__ bool last;
    int lane = threadIdx.x, wy = threadIdx.y, chunks = gridDim.y;
    long long c = (long long)blockIdx.x * 32 + lane, r0 = (long long)blockIdx.y * CS_ROWS;
    float acc = 0;
    if (c < C) {
        float v[CS_ROWS / 8];
#pragma unroll
        for (int j = 0; j < CS_ROWS / 8; j++) {
            long long r = r0 + wy + 8 * j;
            v[j] = r < R ? x[r * rs + c] : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < CS_ROWS / 8; j++) acc += v[j];
    }
    part[wy][lane] = acc;
    __syncthreads();
    float s = 0;
    if (wy == 0)
        for (int k = 0; k < 8; k++) s += part[k][lane];
    if (chunks == 1) {
        if (wy == 0 && c < C) out[c] = s;
        return;
    }
    if (wy == 0 && c < C) partial[blockIdx.y * C + c] = s;
    __threadfence();
    __syncthreads();
    if (lane == 0 && wy == 0) last = atomicAdd(&tickets[blockIdx.x], 1u) == (unsigned)chunks - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    /* row wy of the block folds chunks wy, wy + 8, ... */
    float t = c < C ? kc_sum_strided(partial + (long long)wy * C + c, 8 * C, (chunks - wy + 7) / 8) : 0.0f;
    part[wy][lane] = t;
    __syncthreads();
    if (wy == 0 && c < C) {
        float u = 0;
        for (int k = 0; k < 8; k++) u += part[k][lane];
        out[c] = u;
    }
    if (lane == 0 && wy == 0) tickets[blockIdx.x] = 0;
}

/* A float32 sum over one merged dim of rows whose kept dim is contiguous. */
static bool colsum_shape(const red_args &a) {
    const red_geom &g = a.g;
    return a.fn == KN_REDUCE_SUM && a.xdt == KN_F32 && a.odt == KN_F32 && g.nk == 1 && g.kstride[0] == 1 &&
           g.nr == 1 && g.R > 0 && g.n_out <= 32LL * KC_TICKETS && (g.R + CS_ROWS - 1) / CS_ROWS <= 65535;
}

static kn_status colsum_run(kc_dev *d, const red_args &a) {
    const red_geom &g = a.g;
    long long tiles = (g.n_out + 31) / 32, chunks = (g.R + CS_ROWS - 1) / CS_ROWS;
    size_t nbytes = chunks > 1 ? (size_t)(chunks * g.n_out) * sizeof(float) : 0;
    float *partial = NULL;
    if (nbytes && !(partial = (float *)kc_alloc(d->index, nbytes))) return kn_error_code();
    KC_LAUNCH(d, colsum_f32, dim3((unsigned)tiles, (unsigned)chunks), dim3(32, 8), (const float *)a.x, g.rstride[0],
              g.R, g.n_out, (float *)a.out, partial, d->tickets);
    kc_free(d->index, partial, nbytes); /* stream order keeps it alive for the kernel queued */
    return kc_after(d, "sum");
}

/* ---- argmax / argmin ------------------------------------------------------------------------------ */
/* Does (v2, i2) beat (v1, i1)? The first NaN wins, then the first extreme. */
__device__ __forceinline__ bool arg_better(bool mx, double v1, long long i1, double v2, long long i2) {
    if (i2 < 0) return false;
    if (i1 < 0) return true;
    bool n1 = v1 != v1, n2 = v2 != v2;
    if (n1 || n2) return n2 && (!n1 || i2 < i1);
    if (mx ? v2 > v1 : v2 < v1) return true;
    return v2 == v1 && i2 < i1;
}

/* blockDim (32, 8): a warp per output. */
__global__ void argreduce_kernel(const __grid_constant__ red_geom g, const char *x, int xdt, long long *out, bool mx) {
    kc_pdl_wait();
    long long o = (long long)blockIdx.x * blockDim.y + threadIdx.y;
    if (o >= g.n_out) return;
    int es = kc_dsize(xdt);
    long long base = goff(g.kshape, g.kstride, g.nk, o), bi = -1;
    double bv = 0;
    for (long long r = threadIdx.x; r < g.R; r += 32) {
        double v = kc_load(x + (base + goff(g.rshape, g.rstride, g.nr, r)) * es, xdt);
        if (arg_better(mx, bv, bi, v, r)) bv = v, bi = r;
    }
#pragma unroll
    for (int k = 16; k > 0; k >>= 1) {
        double v = __shfl_xor_sync(0xffffffffu, bv, k);
        long long i = __shfl_xor_sync(0xffffffffu, bi, k);
        if (arg_better(mx, bv, bi, v, i)) bv = v, bi = i;
    }
    if (threadIdx.x == 0) out[o] = bi < 0 ? 0 : bi;
}

extern "C" kn_status kn__cuda_reduce(int device, const void *args) {
    const kn_reduce_args *r = (const kn_reduce_args *)args;
    kn_reduce_fn fn = (kn_reduce_fn)r->fn;
    const char *name = kn__reduce_name(fn);
    kc_dev *d = kc_enter(device, name, false);
    if (!d) return kn_error_code();
    const kn_operand *x = &r->x, *out = &r->out;
    red_args a;
    memset(&a, 0, sizeof a);
    geometry(x, (unsigned long long)r->dims, &a.g);
    if (a.g.n_out == 0) return KN_OK;
    if (fn == KN_REDUCE_ARGMAX || fn == KN_REDUCE_ARGMIN) {
        KC_LAUNCH(d, argreduce_kernel, (unsigned)((a.g.n_out + 7) / 8), dim3(32, 8), a.g, (const char *)x->data,
                  x->dtype, (long long *)out->data, fn == KN_REDUCE_ARGMAX);
        return kc_after(d, name);
    }
    a.x = (const char *)x->data;
    a.xdt = x->dtype;
    a.odt = out->dtype;
    a.out = (char *)out->data;
    a.corr = r->correction;
    a.int_sum = fn == KN_REDUCE_SUM && !kn_dtype_is_float(x->dtype);
    if (fn != KN_REDUCE_VAR) {
        a.fn = fn;
        if (colsum_shape(a)) return colsum_run(d, a);
        return run(d, a);
    }
    /* Variance in two passes, as the CPU: the mean, then squared deviations. */
    size_t nbytes = (size_t)a.g.n_out * sizeof(double);
    double *mean = (double *)kc_alloc(d->index, nbytes);
    if (!mean) return kn_error_code();
    red_args p1 = a;
    p1.fn = KN_REDUCE_SUM;
    p1.mean_out = mean;
    kn_status s = run(d, p1);
    if (s == KN_OK) {
        a.fn = KN_REDUCE_VAR;
        a.mean = mean;
        s = run(d, a);
    }
    kc_free(d->index, mean, nbytes);
    return s;
}
