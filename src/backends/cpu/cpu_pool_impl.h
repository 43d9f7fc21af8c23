/* The pooling kernels for one element type, included by cpu_pool.c with T
 * and SFX defined. Contiguous [N, C, H, W] in, [N, C, OH, OW] out; planes
 * run in parallel (each unit owns its output plane, so backward too). */
#define F(name) KN_CPU_CAT(name, SFX)

typedef struct {
    const kn_win *g;
    const T *x;
    T *y;
    int64_t *idx;
    const int64_t *cidx;
    bool include_pad;
    int64_t divisor;
} F(pool_ctx);

static void F(max_range)(int64_t lo, int64_t hi, void *p) {
    const F(pool_ctx) *c = p;
    const kn_win *g = c->g;
    for (int64_t u = lo; u < hi; u++) {
        const T *xp = c->x + u * g->H * g->W;
        T *yp = c->y + u * g->OH * g->OW;
        int64_t *ip = c->idx + u * g->OH * g->OW;
        for (int64_t i = 0; i < g->OH; i++)
            for (int64_t j = 0; j < g->OW; j++) {
                T best = 0;
                int64_t at = -1;
                for (int64_t a = 0; a < g->kh; a++) {
                    int64_t h = i * g->sh - g->ph + a * g->dh;
                    if (h < 0 || h >= g->H) continue;
                    for (int64_t b = 0; b < g->kw; b++) {
                        int64_t w = j * g->sw - g->pw + b * g->dw;
                        if (w < 0 || w >= g->W) continue;
                        T v = xp[h * g->W + w];
                        /* The first maximum; the first NaN beats everything. */
                        if (at < 0 || v > best || (v != v && best == best)) best = v, at = h * g->W + w;
                    }
                }
                yp[i * g->OW + j] = best;
                ip[i * g->OW + j] = at;
            }
    }
}

static void F(max_back_range)(int64_t lo, int64_t hi, void *p) {
    const F(pool_ctx) *c = p;
    const kn_win *g = c->g;
    for (int64_t u = lo; u < hi; u++) {
        const T *gp = c->x + u * g->OH * g->OW;
        const int64_t *ip = c->cidx + u * g->OH * g->OW;
        T *gx = c->y + u * g->H * g->W;
        memset(gx, 0, (size_t)(g->H * g->W) * sizeof(T));
        for (int64_t q = 0; q < g->OH * g->OW; q++) gx[ip[q]] += gp[q];
    }
}

/* The divisor of window (i, j), as PyTorch's avg_pool2d. */
static int64_t F(avg_divisor)(const F(pool_ctx) *c, int64_t i, int64_t j, int64_t *h0, int64_t *h1, int64_t *w0,
                              int64_t *w1) {
    const kn_win *g = c->g;
    int64_t hs = i * g->sh - g->ph, ws = j * g->sw - g->pw;
    int64_t he = hs + g->kh < g->H + g->ph ? hs + g->kh : g->H + g->ph;
    int64_t we = ws + g->kw < g->W + g->pw ? ws + g->kw : g->W + g->pw;
    int64_t pool = (he - hs) * (we - ws);
    *h0 = hs > 0 ? hs : 0, *w0 = ws > 0 ? ws : 0;
    *h1 = he < g->H ? he : g->H, *w1 = we < g->W ? we : g->W;
    if (c->divisor > 0) return c->divisor;
    return c->include_pad ? pool : (*h1 - *h0) * (*w1 - *w0);
}

static void F(avg_range)(int64_t lo, int64_t hi, void *p) {
    const F(pool_ctx) *c = p;
    const kn_win *g = c->g;
    for (int64_t u = lo; u < hi; u++) {
        const T *xp = c->x + u * g->H * g->W;
        T *yp = c->y + u * g->OH * g->OW;
        for (int64_t i = 0; i < g->OH; i++)
            for (int64_t j = 0; j < g->OW; j++) {
                int64_t h0, h1, w0, w1, d = F(avg_divisor)(c, i, j, &h0, &h1, &w0, &w1);
                double s = 0;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) s += xp[h * g->W + w];
                yp[i * g->OW + j] = h1 > h0 && w1 > w0 ? (T)(s / (double)d) : 0;
            }
    }
}

static void F(avg_back_range)(int64_t lo, int64_t hi, void *p) {
    const F(pool_ctx) *c = p;
    const kn_win *g = c->g;
    for (int64_t u = lo; u < hi; u++) {
        const T *gp = c->x + u * g->OH * g->OW;
        T *gx = c->y + u * g->H * g->W;
        memset(gx, 0, (size_t)(g->H * g->W) * sizeof(T));
        for (int64_t i = 0; i < g->OH; i++)
            for (int64_t j = 0; j < g->OW; j++) {
                int64_t h0, h1, w0, w1, d = F(avg_divisor)(c, i, j, &h0, &h1, &w0, &w1);
                T v = (T)(gp[i * g->OW + j] / (double)d);
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) gx[h * g->W + w] += v;
            }
    }
}

#undef F
