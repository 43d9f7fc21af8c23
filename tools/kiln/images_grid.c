/* kiln command line: `kiln train-images --grid FILE.png`, the misclassified
 * test images in a grid. It draws through the canvas of png.c (its palette
 * and font): pixels in the palette's 32 shades (white for 0 to dark blue for
 * 255), each tile framed in the validation orange, which nothing else in the
 * picture uses, and labelled with the true class and, below, "-> predicted". */
#include "images.h"
#include "plot.h"

#include <stdlib.h>
#include <string.h>

#define TILE_SIDE 84 /* pixels of an image's longer side in the grid */
#define BORDER 3
#define GAP 8
#define LABEL_H (2 * (GLYPH_H + 1) + 2)
#define TITLE_H 26
#define MARGIN 10
#define GRID_COLS 8
#define LABEL_COLS 14 /* characters a tile's label holds at least */

/* The grey level of pixel (y, x) of an image: its value, or the luminance of
 * the first three channels. */
static int grey(const uint8_t *img, int c, int h, int w, int y, int x) {
    size_t plane = (size_t)h * w, at = (size_t)y * w + x;
    if (c < 3) return img[at];
    return (299 * img[at] + 587 * img[plane + at] + 114 * img[2 * plane + at] + 500) / 1000;
}

/* s cut to n characters (UTF-8 characters count as one; png_text draws them as '?'). */
static void cut_to(const char *s, int n, char *out, size_t cap) {
    size_t k = 0;
    int cols = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && k + 1 < cap; p++) {
        if ((*p & 0xc0) != 0x80 && cols++ == n) break;
        out[k++] = (char)*p;
    }
    out[k] = 0;
}

bool img_grid_write(const char *path, const img_set *t, const int64_t *idx, int64_t n_mis, const int64_t *pred,
                    char *const *classes) {
    int n = n_mis < IMG_GRID_MAX ? (int)n_mis : IMG_GRID_MAX;
    int side = t->h > t->w ? t->h : t->w;
    int dh, dw; /* an image's size in the grid: scaled up by a whole factor, or down to TILE_SIDE */
    if (side <= TILE_SIDE) dh = t->h * (TILE_SIDE / side), dw = t->w * (TILE_SIDE / side);
    else dh = t->h * TILE_SIDE / side, dw = t->w * TILE_SIDE / side;
    if (dh < 1) dh = 1;
    if (dw < 1) dw = 1;
    int cell_w = dw + 2 * BORDER > LABEL_COLS * GLYPH_W ? dw + 2 * BORDER : LABEL_COLS * GLYPH_W;
    cell_w += GAP;
    int cell_h = dh + 2 * BORDER + LABEL_H + GAP;
    int cols = n < GRID_COLS ? (n ? n : 1) : GRID_COLS, rows = (n + cols - 1) / cols;
    char title[160];
    if (n_mis == 0) snprintf(title, sizeof title, "no misclassified test images (of %lld)", (long long)t->n);
    else
        snprintf(title, sizeof title, "misclassified test images: %s%d of %lld (of %lld test images), true -> predicted",
                 n < n_mis ? "the first " : "", n, (long long)n_mis, (long long)t->n);
    canvas c = {.fmt = PLOT_PNG, .w = 2 * MARGIN + cols * cell_w, .h = TITLE_H + rows * cell_h + MARGIN};
    int tw = text_cols(title) * GLYPH_W + 2 * MARGIN;
    if (c.w < tw) c.w = tw;
    if (!png_begin(&c)) return false;
    png_text(&c, MARGIN, (TITLE_H - GLYPH_H) / 2, title, 1, INK_BLACK, ANCHOR_START, false);
    int label_cols = (cell_w - GAP) / GLYPH_W;
    for (int i = 0; i < n; i++) {
        int x0 = MARGIN + (i % cols) * cell_w, y0 = TITLE_H + (i / cols) * cell_h;
        png_rect(&c, x0, y0, dw + 2 * BORDER, dh + 2 * BORDER, INK_VAL);
        const uint8_t *img = img_pixels(t, idx[i]);
        for (int y = 0; y < dh; y++)
            for (int x = 0; x < dw; x++) { /* nearest source pixel */
                int v = grey(img, t->c, t->h, t->w, (int)((int64_t)y * t->h / dh), (int)((int64_t)x * t->w / dw));
                png_rect(&c, x0 + BORDER + x, y0 + BORDER + y, 1, 1, INK_SHADE + (v * (N_SHADES - 1) + 127) / 255);
            }
        char a[64], b[64], line[72];
        cut_to(classes[t->y[idx[i]]], label_cols, a, sizeof a);
        cut_to(classes[pred[idx[i]]], label_cols - 3, b, sizeof b);
        snprintf(line, sizeof line, "-> %s", b);
        int ty = y0 + dh + 2 * BORDER + 2;
        png_text(&c, x0, ty, a, 1, INK_TEXT, ANCHOR_START, false);
        png_text(&c, x0, ty + GLYPH_H + 1, line, 1, INK_BLACK, ANCHOR_START, false);
    }
    unsigned char *png;
    size_t len;
    if (!png_finish(&c, &png, &len)) return false;
    kn_status st = kn_file_write_atomic(path, png, len);
    free(png);
    if (st != KN_OK) return cli_error("--grid: %s", kn_error()), false;
    return true;
}
