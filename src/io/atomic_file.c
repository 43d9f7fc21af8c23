/* kiln — whole-file reading (mmap when possible) and atomic writing
 * (temporary file + fsync + rename), shared by CSV, safetensors and .npy. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkstemp, fsync, strndup, O_CLOEXEC under -std=c11 */
#endif
#include "io/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The process umask without changing it (umask(2) can only be read by
 * setting it, which races with other threads): Linux reports it in
 * /proc/self/status; elsewhere assume the usual 022. */
static mode_t current_umask(void) {
    mode_t mask = 022;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return mask;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "Umask:", 6) == 0) {
            mask = (mode_t)strtoul(line + 6, NULL, 8);
            break;
        }
    }
    fclose(f);
    return mask;
}

static bool write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n; /* some systems cap one write */
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (w == 0) {
            errno = EIO;
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Makes the rename itself durable. Best effort: some file systems refuse
 * fsync on a directory, and the data is already safe by then. */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = NULL;
    if (!slash) dir = strdup(".");
    else if (slash == path) dir = strdup("/");
    else dir = strndup(path, (size_t)(slash - path));
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

kn_status kn__atomic_write(const char *path, const void *const *parts, const size_t *sizes,
                           int n) {
    if (!path || !*path) return kn__err(KN_ERR_INVALID, "write: empty file name");
    if (n < 0 || (n > 0 && (!parts || !sizes)))
        return kn__err(KN_ERR_INVALID, "%s: write: invalid parts", path);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof ".tmp.XXXXXX");
    if (!tmp) return kn__err(KN_ERR_OOM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");

    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return kn__err(KN_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(e));
    }
    /* mkstemp makes the file 0600; give it the mode the old file had, or what
     * a plain fopen would have given a new one. */
    struct stat st;
    mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 07777) : (0666 & ~current_umask());
    (void)fchmod(fd, mode);

    const char *what = "write";
    bool ok = true;
    for (int i = 0; ok && i < n; i++)
        if (sizes[i] > 0 && !write_all(fd, parts[i], sizes[i])) ok = false;
    if (ok && fsync(fd) != 0) {
        what = "fsync";
        ok = false;
    }
    int e = ok ? 0 : errno;
    if (close(fd) != 0 && ok) {
        what = "close";
        e = errno;
        ok = false;
    }
    if (ok && rename(tmp, path) != 0) {
        what = "rename";
        e = errno;
        ok = false;
    }
    if (!ok) {
        unlink(tmp);
        free(tmp);
        return kn__err(KN_ERR_IO, "%s: cannot %s: %s (the old file, if any, is unchanged)", path,
                       what, strerror(e));
    }
    free(tmp);
    sync_parent_dir(path);
    return KN_OK;
}

kn_status kn_file_write_atomic(const char *path, const void *data, size_t nbytes) {
    if (!data && nbytes) return kn__err(KN_ERR_NULL, "%s: write: data is NULL", path ? path : "(null)");
    return kn__atomic_write(path, &data, &nbytes, 1);
}

static const unsigned char empty_byte = 0;

kn_status kn__file_read(const char *path, kn__file *out) {
    memset(out, 0, sizeof *out);
    out->data = &empty_byte;
    if (!path) return kn__err(KN_ERR_INVALID, "read: file name is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kn__err(KN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kn__err(KN_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return kn__err(KN_ERR_IO, "%s: cannot read: %s", path, strerror(EISDIR));
    }
    if (S_ISREG(st.st_mode)) {
        if (st.st_size == 0) {
            close(fd);
            return KN_OK;
        }
        if ((uintmax_t)st.st_size > SIZE_MAX) {
            close(fd);
            return kn__err(KN_ERR_IO, "%s: file too large for this machine", path);
        }
        size_t len = (size_t)st.st_size;
        void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            close(fd);
            out->data = m;
            out->len = len;
            out->base = m;
            out->map_len = len;
            return KN_OK;
        }
        /* fall through: read it */
    }
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536, len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return kn__err(KN_ERR_OOM, "%s: out of memory reading the file", path);
    }
    for (;;) {
        if (len == cap) {
            unsigned char *nb = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                close(fd);
                return kn__err(KN_ERR_OOM, "%s: out of memory reading the file", path);
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(buf);
            close(fd);
            return kn__err(KN_ERR_IO, "%s: cannot read: %s", path, strerror(e));
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    out->data = buf;
    out->len = len;
    out->base = buf;
    return KN_OK;
}

void kn__file_release(kn__file *f) {
    if (!f) return;
    if (f->map_len) munmap(f->base, f->map_len);
    else free(f->base);
    memset(f, 0, sizeof *f);
    f->data = &empty_byte;
}

void kn__byteswap(void *data, size_t n, size_t size) {
    unsigned char *p = data;
    if (size < 2) return;
    for (size_t i = 0; i < n; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}
