/* The Vulkan backend: instance and device discovery, per-device set-up, and
 * the backend's table. Probing tolerates a machine without a loader, a
 * driver or a usable device: it reports zero devices and prints nothing.
 *
 * Devices are listed best first (discrete, integrated, virtual GPUs, then
 * devices that are really the CPU, such as Mesa's lavapipe). The backend
 * asks to be the default only when a real GPU is present; a CPU-type device
 * is used when named (--device vulkan, KILN_DEVICE=vulkan:0). */
#include "vk_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KVK_MAX_DEVICES 16

static VkInstance instance;
static kvk_dev devs[KVK_MAX_DEVICES];
static int n_devices;
static bool any_gpu;

static bool env_on(const char *name) {
    const char *s = getenv(name);
    return s && *s && strcmp(s, "0") != 0;
}

static int type_rank(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 4;
    default: return 3;
    }
}

static bool has_instance_ext(const VkExtensionProperties *e, uint32_t n, const char *name) {
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(e[i].extensionName, name)) return true;
    return false;
}

static bool create_instance(void) {
    uint32_t version = VK_API_VERSION_1_0;
    if (kvk.vkEnumerateInstanceVersion && kvk.vkEnumerateInstanceVersion(&version) != VK_SUCCESS)
        version = VK_API_VERSION_1_0;
    if (version < VK_API_VERSION_1_1) return false; /* features2, subgroups: 1.1 */
    uint32_t n = 0;
    VkExtensionProperties *ext = NULL;
    if (kvk.vkEnumerateInstanceExtensionProperties(NULL, &n, NULL) == VK_SUCCESS && n) {
        ext = calloc(n, sizeof *ext);
        if (!ext || kvk.vkEnumerateInstanceExtensionProperties(NULL, &n, ext) != VK_SUCCESS) n = 0;
    }
    /* MoltenVK lists its devices only to an instance that enumerates
     * portability drivers; lavapipe advertises the extension too. */
    const char *names[1];
    uint32_t n_names = 0;
    VkInstanceCreateFlags flags = 0;
    if (has_instance_ext(ext, n, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
        names[n_names++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
        flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    }
    free(ext);
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "kiln",
                             .pEngineName = "kiln", .apiVersion = VK_API_VERSION_1_1};
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .flags = flags,
                               .pApplicationInfo = &app, .enabledExtensionCount = n_names,
                               .ppEnabledExtensionNames = names};
    if (kvk.vkCreateInstance(&ci, NULL, &instance) != VK_SUCCESS) return false;
    return kvk_load_instance(instance);
}

/* A physical device kiln can use: a compute queue and 64-bit integers (the
 * index dtype). Fills what probing learns. */
