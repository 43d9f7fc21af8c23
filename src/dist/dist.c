/* Data-parallel groups (kiln/dist.h): the group of one process, its
 * transport (a backend's collectives, NCCL on CUDA, or the host) and the
 * collectives on tensors. */
#include "dist/dist_internal.h"

#include <kiln/fft.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* KILN_DIST_TRANSPORT: "host", a backend's collectives by name ("nccl"), or
 * unset (the backend's when it has them and they load, else the host). */
static kn_status pick_transport(kn_dist *d) {
    const char *want = getenv("KILN_DIST_TRANSPORT");
    if (want && !*want) want = NULL;
    bool same = true;
    for (int r = 1; r < d->n; r++) same = same && d->dev[r].kind == d->dev[0].kind;
    const kn_backend *be = same ? kn__backend(d->dev[0].kind) : NULL;
    const char *name = be && be->comm_new ? be->comm_name : NULL;
    if (want && strcmp(want, "host") && (!name || strcmp(want, name)))
        return kn__err(KN_ERR_INVALID, "dist: KILN_DIST_TRANSPORT=%s, but %s (expected host%s%s)", want,
                       name ? "these ranks' backend has another" : "these ranks have no collectives but the host's",
                       name ? " or " : "", name ? name : "");
    if (!name) return KN_OK;
    if (want && !strcmp(want, "host")) {
        snprintf(d->note, sizeof d->note, "KILN_DIST_TRANSPORT=host");
        return KN_OK;
    }
    int idx[MAX_RANKS];
    for (int r = 0; r < d->n; r++) idx[r] = d->dev[r].index;
    kn_status st = KN_OK;
    d->comm = be->comm_new(d->n, idx, &st);
    if (d->comm) {
        d->be = be;
        return KN_OK;
    }
    if (want) /* asked for by name: its failure is the caller's error */
        return kn_error_code() != KN_OK ? kn_error_code() : kn__err(st ? st : KN_ERR_UNSUPPORTED, "dist: %s is not available", name);
    /* Otherwise the host carries on, and says why. */
    snprintf(d->note, sizeof d->note, "%s: %s", name, kn_error_code() != KN_OK ? kn_error() : "not available");
    kn_error_clear();
    return KN_OK;
}

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
    d->n = d->world = n;
    memcpy(d->dev, devices, (size_t)n * sizeof *devices);
    if (pick_transport(d) != KN_OK) {
        free(d);
        return NULL;
    }
    return d;
}

void kn_dist_free(kn_dist *d) {
    if (d && d->comm) d->be->comm_free(d->comm);
    free(d);
}

int kn_dist_size(const kn_dist *d) { return d ? d->n : 0; }
int kn_dist_world_size(const kn_dist *d) { return d ? d->world : 0; }
int kn_dist_rank(const kn_dist *d) { return d ? d->rank0 : -1; }

kn_device kn_dist_device(const kn_dist *d, int rank) {
    if (!d || rank < 0 || rank >= d->n) {
        kn__err(KN_ERR_INVALID, "dist: rank %d out of range", rank);
        return (kn_device){-1, -1};
    }
    return d->dev[rank];
}

const char *kn_dist_transport(const kn_dist *d) { return !d ? NULL : d->comm ? d->be->comm_name : "host"; }

const char *kn_dist_transport_note(const kn_dist *d) { return d ? d->note : ""; }

