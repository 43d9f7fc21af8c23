/* Complex tensors in the core: the kernels' side. No backend computes in a
 * complex dtype; a complex operand reaches a kernel only as its real view
 * (each element a pair of floats), which is what the copies, fills and the
 * few elementwise ops that are exact on pairs (+, -, negation, scaling by a
 * real) are rewritten to here. Any other op with a complex operand fails,
 * naming the op and the dtype. */
#ifndef KILN_CORE_COMPLEX_H
#define KILN_CORE_COMPLEX_H

#include "internal.h"

/* Whether any operand of op's arguments is complex. kn__run asks only once
 * a complex tensor has been made (kn__complex_made), so programs without
 * complex tensors pay no operand walk per op. */
bool kn__args_complex(kn_op op, void *args);
/* Called wherever a tensor is given a complex dtype (creation, view_as_complex). */
void kn__complex_note(kn_dtype dt);
bool kn__complex_made(void);
/* Runs op (which has a complex operand) on dev through real views, or fails
 * with "<op>: ... complex64 ...". */
kn_status kn__launch_complex(kn_op op, kn_device dev, void *args);
/* The real view of a complex operand: dtype its parts', one more dim of 2
 * (stride 1), strides doubled. The caller checks v->ndim < KN_MAX_DIMS. */
kn_operand kn__operand_real_view(const kn_operand *v);
/* One part (0 real, 1 imaginary) of a complex operand: its shape, strides
 * doubled, in its parts' dtype. */
kn_operand kn__operand_part(const kn_operand *v, int part);

#endif
