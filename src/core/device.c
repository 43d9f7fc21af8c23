/* Devices: the backend registry, device selection, and dispatch of ops to a
 * backend's kernel or, when it has none, to the CPU (the fallback). */
#include "internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

/* Kinds 0..KN_DEVICE_KIND_COUNT-1 are the well-known names of kiln/device.h;
 * backends of other names (a test's, say) take the slots after them. */
#define MAX_KINDS 8
static kn_backend registry[MAX_KINDS];
static bool registered[MAX_KINDS];
static int n_kinds = KN_DEVICE_KIND_COUNT;
static once_flag init_once = ONCE_FLAG_INIT;
static mtx_t registry_lock;

static const char *well_known[KN_DEVICE_KIND_COUNT] = {"cpu", "cuda", "metal", "vulkan"};
static const char *well_known_titles[KN_DEVICE_KIND_COUNT] = {"CPU", "CUDA", "Metal", "Vulkan"};

/* The backends this build has: KN_BUILTIN_BACKENDS(X) calls X(name) for each
 * (the build writes it; each backend defines kn__<name>_backend_def()). */
#include "kiln_backends.h"
#define DECLARE(name) const kn_backend *kn__##name##_backend_def(void);
KN_BUILTIN_BACKENDS(DECLARE)
#undef DECLARE

static int add_backend(const kn_backend *b) {
    int kind = -1;
    for (int k = 0; k < KN_DEVICE_KIND_COUNT; k++)
        if (!strcmp(b->name, well_known[k])) kind = k;
    for (int k = KN_DEVICE_KIND_COUNT; kind < 0 && k < n_kinds; k++)
        if (registered[k] && !strcmp(b->name, registry[k].name)) kind = k;
    if (kind < 0) {
        if (n_kinds == MAX_KINDS) return -1;
        kind = n_kinds++;
    }
    registry[kind] = *b;
    registered[kind] = true;
    return kind;
}

static void init_registry(void) {
    mtx_init(&registry_lock, mtx_plain);
#define ADD(name) add_backend(kn__##name##_backend_def());
    KN_BUILTIN_BACKENDS(ADD)
#undef ADD
}

static void ensure_init(void) { call_once(&init_once, init_registry); }

int kn__backend_register(const kn_backend *b) {
    ensure_init();
    if (!b || !b->name || !b->name[0] || !b->title || !b->device_count || !b->alloc || !b->free ||
        !b->copy_h2d || !b->copy_d2h || !b->copy_d2d) {
        kn__err(KN_ERR_INVALID, "backend_register: a backend needs a name, a title, device_count, alloc, free and the copies");
        return -1;
    }
    if (b->comm_new && (!b->comm_name || !b->comm_free || !b->comm_all_reduce || !b->comm_broadcast)) {
        kn__err(KN_ERR_INVALID, "backend_register: a backend with comm_new needs comm_name, comm_free and both collectives");
        return -1;
    }
    if (!b->comm_all_reduce_async != !b->comm_join || (b->comm_join && !b->comm_new)) {
        kn__err(KN_ERR_INVALID, "backend_register: comm_all_reduce_async and comm_join come together, with comm_new");
        return -1;
    }
    if (!b->comm_unique_id != !b->comm_new_rank || (b->comm_new_rank && !b->comm_new)) {
        kn__err(KN_ERR_INVALID, "backend_register: comm_unique_id and comm_new_rank come together, with comm_new");
        return -1;
    }
    if (!strcmp(b->name, "cpu")) {
        kn__err(KN_ERR_INVALID, "backend_register: the cpu backend cannot be replaced");
        return -1;
    }
    mtx_lock(&registry_lock);
    int kind = add_backend(b);
    mtx_unlock(&registry_lock);
    if (kind < 0) kn__err(KN_ERR_INVALID, "backend_register: no room for backend '%s' (%d kinds at most)", b->name, MAX_KINDS);
    return kind;
}

const kn_backend *kn__backend(int kind) {
    ensure_init();
    return kind >= 0 && kind < n_kinds && registered[kind] ? &registry[kind] : NULL;
}

const kn_backend *kn__backend_cpu(void) { return kn__backend(KN_DEVICE_CPU); }

