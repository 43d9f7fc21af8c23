/* kiln command line: `kiln train --plot FILE.png|FILE.svg`. One layout for
 * both formats: a title, the loss per epoch (train and validation) beside
 * the accuracy per epoch (a regression: the validation R^2), each with axes,
 * numbered ticks and a legend, and for a classifier with test rows the test
 * confusion matrix (cells shaded by the row-normalized value, the counts in
 * the cells up to 20 classes, the class names on the axes). */
#include "plot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool plot_format_of(const char *opt, const char *path, plot_format *fmt) {
    const char *dot = path ? strrchr(path, '.') : NULL;
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (dot && (!slash || dot > slash) && !strcasecmp(dot, ".png")) *fmt = PLOT_PNG;
    else if (dot && (!slash || dot > slash) && !strcasecmp(dot, ".svg")) *fmt = PLOT_SVG;
    else return cli_error("%s %s: the picture's format comes from its extension: .png or .svg", opt, path ? path : ""), false;
    return true;
}

void ink_rgb(int ink, unsigned char rgb[3]) {
    static const unsigned char base[INK_SHADE][3] = {
        {255, 255, 255}, /* white */
        {0, 0, 0},       /* black */
        {40, 40, 40},    /* text */
        {225, 225, 225}, /* grid */
        {110, 110, 110}, /* axis */
        {31, 119, 180},  /* train: blue */
        {230, 110, 10},  /* validation: orange */
        {150, 150, 150}, /* notes */
    };
    if (ink >= 0 && ink < INK_SHADE) {
        memcpy(rgb, base[ink], 3);
        return;
    }
    /* Shades: white to dark blue, linear in each channel. */
    double t = (double)(ink - INK_SHADE) / (N_SHADES - 1);
    static const double to[3] = {8, 48, 107};
    for (int k = 0; k < 3; k++) rgb[k] = (unsigned char)lround(255 + t * (to[k] - 255));
}

int text_cols(const char *s) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) n += (*p & 0xc0) != 0x80;
    return n;
}

/* At most max characters of s (malloc'ed): longer text ends in "..". */
static char *cut(const char *s, int max) {
    char *out = cli_alloc(strlen(s) + 3);
    if (!out) return NULL;
    if (text_cols(s) <= max) return strcpy(out, s);
    const unsigned char *p = (const unsigned char *)s;
    for (int n = 0; *p; p++) {
        if ((*p & 0xc0) != 0x80 && n++ == max - 2) break;
    }
    size_t len = (size_t)(p - (const unsigned char *)s);
    memcpy(out, s, len);
    memcpy(out + len, "..", 3);
    return out;
}

/* ---- drawing: to the canvas's format --------------------------------------------------- */
static void rect(canvas *c, int x, int y, int w, int h, int ink, const char *cls, const char *title) {
    if (c->fmt == PLOT_SVG) svg_rect(c, x, y, w, h, ink, cls, title);
    else png_rect(c, x, y, w, h, ink);
}

static void polyline(canvas *c, const double *x, const double *y, int n, int ink, int width, const char *cls) {
    if (c->fmt == PLOT_SVG) svg_polyline(c, x, y, n, ink, width, cls);
    else png_polyline(c, x, y, n, ink, width);
}

static void seg(canvas *c, double x0, double y0, double x1, double y1, int ink, int width, const char *cls) {
    polyline(c, (double[]){x0, x1}, (double[]){y0, y1}, 2, ink, width, cls);
}

static void text(canvas *c, int x, int y, const char *s, int scale, int ink, int anchor, bool vertical) {
    if (c->fmt == PLOT_SVG) svg_text(c, x, y, s, scale, ink, anchor, vertical);
    else png_text(c, x, y, s, scale, ink, anchor, vertical);
}

/* ---- a chart of one or two series over the epochs --------------------------------------- */
/* 1, 2 or 5 times a power of ten, near range / n. */
static double nice_step(double range, int n) {
    double raw = range / n, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

static void tick_label(char *buf, size_t n, double v, double step, double span) {
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) < step * 1e-6) v = 0; /* no "-0.00" */
    if (span >= 1e6 || dec > 6) snprintf(buf, n, "%.3g", v);
    else snprintf(buf, n, "%.*f", dec, v);
}

typedef struct {
    int col;            /* the history's column */
    const char *name;   /* in the legend */
    const char *cls;    /* the SVG class */
    int ink;
} series;

