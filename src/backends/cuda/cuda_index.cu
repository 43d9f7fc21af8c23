/* Indexing kernels: gather and scatter_add (the primitives), index_select and
 * index_add (their 1-D-index forms), over any strides.
 * An index out of range cannot fail the launch: the kernel records it (see
 * kc_fault), skips the element (a selected element becomes 0) and the host
 * reports "gather: index 7 is out of range ..." at the next op or read.
 * The adds accumulate with atomics, so repeated indices add up. float16 and
 * bfloat16 outputs are summed in a float32 copy and rounded back once (an
 * add rounded to 16 bits each time loses a gradient's many small terms);
 * bytes and bools use a compare-and-swap on the enclosing word.
 *
 * One geometry serves all four: the walked operand (out for the selects, src
 * for the adds), the other one (x, or out), and the index's strides per dim;
 * a 1-D index has its stride on `dim` and 0 elsewhere, so every form reads
 * index[.. i ..] at the walked element's coordinates. */
#include "cuda_common.cuh"

typedef struct {
    int ndim, dim;
    long long shape[KN_MAX_DIMS];   /* the walked operand's shape */
    long long wstride[KN_MAX_DIMS]; /* its strides */
    long long oshape[KN_MAX_DIMS];  /* the other operand's shape */
    long long ostride[KN_MAX_DIMS]; /* and strides */
    long long istride[KN_MAX_DIMS]; /* the index's strides at the walked coordinates */
    long long dstride[KN_MAX_DIMS]; /* the adds: the other's contiguous strides (dense index) */
    long long limit;                /* size of the indexed dim of the other */
    long long numel;
    const char *index;
    int idt;
} idx_geom;

/* per_elem: the index has the walked operand's shape (gather, scatter_add);
 * else it is 1-D along dim (index_select, index_add). */
