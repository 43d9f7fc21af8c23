#version 450
// reduce: one workgroup per output element (grid-stride over outputs), its
// invocations striding over the reduced elements, then a tree in shared
// memory. x is binding 1, out binding 0 (contiguous).
// Params: 0 n_out, 1 R, 2 nk, 3..10 kept shape, 11..18 kept x strides,
// 19 nr, 20..27 reduced shape, 28..35 reduced x strides, 36 x offset,
// 37 x dtype, 38 out offset, 39 out dtype, 40 fn, 41 correction, 42 serial
// (one invocation per output) or not (one workgroup per output).
#include "common.glsl"

const uint SUM = 0, MEAN = 1, MAX = 2, MIN = 3, VAR = 4, ARGMAX = 5, ARGMIN = 6;
const uint NONE = 0xffffffffu;

shared real sr[gl_WorkGroupSize.x];
shared int64_t sl[gl_WorkGroupSize.x];
shared uint su[gl_WorkGroupSize.x];

uint reduced_off(uint r) {
    uint e = 0u;
    for (int d = int(P(19)) - 1; d >= 0; d--) {
        uint s = P(20u + uint(d));
        e += (r % s) * P(28u + uint(d));
        r /= s;
    }
    return e;
}

uint kept_off(uint o) {
    uint e = 0u;
    for (int d = int(P(2)) - 1; d >= 0; d--) {
        uint s = P(3u + uint(d));
        e += (o % s) * P(11u + uint(d));
        o /= s;
    }
    return e;
}

real fold(uint fn, real a, real v) {
    if (fn == MAX) return isnan(a) || isnan(v) ? real(uintBitsToFloat(0x7fc00000u)) : max(a, v);
    if (fn == MIN) return isnan(a) || isnan(v) ? real(uintBitsToFloat(0x7fc00000u)) : min(a, v);
    return a + v;
}
int64_t fold_i(uint fn, int64_t a, int64_t v) { return fn == MAX ? max(a, v) : fn == MIN ? min(a, v) : a + v; }

// Argmax/argmin: (value, index) pairs; NaN wins, then the better value, then the lower index.
bool better(bool mx, bool flt, real va, int64_t la, uint ia, real vb, int64_t lb, uint ib) {
    if (ib == NONE) return false;
    if (ia == NONE) return true;
    if (flt) {
        if (isnan(va) || isnan(vb)) return isnan(vb) && (!isnan(va) || ib < ia);
        if (vb != va) return mx ? vb > va : vb < va;
    } else if (lb != la) {
        return mx ? lb > la : lb < la;
    }
    return ib < ia;
}

real ldx(uint a, uint xd, uint xs) { return to_real(ld_bits(1u, a, xs), xd); }

// One invocation per output, folding in order as the CPU does (many outputs
// of few elements each: no shared memory, no barriers).
void serial(uint o) {
    uint R = P(1), xd = P(37), od = P(39), fn = P(40), xs = dsize(xd), xbase = P(36), osz = dsize(P(39));
    uint ko = kept_off(o), oa = P(38) + o * osz;
    bool flt = is_float(xd);
    if (fn == ARGMAX || fn == ARGMIN) {
        real bv = real(0);
        int64_t bl = 0l;
        uint bi = NONE;
        for (uint r = 0u; r < R; r++) {
            uint64_t bits = ld_bits(1u, xbase + (ko + reduced_off(r)) * xs, xs);
            real v = flt ? to_real(bits, xd) : real(0);
            int64_t l = flt ? 0l : to_int(bits, xd);
            if (better(fn == ARGMAX, flt, bv, bl, bi, v, l, r)) { bv = v; bl = l; bi = r; }
        }
        st_bits(0u, oa, osz, from_int(int64_t(bi == NONE ? 0u : bi), od));
        return;
    }
    if (!flt && (fn == SUM || fn == MAX || fn == MIN)) {
        int64_t acc = fn == MAX ? int64_t(0x8000000000000000ul) : fn == MIN ? 0x7fffffffffffffffl : 0l;
        for (uint r = 0u; r < R; r++) acc = fold_i(fn, acc, to_int(ld_bits(1u, xbase + (ko + reduced_off(r)) * xs, xs), xd));
        st_bits(0u, oa, osz, from_int(acc, od));
        return;
    }
    uint f1 = fn == VAR || fn == MEAN ? SUM : fn;
    real acc = fn == MAX ? -real(uintBitsToFloat(0x7f800000u)) : fn == MIN ? real(uintBitsToFloat(0x7f800000u)) : real(0);
    for (uint r = 0u; r < R; r++) acc = fold(f1, acc, ldx(xbase + (ko + reduced_off(r)) * xs, xd, xs));
    real v = acc;
    if (fn == MEAN || fn == VAR) {
        precise real mean = R > 0u ? acc / real(R) : real(uintBitsToFloat(0x7fc00000u));
        // Corrected by the mean deviation (exact for equal values) except in
        // float64, where the CPU's order is followed as it is.
        if (xd != F64 && R > 0u) {
            precise real a1 = real(0);
            for (uint r = 0u; r < R; r++) a1 += ldx(xbase + (ko + reduced_off(r)) * xs, xd, xs) - mean;
            mean += a1 / real(R);
        }
        v = mean;
        if (fn == VAR) {
            precise real a2 = real(0);
            for (uint r = 0u; r < R; r++) {
                precise real dv = ldx(xbase + (ko + reduced_off(r)) * xs, xd, xs) - mean;
                a2 += dv * dv;
            }
            int den = int(R) - PI(41);
            v = den > 0 ? a2 / real(den) : real(uintBitsToFloat(0x7fc00000u));
        }
    }
    if ((fn == MAX || fn == MIN) && R == 0u) v = real(uintBitsToFloat(0x7fc00000u));
    st_bits(0u, oa, osz, is_float(od) ? from_real(v, od) : from_int(int64_t(round(v)), od));
}

