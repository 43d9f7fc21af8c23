/* kiln command line: `kiln eval`, `kiln predict` and `kiln info` on a saved
 * model. predict and info take image models too (images.c, images_info.c). */
#include "cli.h"
#include "images.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model, *file, *out, *device;
    char delimiter;
    bool set_delim, json, quiet, proba;
} use_args;

static int parse_use(int argc, char **argv, const char *cmd, bool allow_out, use_args *a, void (*help)(void)) {
    const char *v;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            help();
            return 0;
        }
        if (!strcmp(s, "--json")) a->json = true;
        else if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) a->quiet = true;
        else if (opt_is(s, "--device", &v, &i, argc, argv)) { if (!(a->device = v)) return 2; }
        else if (opt_is(s, "--delimiter", &v, &i, argc, argv)) {
            if (!parse_delimiter(v, &a->delimiter)) return 2;
            a->set_delim = true;
        } else if (allow_out && opt_is(s, "--out", &v, &i, argc, argv)) { if (!(a->out = v)) return 2; }
        else if (allow_out && !strcmp(s, "--proba")) a->proba = true;
        else if (s[0] == '-' && s[1]) return cli_error("%s: unknown option '%s' (see kiln %s --help)", cmd, s, cmd), 2;
        else if (!a->model) a->model = s;
        else if (!a->file) a->file = s;
        else return cli_error("%s: unexpected argument '%s'", cmd, s), 2;
    }
    if (!a->model || !a->file) return cli_error("%s: needs a model file and a data file (kiln %s MODEL FILE.csv)", cmd, cmd), 2;
    return -1;
}

static void eval_help(void) {
    printf("usage: kiln eval MODEL FILE.csv [options]\n\n"
           "Runs a saved model on every row of FILE.csv that has a value in the model's target\n"
           "column and prints accuracy, the confusion matrix and the per-class report (two classes:\n"
           "also the positive class and ROC AUC). A multi-label model: the rows with every label,\n"
           "the per-label report and subset accuracy, Hamming loss, micro and macro F1.\n"
           "  --device NAME     cpu, cuda, ... (default: the best available)\n"
           "  --delimiter C     field separator (default: the one the model was trained with)\n"
           "  --json            the metrics as one JSON object on stdout\n"
           "  --quiet           only the report\n");
}

static void predict_help(void) {
    printf("usage: kiln predict MODEL FILE.csv [--out preds.csv] [options]\n\n"
           "Writes one line per row of FILE.csv: the predicted class, then the probability of\n"
           "each class (columns prediction,prob_<class>,...); for a regression model, the value\n"
           "(one column, prediction); for a multi-label model, one column per label (named as the\n"
           "label) with the predicted value, and with --proba then prob_<label>, the probability of\n"
           "its positive value. Target columns in FILE.csv are ignored. Categories the model never\n"
           "saw map to its 'unknown' input (with a warning).\n"
           "An image model (kiln train-images) takes a directory or an IDX file instead of\n"
           "FILE.csv and writes what kiln predict-images writes (options --out and --device).\n"
           "  --out FILE        write the predictions there (atomically) instead of stdout\n"
           "  --proba           multi-label: the probabilities too (a classifier always has them)\n"
           "  --device NAME     cpu, cuda, ... (default: the best available)\n"
           "  --delimiter C     field separator of FILE.csv (default: the model's)\n"
           "  --quiet           no summary on stderr\n");
}

/* Loads the model and encodes the file's rows. */
static bool prepare(use_args *a, bool need_target, kn_device *dev, kn_module **m, schema *s, arch *ar,
                    kn_csv **csv, encoded *e, dev_data *d) {
    if (!(*m = model_load(a->model, *dev, s, ar))) return false;
    if (!(*csv = table_read(a->file, a->set_delim ? a->delimiter : s->delimiter))) return false;
    if (!table_encode(*csv, a->file, s, NULL, kn_csv_rows(*csv), need_target, e)) return false;
    if (e->unknown)
        cli_warn("%s: %lld categorical values were not seen in training (mapped to 'unknown')", a->file,
                 (long long)e->unknown);
    if (e->imputed)
        cli_warn("%s: %lld numeric values are missing in columns that had none in training (replaced by the "
                 "training mean)", a->file, (long long)e->imputed);
    return dev_data_make(e, s, *dev, d);
}

