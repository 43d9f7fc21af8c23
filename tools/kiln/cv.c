/* kiln command line: `kiln train --cv K`, stratified K-fold cross-validation.
 *
 * The rows are dealt into K folds class by class (for a regression, target
 * quantile bin by bin; for labels, combination by combination: the strata of
 * the normal split), so each fold holds its
 * share of every class. Each fold in turn is the test rows; the others are a
 * normal run's training rows, from which the validation part (early stopping)
 * is carved out as a normal run carves it. The schema (vocabularies,
 * statistics) is fitted on that fold's training rows only, and the model is
 * trained with the same recipe, options and seed as a normal run. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The metrics reported per fold, with their mean and std. */
enum { M_ACC, M_LOSS, M_MP, M_MR, M_MF1, M_WP, M_WR, M_WF1, N_CLS_METRICS };
enum { M_RMSE, M_MAE, M_R2, N_REG_METRICS };
static const char *const cls_names[] = {"accuracy", "loss", "macro_precision", "macro_recall", "macro_f1",
                                        "weighted_precision", "weighted_recall", "weighted_f1"};
static const char *const reg_names[] = {"rmse", "mae", "r2"};
/* multi-label: the summary of ml_metrics */
enum { M_SUBSET, M_LABEL_ACC, M_HAMMING, M_MICRO_F1, M_MACRO_F1, M_ML_LOSS, N_ML_METRICS };
static const char *const ml_names[] = {"subset_accuracy", "mean_label_accuracy", "hamming_loss", "micro_f1",
                                       "macro_f1", "loss"};
static int n_metrics_of(const schema *s) { return s->regression ? N_REG_METRICS : s->n_labels ? N_ML_METRICS : N_CLS_METRICS; }
static const char *const *names_of(const schema *s) { return s->regression ? reg_names : s->n_labels ? ml_names : cls_names; }

typedef struct {
    int64_t n_train, n_val, n_test, unknown;
    int epochs, best_epoch, n_features;
    double seconds;
    double v[N_CLS_METRICS]; /* cls_names or reg_names, by task */
    int64_t *support;        /* classification: the test rows of each class */
    bool interrupted;
} fold_result;

/* fold[i] for row i: each stratum's rows shuffled, then dealt round-robin, the
 * count running on from one stratum to the next, so fold sizes differ by at
 * most one and so do a stratum's counts in any two folds. */
static bool assign_folds(const int64_t *y, int64_t n, int strata, int k, uint64_t seed, int *fold) {
    int64_t *buf = cli_alloc(((size_t)n + 1) * sizeof *buf), next = 0;
    if (!buf) return false;
    uint64_t st = seed ^ 0x6b696c6e2d637666ULL; /* "kiln-cvf": not the split's stream */
    for (int c = 0; c < strata; c++) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (y[i] == c) buf[m++] = i;
        shuffle_i64(buf, m, &st);
        for (int64_t i = 0; i < m; i++) fold[buf[i]] = (int)(next++ % k);
    }
    free(buf);
    return true;
}

/* The target part of the schema (what table_target found), for a fold to fit. */
static bool schema_target_copy(const schema *from, schema *to) {
    *to = (schema){0};
    to->regression = from->regression;
    to->delimiter = from->delimiter;
    to->target = cli_strdup(from->target);
    to->classes = cli_alloc(((size_t)from->n_classes + 1) * sizeof *to->classes);
    if (!to->target || !to->classes) return false;
    for (int c = 0; c < from->n_classes; c++) {
        if (!(to->classes[c] = cli_strdup(from->classes[c]))) return false;
        to->n_classes = c + 1;
    }
    if (from->n_labels) {
        to->labels = cli_alloc((size_t)from->n_labels * sizeof *to->labels);
        to->label_values = cli_alloc((size_t)from->n_labels * 2 * sizeof *to->label_values);
        if (!to->labels || !to->label_values) return false;
        to->n_labels = from->n_labels;
        to->n_strata = from->n_strata;
        for (int l = 0; l < 2 * from->n_labels; l++)
            if ((l < from->n_labels && !(to->labels[l] = cli_strdup(from->labels[l]))) ||
                !(to->label_values[l] = cli_strdup(from->label_values[l])))
                return false;
    }
    return true;
}

