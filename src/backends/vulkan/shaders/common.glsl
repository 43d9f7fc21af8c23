// Shared by every kiln compute shader: bindings, the parameter block, element
// loads and stores of every dtype over buffers of 32-bit words, and the
// conversions of src/backends/common/dtype.h (round to nearest even for
// float16/bfloat16, saturating float-to-int, wrapping int-to-int).
//
// KVK_F64 = 1 builds the variant whose `real` is double (devices with
// shaderFloat64, for float64 tensors); otherwise `real` is float.
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
// KVK_SUBGROUP = 1: the variant for devices with subgroup arithmetic in
// compute (workgroup.glsl); its module declares the capability, so devices
// without it never load it.
#if KVK_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#if KVK_F64
#extension GL_EXT_shader_explicit_arithmetic_types_float64 : require
#define real double
#else
#define real float
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TILE = 16;
layout(constant_id = 2) const uint SUBGROUP = 8;

layout(std430, set = 0, binding = 0) buffer Buf0 { uint w[]; } b0;
layout(std430, set = 0, binding = 1) buffer Buf1 { uint w[]; } b1;
layout(std430, set = 0, binding = 2) buffer Buf2 { uint w[]; } b2;
layout(std430, set = 0, binding = 3) buffer Buf3 { uint w[]; } b3;
layout(std430, set = 0, binding = 4) buffer Buf4 { uint w[]; } b4;
layout(std430, set = 0, binding = 5) buffer Buf5 { uint w[]; } b5;
layout(std430, set = 0, binding = 6) buffer Buf6 { uint w[]; } b6;
layout(std430, set = 0, binding = 7) buffer Buf7 { uint w[]; } b7;
layout(std430, set = 0, binding = 8) readonly buffer Params { uint p[]; } prm;
layout(std430, set = 0, binding = 9) buffer Fault { uint f[]; } fault;
layout(push_constant) uniform Push { uint base; } pc;

uint P(uint k) { return prm.p[pc.base + k]; }
int PI(uint k) { return int(prm.p[pc.base + k]); }
uint64_t P64(uint k) { return uint64_t(P(k)) | (uint64_t(P(k + 1)) << 32); }
float PF(uint k) { return uintBitsToFloat(P(k)); }
#if KVK_F64
double PD(uint k) { return packDouble2x32(uvec2(P(k), P(k + 1))); }
#endif

// dtype codes of kn_dtype
const uint F32 = 0, F16 = 1, BF16 = 2, F64 = 3, I32 = 4, I64 = 5, U8 = 6, BOOL = 7;
bool is_float(uint dt) { return dt <= F64; }
uint dsize(uint dt) { return dt == F64 || dt == I64 ? 8 : dt == F32 || dt == I32 ? 4 : dt == U8 || dt == BOOL ? 1 : 2; }

// ---- words of binding b ----------------------------------------------------------
uint rdw(uint b, uint i) {
    switch (b) {
    case 0: return b0.w[i];
    case 1: return b1.w[i];
    case 2: return b2.w[i];
    case 3: return b3.w[i];
    case 4: return b4.w[i];
    case 5: return b5.w[i];
    case 6: return b6.w[i];
    }
    return b7.w[i];
}
void wrw(uint b, uint i, uint v) {
    switch (b) {
    case 0: b0.w[i] = v; return;
    case 1: b1.w[i] = v; return;
    case 2: b2.w[i] = v; return;
    case 3: b3.w[i] = v; return;
    case 4: b4.w[i] = v; return;
    case 5: b5.w[i] = v; return;
    case 6: b6.w[i] = v; return;
    }
    b7.w[i] = v;
}
// Sub-word stores: neighbours of the same word may be written by other
// invocations at the same time; clearing then setting only our own bits
// with atomics leaves theirs alone, whatever the interleaving.
void wrpart(uint b, uint i, uint clear, uint set) {
    switch (b) {
    case 0: atomicAnd(b0.w[i], ~clear); atomicOr(b0.w[i], set); return;
    case 1: atomicAnd(b1.w[i], ~clear); atomicOr(b1.w[i], set); return;
    case 2: atomicAnd(b2.w[i], ~clear); atomicOr(b2.w[i], set); return;
    case 3: atomicAnd(b3.w[i], ~clear); atomicOr(b3.w[i], set); return;
    case 4: atomicAnd(b4.w[i], ~clear); atomicOr(b4.w[i], set); return;
    case 5: atomicAnd(b5.w[i], ~clear); atomicOr(b5.w[i], set); return;
    case 6: atomicAnd(b6.w[i], ~clear); atomicOr(b6.w[i], set); return;
    }
    atomicAnd(b7.w[i], ~clear); atomicOr(b7.w[i], set);
}

