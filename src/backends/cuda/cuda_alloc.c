/* The caching allocator: cudaMalloc is slow and synchronizes, so freed blocks
 * are kept in free lists by size class and handed out again. Every device has
 * one stream, so a block freed by the host can be reused at once: whatever
 * reads it next is queued after whatever used it before.
 *
 * Size classes: quarter octaves from 512 B to 64 MiB (at most 25 % slack),
 * larger blocks in 2 MiB steps, reused when they fit within 1/8.
 *
 * Graph capture: while a stream is captured, allocations come from a pool
 * private to that graph (its blocks are reused only during that capture, in
 * stream order). Blocks from the shared cache freed during a capture are held
 * by the pool too: the graph may still read them on replay. When the graph is
 * freed, the pool's blocks go back to the shared cache (those in use when
 * they are freed).
 *
 * Out of memory: the cache is given back to the driver and cudaMalloc tried
 * once more; then NULL with "out of memory on cuda:N: asked for X bytes, Y of
 * Z free". */
#include "cuda_internal.h"

#include <stdlib.h>
#include <string.h>
#include <threads.h>

#define MIN_BLOCK 512u
#define SMALL_MAX ((size_t)64 << 20)
#define LARGE_STEP ((size_t)2 << 20)
#define N_SMALL 69 /* classes up to SMALL_MAX */
#define MAX_DEV 16

typedef struct kc_block {
    void *ptr;
    size_t size;
    kc_pool *pool; /* set while a capture pool owns it */
    struct kc_block *next;
} kc_block;

typedef struct {
    kc_block *small[N_SMALL];
    kc_block *large;
} free_lists;

struct kc_pool {
    int dev;
    free_lists fl;
    kc_block *retained; /* shared-cache blocks freed during the capture */
    int64_t owned;      /* blocks allocated for this pool, free or not */
    bool dead;          /* its graph is gone */
};

typedef struct {
    kc_block **slots; /* open addressing on ptr, linear probing */
    size_t cap, count;
    free_lists shared;
    size_t in_use, cached, peak;
    int64_t allocations;
} heap;

static heap heaps[MAX_DEV];
static mtx_t lock;
static once_flag lock_once = ONCE_FLAG_INIT;
static void lock_init(void) { mtx_init(&lock, mtx_plain); }

/* ---- sizes -------------------------------------------------------------------------- */
static size_t round_size(size_t n, int *cls) {
    if (n <= MIN_BLOCK) {
        *cls = 0;
        return MIN_BLOCK;
    }
    if (n > SMALL_MAX) {
        *cls = -1;
        if (n > SIZE_MAX - LARGE_STEP) return 0;
        return (n + LARGE_STEP - 1) / LARGE_STEP * LARGE_STEP;
    }
    int e = 63 - __builtin_clzll((unsigned long long)n); /* base = 2^e <= n */
    size_t base = (size_t)1 << e, step = base / 4;
    size_t q = (n - base + step - 1) / step; /* 0..4 */
    *cls = (e - 9) * 4 + (int)q;
    return base + q * step;
}

/* ---- the pointer table ------------------------------------------------------------------- */
static size_t slot_of(const heap *h, const void *p) {
    uintptr_t x = (uintptr_t)p >> 9;
    x ^= x >> 17;
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 20) & (h->cap - 1);
}

static bool table_insert(heap *h, kc_block *b) {
    if ((h->count + 1) * 2 > h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        kc_block **old = h->slots, **slots = calloc(cap, sizeof *slots);
        if (!slots) return false;
        size_t old_cap = h->cap;
        h->slots = slots;
        h->cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i]) {
                size_t j = slot_of(h, old[i]->ptr);
                while (slots[j]) j = (j + 1) & (cap - 1);
                slots[j] = old[i];
            }
        free(old);
    }
    size_t j = slot_of(h, b->ptr);
    while (h->slots[j]) j = (j + 1) & (h->cap - 1);
    h->slots[j] = b;
    h->count++;
    return true;
}

