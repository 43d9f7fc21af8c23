/* Devices: the backend registry, device selection, and dispatch of ops to a
 * backend's kernel or, when it has none, to the CPU (the fallback). */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

static kn_backend registry[KN_DEVICE_KIND_COUNT];
static bool registered[KN_DEVICE_KIND_COUNT];
static once_flag init_once = ONCE_FLAG_INIT;

/* Backends compiled in register themselves here (each file defines one). */
const kn_backend *kn__cpu_backend_def(void);
#ifdef KILN_HAVE_CUDA
const kn_backend *kn__cuda_backend_def(void);
#endif

static void init_registry(void) {
    registry[KN_DEVICE_CPU] = *kn__cpu_backend_def();
    registered[KN_DEVICE_CPU] = true;
#ifdef KILN_HAVE_CUDA
    registry[KN_DEVICE_CUDA] = *kn__cuda_backend_def();
    registered[KN_DEVICE_CUDA] = true;
#endif
}

static void ensure_init(void) { call_once(&init_once, init_registry); }

kn_status kn__backend_register(const kn_backend *b) {
    ensure_init();
    if (!b || (unsigned)b->kind >= KN_DEVICE_KIND_COUNT || b->kind == KN_DEVICE_CPU)
        return kn__err(KN_ERR_INVALID, "backend_register: invalid backend");
    registry[b->kind] = *b;
    registered[b->kind] = true;
    return KN_OK;
}

const kn_backend *kn__backend(kn_device_kind kind) {
    ensure_init();
    return (unsigned)kind < KN_DEVICE_KIND_COUNT && registered[kind] ? &registry[kind] : NULL;
}

const kn_backend *kn__backend_cpu(void) { return kn__backend(KN_DEVICE_CPU); }

/* ---- names --------------------------------------------------------------------- */
static const char *kind_names[KN_DEVICE_KIND_COUNT] = {"cpu", "cuda", "metal", "vulkan", "test"};
static const char *kind_titles[KN_DEVICE_KIND_COUNT] = {"CPU", "CUDA", "Metal", "Vulkan", "Test"};

const char *kn_device_kind_name(kn_device_kind kind) {
    return (unsigned)kind < KN_DEVICE_KIND_COUNT ? kind_titles[kind] : "invalid";
}

const char *kn_device_str(kn_device d) {
    /* One interned string per (kind, index), so callers never free. */
    static char names[KN_DEVICE_KIND_COUNT][16][16];
    if ((unsigned)d.kind >= KN_DEVICE_KIND_COUNT || d.index < 0 || d.index >= 16) return "invalid";
    char *s = names[d.kind][d.index];
    if (!s[0]) {
        if (d.kind == KN_DEVICE_CPU) snprintf(s, 16, "cpu");
        else snprintf(s, 16, "%s:%d", kind_names[d.kind], d.index);
    }
    return s;
}

int kn_device_count(kn_device_kind kind) {
    const kn_backend *b = kn__backend(kind);
    return b ? b->device_count() : 0;
}

bool kn_device_ok(kn_device d) {
    return d.kind >= 0 && d.index >= 0 && d.index < kn_device_count((kn_device_kind)d.kind);
}

bool kn_device_equal(kn_device a, kn_device b) { return a.kind == b.kind && a.index == b.index; }

const char *kn_device_description(kn_device d) {
    const kn_backend *b = kn__backend((kn_device_kind)d.kind);
    if (!b || !kn_device_ok(d)) return "unavailable";
    return b->device_name(d.index);
}

kn_status kn_device_memory(kn_device d, size_t *free_bytes, size_t *total_bytes) {
    const kn_backend *b = kn__backend((kn_device_kind)d.kind);
    if (!b || !kn_device_ok(d))
        return kn__err(KN_ERR_DEVICE, "device_memory: device %s is not available", kn_device_str(d));
    return b->memory(d.index, free_bytes, total_bytes);
}

