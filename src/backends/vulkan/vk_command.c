/* Commands: one command buffer per device records ops as they come, each
 * followed by a barrier (the next op may read what this one wrote); the
 * batch is submitted when its parameter, descriptor or staging space runs
 * out, after KVK_BATCH dispatches, or when the host waits (a read, a
 * synchronize), and a fence tells when it is done. Shader faults (an index
 * out of range) land in a small host-visible buffer read after the fence.
 *
 * Pipelines are made on first use, through a pipeline cache, from the
 * SPIR-V the build embedded. */
#include "vk_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    const uint32_t *code;
    size_t words;
} kvk_spirv;
extern const kvk_spirv kvk_shaders[];
extern const int kvk_shader_count;

static const char *const shader_names[KVK_SH_COUNT] = {
    "copy", "fill", "unary", "binary", "where", "reduce", "matmul", "gather", "scatter_add", "random", "gemm", "adam",
    "bn_stats", "bn_apply", "cross_entropy", "embed", "dropout", "fft_local", "fft_pass", "fft_chirp"};

#define KVK_BATCH 512                         /* dispatches per submit */
#define PARAMS_BYTES ((size_t)4 << 20)        /* parameter words of one batch */
#define STAGING_BYTES ((size_t)16 << 20)      /* host copies of one batch */
#define MAX_SETS 2048                         /* descriptor sets of one batch */
#define FAULT_WORDS 8

kn_status kvk_commands_init(kvk_dev *d) {
    const char *op = "vulkan init";
    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = d->queue_family};
    VkResult r = kvk.vkCreateCommandPool(d->dev, &pci, NULL, &d->pool);
    if (r != VK_SUCCESS) return kvk_vk_error(r, op, d);
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = d->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1};
    if ((r = kvk.vkAllocateCommandBuffers(d->dev, &ai, &d->cmd)) != VK_SUCCESS) return kvk_vk_error(r, op, d);
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if ((r = kvk.vkCreateFence(d->dev, &fci, NULL, &d->fence)) != VK_SUCCESS) return kvk_vk_error(r, op, d);
    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, MAX_SETS * (KVK_BINDINGS + 2)};
    VkDescriptorPoolCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = MAX_SETS,
                                      .poolSizeCount = 1, .pPoolSizes = &ps};
    if ((r = kvk.vkCreateDescriptorPool(d->dev, &dci, NULL, &d->dpool)) != VK_SUCCESS) return kvk_vk_error(r, op, d);
    d->max_sets = MAX_SETS;
    VkDescriptorSetLayoutBinding b[KVK_BINDINGS + 2];
    for (int i = 0; i < KVK_BINDINGS + 2; i++)
        b[i] = (VkDescriptorSetLayoutBinding){(uint32_t)i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1,
                                              VK_SHADER_STAGE_COMPUTE_BIT, NULL};
    VkDescriptorSetLayoutCreateInfo lci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                           .bindingCount = KVK_BINDINGS + 2, .pBindings = b};
    if ((r = kvk.vkCreateDescriptorSetLayout(d->dev, &lci, NULL, &d->dsl)) != VK_SUCCESS) return kvk_vk_error(r, op, d);
    VkPushConstantRange pc = {VK_SHADER_STAGE_COMPUTE_BIT, 0, 4};
    VkPipelineLayoutCreateInfo plci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                       .pSetLayouts = &d->dsl, .pushConstantRangeCount = 1, .pPushConstantRanges = &pc};
    if ((r = kvk.vkCreatePipelineLayout(d->dev, &plci, NULL, &d->layout)) != VK_SUCCESS) return kvk_vk_error(r, op, d);
    VkPipelineCacheCreateInfo cci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    if ((r = kvk.vkCreatePipelineCache(d->dev, &cci, NULL, &d->cache)) != VK_SUCCESS) return kvk_vk_error(r, op, d);
    void *m;
    kn_status s = kvk_alloc_host_buffer(d, PARAMS_BYTES, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, &d->params_buf,
                                        &d->params_mem, &m);
    if (s != KN_OK) return s;
    d->params = m;
    d->params_words = PARAMS_BYTES / 4;
    s = kvk_alloc_host_buffer(d, STAGING_BYTES, VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                              &d->staging_buf, &d->staging_mem, &m);
    if (s != KN_OK) return s;
    d->staging = m;
    d->staging_size = STAGING_BYTES;
    s = kvk_alloc_host_buffer(d, FAULT_WORDS * 4, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, &d->fault_buf, &d->fault_mem, &m);
    if (s != KN_OK) return s;
    d->fault = m;
    memset(d->fault, 0, FAULT_WORDS * 4);
    return KN_OK;
}

