/* Mini-batches over the rows of a few tensors (a DataLoader over a
 * TensorDataset): views when the order is kept, gathered copies on the
 * tensors' device when it is shuffled. The order of epoch k is the k-th
 * randperm of a generator seeded with the seed, so a run is reproducible and
 * the same on every device (Philox). */
#include "ops/ops_internal.h" /* kn__same_device */

#include <stdlib.h>

struct kn_batches {
    int n;
    kn_tensor **t; /* retained */
    int64_t rows, batch_size, pos, epoch;
    bool shuffle, drop_last;
    uint64_t seed;
    kn_generator gen;
    kn_tensor *perm; /* this epoch's order (owned; NULL until the epoch's first batch) */
};

kn_batches *kn_batches_new(int n, kn_tensor *const *tensors, int64_t batch_size, bool shuffle, bool drop_last,
                           uint64_t seed) {
    const char *op = "batches_new";
    if (n <= 0 || !tensors) return kn__err(KN_ERR_INVALID, "%s: needs at least one tensor", op), NULL;
    for (int i = 0; i < n; i++)
        if (!tensors[i]) return kn__err_null(op), NULL;
    if (!kn__same_device(op, n, tensors)) return NULL;
    if (batch_size <= 0)
        return kn__err(KN_ERR_INVALID, "%s: batch_size must be positive, got %lld", op, (long long)batch_size), NULL;
    int64_t rows = -1;
    for (int i = 0; i < n; i++) {
        if (kn_ndim(tensors[i]) == 0) return kn__err(KN_ERR_SHAPE, "%s: tensor %d is 0-d (it has no rows)", op, i), NULL;
        int64_t r = kn_size(tensors[i], 0);
        if (rows >= 0 && r != rows)
            return kn__err(KN_ERR_SHAPE, "%s: tensor %d has %lld rows, tensor 0 has %lld", op, i, (long long)r,
                           (long long)rows),
                   NULL;
        rows = r;
    }
    kn_batches *b = calloc(1, sizeof *b);
    kn_tensor **t = calloc((size_t)n, sizeof *t);
    if (!b || !t) {
        free(b);
        free(t);
        return kn__err(KN_ERR_OOM, "%s: out of memory", op), NULL;
    }
    for (int i = 0; i < n; i++) t[i] = kn_retain(tensors[i]);
    *b = (kn_batches){.n = n, .t = t, .rows = rows, .batch_size = batch_size, .shuffle = shuffle,
                      .drop_last = drop_last, .seed = seed, .gen = kn_generator_make(seed)};
    return b;
}

int64_t kn_batches_count(const kn_batches *b) {
    if (!b) return kn__err_null("batches_count"), -1;
    return b->drop_last ? b->rows / b->batch_size : (b->rows + b->batch_size - 1) / b->batch_size;
}

int64_t kn_batches_epoch(const kn_batches *b) {
    if (!b) return kn__err_null("batches_epoch"), -1;
    return b->epoch;
}

static void end_epoch(kn_batches *b) {
    kn_release(b->perm);
    b->perm = NULL;
    b->pos = 0;
    b->epoch++;
}

int64_t kn_batches_next(kn_batches *b, kn_tensor **out) {
    if (!b || !out) return kn__err(KN_ERR_NULL, "batches_next: %s is NULL", b ? "out" : "batches"), -1;
    int64_t left = b->rows - b->pos;
    if (left <= 0 || (b->drop_last && left < b->batch_size)) {
        end_epoch(b);
        return 0;
    }
    if (b->shuffle && !b->perm) {
        /* The order lives outside the caller's scopes, for the whole epoch. */
        kn_scope s = kn_scope_begin();
        b->perm = kn_retain(kn_randperm(b->rows, kn_device_of(b->t[0]), &b->gen));
        kn_scope_end(s);
        if (!b->perm) return -1;
    }
    int64_t len = left < b->batch_size ? left : b->batch_size;
    /* Made in a scope of our own: on a failure nothing is left over; else
     * the batch moves out to the caller's scope. */
    kn_scope s = kn_scope_begin();
    kn_tensor *idx = b->perm ? kn_narrow(b->perm, 0, b->pos, len) : NULL;
    bool ok = true;
    for (int i = 0; i < b->n; i++) {
        out[i] = b->perm ? kn_index_select(b->t[i], 0, idx) : kn_narrow(b->t[i], 0, b->pos, len);
        ok = ok && out[i];
    }
    for (int i = 0; i < b->n; i++) out[i] = ok ? kn_keep(out[i]) : NULL;
    kn_scope_end(s);
    if (!ok) return -1;
    b->pos += len;
    return len;
}

void kn_batches_reset(kn_batches *b) {
    if (!b) return;
    kn_release(b->perm);
    b->perm = NULL;
    b->pos = 0;
    b->epoch = 0;
    b->gen = kn_generator_make(b->seed);
}

void kn_batches_free(kn_batches *b) {
    if (!b) return;
    for (int i = 0; i < b->n; i++) kn_release(b->t[i]);
    kn_release(b->perm);
    free(b->t);
    free(b);
}
