/* kiln — NumPy .npz: a ZIP archive of NAME.npy members (numpy.savez stores
 * them, numpy.savez_compressed deflates them).
 *
 * Reading holds the whole archive in memory and trusts only the central
 * directory, after checking all of it before anything sized by it is
 * allocated: the end record(s) and the directory inside the file, the member
 * count against the directory's size, every name (no directories, "..",
 * duplicates, non-.npy members), each local header against its directory
 * entry, every member's bytes before the directory and not overlapping
 * another's, stored sizes equal, deflated sizes within what deflate can
 * produce (1032:1). A member is inflated into a buffer of its declared size
 * (more output is an error, so no zip bomb) and its CRC-32 checked before
 * the .npy inside is parsed. ZIP64 sizes, offsets and end records are read.
 *
 * Writing lays the archive out in memory (stored members point at the
 * tensors' own bytes) and writes it with kn__atomic_write; ZIP64 fields are
 * written only where a value needs them. zlib is optional: without it,
 * stored archives are read and written and deflated ones are refused. */
#include "io/atomic_file.h"
#include "io/npy_internal.h"
#include "io/npz_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef KILN_HAVE_ZLIB
#include <zlib.h>
#endif

uint64_t kn__npz_zip64_limit = 0x7FFFFFFF;

/* ---- CRC-32 ------------------------------------------------------------------- */

/* The table as a constant expression: no run-time initialisation to race on. */
#define CRC_STEP(c) (((c) >> 1) ^ (0xEDB88320u & (0u - ((c)&1u))))
#define CRC_ENTRY(c) \
    CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(CRC_STEP(c))))))))
#define CRC_R4(n) CRC_ENTRY(n), CRC_ENTRY(n + 1), CRC_ENTRY(n + 2), CRC_ENTRY(n + 3)
#define CRC_R16(n) CRC_R4(n), CRC_R4(n + 4), CRC_R4(n + 8), CRC_R4(n + 12)
#define CRC_R64(n) CRC_R16(n), CRC_R16(n + 16), CRC_R16(n + 32), CRC_R16(n + 48)
static const uint32_t crc_table[256] = {CRC_R64(0u), CRC_R64(64u), CRC_R64(128u),
                                        CRC_R64(192u)};

uint32_t kn__crc32(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* zlib's (several times faster) when present; its length is 32-bit. */
static uint32_t crc_update(uint32_t crc, const void *data, size_t n) {
#ifdef KILN_HAVE_ZLIB
    const unsigned char *p = data;
    while (n) {
        size_t k = n < (1u << 30) ? n : (1u << 30);
        crc = (uint32_t)crc32(crc, p, (uInt)k);
        p += k;
        n -= k;
    }
    return crc;
#else
    return kn__crc32(crc, data, n);
#endif
}

/* ---- little-endian fields ------------------------------------------------------ */

static uint16_t rd16(const unsigned char *b) { return (uint16_t)(b[0] | b[1] << 8); }
static uint32_t rd32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static uint64_t rd64(const unsigned char *b) { return rd32(b) | (uint64_t)rd32(b + 4) << 32; }
static unsigned char *wr16(unsigned char *b, uint64_t v) {
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    return b + 2;
}
static unsigned char *wr32(unsigned char *b, uint64_t v) { return wr16(wr16(b, v), v >> 16); }
static unsigned char *wr64(unsigned char *b, uint64_t v) { return wr32(wr32(b, v), v >> 32); }

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_END 0x06054b50u
#define SIG_END64 0x06064b50u
#define SIG_LOCATOR64 0x07064b50u
#define LOCAL_SIZE 30
#define CENTRAL_SIZE 46
#define END_SIZE 22
#define END64_SIZE 56
#define LOCATOR64_SIZE 20
#define MAX_RATIO 1032 /* deflate's largest expansion: 258 bytes from 2 bits */

/* ---- the archive ------------------------------------------------------------------ */

typedef struct {
    const char *name; /* without ".npy" */
    uint16_t method;
    uint32_t crc;
    uint64_t csize, usize, local, data; /* data: offset of the member's bytes */
} npz_entry;

struct kn_npz {
    char *path;
    kn__file file;
    npz_entry *e; /* in central directory order, as numpy's NpzFile.files */
    int n;
    char *names;
    const npz_entry **by_name;
};

void kn_npz_close(kn_npz *f) {
    if (!f) return;
    kn__file_release(&f->file);
    free(f->e);
    free(f->names);
    free((void *)f->by_name);
    free(f->path);
    free(f);
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const npz_entry *const *)a)->name, (*(const npz_entry *const *)b)->name);
}
static int cmp_by_local(const void *a, const void *b) {
    const npz_entry *x = *(const npz_entry *const *)a, *y = *(const npz_entry *const *)b;
    return x->local < y->local ? -1 : x->local > y->local;
}