/* One fold: fit, train and test as `kiln train` does; false on a failure
 * (its message is out). rows/ys: every usable row and its stratum. */
static bool run_fold(const cv_job *j, kn_device dev, const kn_csv *csv, const schema *base, const int64_t *rows,
                     const int64_t *ys, const int *fold, int64_t n_rows, int f, fold_result *out) {
    *out = (fold_result){0};
    train_opts o = j->o;
    o.quiet = true; /* one line per fold, printed by the caller */
    o.ckpt = o.resume_from = NULL;
    table_opts t = j->t;
    t.quiet = t.quiet || f > 0; /* the data's warnings once, not once per fold */
    int strata = schema_strata(base);
    bool ok = false;
    schema s = {0};
    prepared_run pr = {0};
    split sp = {0};
    float *p = NULL;
    kn_module *m = NULL;
    metrics mt = {0};
    train_result tr = {0};
    size_t bytes = ((size_t)n_rows + 1) * sizeof(int64_t);
    int64_t *rest = cli_alloc(bytes), *rest_y = cli_alloc(bytes), *test = cli_alloc(bytes), n_rest = 0, n_test = 0;
    if (!rest || !rest_y || !test) goto done;
    for (int64_t i = 0; i < n_rows; i++) {
        if (fold[i] == f) test[n_test++] = rows[i];
        else rest[n_rest] = rows[i], rest_y[n_rest++] = ys[i];
    }
    /* The validation part, as a normal run's: --val-split of each stratum. */
    if (!split_stratified(rest, rest_y, n_rest, strata, 0, o.val_split, o.seed + (uint64_t)f, &sp)) goto done;
    if (sp.n_train < 2) {
        cli_error("%s: fold %d: only %lld training rows; need at least 2 (fewer folds, or a smaller --val-split)",
                  j->file, f + 1, (long long)sp.n_train);
        goto done;
    }
    if (!schema_target_copy(base, &s) || !table_fit(csv, j->file, &t, sp.train, sp.n_train, &s)) goto done;
    if (!prepared_run_encode(&pr, csv, j->file, &s, sp.train, sp.n_train, sp.val, sp.n_val, test, n_test)) goto done;
    if (o.batch_size < 0) o.batch_size = auto_batch(sp.n_train);
    const char *cw_desc;
    prepared_run_weights(&pr, &s, j->cw ? j->cw : "auto", &cw_desc);
    kn_manual_seed(o.seed);
    if (!(m = model_build(&s, &o.arch))) goto done;
    if (kn_module_to(m, dev) != KN_OK) {
        cli_error("moving the model to %s: %s", kn_device_str(dev), kn_error());
        goto done;
    }
    if (!prepared_run_to_device(&pr, &s, dev)) goto done;
    if (!train_run(m, &s, &o, &pr.dtr, sp.n_val ? &pr.dva : NULL, pr.cw, &tr)) goto done;
    model_fill_unknown(m, &s);
    out->n_train = sp.n_train;
    out->n_val = sp.n_val;
    out->n_test = n_test;
    out->unknown = pr.eva.unknown + pr.ete.unknown;
    out->epochs = tr.epochs_run;
    out->best_epoch = tr.best_epoch;
    out->seconds = tr.seconds;
    out->interrupted = tr.interrupted;
    out->n_features = s.n_f;
    if (!(p = predict_proba(m, &pr.dte, &s))) goto done;
    if (s.n_labels) {
        ml_metrics mm;
        if (!ml_metrics_compute(p, pr.ete.ym, pr.ete.y, pr.ete.n, s.n_labels, NULL, &mm)) goto done;
        const double v[N_ML_METRICS] = {mm.subset_accuracy, mm.mean_accuracy, mm.hamming_loss,
                                        mm.micro_f1,        mm.macro_f1,      mm.loss};
        memcpy(out->v, v, sizeof v);
        ml_metrics_free(&mm);
    } else if (s.regression) {
        reg_metrics rm;
        if (!reg_metrics_compute(p, pr.ete.yv, pr.ete.n, s.y_mean, s.y_std, &rm)) goto done;
        out->v[M_RMSE] = rm.rmse;
        out->v[M_MAE] = rm.mae;
        out->v[M_R2] = rm.r2;
    } else {
        if (!metrics_compute(p, pr.ete.y, pr.ete.n, s.n_classes, NULL, &mt)) goto done;
        out->v[M_ACC] = mt.n ? (double)mt.correct / (double)mt.n : NAN;
        out->v[M_LOSS] = mt.loss;
        for (int q = 0; q < 3; q++) out->v[M_MP + q] = mt.macro[q], out->v[M_WP + q] = mt.weighted[q];
        out->support = mt.support; /* kept: the caller frees it */
        mt.support = NULL;
    }
    ok = true;
done:
    history_free(&tr.history); /* per-epoch curves: not reported by a cross-validation */
    metrics_free(&mt);
    free(p);
    prepared_run_free(&pr);
    kn_module_free(m);
    split_free(&sp);
    schema_free(&s);
    free(rest);
    free(rest_y);
    free(test);
    return ok;
}

