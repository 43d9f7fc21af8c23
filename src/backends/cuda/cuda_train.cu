/* Random numbers (Philox 4x32-10, bit-exact with kn__random_value of
 * backends/common/philox.h), dropout
 * (the CPU's mask for the same seed and offset), and the optimizer updates.
 *
 * The double arithmetic of the element mapping uses explicit round-to-nearest
 * intrinsics: nvcc would otherwise fuse a + b * c into an FMA, whose single
 * rounding differs from the CPU's two.
 *
 * Under graph capture a random kernel also adds the graph's device-side shift
 * to its offset (see cuda_graph.c).
 *
 * Adam: consecutive float32 calls with the same hyperparameters are queued
 * and run as one kernel over every parameter when anything else is enqueued
 * on the device (or it is read, synchronized, captured). */
#include "cuda_common.cuh"

#include <math.h>

__device__ __forceinline__ double u01(uint32_t x) { return (double)(x >> 8) * (1.0 / 16777216.0); }

/* ---- random ------------------------------------------------------------------------------- */
typedef struct {
    char *out;
    int dt, kind;
    long long n;
    unsigned long long seed, offset;
    const unsigned long long *shift; /* graph's shift, or NULL */
    double a, b;
} rand_args;

__global__ void random_kernel(rand_args r) {
    kc_pdl_wait();
    int per = r.kind == KN_RANDOM_NORMAL ? 2 : 4, es = kc_dsize(r.dt);
    unsigned long long off = r.offset + (r.shift ? *r.shift : 0ull);
    bool ints = r.kind == KN_RANDOM_INT || r.kind == KN_RANDOM_BITS;
    KC_LOOP(j, (r.n + per - 1) / per) {
        uint32_t w[4];
        philox_block(r.seed, off + (unsigned long long)j, w);
#pragma unroll
        for (int q = 0; q < 4; q++) { /* unrolled: w stays in registers */
            long long k = j * per + q;
            if (q >= per || k >= r.n) continue;
            double v;
            if (r.kind == KN_RANDOM_NORMAL) {
                double u1 = 1.0 - u01(w[(2 * q) & 3]), u2 = u01(w[(2 * q + 1) & 3]);
                double s = sqrt(__dmul_rn(-2.0, log(u1))), cs = cos(__dmul_rn(2.0 * M_PI, u2));
                v = __dadd_rn(r.a, __dmul_rn(__dmul_rn(r.b, s), cs));
            } else if (r.kind == KN_RANDOM_UNIFORM) {
                v = __dadd_rn(r.a, __dmul_rn(r.b - r.a, u01(w[q])));
            } else if (r.kind == KN_RANDOM_INT) {
                v = __dadd_rn(r.a, floor(__dmul_rn((double)w[q] * (1.0 / 4294967296.0), r.b - r.a)));
            } else {
                v = (double)w[q];
            }
            if (ints) kc_store_i(r.out + k * es, r.dt, (long long)v);
            else kc_store(r.out + k * es, r.dt, v);
        }
    }
}

extern "C" kn_status kc_capture_shift(kc_dev *d, unsigned long long seed, unsigned long long offset, long long n,
                                      int per, const unsigned long long **shift) {
    *shift = NULL;
    if (!d->capture) return KN_OK;
    unsigned long long end = offset + (unsigned long long)((n + per - 1) / per);
    int j = 0;
    while (j < d->rng_slots && d->rng_seed[j] != seed) j++;
    if (j == d->rng_slots) {
        if (j == KC_RNG_SLOTS)
            return kn__err(KN_ERR_UNSUPPORTED, "graph_capture: more than %d random generators in one graph", KC_RNG_SLOTS);
        d->rng_seed[j] = seed, d->rng_lo[j] = offset, d->rng_hi[j] = end;
        d->rng_slots++;
    }
    if (offset < d->rng_lo[j]) d->rng_lo[j] = offset;
    if (end > d->rng_hi[j]) d->rng_hi[j] = end;
    *shift = d->rng_shift + j;
    return KN_OK;
}

extern "C" kn_status kn__cuda_random(int device, const void *args) {
    const kn_random_args *a = (const kn_random_args *)args;
    kc_dev *d = kc_enter(device, "random", false);
    if (!d) return kn_error_code();
    const kn_operand *t = &a->out;
    rand_args r = {(char *)t->data, t->dtype, (int)a->kind, kn_operand_numel(t), (unsigned long long)a->seed,
                   (unsigned long long)a->offset, NULL, a->a, a->b};
    if (r.n == 0) return KN_OK;
    int per = r.kind == KN_RANDOM_NORMAL ? 2 : 4;
    kn_status s = kc_capture_shift(d, r.seed, r.offset, r.n, per, &r.shift);
    if (s != KN_OK) return s;
    KC_LAUNCH(d, random_kernel, kc_blocks((r.n + per - 1) / per), KC_THREADS, r);
    return kc_after(d, "random");
}

