/* CPU backend internals: a strided multi-operand iterator and the kernels. */
#ifndef KILN_CPU_INTERNAL_H
#define KILN_CPU_INTERNAL_H

#include "core/internal.h"

/* Up to 4 operands of one shape (inputs already broadcast to it). Dimensions
 * that are contiguous for every operand are merged, so the inner loop is as
 * long as possible. */
#define KN_ITER_MAX 4
typedef struct {
    int n_ops;
    int ndim; /* after merging; >= 1 */
    int64_t shape[KN_MAX_DIMS];
    int64_t stride[KN_ITER_MAX][KN_MAX_DIMS]; /* in bytes */
    char *base[KN_ITER_MAX];
    int64_t numel;
} kn_iter;

void kn__iter_init(kn_iter *it, int n_ops, kn_tensor *const *ops);
/* Calls fn for each run of the innermost dimension, for outer indices in
 * [begin, end) (an outer index enumerates all but the innermost dim). */
typedef void (*kn_inner_fn)(char **ptrs, const int64_t *strides, int64_t n, void *ctx);
int64_t kn__iter_outer(const kn_iter *it);
void kn__iter_run(const kn_iter *it, int64_t begin, int64_t end, kn_inner_fn fn, void *ctx);
/* Runs the whole iteration, in parallel when it is large. */
void kn__iter_for_each(const kn_iter *it, kn_inner_fn fn, void *ctx);

/* Kernels (one per op slot). */
kn_status kn__cpu_copy(const kn_call *c);
kn_status kn__cpu_fill(const kn_call *c);
kn_status kn__cpu_arange(const kn_call *c);
kn_status kn__cpu_unary(const kn_call *c);
kn_status kn__cpu_unary_backward(const kn_call *c);
kn_status kn__cpu_binary(const kn_call *c);
kn_status kn__cpu_where(const kn_call *c);
kn_status kn__cpu_reduce(const kn_call *c);
kn_status kn__cpu_matmul(const kn_call *c);
kn_status kn__cpu_index_select(const kn_call *c);
kn_status kn__cpu_gather(const kn_call *c);
kn_status kn__cpu_index_add(const kn_call *c);
kn_status kn__cpu_embedding_cat(const kn_call *c);
kn_status kn__cpu_embedding_cat_backward(const kn_call *c);
kn_status kn__cpu_softmax(const kn_call *c);
kn_status kn__cpu_softmax_backward(const kn_call *c);
kn_status kn__cpu_nll(const kn_call *c);
kn_status kn__cpu_nll_backward(const kn_call *c);
kn_status kn__cpu_cross_entropy(const kn_call *c);
kn_status kn__cpu_cross_entropy_backward(const kn_call *c);
kn_status kn__cpu_batch_norm(const kn_call *c);
kn_status kn__cpu_batch_norm_backward(const kn_call *c);
kn_status kn__cpu_layer_norm(const kn_call *c);
kn_status kn__cpu_layer_norm_backward(const kn_call *c);
kn_status kn__cpu_random(const kn_call *c);
kn_status kn__cpu_dropout(const kn_call *c);
kn_status kn__cpu_adam(const kn_call *c);
kn_status kn__cpu_sgd(const kn_call *c);


#endif
