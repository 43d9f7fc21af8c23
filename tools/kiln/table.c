/* kiln command line: from CSV cells to model inputs.
 *
 * Column types are inferred from every row (a column is numeric when each of
 * its non-missing values is a plain decimal number); vocabularies, means and
 * standard deviations come from the training rows only, so nothing about the
 * validation or test rows leaks into the inputs. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- small string hash map: value -> code ------------------------------------------- */
typedef struct {
    const char **key;
    int *val;
    size_t cap, len;
} strmap;

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static bool map_grow(strmap *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    const char **k = calloc(cap, sizeof *k);
    int *v = calloc(cap, sizeof *v);
    if (!k || !v) {
        free(k);
        free(v);
        cli_error("out of memory");
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->key[i]) continue;
        size_t j = str_hash(m->key[i]) & (cap - 1);
        while (k[j]) j = (j + 1) & (cap - 1);
        k[j] = m->key[i];
        v[j] = m->val[i];
    }
    free(m->key);
    free(m->val);
    m->key = k;
    m->val = v;
    m->cap = cap;
    return true;
}

/* Code of s, or -1. */
static int map_get(const strmap *m, const char *s) {
    if (!m->cap) return -1;
    for (size_t j = str_hash(s) & (m->cap - 1); m->key[j]; j = (j + 1) & (m->cap - 1))
        if (!strcmp(m->key[j], s)) return m->val[j];
    return -1;
}

/* Inserts s (the pointer is kept) with code val unless present; returns its code. */
static int map_put(strmap *m, const char *s, int val) {
    int c = map_get(m, s);
    if (c >= 0) return c;
    if ((m->len + 1) * 2 > m->cap && !map_grow(m)) return -2;
    size_t j = str_hash(s) & (m->cap - 1);
    while (m->key[j]) j = (j + 1) & (m->cap - 1);
    m->key[j] = s;
    m->val[j] = val;
    m->len++;
    return val;
}

static void map_free(strmap *m) {
    free(m->key);
    free(m->val);
    *m = (strmap){0};
}

