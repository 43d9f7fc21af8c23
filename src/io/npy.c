/* kiln — NumPy .npy files: "\x93NUMPY", version, header length, a Python
 * dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded so the data starts at a multiple of 64, then the raw elements.
 *
 * Writes version 1.0 (the header of KN_MAX_DIMS dims always fits). Reads 1.0,
 * 2.0 and 3.0; descr '<', '>', '=', '|' or no byte order (swapped to the
 * machine's); fortran_order True (reordered to row-major). Complex arrays
 * ('c8', 'c16') are pairs of floats, swapped part by part. */
#include "io/atomic_file.h"
#include "io/npy_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    kn_dtype dtype;
    char kind;
    int size;
} npy_types[] = {{KN_F32, 'f', 4}, {KN_F64, 'f', 8}, {KN_F16, 'f', 2},  {KN_I32, 'i', 4},
                 {KN_I64, 'i', 8}, {KN_U8, 'u', 1},  {KN_BOOL, 'b', 1}, {KN_C64, 'c', 8},
                 {KN_C128, 'c', 16}};
#define N_TYPES (sizeof npy_types / sizeof *npy_types)

static const char magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* Longest header the writer can produce: the fixed text, KN_MAX_DIMS dims of
 * up to 20 digits and ", ", then the padding to a multiple of 64. */
#define NPY_DICT_CAP (64 + 22 * KN_MAX_DIMS + 64)
_Static_assert(10 + NPY_DICT_CAP <= KN__NPY_MAX_HEAD, "npy header buffer too small");