/* Mean and sample std (n - 1) of the finite values; NaN when there are too few. */
static void mean_std(const fold_result *r, int n, int metric, double *mean, double *std) {
    double sum = 0, ss = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(r[i].v[metric])) sum += r[i].v[metric], k++;
    *mean = k ? sum / k : NAN;
    for (int i = 0; i < n; i++)
        if (isfinite(r[i].v[metric])) ss += (r[i].v[metric] - *mean) * (r[i].v[metric] - *mean);
    *std = k > 1 ? sqrt(ss / (k - 1)) : NAN;
}

static void jnum(double v) {
    if (isfinite(v)) printf("%.6g", v);
    else printf("null");
}

static void print_json(const cv_job *j, kn_device dev, const schema *s, const fold_result *r, int n_done,
                       int n_metrics, const char *const *names, bool interrupted) {
    printf("{\"kiln_version\":\"%s\",\"command\":\"train\",\"cv\":%d,\"file\":", KN_VERSION_STRING, j->k);
    json_str(stdout, j->file);
    printf(",\"target\":");
    json_str(stdout, s->target);
    printf(",\"task\":\"%s\",\"device\":\"%s\",\"recipe\":\"%s\",\"seed\":%llu,\"interrupted\":%s,",
           s->regression ? "regression" : s->n_labels ? "multilabel" : "classification", kn_device_str(dev), j->o.recipe,
           (unsigned long long)j->o.seed, interrupted ? "true" : "false");
    if (s->n_labels) {
        printf("\"labels\":[");
        for (int l = 0; l < s->n_labels; l++) {
            printf("%s{\"name\":", l ? "," : "");
            json_str(stdout, s->labels[l]);
            printf(",\"positive\":");
            json_str(stdout, s->label_values[2 * l + 1]);
            printf("}");
        }
        printf("],");
    } else if (!s->regression) {
        printf("\"classes\":[");
        for (int c = 0; c < s->n_classes; c++) {
            if (c) printf(",");
            json_str(stdout, s->classes[c]);
        }
        printf("],");
    }
    printf("\"folds\":[");
    for (int f = 0; f < n_done; f++) {
        const fold_result *x = &r[f];
        printf("%s{\"fold\":%d,\"rows\":{\"train\":%lld,\"validation\":%lld,\"test\":%lld},"
               "\"training\":{\"epochs\":%d,\"best_epoch\":%d,\"seconds\":%.4f},\"features\":%d,"
               "\"unknown_categories\":%lld",
               f ? "," : "", f + 1, (long long)x->n_train, (long long)x->n_val, (long long)x->n_test, x->epochs,
               x->best_epoch, x->seconds, x->n_features, (long long)x->unknown);
        if (x->support) {
            printf(",\"class_support\":[");
            for (int c = 0; c < s->n_classes; c++) printf("%s%lld", c ? "," : "", (long long)x->support[c]);
            printf("]");
        }
        for (int q = 0; q < n_metrics; q++) {
            printf(",\"%s\":", names[q]);
            jnum(x->v[q]);
        }
        printf("}");
    }
    printf("]");
    for (int pass = 0; pass < 2; pass++) {
        printf(",\"%s\":{", pass ? "std" : "mean");
        for (int q = 0; q < n_metrics; q++) {
            double mean, std;
            mean_std(r, n_done, q, &mean, &std);
            printf("%s\"%s\":", q ? "," : "", names[q]);
            jnum(pass ? std : mean);
        }
        printf("}");
    }
    printf("}\n");
}

