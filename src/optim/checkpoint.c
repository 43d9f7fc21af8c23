/* kiln — checkpoints (kiln/checkpoint.h): model, optimizer state, generator
 * and extras in one safetensors file, written atomically, restored all or
 * nothing. Values are stored in their own dtype and read back unchanged, and
 * the optimizer's scalars are written with 17 significant digits (exact for a
 * double), so a resumed run repeats the original one bit for bit. */
#include "io/safetensors_internal.h"
#include "optim/optim_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define META_KEY "kiln_checkpoint"
#define FORMAT_VERSION 1

static const char *kind_name(opt_kind k) { return k == OPT_SGD ? "sgd" : k == OPT_ADAM ? "adam" : "adamw"; }

/* The optimizer's state tensors of parameter i: (a) exp_avg or
 * momentum_buffer, (b) exp_avg_sq. */
static const char *state_name(const kn_optim *o, int which) {
    if (o->kind == OPT_SGD) return which == 0 ? "momentum_buffer" : NULL;
    return which == 0 ? "exp_avg" : "exp_avg_sq";
}

/* A list of named tensors whose names the list owns. */
typedef struct {
    kn_named_tensor *t;
    int n, cap;
} name_list;

static bool list_add(name_list *l, const char *prefix, const char *name, int index, kn_tensor *t) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        kn_named_tensor *g = realloc(l->t, (size_t)cap * sizeof *g);
        if (!g) return false;
        l->t = g;
        l->cap = cap;
    }
    size_t len = strlen(prefix) + strlen(name) + 24;
    char *s = malloc(len);
    if (!s) return false;
    if (index >= 0) snprintf(s, len, "%s%d.%s", prefix, index, name);
    else snprintf(s, len, "%s%s", prefix, name);
    l->t[l->n++] = (kn_named_tensor){s, t};
    return true;
}

static void list_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free((char *)l->t[i].name);
    free(l->t);
    *l = (name_list){0};
}

/* Everything the checkpoint c holds, with the file's names. Optimizer state
 * not made yet (before the first step) is left out. */
static bool collect(const kn_checkpoint *c, name_list *l) {
    if (c->model) {
        int n = 0;
        const kn_named_tensor *sd = kn_module_state_dict(c->model, &n);
        if (!sd && n > 0) return false;
        for (int i = 0; i < n; i++)
            if (!list_add(l, "model.", sd[i].name, -1, sd[i].tensor)) return false;
    }
    if (c->optim)
        for (int i = 0; i < c->optim->n; i++) {
            kn_tensor *st[2] = {c->optim->state_a[i], c->optim->state_b[i]};
            for (int w = 0; w < 2; w++)
                if (st[w] && state_name(c->optim, w) && !list_add(l, "optim.state.", state_name(c->optim, w), i, st[w]))
                    return false;
        }
    for (int i = 0; i < c->n_extra; i++) {
        if (!c->extra || !c->extra[i].name || !c->extra[i].tensor) return false;
        if (!list_add(l, "extra.", c->extra[i].name, -1, c->extra[i].tensor)) return false;
    }
    return true;
}

