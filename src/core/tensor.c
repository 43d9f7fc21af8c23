/* Tensors and storage: lifetime, geometry, creation and reading back. */
#include "internal.h"
#include "complex.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic int64_t live_tensors;

int64_t kn_live_tensors(void) { return atomic_load(&live_tensors); }

/* ---- storage ----------------------------------------------------------------- */
kn_storage *kn__storage_new(size_t nbytes, kn_device dev) {
    const kn_backend *b = kn__backend(dev.kind);
    if (!b || dev.index < 0 || dev.index >= b->device_count()) {
        kn__err(KN_ERR_DEVICE, "alloc: device %s is not available", kn_device_str(dev));
        return NULL;
    }
    kn_storage *s = calloc(1, sizeof *s);
    if (!s) {
        kn__err(KN_ERR_OOM, "alloc: out of host memory");
        return NULL;
    }
    s->refcount = 1;
    s->nbytes = nbytes;
    s->device = dev;
    uint64_t seq = kn__err_seq();
    s->data = b->alloc(dev.index, nbytes ? nbytes : 1);
    if (!s->data) {
        size_t fr = 0, tot = 0;
        free(s);
        /* A backend that said why (larger than it can bind, a device that
         * failed to start) keeps its message. */
        if (kn__err_seq() != seq) return NULL;
        if (b->memory && b->memory(dev.index, &fr, &tot) == KN_OK)
            kn__err(KN_ERR_OOM, "out of memory on %s: asked for %zu bytes, %zu of %zu free",
                    kn_device_str(dev), nbytes, fr, tot);
        else
            kn__err(KN_ERR_OOM, "out of memory on %s: asked for %zu bytes", kn_device_str(dev),
                    nbytes);
        return NULL;
    }
    return s;
}

void kn__storage_release(kn_storage *s) {
    if (!s || --s->refcount > 0) return;
    if (s->release) s->release(s);
    else if (!s->external) kn__backend(s->device.kind)->free(s->device.index, s->data, s->nbytes);
    free(s);
}

/* ---- views for kernels ---------------------------------------------------------- */
kn_operand kn__view(const kn_tensor *t) {
    kn_operand v;
    memset(&v, 0, sizeof v);
    if (!t) return v;
    v.data = kn__data(t);
    v.dtype = t->dtype;
    v.ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) {
        v.shape[d] = t->shape[d];
        v.stride[d] = t->stride[d];
    }
    return v;
}

kn_tensor *kn__wrap_view(const kn_operand *v, kn_device dev) {
    if (!v || !kn_operand_present(v)) return NULL;
    kn_storage *s = calloc(1, sizeof *s);
    if (!s) {
        kn__err(KN_ERR_OOM, "out of host memory");
        return NULL;
    }
    s->refcount = 1;
    s->data = v->data;
    s->device = dev;
    s->external = true;
    /* The span the view reaches (strides are never negative in kiln). */
    size_t span = 1;
    for (int d = 0; d < v->ndim; d++) span += (size_t)((v->shape[d] > 0 ? v->shape[d] : 1) - 1) * (size_t)v->stride[d];
    s->nbytes = span * kn_dtype_size(v->dtype);
    kn_tensor *t = kn__alias(&(kn_tensor){.storage = s, .dtype = v->dtype}, v->ndim, v->shape, v->stride, 0);
    kn__storage_release(s); /* the alias holds its own reference */
    return t;
}

/* ---- geometry helpers ---------------------------------------------------------- */
int64_t kn__numel_shape(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

void kn__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i] > 1 ? shape[i] : 1;
    }
}

bool kn__is_contiguous(const kn_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

int kn__dim(const char *op, int dim, int ndim) {
    int d = dim < 0 ? dim + ndim : dim;
    if (d < 0 || d >= (ndim ? ndim : 1) || (ndim == 0 && d != 0)) {
        kn__err(KN_ERR_INVALID, "%s: dim %d out of range for a %d-d tensor", op, dim, ndim);
        return -1;
    }
    return d;
}

const char *kn__shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

int kn__broadcast(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                  int64_t *out) {
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t a = i < n - na ? 1 : sa[i - (n - na)];
        int64_t b = i < n - nb ? 1 : sb[i - (n - nb)];
        if (a != b && a != 1 && b != 1) {
            char x[128], y[128];
            kn__err(KN_ERR_SHAPE, "%s: shapes %s and %s cannot be broadcast", op,
                    kn__shape_str(na, sa, x, sizeof x), kn__shape_str(nb, sb, y, sizeof y));
            return -1;
        }
        out[i] = a == 1 ? b : a;
    }
    return n;
}

