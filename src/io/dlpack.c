/* kiln — DLPack 1.x export and import (include/kiln/dlpack.h, docs/DLPACK.md).
 *
 * Export: one allocation holds the DLManagedTensorVersioned, its shape and
 * strides, and a reference to the kiln storage; the deleter drops the
 * reference and frees the allocation.
 * Import: an external storage (not freed by kiln) whose release hook calls
 * the producer's deleter when kiln's last reference goes. */
#include "core/complex.h"
#include "core/internal.h"
#include "kiln/dlpack.h"

#include <stdlib.h>
#include <string.h>

/* ---- dtypes and devices --------------------------------------------------------- */
static const struct {
    kn_dtype dt;
    uint8_t code, bits;
} dl_types[] = {
    {KN_F32, kDLFloat, 32}, {KN_F16, kDLFloat, 16}, {KN_BF16, kDLBfloat, 16}, {KN_F64, kDLFloat, 64},
    {KN_I32, kDLInt, 32},   {KN_I64, kDLInt, 64},   {KN_U8, kDLUInt, 8},      {KN_BOOL, kDLBool, 8},
    {KN_C64, kDLComplex, 64}, {KN_C128, kDLComplex, 128}, /* bits of the pair, as DLPack counts them */
};
#define N_DL_TYPES (sizeof dl_types / sizeof *dl_types)

static const char *dl_code_name(uint8_t code) {
    switch (code) {
    case kDLInt: return "int";
    case kDLUInt: return "uint";
    case kDLFloat: return "float";
    case kDLOpaqueHandle: return "opaque handle";
    case kDLBfloat: return "bfloat";
    case kDLComplex: return "complex";
    case kDLBool: return "bool";
    default: return code <= kDLFloat4_e2m1fn ? "fp8/fp6/fp4" : "unknown type code";
    }
}

static const char *dl_device_name(int type) {
    switch (type) {
    case kDLCPU: return "kDLCPU";
    case kDLCUDA: return "kDLCUDA";
    case kDLCUDAHost: return "kDLCUDAHost (pinned host memory)";
    case kDLOpenCL: return "kDLOpenCL";
    case kDLVulkan: return "kDLVulkan";
    case kDLMetal: return "kDLMetal";
    case kDLVPI: return "kDLVPI";
    case kDLROCM: return "kDLROCM";
    case kDLROCMHost: return "kDLROCMHost";
    case kDLExtDev: return "kDLExtDev";
    case kDLCUDAManaged: return "kDLCUDAManaged (managed memory)";
    case kDLOneAPI: return "kDLOneAPI";
    case kDLWebGPU: return "kDLWebGPU";
    case kDLHexagon: return "kDLHexagon";
    case kDLMAIA: return "kDLMAIA";
    case kDLTrn: return "kDLTrn";
    default: return "unknown";
    }
}

/* ---- export ------------------------------------------------------------------------ */
typedef struct {
    DLManagedTensorVersioned m; /* first: the deleter's argument is this struct */
    kn_storage *storage;
    int64_t shape[KN_MAX_DIMS];
    int64_t strides[KN_MAX_DIMS];
} dl_export;

static void export_deleter(DLManagedTensorVersioned *m) {
    if (!m) return;
    dl_export *e = m->manager_ctx;
    kn__storage_release(e->storage);
    free(e);
}

