#version 450
// Bluestein's steps around its two power-of-two transforms (fft.glsl views;
// binding 2 a table of complex values in the dtype at TW, computed on the
// host), over lines x P(0) elements:
//   mode 0: out[t] = t < n ? in[t] tab[t] : 0   (the chirped input, padded)
//   mode 1: out[t] = in[t] tab[t]                (times the kernel's spectrum)
//   mode 2: out[t] = scale in[t] tab[t]          (the chirped, scaled output)
// Params (beyond fft.glsl's): 0 the length of the lines written, 2 the mode,
// 3 n (mode 0).
#include "fft.glsl"

cx tab(uint m) {
    uint w = (P(TW) >> 2) + 2u * m * ES;
    return cx(ldr(2u, w), ldr(2u, w + ES));
}

void main() {
    uint len = P(0), lines = P(1), mode = P(2), n = P(3), total = lines * len;
    real sc = mode == 2u ? scale_of() : real(1);
    for (uint i = thread_id(); i < total; i += thread_count()) {
        uint line = i / len, t = i % len;
        cx v = cx(0);
        if (mode != 0u || t < n) v = cmul(ld_cx(0u, VIN, line_base(VIN, line), t), tab(t)) * sc;
        st_cx(1u, VOUT, line_base(VOUT, line), t, v);
    }
}
