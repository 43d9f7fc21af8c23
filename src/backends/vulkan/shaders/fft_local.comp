#version 450
// The whole FFT of L lines in one workgroup's shared memory: the lines are
// gathered through the input view (any strides), every Stockham pass runs
// between barriers (each invocation reads its butterflies' inputs into
// registers, then all write), and the scaled result goes out through the
// output view. Params (beyond fft.glsl's): 2 passes, 3 L (lines a
// workgroup), 60.. the radices in pass order. The host keeps L n within the
// shared array (specialization constant 3: the device's shared bytes) and
// each invocation's values within MAXREG.
#include "fft.glsl"

const uint MAXREG = 16u, RADICES = 60u;
// No more than the invocations' values: a device with more shared memory
// keeps the rest for other workgroups.
layout(constant_id = 3) const uint SHARED_BYTES = 16384;
#if KVK_F64
const uint SM_DEV = SHARED_BYTES / 16u;
#else
const uint SM_DEV = SHARED_BYTES / 8u;
#endif
const uint SM_REG = MAXREG * gl_WorkGroupSize.x;
shared cx sm[SM_DEV < SM_REG ? SM_DEV : SM_REG];

void main() {
    uint n = P(0), lines = P(1), passes = P(2), L = P(3), tot = L * n;
    bool inv = (P(4) & 1u) != 0u;
    real sc = scale_of();
    uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x, groups = (lines + L - 1u) / L;
    for (uint g = gl_WorkGroupID.x; g < groups; g += gl_NumWorkGroups.x) {
        uint l0 = g * L;
        for (uint e = tid; e < tot; e += wg) {
            uint line = l0 + e / n;
            sm[e] = line < lines ? ld_cx(0u, VIN, line_base(VIN, line), e % n) : cx(0);
        }
        barrier();
        uint Ns = 1u;
        for (uint p = 0u; p < passes; p++) {
            uint R = P(RADICES + p), T = n / R, nb = L * T, per = (nb + wg - 1u) / wg;
            cx v[MAXREG];
            for (uint i = 0u; i < per; i++) {
                uint b = tid + i * wg;
                if (b < nb) {
                    uint at = (b / T) * n + b % T;
                    for (uint r = 0u; r < R; r++) v[i * R + r] = sm[at + r * T];
                }
            }
            barrier();
            for (uint i = 0u; i < per; i++) {
                uint b = tid + i * wg;
                if (b < nb) {
                    uint jj = b % T;
                    cx u[5];
                    for (uint r = 0u; r < R; r++) u[r] = v[i * R + r];
                    butterfly(u, R, Ns, jj, n, inv);
                    uint at = (b / T) * n + (jj / Ns) * Ns * R + jj % Ns;
                    for (uint r = 0u; r < R; r++) sm[at + r * Ns] = u[r];
                }
            }
            barrier();
            Ns *= R;
        }
        for (uint e = tid; e < tot; e += wg) {
            uint line = l0 + e / n;
            if (line < lines) st_cx(1u, VOUT, line_base(VOUT, line), e % n, sm[e] * sc);
        }
        barrier(); // the next group's lines overwrite sm
    }
}