// The raw bits of the element of size sz at byte address a.
uint64_t ld_bits(uint b, uint a, uint sz) {
    uint w = a >> 2;
    if (sz == 4) return uint64_t(rdw(b, w));
    if (sz == 8) return uint64_t(rdw(b, w)) | (uint64_t(rdw(b, w + 1)) << 32);
    uint sh = (a & 3u) * 8u;
    return uint64_t((rdw(b, w) >> sh) & (sz == 1 ? 0xffu : 0xffffu));
}
void st_bits(uint b, uint a, uint sz, uint64_t v) {
    uint w = a >> 2;
    if (sz == 4) { wrw(b, w, uint(v)); return; }
    if (sz == 8) { wrw(b, w, uint(v)); wrw(b, w + 1, uint(v >> 32)); return; }
    uint sh = (a & 3u) * 8u, mask = (sz == 1 ? 0xffu : 0xffffu) << sh;
    wrpart(b, w, mask, (uint(v) << sh) & mask);
}

// ---- conversions (dtype.h) -----------------------------------------------------------
uint f32_to_f16(float f) {
    uint x = floatBitsToUint(f);
    uint sign = (x >> 16) & 0x8000u;
    int e = int((x >> 23) & 0xffu) - 127 + 15;
    uint man = x & 0x7fffffu;
    if (((x >> 23) & 0xffu) == 0xffu) return sign | 0x7c00u | (man != 0u ? 0x200u : 0u);
    if (e >= 31) return sign | 0x7c00u;
    if (e <= 0) {
        if (e < -10) return sign;
        man |= 0x800000u;
        uint shift = uint(14 - e);
        uint half_ = man >> shift, rem = man & ((1u << shift) - 1u), mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (half_ & 1u) != 0u)) half_++;
        return sign | half_;
    }
    uint h = sign | (uint(e) << 10) | (man >> 13), rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) h++;
    return h;
}
float f16_to_f32(uint h) {
    uint sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (e == 0u) {
        if (man == 0u) return uintBitsToFloat(sign);
        // subnormal: exact as float
        float v = float(man) * (1.0 / 16777216.0);
        return sign != 0u ? -v : v;
    }
    if (e == 31u) return uintBitsToFloat(sign | 0x7f800000u | (man << 13));
    return uintBitsToFloat(sign | ((e + 112u) << 23) | (man << 13));
}
uint f32_to_bf16(float f) {
    uint x = floatBitsToUint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 0x40u;
    x += 0x7fffu + ((x >> 16) & 1u);
    return x >> 16;
}

real to_real(uint64_t bits, uint dt) {
    switch (dt) {
    case F32: return real(uintBitsToFloat(uint(bits)));
    case F16: return real(f16_to_f32(uint(bits)));
    case BF16: return real(uintBitsToFloat(uint(bits) << 16));
#if KVK_F64
    case F64: return packDouble2x32(uvec2(uint(bits), uint(bits >> 32)));
#endif
    case I32: return real(int(uint(bits)));
    case I64: return real(int64_t(bits));
    case U8: return real(uint(bits));
    case BOOL: return bits != 0ul ? real(1) : real(0);
    }
    return real(0);
}