static size_t table_find(const heap *h, const void *p) {
    if (!h->cap) return SIZE_MAX;
    for (size_t j = slot_of(h, p);; j = (j + 1) & (h->cap - 1)) {
        if (!h->slots[j]) return SIZE_MAX;
        if (h->slots[j]->ptr == p) return j;
    }
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void table_remove(heap *h, size_t j) {
    size_t mask = h->cap - 1;
    h->slots[j] = NULL;
    h->count--;
    for (size_t k = (j + 1) & mask; h->slots[k]; k = (k + 1) & mask) {
        size_t home = slot_of(h, h->slots[k]->ptr);
        /* Move k back to j when its home is not in (j, k] cyclically. */
        bool between = j <= k ? (home > j && home <= k) : (home > j || home <= k);
        if (!between) {
            h->slots[j] = h->slots[k];
            h->slots[k] = NULL;
            j = k;
        }
    }
}

/* ---- free lists --------------------------------------------------------------------------- */
static void push_free(free_lists *fl, kc_block *b) {
    int cls;
    (void)round_size(b->size, &cls);
    kc_block **head = cls >= 0 ? &fl->small[cls] : &fl->large;
    b->next = *head;
    *head = b;
}

static kc_block *take_free(free_lists *fl, size_t size, int cls) {
    if (cls >= 0) {
        kc_block *b = fl->small[cls];
        if (b) fl->small[cls] = b->next;
        return b;
    }
    kc_block **best = NULL;
    for (kc_block **pp = &fl->large; *pp; pp = &(*pp)->next) {
        size_t s = (*pp)->size;
        if (s >= size && s - size <= size / 8 && (!best || s < (*best)->size)) best = pp;
    }
    if (!best) return NULL;
    kc_block *b = *best;
    *best = b->next;
    return b;
}

/* Gives every shared free block back to the driver. Lock held. */
static void release_cached(heap *h) {
    free_lists *fl = &h->shared;
    (void)cudaDeviceSynchronize(); /* cudaFree must not pull memory from queued kernels */
    for (int c = -1; c < N_SMALL; c++) {
        kc_block **head = c < 0 ? &fl->large : &fl->small[c];
        while (*head) {
            kc_block *b = *head;
            *head = b->next;
            size_t j = table_find(h, b->ptr);
            if (j != SIZE_MAX) table_remove(h, j);
            (void)cudaFree(b->ptr);
            h->cached -= b->size;
            free(b);
        }
    }
    (void)cudaGetLastError();
}

/* ---- the contract's slots ------------------------------------------------------------------- */
void *kc_alloc(int index, size_t nbytes) {
    call_once(&lock_once, lock_init);
    kc_dev *d = kc_device(index, "alloc");
    if (!d) return NULL;
    int cls;
    size_t size = round_size(nbytes, &cls);
    size_t fr = 0, tot = 0;
    if (!size) {
        kn__err(KN_ERR_OOM, "out of memory on cuda:%d: asked for %zu bytes", index, nbytes);
        return NULL;
    }
    heap *h = &heaps[index];
    mtx_lock(&lock);
    kc_pool *pool = d->capture;
    kc_block *b = take_free(pool ? &pool->fl : &h->shared, size, cls);
    if (b) {
        h->cached -= b->size;
    } else {
        void *p = NULL;
        cudaError_t e = cudaMalloc(&p, size);
        if (e != cudaSuccess && !pool) { /* free the cache, try once more */
            (void)cudaGetLastError();
            release_cached(h);
            e = cudaMalloc(&p, size);
        }
        b = e == cudaSuccess ? malloc(sizeof *b) : NULL;
        if (!b) {
            if (e == cudaSuccess) (void)cudaFree(p);
            (void)cudaGetLastError();
            mtx_unlock(&lock);
            (void)cudaMemGetInfo(&fr, &tot);
            (void)cudaGetLastError();
            kn__err(KN_ERR_OOM, "out of memory on cuda:%d: asked for %zu bytes, %zu of %zu free%s", index,
                    nbytes, fr, tot, pool ? " (during graph capture)" : "");
            return NULL;
        }
        *b = (kc_block){.ptr = p, .size = size, .pool = pool};
        if (!table_insert(h, b)) {
            (void)cudaFree(p);
            free(b);
            mtx_unlock(&lock);
            kn__err(KN_ERR_OOM, "alloc: out of host memory");
            return NULL;
        }
        if (pool) pool->owned++;
    }
    h->in_use += b->size;
    if (h->in_use > h->peak) h->peak = h->in_use;
    h->allocations++;
    void *p = b->ptr;
    mtx_unlock(&lock);
    return p;
}

static void pool_maybe_free(kc_pool *p) {
    if (p->dead && p->owned == 0) free(p);
}

void kc_free(int index, void *ptr, size_t nbytes) {
    (void)nbytes; /* the table knows the block's size */
    if (!ptr || index < 0 || index >= MAX_DEV) return;
    call_once(&lock_once, lock_init);
    kc_dev *d = kc_device(index, "free");
    heap *h = &heaps[index];
    mtx_lock(&lock);
    size_t j = table_find(h, ptr);
    if (j == SIZE_MAX) {
        mtx_unlock(&lock);
        return;
    }
    kc_block *b = h->slots[j];
    h->in_use -= b->size;
    h->cached += b->size;
    if (b->pool && !b->pool->dead) {
        push_free(&b->pool->fl, b);
    } else if (b->pool) { /* its graph is gone: back to the shared cache */
        kc_pool *p = b->pool;
        b->pool = NULL;
        p->owned--;
        push_free(&h->shared, b);
        pool_maybe_free(p);
    } else if (d && d->capture) { /* the graph being captured may read it on replay */
        b->next = d->capture->retained;
        d->capture->retained = b;
    } else {
        push_free(&h->shared, b);
    }
    mtx_unlock(&lock);
}

kc_pool *kc_pool_new(int index) {
    kc_pool *p = calloc(1, sizeof *p);
    if (!p) kn__err(KN_ERR_OOM, "graph_capture: out of host memory");
    else p->dev = index;
    return p;
}

void kc_pool_release(int index, kc_pool *p) {
    if (!p) return;
    call_once(&lock_once, lock_init);
    heap *h = &heaps[index];
    mtx_lock(&lock);
    p->dead = true;
    for (int c = -1; c < N_SMALL; c++) {
        kc_block **head = c < 0 ? &p->fl.large : &p->fl.small[c];
        while (*head) {
            kc_block *b = *head;
            *head = b->next;
            b->pool = NULL;
            p->owned--;
            push_free(&h->shared, b);
        }
    }
    while (p->retained) {
        kc_block *b = p->retained;
        p->retained = b->next;
        push_free(&h->shared, b);
    }
    pool_maybe_free(p);
    mtx_unlock(&lock);
}

kn_status kc_memory_stats(int index, kn_memory_stats *out) {
    call_once(&lock_once, lock_init);
    mtx_lock(&lock);
    heap *h = &heaps[index];
    *out = (kn_memory_stats){.in_use = h->in_use, .cached = h->cached, .peak = h->peak,
                             .allocations = h->allocations};
    mtx_unlock(&lock);
    return KN_OK;
}

kn_status kc_empty_cache(int index) {
    call_once(&lock_once, lock_init);
    kc_dev *d = kc_device(index, "empty_cache");
    if (!d) return kn_error_code();
    if (d->capture) return KN_OK; /* freeing would break the capture; nothing to do now */
    kn_status s = kc_adam_flush(d);
    mtx_lock(&lock);
    release_cached(&heaps[index]);
    mtx_unlock(&lock);
    return s;
}