/* ---- cells ------------------------------------------------------------------------------ */
/* A cell's blanks at either end, as [a, b) of s. */
static void trim_span(const char *s, size_t *a, size_t *b) {
    size_t n = strlen(s), i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
    while (n > i && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    *a = i;
    *b = n;
}

/* A cell without surrounding blanks: s itself, or a copy in a buffer that
 * grows to any length (values are never cut, so long ones stay distinct) and
 * holds it until the next call. Out of memory ends the program: this runs
 * while reading input, before anything is written. */
static const char *trimmed(const char *s) {
    static char *buf;
    static size_t cap;
    size_t a, b;
    trim_span(s, &a, &b);
    if (a == 0 && !s[b]) return s;
    if (b - a + 1 > cap) {
        size_t want = (b - a + 1) * 2;
        char *p = realloc(buf, want);
        if (!p) {
            cli_error("out of memory reading a value of %zu bytes", b - a);
            exit(1);
        }
        buf = p;
        cap = want;
    }
    memcpy(buf, s + a, b - a);
    buf[b - a] = 0;
    return buf;
}

bool is_missing(const char *s) {
    static const char *const tokens[] = {"?", "NA", "N/A", "na", "n/a", "NaN", "nan", "null", "NULL", "None"};
    size_t a, b;
    trim_span(s, &a, &b);
    if (a == b) return true;
    for (size_t i = 0; i < sizeof tokens / sizeof *tokens; i++)
        if (strlen(tokens[i]) == b - a && !memcmp(s + a, tokens[i], b - a)) return true;
    return false;
}

bool parse_number(const char *s, double *out) {
    while (*s == ' ' || *s == '\t') s++;
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    bool digits = false;
    while (isdigit((unsigned char)*p)) p++, digits = true;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) p++, digits = true;
    }
    if (!digits) return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!isdigit((unsigned char)*p)) return false;
        while (isdigit((unsigned char)*p)) p++;
    }
    const char *end = p;
    while (*p == ' ' || *p == '\t') p++;
    if (*p) return false;
    errno = 0;
    char *e;
    double v = strtod(s, &e);
    if (e != end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Numbers in numeric order, otherwise byte order (pandas sorts categories so). */
static int cmp_class(const void *a, const void *b) {
    double x, y;
    const char *s = *(char *const *)a, *t = *(char *const *)b;
    if (parse_number(s, &x) && parse_number(t, &y) && x != y) return x < y ? -1 : 1;
    return strcmp(s, t);
}

kn_csv *table_read(const char *path, char delimiter) {
    kn_csv_opts o = kn_csv_opts_default();
    o.delimiter = delimiter;
    kn_csv *c = kn_csv_read(path, &o);
    if (!c) {
        cli_error("%s", kn_error());
        return NULL;
    }
    int cols = kn_csv_cols(c);
    int64_t rows = kn_csv_rows(c);
    strmap names = {0};
    for (int j = 0; j < cols; j++) {
        const char *h = kn_csv_header(c, j);
        if (!kn_utf8_valid(h, strlen(h))) {
            cli_error("%s:1: column %d: the header is not UTF-8 text (convert the file to UTF-8; or is it not "
                      "a CSV file?)", path, j + 1);
            goto fail;
        }
        int k = *h ? map_put(&names, h, j) : j; /* a hash: files with 100,000 columns stay fast */
        if (k == -2) goto fail;
        if (k != j) {
            cli_error("%s:1: column name '%s' appears twice (columns %d and %d)", path, h, k + 1, j + 1);
            goto fail;
        }
    }
    map_free(&names);
    if (rows == 0) {
        cli_error("%s: no data rows (only a header line)", path);
        goto fail;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            const char *s = kn_csv_cell(c, r, j);
            if (!kn_utf8_valid(s, strlen(s))) {
                cli_error("%s:%lld: column '%s': not UTF-8 text (convert the file to UTF-8; or is it not a CSV "
                          "file?)", path,
                          (long long)kn_csv_row_line(c, r), kn_csv_header(c, j));
                goto fail;
            }
        }
    return c;
fail:
    map_free(&names);
    kn_csv_free(c);
    return NULL;
}

static const char *col_name(const kn_csv *c, int j) {
    static char buf[32];
    const char *h = kn_csv_header(c, j);
    if (h && *h) return h;
    snprintf(buf, sizeof buf, "column_%d", j + 1); /* an unnamed column (a pandas index) */
    return buf;
}

static int find_col(const kn_csv *c, const char *name) {
    for (int j = 0; j < kn_csv_cols(c); j++)
        if (!strcmp(col_name(c, j), name)) return j;
    return -1;
}

int table_col(const kn_csv *c, const char *name) { return find_col(c, name); }
const char *cell_trimmed(const char *s) { return trimmed(s); }
int cmp_class_name(const void *a, const void *b) { return cmp_class(a, b); }

bool schema_is_target(const schema *s, const char *name) {
    if (!s->n_labels) return s->target && !strcmp(name, s->target);
    for (int l = 0; l < s->n_labels; l++)
        if (!strcmp(name, s->labels[l])) return true;
    return false;
}

/* The column names for a message, at most 40 of them (malloc'ed; NULL when out of memory). */
char *table_columns_list(const kn_csv *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    int n = kn_csv_cols(c);
    for (int j = 0; j < n && j < 40; j++) fprintf(f, "%s%s", j ? ", " : "", col_name(c, j));
    if (n > 40) fprintf(f, ", ... (%d in all)", n);
    fclose(f);
    return text;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A numeric target with many distinct values is a quantity, not a label:
 * at least 20 values, and fractions among them, more than 50 values, or more
 * than one value per 20 rows. Ratings 1..5 and digit labels 0..9 stay
 * classes; ages, prices and counts become regressions. */
static bool looks_continuous(int distinct, int64_t n, bool fractions) {
    return distinct >= 20 && (fractions || distinct > 50 || (int64_t)distinct * 20 > n);
}

/* Quantile bins of the targets, for a stratified split. */
static void quantile_bins(const double *v, int64_t n, int64_t *bin) {
    double *sorted = cli_alloc(((size_t)n + 1) * sizeof *sorted);
    if (!sorted) {
        for (int64_t i = 0; i < n; i++) bin[i] = 0;
    } else {
        memcpy(sorted, v, (size_t)n * sizeof *v);
        qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
        for (int64_t i = 0; i < n; i++) {
            int64_t lo = 0, hi = n; /* rank: the first sorted value >= v[i] */
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (sorted[mid] < v[i]) lo = mid + 1;
                else hi = mid;
            }
            bin[i] = lo * REG_STRATA / n;
        }
    }
    free(sorted);
}

bool table_target(const kn_csv *csv, const char *path, const char *target, const char *task, schema *s,
                  int64_t **rows_out, int64_t *n_out, int64_t **y_out) {
    if (strchr(target, ',')) { /* a list of label columns */
        if (strcmp(task, "auto") && strcmp(task, "classification")) {
            cli_error("--task %s: a list of --target columns is a multi-label classification", task);
            return false;
        }
        return table_labels(csv, path, target, s, rows_out, n_out, y_out);
    }
    int tc = find_col(csv, target);
    if (tc < 0) {
        char *cols = table_columns_list(csv);
        cli_error("%s: no column '%s' for --target (columns: %s)", path, target, cols ? cols : "?");
        free(cols);
        return false;
    }
    int64_t rows = kn_csv_rows(csv), n = 0, skipped = 0, first_text = -1;
    int64_t *keep = cli_alloc(((size_t)rows + 1) * sizeof *keep), *y = cli_alloc(((size_t)rows + 1) * sizeof *y);
    char **names = cli_alloc(((size_t)rows + 1) * sizeof *names);
    double *val = cli_alloc(((size_t)rows + 1) * sizeof *val);
    strmap m = {0};
    int k = 0;
    bool ok = keep && y && names && val, fractions = false;
    for (int64_t r = 0; ok && r < rows; r++) {
        const char *v = kn_csv_cell(csv, r, tc);
        if (is_missing(v)) {
            skipped++;
            continue;
        }
        const char *t = trimmed(v);
        if (map_get(&m, t) < 0) {
            names[k] = cli_strdup(t);
            if (!names[k] || map_put(&m, names[k], k) < 0) ok = false;
            else k++;
        }
        double x;
        if (first_text < 0 && parse_number(t, &x)) {
            val[n] = x;
            fractions = fractions || x != floor(x);
        } else if (first_text < 0) {
            first_text = r;
        }
        keep[n++] = r;
    }
    map_free(&m);
    bool numeric = ok && n > 0 && first_text < 0;
    bool regression = ok && (!strcmp(task, "regression") || (!strcmp(task, "auto") && numeric &&
                                                             looks_continuous(k, n, fractions)));
    if (ok && n == 0) {
        cli_error("%s: target column '%s' has no values (every row is missing it)", path, target);
        ok = false;
    } else if (regression && !numeric) {
        cli_error("%s:%lld: --task regression: target '%s' has the value '%s', which is not a number", path,
                  (long long)kn_csv_row_line(csv, first_text), target, trimmed(kn_csv_cell(csv, first_text, tc)));
        ok = false;
    } else if (regression && k < 2) {
        cli_error("%s: target column '%s' has one value (%s) in every row: nothing to learn", path, target, names[0]);
        ok = false;
    } else if (!regression && k < 2) {
        cli_error("%s: target column '%s' has only one class ('%s'): nothing to learn", path, target, names[0]);
        ok = false;
    } else if (!regression && k > 1000 && k * 2 > n) {
        cli_error("%s: target column '%s' has %d distinct values in %lld rows: too many classes%s", path, target, k,
                  (long long)n, numeric ? "; for a quantity use --task regression" : "");
        ok = false;
    }
    if (ok && regression) {
        quantile_bins(val, n, y);
        for (int i = 0; i < k; i++) free(names[i]);
        free(names);
        names = NULL;
        k = 0;
    } else if (ok) {
        if (numeric && looks_continuous(k, n, fractions))
            cli_warn("%s: target '%s' looks like a quantity (%d distinct numbers), classified as asked", path,
                     target, k);
        else if (k > 50)
            cli_warn("%s: target '%s' has %d classes in %lld rows: few rows per class%s", path, target, k,
                     (long long)n, numeric ? "; if it is a quantity, use --task regression" : "");
        qsort(names, (size_t)k, sizeof *names, cmp_class);
        strmap cm = {0};
        for (int i = 0; ok && i < k; i++) ok = map_put(&cm, names[i], i) >= 0;
        for (int64_t i = 0; ok && i < n; i++)
            y[i] = map_get(&cm, trimmed(kn_csv_cell(csv, keep[i], tc)));
        map_free(&cm);
    }
    free(val);
    if (!ok) {
        for (int i = 0; names && i < k; i++) free(names[i]);
        free(names);
        free(keep);
        free(y);
        return false;
    }
    if (skipped) cli_warn("%s: %lld rows have no value in '%s' and are left out", path, (long long)skipped, target);
    s->target = cli_strdup(target);
    s->regression = regression;
    s->classes = names;
    s->n_classes = k;
    *rows_out = keep;
    *n_out = n;
    *y_out = y;
    return s->target != NULL;
}

/* Is name in the comma-separated list? */
static bool in_list(const char *list, const char *name) {
    if (!list) return false;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

/* Every name in the list must be a column. */
static bool check_list(const kn_csv *csv, const char *path, const char *opt, const char *list,
                       const schema *s) {
    if (!list) return true;
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *name = strndup(p, len);
        if (!name) return cli_error("out of memory"), false;
        bool ok = false;
        if (!*name || find_col(csv, name) < 0)
            cli_error("%s: %s names column '%s', which %s", path, opt, name, *name ? "the file does not have" : "is empty");
        else if (schema_is_target(s, name))
            cli_error("%s: %s names the %s column '%s'", path, opt, s->n_labels ? "label" : "target", name);
        else
            ok = true;
        free(name);
        if (!ok) return false;
        if (!e) break;
        p = e + 1;
    }
    return true;
}

/* The regression target's mean and std over the training rows, two-pass in
 * double on values scaled by the largest magnitude (no overflow near the
 * float limits). */
static bool target_stats(const kn_csv *csv, const char *path, const int64_t *train, int64_t n, schema *s) {
    int tc = find_col(csv, s->target);
    double *v = cli_alloc(((size_t)n + 1) * sizeof *v), scale = 0, sum = 0, ss = 0;
    if (!v) return false;
    for (int64_t i = 0; i < n; i++) { /* table_target checked every training row's target is a number */
        if (!parse_number(kn_csv_cell(csv, train[i], tc), &v[i])) v[i] = 0;
        if (fabs(v[i]) > scale) scale = fabs(v[i]);
    }
    if (!(scale > 0) || !isfinite(scale)) scale = 1;
    for (int64_t i = 0; i < n; i++) sum += v[i] / scale;
    double mean = sum / (double)n;
    for (int64_t i = 0; i < n; i++) ss += (v[i] / scale - mean) * (v[i] / scale - mean);
    free(v);
    s->y_mean = mean * scale;
    s->y_std = sqrt(ss / (double)n) * scale;
    if (!isfinite(s->y_mean) || !isfinite(s->y_std)) {
        cli_error("%s: target '%s': its mean or spread is not finite on the training rows", path, s->target);
        return false;
    }
    if (!(s->y_std > 0)) {
        cli_error("%s: target '%s' has the same value in every training row: nothing to learn", path, s->target);
        return false;
    }
    return true;
}

bool table_fit(const kn_csv *csv, const char *path, const table_opts *o, const int64_t *train,
               int64_t n_train, schema *s) {
    int cols = kn_csv_cols(csv);
    int64_t rows = kn_csv_rows(csv);
    if (s->regression && !target_stats(csv, path, train, n_train, s)) return false;
    if (!check_list(csv, path, "--categorical", o->categorical, s) ||
        !check_list(csv, path, "--numeric", o->numeric, s) ||
        !check_list(csv, path, "--ignore", o->ignore, s))
        return false;
    s->f = cli_alloc((size_t)cols * sizeof *s->f);
    if (!s->f) return false;
    for (int j = 0; j < cols; j++) {
        const char *name = col_name(csv, j);
        if (schema_is_target(s, name) || in_list(o->ignore, name)) continue;
        bool force_cat = in_list(o->categorical, name), force_num = in_list(o->numeric, name);
        if (force_cat && force_num) {
            cli_error("%s: column '%s' is in both --categorical and --numeric", path, name);
            return false;
        }
        /* Type from every row; a forced numeric column must parse everywhere. */
        bool numeric = !force_cat, any = false;
        for (int64_t r = 0; r < rows && (numeric || force_num); r++) {
            const char *v = kn_csv_cell(csv, r, j);
            double x;
            if (is_missing(v)) continue;
            any = true;
            if (!parse_number(v, &x)) {
                if (force_num) {
                    cli_error("%s:%lld: column '%s': '%s' is not a number (the column is --numeric)", path,
                              (long long)kn_csv_row_line(csv, r), name, trimmed(v));
                    return false;
                }
                numeric = false;
            }
        }
        if (!any && !force_cat) {
            for (int64_t r = 0; r < rows && !any; r++) any = !is_missing(kn_csv_cell(csv, r, j));
            if (!any) {
                if (!o->quiet) cli_warn("%s: column '%s' is empty in every row and is left out", path, name);
                continue;
            }
        }
        feature *f = &s->f[s->n_f++];
        f->name = cli_strdup(name);
        f->type = numeric ? COL_NUMERIC : COL_CATEGORICAL;
        f->csv_col = j;
        f->missing_code = -1;
        if (!f->name) return false;
        if (numeric) {
            /* Two passes over the values scaled by their largest magnitude, so
             * columns near the limits of a double give finite statistics
             * (|mean| and the population std are at most that magnitude). */
            int64_t n = 0, miss = 0;
            double big = 0, sum = 0, sq = 0, x;
            for (int64_t i = 0; i < n_train; i++) {
                if (parse_number(kn_csv_cell(csv, train[i], j), &x)) big = fmax(big, fabs(x)), n++;
                else miss++;
            }
            double scale = big > 0 ? big : 1;
            for (int64_t i = 0; i < n_train; i++)
                if (parse_number(kn_csv_cell(csv, train[i], j), &x)) sum += x / scale;
            double mean_s = n ? sum / (double)n : 0;
            for (int64_t i = 0; i < n_train; i++)
                if (parse_number(kn_csv_cell(csv, train[i], j), &x)) sq += (x / scale - mean_s) * (x / scale - mean_s);
            f->mean = mean_s * scale;
            f->std = n ? sqrt(sq / (double)n) * scale : 0; /* population std, as scikit-learn's scaler */
            if (!isfinite(f->mean) || !isfinite(f->std)) {
                cli_error("%s: column '%s': its statistics are not finite (mean %g, std %g)", path, name, f->mean,
                          f->std);
                return false;
            }
            if (!(f->std > 1e-12 * (1 + fabs(f->mean)))) {
                if (n > 1 && !o->quiet)
                    cli_warn("%s: column '%s' has one value in every training row; it tells the model nothing", path, name);
                f->std = 1;
            }
            f->indicator = miss > 0;
            s->n_num += 1 + f->indicator;
            continue;
        }
        /* Categorical: distinct training values; missing values are the category "". */
        strmap m = {0};
        int64_t cap = 16, n = 0;
        char **vocab = cli_alloc((size_t)cap * sizeof *vocab);
        if (!vocab) return false;
        for (int64_t i = 0; i < n_train; i++) {
            const char *v = kn_csv_cell(csv, train[i], j);
            const char *t = is_missing(v) ? "" : trimmed(v);
            if (map_get(&m, t) >= 0) continue;
            if (n == cap) {
                char **p = realloc(vocab, (size_t)(cap *= 2) * sizeof *p);
                if (!p) return cli_error("out of memory"), false;
                vocab = p;
            }
            if (!(vocab[n] = cli_strdup(t)) || map_put(&m, vocab[n], (int)n) < 0) return false;
            n++;
        }
        map_free(&m);
        if (n > 1000000) {
            cli_error("%s: column '%s' has %lld distinct values: too many for an embedding (--ignore %s)", path,
                      name, (long long)n, name);
            return false;
        }
        qsort(vocab, (size_t)n, sizeof *vocab, cmp_str);
        f->vocab = vocab;
        f->n_vocab = (int)n;
        f->counts = cli_alloc(((size_t)n + 1) * sizeof *f->counts);
        if (!f->counts) return false;
        for (int c = 0; c < n; c++)
            if (!vocab[c][0]) f->missing_code = c;
        strmap sm = {0};
        for (int c = 0; c < n; c++)
            if (map_put(&sm, vocab[c], c) < 0) return false;
        for (int64_t i = 0; i < n_train; i++) {
            const char *v = kn_csv_cell(csv, train[i], j);
            f->counts[map_get(&sm, is_missing(v) ? "" : trimmed(v))]++;
        }
        map_free(&sm);
        f->dim = o->embedding_dim > 0 ? o->embedding_dim : ((int)n + 1) / 2 < 50 ? ((int)n + 1) / 2 : 50;
        if (f->dim < 1) f->dim = 1;
        s->n_cat++;
        /* Cardinality. A column with a distinct value in (nearly) every training
         * row is an identifier (a name, an ID): its embedding can only memorize
         * rows, and new rows bring values it never saw. It is left out unless
         * asked for, as AutoGluon drops unique-valued text columns. A column with
         * distinct values in over half the rows is kept, with a warning. */
        int64_t once = 0;
        for (int c = 0; c < n; c++) once += f->counts[c] == 1;
        bool unique = n > 20 && n * 10 >= n_train * 9, high = n > 20 && n * 2 > n_train;
        if (high && !unique && !force_cat && !o->quiet)
            cli_warn("%s: column '%s' has %lld distinct values in %lld training rows (%lld seen once): the model can "
                     "mostly memorize it, and new rows will bring values it never saw; consider --ignore %s",
                     path, name, (long long)n, (long long)n_train, (long long)once, name);
        if (unique && !force_cat) {
            if (!o->quiet)
                cli_warn("%s: column '%s' has %lld distinct values in %lld training rows (an identifier?) and is left "
                         "out; --categorical %s keeps it", path, name, (long long)n, (long long)n_train, name);
            s->n_cat--;
            s->n_f--;
            for (int c = 0; c < n; c++) free(vocab[c]);
            free(vocab);
            free(f->counts);
            free(f->name);
            *f = (feature){0};
        }
    }
    if (s->n_f == 0) {
        cli_error("%s: no feature columns left besides the target '%s'", path, s->target);
        return false;
    }
    /* Categorical features first (embedding inputs), then numeric, each in file order. */
    feature *sorted = cli_alloc((size_t)s->n_f * sizeof *sorted);
    if (!sorted) return false;
    int k = 0;
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < s->n_f; i++)
            if ((int)s->f[i].type == t) sorted[k++] = s->f[i];
    free(s->f);
    s->f = sorted;
    return true;
}

