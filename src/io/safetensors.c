/* kiln — safetensors: an 8-byte little-endian header length N, N bytes of
 * JSON header ({"__metadata__": {str: str}, name: {"dtype", "shape",
 * "data_offsets": [begin, end]}, ...}), then the tensors' bytes.
 *
 * Reading maps the whole file and validates everything before handing out a
 * tensor: header length against the file size, the JSON, dtype names,
 * shape x dtype size against the byte range, ranges inside the buffer and not
 * overlapping, no arithmetic overflow. Writing goes through kn__atomic_write,
 * so a failed save never damages an existing file. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strdup under -std=c11 */
#endif
#include "io/atomic_file.h"
#include "io/json.h"
#include "io/safetensors_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    kn_dtype dtype;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
    uint64_t begin, end; /* within the byte buffer */
} st_entry;

struct kn_safetensors {
    char *path;
    kn__file file;
    const unsigned char *data; /* the byte buffer after the header */
    size_t data_len;
    kn__json_doc *doc; /* names and metadata point into it */
    st_entry *e;
    int n;
    const st_entry **by_name; /* e sorted by name, for lookups */
    kn_meta *meta;
    int n_meta;
};

static const struct {
    const char *name;
    kn_dtype dtype;
} st_dtypes[] = {{"F32", KN_F32}, {"F16", KN_F16}, {"BF16", KN_BF16}, {"F64", KN_F64},
                 {"I32", KN_I32}, {"I64", KN_I64}, {"U8", KN_U8},    {"BOOL", KN_BOOL},
                 {"C64", KN_C64}};

