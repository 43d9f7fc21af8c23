/* kiln command line: IDX image sets, their class names, the small CNN and its
 * model file (the weights in safetensors, the schema as JSON metadata under
 * "kiln_image_model"). */
#include "images.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- finding and loading the files ----------------------------------------------------- */
static char *join(const char *dir, const char *name, const char *ext) {
    size_t n = strlen(dir) + strlen(name) + strlen(ext) + 2;
    char *p = cli_alloc(n);
    if (p) snprintf(p, n, "%s/%s%s", dir, name, ext);
    return p;
}

static bool is_file(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISREG(st.st_mode);
}

/* DIR/BASE or DIR/BASE.gz, whichever is there (malloc'ed); NULL with a message. */
static char *find_one(const char *dir, const char *base) {
    char *p = join(dir, base, "");
    if (p && is_file(p)) return p;
    free(p);
    p = join(dir, base, ".gz");
    if (p && is_file(p)) return p;
    free(p);
    cli_error("%s: no %s or %s.gz there", dir, base, base);
    return NULL;
}

bool img_find(const char *dir, const char *split, char **images, char **labels) {
    *images = NULL;
    if (labels) *labels = NULL;
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode))
        return cli_error("%s: not a directory (expected one holding train-images-idx3-ubyte[.gz] and the rest)",
                         dir), false;
    char bi[64], bl[64];
    snprintf(bi, sizeof bi, "%s-images-idx3-ubyte", split);
    snprintf(bl, sizeof bl, "%s-labels-idx1-ubyte", split);
    if (!(*images = find_one(dir, bi)) || (labels && !(*labels = find_one(dir, bl)))) {
        free(*images);
        *images = NULL;
        return false;
    }
    return true;
}

void img_set_free(img_set *s) {
    free(s->px);
    free(s->y);
    free(s->images_path);
    free(s->labels_path);
    *s = (img_set){0};
}

const uint8_t *img_pixels(const img_set *s, int64_t i) { return s->px + (size_t)i * (size_t)s->c * s->h * s->w; }

bool img_load(const char *ip, const char *lp, int64_t limit, img_set *s) {
    *s = (img_set){0};
    kn_scope sc = kn_scope_begin();
    bool ok = false;
    char shp[160];
    kn_tensor *x = kn_idx_load(ip, KN_CPU);
    if (!x) {
        cli_error("%s", kn_error());
        goto done;
    }
    int nd = kn_ndim(x);
    const int64_t *sh = kn_shape(x);
    if (kn_dtype_of(x) != KN_U8) {
        cli_error("%s: the images are %s; kiln reads uint8 pixels (IDX type 0x08)", ip,
                  kn_dtype_name(kn_dtype_of(x)));
        goto done;
    }
    if (nd != 3 && nd != 4) {
        cli_error("%s: shape %s; images are [N, H, W] or [N, C, H, W]", ip, kn_shape_str(x, shp, sizeof shp));
        goto done;
    }
    int64_t c = nd == 4 ? sh[1] : 1, h = sh[nd - 2], w = sh[nd - 1];
    if (sh[0] < 1 || c < 1 || c > IMG_MAX_CHANNELS || h < IMG_MIN_SIDE || w < IMG_MIN_SIDE || h > IMG_MAX_SIDE ||
        w > IMG_MAX_SIDE) {
        cli_error("%s: shape %s: kiln needs at least one image, 1 to %d channels and sides of %d to %d pixels", ip,
                  kn_shape_str(x, shp, sizeof shp), IMG_MAX_CHANNELS, IMG_MIN_SIDE, IMG_MAX_SIDE);
        goto done;
    }
    int64_t n = limit > 0 && limit < sh[0] ? limit : sh[0];
    s->n = n, s->c = (int)c, s->h = (int)h, s->w = (int)w;
    if (!(s->px = cli_alloc((size_t)n * (size_t)(c * h * w))) ||
        kn_to_host(kn_narrow(x, 0, 0, n), s->px, KN_U8) != KN_OK) {
        if (s->px) cli_error("%s: %s", ip, kn_error());
        goto done;
    }
    if (lp) {
        kn_tensor *y = kn_idx_load(lp, KN_CPU);
        if (!y) {
            cli_error("%s", kn_error());
            goto done;
        }
        kn_dtype dt = kn_dtype_of(y);
        if (kn_ndim(y) != 1 || (dt != KN_U8 && dt != KN_I32)) {
            cli_error("%s: labels of shape %s and type %s; labels are one integer per image", lp,
                      kn_shape_str(y, shp, sizeof shp), kn_dtype_name(dt));
            goto done;
        }
        if (kn_shape(y)[0] != sh[0]) {
            cli_error("%s holds %lld labels, %s %lld images: the counts must match", lp, (long long)kn_shape(y)[0],
                      ip, (long long)sh[0]);
            goto done;
        }
        if (!(s->y = cli_alloc((size_t)n * sizeof *s->y)) || kn_to_host(kn_narrow(y, 0, 0, n), s->y, KN_I64) != KN_OK) {
            if (s->y) cli_error("%s: %s", lp, kn_error());
            goto done;
        }
        for (int64_t i = 0; i < n; i++)
            if (s->y[i] < 0 || s->y[i] >= IMG_MAX_CLASSES) {
                cli_error("%s: label %lld of image %lld is outside 0..%d", lp, (long long)s->y[i], (long long)i,
                          IMG_MAX_CLASSES - 1);
                goto done;
            }
        if (!(s->labels_path = cli_strdup(lp))) goto done;
    }
    ok = (s->images_path = cli_strdup(ip)) != NULL;
done:
    kn_scope_end(sc);
    kn_error_clear();
    if (!ok) img_set_free(s);
    return ok;
}