static void print_table(const schema *s, const fold_result *r, int n_done, int k) {
    static const char *const cls_heads[] = {"accuracy", "loss", "macro P", "macro R", "macro F1",
                                            "weight. P", "weight. R", "weight. F1"};
    static const char *const reg_heads[] = {"RMSE", "MAE", "R^2"};
    static const char *const ml_heads[] = {"subset acc", "label acc", "Hamming", "micro F1", "macro F1", "loss"};
    int nm = n_metrics_of(s);
    const char *const *heads = s->regression ? reg_heads : s->n_labels ? ml_heads : cls_heads;
    printf("\n%d-fold cross-validation, target '%s'%s:\n%6s", k, s->target,
           n_done < k ? " (interrupted: the folds that finished)" : "", "fold");
    for (int q = 0; q < nm; q++) printf(" %10s", heads[q]);
    printf("\n");
    for (int f = 0; f < n_done; f++) {
        printf("%6d", f + 1);
        for (int q = 0; q < nm; q++) printf(s->regression && q != M_R2 ? " %10.5g" : " %10.4f", r[f].v[q]);
        printf("\n");
    }
    double mean[N_CLS_METRICS], std[N_CLS_METRICS];
    for (int q = 0; q < nm; q++) mean_std(r, n_done, q, &mean[q], &std[q]);
    printf("%6s", "mean");
    for (int q = 0; q < nm; q++) printf(s->regression && q != M_R2 ? " %10.5g" : " %10.4f", mean[q]);
    printf("\n%6s", "std");
    for (int q = 0; q < nm; q++) printf(s->regression && q != M_R2 ? " %10.5g" : " %10.4f", std[q]);
    printf("\n\n");
    if (s->regression)
        printf("RMSE %.6g ± %.6g, MAE %.6g ± %.6g, R^2 %.4f ± %.4f (mean ± sample std over %d folds)\n", mean[M_RMSE],
               std[M_RMSE], mean[M_MAE], std[M_MAE], mean[M_R2], std[M_R2], n_done);
    else if (s->n_labels)
        printf("subset accuracy %.4f ± %.4f, macro F1 %.4f ± %.4f (mean ± sample std over %d folds)\n",
               mean[M_SUBSET], std[M_SUBSET], mean[M_MACRO_F1], std[M_MACRO_F1], n_done);
    else
        printf("accuracy %.4f ± %.4f, macro F1 %.4f ± %.4f (mean ± sample std over %d folds)\n", mean[M_ACC],
               std[M_ACC], mean[M_MF1], std[M_MF1], n_done);
}