/* ---- creation and lifetime --------------------------------------------------------- */
static kn_tensor *alloc_struct(void) {
    kn_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        kn__err(KN_ERR_OOM, "out of host memory for a tensor");
        return NULL;
    }
    t->refcount = 1;
    atomic_fetch_add(&live_tensors, 1);
    return t;
}

static bool check_shape(const char *op, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > KN_MAX_DIMS) {
        kn__err(KN_ERR_INVALID, "%s: %d dimensions (at most %d)", op, ndim, KN_MAX_DIMS);
        return false;
    }
    if (ndim && !shape) {
        kn__err(KN_ERR_INVALID, "%s: shape is NULL", op);
        return false;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            kn__err(KN_ERR_INVALID, "%s: negative size %lld in dim %d", op, (long long)shape[i], i);
            return false;
        }
    return true;
}

kn_tensor *kn__new(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev) {
    return kn__new_named("tensor", ndim, shape, dt, dev);
}

kn_tensor *kn__new_named(const char *op, int ndim, const int64_t *shape, kn_dtype dt, kn_device dev) {
    if (!check_shape(op, ndim, shape)) return NULL;
    if ((unsigned)dt >= KN_DTYPE_COUNT) {
        kn__err(KN_ERR_DTYPE, "%s: invalid dtype %d", op, (int)dt);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        /* Overflow-safe: a product past 2^56 bytes is refused before it wraps. */
        if (shape[i] && n > (((int64_t)1 << 56) / (int64_t)kn_dtype_size(dt)) / shape[i]) {
            char b[160];
            kn__err(KN_ERR_OOM, "%s: out of memory: a tensor of shape %s (%s) is too large", op,
                    kn__shape_str(ndim, shape, b, sizeof b), kn_dtype_name(dt));
            return NULL;
        }
        n *= shape[i];
    }
    kn_storage *s = kn__storage_new((size_t)n * kn_dtype_size(dt), dev);
    if (!s) {
        if (strcmp(op, "tensor")) { /* say which op asked */
            char msg[900];
            snprintf(msg, sizeof msg, "%s", kn_error());
            kn__err(kn_error_code(), "%s: %s", op, msg);
        }
        return NULL;
    }
    kn_tensor *t = alloc_struct();
    if (!t) {
        kn__storage_release(s);
        return NULL;
    }
    t->storage = s;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    kn__contiguous_strides(ndim, shape, t->stride);
    t->dtype = dt;
    kn__complex_note(dt);
    return t;
}

kn_tensor *kn__new_like(const kn_tensor *t) {
    return kn__new(t->ndim, t->shape, t->dtype, t->storage->device);
}

kn_tensor *kn__alias(const kn_tensor *src, int ndim, const int64_t *shape, const int64_t *stride,
                     int64_t offset) {
    kn_tensor *t = alloc_struct();
    if (!t) return NULL;
    t->storage = src->storage;
    src->storage->refcount++;
    t->ndim = ndim;
    if (ndim) {
        memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
        memcpy(t->stride, stride, (size_t)ndim * sizeof *stride);
    }
    t->offset = offset;
    t->dtype = src->dtype;
    return t;
}

kn_tensor *kn__expand(const kn_tensor *t, int ndim, const int64_t *shape) {
    int64_t stride[KN_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int j = i - lead;
        stride[i] = (j < 0 || t->shape[j] == 1) ? 0 : t->stride[j];
    }
    return kn__alias(t, ndim, shape, stride, t->offset);
}

kn_tensor *kn_retain(kn_tensor *t) {
    if (t) t->refcount++;
    return t;
}

void kn__free_tensor(kn_tensor *t) {
    if (t->grad_fn) kn__node_free(t->grad_fn);
    if (t->grad) kn_release(t->grad);
    kn__storage_release(t->storage);
    atomic_fetch_sub(&live_tensors, 1);
    free(t);
}

void kn_release(kn_tensor *t) {
    if (t && --t->refcount == 0) kn__free_tensor(t);
}

/* ---- properties ------------------------------------------------------------------- */
int kn_ndim(const kn_tensor *t) { return t ? t->ndim : -1; }
const int64_t *kn_shape(const kn_tensor *t) { return t ? t->shape : NULL; }
int64_t kn_numel(const kn_tensor *t) { return t ? kn__numel_shape(t->ndim, t->shape) : 0; }
kn_dtype kn_dtype_of(const kn_tensor *t) { return t ? t->dtype : KN_F32; }
kn_device kn_device_of(const kn_tensor *t) {
    return t ? t->storage->device : (kn_device){-1, -1};
}
bool kn_is_contiguous(const kn_tensor *t) { return t && kn__is_contiguous(t); }
int64_t kn_offset(const kn_tensor *t) { return t ? t->offset : 0; }
bool kn_shares_storage(const kn_tensor *a, const kn_tensor *b) {
    return a && b && a->storage == b->storage;
}

