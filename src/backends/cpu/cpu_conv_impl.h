/* The convolution kernels for one element type, included by cpu_conv.c with
 * T (float or double), SFX (f32, f64) and GEMM (kn__sgemm, kn__dgemm)
 * defined. Layouts: x [N, C, H, W], w [K, C/G, kh, kw], out [N, K, OH, OW],
 * all contiguous. A chunk of B images is lowered to cols [C/G*kh*kw,
 * B*OH*OW] per group (im2col) so that one GEMM covers the chunk: all the
 * threading is inside the GEMM and in the lowering loops, never around a
 * GEMM. */
#define F(name) KN_CPU_CAT(name, SFX)

/* im2col of images [n0, n0 + b), group g: cols row (c, a, bb), column bi*OHW + i*OW + j. */
typedef struct {
    const kn_win *g;
    const T *x;
    T *cols;
    int64_t n0, b, grp;
} F(lower_ctx);

static void F(im2col_range)(int64_t lo, int64_t hi, void *p) {
    const F(lower_ctx) *c = p;
    const kn_win *g = c->g;
    int64_t Cg = g->C / g->G, OHW = g->OH * g->OW, ld = c->b * OHW;
    for (int64_t u = lo; u < hi; u++) { /* u = bi * Cg + ch */
        int64_t bi = u / Cg, ch = u % Cg;
        const T *xp = c->x + ((c->n0 + bi) * g->C + c->grp * Cg + ch) * g->H * g->W;
        for (int64_t a = 0; a < g->kh; a++)
            for (int64_t bb = 0; bb < g->kw; bb++) {
                T *row = c->cols + ((ch * g->kh + a) * g->kw + bb) * ld + bi * OHW;
                int64_t ilo, ihi, jlo, jhi;
                kn__win_range(g->OH, g->sh, g->ph, a * g->dh, g->H, &ilo, &ihi);
                kn__win_range(g->OW, g->sw, g->pw, bb * g->dw, g->W, &jlo, &jhi);
                for (int64_t i = 0; i < g->OH; i++) {
                    T *r = row + i * g->OW;
                    if (i < ilo || i >= ihi) {
                        memset(r, 0, (size_t)g->OW * sizeof(T));
                        continue;
                    }
                    const T *src = xp + (i * g->sh - g->ph + a * g->dh) * g->W + bb * g->dw - g->pw;
                    for (int64_t j = 0; j < jlo; j++) r[j] = 0;
                    if (g->sw == 1) memcpy(r + jlo, src + jlo, (size_t)(jhi - jlo) * sizeof(T));
                    else
                        for (int64_t j = jlo; j < jhi; j++) r[j] = src[j * g->sw];
                    for (int64_t j = jhi; j < g->OW; j++) r[j] = 0;
                }
            }
    }
}

/* col2im: gx (the images' planes of group g) += the cols rows, the adjoint of
 * im2col. Each unit owns one plane: no races. */
static void F(col2im_range)(int64_t lo, int64_t hi, void *p) {
    const F(lower_ctx) *c = p;
    const kn_win *g = c->g;
    int64_t Cg = g->C / g->G, OHW = g->OH * g->OW, ld = c->b * OHW;
    T *gx = (T *)c->x;
    for (int64_t u = lo; u < hi; u++) {
        int64_t bi = u / Cg, ch = u % Cg;
        T *xp = gx + ((c->n0 + bi) * g->C + c->grp * Cg + ch) * g->H * g->W;
        for (int64_t a = 0; a < g->kh; a++)
            for (int64_t bb = 0; bb < g->kw; bb++) {
                const T *row = c->cols + ((ch * g->kh + a) * g->kw + bb) * ld + bi * OHW;
                int64_t ilo, ihi, jlo, jhi;
                kn__win_range(g->OH, g->sh, g->ph, a * g->dh, g->H, &ilo, &ihi);
                kn__win_range(g->OW, g->sw, g->pw, bb * g->dw, g->W, &jlo, &jhi);
                for (int64_t i = ilo; i < ihi; i++) {
                    const T *r = row + i * g->OW;
                    T *dst = xp + (i * g->sh - g->ph + a * g->dh) * g->W + bb * g->dw - g->pw;
                    for (int64_t j = jlo; j < jhi; j++) dst[j * g->sw] += r[j];
                }
            }
    }
}