/* ---- recording ---------------------------------------------------------------- */
static kn_status begin(kvk_dev *d, const char *op) {
    if (d->recording) return KN_OK;
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VkResult r = kvk.vkBeginCommandBuffer(d->cmd, &bi);
    if (r != VK_SUCCESS) return kvk_vk_error(r, op, d);
    d->recording = true;
    return KN_OK;
}

/* Everything written so far is visible to what comes next (shaders and
 * copies), and at the end of a batch to the host. */
static void barrier(kvk_dev *d, bool to_host) {
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                          .dstAccessMask = to_host ? VK_ACCESS_HOST_READ_BIT
                                                   : VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                                         VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT};
    VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    kvk.vkCmdPipelineBarrier(d->cmd, stages, to_host ? VK_PIPELINE_STAGE_HOST_BIT : stages, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* Submits the batch and waits for it. Faults stay for kvk_flush to report. */
kn_status kvk_wait(kvk_dev *d, const char *op) {
    if (!d->recording) return KN_OK;
    barrier(d, true);
    d->recording = false;
    double t0 = kvk_profiling ? kvk_profile_now() : 0;
    VkResult r = kvk.vkEndCommandBuffer(d->cmd);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &d->cmd};
    if (r == VK_SUCCESS) r = kvk.vkQueueSubmit(d->queue, 1, &si, d->fence);
    if (r == VK_SUCCESS) r = kvk.vkWaitForFences(d->dev, 1, &d->fence, VK_TRUE, UINT64_MAX);
    if (r == VK_SUCCESS) r = kvk.vkResetFences(d->dev, 1, &d->fence);
    if (kvk_profiling) kvk_profile_submit(kvk_profile_now() - t0);
    kvk.vkResetCommandBuffer(d->cmd, 0);
    kvk.vkResetDescriptorPool(d->dev, d->dpool, 0);
    d->n_sets = 0;
    d->n_recorded = 0;
    d->params_used = 0;
    d->staging_used = 0;
    return r == VK_SUCCESS ? KN_OK : kvk_vk_error(r, op, d);
}

static const char *fault_op(uint32_t code) {
    switch (code) {
    case KVK_FAULT_GATHER: return "gather";
    case KVK_FAULT_SCATTER_ADD: return "scatter_add";
    case KVK_FAULT_INDEX_SELECT: return "index_select";
    case KVK_FAULT_INDEX_ADD: return "index_add";
    default: return "kernel";
    }
}

/* A fault context as the device keeps it: copies of its strings. */
struct kvk_fault_name {
    char *op, *item, *range;
};
#define MAX_FAULT_NAMES 255 /* ids fit the 8 bits above a fault's kind */

static bool same_name(const struct kvk_fault_name *n, const char *op, const char *item, const char *range) {
    return !strcmp(n->op, op) && !strcmp(n->item, item) && !strcmp(n->range, range);
}

static char *copy_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c) memcpy(c, s, n);
    return c;
}

uint32_t kvk_fault_code(kvk_dev *d, uint32_t kind) {
    const char *op, *item, *range;
    if (!kn__fault_context_get(&op, &item, &range)) return kind;
    /* A handful of composites name faults: a linear search of the names seen. */
    for (int i = 0; i < d->n_fault_names; i++)
        if (same_name(&d->fault_names[i], op, item, range)) return kind | (uint32_t)(i + 1) << 8;
    if (d->n_fault_names == MAX_FAULT_NAMES) return kind; /* the primitive's name, still a clear message */
    struct kvk_fault_name *t = realloc(d->fault_names, (size_t)(d->n_fault_names + 1) * sizeof *t);
    if (!t) return kind;
    d->fault_names = t;
    struct kvk_fault_name n = {copy_str(op), copy_str(item), copy_str(range)};
    if (!n.op || !n.item || !n.range) {
        free(n.op), free(n.item), free(n.range);
        return kind;
    }
    t[d->n_fault_names++] = n;
    return kind | (uint32_t)d->n_fault_names << 8;
}

