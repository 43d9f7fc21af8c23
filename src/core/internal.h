/* kiln internals shared by the core, the ops and the backends.
 * Not installed; nothing outside src/ (and tests) includes it. */
#ifndef KILN_INTERNAL_H
#define KILN_INTERNAL_H

#include "kiln.h"

#include "backend.h"
#include "backends/common/dtype.h"

#include <stdarg.h>

/* ---- errors ---------------------------------------------------------------- */
/* kn__err: core/backend.h. */
/* The NULL-input convention: records "op: input N is NULL" only when no error
 * is pending (so the first cause stays visible). */
void kn__err_null(const char *op);
/* How many errors this thread has recorded: whether a callee recorded one
 * (a backend that says why an allocation failed). */
uint64_t kn__err_seq(void);
/* A fault context: what a composite calls the index faults of the
 * primitives it launches. A backend that finds a fault only when the host
 * next waits (Vulkan) cannot let the composite rename it, so it keeps the
 * context of each dispatch and reports "<op>: <item> <v> is out of range
 * for <limit> <range>", as the fused kernel would. Per thread; strings must
 * outlive the context (string literals). */
typedef struct {
    const char *op, *item, *range; /* "cross_entropy", "target", "classes" */
} kn_fault_context;
/* Makes c (NULL: none) the calling thread's context; returns the one it replaces. */
const kn_fault_context *kn__fault_context_set(const kn_fault_context *c);
const kn_fault_context *kn__fault_context(void);
/* kn__fault_context_get (backend.h) gives it to a backend, which sees no core types. */

/* ---- storage and tensors ---------------------------------------------------- */
typedef struct kn_storage {
    int64_t refcount;
    void *data;     /* device pointer (host pointer for the CPU) */
    size_t nbytes;
    kn_device device;
    bool external;  /* memory not ours: not freed */
    uint32_t version; /* bumped by every public in-place write (copy_, fill_) */
    /* Memory lent by another owner (DLPack import, src/io/dlpack.c): called once,
     * instead of the backend's free, when the last reference goes. */
    void (*release)(struct kn_storage *s);
    void *release_ctx;
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

/* Element access by dtype (kn__load, kn__store, ...): backends/common/dtype.h. */

/* ---- scopes ------------------------------------------------------------- */
/* Internal scratch scopes (used by composite ops and backward) work like the
 * public ones; kn__scope_keep moves one tensor out to the enclosing level. */

/* ---- ops and backends ----------------------------------------------------------
 * The contract is core/backend.h (the op table is core/ops.def). The op
 * layer fills an op's kn_<name>_args with views of its tensors (kn__view) and
 * calls kn__run (src/ops/ops_internal.h); the core's part is below. */

/* A view of t for a kernel (NULL t: an absent operand). */
kn_operand kn__view(const kn_tensor *t);
/* A tensor over a view's memory on dev (not owned: never freed; refcount 1,
 * no scope), so composites can run ops on a kernel's operands. */
kn_tensor *kn__wrap_view(const kn_operand *v, kn_device dev);

/* The registry: backend of a device kind (NULL when absent), and the CPU's. */
const kn_backend *kn__backend(int kind);
const kn_backend *kn__backend_cpu(void);
/* Number of registered kinds (the built-in ones and any added at run time). */
int kn__backend_kinds(void);

/* Does dev's backend have a kernel for op that takes these arguments (its
 * dtypes and supports())? */
bool kn__backend_supports(kn_op op, kn_device dev, const void *args);
/* Runs op on dev with the backend's kernel, or (when it has none for these
 * arguments) with the CPU kernel on host copies of the operands: counted
 * and warned once per (op, device kind). args is restored before return. */
kn_status kn__launch(kn_op op, kn_device dev, void *args);

/* Copies bytes between any two devices (through the host when needed). */
kn_status kn__copy_bytes(kn_device dst_dev, void *dst, kn_device src_dev, const void *src,
                         size_t nbytes);

/* ---- randomness (src/core/random.c) ------------------------------------------ */
/* Reserves the Philox counters for n elements (per_counter elements each:
 * 4, or 2 for normals); returns the first. gen NULL: the global one. */
uint64_t kn__generator_take(kn_generator *g, int64_t n, int per_counter);
/* The element mapping (kn__random_value): backends/common/philox.h. */

/* ---- autograd (src/autograd) ----------------------------------------------- */
typedef struct kn_node kn_node;
/* Computes grad_in[k] (a new tensor, or NULL for "no gradient") for each input
 * k with node->needs[k]; grad_out is the gradient of the node's output. */
typedef kn_status (*kn_backward_fn)(kn_node *node, kn_tensor *grad_out, kn_tensor **grad_in);
struct kn_node {
    const char *name;
    kn_backward_fn backward;
    int n_in;
    kn_tensor **in; /* [n_in], retained; grads flow to these */
    bool *needs;    /* [n_in] */
    int n_saved;
    kn_tensor **saved;        /* [n_saved] retained detached aliases (kn__save) */
    uint32_t *saved_version;  /* storage versions when saved */
    void *state;              /* the op's own typed state (kn__record's state_size bytes, zeroed) */
    int64_t out_ndim;
    int64_t out_shape[KN_MAX_DIMS];
    kn_dtype out_dtype;
    /* backward bookkeeping */
    kn_tensor *grad_acc;
    uint64_t visit;
    bool consumed;
};
/* When grad mode is on and any input requires grad: attaches a node to out and
 * returns it, with state_size zeroed bytes of op state at node->state (the
 * caller saves tensors and fills the state); otherwise NULL. */
kn_node *kn__record(kn_tensor *out, const char *name, kn_backward_fn backward, int n_in,
                    kn_tensor *const *inputs, size_t state_size);
/* The node's state as its op's type: st_type *st = KN_STATE(node, st_type). */
#define KN_STATE(node, type) ((type *)(node)->state)
/* Saves a detached alias of t in slot k (slots grow as needed). */
void kn__save(kn_node *node, int k, kn_tensor *t);
void kn__node_free(kn_node *node);
/* Backward one node at a time, so the dist layer can walk several ranks'
 * tapes in lockstep (kn_backward_hooked is begin, then end). begin checks
 * and sorts (NULL with an error); step runs the next node and its ready
 * hooks, setting *done when none is left or on error; end runs what is
 * left, spends the tape and frees b, returning the first error. Autograd
 * is off from begin to end. */
typedef struct kn__backward kn__backward;
kn__backward *kn__backward_begin(kn_tensor *root, kn_tensor *grad, kn_grad_ready_fn ready, void *ctx);
kn_status kn__backward_step(kn__backward *b, bool *done);
kn_status kn__backward_end(kn__backward *b);
/* Sums grad over broadcast dims so it has the given shape. New tensor. */
kn_tensor *kn__sum_to(kn_tensor *grad, int ndim, const int64_t *shape);

#endif