kn_status kn__npy_encode(const kn_tensor *t, const char *what, kn__npy_bytes *out) {
    memset(out, 0, sizeof *out);
    if (!t) return kn__err(KN_ERR_NULL, "%s: tensor is NULL", what);
    /* NumPy has no bfloat16: such a tensor is saved as float32 (exact, below). */
    kn_dtype dt = kn_dtype_of(t) == KN_BF16 ? KN_F32 : kn_dtype_of(t);
    size_t k = 0;
    while (k < N_TYPES && npy_types[k].dtype != dt) k++;
    if (k == N_TYPES || kn_numel(t) < 0)
        return kn__err(KN_ERR_DTYPE, "%s: invalid dtype", what);
    const int es = npy_types[k].size;
    const char order = es == 1 ? '|' : kn__host_little_endian() ? '<' : '>';

    char *h = (char *)out->head + 10;
    const size_t cap = NPY_DICT_CAP;
    int n = snprintf(h, cap, "{'descr': '%c%c%d', 'fortran_order': False, 'shape': (", order,
                     npy_types[k].kind, es);
    const int64_t *shape = kn_shape(t);
    for (int d = 0; d < kn_ndim(t) && n > 0 && (size_t)n < cap; d++)
        n += snprintf(h + n, cap - (size_t)n, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (n > 0 && (size_t)n < cap)
        n += snprintf(h + n, cap - (size_t)n, "%s), }", kn_ndim(t) == 1 ? "," : "");
    if (n <= 0 || (size_t)n + 64 > cap) /* cannot happen with KN_MAX_DIMS dims; never truncate */
        return kn__err(KN_ERR_INVALID, "%s: .npy header too long", what);
    /* Spaces and a newline so that 10 + header length is a multiple of 64. */
    while ((10 + n + 1) % 64) h[n++] = ' ';
    h[n++] = '\n';

    memcpy(out->head, magic, 6);
    out->head[6] = 1;
    out->head[7] = 0;
    out->head[8] = (unsigned char)(n & 0xFF);
    out->head[9] = (unsigned char)(n >> 8);
    out->head_len = 10 + (size_t)n;

    size_t nbytes = (size_t)kn_numel(t) * (size_t)es;
    out->nbytes = nbytes;
    if (nbytes && kn_device_of(t).kind == KN_DEVICE_CPU && kn_is_contiguous(t) &&
        kn_dtype_of(t) == dt) {
        out->data = kn__data(t);
    } else if (nbytes) {
        /* bfloat16 widens by its bits (<< 16), not through a double, which
         * would quiet signalling NaNs: every bit pattern survives. */
        const bool bf = kn_dtype_of(t) == KN_BF16;
        uint16_t *half = bf ? malloc(nbytes / 2) : NULL;
        if (!(out->owned = malloc(nbytes)) || (bf && !half)) {
            free(half);
            kn__npy_bytes_free(out);
            return kn__err(KN_ERR_OOM, "%s: out of memory copying the tensor", what);
        }
        kn_status s = kn_to_host(t, bf ? (void *)half : out->owned, bf ? KN_BF16 : dt);
        for (size_t i = 0; bf && s == KN_OK && i < nbytes / 4; i++)
            ((uint32_t *)out->owned)[i] = (uint32_t)half[i] << 16;
        free(half);
        if (s != KN_OK) {
            kn__npy_bytes_free(out);
            return s;
        }
        out->data = out->owned;
    }
    return KN_OK;
}

void kn__npy_bytes_free(kn__npy_bytes *b) {
    free(b->owned);
    b->owned = NULL;
    b->data = NULL;
}

kn_status kn_npy_save(const char *path, const kn_tensor *t) {
    if (!path) return kn__err(KN_ERR_NULL, "kn_npy_save: path is NULL");
    if (!t) return kn__err(KN_ERR_NULL, "%s: kn_npy_save: tensor is NULL", path);
    kn__npy_bytes b;
    kn_status s = kn__npy_encode(t, path, &b);
    if (s != KN_OK) return s;
    const void *parts[2] = {b.head, b.data};
    size_t sizes[2] = {b.head_len, b.nbytes};
    s = kn__atomic_write(path, parts, sizes, 2);
    kn__npy_bytes_free(&b);
    return s;
}

/* ---- reading ------------------------------------------------------------------ */

typedef struct {
    const char *s;
    size_t n, i;
    const char *path;
} hparser;

static void ws(hparser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n'))
        p->i++;
}

static bool eat(hparser *p, char c) {
    ws(p);
    if (p->i < p->n && p->s[p->i] == c) {
        p->i++;
        return true;
    }
    return false;
}

static int bad(hparser *p, const char *what) {
    return kn__err(KN_ERR_FORMAT, "%s: bad .npy header (%s) at byte %zu", p->path, what, p->i);
}

/* A quoted Python string into out (cap bytes). */
static int str(hparser *p, char *out, size_t cap) {
    ws(p);
    if (p->i >= p->n || (p->s[p->i] != '\'' && p->s[p->i] != '"'))
        return bad(p, "expected a string");
    char q = p->s[p->i++];
    size_t k = 0;
    while (p->i < p->n && p->s[p->i] != q) {
        if (p->s[p->i] == '\\' || k + 1 >= cap) return bad(p, "unsupported string");
        out[k++] = p->s[p->i++];
    }
    if (p->i >= p->n) return bad(p, "unterminated string");
    p->i++;
    out[k] = '\0';
    return KN_OK;
}

typedef struct {
    char descr[32];
    bool fortran;
    int ndim;
    int64_t shape[KN_MAX_DIMS];
} npy_header;

static int parse_header(hparser *p, npy_header *h) {
    bool have_descr = false, have_order = false, have_shape = false;
    if (!eat(p, '{')) return bad(p, "expected '{'");
    while (!eat(p, '}')) {
        char key[32];
        if (str(p, key, sizeof key)) return KN_ERR_FORMAT;
        if (!eat(p, ':')) return bad(p, "expected ':'");
        ws(p);
        if (strcmp(key, "descr") == 0) {
            if (p->i < p->n && (p->s[p->i] == '[' || p->s[p->i] == '{'))
                return kn__err(KN_ERR_UNSUPPORTED, "%s: structured NumPy dtypes are not supported",
                               p->path);
            if (str(p, h->descr, sizeof h->descr)) return KN_ERR_FORMAT;
            have_descr = true;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (p->n - p->i >= 4 && memcmp(p->s + p->i, "True", 4) == 0) {
                h->fortran = true;
                p->i += 4;
            } else if (p->n - p->i >= 5 && memcmp(p->s + p->i, "False", 5) == 0) {
                p->i += 5;
            } else {
                return bad(p, "fortran_order must be True or False");
            }
            have_order = true;
        } else if (strcmp(key, "shape") == 0) {
            if (!eat(p, '(')) return bad(p, "shape must be a tuple");
            h->ndim = 0;
            while (!eat(p, ')')) {
                ws(p);
                if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
                    return bad(p, "shape must hold non-negative integers");
                int64_t v = 0;
                while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
                    if (v > (INT64_MAX - 9) / 10) return bad(p, "dimension too large");
                    v = v * 10 + (p->s[p->i++] - '0');
                }
                if (p->i < p->n && p->s[p->i] == 'L') p->i++; /* Python 2 long */
                if (h->ndim == KN_MAX_DIMS)
                    return kn__err(KN_ERR_UNSUPPORTED, "%s: array has more than %d dimensions",
                                   p->path, KN_MAX_DIMS);
                h->shape[h->ndim++] = v;
                if (!eat(p, ',')) {
                    if (!eat(p, ')')) return bad(p, "expected ',' or ')' in shape");
                    break;
                }
            }
            have_shape = true;
        } else {
            return bad(p, "unknown key");
        }
        if (!eat(p, ',')) {
            if (!eat(p, '}')) return bad(p, "expected ',' or '}'");
            break;
        }
    }
    if (!have_descr || !have_order || !have_shape)
        return bad(p, "descr, fortran_order and shape are all required");
    return KN_OK;
}