/* Names kiln reads and writes are NAME.npy, NAME UTF-8 without NULs or
 * control characters (else it is not even shown in messages), not empty,
 * "." or "..", and without a directory part. Each returns a reason, or NULL. */
static const char *unshowable(const char *s, size_t n) {
    if (memchr(s, '\0', n)) return "has a name that holds a NUL byte";
    if (!kn_utf8_valid(s, n)) return "has a name that is not valid UTF-8";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return "has a name with control characters";
    return NULL;
}
static const char *stem_problem(const char *s, size_t n) {
    if (memchr(s, '/', n) || memchr(s, '\\', n))
        return "is in a directory (a .npz holds NAME.npy members only)";
    if (!n || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return "is not a valid array name";
    return NULL;
}

/* Errors about member i: its name when it can be shown, else its index. */
static int member_err(kn_status s, const char *path, int i, const char *name, const char *what) {
    if (name) return kn__err(s, "%s: member '%.200s' %s", path, name, what);
    return kn__err(s, "%s: member %d %s", path, i, what);
}

/* The central directory entry at p (len bytes left in the directory) into e.
 * *used: its size. full: the member's name with ".npy", into f->names. */
static int parse_central(kn_npz *f, int i, const unsigned char *p, uint64_t left, uint64_t cd_off,
                         char *full, uint64_t *used) {
    const char *path = f->path;
    npz_entry *e = &f->e[i];
    char why[160];
    if (left < CENTRAL_SIZE || rd32(p) != SIG_CENTRAL)
        return kn__err(KN_ERR_FORMAT, "%s: central directory entry %d is damaged", path, i);
    const uint16_t flags = rd16(p + 8), nlen = rd16(p + 28), xlen = rd16(p + 30),
                   clen = rd16(p + 32);
    uint32_t disk = rd16(p + 34);
    e->method = rd16(p + 10);
    e->crc = rd32(p + 16);
    e->csize = rd32(p + 20);
    e->usize = rd32(p + 24);
    e->local = rd32(p + 42);
    *used = (uint64_t)CENTRAL_SIZE + nlen + xlen + clen;
    if (*used > left)
        return kn__err(KN_ERR_FORMAT, "%s: central directory entry %d runs past its end", path, i);
    const char *raw = (const char *)p + CENTRAL_SIZE;
    const char *bad = unshowable(raw, nlen);
    if (bad) return member_err(KN_ERR_FORMAT, path, i, NULL, bad);
    memcpy(full, raw, nlen);
    full[nlen] = '\0';
    if (nlen < 4 || memcmp(full + nlen - 4, ".npy", 4) != 0)
        return member_err(KN_ERR_FORMAT, path, i, full,
                          "is not a .npy array (a .npz holds NAME.npy members only)");
    if ((bad = stem_problem(full, nlen - 4))) return member_err(KN_ERR_FORMAT, path, i, full, bad);

    /* ZIP64 extra field: 64-bit values for the fields that read all ones. */
    const unsigned char *x = p + CENTRAL_SIZE + nlen, *xend = x + xlen;
    while (xend - x >= 4) {
        uint16_t id = rd16(x), sz = rd16(x + 2);
        if (sz > xend - x - 4)
            return member_err(KN_ERR_FORMAT, path, i, full, "has damaged extra fields");
        if (id == 0x0001) {
            const unsigned char *q = x + 4, *qend = q + sz;
            uint64_t *fields[3] = {&e->usize, &e->csize, &e->local};
            for (int k = 0; k < 3; k++) {
                if (*fields[k] != 0xFFFFFFFFu) continue;
                if (qend - q < 8)
                    return member_err(KN_ERR_FORMAT, path, i, full,
                                      "has a ZIP64 extra field too short for its sizes");
                *fields[k] = rd64(q);
                q += 8;
            }
            if (disk == 0xFFFF && qend - q >= 4) disk = rd32(q);
        }
        x += 4 + sz;
    }
    if (disk != 0)
        return member_err(KN_ERR_UNSUPPORTED, path, i, full,
                          "is on another disk (split archives are not supported)");
    if (flags & 0x41) return member_err(KN_ERR_UNSUPPORTED, path, i, full, "is encrypted");
    if (e->method != 0 && e->method != 8) {
        snprintf(why, sizeof why,
                 "uses ZIP compression method %u (kiln reads stored (0) and deflate (8))",
                 e->method);
        return member_err(KN_ERR_UNSUPPORTED, path, i, full, why);
    }
    if (e->method == 0 && e->csize != e->usize) {
        snprintf(why, sizeof why, "is stored uncompressed, yet its sizes differ (%llu and %llu)",
                 (unsigned long long)e->csize, (unsigned long long)e->usize);
        return member_err(KN_ERR_FORMAT, path, i, full, why);
    }
    /* csize is checked against the file below; bound it first so that the
     * product cannot overflow. */
    if (e->csize > cd_off || (e->method == 8 && e->usize / MAX_RATIO > e->csize)) {
        snprintf(why, sizeof why,
                 "claims %llu bytes from %llu compressed, more than deflate can produce",
                 (unsigned long long)e->usize, (unsigned long long)e->csize);
        if (e->csize > cd_off)
            snprintf(why, sizeof why, "claims %llu compressed bytes, more than the archive holds",
                     (unsigned long long)e->csize);
        return member_err(KN_ERR_FORMAT, path, i, full, why);
    }

    /* The local header: before the directory, naming the same file. */
    const unsigned char *b = f->file.data;
    if (e->local > cd_off || cd_off - e->local < LOCAL_SIZE || rd32(b + e->local) != SIG_LOCAL) {
        snprintf(why, sizeof why, "has no local header at offset %llu",
                 (unsigned long long)e->local);
        return member_err(KN_ERR_FORMAT, path, i, full, why);
    }
    const unsigned char *l = b + e->local;
    const uint64_t lnlen = rd16(l + 26), lxlen = rd16(l + 28);
    if (rd16(l + 8) != e->method)
        return member_err(KN_ERR_FORMAT, path, i, full,
                          "has a local header that disagrees with the central directory on "
                          "the compression method");
    e->data = e->local + LOCAL_SIZE + lnlen + lxlen;
    if (e->data > cd_off || e->csize > cd_off - e->data) {
        snprintf(why, sizeof why,
                 "has %llu bytes at offset %llu that run past the central directory (truncated or "
                 "damaged archive)",
                 (unsigned long long)e->csize, (unsigned long long)e->data);
        return member_err(KN_ERR_FORMAT, path, i, full, why);
    }
    if (lnlen != nlen || memcmp(l + LOCAL_SIZE, raw, nlen) != 0)
        return member_err(KN_ERR_FORMAT, path, i, full,
                          "has a local header that names another file");
    full[nlen - 4] = '\0'; /* the array's name: without ".npy" */
    e->name = full;
    return KN_OK;
}

/* Takes ownership of file (released on failure). */
static kn_npz *parse_archive(kn__file file, const char *path) {
    kn_npz *f = calloc(1, sizeof *f);
    if (!f || !(f->path = malloc(strlen(path) + 1))) {
        free(f);
        kn__file_release(&file);
        kn__err(KN_ERR_OOM, "%s: out of memory", path);
        return NULL;
    }
    strcpy(f->path, path);
    f->file = file;
    const unsigned char *b = file.data;
    const size_t len = file.len;
    if (len >= 6 && memcmp(b, "\x93NUMPY", 6) == 0) {
        kn__err(KN_ERR_FORMAT, "%s: a .npy file, not a .npz archive (read it with kn_npy_load)",
                path);
        goto fail;
    }
    if (len < END_SIZE) {
        kn__err(KN_ERR_FORMAT, "%s: not a .npz file (%zu bytes, too short for a ZIP archive)",
                path, len);
        goto fail;
    }
    /* The end record: the last one whose comment fits the file. */
    size_t end = len - END_SIZE;
    for (;;) {
        if (rd32(b + end) == SIG_END && end + END_SIZE + rd16(b + end + 20) <= len) break;
        if (end == 0 || len - END_SIZE - end >= 0xFFFF) {
            kn__err(KN_ERR_FORMAT, "%s: not a .npz file (no ZIP end of central directory record)",
                    path);
            goto fail;
        }
        end--;
    }
    uint64_t disk = rd16(b + end + 4), cd_disk = rd16(b + end + 6), n_here = rd16(b + end + 8),
             count = rd16(b + end + 10), cd_size = rd32(b + end + 12),
             cd_off = rd32(b + end + 16), cd_limit = end;
    if (end >= LOCATOR64_SIZE && rd32(b + end - LOCATOR64_SIZE) == SIG_LOCATOR64) {
        const unsigned char *loc = b + end - LOCATOR64_SIZE;
        uint64_t at = rd64(loc + 8);
        if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1) {
            kn__err(KN_ERR_UNSUPPORTED, "%s: split (multi-disk) ZIP archives are not supported",
                    path);
            goto fail;
        }
        if (end - LOCATOR64_SIZE < END64_SIZE || at > end - LOCATOR64_SIZE - END64_SIZE ||
            rd32(b + at) != SIG_END64) {
            kn__err(KN_ERR_FORMAT, "%s: the ZIP64 end of central directory record is missing",
                    path);
            goto fail;
        }
        const unsigned char *z = b + at;
        disk = rd32(z + 16);
        cd_disk = rd32(z + 20);
        n_here = rd64(z + 24);
        count = rd64(z + 32);
        cd_size = rd64(z + 40);
        cd_off = rd64(z + 48);
        cd_limit = at;
    }
    if (disk || cd_disk || n_here != count) {
        kn__err(KN_ERR_UNSUPPORTED, "%s: split (multi-disk) ZIP archives are not supported", path);
        goto fail;
    }
    if (cd_off > cd_limit || cd_size > cd_limit - cd_off) {
        kn__err(KN_ERR_FORMAT,
                "%s: the central directory (%llu bytes at offset %llu) lies outside the archive "
                "(truncated?)",
                path, (unsigned long long)cd_size, (unsigned long long)cd_off);
        goto fail;
    }
    /* Every entry takes at least 46 bytes: a count the directory cannot hold
     * is refused before anything is allocated for it. */
    if (count > cd_size / CENTRAL_SIZE || count > KN__NPZ_MAX_MEMBERS) {
        kn__err(KN_ERR_FORMAT,
                "%s: the archive claims %llu members, but its central directory of %llu bytes "
                "holds at most %llu%s",
                path, (unsigned long long)count, (unsigned long long)cd_size,
                (unsigned long long)(cd_size / CENTRAL_SIZE),
                count > KN__NPZ_MAX_MEMBERS ? " (and kiln reads at most 16777216)" : "");
        goto fail;
    }
    f->e = calloc((size_t)count + 1, sizeof *f->e);
    f->by_name = calloc((size_t)count + 1, sizeof *f->by_name);
    f->names = malloc((size_t)cd_size + 1); /* each name is shorter than its entry */
    if (!f->e || !f->by_name || !f->names) {
        kn__err(KN_ERR_OOM, "%s: out of memory", path);
        goto fail;
    }
    uint64_t at = 0;
    char *names = f->names;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t used = 0;
        if (parse_central(f, (int)i, b + cd_off + at, cd_size - at, cd_off, names, &used) != KN_OK)
            goto fail;
        at += used;
        names += strlen(names) + 1;
        f->by_name[i] = &f->e[i];
        f->n++;
    }
    if (f->n > 1) {
        qsort((void *)f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_by_name);
        for (int k = 1; k < f->n; k++)
            if (!strcmp(f->by_name[k]->name, f->by_name[k - 1]->name)) {
                kn__err(KN_ERR_FORMAT, "%s: member '%.200s.npy' appears twice", path,
                        f->by_name[k]->name);
                goto fail;
            }
        /* Overlapping members (the trick of non-recursive zip bombs) are refused. */
        const npz_entry **ord = malloc((size_t)f->n * sizeof *ord);
        if (!ord) {
            kn__err(KN_ERR_OOM, "%s: out of memory", path);
            goto fail;
        }
        memcpy((void *)ord, (const void *)f->by_name, (size_t)f->n * sizeof *ord);
        qsort((void *)ord, (size_t)f->n, sizeof *ord, cmp_by_local);
        for (int k = 1; k < f->n; k++)
            if (ord[k - 1]->data + ord[k - 1]->csize > ord[k]->local) {
                kn__err(KN_ERR_FORMAT, "%s: members '%.200s.npy' and '%.200s.npy' overlap", path,
                        ord[k - 1]->name, ord[k]->name);
                free((void *)ord);
                goto fail;
            }
        free((void *)ord);
    }
    return f;