int cmd_eval(int argc, char **argv) {
    use_args a = {0};
    int rc = parse_use(argc, argv, "eval", false, &a, eval_help);
    if (rc >= 0) return rc;
    kn_device dev;
    if (!pick_device(a.device, &dev)) return 2;
    rc = 1;
    kn_module *m = NULL;
    schema s = {0};
    arch ar;
    kn_csv *csv = NULL;
    encoded e = {0};
    dev_data d = {0};
    metrics mt = {0};
    float *p = NULL;
    if (!prepare(&a, true, &dev, &m, &s, &ar, &csv, &e, &d)) goto done;
    int64_t labelled = 0;
    for (int64_t i = 0; i < e.n; i++) labelled += e.y[i] >= 0;
    if (labelled == 0) {
        cli_error("%s: no row has a known value in the target column%s '%s'", a.file, s.n_labels ? "s" : "", s.target);
        goto done;
    }
    if (labelled < e.n && !a.json)
        cli_warn("%s: %lld rows without a known '%s' value%s are left out", a.file, (long long)(e.n - labelled),
                 s.target, s.n_labels ? " in every label" : "");
    if (s.n_labels) {
        ml_metrics mm;
        if (!(p = predict_proba(m, &d, &s)) || !ml_metrics_compute(p, e.ym, e.y, e.n, s.n_labels, NULL, &mm)) goto done;
        if (a.json) {
            printf("{\"kiln_version\":\"%s\",\"command\":\"eval\",\"task\":\"multilabel\",\"model\":",
                   KN_VERSION_STRING);
            json_str(stdout, a.model);
            printf(",\"file\":");
            json_str(stdout, a.file);
            printf(",\"device\":\"%s\",\"unknown_categories\":%lld,", kn_device_str(dev), (long long)e.unknown);
            ml_report_json(&mm, &s, stdout);
            printf("}\n");
        } else {
            if (!a.quiet)
                printf("Using %s device\nmodel %s (%d labels: %s); %s: %lld rows\n",
                       kn_device_kind_name((kn_device_kind)dev.kind), a.model, s.n_labels, s.target, a.file,
                       (long long)e.n);
            ml_report_print(&mm, &s, a.file, stdout);
        }
        ml_metrics_free(&mm);
    } else if (s.regression) {
        reg_metrics rm;
        if (!(p = predict_proba(m, &d, &s)) || !reg_metrics_compute(p, e.yv, e.n, s.y_mean, s.y_std, &rm)) goto done;
        if (a.json) {
            printf("{\"kiln_version\":\"%s\",\"command\":\"eval\",\"task\":\"regression\",\"model\":",
                   KN_VERSION_STRING);
            json_str(stdout, a.model);
            printf(",\"file\":");
            json_str(stdout, a.file);
            printf(",\"device\":\"%s\",\"unknown_categories\":%lld,", kn_device_str(dev), (long long)e.unknown);
            reg_report_json(&rm, stdout);
            printf("}\n");
        } else {
            if (!a.quiet)
                printf("Using %s device\nmodel %s (target '%s', regression); %s: %lld rows\n",
                       kn_device_kind_name((kn_device_kind)dev.kind), a.model, s.target, a.file, (long long)e.n);
            reg_report_print(&rm, a.file, s.target, stdout);
        }
    } else if (!(p = predict_proba(m, &d, &s)) || !metrics_compute(p, e.y, e.n, s.n_classes, NULL, &mt)) {
        goto done;
    } else if (a.json) {
        printf("{\"kiln_version\":\"%s\",\"command\":\"eval\",\"model\":", KN_VERSION_STRING);
        json_str(stdout, a.model);
        printf(",\"file\":");
        json_str(stdout, a.file);
        printf(",\"device\":\"%s\",\"unknown_categories\":%lld,", kn_device_str(dev), (long long)e.unknown);
        report_json_metrics(&mt, s.classes, stdout);
        printf("}\n");
    } else {
        if (!a.quiet)
            printf("Using %s device\nmodel %s (target '%s', %d classes); %s: %lld rows\n",
                   kn_device_kind_name((kn_device_kind)dev.kind), a.model, s.target, s.n_classes, a.file,
                   (long long)e.n);
        report_print(&mt, s.classes, stdout);
    }
    rc = 0;
done:
    metrics_free(&mt);
    free(p);
    dev_data_free(&d);
    encoded_free(&e);
    kn_csv_free(csv);
    kn_module_free(m);
    schema_free(&s);
    return rc;
}

