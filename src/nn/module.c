/* Modules: named parameters, buffers and children; train/eval; devices. */
#include "nn_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    kn_tensor *t;
    bool param;
} entry;

typedef struct {
    char *name;
    kn_module *m;
} child;

struct kn_module {
    char type[48];
    char repr[160];
    kn_forward_fn forward;
    void *state;
    void (*free_state)(void *);
    entry *entries;
    int n_entries;
    child *children;
    int n_children;
    bool training;
    /* Flattened views handed out by kn_module_parameters / state_dict. */
    kn_named_tensor *flat;
    char **flat_names;
    int n_flat;
};

kn_module *kn_module_new(const char *type, kn_forward_fn forward, size_t state_size,
                         void (*free_state)(void *)) {
    kn_module *m = calloc(1, sizeof *m);
    if (!m) {
        kn__err(KN_ERR_OOM, "module: out of memory");
        return NULL;
    }
    snprintf(m->type, sizeof m->type, "%s", type ? type : "Module");
    m->forward = forward;
    m->training = true;
    m->free_state = free_state;
    if (state_size && !(m->state = calloc(1, state_size))) {
        free(m);
        kn__err(KN_ERR_OOM, "module: out of memory");
        return NULL;
    }
    return m;
}

void *kn_module_state(kn_module *m) { return m ? m->state : NULL; }
kn_forward_fn kn__module_forward_fn(const kn_module *m) { return m ? m->forward : NULL; }
const char *kn_module_type(const kn_module *m) { return m ? m->type : NULL; }

void kn__module_set_repr(kn_module *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->repr, sizeof m->repr, fmt, ap);
    va_end(ap);
}

static bool name_taken(const kn_module *m, const char *name) {
    for (int i = 0; i < m->n_entries; i++)
        if (!strcmp(m->entries[i].name, name)) return true;
    for (int i = 0; i < m->n_children; i++)
        if (!strcmp(m->children[i].name, name)) return true;
    return false;
}

static bool valid_name(const char *op, const kn_module *m, const char *name) {
    if (!name || !*name || strchr(name, '.')) {
        kn__err(KN_ERR_INVALID, "%s: invalid name '%s' (non-empty, no dots)", op, name ? name : "(null)");
        return false;
    }
    if (name_taken(m, name)) {
        kn__err(KN_ERR_INVALID, "%s: '%s' already exists in %s", op, name, m->type);
        return false;
    }
    return true;
}

static kn_tensor *add_entry(kn_module *m, const char *name, kn_tensor *t, bool param) {
    const char *op = param ? "add_param" : "add_buffer";
    if (!m || !t) return kn__err_null(op), NULL;
    if (!valid_name(op, m, name)) return NULL;
    if (param && !kn_requires_grad_(t, true)) return NULL;
    entry *e = realloc(m->entries, (size_t)(m->n_entries + 1) * sizeof *e);
    char *nm = strdup(name);
    if (!e || !nm) {
        if (e) m->entries = e;
        free(nm);
        kn__err(KN_ERR_OOM, "%s: out of memory", op);
        return NULL;
    }
    m->entries = e;
    m->entries[m->n_entries++] = (entry){nm, kn_retain(t), param};
    return t;
}

kn_tensor *kn_module_add_param(kn_module *m, const char *name, kn_tensor *t) {
    return add_entry(m, name, t, true);
}
kn_tensor *kn_module_add_buffer(kn_module *m, const char *name, kn_tensor *t) {
    return add_entry(m, name, t, false);
}

kn_module *kn_module_add(kn_module *m, const char *name, kn_module *c) {
    if (!m || !c) {
        kn__err_null("module_add");
        kn_module_free(c);
        return NULL;
    }
    if (!valid_name("module_add", m, name)) {
        kn_module_free(c);
        return NULL;
    }
    child *ch = realloc(m->children, (size_t)(m->n_children + 1) * sizeof *ch);
    char *nm = strdup(name);
    if (!ch || !nm) {
        if (ch) m->children = ch;
        free(nm);
        kn_module_free(c);
        kn__err(KN_ERR_OOM, "module_add: out of memory");
        return NULL;
    }
    m->children = ch;
    m->children[m->n_children++] = (child){nm, c};
    c->training = m->training;
    return c;
}

