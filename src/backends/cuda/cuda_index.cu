/* Indexing kernels: index_select, gather, index_add, over any strides.
 * An index out of range cannot fail the launch: the kernel records it (see
 * kc_fault), skips the element (a selected element becomes 0) and the host
 * reports "index_select: index 7 is out of range ..." at the next op or
 * read. index_add accumulates with atomics, so repeated indices add up; the
 * 16-bit and byte types use a compare-and-swap on the enclosing word with the
 * CPU's arithmetic (through double, rounded once per add). */
#include "cuda_common.cuh"

typedef struct {
    int ndim, dim;
    long long shape[KN_MAX_DIMS];   /* the walked tensor's shape (out, or src for index_add) */
    long long wstride[KN_MAX_DIMS]; /* its strides */
    long long ostride[KN_MAX_DIMS]; /* the other tensor's strides (a, or out for index_add) */
    long long istride[KN_MAX_DIMS]; /* the index's strides (gather: per dim; else [0] only) */
    long long dstride[KN_MAX_DIMS]; /* index_add: out's contiguous strides (dense index) */
    long long limit;                /* size of the indexed dim */
    long long numel;
    const char *index;
    int idt;
} idx_geom;

static void geom_init(idx_geom *g, const kn_tensor *walk, const kn_tensor *other, const kn_tensor *index, int dim,
                      long long limit) {
    memset(g, 0, sizeof *g);
    g->ndim = walk->ndim ? walk->ndim : 1;
    g->dim = walk->ndim ? dim : 0;
    g->numel = kn__numel_shape(walk->ndim, walk->shape);
    for (int d = 0; d < walk->ndim; d++) {
        g->shape[d] = walk->shape[d];
        g->wstride[d] = walk->stride[d];
        g->ostride[d] = d < other->ndim ? other->stride[d] : 0;
        g->istride[d] = d < index->ndim ? index->stride[d] : 0;
    }
    if (!walk->ndim) g->shape[0] = 1;
    long long st = 1;
    for (int d = g->ndim - 1; d >= 0; d--) { /* dense strides of `other` (walk's shape, dim -> limit) */
        g->dstride[d] = st;
        st *= d == g->dim ? limit : g->shape[d];
    }
    g->limit = limit;
    g->index = (const char *)kn__data(index);
    g->idt = index->dtype;
}

__device__ __forceinline__ long long load_index(const char *p, int dt) {
    switch (dt) {
    case KN_I64: return *(const long long *)p;
    case KN_I32: return *(const int *)p;
    case KN_U8: return *(const uint8_t *)p;
    default: return kc_load_i(p, dt);
    }
}

/* Walks element i of the walked tensor: its offset, the other tensor's offset
 * without the indexed dim, the coordinate along dim and (gather) the index's
 * offset. */
__device__ __forceinline__ void walk(const idx_geom &g, long long i, long long *w, long long *o, long long *c,
                                     long long *io) {
    *w = *o = *io = 0;
    *c = 0;
    for (int d = g.ndim - 1; d >= 0; d--) {
        long long r;
        i = kc_divmod(i, g.shape[d], &r);
        *w += r * g.wstride[d];
        *io += r * g.istride[d];
        if (d == g.dim) *c = r;
        else *o += r * g.ostride[d];
    }
}

/* out (walked) <- a at index[c] along dim; gather reads the index per element. */
template <typename T>
__global__ void select_kernel(const __grid_constant__ idx_geom g, T *out, const T *a, long long dim_stride, int es_index, bool gather,
                              long long *err, int op) {
    kc_pdl_wait();
    KC_LOOP(i, g.numel) {
        long long w, o, c, io;
        walk(g, i, &w, &o, &c, &io);
        long long v = load_index(g.index + (gather ? io : c * g.istride[0]) * es_index, g.idt);
        if (v < 0 || v >= g.limit) {
            kc_fault(err, KC_FAULT_INDEX, op, v, g.limit, g.dim);
            out[w] = T(0);
            continue;
        }
        out[w] = a[o + v * dim_stride];
    }
}

template <typename T>
static void launch_select(kc_dev *d, const idx_geom &g, kn_tensor *out, kn_tensor *a, long long dim_stride,
                          bool gather, int op) {
    KC_LAUNCH(d, select_kernel<T>, kc_blocks(g.numel), KC_THREADS, 
        g, (T *)kn__data(out), (const T *)kn__data(a), dim_stride, (int)kn_dtype_size((kn_dtype)g.idt), gather,
        d->err_dev, op);
}

static kn_status select_common(const kn_call *c, bool gather) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    kn_tensor *a = c->in[0], *index = c->in[1], *out = c->out[0];
    int dim = (int)c->i[0];
    idx_geom g;
    geom_init(&g, out, a, index, dim, a->ndim ? a->shape[dim] : 1);
    if (g.numel == 0) return KN_OK;
    long long dim_stride = a->ndim ? a->stride[dim] : 0;
    int op = gather ? KC_OP_GATHER : KC_OP_INDEX_SELECT;
    switch (kn_dtype_size(a->dtype)) {
    case 1: launch_select<uint8_t>(d, g, out, a, dim_stride, gather, op); break;
    case 2: launch_select<uint16_t>(d, g, out, a, dim_stride, gather, op); break;
    case 4: launch_select<uint32_t>(d, g, out, a, dim_stride, gather, op); break;
    default: launch_select<unsigned long long>(d, g, out, a, dim_stride, gather, op); break;
    }
    return kc_after(d, gather ? "gather" : "index_select");
}

extern "C" kn_status kn__cuda_index_select(const kn_call *c) { return select_common(c, false); }
extern "C" kn_status kn__cuda_gather(const kn_call *c) { return select_common(c, true); }

