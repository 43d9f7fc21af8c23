#version 450
// adam: Adam / AdamW in place on contiguous param (0), m (1), v (2) with
// grad (3) and the step count (4, 0-d): one dispatch for a parameter's whole
// update. All float32 (the common case): the CPU kernel's float32 loop, its
// constants in `real` (double where the device has it, as on the CPU), each
// operation `precise` so that no compiler fuses or reorders it. Other dtypes:
// the update in `real`, as the CPU's generic loop does in double.
// Params: 0 n, 1..5 byte offsets of the operands, 6..10 their dtypes,
// 11 decoupled, then as (double, float) pairs: lr 12/14, beta1 15/17,
// beta2 18/20, eps 21/23, weight_decay 24/26, log(beta1) 27/29, log(beta2) 30/32.
#include "common.glsl"
#include "math.glsl"

#if KVK_F64
#define PR(k) PD(k)
const int TERMS = 18;
#else
#define PR(k) PF((k) + 2u)
const int TERMS = 10;
#endif

// 1 - beta^t = -expm1(t log beta), without the cancellation of 1 - pow
// near t = 0 (the first steps: 1 - 0.999 loses most of float's digits).
real bias_correction(real t, real log_beta) {
    real x = t * log_beta;
    if (!(x > real(-0.5))) return real(1) - r_exp(x);
    precise real term = x, sum = x;
    for (int k = 2; k <= TERMS; k++) {
        term *= x / real(k);
        sum += term;
    }
    return -sum;
}

real ldr(uint k, uint i, uint dt) { return to_real(ld_bits(k, P(1u + k) + i * dsize(dt), dsize(dt)), dt); }
void str(uint k, uint i, uint dt, real v) { st_bits(k, P(1u + k) + i * dsize(dt), dsize(dt), from_real(v, dt)); }

void main() {
    uint n = P(0), pdt = P(6), mdt = P(7), vdt = P(8), gdt = P(9), sdt = P(10);
    bool adamw = P(11) != 0u;
    real lr = PR(12), beta1 = PR(15), beta2 = PR(18), eps = PR(21), wd = PR(24);
    real t = to_real(ld_bits(4u, P(5), dsize(sdt)), sdt);
    real bc1 = bias_correction(t, PR(27)), bc2 = bias_correction(t, PR(30));
    if (pdt == F32 && mdt == F32 && vdt == F32 && gdt == F32) {
        float step = float(lr / bc1), sb2 = float(real(1) / r_sqrt(bc2)), fb1 = float(beta1), fb2 = float(beta2);
        float decay = adamw ? float(real(1) - lr * wd) : 1.0, l2 = adamw ? 0.0 : float(wd), feps = float(eps);
        uint po = P(1) >> 2, mo = P(2) >> 2, vo = P(3) >> 2, go = P(4) >> 2;
        for (uint i = thread_id(); i < n; i += thread_count()) {
            float pi = uintBitsToFloat(b0.w[po + i]), mi = uintBitsToFloat(b1.w[mo + i]);
            float vi = uintBitsToFloat(b2.w[vo + i]), g = uintBitsToFloat(b3.w[go + i]);
            precise float gi = g + l2 * pi;
            precise float m1 = fb1 * mi + (1.0 - fb1) * gi;
            precise float v1 = fb2 * vi + (1.0 - fb2) * gi * gi;
            precise float p1 = pi * decay - step * m1 / (sqrt(v1) * sb2 + feps);
            b0.w[po + i] = floatBitsToUint(p1);
            b1.w[mo + i] = floatBitsToUint(m1);
            b2.w[vo + i] = floatBitsToUint(v1);
        }
        return;
    }
    for (uint i = thread_id(); i < n; i += thread_count()) {
        precise real pi = ldr(0u, i, pdt), gi = ldr(3u, i, gdt), mi = ldr(1u, i, mdt), vi = ldr(2u, i, vdt);
        if (!adamw) gi += wd * pi;
        else pi *= real(1) - lr * wd;
        mi = beta1 * mi + (real(1) - beta1) * gi;
        vi = beta2 * vi + (real(1) - beta2) * gi * gi;
        pi -= lr / bc1 * mi / (r_sqrt(vi) / r_sqrt(bc2) + eps);
        str(0u, i, pdt, pi);
        str(1u, i, mdt, mi);
        str(2u, i, vdt, vi);
    }
}
