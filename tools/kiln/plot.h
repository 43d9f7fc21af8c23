/* kiln command line: the canvas behind `--plot`. plot.c lays the picture out
 * once, in pixels, and draws it through these calls; png.c rasterizes them
 * (palette image, its own PNG encoder and bitmap font), svg.c writes them as
 * SVG elements. */
#ifndef KILN_PLOT_H
#define KILN_PLOT_H

#include "cli.h"

/* Colours by index: the PNG palette and the SVG fills alike. */
enum {
    INK_WHITE,
    INK_BLACK,
    INK_TEXT,
    INK_GRID,
    INK_AXIS,
    INK_TRAIN,
    INK_VAL,
    INK_NOTE,
    INK_SHADE, /* INK_SHADE + 0 .. N_SHADES - 1: white to dark blue (the confusion matrix) */
    N_SHADES = 32,
    N_INKS = INK_SHADE + N_SHADES
};
void ink_rgb(int ink, unsigned char rgb[3]);

enum { ANCHOR_START, ANCHOR_MIDDLE, ANCHOR_END };

/* The bitmap font's cell (scale 1): text of n characters is n * GLYPH_W wide;
 * y of a text call is the cell's top, and the baseline is GLYPH_ASCENT below. */
#define GLYPH_W 6
#define GLYPH_H 10
#define GLYPH_ASCENT 8

typedef struct {
    plot_format fmt;
    int w, h;
    unsigned char *px; /* PNG: one palette index per pixel, row by row */
    FILE *svg;         /* SVG: the document so far, in svg_text (a memory stream) */
    char *svg_text;
    size_t svg_len;
} canvas;

/* Characters of UTF-8 text as drawn (one per code point). */
int text_cols(const char *s);

/* png.c. Everything is clipped to the canvas. */
bool png_begin(canvas *c);
void png_rect(canvas *c, int x, int y, int w, int h, int ink);
void png_polyline(canvas *c, const double *x, const double *y, int n, int ink, int width);
/* vertical: read from bottom to top, (x, y) then the left end of the
 * glyphs' top and the start of the text. Non-ASCII characters draw as '?'. */
void png_text(canvas *c, int x, int y, const char *s, int scale, int ink, int anchor, bool vertical);
/* The encoded file (malloc'ed); false with a message. Frees the pixels. */
bool png_finish(canvas *c, unsigned char **data, size_t *len);

/* svg.c. cls: the element's class (NULL: none); title: a tooltip (NULL: none). */
bool svg_begin(canvas *c);
void svg_rect(canvas *c, int x, int y, int w, int h, int ink, const char *cls, const char *title);
void svg_polyline(canvas *c, const double *x, const double *y, int n, int ink, int width, const char *cls);
void svg_text(canvas *c, int x, int y, const char *s, int scale, int ink, int anchor, bool vertical);
/* The document (malloc'ed, not NUL-terminated); false with a message. */
bool svg_finish(canvas *c, char **data, size_t *len);

#endif
