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

static const kn_backend cpu = {
    .name = "cpu",
    .kind = KN_DEVICE_CPU,
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
    .kernels =
        {
            [KN_OP_COPY] = kn__cpu_copy,
            [KN_OP_FILL] = kn__cpu_fill,
            [KN_OP_ARANGE] = kn__cpu_arange,
            [KN_OP_UNARY] = kn__cpu_unary,
            [KN_OP_UNARY_BACKWARD] = kn__cpu_unary_backward,
            [KN_OP_BINARY] = kn__cpu_binary,
            [KN_OP_WHERE] = kn__cpu_where,
            [KN_OP_REDUCE] = kn__cpu_reduce,
            [KN_OP_MATMUL] = kn__cpu_matmul,
            [KN_OP_INDEX_SELECT] = kn__cpu_index_select,
            [KN_OP_GATHER] = kn__cpu_gather,
            [KN_OP_INDEX_ADD] = kn__cpu_index_add,
            [KN_OP_EMBEDDING_CAT] = kn__cpu_embedding_cat,
            [KN_OP_EMBEDDING_CAT_BACKWARD] = kn__cpu_embedding_cat_backward,
            [KN_OP_SOFTMAX] = kn__cpu_softmax,
            [KN_OP_SOFTMAX_BACKWARD] = kn__cpu_softmax_backward,
            [KN_OP_NLL] = kn__cpu_nll,
            [KN_OP_NLL_BACKWARD] = kn__cpu_nll_backward,
            [KN_OP_CROSS_ENTROPY] = kn__cpu_cross_entropy,
            [KN_OP_CROSS_ENTROPY_BACKWARD] = kn__cpu_cross_entropy_backward,
            [KN_OP_BATCH_NORM] = kn__cpu_batch_norm,
            [KN_OP_BATCH_NORM_BACKWARD] = kn__cpu_batch_norm_backward,
            [KN_OP_LAYER_NORM] = kn__cpu_layer_norm,
            [KN_OP_LAYER_NORM_BACKWARD] = kn__cpu_layer_norm_backward,
            [KN_OP_RANDOM] = kn__cpu_random,
            [KN_OP_DROPOUT] = kn__cpu_dropout,
            [KN_OP_ADAM] = kn__cpu_adam,
            [KN_OP_SGD] = kn__cpu_sgd,
        },
};

const kn_backend *kn__cpu_backend_def(void) { return &cpu; }