kn_status kvk_flush(kvk_dev *d, const char *op) {
    kn_status s = kvk_wait(d, op);
    volatile uint32_t *f = d->fault;
    if (s == KN_OK && f[0] != KVK_FAULT_NONE) {
        int64_t v = (int64_t)((uint64_t)f[1] | (uint64_t)f[2] << 32);
        uint32_t kind = f[0] & 0xffu, name = f[0] >> 8;
        if (name >= 1 && name <= (uint32_t)d->n_fault_names) {
            const struct kvk_fault_name *n = &d->fault_names[name - 1];
            s = kn__err(KN_ERR_INVALID, "%s: %s %lld is out of range for %u %s (found on vulkan:%d)", n->op, n->item,
                        (long long)v, f[3], n->range, d->index);
        } else if (kind == KVK_FAULT_EMBEDDING_CAT)
            s = kn__err(KN_ERR_INVALID, "embedding_cat: index %lld is out of range for table %u of %u rows (found on vulkan:%d)",
                        (long long)v, f[4], f[3], d->index);
        else if (kind == KVK_FAULT_CROSS_ENTROPY)
            s = kn__err(KN_ERR_INVALID, "cross_entropy: target %lld is out of range for %u classes (found on vulkan:%d)",
                        (long long)v, f[3], d->index);
        else
            s = kn__err(KN_ERR_INVALID, "%s: index %lld is out of range for dim %u of size %u (found on vulkan:%d)",
                    fault_op(kind), (long long)v, f[4], f[3], d->index);
        for (int k = 0; k < FAULT_WORDS; k++) f[k] = 0;
    }
    return s;
}

/* ---- pipelines -------------------------------------------------------------- */
static VkPipeline pipeline(kvk_dev *d, kvk_shader sh, bool f64, const char *op) {
    VkPipeline *p = &d->pipes[sh][f64];
    if (*p) return *p;
    char want[64];
    const kvk_spirv *code = NULL;
    /* The subgroup variant where the device has subgroup arithmetic and the shader one. */
    for (int sg = d->subgroup_arith ? 1 : 0; sg >= 0 && !code; sg--) {
        snprintf(want, sizeof want, "%s_%c%s", shader_names[sh], f64 ? 'd' : 'f', sg ? "s" : "");
        for (int i = 0; i < kvk_shader_count; i++)
            if (!strcmp(kvk_shaders[i].name, want)) code = &kvk_shaders[i];
    }
    if (!code) {
        kn__err(KN_ERR_UNSUPPORTED, "%s: shader %s is missing from this build", op, want);
        return VK_NULL_HANDLE;
    }
    VkShaderModuleCreateInfo mci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                    .codeSize = code->words * 4, .pCode = code->code};
    VkShaderModule mod;
    VkResult r = kvk.vkCreateShaderModule(d->dev, &mci, NULL, &mod);
    if (r != VK_SUCCESS) {
        kvk_vk_error(r, op, d);
        return VK_NULL_HANDLE;
    }
    /* Specialization: 0 the workgroup size, 1 the GEMM tile, 2 the subgroup
     * size, 3 the shared memory bytes of a workgroup (read from the device,
     * never assumed). */
    uint32_t maxinv = d->props.limits.maxComputeWorkGroupInvocations;
    uint32_t spec[4] = {maxinv >= 256 ? 256 : 128, maxinv >= 256 ? 16 : 8, d->subgroup,
                        d->props.limits.maxComputeSharedMemorySize};
    if (sh == KVK_SH_MATMUL) spec[0] = spec[1] * spec[1];
    VkSpecializationMapEntry me[4] = {{0, 0, 4}, {1, 4, 4}, {2, 8, 4}, {3, 12, 4}};
    VkSpecializationInfo si = {4, me, sizeof spec, spec};
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = mod, .pName = "main", .pSpecializationInfo = &si},
        .layout = d->layout};
    r = kvk.vkCreateComputePipelines(d->dev, d->cache, 1, &ci, NULL, p);
    kvk.vkDestroyShaderModule(d->dev, mod, NULL);
    if (r != VK_SUCCESS) {
        *p = VK_NULL_HANDLE;
        kvk_vk_error(r, op, d);
    }
    return *p;
}