int64_t kn_size(const kn_tensor *t, int dim) {
    if (!t) return -1;
    int d = kn__dim("size", dim, t->ndim);
    return d < 0 || t->ndim == 0 ? -1 : t->shape[d];
}

int64_t kn_stride(const kn_tensor *t, int dim) {
    if (!t) return -1;
    int d = kn__dim("stride", dim, t->ndim);
    return d < 0 || t->ndim == 0 ? -1 : t->stride[d];
}

const char *kn_shape_str(const kn_tensor *t, char *buf, size_t cap) {
    if (!t) {
        snprintf(buf, cap, "(null)");
        return buf;
    }
    return kn__shape_str(t->ndim, t->shape, buf, cap);
}

/* A kernel launch whose operands may be complex (core/complex.h). */
static kn_status launch(kn_op op, kn_device dev, void *args) {
    return kn__complex_made() && kn__args_complex(op, args) ? kn__launch_complex(op, dev, args)
                                                           : kn__launch(op, dev, args);
}

/* ---- creation ------------------------------------------------------------------------ */
kn_tensor *kn_empty(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev) {
    return kn__scoped(kn__new_named("empty", ndim, shape, dt, dev));
}

static kn_tensor *filled_named(const char *op, int ndim, const int64_t *shape, double v, kn_dtype dt,
                               kn_device dev) {
    kn_tensor *t = kn__new_named(op, ndim, shape, dt, dev);
    if (!t) return NULL;
    kn_fill_args a = {.out = kn__view(t), .value = v};
    if (launch(KN_OP_FILL, dev, &a) != KN_OK) {
        kn_release(t);
        return NULL;
    }
    return kn__scoped(t);
}

kn_tensor *kn_zeros(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev) {
    return filled_named("zeros", ndim, shape, 0, dt, dev);
}
kn_tensor *kn_ones(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev) {
    return filled_named("ones", ndim, shape, 1, dt, dev);
}
kn_tensor *kn_full(int ndim, const int64_t *shape, double v, kn_dtype dt, kn_device dev) {
    return filled_named("full", ndim, shape, v, dt, dev);
}
kn_tensor *kn_scalar(double v, kn_dtype dt, kn_device dev) { return filled_named("scalar", 0, NULL, v, dt, dev); }

kn_tensor *kn_zeros_like(const kn_tensor *t) {
    if (!t) return kn__err_null("zeros_like"), NULL;
    return filled_named("zeros_like", t->ndim, t->shape, 0, t->dtype, t->storage->device);
}
kn_tensor *kn_ones_like(const kn_tensor *t) {
    if (!t) return kn__err_null("ones_like"), NULL;
    return filled_named("ones_like", t->ndim, t->shape, 1, t->dtype, t->storage->device);
}
kn_tensor *kn_full_like(const kn_tensor *t, double v) {
    if (!t) return kn__err_null("full_like"), NULL;
    return filled_named("full_like", t->ndim, t->shape, v, t->dtype, t->storage->device);
}

kn_tensor *kn_from_data(const void *data, kn_dtype dt, int ndim, const int64_t *shape,
                        kn_device dev) {
    if (!check_shape("from_data", ndim, shape)) return NULL;
    if (!data && kn__numel_shape(ndim, shape) > 0) {
        kn__err(KN_ERR_INVALID, "from_data: data is NULL");
        return NULL;
    }
    kn_tensor *t = kn__new_named("from_data", ndim, shape, dt, dev);
    if (!t) return NULL;
    size_t n = t->storage->nbytes;
    if (n && kn__copy_bytes(dev, t->storage->data, KN_CPU, data, n) != KN_OK) {
        kn_release(t);
        return NULL;
    }
    return kn__scoped(t);
}

static kn_tensor *ramp(const char *op, int64_t n, double start, double step, kn_dtype dt,
                       kn_device dev) {
    kn_tensor *t = kn__new_named(op, 1, &n, dt, dev);
    if (!t) return NULL;
    kn_fill_args a = {.out = kn__view(t), .value = start, .step = step};
    if (launch(KN_OP_FILL, dev, &a) != KN_OK) {
        kn_release(t);
        return NULL;
    }
    return kn__scoped(t);
}