/* ---- index_add ------------------------------------------------------------------------------ */
/* Adds v to the 16-bit or 8-bit element at p by CAS on its aligned word. */
__device__ void cas_add(char *p, int dt, const char *src) {
    unsigned int *word = (unsigned int *)((uintptr_t)p & ~(uintptr_t)3);
    int shift = (int)((uintptr_t)p & 3) * 8, bits = kc_dsize(dt) * 8;
    unsigned int mask = (bits == 16 ? 0xffffu : 0xffu) << shift;
    unsigned int old = *word, assumed;
    do {
        assumed = old;
        unsigned int cur = (assumed & mask) >> shift, next;
        if (dt == KN_F16 || dt == KN_BF16) {
            uint16_t h = (uint16_t)cur;
            double s = (double)(dt == KN_F16 ? kc_h2f(h) : kc_b2f(h)) + kc_load(src, dt);
            next = dt == KN_F16 ? kc_f2h((float)s) : kc_f2b((float)s);
        } else if (dt == KN_BOOL) {
            next = (cur + kc_load_i(src, dt)) != 0;
        } else {
            next = (cur + (unsigned int)kc_load_i(src, dt)) & 0xffu;
        }
        old = atomicCAS(word, assumed, (assumed & ~mask) | ((next << shift) & mask));
    } while (old != assumed);
}

__global__ void index_add_kernel(const __grid_constant__ idx_geom g, char *out, const char *src, int dt, long long dim_stride,
                                 int es_index, long long *err) {
    kc_pdl_wait();
    int es = kc_dsize(dt);
    KC_LOOP(i, g.numel) {
        long long w, o, c, io;
        walk(g, i, &w, &o, &c, &io);
        long long v = load_index(g.index + c * g.istride[0] * es_index, g.idt);
        if (v < 0 || v >= g.limit) {
            kc_fault(err, KC_FAULT_INDEX, KC_OP_INDEX_ADD, v, g.limit, g.dim);
            continue;
        }
        char *dst = out + (o + v * dim_stride) * es;
        const char *s = src + w * es;
        switch (dt) {
        case KN_F32: atomicAdd((float *)dst, *(const float *)s); break;
        case KN_F64: atomicAdd((double *)dst, *(const double *)s); break;
        case KN_I32: atomicAdd((int *)dst, *(const int *)s); break;
        case KN_I64: atomicAdd((unsigned long long *)dst, (unsigned long long)*(const long long *)s); break;
        default: cas_add(dst, dt, s); break;
        }
    }
}

/* float32 into a small output: the block accumulates in shared memory (cheap
 * atomics even when every index repeats, as an embedding's gradient does),
 * then adds its sums to the output. */
__global__ void index_add_smem(const __grid_constant__ idx_geom g, float *out, const float *src, long long dim_stride,
                               int es_index, long long out_n, long long *err) {
    kc_pdl_wait();
    extern __shared__ float acc[];
    for (long long j = threadIdx.x; j < out_n; j += blockDim.x) acc[j] = 0;
    __syncthreads();
    KC_LOOP(i, g.numel) {
        long long w = 0, dense = 0, c = 0, rem = i;
        for (int d = g.ndim - 1; d >= 0; d--) {
            long long r;
            rem = kc_divmod(rem, g.shape[d], &r);
            w += r * g.wstride[d];
            if (d == g.dim) c = r;
            else dense += r * g.dstride[d];
        }
        long long v = load_index(g.index + c * g.istride[0] * es_index, g.idt);
        if (v < 0 || v >= g.limit) {
            kc_fault(err, KC_FAULT_INDEX, KC_OP_INDEX_ADD, v, g.limit, g.dim);
            continue;
        }
        atomicAdd(&acc[dense + v * g.dstride[g.dim]], src[w]);
    }
    __syncthreads();
    for (long long j = threadIdx.x; j < out_n; j += blockDim.x) { /* dense index -> out's offset */
        long long off = 0, rem = j;
        for (int d = g.ndim - 1; d >= 0; d--) {
            long long r;
            rem = kc_divmod(rem, d == g.dim ? g.limit : g.shape[d], &r);
            off += r * (d == g.dim ? dim_stride : g.ostride[d]);
        }
        atomicAdd(out + off, acc[j]);
    }
}

extern "C" kn_status kn__cuda_index_add(const kn_call *c) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    kn_tensor *src = c->in[0], *index = c->in[1], *out = c->out[0];
    int dim = (int)c->i[0];
    idx_geom g;
    geom_init(&g, src, out, index, dim, out->ndim ? out->shape[dim] : 1);
    long long out_n = kn__numel_shape(out->ndim, out->shape);
    if (g.numel == 0 || out_n == 0) return KN_OK;
    if (out->dtype == KN_F32 && out_n <= 4096) {
        unsigned blocks = kc_blocks(g.numel) < 64 ? kc_blocks(g.numel) : 64;
        kc_launch(d, index_add_smem, dim3(blocks), dim3(KC_THREADS), (size_t)out_n * sizeof(float), g,
                  (float *)kn__data(out), (const float *)kn__data(src), out->ndim ? out->stride[dim] : 0,
                  (int)kn_dtype_size(index->dtype), out_n, d->err_dev);
        return kc_after(d, "index_add");
    }
    KC_LAUNCH(d, index_add_kernel, kc_blocks(g.numel), KC_THREADS, 
        g, (char *)kn__data(out), (const char *)kn__data(src), out->dtype, out->ndim ? out->stride[dim] : 0,
        (int)kn_dtype_size(index->dtype), d->err_dev);
    return kc_after(d, "index_add");
}