bool table_encode(const kn_csv *csv, const char *path, schema *s, const int64_t *rows, int64_t n,
                  bool need_target, encoded *out) {
    *out = (encoded){0};
    for (int i = 0; i < s->n_f; i++) {
        s->f[i].csv_col = find_col(csv, s->f[i].name);
        if (s->f[i].csv_col < 0) {
            cli_error("%s: column '%s' is missing (the model uses it as a %s input)", path, s->f[i].name,
                      s->f[i].type == COL_NUMERIC ? "numeric" : "categorical");
            return false;
        }
    }
    int tc = s->n_labels ? -1 : find_col(csv, s->target);
    if (need_target && !s->n_labels && tc < 0) {
        cli_error("%s: target column '%s' is missing", path, s->target);
        return false;
    }
    int *lc = s->n_labels ? cli_alloc((size_t)s->n_labels * sizeof *lc) : NULL;
    if (s->n_labels && !lc) return false;
    for (int l = 0; l < s->n_labels; l++) {
        lc[l] = find_col(csv, s->labels[l]);
        if (need_target && lc[l] < 0) {
            cli_error("%s: label column '%s' is missing", path, s->labels[l]);
            free(lc);
            return false;
        }
    }
    out->n = n;
    out->cat = cli_alloc(((size_t)n * (size_t)s->n_cat + 1) * sizeof *out->cat);
    out->num = cli_alloc(((size_t)n * (size_t)s->n_num + 1) * sizeof *out->num);
    out->y = cli_alloc(((size_t)n + 1) * sizeof *out->y);
    out->yv = cli_alloc(((size_t)n + 1) * sizeof *out->yv);
    out->row = cli_alloc(((size_t)n + 1) * sizeof *out->row);
    if (s->n_labels) out->ym = cli_alloc(((size_t)n * (size_t)s->n_labels + 1) * sizeof *out->ym);
    strmap *maps = cli_alloc(((size_t)s->n_f + 1) * sizeof *maps);
    strmap cm = {0};
    bool ok = out->cat && out->num && out->y && out->yv && out->row && maps && (!s->n_labels || out->ym);
    for (int i = 0; ok && i < s->n_f; i++)
        for (int c = 0; ok && c < s->f[i].n_vocab; c++) ok = map_put(&maps[i], s->f[i].vocab[c], c) >= 0;
    for (int c = 0; ok && c < s->n_classes; c++) ok = map_put(&cm, s->classes[c], c) >= 0;
    int64_t unknown_class = 0;
    for (int64_t i = 0; ok && i < n; i++) {
        int64_t r = rows ? rows[i] : i;
        out->row[i] = r;
        int ci = 0, ni = 0;
        for (int k = 0; k < s->n_f; k++) {
            feature *f = &s->f[k];
            const char *v = kn_csv_cell(csv, r, f->csv_col);
            bool miss = is_missing(v);
            if (f->type == COL_CATEGORICAL) {
                int code = miss ? f->missing_code : map_get(&maps[k], trimmed(v));
                if (code < 0) {
                    code = f->n_vocab;
                    out->unknown++;
                }
                out->cat[i * s->n_cat + ci++] = code;
                continue;
            }
            double x = f->mean;
            if (!miss && !parse_number(v, &x)) {
                cli_error("%s:%lld: column '%s': '%s' is not a number (the model treats '%s' as numeric)", path,
                          (long long)kn_csv_row_line(csv, r), f->name, trimmed(v), f->name);
                ok = false;
                break;
            }
            if (miss && !f->indicator) out->imputed++;
            double z = (0.5 * x - 0.5 * f->mean) / (0.5 * f->std); /* halves: x - mean may overflow */
            out->num[i * s->n_num + ni++] = (float)(z > 1e6 ? 1e6 : z < -1e6 ? -1e6 : z);
            if (f->indicator) out->num[i * s->n_num + ni++] = miss ? 1.0f : 0.0f;
        }
        out->y[i] = -1;
        out->yv[i] = NAN;
        if (ok && tc >= 0 && s->regression) {
            const char *v = kn_csv_cell(csv, r, tc);
            if (!is_missing(v) && !parse_number(v, &out->yv[i])) {
                cli_error("%s:%lld: target '%s': '%s' is not a number (the model predicts a number)", path,
                          (long long)kn_csv_row_line(csv, r), s->target, trimmed(v));
                ok = false;
            }
            if (!isnan(out->yv[i])) out->y[i] = 0; /* has a target */
        } else if (ok && s->n_labels) {
            /* A row counts when every label has one of its two values. */
            bool all = true, strange = false;
            for (int l = 0; l < s->n_labels; l++) {
                const char *v = lc[l] >= 0 ? kn_csv_cell(csv, r, lc[l]) : "";
                float t = 0;
                if (is_missing(v)) all = false;
                else if (!strcmp(trimmed(v), s->label_values[2 * l + 1])) t = 1;
                else if (strcmp(trimmed(v), s->label_values[2 * l])) all = false, strange = true;
                out->ym[i * s->n_labels + l] = t;
            }
            if (all) out->y[i] = 0;
            unknown_class += strange;
        } else if (ok && tc >= 0) {
            const char *v = kn_csv_cell(csv, r, tc);
            if (!is_missing(v)) {
                out->y[i] = map_get(&cm, trimmed(v));
                if (out->y[i] < 0) unknown_class++;
            }
        }
    }
    for (int i = 0; maps && i < s->n_f; i++) map_free(&maps[i]);
    free(maps);
    map_free(&cm);
    free(lc);
    if (!ok) {
        encoded_free(out);
        return false;
    }
    if (need_target && unknown_class && s->n_labels)
        cli_warn("%s: %lld rows have a label value the model never saw in training (each label has two); they are "
                 "left out of the metrics", path, (long long)unknown_class);
    else if (need_target && unknown_class)
        cli_warn("%s: %lld rows have a '%s' value the model never saw in training; they are left out of the "
                 "metrics", path, (long long)unknown_class, s->target);
    return true;
}

