/* kiln — IDX files (MNIST, Fashion-MNIST): two zero bytes, a type code, the
 * number of dims, each dim as a big-endian uint32, then the elements in
 * big-endian row-major order. Files starting with gzip's magic are inflated
 * through zlib when the build has it.
 *
 * Nothing sized by the header is allocated before the header is checked
 * against the file: a plain file must hold exactly the declared bytes; a
 * gzip file may declare at most what deflate can produce from its size
 * (1032:1), and is inflated into a buffer of the declared size, one byte of
 * more output being an error, so neither a lying header nor a gzip bomb
 * makes kiln allocate more than the file can justify. */
#include "io/atomic_file.h"
#include "io/idx_internal.h"
#include "kiln/vision.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef KILN_HAVE_ZLIB
#include <zlib.h>
#endif

uint64_t kn__idx_limit = (uint64_t)16 << 30;

typedef struct {
    uint8_t code;
    const char *name;
    size_t size;  /* bytes per element in the file */
    kn_dtype dt;  /* what kiln gives */
} idx_type;

static const idx_type types[] = {
    {0x08, "uint8", 1, KN_U8},   {0x09, "int8", 1, KN_I32},    {0x0B, "int16", 2, KN_I32},
    {0x0C, "int32", 4, KN_I32},  {0x0D, "float32", 4, KN_F32}, {0x0E, "float64", 8, KN_F64},
};

static const idx_type *type_of(uint8_t code) {
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (types[i].code == code) return &types[i];
    return NULL;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The header's first 4 bytes: the type and dim count checked. */
static kn_status check_magic(const unsigned char *h, const char *name, const idx_type **t) {
    if (h[0] || h[1])
        return kn__err(KN_ERR_FORMAT,
                       "%s: not an IDX file (it starts 0x%02x%02x%02x%02x; IDX starts with two zero bytes, a type "
                       "code and the number of dims)", name, h[0], h[1], h[2], h[3]);
    if (!(*t = type_of(h[2])))
        return kn__err(KN_ERR_FORMAT,
                       "%s: unknown IDX type code 0x%02x (known: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, "
                       "0x0D float32, 0x0E float64)", name, h[2]);
    if (h[3] < 1 || h[3] > KN_MAX_DIMS)
        return kn__err(KN_ERR_FORMAT, "%s: the IDX header has %d dims (1 to %d are supported)", name, h[3],
                       KN_MAX_DIMS);
    return KN_OK;
}

/* The shape from the dims bytes, and the data's size in the file (checked
 * against kn__idx_limit, without overflow). */
static kn_status read_shape(const unsigned char *d, int nd, const idx_type *t, const char *name, int64_t *shape,
                            uint64_t *nbytes) {
    uint64_t n = t->size;
    bool big = false;
    for (int k = 0; k < nd; k++) {
        shape[k] = be32(d + 4 * k);
        if (shape[k] && n > kn__idx_limit / (uint64_t)shape[k]) big = true;
        else n *= (uint64_t)shape[k];
    }
    bool empty = false;
    for (int k = 0; k < nd; k++) empty |= shape[k] == 0;
    if (big && !empty) {
        char s[160];
        return kn__err(KN_ERR_FORMAT, "%s: the IDX header's shape %s of %s is more than %llu bytes (wrong sizes?)",
                       name, kn__shape_str(nd, shape, s, sizeof s), t->name, (unsigned long long)kn__idx_limit);
    }
    *nbytes = empty ? 0 : n;
    return KN_OK;
}

/* File bytes (big-endian) to a host tensor of the kiln dtype, then to dev. */
static kn_tensor *decode(const unsigned char *src, uint64_t nbytes, const idx_type *t, int nd, const int64_t *shape,
                         const char *name, kn_device dev) {
    if (t->dt == KN_U8) return kn_from_data(src, KN_U8, nd, shape, dev);
    uint64_t n = nbytes / t->size;
    size_t osz = kn_dtype_size(t->dt);
    unsigned char *buf = malloc((size_t)(n ? n : 1) * osz);
    if (!buf) return kn__err(KN_ERR_OOM, "%s: out of memory (%llu bytes)", name, (unsigned long long)(n * osz)), NULL;
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *p = src + i * t->size;
        switch (t->code) {
        case 0x09: ((int32_t *)buf)[i] = (int8_t)p[0]; break;
        case 0x0B: ((int32_t *)buf)[i] = (int16_t)(uint16_t)(p[0] << 8 | p[1]); break;
        case 0x0C: ((int32_t *)buf)[i] = (int32_t)be32(p); break;
        case 0x0D: {
            uint32_t u = be32(p);
            memcpy(buf + i * 4, &u, 4);
            break;
        }
        default: {
            uint64_t u = (uint64_t)be32(p) << 32 | be32(p + 4);
            memcpy(buf + i * 8, &u, 8);
            break;
        }
        }
    }
    kn_tensor *r = kn_from_data(buf, t->dt, nd, shape, dev);
    free(buf);
    return r;
}

