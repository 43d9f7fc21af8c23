/* kiln internals shared by the core, the ops and the backends.
 * Not installed; nothing outside src/ (and tests) includes it. */
#ifndef KILN_INTERNAL_H
#define KILN_INTERNAL_H

#include "kiln.h"

#include <stdarg.h>

#if defined(__GNUC__)
#define KN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KN_UNUSED __attribute__((unused))
#else
#define KN_PRINTF(a, b)
#define KN_UNUSED
#endif

/* ---- errors ---------------------------------------------------------------- */
/* Records an error and returns `s` (so `return kn__err(...)` works for status). */
kn_status kn__err(kn_status s, const char *fmt, ...) KN_PRINTF(2, 3);
/* The NULL-input convention: records "op: input N is NULL" only when no error
 * is pending (so the first cause stays visible). */
void kn__err_null(const char *op);

/* ---- storage and tensors ---------------------------------------------------- */
typedef struct kn_storage {
    int64_t refcount;
    void *data;     /* device pointer (host pointer for the CPU) */
    size_t nbytes;
    kn_device device;
    bool external;  /* memory not ours: not freed */
    uint32_t version; /* bumped by every public in-place write (copy_, fill_) */
} kn_storage;

struct kn_node;

struct kn_tensor {
    int64_t refcount;
    kn_storage *storage;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
    int64_t stride[KN_MAX_DIMS]; /* in elements; 0 for broadcast dims */
    int64_t offset;              /* in elements */
    kn_dtype dtype;
    bool requires_grad;
    struct kn_node *grad_fn; /* owned: the tape node that made this tensor */
    kn_tensor *grad;         /* owned: accumulated gradient of a leaf */
};

kn_storage *kn__storage_new(size_t nbytes, kn_device dev);
void kn__storage_release(kn_storage *s);

/* A new contiguous tensor (refcount 1, in no scope: internal use). Data is
 * uninitialised. NULL (with an error) on bad shape or out of memory. */
kn_tensor *kn__new(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev);
/* The same, naming `op` in its error messages (public creation functions). */
kn_tensor *kn__new_named(const char *op, int ndim, const int64_t *shape, kn_dtype dt, kn_device dev);
kn_tensor *kn__new_like(const kn_tensor *t);
/* A view sharing t's storage with the given geometry (refcount 1, no scope). */
kn_tensor *kn__alias(const kn_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                     int64_t offset);
/* Registers t with the innermost scope (if any); returns t. Every tensor the
 * public API hands out goes through this exactly once. */
kn_tensor *kn__scoped(kn_tensor *t);
void kn__free_tensor(kn_tensor *t); /* refcount reached zero */

static inline void *kn__data(const kn_tensor *t) {
    return (char *)t->storage->data + (size_t)t->offset * kn_dtype_size(t->dtype);
}
int64_t kn__numel_shape(int ndim, const int64_t *shape);
void kn__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
bool kn__is_contiguous(const kn_tensor *t);
/* Normalises a possibly negative dim; -1 (with an error naming op) when out of range. */
int kn__dim(const char *op, int dim, int ndim);
/* Broadcasts two shapes; returns ndim of the result or -1 with an error. */
int kn__broadcast(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                  int64_t *out);
/* A broadcast view of t with the given shape (stride 0 on new/size-1 dims). */
kn_tensor *kn__expand(const kn_tensor *t, int ndim, const int64_t *shape);
/* "[2, 3]" */
const char *kn__shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);

/* Element access by dtype (slow paths, tests, printing). */
double kn__load(const void *p, kn_dtype dt);
void kn__store(void *p, kn_dtype dt, double v);
int64_t kn__load_i64(const void *p, kn_dtype dt);
void kn__store_i64(void *p, kn_dtype dt, int64_t v);
float kn__f16_to_f32(uint16_t h);
uint16_t kn__f32_to_f16(float f);
float kn__bf16_to_f32(uint16_t h);
uint16_t kn__f32_to_bf16(float f);

/* ---- scopes ------------------------------------------------------------- */
/* Internal scratch scopes (used by composite ops and backward) work like the
 * public ones; kn__scope_keep moves one tensor out to the enclosing level. */