int kn__backend_kinds(void) {
    ensure_init();
    return n_kinds;
}

/* ---- names --------------------------------------------------------------------- */
static const char *kind_name(int kind) {
    const kn_backend *b = kn__backend(kind);
    if (b) return b->name;
    return kind >= 0 && kind < KN_DEVICE_KIND_COUNT ? well_known[kind] : "invalid";
}

const char *kn_device_kind_name(kn_device_kind kind) {
    const kn_backend *b = kn__backend(kind);
    if (b) return b->title;
    return (unsigned)kind < KN_DEVICE_KIND_COUNT ? well_known_titles[kind] : "invalid";
}

const char *kn_device_str(kn_device d) {
    /* One interned string per (kind, index), so callers never free. */
    static char names[MAX_KINDS][16][24];
    if (d.kind < 0 || d.kind >= MAX_KINDS || d.index < 0 || d.index >= 16 || !strcmp(kind_name(d.kind), "invalid"))
        return "invalid";
    char *s = names[d.kind][d.index];
    if (!s[0]) {
        if (d.kind == KN_DEVICE_CPU) snprintf(s, sizeof names[0][0], "cpu");
        else snprintf(s, sizeof names[0][0], "%s:%d", kind_name(d.kind), d.index);
    }
    return s;
}

int kn_device_count(kn_device_kind kind) {
    const kn_backend *b = kn__backend((int)kind);
    return b ? b->device_count() : 0;
}

bool kn_device_ok(kn_device d) {
    return d.kind >= 0 && d.index >= 0 && d.index < kn_device_count((kn_device_kind)d.kind);
}

bool kn_device_equal(kn_device a, kn_device b) { return a.kind == b.kind && a.index == b.index; }

const char *kn_device_description(kn_device d) {
    const kn_backend *b = kn__backend(d.kind);
    if (!b || !kn_device_ok(d)) return "unavailable";
    return b->device_name(d.index);
}

kn_status kn_device_memory(kn_device d, size_t *free_bytes, size_t *total_bytes) {
    const kn_backend *b = kn__backend(d.kind);
    if (!b || !kn_device_ok(d))
        return kn__err(KN_ERR_DEVICE, "device_memory: device %s is not available", kn_device_str(d));
    return b->memory(d.index, free_bytes, total_bytes);
}

kn_status kn_device_synchronize(kn_device d) {
    const kn_backend *b = kn__backend(d.kind);
    if (!b || !kn_device_ok(d))
        return kn__err(KN_ERR_DEVICE, "synchronize: device %s is not available", kn_device_str(d));
    return b->synchronize ? b->synchronize(d.index) : KN_OK;
}

kn_status kn_device_memory_stats(kn_device d, kn_memory_stats *out) {
    const kn_backend *b = kn__backend(d.kind);
    if (!b || !kn_device_ok(d))
        return kn__err(KN_ERR_DEVICE, "memory_stats: device %s is not available", kn_device_str(d));
    if (!b->memory_stats) {
        memset(out, 0, sizeof *out);
        return KN_OK;
    }
    return b->memory_stats(d.index, out);
}

kn_status kn_device_empty_cache(kn_device d) {
    const kn_backend *b = kn__backend(d.kind);
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
    for (int k = 0; k < kn__backend_kinds(); k++) {
        const char *kn = kind_name(k);
        size_t n = strlen(kn);
        if (strncmp(name, kn, n) != 0) continue;
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
                        kn_device_kind_name((kn_device_kind)k));
            else
                kn__err(KN_ERR_DEVICE, "device '%s' is not available: %d %s device%s found", name,
                        count, kn_device_kind_name((kn_device_kind)k), count == 1 ? "" : "s");
            return bad;
        }
        return (kn_device){(int16_t)k, (int16_t)index};
    }
    kn__err(KN_ERR_DEVICE, "unknown device '%s' (expected cpu, cuda, cuda:N, vulkan, metal)", name);
    return bad;
}

static char default_reason[256];