fail:
    kn_npz_close(f);
    return NULL;
}

kn_npz *kn__npz_parse(const void *data, size_t len, const char *name) {
    if (!name) name = "<npz>";
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
    return parse_archive(file, name);
}

kn_npz *kn_npz_open(const char *path) {
    if (!path) return kn__err(KN_ERR_NULL, "kn_npz_open: path is NULL"), NULL;
    kn__file file;
    if (kn__file_read(path, &file) != KN_OK) return NULL;
    return parse_archive(file, path);
}

int kn_npz_count(const kn_npz *f) {
    if (!f) return kn__err_null("kn_npz_count"), -1;
    return f->n;
}

const char *kn_npz_name(const kn_npz *f, int i) {
    if (!f) return kn__err_null("kn_npz_name"), NULL;
    if (i < 0 || i >= f->n) {
        kn__err(KN_ERR_INVALID, "%s: array index %d out of range [0, %d)", f->path, i, f->n);
        return NULL;
    }
    return f->e[i].name;
}

static const npz_entry *find(const kn_npz *f, const char *name) {
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

#ifdef KILN_HAVE_ZLIB
/* Inflates exactly usize bytes into dst (which holds usize + 1, so that more
 * output is seen and refused). */
static kn_status inflate_member(const unsigned char *src, uint64_t csize, unsigned char *dst,
                                uint64_t usize, const char *what) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK) return kn__err(KN_ERR_OOM, "%s: out of memory", what);
    uint64_t in_left = csize, out_left = usize + 1;
    const uInt chunk = 1u << 30;
    z.next_in = (Bytef *)src;
    z.next_out = dst;
    kn_status s = KN_OK;
    for (;;) {
        if (!z.avail_in && in_left) {
            z.avail_in = in_left < chunk ? (uInt)in_left : chunk;
            in_left -= z.avail_in;
        }
        if (!z.avail_out && out_left) {
            z.avail_out = out_left < chunk ? (uInt)out_left : chunk;
            out_left -= z.avail_out;
        }
        int r = inflate(&z, Z_NO_FLUSH);
        if (r == Z_STREAM_END) break;
        if (r == Z_OK) continue;
        if (r == Z_BUF_ERROR && !z.avail_out && !out_left) break; /* too long: below */
        if (r == Z_BUF_ERROR && !z.avail_in && !in_left)
            s = kn__err(KN_ERR_FORMAT, "%s: the deflate data ends early (truncated archive?)",
                        what);
        else if (r == Z_MEM_ERROR) s = kn__err(KN_ERR_OOM, "%s: out of memory inflating", what);
        else
            s = kn__err(KN_ERR_FORMAT, "%s: corrupt deflate data (%s)", what,
                        z.msg ? z.msg : "zlib error");
        break;
    }
    uint64_t produced = usize + 1 - out_left - z.avail_out;
    inflateEnd(&z);
    if (s != KN_OK) return s;
    if (produced != usize)
        return kn__err(KN_ERR_FORMAT, "%s: inflates to %s bytes than the %llu declared", what,
                       produced > usize ? "more" : "fewer", (unsigned long long)usize);
    return KN_OK;
}
#endif

