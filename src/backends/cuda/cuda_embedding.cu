/* Joined embeddings (KN_OP_EMBEDDING_CAT): tables looked up with one column
 * of codes each and written side by side, up to EMB_CHUNK tables per kernel
 * (their pointers and sizes travel as kernel parameters; more tables take
 * one launch per chunk); the backward sums each chunk's gradient rows in one
 * kernel too (shared-memory accumulators per block, then the last block to
 * finish adds the blocks' partial sums: no zeroing pass, no global atomics).
 * Gradients too large for shared memory accumulate with global atomics in a
 * scratch (float, or double for float64) that is then converted. A code out
 * of range is recorded (kc_fault) and its row skipped. */
#include "cuda_common.cuh"

#define EMB_CHUNK 16 /* tables per launch */

typedef struct {
    const char *w[EMB_CHUNK]; /* tables [V_k, D_k], contiguous; backward: grads */
    long long rows[EMB_CHUNK], dim[EMB_CHUNK];
    long long col[EMB_CHUNK + 1];   /* first column of table k in the chunk's joined row */
    long long start[EMB_CHUNK + 1]; /* first element of table k among the chunk's tables' */
    int T;
    int k0; /* the chunk's first table, for messages */
    const char *codes; /* at the chunk's first column */
    long long cs0, cs1;
    int cdt;
    long long N;
} emb_geom;

/* The chunk of T tables from table k0: tables[k0 .. k0 + T). */
static void geom(emb_geom *g, int k0, int T, const kn_operand *tables, const kn_operand *codes) {
    memset(g, 0, sizeof *g);
    g->T = T;
    g->k0 = k0;
    for (int k = 0; k < T; k++) {
        const kn_operand *t = &tables[k0 + k];
        g->w[k] = (const char *)t->data;
        g->rows[k] = t->shape[0];
        g->dim[k] = t->shape[1];
        g->col[k + 1] = g->col[k] + g->dim[k];
        g->start[k + 1] = g->start[k] + g->rows[k] * g->dim[k];
    }
    g->cs0 = codes->stride[0];
    g->cs1 = codes->stride[1];
    g->cdt = codes->dtype;
    g->codes = (const char *)codes->data + k0 * g->cs1 * (long long)kn_dtype_size(codes->dtype);
    g->N = codes->shape[0];
}

static int chunk_len(int64_t n_tables, int k0) {
    return n_tables - k0 < EMB_CHUNK ? (int)(n_tables - k0) : EMB_CHUNK;
}

/* The table that joined column j belongs to (T is small: a scan). */
__device__ __forceinline__ int table_of(const emb_geom &g, long long j) {
    int k = 0;
    while (k + 1 < g.T && j >= g.col[k + 1]) k++;
    return k;
}

/* Row n's code for table k, or -1 (recorded) when out of range. */
__device__ __forceinline__ long long code_at(const emb_geom &g, long long n, int k, long long *err) {
    long long v = kc_load_i(g.codes + (n * g.cs0 + k * g.cs1) * kc_dsize(g.cdt), g.cdt);
    if (v < 0 || v >= g.rows[k]) {
        kc_fault(err, KC_FAULT_INDEX, KC_OP_EMBEDDING_CAT, v, g.rows[k], g.k0 + k);
        return -1;
    }
    return v;
}

/* ---- forward: a thread per joined element ------------------------------------------------------ */
template <typename T>
__global__ void emb_cat_kernel(const __grid_constant__ emb_geom g, T *out, long long os0, long long os1, long long *err) {
    kc_pdl_wait();
    long long D = g.col[g.T];
    KC_LOOP(i, g.N * D) {
        long long n = i / D, j = i - n * D;
        int k = table_of(g, j);
        long long v = code_at(g, n, k, err);
        out[n * os0 + j * os1] = v < 0 ? T(0) : ((const T *)g.w[k])[v * g.dim[k] + (j - g.col[k])];
    }
}

template <typename T>
static void launch_cat(kc_dev *d, const emb_geom &g, long long n, char *out, long long os0, long long os1) {
    KC_LAUNCH(d, emb_cat_kernel<T>, kc_blocks(n), KC_THREADS, g, (T *)out, os0, os1, d->err_dev);
}

