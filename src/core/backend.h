/* The backend contract: everything a backend sees of kiln, and everything it
 * must provide. A backend includes this header (and src/backends/common/), never
 * core/internal.h: kernels get plain views, not tensors. docs/BACKENDS.md
 * ("Writing a backend") walks through it. */
#ifndef KILN_BACKEND_H
#define KILN_BACKEND_H

#include "kiln/core.h"
#include "kiln/device.h"
#include "kiln/ops.h" /* kn_reduction, the `reduction` field of the loss ops */

/* The size of a multi-process group's id (NCCL's unique id). */
#define KN_COMM_ID_BYTES 128

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define KN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KN_UNUSED __attribute__((unused))
#else
#define KN_PRINTF(a, b)
#define KN_UNUSED
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- views ------------------------------------------------------------------
 * What a kernel gets of an operand: device memory and its geometry. data
 * points at the first element (the tensor's offset is applied); strides are
 * in elements and 0 on broadcast dims. data == NULL: the operand is absent. */
typedef struct kn_operand {
    void *data;
    kn_dtype dtype;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
    int64_t stride[KN_MAX_DIMS];
} kn_operand;

static inline bool kn_operand_present(const kn_operand *v) { return v->data != NULL; }
static inline int64_t kn_operand_numel(const kn_operand *v) {
    int64_t n = 1;
    for (int d = 0; d < v->ndim; d++) n *= v->shape[d];
    return n;
}
static inline bool kn_operand_contiguous(const kn_operand *v) {
    int64_t s = 1;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (v->shape[d] != 1 && v->stride[d] != s) return false;
        s *= v->shape[d];
    }
    return true;
}

/* ---- function codes of the elementwise, reduce and random primitives ---------- */
typedef enum {
    KN_UNARY_NEG = 0, KN_UNARY_EXP, KN_UNARY_LOG, KN_UNARY_SQRT, KN_UNARY_ABS,
    KN_UNARY_RELU, KN_UNARY_LEAKY_RELU, KN_UNARY_GELU, KN_UNARY_SIGMOID, KN_UNARY_TANH,
    KN_UNARY_SOFTPLUS, KN_UNARY_CLAMP, KN_UNARY_POW_SCALAR, KN_UNARY_ADD_SCALAR,
    KN_UNARY_MUL_SCALAR, KN_UNARY_RSUB_SCALAR, KN_UNARY_RSQRT, KN_UNARY_SIN, KN_UNARY_COS, KN_UNARY_TAN,
    KN_UNARY_COUNT
} kn_unary_fn;

typedef enum {
    KN_BINARY_ADD = 0, KN_BINARY_SUB, KN_BINARY_MUL, KN_BINARY_DIV, KN_BINARY_POW,
    KN_BINARY_MAX, KN_BINARY_MIN,
    KN_BINARY_EQ, KN_BINARY_NE, KN_BINARY_LT, KN_BINARY_LE, KN_BINARY_GT, KN_BINARY_GE,
    KN_BINARY_COUNT
} kn_binary_fn;

typedef enum {
    KN_REDUCE_SUM = 0, KN_REDUCE_MEAN, KN_REDUCE_MAX, KN_REDUCE_MIN, KN_REDUCE_VAR,
    KN_REDUCE_ARGMAX, KN_REDUCE_ARGMIN, KN_REDUCE_COUNT
} kn_reduce_fn;

typedef enum { KN_RANDOM_UNIFORM = 0, KN_RANDOM_NORMAL, KN_RANDOM_INT, KN_RANDOM_BITS } kn_random_kind;

/* Activations a GEMM applies in its epilogue (matmul's act). */
typedef enum { KN_ACT_NONE = 0, KN_ACT_RELU } kn_activation;

/* ---- the ops (src/core/ops.def) ---------------------------------------------- */
typedef enum { KN_TIER_PRIMITIVE = 0, KN_TIER_FUSED } kn_op_tier;

