/* kiln — devices: discovery, selection, memory, fallback statistics. */
#ifndef KILN_DEVICE_H
#define KILN_DEVICE_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The well-known kinds. A backend registered at run time under another name
 * (a test's, say) gets a kind after these; kn_device_get finds it by name. */
typedef enum {
    KN_DEVICE_CPU = 0,
    KN_DEVICE_CUDA,
    KN_DEVICE_METAL,
    KN_DEVICE_VULKAN,
    KN_DEVICE_KIND_COUNT
} kn_device_kind;

/* A device handle, passed by value. kind < 0 means "no device" (an error). */
typedef struct {
    int16_t kind;
    int16_t index;
} kn_device;

#define KN_CPU ((kn_device){KN_DEVICE_CPU, 0})

/* The best available device: cuda, metal, vulkan (real GPUs), cpu.
 * KILN_DEVICE=cpu|cuda|cuda:1 overrides; naming an absent device is an error
 * (kind < 0, message in kn_error()), never a silent fallback. */
kn_device kn_device_default(void);
/* Why kn_device_default chose what it chose (one line). */
const char *kn_device_default_reason(void);

/* Deterministic algorithms, as torch.use_deterministic_algorithms: when on,
 * no kernel whose result can differ from run to run is used (on CUDA,
 * cuDNN's engines that accumulate with atomics; kiln's own kernels are
 * deterministic always). Off by default, as in PyTorch, since those engines
 * are often the fastest; KILN_DETERMINISTIC=1 turns it on at start. Applies
 * to the ops issued after the call. */
void kn_use_deterministic_algorithms(bool on);
bool kn_deterministic_algorithms(void);
/* "cpu", "cuda", "cuda:1". Unknown or absent: kind < 0 and an error. */
kn_device kn_device_get(const char *name);
bool kn_device_ok(kn_device d);
bool kn_device_equal(kn_device a, kn_device b);
/* Devices of a kind that are present (0 when the backend is absent). */
int kn_device_count(kn_device_kind kind);
/* "CPU", "CUDA": for "Using %s device". */
const char *kn_device_kind_name(kn_device_kind kind);
/* "cpu", "cuda:0". The string lives as long as the process. */
const char *kn_device_str(kn_device d);
/* The hardware's name ("NVIDIA H100 80GB HBM3", "x86_64, 16 threads"). */
const char *kn_device_description(kn_device d);
/* Bytes of memory; returns a negative status when unknown. */
kn_status kn_device_memory(kn_device d, size_t *free_bytes, size_t *total_bytes);
/* Waits until every queued operation on d has finished. */
kn_status kn_device_synchronize(kn_device d);

/* ---- CPU fallback statistics --------------------------------------------
 * An op that a backend lacks runs on the CPU (copy in, run, copy back); each
 * such run is counted here, per op name and device kind. */
typedef struct {
    const char *op;
    kn_device_kind kind;
    int64_t count;
} kn_fallback_stat;
/* Fills up to cap entries; returns the number of distinct (op, kind) pairs. */
int kn_fallback_stats(kn_fallback_stat *out, int cap);
void kn_fallback_stats_reset(void);

/* Memory statistics of a device's allocator (bytes). */
typedef struct {
    size_t in_use;
    size_t cached;
    size_t peak;
    int64_t allocations;
} kn_memory_stats;
kn_status kn_device_memory_stats(kn_device d, kn_memory_stats *out);
/* Gives cached blocks back to the device. */
kn_status kn_device_empty_cache(kn_device d);

#ifdef __cplusplus
}
#endif
#endif