static kn_tensor *parse_plain(const unsigned char *p, size_t len, const char *name, kn_device dev) {
    if (len < 4)
        return kn__err(KN_ERR_FORMAT, "%s: truncated: %zu bytes, an IDX header needs 4 at least", name, len), NULL;
    const idx_type *t = NULL;
    if (check_magic(p, name, &t) != KN_OK) return NULL;
    int nd = p[3];
    size_t head = 4 + 4 * (size_t)nd;
    if (len < head)
        return kn__err(KN_ERR_FORMAT, "%s: truncated: the header of %d dims needs %zu bytes, the file has %zu", name,
                       nd, head, len), NULL;
    int64_t shape[KN_MAX_DIMS];
    uint64_t nbytes;
    if (read_shape(p + 4, nd, t, name, shape, &nbytes) != KN_OK) return NULL;
    char s[160];
    if (len - head < nbytes)
        return kn__err(KN_ERR_FORMAT, "%s: truncated: the shape %s of %s needs %llu bytes of data, the file holds %zu",
                       name, kn__shape_str(nd, shape, s, sizeof s), t->name, (unsigned long long)nbytes, len - head),
               NULL;
    if (len - head > nbytes)
        return kn__err(KN_ERR_FORMAT, "%s: %llu bytes after the data of shape %s (wrong sizes in the header?)", name,
                       (unsigned long long)(len - head - nbytes), kn__shape_str(nd, shape, s, sizeof s)), NULL;
    return decode(p + head, nbytes, t, nd, shape, name, dev);
}

#ifdef KILN_HAVE_ZLIB
/* Inflates exactly n bytes into dst; false with an error when the stream
 * ends first or is corrupt. */
static bool inflate_exact(z_stream *z, size_t *in_left, unsigned char *dst, uint64_t n, const char *name,
                          bool *ended) {
    const uInt chunk = 1u << 30; /* zlib's lengths are 32-bit */
    if (*ended && n)
        return kn__err(KN_ERR_FORMAT, "%s: truncated: the gzip data ends before the sizes in the IDX header", name),
               false;
    z->next_out = dst;
    while (n) {
        z->avail_out = n < chunk ? (uInt)n : chunk;
        uInt asked = z->avail_out;
        if (!z->avail_in && *in_left) {
            z->avail_in = *in_left < chunk ? (uInt)*in_left : chunk;
            *in_left -= z->avail_in;
        }
        int r = inflate(z, Z_NO_FLUSH);
        n -= asked - z->avail_out;
        if (r == Z_STREAM_END) {
            *ended = true;
            if (n) return kn__err(KN_ERR_FORMAT, "%s: truncated: the gzip data ends %llu bytes short of the sizes in "
                                  "the IDX header", name, (unsigned long long)n), false;
            return true;
        }
        if (r == Z_OK) continue;
        if (r == Z_BUF_ERROR && !z->avail_in && !*in_left)
            return kn__err(KN_ERR_FORMAT, "%s: truncated: the gzip stream ends early", name), false;
        if (r == Z_MEM_ERROR) return kn__err(KN_ERR_OOM, "%s: out of memory inflating", name), false;
        return kn__err(KN_ERR_FORMAT, "%s: corrupt gzip data (%s)", name, z->msg ? z->msg : "zlib error"), false;
    }
    return true;
}

