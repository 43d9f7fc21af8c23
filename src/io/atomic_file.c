/* kiln — whole-file reading and atomic writing (temporary file + fsync +
 * rename), shared by CSV, safetensors and .npy. Files are read with read(),
 * never mapped: a mapped file that another process truncates kills the reader
 * with SIGBUS. Writes follow symbolic links to the file they name, write
 * character devices and FIFOs (/dev/stdout, a pipe) in place, and refuse
 * directories, other special files and read-only files before writing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkstemp, fsync, strndup, realpath, kill, O_CLOEXEC under -std=c11 */
#endif
#include "io/atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static bool write_parts(int fd, const void *const *parts, const size_t *sizes, int n) {
    for (int i = 0; i < n; i++)
        if (sizes[i] > 0 && !write_all(fd, parts[i], sizes[i])) return false;
    return true;
}

/* The directory part of path ("." when it has none), malloc'ed. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* Makes the rename itself durable. Best effort: some file systems refuse
 * fsync on a directory, and the data is already safe by then. */
static void sync_parent_dir(const char *path) {
    char *dir = dir_of(path);
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* The text of the link at path, malloc'ed; NULL with errno set. */
static char *read_link(const char *path) {
    for (size_t cap = 256; cap <= ((size_t)1 << 20); cap *= 2) {
        char *buf = malloc(cap);
        if (!buf) return NULL;
        ssize_t n = readlink(path, buf, cap);
        if (n >= 0 && (size_t)n < cap) {
            buf[n] = 0;
            return buf;
        }
        int e = errno;
        free(buf);
        if (n < 0) {
            errno = e;
            return NULL;
        }
    }
    errno = ENAMETOOLONG;
    return NULL;
}

/* Follows a chain of links from path to the first name that is not a link
 * (realpath fails on a dangling chain): each relative link is read from the
 * directory it is in. Malloc'ed; NULL with errno set. */
static char *follow_links(const char *path) {
    char *cur = strdup(path);
    for (int depth = 0; cur; depth++) {
        struct stat ls;
        if (lstat(cur, &ls) != 0 || !S_ISLNK(ls.st_mode)) return cur;
        char *text = depth < 40 ? read_link(cur) : NULL;
        int e = depth < 40 ? errno : ELOOP;
        char *next = text;
        if (text && text[0] != '/' && strchr(cur, '/')) {
            char *dir = dir_of(cur);
            size_t len = dir ? strlen(dir) + strlen(text) + 2 : 0;
            next = dir ? malloc(len) : NULL;
            if (next) snprintf(next, len, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", text);
            e = ENOMEM;
            free(dir);
            free(text);
        }
        free(cur);
        cur = next;
        if (!cur) errno = e;
    }
    return NULL;
}

/* Where a write to path goes. */
typedef struct {
    char *file;    /* what to write: path, or the file its links lead to */
    bool in_place; /* a character device or FIFO, written where it is */
    bool exists;
    mode_t mode; /* the existing file's permission bits */
} write_target;

/* Finds the file a write to path writes and refuses what must not be
 * written (the messages of kn_file_check_writable). */
static kn_status find_target(const char *path, write_target *t) {
    memset(t, 0, sizeof *t);
    struct stat st, ls;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return kn__err(KN_ERR_IO, "%s: is a directory (nothing written)", path);
        if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) {
            /* Opened by path itself: /dev/stdout's link names no file when
             * it is a pipe. */
            t->in_place = t->exists = true;
            t->file = strdup(path);
        } else if (!S_ISREG(st.st_mode)) {
            return kn__err(KN_ERR_IO, "%s: not a regular file (nothing written)", path);
        } else {
            /* The mode bits too: access() allows everything to root. */
            if ((st.st_mode & 0222) == 0 || access(path, W_OK) != 0)
                return kn__err(KN_ERR_IO, "%s: is read-only (nothing written)", path);
            t->exists = true;
            t->mode = st.st_mode & 07777;
            bool link = lstat(path, &ls) == 0 && S_ISLNK(ls.st_mode);
            t->file = link ? realpath(path, NULL) : strdup(path);
            if (!t->file && errno != ENOMEM)
                return kn__err(KN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        }
    } else if (errno == ENOENT) {
        /* A new file, or a dangling link: its target is created. */
        t->file = follow_links(path);
        if (!t->file && errno != ENOMEM)
            return kn__err(KN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    } else if (errno == ELOOP) {
        return kn__err(KN_ERR_IO, "%s: cannot write: %s", path, strerror(ELOOP));
    } else {
        t->file = strdup(path); /* making the temporary file reports the error */
    }
    if (!t->file) return kn__err(KN_ERR_OOM, "%s: out of memory", path);
    return KN_OK;
}

/* "FILE.tmp.PID.XXXXXX", for mkstemp; NULL when out of memory. */
static char *temp_name(const char *file) {
    size_t len = strlen(file) + 48;
    char *tmp = malloc(len);
    if (tmp) snprintf(tmp, len, "%s.tmp.%ld.XXXXXX", file, (long)getpid());
    return tmp;
}

/* A writer killed during a save leaves its temporary file behind: remove
 * those of file whose writer is gone. Only names made by temp_name for this
 * file, of regular files, of processes that do not exist. */
static void remove_stale_temporaries(const char *file) {
    const char *slash = strrchr(file, '/');
    const char *base = slash ? slash + 1 : file;
    size_t blen = strlen(base);
    char *dir = blen ? dir_of(file) : NULL;
    DIR *d = dir ? opendir(dir) : NULL;
    free(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        const char *p = e->d_name;
        if (strncmp(p, base, blen) != 0 || strncmp(p + blen, ".tmp.", 5) != 0) continue;
        p += blen + 5;
        const char *digits = p;
        long long pid = 0;
        while (*p >= '0' && *p <= '9' && pid <= INT_MAX) pid = pid * 10 + (*p++ - '0');
        if (p == digits || *p++ != '.' || pid <= 0 || pid > INT_MAX) continue;
        int k = 0;
        while (k < 6 && ((p[k] >= '0' && p[k] <= '9') || (p[k] >= 'a' && p[k] <= 'z') ||
                         (p[k] >= 'A' && p[k] <= 'Z')))
            k++;
        if (k != 6 || p[6] != 0) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (kill((pid_t)pid, 0) == -1 && errno == ESRCH) (void)unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

/* A device or FIFO cannot be replaced by a rename: written where it is, as a
 * shell redirection would. */
static kn_status write_in_place(const char *path, const char *file, const void *const *parts,
                                const size_t *sizes, int n) {
    int fd = open(file, O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return kn__err(KN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    const char *what = "write";
    bool ok = write_parts(fd, parts, sizes, n);
    int e = ok ? 0 : errno;
    if (ok && fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP && errno != EROFS) {
        what = "fsync"; /* the errors above: this kind of file keeps nothing to sync */
        e = errno;
        ok = false;
    }
    if (close(fd) != 0 && ok) {
        what = "close";
        e = errno;
        ok = false;
    }
    if (!ok) return kn__err(KN_ERR_IO, "%s: cannot %s: %s", path, what, strerror(e));
    return KN_OK;
}

kn_status kn__atomic_write(const char *path, const void *const *parts, const size_t *sizes,
                           int n) {
    if (!path || !*path) return kn__err(KN_ERR_INVALID, "write: empty file name");
    if (n < 0 || (n > 0 && (!parts || !sizes)))
        return kn__err(KN_ERR_INVALID, "%s: write: invalid parts", path);
    write_target t;
    kn_status s = find_target(path, &t);
    if (s != KN_OK) return s;
    if (t.in_place) {
        s = write_in_place(path, t.file, parts, sizes, n);
        free(t.file);
        return s;
    }
    remove_stale_temporaries(t.file);
    char *tmp = temp_name(t.file);
    if (!tmp) {
        free(t.file);
        return kn__err(KN_ERR_OOM, "%s: out of memory", path);
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        free(t.file);
        return kn__err(KN_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(e));
    }
    /* mkstemp makes the file 0600; give it the mode the old file had, or what
     * a plain fopen would have given a new one. */
    (void)fchmod(fd, t.exists ? t.mode : (0666 & ~current_umask()));

    const char *what = "write";
    bool ok = write_parts(fd, parts, sizes, n);
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
    if (ok && rename(tmp, t.file) != 0) {
        what = "rename";
        e = errno;
        ok = false;
    }
    if (!ok) {
        unlink(tmp);
        free(tmp);
        free(t.file);
        return kn__err(KN_ERR_IO, "%s: cannot %s: %s (the old file, if any, is unchanged)", path,
                       what, strerror(e));
    }
    free(tmp);
    sync_parent_dir(t.file);
    free(t.file);
    return KN_OK;
}

kn_status kn_file_write_atomic(const char *path, const void *data, size_t nbytes) {
    if (!data && nbytes) return kn__err(KN_ERR_NULL, "%s: write: data is NULL", path ? path : "(null)");
    return kn__atomic_write(path, &data, &nbytes, 1);
}

kn_status kn_file_check_writable(const char *path) {
    if (!path || !*path) return kn__err(KN_ERR_INVALID, "cannot write: empty file name");
    write_target t;
    kn_status s = find_target(path, &t);
    if (s != KN_OK) return s;
    if (t.in_place) {
        /* Opening a FIFO would wait for a reader: ask instead. */
        if (access(t.file, W_OK) != 0)
            s = kn__err(KN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    } else {
        char *tmp = temp_name(t.file);
        int fd = tmp ? mkstemp(tmp) : -1;
        if (!tmp) s = kn__err(KN_ERR_OOM, "%s: out of memory", path);
        else if (fd < 0) s = kn__err(KN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        else {
            close(fd);
            unlink(tmp);
        }
        free(tmp);
    }
    free(t.file);
    return s;
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
    /* A regular file's size is only a first guess: it may shrink or grow
     * while it is read. The + 1 lets the end show without growing. */
    size_t cap = 65536, len = 0;
    if (S_ISREG(st.st_mode)) {
        if ((uintmax_t)st.st_size >= SIZE_MAX) {
            close(fd);
            return kn__err(KN_ERR_IO, "%s: file too large for this machine", path);
        }
        cap = (size_t)st.st_size + 1;
    }
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
    if (len == 0) { /* an empty file: data stays the static byte */
        free(buf);
        return KN_OK;
    }
    out->data = buf;
    out->len = len;
    out->base = buf;
    return KN_OK;
}

void kn__file_release(kn__file *f) {
    if (!f) return;
    free(f->base);
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