extern "C" kn_status kn__cuda_embedding_cat(int device, const void *args) {
    const kn_embedding_cat_args *a = (const kn_embedding_cat_args *)args;
    kc_dev *d = kc_enter(device, "embedding_cat", false);
    if (!d) return kn_error_code();
    const kn_operand *out = &a->out;
    size_t es = kn_dtype_size(out->dtype);
    long long col0 = 0;
    kn_status s = KN_OK;
    for (int k0 = 0; k0 < a->n_tables && s == KN_OK; k0 += EMB_CHUNK) {
        emb_geom g;
        geom(&g, k0, chunk_len(a->n_tables, k0), a->tables, &a->codes);
        long long n = g.N * g.col[g.T];
        char *o = (char *)out->data + col0 * out->stride[1] * (long long)es;
        col0 += g.col[g.T];
        if (n == 0) continue;
        switch (es) {
        case 1: launch_cat<uint8_t>(d, g, n, o, out->stride[0], out->stride[1]); break;
        case 2: launch_cat<uint16_t>(d, g, n, o, out->stride[0], out->stride[1]); break;
        case 4: launch_cat<uint32_t>(d, g, n, o, out->stride[0], out->stride[1]); break;
        default: launch_cat<unsigned long long>(d, g, n, o, out->stride[0], out->stride[1]); break;
        }
        s = kc_after(d, "embedding_cat");
    }
    return s;
}

/* ---- backward ------------------------------------------------------------------------------------ */
#define EMB_SMEM_MAX 4096 /* gradient elements (the chunk's tables) that accumulate in shared memory */
#define EMB_ROWS 128      /* rows per block */
#define EMB_THREADS 1024  /* a block's items in one or two passes: latency, not bandwidth, counts */

typedef struct {
    emb_geom g;
    const char *grad;
    long long gs0, gs1;
    int gdt;
    char *out[EMB_CHUNK]; /* contiguous grads, dtype odt */
    int odt;
    void *partial;  /* [blocks][S] in the accumulation type */
    unsigned int *ticket;
} emb_bwd;

/* The accumulation type: double for float64, float otherwise. */
template <typename A>
__device__ __forceinline__ void emb_store(const emb_bwd &b, long long s, A v) {
    int k = 0;
    while (k + 1 < b.g.T && s >= b.g.start[k + 1]) k++;
    kc_store(b.out[k] + (s - b.g.start[k]) * kc_dsize(b.odt), b.odt, (double)v);
}

/* Each block sums its rows into shared accumulators; the last block to
 * finish adds up the blocks' partials in block order and writes the grads. */
