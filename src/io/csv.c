/* kiln — CSV reader (RFC 4180: quoted fields, embedded delimiters, doubled
 * quotes and newlines inside quotes, CRLF or LF, a last line without newline).
 *
 * Every cell lives in one arena: the decoded text of all cells, each
 * NUL-terminated, plus one offset per cell, so a file of tens of MB costs a
 * handful of allocations rather than one per cell. A cell's decoded text is
 * never longer than its source and each cell ends at a delimiter or line
 * ending (or the end of the data), so len + 1 bytes always hold the arena. */
#include "core/internal.h"
#include "io/atomic_file.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

struct kn_csv {
    char *arena;     /* cells, NUL-terminated, row-major (the header row first) */
    size_t *cell;    /* offset of each cell in arena */
    int64_t *line;   /* 1-based line on which each stored row starts */
    int64_t nrows;   /* stored rows, the header row included */
    int cols;
    bool has_header;
};

kn_csv_opts kn_csv_opts_default(void) {
    kn_csv_opts o = {',', true};
    return o;
}

typedef struct {
    const char *name;
    kn_csv *c;
    size_t ncells, cell_cap;
    int64_t row_cap;
} csv_builder;

static bool push_cell(csv_builder *b, size_t offset) {
    if (b->ncells == b->cell_cap) {
        size_t cap = b->cell_cap ? b->cell_cap * 2 : 1024;
        size_t *p = cap <= SIZE_MAX / sizeof *p ? realloc(b->c->cell, cap * sizeof *p) : NULL;
        if (!p) return false;
        b->c->cell = p;
        b->cell_cap = cap;
    }
    b->c->cell[b->ncells++] = offset;
    return true;
}

static bool push_row(csv_builder *b, int64_t line) {
    if (b->c->nrows == b->row_cap) {
        int64_t cap = b->row_cap ? b->row_cap * 2 : 256;
        int64_t *p = realloc(b->c->line, (size_t)cap * sizeof *p);
        if (!p) return false;
        b->c->line = p;
        b->row_cap = cap;
    }
    b->c->line[b->c->nrows++] = line;
    return true;
}

/* Bytes that end an unquoted field or need a look (class 1). */
enum { PLAIN = 0, SPECIAL = 1 };

