#version 450
// binary: out (0) = fn(a (1), b (2)); comparisons write bool. EXT: fn.
#include "common.glsl"
#include "math.glsl"

const uint ADD = 0, SUB = 1, MUL = 2, DIV = 3, POW = 4, MAX = 5, MIN = 6, EQ = 7, NE = 8, LT = 9, LE = 10, GT = 11,
           GE = 12;

real eval(uint f, real a, real b) {
    switch (f) {
    case ADD: return a + b;
    case SUB: return a - b;
    case MUL: return a * b;
    case DIV: return a / b;
    case POW: return r_pow(a, b);
    case MAX: return isnan(a) || isnan(b) ? r_nan() : a > b ? a : b;
    case MIN: return isnan(a) || isnan(b) ? r_nan() : a < b ? a : b;
    case EQ: return a == b ? real(1) : real(0);
    case NE: return a != b ? real(1) : real(0);
    case LT: return a < b ? real(1) : real(0);
    case LE: return a <= b ? real(1) : real(0);
    case GT: return a > b ? real(1) : real(0);
    case GE: return a >= b ? real(1) : real(0);
    }
    return r_nan();
}

int64_t eval_i(uint f, int64_t a, int64_t b) {
    switch (f) {
    case ADD: return a + b;
    case SUB: return a - b;
    case MUL: return a * b;
    case DIV: return b != 0l ? a / b : 0l;
    case POW: return i_pow(a, b);
    case MAX: return a > b ? a : b;
    case MIN: return a < b ? a : b;
    case EQ: return a == b ? 1l : 0l;
    case NE: return a != b ? 1l : 0l;
    case LT: return a < b ? 1l : 0l;
    case LE: return a <= b ? 1l : 0l;
    case GT: return a > b ? 1l : 0l;
    case GE: return a >= b ? 1l : 0l;
    }
    return 0l;
}

void main() {
    uint n = P(0), f = P(EXT), ad = P(OPB(1) + 1u);
    for (uint i = thread_id(); i < n; i += thread_count()) {
        uint ao = addr_of(0u, i), a1 = addr_of(1u, i), a2 = addr_of(2u, i);
        if (is_float(ad)) st_real(0u, ao, eval(f, ld_real(1u, a1), ld_real(2u, a2)));
        else st_int(0u, ao, eval_i(f, ld_int(1u, a1), ld_int(2u, a2)));
    }
}
