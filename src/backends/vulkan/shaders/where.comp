#version 450
// where: out (0) = cond (1) ? a (2) : b (3); a and b of out's dtype.
#include "common.glsl"

void main() {
    uint n = P(0), sz = dsize(P(OPB(0) + 1u));
    for (uint i = thread_id(); i < n; i += thread_count()) {
        bool c = ld_bits(1u, addr_of(1u, i), 1u) != 0ul;
        uint64_t v = c ? ld_bits(2u, addr_of(2u, i), sz) : ld_bits(3u, addr_of(3u, i), sz);
        st_bits(0u, addr_of(0u, i), sz, v);
    }
}
