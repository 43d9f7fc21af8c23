/* Internals of modules shared by module.c and the layers. */
#ifndef KILN_NN_INTERNAL_H
#define KILN_NN_INTERNAL_H

#include "core/internal.h"

/* Sets the text inside the parentheses of the module's printed form, as
 * PyTorch's extra_repr: "in_features=12, out_features=200, bias=True". */
void kn__module_set_repr(kn_module *m, const char *fmt, ...) KN_PRINTF(2, 3);

/* The module's forward function (nn's Sequential recognises its own layers by it). */
kn_forward_fn kn__module_forward_fn(const kn_module *m);

/* Sequential's fusion of layer runs (layers.c): on unless KILN_FUSE=0; tests
 * compare both ways. */
void kn__nn_set_fusion(bool on);

#endif
