/* The op layer's complex pieces (complex.c) that the other op families call. */
#ifndef KILN_OPS_COMPLEX_INTERNAL_H
#define KILN_OPS_COMPLEX_INTERNAL_H

#include "ops_internal.h"

/* a (f) b with a complex operand: + and - on the real views; any other
 * function fails naming itself and the dtype. */
kn_tensor *kn__complex_binary(kn_binary_fn f, kn_tensor *a, kn_tensor *b);
/* f(a) of a complex a: negation and scaling on the real view, abs as |z|;
 * any other function fails naming itself and the dtype. */
kn_tensor *kn__complex_unary(kn_unary_fn f, kn_tensor *a, double p0, double p1);

#endif
