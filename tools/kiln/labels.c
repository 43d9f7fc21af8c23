/* kiln command line: multi-label targets, `kiln train data.csv --target a,b,c`.
 *
 * Each label column holds exactly two values; the model has one logit per
 * label and learns them together with binary cross-entropy. The positive
 * value of a label is the one that reads as true, otherwise the later one in
 * class order. The split is stratified on the combination of labels: each
 * combination with enough rows is a stratum of its own, the rare ones share
 * one, so the test rows hold every common combination in proportion. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A combination needs this many rows to be a stratum of its own; at most
 * LABEL_STRATA of them are kept (the largest), the others are pooled. */
#define STRATUM_MIN_ROWS 10
#define LABEL_STRATA 64

int positive_of(const char *const v[2]) {
    static const char *const yes[] = {"1", "true", "yes", "y", "t", "positive", "pos"};
    bool t[2] = {false, false};
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < sizeof yes / sizeof *yes; k++) t[i] = t[i] || !strcasecmp(v[i], yes[k]);
    return t[0] && !t[1] ? 0 : 1;
}

/* The distinct values of a column over every row, for the error message:
 * how many, and the first few in class order (malloc'ed text). */
static char *values_summary(const kn_csv *csv, int col, int *count) {
    int64_t rows = kn_csv_rows(csv), n = 0;
    char **v = cli_alloc(((size_t)rows + 1) * sizeof *v);
    char *text = NULL;
    size_t len = 0;
    *count = 0;
    if (!v) return NULL;
    for (int64_t r = 0; r < rows; r++) {
        const char *c = kn_csv_cell(csv, r, col);
        if (!is_missing(c) && !(v[n++] = cli_strdup(cell_trimmed(c)))) goto out;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_class_name);
    FILE *f = open_memstream(&text, &len);
    if (!f) goto out;
    for (int64_t i = 0; i < n; i++) {
        if (i && !strcmp(v[i], v[i - 1])) continue;
        if (*count < 5) fprintf(f, "%s'%s'", *count ? ", " : "", v[i]);
        else if (*count == 5) fprintf(f, ", ...");
        ++*count;
    }
    fclose(f);
out:
    for (int64_t i = 0; i < n; i++) free(v[i]);
    free(v);
    return text;
}

/* Label l's two values, in class order, and which row has which. */
static bool label_values(const kn_csv *csv, const char *path, int col, const char *name, char **vals) {
    int64_t rows = kn_csv_rows(csv);
    int k = 0;
    for (int64_t r = 0; r < rows && k <= 2; r++) {
        const char *c = kn_csv_cell(csv, r, col);
        if (is_missing(c)) continue;
        const char *t = cell_trimmed(c);
        if ((k > 0 && !strcmp(vals[0], t)) || (k > 1 && !strcmp(vals[1], t))) continue;
        if (k == 2) { /* a third value */
            k = 3;
            break;
        }
        if (!(vals[k++] = cli_strdup(t))) return false;
    }
    if (k == 2) {
        qsort(vals, 2, sizeof *vals, cmp_class_name);
        return true;
    }
    if (k == 0) {
        cli_error("%s: label column '%s' has no values (every row is missing it)", path, name);
    } else if (k == 1) {
        cli_error("%s: label column '%s' has one value ('%s') in every row; a label needs exactly two", path, name,
                  vals[0]);
    } else {
        int count = 0;
        char *some = values_summary(csv, col, &count);
        cli_error("%s: label column '%s' has %d distinct values (%s); a label needs exactly two (for a multi-class "
                  "column, use --target %s alone)", path, name, count, some ? some : "?", name);
        free(some);
    }
    return false;
}

/* The label combination of row i: L bytes of 0/1, in bits[i * L]. */
typedef struct {
    const unsigned char *bits;
    int L;
} combo_ctx;
static combo_ctx combo_sort_ctx; /* qsort has no context argument in C11 */

static int cmp_combo(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    int c = memcmp(combo_sort_ctx.bits + x * combo_sort_ctx.L, combo_sort_ctx.bits + y * combo_sort_ctx.L,
                   (size_t)combo_sort_ctx.L);
    return c ? c : (x > y) - (x < y);
}

typedef struct {
    int64_t size, first; /* rows, and the first in combination order (ties by that) */
    int id;
} group;

static int cmp_group(const void *a, const void *b) {
    const group *x = a, *y = b;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    return (x->first > y->first) - (x->first < y->first);
}

/* Strata codes for n rows of L labels; returns the number of strata (-1 on
 * failure). */
