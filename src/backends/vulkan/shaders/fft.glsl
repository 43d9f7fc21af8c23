// Shared by the FFT kernels (fft_local.comp, fft_pass.comp): complex loads
// and stores through a line view, the twiddle table and the radix-2/3/4/5
// butterflies of one Stockham (autosort) pass.
//
// Params: 0 n, 1 lines, 4 flags (bit 0 inverse, bit 1 scale this pass's
// output), scale 6 (double) / 8 (float), the input view at VIN, the output
// view at VOUT, the twiddle table's byte offset at TW (binding 2: n complex
// w[m] = exp(-2 pi i m / n) in the dtype, computed on the host in double).
// A view: +0 byte offset, +1 line dims, +2 stride along the line, +3 stride
// to the imaginary part (both in reals), +4.. the line dims' sizes and +11..
// their strides (outermost first). Strides wrap mod 2^32: negative ones work.
#include "common.glsl"

#if KVK_F64
#define cx dvec2
const uint ES = 2u; // words per real
real ldr(uint b, uint w) { return packDouble2x32(uvec2(rdw(b, w), rdw(b, w + 1u))); }
void str(uint b, uint w, real v) { uvec2 u = unpackDouble2x32(v); wrw(b, w, u.x); wrw(b, w + 1u, u.y); }
real scale_of() { return PD(6); }
const double C3 = -0.5LF, S3 = 0.86602540378443864676372317075293618LF;
const double C51 = 0.30901699437494742410229341718281906LF, C52 = -0.80901699437494742410229341718281906LF;
const double S51 = 0.95105651629515357211643933337938214LF, S52 = 0.58778525229247312916870595463907277LF;
#else
#define cx vec2
const uint ES = 1u;
real ldr(uint b, uint w) { return uintBitsToFloat(rdw(b, w)); }
void str(uint b, uint w, real v) { wrw(b, w, floatBitsToUint(v)); }
real scale_of() { return PF(8); }
const float C3 = -0.5, S3 = 0.866025403784438647;
const float C51 = 0.309016994374947424, C52 = -0.809016994374947424;
const float S51 = 0.951056516295153572, S52 = 0.587785252292473129;
#endif

const uint VIN = 10u, VOUT = 30u, TW = 50u;

// Element offset (in reals) of a line's first element.
uint line_base(uint V, uint line) {
    uint e = 0u;
    for (int d = int(P(V + 1u)) - 1; d >= 0; d--) {
        uint s = P(V + 4u + uint(d));
        e += (line % s) * P(V + 11u + uint(d));
        line /= s;
    }
    return e;
}

cx ld_cx(uint b, uint V, uint base, uint j) {
    uint e = base + j * P(V + 2u), w = P(V) >> 2;
    return cx(ldr(b, w + e * ES), ldr(b, w + (e + P(V + 3u)) * ES));
}
void st_cx(uint b, uint V, uint base, uint j, cx v) {
    uint e = base + j * P(V + 2u), w = P(V) >> 2;
    str(b, w + e * ES, v.x);
    str(b, w + (e + P(V + 3u)) * ES, v.y);
}

cx cmul(cx a, cx b) { return cx(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x); }
// s i z, s = -1 forward, +1 inverse
cx rot(cx z, bool inv) { return inv ? cx(-z.y, z.x) : cx(z.y, -z.x); }

// w^m of the table (conjugated for the inverse).
cx twiddle(uint m, bool inv) {
    uint w = (P(TW) >> 2) + 2u * m * ES;
    cx t = cx(ldr(2u, w), ldr(2u, w + ES));
    return inv ? cx(t.x, -t.y) : t;
}

// One butterfly of a Stockham pass: u holds x[jj + r n/R] (r < R) of the
// sub-transforms of length Ns done so far; on return u[r] belongs at
// (jj / Ns) Ns R + jj % Ns + r Ns.
void butterfly(inout cx u[5], uint R, uint Ns, uint jj, uint n, bool inv) {
    uint k = jj % Ns;
    if (k != 0u) {
        uint step = k * (n / (Ns * R));
        for (uint r = 1u; r < R; r++) u[r] = cmul(u[r], twiddle(r * step, inv));
    }
    if (R == 2u) {
        cx a = u[0], b = u[1];
        u[0] = a + b;
        u[1] = a - b;
    } else if (R == 4u) {
        cx t0 = u[0] + u[2], t1 = u[0] - u[2], t2 = u[1] + u[3], t3 = rot(u[1] - u[3], inv);
        u[0] = t0 + t2;
        u[2] = t0 - t2;
        u[1] = t1 + t3;
        u[3] = t1 - t3;
    } else if (R == 3u) {
        cx t = u[1] + u[2], d = rot(u[1] - u[2], inv) * S3, m = u[0] + t * C3;
        u[0] = u[0] + t;
        u[1] = m + d;
        u[2] = m - d;
    } else if (R == 5u) {
        cx a1 = u[1] + u[4], b1 = u[1] - u[4], a2 = u[2] + u[3], b2 = u[2] - u[3];
        cx m1 = u[0] + a1 * C51 + a2 * C52, m2 = u[0] + a1 * C52 + a2 * C51;
        cx d1 = rot(b1 * S51 + b2 * S52, inv), d2 = rot(b1 * S52 - b2 * S51, inv);
        u[0] = u[0] + a1 + a2;
        u[1] = m1 + d1;
        u[4] = m1 - d1;
        u[2] = m2 + d2;
        u[3] = m2 - d2;
    }
}
