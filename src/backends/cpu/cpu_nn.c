/* CPU kernels for softmax, nll, batch norm, layer norm. (stubs, being written) */
#include "cpu_internal.h"

#define STUB(n) kn_status kn__cpu_##n(const kn_call *c) { (void)c; return kn__err(KN_ERR_UNSUPPORTED, #n ": not yet"); }
STUB(softmax) STUB(softmax_backward) STUB(nll) STUB(nll_backward) STUB(batch_norm)
STUB(batch_norm_backward) STUB(layer_norm) STUB(layer_norm_backward)
