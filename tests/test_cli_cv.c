/* `kiln train --cv K`, `kiln explain` and the high-cardinality rule, run as a
 * user would. Expected values are computed here from the JSON the command
 * prints (the folds' metrics against their mean and std) or from data this
 * test makes (a column that decides the target against a column of noise). */
#include "kt_cli.h"

#define CAR KILN_SOURCE_DIR "/data/car/car.csv"

/* ---- JSON helpers ----------------------------------------------------------------------- */
static kn__json_doc *parse(const char *text) { return kn__json_parse(text, strlen(text), NULL, "kiln --json output"); }

static const kn__json *get(kn__json_doc *d, const kn__json *v, const char *key) {
    return v ? kn__json_get(d, v, key) : NULL;
}

static double num(kn__json_doc *d, const kn__json *v, const char *key) {
    const kn__json *x = get(d, v, key);
    return x && x->type == KN__JSON_NUMBER ? x->number : NAN;
}

static bool near(double a, double b) { return fabs(a - b) <= 2e-5 * (1 + fabs(b)); } /* %.6g output */

/* Checks the "mean" and "std" of each metric against the folds' values. */
static void check_mean_std(kn__json_doc *d, const char *const *metrics, int n_metrics, int k) {
    const kn__json *root = kn__json_root(d), *folds = get(d, root, "folds");
    CHECK(folds && folds->type == KN__JSON_ARRAY && folds->count == k, "%d folds in the JSON", k);
    if (!folds || folds->count != k) return;
    for (int q = 0; q < n_metrics; q++) {
        double v[20], sum = 0, ss = 0;
        int n = 0;
        for (const kn__json *f = kn__json_first(d, folds); f && n < 20; f = kn__json_next(d, f))
            v[n++] = num(d, f, metrics[q]);
        for (int i = 0; i < n; i++) sum += v[i];
        double mean = sum / n;
        for (int i = 0; i < n; i++) ss += (v[i] - mean) * (v[i] - mean);
        double std = sqrt(ss / (n - 1)); /* sample std */
        double jm = num(d, get(d, root, "mean"), metrics[q]), js = num(d, get(d, root, "std"), metrics[q]);
        CHECK(isfinite(mean) && near(jm, mean), "%s: mean %.9g, from the folds %.9g", metrics[q], jm, mean);
        CHECK(isfinite(std) && near(js, std), "%s: std %.9g, from the folds %.9g", metrics[q], js, std);
    }
}

/* The car data's classes and their row counts, counted here. */
static int car_classes(char names[8][16], int64_t *count) {
    FILE *f = fopen(CAR, "r");
    char line[256];
    int k = 0;
    if (!f || !fgets(line, sizeof line, f)) return f ? fclose(f), 0 : 0;
    while (fgets(line, sizeof line, f)) {
        char *c = strrchr(line, ',');
        if (!c) continue;
        c++;
        c[strcspn(c, "\r\n")] = 0;
        int i = 0;
        while (i < k && strcmp(names[i], c)) i++;
        if (i == k && k < 8) snprintf(names[k], 16, "%s", c), count[k++] = 0;
        if (i < k) count[i]++;
    }
    fclose(f);
    return k;
}