/* ---- dropout: contiguous x, y and mask -------------------------------------------------------- */
/* keep = (word >> 8) * 2^-24 >= p, compared as integers: (word >> 8) >= ceil(p * 2^24). */
__global__ void dropout_kernel(const char *x, char *y, uint8_t *mask, int dt, long long n, uint32_t thresh, double scale,
                               unsigned long long seed, unsigned long long offset, const unsigned long long *shift) {
    kc_pdl_wait();
    int es = kc_dsize(dt);
    unsigned long long off = offset + (shift ? *shift : 0ull);
    float fscale = (float)scale;
    KC_LOOP(j, (n + 3) / 4) {
        uint32_t w[4];
        philox_block(seed, off + (unsigned long long)j, w);
#pragma unroll
        for (int q = 0; q < 4; q++) {
            long long k = j * 4 + q;
            if (k >= n) continue;
            bool keep = (w[q] >> 8) >= thresh;
            if (mask) mask[k] = keep;
            if (dt == KN_F32) ((float *)y)[k] = keep ? ((const float *)x)[k] * fscale : 0.0f;
            else kc_store(y + k * es, dt, keep ? kc_load(x + k * es, dt) * scale : 0);
        }
    }
}

extern "C" kn_status kn__cuda_dropout(int device, const void *args) {
    const kn_dropout_args *a = (const kn_dropout_args *)args;
    kc_dev *d = kc_enter(device, "dropout", false);
    if (!d) return kn_error_code();
    long long n = kn_operand_numel(&a->x);
    if (n == 0) return KN_OK;
    double keep_p = 1 - a->p, scale = keep_p > 0 ? 1 / keep_p : 0;
    const unsigned long long *shift;
    kn_status s = kc_capture_shift(d, (unsigned long long)a->seed, (unsigned long long)a->offset, n, 4, &shift);
    kc_buf x; /* element k of x in contiguous order */
    if (s == KN_OK) s = kc_contig(d, &a->x, a->x.dtype, &x);
    if (s != KN_OK) return s;
    KC_LAUNCH(d, dropout_kernel, kc_blocks((n + 3) / 4), KC_THREADS, (const char *)x.v.data, (char *)a->out.data,
              (uint8_t *)a->mask.data, x.v.dtype, n, (uint32_t)ceil(a->p * 16777216.0), scale,
              (unsigned long long)a->seed, (unsigned long long)a->offset, shift);
    kc_buf_free(d, &x);
    return kc_after(d, "dropout");
}

typedef struct {
    unsigned long long span[KC_RNG_SLOTS];
} spans;

__global__ void shift_kernel(unsigned long long *shift, spans s, int n) {
    kc_pdl_wait();
    if ((int)threadIdx.x < n) shift[threadIdx.x] += s.span[threadIdx.x];
}

static kn_status adam_take_shift(kc_dev *d, const spans *s);

extern "C" kn_status kc_rng_shift_advance(kc_dev *d) {
    spans s;
    for (int j = 0; j < d->rng_slots; j++) s.span[j] = d->rng_hi[j] - d->rng_lo[j];
    /* A queued Adam kernel (a training step's last) does it, without a launch of its own. */
    if (adam_take_shift(d, &s) == KN_OK) return KN_OK;
    KC_LAUNCH(d, shift_kernel, 1, 32, d->rng_shift, s, d->rng_slots);
    return kc_check(cudaGetLastError(), "graph_capture");
}

/* ---- Adam ---------------------------------------------------------------------------------------- */
#define ADAM_MAX 48  /* parameters per fused launch (kernel parameters must stay under 4 KB) */
#define ADAM_CHUNK 1024 /* elements per block */

typedef struct {
    float *p, *m, *v;
    const float *g;
    long long n;
} adam_item;

typedef struct {
    adam_item items[ADAM_MAX];
    int block_start[ADAM_MAX + 1];
    int count;
    const float *t; /* step count, on the device */
    double lr, b1, b2, eps, wd;
    int adamw;
    /* A graph's random shifts, advanced by block 0 (see kc_rng_shift_advance). */
    unsigned long long *shift;
    spans shift_by;
    int n_shift;
} adam_batch;

static adam_batch queues[16];

#define ADAM_THREADS 256
#define ADAM_PER (ADAM_CHUNK / ADAM_THREADS) /* elements a thread updates */