#define MAX_SERIES 2
#define CHART_LEFT 64
#define CHART_RIGHT 16
#define CHART_TOP 30
#define CHART_BOTTOM 42

/* unit: clamp the axis to [0, 1] (accuracy, R^2 at most 1). */
static void chart(canvas *c, int x, int y, int w, int h, const char *title, const train_history *hi,
                  const series *sr, int n_sr, bool unit) {
    if (n_sr > MAX_SERIES) n_sr = MAX_SERIES;
    int px = x + CHART_LEFT, py = y + CHART_TOP, pw = w - CHART_LEFT - CHART_RIGHT, ph = h - CHART_TOP - CHART_BOTTOM;
    text(c, x + w / 2, y + 6, title, 2, INK_TEXT, ANCHOR_MIDDLE, false);
    double lo = INFINITY, hiv = -INFINITY;
    int shown = 0; /* series with a finite value */
    for (int s = 0; s < n_sr; s++) {
        bool any = false;
        for (int i = 0; i < hi->n; i++) {
            double v = hi->row[i][sr[s].col];
            if (!isfinite(v)) continue;
            lo = fmin(lo, v), hiv = fmax(hiv, v), any = true;
        }
        shown += any;
    }
    rect(c, px, py, pw, ph, INK_WHITE, "plot-area", NULL);
    if (!shown) {
        text(c, px + pw / 2, py + ph / 2 - GLYPH_H, hi->n ? "no validation rows" : "no epochs trained", 2, INK_NOTE,
             ANCHOR_MIDDLE, false);
        return;
    }
    if (hiv - lo < 1e-12 * fmax(1, fabs(lo))) { /* a flat series: a band around it */
        double pad = fabs(lo) > 0 ? fabs(lo) * 0.05 : 0.5;
        lo -= pad, hiv += pad;
    }
    double ystep = nice_step(hiv - lo, 5), y0 = floor(lo / ystep) * ystep, y1 = ceil(hiv / ystep) * ystep;
    if (unit) y0 = fmax(y0, lo >= 0 ? 0 : y0), y1 = fmin(y1, 1);
    if (y1 <= y0) y1 = y0 + ystep;
    double e0 = hi->row[0][H_EPOCH], e1 = hi->row[hi->n - 1][H_EPOCH];
    if (e1 <= e0) e0 -= 1, e1 += 1;
    double xstep = fmax(1, nice_step(e1 - e0, 6));
#define MAPX(e) (px + ((e) - e0) / (e1 - e0) * pw)
#define MAPY(v) (py + ph - ((v) - y0) / (y1 - y0) * ph)
    char buf[64];
    for (int k = 0;; k++) { /* y: grid lines and tick labels */
        double v = y0 + k * ystep;
        if (v > y1 + ystep * 1e-6) break;
        double yy = MAPY(v);
        seg(c, px, yy, px + pw, yy, INK_GRID, 1, "grid");
        seg(c, px - 5, yy, px, yy, INK_AXIS, 1, "tick");
        tick_label(buf, sizeof buf, v, ystep, fabs(y1) + fabs(y0));
        text(c, px - 8, (int)lround(yy) - GLYPH_H / 2, buf, 1, INK_TEXT, ANCHOR_END, false);
    }
    for (double e = ceil(e0 / xstep) * xstep; e <= e1 + 1e-9; e += xstep) { /* x: the epochs */
        double xx = MAPX(e);
        seg(c, xx, py, xx, py + ph, INK_GRID, 1, "grid");
        seg(c, xx, py + ph, xx, py + ph + 5, INK_AXIS, 1, "tick");
        snprintf(buf, sizeof buf, "%.0f", e);
        text(c, (int)lround(xx), py + ph + 8, buf, 1, INK_TEXT, ANCHOR_MIDDLE, false);
    }
    text(c, px + pw / 2, py + ph + 24, "epoch", 1, INK_TEXT, ANCHOR_MIDDLE, false);
    /* The curves: one point per epoch with a value. */
    double *xs = cli_alloc(((size_t)hi->n * (size_t)n_sr + 1) * sizeof *xs);
    double *ys = cli_alloc(((size_t)hi->n * (size_t)n_sr + 1) * sizeof *ys);
    int np[MAX_SERIES] = {0}; /* points of each series, series s's from s * hi->n */
    for (int s = 0; xs && ys && s < n_sr; s++)
        for (int i = 0; i < hi->n; i++) {
            double v = hi->row[i][sr[s].col];
            if (!isfinite(v)) continue;
            xs[s * hi->n + np[s]] = MAPX(hi->row[i][H_EPOCH]);
            ys[s * hi->n + np[s]++] = MAPY(v);
        }
#undef MAPX
#undef MAPY
    /* The legend goes in the corner the curves cross least (sampled along
     * each segment), top right when they tie. */
    int lw = 0, keys = 0; /* the legend names the series drawn */
    for (int s = 0; s < n_sr; s++)
        if (np[s]) lw = text_cols(sr[s].name) > lw ? text_cols(sr[s].name) : lw, keys++;
    int bw = 36 + lw * GLYPH_W, bh = 8 + 14 * keys, bx = px + pw - bw - 8, by = py + 8;
    int best = -1;
    for (int corner = 0; corner < 4 && xs && ys; corner++) {
        int cx = corner & 1 ? px + 8 : px + pw - bw - 8, cy = corner & 2 ? py + ph - bh - 8 : py + 8, hits = 0;
        for (int s = 0; s < n_sr; s++)
            for (int i = 0; i < np[s]; i++)
                for (int t = 0; t < 8; t++) {
                    int j = i + 1 < np[s] ? i + 1 : i;
                    double qx = xs[s * hi->n + i] + (xs[s * hi->n + j] - xs[s * hi->n + i]) * t / 8;
                    double qy = ys[s * hi->n + i] + (ys[s * hi->n + j] - ys[s * hi->n + i]) * t / 8;
                    hits += qx >= cx - 4 && qx <= cx + bw + 4 && qy >= cy - 4 && qy <= cy + bh + 4;
                }
        if (best < 0 || hits < best) best = hits, bx = cx, by = cy;
    }
    for (int s = 0; xs && ys && s < n_sr; s++)
        polyline(c, xs + s * hi->n, ys + s * hi->n, np[s], sr[s].ink, 2, sr[s].cls);
    free(xs);
    free(ys);
    /* Axes over the grid, then the legend. */
    seg(c, px, py, px, py + ph, INK_AXIS, 1, "axis");
    seg(c, px, py + ph, px + pw, py + ph, INK_AXIS, 1, "axis");
    rect(c, bx, by, bw, bh, INK_GRID, "legend", NULL);
    rect(c, bx + 1, by + 1, bw - 2, bh - 2, INK_WHITE, NULL, NULL);
    for (int s = 0, k = 0; s < n_sr; s++) {
        if (!np[s]) continue;
        int ly = by + 4 + 14 * k++;
        seg(c, bx + 6, ly + GLYPH_H / 2, bx + 26, ly + GLYPH_H / 2, sr[s].ink, 2, "legend-key");
        text(c, bx + 30, ly, sr[s].name, 1, INK_TEXT, ANCHOR_START, false);
    }
}