/* ---- ops and backends --------------------------------------------------------
 * Every kernel of every backend has one signature: it reads c->in, writes
 * c->out, and takes parameters from c->i / c->f. The op layer has already
 * checked shapes and dtypes, allocated outputs and put every tensor on the
 * same device. Kernels must accept any strides on inputs; outputs made by the
 * op layer are contiguous unless the op says otherwise. */
typedef enum {
    /* out[0] <- in[0]: broadcast (in[0] may have stride 0), dtype conversion;
     * out[0] may be any strided view (concat, copy_). */
    KN_OP_COPY = 0,
    /* out[0] <- f[0] (out may be strided). */
    KN_OP_FILL,
    /* out[0][k] = f[0] + k * f[1] (1-D, contiguous). */
    KN_OP_ARANGE,
    /* out[0] = fn(in[0]); i[0] = kn_unary_fn; f[0], f[1] = its parameters.
     * out has in's shape; dtype may differ (e.g. abs of int). */
    KN_OP_UNARY,
    /* out[0] = d fn(x) / dx * grad: in[0] = grad, in[1] = x (i[0] = fn,
     * f[0..1] parameters), same shapes. For exp, sigmoid and tanh in[1] is
     * the forward OUTPUT y, for others the input x. */
    KN_OP_UNARY_BACKWARD,
    /* out[0] = fn(in[0], in[1]); i[0] = kn_binary_fn. Inputs are already
     * broadcast views of out's shape (stride 0 where broadcast) and of out's
     * dtype, except comparisons, whose inputs share a dtype and whose out is
     * KN_BOOL. */
    KN_OP_BINARY,
    /* out[0] = in[0] ? in[1] : in[2]; inputs broadcast to out's shape; in[0]
     * KN_BOOL, in[1] and in[2] of out's dtype. */
    KN_OP_WHERE,
    /* out[0] = reduce of in[0] over the dims set in bitmask i[1]; i[0] =
     * kn_reduce_fn; i[2] = correction (VAR). out has in's rank with reduced
     * dims of size 1 (keepdim shape; the op layer reshapes afterwards).
     * ARGMAX/ARGMIN reduce exactly one dim and write KN_I64. */
    KN_OP_REDUCE,
    /* out[0] [B, M, N] = act(in[0] [B, M, K] @ in[1] [B, K, N] (+ in[2] [N] if
     * not NULL)), act = i[0]: KN_ACT_NONE or KN_ACT_RELU (a GEMM epilogue
     * where the backend has one). Batch stride may be 0 (broadcast). Any
     * strides; floats only. */
    KN_OP_MATMUL,
    /* out[0] = in[0] selected at in[1] (1-D integer) along dim i[0]. */
    KN_OP_INDEX_SELECT,
    /* torch.gather: out[0] (shape of in[1]) along dim i[0]. */
    KN_OP_GATHER,
    /* In place: out[0] (a strided tensor) += in[0] (src) at in[1] (1-D index)
     * along dim i[0]. Must be correct with repeated indices. */
    KN_OP_INDEX_ADD,
    /* Embeddings of i[0] = T tables, joined: out[0] [N, sum D_k] (may be a
     * strided view) row n = concat over k of table k's row codes[n, k]; in[0]
     * codes [N, T] (integer, any strides), in[1 + k] table k [V_k, D_k]
     * (contiguous, out's dtype). A code outside [0, V_k) is an error. */
    KN_OP_EMBEDDING_CAT,
    /* Its backward: out[k] [V_k, D_k] (contiguous, written whole: zero where
     * no row refers) = the sum of grad rows in[0] [N, sum D_k] (any strides)
     * over the rows whose code for table k is that row; in[1] codes; i[0] = T. */
    KN_OP_EMBEDDING_CAT_BACKWARD,
    /* out[0] = softmax (i[1] = 0) or log_softmax (i[1] = 1) of in[0] along
     * dim i[0]. */
    KN_OP_SOFTMAX,
    /* out[0] = input grad; in[0] = grad of the output, in[1] = the forward
     * output y; i[0] = dim, i[1] = log flag. */
    KN_OP_SOFTMAX_BACKWARD,
    /* Negative log-likelihood of log-probabilities in[0] [N, C] at targets
     * in[1] [N] (integer), with class weights in[2] [C] or NULL, label
     * smoothing f[0], ignore_index i[0]. out[0] [N]: per-row loss (already
     * weighted); out[1] [N]: per-row weight (0 for ignored rows). Smoothed
     * loss: (1-s) * w[t] * -lp[t] + s/C * sum_c w[c] * -lp[c]. */
    KN_OP_NLL,
    /* out[0] [N, C] = d loss / d lp, for per-row loss grads in[0] [N],
     * targets in[1], weights in[2] or NULL, same f[0]/i[0] as NLL. */
    KN_OP_NLL_BACKWARD,
    /* Cross-entropy of logits in[0] [N, C] (contiguous) at targets in[1] [N]
     * (integer), class weights in[2] [C] or NULL, label smoothing f[0],
     * ignore_index i[0], reduction i[1] (kn_reduction). Row loss as NLL's on
     * log_softmax(logits); out[0] the loss (0-d for mean and sum, [N] for
     * none), out[1] [N] each row's log-sum-exp, out[2] 0-d the sum of the
     * rows' weights (mean divides by it). All in the logits' dtype. */
    KN_OP_CROSS_ENTROPY,
    /* out[0] [N, C] = d loss / d logits for the grad in[0] of out[0] above
     * (0-d, or [N] for none); in[1] logits, in[2] targets, in[3] weights or
     * NULL, in[4] log-sum-exp [N], in[5] weight sum (0-d); same f[0], i[0],
     * i[1]. Ignored rows get zeros. */
    KN_OP_CROSS_ENTROPY_BACKWARD,
    /* Batch norm of in[0] [N, C, L] (L = 1 for 2-D input, viewed as 3-D),
     * weight in[1] [C] or NULL, bias in[2] [C] or NULL, running mean in[3]
     * and var in[4] [C] or NULL, and the integer 0-d batch count in[5] or
     * NULL (updated in place when training: running stats move with
     * momentum, the count goes up by one; the call marks them in `inout`),
     * i[0] = training, f[0] = momentum, f[1] = eps. out[0] y; out[1] mean
     * [C] and out[2] invstd [C] (the statistics used, saved for backward).
     * Fused dropout: f[2] = p > 0 applies dropout to y (Philox seed i[1],
     * offset i[2], element k of y in contiguous order, as KN_OP_DROPOUT). */
    KN_OP_BATCH_NORM,
    /* in[0] grad of y, in[1] x, in[2] weight or NULL, in[3] mean, in[4]
     * invstd; i[0] training. out[0] grad x, out[1] grad weight [C] (may be
     * NULL), out[2] grad bias [C] (may be NULL). Fused neighbours: f[0] = p
     * > 0: in[0] is the grad of a dropout of y (seed i[1], offset i[2]), so
     * it is first passed back through it; i[3] = 1: x is a ReLU's output and
     * grad x is passed back through the ReLU (zero where x <= 0); out[3] [C]
     * (or NULL, and only with out[0]): the sums of grad x over N and L (after
     * the ReLU): the bias gradient of a Linear before it. */
    KN_OP_BATCH_NORM_BACKWARD,
    /* Layer norm over the trailing i[0] elements (in[0] viewed as [R, i[0]]),
     * weight in[1], bias in[2] (i[0] elements, or NULL), eps f[0]. out[0] y,
     * out[1] mean [R], out[2] invstd [R]. */
    KN_OP_LAYER_NORM,
    /* in[0] grad y, in[1] x, in[2] weight or NULL, in[3] mean, in[4] invstd;
     * out[0] grad x, out[1] grad weight (or NULL), out[2] grad bias (or NULL). */
    KN_OP_LAYER_NORM_BACKWARD,
    /* Random numbers into contiguous out[0] from Philox: i[0] =
     * kn_random_kind, i[1] = seed, i[2] = counter offset, f[0], f[1] =
     * (lo, hi) for UNIFORM, (mean, std) for NORMAL, (low, high) for INT.
     * Element k uses counter (offset + k / 4), word k % 4 (NORMAL: counter
     * offset + k / 2, words 2*(k%2), 2*(k%2)+1), see src/core/random.c. */
    KN_OP_RANDOM,
    /* out[0] = in[0] * keep / (1 - p), out[1] (KN_U8, may be NULL) = keep,
     * keep = uniform(k) >= p with uniform drawn as KN_RANDOM_UNIFORM;
     * f[0] = p, i[1] = seed, i[2] = offset. */
    KN_OP_DROPOUT,
    /* Adam / AdamW in place on contiguous out[0] param, out[1] m, out[2] v
     * with gradient in[0] and the step count t in in[1] (a 0-d float32 on
     * the same device, already counting this step: read on the device, so a
     * captured graph replays correctly); f: lr, beta1, beta2, eps,
     * weight_decay; i[0] = 1 for AdamW. Bias corrections 1 - beta^t. */
    KN_OP_ADAM,
    /* SGD in place: out[0] param, out[1] momentum buffer (or NULL); in[0]
     * grad; f: lr, momentum, dampening, weight_decay; i[0] nesterov, i[1] =
     * 1 when the buffer is fresh (first step). */
    KN_OP_SGD,
    KN_OP_COUNT
} kn_op;