static bool describe(VkPhysicalDevice p, kvk_dev *d) {
    memset(d, 0, sizeof *d);
    d->phys = p;
    kvk.vkGetPhysicalDeviceProperties(p, &d->props);
    if (d->props.apiVersion < VK_API_VERSION_1_1) return false;
    VkPhysicalDeviceFeatures f;
    kvk.vkGetPhysicalDeviceFeatures(p, &f);
    if (!f.shaderInt64) return false;
    /* Every shader sees KVK_BINDINGS operand buffers, the parameters and the faults. */
    if (d->props.limits.maxPerStageDescriptorStorageBuffers < KVK_BINDINGS + 2 ||
        d->props.limits.maxDescriptorSetStorageBuffers < KVK_BINDINGS + 2)
        return false;
    uint32_t nq = 0;
    kvk.vkGetPhysicalDeviceQueueFamilyProperties(p, &nq, NULL);
    VkQueueFamilyProperties q[32];
    if (nq > 32) nq = 32;
    kvk.vkGetPhysicalDeviceQueueFamilyProperties(p, &nq, q);
    int fam = -1;
    for (uint32_t i = 0; i < nq; i++) /* a compute-only family first: it is the async one */
        if ((q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && (fam < 0 || !(q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)))
            fam = (int)i;
    if (fam < 0) return false;
    d->queue_family = (uint32_t)fam;
    VkPhysicalDeviceSubgroupProperties sg = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sg};
    kvk.vkGetPhysicalDeviceProperties2(p, &p2);
    d->subgroup = sg.subgroupSize ? sg.subgroupSize : 1;
    /* KILN_VULKAN_NO_SUBGROUPS=1 keeps the shared-memory reductions (to test them). */
    d->subgroup_arith = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                        (sg.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
                        (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) && sg.subgroupSize > 1 &&
                        !env_on("KILN_VULKAN_NO_SUBGROUPS");
    d->is_cpu = d->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    /* KILN_VULKAN_NO_F64=1 runs as a device without float64 would (MoltenVK). */
    d->f64 = f.shaderFloat64 && !env_on("KILN_VULKAN_NO_F64");
    d->dtypes = KN_DTYPES_ALL & ~(d->f64 ? 0u : 1u << KN_F64);
    /* Byte offsets in shaders are 32-bit: one binding spans less than 4 GiB. */
    uint64_t range = d->props.limits.maxStorageBufferRange;
    if (range > 0xFFFFFF00u) range = 0xFFFFFF00u;
    d->max_binding = (size_t)range & ~(size_t)255;
    VkPhysicalDeviceMemoryProperties mp;
    kvk.vkGetPhysicalDeviceMemoryProperties(p, &mp);
    for (uint32_t i = 0; i < mp.memoryHeapCount; i++)
        if ((mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) && mp.memoryHeaps[i].size > d->heap_size)
            d->heap_size = mp.memoryHeaps[i].size;
    snprintf(d->name, sizeof d->name, "%s%s", d->props.deviceName, d->is_cpu ? " (CPU)" : "");
    return true;
}

static int cmp_rank(const void *a, const void *b) {
    const kvk_dev *x = a, *y = b;
    int rx = type_rank(x->props.deviceType), ry = type_rank(y->props.deviceType);
    return rx != ry ? rx - ry : x->index - y->index; /* stable: the driver's order within a kind */
}

static void probe(void) {
    if (env_on("KILN_VULKAN_DISABLE") || !kvk_load_loader() || !create_instance()) return;
    uint32_t n = 0;
    if (kvk.vkEnumeratePhysicalDevices(instance, &n, NULL) != VK_SUCCESS || !n) return;
    VkPhysicalDevice phys[KVK_MAX_DEVICES];
    if (n > KVK_MAX_DEVICES) n = KVK_MAX_DEVICES;
    VkResult r = kvk.vkEnumeratePhysicalDevices(instance, &n, phys);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) return;
    int m = 0;
    for (uint32_t i = 0; i < n; i++)
        if (describe(phys[i], &devs[m])) devs[m].index = (int)i, m++;
    qsort(devs, (size_t)m, sizeof *devs, cmp_rank);
    for (int i = 0; i < m; i++) {
        devs[i].index = i;
        mtx_init(&devs[i].lock, mtx_plain);
        if (!devs[i].is_cpu) any_gpu = true;
    }
    n_devices = m;
}

static once_flag probe_once = ONCE_FLAG_INIT;
int kvk_device_count(void) {
    call_once(&probe_once, probe);
    return n_devices;
}

static const char *device_name(int index) {
    return index >= 0 && index < kvk_device_count() ? devs[index].name : "unavailable";
}

kn_status kvk_vk_error(VkResult r, const char *op, const kvk_dev *d) {
    int i = d ? d->index : -1;
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
        return kn__err(KN_ERR_OOM, "%s: out of memory on vulkan:%d (VkResult %d)", op, i, (int)r);
    if (r == VK_ERROR_DEVICE_LOST)
        return kn__err(KN_ERR_DEVICE, "%s: vulkan:%d was lost (a driver reset or a fault); it cannot be used again",
                       op, i);
    return kn__err(KN_ERR_DEVICE, "%s: Vulkan error %d on vulkan:%d", op, (int)r, i);
}

/* Memory types: device-local for tensors, host-visible and coherent for
 * staging, parameters and faults. */
static int find_type(const VkPhysicalDeviceMemoryProperties *mp, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid) {
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++)
        if ((mp->memoryTypes[i].propertyFlags & want) == want && !(mp->memoryTypes[i].propertyFlags & avoid)) return (int)i;
    return -1;
}

