/* `kiln train --target a,b,c` (multi-label) and the two-class report's ROC AUC,
 * run as a user would. The multi-label data is the repository's car evaluation
 * set with four labels derived from its columns (an acceptable car, a very
 * high price, high safety, two doors), learned from the six attributes; the
 * metrics kiln reports are checked against a recomputation from `kiln
 * predict`'s output, and the AUC against a pair count. */
#include "kt_cli.h"

#include <math.h>

#define MAX_ROWS 2000
#define N_LABELS 4
static const char *const label_names[N_LABELS] = {"acceptable", "buying_vhigh", "safety_high", "doors_two"};
/* negative, positive: the rule's cases (a true-like value first in class
 * order, any case; two plain values, the later in order; 0/1). */
static const char *const label_vals[N_LABELS][2] = {{"false", "true"}, {"no", "yes"}, {"0", "1"}, {"nope", "Yes"}};

static int truth[MAX_ROWS][N_LABELS]; /* 0/1; -1: missing in the file */
static int n_rows, n_missing;

/* data/car/car.csv -> ml.csv: the six attributes and the four labels; every
 * 97th row misses its 'acceptable' value. */
static void make_car_labels(void) {
    static char src[1 << 17], buf[1 << 18];
    CHECK(read_file(KILN_SOURCE_DIR "/data/car/car.csv", src, sizeof src) > 0, "data/car/car.csv is readable");
    char *line = strchr(src, '\n');
    size_t n = (size_t)snprintf(buf, sizeof buf, "buying,maint,doors,persons,lug_boot,safety,%s,%s,%s,%s\n",
                                label_names[0], label_names[1], label_names[2], label_names[3]);
    for (n_rows = 0; line && line[1] && n_rows < MAX_ROWS; n_rows++) {
        char *row = line + 1, *f[7];
        line = strchr(row, '\n');
        if (line) *line = 0;
        f[0] = row;
        for (int k = 1; k < 7; k++) {
            char *c = strchr(f[k - 1], ',');
            if (!c) abort();
            *c = 0;
            f[k] = c + 1;
        }
        int *t = truth[n_rows];
        t[0] = n_rows % 97 == 5 ? -1 : strcmp(f[6], "unacc") != 0;
        t[1] = !strcmp(f[0], "vhigh");
        t[2] = !strcmp(f[5], "high");
        t[3] = !strcmp(f[2], "2");
        n_missing += t[0] < 0;
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s,%s,%s,%s,%s,%s", f[0], f[1], f[2], f[3], f[4], f[5]);
        for (int l = 0; l < N_LABELS; l++)
            n += (size_t)snprintf(buf + n, sizeof buf - n, ",%s", t[l] < 0 ? "?" : label_vals[l][t[l]]);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "\n");
    }
    CHECK(n_rows == 1728, "car has 1728 rows (%d)", n_rows);
    write_file("ml.csv", buf, n);
}

static const kn__json *get(kn__json_doc *d, const kn__json *v, const char *key) {
    return v ? kn__json_get(d, v, key) : NULL;
}
static double num(kn__json_doc *d, const kn__json *v, const char *key) {
    const kn__json *x = get(d, v, key);
    return x && x->type == KN__JSON_NUMBER ? x->number : NAN;
}
static const char *str(kn__json_doc *d, const kn__json *v, const char *key) {
    const kn__json *x = get(d, v, key);
    return x && x->type == KN__JSON_STRING ? x->str : "";
}

/* The next CSV field of *p (no quotes in these files), NUL-terminated in place. */
static char *field(char **p) {
    char *s = *p, *e = s + strcspn(s, ",\n");
    *p = *e ? e + 1 : e;
    *e = 0;
    return s;
}

static const char *LABELS = "acceptable,buying_vhigh,safety_high,doors_two";