static int label_strata(const unsigned char *bits, int64_t n, int L, int64_t *code) {
    int64_t *ord = cli_alloc(((size_t)n + 1) * sizeof *ord), *gid = cli_alloc(((size_t)n + 1) * sizeof *gid);
    group *g = cli_alloc(((size_t)n + 1) * sizeof *g);
    int strata = -1;
    if (!ord || !gid || !g) goto out;
    for (int64_t i = 0; i < n; i++) ord[i] = i;
    combo_sort_ctx = (combo_ctx){bits, L};
    qsort(ord, (size_t)n, sizeof *ord, cmp_combo);
    int64_t ng = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i == 0 || memcmp(bits + ord[i] * L, bits + ord[i - 1] * L, (size_t)L)) g[ng] = (group){0, i, (int)ng}, ng++;
        g[ng - 1].size++;
        gid[ord[i]] = ng - 1;
    }
    qsort(g, (size_t)ng, sizeof *g, cmp_group);
    int64_t *stratum = cli_alloc(((size_t)ng + 1) * sizeof *stratum);
    if (!stratum) goto out;
    int kept = 0;
    bool pooled = false;
    for (int64_t j = 0; j < ng; j++) {
        if (kept < LABEL_STRATA && g[j].size >= STRATUM_MIN_ROWS) stratum[g[j].id] = kept++;
        else stratum[g[j].id] = -1, pooled = true;
    }
    for (int64_t i = 0; i < n; i++) code[i] = stratum[gid[i]] >= 0 ? stratum[gid[i]] : kept;
    strata = kept + pooled;
    free(stratum);
out:
    free(ord);
    free(gid);
    free(g);
    return strata;
}

bool table_labels(const kn_csv *csv, const char *path, const char *list, schema *s, int64_t **rows_out,
                  int64_t *n_out, int64_t **y_out) {
    /* The names: each a column, none twice. */
    int L = 1;
    for (const char *p = list; *p; p++) L += *p == ',';
    char **names = cli_alloc((size_t)L * sizeof *names), **vals = cli_alloc((size_t)L * 2 * sizeof *vals);
    int *col = cli_alloc((size_t)L * sizeof *col), n_names = 0;
    int64_t rows = kn_csv_rows(csv), n = 0, skipped = 0;
    int64_t *keep = NULL, *code = NULL;
    unsigned char *bits = NULL;
    bool ok = names && vals && col;
    for (const char *p = list; ok;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *name = strndup(p, len);
        if (!name) {
            cli_error("out of memory");
            ok = false;
            break;
        }
        names[n_names++] = name;
        if (!*name) {
            cli_error("--target '%s': an empty column name in the list", list);
            ok = false;
        } else if ((col[n_names - 1] = table_col(csv, name)) < 0) {
            char *cols = table_columns_list(csv);
            cli_error("%s: no column '%s' for --target (columns: %s)", path, name, cols ? cols : "?");
            free(cols);
            ok = false;
        }
        for (int i = 0; ok && i < n_names - 1; i++)
            if (!strcmp(names[i], name)) {
                cli_error("--target names column '%s' twice", name);
                ok = false;
            }
        if (!e) break;
        p = e + 1;
    }
    for (int l = 0; ok && l < L; l++) ok = label_values(csv, path, col[l], names[l], vals + 2 * l);
    /* Rows with every label; each label's positive value second. */
    for (int l = 0; ok && l < L; l++)
        if (positive_of((const char *const *)vals + 2 * l) == 0) {
            char *t = vals[2 * l];
            vals[2 * l] = vals[2 * l + 1];
            vals[2 * l + 1] = t;
        }
    if (ok) {
        keep = cli_alloc(((size_t)rows + 1) * sizeof *keep);
        code = cli_alloc(((size_t)rows + 1) * sizeof *code);
        bits = cli_alloc((size_t)rows * (size_t)L + 1);
        ok = keep && code && bits;
    }
    for (int64_t r = 0; ok && r < rows; r++) {
        bool all = true;
        for (int l = 0; l < L && all; l++) {
            const char *c = kn_csv_cell(csv, r, col[l]);
            if (is_missing(c)) all = false;
            else bits[n * L + l] = !strcmp(cell_trimmed(c), vals[2 * l + 1]);
        }
        if (all) keep[n++] = r;
        else skipped++;
    }
    if (ok && n == 0) {
        cli_error("%s: no row has a value in every label column (%s)", path, list);
        ok = false;
    }
    if (ok && (s->n_strata = label_strata(bits, n, L, code)) < 0) ok = false;
    free(bits);
    free(col);
    if (ok && !(s->target = cli_strdup(list))) ok = false;
    if (!ok) {
        for (int i = 0; names && i < n_names; i++) free(names[i]);
        for (int i = 0; vals && i < 2 * L; i++) free(vals[i]);
        free(names);
        free(vals);
        free(keep);
        free(code);
        return false;
    }
    if (skipped)
        cli_warn("%s: %lld rows miss a value in one of the labels (%s) and are left out", path, (long long)skipped,
                 list);
    s->regression = false;
    s->labels = names;
    s->label_values = vals;
    s->n_labels = L;
    *rows_out = keep;
    *n_out = n;
    *y_out = code;
    return true;
}

