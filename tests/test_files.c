/* Tests of the library's file writing and reading (src/io/atomic_file.c):
 * writes through symbolic links (chains, dangling, loops), devices and FIFOs
 * written in place, directories, sockets and read-only files refused,
 * temporaries of killed writers removed and nothing else, the checks of
 * kn_file_check_writable, and whole-file reads that survive truncation. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "io/atomic_file.h"
#include "kn_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

/* dir/name; a ring of buffers, so a few can be used at once. */
static const char *in_dir(const char *name) {
    static char buf[8][4096];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", dir, name);
    return b;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* The file at path holds exactly want[0, n). */
static bool holds(const char *path, const void *want, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    unsigned char *b = malloc(n + 1);
    size_t got = b ? fread(b, 1, n + 1, f) : 0;
    bool same = b && got == n && memcmp(b, want, n) == 0;
    free(b);
    fclose(f);
    return same;
}
static bool holds_text(const char *path, const char *text) { return holds(path, text, strlen(text)); }

static kn_status save_text(const char *path, const char *text) {
    return kn_file_write_atomic(path, text, strlen(text));
}

static bool is_link(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}
static bool exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Entries in dir (besides . and ..), and those whose name contains ".tmp.". */
static int entries(bool temporaries_only) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n += !temporaries_only || strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* The id of a process that has just ended (and been waited for). */
static pid_t dead_pid(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    return pid;
}

static void test_symlinks(void) {
    /* A link to a file: the file is replaced, the link stays, the mode too. */
    write_text(in_dir("target.txt"), "old");
    chmod(in_dir("target.txt"), 0640);
    CHECK(symlink("target.txt", in_dir("link.txt")) == 0, "symlink");
    CHECK(save_text(in_dir("link.txt"), "new") == KN_OK, "write through a link");
    CHECK(is_link(in_dir("link.txt")), "the link is still a link");
    CHECK(holds_text(in_dir("target.txt"), "new"), "the target holds the new contents");
    struct stat st;
    CHECK(stat(in_dir("target.txt"), &st) == 0 && (st.st_mode & 07777) == 0640, "mode kept: %o",
          (unsigned)(st.st_mode & 07777));

    /* A chain of links, from another directory. */
    CHECK(mkdir(in_dir("sub"), 0755) == 0, "mkdir");
    CHECK(symlink("../link.txt", in_dir("sub/chain")) == 0, "symlink");
    CHECK(save_text(in_dir("sub/chain"), "chained") == KN_OK, "write through a chain");
    CHECK(is_link(in_dir("sub/chain")) && is_link(in_dir("link.txt")), "both links stay links");
    CHECK(holds_text(in_dir("target.txt"), "chained"), "the end of the chain is written");
    CHECK(entries(true) == 0, "no temporary left");

    /* Dangling links: the target is created, relative to the link's directory. */
    CHECK(symlink("../created.txt", in_dir("sub/dangling")) == 0, "symlink");
    CHECK(save_text(in_dir("sub/dangling"), "made") == KN_OK, "write through a dangling link");
    CHECK(is_link(in_dir("sub/dangling")), "the dangling link is still a link");
    CHECK(holds_text(in_dir("created.txt"), "made"), "its target was created beside the link's directory");
    CHECK(stat(in_dir("created.txt"), &st) == 0 && (st.st_mode & 07777) == 0644, "new file mode %o",
          (unsigned)(st.st_mode & 07777));
    CHECK(symlink("d2", in_dir("d1")) == 0 && symlink("sub/created2.txt", in_dir("d2")) == 0, "symlink");
    CHECK(save_text(in_dir("d1"), "two") == KN_OK, "write through a dangling chain");
    CHECK(is_link(in_dir("d1")) && is_link(in_dir("d2")), "the chain's links stay links");
    CHECK(holds_text(in_dir("sub/created2.txt"), "two"), "the chain's final target was created");

    /* A loop of links is refused, and stays a loop. */
    CHECK(symlink("loop2", in_dir("loop1")) == 0 && symlink("loop1", in_dir("loop2")) == 0, "symlink");
    CHECK(save_text(in_dir("loop1"), "x") == KN_ERR_IO, "a loop of links");
    CHECK_ERROR("loop1: cannot write: Too many levels of symbolic links");
    CHECK(is_link(in_dir("loop1")) && is_link(in_dir("loop2")), "the loop is untouched");
    CHECK(kn_file_check_writable(in_dir("loop1")) == KN_ERR_IO, "a loop of links, checked");
    CHECK(entries(true) == 0, "no temporary left");
}

static void test_devices(void) {
    /* /dev/null is written in place: it must stay a device. */
    CHECK(save_text("/dev/null", "nothing") == KN_OK, "write /dev/null");
    struct stat st;
    CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode), "/dev/null is still a device");
    CHECK(kn_file_check_writable("/dev/null") == KN_OK, "check /dev/null");
    CHECK(symlink("/dev/null", in_dir("null-link")) == 0, "symlink");
    CHECK(save_text(in_dir("null-link"), "x") == KN_OK, "write a link to /dev/null");
    CHECK(is_link(in_dir("null-link")) && stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode),
          "link and device unchanged");

    /* A device that fails the write: the error says so. */
    kn_error_clear();
    CHECK(save_text("/dev/full", "data") == KN_ERR_IO, "write /dev/full");
    CHECK_ERROR("/dev/full");
    CHECK_ERROR("No space left on device");
    CHECK(stat("/dev/full", &st) == 0 && S_ISCHR(st.st_mode), "/dev/full is still a device");

    /* A directory, and a socket, are refused. */
    kn_error_clear();
    CHECK(save_text(in_dir("sub"), "x") == KN_ERR_IO, "write a directory");
    CHECK_ERROR("sub: is a directory (nothing written)");
    CHECK(stat(in_dir("sub"), &st) == 0 && S_ISDIR(st.st_mode), "still a directory");
    kn_error_clear();
    CHECK(kn_file_check_writable(in_dir("sub")) == KN_ERR_IO, "check a directory");
    CHECK_ERROR("sub: is a directory (nothing written)");
    int sock = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", in_dir("sock"));
    CHECK(sock >= 0 && bind(sock, (struct sockaddr *)&addr, sizeof addr) == 0, "bind: %s", strerror(errno));
    kn_error_clear();
    CHECK(save_text(in_dir("sock"), "x") == KN_ERR_IO, "write a socket");
    CHECK_ERROR("sock: not a regular file (nothing written)");
    CHECK(stat(in_dir("sock"), &st) == 0 && S_ISSOCK(st.st_mode), "still a socket");
    if (sock >= 0) close(sock);
    CHECK(entries(true) == 0, "no temporary left");
}

