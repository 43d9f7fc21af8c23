/* The passes of the CPU's mixed radix FFT (cpu_fft.h), in the Stockham
 * (autosort) layout: a pass of radix ip reads cc as [l1][ip][ido] and writes
 * ch as [ip][l1][ido], the butterfly over the ip inputs of each (k, i)
 * followed by the twiddle of output m and position i. Every loop is unit
 * stride in i and no pass needs a bit reversal; passes alternate between
 * two buffers. Radices 2, 3, 4 and 5 have their own butterflies, any other
 * odd radix a generic one that folds the pairs q and ip - q. Each pass is
 * instantiated for both signs (sg below is a constant), so the rotations by
 * +-i and the conjugations cost nothing at run time. */
#include "cpu_fft.h"

/* Everything below inlines into the two dispatchers at the end. */
#if defined(__GNUC__)
#define KN_INLINE static inline __attribute__((always_inline))
#else
#define KN_INLINE static inline
#endif

#define CC(i, m, k) cc[(i) + ido * ((m) + ip * (k))]
#define CH(i, k, m) ch[(i) + ido * ((k) + l1 * (m))]

KN_INLINE kn_cpx add(kn_cpx a, kn_cpx b) { return (kn_cpx){a.re + b.re, a.im + b.im}; }
KN_INLINE kn_cpx sub(kn_cpx a, kn_cpx b) { return (kn_cpx){a.re - b.re, a.im - b.im}; }
/* a w (forward) or a conj(w) (inverse) */
KN_INLINE kn_cpx twm(kn_cpx a, kn_cpx w, bool inv) {
    double wi = inv ? -w.im : w.im;
    return (kn_cpx){a.re * w.re - a.im * wi, a.re * wi + a.im * w.re};
}
/* sg i a: -i a forward, +i a inverse */
KN_INLINE kn_cpx rot(kn_cpx a, bool inv) { return inv ? (kn_cpx){-a.im, a.re} : (kn_cpx){a.im, -a.re}; }

/* Writes output m of position (i, k), twiddled unless the pass has none
 * (ido == 1: every twiddle is 1). */
#define PUT(m, v) CH(i, k, m) = tw ? twm(v, wa[(m - 1) * ido + i], inv) : (v)

/* Every pass's parameters: ido, l1, the ranges of k and i it runs (a long
 * transform splits a pass between threads), cc, ch, the twiddles, the sign,
 * whether it twiddles. */
#define PASS_ARGS                                                                                             \
    int64_t ido, int64_t l1, int64_t k0, int64_t k1, int64_t i0, int64_t i1, const kn_cpx *restrict cc,          \
        kn_cpx *restrict ch, const kn_cpx *restrict wa, bool inv, bool tw

KN_INLINE void pass2(PASS_ARGS) {
    const int ip = 2;
    for (int64_t k = k0; k < k1; k++)
        for (int64_t i = i0; i < i1; i++) {
            kn_cpx a = CC(i, 0, k), b = CC(i, 1, k);
            CH(i, k, 0) = add(a, b);
            PUT(1, sub(a, b));
        }
}

KN_INLINE void pass3(PASS_ARGS) {
    const int ip = 3;
    const double h = 0.86602540378443864676372317075294; /* sin(2 pi/3) */
    for (int64_t k = k0; k < k1; k++)
        for (int64_t i = i0; i < i1; i++) {
            kn_cpx a0 = CC(i, 0, k), t1 = add(CC(i, 1, k), CC(i, 2, k)), t2 = sub(CC(i, 1, k), CC(i, 2, k));
            kn_cpx c = {a0.re - 0.5 * t1.re, a0.im - 0.5 * t1.im};
            kn_cpx d = rot((kn_cpx){h * t2.re, h * t2.im}, inv);
            CH(i, k, 0) = add(a0, t1);
            PUT(1, add(c, d));
            PUT(2, sub(c, d));
        }
}

KN_INLINE void pass4(PASS_ARGS) {
    const int ip = 4;
    for (int64_t k = k0; k < k1; k++)
        for (int64_t i = i0; i < i1; i++) {
            kn_cpx t1 = add(CC(i, 0, k), CC(i, 2, k)), t2 = sub(CC(i, 0, k), CC(i, 2, k));
            kn_cpx t3 = add(CC(i, 1, k), CC(i, 3, k)), t4 = rot(sub(CC(i, 1, k), CC(i, 3, k)), inv);
            CH(i, k, 0) = add(t1, t3);
            PUT(1, add(t2, t4));
            PUT(2, sub(t1, t3));
            PUT(3, sub(t2, t4));
        }
}