typedef enum {
#define KN_OP(ID, name, tier, fields) KN_OP_##ID,
#include "ops.def"
#undef KN_OP
    KN_OP_COUNT
} kn_op;

/* One argument struct per op, its fields in the order of ops.def. */
#define IN(f) kn_operand f;
#define OUT(f) kn_operand f;
#define INS(f, n) const kn_operand *f; int64_t n;
#define OUTS(f, n) const kn_operand *f; int64_t n;
#define INT(f) int64_t f;
#define REAL(f) double f;
#define KN_OP(ID, name, tier, fields) typedef struct { fields } kn_##name##_args;
#include "ops.def"
#undef KN_OP
#undef IN
#undef OUT
#undef INS
#undef OUTS
#undef INT
#undef REAL

const char *kn__op_name(kn_op op);
kn_op_tier kn__op_tier(kn_op op);
size_t kn__op_args_size(kn_op op);
/* Name used in messages and fallback counters: "exp", "matmul", "batch_norm". */
const char *kn__op_call_name(kn_op op, const void *args);
const char *kn__unary_name(kn_unary_fn f);
const char *kn__binary_name(kn_binary_fn f);
const char *kn__reduce_name(kn_reduce_fn f);

/* Calls fn on every view of an op's arguments, in ops.def order (each element
 * of an INS/OUTS array in turn); stops at the first status that is not KN_OK. */
typedef enum { KN_ROLE_IN = 0, KN_ROLE_OUT } kn_role;
typedef kn_status (*kn_operand_fn)(void *ctx, kn_operand *view, kn_role role, const char *field);
kn_status kn__op_views(kn_op op, void *args, kn_operand_fn fn, void *ctx);

/* ---- what a backend provides ------------------------------------------------- */
/* Every kernel: args points at the op's kn_<name>_args. */
typedef kn_status (*kn_kernel)(int device, const void *args);

#define KN_DTYPES_ALL ((1u << KN_DTYPE_COUNT) - 1)