static void F(lower)(const kn_win *g, const T *x, T *cols, int64_t n0, int64_t b, int64_t grp, bool adjoint) {
    F(lower_ctx) c = {g, x, cols, n0, b, grp};
    int64_t units = b * (g->C / g->G), per = g->kh * g->kw * g->OH * g->OW;
    kn__parallel_for(units, per >= 16384 ? 1 : 16384 / (per ? per : 1), adjoint ? F(col2im_range) : F(im2col_range),
                     &c);
}

/* 1x1, stride 1, no padding, OH = H, OW = W: x itself is the lowered matrix. */
static bool F(pointwise)(const kn_win *g) {
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 && g->OH == g->H &&
           g->OW == g->W;
}

/* Images per chunk: the lowered chunk (and the output block) near 8 MB. */
static int64_t F(chunk)(const kn_win *g) {
    int64_t CKK = g->C / g->G * g->kh * g->kw, Kg = g->K / g->G, rows = CKK > Kg ? CKK : Kg;
    int64_t per = rows * g->OH * g->OW * (int64_t)sizeof(T);
    int64_t b = per > 0 ? ((int64_t)8 << 20) / per : g->N;
    if (b < 1) b = 1;
    return b < g->N ? b : (g->N > 0 ? g->N : 1);
}

/* The lowered chunk (cols [CKK, B*OHW]) and, for chunks of more than one
 * image, the output block [Kg, B*OHW]: both from the CPU scratch pool. */
typedef struct {
    T *cols, *blk;
    size_t ncols, nblk;
} F(scratch);

static bool F(scratch_get)(F(scratch) *sc, const kn_win *g, int64_t B) {
    int64_t OHW = g->OH * g->OW;
    sc->ncols = (size_t)(g->C / g->G * g->kh * g->kw * B * OHW);
    sc->nblk = B > 1 ? (size_t)(g->K / g->G * B * OHW) : 0;
    sc->cols = kn__cpu_scratch(sc->ncols * sizeof(T));
    sc->blk = sc->nblk ? kn__cpu_scratch(sc->nblk * sizeof(T)) : NULL;
    if (sc->cols && (!sc->nblk || sc->blk)) return true;
    kn__cpu_scratch_free(sc->cols, sc->ncols * sizeof(T));
    kn__cpu_scratch_free(sc->blk, sc->nblk * sizeof(T));
    return false;
}

static void F(scratch_put)(F(scratch) *sc) {
    kn__cpu_scratch_free(sc->cols, sc->ncols * sizeof(T));
    kn__cpu_scratch_free(sc->blk, sc->nblk * sizeof(T));
}

/* The [Kg, b*OHW] block of a [N, K, OHW] tensor for images [n0, n0+b), group
 * grp, copied into blk (to_blk) or back from it. */
static void F(block)(const kn_win *g, T *t, T *blk, int64_t n0, int64_t b, int64_t grp, bool to_blk) {
    int64_t Kg = g->K / g->G, OHW = g->OH * g->OW;
    for (int64_t k = 0; k < Kg; k++)
        for (int64_t bi = 0; bi < b; bi++) {
            T *tp = t + ((n0 + bi) * g->K + grp * Kg + k) * OHW, *bp = blk + (k * b + bi) * OHW;
            if (to_blk) memcpy(bp, tp, (size_t)OHW * sizeof(T));
            else memcpy(tp, bp, (size_t)OHW * sizeof(T));
        }
}

