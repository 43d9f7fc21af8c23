/* Fused forms of layer sequences, for nn's Sequential (and its tests). Each
 * computes exactly what the ops it stands for compute, as one tape node whose
 * forward and backward run as few kernels as the backend allows. */
#ifndef KILN_OPS_FUSED_H
#define KILN_OPS_FUSED_H

#include "core/internal.h"

/* act(linear(x, w, bias)): the activation runs in the GEMM's epilogue. */
kn_tensor *kn__linear_act(kn_tensor *x, kn_tensor *w, kn_tensor *bias, kn_activation act);

/* kn_batch_norm, and num_batches (an integer 0-d tensor, or NULL) counts
 * the training batches on the device (so a replayed graph counts too). */
kn_tensor *kn__batch_norm_ex(kn_tensor *x, kn_tensor *running_mean, kn_tensor *running_var, kn_tensor *weight,
                             kn_tensor *bias, kn_tensor *num_batches, bool training, double momentum, double eps);

/* The batch norm of a fused block and the dropout after it. */
typedef struct {
    kn_tensor *running_mean, *running_var, *weight, *bias, *num_batches; /* as kn__batch_norm_ex */
    bool training;
    double momentum, eps;
    double dropout;           /* p in [0, 1) of a Dropout after the norm (0: none or not training) */
    struct kn_generator *gen; /* the dropout's generator; NULL: the global one */
} kn__bn_opts;

/* dropout(batch_norm(act(linear(x, w, bias)))) for x [N, in]: one GEMM
 * (bias and activation in its epilogue) and one batch-norm kernel (dropout
 * inside) forward; backward one batch-norm kernel (through the dropout and
 * the ReLU, with the bias gradient) and the two GEMMs. */
kn_tensor *kn__linear_bn(kn_tensor *x, kn_tensor *w, kn_tensor *bias, kn_activation act, const kn__bn_opts *bn);

#endif
