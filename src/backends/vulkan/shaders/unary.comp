#version 450
// unary (EXT+7 = 0): out (0) = fn(x (1)); unary_backward (EXT+7 = 1):
// out (0) = d fn(x (2)) / dx * grad (1). EXT: fn, p0 (double at +1, float at
// +3), p1 (double at +4, float at +6).
#include "common.glsl"
#include "math.glsl"

const uint NEG = 0, EXP = 1, LOG = 2, SQRT = 3, ABS = 4, RELU = 5, LEAKY = 6, GELU = 7, SIGMOID = 8, TANH = 9,
           SOFTPLUS = 10, CLAMP = 11, POWS = 12, ADDS = 13, MULS = 14, RSUBS = 15, RSQRT = 16, SIN = 17,
           COS = 18, TAN = 19;

real eval(uint f, real x, real p0, real p1) {
    switch (f) {
    case NEG: return -x;
    case EXP: return r_exp(x);
    case LOG: return r_log(x);
    case SQRT: return r_sqrt(x);
    case RSQRT: return real(1) / r_sqrt(x);
    case ABS: return abs(x);
    case RELU: return x > real(0) ? x : (isnan(x) ? x : real(0));
    case LEAKY: return x > real(0) ? x : x * p0;
    case GELU: return real(0.5) * x * (real(1) + r_erf(x * real(0.70710678118654752440)));
    case SIGMOID: return r_sigmoid(x);
    case TANH: return r_tanh(x);
    case SOFTPLUS: return r_softplus(x);
    case CLAMP: return isnan(x) ? x : x < p0 ? p0 : x > p1 ? p1 : x;
    case POWS: return r_pow(x, p0);
    case ADDS: return x + p0;
    case MULS: return x * p0;
    case RSUBS: return p0 - x;
    case SIN: return r_sin(x);
    case COS: return r_cos(x);
    case TAN: return r_tan(x);
    }
    return r_nan();
}

real grad(uint f, real g, real x, real p0, real p1) {
    switch (f) {
    case NEG: return -g;
    case EXP: return g * x;
    case LOG: return g / x;
    case SQRT: return g * real(0.5) / r_sqrt(x);
    case RSQRT: return g * real(-0.5) / (x * r_sqrt(x));
    case ABS: return x > real(0) ? g : x < real(0) ? -g : real(0);
    case RELU: return x > real(0) ? g : real(0);
    case LEAKY: return x > real(0) ? g : g * p0;
    case GELU: {
        real cdf = real(0.5) * (real(1) + r_erf(x * real(0.70710678118654752440)));
        real pdf = r_exp(real(-0.5) * x * x) * real(0.39894228040143267794);
        return g * (cdf + x * pdf);
    }
    case SIGMOID: return g * x * (real(1) - x);
    case TANH: return g * (real(1) - x * x);
    case SOFTPLUS: return g * r_sigmoid(x);
    case CLAMP: return x >= p0 && x <= p1 ? g : real(0);
    case POWS: return p0 == real(0) ? real(0) : g * p0 * r_pow(x, p0 - real(1));
    case ADDS: return g;
    case MULS: return g * p0;
    case RSUBS: return -g;
    case SIN: return g * r_cos(x);
    case COS: return -g * r_sin(x);
    case TAN: {
        real c = r_cos(x);
        return g / (c * c);
    }
    }
    return r_nan();
}

void main() {
    uint n = P(0), f = P(EXT), od = P(OPB(0) + 1u), xd = P(OPB(1) + 1u);
    bool backward = P(EXT + 7u) != 0u;
#if KVK_F64
    real p0 = PD(EXT + 1u), p1 = PD(EXT + 4u);
#else
    real p0 = PF(EXT + 3u), p1 = PF(EXT + 6u);
#endif
    // Integer in and out: exact integer math where the function has one.
    bool ints = !backward && !is_float(od) && !is_float(xd) && f != SQRT && f != EXP && f != LOG;
    int64_t ip0 = int64_t(P64(EXT + 8u));
    for (uint i = thread_id(); i < n; i += thread_count()) {
        uint ao = addr_of(0u, i), a1 = addr_of(1u, i);
        if (backward) {
            st_real(0u, ao, grad(f, ld_real(1u, a1), ld_real(2u, addr_of(2u, i)), p0, p1));
        } else if (ints) {
            int64_t x = ld_int(1u, a1), r;
            switch (f) {
            case NEG: r = -x; break;
            case ABS: r = x < 0l ? -x : x; break;
            case RELU: r = x > 0l ? x : 0l; break;
            case ADDS: r = x + ip0; break;
            case MULS: r = x * ip0; break;
            case RSUBS: r = ip0 - x; break;
            default: {
                real v = eval(f, real(x), p0, p1);
                r = isnan(v) ? 0l : int64_t(v);
            }
            }
            st_int(0u, ao, r);
        } else {
            st_real(0u, ao, eval(f, ld_real(1u, a1), p0, p1));
        }
    }
}