static void test_read_only(void) {
    write_text(in_dir("ro.txt"), "keep me");
    chmod(in_dir("ro.txt"), 0444);
    CHECK(symlink("ro.txt", in_dir("ro-link")) == 0, "symlink");
    const char *names[] = {"ro.txt", "ro-link"};
    for (int k = 0; k < 2; k++) {
        kn_error_clear();
        CHECK(save_text(in_dir(names[k]), "lost") == KN_ERR_IO, "write read-only %s", names[k]);
        CHECK_ERROR(names[k]);
        CHECK_ERROR("is read-only (nothing written)");
        kn_error_clear();
        CHECK(kn_file_check_writable(in_dir(names[k])) == KN_ERR_IO, "check read-only %s", names[k]);
        CHECK_ERROR("is read-only (nothing written)");
    }
    CHECK(holds_text(in_dir("ro.txt"), "keep me"), "the read-only file is unchanged");
    CHECK(is_link(in_dir("ro-link")), "the link to it is still a link");
    CHECK(entries(true) == 0, "no temporary left");
}

static void test_fifo(void) {
    const char *fifo = in_dir("fifo");
    CHECK(mkfifo(fifo, 0644) == 0, "mkfifo: %s", strerror(errno));
    /* Checking must not open it (that would wait for a reader). */
    CHECK(kn_file_check_writable(fifo) == KN_OK, "check a FIFO");
    /* More than a pipe's buffer, so the writer has to wait for the reader. */
    size_t n = 300000;
    unsigned char *data = malloc(n);
    if (!data) return;
    for (size_t i = 0; i < n; i++) data[i] = (unsigned char)(i * 7 + i / 251);
    pid_t child = fork();
    if (child == 0) {
        int fd = open(fifo, O_RDONLY);
        unsigned char *got = malloc(n + 1);
        size_t len = 0;
        for (ssize_t r; fd >= 0 && got && len <= n && (r = read(fd, got + len, n + 1 - len)) != 0;)
            if (r > 0) len += (size_t)r;
            else if (errno != EINTR) break;
        _exit(got && len == n && memcmp(got, data, n) == 0 ? 0 : 1);
    }
    CHECK(child > 0, "fork");
    CHECK(kn_file_write_atomic(fifo, data, n) == KN_OK, "write a FIFO");
    int status = -1;
    if (child > 0) waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the reader got every byte (status %d)", status);
    struct stat st;
    CHECK(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO is still a FIFO");
    CHECK(entries(true) == 0, "no temporary left");
    free(data);
}

static void test_stale_temporaries(void) {
    char dead[64], live[64], other[64], longer[64], near[64];
    pid_t d = dead_pid();
    CHECK(d > 0 && kill(d, 0) == -1 && errno == ESRCH, "a dead process id");
    snprintf(dead, sizeof dead, "stale.bin.tmp.%ld.abcdef", (long)d);
    snprintf(live, sizeof live, "stale.bin.tmp.%ld.abcdef", (long)getpid());
    snprintf(other, sizeof other, "other.tmp.%ld.abcdef", (long)d);
    snprintf(longer, sizeof longer, "stale.bin.tmp.%ld.abcdefg", (long)d);
    snprintf(near, sizeof near, "xstale.bin.tmp.%ld.abcdef", (long)d);
    const char *keep[] = {live, other, longer, near};
    write_text(in_dir(dead), "dead");
    for (int k = 0; k < 4; k++) write_text(in_dir(keep[k]), "keep");

    /* Checking changes nothing, stale files included. */
    CHECK(kn_file_check_writable(in_dir("stale.bin")) == KN_OK, "check");
    CHECK(exists(in_dir(dead)), "checking removes nothing");
    CHECK(save_text(in_dir("stale.bin"), "saved") == KN_OK, "save");
    CHECK(holds_text(in_dir("stale.bin"), "saved"), "saved");
    CHECK(!exists(in_dir(dead)), "the dead writer's temporary is removed");
    for (int k = 0; k < 4; k++) CHECK(exists(in_dir(keep[k])), "%s is kept", keep[k]);
    for (int k = 0; k < 4; k++) unlink(in_dir(keep[k]));

    /* The real case: a writer killed half way (by the file size limit) leaves
     * "NAME.tmp.PID.XXXXXX"; the next save removes it. */
    pid_t child = fork();
    if (child == 0) {
        struct rlimit small = {65536, 65536};
        signal(SIGXFSZ, SIG_DFL);
        static char big[1 << 20];
        if (setrlimit(RLIMIT_FSIZE, &small) == 0) kn_file_write_atomic(in_dir("killed.bin"), big, sizeof big);
        _exit(0);
    }
    int status = 0;
    if (child > 0) waitpid(child, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ, "the writer was killed (status %d)", status);
    char prefix[64];
    int plen = snprintf(prefix, sizeof prefix, "killed.bin.tmp.%ld.", (long)child);
    int left = 0;
    DIR *dd = opendir(dir);
    for (struct dirent *e; dd && (e = readdir(dd));)
        left += !strncmp(e->d_name, prefix, (size_t)plen) && strlen(e->d_name) == (size_t)plen + 6;
    if (dd) closedir(dd);
    CHECK(left == 1, "the killed writer left one temporary named %sXXXXXX (%d)", prefix, left);
    CHECK(save_text(in_dir("killed.bin"), "whole") == KN_OK, "save after the kill");
    CHECK(holds_text(in_dir("killed.bin"), "whole"), "saved");
    CHECK(entries(true) == 0, "no temporary left");
}

static void test_check_writable(void) {
    int before = entries(false);
    CHECK(kn_file_check_writable(in_dir("fresh.bin")) == KN_OK, "a new name");
    CHECK(!exists(in_dir("fresh.bin")) && entries(false) == before, "nothing created");

    write_text(in_dir("existing.txt"), "as it was");
    struct stat a, b;
    CHECK(stat(in_dir("existing.txt"), &a) == 0, "stat");
    CHECK(kn_file_check_writable(in_dir("existing.txt")) == KN_OK, "an existing file");
    CHECK(stat(in_dir("existing.txt"), &b) == 0 && a.st_ino == b.st_ino && holds_text(in_dir("existing.txt"), "as it was"),
          "the file is unchanged");
    CHECK(entries(false) == before + 1, "nothing else created");

    kn_error_clear();
    CHECK(kn_file_check_writable(in_dir("no/such/dir/x.bin")) == KN_ERR_IO, "a missing directory");
    CHECK_ERROR("no/such/dir/x.bin: cannot write: No such file or directory");
    kn_error_clear();
    CHECK(kn_file_check_writable(in_dir("existing.txt/x")) == KN_ERR_IO, "a file as a directory");
    CHECK_ERROR("existing.txt/x: cannot write: Not a directory");
    char name[320];
    memset(name, 'n', 300);
    name[300] = 0;
    kn_error_clear();
    CHECK(kn_file_check_writable(in_dir(name)) == KN_ERR_IO, "a name of 300 characters");
    CHECK_ERROR(name);
    CHECK_ERROR("cannot write: File name too long");
    kn_error_clear();
    CHECK(kn_file_check_writable("") != KN_OK, "an empty name");
    CHECK_ERROR("cannot write: empty file name");
    CHECK(kn_file_check_writable(NULL) != KN_OK, "no name");

    write_text(in_dir("ro2.txt"), "read only");
    chmod(in_dir("ro2.txt"), 0444);
    kn_error_clear();
    CHECK(kn_file_check_writable(in_dir("ro2.txt")) == KN_ERR_IO, "a 0444 file");
    CHECK_ERROR("ro2.txt: is read-only (nothing written)");
    CHECK(holds_text(in_dir("ro2.txt"), "read only"), "unchanged");

    /* A directory without write permission (root may write it anyway). */
    if (geteuid() != 0) {
        CHECK(mkdir(in_dir("locked"), 0555) == 0, "mkdir");
        kn_error_clear();
        CHECK(kn_file_check_writable(in_dir("locked/x")) == KN_ERR_IO, "a read-only directory");
        CHECK_ERROR("locked/x: cannot write: Permission denied");
        chmod(in_dir("locked"), 0755);
    }
    CHECK(entries(true) == 0, "no temporary left");
}

static void test_read(void) {
    size_t n = (3u << 20) + 7;
    unsigned char *data = malloc(n);
    if (!data) return;
    for (size_t i = 0; i < n; i++) data[i] = (unsigned char)(i ^ (i >> 9));
    const char *path = in_dir("big.bin");
    CHECK(kn_file_write_atomic(path, data, n) == KN_OK, "write %zu bytes", n);
    kn__file f;
    CHECK(kn__file_read(path, &f) == KN_OK, "read");
    CHECK(f.len == n && memcmp(f.data, data, n) == 0, "read back %zu of %zu bytes, same", f.len, n);
    /* Truncated by someone else while held: the bytes stay readable (a
     * mapped file would raise SIGBUS here). */
    CHECK(truncate(path, 0) == 0, "truncate");
    CHECK(f.len == n && memcmp(f.data, data, n) == 0, "still readable after truncation");
    kn__file_release(&f);
    CHECK(f.len == 0 && f.data != NULL, "released");

    write_text(in_dir("empty.bin"), "");
    CHECK(kn__file_read(in_dir("empty.bin"), &f) == KN_OK, "read an empty file");
    CHECK(f.len == 0 && f.data != NULL, "empty: len %zu", f.len);
    kn__file_release(&f);

    kn_error_clear();
    CHECK(kn__file_read(in_dir("missing.bin"), &f) == KN_ERR_IO, "a missing file");
    CHECK_ERROR("missing.bin: cannot open: No such file or directory");
    kn_error_clear();
    CHECK(kn__file_read(in_dir("sub"), &f) == KN_ERR_IO, "a directory");
    CHECK_ERROR("sub: cannot read: Is a directory");
    free(data);
}

/* Removes path and everything under it (links are not followed). */
static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            remove_tree(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/kiln_test_files_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    umask(022);
    alarm(120); /* a write that waits forever (a FIFO opened with no reader) fails the test */
    test_symlinks();
    test_devices();
    test_read_only();
    test_fifo();
    test_stale_temporaries();
    test_check_writable();
    test_read();
    remove_tree(dir);
    return kt_finish("test_files");
}
