#version 450
// Batch norm's elementwise pass (bn.glsl), one invocation per element of
// [N, C, L]. Forward (bindings: 0 y, contiguous; 1 x; 2 scratch; 3 count):
// y = (x - mean) k1 + k0, then the dropout of y; the first invocation counts
// the step (training). Backward (0 grad_x, contiguous; 1 x; 2 scratch;
// 3 grad): grad_x = k1 (g - k0 - (x - mean) k2), g back through the dropout,
// then back through the ReLU that made x. float32 computes in float from the
// constants rounded to float, as the CPU's float32 loops do.
#include "common.glsl"
#include "math.glsl"
#include "philox.glsl"
#include "bn.glsl"

real sc(uint i) { uint dt = P(28), ss = dsize(dt); return to_real(ld_bits(2u, P(11u + 2u) + i * ss, ss), dt); }

void main() {
    uint N = P(1), C = P(2), L = P(3), total = N * C * L, odt = dt_of(0u), xdt = dt_of(1u);
    bool bwd = P(0) != 0u, relu = P(29) != 0u, drop = P(39) != 0u;
    for (uint e = thread_id(); e < total; e += thread_count()) {
        uint l = e % L, nc = e / L, c = nc % C, n = nc / C;
        real xv = eld(1u, 5u, n, c, l), mean = sc(4u * c), k1 = sc(4u * c + 1u), k0 = sc(4u * c + 2u);
        real v;
        if (!bwd) {
            if (xdt == F32) {
                precise float y = (float(xv) - float(mean)) * float(k1) + float(k0);
                if (drop) y = y * (dropout_keep(P64(42), P(40), P(41), e, P(39)) ? float(PR(36)) : 0.0);
                v = real(y);
            } else {
                v = (xv - mean) * k1 + k0;
                if (drop) v = rounded(v, odt) * (dropout_keep(P64(42), P(40), P(41), e, P(39)) ? PR(36) : real(0));
            }
            if (e == 0u && P(4) != 0u && has(3u)) {
                uint cdt = dt_of(3u), ca = P(11u + 3u);
                st_bits(3u, ca, dsize(cdt), from_int(to_int(ld_bits(3u, ca, dsize(cdt)), cdt) + 1l, cdt));
            }
        } else {
            real g = grad_at(3u, n, c, l), k2 = sc(4u * c + 3u);
            if (xdt == F32) {
                precise float gx = float(k1) * (float(g) - float(k0) - (float(xv) - float(mean)) * float(k2));
                v = real(gx);
            } else {
                v = rounded(k1 * (g - k0 - (xv - mean) * k2), odt);
            }
            if (relu && !(xv > real(0))) v = real(0);
        }
        st_bits(0u, P(11u) + e * dsize(odt), dsize(odt), from_real(v, odt));
    }
}
