// Scalar math in `real` (float or double), the functions of
// src/backends/common/scalar_math.h. GLSL has no double exp, log, tanh or
// pow, so the double variant computes them here (range reduction and
// polynomials, to within a few units in the last place); the float variant
// uses the builtins where they exist.

real r_nan() { return real(uintBitsToFloat(0x7fc00000u)); }
real r_inf() { return real(uintBitsToFloat(0x7f800000u)); }

#if KVK_F64
double r_exp(double x) {
    if (isnan(x)) return x;
    if (x > 709.782712893384) return r_inf();
    if (x < -745.2) return 0.0;
    double k = floor(x * 1.4426950408889634 + 0.5);
    precise double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    precise double p = 1.0 / 6227020800.0; // 1/13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int ki = int(k);
    // two steps, so 2^k below the normal range still scales
    if (ki < -1000) return ldexp(ldexp(p, ki + 1000), -1000);
    return ldexp(p, ki);
}

double r_log(double x) {
    if (isnan(x) || x < 0.0) return r_nan();
    if (x == 0.0) return -r_inf();
    if (isinf(x)) return x;
    int e;
    double m = frexp(x, e);
    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e -= 1;
    }
    precise double f = m - 1.0;
    precise double s = f / (2.0 + f);
    precise double s2 = s * s;
    precise double p = 1.0 / 25.0;
    for (int j = 11; j >= 0; j--) p = p * s2 + 1.0 / double(2 * j + 1);
    precise double lm = 2.0 * s * p;
    double de = double(e);
    return de * 6.93147180369123816490e-01 + (lm + de * 1.90821492927058770002e-10);
}

double r_sqrt(double x) {
    if (!(x > 0.0) || isinf(x)) return sqrt(x);
    // One Newton step: double sqrt need not be correctly rounded in Vulkan.
    precise double y = sqrt(x);
    precise double r = fma(-y, y, x);
    return y + r / (2.0 * y);
}
#else
float r_exp(float x) { return exp(x); }
float r_log(float x) { return log(x); }
float r_sqrt(float x) { return sqrt(x); }
#endif

// sin and cos of moderate |x|: x - k pi/2 in three parts (Cody-Waite), then
// Taylor series on [-pi/4, pi/4]. Vulkan lets the float builtins err by
// 2^-11, more than kiln's float32 tolerance, so both variants use this.
void r_sincos(real x, out real sn, out real cs) {
    real k = floor(x * real(0.63661977236758134308) + real(0.5));
#if KVK_F64
    precise double y = ((x - k * 1.57079632673412561417e+00) - k * 6.07710050630396597660e-11) - k * 2.02226624879595063154e-21;
#else
    precise float y = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.5497899548918821e-8;
#endif
    precise real y2 = y * y;
    precise real c = real(1), s = real(1);
    for (int j = 10; j >= 1; j--) c = real(1) - c * y2 / real((2 * j) * (2 * j - 1));
    for (int j = 10; j >= 1; j--) s = real(1) - s * y2 / real((2 * j + 1) * (2 * j));
    s *= y;
    int q = int(k) & 3;
    sn = q == 0 ? s : q == 1 ? c : q == 2 ? -s : -c;
    cs = q == 0 ? c : q == 1 ? -s : q == 2 ? -c : s;
}
real r_sin(real x) { real s, c; r_sincos(x, s, c); return isinf(x) ? r_nan() : s; }
real r_cos(real x) { real s, c; r_sincos(x, s, c); return isinf(x) ? r_nan() : c; }
real r_tan(real x) { real s, c; r_sincos(x, s, c); return isinf(x) ? r_nan() : s / c; }

real r_log1p(real u) {
    precise real w = real(1) + u;
    if (w == real(1)) return u;
    if (isinf(w)) return w;
    return r_log(w) * u / (w - real(1));
}

real r_tanh(real x) {
    real ax = abs(x);
    if (isnan(x)) return x;
    if (ax > real(20)) return sign(x);
#if KVK_F64
    if (ax < 1e-8) return x;
#else
    if (ax < real(1e-4)) return x;
#endif
    real t = r_exp(real(-2) * ax);
    real r = (real(1) - t) / (real(1) + t);
    return x < real(0) ? -r : r;
}

// erf(x) = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (1 3 5 ... (2n+1)): every
// term positive, so no cancellation.
real r_erf(real x) {
    if (isnan(x)) return x;
    real ax = abs(x);
    if (ax >= real(6)) return sign(x);
    real x2 = ax * ax, term = ax, sum = ax;
    for (int n = 1; n < 400; n++) {
        term *= real(2) * x2 / real(2 * n + 1);
        sum += term;
#if KVK_F64
        if (term < sum * 1e-17) break;
#else
        if (term < sum * real(1e-8)) break;
#endif
    }
    real r = real(1.1283791670955125739) * r_exp(-x2) * sum;
    if (r > real(1)) r = real(1);
    return x < real(0) ? -r : r;
}

real r_sigmoid(real x) {
    return x >= real(0) ? real(1) / (real(1) + r_exp(-x)) : r_exp(x) / (real(1) + r_exp(x));
}
real r_softplus(real x) { return x > real(20) ? x : r_log1p(r_exp(x)); }

real r_pow(real a, real b) {
    if (b == real(0)) return real(1);
    if (isnan(a) || isnan(b)) return r_nan();
    bool bint = floor(b) == b && abs(b) < real(9007199254740992.0);
    bool odd = bint && abs(mod(b, real(2))) == real(1);
    if (a == real(0)) return b > real(0) ? (odd ? a : real(0)) : (odd ? real(1) / a : r_inf());
    if (a < real(0) && !bint) return r_nan();
    real m = abs(a), r;
    if (isinf(b)) r = (m == real(1)) ? real(1) : ((m > real(1)) == (b > real(0)) ? r_inf() : real(0));
    else if (isinf(m)) r = b > real(0) ? r_inf() : real(0);
#if KVK_F64
    else r = r_exp(b * r_log(m));
#else
    else r = pow(m, b);
#endif
    return a < real(0) && odd ? -r : r;
}

int64_t i_pow(int64_t a, int64_t b) {
    if (b < 0l) return a == 1l ? 1l : a == -1l ? ((b & 1l) != 0l ? -1l : 1l) : 0l;
    int64_t r = 1l;
    while (b != 0l) {
        if ((b & 1l) != 0l) r *= a;
        a *= a;
        b >>= 1;
    }
    return r;
}