/* ---- predictions as CSV ------------------------------------------------------------------ */
typedef struct {
    char *data;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

/* A CSV field, quoted when it holds the delimiter, a quote or a line break. */
static void put_field(sbuf *b, const char *s, char delim) {
    if (!strchr(s, delim) && !strpbrk(s, "\"\r\n")) {
        put(b, s, strlen(s));
        return;
    }
    put(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"') put(b, "\"", 1);
        put(b, s, 1);
    }
    put(b, "\"", 1);
}

int cmd_predict(int argc, char **argv) {
    use_args a = {0};
    int rc = parse_use(argc, argv, "predict", true, &a, predict_help);
    if (rc >= 0) return rc;
    if (img_model_is(a.model)) { /* kiln train-images' model: predict-images does the work */
        const char *bad = a.set_delim ? "--delimiter" : a.proba ? "--proba" : a.json ? "--json" : NULL;
        if (bad)
            return cli_error("predict: %s does not apply to an image model (%s); its options are --out and --device "
                             "(see kiln predict-images --help)", bad, a.model), 2;
        return img_predict_run(a.model, a.file, a.out, a.device);
    }
    kn_device dev;
    if (!pick_device(a.device, &dev)) return 2;
    if (a.out && !out_path_ok("--out", a.out, (const char *[]){a.model, a.file}, 2)) return 1;
    rc = 1;
    kn_module *m = NULL;
    schema s = {0};
    arch ar;
    kn_csv *csv = NULL;
    encoded e = {0};
    dev_data d = {0};
    float *p = NULL;
    sbuf b = {0};
    if (!prepare(&a, false, &dev, &m, &s, &ar, &csv, &e, &d)) goto done;
    if (!(p = predict_proba(m, &d, &s))) goto done;
    char delim = a.set_delim ? a.delimiter : ',';
    char dl[2] = {delim, 0}, num[40];
    if (s.n_labels) { /* each label's value, then (--proba) its positive value's probability */
        int L = s.n_labels;
        for (int pass = 0; pass < (a.proba ? 2 : 1); pass++)
            for (int l = 0; l < L; l++) {
                if (pass || l) put(&b, dl, 1);
                char *name = malloc(strlen(s.labels[l]) + sizeof "prob_");
                if (!name) {
                    b.oom = true;
                    break;
                }
                strcpy(name, pass ? "prob_" : "");
                strcat(name, s.labels[l]);
                put_field(&b, name, delim);
                free(name);
            }
        put(&b, "\n", 1);
        for (int64_t i = 0; i < e.n; i++) {
            for (int l = 0; l < L; l++) {
                if (l) put(&b, dl, 1);
                put_field(&b, s.label_values[2 * l + (p[i * L + l] >= 0.5f)], delim);
            }
            for (int l = 0; a.proba && l < L; l++) {
                int n = snprintf(num, sizeof num, "%c%.6g", delim, (double)p[i * L + l]);
                put(&b, num, (size_t)n);
            }
            put(&b, "\n", 1);
        }
    }
    if (!s.n_labels) put(&b, "prediction", 10);
    if (s.regression) { /* one column: the value, in the target's units */
        put(&b, "\n", 1);
        for (int64_t i = 0; i < e.n; i++) {
            int n = snprintf(num, sizeof num, "%.9g\n", (double)p[i] * s.y_std + s.y_mean);
            put(&b, num, (size_t)n);
        }
    }
    for (int c = 0; c < s.n_classes; c++) {
        char *name = malloc(strlen(s.classes[c]) + sizeof "prob_");
        if (!name) {
            b.oom = true;
            break;
        }
        strcpy(name, "prob_");
        strcat(name, s.classes[c]);
        put(&b, dl, 1);
        put_field(&b, name, delim);
        free(name);
    }
    if (!s.regression && !s.n_labels) put(&b, "\n", 1);
    for (int64_t i = 0; !s.regression && !s.n_labels && i < e.n; i++) {
        const float *q = p + i * s.n_classes;
        int best = 0;
        for (int c = 1; c < s.n_classes; c++)
            if (q[c] > q[best]) best = c;
        put_field(&b, s.classes[best], delim);
        for (int c = 0; c < s.n_classes; c++) {
            int n = snprintf(num, sizeof num, "%c%.6g", delim, (double)q[c]);
            put(&b, num, (size_t)n);
        }
        put(&b, "\n", 1);
    }
    if (b.oom) {
        cli_error("out of memory writing the predictions");
        goto done;
    }
    if (a.out) {
        if (kn_file_write_atomic(a.out, b.data, b.len) != KN_OK) {
            cli_error("%s", kn_error());
            goto done;
        }
        if (!a.quiet)
            fprintf(stderr, "kiln: %lld predictions written to %s\n", (long long)e.n, a.out);
    } else if (fwrite(b.data, 1, b.len, stdout) != b.len || fflush(stdout)) {
        cli_error("writing the predictions to stdout failed");
        goto done;
    }
    rc = 0;
done:
    free(b.data);
    free(p);
    dev_data_free(&d);
    encoded_free(&e);
    kn_csv_free(csv);
    kn_module_free(m);
    schema_free(&s);
    return rc;
}