static kn_status F(conv_forward)(const kn_win *g, T *out, const T *x, const T *w, const T *bias) {
    int64_t Cg = g->C / g->G, Kg = g->K / g->G, CKK = Cg * g->kh * g->kw, OHW = g->OH * g->OW;
    if (F(pointwise)(g)) {
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t grp = 0; grp < g->G; grp++)
                GEMM(false, false, Kg, OHW, Cg, 1, w + grp * Kg * Cg, Cg, x + (n * g->C + grp * Cg) * OHW, OHW, 0,
                     out + (n * g->K + grp * Kg) * OHW, OHW);
    } else {
        int64_t B = F(chunk)(g);
        F(scratch) sc;
        if (!F(scratch_get)(&sc, g, B)) return kn__err(KN_ERR_OOM, "conv2d: out of memory for the lowered input");
        T *cols = sc.cols, *blk = sc.blk;
        for (int64_t n0 = 0; n0 < g->N; n0 += B) {
            int64_t b = g->N - n0 < B ? g->N - n0 : B;
            for (int64_t grp = 0; grp < g->G; grp++) {
                F(lower)(g, x, cols, n0, b, grp, false);
                T *dst = b == 1 ? out + (n0 * g->K + grp * Kg) * OHW : blk;
                GEMM(false, false, Kg, b * OHW, CKK, 1, w + grp * Kg * CKK, CKK, cols, b * OHW, 0, dst, b * OHW);
                if (b > 1) F(block)(g, out, blk, n0, b, grp, false);
            }
        }
        F(scratch_put)(&sc);
    }
    if (bias)
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t k = 0; k < g->K; k++) {
                T *o = out + (n * g->K + k) * OHW, bk = bias[k];
                for (int64_t q = 0; q < OHW; q++) o[q] += bk;
            }
    return KN_OK;
}

/* gx, gw, gb may be NULL (not wanted). gw and gx are written whole. */
static kn_status F(conv_backward)(const kn_win *g, const T *gy, const T *x, const T *w, T *gx, T *gw, T *gb) {
    int64_t Cg = g->C / g->G, Kg = g->K / g->G, CKK = Cg * g->kh * g->kw, OHW = g->OH * g->OW;
    if (gb)
        for (int64_t k = 0; k < g->K; k++) {
            double s = 0;
            for (int64_t n = 0; n < g->N; n++) {
                const T *p = gy + (n * g->K + k) * OHW;
                for (int64_t q = 0; q < OHW; q++) s += p[q];
            }
            gb[k] = (T)s;
        }
    if (gw) memset(gw, 0, (size_t)(g->K * CKK) * sizeof(T));
    if (gx) memset(gx, 0, (size_t)(g->N * g->C * g->H * g->W) * sizeof(T));
    if (!gw && !gx) return KN_OK;
    if (F(pointwise)(g)) {
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t grp = 0; grp < g->G; grp++) {
                const T *gp = gy + (n * g->K + grp * Kg) * OHW;
                if (gw) /* gw_g [Kg, Cg] += gy [Kg, HW] @ x^T [HW, Cg] */
                    GEMM(false, true, Kg, Cg, OHW, 1, gp, OHW, x + (n * g->C + grp * Cg) * OHW, OHW, 1,
                         gw + grp * Kg * Cg, Cg);
                if (gx) /* gx [Cg, HW] = w_g^T [Cg, Kg] @ gy [Kg, HW] */
                    GEMM(true, false, Cg, OHW, Kg, 1, w + grp * Kg * Cg, Cg, gp, OHW, 0,
                         gx + (n * g->C + grp * Cg) * OHW, OHW);
            }
        return KN_OK;
    }
    int64_t B = F(chunk)(g);
    F(scratch) sc;
    if (!F(scratch_get)(&sc, g, B)) return kn__err(KN_ERR_OOM, "conv2d: out of memory for the lowered input");
    T *cols = sc.cols, *blk = sc.blk;
    for (int64_t n0 = 0; n0 < g->N; n0 += B) {
        int64_t b = g->N - n0 < B ? g->N - n0 : B;
        for (int64_t grp = 0; grp < g->G; grp++) {
            const T *gp = gy + (n0 * g->K + grp * Kg) * OHW;
            if (b > 1) {
                F(block)(g, (T *)gy, blk, n0, b, grp, true);
                gp = blk;
            }
            if (gw) { /* gw_g [Kg, CKK] += gy [Kg, b*OHW] @ cols^T */
                F(lower)(g, x, cols, n0, b, grp, false);
                GEMM(false, true, Kg, CKK, b * OHW, 1, gp, b * OHW, cols, b * OHW, 1, gw + grp * Kg * CKK, CKK);
            }
            if (gx) { /* cols = w_g^T [CKK, Kg] @ gy [Kg, b*OHW], then added back into gx */
                GEMM(true, false, CKK, b * OHW, Kg, 1, w + grp * Kg * CKK, CKK, gp, b * OHW, 0, cols, b * OHW);
                F(lower)(g, gx, cols, n0, b, grp, true);
            }
        }
    }
    F(scratch_put)(&sc);
    return KN_OK;
}

#undef F
