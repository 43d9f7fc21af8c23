/* CUDA backend internals shared by its C host files and its .cu kernel files.
 * Valid C11 and C++17 (the .cu files include it). The backend sees kiln only
 * through core/backend.h: kernels get views, scratch comes from kc_alloc. */
#ifndef KILN_CUDA_INTERNAL_H
#define KILN_CUDA_INTERNAL_H

#include "core/backend.h"
#include "backends/common/geometry.h"

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

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
    /* peer copies (cuda_copy.c): marks this stream's work done for another
     * device's stream to wait on */
    cudaEvent_t peer_done;
} kc_dev;

/* The device's state, initialised on first use, with `index` made current on
 * this thread. NULL (error recorded, naming op) when the device cannot be used. */
kc_dev *kc_device(int index, const char *op);
/* Entry of every kernel: kc_device, flush of pending fused work (unless
 * `keep_pending`), and report of an error left by an earlier kernel. */
kc_dev *kc_enter(int index, const char *op, bool keep_pending);
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
enum {
    KC_OP_INDEX_SELECT = 1, KC_OP_GATHER, KC_OP_INDEX_ADD, KC_OP_NLL, KC_OP_CROSS_ENTROPY, KC_OP_EMBEDDING_CAT,
    KC_OP_SCATTER_ADD, KC_OP_MAX_POOL2D_BACKWARD
};

/* KILN_CUDA_PROFILE=1: wraps the kernel slots with timing (cuda_profile.c). */
void kc_profile_install(kn_backend *b);

/* ---- memory (cuda_alloc.c) -------------------------------------------------------- */
/* Device memory from the caching allocator: the backend's alloc slot, and
 * every kernel's scratch. A block freed while kernels that use it are still
 * queued is safe: its next user is queued after them on the one stream. */
void *kc_alloc(int index, size_t nbytes);
void kc_free(int index, void *ptr, size_t nbytes);
kn_status kc_memory_stats(int index, kn_memory_stats *out);
kn_status kc_empty_cache(int index);
kc_pool *kc_pool_new(int index);
/* The graph no longer needs the pool: its memory returns to the cache as its
 * blocks are freed. */
void kc_pool_release(int index, kc_pool *pool);

/* ---- copies (cuda_copy.c) ------------------------------------------------------------ */
kn_status kc_copy_h2d(int index, void *dst, const void *src, size_t n);
kn_status kc_copy_d2h(int index, void *dst, const void *src, size_t n);
kn_status kc_copy_d2d(int index, void *dst, const void *src, size_t n);
kn_status kc_copy_peer(int dst_index, void *dst, int src_index, const void *src, size_t n);
/* NCCL communicators for kiln/dist.h (cuda_nccl.c; built where nccl.h is). */
void *kc_comm_new(int n, const int *indices, kn_status *status);
void kc_comm_free(void *comm);
kn_status kc_comm_all_reduce(void *comm, void *const *bufs, size_t count, kn_dtype dt);
kn_status kc_comm_broadcast(void *comm, void *const *bufs, size_t count, kn_dtype dt, int root);
kn_status kc_comm_all_reduce_async(void *comm, void *const *bufs, size_t count, kn_dtype dt);
kn_status kc_comm_join(void *comm);
kn_status kc_comm_unique_id(int index, unsigned char id[KN_COMM_ID_BYTES]);
void *kc_comm_new_rank(int index, int rank, int world, const unsigned char id[KN_COMM_ID_BYTES], kn_status *status);

/* ---- graphs (cuda_graph.c) -------------------------------------------------------------- */
kn_status kc_graph_begin(int index);
void *kc_graph_end(int index, kn_status *status);
kn_status kc_graph_launch(int index, void *graph);
void kc_graph_free(int index, void *graph);

/* ---- views (cuda_view.c) -----------------------------------------------------------------
 * Strided kernels walk a kn_geom (backends/common/geometry.h), passed by value. */
/* Every operand walks memory with unit (or zero) stride in one dim. */
bool kc_geom_flat(const kn_geom *g);
/* v broadcast to (ndim, shape), aligned on the right: stride 0 on new and
 * size-1 dims. */