void main() {
    if (P(42) != 0u) {
        for (uint o = gl_GlobalInvocationID.x; o < P(0); o += gl_NumWorkGroups.x * gl_WorkGroupSize.x) serial(o);
        return;
    }
    uint n_out = P(0), R = P(1), xd = P(37), od = P(39), fn = P(40);
    uint xs = dsize(xd), xbase = P(36), obase = P(38), lid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    bool flt = is_float(xd);
    bool ints = !flt && (fn == SUM || fn == MAX || fn == MIN);
    bool arg = fn == ARGMAX || fn == ARGMIN;
    for (uint o = gl_WorkGroupID.x; o < n_out; o += gl_NumWorkGroups.x) {
        uint ko = kept_off(o);
        if (arg) {
            real bv = real(0);
            int64_t bl = 0l;
            uint bi = NONE;
            for (uint r = lid; r < R; r += wg) {
                uint64_t bits = ld_bits(1u, xbase + (ko + reduced_off(r)) * xs, xs);
                real v = flt ? to_real(bits, xd) : real(0);
                int64_t l = flt ? 0l : to_int(bits, xd);
                if (better(fn == ARGMAX, flt, bv, bl, bi, v, l, r)) { bv = v; bl = l; bi = r; }
            }
            sr[lid] = bv; sl[lid] = bl; su[lid] = bi;
            barrier();
            for (uint s = wg / 2u; s > 0u; s >>= 1) {
                if (lid < s && better(fn == ARGMAX, flt, sr[lid], sl[lid], su[lid], sr[lid + s], sl[lid + s], su[lid + s])) {
                    sr[lid] = sr[lid + s]; sl[lid] = sl[lid + s]; su[lid] = su[lid + s];
                }
                barrier();
            }
            if (lid == 0u) st_bits(0u, obase + o * dsize(od), dsize(od), from_int(int64_t(su[0] == NONE ? 0u : su[0]), od));
            barrier();
            continue;
        }
        real init = fn == MAX ? -real(uintBitsToFloat(0x7f800000u)) : fn == MIN ? real(uintBitsToFloat(0x7f800000u)) : real(0);
        real acc = init;
        int64_t iacc = fn == MAX ? int64_t(0x8000000000000000ul) : fn == MIN ? 0x7fffffffffffffffl : 0l;
        uint f1 = fn == VAR || fn == MEAN ? SUM : fn;
        // float64 over few elements: one invocation folds them in order, as
        // the CPU does, so even the rounding agrees (the others add zeros).
        bool seq = xd == F64 && R <= 64u;
        uint r0 = seq ? (lid == 0u ? 0u : R) : lid, step = seq ? 1u : wg;
        for (uint r = r0; r < R; r += step) {
            uint64_t bits = ld_bits(1u, xbase + (ko + reduced_off(r)) * xs, xs);
            if (ints) iacc = fold_i(f1, iacc, to_int(bits, xd));
            else acc = fold(f1, acc, to_real(bits, xd));
        }
        sr[lid] = acc; sl[lid] = iacc;
        barrier();
        for (uint s = wg / 2u; s > 0u; s >>= 1) {
            if (lid < s) {
                if (ints) sl[lid] = fold_i(f1, sl[lid], sl[lid + s]);
                else sr[lid] = fold(f1, sr[lid], sr[lid + s]);
            }
            barrier();
        }
        real total = sr[0];
        int64_t itotal = sl[0];
        barrier();
        real mean = R > 0u ? total / real(R) : real(uintBitsToFloat(0x7fc00000u));
        if (!seq && (fn == VAR || (fn == MEAN && R > 0u))) {
            // The mean corrected by the mean deviation from it: exact when
            // every value is equal (a zero variance stays zero, as on the CPU).
            real a1 = real(0);
            for (uint r = lid; r < R; r += wg)
                a1 += to_real(ld_bits(1u, xbase + (ko + reduced_off(r)) * xs, xs), xd) - mean;
            sr[lid] = a1;
            barrier();
            for (uint s = wg / 2u; s > 0u; s >>= 1) {
                if (lid < s) sr[lid] += sr[lid + s];
                barrier();
            }
            mean += sr[0] / real(R);
            barrier();
        }
        if (fn == VAR) {
            precise real a2 = real(0);
            for (uint r = r0; r < R; r += step) {
                precise real v = to_real(ld_bits(1u, xbase + (ko + reduced_off(r)) * xs, xs), xd) - mean;
                a2 += v * v;
            }
            sr[lid] = a2;
            barrier();
            for (uint s = wg / 2u; s > 0u; s >>= 1) {
                if (lid < s) sr[lid] += sr[lid + s];
                barrier();
            }
            total = sr[0];
            barrier();
        }
        if (lid == 0u) {
            uint oa = obase + o * dsize(od);
            if (ints) {
                st_bits(0u, oa, dsize(od), from_int(itotal, od));
            } else {
                real v = total;
                if (fn == MEAN) v = mean;
                if (fn == VAR) {
                    int den = int(R) - PI(41);
                    v = den > 0 ? v / real(den) : real(uintBitsToFloat(0x7fc00000u));
                }
                if ((fn == MAX || fn == MIN) && R == 0u) v = real(uintBitsToFloat(0x7fc00000u));
                st_bits(0u, oa, dsize(od), is_float(od) ? from_real(v, od) : from_int(int64_t(round(v)), od));
            }
        }
    }
}