kn_tensor *kn_arange(double start, double end, double step, kn_dtype dt, kn_device dev) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step)) {
        kn__err(KN_ERR_INVALID, "arange: step must be finite and non-zero");
        return NULL;
    }
    double len = ceil((end - start) / step);
    return ramp("arange", len > 0 ? (int64_t)len : 0, start, step, dt, dev);
}

kn_tensor *kn_linspace(double start, double end, int64_t steps, kn_dtype dt, kn_device dev) {
    if (steps < 0) {
        kn__err(KN_ERR_INVALID, "linspace: steps must be >= 0, got %lld", (long long)steps);
        return NULL;
    }
    return ramp("linspace", steps, start, steps > 1 ? (end - start) / (double)(steps - 1) : 0, dt,
                dev);
}

kn_tensor *kn_eye(int64_t n, kn_dtype dt, kn_device dev) {
    kn_tensor *t = kn_zeros(KN_SHAPE(n, n), dt, dev);
    if (!t) return NULL;
    /* The diagonal is a 1-D view with stride n + 1. */
    kn_tensor *d = kn__alias(t, 1, &n, (int64_t[]){n + 1}, 0);
    kn_status s = d ? kn_fill_(d, 1) : KN_ERR_OOM;
    kn_release(d);
    return s == KN_OK ? t : NULL;
}

