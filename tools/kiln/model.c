/* kiln command line: the tabular model and its file.
 *
 * The model is the tutorial's: an embedding per categorical column, dropout
 * on the concatenated embeddings, the numeric inputs appended, then blocks of
 * Linear -> ReLU -> BatchNorm1d -> Dropout and a final Linear. Names follow
 * PyTorch's state_dict (all_embeddings.0.weight, layers.0.weight, ...), and the
 * file's metadata holds the schema, so `kiln predict` needs nothing else. */
#include "cli.h"

#include <math.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_FORMAT "kiln-tabular"
/* Version 2 adds regression ("task", "target_mean", "target_std"); version 3
 * multi-label ("task": "multilabel", "labels": [{"name", "negative",
 * "positive"}], "target" the list as given, no classes). A classifier is
 * still written as version 1 and a regression as 2, so older kilns read them. */
#define MODEL_FORMAT_VERSION 3

typedef struct {
    int n_cat, n_num;
} tab_state;

static kn_tensor *tab_forward(kn_module *self, int n, kn_tensor *const *in) {
    (void)n;
    const tab_state *st = kn_module_state(self);
    kn_tensor *parts[2];
    int np = 0;
    if (st->n_cat > 0) {
        kn_module *embs = kn_module_child(self, "all_embeddings");
        kn_tensor **tables = malloc((size_t)st->n_cat * sizeof *tables);
        if (!tables) return NULL;
        for (int i = 0; i < st->n_cat; i++) tables[i] = kn_module_get(kn_module_child_at(embs, i), "weight");
        kn_tensor *h = kn_embedding_cat(st->n_cat, tables, in[0]); /* every column's embedding, joined */
        free(tables);
        parts[np++] = kn_module_forward(kn_module_child(self, "embedding_dropout"), h);
    }
    if (st->n_num > 0) parts[np++] = in[1];
    kn_tensor *x = np == 1 ? parts[0] : kn_concat(np, parts, 1);
    return kn_module_forward(kn_module_child(self, "layers"), x);
}

kn_tensor *model_forward(kn_module *m, kn_tensor *cat, kn_tensor *num) {
    kn_tensor *in[2] = {cat ? cat : num, num ? num : cat};
    return kn_module_forward_n(m, 2, in);
}

kn_module *model_build(const schema *s, const arch *a) {
    kn_module *m = kn_module_new("TabularModel", tab_forward, sizeof(tab_state), NULL);
    if (!m) return NULL;
    *(tab_state *)kn_module_state(m) = (tab_state){s->n_cat, s->n_num};
    int64_t in = s->n_num;
    if (s->n_cat > 0) {
        kn_module *embs = kn_module_add(m, "all_embeddings", kn_module_new("ModuleList", NULL, 0, NULL));
        for (int i = 0; i < s->n_cat && embs; i++) {
            char name[16];
            snprintf(name, sizeof name, "%d", i);
            /* One row per training value plus the "unknown" row. */
            kn_module_add(embs, name, kn_nn_embedding(s->f[i].n_vocab + 1, s->f[i].dim));
            in += s->f[i].dim;
        }
        kn_module_add(m, "embedding_dropout", kn_nn_dropout(a->emb_dropout));
    }
    kn_module *seq = kn_module_add(m, "layers", kn_nn_sequential(0, NULL));
    for (int i = 0; i < a->n_layers; i++) {
        kn_nn_sequential_append(seq, kn_nn_linear(in, a->layers[i], true));
        kn_nn_sequential_append(seq, kn_nn_relu());
        kn_nn_sequential_append(seq, kn_nn_batch_norm1d(a->layers[i]));
        kn_nn_sequential_append(seq, kn_nn_dropout(a->dropout));
        in = a->layers[i];
    }
    kn_nn_sequential_append(seq, kn_nn_linear(in, schema_outputs(s), true));
    if (kn_error_code() != KN_OK) {
        cli_error("building the model: %s", kn_error());
        kn_module_free(m);
        return NULL;
    }
    return m;
}

