/* kiln command line: the tabular model and its file.
 *
 * The model is the tutorial's: an embedding per categorical column, dropout
 * on the concatenated embeddings, the numeric inputs appended, then blocks of
 * Linear -> ReLU -> BatchNorm1d -> Dropout and a final Linear. Names follow
 * PyTorch's state_dict (all_embeddings.0.weight, layers.0.weight, ...), and the
 * file's metadata holds the schema, so `kiln predict` needs nothing else. */
#include "cli.h"
#include "io/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_FORMAT "kiln-tabular"
#define MODEL_FORMAT_VERSION 1

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
    kn_nn_sequential_append(seq, kn_nn_linear(in, s->n_classes, true));
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

/* ---- saving -------------------------------------------------------------------------- */
static void j_num(kn__json_buf *b, double v) {
    char s[40];
    snprintf(s, sizeof s, "%.17g", isfinite(v) ? v : 0.0);
    kn__json_cstr(b, s);
}
static void j_key(kn__json_buf *b, const char *k) {
    kn__json_string(b, k, strlen(k));
    kn__json_raw(b, ":", 1);
}
static void j_str(kn__json_buf *b, const char *s) {
    if (!kn__json_string(b, s, strlen(s))) b->oom = true; /* cannot happen: cells are checked UTF-8 */
}

static char *schema_json(const schema *s, const arch *a, const char *recipe) {
    kn__json_buf b = {0};
    kn__json_cstr(&b, "{");
    j_key(&b, "format");
    j_str(&b, MODEL_FORMAT);
    kn__json_cstr(&b, ",");
    j_key(&b, "format_version");
    kn__json_int(&b, MODEL_FORMAT_VERSION);
    kn__json_cstr(&b, ",");
    j_key(&b, "recipe");
    j_str(&b, recipe);
    kn__json_cstr(&b, ",");
    j_key(&b, "target");
    j_str(&b, s->target);
    kn__json_cstr(&b, ",");
    j_key(&b, "classes");
    kn__json_cstr(&b, "[");
    for (int c = 0; c < s->n_classes; c++) {
        if (c) kn__json_cstr(&b, ",");
        j_str(&b, s->classes[c]);
    }
    kn__json_cstr(&b, "],");
    char d[2] = {s->delimiter, 0};
    j_key(&b, "delimiter");
    j_str(&b, d);
    kn__json_cstr(&b, ",");
    j_key(&b, "architecture");
    kn__json_cstr(&b, "{\"block\":\"Linear-ReLU-BatchNorm1d-Dropout\",\"layers\":[");
    for (int i = 0; i < a->n_layers; i++) {
        if (i) kn__json_cstr(&b, ",");
        kn__json_int(&b, a->layers[i]);
    }
    kn__json_cstr(&b, "],\"dropout\":");
    j_num(&b, a->dropout);
    kn__json_cstr(&b, ",\"embedding_dropout\":");
    j_num(&b, a->emb_dropout);
    kn__json_cstr(&b, "},\"categorical\":[");
    int ni = 0;
    for (int i = 0; i < s->n_f; i++) {
        const feature *f = &s->f[i];
        if (f->type != COL_CATEGORICAL) continue;
        if (i) kn__json_cstr(&b, ",");
        kn__json_cstr(&b, "{");
        j_key(&b, "name");
        j_str(&b, f->name);
        kn__json_cstr(&b, ",\"embedding_dim\":");
        kn__json_int(&b, f->dim);
        kn__json_cstr(&b, ",\"missing_index\":");
        kn__json_int(&b, f->missing_code);
        kn__json_cstr(&b, ",\"unknown_index\":");
        kn__json_int(&b, f->n_vocab);
        kn__json_cstr(&b, ",\"vocabulary\":[");
        for (int c = 0; c < f->n_vocab; c++) {
            if (c) kn__json_cstr(&b, ",");
            j_str(&b, f->vocab[c]);
        }
        kn__json_cstr(&b, "]}");
    }
    kn__json_cstr(&b, "],\"numeric\":[");
    bool first = true;
    for (int i = 0; i < s->n_f; i++) {
        const feature *f = &s->f[i];
        if (f->type != COL_NUMERIC) continue;
        if (!first) kn__json_cstr(&b, ",");
        first = false;
        kn__json_cstr(&b, "{");
        j_key(&b, "name");
        j_str(&b, f->name);
        kn__json_cstr(&b, ",\"input_index\":");
        kn__json_int(&b, ni);
        kn__json_cstr(&b, ",\"mean\":");
        j_num(&b, f->mean);
        kn__json_cstr(&b, ",\"std\":");
        j_num(&b, f->std);
        kn__json_cstr(&b, f->indicator ? ",\"missing_indicator\":true}" : ",\"missing_indicator\":false}");
        ni += 1 + f->indicator;
    }
    kn__json_cstr(&b, "]}");
    if (b.oom) {
        kn__json_buf_free(&b);
        return NULL;
    }
    return b.data;
}