float *label_pos_weights(const char *mode, const encoded *e, int L, const char **desc) {
    *desc = "none (--class-weight balanced weighs each label's positives)";
    if (strcmp(mode, "balanced")) return NULL;
    float *w = cli_alloc((size_t)L * sizeof *w);
    if (!w) return NULL;
    for (int l = 0; l < L; l++) {
        double pos = 0, rows = 0;
        for (int64_t i = 0; i < e->n; i++)
            if (e->y[i] >= 0) pos += e->ym[i * L + l], rows++;
        w[l] = pos > 0 && pos < rows ? (float)((rows - pos) / pos) : 1.0f;
    }
    *desc = "balanced (each label's positives weighed by its negatives / positives)";
    return w;
}

/* ---- metrics ------------------------------------------------------------------------------ */
void ml_metrics_free(ml_metrics *m) {
    free(m->tp);
    free(m->fp);
    free(m->fn);
    free(m->tn);
    free(m->precision);
    free(m->recall);
    free(m->f1);
    free(m->accuracy);
    free(m->pos_rate);
    free(m->pred_rate);
    *m = (ml_metrics){0};
}

bool ml_metrics_compute(const float *proba, const float *ym, const int64_t *y, int64_t n, int L, const float *pw,
                        ml_metrics *m) {
    *m = (ml_metrics){.L = L};
    size_t ci = ((size_t)L + 1) * sizeof(int64_t), cd = ((size_t)L + 1) * sizeof(double);
    m->tp = cli_alloc(ci), m->fp = cli_alloc(ci), m->fn = cli_alloc(ci), m->tn = cli_alloc(ci);
    m->precision = cli_alloc(cd), m->recall = cli_alloc(cd), m->f1 = cli_alloc(cd);
    m->accuracy = cli_alloc(cd), m->pos_rate = cli_alloc(cd), m->pred_rate = cli_alloc(cd);
    if (!m->tp || !m->fp || !m->fn || !m->tn || !m->precision || !m->recall || !m->f1 || !m->accuracy ||
        !m->pos_rate || !m->pred_rate) {
        ml_metrics_free(m);
        return false;
    }
    double loss = 0;
    int64_t exact = 0, wrong = 0;
    for (int64_t i = 0; i < n; i++) {
        if (y[i] < 0) continue;
        bool all = true;
        for (int l = 0; l < L; l++) {
            double p = proba[i * L + l];
            bool t = ym[i * L + l] > 0.5f, pred = p >= 0.5;
            m->tp[l] += t && pred;
            m->fp[l] += !t && pred;
            m->fn[l] += t && !pred;
            m->tn[l] += !t && !pred;
            all = all && t == pred;
            wrong += t != pred;
            loss -= t ? (pw ? pw[l] : 1.0) * log(p > 1e-12 ? p : 1e-12) : log(1 - p > 1e-12 ? 1 - p : 1e-12);
        }
        exact += all;
        m->n++;
    }
    double N = (double)m->n, cells = N * L;
    int64_t tp = 0, fp = 0, fn = 0;
    for (int l = 0; l < L; l++) {
        double pr = m->tp[l] + m->fp[l] ? (double)m->tp[l] / (double)(m->tp[l] + m->fp[l]) : 0;
        double rc = m->tp[l] + m->fn[l] ? (double)m->tp[l] / (double)(m->tp[l] + m->fn[l]) : 0;
        m->precision[l] = pr;
        m->recall[l] = rc;
        m->f1[l] = pr + rc > 0 ? 2 * pr * rc / (pr + rc) : 0;
        m->accuracy[l] = m->n ? (double)(m->tp[l] + m->tn[l]) / N : NAN;
        m->pos_rate[l] = m->n ? (double)(m->tp[l] + m->fn[l]) / N : NAN;
        m->pred_rate[l] = m->n ? (double)(m->tp[l] + m->fp[l]) / N : NAN;
        m->macro_f1 += m->f1[l] / L;
        tp += m->tp[l], fp += m->fp[l], fn += m->fn[l];
    }
    m->micro_f1 = 2 * tp + fp + fn ? 2.0 * (double)tp / (double)(2 * tp + fp + fn) : 0;
    m->subset_accuracy = m->n ? (double)exact / N : NAN;
    m->hamming_loss = m->n ? (double)wrong / cells : NAN;
    m->mean_accuracy = m->n ? 1 - m->hamming_loss : NAN;
    m->loss = m->n ? loss / cells : NAN;
    return true;
}