kn_status kn_device_synchronize(kn_device d) {
    const kn_backend *b = kn__backend((kn_device_kind)d.kind);
    if (!b || !kn_device_ok(d))
        return kn__err(KN_ERR_DEVICE, "synchronize: device %s is not available", kn_device_str(d));
    return b->synchronize ? b->synchronize(d.index) : KN_OK;
}

kn_status kn_device_memory_stats(kn_device d, kn_memory_stats *out) {
    const kn_backend *b = kn__backend((kn_device_kind)d.kind);
    if (!b || !kn_device_ok(d))
        return kn__err(KN_ERR_DEVICE, "memory_stats: device %s is not available", kn_device_str(d));
    if (!b->memory_stats) {
        memset(out, 0, sizeof *out);
        return KN_OK;
    }
    return b->memory_stats(d.index, out);
}

kn_status kn_device_empty_cache(kn_device d) {
    const kn_backend *b = kn__backend((kn_device_kind)d.kind);
    if (!b || !kn_device_ok(d))
        return kn__err(KN_ERR_DEVICE, "empty_cache: device %s is not available", kn_device_str(d));
    return b->empty_cache ? b->empty_cache(d.index) : KN_OK;
}

/* ---- parsing and selection ------------------------------------------------------------- */
kn_device kn_device_get(const char *name) {
    const kn_device bad = {-1, -1};
    if (!name || !*name) {
        kn__err(KN_ERR_DEVICE, "device: empty device name");
        return bad;
    }
    for (int k = 0; k < KN_DEVICE_KIND_COUNT; k++) {
        size_t n = strlen(kind_names[k]);
        if (strncmp(name, kind_names[k], n) != 0) continue;
        long index = 0;
        if (name[n] == ':') {
            char *end;
            index = strtol(name + n + 1, &end, 10);
            if (end == name + n + 1 || *end || index < 0 || index > 15) break;
        } else if (name[n]) {
            continue;
        }
        int count = kn_device_count((kn_device_kind)k);
        if (index >= count) {
            if (count == 0)
                kn__err(KN_ERR_DEVICE, "device '%s' is not available: no %s devices found", name,
                        kind_titles[k]);
            else
                kn__err(KN_ERR_DEVICE, "device '%s' is not available: %d %s device%s found", name,
                        count, kind_titles[k], count == 1 ? "" : "s");
            return bad;
        }
        return (kn_device){(int16_t)k, (int16_t)index};
    }
    kn__err(KN_ERR_DEVICE, "unknown device '%s' (expected cpu, cuda, cuda:N, vulkan, metal)", name);
    return bad;
}

static char default_reason[256];

kn_device kn_device_default(void) {
    const char *env = getenv("KILN_DEVICE");
    if (env && *env) {
        kn_device d = kn_device_get(env);
        if (d.kind >= 0) snprintf(default_reason, sizeof default_reason, "KILN_DEVICE=%s", env);
        return d;
    }
    static const kn_device_kind order[] = {KN_DEVICE_CUDA, KN_DEVICE_METAL, KN_DEVICE_VULKAN};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        const kn_backend *b = kn__backend(order[i]);
        if (b && b->is_real_gpu && b->device_count() > 0) {
            snprintf(default_reason, sizeof default_reason,
                     "first %s device (order: cuda, metal, vulkan, cpu)", kind_titles[order[i]]);
            return (kn_device){(int16_t)order[i], 0};
        }
    }
    snprintf(default_reason, sizeof default_reason, "no GPU backend found a device");
    return KN_CPU;
}

const char *kn_device_default_reason(void) {
    if (!default_reason[0]) (void)kn_device_default();
    return default_reason;
}