void model_fill_unknown(kn_module *m, const schema *s) {
    kn_module *embs = kn_module_child(m, "all_embeddings");
    for (int i = 0; i < s->n_cat && embs; i++) {
        const feature *f = &s->f[i];
        if (!f->counts) continue;
        kn_tensor *w = kn_module_get(kn_module_child_at(embs, i), "weight");
        int64_t rows = f->n_vocab + 1, dim = f->dim, total = 0;
        float *h = malloc((size_t)(rows * dim) * sizeof *h);
        if (!h || kn_to_host(w, h, KN_F32) != KN_OK) {
            free(h);
            continue;
        }
        double *mean = calloc((size_t)dim, sizeof *mean);
        for (int c = 0; c < f->n_vocab && mean; c++) {
            total += f->counts[c];
            for (int64_t d = 0; d < dim; d++) mean[d] += (double)f->counts[c] * h[c * dim + d];
        }
        if (mean && total > 0) {
            for (int64_t d = 0; d < dim; d++) h[f->n_vocab * dim + d] = (float)(mean[d] / (double)total);
            kn_scope sc = kn_scope_begin();
            kn_no_grad_begin();
            kn_copy_(w, kn_from_data(h, KN_F32, KN_SHAPE(rows, dim), KN_CPU));
            kn_no_grad_end();
            kn_scope_end(sc);
        }
        free(mean);
        free(h);
    }
}

static bool weights_finite(kn_module *m, const char *path, const char *what);

/* ---- saving -------------------------------------------------------------------------- */
static void j_num(FILE *f, double v) { fprintf(f, "%.17g", isfinite(v) ? v : 0.0); }

/* json_str (report.c) writes names and values: UTF-8, as table_read checked. */
char *model_schema_json(const schema *s, const arch *a, const char *recipe) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    fprintf(f, "{\"format\":");
    json_str(f, MODEL_FORMAT);
    fprintf(f, ",\"format_version\":%d,\"recipe\":", s->n_labels ? 3 : s->regression ? 2 : 1);
    json_str(f, recipe);
    fprintf(f, ",\"target\":");
    json_str(f, s->target);
    if (s->regression) {
        fprintf(f, ",\"task\":\"regression\",\"target_mean\":");
        j_num(f, s->y_mean);
        fprintf(f, ",\"target_std\":");
        j_num(f, s->y_std);
    }
    if (s->n_labels) {
        fprintf(f, ",\"task\":\"multilabel\",\"labels\":[");
        for (int l = 0; l < s->n_labels; l++) {
            fprintf(f, "%s{\"name\":", l ? "," : "");
            json_str(f, s->labels[l]);
            fprintf(f, ",\"negative\":");
            json_str(f, s->label_values[2 * l]);
            fprintf(f, ",\"positive\":");
            json_str(f, s->label_values[2 * l + 1]);
            fprintf(f, "}");
        }
        fprintf(f, "]");
    }
    fprintf(f, ",\"classes\":[");
    for (int c = 0; c < s->n_classes; c++) {
        if (c) fputc(',', f);
        json_str(f, s->classes[c]);
    }
    char d[2] = {s->delimiter, 0};
    fprintf(f, "],\"delimiter\":");
    json_str(f, d);
    fprintf(f, ",\"architecture\":{\"block\":\"Linear-ReLU-BatchNorm1d-Dropout\",\"layers\":[");
    for (int i = 0; i < a->n_layers; i++) fprintf(f, "%s%d", i ? "," : "", a->layers[i]);
    fprintf(f, "],\"dropout\":");
    j_num(f, a->dropout);
    fprintf(f, ",\"embedding_dropout\":");
    j_num(f, a->emb_dropout);
    fprintf(f, "},\"categorical\":[");
    bool first = true;
    for (int i = 0; i < s->n_f; i++) {
        const feature *ft = &s->f[i];
        if (ft->type != COL_CATEGORICAL) continue;
        fprintf(f, "%s{\"name\":", first ? "" : ",");
        first = false;
        json_str(f, ft->name);
        fprintf(f, ",\"embedding_dim\":%d,\"missing_index\":%d,\"unknown_index\":%d,\"vocabulary\":[", ft->dim,
                ft->missing_code, ft->n_vocab);
        for (int c = 0; c < ft->n_vocab; c++) {
            if (c) fputc(',', f);
            json_str(f, ft->vocab[c]);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "],\"numeric\":[");
    first = true;
    int ni = 0;
    for (int i = 0; i < s->n_f; i++) {
        const feature *ft = &s->f[i];
        if (ft->type != COL_NUMERIC) continue;
        fprintf(f, "%s{\"name\":", first ? "" : ",");
        first = false;
        json_str(f, ft->name);
        fprintf(f, ",\"input_index\":%d,\"mean\":", ni);
        j_num(f, ft->mean);
        fprintf(f, ",\"std\":");
        j_num(f, ft->std);
        fprintf(f, ",\"missing_indicator\":%s}", ft->indicator ? "true" : "false");
        ni += 1 + ft->indicator;
    }
    fprintf(f, "]}");
    bool failed = ferror(f) != 0;
    if (fclose(f) != 0 || failed) {
        free(text);
        return NULL;
    }
    return text;
}