/* ---- the confusion matrix ---------------------------------------------------------------- */
#define CM_TEXT_MAX 20  /* classes with the counts written in the cells */
#define CM_MAX 256      /* classes drawn at all: a larger matrix is a picture of noise */
#define LABEL_MAX 16    /* characters of a class name */

typedef struct {
    int k, cell, label_w, label_h, w, h;
    bool names, counts;
    int count_scale;
} cm_layout;

static cm_layout cm_plan(const metrics *m, char *const *classes) {
    cm_layout L = {.k = m->k};
    int k = m->k, longest = 1, digits = 1;
    for (int i = 0; i < k; i++) {
        int l = text_cols(classes[i]);
        longest = l > longest ? l : longest;
    }
    int64_t top = 0;
    for (int64_t i = 0; i < (int64_t)k * k; i++) top = m->cm[i] > top ? m->cm[i] : top;
    for (; top >= 10; top /= 10) digits++;
    if (longest > LABEL_MAX) longest = LABEL_MAX;
    L.counts = k <= CM_TEXT_MAX;
    if (L.counts) {
        L.cell = 560 / k > 64 ? 64 : 560 / k < 28 ? 28 : 560 / k;
        if (L.cell < digits * GLYPH_W + 6) L.cell = digits * GLYPH_W + 6;
        L.count_scale = digits * GLYPH_W * 2 + 8 <= L.cell && L.cell >= 2 * GLYPH_H + 8 ? 2 : 1;
    } else {
        L.cell = 640 / k < 2 ? 2 : 640 / k > 24 ? 24 : 640 / k;
    }
    L.names = L.cell >= GLYPH_H + 1;
    L.label_w = (L.names ? longest * GLYPH_W + 10 : 0) + 18; /* names, then the axis title */
    L.label_h = (L.names ? longest * GLYPH_W + 10 : 0) + 18;
    L.w = L.label_w + k * L.cell + 90; /* the shade scale on the right */
    L.h = 34 + k * L.cell + L.label_h + 10;
    return L;
}