kn_operand kc_view_expand(const kn_operand *v, int ndim, const int64_t *shape);

/* An operand made contiguous: v itself when it already is (and of dtype dt),
 * else a scratch copy that kc_buf_free gives back. An absent v stays absent. */
typedef struct {
    kn_operand v;
    void *scratch;
    size_t nbytes;
} kc_buf;
kn_status kc_contig(kc_dev *d, const kn_operand *v, kn_dtype dt, kc_buf *out);
void kc_buf_free(kc_dev *d, kc_buf *b);

/* Elementwise launches on views, without kc_enter (cuda_elementwise.cu):
 * for kernels that copy, fill or activate as one of their steps. */
kn_status kc_copy_view(kc_dev *d, const kn_operand *out, const kn_operand *x);
kn_status kc_fill_view(kc_dev *d, const kn_operand *out, double value, double step);
kn_status kc_unary_view(kc_dev *d, const kn_operand *out, const kn_operand *x, int fn, double p0, double p1);

/* ---- kernels (the .cu files and cuda_gemm.c): args is the op's kn_<name>_args ------------ */
kn_status kn__cuda_copy(int device, const void *args);
kn_status kn__cuda_fill(int device, const void *args);
kn_status kn__cuda_unary(int device, const void *args);
kn_status kn__cuda_unary_backward(int device, const void *args);
kn_status kn__cuda_binary(int device, const void *args);
kn_status kn__cuda_where(int device, const void *args);
kn_status kn__cuda_reduce(int device, const void *args);
kn_status kn__cuda_matmul(int device, const void *args);
kn_status kn__cuda_gather(int device, const void *args);
kn_status kn__cuda_scatter_add(int device, const void *args);
kn_status kn__cuda_random(int device, const void *args);
kn_status kn__cuda_index_select(int device, const void *args);
kn_status kn__cuda_index_add(int device, const void *args);
kn_status kn__cuda_embedding_cat(int device, const void *args);
kn_status kn__cuda_embedding_cat_backward(int device, const void *args);
kn_status kn__cuda_softmax(int device, const void *args);
kn_status kn__cuda_softmax_backward(int device, const void *args);
kn_status kn__cuda_nll(int device, const void *args);
kn_status kn__cuda_nll_backward(int device, const void *args);
kn_status kn__cuda_cross_entropy(int device, const void *args);
kn_status kn__cuda_cross_entropy_backward(int device, const void *args);
kn_status kn__cuda_batch_norm(int device, const void *args);
kn_status kn__cuda_batch_norm_backward(int device, const void *args);
kn_status kn__cuda_layer_norm(int device, const void *args);
kn_status kn__cuda_layer_norm_backward(int device, const void *args);
kn_status kn__cuda_dropout(int device, const void *args);
kn_status kn__cuda_adam(int device, const void *args);
kn_status kn__cuda_sgd(int device, const void *args);
/* Signal (cuda_fft.c: cuFFT, opened at run time). */
kn_status kn__cuda_fft(int device, const void *args);
bool kc_fft_supports(int index, const void *args);
kn_status kn__cuda_rfft(int device, const void *args);
kn_status kn__cuda_irfft(int device, const void *args);
bool kc_fft_real_supports(int index, kn_op op, const void *args); /* KN_OP_RFFT, KN_OP_IRFFT */
/* Vision (cuda_conv.c: cuDNN, opened at run time, else an implicit-GEMM
 * kernel; cuda_pool.cu). */
kn_status kn__cuda_conv2d(int device, const void *args);
kn_status kn__cuda_conv2d_backward(int device, const void *args);
kn_status kn__cuda_max_pool2d(int device, const void *args);
kn_status kn__cuda_max_pool2d_backward(int device, const void *args);
kn_status kn__cuda_avg_pool2d(int device, const void *args);
kn_status kn__cuda_avg_pool2d_backward(int device, const void *args);
bool kc_vision_supports(int index, kn_op op, const void *args);

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
