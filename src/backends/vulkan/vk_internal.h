/* Vulkan backend internals: the loader's function table, per-device state,
 * the memory sub-allocator, the command batcher, pipelines and the kernels.
 *
 * Memory model: device memory comes in large VkDeviceMemory blocks, each with
 * one VkBuffer over all of it, sub-allocated. The core sees "pointers" that
 * are addresses in a private, never dereferenced address range (each block
 * owns a span of it), so the core's pointer arithmetic on views works; the
 * backend maps an address back to (block, byte offset). Shaders bind whole
 * blocks as arrays of 32-bit words and get byte offsets, strides and dtypes
 * from a parameter buffer. */
#ifndef KILN_VK_INTERNAL_H
#define KILN_VK_INTERNAL_H

#include "core/backend.h"

#include <vulkan/vulkan.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <threads.h>

/* ---- the loader (vk_loader.c) --------------------------------------------------- */
#define KVK_INSTANCE_FNS(X)                                                                        \
    X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties)            \
    X(vkGetPhysicalDeviceFeatures) X(vkGetPhysicalDeviceMemoryProperties)                          \
    X(vkGetPhysicalDeviceQueueFamilyProperties) X(vkCreateDevice) X(vkGetDeviceProcAddr)           \
    X(vkEnumerateDeviceExtensionProperties) X(vkGetPhysicalDeviceFeatures2)                        \
    X(vkGetPhysicalDeviceProperties2)
#define KVK_DEVICE_FNS(X)                                                                          \
    X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkAllocateMemory) X(vkFreeMemory) X(vkMapMemory)      \
    X(vkUnmapMemory) X(vkCreateBuffer) X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements)         \
    X(vkBindBufferMemory) X(vkCreateCommandPool) X(vkDestroyCommandPool)                           \
    X(vkAllocateCommandBuffers) X(vkBeginCommandBuffer) X(vkEndCommandBuffer)                      \
    X(vkResetCommandBuffer) X(vkCmdCopyBuffer) X(vkCmdPipelineBarrier) X(vkCmdDispatch)            \
    X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants) X(vkCmdFillBuffer)       \
    X(vkQueueSubmit) X(vkQueueWaitIdle) X(vkCreateFence) X(vkDestroyFence) X(vkWaitForFences)      \
    X(vkResetFences) X(vkCreateShaderModule) X(vkDestroyShaderModule) X(vkCreatePipelineCache)     \
    X(vkDestroyPipelineCache) X(vkCreateComputePipelines) X(vkDestroyPipeline)                     \
    X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout) X(vkCreateDescriptorSetLayout)            \
    X(vkDestroyDescriptorSetLayout) X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool)           \
    X(vkResetDescriptorPool) X(vkAllocateDescriptorSets) X(vkUpdateDescriptorSets)                 \
    X(vkDeviceWaitIdle)

typedef struct {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
    PFN_vkCreateInstance vkCreateInstance;
    PFN_vkEnumerateInstanceExtensionProperties vkEnumerateInstanceExtensionProperties;
    PFN_vkEnumerateInstanceVersion vkEnumerateInstanceVersion;
#define KVK_DECL(f) PFN_##f f;
    KVK_INSTANCE_FNS(KVK_DECL)
    KVK_DEVICE_FNS(KVK_DECL)
#undef KVK_DECL
} kvk_fns;

extern kvk_fns kvk;
/* Opens the loader and resolves the global functions; false when there is
 * no loader (no error is recorded: that means zero devices). */
bool kvk_load_loader(void);
bool kvk_load_instance(VkInstance inst);

/* ---- memory (vk_memory.c) ------------------------------------------------------- */
typedef struct kvk_range kvk_range;
typedef struct {
    VkDeviceMemory memory;
    VkBuffer buffer;
    uintptr_t base; /* its span of the private address range */
    size_t size;
    kvk_range *ranges; /* free and used ranges in address order */
    kvk_range *free;   /* the free ones, in no order */
    bool dedicated;    /* one allocation larger than a normal block */
} kvk_block;