/* ---- class names ------------------------------------------------------------------------ */
static const char *const fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
/* The first labels of Fashion-MNIST's training file: with 28 x 28 single-channel
 * images, they recognise the set wherever it is installed. */
static const int fashion_first[16] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9};

static bool is_fashion(const char *dir, const img_set *t) {
    if (t->c != 1 || t->h != 28 || t->w != 28) return false;
    if (t->n >= 16) {
        int i = 0;
        while (i < 16 && t->y[i] == fashion_first[i]) i++;
        if (i == 16) return true;
    }
    /* With --limit below 16: the directory's name. */
    for (const char *p = dir; *p; p++)
        if (!strncasecmp(p, "fashion", 7)) return true;
    return false;
}

void img_schema_free(img_schema *s) {
    for (int i = 0; s->classes && i < s->k; i++) free(s->classes[i]);
    free(s->classes);
    s->classes = NULL;
    s->k = 0;
}

/* Splits text into names at sep (trailing blanks and '\r' cut); false with a message naming what. */
static bool split_names(const char *text, size_t len, char sep, const char *what, img_schema *s) {
    int n = 1;
    for (size_t i = 0; i < len; i++) n += text[i] == sep;
    if (len && text[len - 1] == sep) n--; /* a final newline */
    if (n < 2 || n > IMG_MAX_CLASSES)
        return cli_error("%s: %d class names; 2 to %d are needed", what, n, IMG_MAX_CLASSES), false;
    if (!(s->classes = cli_alloc((size_t)n * sizeof *s->classes))) return false;
    size_t a = 0;
    for (int k = 0; k < n; k++) {
        size_t b = a;
        while (b < len && text[b] != sep) b++;
        size_t e = b;
        while (e > a && (text[e - 1] == '\r' || text[e - 1] == ' ' || text[e - 1] == '\t')) e--;
        while (a < e && (text[a] == ' ' || text[a] == '\t')) a++;
        if (e == a) {
            s->k = k;
            img_schema_free(s);
            return cli_error("%s: class name %d is empty", what, k + 1), false;
        }
        if (!(s->classes[k] = cli_alloc(e - a + 1))) {
            s->k = k;
            img_schema_free(s);
            return false;
        }
        memcpy(s->classes[k], text + a, e - a);
        a = b + 1;
    }
    s->k = n;
    return true;
}

#define CLASSES_FILE_MAX (1 << 20)