bool model_save(kn_module *m, const schema *s, const arch *a, const char *recipe, const char *path) {
    /* What the loader would refuse is not written (the old file stays). */
    if (!weights_finite(m, path, "training diverged; the model is not saved")) return false;
    char *js = model_schema_json(s, a, recipe);
    if (!js) {
        cli_error("%s: out of memory writing the model", path);
        return false;
    }
    kn_meta meta[] = {{"format", "pt"}, {"kiln_version", KN_VERSION_STRING}, {"kiln_model", js}};
    kn_status st = kn_module_save(m, path, 3, meta);
    free(js);
    if (st != KN_OK) {
        cli_error("saving the model: %s", kn_error());
        return false;
    }
    return true;
}

/* ---- loading -------------------------------------------------------------------------- */
typedef struct {
    const char *path;
    kn_json_doc *d;
} jctx;

static const char *type_name(const kn_json *v) { return kn_json_type_name(kn_json_type_of(v)); }

static const kn_json *member(jctx *c, const kn_json *obj, const char *key, kn_json_type t) {
    const kn_json *v = kn_json_get(c->d, obj, key);
    if (!v || kn_json_type_of(v) != t) {
        cli_error("%s: kiln_model metadata: '%s' is %s (expected %s); the file is damaged or not from kiln",
                  c->path, key, v ? type_name(v) : "missing", kn_json_type_name(t));
        return NULL;
    }
    return v;
}

static bool int_member(jctx *c, const kn_json *obj, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const kn_json *v = member(c, obj, key, KN_JSON_NUMBER);
    int64_t x;
    if (!v) return false;
    if (!kn_json_int(v, &x) || x < lo || x > hi) {
        cli_error("%s: kiln_model metadata: '%s' is out of range", c->path, key);
        return false;
    }
    *out = x;
    return true;
}

static char **str_array(jctx *c, const kn_json *arr, const char *what, int *n) {
    char **out = cli_alloc(((size_t)kn_json_count(arr) + 1) * sizeof *out);
    if (!out) return NULL;
    int k = 0;
    for (const kn_json *v = kn_json_first(c->d, arr); v; v = kn_json_next(c->d, v)) {
        const char *str = kn_json_str(v, NULL);
        if (!str || !(out[k] = cli_strdup(str))) {
            if (!str)
                cli_error("%s: kiln_model metadata: %s holds a %s (expected strings)", c->path, what, type_name(v));
            while (k > 0) free(out[--k]);
            free(out);
            return NULL;
        }
        k++;
    }
    *n = k;
    return out;
}

static int cmp_pstr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The first name that appears twice in v[0, n) (sorted copy), or NULL. */
static const char *duplicate_of(const char *const *v, int n) {
    const char **t = malloc(((size_t)n + 1) * sizeof *t);
    if (!t) return NULL;
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_pstr);
    const char *d = NULL;
    for (int i = 1; i < n && !d; i++)
        if (!strcmp(t[i - 1], t[i])) d = t[i];
    free(t);
    return d;
}

/* Names must be distinct (classes, every vocabulary, the input columns and
 * the target), or codes and columns would silently merge. */
static bool schema_distinct(const char *path, const schema *s) {
    const char *d = duplicate_of((const char *const *)s->classes, s->n_classes);
    if (d) return cli_error("%s: kiln_model metadata: class '%s' appears twice", path, d), false;
    const char **cols = malloc(((size_t)s->n_f + (size_t)s->n_labels + 2) * sizeof *cols);
    if (!cols) return cli_error("out of memory"), false;
    for (int i = 0; i < s->n_f; i++) cols[i] = s->f[i].name;
    int nt = s->n_labels ? s->n_labels : 1;
    for (int l = 0; l < nt; l++) cols[s->n_f + l] = s->n_labels ? s->labels[l] : s->target;
    d = duplicate_of(cols, s->n_f + nt);
    free(cols);
    if (d) return cli_error("%s: kiln_model metadata: column '%s' appears twice", path, d), false;
    for (int i = 0; i < s->n_f; i++)
        if (s->f[i].type == COL_CATEGORICAL && (d = duplicate_of((const char *const *)s->f[i].vocab, s->f[i].n_vocab)))
            return cli_error("%s: kiln_model metadata: value '%s' appears twice in the vocabulary of '%s'", path, d,
                             s->f[i].name), false;
    return true;
}

