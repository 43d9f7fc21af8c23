#version 450
// random: Philox 4x32-10 numbers into contiguous out (0), element k as
// kn__random_value (src/backends/common/philox.h). The double variant
// computes as the CPU does, bit for bit; the float one is close.
// EXT: kind, seed (+1), counter offset (+3), a double (+5), a float (+7),
// b double (+8), b float (+10), integer mode (+11), low (+12), span (+14).
#include "common.glsl"
#include "math.glsl"
#include "philox.glsl"

real u01(uint x) { return real(x >> 8) * real(1.0 / 16777216.0); }

void main() {
    uint n = P(0), kind = P(EXT), ob = P(OPB(0)), od = P(OPB(0) + 1u), sz = dsize(od);
    uint k0 = P(EXT + 1u), k1 = P(EXT + 2u);
    uint64_t offset = P64(EXT + 3u);
#if KVK_F64
    double a = PD(EXT + 5u), b = PD(EXT + 8u);
#else
    float a = PF(EXT + 7u), b = PF(EXT + 10u);
#endif
    for (uint k = thread_id(); k < n; k += thread_count()) {
        uint addr = ob + k * sz;
        uint64_t ctr = offset + uint64_t(kind == 1u ? k / 2u : k / 4u);
        uvec4 w = philox(uint(ctr), uint(ctr >> 32), k0, k1);
        if (kind == 1u) {
            uint j = (k % 2u) * 2u;
            precise real u1 = real(1) - u01(w[j]), u2 = u01(w[j + 1u]);
            precise real t = real(6.283185307179586) * u2;
            precise real v = b * r_sqrt(real(-2) * r_log(u1)) * r_cos(t) + a;
            st_bits(0u, addr, sz, from_real(v, od));
            continue;
        }
        uint x = w[k % 4u];
        if (kind == 3u) {
            st_bits(0u, addr, sz, is_float(od) ? from_real(real(x), od) : from_int(int64_t(x), od));
        } else if (kind == 2u && P(EXT + 11u) != 0u) {
            // low + floor(x / 2^32 * span), exact in integers for spans below 2^21
            int64_t v = int64_t(P64(EXT + 12u)) + int64_t((uint64_t(x) * P64(EXT + 14u)) >> 32);
            st_bits(0u, addr, sz, from_int(v, od));
        } else if (kind == 2u) {
            precise real v = a + floor(real(x) * real(1.0 / 4294967296.0) * (b - a));
            st_bits(0u, addr, sz, from_real(v, od));
        } else {
            precise real v = a + (b - a) * u01(x);
            st_bits(0u, addr, sz, from_real(v, od));
        }
    }
}