DLManagedTensorVersioned *kn_to_dlpack(kn_tensor *t) {
    const char *op = "to_dlpack";
    if (!t) {
        kn__err_null(op);
        return NULL;
    }
    kn_device dev = t->storage->device;
    DLDevice dl_dev;
    if (dev.kind == KN_DEVICE_CPU)
        dl_dev = (DLDevice){kDLCPU, 0};
    else if (dev.kind == KN_DEVICE_CUDA)
        dl_dev = (DLDevice){kDLCUDA, dev.index};
    else {
        kn__err(KN_ERR_DEVICE, "%s: a tensor on %s cannot be exported (DLPack export supports cpu and cuda)",
                op, kn_device_str(dev));
        return NULL;
    }
    size_t k = 0;
    while (k < N_DL_TYPES && dl_types[k].dt != t->dtype) k++;
    if (k == N_DL_TYPES) { /* every kiln dtype is in the table */
        kn__err(KN_ERR_DTYPE, "%s: dtype %s has no DLPack type", op, kn_dtype_name(t->dtype));
        return NULL;
    }
    /* Queued GPU work must be done before another framework reads the memory
     * (DLPack's C struct carries no stream). */
    if (dev.kind != KN_DEVICE_CPU && kn_device_synchronize(dev) != KN_OK) {
        char msg[900];
        snprintf(msg, sizeof msg, "%s", kn_error());
        kn__err(kn_error_code(), "%s: %s", op, msg);
        return NULL;
    }
    dl_export *e = calloc(1, sizeof *e);
    if (!e) {
        kn__err(KN_ERR_OOM, "%s: out of host memory", op);
        return NULL;
    }
    e->storage = t->storage;
    t->storage->refcount++; /* the capsule outlives t if need be */
    for (int d = 0; d < t->ndim; d++) {
        e->shape[d] = t->shape[d];
        e->strides[d] = t->stride[d];
    }
    DLManagedTensorVersioned *m = &e->m;
    m->version = (DLPackVersion){DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION};
    m->manager_ctx = e;
    m->deleter = export_deleter;
    m->flags = 0; /* writable, shared (not a copy) */
    /* data points at the first element and byte_offset is 0, as PyTorch and
     * NumPy export: consumers that ignore byte_offset still read the right
     * elements. DLPack wants NULL data for an empty tensor. */
    m->dl_tensor.data = kn__numel_shape(t->ndim, t->shape) ? kn__data(t) : NULL;
    m->dl_tensor.device = dl_dev;
    m->dl_tensor.ndim = t->ndim;
    m->dl_tensor.dtype = (DLDataType){dl_types[k].code, dl_types[k].bits, 1};
    m->dl_tensor.shape = e->shape;
    m->dl_tensor.strides = e->strides; /* never NULL: DLPack 1.x requires strides */
    m->dl_tensor.byte_offset = 0;
    return m;
}

/* ---- import ------------------------------------------------------------------------ */
/* Kiln's last reference is gone: give the memory back to its producer. GPU
 * work kiln queued on it must finish first, or the producer could free memory
 * that a kernel still reads. */
static void sync_before_release(kn_storage *s) {
    if (s->device.kind != KN_DEVICE_CPU) (void)kn_device_synchronize(s->device);
}

static void release_versioned(kn_storage *s) {
    sync_before_release(s);
    DLManagedTensorVersioned *m = s->release_ctx;
    if (m->deleter) m->deleter(m);
}

static void release_legacy(kn_storage *s) {
    sync_before_release(s);
    DLManagedTensor *m = s->release_ctx;
    if (m->deleter) m->deleter(m);
}

/* Largest byte span an imported tensor may address (kiln's tensor size limit). */
#define DL_MAX_BYTES ((int64_t)1 << 56)

/* Checks dl and wraps its memory in a tensor whose storage calls release(ctx)
 * at the end. On failure nothing is taken: no storage, no deleter call. */
