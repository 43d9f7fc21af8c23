/* The CUDA backend: device discovery, per-device state (one stream each),
 * error reporting, and the table of kernels. Probing tolerates a machine
 * without a driver or a GPU: it reports zero devices and prints nothing. */
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#define KC_MAX_DEVICES 16

static int n_devices;
static char names[KC_MAX_DEVICES][256];
static kc_dev devs[KC_MAX_DEVICES];
static mtx_t init_lock;
static once_flag probe_once = ONCE_FLAG_INIT;
static bool sync_mode;
static _Thread_local int current = -1; /* the device this thread last made current */

static void probe(void) {
    mtx_init(&init_lock, mtx_plain);
    const char *s = getenv("KILN_CUDA_SYNC");
    sync_mode = s && *s && strcmp(s, "0") != 0;
    int n = 0;
    /* No driver, no device, a broken install: all mean "no CUDA devices". */
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        n = 0;
    }
    if (n > KC_MAX_DEVICES) n = KC_MAX_DEVICES;
    for (int i = 0; i < n; i++) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) == cudaSuccess) snprintf(names[i], sizeof names[i], "%s", p.name);
        else snprintf(names[i], sizeof names[i], "CUDA device %d", i);
        devs[i].index = i;
    }
    (void)cudaGetLastError();
    n_devices = n;
}

int kc_device_count(void) {
    call_once(&probe_once, probe);
    return n_devices;
}

static const char *device_name(int index) {
    return index >= 0 && index < kc_device_count() ? names[index] : "unavailable";
}

bool kc_sync_mode(void) { return sync_mode; }

kn_status kc_check(cudaError_t e, const char *op) {
    if (e == cudaSuccess) return KN_OK;
    int dev = current;
    (void)cudaGetLastError(); /* clear a non-sticky error */
    if (e == cudaErrorMemoryAllocation)
        return kn__err(KN_ERR_OOM, "%s: out of memory on cuda:%d (%s)", op, dev, cudaGetErrorString(e));
    return kn__err(KN_ERR_DEVICE, "%s: CUDA error on cuda:%d: %s (%s)", op, dev, cudaGetErrorName(e),
                   cudaGetErrorString(e));
}

static kn_status init_device(kc_dev *d) {
    const char *op = "cuda init";
    kn_status s = kc_check(cudaSetDevice(d->index), op);
    if (s == KN_OK) s = kc_check(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking), op);
    void *h = NULL;
    if (s == KN_OK) s = kc_check(cudaHostAlloc(&h, KC_ERR_WORDS * sizeof(long long), cudaHostAllocMapped), op);
    if (s == KN_OK) {
        memset(h, 0, KC_ERR_WORDS * sizeof(long long));
        d->err_host = h;
        void *dp = NULL;
        s = kc_check(cudaHostGetDevicePointer(&dp, h, 0), op);
        d->err_dev = dp;
    }
    for (int k = 0; k < 2 && s == KN_OK; k++)
        s = kc_check(cudaEventCreateWithFlags(&d->stage_done[k], cudaEventDisableTiming), op);
    if (s == KN_OK) {
        void *t = NULL;
        s = kc_check(cudaMalloc(&t, KC_TICKETS * sizeof(unsigned int)), op);
        if (s == KN_OK) s = kc_check(cudaMemsetAsync(t, 0, KC_TICKETS * sizeof(unsigned int), d->stream), op);
        if (s == KN_OK) s = kc_check(cudaStreamSynchronize(d->stream), op);
        d->tickets = t;
    }
    int major = 0;
    const char *pdl = getenv("KILN_CUDA_PDL");
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d->index) != cudaSuccess) major = 0;
    d->pdl = major >= 9 && !(pdl && !strcmp(pdl, "0"));
    return s;
}

kc_dev *kc_device(int index, const char *op) {
    if (index < 0 || index >= kc_device_count()) {
        kn__err(KN_ERR_DEVICE, "%s: device cuda:%d is not available", op, index);
        return NULL;
    }
    kc_dev *d = &devs[index];
    if (!d->ready) {
        mtx_lock(&init_lock);
        kn_status s = d->ready ? KN_OK : init_device(d);
        if (s == KN_OK) d->ready = true;
        mtx_unlock(&init_lock);
        if (s != KN_OK) return NULL;
        current = index;
    }
    if (current != index) {
        if (kc_check(cudaSetDevice(index), op) != KN_OK) return NULL;
        current = index;
    }
    return d;
}