int cv_run(const cv_job *j, kn_device dev) {
    bool talk = !j->o.quiet && !j->o.json;
    if (talk) printf("Using %s device\n", kn_device_kind_name((kn_device_kind)dev.kind));
    int rc = 1, n_done = 0;
    schema s = {0};
    s.delimiter = j->delimiter;
    int64_t *rows = NULL, *ys = NULL, n_rows = 0, *cnt = NULL;
    int *fold = NULL;
    fold_result *r = cli_alloc((size_t)j->k * sizeof *r);
    kn_csv *csv = table_read(j->file, j->delimiter);
    if (!r || !csv || !table_target(csv, j->file, j->target, j->task ? j->task : "auto", &s, &rows, &n_rows, &ys))
        goto done;
    if (s.regression && j->cw && strcmp(j->cw, "auto") && strcmp(j->cw, "none")) {
        cli_error("--class-weight %s: the target is a number (regression), there are no classes to weigh", j->cw);
        rc = 2;
        goto done;
    }
    /* Every fold's test rows hold every class (and its training rows too). */
    if (!s.regression && !s.n_labels) {
        if (!(cnt = cli_alloc((size_t)s.n_classes * sizeof *cnt))) goto done;
        for (int64_t i = 0; i < n_rows; i++) cnt[ys[i]]++;
        int lo = 0;
        for (int c = 1; c < s.n_classes; c++)
            if (cnt[c] < cnt[lo]) lo = c;
        if (cnt[lo] < j->k) {
            cli_error("--cv %d: class '%s' of '%s' has only %lld row%s; every fold needs one of each class (%s)",
                      j->k, s.classes[lo], s.target, (long long)cnt[lo], cnt[lo] == 1 ? "" : "s",
                      cnt[lo] >= 2 ? "use a smaller --cv" : "too few for cross-validation");
            rc = 2; /* a command-line mistake, found once the data showed the classes */
            goto done;
        }
    } else if (n_rows < 2 * (int64_t)j->k) {
        cli_error("--cv %d: %s has only %lld rows with a target; need at least %d (2 per fold)", j->k, j->file,
                  (long long)n_rows, 2 * j->k);
        rc = 2;
        goto done;
    }
    if (!(fold = cli_alloc(((size_t)n_rows + 1) * sizeof *fold)) ||
        !assign_folds(ys, n_rows, schema_strata(&s), j->k, j->o.seed, fold))
        goto done;
    if (talk) {
        printf("data: %s: %lld rows, %d columns; %d-fold cross-validation (stratified by %s, seed %llu), "
               "--val-split %g of each fold's training rows for validation\n",
               j->file, (long long)kn_csv_rows(csv), kn_csv_cols(csv), j->k,
               s.regression ? "target quantile" : s.n_labels ? "label combination" : "class",
               (unsigned long long)j->o.seed, j->o.val_split);
        if (s.regression && !j->task)
            printf("task: regression, as '%s' holds numbers with many distinct values (--task classification to "
                   "classify)\n", s.target);
        printf("recipe %s: %s lr %g, %s%d epochs%s\n", j->o.recipe, j->o.adamw ? "AdamW" : "Adam", j->o.lr,
               j->o.patience ? "up to " : "", j->o.epochs, j->o.patience ? ", early stopping on validation loss" : "");
        fflush(stdout);
    }
    interrupt_watch();
    int64_t unknown = 0;
    bool interrupted = false;
    for (int f = 0; f < j->k && !interrupted; f++) {
        if (!run_fold(j, dev, csv, &s, rows, ys, fold, n_rows, f, &r[f])) goto done;
        /* A fold stopped by Ctrl-C did not finish: it is not reported. */
        if ((interrupted = r[f].interrupted)) break;
        n_done++;
        unknown += r[f].unknown;
        if (talk) {
            printf("fold %d/%d: train %lld, validation %lld, test %lld rows; %d epochs (best %d), %.1f s: ", f + 1, j->k,
                   (long long)r[f].n_train, (long long)r[f].n_val, (long long)r[f].n_test, r[f].epochs,
                   r[f].best_epoch, r[f].seconds);
            if (s.regression)
                printf("RMSE %.6g, MAE %.6g, R^2 %.4f\n", r[f].v[M_RMSE], r[f].v[M_MAE], r[f].v[M_R2]);
            else if (s.n_labels)
                printf("subset accuracy %.4f, macro F1 %.4f\n", r[f].v[M_SUBSET], r[f].v[M_MACRO_F1]);
            else
                printf("accuracy %.4f, macro F1 %.4f\n", r[f].v[M_ACC], r[f].v[M_MF1]);
            fflush(stdout);
        }
    }
    if (interrupted && !j->o.json) printf("interrupted during fold %d: %d folds finished\n", n_done + 1, n_done);
    if (unknown && !j->o.json)
        cli_warn("%lld categorical values in the folds' validation/test rows were not seen in their training rows "
                 "(mapped to 'unknown')", (long long)unknown);
    if (j->o.json)
        print_json(j, dev, &s, r, n_done, n_metrics_of(&s), names_of(&s), interrupted);
    else if (n_done)
        print_table(&s, r, n_done, j->k);
    if (j->o.stats) print_fallback_stats(j->o.json ? stderr : stdout);
    rc = interrupted ? 130 : 0;
done:
    free(cnt);
    free(fold);
    for (int f = 0; r && f < j->k; f++) free(r[f].support);
    free(r);
    free(rows);
    free(ys);
    schema_free(&s);
    kn_csv_free(csv);
    fflush(stdout);
    return rc;
}