static void test_cv_classification(void) {
    int rc = RUN("train", CAR, "--target", "class", "--cv", "3", "--epochs", "25", "--seed", "2", "--json");
    CHECK(rc == 0, "train --cv 3 --json: exit %d: %s", rc, err_buf);
    kn__json_doc *d = parse(out_buf);
    CHECK(d != NULL, "the output is JSON: %s", out_buf);
    if (!d) return;
    static const char *const m[] = {"accuracy", "loss", "macro_precision", "macro_recall", "macro_f1",
                                    "weighted_precision", "weighted_recall", "weighted_f1"};
    check_mean_std(d, m, 8, 3);
    const kn__json *root = kn__json_root(d), *folds = get(d, root, "folds"), *classes = get(d, root, "classes");
    CHECK(num(d, get(d, root, "mean"), "accuracy") > 0.8, "car accuracy over the folds %.4f",
          num(d, get(d, root, "mean"), "accuracy"));
    /* Every row is a test row exactly once; folds are within one row in size. */
    char names[8][16];
    int64_t count[8], test_sum = 0, lo = INT64_MAX, hi = 0;
    int k = car_classes(names, count);
    CHECK(k == 4 && classes && classes->count == k, "4 classes");
    int64_t support_sum[8] = {0}, smin[8], smax[8];
    for (int c = 0; c < 8; c++) smin[c] = INT64_MAX, smax[c] = 0;
    for (const kn__json *f = folds ? kn__json_first(d, folds) : NULL; f; f = kn__json_next(d, f)) {
        const kn__json *rows = get(d, f, "rows");
        int64_t t = (int64_t)num(d, rows, "test");
        test_sum += t;
        lo = t < lo ? t : lo;
        hi = t > hi ? t : hi;
        CHECK(num(d, rows, "train") + num(d, rows, "validation") + t == 1728, "a fold's rows add up to 1728");
        CHECK(num(d, rows, "validation") > 0, "a validation part is carved out of the fold's training rows");
        const kn__json *sup = get(d, f, "class_support");
        int c = 0;
        for (const kn__json *x = sup ? kn__json_first(d, sup) : NULL; x && c < 8; x = kn__json_next(d, x), c++) {
            support_sum[c] += (int64_t)x->number;
            smin[c] = (int64_t)x->number < smin[c] ? (int64_t)x->number : smin[c];
            smax[c] = (int64_t)x->number > smax[c] ? (int64_t)x->number : smax[c];
        }
        CHECK(c == k, "class_support has one count per class");
    }
    CHECK(test_sum == 1728 && hi - lo <= 1, "test rows %lld in all, fold sizes %lld..%lld", (long long)test_sum,
          (long long)lo, (long long)hi);
    /* Stratified: each class's test rows are spread evenly over the folds. */
    int c = 0;
    for (const kn__json *x = classes ? kn__json_first(d, classes) : NULL; x && c < k; x = kn__json_next(d, x), c++) {
        int i = 0;
        while (i < k && strcmp(names[i], x->str)) i++;
        CHECK(i < k && support_sum[c] == count[i], "class %s: %lld test rows over the folds, %lld in the file", x->str,
              (long long)support_sum[c], i < k ? (long long)count[i] : -1LL);
        CHECK(smax[c] - smin[c] <= 1, "class %s: per-fold test rows %lld..%lld (stratified)", x->str,
              (long long)smin[c], (long long)smax[c]);
    }
    /* Reproducible from --seed: the same folds and the same metrics. */
    double acc[3];
    int n = 0;
    for (const kn__json *f = folds ? kn__json_first(d, folds) : NULL; f && n < 3; f = kn__json_next(d, f))
        acc[n++] = num(d, f, "accuracy");
    kn__json_free(d);
    rc = RUN("train", CAR, "--target", "class", "--cv", "3", "--epochs", "25", "--seed", "2", "--json");
    d = parse(out_buf);
    n = 0;
    bool same = rc == 0 && d;
    const kn__json *folds2 = d ? get(d, kn__json_root(d), "folds") : NULL;
    for (const kn__json *f = folds2 ? kn__json_first(d, folds2) : NULL; f && n < 3; f = kn__json_next(d, f))
        same = same && num(d, f, "accuracy") == acc[n++];
    CHECK(same && n == 3, "the same --seed gives the same fold accuracies");
    kn__json_free(d);
}

static int count_of(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_cv_text_and_errors(void) {
    int rc = RUN("train", CAR, "--target", "class", "--cv", "2", "--epochs", "5");
    CHECK(rc == 0, "train --cv 2: exit %d: %s", rc, err_buf);
    CHECK(strstr(out_buf, "fold 1/2:") && strstr(out_buf, "fold 2/2:") && !strstr(out_buf, "fold 3/2"),
          "one progress line per fold: %s", out_buf);
    CHECK(strstr(out_buf, "mean") && strstr(out_buf, "std") && strstr(out_buf, "accuracy") && strstr(out_buf, "macro F1"),
          "the mean and std of the metrics: %s", out_buf);
    CHECK(count_of(out_buf, "epoch ") == 0, "no per-epoch progress inside the folds: %s", out_buf);
    rc = RUN("train", CAR, "--target", "class", "--cv", "2", "--epochs", "5", "--quiet");
    CHECK(rc == 0 && !strstr(out_buf, "fold 1/2:") && strstr(out_buf, "mean"), "--quiet: the summary only: %s", out_buf);

    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--cv", "1"), "--cv");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--cv", "21"), "--cv");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--cv", "five"), "--cv");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--cv", "3", "--out", path_in("m.safetensors")), "--out");
    CHECK(!exists(path_in("m.safetensors")), "--cv with --out saves nothing");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--cv", "3", "--checkpoint", path_in("ck")), "--checkpoint");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--cv", "3", "--test-split", "0.3"), "--test-split");
    /* K larger than the smallest class: the class is named. */
    static char buf[1 << 14];
    size_t n = (size_t)snprintf(buf, sizeof buf, "x,y\n");
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%d,%s\n", i % 13, i < 3 ? "rare" : i % 2 ? "p" : "q");
    write_file("rare.csv", buf, n);
    rc = RUN("train", path_in("rare.csv"), "--target", "y", "--cv", "4");
    CHECK_FAILS(rc, "class 'rare'");
    CHECK(rc == 2, "a --cv the data cannot take is a usage error (2): %d", rc);
    CHECK(RUN("train", path_in("rare.csv"), "--target", "y", "--cv", "3", "--epochs", "3", "--json") == 0,
          "--cv 3 with 3 rows of the rarest class runs: %s", err_buf);
}