static kn_tensor *import(const char *op, const DLTensor *dl, void (*release)(kn_storage *), void *ctx) {
    /* dtype */
    if (dl->dtype.lanes != 1) {
        kn__err(KN_ERR_DTYPE, "%s: vector dtypes are not supported (%s%u with %u lanes)", op,
                dl_code_name(dl->dtype.code), dl->dtype.bits, dl->dtype.lanes);
        return NULL;
    }
    size_t k = 0;
    while (k < N_DL_TYPES && (dl_types[k].code != dl->dtype.code || dl_types[k].bits != dl->dtype.bits)) k++;
    if (k == N_DL_TYPES) {
        kn__err(KN_ERR_DTYPE,
                "%s: dtype %s (code %u, %u bits) is not supported (kiln has float16/32/64, bfloat16, "
                "int32, int64, uint8, bool, complex64/128)",
                op, dl_code_name(dl->dtype.code), dl->dtype.code, dl->dtype.bits);
        return NULL;
    }
    const kn_dtype dt = dl_types[k].dt;
    const int64_t es = (int64_t)kn_dtype_size(dt);

    /* device */
    kn_device dev;
    if (dl->device.device_type == kDLCPU) {
        dev = KN_CPU; /* DLPack: device_id is 0 for host memory; not checked */
    } else if (dl->device.device_type == kDLCUDA) {
        int n = kn_device_count(KN_DEVICE_CUDA);
        if (n <= 0 && !kn__backend(KN_DEVICE_CUDA)) {
            kn__err(KN_ERR_DEVICE, "%s: a kDLCUDA tensor cannot be imported: kiln was built without CUDA", op);
            return NULL;
        }
        if (dl->device.device_id < 0 || dl->device.device_id >= n) {
            kn__err(KN_ERR_DEVICE, "%s: kDLCUDA device %d is not available (%d CUDA device%s present)", op,
                    (int)dl->device.device_id, n, n == 1 ? "" : "s");
            return NULL;
        }
        dev = (kn_device){KN_DEVICE_CUDA, (int16_t)dl->device.device_id};
    } else {
        kn__err(KN_ERR_DEVICE, "%s: device type %d (%s) is not supported (kDLCPU and kDLCUDA only)", op,
                (int)dl->device.device_type, dl_device_name((int)dl->device.device_type));
        return NULL;
    }

    /* shape */
    if (dl->ndim < 0 || dl->ndim > KN_MAX_DIMS) {
        kn__err(KN_ERR_SHAPE, "%s: %d dimensions are not supported (kiln allows 0 to %d)", op, (int)dl->ndim,
                KN_MAX_DIMS);
        return NULL;
    }
    const int nd = dl->ndim;
    if (nd > 0 && !dl->shape) {
        kn__err(KN_ERR_INVALID, "%s: shape is NULL for a %d-dimensional tensor", op, nd);
        return NULL;
    }
    int64_t numel = 1;
    for (int d = 0; d < nd; d++) {
        if (dl->shape[d] < 0) {
            kn__err(KN_ERR_SHAPE, "%s: dimension %d has negative size %lld", op, d, (long long)dl->shape[d]);
            return NULL;
        }
        if (dl->shape[d] && numel > DL_MAX_BYTES / es / dl->shape[d]) {
            kn__err(KN_ERR_SHAPE, "%s: the shape has more elements than kiln allows (2^56 bytes)", op);
            return NULL;
        }
        numel *= dl->shape[d];
    }

    /* strides (NULL: compact row-major, as DLPack before 1.0 allowed). The
     * stride of a dimension of size <= 1 (or of an empty tensor) addresses
     * nothing, so it is replaced by the compact one: kiln strides are never
     * negative. */
    int64_t stride[KN_MAX_DIMS];
    kn__contiguous_strides(nd, dl->shape, stride);
    int64_t last = 0; /* offset of the last element, in elements */
    if (numel > 0) {
        for (int d = 0; d < nd; d++) {
            if (!dl->strides || dl->shape[d] <= 1) continue;
            int64_t st = dl->strides[d];
            if (st < 0) {
                kn__err(KN_ERR_UNSUPPORTED, "%s: negative stride %lld in dimension %d is not supported", op,
                        (long long)st, d);
                return NULL;
            }
            if (st > DL_MAX_BYTES / es / (dl->shape[d] - 1)) {
                kn__err(KN_ERR_SHAPE, "%s: stride %lld in dimension %d reaches past 2^56 bytes", op,
                        (long long)st, d);
                return NULL;
            }
            stride[d] = st;
        }
        for (int d = 0; d < nd; d++) {
            last += (dl->shape[d] - 1) * stride[d];
            if (last > DL_MAX_BYTES / es) {
                kn__err(KN_ERR_SHAPE, "%s: the strides reach past 2^56 bytes", op);
                return NULL;
            }
        }
    }
    const uint64_t span = numel > 0 ? (uint64_t)(last + 1) * (uint64_t)es : 0;

    /* memory */
    static max_align_t empty_dummy; /* a non-NULL base for an empty tensor without data */
    char *base;
    if (numel == 0 && !dl->data) {
        base = (char *)&empty_dummy;
    } else {
        if (!dl->data) {
            kn__err(KN_ERR_INVALID, "%s: data is NULL for a tensor of %lld elements", op, (long long)numel);
            return NULL;
        }
        uintptr_t p = (uintptr_t)dl->data;
        if (dl->byte_offset > UINTPTR_MAX - p || span > UINTPTR_MAX - p - dl->byte_offset) {
            kn__err(KN_ERR_INVALID, "%s: data + byte_offset (%llu) + the tensor's span wraps around memory", op,
                    (unsigned long long)dl->byte_offset);
            return NULL;
        }
        p += (uintptr_t)dl->byte_offset;
        if (numel > 0 && p % (uintptr_t)es) { /* kernels load whole elements */
            kn__err(KN_ERR_INVALID, "%s: data + byte_offset is not aligned to the %lld-byte element size", op,
                    (long long)es);
            return NULL;
        }
        base = (char *)dl->data + dl->byte_offset;
    }

    kn_storage *s = calloc(1, sizeof *s);
    if (!s) {
        kn__err(KN_ERR_OOM, "%s: out of host memory", op);
        return NULL;
    }
    s->refcount = 1;
    s->data = base;
    s->nbytes = (size_t)span;
    s->device = dev;
    s->external = true;
    kn_tensor *t = kn__alias(&(kn_tensor){.storage = s, .dtype = dt}, nd, dl->shape, stride, 0);
    if (!t) { /* not taken: free the storage without its release hook */
        free(s);
        kn__err(KN_ERR_OOM, "%s: out of host memory", op);
        return NULL;
    }
    kn__complex_note(dt); /* complex operands are rewritten at the kernels only once one exists */
    s->release = release; /* from here on the storage owns the producer's tensor */
    s->release_ctx = ctx;
    kn__storage_release(s); /* the tensor holds its own reference */
    return kn__scoped(t);
}