/* Valid safetensors dtypes that kiln has no dtype for. */
static const char *const st_other[] = {"I8",      "I16",     "U16", "U32", "U64", "F8_E4M3",
                                       "F8_E5M2", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2"};

static const char *st_dtype_name(kn_dtype dt) {
    for (size_t k = 0; k < sizeof st_dtypes / sizeof *st_dtypes; k++)
        if (st_dtypes[k].dtype == dt) return st_dtypes[k].name;
    return NULL;
}

static size_t dtype_size(kn_dtype dt) {
    switch (dt) {
    case KN_C128: return 16;
    case KN_F64: case KN_I64: case KN_C64: return 8;
    case KN_F32: case KN_I32: return 4;
    case KN_F16: case KN_BF16: return 2;
    default: return 1;
    }
}

/* The unit of byte order: the element, or each float of a complex pair. */
static size_t swap_unit(kn_dtype dt) { return kn_dtype_is_complex(dt) ? dtype_size(dt) / 2 : dtype_size(dt); }

/* "[2, 3]"; a local copy so the parser needs nothing from the core. */
static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* qsort has no context argument in C11: sort pointers to the entries. */
static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}
static int cmp_by_begin(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

void kn_safetensors_close(kn_safetensors *f) {
    if (!f) return;
    kn__file_release(&f->file);
    kn__json_free(f->doc);
    free(f->e);
    free((void *)f->by_name);
    free(f->meta);
    free(f->path);
    free(f);
}

static const kn__json *need(const kn_safetensors *f, const kn__json *t, const char *tname,
                            const char *key, kn__json_type type) {
    const kn__json *v = kn__json_get(f->doc, t, key);
    if (!v) kn__err(KN_ERR_FORMAT, "%s: tensor '%s': missing \"%s\"", f->path, tname, key);
    else if (v->type != type)
        kn__err(KN_ERR_FORMAT, "%s: tensor '%s': \"%s\" is a %s, expected a%s %s", f->path, tname,
                key, kn__json_type_name(v->type), type == KN__JSON_ARRAY ? "n" : "",
                kn__json_type_name(type));
    else return v;
    return NULL;
}

static int parse_entry(kn_safetensors *f, const kn__json *t, st_entry *e) {
    const char *p = f->path, *name = t->key;
    char sb[256];
    e->name = name;
    if (t->type != KN__JSON_OBJECT)
        return kn__err(KN_ERR_FORMAT, "%s: tensor '%s': expected an object, found a %s", p, name,
                       kn__json_type_name(t->type));
    const kn__json *dt = need(f, t, name, "dtype", KN__JSON_STRING);
    const kn__json *sh = need(f, t, name, "shape", KN__JSON_ARRAY);
    const kn__json *off = need(f, t, name, "data_offsets", KN__JSON_ARRAY);
    if (!dt || !sh || !off) return KN_ERR_FORMAT;

    size_t k = 0, nd = sizeof st_dtypes / sizeof *st_dtypes;
    while (k < nd && strcmp(dt->str, st_dtypes[k].name) != 0) k++;
    if (k == nd) {
        for (size_t j = 0; j < sizeof st_other / sizeof *st_other; j++)
            if (strcmp(dt->str, st_other[j]) == 0)
                return kn__err(KN_ERR_UNSUPPORTED,
                               "%s: tensor '%s' has dtype %s, which kiln does not support", p,
                               name, dt->str);
        return kn__err(KN_ERR_FORMAT, "%s: tensor '%s' has unknown dtype '%s'", p, name, dt->str);
    }
    e->dtype = st_dtypes[k].dtype;

    if (sh->count > KN_MAX_DIMS)
        return kn__err(KN_ERR_UNSUPPORTED, "%s: tensor '%s' has %lld dimensions; kiln supports %d",
                       p, name, (long long)sh->count, KN_MAX_DIMS);
    e->ndim = (int)sh->count;
    /* The product of the non-zero dims is bounded too: an empty tensor of
     * shape [2^40, 2^40, 0] would overflow the core's stride arithmetic. */
    uint64_t nonzero = 1;
    bool empty = false, too_big = false;
    int d = 0;
    for (const kn__json *v = kn__json_first(f->doc, sh); v; v = kn__json_next(f->doc, v), d++) {
        if (v->type != KN__JSON_NUMBER || !v->is_int || v->integer < 0)
            return kn__err(KN_ERR_FORMAT, "%s: tensor '%s': shape must hold non-negative integers",
                           p, name);
        e->shape[d] = v->integer;
        uint64_t s = (uint64_t)v->integer;
        if (!s) empty = true;
        else if (nonzero > KN__MAX_ELEMENTS / s) too_big = true;
        else nonzero *= s;
    }
    if (too_big)
        return kn__err(KN_ERR_FORMAT, "%s: tensor '%s': shape %s has too many elements", p, name,
                       shape_str(e->ndim, e->shape, sb, sizeof sb));
    const uint64_t numel = empty ? 0 : nonzero;

    const kn__json *b = kn__json_first(f->doc, off), *en = b ? kn__json_next(f->doc, b) : NULL;
    if (off->count != 2 || b->type != KN__JSON_NUMBER || !b->is_int || b->integer < 0 ||
        en->type != KN__JSON_NUMBER || !en->is_int || en->integer < 0)
        return kn__err(KN_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets must be two non-negative integers", p, name);
    e->begin = (uint64_t)b->integer;
    e->end = (uint64_t)en->integer;
    if (e->begin > e->end)
        return kn__err(KN_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", p, name,
                       (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > f->data_len)
        return kn__err(KN_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data "
                       "(%zu bytes; truncated file?)",
                       p, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                       f->data_len);
    size_t es = dtype_size(e->dtype);
    if (numel * es != e->end - e->begin) /* no overflow: numel <= 2^56, es <= 8 */
        return kn__err(KN_ERR_FORMAT,
                       "%s: tensor '%s': shape %s of %s needs %llu bytes, but data_offsets "
                       "[%llu, %llu] hold %llu",
                       p, name, shape_str(e->ndim, e->shape, sb, sizeof sb), dt->str,
                       (unsigned long long)(numel * es),
                       (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)(e->end - e->begin));
    return KN_OK;
}

static int parse_metadata(kn_safetensors *f, const kn__json *m) {
    if (m->type != KN__JSON_OBJECT)
        return kn__err(KN_ERR_FORMAT, "%s: __metadata__ is a %s, expected an object of strings",
                       f->path, kn__json_type_name(m->type));
    f->meta = calloc(m->count ? (size_t)m->count : 1, sizeof *f->meta);
    if (!f->meta) return kn__err(KN_ERR_OOM, "%s: out of memory", f->path);
    for (const kn__json *v = kn__json_first(f->doc, m); v; v = kn__json_next(f->doc, v)) {
        if (v->type != KN__JSON_STRING)
            return kn__err(KN_ERR_FORMAT,
                           "%s: __metadata__ value for '%s' is a %s, expected a string", f->path,
                           v->key, kn__json_type_name(v->type));
        f->meta[f->n_meta].key = v->key;
        f->meta[f->n_meta].value = v->str;
        f->n_meta++;
    }
    return KN_OK;
}

/* Takes ownership of file (released on failure). */
static kn_safetensors *parse_file(kn__file file, const char *path) {
    kn_safetensors *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        kn__file_release(&file);
        kn__err(KN_ERR_OOM, "%s: out of memory", path);
        return NULL;
    }
    f->file = file;
    const unsigned char *b = file.data;
    size_t len = file.len;
    if (len == 0) {
        kn__err(KN_ERR_FORMAT, "%s: empty file (not a safetensors file)", path);
        goto fail;
    }
    if (len < 8) {
        kn__err(KN_ERR_FORMAT,
                "%s: not a safetensors file (%zu bytes, too short for the 8-byte header length)",
                path, len);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = (hlen << 8) | b[k];
    if (hlen > len - 8) {
        /* A plausible length before a '{' is a cut-off safetensors file;
         * anything else is some other kind of file. */
        if (hlen <= KN__SAFETENSORS_MAX_HEADER && len > 8 && b[8] == '{')
            kn__err(KN_ERR_FORMAT, "%s: truncated: header says %llu bytes, file has %zu", path,
                    (unsigned long long)hlen, len);
        else
            kn__err(KN_ERR_FORMAT,
                    "%s: not a safetensors file (header length %llu exceeds file size %zu)", path,
                    (unsigned long long)hlen, len);
        goto fail;
    }
    if (hlen > KN__SAFETENSORS_MAX_HEADER) {
        kn__err(KN_ERR_FORMAT,
                "%s: not a safetensors file (header length %llu exceeds the limit of %llu)", path,
                (unsigned long long)hlen, KN__SAFETENSORS_MAX_HEADER);
        goto fail;
    }
    if (hlen < 2 || b[8] != '{') {
        kn__err(KN_ERR_FORMAT, "%s: not a safetensors file (the header is not a JSON object)",
                path);
        goto fail;
    }
    f->data = b + 8 + hlen;
    f->data_len = len - 8 - (size_t)hlen;

    char *what = malloc(strlen(path) + sizeof ": header");
    if (!what) {
        kn__err(KN_ERR_OOM, "%s: out of memory", path);
        goto fail;
    }
    strcpy(what, path);
    strcat(what, ": header");
    kn__json_limits lim = {16, (size_t)KN__SAFETENSORS_MAX_HEADER};
    f->doc = kn__json_parse((const char *)b + 8, (size_t)hlen, &lim, what);
    free(what);
    if (!f->doc) goto fail;
    const kn__json *root = kn__json_root(f->doc);
    if (root->count > KN__SAFETENSORS_MAX_TENSORS) {
        kn__err(KN_ERR_FORMAT, "%s: header lists %lld tensors; at most %d supported", path,
                (long long)root->count, KN__SAFETENSORS_MAX_TENSORS);
        goto fail;
    }
    f->e = calloc((size_t)root->count + 1, sizeof *f->e);
    f->by_name = calloc((size_t)root->count + 1, sizeof *f->by_name);
    if (!f->e || !f->by_name) {
        kn__err(KN_ERR_OOM, "%s: out of memory", path);
        goto fail;
    }
    bool seen_meta = false;
    for (const kn__json *v = kn__json_first(f->doc, root); v; v = kn__json_next(f->doc, v)) {
        if (strcmp(v->key, "__metadata__") == 0) {
            if (seen_meta) {
                kn__err(KN_ERR_FORMAT, "%s: __metadata__ appears twice in the header", path);
                goto fail;
            }
            seen_meta = true;
            if (parse_metadata(f, v) != KN_OK) goto fail;
            continue;
        }
        if (parse_entry(f, v, &f->e[f->n]) != KN_OK) goto fail;
        f->by_name[f->n] = &f->e[f->n];
        f->n++;
    }
    if (f->n > 1) {
        qsort((void *)f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_by_name);
        for (int k = 1; k < f->n; k++)
            if (strcmp(f->by_name[k]->name, f->by_name[k - 1]->name) == 0) {
                kn__err(KN_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", path,
                        f->by_name[k]->name);
                goto fail;
            }
        /* Overlap check on a copy sorted by offset (empty tensors overlap nothing). */
        const st_entry **ord = malloc((size_t)f->n * sizeof *ord);
        if (!ord) {
            kn__err(KN_ERR_OOM, "%s: out of memory", path);
            goto fail;
        }
        memcpy((void *)ord, (const void *)f->by_name, (size_t)f->n * sizeof *ord);
        qsort((void *)ord, (size_t)f->n, sizeof *ord, cmp_by_begin);
        const st_entry *prev = NULL;
        for (int k = 0; k < f->n; k++) {
            const st_entry *e = ord[k];
            if (e->begin == e->end) continue;
            if (prev && e->begin < prev->end) {
                kn__err(KN_ERR_FORMAT,
                        "%s: tensors '%s' and '%s' overlap (bytes [%llu, %llu) and [%llu, %llu))",
                        path, prev->name, e->name, (unsigned long long)prev->begin,
                        (unsigned long long)prev->end, (unsigned long long)e->begin,
                        (unsigned long long)e->end);
                free((void *)ord);
                goto fail;
            }
            prev = e;
        }
        free((void *)ord);
    }
    return f;
fail:
    kn_safetensors_close(f);
    return NULL;
}

kn_safetensors *kn__safetensors_parse(const void *data, size_t len, const char *name) {
    if (!name) name = "<safetensors>";
    if (!data && len) {
        kn__err(KN_ERR_NULL, "%s: data is NULL", name);
        return NULL;
    }
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy) {
        kn__err(KN_ERR_OOM, "%s: out of memory", name);
        return NULL;
    }
    if (len) memcpy(copy, data, len);
    kn__file file = {copy, len, copy, 0};
    return parse_file(file, name);
}

kn_safetensors *kn_safetensors_open(const char *path) {
    kn__file file;
    if (kn__file_read(path, &file) != KN_OK) return NULL;
    return parse_file(file, path);
}

const char *kn__safetensors_path(const kn_safetensors *f) { return f ? f->path : "(null)"; }

int kn_safetensors_count(const kn_safetensors *f) {
    if (!f) return kn__err_null("kn_safetensors_count"), -1;
    return f->n;
}

const char *kn_safetensors_name(const kn_safetensors *f, int i) {
    if (!f) return kn__err_null("kn_safetensors_name"), NULL;
    if (i < 0 || i >= f->n) {
        kn__err(KN_ERR_INVALID, "%s: tensor index %d out of range [0, %d)", f->path, i, f->n);
        return NULL;
    }
    return f->e[i].name;
}

static const st_entry *find(const kn_safetensors *f, const char *name) {
    int lo = 0, hi = f->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

bool kn__safetensors_has(const kn_safetensors *f, const char *name) { return f && name && find(f, name); }

kn_tensor *kn_safetensors_get(const kn_safetensors *f, const char *name, kn_device dev) {
    if (!f || !name) return kn__err_null("kn_safetensors_get"), NULL;
    const st_entry *e = find(f, name);
    if (!e) {
        kn__err(KN_ERR_INVALID, "%s: no tensor named '%s'", f->path, name);
        return NULL;
    }
    size_t nbytes = (size_t)(e->end - e->begin), es = dtype_size(e->dtype);
    const unsigned char *src = f->data + e->begin;
    unsigned char *tmp = NULL;
    /* Stored little-endian; BOOL bytes other than 0/1 would be invalid bools. */
    bool swap = es > 1 && !kn__host_little_endian();
    if (nbytes && (swap || e->dtype == KN_BOOL)) {
        tmp = malloc(nbytes);
        if (!tmp) {
            kn__err(KN_ERR_OOM, "%s: out of memory reading tensor '%s'", f->path, name);
            return NULL;
        }
        memcpy(tmp, src, nbytes);
        if (swap) kn__byteswap(tmp, nbytes / swap_unit(e->dtype), swap_unit(e->dtype));
        if (e->dtype == KN_BOOL)
            for (size_t k = 0; k < nbytes; k++) tmp[k] = tmp[k] != 0;
        src = tmp;
    }
    kn_tensor *t = kn_from_data(src, e->dtype, e->ndim, e->shape, dev);
    free(tmp);
    return t;
}

const char *kn_safetensors_meta(const kn_safetensors *f, const char *key) {
    if (!f || !key) return NULL;
    for (int k = 0; k < f->n_meta; k++)
        if (strcmp(f->meta[k].key, key) == 0) return f->meta[k].value;
    return NULL;
}

/* ---- writing ---------------------------------------------------------------- */

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first duplicate among n strings, or NULL. */
static const char *first_duplicate(const char **names, int n) {
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int k = 1; k < n; k++)
        if (strcmp(names[k], names[k - 1]) == 0) return names[k];
    return NULL;
}

kn_status kn_safetensors_save(const char *path, int n, const kn_named_tensor *tensors,
                              int n_meta, const kn_meta *meta) {
    if (!path) return kn__err(KN_ERR_NULL, "kn_safetensors_save: path is NULL");
    if (n < 0 || (n > 0 && !tensors) || n_meta < 0 || (n_meta > 0 && !meta))
        return kn__err(KN_ERR_INVALID, "%s: kn_safetensors_save: invalid tensor or metadata list",
                       path);
    if (n > KN__SAFETENSORS_MAX_TENSORS)
        return kn__err(KN_ERR_INVALID, "%s: %d tensors; a file holds at most %d; nothing written", path, n,
                       KN__SAFETENSORS_MAX_TENSORS);
    kn_status st = KN_OK;
    int big = n > n_meta ? n : n_meta;
    const char **names = malloc(((size_t)big + 1) * sizeof *names);
    const void **parts = calloc((size_t)n + 2, sizeof *parts);
    size_t *sizes = calloc((size_t)n + 2, sizeof *sizes);
    void **owned = calloc((size_t)n + 1, sizeof *owned);
    kn__json_buf h = {0};
    if (!names || !parts || !sizes || !owned) {
        st = kn__err(KN_ERR_OOM, "%s: out of memory", path);
        goto done;
    }
    /* Check everything before creating any file. */
    for (int k = 0; k < n; k++) {
        const char *nm = tensors[k].name;
        if (!nm) {
            st = kn__err(KN_ERR_NULL, "%s: tensor %d has no name", path, k);
            goto done;
        }
        if (!tensors[k].tensor) {
            st = kn__err(KN_ERR_NULL, "%s: tensor '%s' is NULL", path, nm);
            goto done;
        }
        if (strcmp(nm, "__metadata__") == 0) {
            st = kn__err(KN_ERR_INVALID, "%s: '__metadata__' cannot be a tensor name", path);
            goto done;
        }
        names[k] = nm;
    }
    const char *dup = first_duplicate(names, n);
    if (dup) {
        st = kn__err(KN_ERR_INVALID, "%s: tensor name '%s' is used twice", path, dup);
        goto done;
    }
    for (int k = 0; k < n_meta; k++) {
        if (!meta[k].key || !meta[k].value) {
            st = kn__err(KN_ERR_NULL, "%s: metadata entry %d has a NULL key or value", path, k);
            goto done;
        }
        names[k] = meta[k].key;
    }
    if ((dup = first_duplicate(names, n_meta))) {
        st = kn__err(KN_ERR_INVALID, "%s: metadata key '%s' is used twice", path, dup);
        goto done;
    }

    kn__json_cstr(&h, "{");
    if (n_meta > 0) {
        kn__json_cstr(&h, "\"__metadata__\":{");
        for (int k = 0; k < n_meta; k++) {
            if (k) kn__json_cstr(&h, ",");
            bool ok = kn__json_string(&h, meta[k].key, strlen(meta[k].key));
            kn__json_cstr(&h, ":");
            if (!ok || !kn__json_string(&h, meta[k].value, strlen(meta[k].value))) {
                st = kn__err(KN_ERR_INVALID, "%s: metadata '%s' is not valid UTF-8", path,
                             meta[k].key);
                goto done;
            }
        }
        kn__json_cstr(&h, "}");
    }
    uint64_t offset = 0;
    for (int k = 0; k < n; k++) {
        const kn_tensor *t = tensors[k].tensor;
        kn_dtype dt = kn_dtype_of(t);
        const char *dn = st_dtype_name(dt);
        int64_t numel = kn_numel(t);
        if (dt == KN_C128) { /* the format's one complex dtype is C64 */
            st = kn__err(KN_ERR_DTYPE,
                         "%s: tensor '%s' is complex128, and safetensors has no dtype for it (its only "
                         "complex dtype is C64, complex64); save kn_view_as_real of it (float64 pairs), a "
                         "complex64 copy, or use .npy/.npz; nothing written",
                         path, tensors[k].name);
            goto done;
        }
        if (!dn || numel < 0) {
            st = kn__err(KN_ERR_DTYPE, "%s: tensor '%s' has an invalid dtype", path,
                         tensors[k].name);
            goto done;
        }
        size_t nbytes = (size_t)numel * dtype_size(dt);
        if (n_meta > 0 || k) kn__json_cstr(&h, ",");
        if (!kn__json_string(&h, tensors[k].name, strlen(tensors[k].name))) {
            st = kn__err(KN_ERR_INVALID, "%s: tensor name '%s' is not valid UTF-8", path,
                         tensors[k].name);
            goto done;
        }
        kn__json_cstr(&h, ":{\"dtype\":\"");
        kn__json_cstr(&h, dn);
        kn__json_cstr(&h, "\",\"shape\":[");
        const int64_t *shape = kn_shape(t);
        for (int d = 0; d < kn_ndim(t); d++) {
            if (d) kn__json_cstr(&h, ",");
            kn__json_int(&h, shape[d]);
        }
        kn__json_cstr(&h, "],\"data_offsets\":[");
        kn__json_int(&h, (int64_t)offset);
        kn__json_cstr(&h, ",");
        kn__json_int(&h, (int64_t)(offset + nbytes));
        kn__json_cstr(&h, "]}");
        offset += nbytes;

        /* The bytes: a CPU tensor's own memory when contiguous (and the
         * machine is little-endian), else a contiguous host copy. */
        sizes[k + 2] = nbytes;
        if (!nbytes) continue;
        bool swap = swap_unit(dt) > 1 && !kn__host_little_endian();
        if (kn_device_of(t).kind == KN_DEVICE_CPU && kn_is_contiguous(t) && !swap) {
            parts[k + 2] = kn__data(t);
            continue;
        }
        if (!(owned[k] = malloc(nbytes))) {
            st = kn__err(KN_ERR_OOM, "%s: out of memory copying tensor '%s'", path,
                         tensors[k].name);
            goto done;
        }
        if ((st = kn_to_host(t, owned[k], dt)) != KN_OK) goto done;
        if (swap) kn__byteswap(owned[k], nbytes / swap_unit(dt), swap_unit(dt));
        parts[k + 2] = owned[k];
    }
    kn__json_cstr(&h, "}");
    while (h.len % 8) kn__json_cstr(&h, " "); /* keeps the data 8-byte aligned */
    if (h.oom) {
        st = kn__err(KN_ERR_OOM, "%s: out of memory writing the header", path);
        goto done;
    }
    if (h.len > KN__SAFETENSORS_MAX_HEADER) {
        st = kn__err(KN_ERR_INVALID,
                     "%s: the header would take %zu bytes (names and metadata, escaped), over the %llu that "
                     "readers accept; nothing written",
                     path, h.len, KN__SAFETENSORS_MAX_HEADER);
        goto done;
    }
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)h.len >> (8 * k));
    parts[0] = len8;
    sizes[0] = 8;
    parts[1] = h.data;
    sizes[1] = h.len;
    st = kn__atomic_write(path, parts, sizes, n + 2);
done:
    if (owned)
        for (int k = 0; k < n; k++) free(owned[k]);
    free(owned);
    free(names);
    free((void *)parts);
    free(sizes);
    kn__json_buf_free(&h);
    return st;
}

