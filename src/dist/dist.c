/* Data-parallel groups (kiln/dist.h): the host transport, gradient buckets
 * and the module-level broadcast and average. */
#include "core/internal.h"

#include <kiln/dist.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANKS 64

struct kn_dist {
    int n;
    kn_device dev[MAX_RANKS];
};

kn_dist *kn_dist_new(int n, const kn_device *devices) {
    if (n < 1 || n > MAX_RANKS || !devices) {
        kn__err(KN_ERR_INVALID, "dist: %d ranks (expected 1 to %d devices)", n, MAX_RANKS);
        return NULL;
    }
    for (int r = 0; r < n; r++) {
        if (!kn_device_ok(devices[r])) {
            kn__err(KN_ERR_DEVICE, "dist: rank %d: device %s is not available", r, kn_device_str(devices[r]));
            return NULL;
        }
        for (int q = 0; q < r; q++)
            if (kn_device_equal(devices[q], devices[r])) {
                kn__err(KN_ERR_DEVICE, "dist: device %s is named twice (ranks %d and %d); each rank needs its own",
                        kn_device_str(devices[r]), q, r);
                return NULL;
            }
    }
    kn_dist *d = calloc(1, sizeof *d);
    if (!d) {
        kn__err(KN_ERR_OOM, "dist: out of host memory");
        return NULL;
    }
    d->n = n;
    memcpy(d->dev, devices, (size_t)n * sizeof *devices);
    return d;
}

void kn_dist_free(kn_dist *d) { free(d); }

int kn_dist_size(const kn_dist *d) { return d ? d->n : 0; }

kn_device kn_dist_device(const kn_dist *d, int rank) {
    if (!d || rank < 0 || rank >= d->n) {
        kn__err(KN_ERR_INVALID, "dist: rank %d out of range", rank);
        return (kn_device){-1, -1};
    }
    return d->dev[rank];
}

const char *kn_dist_transport(const kn_dist *d) { return d ? "host" : NULL; }

/* t[0..n-1]: present, rank r's on rank r's device, one shape, one dtype
 * (a float one where the ranks' values are summed). */
static bool check_group(const char *op, const kn_dist *d, kn_tensor *const *t, bool sums) {
    if (!d || !t) return kn__err_null(op), false;
    for (int r = 0; r < d->n; r++) {
        if (!t[r]) return kn__err_null(op), false;
        if (!kn_device_equal(kn_device_of(t[r]), d->dev[r])) {
            kn__err(KN_ERR_DEVICE, "%s: rank %d's tensor is on %s, the rank's device is %s", op, r,
                    kn_device_str(kn_device_of(t[r])), kn_device_str(d->dev[r]));
            return false;
        }
        kn_dtype dt = kn_dtype_of(t[r]);
        if ((sums && !kn_dtype_is_float(dt)) || dt != kn_dtype_of(t[0])) {
            kn__err(KN_ERR_DTYPE, "%s: rank %d's tensor is %s (expected one %sdtype, rank 0's %s)", op, r,
                    kn_dtype_name(dt), sums ? "float " : "", kn_dtype_name(kn_dtype_of(t[0])));
            return false;
        }
        if (kn_ndim(t[r]) != kn_ndim(t[0]) ||
            memcmp(kn_shape(t[r]), kn_shape(t[0]), (size_t)kn_ndim(t[0]) * sizeof(int64_t))) {
            char a[128], b[128];
            kn__err(KN_ERR_SHAPE, "%s: rank %d's tensor is %s, rank 0's %s", op, r, kn_shape_str(t[r], a, sizeof a),
                    kn_shape_str(t[0], b, sizeof b));
            return false;
        }
    }
    return true;
}

/* Writes host doubles into t (converted to its dtype) without autograd. */
static kn_status write_back(kn_tensor *t, const double *v) {
    kn_tensor *h = kn_from_data(v, KN_F64, kn_ndim(t), kn_shape(t), KN_CPU);
    if (!h) return kn_error_code();
    kn_no_grad_begin();
    kn_status s = kn_copy_(t, h);
    kn_no_grad_end();
    return s;
}