/* The present backend of highest priority (> 0), else the CPU. */
kn_device kn_device_default(void) {
    const char *env = getenv("KILN_DEVICE");
    if (env && *env) {
        kn_device d = kn_device_get(env);
        if (d.kind >= 0) snprintf(default_reason, sizeof default_reason, "KILN_DEVICE=%s", env);
        return d;
    }
    int best = -1;
    for (int k = 0; k < kn__backend_kinds(); k++) {
        const kn_backend *b = kn__backend(k);
        if (b && b->priority > 0 && (best < 0 || b->priority > kn__backend(best)->priority) &&
            b->device_count() > 0)
            best = k;
    }
    if (best >= 0) {
        snprintf(default_reason, sizeof default_reason, "first %s device (GPU backends first, then cpu)",
                 kn_device_kind_name((kn_device_kind)best));
        return (kn_device){(int16_t)best, 0};
    }
    snprintf(default_reason, sizeof default_reason, "no GPU backend found a device");
    return KN_CPU;
}

const char *kn_device_default_reason(void) {
    if (!default_reason[0]) (void)kn_device_default();
    return default_reason;
}

/* ---- deterministic algorithms ---------------------------------------------------------- */
static atomic_int deterministic = -1; /* -1: not read from the environment yet */

bool kn_deterministic_algorithms(void) {
    int v = atomic_load(&deterministic);
    if (v < 0) {
        const char *e = getenv("KILN_DETERMINISTIC");
        int want = e && *e && strcmp(e, "0") ? 1 : 0, unset = -1;
        atomic_compare_exchange_strong(&deterministic, &unset, want);
        v = atomic_load(&deterministic);
    }
    return v == 1;
}

void kn_use_deterministic_algorithms(bool on) { atomic_store(&deterministic, on ? 1 : 0); }

/* ---- copies between devices -------------------------------------------------------------- */
kn_status kn__copy_bytes(kn_device dd, void *dst, kn_device sd, const void *src, size_t n) {
    if (!n) return KN_OK;
    const kn_backend *db = kn__backend(dd.kind), *sb = kn__backend(sd.kind);
    if (!db || !sb) return kn__err(KN_ERR_DEVICE, "copy: device not available");
    if (sd.kind == KN_DEVICE_CPU && dd.kind == KN_DEVICE_CPU) {
        memmove(dst, src, n);
        return KN_OK;
    }
    if (sd.kind == KN_DEVICE_CPU) return db->copy_h2d(dd.index, dst, src, n);
    if (dd.kind == KN_DEVICE_CPU) return sb->copy_d2h(sd.index, dst, src, n);
    if (kn_device_equal(dd, sd)) return db->copy_d2d(dd.index, dst, src, n);
    if (dd.kind == sd.kind && db->copy_peer) {
        kn_status s = db->copy_peer(dd.index, dst, sd.index, src, n);
        if (s != KN_ERR_UNSUPPORTED) return s;
    }
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

/* ---- dispatch ----------------------------------------------------------------------------- */
typedef struct {
    uint32_t dtypes;
    bool ok;
} dtype_check;

static kn_status check_dtype(void *ctx, kn_operand *v, kn_role role, const char *field) {
    (void)role, (void)field;
    dtype_check *c = ctx;
    if (kn_operand_present(v) && !(c->dtypes >> v->dtype & 1)) c->ok = false;
    return KN_OK;
}

bool kn__backend_supports(kn_op op, kn_device dev, const void *args) {
    const kn_backend *b = kn__backend(dev.kind);
    if (!b || (unsigned)op >= KN_OP_COUNT || !b->kernels[op]) return false;
    if (b->dtypes && (b->dtypes & KN_DTYPES_ALL) != KN_DTYPES_ALL) {
        dtype_check c = {b->dtypes, true};
        kn__op_views(op, (void *)args, check_dtype, &c);
        if (!c.ok) return false;
    }
    return !b->supports || b->supports(dev.index, op, args);
}

/* The host fallback: each operand's storage span is copied to host memory,
 * its view pointed there, the CPU kernel run, outputs copied back, and the
 * views restored. Outputs are copied in too: kernels may update them in
 * place (scatter_add, optimizer steps, running statistics). */
typedef struct {
    kn_device dev;
    kn_operand *orig;
    void **host;
    int n, cap;
} mirror;

/* [lo, hi): the span of elements v touches, relative to v->data. */
static void view_span(const kn_operand *v, int64_t *lo, int64_t *hi) {
    int64_t a = 0, b = 0;
    for (int d = 0; d < v->ndim; d++) {
        if (v->shape[d] == 0) {
            *lo = *hi = 0;
            return;
        }
        int64_t e = (v->shape[d] - 1) * v->stride[d];
        if (e < 0) a += e;
        else b += e;
    }
    *lo = a;
    *hi = b + 1;
}

static kn_status mirror_in(void *ctx, kn_operand *v, kn_role role, const char *field) {
    (void)role, (void)field;
    mirror *m = ctx;
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        kn_operand *o = realloc(m->orig, (size_t)cap * sizeof *o);
        if (o) m->orig = o;
        void **h = o ? realloc(m->host, (size_t)cap * sizeof *h) : NULL;
        if (!h) return kn__err(KN_ERR_OOM, "fallback: out of host memory");
        m->host = h;
        m->cap = cap;
    }
    m->orig[m->n] = *v;
    m->host[m->n] = NULL;
    m->n++;
    if (!kn_operand_present(v)) return KN_OK;
    int64_t lo, hi;
    view_span(v, &lo, &hi);
    size_t es = kn_dtype_size(v->dtype), n = (size_t)(hi - lo) * es;
    void *h = malloc(n ? n : 1);
    if (!h) return kn__err(KN_ERR_OOM, "fallback: out of host memory (%zu bytes)", n);
    m->host[m->n - 1] = h;
    kn_status s = kn__copy_bytes(KN_CPU, h, m->dev, (char *)v->data + lo * (int64_t)es, n);
    v->data = (char *)h - lo * (int64_t)es;
    return s;
}