typedef struct kn_backend {
    const char *name;  /* "cpu", "cuda": the prefix of its device names */
    const char *title; /* "CPU", "CUDA": for "Using %s device" */
    /* kn_device_default picks the present backend of highest priority > 0;
     * 0: used only when named (the CPU is the last resort anyway). */
    int priority;
    int (*device_count)(void);
    const char *(*device_name)(int index);
    kn_status (*memory)(int index, size_t *free_bytes, size_t *total_bytes);
    /* NULL on failure: the core then writes an out-of-memory message naming the
     * size and device, unless the backend recorded its own (kn__err) first. */
    void *(*alloc)(int index, size_t nbytes);
    void (*free)(int index, void *ptr, size_t nbytes);
    kn_status (*copy_h2d)(int index, void *dst, const void *src, size_t nbytes);
    kn_status (*copy_d2h)(int index, void *dst, const void *src, size_t nbytes);
    kn_status (*copy_d2d)(int index, void *dst, const void *src, size_t nbytes);
    kn_status (*synchronize)(int index);
    kn_status (*memory_stats)(int index, kn_memory_stats *out); /* optional */
    kn_status (*empty_cache)(int index);                          /* optional */
    /* Capture and replay (optional; see kiln/graph.h). graph_begin starts
     * recording the device's stream (KN_ERR_UNSUPPORTED: run eagerly),
     * graph_end returns the recording (which keeps the memory allocated
     * during capture for itself). */
    kn_status (*graph_begin)(int index);
    void *(*graph_end)(int index, kn_status *status);
    kn_status (*graph_launch)(int index, void *graph);
    void (*graph_free)(int index, void *graph);
    /* Optional: a copy between two devices of this backend without the host
     * (CUDA's peer copies), ordered after the work queued on both and before
     * the work queued on either later. NULL or KN_ERR_UNSUPPORTED (with no
     * error recorded): the core copies through the host. */
    kn_status (*copy_peer)(int dst_index, void *dst, int src_index, const void *src, size_t nbytes);
    /* Optional collectives over devices of this backend, one rank each
     * (NCCL on CUDA; the dist layer, kiln/dist.h, uses them). comm_new
     * returns NULL with an error, or with KN_ERR_UNSUPPORTED and no error
     * when the library is absent (the dist layer then uses the host). In
     * both collectives bufs[r] is count elements of dt in device
     * indices[r]'s memory, worked on in place and queued on every rank's
     * stream. comm_all_reduce: each becomes the sum over the ranks (a
     * weighted sum is scaled by the dist layer first); comm_broadcast: each
     * becomes a copy of bufs[root]. */
    const char *comm_name; /* "nccl": what kn_dist_transport reports */
    void *(*comm_new)(int n, const int *indices, kn_status *status);
    void (*comm_free)(void *comm);
    kn_status (*comm_all_reduce)(void *comm, void *const *bufs, size_t count, kn_dtype dt);
    kn_status (*comm_broadcast)(void *comm, void *const *bufs, size_t count, kn_dtype dt, int root);
    /* Optional, as a pair: the sum of comm_all_reduce queued on a stream
     * of the communicator's own for each rank, after the work queued so far
     * on the rank's stream, which goes on at once (so backward overlaps the
     * all-reduce); comm_join makes each rank's stream wait for every such
     * sum queued before it. The buffers stay untouched until the join. */
    kn_status (*comm_all_reduce_async)(void *comm, void *const *bufs, size_t count, kn_dtype dt);
    kn_status (*comm_join)(void *comm);
    /* Optional, as a pair: groups spread over processes (or hosts), one
     * rank each. comm_unique_id makes the id that ties a group together (on
     * its rank 0, which hands it to the others); comm_new_rank joins this
     * process as `rank` of `world` on device `index` and returns when every
     * rank has joined. Its communicator has one local rank (bufs[0] in the
     * collectives); a broadcast's root is a global rank. */
    kn_status (*comm_unique_id)(int index, unsigned char id[KN_COMM_ID_BYTES]);
    void *(*comm_new_rank)(int index, int rank, int world, const unsigned char id[KN_COMM_ID_BYTES], kn_status *status);
    /* The dtypes its kernels compute in (bit k: kn_dtype k; 0 means all). An
     * op with an operand of another dtype is not sent to its kernels. */
    uint32_t dtypes;
    /* Optional: may this kernel run these arguments? NULL: every kernel it
     * has runs every argument in its dtypes. A primitive it declines runs on
     * the host; a fused op it declines runs as its composite, on the device. */
    bool (*supports)(int index, kn_op op, const void *args);
    /* One slot per op; every PRIMITIVE slot should be filled. */
    kn_kernel kernels[KN_OP_COUNT];
} kn_backend;

/* Adds a backend at run time (the built-in ones come from the list the build
 * generates). Returns its kind (the device-name prefix is its name), or -1
 * with an error. Tests use it for backends of their own. */
int kn__backend_register(const kn_backend *b);

/* ---- what a backend may use of the core ------------------------------------- */
/* Records an error and returns `s` (so `return kn__err(...)` works). */
kn_status kn__err(kn_status s, const char *fmt, ...) KN_PRINTF(2, 3);
/* Runs fn over [0, n) in chunks of at least `grain` on the CPU thread pool;
 * the caller's thread takes part. Nested calls run serially. */
typedef void (*kn_range_fn)(int64_t begin, int64_t end, void *ctx);
void kn__parallel_for(int64_t n, int64_t grain, kn_range_fn fn, void *ctx);
/* The calling thread's fault context, set by a composite around the launches
 * it makes (core/internal.h): the fused op, the operand and the range to name
 * in an index fault that a device reports later. False when none. */
bool kn__fault_context_get(const char **op, const char **item, const char **range);

#ifdef __cplusplus
}
#endif
#endif