bool kn__dist_check_group(const char *op, const kn_dist *d, kn_tensor *const *t, kn__dist_use use) {
    if (!d || !t) return kn__err_null(op), false;
    for (int r = 0; r < d->n; r++) {
        if (!t[r]) return kn__err_null(op), false;
        if (!kn_device_equal(kn_device_of(t[r]), d->dev[r])) {
            kn__err(KN_ERR_DEVICE, "%s: rank %d's tensor is on %s, the rank's device is %s", op, r,
                    kn_device_str(kn_device_of(t[r])), kn_device_str(d->dev[r]));
            return false;
        }
        kn_dtype dt = kn_dtype_of(t[r]);
        if (dt != kn_dtype_of(t[0])) {
            kn__err(KN_ERR_DTYPE, "%s: rank %d's tensor is %s, rank 0's %s", op, r, kn_dtype_name(dt),
                    kn_dtype_name(kn_dtype_of(t[0])));
            return false;
        }
        if ((use == DIST_SUMS && dt == KN_BOOL) || (use == DIST_MEANS && !kn_dtype_is_float(kn_dtype_real(dt)))) {
            kn__err(KN_ERR_DTYPE, "%s: cannot %s %s tensors (expected a %s dtype)", op, use == DIST_SUMS ? "sum" : "average",
                    kn_dtype_name(dt), use == DIST_SUMS ? "numeric" : "float or complex");
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

/* Writes host values of dtype hdt into t (converted to its dtype) without autograd. */
static kn_status write_back(kn_tensor *t, const void *v, kn_dtype hdt) {
    kn_tensor *h = kn_from_data(v, hdt, kn_ndim(t), kn_shape(t), KN_CPU);
    if (!h) return kn_error_code();
    kn_no_grad_begin();
    kn_status s = kn_copy_(t, h);
    kn_no_grad_end();
    return s;
}

/* The sum of w[r] * t[r] in double, rank order (integers: the plain sum in
 * int64, w NULL), written to every rank. */
static kn_status host_reduce(const kn_dist *d, kn_tensor *const *t, const double *w) {
    int64_t numel = kn_numel(t[0]);
    bool ints = !kn_dtype_is_float(kn_dtype_of(t[0]));
    if ((uint64_t)numel > SIZE_MAX / 2 / sizeof(double))
        return kn__err(KN_ERR_OOM, "dist: all_reduce of %lld elements is too large", (long long)numel);
    size_t bytes = (size_t)(numel ? numel : 1) * sizeof(double); /* int64 is as large */
    void *acc = calloc(1, bytes), *tmp = malloc(bytes);
    kn_status s = acc && tmp ? KN_OK
                             : kn__err(KN_ERR_OOM, "dist: out of host memory for %lld elements", (long long)numel);
    for (int r = 0; r < d->n && s == KN_OK; r++) {
        s = kn_to_host(t[r], tmp, ints ? KN_I64 : KN_F64);
        if (ints) /* unsigned: wraps as NCCL's sums do */
            for (int64_t i = 0; s == KN_OK && i < numel; i++)
                ((int64_t *)acc)[i] = (int64_t)((uint64_t)((int64_t *)acc)[i] + (uint64_t)((int64_t *)tmp)[i]);
        else
            for (int64_t i = 0; s == KN_OK && i < numel; i++)
                ((double *)acc)[i] += (w ? w[r] : 1.0) * ((double *)tmp)[i];
    }
    kn_scope sc = kn_scope_begin();
    for (int r = 0; r < d->n && s == KN_OK; r++) s = write_back(t[r], acc, ints ? KN_I64 : KN_F64);
    kn_scope_end(sc);
    free(acc);
    free(tmp);
    return s;
}

/* The group's buffers for the backend's collectives: each t[r] itself when
 * contiguous, else a contiguous copy (c[r] set; copied back by the caller). */
static kn_status comm_buffers(const kn_dist *d, kn_tensor *const *t, kn_tensor **c, void **buf) {
    for (int r = 0; r < d->n; r++) {
        c[r] = NULL;
        if (!kn__is_contiguous(t[r]) && !(c[r] = kn_contiguous(t[r]))) return kn_error_code();
        buf[r] = kn__data(c[r] ? c[r] : t[r]);
    }
    return KN_OK;
}

static kn_status copy_back(const kn_dist *d, kn_tensor *const *t, kn_tensor **c) {
    kn_status s = KN_OK;
    kn_no_grad_begin();
    for (int r = 0; r < d->n && s == KN_OK; r++)
        if (c[r]) s = kn_copy_(t[r], c[r]);
    kn_no_grad_end();
    return s;
}

kn_status kn__dist_reduce(kn_dist *d, kn_tensor *const *t, const double *w) {
    if (kn_dtype_is_complex(kn_dtype_of(t[0]))) { /* as pairs of floats: a view, so in place */
        kn_scope sc = kn_scope_begin();
        kn_tensor *v[MAX_RANKS];
        kn_status s = KN_OK;
        for (int r = 0; r < d->n && s == KN_OK; r++)
            if (!(v[r] = kn_view_as_real(t[r]))) s = kn_error_code();
        if (s == KN_OK) s = kn__dist_reduce(d, v, w);
        kn_scope_end(sc);
        return s;
    }
    if (!d->comm) return host_reduce(d, t, w);
    kn_scope sc = kn_scope_begin();
    kn_tensor *c[MAX_RANKS];
    void *buf[MAX_RANKS];
    kn_status s = KN_OK;
    if (w) { /* each rank's weight applied on its device, then a plain sum (one pass more, in its dtype) */
        kn_no_grad_begin();
        for (int r = 0; r < d->n && s == KN_OK; r++) {
            if (!(c[r] = kn_mul_scalar(t[r], w[r]))) s = kn_error_code();
            else buf[r] = kn__data(c[r]);
        }
        kn_no_grad_end();
    } else
        s = comm_buffers(d, t, c, buf);
    if (s == KN_OK) s = d->be->comm_all_reduce(d->comm, buf, (size_t)kn_numel(t[0]), kn_dtype_of(t[0]));
    if (s == KN_OK) s = copy_back(d, t, c);
    kn_scope_end(sc);
    return s;
}

kn_status kn_dist_all_reduce(kn_dist *d, kn_tensor *const *t, kn_dist_op op) {
    if (op != KN_DIST_SUM && op != KN_DIST_MEAN) return kn__err(KN_ERR_INVALID, "all_reduce: unknown op %d", (int)op);
    if (!kn__dist_check_group("all_reduce", d, t, op == KN_DIST_MEAN ? DIST_MEANS : DIST_SUMS)) return kn_error_code();
    double w[MAX_RANKS];
    for (int r = 0; r < d->n; r++) w[r] = 1.0 / d->world;
    return kn__dist_reduce(d, t, op == KN_DIST_MEAN ? w : NULL);
}

kn_status kn_dist_broadcast(kn_dist *d, kn_tensor *const *t, int root) {
    if (!kn__dist_check_group("broadcast", d, t, DIST_ANY)) return kn_error_code();
    if (root < 0 || root >= d->world)
        return kn__err(KN_ERR_INVALID, "broadcast: root %d out of range (a group of %d ranks)", root, d->world);
    kn_status s = KN_OK;
    if (d->comm) { /* as bytes: every dtype is */
        kn_scope sc = kn_scope_begin();
        kn_tensor *c[MAX_RANKS];
        void *buf[MAX_RANKS];
        s = comm_buffers(d, t, c, buf);
        size_t bytes = (size_t)kn_numel(t[0]) * kn_dtype_size(kn_dtype_of(t[0]));
        if (s == KN_OK) s = d->be->comm_broadcast(d->comm, buf, bytes, KN_U8, root);
        if (s == KN_OK) s = copy_back(d, t, c);
        kn_scope_end(sc);
        return s;
    }
    kn_no_grad_begin();
    for (int r = 0; r < d->n && s == KN_OK; r++)
        if (r != root) s = kn_copy_(t[r], t[root]); /* across devices through kn_copy_ */
    kn_no_grad_end();
    return s;
}

bool kn__dist_weights(const char *op, const kn_dist *d, const double *weight, double *w) {
    for (int r = 0; r < d->n; r++) {
        w[r] = weight ? weight[r] : 1.0 / d->world;
        if (!isfinite(w[r])) return kn__err(KN_ERR_INVALID, "%s: rank %d's weight %g is not finite", op, r, w[r]), false;
    }
    return true;
}
