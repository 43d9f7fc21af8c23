/* kiln — randomness: one counter-based generator (Philox 4x32-10) that gives
 * the same bits on every backend for the same seed and offset. */
#ifndef KILN_RANDOM_H
#define KILN_RANDOM_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A stream of Philox counters under one key. Each random op takes the next
 * ceil(n/4) counters (n elements), so results depend only on (seed, offset). */
typedef struct kn_generator {
    uint64_t seed;
    uint64_t offset; /* next unused 128-bit counter */
} kn_generator;

/* The global generator (seeded with 0 until kn_manual_seed). */
kn_generator *kn_default_generator(void);
void kn_manual_seed(uint64_t seed);
kn_generator kn_generator_make(uint64_t seed);

/* One Philox4x32-10 block: 4 words from a 128-bit counter and a 64-bit key. */
void kn_philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* gen NULL means the global generator. */
kn_tensor *kn_rand(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev, kn_generator *gen);
kn_tensor *kn_randn(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev, kn_generator *gen);
/* Integers in [low, high). */
kn_tensor *kn_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, kn_dtype dt,
                      kn_device dev, kn_generator *gen);
/* A random permutation of 0..n-1 (KN_I64). */
kn_tensor *kn_randperm(int64_t n, kn_device dev, kn_generator *gen);
/* In place: uniform in [lo, hi) / normal(mean, std). */
kn_status kn_uniform_(kn_tensor *t, double lo, double hi, kn_generator *gen);
kn_status kn_normal_(kn_tensor *t, double mean, double std, kn_generator *gen);

#ifdef __cplusplus
}
#endif
#endif
