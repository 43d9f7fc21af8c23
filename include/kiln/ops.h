/* kiln — operations on tensors. Each op records itself for autograd when an
 * input requires grad, accepts NULL inputs (returning NULL) and names itself
 * in its error messages. Binary ops broadcast like NumPy. */
#ifndef KILN_OPS_H
#define KILN_OPS_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise: arithmetic and comparison -------------------------------- */
kn_tensor *kn_add(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_sub(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_mul(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_div(kn_tensor *a, kn_tensor *b); /* true division: integers give float32 */
kn_tensor *kn_pow(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_maximum(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_minimum(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_add_scalar(kn_tensor *a, double s);
kn_tensor *kn_mul_scalar(kn_tensor *a, double s);
kn_tensor *kn_pow_scalar(kn_tensor *a, double s);
kn_tensor *kn_rsub_scalar(kn_tensor *a, double s); /* s - a */
/* Comparisons give KN_BOOL tensors. */
kn_tensor *kn_eq(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_ne(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_lt(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_le(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_gt(kn_tensor *a, kn_tensor *b);
kn_tensor *kn_ge(kn_tensor *a, kn_tensor *b);
/* cond ? a : b, broadcasting all three. */
kn_tensor *kn_where(kn_tensor *cond, kn_tensor *a, kn_tensor *b);

/* ---- elementwise: functions ----------------------------------------------- */
kn_tensor *kn_neg(kn_tensor *a);
kn_tensor *kn_exp(kn_tensor *a);
kn_tensor *kn_log(kn_tensor *a);
kn_tensor *kn_sqrt(kn_tensor *a);
kn_tensor *kn_abs(kn_tensor *a);
kn_tensor *kn_clamp(kn_tensor *a, double lo, double hi); /* use +-INFINITY for one side */
kn_tensor *kn_relu(kn_tensor *a);
kn_tensor *kn_leaky_relu(kn_tensor *a, double negative_slope);
kn_tensor *kn_gelu(kn_tensor *a); /* exact (erf) form */
kn_tensor *kn_sigmoid(kn_tensor *a);
kn_tensor *kn_tanh(kn_tensor *a);
kn_tensor *kn_softplus(kn_tensor *a);
kn_tensor *kn_sin(kn_tensor *a); /* radians; integers give float32, as the other functions */
kn_tensor *kn_cos(kn_tensor *a);
kn_tensor *kn_tan(kn_tensor *a);

/* ---- reductions over any dims (ndims == 0: all dims) ------------------------ */
kn_tensor *kn_sum(kn_tensor *a, int ndims, const int *dims, bool keepdim);
kn_tensor *kn_mean(kn_tensor *a, int ndims, const int *dims, bool keepdim);
kn_tensor *kn_max(kn_tensor *a, int ndims, const int *dims, bool keepdim);
kn_tensor *kn_min(kn_tensor *a, int ndims, const int *dims, bool keepdim);
/* correction 1 is Bessel's (unbiased), 0 the population variance. */
kn_tensor *kn_var(kn_tensor *a, int ndims, const int *dims, int correction, bool keepdim);
kn_tensor *kn_std(kn_tensor *a, int ndims, const int *dims, int correction, bool keepdim);
/* Index (KN_I64) of the largest / smallest element along dim (first one on ties). */
kn_tensor *kn_argmax(kn_tensor *a, int dim, bool keepdim);
kn_tensor *kn_argmin(kn_tensor *a, int dim, bool keepdim);
kn_tensor *kn_sum_all(kn_tensor *a);
kn_tensor *kn_mean_all(kn_tensor *a);

/* ---- linear algebra ---------------------------------------------------------- */
/* Batched, with broadcast batch dims; 1-D operands as in torch.matmul. */
kn_tensor *kn_matmul(kn_tensor *a, kn_tensor *b);
/* x @ weight^T + bias; weight is [out, in]; bias may be NULL. */
kn_tensor *kn_linear(kn_tensor *x, kn_tensor *weight, kn_tensor *bias);

/* ---- joining, splitting, indexing ------------------------------------------ */
kn_tensor *kn_concat(int n, kn_tensor *const *ts, int dim);
kn_tensor *kn_stack(int n, kn_tensor *const *ts, int dim);
/* Splits into pieces of split_size (the last may be smaller); fills out (cap
 * entries) with views and returns their number, or -1 on error. */
int kn_split(kn_tensor *t, int64_t split_size, int dim, kn_tensor **out, int cap);
/* out[i] = a[index[i]] along dim; index is integer, 1-D. */
kn_tensor *kn_index_select(kn_tensor *a, int dim, kn_tensor *index);
/* torch.gather: out[i][j] = a[index[i][j]][j] for dim 0, and so on. */
kn_tensor *kn_gather(kn_tensor *a, int dim, kn_tensor *index);
/* Returns a copy of a with src[i] added at a[index[i]] along dim. */
kn_tensor *kn_index_add(kn_tensor *a, int dim, kn_tensor *index, kn_tensor *src);
/* weight[indices]: indices of any shape, result shape indices.shape + [dim]. */
kn_tensor *kn_embedding(kn_tensor *weight, kn_tensor *indices);
/* n tables looked up and joined: indices [N, n] (column k indexes
 * weights[k] [V_k, D_k]), result [N, D_0 + ... + D_{n-1}]. The same as
 * concatenating kn_embedding(weights[k], column k) along dim 1, as one op
 * (a tabular model's categorical columns, as in fastai or the PyTorch
 * tabular tutorial). */
kn_tensor *kn_embedding_cat(int n, kn_tensor *const *weights, kn_tensor *indices);
/* Rows where mask is true, as a 1-D tensor of a's elements (no autograd). */
kn_tensor *kn_masked_select(kn_tensor *a, kn_tensor *mask);

/* ---- neural-network functions ------------------------------------------------ */
kn_tensor *kn_softmax(kn_tensor *a, int dim);
kn_tensor *kn_log_softmax(kn_tensor *a, int dim);

typedef enum { KN_REDUCTION_MEAN = 0, KN_REDUCTION_SUM, KN_REDUCTION_NONE } kn_reduction;

/* ---- losses ------------------------------------------------------------------
 * One form for all: kn_<name>_loss(input, target, opts), PyTorch's functional
 * losses; opts NULL means kn_loss_opts_default(). Start from the defaults and
 * set what you need: an option the loss does not use is an error, not
 * ignored. Elementwise losses want input and target of one shape (no
 * broadcasting) and compute in a floating dtype. */
typedef struct {
    kn_tensor *weight;      /* cross_entropy, nll: per-class [C]; bce, bce_with_logits:
                             * per-element, broadcast to the input; NULL: none */
    double label_smoothing; /* cross_entropy: 0 .. 1 */
    kn_reduction reduction; /* every loss: mean (default), sum or none */
    int64_t ignore_index;   /* cross_entropy, nll: targets equal to it are skipped; default -100 */
    kn_tensor *pos_weight;  /* bce_with_logits: weight of the positive term, broadcast to the
                             * input (e.g. [C] for [N, C]); NULL: 1 */
    double delta;           /* huber: where the loss turns linear; default 1 */
    double beta;            /* smooth_l1: the same (the quadratic part divided by beta); default 1 */
} kn_loss_opts;
/* Defaults: mean, no weights, no smoothing, ignore_index -100, delta 1, beta 1. */
kn_loss_opts kn_loss_opts_default(void);

/* logits [N, C], target [N] of class indices (integer); kn_cross_entropy is
 * kn_cross_entropy_ex with the defaults. */
kn_tensor *kn_cross_entropy(kn_tensor *logits, kn_tensor *target);
kn_tensor *kn_cross_entropy_ex(kn_tensor *logits, kn_tensor *target, const kn_loss_opts *opts);
/* log_probs [N, C], target [N]. */
kn_tensor *kn_nll_loss(kn_tensor *log_probs, kn_tensor *target, const kn_loss_opts *opts);
/* (input - target)^2; kn_mse_loss is the older form with only a reduction. */
kn_tensor *kn_mse_loss_ex(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts);
kn_tensor *kn_mse_loss(kn_tensor *input, kn_tensor *target, kn_reduction reduction);
/* |input - target| */
kn_tensor *kn_l1_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts);
/* d = input - target: |d| < delta ? d^2 / 2 : delta (|d| - delta / 2) */
kn_tensor *kn_huber_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts);
/* |d| < beta ? d^2 / (2 beta) : |d| - beta / 2 (beta 0: l1) */
kn_tensor *kn_smooth_l1_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts);
/* input: probabilities in [0, 1] (not checked: outside gives NaN); target
 * in [0, 1]. -w (t log(x) + (1 - t) log(1 - x)), each log clamped at -100
 * as PyTorch, so the loss and its gradients stay finite at 0 and 1 (the
 * target's too, where PyTorch's is infinite). */
kn_tensor *kn_bce_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts);
/* input: logits. bce_loss of sigmoid(input), computed stably (no overflow
 * for any logit), with pos_weight p: -w (p t log s + (1 - t) log(1 - s)). */
kn_tensor *kn_bce_with_logits_loss(kn_tensor *input, kn_tensor *target, const kn_loss_opts *opts);

/* x [N, C] or [N, C, L]. In training, batch statistics are used and
 * running_mean/var (may be NULL) updated in place with momentum; otherwise the
 * running statistics are used. weight/bias may be NULL. */
kn_tensor *kn_batch_norm(kn_tensor *x, kn_tensor *running_mean, kn_tensor *running_var,
                         kn_tensor *weight, kn_tensor *bias, bool training, double momentum,
                         double eps);
/* Normalizes over the last `ndims` dims; weight/bias of that shape or NULL. */
kn_tensor *kn_layer_norm(kn_tensor *x, int ndims, kn_tensor *weight, kn_tensor *bias, double eps);

struct kn_generator;
/* Zeroes elements with probability p and scales the rest by 1/(1-p) when
 * training; identity otherwise. gen NULL: the global generator. */
kn_tensor *kn_dropout(kn_tensor *x, double p, bool training, struct kn_generator *gen);

#ifdef __cplusplus
}
#endif
#endif