/* ---- copies between devices -------------------------------------------------------------- */
kn_status kn__copy_bytes(kn_device dd, void *dst, kn_device sd, const void *src, size_t n) {
    if (!n) return KN_OK;
    const kn_backend *db = kn__backend((kn_device_kind)dd.kind), *sb = kn__backend((kn_device_kind)sd.kind);
    if (!db || !sb) return kn__err(KN_ERR_DEVICE, "copy: device not available");
    if (sd.kind == KN_DEVICE_CPU && dd.kind == KN_DEVICE_CPU) {
        memmove(dst, src, n);
        return KN_OK;
    }
    if (sd.kind == KN_DEVICE_CPU) return db->copy_h2d(dd.index, dst, src, n);
    if (dd.kind == KN_DEVICE_CPU) return sb->copy_d2h(sd.index, dst, src, n);
    if (kn_device_equal(dd, sd)) return db->copy_d2d(dd.index, dst, src, n);
    /* Different devices: through the host. */
    void *tmp = malloc(n);
    if (!tmp) return kn__err(KN_ERR_OOM, "copy: out of host memory (%zu bytes)", n);
    kn_status s = sb->copy_d2h(sd.index, tmp, src, n);
    if (s == KN_OK) s = db->copy_h2d(dd.index, dst, tmp, n);
    free(tmp);
    return s;
}

/* ---- fallback statistics ------------------------------------------------------------------- */
#define MAX_STATS 128
static struct {
    const char *op;
    kn_device_kind kind;
    int64_t count;
} stats[MAX_STATS];
static int n_stats;
static mtx_t stats_lock;
static once_flag stats_once = ONCE_FLAG_INIT;
static void stats_init(void) { mtx_init(&stats_lock, mtx_plain); }

/* Returns true the first time (op, kind) falls back, so the caller warns once. */
static bool count_fallback(const char *op, kn_device_kind kind) {
    call_once(&stats_once, stats_init);
    mtx_lock(&stats_lock);
    bool first = false;
    int i = 0;
    while (i < n_stats && !(stats[i].kind == kind && !strcmp(stats[i].op, op))) i++;
    if (i == n_stats && n_stats < MAX_STATS) {
        stats[n_stats].op = op;
        stats[n_stats].kind = kind;
        stats[n_stats++].count = 0;
        first = true;
    }
    if (i < MAX_STATS) stats[i].count++;
    mtx_unlock(&stats_lock);
    return first;
}

int kn_fallback_stats(kn_fallback_stat *out, int cap) {
    call_once(&stats_once, stats_init);
    mtx_lock(&stats_lock);
    for (int i = 0; i < n_stats && i < cap; i++)
        out[i] = (kn_fallback_stat){stats[i].op, stats[i].kind, stats[i].count};
    int n = n_stats;
    mtx_unlock(&stats_lock);
    return n;
}

void kn_fallback_stats_reset(void) {
    call_once(&stats_once, stats_init);
    mtx_lock(&stats_lock);
    n_stats = 0;
    mtx_unlock(&stats_lock);
}

/* ---- dispatch --------------------------------------------------------------------------------- */
static const char *op_names[] = {
    "copy", "fill", "arange", "unary", "unary_backward", "binary", "where", "reduce", "matmul",
    "index_select", "gather", "index_add", "embedding_cat", "embedding_cat_backward", "softmax",
    "softmax_backward", "nll", "nll_backward", "cross_entropy", "cross_entropy_backward",
    "batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward", "random", "dropout",
    "adam", "sgd"};
_Static_assert(sizeof op_names / sizeof *op_names == KN_OP_COUNT, "one name per op");

const char *kn__op_name(kn_op op) { return (unsigned)op < KN_OP_COUNT ? op_names[op] : "?"; }

const char *kn__call_name(const kn_call *c) {
    switch (c->op) {
    case KN_OP_UNARY: return kn__unary_name((kn_unary_fn)c->i[0]);
    case KN_OP_BINARY: return kn__binary_name((kn_binary_fn)c->i[0]);
    case KN_OP_REDUCE: return kn__reduce_name((kn_reduce_fn)c->i[0]);
    default: return kn__op_name(c->op);
    }
}