bool model_save(kn_module *m, const schema *s, const arch *a, const char *recipe, const char *path) {
    char *js = schema_json(s, a, recipe);
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
    kn__json_doc *d;
} jctx;

static const kn__json *member(jctx *c, const kn__json *obj, const char *key, kn__json_type t) {
    const kn__json *v = kn__json_get(c->d, obj, key);
    if (!v || v->type != t) {
        cli_error("%s: kiln_model metadata: '%s' is %s (expected %s); the file is damaged or not from kiln",
                  c->path, key, v ? kn__json_type_name(v->type) : "missing", kn__json_type_name(t));
        return NULL;
    }
    return v;
}

static bool int_member(jctx *c, const kn__json *obj, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const kn__json *v = member(c, obj, key, KN__JSON_NUMBER);
    if (!v) return false;
    if (!v->is_int || v->integer < lo || v->integer > hi) {
        cli_error("%s: kiln_model metadata: '%s' is out of range", c->path, key);
        return false;
    }
    *out = v->integer;
    return true;
}

static char **str_array(jctx *c, const kn__json *arr, const char *what, int *n) {
    char **out = cli_alloc(((size_t)arr->count + 1) * sizeof *out);
    if (!out) return NULL;
    int k = 0;
    for (const kn__json *v = kn__json_first(c->d, arr); v; v = kn__json_next(c->d, v)) {
        if (v->type != KN__JSON_STRING || !(out[k] = cli_strdup(v->str))) {
            if (v->type != KN__JSON_STRING)
                cli_error("%s: kiln_model metadata: %s holds a %s (expected strings)", c->path, what,
                          kn__json_type_name(v->type));
            while (k > 0) free(out[--k]);
            free(out);
            return NULL;
        }
        k++;
    }
    *n = k;
    return out;
}