/* The elements of the network the schema describes, as a double (no
 * overflow): checked against what the file holds before anything is built. */
static double schema_elements(const schema *s, const arch *a) {
    double total = 0, in = s->n_num;
    for (int i = 0; i < s->n_f; i++)
        if (s->f[i].type == COL_CATEGORICAL) total += ((double)s->f[i].n_vocab + 1) * s->f[i].dim, in += s->f[i].dim;
    for (int i = 0; i < a->n_layers; i++) {
        total += in * a->layers[i] + 5.0 * a->layers[i]; /* weight, bias; batch norm's 4 vectors */
        in = a->layers[i];
    }
    return total + in * schema_outputs(s) + schema_outputs(s);
}

/* "labels": at least two, each {"name", "negative", "positive"} with two
 * different values. */
static bool parse_labels(jctx *c, const kn_json *root, schema *s) {
    const kn_json *arr = member(c, root, "labels", KN_JSON_ARRAY);
    if (!arr) return false;
    int64_t n = kn_json_count(arr);
    if (n < 2) return cli_error("%s: kiln_model metadata: a multi-label model with fewer than 2 labels", c->path), false;
    if (!(s->labels = cli_alloc((size_t)n * sizeof *s->labels)) ||
        !(s->label_values = cli_alloc((size_t)n * 2 * sizeof *s->label_values)))
        return false;
    for (const kn_json *v = kn_json_first(c->d, arr); v; v = kn_json_next(c->d, v)) {
        if (kn_json_type_of(v) != KN_JSON_OBJECT)
            return cli_error("%s: kiln_model metadata: bad 'labels'", c->path), false;
        const kn_json *nm = member(c, v, "name", KN_JSON_STRING), *neg = member(c, v, "negative", KN_JSON_STRING);
        const kn_json *pos = member(c, v, "positive", KN_JSON_STRING);
        if (!nm || !neg || !pos) return false;
        int l = s->n_labels++;
        if (!(s->labels[l] = cli_strdup(kn_json_str(nm, NULL))) ||
            !(s->label_values[2 * l] = cli_strdup(kn_json_str(neg, NULL))) ||
            !(s->label_values[2 * l + 1] = cli_strdup(kn_json_str(pos, NULL))))
            return false;
        if (!strcmp(s->label_values[2 * l], s->label_values[2 * l + 1]))
            return cli_error("%s: kiln_model metadata: label '%s' has the same negative and positive value", c->path,
                             s->labels[l]), false;
    }
    return true;
}

