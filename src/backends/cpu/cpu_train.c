/* CPU kernels for randomness (Philox), dropout and the optimizer updates. */
#include "cpu_internal.h"
#include "backends/common/philox.h"

#include <math.h>

static void rand_range(int64_t b, int64_t e, void *p) {
    const kn_random_args *r = p;
    char *out = r->out.data;
    kn_dtype dt = r->out.dtype;
    size_t es = kn_dtype_size(dt);
    for (int64_t k = b; k < e; k++) {
        double v = kn__random_value((int)r->kind, (uint64_t)r->seed, (uint64_t)r->offset, k, r->a, r->b);
        if (r->kind == KN_RANDOM_INT || r->kind == KN_RANDOM_BITS)
            kn__store_i64(out + (size_t)k * es, dt, (int64_t)v);
        else
            kn__store(out + (size_t)k * es, dt, v);
    }
}

kn_status kn__cpu_random(int device, const void *args) {
    (void)device;
    const kn_random_args *a = args;
    kn__parallel_for(kn_operand_numel(&a->out), 16384, rand_range, (void *)a);
    return KN_OK;
}

/* Dropout over elements [lo, hi) of the span of 4 * KN_PHILOX_BATCH
 * elements starting at k0 (float32, contiguous). keep = (word >> 8) * 2^-24
 * >= p, i.e. word >> 8 >= ceil(p * 2^24): the integer compare decides
 * exactly as the float form does. Compiled twice: AVX2 vectorizes Philox. */
#define DROP_SPAN_ARGS                                                                    \
    const float *x, float *y, uint8_t *m, int64_t k0, int64_t lo, int64_t hi, uint64_t seed, \
        uint64_t off, uint32_t thresh, float scale

static void drop_span_generic(DROP_SPAN_ARGS) {
    uint32_t w[KN_PHILOX_BATCH][4];
    kn__philox_batch(seed, off + (uint64_t)(k0 / 4), w);
    for (int64_t k = lo; k < hi; k++) {
        bool keep = (w[(k - k0) / 4][(k - k0) % 4] >> 8) >= thresh;
        if (m) m[k] = keep;
        y[k] = x[k] * (keep ? scale : 0.0f); /* x * mask * scale, as PyTorch: NaN stays NaN */
    }
}

#ifdef KN_HAVE_PHILOX_AVX2
/* Multipliers (scale or 0) for the 32 elements of one span, in element order:
 * element 4j + w takes word w of counter j, so the 4 word vectors (lane j)
 * are interleaved with a 4x8 transpose. */
__attribute__((target("avx2"))) static void drop_span_avx2(DROP_SPAN_ARGS) {
    uint32_t w[4][KN_PHILOX_BATCH];
    kn__philox8_avx2(seed, off + (uint64_t)(k0 / 4), w);
    const __m256i t = _mm256_set1_epi32((int)thresh);
    const __m256 sc = _mm256_set1_ps(scale);
    __m256 v[4];
    for (int q = 0; q < 4; q++) {
        __m256i bits = _mm256_srli_epi32(_mm256_loadu_si256((const __m256i *)w[q]), 8);
        /* bits >= t  <=>  !(t > bits); both below 2^24, so signed compares are exact. */
        __m256i drop = _mm256_cmpgt_epi32(t, bits);
        v[q] = _mm256_andnot_ps(_mm256_castsi256_ps(drop), sc);
    }
    __m256 a0 = _mm256_unpacklo_ps(v[0], v[1]), a1 = _mm256_unpackhi_ps(v[0], v[1]);
    __m256 a2 = _mm256_unpacklo_ps(v[2], v[3]), a3 = _mm256_unpackhi_ps(v[2], v[3]);
    __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
    __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
    float mul[4 * KN_PHILOX_BATCH];
    _mm256_storeu_ps(mul + 0, _mm256_permute2f128_ps(b0, b1, 0x20));
    _mm256_storeu_ps(mul + 8, _mm256_permute2f128_ps(b2, b3, 0x20));
    _mm256_storeu_ps(mul + 16, _mm256_permute2f128_ps(b0, b1, 0x31));
    _mm256_storeu_ps(mul + 24, _mm256_permute2f128_ps(b2, b3, 0x31));
    if (lo == k0 && hi == k0 + 4 * KN_PHILOX_BATCH) {
        for (int q = 0; q < 4; q++)
            _mm256_storeu_ps(y + k0 + 8 * q, _mm256_mul_ps(_mm256_loadu_ps(x + k0 + 8 * q), _mm256_loadu_ps(mul + 8 * q)));
    } else {
        for (int64_t k = lo; k < hi; k++) y[k] = x[k] * mul[k - k0];
    }
    if (m)
        for (int64_t k = lo; k < hi; k++) m[k] = mul[k - k0] != 0;
}
#endif