static void confusion(canvas *c, int x, int y, const cm_layout *L, const metrics *m, char *const *classes) {
    int k = L->k, cs = L->cell, mx = x + L->label_w, my = y + 34;
    char buf[96];
    double acc = m->n ? (double)m->correct / (double)m->n : 0;
    snprintf(buf, sizeof buf, "test confusion matrix: %lld rows, accuracy %.4f", (long long)m->n, acc);
    text(c, mx + k * cs / 2, y + 4, buf, 2, INK_TEXT, ANCHOR_MIDDLE, false);
    for (int i = 0; i < k; i++) {
        int64_t row = 0;
        for (int j = 0; j < k; j++) row += m->cm[(int64_t)i * k + j];
        for (int j = 0; j < k; j++) {
            int64_t v = m->cm[(int64_t)i * k + j];
            double f = row ? (double)v / (double)row : 0;
            int shade = (int)lround(f * (N_SHADES - 1));
            char *ti = NULL, *tj = NULL, *tip = NULL;
            size_t tn = 0;
            if (c->fmt == PLOT_SVG && (ti = cut(classes[i], 40)) && (tj = cut(classes[j], 40)) &&
                (tip = cli_alloc(tn = strlen(ti) + strlen(tj) + 96)))
                snprintf(tip, tn, "true %s, predicted %s: %lld (%.1f%% of the row)", ti, tj, (long long)v, 100 * f);
            rect(c, mx + j * cs, my + i * cs, cs, cs, INK_SHADE + shade, "cell", tip);
            free(ti), free(tj), free(tip);
            if (L->counts) {
                snprintf(buf, sizeof buf, "%lld", (long long)v);
                int sc = L->count_scale;
                text(c, mx + j * cs + cs / 2, my + i * cs + (cs - GLYPH_H * sc) / 2, buf, sc,
                     f > 0.5 ? INK_WHITE : INK_TEXT, ANCHOR_MIDDLE, false);
            }
        }
    }
    if (k <= CM_TEXT_MAX) /* cell borders, where cells are large enough to see them */
        for (int i = 0; i <= k; i++) {
            seg(c, mx, my + i * cs, mx + k * cs, my + i * cs, INK_GRID, 1, "cell-border");
            seg(c, mx + i * cs, my, mx + i * cs, my + k * cs, INK_GRID, 1, "cell-border");
        }
    for (int i = 0; L->names && i < k; i++) {
        char *name = cut(classes[i], LABEL_MAX);
        if (!name) break;
        text(c, mx - 6, my + i * cs + (cs - GLYPH_H) / 2, name, 1, INK_TEXT, ANCHOR_END, false);
        text(c, mx + i * cs + (cs - GLYPH_H) / 2, my + k * cs + 6, name, 1, INK_TEXT, ANCHOR_END, true);
        free(name);
    }
    text(c, x + 2, my + k * cs / 2, "true class", 1, INK_TEXT, ANCHOR_MIDDLE, true);
    text(c, mx + k * cs / 2, my + k * cs + L->label_h - 14, L->names ? "predicted class" :
         "predicted class (names left out: too many classes)", 1, INK_TEXT, ANCHOR_MIDDLE, false);
    /* The shade scale: the fraction of the true class's rows. */
    int sx = mx + k * cs + 24, sh = k * cs < 160 ? k * cs : 160, step = sh / N_SHADES > 0 ? sh / N_SHADES : 1;
    for (int s = 0; s < N_SHADES; s++)
        rect(c, sx, my + (N_SHADES - 1 - s) * step, 14, step, INK_SHADE + s, "scale", NULL);
    text(c, sx + 20, my, "1", 1, INK_TEXT, ANCHOR_START, false);
    text(c, sx + 20, my + N_SHADES * step - GLYPH_H, "0", 1, INK_TEXT, ANCHOR_START, false);
    text(c, sx + 20, my + N_SHADES * step + 6, "of row", 1, INK_TEXT, ANCHOR_START, false);
}

