/* Data-parallel training on a group (kiln/dist.h): gradient buckets, the
 * model broadcast from rank 0, the gradient average, and backward with the
 * average overlapped. */
#include "dist/dist_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int kn_dist_buckets(int n, kn_tensor *const *tensors, size_t cap, int *bucket) {
    if (n < 0 || (n > 0 && (!tensors || !bucket))) {
        kn__err(KN_ERR_INVALID, "dist: invalid tensor list for buckets");
        return -1;
    }
    if (cap == 0) cap = KN_DIST_BUCKET_BYTES;
    int nb = 0;
    size_t used = 0;
    kn_dtype dt = KN_F32;
    for (int i = n - 1; i >= 0; i--) {
        if (!tensors[i]) return kn__err_null("dist buckets"), -1;
        size_t bytes = (size_t)kn_numel(tensors[i]) * kn_dtype_size(kn_dtype_of(tensors[i]));
        bool fits = nb > 0 && kn_dtype_of(tensors[i]) == dt && used + bytes <= cap && used > 0;
        if (!fits) nb++, used = 0, dt = kn_dtype_of(tensors[i]);
        used += bytes;
        bucket[i] = nb - 1;
    }
    return nb;
}

/* The parameters of every replica, checked to match rank 0's. */
static const kn_named_tensor **replica_params(const char *op, kn_dist *d, kn_module *const *m, int *count) {
    if (!d || !m) return kn__err_null(op), NULL;
    const kn_named_tensor **p = calloc((size_t)d->n, sizeof *p);
    if (!p) return kn__err(KN_ERR_OOM, "%s: out of host memory", op), NULL;
    int n0 = -1;
    for (int r = 0; r < d->n; r++) {
        int n = 0;
        if (!m[r] || !(p[r] = kn_module_parameters(m[r], &n))) {
            free(p);
            return kn__err_null(op), NULL;
        }
        if (r == 0) n0 = n;
        if (n != n0) {
            kn__err(KN_ERR_SHAPE, "%s: rank %d's model has %d parameters, rank 0's %d", op, r, n, n0);
            free(p);
            return NULL;
        }
        if (!kn_device_equal(kn_module_device(m[r]), d->dev[r])) {
            kn__err(KN_ERR_DEVICE, "%s: rank %d's model is on %s, the rank's device is %s", op, r,
                    kn_device_str(kn_module_device(m[r])), kn_device_str(d->dev[r]));
            free(p);
            return NULL;
        }
        for (int i = 0; i < n; i++)
            if (strcmp(p[r][i].name, p[0][i].name)) {
                kn__err(KN_ERR_SHAPE, "%s: rank %d's parameter %d is '%s', rank 0's '%s'", op, r, i, p[r][i].name,
                        p[0][i].name);
                free(p);
                return NULL;
            }
    }
    *count = n0;
    return p;
}

kn_status kn_dist_broadcast_module(kn_dist *d, kn_module *const *replicas) {
    const char *op = "broadcast_module";
    if (!d || !replicas) return kn__err_null(op), KN_ERR_NULL;
    /* The state dicts: parameters and buffers (running statistics too). */
    const kn_named_tensor *sd[MAX_RANKS];
    int n0 = -1;
    for (int r = 0; r < d->n; r++) {
        int n = 0;
        if (!replicas[r] || !(sd[r] = kn_module_state_dict(replicas[r], &n))) return kn__err_null(op), KN_ERR_NULL;
        if (r == 0) n0 = n;
        if (n != n0)
            return kn__err(KN_ERR_SHAPE, "%s: rank %d's model has %d tensors, rank 0's %d", op, r, n, n0);
        for (int i = 0; i < n; i++)
            if (strcmp(sd[r][i].name, sd[0][i].name))
                return kn__err(KN_ERR_SHAPE, "%s: rank %d's tensor %d is '%s', rank 0's '%s'", op, r, i,
                               sd[r][i].name, sd[0][i].name);
    }
    kn_status s = KN_OK;
    kn_tensor *group[MAX_RANKS];
    for (int i = 0; i < n0 && s == KN_OK; i++) {
        for (int r = 0; r < d->n; r++) group[r] = sd[r][i].tensor;
        s = kn_dist_broadcast(d, group, 0);
    }
    return s;
}