bool img_classes(const char *list, const char *dir, const img_set *train, int max_label, img_schema *s,
                 const char **source) {
    s->classes = NULL;
    s->k = 0;
    bool ok = true;
    char *file = join(dir, "classes.txt", "");
    if (!file) return false;
    if (list) {
        ok = split_names(list, strlen(list), ',', "--classes", s);
        *source = "--classes";
    } else if (is_file(file)) {
        FILE *f = fopen(file, "rb");
        char *buf = f ? cli_alloc(CLASSES_FILE_MAX + 1) : NULL;
        size_t n = buf ? fread(buf, 1, CLASSES_FILE_MAX + 1, f) : 0;
        if (!f) ok = false, cli_error("%s: cannot be read", file);
        else if (!buf) ok = false;
        else if (n > CLASSES_FILE_MAX) ok = false, cli_error("%s: more than %d bytes", file, CLASSES_FILE_MAX);
        else if (memchr(buf, 0, n) || !kn_utf8_valid(buf, n)) ok = false, cli_error("%s: not UTF-8 text", file);
        else ok = split_names(buf, n, '\n', file, s);
        if (f) fclose(f);
        free(buf);
        *source = "classes.txt";
    } else if (max_label <= 9 && is_fashion(dir, train)) {
        ok = (s->classes = cli_alloc(10 * sizeof *s->classes)) != NULL;
        for (int i = 0; ok && i < 10; i++) ok = (s->classes[i] = cli_strdup(fashion_names[i])) != NULL, s->k = i + 1;
        *source = "Fashion-MNIST";
    } else {
        int k = max_label + 1 < 2 ? 2 : max_label + 1;
        ok = (s->classes = cli_alloc((size_t)k * sizeof *s->classes)) != NULL;
        for (int i = 0; ok && i < k; i++) {
            char b[16];
            snprintf(b, sizeof b, "%d", i);
            ok = (s->classes[i] = cli_strdup(b)) != NULL, s->k = i + 1;
        }
        *source = "the labels";
    }
    if (ok && max_label >= s->k) {
        cli_error("%s: %d class names, but the labels go up to %d", list ? "--classes" : file, s->k, max_label);
        ok = false;
    }
    free(file);
    if (!ok) img_schema_free(s);
    return ok;
}

/* ---- the model ---------------------------------------------------------------------------- */
kn_module *img_model_build(const img_schema *s) {
    kn_conv_opts pad1 = kn_conv_opts_default();
    pad1.padding[0] = pad1.padding[1] = 1;
    kn_pool_opts pool = kn_pool_opts_default(2, 2);
    int64_t flat = (int64_t)s->conv2 * (s->h / 4) * (s->w / 4);
    return kn_nn_sequential(10, (kn_module *[]){
        kn_nn_conv2d(s->c, s->conv1, 3, 3, &pad1, true), kn_nn_relu(), kn_nn_max_pool2d(&pool),
        kn_nn_conv2d(s->conv1, s->conv2, 3, 3, &pad1, true), kn_nn_relu(), kn_nn_max_pool2d(&pool),
        kn_nn_flatten(), kn_nn_linear(flat, s->hidden, true), kn_nn_relu(), kn_nn_linear(s->hidden, s->k, true)});
}

kn_tensor *img_normalize(const img_schema *s, const img_set *set, const int64_t *rows, int64_t n, kn_device dev) {
    size_t per = (size_t)set->c * set->h * set->w;
    uint8_t *buf = rows ? cli_alloc((size_t)n * per + 1) : NULL;
    if (rows && !buf) return NULL;
    for (int64_t i = 0; rows && i < n; i++) memcpy(buf + (size_t)i * per, img_pixels(set, rows[i]), per);
    kn_tensor *u8 = kn_from_data(rows ? buf : set->px, KN_U8, KN_SHAPE(n, set->c, set->h, set->w), dev);
    free(buf);
    kn_tensor *x = kn_image_normalize(u8, s->mean, s->std);
    if (!x) cli_error("normalising the images: %s", kn_error());
    return x;
}

int64_t img_chunk_rows(const img_schema *s) {
    int64_t per = (int64_t)s->conv1 * s->h * s->w * 4;
    int64_t r = ((int64_t)128 << 20) / (per > 0 ? per : 1);
    return r < 1 ? 1 : r > 4096 ? 4096 : r;
}

/* Probabilities of x's rows [0, n) appended at out. */
static bool proba_into(kn_module *m, kn_tensor *x, float *out) {
    kn_tensor *p = kn_softmax(kn_module_forward(m, x), 1);
    if (!p || kn_to_host(p, out, KN_F32) != KN_OK) return cli_error("evaluating the model: %s", kn_error()), false;
    return true;
}

