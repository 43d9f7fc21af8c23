/* The composites of the fused ops (composite.c, composite_nn.c) and the
 * small toolkit they share: a scope with gradients off on the call's
 * device, views wrapped as tensors, results copied into output views. */
#ifndef KILN_OPS_COMPOSITE_H
#define KILN_OPS_COMPOSITE_H

#include "ops_internal.h"

typedef struct {
    kn_device dev;
    kn_scope scope;
    const kn_fault_context *outer; /* the fault context kn__cx_end restores */
} kn__cx;

/* Opens the scope (gradients off); kn__cx_end closes it, restores the fault
 * context and returns s. */
kn_status kn__cx_begin(kn__cx *cx, kn_device dev);
kn_status kn__cx_end(kn__cx *cx, kn_status s);
/* Names the index faults of what the composite launches from here on
 * (core/internal.h): for backends that find them after it has returned. */
void kn__cx_fault_context(kn__cx *cx, const kn_fault_context *c);
/* A view as a (scoped) tensor; NULL for an absent view. */
kn_tensor *kn__cx_wrap(kn__cx *cx, const kn_operand *v);
kn_tensor *kn__cx_wrap_as(kn__cx *cx, const kn_operand *v, int ndim, const int64_t *shape);
/* Copies val (converting its dtype; same numel) into out; nothing when out is absent. */
kn_status kn__cx_put(kn__cx *cx, const kn_operand *out, kn_tensor *val);
kn_tensor *kn__cx_scalar(kn__cx *cx, double v, kn_dtype dt);
/* Error paths only: the first entry of index outside [0, limit) (skipping
 * *skip when given), read on the host; false when there is none. */
bool kn__cx_bad_index(kn__cx *cx, const kn_operand *index, int64_t limit, const int64_t *skip, int64_t *value);
/* keep = uniform(k) >= p, the dropout mask of (seed, offset) (KN_BOOL). */
kn_tensor *kn__cx_keep_mask(kn__cx *cx, int ndim, const int64_t *shape, double p, int64_t seed, int64_t offset);
/* x * keep / (1 - p); *keep_out (may be NULL) gets the mask. */
kn_tensor *kn__cx_dropout(kn__cx *cx, kn_tensor *x, double p, int64_t seed, int64_t offset, kn_tensor **keep_out);

kn_status kn__composite_softmax(kn_device dev, kn_softmax_args *a);
kn_status kn__composite_softmax_backward(kn_device dev, kn_softmax_backward_args *a);
kn_status kn__composite_nll(kn_device dev, kn_nll_args *a);
kn_status kn__composite_nll_backward(kn_device dev, kn_nll_backward_args *a);
kn_status kn__composite_cross_entropy(kn_device dev, kn_cross_entropy_args *a);
kn_status kn__composite_cross_entropy_backward(kn_device dev, kn_cross_entropy_backward_args *a);
kn_status kn__composite_batch_norm(kn_device dev, kn_batch_norm_args *a);
kn_status kn__composite_batch_norm_backward(kn_device dev, kn_batch_norm_backward_args *a);
kn_status kn__composite_layer_norm(kn_device dev, kn_layer_norm_args *a);
kn_status kn__composite_layer_norm_backward(kn_device dev, kn_layer_norm_backward_args *a);
/* The vision ops' composites (composite_vision.c): conv2d, pools and their backwards. */
kn_status kn__composite_vision(kn_op op, kn_device dev, void *args);
/* The FFT's composite (composite_fft.c): a DFT as one matmul on the pairs. */
kn_status kn__composite_fft(kn_device dev, kn_fft_args *a);
/* RFFT and IRFFT (composite_fft.c): through the FFT op and views. */
kn_status kn__composite_rfft(kn_device dev, kn_rfft_args *a);
kn_status kn__composite_irfft(kn_device dev, kn_irfft_args *a);

#endif
