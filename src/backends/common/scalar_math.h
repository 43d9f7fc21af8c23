/* Reference scalar math of the elementwise op families, shared by every
 * backend (host C and CUDA device code alike) so that they compute the same
 * function: CPU slow paths and GPU double paths call these. */
#ifndef KILN_SCALAR_MATH_H
#define KILN_SCALAR_MATH_H

#include "core/backend.h" /* the kn_unary_fn / kn_binary_fn codes */

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define KN_HD __host__ __device__ __forceinline__
#else
#define KN_HD static inline
#endif

KN_HD double kn__sigmoid_ref(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }
KN_HD double kn__softplus_ref(double x) { return x > 20 ? x : log1p(exp(x)); }

KN_HD double kn__unary_eval(int f, double x, double p0, double p1) {
    switch (f) {
    case KN_UNARY_NEG: return -x;
    case KN_UNARY_EXP: return exp(x);
    case KN_UNARY_LOG: return log(x);
    case KN_UNARY_SQRT: return sqrt(x);
    case KN_UNARY_RSQRT: return 1 / sqrt(x);
    case KN_UNARY_ABS: return fabs(x);
    case KN_UNARY_RELU: return x > 0 ? x : 0;
    case KN_UNARY_LEAKY_RELU: return x > 0 ? x : x * p0;
    case KN_UNARY_GELU: return 0.5 * x * (1 + erf(x * M_SQRT1_2));
    case KN_UNARY_SIGMOID: return kn__sigmoid_ref(x);
    case KN_UNARY_TANH: return tanh(x);
    case KN_UNARY_SOFTPLUS: return kn__softplus_ref(x);
    case KN_UNARY_CLAMP: return x != x ? x : x < p0 ? p0 : x > p1 ? p1 : x;
    case KN_UNARY_POW_SCALAR: return pow(x, p0);
    case KN_UNARY_ADD_SCALAR: return x + p0;
    case KN_UNARY_MUL_SCALAR: return x * p0;
    case KN_UNARY_RSUB_SCALAR: return p0 - x;
    case KN_UNARY_SIN: return sin(x);
    case KN_UNARY_COS: return cos(x);
    case KN_UNARY_TAN: return tan(x);
    default: return NAN;
    }
}

/* x is the forward output y for EXP, SIGMOID and TANH (cheaper and exact);
 * the input for the others (SIN, COS and TAN included). */
KN_HD double kn__unary_grad(int f, double g, double x, double p0, double p1) {
    switch (f) {
    case KN_UNARY_NEG: return -g;
    case KN_UNARY_EXP: return g * x;
    case KN_UNARY_LOG: return g / x;
    case KN_UNARY_SQRT: return g * 0.5 / sqrt(x);
    case KN_UNARY_RSQRT: return g * -0.5 / (x * sqrt(x));
    case KN_UNARY_ABS: return x > 0 ? g : x < 0 ? -g : 0;
    case KN_UNARY_RELU: return x > 0 ? g : 0;
    case KN_UNARY_LEAKY_RELU: return x > 0 ? g : g * p0;
    case KN_UNARY_GELU: {
        double cdf = 0.5 * (1 + erf(x * M_SQRT1_2)), pdf = exp(-0.5 * x * x) / sqrt(2 * M_PI);
        return g * (cdf + x * pdf);
    }
    case KN_UNARY_SIGMOID: return g * x * (1 - x);
    case KN_UNARY_TANH: return g * (1 - x * x);
    case KN_UNARY_SOFTPLUS: return g * kn__sigmoid_ref(x);
    case KN_UNARY_CLAMP: return x >= p0 && x <= p1 ? g : 0;
    case KN_UNARY_POW_SCALAR: return p0 == 0 ? 0 : g * p0 * pow(x, p0 - 1);
    case KN_UNARY_ADD_SCALAR: return g;
    case KN_UNARY_MUL_SCALAR: return g * p0;
    case KN_UNARY_RSUB_SCALAR: return -g;
    case KN_UNARY_SIN: return g * cos(x);
    case KN_UNARY_COS: return -g * sin(x);
    case KN_UNARY_TAN: {
        double c = cos(x);
        return g / (c * c);
    }
    default: return NAN;
    }
}

KN_HD double kn__binary_eval(int f, double a, double b) {
    switch (f) {
    case KN_BINARY_ADD: return a + b;
    case KN_BINARY_SUB: return a - b;
    case KN_BINARY_MUL: return a * b;
    case KN_BINARY_DIV: return a / b;
    case KN_BINARY_POW: return pow(a, b);
    case KN_BINARY_MAX: return a != a || b != b ? NAN : a > b ? a : b;
    case KN_BINARY_MIN: return a != a || b != b ? NAN : a < b ? a : b;
    case KN_BINARY_EQ: return a == b;
    case KN_BINARY_NE: return a != b;
    case KN_BINARY_LT: return a < b;
    case KN_BINARY_LE: return a <= b;
    case KN_BINARY_GT: return a > b;
    case KN_BINARY_GE: return a >= b;
    default: return NAN;
    }
}

KN_HD int64_t kn__ipow(int64_t a, int64_t b) {
    if (b < 0) return a == 1 ? 1 : a == -1 ? (b & 1 ? -1 : 1) : 0;
    int64_t r = 1;
    while (b) {
        if (b & 1) r *= a;
        a *= a;
        b >>= 1;
    }
    return r;
}

KN_HD int64_t kn__binary_i64(int f, int64_t a, int64_t b) {
    switch (f) {
    case KN_BINARY_ADD: return a + b;
    case KN_BINARY_SUB: return a - b;
    case KN_BINARY_MUL: return a * b;
    case KN_BINARY_DIV: return b ? a / b : 0; /* only reached for explicit int results */
    case KN_BINARY_POW: return kn__ipow(a, b);
    case KN_BINARY_MAX: return a > b ? a : b;
    case KN_BINARY_MIN: return a < b ? a : b;
    case KN_BINARY_EQ: return a == b;
    case KN_BINARY_NE: return a != b;
    case KN_BINARY_LT: return a < b;
    case KN_BINARY_LE: return a <= b;
    case KN_BINARY_GT: return a > b;
    case KN_BINARY_GE: return a >= b;
    default: return 0;
    }
}

#endif