/* The span of storage elements a tensor touches: [lo, hi). */
static void span(const kn_tensor *t, int64_t *lo, int64_t *hi) {
    int64_t a = t->offset, b = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 0) {
            *lo = *hi = t->offset;
            return;
        }
        int64_t e = (t->shape[d] - 1) * t->stride[d];
        if (e < 0) a += e;
        else b += e;
    }
    *lo = a;
    *hi = b + 1;
}

/* A CPU copy of the storage span t covers, viewed with t's geometry. */
static kn_tensor *host_mirror(const kn_tensor *t) {
    int64_t lo, hi;
    span(t, &lo, &hi);
    int64_t n = hi - lo;
    kn_tensor *h = kn__new(1, &n, t->dtype, KN_CPU);
    if (!h) return NULL;
    size_t es = kn_dtype_size(t->dtype);
    kn_status s = kn__copy_bytes(KN_CPU, h->storage->data, t->storage->device,
                                 (char *)t->storage->data + (size_t)lo * es, (size_t)n * es);
    if (s != KN_OK) {
        kn_release(h);
        return NULL;
    }
    kn_tensor *v = kn__alias(h, t->ndim, t->shape, t->stride, t->offset - lo);
    kn_release(h);
    return v;
}

static kn_status write_back(const kn_tensor *dev_t, const kn_tensor *host_t) {
    int64_t lo, hi;
    span(dev_t, &lo, &hi);
    size_t es = kn_dtype_size(dev_t->dtype);
    return kn__copy_bytes(dev_t->storage->device, (char *)dev_t->storage->data + (size_t)lo * es,
                          KN_CPU, host_t->storage->data, (size_t)(hi - lo) * es);
}

static kn_status run_fallback(const kn_call *c) {
    const char *name = kn__call_name(c);
    if (count_fallback(name, (kn_device_kind)c->device.kind) && !getenv("KILN_QUIET_FALLBACK"))
        fprintf(stderr, "kiln: warning: op '%s' has no %s kernel; running it on the CPU\n", name,
                kn_device_kind_name((kn_device_kind)c->device.kind));
    kn_call h = *c;
    h.device = KN_CPU;
    kn_status s = KN_OK;
    for (int k = 0; k < KN_CALL_MAX_IN; k++) h.in[k] = NULL;
    for (int k = 0; k < KN_CALL_MAX_OUT; k++) h.out[k] = NULL;
    for (int k = 0; k < KN_CALL_MAX_IN && s == KN_OK; k++)
        if (c->in[k] && !(h.in[k] = host_mirror(c->in[k]))) s = kn_error_code();
    /* Outputs are mirrored too: kernels may update them in place. */
    for (int k = 0; k < KN_CALL_MAX_OUT && s == KN_OK; k++)
        if (c->out[k] && !(h.out[k] = host_mirror(c->out[k]))) s = kn_error_code();
    if (s == KN_OK) {
        kn_kernel kern = kn__backend_cpu()->kernels[c->op];
        s = kern ? kern(&h) : kn__err(KN_ERR_UNSUPPORTED, "%s: no CPU kernel", name);
    }
    for (int k = 0; k < KN_CALL_MAX_OUT && s == KN_OK; k++)
        if (c->out[k]) s = write_back(c->out[k], h.out[k]);
    for (int k = 0; k < KN_CALL_MAX_IN && s == KN_OK; k++)
        if (c->in[k] && (c->inout >> k & 1)) s = write_back(c->in[k], h.in[k]);
    for (int k = 0; k < KN_CALL_MAX_IN; k++) kn_release(h.in[k]);
    for (int k = 0; k < KN_CALL_MAX_OUT; k++) kn_release(h.out[k]);
    return s;
}

kn_status kn__run(kn_call *c) {
    const kn_backend *b = kn__backend((kn_device_kind)c->device.kind);
    if (!b) return kn__err(KN_ERR_DEVICE, "%s: device %s is not available", kn__call_name(c),
                           kn_device_str(c->device));
    if (b->kernels[c->op]) return b->kernels[c->op](c);
    return run_fallback(c);
}
