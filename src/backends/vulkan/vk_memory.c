/* Device memory: large VkDeviceMemory blocks (one VkBuffer over each),
 * sub-allocated first-fit with coalescing, so a tensor costs no Vulkan
 * allocation. Each block keeps its free ranges in a list of their own and the
 * device a hash of the ranges in use by address, so neither an allocation nor
 * a free walks the ranges in use (a step may hold thousands of tensors). A tensor larger than a block gets a block of its own, up to
 * the largest range one storage-buffer binding may span (lavapipe: 128 MiB).
 *
 * The addresses handed to the core lie in a private range: block k owns
 * [base, base + size), bases increase, and kvk_lookup finds the block of an
 * address by binary search. The queue runs in order, so a range freed by the
 * host can be handed out at once: whatever touches it next is recorded after
 * whatever touched it before (with a barrier between). */
#include "vk_internal.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN 256u
#define ADDRESS_START ((uintptr_t)1 << 40)
#define ADDRESS_GAP ((uintptr_t)1 << 20) /* between blocks: an address past one end is in no block */

struct kvk_range {
    size_t off, size;
    bool used;
    kvk_range *prev, *next;   /* the block's ranges in address order */
    kvk_range *fprev, *fnext; /* the block's free ranges (used: not linked) */
};

/* ---- ranges in use, by address: open addressing, linear probing ------------------ */
#define TOMB ((kvk_range *)1)

static size_t slot_of(uintptr_t a, size_t cap) { return (size_t)(((uint64_t)a >> 8) * 0x9E3779B97F4A7C15ull >> 17) & (cap - 1); }

static uintptr_t range_addr(const kvk_block *b, const kvk_range *r) { return b->base + r->off; }

/* Rehash into cap slots (a power of two); false when out of memory (the table is left as it was). */
static bool live_rehash(kvk_dev *d, size_t cap) {
    kvk_range **t = calloc(cap, sizeof *t);
    uintptr_t *k = calloc(cap, sizeof *k);
    if (!t || !k) {
        free(t), free(k);
        return false;
    }
    for (size_t i = 0; i < d->live_cap; i++)
        if (d->live[i] && d->live[i] != TOMB) {
            size_t j = slot_of(d->live_key[i], cap);
            while (t[j]) j = (j + 1) & (cap - 1);
            t[j] = d->live[i];
            k[j] = d->live_key[i];
        }
    free(d->live), free(d->live_key);
    d->live = t, d->live_key = k, d->live_cap = cap, d->live_tomb = 0;
    return true;
}

static bool live_put(kvk_dev *d, uintptr_t a, kvk_range *r) {
    if ((d->live_n + d->live_tomb + 1) * 2 > d->live_cap &&
        !live_rehash(d, d->live_cap && d->live_n * 4 < d->live_cap ? d->live_cap : (d->live_cap ? 2 * d->live_cap : 1024)))
        return false;
    size_t j = slot_of(a, d->live_cap);
    while (d->live[j] && d->live[j] != TOMB) j = (j + 1) & (d->live_cap - 1);
    if (d->live[j] == TOMB) d->live_tomb--;
    d->live[j] = r, d->live_key[j] = a, d->live_n++;
    return true;
}

/* Removes and returns the range in use at a (NULL: none). */
static kvk_range *live_take(kvk_dev *d, uintptr_t a) {
    if (!d->live_cap) return NULL;
    for (size_t j = slot_of(a, d->live_cap);; j = (j + 1) & (d->live_cap - 1)) {
        if (!d->live[j]) return NULL;
        if (d->live[j] != TOMB && d->live_key[j] == a) {
            kvk_range *r = d->live[j];
            d->live[j] = TOMB, d->live_n--, d->live_tomb++;
            return r;
        }
    }
}

static void free_link(kvk_block *b, kvk_range *r) {
    r->fprev = NULL, r->fnext = b->free;
    if (b->free) b->free->fprev = r;
    b->free = r;
}

static void free_unlink(kvk_block *b, kvk_range *r) {
    if (r->fprev) r->fprev->fnext = r->fnext;
    else b->free = r->fnext;
    if (r->fnext) r->fnext->fprev = r->fprev;
    r->fprev = r->fnext = NULL;
}

/* Unlinks r from the address order (its neighbour has absorbed it) and frees it. */
static void range_drop(kvk_block *b, kvk_range *r) {
    if (r->prev) r->prev->next = r->next;
    else b->ranges = r->next;
    if (r->next) r->next->prev = r->prev;
    free(r);
}

kn_status kvk_memory_init(kvk_dev *d) {
    d->next_base = ADDRESS_START;
    /* 64 MiB blocks, or the largest binding when that is smaller. */
    d->block_size = (size_t)64 << 20;
    if (d->block_size > d->max_binding) d->block_size = d->max_binding;
    return KN_OK;
}