/* ---- the picture ---------------------------------------------------------------------------- */
#define CHART_W 600
#define CHART_H 380
#define TITLE_H 44

bool plot_write(const char *path, plot_format fmt, const schema *s, const train_history *h, const metrics *test) {
    bool matrix = test && test->k >= 1 && test->k <= CM_MAX && test->n > 0;
    cm_layout L = matrix ? cm_plan(test, s->classes) : (cm_layout){0};
    canvas c = {.fmt = fmt, .w = 2 * CHART_W, .h = TITLE_H + CHART_H + 10};
    if (matrix) {
        if (L.w + 40 > c.w) c.w = L.w + 40;
        c.h += L.h + 20;
    } else if (test && test->n > 0) {
        c.h += 30; /* the note below */
    }
    if (!(fmt == PLOT_SVG ? svg_begin(&c) : png_begin(&c))) return false;

    char *target = cut(s->target, 40);
    size_t tn = target ? strlen(target) + 160 : 0;
    char *title = target ? cli_alloc(tn) : NULL;
    if (title) {
        int n = snprintf(title, tn, "kiln train: %s (%s)", target,
                     s->regression ? "regression" : s->n_labels ? "multi-label" : "classification");
        if (h->n && n > 0 && (size_t)n < tn)
            snprintf(title + n, tn - (size_t)n, ", epochs %.0f-%.0f%s", h->row[0][H_EPOCH], h->row[h->n - 1][H_EPOCH],
                     h->row[0][H_EPOCH] > 1 ? " (earlier epochs: not in the checkpoint)" : "");
        int scale = text_cols(title) * GLYPH_W * 2 <= c.w - 20 ? 2 : 1; /* a long target name */
        text(&c, c.w / 2, scale == 2 ? 12 : 16, title, scale, INK_BLACK, ANCHOR_MIDDLE, false);
    }
    free(title);
    free(target);

    const series loss[] = {{H_TRAIN_LOSS, "train", "curve train-loss", INK_TRAIN},
                           {H_VAL_LOSS, "validation", "curve val-loss", INK_VAL}};
    const series acc[] = {{H_TRAIN_ACC, "train", "curve train-accuracy", INK_TRAIN},
                          {H_VAL_METRIC, "validation", "curve val-accuracy", INK_VAL}};
    const series r2[] = {{H_VAL_METRIC, "validation", "curve val-r2", INK_VAL}};
    int x0 = (c.w - 2 * CHART_W) / 2;
    chart(&c, x0, TITLE_H, CHART_W, CHART_H,
          s->regression ? "loss (MSE of the standardized target)"
          : s->n_labels ? "loss (binary cross-entropy per label)" : "loss (cross-entropy)", h, loss, 2, false);
    if (s->regression) chart(&c, x0 + CHART_W, TITLE_H, CHART_W, CHART_H, "validation R^2", h, r2, 1, true);
    else chart(&c, x0 + CHART_W, TITLE_H, CHART_W, CHART_H, s->n_labels ? "mean label accuracy" : "accuracy", h, acc, 2,
               true);
    int y = TITLE_H + CHART_H + 10;
    if (matrix) {
        confusion(&c, (c.w - L.w) / 2, y + 10, &L, test, s->classes);
    } else if (test && test->n > 0) {
        char note[96];
        snprintf(note, sizeof note, "confusion matrix not drawn: %d classes (more than %d)", test->k, CM_MAX);
        text(&c, c.w / 2, y + 6, note, 1, INK_NOTE, ANCHOR_MIDDLE, false);
    }

    kn_status st;
    if (fmt == PLOT_SVG) {
        char *doc;
        size_t len;
        if (!svg_finish(&c, &doc, &len)) return false;
        st = kn_file_write_atomic(path, doc, len);
        free(doc);
    } else {
        unsigned char *png;
        size_t len;
        if (!png_finish(&c, &png, &len)) return false;
        st = kn_file_write_atomic(path, png, len);
        free(png);
    }
    if (st != KN_OK) return cli_error("--plot: %s", kn_error()), false;
    return true;
}