kn_tensor *kn_npz_get(const kn_npz *f, const char *name, kn_device dev) {
    if (!f || !name) return kn__err_null("kn_npz_get"), NULL;
    const npz_entry *e = find(f, name);
    size_t nl = strlen(name);
    if (!e && nl > 4 && !strcmp(name + nl - 4, ".npy")) { /* "x.npy" too, as numpy's NpzFile */
        char *stem = malloc(nl - 3);
        if (stem) {
            memcpy(stem, name, nl - 4);
            stem[nl - 4] = '\0';
            e = find(f, stem);
            free(stem);
        }
    }
    if (!e) {
        kn__err(KN_ERR_INVALID, "%s: no array named '%.200s'", f->path, name);
        return NULL;
    }
    char *what = malloc(strlen(f->path) + strlen(e->name) + 32);
    if (!what) return kn__err(KN_ERR_OOM, "%s: out of memory", f->path), NULL;
    sprintf(what, "%s: member '%s.npy'", f->path, e->name);
    const unsigned char *src = f->file.data + e->data;
    unsigned char *buf = NULL;
    kn_tensor *t = NULL;
    if (e->method == 8) {
#ifdef KILN_HAVE_ZLIB
        if (!(buf = malloc((size_t)e->usize + 1))) {
            kn__err(KN_ERR_OOM, "%s: out of memory (%llu bytes)", what,
                    (unsigned long long)e->usize);
            goto done;
        }
        if (inflate_member(src, e->csize, buf, e->usize, what) != KN_OK) goto done;
        src = buf;
#else
        kn__err(KN_ERR_UNSUPPORTED,
                "%s: deflate-compressed, and this kiln was built without zlib (only stored "
                "archives, numpy.savez's, can be read)",
                what);
        goto done;
#endif
    }
    uint32_t crc = crc_update(0, src, (size_t)e->usize);
    if (crc != e->crc) {
        kn__err(KN_ERR_FORMAT,
                "%s: CRC-32 mismatch (0x%08x in the archive, 0x%08x computed): the archive is "
                "damaged",
                what, (unsigned)e->crc, (unsigned)crc);
        goto done;
    }
    t = kn__npy_parse(src, (size_t)e->usize, what, dev);
done:
    free(buf);
    free(what);
    return t;
}