/* Bucket b of one rank's tensors g[0..n-1] as one flat tensor on its device
 * (members from the last, as kn_dist_buckets takes them), times scale. */
static kn_tensor *flatten(kn_tensor *const *g, int n, const int *bucket, int b, double scale) {
    int m = 0;
    for (int i = n - 1; i >= 0; i--) m += bucket[i] == b;
    kn_tensor *small[16], **members = m <= 16 ? small : malloc((size_t)m * sizeof *members);
    if (!members) return kn__err(KN_ERR_OOM, "dist: out of host memory"), NULL;
    m = 0;
    for (int i = n - 1; i >= 0; i--)
        if (bucket[i] == b) members[m++] = kn_reshape(g[i], 1, (int64_t[]){-1});
    kn_no_grad_begin();
    kn_tensor *flat = m == 1 ? kn_contiguous(members[0]) : kn_concat(m, members, 0);
    if (flat && scale != 1.0) flat = kn_mul_scalar(flat, scale);
    kn_no_grad_end();
    if (members != small) free(members);
    return flat;
}

/* The slices of flat copied back into bucket b's tensors g[i]. */
static kn_status unflatten(kn_tensor *flat, kn_tensor *const *g, int n, const int *bucket, int b) {
    kn_status s = KN_OK;
    int64_t off = 0;
    kn_no_grad_begin();
    for (int i = n - 1; i >= 0 && s == KN_OK; i--) {
        if (bucket[i] != b) continue;
        int64_t k = kn_numel(g[i]);
        kn_tensor *part = kn_view(kn_narrow(flat, 0, off, k), kn_ndim(g[i]), kn_shape(g[i]));
        s = part ? kn_copy_(g[i], part) : kn_error_code();
        off += k;
    }
    kn_no_grad_end();
    return s;
}

kn_status kn_dist_average_gradients(kn_dist *d, kn_module *const *replicas, const double *weight, size_t cap) {
    const char *op = "average_gradients";
    int n = 0;
    const kn_named_tensor **p = replica_params(op, d, replicas, &n);
    if (!p) return kn_error_code();
    double w[MAX_RANKS];
    if (!kn__dist_weights(op, d, weight, w)) return free(p), kn_error_code();
    kn_tensor **grads = calloc((size_t)(n ? n : 1) * (size_t)d->n, sizeof *grads);
    int *bucket = calloc((size_t)(n ? n : 1), sizeof *bucket);
    kn_status s = grads && bucket ? KN_OK : kn__err(KN_ERR_OOM, "%s: out of host memory", op);
    /* grads[r * n + i]: rank r's gradient of parameter i (rank 0's first, for the buckets). */
    for (int i = 0; i < n && s == KN_OK; i++)
        for (int r = 0; r < d->n && s == KN_OK; r++) {
            kn_tensor *g = kn_grad(p[r][i].tensor);
            if (!g)
                s = kn__err(KN_ERR_AUTOGRAD, "%s: parameter '%s' has no gradient on rank %d (%s)", op, p[r][i].name,
                            r, kn_device_str(d->dev[r]));
            grads[(size_t)r * (size_t)n + (size_t)i] = g;
        }
    int nb = 0;
    if (s == KN_OK && (nb = kn_dist_buckets(n, grads, cap, bucket)) < 0) s = kn_error_code();
    /* Bucket by bucket: each rank's gradients flattened into one tensor on
     * its device, one reduction, then the slices copied back. */
    for (int b = 0; b < nb && s == KN_OK; b++) {
        kn_scope sc = kn_scope_begin();
        kn_tensor *flat[MAX_RANKS];
        for (int r = 0; r < d->n && s == KN_OK; r++)
            if (!(flat[r] = flatten(grads + (size_t)r * (size_t)n, n, bucket, b, 1.0))) s = kn_error_code();
        if (s == KN_OK) s = kn__dist_reduce(d, flat, w);
        for (int r = 0; r < d->n && s == KN_OK; r++) s = unflatten(flat[r], grads + (size_t)r * (size_t)n, n, bucket, b);
        kn_scope_end(sc);
    }
    free(bucket);
    free(grads);
    free(p);
    return s;
}