typedef struct {
    mirror *m;
    int k;
    bool write;
} mirror_walk;

static kn_status mirror_out(void *ctx, kn_operand *v, kn_role role, const char *field) {
    (void)field;
    mirror_walk *w = ctx;
    int k = w->k++;
    if (k >= w->m->n) return KN_OK; /* not reached by a mirror_in that failed */
    kn_status s = KN_OK;
    if (w->write && role == KN_ROLE_OUT && w->m->host[k]) {
        int64_t lo, hi;
        view_span(v, &lo, &hi);
        size_t es = kn_dtype_size(v->dtype);
        s = kn__copy_bytes(w->m->dev, (char *)w->m->orig[k].data + lo * (int64_t)es, KN_CPU,
                           w->m->host[k], (size_t)(hi - lo) * es);
    }
    *v = w->m->orig[k];
    return s;
}

static kn_status run_fallback(kn_op op, kn_device dev, void *args) {
    const char *name = kn__op_call_name(op, args);
    if (count_fallback(name, (kn_device_kind)dev.kind) && !getenv("KILN_QUIET_FALLBACK"))
        fprintf(stderr, "kiln: warning: op '%s' has no %s kernel; running it on the CPU\n", name,
                kn_device_kind_name((kn_device_kind)dev.kind));
    kn_kernel kern = kn__backend_cpu()->kernels[op];
    if (!kern) return kn__err(KN_ERR_UNSUPPORTED, "%s: no CPU kernel", name);
    mirror m = {.dev = dev};
    kn_status s = kn__op_views(op, args, mirror_in, &m);
    if (s == KN_OK) s = kern(0, args);
    /* Every view is restored, whatever failed; outputs are written only
     * when the kernel ran. */
    mirror_walk w = {&m, 0, s == KN_OK};
    kn_status ws = kn__op_views(op, args, mirror_out, &w);
    if (s == KN_OK) s = ws;
    for (int k = 0; k < m.n; k++) free(m.host[k]);
    free(m.host);
    free(m.orig);
    return s;
}

kn_status kn__launch(kn_op op, kn_device dev, void *args) {
    const kn_backend *b = kn__backend(dev.kind);
    if (!b) return kn__err(KN_ERR_DEVICE, "%s: device %s is not available", kn__op_call_name(op, args),
                           kn_device_str(dev));
    if (kn__backend_supports(op, dev, args)) return b->kernels[op](dev.index, args);
    return run_fallback(op, dev, args);
}