static int pick_type(kvk_dev *d, uint32_t bits, uint32_t preferred, VkMemoryPropertyFlags need) {
    if (bits >> preferred & 1) return (int)preferred;
    VkPhysicalDeviceMemoryProperties mp;
    kvk.vkGetPhysicalDeviceMemoryProperties(d->phys, &mp);
    for (uint32_t i = 0; i < mp.memoryTypeCount; i++)
        if ((bits >> i & 1) && (mp.memoryTypes[i].propertyFlags & need) == need) return (int)i;
    return -1;
}

static VkResult make_buffer(kvk_dev *d, size_t size, VkBufferUsageFlags usage, uint32_t type,
                            VkMemoryPropertyFlags need, VkBuffer *buf, VkDeviceMemory *mem) {
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size, .usage = usage,
                             .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkResult r = kvk.vkCreateBuffer(d->dev, &bi, NULL, buf);
    if (r != VK_SUCCESS) return r;
    VkMemoryRequirements req;
    kvk.vkGetBufferMemoryRequirements(d->dev, *buf, &req);
    int t = pick_type(d, req.memoryTypeBits, type, need);
    if (t < 0) {
        kvk.vkDestroyBuffer(d->dev, *buf, NULL);
        return VK_ERROR_FEATURE_NOT_PRESENT;
    }
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                               .memoryTypeIndex = (uint32_t)t};
    r = kvk.vkAllocateMemory(d->dev, &ai, NULL, mem);
    if (r == VK_SUCCESS) r = kvk.vkBindBufferMemory(d->dev, *buf, *mem, 0);
    if (r != VK_SUCCESS) {
        kvk.vkDestroyBuffer(d->dev, *buf, NULL);
        if (*mem) kvk.vkFreeMemory(d->dev, *mem, NULL);
        *mem = VK_NULL_HANDLE;
    }
    return r;
}

kn_status kvk_alloc_host_buffer(kvk_dev *d, size_t size, VkBufferUsageFlags usage, VkBuffer *buf,
                                VkDeviceMemory *mem, void **mapped) {
    *mem = VK_NULL_HANDLE;
    VkResult r = make_buffer(d, size, usage, d->mem_host,
                             VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, buf, mem);
    if (r == VK_SUCCESS) r = kvk.vkMapMemory(d->dev, *mem, 0, VK_WHOLE_SIZE, 0, mapped);
    return r == VK_SUCCESS ? KN_OK : kvk_vk_error(r, "vulkan host buffer", d);
}

static kvk_block *new_block(kvk_dev *d, size_t size, bool dedicated) {
    if (d->n_blocks == d->cap_blocks) {
        int cap = d->cap_blocks ? 2 * d->cap_blocks : 16;
        kvk_block *b = realloc(d->blocks, (size_t)cap * sizeof *b);
        if (!b) return NULL;
        d->blocks = b;
        d->cap_blocks = cap;
    }
    kvk_block b = {.size = size, .dedicated = dedicated};
    VkResult r = make_buffer(d, size,
                             VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                 VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                             d->mem_device, 0, &b.buffer, &b.memory);
    if (r != VK_SUCCESS) return NULL;
    b.ranges = malloc(sizeof *b.ranges);
    if (!b.ranges) {
        kvk.vkDestroyBuffer(d->dev, b.buffer, NULL);
        kvk.vkFreeMemory(d->dev, b.memory, NULL);
        return NULL;
    }
    *b.ranges = (kvk_range){0, size, false, NULL, NULL, NULL, NULL};
    b.free = b.ranges;
    b.base = d->next_base;
    d->next_base += (size + ADDRESS_GAP - 1) / ADDRESS_GAP * ADDRESS_GAP + ADDRESS_GAP;
    d->blocks[d->n_blocks] = b; /* bases increase: the array stays sorted */
    d->reserved += size;
    return &d->blocks[d->n_blocks++];
}