/* ---- dispatch -------------------------------------------------------------------- */
kn_status kvk_record(kvk_dev *d, kvk_dispatch *w, const char *op) {
    VkPipeline p = pipeline(d, w->shader, w->f64, op);
    if (!p) return kn_error_code();
    size_t words = ((size_t)w->n_params + 63) / 64 * 64; /* 256-byte slots */
    if (d->params_used + words > d->params_words || d->n_sets == d->max_sets || d->n_recorded >= KVK_BATCH) {
        kn_status s = kvk_wait(d, op);
        if (s != KN_OK) return s;
    }
    VkDescriptorBufferInfo info[KVK_BINDINGS + 2];
    for (int k = 0; k < KVK_BINDINGS; k++) {
        info[k] = (VkDescriptorBufferInfo){d->params_buf, 0, VK_WHOLE_SIZE}; /* a placeholder when unused */
        if (!w->ptr[k]) continue;
        size_t off;
        /* The span an operand touches, from its lowest to its highest byte. */
        kvk_block *b = kvk_lookup(d, (const char *)w->ptr[k] + w->lo[k], (size_t)(w->hi[k] - w->lo[k]), &off, op);
        if (!b) return kn_error_code();
        info[k].buffer = b->buffer;
        w->params[w->base_slot[k]] = (uint32_t)((int64_t)off - w->lo[k]);
    }
    info[KVK_BINDINGS] = (VkDescriptorBufferInfo){d->params_buf, 0, VK_WHOLE_SIZE};
    info[KVK_BINDINGS + 1] = (VkDescriptorBufferInfo){d->fault_buf, 0, VK_WHOLE_SIZE};
    kn_status s = begin(d, op);
    if (s != KN_OK) return s;
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                      .descriptorPool = d->dpool, .descriptorSetCount = 1, .pSetLayouts = &d->dsl};
    VkDescriptorSet set;
    VkResult r = kvk.vkAllocateDescriptorSets(d->dev, &ai, &set);
    if (r != VK_SUCCESS) return kvk_vk_error(r, op, d);
    d->n_sets++;
    VkWriteDescriptorSet wr[KVK_BINDINGS + 2];
    for (int k = 0; k < KVK_BINDINGS + 2; k++)
        wr[k] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set,
                                       .dstBinding = (uint32_t)k, .descriptorCount = 1,
                                       .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .pBufferInfo = &info[k]};
    kvk.vkUpdateDescriptorSets(d->dev, KVK_BINDINGS + 2, wr, 0, NULL);
    uint32_t base = (uint32_t)d->params_used;
    memcpy(d->params + base, w->params, (size_t)w->n_params * 4);
    d->params_used += words;
    kvk.vkCmdBindPipeline(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p);
    kvk.vkCmdBindDescriptorSets(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &set, 0, NULL);
    kvk.vkCmdPushConstants(d->cmd, d->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, 4, &base);
    kvk.vkCmdDispatch(d->cmd, w->groups[0], w->groups[1] ? w->groups[1] : 1, w->groups[2] ? w->groups[2] : 1);
    barrier(d, false);
    d->n_recorded++;
    if (kvk_profiling) kvk_profile_dispatch();
    return KN_OK;
}

/* ---- copies -------------------------------------------------------------------- */
static kn_status record_copy(kvk_dev *d, VkBuffer src, size_t so, VkBuffer dst, size_t dof, size_t n, const char *op) {
    kn_status s = begin(d, op);
    if (s != KN_OK) return s;
    VkBufferCopy c = {so, dof, n};
    kvk.vkCmdCopyBuffer(d->cmd, src, dst, 1, &c);
    barrier(d, false);
    d->n_recorded++;
    return KN_OK;
}

/* Room for n bytes of staging in this batch (submitting it when full). */
static kn_status staging_room(kvk_dev *d, size_t n, const char *op) {
    if (d->staging_used + n <= d->staging_size) return KN_OK;
    return kvk_wait(d, op);
}

