#version 450
// cross_entropy and its backward, fused (the CPU kernel's formulas, in
// `real`: double where the device has it, as on the CPU).
// Forward (P(29) = 0; bindings 0 logits [N, C] contiguous, 1 target [N],
// 2 weight [C], 3 loss, 4 lse [N], 5 weight_sum): one workgroup, an
// invocation per row at a time, then the workgroup's sums of the losses and
// the row weights. Backward (P(29) = 1; 0 out [N, C] contiguous, 1 logits,
// 2 target, 3 weight, 4 lse, 5 weight_sum, 6 grad): an invocation per
// element, d loss / d z_j = G (p_j A - B_j), p_j = exp(z_j - lse),
// A = (1 - s) w_t + s / C sum_c w_c, B_j = (1 - s) w_t [j == t] + s / C w_j.
// A target outside [0, C) other than ignore_index raises a fault.
// Params: 0 N, 1 C, 2 ignore_index (64-bit), 4 reduction (0 none, 1 mean,
// 2 sum), 5..9 strides of target, weight, loss, lse, grad, 10..16 byte
// offsets of bindings 0..6, 17..23 their dtypes, 24 bindings present (bit
// k), smoothing 25/27 (double/float), 28 fault code, 29 backward.
#include "common.glsl"
#include "math.glsl"
#include "workgroup.glsl"

#if KVK_F64
#define PR(k) PD(k)
#else
#define PR(k) PF((k) + 2u)
#endif

const uint NONE = 0u, MEAN = 1u, SUM = 2u;

bool has(uint k) { return ((P(24) >> k) & 1u) != 0u; }
uint dt_of(uint k) { return P(17u + k); }
uint64_t bits_at(uint k, uint i) { uint dt = dt_of(k); return ld_bits(k, P(10u + k) + i * dsize(dt), dsize(dt)); }
real vld(uint k, uint i) { return to_real(bits_at(k, i), dt_of(k)); }
void vst(uint k, uint i, real v) { uint dt = dt_of(k); st_bits(k, P(10u + k) + i * dsize(dt), dsize(dt), from_real(v, dt)); }

void forward() {
    uint N = P(0), C = P(1), red = P(4), lid = gl_LocalInvocationID.x;
    int64_t ign = int64_t(P64(2));
    real s = PR(25), total = real(0), wsum = real(0);
    for (uint n = lid; n < N; n += gl_WorkGroupSize.x) {
        real mx = -r_inf(), e = real(0), l = real(0);
        for (uint j = 0u; j < C; j++) {
            real v = vld(0u, n * C + j);
            mx = v > mx || isnan(v) ? v : mx;
        }
        for (uint j = 0u; j < C; j++) e += r_exp(vld(0u, n * C + j) - mx);
        real lse = mx + r_log(e);
        int64_t t = to_int(bits_at(1u, n * P(5)), dt_of(1u));
        if (t != ign && (t < 0l || t >= int64_t(C))) {
            raise_fault(P(28), t, 0u, C);
        } else if (t != ign) {
            real wt = has(2u) ? vld(2u, uint(t) * P(6)) : real(1);
            l = -(real(1) - s) * wt * (vld(0u, n * C + uint(t)) - lse);
            if (s != real(0)) {
                real acc = real(0);
                for (uint j = 0u; j < C; j++) acc += (has(2u) ? vld(2u, j * P(6)) : real(1)) * (vld(0u, n * C + j) - lse);
                l -= s / real(C) * acc;
            }
            wsum += wt;
        }
        total += l;
        if (red == NONE) vst(3u, n * P(7), l);
        vst(4u, n * P(8), lse);
    }
    total = wg_sum(total);
    wsum = wg_sum(wsum);
    if (lid == 0u) {
        if (red != NONE) vst(3u, 0u, red == SUM ? total : total / wsum);
        vst(5u, 0u, wsum);
    }
}

void backward() {
    uint N = P(0), C = P(1), red = P(4);
    int64_t ign = int64_t(P64(2));
    real s = PR(25), wall = real(0);
    if (s != real(0))
        for (uint c = 0u; c < C; c++) wall += has(3u) ? vld(3u, c * P(6)) : real(1);
    real G = red == NONE ? real(0) : vld(6u, 0u);
    if (red == MEAN) G /= vld(5u, 0u);
    for (uint e = thread_id(); e < N * C; e += thread_count()) {
        uint n = e / C, j = e % C;
        int64_t t = to_int(bits_at(2u, n * P(5)), dt_of(2u));
        real v = real(0);
        if (t != ign && (t < 0l || t >= int64_t(C))) {
            raise_fault(P(28), t, 0u, C);
        } else if (t != ign) {
            real Gn = red == NONE ? vld(6u, n * P(9)) : G;
            real wt = has(3u) ? vld(3u, uint(t) * P(6)) : real(1), wj = has(3u) ? vld(3u, j * P(6)) : real(1);
            real A = (real(1) - s) * wt + s / real(C) * wall;
            real B = (j == uint(t) ? (real(1) - s) * wt : real(0)) + s / real(C) * wj;
            v = Gn * (r_exp(vld(1u, e) - vld(4u, n * P(8))) * A - B);
        }
        vst(0u, e, v);
    }
}

void main() {
    if (P(29) == 0u) forward();
    else backward();
}