/* y = 3a + (c == u) + noise; 'noise' and 'junk' do not matter. */
static void make_regression(const char *name, int rows) {
    static char buf[1 << 16];
    size_t n = (size_t)snprintf(buf, sizeof buf, "a,c,noise,junk,y\n");
    uint64_t s = 99;
    for (int i = 0; i < rows; i++) {
        double u[4];
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            u[k] = (double)(s >> 11) / 9007199254740992.0;
        }
        double a = 4 * u[0] - 2, noise = 4 * u[2] - 2;
        const char *c = u[1] < 1 / 3.0 ? "u" : u[1] < 2 / 3.0 ? "v" : "w";
        const char *junk = u[3] < 0.5 ? "j1" : "j2";
        double y = 3 * a + (c[0] == 'u') + 0.05 * (u[3] - 0.5);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%.4f,%s,%.4f,%s,%.4f\n", a, c, noise, junk, y);
    }
    write_file(name, buf, n);
}

static void test_cv_regression(void) {
    make_regression("reg.csv", 300);
    int rc = RUN("train", path_in("reg.csv"), "--target", "y", "--cv", "4", "--json");
    CHECK(rc == 0, "regression --cv 4: exit %d: %s", rc, err_buf);
    kn__json_doc *d = parse(out_buf);
    CHECK(d != NULL, "JSON: %s", out_buf);
    if (!d) return;
    static const char *const m[] = {"rmse", "mae", "r2"};
    check_mean_std(d, m, 3, 4);
    const kn__json *root = kn__json_root(d);
    const kn__json *task = get(d, root, "task");
    CHECK(task && task->str && !strcmp(task->str, "regression"), "task regression");
    CHECK(num(d, get(d, root, "mean"), "r2") > 0.9, "R^2 over the folds %.4f", num(d, get(d, root, "mean"), "r2"));
    kn__json_free(d);
}

/* label = (a > 0); 'noise' (numeric) and 'tint' (categorical) are random. */
static void make_decided(const char *name, int rows) {
    static char buf[1 << 16];
    size_t n = (size_t)snprintf(buf, sizeof buf, "noise,a,tint,label\n");
    static const char *tints[] = {"red", "green", "blue"};
    uint64_t s = 7;
    for (int i = 0; i < rows; i++) {
        double u[3];
        for (int k = 0; k < 3; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            u[k] = (double)(s >> 11) / 9007199254740992.0;
        }
        double a = 2 * u[0] - 1;
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%.4f,%.4f,%s,%s\n", 2 * u[1] - 1, a, tints[(int)(u[2] * 3) % 3],
                              a > 0 ? "yes" : "no");
    }
    write_file(name, buf, n);
}

/* The importance of each feature by name, after checking each is the mean
 * (and std the sample std) of its repeats and the list is sorted. */