kn_module *kn_module_child(const kn_module *m, const char *name) {
    if (!m || !name) return NULL;
    for (int i = 0; i < m->n_children; i++)
        if (!strcmp(m->children[i].name, name)) return m->children[i].m;
    return NULL;
}
kn_module *kn_module_child_at(const kn_module *m, int i) {
    return m && i >= 0 && i < m->n_children ? m->children[i].m : NULL;
}
int kn_module_num_children(const kn_module *m) { return m ? m->n_children : 0; }

kn_tensor *kn_module_get(const kn_module *m, const char *name) {
    if (!m || !name) return NULL;
    for (int i = 0; i < m->n_entries; i++)
        if (!strcmp(m->entries[i].name, name)) return m->entries[i].t;
    return NULL;
}

kn_tensor *kn_module_forward_n(kn_module *m, int n, kn_tensor *const *inputs) {
    if (!m) return kn__err_null("forward"), NULL;
    for (int i = 0; i < n; i++)
        if (!inputs[i]) return kn__err_null(m->type), NULL;
    if (!m->forward) {
        kn__err(KN_ERR_UNSUPPORTED, "%s: this module has no forward function", m->type);
        return NULL;
    }
    return m->forward(m, n, inputs);
}

kn_tensor *kn_module_forward(kn_module *m, kn_tensor *x) { return kn_module_forward_n(m, 1, &x); }

void kn_module_train(kn_module *m, bool training) {
    if (!m) return;
    m->training = training;
    for (int i = 0; i < m->n_children; i++) kn_module_train(m->children[i].m, training);
}
bool kn_module_training(const kn_module *m) { return m && m->training; }

/* ---- walking the tree ------------------------------------------------------------------ */
typedef void (*visit_fn)(const char *name, entry *e, void *ctx);

static void walk(kn_module *m, const char *prefix, visit_fn fn, void *ctx) {
    char name[512];
    for (int i = 0; i < m->n_entries; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, m->entries[i].name);
        fn(name, &m->entries[i], ctx);
    }
    for (int i = 0; i < m->n_children; i++) {
        snprintf(name, sizeof name, "%s%s.", prefix, m->children[i].name);
        walk(m->children[i].m, name, fn, ctx);
    }
}

typedef struct {
    kn_module *root;
    bool params_only;
    bool failed;
} flat_ctx;

static void collect(const char *name, entry *e, void *p) {
    flat_ctx *c = p;
    kn_module *m = c->root;
    if (c->params_only && !e->param) return;
    kn_named_tensor *f = realloc(m->flat, (size_t)(m->n_flat + 1) * sizeof *f);
    char **n = realloc(m->flat_names, (size_t)(m->n_flat + 1) * sizeof *n);
    if (f) m->flat = f;
    if (n) m->flat_names = n;
    char *s = strdup(name);
    if (!f || !n || !s) {
        free(s);
        c->failed = true;
        return;
    }
    m->flat_names[m->n_flat] = s;
    m->flat[m->n_flat++] = (kn_named_tensor){s, e->t};
}

static void clear_flat(kn_module *m) {
    for (int i = 0; i < m->n_flat; i++) free(m->flat_names[i]);
    free(m->flat);
    free(m->flat_names);
    m->flat = NULL;
    m->flat_names = NULL;
    m->n_flat = 0;
}

static const kn_named_tensor *flatten(kn_module *m, int *count, bool params_only) {
    if (count) *count = 0;
    if (!m) return kn__err_null("parameters"), NULL;
    clear_flat(m);
    flat_ctx c = {m, params_only, false};
    walk(m, "", collect, &c);
    if (c.failed) {
        clear_flat(m);
        kn__err(KN_ERR_OOM, "parameters: out of memory");
        return NULL;
    }
    if (count) *count = m->n_flat;
    return m->flat ? m->flat : (const kn_named_tensor *)"";
}

const kn_named_tensor *kn_module_parameters(kn_module *m, int *count) { return flatten(m, count, true); }
const kn_named_tensor *kn_module_state_dict(kn_module *m, int *count) { return flatten(m, count, false); }

static void count_params(const char *name, entry *e, void *p) {
    (void)name;
    if (e->param) *(int64_t *)p += kn_numel(e->t);
}

int64_t kn_module_num_params(kn_module *m) {
    int64_t n = 0;
    if (m) walk(m, "", count_params, &n);
    return n;
}