float *img_proba(kn_module *m, const img_schema *s, kn_tensor *x) {
    int64_t n = kn_shape(x)[0], chunk = img_chunk_rows(s);
    float *out = cli_alloc((size_t)n * (size_t)s->k * sizeof *out + 1);
    if (!out) return NULL;
    bool was = kn_module_training(m), ok = true;
    kn_module_train(m, false);
    kn_no_grad_begin();
    for (int64_t i = 0; ok && i < n; i += chunk) {
        kn_scope sc = kn_scope_begin();
        int64_t r = n - i < chunk ? n - i : chunk;
        ok = proba_into(m, kn_narrow(x, 0, i, r), out + (size_t)i * s->k);
        kn_scope_end(sc);
    }
    kn_no_grad_end();
    kn_module_train(m, was);
    if (!ok) free(out);
    return ok ? out : NULL;
}

float *img_proba_set(kn_module *m, const img_schema *s, const img_set *set, kn_device dev) {
    int64_t n = set->n, chunk = img_chunk_rows(s);
    float *out = cli_alloc((size_t)n * (size_t)s->k * sizeof *out + 1);
    int64_t *rows = cli_alloc((size_t)(chunk < n ? chunk : n) * sizeof *rows + 1);
    bool ok = out && rows;
    kn_module_train(m, false);
    kn_no_grad_begin();
    for (int64_t i = 0; ok && i < n; i += chunk) {
        kn_scope sc = kn_scope_begin();
        int64_t r = n - i < chunk ? n - i : chunk;
        for (int64_t j = 0; j < r; j++) rows[j] = i + j;
        kn_tensor *x = img_normalize(s, set, rows, r, dev);
        ok = x && proba_into(m, x, out + (size_t)i * s->k);
        kn_scope_end(sc);
    }
    kn_no_grad_end();
    free(rows);
    if (!ok) free(out);
    return ok ? out : NULL;
}

/* ---- the model file -------------------------------------------------------------------------- */
char *img_schema_json(const img_schema *s, const char *training) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    fprintf(f, "{\"kind\":\"image_classifier\",\"input\":{\"layout\":\"NCHW\",\"dtype\":\"uint8\",\"channels\":%d,"
               "\"height\":%d,\"width\":%d},\"normalization\":{\"scale\":\"1/255\",\"mean\":[", s->c, s->h, s->w);
    for (int i = 0; i < s->c; i++) fprintf(f, "%s%.17g", i ? "," : "", s->mean[i]);
    fprintf(f, "],\"std\":[");
    for (int i = 0; i < s->c; i++) fprintf(f, "%s%.17g", i ? "," : "", s->std[i]);
    fprintf(f, "]},\"classes\":[");
    for (int i = 0; i < s->k; i++) {
        if (i) fputc(',', f);
        json_str(f, s->classes[i]);
    }
    fprintf(f, "],\"architecture\":{\"name\":\"cnn2\",\"conv\":[%d,%d],\"kernel\":3,\"padding\":1,\"pool\":2,"
               "\"hidden\":%d}", s->conv1, s->conv2, s->hidden);
    if (training) fprintf(f, ",\"training\":%s", training);
    fputc('}', f);
    bool failed = ferror(f) != 0;
    if (fclose(f) != 0 || failed) {
        free(text);
        return NULL;
    }
    return text;
}

bool img_model_save(kn_module *m, const img_schema *s, const char *training, const char *path) {
    char *js = img_schema_json(s, training);
    if (!js) return cli_error("%s: out of memory writing the model", path), false;
    kn_meta meta[] = {{"format", "pt"}, {"kiln_version", KN_VERSION_STRING}, {"kiln_image_model", js}};
    kn_status st = kn_module_save(m, path, 3, meta);
    free(js);
    if (st != KN_OK) return cli_error("saving the model: %s", kn_error()), false;
    return true;
}

/* An integer member in [lo, hi]; false with a message naming the file and key. */
static bool int_member(const char *path, const kn_json_doc *d, const kn_json *o, const char *key, int64_t lo,
                       int64_t hi, int *out) {
    const kn_json *v = kn_json_get(d, o, key);
    int64_t x;
    if (!v || !kn_json_int(v, &x) || x < lo || x > hi)
        return cli_error("%s: the image model's \"%s\" is missing or not a whole number in [%lld, %lld]", path, key,
                         (long long)lo, (long long)hi), false;
    *out = (int)x;
    return true;
}