static void test_train_predict_eval(void) {
    const char *csv = path_in("ml.csv"), *model = path_in("ml.safetensors"), *preds = path_in("ml_pred.csv");
    int rc = RUN("train", csv, "--target", LABELS, "--json", "--seed", "1", "--out", model);
    CHECK(rc == 0, "multi-label train exit %d: %s", rc, err_buf);
    char want[128];
    snprintf(want, sizeof want, "%d rows miss a value in one of the labels", n_missing);
    CHECK(strstr(err_buf, want) != NULL, "skipped rows counted (%s): %s", want, err_buf);
    kn__json_doc *d = kn__json_parse(out_buf, strlen(out_buf), NULL, "train --json");
    const kn__json *root = d ? kn__json_root(d) : NULL, *test = get(d, root, "test");
    CHECK(!strcmp(str(d, root, "task"), "multilabel"), "task multilabel: %.200s", out_buf);
    CHECK(num(d, get(d, root, "rows"), "train") + num(d, get(d, root, "rows"), "validation") +
                  num(d, get(d, root, "rows"), "test") == n_rows - n_missing, "the rows with every label are split");
    CHECK(num(d, test, "subset_accuracy") >= 0.95 && num(d, test, "macro_f1") >= 0.95 &&
              num(d, test, "micro_f1") >= 0.95 && num(d, test, "hamming_loss") <= 0.02,
          "the test report is good: %.400s", out_buf);
    const kn__json *labels = get(d, test, "labels");
    int l = 0;
    for (const kn__json *x = labels ? kn__json_first(d, labels) : NULL; x; x = kn__json_next(d, x), l++) {
        CHECK(l < N_LABELS && !strcmp(str(d, x, "name"), label_names[l]) &&
                  !strcmp(str(d, x, "positive"), label_vals[l][1]) && !strcmp(str(d, x, "negative"), label_vals[l][0]),
              "label %d: its name and positive value '%s'", l, str(d, x, "positive"));
        CHECK(num(d, x, "f1") >= 0.9 && num(d, x, "accuracy") >= 0.95 && num(d, x, "precision") >= 0.9 &&
                  num(d, x, "recall") >= 0.9, "label %s learned: f1 %g, accuracy %g", label_names[l % N_LABELS],
              num(d, x, "f1"), num(d, x, "accuracy"));
    }
    CHECK(l == N_LABELS, "%d labels in the report", l);
    const kn__json *h = get(d, root, "history");
    const kn__json *h0 = h ? kn__json_first(d, h) : NULL;
    CHECK(h0 && num(d, h0, "val_loss") > 0 && num(d, h0, "train_accuracy") > 0.5, "the history has the curves");
    kn__json_free(d);

    /* predict --proba, recomputed by hand; then eval's figures on the same rows. */
    rc = RUN("predict", model, csv, "--proba", "--out", preds);
    static char p[1 << 18];
    read_file(preds, p, sizeof p);
    char header[256];
    snprintf(header, sizeof header, "%s,prob_%s,prob_%s,prob_%s,prob_%s\n", "acceptable,buying_vhigh,safety_high,doors_two",
             label_names[0], label_names[1], label_names[2], label_names[3]);
    CHECK(rc == 0 && !strncmp(p, header, strlen(header)) && lines(p) == n_rows + 1,
          "predict --proba: a column per label, then the probabilities: %.200s", p);
    int64_t tp[N_LABELS] = {0}, fp[N_LABELS] = {0}, fn[N_LABELS] = {0}, tn[N_LABELS] = {0}, rows = 0, exact = 0;
    bool consistent = true;
    char *q = strchr(p, '\n') + 1;
    for (int r = 0; r < n_rows && *q; r++) {
        char *val[N_LABELS];
        double pr[N_LABELS];
        for (int k = 0; k < N_LABELS; k++) val[k] = field(&q);
        for (int k = 0; k < N_LABELS; k++) pr[k] = atof(field(&q));
        bool all = true, known = truth[r][0] >= 0;
        for (int k = 0; k < N_LABELS; k++) {
            int pred = !strcmp(val[k], label_vals[k][1]);
            consistent = consistent && (pred || !strcmp(val[k], label_vals[k][0])) && pred == (pr[k] >= 0.5);
            if (!known) continue;
            int t = truth[r][k];
            tp[k] += t && pred, fp[k] += !t && pred, fn[k] += t && !pred, tn[k] += !t && !pred;
            all = all && t == pred;
        }
        rows += known;
        exact += known && all;
    }
    CHECK(consistent, "each predicted value is the positive one exactly when its probability is >= 0.5");
    rc = RUN("eval", model, csv, "--json");
    d = rc == 0 ? kn__json_parse(out_buf, strlen(out_buf), NULL, "eval --json") : NULL;
    root = d ? kn__json_root(d) : NULL;
    CHECK(num(d, root, "rows") == rows, "eval counts the rows with every label (%g of %lld)", num(d, root, "rows"),
          (long long)rows);
    double macro = 0, wrong = 0;
    int64_t stp = 0, sfp = 0, sfn = 0;
    l = 0;
    for (const kn__json *x = d ? kn__json_first(d, get(d, root, "labels")) : NULL; x && l < N_LABELS;
         x = kn__json_next(d, x), l++) {
        double pr = tp[l] + fp[l] ? (double)tp[l] / (double)(tp[l] + fp[l]) : 0;
        double re = tp[l] + fn[l] ? (double)tp[l] / (double)(tp[l] + fn[l]) : 0;
        double f1 = pr + re > 0 ? 2 * pr * re / (pr + re) : 0, acc = (double)(tp[l] + tn[l]) / (double)rows;
        macro += f1 / N_LABELS;
        wrong += (double)(fp[l] + fn[l]);
        stp += tp[l], sfp += fp[l], sfn += fn[l];
        CHECK(fabs(num(d, x, "precision") - pr) < 1e-5 && fabs(num(d, x, "recall") - re) < 1e-5 &&
                  fabs(num(d, x, "f1") - f1) < 1e-5 && fabs(num(d, x, "accuracy") - acc) < 1e-5 &&
                  num(d, x, "support") == (double)(tp[l] + fn[l]) &&
                  fabs(num(d, x, "positive_rate") - (double)(tp[l] + fn[l]) / (double)rows) < 1e-5,
              "eval's %s figures match predict's output: p %g/%g r %g/%g f1 %g/%g", label_names[l],
              num(d, x, "precision"), pr, num(d, x, "recall"), re, num(d, x, "f1"), f1);
    }
    CHECK(l == N_LABELS, "eval reports every label");
    double micro = 2.0 * (double)stp / (double)(2 * stp + sfp + sfn);
    CHECK(fabs(num(d, root, "macro_f1") - macro) < 1e-5 && fabs(num(d, root, "micro_f1") - micro) < 1e-5 &&
              fabs(num(d, root, "subset_accuracy") - (double)exact / (double)rows) < 1e-5 &&
              fabs(num(d, root, "hamming_loss") - wrong / ((double)rows * N_LABELS)) < 1e-5,
          "eval's summary matches: macro %g/%g micro %g/%g subset %g/%g", num(d, root, "macro_f1"), macro,
          num(d, root, "micro_f1"), micro, num(d, root, "subset_accuracy"), (double)exact / (double)rows);
    kn__json_free(d);
    rc = RUN("eval", model, csv);
    CHECK(rc == 0 && strstr(out_buf, "subset accuracy") && strstr(out_buf, "Hamming loss") &&
              strstr(out_buf, "doors_two") && strstr(out_buf, "Yes"), "eval's text report: %s", out_buf);

    /* predict without --proba: the values only. */
    rc = RUN("predict", model, csv);
    CHECK(rc == 0 && !strncmp(out_buf, "acceptable,buying_vhigh,safety_high,doors_two\n", 46) &&
              !strstr(out_buf, "prob_"), "predict: one column per label: %.120s", out_buf);

    /* kiln info: the labels with their values, in text and in the schema. */
    rc = RUN("info", model);
    CHECK(rc == 0 && strstr(out_buf, "4 labels") && strstr(out_buf, "positive 'Yes', negative 'nope'"),
          "info names the labels: %s", out_buf);
    rc = RUN("info", model, "--json");
    d = rc == 0 ? kn__json_parse(out_buf, strlen(out_buf), NULL, "info --json") : NULL;
    const kn__json *sc = get(d, d ? kn__json_root(d) : NULL, "schema");
    const kn__json *ls = get(d, sc, "labels");
    CHECK(!strcmp(str(d, sc, "task"), "multilabel") && num(d, sc, "format_version") == 3 && ls && ls->count == N_LABELS &&
              !strcmp(str(d, kn__json_first(d, ls), "positive"), "true"),
          "the schema records the labels and their values: %.300s", out_buf);
    kn__json_free(d);

    /* explain and --plot work with labels. */
    rc = RUN("explain", model, csv, "--repeats", "1", "--json");
    CHECK(rc == 0 && strstr(out_buf, "\"metric\":\"mean_label_accuracy_decrease\""), "explain: %.200s %s", out_buf,
          err_buf);
    d = rc == 0 ? kn__json_parse(out_buf, strlen(out_buf), NULL, "explain --json") : NULL;
    const kn__json *top = d ? kn__json_first(d, get(d, kn__json_root(d), "features")) : NULL;
    /* buying, safety and doors each decide a label outright */
    const char *name = str(d, top, "name");
    CHECK(!strcmp(name, "safety") || !strcmp(name, "buying") || !strcmp(name, "doors"),
          "the most important column decides a label: %s", name);
    kn__json_free(d);
    /* --cv: folds stratified by label combination, each fold's rows tested once. */
    rc = RUN("train", csv, "--target", LABELS, "--cv", "3", "--epochs", "40", "--json");
    d = rc == 0 ? kn__json_parse(out_buf, strlen(out_buf), NULL, "train --cv --json") : NULL;
    root = d ? kn__json_root(d) : NULL;
    const kn__json *folds = get(d, root, "folds");
    double tested = 0;
    for (const kn__json *x = folds ? kn__json_first(d, folds) : NULL; x; x = kn__json_next(d, x))
        tested += num(d, get(d, x, "rows"), "test");
    CHECK(!strcmp(str(d, root, "task"), "multilabel") && folds && folds->count == 3 && tested == rows &&
              num(d, get(d, root, "mean"), "subset_accuracy") >= 0.9 && num(d, get(d, root, "mean"), "macro_f1") >= 0.9,
          "cross-validation of the labels: %.300s %s", out_buf, err_buf);
    kn__json_free(d);
    rc = RUN("train", csv, "--target", LABELS, "--epochs", "3", "--quiet", "--plot", path_in("ml.svg"));
    static char svg[1 << 20];
    read_file(path_in("ml.svg"), svg, sizeof svg);
    CHECK(rc == 0 && strstr(svg, "mean label accuracy") && strstr(svg, "multi-label") && !strstr(svg, "confusion"),
          "--plot draws the curves, no confusion matrix (%s)", err_buf);
}

