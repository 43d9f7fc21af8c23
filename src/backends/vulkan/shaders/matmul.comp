#version 450
// matmul: out [B, M, N] = act(a [B, M, K] @ b [B, K, N] + bias [N]), any
// strides (transposed operands are strides). Tiled: a workgroup of
// TILE x TILE invocations (TILE a specialization constant) computes one
// output tile, staging TILE x TILE tiles of a and b in shared memory.
// Params: 0 B, 1 M, 2 N, 3 K, 4..8 a (offset, dtype, batch, row, col
// strides), 9..13 b (the same), 14..18 out (the same), 19 bias present,
// 20..22 bias (offset, dtype, stride), 23 act. Bindings: out 0, a 1, b 2, bias 3.
#include "common.glsl"

shared real As[TILE][TILE];
shared real Bs[TILE][TILE];

real ld(uint b, uint off, uint dt, uint e) { return to_real(ld_bits(b, off + e * dsize(dt), dsize(dt)), dt); }

void main() {
    uint B = P(0), M = P(1), N = P(2), K = P(3);
    uint lid = gl_LocalInvocationID.x, ty = lid / TILE, tx = lid % TILE;
    uint row = gl_WorkGroupID.y * TILE + ty, col = gl_WorkGroupID.x * TILE + tx;
    for (uint bi = gl_WorkGroupID.z; bi < B; bi += gl_NumWorkGroups.z) {
        uint ab = bi * P(6), bb = bi * P(11), ob = bi * P(16);
        real acc = real(0);
        for (uint k0 = 0u; k0 < K; k0 += TILE) {
            uint ka = k0 + tx, kb = k0 + ty;
            As[ty][tx] = row < M && ka < K ? ld(1u, P(4), P(5), ab + row * P(7) + ka * P(8)) : real(0);
            Bs[ty][tx] = kb < K && col < N ? ld(2u, P(9), P(10), bb + kb * P(12) + col * P(13)) : real(0);
            barrier();
            for (uint k = 0u; k < TILE; k++) acc += As[ty][k] * Bs[k][tx];
            barrier();
        }
        if (row < M && col < N) {
            real v = acc;
            if (P(19) != 0u) v = ld(3u, P(20), P(21), col * P(22)) + v;
            if (P(23) == 1u && v <= real(0)) v = real(0); // NaN stays NaN
            uint od = P(15);
            st_bits(0u, P(14) + (ob + row * P(17) + col * P(18)) * dsize(od), dsize(od), from_real(v, od));
        }
    }
}
