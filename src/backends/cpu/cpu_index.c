/* CPU kernels for indexing: index_select, gather, index_add. (stubs, being written) */
#include "cpu_internal.h"

kn_status kn__cpu_index_select(const kn_call *c) { (void)c; return kn__err(KN_ERR_UNSUPPORTED, "index_select: not yet"); }
kn_status kn__cpu_gather(const kn_call *c) { (void)c; return kn__err(KN_ERR_UNSUPPORTED, "gather: not yet"); }
kn_status kn__cpu_index_add(const kn_call *c) { (void)c; return kn__err(KN_ERR_UNSUPPORTED, "index_add: not yet"); }
