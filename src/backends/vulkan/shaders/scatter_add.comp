#version 450
// scatter_add: out (0)[.. index (2)[..i..] ..] += src (1)[..i..] along dim.
// One invocation per position of index in every dim but dim (the block's
// shape has 1 there): it owns the out elements of its coordinates and walks
// dim in order, repeated indices included, so no two invocations add into
// one element and the sums come in the CPU's order.
// EXT: n (index's size at dim), src, index and out strides at dim, limit, dim,
// the fault code (which op's error).
#include "common.glsl"

void main() {
    uint items = P(0), n = P(EXT), ssd = P(EXT + 1u), isd = P(EXT + 2u), osd = P(EXT + 3u), limit = P(EXT + 4u);
    uint od = P(OPB(0) + 1u), osz = dsize(od), ssz = dsize(P(OPB(1) + 1u)), isz = dsize(P(OPB(2) + 1u));
    bool flt = is_float(od);
    for (uint it = thread_id(); it < items; it += thread_count()) {
        uint ao = addr_of(0u, it), as_ = addr_of(1u, it), ai = addr_of(2u, it);
        for (uint j = 0u; j < n; j++) {
            int64_t v = ld_int(2u, ai + j * isd * isz);
            if (v < 0l || v >= int64_t(limit)) {
                raise_fault(P(EXT + 6u), v, P(EXT + 5u), limit);
                break;
            }
            uint a = ao + uint(v) * osd * osz, s = as_ + j * ssd * ssz;
            if (flt) st_real(0u, a, ld_real(0u, a) + ld_real(1u, s));
            else st_int(0u, a, ld_int(0u, a) + ld_int(1u, s));
        }
    }
}