static void zero_one(const char *name, entry *e, void *p) {
    (void)name;
    (void)p;
    kn_zero_grad(e->t);
}
void kn_module_zero_grad(kn_module *m) {
    if (m) walk(m, "", zero_one, NULL);
}

/* ---- devices and dtypes ------------------------------------------------------------------ */
typedef struct {
    kn_device dev;
    int dtype; /* -1: keep */
    kn_status status;
} move_ctx;

/* Replaces t's storage in place, so every handle to t (optimizers) follows. */
static void move_one(const char *name, entry *e, void *p) {
    move_ctx *c = p;
    kn_tensor *t = e->t;
    if (c->status != KN_OK) return;
    kn_dtype dt = c->dtype >= 0 && kn_dtype_is_float(t->dtype) ? (kn_dtype)c->dtype : t->dtype;
    if (kn_device_equal(t->storage->device, c->dev) && dt == t->dtype) return;
    kn_scope s = kn_scope_begin();
    kn_no_grad_begin();
    kn_tensor *n = kn_to_dtype(t, c->dev, dt);
    kn_no_grad_end();
    if (!n) {
        c->status = kn_error_code();
        kn__err(c->status, "module_to: moving '%s' failed: %s", name, kn_error());
    } else {
        kn_storage *old = t->storage;
        t->storage = n->storage;
        n->storage->refcount++;
        kn__storage_release(old);
        t->dtype = dt;
        t->offset = n->offset;
        memcpy(t->stride, n->stride, sizeof t->stride);
        kn_zero_grad(t); /* a gradient on the old device would not match */
    }
    kn_scope_end(s);
}

kn_status kn_module_to(kn_module *m, kn_device dev) {
    if (!m) return kn__err_null("module_to"), KN_ERR_NULL;
    if (!kn_device_ok(dev))
        return kn__err(KN_ERR_DEVICE, "module_to: device %s is not available", kn_device_str(dev));
    move_ctx c = {dev, -1, KN_OK};
    walk(m, "", move_one, &c);
    return c.status;
}

kn_status kn_module_to_dtype(kn_module *m, kn_dtype dt) {
    if (!m) return kn__err_null("module_to_dtype"), KN_ERR_NULL;
    if (!kn_dtype_is_float(dt))
        return kn__err(KN_ERR_DTYPE, "module_to_dtype: %s is not a floating-point dtype", kn_dtype_name(dt));
    move_ctx c = {kn_module_device(m), (int)dt, KN_OK};
    walk(m, "", move_one, &c);
    return c.status;
}

static void first_device(const char *name, entry *e, void *p) {
    (void)name;
    kn_device *d = p;
    if (d->kind < 0) *d = e->t->storage->device;
}

kn_device kn_module_device(const kn_module *m) {
    kn_device d = {-1, -1};
    if (m) walk((kn_module *)m, "", first_device, &d);
    return d.kind < 0 ? KN_CPU : d;
}

/* ---- printing and freeing ------------------------------------------------------------------ */
static void print_rec(const kn_module *m, FILE *f, int indent) {
    fprintf(f, "%s(%s", m->type, m->repr);
    if (m->n_children) {
        fprintf(f, "\n");
        for (int i = 0; i < m->n_children; i++) {
            fprintf(f, "%*s(%s): ", indent + 2, "", m->children[i].name);
            print_rec(m->children[i].m, f, indent + 2);
            fprintf(f, "\n");
        }
        fprintf(f, "%*s", indent, "");
    }
    fprintf(f, ")");
}

void kn_module_print(kn_module *m, FILE *f) {
    if (!m) {
        fprintf(f, "Module(NULL)\n");
        return;
    }
    print_rec(m, f, 0);
    fprintf(f, "\n");
}

void kn_module_free(kn_module *m) {
    if (!m) return;
    for (int i = 0; i < m->n_entries; i++) {
        free(m->entries[i].name);
        kn_release(m->entries[i].t);
    }
    for (int i = 0; i < m->n_children; i++) {
        free(m->children[i].name);
        kn_module_free(m->children[i].m);
    }
    clear_flat(m);
    if (m->free_state) m->free_state(m->state);
    free(m->state);
    free(m->entries);
    free(m->children);
    free(m);
}