static void destroy_block(kvk_dev *d, int i) {
    kvk_block *b = &d->blocks[i];
    for (kvk_range *r = b->ranges, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    kvk.vkDestroyBuffer(d->dev, b->buffer, NULL);
    kvk.vkFreeMemory(d->dev, b->memory, NULL);
    d->reserved -= b->size;
    memmove(b, b + 1, (size_t)(d->n_blocks - i - 1) * sizeof *b);
    d->n_blocks--;
}

/* First fit among b's free ranges; the address, or 0. */
static uintptr_t take(kvk_dev *d, kvk_block *b, size_t n) {
    for (kvk_range *r = b->free; r; r = r->fnext) {
        if (r->size < n) continue;
        kvk_range *rest = NULL;
        if (r->size > n) {
            if (!(rest = malloc(sizeof *rest))) return 0;
            *rest = (kvk_range){r->off + n, r->size - n, false, r, r->next, NULL, NULL};
        }
        if (!live_put(d, range_addr(b, r), r)) {
            free(rest);
            return 0;
        }
        if (rest) {
            if (r->next) r->next->prev = rest;
            r->next = rest;
            r->size = n;
            free_link(b, rest);
        }
        free_unlink(b, r);
        r->used = true;
        return range_addr(b, r);
    }
    return 0;
}

void *kvk_alloc(int index, size_t nbytes) {
    kvk_dev *d = kvk_enter(index, "alloc");
    if (!d) return NULL;
    size_t n = nbytes ? (nbytes + ALIGN - 1) / ALIGN * ALIGN : ALIGN;
    uintptr_t p = 0;
    if (n <= d->block_size && nbytes <= d->block_size) {
        for (int i = 0; i < d->n_blocks && !p; i++)
            if (!d->blocks[i].dedicated) p = take(d, &d->blocks[i], n);
        if (!p) {
            kvk_block *b = new_block(d, d->block_size, false);
            if (b) p = take(d, b, n);
        }
    } else if (nbytes <= d->max_binding) {
        kvk_block *b = new_block(d, n, true);
        if (b) p = take(d, b, n);
    }
    if (!p && nbytes > d->max_binding)
        kn__err(KN_ERR_OOM, "alloc: %zu bytes on vulkan:%d is more than one storage buffer binding can span "
                "(%zu bytes on this device)", nbytes, index, d->max_binding);
    if (p) {
        d->in_use += n;
        if (d->in_use > d->peak) d->peak = d->in_use;
        d->allocations++;
    }
    kvk_leave(d);
    return (void *)p;
}

static int find_block(kvk_dev *d, uintptr_t a) {
    int lo = 0, hi = d->n_blocks - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const kvk_block *b = &d->blocks[mid];
        if (a < b->base) hi = mid - 1;
        else if (a >= b->base + b->size) lo = mid + 1;
        else return mid;
    }
    return -1;
}

void kvk_free(int index, void *ptr, size_t nbytes) {
    (void)nbytes;
    if (index < 0 || index >= kvk_device_count() || !ptr) return;
    kvk_dev *d = kvk_enter(index, "free");
    if (!d) return;
    uintptr_t a = (uintptr_t)ptr;
    int i = find_block(d, a);
    kvk_range *r = i >= 0 ? live_take(d, a) : NULL;
    if (r) {
        kvk_block *b = &d->blocks[i];
        r->used = false;
        d->in_use -= r->size;
        free_link(b, r);
        kvk_range *nx = r->next, *pv = r->prev;
        if (nx && !nx->used) { /* merge with the next range */
            free_unlink(b, nx);
            r->size += nx->size;
            range_drop(b, nx);
        }
        if (pv && !pv->used) { /* and with the previous one */
            free_unlink(b, r);
            pv->size += r->size;
            range_drop(b, r);
        }
        /* A dedicated block is given back at once (after the queue is done with it). */
        if (b->dedicated && kvk_wait(d, "free") == KN_OK) destroy_block(d, i);
    }
    kvk_leave(d);
}

kvk_block *kvk_lookup(kvk_dev *d, const void *p, size_t n, size_t *offset, const char *op) {
    uintptr_t a = (uintptr_t)p;
    int i = find_block(d, a);
    if (i < 0 || a + n > d->blocks[i].base + d->blocks[i].size) {
        kn__err(KN_ERR_INVALID, "%s: address %p (%zu bytes) is not memory of vulkan:%d", op, p, n, d->index);
        return NULL;
    }
    *offset = (size_t)(a - d->blocks[i].base);
    return &d->blocks[i];
}

kn_status kvk_memory(int index, size_t *free_bytes, size_t *total_bytes) {
    kvk_dev *d = kvk_peek(index, "device_memory"); /* probed figures: no device is made */
    if (!d) return kn_error_code();
    size_t total = (size_t)d->heap_size;
    /* Without VK_EXT_memory_budget the heap less what kiln holds is the best guess. */
    *total_bytes = total;
    *free_bytes = total > d->reserved ? total - d->reserved : 0;
    kvk_leave(d);
    return KN_OK;
}

kn_status kvk_memory_stats(int index, kn_memory_stats *out) {
    kvk_dev *d = kvk_peek(index, "memory_stats"); /* all 0 before first use */
    if (!d) return kn_error_code();
    out->in_use = d->in_use;
    out->cached = d->reserved - d->in_use;
    out->peak = d->peak;
    out->allocations = d->allocations;
    kvk_leave(d);
    return KN_OK;
}

kn_status kvk_empty_cache(int index) {
    kvk_dev *d = kvk_peek(index, "empty_cache");
    if (!d) return kn_error_code();
    kn_status s = d->ready ? kvk_flush(d, "empty_cache") : KN_OK; /* nothing held before first use */
    for (int i = d->n_blocks - 1; i >= 0 && s == KN_OK; i--) {
        const kvk_range *r = d->blocks[i].ranges;
        if (r && !r->used && !r->next) destroy_block(d, i);
    }
    kvk_leave(d);
    return s;
}
