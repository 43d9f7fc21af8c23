#version 450
// embedding_cat (P(0) = 0) and its backward (1) for up to six tables at once.
// Bindings: 0 out [N, sum D] (forward) or grad (backward), any strides;
// 1 codes [N, T], any strides; 2..7 the tables or their gradients [V_k, D_k],
// contiguous. Forward: an invocation per output element copies its table
// entry. Backward, for small tables: an invocation per gradient element
// sums the grad rows whose code is its row, in row order, in `real` (as the
// CPU sums in double), and stores the sum once.
// Params: 0 mode, 1 N, 2 tables here, 3..4 codes strides, 5..6 out/grad
// strides, 7 out/grad dtype, 8 codes dtype, 9 invocations of work, 10..17
// byte offsets of bindings 0..7, 19 sum of D here, per table k: 20+k V,
// 26+k D, 32+k first column in out/grad, 38+k its index in codes, 46+k its
// dtype; 44 the fault code.
#include "common.glsl"

int64_t code_at(uint n, uint t) {
    uint dt = P(8), sz = dsize(dt);
    return to_int(ld_bits(1u, P(11) + (n * P(3) + t * P(4)) * sz, sz), dt);
}

void main() {
    uint N = P(1), nt = P(2), work = P(9);
    uint odt = P(7), osz = dsize(odt);
    for (uint i = thread_id(); i < work; i += thread_count()) {
        uint k = 0u, c;
        if (P(0) == 0u) {
            uint n = i / P(19);
            c = i % P(19);
            while (k + 1u < nt && c >= P(26u + k)) c -= P(26u + k++);
            uint V = P(20u + k), D = P(26u + k), t = P(38u + k), tsz = dsize(P(46u + k));
            int64_t v = code_at(n, t);
            if (v < 0l || v >= int64_t(V)) {
                raise_fault(P(44), v, t, V);
                continue;
            }
            uint src = P(12u + k) + (uint(v) * D + c) * tsz;
            st_bits(0u, P(10) + (n * P(5) + (P(32u + k) + c) * P(6)) * osz, osz, ld_bits(2u + k, src, tsz));
        } else {
            c = i;
            while (k + 1u < nt && c >= P(20u + k) * P(26u + k)) c -= P(20u + k) * P(26u + k++);
            uint V = P(20u + k), D = P(26u + k), t = P(38u + k), row = c / D, j = c % D, gdt = P(46u + k);
            precise real acc = real(0);
            for (uint n = 0u; n < N; n++) {
                int64_t v = code_at(n, t);
                if (v == int64_t(row)) acc += to_real(ld_bits(0u, P(10) + (n * P(5) + (P(32u + k) + j) * P(6)) * osz, osz), odt);
                else if (c == 0u && (v < 0l || v >= int64_t(V))) raise_fault(P(44), v, t, V);
            }
            st_bits(2u + k, P(12u + k) + c * dsize(gdt), dsize(gdt), from_real(acc, gdt));
        }
    }
}
