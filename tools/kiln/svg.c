/* kiln command line: `--plot FILE.svg`. The same drawing calls as png.c,
 * written as SVG elements with a class each (curve, cell, ...), so the file
 * scales, and a program can read the figures back. Text from the data (the
 * target's and the classes' names) is escaped for XML: a name that is not
 * valid UTF-8, or holds characters XML forbids, shows them as '?'. */
#include "plot.h"

#include <stdlib.h>
#include <string.h>

bool svg_begin(canvas *c) {
    c->svg_text = NULL;
    c->svg_len = 0;
    c->svg = open_memstream(&c->svg_text, &c->svg_len);
    if (!c->svg) return cli_error("--plot: out of memory"), false;
    fprintf(c->svg,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\">\n"
            "<rect class=\"background\" x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n",
            c->w, c->h, c->w, c->h, c->w, c->h);
    return true;
}

static void colour(FILE *f, int ink) {
    unsigned char rgb[3];
    ink_rgb(ink, rgb);
    fprintf(f, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

/* Text content or an attribute value: XML's five escapes; control characters,
 * U+FFFE/U+FFFF and (in text that is not UTF-8) every non-ASCII byte as '?'. */
static void escaped(FILE *f, const char *s) {
    bool utf8 = kn_utf8_valid(s, strlen(s));
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '&') fputs("&amp;", f);
        else if (*p == '<') fputs("&lt;", f);
        else if (*p == '>') fputs("&gt;", f);
        else if (*p == '"') fputs("&quot;", f);
        else if (*p == '\'') fputs("&apos;", f);
        else if (*p < 0x20 || (*p >= 0x80 && !utf8)) fputc('?', f);
        else if (*p == 0xef && p[1] == 0xbf && (p[2] == 0xbe || p[2] == 0xbf)) fputc('?', f), p += 2;
        else fputc(*p, f);
    }
}

static void class_attr(FILE *f, const char *cls) {
    if (cls) fprintf(f, " class=\"%s\"", cls); /* our own names, never the data's */
}

void svg_rect(canvas *c, int x, int y, int w, int h, int ink, const char *cls, const char *title) {
    fprintf(c->svg, "<rect");
    class_attr(c->svg, cls);
    fprintf(c->svg, " x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"", x, y, w, h);
    colour(c->svg, ink);
    if (!title) {
        fprintf(c->svg, "\"/>\n");
        return;
    }
    fprintf(c->svg, "\"><title>");
    escaped(c->svg, title);
    fprintf(c->svg, "</title></rect>\n");
}

void svg_polyline(canvas *c, const double *x, const double *y, int n, int ink, int width, const char *cls) {
    if (n <= 0) return;
    fprintf(c->svg, "<polyline");
    class_attr(c->svg, cls);
    fprintf(c->svg, " fill=\"none\" stroke-width=\"%d\" stroke-linejoin=\"round\" stroke-linecap=\"round\" stroke=\"",
            width);
    colour(c->svg, ink);
    fprintf(c->svg, "\" points=\"");
    for (int i = 0; i < n; i++) fprintf(c->svg, "%s%.2f,%.2f", i ? " " : "", x[i], y[i]);
    fprintf(c->svg, "\"/>\n");
}

void svg_text(canvas *c, int x, int y, const char *s, int scale, int ink, int anchor, bool vertical) {
    static const char *const anchors[] = {"start", "middle", "end"};
    /* (x, y) is the text cell's top-left, as in png.c; SVG places the baseline. */
    int bx = vertical ? x + GLYPH_ASCENT * scale : x, by = vertical ? y : y + GLYPH_ASCENT * scale;
    fprintf(c->svg, "<text x=\"%d\" y=\"%d\" font-size=\"%d\" text-anchor=\"%s\" fill=\"", bx, by, GLYPH_H * scale,
            anchors[anchor]);
    colour(c->svg, ink);
    fprintf(c->svg, "\"");
    if (vertical) fprintf(c->svg, " transform=\"rotate(-90 %d %d)\"", bx, by);
    fprintf(c->svg, ">");
    escaped(c->svg, s);
    fprintf(c->svg, "</text>\n");
}

bool svg_finish(canvas *c, char **data, size_t *len) {
    fprintf(c->svg, "</svg>\n");
    bool failed = ferror(c->svg) != 0;
    if (fclose(c->svg) != 0 || failed) {
        free(c->svg_text);
        c->svg = NULL;
        c->svg_text = NULL;
        *data = NULL;
        return cli_error("--plot: out of memory writing the SVG"), false;
    }
    c->svg = NULL;
    *data = c->svg_text;
    *len = c->svg_len;
    c->svg_text = NULL;
    return true;
}
