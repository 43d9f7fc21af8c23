/* Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC'11): a counter-based generator, so element k of any random op is a
 * pure function of (seed, offset, k) and every backend draws the same bits. */
#include "internal.h"
#include "backends/common/philox.h"

#include <math.h>

void kn_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    kn__philox(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1], out);
}

static _Thread_local kn_generator global = {0, 0};

kn_generator *kn_default_generator(void) { return &global; }
void kn_manual_seed(uint64_t seed) { global = (kn_generator){seed, 0}; }
kn_generator kn_generator_make(uint64_t seed) { return (kn_generator){seed, 0}; }

/* Reserves the counters an op of n elements uses; returns the first. */
uint64_t kn__generator_take(kn_generator *g, int64_t n, int per_counter) {
    if (!g) g = &global;
    uint64_t first = g->offset;
    g->offset += (uint64_t)((n + per_counter - 1) / per_counter);
    return first;
}

static kn_tensor *random_tensor(const char *op, int ndim, const int64_t *shape, kn_dtype dt,
                                kn_device dev, kn_generator *gen, kn_random_kind kind, double a,
                                double b) {
    if (!gen) gen = &global;
    kn_tensor *t = kn__new_named(op, ndim, shape, dt, dev);
    if (!t) return NULL;
    int64_t n = kn__numel_shape(ndim, shape);
    kn_random_args r = {.out = kn__view(t), .kind = kind, .seed = (int64_t)gen->seed,
                        .offset = (int64_t)kn__generator_take(gen, n, kind == KN_RANDOM_NORMAL ? 2 : 4),
                        .a = a, .b = b};
    if (kn__launch(KN_OP_RANDOM, dev, &r) != KN_OK) {
        kn_release(t);
        return NULL;
    }
    return kn__scoped(t);
}

kn_tensor *kn_rand(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev, kn_generator *gen) {
    if (!kn_dtype_is_float(dt)) {
        kn__err(KN_ERR_DTYPE, "rand: needs a floating-point dtype, not %s", kn_dtype_name(dt));
        return NULL;
    }
    return random_tensor("rand", ndim, shape, dt, dev, gen, KN_RANDOM_UNIFORM, 0, 1);
}

kn_tensor *kn_randn(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev, kn_generator *gen) {
    if (!kn_dtype_is_float(dt)) {
        kn__err(KN_ERR_DTYPE, "randn: needs a floating-point dtype, not %s", kn_dtype_name(dt));
        return NULL;
    }
    return random_tensor("randn", ndim, shape, dt, dev, gen, KN_RANDOM_NORMAL, 0, 1);
}

kn_tensor *kn_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, kn_dtype dt,
                      kn_device dev, kn_generator *gen) {
    if (high <= low) {
        kn__err(KN_ERR_INVALID, "randint: empty range [%lld, %lld)", (long long)low, (long long)high);
        return NULL;
    }
    return random_tensor("randint", ndim, shape, dt, dev, gen, KN_RANDOM_INT, (double)low, (double)high);
}

kn_status kn_uniform_(kn_tensor *t, double lo, double hi, kn_generator *gen) {
    if (!t) return kn__err_null("uniform_"), KN_ERR_NULL;
    kn_scope s = kn_scope_begin();
    kn_tensor *r = random_tensor("uniform_", t->ndim, t->shape, t->dtype, t->storage->device, gen,
                                 KN_RANDOM_UNIFORM, lo, hi);
    kn_no_grad_begin();
    kn_status st = r ? kn_copy_(t, r) : kn_error_code();
    kn_no_grad_end();
    kn_scope_end(s);
    return st;
}

kn_status kn_normal_(kn_tensor *t, double mean, double std, kn_generator *gen) {
    if (!t) return kn__err_null("normal_"), KN_ERR_NULL;
    kn_scope s = kn_scope_begin();
    kn_tensor *r = random_tensor("normal_", t->ndim, t->shape, t->dtype, t->storage->device, gen,
                                 KN_RANDOM_NORMAL, mean, std);
    kn_no_grad_begin();
    kn_status st = r ? kn_copy_(t, r) : kn_error_code();
    kn_no_grad_end();
    kn_scope_end(s);
    return st;
}

/* A permutation from sorting 64 random bits per element: the same on every
 * backend because the keys are. Ties (probability ~n^2/2^65) keep index order. */
kn_tensor *kn_randperm(int64_t n, kn_device dev, kn_generator *gen) {
    if (n < 0) {
        kn__err(KN_ERR_INVALID, "randperm: n must be >= 0, got %lld", (long long)n);
        return NULL;
    }
    kn_scope s = kn_scope_begin();
    kn_tensor *keys = random_tensor("randperm", 1, &n, KN_I64, KN_CPU, gen, KN_RANDOM_BITS, 0, 0);
    kn_tensor *out = NULL;
    if (keys) {
        int64_t *k = kn__data(keys);
        int64_t *idx = NULL;
        kn_tensor *perm = kn_empty(1, &n, KN_I64, KN_CPU);
        if (perm) {
            idx = kn__data(perm);
            for (int64_t i = 0; i < n; i++) idx[i] = i;
            /* Shell sort on keys (stable enough: ties are near impossible). */
            for (int64_t gap = n / 2; gap > 0; gap /= 2)
                for (int64_t i = gap; i < n; i++) {
                    int64_t v = idx[i];
                    int64_t j = i;
                    while (j >= gap && (uint64_t)k[idx[j - gap]] > (uint64_t)k[v]) {
                        idx[j] = idx[j - gap];
                        j -= gap;
                    }
                    idx[j] = v;
                }
            out = kn_to(perm, dev);
        }
    }
    kn_keep(out);
    kn_scope_end(s);
    return out;
}