/* An array of n numbers (finite; positive when positive). */
static bool num_array(const char *path, const kn_json_doc *d, const kn_json *o, const char *key, int n, bool positive,
                      double *out) {
    const kn_json *a = kn_json_get(d, o, key);
    if (!a || kn_json_type_of(a) != KN_JSON_ARRAY || kn_json_count(a) != n)
        return cli_error("%s: the image model's \"%s\" is not an array of %d numbers", path, key, n), false;
    int i = 0;
    for (const kn_json *v = kn_json_first(d, a); v; v = kn_json_next(d, v), i++) {
        double x = kn_json_number(v);
        if (kn_json_type_of(v) != KN_JSON_NUMBER || !isfinite(x) || (positive && !(x > 0)))
            return cli_error("%s: the image model's \"%s\"[%d] is not a %snumber", path, key, i,
                             positive ? "positive " : ""), false;
        out[i] = x;
    }
    return true;
}

bool img_model_is(const char *path) {
    kn_safetensors *f = kn_safetensors_open(path);
    bool is = f && kn_safetensors_meta(f, "kiln_image_model") != NULL;
    kn_safetensors_close(f);
    kn_error_clear();
    return is;
}

kn_module *img_model_load(const char *path, kn_device dev, img_schema *s) {
    *s = (img_schema){0};
    kn_safetensors *f = kn_safetensors_open(path);
    if (!f) return cli_error("%s", kn_error()), NULL;
    kn_module *m = NULL;
    kn_json_doc *d = NULL;
    const char *js = kn_safetensors_meta(f, "kiln_image_model");
    if (!js) {
        cli_error("%s: not an image model of kiln train-images (no \"kiln_image_model\" metadata)%s", path,
                  kn_safetensors_meta(f, "kiln_model") ? "; it is a tabular model: use kiln predict" : "");
        goto fail;
    }
    if (!(d = kn_json_parse(js, strlen(js), path))) {
        cli_error("%s: the image model's schema: %s", path, kn_error());
        goto fail;
    }
    const kn_json *r = kn_json_root(d), *in = kn_json_get(d, r, "input"), *no = kn_json_get(d, r, "normalization"),
                  *ar = kn_json_get(d, r, "architecture"), *cl = kn_json_get(d, r, "classes");
    if (!in || !no || !ar || !cl || kn_json_type_of(cl) != KN_JSON_ARRAY) {
        cli_error("%s: the image model's schema lacks input, normalization, architecture or classes", path);
        goto fail;
    }
    if (!int_member(path, d, in, "channels", 1, IMG_MAX_CHANNELS, &s->c) ||
        !int_member(path, d, in, "height", IMG_MIN_SIDE, IMG_MAX_SIDE, &s->h) ||
        !int_member(path, d, in, "width", IMG_MIN_SIDE, IMG_MAX_SIDE, &s->w) ||
        !int_member(path, d, ar, "hidden", 1, 1 << 16, &s->hidden) ||
        !num_array(path, d, no, "mean", s->c, false, s->mean) || !num_array(path, d, no, "std", s->c, true, s->std))
        goto fail;
    double conv[2];
    if (!num_array(path, d, ar, "conv", 2, true, conv) || conv[0] > 4096 || conv[1] > 4096 ||
        conv[0] != floor(conv[0]) || conv[1] != floor(conv[1])) {
        cli_error("%s: the image model's \"conv\" is not two channel counts of 1 to 4096", path);
        goto fail;
    }
    s->conv1 = (int)conv[0], s->conv2 = (int)conv[1];
    int64_t k = kn_json_count(cl);
    if (k < 2 || k > IMG_MAX_CLASSES) {
        cli_error("%s: the image model has %lld classes (2 to %d)", path, (long long)k, IMG_MAX_CLASSES);
        goto fail;
    }
    if (!(s->classes = cli_alloc((size_t)k * sizeof *s->classes))) goto fail;
    for (const kn_json *v = kn_json_first(d, cl); v; v = kn_json_next(d, v)) {
        const char *name = kn_json_str(v, NULL);
        if (!name) {
            cli_error("%s: the image model's class %d is not a string", path, s->k + 1);
            goto fail;
        }
        if (!(s->classes[s->k] = cli_strdup(name))) goto fail;
        s->k++;
    }
    if (!(m = img_model_build(s)) || kn_module_load(m, f) != KN_OK || kn_module_to(m, dev) != KN_OK) {
        cli_error("%s", kn_error());
        goto fail;
    }
    kn_json_free(d);
    kn_safetensors_close(f);
    return m;
fail:
    kn_module_free(m);
    kn_json_free(d);
    kn_safetensors_close(f);
    img_schema_free(s);
    return NULL;
}