void encoded_free(encoded *e) {
    free(e->cat);
    free(e->num);
    free(e->y);
    free(e->yv);
    free(e->row);
    free(e->ym);
    *e = (encoded){0};
}

void schema_free(schema *s) {
    for (int i = 0; i < s->n_f; i++) {
        for (int c = 0; c < s->f[i].n_vocab; c++) free(s->f[i].vocab[c]);
        free(s->f[i].vocab);
        free(s->f[i].counts);
        free(s->f[i].name);
    }
    free(s->f);
    for (int c = 0; c < s->n_classes; c++) free(s->classes[c]);
    free(s->classes);
    free(s->target);
    for (int l = 0; s->labels && l < s->n_labels; l++) free(s->labels[l]);
    for (int l = 0; s->label_values && l < 2 * s->n_labels; l++) free(s->label_values[l]);
    free(s->labels);
    free(s->label_values);
    *s = (schema){0};
}

void schema_print(const schema *s, FILE *f) {
    if (s->regression) fprintf(f, "target '%s': regression (mean %.6g, std %.6g);", s->target, s->y_mean, s->y_std);
    else if (s->n_labels) fprintf(f, "targets: %d labels (multi-label, one sigmoid output each);", s->n_labels);
    else fprintf(f, "target '%s': %d classes;", s->target, s->n_classes);
    fprintf(f, " %d categorical column%s (embeddings), %d numeric input%s\n", s->n_cat, s->n_cat == 1 ? "" : "s",
            s->n_num, s->n_num == 1 ? "" : "s");
    for (int l = 0; l < s->n_labels; l++)
        fprintf(f, "  label %-18s positive '%s', negative '%s'\n", s->labels[l], s->label_values[2 * l + 1],
                s->label_values[2 * l]);
    for (int i = 0; i < s->n_f; i++) {
        const feature *x = &s->f[i];
        if (x->type == COL_CATEGORICAL)
            fprintf(f, "  %-24s categorical, %d values%s -> embedding %d\n", x->name, x->n_vocab,
                    x->missing_code >= 0 ? " (missing is one)" : "", x->dim);
        else
            fprintf(f, "  %-24s numeric, mean %.4g, std %.4g%s\n", x->name, x->mean, x->std,
                    x->indicator ? ", missing indicator" : "");
    }
}

