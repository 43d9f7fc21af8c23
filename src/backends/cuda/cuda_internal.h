/* CUDA backend internals shared by its C host files and its .cu kernel files.
 * Valid C11 and C++17 (the .cu files include it). */
#ifndef KILN_CUDA_INTERNAL_H
#define KILN_CUDA_INTERNAL_H

#ifdef __cplusplus
extern "C" {
#endif

#include "core/internal.h"

#include <cuda_runtime_api.h>

/* ---- per-device state --------------------------------------------------------- */
typedef struct kc_pool kc_pool;

#define KC_RNG_SLOTS 8   /* generators a captured graph may draw from */
#define KC_TICKETS 1024  /* reduction tiles that may finish in their last block */

/* Errors found by kernels (bad index, bad target) land in mapped host memory:
 * kernels cannot fail synchronously, so they record the first error and skip
 * the element; the host reports it at the next op, copy or synchronize. */
enum { KC_ERR_CODE = 0, KC_ERR_OP, KC_ERR_VALUE, KC_ERR_LIMIT, KC_ERR_DIM, KC_ERR_WORDS = 8 };
enum { KC_FAULT_NONE = 0, KC_FAULT_INDEX, KC_FAULT_TARGET };

typedef struct {
    int index;
    bool ready;
    cudaStream_t stream;
    volatile long long *err_host; /* KC_ERR_WORDS words, mapped */
    long long *err_dev;
    /* cuBLASLt (cuda_gemm.c) */
    void *lt;
    void *workspace;
    size_t workspace_size;
    /* pinned staging buffers for host transfers (cuda_copy.c) */
    void *stage[2];
    size_t stage_size;
    cudaEvent_t stage_done[2];
    int stage_next;
    /* graph capture (cuda_graph.c): the private pool, and per generator
     * (seed) a device-side shift that captured random kernels add to their
     * Philox offset, with the span of offsets the capture used */
    kc_pool *capture;
    unsigned long long *rng_shift; /* KC_RNG_SLOTS counters on the device */
    unsigned long long rng_seed[KC_RNG_SLOTS], rng_lo[KC_RNG_SLOTS], rng_hi[KC_RNG_SLOTS];
    int rng_slots;
    /* launch kernels with programmatic dependent launch (Hopper and later) */
    bool pdl;
    cudaError_t launch_error; /* a failed launch, for kc_after */
    /* zeroed counters for reductions that finish in their last block */
    unsigned int *tickets;
} kc_dev;

/* The device's state, initialised on first use, with `index` made current on
 * this thread. NULL (error recorded, naming op) when the device cannot be used. */
kc_dev *kc_device(int index, const char *op);
/* Entry of every kernel: kc_device, flush of pending fused work (unless
 * `keep_pending`), and report of an error left by an earlier kernel. */
kc_dev *kc_enter(const kn_call *c, bool keep_pending);
/* After a launch: the launch error, or (KILN_CUDA_SYNC=1) the kernel's. */
kn_status kc_after(kc_dev *d, const char *op);
/* Records "op: CUDA error ..." for a failed runtime call; KN_OK for cudaSuccess. */
kn_status kc_check(cudaError_t e, const char *op);
/* Reports (and clears) an error recorded by a kernel; KN_OK when none. */
kn_status kc_fault_check(kc_dev *d);
/* Waits for the stream (flushing pending work first). */
kn_status kc_sync(kc_dev *d, const char *op);
bool kc_sync_mode(void); /* KILN_CUDA_SYNC=1 */
int kc_device_count(void);

/* Names for kernel-recorded errors. */
enum { KC_OP_INDEX_SELECT = 1, KC_OP_GATHER, KC_OP_INDEX_ADD, KC_OP_NLL, KC_OP_CROSS_ENTROPY, KC_OP_EMBEDDING_CAT };

/* KILN_CUDA_PROFILE=1: wraps the kernel slots with timing (cuda_profile.c). */
void kc_profile_install(kn_backend *b);

/* ---- memory (cuda_alloc.c) -------------------------------------------------------- */
void *kc_alloc(int index, size_t nbytes);
void kc_free(int index, void *ptr, size_t nbytes);
kn_status kc_memory_stats(int index, kn_memory_stats *out);
kn_status kc_empty_cache(int index);
kc_pool *kc_pool_new(int index);
/* The graph no longer needs the pool: its memory returns to the cache as its
 * tensors die. */
void kc_pool_release(int index, kc_pool *pool);
/* A device tensor for scratch (raw, refcount 1), NULL with an error. */
kn_tensor *kc_scratch(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev);

/* ---- copies (cuda_copy.c) ------------------------------------------------------------ */
kn_status kc_copy_h2d(int index, void *dst, const void *src, size_t n);
kn_status kc_copy_d2h(int index, void *dst, const void *src, size_t n);
kn_status kc_copy_d2d(int index, void *dst, const void *src, size_t n);

/* ---- graphs (cuda_graph.c) -------------------------------------------------------------- */
kn_status kc_graph_begin(int index);
void *kc_graph_end(int index, kn_status *status);
kn_status kc_graph_launch(int index, void *graph);
void kc_graph_free(int index, void *graph);

/* ---- strided iteration (cuda_iter.c) -----------------------------------------------------
 * Up to 4 operands of one shape, dims merged where every operand allows,
 * strides in elements. Passed by value to kernels. */
#define KC_MAX_OPS 4
typedef struct {
    int ndim, nops;
    long long numel;
    long long shape[KN_MAX_DIMS];
    long long stride[KC_MAX_OPS][KN_MAX_DIMS];
} kc_iter;
void kc_iter_init(kc_iter *it, int nops, kn_tensor *const *ops);
/* Every operand walks memory with unit (or zero) stride in one dim. */
bool kc_iter_flat(const kc_iter *it);
/* A contiguous tensor of dtype dt with t's values: t itself (retained) when it
 * already is, else a scratch copy. NULL with an error. */
kn_tensor *kc_contig(kn_tensor *t, kn_dtype dt);

/* ---- kernels (the .cu files) ------------------------------------------------------------ */
kn_status kn__cuda_copy(const kn_call *c);
kn_status kn__cuda_fill(const kn_call *c);
kn_status kn__cuda_arange(const kn_call *c);
kn_status kn__cuda_unary(const kn_call *c);
kn_status kn__cuda_unary_backward(const kn_call *c);
kn_status kn__cuda_binary(const kn_call *c);
kn_status kn__cuda_where(const kn_call *c);
kn_status kn__cuda_reduce(const kn_call *c);
kn_status kn__cuda_matmul(const kn_call *c);
kn_status kn__cuda_index_select(const kn_call *c);
kn_status kn__cuda_gather(const kn_call *c);
kn_status kn__cuda_index_add(const kn_call *c);
kn_status kn__cuda_embedding_cat(const kn_call *c);
kn_status kn__cuda_embedding_cat_backward(const kn_call *c);
kn_status kn__cuda_softmax(const kn_call *c);
kn_status kn__cuda_softmax_backward(const kn_call *c);
kn_status kn__cuda_nll(const kn_call *c);
kn_status kn__cuda_nll_backward(const kn_call *c);
kn_status kn__cuda_cross_entropy(const kn_call *c);
kn_status kn__cuda_cross_entropy_backward(const kn_call *c);
kn_status kn__cuda_batch_norm(const kn_call *c);
kn_status kn__cuda_batch_norm_backward(const kn_call *c);
kn_status kn__cuda_layer_norm(const kn_call *c);
kn_status kn__cuda_layer_norm_backward(const kn_call *c);
kn_status kn__cuda_random(const kn_call *c);
kn_status kn__cuda_dropout(const kn_call *c);
kn_status kn__cuda_adam(const kn_call *c);
kn_status kn__cuda_sgd(const kn_call *c);

/* Fused Adam: consecutive float32 Adam calls are queued and run as one kernel
 * over all of them when anything else touches the device (cuda_train.cu). */
kn_status kc_adam_flush(kc_dev *d);
/* Random kernels under capture: the shift slot of the generator `seed` in the
 * graph being captured (NULL when not capturing), widening the span of
 * offsets the capture uses by the n elements (per per counter) at offset. */
kn_status kc_capture_shift(kc_dev *d, unsigned long long seed, unsigned long long offset, long long n, int per,
                           const unsigned long long **shift);
/* Adds each generator's span to its shift slot, on the stream (end of a capture). */
kn_status kc_rng_shift_advance(kc_dev *d);

#ifdef __cplusplus
}
#endif
#endif
