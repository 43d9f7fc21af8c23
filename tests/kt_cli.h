/* Running the `kiln` binary from a test, as a user would: its path comes from
 * CMake (KILN_CLI_PATH); files go into the test's temporary directory `dir`;
 * stdout and stderr land in out_buf and err_buf. Shared by test_cli.c and
 * test_checkpoint.c (each includes it once: the helpers are static). */
#ifndef KT_CLI_H
#define KT_CLI_H

#include "kn_test.h"
#include "io/json.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KILN_CLI_PATH
#error "KILN_CLI_PATH must name the kiln binary"
#endif

static char dir[256];
static char out_buf[1 << 20], err_buf[1 << 16];
static const char *stdout_to; /* when set, the command's stdout goes there (/dev/full) */

static inline const char *path_in(const char *name) {
    static char bufs[64][1024]; /* a ring: enough for the paths of one command */
    static int k;
    char *b = bufs[k++ % 64];
    snprintf(b, 1024, "%s/%s", dir, name);
    return b;
}

static inline void write_file(const char *name, const void *data, size_t n) {
    FILE *f = fopen(path_in(name), "wb");
    if (!f || fwrite(data, 1, n, f) != n) abort();
    fclose(f);
}
static inline void write_text(const char *name, const char *s) { write_file(name, s, strlen(s)); }

static inline size_t read_file(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    return n;
}

/* Two files of at most 1 MiB with the same bytes. */
static inline bool same_bytes(const char *a, const char *b) {
    static char x[1 << 20], y[1 << 20];
    size_t na = read_file(a, x, sizeof x), nb = read_file(b, y, sizeof y);
    return na > 0 && na == nb && na < sizeof x - 1 && !memcmp(x, y, na);
}

static inline bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Runs kiln with args (NULL-terminated); stdout/stderr land in out_buf/err_buf.
 * fsize_limit > 0 caps the size of files the process may write. */
static inline int run_limited(long fsize_limit, const char *const *args) {
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)KILN_CLI_PATH;
    for (; args[n - 1] && n < 63; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    char o[512], e[512];
    snprintf(o, sizeof o, "%s/.stdout", dir);
    snprintf(e, sizeof e, "%s/.stderr", dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fo = stdout_to ? open(stdout_to, O_WRONLY) : open(o, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, 1);
        dup2(fe, 2);
        if (fsize_limit > 0) {
            signal(SIGXFSZ, SIG_IGN); /* writes then fail with EFBIG instead of killing */
            struct rlimit rl = {(rlim_t)fsize_limit, (rlim_t)fsize_limit};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        setenv("KILN_DEVICE", "cpu", 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    read_file(o, out_buf, sizeof out_buf);
    read_file(e, err_buf, sizeof err_buf);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

#define RUN(...) run_limited(0, (const char *const[]){__VA_ARGS__, NULL})

static inline int lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* A failure: non-zero exit, exactly one line on stderr, "kiln: ..." naming `what`. */
#define CHECK_FAILS(rc, what)                                                                       \
    do {                                                                                            \
        int rc_ = (rc);                                                                             \
        CHECK(rc_ != 0 && rc_ < 128, "exit status %d (stderr: %s)", rc_, err_buf);                  \
        CHECK(lines(err_buf) == 1 && !strncmp(err_buf, "kiln: ", 6), "one line on stderr: %s", err_buf); \
        CHECK(strstr(err_buf, (what)) != NULL, "stderr names '%s': %s", (what), err_buf);          \
    } while (0)

static inline double json_number(const char *text, const char *k1, const char *k2) {
    kn__json_doc *d = kn__json_parse(text, strlen(text), NULL, "kiln --json output");
    if (!d) return NAN;
    const kn__json *v = kn__json_get(d, kn__json_root(d), k1);
    if (v && k2) v = kn__json_get(d, v, k2);
    double x = v && v->type == KN__JSON_NUMBER ? v->number : NAN;
    kn__json_free(d);
    return x;
}

/* A fresh temporary directory for the test's files; kt_cli_end removes it
 * unless a check failed (the files are kept for a look). */
static inline void kt_cli_begin(void) {
    snprintf(dir, sizeof dir, "%s", "/tmp/kiln_cli_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
}

static inline int kt_cli_end(const char *name) {
    if (!kt_failed) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    } else {
        fprintf(stderr, "files kept in %s\n", dir);
    }
    return kt_finish(name);
}

#endif
