/* kiln command line: `kiln explain MODEL FILE.csv`, permutation feature importance.
 *
 * For each input column of the model, its encoded values are shuffled across
 * the labelled rows (so the column keeps its distribution but loses its link to
 * the target and to the other columns), the model is scored again, and the
 * loss of score is the column's importance: the drop of accuracy for a
 * classifier (a multi-label one: of the mean label accuracy), the rise of RMSE (and drop of R^2) for a regression, as the mean
 * and sample std over --repeats shuffles (scikit-learn's
 * permutation_importance does the same on raw columns). */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void explain_help(void) {
    printf("usage: kiln explain MODEL FILE.csv [options]\n\n"
           "Which columns the model relies on: for each of its input columns, the column's values\n"
           "are shuffled across the rows of FILE.csv that have a target value, and the model is\n"
           "scored again. A column's importance is the score lost: the drop of accuracy (classifier;\n"
           "multi-label: of the mean label accuracy at threshold 0.5)\n"
           "or the rise of RMSE, with the drop of R^2 (regression), mean and std over the repeats.\n"
           "Columns are listed most important first; near zero (or below) means the model does not\n"
           "need the column on this data.\n"
           "  --repeats N       shuffles per column (1..1000, default 5)\n"
           "  --seed N          seed of the shuffles (default 0)\n"
           "  --device NAME     cpu, cuda, ... (default: the best available)\n"
           "  --delimiter C     field separator (default: the one the model was trained with)\n"
           "  --json            the importances as one JSON object on stdout\n"
           "  --quiet           only the table\n");
}

typedef struct {
    int feature;        /* index in the schema */
    int col, width;     /* first encoded column (cat or num) and how many (value + indicator) */
    double mean, std;   /* of the importance (accuracy drop or RMSE rise) */
    double mean2, std2; /* regression: of the R^2 drop */
    double *drops, *drops2; /* per repeat */
} importance;

/* A model's score on encoded rows: accuracy, or RMSE and R^2. */
static bool score(kn_module *m, const schema *s, const encoded *e, kn_device dev, double *main, double *r2) {
    dev_data d;
    if (!dev_data_make(e, s, dev, &d)) return false;
    float *p = predict_proba(m, &d, s);
    dev_data_free(&d);
    if (!p) return false;
    bool ok;
    if (s->n_labels) {
        ml_metrics mm;
        ok = ml_metrics_compute(p, e->ym, e->y, e->n, s->n_labels, NULL, &mm);
        *main = ok ? mm.mean_accuracy : NAN;
        *r2 = NAN;
        ml_metrics_free(&mm);
    } else if (s->regression) {
        reg_metrics rm;
        ok = reg_metrics_compute(p, e->yv, e->n, s->y_mean, s->y_std, &rm);
        *main = rm.rmse;
        *r2 = rm.r2;
    } else {
        metrics mt;
        ok = metrics_compute(p, e->y, e->n, s->n_classes, NULL, &mt);
        *main = ok && mt.n ? (double)mt.correct / (double)mt.n : NAN;
        *r2 = NAN;
        metrics_free(&mt);
    }
    free(p);
    return ok;
}

/* Keeps the rows with a known target, in order. */
static int64_t keep_labelled(encoded *e, const schema *s) {
    int64_t k = 0;
    for (int64_t i = 0; i < e->n; i++) {
        if (s->regression ? isnan(e->yv[i]) : e->y[i] < 0) continue;
        memmove(e->cat + k * s->n_cat, e->cat + i * s->n_cat, (size_t)s->n_cat * sizeof *e->cat);
        memmove(e->num + k * s->n_num, e->num + i * s->n_num, (size_t)s->n_num * sizeof *e->num);
        e->y[k] = e->y[i];
        if (e->ym) memmove(e->ym + k * s->n_labels, e->ym + i * s->n_labels, (size_t)s->n_labels * sizeof *e->ym);
        e->yv[k] = e->yv[i];
        e->row[k] = e->row[i];
        k++;
    }
    int64_t dropped = e->n - k;
    e->n = k;
    return dropped;
}