static void drop_range(int64_t b, int64_t e, void *p) {
    const kn_dropout_args *c = p;
    const kn_operand *x = &c->x, *y = &c->out;
    double keep_p = 1 - c->p, scale = keep_p > 0 ? 1 / keep_p : 0;
    uint64_t seed = (uint64_t)c->seed, off = (uint64_t)c->offset;
    uint32_t thresh = (uint32_t)ceil(c->p * 16777216.0);
    uint8_t *m = c->mask.data; /* NULL when absent */
    enum { SPAN = 4 * KN_PHILOX_BATCH };
    void (*span)(DROP_SPAN_ARGS) = drop_span_generic;
#ifdef KN_HAVE_PHILOX_AVX2
    if (__builtin_cpu_supports("avx2")) span = drop_span_avx2;
#endif
    if (x->dtype == KN_F32) {
        for (int64_t k0 = b - b % SPAN; k0 < e; k0 += SPAN)
            span(x->data, y->data, m, k0, k0 < b ? b : k0, k0 + SPAN < e ? k0 + SPAN : e, seed, off,
                 thresh, (float)scale);
        return;
    }
    const char *xs = x->data;
    char *ys = y->data;
    size_t es = kn_dtype_size(x->dtype);
    for (int64_t k = b; k < e; k++) {
        double u = kn__random_value(KN_RANDOM_UNIFORM, seed, off, k, 0, 1);
        bool keep = u >= c->p;
        if (m) m[k] = keep;
        kn__store(ys + (size_t)k * es, x->dtype, kn__load(xs + (size_t)k * es, x->dtype) * (keep ? scale : 0));
    }
}

kn_status kn__cpu_dropout(int device, const void *args) {
    (void)device;
    /* The op layer passes contiguous x and outputs. */
    const kn_dropout_args *a = args;
    kn__parallel_for(kn_operand_numel(&a->x), 16384, drop_range, (void *)a);
    return KN_OK;
}

kn_status kn__cpu_adam(int device, const void *args) {
    (void)device;
    const kn_adam_args *a = args;
    const kn_operand *p = &a->param, *m = &a->m, *v = &a->v, *g = &a->grad;
    int64_t n = kn_operand_numel(p);
    double lr = a->lr, b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay;
    double t = kn__load(a->step.data, a->step.dtype);
    double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    bool adamw = a->decoupled;
    if (p->dtype == KN_F32 && g->dtype == KN_F32 && m->dtype == KN_F32) {
        float *P = p->data, *M = m->data, *V = v->data;
        const float *G = g->data;
        float step = (float)(lr / bc1), sb2 = (float)(1 / sqrt(bc2)), fb1 = (float)b1, fb2 = (float)b2;
        float decay = adamw ? (float)(1 - lr * wd) : 1, l2 = adamw ? 0 : (float)wd, feps = (float)eps;
        for (int64_t i = 0; i < n; i++) {
            float gi = G[i] + l2 * P[i];
            M[i] = fb1 * M[i] + (1 - fb1) * gi;
            V[i] = fb2 * V[i] + (1 - fb2) * gi * gi;
            P[i] = P[i] * decay - step * M[i] / (sqrtf(V[i]) * sb2 + feps);
        }
        return KN_OK;
    }
    char *P = p->data, *M = m->data, *V = v->data;
    const char *G = g->data;
    size_t ep = kn_dtype_size(p->dtype), em = kn_dtype_size(m->dtype), eg = kn_dtype_size(g->dtype);
    for (int64_t i = 0; i < n; i++) {
        double pi = kn__load(P + i * ep, p->dtype), gi = kn__load(G + i * eg, g->dtype);
        double mi = kn__load(M + i * em, m->dtype), vi = kn__load(V + i * em, m->dtype);
        if (!adamw) gi += wd * pi;
        else pi *= 1 - lr * wd;
        mi = b1 * mi + (1 - b1) * gi;
        vi = b2 * vi + (1 - b2) * gi * gi;
        pi -= lr / bc1 * mi / (sqrt(vi) / sqrt(bc2) + eps);
        kn__store(P + i * ep, p->dtype, pi);
        kn__store(M + i * em, m->dtype, mi);
        kn__store(V + i * em, m->dtype, vi);
    }
    return KN_OK;
}

kn_status kn__cpu_sgd(int device, const void *args) {
    (void)device;
    const kn_sgd_args *a = args;
    const kn_operand *p = &a->param, *buf = &a->buf, *g = &a->grad;
    int64_t n = kn_operand_numel(p);
    double lr = a->lr, mom = a->momentum, damp = a->dampening, wd = a->weight_decay;
    bool nesterov = a->nesterov, fresh = a->fresh;
    char *P = p->data, *B = buf->data; /* NULL: no momentum buffer */
    const char *G = g->data;
    size_t ep = kn_dtype_size(p->dtype), eg = kn_dtype_size(g->dtype), eb = B ? kn_dtype_size(buf->dtype) : 0;
    for (int64_t i = 0; i < n; i++) {
        double pi = kn__load(P + i * ep, p->dtype), d = kn__load(G + i * eg, g->dtype) + wd * pi;
        if (B) {
            double b = fresh ? d : mom * kn__load(B + i * eb, buf->dtype) + (1 - damp) * d;
            kn__store(B + i * eb, buf->dtype, b);
            d = nesterov ? d + mom * b : b;
        }
        kn__store(P + i * ep, p->dtype, pi - lr * d);
    }
    return KN_OK;
}