/* ---- backward with the all-reduce overlapped ----------------------------------------- */
/* The ranks' tapes are walked in lockstep, a node each in turn, so every
 * rank reaches a bucket's last gradient at about the same time; the hook of
 * each final gradient counts down its bucket on its rank, the rank's
 * gradients of a complete bucket are flattened at once (on its stream, in
 * order with its backward), and when the bucket is complete on every rank
 * its all-reduce is queued: on the communicator's own streams where the
 * backend has them (NCCL), so backward goes on meanwhile; else in place, on
 * the ranks' streams or through the host. */
typedef struct {
    kn_tensor *t;
    int i;
} param_ref;

typedef struct overlap overlap;
typedef struct {
    overlap *o;
    int rank;
} rank_hook;

struct overlap {
    kn_dist *d;
    const kn_named_tensor **p; /* [rank][i] */
    int n, nb;                 /* parameters, buckets */
    int *bucket;               /* [i] */
    param_ref *by_tensor;      /* [rank * n + j], each rank's sorted by tensor */
    int *pending;              /* [b * ranks + r]: gradients still to come */
    int *complete;             /* [b]: ranks on which bucket b is complete */
    bool *fired;               /* [rank * n + i]: its gradient became final in this backward */
    kn_tensor **flat;          /* [b * ranks + r], retained */
    int next;                  /* the next bucket to reduce: in order, as on every process of the group */
    double w[MAX_RANKS];
    bool async;   /* the backend's comm_all_reduce_async */
    bool queued;  /* an async sum is queued: join before the buffers go */
    kn_status s;  /* the first error: every hook then stops its walk */
    rank_hook hook[MAX_RANKS];
};

static int cmp_param_ref(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const param_ref *)a)->t, y = (uintptr_t)((const param_ref *)b)->t;
    return x < y ? -1 : x > y;
}

/* Bucket b is complete on every rank: its sum over the ranks. */
static kn_status launch(overlap *o, int b) {
    kn_dist *d = o->d;
    kn_tensor **flat = o->flat + (size_t)b * (size_t)d->n;
    /* The host reads every rank's bucket back, which waits for its device:
     * done in the middle of backward, that would stall each GPU's queue at
     * every bucket. Its sums wait for the end of the walk instead. */
    if (!d->comm) return KN_OK;
    if (!o->async) return kn__dist_reduce(d, flat, o->w);
    void *buf[MAX_RANKS];
    for (int r = 0; r < d->n; r++) buf[r] = kn__data(flat[r]);
    kn_dtype dt = kn_dtype_of(flat[0]); /* complex as pairs of its real dtype */
    size_t count = (size_t)kn_numel(flat[0]) * (kn_dtype_is_complex(dt) ? 2 : 1);
    kn_status s = d->be->comm_all_reduce_async(d->comm, buf, count, kn_dtype_real(dt));
    o->queued = o->queued || s == KN_OK;
    return s;
}