static const char *fault_op_name(long long op) {
    switch (op) {
    case KC_OP_INDEX_SELECT: return "index_select";
    case KC_OP_GATHER: return "gather";
    case KC_OP_INDEX_ADD: return "index_add";
    case KC_OP_NLL: return "nll_loss";
    case KC_OP_CROSS_ENTROPY: return "cross_entropy";
    case KC_OP_EMBEDDING_CAT: return "embedding_cat";
    case KC_OP_SCATTER_ADD: return "scatter_add";
    case KC_OP_MAX_POOL2D_BACKWARD: return "max_pool2d_backward";
    default: return "kernel";
    }
}

kn_status kc_fault_check(kc_dev *d) {
    volatile long long *e = d->err_host;
    if (!e || e[KC_ERR_CODE] == KC_FAULT_NONE) return KN_OK;
    long long code = e[KC_ERR_CODE], op = e[KC_ERR_OP], v = e[KC_ERR_VALUE], lim = e[KC_ERR_LIMIT],
              dim = e[KC_ERR_DIM];
    for (int k = 0; k < KC_ERR_WORDS; k++) e[k] = 0;
    if (op == KC_OP_EMBEDDING_CAT)
        return kn__err(KN_ERR_INVALID, "embedding_cat: index %lld is out of range for table %lld of %lld rows (found on cuda:%d)",
                       v, dim, lim, d->index);
    if (code == KC_FAULT_TARGET)
        return kn__err(KN_ERR_INVALID, "%s: target %lld is out of range for %lld classes (found on cuda:%d)",
                       fault_op_name(op), v, lim, d->index);
    return kn__err(KN_ERR_INVALID, "%s: index %lld is out of range for dim %lld of size %lld (found on cuda:%d)",
                   fault_op_name(op), v, dim, lim, d->index);
}

kc_dev *kc_enter(int index, const char *op, bool keep_pending) {
    kc_dev *d = kc_device(index, op);
    if (!d) return NULL;
    if (!keep_pending && kc_adam_flush(d) != KN_OK) return NULL;
    if (kc_fault_check(d) != KN_OK) return NULL;
    return d;
}

kn_status kc_sync(kc_dev *d, const char *op) {
    if (d->capture) return kn__err(KN_ERR_INVALID, "%s: cannot wait for cuda:%d while a graph is being captured", op, d->index);
    kn_status s = kc_adam_flush(d);
    if (s == KN_OK) s = kc_check(cudaStreamSynchronize(d->stream), op);
    if (s == KN_OK) s = kc_fault_check(d);
    return s;
}

kn_status kc_after(kc_dev *d, const char *op) {
    cudaError_t e = d->launch_error;
    d->launch_error = cudaSuccess;
    kn_status s = kc_check(e != cudaSuccess ? e : cudaGetLastError(), op);
    if (s == KN_OK && sync_mode && !d->capture) {
        s = kc_check(cudaStreamSynchronize(d->stream), op);
        if (s == KN_OK) s = kc_fault_check(d);
    }
    return s;
}

/* ---- the contract's slots ------------------------------------------------------------ */
static kn_status memory(int index, size_t *free_bytes, size_t *total_bytes) {
    if (!kc_device(index, "device_memory")) return kn_error_code();
    size_t f = 0, t = 0;
    kn_status s = kc_check(cudaMemGetInfo(&f, &t), "device_memory");
    if (s == KN_OK) {
        *free_bytes = f;
        *total_bytes = t;
    }
    return s;
}

static kn_status synchronize(int index) {
    kc_dev *d = kc_device(index, "synchronize");
    return d ? kc_sync(d, "synchronize") : kn_error_code();
}

/* Fused ops a kernel may decline (then they run as their composite). */
static bool supports(int index, kn_op op, const void *args) {
    switch (op) {
    case KN_OP_FFT: return kc_fft_supports(index, args);
    case KN_OP_RFFT:
    case KN_OP_IRFFT: return kc_fft_real_supports(index, op, args);
    case KN_OP_CONV2D:
    case KN_OP_CONV2D_BACKWARD:
    case KN_OP_MAX_POOL2D:
    case KN_OP_MAX_POOL2D_BACKWARD:
    case KN_OP_AVG_POOL2D:
    case KN_OP_AVG_POOL2D_BACKWARD: return kc_vision_supports(index, op, args);
    default: return true;
    }
}