/* ---- pipelines (vk_command.c) ---------------------------------------------------- */
#define KVK_BINDINGS 8 /* operand buffers a shader sees (bindings 0..7; 8 params, 9 faults) */
typedef enum {
    KVK_SH_COPY, KVK_SH_FILL, KVK_SH_UNARY, KVK_SH_BINARY, KVK_SH_WHERE, KVK_SH_REDUCE,
    KVK_SH_MATMUL, KVK_SH_GATHER, KVK_SH_SCATTER_ADD, KVK_SH_RANDOM, KVK_SH_GEMM, KVK_SH_ADAM, KVK_SH_BN_STATS,
    KVK_SH_BN_APPLY, KVK_SH_CROSS_ENTROPY, KVK_SH_EMBED, KVK_SH_DROPOUT, KVK_SH_FFT_LOCAL, KVK_SH_FFT_PASS,
    KVK_SH_FFT_CHIRP, KVK_SH_COUNT
} kvk_shader;

/* ---- FFT tables (vk_ops_fft.c) ------------------------------------------------------ */
#define KVK_FFT_TABLES 16 /* tables kept per device, least recently used evicted */
typedef struct {
    void *ptr; /* device memory from kvk_alloc; NULL: a free slot */
    size_t bytes;
    int kind, sign; /* which table (vk_ops_fft.c), and the transform's direction where it matters */
    bool f64;
    int64_t n; /* the length it serves */
    uint64_t last; /* LRU tick */
} kvk_fft_table;

/* ---- a device ------------------------------------------------------------------- */
typedef struct {
    int index;
    VkPhysicalDevice phys;
    VkPhysicalDeviceProperties props;
    char name[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE + 32];
    bool is_cpu; /* lavapipe and the like: listed, used only when named */
    bool f64, f16_ok;
    uint32_t dtypes;
    size_t max_binding; /* bytes one storage-buffer binding may span */
    uint32_t subgroup;
    bool subgroup_arith; /* subgroup arithmetic in compute: the shaders' "s" variants */
    uint32_t queue_family;
    VkDeviceSize heap_size;

    mtx_t lock; /* every call on a device holds it */
    bool ready, failed;
    VkDevice dev;
    VkQueue queue;
    uint32_t mem_device, mem_host; /* memory type indices */
    bool device_is_host_visible;

    /* memory */
    kvk_block *blocks;
    int n_blocks, cap_blocks;
    uintptr_t next_base;
    size_t block_size, in_use, reserved, peak;
    int64_t allocations;
    kvk_range **live;    /* ranges in use, hashed by address (vk_memory.c) */
    uintptr_t *live_key;
    size_t live_cap, live_n, live_tomb;

    /* commands: one batch being recorded at a time */
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
    bool recording;
    int n_recorded;
    VkDescriptorPool dpool;
    int n_sets, max_sets;
    VkBuffer params_buf, staging_buf, fault_buf;
    VkDeviceMemory params_mem, staging_mem, fault_mem;
    uint32_t *params, *fault;
    char *staging;
    size_t params_words, params_used, staging_size, staging_used;

    /* fault contexts of composites (kvk_fault_code), kept for the device's life */
    struct kvk_fault_name *fault_names;
    int n_fault_names;

    /* twiddles and Bluestein's tables by length (vk_ops_fft.c), under lock */
    kvk_fft_table fft_tables[KVK_FFT_TABLES];
    uint64_t fft_tick;

    /* pipelines, made on first use */
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipelineCache cache;
    VkPipeline pipes[KVK_SH_COUNT][2]; /* [shader][f64] */
} kvk_dev;

int kvk_device_count(void);
/* The device, initialized on first use and locked; NULL with an error. */
kvk_dev *kvk_enter(int index, const char *op);
/* The device locked, made or not (d->ready says): for what needs no VkDevice. */
kvk_dev *kvk_peek(int index, const char *op);
void kvk_leave(kvk_dev *d);
kn_status kvk_vk_error(VkResult r, const char *op, const kvk_dev *d);

