#version 450
// dropout: out (0) = x (2) * keep / (1 - p), mask (1, uint8, optional) =
// keep, keep the test of RANDOM's UNIFORM draw of element k (philox.glsl);
// contiguous operands. float32 multiplies by the scale rounded to float, as
// the CPU kernel does; other dtypes in `real`.
// Params: 0 n, 1..3 byte offsets of bindings 0..2, 4 out dtype, 5 mask
// present, 6 x dtype, scale 7/9 (double/float), 10 threshold, 11 seed
// (64-bit), 13 Philox offset (64-bit).
#include "common.glsl"
#include "philox.glsl"

#if KVK_F64
#define PR(k) PD(k)
#else
#define PR(k) PF((k) + 2u)
#endif

void main() {
    uint n = P(0), odt = P(4), xdt = P(6), osz = dsize(odt), xsz = dsize(xdt);
    bool f32 = odt == F32 && xdt == F32, mask = P(5) != 0u;
    for (uint k = thread_id(); k < n; k += thread_count()) {
        bool keep = dropout_keep(P64(13), P(11), P(12), k, P(10));
        real x = to_real(ld_bits(2u, P(3) + k * xsz, xsz), xdt), y;
        if (f32) {
            precise float v = float(x) * (keep ? float(PR(7)) : 0.0);
            y = real(v);
        } else {
            y = x * (keep ? PR(7) : real(0));
        }
        st_bits(0u, P(1) + k * osz, osz, from_real(y, odt));
        if (mask) st_bits(1u, P(2) + k, 1u, keep ? 1ul : 0ul);
    }
}