kn_csv *kn_csv_parse(const char *data, size_t len, const kn_csv_opts *opts, const char *name) {
    kn_csv_opts o = opts ? *opts : kn_csv_opts_default();
    if (!name) name = "<csv>";
    if (!data && len > 0) {
        kn__err(KN_ERR_NULL, "%s: data is NULL", name);
        return NULL;
    }
    const char d = o.delimiter;
    if (d == '"' || d == '\n' || d == '\r' || d == '\0') {
        kn__err(KN_ERR_INVALID, "%s: invalid CSV delimiter (byte %d)", name, (int)(unsigned char)d);
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)data;
    size_t i = 0;
    if (len >= 2 && ((p[0] == 0xFF && p[1] == 0xFE) || (p[0] == 0xFE && p[1] == 0xFF))) {
        kn__err(KN_ERR_FORMAT, "%s: UTF-16 text is not supported (convert the file to UTF-8)",
                name);
        return NULL;
    }
    if (len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF) i = 3; /* UTF-8 BOM */
    if (i == len) {
        kn__err(KN_ERR_FORMAT, "%s: empty file", name);
        return NULL;
    }

    kn_csv *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->has_header = o.has_header;
    c->arena = malloc(len - i + 1);
    if (!c->arena) goto oom;
    csv_builder b = {name, c, 0, 0, 0};

    unsigned char cls[256] = {0};
    cls['\n'] = cls['\r'] = cls['\0'] = cls[(unsigned char)d] = SPECIAL;

    char *out = c->arena;
    size_t o_pos = 0;
    int64_t line = 1;
    int cols = -1;
    while (i < len) {
        /* Start of a row. Completely empty lines are skipped. */
        if (p[i] == '\n') {
            i++;
            line++;
            continue;
        }
        if (p[i] == '\r') {
            i++;
            if (i < len && p[i] == '\n') i++;
            line++;
            continue;
        }
        const int64_t row_line = line;
        int64_t fields = 0;
        for (;;) { /* one field */
            if (!push_cell(&b, o_pos)) goto oom;
            fields++;
            if (i < len && p[i] == '"') {
                const int64_t quote_line = line;
                i++;
                for (;;) {
                    if (i >= len) {
                        kn__err(KN_ERR_FORMAT,
                                "%s:%lld: unterminated quoted field (the quote opened on this "
                                "line is never closed)",
                                name, (long long)quote_line);
                        goto fail;
                    }
                    unsigned char ch = p[i];
                    if (ch == '"') {
                        if (i + 1 < len && p[i + 1] == '"') {
                            out[o_pos++] = '"';
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    if (ch == '\0') goto nul;
                    if (ch == '\n') line++;
                    out[o_pos++] = (char)ch;
                    i++;
                }
                /* Spaces after the closing quote are tolerated (and dropped). */
                while (i < len && (p[i] == ' ' || p[i] == '\t') && p[i] != (unsigned char)d) i++;
                if (i < len && p[i] != (unsigned char)d && p[i] != '\n' && p[i] != '\r') {
                    if (p[i] == '\0') goto nul;
                    kn__err(KN_ERR_FORMAT,
                            "%s:%lld: field %lld: unexpected character '%c' after a closing "
                            "quote (a quote inside a quoted field must be doubled)",
                            name, (long long)line, (long long)fields,
                            p[i] >= 0x20 && p[i] < 0x7F ? p[i] : '?');
                    goto fail;
                }
            } else {
                size_t start = i;
                while (i < len && cls[p[i]] == PLAIN) i++;
                if (i < len && p[i] == '\0') goto nul;
                memcpy(out + o_pos, p + start, i - start);
                o_pos += i - start;
            }
            out[o_pos++] = '\0';
            if (i >= len) break;
            if (p[i] == (unsigned char)d) {
                i++;
                continue;
            }
            /* line ending */
            if (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n') i++;
            i++;
            line++;
            break;
        }
        if (fields > INT_MAX) {
            kn__err(KN_ERR_FORMAT, "%s:%lld: row has too many fields (%lld)", name,
                    (long long)row_line, (long long)fields);
            goto fail;
        }
        if (cols < 0) {
            cols = (int)fields;
        } else if (fields != cols) {
            kn__err(KN_ERR_FORMAT, "%s:%lld: row has %lld field%s, %s has %d", name,
                    (long long)row_line, (long long)fields, fields == 1 ? "" : "s",
                    o.has_header ? "header" : "first row", cols);
            goto fail;
        }
        if (!push_row(&b, row_line)) goto oom;
    }
    if (c->nrows == 0) {
        kn__err(KN_ERR_FORMAT, "%s: empty file (only blank lines)", name);
        goto fail;
    }
    c->cols = cols;
    return c;

nul:
    kn__err(KN_ERR_FORMAT, "%s:%lld: binary data (NUL byte); not a text CSV file", name,
            (long long)line);
    goto fail;
oom:
    kn__err(KN_ERR_OOM, "%s: out of memory parsing CSV (%zu bytes)", name, len);
fail:
    kn_csv_free(c);
    return NULL;
}

kn_csv *kn_csv_read(const char *path, const kn_csv_opts *opts) {
    kn__file f;
    if (kn__file_read(path, &f) != KN_OK) return NULL;
    kn_csv *c = kn_csv_parse((const char *)f.data, f.len, opts, path);
    kn__file_release(&f);
    return c;
}

int64_t kn_csv_rows(const kn_csv *c) {
    if (!c) {
        kn__err_null("kn_csv_rows");
        return -1;
    }
    return c->nrows - (c->has_header ? 1 : 0);
}

int kn_csv_cols(const kn_csv *c) {
    if (!c) {
        kn__err_null("kn_csv_cols");
        return -1;
    }
    return c->cols;
}

const char *kn_csv_header(const kn_csv *c, int col) {
    if (!c) {
        kn__err_null("kn_csv_header");
        return NULL;
    }
    if (!c->has_header) {
        kn__err(KN_ERR_INVALID, "kn_csv_header: the CSV was read without a header row");
        return NULL;
    }
    if (col < 0 || col >= c->cols) {
        kn__err(KN_ERR_INVALID, "kn_csv_header: column %d out of range [0, %d)", col, c->cols);
        return NULL;
    }
    return c->arena + c->cell[col];
}

int kn_csv_column(const kn_csv *c, const char *name) {
    if (!c || !name || !c->has_header) return -1;
    for (int j = 0; j < c->cols; j++)
        if (strcmp(c->arena + c->cell[j], name) == 0) return j;
    return -1;
}

const char *kn_csv_cell(const kn_csv *c, int64_t row, int col) {
    if (!c) {
        kn__err_null("kn_csv_cell");
        return NULL;
    }
    int64_t rows = c->nrows - (c->has_header ? 1 : 0);
    if (row < 0 || row >= rows || col < 0 || col >= c->cols) {
        kn__err(KN_ERR_INVALID, "kn_csv_cell: (row %lld, column %d) out of range (%lld x %d)",
                (long long)row, col, (long long)rows, c->cols);
        return NULL;
    }
    int64_t r = row + (c->has_header ? 1 : 0);
    return c->arena + c->cell[(size_t)r * (size_t)c->cols + (size_t)col];
}

int64_t kn_csv_row_line(const kn_csv *c, int64_t row) {
    if (!c) {
        kn__err_null("kn_csv_row_line");
        return -1;
    }
    int64_t rows = c->nrows - (c->has_header ? 1 : 0);
    if (row < 0 || row >= rows) {
        kn__err(KN_ERR_INVALID, "kn_csv_row_line: row %lld out of range [0, %lld)",
                (long long)row, (long long)rows);
        return -1;
    }
    return c->line[row + (c->has_header ? 1 : 0)];
}

void kn_csv_free(kn_csv *c) {
    if (!c) return;
    free(c->arena);
    free(c->cell);
    free(c->line);
    free(c);
}