static void mean_std(const double *v, int n, double *mean, double *std) {
    double sum = 0, ss = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    *mean = sum / n;
    for (int i = 0; i < n; i++) ss += (v[i] - *mean) * (v[i] - *mean);
    *std = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

static int by_importance(const void *a, const void *b) {
    const importance *x = a, *y = b;
    if (x->mean != y->mean) return x->mean < y->mean ? 1 : -1;
    return x->feature - y->feature; /* ties in schema order */
}

static void jnum(double v) {
    if (isfinite(v)) printf("%.6g", v);
    else printf("null");
}

int cmd_explain(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *device = NULL, *v;
    long long repeats = 5, seed = 0;
    char delimiter = ',';
    bool set_delim = false, json = false, quiet = false;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            explain_help();
            return 0;
        }
        if (!strcmp(s, "--json")) json = true;
        else if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) quiet = true;
        else if (opt_is(s, "--repeats", &v, &i, argc, argv)) {
            if (!parse_int_opt("--repeats", v, 1, 1000, &repeats)) return 2;
        } else if (opt_is(s, "--seed", &v, &i, argc, argv)) {
            if (!parse_int_opt("--seed", v, 0, INT64_MAX, &seed)) return 2;
        }
        else if (opt_is(s, "--device", &v, &i, argc, argv)) { if (!(device = v)) return 2; }
        else if (opt_is(s, "--delimiter", &v, &i, argc, argv)) {
            if (!parse_delimiter(v, &delimiter)) return 2;
            set_delim = true;
        } else if (s[0] == '-' && s[1]) return cli_error("explain: unknown option '%s' (see kiln explain --help)", s), 2;
        else if (!model) model = s;
        else if (!file) file = s;
        else return cli_error("explain: unexpected argument '%s'", s), 2;
    }
    if (!model || !file)
        return cli_error("explain: needs a model file and a labelled data file (kiln explain MODEL FILE.csv)"), 2;
    kn_device dev;
    if (!pick_device(device, &dev)) return 2;
    int rc = 1;
    int64_t *perm = NULL;
    schema s = {0};
    arch ar;
    kn_csv *csv = NULL;
    encoded e = {0}, work = {0};
    importance *imp = NULL;
    kn_module *m = model_load(model, dev, &s, &ar);
    if (!m || !(csv = table_read(file, set_delim ? delimiter : s.delimiter)) ||
        !table_encode(csv, file, &s, NULL, kn_csv_rows(csv), true, &e))
        goto done;
    if (e.unknown && !json)
        cli_warn("%s: %lld categorical values were not seen in training (mapped to 'unknown')", file,
                 (long long)e.unknown);
    if (e.imputed && !json)
        cli_warn("%s: %lld numeric values are missing in columns that had none in training (replaced by the "
                 "training mean)", file, (long long)e.imputed);
    int64_t dropped = keep_labelled(&e, &s);
    if (e.n < 2) {
        cli_error("%s: %lld rows have a known value in the target column '%s'; explain needs at least 2", file,
                  (long long)e.n, s.target);
        goto done;
    }
    if (dropped && !json)
        cli_warn("%s: %lld rows without a known '%s' value are left out", file, (long long)dropped, s.target);
    double base, base_r2;
    if (!score(m, &s, &e, dev, &base, &base_r2)) goto done;
    /* A working copy of the inputs: one column at a time is shuffled, then put back. */
    work = e;
    work.cat = cli_alloc(((size_t)e.n * (size_t)s.n_cat + 1) * sizeof *work.cat);
    work.num = cli_alloc(((size_t)e.n * (size_t)s.n_num + 1) * sizeof *work.num);
    work.y = work.row = NULL;
    work.yv = NULL;
    imp = cli_alloc((size_t)s.n_f * sizeof *imp);
    if (!work.cat || !work.num || !imp) goto done;
    memcpy(work.cat, e.cat, (size_t)e.n * (size_t)s.n_cat * sizeof *e.cat);
    memcpy(work.num, e.num, (size_t)e.n * (size_t)s.n_num * sizeof *e.num);
    work.y = e.y; /* shared, read only */
    work.yv = e.yv;
    work.ym = e.ym;
    if (!(perm = cli_alloc((size_t)e.n * sizeof *perm))) goto done;
    if (!quiet && !json) {
        printf("Using %s device\nmodel %s (target '%s', %s); %s: %lld rows; ", kn_device_kind_name((kn_device_kind)dev.kind),
               model, s.target, s.regression ? "regression" : s.n_labels ? "multi-label" : "classifier", file,
               (long long)e.n);
        if (s.regression) printf("RMSE %.6g, R^2 %.4f\n", base, base_r2);
        else if (s.n_labels) printf("mean label accuracy %.4f\n", base);
        else printf("accuracy %.4f\n", base);
        fflush(stdout);
    }
    bool ok = true;
    for (int fi = 0, ci = 0, ni = 0; ok && fi < s.n_f; fi++) {
        const feature *f = &s.f[fi];
        importance *x = &imp[fi];
        x->feature = fi;
        x->col = f->type == COL_CATEGORICAL ? ci : ni;
        x->width = f->type == COL_CATEGORICAL ? 1 : 1 + f->indicator;
        if (f->type == COL_CATEGORICAL) ci++;
        else ni += x->width;
        x->drops = cli_alloc((size_t)repeats * sizeof *x->drops);
        x->drops2 = cli_alloc((size_t)repeats * sizeof *x->drops2);
        if (!x->drops || !x->drops2) {
            ok = false;
            break;
        }
        /* Each column's shuffles come from its own stream: the same seed gives
         * the same importances whatever the other columns are. */
        uint64_t st = ((uint64_t)seed ^ 0x6b696c6e2d657870ULL) + (uint64_t)fi * 0x9E3779B97F4A7C15ULL;
        for (int r = 0; ok && r < repeats; r++) {
            for (int64_t i = 0; i < e.n; i++) perm[i] = i;
            shuffle_i64(perm, e.n, &st);
            for (int64_t i = 0; i < e.n; i++)
                for (int w = 0; w < x->width; w++) {
                    if (f->type == COL_CATEGORICAL) work.cat[i * s.n_cat + x->col] = e.cat[perm[i] * s.n_cat + x->col];
                    else work.num[i * s.n_num + x->col + w] = e.num[perm[i] * s.n_num + x->col + w];
                }
            double sc, sc_r2;
            ok = score(m, &s, &work, dev, &sc, &sc_r2);
            x->drops[r] = s.regression ? sc - base : base - sc;
            x->drops2[r] = base_r2 - sc_r2;
        }
        for (int64_t i = 0; i < e.n; i++) /* put the column back */
            for (int w = 0; w < x->width; w++) {
                if (f->type == COL_CATEGORICAL) work.cat[i * s.n_cat + x->col] = e.cat[i * s.n_cat + x->col];
                else work.num[i * s.n_num + x->col + w] = e.num[i * s.n_num + x->col + w];
            }
        mean_std(x->drops, (int)repeats, &x->mean, &x->std);
        mean_std(x->drops2, (int)repeats, &x->mean2, &x->std2);
    }
    if (!ok) goto done;
    qsort(imp, (size_t)s.n_f, sizeof *imp, by_importance);
    if (json) {
        printf("{\"kiln_version\":\"%s\",\"command\":\"explain\",\"model\":", KN_VERSION_STRING);
        json_str(stdout, model);
        printf(",\"file\":");
        json_str(stdout, file);
        printf(",\"device\":\"%s\",\"task\":\"%s\",\"target\":", kn_device_str(dev),
               s.regression ? "regression" : s.n_labels ? "multilabel" : "classification");
        json_str(stdout, s.target);
        printf(",\"rows\":%lld,\"repeats\":%lld,\"seed\":%lld,\"unknown_categories\":%lld,\"metric\":\"%s\","
               "\"baseline\":{", (long long)e.n, repeats, seed, (long long)e.unknown,
               s.regression ? "rmse_increase" : s.n_labels ? "mean_label_accuracy_decrease" : "accuracy_decrease");
        if (s.regression) {
            printf("\"rmse\":");
            jnum(base);
            printf(",\"r2\":");
            jnum(base_r2);
        } else {
            printf(s.n_labels ? "\"mean_label_accuracy\":" : "\"accuracy\":");
            jnum(base);
        }
        printf("},\"features\":[");
        for (int i = 0; i < s.n_f; i++) {
            const importance *x = &imp[i];
            printf("%s{\"name\":", i ? "," : "");
            json_str(stdout, s.f[x->feature].name);
            printf(",\"type\":\"%s\",\"importance\":", s.f[x->feature].type == COL_CATEGORICAL ? "categorical" : "numeric");
            jnum(x->mean);
            printf(",\"std\":");
            jnum(x->std);
            printf(",\"repeats\":[");
            for (int r = 0; r < repeats; r++) {
                printf("%s", r ? "," : "");
                jnum(x->drops[r]);
            }
            printf("]");
            if (s.regression) {
                printf(",\"r2_decrease\":");
                jnum(x->mean2);
                printf(",\"r2_decrease_std\":");
                jnum(x->std2);
            }
            printf("}");
        }
        printf("]}\n");
    } else {
        int w = 6;
        for (int i = 0; i < s.n_f; i++)
            if ((int)strlen(s.f[i].name) > w) w = (int)strlen(s.f[i].name);
        if (w > 32) w = 32;
        printf("\npermutation importance (%lld repeat%s, seed %lld): %s when the column is shuffled\n", repeats,
               repeats == 1 ? "" : "s", seed,
               s.regression ? "rise of RMSE and drop of R^2" : s.n_labels ? "drop of mean label accuracy" : "drop of accuracy");
        if (s.regression)
            printf("%-*s %-11s %12s %10s %10s %10s\n", w, "column", "type", "RMSE rise", "std", "R^2 drop", "std");
        else printf("%-*s %-11s %10s %10s\n", w, "column", "type", "importance", "std");
        for (int i = 0; i < s.n_f; i++) {
            const importance *x = &imp[i];
            const feature *f = &s.f[x->feature];
            printf("%-*.*s %-11s", w, w, f->name, f->type == COL_CATEGORICAL ? "categorical" : "numeric");
            if (s.regression) printf(" %12.6g %10.4g %10.4f %10.4f\n", x->mean, x->std, x->mean2, x->std2);
            else printf(" %10.4f %10.4f\n", x->mean, x->std);
        }
    }
    rc = 0;
done:
    free(perm);
    for (int i = 0; imp && i < s.n_f; i++) {
        free(imp[i].drops);
        free(imp[i].drops2);
    }
    free(imp);
    free(work.cat);
    free(work.num);
    encoded_free(&e);
    kn_csv_free(csv);
    kn_module_free(m);
    schema_free(&s);
    return rc;
}