/* ---- modules ---------------------------------------------------------------- */

kn_status kn_module_save(kn_module *m, const char *path, int n_meta, const kn_meta *meta) {
    if (!m) return kn__err(KN_ERR_NULL, "kn_module_save: module is NULL");
    int count = 0;
    const kn_named_tensor *sd = kn_module_state_dict(m, &count);
    if (!sd && count > 0) return kn_error_code() ? kn_error_code() : KN_ERR_INVALID;
    return kn_safetensors_save(path, count, sd, n_meta, meta);
}

kn_status kn_module_load(kn_module *m, const kn_safetensors *f) {
    if (!m || !f) return kn__err(KN_ERR_NULL, "kn_module_load: %s is NULL", m ? "file" : "module");
    int count = 0;
    const kn_named_tensor *sd = kn_module_state_dict(m, &count);
    if (!sd && count > 0) return kn_error_code() ? kn_error_code() : KN_ERR_INVALID;
    char a[256], b[256];
    /* Check every name, dtype and shape before changing anything, so a
     * mismatched file leaves the model as it was. */
    bool *used = calloc((size_t)f->n + 1, sizeof *used);
    if (!used) return kn__err(KN_ERR_OOM, "%s: out of memory", f->path);
    kn_status st = KN_OK;
    for (int k = 0; k < count && st == KN_OK; k++) {
        const char *name = sd[k].name;
        const kn_tensor *dst = sd[k].tensor;
        const st_entry *e = find(f, name);
        if (!e) {
            int missing = 0;
            for (int j = k; j < count; j++) missing += !find(f, sd[j].name);
            st = kn__err(KN_ERR_FORMAT, "%s: tensor '%s' is missing (the model expects shape %s)%s",
                         f->path, name, shape_str(kn_ndim(dst), kn_shape(dst), a, sizeof a),
                         missing > 1 ? "; more are missing too" : "");
            break;
        }
        used[e - f->e] = true;
        kn_dtype want = kn_dtype_of(dst);
        if (kn_dtype_is_float(want) != kn_dtype_is_float(e->dtype) ||
            kn_dtype_is_complex(want) != kn_dtype_is_complex(e->dtype))
            st = kn__err(KN_ERR_DTYPE, "%s: tensor '%s' has dtype %s, the model expects %s",
                         f->path, name, kn_dtype_name(e->dtype), kn_dtype_name(want));
        else if (kn_ndim(dst) != e->ndim ||
                 memcmp(kn_shape(dst), e->shape, (size_t)e->ndim * sizeof(int64_t)) != 0)
            st = kn__err(KN_ERR_SHAPE, "%s: tensor '%s' has shape %s, the model expects %s",
                         f->path, name, shape_str(e->ndim, e->shape, a, sizeof a),
                         shape_str(kn_ndim(dst), kn_shape(dst), b, sizeof b));
    }
    for (int k = 0; k < f->n && st == KN_OK; k++)
        if (!used[k])
            st = kn__err(KN_ERR_FORMAT, "%s: tensor '%s' is not part of the model", f->path,
                         f->e[k].name);
    free(used);
    /* Parameters are leaves that require grad: writing them is not a step
     * to record. */
    kn_no_grad_begin();
    for (int k = 0; k < count && st == KN_OK; k++) {
        /* One scope per tensor keeps at most one temporary copy alive. */
        kn_scope s = kn_scope_begin();
        kn_tensor *src = kn_safetensors_get(f, sd[k].name, kn_device_of(sd[k].tensor));
        st = src ? kn_copy_(sd[k].tensor, src) : kn_error_code();
        kn_scope_end(s);
        if (!src && st == KN_OK) st = KN_ERR_INVALID;
    }
    kn_no_grad_end();
    return st;
}

kn_status kn_module_load_file(kn_module *m, const char *path) {
    if (!m || !path) return kn__err(KN_ERR_NULL, "kn_module_load_file: %s is NULL", m ? "path" : "module");
    kn_safetensors *f = kn_safetensors_open(path); /* its errors name path */
    if (!f) return kn_error_code() != KN_OK ? kn_error_code() : KN_ERR_IO;
    kn_status s = kn_module_load(m, f);
    kn_safetensors_close(f);
    return s;
}
