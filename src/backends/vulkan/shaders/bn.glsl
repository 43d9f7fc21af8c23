// Batch norm's parameter block, shared by bn_stats.comp and bn_apply.comp
// (host side: vk_ops_norm.c). x is [N, C, L], any strides; the [C] vectors
// are contiguous; the scratch holds four `real`s per channel (mean, k1, k0,
// k2: y = (x - mean) k1 + k0 forward, grad_x = k1 (g - k0 - (x - mean) k2)
// backward) in dtype P(28).
// Params: 0 backward, 1 N, 2 C, 3 L, 4 training, 5..7 x strides, 8..10 grad
// strides, 11..18 byte offsets of bindings 0..7, 19..26 their dtypes, 27 the
// bindings present (bit k), 28 scratch dtype, 29 relu, momentum 30/32, eps
// 33/35, dropout scale 36/38 (double/float), 39 dropout threshold (0: none),
// 40 seed (64-bit), 42 Philox offset (64-bit).
#if KVK_F64
#define PR(k) PD(k)
#else
#define PR(k) PF((k) + 2u)
#endif

bool has(uint k) { return ((P(27) >> k) & 1u) != 0u; }
uint dt_of(uint k) { return P(19u + k); }
real vld(uint k, uint i) { uint dt = dt_of(k); return to_real(ld_bits(k, P(11u + k) + i * dsize(dt), dsize(dt)), dt); }
void vst(uint k, uint i, real v) { uint dt = dt_of(k); st_bits(k, P(11u + k) + i * dsize(dt), dsize(dt), from_real(v, dt)); }
// Element (n, c, l) of the [N, C, L] operand at binding k with strides at s.
real eld(uint k, uint s, uint n, uint c, uint l) {
    uint dt = dt_of(k);
    uint e = n * P(s) + c * P(s + 1u) + l * P(s + 2u); // wraps: negative strides work mod 2^32
    return to_real(ld_bits(k, P(11u + k) + e * dsize(dt), dsize(dt)), dt);
}
// A value as it is once stored in dtype dt and read back.
real rounded(real v, uint dt) { return to_real(from_real(v, dt), dt); }
// grad of y at element (n, c, l), back through the dropout of y when there is one.
real grad_at(uint k, uint n, uint c, uint l) {
    real g = eld(k, 8u, n, c, l);
    if (P(39) == 0u) return g;
    uint e = (n * P(2) + c) * P(3) + l; // y's contiguous index: the mask's element
    bool keep = dropout_keep(P64(42), P(40), P(41), e, P(39));
    // float32 multiplies by the scale rounded to float, as the CPU's dropout does.
    real scale = dt_of(k) == F32 ? real(float(PR(36))) : PR(36);
    return rounded(keep ? g * scale : real(0) * g, dt_of(k));
}
