/* Helpers shared by the op families in src/ops. */
#ifndef KILN_OPS_INTERNAL_H
#define KILN_OPS_INTERNAL_H

#include "core/internal.h"

/* Checks that every non-NULL tensor lives on the first one's device. */
bool kn__same_device(const char *op, int n, kn_tensor *const *ts);
/* t converted to dt on its device (t itself, retained, when it already is).
 * Raw reference: the caller releases it. */
kn_tensor *kn__cast_raw(kn_tensor *t, kn_dtype dt);
/* A contiguous raw reference to t's data (t retained when already contiguous). */
kn_tensor *kn__contiguous_raw(kn_tensor *t);
/* Runs op on dev: the backend's kernel when it has one for these arguments;
 * else, for a FUSED op, its composite of primitives (kn__composite) on the
 * same device; else (a primitive the backend lacks) the CPU kernel on host
 * copies, counted and warned once (kn__launch). */
kn_status kn__run(kn_op op, kn_device dev, void *args);
/* The composite of a FUSED op (src/ops/composite*.c): the same result from
 * primitives alone, random draws included, on dev. */
kn_status kn__composite(kn_op op, kn_device dev, void *args);
/* Runs op (kn__run) whose result is the new tensor out (already in args):
 * returns out, or NULL after releasing out when the op fails. */
kn_tensor *kn__run_out(kn_op op, kn_device dev, void *args, kn_tensor *out);
/* A view of t broadcast to shape (ndim >= t's; stride 0 on new and size-1
 * dims): a kernel's input without an alias tensor (kn__expand). */
kn_operand kn__view_expand(const kn_tensor *t, int ndim, const int64_t *shape);
/* Reshapes a contiguous raw tensor (a raw alias). */
kn_tensor *kn__view_raw(kn_tensor *t, int ndim, const int64_t *shape);

/* Result dtype of an elementwise op on a and b, as PyTorch: a 0-d operand
 * (a scalar) does not widen a dimensioned one of the same kind (float32 *
 * a float64 scalar stays float32); a float scalar makes an integer tensor
 * float32. Otherwise kn_dtype_promote. */
kn_dtype kn__result_dtype(const kn_tensor *a, const kn_tensor *b);

/* Linear pieces shared by the linear ops (linalg.c) and the fused blocks
 * (nn_functional.c). kn__linear_check: devices, dtype and shapes of
 * x [..., in], w [out, in], bias [out] or NULL. kn__linear_raw: act(x2 [R,
 * in] @ w^T + bias) as one GEMM, operands of one dtype; raw, no tape node.
 * kn__relu_grad: g where y = relu(h) > 0 (scoped). */
bool kn__linear_check(const char *op, kn_tensor *x, kn_tensor *w, kn_tensor *bias);
kn_tensor *kn__linear_raw(kn_tensor *x2, kn_tensor *w, kn_tensor *bias, kn_activation act);
kn_tensor *kn__relu_grad(kn_tensor *g, kn_tensor *y);

/* The losses' shared pieces (loss.c): a reduction is one of kn_reduction's
 * (else an error naming op); loss reduced by it (scoped). */
bool kn__reduction_check(const char *op, kn_reduction r);
kn_tensor *kn__reduce_loss(kn_tensor *loss, kn_reduction r);

/* Floating dtype an op computes in for input dt (ints become float32). */
static inline kn_dtype kn__float_dtype(kn_dtype dt) { return kn_dtype_is_float(dt) ? dt : KN_F32; }

#endif