/* Each thread loads its elements first, so their latency overlaps the
 * bias corrections thread 0 computes (two double pow). */
__global__ void adam_fused(const __grid_constant__ adam_batch b) {
    kc_pdl_wait();
    __shared__ float k[2]; /* lr / bc1, 1 / sqrt(bc2) */
    if (blockIdx.x == 0 && (int)threadIdx.x < b.n_shift) b.shift[threadIdx.x] += b.shift_by.span[threadIdx.x];
    int item = 0;
    while (item + 1 < b.count && b.block_start[item + 1] <= (int)blockIdx.x) item++;
    const adam_item &it = b.items[item];
    long long base = (long long)(blockIdx.x - b.block_start[item]) * ADAM_CHUNK + threadIdx.x;
    float p[ADAM_PER], g[ADAM_PER], m[ADAM_PER], v[ADAM_PER];
#pragma unroll
    for (int j = 0; j < ADAM_PER; j++) {
        long long i = base + j * ADAM_THREADS;
        bool in = i < it.n;
        p[j] = in ? it.p[i] : 0, g[j] = in ? it.g[i] : 0, m[j] = in ? it.m[i] : 0, v[j] = in ? it.v[i] : 0;
    }
    if (threadIdx.x == 0) {
        double t = *b.t;
        k[0] = (float)(b.lr / (1 - pow(b.b1, t)));
        k[1] = (float)(1 / sqrt(1 - pow(b.b2, t)));
    }
    __syncthreads();
    float step = k[0], sb2 = k[1], fb1 = (float)b.b1, fb2 = (float)b.b2, feps = (float)b.eps;
    float decay = b.adamw ? (float)(1 - b.lr * b.wd) : 1.0f, l2 = b.adamw ? 0.0f : (float)b.wd;
#pragma unroll
    for (int j = 0; j < ADAM_PER; j++) {
        long long i = base + j * ADAM_THREADS;
        if (i >= it.n) continue;
        float gi = g[j] + l2 * p[j];
        float mi = fb1 * m[j] + (1 - fb1) * gi;
        float vi = fb2 * v[j] + (1 - fb2) * gi * gi;
        it.m[i] = mi;
        it.v[i] = vi;
        it.p[i] = p[j] * decay - step * mi / (sqrtf(vi) * sb2 + feps);
    }
}

extern "C" kn_status kc_adam_flush(kc_dev *d) {
    adam_batch *q = &queues[d->index];
    if (!q->count) return KN_OK;
    int blocks = q->block_start[q->count];
    KC_LAUNCH(d, adam_fused, blocks, ADAM_THREADS, *q);
    q->count = 0;
    q->n_shift = 0;
    return kc_after(d, "adam");
}

static kn_status adam_take_shift(kc_dev *d, const spans *s) {
    adam_batch *q = &queues[d->index];
    if (!q->count) return KN_ERR_UNSUPPORTED;
    q->shift = d->rng_shift;
    q->shift_by = *s;
    q->n_shift = d->rng_slots;
    return KN_OK;
}

/* Any dtype, one parameter, through double (the CPU's general path). */
__global__ void adam_any(char *P, int pdt, char *M, char *V, int mdt, const char *G, int gdt, long long n,
                         const float *tp, double lr, double b1, double b2, double eps, double wd, int adamw) {
    kc_pdl_wait();
    double t = *tp, bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    int ep = kc_dsize(pdt), em = kc_dsize(mdt), eg = kc_dsize(gdt);
    KC_LOOP(i, n) {
        double pi = kc_load(P + i * ep, pdt), gi = kc_load(G + i * eg, gdt);
        double mi = kc_load(M + i * em, mdt), vi = kc_load(V + i * em, mdt);
        if (!adamw) gi += wd * pi;
        else pi *= 1 - lr * wd;
        mi = b1 * mi + (1 - b1) * gi;
        vi = b2 * vi + (1 - b2) * gi * gi;
        pi -= lr / bc1 * mi / (sqrt(vi) / sqrt(bc2) + eps);
        kc_store(P + i * ep, pdt, pi);
        kc_store(M + i * em, mdt, mi);
        kc_store(V + i * em, mdt, vi);
    }
}