static kn_backend cuda = {
    .name = "cuda",
    .title = "CUDA",
    .priority = 30,
    .device_count = kc_device_count,
    .device_name = device_name,
    .memory = memory,
    .alloc = kc_alloc,
    .free = kc_free,
    .copy_h2d = kc_copy_h2d,
    .copy_d2h = kc_copy_d2h,
    .copy_d2d = kc_copy_d2d,
    .synchronize = synchronize,
    .memory_stats = kc_memory_stats,
    .empty_cache = kc_empty_cache,
    .graph_begin = kc_graph_begin,
    .graph_end = kc_graph_end,
    .graph_launch = kc_graph_launch,
    .graph_free = kc_graph_free,
    .copy_peer = kc_copy_peer,
#ifdef KC_HAVE_NCCL
    .comm_name = "nccl",
    .comm_new = kc_comm_new,
    .comm_free = kc_comm_free,
    .comm_all_reduce = kc_comm_all_reduce,
    .comm_broadcast = kc_comm_broadcast,
    .comm_all_reduce_async = kc_comm_all_reduce_async,
    .comm_join = kc_comm_join,
    .comm_unique_id = kc_comm_unique_id,
    .comm_new_rank = kc_comm_new_rank,
#endif
    .dtypes = 0, /* all: every kernel takes every dtype the op allows */
    .supports = supports,
    .kernels =
        {
            [KN_OP_COPY] = kn__cuda_copy,
            [KN_OP_FILL] = kn__cuda_fill,
            [KN_OP_UNARY] = kn__cuda_unary,
            [KN_OP_UNARY_BACKWARD] = kn__cuda_unary_backward,
            [KN_OP_BINARY] = kn__cuda_binary,
            [KN_OP_WHERE] = kn__cuda_where,
            [KN_OP_REDUCE] = kn__cuda_reduce,
            [KN_OP_MATMUL] = kn__cuda_matmul,
            [KN_OP_GATHER] = kn__cuda_gather,
            [KN_OP_SCATTER_ADD] = kn__cuda_scatter_add,
            [KN_OP_RANDOM] = kn__cuda_random,
            [KN_OP_INDEX_SELECT] = kn__cuda_index_select,
            [KN_OP_INDEX_ADD] = kn__cuda_index_add,
            [KN_OP_EMBEDDING_CAT] = kn__cuda_embedding_cat,
            [KN_OP_EMBEDDING_CAT_BACKWARD] = kn__cuda_embedding_cat_backward,
            [KN_OP_SOFTMAX] = kn__cuda_softmax,
            [KN_OP_SOFTMAX_BACKWARD] = kn__cuda_softmax_backward,
            [KN_OP_NLL] = kn__cuda_nll,
            [KN_OP_NLL_BACKWARD] = kn__cuda_nll_backward,
            [KN_OP_CROSS_ENTROPY] = kn__cuda_cross_entropy,
            [KN_OP_CROSS_ENTROPY_BACKWARD] = kn__cuda_cross_entropy_backward,
            [KN_OP_BATCH_NORM] = kn__cuda_batch_norm,
            [KN_OP_BATCH_NORM_BACKWARD] = kn__cuda_batch_norm_backward,
            [KN_OP_LAYER_NORM] = kn__cuda_layer_norm,
            [KN_OP_LAYER_NORM_BACKWARD] = kn__cuda_layer_norm_backward,
            [KN_OP_DROPOUT] = kn__cuda_dropout,
            [KN_OP_ADAM] = kn__cuda_adam,
            [KN_OP_SGD] = kn__cuda_sgd,
            [KN_OP_FFT] = kn__cuda_fft,
            [KN_OP_RFFT] = kn__cuda_rfft,
            [KN_OP_IRFFT] = kn__cuda_irfft,
            [KN_OP_CONV2D] = kn__cuda_conv2d,
            [KN_OP_CONV2D_BACKWARD] = kn__cuda_conv2d_backward,
            [KN_OP_MAX_POOL2D] = kn__cuda_max_pool2d,
            [KN_OP_MAX_POOL2D_BACKWARD] = kn__cuda_max_pool2d_backward,
            [KN_OP_AVG_POOL2D] = kn__cuda_avg_pool2d,
            [KN_OP_AVG_POOL2D_BACKWARD] = kn__cuda_avg_pool2d_backward,
        },
};

/* Settings read once, before the core copies the definition:
 * KILN_CUDA_GRAPHS=0 turns capture off (eager steps, for debugging), and
 * KILN_CUDA_PROFILE=1 wraps the kernels with timing. */
static void finish_def(void) {
    const char *g = getenv("KILN_CUDA_GRAPHS");
    if (g && !strcmp(g, "0")) {
        cuda.graph_begin = NULL;
        cuda.graph_end = NULL;
        cuda.graph_launch = NULL;
        cuda.graph_free = NULL;
    }
    kc_profile_install(&cuda);
}

const kn_backend *kn__cuda_backend_def(void) {
    static once_flag once = ONCE_FLAG_INIT;
    call_once(&once, finish_def);
    return &cuda;
}
