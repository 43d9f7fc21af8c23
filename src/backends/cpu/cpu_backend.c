/* The CPU backend: host memory, and the reference kernel for every op. */
#include "cpu_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>
#include <unistd.h>

static int count(void) { return 1; }

static const char *name(int index) {
    (void)index;
    static char buf[128];
    if (!buf[0]) {
        char model[96] = "";
        FILE *f = fopen("/proc/cpuinfo", "r");
        if (f) {
            char line[256];
            while (fgets(line, sizeof line, f))
                if (!strncmp(line, "model name", 10)) {
                    const char *v = strchr(line, ':');
                    if (v) snprintf(model, sizeof model, "%s", v + 2);
                    model[strcspn(model, "\n")] = 0;
                    break;
                }
            fclose(f);
        }
        snprintf(buf, sizeof buf, "%s%s%d threads", model, model[0] ? ", " : "", kn_num_threads());
    }
    return buf;
}

static kn_status memory(int index, size_t *free_bytes, size_t *total_bytes) {
    (void)index;
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
    if (pages < 0 || ps < 0) return kn__err(KN_ERR_UNSUPPORTED, "cpu: memory size unknown");
    *total_bytes = (size_t)pages * (size_t)ps;
    *free_bytes = avail < 0 ? 0 : (size_t)avail * (size_t)ps;
    return KN_OK;
}

/* A caching allocator: freed blocks wait in size classes (8 per power of
 * two) for the next request of the same class. A training step allocates the
 * same sizes every time, so after the first step nothing reaches malloc, and
 * large blocks are not mmap'ed and page-faulted afresh each step. */
#define CLASSES 8
#define CACHE_LIMIT ((size_t)1 << 30)
typedef struct block {
    struct block *next;
} block;
static block *free_lists[64 * CLASSES];
static size_t peak, in_use, cached;
static int64_t n_allocs;
static mtx_t alloc_lock;
static once_flag alloc_once = ONCE_FLAG_INIT;
static void alloc_init(void) { mtx_init(&alloc_lock, mtx_plain); }

/* Rounds n up to its class size and returns the class index. */
static int size_class(size_t *n) {
    size_t v = *n < 64 ? 64 : *n;
    int p = 63 - __builtin_clzll(v); /* 2^p <= v */
    size_t step = p >= 3 ? ((size_t)1 << p) / CLASSES : 1;
    size_t r = (v + step - 1) / step * step;
    int sub = (int)((r - ((size_t)1 << p)) / step);
    if (sub == CLASSES) { /* rounded up to the next power of two */
        p++;
        sub = 0;
    }
    *n = r;
    return p * CLASSES + sub;
}

static kn_status empty_cache_impl(void) {
    call_once(&alloc_once, alloc_init);
    mtx_lock(&alloc_lock);
    for (size_t c = 0; c < sizeof free_lists / sizeof *free_lists; c++)
        while (free_lists[c]) {
            block *b = free_lists[c];
            free_lists[c] = b->next;
            free(b);
        }
    cached = 0;
    mtx_unlock(&alloc_lock);
    return KN_OK;
}

static void *alloc(int index, size_t n) {
    (void)index;
    call_once(&alloc_once, alloc_init);
    size_t sz = n;
    int c = size_class(&sz);
    mtx_lock(&alloc_lock);
    block *b = free_lists[c];
    if (b) {
        free_lists[c] = b->next;
        cached -= sz;
    }
    mtx_unlock(&alloc_lock);
    /* 64-byte alignment: whole cache lines, and aligned vector loads. */
    void *p = b ? (void *)b : aligned_alloc(64, (sz + 63) & ~(size_t)63);
    if (!p) { /* give the cache back and try once more */
        empty_cache_impl();
        p = aligned_alloc(64, (sz + 63) & ~(size_t)63);
    }
    if (p) {
        mtx_lock(&alloc_lock);
        in_use += sz;
        n_allocs++;
        if (in_use > peak) peak = in_use;
        mtx_unlock(&alloc_lock);
    }
    return p;
}

static void release(int index, void *p, size_t n) {
    (void)index;
    size_t sz = n ? n : 1;
    int c = size_class(&sz);
    mtx_lock(&alloc_lock);
    in_use -= sz;
    bool keep = cached + sz <= CACHE_LIMIT;
    if (keep) {
        ((block *)p)->next = free_lists[c];
        free_lists[c] = p;
        cached += sz;
    }
    mtx_unlock(&alloc_lock);
    if (!keep) free(p);
}

static kn_status empty_cache(int index) {
    (void)index;
    return empty_cache_impl();
}

static kn_status copy(int index, void *dst, const void *src, size_t n) {
    (void)index;
    memmove(dst, src, n);
    return KN_OK;
}

static kn_status synchronize(int index) {
    (void)index;
    return KN_OK;
}

static kn_status stats(int index, kn_memory_stats *out) {
    (void)index;
    call_once(&alloc_once, alloc_init);
    mtx_lock(&alloc_lock);
    *out = (kn_memory_stats){.in_use = in_use, .cached = cached, .peak = peak, .allocations = n_allocs};
    mtx_unlock(&alloc_lock);
    return KN_OK;
}

/* ---- scratch for the kernels (cpu_internal.h) ---------------------------------------- */
void *kn__cpu_scratch(size_t nbytes) { return alloc(0, nbytes ? nbytes : 1); }
void kn__cpu_scratch_free(void *p, size_t nbytes) {
    if (p) release(0, p, nbytes ? nbytes : 1);
}

kn_status kn__cpu_dense(const char *op, kn_dense *d, const kn_operand *v, kn_dtype dt) {
    memset(d, 0, sizeof *d);
    if (!kn_operand_present(v)) return KN_OK;
    if (v->dtype == dt && kn_operand_contiguous(v)) {
        d->v = *v;
        return KN_OK;
    }
    d->nbytes = (size_t)kn_operand_numel(v) * kn_dtype_size(dt);
    if (!(d->owned = kn__cpu_scratch(d->nbytes))) return kn__err(KN_ERR_OOM, "%s: out of memory", op);
    d->v = kn__cpu_dense_view(v, dt, d->owned);
    kn_copy_args c = {.out = d->v, .x = *v};
    kn_status s = kn__cpu_copy(0, &c);
    if (s != KN_OK) kn__cpu_dense_free(d);
    return s;
}

void kn__cpu_dense_free(kn_dense *d) {
    kn__cpu_scratch_free(d->owned, d->nbytes);
    memset(d, 0, sizeof *d);
}

/* ---- the backend -------------------------------------------------------------------------- */
static const kn_backend cpu = {
    .name = "cpu",
    .title = "CPU",
    .priority = 0, /* the last resort: used when named, or when nothing else is here */
    .device_count = count,
    .device_name = name,
    .memory = memory,
    .alloc = alloc,
    .free = release,
    .copy_h2d = copy,
    .copy_d2h = copy,
    .copy_d2d = copy,
    .synchronize = synchronize,
    .memory_stats = stats,
    .empty_cache = empty_cache,
    .dtypes = 0, /* every dtype */
    /* Every op, primitives and fused: the CPU is the reference, and the
     * host fallback's target. */
    .kernels =
        {
#define KN_OP(ID, name, tier, fields) [KN_OP_##ID] = kn__cpu_##name,
#include "core/ops.def"
#undef KN_OP
        },
};

const kn_backend *kn__cpu_backend_def(void) { return &cpu; }