extern "C" kn_status kn__cuda_adam(int device, const void *args) {
    const kn_adam_args *a = (const kn_adam_args *)args;
    kc_dev *d = kc_enter(device, "adam", true);
    if (!d) return kn_error_code();
    const kn_operand *p = &a->param, *m = &a->m, *v = &a->v;
    const float *t = (const float *)a->step.data;
    long long n = kn_operand_numel(p);
    if (n == 0) return KN_OK;
    adam_batch *q = &queues[d->index];
    bool f32 = p->dtype == KN_F32 && a->grad.dtype == KN_F32 && m->dtype == KN_F32 && v->dtype == KN_F32 &&
               a->step.dtype == KN_F32;
    bool same = q->count && q->t == t && q->lr == a->lr && q->b1 == a->beta1 && q->b2 == a->beta2 &&
                q->eps == a->eps && q->wd == a->weight_decay && q->adamw == (int)a->decoupled;
    /* A strided gradient is copied; the copy must outlive the update, which
     * then runs at once instead of waiting in the queue. */
    bool strided = !kn_operand_contiguous(&a->grad);
    long long blocks = (n + ADAM_CHUNK - 1) / ADAM_CHUNK;
    if (q->count &&
        (!f32 || !same || strided || q->count == ADAM_MAX || q->block_start[q->count] + blocks > (1ll << 30))) {
        kn_status s = kc_adam_flush(d);
        if (s != KN_OK) return s;
    }
    if (a->step.dtype != KN_F32) return kn__err(KN_ERR_DTYPE, "adam: the step count must be float32");
    kc_buf g;
    kn_status s = kc_contig(d, &a->grad, a->grad.dtype, &g);
    if (s != KN_OK) return s;
    if (!f32) {
        KC_LAUNCH(d, adam_any, kc_blocks(n), KC_THREADS, (char *)p->data, p->dtype, (char *)m->data, (char *)v->data,
                  m->dtype, (const char *)g.v.data, g.v.dtype, n, t, a->lr, a->beta1, a->beta2, a->eps,
                  a->weight_decay, (int)a->decoupled);
        kc_buf_free(d, &g);
        return kc_after(d, "adam");
    }
    if (!q->count) {
        q->t = t;
        q->lr = a->lr, q->b1 = a->beta1, q->b2 = a->beta2, q->eps = a->eps, q->wd = a->weight_decay;
        q->adamw = (int)a->decoupled;
        q->block_start[0] = 0;
    }
    q->items[q->count] =
        (adam_item){(float *)p->data, (float *)m->data, (float *)v->data, (const float *)g.v.data, n};
    q->block_start[q->count + 1] = q->block_start[q->count] + (int)blocks;
    q->count++;
    if (!g.scratch) return kc_sync_mode() ? kc_adam_flush(d) : KN_OK;
    s = kc_adam_flush(d);
    kc_buf_free(d, &g);
    return s;
}

/* ---- SGD: through double, as the CPU; any strides (operands: param, grad, buf) ------------------ */
__global__ void sgd_kernel(const __grid_constant__ kn_geom it, char *P, int pdt, char *B, int bdt, const char *G,
                           int gdt, double lr, double mom, double damp, double wd, int nesterov, int fresh) {
    kc_pdl_wait();
    int ep = kc_dsize(pdt), eb = kc_dsize(bdt), eg = kc_dsize(gdt);
    KC_LOOP(i, it.numel) {
        long long o[3];
        kc_offsets<3>(it, i, o);
        double pi = kc_load(P + o[0] * ep, pdt), dv = kc_load(G + o[1] * eg, gdt) + wd * pi;
        if (B) {
            double b = fresh ? dv : mom * kc_load(B + o[2] * eb, bdt) + (1 - damp) * dv;
            kc_store(B + o[2] * eb, bdt, b);
            dv = nesterov ? dv + mom * b : b;
        }
        kc_store(P + o[0] * ep, pdt, pi - lr * dv);
    }
}

extern "C" kn_status kn__cuda_sgd(int device, const void *args) {
    const kn_sgd_args *a = (const kn_sgd_args *)args;
    kc_dev *d = kc_enter(device, "sgd", false);
    if (!d) return kn_error_code();
    bool buf = kn_operand_present(&a->buf);
    const kn_operand *ops[3] = {&a->param, &a->grad, buf ? &a->buf : &a->param};
    kn_geom it;
    kn_geom_init(&it, 3, ops);
    if (it.numel == 0) return KN_OK;
    KC_LAUNCH(d, sgd_kernel, kc_blocks(it.numel), KC_THREADS, it, (char *)a->param.data, a->param.dtype,
              buf ? (char *)a->buf.data : (char *)NULL, buf ? a->buf.dtype : KN_F32, (const char *)a->grad.data,
              a->grad.dtype, a->lr, a->momentum, a->dampening, a->weight_decay, (int)a->nesterov, (int)a->fresh);
    return kc_after(d, "sgd");
}
