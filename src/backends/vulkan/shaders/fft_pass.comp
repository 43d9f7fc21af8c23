#version 450
// One Stockham pass of the FFT over every line (fft.glsl), one butterfly an
// invocation: the input view (binding 0) is the op's input (any strides) or
// a scratch buffer, the output view (binding 1) a scratch buffer or the op's
// output. Params (beyond fft.glsl's): 2 the radix R, 3 Ns (the length of the
// sub-transforms done before this pass).
#include "fft.glsl"

void main() {
    uint n = P(0), lines = P(1), R = P(2), Ns = P(3), T = n / R, nb = lines * T;
    bool inv = (P(4) & 1u) != 0u, scaled = (P(4) & 2u) != 0u;
    real sc = scale_of();
    for (uint b = thread_id(); b < nb; b += thread_count()) {
        uint line = b / T, jj = b % T;
        uint ib = line_base(VIN, line), ob = line_base(VOUT, line);
        cx u[5];
        for (uint r = 0u; r < R; r++) u[r] = ld_cx(0u, VIN, ib, jj + r * T);
        butterfly(u, R, Ns, jj, n, inv);
        uint at = (jj / Ns) * Ns * R + jj % Ns;
        for (uint r = 0u; r < R; r++) st_cx(1u, VOUT, ob, at + r * Ns, scaled ? u[r] * sc : u[r]);
    }
}