/* ---- writing --------------------------------------------------------------------- */

typedef struct {
    kn__npy_bytes npy;
    unsigned char *z; /* deflated head + data, when compressing */
    unsigned char *local; /* header, name, ZIP64 extra */
    size_t local_len;
    uint64_t usize, csize, offset;
    uint32_t crc;
} npz_out;

#ifdef KILN_HAVE_ZLIB
static kn_status deflate_member(npz_out *m, const char *path, const char *name) {
    z_stream z;
    memset(&z, 0, sizeof z);
    /* Level and raw stream as Python's zipfile (numpy.savez_compressed). */
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return kn__err(KN_ERR_OOM, "%s: out of memory compressing '%s'", path, name);
    uint64_t cap = (uint64_t)deflateBound(&z, (uLong)m->usize) + 64, done = 0;
    if (!(m->z = malloc((size_t)cap))) {
        deflateEnd(&z);
        return kn__err(KN_ERR_OOM, "%s: out of memory compressing '%s'", path, name);
    }
    const unsigned char *seg[2] = {m->npy.head, m->npy.data};
    uint64_t seg_len[2] = {m->npy.head_len, m->npy.nbytes};
    const uInt chunk = 1u << 30; /* zlib's lengths are 32-bit */
    for (int s = 0; s < 2; s++) {
        const unsigned char *p = seg[s];
        uint64_t left = seg_len[s];
        do {
            uInt k = left < chunk ? (uInt)left : chunk;
            z.next_in = (Bytef *)p;
            z.avail_in = k;
            if (k) p += k; /* an empty tensor's data is NULL: no offset, even 0, on it */
            left -= k;
            const int flush = s == 1 && !left ? Z_FINISH : Z_NO_FLUSH;
            int r;
            do {
                if (cap - done < 64) { /* never within deflateBound; grow rather than fail */
                    unsigned char *g = realloc(m->z, (size_t)(cap * 2));
                    if (!g) {
                        deflateEnd(&z);
                        return kn__err(KN_ERR_OOM, "%s: out of memory compressing '%s'", path,
                                       name);
                    }
                    m->z = g;
                    cap *= 2;
                }
                uInt room = cap - done < chunk ? (uInt)(cap - done) : chunk;
                z.next_out = m->z + done;
                z.avail_out = room;
                r = deflate(&z, flush);
                done += room - z.avail_out;
                if (r == Z_STREAM_ERROR) {
                    deflateEnd(&z);
                    return kn__err(KN_ERR_INVALID, "%s: deflate failed on '%s'", path, name);
                }
            } while (flush == Z_FINISH ? r != Z_STREAM_END : z.avail_in || !z.avail_out);
        } while (left);
    }
    deflateEnd(&z);
    m->csize = done;
    return KN_OK;
}
#endif

