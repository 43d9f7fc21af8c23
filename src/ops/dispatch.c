/* The op layer's entry to the backends: a fused op that the device's backend
 * cannot run goes to its composite on the same device, never to the host. */
#include "ops_internal.h"
#include "core/complex.h"

kn_status kn__run(kn_op op, kn_device dev, void *args) {
    /* No kernel computes in a complex dtype: real views, or an error naming the op. */
    if (kn__complex_made() && kn__args_complex(op, args)) return kn__launch_complex(op, dev, args);
    if (kn__op_tier(op) == KN_TIER_FUSED && !kn__backend_supports(op, dev, args))
        return kn__composite(op, dev, args);
    return kn__launch(op, dev, args);
}