static kn_status grad_ready(kn_tensor *leaf, void *ctx) {
    rank_hook *h = ctx;
    overlap *o = h->o;
    int ranks = o->d->n, r = h->rank;
    if (o->s != KN_OK) return o->s;
    param_ref key = {leaf, 0}, *refs = o->by_tensor + (size_t)r * (size_t)o->n;
    param_ref *hit = o->n ? bsearch(&key, refs, (size_t)o->n, sizeof *refs, cmp_param_ref) : NULL;
    if (!hit) return KN_OK; /* an input that requires grad, not a parameter */
    while (hit > refs && hit[-1].t == leaf) hit--;
    for (; o->s == KN_OK && hit < refs + o->n && hit->t == leaf; hit++) { /* a tensor listed twice: each entry */
        int b = o->bucket[hit->i];
        size_t k = (size_t)b * (size_t)ranks + (size_t)r;
        o->fired[(size_t)r * (size_t)o->n + (size_t)hit->i] = true;
        if (--o->pending[k] > 0) continue;
        kn_scope sc = kn_scope_begin();
        kn_tensor **grads = calloc((size_t)o->n, sizeof *grads);
        if (!grads) o->s = kn__err(KN_ERR_OOM, "dist backward: out of host memory");
        for (int i = 0; grads && i < o->n; i++) grads[i] = o->bucket[i] == b ? kn_grad(o->p[r][i].tensor) : NULL;
        /* The weight applied before the backend's plain sum; the host applies it itself. */
        kn_tensor *flat = grads ? flatten(grads, o->n, o->bucket, b, o->async ? o->w[r] : 1.0) : NULL;
        free(grads);
        if (o->s == KN_OK && !flat) o->s = kn_error_code();
        if (o->s == KN_OK) o->flat[k] = kn_retain(flat);
        kn_scope_end(sc);
        /* In bucket order, whatever order the buckets complete in: every
         * process of a group must queue its collectives in the same order. */
        if (o->s == KN_OK) ++o->complete[b];
        while (o->s == KN_OK && o->next < o->nb && o->complete[o->next] == ranks) o->s = launch(o, o->next++);
    }
    return o->s;
}

