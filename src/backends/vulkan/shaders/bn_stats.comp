#version 450
// Batch norm's per-channel pass, one workgroup per channel (bn.glsl).
// Forward (bindings: 0 x, 1 mean, 2 invstd, 3 running_mean, 4 running_var,
// 5 weight, 6 bias, 7 scratch): the batch statistics as the CPU computes
// them (sums of x - x[0, c, 0], the first value as a shift, so the one-pass
// variance keeps its digits), the running statistics, and the channel's
// constants of the elementwise pass; eval mode reads the running ones.
// Backward (0 x, 1 mean, 2 invstd, 3 grad, 4 grad_weight, 5 weight,
// 6 grad_bias, 7 scratch): s1 = sum g, s2 = sum g (x - mean), the weight and
// bias gradients and the constants of grad_x.
#include "common.glsl"
#include "math.glsl"
#include "philox.glsl"
#include "bn.glsl"
#include "workgroup.glsl"

// The channel's results, from its sums (invocation 0 of its workgroup).
void finish(uint c, real K, real a1, real a2) {
    uint M = P(1) * P(3);
    bool bwd = P(0) != 0u, training = P(4) != 0u;
    real mom = PR(30), eps = PR(33);
    uint s = P(11u + 7u), sdt = P(28), ss = dsize(sdt);
    real mean, k1, k0 = real(0), k2 = real(0);
    if (bwd) {
        real is = vld(2u, c);
        mean = K;
        k1 = is * (has(5u) ? vld(5u, c) : real(1));
        if (training) {
            k0 = a1 / real(M);
            k2 = is * is * a2 / real(M);
        }
        if (has(4u)) vst(4u, c, a2 * is);
        if (has(6u)) vst(6u, c, a1);
    } else {
        real invstd;
        if (training) {
            precise real dm = a1 / real(M), var = a2 / real(M) - dm * dm;
            if (var < real(0)) var = real(0);
            mean = K + dm;
            invstd = real(1) / r_sqrt(var + eps);
            // The running variance is the unbiased one, as in PyTorch.
            if (has(3u)) vst(3u, c, (real(1) - mom) * vld(3u, c) + mom * mean);
            if (has(4u)) vst(4u, c, (real(1) - mom) * vld(4u, c) + mom * (M > 1u ? var * real(M) / real(M - 1u) : r_nan()));
        } else {
            mean = vld(3u, c);
            invstd = real(1) / r_sqrt(vld(4u, c) + eps);
        }
        if (has(1u)) vst(1u, c, mean);
        if (has(2u)) vst(2u, c, invstd);
        k1 = invstd * (has(5u) ? vld(5u, c) : real(1));
        if (has(6u)) k0 = vld(6u, c);
    }
    st_bits(7u, s + (4u * c) * ss, ss, from_real(mean, sdt));
    st_bits(7u, s + (4u * c + 1u) * ss, ss, from_real(k1, sdt));
    st_bits(7u, s + (4u * c + 2u) * ss, ss, from_real(k0, sdt));
    st_bits(7u, s + (4u * c + 3u) * ss, ss, from_real(k2, sdt));
}

void main() {
    uint N = P(1), C = P(2), L = P(3), M = N * L, lid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    bool bwd = P(0) != 0u, training = P(4) != 0u;
    for (uint c = gl_WorkGroupID.x; c < C; c += gl_NumWorkGroups.x) {
        real K = bwd ? vld(1u, c) : training ? eld(0u, 5u, 0u, c, 0u) : real(0);
        real a1 = real(0), a2 = real(0);
        if (bwd || training) {
            for (uint r = lid; r < M; r += wg) {
                uint n = r / L, l = r % L;
                precise real dx = eld(0u, 5u, n, c, l) - K;
                if (bwd) {
                    real g = grad_at(3u, n, c, l);
                    a1 += g;
                    a2 += g * dx;
                } else {
                    a1 += dx;
                    a2 += dx * dx;
                }
            }
            a1 = wg_sum(a1);
            a2 = wg_sum(a2);
        }
        if (lid == 0u) finish(c, K, a1, a2);
    }
}