/* A copy of ml.safetensors whose kiln_model metadata has `from` replaced by `to` (once). */
static void craft(const char *name, const char *from, const char *to) {
    kn_scope sc = kn_scope_begin();
    kn_safetensors *f = kn_safetensors_open(path_in("ml.safetensors"));
    CHECK(f != NULL, "model opens: %s", kn_error());
    if (!f) return;
    int n = kn_safetensors_count(f);
    kn_named_tensor *t = calloc((size_t)n + 1, sizeof *t);
    for (int i = 0; t && i < n; i++) {
        t[i].name = kn_safetensors_name(f, i);
        t[i].tensor = kn_safetensors_get(f, t[i].name, KN_CPU);
    }
    const char *meta = kn_safetensors_meta(f, "kiln_model"), *at = strstr(meta, from);
    CHECK(at != NULL, "metadata holds %s", from);
    size_t len = strlen(meta) + strlen(to) + 1;
    char *m2 = malloc(len);
    if (at && m2) {
        snprintf(m2, len, "%.*s%s%s", (int)(at - meta), meta, to, at + strlen(from));
        kn_meta md[3] = {{"format", "pt"}, {"kiln_version", KN_VERSION_STRING}, {"kiln_model", m2}};
        CHECK(kn_safetensors_save(path_in(name), n, t, 3, md) == KN_OK, "crafted %s: %s", name, kn_error());
    }
    free(m2);
    free(t);
    kn_safetensors_close(f);
    kn_scope_end(sc);
}

