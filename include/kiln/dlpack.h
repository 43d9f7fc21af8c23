/* kiln — DLPack 1.x: tensors to and from other frameworks without a copy.
 *
 * The structs are DLPack's own (vendor/dlpack.h, DLPack 1.1). docs/DLPACK.md
 * has the ownership rules, devices and dtypes in full; in short:
 *
 *   kn_to_dlpack(t)   a DLManagedTensorVersioned viewing t's memory. It holds
 *                     its own reference to t's storage: t may be released
 *                     before or after the consumer calls m->deleter(m), which
 *                     must happen exactly once.
 *   kn_from_dlpack(m) a kiln tensor viewing m's memory. On success kiln owns m
 *                     and calls m->deleter(m) once, when the last kiln tensor
 *                     viewing it (views included) is released. On failure
 *                     (NULL, message in kn_error()) kiln has not taken m and has
 *                     not called its deleter: the caller still owns m, and
 *                     calls m->deleter(m) itself when done (the DLPack header
 *                     makes that safe even for a major version kiln refuses).
 *
 * Devices: cpu (kDLCPU) and, when the CUDA backend is built and the device is
 * present, cuda:N (kDLCUDA, device_id N). dtypes: every kiln dtype (bool is
 * kDLBool, 8 bits; bf16 is kDLBfloat). Read-only tensors are refused on import
 * (kiln tensors are writable); copy them first. */
#ifndef KILN_DLPACK_H
#define KILN_DLPACK_H

#include "tensor.h"
#include "vendor/dlpack.h"

/* Another dlpack.h included first wins the include guard: it must be 1.x. */
#if !defined(DLPACK_MAJOR_VERSION) || DLPACK_MAJOR_VERSION != 1
#error "kiln/dlpack.h needs DLPack 1.x; an older dlpack.h was included before it"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Exports t without a copy (its strides and offset as they are). Tensors on
 * a GPU are synchronized first, so the consumer sees every queued write.
 * NULL with an error for a device DLPack cannot name here (only cpu, cuda). */
DLManagedTensorVersioned *kn_to_dlpack(kn_tensor *t);

/* Imports m without a copy: cpu, or cuda:N when built with CUDA. The producer
 * must have finished writing the memory (GPU: synchronized). Refused, with m
 * still the caller's: a major version other than DLPACK_MAJOR_VERSION, the
 * read-only flag, a dtype kiln lacks (lanes != 1, complex32, int8, uint16, fp8,
 * ...), another device type (kDLCUDAHost, kDLCUDAManaged, ROCm, ...), ndim
 * outside 0..KN_MAX_DIMS, negative sizes, negative strides, a span that
 * overflows, a NULL or misaligned data pointer. */
kn_tensor *kn_from_dlpack(DLManagedTensorVersioned *m);

/* The same for the unversioned DLManagedTensor of DLPack before 1.0 (what
 * NumPy 1.x's __dlpack__ and torch.utils.dlpack 1.x hand out): no version and
 * no flags to check; ownership as for kn_from_dlpack. */
kn_tensor *kn_from_dlpack_legacy(DLManagedTensor *m);

#ifdef __cplusplus
}
#endif
#endif
