/* Groups spread over processes (kiln/dist.h): one rank per process, as
 * torchrun starts them, tied together by an id that rank 0 makes (NCCL's
 * unique id) and hands to the others through the environment or a file.
 * Only a backend with comm_new_rank (CUDA, through NCCL) can carry such a
 * group: the host transport lives in one process. */
#include "dist/dist_internal.h"
#include "io/atomic_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORLD (1 << 20)
#define ID_HEX (2 * KN_COMM_ID_BYTES)

static const kn_backend *rank_backend(const char *op, kn_device dev) {
    if (!kn_device_ok(dev)) return kn__err(KN_ERR_DEVICE, "%s: device %s is not available", op, kn_device_str(dev)), NULL;
    const kn_backend *be = kn__backend(dev.kind);
    const char *want = getenv("KILN_DIST_TRANSPORT");
    if (want && *want && !strcmp(want, "host"))
        return kn__err(KN_ERR_INVALID, "%s: KILN_DIST_TRANSPORT=host, but the host carries groups of one process only", op),
               NULL;
    if (!be || !be->comm_new_rank)
        return kn__err(KN_ERR_UNSUPPORTED,
                       "%s: %s has no collectives across processes (NCCL on CUDA devices has; a group of one process "
                       "over several devices is kn_dist_new)",
                       op, kn_device_str(dev)),
               NULL;
    return be;
}

static void to_hex(const unsigned char *id, char *hex) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < KN_COMM_ID_BYTES; i++) hex[2 * i] = digits[id[i] >> 4], hex[2 * i + 1] = digits[id[i] & 15];
    hex[ID_HEX] = 0;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* ID_HEX hex digits, nothing else; `what` names the source in the error. */