static int importances(kn__json_doc *d, const char names[][16], double *imp, int n_names, int repeats) {
    const kn__json *feats = get(d, kn__json_root(d), "features");
    int found = 0;
    double prev = INFINITY;
    for (const kn__json *f = feats ? kn__json_first(d, feats) : NULL; f; f = kn__json_next(d, f)) {
        const kn__json *nm = get(d, f, "name"), *reps = get(d, f, "repeats");
        double v = num(d, f, "importance"), sd = num(d, f, "std"), sum = 0, ss = 0;
        CHECK(v <= prev, "sorted by importance (%g after %g)", v, prev);
        prev = v;
        int r = 0;
        double x[64];
        for (const kn__json *e = reps ? kn__json_first(d, reps) : NULL; e && r < 64; e = kn__json_next(d, e))
            x[r++] = e->number;
        CHECK(r == repeats, "%d repeats listed (%d)", repeats, r);
        for (int i = 0; i < r; i++) sum += x[i];
        for (int i = 0; i < r; i++) ss += (x[i] - sum / r) * (x[i] - sum / r);
        CHECK(r > 0 && near(v, sum / r), "importance %g is the mean of the repeats %g", v, sum / r);
        CHECK(r > 1 && near(sd, sqrt(ss / (r - 1))), "std %g is the repeats' sample std %g", sd, sqrt(ss / (r - 1)));
        for (int i = 0; nm && nm->str && i < n_names; i++)
            if (!strcmp(nm->str, names[i])) imp[i] = v, found++;
    }
    return found;
}

static void test_explain(void) {
    make_decided("decided.csv", 400);
    const char *model = path_in("decided.safetensors");
    int rc = RUN("train", path_in("decided.csv"), "--target", "label", "--seed", "1", "--out", model, "--quiet");
    CHECK(rc == 0, "train the decided model: %s", err_buf);
    rc = RUN("explain", model, path_in("decided.csv"), "--json", "--repeats", "4", "--seed", "3");
    CHECK(rc == 0, "explain --json: exit %d: %s", rc, err_buf);
    kn__json_doc *d = parse(out_buf);
    CHECK(d != NULL, "JSON: %s", out_buf);
    static const char names[3][16] = {"a", "noise", "tint"};
    double imp[3] = {NAN, NAN, NAN};
    if (d) {
        CHECK(importances(d, names, imp, 3, 4) == 3, "every column is listed");
        CHECK(imp[0] > 0.2, "shuffling the deciding column costs accuracy: %g", imp[0]);
        CHECK(imp[0] > imp[1] + 0.15 && imp[0] > imp[2] + 0.15, "a (%g) above noise (%g) and tint (%g)", imp[0],
              imp[1], imp[2]);
        CHECK(fabs(imp[1]) < 0.08 && fabs(imp[2]) < 0.08, "the noise columns matter little: %g, %g", imp[1], imp[2]);
        static char first[sizeof out_buf];
        snprintf(first, sizeof first, "%s", out_buf);
        rc = RUN("explain", model, path_in("decided.csv"), "--json", "--repeats", "4", "--seed", "3");
        CHECK(rc == 0 && !strcmp(first, out_buf), "the same --seed gives the same importances");
        kn__json_free(d);
    }
    rc = RUN("explain", model, path_in("decided.csv"));
    CHECK(rc == 0 && strstr(out_buf, "permutation importance") && strstr(out_buf, "accuracy"), "table: %s", out_buf);
    const char *pa = strstr(out_buf, "\na "), *pn = strstr(out_buf, "\nnoise ");
    CHECK(pa && pn && pa < pn, "the table lists a before noise: %s", out_buf);

    /* Regression: the rise of RMSE. */
    make_regression("reg.csv", 300);
    const char *rmodel = path_in("reg.safetensors");
    CHECK(RUN("train", path_in("reg.csv"), "--target", "y", "--out", rmodel, "--quiet") == 0, "train reg: %s", err_buf);
    rc = RUN("explain", rmodel, path_in("reg.csv"), "--json", "--repeats", "3");
    CHECK(rc == 0, "explain regression: %s", err_buf);
    d = parse(out_buf);
    static const char rnames[4][16] = {"a", "c", "noise", "junk"};
    double rimp[4] = {NAN, NAN, NAN, NAN};
    if (d) {
        CHECK(importances(d, rnames, rimp, 4, 3) == 4, "every column is listed");
        CHECK(rimp[0] > rimp[1] && rimp[1] > rimp[2] && rimp[1] > rimp[3], "a > c > noise, junk: %g %g %g %g", rimp[0],
              rimp[1], rimp[2], rimp[3]);
        const kn__json *metric = get(d, kn__json_root(d), "metric");
        CHECK(metric && metric->str && !strcmp(metric->str, "rmse_increase"), "the regression metric is named");
        kn__json_free(d);
    } else {
        CHECK(false, "JSON: %s", out_buf);
    }

    /* Argument errors, like the other commands'. */
    CHECK(RUN("explain", "--help") == 0 && strstr(out_buf, "usage: kiln explain"), "explain --help");
    CHECK_FAILS(RUN("explain", model), "needs a model file and a labelled data file");
    CHECK_FAILS(RUN("explain", model, path_in("decided.csv"), "--repeats", "0"), "--repeats");
    CHECK_FAILS(RUN("explain", model, path_in("decided.csv"), "--repeats", "1001"), "--repeats");
    CHECK_FAILS(RUN("explain", model, path_in("decided.csv"), "--shuffle"), "--shuffle");
    CHECK_FAILS(RUN("explain", model, path_in("absent.csv")), "absent.csv");
    CHECK_FAILS(RUN("explain", path_in("absent.safetensors"), path_in("decided.csv")), "absent.safetensors");
    write_text("unlabelled.csv", "noise,a,tint\n0.1,0.5,red\n0.2,-0.5,blue\n");
    CHECK_FAILS(RUN("explain", model, path_in("unlabelled.csv")), "label");
}