/* The sum of w[r] * t[r] in double, rank order, written to every rank. */
static kn_status host_reduce(const kn_dist *d, kn_tensor *const *t, const double *w) {
    int64_t numel = kn_numel(t[0]);
    if ((uint64_t)numel > SIZE_MAX / 2 / sizeof(double))
        return kn__err(KN_ERR_OOM, "dist: all_reduce of %lld elements is too large", (long long)numel);
    size_t bytes = (size_t)(numel ? numel : 1) * sizeof(double);
    double *acc = calloc(1, bytes), *tmp = malloc(bytes);
    kn_status s = acc && tmp ? KN_OK
                             : kn__err(KN_ERR_OOM, "dist: out of host memory for %lld elements", (long long)numel);
    for (int r = 0; r < d->n && s == KN_OK; r++) {
        s = kn_to_host(t[r], tmp, KN_F64);
        for (int64_t i = 0; s == KN_OK && i < numel; i++) acc[i] += w[r] * tmp[i];
    }
    kn_scope sc = kn_scope_begin();
    for (int r = 0; r < d->n && s == KN_OK; r++) s = write_back(t[r], acc);
    kn_scope_end(sc);
    free(acc);
    free(tmp);
    return s;
}

kn_status kn_dist_all_reduce(kn_dist *d, kn_tensor *const *t, kn_dist_op op) {
    if (!check_group("all_reduce", d, t, true)) return kn_error_code();
    if (op != KN_DIST_SUM && op != KN_DIST_MEAN) return kn__err(KN_ERR_INVALID, "all_reduce: unknown op %d", (int)op);
    double w[MAX_RANKS];
    for (int r = 0; r < d->n; r++) w[r] = op == KN_DIST_MEAN ? 1.0 / d->n : 1.0;
    return host_reduce(d, t, w);
}

kn_status kn_dist_broadcast(kn_dist *d, kn_tensor *const *t, int root) {
    if (!check_group("broadcast", d, t, false)) return kn_error_code();
    if (root < 0 || root >= d->n) return kn__err(KN_ERR_INVALID, "broadcast: root %d out of range", root);
    kn_status s = KN_OK;
    kn_no_grad_begin();
    for (int r = 0; r < d->n && s == KN_OK; r++)
        if (r != root) s = kn_copy_(t[r], t[root]); /* across devices through kn_copy_ */
    kn_no_grad_end();
    return s;
}

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

kn_status kn_dist_average_gradients(kn_dist *d, kn_module *const *replicas, const double *weight, size_t cap) {
    const char *op = "average_gradients";
    int n = 0;
    const kn_named_tensor **p = replica_params(op, d, replicas, &n);
    if (!p) return kn_error_code();
    double w[MAX_RANKS];
    for (int r = 0; r < d->n; r++) {
        w[r] = weight ? weight[r] : 1.0 / d->n;
        if (!isfinite(w[r])) {
            free(p);
            return kn__err(KN_ERR_INVALID, "%s: rank %d's weight %g is not finite", op, r, w[r]);
        }
    }
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
    kn_tensor **members = calloc((size_t)(n ? n : 1), sizeof *members);
    if (s == KN_OK && !members) s = kn__err(KN_ERR_OOM, "%s: out of host memory", op);
    for (int b = 0; b < nb && s == KN_OK; b++) {
        kn_scope sc = kn_scope_begin();
        kn_tensor *flat[MAX_RANKS];
        for (int r = 0; r < d->n && s == KN_OK; r++) {
            kn_tensor **g = grads + (size_t)r * (size_t)n;
            int m = 0;
            for (int i = n - 1; i >= 0; i--)
                if (bucket[i] == b) members[m++] = kn_reshape(g[i], 1, (int64_t[]){-1});
            flat[r] = m == 1 ? kn_contiguous(members[0]) : kn_concat(m, members, 0);
            if (!flat[r]) s = kn_error_code();
        }
        if (s == KN_OK) s = host_reduce(d, flat, w);
        for (int r = 0; r < d->n && s == KN_OK; r++) {
            int64_t off = 0;
            for (int i = n - 1; i >= 0 && s == KN_OK; i--) {
                if (bucket[i] != b) continue;
                kn_tensor *g = grads[(size_t)r * (size_t)n + (size_t)i];
                int64_t k = kn_numel(g);
                kn_tensor *part = kn_view(kn_narrow(flat[r], 0, off, k), kn_ndim(g), kn_shape(g));
                kn_no_grad_begin();
                s = part ? kn_copy_(g, part) : kn_error_code();
                kn_no_grad_end();
                off += k;
            }
        }
        kn_scope_end(sc);
    }
    free(members);
    free(bucket);
    free(grads);
    free(p);
    return s;
}