kn_status kn_dist_backward(kn_dist *d, kn_module *const *replicas, kn_tensor *const *losses, const double *weight,
                           size_t cap) {
    const char *op = "dist backward";
    if (!losses) return kn__err_null(op), KN_ERR_NULL;
    overlap o = {.d = d};
    o.p = replica_params(op, d, replicas, &o.n);
    if (!o.p) return kn_error_code();
    int ranks = d->n;
    if (ranks < 1 || ranks > MAX_RANKS || o.n < 0) /* as kn_dist_new made it; bounds the sizes below */
        return free(o.p), kn__err(KN_ERR_INVALID, "%s: a group of %d ranks", op, ranks);
    o.s = kn__dist_weights(op, d, weight, o.w) ? KN_OK : kn_error_code();
    for (int r = 0; r < ranks && o.s == KN_OK; r++) {
        if (!losses[r]) kn__err_null(op), o.s = KN_ERR_NULL;
        else if (kn_numel(losses[r]) != 1)
            o.s = kn__err(KN_ERR_SHAPE, "%s: rank %d's loss has %lld elements (expected a scalar)", op, r,
                          (long long)kn_numel(losses[r]));
        else if (!kn_device_equal(kn_device_of(losses[r]), d->dev[r]))
            o.s = kn__err(KN_ERR_DEVICE, "%s: rank %d's loss is on %s, the rank's device is %s", op, r,
                          kn_device_str(kn_device_of(losses[r])), kn_device_str(d->dev[r]));
    }
    size_t n = (size_t)(o.n ? o.n : 1), cells = 0;
    kn_tensor **params = calloc(n, sizeof *params);
    o.bucket = calloc(n, sizeof *o.bucket);
    o.by_tensor = calloc(n * (size_t)ranks, sizeof *o.by_tensor);
    if (o.s == KN_OK && (!params || !o.bucket || !o.by_tensor)) o.s = kn__err(KN_ERR_OOM, "%s: out of host memory", op);
    /* Buckets by rank 0's parameters (a gradient has its parameter's shape and dtype). */
    for (int i = 0; o.s == KN_OK && i < o.n; i++) params[i] = o.p[0][i].tensor;
    if (o.s == KN_OK && (o.nb = kn_dist_buckets(o.n, params, cap, o.bucket)) < 0) o.s = kn_error_code();
    free(params);
    if (o.s == KN_OK) {
        cells = (size_t)(o.nb ? o.nb : 1) * (size_t)ranks;
        o.pending = calloc(cells, sizeof *o.pending);
        o.complete = calloc((size_t)(o.nb ? o.nb : 1), sizeof *o.complete);
        o.flat = calloc(cells, sizeof *o.flat);
        o.fired = calloc(n * (size_t)ranks, sizeof *o.fired);
        if (!o.pending || !o.complete || !o.flat || !o.fired) o.s = kn__err(KN_ERR_OOM, "%s: out of host memory", op);
    }
    for (int r = 0; o.s == KN_OK && r < ranks; r++) {
        param_ref *refs = o.by_tensor + (size_t)r * n;
        for (int i = 0; i < o.n; i++) {
            refs[i] = (param_ref){o.p[r][i].tensor, i};
            o.pending[(size_t)o.bucket[i] * (size_t)ranks + (size_t)r]++;
        }
        qsort(refs, (size_t)o.n, sizeof *refs, cmp_param_ref);
        o.hook[r] = (rank_hook){&o, r};
    }
    o.async = o.s == KN_OK && d->comm && d->be->comm_all_reduce_async;
    /* Every rank's tape, a node each in turn. */
    kn__backward *bw[MAX_RANKS] = {0};
    bool done[MAX_RANKS] = {0};
    int begun = 0;
    for (; o.s == KN_OK && begun < ranks; begun++)
        if (!(bw[begun] = kn__backward_begin(losses[begun], NULL, grad_ready, &o.hook[begun]))) o.s = kn_error_code();
    for (bool all = false; o.s == KN_OK && !all;) {
        all = true;
        for (int r = 0; r < ranks && o.s == KN_OK; r++) {
            if (done[r]) continue;
            kn_status st = kn__backward_step(bw[r], &done[r]);
            if (st != KN_OK && o.s == KN_OK) o.s = st;
            all = all && done[r];
        }
    }
    for (int r = 0; r < begun; r++) {
        kn_status st = bw[r] ? kn__backward_end(bw[r]) : KN_OK;
        if (st != KN_OK && o.s == KN_OK) o.s = st;
    }
    /* A parameter that no gradient reached: its bucket was never complete. */
    for (int r = 0; o.s == KN_OK && r < ranks; r++)
        for (int i = 0; o.s == KN_OK && i < o.n; i++)
            if (!o.fired[(size_t)r * n + (size_t)i])
                o.s = kn__err(KN_ERR_AUTOGRAD, "%s: parameter '%s' %s on rank %d (%s)", op, o.p[r][i].name,
                              kn_grad(o.p[r][i].tensor) ? "got no gradient in this backward (it has one from before)"
                                                        : "has no gradient",
                              r, kn_device_str(d->dev[r]));
    for (int b = 0; o.s == KN_OK && !d->comm && b < o.nb; b++) /* the host's sums, deferred by launch */
        o.s = kn__dist_reduce(d, o.flat + (size_t)b * (size_t)ranks, o.w);
    if (o.queued) { /* even after an error: the buffers must outlive the sums */
        kn_status st = d->be->comm_join(d->comm);
        if (o.s == KN_OK) o.s = st;
    }
    kn_tensor **grads = o.s == KN_OK ? calloc(n, sizeof *grads) : NULL;
    if (o.s == KN_OK && !grads) o.s = kn__err(KN_ERR_OOM, "%s: out of host memory", op);
    for (int r = 0; o.s == KN_OK && r < ranks; r++) { /* each rank's sums back into its gradients */
        for (int i = 0; i < o.n; i++) grads[i] = kn_grad(o.p[r][i].tensor);
        for (int b = 0; o.s == KN_OK && b < o.nb; b++)
            o.s = unflatten(o.flat[(size_t)b * (size_t)ranks + (size_t)r], grads, o.n, o.bucket, b);
    }
    free(grads);
    for (size_t k = 0; o.flat && k < cells; k++) kn_release(o.flat[k]);
    free(o.flat);
    free(o.fired);
    free(o.complete);
    free(o.pending);
    free(o.by_tensor);
    free(o.bucket);
    free(o.p);
    return o.s;
}