/* The car data with an extra column: unique per row (an identifier), or shared
 * by about 1.5 rows on average (high cardinality). */
static void make_car_with(const char *name, bool unique) {
    static char buf[1 << 17];
    FILE *f = fopen(CAR, "r");
    char line[256];
    size_t n = 0;
    int i = -1;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (i < 0) n += (size_t)snprintf(buf + n, sizeof buf - n, "owner,%s\n", line);
        else if (unique) n += (size_t)snprintf(buf + n, sizeof buf - n, "person_%d,%s\n", i * 7919 % 100003, line);
        else n += (size_t)snprintf(buf + n, sizeof buf - n, "person_%d,%s\n", i * 2 / 3, line);
        i++;
    }
    if (f) fclose(f);
    write_file(name, buf, n);
}

static void test_cardinality(void) {
    make_car_with("car_id.csv", true);
    const char *model = path_in("car_id.safetensors");
    int rc = RUN("train", path_in("car_id.csv"), "--target", "class", "--epochs", "3", "--out", model, "--quiet");
    CHECK(rc == 0, "train with an identifier column: %s", err_buf);
    CHECK(strstr(err_buf, "warning") && strstr(err_buf, "'owner'") && strstr(err_buf, "left out") &&
              strstr(err_buf, "--categorical owner"), "the identifier is left out, saying how to keep it: %s", err_buf);
    CHECK(RUN("info", model, "--json") == 0 && !strstr(out_buf, "\"owner\""), "the model has no 'owner' input: %s", out_buf);
    rc = RUN("train", path_in("car_id.csv"), "--target", "class", "--epochs", "3", "--out", model, "--quiet",
             "--categorical", "owner");
    CHECK(rc == 0 && !strstr(err_buf, "'owner'"), "--categorical owner keeps it without a warning: %s", err_buf);
    CHECK(RUN("info", model, "--json") == 0 && strstr(out_buf, "\"owner\""), "the model has the 'owner' input");

    make_car_with("car_many.csv", false);
    rc = RUN("train", path_in("car_many.csv"), "--target", "class", "--epochs", "3", "--out", model, "--quiet");
    CHECK(rc == 0, "train with a high-cardinality column: %s", err_buf);
    CHECK(strstr(err_buf, "warning") && strstr(err_buf, "'owner'") && strstr(err_buf, "distinct values") &&
              strstr(err_buf, "--ignore owner") && !strstr(err_buf, "left out"),
          "a high-cardinality column is kept with a warning: %s", err_buf);
    CHECK(RUN("info", model, "--json") == 0 && strstr(out_buf, "\"owner\""), "the model keeps 'owner'");
    /* Cross-validation says it once, not once per fold. */
    rc = RUN("train", path_in("car_id.csv"), "--target", "class", "--epochs", "2", "--cv", "3", "--quiet");
    CHECK(rc == 0 && count_of(err_buf, "'owner'") == 1, "one warning for 3 folds: %s", err_buf);
}

int main(void) {
    kt_cli_begin();
    test_cv_classification();
    test_cv_text_and_errors();
    test_cv_regression();
    test_explain();
    test_cardinality();
    return kt_cli_end("cli_cv");
}