void ml_report_print(const ml_metrics *m, const schema *s, const char *what, FILE *f) {
    fprintf(f, "\n%s (%lld rows, %d labels, threshold 0.5): subset accuracy %.4f, mean label accuracy %.4f, Hamming "
               "loss %.4f, micro F1 %.4f, macro F1 %.4f, loss %.4f\n\n",
            what, (long long)m->n, m->L, m->subset_accuracy, m->mean_accuracy, m->hamming_loss, m->micro_f1,
            m->macro_f1, m->loss);
    int nw = 5, pw = 8;
    for (int l = 0; l < m->L; l++) {
        int a = (int)strlen(s->labels[l]), b = (int)strlen(s->label_values[2 * l + 1]);
        if (a > nw) nw = a;
        if (b > pw) pw = b;
    }
    if (nw > 32) nw = 32;
    if (pw > 16) pw = 16;
    fprintf(f, "%-*s %-*s %9s %9s %9s %9s %9s %9s %9s\n", nw, "label", pw, "positive", "precision", "recall",
            "f1-score", "accuracy", "pos rate", "pred rate", "support");
    for (int l = 0; l < m->L; l++)
        fprintf(f, "%-*.*s %-*.*s %9.4f %9.4f %9.4f %9.4f %9.4f %9.4f %9lld\n", nw, nw, s->labels[l], pw, pw,
                s->label_values[2 * l + 1], m->precision[l], m->recall[l], m->f1[l], m->accuracy[l], m->pos_rate[l],
                m->pred_rate[l], (long long)(m->tp[l] + m->fn[l]));
    fprintf(f, "(support: rows whose label is positive; pos rate: their share; pred rate: the share predicted "
               "positive)\n");
}

static void jnum(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.6g", v);
    else fprintf(f, "null");
}

void ml_report_json(const ml_metrics *m, const schema *s, FILE *f) {
    fprintf(f, "\"rows\":%lld,\"threshold\":0.5,\"subset_accuracy\":", (long long)m->n);
    jnum(f, m->subset_accuracy);
    fprintf(f, ",\"mean_label_accuracy\":");
    jnum(f, m->mean_accuracy);
    fprintf(f, ",\"hamming_loss\":");
    jnum(f, m->hamming_loss);
    fprintf(f, ",\"micro_f1\":");
    jnum(f, m->micro_f1);
    fprintf(f, ",\"macro_f1\":");
    jnum(f, m->macro_f1);
    fprintf(f, ",\"loss\":");
    jnum(f, m->loss);
    fprintf(f, ",\"labels\":[");
    for (int l = 0; l < m->L; l++) {
        fprintf(f, "%s{\"name\":", l ? "," : "");
        json_str(f, s->labels[l]);
        fprintf(f, ",\"positive\":");
        json_str(f, s->label_values[2 * l + 1]);
        fprintf(f, ",\"negative\":");
        json_str(f, s->label_values[2 * l]);
        static const char *const key[] = {"precision", "recall", "f1", "accuracy", "positive_rate",
                                          "predicted_positive_rate"};
        const double v[] = {m->precision[l], m->recall[l], m->f1[l], m->accuracy[l], m->pos_rate[l], m->pred_rate[l]};
        for (int q = 0; q < 6; q++) {
            fprintf(f, ",\"%s\":", key[q]);
            jnum(f, v[q]);
        }
        fprintf(f, ",\"support\":%lld,\"tp\":%lld,\"fp\":%lld,\"fn\":%lld,\"tn\":%lld}", (long long)(m->tp[l] + m->fn[l]),
                (long long)m->tp[l], (long long)m->fp[l], (long long)m->fn[l], (long long)m->tn[l]);
    }
    fprintf(f, "]");
}