/* Damaged multi-label metadata is refused with a message, never half-read. */
static void test_crafted(void) {
    static const struct {
        const char *from, *to, *what;
    } cases[] = {
        {"\"name\":\"buying_vhigh\"", "\"name\":\"acceptable\"", "column 'acceptable' appears twice"},
        {"\"name\":\"buying_vhigh\"", "\"name\":\"buying\"", "column 'buying' appears twice"},
        {"\"positive\":\"yes\"", "\"positive\":\"no\"", "the same negative and positive value"},
        {",{\"name\":\"doors_two\",\"negative\":\"nope\",\"positive\":\"Yes\"}", "", "layers.8.weight"},
        {"\"labels\":[", "\"labels\":[3,", "bad 'labels'"},
        {"\"task\":\"multilabel\"", "\"task\":\"classification\"", "fewer than 2 classes"},
        {"\"format_version\":3", "\"format_version\":2", "format version 2"},
        {"\"classes\":[]", "\"classes\":[\"a\",\"b\"]", "a multi-label model has no classes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        craft("bad.safetensors", cases[i].from, cases[i].to);
        CHECK_FAILS(RUN("info", path_in("bad.safetensors")), cases[i].what);
    }
}

static void test_errors(void) {
    static char buf[1 << 14];
    size_t n = (size_t)snprintf(buf, sizeof buf, "x,a,b,one,three\n");
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%d,%s,%s,k,%c\n", i, i % 3 ? "yes" : "no", i % 2 ? "t" : "f",
                              "pqr"[i % 3]);
    write_file("labels.csv", buf, n);
    const char *csv = path_in("labels.csv");
    CHECK_FAILS(RUN("train", csv, "--target", "a,one"), "label column 'one' has one value ('k')");
    CHECK_FAILS(RUN("train", csv, "--target", "a,three"), "label column 'three' has 3 distinct values");
    CHECK(strstr(err_buf, "--target three"), "a multi-class column: --target COL is suggested: %s", err_buf);
    CHECK_FAILS(RUN("train", csv, "--target", "a,nope"), "no column 'nope'");
    CHECK_FAILS(RUN("train", csv, "--target", "a,b,a"), "names column 'a' twice");
    CHECK_FAILS(RUN("train", csv, "--target", "a,b", "--ignore", "b"), "--ignore names the label column 'b'");
    CHECK_FAILS(RUN("train", csv, "--target", "a,b", "--categorical", "a"), "--categorical names the label column 'a'");
    CHECK_FAILS(RUN("train", csv, "--target", "a,"), "an empty column name");
    CHECK_FAILS(RUN("train", csv, "--target", "a,b", "--task", "regression"), "multi-label");
    /* A model's labels must be in the file eval reads. */
    int rc = RUN("train", csv, "--target", "a,b", "--epochs", "2", "--quiet", "--ignore", "one,three", "--out",
                 path_in("ab.safetensors"));
    CHECK(rc == 0, "a small multi-label model: %s", err_buf);
    write_text("no_b.csv", "x,a\n1,yes\n2,no\n");
    CHECK_FAILS(RUN("eval", path_in("ab.safetensors"), path_in("no_b.csv")), "label column 'b' is missing");
    rc = RUN("predict", path_in("ab.safetensors"), path_in("no_b.csv"));
    CHECK(rc == 0 && lines(out_buf) == 3, "predict needs no labels: %s %s", out_buf, err_buf);
}