kn_status kn_checkpoint_save(const char *path, const kn_checkpoint *c) {
    if (!path || !c) return kn__err(KN_ERR_NULL, "kn_checkpoint_save: %s is NULL", path ? "checkpoint" : "path");
    if (c->n_meta < 0 || (c->n_meta && !c->meta) || c->n_extra < 0 || (c->n_extra && !c->extra))
        return kn__err(KN_ERR_INVALID, "%s: kn_checkpoint_save: invalid metadata or extra list", path);
    for (int i = 0; i < c->n_meta; i++)
        if (c->meta[i].key && !strcmp(c->meta[i].key, META_KEY))
            return kn__err(KN_ERR_INVALID, "%s: kn_checkpoint_save: the metadata key '%s' is kiln's own", path, META_KEY);
    name_list l = {0};
    if (!collect(c, &l)) {
        list_free(&l);
        return kn_error_code() ? kn_error_code() : kn__err(KN_ERR_OOM, "%s: out of memory", path);
    }
    char js[512];
    int n = snprintf(js, sizeof js, "{\"format_version\":%d", FORMAT_VERSION);
    if (c->optim)
        n += snprintf(js + n, sizeof js - (size_t)n, ",\"optim\":{\"kind\":\"%s\",\"params\":%d,\"lr\":%.17g,\"steps\":%" PRId64 "}",
                      kind_name(c->optim->kind), c->optim->n, c->optim->lr, c->optim->steps);
    if (c->generator) /* strings: a uint64 does not fit a JSON number exactly */
        n += snprintf(js + n, sizeof js - (size_t)n, ",\"generator\":{\"seed\":\"%" PRIu64 "\",\"offset\":\"%" PRIu64 "\"}",
                      c->generator->seed, c->generator->offset);
    snprintf(js + n, sizeof js - (size_t)n, "}");
    kn_meta *meta = malloc(((size_t)c->n_meta + 1) * sizeof *meta);
    if (!meta) {
        list_free(&l);
        return kn__err(KN_ERR_OOM, "%s: out of memory", path);
    }
    meta[0] = (kn_meta){META_KEY, js};
    for (int i = 0; i < c->n_meta; i++) meta[i + 1] = c->meta[i];
    kn_status s = kn_safetensors_save(path, l.n, l.t, c->n_meta + 1, meta);
    free(meta);
    list_free(&l);
    return s;
}

/* ---- loading --------------------------------------------------------------------- */

static bool parse_u64(const char *s, uint64_t *out) {
    if (!s || *s < '0' || *s > '9') return false;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    *out = v;
    return *end == 0;
}

typedef struct {
    const char *path;
    kn_json_doc *doc;
    const kn_json *root;
} header;

static const kn_json *member(const header *h, const kn_json *obj, const char *key, kn_json_type t) {
    const kn_json *v = obj ? kn_json_get(h->doc, obj, key) : NULL;
    if (!v || kn_json_type_of(v) != t) {
        kn__err(KN_ERR_FORMAT, "%s: checkpoint metadata: '%s' is missing or not a%s %s", h->path, key,
                t == KN_JSON_OBJECT || t == KN_JSON_ARRAY ? "n" : "", kn_json_type_name(t));
        return NULL;
    }
    return v;
}

static bool same_shape(const kn_tensor *a, const kn_tensor *b) {
    return kn_ndim(a) == kn_ndim(b) && !memcmp(kn_shape(a), kn_shape(b), (size_t)kn_ndim(a) * sizeof(int64_t));
}

/* The file's tensor for name, checked against dst (on dst's device, in its dtype). */
static kn_tensor *fetch(const kn_safetensors *f, const char *path, const char *name, const kn_tensor *dst) {
    kn_tensor *t = kn_safetensors_get(f, name, kn_device_of(dst));
    if (!t) {
        kn__err(KN_ERR_FORMAT, "%s: the checkpoint has no tensor '%s': it was made for another model or run", path, name);
        return NULL;
    }
    if (!same_shape(t, dst)) {
        char a[160] = "", b[160] = "";
        for (int d = 0, k = 0; d < kn_ndim(t) && k < 140; d++) k += snprintf(a + k, sizeof a - (size_t)k, "%s%lld", d ? "," : "", (long long)kn_shape(t)[d]);
        for (int d = 0, k = 0; d < kn_ndim(dst) && k < 140; d++) k += snprintf(b + k, sizeof b - (size_t)k, "%s%lld", d ? "," : "", (long long)kn_shape(dst)[d]);
        kn__err(KN_ERR_SHAPE, "%s: checkpoint tensor '%s' has shape [%s], expected [%s]", path, name, a, b);
        return NULL;
    }
    if (kn_dtype_of(t) != kn_dtype_of(dst)) {
        if (kn_dtype_is_float(kn_dtype_of(t)) != kn_dtype_is_float(kn_dtype_of(dst))) {
            kn__err(KN_ERR_DTYPE, "%s: checkpoint tensor '%s' is %s, expected %s", path, name,
                    kn_dtype_name(kn_dtype_of(t)), kn_dtype_name(kn_dtype_of(dst)));
            return NULL;
        }
        t = kn_to_dtype(t, kn_device_of(dst), kn_dtype_of(dst));
    }
    return t;
}