static kn_status init_device(kvk_dev *d) {
    const char *op = "vulkan init";
    float prio = 1.0f;
    VkDeviceQueueCreateInfo q = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                 .queueFamilyIndex = d->queue_family, .queueCount = 1, .pQueuePriorities = &prio};
    VkPhysicalDeviceFeatures f = {.shaderInt64 = VK_TRUE, .shaderFloat64 = d->f64 ? VK_TRUE : VK_FALSE};
    const char *ext[1];
    uint32_t n_ext = 0;
    /* A portability driver (MoltenVK) must be told we know it is one. */
    uint32_t ne = 0;
    kvk.vkEnumerateDeviceExtensionProperties(d->phys, NULL, &ne, NULL);
    VkExtensionProperties *props = ne ? calloc(ne, sizeof *props) : NULL;
    if (props && kvk.vkEnumerateDeviceExtensionProperties(d->phys, NULL, &ne, props) == VK_SUCCESS &&
        has_instance_ext(props, ne, "VK_KHR_portability_subset"))
        ext[n_ext++] = "VK_KHR_portability_subset";
    free(props);
    VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .queueCreateInfoCount = 1,
                             .pQueueCreateInfos = &q, .enabledExtensionCount = n_ext, .ppEnabledExtensionNames = ext,
                             .pEnabledFeatures = &f};
    VkResult r = kvk.vkCreateDevice(d->phys, &ci, NULL, &d->dev);
    if (r != VK_SUCCESS) return kvk_vk_error(r, op, d);
    kvk.vkGetDeviceQueue(d->dev, d->queue_family, 0, &d->queue);
    VkPhysicalDeviceMemoryProperties mp;
    kvk.vkGetPhysicalDeviceMemoryProperties(d->phys, &mp);
    int dl = find_type(&mp, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
    int hv = find_type(&mp, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT |
                                VK_MEMORY_PROPERTY_HOST_CACHED_BIT, 0);
    if (hv < 0) hv = find_type(&mp, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, 0);
    if (dl < 0) dl = hv;
    if (hv < 0) return kn__err(KN_ERR_DEVICE, "%s: vulkan:%d has no host-visible coherent memory", op, d->index);
    d->mem_device = (uint32_t)dl;
    d->mem_host = (uint32_t)hv;
    kn_status s = kvk_memory_init(d);
    if (s == KN_OK) s = kvk_commands_init(d);
    return s;
}

kvk_dev *kvk_enter(int index, const char *op) {
    if (index < 0 || index >= kvk_device_count()) {
        kn__err(KN_ERR_DEVICE, "%s: device vulkan:%d is not available", op, index);
        return NULL;
    }
    kvk_dev *d = &devs[index];
    mtx_lock(&d->lock);
    if (!d->ready && !d->failed) {
        if (init_device(d) == KN_OK) d->ready = true;
        else d->failed = true; /* the message stays with this first call */
        if (!d->ready) {
            mtx_unlock(&d->lock);
            return NULL;
        }
    }
    if (!d->ready) {
        mtx_unlock(&d->lock);
        kn__err(KN_ERR_DEVICE, "%s: vulkan:%d could not be initialized", op, index);
        return NULL;
    }
    return d;
}

/* Probing only enumerates: the VkDevice, its queue, memory and pipeline
 * cache are made on first use (an allocation, a copy, a kernel), so listing
 * devices or asking their memory creates none. */
kvk_dev *kvk_peek(int index, const char *op) {
    if (index < 0 || index >= kvk_device_count()) {
        kn__err(KN_ERR_DEVICE, "%s: device vulkan:%d is not available", op, index);
        return NULL;
    }
    kvk_dev *d = &devs[index];
    mtx_lock(&d->lock);
    return d;
}

void kvk_leave(kvk_dev *d) { mtx_unlock(&d->lock); }

/* KILN_VULKAN_FUSED=0 sends adam, dropout, batch norm and cross-entropy to
 * their composites (to measure what the fused kernels save). */
static bool fused_off;

void kvk_print_devices(FILE *f) {
    for (int i = 0; i < n_devices; i++)
        fprintf(f, "vulkan:%d %s: subgroup size %u, subgroup arithmetic %s, float64 %s\n", i, devs[i].name,
                devs[i].subgroup, devs[i].subgroup_arith ? "used" : "not used", devs[i].f64 ? "yes" : "no");
}

