/* CPU backend internals: a strided multi-operand iterator over views, scratch
 * memory, small view helpers, and the kernels. */
#ifndef KILN_CPU_INTERNAL_H
#define KILN_CPU_INTERNAL_H

#include "core/backend.h"
#include "backends/common/dtype.h"
#include "backends/common/geometry.h"
#include "backends/common/views.h"

#include <string.h>

/* Up to 4 operands of one shape (inputs already broadcast to it), with the
 * dims merged by kn_geom_init, so the inner loop is as long as possible. */
#define KN_ITER_MAX KN_GEOM_MAX_OPS
typedef struct {
    int n_ops;
    int ndim; /* after merging; >= 1 */
    int64_t shape[KN_MAX_DIMS];
    int64_t stride[KN_ITER_MAX][KN_MAX_DIMS]; /* in bytes */
    char *base[KN_ITER_MAX];
    int64_t numel;
} kn_iter;

void kn__iter_init(kn_iter *it, int n_ops, const kn_operand *const *ops);
/* Calls fn for each run of the innermost dimension, for outer indices in
 * [begin, end) (an outer index enumerates all but the innermost dim). */
typedef void (*kn_inner_fn)(char **ptrs, const int64_t *strides, int64_t n, void *ctx);
int64_t kn__iter_outer(const kn_iter *it);
void kn__iter_run(const kn_iter *it, int64_t begin, int64_t end, kn_inner_fn fn, void *ctx);
/* Runs the whole iteration, in parallel when it is large. */
void kn__iter_for_each(const kn_iter *it, kn_inner_fn fn, void *ctx);

/* ---- views ------------------------------------------------------------------------ */
/* A contiguous view of shape like v's, over data, of dtype dt. */
static inline kn_operand kn__cpu_dense_view(const kn_operand *v, kn_dtype dt, void *data) {
    kn_operand d = *v;
    d.data = data;
    d.dtype = dt;
    int64_t s = 1;
    for (int k = v->ndim - 1; k >= 0; k--) {
        d.stride[k] = s;
        s *= v->shape[k];
    }
    return d;
}

/* ---- scratch ------------------------------------------------------------------------- */
/* Tensor-sized temporaries come from the backend's caching allocator
 * (cpu_backend.c), as the tensors they replace did: a training step asks for
 * the same sizes every time, and large fresh mallocs would page-fault anew. */
void *kn__cpu_scratch(size_t nbytes); /* NULL when out of memory */
void kn__cpu_scratch_free(void *p, size_t nbytes);

/* An operand as a contiguous array: the view itself when it is contiguous and
 * of the wanted dtype, else a converted scratch copy. v.data is NULL for an
 * absent operand. */
typedef struct {
    kn_operand v;
    void *owned;
    size_t nbytes;
} kn_dense;
/* KN_ERR_OOM "<op>: out of memory" when the copy cannot be made. */
kn_status kn__cpu_dense(const char *op, kn_dense *d, const kn_operand *v, kn_dtype dt);
void kn__cpu_dense_free(kn_dense *d);

/* ---- kernels (one per op slot) ----------------------------------------------------------- */
#define KN_OP(ID, name, tier, fields) kn_status kn__cpu_##name(int device, const void *args);
#include "core/ops.def"
#undef KN_OP

#endif