/* ---- reading back ------------------------------------------------------------------------- */
/* Copies a strided CPU tensor into contiguous dst of dtype dt. */
static void gather_host(const kn_tensor *t, void *dst, kn_dtype dt) {
    int64_t n = kn__numel_shape(t->ndim, t->shape);
    size_t es = kn_dtype_size(t->dtype), ds = kn_dtype_size(dt);
    const char *base = t->storage->data;
    if (kn__is_contiguous(t) && dt == t->dtype) {
        memcpy(dst, base + (size_t)t->offset * es, (size_t)n * es);
        return;
    }
    int64_t idx[KN_MAX_DIMS] = {0};
    bool ints = !kn_dtype_is_float(t->dtype) && !kn_dtype_is_float(dt);
    for (int64_t k = 0; k < n; k++) {
        int64_t off = t->offset;
        for (int d = 0; d < t->ndim; d++) off += idx[d] * t->stride[d];
        const void *src = base + (size_t)off * es;
        void *out = (char *)dst + (size_t)k * ds;
        if (ints)
            kn__store_i64(out, dt, kn__load_i64(src, t->dtype));
        else
            kn__store(out, dt, kn__load(src, t->dtype));
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

kn_status kn_to_host(const kn_tensor *t, void *dst, kn_dtype dt) {
    if (!t) return kn__err_null("to_host"), KN_ERR_NULL;
    if ((unsigned)dt >= KN_DTYPE_COUNT) return kn__err(KN_ERR_DTYPE, "to_host: invalid dtype");
    if (kn_dtype_is_complex(t->dtype) || kn_dtype_is_complex(dt)) {
        /* Complex data is read as its real pairs, converted part by part. */
        if (!kn_dtype_is_complex(t->dtype) || !kn_dtype_is_complex(dt))
            return kn__err(KN_ERR_DTYPE, "to_host: cannot read %s as %s (use kn_real/kn_imag, or kn_view_as_real)",
                           kn_dtype_name(t->dtype), kn_dtype_name(dt));
        if (t->ndim >= KN_MAX_DIMS)
            return kn__err(KN_ERR_SHAPE, "to_host: a complex tensor of %d dims has no real view", t->ndim);
        int64_t shape[KN_MAX_DIMS], stride[KN_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d], stride[d] = 2 * t->stride[d];
        shape[t->ndim] = 2, stride[t->ndim] = 1;
        kn_tensor *r = kn__alias(t, t->ndim + 1, shape, stride, 0);
        if (!r) return kn_error_code();
        r->dtype = kn_dtype_real(t->dtype);
        r->offset = 2 * t->offset;
        kn_status s = kn_to_host(r, dst, kn_dtype_real(dt));
        kn_release(r);
        return s;
    }
    if (t->storage->device.kind == KN_DEVICE_CPU) {
        gather_host(t, dst, dt);
        return KN_OK;
    }
    /* Another device: copy its bytes over contiguously, then convert here. A
     * contiguous tensor's bytes come as they are (no copy on the device,
     * which may not compute in its dtype: a Vulkan device without float64). */
    size_t es = kn_dtype_size(t->dtype);
    if (kn__is_contiguous(t)) {
        kn_tensor *h = kn__new(t->ndim, t->shape, t->dtype, KN_CPU);
        if (!h) return kn_error_code();
        kn_status s = kn__copy_bytes(KN_CPU, h->storage->data, t->storage->device,
                                     (const char *)t->storage->data + (size_t)t->offset * es,
                                     h->storage->nbytes);
        if (s == KN_OK) gather_host(h, dst, dt);
        kn_release(h);
        return s;
    }
    kn_tensor *c = kn__new(t->ndim, t->shape, t->dtype, t->storage->device);
    if (!c) return kn_error_code();
    kn_copy_args a = {.out = kn__view(c), .x = kn__view(t)};
    kn_status s = launch(KN_OP_COPY, t->storage->device, &a);
    kn_tensor *h = s == KN_OK ? kn__new(t->ndim, t->shape, t->dtype, KN_CPU) : NULL;
    if (h) {
        s = kn__copy_bytes(KN_CPU, h->storage->data, c->storage->device, c->storage->data,
                           c->storage->nbytes);
        if (s == KN_OK) gather_host(h, dst, dt);
    } else if (s == KN_OK) {
        s = kn_error_code();
    }
    kn_release(h);
    kn_release(c);
    return s;
}

double kn_item(const kn_tensor *t) {
    if (!t) return kn__err_null("item"), NAN;
    if (kn__numel_shape(t->ndim, t->shape) != 1) {
        char b[128];
        kn__err(KN_ERR_SHAPE, "item: tensor of shape %s has %lld elements, not 1",
                kn__shape_str(t->ndim, t->shape, b, sizeof b), (long long)kn_numel(t));
        return NAN;
    }
    double v = NAN;
    return kn_to_host(t, &v, KN_F64) == KN_OK ? v : NAN;
}

double kn_get(const kn_tensor *t, const int64_t *index) {
    if (!t) return kn__err_null("get"), NAN;
    if (!index && t->ndim) return kn__err(KN_ERR_INVALID, "get: index is NULL"), NAN;
    int64_t off = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (index[d] < 0 || index[d] >= t->shape[d]) {
            kn__err(KN_ERR_INVALID, "get: index %lld out of range for dim %d of size %lld",
                    (long long)index[d], d, (long long)t->shape[d]);
            return NAN;
        }
        off += index[d] * t->stride[d];
    }
    kn_tensor *one = kn__alias(t, 0, NULL, NULL, off);
    double v = one ? kn_item(one) : NAN;
    kn_release(one);
    return v;
}

/* Prints dim d of a row-major buffer, eliding the middle of long dims. */
static void print_dim(FILE *f, const kn_tensor *t, const double *v, int d, int64_t base, bool ints) {
    enum { EDGE = 3 };
    if (t->ndim == 0) {
        fprintf(f, ints ? "%.0f" : "%.4g", v[0]);
        return;
    }
    int64_t n = t->shape[d], inner = kn__numel_shape(t->ndim - d - 1, t->shape + d + 1);
    fputc('[', f);
    for (int64_t i = 0; i < n; i++) {
        if (n > 2 * EDGE + 1 && i == EDGE) {
            fputs("...", f);
            i = n - EDGE - 1;
        } else if (d == t->ndim - 1) {
            fprintf(f, ints ? "%.0f" : "%.4g", v[base + i]);
        } else {
            print_dim(f, t, v, d + 1, base + i * inner, ints);
        }
        if (i + 1 < n) {
            fputc(',', f);
            if (d < t->ndim - 1) {
                fputc('\n', f);
                for (int k = 0; k <= d + 7; k++) fputc(' ', f);
            } else {
                fputc(' ', f);
            }
        }
    }
    fputc(']', f);
}

void kn_print(const kn_tensor *t, FILE *f) {
    if (!t) {
        fprintf(f, "tensor(NULL)\n");
        return;
    }
    int64_t n = kn_numel(t);
    char b[128];
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v || kn_to_host(t, v, KN_F64) != KN_OK) {
        fprintf(f, "tensor(<unreadable: %s>)\n", kn_error());
        free(v);
        return;
    }
    fprintf(f, "tensor(");
    print_dim(f, t, v, 0, 0, !kn_dtype_is_float(t->dtype));
    fprintf(f, ", shape=%s, dtype=%s, device=%s)\n", kn__shape_str(t->ndim, t->shape, b, sizeof b),
            kn_dtype_name(t->dtype), kn_device_str(t->storage->device));
    free(v);
}