/* ---- the split -------------------------------------------------------------------------- */
uint64_t rng_next(uint64_t *state) { /* splitmix64 */
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void shuffle_i64(int64_t *a, int64_t n, uint64_t *state) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rng_next(state) % (uint64_t)(i + 1));
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

bool split_stratified(const int64_t *rows, const int64_t *y, int64_t n, int k, double test_frac,
                      double val_frac, uint64_t seed, split *out) {
    *out = (split){0};
    uint64_t st = seed ^ 0x6b696c6e2d73706cULL; /* "kiln-spl" */
    int64_t *buf = cli_alloc(((size_t)n + 1) * sizeof *buf);
    out->train = cli_alloc(((size_t)n + 1) * sizeof *out->train);
    out->val = cli_alloc(((size_t)n + 1) * sizeof *out->val);
    out->test = cli_alloc(((size_t)n + 1) * sizeof *out->test);
    if (!buf || !out->train || !out->val || !out->test) {
        free(buf);
        split_free(out);
        return false;
    }
    for (int c = 0; c < k; c++) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (y[i] == c) buf[m++] = rows[i];
        shuffle_i64(buf, m, &st);
        int64_t nt = (int64_t)floor((double)m * test_frac + 0.5);
        int64_t nv = (int64_t)floor((double)m * val_frac + 0.5);
        while (nv > 0 && m - nt - nv < 1) nv--; /* every class keeps a training row */
        while (nt > 0 && m - nt - nv < 1) nt--;
        int64_t i = 0;
        for (; i < nt; i++) out->test[out->n_test++] = buf[i];
        for (; i < nt + nv; i++) out->val[out->n_val++] = buf[i];
        for (; i < m; i++) out->train[out->n_train++] = buf[i];
    }
    free(buf);
    shuffle_i64(out->test, out->n_test, &st);
    shuffle_i64(out->val, out->n_val, &st);
    shuffle_i64(out->train, out->n_train, &st);
    return true;
}

void split_free(split *s) {
    free(s->train);
    free(s->val);
    free(s->test);
    *s = (split){0};
}