/* Row-major copy of a column-major (Fortran) array. */
static void from_fortran(unsigned char *dst, const unsigned char *src, int ndim,
                         const int64_t *shape, size_t es, int64_t numel) {
    int64_t fstride[KN_MAX_DIMS], idx[KN_MAX_DIMS] = {0};
    for (int d = 0; d < ndim; d++) fstride[d] = d ? fstride[d - 1] * shape[d - 1] : 1;
    for (int64_t k = 0; k < numel; k++) {
        int64_t off = 0;
        for (int d = 0; d < ndim; d++) off += idx[d] * fstride[d];
        memcpy(dst + (size_t)k * es, src + (size_t)off * es, es);
        for (int d = ndim - 1; d >= 0; d--) {
            if (++idx[d] < shape[d]) break;
            idx[d] = 0;
        }
    }
}

kn_tensor *kn__npy_parse(const void *data, size_t len, const char *path, kn_device dev) {
    const unsigned char *b = data;
    if (!path) path = "<npy>";
    if (!b || len < 10 || memcmp(b, magic, 6) != 0) {
        kn__err(KN_ERR_FORMAT, "%s: not a .npy file (it does not start with \\x93NUMPY)", path);
        return NULL;
    }
    int major = b[6], minor = b[7];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        hstart = 10;
    } else if ((major == 2 || major == 3) && len >= 12) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        hstart = 12;
    } else {
        kn__err(KN_ERR_UNSUPPORTED, "%s: unsupported .npy format version %d.%d", path, major,
                minor);
        return NULL;
    }
    if (hlen > len - hstart) {
        kn__err(KN_ERR_FORMAT, "%s: truncated: header says %zu bytes, file has %zu", path, hlen,
                len);
        return NULL;
    }
    npy_header h = {0};
    hparser p = {(const char *)b + hstart, hlen, 0, path};
    if (parse_header(&p, &h) != KN_OK) return NULL;

    const char *d = h.descr;
    size_t k = 0;
    char order = d[0];
    if (order == '<' || order == '>' || order == '|' || order == '=') d++;
    else order = '=';
    /* The item size: one or two digits, nothing after them. */
    int size = -1;
    if (d[0] && d[1] >= '1' && d[1] <= '9') {
        size = d[1] - '0';
        if (d[2] >= '0' && d[2] <= '9') size = d[3] ? -1 : size * 10 + (d[2] - '0');
        else if (d[2]) size = -1;
    }
    while (k < N_TYPES && !(d[0] == npy_types[k].kind && size == npy_types[k].size)) k++;
    if (k == N_TYPES) {
        /* Say what the array is when numpy has a name for it. */
        const char *what = d[0] == 'c'   ? " (complex)"
                           : d[0] == 'O' ? " (Python objects, stored pickled)"
                           : d[0] == 'U' || d[0] == 'S' ? " (strings)"
                           : d[0] == 'M' || d[0] == 'm' ? " (datetimes)"
                           : d[0] == 'V' ? " (raw bytes)"
                                         : "";
        kn__err(KN_ERR_UNSUPPORTED,
                "%s: NumPy dtype '%s'%s is not supported (kiln reads <f2, <f4, <f8, <i4, <i8, |u1, "
                "|b1, <c8, <c16 in either byte order)",
                path, h.descr, what);
        return NULL;
    }
    const kn_dtype dt = npy_types[k].dtype;
    const size_t es = (size_t)npy_types[k].size;
    bool swap = es > 1 && ((order == '<' && !kn__host_little_endian()) ||
                           (order == '>' && kn__host_little_endian()));

    /* Bound the product of the non-zero dims, so that even an empty array
     * cannot overflow stride arithmetic. */
    uint64_t numel = 1;
    bool empty = false;
    for (int i = 0; i < h.ndim; i++) {
        uint64_t s = (uint64_t)h.shape[i];
        if (!s) {
            empty = true;
        } else if (numel > KN__MAX_ELEMENTS / s) {
            kn__err(KN_ERR_FORMAT, "%s: shape has too many elements", path);
            return NULL;
        } else {
            numel *= s;
        }
    }
    if (empty) numel = 0;
    size_t nbytes = (size_t)(numel * es), avail = len - hstart - hlen;
    if (nbytes > avail) {
        kn__err(KN_ERR_FORMAT,
                "%s: truncated: shape and dtype '%s' need %zu bytes of data, file has %zu", path,
                h.descr, nbytes, avail);
        return NULL;
    }
    /* Bytes after the array are ignored, as numpy.load does. */
    const unsigned char *src = b + hstart + hlen;
    unsigned char *tmp = NULL;
    if (nbytes && (swap || h.fortran || dt == KN_BOOL)) {
        if (!(tmp = malloc(nbytes))) {
            kn__err(KN_ERR_OOM, "%s: out of memory", path);
            return NULL;
        }
        if (h.fortran && h.ndim > 1) from_fortran(tmp, src, h.ndim, h.shape, es, (int64_t)numel);
        else memcpy(tmp, src, nbytes);
        /* A complex element is two floats: each part is swapped on its own. */
        const size_t unit = kn_dtype_size(kn_dtype_real(dt));
        if (swap) kn__byteswap(tmp, nbytes / unit, unit);
        if (dt == KN_BOOL)
            for (size_t i = 0; i < nbytes; i++) tmp[i] = tmp[i] != 0;
        src = tmp;
    }
    kn_tensor *t = kn_from_data(src, dt, h.ndim, h.shape, dev);
    free(tmp);
    return t;
}

kn_tensor *kn_npy_load(const char *path, kn_device dev) {
    kn__file f;
    if (kn__file_read(path, &f) != KN_OK) return NULL;
    kn_tensor *t = kn__npy_parse(f.data, f.len, path, dev);
    kn__file_release(&f);
    return t;
}
