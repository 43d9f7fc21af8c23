/* Joined embeddings (KN_OP_EMBEDDING_CAT): up to KN_EMBEDDING_CAT_MAX
 * tables looked up with one column of codes each and written side by side,
 * in one kernel; the backward sums every table's gradient rows in one
 * kernel too (shared-memory accumulators per block, then the last block to
 * finish adds the blocks' partial sums: no zeroing pass, no global atomics).
 * Gradients too large for shared memory accumulate with global atomics in a
 * scratch (float, or double for float64) that is then converted. A code out of range is recorded
 * (kc_fault) and its row skipped. */
#include "cuda_common.cuh"

typedef struct {
    const char *w[KN_EMBEDDING_CAT_MAX]; /* tables [V_k, D_k], contiguous; backward: grads */
    long long rows[KN_EMBEDDING_CAT_MAX], dim[KN_EMBEDDING_CAT_MAX];
    long long col[KN_EMBEDDING_CAT_MAX + 1];   /* first column of table k in the joined row */
    long long start[KN_EMBEDDING_CAT_MAX + 1]; /* first element of table k among all tables' */
    int T;
    const char *codes;
    long long cs0, cs1;
    int cdt;
    long long N;
} emb_geom;

static void geom(emb_geom *g, int T, kn_tensor *const *tables, const kn_tensor *codes) {
    memset(g, 0, sizeof *g);
    g->T = T;
    for (int k = 0; k < T; k++) {
        g->w[k] = (const char *)kn__data(tables[k]);
        g->rows[k] = tables[k]->shape[0];
        g->dim[k] = tables[k]->shape[1];
        g->col[k + 1] = g->col[k] + g->dim[k];
        g->start[k + 1] = g->start[k] + g->rows[k] * g->dim[k];
    }
    g->codes = (const char *)kn__data(codes);
    g->cs0 = codes->stride[0];
    g->cs1 = codes->stride[1];
    g->cdt = codes->dtype;
    g->N = codes->shape[0];
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
        kc_fault(err, KC_FAULT_INDEX, KC_OP_EMBEDDING_CAT, v, g.rows[k], k);
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

extern "C" kn_status kn__cuda_embedding_cat(const kn_call *c) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    kn_tensor *out = c->out[0];
    emb_geom g;
    geom(&g, (int)c->i[0], c->in + 1, c->in[0]);
    long long n = g.N * g.col[g.T];
    if (n == 0) return KN_OK;
    switch (kn_dtype_size(out->dtype)) {
    case 2:
        KC_LAUNCH(d, emb_cat_kernel<uint16_t>, kc_blocks(n), KC_THREADS, g, (uint16_t *)kn__data(out), out->stride[0],
                  out->stride[1], d->err_dev);
        break;
    case 4:
        KC_LAUNCH(d, emb_cat_kernel<uint32_t>, kc_blocks(n), KC_THREADS, g, (uint32_t *)kn__data(out), out->stride[0],
                  out->stride[1], d->err_dev);
        break;
    default:
        KC_LAUNCH(d, emb_cat_kernel<unsigned long long>, kc_blocks(n), KC_THREADS, g,
                  (unsigned long long *)kn__data(out), out->stride[0], out->stride[1], d->err_dev);
        break;
    }
    return kc_after(d, "embedding_cat");
}

/* ---- backward ------------------------------------------------------------------------------------ */
#define EMB_SMEM_MAX 4096 /* gradient elements (all tables) that accumulate in shared memory */
#define EMB_ROWS 128      /* rows per block */
#define EMB_THREADS 1024  /* a block's items in one or two passes: latency, not bandwidth, counts */

typedef struct {
    emb_geom g;
    const char *grad;
    long long gs0, gs1;
    int gdt;
    char *out[KN_EMBEDDING_CAT_MAX]; /* contiguous grads, dtype odt */
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

extern "C" kn_status kn__cuda_embedding_cat_backward(const kn_call *c) {
    kc_dev *d = kc_enter(c, false);
    if (!d) return kn_error_code();
    int T = (int)c->i[0];
    const kn_tensor *grad = c->in[0];
    emb_bwd b;
    memset(&b, 0, sizeof b);
    geom(&b.g, T, c->out, c->in[1]);
    b.grad = (const char *)kn__data(grad);
    b.gs0 = grad->stride[0];
    b.gs1 = grad->stride[1];
    b.gdt = grad->dtype;
    b.odt = c->out[0]->dtype;
    for (int k = 0; k < T; k++) b.out[k] = (char *)kn__data(c->out[k]);
    b.ticket = d->tickets;
    long long S = b.g.start[T], N = b.g.N;
    if (S == 0) return KN_OK;
    bool f64 = b.odt == KN_F64;
    kn_tensor *scratch = NULL;
    kn_status s = KN_OK;
    if (S <= EMB_SMEM_MAX) {
        unsigned blocks = (unsigned)((N + EMB_ROWS - 1) / EMB_ROWS);
        if (blocks < 1) blocks = 1;
        if (blocks > 1) {
            int64_t n = (int64_t)blocks * S;
            if (!(scratch = kc_scratch(1, &n, f64 ? KN_F64 : KN_F32, c->device))) return kn_error_code();
            b.partial = kn__data(scratch);
        }
        if (f64) KC_LAUNCH(d, emb_cat_backward_smem<double>, blocks, EMB_THREADS, b, d->err_dev);
        else KC_LAUNCH(d, emb_cat_backward_smem<float>, blocks, EMB_THREADS, b, d->err_dev);
        s = kc_after(d, "embedding_cat");
    } else {
        int64_t n = S;
        if (!(scratch = kc_scratch(1, &n, f64 ? KN_F64 : KN_F32, c->device))) return kn_error_code();
        b.partial = kn__data(scratch);
        s = kc_check(cudaMemsetAsync(b.partial, 0, (size_t)S * (f64 ? 8 : 4), d->stream), "embedding_cat");
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
    kn_release(scratch); /* stream order keeps it alive for the kernels queued */
    return s;
}