/* The first duplicate among n strings (sorted in place), or NULL. */
static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

kn_status kn_npz_save(const char *path, int n, const kn_named_tensor *tensors, bool compress) {
    if (!path) return kn__err(KN_ERR_NULL, "kn_npz_save: path is NULL");
    if (n < 0 || (n > 0 && !tensors))
        return kn__err(KN_ERR_INVALID, "%s: kn_npz_save: invalid tensor list", path);
    if (n > KN__NPZ_MAX_MEMBERS)
        return kn__err(KN_ERR_INVALID, "%s: %d arrays; a .npz holds at most %d; nothing written",
                       path, n, KN__NPZ_MAX_MEMBERS);
#ifndef KILN_HAVE_ZLIB
    if (compress)
        return kn__err(KN_ERR_UNSUPPORTED,
                       "%s: a compressed .npz needs zlib, and this kiln was built without zlib; "
                       "nothing written (save it uncompressed)",
                       path);
#endif
    kn_status st = KN_OK;
    npz_out *m = calloc((size_t)n + 1, sizeof *m);
    const char **names = malloc(((size_t)n + 1) * sizeof *names);
    const void **parts = calloc(3 * (size_t)n + 2, sizeof *parts);
    size_t *sizes = calloc(3 * (size_t)n + 2, sizeof *sizes);
    unsigned char *cd = NULL;
    if (!m || !names || !parts || !sizes) {
        st = kn__err(KN_ERR_OOM, "%s: out of memory", path);
        goto done;
    }
    /* Check every name and tensor before writing anything. */
    uint64_t cd_size = 0;
    for (int k = 0; k < n; k++) {
        const char *nm = tensors[k].name, *bad;
        if (!nm) {
            st = kn__err(KN_ERR_NULL, "%s: array %d has no name", path, k);
            goto done;
        }
        size_t nl = strlen(nm);
        if ((bad = unshowable(nm, nl))) {
            st = kn__err(KN_ERR_INVALID, "%s: array %d %s; nothing written", path, k, bad);
            goto done;
        }
        if ((bad = stem_problem(nm, nl)) || nl > 0xFFFF - 4) {
            st = kn__err(KN_ERR_INVALID, "%s: array name '%.200s' %s; nothing written", path, nm,
                         bad ? bad : "is too long for a ZIP member");
            goto done;
        }
        if (!tensors[k].tensor) {
            st = kn__err(KN_ERR_NULL, "%s: array '%.200s' is NULL", path, nm);
            goto done;
        }
        names[k] = nm;
        cd_size += CENTRAL_SIZE + strlen(nm) + 4 + 28;
    }
    qsort((void *)names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int k = 1; k < n; k++)
        if (!strcmp(names[k], names[k - 1])) {
            st = kn__err(KN_ERR_INVALID, "%s: array name '%.200s' is used twice", path, names[k]);
            goto done;
        }
    if (!(cd = malloc((size_t)cd_size + 1))) {
        st = kn__err(KN_ERR_OOM, "%s: out of memory", path);
        goto done;
    }

    const uint64_t lim = kn__npz_zip64_limit;
    uint64_t offset = 0;
    for (int k = 0; k < n; k++) {
        npz_out *o = &m[k];
        const char *nm = tensors[k].name;
        if ((st = kn__npy_encode(tensors[k].tensor, path, &o->npy)) != KN_OK) goto done;
        o->usize = o->npy.head_len + o->npy.nbytes;
        o->crc = crc_update(crc_update(0, o->npy.head, o->npy.head_len), o->npy.data,
                            o->npy.nbytes);
        o->csize = o->usize;
#ifdef KILN_HAVE_ZLIB
        if (compress && (st = deflate_member(o, path, nm)) != KN_OK) goto done;
#endif
        o->offset = offset;
        const bool z64 = o->usize > lim || o->csize > lim;
        const size_t nlen = strlen(nm) + 4;
        bool utf8 = false;
        for (const char *c = nm; *c; c++) utf8 |= (unsigned char)*c >= 0x80;
        if (!(o->local = malloc(LOCAL_SIZE + nlen + 20))) {
            st = kn__err(KN_ERR_OOM, "%s: out of memory", path);
            goto done;
        }
        unsigned char *p = o->local;
        p = wr32(p, SIG_LOCAL);
        p = wr16(p, z64 ? 45 : 20);            /* version needed */
        p = wr16(p, utf8 ? 0x800 : 0);         /* flags: bit 11, UTF-8 name */
        p = wr16(p, compress ? 8 : 0);         /* method */
        p = wr32(p, 0x00210000);               /* 1980-01-01 00:00: reproducible files */
        p = wr32(p, o->crc);
        p = wr32(p, z64 ? 0xFFFFFFFFu : o->csize);
        p = wr32(p, z64 ? 0xFFFFFFFFu : o->usize);
        p = wr16(p, nlen);
        p = wr16(p, z64 ? 20 : 0);
        memcpy(p, nm, nlen - 4);
        memcpy(p + nlen - 4, ".npy", 4);
        p += nlen;
        if (z64) p = wr64(wr64(wr16(wr16(p, 1), 16), o->usize), o->csize);
        o->local_len = (size_t)(p - o->local);
        parts[3 * k] = o->local;
        sizes[3 * k] = o->local_len;
        if (compress) {
            parts[3 * k + 1] = o->z;
            sizes[3 * k + 1] = (size_t)o->csize;
        } else {
            parts[3 * k + 1] = o->npy.head;
            sizes[3 * k + 1] = o->npy.head_len;
            parts[3 * k + 2] = o->npy.data;
            sizes[3 * k + 2] = o->npy.nbytes;
        }
        offset += o->local_len + o->csize;
    }

    /* The central directory, then the end record(s). */
    unsigned char *p = cd;
    for (int k = 0; k < n; k++) {
        const npz_out *o = &m[k];
        const bool big_u = o->usize > lim || o->csize > lim, big_o = o->offset > lim;
        const size_t nlen = strlen(tensors[k].name) + 4;
        const unsigned char *l = o->local;
        p = wr32(p, SIG_CENTRAL);
        p = wr16(p, 3 << 8 | (big_u || big_o ? 45 : 20)); /* made by: Unix */
        memcpy(p, l + 4, 14); /* needed, flags, method, time, date, crc */
        p += 14;
        if (big_o) wr16(p - 14, 45);
        p = wr32(p, big_u ? 0xFFFFFFFFu : o->csize);
        p = wr32(p, big_u ? 0xFFFFFFFFu : o->usize);
        p = wr16(p, nlen);
        p = wr16(p, (big_u ? 16 : 0) + (big_o ? 8 : 0) + (big_u || big_o ? 4 : 0));
        p = wr16(p, 0);                                 /* comment */
        p = wr16(p, 0);                                 /* disk */
        p = wr16(p, 0);                                 /* internal attributes */
        p = wr32(p, (uint64_t)0100644 << 16);           /* a regular file, rw-r--r-- */
        p = wr32(p, big_o ? 0xFFFFFFFFu : o->offset);
        memcpy(p, l + LOCAL_SIZE, nlen);
        p += nlen;
        if (big_u || big_o) {
            p = wr16(wr16(p, 1), (big_u ? 16 : 0) + (big_o ? 8 : 0));
            if (big_u) p = wr64(wr64(p, o->usize), o->csize);
            if (big_o) p = wr64(p, o->offset);
        }
    }
    const uint64_t cd_len = (uint64_t)(p - cd);
    unsigned char tail[END64_SIZE + LOCATOR64_SIZE + END_SIZE], *q = tail;
    const bool z64 = (uint64_t)n >= 0xFFFF || offset > lim || cd_len > lim;
    if (z64) {
        q = wr32(q, SIG_END64);
        q = wr64(q, END64_SIZE - 12);
        q = wr16(wr16(q, 3 << 8 | 45), 45);
        q = wr32(wr32(q, 0), 0);                        /* this disk, the directory's */
        q = wr64(wr64(q, (uint64_t)n), (uint64_t)n);
        q = wr64(wr64(q, cd_len), offset);
        q = wr32(q, SIG_LOCATOR64);
        q = wr32(q, 0);
        q = wr64(q, offset + cd_len);                   /* where the ZIP64 record is */
        q = wr32(q, 1);
    }
    q = wr32(q, SIG_END);
    q = wr32(q, 0);                                     /* disks */
    q = wr16(q, z64 ? 0xFFFF : (uint64_t)n);
    q = wr16(q, z64 ? 0xFFFF : (uint64_t)n);
    q = wr32(q, z64 ? 0xFFFFFFFFu : cd_len);
    q = wr32(q, z64 ? 0xFFFFFFFFu : offset);
    q = wr16(q, 0);                                     /* comment */
    parts[3 * n] = cd;
    sizes[3 * n] = (size_t)cd_len;
    parts[3 * n + 1] = tail;
    sizes[3 * n + 1] = (size_t)(q - tail);
    st = kn__atomic_write(path, parts, sizes, 3 * n + 2);
done:
    for (int k = 0; m && k < n; k++) {
        kn__npy_bytes_free(&m[k].npy);
        free(m[k].z);
        free(m[k].local);
    }
    free(m);
    free((void *)names);
    free((void *)parts);
    free(sizes);
    free(cd);
    return st;
}