int64_t to_int(uint64_t bits, uint dt) {
    switch (dt) {
    case I64: return int64_t(bits);
    case I32: return int64_t(int(uint(bits)));
    case U8: return int64_t(bits);
    case BOOL: return bits != 0ul ? 1l : 0l;
    }
    real v = to_real(bits, dt);
    return isnan(v) ? 0l : int64_t(v);
}

uint64_t from_real(real v, uint dt) {
    switch (dt) {
    case F32: return uint64_t(floatBitsToUint(float(v)));
    case F16: return uint64_t(f32_to_f16(float(v)));
    case BF16: return uint64_t(f32_to_bf16(float(v)));
#if KVK_F64
    case F64: { uvec2 u = unpackDouble2x32(v); return uint64_t(u.x) | (uint64_t(u.y) << 32); }
#endif
    case I32:
        return uint64_t(uint(isnan(v) ? 0 : v >= real(2147483647.0) ? 2147483647 : v <= real(-2147483648.0) ? int(0x80000000u) : int(v)));
    case I64:
        return uint64_t(isnan(v) ? 0l : v >= real(9.2233720368547758e18) ? 0x7fffffffffffffffl
                                       : v <= real(-9.2233720368547758e18) ? int64_t(0x8000000000000000ul) : int64_t(v));
    case U8: return uint64_t(isnan(v) || v <= real(0) ? 0u : v >= real(255) ? 255u : uint(v));
    case BOOL: return v != real(0) ? 1ul : 0ul;
    }
    return 0ul;
}

uint64_t from_int(int64_t v, uint dt) {
    switch (dt) {
    case I64: return uint64_t(v);
    case I32: return uint64_t(uint(v));
    case U8: return uint64_t(v) & 0xfful;
    case BOOL: return v != 0l ? 1ul : 0ul;
    }
    return from_real(real(v), dt);
}

// ---- the elementwise parameter block ----------------------------------------------------
// 0 n, 1 ndim, 2..9 shape (outermost first), then per operand k at OPB(k):
// byte offset, dtype, 8 strides (elements); then the op's own words at EXT.
uint OPB(uint k) { return 10u + 10u * k; }
const uint EXT = 50u;

uint addr_of(uint k, uint i) {
    // i: the row-major index over the merged shape
    uint nd = P(1), o = P(OPB(k)), es = dsize(P(OPB(k) + 1u)), e = 0u;
    for (int d = int(nd) - 1; d >= 0; d--) {
        uint s = P(2u + uint(d));
        uint c = i % s;
        i /= s;
        e += c * P(OPB(k) + 2u + uint(d)); // wraps: negative strides work mod 2^32
    }
    return o + e * es;
}

real ld_real(uint k, uint a) { uint dt = P(OPB(k) + 1u); return to_real(ld_bits(k, a, dsize(dt)), dt); }
int64_t ld_int(uint k, uint a) { uint dt = P(OPB(k) + 1u); return to_int(ld_bits(k, a, dsize(dt)), dt); }
void st_real(uint k, uint a, real v) { uint dt = P(OPB(k) + 1u); st_bits(k, a, dsize(dt), from_real(v, dt)); }
void st_int(uint k, uint a, int64_t v) { uint dt = P(OPB(k) + 1u); st_bits(k, a, dsize(dt), from_int(v, dt)); }

uint thread_id() { return gl_GlobalInvocationID.x; }
uint thread_count() { return gl_NumWorkGroups.x * gl_WorkGroupSize.x; }

// A shader's fault (an index out of range): the first one wins; the host
// reads it after the batch's fence and reports it as the op's error.
void raise_fault(uint code, int64_t v, uint dim, uint limit) {
    if (atomicCompSwap(fault.f[0], 0u, code) == 0u) {
        fault.f[1] = uint(uint64_t(v));
        fault.f[2] = uint(uint64_t(v) >> 32);
        fault.f[3] = limit;
        fault.f[4] = dim;
    }
}