template <typename A>
__global__ void emb_cat_backward_smem(const __grid_constant__ emb_bwd b, long long *err) {
    kc_pdl_wait();
    __shared__ A acc[EMB_SMEM_MAX];
    __shared__ bool last;
    const emb_geom &g = b.g;
    long long S = g.start[g.T], D = g.col[g.T];
    for (long long s = threadIdx.x; s < S; s += blockDim.x) acc[s] = A(0);
    __syncthreads();
    long long n0 = (long long)blockIdx.x * EMB_ROWS, n1 = n0 + EMB_ROWS < g.N ? n0 + EMB_ROWS : g.N;
    for (long long i = n0 * D + threadIdx.x; i < n1 * D; i += blockDim.x) {
        long long n = i / D, j = i - n * D;
        int k = table_of(g, j);
        A x = (A)kc_load(b.grad + (n * b.gs0 + j * b.gs1) * kc_dsize(b.gdt), b.gdt); /* with the code's load */
        long long v = code_at(g, n, k, err);
        if (v >= 0) atomicAdd(&acc[g.start[k] + v * g.dim[k] + (j - g.col[k])], x);
    }
    __syncthreads();
    if (gridDim.x == 1) {
        for (long long s = threadIdx.x; s < S; s += blockDim.x) emb_store<A>(b, s, acc[s]);
        return;
    }
    A *part = (A *)b.partial;
    for (long long s = threadIdx.x; s < S; s += blockDim.x) part[blockIdx.x * S + s] = acc[s];
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(b.ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (long long s = threadIdx.x; s < S; s += blockDim.x) emb_store<A>(b, s, kc_sum_strided(part + s, S, gridDim.x));
    if (threadIdx.x == 0) *b.ticket = 0;
}

/* Large gradients: atomics into a zeroed scratch of the accumulation type, then converted. */
template <typename A>
__global__ void emb_cat_backward_atomic(const __grid_constant__ emb_bwd b, long long *err) {
    kc_pdl_wait();
    const emb_geom &g = b.g;
    long long D = g.col[g.T];
    A *acc = (A *)b.partial;
    KC_LOOP(i, g.N * D) {
        long long n = i / D, j = i - n * D;
        int k = table_of(g, j);
        long long v = code_at(g, n, k, err);
        if (v >= 0)
            atomicAdd(&acc[g.start[k] + v * g.dim[k] + (j - g.col[k])],
                      (A)kc_load(b.grad + (n * b.gs0 + j * b.gs1) * kc_dsize(b.gdt), b.gdt));
    }
}

template <typename A>
__global__ void emb_cat_store(const __grid_constant__ emb_bwd b) {
    kc_pdl_wait();
    KC_LOOP(s, b.g.start[b.g.T]) emb_store<A>(b, s, ((const A *)b.partial)[s]);
}

/* One chunk of tables: their gradients from grad's columns at col0. */
static kn_status backward_chunk(kc_dev *d, const kn_embedding_cat_backward_args *a, int k0, long long col0) {
    const kn_operand *grad = &a->grad;
    int T = chunk_len(a->n_tables, k0);
    emb_bwd b;
    memset(&b, 0, sizeof b);
    geom(&b.g, k0, T, a->grads, &a->codes);
    b.gs0 = grad->stride[0];
    b.gs1 = grad->stride[1];
    b.gdt = grad->dtype;
    b.grad = (const char *)grad->data + col0 * b.gs1 * (long long)kn_dtype_size(grad->dtype);
    b.odt = a->grads[k0].dtype;
    for (int k = 0; k < T; k++) b.out[k] = (char *)a->grads[k0 + k].data;
    b.ticket = d->tickets;
    long long S = b.g.start[T], N = b.g.N;
    if (S == 0) return KN_OK;
    bool f64 = b.odt == KN_F64;
    size_t acc_size = f64 ? 8 : 4, nbytes = 0;
    kn_status s = KN_OK;
    if (S <= EMB_SMEM_MAX) {
        unsigned blocks = (unsigned)((N + EMB_ROWS - 1) / EMB_ROWS);
        if (blocks < 1) blocks = 1;
        if (blocks > 1) {
            nbytes = (size_t)blocks * (size_t)S * acc_size;
            if (!(b.partial = kc_alloc(d->index, nbytes))) return kn_error_code();
        }
        if (f64) KC_LAUNCH(d, emb_cat_backward_smem<double>, blocks, EMB_THREADS, b, d->err_dev);
        else KC_LAUNCH(d, emb_cat_backward_smem<float>, blocks, EMB_THREADS, b, d->err_dev);
        s = kc_after(d, "embedding_cat");
    } else {
        nbytes = (size_t)S * acc_size;
        if (!(b.partial = kc_alloc(d->index, nbytes))) return kn_error_code();
        s = kc_check(cudaMemsetAsync(b.partial, 0, nbytes, d->stream), "embedding_cat");
        if (s == KN_OK && N > 0) {
            if (f64) KC_LAUNCH(d, emb_cat_backward_atomic<double>, kc_blocks(N * b.g.col[T]), KC_THREADS, b, d->err_dev);
            else KC_LAUNCH(d, emb_cat_backward_atomic<float>, kc_blocks(N * b.g.col[T]), KC_THREADS, b, d->err_dev);
            s = kc_after(d, "embedding_cat");
        }
        if (s == KN_OK) {
            if (f64) KC_LAUNCH(d, emb_cat_store<double>, kc_blocks(S), KC_THREADS, b);
            else KC_LAUNCH(d, emb_cat_store<float>, kc_blocks(S), KC_THREADS, b);
            s = kc_after(d, "embedding_cat");
        }
    }
    kc_free(d->index, b.partial, nbytes); /* stream order keeps it alive for the kernels queued */
    return s;
}

extern "C" kn_status kn__cuda_embedding_cat_backward(int device, const void *args) {
    const kn_embedding_cat_backward_args *a = (const kn_embedding_cat_backward_args *)args;
    kc_dev *d = kc_enter(device, "embedding_cat", false);
    if (!d) return kn_error_code();
    long long col0 = 0;
    kn_status s = KN_OK;
    for (int k0 = 0; k0 < a->n_tables && s == KN_OK; k0 += EMB_CHUNK) {
        s = backward_chunk(d, a, k0, col0);
        for (int k = k0; k < k0 + chunk_len(a->n_tables, k0); k++) col0 += a->grads[k].shape[1];
    }
    return s;
}