/* Two classes: the positive class and the ROC AUC, checked against a count
 * over every (positive, negative) pair of predict's probabilities. */
static void test_binary_auc(void) {
    const char *csv = KILN_SOURCE_DIR "/data/tictactoe/tictactoe.csv", *model = path_in("ttt.safetensors");
    /* A few epochs: a model that still ranks some rows wrong, so the AUC is not 1. */
    int rc = RUN("train", csv, "--target", "class", "--epochs", "2", "--layers", "8", "--seed", "4", "--json", "--out",
                 model);
    CHECK(rc == 0 && strstr(out_buf, "\"positive_class\":\"positive\"") && json_number(out_buf, "test", "roc_auc") > 0.5,
          "train's report has the positive class and the AUC: %.300s %s", out_buf, err_buf);
    rc = RUN("eval", model, csv, "--json");
    double auc = json_number(out_buf, "roc_auc", NULL);
    CHECK(rc == 0 && strstr(out_buf, "\"positive_class\":\"positive\""), "eval: %.200s", out_buf);
    rc = RUN("predict", model, csv);
    static char src[1 << 16];
    read_file(csv, src, sizeof src);
    CHECK(rc == 0 && !strncmp(out_buf, "prediction,prob_negative,prob_positive\n", 39), "predict: %.80s", out_buf);
    static double score[1000];
    static int pos[1000];
    int n = 0;
    char *q = strchr(out_buf, '\n') + 1, *s = strchr(src, '\n') + 1;
    while (*q && *s && n < 1000) {
        field(&q);
        field(&q);
        score[n] = atof(field(&q));
        char *eol = strchr(s, '\n');
        if (eol) *eol = 0;
        pos[n++] = strstr(s, ",positive") != NULL;
        s = eol ? eol + 1 : s + strlen(s);
    }
    double wins = 0, np = 0, nn = 0;
    for (int i = 0; i < n; i++) {
        np += pos[i], nn += !pos[i];
        for (int j = 0; pos[i] && j < n; j++)
            if (!pos[j]) wins += score[i] > score[j] ? 1 : score[i] == score[j] ? 0.5 : 0;
    }
    double want = wins / (np * nn);
    /* predict prints 6 digits, so scores equal there may differ in kiln: a
     * few more ties, at most a small change */
    CHECK(n == 958 && want < 0.9999 && fabs(auc - want) < 2e-3, "eval's ROC AUC %.6f, from the pairs %.6f (%d rows)",
          auc, want, n);
    rc = RUN("eval", model, csv);
    CHECK(rc == 0 && strstr(out_buf, "positive class: 'positive'; ROC AUC"), "eval's text report: %.300s", out_buf);
    /* A single-target model is still written as format version 1, without labels. */
    rc = RUN("info", model, "--json");
    CHECK(rc == 0 && strstr(out_buf, "\"format_version\":1,") && !strstr(out_buf, "\"labels\""),
          "single-target format unchanged: %.200s", out_buf);
}

int main(void) {
    kt_cli_begin();
    make_car_labels();
    test_train_predict_eval();
    test_crafted();
    test_errors();
    test_binary_auc();
    return kt_cli_end("cli_multilabel");
}