static bool parse_schema(jctx *c, schema *s, arch *a) {
    const kn__json *root = kn__json_root(c->d);
    if (root->type != KN__JSON_OBJECT) return cli_error("%s: kiln_model metadata is not an object", c->path), false;
    const kn__json *fmt = member(c, root, "format", KN__JSON_STRING);
    int64_t ver;
    if (!fmt) return false;
    if (strcmp(fmt->str, MODEL_FORMAT)) return cli_error("%s: not a kiln tabular model (format '%s')", c->path, fmt->str), false;
    if (!int_member(c, root, "format_version", 1, 1000000, &ver)) return false;
    if (ver > MODEL_FORMAT_VERSION)
        return cli_error("%s: model format version %lld is newer than this kiln (%s) reads", c->path, (long long)ver,
                         KN_VERSION_STRING), false;
    const kn__json *t = member(c, root, "target", KN__JSON_STRING), *cl = member(c, root, "classes", KN__JSON_ARRAY);
    const kn__json *ar = member(c, root, "architecture", KN__JSON_OBJECT);
    const kn__json *cats = member(c, root, "categorical", KN__JSON_ARRAY), *nums = member(c, root, "numeric", KN__JSON_ARRAY);
    const kn__json *del = member(c, root, "delimiter", KN__JSON_STRING);
    if (!t || !cl || !ar || !cats || !nums || !del) return false;
    if (!(s->target = cli_strdup(t->str)) || !(s->classes = str_array(c, cl, "classes", &s->n_classes))) return false;
    if (s->n_classes < 2) return cli_error("%s: kiln_model metadata: fewer than 2 classes", c->path), false;
    s->delimiter = del->len == 1 ? del->str[0] : ',';
    const kn__json *layers = member(c, ar, "layers", KN__JSON_ARRAY);
    const kn__json *dp = member(c, ar, "dropout", KN__JSON_NUMBER), *edp = member(c, ar, "embedding_dropout", KN__JSON_NUMBER);
    if (!layers || !dp || !edp) return false;
    a->n_layers = 0;
    for (const kn__json *v = kn__json_first(c->d, layers); v; v = kn__json_next(c->d, v)) {
        if (a->n_layers == CLI_MAX_LAYERS || v->type != KN__JSON_NUMBER || !v->is_int || v->integer < 1 || v->integer > 1 << 20)
            return cli_error("%s: kiln_model metadata: bad 'layers'", c->path), false;
        a->layers[a->n_layers++] = (int)v->integer;
    }
    a->dropout = dp->number;
    a->emb_dropout = edp->number;
    if (!(a->dropout >= 0 && a->dropout <= 1 && a->emb_dropout >= 0 && a->emb_dropout <= 1))
        return cli_error("%s: kiln_model metadata: bad dropout", c->path), false;
    s->f = cli_alloc(((size_t)cats->count + (size_t)nums->count + 1) * sizeof *s->f);
    if (!s->f) return false;
    for (const kn__json *v = kn__json_first(c->d, cats); v; v = kn__json_next(c->d, v)) {
        feature *f = &s->f[s->n_f++];
        f->type = COL_CATEGORICAL;
        f->missing_code = -1;
        if (v->type != KN__JSON_OBJECT) return cli_error("%s: kiln_model metadata: bad 'categorical'", c->path), false;
        const kn__json *nm = member(c, v, "name", KN__JSON_STRING), *voc = member(c, v, "vocabulary", KN__JSON_ARRAY);
        int64_t dim, mi, ui;
        if (!nm || !voc || !int_member(c, v, "embedding_dim", 1, 1 << 20, &dim) ||
            !int_member(c, v, "missing_index", -1, voc->count - 1, &mi) ||
            !int_member(c, v, "unknown_index", voc->count, voc->count, &ui))
            return false;
        if (!(f->name = cli_strdup(nm->str)) || !(f->vocab = str_array(c, voc, "a vocabulary", &f->n_vocab))) return false;
        f->dim = (int)dim;
        f->missing_code = (int)mi;
        s->n_cat++;
    }
    for (const kn__json *v = kn__json_first(c->d, nums); v; v = kn__json_next(c->d, v)) {
        feature *f = &s->f[s->n_f++];
        f->type = COL_NUMERIC;
        f->missing_code = -1;
        if (v->type != KN__JSON_OBJECT) return cli_error("%s: kiln_model metadata: bad 'numeric'", c->path), false;
        const kn__json *nm = member(c, v, "name", KN__JSON_STRING), *mean = member(c, v, "mean", KN__JSON_NUMBER);
        const kn__json *sd = member(c, v, "std", KN__JSON_NUMBER), *ind = member(c, v, "missing_indicator", KN__JSON_BOOL);
        if (!nm || !mean || !sd || !ind || !(f->name = cli_strdup(nm->str))) return false;
        f->mean = mean->number;
        f->std = sd->number;
        f->indicator = ind->boolean;
        if (!(f->std > 0) || !isfinite(f->std) || !isfinite(f->mean))
            return cli_error("%s: kiln_model metadata: bad statistics for '%s'", c->path, f->name), false;
        s->n_num += 1 + f->indicator;
    }
    if (s->n_f == 0) return cli_error("%s: kiln_model metadata: no input columns", c->path), false;
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
        cli_error("%s: not a kiln model (a safetensors file without kiln's 'kiln_model' metadata)", path);
        kn_safetensors_close(f);
        return NULL;
    }
    jctx c = {path, kn__json_parse(meta, strlen(meta), NULL, "kiln_model metadata")};
    kn_module *m = NULL;
    if (!c.d) cli_error("%s: %s", path, kn_error());
    else if (parse_schema(&c, s, a) && (m = model_build(s, a))) {
        kn_error_clear();
        /* kn_module_load checks every name and shape before writing. */
        if (kn_module_load(m, f) != KN_OK || kn_error_code() != KN_OK) {
            cli_error("%s", kn_error());
            kn_module_free(m);
            m = NULL;
        } else if (kn_module_to(m, dev) != KN_OK) {
            cli_error("moving the model to %s: %s", kn_device_str(dev), kn_error());
            kn_module_free(m);
            m = NULL;
        }
    }
    kn__json_free(c.d);
    kn_safetensors_close(f);
    if (!m) schema_free(s);
    else kn_module_train(m, false);
    return m;
}