kn_tensor *kn_from_dlpack(DLManagedTensorVersioned *m) {
    const char *op = "from_dlpack";
    if (!m) {
        kn__err_null(op);
        return NULL;
    }
    /* Only the version may be read before it is checked (the layout after it
     * may differ in another major version). */
    if (m->version.major != DLPACK_MAJOR_VERSION) {
        kn__err(KN_ERR_UNSUPPORTED,
                "%s: DLPack version %u.%u is not supported (kiln reads %d.x); the tensor was not taken: "
                "call its deleter",
                op, m->version.major, m->version.minor, DLPACK_MAJOR_VERSION);
        return NULL;
    }
    if (m->flags & DLPACK_FLAG_BITMASK_READ_ONLY) {
        kn__err(KN_ERR_UNSUPPORTED,
                "%s: the tensor is read-only (DLPACK_FLAG_BITMASK_READ_ONLY) and kiln tensors are writable; "
                "copy it first",
                op);
        return NULL;
    }
    return import(op, &m->dl_tensor, release_versioned, m);
}

kn_tensor *kn_from_dlpack_legacy(DLManagedTensor *m) {
    const char *op = "from_dlpack_legacy";
    if (!m) {
        kn__err_null(op);
        return NULL;
    }
    return import(op, &m->dl_tensor, release_legacy, m);
}