static kn_tensor *parse_gzip(const unsigned char *p, size_t len, const char *name, kn_device dev) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 16) != Z_OK) return kn__err(KN_ERR_OOM, "%s: out of memory", name), NULL;
    z.next_in = (Bytef *)p;
    size_t in_left = len;
    bool ended = false;
    unsigned char head[4 + 4 * KN_MAX_DIMS], *data = NULL;
    const idx_type *t = NULL;
    int64_t shape[KN_MAX_DIMS];
    uint64_t nbytes = 0;
    kn_tensor *r = NULL;
    char s[160];
    if (!inflate_exact(&z, &in_left, head, 4, name, &ended) || check_magic(head, name, &t) != KN_OK) goto done;
    int nd = head[3];
    if (!inflate_exact(&z, &in_left, head + 4, 4 * (uint64_t)nd, name, &ended) ||
        read_shape(head + 4, nd, t, name, shape, &nbytes) != KN_OK)
        goto done;
    /* Deflate makes at most 1032 bytes of each input byte: a header that
     * claims more than the file can give is refused before any allocation. */
    if (nbytes / 1032 > len) {
        kn__err(KN_ERR_FORMAT, "%s: the IDX header's shape %s claims %llu bytes, more than a %zu-byte gzip file can "
                "hold (wrong sizes, or a gzip bomb)", name, kn__shape_str(nd, shape, s, sizeof s),
                (unsigned long long)nbytes, len);
        goto done;
    }
    if (!(data = malloc((size_t)(nbytes ? nbytes : 1)))) {
        kn__err(KN_ERR_OOM, "%s: out of memory (%llu bytes)", name, (unsigned long long)nbytes);
        goto done;
    }
    if (!inflate_exact(&z, &in_left, data, nbytes, name, &ended)) goto done;
    if (!ended) { /* the stream must end here: one byte more is an error (and all that is inflated) */
        unsigned char extra;
        int zr;
        z.next_out = &extra;
        z.avail_out = 1;
        do {
            if (!z.avail_in && in_left) {
                z.avail_in = in_left < (1u << 30) ? (uInt)in_left : (1u << 30);
                in_left -= z.avail_in;
            }
            zr = inflate(&z, Z_NO_FLUSH);
        } while (zr == Z_OK && z.avail_out && (z.avail_in || in_left));
        if (!z.avail_out) {
            kn__err(KN_ERR_FORMAT, "%s: the gzip data holds more than the %llu bytes of shape %s (wrong sizes in the "
                    "header, or a gzip bomb)", name, (unsigned long long)nbytes, kn__shape_str(nd, shape, s, sizeof s));
            goto done;
        }
        if (zr != Z_STREAM_END) {
            if (zr == Z_OK || zr == Z_BUF_ERROR) kn__err(KN_ERR_FORMAT, "%s: truncated: the gzip stream ends early", name);
            else kn__err(KN_ERR_FORMAT, "%s: corrupt gzip data (%s)", name, z.msg ? z.msg : "zlib error");
            goto done;
        }
    }
    if (z.avail_in || in_left) {
        kn__err(KN_ERR_FORMAT, "%s: %zu bytes after the gzip stream", name, (size_t)z.avail_in + in_left);
        goto done;
    }
    r = decode(data, nbytes, t, nd, shape, name, dev);
done:
    inflateEnd(&z);
    free(data);
    return r;
}
#endif

kn_tensor *kn__idx_parse(const void *data, size_t len, const char *name, kn_device dev) {
    const unsigned char *p = data;
    if (len >= 2 && p[0] == 0x1f && p[1] == 0x8b) {
#ifdef KILN_HAVE_ZLIB
        return parse_gzip(p, len, name, dev);
#else
        kn__err(KN_ERR_UNSUPPORTED, "%s: gzip-compressed, and this kiln was built without zlib (gunzip it first)", name);
        return NULL;
#endif
    }
    return parse_plain(p, len, name, dev);
}

kn_tensor *kn_idx_load(const char *path, kn_device dev) {
    if (!path) return kn__err_null("idx_load"), NULL;
    kn__file f;
    if (kn__file_read(path, &f) != KN_OK) return NULL;
    kn_tensor *t = kn__idx_parse(f.data, f.len, path, dev);
    kn__file_release(&f);
    return t;
}