static bool parse_schema(jctx *c, schema *s, arch *a) {
    const kn_json *root = kn_json_root(c->d);
    if (kn_json_type_of(root) != KN_JSON_OBJECT)
        return cli_error("%s: kiln_model metadata is not an object", c->path), false;
    const kn_json *fmt = member(c, root, "format", KN_JSON_STRING);
    int64_t ver;
    if (!fmt) return false;
    const char *format = kn_json_str(fmt, NULL);
    if (strcmp(format, MODEL_FORMAT)) return cli_error("%s: not a kiln tabular model (format '%s')", c->path, format), false;
    if (!int_member(c, root, "format_version", 1, 1000000, &ver)) return false;
    if (ver > MODEL_FORMAT_VERSION)
        return cli_error("%s: model format version %lld is newer than this kiln (%s) reads", c->path, (long long)ver,
                         KN_VERSION_STRING), false;
    const kn_json *t = member(c, root, "target", KN_JSON_STRING), *cl = member(c, root, "classes", KN_JSON_ARRAY);
    const kn_json *ar = member(c, root, "architecture", KN_JSON_OBJECT);
    const kn_json *cats = member(c, root, "categorical", KN_JSON_ARRAY), *nums = member(c, root, "numeric", KN_JSON_ARRAY);
    const kn_json *del = member(c, root, "delimiter", KN_JSON_STRING);
    if (!t || !cl || !ar || !cats || !nums || !del) return false;
    if (!(s->target = cli_strdup(kn_json_str(t, NULL))) || !(s->classes = str_array(c, cl, "classes", &s->n_classes)))
        return false;
    const kn_json *task = kn_json_get(c->d, root, "task");
    if (task) {
        const char *tn = kn_json_type_of(task) == KN_JSON_STRING ? kn_json_str(task, NULL) : "";
        if (strcmp(tn, "regression") && strcmp(tn, "classification") && strcmp(tn, "multilabel"))
            return cli_error("%s: kiln_model metadata: 'task' is not regression, classification or multilabel",
                             c->path), false;
        s->regression = !strcmp(tn, "regression");
        if (!strcmp(tn, "multilabel") && ver < 3)
            return cli_error("%s: kiln_model metadata: a multi-label model of format version %lld (labels came in 3)",
                             c->path, (long long)ver), false;
        if (!strcmp(tn, "multilabel") && !parse_labels(c, root, s)) return false;
    }
    if (s->regression) {
        const kn_json *ym = member(c, root, "target_mean", KN_JSON_NUMBER), *ys = member(c, root, "target_std", KN_JSON_NUMBER);
        if (!ym || !ys) return false;
        s->y_mean = kn_json_number(ym);
        s->y_std = kn_json_number(ys);
        if (!isfinite(s->y_mean) || !(s->y_std > 0) || !isfinite(s->y_std))
            return cli_error("%s: kiln_model metadata: invalid target_mean or target_std", c->path), false;
        if (s->n_classes != 0) return cli_error("%s: kiln_model metadata: a regression model has no classes", c->path), false;
    } else if (s->n_labels) {
        if (s->n_classes != 0) return cli_error("%s: kiln_model metadata: a multi-label model has no classes", c->path), false;
    } else if (s->n_classes < 2) {
        return cli_error("%s: kiln_model metadata: fewer than 2 classes", c->path), false;
    }
    size_t dlen;
    const char *dstr = kn_json_str(del, &dlen);
    s->delimiter = dlen == 1 ? dstr[0] : ',';
    const kn_json *layers = member(c, ar, "layers", KN_JSON_ARRAY);
    const kn_json *dp = member(c, ar, "dropout", KN_JSON_NUMBER), *edp = member(c, ar, "embedding_dropout", KN_JSON_NUMBER);
    if (!layers || !dp || !edp) return false;
    a->n_layers = 0;
    for (const kn_json *v = kn_json_first(c->d, layers); v; v = kn_json_next(c->d, v)) {
        int64_t width;
        if (a->n_layers == CLI_MAX_LAYERS || !kn_json_int(v, &width) || width < 1 || width > 1 << 20)
            return cli_error("%s: kiln_model metadata: bad 'layers'", c->path), false;
        a->layers[a->n_layers++] = (int)width;
    }
    a->dropout = kn_json_number(dp);
    a->emb_dropout = kn_json_number(edp);
    if (!(a->dropout >= 0 && a->dropout <= 1 && a->emb_dropout >= 0 && a->emb_dropout <= 1))
        return cli_error("%s: kiln_model metadata: bad dropout", c->path), false;
    s->f = cli_alloc(((size_t)kn_json_count(cats) + (size_t)kn_json_count(nums) + 1) * sizeof *s->f);
    if (!s->f) return false;
    for (const kn_json *v = kn_json_first(c->d, cats); v; v = kn_json_next(c->d, v)) {
        feature *f = &s->f[s->n_f++];
        f->type = COL_CATEGORICAL;
        f->missing_code = -1;
        if (kn_json_type_of(v) != KN_JSON_OBJECT)
            return cli_error("%s: kiln_model metadata: bad 'categorical'", c->path), false;
        const kn_json *nm = member(c, v, "name", KN_JSON_STRING), *voc = member(c, v, "vocabulary", KN_JSON_ARRAY);
        int64_t dim, mi, ui, nv = kn_json_count(voc);
        if (!nm || !voc || !int_member(c, v, "embedding_dim", 1, 1 << 20, &dim) ||
            !int_member(c, v, "missing_index", -1, nv - 1, &mi) || !int_member(c, v, "unknown_index", nv, nv, &ui))
            return false;
        if (!(f->name = cli_strdup(kn_json_str(nm, NULL))) || !(f->vocab = str_array(c, voc, "a vocabulary", &f->n_vocab)))
            return false;
        f->dim = (int)dim;
        f->missing_code = (int)mi;
        s->n_cat++;
    }
    for (const kn_json *v = kn_json_first(c->d, nums); v; v = kn_json_next(c->d, v)) {
        feature *f = &s->f[s->n_f++];
        f->type = COL_NUMERIC;
        f->missing_code = -1;
        if (kn_json_type_of(v) != KN_JSON_OBJECT)
            return cli_error("%s: kiln_model metadata: bad 'numeric'", c->path), false;
        const kn_json *nm = member(c, v, "name", KN_JSON_STRING), *mean = member(c, v, "mean", KN_JSON_NUMBER);
        const kn_json *sd = member(c, v, "std", KN_JSON_NUMBER), *ind = member(c, v, "missing_indicator", KN_JSON_BOOL);
        if (!nm || !mean || !sd || !ind || !(f->name = cli_strdup(kn_json_str(nm, NULL)))) return false;
        f->mean = kn_json_number(mean);
        f->std = kn_json_number(sd);
        f->indicator = kn_json_bool(ind);
        if (!(f->std > 0) || !isfinite(f->std) || !isfinite(f->mean))
            return cli_error("%s: kiln_model metadata: bad statistics for '%s'", c->path, f->name), false;
        s->n_num += 1 + f->indicator;
    }
    if (s->n_f == 0) return cli_error("%s: kiln_model metadata: no input columns", c->path), false;
    return schema_distinct(c->path, s);
}