kn_status kvk_copy_h2d(int index, void *dst, const void *src, size_t nbytes) {
    kvk_dev *d = kvk_enter(index, "copy to vulkan");
    if (!d) return kn_error_code();
    size_t off;
    kvk_block *b = kvk_lookup(d, dst, nbytes, &off, "copy to vulkan");
    kn_status s = b ? KN_OK : kn_error_code();
    for (size_t done = 0; done < nbytes && s == KN_OK;) {
        size_t n = nbytes - done < d->staging_size ? nbytes - done : d->staging_size;
        s = staging_room(d, n, "copy to vulkan");
        if (s != KN_OK) break;
        /* The host's bytes go to staging now (the caller may reuse them on return). */
        memcpy(d->staging + d->staging_used, (const char *)src + done, n);
        s = record_copy(d, d->staging_buf, d->staging_used, b->buffer, off + done, n, "copy to vulkan");
        d->staging_used += (n + 15) & ~(size_t)15;
        done += n;
    }
    kvk_leave(d);
    return s;
}

kn_status kvk_copy_d2h(int index, void *dst, const void *src, size_t nbytes) {
    kvk_dev *d = kvk_enter(index, "copy from vulkan");
    if (!d) return kn_error_code();
    size_t off;
    kvk_block *b = kvk_lookup(d, src, nbytes, &off, "copy from vulkan");
    kn_status s = b ? KN_OK : kn_error_code();
    if (s == KN_OK && !nbytes) s = kvk_flush(d, "copy from vulkan");
    for (size_t done = 0; done < nbytes && s == KN_OK;) {
        size_t n = nbytes - done < d->staging_size ? nbytes - done : d->staging_size;
        s = staging_room(d, n, "copy from vulkan");
        size_t at = d->staging_used;
        if (s == KN_OK) s = record_copy(d, b->buffer, off + done, d->staging_buf, at, n, "copy from vulkan");
        /* Reading waits for everything before it, and reports its faults. */
        if (s == KN_OK) s = kvk_flush(d, "copy from vulkan");
        if (s == KN_OK) memcpy((char *)dst + done, d->staging + at, n);
        done += n;
    }
    kvk_leave(d);
    return s;
}

kn_status kvk_copy_d2d(int index, void *dst, const void *src, size_t nbytes) {
    kvk_dev *d = kvk_enter(index, "copy on vulkan");
    if (!d) return kn_error_code();
    size_t so, dof;
    kvk_block *sb = kvk_lookup(d, src, nbytes, &so, "copy on vulkan");
    kvk_block *db = sb ? kvk_lookup(d, dst, nbytes, &dof, "copy on vulkan") : NULL;
    kn_status s = db ? KN_OK : kn_error_code();
    bool overlap = db == sb && so < dof + nbytes && dof < so + nbytes;
    if (s == KN_OK && !overlap) s = record_copy(d, sb->buffer, so, db->buffer, dof, nbytes, "copy on vulkan");
    /* Overlapping ranges of one buffer (vkCmdCopyBuffer forbids them): through staging. */
    /* Chunks go from the end when dst lies after src, as memmove does. */
    for (size_t done = 0; overlap && done < nbytes && s == KN_OK;) {
        size_t n = nbytes - done < d->staging_size ? nbytes - done : d->staging_size;
        size_t at0 = dof > so ? nbytes - done - n : done;
        s = staging_room(d, n, "copy on vulkan");
        size_t at = d->staging_used;
        if (s == KN_OK) s = record_copy(d, sb->buffer, so + at0, d->staging_buf, at, n, "copy on vulkan");
        if (s == KN_OK) s = record_copy(d, d->staging_buf, at, db->buffer, dof + at0, n, "copy on vulkan");
        d->staging_used += (n + 15) & ~(size_t)15;
        done += n;
    }
    kvk_leave(d);
    return s;
}

kn_status kvk_synchronize(int index) {
    kvk_dev *d = kvk_peek(index, "synchronize");
    if (!d) return kn_error_code();
    kn_status s = d->ready ? kvk_flush(d, "synchronize") : KN_OK; /* nothing ran on a device never made */
    kvk_leave(d);
    return s;
}