static void geom_init(idx_geom *g, const kn_operand *walk, const kn_operand *other, const kn_operand *index, int dim,
                      bool per_elem) {
    memset(g, 0, sizeof *g);
    g->ndim = walk->ndim ? walk->ndim : 1;
    g->dim = walk->ndim ? dim : 0;
    g->numel = kn_operand_numel(walk);
    for (int d = 0; d < walk->ndim; d++) {
        g->shape[d] = walk->shape[d];
        g->wstride[d] = walk->stride[d];
        g->oshape[d] = d < other->ndim ? other->shape[d] : 1;
        g->ostride[d] = d < other->ndim ? other->stride[d] : 0;
        if (per_elem) g->istride[d] = d < index->ndim ? index->stride[d] : 0;
    }
    if (!walk->ndim) g->shape[0] = g->oshape[0] = 1;
    if (!per_elem) g->istride[g->dim] = index->ndim ? index->stride[0] : 0;
    g->limit = other->ndim ? other->shape[dim] : 1;
    long long st = 1;
    for (int d = g->ndim - 1; d >= 0; d--) {
        g->dstride[d] = st;
        st *= g->oshape[d];
    }
    g->index = (const char *)index->data;
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

/* Element i of the walked operand: its offset, the other's offset without
 * the indexed dim (and, dense, its contiguous one), the index's offset. */
__device__ __forceinline__ void walk(const idx_geom &g, long long i, long long *w, long long *o, long long *dense,
                                     long long *io) {
    *w = *o = *dense = *io = 0;
    for (int d = g.ndim - 1; d >= 0; d--) {
        long long r;
        i = kc_divmod(i, g.shape[d], &r);
        *w += r * g.wstride[d];
        *io += r * g.istride[d];
        if (d != g.dim) {
            *o += r * g.ostride[d];
            *dense += r * g.dstride[d];
        }
    }
}

/* out (walked) <- x at index along dim. */
template <typename T>
__global__ void select_kernel(const __grid_constant__ idx_geom g, T *out, const T *a, int es_index, long long *err,
                              int op) {
    kc_pdl_wait();
    long long dim_stride = g.ostride[g.dim];
    KC_LOOP(i, g.numel) {
        long long w, o, dense, io;
        walk(g, i, &w, &o, &dense, &io);
        long long v = load_index(g.index + io * es_index, g.idt);
        if (v < 0 || v >= g.limit) {
            kc_fault(err, KC_FAULT_INDEX, op, v, g.limit, g.dim);
            out[w] = T(0);
            continue;
        }
        out[w] = a[o + v * dim_stride];
    }
}

template <typename T>
static void launch_select(kc_dev *d, const idx_geom &g, const kn_operand *out, const kn_operand *x, int op) {
    KC_LAUNCH(d, select_kernel<T>, kc_blocks(g.numel), KC_THREADS, g, (T *)out->data, (const T *)x->data,
              (int)kn_dtype_size((kn_dtype)g.idt), d->err_dev, op);
}

static kn_status select_run(int device, const kn_operand *out, const kn_operand *x, const kn_operand *index, int dim,
                            bool gather) {
    const char *name = gather ? "gather" : "index_select";
    kc_dev *d = kc_enter(device, name, false);
    if (!d) return kn_error_code();
    idx_geom g;
    geom_init(&g, out, x, index, dim, gather);
    if (g.numel == 0) return KN_OK;
    int op = gather ? KC_OP_GATHER : KC_OP_INDEX_SELECT;
    switch (kn_dtype_size(x->dtype)) {
    case 1: launch_select<uint8_t>(d, g, out, x, op); break;
    case 2: launch_select<uint16_t>(d, g, out, x, op); break;
    case 4: launch_select<uint32_t>(d, g, out, x, op); break;
    default: launch_select<unsigned long long>(d, g, out, x, op); break;
    }
    return kc_after(d, name);
}

extern "C" kn_status kn__cuda_gather(int device, const void *args) {
    const kn_gather_args *a = (const kn_gather_args *)args;
    return select_run(device, &a->out, &a->x, &a->index, (int)a->dim, true);
}

extern "C" kn_status kn__cuda_index_select(int device, const void *args) {
    const kn_index_select_args *a = (const kn_index_select_args *)args;
    return select_run(device, &a->out, &a->x, &a->index, (int)a->dim, false);
}

/* ---- scatter_add and index_add ----------------------------------------------------------------- */
/* Element w of src (dtype sdt) as float32: the adds into a float32 sum. */
__device__ __forceinline__ float src_f32(const char *src, int sdt, long long w) {
    return sdt == KN_F32 ? ((const float *)src)[w] : (float)kc_load(src + w * kc_dsize(sdt), sdt);
}

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

/* out (dtype dt) += src (dtype sdt: dt, or float16/bfloat16 into a float32 sum). */
__global__ void add_kernel(const __grid_constant__ idx_geom g, char *out, const char *src, int dt, int sdt,
                           int es_index, long long *err, int op) {
    kc_pdl_wait();
    int es = kc_dsize(dt), ses = kc_dsize(sdt);
    long long dim_stride = g.ostride[g.dim];
    KC_LOOP(i, g.numel) {
        long long w, o, dense, io;
        walk(g, i, &w, &o, &dense, &io);
        long long v = load_index(g.index + io * es_index, g.idt);
        if (v < 0 || v >= g.limit) {
            kc_fault(err, KC_FAULT_INDEX, op, v, g.limit, g.dim);
            continue;
        }
        char *dst = out + (o + v * dim_stride) * es;
        const char *s = src + w * ses;
        switch (dt) {
        case KN_F32: atomicAdd((float *)dst, src_f32(src, sdt, w)); break;
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
__global__ void add_smem(const __grid_constant__ idx_geom g, float *out, const char *src, int sdt, int es_index,
                         long long out_n, long long *err, int op) {
    kc_pdl_wait();
    extern __shared__ float acc[];
    for (long long j = threadIdx.x; j < out_n; j += blockDim.x) acc[j] = 0;
    __syncthreads();
    KC_LOOP(i, g.numel) {
        long long w, o, dense, io;
        walk(g, i, &w, &o, &dense, &io);
        long long v = load_index(g.index + io * es_index, g.idt);
        if (v < 0 || v >= g.limit) {
            kc_fault(err, KC_FAULT_INDEX, op, v, g.limit, g.dim);
            continue;
        }
        atomicAdd(&acc[dense + v * g.dstride[g.dim]], src_f32(src, sdt, w));
    }
    __syncthreads();
    for (long long j = threadIdx.x; j < out_n; j += blockDim.x) { /* dense index -> out's offset */
        long long off = 0, rem = j;
        for (int d = g.ndim - 1; d >= 0; d--) {
            long long r;
            rem = kc_divmod(rem, g.oshape[d], &r);
            off += r * g.ostride[d];
        }
        atomicAdd(out + off, acc[j]);
    }
}

/* The adds of src into out (dtype F32, or out's own) with the geometry g. */
static void add_launch(kc_dev *d, const idx_geom &g, void *out, kn_dtype odt, const kn_operand *src, long long out_n,
                       int es_index, int op) {
    if (odt == KN_F32 && out_n <= 4096) {
        unsigned blocks = kc_blocks(g.numel) < 64 ? kc_blocks(g.numel) : 64;
        kc_launch(d, add_smem, dim3(blocks), dim3(KC_THREADS), (size_t)out_n * sizeof(float), g, (float *)out,
                  (const char *)src->data, (int)src->dtype, es_index, out_n, d->err_dev, op);
        return;
    }
    KC_LAUNCH(d, add_kernel, kc_blocks(g.numel), KC_THREADS, g, (char *)out, (const char *)src->data, (int)odt,
              (int)src->dtype, es_index, d->err_dev, op);
}

static kn_status add_run(int device, const kn_operand *out, const kn_operand *src, const kn_operand *index, int dim,
                         bool scatter) {
    const char *name = scatter ? "scatter_add" : "index_add";
    kc_dev *d = kc_enter(device, name, false);
    if (!d) return kn_error_code();
    idx_geom g;
    geom_init(&g, src, out, index, dim, scatter);
    long long out_n = kn_operand_numel(out);
    if (g.numel == 0 || out_n == 0) return KN_OK;
    int op = scatter ? KC_OP_SCATTER_ADD : KC_OP_INDEX_ADD, es_index = (int)kn_dtype_size(index->dtype);
    if (out->dtype != KN_F16 && out->dtype != KN_BF16) {
        add_launch(d, g, out->data, out->dtype, src, out_n, es_index, op);
        return kc_after(d, name);
    }
    /* 16-bit floats: out copied to a contiguous float32 sum, the adds made
     * there, and the sums rounded back into out once. */
    size_t nbytes = (size_t)out_n * sizeof(float);
    float *acc = (float *)kc_alloc(d->index, nbytes);
    if (!acc) return kn_error_code();
    kn_operand sum = *out;
    sum.data = acc;
    sum.dtype = KN_F32;
    long long st = 1;
    for (int k = out->ndim - 1; k >= 0; k--) {
        sum.stride[k] = st;
        st *= out->shape[k];
    }
    kn_status s = kc_copy_view(d, &sum, out);
    if (s == KN_OK) {
        geom_init(&g, src, &sum, index, dim, scatter);
        add_launch(d, g, acc, KN_F32, src, out_n, es_index, op);
        s = kc_after(d, name);
    }
    if (s == KN_OK) s = kc_copy_view(d, out, &sum);
    kc_free(d->index, acc, nbytes); /* stream order keeps it alive for the kernels queued */
    return s;
}

extern "C" kn_status kn__cuda_scatter_add(int device, const void *args) {
    const kn_scatter_add_args *a = (const kn_scatter_add_args *)args;
    return add_run(device, &a->out, &a->src, &a->index, (int)a->dim, true);
}

extern "C" kn_status kn__cuda_index_add(int device, const void *args) {
    const kn_index_add_args *a = (const kn_index_add_args *)args;
    return add_run(device, &a->out, &a->src, &a->index, (int)a->dim, false);
}