/* ---- kiln info ---------------------------------------------------------------------------- */
int cmd_info(int argc, char **argv) {
    const char *model = NULL;
    bool json = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kiln info MODEL [--json]\n\n"
                   "What a saved model is: the kiln that wrote it, the task and target, the classes or\n"
                   "the target's statistics, the columns with their vocabularies and statistics, the\n"
                   "architecture and the parameter count. --json: the file's schema as one JSON object.\n"
                   "An image model (kiln train-images): its input size and normalisation, classes, layers,\n"
                   "parameter count and the training run that made it.\n");
            return 0;
        }
        if (!strcmp(argv[i], "--json")) json = true;
        else if (argv[i][0] == '-' && argv[i][1]) return cli_error("info: unknown option '%s' (see kiln info --help)", argv[i]), 2;
        else if (!model) model = argv[i];
        else return cli_error("info: unexpected argument '%s' (one model file)", argv[i]), 2;
    }
    if (!model) return cli_error("info: needs a model file (kiln info MODEL)"), 2;
    if (img_model_is(model)) return img_info(model, json);
    schema s = {0};
    arch ar;
    kn_module *m = model_load(model, KN_CPU, &s, &ar); /* checks it all, as eval would */
    if (!m) {
        schema_free(&s);
        return 1;
    }
    kn_safetensors *f = kn_safetensors_open(model);
    const char *ver = f ? kn_safetensors_meta(f, "kiln_version") : NULL;
    if (json) {
        const char *js = f ? kn_safetensors_meta(f, "kiln_model") : NULL;
        printf("{\"model\":");
        json_str(stdout, model);
        printf(",\"written_by\":");
        json_str(stdout, ver ? ver : "unknown");
        printf(",\"parameters\":%lld,\"schema\":%s}\n", (long long)kn_module_num_params(m), js ? js : "null");
    } else {
        printf("%s: kiln model, written by kiln %s\n", model, ver ? ver : "(unknown)");
        schema_print(&s, stdout);
        if (!s.regression && !s.n_labels) {
            printf("classes:");
            for (int c = 0; c < s.n_classes; c++) printf(" %s", s.classes[c]);
            printf("\n");
        }
        printf("architecture: layers");
        for (int i = 0; i < ar.n_layers; i++) printf("%s%d", i ? "," : " ", ar.layers[i]);
        printf(", dropout %g, embedding dropout %g; %lld parameters\n", ar.dropout, ar.emb_dropout,
               (long long)kn_module_num_params(m));
        kn_module_print(m, stdout);
    }
    kn_safetensors_close(f);
    kn_module_free(m);
    schema_free(&s);
    return 0;
}