/* memory */
kn_status kvk_memory_init(kvk_dev *d);
void *kvk_alloc(int index, size_t nbytes);
void kvk_free(int index, void *ptr, size_t nbytes);
kn_status kvk_memory(int index, size_t *free_bytes, size_t *total_bytes);
kn_status kvk_memory_stats(int index, kn_memory_stats *out);
kn_status kvk_empty_cache(int index);
/* The block holding [p, p + n) and p's byte offset in it; NULL with an error. */
kvk_block *kvk_lookup(kvk_dev *d, const void *p, size_t n, size_t *offset, const char *op);
kn_status kvk_alloc_host_buffer(kvk_dev *d, size_t size, VkBufferUsageFlags usage, VkBuffer *buf,
                                VkDeviceMemory *mem, void **mapped);

/* commands */
kn_status kvk_commands_init(kvk_dev *d);
/* Submits what is recorded and waits for it; reports a fault a shader raised. */
kn_status kvk_flush(kvk_dev *d, const char *op);
/* Submits and waits, leaving faults for the next kvk_flush. */
kn_status kvk_wait(kvk_dev *d, const char *op);
kn_status kvk_copy_h2d(int index, void *dst, const void *src, size_t nbytes);
kn_status kvk_copy_d2h(int index, void *dst, const void *src, size_t nbytes);
kn_status kvk_copy_d2d(int index, void *dst, const void *src, size_t nbytes);
kn_status kvk_synchronize(int index);

/* One dispatch: a shader (variant f64 or not), up to KVK_BINDINGS operand
 * addresses (NULL: unused) with the byte spans they touch, a parameter block
 * of n_params words whose word `base_slot[k]` of each operand is filled with
 * its byte offset in its block, and a grid of groups. */
typedef struct {
    kvk_shader shader;
    bool f64;
    const void *ptr[KVK_BINDINGS];
    int64_t lo[KVK_BINDINGS], hi[KVK_BINDINGS]; /* bytes touched, relative to ptr */
    int base_slot[KVK_BINDINGS];                /* word of params that gets the offset */
    uint32_t *params;
    int n_params;
    uint32_t groups[3];
} kvk_dispatch;
kn_status kvk_record(kvk_dev *d, kvk_dispatch *w, const char *op);

/* Fault codes a shader raises (word 0 of the fault buffer): the kind in the
 * low 8 bits, and above them the composite's fault context (0: none). */
enum {
    KVK_FAULT_NONE = 0, KVK_FAULT_GATHER, KVK_FAULT_SCATTER_ADD, KVK_FAULT_INDEX_SELECT, KVK_FAULT_INDEX_ADD,
    KVK_FAULT_EMBEDDING_CAT, KVK_FAULT_CROSS_ENTROPY
};
/* The fault code a dispatch of this kind, recorded now, raises: the calling
 * thread's fault context (a composite's, core/internal.h) goes with it, so
 * kvk_flush names the fused op. */
uint32_t kvk_fault_code(kvk_dev *d, uint32_t kind);

/* What the fused kernels run (their supports() part). */
bool kvk_adam_supports(const kn_adam_args *a);
bool kvk_dropout_supports(const kn_dropout_args *a);
bool kvk_batch_norm_supports(const kn_batch_norm_args *a);
bool kvk_batch_norm_backward_supports(const kn_batch_norm_backward_args *a);
bool kvk_cross_entropy_supports(const kn_cross_entropy_args *a);
bool kvk_cross_entropy_backward_supports(const kn_cross_entropy_backward_args *a);
bool kvk_fft_supports(const kvk_dev *d, const kn_fft_args *a);

/* KILN_VULKAN_PROFILE=1 (vk_profile.c): wraps the kernel slots; the
 * batcher reports each dispatch and each submit while kvk_profiling. */
extern bool kvk_profiling;
void kvk_profile_install(kn_backend *b);
void kvk_print_devices(FILE *f); /* what the profile says of each device */
void kvk_profile_dispatch(void);
void kvk_profile_submit(double ms);
double kvk_profile_now(void);

/* kernels (vk_ops*.c) */
#define KN_OP(ID, name, tier, fields) kn_status kvk_##name(int device, const void *args);
#include "core/ops.def"
#undef KN_OP

#endif
