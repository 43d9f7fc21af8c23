#version 450
// fill: out[k] = value + k * step. EXT: 0 mode (0 the bits at EXT+1..2, 1 real
// steps, 2 integer steps), value and step as doubles (EXT+3, +5) and floats
// (EXT+7, +8), or integers (EXT+3, +5).
#include "common.glsl"

void main() {
    uint n = P(0), mode = P(EXT), dt = P(OPB(0) + 1u);
    for (uint i = thread_id(); i < n; i += thread_count()) {
        uint a = addr_of(0u, i);
        if (mode == 0u) {
            st_bits(0u, a, dsize(dt), P64(EXT + 1u));
        } else if (mode == 2u) {
            st_int(0u, a, int64_t(P64(EXT + 3u)) + int64_t(i) * int64_t(P64(EXT + 5u)));
        } else {
#if KVK_F64
            precise double v = PD(EXT + 3u) + double(i) * PD(EXT + 5u);
#else
            precise float v = PF(EXT + 7u) + float(i) * PF(EXT + 8u);
#endif
            st_real(0u, a, v);
        }
    }
}