static bool supports(int index, kn_op op, const void *args) {
    if (fused_off && (op == KN_OP_ADAM || op == KN_OP_DROPOUT || op == KN_OP_BATCH_NORM || op == KN_OP_BATCH_NORM_BACKWARD ||
                      op == KN_OP_CROSS_ENTROPY || op == KN_OP_CROSS_ENTROPY_BACKWARD))
        return false;
    if (op == KN_OP_MATMUL) { /* floats only (the op allows nothing else) */
        const kn_matmul_args *a = args;
        return kn_dtype_is_float(a->out.dtype);
    }
    if (op == KN_OP_ADAM) return kvk_adam_supports(args);
    if (op == KN_OP_DROPOUT) return kvk_dropout_supports(args);
    if (op == KN_OP_BATCH_NORM) return kvk_batch_norm_supports(args);
    if (op == KN_OP_BATCH_NORM_BACKWARD) return kvk_batch_norm_backward_supports(args);
    if (op == KN_OP_CROSS_ENTROPY) return kvk_cross_entropy_supports(args);
    if (op == KN_OP_CROSS_ENTROPY_BACKWARD) return kvk_cross_entropy_backward_supports(args);
    if (op == KN_OP_FFT) return kvk_fft_supports(&devs[index], args);
    return true;
}

static kn_backend vulkan = {
    .name = "vulkan",
    .title = "Vulkan",
    .priority = 0, /* set in the definition: 20 when a real GPU is present */
    .device_count = kvk_device_count,
    .device_name = device_name,
    .memory = kvk_memory,
    .alloc = kvk_alloc,
    .free = kvk_free,
    .copy_h2d = kvk_copy_h2d,
    .copy_d2h = kvk_copy_d2h,
    .copy_d2d = kvk_copy_d2d,
    .synchronize = kvk_synchronize,
    .memory_stats = kvk_memory_stats,
    .empty_cache = kvk_empty_cache,
    .supports = supports,
    .kernels =
        {
            [KN_OP_COPY] = kvk_copy,
            [KN_OP_FILL] = kvk_fill,
            [KN_OP_UNARY] = kvk_unary,
            [KN_OP_UNARY_BACKWARD] = kvk_unary_backward,
            [KN_OP_BINARY] = kvk_binary,
            [KN_OP_WHERE] = kvk_where,
            [KN_OP_REDUCE] = kvk_reduce,
            [KN_OP_MATMUL] = kvk_matmul,
            [KN_OP_GATHER] = kvk_gather,
            [KN_OP_SCATTER_ADD] = kvk_scatter_add,
            [KN_OP_RANDOM] = kvk_random,
            [KN_OP_INDEX_SELECT] = kvk_index_select,
            [KN_OP_INDEX_ADD] = kvk_index_add,
            [KN_OP_EMBEDDING_CAT] = kvk_embedding_cat,
            [KN_OP_EMBEDDING_CAT_BACKWARD] = kvk_embedding_cat_backward,
            [KN_OP_ADAM] = kvk_adam,
            [KN_OP_DROPOUT] = kvk_dropout,
            [KN_OP_BATCH_NORM] = kvk_batch_norm,
            [KN_OP_BATCH_NORM_BACKWARD] = kvk_batch_norm_backward,
            [KN_OP_CROSS_ENTROPY] = kvk_cross_entropy,
            [KN_OP_CROSS_ENTROPY_BACKWARD] = kvk_cross_entropy_backward,
            [KN_OP_FFT] = kvk_fft,
        },
};

/* The dtypes are the intersection over the devices (the contract has one
 * mask per backend): float64 only when every device has it. */
static void finish_def(void) {
    uint32_t dt = KN_DTYPES_ALL;
    for (int i = 0; i < kvk_device_count(); i++) dt &= devs[i].dtypes;
    vulkan.dtypes = dt;
    vulkan.priority = any_gpu ? 20 : 0; /* after CUDA (30); a CPU-type device only when named */
    const char *f = getenv("KILN_VULKAN_FUSED");
    fused_off = f && !strcmp(f, "0");
    kvk_profile_install(&vulkan);
}

const kn_backend *kn__vulkan_backend_def(void) {
    static once_flag once = ONCE_FLAG_INIT;
    call_once(&once, finish_def);
    return &vulkan;
}