/* Non-finite values in the weights would make every probability NaN. */
static bool weights_finite(kn_module *m, const char *path, const char *what) {
    int n = 0;
    const kn_named_tensor *sd = kn_module_state_dict(m, &n);
    for (int k = 0; k < n; k++) {
        if (!kn_dtype_is_float(kn_dtype_of(sd[k].tensor))) continue;
        int64_t numel = kn_numel(sd[k].tensor), bad = 0;
        double *v = malloc(((size_t)numel + 1) * sizeof *v);
        if (!v || kn_to_host(sd[k].tensor, v, KN_F64) != KN_OK) {
            free(v);
            return cli_error("%s: reading tensor '%s': %s", path, sd[k].name, v ? kn_error() : "out of memory"), false;
        }
        for (int64_t i = 0; i < numel; i++) bad += !isfinite(v[i]);
        free(v);
        if (bad)
            return cli_error("%s: tensor '%s' holds %lld NaN or infinite values; %s", path, sd[k].name, (long long)bad,
                             what), false;
    }
    return true;
}

/* Every element takes at least one byte of the file: a schema that asks for
 * more is refused before a network of that size is allocated. */
static bool elements_fit(const char *path, const schema *s, const arch *a) {
    struct stat st;
    double want = schema_elements(s, a);
    if (stat(path, &st) == 0 && want > (double)st.st_size)
        return cli_error("%s: kiln_model metadata describes a network of %.0f values, more than the file's %lld bytes "
                         "hold; the file is damaged", path, want, (long long)st.st_size), false;
    return true;
}

kn_module *model_load(const char *path, kn_device dev, schema *s, arch *a) {
    *s = (schema){0};
    *a = (arch){0};
    kn_safetensors *f = kn_safetensors_open(path);
    if (!f) {
        cli_error("%s", kn_error());
        return NULL;
    }
    const char *meta = kn_safetensors_meta(f, "kiln_model");
    if (!meta) {
        if (kn_safetensors_meta(f, "kiln_image_model"))
            cli_error("%s: an image model of kiln train-images, not a tabular one: it works with kiln predict, "
                      "predict-images and info", path);
        else
            cli_error("%s: not a kiln model (a safetensors file without kiln's 'kiln_model' metadata)", path);
        kn_safetensors_close(f);
        return NULL;
    }
    jctx c = {path, kn_json_parse(meta, strlen(meta), "kiln_model metadata")};
    kn_module *m = NULL;
    if (!c.d) cli_error("%s: %s", path, kn_error());
    else if (parse_schema(&c, s, a) && elements_fit(path, s, a) && (m = model_build(s, a))) {
        kn_error_clear();
        /* kn_module_load checks every name and shape before writing. */
        if (kn_module_load(m, f) != KN_OK || kn_error_code() != KN_OK) {
            cli_error("%s", kn_error());
            kn_module_free(m);
            m = NULL;
        } else if (!weights_finite(m, path, "the model is damaged (or training diverged)")) {
            kn_module_free(m);
            m = NULL;
        } else if (kn_module_to(m, dev) != KN_OK) {
            cli_error("moving the model to %s: %s", kn_device_str(dev), kn_error());
            kn_module_free(m);
            m = NULL;
        }
    }
    kn_json_free(c.d);
    kn_safetensors_close(f);
    if (!m) schema_free(s);
    else kn_module_train(m, false);
    return m;
}
