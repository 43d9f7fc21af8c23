#version 450
// copy: out (operand 0) <- x (operand 1), any strides, broadcast, dtype conversion.
#include "common.glsl"

void main() {
    uint n = P(0), od = P(OPB(0) + 1u), xd = P(OPB(1) + 1u);
    for (uint i = thread_id(); i < n; i += thread_count()) {
        uint ao = addr_of(0u, i), ax = addr_of(1u, i);
        if (od == xd) st_bits(0u, ao, dsize(od), ld_bits(1u, ax, dsize(xd)));
        else if (!is_float(od) && !is_float(xd)) st_int(0u, ao, ld_int(1u, ax));
        else st_real(0u, ao, ld_real(1u, ax));
    }
}