static bool has_prefix(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static int cmp_name(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

kn_status kn_checkpoint_restore(const kn_safetensors *f, const kn_checkpoint *c) {
    if (!f || !c) return kn__err(KN_ERR_NULL, "kn_checkpoint_restore: %s is NULL", f ? "checkpoint" : "file");
    const char *path = kn__safetensors_path(f);
    if (c->n_extra < 0 || (c->n_extra && !c->extra))
        return kn__err(KN_ERR_INVALID, "%s: kn_checkpoint_restore: invalid extra list", path);
    const char *js = kn_safetensors_meta(f, META_KEY);
    if (!js) return kn__err(KN_ERR_FORMAT, "%s: not a kiln checkpoint (no '%s' metadata)", path, META_KEY);
    header h = {path, kn_json_parse(js, strlen(js), path), NULL};
    name_list want = {0};
    kn_tensor **got = NULL;
    const char **sorted = NULL;
    bool ok = false;
    int64_t steps = 0;
    double lr = 0;
    uint64_t seed = 0, offset = 0;
    kn_scope sc = kn_scope_begin();
    kn_no_grad_begin();
    if (!h.doc) goto done;
    h.root = kn_json_root(h.doc);
    const kn_json *ver = member(&h, h.root, "format_version", KN_JSON_NUMBER);
    if (!ver) goto done;
    if (kn_json_number(ver) != FORMAT_VERSION) {
        kn__err(KN_ERR_FORMAT, "%s: checkpoint format version %g; this kiln reads version %d", path,
                kn_json_number(ver), FORMAT_VERSION);
        goto done;
    }
    if (c->optim) {
        const kn_json *o = member(&h, h.root, "optim", KN_JSON_OBJECT), *k, *np, *l, *st;
        if (!o || !(k = member(&h, o, "kind", KN_JSON_STRING)) || !(np = member(&h, o, "params", KN_JSON_NUMBER)) ||
            !(l = member(&h, o, "lr", KN_JSON_NUMBER)) || !(st = member(&h, o, "steps", KN_JSON_NUMBER)))
            goto done;
        int64_t n_params = -1;
        if (strcmp(kn_json_str(k, NULL), kind_name(c->optim->kind))) {
            kn__err(KN_ERR_INVALID, "%s: the checkpoint's optimizer is %s, this one is %s", path, kn_json_str(k, NULL),
                    kind_name(c->optim->kind));
            goto done;
        }
        if (!kn_json_int(np, &n_params) || n_params != c->optim->n) {
            kn__err(KN_ERR_INVALID, "%s: the checkpoint's optimizer has %g parameters, this one %d", path,
                    kn_json_number(np), c->optim->n);
            goto done;
        }
        lr = kn_json_number(l);
        if (!kn_json_int(st, &steps) || steps < 0 || !(lr >= 0)) {
            kn__err(KN_ERR_FORMAT, "%s: checkpoint metadata: invalid optimizer lr or steps", path);
            goto done;
        }
    }
    if (c->generator) {
        const kn_json *g = member(&h, h.root, "generator", KN_JSON_OBJECT), *s, *o;
        if (!g || !(s = member(&h, g, "seed", KN_JSON_STRING)) || !(o = member(&h, g, "offset", KN_JSON_STRING)))
            goto done;
        if (!parse_u64(kn_json_str(s, NULL), &seed) || !parse_u64(kn_json_str(o, NULL), &offset)) {
            kn__err(KN_ERR_FORMAT, "%s: checkpoint metadata: invalid generator seed or offset", path);
            goto done;
        }
    }
    /* What the caller's objects expect. Optimizer state is optional per
     * parameter (it is made at the first step), so it is gathered apart. */
    kn_checkpoint shape_only = *c;
    shape_only.optim = NULL;
    if (!collect(&shape_only, &want)) {
        if (!kn_error_code()) kn__err(KN_ERR_OOM, "%s: out of memory", path);
        goto done;
    }
    int n_opt = c->optim ? 2 * c->optim->n : 0;
    got = calloc((size_t)(want.n + n_opt) + 1, sizeof *got);
    if (!got) {
        kn__err(KN_ERR_OOM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < want.n; i++)
        if (!(got[i] = fetch(f, path, want.t[i].name, want.t[i].tensor))) goto done;
    for (int i = 0; c->optim && i < c->optim->n; i++)
        for (int w = 0; w < 2; w++) {
            const char *sn = state_name(c->optim, w);
            if (!sn) continue;
            char name[96];
            snprintf(name, sizeof name, "optim.state.%d.%s", i, sn);
            if (kn__safetensors_has(f, name) && !(got[want.n + 2 * i + w] = fetch(f, path, name, c->optim->params[i]))) goto done;
        }
    /* A tensor the caller's objects have no place for: another structure.
     * The names expected, sorted, so each of the file's is a binary search. */
    sorted = malloc(((size_t)want.n + 1) * sizeof *sorted);
    if (!sorted) {
        kn__err(KN_ERR_OOM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < want.n; i++) sorted[i] = want.t[i].name;
    qsort(sorted, (size_t)want.n, sizeof *sorted, cmp_name);
    for (int k = 0; k < kn_safetensors_count(f); k++) {
        const char *nm = kn_safetensors_name(f, k);
        bool asked = (c->model && has_prefix(nm, "model.")) || (c->n_extra && has_prefix(nm, "extra.")) ||
                     (c->optim && has_prefix(nm, "optim."));
        bool known = !asked || bsearch(&nm, sorted, (size_t)want.n, sizeof *sorted, cmp_name);
        if (!known && c->optim && has_prefix(nm, "optim.state.")) known = true; /* matched above or reported there */
        if (!known) {
            kn__err(KN_ERR_FORMAT, "%s: checkpoint tensor '%s' has no place here: it was made for another model or run",
                    path, nm);
            goto done;
        }
    }
    /* Everything read and checked: now change the caller's objects. */
    for (int i = 0; i < want.n; i++)
        if (kn_copy_(want.t[i].tensor, got[i]) != KN_OK) goto done;
    if (c->optim) {
        kn_optim *o = c->optim;
        for (int i = 0; i < o->n; i++) {
            kn_tensor **slot[2] = {&o->state_a[i], &o->state_b[i]};
            for (int w = 0; w < 2; w++) {
                kn_tensor *t = got[want.n + 2 * i + w];
                kn_release(*slot[w]);
                *slot[w] = t ? kn_retain(kn_contiguous(t)) : NULL;
            }
        }
        o->lr = lr;
        o->steps = steps;
        kn_release(o->step_t); /* remade from steps at the next step */
        o->step_t = NULL;
    }
    if (c->generator) *c->generator = (kn_generator){seed, offset};
    ok = true;
done:
    kn_no_grad_end();
    kn_scope_end(sc);
    free(got);
    free(sorted);
    list_free(&want);
    kn_json_free(h.doc);
    return ok ? KN_OK : kn_error_code();
}

kn_safetensors *kn_checkpoint_load(const char *path, const kn_checkpoint *c) {
    if (!path || !c) return kn__err(KN_ERR_NULL, "kn_checkpoint_load: %s is NULL", path ? "checkpoint" : "path"), NULL;
    kn_safetensors *f = kn_safetensors_open(path);
    if (f && kn_checkpoint_restore(f, c) != KN_OK) {
        kn_safetensors_close(f);
        return NULL;
    }
    return f;
}