KN_INLINE void pass5(PASS_ARGS) {
    const int ip = 5;
    const double c1 = 0.30901699437494742410229341718281906, s1 = 0.95105651629515357211643933337938214,
                 c2 = -0.80901699437494742410229341718281906, s2 = 0.58778525229247312916870595463907277;
    for (int64_t k = k0; k < k1; k++)
        for (int64_t i = i0; i < i1; i++) {
            kn_cpx a0 = CC(i, 0, k);
            kn_cpx t1 = add(CC(i, 1, k), CC(i, 4, k)), t4 = sub(CC(i, 1, k), CC(i, 4, k));
            kn_cpx t2 = add(CC(i, 2, k), CC(i, 3, k)), t3 = sub(CC(i, 2, k), CC(i, 3, k));
            kn_cpx ca = {a0.re + c1 * t1.re + c2 * t2.re, a0.im + c1 * t1.im + c2 * t2.im};
            kn_cpx cb = {a0.re + c2 * t1.re + c1 * t2.re, a0.im + c2 * t1.im + c1 * t2.im};
            /* sg i (s1 t4 + s2 t3) and sg i (s2 t4 - s1 t3) */
            kn_cpx da = rot((kn_cpx){s1 * t4.re + s2 * t3.re, s1 * t4.im + s2 * t3.im}, inv);
            kn_cpx db = rot((kn_cpx){s2 * t4.re - s1 * t3.re, s2 * t4.im - s1 * t3.im}, inv);
            CH(i, k, 0) = (kn_cpx){a0.re + t1.re + t2.re, a0.im + t1.im + t2.im};
            PUT(1, add(ca, da));
            PUT(4, sub(ca, da));
            PUT(2, add(cb, db));
            PUT(3, sub(cb, db));
        }
}

/* Any odd radix ip <= KN_FFT_MAX_RADIX: y_m = a_0 + sum_{q <= ip/2}
 * (a_q + a_{ip-q}) cos(2 pi qm/ip) + sg i (a_q - a_{ip-q}) sin(2 pi qm/ip). */
KN_INLINE void passg(int ip, const kn_cpx *restrict roots, PASS_ARGS) {
    kn_cpx s[32], d[32]; /* ip <= 63 */
    int h = ip / 2;
    for (int64_t k = k0; k < k1; k++)
        for (int64_t i = i0; i < i1; i++) {
            kn_cpx a0 = CC(i, 0, k), y0 = a0;
            for (int q = 1; q <= h; q++) {
                s[q] = add(CC(i, q, k), CC(i, ip - q, k));
                d[q] = sub(CC(i, q, k), CC(i, ip - q, k));
                y0 = add(y0, s[q]);
            }
            CH(i, k, 0) = y0;
            for (int m = 1; m < ip; m++) {
                double re = a0.re, im = a0.im, ure = 0, uim = 0;
                for (int q = 1, x = m; q <= h; q++, x = x + m >= ip ? x + m - ip : x + m) {
                    /* roots[x] = (cos, -sin)(2 pi x/ip) */
                    re += s[q].re * roots[x].re, im += s[q].im * roots[x].re;
                    ure -= d[q].re * roots[x].im, uim -= d[q].im * roots[x].im;
                }
                kn_cpx u = rot((kn_cpx){ure, uim}, inv); /* sg i sum d sin */
                PUT(m, ((kn_cpx){re + u.re, im + u.im}));
            }
        }
}

/* The passes' dispatch, compiled twice: for any x86-64 (or other CPU), and
 * with AVX2 + FMA (the passes inline into it, so their loops get the wider
 * vectors), chosen at run time as the GEMM's kernels are. */
#define DISPATCH(ps, cc, ch, inverse, k0, k1, i0, i1)                                                          \
    int64_t ido = ps->ido, l1 = ps->l1;                                                                       \
    const kn_cpx *wa = ps->tw;                                                                                \
    bool tw = ido > 1;                                                                                        \
    switch (ps->ip) {                                                                                         \
    case 2: ALL4(pass2); break;                                                                               \
    case 3: ALL4(pass3); break;                                                                               \
    case 4: ALL4(pass4); break;                                                                               \
    case 5: ALL4(pass5); break;                                                                               \
    default: passg(ps->ip, ps->roots, ARGS(inverse, tw));                                                     \
    }
/* The four instances of each pass: the sign and whether it twiddles. */
#define ARGS(inv, t) ido, l1, k0, k1, i0, i1, cc, ch, wa, inv, t
#define ALL4(f)                                                                                               \
    (inverse ? (tw ? f(ARGS(true, true)) : f(ARGS(true, false)))                                              \
             : (tw ? f(ARGS(false, true)) : f(ARGS(false, false))))

static void pass_generic(const kn_fft_pass *ps, const kn_cpx *cc, kn_cpx *ch, bool inverse, int64_t k0, int64_t k1,
                         int64_t i0, int64_t i1) {
    DISPATCH(ps, cc, ch, inverse, k0, k1, i0, i1)
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define KN_FFT_X86 1
__attribute__((target("avx2,fma"))) static void pass_avx2(const kn_fft_pass *ps, const kn_cpx *cc, kn_cpx *ch,
                                                          bool inverse, int64_t k0, int64_t k1, int64_t i0,
                                                          int64_t i1) {
    DISPATCH(ps, cc, ch, inverse, k0, k1, i0, i1)
}
#endif

void kn__fft_pass(const kn_fft_pass *ps, const kn_cpx *cc, kn_cpx *ch, bool inverse, int64_t k0, int64_t k1,
                  int64_t i0, int64_t i1) {
#if defined(KN_FFT_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        pass_avx2(ps, cc, ch, inverse, k0, k1, i0, i1);
        return;
    }
#endif
    pass_generic(ps, cc, ch, inverse, k0, k1, i0, i1);
}
