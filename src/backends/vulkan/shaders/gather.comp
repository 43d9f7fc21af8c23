#version 450
// gather: out (0) [index's shape] = x (1) at index (2) along dim. The
// elementwise block walks index's shape; x's stride at dim is 0 there and
// EXT+2 holds it. EXT: dim, limit (x.shape[dim]), x stride at dim, the
// fault code (which op's error) and the dim or table its message names.
#include "common.glsl"

void main() {
    uint n = P(0), dim = P(EXT), limit = P(EXT + 1u), xsd = P(EXT + 2u), sz = dsize(P(OPB(0) + 1u));
    for (uint i = thread_id(); i < n; i += thread_count()) {
        int64_t v = ld_int(2u, addr_of(2u, i));
        if (v < 0l || v >= int64_t(limit)) {
            raise_fault(P(EXT + 3u), v, P(EXT + 4u), limit);
            continue;
        }
        uint ax = addr_of(1u, i) + uint(v) * xsd * sz;
        st_bits(0u, addr_of(0u, i), sz, ld_bits(1u, ax, sz));
    }
}
