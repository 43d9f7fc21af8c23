/* Internals of modules shared by module.c and the layers. */
#ifndef KILN_NN_INTERNAL_H
#define KILN_NN_INTERNAL_H

#include "core/internal.h"

/* Sets the text inside the parentheses of the module's printed form, as
 * PyTorch's extra_repr: "in_features=12, out_features=200, bias=True". */
void kn__module_set_repr(kn_module *m, const char *fmt, ...) KN_PRINTF(2, 3);

#endif