static bool from_hex(const char *what, const char *hex, size_t len, unsigned char *id) {
    if (len != ID_HEX)
        return kn__err(KN_ERR_INVALID, "dist: %s: expected %d hex digits (an id from kn_dist_unique_id), got %zu characters",
                       what, ID_HEX, len),
               false;
    for (size_t i = 0; i < ID_HEX; i += 2) {
        int hi = hex_digit(hex[i]), lo = hex_digit(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return kn__err(KN_ERR_INVALID, "dist: %s: character %zu is not a hex digit", what, hi < 0 ? i + 1 : i + 2),
                   false;
        id[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

kn_status kn_dist_unique_id(kn_device dev, char id[KN_DIST_ID_CHARS]) {
    if (!id) return kn__err_null("dist_unique_id"), KN_ERR_NULL;
    const kn_backend *be = rank_backend("dist_unique_id", dev);
    if (!be) return kn_error_code();
    unsigned char raw[KN_COMM_ID_BYTES];
    kn_status s = be->comm_unique_id(dev.index, raw);
    if (s == KN_OK) to_hex(raw, id);
    return s != KN_OK && kn_error_code() == KN_OK ? kn__err(s, "dist_unique_id: failed") : s;
}

static kn_dist *join(kn_device dev, const kn_backend *be, int rank, int world, const unsigned char *id) {
    kn_dist *d = calloc(1, sizeof *d);
    if (!d) return kn__err(KN_ERR_OOM, "dist: out of host memory"), NULL;
    *d = (kn_dist){.n = 1, .rank0 = rank, .world = world, .dev = {dev}, .be = be};
    kn_status st = KN_OK;
    d->comm = be->comm_new_rank(dev.index, rank, world, id, &st);
    if (!d->comm) {
        if (kn_error_code() == KN_OK) kn__err(st ? st : KN_ERR_DEVICE, "dist: rank %d of %d could not join", rank, world);
        free(d);
        return NULL;
    }
    return d;
}

static bool check_rank(const char *op, int rank, int world) {
    if (world < 1 || world > MAX_WORLD)
        return kn__err(KN_ERR_INVALID, "%s: a group of %d ranks (expected 1 to %d)", op, world, MAX_WORLD), false;
    if (rank < 0 || rank >= world)
        return kn__err(KN_ERR_INVALID, "%s: rank %d of a group of %d (expected 0 to %d)", op, rank, world, world - 1),
               false;
    return true;
}

kn_dist *kn_dist_new_rank(kn_device dev, int rank, int world, const char *id) {
    const char *op = "dist_new_rank";
    if (!check_rank(op, rank, world)) return NULL;
    const kn_backend *be = rank_backend(op, dev);
    if (!be) return NULL;
    const char *what = id ? "the id" : "KILN_DIST_ID";
    if (!id && !(id = getenv("KILN_DIST_ID")))
        return kn__err(KN_ERR_INVALID, "%s: no id given and KILN_DIST_ID is not set (rank 0's kn_dist_unique_id)", op), NULL;
    unsigned char raw[KN_COMM_ID_BYTES];
    if (!from_hex(what, id, strlen(id), raw)) return NULL;
    return join(dev, be, rank, world, raw);
}

/* ---- the id passed by a file ------------------------------------------------------ */
/* "kiln-dist-id 1 world=N\n" and the id's hex digits on a line. */
#define FILE_TAG "kiln-dist-id 1 world="

/* KILN_DIST_TIMEOUT seconds (default 300): how long a rank waits for rank 0's file. */
static bool wait_limit(double *seconds) {
    const char *e = getenv("KILN_DIST_TIMEOUT");
    *seconds = 300;
    if (!e || !*e) return true;
    char *end;
    double v = strtod(e, &end);
    if (*end || !(v > 0) || v > 86400)
        return kn__err(KN_ERR_INVALID, "dist: KILN_DIST_TIMEOUT=%s: expected seconds, more than 0 and at most 86400", e),
               false;
    *seconds = v;
    return true;
}

/* Parses rank 0's file; false with an error when it is not one. */
static bool parse_id_file(const char *path, const unsigned char *text, size_t len, int world, unsigned char *id) {
    size_t tag = strlen(FILE_TAG);
    if (len < tag || memcmp(text, FILE_TAG, tag))
        return kn__err(KN_ERR_FORMAT, "dist: %s is not a kiln id file (it does not start with \"%s\")", path, FILE_TAG),
               false;
    long w = 0;
    size_t i = tag;
    while (i < len && text[i] >= '0' && text[i] <= '9' && w <= MAX_WORLD) w = w * 10 + (text[i++] - '0');
    if (i == tag || i >= len || text[i] != '\n')
        return kn__err(KN_ERR_FORMAT, "dist: %s: a malformed group size", path), false;
    if (w != world)
        return kn__err(KN_ERR_INVALID, "dist: %s was written for a group of %ld ranks, this rank's has %d", path, w, world),
               false;
    size_t start = ++i;
    while (i < len && text[i] != '\n') i++;
    if (i + 1 != len) return kn__err(KN_ERR_FORMAT, "dist: %s: expected the id on one line and nothing after it", path), false;
    char what[64 + 32];
    snprintf(what, sizeof what, "the id in %.64s", path);
    return from_hex(what, (const char *)text + start, i - start, id);
}

kn_dist *kn_dist_new_rank_file(kn_device dev, int rank, int world, const char *path) {
    const char *op = "dist_new_rank_file";
    if (!check_rank(op, rank, world)) return NULL;
    const kn_backend *be = rank_backend(op, dev);
    if (!be) return NULL;
    if (!path && !(path = getenv("KILN_DIST_ID_FILE")))
        return kn__err(KN_ERR_INVALID, "%s: no file given and KILN_DIST_ID_FILE is not set", op), NULL;
    if (!*path) return kn__err(KN_ERR_INVALID, "%s: an empty file name", op), NULL;
    unsigned char id[KN_COMM_ID_BYTES];
    struct stat st;
    if (rank == 0) {
        /* A file left by an earlier run would hand its old id to this run's
         * other ranks: refused rather than replaced. */
        if (lstat(path, &st) == 0)
            return kn__err(KN_ERR_INVALID, "%s: %s exists (left by an earlier run?); remove it, or name a fresh file for each run",
                           op, path),
                   NULL;
        if (errno != ENOENT) return kn__err(KN_ERR_IO, "%s: %s: %s", op, path, strerror(errno)), NULL;
        if (be->comm_unique_id(dev.index, id) != KN_OK) return NULL;
        char head[64], hex[ID_HEX + 2];
        int hn = snprintf(head, sizeof head, FILE_TAG "%d\n", world);
        to_hex(id, hex);
        hex[ID_HEX] = '\n', hex[ID_HEX + 1] = 0;
        const void *parts[2] = {head, hex};
        size_t sizes[2] = {(size_t)hn, ID_HEX + 1};
        if (kn__atomic_write(path, parts, sizes, 2) != KN_OK) return NULL;
        kn_dist *d = join(dev, be, rank, world, id);
        /* Every rank has read it once all joined; on failure it is of no use either. */
        (void)unlink(path);
        return d;
    }
    double limit;
    if (!wait_limit(&limit)) return NULL;
    struct timespec t0, now;
    timespec_get(&t0, TIME_UTC);
    for (;;) {
        if (stat(path, &st) == 0) { /* rank 0 renames it into place whole */
            if (!S_ISREG(st.st_mode) || st.st_size > 4096) /* an id file is about 300 bytes */
                return kn__err(KN_ERR_FORMAT, "%s: %s is not a kiln id file (%s)", op, path,
                               S_ISREG(st.st_mode) ? "too large" : "not a regular file"),
                       NULL;
            kn__file f;
            if (kn__file_read(path, &f) != KN_OK) return NULL;
            bool ok = parse_id_file(path, f.data, f.len, world, id);
            kn__file_release(&f);
            if (!ok) return NULL;
            return join(dev, be, rank, world, id);
        }
        if (errno != ENOENT) return kn__err(KN_ERR_IO, "%s: %s: %s", op, path, strerror(errno)), NULL;
        timespec_get(&now, TIME_UTC);
        double waited = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) * 1e-9;
        if (waited >= limit)
            return kn__err(KN_ERR_IO, "%s: rank %d waited %g s for rank 0's id in %s (KILN_DIST_TIMEOUT); is rank 0 running?",
                           op, rank, limit, path),
                   NULL;
        thrd_sleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
    }
}

/* KILN_RANK and KILN_WORLD_SIZE as whole numbers. */
static bool env_int(const char *name, int *v) {
    const char *e = getenv(name);
    if (!e || !*e) return kn__err(KN_ERR_INVALID, "dist_from_env: %s is not set", name), false;
    char *end;
    errno = 0;
    long x = strtol(e, &end, 10);
    if (*end || errno || x < 0 || x > MAX_WORLD)
        return kn__err(KN_ERR_INVALID, "dist_from_env: %s=%s is not a whole number from 0 to %d", name, e, MAX_WORLD), false;
    *v = (int)x;
    return true;
}

kn_dist *kn_dist_from_env(kn_device dev) {
    int rank, world;
    if (!env_int("KILN_RANK", &rank) || !env_int("KILN_WORLD_SIZE", &world)) return NULL;
    const char *id = getenv("KILN_DIST_ID"), *file = getenv("KILN_DIST_ID_FILE");
    if (id && *id && file && *file)
        return kn__err(KN_ERR_INVALID, "dist_from_env: both KILN_DIST_ID and KILN_DIST_ID_FILE are set (one, please)"), NULL;
    if (id && *id) return kn_dist_new_rank(dev, rank, world, id);
    if (file && *file) return kn_dist_new_rank_file(dev, rank, world, file);
    return kn__err(KN_ERR_INVALID, "dist_from_env: set KILN_DIST_ID (rank 0's id) or KILN_DIST_ID_FILE (a file rank 0 writes)"),
           NULL;
}