typedef enum {
    KN_UNARY_NEG = 0, KN_UNARY_EXP, KN_UNARY_LOG, KN_UNARY_SQRT, KN_UNARY_ABS,
    KN_UNARY_RELU, KN_UNARY_LEAKY_RELU, KN_UNARY_GELU, KN_UNARY_SIGMOID, KN_UNARY_TANH,
    KN_UNARY_SOFTPLUS, KN_UNARY_CLAMP, KN_UNARY_POW_SCALAR, KN_UNARY_ADD_SCALAR,
    KN_UNARY_MUL_SCALAR, KN_UNARY_RSUB_SCALAR, KN_UNARY_RSQRT, KN_UNARY_COUNT
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

/* Activations a GEMM applies in its epilogue (KN_OP_MATMUL i[0]). */
typedef enum { KN_ACT_NONE = 0, KN_ACT_RELU } kn_activation;

const char *kn__unary_name(kn_unary_fn f);
const char *kn__binary_name(kn_binary_fn f);
const char *kn__reduce_name(kn_reduce_fn f);
const char *kn__op_name(kn_op op);

/* Room for KN_EMBEDDING_CAT_MAX tables (and the codes) in one call. */
#define KN_EMBEDDING_CAT_MAX 16
#define KN_CALL_MAX_IN (KN_EMBEDDING_CAT_MAX + 1)
#define KN_CALL_MAX_OUT KN_EMBEDDING_CAT_MAX
typedef struct {
    kn_op op;
    kn_device device;
    kn_tensor *in[KN_CALL_MAX_IN];
    kn_tensor *out[KN_CALL_MAX_OUT];
    int64_t i[8];
    double f[8];
    /* Bit k set: the kernel updates in[k] in place (batch norm's running
     * statistics); the CPU fallback copies such inputs back like outputs. */
    unsigned inout;
} kn_call;

typedef kn_status (*kn_kernel)(const kn_call *c);

/* The backend contract (DESIGN.md). Probe, memory and copies are required;
 * a NULL kernel means "not here": the core runs the op on the CPU. */
typedef struct kn_backend {
    const char *name; /* "cpu", "cuda" */
    kn_device_kind kind;
    int (*device_count)(void);
    const char *(*device_name)(int index);
    kn_status (*memory)(int index, size_t *free_bytes, size_t *total_bytes);
    /* NULL when out of memory (the core writes the message). */
    void *(*alloc)(int index, size_t nbytes);
    void (*free)(int index, void *ptr, size_t nbytes);
    kn_status (*copy_h2d)(int index, void *dst, const void *src, size_t nbytes);
    kn_status (*copy_d2h)(int index, void *dst, const void *src, size_t nbytes);
    kn_status (*copy_d2d)(int index, void *dst, const void *src, size_t nbytes);
    kn_status (*synchronize)(int index);
    kn_status (*memory_stats)(int index, kn_memory_stats *out); /* optional */
    kn_status (*empty_cache)(int index);                          /* optional */
    /* Capture and replay (optional; see kiln/graph.h). graph_begin starts
     * recording the device's stream, graph_end returns the recording (which
     * keeps the memory allocated during capture for itself). */
    kn_status (*graph_begin)(int index);
    void *(*graph_end)(int index, kn_status *status);
    kn_status (*graph_launch)(int index, void *graph);
    void (*graph_free)(int index, void *graph);
    bool is_real_gpu; /* may kn_device_default pick it */
    kn_kernel kernels[KN_OP_COUNT];
} kn_backend;

/* Adds a backend (tests use this to add a kernel-less one). */
kn_status kn__backend_register(const kn_backend *b);
const kn_backend *kn__backend(kn_device_kind kind);
const kn_backend *kn__backend_cpu(void);

/* Runs c on c->device: the backend's kernel, or the CPU fallback. */
kn_status kn__run(kn_call *c);
/* Name used in fallback counters: "exp", "matmul", ... */
const char *kn__call_name(const kn_call *c);

/* Copies bytes between any two devices (through the host when needed). */
kn_status kn__copy_bytes(kn_device dst_dev, void *dst, kn_device src_dev, const void *src,
                         size_t nbytes);

/* ---- randomness (src/core/random.c) ------------------------------------------ */
/* Reserves the Philox counters for n elements (per_counter elements each:
 * 4, or 2 for normals); returns the first. gen NULL: the global one. */
uint64_t kn__generator_take(kn_generator *g, int64_t n, int per_counter);
/* One Philox block for counter (low 64 bits) under a 64-bit seed. */
void kn__random_block(uint64_t seed, uint64_t counter, uint32_t out[4]);
/* Element k of a random op (see KN_OP_RANDOM). */
double kn__random_value(int kind, uint64_t seed, uint64_t offset, int64_t k, double a, double b);

/* ---- threads (src/core/threads.c) -------------------------------------------- */
/* Runs fn over [0, n) in chunks of at least `grain` on the pool; the caller's
 * thread takes part. Nested calls run serially. */
typedef void (*kn_range_fn)(int64_t begin, int64_t end, void *ctx);
void kn__parallel_for(int64_t n, int64_t grain, kn_range_fn fn, void *ctx);

/* ---- autograd (src/autograd) ----------------------------------------------- */
#define KN_NODE_MAX_IN KN_EMBEDDING_CAT_MAX
#define KN_NODE_MAX_SAVED 6
typedef struct kn_node kn_node;
/* Computes grad_in[k] (a new tensor, or NULL for "no gradient") for each input
 * k with node->needs[k]; grad_out is the gradient of the node's output. */
typedef kn_status (*kn_backward_fn)(kn_node *node, kn_tensor *grad_out, kn_tensor **grad_in);
struct kn_node {
    const char *name;
    kn_backward_fn backward;
    int n_in;
    kn_tensor *in[KN_NODE_MAX_IN];     /* retained; grads flow to these */
    bool needs[KN_NODE_MAX_IN];
    kn_tensor *saved[KN_NODE_MAX_SAVED]; /* retained detached aliases */
    uint32_t saved_version[KN_NODE_MAX_SAVED]; /* storage versions when saved */
    int64_t out_ndim;
    int64_t out_shape[KN_MAX_DIMS];
    kn_dtype out_dtype;
    int64_t i[8];
    double f[8];
    /* backward bookkeeping */
    kn_tensor *grad_acc;
    uint64_t visit;
    bool consumed;
};
/* When grad mode is on and any input requires grad: attaches a node to out and
 * returns it (the caller may save tensors and parameters); otherwise NULL. */
kn_node *kn__record(kn_tensor *out, const char *name, kn_backward_fn backward, int n_in,
                    kn_tensor *const *inputs);
/* Saves a detached alias of t in slot k. */
void kn__save(kn_node *node, int k, kn_tensor *t);
void kn__node_free(kn_node *node);
/* Sums grad over broadcast dims so it has the given shape. New tensor. */
kn_tensor *kn__sum_to(kn_tensor *grad, int ndim, const int64_t *shape);

#endif
